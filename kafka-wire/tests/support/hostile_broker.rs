//! An in-process fake Kafka broker on 127.0.0.1 whose answers the test writes whole, for faults
//! a real broker does not produce: partition indexes far beyond a topic's partition count,
//! record batches with a bad CRC, decompression bombs, group assignments built to be expensive.
//!
//! It is one node (id 1), the coordinator of every group. It serves ApiVersions itself (every
//! version this codec knows of the APIs below) and hands every other request to the test's
//! [`Script`]: Metadata (the node's address is filled in), ListOffsets (offset 0 unless the
//! script says otherwise), Fetch, FindCoordinator (this node) and DescribeGroups. A Fetch answer
//! with no records is held back for up to the request's `max_wait_ms` (at most 100 ms), as a
//! broker long-polls, so that an idle consumer does not spin.
//!
//! ```ignore
//! #[path = "support/hostile_broker.rs"]
//! mod hostile_broker;
//! let broker = hostile_broker::HostileBroker::start(MyScript).await;
//! ```

#![allow(dead_code)]

#[path = "frames.rs"]
mod frames;
use frames::{answer_api_versions, api, decode, respond};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::frame::split_frame;
use kafka_wire::codec::messages::fetch::{FetchableTopicResponse, PartitionData};
use kafka_wire::codec::messages::list_offsets::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_wire::codec::messages::metadata::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_wire::codec::messages::{
    ApiVersionsRequest, DescribeGroupsRequest, DescribeGroupsResponse, FetchRequest, FetchResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, ListOffsetsRequest, ListOffsetsResponse, Message, MetadataRequest,
    MetadataResponse,
};
use kafka_wire::codec::{ApiKey, ErrorCode, Uuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The broker's node id.
pub const NODE_ID: i32 = 1;
/// The topic id [`topic_metadata`] gives.
pub const TOPIC_ID: Uuid = Uuid([0x7a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
const MAX_FRAME: usize = 64 << 20;

/// What the broker answers. Metadata's brokers list is filled in by the broker.
pub trait Script: Send + Sync + 'static {
    fn metadata(&self, request: &MetadataRequest) -> MetadataResponse;

    /// Every partition at offset 0 by default.
    fn list_offsets(&self, request: &ListOffsetsRequest) -> ListOffsetsResponse {
        ListOffsetsResponse {
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
                            error_code: ErrorCode::NONE,
                            timestamp: -1,
                            offset: 0,
                            leader_epoch: 0,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// No records by default.
    fn fetch(&self, request: &FetchRequest) -> FetchResponse {
        empty_fetch(request)
    }

    fn describe_groups(&self, request: &DescribeGroupsRequest) -> DescribeGroupsResponse {
        let _ = request;
        DescribeGroupsResponse::default()
    }
}

/// A running hostile broker; its listener ends with the test's runtime.
#[derive(Clone)]
pub struct HostileBroker {
    addr: String,
    fetches: Arc<AtomicU64>,
}

struct Shared {
    port: u16,
    script: Box<dyn Script>,
    fetches: Arc<AtomicU64>,
}

impl HostileBroker {
    /// Binds 127.0.0.1 on an ephemeral port and serves `script` on the current tokio runtime.
    pub async fn start(script: impl Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("local addr").port();
        let fetches = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared { port, script: Box::new(script), fetches: fetches.clone() });
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                tokio::spawn(serve(sock, shared.clone()));
            }
        });
        Self { addr: format!("127.0.0.1:{port}"), fetches }
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// How many Fetch requests were answered.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }
}

async fn serve(mut sock: TcpStream, shared: Arc<Shared>) {
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    loop {
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
        ApiKey::API_VERSIONS => answer_api_versions(
            &mut frame,
            version,
            vec![
                api::<ApiVersionsRequest>(),
                api::<MetadataRequest>(),
                api::<ListOffsetsRequest>(),
                api::<FetchRequest>(),
                api::<FindCoordinatorRequest>(),
                api::<DescribeGroupsRequest>(),
            ],
            out,
        )?,
        ApiKey::METADATA => {
            let (header, request) = decode::<MetadataRequest>(&mut frame, version)?;
            let mut response = shared.script.metadata(&request);
            response.brokers = vec![MetadataResponseBroker {
                node_id: NODE_ID,
                host: "127.0.0.1".into(),
                port: i32::from(shared.port),
                rack: None,
                ..Default::default()
            }];
            response.controller_id = NODE_ID;
            response.cluster_id = Some("hostile-broker".into());
            respond::<MetadataRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::LIST_OFFSETS => {
            let (header, request) = decode::<ListOffsetsRequest>(&mut frame, version)?;
            respond::<ListOffsetsRequest>(out, header.correlation_id, &shared.script.list_offsets(&request), version);
        }
        ApiKey::FETCH => {
            let (header, request) = decode::<FetchRequest>(&mut frame, version)?;
            let response = shared.script.fetch(&request);
            let idle = response.responses.iter().flat_map(|t| &t.partitions).all(|p| p.records.is_none());
            if idle {
                let wait = request.max_wait_ms.clamp(0, 100) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            shared.fetches.fetch_add(1, Ordering::Relaxed);
            respond::<FetchRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::FIND_COORDINATOR => {
            let (header, request) = decode::<FindCoordinatorRequest>(&mut frame, version)?;
            let mut response = FindCoordinatorResponse {
                error_code: ErrorCode::NONE,
                node_id: NODE_ID,
                host: "127.0.0.1".into(),
                port: i32::from(shared.port),
                coordinators: request
                    .coordinator_keys
                    .iter()
                    .map(|key| kafka_wire::codec::messages::find_coordinator::Coordinator {
                        key: key.clone(),
                        node_id: NODE_ID,
                        host: "127.0.0.1".into(),
                        port: i32::from(shared.port),
                        error_code: ErrorCode::NONE,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            // Filled for every version, as a broker would; the encoder refuses what this version lacks.
            response.retain_version(version);
            respond::<FindCoordinatorRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::DESCRIBE_GROUPS => {
            let (header, request) = decode::<DescribeGroupsRequest>(&mut frame, version)?;
            let response = shared.script.describe_groups(&request);
            respond::<DescribeGroupsRequest>(out, header.correlation_id, &response, version);
        }
        _ => return None,
    }
    Some(())
}

/// A Metadata topic `name` with id [`TOPIC_ID`] whose partitions have these indexes, each led
/// by this node at leader epoch 0.
pub fn topic_metadata(name: &str, partition_indexes: &[i32]) -> MetadataResponseTopic {
    MetadataResponseTopic {
        error_code: ErrorCode::NONE,
        name: Some(name.into()),
        topic_id: TOPIC_ID,
        partitions: partition_indexes
            .iter()
            .map(|&i| MetadataResponsePartition {
                error_code: ErrorCode::NONE,
                partition_index: i,
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

/// A Fetch answer with no records for every partition asked about.
pub fn empty_fetch(request: &FetchRequest) -> FetchResponse {
    fetch_answer(request, |_, _| None)
}

/// A Fetch answer giving, for each partition asked about, `records(partition, fetch_offset)`
/// (`None`: nothing), with a high watermark of `i64::MAX / 2`.
pub fn fetch_answer(request: &FetchRequest, records: impl Fn(i32, i64) -> Option<Bytes>) -> FetchResponse {
    FetchResponse {
        error_code: ErrorCode::NONE,
        session_id: 0,
        responses: request
            .topics
            .iter()
            .map(|t| FetchableTopicResponse {
                topic: t.topic.clone(),
                topic_id: t.topic_id,
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| PartitionData {
                        partition_index: p.partition,
                        error_code: ErrorCode::NONE,
                        high_watermark: i64::MAX / 2,
                        last_stable_offset: i64::MAX / 2,
                        log_start_offset: 0,
                        records: records(p.partition, p.fetch_offset),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
