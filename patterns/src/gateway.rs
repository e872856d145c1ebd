//! Pattern 2, event-driven end to end: a websocket gateway that pushes the notifications services
//! publish to a Kafka topic to the browsers that wait for them.
//!
//! A browser opens `GET /ws/{channel}` (a websocket) with a channel id it chose or was given (the
//! id of a job it started, say). Services publish notifications for that channel with a
//! [`Publisher`]: records keyed by the channel id, so that one channel's notifications share a
//! partition and keep their order. Every gateway instance reads every partition of the topic
//! (no consumer group: a browser may be connected to any instance) and pushes each notification
//! to the sockets open on its channel, as a text frame `{"id":"<partition>-<offset>","data":…}`.
//! It reads read_committed: a notification written in a Kafka transaction (with the state change
//! it reports, say) reaches browsers only if that transaction commits.
//!
//! **Resuming.** A browser that reconnects passes the id of the last notification it saw,
//! `GET /ws/{channel}?after=<id>`, and gets everything after it, then the live ones, with none
//! missed and none twice: from the gateway's recent history when it reaches back that far
//! (bounded by [`GatewayConfig::history_bytes`]), otherwise read again from Kafka first.
//!
//! **Slow clients.** Each socket has a queue. A client that has had more than
//! [`GatewayConfig::client_buffer`] notifications queued from earlier polls, at every poll (at
//! least one a second) for [`GatewayConfig::slow_client_grace`], does not keep up and is disconnected (close code 1013,
//! "try again later"); nobody else waits for it, and it can resume where it stopped. A burst
//! does not count against a client that drains it within the grace, however many polls bring
//! it (polls with records come back to back, faster than any socket is written to), so a queue
//! holds at most `client_buffer` plus what arrives in the grace and one poll.
//!
//! ```no_run
//! # async fn demo() -> kafka_wire::Result<()> {
//! use patterns::gateway::{Gateway, GatewayConfig, Publisher};
//! let gateway = Gateway::start(GatewayConfig::new("127.0.0.1:9092", "job-status")).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.expect("bind");
//! tokio::spawn(async move { axum::serve(listener, gateway.router()).await });
//!
//! let publisher = Publisher::new("127.0.0.1:9092", "job-status").await?;
//! publisher.publish("import-42", &serde_json::json!({"done": 10, "total": 100})).await?;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kafka_wire::client::{Admin, IsolationLevel, OffsetReset};
use kafka_wire::{
    Client, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, Error, Producer, ProducerConfig, ProducerRecord,
    Result, TopicPartition,
};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

/// Where a notification is in the topic: its partition and offset. Written `<partition>-<offset>`
/// in frames and in `?after=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.partition, self.offset)
    }
}

impl std::str::FromStr for EventId {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("an event id is <partition>-<offset>, not {s:?}");
        let (p, o) = s.split_once('-').ok_or_else(bad)?;
        let partition = p.parse().map_err(|_| bad())?;
        let offset = o.parse().map_err(|_| bad())?;
        if partition < 0 || offset < 0 {
            return Err(bad());
        }
        Ok(Self { partition, offset })
    }
}

/// How a [`Gateway`] runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// The notifications topic.
    pub topic: String,
    /// Notifications a socket may still have queued from earlier polls when the next poll's
    /// arrive; a socket over it for `slow_client_grace` is given up (default 256).
    pub client_buffer: usize,
    /// How long a socket may stay over `client_buffer` (judged as each poll's notifications
    /// arrive) before it is dropped (default 2 s).
    pub slow_client_grace: Duration,
    /// Bytes of recent notifications kept to resume from without reading Kafka again (default
    /// 8 MiB). Older ones are read again from Kafka on resume.
    pub history_bytes: usize,
    /// The longest a resume may take to read its notifications again from Kafka (default 30 s);
    /// past it the socket is closed (1011) and the browser may try again.
    pub replay_timeout: Duration,
    /// The longest one frame may take to reach a client before it is dropped (default 10 s).
    pub send_timeout: Duration,
}

impl GatewayConfig {
    /// The defaults, for `topic` on the cluster at `bootstrap`.
    pub fn new(bootstrap: &str, topic: &str) -> Self {
        Self {
            bootstrap: bootstrap.to_owned(),
            topic: topic.to_owned(),
            client_buffer: 256,
            slow_client_grace: Duration::from_secs(2),
            history_bytes: 8 << 20,
            replay_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(10),
        }
    }

    /// Sets [`client_buffer`](Self::client_buffer).
    pub fn client_buffer(mut self, notifications: usize) -> Self {
        self.client_buffer = notifications.max(1);
        self
    }

    /// Sets [`slow_client_grace`](Self::slow_client_grace).
    pub fn slow_client_grace(mut self, grace: Duration) -> Self {
        self.slow_client_grace = grace;
        self
    }

    /// Sets [`history_bytes`](Self::history_bytes).
    pub fn history_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes = bytes;
        self
    }
}

/// Publishes notifications to a channel: records keyed by the channel id, with the JSON of the
/// notification as their value (idempotent producer, `acks=all`).
#[derive(Clone)]
pub struct Publisher {
    producer: Producer,
    topic: String,
}

impl Publisher {
    /// A publisher of its own to `topic` on the cluster at `bootstrap`.
    pub async fn new(bootstrap: &str, topic: &str) -> Result<Self> {
        Ok(Self::with_producer(Producer::new(ProducerConfig::new(bootstrap)).await?, topic))
    }

    /// A publisher that sends with `producer`.
    pub fn with_producer(producer: Producer, topic: &str) -> Self {
        Self { producer, topic: topic.to_owned() }
    }

    /// Publishes `notification` to `channel` and returns its id once the broker has it.
    /// Cancel-safe in that dropping the future never leaves a half-written record, but a
    /// notification already handed to the producer may still be delivered.
    pub async fn publish(&self, channel: &str, notification: &impl serde::Serialize) -> Result<EventId> {
        let value = serde_json::to_vec(notification).map_err(|e| Error::Misuse {
            operation: format!("publishing to channel {channel:?}"),
            reason: format!("the notification does not serialize to JSON: {e}"),
        })?;
        let record = ProducerRecord::new(self.topic.as_str(), value).key(channel.as_bytes().to_vec());
        let delivered = self.producer.send(record).await?.await?;
        Ok(EventId { partition: delivered.topic_partition.partition, offset: delivered.offset })
    }

    /// Waits for every notification handed over to be delivered, then closes the producer.
    pub async fn close(&self) -> Result<()> {
        self.producer.close().await
    }
}

/// One notification as it is pushed: where it is and its frame's text.
#[derive(Clone)]
struct Notification {
    id: EventId,
    frame: Utf8Bytes,
}

impl Notification {
    fn of(record: &ConsumerRecord) -> Self {
        let id = EventId { partition: record.partition, offset: record.offset };
        Self { id, frame: frame(id, record.value.as_deref().unwrap_or(b"null")) }
    }
}

/// `{"id":"p-o","data":<value>}`: the value as it is when it is JSON, as a JSON string otherwise.
fn frame(id: EventId, value: &[u8]) -> Utf8Bytes {
    let data = match serde_json::from_slice::<serde::de::IgnoredAny>(value) {
        Ok(_) => String::from_utf8_lossy(value).into_owned(),
        Err(_) => serde_json::Value::String(String::from_utf8_lossy(value).into_owned()).to_string(),
    };
    format!("{{\"id\":\"{id}\",\"data\":{data}}}").into()
}

/// A socket waiting for a channel's notifications.
struct Subscriber {
    id: u64,
    queue: Outbox,
    /// Notifications at or before it were sent by the resume (or already seen), per partition.
    after: Option<EventId>,
    /// Since when its backlog has been over the limit at every poll.
    over_since: Option<Instant>,
}

#[derive(Default)]
struct Channel {
    subscribers: Vec<Subscriber>,
    /// This channel's notifications still in the history, in arrival order.
    recent: VecDeque<Notification>,
}

/// Channels, their sockets, and the recent history, behind one lock the consuming task and the
/// sockets take briefly (never across an await).
struct Hub {
    channels: HashMap<Arc<str>, Channel>,
    /// Every notification in the history, oldest first: (channel, size).
    history: VecDeque<(Arc<str>, usize)>,
    history_bytes: usize,
    /// Per partition, every notification after this offset is in the history (the offset the
    /// gateway started at, less one, until something is evicted).
    floor: HashMap<i32, i64>,
    next_subscriber: u64,
}

/// The hub's end of a socket's queue: unbounded in itself, and bounded by the hub, which drops
/// the subscriber at the start of a poll if its backlog is over the limit.
struct Outbox {
    tx: mpsc::UnboundedSender<Notification>,
    backlog: Arc<AtomicUsize>,
}

/// The socket's end of its queue.
struct Inbox {
    rx: mpsc::UnboundedReceiver<Notification>,
    backlog: Arc<AtomicUsize>,
}

fn socket_queue() -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(AtomicUsize::new(0));
    (Outbox { tx, backlog: backlog.clone() }, Inbox { rx, backlog })
}

impl Outbox {
    /// Queues `n`; false if the socket is gone.
    fn push(&self, n: Notification) -> bool {
        // Counted first, so that the socket never takes one that is not counted yet.
        self.backlog.fetch_add(1, Ordering::Relaxed);
        self.tx.send(n).is_ok()
    }

    fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }
}

impl Inbox {
    /// The next notification; `None` once the hub dropped the socket and its queue is empty.
    /// Cancel-safe, as `mpsc::UnboundedReceiver::recv`.
    async fn recv(&mut self) -> Option<Notification> {
        let n = self.rx.recv().await?;
        self.backlog.fetch_sub(1, Ordering::Relaxed);
        Some(n)
    }
}

impl Hub {
    /// A poll's notifications are about to be delivered at `now`: drops the sockets that have
    /// held more than `limit` notifications from before at every poll for `grace` (they do not
    /// keep up).
    fn start_poll(&mut self, limit: usize, grace: Duration, now: Instant) {
        for ch in self.channels.values_mut() {
            ch.subscribers.retain_mut(|s| {
                if s.queue.backlog() <= limit {
                    s.over_since = None;
                    return true;
                }
                now.duration_since(*s.over_since.get_or_insert(now)) < grace
            });
        }
    }

    fn deliver(&mut self, channel: Arc<str>, n: Notification, budget: usize) {
        let size = n.frame.len();
        let ch = self.channels.entry(channel.clone()).or_default();
        ch.subscribers.retain(|s| {
            if s.after.is_some_and(|a| a.partition == n.id.partition && n.id.offset <= a.offset) {
                return true;
            }
            s.queue.push(n.clone())
        });
        ch.recent.push_back(n);
        self.history.push_back((channel, size));
        self.history_bytes += size;
        while self.history_bytes > budget {
            let Some((channel, size)) = self.history.pop_front() else { break };
            self.history_bytes -= size;
            let Some(ch) = self.channels.get_mut(&channel) else { continue };
            if let Some(old) = ch.recent.pop_front() {
                let floor = self.floor.entry(old.id.partition).or_insert(-1);
                *floor = (*floor).max(old.id.offset);
            }
            if ch.recent.is_empty() && ch.subscribers.is_empty() {
                self.channels.remove(&channel);
            }
        }
    }
}

struct Inner {
    config: GatewayConfig,
    client: Client,
    consumer: Consumer,
    hub: Mutex<Hub>,
    shutdown: watch::Sender<bool>,
}

/// The gateway: reads the notifications topic and pushes each notification to its channel's
/// sockets. Serve [`Gateway::router`] with axum. Cloning gives another handle to the same one.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl Gateway {
    /// Connects, assigns every partition of the topic from its end, and starts reading.
    pub async fn start(config: GatewayConfig) -> Result<Self> {
        let client = Client::connect(ClientConfig::new(&config.bootstrap)).await?;
        let partitions = partitions_of(&client, &config.topic).await?;
        let consumer = Consumer::with_client(
            client.clone(),
            ConsumerConfig::new(&config.bootstrap)
                .auto_offset_reset(OffsetReset::Latest)
                .isolation_level(IsolationLevel::ReadCommitted),
        )?;
        consumer.assign(partitions.iter().cloned());
        let mut floor = HashMap::new();
        for tp in &partitions {
            floor.insert(tp.partition, consumer.position(tp).await? - 1);
        }
        let hub =
            Hub { channels: HashMap::new(), history: VecDeque::new(), history_bytes: 0, floor, next_subscriber: 0 };
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner { config, client, consumer, hub: Mutex::new(hub), shutdown });
        tokio::spawn(consume(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The routes: `GET /ws/{channel}` (with `?after=<id>` to resume).
    pub fn router(&self) -> Router {
        Router::new().route("/ws/{channel}", get(upgrade)).with_state(self.clone())
    }

    /// Sockets open now, over every channel.
    pub fn connections(&self) -> usize {
        lock(&self.inner.hub).channels.values().map(|c| c.subscribers.len()).sum()
    }

    /// Stops reading and closes every socket (close code 1001). Cancel-safe.
    pub async fn close(&self) {
        self.inner.shutdown.send_replace(true);
        lock(&self.inner.hub).channels.clear();
        let _ = self.inner.consumer.close().await;
        self.inner.client.close().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn partitions_of(client: &Client, topic: &str) -> Result<Vec<TopicPartition>> {
    let described = Admin::new(client.clone()).describe_topics(&[topic]).await?;
    let t = described.into_iter().next().ok_or_else(|| Error::Misuse {
        operation: "starting a gateway".into(),
        reason: format!("topic {topic} was not described"),
    })?;
    Ok(t.partitions.iter().map(|p| TopicPartition::new(topic, p.partition)).collect())
}

/// The gateway's reading task: every notification goes to the hub, until the gateway closes or
/// every handle to it is gone (it holds none itself, so a dropped gateway stops reading).
async fn consume(gateway: Weak<Inner>) {
    let Some(mut shutdown) = gateway.upgrade().map(|inner| inner.shutdown.subscribe()) else { return };
    loop {
        let Some(inner) = gateway.upgrade() else { return };
        let records = tokio::select! {
            () = closing(&mut shutdown) => return,
            polled = inner.consumer.poll(Duration::from_secs(1)) => polled,
        };
        match records {
            Ok(records) => {
                let mut hub = lock(&inner.hub);
                // Also after an empty poll (at least every second): a socket that stopped reading
                // is dropped once its grace is over even if nothing more is published.
                hub.start_poll(inner.config.client_buffer, inner.config.slow_client_grace, Instant::now());
                for record in &records {
                    let Some(key) = record.key.as_deref() else { continue };
                    let channel: Arc<str> = String::from_utf8_lossy(key).into();
                    hub.deliver(channel, Notification::of(record), inner.config.history_bytes);
                }
            }
            Err(e) if e.is_retriable() => tracing::debug!(error = %e, "gateway poll failed; polling again"),
            Err(e) => {
                tracing::error!(error = %e, "the gateway stopped reading its topic");
                inner.shutdown.send_replace(true);
                return;
            }
        }
    }
}

#[derive(Deserialize)]
struct Resume {
    after: Option<String>,
}

async fn upgrade(
    State(gateway): State<Gateway>,
    Path(channel): Path<String>,
    Query(resume): Query<Resume>,
    ws: WebSocketUpgrade,
) -> Response {
    let after = match resume.after.as_deref().map(str::parse::<EventId>).transpose() {
        Ok(after) => after,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    // Subscribed before the handshake's answer: a client that sees its socket open misses
    // nothing published from then on. (If the upgrade fails, the dropped queue unsubscribes it.)
    let subscription = subscribe(&gateway.inner, channel.into(), after);
    ws.on_upgrade(move |socket| serve(gateway, subscription, socket))
}

/// A socket's place in its channel: what it is owed from before it subscribed, and the queue of
/// what comes after.
struct Subscription {
    channel: Arc<str>,
    id: u64,
    /// Notifications after `after` evicted from the history: (after, through), read again
    /// from Kafka.
    replay: Option<(EventId, i64)>,
    /// The history's notifications after `after`.
    recent: Vec<Notification>,
    live: Inbox,
}

/// Registers a socket on `channel` and takes what it is owed from the history, under the hub's
/// lock, so that nothing falls between the history and the live queue.
fn subscribe(inner: &Inner, channel: Arc<str>, after: Option<EventId>) -> Subscription {
    let (queue, live) = socket_queue();
    let mut hub = lock(&inner.hub);
    let id = hub.next_subscriber;
    hub.next_subscriber += 1;
    let floor = after.and_then(|a| hub.floor.get(&a.partition).copied());
    let ch = hub.channels.entry(channel.clone()).or_default();
    let recent = ch
        .recent
        .iter()
        .filter(|n| after.is_none_or(|a| n.id.partition != a.partition || n.id.offset > a.offset))
        .cloned()
        .collect();
    ch.subscribers.push(Subscriber { id, queue, after, over_since: None });
    let replay = match (after, floor) {
        (Some(a), Some(floor)) if a.offset < floor => Some((a, floor)),
        _ => None,
    };
    Subscription { channel, id, replay, recent, live }
}

/// One socket: what it missed, then its channel's notifications as they come.
async fn serve(gateway: Gateway, subscription: Subscription, socket: WebSocket) {
    let inner = &gateway.inner;
    let Subscription { channel, id, replay, recent, mut live } = subscription;
    let (mut sink, mut incoming) = socket.split();
    let send_timeout = inner.config.send_timeout;
    let mut shutdown = inner.shutdown.subscribe();
    let outcome = async {
        if let Some((after, through)) = replay {
            let missed =
                tokio::time::timeout(inner.config.replay_timeout, replay_from_kafka(inner, &channel, after, through))
                    .await
                    .map_err(|_| close(1011, "resuming took too long; try again"))?
                    .map_err(|e| close(1011, &format!("resuming failed: {e}")))?;
            for n in missed {
                send(&mut sink, n.frame, send_timeout).await?;
            }
        }
        for n in recent {
            send(&mut sink, n.frame, send_timeout).await?;
        }
        loop {
            tokio::select! {
                n = live.recv() => match n {
                    Some(n) => send(&mut sink, n.frame, send_timeout).await?,
                    // Dropped by the hub: it did not keep up, or the gateway is closing.
                    None => {
                        let closing = *inner.shutdown.borrow();
                        return Err(if closing {
                            close(1001, "the gateway is shutting down")
                        } else {
                            close(1013, "too slow: resume from the last id received")
                        });
                    }
                },
                msg = incoming.next() => match msg {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                    Some(Ok(_)) => {}
                },
                () = closing(&mut shutdown) => return Err(close(1001, "the gateway is shutting down")),
            }
        }
    }
    .await;
    if let Err(Some(frame)) = outcome {
        let _ = tokio::time::timeout(send_timeout, sink.send(Message::Close(Some(frame)))).await;
    }
    let mut hub = lock(&inner.hub);
    if let Some(ch) = hub.channels.get_mut(&channel) {
        ch.subscribers.retain(|s| s.id != id);
    }
}

/// Resolves once the gateway is closing.
async fn closing(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn close(code: u16, reason: &str) -> Option<CloseFrame> {
    Some(CloseFrame { code, reason: reason.into() })
}

/// Sends one frame; a client that takes longer than `timeout` is given up on (no close frame:
/// it is not reading).
async fn send(
    sink: &mut (impl SinkExt<Message, Error = axum::Error> + Unpin),
    frame: Utf8Bytes,
    timeout: Duration,
) -> std::result::Result<(), Option<CloseFrame>> {
    match tokio::time::timeout(timeout, sink.send(Message::Text(frame))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(None),
    }
}

/// The channel's notifications in `after.partition` after `after` and up to `through`, read
/// again from the topic.
async fn replay_from_kafka(inner: &Inner, channel: &str, after: EventId, through: i64) -> Result<Vec<Notification>> {
    let consumer = Consumer::with_client(
        inner.client.clone(),
        ConsumerConfig::new(&inner.config.bootstrap).isolation_level(IsolationLevel::ReadCommitted),
    )?;
    let tp = TopicPartition::new(inner.config.topic.as_str(), after.partition);
    consumer.assign([tp.clone()]);
    consumer.seek(&tp, after.offset + 1)?;
    let key = Bytes::copy_from_slice(channel.as_bytes());
    let mut missed = Vec::new();
    let read = async {
        'reading: loop {
            for record in consumer.poll(Duration::from_millis(500)).await? {
                if record.offset > through {
                    break 'reading;
                }
                if record.key.as_ref() == Some(&key) {
                    missed.push(Notification::of(&record));
                }
                if record.offset == through {
                    break 'reading;
                }
            }
            // Compaction or retention may have removed the last offsets: stop at the end.
            if consumer.position(&tp).await? > through {
                break;
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    let _ = consumer.close().await;
    read.map(|()| missed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_read_back_as_written_and_refuse_anything_else() {
        let id = EventId { partition: 3, offset: 42 };
        assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
        for bad in ["", "3", "3-", "-42", "a-1", "1-b", "-1-2", "1--2"] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_frame_embeds_json_as_it_is_and_anything_else_as_a_string() {
        let id = EventId { partition: 0, offset: 7 };
        assert_eq!(&*frame(id, br#"{"done":1}"#), r#"{"id":"0-7","data":{"done":1}}"#);
        assert_eq!(&*frame(id, b"not \"json\""), r#"{"id":"0-7","data":"not \"json\""}"#);
    }

    fn notification(partition: i32, offset: i64, size: usize) -> Notification {
        Notification { id: EventId { partition, offset }, frame: "x".repeat(size).into() }
    }

    #[test]
    fn the_history_keeps_its_budget_and_raises_the_floor_past_what_it_evicts() {
        let mut hub = Hub {
            channels: HashMap::new(),
            history: VecDeque::new(),
            history_bytes: 0,
            floor: HashMap::from([(0, -1)]),
            next_subscriber: 0,
        };
        for offset in 0..10 {
            let channel: Arc<str> = if offset % 2 == 0 { "a".into() } else { "b".into() };
            hub.deliver(channel, notification(0, offset, 10), 35);
        }
        assert!(hub.history_bytes <= 35);
        assert_eq!(hub.floor[&0], 6, "offsets 0..=6 were evicted, 7..=9 kept");
        let kept: Vec<i64> = hub.channels.values().flat_map(|c| c.recent.iter().map(|n| n.id.offset)).collect();
        assert_eq!(kept.len(), 3);
        assert!(kept.iter().all(|o| *o > 6));
    }

    #[test]
    fn a_subscriber_over_its_limit_for_the_grace_is_dropped_and_the_others_get_everything() {
        let mut hub = Hub {
            channels: HashMap::new(),
            history: VecDeque::new(),
            history_bytes: 0,
            floor: HashMap::new(),
            next_subscriber: 0,
        };
        let (slow, _slow_inbox) = socket_queue();
        let (fast, mut fast_inbox) = socket_queue();
        let ch = hub.channels.entry("c".into()).or_default();
        ch.subscribers.push(Subscriber { id: 0, queue: slow, after: None, over_since: None });
        ch.subscribers.push(Subscriber { id: 1, queue: fast, after: None, over_since: None });
        let mut got = Vec::new();
        let mut drain = |inbox: &mut Inbox| {
            while let Ok(n) = inbox.rx.try_recv() {
                inbox.backlog.fetch_sub(1, Ordering::Relaxed);
                got.push(n.id.offset);
            }
        };
        let (t0, grace) = (Instant::now(), Duration::from_secs(2));
        let poll = |hub: &mut Hub, at: Duration, offsets: std::ops::Range<i64>| {
            hub.start_poll(2, grace, t0 + at);
            for offset in offsets {
                hub.deliver("c".into(), notification(0, offset, 1), 1 << 20);
            }
            hub.channels["c"].subscribers.iter().map(|s| s.id).collect::<Vec<u64>>()
        };
        // A burst of 5 over a limit of 2, in two polls back to back, before either socket
        // drained anything: nobody is dropped for a burst.
        assert_eq!(poll(&mut hub, Duration::ZERO, 0..3), [0, 1]);
        assert_eq!(poll(&mut hub, Duration::ZERO, 3..5), [0, 1]);
        drain(&mut fast_inbox);
        // Within the grace, the slow one over the limit at every poll stays.
        assert_eq!(poll(&mut hub, Duration::from_millis(1999), 5..6), [0, 1]);
        drain(&mut fast_inbox);
        // At the end of the grace, still over the limit, it goes; the fast one drained and stays.
        assert_eq!(poll(&mut hub, Duration::from_secs(2), 6..8), [1]);
        drain(&mut fast_inbox);
        assert_eq!(got, (0..8).collect::<Vec<_>>());
    }
}
