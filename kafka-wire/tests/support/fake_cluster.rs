//! An in-process fake Kafka cluster of several nodes on 127.0.0.1, for producer faults a real
//! broker cannot be made to show on demand: a node that accepts connections and never answers,
//! a node that takes Produce requests and never answers them, Metadata with any partition index.
//!
//! Node ids are 1..=n. Every node answers ApiVersions, Metadata (every node as a broker; each
//! topic's partitions with the index and leader given), InitProducerId (producer id 1, epoch 0)
//! and Produce (NONE with the partition's next offset, reading only batch headers), unless told
//! otherwise through its [`NodeControl`].
//!
//! ```ignore
//! #[path = "support/fake_cluster.rs"]
//! mod fake_cluster;
//! let cluster = FakeCluster::start(2, vec![FakeTopic::new("t", &[(0, 1), (1, 2)])]).await;
//! cluster.node(2).silent.store(true, Ordering::Release);
//! ```

#![allow(dead_code)]

#[path = "frames.rs"]
mod frames;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use frames::{answer_api_versions, api, decode, respond};
use kafka_wire::codec::frame::split_frame;
use kafka_wire::codec::messages::metadata::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_wire::codec::messages::produce::{PartitionProduceResponse, TopicProduceResponse};
use kafka_wire::codec::messages::{
    ApiVersionsRequest, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse,
};
use kafka_wire::codec::record_batch::BatchHeader;
use kafka_wire::codec::{ApiKey, Uuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_FRAME: usize = 100 << 20;

/// A topic as Metadata describes it: `(partition_index, leader node)` pairs, as given.
#[derive(Clone, Debug)]
pub struct FakeTopic {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<(i32, i32)>,
}

impl FakeTopic {
    pub fn new(name: &str, partitions: &[(i32, i32)]) -> Self {
        let mut id = [0u8; 16];
        id[0] = 0x4b;
        for (i, b) in name.bytes().take(15).enumerate() {
            id[i + 1] = b;
        }
        Self { name: name.to_string(), id: Uuid(id), partitions: partitions.to_vec() }
    }
}

/// How one node behaves, switchable while it runs, and what it saw.
#[derive(Default)]
pub struct NodeControl {
    /// Reads every request and answers none (a stopped process whose sockets stay open).
    pub silent: AtomicBool,
    /// Reads Produce requests and answers none (other requests are answered).
    pub hold_produce: AtomicBool,
    pub connections: AtomicU64,
    pub produce_requests: AtomicU64,
    pub records: AtomicU64,
}

struct Shared {
    ports: Vec<u16>,
    topics: Vec<FakeTopic>,
    nodes: Vec<NodeControl>,
    next_offsets: Mutex<HashMap<(String, i32), i64>>,
}

/// A running fake cluster; its tasks end with the runtime.
pub struct FakeCluster {
    shared: Arc<Shared>,
}

impl FakeCluster {
    /// Binds `nodes` listeners on ephemeral ports and serves on the current tokio runtime.
    pub async fn start(nodes: usize, topics: Vec<FakeTopic>) -> Self {
        let mut listeners = Vec::new();
        for _ in 0..nodes {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1"));
        }
        let ports = listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect();
        let shared = Arc::new(Shared {
            ports,
            topics,
            nodes: (0..nodes).map(|_| NodeControl::default()).collect(),
            next_offsets: Mutex::new(HashMap::new()),
        });
        for (i, listener) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    let _ = sock.set_nodelay(true);
                    shared.nodes[i].connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve(sock, shared.clone(), i));
                }
            });
        }
        Self { shared }
    }

    /// `127.0.0.1:<port>` of node `id` (1-based).
    pub fn addr(&self, id: i32) -> String {
        format!("127.0.0.1:{}", self.shared.ports[id as usize - 1])
    }

    pub fn node(&self, id: i32) -> &NodeControl {
        &self.shared.nodes[id as usize - 1]
    }
}

async fn serve(mut sock: TcpStream, shared: Arc<Shared>, node: usize) {
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::new();
    loop {
        while let Ok(Some(frame)) = split_frame(&mut inbuf, MAX_FRAME) {
            if shared.nodes[node].silent.load(Ordering::Acquire) {
                continue;
            }
            if handle(frame, &shared, node, &mut out).is_none() {
                return;
            }
        }
        if !out.is_empty() {
            if sock.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if inbuf.capacity() - inbuf.len() < 16 * 1024 {
            inbuf.reserve(64 * 1024);
        }
        match sock.read_buf(&mut inbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Appends the answer to one request to `out` (nothing for a held Produce); `None` closes.
fn handle(mut frame: Bytes, shared: &Shared, node: usize, out: &mut BytesMut) -> Option<()> {
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
            respond::<MetadataRequest>(out, header.correlation_id, &metadata(shared, &request), version);
        }
        ApiKey::INIT_PRODUCER_ID => {
            let (header, _) = decode::<InitProducerIdRequest>(&mut frame, version)?;
            let response = InitProducerIdResponse { producer_id: 1, producer_epoch: 0, ..Default::default() };
            respond::<InitProducerIdRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::PRODUCE => {
            let (header, request) = decode::<ProduceRequest>(&mut frame, version)?;
            let control = &shared.nodes[node];
            control.produce_requests.fetch_add(1, Ordering::Relaxed);
            if control.hold_produce.load(Ordering::Acquire) {
                return Some(());
            }
            if let Some(response) = produce(shared, node, &request) {
                respond::<ProduceRequest>(out, header.correlation_id, &response, version);
            }
        }
        _ => return None,
    }
    Some(())
}

fn metadata(shared: &Shared, request: &MetadataRequest) -> MetadataResponse {
    let wanted: Vec<&FakeTopic> = match &request.topics {
        None => shared.topics.iter().collect(),
        Some(ts) => {
            shared.topics.iter().filter(|t| ts.iter().any(|w| w.name.as_deref() == Some(t.name.as_str()))).collect()
        }
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
        cluster_id: Some("fake-cluster".into()),
        controller_id: 1,
        topics: wanted
            .into_iter()
            .map(|t| MetadataResponseTopic {
                name: Some(t.name.as_str().into()),
                topic_id: t.id,
                partitions: t
                    .partitions
                    .iter()
                    .map(|&(partition_index, leader_id)| MetadataResponsePartition {
                        partition_index,
                        leader_id,
                        replica_nodes: vec![leader_id],
                        isr_nodes: vec![leader_id],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Acknowledges every batch; `None` for `acks=0`.
fn produce(shared: &Shared, node: usize, request: &ProduceRequest) -> Option<ProduceResponse> {
    let mut offsets = shared.next_offsets.lock().unwrap();
    let responses = request
        .topic_data
        .iter()
        .map(|t| {
            let name = shared
                .topics
                .iter()
                .find(|k| (t.topic_id != Uuid::ZERO && k.id == t.topic_id) || *k.name == *t.name)
                .map_or_else(|| t.name.to_string(), |k| k.name.clone());
            let partition_responses = t
                .partition_data
                .iter()
                .map(|p| {
                    let mut rest = p.records.clone().unwrap_or_default();
                    let mut count = 0i64;
                    while let Ok(h) = BatchHeader::decode(&rest) {
                        if h.batch_length < 0 || h.size() > rest.len() {
                            break;
                        }
                        rest = rest.slice(h.size()..);
                        count += i64::from(h.record_count);
                    }
                    shared.nodes[node].records.fetch_add(count as u64, Ordering::Relaxed);
                    let next = offsets.entry((name.clone(), p.index)).or_default();
                    let base_offset = *next;
                    *next += count;
                    PartitionProduceResponse {
                        index: p.index,
                        base_offset,
                        log_append_time_ms: -1,
                        ..Default::default()
                    }
                })
                .collect();
            TopicProduceResponse {
                name: t.name.clone(),
                topic_id: t.topic_id,
                partition_responses,
                ..Default::default()
            }
        })
        .collect();
    (request.acks != 0).then(|| ProduceResponse { responses, ..Default::default() })
}
