//! The transaction simulation's model cluster, shared by `transaction_simulation.rs` and the
//! `seq_transaction` fuzz target (included with `#[path]`): a transaction coordinator and a
//! group coordinator holding Kafka's state for one transactional id (KIP-98 v1, KIP-890 v2),
//! partition logs with commit and abort markers, the faults either coordinator injects, and the
//! checker of what a read_committed reader then sees against what each transaction did.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kafka_wire::codec::ErrorCode;
use kafka_wire::proto::driving::{RequestId, Target};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire::proto::transaction::{CoordinatorType, TransactionManager, TxnRequest};

pub const TXN_ID: &str = "sim-txn";
pub const GROUP: &str = "sim-group";
pub const PRODUCER_ID: i64 = 1000;
pub const NODES: [i32; 3] = [1, 2, 3];
pub const TXN_TIMEOUT: Duration = Duration::from_secs(2);

/// xorshift64*: small and deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut r = Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
        if r.0 == 0 {
            r.0 = 1;
        }
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// How often each fault happens, per chance taken.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Per coordinator request: lost before it arrives.
    pub drop_request: f64,
    /// Applied, answer lost.
    pub drop_response: f64,
    /// Applied, answer after the request timeout (so the manager has moved on).
    pub late_response: f64,
    pub duplicate_response: f64,
    /// Answered CONCURRENT_TRANSACTIONS without being applied.
    pub concurrent: f64,
    pub load_in_progress: f64,
    /// FindCoordinator answered COORDINATOR_NOT_AVAILABLE.
    pub not_available: f64,
    /// Per request: the transaction (or group) coordinator moves to another node first.
    pub coordinator_move: f64,
    /// Per produce attempt: refused, not written (NOT_ENOUGH_REPLICAS).
    pub produce_refused: f64,
    /// Per produce: written, acknowledgement lost (delivery timeout).
    pub produce_ack_lost: f64,
    /// Per produce: never arrives (delivery timeout).
    pub produce_lost: f64,
    /// Per transaction begun: a second instance of the transactional id starts.
    pub fence: f64,
    /// Per transaction: the user waits past the transaction timeout before ending it.
    pub stall: f64,
    /// Per TxnOffsetCommit: ILLEGAL_GENERATION (the consumer left its group).
    pub illegal_generation: f64,
}

impl Faults {
    pub fn standard() -> Self {
        Self {
            drop_request: 0.03,
            drop_response: 0.05,
            late_response: 0.03,
            duplicate_response: 0.03,
            concurrent: 0.05,
            load_in_progress: 0.03,
            not_available: 0.05,
            coordinator_move: 0.04,
            produce_refused: 0.02,
            produce_ack_lost: 0.01,
            produce_lost: 0.01,
            fence: 0.03,
            stall: 0.02,
            illegal_generation: 0.02,
        }
    }

    pub fn none() -> Self {
        Self {
            drop_request: 0.0,
            drop_response: 0.0,
            late_response: 0.0,
            duplicate_response: 0.0,
            concurrent: 0.0,
            load_in_progress: 0.0,
            not_available: 0.0,
            coordinator_move: 0.0,
            produce_refused: 0.0,
            produce_ack_lost: 0.0,
            produce_lost: 0.0,
            fence: 0.0,
            stall: 0.0,
            illegal_generation: 0.0,
        }
    }
}

// ---- model cluster ----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

/// The coordinator's metadata of the one transactional id.
#[derive(Debug)]
struct Meta {
    epoch: i16,
    last_epoch: i16,
    state: CState,
    partitions: BTreeSet<TopicPartition>,
    group_added: bool,
    /// Offsets of TxnOffsetCommit, committed with the transaction's markers. A set: committing the
    /// same offset again (a retry) changes nothing.
    staged_offsets: BTreeSet<i64>,
    started: Instant,
    complete_at: Instant,
}

#[derive(Clone, Debug)]
enum Entry {
    Data { record: u64 },
    Marker { commit: bool },
}

/// What an answer carries, shaped like the `handle_*` arguments.
#[derive(Clone, Debug)]
pub enum Reply {
    Find(Result<i32, ErrorCode>),
    Init(ErrorCode, i64, i16),
    AddPartitions(Vec<(TopicPartition, ErrorCode)>),
    AddOffsets(ErrorCode),
    OffsetCommit(Vec<(TopicPartition, ErrorCode)>),
    End(ErrorCode, i64, i16),
}

/// An error answer of the right shape for `request`.
pub fn error_reply(request: &TxnRequest, code: ErrorCode) -> Reply {
    match request {
        TxnRequest::FindCoordinator { .. } => Reply::Find(Err(code)),
        TxnRequest::InitProducerId { .. } => Reply::Init(code, -1, -1),
        TxnRequest::AddPartitionsToTxn { partitions, .. } => {
            Reply::AddPartitions(partitions.iter().map(|tp| (tp.clone(), code)).collect())
        }
        TxnRequest::AddOffsetsToTxn { .. } => Reply::AddOffsets(code),
        TxnRequest::TxnOffsetCommit { offsets, .. } => {
            Reply::OffsetCommit(offsets.iter().map(|(tp, _)| (tp.clone(), code)).collect())
        }
        TxnRequest::EndTxn { .. } => Reply::End(code, -1, -1),
        other => panic!("unknown request {other:?}"),
    }
}

/// The coordinators and partition logs of the cluster.
pub struct Model {
    pub v2: bool,
    meta: Option<Meta>,
    /// Where FindCoordinator points (a request sent elsewhere is answered NOT_COORDINATOR).
    pub txn_node: i32,
    pub group_node: i32,
    logs: BTreeMap<TopicPartition, Vec<Entry>>,
    /// The highest producer epoch each partition has seen (data or marker).
    max_epoch: HashMap<TopicPartition, i16>,
    /// Offsets (the transaction numbers) committed to the group.
    pub offsets_committed: Vec<i64>,
    /// Requests a coordinator would refuse as malformed for its state (the manager's fault).
    pub violations: Vec<String>,
}

impl Model {
    pub fn new(v2: bool) -> Self {
        Self {
            v2,
            meta: None,
            txn_node: NODES[0],
            group_node: NODES[1],
            logs: BTreeMap::new(),
            max_epoch: HashMap::new(),
            offsets_committed: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// Completes transactions whose markers are written, and aborts those past their timeout
    /// (with an epoch bump: under v1 that fences the producer, under v2 every abort bumps).
    pub fn tick(&mut self, now: Instant, rng: &mut Rng) {
        let Some(m) = self.meta.as_mut() else { return };
        match m.state {
            CState::PrepareCommit if now >= m.complete_at => m.state = CState::CompleteCommit,
            CState::PrepareAbort if now >= m.complete_at => m.state = CState::CompleteAbort,
            CState::Ongoing if now >= m.started + TXN_TIMEOUT => {
                // v1 fences the epoch; v2 bumps it as for any abort, so the producer may end the
                // transaction with the epoch before.
                if self.v2 {
                    m.last_epoch = m.epoch;
                }
                m.epoch += 1;
                let epoch = m.epoch;
                self.end(now, false, epoch, rng);
            }
            _ => {}
        }
    }

    /// Writes the markers of the ongoing transaction at `epoch` and commits or drops its offsets.
    fn end(&mut self, now: Instant, commit: bool, epoch: i16, rng: &mut Rng) {
        let Some(m) = self.meta.as_mut() else { return };
        for tp in std::mem::take(&mut m.partitions) {
            self.logs.entry(tp.clone()).or_default().push(Entry::Marker { commit });
            let e = self.max_epoch.entry(tp).or_insert(epoch);
            *e = (*e).max(epoch);
        }
        let staged = std::mem::take(&mut m.staged_offsets);
        if commit {
            self.offsets_committed.extend(staged);
        }
        m.group_added = false;
        m.state = if commit { CState::PrepareCommit } else { CState::PrepareAbort };
        m.complete_at = now + rng.ms(0, 40);
    }

    /// The coordinators' answer to `request` sent to `target`.
    pub fn handle(&mut self, target: Target, request: &TxnRequest, now: Instant, rng: &mut Rng, f: &Faults) -> Reply {
        self.tick(now, rng);
        if let TxnRequest::FindCoordinator { key_type, key } = request {
            if rng.chance(f.not_available) {
                return Reply::Find(Err(ErrorCode::COORDINATOR_NOT_AVAILABLE));
            }
            return Reply::Find(Ok(match key_type {
                CoordinatorType::Transaction if &**key == TXN_ID => self.txn_node,
                CoordinatorType::Group if &**key == GROUP => self.group_node,
                other => panic!("FindCoordinator for {other:?} {key}"),
            }));
        }
        let Target::Coordinator(node) = target else {
            self.violations.push(format!("{request:?} sent to no coordinator"));
            return error_reply(request, ErrorCode::INVALID_REQUEST);
        };
        let coordinator =
            if matches!(request, TxnRequest::TxnOffsetCommit { .. }) { self.group_node } else { self.txn_node };
        if node != coordinator {
            return error_reply(request, ErrorCode::NOT_COORDINATOR);
        }
        if rng.chance(f.load_in_progress) {
            return error_reply(request, ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
        }
        if rng.chance(f.concurrent) {
            return error_reply(request, ErrorCode::CONCURRENT_TRANSACTIONS);
        }
        match request {
            TxnRequest::InitProducerId { producer_id, producer_epoch, .. } => {
                self.init_producer_id(*producer_id, *producer_epoch, now, rng)
            }
            TxnRequest::AddPartitionsToTxn { producer_epoch, partitions, .. } => {
                if self.v2 {
                    self.violations.push("AddPartitionsToTxn in a v2 transaction".into());
                }
                match self.add_to_txn(*producer_epoch, now) {
                    Err(code) => error_reply(request, code),
                    Ok(m) => {
                        m.partitions.extend(partitions.iter().cloned());
                        Reply::AddPartitions(partitions.iter().map(|tp| (tp.clone(), ErrorCode::NONE)).collect())
                    }
                }
            }
            TxnRequest::AddOffsetsToTxn { producer_epoch, .. } => {
                if self.v2 {
                    self.violations.push("AddOffsetsToTxn in a v2 transaction".into());
                }
                match self.add_to_txn(*producer_epoch, now) {
                    Err(code) => Reply::AddOffsets(code),
                    Ok(m) => {
                        m.group_added = true;
                        Reply::AddOffsets(ErrorCode::NONE)
                    }
                }
            }
            TxnRequest::TxnOffsetCommit { producer_epoch, offsets, transaction_v2, .. } => {
                if *transaction_v2 != self.v2 {
                    self.violations.push(format!("TxnOffsetCommit with transaction_v2={transaction_v2}"));
                }
                if rng.chance(f.illegal_generation) {
                    return error_reply(request, ErrorCode::ILLEGAL_GENERATION);
                }
                let code = self.txn_offset_commit(*producer_epoch, offsets.iter().map(|(_, o)| o.offset), now);
                error_reply(request, code)
            }
            TxnRequest::EndTxn { producer_id, producer_epoch, commit, transaction_v2, .. } => {
                if *transaction_v2 != self.v2 {
                    self.violations.push(format!("EndTxn with transaction_v2={transaction_v2}"));
                }
                if *producer_id != PRODUCER_ID {
                    return Reply::End(ErrorCode::INVALID_PRODUCER_ID_MAPPING, -1, -1);
                }
                if self.v2 {
                    self.end_txn_v2(*producer_epoch, *commit, now, rng)
                } else {
                    self.end_txn_v1(*producer_epoch, *commit, now, rng)
                }
            }
            other => panic!("unknown request {other:?}"),
        }
    }

    fn init_producer_id(&mut self, producer_id: i64, expected: i16, now: Instant, rng: &mut Rng) -> Reply {
        let Some(m) = self.meta.as_mut() else {
            self.meta = Some(Meta {
                epoch: 0,
                last_epoch: -1,
                state: CState::Empty,
                partitions: BTreeSet::new(),
                group_added: false,
                staged_offsets: BTreeSet::new(),
                started: now,
                complete_at: now,
            });
            return Reply::Init(ErrorCode::NONE, PRODUCER_ID, 0);
        };
        if expected >= 0 && producer_id != PRODUCER_ID {
            return Reply::Init(ErrorCode::PRODUCER_FENCED, -1, -1);
        }
        match m.state {
            CState::PrepareCommit | CState::PrepareAbort => Reply::Init(ErrorCode::CONCURRENT_TRANSACTIONS, -1, -1),
            CState::Ongoing => {
                // Fence the current epoch and abort its transaction; the caller retries.
                m.epoch += 1;
                let epoch = m.epoch;
                self.end(now, false, epoch, rng);
                Reply::Init(ErrorCode::CONCURRENT_TRANSACTIONS, -1, -1)
            }
            _ => {
                if expected < 0 {
                    m.epoch += 1;
                    m.last_epoch = -1;
                } else if expected == m.epoch {
                    m.last_epoch = m.epoch;
                    m.epoch += 1;
                } else if expected != m.last_epoch {
                    return Reply::Init(ErrorCode::PRODUCER_FENCED, -1, -1);
                }
                m.state = CState::Empty;
                Reply::Init(ErrorCode::NONE, PRODUCER_ID, m.epoch)
            }
        }
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn (v1): the transaction becomes ongoing.
    fn add_to_txn(&mut self, epoch: i16, now: Instant) -> Result<&mut Meta, ErrorCode> {
        let m = self.meta.as_mut().ok_or(ErrorCode::INVALID_PRODUCER_ID_MAPPING)?;
        if epoch != m.epoch {
            return Err(ErrorCode::PRODUCER_FENCED);
        }
        match m.state {
            CState::PrepareCommit | CState::PrepareAbort => Err(ErrorCode::CONCURRENT_TRANSACTIONS),
            CState::Ongoing => Ok(m),
            _ => {
                m.state = CState::Ongoing;
                m.started = now;
                Ok(m)
            }
        }
    }

    fn txn_offset_commit(&mut self, epoch: i16, offsets: impl Iterator<Item = i64>, now: Instant) -> ErrorCode {
        let v2 = self.v2;
        let Some(m) = self.meta.as_mut() else { return ErrorCode::INVALID_PRODUCER_ID_MAPPING };
        if epoch != m.epoch {
            return ErrorCode::INVALID_PRODUCER_EPOCH;
        }
        if v2 {
            // TxnOffsetCommit v5 adds the group to the transaction itself.
            match m.state {
                CState::PrepareCommit | CState::PrepareAbort => return ErrorCode::CONCURRENT_TRANSACTIONS,
                CState::Ongoing => {}
                _ => {
                    m.state = CState::Ongoing;
                    m.started = now;
                }
            }
            m.group_added = true;
        } else if m.state != CState::Ongoing || !m.group_added {
            self.violations.push(format!("TxnOffsetCommit outside the transaction ({:?})", m.state));
        }
        m.staged_offsets.extend(offsets);
        ErrorCode::NONE
    }

    /// v1: the epoch must match exactly; a retry of an applied EndTxn finds the transaction
    /// complete with the same result and is answered NONE.
    fn end_txn_v1(&mut self, epoch: i16, commit: bool, now: Instant, rng: &mut Rng) -> Reply {
        let Some(m) = self.meta.as_mut() else { return Reply::End(ErrorCode::INVALID_PRODUCER_ID_MAPPING, -1, -1) };
        if epoch != m.epoch {
            return Reply::End(ErrorCode::PRODUCER_FENCED, -1, -1);
        }
        let code = match (m.state, commit) {
            (CState::PrepareCommit | CState::PrepareAbort, _) => ErrorCode::CONCURRENT_TRANSACTIONS,
            (CState::Ongoing, _) => {
                self.end(now, commit, epoch, rng);
                ErrorCode::NONE
            }
            (CState::CompleteCommit, true) | (CState::CompleteAbort, false) => ErrorCode::NONE,
            _ => ErrorCode::INVALID_TXN_STATE,
        };
        Reply::End(code, -1, -1)
    }

    /// v2 (Kafka's table): every EndTxn bumps the epoch; a retry carries the previous epoch; an
    /// abort of an empty transaction is accepted (and bumps).
    fn end_txn_v2(&mut self, epoch: i16, commit: bool, now: Instant, rng: &mut Rng) -> Reply {
        let Some(m) = self.meta.as_mut() else { return Reply::End(ErrorCode::INVALID_PRODUCER_ID_MAPPING, -1, -1) };
        let (current, retry) = (epoch == m.epoch, epoch + 1 == m.epoch);
        let fenced = Reply::End(ErrorCode::PRODUCER_FENCED, -1, -1);
        let invalid = Reply::End(ErrorCode::INVALID_TXN_STATE, -1, -1);
        match m.state {
            CState::PrepareCommit | CState::PrepareAbort => Reply::End(ErrorCode::CONCURRENT_TRANSACTIONS, -1, -1),
            CState::Ongoing | CState::Empty if current => {
                if m.state == CState::Empty && commit {
                    return invalid;
                }
                m.last_epoch = m.epoch;
                m.epoch += 1;
                let bumped = m.epoch;
                self.end(now, commit, bumped, rng);
                Reply::End(ErrorCode::NONE, PRODUCER_ID, bumped)
            }
            CState::CompleteCommit | CState::CompleteAbort if retry => {
                if (m.state == CState::CompleteCommit) == commit {
                    Reply::End(ErrorCode::NONE, PRODUCER_ID, m.epoch)
                } else {
                    invalid
                }
            }
            CState::CompleteCommit | CState::CompleteAbort if current => {
                if commit {
                    return invalid;
                }
                m.last_epoch = m.epoch;
                m.epoch += 1;
                let bumped = m.epoch;
                self.end(now, false, bumped, rng);
                Reply::End(ErrorCode::NONE, PRODUCER_ID, bumped)
            }
            _ => fenced,
        }
    }

    /// A produce arriving at its partition leader.
    pub fn produce(&mut self, tp: &TopicPartition, epoch: i16, record: u64, now: Instant) -> Result<(), ErrorCode> {
        if self.max_epoch.get(tp).is_some_and(|e| *e > epoch) {
            return Err(ErrorCode::INVALID_PRODUCER_EPOCH);
        }
        let v2 = self.v2;
        let Some(m) = self.meta.as_mut() else { return Err(ErrorCode::UNKNOWN_PRODUCER_ID) };
        if v2 {
            // Produce v12+: the leader adds the partition to the transaction, checking the
            // epoch with the coordinator.
            if epoch != m.epoch {
                return Err(ErrorCode::INVALID_PRODUCER_EPOCH);
            }
            match m.state {
                CState::PrepareCommit | CState::PrepareAbort => return Err(ErrorCode::CONCURRENT_TRANSACTIONS),
                CState::Ongoing => {}
                _ => {
                    m.state = CState::Ongoing;
                    m.started = now;
                }
            }
            m.partitions.insert(tp.clone());
        } else if !(m.state == CState::Ongoing && m.epoch == epoch && m.partitions.contains(tp)) {
            self.violations.push(format!(
                "record {record} reached {tp} outside a transaction holding it (coordinator {:?} epoch {}, record epoch {epoch})",
                m.state, m.epoch
            ));
        }
        self.logs.entry(tp.clone()).or_default().push(Entry::Data { record });
        let e = self.max_epoch.entry(tp.clone()).or_insert(epoch);
        *e = (*e).max(epoch);
        Ok(())
    }

    /// What a read_committed reader sees: how often each record appears, and the partitions left
    /// with data after their last marker (a transaction nobody ends).
    pub fn read_committed(&self) -> (HashMap<u64, usize>, Vec<TopicPartition>) {
        let mut visible: HashMap<u64, usize> = HashMap::new();
        let mut hanging = Vec::new();
        for (tp, log) in &self.logs {
            let mut open = Vec::new();
            for entry in log {
                match entry {
                    Entry::Data { record, .. } => open.push(*record),
                    Entry::Marker { commit: true, .. } => {
                        for r in open.drain(..) {
                            *visible.entry(r).or_default() += 1;
                        }
                    }
                    Entry::Marker { commit: false, .. } => open.clear(),
                }
            }
            if !open.is_empty() {
                hanging.push(tp.clone());
            }
        }
        (visible, hanging)
    }
}

/// Hands `reply` to the manager as the answer to request `id`.
pub fn deliver(mgr: &mut TransactionManager, id: RequestId, reply: Reply, now: Instant) {
    match reply {
        Reply::Find(r) => mgr.handle_find_coordinator(id, r, now),
        Reply::Init(code, pid, epoch) => mgr.handle_init_producer_id(id, code, pid, epoch, now),
        Reply::AddPartitions(r) => mgr.handle_add_partitions(id, &r, now),
        Reply::AddOffsets(code) => mgr.handle_add_offsets(id, code, now),
        Reply::OffsetCommit(r) => mgr.handle_txn_offset_commit(id, &r, now),
        Reply::End(code, pid, epoch) => mgr.handle_end_txn(id, code, pid, epoch, now),
    }
}

// ---- checker ----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Open,
    Committed,
    Aborted,
    /// The instance failed fatally before the transaction ended.
    Unknown,
}

#[derive(Debug)]
pub struct TxnLog {
    pub instance: usize,
    /// Records sent to a partition.
    pub sent: Vec<u64>,
    pub acked: Vec<u64>,
    /// The offset committed with it (its number), if `send_offsets` was called.
    pub offsets: Option<i64>,
    /// EndTxn decisions sent, in order.
    pub decisions: Vec<bool>,
    pub outcome: Outcome,
}

/// What the transactions left, read back from the model's logs: no partition holds a
/// transaction nobody ends; a read_committed reader sees each record at most once, each
/// committed transaction whole, no record of an aborted one (nor of one that never asked to
/// commit), and a transaction's offsets committed exactly when its records are. Returns the
/// violations, and how many offsets were committed.
pub fn check_transactions(model: &Model, txns: &[TxnLog]) -> (Vec<String>, usize) {
    let mut violations = Vec::new();
    let mut offsets_committed = 0;
    let (visible, hanging) = model.read_committed();
    for tp in hanging {
        violations.push(format!("{tp} holds a transaction nobody ends"));
    }
    for (record, n) in &visible {
        if *n > 1 {
            violations.push(format!("record {record} visible {n} times"));
        }
    }
    for (t, log) in txns.iter().enumerate() {
        let seen = log.sent.iter().filter(|r| visible.contains_key(r)).count();
        let asked_commit = log.decisions.contains(&true);
        let all = seen == log.sent.len();
        let ok = match log.outcome {
            Outcome::Committed => all && log.acked.len() == log.sent.len(),
            Outcome::Aborted => seen == 0,
            Outcome::Open | Outcome::Unknown if !asked_commit => seen == 0,
            Outcome::Open | Outcome::Unknown => seen == 0 || all,
        };
        if !ok {
            violations.push(format!(
                "txn {t} ({:?}, instance {}): {seen} of {} records visible, {} acked, decisions {:?}",
                log.outcome,
                log.instance,
                log.sent.len(),
                log.acked.len(),
                log.decisions
            ));
        }
        if let Some(o) = log.offsets {
            let times = model.offsets_committed.iter().filter(|c| **c == o).count();
            let expected = match log.outcome {
                Outcome::Committed => Some(1),
                Outcome::Aborted => Some(0),
                _ if !asked_commit => Some(0),
                _ if !log.sent.is_empty() => Some(usize::from(seen > 0)),
                _ => None,
            };
            if times > 1 || expected.is_some_and(|e| e != times) {
                violations.push(format!(
                    "txn {t} ({:?}): offsets committed {times} times, {seen} records visible",
                    log.outcome
                ));
            }
            offsets_committed += times;
        }
    }
    (violations, offsets_committed)
}
