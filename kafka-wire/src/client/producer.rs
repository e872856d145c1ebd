//! The producer: the tokio driver around [`ProducerCore`](crate::proto::producer::ProducerCore).
//!
//! `send` partitions a record, appends it to the core (the caller's task does the encoding) and
//! returns a [`DeliveryFuture`] at once; a driver task drains ready batches into Produce
//! requests and turns responses into completions. Each broker has its own dispatch task, which
//! seals (compresses) its requests' batches outside the core's lock (on tokio's blocking pool
//! for requests with 64 KiB or more to compress), keeps its connection and sends: a broker that
//! is slow to connect or to answer only holds up its own requests (each
//! broker has at most `max.in.flight.requests.per.connection` of them). Metadata is fetched when
//! a topic is first used and refreshed when a broker says its view is stale, or when a broker
//! leaves a request unanswered: its partitions wait for the refresh, which moves them to their
//! new leader if the cluster elected one.
//!
//! If the driver task dies (a panic), every pending record and every later call fails with
//! [`Error::DriverFailed`] instead of waiting forever.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, TryLockError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use super::admin::{Admin, ConfigResource, ConfigSource};
use super::cluster::Client;
use super::config::ProducerConfig;
use super::connection::Connection;
use super::error::{Error, Result};
use super::metrics::ProducerMetrics;
use super::transaction::Transactions;
use crate::codec::messages::init_producer_id::InitProducerIdRequest;
use crate::codec::messages::produce::{PartitionProduceData, ProduceResponse, TopicProduceData};
use crate::codec::messages::{MetadataResponse, ProduceRequest};
use crate::codec::primitives::RECORDS_PART_MIN;
use crate::codec::record_batch::Header;
use crate::codec::{ErrorCode, Uuid};
use crate::proto::backoff::Backoff;
use crate::proto::partitioner::{partition_for_key, StickyPartitioner};
use crate::proto::producer::{
    AppendError, CompletedBatch, CoreConfig, DeliverySink, Drained, PartitionResponse, ProduceFailure, ProducerCore,
    RecordData, RecordMetadata, RequestOutcome, TopicPartition, Written,
};

/// A record to send.
#[derive(Clone, Debug, Default)]
pub struct ProducerRecord {
    /// The topic to write to.
    pub topic: String,
    /// An explicit partition; otherwise the key's hash or the sticky partitioner decides.
    pub partition: Option<i32>,
    /// The key: records of one key go to one partition (murmur2, as Java's default
    /// partitioner), and compacted topics keep the last value per key.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone (a delete, on a compacted topic).
    pub value: Option<Bytes>,
    /// Headers, in order; keys may repeat.
    pub headers: Vec<Header>,
    /// Milliseconds since the epoch; the time of `send` if not given.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record of `value` for `topic`, with no key, partition, headers or timestamp.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self { topic: topic.into(), value: Some(value.into()), ..Default::default() }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends to this partition, whatever the key.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Appends a header.
    pub fn header(mut self, key: &str, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header { key: key.into(), value: Some(value.into()) });
        self
    }

    /// Sets the record's timestamp, in milliseconds since the epoch (the topic may replace it
    /// with the log-append time).
    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }
}

/// How a record's delivery is reported: by a [`DeliveryFuture`], or by the next flush
/// ([`Producer::send_nowait`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Delivery {
    Future,
    Detached,
}

/// What a batch keeps for its records' delivery (the core's [`DeliverySink`]): one result
/// shared by its records' futures, made for the first record sent with one, and counts.
///
/// A record costs the batch nothing but a count, and its future a reference to the shared
/// result: no allocation, no lock and no result of its own per record. A result per record
/// (a channel, then a slot in a slab of 64) was a fifth of a sending loop's CPU under `perf`,
/// and its 56 to 80 bytes were held for every record in flight.
#[derive(Default)]
pub(super) struct Deliveries {
    shared: Option<Arc<BatchResult>>,
    /// The index of the first record in `shared` (not 0 for the second half of a split batch).
    first: u32,
    len: u32,
    /// Records sent without a future.
    detached: u32,
    /// Its outcome was handed to `shared`.
    settled: bool,
}

impl DeliverySink for Deliveries {
    type Token = Delivery;
    type Receipt = Option<DeliveryFuture>;

    fn push(&mut self, delivery: Delivery, timestamp: i64) -> Option<DeliveryFuture> {
        let index = self.first + self.len;
        self.len += 1;
        match delivery {
            Delivery::Detached => {
                self.detached += 1;
                None
            }
            Delivery::Future => {
                let result = self.shared.get_or_insert_with(|| Arc::new(BatchResult::new())).clone();
                Some(DeliveryFuture { result, index, waker: NO_WAKER, timestamp })
            }
        }
    }

    fn len(&self) -> usize {
        self.len as usize
    }

    fn split_off(&mut self, at: usize) -> Self {
        let at = (at as u32).min(self.len);
        let rest_len = self.len - at;
        // Which records were detached is not kept: of a batch that has futures too, each half
        // counts as many as it may hold (a failure of either half is then also reported by
        // the next flush).
        let (detached, rest_detached) = match &self.shared {
            None => (at, rest_len),
            Some(shared) => {
                lock(&shared.state).open += 1;
                (self.detached.min(at), self.detached.min(rest_len))
            }
        };
        let rest = Self {
            shared: self.shared.clone(),
            first: self.first + at,
            len: rest_len,
            detached: rest_detached,
            settled: false,
        };
        self.len = at;
        self.detached = detached;
        rest
    }
}

impl Deliveries {
    /// Hands the records' outcome to their futures and wakes them.
    fn settle(&mut self, outcome: Outcome) {
        self.settled = true;
        let Some(shared) = &self.shared else { return };
        let records = self.first..self.first + self.len;
        // Woken after the lock is released: a waker may poll its future at once.
        let woken = {
            let mut state = lock(&shared.state);
            state.settled.push((records, outcome));
            state.open -= 1;
            if state.open == 0 {
                // No future of this batch will wait again.
                let _ = shared.done.set(std::mem::take(&mut state.settled));
                std::mem::take(&mut state.wakers)
            } else {
                // The other half of a split batch is still to come: its futures' wakers stay
                // where they registered them (each future keeps its index in the list).
                state.wakers.clone()
            }
        };
        woken.into_iter().for_each(Waker::wake);
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        // Dropped without an outcome (the core went with its driver): the futures must not
        // wait forever.
        if !self.settled {
            self.settle(Outcome::Abandoned);
        }
    }
}

/// The delivery result of one batch's records, shared by their futures.
struct BatchResult {
    state: Mutex<BatchState>,
    /// Every part's outcome, moved here from `state` when the last part is settled (under its
    /// lock): from then on a future reads its outcome without taking the lock.
    done: OnceLock<Vec<(std::ops::Range<u32>, Outcome)>>,
}

struct BatchState {
    /// The outcomes so far, each of a range of the batch's record indices: one, or one per
    /// half of a batch split in two.
    settled: Vec<(std::ops::Range<u32>, Outcome)>,
    /// Sinks still to settle (a split makes two of one).
    open: u32,
    /// The wakers of futures that waited; each future keeps the index of its own.
    wakers: Vec<Waker>,
}

impl BatchResult {
    fn new() -> Self {
        Self {
            state: Mutex::new(BatchState { settled: Vec::new(), open: 1, wakers: Vec::new() }),
            done: OnceLock::new(),
        }
    }
}

enum Outcome {
    Written(TopicPartition, Written),
    Failed(Error),
    /// The batch was dropped without an outcome (its driver is gone).
    Abandoned,
}

/// A [`DeliveryFuture`] that has not registered a waker.
const NO_WAKER: u32 = u32::MAX;

/// Resolves when the record is acknowledged (or has failed for good). Dropping it does not
/// withdraw the record: it is still sent, and nobody hears how it went.
#[must_use = "a delivery future tells whether the record was written"]
pub struct DeliveryFuture {
    result: Arc<BatchResult>,
    /// The record's index in its batch.
    index: u32,
    /// Where its waker is in the batch result's list, or [`NO_WAKER`].
    waker: u32,
    /// The record's timestamp, for its metadata.
    timestamp: i64,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Once the whole batch is settled, without the lock.
        if let Some(ready) = this.result.done.get().and_then(|settled| this.outcome(settled)) {
            return Poll::Ready(ready);
        }
        let mut state = lock(&this.result.state);
        // Settled in full meanwhile: `done` is set under the lock.
        let settled = this.result.done.get().unwrap_or(&state.settled);
        if let Some(ready) = this.outcome(settled) {
            return Poll::Ready(ready);
        }
        match state.wakers.get_mut(this.waker as usize) {
            Some(waker) => {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
            }
            None => {
                this.waker = state.wakers.len() as u32;
                state.wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl DeliveryFuture {
    /// The record's outcome, if its part of the batch is among `settled`.
    fn outcome(&self, settled: &[(std::ops::Range<u32>, Outcome)]) -> Option<Result<RecordMetadata>> {
        let index = self.index;
        let (records, outcome) = settled.iter().find(|(records, _)| records.contains(&index))?;
        Some(match outcome {
            Outcome::Written(tp, written) => Ok(RecordMetadata {
                topic_partition: tp.clone(),
                offset: written.offset((index - records.start) as usize),
                timestamp: written.timestamp(self.timestamp),
            }),
            Outcome::Failed(e) => Err(e.clone()),
            Outcome::Abandoned => Err(closed()),
        })
    }
}

/// A Kafka producer. Cheap to clone; clones share one driver.
#[derive(Clone)]
pub struct Producer {
    pub(super) inner: Arc<Inner>,
    /// When the last handle is dropped, the driver delivers what is pending and stops.
    _last_handle: Arc<StopWhenIdle>,
}

struct StopWhenIdle(Arc<Inner>);

impl Drop for StopWhenIdle {
    fn drop(&mut self) {
        self.0.closing.store(true, Ordering::Release);
        lock(&self.0.core).flush();
        self.0.wake.notify_one();
    }
}

pub(super) struct Inner {
    pub(super) client: Client,
    /// Whether the client was opened for this producer (and is closed with it).
    owns_client: bool,
    pub(super) config: ProducerConfig,
    pub(super) core: Mutex<CoreState>,
    /// By name, hashed with FxHash: a `send` by topic name looks its topic up here once per
    /// record, and SipHash was a tenth of that path's instructions.
    topics: RwLock<FxHashMap<Arc<str>, Arc<TopicMeta>>>,
    /// Changes whenever `topics` does: a [`TopicProducer`]'s cached partition count is current
    /// while this has the value it was cached at.
    topics_version: AtomicU32,
    /// The first failure of a record sent with [`Producer::send_nowait`] since the last
    /// [`Producer::flush`] or [`Producer::close`] reported one.
    detached_failure: Mutex<Option<Error>>,
    /// Wakes the driver: records appended, flush or close asked, metadata learned.
    pub(super) wake: Notify,
    /// Signals that buffer space was freed or the producer became idle.
    pub(super) progress: Notify,
    closing: AtomicBool,
    refreshing: AtomicBool,
    /// Counts [`Inner::node_failed`] calls: a metadata answer to a request sent before the
    /// latest failure of a partition's leader may still name that leader.
    failures: AtomicU64,
    /// Spaces metadata refreshes.
    refresh_backoff: Mutex<Backoff>,
    driver_done: Notify,
    pub(super) driver_finished: AtomicBool,
    /// Set once the driver task died: every pending and later call fails with it.
    failure: OnceLock<Error>,
    /// Test hook: the driver panics at its next turn (see [`Producer::inject_driver_panic`]).
    panic_requested: AtomicBool,
    /// Set by the transaction layer when the open transaction runs KIP-890 transactions v2.
    pub(super) transactions_v2: AtomicBool,
    /// The transactional part, with a `transactional.id`.
    pub(super) txn: Option<Transactions>,
}

/// The core and the partitioner, under one lock: a send chooses its record's partition and
/// appends the record in one turn of the lock (a lock of its own for the partitioner was a
/// second pair of atomic operations per record).
pub(super) struct CoreState {
    core: ProducerCore<Deliveries>,
    partitioner: StickyPartitioner,
}

impl std::ops::Deref for CoreState {
    type Target = ProducerCore<Deliveries>;

    fn deref(&self) -> &Self::Target {
        &self.core
    }
}

impl std::ops::DerefMut for CoreState {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.core
    }
}

/// A record without its topic: what [`Producer::send`] and [`TopicProducer`] hand to
/// [`Producer::enqueue`].
struct Parts {
    partition: Option<i32>,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<Header>,
    timestamp: Option<i64>,
}

impl ProducerRecord {
    fn into_parts(self) -> (String, Parts) {
        let r = self;
        let parts =
            Parts { partition: r.partition, key: r.key, value: r.value, headers: r.headers, timestamp: r.timestamp };
        (r.topic, parts)
    }
}

#[derive(Debug)]
struct TopicMeta {
    name: Arc<str>,
    id: Uuid,
    /// Leader node of each partition, -1 where there is none.
    leaders: Vec<i32>,
    /// Leader epoch of each partition as last learned, -1 if unknown.
    epochs: Vec<i32>,
    /// For each partition whose leader was found unresponsive, the [`Inner::failures`] count
    /// then (0: none since its leader was last learned).
    failed_at: Vec<u64>,
}

impl TopicMeta {
    /// What a send needs of the topic: its interned name and its partition count.
    fn name_and_partitions(&self) -> (Arc<str>, u32) {
        (self.name.clone(), self.leaders.len() as u32)
    }
}

impl Producer {
    /// Connects to the cluster and starts the driver. An idempotent producer gets its producer
    /// id before the first batch is sent.
    ///
    /// Cancel-safe: if the future is dropped before it returns, no producer was started and
    /// the connections opened so far are closed.
    pub async fn new(config: ProducerConfig) -> Result<Self> {
        let config = config.validated()?;
        let client = Client::connect(config.client_config()).await?;
        Self::start(client, config, true)
    }

    /// A producer on an existing [`Client`]: it shares the client's connections and metadata
    /// with the consumers, producers and admin clients built on it (the client's connection
    /// settings apply; this configuration's `bootstrap.servers`, `client.id` and timeouts of the
    /// connection are not used). Closing the producer leaves the client's connections open.
    pub fn with_client(client: Client, config: ProducerConfig) -> Result<Self> {
        Self::start(client, config.validated()?, false)
    }

    fn start(client: Client, config: ProducerConfig, owns_client: bool) -> Result<Self> {
        let core = ProducerCore::new(CoreConfig {
            batch_size: config.batch_size,
            linger: config.linger,
            compression: config.compression,
            compression_level: config.effective_compression_level(),
            max_request_size: config.max_request_size,
            buffer_memory: config.buffer_memory,
            // What the caller holds per record until it completes: its delivery future (a
            // detached record has none: counted all the same, an upper bound). The batch holds
            // nothing per record beyond its bytes.
            record_overhead: size_of::<DeliveryFuture>(),
            delivery_timeout: config.delivery_timeout,
            retry_backoff: config.retry_backoff,
            retry_backoff_max: config.retry_backoff_max,
            max_in_flight: config.max_in_flight_requests_per_connection,
            acks: config.acks as i16,
            request_timeout: config.request_timeout,
            idempotent: config.enable_idempotence,
            transactional: config.transactional_id.is_some(),
            retries: config.retries,
        });
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let core = core.with_backoff_seed(seed.rotate_left(32));
        let partitioner = StickyPartitioner::new(config.batch_size, seed).with_adaptive(config.partitioner_adaptive);
        let inner = Arc::new(Inner {
            client,
            owns_client,
            core: Mutex::new(CoreState { core, partitioner }),
            topics: RwLock::new(FxHashMap::default()),
            topics_version: AtomicU32::new(0),
            detached_failure: Mutex::new(None),
            wake: Notify::new(),
            progress: Notify::new(),
            closing: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            refresh_backoff: Mutex::new(Backoff::new(config.retry_backoff, config.retry_backoff_max)),
            driver_done: Notify::new(),
            driver_finished: AtomicBool::new(false),
            failure: OnceLock::new(),
            panic_requested: AtomicBool::new(false),
            transactions_v2: AtomicBool::new(false),
            txn: config.transactional_id.clone().map(|id| {
                Transactions::new(id, config.transaction_timeout, config.retry_backoff, config.retry_backoff_max)
            }),
            config,
        });
        let driver = tokio::spawn(drive(inner.clone()));
        tokio::spawn(watch(inner.clone(), driver));
        Ok(Self { _last_handle: Arc::new(StopWhenIdle(inner.clone())), inner })
    }

    /// Queues a record and returns a future of its delivery. Waits (up to `max.block.ms`) only
    /// for the topic's metadata and for room in `buffer.memory`, and yields to the runtime now
    /// and then (tokio's cooperative budget), so that a loop of sends lets the driver run.
    ///
    /// Cancel-safe: if the future is dropped before it returns, the record was not queued and
    /// nothing is left behind (a transactional producer does not count it in its transaction).
    /// Once it returned `Ok`, the record is queued whatever happens to the [`DeliveryFuture`].
    #[inline]
    pub fn send(&self, record: ProducerRecord) -> impl Future<Output = Result<DeliveryFuture>> + Send + '_ {
        // Inlined, so that the future is built where the caller keeps it: built here, out of
        // line, it was moved twice per record with a call to `memcpy` (6 % of the instant-ack
        // ceiling). The record is taken apart first: the per-topic handle's future then holds
        // its parts without the topic.
        let (topic, parts) = record.into_parts();
        async move { self.enqueue(TopicRef::Name(&topic), parts, Delivery::Future).await.map(expect_future) }
    }

    /// Queues a record without a future of its delivery, for callers that do not await each
    /// record: it saves the delivery future and the wake-up of a waiting task. Waits as
    /// [`send`](Self::send) does (metadata, room in `buffer.memory`). Whether the record was
    /// written is told by the next [`flush`](Self::flush) (or [`close`](Self::close)): it
    /// returns the first failure of a record sent this way since the last one it reported
    /// (all of them are counted in [`metrics`](Self::metrics)' `records_failed`).
    ///
    /// Cancel-safe: if the future is dropped before it returns, the record was not queued;
    /// once it returned `Ok`, the record is queued.
    #[inline]
    pub fn send_nowait(&self, record: ProducerRecord) -> impl Future<Output = Result<()>> + Send + '_ {
        // As in `send`.
        let (topic, parts) = record.into_parts();
        async move { self.enqueue(TopicRef::Name(&topic), parts, Delivery::Detached).await.map(drop) }
    }

    /// A handle that sends to `topic` without looking the topic up for each record: it keeps
    /// the topic's interned name and partition count (renewed when the producer learns new
    /// metadata). Fetches the topic's metadata first if the producer does not know it yet.
    ///
    /// Cancel-safe: dropping the future only stops the metadata lookup.
    pub async fn topic(&self, topic: &str) -> Result<TopicProducer> {
        let deadline = tokio::time::Instant::now() + self.inner.config.max_block;
        let version = self.inner.topics_version.load(Ordering::Acquire);
        let meta = self.inner.topic_meta(topic, deadline).await?;
        Ok(TopicProducer {
            producer: self.clone(),
            name: meta.name.clone(),
            cached: Arc::new(AtomicU64::new(pack(version, meta.leaders.len() as u32))),
        })
    }

    /// Partitions a record of `topic` and appends it to the core, with its delivery future if
    /// `delivery` asks for one.
    ///
    /// What may wait (a metadata lookup, the transaction's AddPartitionsToTxn, room in the
    /// buffer) is a boxed future of its own, entered only when it has to: inline, those waits
    /// made this future several KiB, copied whole for each record whenever a caller wraps a
    /// send (a select, a timeout). The path that waits for nothing is synchronous.
    async fn enqueue(&self, topic: TopicRef<'_>, parts: Parts, delivery: Delivery) -> Result<Option<DeliveryFuture>> {
        // A loop of sends that never waits would otherwise keep the driver from running on a
        // current-thread runtime (or on this worker) until `buffer.memory` is full: every so
        // often (tokio's cooperative budget) the send yields first.
        tokio::task::consume_budget().await;
        // Bound before the await: a temporary of the match would be kept across it.
        let stalled = match self.try_enqueue(topic, parts, delivery)? {
            Ok(out) => return Ok(out),
            Err(stalled) => Box::pin(self.enqueue_stalled(stalled)),
        };
        stalled.await
    }

    /// [`enqueue`](Self::enqueue) as far as it goes without waiting.
    fn try_enqueue<'a>(
        &'a self,
        topic: TopicRef<'a>,
        parts: Parts,
        delivery: Delivery,
    ) -> Result<Result<Option<DeliveryFuture>, Stalled<'a>>> {
        let inner = &self.inner;
        inner.check_alive()?;
        if inner.closing.load(Ordering::Acquire) {
            return Err(closed());
        }
        let known = match &topic {
            TopicRef::Handle(h) => h.cached_partitions(inner),
            TopicRef::Name(name) => inner.known_partitions(name),
        };
        match known {
            Some((name, partitions)) => self.place(name, partitions, parts, delivery),
            None => Ok(Err(Stalled::Topic { topic, parts, delivery })),
        }
    }

    /// Chooses the record's partition and appends it.
    fn place<'a>(
        &'a self,
        name: Arc<str>,
        partitions: u32,
        parts: Parts,
        delivery: Delivery,
    ) -> Result<Result<Option<DeliveryFuture>, Stalled<'a>>> {
        let inner = &self.inner;
        let timestamp = parts.timestamp.unwrap_or_else(now_millis);
        let explicit = parts.partition;
        let data = RecordData { key: parts.key, value: parts.value, headers: parts.headers, timestamp };
        let size = data.size_estimate();
        let mut core = lock(&inner.core);
        let partition = inner.choose_partition(&mut core.partitioner, &name, partitions, explicit, &data, size)?;
        let tp = TopicPartition::new(name, partition);
        let Some(t) = &inner.txn else {
            return self
                .append_locked(core, Placed { tp, data, size, delivery, counted: CountedInTransaction::new(None) });
        };
        // Joining the transaction may wait (AddPartitionsToTxn): not under the core's lock.
        drop(core);
        if !t.add_partition(&tp)? {
            return Ok(Err(Stalled::Txn { txn: t, tp, data, size, delivery }));
        }
        // Counted before the append, so that its completion can never come first; uncounted
        // unless the append happens, also if the send is dropped while it waits for room.
        let counted = CountedInTransaction::new(inner.txn.as_ref());
        self.append(Placed { tp, data, size, delivery, counted })
    }

    /// Appends a placed record to the core.
    fn append<'a>(&'a self, placed: Placed<'a>) -> Result<Result<Option<DeliveryFuture>, Stalled<'a>>> {
        self.append_locked(lock(&self.inner.core), placed)
    }

    /// [`append`](Self::append) under the core's lock, which it releases.
    fn append_locked<'a>(
        &'a self,
        mut core: MutexGuard<'_, CoreState>,
        placed: Placed<'a>,
    ) -> Result<Result<Option<DeliveryFuture>, Stalled<'a>>> {
        let inner = &self.inner;
        let Placed { tp, data, size, delivery, mut counted } = placed;
        inner.check_alive()?;
        // The clock is read only for a record that starts a batch.
        let result = core.append_sized(&tp, data, size, delivery, Instant::now);
        drop(core);
        match result {
            Ok((wake, out)) => {
                counted.keep();
                // The core asks for a wake-up only when the driver has something new to do: a
                // partition's first batch is ready, or a linger ends before the driver's next
                // look.
                if wake {
                    inner.wake.notify_one();
                }
                Ok(Ok(out))
            }
            Err(AppendError::RecordTooLarge { size, max, .. }) => Err(Error::RecordTooLarge {
                topic: tp.topic.to_string(),
                partition: Some(tp.partition),
                size,
                max,
                limit: "max.request.size",
            }),
            Err(AppendError::BufferFull(delivery, data)) => {
                Ok(Err(Stalled::Buffer(Placed { tp, data, size, delivery, counted })))
            }
        }
    }

    /// Goes on with a send that has to wait, for as long as it has to (up to `max.block.ms`).
    async fn enqueue_stalled<'a>(&'a self, mut stalled: Stalled<'a>) -> Result<Option<DeliveryFuture>> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + inner.config.max_block;
        loop {
            let step = match stalled {
                Stalled::Topic { topic, parts, delivery } => {
                    let (name, partitions) = match topic {
                        TopicRef::Handle(h) => h.refresh_partitions(inner, deadline).await?,
                        TopicRef::Name(name) => inner.topic_meta(name, deadline).await?.name_and_partitions(),
                    };
                    self.place(name, partitions, parts, delivery)?
                }
                Stalled::Txn { txn, tp, data, size, delivery } => {
                    txn.wait_partition_added(inner, &tp).await?;
                    let counted = CountedInTransaction::new(inner.txn.as_ref());
                    self.append(Placed { tp, data, size, delivery, counted })?
                }
                Stalled::Buffer(placed) => {
                    let progressed = inner.progress.notified();
                    inner.wake.notify_one();
                    if tokio::time::timeout_at(deadline, progressed).await.is_err() {
                        return Err(Error::Timeout {
                            what: "waiting for room in buffer.memory".into(),
                            after: inner.config.max_block,
                        });
                    }
                    self.append(placed)?
                }
            };
            match step {
                Ok(out) => return Ok(out),
                Err(next) => stalled = next,
            }
        }
    }

    /// Sends every buffered record without waiting for `linger.ms` and waits until nothing is
    /// buffered or in flight. Fails with the first failure of a record sent with
    /// [`send_nowait`](Self::send_nowait) since the last flush or close that reported one.
    ///
    /// Cancel-safe: dropping the future only stops the waiting; the records are sent all the
    /// same, without waiting for `linger.ms`, and a failure not reported yet is kept for the
    /// next flush.
    pub async fn flush(&self) -> Result<()> {
        lock(&self.inner.core).flush();
        self.inner.wake.notify_one();
        loop {
            let progressed = self.inner.progress.notified();
            self.inner.check_alive()?;
            if lock(&self.inner.core).is_idle() {
                return self.inner.take_detached_failure();
            }
            if self.inner.driver_finished.load(Ordering::Acquire) {
                return Err(closed());
            }
            progressed.await;
        }
    }

    /// Delivers (or fails) everything pending, then stops the driver and closes connections.
    /// Fails, as [`flush`](Self::flush), with the first failure of a record sent with
    /// [`send_nowait`](Self::send_nowait) that no flush reported.
    ///
    /// Cancel-safe: once called, the producer refuses new records and its driver stops when
    /// everything pending is delivered, whether or not the future is awaited to the end (the
    /// connections are then closed when the last handle is dropped).
    pub async fn close(&self) -> Result<()> {
        self.inner.closing.store(true, Ordering::Release);
        lock(&self.inner.core).flush();
        loop {
            let done = self.inner.driver_done.notified();
            self.inner.wake.notify_one();
            if self.inner.driver_finished.load(Ordering::Acquire) {
                break;
            }
            done.await;
        }
        if self.inner.owns_client {
            self.inner.client.close().await;
        }
        self.inner.take_detached_failure()
    }

    /// The producer id and epoch in use (-1 without idempotence).
    pub fn producer_id(&self) -> (i64, i16) {
        lock(&self.inner.core).producer_id()
    }

    /// The cluster client underneath, for metadata and admin requests.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// A snapshot of this producer's counters (records delivered and failed, requests, retries,
    /// what is buffered now). Its requests are also counted per broker in
    /// [`Client::metrics`](Client::metrics).
    pub fn metrics(&self) -> ProducerMetrics {
        let core = lock(&self.inner.core);
        let stats = core.stats();
        ProducerMetrics {
            records_delivered: stats.records_delivered,
            records_failed: stats.records_failed,
            produce_requests: stats.produce_requests,
            batches_sent: stats.batches_sent,
            batch_retries: stats.batch_retries,
            batches_split: stats.batches_split,
            buffered_bytes: core.buffered_bytes() as u64,
            requests_in_flight: core.in_flight_requests() as u64,
        }
    }

    /// Test hook, not part of the API: makes the driver task panic at its next turn, to check
    /// that a dead driver fails pending and later calls with [`Error::DriverFailed`] rather
    /// than leaving them waiting. No code path of the producer itself panics on purpose.
    #[doc(hidden)]
    pub fn inject_driver_panic(&self) {
        self.inner.panic_requested.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }
}

/// A transactional record counted in its transaction before its append: uncounted on drop
/// unless [`CountedInTransaction::keep`] says the append happened.
struct CountedInTransaction<'a>(Option<&'a Transactions>);

impl<'a> CountedInTransaction<'a> {
    fn new(txn: Option<&'a Transactions>) -> Self {
        if let Some(t) = txn {
            t.record_appended(1);
        }
        Self(txn)
    }

    fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for CountedInTransaction<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            t.record_appended(-1);
        }
    }
}

/// A record whose partition is chosen, to be appended.
struct Placed<'a> {
    tp: TopicPartition,
    data: RecordData,
    size: usize,
    delivery: Delivery,
    counted: CountedInTransaction<'a>,
}

/// Why a send has to wait, with what it holds so far.
enum Stalled<'a> {
    /// The topic's metadata is not known yet.
    Topic { topic: TopicRef<'a>, parts: Parts, delivery: Delivery },
    /// Its partition is not in the transaction yet (AddPartitionsToTxn, under v1).
    Txn { txn: &'a Transactions, tp: TopicPartition, data: RecordData, size: usize, delivery: Delivery },
    /// No room in `buffer.memory`.
    Buffer(Placed<'a>),
}

/// The delivery future of a send that asked for one.
fn expect_future(delivery: Option<DeliveryFuture>) -> DeliveryFuture {
    let Some(f) = delivery else { unreachable!("a record sent with Delivery::Future gets its future") };
    f
}

/// The topic of a record being sent: a name to look up, or a [`TopicProducer`]'s cache.
enum TopicRef<'a> {
    Name(&'a str),
    Handle(&'a TopicProducer),
}

/// Sends to one topic: [`Producer::topic`]. Its `send` looks up no topic by name: it holds
/// the interned name and the partition count, and reads the producer's metadata again only
/// after the producer learned some. Cheap to clone; clones share the producer.
#[derive(Clone)]
pub struct TopicProducer {
    producer: Producer,
    name: Arc<str>,
    /// The metadata version the partition count was read at, and the count ([`pack`]): one
    /// word, so that the two are always read as a pair.
    cached: Arc<AtomicU64>,
}

/// What [`TopicProducer::try_send`] did with a record.
#[must_use = "a record that has to wait is queued only once its wait is awaited"]
pub enum TrySend<'a> {
    /// Queued: the future of its delivery.
    Queued(DeliveryFuture),
    /// It has to wait: awaiting this queues it (or fails as `send` would); dropping it
    /// withdraws the record.
    Waiting(WaitingSend<'a>),
}

/// The rest of a send that has to wait ([`TrySend::Waiting`]): resolves to the record's
/// delivery future once it is queued. Cancel-safe, as [`TopicProducer::send`].
#[must_use = "the record is queued only once this is awaited"]
pub struct WaitingSend<'a>(Pin<Box<dyn Future<Output = Result<DeliveryFuture>> + Send + 'a>>);

impl Future for WaitingSend<'_> {
    type Output = Result<DeliveryFuture>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// A metadata version and a partition count in one word.
fn pack(version: u32, partitions: u32) -> u64 {
    (u64::from(version) << 32) | u64::from(partitions)
}

impl TopicProducer {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The producer this handle sends with.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// [`Producer::send`] to this topic; `record.topic` is not read (it may be left empty).
    ///
    /// Cancel-safe, as [`Producer::send`]: if the future is dropped before it returns, the
    /// record was not queued; once it returned `Ok`, it is queued.
    #[inline]
    pub fn send(&self, record: ProducerRecord) -> impl Future<Output = Result<DeliveryFuture>> + Send + '_ {
        // As in `Producer::send`.
        let (_, parts) = record.into_parts();
        async move { self.producer.enqueue(TopicRef::Handle(self), parts, Delivery::Future).await.map(expect_future) }
    }

    /// Queues the record at once if nothing has to wait, as librdkafka's `produce()`: for a
    /// loop that sends many records, it saves building and polling a send future per record.
    /// [`TrySend::Queued`] holds the record's delivery future. If the record has to wait (for
    /// the topic's metadata, for room in `buffer.memory`, for its partition to join the
    /// transaction), [`TrySend::Waiting`] is the rest of the send: awaiting it finishes it as
    /// [`send`](Self::send) would, and dropping it withdraws the record, which was not queued.
    /// `record.topic` is not read.
    ///
    /// Unlike `send`, it never yields to the runtime: on a current-thread runtime, a loop of
    /// `try_send` must yield now and then (`tokio::task::yield_now`) for the producer's driver
    /// to send anything before the buffer is full.
    #[inline]
    pub fn try_send(&self, record: ProducerRecord) -> Result<TrySend<'_>> {
        let (_, parts) = record.into_parts();
        Ok(match self.producer.try_enqueue(TopicRef::Handle(self), parts, Delivery::Future)? {
            Ok(delivery) => TrySend::Queued(expect_future(delivery)),
            Err(stalled) => self.waiting(stalled),
        })
    }

    /// The rest of a [`try_send`](Self::try_send) that has to wait. Out of line: `try_send` is
    /// inlined (a record moved into a call was a `memcpy` call per record), this future is KiBs.
    #[cold]
    fn waiting<'a>(&'a self, stalled: Stalled<'a>) -> TrySend<'a> {
        TrySend::Waiting(WaitingSend(Box::pin(async move {
            self.producer.enqueue_stalled(stalled).await.map(expect_future)
        })))
    }

    /// [`Producer::send_nowait`] to this topic: no delivery future; a failure is reported by
    /// the producer's next [`flush`](Producer::flush). `record.topic` is not read.
    ///
    /// Cancel-safe, as [`Producer::send_nowait`].
    #[inline]
    pub fn send_nowait(&self, record: ProducerRecord) -> impl Future<Output = Result<()>> + Send + '_ {
        // As in `Producer::send`.
        let (_, parts) = record.into_parts();
        async move { self.producer.enqueue(TopicRef::Handle(self), parts, Delivery::Detached).await.map(drop) }
    }

    /// The interned name and the partition count: cached, or read again (without waiting) if
    /// the producer learnt metadata since; `None` if the producer does not know the topic.
    fn cached_partitions(&self, inner: &Inner) -> Option<(Arc<str>, u32)> {
        let version = inner.topics_version.load(Ordering::Acquire);
        let cached = self.cached.load(Ordering::Acquire);
        if (cached >> 32) as u32 == version {
            return Some((self.name.clone(), cached as u32));
        }
        // The producer learnt metadata since (of any topic): the topic's count is read again if
        // the producer knows the topic, so that a send waits only when it does not (and
        // `try_send` hands back no wait for a refresh of another topic's metadata).
        let (_, partitions) = inner.known_partitions(&self.name)?;
        self.cached.store(pack(version, partitions), Ordering::Release);
        Some((self.name.clone(), partitions))
    }

    /// The interned name and the partition count, looked up again.
    async fn refresh_partitions(&self, inner: &Inner, deadline: tokio::time::Instant) -> Result<(Arc<str>, u32)> {
        let version = inner.topics_version.load(Ordering::Acquire);
        let meta = inner.topic_meta(&self.name, deadline).await?;
        let partitions = meta.leaders.len() as u32;
        self.cached.store(pack(version, partitions), Ordering::Release);
        Ok((self.name.clone(), partitions))
    }
}

/// Waits for the driver task; if it ended other than by returning (a panic), fails everything
/// pending and every later call with [`Error::DriverFailed`].
async fn watch(inner: Arc<Inner>, driver: tokio::task::JoinHandle<()>) {
    let Err(e) = driver.await else { return };
    let reason = if e.is_panic() {
        let panic = e.into_panic();
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked".into())
    } else {
        "cancelled (its runtime shut down)".into()
    };
    tracing::error!(%reason, "the producer driver died; failing every pending record");
    let _ = inner.failure.set(Error::DriverFailed { driver: "producer", reason });
    lock(&inner.core).fail_all(ProduceFailure::Closed);
    inner.deliver_completions();
    inner.driver_finished.store(true, Ordering::Release);
    inner.driver_done.notify_waiters();
    inner.progress.notify_waiters();
    if let Some(t) = &inner.txn {
        t.notify();
    }
}

impl Inner {
    /// The partition of a record of `size` bytes for `topic` (of `partitions` partitions): the
    /// caller's, the key's hash, or the sticky partition, counting the record in it.
    fn choose_partition(
        &self,
        partitioner: &mut StickyPartitioner,
        topic: &Arc<str>,
        partitions: u32,
        explicit: Option<i32>,
        data: &RecordData,
        size: usize,
    ) -> Result<i32> {
        match (explicit, &data.key) {
            (Some(p), _) if p >= 0 && (p as u32) < partitions => Ok(p),
            (Some(p), _) => Err(Error::misuse("send", format!("partition {p} of {topic} is not in [0, {partitions})"))),
            (None, Some(key)) if !self.config.partitioner_ignore_keys => Ok(partition_for_key(key, partitions)),
            // The partitions with a leader matter only when the sticky partition changes.
            (None, _) => Ok(partitioner.sticky_append(topic, partitions, size, || {
                // Called under the core's lock, which the driver takes while it holds `topics`
                // for reading: waiting here behind a writer queued for `topics` would deadlock
                // the three, so a busy lock leaves the pick to every partition this once.
                let topics = match self.topics.try_read() {
                    Ok(topics) => topics,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(TryLockError::WouldBlock) => return Vec::new(),
                };
                topics
                    .get(topic)
                    .map(|meta| (0..partitions as i32).filter(|p| meta.leaders.get(*p as usize) >= Some(&0)).collect())
                    .unwrap_or_default()
            })),
        }
    }

    fn known_topic(&self, topic: &str) -> Option<Arc<TopicMeta>> {
        read(&self.topics).get(topic).cloned()
    }

    /// The interned name and partition count of a topic the producer knows, read under the
    /// lock: a send takes and drops no handle on the topic's metadata.
    fn known_partitions(&self, topic: &str) -> Option<(Arc<str>, u32)> {
        read(&self.topics).get(topic).map(|meta| meta.name_and_partitions())
    }

    async fn topic_meta(&self, topic: &str, deadline: tokio::time::Instant) -> Result<Arc<TopicMeta>> {
        if let Some(m) = self.known_topic(topic) {
            return Ok(m);
        }
        let mut backoff = Backoff::new(self.config.retry_backoff, self.config.retry_backoff_max);
        loop {
            let asked_at = self.failures.load(Ordering::Acquire);
            let last_error = match self.client.metadata(Some(&[topic])).await {
                Ok(response) => {
                    self.learn(&response, asked_at);
                    if let Some(m) = read(&self.topics).get(topic) {
                        return Ok(m.clone());
                    }
                    let listed = response.topics.iter().find(|t| t.name.as_deref() == Some(topic));
                    // Listed without an error but without partitions (a broker that has not
                    // learnt them yet): waited out as an unknown topic, not failed with NONE.
                    let (code, message) = match listed.map(|t| t.error_code) {
                        Some(ErrorCode::NONE) => {
                            (ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, Some("listed without partitions"))
                        }
                        Some(code) => (code, None),
                        None => (ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, None),
                    };
                    let err = Error::broker(code, message, format!("metadata for topic {topic}"));
                    if !code.is_retriable() {
                        return Err(err);
                    }
                    err
                }
                Err(e) if e.is_retriable() => e,
                Err(e) => return Err(e),
            };
            let delay = backoff.next_delay();
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(last_error);
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Learns the partition leaders of a Metadata answer to a request sent when
    /// [`Inner::failures`] was `asked_at`. Answers can arrive out of order (a refresh and a
    /// `send` of a new topic ask concurrently, of different brokers), so a partition keeps what
    /// it knows when the answer is older: a leader epoch below the known one, or, for a
    /// partition whose leader was found unresponsive after the request was sent, no newer epoch
    /// (that answer may still name the unresponsive broker; the partition stays leaderless and a
    /// later refresh names its leader).
    fn learn(&self, response: &MetadataResponse, asked_at: u64) {
        let mut topics = write(&self.topics);
        for t in &response.topics {
            let Some(name) = t.name.as_deref() else { continue };
            if t.error_code != ErrorCode::NONE || t.partitions.is_empty() {
                continue;
            }
            // A topic of n partitions numbers them 0..n: the table is sized by the answer's own
            // length, never by an index a broker sent; an index out of that range is ignored.
            let n = t.partitions.len();
            let (mut leaders, mut epochs, mut failed_at) = (vec![-1; n], vec![-1; n], vec![0; n]);
            let known = topics.get(name);
            for p in &t.partitions {
                let Some(i) = usize::try_from(p.partition_index).ok().filter(|i| *i < n) else { continue };
                let leader = if p.error_code == ErrorCode::NONE { p.leader_id } else { -1 };
                let was = known.and_then(|m| Some((*m.leaders.get(i)?, *m.epochs.get(i)?, *m.failed_at.get(i)?)));
                (leaders[i], epochs[i], failed_at[i]) = merge_leader(was, leader, p.leader_epoch, asked_at);
            }
            // A topic already known keeps its interned name (a handle holds it).
            let name: Arc<str> = known.map_or_else(|| name.into(), |m| m.name.clone());
            topics.insert(name.clone(), Arc::new(TopicMeta { name, id: t.topic_id, leaders, epochs, failed_at }));
        }
        self.topics_version.fetch_add(1, Ordering::AcqRel);
    }

    fn leader_of(&self) -> impl Fn(&TopicPartition) -> Option<i32> + '_ {
        let topics = read(&self.topics);
        move |tp: &TopicPartition| {
            topics.get(&tp.topic).and_then(|t| t.leaders.get(tp.partition as usize).copied()).filter(|l| *l >= 0)
        }
    }

    /// Broker `node` left a request without an answer (request timeout, broken connection) or
    /// could not be connected to. A broker that stopped answering has usually lost its
    /// leaderships to other brokers by the time its request times out, and reconnecting to it
    /// may not fail fast (a stopped process still accepts connections, then leaves the
    /// handshake unanswered for another request timeout). So the partitions it led are marked
    /// leaderless, which keeps the core from draining them until a metadata refresh, started
    /// here, names their leader: the new one if the leadership moved, else this broker again.
    fn node_failed(self: &Arc<Self>, node: i32) {
        let mut affected = Vec::new();
        {
            let mut topics = write(&self.topics);
            let failure = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
            for meta in topics.values_mut() {
                if meta.leaders.contains(&node) {
                    let mut failed_at = meta.failed_at.clone();
                    let leaders = meta
                        .leaders
                        .iter()
                        .zip(&mut failed_at)
                        .map(|(&l, failed)| {
                            if l != node {
                                return l;
                            }
                            *failed = failure;
                            -1
                        })
                        .collect();
                    *meta = Arc::new(TopicMeta {
                        name: meta.name.clone(),
                        id: meta.id,
                        leaders,
                        epochs: meta.epochs.clone(),
                        failed_at,
                    });
                    affected.push(meta.name.clone());
                }
            }
            self.topics_version.fetch_add(1, Ordering::AcqRel);
        }
        tracing::debug!(
            node,
            topics = affected.len(),
            "broker left a request unanswered: its partitions wait for metadata"
        );
        // If a refresh is already under way this one is skipped; the leaderless partitions then
        // ask for another when it ends.
        self.refresh_metadata(affected);
    }

    /// Refreshes the metadata of `topics` in the background (one refresh at a time).
    fn refresh_metadata(self: &Arc<Self>, topics: Vec<Arc<str>>) {
        if topics.is_empty() || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let names: Vec<&str> = topics.iter().map(|t| &**t).collect();
            let asked_at = inner.failures.load(Ordering::Acquire);
            let complete = match inner.client.metadata(Some(&names)).await {
                Ok(r) => {
                    inner.learn(&r, asked_at);
                    // Batches that waited for a leader can go now, not after the backoff.
                    inner.wake.notify_one();
                    let known = read(&inner.topics);
                    names.iter().all(|t| known.get(*t).is_some_and(|m| m.leaders.iter().all(|l| *l >= 0)))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "metadata refresh failed");
                    false
                }
            };
            // Refreshes are spaced by the retry backoff, so a leaderless partition is not polled
            // in a tight loop; it grows (with jitter) while refreshes leave partitions leaderless
            // or fail, and starts again from retry.backoff.ms after one that names every leader.
            let delay = {
                let mut backoff = lock(&inner.refresh_backoff);
                if complete {
                    backoff.reset();
                }
                backoff.next_delay()
            };
            tokio::time::sleep(delay).await;
            inner.refreshing.store(false, Ordering::Release);
            inner.wake.notify_one();
        });
    }

    /// Hands the core's completed records to their delivery futures. A transaction that can
    /// only be aborted fails its queued records at once (as they settle, it may become so).
    pub(super) fn deliver_completions(&self) {
        loop {
            let completed: Vec<_> = {
                let mut core = lock(&self.core);
                std::iter::from_fn(|| core.poll_batch()).collect()
            };
            self.deliver(completed);
            match &self.txn {
                Some(t) if t.discard_queued_if_aborting(self) => continue,
                _ => return,
            }
        }
    }

    /// Hands completed batches, taken from the core, to their records' delivery futures (and a
    /// failure of records sent without one to the next flush).
    fn deliver(&self, completed: Vec<CompletedBatch<Deliveries>>) {
        if completed.is_empty() {
            return;
        }
        if let Some(t) = &self.txn {
            t.records_completed(
                completed.iter().flat_map(|b| std::iter::repeat_n(b.result.as_ref().map(|_| ()), b.sink.len())),
            );
        }
        for CompletedBatch { topic_partition, mut sink, result } in completed {
            let failure = match result {
                Ok(written) => {
                    sink.settle(Outcome::Written(topic_partition, written));
                    continue;
                }
                Err(f) => f,
            };
            if sink.detached > 0 {
                lock(&self.detached_failure).get_or_insert_with(|| self.failure_to_error(failure.clone()));
            }
            match failure {
                ProduceFailure::RecordTooLarge { size, .. } if sink.shared.is_some() => {
                    self.fail_too_large(sink, topic_partition, size);
                }
                f => sink.settle(Outcome::Failed(self.failure_to_error(f))),
            }
        }
        self.progress.notify_waiters();
    }

    fn failure_to_error(&self, failure: ProduceFailure) -> Error {
        match failure {
            ProduceFailure::Broker { code, message } => Error::Broker { code, message, context: "produce".into() },
            ProduceFailure::DeliveryTimeout => {
                Error::Timeout { what: "record delivery".into(), after: self.config.delivery_timeout }
            }
            ProduceFailure::RecordTooLarge { topic_partition, .. } => {
                Error::broker(ErrorCode::MESSAGE_TOO_LARGE, None, format!("produce to {topic_partition}"))
            }
            ProduceFailure::TransactionAborted => Error::TransactionAborted,
            _ => self.failure.get().cloned().unwrap_or_else(closed),
        }
    }

    /// Fails a record the broker refused as too large although it was alone in its batch, with
    /// the limit it broke: the topic's `max.message.bytes` (which is the broker's
    /// `message.max.bytes` unless the topic overrides it), looked up with DescribeConfigs. If
    /// the lookup fails the broker's MESSAGE_TOO_LARGE is reported as it is.
    fn fail_too_large(&self, mut sink: Deliveries, tp: TopicPartition, size: usize) {
        let admin = Admin::new(self.client.clone()).with_timeout(self.config.request_timeout);
        tokio::spawn(async move {
            let resource = ConfigResource::topic(&*tp.topic);
            let limit = admin.describe_configs(std::slice::from_ref(&resource)).await.ok().and_then(|configs| {
                let entry = configs.first()?.get("max.message.bytes")?;
                let max = entry.value.as_deref()?.parse::<usize>().ok()?;
                let name =
                    if entry.source == ConfigSource::TopicConfig { "max.message.bytes" } else { "message.max.bytes" };
                Some((max, name))
            });
            let error = match limit {
                Some((max, limit)) => Error::RecordTooLarge {
                    topic: tp.topic.to_string(),
                    partition: Some(tp.partition),
                    size,
                    max,
                    limit,
                },
                None => Error::broker(ErrorCode::MESSAGE_TOO_LARGE, None, format!("produce to {tp}")),
            };
            sink.settle(Outcome::Failed(error));
        });
    }

    /// The failure [`Producer::send_nowait`]'s records left for a flush, taken.
    fn take_detached_failure(&self) -> Result<()> {
        lock(&self.detached_failure).take().map_or(Ok(()), Err)
    }

    /// `Err(DriverFailed)` once the driver task has died.
    pub(super) fn check_alive(&self) -> Result<()> {
        self.failure.get().map_or(Ok(()), |e| Err(e.clone()))
    }
}

/// Requests with at least this many bytes to compress are sealed on tokio's blocking pool
/// rather than on an async worker (as the consumer decompresses large fetches).
const SEAL_BLOCKING_THRESHOLD: usize = 64 * 1024;

/// The driver task: turns the core's ready batches into Produce requests, handed to each
/// broker's dispatch task, and responses into completions, until the producer is closed and
/// idle. It never waits on a broker itself. Each turn takes the core's lock once: answers in,
/// requests and completions out.
async fn drive(inner: Arc<Inner>) {
    let (results_tx, mut results_rx) = mpsc::unbounded_channel::<(u64, RequestOutcome)>();
    let mut dispatchers: HashMap<i32, mpsc::UnboundedSender<Drained>> = HashMap::new();
    // Owned here, so that a dispatch task's panic becomes the driver's (and is reported).
    let mut dispatch_tasks = JoinSet::new();
    let mut producer_id_backoff = Backoff::new(inner.config.retry_backoff, inner.config.retry_backoff_max);
    let mut outcomes: Vec<(u64, RequestOutcome)> = Vec::new();
    loop {
        if inner.panic_requested.load(Ordering::Acquire) {
            panic!("producer driver panic injected by Producer::inject_driver_panic");
        }
        // A transaction that can only be aborted sends nothing more: its queued records fail
        // now rather than at their delivery timeout.
        if inner.txn.is_some() {
            inner.deliver_completions();
        }
        let now = Instant::now();
        let mut refresh = Vec::new();
        let (needs_producer_id, ready, drained, completed, idle) = {
            let leader_of = inner.leader_of();
            let mut core = lock(&inner.core);
            for (id, outcome) in outcomes.drain(..) {
                if let RequestOutcome::Response(rs) = &outcome {
                    refresh
                        .extend(rs.iter().filter(|r| needs_metadata(r.error)).map(|r| r.topic_partition.topic.clone()));
                }
                core.handle_response(id, outcome, now);
            }
            // A transactional producer's id and epoch come from its transaction coordinator,
            // asked by `init_transactions` and after an abort, never by the driver.
            let needs_producer_id = inner.config.transactional_id.is_none() && core.needs_producer_id();
            let mut drained = Vec::new();
            let ready = if needs_producer_id {
                Default::default()
            } else {
                let ready = core.ready(now, &leader_of);
                for &node in &ready.nodes {
                    while let Some(d) = core.drain(node, now, &leader_of) {
                        drained.push(d);
                    }
                }
                ready
            };
            let completed: Vec<_> = std::iter::from_fn(|| core.poll_batch()).collect();
            (needs_producer_id, ready, drained, completed, core.is_idle())
        };
        inner.deliver(completed);
        if inner.txn.is_some() {
            // A completion just delivered may have made the transaction abortable: its queued
            // records fail now, not at the next turn (which may be a delivery timeout away).
            inner.deliver_completions();
        }
        if needs_producer_id {
            match init_producer_id(&inner).await {
                Ok((id, epoch)) => {
                    producer_id_backoff.reset();
                    lock(&inner.core).set_producer_id(id, epoch);
                }
                Err(e) if e.is_retriable() && !inner.closing.load(Ordering::Acquire) => {
                    tracing::debug!(error = %e, "InitProducerId failed; retrying");
                    tokio::time::sleep(producer_id_backoff.next_delay()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot get a producer id; failing buffered records");
                    lock(&inner.core).abort_unsent();
                    inner.deliver_completions();
                    if inner.closing.load(Ordering::Acquire) {
                        break;
                    }
                    tokio::time::sleep(inner.config.retry_backoff_max).await;
                }
            }
            continue;
        }
        for d in drained {
            let node = d.node;
            let queue = dispatchers.entry(node).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                dispatch_tasks.spawn(dispatch_to(inner.clone(), node, rx, results_tx.clone()));
                tx
            });
            if let Err(mpsc::error::SendError(d)) = queue.send(d) {
                let _ = results_tx.send((d.id, RequestOutcome::Failed));
            }
        }
        refresh.extend(ready.unknown_leaders.iter().map(|tp| tp.topic.clone()));
        refresh.sort_unstable();
        refresh.dedup();
        inner.refresh_metadata(refresh);
        if idle {
            inner.progress.notify_waiters();
            if inner.closing.load(Ordering::Acquire) {
                break;
            }
        }
        let wakeup = ready
            .next_wakeup
            .map_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1), tokio::time::Instant::from_std);
        tokio::select! {
            _ = inner.wake.notified() => {}
            // Every answer that came in, in one turn.
            _ = results_rx.recv_many(&mut outcomes, 1024) => {}
            Some(ended) = dispatch_tasks.join_next() => {
                // Dispatch tasks run until the driver drops their queue: one that ended panicked.
                if let Err(e) = ended {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }
            _ = tokio::time::sleep_until(wakeup) => {}
        }
    }
    inner.deliver_completions();
    inner.driver_finished.store(true, Ordering::Release);
    inner.driver_done.notify_waiters();
    inner.progress.notify_waiters();
}

/// One broker's dispatch task: seals each request's batches (compression happens here, outside
/// the core's lock, and on the blocking pool for large requests), connects when it has no live
/// connection, and submits; the outcomes come back through `results`. It takes every request
/// queued since its last turn at once and starts sealing them all (the large ones in parallel on
/// the blocking pool), then submits them in the order they came, each once its sealing is done:
/// requests to the broker keep their order, so a partition's batches reach it in sequence order.
/// Only this broker's requests wait while it connects or seals, and its connection is kept
/// here, so that sending to it does not touch the cluster's connection pool while that is busy
/// with another broker.
async fn dispatch_to(
    inner: Arc<Inner>,
    node: i32,
    mut queue: mpsc::UnboundedReceiver<Drained>,
    results: mpsc::UnboundedSender<(u64, RequestOutcome)>,
) {
    let mut conn: Option<Arc<Connection>> = None;
    let mut requests = Vec::new();
    while queue.recv_many(&mut requests, 64).await > 0 {
        let sealing: Vec<_> = requests.drain(..).map(|d| (d.id, d.acks, d.timeout_ms, Sealing::start(d))).collect();
        for (id, acks, timeout_ms, sealed) in sealing {
            let Some(batches) = sealed.finish().await else {
                let _ = results.send((id, RequestOutcome::Failed));
                continue;
            };
            let live = match conn.as_ref().filter(|c| !c.is_closed()) {
                Some(c) => c.clone(),
                None => match inner.client.broker(node).await {
                    Ok(c) => {
                        conn = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::debug!(node, error = %e, "cannot reach partition leader");
                        inner.node_failed(node);
                        let _ = results.send((id, RequestOutcome::Failed));
                        continue;
                    }
                },
            };
            submit(&inner, &live, node, id, acks, timeout_ms, batches, &results);
        }
    }
}

/// A request's batches being sealed: where the dispatch task runs when there is little to
/// compress, on tokio's blocking pool from [`SEAL_BLOCKING_THRESHOLD`] bytes on, so that
/// compressing a large request never holds up the tasks of an async worker.
enum Sealing {
    Done(Vec<(TopicPartition, Bytes)>),
    Blocking(tokio::task::JoinHandle<Vec<(TopicPartition, Bytes)>>),
}

impl Sealing {
    fn start(d: Drained) -> Self {
        if d.bytes_to_compress() < SEAL_BLOCKING_THRESHOLD {
            Self::Done(d.seal())
        } else {
            Self::Blocking(tokio::task::spawn_blocking(move || d.seal()))
        }
    }

    /// The sealed batches; `None` if the runtime is shutting down.
    async fn finish(self) -> Option<Vec<(TopicPartition, Bytes)>> {
        match self {
            Self::Done(batches) => Some(batches),
            Self::Blocking(handle) => match handle.await {
                Ok(batches) => Some(batches),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => None,
            },
        }
    }
}

/// Sends one sealed request on `conn` (to broker `node`) without waiting for its answer, which
/// comes back through `results`. A request left without an answer (timeout, broken connection)
/// reports the broker failed before its outcome goes back, so that the retried batches wait for
/// fresh metadata rather than go back to the same broker.
#[allow(clippy::too_many_arguments)]
fn submit(
    inner: &Arc<Inner>,
    conn: &Connection,
    node: i32,
    id: u64,
    acks: i16,
    timeout_ms: i32,
    batches: Vec<(TopicPartition, Bytes)>,
    results: &mpsc::UnboundedSender<(u64, RequestOutcome)>,
) {
    let version = match conn.version_for::<ProduceRequest>() {
        // Produce v12+ adds a transaction's partitions implicitly; only under transactions v2
        // (KIP-890) may a transactional producer skip AddPartitionsToTxn.
        Ok(v) if inner.config.transactional_id.is_some() && !inner.transactions_v2.load(Ordering::Acquire) => v.min(11),
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "broker cannot take Produce requests");
            let _ = results.send((id, RequestOutcome::Failed));
            return;
        }
    };
    let topic_ids: HashMap<Arc<str>, Uuid> = {
        let topics = read(&inner.topics);
        batches.iter().filter_map(|(tp, _)| topics.get(&tp.topic).map(|m| (tp.topic.clone(), m.id))).collect()
    };
    let mut request = produce_request(acks, timeout_ms, &batches, &topic_ids);
    request.transactional_id = inner.config.transactional_id.as_deref().map(Into::into);
    if acks == 0 {
        let outcome = match conn.send_without_response(&request, version) {
            Ok(()) => RequestOutcome::Response(
                batches
                    .iter()
                    .map(|(tp, _)| PartitionResponse {
                        topic_partition: tp.clone(),
                        error: ErrorCode::NONE,
                        base_offset: -1,
                        log_append_time: -1,
                        message: None,
                    })
                    .collect(),
            ),
            Err(_) => {
                inner.node_failed(node);
                RequestOutcome::Failed
            }
        };
        let _ = results.send((id, outcome));
        return;
    }
    // The batches copied into the frame (the larger ones are written from where they are), and a
    // generous allowance for the request's other fields per partition.
    let copied = |b: &Bytes| if b.len() >= RECORDS_PART_MIN { 0 } else { b.len() };
    let size = batches.iter().map(|(tp, b)| copied(b) + tp.topic.len() + 64).sum::<usize>() + 256;
    match conn.submit_sized(&request, version, size) {
        Ok(pending) => {
            let (inner, results) = (inner.clone(), results.clone());
            let by_id: HashMap<Uuid, Arc<str>> = topic_ids.into_iter().map(|(n, i)| (i, n)).collect();
            tokio::spawn(async move {
                let outcome = match pending.response().await {
                    Ok(r) => RequestOutcome::Response(partition_responses(r, &by_id)),
                    Err(e) => {
                        tracing::debug!(node, error = %e, "produce request failed");
                        inner.node_failed(node);
                        RequestOutcome::Failed
                    }
                };
                let _ = results.send((id, outcome));
            });
        }
        Err(_) => {
            inner.node_failed(node);
            let _ = results.send((id, RequestOutcome::Failed));
        }
    }
}

fn produce_request(
    acks: i16,
    timeout_ms: i32,
    batches: &[(TopicPartition, Bytes)],
    topic_ids: &HashMap<Arc<str>, Uuid>,
) -> ProduceRequest {
    let topics = super::by_topic(batches.iter().map(|(tp, batch)| {
        (
            tp.topic.clone(),
            PartitionProduceData { index: tp.partition, records: Some(batch.clone()), ..Default::default() },
        )
    }))
    .into_iter()
    .map(|(name, partition_data)| TopicProduceData {
        topic_id: topic_ids.get(&name).copied().unwrap_or_default(),
        name: (&*name).into(),
        partition_data,
        ..Default::default()
    })
    .collect();
    ProduceRequest { acks, timeout_ms, topic_data: topics, ..Default::default() }
}

fn partition_responses(r: ProduceResponse, by_id: &HashMap<Uuid, Arc<str>>) -> Vec<PartitionResponse> {
    let mut out = Vec::new();
    for t in r.responses {
        // v13+ names topics by id only.
        let name: Arc<str> = by_id.get(&t.topic_id).cloned().unwrap_or_else(|| (&*t.name).into());
        for p in t.partition_responses {
            out.push(PartitionResponse {
                topic_partition: TopicPartition::new(name.clone(), p.index),
                error: p.error_code,
                base_offset: p.base_offset,
                log_append_time: p.log_append_time_ms,
                message: p.error_message.map(|m| m.to_string()),
            });
        }
    }
    out
}

/// A partition's `(leader, leader epoch, failed at)` after an answer naming `leader` at `epoch`
/// to a request sent when the failure count was `asked_at`, given what was known (`was`): the
/// answer is ignored if its epoch is below the known one, or if the known leader was found
/// unresponsive after the request was sent and the answer shows no newer epoch.
fn merge_leader(was: Option<(i32, i32, u64)>, leader: i32, epoch: i32, asked_at: u64) -> (i32, i32, u64) {
    let stale = match was {
        Some((_, known, _)) if epoch >= 0 && known >= 0 && epoch < known => true,
        Some((_, known, failed)) => failed > asked_at && !(epoch >= 0 && known >= 0 && epoch > known),
        None => false,
    };
    match (stale, was) {
        (true, Some(was)) => was,
        _ => (leader, epoch, 0),
    }
}

fn needs_metadata(code: ErrorCode) -> bool {
    code == ErrorCode::NOT_LEADER_OR_FOLLOWER
        || code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        || code == ErrorCode::LEADER_NOT_AVAILABLE
        || code == ErrorCode::FENCED_LEADER_EPOCH
        || code == ErrorCode::UNKNOWN_LEADER_EPOCH
        || code == ErrorCode::KAFKA_STORAGE_ERROR
}

async fn init_producer_id(inner: &Inner) -> Result<(i64, i16)> {
    let request = InitProducerIdRequest {
        transactional_id: None,
        transaction_timeout_ms: -1,
        producer_id: -1,
        producer_epoch: -1,
        ..Default::default()
    };
    let response = inner.client.send_any(&request).await?;
    if response.error_code != ErrorCode::NONE {
        return Err(Error::broker(response.error_code, None, "InitProducerId"));
    }
    Ok((response.producer_id, response.producer_epoch))
}

fn closed() -> Error {
    Error::Closed { broker: "producer".into() }
}

/// The wall clock in milliseconds since the epoch, for a record's timestamp.
#[cfg(unix)]
fn now_millis() -> i64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    now.tv_sec * 1000 + now.tv_nsec / 1_000_000
}

#[cfg(not(unix))]
fn now_millis() -> i64 {
    // Seconds and the millisecond within them: `as_millis` divides in 128 bits.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64 * 1000 + i64::from(d.subsec_millis()))
}

// Every update under these locks is a single assignment or a call into the core that leaves
// it consistent, so a poisoned lock is still usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    /// A record's default timestamp is the wall clock's milliseconds since the epoch, as
    /// `SystemTime` tells them.
    #[test]
    fn the_record_clock_is_the_wall_clock_in_milliseconds() {
        let millis = |t: SystemTime| t.duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as i64;
        for _ in 0..1000 {
            let before = millis(SystemTime::now());
            let now = now_millis();
            let after = millis(SystemTime::now());
            assert!((before..=after).contains(&now), "{before} <= {now} <= {after}");
        }
    }

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    fn poll(f: &mut DeliveryFuture, flag: &Arc<Flag>) -> Poll<Result<RecordMetadata>> {
        let waker = Waker::from(flag.clone());
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_metadata_answer_older_than_what_is_known_is_ignored() {
        // (leader, epoch, failed at): nothing known, a first answer is taken.
        assert_eq!(merge_leader(None, 1, 0, 0), (1, 0, 0));
        // A newer epoch or the same one replaces a known leader; an older one does not.
        assert_eq!(merge_leader(Some((1, 3, 0)), 2, 4, 0), (2, 4, 0));
        assert_eq!(merge_leader(Some((1, 3, 0)), 1, 3, 0), (1, 3, 0));
        assert_eq!(merge_leader(Some((2, 4, 0)), 1, 3, 0), (2, 4, 0), "a stale epoch");
        // Leader 1 was found unresponsive at failure 5: an answer asked before that, with no
        // newer epoch, leaves the partition leaderless; one asked since, or with a newer epoch
        // (an election), names its leader.
        assert_eq!(merge_leader(Some((-1, 3, 5)), 1, 3, 4), (-1, 3, 5), "asked before the failure");
        assert_eq!(merge_leader(Some((-1, 3, 5)), 1, -1, 4), (-1, 3, 5), "no epoch: older for all we know");
        assert_eq!(merge_leader(Some((-1, 3, 5)), 1, 3, 5), (1, 3, 0), "asked after the failure");
        assert_eq!(merge_leader(Some((-1, 3, 5)), 2, 4, 4), (2, 4, 0), "an election since");
        // Brokers that send no epochs (-1): only the failure count decides.
        assert_eq!(merge_leader(Some((1, -1, 0)), 2, -1, 0), (2, -1, 0));
    }

    fn written(sink: &mut Deliveries, base_offset: i64) {
        sink.settle(Outcome::Written(TopicPartition::new("t", 0), Written { base_offset, log_append_time: -1 }));
    }

    #[test]
    fn a_batch_result_reaches_its_futures_and_wakes_them() {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let mut sink = Deliveries::default();
        let mut first = sink.push(Delivery::Future, 100).expect("a future");
        assert!(sink.push(Delivery::Detached, 101).is_none(), "a detached record has no future");
        let mut third = sink.push(Delivery::Future, 102).expect("a future");
        assert_eq!((sink.len(), sink.detached), (3, 1));
        assert!(poll(&mut first, &flag).is_pending());
        assert!(poll(&mut first, &flag).is_pending(), "polled again, it keeps its one waker");
        assert_eq!(lock(&first.result.state).wakers.len(), 1);

        written(&mut sink, 40);
        assert!(flag.0.load(Ordering::Acquire), "the waiting future was woken");
        let metadata = |f: &mut DeliveryFuture| match poll(f, &flag) {
            Poll::Ready(Ok(m)) => (m.offset, m.timestamp),
            other => panic!("{other:?}"),
        };
        // Each record's offset is the batch's base offset plus its index in the batch, and its
        // timestamp its own (the topic keeps CreateTime).
        assert_eq!(metadata(&mut first), (40, 100));
        assert_eq!(metadata(&mut third), (42, 102));

        // Log-append time replaces the records' own; acks=0 gives no offsets.
        let mut sink = Deliveries::default();
        let mut f = sink.push(Delivery::Future, 5).expect("a future");
        sink.settle(Outcome::Written(TopicPartition::new("t", 0), Written { base_offset: -1, log_append_time: 9 }));
        assert_eq!(metadata(&mut f), (-1, 9));
    }

    /// A future polled while its batch is being settled on another thread is never left
    /// waiting: it either reads the outcome or registers its waker before the wake-up. (A
    /// settled batch moves its outcomes out of the lock, where a future looks first.)
    #[test]
    fn no_future_misses_the_wake_up_of_a_batch_settled_meanwhile() {
        let (to_settler, batches) = std::sync::mpsc::channel::<(Deliveries, Arc<std::sync::Barrier>)>();
        let settler = std::thread::spawn(move || {
            for (round, (mut sink, start)) in batches.into_iter().enumerate() {
                start.wait();
                // Now and then a split, so that the last of two parts completes the batch.
                if round % 2 == 0 {
                    let mut rest = sink.split_off(1);
                    written(&mut rest, 1);
                }
                written(&mut sink, 0);
            }
        });
        for round in 0..20_000 {
            let mut sink = Deliveries::default();
            let mut futures: Vec<_> = (0..2).map(|i| sink.push(Delivery::Future, i).expect("a future")).collect();
            let start = Arc::new(std::sync::Barrier::new(2));
            to_settler.send((sink, start.clone())).expect("the settler");
            start.wait();
            // A future is polled again only when woken (the other half of a split batch may
            // wake it before its own half is settled).
            for (i, f) in futures.iter_mut().enumerate() {
                loop {
                    let flag = Arc::new(Flag(AtomicBool::new(false)));
                    match poll(f, &flag) {
                        Poll::Ready(result) => {
                            assert_eq!(result.expect("written").offset, i as i64);
                            break;
                        }
                        Poll::Pending => {
                            let deadline = Instant::now() + Duration::from_secs(5);
                            while !flag.0.load(Ordering::Acquire) {
                                assert!(Instant::now() < deadline, "round {round}: future {i} never woken");
                                std::thread::yield_now();
                            }
                        }
                    }
                }
            }
        }
        drop(to_settler);
        settler.join().expect("the settler");
    }

    #[test]
    fn a_batch_dropped_without_an_outcome_fails_its_futures() {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let mut sink = Deliveries::default();
        let mut f = sink.push(Delivery::Future, 1).expect("a future");
        assert!(poll(&mut f, &flag).is_pending());
        drop(sink);
        assert!(flag.0.load(Ordering::Acquire));
        assert!(matches!(poll(&mut f, &flag), Poll::Ready(Err(Error::Closed { .. }))));
    }

    /// A batch refused as too large is split in two, and each half completes on its own: the
    /// futures of one half resolve with its outcome while the other half's still wait, and are
    /// woken when theirs comes.
    #[test]
    fn the_halves_of_a_split_batch_settle_their_own_futures() {
        let flags: Vec<_> = (0..4).map(|_| Arc::new(Flag(AtomicBool::new(false)))).collect();
        let mut sink = Deliveries::default();
        let mut futures: Vec<_> = (0..4).map(|i| sink.push(Delivery::Future, i).expect("a future")).collect();
        for (f, flag) in futures.iter_mut().zip(&flags) {
            assert!(poll(f, flag).is_pending());
        }
        let mut second = sink.split_off(2);
        assert_eq!((sink.len(), second.len()), (2, 2));

        written(&mut second, 70);
        for i in 2..4 {
            assert!(matches!(poll(&mut futures[i], &flags[i]), Poll::Ready(Ok(m)) if m.offset == 70 + i as i64 - 2));
        }
        assert!(poll(&mut futures[0], &flags[0]).is_pending(), "the first half has no outcome yet");

        flags[0].0.store(false, Ordering::Release);
        sink.settle(Outcome::Failed(Error::TransactionAborted));
        assert!(flags[0].0.load(Ordering::Acquire), "woken by its own half's outcome");
        for i in 0..2 {
            assert!(matches!(poll(&mut futures[i], &flags[i]), Poll::Ready(Err(Error::TransactionAborted))));
        }
        assert!(lock(&futures[0].result.state).wakers.is_empty(), "every half settled: the wakers are let go");
    }

    proptest::proptest! {
        /// Any mix of records with and without futures, halved any number of times (a batch
        /// refused as too large is split, as the core does, at half its records), its parts
        /// settled in any order or dropped without an outcome: every future waits until its own
        /// part is settled, then gives that part's outcome with its own offset and timestamp;
        /// a part holding a record sent without a future says so (its failure goes to the next
        /// flush); and once every part is settled the wakers are let go.
        #[test]
        fn every_future_gets_its_own_parts_outcome(
            with_futures in proptest::collection::vec(proptest::bool::ANY, 1..40),
            splits in proptest::collection::vec(0usize..1000, 0..6),
            order in proptest::collection::vec(0usize..1000, 8),
            outcomes in proptest::collection::vec(0u8..3, 8),
        ) {
            let mut sink = Deliveries::default();
            let mut futures = Vec::new();
            for (i, &with_future) in with_futures.iter().enumerate() {
                let delivery = if with_future { Delivery::Future } else { Delivery::Detached };
                match sink.push(delivery, i as i64) {
                    Some(f) => futures.push((i as u32, f)),
                    None => proptest::prop_assert!(!with_future),
                }
            }
            let mut parts = vec![sink];
            for pick in splits {
                let splittable: Vec<usize> = (0..parts.len()).filter(|&p| parts[p].len() > 1).collect();
                let Some(&p) = splittable.get(pick % splittable.len().max(1)) else { break };
                let half = parts[p].len() / 2;
                let rest = parts[p].split_off(half);
                parts.insert(p + 1, rest);
            }
            let ranges: Vec<std::ops::Range<u32>> = parts.iter().map(|d| d.first..d.first + d.len).collect();
            proptest::prop_assert_eq!(ranges[0].start, 0);
            proptest::prop_assert_eq!(ranges[ranges.len() - 1].end as usize, with_futures.len());
            proptest::prop_assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            for (d, r) in parts.iter().zip(&ranges) {
                let detached = r.clone().any(|i| !with_futures[i as usize]);
                proptest::prop_assert!(!detached || d.detached > 0, "part {:?} holds a detached record", r);
            }

            let flag = Arc::new(Flag(AtomicBool::new(false)));
            for (_, f) in &mut futures {
                proptest::prop_assert!(poll(f, &flag).is_pending());
            }
            let mut settled: Vec<Option<u8>> = vec![None; parts.len()];
            let mut remaining: Vec<(usize, Deliveries)> = parts.into_iter().enumerate().collect();
            for step in 0.. {
                if remaining.is_empty() {
                    break;
                }
                let (part, mut d) = remaining.remove(order[step % order.len()] % remaining.len());
                let kind = outcomes[part % outcomes.len()];
                flag.0.store(false, Ordering::Release);
                match kind {
                    0 => d.settle(Outcome::Written(
                        TopicPartition::new("t", 0),
                        Written { base_offset: 1000 * part as i64, log_append_time: -1 },
                    )),
                    1 => d.settle(Outcome::Failed(Error::TransactionAborted)),
                    _ => drop(d),
                }
                settled[part] = Some(kind);
                let waited = futures.iter().any(|(i, _)| ranges[part].contains(i));
                proptest::prop_assert!(!waited || flag.0.load(Ordering::Acquire), "part {} woke nobody", part);
                for (i, f) in &mut futures {
                    let Some(p) = ranges.iter().position(|r| r.contains(i)) else { unreachable!() };
                    match (settled[p], poll(f, &flag)) {
                        (None, Poll::Pending) => {}
                        (Some(0), Poll::Ready(Ok(m))) => proptest::prop_assert_eq!(
                            (m.offset, m.timestamp),
                            (1000 * p as i64 + i64::from(*i - ranges[p].start), i64::from(*i))
                        ),
                        (Some(1), Poll::Ready(Err(Error::TransactionAborted))) => {}
                        (Some(2), Poll::Ready(Err(Error::Closed { .. }))) => {}
                        (s, other) => proptest::prop_assert!(false, "record {} of a part settled {:?}: {:?}", i, s, other),
                    }
                }
            }
            if let Some((_, f)) = futures.first() {
                proptest::prop_assert!(lock(&f.result.state).wakers.is_empty());
            }
        }
    }

    /// Regression (issue #14, producer CPU and RSS): a record in flight held a delivery slot of
    /// its own (56 to 80 bytes, in a slab of 64, its mutex locked by both threads) and the core
    /// a completion handle per record. Now the batch holds counts and one shared result, made
    /// only if a record asks for a future; a record's future is a reference and three numbers.
    #[test]
    fn a_record_costs_its_batch_nothing_but_a_count() {
        let mut sink = Deliveries::default();
        for _ in 0..1000 {
            sink.push(Delivery::Detached, 0);
        }
        assert!(sink.shared.is_none(), "records without futures share no result");
        let futures: Vec<_> = (0..3).map(|_| sink.push(Delivery::Future, 0)).collect();
        assert!(futures.windows(2).all(|w| match (&w[0], &w[1]) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a.result, &b.result),
            _ => false,
        }));
        assert!(size_of::<DeliveryFuture>() <= 24, "{} bytes", size_of::<DeliveryFuture>());
        assert!(size_of::<Deliveries>() <= 24, "{} bytes", size_of::<Deliveries>());
    }
}
#[cfg(test)]
mod future_sizes {
    use super::*;

    /// The size of the future `f` returns.
    fn future_size<'a, S: 'a, A, F: Future>(_: impl FnOnce(&'a S, A) -> F) -> usize {
        size_of::<F>()
    }

    /// Regression (issue #14: `kw produce` spent a third of its CPU in memmove): the futures of
    /// the send calls were 5.7 KiB (the metadata lookup and every wait inline), and a caller
    /// wrapping one (a select, a timeout, kw's signal guard) copied it whole for each record.
    /// They are 440-464 bytes now: the record, and the synchronous path's arguments.
    #[test]
    fn regression_send_futures_are_small() {
        for (what, size) in [
            ("Producer::send", future_size(Producer::send)),
            ("Producer::send_nowait", future_size(Producer::send_nowait)),
            ("TopicProducer::send", future_size(TopicProducer::send)),
            ("TopicProducer::send_nowait", future_size(TopicProducer::send_nowait)),
        ] {
            assert!(size <= 512, "{what}'s future is {size} bytes");
        }
    }
}
