//! Operation sequences against the transaction manager (`proto::transaction::TransactionManager`),
//! under transactions v1 or v2 (KIP-890, chosen by the leading byte), driven against the model
//! coordinators and partition logs of the transaction simulation (`kafka-wire/tests/sim/
//! txn_model.rs`): each request reaches its coordinator, which answers for the state it holds
//! (fencing stale epochs, CONCURRENT_TRANSACTIONS while markers are written, NOT_COORDINATOR
//! when sent to the wrong node, retries of an applied EndTxn answered as the coordinator does),
//! and the answer comes back, twice, late (after the manager's request timeout) or never; or the
//! request is lost; or it is refused without being applied (COORDINATOR_LOAD_IN_PROGRESS,
//! CONCURRENT_TRANSACTIONS, NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, REQUEST_TIMED_OUT, and on
//! TxnOffsetCommit the group membership errors); coordinators move; produces reach their leader
//! (written, acknowledged or with the acknowledgement lost, or refused by the model) or are
//! lost; time passes (the model aborts a transaction past its timeout); the application begins,
//! produces, sends offsets, commits and aborts at any moment. After the operations, the faults
//! stop and the application finishes: the manager must end Ready (or fatal) within a bounded
//! number of virtual steps.
//!
//! Checked after every step: nothing is sent after a fatal error, and a fatal manager refuses
//! every call; EndTxn is sent only once every produce of the transaction settled; an EndTxn that
//! commits only for a transaction the application committed, never aborted, none of whose
//! produces failed, and a transaction's decision is never changed; `Committed` only for such a
//! transaction, never with a produce unsettled; v2 sends no AddPartitionsToTxn /
//! AddOffsetsToTxn. At the end, the simulation's checker on the model's logs: no partition left
//! with a transaction nobody ends; a read_committed reader sees each record at most once, every
//! committed transaction whole, no record of an aborted one; a transaction's offsets committed
//! exactly when its records are; and the model saw no request its state forbids. An answer with
//! an arbitrary code (`Garbage`) is still checked for panics and the per-step rules, not against
//! the model (no coordinator would send it).
#![no_main]

#[path = "../../kafka-wire/tests/sim/txn_model.rs"]
mod txn_model;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use kafka_wire::codec::ErrorCode;
use kafka_wire::proto::driving::{RequestId, Target};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire::proto::transaction::{
    GroupMetadata, ProduceOutcome, TransactionManager, TxnConfig, TxnError, TxnEvent, TxnOffset, TxnRequest, TxnState,
};
use libfuzzer_sys::fuzz_target;
use txn_model::{
    check_transactions, deliver, error_reply, Faults, Model, Outcome, Reply, Rng, TxnLog, GROUP, NODES, TXN_ID,
    TXN_TIMEOUT,
};

const MAX_OPS: usize = 256;
const PARTITIONS: u8 = 4;
/// Virtual steps the run gets to finish once the faults stop.
const SETTLE_STEPS: usize = 2_000;

/// Errors a coordinator answers whatever state it holds, without applying the request.
const REFUSALS: [ErrorCode; 5] = [
    ErrorCode::COORDINATOR_LOAD_IN_PROGRESS,
    ErrorCode::CONCURRENT_TRANSACTIONS,
    ErrorCode::NOT_COORDINATOR,
    ErrorCode::COORDINATOR_NOT_AVAILABLE,
    ErrorCode::REQUEST_TIMED_OUT,
];
/// TxnOffsetCommit from a consumer that is no longer in its group's generation.
const GROUP_REFUSALS: [ErrorCode; 4] = [
    ErrorCode::ILLEGAL_GENERATION,
    ErrorCode::UNKNOWN_MEMBER_ID,
    ErrorCode::FENCED_INSTANCE_ID,
    ErrorCode::REBALANCE_IN_PROGRESS,
];

#[derive(Arbitrary, Debug)]
struct Input {
    /// The finalized `transaction.version` level: 2 and above is v2.
    version: u8,
    /// The model's choices (how long markers take to write).
    seed: u64,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Fate {
    Answered,
    Twice,
    Lost,
    /// Held back until after the manager's request timeout, then delivered by `Op::Late`.
    Late,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Init,
    Begin,
    /// A record to partition `p`: added to the transaction, sent once the manager allows.
    Produce {
        partition: u8,
    },
    SendOffsets,
    Commit,
    Abort,
    RequireEpochBump,
    /// Pending request `idx` reaches its coordinator; its answer meets `fate`.
    Arrive {
        idx: u8,
        fate: Fate,
    },
    /// Pending request `idx` is lost on the way (the manager's request timeout).
    LoseRequest {
        idx: u8,
    },
    /// Pending request `idx` is refused without being applied.
    Refuse {
        idx: u8,
        code: u8,
    },
    /// Pending request `idx` is answered with any code at all (NONE included), any producer id
    /// and epoch, not applied.
    Garbage {
        idx: u8,
        code: i16,
        pid: i8,
        epoch: i8,
    },
    /// Late answer `idx` arrives.
    Late {
        idx: u8,
    },
    /// The transaction (or group) coordinator moves to another node.
    Move {
        group: bool,
        node: u8,
    },
    /// In-flight produce `idx` reaches its leader; its acknowledgement is lost with `ack_lost`.
    ProduceArrive {
        idx: u8,
        ack_lost: bool,
    },
    /// In-flight produce `idx` never arrives (delivery timeout).
    ProduceLost {
        idx: u8,
    },
    Advance {
        ms: u16,
    },
}

/// What the application did in the current transaction.
#[derive(Default)]
struct App {
    commit_called: bool,
    abort_called: bool,
    failed: bool,
}

struct InFlight {
    txn: usize,
    record: u64,
    tp: TopicPartition,
    epoch: i16,
}

struct Harness {
    mgr: TransactionManager,
    model: Model,
    rng: Rng,
    faults: Faults,
    now: Instant,
    pending: Vec<(RequestId, Target, TxnRequest)>,
    late: Vec<(RequestId, Reply)>,
    in_flight: Vec<InFlight>,
    /// v1: partitions of records waiting for AddPartitionsToTxn.
    waiting: Vec<TopicPartition>,
    txns: Vec<TxnLog>,
    current: Option<usize>,
    app: App,
    next_record: u64,
    fatal: bool,
    /// An answer no coordinator would give was delivered: the model no longer describes the run.
    unmodelled: bool,
    /// `SEQ_TRACE` set: every operation, request and event is printed (to replay a failure).
    trace: bool,
}

fn tp(p: u8) -> TopicPartition {
    TopicPartition::new("out", (p % PARTITIONS) as i32)
}

fn pick<T>(v: &mut Vec<T>, idx: u8) -> Option<T> {
    (!v.is_empty()).then(|| v.remove(idx as usize % v.len()))
}

impl Harness {
    fn new(version: u8, seed: u64) -> Self {
        let v2 = version >= 2;
        let mut config = TxnConfig::new(TXN_ID);
        config.transaction_timeout = TXN_TIMEOUT;
        config.backoff_seed = Some(seed);
        let mut mgr = TransactionManager::new(config);
        mgr.set_transaction_version(if v2 { 2 } else { 1 });
        Self {
            mgr,
            model: Model::new(v2),
            rng: Rng::new(seed),
            faults: Faults::none(),
            now: Instant::now(),
            pending: Vec::new(),
            late: Vec::new(),
            in_flight: Vec::new(),
            waiting: Vec::new(),
            txns: Vec::new(),
            current: None,
            app: App::default(),
            next_record: 0,
            fatal: false,
            unmodelled: false,
            trace: std::env::var_os("SEQ_TRACE").is_some(),
        }
    }

    fn unsettled(&self) -> usize {
        self.in_flight.iter().filter(|p| Some(p.txn) == self.current).count()
    }

    /// Sends what the manager asks for and hands its events to the application, checking the
    /// per-step rules.
    fn step(&mut self) {
        for _ in 0..64 {
            let mut progress = false;
            while let Some(out) = self.mgr.next_request(self.now) {
                progress = true;
                assert!(!self.fatal, "a request after a fatal error: {:?}", out.request);
                if self.trace {
                    eprintln!("  sends #{} {:?} to {:?}", out.id, out.request, out.target);
                }
                self.check_request(&out.request);
                self.pending.push((out.id, out.target, out.request));
            }
            // After the requests: working out what to send may end a transaction.
            while let Some(ev) = self.mgr.poll_event() {
                progress = true;
                if self.trace {
                    eprintln!("  event {ev:?} ({:?})", self.mgr.state());
                }
                self.event(ev);
            }
            if !progress {
                break;
            }
        }
        if self.mgr.state() == TxnState::FatalError {
            self.fatal = true;
        }
        if self.fatal {
            assert!(self.mgr.begin().is_err(), "a fatal manager begins a transaction");
            assert!(
                matches!(self.mgr.add_partition(&tp(0)), Err(TxnError::Fatal(_))),
                "a fatal manager adds a partition"
            );
        }
    }

    fn check_request(&mut self, request: &TxnRequest) {
        match request {
            TxnRequest::EndTxn { commit, transaction_v2, .. } => {
                let unsettled = self.unsettled();
                assert_eq!(unsettled, 0, "EndTxn(commit={commit}) with {unsettled} produces unsettled");
                if *commit {
                    assert!(
                        self.app.commit_called && !self.app.abort_called && !self.app.failed,
                        "EndTxn(commit) of a transaction that was not committed cleanly"
                    );
                    assert!(self.waiting.is_empty(), "EndTxn(commit) with records waiting for their partition");
                }
                assert_eq!(*transaction_v2, self.mgr.is_transaction_v2());
                if let Some(t) = self.current {
                    let decisions = &mut self.txns[t].decisions;
                    if !self.unmodelled {
                        assert!(
                            decisions.first().is_none_or(|d| d == commit),
                            "txn {t}: EndTxn decision changed to commit={commit} after {decisions:?}"
                        );
                    }
                    decisions.push(*commit);
                }
            }
            TxnRequest::AddPartitionsToTxn { .. } | TxnRequest::AddOffsetsToTxn { .. } => {
                assert!(!self.mgr.is_transaction_v2(), "{request:?} in a v2 transaction");
            }
            _ => {}
        }
    }

    fn event(&mut self, ev: TxnEvent) {
        match ev {
            TxnEvent::PartitionsAdded(added) => {
                for tp in std::mem::take(&mut self.waiting) {
                    if !added.contains(&tp) || !self.mgr.can_send_produce() {
                        self.waiting.push(tp);
                    } else {
                        assert_eq!(self.mgr.add_partition(&tp), Ok(true), "{tp} announced added but not accepted");
                        self.send_produce(tp);
                    }
                }
            }
            TxnEvent::Committed | TxnEvent::Aborted => {
                let committed = ev == TxnEvent::Committed;
                if committed {
                    assert!(
                        self.app.commit_called && !self.app.abort_called && !self.app.failed,
                        "Committed announced for a transaction that was not committed cleanly"
                    );
                }
                let unsettled = self.unsettled();
                assert_eq!(unsettled, 0, "the transaction ended ({ev:?}) with {unsettled} produces unsettled");
                if let Some(t) = self.current.take() {
                    self.txns[t].outcome = if committed { Outcome::Committed } else { Outcome::Aborted };
                }
                self.waiting.clear();
                self.app = App::default();
            }
            TxnEvent::Failed(TxnError::Fatal(_)) => {
                if let Some(t) = self.current.take() {
                    self.txns[t].outcome = Outcome::Unknown;
                }
                self.waiting.clear();
                self.fatal = true;
            }
            _ => {}
        }
    }

    fn send_produce(&mut self, tp: TopicPartition) {
        let Some(txn) = self.current else { return };
        let record = self.next_record;
        self.next_record += 1;
        self.txns[txn].sent.push(record);
        let epoch = self.mgr.producer_id().1;
        self.in_flight.push(InFlight { txn, record, tp, epoch });
    }

    fn settle_produce(&mut self, p: InFlight, outcome: ProduceOutcome) {
        if !self.fatal {
            assert_eq!(Some(p.txn), self.current, "record {} settled after its transaction ended", p.record);
        }
        match outcome {
            ProduceOutcome::Acknowledged => self.txns[p.txn].acked.push(p.record),
            _ => self.app.failed |= Some(p.txn) == self.current,
        }
        self.mgr.produce_settled(outcome);
    }

    fn produce_arrives(&mut self, p: InFlight, ack_lost: bool) {
        self.model.tick(self.now, &mut self.rng);
        let outcome = match self.model.produce(&p.tp, p.epoch, p.record, self.now) {
            Ok(()) if ack_lost => ProduceOutcome::Failed(None),
            Ok(()) => ProduceOutcome::Acknowledged,
            Err(code) => ProduceOutcome::Failed(Some(code)),
        };
        self.settle_produce(p, outcome);
    }

    fn arrive(&mut self, target: Target, request: &TxnRequest) -> Reply {
        self.model.handle(target, request, self.now, &mut self.rng, &self.faults)
    }

    fn begin(&mut self) {
        if self.mgr.begin().is_ok() {
            assert!(self.current.is_none(), "begin accepted with a transaction open");
            self.current = Some(self.txns.len());
            self.txns.push(TxnLog {
                instance: 0,
                sent: Vec::new(),
                acked: Vec::new(),
                offsets: None,
                decisions: Vec::new(),
                outcome: Outcome::Open,
            });
            self.app = App::default();
        }
    }

    fn commit(&mut self) {
        if !self.app.abort_called && self.current.is_some() {
            let n = self.unsettled() + self.waiting.len();
            if self.mgr.commit(n).is_ok() {
                self.app.commit_called = true;
            }
        }
    }

    fn abort(&mut self) {
        let n = self.unsettled();
        if self.mgr.abort(n).is_ok() {
            self.waiting.clear();
            self.app.abort_called = true;
        }
    }

    fn apply(&mut self, op: Op) {
        if self.trace {
            eprintln!("{op:?} ({:?}, txn {:?})", self.mgr.state(), self.current);
        }
        let now = self.now;
        match op {
            Op::Init => {
                let _ = self.mgr.init();
            }
            Op::Begin => self.begin(),
            Op::Produce { partition } => {
                if self.current.is_some() && !self.app.commit_called && !self.app.abort_called {
                    let tp = tp(partition);
                    match self.mgr.add_partition(&tp) {
                        Ok(true) => self.send_produce(tp),
                        Ok(false) => self.waiting.push(tp),
                        Err(_) => {}
                    }
                }
            }
            Op::SendOffsets => {
                if let Some(t) = self.current {
                    let group = GroupMetadata {
                        group_id: Arc::from(GROUP),
                        generation_id: 1,
                        member_id: Arc::from("member"),
                        group_instance_id: None,
                    };
                    let offset = TxnOffset { offset: t as i64, leader_epoch: None, metadata: None };
                    if self.mgr.send_offsets(group, vec![(TopicPartition::new("in", 0), offset)]).is_ok() {
                        self.txns[t].offsets = Some(t as i64);
                    }
                }
            }
            Op::Commit => self.commit(),
            Op::Abort => self.abort(),
            Op::RequireEpochBump => {
                let _ = self.mgr.require_epoch_bump();
            }
            Op::Arrive { idx, fate } => {
                let Some((id, target, request)) = pick(&mut self.pending, idx) else { return };
                let reply = self.arrive(target, &request);
                match fate {
                    Fate::Answered => deliver(&mut self.mgr, id, reply, now),
                    Fate::Twice => {
                        deliver(&mut self.mgr, id, reply.clone(), now);
                        deliver(&mut self.mgr, id, reply, now);
                    }
                    Fate::Lost => self.mgr.handle_no_response(id, now),
                    Fate::Late => {
                        self.mgr.handle_no_response(id, now);
                        self.late.push((id, reply));
                    }
                }
            }
            Op::LoseRequest { idx } => {
                if let Some((id, ..)) = pick(&mut self.pending, idx) {
                    self.mgr.handle_no_response(id, now);
                }
            }
            Op::Refuse { idx, code } => {
                let Some((id, _, request)) = pick(&mut self.pending, idx) else { return };
                let codes: &[ErrorCode] = match request {
                    TxnRequest::TxnOffsetCommit { .. } if code & 1 == 1 => &GROUP_REFUSALS,
                    _ => &REFUSALS,
                };
                let reply = error_reply(&request, codes[code as usize / 2 % codes.len()]);
                deliver(&mut self.mgr, id, reply, now);
            }
            Op::Garbage { idx, code, pid, epoch } => {
                let Some((id, _, request)) = pick(&mut self.pending, idx) else { return };
                self.unmodelled = true;
                let (cur_pid, cur_epoch) = self.mgr.producer_id();
                let pid = if pid == 0 { cur_pid } else { 1000 + pid as i64 };
                let epoch = (cur_epoch as i32 + epoch as i32).clamp(-1, i16::MAX as i32) as i16;
                let reply = match error_reply(&request, ErrorCode(code)) {
                    Reply::Init(code, ..) => Reply::Init(code, pid, epoch),
                    Reply::End(code, ..) => Reply::End(code, pid, epoch),
                    other => other,
                };
                deliver(&mut self.mgr, id, reply, now);
            }
            Op::Late { idx } => {
                if let Some((id, reply)) = pick(&mut self.late, idx) {
                    deliver(&mut self.mgr, id, reply, now);
                }
            }
            Op::Move { group, node } => {
                let node = NODES[node as usize % NODES.len()];
                if group {
                    self.model.group_node = node;
                } else {
                    self.model.txn_node = node;
                }
            }
            Op::ProduceArrive { idx, ack_lost } => {
                if let Some(p) = pick(&mut self.in_flight, idx) {
                    self.produce_arrives(p, ack_lost);
                }
            }
            Op::ProduceLost { idx } => {
                if let Some(p) = pick(&mut self.in_flight, idx) {
                    self.settle_produce(p, ProduceOutcome::Failed(None));
                }
            }
            Op::Advance { ms } => {
                self.now += Duration::from_millis(ms as u64 % 10_000);
                self.model.tick(self.now, &mut self.rng);
            }
        }
        self.step();
    }

    /// The faults stop: late answers are dropped, every produce and request arrives and is
    /// answered, the application ends its open transaction (commit unless it failed) and
    /// aborts after an abortable error. The manager must come to rest within [`SETTLE_STEPS`].
    fn settle(&mut self) {
        self.late.clear();
        for _ in 0..SETTLE_STEPS {
            self.step();
            if self.fatal {
                return;
            }
            while let Some(p) = pick(&mut self.in_flight, 0) {
                self.produce_arrives(p, false);
            }
            for (id, target, request) in std::mem::take(&mut self.pending) {
                let reply = self.arrive(target, &request);
                deliver(&mut self.mgr, id, reply, self.now);
            }
            match self.mgr.state() {
                TxnState::AbortableError => self.abort(),
                TxnState::InTransaction if !self.app.commit_called && !self.app.abort_called => {
                    if self.app.failed {
                        self.abort()
                    } else {
                        self.commit()
                    }
                }
                _ => {}
            }
            self.step();
            let idle = self.pending.is_empty() && self.in_flight.is_empty();
            if idle && matches!(self.mgr.state(), TxnState::Ready | TxnState::Uninitialized | TxnState::FatalError) {
                return;
            }
            // Backoffs and the coordinator's marker writes take virtual time.
            let wake = self.mgr.next_wakeup().filter(|t| *t > self.now);
            self.now = wake.unwrap_or(self.now).max(self.now + Duration::from_millis(20));
            self.model.tick(self.now, &mut self.rng);
        }
        if !self.unmodelled {
            panic!(
                "not at rest {SETTLE_STEPS} steps after the faults stopped: {:?}, {} requests pending, {} produces in flight",
                self.mgr.state(),
                self.pending.len(),
                self.in_flight.len()
            );
        }
    }

    fn verify(&mut self) {
        // The coordinator aborts what a fatal manager left open, and finishes its markers.
        for _ in 0..3 {
            self.now += TXN_TIMEOUT * 2;
            self.model.tick(self.now, &mut self.rng);
        }
        if self.unmodelled {
            return;
        }
        assert!(self.model.violations.is_empty(), "the model saw: {:?}", self.model.violations);
        let (violations, _) = check_transactions(&self.model, &self.txns);
        assert!(violations.is_empty(), "{violations:#?}");
    }
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(input.version, input.seed);
    for op in input.ops.into_iter().take(MAX_OPS) {
        h.apply(op);
    }
    h.settle();
    h.verify();
});
