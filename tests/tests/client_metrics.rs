//! Issue #9: the client's metrics and router against the real broker (`cargo xtask kafka up`):
//! counters after a known sequence of requests, and group coordinators looked up once and shared
//! by everything built on one client.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_wire::client::{Admin, Client, ClientConfig, ConsumerConfig, NewTopic};
use kafka_wire::codec::frame::encode_request;
use kafka_wire::codec::messages::MetadataRequest;
use kafka_wire::{Consumer, OffsetAndMetadata, TopicPartition};
use kafka_wire_tests::{bootstrap, unique_topic};

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[tokio::test]
async fn metrics_count_a_known_sequence_of_requests() {
    let client = within("connect", Client::connect(ClientConfig::new(&bootstrap()))).await.expect("connect");
    let node = client.brokers()[0].node_id;
    let conn = within("connection", client.broker(node)).await.expect("connection");
    let before = client.metrics();
    let before = before.broker(node).cloned().expect("the broker's counters");

    let request = MetadataRequest { topics: Some(vec![]), ..Default::default() };
    for _ in 0..3 {
        within("metadata", client.send(node, &request)).await.expect("metadata");
    }

    let after = client.metrics();
    let after = after.broker(node).expect("the broker's counters");
    assert_eq!(after.requests_sent - before.requests_sent, 3, "{after:?}");
    assert_eq!(after.latency.count - before.latency.count, 3);
    assert_eq!(after.request_errors, before.request_errors);
    assert_eq!(after.in_flight, 0);
    // Each request is the same size on the wire: the correlation id is a fixed-width field.
    let version = conn.version_for::<MetadataRequest>().expect("version");
    let mut frame = bytes::BytesMut::new();
    encode_request(&mut frame, &request, version, 0, client.config().connection.client_id.as_deref()).expect("encode");
    assert_eq!(after.bytes_sent - before.bytes_sent, 3 * frame.len() as u64);
    assert!(after.bytes_received > before.bytes_received);
    assert!(after.latency.max > Duration::ZERO && after.latency.total >= after.latency.max);
    assert_eq!(after.latency.buckets.iter().sum::<u64>(), after.latency.count);
}

#[tokio::test]
async fn one_client_looks_a_group_coordinator_up_once_for_its_consumer_and_admin() {
    let client = within("connect", Client::connect(ClientConfig::new(&bootstrap()))).await.expect("connect");
    let admin = Admin::new(client.clone());
    let topic = unique_topic("metrics-coordinator");
    within("create topic", admin.create_topics(&[NewTopic::new(&topic, 1, 1)], false)).await.expect("topic");
    let group = unique_topic("metrics-coordinator-group");
    let consumer =
        Consumer::with_client(client.clone(), ConsumerConfig::new(&bootstrap()).group_id(&group)).expect("consumer");
    let tp = TopicPartition::new(topic.as_str(), 0);
    let lookups = client.metrics().coordinator_lookups;
    // Assigned with a group.id, the partition starts from the group's committed offset: the
    // first lookup, which everything after shares.
    consumer.assign([tp.clone()]);
    within("position", consumer.position(&tp)).await.expect("position");

    for offset in [0, 0, 0] {
        let offsets = BTreeMap::from([(tp.clone(), OffsetAndMetadata::new(offset))]);
        within("commit", consumer.commit_offsets(offsets)).await.expect("standalone commit");
    }
    let committed = within("committed", consumer.committed(std::slice::from_ref(&tp))).await.expect("committed");
    assert_eq!(committed[&tp].as_ref().map(|o| o.offset), Some(0));
    let listed = within("admin offsets", admin.list_group_offsets(&group, None)).await.expect("admin offsets");
    assert_eq!(listed.len(), 1);

    let metrics = client.metrics();
    assert_eq!(
        metrics.coordinator_lookups - lookups,
        1,
        "the assigned partition's committed offset, three commits, a committed() and an admin call share one FindCoordinator"
    );
    within("delete topic", admin.delete_topics(&[&topic])).await.expect("delete");
}

#[tokio::test]
async fn a_producer_counts_its_requests_batches_and_deliveries() {
    let producer = within("producer", kafka_wire::Producer::new(kafka_wire::ProducerConfig::new(&bootstrap())))
        .await
        .expect("producer");
    let admin = Admin::new(producer.client().clone());
    let topic = unique_topic("metrics-producer");
    within("create topic", admin.create_topics(&[NewTopic::new(&topic, 2, 1)], false)).await.expect("topic");
    let requests_before = producer.client().metrics().requests_sent();

    let mut deliveries = Vec::new();
    for i in 0..100 {
        let record = kafka_wire::ProducerRecord::new(topic.as_str(), format!("v{i}")).partition(i % 2);
        deliveries.push(within("send", producer.send(record)).await.expect("send"));
    }
    for delivery in deliveries {
        within("delivery", delivery).await.expect("delivered");
    }

    let m = producer.metrics();
    assert_eq!((m.records_delivered, m.records_failed), (100, 0), "{m:?}");
    assert!(m.produce_requests >= 1 && m.batches_sent >= 2, "two partitions take two batches at least: {m:?}");
    assert!(m.batches_sent >= m.produce_requests, "{m:?}");
    assert_eq!((m.buffered_bytes, m.requests_in_flight), (0, 0), "everything is answered: {m:?}");
    // The producer's requests are the client's too.
    assert!(producer.client().metrics().requests_sent() - requests_before >= m.produce_requests);
    producer.close().await.expect("close");
}
