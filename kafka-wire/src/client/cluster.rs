//! The cluster client: bootstrap, the broker list from Metadata, and one connection per broker,
//! opened on first use and replaced when it fails.
//!
//! The pool holds one slot per broker. A lock over the pool is only ever held to look a slot up
//! or replace it, never across a connect or a request: a broker that accepts connections but
//! never answers (a stopped process, a black-holed host) delays only what is sent to it.
//!
//! Requests that any broker can answer go to the healthiest one (see [`Client::any_broker`]); a
//! broker whose connection failed is tried last until its backoff (`retry.backoff.ms`, KIP-580)
//! has passed, so that repeated attempts rotate to the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::connection::{Connection, ConnectionConfig};
use super::error::{Error, Result};
use super::metrics::{ClientMetrics, Registry};
use super::router::CoordinatorCache;
use crate::codec::messages::metadata::MetadataRequestTopic;
use crate::codec::messages::{MetadataRequest, MetadataResponse, Request};
use crate::proto::backoff::Backoff;

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `host:port` addresses tried in order until one answers (`bootstrap.servers`).
    pub bootstrap_servers: Vec<String>,
    /// Connection settings (timeouts, frame size, client id).
    pub connection: ConnectionConfig,
}

impl ClientConfig {
    /// A configuration for a comma-separated `bootstrap.servers` list, with defaults elsewhere.
    pub fn new(bootstrap_servers: &str) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            connection: ConnectionConfig::default(),
        }
    }

    /// Sets `retry.backoff.ms` and `retry.backoff.max.ms` (KIP-580): the first wait before a
    /// retry and its cap.
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.connection.retry_backoff = base;
        self.connection.retry_backoff_max = max;
        self
    }
}

/// A broker as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerAddr {
    /// The broker's node id.
    pub node_id: i32,
    /// The host it advertises.
    pub host: String,
    /// The port it advertises.
    pub port: i32,
    /// Its `broker.rack`, if set.
    pub rack: Option<String>,
}

impl BrokerAddr {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A handle on a Kafka cluster. Clones share the same connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    brokers: RwLock<BTreeMap<i32, BrokerAddr>>,
    controller_id: RwLock<Option<i32>>,
    cluster_id: RwLock<Option<String>>,
    /// Connections by node id.
    connections: Pool,
    /// A second connection per broker for group and transaction coordination. A broker answers
    /// one connection's requests in order, so a commit or heartbeat on the connection of a
    /// long-polling Fetch would wait out `fetch.max.wait.ms`.
    control_connections: Pool,
    /// A third connection per broker for a consumer's long-polling Fetch requests, so that on a
    /// client shared by a consumer and a producer (or an admin client) nothing queues behind a
    /// Fetch the broker holds for up to `fetch.max.wait.ms`. Not counted when looking for stuck
    /// brokers: a Fetch held at the broker is what a long poll is.
    fetch_connections: Pool,
    /// The connection used before the broker list is known; afterwards one more candidate for
    /// requests any broker answers.
    bootstrap: Mutex<Slot>,
    /// Brokers (by address) whose connection or request failed recently, with the backoff that
    /// keeps them last in line for requests any broker answers.
    failures: Mutex<HashMap<String, Backoff>>,
    /// Counters per broker.
    metrics: Registry,
    /// Group and transaction coordinators, as found by the router.
    coordinators: CoordinatorCache,
}

/// A connection with a request unanswered for this long while nothing arrives is taken for stuck
/// and avoided for requests any broker answers (a healthy broker answers those in milliseconds;
/// a long-polling Fetch waits `fetch.max.wait.ms`, 500 ms by default).
const STALL: Duration = Duration::from_secs(2);

/// One connection, or the attempt to open it. Callers that find a connect in progress wait for
/// it instead of opening a second connection; if the attempt fails (or its caller is dropped),
/// the next waiter makes its own. A slot whose connection has closed is replaced by a fresh one.
type Slot = Arc<OnceCell<Arc<Connection>>>;

/// Slots by node id. The mutex is held only to look up or replace a slot.
type Pool = Mutex<BTreeMap<i32, Slot>>;

impl Client {
    /// Connects to the first reachable bootstrap server and learns the cluster's brokers.
    /// Cancel-safe: a dropped future creates no client (a connection it opened is closed).
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        if config.bootstrap_servers.is_empty() {
            return Err(Error::config("bootstrap.servers", "no address given"));
        }
        let client = Self {
            inner: Arc::new(Inner {
                config,
                brokers: RwLock::new(BTreeMap::new()),
                controller_id: RwLock::new(None),
                cluster_id: RwLock::new(None),
                connections: Mutex::new(BTreeMap::new()),
                control_connections: Mutex::new(BTreeMap::new()),
                fetch_connections: Mutex::new(BTreeMap::new()),
                bootstrap: Mutex::new(Slot::default()),
                failures: Mutex::new(HashMap::new()),
                metrics: Registry::default(),
                coordinators: CoordinatorCache::default(),
            }),
        };
        client.metadata(Some(&[])).await?;
        Ok(client)
    }

    /// The configuration the client was created with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// A snapshot of the client's counters: per broker, requests, errors, bytes, retries,
    /// throttling and latency (see [`ClientMetrics`]).
    pub fn metrics(&self) -> ClientMetrics {
        let brokers = self.brokers();
        self.inner.metrics.snapshot(|addr| brokers.iter().find(|b| b.addr() == addr).map(|b| b.node_id))
    }

    pub(super) fn inner_coordinators(&self) -> &CoordinatorCache {
        &self.inner.coordinators
    }

    pub(super) fn registry(&self) -> &Registry {
        &self.inner.metrics
    }

    /// A backoff with the configured `retry.backoff.ms` and `retry.backoff.max.ms`.
    pub(super) fn backoff(&self) -> Backoff {
        let c = &self.inner.config.connection;
        Backoff::new(c.retry_backoff, c.retry_backoff_max)
    }

    /// Notes that the broker at `addr` failed (a connect, a request): requests any broker
    /// answers go elsewhere while its backoff runs.
    pub(super) fn broker_failed(&self, addr: &str) {
        let now = Instant::now();
        lock(&self.inner.failures).entry(addr.to_owned()).or_insert_with(|| self.backoff()).fail(now);
    }

    /// Notes that the broker at `addr` answered: its failures are forgotten.
    pub(super) fn broker_answered(&self, addr: &str) {
        let mut failures = lock(&self.inner.failures);
        if !failures.is_empty() {
            failures.remove(addr);
        }
    }

    fn backing_off(&self, addr: &str, now: Instant) -> bool {
        lock(&self.inner.failures).get(addr).is_some_and(|b| !b.ready(now))
    }

    /// Fetches metadata for `topics` (`None`: every topic; `Some(&[])`: brokers only) from any
    /// broker ([`Client::any_broker`]) and updates the broker list.
    ///
    /// Cancel-safe: it only reads; dropped, the broker list stays as it was.
    pub async fn metadata(&self, topics: Option<&[&str]>) -> Result<MetadataResponse> {
        let request = MetadataRequest {
            topics: topics.map(|ts| {
                ts.iter().map(|t| MetadataRequestTopic { name: Some((*t).into()), ..Default::default() }).collect()
            }),
            allow_auto_topic_creation: false,
            ..Default::default()
        };
        let response = self.send_any(&request).await?;
        self.learn(&response);
        Ok(response)
    }

    /// The brokers of the last metadata response, by node id.
    pub fn brokers(&self) -> Vec<BrokerAddr> {
        read(&self.inner.brokers).values().cloned().collect()
    }

    /// The active controller's node id, as of the last metadata response.
    pub fn controller_id(&self) -> Option<i32> {
        *read(&self.inner.controller_id)
    }

    /// The cluster id, as of the last metadata response.
    pub fn cluster_id(&self) -> Option<String> {
        read(&self.inner.cluster_id).clone()
    }

    /// The connection to broker `node_id`, opened if there is none or the last one failed.
    /// Concurrent callers for the same broker share one connect; callers for other brokers never
    /// wait for it.
    ///
    /// Cancel-safe: dropping the future abandons at most a connect in progress, which another
    /// caller waiting for the same broker then starts again.
    pub async fn broker(&self, node_id: i32) -> Result<Arc<Connection>> {
        self.connection(&self.inner.connections, node_id).await
    }

    /// The coordination connection to broker `node_id`: separate from the one that carries
    /// Produce and Fetch requests, so that group and transaction requests never queue behind a
    /// long-polling Fetch. Cancel-safe, like [`Client::broker`].
    pub async fn control(&self, node_id: i32) -> Result<Arc<Connection>> {
        self.connection(&self.inner.control_connections, node_id).await
    }

    /// Sends `request` to broker `node_id` on its coordination connection, at the highest
    /// common version up to `max_version` (requests that name topics rather than topic ids stop
    /// below the versions that need ids).
    ///
    /// Cancel-safe as [`Connection::send_version`] is: dropped, the request may have been sent.
    pub async fn send_control<R: Request>(&self, node_id: i32, request: &R, max_version: i16) -> Result<R::Response> {
        let conn = self.control(node_id).await?;
        let version = conn.version_for::<R>()?.min(max_version);
        conn.send_version(request, version).await
    }

    /// Sends a long-polling `request` (a consumer's Fetch) to broker `node_id` on its fetch
    /// connection, at the highest common version. Cancel-safe as [`Client::send`].
    pub(crate) async fn send_fetch<R: Request>(&self, node_id: i32, request: &R) -> Result<R::Response> {
        self.connection(&self.inner.fetch_connections, node_id).await?.send(request).await
    }

    async fn connection(&self, pool: &Pool, node_id: i32) -> Result<Arc<Connection>> {
        let slot = live_slot(lock(pool).entry(node_id).or_default());
        slot.get_or_try_init(|| async {
            // A node missing from the metadata (a broker that died and was fenced, a
            // coordinator learnt before it went) cannot be reached: a network fault that retries
            // and coordinator lookups recover from, not a protocol violation.
            let addr =
                read(&self.inner.brokers).get(&node_id).map(BrokerAddr::addr).ok_or_else(|| Error::Unreachable {
                    tried: vec![format!("node {node_id}")],
                    last: Box::new(Error::Protocol {
                        broker: format!("node {node_id}"),
                        reason: format!("node {node_id} is not in the cluster's metadata"),
                    }),
                })?;
            let counters = self.inner.metrics.broker(&addr);
            let connected = Connection::connect_counted(&addr, self.inner.config.connection.clone(), counters).await;
            if connected.is_err() {
                self.broker_failed(&addr);
            }
            connected.map(Arc::new)
        })
        .await
        .cloned()
    }

    /// Sends `request` to broker `node_id` at the highest common version.
    ///
    /// Cancel-safe as [`Connection::send`] is: dropped, the request may have been sent, and
    /// its answer is discarded.
    pub async fn send<R: Request>(&self, node_id: i32, request: &R) -> Result<R::Response> {
        self.broker(node_id).await?.send(request).await
    }

    /// Sends `request` to the healthiest broker ([`Client::any_broker`]). A connection failure
    /// puts that broker last in line for the next such request, so that retries rotate.
    ///
    /// Cancel-safe as [`Connection::send_version`] is: dropped, the request may have been sent.
    pub async fn send_any<R: Request>(&self, request: &R) -> Result<R::Response> {
        let conn = self.any_broker().await?;
        let result = conn.send(request).await;
        match &result {
            Ok(_) => self.broker_answered(conn.addr()),
            Err(e) if is_transport(e) => self.broker_failed(conn.addr()),
            Err(_) => {}
        }
        result
    }

    /// A live connection to some broker, chosen in this order: an open connection that is not
    /// stuck (no connection to its broker with a request unanswered for seconds while nothing
    /// arrives), not throttled and whose
    /// broker has not failed recently, with the fewest requests in flight (the connections to
    /// the brokers of the last metadata, and the bootstrap connection); then a broker not
    /// connected yet; then a stuck or throttled connection; last, the brokers that failed
    /// recently (a failed connect or request whose backoff has not passed, or a connection that
    /// has closed). A broker that cannot be connected to is passed over for the next. If none
    /// can be reached (or none is known yet), the bootstrap connection, to the first known or
    /// bootstrap address that accepts one.
    ///
    /// Cancel-safe: dropping the future abandons at most a connect in progress, which a later
    /// call starts again.
    pub async fn any_broker(&self) -> Result<Arc<Connection>> {
        enum Candidate {
            Node(i32),
            Open(Arc<Connection>),
        }
        let now = Instant::now();
        // A broker is stuck if any of its connections is: the others are as likely to hang.
        let stuck: Vec<String> = {
            let mut open: Vec<Arc<Connection>> = Vec::new();
            for pool in [&self.inner.connections, &self.inner.control_connections] {
                open.extend(lock(pool).values().filter_map(|slot| slot.get().cloned()));
            }
            open.extend(lock(&self.inner.bootstrap).get().cloned());
            open.iter().filter(|c| !c.is_closed() && c.stalled(STALL)).map(|c| c.addr().to_owned()).collect()
        };
        let rank_open = |c: &Connection| -> u8 {
            if self.backing_off(c.addr(), now) {
                3
            } else if stuck.iter().any(|a| a == c.addr()) || c.throttled_until().is_some() {
                2
            } else {
                0
            }
        };
        let mut ranked: Vec<(u8, usize, i32, Candidate)> = Vec::new();
        for b in self.brokers() {
            let slot = lock(&self.inner.connections).get(&b.node_id).and_then(|slot| slot.get().cloned());
            let (rank, in_flight) = match &slot {
                Some(c) if c.is_closed() => (3, 0),
                Some(c) => (rank_open(c), c.in_flight()),
                None if self.backing_off(&b.addr(), now) => (3, 0),
                None => (1, 0),
            };
            ranked.push((rank, in_flight, b.node_id, Candidate::Node(b.node_id)));
        }
        if let Some(c) = lock(&self.inner.bootstrap).get().filter(|c| !c.is_closed()).cloned() {
            ranked.push((rank_open(&c), c.in_flight(), i32::MAX, Candidate::Open(c)));
        }
        ranked.sort_unstable_by_key(|(rank, in_flight, order, _)| (*rank, *in_flight, *order));
        for (_, _, _, candidate) in ranked {
            match candidate {
                Candidate::Open(c) => return Ok(c),
                Candidate::Node(node) => match self.broker(node).await {
                    Ok(c) => return Ok(c),
                    Err(e) => tracing::debug!(node, error = %e, "broker unreachable; trying another"),
                },
            }
        }
        let slot = live_slot(&mut lock(&self.inner.bootstrap));
        slot.get_or_try_init(|| self.connect_bootstrap()).await.cloned()
    }

    async fn connect_bootstrap(&self) -> Result<Arc<Connection>> {
        let mut tried = Vec::new();
        let mut last = None;
        let known: Vec<String> = self.brokers().iter().map(BrokerAddr::addr).collect();
        let now = Instant::now();
        // Addresses that failed recently go last.
        let mut addrs: Vec<&String> = known.iter().chain(&self.inner.config.bootstrap_servers).collect();
        addrs.sort_by_key(|a| self.backing_off(a, now));
        for addr in addrs {
            if tried.contains(addr) {
                continue;
            }
            tried.push(addr.clone());
            let counters = self.inner.metrics.broker(addr);
            match Connection::connect_counted(addr, self.inner.config.connection.clone(), counters).await {
                Ok(c) => return Ok(Arc::new(c)),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "bootstrap connection failed");
                    self.broker_failed(addr);
                    last = Some(e);
                }
            }
        }
        Err(Error::Unreachable {
            tried,
            last: Box::new(last.unwrap_or_else(|| Error::config("bootstrap.servers", "no address given"))),
        })
    }

    /// Closes every open connection; a connect in progress when this is called still completes,
    /// and its connection is closed when its last user drops it. Cancel-safe: the connections
    /// are closed before the first await.
    pub async fn close(&self) {
        let mut slots: Vec<Slot> = Vec::new();
        for pool in [&self.inner.connections, &self.inner.control_connections, &self.inner.fetch_connections] {
            slots.extend(std::mem::take(&mut *lock(pool)).into_values());
        }
        slots.push(std::mem::take(&mut *lock(&self.inner.bootstrap)));
        for c in slots.iter().filter_map(|s| s.get()) {
            c.close();
        }
    }

    fn learn(&self, response: &MetadataResponse) {
        let brokers = response
            .brokers
            .iter()
            .map(|b| {
                let addr = BrokerAddr {
                    node_id: b.node_id,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.as_ref().map(ToString::to_string),
                };
                (b.node_id, addr)
            })
            .collect();
        *write(&self.inner.brokers) = brokers;
        *write(&self.inner.controller_id) = (response.controller_id >= 0).then_some(response.controller_id);
        *write(&self.inner.cluster_id) = response.cluster_id.as_ref().map(ToString::to_string);
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("brokers", &self.brokers()).finish()
    }
}

/// Connection failures: the request may be sent again, to another broker. Not a broker that
/// refused the client's TLS or SASL credentials: the others would refuse them too.
pub(super) fn is_transport(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } => e.is_retriable(),
        _ => matches!(e, Error::Io { .. } | Error::Closed { .. } | Error::Timeout { .. }),
    }
}

/// The slot to use: `slot` itself, unless its connection has closed, in which case it is
/// replaced by an empty one (under the caller's lock, so concurrent callers agree on it).
fn live_slot(slot: &mut Slot) -> Slot {
    if slot.get().is_some_and(|c| c.is_closed()) {
        *slot = Slot::default();
    }
    slot.clone()
}

// The guarded values are replaced whole, never left half-written, so a poisoned lock is usable.
fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
