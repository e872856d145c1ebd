//! An in-process fake Kafka cluster that answers with faults a real broker will not produce on
//! demand, each scripted by the test: an error code for the next N requests of an API, a
//! throttle, the same answer twice, an answer with a correlation id never sent, a Produce answer
//! for a partition never asked for or missing one that was, a Metadata answer without the
//! topic's partitions or with a leader that is not a listed broker (or -1), an answer cut
//! mid-frame with the connection closed.
//!
//! Node ids are 1..=n on 127.0.0.1, each listed in Metadata. One topic with partitions whose
//! leaders the test sets (and may move). Every node serves ApiVersions, Metadata,
//! InitProducerId, Produce, FindCoordinator (node [`COORDINATOR`] for every key),
//! AddPartitionsToTxn (up to v3), EndTxn (up to v4, transactions v1), ListOffsets, Fetch (up to
//! v12, no fetch sessions; an empty answer waits up to `max_wait_ms` for an append), OffsetFetch (up to
//! v9) and OffsetCommit (up to v8; every commit is kept, [`FaultCluster::commits`]), and a classic
//! group of one member at a time (JoinGroup, SyncGroup, Heartbeat, LeaveGroup: whoever joins
//! last is the only member and its leader; no generation checks), a KIP-848 group of one member
//! at a time (ConsumerGroupHeartbeat: whoever joins with epoch 0 last is the member, with a new
//! epoch and every partition; a heartbeat of another member is answered UNKNOWN_MEMBER_ID, one
//! of an older epoch FENCED_MEMBER_EPOCH), and a transaction's offsets (AddOffsetsToTxn up to
//! v3, TxnOffsetCommit up to v4: the offsets become commits when EndTxn commits, and are
//! dropped when it aborts). Produce appends to a
//! per-partition log shared by all nodes (a replicated log), only on the partition's leader (the
//! others answer NOT_LEADER_OR_FOLLOWER): an idempotent batch whose base sequence is already in
//! the log is answered with the offset it got the first time, as Kafka does, and one out of
//! sequence with OUT_OF_ORDER_SEQUENCE_NUMBER, so the test can check that nothing acknowledged
//! was lost and nothing written twice ([`FaultCluster::log`]).
//!
//! ```ignore
//! #[path = "support/fault_cluster.rs"]
//! mod fault_cluster;
//! let cluster = FaultCluster::start(2, 2).await;
//! cluster.inject(ApiKey::PRODUCE, Fault::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER), 5);
//! ```

#![allow(dead_code)]

#[path = "frames.rs"]
mod frames;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use frames::{answer_api_versions, api, decode, respond};
use kafka_wire::codec::compression::Compression;
use kafka_wire::codec::frame::split_frame;
use kafka_wire::codec::messages::add_partitions_to_txn::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_wire::codec::messages::consumer_group_heartbeat::{Assignment, TopicPartitions};
use kafka_wire::codec::messages::fetch::{FetchableTopicResponse, PartitionData};
use kafka_wire::codec::messages::find_coordinator::Coordinator;
use kafka_wire::codec::messages::join_group::JoinGroupResponseMember;
use kafka_wire::codec::messages::list_offsets::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_wire::codec::messages::metadata::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_wire::codec::messages::offset_commit::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_wire::codec::messages::offset_fetch::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
};
use kafka_wire::codec::messages::produce::{PartitionProduceResponse, TopicProduceResponse};
use kafka_wire::codec::messages::txn_offset_commit::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_wire::codec::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    ApiVersionsRequest, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, EndTxnRequest, EndTxnResponse,
    FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    InitProducerIdRequest, InitProducerIdResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, ProduceRequest,
    ProduceResponse, SyncGroupRequest, SyncGroupResponse, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_wire::codec::record_batch::{BatchBuilder, RecordBatch, MAX_BUILDER_SIZE};
use kafka_wire::codec::{ApiKey, ErrorCode, Uuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The topic every node serves.
pub const TOPIC: &str = "faults";
pub const TOPIC_ID: Uuid = Uuid([0x7f; 16]);
/// The node every FindCoordinator names.
pub const COORDINATOR: i32 = 1;
/// The producer id InitProducerId hands out.
pub const PRODUCER_ID: i64 = 42;
const MAX_FRAME: usize = 16 << 20;

/// A topic's name and the partitions asked for.
type TopicAsked = (String, Vec<i32>);

/// One scripted fault, applied to one request of the API it was injected for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answered with this error code (every partition of a Produce or AddPartitionsToTxn, the
    /// top-level code of the others); nothing is appended.
    Error(ErrorCode),
    /// Answered normally, with this `throttle_time_ms`.
    Throttle(i32),
    /// Answered normally, and the same answer (same correlation id) written again.
    Duplicate,
    /// Answered normally, after an answer carrying a correlation id never sent.
    UnknownCorrelation,
    /// Produce: answered normally, plus an answer for a partition never asked for.
    ExtraPartition,
    /// Produce: the first partition asked for is left out of the answer (and not appended).
    MissingPartition,
    /// Handled (a Produce is appended), half its answer written, the connection closed.
    Truncate,
    /// Metadata: the topic listed without its partitions.
    NoPartitions,
    /// Metadata: every partition's leader is node 99, which is not in the broker list.
    LeaderNotListed,
    /// Metadata: every partition's leader is -1 (an election under way).
    NoLeader,
}

/// One batch appended to a partition's log.
#[derive(Clone, Debug)]
pub struct Appended {
    pub base_offset: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub values: Vec<Bytes>,
    /// The batch as written (its base offset as the producer sent it).
    pub bytes: Bytes,
}

#[derive(Default)]
struct State {
    faults: HashMap<i16, VecDeque<Fault>>,
    logs: HashMap<i32, Vec<Appended>>,
    /// Requests read, by API key.
    counts: HashMap<i16, u64>,
    /// `committed` of each EndTxn that ended a transaction (answered without a fault).
    ended: Vec<bool>,
    /// Partitions were added to a transaction not ended yet.
    open: bool,
    /// Every offset commit accepted: `(group, partition, offset)`, in order.
    commits: Vec<(String, i32, i64)>,
    /// The classic group: its generation, and member ids handed out so far.
    generation: i32,
    members: u32,
    /// The assignment the leader gave in its last SyncGroup.
    assignment: Bytes,
    /// Offsets of the open transaction (TxnOffsetCommit), by `(group, partition)`: a retry
    /// overwrites, as in Kafka.
    txn_offsets: BTreeMap<(String, i32), i64>,
    /// The KIP-848 group: its epoch and its one member.
    group_epoch: i32,
    consumer_member: Option<String>,
}

struct Shared {
    ports: Vec<u16>,
    /// The leader of each partition (index = partition).
    leaders: Vec<AtomicI32>,
    state: Mutex<State>,
    /// Notified after every request a node read.
    changed: Notify,
    /// Notified after every append, for Fetch long polls.
    appended: Notify,
}

/// A running fault cluster; its tasks end with the test's runtime.
#[derive(Clone)]
pub struct FaultCluster {
    shared: Arc<Shared>,
}

impl FaultCluster {
    /// Binds `nodes` listeners and serves [`TOPIC`] with `partitions` partitions, partition `p`
    /// led by node `p % nodes + 1`.
    pub async fn start(nodes: usize, partitions: i32) -> Self {
        let mut listeners = Vec::new();
        for _ in 0..nodes {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1"));
        }
        let shared = Arc::new(Shared {
            ports: listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect(),
            leaders: (0..partitions).map(|p| AtomicI32::new(p % nodes as i32 + 1)).collect(),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            appended: Notify::new(),
        });
        for (i, listener) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    let _ = sock.set_nodelay(true);
                    tokio::spawn(serve(sock, shared.clone(), i as i32 + 1));
                }
            });
        }
        Self { shared }
    }

    /// `127.0.0.1:<port>` of node `id` (1-based).
    pub fn addr(&self, id: i32) -> String {
        format!("127.0.0.1:{}", self.shared.ports[id as usize - 1])
    }

    /// The next `times` requests of `api` (on any node) get `fault`, after those already queued.
    pub fn inject(&self, api: ApiKey, fault: Fault, times: usize) {
        let mut state = lock(&self.shared.state);
        state.faults.entry(api.0).or_default().extend(std::iter::repeat_n(fault, times));
    }

    /// Faults injected for `api` not yet applied.
    pub fn pending(&self, api: ApiKey) -> usize {
        lock(&self.shared.state).faults.get(&api.0).map_or(0, VecDeque::len)
    }

    /// Makes `node` the leader of `partition`, in Metadata and in how the nodes answer Produce.
    pub fn set_leader(&self, partition: i32, node: i32) {
        self.shared.leaders[partition as usize].store(node, Ordering::Release);
    }

    /// Requests of `api` read so far, on all nodes.
    pub fn count(&self, api: ApiKey) -> u64 {
        lock(&self.shared.state).counts.get(&api.0).copied().unwrap_or(0)
    }

    /// The log of `partition`.
    pub fn log(&self, partition: i32) -> Vec<Appended> {
        lock(&self.shared.state).logs.get(&partition).cloned().unwrap_or_default()
    }

    /// The values of `partition`'s log, in offset order.
    pub fn values(&self, partition: i32) -> Vec<String> {
        self.log(partition)
            .iter()
            .flat_map(|b| b.values.iter().map(|v| String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    /// Writes `values` (no keys) at the end of `partition`, one batch, as a non-idempotent
    /// producer would.
    pub fn append(&self, partition: i32, values: &[String]) {
        let mut b = BatchBuilder::new(0);
        for v in values {
            b.push(1_700_000_000_000, None, Some(v.as_bytes()), &[]).expect("record fits");
        }
        let appended = append(&mut lock(&self.shared.state), partition, b.finish(Compression::None));
        assert_eq!(appended.0, ErrorCode::NONE, "the fake appends its own batch");
        self.shared.appended.notify_waiters();
    }

    /// Writes a round of `per_partition` records `<tag>-<p>-<i>` to every partition (one batch
    /// each); returns them per partition.
    pub fn write_round(&self, per_partition: usize, tag: &str) -> Vec<Vec<String>> {
        (0..self.shared.leaders.len() as i32)
            .map(|p| {
                let values: Vec<String> = (0..per_partition).map(|i| format!("{tag}-{p}-{i}")).collect();
                self.append(p, &values);
                values
            })
            .collect()
    }

    /// Every offset commit accepted: `(group, partition, offset)`, in order.
    pub fn commits(&self) -> Vec<(String, i32, i64)> {
        lock(&self.shared.state).commits.clone()
    }

    /// `committed` of every EndTxn that ended a transaction, in order (a retry of one already
    /// ended is not counted again).
    pub fn ended(&self) -> Vec<bool> {
        lock(&self.shared.state).ended.clone()
    }

    /// Waits (without polling) until `done` holds; panics after `within` naming `what`.
    pub async fn wait_until(&self, what: &str, within: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            assert!(
                tokio::time::timeout_at(deadline, changed).await.is_ok(),
                "timed out after {within:?} waiting for {what}"
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(mut sock: TcpStream, shared: Arc<Shared>, node: i32) {
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Ok(Some(frame)) = split_frame(&mut inbuf, MAX_FRAME) {
            fetch_long_poll(&frame, &shared).await;
            let mut out = BytesMut::new();
            let handled = handle(frame, &shared, node, &mut out);
            shared.changed.notify_waiters();
            match handled {
                None => return,
                Some(true) => {
                    let _ = sock.write_all(&out).await;
                    return;
                }
                Some(false) => {
                    if sock.write_all(&out).await.is_err() {
                        return;
                    }
                }
            }
        }
        match sock.read_buf(&mut inbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// For a Fetch with nothing to return (every partition at its log end), waits up to its
/// `max_wait_ms` for an append, as a broker does.
async fn fetch_long_poll(frame: &Bytes, shared: &Shared) {
    let mut frame = frame.clone();
    if frame.len() < 4 || i16::from_be_bytes([frame[0], frame[1]]) != ApiKey::FETCH.0 {
        return;
    }
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Some((_, request)) = decode::<FetchRequest>(&mut frame, version) else { return };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.clamp(0, 5_000) as u64);
    loop {
        let appended = shared.appended.notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let idle = {
            let state = lock(&shared.state);
            request.topics.iter().flat_map(|t| &t.partitions).all(|p| p.fetch_offset >= log_end(&state, p.partition))
        };
        if !idle || tokio::time::timeout_at(deadline, appended).await.is_err() {
            return;
        }
    }
}

fn log_end(state: &State, partition: i32) -> i64 {
    state.logs.get(&partition).map_or(0, |log| log.iter().map(|b| b.values.len() as i64).sum())
}

/// Writes the answer to `out`, applying the fault it was scripted: `Some(true)` closes the
/// connection after writing `out`.
fn finish(out: &mut BytesMut, fault: Option<Fault>, correlation_id: i32, answer: impl Fn(&mut BytesMut, i32)) -> bool {
    match fault {
        Some(Fault::UnknownCorrelation) => {
            answer(out, correlation_id.wrapping_add(1_000_000));
            answer(out, correlation_id);
        }
        Some(Fault::Duplicate) => {
            answer(out, correlation_id);
            answer(out, correlation_id);
        }
        Some(Fault::Truncate) => {
            answer(out, correlation_id);
            out.truncate(out.len() / 2);
            return true;
        }
        _ => answer(out, correlation_id),
    }
    false
}

/// Appends the answer to one request to `out`; `None` closes the connection, `Some(true)` closes
/// it after `out` is written.
fn handle(mut frame: Bytes, shared: &Shared, node: i32, out: &mut BytesMut) -> Option<bool> {
    let api_key = ApiKey(i16::from_be_bytes([*frame.first()?, *frame.get(1)?]));
    let version = i16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]);
    let fault = {
        let mut state = lock(&shared.state);
        *state.counts.entry(api_key.0).or_default() += 1;
        state.faults.get_mut(&api_key.0).and_then(VecDeque::pop_front)
    };
    let error = match fault {
        Some(Fault::Error(code)) => code,
        _ => ErrorCode::NONE,
    };
    let throttle_time_ms = match fault {
        Some(Fault::Throttle(ms)) => ms,
        _ => 0,
    };
    let close = match api_key {
        ApiKey::API_VERSIONS => {
            let mut add = api::<AddPartitionsToTxnRequest>();
            add.max_version = 3;
            let mut end = api::<EndTxnRequest>();
            end.max_version = 4;
            let mut init = api::<InitProducerIdRequest>();
            init.max_version = 5;
            let mut fetch = api::<FetchRequest>();
            fetch.max_version = 12;
            let mut offset_fetch = api::<OffsetFetchRequest>();
            // v9: the member id and epoch a KIP-848 member sends (v10 names topics by id).
            offset_fetch.max_version = 9;
            let mut offset_commit = api::<OffsetCommitRequest>();
            offset_commit.max_version = 8;
            let mut add_offsets = api::<AddOffsetsToTxnRequest>();
            add_offsets.max_version = 3;
            let mut txn_offset_commit = api::<TxnOffsetCommitRequest>();
            txn_offset_commit.max_version = 4;
            let apis = vec![
                api::<ApiVersionsRequest>(),
                api::<MetadataRequest>(),
                api::<ProduceRequest>(),
                api::<FindCoordinatorRequest>(),
                init,
                add,
                end,
                api::<ListOffsetsRequest>(),
                fetch,
                offset_fetch,
                offset_commit,
                api::<JoinGroupRequest>(),
                api::<SyncGroupRequest>(),
                api::<HeartbeatRequest>(),
                api::<LeaveGroupRequest>(),
                add_offsets,
                txn_offset_commit,
                api::<ConsumerGroupHeartbeatRequest>(),
            ];
            answer_api_versions(&mut frame, version, apis, out)?;
            false
        }
        ApiKey::METADATA => {
            let (header, request) = decode::<MetadataRequest>(&mut frame, version)?;
            let mut response = metadata(shared, &request, fault);
            response.throttle_time_ms = throttle_time_ms;
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<MetadataRequest>(out, cid, &response, version)
            })
        }
        ApiKey::INIT_PRODUCER_ID => {
            let (header, _) = decode::<InitProducerIdRequest>(&mut frame, version)?;
            let response = InitProducerIdResponse {
                throttle_time_ms,
                error_code: error,
                producer_id: if error == ErrorCode::NONE { PRODUCER_ID } else { -1 },
                producer_epoch: if error == ErrorCode::NONE { 0 } else { -1 },
                ..Default::default()
            };
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<InitProducerIdRequest>(out, cid, &response, version)
            })
        }
        ApiKey::FIND_COORDINATOR => {
            let (header, request) = decode::<FindCoordinatorRequest>(&mut frame, version)?;
            let port = i32::from(shared.ports[COORDINATOR as usize - 1]);
            let found = |key| Coordinator {
                key,
                node_id: if error == ErrorCode::NONE { COORDINATOR } else { -1 },
                host: "127.0.0.1".into(),
                port,
                error_code: error,
                ..Default::default()
            };
            let mut response = FindCoordinatorResponse { throttle_time_ms, ..Default::default() };
            if version >= 4 {
                response.coordinators = request.coordinator_keys.iter().cloned().map(found).collect();
            } else {
                let c = found(request.key.clone());
                (response.error_code, response.node_id, response.host, response.port) =
                    (c.error_code, c.node_id, c.host, c.port);
            }
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<FindCoordinatorRequest>(out, cid, &response, version)
            })
        }
        ApiKey::ADD_PARTITIONS_TO_TXN => {
            let (header, request) = decode::<AddPartitionsToTxnRequest>(&mut frame, version)?;
            lock(&shared.state).open |= error == ErrorCode::NONE;
            let response = AddPartitionsToTxnResponse {
                throttle_time_ms,
                results_by_topic_v3_and_below: request
                    .v3_and_below_topics
                    .iter()
                    .map(|t| AddPartitionsToTxnTopicResult {
                        name: t.name.clone(),
                        results_by_partition: t
                            .partitions
                            .iter()
                            .map(|&partition_index| AddPartitionsToTxnPartitionResult {
                                partition_index,
                                partition_error_code: error,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<AddPartitionsToTxnRequest>(out, cid, &response, version)
            })
        }
        ApiKey::END_TXN => {
            let (header, request) = decode::<EndTxnRequest>(&mut frame, version)?;
            // A retried EndTxn of a transaction already ended is answered NONE again, as Kafka does.
            let mut state = lock(&shared.state);
            if error == ErrorCode::NONE && std::mem::take(&mut state.open) {
                state.ended.push(request.committed);
                let offsets = std::mem::take(&mut state.txn_offsets);
                if request.committed {
                    state
                        .commits
                        .extend(offsets.into_iter().map(|((group, partition), offset)| (group, partition, offset)));
                }
            }
            drop(state);
            let response = EndTxnResponse { throttle_time_ms, error_code: error, ..Default::default() };
            finish(out, fault, header.correlation_id, |out, cid| respond::<EndTxnRequest>(out, cid, &response, version))
        }
        ApiKey::LIST_OFFSETS => {
            let (header, request) = decode::<ListOffsetsRequest>(&mut frame, version)?;
            let state = lock(&shared.state);
            let response = ListOffsetsResponse {
                throttle_time_ms,
                topics: request
                    .topics
                    .iter()
                    .map(|t| ListOffsetsTopicResponse {
                        name: t.name.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| ListOffsetsPartitionResponse {
                                partition_index: p.partition_index,
                                error_code: error,
                                timestamp: -1,
                                // Earliest (-2): the log start, always 0 here; anything else: the end.
                                offset: if p.timestamp == -2 { 0 } else { log_end(&state, p.partition_index) },
                                leader_epoch: 0,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            drop(state);
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<ListOffsetsRequest>(out, cid, &response, version)
            })
        }
        ApiKey::FETCH => {
            let (header, request) = decode::<FetchRequest>(&mut frame, version)?;
            let mut response = fetch(shared, node, &request, fault);
            response.throttle_time_ms = throttle_time_ms;
            finish(out, fault, header.correlation_id, |out, cid| respond::<FetchRequest>(out, cid, &response, version))
        }
        ApiKey::OFFSET_FETCH => {
            let (header, request) = decode::<OffsetFetchRequest>(&mut frame, version)?;
            let state = lock(&shared.state);
            let committed = |group: &str, partition: i32| {
                state.commits.iter().rev().find(|(g, p, _)| g == group && *p == partition).map_or(-1, |c| c.2)
            };
            let mut response = OffsetFetchResponse { throttle_time_ms, ..Default::default() };
            let groups: Vec<(String, Vec<TopicAsked>)> = if version >= 8 {
                request
                    .groups
                    .iter()
                    .map(|g| {
                        let topics =
                            g.topics.iter().flatten().map(|t| (t.name.to_string(), t.partition_indexes.clone()));
                        (g.group_id.to_string(), topics.collect())
                    })
                    .collect()
            } else {
                let topics = request.topics.iter().flatten().map(|t| (t.name.to_string(), t.partition_indexes.clone()));
                vec![(request.group_id.to_string(), topics.collect())]
            };
            for (group, topics) in groups {
                let topics: Vec<OffsetFetchResponseTopics> = topics
                    .into_iter()
                    .map(|(name, partitions)| OffsetFetchResponseTopics {
                        name: name.as_str().into(),
                        partitions: partitions
                            .into_iter()
                            .map(|partition_index| OffsetFetchResponsePartitions {
                                partition_index,
                                committed_offset: committed(&group, partition_index),
                                committed_leader_epoch: -1,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect();
                if version >= 8 {
                    response.groups.push(OffsetFetchResponseGroup {
                        group_id: group.as_str().into(),
                        topics,
                        error_code: error,
                        ..Default::default()
                    });
                } else {
                    response.error_code = error;
                    response.topics = topics
                        .into_iter()
                        .map(|t| kafka_wire::codec::messages::offset_fetch::OffsetFetchResponseTopic {
                            name: t.name,
                            partitions: t
                                .partitions
                                .into_iter()
                                .map(|p| kafka_wire::codec::messages::offset_fetch::OffsetFetchResponsePartition {
                                    partition_index: p.partition_index,
                                    committed_offset: p.committed_offset,
                                    committed_leader_epoch: -1,
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect();
                }
            }
            drop(state);
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<OffsetFetchRequest>(out, cid, &response, version)
            })
        }
        ApiKey::OFFSET_COMMIT => {
            let (header, request) = decode::<OffsetCommitRequest>(&mut frame, version)?;
            let mut state = lock(&shared.state);
            let response = OffsetCommitResponse {
                throttle_time_ms,
                topics: request
                    .topics
                    .iter()
                    .map(|t| OffsetCommitResponseTopic {
                        name: t.name.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| {
                                if error == ErrorCode::NONE {
                                    let commit = (request.group_id.to_string(), p.partition_index, p.committed_offset);
                                    state.commits.push(commit);
                                }
                                OffsetCommitResponsePartition {
                                    partition_index: p.partition_index,
                                    error_code: error,
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            drop(state);
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<OffsetCommitRequest>(out, cid, &response, version)
            })
        }
        ApiKey::JOIN_GROUP => {
            let (header, request) = decode::<JoinGroupRequest>(&mut frame, version)?;
            let mut state = lock(&shared.state);
            let mut response = JoinGroupResponse {
                throttle_time_ms,
                error_code: error,
                member_id: request.member_id.clone(),
                generation_id: -1,
                ..Default::default()
            };
            if error == ErrorCode::NONE && request.member_id.is_empty() && version >= 4 {
                // KIP-394: a new member is first given its id.
                state.members += 1;
                response.error_code = ErrorCode::MEMBER_ID_REQUIRED;
                response.member_id = format!("member-{}", state.members).as_str().into();
            } else if error == ErrorCode::NONE {
                if request.member_id.is_empty() {
                    state.members += 1;
                    response.member_id = format!("member-{}", state.members).as_str().into();
                }
                state.generation += 1;
                let protocol = request.protocols.first()?;
                response.generation_id = state.generation;
                response.protocol_type = Some(request.protocol_type.clone());
                response.protocol_name = Some(protocol.name.clone());
                response.leader = response.member_id.clone();
                response.members = vec![JoinGroupResponseMember {
                    member_id: response.member_id.clone(),
                    group_instance_id: request.group_instance_id.clone(),
                    metadata: protocol.metadata.clone(),
                    ..Default::default()
                }];
            }
            drop(state);
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<JoinGroupRequest>(out, cid, &response, version)
            })
        }
        ApiKey::SYNC_GROUP => {
            let (header, request) = decode::<SyncGroupRequest>(&mut frame, version)?;
            let mut state = lock(&shared.state);
            if error == ErrorCode::NONE {
                if let Some(mine) = request.assignments.iter().find(|a| a.member_id == request.member_id) {
                    state.assignment = mine.assignment.clone();
                }
            }
            let response = SyncGroupResponse {
                throttle_time_ms,
                error_code: error,
                protocol_type: request.protocol_type.clone(),
                protocol_name: request.protocol_name.clone(),
                assignment: if error == ErrorCode::NONE { state.assignment.clone() } else { Bytes::new() },
                ..Default::default()
            };
            drop(state);
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<SyncGroupRequest>(out, cid, &response, version)
            })
        }
        ApiKey::HEARTBEAT => {
            let (header, _) = decode::<HeartbeatRequest>(&mut frame, version)?;
            let response = HeartbeatResponse { throttle_time_ms, error_code: error, ..Default::default() };
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<HeartbeatRequest>(out, cid, &response, version)
            })
        }
        ApiKey::LEAVE_GROUP => {
            let (header, _) = decode::<LeaveGroupRequest>(&mut frame, version)?;
            let response = LeaveGroupResponse { throttle_time_ms, error_code: error, ..Default::default() };
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<LeaveGroupRequest>(out, cid, &response, version)
            })
        }
        ApiKey::ADD_OFFSETS_TO_TXN => {
            let (header, _) = decode::<AddOffsetsToTxnRequest>(&mut frame, version)?;
            lock(&shared.state).open |= error == ErrorCode::NONE;
            let response = AddOffsetsToTxnResponse { throttle_time_ms, error_code: error, ..Default::default() };
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<AddOffsetsToTxnRequest>(out, cid, &response, version)
            })
        }
        ApiKey::TXN_OFFSET_COMMIT => {
            let (header, request) = decode::<TxnOffsetCommitRequest>(&mut frame, version)?;
            let mut state = lock(&shared.state);
            let response = TxnOffsetCommitResponse {
                throttle_time_ms,
                topics: request
                    .topics
                    .iter()
                    .map(|t| TxnOffsetCommitResponseTopic {
                        name: t.name.clone(),
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| {
                                if error == ErrorCode::NONE {
                                    let key = (request.group_id.to_string(), p.partition_index);
                                    state.txn_offsets.insert(key, p.committed_offset);
                                }
                                TxnOffsetCommitResponsePartition {
                                    partition_index: p.partition_index,
                                    error_code: error,
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            drop(state);
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<TxnOffsetCommitRequest>(out, cid, &response, version)
            })
        }
        ApiKey::CONSUMER_GROUP_HEARTBEAT => {
            let (header, request) = decode::<ConsumerGroupHeartbeatRequest>(&mut frame, version)?;
            let mut response = consumer_group_heartbeat(shared, &request, error);
            response.throttle_time_ms = throttle_time_ms;
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<ConsumerGroupHeartbeatRequest>(out, cid, &response, version)
            })
        }
        ApiKey::PRODUCE => {
            let (header, request) = decode::<ProduceRequest>(&mut frame, version)?;
            let mut response = produce(shared, node, &request, fault);
            shared.appended.notify_waiters();
            response.throttle_time_ms = throttle_time_ms;
            if request.acks == 0 {
                return Some(false);
            }
            finish(out, fault, header.correlation_id, |out, cid| {
                respond::<ProduceRequest>(out, cid, &response, version)
            })
        }
        _ => return None,
    };
    Some(close)
}

/// The KIP-848 coordinator of a group of one member: epoch 0 joins (the joiner replaces any
/// member, with the next group epoch and every partition), -1 / -2 leave, any other epoch must
/// be the member's current one. An injected `error` is answered as is, with no change.
fn consumer_group_heartbeat(
    shared: &Shared,
    request: &ConsumerGroupHeartbeatRequest,
    error: ErrorCode,
) -> ConsumerGroupHeartbeatResponse {
    let mut response = ConsumerGroupHeartbeatResponse {
        error_code: error,
        member_id: Some(request.member_id.clone()),
        member_epoch: -1,
        heartbeat_interval_ms: 100,
        ..Default::default()
    };
    if error != ErrorCode::NONE {
        return response;
    }
    let mut state = lock(&shared.state);
    let mine = state.consumer_member.as_deref() == Some(&*request.member_id);
    match request.member_epoch {
        0 => {
            let id = if request.member_id.is_empty() {
                state.members += 1;
                format!("member-{}", state.members)
            } else {
                request.member_id.to_string()
            };
            state.group_epoch += 1;
            state.consumer_member = Some(id.clone());
            response.member_id = Some(id.as_str().into());
        }
        epoch @ (-1 | -2) => {
            if mine {
                state.consumer_member = None;
            }
            response.member_epoch = epoch;
            return response;
        }
        _ if !mine => {
            response.error_code = ErrorCode::UNKNOWN_MEMBER_ID;
            return response;
        }
        epoch if epoch != state.group_epoch => {
            response.error_code = ErrorCode::FENCED_MEMBER_EPOCH;
            return response;
        }
        _ => {}
    }
    response.member_epoch = state.group_epoch;
    response.assignment = Some(Assignment {
        topic_partitions: vec![TopicPartitions {
            topic_id: TOPIC_ID,
            partitions: (0..shared.leaders.len() as i32).collect(),
            ..Default::default()
        }],
        ..Default::default()
    });
    response
}

fn metadata(shared: &Shared, request: &MetadataRequest, fault: Option<Fault>) -> MetadataResponse {
    let wanted = request.topics.as_ref().is_none_or(|ts| ts.iter().any(|t| t.name.as_deref() == Some(TOPIC)));
    let partitions = match fault {
        Some(Fault::NoPartitions) => Vec::new(),
        _ => shared
            .leaders
            .iter()
            .enumerate()
            .map(|(p, leader)| {
                let leader_id = match fault {
                    Some(Fault::LeaderNotListed) => 99,
                    Some(Fault::NoLeader) => -1,
                    _ => leader.load(Ordering::Acquire),
                };
                MetadataResponsePartition {
                    error_code: if leader_id == -1 { ErrorCode::LEADER_NOT_AVAILABLE } else { ErrorCode::NONE },
                    partition_index: p as i32,
                    leader_id,
                    replica_nodes: vec![leader_id],
                    isr_nodes: vec![leader_id],
                    ..Default::default()
                }
            })
            .collect(),
    };
    MetadataResponse {
        brokers: shared
            .ports
            .iter()
            .enumerate()
            .map(|(i, port)| MetadataResponseBroker {
                node_id: i as i32 + 1,
                host: "127.0.0.1".into(),
                port: i32::from(*port),
                ..Default::default()
            })
            .collect(),
        cluster_id: Some("fault-cluster".into()),
        controller_id: 1,
        topics: if wanted {
            vec![MetadataResponseTopic {
                name: Some(TOPIC.into()),
                topic_id: TOPIC_ID,
                partitions,
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

fn produce(shared: &Shared, node: i32, request: &ProduceRequest, fault: Option<Fault>) -> ProduceResponse {
    let mut state = lock(&shared.state);
    let mut skipped = false;
    let responses = request
        .topic_data
        .iter()
        .map(|t| {
            let ours = *t.name == *TOPIC || t.topic_id == TOPIC_ID;
            let mut partition_responses: Vec<PartitionProduceResponse> = t
                .partition_data
                .iter()
                .filter(|_| {
                    // MissingPartition leaves out the first partition asked for.
                    let skip = fault == Some(Fault::MissingPartition) && !skipped;
                    skipped |= skip;
                    !skip
                })
                .map(|p| {
                    let leader = shared.leaders.get(p.index as usize).map(|l| l.load(Ordering::Acquire));
                    let (error_code, base_offset) = match fault {
                        Some(Fault::Error(code)) => (code, -1),
                        _ if !ours || leader.is_none() => (ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, -1),
                        _ if leader != Some(node) => (ErrorCode::NOT_LEADER_OR_FOLLOWER, -1),
                        _ => append(&mut state, p.index, p.records.clone().unwrap_or_default()),
                    };
                    PartitionProduceResponse {
                        index: p.index,
                        error_code,
                        base_offset,
                        log_append_time_ms: -1,
                        ..Default::default()
                    }
                })
                .collect();
            if fault == Some(Fault::ExtraPartition) {
                partition_responses.push(PartitionProduceResponse {
                    index: 1000,
                    base_offset: 0,
                    log_append_time_ms: -1,
                    ..Default::default()
                });
            }
            TopicProduceResponse {
                name: t.name.clone(),
                topic_id: t.topic_id,
                partition_responses,
                ..Default::default()
            }
        })
        .collect();
    ProduceResponse { responses, ..Default::default() }
}

/// Appends an idempotent batch in sequence order (per producer epoch); a batch re-sent with a base sequence already
/// in the log gets the offset it got the first time.
fn append(state: &mut State, partition: i32, records: Bytes) -> (ErrorCode, i64) {
    let Ok(batch) = RecordBatch::parse(records.clone()) else { return (ErrorCode::CORRUPT_MESSAGE, -1) };
    let Ok(values) =
        batch.records(MAX_BUILDER_SIZE).map(|r| r.map(|r| r.value.unwrap_or_default())).collect::<Result<Vec<_>, _>>()
    else {
        return (ErrorCode::CORRUPT_MESSAGE, -1);
    };
    let (sequence, producer_epoch) = (batch.header().base_sequence, batch.header().producer_epoch);
    let log = state.logs.entry(partition).or_default();
    let end: i64 = log.iter().map(|b| b.values.len() as i64).sum();
    if sequence >= 0 {
        // Sequences count from 0 again in each producer epoch.
        let same_epoch = || log.iter().filter(|b| b.producer_epoch == producer_epoch);
        if let Some(earlier) = same_epoch().find(|b| b.base_sequence == sequence && b.values.len() == values.len()) {
            return (ErrorCode::NONE, earlier.base_offset);
        }
        if i64::from(sequence) != same_epoch().map(|b| b.values.len() as i64).sum::<i64>() {
            return (ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, -1);
        }
    }
    log.push(Appended { base_offset: end, producer_epoch, base_sequence: sequence, values, bytes: records });
    (ErrorCode::NONE, end)
}

/// Answers a Fetch from the leader's log: every batch from the one holding the fetch offset on,
/// each with its base offset rewritten to where it is in the log (the base offset is outside
/// the CRC). No fetch session: every Fetch names all its partitions.
fn fetch(shared: &Shared, node: i32, request: &FetchRequest, fault: Option<Fault>) -> FetchResponse {
    let state = lock(&shared.state);
    let mut skipped = false;
    let responses = request
        .topics
        .iter()
        .map(|t| {
            let ours = *t.topic == *TOPIC || t.topic_id == TOPIC_ID;
            let mut partitions: Vec<PartitionData> = t
                .partitions
                .iter()
                .filter(|_| {
                    let skip = fault == Some(Fault::MissingPartition) && !skipped;
                    skipped |= skip;
                    !skip
                })
                .map(|p| {
                    let leader = shared.leaders.get(p.partition as usize).map(|l| l.load(Ordering::Acquire));
                    let end = log_end(&state, p.partition);
                    let mut data = PartitionData {
                        partition_index: p.partition,
                        high_watermark: end,
                        last_stable_offset: end,
                        log_start_offset: 0,
                        ..Default::default()
                    };
                    data.error_code = match fault {
                        Some(Fault::Error(code)) => code,
                        _ if !ours || leader.is_none() => ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        _ if leader != Some(node) => ErrorCode::NOT_LEADER_OR_FOLLOWER,
                        _ if p.fetch_offset < 0 || p.fetch_offset > end => ErrorCode::OFFSET_OUT_OF_RANGE,
                        _ => ErrorCode::NONE,
                    };
                    if data.error_code == ErrorCode::NONE {
                        let mut records = BytesMut::new();
                        let log = state.logs.get(&p.partition).map(Vec::as_slice).unwrap_or_default();
                        for b in log.iter().filter(|b| b.base_offset + b.values.len() as i64 > p.fetch_offset) {
                            let start = records.len();
                            records.extend_from_slice(&b.bytes);
                            records[start..start + 8].copy_from_slice(&b.base_offset.to_be_bytes());
                        }
                        data.records = Some(records.freeze());
                    }
                    data
                })
                .collect();
            if fault == Some(Fault::ExtraPartition) {
                partitions.push(PartitionData { partition_index: 1000, high_watermark: 0, ..Default::default() });
            }
            FetchableTopicResponse { topic: t.topic.clone(), topic_id: t.topic_id, partitions, ..Default::default() }
        })
        .collect();
    FetchResponse { responses, ..Default::default() }
}

/// Polls `consumer` until as many records of each partition as `expected[p]` holds were read
/// into `read[p]` (as `(offset, value)`), within `bound`.
pub async fn read_until(
    bound: Duration,
    consumer: &kafka_wire::client::Consumer,
    read: &mut [Vec<(i64, String)>],
    expected: &[Vec<String>],
) {
    let done = |read: &[Vec<(i64, String)>]| read.iter().zip(expected).all(|(r, e)| r.len() >= e.len());
    let reading = async {
        while !done(read) {
            for r in consumer.poll(Duration::from_millis(200)).await.expect("poll") {
                let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
                read[r.partition as usize].push((r.offset, value));
            }
        }
    };
    tokio::time::timeout(bound, reading)
        .await
        .unwrap_or_else(|_| panic!("timed out after {bound:?}: every record written to be read"));
}
