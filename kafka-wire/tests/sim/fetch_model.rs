//! A model Kafka cluster for the fetcher simulation: one topic whose partitions are in-memory
//! logs of record batches (encoded with the crate's own codec, so the fetcher reads exactly the
//! bytes a broker would send), with leader epochs and an epoch history per partition, leaders
//! that move (cleanly, or uncleanly with the log truncated and diverging from what was read),
//! transactions with commit and abort markers, batches with a bad CRC, and incremental fetch
//! sessions (KIP-227) that brokers may evict. The brokers answer Fetch, ListOffsets,
//! OffsetForLeaderEpoch and Metadata as Kafka 4.1 does for a consumer.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::compression::Compression;
use kafka_wire::codec::messages::fetch::{AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData};
use kafka_wire::codec::messages::list_offsets::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_wire::codec::messages::metadata::{MetadataResponsePartition, MetadataResponseTopic};
use kafka_wire::codec::messages::offset_for_leader_epoch::{
    EpochEndOffset as LeaderEpochEnd, OffsetForLeaderTopicResult,
};
use kafka_wire::codec::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use kafka_wire::codec::record_batch::{BatchBuilder, ControlRecord, ControlType, EndTxnMarker};
use kafka_wire::codec::{ErrorCode, Uuid};

pub const TOPIC: &str = "t";
pub const TOPIC_ID: Uuid = Uuid([7; 16]);

/// What a batch of a model log holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Records, of a transaction of `pid` when `transactional`.
    Data { pid: i64, transactional: bool },
    /// The COMMIT (`true`) or ABORT marker of `pid`'s transaction.
    Marker { pid: i64, commit: bool },
    /// Records whose CRC does not match: a consumer checking CRCs reports the batch.
    Corrupt,
}

#[derive(Clone, Debug)]
pub struct Batch {
    pub base: i64,
    pub count: i64,
    pub epoch: i32,
    pub kind: Kind,
    /// The record ids (one per record; values carry them), empty for a marker.
    pub ids: Vec<u64>,
    pub bytes: Bytes,
}

impl Batch {
    pub fn end(&self) -> i64 {
        self.base + self.count
    }
}

/// How a data record stands in the current log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    NotTransactional,
    Open,
    Committed,
    Aborted,
}

#[derive(Clone, Debug, Default)]
pub struct PartitionLog {
    pub batches: Vec<Batch>,
    /// (epoch, start offset), ascending.
    pub epochs: Vec<(i32, i64)>,
    pub leader: i32,
    pub epoch: i32,
    /// What Metadata answers say (it may lag behind a move).
    pub announced: (i32, i32),
}

impl PartitionLog {
    pub fn end(&self) -> i64 {
        self.batches.last().map_or(0, Batch::end)
    }

    /// The outcome of each batch's transaction (for data batches), by batch index.
    pub fn outcomes(&self) -> Vec<Outcome> {
        let mut out = vec![Outcome::NotTransactional; self.batches.len()];
        let mut open: HashMap<i64, Vec<usize>> = HashMap::new();
        for (i, b) in self.batches.iter().enumerate() {
            match b.kind {
                Kind::Data { pid, transactional: true } => {
                    open.entry(pid).or_default().push(i);
                    out[i] = Outcome::Open;
                }
                Kind::Marker { pid, commit } => {
                    for j in open.remove(&pid).unwrap_or_default() {
                        out[j] = if commit { Outcome::Committed } else { Outcome::Aborted };
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The first offset of each open transaction's first batch, by producer.
    pub fn open_transactions(&self) -> BTreeMap<i64, i64> {
        let mut open = BTreeMap::new();
        for b in &self.batches {
            match b.kind {
                Kind::Data { pid, transactional: true } => {
                    open.entry(pid).or_insert(b.base);
                }
                Kind::Marker { pid, .. } => {
                    open.remove(&pid);
                }
                _ => {}
            }
        }
        open
    }

    /// The last stable offset: the first offset of the oldest open transaction, else the end.
    pub fn last_stable_offset(&self) -> i64 {
        self.open_transactions().values().copied().min().unwrap_or_else(|| self.end())
    }

    /// Aborted transactions as (producer id, first offset, marker offset).
    pub fn aborted(&self) -> Vec<(i64, i64, i64)> {
        let mut first: HashMap<i64, i64> = HashMap::new();
        let mut out = Vec::new();
        for b in &self.batches {
            match b.kind {
                Kind::Data { pid, transactional: true } => {
                    first.entry(pid).or_insert(b.base);
                }
                Kind::Marker { pid, commit } => {
                    if let Some(f) = first.remove(&pid) {
                        if !commit {
                            out.push((pid, f, b.base));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The largest epoch at or below `epoch` and the offset where it ends (Kafka's
    /// `LeaderEpochFileCache.endOffsetFor`); (-1, -1) if there is none.
    pub fn end_offset_for(&self, epoch: i32) -> (i32, i64) {
        let Some(i) = self.epochs.iter().rposition(|(e, _)| *e <= epoch) else { return (-1, -1) };
        let end = self.epochs.get(i + 1).map_or_else(|| self.end(), |(_, start)| *start);
        (self.epochs[i].0, end)
    }
}

/// A broker's fetch session.
#[derive(Clone, Debug)]
struct Session {
    id: i32,
    next_epoch: i32,
    /// Per partition: (fetch offset, max bytes, current leader epoch, last fetched epoch).
    partitions: BTreeMap<i32, (i64, i32, i32, i32)>,
}

pub struct FetchModel {
    pub brokers: Vec<i32>,
    pub partitions: Vec<PartitionLog>,
    sessions: HashMap<i32, Session>,
    next_session: i32,
    next_id: u64,
    max_epoch: i32,
    /// Every record ever written: its partition and offset.
    pub written: HashMap<u64, (usize, i64)>,
    /// Every (partition, offset) ever held by a corrupt batch.
    pub corrupt_written: std::collections::HashSet<(usize, i64)>,
}

fn record_value(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// The record id a value carries.
pub fn record_id(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

impl FetchModel {
    pub fn new(brokers: Vec<i32>, partitions: usize) -> Self {
        let partitions = (0..partitions)
            .map(|p| {
                let leader = brokers[p % brokers.len()];
                PartitionLog { epochs: vec![(0, 0)], leader, epoch: 0, announced: (leader, 0), ..Default::default() }
            })
            .collect();
        Self {
            brokers,
            partitions,
            sessions: HashMap::new(),
            next_session: 1,
            next_id: 1,
            max_epoch: 0,
            written: HashMap::new(),
            corrupt_written: Default::default(),
        }
    }

    /// Appends a batch of `count` records (or a marker) to `partition`, at the leader's epoch.
    pub fn append(&mut self, partition: usize, kind: Kind, count: usize, compression: Compression) {
        let (base, epoch) = (self.partitions[partition].end(), self.partitions[partition].epoch);
        let mut b = BatchBuilder::new(base);
        b.set_partition_leader_epoch(epoch);
        let mut ids = Vec::new();
        let (count, compression) = match kind {
            Kind::Data { pid, transactional } => {
                if pid >= 0 {
                    b.set_producer_state(pid, 0, base as i32).set_transactional(transactional);
                }
                for _ in 0..count {
                    let id = self.next_id;
                    self.next_id += 1;
                    ids.push(id);
                    b.push(base, None, Some(&record_value(id)), &[]).unwrap();
                }
                (count, compression)
            }
            Kind::Marker { pid, commit } => {
                b.set_producer_state(pid, 0, -1).set_transactional(true).set_control(true);
                let key = ControlRecord::new(if commit { ControlType::COMMIT } else { ControlType::ABORT }).encode();
                let value = EndTxnMarker { version: 0, coordinator_epoch: 0 }.encode();
                b.push(base, Some(&key), Some(&value), &[]).unwrap();
                (1, Compression::None)
            }
            Kind::Corrupt => {
                for _ in 0..count {
                    let id = self.next_id;
                    self.next_id += 1;
                    ids.push(id);
                    b.push(base, None, Some(&record_value(id)), &[]).unwrap();
                }
                (count, Compression::None)
            }
        };
        for (i, id) in ids.iter().enumerate() {
            self.written.insert(*id, (partition, base + i as i64));
        }
        let mut bytes = BytesMut::from(&b.finish(compression)[..]);
        if kind == Kind::Corrupt {
            for i in 0..count as i64 {
                self.corrupt_written.insert((partition, base + i));
            }
            // The last byte of the last record's value: the CRC no longer matches.
            let last = bytes.len() - 1;
            bytes[last] ^= 0xFF;
        }
        let batch = Batch { base, count: count as i64, epoch, kind, ids, bytes: bytes.freeze() };
        self.partitions[partition].batches.push(batch);
    }

    /// A clean leader change: another broker leads from the log's end, at a new epoch.
    pub fn move_leader(&mut self, partition: usize, to: i32) {
        self.max_epoch += 1;
        let epoch = self.max_epoch.max(self.partitions[partition].epoch + 1);
        self.max_epoch = epoch;
        let log = &mut self.partitions[partition];
        log.leader = to;
        log.epoch = epoch;
        let end = log.end();
        log.epochs.push((epoch, end));
    }

    /// An unclean leader change: the new leader's log ends at the batch boundary `at` (what
    /// followed is lost) and continues at a new epoch from there. Transactions whose marker was
    /// lost are ended again with the same outcome (the coordinator writes its markers until
    /// they are written). Returns the truncation offset.
    pub fn truncate(&mut self, partition: usize, keep_batches: usize, to: i32) -> i64 {
        let log = &mut self.partitions[partition];
        let lost = log.batches.split_off(keep_batches);
        let at = log.end();
        log.epochs.retain(|(_, start)| *start < at || *start == 0);
        self.max_epoch += 1;
        let epoch = self.max_epoch.max(log.epoch + 1);
        self.max_epoch = epoch;
        log.leader = to;
        log.epoch = epoch;
        log.epochs.push((epoch, at));
        // The marker that ended each transaction left open by the truncation, if it was ended.
        let reopened: Vec<(i64, bool)> = log
            .open_transactions()
            .into_iter()
            .filter_map(|(pid, first)| {
                lost.iter().find_map(|b| match b.kind {
                    Kind::Marker { pid: p, commit } if p == pid && b.base > first => Some((pid, commit)),
                    _ => None,
                })
            })
            .collect();
        for (pid, commit) in reopened {
            self.append(partition, Kind::Marker { pid, commit }, 1, Compression::None);
        }
        at
    }

    /// Metadata catches up: what Metadata answers show for `partition` is its current leader.
    pub fn announce(&mut self, partition: usize) {
        let log = &mut self.partitions[partition];
        log.announced = (log.leader, log.epoch);
    }

    /// The broker `node` forgets its fetch session.
    pub fn evict_session(&mut self, node: i32) {
        self.sessions.remove(&node);
    }

    pub fn metadata(&self) -> MetadataResponse {
        let partitions = self
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| MetadataResponsePartition {
                partition_index: i as i32,
                leader_id: p.announced.0,
                leader_epoch: p.announced.1,
                replica_nodes: self.brokers.clone(),
                isr_nodes: self.brokers.clone(),
                ..Default::default()
            })
            .collect();
        MetadataResponse {
            topics: vec![MetadataResponseTopic {
                name: Some(TOPIC.into()),
                topic_id: TOPIC_ID,
                partitions,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// The error a request about `partition` gets at `node` with `current_leader_epoch`.
    fn leader_error(&self, node: i32, partition: i32, current_leader_epoch: i32) -> Option<ErrorCode> {
        let Some(log) = usize::try_from(partition).ok().and_then(|p| self.partitions.get(p)) else {
            return Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        };
        if log.leader != node {
            return Some(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        if current_leader_epoch >= 0 && current_leader_epoch < log.epoch {
            return Some(ErrorCode::FENCED_LEADER_EPOCH);
        }
        if current_leader_epoch > log.epoch {
            return Some(ErrorCode::UNKNOWN_LEADER_EPOCH);
        }
        None
    }

    pub fn list_offsets(&self, node: i32, request: &ListOffsetsRequest) -> ListOffsetsResponse {
        let topics = request
            .topics
            .iter()
            .map(|t| ListOffsetsTopicResponse {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut r = ListOffsetsPartitionResponse {
                            partition_index: p.partition_index,
                            offset: -1,
                            timestamp: -1,
                            leader_epoch: -1,
                            ..Default::default()
                        };
                        if let Some(code) = self.leader_error(node, p.partition_index, p.current_leader_epoch) {
                            r.error_code = code;
                            return r;
                        }
                        let log = &self.partitions[p.partition_index as usize];
                        r.offset = match p.timestamp {
                            -2 => 0,
                            -1 if request.isolation_level == 1 => log.last_stable_offset(),
                            _ => log.end(),
                        };
                        r.leader_epoch = log.epoch;
                        r
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        ListOffsetsResponse { topics, ..Default::default() }
    }

    pub fn offset_for_leader_epoch(
        &self,
        node: i32,
        request: &OffsetForLeaderEpochRequest,
    ) -> OffsetForLeaderEpochResponse {
        let topics = request
            .topics
            .iter()
            .map(|t| OffsetForLeaderTopicResult {
                topic: t.topic.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut r = LeaderEpochEnd {
                            partition: p.partition,
                            leader_epoch: -1,
                            end_offset: -1,
                            ..Default::default()
                        };
                        if let Some(code) = self.leader_error(node, p.partition, p.current_leader_epoch) {
                            r.error_code = code;
                            return r;
                        }
                        let (epoch, end) = self.partitions[p.partition as usize].end_offset_for(p.leader_epoch);
                        r.leader_epoch = epoch;
                        r.end_offset = end;
                        r
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        OffsetForLeaderEpochResponse { topics, ..Default::default() }
    }

    /// A Fetch at broker `node`, with its session rules (KIP-227).
    pub fn fetch(&mut self, node: i32, request: &FetchRequest) -> FetchResponse {
        let mut wanted: BTreeMap<i32, (i64, i32, i32, i32)> = BTreeMap::new();
        for t in &request.topics {
            for p in &t.partitions {
                wanted.insert(
                    p.partition,
                    (p.fetch_offset, p.partition_max_bytes, p.current_leader_epoch, p.last_fetched_epoch),
                );
            }
        }
        let forgotten: Vec<i32> = request.forgotten_topics_data.iter().flat_map(|t| t.partitions.clone()).collect();
        let (session_id, partitions) = match (request.session_id, request.session_epoch) {
            (0, -1) => (0, wanted),
            (0, 0) => {
                let id = self.next_session;
                self.next_session += 1;
                self.sessions.insert(node, Session { id, next_epoch: 1, partitions: wanted.clone() });
                (id, wanted)
            }
            (id, epoch) => {
                let Some(s) = self.sessions.get_mut(&node).filter(|s| s.id == id) else {
                    return FetchResponse { error_code: ErrorCode::FETCH_SESSION_ID_NOT_FOUND, ..Default::default() };
                };
                if s.next_epoch != epoch {
                    return FetchResponse { error_code: ErrorCode::INVALID_FETCH_SESSION_EPOCH, ..Default::default() };
                }
                s.next_epoch += 1;
                for p in &forgotten {
                    s.partitions.remove(p);
                }
                s.partitions.extend(wanted);
                (id, s.partitions.clone())
            }
        };
        let read_committed = request.isolation_level == 1;
        let mut budget = request.max_bytes.max(0) as usize;
        let partitions = partitions
            .into_iter()
            .map(|(partition, (fetch_offset, max_bytes, current_leader_epoch, last_fetched_epoch))| {
                let mut r = PartitionData {
                    partition_index: partition,
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    diverging_epoch: EpochEndOffset { epoch: -1, end_offset: -1, ..Default::default() },
                    preferred_read_replica: -1,
                    ..Default::default()
                };
                if let Some(code) = self.leader_error(node, partition, current_leader_epoch) {
                    r.error_code = code;
                    return r;
                }
                let log = &self.partitions[partition as usize];
                r.high_watermark = log.end();
                r.last_stable_offset = log.last_stable_offset();
                r.log_start_offset = 0;
                if last_fetched_epoch >= 0 {
                    let (epoch, end) = log.end_offset_for(last_fetched_epoch);
                    if epoch < last_fetched_epoch || end < fetch_offset {
                        r.diverging_epoch.epoch = epoch;
                        r.diverging_epoch.end_offset = end;
                        return r;
                    }
                }
                if fetch_offset < 0 || fetch_offset > log.end() {
                    r.error_code = ErrorCode::OFFSET_OUT_OF_RANGE;
                    return r;
                }
                let limit = if read_committed { log.last_stable_offset() } else { log.end() };
                let mut records = BytesMut::new();
                let mut last = None;
                for b in log.batches.iter().filter(|b| b.end() > fetch_offset && b.end() <= limit) {
                    if !records.is_empty()
                        && (records.len() + b.bytes.len() > max_bytes.max(0) as usize
                            || records.len() + b.bytes.len() > budget)
                    {
                        break;
                    }
                    records.extend_from_slice(&b.bytes);
                    last = Some(b.end() - 1);
                }
                budget = budget.saturating_sub(records.len());
                if read_committed {
                    let upper = last.unwrap_or(fetch_offset);
                    r.aborted_transactions = Some(
                        log.aborted()
                            .into_iter()
                            .filter(|(_, first, marker)| *first <= upper && *marker >= fetch_offset)
                            .map(|(pid, first, _)| AbortedTransaction {
                                producer_id: pid,
                                first_offset: first,
                                ..Default::default()
                            })
                            .collect(),
                    );
                }
                r.records = Some(records.freeze());
                r
            })
            .collect();
        FetchResponse {
            session_id,
            responses: vec![FetchableTopicResponse {
                topic: TOPIC.into(),
                topic_id: TOPIC_ID,
                partitions,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}
