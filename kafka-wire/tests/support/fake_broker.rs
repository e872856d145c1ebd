//! An in-process fake Kafka broker on 127.0.0.1 that acknowledges every Produce at once: enough
//! protocol for the producer (ApiVersions, Metadata, InitProducerId, Produce) and nothing more.
//!
//! It is one node (id 1) that leads every partition of the topics it is given, hands out producer
//! id 1 with epoch 0, and answers each Produce partition with NONE and the next base offset of
//! that partition, reading only each batch's header (its record count). It counts what it got and
//! notes idempotence anomalies (a batch whose base sequence is not the one expected after the
//! previous batch of its partition), but acknowledges them all the same.
//!
//! Used by `examples/produce_bench.rs` (`#[path]` include); usable from tests the same way:
//!
//! ```ignore
//! #[path = "support/fake_broker.rs"]
//! mod fake_broker;
//! let broker = fake_broker::FakeBroker::start(&[("bench", 6)]).await;
//! let producer = Producer::new(ProducerConfig::new(broker.addr())).await?;
//! ```

#![allow(dead_code)]

#[path = "frames.rs"]
mod frames;
use frames::{answer_api_versions, api, decode, respond};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::frame::split_frame;
use kafka_wire::codec::messages::metadata::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_wire::codec::messages::produce::{PartitionProduceResponse, TopicProduceResponse};
use kafka_wire::codec::messages::{
    ApiVersionsRequest, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, Request,
};
use kafka_wire::codec::record_batch::BatchHeader;
use kafka_wire::codec::{ApiKey, ErrorCode, Uuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The fake broker's node id.
pub const NODE_ID: i32 = 1;
/// The producer id InitProducerId hands out.
pub const PRODUCER_ID: i64 = 1;
const MAX_FRAME: usize = 100 << 20;

/// What the broker received, for the caller to check.
#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub produce_requests: AtomicU64,
    pub batches: AtomicU64,
    pub records: AtomicU64,
    /// Batches whose base sequence was not the expected next one of their partition.
    pub sequence_anomalies: AtomicU64,
    /// Requests the fake does not serve (the connection is closed after them).
    pub unsupported_requests: AtomicU64,
}

struct Topic {
    name: String,
    id: Uuid,
    partitions: i32,
}

#[derive(Default)]
struct PartitionLog {
    next_offset: i64,
    /// The next expected base sequence, per producer epoch seen last.
    next_sequence: Option<(i16, i32)>,
}

struct State {
    port: u16,
    topics: Vec<Topic>,
    /// Keyed by topic index and partition.
    logs: Mutex<HashMap<(usize, i32), PartitionLog>>,
    stats: Stats,
}

/// A running fake broker. Dropping it does not stop the listener task; it ends with its runtime.
#[derive(Clone)]
pub struct FakeBroker {
    addr: String,
    state: Arc<State>,
}

impl FakeBroker {
    /// Binds 127.0.0.1 on an ephemeral port and serves on the current tokio runtime. `topics`
    /// are `(name, partitions)`, each given a distinct non-zero topic id.
    pub async fn start(topics: &[(&str, i32)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let topics = topics
            .iter()
            .enumerate()
            .map(|(i, (name, partitions))| {
                let mut id = [0u8; 16];
                id[0] = 0x4b;
                id[15] = i as u8 + 1;
                Topic { name: (*name).to_string(), id: Uuid(id), partitions: *partitions }
            })
            .collect();
        let state = Arc::new(State { port, topics, logs: Mutex::new(HashMap::new()), stats: Stats::default() });
        let accept_state = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                accept_state.stats.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(sock, accept_state.clone()));
            }
        });
        Self { addr: format!("127.0.0.1:{port}"), state }
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }

    /// The number of records written to a partition (its next offset).
    pub fn end_offset(&self, topic: &str, partition: i32) -> i64 {
        let Some(t) = self.state.topics.iter().position(|t| t.name == topic) else { return 0 };
        self.state.logs.lock().unwrap().get(&(t, partition)).map_or(0, |l| l.next_offset)
    }
}

async fn serve(mut sock: TcpStream, state: Arc<State>) {
    let mut inbuf = BytesMut::with_capacity(256 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match split_frame(&mut inbuf, MAX_FRAME) {
                Ok(Some(frame)) => {
                    if handle(frame, &state, &mut out).is_none() {
                        let _ = sock.write_all(&out).await;
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if !out.is_empty() {
            if sock.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if inbuf.capacity() - inbuf.len() < 16 * 1024 {
            inbuf.reserve(256 * 1024);
        }
        match sock.read_buf(&mut inbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Appends the response to one request frame to `out`; `None` closes the connection.
fn handle(mut frame: Bytes, state: &State, out: &mut BytesMut) -> Option<()> {
    if frame.len() < 4 {
        return None;
    }
    let api_key = ApiKey(i16::from_be_bytes([frame[0], frame[1]]));
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    match api_key {
        ApiKey::API_VERSIONS => answer_api_versions(
            &mut frame,
            version,
            vec![
                api::<ApiVersionsRequest>(),
                api::<MetadataRequest>(),
                api::<ProduceRequest>(),
                api::<InitProducerIdRequest>(),
            ],
            out,
        )?,
        ApiKey::METADATA => {
            let (header, request) = decode::<MetadataRequest>(&mut frame, version)?;
            let response = metadata(state, &request);
            respond::<MetadataRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::INIT_PRODUCER_ID => {
            let (header, _request) = decode::<InitProducerIdRequest>(&mut frame, version)?;
            let response = InitProducerIdResponse {
                error_code: ErrorCode::NONE,
                producer_id: PRODUCER_ID,
                producer_epoch: 0,
                ..Default::default()
            };
            respond::<InitProducerIdRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::PRODUCE => {
            let (header, request) = decode::<ProduceRequest>(&mut frame, version)?;
            let response = produce(state, request);
            if let Some(response) = response {
                respond::<ProduceRequest>(out, header.correlation_id, &response, version);
            }
        }
        _ => {
            state.stats.unsupported_requests.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    }
    Some(())
}

fn request_header<R: Request>(version: i16) -> i16 {
    R::request_header_version(version)
}

fn metadata(state: &State, request: &MetadataRequest) -> MetadataResponse {
    let wanted: Vec<Result<usize, String>> = match &request.topics {
        None => (0..state.topics.len()).map(Ok).collect(),
        Some(ts) => ts
            .iter()
            .map(|t| {
                let name = t.name.as_deref().unwrap_or_default();
                state
                    .topics
                    .iter()
                    .position(|k| k.name == name || (t.topic_id != Uuid::ZERO && k.id == t.topic_id))
                    .ok_or_else(|| name.to_string())
            })
            .collect(),
    };
    MetadataResponse {
        brokers: vec![MetadataResponseBroker {
            node_id: NODE_ID,
            host: "127.0.0.1".into(),
            port: i32::from(state.port),
            rack: None,
            ..Default::default()
        }],
        cluster_id: Some("fake-broker-cluster".into()),
        controller_id: NODE_ID,
        topics: wanted
            .into_iter()
            .map(|w| match w {
                Ok(i) => {
                    let t = &state.topics[i];
                    MetadataResponseTopic {
                        error_code: ErrorCode::NONE,
                        name: Some(t.name.as_str().into()),
                        topic_id: t.id,
                        partitions: (0..t.partitions)
                            .map(|p| MetadataResponsePartition {
                                error_code: ErrorCode::NONE,
                                partition_index: p,
                                leader_id: NODE_ID,
                                leader_epoch: 0,
                                replica_nodes: vec![NODE_ID],
                                isr_nodes: vec![NODE_ID],
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }
                }
                Err(name) => MetadataResponseTopic {
                    error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    name: Some(name.as_str().into()),
                    ..Default::default()
                },
            })
            .collect(),
        ..Default::default()
    }
}

/// Acknowledges every batch of the request; `None` for `acks=0` (no response).
fn produce(state: &State, request: ProduceRequest) -> Option<ProduceResponse> {
    let stats = &state.stats;
    stats.produce_requests.fetch_add(1, Ordering::Relaxed);
    let mut logs = state.logs.lock().unwrap();
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for t in &request.topic_data {
        let topic = state.topics.iter().position(|k| {
            (t.topic_id != Uuid::ZERO && k.id == t.topic_id) || (!t.name.is_empty() && *k.name == *t.name)
        });
        let mut partition_responses = Vec::with_capacity(t.partition_data.len());
        for p in &t.partition_data {
            let Some(topic) = topic.filter(|i| p.index >= 0 && p.index < state.topics[*i].partitions) else {
                partition_responses.push(PartitionProduceResponse {
                    index: p.index,
                    error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    base_offset: -1,
                    ..Default::default()
                });
                continue;
            };
            let log = logs.entry((topic, p.index)).or_default();
            let base_offset = log.next_offset;
            // Only the batch headers are read: no CRC check, no decompression.
            let mut rest = p.records.clone().unwrap_or_default();
            while let Ok(header) = BatchHeader::decode(&rest) {
                if header.batch_length < 0 || header.size() > rest.len() {
                    break;
                }
                rest = rest.slice(header.size()..);
                let count = i64::from(header.record_count);
                if header.producer_id >= 0 {
                    let expected = match log.next_sequence {
                        Some((epoch, seq)) if epoch == header.producer_epoch => seq,
                        _ => 0,
                    };
                    if header.base_sequence != expected {
                        stats.sequence_anomalies.fetch_add(1, Ordering::Relaxed);
                    }
                    log.next_sequence =
                        Some((header.producer_epoch, header.base_sequence.wrapping_add(header.record_count)));
                }
                log.next_offset += count;
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.records.fetch_add(count as u64, Ordering::Relaxed);
            }
            partition_responses.push(PartitionProduceResponse {
                index: p.index,
                error_code: ErrorCode::NONE,
                base_offset,
                log_append_time_ms: -1,
                log_start_offset: 0,
                ..Default::default()
            });
        }
        responses.push(TopicProduceResponse {
            name: t.name.clone(),
            topic_id: t.topic_id,
            partition_responses,
            ..Default::default()
        });
    }
    (request.acks != 0).then(|| ProduceResponse { responses, ..Default::default() })
}
