//! The handler runtime's overhead per record against a bare consumer loop (prints figures; not
//! a test): fills a 6-partition topic with 100-byte records, then reads them all twice in the
//! same run — once with a group consumer polling in a loop, once through the runtime with a
//! handler that does nothing — and reports records/s and CPU seconds per million records.
//!
//! `cargo run --release -p handler --example overhead -- [BOOTSTRAP] [RECORDS]` (defaults
//! 127.0.0.1:9092 and 1 000 000).

#[path = "../../kafka-wire/examples/support/proc_stats.rs"]
mod proc_stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use handler::{HandlerError, Runtime, RuntimeConfig};
use kafka_wire::client::{Admin, ClientConfig, NewTopic, OffsetReset};
use kafka_wire::{Consumer, ConsumerConfig, ConsumerRecord, Producer, ProducerConfig, ProducerRecord};

const PARTITIONS: i32 = 6;

fn cpu() -> f64 {
    let (user, sys) = proc_stats::cpu_seconds("/proc/self/stat");
    user + sys
}

fn report(name: &str, records: u64, wall: Duration, cpu: f64) {
    println!(
        "{name:<28} {:>10.0} records/s   {:>6.3} CPU s / 1M records   ({records} records in {:.2} s)",
        records as f64 / wall.as_secs_f64(),
        cpu / (records as f64 / 1e6),
        wall.as_secs_f64()
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let n: u64 = args.next().map(|s| s.replace('_', "").parse()).transpose()?.unwrap_or(1_000_000);
    let topic = format!("handler-overhead-{}", std::process::id());
    let admin = Admin::connect(ClientConfig::new(&bootstrap)).await?;
    admin.create_topics(&[NewTopic::new(topic.as_str(), PARTITIONS, 1)], false).await?;
    let producer = Producer::new(ProducerConfig::new(&bootstrap)).await?;
    let value = vec![b'x'; 100];
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let key = format!("k{}", i % 1000);
        pending.push_back(producer.send(ProducerRecord::new(&topic, value.clone()).key(key)).await?);
        while pending.len() > 100_000 {
            pending.pop_front().expect("non-empty").await?;
        }
    }
    for d in pending {
        d.await?;
    }
    producer.close().await?;
    println!("{n} records of 100 B on {PARTITIONS} partitions; loadavg {}", proc_stats::loadavg());

    // A bare group consumer polling in a loop.
    let config = |group: &str| ConsumerConfig::new(&bootstrap).group_id(group).auto_offset_reset(OffsetReset::Earliest);
    let consumer = Consumer::new(config(&format!("{topic}-bare"))).await?;
    consumer.subscribe([topic.as_str()])?;
    let (start, cpu0) = (Instant::now(), cpu());
    let mut seen = 0u64;
    while seen < n {
        seen += consumer.poll(Duration::from_secs(1)).await?.len() as u64;
    }
    report("bare poll loop", n, start.elapsed(), cpu() - cpu0);
    consumer.close().await?;

    // The runtime, one key at a time per partition, then keys in parallel.
    // The default queue (1000 records a partition) and a deeper one: a partition whose queue
    // fills is paused, and each pause and resume costs it a fetch round trip.
    for (keys, queue) in [(1, 1000), (1, 10_000), (16, 10_000)] {
        let handled = Arc::new(AtomicU64::new(0));
        let h = handled.clone();
        let runtime_config = RuntimeConfig::new(config(&format!("{topic}-runtime-{keys}-{queue}")), [topic.as_str()])
            .key_parallelism(keys)
            .queue_capacity(queue);
        let runtime = Runtime::new(runtime_config, move |_r: ConsumerRecord| {
            h.fetch_add(1, Ordering::Relaxed);
            async { Ok::<(), HandlerError>(()) }
        })
        .await?;
        let (start, cpu0) = (Instant::now(), cpu());
        let done = handled.clone();
        let watch = async move {
            while done.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<(Duration, f64)>();
        let timing = async move {
            watch.await;
            let _ = tx.send((start.elapsed(), cpu() - cpu0));
        };
        runtime.run_until(timing).await?;
        let (wall, used) = rx.await?;
        report(&format!("runtime, keys {keys}, queue {queue}"), n, wall, used);
    }
    println!("max RSS (VmHWM) {:.1} MiB", proc_stats::status_kb("VmHWM").unwrap_or(0) as f64 / 1024.0);
    admin.delete_topics(&[topic.as_str()]).await?;
    Ok(())
}
