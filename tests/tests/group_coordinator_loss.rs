//! A group member whose coordinator fails between two polls, on the 3-node cluster (`cargo
//! xtask kafka up --nodes 3`; the test skips loudly when it is not up).
//!
//! The member's lease lapses while the coordinator is down (its session timeout, 2 s, is
//! shorter than the cluster's `broker.session.timeout.ms`, 3 s, after which the coordinator's
//! partition moves), so it loses its partitions on the driver task while the application holds
//! records it polled. Until a `poll` has told the application, the member must not rejoin:
//! `group_metadata()` must not return a newer generation (a transaction would commit the old
//! records' offsets with it) and the position must not move (the new generation's committed
//! offsets would hand the same records out again).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_wire::client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, CoordinatorType, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, RebalanceListener,
};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{cluster3_for, kafka_node_kill, kafka_node_start, unique_topic, RestartOnDrop};

/// Bound on each wait (a failover included).
const DEADLINE: Duration = Duration::from_secs(90);

/// The rebalance callbacks, in order.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<String>>>);

impl RebalanceListener for Calls {
    fn on_partitions_revoked<'a>(
        &'a self,
        _: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        self.0.lock().unwrap().push(format!("revoked {}", partitions.len()));
        Box::pin(async {})
    }

    fn on_partitions_assigned<'a>(
        &'a self,
        _: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        self.0.lock().unwrap().push(format!("assigned {}", partitions.len()));
        Box::pin(async {})
    }

    fn on_partitions_lost<'a>(
        &'a self,
        _: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        self.0.lock().unwrap().push(format!("lost {}", partitions.len()));
        Box::pin(async {})
    }
}

// The cluster3_for guard is held for the whole test on purpose (block_on runs the test's future
// on this thread).
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_member_that_lost_its_coordinator_between_polls_waits_for_poll_to_rejoin() {
    let Some((bs, _exclusive)) = cluster3_for("group_coordinator_loss") else { return };
    let client = Client::connect(ClientConfig::new(&bs)).await.expect("connect to the 3-node cluster");
    let topic = unique_topic("gcl");
    let group = unique_topic("gcl-group");
    create_topic(&client, &topic, 1, 3, &[("min.insync.replicas", "2")]).await;
    let producer = Producer::new(ProducerConfig::new(&bs)).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..100 {
        deliveries.push(producer.send(ProducerRecord::new(topic.as_str(), format!("{i}")).partition(0)).await.unwrap());
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await.unwrap();

    let consumer = Consumer::new(
        ConsumerConfig::new(&bs)
            .group_id(&group)
            .auto_offset_reset(OffsetReset::Earliest)
            .enable_auto_commit(false)
            .max_poll_records(10)
            .session_timeout(Duration::from_secs(2))
            .heartbeat_interval(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let calls = Calls::default();
    consumer.set_rebalance_listener(calls.clone());
    consumer.subscribe([topic.as_str()]).unwrap();
    let tp = TopicPartition::new(topic.as_str(), 0);
    // Generation 1: the first 10 records, offsets committed so that the next generation would
    // start at 0 were it to fetch them (nothing committed: earliest).
    let batch = tokio::time::timeout(DEADLINE, async {
        loop {
            let records = consumer.poll(Duration::from_millis(200)).await.expect("poll");
            if !records.is_empty() {
                return records;
            }
        }
    })
    .await
    .expect("the first records within the deadline");
    assert_eq!(batch.len(), 10, "max.poll.records");
    assert_eq!(batch[0].offset, 0);
    let generation = consumer.group_metadata().expect("in generation 1").generation_id;
    assert_eq!(consumer.positions().get(&tp).map(|o| o.offset), Some(10));

    let admin = Admin::new(client.clone());
    let coordinator = admin.find_coordinator(&group, CoordinatorType::Group).await.unwrap();
    let victim = u8::try_from(coordinator).expect("node ids are 1..=3");
    eprintln!("[group coordinator loss] killing node {victim}, the coordinator of the group");
    let _restart = RestartOnDrop(victim);
    tokio::task::spawn_blocking(move || kafka_node_kill(victim)).await.unwrap();

    // No poll from here on. Watch the consumer until the new coordinator has expired the member
    // that did not come back (the group is Empty there): had the member rejoined in the
    // background, the group would be Stable in a new generation instead.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut lost_seen = false;
    loop {
        match consumer.group_metadata() {
            Ok(m) => assert_eq!(
                m.generation_id, generation,
                "group_metadata() returned a new generation while the loss was not delivered by poll"
            ),
            Err(_) => lost_seen = true,
        }
        assert_eq!(
            consumer.positions().get(&tp).map(|o| o.offset),
            Some(10),
            "the position moved (or the partition went) while the loss was not delivered by poll"
        );
        assert_eq!(calls.0.lock().unwrap().as_slice(), ["assigned 1"], "no callback outside poll");
        if lost_seen {
            let described = admin.describe_groups(&[group.as_str()]).await;
            if let Ok(Some(g)) = described.as_ref().map(|d| d.first()) {
                if g.state == "Empty" {
                    eprintln!("[group coordinator loss] the group is empty on node {}", g.coordinator);
                    break;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "neither a rejoin nor the member's expiry on the new coordinator within {DEADLINE:?} (loss seen: \
             {lost_seen})"
        );
        // Observing an outside state (the coordinator's view): a look every 200 ms.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(lost_seen, "the member lost its generation while its coordinator was down");

    // The next poll tells the loss first, then rejoins, and starts again from the committed
    // offset (none: earliest), which is the point of the loss.
    let first_after = tokio::time::timeout(DEADLINE, async {
        loop {
            let records = consumer.poll(Duration::from_millis(200)).await.expect("poll");
            if !records.is_empty() {
                return records;
            }
        }
    })
    .await
    .expect("records again after the loss");
    let calls_now = calls.0.lock().unwrap().clone();
    assert_eq!(calls_now.get(1).map(String::as_str), Some("lost 1"), "the loss is told first: {calls_now:?}");
    assert_eq!(calls_now.get(2).map(String::as_str), Some("assigned 1"), "{calls_now:?}");
    let rejoined = consumer.group_metadata().expect("in a generation again").generation_id;
    assert!(rejoined > generation, "a new generation after the loss: {rejoined} vs {generation}");
    assert_eq!(first_after[0].offset, 0, "nothing was committed: the new generation starts at the beginning");
    consumer.close().await.unwrap();
    tokio::task::spawn_blocking(move || kafka_node_start(victim)).await.unwrap();
}
