//! Deterministic simulation of the transaction manager ([`TransactionManager`]) against a model
//! transaction coordinator, group coordinator and partition logs, with injected faults: the
//! coordinator moves (NOT_COORDINATOR), requests and answers are lost (EndTxn included) or come
//! late or twice, spurious CONCURRENT_TRANSACTIONS and COORDINATOR_LOAD_IN_PROGRESS, a second
//! instance of the same transactional id fences the first, produces fail (refused, lost, or
//! written with the acknowledgement lost), the group refuses the offsets, and the user stalls past
//! the transaction timeout so that the coordinator aborts. Virtual time only (one `Instant::now()`,
//! then added durations), a seeded xorshift PRNG, no tokio. Transactions v1 (AddPartitionsToTxn)
//! and v2 (KIP-890: implicit adds, epoch bump on every EndTxn) run on separate seeds.
//!
//! Invariants per seed:
//! 1. no request after the manager reached FatalError, and every call is then refused;
//! 2. EndTxn(commit) only when every produce of the transaction was acknowledged;
//! 3. an EndTxn decision is never changed on retry;
//! 4. a read_committed reader of the logs sees each transaction all or nothing: committed ones
//!    fully, aborted ones (and ones that never asked to commit) not at all, each record at most
//!    once, and a transaction's offsets are committed exactly when its records are;
//! 5. a record reaches its partition only inside a transaction that holds the partition (checked
//!    under v1, where nothing else enforces it), and no partition is left with a transaction
//!    nobody ends;
//! 6. liveness: every instance that was not fenced ends Ready.
//!
//! `SIM_SEEDS=n` runs n seeds per test (default 500), `SIM_SEED=s` only seed s, `SIM_TRACE=1`
//! prints every event of the seeds run.

#[path = "sim/txn_model.rs"]
mod txn_model;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use kafka_wire::codec::ErrorCode;
use kafka_wire::proto::driving::{RequestId, Target};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire::proto::transaction::{
    FatalReason, GroupMetadata, ProduceOutcome, TransactionManager, TxnConfig, TxnError, TxnEvent, TxnOffset,
    TxnRequest, TxnState,
};
use txn_model::{
    check_transactions, error_reply, Faults, Model, Outcome, Reply, Rng, TxnLog, GROUP, NODES, PRODUCER_ID, TXN_ID,
    TXN_TIMEOUT,
};

const PARTITIONS: i32 = 4;
const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);
const TRACE_KEPT: usize = 400;

// ---- driver -----------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Plan {
    records_left: usize,
    offsets: bool,
    commit: bool,
    stall: bool,
}

struct Instance {
    mgr: TransactionManager,
    dead: bool,
    txn: Option<usize>,
    plan: Plan,
    next_action: Instant,
    /// v1: records waiting for their partition to be added.
    waiting: Vec<(TopicPartition, u64)>,
    /// Produces of the current transaction not settled yet.
    in_flight: usize,
    /// Requests answered (their request-timeout event is then moot).
    answered: HashSet<RequestId>,
    abort_wanted: bool,
}

#[derive(Debug)]
enum Ev {
    Arrive { inst: usize, id: RequestId, target: Target, request: TxnRequest },
    Reply { inst: usize, id: RequestId, reply: Reply },
    Timeout { inst: usize, id: RequestId },
    Produce { inst: usize, txn: usize, record: u64, tp: TopicPartition, epoch: i16, attempt: u32 },
    ProduceDone { inst: usize, txn: usize, record: u64, outcome: ProduceOutcome },
}

#[derive(Debug, Default, Clone)]
struct Totals {
    txns: usize,
    committed: usize,
    aborted: usize,
    unknown: usize,
    fenced: usize,
    other_fatal: usize,
    instances: usize,
    end_txn_retries: usize,
    not_coordinator: usize,
    concurrent: usize,
    produce_failures: usize,
    epoch_changes: usize,
    offsets_committed: usize,
    fatal_reasons: BTreeMap<String, usize>,
}

impl Totals {
    fn add(&mut self, o: &Self) {
        self.txns += o.txns;
        self.committed += o.committed;
        self.aborted += o.aborted;
        self.unknown += o.unknown;
        self.fenced += o.fenced;
        self.other_fatal += o.other_fatal;
        self.instances += o.instances;
        self.end_txn_retries += o.end_txn_retries;
        self.not_coordinator += o.not_coordinator;
        self.concurrent += o.concurrent;
        self.produce_failures += o.produce_failures;
        self.epoch_changes += o.epoch_changes;
        self.offsets_committed += o.offsets_committed;
        for (k, n) in &o.fatal_reasons {
            *self.fatal_reasons.entry(k.clone()).or_default() += n;
        }
    }
}

struct Sim {
    seed: u64,
    rng: Rng,
    f: Faults,
    v2: bool,
    start: Instant,
    now: Instant,
    model: Model,
    instances: Vec<Instance>,
    queue: BTreeMap<(Instant, u64), Ev>,
    seq: u64,
    txns: Vec<TxnLog>,
    budget: usize,
    next_record: u64,
    violations: Vec<String>,
    totals: Totals,
    trace: VecDeque<String>,
    print_trace: bool,
}

fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new("out", partition)
}

impl Sim {
    fn new(seed: u64, v2: bool, f: Faults, txns: usize) -> Self {
        let now = Instant::now();
        let mut sim = Self {
            seed,
            rng: Rng::new(seed),
            f,
            v2,
            start: now,
            now,
            model: Model::new(v2),
            instances: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            txns: Vec::new(),
            budget: txns,
            next_record: 0,
            violations: Vec::new(),
            totals: Totals::default(),
            trace: VecDeque::new(),
            print_trace: std::env::var("SIM_TRACE").is_ok(),
        };
        sim.spawn();
        sim
    }

    fn log(&mut self, what: String) {
        let line = format!("{:>8.3}s {what}", (self.now - self.start).as_secs_f64());
        if self.print_trace {
            eprintln!("seed {} {line}", self.seed);
        }
        if self.trace.len() == TRACE_KEPT {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn violation(&mut self, what: String) {
        self.log(format!("VIOLATION {what}"));
        self.violations.push(what);
    }

    fn schedule(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    /// Starts an instance of the transactional id (a restart, or a second one that fences the
    /// first).
    fn spawn(&mut self) {
        let mut config = TxnConfig::new(TXN_ID);
        config.transaction_timeout = TXN_TIMEOUT;
        // Each instance its own jitter, the same in every run of the seed.
        config.backoff_seed = Some(self.seed.wrapping_mul(1_000_003).wrapping_add(self.instances.len() as u64));
        let mut mgr = TransactionManager::new(config);
        mgr.set_transaction_version(if self.v2 { 2 } else { 1 });
        self.instances.push(Instance {
            mgr,
            dead: false,
            txn: None,
            plan: Plan::default(),
            next_action: self.now,
            waiting: Vec::new(),
            in_flight: 0,
            answered: HashSet::new(),
            abort_wanted: false,
        });
        self.totals.instances += 1;
        let n = self.instances.len() - 1;
        self.log(format!("instance {n} starts"));
    }

    fn run(&mut self) {
        let deadline = self.now + Duration::from_secs(1800);
        loop {
            self.settle_instances();
            let wake = self
                .instances
                .iter()
                .filter(|i| !i.dead)
                .flat_map(|i| {
                    let user = (self.budget > 0 || i.txn.is_some()).then_some(i.next_action);
                    [i.mgr.next_wakeup(), user]
                })
                .flatten()
                .filter(|t| *t > self.now)
                .min();
            let next = [self.queue.keys().next().map(|(t, _)| *t), wake].into_iter().flatten().min();
            let Some(next) = next else { break };
            if next > deadline {
                self.violation("no end after 30 virtual minutes".into());
                break;
            }
            self.now = self.now.max(next);
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let ev = entry.remove();
                self.process(ev);
            }
        }
        // Let the coordinator abort what dead instances left open, and finish its markers.
        for _ in 0..3 {
            self.now += TXN_TIMEOUT * 2;
            self.model.tick(self.now, &mut self.rng);
        }
        self.verify();
    }

    /// User actions that are due, manager events, and requests to send, until nothing changes.
    fn settle_instances(&mut self) {
        loop {
            let mut progress = false;
            if self.instances.last().is_some_and(|i| i.dead) && self.budget > 0 {
                self.spawn();
                progress = true;
            }
            for i in 0..self.instances.len() {
                // Events first: they close the transaction the user would otherwise move past.
                progress |= self.drain_events(i);
                progress |= self.user_step(i);
                progress |= self.pump(i);
            }
            if !progress {
                break;
            }
        }
    }

    fn user_step(&mut self, i: usize) -> bool {
        let now = self.now;
        let inst = &mut self.instances[i];
        if inst.dead {
            // Invariant 1: a fenced manager refuses everything.
            let refused = inst.mgr.begin().is_err() && !inst.mgr.can_send_produce();
            let add = inst.mgr.add_partition(&tp(0));
            if !refused || !matches!(add, Err(TxnError::Fatal(_))) {
                self.violation(format!("instance {i} accepts calls after FatalError"));
            }
            return false;
        }
        if inst.next_action > now {
            return false;
        }
        if inst.abort_wanted && inst.mgr.state() == TxnState::AbortableError {
            inst.abort_wanted = false;
            inst.waiting.clear();
            let n = inst.in_flight;
            let r = inst.mgr.abort(n);
            self.log(format!("instance {i} abort({n}) after error: {r:?}"));
            return true;
        }
        match inst.mgr.state() {
            TxnState::Uninitialized => {
                let r = inst.mgr.init();
                self.log(format!("instance {i} init: {r:?}"));
                true
            }
            TxnState::Ready if self.budget > 0 => self.begin(i),
            TxnState::InTransaction => self.txn_step(i),
            _ => false,
        }
    }

    fn begin(&mut self, i: usize) -> bool {
        if let Err(e) = self.instances[i].mgr.begin() {
            self.violation(format!("instance {i} begin refused in Ready: {e:?}"));
            return false;
        }
        self.budget -= 1;
        self.totals.txns += 1;
        let n = self.txns.len();
        self.txns.push(TxnLog {
            instance: i,
            sent: Vec::new(),
            acked: Vec::new(),
            offsets: None,
            decisions: Vec::new(),
            outcome: Outcome::Open,
        });
        let plan = Plan {
            records_left: 1 + self.rng.below(6) as usize,
            offsets: self.rng.chance(0.5),
            commit: self.rng.chance(0.85),
            stall: self.rng.chance(self.f.stall),
        };
        self.log(format!("instance {i} begins txn {n} {plan:?}"));
        let inst = &mut self.instances[i];
        inst.txn = Some(n);
        inst.plan = plan;
        if self.rng.chance(self.f.fence) {
            self.spawn();
        }
        true
    }

    /// The next user action of the open transaction: a record, the offsets, then commit or abort.
    fn txn_step(&mut self, i: usize) -> bool {
        let Some(txn) = self.instances[i].txn else { return false };
        let pause = self.rng.ms(0, 15);
        if self.instances[i].plan.records_left > 0 {
            self.instances[i].plan.records_left -= 1;
            let record = self.next_record;
            self.next_record += 1;
            let tp = tp(self.rng.below(PARTITIONS as u64) as i32);
            match self.instances[i].mgr.add_partition(&tp) {
                Ok(true) => self.send_produce(i, txn, record, tp),
                Ok(false) => {
                    self.log(format!("instance {i} record {record} waits for {tp}"));
                    self.instances[i].waiting.push((tp, record));
                }
                Err(e) => self.log(format!("instance {i} add_partition refused: {e:?}")),
            }
            self.instances[i].next_action = self.now + pause;
            return true;
        }
        if self.instances[i].plan.offsets {
            self.instances[i].plan.offsets = false;
            let group = GroupMetadata {
                group_id: GROUP.into(),
                generation_id: 1,
                member_id: "member".into(),
                group_instance_id: None,
            };
            let offset = TxnOffset { offset: txn as i64, leader_epoch: None, metadata: None };
            let r = self.instances[i].mgr.send_offsets(group, vec![(TopicPartition::new("in", 0), offset)]);
            self.log(format!("instance {i} send_offsets txn {txn}: {r:?}"));
            if r.is_ok() {
                self.txns[txn].offsets = Some(txn as i64);
            }
            self.instances[i].next_action = self.now + pause;
            return true;
        }
        if self.instances[i].plan.stall {
            self.instances[i].plan.stall = false;
            self.instances[i].next_action = self.now + TXN_TIMEOUT + Duration::from_millis(500);
            self.log(format!("instance {i} stalls"));
            return true;
        }
        let inst = &mut self.instances[i];
        let (r, what) = if inst.plan.commit {
            let n = inst.in_flight + inst.waiting.len();
            (inst.mgr.commit(n), format!("commit({n})"))
        } else {
            inst.waiting.clear();
            let n = inst.in_flight;
            (inst.mgr.abort(n), format!("abort({n})"))
        };
        self.log(format!("instance {i} {what} txn {txn}: {r:?}"));
        true
    }

    fn send_produce(&mut self, i: usize, txn: usize, record: u64, tp: TopicPartition) {
        let epoch = self.instances[i].mgr.producer_id().1;
        self.instances[i].in_flight += 1;
        self.txns[txn].sent.push(record);
        self.log(format!("instance {i} produce record {record} to {tp} epoch {epoch}"));
        if self.rng.chance(self.f.produce_lost) {
            let at = self.now + REQUEST_TIMEOUT;
            self.schedule(at, Ev::ProduceDone { inst: i, txn, record, outcome: ProduceOutcome::Failed(None) });
        } else {
            let at = self.now + self.rng.ms(1, 5);
            self.schedule(at, Ev::Produce { inst: i, txn, record, tp, epoch, attempt: 1 });
        }
    }

    fn drain_events(&mut self, i: usize) -> bool {
        let mut progress = false;
        while let Some(ev) = self.instances[i].mgr.poll_event() {
            progress = true;
            self.log(format!("instance {i} event {ev:?}"));
            let txn = self.instances[i].txn;
            match ev {
                TxnEvent::PartitionsAdded(added) => {
                    let waiting = std::mem::take(&mut self.instances[i].waiting);
                    for (tp, record) in waiting {
                        if !added.contains(&tp) || !self.instances[i].mgr.can_send_produce() {
                            self.instances[i].waiting.push((tp, record));
                        } else if self.instances[i].mgr.add_partition(&tp) != Ok(true) {
                            self.violation(format!("instance {i}: {tp} announced added but not accepted"));
                        } else if let Some(txn) = txn {
                            self.send_produce(i, txn, record, tp);
                        }
                    }
                }
                TxnEvent::Committed | TxnEvent::Aborted => {
                    let committed = ev == TxnEvent::Committed;
                    if let Some(t) = txn {
                        self.txns[t].outcome = if committed { Outcome::Committed } else { Outcome::Aborted };
                    }
                    if committed {
                        self.totals.committed += 1;
                    } else {
                        self.totals.aborted += 1;
                    }
                    let inst = &mut self.instances[i];
                    if inst.in_flight > 0 || !inst.waiting.is_empty() {
                        let n = inst.in_flight;
                        self.violation(format!("instance {i} txn {txn:?} ended with {n} produces in flight"));
                    }
                    self.instances[i].txn = None;
                }
                TxnEvent::Failed(TxnError::Abortable(_)) => self.instances[i].abort_wanted = true,
                TxnEvent::Failed(TxnError::Fatal(reason)) => {
                    *self.totals.fatal_reasons.entry(reason.to_string()).or_default() += 1;
                    if matches!(reason, FatalReason::Fenced { .. }) {
                        self.totals.fenced += 1;
                    } else {
                        self.totals.other_fatal += 1;
                    }
                    if let Some(t) = txn {
                        self.txns[t].outcome = Outcome::Unknown;
                        self.totals.unknown += 1;
                    }
                    let inst = &mut self.instances[i];
                    inst.dead = true;
                    inst.txn = None;
                    inst.waiting.clear();
                }
                TxnEvent::ProducerIdChanged { .. } => self.totals.epoch_changes += 1,
                _ => {}
            }
        }
        progress
    }

    /// Sends what the manager asks for, checking invariants 1–3 on the way.
    fn pump(&mut self, i: usize) -> bool {
        let mut progress = false;
        while let Some(out) = self.instances[i].mgr.next_request(self.now) {
            progress = true;
            self.log(format!("instance {i} sends #{} {:?} to {:?}", out.id, out.request, out.target));
            if self.instances[i].dead {
                self.violation(format!("instance {i} sent {:?} after FatalError", out.request));
            }
            if let TxnRequest::EndTxn { commit, .. } = out.request {
                let inst = &self.instances[i];
                let (n, w, txn) = (inst.in_flight, inst.waiting.len(), inst.txn);
                if commit && n + w > 0 {
                    self.violation(format!("instance {i} EndTxn(commit) with {n} produces in flight, {w} waiting"));
                }
                if let Some(t) = txn {
                    if self.txns[t].decisions.first().is_some_and(|d| *d != commit) {
                        self.violation(format!("txn {t}: EndTxn decision changed to commit={commit}"));
                    }
                    if !self.txns[t].decisions.is_empty() {
                        self.totals.end_txn_retries += 1;
                    }
                    self.txns[t].decisions.push(commit);
                }
            }
            if self.rng.chance(self.f.coordinator_move) {
                let moved = NODES[self.rng.below(NODES.len() as u64) as usize];
                if self.rng.chance(0.5) {
                    self.model.txn_node = moved;
                } else {
                    self.model.group_node = moved;
                }
                self.log(format!("coordinator moves to {moved}"));
            }
            let timeout = self.now + REQUEST_TIMEOUT;
            self.schedule(timeout, Ev::Timeout { inst: i, id: out.id });
            if self.rng.chance(self.f.drop_request) {
                self.log(format!("#{} lost", out.id));
                continue;
            }
            let at = self.now + self.rng.ms(1, 5);
            self.schedule(at, Ev::Arrive { inst: i, id: out.id, target: out.target, request: out.request });
        }
        progress
    }

    fn process(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive { inst, id, target, request } => {
                let reply = self.model.handle(target, &request, self.now, &mut self.rng, &self.f);
                self.log(format!("#{id} answered {reply:?}"));
                let f = self.f.clone();
                if self.rng.chance(f.drop_response) {
                    self.log(format!("#{id} answer lost"));
                    return;
                }
                let at = if self.rng.chance(f.late_response) {
                    self.now + REQUEST_TIMEOUT + self.rng.ms(1, 200)
                } else {
                    self.now + self.rng.ms(1, 5)
                };
                if self.rng.chance(f.duplicate_response) {
                    let again = at + self.rng.ms(0, 5);
                    self.schedule(again, Ev::Reply { inst, id, reply: reply.clone() });
                }
                self.schedule(at, Ev::Reply { inst, id, reply });
            }
            Ev::Reply { inst, id, reply } => self.deliver(inst, id, reply),
            Ev::Timeout { inst, id } => {
                if !self.instances[inst].answered.contains(&id) {
                    self.log(format!("instance {inst} #{id} timed out"));
                    self.instances[inst].answered.insert(id);
                    self.instances[inst].mgr.handle_no_response(id, self.now);
                }
            }
            Ev::Produce { inst, txn, record, tp, epoch, attempt } => {
                let result = if self.rng.chance(self.f.produce_refused) {
                    Err(ErrorCode::NOT_ENOUGH_REPLICAS)
                } else {
                    self.model.tick(self.now, &mut self.rng);
                    self.model.produce(&tp, epoch, record, self.now)
                };
                self.log(format!("record {record} at {tp} epoch {epoch}: {result:?}"));
                match result {
                    Ok(()) if self.rng.chance(self.f.produce_ack_lost) => {
                        let at = self.now + REQUEST_TIMEOUT;
                        let outcome = ProduceOutcome::Failed(None);
                        self.schedule(at, Ev::ProduceDone { inst, txn, record, outcome });
                    }
                    Ok(()) => {
                        let at = self.now + self.rng.ms(1, 5);
                        let outcome = ProduceOutcome::Acknowledged;
                        self.schedule(at, Ev::ProduceDone { inst, txn, record, outcome });
                    }
                    // Not written: the producer core retries these (a few times here).
                    Err(code @ (ErrorCode::NOT_ENOUGH_REPLICAS | ErrorCode::CONCURRENT_TRANSACTIONS))
                        if attempt < 5 =>
                    {
                        let at = self.now + self.rng.ms(10, 30);
                        self.log(format!("record {record} retried after {code}"));
                        self.schedule(at, Ev::Produce { inst, txn, record, tp, epoch, attempt: attempt + 1 });
                    }
                    Err(code) => {
                        let at = self.now + self.rng.ms(1, 5);
                        let outcome = ProduceOutcome::Failed(Some(code));
                        self.schedule(at, Ev::ProduceDone { inst, txn, record, outcome });
                    }
                }
            }
            Ev::ProduceDone { inst, txn, record, outcome } => {
                self.log(format!("instance {inst} record {record} settled {outcome:?}"));
                if outcome == ProduceOutcome::Acknowledged {
                    self.txns[txn].acked.push(record);
                } else {
                    self.totals.produce_failures += 1;
                }
                let i = &mut self.instances[inst];
                i.in_flight -= 1;
                if !i.dead && i.txn != Some(txn) {
                    self.violation(format!("record {record} of txn {txn} settled after its transaction ended"));
                }
                self.instances[inst].mgr.produce_settled(outcome);
            }
        }
    }

    fn deliver(&mut self, inst: usize, id: RequestId, reply: Reply) {
        let now = self.now;
        self.instances[inst].answered.insert(id);
        match &reply {
            Reply::AddPartitions(r) | Reply::OffsetCommit(r) => {
                self.count_code(r.first().map(|(_, c)| *c));
            }
            Reply::Find(r) => self.count_code(r.err()),
            Reply::Init(c, ..) | Reply::AddOffsets(c) | Reply::End(c, ..) => self.count_code(Some(*c)),
        }
        txn_model::deliver(&mut self.instances[inst].mgr, id, reply, now);
    }

    fn count_code(&mut self, code: Option<ErrorCode>) {
        match code {
            Some(ErrorCode::NOT_COORDINATOR) => self.totals.not_coordinator += 1,
            Some(ErrorCode::CONCURRENT_TRANSACTIONS) => self.totals.concurrent += 1,
            _ => {}
        }
    }

    /// Invariants 4–6 on the final logs.
    fn verify(&mut self) {
        self.violations.append(&mut self.model.violations);
        let (mut violations, offsets_committed) = check_transactions(&self.model, &self.txns);
        for v in &violations {
            self.log(format!("VIOLATION {v}"));
        }
        self.violations.append(&mut violations);
        self.totals.offsets_committed += offsets_committed;
        for (i, inst) in self.instances.iter().enumerate() {
            if !inst.dead && inst.mgr.state() != TxnState::Ready {
                self.violations.push(format!("instance {i} ends in {:?}, not Ready", inst.mgr.state()));
            }
        }
    }
}

// ---- runs -------------------------------------------------------------------------------------

fn seeds(first: u64, default_count: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        return vec![s.parse().expect("SIM_SEED is a number")];
    }
    let n = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_count);
    (first..first + n).collect()
}

fn run_seeds(title: &str, seeds: Vec<u64>, v2: bool, faults: &Faults, txns: usize) -> Totals {
    let mut total = Totals::default();
    let mut failures = Vec::new();
    for seed in seeds {
        let mut sim = Sim::new(seed, v2, faults.clone(), txns);
        sim.run();
        if !sim.violations.is_empty() {
            failures.push(format!(
                "seed {seed}: {:#?}\nlast events:\n{}",
                sim.violations,
                sim.trace.iter().cloned().collect::<Vec<_>>().join("\n")
            ));
        }
        total.add(&sim.totals);
    }
    eprintln!("{title}: {total:?}");
    if let Some(first) = failures.first() {
        panic!("{title}: {} seeds violate invariants; the first one:\n{first}", failures.len());
    }
    total
}

/// The faults happened often enough for the run to mean something.
fn assert_coverage(t: &Totals, v2: bool) {
    assert!(t.committed > t.txns / 2, "{t:?}");
    assert!(t.aborted > 0 && t.fenced > 0 && t.unknown > 0, "{t:?}");
    assert!(t.end_txn_retries > 0 && t.not_coordinator > 0 && t.concurrent > 0, "{t:?}");
    assert!(t.produce_failures > 0 && t.offsets_committed > 0, "{t:?}");
    if v2 {
        // Every EndTxn bumps the epoch.
        assert!(t.epoch_changes > t.committed, "{t:?}");
    } else {
        // Beyond each instance's first InitProducerId: KIP-360 bumps after failed produces.
        assert!(t.epoch_changes > t.instances, "{t:?}");
    }
}

/// A seed replays the same run: the instances' retry backoffs draw their jitter from it too.
#[test]
fn a_seed_replays_the_same_run() {
    let run = || {
        let mut sim = Sim::new(3, false, Faults::standard(), 30);
        sim.run();
        (format!("{:?}", sim.totals), sim.violations)
    };
    let first = run();
    assert!(first.1.is_empty(), "{:?}", first.1);
    assert_eq!(first, run());
}

#[test]
fn simulation_v1_with_faults() {
    let t = run_seeds("simulation_v1_with_faults", seeds(0, 500), false, &Faults::standard(), 30);
    if std::env::var("SIM_SEED").is_err() {
        assert_coverage(&t, false);
    }
}

#[test]
fn simulation_v2_with_faults() {
    let t = run_seeds("simulation_v2_with_faults", seeds(10_000, 500), true, &Faults::standard(), 30);
    if std::env::var("SIM_SEED").is_err() {
        assert_coverage(&t, true);
    }
}

/// Without faults every transaction ends as the user asked, and nothing is fatal.
#[test]
fn simulation_without_faults() {
    for v2 in [false, true] {
        let t = run_seeds("simulation_without_faults", seeds(20_000, 20), v2, &Faults::none(), 30);
        assert_eq!(t.committed + t.aborted, t.txns, "v2={v2}: {t:?}");
        assert_eq!((t.fenced, t.other_fatal, t.unknown), (0, 0, 0), "v2={v2}: {t:?}");
    }
}

// ---- scripted: a coordinator that lost the producer id ---------------------------------------

/// Where the coordinator answers INVALID_PRODUCER_ID_MAPPING in
/// [`regression_invalid_producer_id_mapping_is_abortable_and_the_abort_gets_a_new_producer_id`].
#[derive(Clone, Copy, Debug)]
enum Unmapped {
    AddPartitions,
    AddOffsets,
    EndTxnCommit,
    EndTxnAbort,
}

/// One manager answered by hand, request by request.
struct Scripted {
    m: TransactionManager,
    now: Instant,
}

impl Scripted {
    /// Sends the manager's next request, answers it with `reply`, and returns the request.
    fn answer(&mut self, reply: impl FnOnce(&TxnRequest) -> Reply) -> TxnRequest {
        let r = self.m.next_request(self.now).unwrap_or_else(|| panic!("no request in {:?}", self.m.state()));
        let now = self.now;
        match reply(&r.request) {
            Reply::Find(x) => self.m.handle_find_coordinator(r.id, x, now),
            Reply::Init(code, pid, epoch) => self.m.handle_init_producer_id(r.id, code, pid, epoch, now),
            Reply::AddPartitions(x) => self.m.handle_add_partitions(r.id, &x, now),
            Reply::AddOffsets(code) => self.m.handle_add_offsets(r.id, code, now),
            Reply::OffsetCommit(x) => self.m.handle_txn_offset_commit(r.id, &x, now),
            Reply::End(code, pid, epoch) => self.m.handle_end_txn(r.id, code, pid, epoch, now),
        }
        r.request
    }

    fn answer_ok(&mut self) -> TxnRequest {
        let node = NODES[0];
        self.answer(|r| match r {
            TxnRequest::FindCoordinator { .. } => Reply::Find(Ok(node)),
            other => error_reply(other, ErrorCode::NONE),
        })
    }
}

/// Java's producer takes INVALID_PRODUCER_ID_MAPPING from AddPartitionsToTxn, AddOffsetsToTxn or
/// EndTxn as an abortable error whose abort skips EndTxn and goes straight to InitProducerId with
/// the current producer id and epoch (KIP-360), which gets a producer id the coordinator knows.
/// It was fatal here: the instance could only be closed.
#[test]
fn regression_invalid_producer_id_mapping_is_abortable_and_the_abort_gets_a_new_producer_id() {
    for (at, v2) in [
        (Unmapped::AddPartitions, false),
        (Unmapped::AddOffsets, false),
        (Unmapped::EndTxnCommit, false),
        (Unmapped::EndTxnCommit, true),
        (Unmapped::EndTxnAbort, false),
        (Unmapped::EndTxnAbort, true),
    ] {
        let case = format!("{at:?} v{}", if v2 { 2 } else { 1 });
        let mut s = Scripted { m: TransactionManager::new(TxnConfig::new(TXN_ID)), now: Instant::now() };
        s.m.init().unwrap();
        s.answer_ok();
        s.answer(|_| Reply::Init(ErrorCode::NONE, PRODUCER_ID, 3));
        assert_eq!(s.m.state(), TxnState::Ready, "{case}");
        s.m.set_transaction_version(if v2 { 2 } else { 1 });
        s.m.begin().unwrap();
        let unmapped = |r: &TxnRequest| error_reply(r, ErrorCode::INVALID_PRODUCER_ID_MAPPING);
        match at {
            Unmapped::AddPartitions => {
                assert!(!s.m.add_partition(&tp(0)).unwrap());
                assert!(matches!(s.answer(unmapped), TxnRequest::AddPartitionsToTxn { .. }), "{case}");
            }
            Unmapped::AddOffsets => {
                let group = GroupMetadata {
                    group_id: GROUP.into(),
                    generation_id: 1,
                    member_id: "m".into(),
                    group_instance_id: None,
                };
                let offset = TxnOffset { offset: 5, leader_epoch: None, metadata: None };
                s.m.send_offsets(group, vec![(tp(0), offset)]).unwrap();
                assert!(matches!(s.answer(unmapped), TxnRequest::AddOffsetsToTxn { .. }), "{case}");
            }
            Unmapped::EndTxnCommit | Unmapped::EndTxnAbort => {
                if !s.m.add_partition(&tp(0)).unwrap() {
                    s.answer_ok();
                }
                assert!(s.m.add_partition(&tp(0)).unwrap(), "{case}");
                s.m.produce_settled(ProduceOutcome::Acknowledged);
                let commit = matches!(at, Unmapped::EndTxnCommit);
                if commit {
                    s.m.commit(0).unwrap();
                } else {
                    s.m.abort(0).unwrap();
                }
                let sent = s.answer(unmapped);
                assert!(matches!(sent, TxnRequest::EndTxn { commit: c, .. } if c == commit), "{case}: {sent:?}");
            }
        }
        let aborting = matches!(at, Unmapped::EndTxnAbort);
        if !aborting {
            assert_eq!(s.m.state(), TxnState::AbortableError, "{case}: {:?}", s.m.error());
            s.m.abort(0).unwrap();
        }
        // No EndTxn for a producer id the coordinator does not know: the bump comes next.
        let sent = s.answer(|_| Reply::Init(ErrorCode::NONE, PRODUCER_ID + 1, 0));
        assert!(
            matches!(sent, TxnRequest::InitProducerId { producer_id: PRODUCER_ID, producer_epoch: 3, .. }),
            "{case}: {sent:?}"
        );
        assert_eq!(s.m.state(), TxnState::Ready, "{case}");
        assert_eq!(s.m.producer_id(), (PRODUCER_ID + 1, 0), "{case}");
        let events: Vec<TxnEvent> = std::iter::from_fn(|| s.m.poll_event()).collect();
        assert!(events.contains(&TxnEvent::Aborted), "{case}: {events:?}");
        assert!(
            events.contains(&TxnEvent::ProducerIdChanged { producer_id: PRODUCER_ID + 1, epoch: 0 }),
            "{case}: {events:?}"
        );
        s.m.begin().unwrap();
    }
}
