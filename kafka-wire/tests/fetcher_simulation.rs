//! Deterministic simulation of the consumer's fetcher (`proto::fetcher`): no tokio, no sockets,
//! time passed in. Each seed drives a `Fetcher` against a model cluster (`sim/fetch_model.rs`)
//! whose partition logs grow while faults are injected — clean leader moves, unclean leader
//! changes that truncate the log below what was read (the log diverges), metadata that lags,
//! aborted transactions read with read_committed, batches with a bad CRC, fetch sessions the
//! brokers evict (FETCH_SESSION_ID_NOT_FOUND / INVALID_FETCH_SESSION_EPOCH), and requests that
//! fail — then runs on without faults until everything is read.
//!
//! Invariants, checked as records come out and at the end:
//! - per partition, records come out in offset order and none twice (record ids are unique);
//! - nothing is skipped: every record the log holds past the last one handed out and before the
//!   next is one the consumer must not see (a control batch, an aborted transaction with
//!   read_committed, a corrupt batch it reported);
//! - with read_committed, no record of an aborted (or open) transaction;
//! - a corrupt batch is reported at an offset it holds;
//! - after a truncation the position goes back to the divergence point: the next record comes
//!   from there (with `auto.offset.reset=none`, the error names a divergence point at or below
//!   the position, and seeking there goes on);
//! - once the faults stop, every partition reaches the end of its log (no livelock).
//!
//! `FETCHER_SIM_SEEDS=N` runs N seeds (300 by default); `FETCHER_SIM_SEED=S` replays one.

#[path = "sim/fetch_model.rs"]
mod fetch_model;
#[path = "sim/model_broker.rs"]
mod model_broker;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use fetch_model::{record_id, FetchModel, Kind, Outcome, TOPIC};
use kafka_wire::codec::compression::Compression;
use kafka_wire::codec::messages::{FetchResponse, ListOffsetsResponse, MetadataResponse};
use kafka_wire::proto::driving::{RequestId, Target};
use kafka_wire::proto::fetcher::{
    prepare_fetch, Decompressed, EpochAnswer, FetchContext, FetchError, Fetcher, FetcherConfig, FetcherRequest,
    FetcherResponse, PositionStatus, ResetTo,
};
use kafka_wire::proto::producer::TopicPartition;
use model_broker::Rng;

const MS: Duration = Duration::from_millis(1);
const BROKERS: [i32; 3] = [1, 2, 3];

fn tp(p: usize) -> TopicPartition {
    TopicPartition::new(TOPIC, p as i32)
}

/// A run's settings, drawn from its seed.
#[derive(Clone, Debug)]
struct Scenario {
    partitions: usize,
    read_committed: bool,
    reset_none: bool,
    /// Per-step chances of each fault.
    fail_rate: f64,
    move_rate: f64,
    truncate_rate: f64,
    corrupt_rate: f64,
    evict_rate: f64,
    /// Chance, per Metadata answer and partition, that it shows the latest leader.
    announce_rate: f64,
    fault_time: Duration,
    /// Batches in each partition's log before the run: partitions with a backlog beside ones
    /// read to their end (and waiting at the broker for more).
    backlog: Vec<usize>,
}

impl Scenario {
    fn draw(rng: &mut Rng) -> Self {
        let partitions = rng.range(1, 4) as usize;
        Self {
            partitions,
            read_committed: rng.chance(0.6),
            reset_none: rng.chance(0.3),
            fail_rate: [0.0, 0.05, 0.2][rng.below(3) as usize],
            move_rate: [0.0, 0.005, 0.02][rng.below(3) as usize],
            truncate_rate: [0.0, 0.005, 0.02][rng.below(3) as usize],
            corrupt_rate: [0.0, 0.01, 0.03][rng.below(3) as usize],
            evict_rate: [0.0, 0.01, 0.05][rng.below(3) as usize],
            announce_rate: [0.3, 0.7, 1.0][rng.below(3) as usize],
            fault_time: Duration::from_millis(rng.range(1_000, 4_000)),
            backlog: (0..partitions).map(|_| if rng.chance(0.5) { rng.range(0, 200) as usize } else { 0 }).collect(),
        }
    }
}

/// Counts of what happened, summed over seeds to show what the runs covered.
#[derive(Clone, Debug, Default)]
struct Stats {
    records: u64,
    truncations: u64,
    /// Records handed out again at an offset below one already handed out (after a truncation).
    rewinds: u64,
    truncation_errors: u64,
    corrupt_reports: u64,
    aborted_skipped: u64,
    moves: u64,
    evictions: u64,
    failed_requests: u64,
    session_errors: u64,
    out_of_range: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.records += o.records;
        self.truncations += o.truncations;
        self.rewinds += o.rewinds;
        self.truncation_errors += o.truncation_errors;
        self.corrupt_reports += o.corrupt_reports;
        self.aborted_skipped += o.aborted_skipped;
        self.moves += o.moves;
        self.evictions += o.evictions;
        self.failed_requests += o.failed_requests;
        self.session_errors += o.session_errors;
        self.out_of_range += o.out_of_range;
    }
}

/// What goes back to the fetcher when its time comes.
enum Event {
    Fetch(RequestId, Option<(FetchResponse, FetchContext)>),
    ListOffsets(RequestId, Option<ListOffsetsResponse>),
    Epoch(RequestId, EpochAnswer),
    Metadata(Option<MetadataResponse>),
    Decompressed(Decompressed),
}

/// The application's view, checked against the model.
struct Checker {
    read_committed: bool,
    delivered: HashMap<u64, (usize, i64)>,
    /// Per partition, the offset of the last record handed out that the log still holds
    /// (-1: none).
    last_live: Vec<i64>,
    /// Per partition, the highest offset ever handed out.
    highest: Vec<i64>,
    /// Per partition, offsets of corrupt batches the consumer reported.
    reported: Vec<HashSet<i64>>,
    /// Per partition: the position carries no leader epoch yet (set by a seek or a reset, nothing
    /// read since), so a truncation below it could not be detected (as in Kafka): the model
    /// does not truncate then.
    epochless: Vec<bool>,
}

impl Checker {
    fn new(partitions: usize, read_committed: bool) -> Self {
        Self {
            read_committed,
            delivered: HashMap::new(),
            last_live: vec![-1; partitions],
            highest: vec![-1; partitions],
            reported: vec![HashSet::new(); partitions],
            epochless: vec![true; partitions],
        }
    }

    /// Whether the records of a batch of this kind and outcome are ones the application must see.
    fn deliverable(&self, kind: &Kind, outcome: Outcome) -> bool {
        match kind {
            Kind::Data { .. } => {
                !self.read_committed || matches!(outcome, Outcome::NotTransactional | Outcome::Committed)
            }
            _ => false,
        }
    }

    /// Records of partition `p` handed out by one take, in order.
    fn records(
        &mut self,
        model: &FetchModel,
        p: usize,
        records: &[(i64, u64)],
        stats: &mut Stats,
    ) -> Result<(), String> {
        let log = &model.partitions[p];
        let outcomes = log.outcomes();
        for &(offset, id) in records {
            if let Some(before) = self.delivered.insert(id, (p, offset)) {
                return Err(format!(
                    "record {id} handed out twice (p{} @{} before, p{p} @{offset} now)",
                    before.0, before.1
                ));
            }
            if model.written.get(&id) != Some(&(p, offset)) {
                return Err(format!(
                    "record {id} at p{p} @{offset} was never written there ({:?})",
                    model.written.get(&id)
                ));
            }
            if offset < self.highest[p] {
                stats.rewinds += 1;
            }
            self.highest[p] = self.highest[p].max(offset);
            let found = Some(log.batches.partition_point(|b| b.end() <= offset))
                .filter(|i| log.batches.get(*i).is_some_and(|b| b.base <= offset));
            let live =
                found.is_some_and(|i| log.batches[i].ids.get((offset - log.batches[i].base) as usize) == Some(&id));
            if !live {
                // Read before the log was truncated under it: the consumer cannot know yet.
                continue;
            }
            let i = found.unwrap();
            let b = &log.batches[i];
            if b.kind == Kind::Corrupt {
                return Err(format!("p{p} @{offset}: a record of a corrupt batch was handed out"));
            }
            if self.read_committed && matches!(outcomes[i], Outcome::Aborted | Outcome::Open) {
                return Err(format!(
                    "p{p} @{offset}: record of a transaction {:?} handed out with read_committed",
                    outcomes[i]
                ));
            }
            if offset <= self.last_live[p] {
                return Err(format!("p{p}: @{offset} handed out after @{}", self.last_live[p]));
            }
            let first = log.batches.partition_point(|b| b.end() <= self.last_live[p] + 1);
            for (j, b) in log.batches.iter().enumerate().skip(first) {
                if b.base >= offset {
                    break;
                }
                let from = b.base.max(self.last_live[p] + 1);
                let to = b.end().min(offset);
                for o in from..to {
                    if b.kind == Kind::Corrupt && !self.reported[p].contains(&o) {
                        return Err(format!("p{p}: corrupt batch @{} passed without being reported (at @{o})", b.base));
                    }
                    if self.deliverable(&b.kind, outcomes[j]) {
                        return Err(format!("p{p}: @{o} skipped (handed out @{offset} after @{})", self.last_live[p]));
                    }
                    if matches!(b.kind, Kind::Data { transactional: true, .. }) && outcomes[j] == Outcome::Aborted {
                        stats.aborted_skipped += 1;
                    }
                }
            }
            self.last_live[p] = offset;
            self.epochless[p] = false;
        }
        Ok(())
    }

    fn truncated(&mut self, p: usize, at: i64) {
        self.last_live[p] = self.last_live[p].min(at - 1);
        self.reported[p].retain(|o| *o < at);
    }

    /// At the end: every record the application must see was handed out, every corrupt batch
    /// reported, and the position is at the log's end.
    fn complete(&self, model: &FetchModel, fetcher: &Fetcher) -> Result<(), String> {
        for (p, log) in model.partitions.iter().enumerate() {
            let outcomes = log.outcomes();
            for (i, b) in log.batches.iter().enumerate() {
                if b.kind == Kind::Corrupt {
                    if let Some(o) = (b.base..b.end()).find(|o| !self.reported[p].contains(o)) {
                        return Err(format!("p{p}: corrupt batch @{} never reported at @{o}", b.base));
                    }
                }
                if !self.deliverable(&b.kind, outcomes[i]) {
                    continue;
                }
                for (k, id) in b.ids.iter().enumerate() {
                    if !self.delivered.contains_key(id) {
                        return Err(format!("p{p}: record @{} (id {id}) never handed out", b.base + k as i64));
                    }
                }
            }
            let position = fetcher.position(&tp(p));
            if position != PositionStatus::At(log.end()) {
                return Err(format!("p{p}: position {position:?} at the end, the log ends at {}", log.end()));
            }
        }
        Ok(())
    }
}

struct Sim {
    seed: u64,
    rng: Rng,
    scenario: Scenario,
    now: Instant,
    start: Instant,
    model: FetchModel,
    fetcher: Fetcher,
    check: Checker,
    events: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Event>,
    next_event: u64,
    stats: Stats,
    /// Recent steps, printed with a failure.
    trace: Vec<String>,
    faults: bool,
    paused: Vec<bool>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let scenario = Scenario::draw(&mut rng);
        let config = FetcherConfig {
            auto_offset_reset: (!scenario.reset_none).then_some(ResetTo::Earliest),
            read_committed: scenario.read_committed,
            check_crcs: true,
            fetch_max_wait: 100 * MS,
            fetch_min_bytes: 1,
            fetch_max_bytes: rng.range(1_000, 20_000) as usize,
            max_partition_fetch_bytes: rng.range(200, 4_000) as usize,
            prefetch_max_bytes: rng.range(500, 50_000) as usize,
            client_rack: None,
            retry_backoff: 50 * MS,
            retry_backoff_max: 1000 * MS,
            metadata_max_age: 5000 * MS,
            backoff_seed: Some(seed),
        };
        let mut fetcher = Fetcher::new(config);
        fetcher.assign((0..scenario.partitions).map(tp));
        if scenario.reset_none {
            for p in 0..scenario.partitions {
                fetcher.seek(&tp(p), 0);
            }
        }
        let mut model = FetchModel::new(BROKERS.to_vec(), scenario.partitions);
        for (p, &batches) in scenario.backlog.iter().enumerate() {
            for _ in 0..batches {
                let count = rng.range(1, 5) as usize;
                model.append(p, Kind::Data { pid: -1, transactional: false }, count, Compression::None);
            }
        }
        let start = Instant::now();
        Self {
            seed,
            model,
            check: Checker::new(scenario.partitions, scenario.read_committed),
            paused: vec![false; scenario.partitions],
            rng,
            scenario,
            now: start,
            start,
            fetcher,
            events: BinaryHeap::new(),
            pending: HashMap::new(),
            next_event: 0,
            stats: Stats::default(),
            trace: Vec::new(),
            faults: true,
        }
    }

    fn log(&mut self, line: String) {
        if self.trace.len() >= trace_len() {
            self.trace.remove(0);
        }
        let t = self.now.duration_since(self.start).as_millis();
        self.trace.push(format!("{t:>6} ms  {line}"));
    }

    fn schedule(&mut self, after: Duration, event: Event) {
        self.next_event += 1;
        self.events.push(Reverse((self.now + after, self.next_event)));
        self.pending.insert(self.next_event, event);
    }

    fn latency(&mut self) -> Duration {
        Duration::from_millis(self.rng.range(1, 20))
    }

    fn fails(&mut self) -> bool {
        self.faults && self.rng.chance(self.scenario.fail_rate)
    }

    /// The producers' side: records, transactions, corrupt batches.
    fn produce(&mut self) {
        if !self.rng.chance(0.3) {
            return;
        }
        let p = self.rng.below(self.scenario.partitions as u64) as usize;
        // Mostly uncompressed: the codecs are slow in a debug build, and one of each kind is
        // enough to go through decompression ahead of the application.
        let compression = match self.rng.below(12) {
            0 => Compression::Lz4,
            1 => Compression::Gzip,
            2 => Compression::Zstd,
            3 => Compression::Snappy,
            _ => Compression::None,
        };
        let count = self.rng.range(1, 5) as usize;
        let open = self.model.partitions[p].open_transactions();
        let roll = self.rng.below(100);
        let kind = if self.rng.chance(self.scenario.corrupt_rate) {
            Kind::Corrupt
        } else if roll < 40 {
            Kind::Data { pid: -1, transactional: false }
        } else {
            let pid = self.rng.range(1, 2) as i64;
            if open.contains_key(&pid) && roll >= 75 {
                Kind::Marker { pid, commit: self.rng.chance(0.5) }
            } else {
                Kind::Data { pid, transactional: true }
            }
        };
        self.log(format!("append p{p} @{} {kind:?} x{count} {compression:?}", self.model.partitions[p].end()));
        self.model.append(p, kind, count, compression);
    }

    fn inject_faults(&mut self) {
        for p in 0..self.scenario.partitions {
            if self.rng.chance(self.scenario.move_rate) {
                let to = BROKERS[self.rng.below(3) as usize];
                self.model.move_leader(p, to);
                self.stats.moves += 1;
                self.log(format!("leader of p{p} moves to {to} (epoch {})", self.model.partitions[p].epoch));
            }
            let len = self.model.partitions[p].batches.len();
            // A corrupt batch is never truncated away: the application skips one it is told of
            // by seeking past it, which, were the batch no longer there, would skip what the
            // new leader wrote in its place (or seek past the log's end and reset).
            let first_truncatable =
                self.model.partitions[p].batches.iter().rposition(|b| b.kind == Kind::Corrupt).map_or(0, |i| i + 1);
            if len > first_truncatable && !self.check.epochless[p] && self.rng.chance(self.scenario.truncate_rate) {
                let keep = (len - self.rng.range(1, len.min(6) as u64) as usize).max(first_truncatable);
                let to = BROKERS[self.rng.below(3) as usize];
                let at = self.model.truncate(p, keep, to);
                self.check.truncated(p, at);
                self.stats.truncations += 1;
                self.log(format!(
                    "unclean leader change of p{p} to {to}: log truncated at @{at} (epoch {})",
                    self.model.partitions[p].epoch
                ));
            }
            if self.rng.chance(0.01) {
                self.paused[p] = !self.paused[p];
                self.fetcher.set_paused(&tp(p), self.paused[p]);
            }
        }
        if self.rng.chance(self.scenario.evict_rate) {
            let node = BROKERS[self.rng.below(3) as usize];
            self.model.evict_session(node);
            self.stats.evictions += 1;
            self.log(format!("broker {node} evicts its fetch session"));
        }
    }

    /// The application: takes records and deals with errors as an application would. Returns
    /// how many records it took.
    fn application(&mut self) -> Result<usize, String> {
        if !self.rng.chance(0.5) {
            return Ok(0);
        }
        if let Some(e) = self.fetcher.poll_error() {
            self.log(format!("poll error {e:?}"));
            return self.on_error(e).map(|()| 0);
        }
        let max = self.rng.range(1, 40) as usize;
        let mut by_partition: BTreeMap<usize, Vec<(i64, u64)>> = BTreeMap::new();
        let mut bad = None;
        self.fetcher.take(max, |tp, r, _, _| match r.value.as_deref().and_then(record_id) {
            Some(id) => by_partition.entry(tp.partition as usize).or_default().push((r.offset, id)),
            None => bad = Some(format!("{tp} @{}: a record without an id", r.offset)),
        });
        if let Some(bad) = bad {
            return Err(bad);
        }
        let mut took = 0;
        for (p, records) in by_partition {
            took += records.len();
            self.stats.records += records.len() as u64;
            self.log(format!("took p{p} {:?}", records.iter().map(|r| r.0).collect::<Vec<_>>()));
            self.check.records(&self.model, p, &records, &mut self.stats)?;
        }
        Ok(took)
    }

    fn on_error(&mut self, e: FetchError) -> Result<(), String> {
        match e {
            FetchError::Corrupt { tp, offset, .. } => {
                let p = tp.partition as usize;
                if !self.model.corrupt_written.contains(&(p, offset)) {
                    return Err(format!("corrupt batch reported at p{p} @{offset}, which never held one"));
                }
                self.stats.corrupt_reports += 1;
                self.check.reported[p].insert(offset);
                let live = self.model.partitions[p]
                    .batches
                    .iter()
                    .any(|b| b.kind == Kind::Corrupt && b.base <= offset && offset < b.end());
                if !live {
                    return Err(format!("corrupt batch reported at p{p} @{offset}, which the log no longer holds"));
                }
                // As applications do: skip the record and go on.
                self.fetcher.seek(&tp, offset + 1);
                self.check.epochless[p] = true;
                Ok(())
            }
            FetchError::LogTruncation { tp, position, divergent_offset, divergent_epoch } => {
                let p = tp.partition as usize;
                if !self.scenario.reset_none {
                    return Err(format!("{tp}: truncation error with auto.offset.reset=earliest"));
                }
                let Some(d) = divergent_offset else {
                    return Err(format!("{tp}: truncation below {position} without a divergence point"));
                };
                if d > position {
                    return Err(format!("{tp}: divergence point {d} above the position {position}"));
                }
                self.stats.truncation_errors += 1;
                // As Java applications do with a LogTruncationException's divergent offsets:
                // seek there with the epoch, which the next Fetch checks again.
                self.fetcher.seek_with_epoch(&tp, d, divergent_epoch);
                self.check.epochless[p] = divergent_epoch.is_none();
                Ok(())
            }
            FetchError::NoOffset { tp } => {
                // The application sought to a divergence point that a later truncation left
                // past the log's end (the position carries no epoch after a seek, so the
                // fetcher cannot tell, as in Kafka): out of range, and no reset policy.
                let p = tp.partition as usize;
                if !self.scenario.reset_none || !self.check.epochless[p] {
                    return Err(format!("{tp}: out of range without a seek that could explain it"));
                }
                self.stats.out_of_range += 1;
                self.fetcher.seek(&tp, self.check.last_live[p] + 1);
                Ok(())
            }
            e => Err(format!("unexpected poll error {e:?}")),
        }
    }

    /// Hands the fetcher's requests to the model brokers.
    fn send(&mut self) {
        if self.fetcher.poll_metadata(self.now, false).is_some() {
            let answer = if self.fails() {
                None
            } else {
                for p in 0..self.scenario.partitions {
                    if !self.faults || self.rng.chance(self.scenario.announce_rate) {
                        self.model.announce(p);
                    }
                }
                Some(self.model.metadata())
            };
            let after = self.latency();
            self.schedule(after, Event::Metadata(answer));
        }
        while let Some((id, target, request)) = self.fetcher.poll_request(self.now) {
            let Target::Node(node) = target else { panic!("the fetcher sends to given nodes: {target:?}") };
            let failed = self.fails();
            if failed {
                self.stats.failed_requests += 1;
            }
            let mut after = self.latency();
            let event = match request {
                FetcherRequest::Fetch(request, context) => {
                    let answer = (!failed).then(|| self.model.fetch(node, &request));
                    if let Some(a) = &answer {
                        if a.error_code != kafka_wire::codec::ErrorCode::NONE {
                            self.stats.session_errors += 1;
                            self.log(format!("fetch at {node}: {:?}", a.error_code));
                        } else if FetchContext::records_size(a) == 0 {
                            // The broker holds an empty fetch for fetch.max.wait.ms.
                            after += 100 * MS;
                        }
                    }
                    Event::Fetch(id, answer.map(|a| (a, context)))
                }
                FetcherRequest::ListOffsets(request) => {
                    Event::ListOffsets(id, (!failed).then(|| self.model.list_offsets(node, &request)))
                }
                FetcherRequest::OffsetForLeaderEpoch(request) => {
                    let answer = if failed {
                        EpochAnswer::Failed
                    } else {
                        EpochAnswer::Answered(self.model.offset_for_leader_epoch(node, &request))
                    };
                    Event::Epoch(id, answer)
                }
            };
            self.schedule(after, event);
        }
        if let Some(job) = self.fetcher.poll_decompression() {
            let done = job.run();
            self.schedule(MS, Event::Decompressed(done));
        }
    }

    fn deliver(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::Fetch(id, answer) => {
                let prepared = answer.map(|(a, context)| prepare_fetch(a, &context));
                self.fetcher.handle_response(id, FetcherResponse::Fetch(prepared), now);
            }
            Event::ListOffsets(id, answer) => {
                self.fetcher.handle_response(id, FetcherResponse::ListOffsets(answer), now)
            }
            Event::Epoch(id, answer) => {
                self.fetcher.handle_response(id, FetcherResponse::OffsetForLeaderEpoch(answer), now)
            }
            Event::Metadata(answer) => self.fetcher.handle_metadata(answer.as_ref(), now),
            Event::Decompressed(done) => self.fetcher.handle_decompressed(Some(done)),
        }
    }

    /// One step: the producers, the faults, the application, the requests, then time moves to
    /// the next event.
    fn step(&mut self) -> Result<(), String> {
        if self.faults {
            self.produce();
            self.inject_faults();
        }
        // The client's driver runs after every event, so it has planned what it can before the
        // application takes records.
        self.send();
        let took = self.application()?;
        // After a poll that returned records the client wakes its driver only if the fetcher
        // asks for it; a take that did not ask must have made room for nothing.
        if took > 0 && !self.fetcher.take_driver_wanted() {
            if let Some((_, target, request)) = self.fetcher.poll_request(self.now) {
                return Err(format!(
                    "a take made room for a request to {target:?} without waking the driver: {request:?}"
                ));
            }
            if self.fetcher.poll_decompression().is_some() {
                return Err("a take made room for decompression without waking the driver".into());
            }
        }
        self.send();
        let tick = self.now + Duration::from_millis(self.rng.range(1, 10));
        let next = self.events.peek().map(|Reverse((t, _))| *t);
        let wake = [Some(tick), next, self.fetcher.next_timeout(self.now)].into_iter().flatten().min().unwrap();
        self.now = self.now.max(wake);
        while let Some(Reverse((t, seq))) = self.events.peek().copied() {
            if t > self.now {
                break;
            }
            self.events.pop();
            let event = self.pending.remove(&seq).unwrap();
            self.deliver(event);
        }
        Ok(())
    }

    /// Faults stop: open transactions end, metadata catches up, paused partitions resume.
    fn calm(&mut self) {
        self.faults = false;
        for p in 0..self.scenario.partitions {
            for pid in self.model.partitions[p].open_transactions().into_keys().collect::<Vec<_>>() {
                let commit = self.rng.chance(0.5);
                self.model.append(p, Kind::Marker { pid, commit }, 1, Compression::None);
            }
            self.model.announce(p);
            self.paused[p] = false;
            self.fetcher.set_paused(&tp(p), false);
        }
        self.log("faults stop".into());
    }

    fn done(&self) -> bool {
        self.check.complete(&self.model, &self.fetcher).is_ok()
    }

    fn run(mut self) -> Result<Stats, String> {
        let result = (|| {
            while self.now.duration_since(self.start) < self.scenario.fault_time {
                self.step()?;
            }
            self.calm();
            let calm_since = self.now;
            let mut steps = 0u64;
            while steps % 16 != 0 || !self.done() {
                steps += 1;
                if self.now.duration_since(calm_since) > Duration::from_secs(60) {
                    return Err(format!(
                        "no progress 60 s after the faults stopped: {}",
                        self.check.complete(&self.model, &self.fetcher).unwrap_err()
                    ));
                }
                self.step()?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(self.stats),
            Err(e) => Err(format!(
                "seed {}: {e}\nscenario {:?}\nlast steps:\n{}\nreplay: FETCHER_SIM_SEED={} cargo test -p kafka-wire --test fetcher_simulation",
                self.seed,
                self.scenario,
                self.trace.join("\n"),
                self.seed
            )),
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn the_fetcher_reads_every_record_once_in_order_through_faults() {
    let seeds: Vec<u64> = match env_u64("FETCHER_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("FETCHER_SIM_SEEDS").unwrap_or(300)).collect(),
    };
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for &seed in &seeds {
        match Sim::new(seed).run() {
            Ok(stats) => total.add(&stats),
            Err(e) => failures.push((seed, e)),
        }
    }
    println!("{} seeds: {total:?}", seeds.len());
    if let Some((_, first)) = failures.first() {
        let failed: Vec<u64> = failures.iter().map(|(seed, _)| *seed).collect();
        panic!("{} of {} seeds failed ({failed:?}); the first:\n{first}", failures.len(), seeds.len());
    }
    if seeds.len() >= 100 {
        // The runs covered what they are meant to.
        for (what, n) in [
            ("truncations", total.truncations),
            ("rewinds after a truncation", total.rewinds),
            ("truncation errors", total.truncation_errors),
            ("corrupt batches reported", total.corrupt_reports),
            ("aborted records skipped", total.aborted_skipped),
            ("leader moves", total.moves),
            ("session errors", total.session_errors),
            ("failed requests", total.failed_requests),
        ] {
            assert!(n > 0, "no {what} in {} seeds: {total:?}", seeds.len());
        }
    }
}

/// Steps kept for a failure's report: `FETCHER_SIM_TRACE` (60 by default).
fn trace_len() -> usize {
    env_u64("FETCHER_SIM_TRACE").map_or(60, |n| n as usize)
}

/// A fetcher of one partition on node 1 of `model`, at position 0, with its first Fetch answered.
fn fetched(model: &mut FetchModel, mut config: FetcherConfig, now: Instant) -> Fetcher {
    config.auto_offset_reset = None;
    let mut f = Fetcher::new(config);
    f.assign([tp(0)]);
    f.seek(&tp(0), 0);
    f.handle_metadata(Some(&model.metadata()), now);
    let Some((id, Target::Node(1), FetcherRequest::Fetch(mut request, context))) = f.poll_request(now) else {
        panic!("no Fetch to node 1")
    };
    // Every batch in one answer, whatever fetch.max.bytes says.
    request.max_bytes = i32::MAX;
    let answer = model.fetch(1, &request);
    f.handle_response(id, FetcherResponse::Fetch(Some(prepare_fetch(answer, &context))), now);
    f
}

fn config() -> FetcherConfig {
    FetcherConfig {
        auto_offset_reset: Some(ResetTo::Earliest),
        read_committed: false,
        check_crcs: true,
        fetch_max_wait: 100 * MS,
        fetch_min_bytes: 1,
        fetch_max_bytes: 1 << 20,
        max_partition_fetch_bytes: 1 << 20,
        prefetch_max_bytes: 1 << 20,
        client_rack: None,
        retry_backoff: 50 * MS,
        retry_backoff_max: 1000 * MS,
        metadata_max_age: 5000 * MS,
        backoff_seed: Some(0),
    }
}

/// Found by the simulation: a decompression job charges each batch its decompressed
/// bytes plus a header against the bytes left of `fetch.max.bytes`, but lets a batch decompress
/// up to all that is left. After a batch that left less than a header's worth, the next batch's
/// limit `available - used` went below zero: the job panicked (a debug build; the consumer then
/// stopped with DriverFailed) or wrapped round to a limit far past the budget (release).
#[test]
fn regression_a_decompression_job_that_uses_up_its_budget_stops_there() {
    let mut model = FetchModel::new(vec![1], 1);
    for _ in 0..2 {
        model.append(0, Kind::Data { pid: -1, transactional: false }, 5, Compression::Lz4);
    }
    let first = kafka_wire::codec::record_batch::RecordBatch::parse(model.partitions[0].batches[0].bytes.clone())
        .unwrap()
        .records_data(usize::MAX)
        .unwrap()
        .len();
    // The first batch fits the budget; with its header counted, less than a header is left.
    let now = Instant::now();
    let mut f = fetched(&mut model, FetcherConfig { fetch_max_bytes: first + 10, ..config() }, now);
    let mut offsets = Vec::new();
    for _ in 0..10 {
        if let Some(job) = f.poll_decompression() {
            let done = job.run();
            f.handle_decompressed(Some(done));
        }
        f.take(100, |_, r, _, _| offsets.push(r.offset));
    }
    assert_eq!(offsets, (0..10).collect::<Vec<i64>>(), "both batches, in order, the second once the first was taken");
    assert_eq!(f.poll_error(), None);
}

/// Answers whatever the fetcher asks of `model` at once, `rounds` times, announcing the model's
/// leaders in every Metadata answer.
fn settle(f: &mut Fetcher, model: &mut FetchModel, now: Instant, rounds: usize) {
    for _ in 0..rounds {
        if f.poll_metadata(now, false).is_some() {
            for p in 0..model.partitions.len() {
                model.announce(p);
            }
            f.handle_metadata(Some(&model.metadata()), now);
        }
        let requests: Vec<_> = std::iter::from_fn(|| f.poll_request(now)).collect();
        for (id, target, request) in requests {
            let Target::Node(node) = target else { panic!("{target:?}") };
            let response = match request {
                FetcherRequest::Fetch(request, context) => {
                    FetcherResponse::Fetch(Some(prepare_fetch(model.fetch(node, &request), &context)))
                }
                FetcherRequest::ListOffsets(request) => {
                    FetcherResponse::ListOffsets(Some(model.list_offsets(node, &request)))
                }
                FetcherRequest::OffsetForLeaderEpoch(request) => FetcherResponse::OffsetForLeaderEpoch(
                    EpochAnswer::Answered(model.offset_for_leader_epoch(node, &request)),
                ),
            };
            f.handle_response(id, response, now);
        }
        if let Some(job) = f.poll_decompression() {
            let done = job.run();
            f.handle_decompressed(Some(done));
        }
    }
}

fn take_offsets(f: &mut Fetcher) -> Vec<i64> {
    let mut offsets = Vec::new();
    f.take(1000, |_, r, _, _| offsets.push(r.offset));
    offsets
}

/// Found by the simulation (seed 215 of an early version): with `auto.offset.reset=none`, a
/// truncation stops the partition with the divergence point; if the log is truncated again,
/// below that point, before the application seeks there, a seek without the epoch reads the new
/// leader's records from the old divergence point on and skips those below it. The error now
/// carries the divergence point's epoch, and a seek with it has the next Fetch check the log
/// again (KIP-595): the partition stops at the new divergence point instead.
#[test]
fn regression_a_second_truncation_before_the_application_seeks_is_detected() {
    let now = Instant::now();
    let mut model = FetchModel::new(vec![1], 1);
    for _ in 0..6 {
        model.append(0, Kind::Data { pid: -1, transactional: false }, 1, Compression::None);
    }
    let mut f = Fetcher::new(FetcherConfig { auto_offset_reset: None, ..config() });
    f.assign([tp(0)]);
    f.seek(&tp(0), 0);
    settle(&mut f, &mut model, now, 3);
    assert_eq!(take_offsets(&mut f), (0..6).collect::<Vec<i64>>());

    // An unclean leader change loses offsets 4 and 5; the new leader writes two more there.
    model.truncate(0, 4, 1);
    for _ in 0..2 {
        model.append(0, Kind::Data { pid: -1, transactional: false }, 1, Compression::None);
    }
    f.want_metadata();
    settle(&mut f, &mut model, now + 100 * MS, 3);
    let Some(FetchError::LogTruncation { position: 6, divergent_offset: Some(4), divergent_epoch, .. }) =
        f.poll_error()
    else {
        panic!("no truncation error at 4: {:?}", f.poll_error())
    };
    assert_eq!(divergent_epoch, Some(0));

    // Before the application seeks, another unclean change loses offset 3 and up.
    model.truncate(0, 3, 1);
    for _ in 0..3 {
        model.append(0, Kind::Data { pid: -1, transactional: false }, 1, Compression::None);
    }
    f.seek_with_epoch(&tp(0), 4, divergent_epoch);
    settle(&mut f, &mut model, now + 200 * MS, 3);
    assert_eq!(take_offsets(&mut f), Vec::<i64>::new(), "nothing past the new divergence point is read");
    let Some(FetchError::LogTruncation { position: 4, divergent_offset: Some(3), divergent_epoch, .. }) =
        f.poll_error()
    else {
        panic!("no truncation error at 3: {:?}", f.poll_error())
    };
    f.seek_with_epoch(&tp(0), 3, divergent_epoch);
    settle(&mut f, &mut model, now + 300 * MS, 3);
    assert_eq!(take_offsets(&mut f), vec![3, 4, 5], "the new leader's records, from the divergence point");
}

/// Found by the simulation (seed 476): uncompressed batches count as ready as soon as they are
/// fetched; behind a compressed batch they cannot be handed out until it is decompressed, yet
/// they counted against the decompression budget (`fetch.max.bytes`). With more of them than the
/// budget, the compressed batch in front waited for budget that only its own decompression could
/// free: the partition (and every other with a compressed batch) stopped for good, without an
/// error.
#[test]
fn regression_uncompressed_batches_behind_a_compressed_one_do_not_starve_it() {
    let mut model = FetchModel::new(vec![1], 1);
    model.append(0, Kind::Data { pid: -1, transactional: false }, 5, Compression::Lz4);
    for _ in 0..10 {
        model.append(0, Kind::Data { pid: -1, transactional: false }, 2, Compression::None);
    }
    let now = Instant::now();
    // A budget that the uncompressed batches fill (each takes 61 + 2 × 15 bytes or so).
    let mut f = fetched(&mut model, FetcherConfig { fetch_max_bytes: 400, ..config() }, now);
    let mut offsets = Vec::new();
    for _ in 0..10 {
        if let Some(job) = f.poll_decompression() {
            let done = job.run();
            f.handle_decompressed(Some(done));
        }
        f.take(100, |_, r, _, _| offsets.push(r.offset));
    }
    assert_eq!(offsets, (0..25).collect::<Vec<i64>>());
}

/// A broker whose Fetch fails is not asked again before the backoff (retry.backoff.ms, growing
/// with each failure in a row, KIP-580), and the fetcher says when that is; an answer resets it.
#[test]
fn a_failed_fetch_backs_off_before_the_node_is_asked_again() {
    let now = Instant::now();
    let mut model = FetchModel::new(vec![1], 1);
    model.append(0, Kind::Data { pid: -1, transactional: false }, 3, Compression::None);
    let mut f = Fetcher::new(FetcherConfig { auto_offset_reset: None, ..config() });
    f.assign([tp(0)]);
    f.seek(&tp(0), 0);
    f.handle_metadata(Some(&model.metadata()), now);
    let mut at = now;
    let mut delays = Vec::new();
    for _ in 0..3 {
        let Some((id, _, FetcherRequest::Fetch(..))) = f.poll_request(at) else { panic!("no Fetch at {at:?}") };
        f.handle_response(id, FetcherResponse::Fetch(None), at);
        assert!(f.poll_request(at).is_none(), "asked again at once after a failure");
        let until = f.next_timeout(at).expect("a timeout for the end of the backoff");
        assert!(f.poll_request(until - MS).is_none(), "asked again before the backoff ended");
        delays.push(until - at);
        at = until;
    }
    assert!(delays[0] >= 40 * MS && delays[0] <= 60 * MS, "first delay {:?}: retry.backoff.ms ± 20 %", delays[0]);
    assert!(delays[2] > delays[0], "the delay grows with failures in a row: {delays:?}");
    settle(&mut f, &mut model, at, 2);
    assert_eq!(take_offsets(&mut f), vec![0, 1, 2]);
}

/// A reset whose ListOffsets fails is asked again after retry.backoff.ms, not at once.
#[test]
fn a_failed_reset_is_retried_after_the_backoff() {
    let now = Instant::now();
    let mut model = FetchModel::new(vec![1], 1);
    model.append(0, Kind::Data { pid: -1, transactional: false }, 2, Compression::None);
    let mut f = Fetcher::new(config());
    f.assign([tp(0)]);
    f.handle_metadata(Some(&model.metadata()), now);
    let Some((id, _, FetcherRequest::ListOffsets(_))) = f.poll_request(now) else { panic!("no ListOffsets") };
    f.handle_response(id, FetcherResponse::ListOffsets(None), now);
    assert!(f.poll_request(now + 49 * MS).is_none(), "reset asked again within retry.backoff.ms");
    assert!(matches!(f.poll_request(now + 50 * MS), Some((_, _, FetcherRequest::ListOffsets(_)))));
}

/// Seen once in the handler runtime's exactly-once mode: a partition whose queued records were
/// dropped, sought back and resumed was never fetched again. Another partition was paused (its
/// worker's queue full) holding what it had fetched, and paused partitions' buffers counted
/// against `queued.max.messages.kbytes` (no Fetch went out at all while it was exceeded) and
/// their ready bytes against `fetch.max.bytes` (no decompression for anyone): while the other
/// stayed paused, the resumed one got nothing. A paused partition's buffer now holds up no one
/// (it fetches nothing more, so what it keeps stays bounded).
#[test]
fn regression_a_partition_resumed_while_another_stays_paused_is_fetched_again() {
    // Uncompressed: the prefetch budget; compressed: the decompression budget.
    for (compression, budgets) in [
        (Compression::None, FetcherConfig { prefetch_max_bytes: 200, ..config() }),
        (Compression::Lz4, FetcherConfig { fetch_max_bytes: 200, max_partition_fetch_bytes: 200, ..config() }),
    ] {
        let now = Instant::now();
        let mut model = FetchModel::new(vec![1], 2);
        let append = |model: &mut FetchModel| {
            for p in 0..2 {
                for _ in 0..4 {
                    model.append(p, Kind::Data { pid: -1, transactional: false }, 5, compression);
                }
            }
        };
        append(&mut model);
        let mut f = Fetcher::new(FetcherConfig { auto_offset_reset: None, ..budgets });
        f.assign([tp(0), tp(1)]);
        f.seek(&tp(0), 0);
        f.seek(&tp(1), 0);
        let mut got: Vec<i64> = Vec::new();
        for i in 0..5 {
            settle(&mut f, &mut model, now + i * MS, 1);
            f.take(3, |tp, r, _, _| {
                if tp.partition == 0 {
                    got.push(r.offset);
                }
            });
        }
        // Both paused (their queues full); 0's queued records are dropped: it goes back to the
        // first of them and is resumed. 1 stays paused with what it fetched.
        f.set_paused(&tp(0), true);
        f.set_paused(&tp(1), true);
        let back = got[got.len() / 2];
        got.truncate(got.len() / 2);
        f.seek(&tp(0), back);
        f.set_paused(&tp(0), false);
        append(&mut model);
        for i in 0..20 {
            settle(&mut f, &mut model, now + (10 + i) * MS, 2);
            f.take(1000, |tp, r, _, _| {
                assert_eq!(tp.partition, 0, "a paused partition hands out nothing");
                got.push(r.offset);
            });
        }
        let end = model.partitions[0].end();
        assert_eq!(got, (0..end).collect::<Vec<i64>>(), "{compression}: partition 0 read to its end, once, in order");
    }
}

/// With one Fetch in flight per broker, what a Fetch asks for is what a round trip brings. Once
/// a partition runs low, the Fetch asks for every partition of its leader holding less than its
/// share of `queued.max.messages.kbytes`, not only that one: a consumer whose driver planned the
/// next Fetch as soon as an answer landed (the multi-thread runtime) otherwise asked for the
/// partitions of the previous answer and the others by turns, half as much per round trip
/// (issue #14: 3.8 MiB of 6 per Fetch, 1.6 M records/s where one thread read 4.6 M).
#[test]
fn a_fetch_asks_for_every_partition_under_its_share_not_only_the_one_that_ran_low() {
    const PARTITIONS: usize = 4;
    let mut model = FetchModel::new(vec![1], PARTITIONS);
    for p in 0..PARTITIONS {
        for _ in 0..10 {
            model.append(p, Kind::Data { pid: -1, transactional: false }, 5, Compression::None);
        }
    }
    let batch = model.partitions[0].batches[0].bytes.len();
    assert!(model.partitions.iter().all(|p| p.batches.iter().all(|b| b.bytes.len() == batch)), "equal batches");
    // Each Fetch brings two batches per partition: a partition's worth.
    let base = FetcherConfig { auto_offset_reset: None, max_partition_fetch_bytes: 2 * batch, ..config() };
    // A budget of many partitions' worth each, and one of exactly one partition's worth each.
    for (prefetch_max_bytes, others_fetched) in [(64 * batch, true), (PARTITIONS * 2 * batch, false)] {
        let now = Instant::now();
        let mut f = Fetcher::new(FetcherConfig { prefetch_max_bytes, ..base.clone() });
        f.assign((0..PARTITIONS).map(tp));
        for p in 0..PARTITIONS {
            f.seek(&tp(p), 0);
        }
        f.handle_metadata(Some(&model.metadata()), now);
        let answer = |f: &mut Fetcher, model: &mut FetchModel| {
            let Some((id, Target::Node(1), FetcherRequest::Fetch(request, context))) = f.poll_request(now) else {
                panic!("no Fetch to node 1")
            };
            f.handle_response(id, FetcherResponse::Fetch(Some(prepare_fetch(model.fetch(1, &request), &context))), now);
        };
        answer(&mut f, &mut model);
        assert!(f.poll_request(now).is_none(), "every partition holds a fetch's worth: no Fetch");

        // One batch of one partition handed out: that partition runs low.
        let mut low = None;
        assert_eq!(f.take(5, |tp, _, _, _| low = Some(tp.partition as usize)), 5);
        let low = low.expect("a partition");
        answer(&mut f, &mut model);

        let mut held = [0usize; PARTITIONS];
        f.take(usize::MAX, |tp, _, _, _| held[tp.partition as usize] += 1);
        for (p, &records) in held.iter().enumerate() {
            let expected = match (p == low, others_fetched) {
                (true, _) => 15,
                (false, true) => 20,
                (false, false) => 10,
            };
            assert_eq!(records, expected, "partition {p} (budget {prefetch_max_bytes} B, {low} ran low): {held:?}");
        }
    }
}

/// Found through `kw consume`: its metadata lookup of the topic let the consumer's driver run
/// before the partitions were assigned, so the driver's first Metadata request named no topic,
/// and the one naming the assigned topic waited out retry.backoff.ms (100 ms by default) before
/// the first fetch. A topic the last request did not name is asked for at once; one it did
/// name, and did not learn, waits out the backoff as before.
#[test]
fn regression_a_topic_assigned_after_a_metadata_request_is_asked_for_at_once() {
    let now = Instant::now();
    let model = FetchModel::new(vec![1], 1);
    let mut f = Fetcher::new(config());
    assert!(f.poll_metadata_for(now, &[]).is_some(), "the first request, before any assignment");
    f.handle_metadata(Some(&MetadataResponse::default()), now);
    f.assign([tp(0)]);
    let topics: Vec<std::sync::Arc<str>> = vec![TOPIC.into()];
    assert!(f.poll_metadata_for(now + MS, &topics).is_some(), "the newly assigned topic is asked for at once");
    f.handle_metadata(None, now + MS);
    assert!(f.poll_metadata_for(now + 2 * MS, &topics).is_none(), "asked again within the backoff");
    assert!(f.poll_metadata_for(now + 51 * MS, &topics).is_some(), "asked again after the backoff");
    f.handle_metadata(Some(&model.metadata()), now + 51 * MS);
    assert!(f.poll_metadata_for(now + 52 * MS, &topics).is_none(), "known: nothing to ask");
}

/// The backoff is skipped only for a topic that is both unknown and not asked for last time: a
/// known topic the last request did not name (learnt from an answer about more topics) does not
/// let an unknown one that was asked for be asked again at once.
#[test]
fn only_an_unknown_topic_not_asked_for_skips_the_metadata_backoff() {
    let now = Instant::now();
    let model = FetchModel::new(vec![1], 1);
    let mut f = Fetcher::new(config());
    assert!(f.poll_metadata_for(now, &[]).is_some());
    f.handle_metadata(Some(&model.metadata()), now);
    let missing: Vec<std::sync::Arc<str>> = vec!["missing".into()];
    assert!(f.poll_metadata_for(now + MS, &missing).is_some(), "a topic not asked for yet");
    f.handle_metadata(None, now + MS);
    let both: Vec<std::sync::Arc<str>> = vec![TOPIC.into(), "missing".into()];
    assert!(f.poll_metadata_for(now + 2 * MS, &both).is_none(), "the unknown topic was asked for: the backoff holds");
    assert!(f.poll_metadata_for(now + 51 * MS, &both).is_some());
}

/// Seen in `consume_bench` with a small `queued.max.messages.kbytes`: a run took 500 ms
/// (`fetch.max.wait.ms`) longer than the others. A Fetch that asks only for partitions already
/// read to their end waits at the broker for new records; with one Fetch in flight per broker,
/// a partition of that broker left out of it for its full buffer, with records still behind its
/// position, could not be fetched again until that wait ended. Such a Fetch now waits instead,
/// until the partition left out can go with it, and a take that brings it under its share wakes
/// the driver for that.
#[test]
fn regression_a_fetch_for_partitions_at_their_end_does_not_hold_back_one_with_records() {
    let mut model = FetchModel::new(vec![1], 2);
    for _ in 0..10 {
        model.append(0, Kind::Data { pid: -1, transactional: false }, 5, Compression::None);
    }
    model.append(1, Kind::Data { pid: -1, transactional: false }, 5, Compression::None);
    let batch = model.partitions[0].batches[0].bytes.len();
    // A Fetch brings two batches per partition; the budget is three batches per partition, so
    // a partition fetched twice holds its share and is left out of the next Fetch (with more
    // than a fetch's worth, so that only falling under the share can wake the driver).
    let now = Instant::now();
    let mut f = Fetcher::new(FetcherConfig {
        auto_offset_reset: None,
        max_partition_fetch_bytes: 2 * batch,
        prefetch_max_bytes: 6 * batch,
        ..config()
    });
    f.assign([tp(0), tp(1)]);
    f.seek(&tp(0), 0);
    f.seek(&tp(1), 0);
    f.handle_metadata(Some(&model.metadata()), now);
    let answer = |f: &mut Fetcher, model: &mut FetchModel| -> Vec<usize> {
        let Some((id, Target::Node(1), FetcherRequest::Fetch(request, context))) = f.poll_request(now) else {
            panic!("no Fetch to node 1")
        };
        let asked = request.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.partition as usize)).collect();
        f.handle_response(id, FetcherResponse::Fetch(Some(prepare_fetch(model.fetch(1, &request), &context))), now);
        asked
    };
    assert_eq!(answer(&mut f, &mut model), [0, 1]);
    assert_eq!(answer(&mut f, &mut model), [0, 1]);
    // Partition 1 is read to its end and holds less than a fetch's worth; partition 0 holds its
    // share (four batches), with six batches behind it.
    assert!(
        f.poll_request(now).is_none(),
        "a Fetch for partition 1 alone would wait at the broker, and partition 0 behind it"
    );

    // Records handed out one at a time: partition 0's sixth takes its second batch out of the
    // buffer, which leaves it under its share, and that wakes the driver.
    let mut taken = [0usize; 2];
    loop {
        assert!(f.poll_request(now).is_none(), "still nothing to fetch: {taken:?}");
        assert_eq!(f.take(1, |tp, _, _, _| taken[tp.partition as usize] += 1), 1, "{taken:?}");
        if f.take_driver_wanted() {
            break;
        }
    }
    assert_eq!(taken[0], 6, "woken when partition 0 fell under its share: {taken:?}");
    // (An incremental fetch session's request names only partition 0: partition 1's position
    // did not change since the last.)
    assert_eq!(answer(&mut f, &mut model), [0], "partition 0 asked for again");

    // Once nothing is behind any position, the Fetch waits at the broker as before.
    let mut offsets = vec![Vec::new(); 2];
    for _ in 0..20 {
        f.take(usize::MAX, |tp, r, _, _| offsets[tp.partition as usize].push(r.offset));
        if let Some((id, _, FetcherRequest::Fetch(request, context))) = f.poll_request(now) {
            f.handle_response(id, FetcherResponse::Fetch(Some(prepare_fetch(model.fetch(1, &request), &context))), now);
        }
    }
    assert_eq!(offsets[0].len() + taken[0], 50, "every record of partition 0");
    assert_eq!(offsets[1].len() + taken[1], 5, "every record of partition 1");
    assert!(f.poll_request(now).is_some(), "both read to their end: a Fetch waits at the broker for more");
}
