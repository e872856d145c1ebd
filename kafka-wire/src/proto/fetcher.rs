//! The consumer's fetcher, sans IO: per partition, where to read from and what was read.
//!
//! The [`Fetcher`] owns every decision of the consumer's data path; its driver
//! ([`crate::client::Consumer`]) only performs the IO and the CPU work it hands out:
//!
//! - per partition, the position (the next offset to hand out, with the leader epoch of the last
//!   record handed out), the fetch offset ahead of it, and the state: awaiting a committed offset
//!   or a reset (`auto.offset.reset`, `seek_to_*`, resolved with ListOffsets), awaiting
//!   validation after a leader change (KIP-320, OffsetForLeaderEpoch), fetching, paused, or
//!   stopped (a log truncation with `auto.offset.reset=none`, a corrupt batch) until a seek;
//! - which Fetch to send to which leader ([`FetchSession`]s, KIP-227), and what each partition's
//!   answer means: error codes (a leader that moved, an offset out of range), high watermark,
//!   last stable offset, log start, diverging epoch (KIP-595);
//! - the batches fetched and not handed out yet: [`prepare_fetch`] splits and checks an answer
//!   (framing, CRCs) and filters it (read_committed, KIP-98) outside the driver's lock;
//!   compressed batches are decompressed ahead of the application by [`DecompressJob`]s, within
//!   `fetch.max.bytes`; [`Fetcher::take`] decodes records as the application takes them, and
//!   positions advance only then;
//! - when Metadata is needed (a partition without a leader, a fetch that goes unanswered long
//!   past `fetch.max.wait.ms`, a leader error).
//!
//! Requests come out of [`Fetcher::poll_request`] with a [`RequestId`] and a [`Target`]; their
//! answers (or failures) go back with [`Fetcher::handle_response`]. Nothing here reads a clock:
//! `now` comes in with every call that needs it, so a simulation drives it deterministically.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::backoff::Backoff;
use super::driving::{self, RequestId, Target};
use super::fetch_session::{FetchSession, SessionPartition};
use super::producer::TopicPartition;
use super::read_committed::AbortedFilter;
use crate::codec::compression::Compression;
use crate::codec::messages::fetch::{FetchPartition, FetchTopic, ForgottenTopic};
use crate::codec::messages::list_offsets::{ListOffsetsPartition, ListOffsetsTopic};
use crate::codec::messages::offset_for_leader_epoch::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use crate::codec::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use crate::codec::record_batch::{
    BatchHeader, Record, RecordBatch, RecordBatches, Records, TimestampType, HEADER_SIZE,
};
use crate::codec::{DecodeError, DecodeResult, ErrorCode, Uuid};

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

impl ResetTo {
    /// The ListOffsets timestamp that asks for this offset.
    fn timestamp(self) -> i64 {
        match self {
            Self::Earliest => -2,
            Self::Latest => -1,
            Self::Timestamp(t) => t,
        }
    }
}

/// The consumer settings the fetcher decides with.
#[derive(Clone, Debug)]
pub struct FetcherConfig {
    /// `auto.offset.reset`: where a partition without a committed offset (or whose offset is out
    /// of range) goes; `None` for `none`, which stops it with [`FetchError::NoOffset`].
    pub auto_offset_reset: Option<ResetTo>,
    /// `isolation.level=read_committed`: records of aborted transactions are left out.
    pub read_committed: bool,
    /// `check.crcs`: batches are checked against their CRC.
    pub check_crcs: bool,
    /// `fetch.max.wait.ms`.
    pub fetch_max_wait: Duration,
    /// `fetch.min.bytes`.
    pub fetch_min_bytes: usize,
    /// `fetch.max.bytes`: the most a Fetch returns, and the most decompressed bytes kept ready
    /// for the partitions not paused.
    pub fetch_max_bytes: usize,
    /// `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: usize,
    /// `queued.max.messages.kbytes` in bytes: no Fetch goes out while this much is buffered for
    /// the partitions not paused, and a Fetch asks for a partition only while it holds less
    /// than its share (this over the fetchable partitions, at least `max.partition.fetch.bytes`).
    /// A paused partition keeps what it had fetched (at most its share and one answer's worth,
    /// as nothing more is fetched for it) outside this budget, so that it cannot stop the
    /// others' fetches for as long as it stays paused.
    pub prefetch_max_bytes: usize,
    /// `client.rack` (KIP-392).
    pub client_rack: Option<String>,
    /// `retry.backoff.ms`.
    pub retry_backoff: Duration,
    /// `retry.backoff.max.ms`.
    pub retry_backoff_max: Duration,
    /// `metadata.max.age.ms`.
    pub metadata_max_age: Duration,
    /// Seeds the jitter of the backoffs (a simulation replays the same delays); random if `None`.
    pub backoff_seed: Option<u64>,
}

/// Why a partition stopped, or a poll failed. Every poll reports a partition's stop until the
/// application seeks it.
#[derive(Clone, Debug, PartialEq)]
pub enum FetchError {
    /// The partition has no committed offset, or its offset is out of range, and
    /// `auto.offset.reset` is none.
    NoOffset {
        /// The partition.
        tp: TopicPartition,
    },
    /// The log was truncated below the position and `auto.offset.reset` is none (KIP-320;
    /// Java's `LogTruncationException`).
    LogTruncation {
        /// The partition.
        tp: TopicPartition,
        /// The position when the truncation was found.
        position: i64,
        /// The first offset known to diverge, if the leader's log holds an epoch to tell.
        divergent_offset: Option<i64>,
        /// The leader epoch the log holds just below `divergent_offset`: seeking there with it
        /// ([`Fetcher::seek_with_epoch`]) lets the next Fetch check it again, in case the log
        /// was truncated once more since.
        divergent_epoch: Option<i32>,
    },
    /// The batch at `offset` cannot be used: a CRC mismatch with `check.crcs`, a batch that
    /// does not frame, or one that does not decompress (or alone decompresses past
    /// `fetch.max.bytes`). Seeking past it goes on after it.
    Corrupt {
        /// The partition.
        tp: TopicPartition,
        /// The offset the partition stopped at.
        offset: i64,
        /// What is wrong with the batch.
        reason: String,
    },
    /// A record inside a batch did not decode: reported once, and its batch skipped.
    Decode {
        /// The partition.
        tp: TopicPartition,
        /// What did not decode.
        source: DecodeError,
    },
    /// The leader refused to validate the position with an error that retrying does not cure.
    Broker {
        /// The broker's error code.
        code: ErrorCode,
        /// What was asked.
        context: String,
    },
}

/// A request of the fetcher, to send to its [`Target`].
#[derive(Debug)]
pub enum FetcherRequest {
    /// A Fetch. Its answer is to be turned into a [`PreparedFetch`] with [`prepare_fetch`] and
    /// this context (outside any lock: it checks CRCs), then handed back.
    Fetch(Box<FetchRequest>, FetchContext),
    /// ListOffsets for the partitions to reset.
    ListOffsets(ListOffsetsRequest),
    /// OffsetForLeaderEpoch for the positions to validate (KIP-320).
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
}

/// The answer to a [`FetcherRequest`]; `None` when the request failed (no answer, a
/// connection error, a timeout).
#[derive(Debug)]
pub enum FetcherResponse {
    /// A Fetch answer, prepared.
    Fetch(Option<PreparedFetch>),
    /// A ListOffsets answer.
    ListOffsets(Option<ListOffsetsResponse>),
    /// An OffsetForLeaderEpoch answer.
    OffsetForLeaderEpoch(EpochAnswer),
}

/// The outcome of an OffsetForLeaderEpoch request.
#[derive(Debug)]
pub enum EpochAnswer {
    /// The leader answered.
    Answered(OffsetForLeaderEpochResponse),
    /// The leader does not offer the API: the Fetch's divergence check (v12+) is all there is.
    Unsupported,
    /// The request failed.
    Failed,
}

/// Where a partition's position stands, for [`Fetcher::position`].
#[derive(Clone, Debug, PartialEq)]
pub enum PositionStatus {
    /// The partition is not assigned.
    NotAssigned,
    /// Not known yet (a committed offset or a reset is awaited), or awaiting validation.
    Pending,
    /// Stopped until a seek.
    Stopped(FetchError),
    /// The next offset to hand out.
    At(i64),
}

/// What a partition of a Fetch was sent with, so that an answer for a position since moved is
/// dropped: the partition, the offset fetched from, and the seek epoch then.
type Sent = (TopicPartition, i64, u64);

/// What [`prepare_fetch`] needs to know of the Fetch it prepares the answer of.
#[derive(Clone, Debug)]
pub struct FetchContext {
    sent: Vec<Sent>,
    names: Arc<HashMap<Uuid, Arc<str>>>,
    check_crcs: bool,
    read_committed: bool,
}

/// A Fetch answer ready for the fetcher: per partition, what to buffer and where to go on.
#[derive(Debug)]
pub struct PreparedFetch {
    error_code: ErrorCode,
    session_id: i32,
    partitions: Vec<PreparedPartition>,
}

#[derive(Debug)]
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
    corrupt: Option<FetchError>,
}

/// A fetched batch ready to be decoded, waiting to be handed out.
#[derive(Debug)]
struct FetchedBatch {
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
#[derive(Debug)]
enum Buffered {
    /// Not compressed (a slice of the Fetch answer), or decompressed: ready to hand out.
    Ready(FetchedBatch),
    /// Compressed, as received (checked, a slice of the Fetch answer): decompressed by a
    /// [`DecompressJob`] before it can be handed out.
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

#[derive(Clone, Debug)]
struct TopicMeta {
    id: Uuid,
    /// (leader, leader epoch) per partition; leader -1 when there is none.
    leaders: Vec<(i32, i32)>,
}

#[derive(Default)]
struct Partition {
    /// The next offset to hand out; `None` until resolved from a commit or a reset.
    position: Option<i64>,
    /// The leader epoch of the last record handed out.
    position_epoch: Option<i32>,
    /// The next offset to fetch (at or past `position`).
    fetch_offset: i64,
    last_fetched_epoch: i32,
    paused: bool,
    reset: Option<ResetTo>,
    /// A failed reset is asked again no earlier than this.
    reset_retry_at: Option<Instant>,
    high_watermark: Option<i64>,
    last_stable_offset: Option<i64>,
    log_start_offset: Option<i64>,
    /// Fetched batches not yet handed out, in order, those of aborted transactions and control
    /// batches left out: ready ones first, then compressed ones as received.
    buffer: VecDeque<Buffered>,
    /// The bytes `buffer` holds: compressed batches at their size on the wire, the others at
    /// their decoded size.
    buffered: usize,
    /// The bytes of `buffer`'s ready batches.
    ready: usize,
    /// The first compressed batch did not decompress within this many bytes (the
    /// decompression budget left then): it is tried again only once more is free.
    decompress_wait: Option<usize>,
    /// How many times their size on the wire the partition's last batches decompressed to
    /// (at least 1): how many compressed batches a decompression job is given.
    inflation: usize,
    current: Option<(Records, i32, TimestampType)>,
    /// Bumped by every seek: fetch results for an older epoch are dropped.
    seek_epoch: u64,
    /// Waiting for its committed offset (group members).
    awaiting_committed: bool,
    /// The partition's leader epoch in the last metadata seen; a higher one (a new leader)
    /// makes the position be validated (KIP-320).
    leader_epoch: Option<i32>,
    /// The position awaits validation against the leader's log (KIP-320), to be asked no
    /// earlier than this. Nothing is fetched or handed out meanwhile.
    validate_at: Option<Instant>,
    /// Stops the partition until the application seeks: every poll reports it.
    stopped: Option<FetchError>,
    /// A corrupt batch found after the batches buffered: it becomes `stopped` once they are
    /// handed out. Nothing more is fetched meanwhile.
    corrupt: Option<FetchError>,
}

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

/// What a request in flight was sent for.
enum InFlight {
    Fetch { node: i32 },
    ListOffsets { node: i32, resets: Vec<(TopicPartition, u64)> },
    Validation { sent: Vec<Validation> },
}

/// How long past `fetch.max.wait.ms` a Fetch may go unanswered before the fetcher asks for
/// metadata, in case the broker is hung and its partitions have moved.
pub const FETCH_OVERDUE_GRACE: Duration = Duration::from_secs(1);

/// Decompressed bytes kept ready ahead of the application per partition (past the first batch,
/// which is decompressed whatever its size): enough to cover a decompression job's round trip
/// while the application decodes what is ready, and little enough that records are decoded
/// soon after they are decompressed, while they are still in the CPU's caches (in
/// consume_bench, 128 KiB was at least as fast as 1 MiB, with less memory).
const DECOMPRESS_AHEAD: usize = 128 * 1024;

/// The consumer's fetch state machine. See the [module documentation](self).
pub struct Fetcher {
    config: FetcherConfig,
    partitions: BTreeMap<TopicPartition, Partition>,
    topics: HashMap<Arc<str>, TopicMeta>,
    sessions: HashMap<i32, FetchSession>,
    /// The nodes with a Fetch in flight, and when it was sent.
    fetching: HashMap<i32, Instant>,
    /// Per node, the backoff after failed Fetches.
    fetch_backoff: HashMap<i32, Backoff>,
    in_flight: HashMap<RequestId, InFlight>,
    resets_in_flight: HashSet<TopicPartition>,
    validations_in_flight: HashSet<TopicPartition>,
    metadata_wanted: bool,
    metadata_in_flight: bool,
    last_metadata: Option<Instant>,
    /// The topics of the last Metadata request of [`Fetcher::poll_metadata_for`].
    metadata_asked: HashSet<Arc<str>>,
    /// An error the next poll reports (once).
    poll_error: Option<FetchError>,
    /// Rotates the partition takes start at, so that none starves.
    next_partition: usize,
    /// Rotates the partition decompression starts at, likewise.
    next_decompress: usize,
    /// A decompression job is out; one at a time.
    decompressing: bool,
    /// Set by [`Fetcher::take`] when it made room for fetching or decompressing.
    driver_wanted: bool,
    /// The share of the prefetch a partition held when a broker's Fetch was put off for it
    /// (see [`Fetcher::plan_fetches`]): a take that brings a partition under it wakes the driver.
    deferred_share: Option<usize>,
    next_id: u64,
    /// Requests planned and not handed out yet.
    queue: VecDeque<(RequestId, Target, FetcherRequest)>,
}

impl Fetcher {
    /// A fetcher with no partitions.
    pub fn new(config: FetcherConfig) -> Self {
        Self {
            config,
            partitions: BTreeMap::new(),
            topics: HashMap::new(),
            sessions: HashMap::new(),
            fetching: HashMap::new(),
            fetch_backoff: HashMap::new(),
            in_flight: HashMap::new(),
            resets_in_flight: HashSet::new(),
            validations_in_flight: HashSet::new(),
            metadata_wanted: false,
            metadata_in_flight: false,
            metadata_asked: HashSet::new(),
            last_metadata: None,
            poll_error: None,
            next_partition: 0,
            next_decompress: 0,
            decompressing: false,
            driver_wanted: false,
            deferred_share: None,
            next_id: 0,
            queue: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FetcherConfig {
        &self.config
    }

    // ----- assignment and positions -----

    /// Consumes exactly `wanted`: partitions that stay keep their positions and buffers.
    pub fn assign(&mut self, wanted: impl IntoIterator<Item = TopicPartition>) {
        let wanted: HashSet<TopicPartition> = wanted.into_iter().collect();
        self.partitions.retain(|tp, _| wanted.contains(tp));
        for tp in wanted {
            self.partitions.entry(tp).or_default();
        }
        self.metadata_wanted = true;
    }

    /// Adds `tp` (if new) to wait for its committed offset ([`Fetcher::committed`]): no reset
    /// is started for it meanwhile.
    pub fn await_committed(&mut self, tp: TopicPartition) {
        self.partitions.entry(tp).or_default().awaiting_committed = true;
        self.metadata_wanted = true;
    }

    /// Whether `tp` still waits for its committed offset (no seek or reset since).
    pub fn awaits_committed(&self, tp: &TopicPartition) -> bool {
        self.partitions.get(tp).is_some_and(|p| p.awaiting_committed)
    }

    /// The committed offset (and its leader epoch) of a partition that awaited it, `None`
    /// where nothing is committed (it is then reset with `auto.offset.reset`).
    pub fn committed(&mut self, tp: &TopicPartition, committed: Option<(i64, Option<i32>)>) {
        let Some(p) = self.partitions.get_mut(tp) else { return };
        if !p.awaiting_committed {
            return;
        }
        p.awaiting_committed = false;
        if let Some((offset, epoch)) = committed.filter(|(o, _)| *o >= 0) {
            p.set_position(offset);
            p.position_epoch = epoch.filter(|e| *e >= 0);
        }
    }

    /// Stops consuming `tp`; what was fetched for it is dropped.
    pub fn remove(&mut self, tp: &TopicPartition) {
        self.partitions.remove(tp);
    }

    /// The partitions assigned.
    pub fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.partitions.keys()
    }

    /// Whether no partition is assigned.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Whether `tp` is assigned.
    pub fn contains(&self, tp: &TopicPartition) -> bool {
        self.partitions.contains_key(tp)
    }

    /// Moves the position of `tp` to `offset`, dropping what was fetched for the old one.
    /// `false` if `tp` is not assigned.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> bool {
        self.seek_with_epoch(tp, offset, None)
    }

    /// [`Fetcher::seek`] with the leader epoch of the record before `offset` (a committed
    /// offset's, or a [`FetchError::LogTruncation`]'s divergence point): the first Fetch from
    /// there asks the leader whether its log still holds that epoch up to `offset` (KIP-595),
    /// so that a truncation since is detected rather than read past.
    pub fn seek_with_epoch(&mut self, tp: &TopicPartition, offset: i64, leader_epoch: Option<i32>) -> bool {
        let Some(p) = self.partitions.get_mut(tp) else { return false };
        // The application's position wins over a committed offset still on its way.
        p.awaiting_committed = false;
        p.set_position(offset);
        p.position_epoch = leader_epoch.filter(|e| *e >= 0);
        true
    }

    /// Resets the position of `tp` to `to` (resolved with ListOffsets). `false` if `tp` is not
    /// assigned.
    pub fn reset(&mut self, tp: &TopicPartition, to: ResetTo) -> bool {
        let Some(p) = self.partitions.get_mut(tp) else { return false };
        p.awaiting_committed = false;
        p.clear();
        p.position = None;
        p.reset = Some(to);
        true
    }

    /// Pauses or resumes `tp`: a paused partition is neither fetched nor handed out, and keeps
    /// what was fetched. `false` if `tp` is not assigned.
    pub fn set_paused(&mut self, tp: &TopicPartition, paused: bool) -> bool {
        let Some(p) = self.partitions.get_mut(tp) else { return false };
        p.paused = paused;
        true
    }

    /// The partitions paused now.
    pub fn paused(&self) -> impl Iterator<Item = &TopicPartition> {
        self.partitions.iter().filter(|(_, p)| p.paused).map(|(tp, _)| tp)
    }

    /// The positions of the partitions whose position is known and usable (neither awaiting
    /// validation nor stopped), with the leader epoch of the last record handed out: what may
    /// be committed.
    pub fn positions(&self) -> BTreeMap<TopicPartition, (i64, Option<i32>)> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.usable())
            .filter_map(|(tp, p)| p.position.map(|o| (tp.clone(), (o, p.position_epoch))))
            .collect()
    }

    /// Where the position of `tp` stands.
    pub fn position(&self, tp: &TopicPartition) -> PositionStatus {
        let Some(p) = self.partitions.get(tp) else { return PositionStatus::NotAssigned };
        if let Some(e) = &p.stopped {
            return PositionStatus::Stopped(e.clone());
        }
        match (p.position, p.usable()) {
            (Some(position), true) => PositionStatus::At(position),
            _ => PositionStatus::Pending,
        }
    }

    /// Records between the position and the high watermark of `tp` (the last stable offset with
    /// read_committed), as of the last fetch.
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        let p = self.partitions.get(tp)?;
        let end =
            if self.config.read_committed { p.last_stable_offset.or(p.high_watermark) } else { p.high_watermark }?;
        Some((end - p.position?).max(0))
    }

    /// The error the next poll reports: one met since the last poll (taken), else the first
    /// partition's stop (reported until it is sought).
    pub fn poll_error(&mut self) -> Option<FetchError> {
        self.poll_error.take().or_else(|| self.partitions.values().find_map(|p| p.stopped.clone()))
    }

    /// Whether an error waits for the application ([`Fetcher::take_error`]).
    pub fn has_error(&self) -> bool {
        self.poll_error.is_some()
    }

    /// Takes the error met since the last poll, if any (not the partitions' stops).
    pub fn take_error(&mut self) -> Option<FetchError> {
        self.poll_error.take()
    }

    /// Takes up to `max` records, round-robin over the partitions, advancing positions: `emit`
    /// gets each with its partition, its batch's leader epoch and timestamp type. Returns how
    /// many were taken. A record that does not decode ends the take with
    /// [`Fetcher::poll_error`] set and its batch skipped.
    pub fn take(&mut self, max: usize, emit: impl FnMut(&TopicPartition, Record, i32, TimestampType)) -> usize {
        self.take_with(max, &mut Decoded(emit))
    }

    /// [`Fetcher::take`], the records read and handed on by `taker` (as decoded records, or as
    /// spans over bytes the taker keeps).
    pub fn take_with<T: Taker>(&mut self, max: usize, taker: &mut T) -> usize {
        if self.partitions.is_empty() {
            return 0;
        }
        let count = self.partitions.len();
        let start = self.next_partition % count;
        self.next_partition = self.next_partition.wrapping_add(1);
        let mut taken = 0;
        let per_partition = self.config.max_partition_fetch_bytes;
        let prefetch_was_full = self.active_buffered_bytes() >= self.config.prefetch_max_bytes;
        let deferred_share = self.deferred_share;
        let mut wanted = false;
        let (after, before): (Vec<_>, Vec<_>) = self.partitions.iter_mut().enumerate().partition(|(i, _)| *i >= start);
        for (_, (tp, p)) in after.into_iter().chain(before) {
            if taken >= max {
                break;
            }
            if p.paused || p.position.is_none() || !p.usable() {
                continue;
            }
            let was_full = p.holds_a_fetch(per_partition);
            let held_back = deferred_share.filter(|&share| p.holds_a_fetch(share));
            taken += p.take(tp, max - taken, taker, &mut self.poll_error);
            wanted |= was_full && !p.holds_a_fetch(per_partition);
            wanted |= held_back.is_some_and(|share| !p.holds_a_fetch(share));
        }
        if taken > 0 {
            wanted |= prefetch_was_full && self.active_buffered_bytes() < self.config.prefetch_max_bytes;
            // Compressed batches wait, with no job running, only for the budget the take freed.
            wanted |= !self.decompressing
                && self
                    .partitions
                    .values()
                    .any(|p| !p.paused && p.usable() && p.buffered != p.ready && p.ready_ahead() < DECOMPRESS_AHEAD);
        }
        self.driver_wanted |= wanted;
        taken
    }

    /// Whether a [`Fetcher::take`] since the last call made room for the driver's work: a
    /// partition (or the whole prefetch) fell below its limit and can be fetched again, or
    /// compressed batches can be decompressed ahead. A caller that hands records out wakes its
    /// driver only then, rather than once per poll: at millions of records per second a wake per
    /// poll is a cross-thread hand-off per poll, which a busy machine turns into the stall.
    pub fn take_driver_wanted(&mut self) -> bool {
        std::mem::take(&mut self.driver_wanted)
    }

    /// About how many records [`Fetcher::take`] could hand out now without decompressing
    /// anything more (the batches' record counts; records below a position are counted too):
    /// what a caller sizes its output for.
    pub fn ready_records(&self) -> usize {
        self.partitions
            .values()
            .filter(|p| !p.paused && p.position.is_some() && p.usable())
            .map(|p| {
                let current = p.current.as_ref().map_or(0, |(records, _, _)| records.remaining());
                let ready: usize = p
                    .buffer
                    .iter()
                    .map_while(|b| match b {
                        Buffered::Ready(r) => Some(r.header.record_count.max(0) as usize),
                        Buffered::Compressed(_) => None,
                    })
                    .sum();
                current + ready
            })
            .sum()
    }

    /// The fetched bytes buffered across partitions, as counted against
    /// `queued.max.messages.kbytes`.
    pub fn buffered_bytes(&self) -> usize {
        self.partitions.values().map(|p| p.buffered).sum()
    }

    /// The fetched bytes buffered for the partitions not paused, as counted against
    /// `queued.max.messages.kbytes`: a paused partition's buffer does not hold up the others.
    fn active_buffered_bytes(&self) -> usize {
        self.partitions.values().filter(|p| !p.paused).map(|p| p.buffered).sum()
    }

    /// The decompressed (and uncompressed) bytes that can be handed out without decompressing
    /// anything more, across the partitions not paused, as counted against `fetch.max.bytes`.
    fn ready_bytes(&self) -> usize {
        self.partitions.values().filter(|p| !p.paused).map(Partition::ready_ahead).sum()
    }

    // ----- metadata -----

    /// Asks for a Metadata refresh at the next occasion.
    pub fn want_metadata(&mut self) {
        self.metadata_wanted = true;
    }

    /// Whether the last metadata named `topic`.
    pub fn knows_topic(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// The topic id of `topic` in the last metadata (zero if unknown).
    pub fn topic_id(&self, topic: &str) -> Uuid {
        self.topics.get(topic).map(|m| m.id).unwrap_or_default()
    }

    /// Whether a Metadata request is to go out at `now` (`also`: the driver's own reasons, such
    /// as subscribed topics it has no metadata for), at most one at a time and one per
    /// `retry.backoff.ms`. If so it is counted as sent, and the nodes it should not be asked of
    /// (those whose Fetch is overdue: they may be hung) are returned.
    pub fn poll_metadata(&mut self, now: Instant, also: bool) -> Option<Vec<i32>> {
        self.poll_metadata_inner(now, also, false)
    }

    /// [`poll_metadata`](Self::poll_metadata) for the topics a caller wants metadata for: also
    /// when it has none for one of them, and then without waiting out `retry.backoff.ms` if the
    /// last request did not ask for it (a topic assigned or subscribed to just after a request
    /// without it went out, as at start-up: waiting would hold up the first fetch for nothing).
    pub fn poll_metadata_for(&mut self, now: Instant, wanted: &[Arc<str>]) -> Option<Vec<i32>> {
        let unknown = wanted.iter().any(|t| !self.knows_topic(t));
        let not_asked = wanted.iter().any(|t| !self.knows_topic(t) && !self.metadata_asked.contains(t));
        let avoid = self.poll_metadata_inner(now, unknown, not_asked)?;
        self.metadata_asked = wanted.iter().cloned().collect();
        Some(avoid)
    }

    fn poll_metadata_inner(&mut self, now: Instant, also: bool, skip_backoff: bool) -> Option<Vec<i32>> {
        let overdue = self.overdue_nodes(now);
        let period = self.config.fetch_max_wait + FETCH_OVERDUE_GRACE;
        let need = also
            || self.metadata_wanted
            || self.partitions.keys().any(|tp| self.leader(tp).is_none())
            || self.last_metadata.is_none_or(|t| now.duration_since(t) >= self.config.metadata_max_age)
            // A Fetch the broker has not answered long after fetch.max.wait.ms: the broker may be
            // hung (a stopped process keeps its sockets open), and its request times out only
            // after request.timeout.ms. Metadata, asked of another node, tells whether its
            // partitions have new leaders, which are fetched from meanwhile (asked once per
            // overdue period while it lasts).
            || !overdue.is_empty() && self.last_metadata.is_none_or(|t| now.duration_since(t) >= period);
        let backoff_over =
            skip_backoff || self.last_metadata.is_none_or(|t| now.duration_since(t) >= self.config.retry_backoff);
        if !need || self.metadata_in_flight || !backoff_over {
            return None;
        }
        self.metadata_in_flight = true;
        self.last_metadata = Some(now);
        self.metadata_wanted = false;
        Some(overdue)
    }

    /// The answer to the Metadata request of [`Fetcher::poll_metadata`] (`None`: it failed).
    /// A leader epoch above the one last seen means a new leader, whose log may have been
    /// truncated below what was fetched (an unclean election): those positions are validated
    /// (KIP-320) before anything more is fetched or handed out.
    pub fn handle_metadata(&mut self, response: Option<&MetadataResponse>, now: Instant) {
        self.metadata_in_flight = false;
        let Some(response) = response else { return };
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
            self.topics.insert(name.into(), TopicMeta { id: t.topic_id, leaders });
        }
        let Self { partitions, topics, .. } = self;
        for (tp, p) in partitions.iter_mut() {
            let Some(&(_, epoch)) = topics.get(&tp.topic).and_then(|m| m.leaders.get(tp.partition as usize)) else {
                continue;
            };
            if epoch < 0 || p.leader_epoch.is_some_and(|seen| epoch <= seen) {
                continue;
            }
            let changed = p.leader_epoch.is_some();
            p.leader_epoch = Some(epoch);
            if changed && p.position.is_some() && p.stopped.is_none() && p.epoch_to_validate().is_some() {
                tracing::debug!(%tp, epoch, "new partition leader; validating the position");
                p.validate_at = Some(now);
            }
        }
    }

    fn leader(&self, tp: &TopicPartition) -> Option<(i32, i32)> {
        leader_of(&self.topics, tp)
    }

    /// The nodes whose Fetch has gone unanswered for `fetch.max.wait.ms` + [`FETCH_OVERDUE_GRACE`].
    pub fn overdue_nodes(&self, now: Instant) -> Vec<i32> {
        let overdue = self.config.fetch_max_wait + FETCH_OVERDUE_GRACE;
        self.fetching.iter().filter(|(_, sent)| now.duration_since(**sent) >= overdue).map(|(node, _)| *node).collect()
    }

    // ----- requests -----

    /// The next request to send: ListOffsets for positions to reset, OffsetForLeaderEpoch for
    /// positions to validate, a Fetch per leader of fetchable partitions without one in flight
    /// (while less than `queued.max.messages.kbytes` is buffered). Call until `None`.
    pub fn poll_request(&mut self, now: Instant) -> Option<(RequestId, Target, FetcherRequest)> {
        if self.queue.is_empty() {
            self.plan_resets(now);
            self.plan_validations(now);
            self.plan_fetches(now);
        }
        self.queue.pop_front()
    }

    /// When the fetcher next has something to do at a time of its own (after `now`), without
    /// an answer coming in: a validation or a reset to retry, a node's fetch backoff ending, a
    /// Fetch becoming overdue, metadata to refresh.
    pub fn next_timeout(&self, now: Instant) -> Option<Instant> {
        let partitions = self.partitions.values().flat_map(|p| [p.validate_at, p.reset_retry_at]).flatten();
        let backoffs = self.fetch_backoff.values().filter_map(Backoff::until);
        let period = self.config.fetch_max_wait + FETCH_OVERDUE_GRACE;
        let overdue = self.fetching.values().map(|sent| *sent + period);
        // Metadata once it is wanted and the backoff is over, again once per overdue period
        // while a Fetch is overdue, and when it grows old.
        let metadata = self.last_metadata.filter(|_| !self.metadata_in_flight).into_iter().flat_map(|t| {
            [
                self.metadata_wanted.then_some(t + self.config.retry_backoff),
                (!self.fetching.is_empty()).then_some(t + period),
                Some(t + self.config.metadata_max_age),
            ]
            .into_iter()
            .flatten()
        });
        partitions.chain(backoffs).chain(overdue).chain(metadata).filter(|t| *t > now).min()
    }

    fn next_id(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId(self.next_id)
    }

    /// ListOffsets for the partitions that need a position, one request per leader.
    fn plan_resets(&mut self, now: Instant) {
        let policy = self.config.auto_offset_reset;
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, ResetTo, u64, i32)>> = BTreeMap::new();
        for (tp, p) in self.partitions.iter_mut() {
            if p.position.is_some() || p.awaiting_committed {
                continue;
            }
            let Some(to) = p.reset.or(policy) else {
                self.poll_error = Some(FetchError::NoOffset { tp: tp.clone() });
                continue;
            };
            p.reset = Some(to);
            if self.resets_in_flight.contains(tp) || p.reset_retry_at.is_some_and(|at| at > now) {
                continue;
            }
            let Some((leader, leader_epoch)) = leader_of(&self.topics, tp) else { continue };
            p.reset_retry_at = None;
            by_leader.entry(leader).or_default().push((tp.clone(), to, p.seek_epoch, leader_epoch));
        }
        let isolation_level = i8::from(self.config.read_committed);
        for (node, resets) in by_leader {
            let partitions = resets.iter().map(|(tp, to, _, leader_epoch)| {
                let partition = ListOffsetsPartition {
                    partition_index: tp.partition,
                    current_leader_epoch: *leader_epoch,
                    timestamp: to.timestamp(),
                    ..Default::default()
                };
                (tp.topic.clone(), partition)
            });
            let request = ListOffsetsRequest {
                replica_id: -1,
                isolation_level,
                topics: by_topic(partitions)
                    .into_iter()
                    .map(|(topic, partitions)| ListOffsetsTopic {
                        name: (&*topic).into(),
                        partitions,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            for (tp, ..) in &resets {
                self.resets_in_flight.insert(tp.clone());
            }
            let id = self.next_id();
            let resets = resets.into_iter().map(|(tp, _, seek_epoch, _)| (tp, seek_epoch)).collect();
            self.in_flight.insert(id, InFlight::ListOffsets { node, resets });
            self.queue.push_back((id, Target::Node(node), FetcherRequest::ListOffsets(request)));
        }
    }

    /// OffsetForLeaderEpoch for the positions awaiting validation (KIP-320), one request per
    /// leader: where the epochs they continue from end in the leader's log.
    fn plan_validations(&mut self, now: Instant) {
        let Self { partitions, topics, validations_in_flight, .. } = self;
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
            let Some((leader, leader_epoch)) = leader_of(topics, tp) else { continue };
            by_node.entry(leader).or_default().push(Validation {
                tp: tp.clone(),
                seek_epoch: p.seek_epoch,
                offset,
                epoch,
                leader_epoch,
            });
        }
        for (node, sent) in by_node {
            let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
            for v in &sent {
                self.validations_in_flight.insert(v.tp.clone());
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
            let id = self.next_id();
            self.in_flight.insert(id, InFlight::Validation { sent });
            self.queue.push_back((id, Target::Node(node), FetcherRequest::OffsetForLeaderEpoch(request)));
        }
    }

    /// A Fetch to every leader that has none in flight, is not backing off after a failed one,
    /// and leads a fetchable partition that no longer holds a fetch's worth
    /// (`max.partition.fetch.bytes`). The Fetch asks for each of that leader's fetchable
    /// partitions holding less than its share of `queued.max.messages.kbytes`, not only the
    /// ones that ran low: with one Fetch in flight per broker, a Fetch that asks for fewer
    /// partitions brings less per round trip, and a driver that plans as soon as an answer
    /// lands (its partitions still full) would otherwise alternate between halves of them.
    ///
    /// A leader's Fetch that would ask only for partitions read to their end (the last answer's
    /// high watermark, or last stable offset with read_committed) is put off while another of
    /// its partitions is left out for its full buffer with records behind its position: the
    /// broker would hold that Fetch for `fetch.max.wait.ms`, and the partition left out, which
    /// has records to fetch, could not be asked for until it came back. The Fetch goes, with
    /// that partition in it, once a take brings the partition under its share.
    fn plan_fetches(&mut self, now: Instant) {
        self.deferred_share = None;
        let config = &self.config;
        if self.active_buffered_bytes() >= config.prefetch_max_bytes {
            return;
        }
        let fetchable = |p: &Partition| p.position.is_some() && !p.paused && p.fetchable();
        let share = config.prefetch_max_bytes / self.partitions.values().filter(|p| fetchable(p)).count().max(1);
        let share = share.max(config.max_partition_fetch_bytes);
        let mut ran_low: BTreeSet<i32> = BTreeSet::new();
        // Leaders asked for a partition with records to fetch, and leaders of a partition left
        // out for its full buffer with records to fetch.
        let mut has_records: BTreeSet<i32> = BTreeSet::new();
        let mut held_back: BTreeSet<i32> = BTreeSet::new();
        let mut by_node: BTreeMap<i32, BTreeMap<TopicPartition, SessionPartition>> = BTreeMap::new();
        let mut epochs: HashMap<TopicPartition, u64> = HashMap::new();
        for (tp, p) in &self.partitions {
            if !fetchable(p) {
                continue;
            }
            let Some((leader, leader_epoch)) = leader_of(&self.topics, tp) else { continue };
            if self.fetching.contains_key(&leader) || self.fetch_backoff.get(&leader).is_some_and(|b| !b.ready(now)) {
                continue;
            }
            let at_end = p.at_end(config.read_committed);
            if p.holds_a_fetch(share) {
                if !at_end {
                    held_back.insert(leader);
                }
                continue;
            }
            if !at_end {
                has_records.insert(leader);
            }
            if !p.holds_a_fetch(config.max_partition_fetch_bytes) {
                ran_low.insert(leader);
            }
            by_node.entry(leader).or_default().insert(
                tp.clone(),
                SessionPartition {
                    fetch_offset: p.fetch_offset,
                    max_bytes: config.max_partition_fetch_bytes.min(i32::MAX as usize) as i32,
                    current_leader_epoch: leader_epoch,
                    // The epoch the log is expected to have just below the fetch offset: the
                    // broker answers with the diverging epoch if its log differs there (KIP-595).
                    last_fetched_epoch: p
                        .epoch_to_validate()
                        .filter(|(o, _)| *o == p.fetch_offset)
                        .map_or(-1, |(_, e)| e),
                    log_start_offset: -1,
                },
            );
            epochs.insert(tp.clone(), p.seek_epoch);
        }
        by_node.retain(|node, _| ran_low.contains(node));
        if by_node.keys().any(|node| held_back.contains(node) && !has_records.contains(node)) {
            by_node.retain(|node, _| has_records.contains(node) || !held_back.contains(node));
            self.deferred_share = Some(share);
        }
        if by_node.is_empty() {
            return;
        }
        let names: Arc<HashMap<Uuid, Arc<str>>> =
            Arc::new(self.topics.iter().map(|(n, m)| (m.id, n.clone())).collect());
        for (node, wanted) in by_node {
            let plan = self.sessions.entry(node).or_default().plan(&wanted);
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
                        topic_id: self.topics.get(&tp.topic).map(|m| m.id).unwrap_or_default(),
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
                        topic_id: self.topics.get(&tp.topic).map(|m| m.id).unwrap_or_default(),
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
                isolation_level: i8::from(config.read_committed),
                session_id: plan.session_id,
                session_epoch: plan.session_epoch,
                topics,
                forgotten_topics_data: forgotten,
                rack_id: config.client_rack.clone().unwrap_or_default().into(),
                ..Default::default()
            };
            let sent: Vec<Sent> = wanted
                .iter()
                .map(|(tp, sp)| (tp.clone(), sp.fetch_offset, epochs.get(tp).copied().unwrap_or(0)))
                .collect();
            let context = FetchContext {
                sent,
                names: names.clone(),
                check_crcs: config.check_crcs,
                read_committed: config.read_committed,
            };
            self.fetching.insert(node, now);
            let id = RequestId(self.next_id + 1);
            self.next_id += 1;
            self.in_flight.insert(id, InFlight::Fetch { node });
            self.queue.push_back((id, Target::Node(node), FetcherRequest::Fetch(Box::new(request), context)));
        }
    }

    // ----- answers -----

    /// The answer (or failure) of a request from [`Fetcher::poll_request`]. Ids it does not know
    /// are ignored.
    pub fn handle_response(&mut self, id: RequestId, response: FetcherResponse, now: Instant) {
        let Some(sent) = self.in_flight.remove(&id) else { return };
        match (sent, response) {
            (InFlight::Fetch { node }, FetcherResponse::Fetch(answer)) => self.handle_fetch(node, answer, now),
            (InFlight::ListOffsets { node, resets }, FetcherResponse::ListOffsets(answer)) => {
                self.handle_list_offsets(node, resets, answer, now)
            }
            (InFlight::Validation { sent }, FetcherResponse::OffsetForLeaderEpoch(answer)) => {
                self.handle_validation(&sent, answer, now)
            }
            (sent, _) => {
                // An answer of the wrong kind: the driver's mistake. The request counts as failed.
                debug_assert!(false, "answer of the wrong kind for request {id}");
                match sent {
                    InFlight::Fetch { node } => self.handle_fetch(node, None, now),
                    InFlight::ListOffsets { node, resets } => self.handle_list_offsets(node, resets, None, now),
                    InFlight::Validation { sent } => self.handle_validation(&sent, EpochAnswer::Failed, now),
                }
            }
        }
    }

    fn handle_fetch(&mut self, node: i32, answer: Option<PreparedFetch>, now: Instant) {
        self.fetching.remove(&node);
        let Some(response) = answer else {
            tracing::debug!(node, "fetch failed");
            if let Some(s) = self.sessions.get_mut(&node) {
                s.handle_failure();
            }
            // A broker that refuses connections is not asked again in a tight loop.
            let (base, max, seed) =
                (self.config.retry_backoff, self.config.retry_backoff_max, self.config.backoff_seed);
            self.fetch_backoff.entry(node).or_insert_with(|| driving::backoff(base, max, seed, node as u64)).fail(now);
            self.metadata_wanted = true;
            return;
        };
        if let Some(b) = self.fetch_backoff.get_mut(&node) {
            b.reset();
        }
        let session_ok =
            self.sessions.entry(node).or_default().handle_response(response.error_code, response.session_id);
        if response.error_code != ErrorCode::NONE {
            tracing::debug!(node, error = ?response.error_code, session_ok, "fetch session error");
            if response.error_code == ErrorCode::UNKNOWN_TOPIC_ID
                || response.error_code == ErrorCode::FETCH_SESSION_TOPIC_ID_ERROR
            {
                self.metadata_wanted = true;
            }
            return;
        }
        let reset = self.config.auto_offset_reset.is_some();
        for pd in response.partitions {
            let tp = &pd.tp;
            // The partition moved to another leader while this was in flight (a hung broker's
            // answer returns late): what the old leader sent is dropped; the new one is fetched.
            if leader_of(&self.topics, tp).map(|(leader, _)| leader) != Some(node) {
                continue;
            }
            let Some(p) = self.partitions.get_mut(tp) else { continue };
            // A position awaiting validation (or stopped) takes no data fetched before: it may
            // come from the part of the log a new leader truncated.
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
                    self.metadata_wanted = true;
                    continue;
                }
            }
            p.high_watermark = Some(pd.high_watermark);
            p.last_stable_offset = (pd.last_stable_offset >= 0).then_some(pd.last_stable_offset);
            p.log_start_offset = (pd.log_start_offset >= 0).then_some(pd.log_start_offset);
            if let Some((epoch, end_offset)) = pd.diverging {
                // The leader's log differs from what was fetched from the end of this epoch on
                // (KIP-595): the fetch carried no records.
                p.apply_epoch_end(tp, epoch, end_offset, reset);
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
                tracing::warn!(%tp, error = ?e, "corrupt record batch; the partition stops there until a seek");
                p.corrupt = Some(e);
                if p.buffer.is_empty() && p.current.is_none() {
                    p.stopped = p.corrupt.take();
                }
            }
        }
    }

    fn handle_list_offsets(
        &mut self,
        node: i32,
        resets: Vec<(TopicPartition, u64)>,
        answer: Option<ListOffsetsResponse>,
        now: Instant,
    ) {
        let retry_at = now + self.config.retry_backoff;
        for (tp, seek_epoch) in resets {
            self.resets_in_flight.remove(&tp);
            let result = answer.as_ref().map_or(Err(None), |r| {
                let p = r
                    .topics
                    .iter()
                    .filter(|t| *t.name == *tp.topic)
                    .flat_map(|t| &t.partitions)
                    .find(|p| p.partition_index == tp.partition)
                    .ok_or(None)?;
                if p.error_code != ErrorCode::NONE {
                    return Err(Some(p.error_code));
                }
                Ok(p.offset)
            });
            let Some(p) = self.partitions.get_mut(&tp) else { continue };
            if p.seek_epoch != seek_epoch || p.position.is_some() {
                continue;
            }
            match result {
                Ok(offset) if offset >= 0 => p.set_position(offset),
                // No offset for that timestamp: go to the end, as Java's offsetsForTimes + seek does.
                Ok(_) => p.reset = Some(ResetTo::Latest),
                Err(code) => {
                    tracing::debug!(%tp, node, ?code, "offset reset failed; retrying");
                    p.reset_retry_at = Some(retry_at);
                    self.metadata_wanted = true;
                }
            }
        }
    }

    fn handle_validation(&mut self, sent: &[Validation], answer: EpochAnswer, now: Instant) {
        let retry_at = now + self.config.retry_backoff;
        let reset = self.config.auto_offset_reset.is_some();
        for v in sent {
            self.validations_in_flight.remove(&v.tp);
        }
        let answers = match answer {
            EpochAnswer::Answered(r) => Some(r),
            EpochAnswer::Unsupported => None,
            EpochAnswer::Failed => {
                tracing::debug!("position validation failed; retrying");
                self.metadata_wanted = true;
                for v in sent {
                    if let Some(p) = self
                        .partitions
                        .get_mut(&v.tp)
                        .filter(|p| p.validate_at.is_some() && p.seek_epoch == v.seek_epoch)
                    {
                        p.validate_at = Some(retry_at);
                    }
                }
                return;
            }
        };
        for v in sent {
            let Some(p) = self.partitions.get_mut(&v.tp) else { continue };
            if p.seek_epoch != v.seek_epoch
                || p.validate_at.is_none()
                || p.epoch_to_validate() != Some((v.offset, v.epoch))
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
            let answer = answers
                .topics
                .iter()
                .filter(|t| *t.topic == *v.tp.topic)
                .flat_map(|t| &t.partitions)
                .find(|a| a.partition == v.tp.partition);
            match answer {
                Some(a) if a.error_code == ErrorCode::NONE => {
                    p.validate_at = None;
                    p.apply_epoch_end(&v.tp, a.leader_epoch, a.end_offset, reset);
                    // A leader elected while this was asked: ask again.
                    if p.leader_epoch.is_some_and(|e| e > v.leader_epoch) && p.usable() && p.position.is_some() {
                        p.validate_at = Some(now);
                    }
                }
                Some(a) if !a.error_code.is_retriable() => {
                    self.poll_error = Some(FetchError::Broker {
                        code: a.error_code,
                        context: format!("OffsetForLeaderEpoch for {}", v.tp),
                    });
                    p.validate_at = Some(now + self.config.retry_backoff_max);
                }
                Some(a) => {
                    tracing::debug!(tp = %v.tp, error = ?a.error_code, "position validation failed; retrying");
                    self.metadata_wanted = true;
                    p.validate_at = Some(retry_at);
                }
                None => p.validate_at = Some(retry_at),
            }
        }
    }

    // ----- decompression -----

    /// A job that decompresses compressed batches ahead of the application, in each
    /// partition's order (to run outside every lock, on a blocking thread): about
    /// 128 KiB ready per partition, and never more than `fetch.max.bytes` ready
    /// across partitions (the decompressed budget; a batch that alone decompresses past it is
    /// refused). Backpressure: a batch that does not fit in what is left of the budget waits,
    /// and the others wait behind it, until the application has taken enough. One job at a
    /// time: its result goes back with [`Fetcher::handle_decompressed`].
    pub fn poll_decompression(&mut self) -> Option<DecompressJob> {
        let budget = self.config.fetch_max_bytes.max(1);
        if self.decompressing {
            return None;
        }
        let available = budget.saturating_sub(self.ready_bytes());
        // A batch waiting for more of the budget goes first: nothing else is decompressed until
        // it fits, so that it cannot be starved.
        if self
            .partitions
            .values()
            .any(|p| !p.paused && p.usable() && p.decompress_wait.is_some_and(|needed| available <= needed))
        {
            return None;
        }
        // Partitions take turns at the budget (a different one first each time), one that
        // waited for it before the others.
        let count = self.partitions.len().max(1);
        let start = self.next_decompress % count;
        self.next_decompress = self.next_decompress.wrapping_add(1);
        let mut inputs = Vec::new();
        for (i, (tp, p)) in self.partitions.iter_mut().enumerate() {
            let ready = p.ready_ahead();
            if p.paused || !p.usable() || ready >= DECOMPRESS_AHEAD {
                continue;
            }
            let want = DECOMPRESS_AHEAD - ready;
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
            return None;
        }
        inputs.sort_by_key(|(turn, _)| *turn);
        self.decompressing = true;
        Some(DecompressJob { inputs: inputs.into_iter().map(|(_, input)| input).collect(), budget, available })
    }

    /// The result of the job from [`Fetcher::poll_decompression`] (`None`: it was lost, so
    /// that another may start).
    pub fn handle_decompressed(&mut self, result: Option<Decompressed>) {
        self.decompressing = false;
        let Some(Decompressed(outputs)) = result else { return };
        for out in outputs {
            let Some(p) = self.partitions.get_mut(&out.tp) else { continue };
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
            if let Some((base_offset, reason)) = out.corrupt {
                let offset = p.position.map_or(base_offset, |position| position.max(base_offset));
                let e = FetchError::Corrupt { tp: out.tp.clone(), offset, reason };
                tracing::warn!(tp = %out.tp, error = ?e, "corrupt record batch; the partition stops there until a seek");
                p.stop_at_corrupt(base_offset, e);
            }
            p.decompress_wait = out.wait;
        }
    }
}

fn leader_of(topics: &HashMap<Arc<str>, TopicMeta>, tp: &TopicPartition) -> Option<(i32, i32)> {
    topics.get(&tp.topic)?.leaders.get(usize::try_from(tp.partition).ok()?).copied().filter(|(l, _)| *l >= 0)
}

/// Groups items by topic, in the order topics first appear.
fn by_topic<T>(items: impl IntoIterator<Item = (Arc<str>, T)>) -> Vec<(Arc<str>, Vec<T>)> {
    let mut topics: Vec<(Arc<str>, Vec<T>)> = Vec::new();
    for (topic, item) in items {
        match topics.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, items)) => items.push(item),
            None => topics.push((topic, vec![item])),
        }
    }
    topics
}

impl Partition {
    fn push(&mut self, batch: Buffered) {
        self.buffered += batch.size();
        if let Buffered::Ready(b) = &batch {
            self.ready += b.size();
        }
        self.buffer.push_back(batch);
    }

    /// Whether it holds a partition's worth of fetched bytes (`max.partition.fetch.bytes`): it is
    /// not fetched again until some are handed out.
    fn holds_a_fetch(&self, max_partition_fetch_bytes: usize) -> bool {
        !self.buffer.is_empty() && self.buffered >= max_partition_fetch_bytes
    }

    /// The ready bytes before the first compressed batch: what can be handed out without
    /// decompressing anything more. Uncompressed batches behind a compressed one do not count:
    /// they wait for it, so counting them could fill the budget and leave that batch (and the
    /// partition) waiting for good; they are slices of a Fetch answer, bounded by
    /// `queued.max.messages.kbytes` with the rest of what is buffered.
    fn ready_ahead(&self) -> usize {
        if self.buffered == self.ready {
            // Nothing compressed.
            return self.ready;
        }
        self.buffer
            .iter()
            .map_while(|b| match b {
                Buffered::Ready(r) => Some(r.size()),
                Buffered::Compressed(_) => None,
            })
            .sum()
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
    fn stop_at_corrupt(&mut self, base_offset: i64, error: FetchError) {
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
            self.stopped = self.corrupt.take();
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
        self.reset_retry_at = None;
        self.stopped = None;
        self.corrupt = None;
    }

    /// Whether everything the last Fetch answer said it held is fetched: its high watermark
    /// (last stable offset with read_committed, which is where such a consumer's reads end).
    /// A Fetch for such partitions only waits at the broker for new records.
    fn at_end(&self, read_committed: bool) -> bool {
        let end = if read_committed { self.last_stable_offset.or(self.high_watermark) } else { self.high_watermark };
        end.is_some_and(|end| self.fetch_offset >= end)
    }

    /// Neither awaiting validation nor stopped: its position can be fetched from and its
    /// records handed out.
    fn usable(&self) -> bool {
        self.validate_at.is_none() && self.stopped.is_none()
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

    fn set_position(&mut self, offset: i64) {
        self.clear();
        self.position = Some(offset);
        self.position_epoch = None;
        self.fetch_offset = offset;
        self.reset = None;
        self.last_fetched_epoch = -1;
    }

    /// Applies a leader's word on the epoch a position continues from (an OffsetForLeaderEpoch
    /// answer, or a Fetch's diverging epoch): `end` is the end offset in the leader's log of its
    /// largest epoch at or below `epoch`, the first offset whose record may differ from the one
    /// fetched. Below the position, records handed out were truncated away (KIP-320): the
    /// position goes back to `end` (`reset`: `auto.offset.reset` is not none; nothing kept is
    /// skipped, nothing lost is read twice), or the partition stops with the divergence.
    /// Between the position and the fetch offset, only records fetched ahead diverge; they are
    /// fetched again.
    fn apply_epoch_end(&mut self, tp: &TopicPartition, epoch: i32, end: i64, reset: bool) {
        let Some(position) = self.position else { return };
        let undefined = epoch < 0 || end < 0;
        if !undefined && end >= self.fetch_offset {
            // Nothing fetched lies past the end of that epoch. If the leader's log holds an
            // older epoch there than the one fetched, take its epoch, so that the next Fetch's
            // check passes rather than diverging again from the same place.
            if self.last_fetched_epoch > epoch {
                self.last_fetched_epoch = epoch;
            }
            if self.fetch_offset == position && self.position_epoch.is_some_and(|e| e > epoch) {
                self.position_epoch = Some(epoch);
            }
            return;
        }
        let fetched_to = self.fetch_offset;
        self.clear();
        self.fetch_offset = position;
        self.last_fetched_epoch = -1;
        if !undefined && end >= position {
            tracing::debug!(%tp, end, position, fetched_to, "records fetched ahead diverge from the leader's log; fetching them again");
            return;
        }
        let divergence = (!undefined).then_some((end, epoch));
        match (reset, divergence) {
            (false, _) => {
                tracing::warn!(%tp, position, ?divergence, "log truncation detected and auto.offset.reset is none");
                self.stopped = Some(FetchError::LogTruncation {
                    tp: tp.clone(),
                    position,
                    divergent_offset: divergence.map(|(offset, _)| offset),
                    divergent_epoch: divergence.map(|(_, epoch)| epoch),
                });
            }
            (true, Some((end, epoch))) => {
                tracing::warn!(%tp, position, end, epoch, "log truncation detected; resetting the position to the first offset known to diverge");
                self.position = Some(end);
                self.position_epoch = Some(epoch);
                self.fetch_offset = end;
                self.last_fetched_epoch = epoch;
            }
            (true, None) => {
                tracing::warn!(%tp, position, "log truncation detected, the leader's log holds no epoch at or below the position's; resetting per auto.offset.reset");
                self.position = None;
                self.position_epoch = None;
                self.reset = None;
            }
        }
    }

    /// Hands out up to `max` records at or past the position, up to the first batch not
    /// decompressed yet; returns how many.
    fn take<T: Taker>(
        &mut self,
        tp: &TopicPartition,
        max: usize,
        taker: &mut T,
        error: &mut Option<FetchError>,
    ) -> usize {
        let Some(mut position) = self.position else { return 0 };
        let mut taken = 0;
        // A batch begun in an earlier take goes on here.
        if let Some((records, epoch, ts_type)) = &self.current {
            taker.batch(tp, records, *epoch, *ts_type);
        }
        while taken < max {
            if self.current.is_none() {
                let Some(batch) = self.pop_ready() else { break };
                // Records below the position (a batch fetched from its middle) are skipped below.
                let header = &batch.header;
                let records = Records::from_data(header, batch.data);
                let (epoch, ts_type) = (header.partition_leader_epoch, header.timestamp_type());
                taker.batch(tp, &records, epoch, ts_type);
                self.current = Some((records, epoch, ts_type));
                continue;
            }
            let Some((records, epoch, ts_type)) = self.current.as_mut() else { break };
            match taker.read(records) {
                None => self.current = None,
                Some(Err(e)) => {
                    // A batch whose records do not decode: report it and skip past it so that
                    // polling can go on.
                    *error = Some(FetchError::Decode { tp: tp.clone(), source: e });
                    self.current = None;
                    break;
                }
                Some(Ok(r)) => {
                    let offset = T::offset(&r);
                    if offset < position {
                        continue;
                    }
                    position = offset + 1;
                    self.position_epoch = Some(*epoch);
                    taken += 1;
                    taker.emit(tp, r, *epoch, *ts_type);
                }
            }
        }
        // Everything fetched is handed out: skipped batches (control markers, aborted
        // transactions) between here and the fetch offset are passed too.
        if self.buffer.is_empty() && self.current.is_none() {
            position = position.max(self.fetch_offset);
            // What came before a corrupt batch is handed out: the partition stops there.
            if let Some(e) = self.corrupt.take() {
                self.stopped = Some(e);
            }
        }
        self.position = Some(position);
        taken
    }
}

/// How [`Fetcher::take_with`] reads the records of a batch and hands them on.
pub trait Taker {
    /// A record as read.
    type Item;
    /// Told before records of `records` are read: a batch just begun, or one begun in an
    /// earlier take (`records` then starts at its next record, see [`Records::rest`]).
    fn batch(&mut self, tp: &TopicPartition, records: &Records, leader_epoch: i32, timestamp_type: TimestampType);
    /// The next record of `records`, or the error that ends the batch.
    fn read(&mut self, records: &mut Records) -> Option<DecodeResult<Self::Item>>;
    /// The record's offset.
    fn offset(item: &Self::Item) -> i64;
    /// Hands a record at or past the position on, with its batch's leader epoch and timestamp type.
    fn emit(&mut self, tp: &TopicPartition, item: Self::Item, leader_epoch: i32, timestamp_type: TimestampType);
}

/// Records decoded, each handed to the closure ([`Fetcher::take`]).
struct Decoded<F>(F);

impl<F: FnMut(&TopicPartition, Record, i32, TimestampType)> Taker for Decoded<F> {
    type Item = Record;

    fn batch(&mut self, _: &TopicPartition, _: &Records, _: i32, _: TimestampType) {}

    #[inline(always)]
    fn read(&mut self, records: &mut Records) -> Option<DecodeResult<Record>> {
        records.next()
    }

    fn offset(item: &Record) -> i64 {
        item.offset
    }

    #[inline(always)]
    fn emit(&mut self, tp: &TopicPartition, item: Record, leader_epoch: i32, timestamp_type: TimestampType) {
        (self.0)(tp, item, leader_epoch, timestamp_type)
    }
}

// ----- preparing a Fetch answer (pure CPU, outside every lock) -----

impl FetchContext {
    /// The bytes of records in `response`: what [`prepare_fetch`] checks.
    pub fn records_size(response: &FetchResponse) -> usize {
        response.responses.iter().flat_map(|t| &t.partitions).filter_map(|p| p.records.as_ref()).map(Bytes::len).sum()
    }
}

/// Splits the batches of a Fetch answer and checks them (framing, CRCs with `check.crcs`),
/// filters them (read_committed, control batches), and finds where each partition's next fetch
/// continues, without the fetcher and without decompressing anything: compressed batches are
/// kept as received (they take their size on the wire), so that the node's next fetch can go
/// out at once; [`DecompressJob`]s decompress them ahead of the application.
pub fn prepare_fetch(response: FetchResponse, context: &FetchContext) -> PreparedFetch {
    let mut partitions = Vec::new();
    for t in response.responses {
        let topic: Arc<str> = context.names.get(&t.topic_id).cloned().unwrap_or_else(|| (&*t.topic).into());
        for pd in t.partitions {
            let tp = TopicPartition::new(topic.clone(), pd.partition_index);
            let Some(&(_, fetched_from, seek_epoch)) = context.sent.iter().find(|(s, ..)| *s == tp) else { continue };
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
            let mut filter = context.read_committed.then(|| {
                AbortedFilter::new(pd.aborted_transactions.iter().flatten().map(|a| (a.producer_id, a.first_offset)))
            });
            let records = pd.records.unwrap_or_default();
            let mut batches = if context.check_crcs {
                RecordBatches::new(records)
            } else {
                RecordBatches::without_crc_check(records)
            };
            let mut fetch_offset = fetched_from;
            loop {
                let at = batches.next_base_offset();
                let batch = match batches.next() {
                    None => break,
                    Some(Ok(b)) => b,
                    Some(Err(e)) => {
                        let offset = at.unwrap_or(fetch_offset).max(fetch_offset);
                        prepared.corrupt =
                            Some(FetchError::Corrupt { tp: prepared.tp.clone(), offset, reason: corrupt_reason(e) });
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

/// Why a batch cannot be used.
fn corrupt_reason(e: DecodeError) -> String {
    match e {
        DecodeError::DecompressedTooLarge { limit, .. } => {
            format!("the batch decompresses to more than fetch.max.bytes ({limit} bytes)")
        }
        e => e.to_string(),
    }
}

// ----- decompression ahead of the application (pure CPU, outside every lock) -----

/// The compressed batches of one partition given to a decompression job.
#[derive(Debug)]
struct DecompressInput {
    tp: TopicPartition,
    seek_epoch: u64,
    /// Decompressed bytes wanted for the partition: the job stops past them.
    want: usize,
    /// The partition's first compressed batches, in order.
    batches: Vec<RecordBatch>,
}

/// What a decompression job did with one partition's batches, in order.
#[derive(Debug)]
struct DecompressOutput {
    tp: TopicPartition,
    seek_epoch: u64,
    /// (base offset, records section) of each batch decompressed.
    batches: Vec<(i64, Bytes)>,
    /// The next batch (at this base offset) cannot be used: alone it decompresses past
    /// `fetch.max.bytes`, or its compressed data is damaged.
    corrupt: Option<(i64, String)>,
    /// The next batch did not decompress within this many bytes, the budget left: it waits
    /// until more is free.
    wait: Option<usize>,
}

/// Compressed batches to decompress, from [`Fetcher::poll_decompression`].
#[derive(Debug)]
pub struct DecompressJob {
    inputs: Vec<DecompressInput>,
    budget: usize,
    available: usize,
}

/// The result of a [`DecompressJob`], for [`Fetcher::handle_decompressed`].
#[derive(Debug)]
pub struct Decompressed(Vec<DecompressOutput>);

impl DecompressJob {
    /// Decompresses the batches in order within the bytes available of the budget (all of the
    /// budget for a batch when nothing else is ready): the CPU work of a compressed fetch.
    pub fn run(self) -> Decompressed {
        let Self { inputs, budget, available } = self;
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
                // A batch is charged its header on top of what it decompresses to, so `used`
                // may pass `available` by less than a header.
                let limit = available.saturating_sub(used);
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
                    Err(DecodeError::DecompressedTooLarge { .. }) if limit < budget => {
                        out.wait = Some(limit);
                        stop = true;
                        break;
                    }
                    Err(e) => {
                        out.corrupt = Some((batch.base_offset(), corrupt_reason(e)));
                        break;
                    }
                }
            }
            outputs.push(out);
            if stop {
                break;
            }
        }
        Decompressed(outputs)
    }
}
