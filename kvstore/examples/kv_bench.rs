//! `cargo run --release -p kvstore --example kv_bench [-- BOOTSTRAP [KEYS [VALUE_BYTES]]]`:
//! figures of a `KvStore` on a compacted topic of KEYS keys (default 1 000 000, values of
//! VALUE_BYTES = 100 bytes), against a running broker (`cargo xtask kafka up`):
//!
//! - `get` latency, p50/p99 in ns, against a bare `HashMap` holding the same data;
//! - memory per key (bytes allocated while loading, kept after it) against the raw bytes of the
//!   keys and values;
//! - load time of the topic against the broker's own read rate, measured in the same run with
//!   Kafka's `kafka-consumer-perf-test` (`org.apache.kafka.tools.ConsumerPerformance`, from the
//!   jars under `.kafka/libs/`).
//!
//! The topic is deleted at the end.

#[path = "../../kafka-wire/tests/support/counting_alloc.rs"]
mod counting_alloc;

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_wire::client::{Admin, NewTopic};
use kafka_wire::{ClientConfig, Producer, ProducerConfig, ProducerRecord};
use kvstore::{KvConfig, KvStore, Raw};

#[global_allocator]
static ALLOCATOR: counting_alloc::Counting = counting_alloc::Counting;

const PARTITIONS: i32 = 3;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key-{i:07}"))
}

/// A value of `len` bytes that differs per key.
fn value(i: usize, len: usize) -> Bytes {
    let seed = format!("{i:x}");
    Bytes::from(seed.bytes().cycle().take(len).collect::<Vec<u8>>())
}

/// xorshift64: a cheap, reproducible sequence of key indexes to look up.
fn lookups(n: usize, keys: usize) -> Vec<Bytes> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            key((x % keys as u64) as usize)
        })
        .collect()
}

/// p50 and p99 of each call's time, in ns (the timer's own cost included, see `timer`).
fn latencies(keys: &[Bytes], mut get: impl FnMut(&Bytes)) -> (u64, u64) {
    let mut ns: Vec<u64> = keys
        .iter()
        .map(|k| {
            let t = Instant::now();
            get(k);
            t.elapsed().as_nanos() as u64
        })
        .collect();
    ns.sort_unstable();
    (ns[ns.len() / 2], ns[ns.len() * 99 / 100])
}

/// The jars of the Kafka version the cluster runs (`$KAFKA_VERSION`, else the only one there).
fn kafka_classpath() -> Option<String> {
    let libs = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.kafka/libs"));
    let version = match std::env::var("KAFKA_VERSION") {
        Ok(v) if !v.is_empty() => v,
        _ => std::fs::read_dir(&libs).ok()?.filter_map(Result::ok).next()?.file_name().to_string_lossy().into_owned(),
    };
    Some(format!("{}/{version}/*", libs.display()))
}

/// Kafka's consumer perf tool on `topic`: its `(MB/s, records/s)` over the fetch time (group
/// join excluded), and its output.
fn consumer_perf(bootstrap: &str, topic: &str, records: usize) -> Result<(f64, f64, String), String> {
    let classpath = kafka_classpath().ok_or("no Kafka jars under .kafka/libs (run `cargo xtask kafka up`)")?;
    let java =
        std::env::var_os("JAVA_HOME").map_or_else(|| PathBuf::from("java"), |h| PathBuf::from(h).join("bin/java"));
    let out = Command::new(java)
        .args(["-Xmx512m", "-XX:+UseG1GC", "-cp", &classpath, "org.apache.kafka.tools.ConsumerPerformance"])
        .args(["--bootstrap-server", bootstrap, "--topic", topic, "--messages", &records.to_string()])
        .args(["--timeout", "120000"])
        .output()
        .map_err(|e| format!("cannot run java: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // Header: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg,
    // nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    let line = stdout.lines().rev().find(|l| l.split(',').count() >= 10).ok_or_else(|| {
        format!("no result line; stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr))
    })?;
    let fields: Vec<f64> = line.split(',').map(|f| f.trim().parse().unwrap_or(f64::NAN)).collect();
    Ok((fields[8], fields[9], stdout))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let keys: usize = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let value_len: usize = args.next().map_or(Ok(100), |s| s.parse())?;
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros();
    let topic = format!("kv-bench-{}-{micros}", std::process::id());

    let admin = Admin::connect(ClientConfig::new(&bootstrap)).await?;
    admin.create_topics(&[NewTopic::new(&topic, PARTITIONS, -1).config("cleanup.policy", "compact")], false).await?;
    let producer =
        Producer::new(ProducerConfig::new(&bootstrap).linger(Duration::from_millis(20)).batch_size(512 * 1024)).await?;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(keys);
    for i in 0..keys {
        deliveries.push(producer.send(ProducerRecord::new(topic.as_str(), value(i, value_len)).key(key(i))).await?);
    }
    for d in deliveries {
        d.await?;
    }
    producer.close().await?;
    let raw_bytes: usize = (0..keys).map(|i| key(i).len() + value_len).sum();
    println!(
        "topic {topic}: {keys} keys, {PARTITIONS} partitions, values of {value_len} bytes, produced in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Load.
    let before = counting_alloc::current();
    let started = Instant::now();
    let store: KvStore<Bytes, Bytes, Raw> = KvStore::open_with(KvConfig::new(&bootstrap, &topic), Raw).await?;
    let load = started.elapsed();
    assert_eq!(store.len()?, keys, "the store does not hold every key");
    // The store's copies and whatever the consumer still buffers: what stays after loading.
    let store_bytes = counting_alloc::current().saturating_sub(before);
    let mb = raw_bytes as f64 / 1e6;
    println!(
        "load: {:.2} s = {:.0} records/s, {:.1} MB/s (keys+values)",
        load.as_secs_f64(),
        keys as f64 / load.as_secs_f64(),
        mb / load.as_secs_f64()
    );
    match consumer_perf(&bootstrap, &topic, keys) {
        Ok((mb_s, records_s, _)) => println!(
            "kafka-consumer-perf-test, same topic: {records_s:.0} records/s, {mb_s:.1} MB/s (fetch time, group join \
             excluded); the store loads at {:.2}x its rate",
            (keys as f64 / load.as_secs_f64()) / records_s
        ),
        Err(e) => println!("kafka-consumer-perf-test did not run: {e}"),
    }

    // Memory.
    let before_map = counting_alloc::current();
    let map: HashMap<Bytes, Bytes> =
        store.iter()?.into_iter().map(|(k, v)| (k.to_vec().into(), v.to_vec().into())).collect();
    let map_bytes = counting_alloc::current().saturating_sub(before_map);
    println!(
        "memory: raw keys+values {:.1} B/key; store {:.1} B/key ({:.2}x raw); bare HashMap<Bytes, Bytes> {:.1} B/key",
        raw_bytes as f64 / keys as f64,
        store_bytes as f64 / keys as f64,
        store_bytes as f64 / raw_bytes as f64,
        map_bytes as f64 / keys as f64
    );

    // Latency of `get`, random keys, one call timed at a time.
    let sample = lookups(1_000_000, keys);
    let (timer, _) = latencies(&sample[..100_000], |k| {
        black_box(k);
    });
    let (map_p50, map_p99) = latencies(&sample, |k| {
        black_box(map.get(k).cloned());
    });
    let (store_p50, store_p99) = latencies(&sample, |k| {
        black_box(store.get(&k[..]).ok().flatten());
    });
    println!(
        "get, {} random lookups (timer overhead p50 {timer} ns, included): store p50 {store_p50} ns, p99 {store_p99} ns; \
         HashMap p50 {map_p50} ns, p99 {map_p99} ns; ratio p50 {:.2}x, p99 {:.2}x",
        sample.len(),
        store_p50 as f64 / map_p50.max(1) as f64,
        store_p99 as f64 / map_p99.max(1) as f64
    );

    drop(store);
    admin.delete_topics(&[&topic]).await?;
    admin.close().await;
    Ok(())
}
