//! Operation sequences against the transaction manager (`proto::transaction::TransactionManager`),
//! under transactions v1 or v2 (KIP-890, chosen by the leading byte). The coordinator is the
//! fuzzer: each request is answered with any error code the manager handles (or any code at all),
//! any producer id and epoch, lost, answered twice; time passes; the application begins, adds
//! partitions, produces (each produce later settles acknowledged, failed or discarded), sends
//! offsets, commits and aborts at any moment. No input may panic the manager, and the
//! transaction simulation's safety invariants hold: EndTxn is sent only once every produce of the
//! transaction settled; an EndTxn that commits is sent only for a transaction the application
//! committed, never aborted, none of whose produces failed; once an EndTxn(commit) was sent and
//! no error came back for it (its answer lost), neither an EndTxn(abort) nor `Aborted` follows;
//! `Committed` is announced only for such a transaction; v2 sends no
//! AddPartitionsToTxn / AddOffsetsToTxn; nothing is sent after a fatal error.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use kafka_wire::codec::ErrorCode;
use kafka_wire::proto::driving::RequestId;
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire::proto::transaction::{
    GroupMetadata, ProduceOutcome, TransactionManager, TxnConfig, TxnEvent, TxnOffset, TxnRequest, TxnState,
};
use libfuzzer_sys::fuzz_target;

const MAX_OPS: usize = 256;

/// The error codes the manager handles, plus NONE (weighted by repetition).
const CODES: [ErrorCode; 26] = [
    ErrorCode::NONE,
    ErrorCode::NONE,
    ErrorCode::NONE,
    ErrorCode::NONE,
    ErrorCode::NONE,
    ErrorCode::CONCURRENT_TRANSACTIONS,
    ErrorCode::COORDINATOR_LOAD_IN_PROGRESS,
    ErrorCode::COORDINATOR_NOT_AVAILABLE,
    ErrorCode::FENCED_INSTANCE_ID,
    ErrorCode::GROUP_AUTHORIZATION_FAILED,
    ErrorCode::ILLEGAL_GENERATION,
    ErrorCode::INVALID_PRODUCER_EPOCH,
    ErrorCode::INVALID_PRODUCER_ID_MAPPING,
    ErrorCode::INVALID_TXN_STATE,
    ErrorCode::MESSAGE_TOO_LARGE,
    ErrorCode::NOT_COORDINATOR,
    ErrorCode::OPERATION_NOT_ATTEMPTED,
    ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
    ErrorCode::PRODUCER_FENCED,
    ErrorCode::REBALANCE_IN_PROGRESS,
    ErrorCode::TOPIC_AUTHORIZATION_FAILED,
    ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    ErrorCode::TRANSACTION_ABORTABLE,
    ErrorCode::UNKNOWN_MEMBER_ID,
    ErrorCode::UNKNOWN_PRODUCER_ID,
    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
];

#[derive(Arbitrary, Debug)]
struct Input {
    /// The finalized `transaction.version` level: 2 and above is v2.
    version: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Init,
    Begin,
    /// Adds partition `p` and, once the manager allows it, produces to it.
    Produce {
        partition: u8,
    },
    /// An unsettled produce settles: acknowledged, discarded (when aborting), or failed (with a
    /// code from the list, or none for a delivery timeout).
    Settle {
        outcome: u8,
        code: u8,
    },
    SendOffsets {
        generation: i8,
        offset: i64,
    },
    Commit,
    Abort,
    RequireEpochBump,
    /// Pending request `idx` is answered: `code` picks from the list (`any` takes it as a raw
    /// code instead); `pid` / `epoch` offset the current producer id and epoch.
    Answer {
        idx: u8,
        code: u8,
        any: Option<i16>,
        pid: i8,
        epoch: i8,
        keep: bool,
    },
    Lose {
        idx: u8,
    },
    Advance {
        ms: u16,
    },
}

#[derive(Default)]
struct Txn {
    commit_called: bool,
    abort_called: bool,
    failed: bool,
    /// An EndTxn(commit) was sent and no error answer came back to it (lost or not yet
    /// answered): the coordinator may have committed, so the transaction must not end aborted.
    commit_unknown: bool,
}

struct Harness {
    tm: TransactionManager,
    now: Instant,
    pending: Vec<(RequestId, TxnRequest)>,
    /// Produces of the current transaction not settled yet.
    unsettled: usize,
    /// What the application did in the current transaction.
    txn: Txn,
    fatal: bool,
}

fn tp(p: u8) -> TopicPartition {
    TopicPartition::new("t", (p % 4) as i32)
}

impl Harness {
    fn new(version: u8) -> Self {
        let mut config = TxnConfig::new("tx");
        config.backoff_seed = Some(0);
        let mut tm = TransactionManager::new(config);
        tm.set_transaction_version(if version >= 2 { 2 } else { 0 });
        Self { tm, now: Instant::now(), pending: Vec::new(), unsettled: 0, txn: Txn::default(), fatal: false }
    }

    fn step(&mut self) {
        for _ in 0..64 {
            let Some(out) = self.tm.next_request(self.now) else { break };
            assert!(!self.fatal, "a request after a fatal error: {:?}", out.request);
            match &out.request {
                TxnRequest::EndTxn { commit, transaction_v2, .. } => {
                    assert_eq!(self.unsettled, 0, "EndTxn with {} produces unsettled", self.unsettled);
                    if *commit {
                        assert!(
                            self.txn.commit_called && !self.txn.abort_called && !self.txn.failed,
                            "EndTxn(commit) of a transaction that was not committed cleanly"
                        );
                    }
                    if *commit {
                        self.txn.commit_unknown = true;
                    } else {
                        assert!(!self.txn.commit_unknown, "EndTxn(abort) after an EndTxn(commit) of unknown outcome");
                    }
                    assert_eq!(*transaction_v2, self.tm.is_transaction_v2());
                }
                TxnRequest::AddPartitionsToTxn { .. } | TxnRequest::AddOffsetsToTxn { .. } => {
                    assert!(!self.tm.is_transaction_v2(), "{:?} in a v2 transaction", out.request);
                }
                _ => {}
            }
            self.pending.push((out.id, out.request));
        }
        while let Some(ev) = self.tm.poll_event() {
            match ev {
                TxnEvent::Committed => {
                    assert!(
                        self.txn.commit_called && !self.txn.abort_called && !self.txn.failed,
                        "Committed announced for a transaction that was not committed cleanly"
                    );
                    self.txn = Txn::default();
                }
                TxnEvent::Aborted => {
                    assert!(!self.txn.commit_unknown, "Aborted after an EndTxn(commit) of unknown outcome");
                    self.txn = Txn::default();
                }
                TxnEvent::Failed(_) => {}
                _ => {}
            }
        }
        if self.tm.state() == TxnState::FatalError {
            self.fatal = true;
        }
    }

    fn answer(&mut self, request: &TxnRequest, id: RequestId, code: ErrorCode, pid: i8, epoch: i8) {
        let now = self.now;
        let (cur_pid, cur_epoch) = self.tm.producer_id();
        let new_pid = if pid == 0 { cur_pid.max(1000) } else { 1000 + pid as i64 };
        let new_epoch = (cur_epoch as i32 + epoch as i32 % 3).clamp(-1, i16::MAX as i32) as i16;
        match request {
            TxnRequest::FindCoordinator { .. } => {
                let r = if code == ErrorCode::NONE { Ok(1 + (pid as i32 & 1)) } else { Err(code) };
                self.tm.handle_find_coordinator(id, r, now);
            }
            TxnRequest::InitProducerId { .. } => self.tm.handle_init_producer_id(id, code, new_pid, new_epoch, now),
            TxnRequest::AddPartitionsToTxn { partitions, .. } => {
                let results: Vec<_> = partitions.iter().map(|t| (t.clone(), code)).collect();
                self.tm.handle_add_partitions(id, &results, now);
            }
            TxnRequest::AddOffsetsToTxn { .. } => self.tm.handle_add_offsets(id, code, now),
            TxnRequest::TxnOffsetCommit { offsets, .. } => {
                let results: Vec<_> = offsets.iter().map(|(t, _)| (t.clone(), code)).collect();
                self.tm.handle_txn_offset_commit(id, &results, now);
            }
            TxnRequest::EndTxn { commit, .. } => {
                // An error answer means the coordinator did not commit: aborting is then right.
                if *commit && code != ErrorCode::NONE {
                    self.txn.commit_unknown = false;
                }
                self.tm.handle_end_txn(id, code, new_pid, new_epoch, now)
            }
            _ => self.tm.handle_no_response(id, now),
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Init => {
                let _ = self.tm.init();
            }
            Op::Begin => {
                if self.tm.begin().is_ok() {
                    self.txn = Txn::default();
                    self.unsettled = 0;
                }
            }
            Op::Produce { partition } => {
                if let Ok(true) = self.tm.add_partition(&tp(partition)) {
                    if self.tm.can_send_produce() && !self.txn.commit_called && !self.txn.abort_called {
                        self.unsettled += 1;
                    }
                }
            }
            Op::Settle { outcome, code } => {
                if self.unsettled > 0 {
                    self.unsettled -= 1;
                    let outcome = match outcome % 4 {
                        // Discarded only happens to a transaction being aborted.
                        2 if self.txn.abort_called => ProduceOutcome::Discarded,
                        0..=2 => ProduceOutcome::Acknowledged,
                        _ => ProduceOutcome::Failed((code & 1 == 0).then(|| CODES[code as usize % CODES.len()])),
                    };
                    if matches!(outcome, ProduceOutcome::Failed(_)) {
                        self.txn.failed = true;
                    }
                    self.tm.produce_settled(outcome);
                }
            }
            Op::SendOffsets { generation, offset } => {
                let group = GroupMetadata {
                    group_id: Arc::from("g"),
                    generation_id: generation as i32,
                    member_id: Arc::from("m"),
                    group_instance_id: None,
                };
                let offsets = vec![(tp(0), TxnOffset { offset, leader_epoch: None, metadata: None })];
                let _ = self.tm.send_offsets(group, offsets);
            }
            Op::Commit => {
                if !self.txn.abort_called && self.tm.commit(self.unsettled).is_ok() {
                    self.txn.commit_called = true;
                }
            }
            Op::Abort => {
                if self.tm.abort(self.unsettled).is_ok() {
                    self.txn.abort_called = true;
                }
            }
            Op::RequireEpochBump => {
                let _ = self.tm.require_epoch_bump();
            }
            Op::Answer { idx, code, any, pid, epoch, keep } => {
                if self.pending.is_empty() {
                    return;
                }
                let i = idx as usize % self.pending.len();
                let (id, request) = if keep { self.pending[i].clone() } else { self.pending.remove(i) };
                let code = any.map_or(CODES[code as usize % CODES.len()], ErrorCode);
                self.answer(&request, id, code, pid, epoch);
            }
            Op::Lose { idx } => {
                if !self.pending.is_empty() {
                    let (id, _) = self.pending.remove(idx as usize % self.pending.len());
                    self.tm.handle_no_response(id, self.now);
                }
            }
            Op::Advance { ms } => self.now += Duration::from_millis(ms as u64 % 10_000),
        }
        self.step();
    }
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(input.version);
    for op in input.ops.into_iter().take(MAX_OPS) {
        h.apply(op);
    }
});
