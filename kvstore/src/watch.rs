//! Subscriptions to a store's changes.

use std::sync::Arc;

use tokio::sync::broadcast;

/// One change of a key, applied to the store from its topic (by this process's writes or
/// anyone else's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change<K, V> {
    /// The key.
    pub key: K,
    /// Its value before; `None` if it had none.
    pub old: Option<V>,
    /// Its value after; `None` for a delete (tombstone).
    pub new: Option<V>,
    /// The partition of the record.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
}

/// Why [`Watch::recv`] returned no change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The watcher fell more than the store's watch capacity behind: this many changes (of all
    /// keys, before filtering) were dropped for it. The next `recv` goes on with the oldest
    /// change still kept; re-read the store to resynchronize.
    #[error("the watcher lagged behind and missed {0} changes")]
    Lagged(u64),
    /// The store stopped: no more changes will come.
    #[error("the store stopped")]
    Closed,
}

pub(crate) type KeyFilter<K> = Arc<dyn Fn(&K) -> bool + Send + Sync>;

/// A stream of a store's changes: every key, one key or a prefix (see
/// [`KvStore::watch`](crate::KvStore::watch) and the methods after it).
///
/// Bounded: the store keeps the last `watch_capacity` changes
/// ([`KvConfig::watch_capacity`](crate::KvConfig::watch_capacity)) for its watchers, whatever
/// their number; a watcher that falls further behind is told with [`WatchError::Lagged`].
pub struct Watch<K, V> {
    pub(crate) rx: broadcast::Receiver<Arc<Change<K, V>>>,
    pub(crate) filter: Option<KeyFilter<K>>,
}

impl<K: Clone, V: Clone> Watch<K, V> {
    /// The next change that passes the watch's filter, in the order the store applied them
    /// (per partition, the topic's order).
    ///
    /// Cancel-safe: a dropped future loses no change; the next call returns it.
    pub async fn recv(&mut self) -> Result<Change<K, V>, WatchError> {
        loop {
            let change = match self.rx.recv().await {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(WatchError::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return Err(WatchError::Closed),
            };
            if self.filter.as_ref().is_none_or(|f| f(&change.key)) {
                return Ok(Change::clone(&change));
            }
        }
    }
}
