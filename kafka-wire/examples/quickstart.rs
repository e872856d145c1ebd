//! A first run against a local broker: create a topic, produce records with the idempotent
//! producer, and read them back with a consumer.
//!
//! `cargo xtask quickstart` starts the broker and runs this; or run it against any cluster:
//! `KAFKA_BOOTSTRAP=host:9092 cargo run --release -p kafka-wire --example quickstart`.

use std::time::{Duration, Instant};

use kafka_wire::client::{Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord};
use kafka_wire::codec::messages::create_topics::CreatableTopic;
use kafka_wire::codec::messages::CreateTopicsRequest;
use kafka_wire::codec::ErrorCode;
use kafka_wire::proto::producer::TopicPartition;

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let topic = format!("quickstart-{}", std::process::id());

    let producer = Producer::new(ProducerConfig::new(&bootstrap)).await?;
    let create = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: topic.as_str().into(),
            num_partitions: PARTITIONS,
            replication_factor: 1,
            ..Default::default()
        }],
        timeout_ms: 30_000,
        ..Default::default()
    };
    let created = producer.client().send_any(&create).await?;
    if created.topics[0].error_code != ErrorCode::NONE {
        return Err(format!("creating {topic}: {:?}", created.topics[0].error_code).into());
    }
    println!("created topic {topic} with {PARTITIONS} partitions on {bootstrap}");

    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let record = ProducerRecord::new(&topic, format!("event {i}")).key(format!("user-{}", i % 100));
        deliveries.push(producer.send(record).await?);
    }
    for d in deliveries {
        d.await?;
    }
    producer.close().await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {RECORDS} records in {secs:.2} s ({:.0} records/s, idempotent, acks=all)",
        RECORDS as f64 / secs
    );

    let consumer = Consumer::new(ConsumerConfig::new(&bootstrap).auto_offset_reset(OffsetReset::Earliest)).await?;
    consumer.assign((0..PARTITIONS).map(|p| TopicPartition::new(topic.as_str(), p)));
    let started = Instant::now();
    let mut read = 0;
    while read < RECORDS {
        let batch = consumer.poll(Duration::from_secs(10)).await?;
        if batch.is_empty() {
            return Err(format!("only {read} of {RECORDS} records came back").into());
        }
        read += batch.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!("consumed {read} records in {secs:.2} s ({:.0} records/s)", read as f64 / secs);
    consumer.close().await?;
    Ok(())
}
