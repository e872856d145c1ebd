//! Operation sequences against the fetcher (`proto::fetcher::Fetcher`) and the model brokers of
//! `kafka-wire/tests/fetcher_simulation.rs` (`tests/sim/fetch_model.rs`): producers append
//! records, transactions, markers and corrupt batches (any codec); leaders move, logs are
//! truncated by unclean leader changes, brokers evict fetch sessions; requests are answered in
//! any order, lost, or answered twice; Metadata lags; decompression jobs run late or are lost;
//! partitions pause and resume; the application takes records and handles errors as the
//! simulation's does. After the faults stop, everything must be handed out within a minute.
//! Checked as in the simulation: no record handed out twice, each where it was written, in order
//! with nothing deliverable skipped, no record of a corrupt batch, none of an aborted or open
//! transaction under read_committed, every corrupt batch reported, the position at the end.
#![no_main]

#[path = "../../kafka-wire/tests/sim/fetch_model.rs"]
mod fetch_model;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use fetch_model::{record_id, FetchModel, Kind, Outcome, TOPIC};
use kafka_wire::codec::compression::Compression;
use kafka_wire::codec::messages::{FetchResponse, ListOffsetsResponse, MetadataResponse};
use kafka_wire::proto::driving::{RequestId, Target};
use kafka_wire::proto::fetcher::{
    prepare_fetch, EpochAnswer, FetchContext, FetchError, Fetcher, FetcherConfig, FetcherRequest, FetcherResponse,
    PositionStatus, ResetTo,
};
use kafka_wire::proto::producer::TopicPartition;
use libfuzzer_sys::fuzz_target;

const MS: Duration = Duration::from_millis(1);
const BROKERS: [i32; 3] = [1, 2, 3];
/// Bounds on the work per input.
const MAX_OPS: usize = 256;
const MAX_BATCHES: usize = 64;

fn tp(p: usize) -> TopicPartition {
    TopicPartition::new(TOPIC, p as i32)
}

#[derive(Arbitrary, Debug)]
struct Input {
    partitions: u8,
    read_committed: bool,
    reset_none: bool,
    fetch_max_bytes: u16,
    max_partition_fetch_bytes: u16,
    prefetch_max_bytes: u16,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// kind: 0-3 plain data, 4-5 transactional data of pid 1/2, 6-7 a marker of pid 1/2 (commit
    /// or abort by `commit`) when its transaction is open, 8 a corrupt batch.
    Append {
        partition: u8,
        kind: u8,
        count: u8,
        codec: u8,
        commit: bool,
    },
    MoveLeader {
        partition: u8,
        to: u8,
    },
    /// An unclean leader change: the last `drop` batches are lost.
    Truncate {
        partition: u8,
        drop: u8,
        to: u8,
    },
    Evict {
        node: u8,
    },
    /// The fetcher's requests go out; `lose` says which are lost (bit per request).
    Send {
        lose: u8,
        announce: u8,
    },
    /// Pending answer `idx` arrives (any order); `twice` delivers a Fetch answer twice.
    Deliver {
        idx: u8,
        twice: bool,
    },
    /// A decompression job runs (or its worker is lost).
    Decompress {
        lost: bool,
    },
    Take {
        max: u8,
    },
    Pause {
        partition: u8,
        paused: bool,
    },
    Advance {
        ms: u16,
    },
}

enum Answer {
    Fetch(RequestId, Option<(FetchResponse, FetchContext)>),
    ListOffsets(RequestId, Option<ListOffsetsResponse>),
    Epoch(RequestId, EpochAnswer),
    Metadata(Option<MetadataResponse>),
}

struct Checker {
    read_committed: bool,
    delivered: HashMap<u64, (usize, i64)>,
    last_live: Vec<i64>,
    reported: Vec<HashSet<i64>>,
    epochless: Vec<bool>,
}

impl Checker {
    fn deliverable(&self, kind: &Kind, outcome: Outcome) -> bool {
        match kind {
            Kind::Data { .. } => {
                !self.read_committed || matches!(outcome, Outcome::NotTransactional | Outcome::Committed)
            }
            _ => false,
        }
    }

    fn records(&mut self, model: &FetchModel, p: usize, records: &[(i64, u64)]) {
        let log = &model.partitions[p];
        let outcomes = log.outcomes();
        for &(offset, id) in records {
            if let Some(before) = self.delivered.insert(id, (p, offset)) {
                panic!("record {id} handed out twice (p{} @{} before, p{p} @{offset} now)", before.0, before.1);
            }
            assert_eq!(
                model.written.get(&id),
                Some(&(p, offset)),
                "record {id} at p{p} @{offset} was never written there"
            );
            let found = Some(log.batches.partition_point(|b| b.end() <= offset))
                .filter(|i| log.batches.get(*i).is_some_and(|b| b.base <= offset));
            let Some(i) =
                found.filter(|i| log.batches[*i].ids.get((offset - log.batches[*i].base) as usize) == Some(&id))
            else {
                // Read before the log was truncated under it.
                continue;
            };
            let b = &log.batches[i];
            assert!(b.kind != Kind::Corrupt, "p{p} @{offset}: a record of a corrupt batch was handed out");
            assert!(
                !(self.read_committed && matches!(outcomes[i], Outcome::Aborted | Outcome::Open)),
                "p{p} @{offset}: record of a transaction {:?} handed out with read_committed",
                outcomes[i]
            );
            assert!(offset > self.last_live[p], "p{p}: @{offset} handed out after @{}", self.last_live[p]);
            let first = log.batches.partition_point(|b| b.end() <= self.last_live[p] + 1);
            for (j, b) in log.batches.iter().enumerate().skip(first) {
                if b.base >= offset {
                    break;
                }
                for o in b.base.max(self.last_live[p] + 1)..b.end().min(offset) {
                    assert!(
                        b.kind != Kind::Corrupt || self.reported[p].contains(&o),
                        "p{p}: corrupt batch @{} passed without being reported (at @{o})",
                        b.base
                    );
                    assert!(
                        !self.deliverable(&b.kind, outcomes[j]),
                        "p{p}: @{o} skipped (handed out @{offset} after @{})",
                        self.last_live[p]
                    );
                }
            }
            self.last_live[p] = offset;
            self.epochless[p] = false;
        }
    }

    fn complete(&self, model: &FetchModel, fetcher: &Fetcher) -> Result<(), String> {
        for (p, log) in model.partitions.iter().enumerate() {
            let outcomes = log.outcomes();
            for (i, b) in log.batches.iter().enumerate() {
                if b.kind == Kind::Corrupt {
                    if let Some(o) = (b.base..b.end()).find(|o| !self.reported[p].contains(o)) {
                        return Err(format!("p{p}: corrupt batch @{} never reported at @{o}", b.base));
                    }
                }
                if self.deliverable(&b.kind, outcomes[i]) {
                    if let Some(k) = b.ids.iter().position(|id| !self.delivered.contains_key(id)) {
                        return Err(format!("p{p}: record @{} never handed out", b.base + k as i64));
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

struct Harness {
    partitions: usize,
    reset_none: bool,
    now: Instant,
    model: FetchModel,
    fetcher: Fetcher,
    check: Checker,
    pending: Vec<Answer>,
}

impl Harness {
    fn new(input: &Input) -> Self {
        let partitions = input.partitions as usize % 3 + 1;
        let config = FetcherConfig {
            auto_offset_reset: (!input.reset_none).then_some(ResetTo::Earliest),
            read_committed: input.read_committed,
            check_crcs: true,
            fetch_max_wait: 100 * MS,
            fetch_min_bytes: 1,
            // The simulation's ranges. fetch.max.bytes is also the decompression budget: a batch
            // that alone decompresses past it is reported corrupt by design, so it stays above
            // what the model's batches (at most 5 small records) decompress to.
            fetch_max_bytes: 1_000 + input.fetch_max_bytes as usize % 19_000,
            max_partition_fetch_bytes: 200 + input.max_partition_fetch_bytes as usize % 3_800,
            prefetch_max_bytes: 500 + input.prefetch_max_bytes as usize % 49_500,
            client_rack: None,
            retry_backoff: 50 * MS,
            retry_backoff_max: 1000 * MS,
            metadata_max_age: 5000 * MS,
            backoff_seed: Some(0),
        };
        let mut fetcher = Fetcher::new(config);
        fetcher.assign((0..partitions).map(tp));
        if input.reset_none {
            for p in 0..partitions {
                fetcher.seek(&tp(p), 0);
            }
        }
        Self {
            partitions,
            reset_none: input.reset_none,
            now: Instant::now(),
            model: FetchModel::new(BROKERS.to_vec(), partitions),
            fetcher,
            check: Checker {
                read_committed: input.read_committed,
                delivered: HashMap::new(),
                last_live: vec![-1; partitions],
                reported: vec![HashSet::new(); partitions],
                epochless: vec![true; partitions],
            },
            pending: Vec::new(),
        }
    }

    fn send(&mut self, lose: u8, announce: u8) {
        let mut n = 0;
        let mut lost = || {
            n += 1;
            lose & (1 << (n % 8)) != 0
        };
        if self.fetcher.poll_metadata(self.now, false).is_some() {
            let answer = if lost() {
                None
            } else {
                for p in 0..self.partitions {
                    if announce & (1 << p) != 0 {
                        self.model.announce(p);
                    }
                }
                Some(self.model.metadata())
            };
            self.pending.push(Answer::Metadata(answer));
        }
        while let Some((id, target, request)) = self.fetcher.poll_request(self.now) {
            let Target::Node(node) = target else { panic!("the fetcher sends to given nodes: {target:?}") };
            let failed = lost();
            let answer = match request {
                FetcherRequest::Fetch(request, context) => {
                    Answer::Fetch(id, (!failed).then(|| (self.model.fetch(node, &request), context)))
                }
                FetcherRequest::ListOffsets(request) => {
                    Answer::ListOffsets(id, (!failed).then(|| self.model.list_offsets(node, &request)))
                }
                FetcherRequest::OffsetForLeaderEpoch(request) => Answer::Epoch(
                    id,
                    if failed {
                        EpochAnswer::Failed
                    } else {
                        EpochAnswer::Answered(self.model.offset_for_leader_epoch(node, &request))
                    },
                ),
            };
            self.pending.push(answer);
        }
    }

    fn deliver(&mut self, i: usize, twice: bool) {
        let now = self.now;
        match self.pending.remove(i) {
            Answer::Fetch(id, answer) => {
                if twice {
                    let again = answer.as_ref().map(|(a, context)| prepare_fetch(a.clone(), context));
                    self.fetcher.handle_response(id, FetcherResponse::Fetch(again), now);
                }
                let prepared = answer.map(|(a, context)| prepare_fetch(a, &context));
                self.fetcher.handle_response(id, FetcherResponse::Fetch(prepared), now);
            }
            Answer::ListOffsets(id, answer) => {
                self.fetcher.handle_response(id, FetcherResponse::ListOffsets(answer), now)
            }
            Answer::Epoch(id, answer) => {
                self.fetcher.handle_response(id, FetcherResponse::OffsetForLeaderEpoch(answer), now)
            }
            Answer::Metadata(answer) => self.fetcher.handle_metadata(answer.as_ref(), now),
        }
    }

    fn decompress(&mut self, lost: bool) {
        if let Some(job) = self.fetcher.poll_decompression() {
            let done = (!lost).then(|| job.run());
            self.fetcher.handle_decompressed(done);
        }
    }

    fn take(&mut self, max: usize) {
        if let Some(e) = self.fetcher.poll_error() {
            self.on_error(e);
            return;
        }
        let mut by_partition: BTreeMap<usize, Vec<(i64, u64)>> = BTreeMap::new();
        self.fetcher.take(max, |tp, r, _, _| {
            let id = r.value.as_deref().and_then(record_id).expect("a record without an id");
            by_partition.entry(tp.partition as usize).or_default().push((r.offset, id));
        });
        for (p, records) in by_partition {
            self.check.records(&self.model, p, &records);
        }
    }

    fn on_error(&mut self, e: FetchError) {
        match e {
            FetchError::Corrupt { tp, offset, .. } => {
                let p = tp.partition as usize;
                assert!(
                    self.model.corrupt_written.contains(&(p, offset)),
                    "corrupt batch reported at p{p} @{offset}, which never held one"
                );
                self.check.reported[p].insert(offset);
                self.fetcher.seek(&tp, offset + 1);
                self.check.epochless[p] = true;
            }
            FetchError::LogTruncation { tp, position, divergent_offset, divergent_epoch } => {
                assert!(self.reset_none, "{tp}: truncation error with auto.offset.reset=earliest");
                let d = divergent_offset.expect("a truncation error without a divergence point");
                assert!(d <= position, "{tp}: divergence point {d} above the position {position}");
                self.fetcher.seek_with_epoch(&tp, d, divergent_epoch);
                self.check.epochless[tp.partition as usize] = divergent_epoch.is_none();
            }
            FetchError::NoOffset { tp } => {
                let p = tp.partition as usize;
                assert!(
                    self.reset_none && self.check.epochless[p],
                    "{tp}: out of range without a seek that could explain it"
                );
                self.fetcher.seek(&tp, self.check.last_live[p] + 1);
            }
            e => panic!("unexpected poll error {e:?}"),
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Append { partition, kind, count, codec, commit } => {
                let p = partition as usize % self.partitions;
                if self.model.partitions[p].batches.len() >= MAX_BATCHES {
                    return;
                }
                let compression = match codec % 8 {
                    0 => Compression::Lz4,
                    1 => Compression::Gzip,
                    2 => Compression::Zstd,
                    3 => Compression::Snappy,
                    _ => Compression::None,
                };
                let open = self.model.partitions[p].open_transactions();
                let kind = match kind % 9 {
                    0..=3 => Kind::Data { pid: -1, transactional: false },
                    4 | 5 => Kind::Data { pid: (kind % 9 - 3) as i64, transactional: true },
                    6 | 7 if open.contains_key(&((kind % 9 - 5) as i64)) => {
                        Kind::Marker { pid: (kind % 9 - 5) as i64, commit }
                    }
                    8 => Kind::Corrupt,
                    _ => return,
                };
                self.model.append(p, kind, count as usize % 5 + 1, compression);
            }
            Op::MoveLeader { partition, to } => {
                self.model.move_leader(partition as usize % self.partitions, BROKERS[to as usize % 3]);
            }
            Op::Truncate { partition, drop, to } => {
                let p = partition as usize % self.partitions;
                let batches = &self.model.partitions[p].batches;
                // As in the simulation: never below a corrupt batch (the application skipped it by
                // seeking past), nor while the position has no epoch (undetectable, as in Kafka).
                let first = batches.iter().rposition(|b| b.kind == Kind::Corrupt).map_or(0, |i| i + 1);
                let len = batches.len();
                if len > first && !self.check.epochless[p] {
                    let keep = (len - (drop as usize % len.min(6) + 1)).max(first);
                    let at = self.model.truncate(p, keep, BROKERS[to as usize % 3]);
                    self.check.last_live[p] = self.check.last_live[p].min(at - 1);
                    self.check.reported[p].retain(|o| *o < at);
                }
            }
            Op::Evict { node } => self.model.evict_session(BROKERS[node as usize % 3]),
            Op::Send { lose, announce } => self.send(lose, announce),
            Op::Deliver { idx, twice } => {
                if !self.pending.is_empty() {
                    self.deliver(idx as usize % self.pending.len(), twice);
                }
            }
            Op::Decompress { lost } => self.decompress(lost),
            Op::Take { max } => self.take(max as usize + 1),
            Op::Pause { partition, paused } => {
                self.fetcher.set_paused(&tp(partition as usize % self.partitions), paused);
            }
            Op::Advance { ms } => self.now += Duration::from_millis(ms as u64 % 5_000),
        }
    }

    /// Faults stop: open transactions end, metadata catches up, partitions resume, every answer
    /// arrives. Everything must be handed out within a minute.
    fn calm(&mut self) {
        for p in 0..self.partitions {
            for pid in self.model.partitions[p].open_transactions().into_keys().collect::<Vec<_>>() {
                self.model.append(p, Kind::Marker { pid, commit: pid == 1 }, 1, Compression::None);
            }
            self.model.announce(p);
            self.fetcher.set_paused(&tp(p), false);
        }
        let start = self.now;
        loop {
            while !self.pending.is_empty() {
                self.deliver(0, false);
            }
            self.decompress(false);
            self.take(1000);
            match self.check.complete(&self.model, &self.fetcher) {
                Ok(()) => return,
                Err(e) => assert!(
                    self.now.duration_since(start) < Duration::from_secs(60),
                    "no progress 60 s after the faults stopped: {e}"
                ),
            }
            for p in 0..self.partitions {
                self.model.announce(p);
            }
            self.send(0, u8::MAX);
            let tick = self.now + 10 * MS;
            self.now = self.fetcher.next_timeout(self.now).map_or(tick, |t| t.min(tick)).max(self.now + MS);
        }
    }
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(&input);
    for op in input.ops.into_iter().take(MAX_OPS) {
        h.apply(op);
    }
    h.calm();
});
