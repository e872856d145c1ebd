//! A metadata answer that arrives after newer knowledge must not overwrite it.
//!
//! The race: a refresh is in flight when a partition's leader leaves a request unanswered; the
//! producer marks the partition leaderless (its batches must wait for a leader rather than go
//! back to a broker that does not answer), but the refresh was answered before the failure was
//! seen and still names the unresponsive broker. Applied as it is, it routes the partition's
//! batches back to that broker: a new connection to it, whose handshake hangs for another
//! request timeout, although the cluster has elected another leader meanwhile.
//!
//! The fake cluster here: two nodes, topic `raced` with partition 0 led by node 1 and
//! partition 1 by node 2, one shared log per partition. Node 1 can hold Produce requests
//! unanswered, drop its connections, and be stopped (it keeps accepting connections and
//! reading, and answers nothing). Node 2 can refuse the next Produce for partition 1
//! (NOT_LEADER_OR_FOLLOWER, which makes the producer refresh), and hold the next Metadata
//! answer, computed when the request arrived, until the test releases it.

#[path = "support/frames.rs"]
mod frames;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use frames::{answer_api_versions, api, decode, respond};
use kafka_wire::client::{Producer, ProducerConfig, ProducerRecord};
use kafka_wire::codec::frame::split_frame;
use kafka_wire::codec::messages::metadata::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_wire::codec::messages::produce::{PartitionProduceResponse, TopicProduceResponse};
use kafka_wire::codec::messages::{
    ApiVersionsRequest, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse,
};
use kafka_wire::codec::record_batch::BatchHeader;
use kafka_wire::codec::{ApiKey, ErrorCode, Uuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const TOPIC: &str = "raced";
const TOPIC_ID: Uuid = Uuid([0x72; 16]);
const MAX_FRAME: usize = 16 << 20;
/// Bound on every wait: it only turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Node {
    /// Reads every request and answers none.
    stopped: AtomicBool,
    /// Reads Produce requests and answers none.
    hold_produce: AtomicBool,
    produce_held: Notify,
    /// Closes the node's open connection (one permit).
    drop_connection: Notify,
    connections: AtomicU64,
}

struct Cluster {
    ports: Vec<u16>,
    nodes: [Node; 2],
    /// Leader node and leader epoch of partitions 0 and 1.
    leaders: Mutex<[(i32, i32); 2]>,
    /// Next offset of partitions 0 and 1.
    offsets: Mutex<[i64; 2]>,
    /// Node 2 answers the next Produce for partition 1 with NOT_LEADER_OR_FOLLOWER.
    refuse_partition_1: AtomicBool,
    /// Node 2 holds the next Metadata answer until `release`.
    hold_metadata: AtomicBool,
    metadata_held: Notify,
    held: AtomicBool,
    release: Notify,
}

async fn start() -> Arc<Cluster> {
    let listeners = [TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap()];
    let cluster = Arc::new(Cluster {
        ports: listeners.iter().map(|l| l.local_addr().unwrap().port()).collect(),
        nodes: Default::default(),
        leaders: Mutex::new([(1, 0), (2, 0)]),
        offsets: Mutex::new([0; 2]),
        refuse_partition_1: AtomicBool::new(false),
        hold_metadata: AtomicBool::new(false),
        metadata_held: Notify::new(),
        held: AtomicBool::new(false),
        release: Notify::new(),
    });
    for (i, listener) in listeners.into_iter().enumerate() {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                cluster.nodes[i].connections.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(serve(sock, cluster.clone(), i as i32 + 1));
            }
        });
    }
    cluster
}

async fn serve(mut sock: TcpStream, cluster: Arc<Cluster>, node: i32) {
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::new();
    loop {
        let control = &cluster.nodes[node as usize - 1];
        while let Ok(Some(frame)) = split_frame(&mut inbuf, MAX_FRAME) {
            if control.stopped.load(Ordering::Acquire) {
                continue;
            }
            let Some(hold) = handle(frame, &cluster, node, &mut out) else { return };
            if hold {
                cluster.held.store(true, Ordering::Release);
                let released = cluster.release.notified();
                cluster.metadata_held.notify_waiters();
                released.await;
            }
        }
        if !out.is_empty() {
            if sock.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        tokio::select! {
            read = sock.read_buf(&mut inbuf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = control.drop_connection.notified() => return,
        }
    }
}

/// Appends the answer to one request to `out`; `Some(true)` if it is a Metadata answer to hold
/// until released, `None` to close the connection.
fn handle(mut frame: Bytes, cluster: &Cluster, node: i32, out: &mut BytesMut) -> Option<bool> {
    let api_key = ApiKey(i16::from_be_bytes([*frame.first()?, *frame.get(1)?]));
    let version = i16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]);
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
            let (header, _) = decode::<MetadataRequest>(&mut frame, version)?;
            // The answer is what the cluster looks like now, however late it is sent.
            respond::<MetadataRequest>(out, header.correlation_id, &metadata(cluster), version);
            return Some(node == 2 && cluster.hold_metadata.swap(false, Ordering::AcqRel));
        }
        ApiKey::INIT_PRODUCER_ID => {
            let (header, _) = decode::<InitProducerIdRequest>(&mut frame, version)?;
            let response = InitProducerIdResponse { producer_id: 9, producer_epoch: 0, ..Default::default() };
            respond::<InitProducerIdRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::PRODUCE => {
            let (header, request) = decode::<ProduceRequest>(&mut frame, version)?;
            let control = &cluster.nodes[node as usize - 1];
            if control.hold_produce.load(Ordering::Acquire) {
                control.produce_held.notify_one();
                return Some(false);
            }
            respond::<ProduceRequest>(out, header.correlation_id, &produce(cluster, node, &request), version);
        }
        _ => return None,
    }
    Some(false)
}

fn metadata(cluster: &Cluster) -> MetadataResponse {
    let leaders = *cluster.leaders.lock().unwrap();
    MetadataResponse {
        brokers: (1..=2)
            .map(|id| MetadataResponseBroker {
                node_id: id,
                host: "127.0.0.1".into(),
                port: i32::from(cluster.ports[id as usize - 1]),
                ..Default::default()
            })
            .collect(),
        cluster_id: Some("refresh-race".into()),
        controller_id: 2,
        topics: vec![MetadataResponseTopic {
            name: Some(TOPIC.into()),
            topic_id: TOPIC_ID,
            partitions: (0..2)
                .map(|p| MetadataResponsePartition {
                    partition_index: p,
                    leader_id: leaders[p as usize].0,
                    leader_epoch: leaders[p as usize].1,
                    replica_nodes: vec![1, 2],
                    isr_nodes: vec![1, 2],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The leader of a partition appends its batches; any other node, or node 2 told to refuse
/// partition 1 once, answers NOT_LEADER_OR_FOLLOWER.
fn produce(cluster: &Cluster, node: i32, request: &ProduceRequest) -> ProduceResponse {
    let leaders = *cluster.leaders.lock().unwrap();
    let mut offsets = cluster.offsets.lock().unwrap();
    let responses = request
        .topic_data
        .iter()
        .map(|t| TopicProduceResponse {
            name: t.name.clone(),
            topic_id: t.topic_id,
            partition_responses: t
                .partition_data
                .iter()
                .map(|p| {
                    let i = p.index.clamp(0, 1) as usize;
                    let refused = leaders[i].0 != node
                        || (p.index == 1 && cluster.refuse_partition_1.swap(false, Ordering::AcqRel));
                    if refused {
                        return PartitionProduceResponse {
                            index: p.index,
                            error_code: ErrorCode::NOT_LEADER_OR_FOLLOWER,
                            base_offset: -1,
                            ..Default::default()
                        };
                    }
                    let mut rest = p.records.clone().unwrap_or_default();
                    let base_offset = offsets[i];
                    while let Ok(h) = BatchHeader::decode(&rest) {
                        if h.batch_length < 0 || h.size() > rest.len() {
                            break;
                        }
                        rest = rest.slice(h.size()..);
                        offsets[i] += i64::from(h.record_count);
                    }
                    PartitionProduceResponse {
                        index: p.index,
                        base_offset,
                        log_append_time_ms: -1,
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    ProduceResponse { responses, ..Default::default() }
}

/// Tells the test which nodes the producer found unresponsive (its debug event).
static FAILED_NODES: OnceLock<mpsc::UnboundedSender<i64>> = OnceLock::new();

struct FailureListener;

struct NodeField(Option<i64>, bool);

impl Visit for NodeField {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "node" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}").contains("its partitions wait for metadata") {
            self.1 = true;
        }
    }
}

impl Subscriber for FailureListener {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("kafka_wire::client::producer")
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = NodeField(None, false);
        event.record(&mut fields);
        if let (Some(node), true, Some(tx)) = (fields.0, fields.1, FAILED_NODES.get()) {
            let _ = tx.send(node);
        }
    }

    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_refresh_answered_before_a_leader_failed_does_not_route_back_to_it() {
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel();
    FAILED_NODES.set(failed_tx).expect("set once");
    tracing::subscriber::set_global_default(FailureListener).expect("the only subscriber of this test binary");
    let cluster = start().await;
    let addr2 = format!("127.0.0.1:{}", cluster.ports[1]);
    let config = ProducerConfig::new(&addr2)
        .linger(Duration::ZERO)
        .request_timeout(Duration::from_secs(10))
        .retry_backoff(Duration::from_millis(50));
    let producer = Producer::new(config).await.expect("producer");
    let record = |p: i32, v: &'static str| ProducerRecord::new(TOPIC, Bytes::from_static(v.as_bytes())).partition(p);
    for p in 0..2 {
        let d = producer.send(record(p, "warm-up")).await.expect("send");
        within("the warm-up records", d).await.expect("warm-up delivered");
    }

    // Partition 0's next request waits at node 1 (so that the refresh below goes to node 2,
    // the broker with fewer requests in flight).
    let node1 = &cluster.nodes[0];
    node1.hold_produce.store(true, Ordering::Release);
    let first = producer.send(record(0, "to partition 0")).await.expect("send");
    within("partition 0's request at node 1", node1.produce_held.notified()).await;
    // Partition 1 is refused once: the producer refreshes, and node 2 holds the answer, which
    // names node 1 as partition 0's leader.
    cluster.hold_metadata.store(true, Ordering::Release);
    cluster.refuse_partition_1.store(true, Ordering::Release);
    let held = cluster.metadata_held.notified();
    let second = producer.send(record(1, "to partition 1")).await.expect("send");
    if !cluster.held.load(Ordering::Acquire) {
        within("the refresh after NOT_LEADER_OR_FOLLOWER", held).await;
    }
    // Node 1 goes away while the refresh is out: its connection drops and it answers nothing.
    node1.stopped.store(true, Ordering::Release);
    node1.drop_connection.notify_one();
    let failed = within("the producer to see node 1 fail", failed_rx.recv()).await;
    assert_eq!(failed, Some(1), "the failed node");
    let connections_to_node_1 = node1.connections.load(Ordering::Acquire);

    // The cluster elects node 2, then the stale answer arrives.
    cluster.leaders.lock().unwrap()[0] = (2, 1);
    cluster.release.notify_waiters();
    let m = within("the record to partition 0", first).await.expect("delivered by the new leader");
    assert_eq!((m.topic_partition.partition, m.offset), (0, 1));
    within("the record to partition 1", second).await.expect("delivered");
    assert_eq!(
        cluster.nodes[0].connections.load(Ordering::Acquire),
        connections_to_node_1,
        "the stale answer sent partition 0 back to the unresponsive node 1"
    );
    assert!(failed_rx.try_recv().is_err(), "a node was found unresponsive again");
    node1.stopped.store(false, Ordering::Release);
    producer.close().await.expect("close");
}
