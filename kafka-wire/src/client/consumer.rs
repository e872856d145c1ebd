//! The consumer: per-broker fetch loops with incremental fetch sessions, positions, seeks,
//! pause/resume, read_committed filtering, offset commits, and consumer-group membership.
//!
//! A background driver task owns the network side: it keeps one Fetch request in flight per
//! broker for the assigned, unpaused partitions (up to `queued.max.messages.kbytes` of fetched
//! data waiting), resolves positions (committed offsets, `auto.offset.reset`), and runs the
//! group membership. Each Fetch answer is split and checked (framing, CRCs) and filtered
//! (read_committed) by the task that sent it, outside the state's lock (on the blocking pool
//! when it is large), and buffered at once with its compressed batches as received, so that the
//! node's next fetch goes out while they are decompressed: the driver decompresses them ahead
//! of the application, in order, off the lock on the blocking pool, a little ahead per partition
//! and within `fetch.max.bytes` across partitions (counted after decompression). The application's task decodes records as it
//! polls them, so decoding scales with the application's own concurrency; positions advance
//! only as records are handed out, and a seek discards whatever was fetched for the old
//! position.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
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
use crate::codec::compression::Compression;
use crate::codec::messages::fetch::{FetchPartition, FetchTopic, ForgottenTopic};
use crate::codec::messages::list_offsets::{ListOffsetsPartition, ListOffsetsTopic};
use crate::codec::messages::metadata::MetadataRequestTopic;
use crate::codec::messages::offset_commit::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use crate::codec::messages::offset_fetch::{OffsetFetchRequestGroup, OffsetFetchRequestTopics};
use crate::codec::messages::offset_for_leader_epoch::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use crate::codec::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetFetchRequest, OffsetForLeaderEpochRequest,
};
use crate::codec::record_batch::{
    BatchHeader, Headers, RecordBatch, RecordBatches, Records, TimestampType, HEADER_SIZE,
};
use crate::codec::{ErrorCode, Uuid};
use crate::proto::fetch_session::{FetchSession, SessionPartition};
use crate::proto::producer::TopicPartition;
use crate::proto::read_committed::AbortedFilter;

/// A record handed to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: Arc<str>,
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

impl ConsumerRecord {
    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition { topic: self.topic.clone(), partition: self.partition }
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

#[derive(Default)]
pub(super) struct State {
    pub(super) partitions: BTreeMap<TopicPartition, PartitionState>,
    pub(super) topics: HashMap<Arc<str>, TopicMeta>,
    pub(super) sessions: HashMap<i32, FetchSession>,
    /// The nodes with a Fetch in flight, and when it was sent.
    pub(super) fetching: HashMap<i32, Instant>,
    /// A decompression job is running ([`start_decompression`]); one at a time.
    pub(super) decompressing: bool,
    pub(super) metadata_wanted: bool,
    pub(super) resets_in_flight: HashSet<TopicPartition>,
    /// Partitions with an OffsetForLeaderEpoch validation in flight.
    pub(super) validations_in_flight: HashSet<TopicPartition>,
    /// An error every later poll reports (for example `auto.offset.reset=none` with no offset).
    pub(super) poll_error: Option<Error>,
    /// Rotates the partition polls start at, so that none starves.
    pub(super) next_partition: usize,
    /// Rotates the partition decompression starts at, likewise.
    pub(super) next_decompress: usize,
    pub(super) driver_stopped: bool,
    /// Why the driver stopped, if it did not stop because the consumer was closed (a panic):
    /// what every later call reports.
    pub(super) driver_failed: Option<Error>,
    pub(super) group: super::consumer_group::GroupState,
}

#[derive(Clone, Debug)]
pub(super) struct TopicMeta {
    pub(super) id: Uuid,
    /// (leader, leader epoch) per partition; leader -1 when there is none.
    pub(super) leaders: Vec<(i32, i32)>,
}

#[derive(Default)]
pub(super) struct PartitionState {
    /// The next offset to hand out; `None` until resolved from a commit or a reset.
    pub(super) position: Option<i64>,
    /// The leader epoch of the last record handed out.
    pub(super) position_epoch: Option<i32>,
    /// The next offset to fetch (at or past `position`).
    pub(super) fetch_offset: i64,
    pub(super) last_fetched_epoch: i32,
    pub(super) paused: bool,
    pub(super) reset: Option<ResetTo>,
    pub(super) high_watermark: Option<i64>,
    pub(super) last_stable_offset: Option<i64>,
    pub(super) log_start_offset: Option<i64>,
    /// Fetched batches not yet handed out, in order, those of aborted transactions and control
    /// batches left out: ready ones first, then compressed ones as received (the driver
    /// decompresses them ahead of the application, in order).
    pub(super) buffer: VecDeque<Buffered>,
    /// The bytes `buffer` holds: compressed batches at their size on the wire, the others at
    /// their decoded size.
    pub(super) buffered: usize,
    /// The bytes of `buffer`'s ready batches.
    pub(super) ready: usize,
    /// The first compressed batch did not decompress within this many bytes (the
    /// decompression budget left then): it is tried again only once more is free.
    pub(super) decompress_wait: Option<usize>,
    /// How many times their size on the wire the partition's last batches decompressed to
    /// (at least 1): how many compressed batches a decompression job is given.
    pub(super) inflation: usize,
    pub(super) current: Option<(Records, i32, TimestampType)>,
    /// Bumped by every seek: fetch results for an older epoch are dropped.
    pub(super) seek_epoch: u64,
    /// Waiting for its committed offset (group members).
    pub(super) awaiting_committed: bool,
    /// The partition's leader epoch in the last metadata seen; a higher one (a new leader)
    /// makes the position be validated (KIP-320).
    pub(super) leader_epoch: Option<i32>,
    /// The position awaits validation against the leader's log (KIP-320), to be asked no
    /// earlier than this. Nothing is fetched or handed out meanwhile.
    pub(super) validate_at: Option<Instant>,
    /// An error that stops the partition until the application seeks: every poll reports it.
    /// The log was truncated below the position and `auto.offset.reset` is none (Java's
    /// `LogTruncationException`), or the batch at the position is corrupt (Java's
    /// `CorruptRecordException`: with `check.crcs`, a CRC mismatch; with or without it, a batch
    /// that does not frame or decompress); seeking past that batch goes on after it. (A record
    /// inside a batch that does not decode is reported once by `poll` and its batch skipped.)
    pub(super) truncation: Option<Error>,
    /// A corrupt batch found after the batches buffered: it becomes `truncation` once they
    /// are handed out. Nothing more is fetched meanwhile.
    pub(super) corrupt: Option<Error>,
}

/// A fetched batch ready to be decoded, waiting to be handed out.
pub(super) struct FetchedBatch {
    header: BatchHeader,
    /// The records section, decompressed (a slice of the Fetch answer if not compressed).
    data: Bytes,
}

impl FetchedBatch {
    /// The bytes it holds, as counted against `queued.max.messages.kbytes`.
    fn size(&self) -> usize {
        HEADER_SIZE + self.data.len()
    }
}

/// A fetched batch in a partition's buffer.
pub(super) enum Buffered {
    /// Not compressed (a slice of the Fetch answer), or decompressed: ready to hand out.
    Ready(FetchedBatch),
    /// Compressed, as received (checked, a slice of the Fetch answer): the driver decompresses
    /// it before it can be handed out.
    Compressed(RecordBatch),
}

impl Buffered {
    /// The bytes it holds: its decoded size when ready, its size on the wire when compressed.
    fn size(&self) -> usize {
        match self {
            Buffered::Ready(b) => b.size(),
            Buffered::Compressed(b) => b.as_bytes().len(),
        }
    }

    fn header(&self) -> &BatchHeader {
        match self {
            Buffered::Ready(b) => &b.header,
            Buffered::Compressed(b) => b.header(),
        }
    }
}

/// Where a partition without a usable position goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetTo {
    /// The log start offset (`auto.offset.reset=earliest`).
    Earliest,
    /// The log end offset: only records produced from now on (`auto.offset.reset=latest`).
    Latest,
    /// The earliest offset whose timestamp is at or after this one (milliseconds).
    Timestamp(i64),
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
        let inner = Arc::new(Inner {
            client,
            owns_client,
            config,
            state: Mutex::new(State::default()),
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
    /// keep their positions.
    pub fn assign(&self, partitions: impl IntoIterator<Item = TopicPartition>) {
        let wanted: BTreeSet<TopicPartition> = partitions.into_iter().collect();
        let mut st = self.inner.lock();
        let removed: Vec<TopicPartition> = st.partitions.keys().filter(|tp| !wanted.contains(*tp)).cloned().collect();
        for tp in removed {
            st.drop_partition(&tp);
        }
        for tp in wanted {
            st.partitions.entry(tp).or_default();
        }
        st.metadata_wanted = true;
        drop(st);
        self.inner.wake.notify_one();
    }

    /// The partitions currently assigned.
    pub fn assignment(&self) -> BTreeSet<TopicPartition> {
        self.inner.lock().partitions.keys().cloned().collect()
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

    async fn poll_up_to(&self, timeout: Duration, max_records: usize) -> Result<Vec<ConsumerRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.run_group_events().await?;
            let notified = self.inner.data.notified();
            {
                let mut st = self.inner.lock();
                st.group.poll_called(Instant::now());
                if let Some(e) = st.poll_error.take() {
                    return Err(e);
                }
                if let Some(e) = st.partitions.values().find_map(|p| p.truncation.clone()) {
                    return Err(e);
                }
                let records = st.take_records(max_records);
                if !records.is_empty() {
                    drop(st);
                    self.inner.wake.notify_one();
                    return Ok(records);
                }
                if st.driver_stopped {
                    return Err(st.driver_failed.clone().unwrap_or(Error::Closed { broker: "consumer".into() }));
                }
            }
            self.inner.wake.notify_one();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
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
        let mut st = self.inner.lock();
        let p = st.partition_mut(tp, "seek")?;
        p.set_position(offset);
        drop(st);
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
                if let Some(e) = &st.driver_failed {
                    return Err(e.clone());
                }
                let p = st.partition_mut(tp, "position")?;
                if let Some(e) = &p.truncation {
                    return Err(e.clone());
                }
                if let (Some(pos), true) = (p.position, p.usable()) {
                    return Ok(pos);
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
        let st = self.inner.lock();
        let p = st.partitions.get(tp)?;
        let end = match self.inner.config.isolation_level {
            IsolationLevel::ReadCommitted => p.last_stable_offset.or(p.high_watermark),
            IsolationLevel::ReadUncommitted => p.high_watermark,
        }?;
        Some((end - p.position?).max(0))
    }

    /// Stops fetching `partitions` without leaving the group; buffered records of them are
    /// kept but not handed out until resumed.
    pub fn pause(&self, partitions: &[TopicPartition]) -> Result<()> {
        let mut st = self.inner.lock();
        for tp in partitions {
            st.partition_mut(tp, "pause")?.paused = true;
        }
        Ok(())
    }

    /// Fetches `partitions` again after [`Consumer::pause`]; their buffered records are handed out
    /// again. An error if one of them is not assigned.
    pub fn resume(&self, partitions: &[TopicPartition]) -> Result<()> {
        let mut st = self.inner.lock();
        for tp in partitions {
            st.partition_mut(tp, "resume")?.paused = false;
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
        self.inner.lock().partitions.iter().filter(|(_, p)| p.paused).map(|(tp, _)| tp.clone()).collect()
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
            let p = st.partition_mut(tp, "seek")?;
            p.clear();
            p.position = None;
            p.reset = Some(to);
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

    fn learn(&self, response: &MetadataResponse) {
        let mut st = self.lock();
        for t in &response.topics {
            let Some(name) = t.name.as_deref() else { continue };
            if t.error_code != ErrorCode::NONE {
                continue;
            }
            // A topic's partitions are numbered 0..n-1, so the table is as long as the list the
            // broker sent, never as long as an index it claims: an index outside the list is a
            // protocol violation, ignored (that partition stays without a leader).
            let mut leaders = vec![(-1, -1); t.partitions.len()];
            for p in &t.partitions {
                match usize::try_from(p.partition_index).ok().and_then(|i| leaders.get_mut(i)) {
                    Some(slot) => {
                        *slot = (if p.error_code == ErrorCode::NONE { p.leader_id } else { -1 }, p.leader_epoch)
                    }
                    None => tracing::debug!(
                        topic = name,
                        partition = p.partition_index,
                        count = t.partitions.len(),
                        "metadata names a partition beyond the topic's partition count; ignored"
                    ),
                }
            }
            st.topics.insert(name.into(), TopicMeta { id: t.topic_id, leaders });
        }
        // A leader epoch above the one last seen means a new leader, whose log may have been
        // truncated below what was fetched (an unclean election): validate those positions.
        let now = Instant::now();
        let State { partitions, topics, .. } = &mut *st;
        for (tp, p) in partitions.iter_mut() {
            let Some(&(_, epoch)) = topics.get(&tp.topic).and_then(|m| m.leaders.get(tp.partition as usize)) else {
                continue;
            };
            if epoch < 0 || p.leader_epoch.is_some_and(|seen| epoch <= seen) {
                continue;
            }
            let changed = p.leader_epoch.is_some();
            p.leader_epoch = Some(epoch);
            if changed && p.position.is_some() && p.truncation.is_none() && p.epoch_to_validate().is_some() {
                tracing::debug!(%tp, epoch, "new partition leader; validating the position");
                p.validate_at = Some(now);
            }
        }
    }
}

impl State {
    fn partition_mut(&mut self, tp: &TopicPartition, operation: &str) -> Result<&mut PartitionState> {
        self.partitions
            .get_mut(tp)
            .ok_or_else(|| Error::misuse(operation, format!("{tp} is not assigned to this consumer")))
    }

    pub(super) fn drop_partition(&mut self, tp: &TopicPartition) {
        self.partitions.remove(tp);
    }

    /// The fetched bytes buffered across partitions, as counted against
    /// `queued.max.messages.kbytes`.
    fn buffered_bytes(&self) -> usize {
        self.partitions.values().map(|p| p.buffered).sum()
    }

    /// The decompressed (and uncompressed) bytes waiting to be handed out across partitions, as
    /// counted against `fetch.max.bytes`.
    fn ready_bytes(&self) -> usize {
        self.partitions.values().map(|p| p.ready).sum()
    }

    pub(super) fn positions(&self) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.usable())
            .filter_map(|(tp, p)| {
                p.position.map(|o| {
                    (tp.clone(), OffsetAndMetadata { offset: o, leader_epoch: p.position_epoch, metadata: None })
                })
            })
            .collect()
    }

    fn leader(&self, tp: &TopicPartition) -> Option<(i32, i32)> {
        self.topics.get(&tp.topic)?.leaders.get(tp.partition as usize).copied().filter(|(l, _)| *l >= 0)
    }

    /// Takes up to `max` records, round-robin over partitions, advancing positions.
    fn take_records(&mut self, max: usize) -> Vec<ConsumerRecord> {
        let mut out = Vec::new();
        let keys: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        if keys.is_empty() {
            return out;
        }
        let start = self.next_partition % keys.len();
        self.next_partition = self.next_partition.wrapping_add(1);
        for tp in keys[start..].iter().chain(&keys[..start]) {
            if out.len() >= max {
                break;
            }
            let Some(p) = self.partitions.get_mut(tp) else { continue };
            if p.paused || p.position.is_none() || !p.usable() {
                continue;
            }
            p.take(tp, max - out.len(), &mut out, &mut self.poll_error);
        }
        out
    }
}

impl PartitionState {
    fn push(&mut self, batch: Buffered) {
        self.buffered += batch.size();
        if let Buffered::Ready(b) = &batch {
            self.ready += b.size();
        }
        self.buffer.push_back(batch);
    }

    /// Takes the first batch if it is ready.
    fn pop_ready(&mut self) -> Option<FetchedBatch> {
        let Some(Buffered::Ready(_)) = self.buffer.front() else { return None };
        let Some(Buffered::Ready(batch)) = self.buffer.pop_front() else { return None };
        self.buffered -= batch.size();
        self.ready -= batch.size();
        Some(batch)
    }

    /// Replaces the compressed batch at `base_offset` with its decompressed records section;
    /// returns its size before and after.
    fn decompressed(&mut self, base_offset: i64, data: Bytes) -> (usize, usize) {
        let Some(slot) =
            self.buffer.iter_mut().find(|b| matches!(b, Buffered::Compressed(c) if c.base_offset() == base_offset))
        else {
            return (0, 0);
        };
        let old = slot.size();
        *slot = Buffered::Ready(FetchedBatch { header: slot.header().clone(), data });
        let new = slot.size();
        self.buffered = self.buffered - old + new;
        self.ready += new;
        (old, new)
    }

    /// Drops the compressed batch at `base_offset`, which cannot be used, and every batch after
    /// it: the partition stops there with `error` once the batches before are handed out.
    fn stop_at_corrupt(&mut self, base_offset: i64, error: Error) {
        let Some(at) =
            self.buffer.iter().position(|b| matches!(b, Buffered::Compressed(c) if c.base_offset() == base_offset))
        else {
            return;
        };
        for b in self.buffer.drain(at..) {
            self.buffered -= b.size();
            if let Buffered::Ready(r) = &b {
                self.ready -= r.size();
            }
        }
        // Fetching goes no further than the corrupt batch (and nothing more is fetched until a
        // seek); once what is before it is handed out, the position stops there.
        self.fetch_offset = self.position.map_or(base_offset, |p| p.max(base_offset));
        self.last_fetched_epoch = match (self.buffer.back(), &self.current) {
            (Some(b), _) => b.header().partition_leader_epoch,
            (None, Some((_, epoch, _))) => *epoch,
            (None, None) => self.position_epoch.unwrap_or(-1),
        };
        self.decompress_wait = None;
        self.corrupt = Some(error);
        if self.buffer.is_empty() && self.current.is_none() {
            self.truncation = self.corrupt.take();
        }
    }

    fn clear(&mut self) {
        self.buffer.clear();
        self.buffered = 0;
        self.ready = 0;
        self.decompress_wait = None;
        self.current = None;
        self.seek_epoch += 1;
        self.validate_at = None;
        self.truncation = None;
        self.corrupt = None;
    }

    /// Neither awaiting validation nor stopped by a log truncation: its position can be fetched
    /// from and its records handed out.
    pub(super) fn usable(&self) -> bool {
        self.validate_at.is_none() && self.truncation.is_none()
    }

    /// Whether the next fetch may ask for this partition: usable, and not stopped at a corrupt
    /// batch whose preceding records are still being handed out.
    fn fetchable(&self) -> bool {
        self.usable() && self.corrupt.is_none()
    }

    /// The (offset, leader epoch) the next fetch continues from, if its epoch is known: the
    /// last fetched batch's epoch, or the epoch of the last record handed out when nothing past
    /// the position is fetched (a committed offset carries one too).
    fn epoch_to_validate(&self) -> Option<(i64, i32)> {
        if self.last_fetched_epoch >= 0 {
            return Some((self.fetch_offset, self.last_fetched_epoch));
        }
        let position = self.position?;
        let epoch = self.position_epoch.filter(|e| *e >= 0)?;
        (self.fetch_offset == position).then_some((position, epoch))
    }

    pub(super) fn set_position(&mut self, offset: i64) {
        self.clear();
        self.position = Some(offset);
        self.position_epoch = None;
        self.fetch_offset = offset;
        self.reset = None;
        self.last_fetched_epoch = -1;
    }

    /// Hands out up to `max` records at or past the position, up to the first batch not
    /// decompressed yet.
    fn take(&mut self, tp: &TopicPartition, max: usize, out: &mut Vec<ConsumerRecord>, error: &mut Option<Error>) {
        let Some(mut position) = self.position else { return };
        while out.len() < max {
            if self.current.is_none() {
                let Some(batch) = self.pop_ready() else { break };
                // Records below the position (a batch fetched from its middle) are skipped below.
                let header = &batch.header;
                self.current = Some((
                    Records::from_data(header, batch.data),
                    header.partition_leader_epoch,
                    header.timestamp_type(),
                ));
                continue;
            }
            let Some((records, epoch, ts_type)) = self.current.as_mut() else { break };
            match records.next() {
                None => self.current = None,
                Some(Err(e)) => {
                    // A batch whose records do not decode: report it and skip past it so that
                    // polling can go on.
                    *error = Some(Error::Decode { broker: format!("fetch of {tp}"), source: e });
                    self.current = None;
                    break;
                }
                Some(Ok(r)) => {
                    if r.offset < position {
                        continue;
                    }
                    position = r.offset + 1;
                    self.position_epoch = Some(*epoch);
                    out.push(ConsumerRecord {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                        timestamp_type: *ts_type,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                        leader_epoch: *epoch,
                    });
                }
            }
        }
        // Everything fetched is handed out: skipped batches (control markers, aborted
        // transactions) between here and the fetch offset are passed too.
        if self.buffer.is_empty() && self.current.is_none() {
            position = position.max(self.fetch_offset);
            // What came before a corrupt batch is handed out: the partition stops there.
            if let Some(e) = self.corrupt.take() {
                self.truncation = Some(e);
            }
        }
        self.position = Some(position);
    }
}

// ===== driver =====

enum DriverEvent {
    /// A Fetch answer, checked and filtered (outside the state's lock), not decompressed.
    Fetched {
        node: i32,
        result: Result<PreparedFetch>,
    },
    /// Batches decompressed ahead of the application.
    Decompressed(Result<Vec<DecompressOutput>>),
    Reset {
        tp: TopicPartition,
        seek_epoch: u64,
        result: Result<i64>,
    },
    /// OffsetForLeaderEpoch answers for positions being validated; `Ok(None)` when the leader
    /// does not offer the API (the Fetch v12+ divergence check is then the only one).
    Validated {
        sent: Vec<Validation>,
        result: Result<Option<EpochEnds>>,
    },
    Metadata(Result<MetadataResponse>),
}

/// Per partition, the leader's (epoch, end offset) for the epoch asked about, or its error.
type EpochEnds = Vec<(TopicPartition, Result<(i32, i64)>)>;

/// A position sent for validation: the offset and leader epoch asked about, and the seek
/// epoch, so that an answer for a position since moved is dropped.
#[derive(Clone, Debug)]
struct Validation {
    tp: TopicPartition,
    seek_epoch: u64,
    offset: i64,
    epoch: i32,
    /// The current leader epoch the request carried.
    leader_epoch: i32,
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
    let mut metadata_in_flight = false;
    let mut last_metadata = None::<Instant>;
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
        let need_metadata = {
            let st = inner.lock();
            st.metadata_wanted
                || topics_wanted.iter().any(|t| !st.topics.contains_key(&**t))
                || st.partitions.keys().any(|tp| st.leader(tp).is_none())
                || last_metadata.is_none_or(|t| now.duration_since(t) >= inner.config.metadata_max_age)
        };
        // A Fetch the broker has not answered long after fetch.max.wait.ms: the broker may be
        // hung (a stopped process keeps its sockets open), and its request times out only after
        // request.timeout.ms. Metadata, asked of another node, tells whether its partitions have
        // new leaders, which are fetched from meanwhile (asked once per overdue period while it
        // lasts).
        let overdue = inner.config.fetch_max_wait + FETCH_OVERDUE_GRACE;
        let overdue_nodes: Vec<i32> = inner
            .lock()
            .fetching
            .iter()
            .filter(|(_, sent)| now.duration_since(**sent) >= overdue)
            .map(|(node, _)| *node)
            .collect();
        let need_metadata = need_metadata
            || !overdue_nodes.is_empty() && last_metadata.is_none_or(|t| now.duration_since(t) >= overdue);
        let backoff_over = last_metadata.is_none_or(|t| now.duration_since(t) >= inner.config.retry_backoff);
        if need_metadata && !metadata_in_flight && backoff_over {
            metadata_in_flight = true;
            last_metadata = Some(now);
            inner.lock().metadata_wanted = false;
            let client = inner.client.clone();
            let pattern = super::consumer_group::is_pattern(&inner);
            let tx = tx.clone();
            // The client asks the connection with the fewest requests in flight, which may be the
            // hung broker's when it is the only one open.
            let other = (!overdue_nodes.is_empty())
                .then(|| client.brokers().into_iter().map(|b| b.node_id).find(|n| !overdue_nodes.contains(n)))
                .flatten();
            tokio::spawn(async move {
                let names: Vec<&str> = topics_wanted.iter().map(|t| &**t).collect();
                let result = match other {
                    Some(node) => client.send(node, &metadata_request(&names, pattern)).await,
                    None if pattern => client.metadata(None).await,
                    None => client.metadata(Some(&names)).await,
                };
                let _ = tx.send(DriverEvent::Metadata(result));
            });
        }
        super::consumer_group::step(&inner, now).await;
        start_resets(&inner, &tx);
        start_validations(&inner, &tx);
        start_fetches(&inner, &tx);
        start_decompression(&inner, &tx);
        let wakeup = super::consumer_group::next_timeout(&inner)
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + inner.config.retry_backoff.max(Duration::from_millis(100)))
            .min(tokio::time::Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = inner.wake.notified() => {}
            Some(event) = rx.recv() => {
                let mut events = vec![event];
                while let Ok(e) = rx.try_recv() {
                    events.push(e);
                }
                for e in events {
                    match e {
                        DriverEvent::Metadata(result) => {
                            metadata_in_flight = false;
                            match result {
                                Ok(r) => {
                                    inner.learn(&r);
                                    super::consumer_group::metadata_updated(&inner, &r);
                                }
                                Err(e) => tracing::debug!(error = %e, "consumer metadata refresh failed"),
                            }
                        }
                        DriverEvent::Fetched { node, result } => handle_fetch(&inner, node, result),
                        DriverEvent::Decompressed(result) => handle_decompressed(&inner, result),
                        DriverEvent::Reset { tp, seek_epoch, result } => handle_reset(&inner, tp, seek_epoch, result),
                        DriverEvent::Validated { sent, result } => handle_validation(&inner, &sent, result),
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

/// Starts ListOffsets lookups for partitions that need a reset.
fn start_resets(inner: &Arc<Inner>, tx: &mpsc::UnboundedSender<DriverEvent>) {
    let mut st = inner.lock();
    let reset_policy = inner.config.auto_offset_reset;
    let mut todo = Vec::new();
    let mut failed = None;
    for (tp, p) in st.partitions.iter_mut() {
        if p.position.is_some() || p.awaiting_committed {
            continue;
        }
        let to = match (p.reset, reset_policy) {
            (Some(to), _) => to,
            (None, OffsetReset::Earliest) => ResetTo::Earliest,
            (None, OffsetReset::Latest) => ResetTo::Latest,
            (None, OffsetReset::None) => {
                failed = Some(tp.clone());
                continue;
            }
        };
        p.reset = Some(to);
        todo.push((tp.clone(), to, p.seek_epoch));
    }
    if let Some(tp) = failed {
        st.poll_error = Some(Error::config(
            "auto.offset.reset",
            format!("{tp} has no committed offset and auto.offset.reset is none"),
        ));
    }
    let mut started = Vec::new();
    for (tp, to, epoch) in todo {
        if st.resets_in_flight.contains(&tp) {
            continue;
        }
        let Some((leader, leader_epoch)) = st.leader(&tp) else { continue };
        started.push((tp, to, epoch, leader, leader_epoch));
    }
    for (tp, ..) in &started {
        st.resets_in_flight.insert(tp.clone());
    }
    drop(st);
    // One ListOffsets per leader, for all of its partitions that need a position.
    let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, ResetTo, u64, i32)>> = BTreeMap::new();
    for (tp, to, seek_epoch, leader, leader_epoch) in started {
        by_leader.entry(leader).or_default().push((tp, to, seek_epoch, leader_epoch));
    }
    let isolation = inner.config.isolation_level.as_i8();
    for (leader, resets) in by_leader {
        let client = inner.client.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let partitions = resets.iter().map(|(tp, to, _, leader_epoch)| {
                let timestamp = match to {
                    ResetTo::Earliest => -2,
                    ResetTo::Latest => -1,
                    ResetTo::Timestamp(t) => *t,
                };
                let partition = ListOffsetsPartition {
                    partition_index: tp.partition,
                    current_leader_epoch: *leader_epoch,
                    timestamp,
                    ..Default::default()
                };
                (tp.topic.clone(), partition)
            });
            let request = ListOffsetsRequest {
                replica_id: -1,
                isolation_level: isolation,
                topics: super::by_topic(partitions)
                    .into_iter()
                    .map(|(topic, partitions)| ListOffsetsTopic {
                        name: (&*topic).into(),
                        partitions,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            let answer = client.send(leader, &request).await;
            for (tp, _, seek_epoch, _) in resets {
                let result = answer.as_ref().map_err(Clone::clone).and_then(|r| {
                    let p = r
                        .topics
                        .iter()
                        .filter(|t| *t.name == *tp.topic)
                        .flat_map(|t| &t.partitions)
                        .find(|p| p.partition_index == tp.partition)
                        .ok_or_else(|| Error::Protocol {
                            broker: format!("node {leader}"),
                            reason: format!("ListOffsets answer without {tp}"),
                        })?;
                    if p.error_code != ErrorCode::NONE {
                        return Err(Error::broker(p.error_code, None, format!("ListOffsets for {tp}")));
                    }
                    Ok(p.offset)
                });
                let _ = tx.send(DriverEvent::Reset { tp, seek_epoch, result });
            }
        });
    }
}

fn handle_reset(inner: &Arc<Inner>, tp: TopicPartition, seek_epoch: u64, result: Result<i64>) {
    let mut st = inner.lock();
    st.resets_in_flight.remove(&tp);
    let Some(p) = st.partitions.get_mut(&tp) else { return };
    if p.seek_epoch != seek_epoch || p.position.is_some() {
        return;
    }
    match result {
        Ok(offset) if offset >= 0 => {
            p.set_position(offset);
        }
        Ok(_) => {
            // No offset for that timestamp: go to the end, as Java's offsetsForTimes + seek does.
            p.reset = Some(ResetTo::Latest);
        }
        Err(e) => {
            tracing::debug!(%tp, error = %e, "offset reset failed; retrying");
            st.metadata_wanted = true;
        }
    }
}

/// Asks the leaders, with OffsetForLeaderEpoch, where the epochs of the positions awaiting
/// validation end in their logs (KIP-320), one request per leader.
fn start_validations(inner: &Arc<Inner>, tx: &mpsc::UnboundedSender<DriverEvent>) {
    let now = Instant::now();
    let mut st = inner.lock();
    let State { partitions, topics, validations_in_flight, .. } = &mut *st;
    let mut by_node: BTreeMap<i32, Vec<Validation>> = BTreeMap::new();
    for (tp, p) in partitions.iter_mut() {
        let Some(at) = p.validate_at else { continue };
        if at > now || validations_in_flight.contains(tp) {
            continue;
        }
        let Some((offset, epoch)) = p.epoch_to_validate().filter(|_| p.position.is_some()) else {
            // Nothing fetched or handed out carries an epoch: nothing to check.
            p.validate_at = None;
            continue;
        };
        let leader = topics.get(&tp.topic).and_then(|m| m.leaders.get(tp.partition as usize)).filter(|(l, _)| *l >= 0);
        let Some(&(leader, leader_epoch)) = leader else { continue };
        by_node.entry(leader).or_default().push(Validation {
            tp: tp.clone(),
            seek_epoch: p.seek_epoch,
            offset,
            epoch,
            leader_epoch,
        });
    }
    for v in by_node.values().flatten() {
        validations_in_flight.insert(v.tp.clone());
    }
    drop(st);
    for (node, sent) in by_node {
        let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
        for v in &sent {
            let part = OffsetForLeaderPartition {
                partition: v.tp.partition,
                current_leader_epoch: v.leader_epoch,
                leader_epoch: v.epoch,
                ..Default::default()
            };
            match topics.iter_mut().find(|t| *t.topic == *v.tp.topic) {
                Some(t) => t.partitions.push(part),
                None => topics.push(OffsetForLeaderTopic {
                    topic: (&*v.tp.topic).into(),
                    partitions: vec![part],
                    ..Default::default()
                }),
            }
        }
        // Replica id -1: a consumer's request.
        let request = OffsetForLeaderEpochRequest { replica_id: -1, topics, ..Default::default() };
        let client = inner.client.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            // On the coordination connection: not queued behind a long-polling Fetch.
            let result = match client.send_control(node, &request, 4).await {
                Ok(r) => Ok(Some(
                    r.topics
                        .iter()
                        .flat_map(|t| {
                            t.partitions.iter().map(move |p| {
                                let tp = TopicPartition::new(&*t.topic, p.partition);
                                let answer = if p.error_code == ErrorCode::NONE {
                                    Ok((p.leader_epoch, p.end_offset))
                                } else {
                                    Err(Error::broker(p.error_code, None, format!("OffsetForLeaderEpoch for {tp}")))
                                };
                                (tp, answer)
                            })
                        })
                        .collect(),
                )),
                Err(Error::UnsupportedVersion { .. }) => Ok(None),
                Err(e) => Err(e),
            };
            let _ = tx.send(DriverEvent::Validated { sent, result });
        });
    }
}

fn handle_validation(inner: &Arc<Inner>, sent: &[Validation], result: Result<Option<EpochEnds>>) {
    let now = Instant::now();
    let retry_at = now + inner.config.retry_backoff;
    let mut guard = inner.lock();
    let st = &mut *guard;
    for v in sent {
        st.validations_in_flight.remove(&v.tp);
    }
    let answers = match result {
        Ok(answers) => answers,
        Err(e) => {
            tracing::debug!(error = %e, "position validation failed; retrying");
            st.metadata_wanted = true;
            for v in sent {
                if let Some(p) =
                    st.partitions.get_mut(&v.tp).filter(|p| p.validate_at.is_some() && p.seek_epoch == v.seek_epoch)
                {
                    p.validate_at = Some(retry_at);
                }
            }
            return;
        }
    };
    for v in sent {
        let Some(p) = st.partitions.get_mut(&v.tp) else { continue };
        if p.seek_epoch != v.seek_epoch || p.validate_at.is_none() || p.epoch_to_validate() != Some((v.offset, v.epoch))
        {
            continue;
        }
        let Some(answers) = answers.as_ref() else {
            // The leader does not offer OffsetForLeaderEpoch: the Fetch's divergence check
            // (v12+, from the last fetched epoch sent) is all there is.
            tracing::debug!(tp = %v.tp, "OffsetForLeaderEpoch not supported; position not validated");
            p.validate_at = None;
            continue;
        };
        match answers.iter().find(|(tp, _)| *tp == v.tp).map(|(_, a)| a) {
            Some(Ok((epoch, end))) => {
                p.validate_at = None;
                apply_epoch_end(p, &v.tp, *epoch, *end, inner.config.auto_offset_reset);
                // A leader elected while this was asked: ask again.
                if p.leader_epoch.is_some_and(|e| e > v.leader_epoch) && p.usable() && p.position.is_some() {
                    p.validate_at = Some(now);
                }
            }
            Some(Err(e)) if !e.is_retriable() => {
                st.poll_error = Some(e.clone());
                p.validate_at = Some(now + inner.config.retry_backoff_max);
            }
            Some(Err(e)) => {
                tracing::debug!(tp = %v.tp, error = %e, "position validation failed; retrying");
                st.metadata_wanted = true;
                p.validate_at = Some(retry_at);
            }
            None => p.validate_at = Some(retry_at),
        }
    }
}

/// Applies a leader's word on the epoch a position continues from (an OffsetForLeaderEpoch
/// answer, or a Fetch's diverging epoch): `end` is the end offset in the leader's log of its
/// largest epoch at or below `epoch`, the first offset whose record may differ from the one
/// fetched. Below the position, records handed out were truncated away (KIP-320): the position
/// goes back to `end` with `auto.offset.reset` set (nothing kept is skipped, nothing lost is
/// read twice), and every poll fails with the divergence with it none. Between the position
/// and the fetch offset, only records fetched ahead diverge; they are fetched again.
fn apply_epoch_end(p: &mut PartitionState, tp: &TopicPartition, epoch: i32, end: i64, reset: OffsetReset) {
    let Some(position) = p.position else { return };
    let undefined = epoch < 0 || end < 0;
    if !undefined && end >= p.fetch_offset {
        // Nothing fetched lies past the end of that epoch. If the leader's log holds an older
        // epoch there than the one fetched, take its epoch, so that the next Fetch's check
        // passes rather than diverging again from the same place.
        if p.last_fetched_epoch > epoch {
            p.last_fetched_epoch = epoch;
        }
        if p.fetch_offset == position && p.position_epoch.is_some_and(|e| e > epoch) {
            p.position_epoch = Some(epoch);
        }
        return;
    }
    let fetched_to = p.fetch_offset;
    p.clear();
    p.fetch_offset = position;
    p.last_fetched_epoch = -1;
    if !undefined && end >= position {
        tracing::debug!(%tp, end, position, fetched_to, "records fetched ahead diverge from the leader's log; fetching them again");
        return;
    }
    let divergence = (!undefined).then_some((end, epoch));
    match (reset, divergence) {
        (OffsetReset::None, _) => {
            tracing::warn!(%tp, position, ?divergence, "log truncation detected and auto.offset.reset is none");
            p.truncation = Some(truncation_error(tp, position, divergence));
        }
        (_, Some((end, epoch))) => {
            tracing::warn!(%tp, position, end, epoch, "log truncation detected; resetting the position to the first offset known to diverge");
            p.position = Some(end);
            p.position_epoch = Some(epoch);
            p.fetch_offset = end;
            p.last_fetched_epoch = epoch;
        }
        (_, None) => {
            tracing::warn!(%tp, position, "log truncation detected, the leader's log holds no epoch at or below the position's; resetting per auto.offset.reset");
            p.position = None;
            p.position_epoch = None;
            p.reset = None;
        }
    }
}

/// The error of a log truncation with `auto.offset.reset=none` (Java's `LogTruncationException`,
/// an `OffsetOutOfRangeException`): it names the partition, the position and the first offset
/// known to diverge.
fn truncation_error(tp: &TopicPartition, position: i64, divergence: Option<(i64, i32)>) -> Error {
    Error::LogTruncation {
        topic: tp.topic.to_string(),
        partition: tp.partition,
        position,
        divergent_offset: divergence.map(|(offset, _)| offset),
    }
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

/// How long past `fetch.max.wait.ms` a Fetch may go unanswered before the consumer asks for
/// metadata, in case the broker is hung and its partitions have moved.
const FETCH_OVERDUE_GRACE: Duration = Duration::from_secs(1);

/// Sends a Fetch to every broker that leads fetchable partitions and has none in flight.
fn start_fetches(inner: &Arc<Inner>, tx: &mpsc::UnboundedSender<DriverEvent>) {
    let config = &inner.config;
    let mut st = inner.lock();
    if st.buffered_bytes() >= config.prefetch_max_bytes {
        return;
    }
    let mut by_node: BTreeMap<i32, BTreeMap<TopicPartition, SessionPartition>> = BTreeMap::new();
    let mut epochs: HashMap<TopicPartition, u64> = HashMap::new();
    for (tp, p) in &st.partitions {
        if p.position.is_none()
            || p.paused
            || !p.fetchable()
            || !p.buffer.is_empty() && p.buffered >= config.max_partition_fetch_bytes
        {
            continue;
        }
        let Some((leader, leader_epoch)) = st.leader(tp) else { continue };
        if st.fetching.contains_key(&leader) {
            continue;
        }
        by_node.entry(leader).or_default().insert(
            tp.clone(),
            SessionPartition {
                fetch_offset: p.fetch_offset,
                max_bytes: config.max_partition_fetch_bytes.min(i32::MAX as usize) as i32,
                current_leader_epoch: leader_epoch,
                // The epoch the log is expected to have just below the fetch offset: the broker
                // answers with the diverging epoch if its log differs there (KIP-595).
                last_fetched_epoch: p.epoch_to_validate().filter(|(o, _)| *o == p.fetch_offset).map_or(-1, |(_, e)| e),
                log_start_offset: -1,
            },
        );
        epochs.insert(tp.clone(), p.seek_epoch);
    }
    let mut requests = Vec::new();
    for (node, wanted) in by_node {
        let plan = st.sessions.entry(node).or_default().plan(&wanted);
        let ids: HashMap<Arc<str>, Uuid> =
            wanted.keys().filter_map(|tp| st.topics.get(&tp.topic).map(|m| (tp.topic.clone(), m.id))).collect();
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (tp, sp) in &plan.partitions {
            let part = FetchPartition {
                partition: tp.partition,
                current_leader_epoch: sp.current_leader_epoch,
                fetch_offset: sp.fetch_offset,
                last_fetched_epoch: sp.last_fetched_epoch,
                log_start_offset: sp.log_start_offset,
                partition_max_bytes: sp.max_bytes,
                ..Default::default()
            };
            match topics.iter_mut().find(|t| *t.topic == *tp.topic) {
                Some(t) => t.partitions.push(part),
                None => topics.push(FetchTopic {
                    topic: (&*tp.topic).into(),
                    topic_id: ids.get(&tp.topic).copied().unwrap_or_default(),
                    partitions: vec![part],
                    ..Default::default()
                }),
            }
        }
        let mut forgotten: Vec<ForgottenTopic> = Vec::new();
        for tp in &plan.forgotten {
            match forgotten.iter_mut().find(|t| *t.topic == *tp.topic) {
                Some(t) => t.partitions.push(tp.partition),
                None => forgotten.push(ForgottenTopic {
                    topic: (&*tp.topic).into(),
                    topic_id: st.topics.get(&tp.topic).map(|m| m.id).unwrap_or_default(),
                    partitions: vec![tp.partition],
                    ..Default::default()
                }),
            }
        }
        let request = FetchRequest {
            replica_id: -1,
            max_wait_ms: config.fetch_max_wait.as_millis().min(i32::MAX as u128) as i32,
            min_bytes: config.fetch_min_bytes.min(i32::MAX as usize) as i32,
            max_bytes: config.fetch_max_bytes.min(i32::MAX as usize) as i32,
            isolation_level: config.isolation_level.as_i8(),
            session_id: plan.session_id,
            session_epoch: plan.session_epoch,
            topics,
            forgotten_topics_data: forgotten,
            rack_id: config.client_rack.clone().unwrap_or_default().into(),
            ..Default::default()
        };
        let sent: Vec<(TopicPartition, i64, u64)> =
            wanted.iter().map(|(tp, sp)| (tp.clone(), sp.fetch_offset, epochs.get(tp).copied().unwrap_or(0))).collect();
        st.fetching.insert(node, Instant::now());
        requests.push((node, request, sent));
    }
    let names: Arc<HashMap<Uuid, Arc<str>>> = Arc::new(st.topics.iter().map(|(n, m)| (m.id, n.clone())).collect());
    drop(st);
    let rules = PrepareRules {
        check_crcs: config.check_crcs,
        read_committed: config.isolation_level == IsolationLevel::ReadCommitted,
    };
    for (node, request, sent) in requests {
        let client = inner.client.clone();
        let tx = tx.clone();
        let backoff = inner.config.retry_backoff;
        let names = names.clone();
        tokio::spawn(async move {
            let result = match client.send_fetch(node, &request).await {
                Ok(response) => prepare_fetch_off_worker(response, sent, names, rules).await,
                Err(e) => {
                    // The node stays marked as fetching meanwhile: a broker that refuses
                    // connections is not asked again in a tight loop.
                    tokio::time::sleep(backoff).await;
                    Err(e)
                }
            };
            let _ = tx.send(DriverEvent::Fetched { node, result });
        });
    }
}

/// How a Fetch answer is turned into buffered batches.
#[derive(Clone, Copy, Debug)]
struct PrepareRules {
    check_crcs: bool,
    read_committed: bool,
}

/// Fetched records of this many bytes or more are checked (CRCs) on tokio's blocking pool rather
/// than on an async worker; decompression always runs there.
const BLOCKING_THRESHOLD: usize = 64 * 1024;

/// A Fetch answer ready for the state: per partition, what to buffer and where to go on.
struct PreparedFetch {
    error_code: ErrorCode,
    session_id: i32,
    partitions: Vec<PreparedPartition>,
}

struct PreparedPartition {
    tp: TopicPartition,
    fetched_from: i64,
    seek_epoch: u64,
    error_code: ErrorCode,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    /// The leader's diverging epoch and its end offset (KIP-595); no records come with it.
    diverging: Option<(i32, i64)>,
    batches: Vec<Buffered>,
    /// The offset after the last batch passed (kept or filtered out) and its leader epoch:
    /// where the next fetch continues.
    next: Option<(i64, i32)>,
    /// A batch that cannot be used; the partition stops at it.
    corrupt: Option<Error>,
}

/// [`prepare_fetch`], on the blocking pool when the answer is large.
async fn prepare_fetch_off_worker(
    response: FetchResponse,
    sent: Vec<(TopicPartition, i64, u64)>,
    names: Arc<HashMap<Uuid, Arc<str>>>,
    rules: PrepareRules,
) -> Result<PreparedFetch> {
    let size: usize =
        response.responses.iter().flat_map(|t| &t.partitions).filter_map(|p| p.records.as_ref()).map(Bytes::len).sum();
    if size < BLOCKING_THRESHOLD {
        return Ok(prepare_fetch(response, &sent, &names, rules));
    }
    tokio::task::spawn_blocking(move || prepare_fetch(response, &sent, &names, rules))
        .await
        .map_err(|e| Error::DriverFailed { driver: "consumer", reason: format!("checking a fetch answer: {e}") })
}

/// Splits the batches of a Fetch answer and checks them (framing, CRCs with `check.crcs`),
/// filters them (read_committed, control batches), and finds where each partition's next fetch
/// continues, without the consumer's state and without decompressing anything: compressed
/// batches are kept as received (they take their size on the wire), so that the node's next
/// fetch can go out at once; [`start_decompression`] decompresses them ahead of the
/// application, within `fetch.max.bytes`.
fn prepare_fetch(
    response: FetchResponse,
    sent: &[(TopicPartition, i64, u64)],
    names: &HashMap<Uuid, Arc<str>>,
    rules: PrepareRules,
) -> PreparedFetch {
    let mut partitions = Vec::new();
    for t in response.responses {
        let topic: Arc<str> = names.get(&t.topic_id).cloned().unwrap_or_else(|| (&*t.topic).into());
        for pd in t.partitions {
            let tp = TopicPartition::new(topic.clone(), pd.partition_index);
            let Some(&(_, fetched_from, seek_epoch)) = sent.iter().find(|(s, ..)| *s == tp) else { continue };
            let mut prepared = PreparedPartition {
                tp,
                fetched_from,
                seek_epoch,
                error_code: pd.error_code,
                high_watermark: pd.high_watermark,
                last_stable_offset: pd.last_stable_offset,
                log_start_offset: pd.log_start_offset,
                diverging: (pd.diverging_epoch.epoch >= 0)
                    .then_some((pd.diverging_epoch.epoch, pd.diverging_epoch.end_offset)),
                batches: Vec::new(),
                next: None,
                corrupt: None,
            };
            if pd.error_code != ErrorCode::NONE || prepared.diverging.is_some() {
                partitions.push(prepared);
                continue;
            }
            let mut filter = rules.read_committed.then(|| {
                AbortedFilter::new(pd.aborted_transactions.iter().flatten().map(|a| (a.producer_id, a.first_offset)))
            });
            let records = pd.records.unwrap_or_default();
            let mut batches =
                if rules.check_crcs { RecordBatches::new(records) } else { RecordBatches::without_crc_check(records) };
            let mut fetch_offset = fetched_from;
            loop {
                let at = batches.next_base_offset();
                let batch = match batches.next() {
                    None => break,
                    Some(Ok(b)) => b,
                    Some(Err(e)) => {
                        prepared.corrupt = Some(corrupt(&prepared.tp, at.unwrap_or(fetch_offset).max(fetch_offset), e));
                        break;
                    }
                };
                if batch.next_offset() <= fetch_offset {
                    continue;
                }
                fetch_offset = batch.next_offset();
                prepared.next = Some((fetch_offset, batch.header().partition_leader_epoch));
                if !filter.as_mut().map_or(!batch.is_control(), |f| f.keep(&batch)) {
                    continue;
                }
                prepared.batches.push(match batch.compression() {
                    Compression::None => Buffered::Ready(FetchedBatch {
                        header: batch.header().clone(),
                        data: batch.as_bytes().slice(HEADER_SIZE..),
                    }),
                    _ => Buffered::Compressed(batch),
                });
            }
            partitions.push(prepared);
        }
    }
    PreparedFetch { error_code: response.error_code, session_id: response.session_id, partitions }
}

/// The error of a batch that cannot be used, at `offset` of `tp`.
fn corrupt(tp: &TopicPartition, offset: i64, e: crate::codec::DecodeError) -> Error {
    let reason = match e {
        crate::codec::DecodeError::DecompressedTooLarge { limit, .. } => {
            format!("the batch decompresses to more than fetch.max.bytes ({limit} bytes)")
        }
        e => e.to_string(),
    };
    Error::CorruptRecord { topic: tp.topic.to_string(), partition: tp.partition, offset, reason }
}

fn handle_fetch(inner: &Arc<Inner>, node: i32, result: Result<PreparedFetch>) {
    let mut st = inner.lock();
    st.fetching.remove(&node);
    let response = match result {
        Ok(r) => r,
        Err(e @ Error::DriverFailed { .. }) => {
            // Checking the answer panicked: a bug, not a fault of the broker's. The consumer
            // stops as if its driver had panicked, rather than fetching the same answer forever.
            tracing::error!(node, error = %e, "the consumer stops");
            st.driver_failed = Some(e);
            inner.closing.store(true, Ordering::Release);
            return;
        }
        Err(e) => {
            tracing::debug!(node, error = %e, "fetch failed");
            if let Some(s) = st.sessions.get_mut(&node) {
                s.handle_failure();
            }
            st.metadata_wanted = true;
            return;
        }
    };
    let session_ok = st.sessions.entry(node).or_default().handle_response(response.error_code, response.session_id);
    if response.error_code != ErrorCode::NONE {
        tracing::debug!(node, error = ?response.error_code, session_ok, "fetch session error");
        if response.error_code == ErrorCode::UNKNOWN_TOPIC_ID
            || response.error_code == ErrorCode::FETCH_SESSION_TOPIC_ID_ERROR
        {
            st.metadata_wanted = true;
        }
        return;
    }
    for pd in response.partitions {
        let tp = &pd.tp;
        // The partition moved to another leader while this was in flight (a hung broker's answer
        // returns late): what the old leader sent is dropped; the new one is fetched from.
        if st.leader(tp).map(|(leader, _)| leader) != Some(node) {
            continue;
        }
        let Some(p) = st.partitions.get_mut(tp) else { continue };
        // A position awaiting validation (or stopped by a truncation) takes no data fetched
        // before: it may come from the part of the log a new leader truncated.
        if p.seek_epoch != pd.seek_epoch || p.fetch_offset != pd.fetched_from || !p.fetchable() {
            continue;
        }
        match pd.error_code {
            ErrorCode::NONE => {}
            ErrorCode::OFFSET_OUT_OF_RANGE => {
                p.clear();
                p.position = None;
                p.reset = None;
                continue;
            }
            code => {
                tracing::debug!(%tp, ?code, "fetch partition error");
                st.metadata_wanted = true;
                continue;
            }
        }
        p.high_watermark = Some(pd.high_watermark);
        p.last_stable_offset = (pd.last_stable_offset >= 0).then_some(pd.last_stable_offset);
        p.log_start_offset = (pd.log_start_offset >= 0).then_some(pd.log_start_offset);
        if let Some((epoch, end_offset)) = pd.diverging {
            // The leader's log differs from what was fetched from the end of this epoch on
            // (KIP-595): the fetch carried no records.
            apply_epoch_end(p, tp, epoch, end_offset, inner.config.auto_offset_reset);
            continue;
        }
        for batch in pd.batches {
            p.push(batch);
        }
        if let Some((offset, epoch)) = pd.next {
            p.fetch_offset = offset;
            p.last_fetched_epoch = epoch;
        }
        if let Some(e) = pd.corrupt {
            tracing::warn!(%tp, error = %e, "corrupt record batch; the partition stops there until a seek");
            p.corrupt = Some(e);
            if p.buffer.is_empty() && p.current.is_none() {
                p.truncation = p.corrupt.take();
            }
        }
    }
}

/// The compressed batches of one partition given to a decompression job.
struct DecompressInput {
    tp: TopicPartition,
    seek_epoch: u64,
    /// Decompressed bytes wanted for the partition: the job stops past them.
    want: usize,
    /// The partition's first compressed batches, in order.
    batches: Vec<RecordBatch>,
}

/// What a decompression job did with one partition's batches, in order.
struct DecompressOutput {
    tp: TopicPartition,
    seek_epoch: u64,
    /// (base offset, records section) of each batch decompressed.
    batches: Vec<(i64, Bytes)>,
    /// The next batch (at this base offset) cannot be used: alone it decompresses past
    /// `fetch.max.bytes`, or its compressed data is damaged.
    corrupt: Option<(i64, Error)>,
    /// The next batch did not decompress within this many bytes, the budget left: it waits
    /// until more is free.
    wait: Option<usize>,
}

/// Decompressed bytes kept ready ahead of the application per partition (past the first batch,
/// which is decompressed whatever its size): enough to cover a decompression job's round trip
/// while the application decodes what is ready, and little enough that records are decoded
/// soon after they are decompressed, while they are still in the CPU's caches (in
/// consume_bench, 128 KiB was at least as fast as 1 MiB, with less memory).
const DECOMPRESS_AHEAD: usize = 128 * 1024;

/// Starts a job that decompresses compressed batches ahead of the application, in each
/// partition's order, off the state's lock and on the blocking pool: about
/// [`DECOMPRESS_AHEAD`] ready per partition, and never more than `fetch.max.bytes` ready
/// across partitions (the decompressed budget; a batch that alone decompresses past it is
/// refused). Backpressure: a batch that does not fit in what is left of the budget waits, and
/// the others wait behind it, until the application has taken enough.
fn start_decompression(inner: &Arc<Inner>, tx: &mpsc::UnboundedSender<DriverEvent>) {
    let config = &inner.config;
    let budget = config.fetch_max_bytes.max(1);
    let mut st = inner.lock();
    if st.decompressing {
        return;
    }
    let available = budget.saturating_sub(st.ready_bytes());
    // A batch waiting for more of the budget goes first: nothing else is decompressed until it
    // fits, so that it cannot be starved.
    if st
        .partitions
        .values()
        .any(|p| !p.paused && p.usable() && p.decompress_wait.is_some_and(|needed| available <= needed))
    {
        return;
    }
    // Partitions take turns at the budget (a different one first each time), one that waited
    // for it before the others.
    let count = st.partitions.len().max(1);
    let start = st.next_decompress % count;
    st.next_decompress = st.next_decompress.wrapping_add(1);
    let mut inputs = Vec::new();
    for (i, (tp, p)) in st.partitions.iter_mut().enumerate() {
        if p.paused || !p.usable() || p.ready >= DECOMPRESS_AHEAD {
            continue;
        }
        let want = DECOMPRESS_AHEAD - p.ready;
        // Enough compressed batches to make up `want` if they inflate as the last ones did.
        let mut batches = Vec::new();
        let mut expected = 0usize;
        for b in &p.buffer {
            let Buffered::Compressed(c) = b else { continue };
            if expected >= want {
                break;
            }
            expected = expected.saturating_add(c.as_bytes().len().saturating_mul(p.inflation.max(1)));
            batches.push(c.clone());
        }
        if batches.is_empty() {
            continue;
        }
        let turn = (p.decompress_wait.is_none(), (i + count - start) % count);
        p.decompress_wait = None;
        inputs.push((turn, DecompressInput { tp: tp.clone(), seek_epoch: p.seek_epoch, want, batches }));
    }
    if inputs.is_empty() || available == 0 {
        return;
    }
    inputs.sort_by_key(|(turn, _)| *turn);
    let inputs: Vec<DecompressInput> = inputs.into_iter().map(|(_, input)| input).collect();
    st.decompressing = true;
    drop(st);
    let tx = tx.clone();
    tokio::spawn(async move {
        let result = tokio::task::spawn_blocking(move || decompress_ahead(inputs, budget, available))
            .await
            .map_err(|e| Error::DriverFailed { driver: "consumer", reason: format!("decompressing batches: {e}") });
        let _ = tx.send(DriverEvent::Decompressed(result));
    });
}

/// Decompresses `inputs` in order within `available` bytes of the `budget` (all of it for a
/// batch when nothing else is ready): the CPU work of a compressed fetch, outside every lock.
fn decompress_ahead(inputs: Vec<DecompressInput>, budget: usize, available: usize) -> Vec<DecompressOutput> {
    let mut used = 0;
    let mut outputs = Vec::with_capacity(inputs.len());
    for input in inputs {
        let mut out = DecompressOutput {
            tp: input.tp,
            seek_epoch: input.seek_epoch,
            batches: Vec::new(),
            corrupt: None,
            wait: None,
        };
        let mut got = 0;
        let mut stop = false;
        for batch in input.batches {
            if got >= input.want {
                break;
            }
            let limit = available - used;
            if limit == 0 {
                stop = true;
                break;
            }
            match batch.records_data(limit) {
                Ok(data) => {
                    used += HEADER_SIZE + data.len();
                    got += HEADER_SIZE + data.len();
                    out.batches.push((batch.base_offset(), data));
                }
                Err(crate::codec::DecodeError::DecompressedTooLarge { .. }) if limit < budget => {
                    out.wait = Some(limit);
                    stop = true;
                    break;
                }
                Err(e) => {
                    out.corrupt = Some((batch.base_offset(), corrupt(&out.tp, batch.base_offset(), e)));
                    break;
                }
            }
        }
        outputs.push(out);
        if stop {
            break;
        }
    }
    outputs
}

fn handle_decompressed(inner: &Arc<Inner>, result: Result<Vec<DecompressOutput>>) {
    let mut st = inner.lock();
    st.decompressing = false;
    let outputs = match result {
        Ok(outputs) => outputs,
        Err(e) => {
            tracing::error!(error = %e, "the consumer stops");
            st.driver_failed = Some(e);
            inner.closing.store(true, Ordering::Release);
            return;
        }
    };
    for out in outputs {
        let Some(p) = st.partitions.get_mut(&out.tp) else { continue };
        // A seek since dropped these batches.
        if p.seek_epoch != out.seek_epoch {
            continue;
        }
        let (mut before, mut after) = (0, 0);
        for (base_offset, data) in out.batches {
            let (old, new) = p.decompressed(base_offset, data);
            before += old;
            after += new;
        }
        if before > 0 {
            p.inflation = after.div_ceil(before).max(1);
        }
        if let Some((base_offset, e)) = out.corrupt {
            tracing::warn!(tp = %out.tp, error = %e, "corrupt record batch; the partition stops there until a seek");
            let e = match e {
                Error::CorruptRecord { topic, partition, offset, reason } => Error::CorruptRecord {
                    topic,
                    partition,
                    offset: p.position.map_or(offset, |position| position.max(offset)),
                    reason,
                },
                e => e,
            };
            p.stop_at_corrupt(base_offset, e);
        }
        p.decompress_wait = out.wait;
    }
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

pub(super) async fn fetch_committed(
    inner: &Inner,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, Option<OffsetAndMetadata>>> {
    let topics: Vec<OffsetFetchRequestTopics> =
        super::by_topic(partitions.iter().map(|tp| (tp.topic.clone(), tp.partition)))
            .into_iter()
            .map(|(name, partition_indexes)| OffsetFetchRequestTopics {
                topic_id: inner.lock().topics.get(&name).map(|m| m.id).unwrap_or_default(),
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

// Every update under this lock leaves the state consistent, so a poisoned lock is usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
