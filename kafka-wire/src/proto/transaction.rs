//! The transaction manager of a transactional producer (KIP-98), as a sans-IO state machine: it
//! says which request to send next ([`TransactionManager::next_request`]) and takes the answers
//! back (`handle_*`, with the time as an argument). The driver does the IO, keeps the records in
//! the producer core ([`super::producer::ProducerCore`]) and tells the manager what happened to
//! them.
//!
//! # States
//!
//! ```text
//!  Uninitialized ──init──► Initializing ──InitProducerId──► Ready ◄────────────────────────────┐
//!                               ▲                             │ begin                          │
//!                               │                             ▼                                │
//!                               │  AbortableError ◄──── InTransaction ──commit──► Committing   │
//!                               │     ▲     │  produce failed /  │                     │  │    │
//!                               │     │     │  abortable answer  │ abort               │  └────┤ EndTxn(commit)
//!                               │     │     │ abort              ▼                     │       │ (none if nothing
//!                               │     │     └──────────────► Aborting                  │       │  was started)
//!                               │     │                        │  │                    │       │
//!                               │     └─── produce failed / ───┼──┼────────────────────┘       │
//!                               │          abortable answer    │  │                            │
//!                               │          before EndTxn       │  └──── EndTxn(abort) ─────────┘
//!                               │                              │        (idem)
//!                               └──── v1, epoch bump needed ───┘
//!                                     (KIP-360): InitProducerId
//!                                     with the current id and epoch
//!
//!  any state ── fenced / not authorized / INVALID_TXN_STATE / unexpected error ──► FatalError
//! ```
//!
//! Nothing is sent in `FatalError`, and every call then fails with the reason; being fenced by a
//! newer instance of the same `transactional.id` ([`FatalReason::Fenced`]) is told apart from the
//! other reasons. In `AbortableError` only `abort` is accepted.
//!
//! # What waits for what
//!
//! One request is in flight at a time: the coordinator must see AddPartitionsToTxn, the offsets
//! requests and EndTxn in the order they are issued (an AddPartitionsToTxn that overtook EndTxn
//! would open a transaction nobody ends). EndTxn is sent only when the driver has settled every
//! produce of the transaction (the count given to `commit` / `abort`, counted down by
//! [`TransactionManager::produce_settled`]): a batch that reached its partition after the commit
//! marker would not be part of the committed transaction, and one that reached it after an abort
//! marker would be committed with the next transaction of the same epoch.
//!
//! A commit is only asked for once nothing failed; once an EndTxn has been sent its decision is
//! fixed: a lost answer is retried with the same decision, never the other one. A retry of a commit
//! the coordinator had already applied is answered NONE (its transaction is CompleteCommit), so
//! an INVALID_TXN_STATE for EndTxn means the transaction ended otherwise, which is fatal.
//!
//! # Transactions v1 and v2 (KIP-890)
//!
//! The protocol is fixed per transaction at `begin`, from the cluster's finalized
//! `transaction.version` feature level (ApiVersions; [`TransactionManager::set_transaction_version`]).
//! Under v1 a partition's batches may only be sent once AddPartitionsToTxn added it
//! ([`TransactionManager::add_partition`] says when), and the group of `send_offsets` is added with
//! AddOffsetsToTxn before TxnOffsetCommit (at most v4). Under v2 (level ≥ 2) Produce v12+ and
//! TxnOffsetCommit v5+ add them implicitly, and EndTxn v5+ bumps the producer epoch on every commit
//! and abort: the manager takes the producer id and epoch from the EndTxn answer
//! ([`TxnEvent::ProducerIdChanged`]), and a coordinator that aborted the transaction on timeout
//! accepts the abort of the previous epoch, so that is recoverable. Under v1 the coordinator's
//! timeout abort fences the epoch, which cannot be told apart from a newer instance.
//!
//! # Epoch bump (KIP-360)
//!
//! A produce that failed inside a transaction leaves a gap in its partition's sequence numbers.
//! Under v1 the abort is then followed by InitProducerId with the current producer id and epoch,
//! which bumps the epoch without fencing this instance; under v2 the EndTxn of the abort already
//! bumps it.
//!
//! # Lost producer id (INVALID_PRODUCER_ID_MAPPING, UNKNOWN_PRODUCER_ID)
//!
//! As in Java's producer: when AddPartitionsToTxn, AddOffsetsToTxn or EndTxn is answered that the
//! coordinator holds no (or another) producer id for the transactional id (say the id expired
//! after `transactional.id.expiration.ms`), the transaction becomes abortable rather than the
//! producer fatal, and its abort ends with the KIP-360 InitProducerId, which gets a producer id
//! the coordinator knows. After INVALID_PRODUCER_ID_MAPPING that abort sends no EndTxn (the
//! coordinator would refuse it the same way): there is no transaction of this producer id to end.
//! An EndTxn(commit) answered INVALID_PRODUCER_ID_MAPPING committed nothing, so the commit
//! becomes abortable too (UNKNOWN_PRODUCER_ID is only taken so from the two adds).
//!
//! # Offsets (KIP-447)
//!
//! `send_offsets` carries the consumer's group metadata (generation, member id, instance id) so
//! that the group coordinator refuses the offsets of a member that has been fenced out of its
//! group; that refusal makes the transaction abortable.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::driving::{RequestId, RequestKind, Target};
use crate::codec::ErrorCode;
use crate::proto::producer::TopicPartition;

/// The settings the manager needs.
#[derive(Clone, Debug)]
pub struct TxnConfig {
    /// `transactional.id`: the identity that survives producer restarts (KIP-98).
    pub transactional_id: Arc<str>,
    /// `transaction.timeout.ms`: the coordinator aborts a transaction open longer than this.
    pub transaction_timeout: Duration,
    /// First backoff before a request is retried; doubles per retry up to `retry_backoff_max`,
    /// each delay spread by ±20 % (KIP-580).
    pub retry_backoff: Duration,
    /// Cap of the exponential retry backoff (`retry.backoff.max.ms`, KIP-580).
    pub retry_backoff_max: Duration,
    /// First backoff after AddPartitionsToTxn was answered CONCURRENT_TRANSACTIONS. It is short
    /// because that answer mostly means the previous transaction's markers are still being
    /// written, which takes milliseconds, and the next transaction's first batch waits for it.
    pub add_partitions_retry_backoff: Duration,
    /// Seeds the jitter of the retry backoffs: the same seed, the same delays (simulations).
    /// `None`: a random seed.
    pub backoff_seed: Option<u64>,
}

impl TxnConfig {
    /// Kafka's defaults: 60 s transaction timeout, 100 ms to 1 s backoff, 20 ms after
    /// CONCURRENT_TRANSACTIONS on AddPartitionsToTxn.
    pub fn new(transactional_id: impl Into<Arc<str>>) -> Self {
        Self {
            transactional_id: transactional_id.into(),
            transaction_timeout: Duration::from_secs(60),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            add_partitions_retry_backoff: Duration::from_millis(20),
            backoff_seed: None,
        }
    }
}

/// Where the manager is (see the module's diagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxnState {
    /// `init` not called yet.
    Uninitialized,
    /// Getting a producer id and epoch (InitProducerId), after `init` or, under transactions v1,
    /// for the KIP-360 epoch bump that ends an abort.
    Initializing,
    /// Has a producer id and epoch; no transaction open.
    Ready,
    /// A transaction is open (`begin` was called).
    InTransaction,
    /// `commit` called: waiting for the produces to settle, then EndTxn(commit).
    Committing,
    /// `abort` called: waiting for the produces to settle, then EndTxn(abort).
    Aborting,
    /// Something failed inside the transaction: only `abort` is accepted.
    AbortableError,
    /// Nothing more may be done with this producer.
    FatalError,
}

/// A user-level call, named in [`TxnError::InvalidState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxnOperation {
    /// `init`: get a producer id (InitProducerId).
    Init,
    /// `begin`: open a transaction.
    Begin,
    /// `add_partition`: a partition written in the transaction.
    AddPartition,
    /// `send_offsets`: consumer offsets committed with the transaction (KIP-447).
    SendOffsets,
    /// `commit`.
    Commit,
    /// `abort`.
    Abort,
    /// `require_epoch_bump`: the abort in progress ends with an epoch bump (KIP-360).
    RequireEpochBump,
}

/// Why nothing more may be done with this producer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FatalReason {
    /// A newer instance with the same `transactional.id` took over (PRODUCER_FENCED, or
    /// INVALID_PRODUCER_EPOCH from a coordinator). Before transactions v2 the coordinator's abort
    /// of a transaction that outlived its timeout looks the same.
    #[error("fenced by a newer producer with the same transactional.id ({code})")]
    Fenced {
        /// The error code that fenced it.
        code: ErrorCode,
    },
    /// The client may not use its `transactional.id` (TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
    #[error("not authorized for the transactional.id")]
    TransactionalIdAuthorizationFailed,
    /// The coordinator's transaction is not in the state the request assumes; for EndTxn, the
    /// transaction ended otherwise than asked.
    #[error("{request:?} answered INVALID_TXN_STATE")]
    InvalidTxnState {
        /// The request so answered.
        request: RequestKind,
    },
    /// A transactions-v2 EndTxn answer carried no producer id and epoch: the driver must use
    /// EndTxn v5+ for a v2 transaction.
    #[error("EndTxn of a transactions v2 transaction answered without the bumped epoch")]
    MissingEpoch,
    /// Any other answer that neither a retry nor an abort can clear.
    #[error("{request:?} answered {code}")]
    Broker {
        /// The request.
        request: RequestKind,
        /// Its answer.
        code: ErrorCode,
    },
}

/// Why the open transaction can only be aborted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AbortableReason {
    /// A produce of the transaction failed: `None` when no definite answer came (it may or may
    /// not be in the log).
    #[error("a produce of the transaction failed ({code:?})")]
    ProduceFailed {
        /// The leader's error, if one came.
        code: Option<ErrorCode>,
    },
    /// A coordinator refused part of the transaction (TRANSACTION_ABORTABLE, an authorization
    /// error for a topic or group, or a group membership error on TxnOffsetCommit).
    #[error("{request:?} answered {code}")]
    Refused {
        /// The request.
        request: RequestKind,
        /// Its answer.
        code: ErrorCode,
    },
}

/// Why a call was refused, or an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxnError {
    /// The call is not valid in this state (for example `begin` twice, `commit` without `begin`).
    #[error("{operation:?} is not valid in state {state:?}")]
    InvalidState {
        /// The call.
        operation: TxnOperation,
        /// The state it was made in.
        state: TxnState,
    },
    /// The transaction can only be aborted.
    #[error("the transaction must be aborted: {0}")]
    Abortable(AbortableReason),
    /// Nothing more may be done with this producer.
    #[error("fatal: {0}")]
    Fatal(FatalReason),
}

/// What happened to one produce (a unit of the count given to `commit` / `abort`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProduceOutcome {
    /// The leader acknowledged it.
    Acknowledged,
    /// Failed for good: the leader's error, or `None` when no definite answer came (delivery
    /// timeout), so it may be in the log. The driver reports it only once no copy of the request
    /// can still reach the broker.
    Failed(Option<ErrorCode>),
    /// Dropped unsent because the transaction is being aborted.
    Discarded,
}

/// Which coordinator FindCoordinator looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoordinatorType {
    /// A consumer group's coordinator (`key_type` 0).
    Group,
    /// A transactional id's coordinator (`key_type` 1).
    Transaction,
}

impl CoordinatorType {
    /// FindCoordinator's `key_type`.
    pub fn key_type(self) -> i8 {
        match self {
            Self::Group => 0,
            Self::Transaction => 1,
        }
    }
}

/// A consumer's place in its group (KIP-447).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMetadata {
    /// The consumer's `group.id`.
    pub group_id: Arc<str>,
    /// The generation (classic protocol) or member epoch (KIP-848); -1 outside a group.
    pub generation_id: i32,
    /// The member id the group coordinator gave the consumer.
    pub member_id: Arc<str>,
    /// The consumer's `group.instance.id` (KIP-345 static membership), if any.
    pub group_instance_id: Option<Arc<str>>,
}

/// One partition's offset to commit with the transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOffset {
    /// The next offset to consume.
    pub offset: i64,
    /// The leader epoch of the last consumed record (KIP-320), if known.
    pub leader_epoch: Option<i32>,
    /// Metadata stored with the offset.
    pub metadata: Option<Arc<str>>,
}

/// The request to send, with the data it carries. Producer ids and epochs are the manager's;
/// the driver picks API versions: for a `transaction_v2` request EndTxn v5+ and TxnOffsetCommit
/// v5+, otherwise at most v4; AddPartitionsToTxn at most v3 (the client form).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxnRequest {
    /// Looks for the coordinator of `key`.
    FindCoordinator {
        /// The group id or transactional id.
        key: Arc<str>,
        /// Which kind of coordinator.
        key_type: CoordinatorType,
    },
    /// `producer_id`/`producer_epoch` are -1 on the first call, the current ones for the KIP-360
    /// bump.
    InitProducerId {
        /// The `transactional.id`.
        transactional_id: Arc<str>,
        /// `transaction.timeout.ms`.
        transaction_timeout_ms: i32,
        /// The current producer id, or -1.
        producer_id: i64,
        /// The current epoch, or -1.
        producer_epoch: i16,
    },
    /// Adds partitions to the transaction (transactions v1).
    AddPartitionsToTxn {
        /// The `transactional.id`.
        transactional_id: Arc<str>,
        /// The producer id.
        producer_id: i64,
        /// The producer epoch.
        producer_epoch: i16,
        /// The partitions to add.
        partitions: Vec<TopicPartition>,
    },
    /// Adds the group's offsets partition to the transaction (transactions v1).
    AddOffsetsToTxn {
        /// The `transactional.id`.
        transactional_id: Arc<str>,
        /// The producer id.
        producer_id: i64,
        /// The producer epoch.
        producer_epoch: i16,
        /// The consumer group whose offsets will be committed.
        group_id: Arc<str>,
    },
    /// Commits consumer offsets as part of the transaction (KIP-447), to the group coordinator.
    TxnOffsetCommit {
        /// The `transactional.id`.
        transactional_id: Arc<str>,
        /// The producer id.
        producer_id: i64,
        /// The producer epoch.
        producer_epoch: i16,
        /// The consumer's group metadata, so that a fenced member's offsets are refused.
        group: GroupMetadata,
        /// The offsets to commit.
        offsets: Vec<(TopicPartition, TxnOffset)>,
        /// Send as TxnOffsetCommit v5+ (transactions v2, KIP-890).
        transaction_v2: bool,
    },
    /// Ends the transaction.
    EndTxn {
        /// The `transactional.id`.
        transactional_id: Arc<str>,
        /// The producer id.
        producer_id: i64,
        /// The producer epoch.
        producer_epoch: i16,
        /// `true` to commit, `false` to abort.
        commit: bool,
        /// Send as EndTxn v5+ (transactions v2, KIP-890), which bumps the epoch.
        transaction_v2: bool,
    },
}

impl TxnRequest {
    /// The kind of request.
    pub fn kind(&self) -> RequestKind {
        match self {
            Self::FindCoordinator { .. } => RequestKind::FIND_COORDINATOR,
            Self::InitProducerId { .. } => RequestKind::INIT_PRODUCER_ID,
            Self::AddPartitionsToTxn { .. } => RequestKind::ADD_PARTITIONS_TO_TXN,
            Self::AddOffsetsToTxn { .. } => RequestKind::ADD_OFFSETS_TO_TXN,
            Self::TxnOffsetCommit { .. } => RequestKind::TXN_OFFSET_COMMIT,
            Self::EndTxn { .. } => RequestKind::END_TXN,
        }
    }
}

/// A request to send; its answer goes back with the same `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingRequest {
    /// Identifies the request; its answer is handed back with it.
    pub id: RequestId,
    /// Where to send it: any broker (FindCoordinator) or a coordinator.
    pub target: Target,
    /// What to send.
    pub request: TxnRequest,
}

/// What the driver learns from the manager ([`TransactionManager::poll_event`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxnEvent {
    /// A new producer id or epoch: hand it to the producer core (its sequences restart at 0)
    /// before the next batch is drained.
    ProducerIdChanged {
        /// The producer id.
        producer_id: i64,
        /// The producer epoch.
        epoch: i16,
    },
    /// `init` finished.
    Initialized,
    /// AddPartitionsToTxn added these partitions: their batches may be sent now.
    PartitionsAdded(Vec<TopicPartition>),
    /// The oldest unfinished `send_offsets` finished: the offsets are part of the transaction.
    OffsetsAdded {
        /// The group of the offsets.
        group_id: Arc<str>,
    },
    /// `commit` finished.
    Committed,
    /// `abort` finished. Offsets of `send_offsets` calls not finished by then were dropped.
    Aborted,
    /// The manager entered `AbortableError` or `FatalError`: operations waiting fail with this.
    Failed(TxnError),
}

#[derive(Clone, Debug)]
enum Phase {
    Uninitialized,
    /// InitProducerId; `after_abort` for the KIP-360 bump that ends an abort.
    Initializing {
        after_abort: bool,
    },
    Ready,
    InTransaction,
    Committing,
    Aborting,
    Abortable(AbortableReason),
    Fatal(FatalReason),
}

#[derive(Clone, Debug)]
struct PendingOffsets {
    group: GroupMetadata,
    offsets: Vec<(TopicPartition, TxnOffset)>,
    /// AddOffsetsToTxn succeeded (v1).
    group_added: bool,
}

/// The open transaction.
#[derive(Debug, Default)]
struct Txn {
    v2: bool,
    /// Partitions whose batches may be sent: added by AddPartitionsToTxn (v1), or written to (v2).
    added: BTreeSet<TopicPartition>,
    /// Partitions waiting for AddPartitionsToTxn (v1), including those of the request in flight.
    pending: BTreeSet<TopicPartition>,
    /// `send_offsets` calls not finished, oldest first.
    offsets: VecDeque<PendingOffsets>,
    /// Something of the transaction may have reached the coordinator, so ending it takes EndTxn.
    maybe_started: bool,
    /// The coordinator is known to hold the transaction (an add succeeded, or under v2 a
    /// produce was acknowledged).
    confirmed_started: bool,
    /// Produces the driver has still to settle before EndTxn.
    unsettled: usize,
    /// Sequences have a gap: bump the epoch when the transaction ends (KIP-360).
    bump_epoch: bool,
    /// The coordinator does not map this producer id to the transactional id
    /// (INVALID_PRODUCER_ID_MAPPING): the abort skips EndTxn and goes straight to the bump.
    producer_id_unmapped: bool,
    /// The EndTxn decision, fixed once first sent.
    end_decision: Option<bool>,
}

#[derive(Clone, Debug)]
enum Op {
    FindCoordinator { key: Arc<str>, key_type: CoordinatorType },
    InitProducerId,
    AddPartitions(Vec<TopicPartition>),
    AddOffsets(Arc<str>),
    TxnOffsetCommit { group: GroupMetadata, offsets: Vec<(TopicPartition, TxnOffset)> },
    EndTxn(bool),
}

impl Op {
    fn kind(&self) -> RequestKind {
        match self {
            Self::FindCoordinator { .. } => RequestKind::FIND_COORDINATOR,
            Self::InitProducerId => RequestKind::INIT_PRODUCER_ID,
            Self::AddPartitions(_) => RequestKind::ADD_PARTITIONS_TO_TXN,
            Self::AddOffsets(_) => RequestKind::ADD_OFFSETS_TO_TXN,
            Self::TxnOffsetCommit { .. } => RequestKind::TXN_OFFSET_COMMIT,
            Self::EndTxn(_) => RequestKind::END_TXN,
        }
    }
}

#[derive(Debug)]
struct InFlight {
    id: RequestId,
    op: Op,
}

/// How an error code is handled.
#[derive(Debug)]
enum Verdict {
    /// Send the same request again after a backoff.
    Retry,
    /// The coordinator moved or is not available: find it again, then retry.
    Refind,
    Abortable,
    /// The coordinator holds no state for this producer id: abortable, and the abort ends with
    /// a new producer id (InitProducerId).
    ProducerIdLost,
    Fatal(FatalReason),
}

impl Verdict {
    /// Of several partitions' errors, the worst decides.
    fn severity(&self) -> u8 {
        match self {
            Self::Retry => 0,
            Self::Refind => 1,
            Self::Abortable => 2,
            Self::ProducerIdLost => 3,
            Self::Fatal(_) => 4,
        }
    }
}

/// The worse of `worst` and `code`'s verdict.
fn worse(worst: Option<(Verdict, ErrorCode)>, request: RequestKind, code: ErrorCode) -> Option<(Verdict, ErrorCode)> {
    let v = classify(request, code);
    match worst {
        Some((w, c)) if w.severity() >= v.severity() => Some((w, c)),
        _ => Some((v, code)),
    }
}

fn classify(request: RequestKind, code: ErrorCode) -> Verdict {
    match code {
        ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE => Verdict::Refind,
        ErrorCode::PRODUCER_FENCED | ErrorCode::INVALID_PRODUCER_EPOCH => Verdict::Fatal(FatalReason::Fenced { code }),
        ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED => {
            Verdict::Fatal(FatalReason::TransactionalIdAuthorizationFailed)
        }
        ErrorCode::INVALID_TXN_STATE => Verdict::Fatal(FatalReason::InvalidTxnState { request }),
        ErrorCode::TRANSACTION_ABORTABLE
        | ErrorCode::TOPIC_AUTHORIZATION_FAILED
        | ErrorCode::GROUP_AUTHORIZATION_FAILED
        | ErrorCode::UNKNOWN_MEMBER_ID
        | ErrorCode::ILLEGAL_GENERATION
        | ErrorCode::FENCED_INSTANCE_ID
        | ErrorCode::REBALANCE_IN_PROGRESS => Verdict::Abortable,
        ErrorCode::INVALID_PRODUCER_ID_MAPPING
            if matches!(
                request,
                RequestKind::ADD_PARTITIONS_TO_TXN | RequestKind::ADD_OFFSETS_TO_TXN | RequestKind::END_TXN
            ) =>
        {
            Verdict::ProducerIdLost
        }
        // After EndTxn(commit) this one is no proof that nothing was committed: fatal below.
        ErrorCode::UNKNOWN_PRODUCER_ID
            if matches!(request, RequestKind::ADD_PARTITIONS_TO_TXN | RequestKind::ADD_OFFSETS_TO_TXN) =>
        {
            Verdict::ProducerIdLost
        }
        // CONCURRENT_TRANSACTIONS, COORDINATOR_LOAD_IN_PROGRESS, UNKNOWN_TOPIC_OR_PARTITION,
        // REQUEST_TIMED_OUT, ...
        c if c.is_retriable() => Verdict::Retry,
        _ => Verdict::Fatal(FatalReason::Broker { request, code }),
    }
}

/// The transaction manager. See the module documentation.
#[derive(Debug)]
pub struct TransactionManager {
    config: TxnConfig,
    phase: Phase,
    producer_id: i64,
    epoch: i16,
    /// The cluster's finalized `transaction.version`, as last told by the driver.
    transaction_version: i16,
    txn: Txn,
    txn_coordinator: Option<i32>,
    group_coordinator: Option<(Arc<str>, i32)>,
    in_flight: Option<InFlight>,
    not_before: Option<Instant>,
    /// Retries since the last success.
    backoff: Backoff,
    /// Retries of AddPartitionsToTxn answered CONCURRENT_TRANSACTIONS: they start shorter.
    concurrent_backoff: Backoff,
    next_id: u64,
    events: VecDeque<TxnEvent>,
}

impl TransactionManager {
    /// A manager in `Uninitialized`.
    pub fn new(config: TxnConfig) -> Self {
        let (seed, max) = (config.backoff_seed, config.retry_backoff_max);
        Self {
            backoff: super::driving::backoff(config.retry_backoff, max, seed, 0),
            concurrent_backoff: super::driving::backoff(config.add_partitions_retry_backoff, max, seed, 1),
            config,
            phase: Phase::Uninitialized,
            producer_id: -1,
            epoch: -1,
            transaction_version: 0,
            txn: Txn::default(),
            txn_coordinator: None,
            group_coordinator: None,
            in_flight: None,
            not_before: None,
            next_id: 0,
            events: VecDeque::new(),
        }
    }

    /// The cluster's finalized `transaction.version` feature level (ApiVersions). It takes effect
    /// at the next `begin`.
    pub fn set_transaction_version(&mut self, finalized_level: i16) {
        self.transaction_version = finalized_level;
    }

    /// The current state.
    pub fn state(&self) -> TxnState {
        match self.phase {
            Phase::Uninitialized => TxnState::Uninitialized,
            Phase::Initializing { .. } => TxnState::Initializing,
            Phase::Ready => TxnState::Ready,
            Phase::InTransaction => TxnState::InTransaction,
            Phase::Committing => TxnState::Committing,
            Phase::Aborting => TxnState::Aborting,
            Phase::Abortable(_) => TxnState::AbortableError,
            Phase::Fatal(_) => TxnState::FatalError,
        }
    }

    /// The error of `AbortableError` or `FatalError`.
    pub fn error(&self) -> Option<TxnError> {
        match &self.phase {
            Phase::Abortable(r) => Some(TxnError::Abortable(r.clone())),
            Phase::Fatal(r) => Some(TxnError::Fatal(r.clone())),
            _ => None,
        }
    }

    /// The producer id and epoch to write batches with (-1 before `init` finished).
    pub fn producer_id(&self) -> (i64, i16) {
        (self.producer_id, self.epoch)
    }

    /// Whether the open transaction (or, outside one, the next) uses transactions v2: Produce v12+
    /// then, at most v11 otherwise.
    pub fn is_transaction_v2(&self) -> bool {
        match self.phase {
            Phase::InTransaction | Phase::Committing | Phase::Aborting | Phase::Abortable(_) => self.txn.v2,
            _ => self.transaction_version >= 2,
        }
    }

    /// Whether batches of the transaction may be drained now (for a partition that
    /// [`Self::add_partition`] accepted): not once an abort was asked for, nor after an error.
    pub fn can_send_produce(&self) -> bool {
        self.transaction_open()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        self.events.pop_front()
    }

    /// Registers this instance as the owner of its `transactional.id` (InitProducerId): the
    /// coordinator aborts a transaction an older instance left open and fences that instance.
    /// Finishes with [`TxnEvent::Initialized`]; calling it again meanwhile changes nothing.
    pub fn init(&mut self) -> Result<(), TxnError> {
        match self.phase {
            Phase::Uninitialized => {
                self.phase = Phase::Initializing { after_abort: false };
                Ok(())
            }
            // Asked again while under way (the caller stopped waiting): it goes on.
            Phase::Initializing { after_abort: false } => Ok(()),
            _ => Err(self.refuse(TxnOperation::Init)),
        }
    }

    /// Opens a transaction.
    pub fn begin(&mut self) -> Result<(), TxnError> {
        match self.phase {
            Phase::Ready => {
                self.txn = Txn { v2: self.transaction_version >= 2, ..Txn::default() };
                self.phase = Phase::InTransaction;
                Ok(())
            }
            _ => Err(self.refuse(TxnOperation::Begin)),
        }
    }

    /// Called before the first batch of `tp` is drained in this transaction (calling it again is
    /// harmless). `Ok(true)`: the batch may be sent. `Ok(false)`: not yet, wait for
    /// [`TxnEvent::PartitionsAdded`] (v1: AddPartitionsToTxn must succeed first).
    pub fn add_partition(&mut self, tp: &TopicPartition) -> Result<bool, TxnError> {
        if !self.can_send_produce() {
            return Err(self.refuse(TxnOperation::AddPartition));
        }
        if self.txn.v2 {
            self.txn.maybe_started = true;
            self.txn.added.insert(tp.clone());
            return Ok(true);
        }
        if self.txn.added.contains(tp) {
            return Ok(true);
        }
        self.txn.pending.insert(tp.clone());
        Ok(false)
    }

    /// Puts a consumer group's offsets into the transaction: they are committed if and only if
    /// the transaction is. Finishes with [`TxnEvent::OffsetsAdded`]; a commit waits for it.
    pub fn send_offsets(
        &mut self,
        group: GroupMetadata,
        offsets: Vec<(TopicPartition, TxnOffset)>,
    ) -> Result<(), TxnError> {
        if !matches!(self.phase, Phase::InTransaction) {
            return Err(self.refuse(TxnOperation::SendOffsets));
        }
        self.txn.offsets.push_back(PendingOffsets { group, offsets, group_added: false });
        Ok(())
    }

    /// Commits the transaction once every produce of it is settled: `in_flight_produces` is how
    /// many [`Self::produce_settled`] calls are still to come for it (its records not completed
    /// yet, queued or in flight). The driver keeps draining the transaction's batches meanwhile.
    /// Finishes with [`TxnEvent::Committed`]; calling it again meanwhile changes nothing.
    pub fn commit(&mut self, in_flight_produces: usize) -> Result<(), TxnError> {
        match self.phase {
            Phase::InTransaction => {
                self.phase = Phase::Committing;
                self.txn.unsettled = in_flight_produces;
                self.advance();
                Ok(())
            }
            Phase::Committing => Ok(()),
            _ => Err(self.refuse(TxnOperation::Commit)),
        }
    }

    /// Aborts the transaction, also from `AbortableError`. The driver stops draining, and drops
    /// the batches not sent; `in_flight_produces` is how many [`Self::produce_settled`] calls are
    /// still to come (EndTxn waits for them). Finishes with [`TxnEvent::Aborted`]; calling it
    /// again meanwhile changes nothing.
    pub fn abort(&mut self, in_flight_produces: usize) -> Result<(), TxnError> {
        match self.phase {
            Phase::InTransaction | Phase::Abortable(_) => {
                self.phase = Phase::Aborting;
                self.txn.pending.clear();
                self.txn.offsets.clear();
                self.txn.unsettled = in_flight_produces;
                self.advance();
                Ok(())
            }
            Phase::Aborting => Ok(()),
            _ => Err(self.refuse(TxnOperation::Abort)),
        }
    }

    /// One produce of the transaction settled (see `commit` and `abort`). A failed one makes the
    /// transaction abortable (and, under v1, the epoch is bumped after the abort).
    pub fn produce_settled(&mut self, outcome: ProduceOutcome) {
        if !matches!(self.phase, Phase::InTransaction | Phase::Committing | Phase::Aborting | Phase::Abortable(_)) {
            return;
        }
        if !matches!(self.phase, Phase::InTransaction) {
            self.txn.unsettled = self.txn.unsettled.saturating_sub(1);
        }
        match outcome {
            ProduceOutcome::Acknowledged => self.txn.confirmed_started |= self.txn.v2,
            ProduceOutcome::Discarded => {}
            ProduceOutcome::Failed(Some(code @ ErrorCode::PRODUCER_FENCED)) => self.fatal(FatalReason::Fenced { code }),
            ProduceOutcome::Failed(Some(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)) => {
                self.fatal(FatalReason::TransactionalIdAuthorizationFailed);
            }
            ProduceOutcome::Failed(code) => {
                self.txn.bump_epoch = true;
                self.abortable(AbortableReason::ProduceFailed { code });
            }
        }
        self.advance();
    }

    /// During an abort: the producer core's sequences have a gap although no produce failed
    /// (`abort_queued` dropped batches that already held sequences), so the epoch is bumped when
    /// the abort ends (KIP-360; under v2 its EndTxn does that).
    pub fn require_epoch_bump(&mut self) -> Result<(), TxnError> {
        match self.phase {
            Phase::Aborting | Phase::Abortable(_) => {
                self.txn.bump_epoch = true;
                Ok(())
            }
            _ => Err(self.refuse(TxnOperation::RequireEpochBump)),
        }
    }

    /// The request to send now, if any. Call it after every event until it returns `None`;
    /// [`Self::next_wakeup`] says when to look again.
    pub fn next_request(&mut self, now: Instant) -> Option<OutgoingRequest> {
        self.advance();
        if self.in_flight.is_some() || self.not_before.is_some_and(|t| t > now) {
            return None;
        }
        let op = self.next_op()?;
        let (op, target) = self.route(op);
        let request = self.build(&op);
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.in_flight = Some(InFlight { id, op });
        Some(OutgoingRequest { id, target, request })
    }

    /// When a request waiting for its backoff may go.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.not_before.filter(|_| self.in_flight.is_none() && self.next_op().is_some())
    }

    /// FindCoordinator's answer: the coordinator's node, or the error code.
    pub fn handle_find_coordinator(&mut self, id: RequestId, result: Result<i32, ErrorCode>, now: Instant) {
        let Some(op) = self.take(id, RequestKind::FIND_COORDINATOR) else { return };
        let Op::FindCoordinator { key, key_type } = &op else { return };
        match (result, key_type) {
            (Ok(node), CoordinatorType::Transaction) => self.txn_coordinator = Some(node),
            (Ok(node), CoordinatorType::Group) => self.group_coordinator = Some((key.clone(), node)),
            (Err(code), _) => self.on_error(&op, code, now),
        }
        self.advance();
    }

    /// InitProducerId's answer: the producer id and epoch on success.
    pub fn handle_init_producer_id(
        &mut self,
        id: RequestId,
        error: ErrorCode,
        producer_id: i64,
        epoch: i16,
        now: Instant,
    ) {
        let Some(op) = self.take(id, RequestKind::INIT_PRODUCER_ID) else { return };
        if error != ErrorCode::NONE {
            self.on_error(&op, error, now);
            return;
        }
        self.succeeded();
        self.set_producer_id(producer_id, epoch);
        if let Phase::Initializing { after_abort } = self.phase {
            self.phase = Phase::Ready;
            self.events.push_back(if after_abort { TxnEvent::Aborted } else { TxnEvent::Initialized });
        }
    }

    /// AddPartitionsToTxn's answer, per partition (versions up to 3 answer per partition only).
    pub fn handle_add_partitions(&mut self, id: RequestId, results: &[(TopicPartition, ErrorCode)], now: Instant) {
        let Some(op) = self.take(id, RequestKind::ADD_PARTITIONS_TO_TXN) else { return };
        let Op::AddPartitions(sent) = &op else { return };
        let mut newly = Vec::new();
        let mut worst: Option<(Verdict, ErrorCode)> = None;
        let mut unanswered = false;
        for tp in sent {
            match results.iter().find(|(p, _)| p == tp).map(|(_, c)| *c) {
                Some(ErrorCode::NONE) => {
                    self.txn.confirmed_started = true;
                    if self.txn.pending.remove(tp) {
                        self.txn.added.insert(tp.clone());
                        newly.push(tp.clone());
                    }
                }
                // Not tried because another partition of the request failed.
                Some(ErrorCode::OPERATION_NOT_ATTEMPTED) => unanswered = true,
                Some(code) => worst = worse(worst, RequestKind::ADD_PARTITIONS_TO_TXN, code),
                None => unanswered = true,
            }
        }
        if !newly.is_empty() {
            self.events.push_back(TxnEvent::PartitionsAdded(newly));
        }
        match worst {
            Some((_, code)) => self.on_error(&op, code, now),
            None if unanswered => self.retry_after(now),
            None => self.succeeded(),
        }
        self.advance();
    }

    /// AddOffsetsToTxn's answer.
    pub fn handle_add_offsets(&mut self, id: RequestId, error: ErrorCode, now: Instant) {
        let Some(op) = self.take(id, RequestKind::ADD_OFFSETS_TO_TXN) else { return };
        if error != ErrorCode::NONE {
            self.on_error(&op, error, now);
        } else {
            self.succeeded();
            self.txn.confirmed_started = true;
            if let Some(front) = self.txn.offsets.front_mut() {
                front.group_added = true;
            }
        }
        self.advance();
    }

    /// TxnOffsetCommit's answer, per partition. The partitions answered NONE are done; the others
    /// are retried or decide the error.
    pub fn handle_txn_offset_commit(&mut self, id: RequestId, results: &[(TopicPartition, ErrorCode)], now: Instant) {
        let Some(op) = self.take(id, RequestKind::TXN_OFFSET_COMMIT) else { return };
        let v2 = self.txn.v2;
        let Some(front) = self.txn.offsets.front_mut() else {
            // Aborted meanwhile.
            self.advance();
            return;
        };
        let mut worst: Option<(Verdict, ErrorCode)> = None;
        let mut any_done = false;
        front.offsets.retain(|(tp, _)| match results.iter().find(|(p, _)| p == tp).map(|(_, c)| *c) {
            Some(ErrorCode::NONE) => {
                any_done = true;
                false
            }
            Some(code) => {
                worst = worse(worst.take(), RequestKind::TXN_OFFSET_COMMIT, code);
                true
            }
            None => true,
        });
        let finished = front.offsets.is_empty();
        let group_id = front.group.group_id.clone();
        self.txn.confirmed_started |= any_done && v2;
        if finished {
            self.succeeded();
            self.txn.offsets.pop_front();
            self.events.push_back(TxnEvent::OffsetsAdded { group_id });
        } else {
            match worst {
                Some((_, code)) => self.on_error(&op, code, now),
                None => self.retry_after(now),
            }
        }
        self.advance();
    }

    /// EndTxn's answer. Under v2 (v5+) it carries the producer id and epoch of the next
    /// transaction; pass -1 where absent.
    pub fn handle_end_txn(&mut self, id: RequestId, error: ErrorCode, producer_id: i64, epoch: i16, now: Instant) {
        let Some(op) = self.take(id, RequestKind::END_TXN) else { return };
        let Op::EndTxn(commit) = op else { return };
        // v1: an abort that reaches a coordinator that never saw the transaction (the only adds
        // sent went unanswered and did not arrive) finds nothing to abort.
        let nothing_to_abort =
            !commit && !self.txn.v2 && error == ErrorCode::INVALID_TXN_STATE && !self.txn.confirmed_started;
        if error != ErrorCode::NONE && !nothing_to_abort {
            self.on_error(&op, error, now);
            return;
        }
        self.succeeded();
        if self.txn.v2 {
            if producer_id < 0 || epoch < 0 {
                self.fatal(FatalReason::MissingEpoch);
                return;
            }
            self.set_producer_id(producer_id, epoch);
        }
        if commit {
            self.phase = Phase::Ready;
            self.events.push_back(TxnEvent::Committed);
        } else {
            self.finish_abort(self.txn.v2);
        }
    }

    /// Request `id` got no answer (timeout, connection lost): it may or may not have been
    /// applied. It is sent again, the same, after finding its coordinator again.
    pub fn handle_no_response(&mut self, id: RequestId, now: Instant) {
        let Some(InFlight { op, .. }) = self.in_flight.take_if(|f| f.id == id) else { return };
        self.forget_coordinator(&op);
        self.retry_after(now);
    }

    /// The error for a refused call in the current state.
    fn refuse(&self, operation: TxnOperation) -> TxnError {
        match &self.phase {
            Phase::Fatal(r) => TxnError::Fatal(r.clone()),
            Phase::Abortable(r) => TxnError::Abortable(r.clone()),
            _ => TxnError::InvalidState { operation, state: self.state() },
        }
    }

    /// What the coordinators should do next, from the state alone: so a retry after a backoff is
    /// the same request.
    fn next_op(&self) -> Option<Op> {
        match self.phase {
            Phase::Initializing { .. } => Some(Op::InitProducerId),
            Phase::InTransaction | Phase::Committing => {
                if let Some(decision) = self.txn.end_decision {
                    return Some(Op::EndTxn(decision));
                }
                if !self.txn.v2 && !self.txn.pending.is_empty() {
                    return Some(Op::AddPartitions(self.txn.pending.iter().cloned().collect()));
                }
                if let Some(front) = self.txn.offsets.front() {
                    return Some(if !self.txn.v2 && !front.group_added {
                        Op::AddOffsets(front.group.group_id.clone())
                    } else {
                        Op::TxnOffsetCommit { group: front.group.clone(), offsets: front.offsets.clone() }
                    });
                }
                let commit_now =
                    matches!(self.phase, Phase::Committing) && self.txn.unsettled == 0 && self.txn.maybe_started;
                commit_now.then_some(Op::EndTxn(true))
            }
            Phase::Aborting => (self.txn.unsettled == 0 && self.txn.maybe_started && !self.txn.producer_id_unmapped)
                .then_some(Op::EndTxn(false)),
            _ => None,
        }
    }

    /// The target of `op`, or FindCoordinator when its coordinator is not known.
    fn route(&self, op: Op) -> (Op, Target) {
        let (key, key_type, known) = match &op {
            Op::FindCoordinator { .. } => return (op, Target::AnyBroker),
            Op::TxnOffsetCommit { group, .. } => {
                let group = group.group_id.clone();
                let node = self.group_coordinator.as_ref().filter(|(g, _)| *g == group).map(|(_, n)| *n);
                (group, CoordinatorType::Group, node)
            }
            _ => (self.config.transactional_id.clone(), CoordinatorType::Transaction, self.txn_coordinator),
        };
        match known {
            Some(node) => (op, Target::Coordinator(node)),
            None => (Op::FindCoordinator { key, key_type }, Target::AnyBroker),
        }
    }

    /// The request for `op`, noting what sending it implies.
    fn build(&mut self, op: &Op) -> TxnRequest {
        let transactional_id = self.config.transactional_id.clone();
        let (producer_id, producer_epoch) = (self.producer_id, self.epoch);
        match op {
            Op::FindCoordinator { key, key_type } => {
                TxnRequest::FindCoordinator { key: key.clone(), key_type: *key_type }
            }
            Op::InitProducerId => {
                let after_abort = matches!(self.phase, Phase::Initializing { after_abort: true });
                let (producer_id, producer_epoch) = if after_abort { (producer_id, producer_epoch) } else { (-1, -1) };
                TxnRequest::InitProducerId {
                    transactional_id,
                    transaction_timeout_ms: self.config.transaction_timeout.as_millis().min(i32::MAX as u128) as i32,
                    producer_id,
                    producer_epoch,
                }
            }
            Op::AddPartitions(partitions) => {
                self.txn.maybe_started = true;
                TxnRequest::AddPartitionsToTxn {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    partitions: partitions.clone(),
                }
            }
            Op::AddOffsets(group_id) => {
                self.txn.maybe_started = true;
                TxnRequest::AddOffsetsToTxn {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    group_id: group_id.clone(),
                }
            }
            Op::TxnOffsetCommit { group, offsets } => {
                // Under v2 this request itself adds the group to the transaction.
                self.txn.maybe_started |= self.txn.v2;
                TxnRequest::TxnOffsetCommit {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    group: group.clone(),
                    offsets: offsets.clone(),
                    transaction_v2: self.txn.v2,
                }
            }
            Op::EndTxn(commit) => {
                self.txn.end_decision = Some(*commit);
                TxnRequest::EndTxn {
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    commit: *commit,
                    transaction_v2: self.txn.v2,
                }
            }
        }
    }

    /// Takes the request in flight if `id` is it and of `kind`; stale and duplicated answers
    /// are ignored.
    fn take(&mut self, id: RequestId, kind: RequestKind) -> Option<Op> {
        self.in_flight.take_if(|f| f.id == id && f.op.kind() == kind).map(|f| f.op)
    }

    /// Transitions that need no request: a commit or abort of a transaction the coordinator never
    /// heard of.
    fn advance(&mut self) {
        if self.in_flight.is_some() || self.txn.unsettled > 0 {
            return;
        }
        if matches!(self.phase, Phase::Aborting) && self.txn.producer_id_unmapped {
            // No EndTxn for a producer id the coordinator does not know: straight to the bump.
            self.finish_abort(false);
            return;
        }
        if self.txn.maybe_started {
            return;
        }
        match self.phase {
            Phase::Committing if self.txn.pending.is_empty() && self.txn.offsets.is_empty() => {
                self.phase = Phase::Ready;
                self.events.push_back(TxnEvent::Committed);
            }
            Phase::Aborting => self.finish_abort(false),
            _ => {}
        }
    }

    /// Ends an abort: with a KIP-360 epoch bump first if sequences have a gap and no EndTxn
    /// (v2) has bumped the epoch already.
    fn finish_abort(&mut self, epoch_bumped: bool) {
        if self.txn.bump_epoch && !epoch_bumped {
            self.phase = Phase::Initializing { after_abort: true };
        } else {
            self.phase = Phase::Ready;
            self.events.push_back(TxnEvent::Aborted);
        }
    }

    fn set_producer_id(&mut self, producer_id: i64, epoch: i16) {
        if (producer_id, epoch) != (self.producer_id, self.epoch) {
            self.producer_id = producer_id;
            self.epoch = epoch;
            self.events.push_back(TxnEvent::ProducerIdChanged { producer_id, epoch });
        }
    }

    fn on_error(&mut self, op: &Op, code: ErrorCode, now: Instant) {
        let kind = op.kind();
        match classify(kind, code) {
            Verdict::Retry => {
                let concurrent = matches!(op, Op::AddPartitions(_)) && code == ErrorCode::CONCURRENT_TRANSACTIONS;
                self.not_before =
                    Some(if concurrent { &mut self.concurrent_backoff } else { &mut self.backoff }.fail(now));
            }
            Verdict::Refind => {
                self.forget_coordinator(op);
                self.retry_after(now);
            }
            // Once sent, an EndTxn decision is never changed, and InitProducerId has no
            // transaction to abort.
            Verdict::Abortable if matches!(op, Op::EndTxn(_) | Op::InitProducerId) => {
                self.fatal(FatalReason::Broker { request: kind, code });
            }
            Verdict::Abortable if self.transaction_open() => {
                self.abortable(AbortableReason::Refused { request: kind, code });
            }
            // The transaction is being aborted already: what was refused is no longer wanted, but
            // a request still to send (FindCoordinator before EndTxn) waits a backoff.
            Verdict::Abortable => self.retry_after(now),
            Verdict::Fatal(reason) => self.fatal(reason),
            Verdict::ProducerIdLost => {
                self.txn.bump_epoch = true;
                self.txn.producer_id_unmapped |= code == ErrorCode::INVALID_PRODUCER_ID_MAPPING;
                let reason = AbortableReason::Refused { request: kind, code };
                match op {
                    // Committed nothing: the coordinator has no transaction of this producer id.
                    Op::EndTxn(true) => {
                        self.txn.end_decision = None;
                        self.abortable(reason);
                    }
                    // Nothing to end: the abort finishes with the bump (see `advance`).
                    Op::EndTxn(false) => {
                        self.txn.end_decision = None;
                        self.txn.producer_id_unmapped = true;
                    }
                    _ if self.transaction_open() => self.abortable(reason),
                    // Being aborted already: the abort takes care of it.
                    _ => {}
                }
            }
        }
    }

    /// A transaction is open and may still commit.
    fn transaction_open(&self) -> bool {
        matches!(self.phase, Phase::InTransaction)
            || (matches!(self.phase, Phase::Committing) && self.txn.end_decision.is_none())
    }

    fn forget_coordinator(&mut self, op: &Op) {
        match op {
            Op::FindCoordinator { .. } => {}
            Op::TxnOffsetCommit { .. } => self.group_coordinator = None,
            _ => self.txn_coordinator = None,
        }
    }

    fn retry_after(&mut self, now: Instant) {
        self.not_before = Some(self.backoff.fail(now));
    }

    /// A request succeeded: the next failure waits the shortest backoff again.
    fn succeeded(&mut self) {
        self.backoff.reset();
        self.concurrent_backoff.reset();
    }

    /// The open transaction can now only be aborted. Errors while ending it change nothing:
    /// an abort is on its way, or the commit's EndTxn decision is fixed.
    fn abortable(&mut self, reason: AbortableReason) {
        if self.transaction_open() {
            self.txn.pending.clear();
            self.phase = Phase::Abortable(reason.clone());
            self.events.push_back(TxnEvent::Failed(TxnError::Abortable(reason)));
        }
    }

    fn fatal(&mut self, reason: FatalReason) {
        if matches!(self.phase, Phase::Fatal(_)) {
            return;
        }
        self.phase = Phase::Fatal(reason.clone());
        self.in_flight = None;
        self.not_before = None;
        self.events.push_back(TxnEvent::Failed(TxnError::Fatal(reason)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: i64 = 7;

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("t", partition)
    }

    fn group() -> GroupMetadata {
        GroupMetadata {
            group_id: "g".into(),
            generation_id: 3,
            member_id: "m-1".into(),
            group_instance_id: Some("i-1".into()),
        }
    }

    fn offset(o: i64) -> TxnOffset {
        TxnOffset { offset: o, leader_epoch: Some(1), metadata: None }
    }

    /// A manager and a virtual clock.
    struct H {
        m: TransactionManager,
        now: Instant,
    }

    impl H {
        fn new(transaction_version: i16) -> Self {
            let mut config = TxnConfig::new("tx");
            config.backoff_seed = Some(transaction_version as u64);
            let mut m = TransactionManager::new(config);
            m.set_transaction_version(transaction_version);
            Self { m, now: Instant::now() }
        }

        /// Initialized, coordinator on node 1, epoch 0, events drained.
        fn ready(transaction_version: i16) -> Self {
            let mut h = Self::new(transaction_version);
            h.m.init().unwrap();
            h.find(CoordinatorType::Transaction, 1);
            let r = h.send();
            h.m.handle_init_producer_id(r.id, ErrorCode::NONE, PID, 0, h.now);
            assert_eq!(h.m.state(), TxnState::Ready);
            h.events();
            h
        }

        /// Ready and in a transaction holding `tp(0)`.
        fn in_transaction(transaction_version: i16) -> Self {
            let mut h = Self::ready(transaction_version);
            h.m.begin().unwrap();
            if h.m.add_partition(&tp(0)).unwrap() {
                return h;
            }
            let r = h.send();
            h.m.handle_add_partitions(r.id, &[(tp(0), ErrorCode::NONE)], h.now);
            h.events();
            h
        }

        fn send(&mut self) -> OutgoingRequest {
            self.m.next_request(self.now).expect("a request to send")
        }

        fn nothing_to_send(&mut self) {
            assert_eq!(self.m.next_request(self.now), None);
        }

        fn events(&mut self) -> Vec<TxnEvent> {
            std::iter::from_fn(|| self.m.poll_event()).collect()
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
        }

        /// Asserts that nothing goes before a backoff of `term_ms` ±20 % (KIP-580's jitter, at
        /// most `retry_backoff_max`), and waits it out.
        fn wait_backoff(&mut self, term_ms: u64) {
            let at = self.m.next_wakeup().expect("a request waiting for its backoff");
            let ms = (at - self.now).as_secs_f64() * 1000.0;
            let (lo, hi) = ((term_ms as f64 * 0.8).min(1000.0), (term_ms as f64 * 1.2).min(1000.0));
            assert!(ms >= lo - 1e-3 && ms <= hi + 1e-3, "a backoff of {ms} ms for a term of {term_ms} ms");
            self.nothing_to_send();
            self.now = at;
        }

        fn find(&mut self, key_type: CoordinatorType, node: i32) {
            let r = self.send();
            assert_eq!(r.target, Target::AnyBroker);
            assert!(matches!(r.request, TxnRequest::FindCoordinator { key_type: k, .. } if k == key_type), "{r:?}");
            self.m.handle_find_coordinator(r.id, Ok(node), self.now);
        }

        fn end_txn(&mut self, expect_commit: bool) -> RequestId {
            let r = self.send();
            let TxnRequest::EndTxn { commit, .. } = r.request else { panic!("expected EndTxn: {r:?}") };
            assert_eq!(commit, expect_commit);
            r.id
        }
    }

    #[test]
    fn init_finds_the_coordinator_then_gets_a_producer_id() {
        let mut h = H::new(1);
        assert_eq!(h.m.state(), TxnState::Uninitialized);
        h.nothing_to_send();
        h.m.init().unwrap();
        assert_eq!(h.m.state(), TxnState::Initializing);
        let r = h.send();
        assert_eq!(r.request, TxnRequest::FindCoordinator { key: "tx".into(), key_type: CoordinatorType::Transaction });
        h.m.handle_find_coordinator(r.id, Ok(4), h.now);
        let r = h.send();
        assert_eq!(r.target, Target::Coordinator(4));
        assert_eq!(
            r.request,
            TxnRequest::InitProducerId {
                transactional_id: "tx".into(),
                transaction_timeout_ms: 60_000,
                producer_id: -1,
                producer_epoch: -1
            }
        );
        h.nothing_to_send();
        h.m.handle_init_producer_id(r.id, ErrorCode::NONE, PID, 5, h.now);
        assert_eq!(h.m.state(), TxnState::Ready);
        assert_eq!(h.m.producer_id(), (PID, 5));
        assert_eq!(h.events(), vec![TxnEvent::ProducerIdChanged { producer_id: PID, epoch: 5 }, TxnEvent::Initialized]);
    }

    #[test]
    fn init_retries_concurrent_transactions() {
        let mut h = H::new(1);
        h.m.init().unwrap();
        h.find(CoordinatorType::Transaction, 1);
        let r = h.send();
        // An older instance's transaction is being aborted.
        h.m.handle_init_producer_id(r.id, ErrorCode::CONCURRENT_TRANSACTIONS, -1, -1, h.now);
        h.nothing_to_send();
        h.wait_backoff(100);
        let again = h.send();
        assert_eq!((again.request, again.target), (r.request, r.target));
    }

    #[test]
    fn misuse_is_refused_with_the_state() {
        let mut h = H::new(1);
        let invalid = |operation, state| Err(TxnError::InvalidState { operation, state });
        assert_eq!(h.m.begin(), invalid(TxnOperation::Begin, TxnState::Uninitialized));
        let mut h2 = H::ready(1);
        assert_eq!(h2.m.commit(0), invalid(TxnOperation::Commit, TxnState::Ready));
        assert_eq!(h2.m.abort(0), invalid(TxnOperation::Abort, TxnState::Ready));
        assert_eq!(h2.m.add_partition(&tp(0)).map(|_| ()), invalid(TxnOperation::AddPartition, TxnState::Ready));
        assert_eq!(h2.m.send_offsets(group(), vec![]), invalid(TxnOperation::SendOffsets, TxnState::Ready));
        assert_eq!(h2.m.require_epoch_bump(), invalid(TxnOperation::RequireEpochBump, TxnState::Ready));
        assert_eq!(h2.m.init(), invalid(TxnOperation::Init, TxnState::Ready));
        h2.m.begin().unwrap();
        assert_eq!(h2.m.begin(), invalid(TxnOperation::Begin, TxnState::InTransaction));
        h.m.init().unwrap();
        // Asked again while under way (a caller stopped waiting and calls again): it goes on.
        assert_eq!(h.m.init(), Ok(()));
        assert_eq!(h.m.state(), TxnState::Initializing);
        // A transaction being committed cannot be aborted, nor a partition added once EndTxn went.
        let mut h3 = H::in_transaction(1);
        h3.m.commit(0).unwrap();
        h3.end_txn(true);
        assert_eq!(h3.m.abort(0), invalid(TxnOperation::Abort, TxnState::Committing));
        assert_eq!(h3.m.add_partition(&tp(0)).map(|_| ()), invalid(TxnOperation::AddPartition, TxnState::Committing));
        assert!(!h3.m.can_send_produce());
    }

    #[test]
    fn v1_partition_is_sent_only_after_add_partitions_to_txn() {
        let mut h = H::ready(1);
        h.m.begin().unwrap();
        assert!(!h.m.is_transaction_v2());
        assert_eq!(h.m.add_partition(&tp(0)), Ok(false));
        assert_eq!(h.m.add_partition(&tp(0)), Ok(false));
        let r = h.send();
        assert_eq!(r.target, Target::Coordinator(1));
        assert_eq!(
            r.request,
            TxnRequest::AddPartitionsToTxn {
                transactional_id: "tx".into(),
                producer_id: PID,
                producer_epoch: 0,
                partitions: vec![tp(0)]
            }
        );
        // A partition asked for meanwhile goes with the next request.
        assert_eq!(h.m.add_partition(&tp(1)), Ok(false));
        h.nothing_to_send();
        h.m.handle_add_partitions(r.id, &[(tp(0), ErrorCode::NONE)], h.now);
        assert_eq!(h.events(), vec![TxnEvent::PartitionsAdded(vec![tp(0)])]);
        assert_eq!(h.m.add_partition(&tp(0)), Ok(true));
        let r = h.send();
        assert!(matches!(&r.request, TxnRequest::AddPartitionsToTxn { partitions, .. } if *partitions == vec![tp(1)]));
    }

    #[test]
    fn add_partitions_retries_what_was_not_added() {
        let mut h = H::ready(1);
        h.m.begin().unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        h.m.add_partition(&tp(1)).unwrap();
        let r = h.send();
        h.m.handle_add_partitions(
            r.id,
            &[(tp(0), ErrorCode::NONE), (tp(1), ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)],
            h.now,
        );
        assert_eq!(h.events(), vec![TxnEvent::PartitionsAdded(vec![tp(0)])]);
        h.nothing_to_send();
        h.wait_backoff(100);
        let r = h.send();
        assert!(matches!(&r.request, TxnRequest::AddPartitionsToTxn { partitions, .. } if *partitions == vec![tp(1)]));
    }

    #[test]
    fn concurrent_transactions_on_add_partitions_retries_after_a_short_backoff() {
        let mut h = H::ready(1);
        h.m.begin().unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        let r = h.send();
        h.m.handle_add_partitions(r.id, &[(tp(0), ErrorCode::CONCURRENT_TRANSACTIONS)], h.now);
        h.nothing_to_send();
        h.wait_backoff(20);
        let again = h.send();
        assert_eq!((again.request, again.target), (r.request, r.target));
        h.m.handle_add_partitions(again.id, &[(tp(0), ErrorCode::NONE)], h.now);
        assert_eq!(h.m.add_partition(&tp(0)), Ok(true));
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_restarts_after_a_success() {
        let mut h = H::in_transaction(1);
        h.m.commit(0).unwrap();
        for ms in [100, 200, 400, 800, 1600, 3200] {
            let id = h.end_txn(true);
            h.m.handle_end_txn(id, ErrorCode::COORDINATOR_LOAD_IN_PROGRESS, -1, -1, h.now);
            h.wait_backoff(ms);
        }
        let id = h.end_txn(true);
        h.m.handle_end_txn(id, ErrorCode::NONE, -1, -1, h.now);
        h.m.begin().unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        let r = h.send();
        h.m.handle_add_partitions(r.id, &[(tp(0), ErrorCode::COORDINATOR_LOAD_IN_PROGRESS)], h.now);
        h.wait_backoff(100);
    }

    #[test]
    fn not_coordinator_finds_the_coordinator_again_then_retries() {
        let mut h = H::ready(1);
        h.m.begin().unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        let r = h.send();
        h.m.handle_add_partitions(r.id, &[(tp(0), ErrorCode::NOT_COORDINATOR)], h.now);
        h.wait_backoff(100);
        h.find(CoordinatorType::Transaction, 2);
        let again = h.send();
        assert_eq!(again.target, Target::Coordinator(2));
        assert_eq!(again.request, r.request);
    }

    #[test]
    fn v2_partitions_are_added_implicitly_and_end_txn_bumps_the_epoch() {
        let mut h = H::ready(2);
        h.m.begin().unwrap();
        assert!(h.m.is_transaction_v2());
        assert_eq!(h.m.add_partition(&tp(0)), Ok(true));
        h.nothing_to_send();
        h.m.commit(1).unwrap();
        h.nothing_to_send();
        h.m.produce_settled(ProduceOutcome::Acknowledged);
        let r = h.send();
        assert_eq!(
            r.request,
            TxnRequest::EndTxn {
                transactional_id: "tx".into(),
                producer_id: PID,
                producer_epoch: 0,
                commit: true,
                transaction_v2: true
            }
        );
        h.m.handle_end_txn(r.id, ErrorCode::NONE, PID, 1, h.now);
        assert_eq!(h.m.state(), TxnState::Ready);
        assert_eq!(h.m.producer_id(), (PID, 1));
        assert_eq!(h.events(), vec![TxnEvent::ProducerIdChanged { producer_id: PID, epoch: 1 }, TxnEvent::Committed]);
        // The next transaction's EndTxn carries the new epoch; an exhausted epoch comes back as a
        // new producer id.
        h.m.begin().unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        h.m.commit(0).unwrap();
        let r = h.send();
        assert!(matches!(r.request, TxnRequest::EndTxn { producer_epoch: 1, .. }));
        h.m.handle_end_txn(r.id, ErrorCode::NONE, PID + 1, 0, h.now);
        assert_eq!(h.m.producer_id(), (PID + 1, 0));
    }

    #[test]
    fn v2_end_txn_answer_without_an_epoch_is_fatal() {
        let mut h = H::in_transaction(2);
        h.m.commit(0).unwrap();
        let id = h.end_txn(true);
        h.m.handle_end_txn(id, ErrorCode::NONE, -1, -1, h.now);
        assert_eq!(h.m.error(), Some(TxnError::Fatal(FatalReason::MissingEpoch)));
    }

    #[test]
    fn transaction_version_is_fixed_at_begin() {
        let mut h = H::ready(1);
        h.m.begin().unwrap();
        h.m.set_transaction_version(2);
        assert_eq!(h.m.add_partition(&tp(0)), Ok(false));
        let r = h.send();
        h.m.handle_add_partitions(r.id, &[(tp(0), ErrorCode::NONE)], h.now);
        h.m.commit(0).unwrap();
        let id = h.end_txn(true);
        h.m.handle_end_txn(id, ErrorCode::NONE, -1, -1, h.now);
        h.m.begin().unwrap();
        assert_eq!(h.m.add_partition(&tp(0)), Ok(true));
    }

    #[test]
    fn commit_waits_until_every_produce_is_settled() {
        let mut h = H::in_transaction(1);
        h.m.commit(2).unwrap();
        assert_eq!(h.m.state(), TxnState::Committing);
        // Queued batches of the transaction still go out while it commits.
        assert!(h.m.can_send_produce());
        h.m.produce_settled(ProduceOutcome::Acknowledged);
        h.nothing_to_send();
        h.m.produce_settled(ProduceOutcome::Acknowledged);
        let id = h.end_txn(true);
        h.m.handle_end_txn(id, ErrorCode::NONE, -1, -1, h.now);
        assert_eq!(h.events(), vec![TxnEvent::Committed]);
        assert_eq!(h.m.state(), TxnState::Ready);
    }

    #[test]
    fn commit_waits_for_partitions_being_added() {
        let mut h = H::ready(1);
        h.m.begin().unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        h.m.commit(1).unwrap();
        let r = h.send();
        assert!(matches!(r.request, TxnRequest::AddPartitionsToTxn { .. }));
        h.m.handle_add_partitions(r.id, &[(tp(0), ErrorCode::NONE)], h.now);
        assert_eq!(h.m.add_partition(&tp(0)), Ok(true));
        h.nothing_to_send();
        h.m.produce_settled(ProduceOutcome::Acknowledged);
        h.end_txn(true);
    }

    #[test]
    fn lost_end_txn_is_retried_with_the_same_decision() {
        let mut h = H::in_transaction(1);
        h.m.commit(0).unwrap();
        let first = h.end_txn(true);
        h.m.handle_no_response(first, h.now);
        h.nothing_to_send();
        h.wait_backoff(100);
        // The connection may be gone: the coordinator is looked up again.
        h.find(CoordinatorType::Transaction, 1);
        let second = h.end_txn(true);
        // The first attempt's answer comes late: ignored.
        h.m.handle_end_txn(first, ErrorCode::NONE, -1, -1, h.now);
        assert_eq!(h.m.state(), TxnState::Committing);
        // The retry of an applied commit finds it CompleteCommit: NONE.
        h.m.handle_end_txn(second, ErrorCode::NONE, -1, -1, h.now);
        assert_eq!(h.events(), vec![TxnEvent::Committed]);
    }

    #[test]
    fn end_txn_refused_as_abortable_is_fatal_rather_than_flipped() {
        let mut h = H::in_transaction(2);
        h.m.commit(0).unwrap();
        let id = h.end_txn(true);
        h.m.handle_end_txn(id, ErrorCode::TRANSACTION_ABORTABLE, -1, -1, h.now);
        assert_eq!(
            h.m.error(),
            Some(TxnError::Fatal(FatalReason::Broker {
                request: RequestKind::END_TXN,
                code: ErrorCode::TRANSACTION_ABORTABLE
            }))
        );
        h.nothing_to_send();
    }

    #[test]
    fn failed_produce_makes_the_transaction_abortable_and_v1_bumps_the_epoch_after_the_abort() {
        let mut h = H::in_transaction(1);
        h.m.produce_settled(ProduceOutcome::Failed(Some(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)));
        let reason = AbortableReason::ProduceFailed { code: Some(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER) };
        assert_eq!(h.m.state(), TxnState::AbortableError);
        assert_eq!(h.events(), vec![TxnEvent::Failed(TxnError::Abortable(reason.clone()))]);
        let abortable = Err(TxnError::Abortable(reason));
        assert_eq!(h.m.commit(0), abortable);
        assert_eq!(h.m.begin(), abortable);
        assert_eq!(h.m.send_offsets(group(), vec![]), abortable);
        assert_eq!(h.m.add_partition(&tp(0)).map(|_| ()), abortable);
        assert!(!h.m.can_send_produce());
        h.nothing_to_send();
        // One produce is still in flight: EndTxn waits for it.
        h.m.abort(1).unwrap();
        h.nothing_to_send();
        h.m.produce_settled(ProduceOutcome::Acknowledged);
        let id = h.end_txn(false);
        h.m.handle_end_txn(id, ErrorCode::NONE, -1, -1, h.now);
        // KIP-360: InitProducerId with the current id and epoch.
        assert_eq!(h.m.state(), TxnState::Initializing);
        let r = h.send();
        assert!(matches!(r.request, TxnRequest::InitProducerId { producer_id: PID, producer_epoch: 0, .. }), "{r:?}");
        h.m.handle_init_producer_id(r.id, ErrorCode::NONE, PID, 1, h.now);
        assert_eq!(h.m.state(), TxnState::Ready);
        assert_eq!(h.events(), vec![TxnEvent::ProducerIdChanged { producer_id: PID, epoch: 1 }, TxnEvent::Aborted]);
    }

    #[test]
    fn abort_dropping_sequenced_batches_bumps_the_epoch() {
        let mut h = H::in_transaction(1);
        h.m.abort(0).unwrap();
        h.m.require_epoch_bump().unwrap();
        let id = h.end_txn(false);
        h.m.handle_end_txn(id, ErrorCode::NONE, -1, -1, h.now);
        assert!(matches!(h.send().request, TxnRequest::InitProducerId { producer_id: PID, producer_epoch: 0, .. }));
    }

    #[test]
    fn v2_abort_after_a_failed_produce_takes_the_epoch_from_end_txn() {
        let mut h = H::in_transaction(2);
        h.m.produce_settled(ProduceOutcome::Failed(None));
        h.m.abort(0).unwrap();
        let id = h.end_txn(false);
        h.m.handle_end_txn(id, ErrorCode::NONE, PID, 1, h.now);
        assert_eq!(h.m.state(), TxnState::Ready);
        h.nothing_to_send();
        let events = h.events();
        assert_eq!(
            events[events.len() - 2..],
            [TxnEvent::ProducerIdChanged { producer_id: PID, epoch: 1 }, TxnEvent::Aborted]
        );
    }

    #[test]
    fn user_abort_of_a_healthy_transaction_keeps_the_epoch_in_v1() {
        let mut h = H::in_transaction(1);
        h.m.abort(0).unwrap();
        assert_eq!(h.m.state(), TxnState::Aborting);
        assert!(!h.m.can_send_produce());
        assert_eq!(h.m.abort(0), Ok(()));
        let id = h.end_txn(false);
        h.m.handle_end_txn(id, ErrorCode::NONE, -1, -1, h.now);
        assert_eq!(h.events(), vec![TxnEvent::Aborted]);
        assert_eq!((h.m.state(), h.m.producer_id()), (TxnState::Ready, (PID, 0)));
    }

    #[test]
    fn empty_transaction_ends_without_end_txn() {
        let mut h = H::ready(1);
        h.m.begin().unwrap();
        h.m.commit(0).unwrap();
        assert_eq!(h.events(), vec![TxnEvent::Committed]);
        h.m.begin().unwrap();
        h.m.abort(0).unwrap();
        assert_eq!(h.events(), vec![TxnEvent::Aborted]);
        h.nothing_to_send();
        // A partition asked for but not sent to the coordinator yet: still nothing to end.
        h.m.begin().unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        h.m.abort(0).unwrap();
        assert_eq!(h.events(), vec![TxnEvent::Aborted]);
        h.nothing_to_send();
    }

    #[test]
    fn v1_abort_finds_nothing_to_abort_when_the_add_never_arrived() {
        let mut h = H::ready(1);
        h.m.begin().unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        let r = h.send();
        h.m.handle_no_response(r.id, h.now);
        h.m.abort(0).unwrap();
        h.wait_backoff(100);
        h.find(CoordinatorType::Transaction, 1);
        let id = h.end_txn(false);
        h.m.handle_end_txn(id, ErrorCode::INVALID_TXN_STATE, -1, -1, h.now);
        assert_eq!(h.events(), vec![TxnEvent::Aborted]);
        // Once the coordinator confirmed the transaction, the same answer is fatal.
        let mut h = H::in_transaction(1);
        h.m.abort(0).unwrap();
        let id = h.end_txn(false);
        h.m.handle_end_txn(id, ErrorCode::INVALID_TXN_STATE, -1, -1, h.now);
        assert_eq!(h.m.error(), Some(TxnError::Fatal(FatalReason::InvalidTxnState { request: RequestKind::END_TXN })));
    }

    #[test]
    fn fenced_is_fatal_and_nothing_more_is_sent() {
        for code in [ErrorCode::PRODUCER_FENCED, ErrorCode::INVALID_PRODUCER_EPOCH] {
            let mut h = H::ready(1);
            h.m.begin().unwrap();
            h.m.add_partition(&tp(0)).unwrap();
            let r = h.send();
            h.m.handle_add_partitions(r.id, &[(tp(0), code)], h.now);
            let fatal = TxnError::Fatal(FatalReason::Fenced { code });
            assert_eq!(h.m.state(), TxnState::FatalError);
            assert_eq!(h.m.error(), Some(fatal.clone()));
            assert_eq!(h.events(), vec![TxnEvent::Failed(fatal.clone())]);
            h.advance(Duration::from_secs(60));
            h.nothing_to_send();
            assert_eq!(h.m.next_wakeup(), None);
            assert_eq!(h.m.abort(0), Err(fatal.clone()));
            assert_eq!(h.m.commit(0), Err(fatal.clone()));
            assert_eq!(h.m.begin(), Err(fatal.clone()));
            assert_eq!(h.m.init(), Err(fatal.clone()));
            assert_eq!(h.m.add_partition(&tp(1)), Err(fatal.clone()));
            assert_eq!(h.m.send_offsets(group(), vec![]), Err(fatal.clone()));
            assert!(!h.m.can_send_produce());
            // A late answer changes nothing.
            h.m.handle_add_partitions(r.id, &[(tp(0), ErrorCode::NONE)], h.now);
            h.nothing_to_send();
            assert!(h.events().is_empty());
        }
    }

    #[test]
    fn fatal_codes_have_typed_reasons() {
        let cases = [
            (ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED, FatalReason::TransactionalIdAuthorizationFailed),
            (ErrorCode::INVALID_TXN_STATE, FatalReason::InvalidTxnState { request: RequestKind::END_TXN }),
            (ErrorCode::PRODUCER_FENCED, FatalReason::Fenced { code: ErrorCode::PRODUCER_FENCED }),
        ];
        for (code, reason) in cases {
            let mut h = H::in_transaction(1);
            h.m.commit(0).unwrap();
            let id = h.end_txn(true);
            h.m.handle_end_txn(id, code, -1, -1, h.now);
            assert_eq!(h.m.error(), Some(TxnError::Fatal(reason)), "{code}");
        }
        let mut h = H::new(1);
        h.m.init().unwrap();
        h.find(CoordinatorType::Transaction, 1);
        let r = h.send();
        h.m.handle_init_producer_id(r.id, ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED, -1, -1, h.now);
        assert_eq!(h.m.error(), Some(TxnError::Fatal(FatalReason::TransactionalIdAuthorizationFailed)));
        let mut h = H::in_transaction(1);
        h.m.produce_settled(ProduceOutcome::Failed(Some(ErrorCode::PRODUCER_FENCED)));
        assert_eq!(h.m.error(), Some(TxnError::Fatal(FatalReason::Fenced { code: ErrorCode::PRODUCER_FENCED })));
    }

    #[test]
    fn stale_and_duplicated_answers_are_ignored() {
        let mut h = H::ready(1);
        h.m.begin().unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        let r = h.send();
        // Another id, or the right id for another kind of request: not this request's answer.
        h.m.handle_add_partitions(RequestId(r.id.0 + 100), &[(tp(0), ErrorCode::PRODUCER_FENCED)], h.now);
        h.m.handle_end_txn(r.id, ErrorCode::PRODUCER_FENCED, -1, -1, h.now);
        assert_eq!(h.m.state(), TxnState::InTransaction);
        h.nothing_to_send();
        h.m.handle_add_partitions(r.id, &[(tp(0), ErrorCode::NONE)], h.now);
        h.m.handle_add_partitions(r.id, &[(tp(0), ErrorCode::PRODUCER_FENCED)], h.now);
        assert_eq!(h.m.state(), TxnState::InTransaction);
        assert_eq!(h.events(), vec![TxnEvent::PartitionsAdded(vec![tp(0)])]);
        // A timeout for a request no longer in flight changes nothing either.
        h.m.handle_no_response(r.id, h.now);
        assert_eq!(h.m.next_wakeup(), None);
    }

    #[test]
    fn abortable_answers_leave_only_abort() {
        for (code, request) in [
            (ErrorCode::TRANSACTION_ABORTABLE, RequestKind::ADD_PARTITIONS_TO_TXN),
            (ErrorCode::TOPIC_AUTHORIZATION_FAILED, RequestKind::ADD_PARTITIONS_TO_TXN),
        ] {
            let mut h = H::ready(1);
            h.m.begin().unwrap();
            h.m.add_partition(&tp(0)).unwrap();
            h.m.add_partition(&tp(1)).unwrap();
            let r = h.send();
            h.m.handle_add_partitions(r.id, &[(tp(0), code), (tp(1), ErrorCode::OPERATION_NOT_ATTEMPTED)], h.now);
            let reason = AbortableReason::Refused { request, code };
            assert_eq!(h.m.error(), Some(TxnError::Abortable(reason)));
            h.nothing_to_send();
            h.m.abort(0).unwrap();
            // The request may have been applied in part: EndTxn(abort) goes.
            let id = h.end_txn(false);
            h.m.handle_end_txn(id, ErrorCode::NONE, -1, -1, h.now);
            assert_eq!(h.m.state(), TxnState::Ready);
        }
    }

    #[test]
    fn v1_offsets_add_the_group_then_commit_at_the_group_coordinator() {
        let mut h = H::in_transaction(1);
        h.m.send_offsets(group(), vec![(tp(5), offset(42)), (tp(6), offset(43))]).unwrap();
        h.m.commit(0).unwrap();
        let r = h.send();
        assert_eq!(
            r.request,
            TxnRequest::AddOffsetsToTxn {
                transactional_id: "tx".into(),
                producer_id: PID,
                producer_epoch: 0,
                group_id: "g".into()
            }
        );
        h.m.handle_add_offsets(r.id, ErrorCode::NONE, h.now);
        let r = h.send();
        assert_eq!(r.request, TxnRequest::FindCoordinator { key: "g".into(), key_type: CoordinatorType::Group });
        h.m.handle_find_coordinator(r.id, Ok(3), h.now);
        let r = h.send();
        assert_eq!(r.target, Target::Coordinator(3));
        assert_eq!(
            r.request,
            TxnRequest::TxnOffsetCommit {
                transactional_id: "tx".into(),
                producer_id: PID,
                producer_epoch: 0,
                group: group(),
                offsets: vec![(tp(5), offset(42)), (tp(6), offset(43))],
                transaction_v2: false
            }
        );
        // One partition done, the other retried alone; the group coordinator moved.
        h.m.handle_txn_offset_commit(r.id, &[(tp(5), ErrorCode::NONE), (tp(6), ErrorCode::NOT_COORDINATOR)], h.now);
        h.wait_backoff(100);
        h.find(CoordinatorType::Group, 2);
        let r = h.send();
        assert_eq!(r.target, Target::Coordinator(2));
        assert!(
            matches!(&r.request, TxnRequest::TxnOffsetCommit { offsets, .. } if *offsets == vec![(tp(6), offset(43))])
        );
        h.m.handle_txn_offset_commit(r.id, &[(tp(6), ErrorCode::NONE)], h.now);
        assert_eq!(h.events(), vec![TxnEvent::OffsetsAdded { group_id: "g".into() }]);
        // Only now may the commit go, to the transaction coordinator.
        let r = h.send();
        assert_eq!(r.target, Target::Coordinator(1));
        assert!(matches!(r.request, TxnRequest::EndTxn { commit: true, .. }));
    }

    #[test]
    fn v2_offsets_go_straight_to_txn_offset_commit() {
        let mut h = H::ready(2);
        h.m.begin().unwrap();
        h.m.send_offsets(group(), vec![(tp(5), offset(1))]).unwrap();
        h.find(CoordinatorType::Group, 3);
        let r = h.send();
        assert!(matches!(r.request, TxnRequest::TxnOffsetCommit { transaction_v2: true, .. }), "{r:?}");
        h.m.handle_txn_offset_commit(r.id, &[(tp(5), ErrorCode::NONE)], h.now);
        // The offsets started the transaction: the commit takes an EndTxn.
        h.m.commit(0).unwrap();
        h.end_txn(true);
    }

    #[test]
    fn group_refusing_the_offsets_makes_the_transaction_abortable() {
        let mut h = H::ready(2);
        h.m.begin().unwrap();
        h.m.send_offsets(group(), vec![(tp(5), offset(1))]).unwrap();
        h.find(CoordinatorType::Group, 3);
        let r = h.send();
        h.m.handle_txn_offset_commit(r.id, &[(tp(5), ErrorCode::ILLEGAL_GENERATION)], h.now);
        let reason =
            AbortableReason::Refused { request: RequestKind::TXN_OFFSET_COMMIT, code: ErrorCode::ILLEGAL_GENERATION };
        assert_eq!(h.m.error(), Some(TxnError::Abortable(reason)));
        h.m.abort(0).unwrap();
        let id = h.end_txn(false);
        h.m.handle_end_txn(id, ErrorCode::NONE, PID, 1, h.now);
        assert_eq!(h.m.state(), TxnState::Ready);
    }

    #[test]
    fn produce_failure_while_committing_fails_the_commit() {
        let mut h = H::in_transaction(1);
        h.m.commit(2).unwrap();
        h.m.produce_settled(ProduceOutcome::Acknowledged);
        h.m.produce_settled(ProduceOutcome::Failed(Some(ErrorCode::MESSAGE_TOO_LARGE)));
        assert_eq!(h.m.state(), TxnState::AbortableError);
        h.nothing_to_send();
        h.m.abort(0).unwrap();
        h.end_txn(false);
    }
}
