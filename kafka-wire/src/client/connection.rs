//! One connection to one broker: pipelined requests matched to responses by correlation id,
//! and the API versions negotiated with that broker. It runs over TCP, or whatever stream a
//! [`Dialer`](super::Dialer) opens, with TLS and SASL on top when `security.protocol` asks for
//! them (see [`super::transport`]).
//!
//! A connection runs two tasks: a writer that drains queued frames into the socket (coalescing
//! what is queued into one write) and a reader that splits the socket's bytes into frames and
//! hands each to the request waiting for its correlation id. Reading and writing never wait on
//! each other, so a large request cannot deadlock against a large response.
//!
//! SASL re-authentication (KIP-368): when the broker limits the session's lifetime, a task
//! re-authenticates the connection before the session ends. Meanwhile the writer holds the
//! connection's other requests (the broker takes nothing but SASL requests during the exchange);
//! the answers to requests already sent arrive as usual, as the broker answers them first.
//!
//! Quotas (KIP-219): an answer that reports a throttle (`throttle_time_ms`, at the versions where
//! the client must honour it) stops the connection from sending for that long, also when nobody
//! waits for that answer any more (the reader then decodes it for its throttle, or the dropped
//! handle does if the answer had reached it). Async senders wait before they queue anything (so
//! a sender dropped while waiting leaves nothing behind), and the writer holds frames queued with
//! [`Connection::submit`] until the throttle ends; the request timeout of such a frame starts
//! when the throttle ends. Other connections are not affected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::error::{Error, Result};
use super::frame_pool::{self, FramePool};
use super::metrics::{BrokerCounters, BrokerMetrics};
use super::transport::{BoxStream, SecurityConfig};
use super::{sasl, tls};
use crate::codec::frame::{self, Frame, DEFAULT_MAX_FRAME};
use crate::codec::messages::{
    ApiVersionsRequest, ApiVersionsResponse, Message, Request, SaslAuthenticateRequest, Throttle, VersionRange,
};
use crate::codec::{ApiKey, ErrorCode};

/// Settings of a single broker connection.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// Sent in every request header (`client.id`).
    pub client_id: Option<String>,
    /// How long establishing the TCP connection may take (`socket.connection.setup.timeout.ms`).
    pub connect_timeout: Duration,
    /// How long a request may wait for its response (`request.timeout.ms`).
    pub request_timeout: Duration,
    /// Frames larger than this are refused (`receive.message.max.bytes`).
    pub max_frame_size: usize,
    /// Reported to the broker in ApiVersions v3+ (KIP-511).
    pub client_software_name: String,
    /// Reported with `client_software_name` (KIP-511).
    pub client_software_version: String,
    /// `retry.backoff.ms`: the first wait before a request is retried, doubling per attempt, with
    /// ±20 % jitter (KIP-580). Used by the client's router and by [`Admin`](super::Admin).
    pub retry_backoff: Duration,
    /// `retry.backoff.max.ms`: the cap of that backoff.
    pub retry_backoff_max: Duration,
    /// `security.protocol`, `ssl.*`, `sasl.*`, and the [`Dialer`](super::Dialer) if any.
    pub security: SecurityConfig,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            client_id: Some("kafka-wire".into()),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_frame_size: DEFAULT_MAX_FRAME,
            client_software_name: "kafka-wire".into(),
            client_software_version: env!("CARGO_PKG_VERSION").into(),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            security: SecurityConfig::default(),
        }
    }
}

/// A connection to one broker. Cheap to share behind an `Arc`; requests from many tasks are
/// pipelined on it.
pub struct Connection {
    addr: String,
    config: ConnectionConfig,
    shared: Arc<Shared>,
    submitter: Submitter,
    /// The broker's version range for every API it offers.
    versions: HashMap<ApiKey, VersionRange>,
    /// The cluster's finalized feature levels as this broker reported them (ApiVersions v3+,
    /// KIP-584), e.g. `transaction.version`: by name, the maximum level.
    features: HashMap<String, i16>,
    /// The reader, the writer, and the re-authentication task if the broker limits sessions.
    tasks: Vec<JoinHandle<()>>,
}

/// What queues requests on a connection, for the connection's callers and for its SASL exchanges
/// (the first one and the re-authentications, KIP-368).
#[derive(Clone)]
pub(super) struct Submitter {
    shared: Arc<Shared>,
    /// The callers' requests.
    outgoing: mpsc::UnboundedSender<Frame>,
    /// SASL requests, which the writer sends even while it holds the others.
    auth: mpsc::UnboundedSender<Frame>,
    client_id: Option<String>,
    request_timeout: Duration,
}

/// State the reader, the writer and the callers share.
struct Shared {
    addr: String,
    /// Whether the connection runs over TLS (for what its socket errors mean).
    tls: bool,
    /// Whether the connection authenticates with SASL (for what an early close means).
    sasl: bool,
    next_correlation_id: AtomicI32,
    /// Set while the connection re-authenticates: the writer then sends only SASL requests.
    reauthenticating: watch::Sender<bool>,
    closed: AtomicBool,
    pending: Mutex<Pending>,
    /// This broker's counters, shared with the client's other connections to it.
    counters: Arc<BrokerCounters>,
    /// The origin of the two clocks below.
    epoch: Instant,
    /// Until when the broker throttles this connection (KIP-219), in nanoseconds after `epoch`;
    /// only ever moved forward.
    throttled_until: AtomicU64,
    /// When bytes last arrived, in nanoseconds after `epoch`.
    last_received: AtomicU64,
    /// Buffers for large answers, closed with the connection.
    frames: Arc<FramePool>,
}

#[derive(Default)]
struct Pending {
    /// Requests awaiting their answer, with when they were submitted.
    waiting: HashMap<i32, (oneshot::Sender<Result<Bytes>>, Instant)>,
    /// Requests whose caller gave up (timeout or drop): their late responses are discarded,
    /// after reading the throttle they report (KIP-219), which binds the connection whoever asked.
    /// (An answer handed over before its caller gave up is read for its throttle by the dropped
    /// handle.)
    abandoned: HashMap<i32, Abandoned>,
    /// Set once the connection has failed; later requests fail with it at once.
    failure: Option<Error>,
}

impl Connection {
    /// Connects to `addr` (`host:port`), runs the TLS handshake if the security protocol asks
    /// for it (both within `connect_timeout`), negotiates API versions with the broker, and
    /// authenticates with SASL if the protocol asks for that (each request within the request
    /// timeout). A refused certificate is [`Error::Tls`]; refused credentials are
    /// [`Error::Authentication`]. When the broker limits the SASL session's lifetime (KIP-368),
    /// the connection re-authenticates in the background before the session ends; if that is
    /// refused, the connection fails with the refusal.
    ///
    /// Cancel-safe: a dropped future leaves no connection open.
    pub async fn connect(addr: &str, config: ConnectionConfig) -> Result<Self> {
        Self::connect_counted(addr, config, Arc::default()).await
    }

    /// [`Connection::connect`], counting into `counters` (those of the client's broker).
    /// Cancel-safe as [`Connection::connect`].
    pub(crate) async fn connect_counted(
        addr: &str,
        config: ConnectionConfig,
        counters: Arc<BrokerCounters>,
    ) -> Result<Self> {
        let security = &config.security;
        security.validate()?;
        let tls = if security.protocol.tls() { Some(security.tls.client_config()?) } else { None };
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let after = config.connect_timeout;
        let shared = Arc::new(Shared {
            addr: addr.to_owned(),
            tls: tls.is_some(),
            sasl: security.protocol.sasl(),
            next_correlation_id: AtomicI32::new(0),
            reauthenticating: watch::Sender::new(false),
            closed: AtomicBool::new(false),
            pending: Mutex::new(Pending::default()),
            counters,
            epoch: Instant::now(),
            throttled_until: AtomicU64::new(0),
            last_received: AtomicU64::new(0),
            frames: Arc::default(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (auth_tx, auth_rx) = mpsc::unbounded_channel();
        let max_frame = config.max_frame_size;
        let tasks = match (&security.dialer, tls) {
            // Plain TCP keeps the socket's own halves, which need no lock between them.
            (None, None) => {
                let (read_half, write_half) = tcp(addr, deadline, after).await?.into_split();
                spawn_loops(read_half, write_half, [rx, auth_rx], &shared, max_frame)
            }
            (dialer, tls) => {
                let stream: BoxStream = match dialer {
                    Some(d) => tokio::time::timeout_at(deadline, d.dial(addr))
                        .await
                        .map_err(|_| timed_out("connecting to", addr, after))?
                        .map_err(|e| Error::io(addr, e))?,
                    None => Box::new(tcp(addr, deadline, after).await?),
                };
                let stream: BoxStream = match tls {
                    Some(c) => Box::new(
                        tokio::time::timeout_at(deadline, tls::handshake(c, addr, stream))
                            .await
                            .map_err(|_| timed_out("TLS handshake with", addr, after))??,
                    ),
                    None => stream,
                };
                let (read_half, write_half) = tokio::io::split(stream);
                spawn_loops(read_half, write_half, [rx, auth_rx], &shared, max_frame)
            }
        };
        shared.counters.connected();
        let submitter = Submitter {
            shared: shared.clone(),
            outgoing: tx,
            auth: auth_tx,
            client_id: config.client_id.clone(),
            request_timeout: config.request_timeout,
        };
        let mut conn = Self {
            addr: addr.to_owned(),
            config,
            shared,
            submitter,
            versions: HashMap::new(),
            features: HashMap::new(),
            tasks: tasks.into(),
        };
        (conn.versions, conn.features) = conn.negotiate().await?;
        if conn.config.security.protocol.sasl() {
            let sasl = conn.config.security.sasl.clone();
            let version = conn.version_for::<SaslAuthenticateRequest>()?;
            if let Some(lifetime) = sasl::authenticate(&conn.submitter, &sasl, version).await? {
                let task = reauthenticate(conn.submitter.clone(), sasl, version, lifetime);
                conn.tasks.push(tokio::spawn(task));
            }
        }
        Ok(conn)
    }

    /// The broker's address as it was connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the connection has failed or been closed; a closed connection fails every request.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// How many requests have been sent and not answered, counting those whose caller gave up
    /// (timed out or dropped): a broker that stopped answering piles them up, so the pool
    /// prefers connections with fewer.
    pub fn in_flight(&self) -> usize {
        let p = self.shared.lock();
        p.waiting.len() + p.abandoned.len()
    }

    /// This connection's counters (those of its broker, when the connection belongs to a
    /// [`Client`](super::Client): every connection to the broker adds to them).
    pub fn metrics(&self) -> BrokerMetrics {
        self.shared.counters.snapshot(&self.addr, None)
    }

    /// Until when the broker has asked this connection to send nothing (KIP-219), if that is
    /// still ahead.
    pub fn throttled_until(&self) -> Option<Instant> {
        self.shared.throttled_until().filter(|t| *t > Instant::now())
    }

    /// Whether the connection looks stuck: a request has waited longer than `after` and nothing
    /// has arrived for as long (a stopped broker whose socket stays open).
    pub(crate) fn stalled(&self, after: Duration) -> bool {
        let now = Instant::now();
        let oldest = self.shared.lock().waiting.values().map(|(_, at)| *at).min();
        let quiet = now.saturating_duration_since(self.shared.at(self.shared.last_received.load(Ordering::Acquire)));
        oldest.is_some_and(|at| now.saturating_duration_since(at) > after) && quiet > after
    }

    /// The version range the broker offers for `api`, if it offers it.
    pub fn broker_versions(&self, api: ApiKey) -> Option<VersionRange> {
        self.versions.get(&api).copied()
    }

    /// The finalized level of a cluster feature (such as `transaction.version`, whose level 2
    /// enables KIP-890's transactions v2), as of this connection's ApiVersions exchange.
    pub fn finalized_feature(&self, name: &str) -> Option<i16> {
        self.features.get(name).copied()
    }

    /// The highest version of `R` that both this codec and the broker speak.
    pub fn version_for<R: Request>(&self) -> Result<i16> {
        let broker = self.broker_versions(R::API_KEY);
        broker.and_then(|b| R::VERSIONS.highest_common(b)).ok_or_else(|| Error::UnsupportedVersion {
            api: R::API_KEY,
            client: R::VERSIONS,
            broker,
            broker_addr: self.addr.clone(),
        })
    }

    /// Sends `request` at the highest common version and waits for its response.
    ///
    /// Cancel-safe as [`Connection::send_version`] is.
    pub async fn send<R: Request>(&self, request: &R) -> Result<R::Response> {
        let version = self.version_for::<R>()?;
        self.send_version(request, version).await
    }

    /// Sends `request` at `version` and waits for its response. While the broker throttles the
    /// connection (KIP-219), it first waits for the throttle to end.
    ///
    /// Cancel-safe in that dropping the future leaves the connection as it was: dropped while
    /// waiting out a throttle, nothing has been sent; dropped later, the request may have reached
    /// the broker, and its answer is discarded when it comes.
    pub async fn send_version<R: Request>(&self, request: &R, version: i16) -> Result<R::Response> {
        self.shared.wait_throttle().await;
        self.submit(request, version)?.response().await
    }

    /// Queues `request` at `version` on the connection now, and returns a handle that waits for
    /// its response. Requests submitted one after another reach the broker in that order, which
    /// the idempotent producer relies on. A request that `version` cannot carry (a field the
    /// version lacks holding a non-default value, a string over 32767 bytes) is refused with
    /// [`Error::Misuse`] naming the message, the field and the version; nothing is sent.
    ///
    /// While the broker throttles the connection (KIP-219) the request is held and written when
    /// the throttle ends; its request timeout counts from then.
    pub fn submit<R: Request>(&self, request: &R, version: i16) -> Result<PendingResponse<R>> {
        self.submitter.submit(request, version, false, SMALL_FRAME)
    }

    /// [`submit`](Self::submit), encoding into a buffer of `capacity` bytes from the start: for
    /// a request whose size the caller knows (a Produce request's batches), which would
    /// otherwise be copied into a buffer doubling from 256 bytes.
    pub(crate) fn submit_sized<R: Request>(
        &self,
        request: &R,
        version: i16,
        capacity: usize,
    ) -> Result<PendingResponse<R>> {
        self.submitter.submit(request, version, false, capacity)
    }

    /// Sends a request for which the broker sends no response (Produce with `acks=0`).
    pub fn send_without_response<R: Request>(&self, request: &R, version: i16) -> Result<()> {
        let (_, frame) = self.submitter.encode(request, version, SMALL_FRAME)?;
        self.submitter.enqueue(frame, false)
    }

    /// Closes the connection: pending requests fail with [`Error::Closed`].
    pub fn close(&self) {
        self.shared.fail(Error::Closed { broker: self.addr.clone() });
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Sends the frame and waits for the raw response frame (header included).
    async fn round_trip<R: Request>(&self, request: &R, version: i16) -> Result<Bytes> {
        self.submit(request, version)?.frame().await
    }

    /// ApiVersions, at the highest version this codec knows. A broker that does not know that
    /// version answers with a v0 body and UNSUPPORTED_VERSION, listing its own ApiVersions range
    /// (KIP-511); the request is then repeated at the highest version both know.
    async fn negotiate(&self) -> Result<(HashMap<ApiKey, VersionRange>, HashMap<String, i16>)> {
        let request = ApiVersionsRequest {
            client_software_name: self.config.client_software_name.as_str().into(),
            client_software_version: self.config.client_software_version.as_str().into(),
            ..Default::default()
        };
        let mut version = ApiVersionsRequest::VERSIONS.max;
        for _ in 0..2 {
            let frame = self.round_trip(&request, version).await?;
            let response = decode_api_versions(frame, version)
                .map_err(|source| Error::Decode { broker: self.addr.clone(), source })?;
            self.shared.throttle(&response, version);
            if response.error_code == ErrorCode::UNSUPPORTED_VERSION {
                let theirs = response
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiKey::API_VERSIONS.0)
                    .map(|k| VersionRange { min: k.min_version, max: k.max_version });
                match theirs.and_then(|t| ApiVersionsRequest::VERSIONS.highest_common(t)) {
                    Some(v) if v < version => {
                        version = v;
                        continue;
                    }
                    _ => {
                        return Err(Error::UnsupportedVersion {
                            api: ApiKey::API_VERSIONS,
                            client: ApiVersionsRequest::VERSIONS,
                            broker: theirs,
                            broker_addr: self.addr.clone(),
                        })
                    }
                }
            }
            if response.error_code != ErrorCode::NONE {
                return Err(Error::broker(response.error_code, None, format!("ApiVersions to {}", self.addr)));
            }
            let versions = response
                .api_keys
                .iter()
                .map(|k| (ApiKey(k.api_key), VersionRange { min: k.min_version, max: k.max_version }))
                .collect();
            let features =
                response.finalized_features.iter().map(|f| (f.name.to_string(), f.max_version_level)).collect();
            return Ok((versions, features));
        }
        Err(Error::Protocol {
            broker: self.addr.clone(),
            reason: "ApiVersions negotiation did not settle on a version".into(),
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("addr", &self.addr).field("closed", &self.is_closed()).finish()
    }
}

/// The buffer a request frame starts in, unless its sender knows better: most requests fit.
const SMALL_FRAME: usize = 256;

impl Submitter {
    pub(super) fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// [`Connection::submit`], on the SASL lane if `auth`.
    fn submit<R: Request>(&self, request: &R, version: i16, auth: bool, capacity: usize) -> Result<PendingResponse<R>> {
        let (correlation_id, frame) = self.encode(request, version, capacity)?;
        let (tx, rx) = oneshot::channel();
        let submitted = Instant::now();
        {
            let mut pending = self.shared.lock();
            if let Some(e) = &pending.failure {
                return Err(e.clone());
            }
            pending.waiting.insert(correlation_id, (tx, submitted));
            self.shared.counters.in_flight(1);
        }
        let deadline = self.shared.throttled_until().map_or(submitted, |t| t.max(submitted)) + self.request_timeout;
        // If the handle is dropped or times out, the late response must not be taken for a
        // protocol violation.
        let guard = AbandonOnDrop {
            shared: self.shared.clone(),
            correlation_id,
            rx,
            armed: true,
            abandoned: Abandoned { version, throttle: throttle_of::<R> },
        };
        // One span per request, from submission to its answer, for tracing what the client asks
        // of which broker: entered while its response is awaited.
        let span = tracing::debug_span!(
            "kafka.request",
            api = %R::API_KEY,
            version,
            broker = %self.shared.addr,
            correlation_id,
            outcome = tracing::field::Empty,
        );
        self.enqueue(frame, auth)?;
        Ok(PendingResponse {
            guard,
            version,
            timeout: self.request_timeout,
            deadline: deadline.into(),
            submitted,
            span,
            _request: std::marker::PhantomData,
        })
    }

    /// Sends a SASL request at `version` and waits for its answer; sent even while the
    /// connection re-authenticates.
    pub(super) async fn request<R: Request>(&self, request: &R, version: i16) -> Result<R::Response> {
        self.submit(request, version, true, SMALL_FRAME)?.response().await
    }

    /// Encodes the request frame. A request its version cannot carry (a field the version lacks
    /// holding a value, a length beyond its prefix) is the caller's misuse: nothing is sent.
    fn encode<R: Request>(&self, request: &R, version: i16, capacity: usize) -> Result<(i32, Frame)> {
        let correlation_id = self.shared.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        frame::encode_request_parts(request, version, correlation_id, self.client_id.as_deref(), capacity)
            .map(|frame| (correlation_id, frame))
            .map_err(|e| {
                Error::misuse(
                    format!("encoding a {} v{version} request for {}", R::API_KEY, self.shared.addr),
                    e.to_string(),
                )
            })
    }

    fn enqueue(&self, frame: Frame, auth: bool) -> Result<()> {
        let lane = if auth { &self.auth } else { &self.outgoing };
        lane.send(frame).map_err(|_| Error::Closed { broker: self.shared.addr.clone() })
    }
}

/// Re-authenticates the connection (KIP-368) before each session ends: at 85 % of its lifetime,
/// as Java's client does at the earliest, which leaves the exchange a margin. A failure fails
/// the connection with its error.
async fn reauthenticate(submitter: Submitter, config: super::SaslConfig, version: i16, mut lifetime: Duration) {
    let shared = submitter.shared.clone();
    loop {
        tokio::time::sleep(lifetime.mul_f64(0.85)).await;
        shared.reauthenticating.send_replace(true);
        let result = sasl::authenticate(&submitter, &config, version).await;
        shared.reauthenticating.send_replace(false);
        match result {
            Ok(next) => {
                shared.counters.reauthenticated();
                tracing::debug!(broker = %shared.addr, "re-authenticated");
                match next {
                    Some(next) => lifetime = next,
                    None => return,
                }
            }
            Err(e) => {
                tracing::warn!(broker = %shared.addr, error = %e, "re-authentication failed");
                shared.fail(e);
                return;
            }
        }
    }
}

/// Decodes an ApiVersions response, falling back to v0 when the broker answered a version it
/// does not know with a v0 body.
fn decode_api_versions(frame: Bytes, version: i16) -> crate::codec::DecodeResult<ApiVersionsResponse> {
    match frame::decode_response::<ApiVersionsRequest>(frame.clone(), version) {
        Ok((_, r)) => Ok(r),
        Err(e) if version > 0 => frame::decode_response::<ApiVersionsRequest>(frame, 0).map(|(_, r)| r).map_err(|_| e),
        Err(e) => Err(e),
    }
}

/// A request on its way: await [`PendingResponse::response`] for the broker's answer.
#[must_use = "dropping it abandons the request's response"]
pub struct PendingResponse<R: Request> {
    /// The answer's channel, in the guard, which reads a throttle out of an answer left in it.
    guard: AbandonOnDrop,
    version: i16,
    timeout: Duration,
    /// When the request times out: the request timeout after its submission, or after the
    /// throttle it was submitted under ends.
    deadline: tokio::time::Instant,
    submitted: Instant,
    span: tracing::Span,
    _request: std::marker::PhantomData<fn() -> R>,
}

impl<R: Request> PendingResponse<R> {
    /// Waits (up to the request timeout) for the response and decodes it. When the timeout
    /// passes, the connection is closed: its other requests fail with [`Error::Closed`]. An
    /// answer that reports a quota throttle the client must honour (KIP-219) holds the
    /// connection's later requests until it ends.
    ///
    /// Cancel-safe: dropped, the answer is discarded when it comes.
    pub async fn response(self) -> Result<R::Response> {
        let version = self.version;
        let shared = self.guard.shared.clone();
        let frame = self.frame().await?;
        // The reader routed this frame by its correlation id, so the header holds nothing new.
        let (_header, body) = frame::decode_response::<R>(frame, version).map_err(|source| {
            shared.counters.error();
            Error::Decode { broker: shared.addr.clone(), source }
        })?;
        shared.throttle(&body, version);
        Ok(body)
    }

    async fn frame(mut self) -> Result<Bytes> {
        use tracing::Instrument as _;
        let span = self.span.clone();
        let broker = &self.guard.shared.addr;
        let answer = tokio::time::timeout_at(self.deadline, &mut self.guard.rx).instrument(span.clone()).await;
        let result = match answer {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Closed { broker: broker.clone() }),
            Err(_) => {
                // A broker that leaves a request unanswered past the request timeout is hung
                // or gone, even if its socket is open (a stopped process): the connection is
                // closed, as Kafka's clients do, so that the next request reconnects (and the
                // callers see a connection error and look the leader up again) instead of
                // queueing behind this one. Its other requests fail as closed, retriably.
                self.guard.shared.fail(Error::Closed { broker: broker.clone() });
                Err(Error::Timeout { what: format!("{} request to {broker}", R::API_KEY), after: self.timeout })
            }
        };
        self.guard.armed = result.is_err();
        match &result {
            Ok(_) => self.guard.shared.counters.answered(self.submitted.elapsed()),
            Err(_) => self.guard.shared.counters.error(),
        }
        span.record("outcome", if result.is_ok() { "answered" } else { "failed" });
        result
    }
}

struct AbandonOnDrop {
    shared: Arc<Shared>,
    correlation_id: i32,
    rx: oneshot::Receiver<Result<Bytes>>,
    armed: bool,
    abandoned: Abandoned,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut p = self.shared.lock();
        if p.waiting.remove(&self.correlation_id).is_some() {
            p.abandoned.insert(self.correlation_id, self.abandoned);
            return;
        }
        drop(p);
        // The reader has already handed the answer over (the caller was descheduled right after
        // submitting, or awaited a later request first, or a `select!` took another branch):
        // nobody would read it, but its throttle binds the connection all the same (KIP-219).
        // The reader sends under the lock, so a request no longer waiting has its answer in the
        // channel already, unless the connection failed (and then no answer comes). Discarding
        // it unread let the next requests go out at once, inside the throttle.
        if let Ok(Ok(frame)) = self.rx.try_recv() {
            (self.abandoned.throttle)(&self.shared, frame, self.abandoned.version);
        }
    }
}

/// What the reader needs of a request nobody waits for any more: how to read the throttle its
/// answer reports.
#[derive(Clone, Copy)]
struct Abandoned {
    version: i16,
    throttle: fn(&Shared, Bytes, i16),
}

/// Applies the throttle an answer to an `R` reports, as [`PendingResponse::response`] does.
fn throttle_of<R: Request>(shared: &Shared, frame: Bytes, version: i16) {
    if let Ok((_, body)) = frame::decode_response::<R>(frame, version) {
        shared.throttle(&body, version);
    }
}

/// A TCP connection to `addr`, opened by `deadline`, with Nagle's algorithm off.
async fn tcp(addr: &str, deadline: tokio::time::Instant, after: Duration) -> Result<TcpStream> {
    let stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out("connecting to", addr, after))?
        .map_err(|e| Error::io(addr, e))?;
    stream.set_nodelay(true).map_err(|e| Error::io(addr, e))?;
    Ok(stream)
}

fn timed_out(step: &str, addr: &str, after: Duration) -> Error {
    Error::Timeout { what: format!("{step} {addr}"), after }
}

/// Starts the reader and the writer; `lanes`: the callers' requests and the SASL requests.
fn spawn_loops<R, W>(
    read_half: R,
    write_half: W,
    lanes: [mpsc::UnboundedReceiver<Frame>; 2],
    shared: &Arc<Shared>,
    max_frame: usize,
) -> [JoinHandle<()>; 2]
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    [
        tokio::spawn(read_loop(read_half, shared.clone(), max_frame)),
        tokio::spawn(write_loop(write_half, lanes, shared.clone())),
    ]
}

impl Shared {
    /// The error of a failed socket operation: on a TLS connection a TLS failure (such as the
    /// broker refusing the client's certificate after the handshake) is [`Error::Tls`].
    fn socket_error(&self, e: std::io::Error) -> Error {
        if self.tls {
            tls::error(&self.addr, e, false)
        } else {
            Error::io(&self.addr, e)
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave `Pending` half-updated (every update is
        // a single map operation), so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection failed and fails every waiting request with `error`.
    fn fail(&self, error: Error) {
        self.closed.store(true, Ordering::Release);
        self.frames.close();
        let waiting = {
            let mut p = self.lock();
            if p.failure.is_none() {
                p.failure = Some(error.clone());
            }
            let abandoned = std::mem::take(&mut p.abandoned).len();
            self.counters.in_flight(-((p.waiting.len() + abandoned) as i64));
            std::mem::take(&mut p.waiting)
        };
        for (_, (tx, _)) in waiting {
            let _ = tx.send(Err(error.clone()));
        }
    }

    /// The instant `nanos` after `epoch`.
    fn at(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos().min(u128::from(u64::MAX)) as u64
    }

    fn throttled_until(&self) -> Option<Instant> {
        match self.throttled_until.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.at(n)),
        }
    }

    /// Counts the throttle `response` reports and, where the client must honour it (KIP-219),
    /// holds the connection's requests until it ends.
    fn throttle<M: Throttle>(&self, response: &M, version: i16) {
        let reported = response.throttle_time_ms();
        if reported <= 0 {
            return;
        }
        self.counters.throttled(reported);
        let ms = response.client_throttle_ms(version);
        if ms > 0 {
            let until = self.nanos(Instant::now() + Duration::from_millis(ms as u64));
            self.throttled_until.fetch_max(until, Ordering::AcqRel);
            tracing::debug!(broker = %self.addr, throttle_ms = ms, "broker throttles the connection (quota)");
        }
    }

    /// Returns once the connection is not throttled. Holds no lock and no state: a caller
    /// dropped while waiting leaves nothing behind.
    async fn wait_throttle(&self) {
        while let Some(until) = self.throttled_until() {
            if until <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(until.into()).await;
        }
    }
}

/// What a plaintext connection's first bytes look like when the broker answers with TLS: a
/// TLS record (an alert, or a handshake) of version 3.x. As a Kafka frame they would announce a
/// response of over 350 MB, so a real first response (ApiVersions) never starts this way.
fn looks_like_tls(buf: &[u8]) -> bool {
    matches!(buf, [0x15 | 0x16, 0x03, ..])
}

async fn read_loop<R: AsyncRead + Unpin>(mut socket: R, shared: Arc<Shared>, max_frame: usize) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let pool = &shared.frames;
    let mut first = true;
    // Frames answered so far: a SASL listener answers a client that does not authenticate its
    // ApiVersions, then closes the connection at its next request.
    let mut answered = 0u64;
    let error = 'frames: loop {
        if first && !shared.tls && buf.len() >= 2 {
            if looks_like_tls(&buf) {
                break Error::Tls {
                    broker: shared.addr.clone(),
                    reason: "the broker answered with TLS: this is a TLS listener, set security.protocol to SSL or \
                             SASL_SSL"
                        .into(),
                };
            }
            first = false;
        }
        let large = loop {
            if let Some(size) = large_frame_begun(&buf, max_frame) {
                break Some(size);
            }
            match frame::split_frame(&mut buf, max_frame) {
                Ok(Some(frame)) => {
                    answered += 1;
                    pool.shed();
                    if let Err(e) = dispatch(&shared, frame) {
                        break 'frames e;
                    }
                }
                Ok(None) => break None,
                Err(source) => break 'frames Error::Decode { broker: shared.addr.clone(), source },
            }
        };
        if let Some(size) = large {
            // The rest of it is read into a pooled buffer, after the bytes already here.
            let mut frame = pool.take(size);
            frame.extend_from_slice(&buf[4..]);
            buf.clear();
            while frame.len() < size {
                let left = size - frame.len();
                if let Err(e) = after_read(&shared, socket.read_buf(&mut (&mut frame).limit(left)).await, answered) {
                    break 'frames e;
                }
            }
            answered += 1;
            if let Err(e) = dispatch(&shared, FramePool::frame(pool, frame)) {
                break 'frames e;
            }
            continue;
        }
        make_room(&mut buf);
        if let Err(e) = after_read(&shared, socket.read_buf(&mut buf).await, answered) {
            break e;
        }
    };
    shared.fail(error);
}

/// The size of the frame begun at the front of `buf` if it is large enough for a pooled buffer
/// ([`frame_pool::POOLED_FRAME_MIN`]) and not all here yet; sizes [`frame::split_frame`]
/// refuses are left to it.
fn large_frame_begun(buf: &[u8], max_frame: usize) -> Option<usize> {
    let size = usize::try_from(i32::from_be_bytes(buf.get(..4)?.try_into().ok()?)).ok()?;
    (frame_pool::POOLED_FRAME_MIN..=max_frame).contains(&size).then_some(size).filter(|size| buf.len() < 4 + size)
}

/// Accounts for one read of the socket; `Err` ends the connection with that error.
fn after_read(shared: &Shared, read: std::io::Result<usize>, answered: u64) -> Result<()> {
    match read {
        Ok(0) if answered == 1 && !shared.sasl && !shared.lock().waiting.is_empty() => {
            let hint = "the broker closed the connection after ApiVersions without answering the next request: is \
                        this a SASL listener? Check the port and security.protocol (SASL_PLAINTEXT or SASL_SSL)";
            Err(Error::io(&shared.addr, std::io::Error::new(std::io::ErrorKind::ConnectionAborted, hint)))
        }
        Ok(0) => Err(Error::Closed { broker: shared.addr.clone() }),
        Ok(n) => {
            shared.counters.received(n);
            shared.last_received.store(shared.nanos(Instant::now()), Ordering::Release);
            Ok(())
        }
        Err(e) => Err(shared.socket_error(e)),
    }
}

/// Makes room in the read buffer for the next read, after [`frame::split_frame`] has taken the
/// complete frames out. A frame whose size is known already has room for all of it (the split
/// reserved it), however little is left: reserving more would move the bytes received so far
/// to a larger allocation, which near the end of a Fetch answer of megabytes is a copy of
/// nearly all of it (and fresh pages to fault in).
fn make_room(buf: &mut BytesMut) {
    if buf.len() < 4 && buf.capacity() - buf.len() < 4096 {
        buf.reserve(64 * 1024);
    }
}

/// Hands a response frame to the request waiting for its correlation id.
fn dispatch(shared: &Shared, frame: Bytes) -> Result<()> {
    let id =
        frame::peek_correlation_id(&frame).map_err(|source| Error::Decode { broker: shared.addr.clone(), source })?;
    let mut p = shared.lock();
    match p.waiting.remove(&id) {
        Some((tx, _)) => {
            shared.counters.in_flight(-1);
            // Sent under the lock: a handle dropped unread that finds its request no longer
            // waiting then finds the answer in its channel, and reads its throttle.
            let _ = tx.send(Ok(frame));
            drop(p);
            Ok(())
        }
        None => match p.abandoned.remove(&id) {
            Some(abandoned) => {
                shared.counters.in_flight(-1);
                drop(p);
                (abandoned.throttle)(shared, frame, abandoned.version);
                Ok(())
            }
            // The connection has failed (a request timed out) and forgot what it had abandoned.
            None if p.failure.is_some() => Ok(()),
            None => Err(Error::Protocol {
                broker: shared.addr.clone(),
                reason: format!("response with correlation id {id}, which no request is waiting for"),
            }),
        },
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    socket: W,
    [mut rx, mut auth]: [mpsc::UnboundedReceiver<Frame>; 2],
    shared: Arc<Shared>,
) {
    let mut socket = BufWriter::with_capacity(64 * 1024, socket);
    let mut reauthenticating = shared.reauthenticating.subscribe();
    loop {
        let held = *reauthenticating.borrow_and_update();
        let frame = tokio::select! {
            biased;
            Some(frame) = auth.recv() => {
                // A SASL request goes alone and at once: nothing else may follow it until the
                // exchange ends, and the broker answers nothing else meanwhile.
                shared.counters.sent(frame.len());
                if let Err(e) = async { write_frame(&mut socket, &frame).await?; socket.flush().await }.await {
                    shared.fail(shared.socket_error(e));
                    return;
                }
                continue;
            }
            // Re-evaluate whether the callers' requests are held.
            _ = reauthenticating.changed() => continue,
            frame = rx.recv(), if !held => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        // Frames queued while the broker throttles the connection wait for the end of it.
        shared.wait_throttle().await;
        shared.counters.sent(frame.len());
        let mut result = write_frame(&mut socket, &frame).await;
        // Coalesce whatever else is already queued into the same flush, unless a
        // re-authentication has begun (its requests must follow nothing of the callers').
        while result.is_ok() && !*reauthenticating.borrow() {
            match rx.try_recv() {
                Ok(frame) => {
                    shared.counters.sent(frame.len());
                    result = write_frame(&mut socket, &frame).await;
                }
                Err(_) => break,
            }
        }
        if let Err(e) = result.and(socket.flush().await) {
            shared.fail(shared.socket_error(e));
            return;
        }
    }
    let _ = socket.shutdown().await;
}

/// Writes a frame: a frame in parts with vectored writes (one system call for a Produce
/// request's header and batches, however many), whose large batches go from where they are
/// straight to the socket; small frames gather in the writer's buffer.
async fn write_frame<W: AsyncWrite + Unpin>(socket: &mut BufWriter<W>, frame: &Frame) -> std::io::Result<()> {
    let parts = match frame {
        Frame::Whole(bytes) => return socket.write_all(bytes).await,
        Frame::Parts(parts) => parts,
    };
    let mut slices: Vec<std::io::IoSlice<'_>> = parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        let written = socket.write_vectored(left).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut left, written);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found in a profile of the consumer: every Fetch answer of megabytes was copied once as it
    /// arrived, by a reserve for the next read when less than 4 KiB of its room was left.
    #[test]
    fn regression_the_rest_of_a_frame_is_read_where_its_first_bytes_are() {
        let size = 1 << 20;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.put_u32(size as u32);
        buf.put_bytes(0, 60 * 1024);
        assert!(frame::split_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().is_none());
        let (start, room) = (buf.as_ptr(), buf.capacity());
        assert!(room >= 4 + size, "the split reserved the whole frame");
        for left in [100 * 1024, 4 * 1024, 100, 1] {
            let len = buf.len();
            buf.put_bytes(1, 4 + size - left - len);
            make_room(&mut buf);
            assert_eq!((buf.as_ptr(), buf.capacity()), (start, room), "{left} B left: the frame stays where it is");
        }
        buf.put_u8(1);
        let frame = frame::split_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().expect("the whole frame");
        assert_eq!(frame.len(), size);
        assert_eq!(frame.as_ptr(), start.wrapping_add(4));

        // The next frame starts in a buffer of its own, with room for a read.
        make_room(&mut buf);
        assert!(buf.capacity() - buf.len() >= 4096);
    }

    /// Frames small and large (read into pooled buffers), back to back, arriving in pieces of
    /// every size (sizes and headers cut anywhere), each reach their request whole.
    #[tokio::test]
    async fn frames_of_every_size_arrive_whole_however_the_bytes_are_cut() {
        let sizes =
            [4, 300 * 1024, 17, frame_pool::POOLED_FRAME_MIN, 1 << 20, 5, 2 << 20, frame_pool::POOLED_FRAME_MIN - 1];
        let body = |id: i32, size: usize| -> Vec<u8> {
            let mut b = id.to_be_bytes().to_vec();
            b.extend((4..size).map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(id as u32) as u8));
            b
        };
        for (round, pipe) in [64 * 1024, 7919, 3].into_iter().enumerate() {
            let shared = Arc::new(Shared {
                addr: "test:9092".into(),
                tls: false,
                sasl: false,
                next_correlation_id: AtomicI32::new(0),
                reauthenticating: watch::Sender::new(false),
                closed: AtomicBool::new(false),
                pending: Mutex::new(Pending::default()),
                counters: Arc::default(),
                epoch: Instant::now(),
                throttled_until: AtomicU64::new(0),
                last_received: AtomicU64::new(0),
                frames: Arc::default(),
            });
            let mut answers = Vec::new();
            for id in 0..sizes.len() as i32 {
                let (tx, rx) = oneshot::channel();
                shared.lock().waiting.insert(id, (tx, Instant::now()));
                answers.push(rx);
            }
            let (mut broker, client) = tokio::io::duplex(pipe);
            let reader = tokio::spawn(read_loop(client, shared.clone(), DEFAULT_MAX_FRAME));
            let mut wire = Vec::new();
            for (id, &size) in sizes.iter().enumerate() {
                wire.extend((size as u32).to_be_bytes());
                wire.extend(body(id as i32, size));
            }
            // Writes of uneven sizes, drawn from the round.
            let mut seed = round as u32 + 1;
            let writer = tokio::spawn(async move {
                let mut at = 0;
                while at < wire.len() {
                    seed = seed.wrapping_mul(1103515245).wrapping_add(12345);
                    let n = (1 + (seed >> 8) as usize % 100_000).min(wire.len() - at);
                    broker.write_all(&wire[at..at + n]).await.unwrap();
                    at += n;
                }
                broker
            });
            for (id, answer) in answers.into_iter().enumerate() {
                let frame = tokio::time::timeout(Duration::from_secs(10), answer)
                    .await
                    .expect("the frame arrives")
                    .unwrap()
                    .unwrap();
                assert!(frame[..] == body(id as i32, sizes[id])[..], "pipe {pipe}: frame {id} of {} B", sizes[id]);
            }
            let _broker = writer.await.unwrap();
            reader.abort();
        }
    }
}
