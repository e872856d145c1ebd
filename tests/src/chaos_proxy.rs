//! A chaos proxy between the client and real brokers: one TCP proxy on loopback per broker
//! address, and a [`Dialer`] that routes every connection the client opens (bootstrap and
//! advertised addresses alike) through the proxy of that address. Metadata and brokers are
//! real; the proxy only does to the bytes what a bad network does, never reordering them:
//!
//! - cuts each connection at a random moment ([`Faults::cut_after`]) or after a random number
//!   of bytes of one direction ([`Faults::cut_after_bytes`]: mid-request or mid-response);
//! - delays every chunk ([`Faults::delay`]), throttles each direction to a bandwidth shared by
//!   all connections ([`Faults::throttle_up`], [`Faults::throttle_down`]);
//! - stalls a direction ([`ChaosProxy::stall`]), black-holes a broker
//!   ([`ChaosProxy::black_hole`]: its connections, old and new, are held open and nothing is
//!   forwarded), refuses connections to a broker ([`ChaosProxy::refuse`]), cuts a broker's open
//!   connections on demand ([`ChaosProxy::cut`]).
//!
//! Each connection's fate is drawn from one seeded generator, in the order connections are
//! accepted; [`ChaosProxy::counters`] tells what the proxy did.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_wire::client::{BoxStream, DialFuture, Dialer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Bytes read (and forwarded) at a time: small enough that throttling is smooth and a cut
/// after N bytes lands inside a frame.
const CHUNK: usize = 16 * 1024;
/// Chunks read ahead of the writer of one direction (what a delay keeps in flight).
const QUEUE: usize = 16;

/// A direction of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Client to broker: requests.
    Up,
    /// Broker to client: responses.
    Down,
}

/// What the proxy does to connections it accepts from now on (delay and throttling also apply
/// to connections already open, from their next chunk).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Cut each connection at a random moment in this range after it is accepted.
    pub cut_after: Option<(Duration, Duration)>,
    /// Also, with probability `.0`, cut a connection (if not cut before) once a random number of bytes in
    /// `.1..=.2` has gone through one direction (picked at random): the last chunk is forwarded
    /// only in part, so the cut lands inside a request or a response.
    pub cut_after_bytes: Option<(f64, usize, usize)>,
    /// Added to every chunk's delivery (latency; chunks are still delivered in order).
    pub delay: Duration,
    /// Bytes per second client → broker, shared by all connections; `None`: unlimited.
    pub throttle_up: Option<u64>,
    /// Bytes per second broker → client, shared by all connections; `None`: unlimited.
    pub throttle_down: Option<u64>,
}

/// What the proxy did, from [`ChaosProxy::counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChaosCounters {
    /// Connections accepted (black-holed ones included).
    pub connections: u64,
    /// Connections cut at a random moment.
    pub cuts_timed: u64,
    /// Connections cut after some bytes of a request (client → broker).
    pub cuts_mid_request: u64,
    /// Connections cut after some bytes of a response (broker → client).
    pub cuts_mid_response: u64,
    /// Connections cut by [`ChaosProxy::cut`].
    pub cuts_ordered: u64,
    /// Connections accepted while their broker was black-holed (held, never forwarded).
    pub black_holed: u64,
    /// Dials refused.
    pub refused: u64,
    /// Bytes forwarded client → broker.
    pub bytes_up: u64,
    /// Bytes forwarded broker → client.
    pub bytes_down: u64,
}

impl ChaosCounters {
    /// All cuts.
    pub fn cuts(&self) -> u64 {
        self.cuts_timed + self.cuts_mid_request + self.cuts_mid_response + self.cuts_ordered
    }
}

impl fmt::Display for ChaosCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections, {} cuts ({} timed, {} mid-request, {} mid-response, {} ordered), {} black-holed, \
             {} refused, {} B up, {} B down",
            self.connections,
            self.cuts(),
            self.cuts_timed,
            self.cuts_mid_request,
            self.cuts_mid_response,
            self.cuts_ordered,
            self.black_holed,
            self.refused,
            self.bytes_up,
            self.bytes_down
        )
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    cuts_timed: AtomicU64,
    cuts_mid_request: AtomicU64,
    cuts_mid_response: AtomicU64,
    cuts_ordered: AtomicU64,
    black_holed: AtomicU64,
    refused: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// The switches that act on open connections.
#[derive(Clone, Debug, Default)]
struct Control {
    black_holed: BTreeSet<String>,
    stalled: BTreeSet<(Direction, String)>,
    /// Per broker address, how many times [`ChaosProxy::cut`] was called: a connection whose
    /// count changes is cut.
    cut_orders: HashMap<String, u64>,
}

impl Control {
    fn holds(&self, addr: &str, dir: Direction) -> bool {
        self.black_holed.contains(addr) || self.stalled.contains(&(dir, addr.to_string()))
    }

    fn cut_order(&self, addr: &str) -> u64 {
        self.cut_orders.get(addr).copied().unwrap_or(0)
    }
}

/// SplitMix64: small, seedable, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi.saturating_sub(lo) + 1)
    }
}

/// When a connection's reserved bandwidth lets its next chunk go.
#[derive(Default)]
struct Bucket {
    next_free: Option<Instant>,
}

impl Bucket {
    /// Reserves `bytes` at `rate` bytes/s; returns when they may be sent.
    fn reserve(&mut self, bytes: usize, rate: u64) -> Instant {
        let now = Instant::now();
        let at = self.next_free.map_or(now, |t| t.max(now));
        self.next_free = Some(at + Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64));
        at
    }
}

struct Inner {
    faults: Mutex<Faults>,
    rng: Mutex<Rng>,
    control: watch::Sender<Control>,
    refused: Mutex<BTreeSet<String>>,
    /// Upstream `host:port` → the local address of its proxy.
    listeners: Mutex<HashMap<String, SocketAddr>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    buckets: [Mutex<Bucket>; 2],
    counters: Counters,
}

/// The proxy: cloneable handle; dropping the last one stops its listeners and connections.
#[derive(Clone)]
pub struct ChaosProxy {
    inner: Arc<Inner>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for t in self.0.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl fmt::Debug for ChaosProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosProxy").field("counters", &self.counters()).finish()
    }
}

impl ChaosProxy {
    /// A proxy with no faults, drawing each connection's fate from `seed`. Call it within a
    /// tokio runtime (listeners start on the first dial of each address).
    pub fn new(seed: u64) -> Self {
        let inner = Arc::new(Inner {
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(Rng(seed)),
            control: watch::Sender::new(Control::default()),
            refused: Mutex::new(BTreeSet::new()),
            listeners: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            buckets: [Mutex::new(Bucket::default()), Mutex::new(Bucket::default())],
            counters: Counters::default(),
        });
        Self { _stop: Arc::new(StopOnDrop(inner.clone())), inner }
    }

    /// The dialer to put in a configuration's `security.dialer`.
    pub fn dialer(&self) -> Arc<dyn Dialer> {
        Arc::new(ChaosDialer { proxy: self.clone() })
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) {
        *self.inner.faults.lock().unwrap() = faults;
    }

    /// The faults now.
    pub fn faults(&self) -> Faults {
        self.inner.faults.lock().unwrap().clone()
    }

    /// Black-holes the broker at `addr` (as advertised) or lets it through again: while on, its
    /// connections (open and new) forward nothing and are never closed by the proxy; when it
    /// ends, new connections accepted meanwhile are closed and open ones flow again.
    pub fn black_hole(&self, addr: &str, on: bool) {
        self.inner.control.send_modify(|c| {
            if on {
                c.black_holed.insert(addr.to_string());
            } else {
                c.black_holed.remove(addr);
            }
        });
    }

    /// Stops (or resumes) forwarding direction `dir` of the broker at `addr`'s connections.
    pub fn stall(&self, addr: &str, dir: Direction, on: bool) {
        self.inner.control.send_modify(|c| {
            if on {
                c.stalled.insert((dir, addr.to_string()));
            } else {
                c.stalled.remove(&(dir, addr.to_string()));
            }
        });
    }

    /// Cuts every connection to the broker at `addr` that is open now (black-holed ones
    /// included); new ones are not affected.
    pub fn cut(&self, addr: &str) {
        self.inner.control.send_modify(|c| *c.cut_orders.entry(addr.to_string()).or_insert(0) += 1);
    }

    /// Refuses (or accepts again) new connections to the broker at `addr`: the dialer fails
    /// them with `ConnectionRefused` (counted in [`ChaosCounters::refused`]).
    pub fn refuse(&self, addr: &str, on: bool) {
        let mut r = self.inner.refused.lock().unwrap();
        if on {
            r.insert(addr.to_string());
        } else {
            r.remove(addr);
        }
    }

    /// The broker addresses dialed so far.
    pub fn upstreams(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.listeners.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    /// What the proxy has done so far.
    pub fn counters(&self) -> ChaosCounters {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ChaosCounters {
            connections: l(&c.connections),
            cuts_timed: l(&c.cuts_timed),
            cuts_mid_request: l(&c.cuts_mid_request),
            cuts_mid_response: l(&c.cuts_mid_response),
            cuts_ordered: l(&c.cuts_ordered),
            black_holed: l(&c.black_holed),
            refused: l(&c.refused),
            bytes_up: l(&c.bytes_up),
            bytes_down: l(&c.bytes_down),
        }
    }

    /// The local address of `upstream`'s proxy, started on first use.
    async fn listener_for(&self, upstream: &str) -> io::Result<SocketAddr> {
        if let Some(a) = self.inner.listeners.lock().unwrap().get(upstream) {
            return Ok(*a);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let mut listeners = self.inner.listeners.lock().unwrap();
        if let Some(a) = listeners.get(upstream) {
            // Another dial started it meanwhile: use that one (this listener is dropped).
            return Ok(*a);
        }
        listeners.insert(upstream.to_string(), local);
        let inner = self.inner.clone();
        let upstream = upstream.to_string();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let conn = tokio::spawn(serve(inner.clone(), client, upstream.clone()));
                let mut tasks = inner.tasks.lock().unwrap();
                tasks.retain(|t| !t.is_finished());
                tasks.push(conn);
            }
        });
        self.inner.tasks.lock().unwrap().push(task);
        Ok(local)
    }
}

/// How a connection is to be cut: at a moment, after some bytes of one direction, whichever
/// comes first.
#[derive(Clone, Copy, Debug, Default)]
struct Plan {
    at: Option<Duration>,
    after_bytes: Option<(Direction, usize)>,
}

fn plan(inner: &Inner) -> Plan {
    let faults = inner.faults.lock().unwrap().clone();
    let mut rng = inner.rng.lock().unwrap();
    let mut plan = Plan::default();
    if let Some((lo, hi)) = faults.cut_after {
        plan.at = Some(Duration::from_micros(rng.between(lo.as_micros() as u64, hi.as_micros() as u64)));
    }
    if let Some((p, lo, hi)) = faults.cut_after_bytes {
        if rng.unit() < p {
            let dir = if rng.next() % 2 == 0 { Direction::Up } else { Direction::Down };
            plan.after_bytes = Some((dir, rng.between(lo as u64, hi as u64) as usize));
        }
    }
    plan
}

async fn serve(inner: Arc<Inner>, client: TcpStream, upstream: String) {
    inner.counters.connections.fetch_add(1, Ordering::Relaxed);
    let mut control = inner.control.subscribe();
    let mut orders = inner.control.subscribe();
    let order = orders.borrow().cut_order(&upstream);
    // Resolves when `ChaosProxy::cut` orders this connection cut.
    let ordered = async {
        let _ = orders.wait_for(|c| c.cut_order(&upstream) != order).await;
        inner.counters.cuts_ordered.fetch_add(1, Ordering::Relaxed);
    };
    if control.borrow().black_holed.contains(&upstream) {
        inner.counters.black_holed.fetch_add(1, Ordering::Relaxed);
        // Held open, nothing read, until the black hole ends or a cut is ordered.
        tokio::select! {
            _ = control.wait_for(|c| !c.black_holed.contains(&upstream)) => {}
            () = ordered => {}
        }
        drop(client);
        return;
    }
    let plan = plan(&inner);
    let Ok(server) = TcpStream::connect(&upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let cut = Arc::new(Notify::new());
    let limit = |d| match plan.after_bytes {
        Some((dir, n)) if dir == d => Some(n),
        _ => None,
    };
    let up = pump(inner.clone(), cr, sw, Direction::Up, upstream.clone(), limit(Direction::Up), cut.clone());
    let down = pump(inner.clone(), sr, cw, Direction::Down, upstream.clone(), limit(Direction::Down), cut.clone());
    let timer = async {
        match plan.at {
            Some(d) => {
                tokio::time::sleep(d).await;
                // A black-holed connection is never closed by the proxy: the cut waits.
                let _ = control.wait_for(|c| !c.black_holed.contains(&upstream)).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = timer => {
            inner.counters.cuts_timed.fetch_add(1, Ordering::Relaxed);
        }
        () = ordered => {}
        () = cut.notified() => {
            match plan.after_bytes {
                Some((Direction::Up, _)) => inner.counters.cuts_mid_request.fetch_add(1, Ordering::Relaxed),
                _ => inner.counters.cuts_mid_response.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
    // Dropping the halves closes both sockets.
}

/// Forwards one direction: a reader stamps each chunk with its delivery time, a writer delivers
/// it then, once the direction is not held, within the shared bandwidth, and stops (notifying
/// `cut`) after `limit` bytes.
async fn pump(
    inner: Arc<Inner>,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    dir: Direction,
    upstream: String,
    limit: Option<usize>,
    cut: Arc<Notify>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let reader = {
        let inner = inner.clone();
        async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let delay = inner.faults.lock().unwrap().delay;
                if tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        }
    };
    let writer = async move {
        let mut control = inner.control.subscribe();
        let mut sent = 0usize;
        while let Some((at, mut chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            let _ = control.wait_for(|c| !c.holds(&upstream, dir)).await;
            let rate = match dir {
                Direction::Up => inner.faults.lock().unwrap().throttle_up,
                Direction::Down => inner.faults.lock().unwrap().throttle_down,
            };
            if let Some(rate) = rate {
                let at = inner.buckets[dir as usize].lock().unwrap().reserve(chunk.len(), rate);
                tokio::time::sleep_until(at).await;
            }
            let cut_now = limit.is_some_and(|l| sent + chunk.len() >= l);
            if let Some(l) = limit {
                chunk.truncate(l.saturating_sub(sent));
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            sent += chunk.len();
            let counter = match dir {
                Direction::Up => &inner.counters.bytes_up,
                Direction::Down => &inner.counters.bytes_down,
            };
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if cut_now {
                cut.notify_one();
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Routes each dial to the proxy of its address.
struct ChaosDialer {
    proxy: ChaosProxy,
}

impl fmt::Debug for ChaosDialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChaosDialer")
    }
}

impl Dialer for ChaosDialer {
    fn dial<'a>(&'a self, addr: &'a str) -> DialFuture<'a> {
        Box::pin(async move {
            if self.proxy.inner.refused.lock().unwrap().contains(addr) {
                self.proxy.inner.counters.refused.fetch_add(1, Ordering::Relaxed);
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("chaos proxy refuses {addr}")));
            }
            let local = self.proxy.listener_for(addr).await?;
            let stream = TcpStream::connect(local).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}
