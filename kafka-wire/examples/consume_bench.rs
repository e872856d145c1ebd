//! Consumer benchmark (prints figures; not a test): fills a 6-partition topic with 100-byte
//! records, then consumes them all from the earliest offset and reports records/s, MB/s, client
//! CPU seconds per million records (user + sys of this process, consuming phase only) and the
//! process's peak RSS.
//!
//! `cargo run --release -p kafka-wire --example consume_bench -- [BOOTSTRAP] [RECORDS]`
//! (defaults 127.0.0.1:9092 and 5 000 000). For comparison, Kafka's own tool on the same topic:
//! `cargo xtask kafka tool consumer-perf --bootstrap-server 127.0.0.1:9092 --topic T --messages N`.

#[path = "support/proc_stats.rs"]
mod proc_stats;

use std::time::{Duration, Instant};

use kafka_wire::client::{Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord};
use kafka_wire::codec::compression::Compression;
use kafka_wire::codec::messages::create_topics::CreatableTopic;
use kafka_wire::codec::messages::CreateTopicsRequest;
use kafka_wire::codec::ErrorCode;
use kafka_wire::proto::producer::TopicPartition;
use proc_stats::{cpu_seconds, loadavg, status_kb};

const PARTITIONS: i32 = 6;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let records: usize = args.next().map(|n| n.replace('_', "").parse()).transpose()?.unwrap_or(5_000_000);
    let topic = format!("consume-bench-{}", std::process::id());

    let producer = Producer::new(ProducerConfig::new(&bootstrap).compression(Compression::Lz4)).await?;
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
    let value = vec![b'x'; 100];
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..records {
        pending.push_back(
            producer
                .send(ProducerRecord::new(&topic, value.clone()).partition((i % PARTITIONS as usize) as i32))
                .await?,
        );
        // Bound the futures held, not the producer: its buffer.memory does the pacing.
        while pending.len() > 100_000 {
            if let Some(f) = pending.pop_front() {
                f.await?;
            }
        }
    }
    for f in pending {
        f.await?;
    }
    producer.close().await?;
    println!("filled {topic}: {records} records of 100 B (lz4) in {:.1} s", started.elapsed().as_secs_f64());

    let load_before = loadavg();
    let (u0, s0) = cpu_seconds("/proc/self/stat");
    let consumer =
        Consumer::new(ConsumerConfig::new(&bootstrap).auto_offset_reset(OffsetReset::Earliest).max_poll_records(5000))
            .await?;
    consumer.assign((0..PARTITIONS).map(|p| TopicPartition::new(topic.as_str(), p)));
    let started = Instant::now();
    let mut read = 0usize;
    let mut bytes = 0usize;
    while read < records {
        let batch = consumer.poll(Duration::from_secs(10)).await?;
        if batch.is_empty() {
            return Err(format!("stalled after {read} records").into());
        }
        read += batch.len();
        bytes += batch.iter().map(|r| r.value.as_ref().map_or(0, |v| v.len())).sum::<usize>();
    }
    let secs = started.elapsed().as_secs_f64();
    let (u1, s1) = cpu_seconds("/proc/self/stat");
    consumer.close().await?;
    let cpu = (u1 - u0) + (s1 - s0);
    println!("consumed {read} records in {secs:.2} s");
    println!("  records/s                  {:.0}", read as f64 / secs);
    println!("  MiB/s (values)             {:.1}", bytes as f64 / secs / (1 << 20) as f64);
    println!(
        "  client CPU s / 1M records  {:.2}  (user {:.2} s + sys {:.2} s)",
        cpu / read as f64 * 1e6,
        u1 - u0,
        s1 - s0
    );
    println!("  max RSS (VmHWM)            {:.1} MiB", status_kb("VmHWM").unwrap_or(0) as f64 / 1024.0);
    println!("  loadavg before / after     {load_before} / {}", loadavg());
    Ok(())
}
