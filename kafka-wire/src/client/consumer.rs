//! The consumer: per-broker fetch loops with incremental fetch sessions, positions, seeks,
//! pause/resume, read_committed filtering, offset commits, and consumer-group membership.
//!
//! Every decision of the data path is [`Fetcher`]'s (`proto::fetcher`, sans IO): positions,
//! resets, KIP-320 validation, leader moves, which Fetch goes to which broker (one in flight per
//! broker, up to `queued.max.messages.kbytes` of fetched data waiting), what each answer means,
//! and the batches fetched. A background driver task does the IO it asks for and runs the group
//! membership. Each Fetch answer is split and checked (framing, CRCs) and filtered
//! (read_committed) by the task that sent it, outside the state's lock (on the blocking pool
//! when it is large), and buffered at once with its compressed batches as received, so that the
//! node's next fetch goes out while they are decompressed: the driver runs the fetcher's
//! decompression jobs ahead of the application, in order, off the lock on the blocking pool, a
//! little ahead per partition and within `fetch.max.bytes` across partitions (counted after
//! decompression). The application's task decodes records as it polls them, so decoding
//! scales with the application's own concurrency; positions advance only as records are
//! handed out, and a seek discards whatever was fetched for the old position.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::cluster::Client;
use super::consumer_config::{ConsumerConfig, IsolationLevel, OffsetReset};
use super::error::{Error, Result};
use super::record_views::{PolledRecords, Viewer};
use super::topic_name::{LastTopic, TopicName};
use crate::codec::messages::metadata::MetadataRequestTopic;
use crate::codec::messages::offset_commit::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use crate::codec::messages::offset_fetch::{OffsetFetchRequestGroup, OffsetFetchRequestTopics};
use crate::codec::messages::{
    FetchResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetFetchRequest,
};
use crate::codec::record_batch::{Headers, TimestampType};
use crate::codec::ErrorCode;
use crate::proto::driving::{RequestId, Target};
use crate::proto::fetcher::{
    prepare_fetch, DecompressJob, EpochAnswer, FetchContext, FetchError, Fetcher, FetcherConfig, FetcherRequest,
    FetcherResponse, PositionStatus, PreparedFetch,
};
use crate::proto::producer::TopicPartition;

/// A record handed to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic: an interned name, copied into each record without a reference count.
    pub topic: TopicName,
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp, in milliseconds since the epoch.
    pub timestamp: i64,
    /// Whether `timestamp` is the producer's create time or the broker's append time.
    pub timestamp_type: TimestampType,
    /// The key; `None` is a null key.
    pub key: Option<Bytes>,
    /// The value; `None` is a null value (a tombstone on compacted topics).
    pub value: Option<Bytes>,
    /// Decoded as they are read: they take the memory of their bytes, however many there are.
    pub headers: Headers,
    /// The leader epoch of the batch the record came in, -1 if unknown.
    pub leader_epoch: i32,
}

// A poll moves each record into its vector: the compiler copies up to 128 bytes inline, and
// calls `memcpy` for more. musl's is slow at such sizes: it was a fifth of the static
// `kw consume`'s polling thread (issue #14) before `kw` linked a `memcpy` of its own, and an
// application's static musl build still uses it.
const _: () = assert!(size_of::<ConsumerRecord>() <= 128);

impl ConsumerRecord {
    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition { topic: self.topic.to_arc(), partition: self.partition }
    }

    /// Copies the key, value and headers into buffers of their own.
    ///
    /// They are slices of what was fetched, not copies: of the whole Fetch answer for a batch
    /// that was not compressed (at most `receive.message.max.bytes`; in practice about
    /// `fetch.max.bytes`, 50 MiB, or `max.partition.fetch.bytes` per partition), of the
    /// decompressed batch for a compressed one (at most `fetch.max.bytes`). A record kept after
    /// the others of its poll are dropped keeps that whole buffer alive; detach the records you
    /// keep for long (a cache, a window of recent values) so that each holds only its own bytes.
    pub fn detach(&mut self) {
        self.key = self.key.as_deref().map(Bytes::copy_from_slice);
        self.value = self.value.as_deref().map(Bytes::copy_from_slice);
        self.headers = self.headers.detached();
    }
}

/// An offset to commit: the next record to consume, with the leader epoch of the last one
/// consumed (KIP-320) and optional metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The next offset to consume.
    pub offset: i64,
    /// The leader epoch of the last consumed record (KIP-320), if known.
    pub leader_epoch: Option<i32>,
    /// Metadata stored with the offset.
    pub metadata: Option<String>,
}

impl OffsetAndMetadata {
    /// An offset with no leader epoch and no metadata.
    pub fn new(offset: i64) -> Self {
        Self { offset, leader_epoch: None, metadata: None }
    }
}

type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Called from inside [`Consumer::poll`], on the application's task, when the group changes
/// the consumer's partitions. The consumer can be used in the callbacks (commit, seek, …), but
/// not polled or closed. A `poll` dropped while a callback runs leaves its rebalance step to the
/// next `poll`, which calls the callback again: callbacks may run more than once for one step.
pub trait RebalanceListener: Send + Sync {
    /// The partitions are about to be taken away; with auto-commit on, their positions are
    /// committed right after this returns.
    fn on_partitions_revoked<'a>(&'a self, consumer: &'a Consumer, partitions: &'a [TopicPartition]) -> BoxFuture<'a> {
        let _ = (consumer, partitions);
        Box::pin(async {})
    }

    /// The partitions were added to the assignment.
    fn on_partitions_assigned<'a>(&'a self, consumer: &'a Consumer, partitions: &'a [TopicPartition]) -> BoxFuture<'a> {
        let _ = (consumer, partitions);
        Box::pin(async {})
    }

    /// The partitions were lost without a chance to commit (the session expired or the member
    /// was fenced); another member may own them already.
    fn on_partitions_lost<'a>(&'a self, consumer: &'a Consumer, partitions: &'a [TopicPartition]) -> BoxFuture<'a> {
        let _ = (consumer, partitions);
        Box::pin(async {})
    }
}

/// A Kafka consumer. Cheap to clone; clones share one driver and one set of positions.
#[derive(Clone)]
pub struct Consumer {
    inner: Arc<Inner>,
    /// Stops the driver when the last handle is dropped (without leaving the group or
    /// committing: a dropped consumer behaves like a crashed one; call `close` to leave).
    _last_handle: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.closing.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

pub(super) struct Inner {
    pub(super) client: Client,
    /// Whether the client was opened for this consumer (and is closed with it).
    pub(super) owns_client: bool,
    pub(super) config: ConsumerConfig,
    pub(super) state: Mutex<State>,
    /// Wakes the driver: assignment, seek, resume, commit or close.
    pub(super) wake: Notify,
    /// Wakes pollers: data arrived, an event is waiting, or the driver stopped.
    pub(super) data: Notify,
    pub(super) closing: AtomicBool,
    pub(super) listener: Mutex<Option<Arc<dyn RebalanceListener>>>,
    /// Set by [`Consumer::inject_driver_panic`]: the driver panics when it next wakes.
    panic_requested: AtomicBool,
}

pub(super) struct State {
    /// The data path: positions, resets, validations, fetches and the batches fetched.
    pub(super) fetcher: Fetcher,
    /// An error of the group's (a failed OffsetFetch, a fatal error) the next poll reports.
    pub(super) poll_error: Option<Error>,
    pub(super) driver_stopped: bool,
    /// Why the driver stopped, if it did not stop because the consumer was closed (a panic):
    /// what every later call reports.
    pub(super) driver_failed: Option<Error>,
    pub(super) group: super::consumer_group::GroupState,
    /// When a poll that returned records last woke the driver.
    pub(super) poll_woke_driver: Option<Instant>,
    /// A decompression job the driver planned, waiting for whichever comes first: a thread of
    /// the blocking pool, or a `poll` that found nothing ready (it runs the job itself rather
    /// than wait for the pool).
    pub(super) queued_decompression: Option<DecompressJob>,
}

/// How often a poll that returns records wakes the driver when the fetcher did not ask for it.
const POLL_WAKE_INTERVAL: Duration = Duration::from_millis(100);

pub use crate::proto::fetcher::ResetTo;

/// The fetcher's settings from the consumer's.
fn fetcher_config(config: &ConsumerConfig) -> FetcherConfig {
    FetcherConfig {
        auto_offset_reset: match config.auto_offset_reset {
            OffsetReset::Earliest => Some(ResetTo::Earliest),
            OffsetReset::Latest => Some(ResetTo::Latest),
            OffsetReset::None => None,
        },
        read_committed: config.isolation_level == IsolationLevel::ReadCommitted,
        check_crcs: config.check_crcs,
        fetch_max_wait: config.fetch_max_wait,
        fetch_min_bytes: config.fetch_min_bytes,
        fetch_max_bytes: config.fetch_max_bytes,
        max_partition_fetch_bytes: config.max_partition_fetch_bytes,
        prefetch_max_bytes: config.prefetch_max_bytes,
        client_rack: config.client_rack.clone(),
        retry_backoff: config.retry_backoff,
        retry_backoff_max: config.retry_backoff_max,
        metadata_max_age: config.metadata_max_age,
        backoff_seed: None,
    }
}

/// The client's error for a fetcher's.
fn fetch_error(e: FetchError) -> Error {
    match e {
        FetchError::NoOffset { tp } => {
            Error::config("auto.offset.reset", format!("{tp} has no committed offset and auto.offset.reset is none"))
        }
        FetchError::LogTruncation { tp, position, divergent_offset, divergent_epoch } => Error::LogTruncation {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            position,
            divergent_offset,
            divergent_epoch,
        },
        FetchError::Corrupt { tp, offset, reason } => {
            Error::CorruptRecord { topic: tp.topic.to_string(), partition: tp.partition, offset, reason }
        }
        FetchError::Decode { tp, source } => Error::Decode { broker: format!("fetch of {tp}"), source },
        FetchError::Broker { code, context } => Error::broker(code, None, context),
    }
}

impl Consumer {
    /// Connects to the cluster and starts the driver. Nothing is fetched until partitions are
    /// assigned or topics subscribed. Cancel-safe: a dropped future creates no consumer.
    pub async fn new(config: ConsumerConfig) -> Result<Self> {
        let config = config.validated()?;
        let client = Client::connect(config.client_config()).await?;
        Ok(Self::start(client, config, true))
    }

    /// A consumer on an existing [`Client`]: it shares the client's connections and metadata
    /// with the producers, consumers and admin clients built on it (the client's connection
    /// settings apply; this configuration's `bootstrap.servers`, `client.id` and connection
    /// timeouts are not used). The client's request timeout must be longer than
    /// `fetch.max.wait.ms`, which a fetch may wait at the broker. Closing the consumer leaves
    /// the client's connections open.
    pub fn with_client(client: Client, config: ConsumerConfig) -> Result<Self> {
        let config = config.validated()?;
        let request_timeout = client.config().connection.request_timeout;
        if request_timeout <= config.fetch_max_wait {
            return Err(Error::config(
                "fetch.max.wait.ms",
                format!(
                    "{:?} is not shorter than the shared client's request timeout of {request_timeout:?}",
                    config.fetch_max_wait
                ),
            ));
        }
        Ok(Self::start(client, config, false))
    }

    fn start(client: Client, config: ConsumerConfig, owns_client: bool) -> Self {
        let fetcher = Fetcher::new(fetcher_config(&config));
        let inner = Arc::new(Inner {
            client,
            owns_client,
            config,
            state: Mutex::new(State {
                fetcher,
                poll_error: None,
                driver_stopped: false,
                driver_failed: None,
                group: Default::default(),
                poll_woke_driver: None,
                queued_decompression: None,
            }),
            wake: Notify::new(),
            data: Notify::new(),
            closing: AtomicBool::new(false),
            listener: Mutex::new(None),
            panic_requested: AtomicBool::new(false),
        });
        spawn_driver(inner.clone());
        Self { _last_handle: Arc::new(StopOnDrop(inner.clone())), inner }
    }

    /// The consumer's configuration, as validated.
    pub fn config(&self) -> &ConsumerConfig {
        &self.inner.config
    }

    /// Makes the driver task panic when it next wakes. For tests of what a failed driver does
    /// (there is no known way to make it panic otherwise); not part of the API.
    #[doc(hidden)]
    pub fn inject_driver_panic(&self) {
        self.inner.panic_requested.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }

    /// The cluster client underneath.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Consumes exactly these partitions, outside any group's assignment. Partitions that stay
    /// keep their positions. With a `group.id`, a new partition starts from the group's
    /// committed offset, as in Java (`auto.offset.reset` where nothing is committed), unless
    /// the application seeks it first; a failed OffsetFetch is reported by `poll` and tried
    /// again. Call it from within the tokio runtime.
    pub fn assign(&self, partitions: impl IntoIterator<Item = TopicPartition>) {
        let new: Vec<TopicPartition> = {
            let mut st = self.inner.lock();
            let partitions: Vec<TopicPartition> = partitions.into_iter().collect();
            let known: HashSet<&TopicPartition> = st.fetcher.partitions().collect();
            let new = partitions.iter().filter(|tp| !known.contains(tp)).cloned().collect::<Vec<_>>();
            st.fetcher.assign(partitions);
            if self.inner.config.group_id.is_some() {
                for tp in &new {
                    st.fetcher.await_committed(tp.clone());
                }
            }
            new
        };
        if let (Some(group), false) = (self.inner.config.group_id.clone(), new.is_empty()) {
            tokio::spawn(committed_positions(Arc::downgrade(&self.inner), group, new));
        }
        self.inner.wake.notify_one();
    }

    /// The fetched bytes buffered ahead of the application now, as counted against
    /// `queued.max.messages.kbytes` ([`ConsumerConfig::prefetch_max_bytes`]): fetching pauses
    /// above it, so it exceeds it by at most the answers of the fetches in flight.
    pub fn prefetched_bytes(&self) -> usize {
        self.inner.lock().fetcher.buffered_bytes()
    }

    /// The partitions currently assigned.
    pub fn assignment(&self) -> BTreeSet<TopicPartition> {
        self.inner.lock().fetcher.partitions().cloned().collect()
    }

    /// Sets the listener called on group rebalances.
    pub fn set_rebalance_listener(&self, listener: impl RebalanceListener + 'static) {
        *lock(&self.inner.listener) = Some(Arc::new(listener));
    }

    /// Waits up to `timeout` for records and returns at most `max.poll.records` of them (none
    /// if nothing arrived). Rebalance callbacks run inside this call, before any record is
    /// taken: the loss or revocation of partitions is always told here first, and the member
    /// rejoins the group only after that (a listener must not call `poll` or `close`).
    ///
    /// Cancel-safe: records leave the consumer only when the call returns them, so a dropped
    /// future loses none; a rebalance step whose callback was running is run again, from the
    /// start, by the next `poll` (a callback may run twice for one step, none is skipped).
    pub async fn poll(&self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        self.poll_up_to(timeout, self.inner.config.max_poll_records).await
    }

    /// [`poll`](Self::poll), the records read in place: a [`PolledRecords`] whose records are
    /// positions in the fetched bytes, lent out as [`RecordView`](super::RecordView)s (key and
    /// value as `&[u8]`), rather than a [`ConsumerRecord`] each with handles of its own.
    ///
    /// The same records in the same order, and the same positions afterwards, as `poll`; the
    /// two can be mixed. Cheaper per record: a `ConsumerRecord`'s key and value are each made
    /// and dropped with a reference count update (an atomic operation), which at millions of
    /// records a second is a large share of the consumer's CPU; here it is one per batch read.
    /// The result keeps the fetched bytes its records lie in until it is dropped.
    ///
    /// Cancel-safe, as `poll` is.
    pub async fn poll_views(&self, timeout: Duration) -> Result<PolledRecords> {
        self.poll_up_to(timeout, self.inner.config.max_poll_records).await
    }

    async fn poll_up_to<P: Polled>(&self, timeout: Duration, max_records: usize) -> Result<P> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.run_group_events().await?;
            let notified = self.inner.data.notified();
            {
                let mut st = self.inner.lock();
                let now = Instant::now();
                st.group.poll_called(now);
                if let Some(e) = st.poll_error.take() {
                    return Err(e);
                }
                if let Some(e) = st.fetcher.poll_error() {
                    return Err(fetch_error(e));
                }
                let records = P::take(&mut st, max_records);
                if !records.is_empty() {
                    // The driver is woken when the take made room for a fetch or decompression,
                    // and otherwise now and then (for the group's timers), not once per poll.
                    let wake = st.fetcher.take_driver_wanted()
                        || st.poll_woke_driver.is_none_or(|t| now.duration_since(t) >= POLL_WAKE_INTERVAL);
                    if wake {
                        st.poll_woke_driver = Some(now);
                    }
                    drop(st);
                    if wake {
                        self.inner.wake.notify_one();
                    }
                    return Ok(records);
                }
                if st.driver_stopped {
                    return Err(st.driver_failed.clone().unwrap_or(Error::Closed { broker: "consumer".into() }));
                }
                // Nothing ready, but compressed batches are buffered: decompress them here, on
                // the caller's thread (as Java's poll does), taking the driver's job if it has
                // not started, rather than wait for a thread of the blocking pool. On a busy
                // machine those hand-offs, not the CPU, were the time (issue #14).
                if let Some(job) = st.queued_decompression.take().or_else(|| st.fetcher.poll_decompression()) {
                    drop(st);
                    let done = job.run();
                    // The take that follows wakes the driver if there is more to decompress.
                    self.inner.lock().fetcher.handle_decompressed(Some(done));
                    continue;
                }
            }
            self.inner.wake.notify_one();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(P::default());
            }
        }
    }

    /// The records as a stream: each item is one record, or an error from `poll`.
    ///
    /// Cancel-safe: the stream takes one record at a time from the consumer, so dropping a
    /// `next` future, or the stream itself, loses no record; rebalance steps run as in `poll`.
    pub fn stream(&self) -> impl stream::Stream<Item = Result<ConsumerRecord>> + '_ {
        stream::unfold(self)
    }

    /// Moves the position of `tp` to `offset`; fetched data for the old position is dropped.
    pub fn seek(&self, tp: &TopicPartition, offset: i64) -> Result<()> {
        if !self.inner.lock().fetcher.seek(tp, offset) {
            return Err(not_assigned("seek", tp));
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// [`Consumer::seek`] with the leader epoch of the record before `offset`, as Java's
    /// `seek(TopicPartition, OffsetAndMetadata)` with a leader epoch: a committed offset's
    /// ([`OffsetAndMetadata::leader_epoch`]), or an [`Error::LogTruncation`]'s
    /// `divergent_offset` and `divergent_epoch`. The first Fetch from there has the leader check
    /// that its log still holds that epoch up to `offset` (KIP-595; brokers from Kafka 2.7,
    /// Fetch v12): if it was truncated below `offset` since (a second unclean leader change),
    /// the partition stops (or resets, per `auto.offset.reset`) at the new divergence point
    /// rather than reading the new leader's records from `offset` and skipping those before it.
    /// `None` is a plain seek. Fetched data for the old position is dropped.
    pub fn seek_with_epoch(&self, tp: &TopicPartition, offset: i64, leader_epoch: Option<i32>) -> Result<()> {
        if !self.inner.lock().fetcher.seek_with_epoch(tp, offset, leader_epoch) {
            return Err(not_assigned("seek", tp));
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Moves the positions of `partitions` to their earliest offsets (resolved asynchronously).
    pub fn seek_to_beginning(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.request_reset(partitions, ResetTo::Earliest)
    }

    /// Moves the positions of `partitions` to their end offsets (resolved asynchronously).
    pub fn seek_to_end(&self, partitions: &[TopicPartition]) -> Result<()> {
        self.request_reset(partitions, ResetTo::Latest)
    }

    /// Moves the positions of `partitions` to the first offset at or after `timestamp_ms`
    /// (the end offset where there is none).
    pub fn seek_to_timestamp(&self, partitions: &[TopicPartition], timestamp_ms: i64) -> Result<()> {
        self.request_reset(partitions, ResetTo::Timestamp(timestamp_ms))
    }

    /// The next offset to be handed out for `tp`, waiting (up to `default.api.timeout.ms`)
    /// until it is known and, after a leader change, validated against the new leader's log;
    /// the truncation error if the log was truncated below it with `auto.offset.reset=none`.
    /// Cancel-safe: it only waits and reads.
    pub async fn position(&self, tp: &TopicPartition) -> Result<i64> {
        let deadline = tokio::time::Instant::now() + self.inner.config.default_api_timeout;
        loop {
            let notified = self.inner.data.notified();
            {
                let mut st = self.inner.lock();
                if let Some(e) = st.poll_error.take() {
                    return Err(e);
                }
                if let Some(e) = st.fetcher.take_error() {
                    return Err(fetch_error(e));
                }
                if let Some(e) = &st.driver_failed {
                    return Err(e.clone());
                }
                match st.fetcher.position(tp) {
                    PositionStatus::NotAssigned => return Err(not_assigned("position", tp)),
                    PositionStatus::Stopped(e) => return Err(fetch_error(e)),
                    PositionStatus::At(position) => return Ok(position),
                    PositionStatus::Pending => {}
                }
            }
            self.inner.wake.notify_one();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::Timeout {
                    what: format!("position of {tp}"),
                    after: self.inner.config.default_api_timeout,
                });
            }
        }
    }

    /// Records between the position and the high watermark of `tp` (the last stable offset for
    /// read_committed), as of the last fetch; `None` before the first fetch answer.
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        self.inner.lock().fetcher.lag(tp)
    }

    /// Stops fetching `partitions` without leaving the group; buffered records of them are
    /// kept but not handed out until resumed.
    pub fn pause(&self, partitions: &[TopicPartition]) -> Result<()> {
        let mut st = self.inner.lock();
        for tp in partitions {
            if !st.fetcher.set_paused(tp, true) {
                return Err(not_assigned("pause", tp));
            }
        }
        Ok(())
    }

    /// Fetches `partitions` again after [`Consumer::pause`]; their buffered records are handed out
    /// again. An error if one of them is not assigned.
    pub fn resume(&self, partitions: &[TopicPartition]) -> Result<()> {
        let mut st = self.inner.lock();
        for tp in partitions {
            if !st.fetcher.set_paused(tp, false) {
                return Err(not_assigned("resume", tp));
            }
        }
        drop(st);
        self.inner.wake.notify_one();
        // Records buffered while paused can be handed out now: a poll waiting in another task
        // takes them at once, not at its timeout.
        self.inner.data.notify_waiters();
        Ok(())
    }

    /// The partitions paused now.
    pub fn paused(&self) -> BTreeSet<TopicPartition> {
        self.inner.lock().fetcher.paused().cloned().collect()
    }

    /// The current positions of every assigned partition whose position is known (and not
    /// awaiting validation after a leader change), as offsets to commit.
    pub fn positions(&self) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
        self.inner.lock().positions()
    }

    /// The consumer's group, generation and member id, for the offsets of a transaction
    /// ([`Producer::send_offsets_to_transaction`](super::Producer::send_offsets_to_transaction),
    /// KIP-447). Outside a group (assigned partitions) the generation is -1 and the member id
    /// empty; a subscribed consumer that is between generations (joining, or rejoining after it
    /// was fenced) gets [`Error::InvalidState`]. A member that lost its partitions between two
    /// polls stays between generations until a `poll` has told the application (see
    /// [`Consumer::poll`]), so the generation returned is never newer than the records the
    /// application holds.
    pub fn group_metadata(&self) -> Result<super::ConsumerGroupMetadata> {
        let group_id = self.group_id()?;
        let generation = super::consumer_group::generation(&self.inner);
        if generation.is_none() && self.inner.lock().group.is_member() {
            // Generation -1 would make the coordinator skip the membership check (KIP-447):
            // a member that was fenced out must not commit offsets until it has rejoined.
            return Err(Error::InvalidState {
                operation: "group_metadata".into(),
                reason: format!("the consumer is not in a generation of group {group_id} (it is joining or rejoining)"),
            });
        }
        let (generation_id, member_id) = generation.unwrap_or((-1, String::new()));
        Ok(super::ConsumerGroupMetadata {
            group_id,
            generation_id,
            member_id,
            group_instance_id: self.inner.config.group_instance_id.clone(),
        })
    }

    /// Commits the current positions of every assigned partition and waits for the result.
    ///
    /// Cancel-safe as [`Consumer::commit_offsets`] is.
    pub async fn commit(&self) -> Result<()> {
        let offsets = self.positions();
        self.commit_offsets(offsets).await
    }

    /// Commits `offsets` and waits for the result. A group member commits with its current
    /// generation (the commit fails if the group is rebalancing); a consumer with `group.id`
    /// and assigned partitions commits as a standalone consumer.
    ///
    /// Cancel-safe: dropping the future leaves the consumer as it was, but does not withdraw the
    /// commit — a group member's commit, once taken, is sent (with the generation current then)
    /// and settles in the background, and its answer is dropped; a standalone commit may or may
    /// not reach the coordinator.
    pub async fn commit_offsets(&self, offsets: BTreeMap<TopicPartition, OffsetAndMetadata>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let group = self.group_id()?;
        if self.inner.lock().group.is_member() {
            return super::consumer_group::commit(&self.inner, offsets).await;
        }
        standalone_commit(&self.inner, &group, &offsets).await
    }

    /// Commits `offsets` in the background; the result is logged, and a later commit supersedes
    /// it.
    pub fn commit_async(&self, offsets: BTreeMap<TopicPartition, OffsetAndMetadata>) {
        let consumer = self.clone();
        tokio::spawn(async move {
            if let Err(e) = consumer.commit_offsets(offsets).await {
                tracing::warn!(error = %e, "asynchronous commit failed");
            }
        });
    }

    /// The committed offsets of `partitions` for this consumer's group (`None` where nothing
    /// is committed).
    ///
    /// Cancel-safe: it only reads; a dropped future abandons the request.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<OffsetAndMetadata>>> {
        let group = self.group_id()?;
        fetch_committed(&self.inner, &group, partitions).await
    }

    /// Subscribes to `topics` as a member of `group.id`; the group assigns the partitions.
    pub fn subscribe(&self, topics: impl IntoIterator<Item = impl Into<String>>) -> Result<()> {
        self.group_id()?;
        let topics: BTreeSet<String> = topics.into_iter().map(Into::into).collect();
        super::consumer_group::subscribe(&self.inner, super::consumer_group::Subscription::Topics(topics))
    }

    /// Subscribes to every topic whose name matches `pattern` (a regular expression matched
    /// against the whole name), now and as topics are created.
    pub fn subscribe_pattern(&self, pattern: &str) -> Result<()> {
        self.group_id()?;
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| Error::config("subscription pattern", e.to_string()))?;
        super::consumer_group::subscribe(&self.inner, super::consumer_group::Subscription::Pattern(re))
    }

    /// Leaves the group (committing positions first with auto-commit), stops the driver and
    /// closes connections.
    ///
    /// Not cancel-safe: dropped while leaving, the consumer may be left revoking (the next
    /// `poll` or `close` goes on from there) or left without its leave request sent (the group
    /// then waits for the session timeout); dropped after that, the driver keeps running until
    /// the last handle is dropped.
    pub async fn close(&self) -> Result<()> {
        let member = self.inner.lock().group.is_member();
        if member {
            // Leaving revokes the partitions, which commits their positions with auto-commit.
            super::consumer_group::leave(self).await;
        } else if self.inner.config.enable_auto_commit && self.inner.config.group_id.is_some() {
            let positions = self.positions();
            if let Err(e) = self.commit_offsets(positions).await {
                tracing::warn!(error = %e, "final auto-commit failed");
            }
        }
        self.inner.closing.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        if self.inner.owns_client {
            self.inner.client.close().await;
        }
        Ok(())
    }

    fn group_id(&self) -> Result<String> {
        self.inner.config.group_id.clone().ok_or_else(|| Error::config("group.id", "needed to commit or subscribe"))
    }

    fn request_reset(&self, partitions: &[TopicPartition], to: ResetTo) -> Result<()> {
        let mut st = self.inner.lock();
        for tp in partitions {
            if !st.fetcher.reset(tp, to) {
                return Err(not_assigned("seek", tp));
            }
        }
        drop(st);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Runs the rebalance callbacks the group has queued, on this (the application's) task.
    async fn run_group_events(&self) -> Result<()> {
        super::consumer_group::run_events(self).await
    }

    pub(super) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    pub(super) fn listener(&self) -> Option<Arc<dyn RebalanceListener>> {
        lock(&self.inner.listener).clone()
    }
}

/// A minimal `Stream` without a dependency: `futures_core`'s trait shape, so that callers can
/// adapt it.
pub mod stream {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub use futures_core::Stream;

    use super::{Consumer, ConsumerRecord, Result};

    /// Awaits the next item of a stream (what `StreamExt::next` of the futures crates does).
    pub async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
        std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
    }

    type PollFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<ConsumerRecord>>> + Send + 'a>>;

    /// The records of a [`Consumer`], one item per record: a [`futures_core::Stream`] that polls
    /// the consumer as it is read. Dropping it between items loses nothing.
    pub struct RecordStream<'a> {
        consumer: &'a Consumer,
        ready: std::collections::VecDeque<ConsumerRecord>,
        pending: Option<PollFuture<'a>>,
    }

    pub(super) fn unfold(consumer: &Consumer) -> RecordStream<'_> {
        RecordStream { consumer, ready: Default::default(), pending: None }
    }

    impl Stream for RecordStream<'_> {
        type Item = Result<ConsumerRecord>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            loop {
                if let Some(r) = self.ready.pop_front() {
                    return Poll::Ready(Some(Ok(r)));
                }
                let consumer = self.consumer;
                // One record at a time: a record buffered here would be lost with the stream.
                let fut = self
                    .pending
                    .get_or_insert_with(|| Box::pin(consumer.poll_up_to(std::time::Duration::from_secs(3600), 1)));
                match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(result) => {
                        self.pending = None;
                        match result {
                            Ok(records) => self.ready.extend(records),
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        }
                    }
                }
            }
        }
    }

    impl Unpin for RecordStream<'_> {}
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl State {
    pub(super) fn drop_partition(&mut self, tp: &TopicPartition) {
        self.fetcher.remove(tp);
    }

    pub(super) fn positions(&self) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
        self.fetcher
            .positions()
            .into_iter()
            .map(|(tp, (offset, leader_epoch))| (tp, OffsetAndMetadata { offset, leader_epoch, metadata: None }))
            .collect()
    }

    /// Takes up to `max` records as [`Consumer::poll_views`] returns them.
    fn take_views(&mut self, max: usize) -> PolledRecords {
        let mut viewer = Viewer::new(max.min(self.fetcher.ready_records()));
        self.fetcher.take_with(max, &mut viewer);
        viewer.finish()
    }

    /// Takes up to `max` records, round-robin over partitions, advancing positions.
    fn take_records(&mut self, max: usize) -> Vec<ConsumerRecord> {
        // Sized once: growing it by doubling moved each record about once more.
        let mut out = Vec::with_capacity(max.min(self.fetcher.ready_records()));
        let mut topic = LastTopic::default();
        self.fetcher.take(max, |tp, r, leader_epoch, timestamp_type| {
            out.push(ConsumerRecord {
                topic: topic.name(&tp.topic),
                partition: tp.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                timestamp_type,
                key: r.key,
                value: r.value,
                headers: r.headers,
                leader_epoch,
            })
        });
        out
    }
}

/// What a poll returns: records taken from the fetcher one way or the other.
trait Polled: Default {
    fn take(state: &mut State, max: usize) -> Self;
    fn is_empty(&self) -> bool;
}

impl Polled for Vec<ConsumerRecord> {
    fn take(state: &mut State, max: usize) -> Self {
        state.take_records(max)
    }

    fn is_empty(&self) -> bool {
        <[ConsumerRecord]>::is_empty(self)
    }
}

impl Polled for PolledRecords {
    fn take(state: &mut State, max: usize) -> Self {
        state.take_views(max)
    }

    fn is_empty(&self) -> bool {
        PolledRecords::is_empty(self)
    }
}

// ===== driver =====

/// What the tasks the driver spawned hand back.
enum DriverEvent {
    /// The answer (or failure) of a request of the fetcher's; a Fetch answer is checked and
    /// filtered (outside the state's lock), not decompressed.
    Fetcher(RequestId, FetcherResponse),
    /// Preparing a Fetch answer or decompressing batches panicked: a bug, not a fault of the
    /// broker's. The consumer stops as if its driver had panicked.
    Failed(Error),
    Metadata(Result<MetadataResponse>),
}

/// Spawns the driver, and a task that notices if it panics: the failure is then what every
/// pending and later call reports ([`Error::DriverFailed`]), rather than an empty poll forever.
fn spawn_driver(inner: Arc<Inner>) {
    let driver = tokio::spawn(drive(inner.clone()));
    tokio::spawn(async move {
        let Err(e) = driver.await else { return };
        if !e.is_panic() {
            // Cancelled: the runtime is shutting down.
            return;
        }
        let payload = e.into_panic();
        let reason = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked".to_owned());
        tracing::error!(%reason, "the consumer driver panicked");
        {
            let mut st = inner.lock();
            st.driver_failed = Some(Error::DriverFailed { driver: "consumer", reason });
            st.driver_stopped = true;
        }
        inner.data.notify_waiters();
        if inner.owns_client {
            inner.client.close().await;
        }
    });
}

async fn drive(inner: Arc<Inner>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<DriverEvent>();
    loop {
        if inner.closing.load(Ordering::Acquire) {
            break;
        }
        if inner.panic_requested.swap(false, Ordering::AcqRel) {
            panic!("consumer driver panic injected by a test");
        }
        let now = Instant::now();
        // Metadata: for assigned topics (and the subscription's), when something is unknown.
        let topics_wanted = super::consumer_group::wanted_topics(&inner);
        let avoid = inner.lock().fetcher.poll_metadata_for(now, &topics_wanted);
        if let Some(avoid) = avoid {
            start_metadata(&inner, &tx, topics_wanted, &avoid);
        }
        super::consumer_group::step(&inner, now).await;
        let (requests, job, timeout, failed) = {
            let mut st = inner.lock();
            let requests: Vec<_> = std::iter::from_fn(|| st.fetcher.poll_request(now)).collect();
            (requests, st.fetcher.poll_decompression(), st.fetcher.next_timeout(now), st.fetcher.has_error())
        };
        // Planning can fail a partition (no offset to reset to): a waiting poll reports it now.
        if failed {
            inner.data.notify_waiters();
        }
        for (id, target, request) in requests {
            start_request(&inner, &tx, id, target, request);
        }
        if let Some(job) = job {
            inner.lock().queued_decompression = Some(job);
            start_decompression(&inner, &tx);
        }
        let wakeup = super::consumer_group::next_timeout(&inner)
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + inner.config.retry_backoff.max(Duration::from_millis(100)))
            .min(tokio::time::Instant::now() + Duration::from_secs(1));
        let wakeup = timeout.map_or(wakeup, |t| wakeup.min(tokio::time::Instant::from_std(t)));
        tokio::select! {
            _ = inner.wake.notified() => {}
            Some(event) = rx.recv() => {
                let mut events = vec![event];
                while let Ok(e) = rx.try_recv() {
                    events.push(e);
                }
                let now = Instant::now();
                for e in events {
                    match e {
                        DriverEvent::Metadata(result) => {
                            if let Err(e) = &result {
                                tracing::debug!(error = %e, "consumer metadata refresh failed");
                            }
                            inner.lock().fetcher.handle_metadata(result.as_ref().ok(), now);
                            if let Ok(r) = &result {
                                super::consumer_group::metadata_updated(&inner, r);
                            }
                        }
                        DriverEvent::Fetcher(id, response) => inner.lock().fetcher.handle_response(id, response, now),
                        DriverEvent::Failed(e) => {
                            tracing::error!(error = %e, "the consumer stops");
                            inner.lock().driver_failed = Some(e);
                            inner.closing.store(true, Ordering::Release);
                        }
                    }
                }
                inner.data.notify_waiters();
            }
            _ = tokio::time::sleep_until(wakeup) => {}
        }
    }
    inner.lock().driver_stopped = true;
    inner.data.notify_waiters();
    if inner.owns_client {
        inner.client.close().await;
    }
}

/// Sends the Metadata request the fetcher asked for, for `topics` (every topic with a pattern
/// subscription), to a node other than `avoid` (nodes whose Fetch is overdue: they may be hung)
/// when there are such nodes.
fn start_metadata(inner: &Arc<Inner>, tx: &mpsc::UnboundedSender<DriverEvent>, topics: Vec<Arc<str>>, avoid: &[i32]) {
    let client = inner.client.clone();
    let pattern = super::consumer_group::is_pattern(inner);
    let tx = tx.clone();
    // The client asks the connection with the fewest requests in flight, which may be the hung
    // broker's when it is the only one open.
    let other = (!avoid.is_empty())
        .then(|| client.brokers().into_iter().map(|b| b.node_id).find(|n| !avoid.contains(n)))
        .flatten();
    tokio::spawn(async move {
        let names: Vec<&str> = topics.iter().map(|t| &**t).collect();
        let result = match other {
            Some(node) => client.send(node, &metadata_request(&names, pattern)).await,
            None if pattern => client.metadata(None).await,
            None => client.metadata(Some(&names)).await,
        };
        let _ = tx.send(DriverEvent::Metadata(result));
    });
}

/// A Metadata request for `topics`, or for every topic with `all`.
fn metadata_request(topics: &[&str], all: bool) -> MetadataRequest {
    MetadataRequest {
        topics: (!all).then(|| {
            topics.iter().map(|t| MetadataRequestTopic { name: Some((*t).into()), ..Default::default() }).collect()
        }),
        allow_auto_topic_creation: false,
        ..Default::default()
    }
}

/// Fetch answers with this many bytes of records or more are checked (CRCs) on tokio's
/// blocking pool rather than on an async worker; decompression always runs there.
const BLOCKING_THRESHOLD: usize = 64 * 1024;

/// Sends a request of the fetcher's and hands its answer back through the driver.
fn start_request(
    inner: &Arc<Inner>,
    tx: &mpsc::UnboundedSender<DriverEvent>,
    id: RequestId,
    target: Target,
    request: FetcherRequest,
) {
    let client = inner.client.clone();
    let tx = tx.clone();
    let Some(node) = target.node() else {
        debug_assert!(false, "the fetcher sends to given nodes");
        return;
    };
    tokio::spawn(async move {
        let response = match request {
            FetcherRequest::Fetch(request, context) => match client.send_fetch(node, &*request).await {
                Ok(response) => match prepare_off_worker(response, context).await {
                    Ok(prepared) => FetcherResponse::Fetch(Some(prepared)),
                    Err(e) => {
                        let _ = tx.send(DriverEvent::Failed(e));
                        return;
                    }
                },
                Err(e) => {
                    tracing::debug!(node, error = %e, "fetch failed");
                    FetcherResponse::Fetch(None)
                }
            },
            FetcherRequest::ListOffsets(request) => FetcherResponse::ListOffsets(
                client
                    .send(node, &request)
                    .await
                    .inspect_err(|e| tracing::debug!(node, error = %e, "ListOffsets failed"))
                    .ok(),
            ),
            // On the coordination connection: not queued behind a long-polling Fetch.
            FetcherRequest::OffsetForLeaderEpoch(request) => {
                FetcherResponse::OffsetForLeaderEpoch(match client.send_control(node, &request, 4).await {
                    Ok(r) => EpochAnswer::Answered(r),
                    Err(Error::UnsupportedVersion { .. }) => EpochAnswer::Unsupported,
                    Err(e) => {
                        tracing::debug!(node, error = %e, "OffsetForLeaderEpoch failed");
                        EpochAnswer::Failed
                    }
                })
            }
        };
        let _ = tx.send(DriverEvent::Fetcher(id, response));
    });
}

/// [`prepare_fetch`], on the blocking pool when the answer is large.
async fn prepare_off_worker(response: FetchResponse, context: FetchContext) -> Result<PreparedFetch> {
    if FetchContext::records_size(&response) < BLOCKING_THRESHOLD {
        return Ok(prepare_fetch(response, &context));
    }
    tokio::task::spawn_blocking(move || prepare_fetch(response, &context))
        .await
        .map_err(|e| Error::DriverFailed { driver: "consumer", reason: format!("checking a fetch answer: {e}") })
}

/// Runs the queued decompression job ([`State::queued_decompression`]) off the state's lock, on
/// the blocking pool, unless a `poll` took it first; hands its result to the fetcher and tells
/// the waiting poll and the driver.
fn start_decompression(inner: &Arc<Inner>, tx: &mpsc::UnboundedSender<DriverEvent>) {
    let (inner, tx) = (inner.clone(), tx.clone());
    tokio::spawn(async move {
        let run = {
            let inner = inner.clone();
            move || {
                let Some(job) = inner.lock().queued_decompression.take() else { return };
                let done = job.run();
                inner.lock().fetcher.handle_decompressed(Some(done));
                inner.data.notify_waiters();
                inner.wake.notify_one();
            }
        };
        if let Err(e) = tokio::task::spawn_blocking(run).await {
            let _ = tx.send(DriverEvent::Failed(Error::DriverFailed {
                driver: "consumer",
                reason: format!("decompressing batches: {e}"),
            }));
        }
    });
}

// ===== offsets of a standalone consumer =====

use super::admin::CoordinatorType;
use super::router::Retry;
use crate::proto::backoff::Backoff;

pub(super) async fn standalone_commit(
    inner: &Inner,
    group: &str,
    offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
) -> Result<()> {
    let request = commit_request(group, -1, "", None, offsets);
    send_commit(inner, group, &request).await
}

pub(super) fn commit_request(
    group: &str,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
    offsets: &BTreeMap<TopicPartition, OffsetAndMetadata>,
) -> OffsetCommitRequest {
    let topics = super::by_topic(offsets.iter().map(|(tp, o)| {
        let part = OffsetCommitRequestPartition {
            partition_index: tp.partition,
            committed_offset: o.offset,
            committed_leader_epoch: o.leader_epoch.unwrap_or(-1),
            committed_metadata: o.metadata.as_deref().map(Into::into),
            ..Default::default()
        };
        (tp.topic.clone(), part)
    }))
    .into_iter()
    .map(|(name, partitions)| OffsetCommitRequestTopic { name: (&*name).into(), partitions, ..Default::default() })
    .collect();
    OffsetCommitRequest {
        group_id: group.into(),
        generation_id_or_member_epoch: generation,
        member_id: member_id.into(),
        group_instance_id: instance_id.map(Into::into),
        topics,
        ..Default::default()
    }
}

/// Sends a commit to the group's coordinator through the client's router (cached coordinator,
/// looked up again when it moves or cannot be reached), retrying retriable errors with the
/// configured backoff until `default.api.timeout.ms`.
async fn send_commit(inner: &Inner, group: &str, request: &OffsetCommitRequest) -> Result<()> {
    let client = &inner.client;
    let mut results = client
        .to_coordinators(
            CoordinatorType::Group,
            vec![group.to_owned()],
            retry(inner),
            Error::is_retriable,
            |node, _| async move {
                let r = client.send_control(node, request, 9).await?;
                let failed = r
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
                    .find(|(_, p)| p.error_code != ErrorCode::NONE);
                let outcome = match failed {
                    None => Ok(()),
                    Some((t, p)) => Err(Error::broker(
                        p.error_code,
                        None,
                        format!("OffsetCommit of {}-{} for group {group}", t.name, p.partition_index),
                    )),
                };
                Ok(vec![(group.to_owned(), outcome)])
            },
        )
        .await;
    results.remove(group).unwrap_or_else(|| Err(no_result(group)))
}

/// Starts the assigned (not group-managed) `partitions` from `group`'s committed offsets:
/// OffsetFetch, tried again after a failure (which the next `poll` reports) until it answers or
/// the consumer is gone.
async fn committed_positions(inner: std::sync::Weak<Inner>, group: String, partitions: Vec<TopicPartition>) {
    let mut partitions = partitions;
    loop {
        let Some(inner) = inner.upgrade() else { return };
        if inner.closing.load(Ordering::Acquire) {
            return;
        }
        // Those sought (or unassigned) meanwhile need no committed offset.
        partitions.retain(|tp| inner.lock().fetcher.awaits_committed(tp));
        if partitions.is_empty() {
            return;
        }
        match fetch_committed(&inner, &group, &partitions).await {
            Ok(mut committed) => {
                let mut st = inner.lock();
                for tp in &partitions {
                    let offset = committed.remove(tp).flatten().map(|o| (o.offset, o.leader_epoch));
                    st.fetcher.committed(tp, offset);
                }
                drop(st);
                inner.wake.notify_one();
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, group, "committed offsets of assigned partitions: trying again");
                inner.lock().poll_error = Some(e);
                inner.data.notify_waiters();
                let pause = inner.config.retry_backoff_max;
                drop(inner);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

pub(super) async fn fetch_committed(
    inner: &Inner,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, Option<OffsetAndMetadata>>> {
    let topics: Vec<OffsetFetchRequestTopics> =
        super::by_topic(partitions.iter().map(|tp| (tp.topic.clone(), tp.partition)))
            .into_iter()
            .map(|(name, partition_indexes)| OffsetFetchRequestTopics {
                topic_id: inner.lock().fetcher.topic_id(&name),
                name: (&*name).into(),
                partition_indexes,
                ..Default::default()
            })
            .collect();
    let request = OffsetFetchRequest {
        require_stable: true,
        groups: vec![OffsetFetchRequestGroup { group_id: group.into(), topics: Some(topics), ..Default::default() }],
        ..Default::default()
    };
    let client = &inner.client;
    let request = &request;
    // UNSTABLE_OFFSET_COMMIT: a transaction is committing offsets of the group; wait for it.
    let retriable = |e: &Error| e.is_retriable() || e.code() == Some(ErrorCode::UNSTABLE_OFFSET_COMMIT);
    let mut results = client
        .to_coordinators(
            CoordinatorType::Group,
            vec![group.to_owned()],
            retry(inner),
            retriable,
            |node, _| async move {
                let r = client.send_control(node, request, 9).await?;
                Ok(vec![(group.to_owned(), committed_from(&r, group))])
            },
        )
        .await;
    results.remove(group).unwrap_or_else(|| Err(no_result(group)))
}

/// Retries until `default.api.timeout.ms`, with the consumer's `retry.backoff.ms`.
fn retry(inner: &Inner) -> Retry<'_> {
    let backoff = Backoff::new(inner.config.retry_backoff, inner.config.retry_backoff_max);
    Retry::with_backoff(&inner.client, inner.config.default_api_timeout, backoff)
}

fn no_result(group: &str) -> Error {
    Error::Protocol { broker: "coordinator".into(), reason: format!("no answer for group {group}") }
}

fn committed_from(
    r: &crate::codec::messages::OffsetFetchResponse,
    group: &str,
) -> Result<BTreeMap<TopicPartition, Option<OffsetAndMetadata>>> {
    let g = r.groups.iter().find(|g| &*g.group_id == group).ok_or_else(|| Error::Protocol {
        broker: "coordinator".into(),
        reason: format!("OffsetFetch answer without group {group}"),
    })?;
    if g.error_code != ErrorCode::NONE {
        return Err(Error::broker(g.error_code, None, format!("OffsetFetch for group {group}")));
    }
    let mut out = BTreeMap::new();
    for t in &g.topics {
        for p in &t.partitions {
            if p.error_code != ErrorCode::NONE {
                return Err(Error::broker(
                    p.error_code,
                    None,
                    format!("OffsetFetch of {}-{}", t.name, p.partition_index),
                ));
            }
            let value = (p.committed_offset >= 0).then(|| OffsetAndMetadata {
                offset: p.committed_offset,
                leader_epoch: (p.committed_leader_epoch >= 0).then_some(p.committed_leader_epoch),
                metadata: p.metadata.as_deref().filter(|m| !m.is_empty()).map(str::to_owned),
            });
            out.insert(TopicPartition::new(&*t.name, p.partition_index), value);
        }
    }
    Ok(out)
}

/// The error of an operation on a partition that is not assigned.
fn not_assigned(operation: &str, tp: &TopicPartition) -> Error {
    Error::misuse(operation, format!("{tp} is not assigned to this consumer"))
}

// Every update under this lock leaves the state consistent, so a poisoned lock is usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
