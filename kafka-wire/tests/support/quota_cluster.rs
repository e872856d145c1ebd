//! An in-process fake cluster for the router and for quotas: what a real broker does only on
//! demand that a test cannot make (a quota throttle of a chosen length, a coordinator that says
//! NOT_COORDINATOR a chosen number of times, a node that stops answering).
//!
//! Node ids are 1..=n on 127.0.0.1. Every node answers ApiVersions, Metadata (every node as a
//! broker, no topics), DescribeCluster, FindCoordinator (node `coordinator` for every key),
//! OffsetFetch (no committed offsets) and OffsetCommit (accepted), and logs each request with
//! the instant it was read and the instant its answer was written.
//!
//! ```ignore
//! #[path = "support/quota_cluster.rs"]
//! mod quota_cluster;
//! let cluster = QuotaCluster::start(2).await;
//! cluster.node(1).throttle_next_ms.store(500, Ordering::Release);
//! ```

#![allow(dead_code)]

#[path = "frames.rs"]
mod frames;

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use frames::{answer_api_versions, api, decode, respond};
use kafka_wire::codec::frame::split_frame;
use kafka_wire::codec::messages::describe_cluster::DescribeClusterBroker;
use kafka_wire::codec::messages::find_coordinator::Coordinator;
use kafka_wire::codec::messages::metadata::MetadataResponseBroker;
use kafka_wire::codec::messages::offset_commit::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_wire::codec::messages::offset_fetch::OffsetFetchResponseGroup;
use kafka_wire::codec::messages::{
    ApiVersionsRequest, DescribeClusterRequest, DescribeClusterResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_wire::codec::{ApiKey, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_FRAME: usize = 16 << 20;

/// One request a node read.
#[derive(Clone, Debug)]
pub struct Seen {
    pub api: ApiKey,
    pub version: i16,
    /// When the node had read it.
    pub received: Instant,
    /// When its answer was handed to the socket (`None`: not answered).
    pub answered: Option<Instant>,
    /// The throttle time its answer reported.
    pub throttle_ms: i32,
    /// FindCoordinator: the keys asked for.
    pub keys: Vec<String>,
}

/// How one node behaves, switchable while it runs, and what it saw.
#[derive(Default)]
pub struct NodeControl {
    /// Reads every request and answers none (a stopped process whose sockets stay open).
    pub silent: AtomicBool,
    /// The throttle time the next answer reports (then back to 0).
    pub throttle_next_ms: AtomicI32,
    /// How many of the next OffsetFetch/OffsetCommit requests are answered NOT_COORDINATOR.
    pub not_coordinator: AtomicU32,
    pub seen: Mutex<Vec<Seen>>,
}

impl NodeControl {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self, api: ApiKey) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| s.api == api).count()
    }
}

struct Shared {
    ports: Vec<u16>,
    nodes: Vec<NodeControl>,
    coordinator: AtomicI32,
}

/// A running fake cluster; its tasks end with the runtime.
pub struct QuotaCluster {
    shared: Arc<Shared>,
}

impl QuotaCluster {
    /// Binds `nodes` listeners on ephemeral ports and serves on the current tokio runtime;
    /// node 1 coordinates every group and transactional id.
    pub async fn start(nodes: usize) -> Self {
        let mut listeners = Vec::new();
        for _ in 0..nodes {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1"));
        }
        let ports = listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect();
        let shared = Arc::new(Shared {
            ports,
            nodes: (0..nodes).map(|_| NodeControl::default()).collect(),
            coordinator: AtomicI32::new(1),
        });
        for (i, listener) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    let _ = sock.set_nodelay(true);
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

    /// Makes node `id` the coordinator of every key.
    pub fn set_coordinator(&self, id: i32) {
        self.shared.coordinator.store(id, Ordering::Release);
    }
}

async fn serve(mut sock: TcpStream, shared: Arc<Shared>, node: usize) {
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Ok(Some(frame)) = split_frame(&mut inbuf, MAX_FRAME) {
            let received = Instant::now();
            let control = &shared.nodes[node];
            let silent = control.silent.load(Ordering::Acquire);
            let mut out = BytesMut::new();
            let Some(mut seen) = handle(frame, &shared, node, (!silent).then_some(&mut out)) else {
                return;
            };
            seen.received = received;
            let index = {
                let mut log = control.seen.lock().unwrap();
                log.push(seen);
                log.len() - 1
            };
            if !out.is_empty() {
                // Stamped before the write, so that it precedes the client's reading the answer.
                control.seen.lock().unwrap()[index].answered = Some(Instant::now());
                if sock.write_all(&out).await.is_err() {
                    return;
                }
            }
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

/// Reads one request and appends its answer to `out` (if answering); `None` closes.
fn handle(mut frame: Bytes, shared: &Shared, node: usize, out: Option<&mut BytesMut>) -> Option<Seen> {
    if frame.len() < 4 {
        return None;
    }
    let api_key = ApiKey(i16::from_be_bytes([frame[0], frame[1]]));
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let control = &shared.nodes[node];
    let mut seen =
        Seen { api: api_key, version, received: Instant::now(), answered: None, throttle_ms: 0, keys: vec![] };
    let mut scratch = BytesMut::new();
    let answering = out.is_some();
    let out = out.unwrap_or(&mut scratch);
    let throttle = |seen: &mut Seen| {
        if !answering {
            return 0;
        }
        let t = control.throttle_next_ms.swap(0, Ordering::AcqRel);
        seen.throttle_ms = t;
        t
    };
    let coordinator = shared.coordinator.load(Ordering::Acquire);
    match api_key {
        ApiKey::API_VERSIONS => answer_api_versions(
            &mut frame,
            version,
            vec![
                api::<ApiVersionsRequest>(),
                api::<MetadataRequest>(),
                api::<DescribeClusterRequest>(),
                api::<FindCoordinatorRequest>(),
                api::<OffsetFetchRequest>(),
                api::<OffsetCommitRequest>(),
            ],
            out,
        )?,
        ApiKey::METADATA => {
            let (header, _) = decode::<MetadataRequest>(&mut frame, version)?;
            let response = MetadataResponse {
                throttle_time_ms: throttle(&mut seen),
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
                cluster_id: Some("quota-cluster".into()),
                controller_id: 1,
                ..Default::default()
            };
            respond::<MetadataRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::DESCRIBE_CLUSTER => {
            let (header, _) = decode::<DescribeClusterRequest>(&mut frame, version)?;
            let response = DescribeClusterResponse {
                throttle_time_ms: throttle(&mut seen),
                cluster_id: "quota-cluster".into(),
                controller_id: 1,
                brokers: shared
                    .ports
                    .iter()
                    .enumerate()
                    .map(|(i, port)| DescribeClusterBroker {
                        broker_id: i as i32 + 1,
                        host: "127.0.0.1".into(),
                        port: i32::from(*port),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            respond::<DescribeClusterRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::FIND_COORDINATOR => {
            let (header, request) = decode::<FindCoordinatorRequest>(&mut frame, version)?;
            let port = i32::from(shared.ports[coordinator as usize - 1]);
            let mut response = FindCoordinatorResponse { throttle_time_ms: throttle(&mut seen), ..Default::default() };
            if version >= 4 {
                seen.keys = request.coordinator_keys.iter().map(ToString::to_string).collect();
                response.coordinators = seen
                    .keys
                    .iter()
                    .map(|k| Coordinator {
                        key: k.as_str().into(),
                        node_id: coordinator,
                        host: "127.0.0.1".into(),
                        port,
                        ..Default::default()
                    })
                    .collect();
            } else {
                seen.keys = vec![request.key.to_string()];
                (response.node_id, response.host, response.port) = (coordinator, "127.0.0.1".into(), port);
            }
            respond::<FindCoordinatorRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::OFFSET_FETCH => {
            let (header, request) = decode::<OffsetFetchRequest>(&mut frame, version)?;
            let error = coordinator_error(control, node, coordinator, answering);
            let response = OffsetFetchResponse {
                throttle_time_ms: throttle(&mut seen),
                error_code: if version < 8 { error } else { ErrorCode::NONE },
                groups: request
                    .groups
                    .iter()
                    .map(|g| OffsetFetchResponseGroup {
                        group_id: g.group_id.clone(),
                        error_code: error,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            respond::<OffsetFetchRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::OFFSET_COMMIT => {
            let (header, request) = decode::<OffsetCommitRequest>(&mut frame, version)?;
            let error = coordinator_error(control, node, coordinator, answering);
            let response = OffsetCommitResponse {
                throttle_time_ms: throttle(&mut seen),
                topics: request
                    .topics
                    .iter()
                    .map(|t| OffsetCommitResponseTopic {
                        name: t.name.clone(),
                        topic_id: t.topic_id,
                        partitions: t
                            .partitions
                            .iter()
                            .map(|p| OffsetCommitResponsePartition {
                                partition_index: p.partition_index,
                                error_code: error,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            respond::<OffsetCommitRequest>(out, header.correlation_id, &response, version);
        }
        _ => return None,
    }
    Some(seen)
}

/// NOT_COORDINATOR if this node is not the coordinator or was told to say so.
fn coordinator_error(control: &NodeControl, node: usize, coordinator: i32, answering: bool) -> ErrorCode {
    if node as i32 + 1 != coordinator {
        return ErrorCode::NOT_COORDINATOR;
    }
    let told = answering
        && control.not_coordinator.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok();
    if told {
        ErrorCode::NOT_COORDINATOR
    } else {
        ErrorCode::NONE
    }
}
