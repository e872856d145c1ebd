//! A partition paused, its fetched records dropped by the application, sought back and resumed
//! while another partition stays paused (as the handler runtime's exactly-once mode does when it
//! rewinds a partition while another worker's queue is full).

use std::time::Duration;

use kafka_wire::client::{
    Client, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, unique_topic};

const PER_PARTITION: i64 = 200;

/// The resumed partition was never fetched again while the other stayed paused: the other's
/// buffer counted against `queued.max.messages.kbytes`, so no Fetch went out at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_partition_resumed_while_another_stays_paused_is_fetched_again() {
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    let topic = unique_topic("pause-drop-resume");
    create_topic(&client, &topic, 2, 1, &[]).await;
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    // One record per batch, so that a partition's buffer holds many batches (the one being
    // handed out is not counted as buffered).
    for i in 0..2 * PER_PARTITION {
        let r = ProducerRecord::new(topic.as_str(), format!("record {i:06}")).partition((i % 2) as i32);
        producer.send(r).await.unwrap().await.unwrap();
    }
    producer.close().await.unwrap();

    // A small prefetch budget, which one partition's buffer fills.
    let mut config = ConsumerConfig::new(&bootstrap()).auto_offset_reset(OffsetReset::Earliest).max_poll_records(10);
    config.prefetch_max_bytes = 4096;
    config.max_partition_fetch_bytes = 8192;
    let consumer = Consumer::new(config).await.unwrap();
    let p0 = TopicPartition::new(topic.as_str(), 0);
    let p1 = TopicPartition::new(topic.as_str(), 1);
    consumer.assign([p0.clone(), p1.clone()]);
    let mut next = [0i64; 2];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while next.contains(&0) {
        assert!(tokio::time::Instant::now() < deadline, "no records of both partitions: {next:?}");
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            next[r.partition as usize] = r.offset + 1;
        }
    }
    // Both queues full: both paused, with what they fetched. 0's queued records are dropped: it
    // goes back to its first and is resumed; 1 stays paused.
    consumer.pause(&[p0.clone(), p1.clone()]).unwrap();
    consumer.seek(&p0, 0).unwrap();
    consumer.resume(std::slice::from_ref(&p0)).unwrap();
    let mut expected = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while expected < PER_PARTITION {
        assert!(
            tokio::time::Instant::now() < deadline,
            "partition 0 stalled at {expected} of {PER_PARTITION} while 1 is paused"
        );
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            assert_eq!((r.partition, r.offset), (0, expected), "partition 0 from its start, in order");
            expected += 1;
        }
    }
    consumer.close().await.unwrap();
}
