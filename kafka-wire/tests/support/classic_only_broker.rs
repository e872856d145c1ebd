//! An in-process fake broker of a cluster without the consumer group protocol (KIP-848): Kafka
//! before 4.0, or 4.x with `group.coordinator.rebalance.protocols=classic`. Its ApiVersions
//! lists ApiVersions, Metadata and FindCoordinator and no ConsumerGroupHeartbeat; it is one node
//! (id 1) leading every partition of one topic, and the coordinator of every group. Any other
//! request closes the connection.
//!
//! ```ignore
//! #[path = "support/classic_only_broker.rs"]
//! mod classic_only_broker;
//! let broker = classic_only_broker::ClassicOnlyBroker::start("topic", 2).await;
//! ```

#[path = "frames.rs"]
mod frames;
use frames::{answer_api_versions, api, decode, respond};

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::frame::split_frame;
use kafka_wire::codec::messages::find_coordinator::Coordinator;
use kafka_wire::codec::messages::metadata::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_wire::codec::messages::{
    ApiVersionsRequest, FindCoordinatorRequest, FindCoordinatorResponse, Message, MetadataRequest, MetadataResponse,
};
use kafka_wire::codec::{ApiKey, Uuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NODE_ID: i32 = 1;
const MAX_FRAME: usize = 1 << 20;

/// The running fake; it serves until the runtime ends.
pub struct ClassicOnlyBroker {
    addr: String,
}

#[derive(Clone)]
struct Cluster {
    port: u16,
    topic: String,
    partitions: i32,
}

impl ClassicOnlyBroker {
    /// Binds 127.0.0.1 on an ephemeral port and serves `topic` with `partitions` partitions.
    pub async fn start(topic: &str, partitions: i32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let cluster = Cluster { port, topic: topic.to_string(), partitions };
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, cluster.clone()));
            }
        });
        Self { addr: format!("127.0.0.1:{port}") }
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

async fn serve(mut sock: TcpStream, cluster: Cluster) {
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::new();
    loop {
        while let Ok(Some(frame)) = split_frame(&mut inbuf, MAX_FRAME) {
            if handle(frame, &cluster, &mut out).is_none() {
                let _ = sock.write_all(&out).await;
                return;
            }
        }
        if !out.is_empty() {
            if sock.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        match sock.read_buf(&mut inbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Appends the response to one request frame to `out`; `None` closes the connection.
fn handle(mut frame: Bytes, cluster: &Cluster, out: &mut BytesMut) -> Option<()> {
    if frame.len() < 4 {
        return None;
    }
    let api_key = ApiKey(i16::from_be_bytes([frame[0], frame[1]]));
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    match api_key {
        ApiKey::API_VERSIONS => answer_api_versions(
            &mut frame,
            version,
            vec![api::<ApiVersionsRequest>(), api::<MetadataRequest>(), api::<FindCoordinatorRequest>()],
            out,
        )?,
        ApiKey::METADATA => {
            let (header, _) = decode::<MetadataRequest>(&mut frame, version)?;
            let response = MetadataResponse {
                brokers: vec![MetadataResponseBroker {
                    node_id: NODE_ID,
                    host: "127.0.0.1".into(),
                    port: i32::from(cluster.port),
                    ..Default::default()
                }],
                cluster_id: Some("classic-only".into()),
                controller_id: NODE_ID,
                topics: vec![MetadataResponseTopic {
                    name: Some(cluster.topic.as_str().into()),
                    topic_id: Uuid([7; 16]),
                    partitions: (0..cluster.partitions)
                        .map(|p| MetadataResponsePartition {
                            partition_index: p,
                            leader_id: NODE_ID,
                            replica_nodes: vec![NODE_ID],
                            isr_nodes: vec![NODE_ID],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            respond::<MetadataRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::FIND_COORDINATOR => {
            let (header, request) = decode::<FindCoordinatorRequest>(&mut frame, version)?;
            let keys = if request.coordinator_keys.is_empty() { vec![request.key] } else { request.coordinator_keys };
            let mut response = FindCoordinatorResponse {
                node_id: NODE_ID,
                host: "127.0.0.1".into(),
                port: i32::from(cluster.port),
                coordinators: keys
                    .into_iter()
                    .map(|key| Coordinator {
                        key,
                        node_id: NODE_ID,
                        host: "127.0.0.1".into(),
                        port: i32::from(cluster.port),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            // Filled for every version, as a broker would; the encoder refuses what this version lacks.
            response.retain_version(version);
            respond::<FindCoordinatorRequest>(out, header.correlation_id, &response, version);
        }
        _ => return None,
    }
    Some(())
}
