//! Operation sequences against the idempotent producer core (`proto::producer::ProducerCore`)
//! and the model cluster of `kafka-wire/tests/producer_simulation.rs`: appends, drains, requests
//! that reach the broker or not, answers lost, duplicated, delayed (answered out of order) or
//! carrying any error code, leader moves the client learns late, forgotten producer state,
//! producer ids, pauses and time. At the end the network heals and everything must complete;
//! then the simulation's invariants hold: each record completes exactly once, an acknowledged
//! record is in the log exactly where its metadata says, acknowledged records are in append
//! order per partition, and the model saw no corrupt batch or stale epoch.
#![no_main]

#[path = "../../kafka-wire/tests/sim/model_broker.rs"]
mod model_broker;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_wire::codec::compression::Compression;
use kafka_wire::codec::ErrorCode;
use kafka_wire::proto::producer::{
    CoreConfig, Drained, PartitionResponse, PerRecord, ProduceFailure, ProducerCore, RecordData, RecordMetadata,
    RequestOutcome, TopicPartition,
};
use libfuzzer_sys::fuzz_target;
use model_broker::{Inject, ModelCluster};

const TOPIC: &str = "sim";
const BROKERS: [i32; 3] = [1, 2, 3];
const PARTITIONS: usize = 3;
/// Operations per input: bounds time per input.
const MAX_OPS: usize = 256;

/// Errors a partition leader answers before appending: the ones the core handles specially and
/// the ones it treats generically.
const BEFORE: [ErrorCode; 10] = [
    ErrorCode::NOT_LEADER_OR_FOLLOWER,
    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode::NOT_ENOUGH_REPLICAS,
    ErrorCode::REQUEST_TIMED_OUT,
    ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
    ErrorCode::UNKNOWN_PRODUCER_ID,
    ErrorCode::MESSAGE_TOO_LARGE,
    ErrorCode::CORRUPT_MESSAGE,
    ErrorCode::KAFKA_STORAGE_ERROR,
    ErrorCode::TOPIC_AUTHORIZATION_FAILED,
];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Fault {
    None,
    /// One of [`BEFORE`], without appending.
    Before(u8),
    /// Append, then answer NOT_ENOUGH_REPLICAS_AFTER_APPEND or REQUEST_TIMED_OUT.
    After(bool),
    ForgetProducer,
    /// Any code but NONE and DUPLICATE_SEQUENCE_NUMBER (which mean "written"), without
    /// appending.
    Any(i16),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Append {
        partition: u8,
        records: u8,
        filler: u8,
    },
    Advance {
        ms: u16,
    },
    /// Drain everything the core sends now.
    Send,
    Flush,
    /// The oldest request not yet arrived at the broker of in-flight request `idx` reaches it,
    /// with a fault per partition.
    Arrive {
        idx: u8,
        faults: [Fault; PARTITIONS],
    },
    /// The oldest request to the broker of request `idx` is answered (what the broker said if it
    /// arrived, else `Failed`); `keep` leaves it in flight so it is answered again later (a
    /// duplicate).
    Answer {
        idx: u8,
        keep: bool,
        extra_partition: bool,
    },
    /// Request `idx` is lost: timeout or connection loss.
    Lose {
        idx: u8,
    },
    LeaderMove {
        partition: u8,
        to: u8,
    },
    ClientLearns {
        partition: u8,
    },
    ClientForgets {
        partition: u8,
    },
    GiveProducerId {
        epoch_bump: bool,
    },
    Pause(bool),
}

struct InFlight {
    id: u64,
    node: i32,
    batches: Vec<(TopicPartition, Bytes)>,
    answer: Option<Vec<PartitionResponse>>,
}

type Completion = Result<RecordMetadata, ProduceFailure>;

struct Harness {
    core: ProducerCore<PerRecord<u64>>,
    model: ModelCluster,
    now: Instant,
    start: Instant,
    view: Vec<Option<i32>>,
    in_flight: Vec<InFlight>,
    next_id: u64,
    partition_of: Vec<i32>,
    done: BTreeMap<u64, Vec<Completion>>,
    next_pid: i64,
    /// A broker answered a code outside what the model produces.
    lied: bool,
}

fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new(TOPIC, partition)
}

fn record(id: u64, filler: usize, timestamp: i64) -> RecordData {
    let key = Bytes::copy_from_slice(&id.to_be_bytes());
    let mut value = BytesMut::with_capacity(8 + filler);
    value.put_slice(&id.to_be_bytes());
    value.put_bytes(b'x', filler);
    RecordData { key: Some(key), value: Some(value.freeze()), headers: Vec::new(), timestamp }
}

fn config() -> CoreConfig {
    CoreConfig {
        batch_size: 300,
        linger: Duration::from_millis(5),
        compression: Compression::None,
        compression_level: 0,
        max_request_size: 1 << 20,
        buffer_memory: 1 << 20,
        // As the client counts a record's completion and delivery slot.
        record_overhead: 104,
        delivery_timeout: Duration::from_secs(30),
        retry_backoff: Duration::from_millis(100),
        retry_backoff_max: Duration::from_secs(1),
        max_in_flight: 5,
        acks: -1,
        request_timeout: Duration::from_secs(5),
        idempotent: true,
        transactional: false,
        retries: u32::MAX,
    }
}

impl Harness {
    fn new() -> Self {
        let start = Instant::now();
        let mut core = ProducerCore::new(config()).with_backoff_seed(1);
        core.set_producer_id(1000, 0);
        let model = ModelCluster::new(BROKERS.to_vec(), PARTITIONS);
        let view = (0..PARTITIONS as i32).map(|i| Some(model.leader(i))).collect();
        Self {
            core,
            model,
            now: start,
            start,
            view,
            in_flight: Vec::new(),
            next_id: 0,
            partition_of: Vec::new(),
            done: BTreeMap::new(),
            next_pid: 1001,
            lied: false,
        }
    }

    fn poll(&mut self) {
        while let Some((id, r)) = self.core.poll_completion() {
            self.done.entry(id).or_default().push(r);
        }
    }

    fn send(&mut self) {
        let view = &self.view;
        let ready = self.core.ready(self.now, |t| view[t.partition as usize]);
        for node in ready.nodes {
            while let Some(d) = self.core.drain(node, self.now, |t| view[t.partition as usize]) {
                let d: Drained = d;
                let (id, node) = (d.id, d.node);
                self.in_flight.push(InFlight { id, node, batches: d.seal(), answer: None });
            }
        }
        self.poll();
    }

    fn pick(&self, idx: u8) -> Option<usize> {
        (!self.in_flight.is_empty()).then(|| idx as usize % self.in_flight.len())
    }

    /// The oldest request in flight to `i`'s broker: requests reach a broker, and its answers
    /// come back, in the order they were sent on the connection.
    fn first_to(&self, i: usize, unarrived: bool) -> usize {
        let node = self.in_flight[i].node;
        self.in_flight.iter().position(|r| r.node == node && !(unarrived && r.answer.is_some())).unwrap_or(i)
    }

    fn arrive(&mut self, i: usize, faults: &[Fault; PARTITIONS]) {
        let i = self.first_to(i, true);
        let r = &mut self.in_flight[i];
        if r.answer.is_some() {
            return;
        }
        let mut answer = Vec::new();
        for (t, bytes) in &r.batches {
            let p = t.partition as usize;
            let inject = match faults[p % PARTITIONS] {
                Fault::None => Inject::None,
                Fault::Before(c) => Inject::Before(BEFORE[c as usize % BEFORE.len()]),
                Fault::After(timeout) => Inject::After(if timeout {
                    ErrorCode::REQUEST_TIMED_OUT
                } else {
                    ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND
                }),
                Fault::ForgetProducer => Inject::ForgetProducer,
                Fault::Any(c) => {
                    let c = ErrorCode(c);
                    if c == ErrorCode::NONE || c == ErrorCode::DUPLICATE_SEQUENCE_NUMBER {
                        Inject::None
                    } else {
                        self.lied = true;
                        Inject::Before(c)
                    }
                }
            };
            let a = self.model.produce(r.node, t.partition, bytes, inject);
            answer.push(PartitionResponse {
                topic_partition: t.clone(),
                error: a.error,
                base_offset: a.base_offset,
                log_append_time: -1,
                message: None,
            });
        }
        r.answer = Some(answer);
    }

    fn answer(&mut self, i: usize, keep: bool, extra_partition: bool) {
        let i = self.first_to(i, false);
        let (id, outcome) = {
            let r = &self.in_flight[i];
            let outcome = match &r.answer {
                Some(a) => {
                    let mut a = a.clone();
                    if extra_partition {
                        // A partition never asked for, claiming success: ignored.
                        a.push(PartitionResponse {
                            topic_partition: tp(PARTITIONS as i32 + 7),
                            error: ErrorCode::NONE,
                            base_offset: 0,
                            log_append_time: -1,
                            message: None,
                        });
                    }
                    RequestOutcome::Response(a)
                }
                None => RequestOutcome::Failed,
            };
            (r.id, outcome)
        };
        if !keep {
            self.in_flight.remove(i);
        }
        self.core.handle_response(id, outcome, self.now);
        self.poll();
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Append { partition, records, filler } => {
                let p = partition as i32 % PARTITIONS as i32;
                for _ in 0..(records % 8) + 1 {
                    let id = self.next_id;
                    let ts = (self.now - self.start).as_millis() as i64;
                    match self.core.append(&tp(p), record(id, filler as usize, ts), id, self.now) {
                        Ok(_) => {
                            self.next_id += 1;
                            self.partition_of.push(p);
                        }
                        Err(_) => break,
                    }
                }
            }
            Op::Advance { ms } => {
                self.now += Duration::from_millis(ms as u64 % 10_000);
            }
            Op::Send => self.send(),
            Op::Flush => self.core.flush(),
            Op::Arrive { idx, faults } => {
                if let Some(i) = self.pick(idx) {
                    self.arrive(i, &faults);
                }
            }
            Op::Answer { idx, keep, extra_partition } => {
                if let Some(i) = self.pick(idx) {
                    self.answer(i, keep, extra_partition);
                }
            }
            Op::Lose { idx } => {
                if let Some(i) = self.pick(idx) {
                    let id = self.in_flight.remove(i).id;
                    self.core.handle_response(id, RequestOutcome::Failed, self.now);
                    self.poll();
                }
            }
            Op::LeaderMove { partition, to } => {
                let p = partition as i32 % PARTITIONS as i32;
                self.model.move_leader(p, BROKERS[to as usize % BROKERS.len()]);
            }
            Op::ClientLearns { partition } => {
                let p = partition as usize % PARTITIONS;
                self.view[p] = Some(self.model.leader(p as i32));
            }
            Op::ClientForgets { partition } => {
                self.view[partition as usize % PARTITIONS] = None;
            }
            Op::GiveProducerId { epoch_bump } => {
                if self.core.needs_producer_id() {
                    let (pid, epoch) = self.core.producer_id();
                    if epoch_bump && pid >= 0 && (0..i16::MAX).contains(&epoch) {
                        self.core.set_producer_id(pid, epoch + 1);
                    } else {
                        self.core.set_producer_id(self.next_pid, 0);
                        self.next_pid += 1;
                    }
                }
            }
            Op::Pause(paused) => self.core.set_paused(paused),
        }
    }

    /// The network heals: every request is answered as the broker answers, leaders are known,
    /// time passes. Everything must complete by the delivery timeout.
    fn heal(&mut self) {
        self.core.set_paused(false);
        self.core.flush();
        for round in 0..400 {
            if self.core.needs_producer_id() {
                self.core.set_producer_id(self.next_pid, 0);
                self.next_pid += 1;
            }
            for p in 0..PARTITIONS {
                self.view[p] = Some(self.model.leader(p as i32));
            }
            while !self.in_flight.is_empty() {
                self.arrive(0, &[Fault::None; PARTITIONS]);
                self.answer(0, false, false);
            }
            self.send();
            if self.core.is_idle() && self.in_flight.is_empty() {
                return;
            }
            assert!(round < 399, "not idle after the network healed and 200 s passed");
            self.now += Duration::from_millis(500);
        }
    }

    fn check(&self) {
        let mut at: HashMap<u64, Vec<(i32, i64)>> = HashMap::new();
        for (p, part) in self.model.partitions.iter().enumerate() {
            for e in &part.log {
                at.entry(e.record_id).or_default().push((p as i32, e.offset));
            }
        }
        for id in 0..self.next_id {
            let places = at.get(&id).cloned().unwrap_or_default();
            if !self.lied {
                assert!(places.len() <= 1, "record {id} is in the log {} times: {places:?}", places.len());
            }
            let rs = self.done.get(&id).cloned().unwrap_or_default();
            assert_eq!(rs.len(), 1, "record {id} completions: {rs:?}");
            if let Ok(m) = &rs[0] {
                let p = self.partition_of[id as usize];
                assert_eq!(m.topic_partition, tp(p), "record {id} acked on the wrong partition");
                assert!(
                    places.contains(&(p, m.offset)),
                    "record {id} acked at p{p}@{} but the log has {places:?}",
                    m.offset
                );
            }
        }
        for (p, part) in self.model.partitions.iter().enumerate() {
            let acked: Vec<u64> = part
                .log
                .iter()
                .map(|e| e.record_id)
                .filter(|id| self.done.get(id).is_some_and(|r| r[0].is_ok()))
                .collect();
            assert!(acked.windows(2).all(|w| w[0] < w[1]), "p{p}: acked out of order: {acked:?}");
        }
        assert!(self.model.violations.is_empty(), "{:?}", self.model.violations);
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut h = Harness::new();
    for op in ops.into_iter().take(MAX_OPS) {
        h.apply(op);
    }
    h.heal();
    h.check();
});
