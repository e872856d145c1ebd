//! Counters of what a [`Client`](super::Client) asks of each broker, readable from code:
//! [`Client::metrics`](super::Client::metrics) returns a [`ClientMetrics`] snapshot.
//!
//! Every connection to a broker updates its broker's counters with atomic additions on the
//! request path (no lock is taken to count); a snapshot reads them one by one, so counters
//! updated while it is taken may be one request apart from each other. Counters only grow,
//! except `in_flight`, which is the number of requests sent and not yet answered at that moment.
//!
//! Brokers are told apart by the address the client connected to; the node id is filled in from
//! the cluster's metadata (a bootstrap address that no broker advertises has none).
//!
//! ```no_run
//! # async fn demo() -> kafka_wire::client::Result<()> {
//! use kafka_wire::client::{Client, ClientConfig};
//! let client = Client::connect(ClientConfig::new("127.0.0.1:9092")).await?;
//! client.metadata(None).await?;
//! for b in client.metrics().brokers {
//!     println!("{} (node {:?}): {} requests, {} errors, mean latency {:?}, throttled {:?}",
//!         b.addr, b.node_id, b.requests_sent, b.request_errors, b.latency.mean(), b.throttle_time);
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A snapshot of a client's counters. More sections (the producer's and the consumer's own) may
/// be added: match it with `..`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientMetrics {
    /// One entry per broker address the client has connected to, by address.
    pub brokers: Vec<BrokerMetrics>,
    /// Attempts repeated after a retriable failure (a connection lost, a coordinator moved or
    /// loading, a request timed out), by the router; each is also counted against the broker
    /// that failed, when one did.
    pub retries: u64,
    /// FindCoordinator requests sent by the router (each may look up several keys).
    pub coordinator_lookups: u64,
}

impl ClientMetrics {
    /// The entry of broker `node_id`, if the client has talked to it.
    pub fn broker(&self, node_id: i32) -> Option<&BrokerMetrics> {
        self.brokers.iter().find(|b| b.node_id == Some(node_id))
    }

    /// The entry of the broker at `addr` (`host:port` as connected to).
    pub fn broker_at(&self, addr: &str) -> Option<&BrokerMetrics> {
        self.brokers.iter().find(|b| b.addr == addr)
    }

    /// The sum of every broker's requests sent.
    pub fn requests_sent(&self) -> u64 {
        self.brokers.iter().map(|b| b.requests_sent).sum()
    }

    /// The sum of every broker's connections opened.
    pub fn connections_opened(&self) -> u64 {
        self.brokers.iter().map(|b| b.connections_opened).sum()
    }
}

/// The counters of one broker, over every connection the client has had to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerMetrics {
    /// `host:port`, as the client connected to it.
    pub addr: String,
    /// Its node id, if the cluster's metadata lists this address.
    pub node_id: Option<i32>,
    /// TCP connections opened to it (each then negotiates API versions), the client's own
    /// and the fetch connections of its consumers.
    pub connections_opened: u64,
    /// SASL re-authentications of open connections (KIP-368), when the broker limits a
    /// session's lifetime (`connections.max.reauth.ms`).
    pub reauthentications: u64,
    /// Requests written to the socket (ApiVersions of each connection included).
    pub requests_sent: u64,
    /// Requests that got no usable answer: timed out, connection lost or closed before the answer,
    /// an answer that does not decode. Errors *in* an answer (an error code) are not counted.
    pub request_errors: u64,
    /// Bytes written, frame sizes included.
    pub bytes_sent: u64,
    /// Bytes read.
    pub bytes_received: u64,
    /// Retries of requests that failed at this broker (see [`ClientMetrics::retries`]).
    pub retries: u64,
    /// Answers that reported a quota throttle (`throttle_time_ms > 0`, KIP-219).
    pub throttled_responses: u64,
    /// The sum of the throttle times those answers reported.
    pub throttle_time: Duration,
    /// Requests sent and not yet answered (including those whose caller gave up).
    pub in_flight: u64,
    /// Time from a request's submission to its answer (a throttle wait included).
    pub latency: Latency,
}

/// A producer's counters: a snapshot from [`Producer::metrics`](super::Producer::metrics). The
/// requests it sends are also counted in its client's [`ClientMetrics`], per broker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerMetrics {
    /// Records acknowledged by their partition's leader.
    pub records_delivered: u64,
    /// Records whose delivery failed (each record is counted once: delivered or failed).
    pub records_failed: u64,
    /// Produce requests sent.
    pub produce_requests: u64,
    /// Batches in those requests, every attempt counted.
    pub batches_sent: u64,
    /// Batches sent again after a retriable failure (`retries`, `retry.backoff.ms`).
    pub batch_retries: u64,
    /// Batches the broker refused as too large and that were split in two.
    pub batches_split: u64,
    /// Bytes of records buffered and not yet delivered or failed, now (`buffer.memory` bounds it).
    pub buffered_bytes: u64,
    /// Produce requests sent and not yet answered, now.
    pub requests_in_flight: u64,
}

/// Request latencies: count, sum and maximum, and how many fell under each bound of
/// [`Latency::BOUNDS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latency {
    /// Answers timed.
    pub count: u64,
    /// Their summed latency.
    pub total: Duration,
    /// The longest.
    pub max: Duration,
    /// `buckets[i]`: answers that took at most `BOUNDS[i]` and more than `BOUNDS[i - 1]`; the
    /// last bucket counts those above the last bound.
    pub buckets: [u64; BUCKETS],
}

const BUCKETS: usize = 8;

impl Latency {
    /// The upper bounds of the histogram's buckets but the last (which is unbounded).
    pub const BOUNDS: [Duration; BUCKETS - 1] = [
        Duration::from_millis(1),
        Duration::from_millis(5),
        Duration::from_millis(25),
        Duration::from_millis(100),
        Duration::from_millis(500),
        Duration::from_millis(2500),
        Duration::from_millis(10_000),
    ];

    /// The mean latency, if anything was timed.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| self.total / u32::try_from(self.count).unwrap_or(u32::MAX))
    }
}

/// The live counters of one broker, shared by its connections.
#[derive(Debug, Default)]
pub(crate) struct BrokerCounters {
    connections_opened: AtomicU64,
    reauthentications: AtomicU64,
    requests_sent: AtomicU64,
    request_errors: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    retries: AtomicU64,
    throttled_responses: AtomicU64,
    throttle_ms: AtomicU64,
    in_flight: AtomicI64,
    latency_count: AtomicU64,
    latency_total_us: AtomicU64,
    latency_max_us: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS],
}

impl BrokerCounters {
    pub(crate) fn connected(&self) {
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reauthenticated(&self) {
        self.reauthentications.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.requests_sent.fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.request_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn throttled(&self, ms: i32) {
        self.throttled_responses.fetch_add(1, Ordering::Relaxed);
        self.throttle_ms.fetch_add(ms.max(0) as u64, Ordering::Relaxed);
    }

    /// `delta` more (or fewer) requests awaiting an answer.
    pub(crate) fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn answered(&self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_total_us.fetch_add(us, Ordering::Relaxed);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
        let bucket = Latency::BOUNDS.iter().position(|b| latency <= *b).unwrap_or(BUCKETS - 1);
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, addr: &str, node_id: Option<i32>) -> BrokerMetrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BrokerMetrics {
            addr: addr.to_owned(),
            node_id,
            connections_opened: get(&self.connections_opened),
            reauthentications: get(&self.reauthentications),
            requests_sent: get(&self.requests_sent),
            request_errors: get(&self.request_errors),
            bytes_sent: get(&self.bytes_sent),
            bytes_received: get(&self.bytes_received),
            retries: get(&self.retries),
            throttled_responses: get(&self.throttled_responses),
            throttle_time: Duration::from_millis(get(&self.throttle_ms)),
            in_flight: self.in_flight.load(Ordering::Relaxed).max(0) as u64,
            latency: Latency {
                count: get(&self.latency_count),
                total: Duration::from_micros(get(&self.latency_total_us)),
                max: Duration::from_micros(get(&self.latency_max_us)),
                buckets: std::array::from_fn(|i| get(&self.latency_buckets[i])),
            },
        }
    }
}

/// Every broker's counters, by address; the map's lock is taken only when a connection is
/// opened (to find its broker's counters) and for a snapshot, never per request.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    brokers: Mutex<BTreeMap<String, Arc<BrokerCounters>>>,
    retries: AtomicU64,
    coordinator_lookups: AtomicU64,
}

impl Registry {
    /// The counters of the broker at `addr`, created on first use.
    pub(crate) fn broker(&self, addr: &str) -> Arc<BrokerCounters> {
        lock(&self.brokers).entry(addr.to_owned()).or_default().clone()
    }

    /// A retry, counted against the broker at `failed` too if one failed.
    pub(crate) fn retry(&self, failed: Option<&str>) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        if let Some(addr) = failed {
            self.broker(addr).retry();
        }
    }

    pub(crate) fn coordinator_lookup(&self) {
        self.coordinator_lookups.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot; `node_of` names the node at an address.
    pub(crate) fn snapshot(&self, node_of: impl Fn(&str) -> Option<i32>) -> ClientMetrics {
        let brokers: Vec<(String, Arc<BrokerCounters>)> =
            lock(&self.brokers).iter().map(|(a, c)| (a.clone(), c.clone())).collect();
        ClientMetrics {
            brokers: brokers.iter().map(|(addr, c)| c.snapshot(addr, node_of(addr))).collect(),
            retries: self.retries.load(Ordering::Relaxed),
            coordinator_lookups: self.coordinator_lookups.load(Ordering::Relaxed),
        }
    }
}

// The map is only ever inserted into, so a poisoned lock is usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_buckets() {
        let c = BrokerCounters::default();
        for ms in [0, 1, 2, 30, 20_000] {
            c.answered(Duration::from_millis(ms));
        }
        let s = c.snapshot("a:1", None).latency;
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets, [2, 1, 0, 1, 0, 0, 0, 1]);
        assert_eq!(s.max, Duration::from_secs(20));
        assert_eq!(s.mean(), Some(Duration::from_micros(20_033_000 / 5)));
    }

    #[test]
    fn a_registry_keeps_one_entry_per_address_and_counts_retries_twice() {
        let r = Registry::default();
        r.broker("a:1").sent(10);
        r.broker("a:1").sent(5);
        r.retry(Some("a:1"));
        r.retry(None);
        let s = r.snapshot(|a| (a == "a:1").then_some(7));
        assert_eq!(s.retries, 2);
        let b = s.broker(7).expect("node 7");
        assert_eq!((b.requests_sent, b.bytes_sent, b.retries), (2, 15, 1));
    }
}
