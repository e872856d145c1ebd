//! The producer: the tokio driver around [`ProducerCore`](crate::proto::producer::ProducerCore).
//!
//! `send` partitions a record, appends it to the core (the caller's task does the encoding) and
//! returns a [`DeliveryFuture`] at once; a single driver task drains ready batches into Produce
//! requests, one connection per broker, and turns responses into completions. Metadata is
//! fetched when a topic is first used and refreshed when a broker says its view is stale.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};

use super::cluster::Client;
use super::config::ProducerConfig;
use super::error::{Error, Result};
use super::transaction::Transactions;
use crate::codec::messages::init_producer_id::InitProducerIdRequest;
use crate::codec::messages::produce::{PartitionProduceData, ProduceResponse, TopicProduceData};
use crate::codec::messages::{MetadataResponse, ProduceRequest};
use crate::codec::record_batch::Header;
use crate::codec::{ErrorCode, Uuid};
use crate::proto::partitioner::{partition_for_key, StickyPartitioner};
use crate::proto::producer::{
    AppendError, CoreConfig, Drained, PartitionResponse, ProduceFailure, ProducerCore, RecordData, RecordMetadata,
    RequestOutcome, TopicPartition,
};

/// A record to send.
#[derive(Clone, Debug, Default)]
pub struct ProducerRecord {
    pub topic: String,
    /// An explicit partition; otherwise the key's hash or the sticky partitioner decides.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// Milliseconds since the epoch; the time of `send` if not given.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self { topic: topic.into(), value: Some(value.into()), ..Default::default() }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn header(mut self, key: &str, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header { key: key.into(), value: Some(value.into()) });
        self
    }

    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }
}

type Completion = oneshot::Sender<Result<RecordMetadata>>;

/// Resolves when the record is acknowledged (or has failed for good).
#[must_use = "a delivery future tells whether the record was written"]
pub struct DeliveryFuture(oneshot::Receiver<Result<RecordMetadata>>);

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or_else(|_| Err(closed())))
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
    pub(super) config: ProducerConfig,
    pub(super) core: Mutex<ProducerCore<Completion>>,
    partitioner: Mutex<StickyPartitioner>,
    topics: RwLock<HashMap<Arc<str>, Arc<TopicMeta>>>,
    /// Wakes the driver: records appended, flush or close asked, metadata learned.
    pub(super) wake: Notify,
    /// Signals that buffer space was freed or the producer became idle.
    pub(super) progress: Notify,
    closing: AtomicBool,
    refreshing: AtomicBool,
    driver_done: Notify,
    pub(super) driver_finished: AtomicBool,
    /// Set by the transaction layer when the open transaction runs KIP-890 transactions v2.
    pub(super) transactions_v2: AtomicBool,
    /// The transactional part, with a `transactional.id`.
    pub(super) txn: Option<Transactions>,
}

#[derive(Debug)]
struct TopicMeta {
    name: Arc<str>,
    id: Uuid,
    /// Leader node of each partition, -1 where there is none.
    leaders: Vec<i32>,
}

impl Producer {
    /// Connects to the cluster and starts the driver. An idempotent producer gets its producer
    /// id before the first batch is sent.
    pub async fn new(config: ProducerConfig) -> Result<Self> {
        let config = config.validated()?;
        let client = Client::connect(config.client_config()).await?;
        let core = ProducerCore::new(CoreConfig {
            batch_size: config.batch_size,
            linger: config.linger,
            compression: config.compression,
            max_request_size: config.max_request_size,
            buffer_memory: config.buffer_memory,
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
        let partitioner = StickyPartitioner::new(config.batch_size, seed).with_adaptive(config.partitioner_adaptive);
        let inner = Arc::new(Inner {
            client,
            core: Mutex::new(core),
            partitioner: Mutex::new(partitioner),
            topics: RwLock::new(HashMap::new()),
            wake: Notify::new(),
            progress: Notify::new(),
            closing: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
            driver_done: Notify::new(),
            driver_finished: AtomicBool::new(false),
            transactions_v2: AtomicBool::new(false),
            txn: config.transactional_id.clone().map(|id| {
                Transactions::new(id, config.transaction_timeout, config.retry_backoff, config.retry_backoff_max)
            }),
            config,
        });
        tokio::spawn(drive(inner.clone()));
        Ok(Self { _last_handle: Arc::new(StopWhenIdle(inner.clone())), inner })
    }

    /// Queues a record and returns a future of its delivery. Waits (up to `max.block.ms`) only
    /// for the topic's metadata and for room in `buffer.memory`.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let inner = &self.inner;
        if inner.closing.load(Ordering::Acquire) {
            return Err(closed());
        }
        let deadline = tokio::time::Instant::now() + inner.config.max_block;
        let meta = inner.topic_meta(&record.topic, deadline).await?;
        let partitions = meta.leaders.len() as u32;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) if p >= 0 && (p as u32) < partitions => p,
            (Some(p), _) => {
                return Err(Error::misuse(
                    "send",
                    format!("partition {p} of {} is not in [0, {partitions})", record.topic),
                ))
            }
            (None, Some(key)) if !inner.config.partitioner_ignore_keys => partition_for_key(key, partitions),
            (None, _) => {
                let available: Vec<i32> = (0..partitions as i32).filter(|p| meta.leaders[*p as usize] >= 0).collect();
                lock(&inner.partitioner).partition(&meta.name, partitions, &available)
            }
        };
        let tp = TopicPartition::new(meta.name.clone(), partition);
        if let Some(t) = &inner.txn {
            t.before_send(inner, &tp).await?;
        }
        let timestamp = record.timestamp.unwrap_or_else(now_millis);
        let mut data = RecordData { key: record.key, value: record.value, headers: record.headers, timestamp };
        let (tx, rx) = oneshot::channel();
        let mut completion = tx;
        // Counted before the append, so that its completion can never come first.
        if let Some(t) = &inner.txn {
            t.record_appended(1);
        }
        let not_appended = || {
            if let Some(t) = &inner.txn {
                t.record_appended(-1);
            }
        };
        loop {
            let size = data.size_estimate();
            let result = lock(&inner.core).append(&tp, data, completion, Instant::now());
            match result {
                Ok(wake) => {
                    if record.partition.is_none() {
                        lock(&inner.partitioner).record_appended(&meta.name, partition, size);
                    }
                    // One wake-up per batch, not per record: the driver only needs to learn
                    // of new batches (their linger deadline) and of full ones.
                    if wake {
                        inner.wake.notify_one();
                    }
                    return Ok(DeliveryFuture(rx));
                }
                Err(AppendError::RecordTooLarge { size, max, .. }) => {
                    not_appended();
                    return Err(Error::RecordTooLarge {
                        topic: record.topic.to_string(),
                        partition: Some(partition),
                        size,
                        max,
                        limit: "max.request.size",
                    });
                }
                Err(AppendError::BufferFull(c, d)) => {
                    completion = c;
                    data = d;
                    let progressed = inner.progress.notified();
                    inner.wake.notify_one();
                    if tokio::time::timeout_at(deadline, progressed).await.is_err() {
                        not_appended();
                        return Err(Error::Timeout {
                            what: "waiting for room in buffer.memory".into(),
                            after: inner.config.max_block,
                        });
                    }
                }
            }
        }
    }

    /// Sends every buffered record without waiting for `linger.ms` and waits until nothing is
    /// buffered or in flight.
    pub async fn flush(&self) -> Result<()> {
        lock(&self.inner.core).flush();
        self.inner.wake.notify_one();
        loop {
            let progressed = self.inner.progress.notified();
            if lock(&self.inner.core).is_idle() {
                return Ok(());
            }
            if self.inner.driver_finished.load(Ordering::Acquire) {
                return Err(closed());
            }
            progressed.await;
        }
    }

    /// Delivers (or fails) everything pending, then stops the driver and closes connections.
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
        self.inner.client.close().await;
        Ok(())
    }

    /// The producer id and epoch in use (-1 without idempotence).
    pub fn producer_id(&self) -> (i64, i16) {
        lock(&self.inner.core).producer_id()
    }

    /// The cluster client underneath, for metadata and admin requests.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }
}

impl Inner {
    async fn topic_meta(&self, topic: &str, deadline: tokio::time::Instant) -> Result<Arc<TopicMeta>> {
        if let Some(m) = read(&self.topics).get(topic) {
            return Ok(m.clone());
        }
        let mut backoff = self.config.retry_backoff;
        loop {
            let last_error = match self.client.metadata(Some(&[topic])).await {
                Ok(response) => {
                    self.learn(&response);
                    if let Some(m) = read(&self.topics).get(topic) {
                        return Ok(m.clone());
                    }
                    let code = response
                        .topics
                        .iter()
                        .find(|t| t.name.as_deref() == Some(topic))
                        .map_or(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, |t| t.error_code);
                    let err = Error::broker(code, None, format!("metadata for topic {topic}"));
                    if !code.is_retriable() {
                        return Err(err);
                    }
                    err
                }
                Err(e) if e.is_retriable() => e,
                Err(e) => return Err(e),
            };
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(last_error);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.retry_backoff_max);
        }
    }

    fn learn(&self, response: &MetadataResponse) {
        let mut topics = write(&self.topics);
        for t in &response.topics {
            let Some(name) = t.name.as_deref() else { continue };
            if t.error_code != ErrorCode::NONE || t.partitions.is_empty() {
                continue;
            }
            let n = t.partitions.iter().map(|p| p.partition_index + 1).max().unwrap_or(0).max(0) as usize;
            let mut leaders = vec![-1; n];
            for p in &t.partitions {
                if let Some(slot) = leaders.get_mut(p.partition_index as usize) {
                    *slot = if p.error_code == ErrorCode::NONE { p.leader_id } else { -1 };
                }
            }
            let name: Arc<str> = name.into();
            topics.insert(name.clone(), Arc::new(TopicMeta { name, id: t.topic_id, leaders }));
        }
    }

    fn leader_of(&self) -> impl Fn(&TopicPartition) -> Option<i32> + '_ {
        let topics = read(&self.topics);
        move |tp: &TopicPartition| {
            topics.get(&tp.topic).and_then(|t| t.leaders.get(tp.partition as usize).copied()).filter(|l| *l >= 0)
        }
    }

    /// Forgets the leaders of `topics` and refreshes their metadata in the background.
    fn refresh_metadata(self: &Arc<Self>, topics: Vec<Arc<str>>) {
        if topics.is_empty() || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let names: Vec<&str> = topics.iter().map(|t| &**t).collect();
            match inner.client.metadata(Some(&names)).await {
                Ok(r) => inner.learn(&r),
                Err(e) => tracing::debug!(error = %e, "metadata refresh failed"),
            }
            // Refreshes are spaced by the retry backoff, so a leaderless partition is not polled
            // in a tight loop.
            tokio::time::sleep(inner.config.retry_backoff).await;
            inner.refreshing.store(false, Ordering::Release);
            inner.wake.notify_one();
        });
    }

    pub(super) fn deliver_completions(&self) {
        let completed: Vec<_> = {
            let mut core = lock(&self.core);
            std::iter::from_fn(|| core.poll_completion()).collect()
        };
        if completed.is_empty() {
            return;
        }
        if let Some(t) = &self.txn {
            t.records_completed(completed.iter().map(|(_, result)| result.as_ref().map(|_| ())));
        }
        for (tx, result) in completed {
            let _ = tx.send(result.map_err(|f| self.failure_to_error(f)));
        }
        self.progress.notify_waiters();
    }

    fn failure_to_error(&self, failure: ProduceFailure) -> Error {
        match failure {
            ProduceFailure::Broker { code, message } => Error::Broker { code, message, context: "produce".into() },
            ProduceFailure::DeliveryTimeout => {
                Error::Timeout { what: "record delivery".into(), after: self.config.delivery_timeout }
            }
            ProduceFailure::RecordTooLarge { size, max } => {
                Error::RecordTooLarge { topic: String::new(), partition: None, size, max, limit: "max.request.size" }
            }
            ProduceFailure::TransactionAborted => Error::TransactionAborted,
            _ => closed(),
        }
    }
}

/// The driver task: turns the core's ready batches into Produce requests and responses into
/// completions, until the producer is closed and idle.
async fn drive(inner: Arc<Inner>) {
    let (results_tx, mut results_rx) = mpsc::unbounded_channel::<(u64, RequestOutcome)>();
    let mut producer_id_backoff = inner.config.retry_backoff;
    loop {
        // A transactional producer's id and epoch come from its transaction coordinator, asked
        // by `init_transactions` and after an abort, never by the driver.
        if inner.config.transactional_id.is_none() && lock(&inner.core).needs_producer_id() {
            match init_producer_id(&inner).await {
                Ok((id, epoch)) => lock(&inner.core).set_producer_id(id, epoch),
                Err(e) if e.is_retriable() && !inner.closing.load(Ordering::Acquire) => {
                    tracing::debug!(error = %e, "InitProducerId failed; retrying");
                    tokio::time::sleep(producer_id_backoff).await;
                    producer_id_backoff = (producer_id_backoff * 2).min(inner.config.retry_backoff_max);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot get a producer id; failing buffered records");
                    lock(&inner.core).abort_unsent();
                    inner.deliver_completions();
                    if inner.closing.load(Ordering::Acquire) {
                        break;
                    }
                    tokio::time::sleep(inner.config.retry_backoff_max).await;
                    continue;
                }
            }
        }
        let now = Instant::now();
        let (ready, drained) = {
            let leader_of = inner.leader_of();
            let mut core = lock(&inner.core);
            let ready = core.ready(now, &leader_of);
            let mut drained = Vec::new();
            for &node in &ready.nodes {
                while let Some(d) = core.drain(node, now, &leader_of) {
                    drained.push(d);
                }
            }
            (ready, drained)
        };
        for d in drained {
            dispatch(&inner, d, &results_tx).await;
        }
        inner.deliver_completions();
        let stale: Vec<Arc<str>> = {
            let mut t: Vec<Arc<str>> = ready.unknown_leaders.iter().map(|tp| tp.topic.clone()).collect();
            t.dedup();
            t
        };
        inner.refresh_metadata(stale);
        let idle = lock(&inner.core).is_idle();
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
            Some((id, outcome)) = results_rx.recv() => {
                let mut refresh = Vec::new();
                let mut outcomes = vec![(id, outcome)];
                while let Ok(more) = results_rx.try_recv() {
                    outcomes.push(more);
                }
                let mut core = lock(&inner.core);
                for (id, outcome) in outcomes {
                    if let RequestOutcome::Response(rs) = &outcome {
                        refresh.extend(rs.iter().filter(|r| needs_metadata(r.error)).map(|r| r.topic_partition.topic.clone()));
                    }
                    core.handle_response(id, outcome, Instant::now());
                }
                drop(core);
                refresh.dedup();
                inner.refresh_metadata(refresh);
            }
            _ = tokio::time::sleep_until(wakeup) => {}
        }
    }
    inner.deliver_completions();
    inner.driver_finished.store(true, Ordering::Release);
    inner.driver_done.notify_waiters();
    inner.progress.notify_waiters();
}

/// Sends one drained request; its outcome comes back through `results`.
async fn dispatch(inner: &Arc<Inner>, d: Drained, results: &mpsc::UnboundedSender<(u64, RequestOutcome)>) {
    let id = d.id;
    let conn = match inner.client.broker(d.node).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(node = d.node, error = %e, "cannot reach partition leader");
            let topics: Vec<Arc<str>> = d.batches.iter().map(|(tp, _)| tp.topic.clone()).collect();
            // Forget where these partitions live; the core sees no leader until a refresh.
            let mut known = write(&inner.topics);
            for t in &topics {
                known.remove(t);
            }
            drop(known);
            inner.refresh_metadata(topics);
            let _ = results.send((id, RequestOutcome::Failed));
            return;
        }
    };
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
        d.batches.iter().filter_map(|(tp, _)| topics.get(&tp.topic).map(|m| (tp.topic.clone(), m.id))).collect()
    };
    let mut request = produce_request(&d, &topic_ids);
    request.transactional_id = inner.config.transactional_id.as_deref().map(Into::into);
    if d.acks == 0 {
        let outcome = match conn.send_without_response(&request, version) {
            Ok(()) => RequestOutcome::Response(
                d.batches
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
            Err(_) => RequestOutcome::Failed,
        };
        let _ = results.send((id, outcome));
        return;
    }
    match conn.submit(&request, version) {
        Ok(pending) => {
            let results = results.clone();
            let by_id: HashMap<Uuid, Arc<str>> = topic_ids.into_iter().map(|(n, i)| (i, n)).collect();
            tokio::spawn(async move {
                let outcome = match pending.response().await {
                    Ok(r) => RequestOutcome::Response(partition_responses(r, &by_id)),
                    Err(e) => {
                        tracing::debug!(error = %e, "produce request failed");
                        RequestOutcome::Failed
                    }
                };
                let _ = results.send((id, outcome));
            });
        }
        Err(_) => {
            let _ = results.send((id, RequestOutcome::Failed));
        }
    }
}

fn produce_request(d: &Drained, topic_ids: &HashMap<Arc<str>, Uuid>) -> ProduceRequest {
    let topics = super::by_topic(d.batches.iter().map(|(tp, batch)| {
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
    ProduceRequest { acks: d.acks, timeout_ms: d.timeout_ms, topic_data: topics, ..Default::default() }
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

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
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
