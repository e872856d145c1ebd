//! The router: where requests for a group or transaction coordinator go, and how they and
//! requests for any broker are retried.
//!
//! - **Coordinators**: one cache per [`Client`] (shared by its clones and by what is built on it:
//!   [`Admin`](super::Admin), a consumer's standalone offsets, the transaction manager through
//!   `Admin`), keyed by key type and key. It is filled by FindCoordinator, batched (one request
//!   for many keys from v4 on), and an entry is dropped when an answer for its key says
//!   `NOT_COORDINATOR`, `COORDINATOR_NOT_AVAILABLE` or `COORDINATOR_LOAD_IN_PROGRESS`, or when the
//!   connection to its coordinator fails; the next request looks it up again.
//! - **Any broker**: [`Client::any_broker`] picks the healthiest broker, and a broker that failed
//!   is tried last until its backoff passes, so that retries rotate.
//! - **Retries**: [`Retry`] waits out an exponential backoff with jitter between attempts
//!   (`retry.backoff.ms` doubled per attempt up to `retry.backoff.max.ms`, ±20 %, KIP-580),
//!   bounded by the caller's timeout, and counts each retry in the client's metrics.
//!
//! The group members' own state machines (classic and KIP-848) find their coordinator sans-IO and
//! do not use this cache.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::admin::CoordinatorType;
use super::cluster::{is_transport, Client};
use super::error::{Error, Result};
use crate::codec::messages::FindCoordinatorRequest;
use crate::codec::ErrorCode;
use crate::proto::backoff::Backoff;

/// Coordinators by key type and key.
#[derive(Debug, Default)]
pub(crate) struct CoordinatorCache {
    map: Mutex<HashMap<(CoordinatorType, String), i32>>,
}

impl CoordinatorCache {
    fn get(&self, key_type: CoordinatorType, key: &str) -> Option<i32> {
        // Borrowed lookups of a tuple key need an owned key; the map is small and this is off
        // the data path.
        lock(&self.map).get(&(key_type, key.to_owned())).copied()
    }

    fn insert(&self, key_type: CoordinatorType, key: &str, node: i32) {
        lock(&self.map).insert((key_type, key.to_owned()), node);
    }

    fn forget(&self, key_type: CoordinatorType, key: &str) {
        lock(&self.map).remove(&(key_type, key.to_owned()));
    }

    /// Drops every key coordinated by `node` (its connection failed).
    fn forget_node(&self, node: i32) {
        lock(&self.map).retain(|_, n| *n != node);
    }
}

/// Retries until a deadline, with the client's KIP-580 backoff between attempts.
pub(crate) struct Retry<'a> {
    client: &'a Client,
    backoff: Backoff,
    started: Instant,
    deadline: Instant,
}

impl<'a> Retry<'a> {
    /// Retries of an operation that may take `timeout` in all, with the client's backoff
    /// (`retry.backoff.ms`, `retry.backoff.max.ms` of its [`ConnectionConfig`](super::ConnectionConfig)).
    pub(crate) fn new(client: &'a Client, timeout: Duration) -> Self {
        Self::with_backoff(client, timeout, client.backoff())
    }

    /// Retries with a backoff of the caller's own settings (a consumer's `retry.backoff.ms`).
    pub(crate) fn with_backoff(client: &'a Client, timeout: Duration, backoff: Backoff) -> Self {
        let started = Instant::now();
        Self { client, backoff, started, deadline: started + timeout }
    }

    /// How long the operation had in all.
    fn timeout(&self) -> Duration {
        self.deadline.saturating_duration_since(self.started)
    }

    /// Waits before the next attempt and counts it as a retry (against the broker at `failed`
    /// too, if one failed); `false` at once if the deadline has passed. The wait ends at the
    /// deadline at the latest. Cancel-safe: it only sleeps.
    pub(crate) async fn wait(&mut self, failed: Option<&str>) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            return false;
        }
        let delay = self.backoff.next_delay().min(self.deadline - now);
        self.client.registry().retry(failed);
        tokio::time::sleep(delay).await;
        true
    }
}

/// The coordinator moved, is not elected yet or is still loading: look it up again and retry.
pub(crate) fn is_coordinator_error(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::COORDINATOR_NOT_AVAILABLE | ErrorCode::COORDINATOR_LOAD_IN_PROGRESS | ErrorCode::NOT_COORDINATOR
    )
}

impl Client {
    /// One FindCoordinator round for `keys` (one request from v4 on, one per key before), to any
    /// broker; the coordinators found are cached. One result per key the broker answered for;
    /// `Err` if the request failed as a whole.
    ///
    /// Cancel-safe: it only reads and caches.
    pub(crate) async fn lookup_coordinators(
        &self,
        key_type: CoordinatorType,
        keys: &[String],
    ) -> Result<Vec<(String, Result<i32>)>> {
        let conn = self.any_broker().await?;
        let version = conn.version_for::<FindCoordinatorRequest>()?;
        let context = |key: &str| format!("find coordinator for {} {key}", key_type.noun());
        let check = |code: ErrorCode, message: Option<&str>, key: &str, node: i32| {
            if code == ErrorCode::NONE {
                Ok(node)
            } else {
                Err(Error::broker(code, message.filter(|m| !m.is_empty()), context(key)))
            }
        };
        let mut results = Vec::new();
        let sent = if version >= 4 {
            let request = FindCoordinatorRequest {
                key_type: key_type.code(),
                coordinator_keys: keys.iter().map(|k| k.as_str().into()).collect(),
                ..Default::default()
            };
            self.registry().coordinator_lookup();
            conn.send_version(&request, version).await.map(|response| {
                for c in &response.coordinators {
                    let result = check(c.error_code, c.error_message.as_deref(), &c.key, c.node_id);
                    results.push((c.key.to_string(), result));
                }
            })
        } else {
            let mut sent = Ok(());
            for key in keys {
                let request = FindCoordinatorRequest {
                    key: key.as_str().into(),
                    key_type: key_type.code(),
                    ..Default::default()
                };
                self.registry().coordinator_lookup();
                match conn.send_version(&request, version).await {
                    Ok(r) => {
                        results.push((key.clone(), check(r.error_code, r.error_message.as_deref(), key, r.node_id)))
                    }
                    Err(e) => {
                        sent = Err(e);
                        break;
                    }
                }
            }
            sent
        };
        if let Err(e) = sent {
            if is_transport(&e) {
                self.broker_failed(conn.addr());
            }
            return Err(e);
        }
        self.broker_answered(conn.addr());
        for (key, result) in &results {
            if let Ok(node) = result {
                self.inner_coordinators().insert(key_type, key, *node);
            }
        }
        // The coordinator's address must be known to connect to it.
        let brokers = self.brokers();
        if results.iter().any(|(_, r)| r.as_ref().is_ok_and(|n| !brokers.iter().any(|b| b.node_id == *n))) {
            self.metadata(Some(&[])).await?;
        }
        Ok(results)
    }

    /// Sends per-key requests to each key's coordinator: `send(node, keys)` sends one request for
    /// `keys` to `node` and returns one result per key. Coordinators come from the cache or are
    /// looked up (batched). A key whose answer is a coordinator error, or whose coordinator's
    /// connection failed, is looked up again and retried, as is one whose error `retriable`
    /// accepts, with `retry`'s backoff until its deadline (then it gets its last error). One
    /// result per key.
    ///
    /// Cancel-safety is that of `send`: dropped, a request may have been sent.
    pub(crate) async fn to_coordinators<T, F, Fut>(
        &self,
        key_type: CoordinatorType,
        keys: Vec<String>,
        mut retry: Retry<'_>,
        retriable: impl Fn(&Error) -> bool,
        mut send: F,
    ) -> HashMap<String, Result<T>>
    where
        F: FnMut(i32, Vec<String>) -> Fut,
        Fut: Future<Output = Result<Vec<(String, Result<T>)>>>,
    {
        let cache = self.inner_coordinators();
        let mut done: HashMap<String, Result<T>> = HashMap::new();
        let mut pending = keys;
        while !pending.is_empty() {
            let mut again = Vec::new();
            let mut last: Option<Error> = None;
            let mut failed: Option<String> = None;
            let unknown: Vec<String> = pending.iter().filter(|k| cache.get(key_type, k).is_none()).cloned().collect();
            if !unknown.is_empty() {
                match self.lookup_coordinators(key_type, &unknown).await {
                    Ok(results) => {
                        for (key, result) in results {
                            match result {
                                Err(e) if e.code().is_some_and(is_coordinator_error) => last = Some(e),
                                Err(e) if unknown.contains(&key) => {
                                    done.insert(key, Err(e));
                                }
                                _ => {}
                            }
                        }
                    }
                    Err(e) if is_transport(&e) => last = Some(e),
                    Err(e) => {
                        for key in unknown {
                            done.insert(key, Err(e.clone()));
                        }
                    }
                }
            }
            let mut by_node: BTreeMap<i32, Vec<String>> = BTreeMap::new();
            for key in pending {
                match cache.get(key_type, &key) {
                    _ if done.contains_key(&key) => {}
                    Some(node) => by_node.entry(node).or_default().push(key),
                    None => again.push(key),
                }
            }
            for (node, keys) in by_node {
                match send(node, keys.clone()).await {
                    Err(e) if is_transport(&e) => {
                        tracing::debug!(node, error = %e, "coordinator unreachable; looking it up again");
                        cache.forget_node(node);
                        failed = self.addr_of(node);
                        again.extend(keys);
                        last = Some(e);
                    }
                    Err(e) => {
                        for key in keys {
                            done.insert(key, Err(e.clone()));
                        }
                    }
                    Ok(results) => {
                        let mut answered = HashSet::new();
                        for (key, result) in results {
                            if !keys.contains(&key) || !answered.insert(key.clone()) {
                                continue;
                            }
                            match result {
                                Err(e) if e.code().is_some_and(is_coordinator_error) => {
                                    cache.forget(key_type, &key);
                                    again.push(key);
                                    last = Some(e);
                                }
                                Err(e) if retriable(&e) => {
                                    again.push(key);
                                    last = Some(e);
                                }
                                result => {
                                    done.insert(key, result);
                                }
                            }
                        }
                        for key in keys.into_iter().filter(|k| !answered.contains(k)) {
                            let e = Error::Protocol {
                                broker: format!("node {node}"),
                                reason: format!("no result for {} {key} in the response", key_type.noun()),
                            };
                            done.insert(key, Err(e));
                        }
                    }
                }
            }
            pending = again;
            if !pending.is_empty() && !retry.wait(failed.as_deref()).await {
                let e = last.unwrap_or_else(|| Error::Timeout {
                    what: format!("requests to the coordinators of {}", pending.join(", ")),
                    after: retry.timeout(),
                });
                for key in pending {
                    done.insert(key, Err(e.clone()));
                }
                break;
            }
        }
        done
    }

    /// `host:port` of broker `node`, if the metadata lists it.
    fn addr_of(&self, node: i32) -> Option<String> {
        self.brokers().iter().find(|b| b.node_id == node).map(|b| b.addr())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update is a single map operation, so a poisoned lock is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
