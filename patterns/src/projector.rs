//! Pattern 1, consume and project: a [`Projector`] reads a topic of entity snapshots (keyed by
//! entity id; a tombstone deletes), maps each snapshot to a view row with the user's function,
//! and writes it to a [`ViewStore`] that a read-only service serves
//! ([`query_router`](crate::view::query_router)).
//!
//! - **Idempotent**: every row carries the offset of the snapshot it came from, and a store
//!   applies a change only if it is newer than the row. Replaying the topic (a restart from an
//!   older commit, a second projector, a crash) never regresses or rewrites a row. A key keeps
//!   its partition (the default partitioner), so offsets order its snapshots.
//! - **At-least-once, durable first**: it runs on the handler runtime; a record counts as
//!   handled only once its change is durable in the store, so the offsets committed never pass
//!   a change the store does not have.
//! - **Group commit**: changes from every partition and key in flight are written together,
//!   one store transaction per batch (at most [`ProjectorConfig::batch_max`]), so a store whose
//!   commits sync to disk is not limited to one record per sync.
//! - **Rebuild**: [`rebuild`] reads the topics from the beginning to their current end into a
//!   fresh store (no group), to change the view's shape or recover a lost store.
//!
//! A projection that fails is retried in place (the runtime's backoff); a record that can never
//! be projected holds its key back, so route such records to a dead-letter queue with the
//! `retry` crate if the source may contain them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use handler::{HandlerError, Runtime, RuntimeConfig};
use kafka_wire::client::{Admin, OffsetReset, OffsetSpec};
use kafka_wire::{Client, Consumer, ConsumerConfig, ConsumerRecord, Error, TopicPartition};
use tokio::sync::{mpsc, oneshot};

use crate::view::{Change, StoreError, ViewStore};

/// Maps one snapshot (key, value) to its view row: `Some(row)` upserts it, `None` removes the
/// entity from the view; an error retries the record.
pub trait Projection: Send + Sync + 'static {
    /// The row for the entity `key` whose snapshot is `value`.
    fn project(&self, key: &[u8], value: &[u8]) -> Result<Option<serde_json::Value>, HandlerError>;
}

impl<F> Projection for F
where
    F: Fn(&[u8], &[u8]) -> Result<Option<serde_json::Value>, HandlerError> + Send + Sync + 'static,
{
    fn project(&self, key: &[u8], value: &[u8]) -> Result<Option<serde_json::Value>, HandlerError> {
        self(key, value)
    }
}

/// How a [`Projector`] runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProjectorConfig {
    /// The runtime's settings: the consumer (its `group.id`), the source topics, queues,
    /// commits. [`ProjectorConfig::new`] handles 64 keys of a partition at once (each key in
    /// order) so that group commits have something to group.
    pub runtime: RuntimeConfig,
    /// The most changes in one store transaction (default 1000).
    pub batch_max: usize,
}

impl ProjectorConfig {
    /// A projector of `topics` for the consumer group of `consumer`.
    pub fn new(consumer: ConsumerConfig, topics: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { runtime: RuntimeConfig::new(consumer, topics).key_parallelism(64), batch_max: 1000 }
    }
}

/// A change on its way to the store, and who waits for it to be durable.
type Pending = (Change, oneshot::Sender<Result<(), Arc<StoreError>>>);

/// Writes the changes queued, all that are waiting at once (up to `batch_max`) in one store
/// transaction, then tells each waiter. Ends when every sender is gone.
async fn group_commit<S: ViewStore>(store: Arc<S>, mut queue: mpsc::Receiver<Pending>, batch_max: usize) {
    let mut pending = Vec::with_capacity(batch_max);
    while queue.recv_many(&mut pending, batch_max).await > 0 {
        let (changes, waiters): (Vec<Change>, Vec<_>) = pending.drain(..).unzip();
        let outcome = store.apply(changes).await.map(|_| ()).map_err(Arc::new);
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, "projector: a store transaction failed; its records are retried");
        }
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
}

/// The change a record makes, `None` for a record without a key (nothing to key a row by).
fn change_of(projection: &dyn Projection, record: &ConsumerRecord) -> Result<Option<Change>, HandlerError> {
    let Some(key) = record.key.as_deref() else { return Ok(None) };
    let key_text = std::str::from_utf8(key).map_err(|_| format!("the key at offset {} is not UTF-8", record.offset))?;
    let value = match record.value.as_deref() {
        None => None,
        Some(snapshot) => match projection.project(key, snapshot)? {
            Some(row) => Some(serde_json::to_vec(&row)?),
            None => None,
        },
    };
    Ok(Some(Change { key: key_text.to_owned(), version: record.offset, value }))
}

/// A consume-and-project member: see the [module](self).
pub struct Projector {
    runtime: Runtime,
}

impl Projector {
    /// Connects the runtime's consumer; nothing is read until [`Projector::run_until`].
    pub async fn new<S: ViewStore>(
        config: ProjectorConfig,
        store: Arc<S>,
        projection: impl Projection,
    ) -> kafka_wire::Result<Self> {
        let (queue, pending) = mpsc::channel::<Pending>(config.batch_max.max(1) * 2);
        tokio::spawn(group_commit(store, pending, config.batch_max.max(1)));
        let projection: Arc<dyn Projection> = Arc::new(projection);
        let handle = move |record: ConsumerRecord| {
            let (projection, queue) = (projection.clone(), queue.clone());
            async move {
                let Some(change) = change_of(projection.as_ref(), &record)? else {
                    tracing::debug!(offset = record.offset, "projector: a record without a key is skipped");
                    return Ok(());
                };
                let (done, durable) = oneshot::channel();
                queue.send((change, done)).await.map_err(|_| "the projector's store writer is gone")?;
                durable.await.map_err(|_| "the projector's store writer is gone")?.map_err(|e| e.to_string())?;
                Ok::<(), HandlerError>(())
            }
        };
        Ok(Self { runtime: Runtime::new(config.runtime, handle).await? })
    }

    /// The runtime underneath (its per-partition counters and consumer).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Projects until `shutdown` completes, then drains, commits and leaves the group (see
    /// [`Runtime::run_until`], whose cancel-safety it shares).
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) -> kafka_wire::Result<()> {
        self.runtime.run_until(shutdown).await
    }
}

/// What a [`rebuild`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rebuilt {
    /// Records read.
    pub records: u64,
    /// Store transactions.
    pub transactions: u64,
}

/// Reads `topics` from the beginning up to their end offsets as of the call, into `store`
/// (meant to be a fresh one), without a consumer group; returns when the store has it all.
/// `consumer` gives the connection settings (its group id, if any, is not used). Cancel-safe:
/// what was written stays written, and running it again completes it.
pub async fn rebuild<S: ViewStore>(
    consumer: ConsumerConfig,
    topics: &[&str],
    store: &S,
    projection: impl Projection,
    batch_max: usize,
) -> kafka_wire::Result<Rebuilt> {
    let mut consumer = consumer.auto_offset_reset(OffsetReset::Earliest).enable_auto_commit(false);
    consumer.group_id = None;
    let client = Client::connect(consumer.client_config()).await?;
    let admin = Admin::new(client.clone());
    let mut partitions = Vec::new();
    for topic in admin.describe_topics(topics).await? {
        partitions.extend(topic.partitions.iter().map(|p| (topic.name.clone(), p.partition)));
    }
    let mut end = BTreeMap::new();
    for listed in admin.list_offsets(&partitions, OffsetSpec::Latest).await? {
        if listed.offset > 0 {
            end.insert(TopicPartition::new(listed.topic.as_str(), listed.partition), listed.offset);
        }
    }
    let reader = Consumer::with_client(client.clone(), consumer)?;
    reader.assign(end.keys().cloned());
    reader.seek_to_beginning(&end.keys().cloned().collect::<Vec<_>>())?;
    let mut done = Rebuilt::default();
    let outcome = async {
        while !end.is_empty() {
            let mut changes = Vec::new();
            for record in reader.poll(Duration::from_millis(500)).await? {
                let tp = record.topic_partition();
                if end.get(&tp).is_none_or(|e| record.offset >= *e) {
                    continue;
                }
                done.records += 1;
                let change = change_of(&projection, &record).map_err(|e| Error::Misuse {
                    operation: format!("rebuilding from {tp} at offset {}", record.offset),
                    reason: format!("the projection failed: {e}"),
                })?;
                changes.extend(change);
            }
            for batch in changes.chunks(batch_max.max(1)) {
                store.apply(batch.to_vec()).await.map_err(|e| Error::Misuse {
                    operation: "rebuilding a view".into(),
                    reason: format!("the store failed: {e}"),
                })?;
                done.transactions += 1;
            }
            let mut caught_up = Vec::new();
            for (tp, e) in &end {
                if reader.position(tp).await? >= *e {
                    caught_up.push(tp.clone());
                }
            }
            for tp in caught_up {
                end.remove(&tp);
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    let _ = reader.close().await;
    client.close().await;
    outcome.map(|()| done)
}
