//! The producer when a partition leader stops answering and the cluster elects another: the
//! partition's batches must go to the new leader once the request to the old one times out, in
//! order, with their sequence numbers, and nothing acknowledged may be lost or written twice.
//!
//! A real cluster does this on demand only slowly and without telling what the producer sent
//! where, so the cluster here is a fake of two nodes sharing one replicated partition log: the
//! node that leads the partition (as the test sets it) appends idempotent batches in sequence
//! order and answers a re-sent batch as the duplicate it is; the other answers
//! NOT_LEADER_OR_FOLLOWER. A stopped node keeps accepting connections (as the kernel does for a
//! SIGSTOPped process) and answers nothing on them, ApiVersions included.

#[path = "support/frames.rs"]
mod frames;

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use frames::{answer_api_versions, api, decode, respond};
use kafka_wire::client::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use kafka_wire::codec::frame::split_frame;
use kafka_wire::codec::messages::metadata::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_wire::codec::messages::produce::{PartitionProduceResponse, TopicProduceResponse};
use kafka_wire::codec::messages::{
    ApiVersionsRequest, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse,
};
use kafka_wire::codec::record_batch::{RecordBatch, MAX_BUILDER_SIZE};
use kafka_wire::codec::{ApiKey, ErrorCode, Uuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const TOPIC: &str = "moving";
const TOPIC_ID: Uuid = Uuid([0x6d; 16]);
const MAX_FRAME: usize = 16 << 20;
/// Bound on every wait: it only turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(60);

/// One batch of the partition's log.
struct Appended {
    base_offset: i64,
    base_sequence: i32,
    values: Vec<Bytes>,
}

#[derive(Default)]
struct Node {
    /// Stopped: reads every request and answers none.
    stopped: AtomicBool,
    /// While stopped, the next Produce request is appended to the log (it reached the other
    /// replicas) but not answered, as if the node stopped right after.
    append_next_then_stop: AtomicBool,
    connections: AtomicU64,
    produce_requests: AtomicU64,
}

struct Shared {
    ports: Vec<u16>,
    /// The node leading partition 0, as Metadata says and as the nodes act.
    leader: AtomicI32,
    nodes: [Node; 2],
    /// The partition's log, shared by both nodes (replicated).
    log: Mutex<Vec<Appended>>,
    /// Notified after every request a node read.
    changed: Notify,
}

impl Shared {
    fn node(&self, id: i32) -> &Node {
        &self.nodes[id as usize - 1]
    }

    fn addr(&self, id: i32) -> String {
        format!("127.0.0.1:{}", self.ports[id as usize - 1])
    }

    /// Waits (without polling) until `done` holds; panics after [`WAIT`] naming `what`.
    async fn wait_until(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let changed = self.changed.notified();
            if done() {
                return;
            }
            assert!(
                tokio::time::timeout_at(deadline, changed).await.is_ok(),
                "timed out after {WAIT:?} waiting for {what}"
            );
        }
    }
}

async fn start() -> Arc<Shared> {
    let listeners = [TcpListener::bind("127.0.0.1:0").await.unwrap(), TcpListener::bind("127.0.0.1:0").await.unwrap()];
    let shared = Arc::new(Shared {
        ports: listeners.iter().map(|l| l.local_addr().unwrap().port()).collect(),
        leader: AtomicI32::new(1),
        nodes: Default::default(),
        log: Mutex::new(Vec::new()),
        changed: Notify::new(),
    });
    for (i, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                shared.nodes[i].connections.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(serve(sock, shared.clone(), i as i32 + 1));
                shared.changed.notify_waiters();
            }
        });
    }
    shared
}

async fn serve(mut sock: TcpStream, shared: Arc<Shared>, node: i32) {
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::new();
    loop {
        while let Ok(Some(frame)) = split_frame(&mut inbuf, MAX_FRAME) {
            let handled = handle(frame, &shared, node, &mut out);
            shared.changed.notify_waiters();
            if handled.is_none() {
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

/// Appends the answer to one request to `out` (nothing while stopped); `None` closes.
fn handle(mut frame: Bytes, shared: &Shared, node: i32, out: &mut BytesMut) -> Option<()> {
    let control = shared.node(node);
    let api_key = ApiKey(i16::from_be_bytes([*frame.first()?, *frame.get(1)?]));
    let version = i16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]);
    if control.stopped.load(Ordering::Acquire) {
        if api_key == ApiKey::PRODUCE && control.append_next_then_stop.swap(false, Ordering::AcqRel) {
            control.produce_requests.fetch_add(1, Ordering::AcqRel);
            let (_, request) = decode::<ProduceRequest>(&mut frame, version)?;
            produce(shared, node, &request);
        } else if api_key == ApiKey::PRODUCE {
            control.produce_requests.fetch_add(1, Ordering::AcqRel);
        }
        return Some(());
    }
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
            respond::<MetadataRequest>(out, header.correlation_id, &metadata(shared), version);
        }
        ApiKey::INIT_PRODUCER_ID => {
            let (header, _) = decode::<InitProducerIdRequest>(&mut frame, version)?;
            let response = InitProducerIdResponse { producer_id: 7, producer_epoch: 0, ..Default::default() };
            respond::<InitProducerIdRequest>(out, header.correlation_id, &response, version);
        }
        ApiKey::PRODUCE => {
            control.produce_requests.fetch_add(1, Ordering::AcqRel);
            let (header, request) = decode::<ProduceRequest>(&mut frame, version)?;
            let response = produce(shared, node, &request);
            respond::<ProduceRequest>(out, header.correlation_id, &response, version);
        }
        _ => return None,
    }
    Some(())
}

fn metadata(shared: &Shared) -> MetadataResponse {
    let leader = shared.leader.load(Ordering::Acquire);
    MetadataResponse {
        brokers: (1..=2)
            .map(|id| MetadataResponseBroker {
                node_id: id,
                host: "127.0.0.1".into(),
                port: i32::from(shared.ports[id as usize - 1]),
                ..Default::default()
            })
            .collect(),
        cluster_id: Some("leader-move".into()),
        controller_id: 2,
        topics: vec![MetadataResponseTopic {
            name: Some(TOPIC.into()),
            topic_id: TOPIC_ID,
            partitions: vec![MetadataResponsePartition {
                partition_index: 0,
                leader_id: leader,
                replica_nodes: vec![1, 2],
                isr_nodes: vec![1, 2],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The leader appends a batch whose base sequence comes next and answers a re-sent one (same
/// base sequence as a batch in the log) with the offset it got the first time, as Kafka does;
/// any other sequence is OUT_OF_ORDER_SEQUENCE_NUMBER. Other nodes are not the leader.
fn produce(shared: &Shared, node: i32, request: &ProduceRequest) -> ProduceResponse {
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
                    let (error_code, base_offset) = if shared.leader.load(Ordering::Acquire) != node {
                        (ErrorCode::NOT_LEADER_OR_FOLLOWER, -1)
                    } else {
                        append(shared, p.records.clone().unwrap_or_default())
                    };
                    PartitionProduceResponse { index: p.index, error_code, base_offset, ..Default::default() }
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    ProduceResponse { responses, ..Default::default() }
}

fn append(shared: &Shared, records: Bytes) -> (ErrorCode, i64) {
    let Ok(batch) = RecordBatch::parse(records) else { return (ErrorCode::CORRUPT_MESSAGE, -1) };
    let Ok(values) =
        batch.records(MAX_BUILDER_SIZE).map(|r| r.map(|r| r.value.unwrap_or_default())).collect::<Result<Vec<_>, _>>()
    else {
        return (ErrorCode::CORRUPT_MESSAGE, -1);
    };
    let sequence = batch.header().base_sequence;
    let mut log = shared.log.lock().unwrap();
    if let Some(earlier) = log.iter().find(|b| b.base_sequence == sequence && b.values.len() == values.len()) {
        return (ErrorCode::NONE, earlier.base_offset);
    }
    let next_sequence: usize = log.iter().map(|b| b.values.len()).sum();
    if sequence as usize != next_sequence {
        return (ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, -1);
    }
    let base_offset = next_sequence as i64;
    log.push(Appended { base_offset, base_sequence: sequence, values });
    (ErrorCode::NONE, base_offset)
}

/// Queues record `i` (value `v{i}`) for partition 0.
async fn send(producer: &Producer, i: usize) -> DeliveryFuture {
    producer.send(ProducerRecord::new(TOPIC, format!("v{i}")).partition(0)).await.expect("send")
}

/// The leader of a partition stops answering with its connection open, right after a request
/// reached the other replica; the cluster then names the other node leader. Once the request
/// to the stopped leader times out, the producer must send the partition's batches (the one the
/// stopped node appended, the ones it never read, and those queued after) to the new leader,
/// in order and with their sequence numbers: every record is acknowledged once, at the offset
/// of its place in the log. It must not reconnect to the stopped node first: its connect is
/// accepted and the handshake left unanswered for another request timeout, which before held
/// the partition for two request timeouts (the batches stayed on the stopped node, and no
/// metadata was asked for until that handshake failed). Checked by events: the stopped node
/// gets no new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_batches_move_to_the_new_leader_after_the_old_one_times_out() {
    let cluster = start().await;
    let producer = Producer::new(
        ProducerConfig::new(&cluster.addr(2))
            .linger(Duration::ZERO)
            .request_timeout(Duration::from_secs(2))
            .delivery_timeout(Duration::from_secs(300))
            .retry_backoff(Duration::from_millis(10)),
    )
    .await
    .expect("connect to the fake cluster");
    let send = |i: usize| send(&producer, i);
    // The leader acknowledges some records, so it holds the producer's state.
    const BEFORE: usize = 5;
    for i in 0..BEFORE {
        let md = tokio::time::timeout(WAIT, send(i).await).await.expect("acknowledged by node 1").expect("record");
        assert_eq!(md.offset, i as i64);
    }
    assert_eq!(cluster.node(1).connections.load(Ordering::Acquire), 1, "one connection to the first leader");

    // Node 1 stops; its first unanswered request reaches the log all the same.
    cluster.node(1).append_next_then_stop.store(true, Ordering::Release);
    cluster.node(1).stopped.store(true, Ordering::Release);
    let produced_before = cluster.node(1).produce_requests.load(Ordering::Acquire);
    const MOVED: usize = 30;
    let mut deliveries = Vec::new();
    for i in BEFORE..BEFORE + MOVED / 2 {
        deliveries.push(send(i).await);
    }
    cluster
        .wait_until("a Produce request to the stopped node", || {
            cluster.node(1).produce_requests.load(Ordering::Acquire) > produced_before
        })
        .await;
    // The cluster elects node 2 (well before the producer's request times out, as a real one
    // fences a stopped broker within its session timeout).
    cluster.leader.store(2, Ordering::Release);
    for i in BEFORE + MOVED / 2..BEFORE + MOVED {
        deliveries.push(send(i).await);
    }
    for (i, delivery) in (BEFORE..).zip(deliveries) {
        let md = tokio::time::timeout(WAIT, delivery)
            .await
            .unwrap_or_else(|_| panic!("record {i} not acknowledged within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("record {i}: {e}"));
        assert_eq!(md.offset, i as i64, "record {i} acknowledged at its place in the log");
    }

    assert_eq!(
        cluster.node(1).connections.load(Ordering::Acquire),
        1,
        "the producer reconnected to the stopped node instead of asking where its partition moved"
    );
    assert!(cluster.node(2).produce_requests.load(Ordering::Acquire) > 0, "the new leader took the records");
    let values: Vec<Bytes> = cluster.log.lock().unwrap().iter().flat_map(|b| b.values.iter().cloned()).collect();
    let expected: Vec<Bytes> = (0..BEFORE + MOVED).map(|i| Bytes::from(format!("v{i}"))).collect();
    assert_eq!(values, expected, "every record once, in the order sent");
    // Nothing is left to re-send; the stopped node is not waited for.
    tokio::time::timeout(WAIT, producer.flush()).await.expect("flush").expect("flush");
}
