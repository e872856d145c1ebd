//! An in-process scripted Kafka broker on 127.0.0.1 for consumer tests: one node (id 1) that
//! leads every partition of one topic and serves ApiVersions, Metadata, ListOffsets, Fetch and
//! (optionally) OffsetForLeaderEpoch from per-partition logs the test writes, with a leader epoch
//! and a leader-epoch cache per partition, so that the test can stage what a real cluster does
//! not do on demand: an unclean leader election that truncates the log below what a consumer
//! has fetched.
//!
//! It follows the broker's rules where a consumer can tell: a `current_leader_epoch` below the
//! partition's epoch is FENCED_LEADER_EPOCH, above it UNKNOWN_LEADER_EPOCH; Fetch v12+ with a
//! `last_fetched_epoch` is checked against the epoch cache and answered with a `diverging_epoch`
//! (and no records) when the log differs (KIP-595); a Fetch with nothing to return waits up to
//! `max_wait_ms` for the log to change; requests on one connection are answered in order. It
//! never opens a fetch session (session id 0), so every Fetch names all its partitions.
//!
//! Everything the consumer sent is kept for the test to check ([`ScriptedBroker::fetches`],
//! [`ScriptedBroker::epoch_queries`]).
//!
//! ```ignore
//! #[path = "support/scripted_broker.rs"]
//! mod scripted_broker;
//! let broker = scripted_broker::ScriptedBroker::start("t", 1, scripted_broker::Options::default()).await;
//! broker.append(0, &values);
//! ```

#![allow(dead_code)]

#[path = "frames.rs"]
mod frames;
use frames::{answer_api_versions, api, decode, respond};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::compression::Compression;
use kafka_wire::codec::frame::split_frame;
use kafka_wire::codec::messages::fetch::{EpochEndOffset, FetchableTopicResponse, PartitionData};
use kafka_wire::codec::messages::list_offsets::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_wire::codec::messages::metadata::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_wire::codec::messages::offset_for_leader_epoch::{self, OffsetForLeaderTopicResult};
use kafka_wire::codec::messages::{
    ApiVersionsRequest, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, Message, MetadataRequest,
    MetadataResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use kafka_wire::codec::record_batch::BatchBuilder;
use kafka_wire::codec::{ApiKey, ErrorCode, Uuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// The broker's node id.
pub const NODE_ID: i32 = 1;
/// Records per batch written by [`ScriptedBroker::append`].
pub const BATCH_RECORDS: usize = 10;
const MAX_FRAME: usize = 64 << 20;

/// What the broker offers.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The highest Fetch version offered (the codec's highest by default). Below 12 a Fetch
    /// carries no `last_fetched_epoch` and is never answered with a diverging epoch.
    pub fetch_max_version: i16,
    /// Whether OffsetForLeaderEpoch (API key 23) is offered.
    pub offset_for_leader_epoch: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { fetch_max_version: FetchRequest::VERSIONS.max, offset_for_leader_epoch: true }
    }
}

/// How the broker answered one partition of a Fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchAnswer {
    /// The records of offsets `from..to`.
    Records {
        from: i64,
        to: i64,
    },
    /// No records (the fetch offset is the log end).
    Empty,
    /// The log differs from the end of `epoch` on (KIP-595), no records.
    Diverging {
        epoch: i32,
        end_offset: i64,
    },
    Error(ErrorCode),
}

/// One partition of a Fetch the broker answered.
#[derive(Clone, Debug)]
pub struct SeenFetch {
    pub version: i16,
    pub partition: i32,
    pub fetch_offset: i64,
    pub current_leader_epoch: i32,
    pub last_fetched_epoch: i32,
    /// The partition's leader epoch when the broker answered.
    pub broker_epoch: i32,
    pub answer: FetchAnswer,
}

/// One partition of an OffsetForLeaderEpoch request the broker answered.
#[derive(Clone, Debug)]
pub struct SeenEpochQuery {
    pub version: i16,
    pub partition: i32,
    pub current_leader_epoch: i32,
    pub leader_epoch: i32,
    pub broker_epoch: i32,
    /// `(leader epoch, end offset)`, or the error.
    pub answer: Result<(i32, i64), ErrorCode>,
}

#[derive(Clone, Debug)]
struct StoredBatch {
    base: i64,
    next: i64,
    bytes: Bytes,
}

#[derive(Clone, Debug, Default)]
struct PartitionLog {
    leader_epoch: i32,
    /// The leader-epoch cache: each epoch with its start offset, ascending.
    epochs: Vec<(i32, i64)>,
    batches: Vec<StoredBatch>,
}

impl PartitionLog {
    fn end_offset(&self) -> i64 {
        self.batches.last().map_or(0, |b| b.next)
    }

    /// The broker's epoch lookup: for `epoch`, the largest epoch at or below it in the cache and
    /// the offset where that epoch ends (the start of the next one, or the log end for the
    /// latest); `(-1, -1)` (undefined) when the cache has no epoch at or below it, or when it
    /// is above the latest (a simplification of the broker's rules for those edges).
    fn end_offset_for(&self, epoch: i32) -> (i32, i64) {
        let Some(&(latest, _)) = self.epochs.last() else { return (-1, -1) };
        if epoch == latest {
            return (latest, self.end_offset());
        }
        if epoch > latest {
            return (-1, -1);
        }
        let Some(floor) = self.epochs.iter().rposition(|(e, _)| *e <= epoch) else { return (-1, -1) };
        let next_start = self.epochs.get(floor + 1).map_or(self.end_offset(), |(_, start)| *start);
        (self.epochs[floor].0, next_start)
    }

    fn fence(&self, current_leader_epoch: i32) -> ErrorCode {
        if current_leader_epoch < 0 || current_leader_epoch == self.leader_epoch {
            ErrorCode::NONE
        } else if current_leader_epoch < self.leader_epoch {
            ErrorCode::FENCED_LEADER_EPOCH
        } else {
            ErrorCode::UNKNOWN_LEADER_EPOCH
        }
    }
}

#[derive(Default)]
struct Seen {
    fetches: Vec<SeenFetch>,
    epoch_queries: Vec<SeenEpochQuery>,
    unsupported: Vec<i16>,
}

struct Shared {
    port: u16,
    options: Options,
    topic: String,
    topic_id: Uuid,
    logs: Mutex<Vec<PartitionLog>>,
    /// Wakes long-polling fetches when a log or an epoch changes.
    changed: Notify,
    seen: Mutex<Seen>,
    /// Wakes [`ScriptedBroker::wait_for_fetch`] when a request is recorded.
    recorded: Notify,
}

/// A running scripted broker; its listener ends with the test's runtime.
#[derive(Clone)]
pub struct ScriptedBroker {
    addr: String,
    shared: Arc<Shared>,
}

impl ScriptedBroker {
    /// Binds 127.0.0.1 on an ephemeral port and serves `topic` with `partitions` empty
    /// partitions, each at leader epoch 0 with nothing written.
    pub async fn start(topic: &str, partitions: i32, options: Options) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let mut id = [0u8; 16];
        id[0] = 0x5c;
        id[15] = 1;
        let shared = Arc::new(Shared {
            port,
            options,
            topic: topic.to_owned(),
            topic_id: Uuid(id),
            logs: Mutex::new(vec![PartitionLog::default(); partitions as usize]),
            changed: Notify::new(),
            seen: Mutex::new(Seen::default()),
            recorded: Notify::new(),
        });
        let accept = shared.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                tokio::spawn(serve(sock, accept.clone()));
            }
        });
        Self { addr: format!("127.0.0.1:{port}"), shared }
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sets the leader epoch of a partition that has nothing written yet.
    pub fn set_initial_epoch(&self, partition: i32, epoch: i32) {
        let mut logs = lock(&self.shared.logs);
        let log = &mut logs[partition as usize];
        assert!(log.batches.is_empty(), "the initial epoch is set before anything is written");
        log.leader_epoch = epoch;
        log.epochs = vec![(epoch, 0)];
    }

    /// Writes `values` (keys `None`) at the end of `partition` under its current leader epoch,
    /// [`BATCH_RECORDS`] records per batch; returns the first offset written.
    pub fn append(&self, partition: i32, values: &[String]) -> i64 {
        let first = {
            let mut logs = lock(&self.shared.logs);
            let log = &mut logs[partition as usize];
            let first = log.end_offset();
            if log.epochs.last().is_none_or(|(e, _)| *e != log.leader_epoch) {
                log.epochs.push((log.leader_epoch, first));
            }
            let mut base = first;
            for chunk in values.chunks(BATCH_RECORDS) {
                let mut b = BatchBuilder::new(base);
                b.set_partition_leader_epoch(log.leader_epoch);
                for (i, v) in chunk.iter().enumerate() {
                    b.push(1_700_000_000_000 + base + i as i64, None, Some(v.as_bytes()), &[]).expect("record fits");
                }
                let next = base + chunk.len() as i64;
                log.batches.push(StoredBatch { base, next, bytes: b.finish(Compression::None) });
                base = next;
            }
            first
        };
        self.shared.changed.notify_waiters();
        first
    }

    /// An unclean leader election: the new leader's log ends at `truncate_to` (a batch
    /// boundary), everything written from there on under older epochs is gone, and the
    /// partition's leader epoch goes up by one, starting at `truncate_to`. Returns the new epoch.
    pub fn elect_unclean_leader(&self, partition: i32, truncate_to: i64) -> i32 {
        let epoch = {
            let mut logs = lock(&self.shared.logs);
            let log = &mut logs[partition as usize];
            assert!(
                truncate_to == 0 || log.batches.iter().any(|b| b.next == truncate_to),
                "truncation at {truncate_to} is not at a batch boundary"
            );
            log.batches.retain(|b| b.next <= truncate_to);
            log.epochs.retain(|(_, start)| *start < truncate_to);
            log.leader_epoch += 1;
            log.epochs.push((log.leader_epoch, truncate_to));
            log.leader_epoch
        };
        self.shared.changed.notify_waiters();
        epoch
    }

    pub fn leader_epoch(&self, partition: i32) -> i32 {
        lock(&self.shared.logs)[partition as usize].leader_epoch
    }

    /// Every Fetch partition answered so far, in order.
    pub fn fetches(&self) -> Vec<SeenFetch> {
        lock(&self.shared.seen).fetches.clone()
    }

    /// Waits (up to `timeout`) until a Fetch partition answered after the first `since` ones
    /// matches `wanted`, and returns it; `None` on timeout.
    pub async fn wait_for_fetch(
        &self,
        since: usize,
        timeout: Duration,
        wanted: impl Fn(&SeenFetch) -> bool,
    ) -> Option<SeenFetch> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let recorded = self.shared.recorded.notified();
            tokio::pin!(recorded);
            recorded.as_mut().enable();
            if let Some(f) = lock(&self.shared.seen).fetches.iter().skip(since).find(|f| wanted(f)) {
                return Some(f.clone());
            }
            tokio::time::timeout_at(deadline, recorded).await.ok()?;
        }
    }

    /// Every OffsetForLeaderEpoch partition answered so far, in order.
    pub fn epoch_queries(&self) -> Vec<SeenEpochQuery> {
        lock(&self.shared.seen).epoch_queries.clone()
    }

    /// API keys of requests the broker does not serve (it closed their connections).
    pub fn unsupported_requests(&self) -> Vec<i16> {
        lock(&self.shared.seen).unsupported.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(mut sock: TcpStream, shared: Arc<Shared>) {
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    loop {
        // One request at a time, answered in order, as a broker does per connection.
        while let Ok(Some(frame)) = split_frame(&mut inbuf, MAX_FRAME) {
            let mut out = BytesMut::new();
            let keep_open = handle(frame, &shared, &mut out).await.is_some();
            if sock.write_all(&out).await.is_err() || !keep_open {
                return;
            }
        }
        match sock.read_buf(&mut inbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Appends the response to one request frame to `out`; `None` closes the connection.
async fn handle(mut frame: Bytes, shared: &Shared, out: &mut BytesMut) -> Option<()> {
    if frame.len() < 4 {
        return None;
    }
    let api_key = ApiKey(i16::from_be_bytes([frame[0], frame[1]]));
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    match api_key {
        ApiKey::API_VERSIONS => {
            let mut fetch = api::<FetchRequest>();
            fetch.max_version = fetch.max_version.min(shared.options.fetch_max_version);
            let mut api_keys =
                vec![api::<ApiVersionsRequest>(), api::<MetadataRequest>(), api::<ListOffsetsRequest>(), fetch];
            if shared.options.offset_for_leader_epoch {
                api_keys.push(api::<OffsetForLeaderEpochRequest>());
            }
            answer_api_versions(&mut frame, version, api_keys, out)?;
        }
        ApiKey::METADATA => {
            let (header, _request) = decode::<MetadataRequest>(&mut frame, version)?;
            respond::<MetadataRequest>(out, header.correlation_id, &metadata(shared), version);
        }
        ApiKey::LIST_OFFSETS => {
            let (header, request) = decode::<ListOffsetsRequest>(&mut frame, version)?;
            respond::<ListOffsetsRequest>(out, header.correlation_id, &list_offsets(shared, &request), version);
        }
        ApiKey::FETCH => {
            let (header, request) = decode::<FetchRequest>(&mut frame, version)?;
            let response = fetch(shared, &request, version).await;
            respond::<FetchRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::OFFSET_FOR_LEADER_EPOCH if shared.options.offset_for_leader_epoch => {
            let (header, request) = decode::<OffsetForLeaderEpochRequest>(&mut frame, version)?;
            let response = offset_for_leader_epoch(shared, &request, version);
            respond::<OffsetForLeaderEpochRequest>(out, header.correlation_id, &response, version);
        }
        other => {
            lock(&shared.seen).unsupported.push(other.0);
            return None;
        }
    }
    Some(())
}

fn metadata(shared: &Shared) -> MetadataResponse {
    let logs = lock(&shared.logs);
    MetadataResponse {
        brokers: vec![MetadataResponseBroker {
            node_id: NODE_ID,
            host: "127.0.0.1".into(),
            port: i32::from(shared.port),
            rack: None,
            ..Default::default()
        }],
        cluster_id: Some("scripted-broker".into()),
        controller_id: NODE_ID,
        topics: vec![MetadataResponseTopic {
            error_code: ErrorCode::NONE,
            name: Some(shared.topic.as_str().into()),
            topic_id: shared.topic_id,
            partitions: logs
                .iter()
                .enumerate()
                .map(|(i, log)| MetadataResponsePartition {
                    error_code: ErrorCode::NONE,
                    partition_index: i as i32,
                    leader_id: NODE_ID,
                    leader_epoch: log.leader_epoch,
                    replica_nodes: vec![NODE_ID],
                    isr_nodes: vec![NODE_ID],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn list_offsets(shared: &Shared, request: &ListOffsetsRequest) -> ListOffsetsResponse {
    let logs = lock(&shared.logs);
    ListOffsetsResponse {
        topics: request
            .topics
            .iter()
            .map(|t| ListOffsetsTopicResponse {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let log = (*t.name == *shared.topic).then(|| logs.get(p.partition_index as usize)).flatten();
                        let Some(log) = log else {
                            return ListOffsetsPartitionResponse {
                                partition_index: p.partition_index,
                                error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                                offset: -1,
                                leader_epoch: -1,
                                timestamp: -1,
                                ..Default::default()
                            };
                        };
                        let error_code = log.fence(p.current_leader_epoch);
                        // Earliest (-2): the log start, always 0 here; anything else: the end.
                        let offset = if p.timestamp == -2 { 0 } else { log.end_offset() };
                        ListOffsetsPartitionResponse {
                            partition_index: p.partition_index,
                            error_code,
                            timestamp: -1,
                            offset: if error_code == ErrorCode::NONE { offset } else { -1 },
                            leader_epoch: log.leader_epoch,
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Answers a Fetch, waiting up to its `max_wait_ms` while there is nothing to return.
async fn fetch(shared: &Shared, request: &FetchRequest, version: i16) -> FetchResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
    loop {
        let changed = shared.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let (response, seen) = fetch_now(shared, request, version);
        let idle = seen.iter().all(|s| s.answer == FetchAnswer::Empty);
        if !idle || tokio::time::Instant::now() >= deadline {
            lock(&shared.seen).fetches.extend(seen);
            shared.recorded.notify_waiters();
            return response;
        }
        let _ = tokio::time::timeout_at(deadline, changed).await;
    }
}

fn fetch_now(shared: &Shared, request: &FetchRequest, version: i16) -> (FetchResponse, Vec<SeenFetch>) {
    let logs = lock(&shared.logs);
    let mut seen = Vec::new();
    let mut responses = Vec::new();
    for t in &request.topics {
        let ours = if version >= 13 { t.topic_id == shared.topic_id } else { *t.topic == *shared.topic };
        let mut partitions = Vec::new();
        for p in &t.partitions {
            let log = ours.then(|| logs.get(p.partition as usize)).flatten();
            let mut data = PartitionData {
                partition_index: p.partition,
                error_code: ErrorCode::NONE,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                ..Default::default()
            };
            let answer = match log {
                None => FetchAnswer::Error(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
                Some(log) => {
                    let end = log.end_offset();
                    data.high_watermark = end;
                    data.last_stable_offset = end;
                    data.log_start_offset = 0;
                    let fenced = log.fence(p.current_leader_epoch);
                    let diverging = (version >= 12 && p.last_fetched_epoch >= 0)
                        .then(|| log.end_offset_for(p.last_fetched_epoch))
                        .filter(|&(epoch, end_offset)| epoch < p.last_fetched_epoch || end_offset < p.fetch_offset);
                    if fenced != ErrorCode::NONE {
                        FetchAnswer::Error(fenced)
                    } else if let Some((epoch, end_offset)) = diverging {
                        data.diverging_epoch = EpochEndOffset { epoch, end_offset, ..Default::default() };
                        FetchAnswer::Diverging { epoch, end_offset }
                    } else if p.fetch_offset < 0 || p.fetch_offset > end {
                        FetchAnswer::Error(ErrorCode::OFFSET_OUT_OF_RANGE)
                    } else if p.fetch_offset == end {
                        FetchAnswer::Empty
                    } else {
                        let mut records = BytesMut::new();
                        let mut from = None;
                        for b in log.batches.iter().filter(|b| b.next > p.fetch_offset) {
                            from.get_or_insert(b.base);
                            records.extend_from_slice(&b.bytes);
                        }
                        data.records = Some(records.freeze());
                        FetchAnswer::Records { from: from.unwrap_or(end), to: end }
                    }
                }
            };
            if let FetchAnswer::Error(code) = answer {
                data.error_code = code;
            }
            seen.push(SeenFetch {
                version,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                current_leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: p.last_fetched_epoch,
                broker_epoch: log.map_or(-1, |l| l.leader_epoch),
                answer,
            });
            partitions.push(data);
        }
        responses.push(FetchableTopicResponse {
            topic: t.topic.clone(),
            topic_id: t.topic_id,
            partitions,
            ..Default::default()
        });
    }
    (FetchResponse { error_code: ErrorCode::NONE, session_id: 0, responses, ..Default::default() }, seen)
}

fn offset_for_leader_epoch(
    shared: &Shared,
    request: &OffsetForLeaderEpochRequest,
    version: i16,
) -> OffsetForLeaderEpochResponse {
    let logs = lock(&shared.logs);
    let mut seen = Vec::new();
    let topics = request
        .topics
        .iter()
        .map(|t| OffsetForLeaderTopicResult {
            topic: t.topic.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    let log = (*t.topic == *shared.topic).then(|| logs.get(p.partition as usize)).flatten();
                    let answer = match log {
                        None => Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
                        Some(log) => match log.fence(p.current_leader_epoch) {
                            ErrorCode::NONE => Ok(log.end_offset_for(p.leader_epoch)),
                            code => Err(code),
                        },
                    };
                    seen.push(SeenEpochQuery {
                        version,
                        partition: p.partition,
                        current_leader_epoch: p.current_leader_epoch,
                        leader_epoch: p.leader_epoch,
                        broker_epoch: log.map_or(-1, |l| l.leader_epoch),
                        answer,
                    });
                    let (error_code, (leader_epoch, end_offset)) = match answer {
                        Ok(found) => (ErrorCode::NONE, found),
                        Err(code) => (code, (-1, -1)),
                    };
                    offset_for_leader_epoch::EpochEndOffset {
                        error_code,
                        partition: p.partition,
                        leader_epoch,
                        end_offset,
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    drop(logs);
    lock(&shared.seen).epoch_queries.extend(seen);
    shared.recorded.notify_waiters();
    OffsetForLeaderEpochResponse { topics, ..Default::default() }
}

/// `n` record values `"<tag>-<offset>"` for offsets `first..first + n`.
pub fn values(tag: &str, first: i64, n: usize) -> Vec<String> {
    (0..n as i64).map(|i| format!("{tag}-{}", first + i)).collect()
}
