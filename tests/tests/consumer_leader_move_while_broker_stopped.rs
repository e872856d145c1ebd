//! A consumer whose partition's leader is stopped (SIGSTOP: a hung broker that keeps its sockets
//! open) follows the partition to its new leader while the old one is still stopped, rather than
//! waiting for its fetch to the stopped broker to time out. On the 3-node cluster (`cargo xtask
//! kafka up --nodes 3`; the test skips loudly when it is not up).
//!
//! One partition, replication factor 3. The consumer reads what was produced, and so has a fetch
//! in flight to the leader (a long poll) when the leader is stopped. Once a running node names a
//! new leader, records produced there must reach the consumer within a bound far shorter than
//! the consumer's request timeout, with the old leader still stopped. Then the old leader is
//! resumed (it is however the test ends), and what it answers to the fetch it held is not taken:
//! the records produced next come out exactly once, in order.

use std::time::{Duration, Instant};

use kafka_wire::client::{
    Client, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire_tests::raw::{create_topic, partition_leaders};
use kafka_wire_tests::{cluster3_for, kafka_node_addr, kafka_node_pause, kafka_node_paused, unique_topic};

/// The consumer's request timeout: its fetch to the stopped broker fails only after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(180);
/// How long after the new leader is known the records produced there may take to arrive: the
/// brokers' own fencing, a metadata refresh, a position validation and a fetch, on a loaded
/// machine; far less than [`REQUEST_TIMEOUT`].
const BOUND: Duration = Duration::from_secs(60);

async fn consume(consumer: &Consumer, n: usize, bound: Duration, what: &str) -> Vec<String> {
    let deadline = Instant::now() + bound;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(Instant::now() < deadline, "{what}: {} of {n} records after {bound:?}: {got:?}", got.len());
        let records = consumer.poll(Duration::from_millis(500)).await.expect("poll");
        got.extend(
            records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()),
        );
    }
    got
}

// The cluster3_exclusive guard is held for the whole test on purpose (the test's own future is
// never moved to another thread: block_on runs it).
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_partition_moves_to_its_new_leader_while_the_old_one_is_stopped() {
    let Some((bs, _exclusive)) = cluster3_for("consumer_leader_move_while_broker_stopped") else { return };
    let client = Client::connect(ClientConfig::new(&bs)).await.expect("connect to the 3-node cluster");
    let topic = unique_topic("leader-move-stopped");
    create_topic(&client, &topic, 1, 3, &[("min.insync.replicas", "1"), ("unclean.leader.election.enable", "false")])
        .await;
    let (_, leaders) = partition_leaders(&client, &topic).await;
    let old = u8::try_from(leaders[&0]).expect("node ids are 1..=3");
    let running = (1..=3).find(|n| *n != old).expect("another node");

    let producer = Producer::new(ProducerConfig::new(&bs)).await.expect("producer");
    for i in 0..10 {
        let delivery =
            producer.send(ProducerRecord::new(&topic, format!("before-{i}")).partition(0)).await.expect("send");
        tokio::time::timeout(BOUND, delivery).await.expect("acknowledged in time").expect("acknowledged");
    }
    producer.close().await.expect("close producer");

    let mut config = ConsumerConfig::new(&bs).auto_offset_reset(OffsetReset::Earliest);
    config.request_timeout = REQUEST_TIMEOUT;
    let consumer = Consumer::new(config).await.expect("consumer");
    consumer.assign([TopicPartition::new(topic.as_str(), 0)]);
    let before = consume(&consumer, 10, BOUND, "before the stop").await;
    assert_eq!(before, (0..10).map(|i| format!("before-{i}")).collect::<Vec<_>>());
    // Caught up: the consumer long-polls the leader, which is stopped now.
    let stopped = kafka_node_pause(old);
    let stopped_at = Instant::now();

    // A client of a running node only, so that nothing of the test waits for the stopped one.
    let observer =
        Client::connect(ClientConfig::new(&kafka_node_addr(running))).await.expect("connect to a running node");
    let new = loop {
        let (_, leaders) = partition_leaders(&observer, &topic).await;
        match leaders[&0] {
            l if l >= 0 && l != i32::from(old) => break l,
            _ => {}
        }
        assert!(stopped_at.elapsed() < BOUND, "no new leader {BOUND:?} after node {old} was stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("[leader move] node {old} stopped; node {new} leads after {:?}", stopped_at.elapsed());
    let producer = Producer::new(ProducerConfig::new(&kafka_node_addr(running))).await.expect("producer");
    for i in 0..10 {
        let delivery =
            producer.send(ProducerRecord::new(&topic, format!("after-{i}")).partition(0)).await.expect("send");
        tokio::time::timeout(BOUND, delivery).await.expect("acknowledged in time").expect("acknowledged");
    }
    let moved_at = Instant::now();
    let after = consume(&consumer, 10, BOUND, "from the new leader while the old one is stopped").await;
    eprintln!("[leader move] records from the new leader {:?} after they were acknowledged", moved_at.elapsed());
    assert_eq!(after, (0..10).map(|i| format!("after-{i}")).collect::<Vec<_>>());
    assert!(kafka_node_paused(old), "node {old} was resumed before the consumer moved");
    // Resumed, the old leader answers the fetch it held: nothing of it is taken (it would come
    // out again, or out of order, after what the new leader served).
    drop(stopped);
    for i in 0..5 {
        let delivery =
            producer.send(ProducerRecord::new(&topic, format!("late-{i}")).partition(0)).await.expect("send");
        tokio::time::timeout(BOUND, delivery).await.expect("acknowledged in time").expect("acknowledged");
    }
    let late = consume(&consumer, 5, BOUND, "after the old leader was resumed").await;
    assert_eq!(late, (0..5).map(|i| format!("late-{i}")).collect::<Vec<_>>());
    producer.close().await.expect("close producer");
    consumer.close().await.expect("close consumer");
}
