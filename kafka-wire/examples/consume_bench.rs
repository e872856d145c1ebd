//! Consumer benchmark (prints figures; not a test): fills a 6-partition topic with 100-byte
//! records, then consumes them all from the earliest offset and reports records/s, MB/s, client
//! CPU seconds per million records (user + sys of this process, consuming phase only) and the
//! process's peak RSS.
//!
//! `cargo run --release -p kafka-wire --example consume_bench -- [BOOTSTRAP] [RECORDS]
//! [--topic T] [--json] [--records-owned] [--current-thread] [--set KEY=VALUE]... [--latency [--rate 20000]
//! [--batch-size 1000000] [--linger-ms 5] [--ack-latency]]`
//! (defaults 127.0.0.1:9092 and 5 000 000). For comparison, Kafka's own tool on the same topic:
//! `cargo xtask kafka tool consumer-perf --bootstrap-server 127.0.0.1:9092 --topic T --messages N`.
//!
//! * `--topic T`: consume RECORDS from this existing, filled topic instead of filling one (how
//!   `cargo xtask bench` gives every client the same data).
//! * `--json`: also print the figures as one JSON line (the last line) for the harness.
//! * `--records-owned`: read with `Consumer::poll` (a `ConsumerRecord` each, its key and value
//!   handles of their own) rather than `Consumer::poll_views` (records read in place, the way
//!   the consumer is fastest used, as librdkafka's peer reads with `rd_kafka_consume_batch_queue`).
//! * `--current-thread`: the client on tokio's current-thread runtime (one thread), rather than
//!   the multi-thread runtime of `#[tokio::main]` (one worker per core). With `--latency`, the
//!   sender still runs on a thread of its own (its sends append on that thread).
//! * `--set KEY=VALUE`: a consumer setting by its Java (or librdkafka) name, e.g.
//!   `--set queued.max.messages.kbytes=8192`; repeatable.
//! * `--latency`: end-to-end latency instead: a producer (acks=all, idempotent, `--linger-ms`,
//!   `--batch-size`) sends RECORDS 100-byte records to the existing, empty `--topic` at a fixed
//!   `--rate` per second, each carrying its send time, while a consumer in the same process
//!   reads them from the earliest offset; prints p50/p99/p99.9 of send-to-consume time. The
//!   records of the first second (at most a quarter) are left out: they measure the start-up
//!   (connections, the producer id, the consumer's first fetch), not the steady state.
//!   With `--ack-latency`, also send-to-acknowledgement times as the sender sees them: kept
//!   only when asked, as librdkafka's peer keeps none (their 8 bytes a record were a sixth of
//!   this run's max RSS).

#[path = "support/proc_stats.rs"]
mod proc_stats;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use kafka_wire::client::{Acks, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord};
use kafka_wire::codec::compression::Compression;
use kafka_wire::codec::messages::create_topics::CreatableTopic;
use kafka_wire::codec::messages::CreateTopicsRequest;
use kafka_wire::codec::ErrorCode;
use kafka_wire::proto::producer::TopicPartition;
use proc_stats::{cpu_seconds, loadavg, status_kb};

const PARTITIONS: i32 = 6;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse()?;
    let runtime = if args.current_thread {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?
    };
    let result = runtime.block_on(run(args));
    // Not the runtime's drop, which waits for the blocking pool without a limit: a `--latency`
    // run that failed on the consumer's side would wait for its sender, which has no driver
    // left to answer it.
    runtime.shutdown_background();
    result
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let (bootstrap, records) = (args.bootstrap.clone(), args.records);
    if args.latency {
        return latency(&args).await;
    }
    let topic = match &args.topic {
        Some(t) => t.clone(),
        None => fill(&bootstrap, records).await?,
    };

    consume(&args, &topic).await
}

/// Creates a topic and fills it with `records` records of 100 B; returns its name.
async fn fill(bootstrap: &str, records: usize) -> Result<String, Box<dyn std::error::Error>> {
    let topic = format!("consume-bench-{}", std::process::id());
    let producer = Producer::new(ProducerConfig::new(bootstrap).compression(Compression::Lz4)).await?;
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
    Ok(topic)
}

async fn consume(args: &Args, topic: &str) -> Result<(), Box<dyn std::error::Error>> {
    let records = args.records;

    let load_before = loadavg();
    let (u0, s0) = cpu_seconds("/proc/self/stat");
    let consumer = Consumer::new(args.consumer_config()?).await?;
    consumer.assign((0..PARTITIONS).map(|p| TopicPartition::new(topic, p)));
    let started = Instant::now();
    let mut read = 0usize;
    let mut bytes = 0usize;
    while read < records {
        // Each record's value is touched (its length summed), as the other clients' benchmarks do.
        let (n, value_bytes) = if args.records_owned {
            let batch = consumer.poll(Duration::from_secs(10)).await?;
            (batch.len(), batch.iter().map(|r| r.value.as_ref().map_or(0, |v| v.len())).sum::<usize>())
        } else {
            let batch = consumer.poll_views(Duration::from_secs(10)).await?;
            (batch.len(), batch.iter().map(|r| r.value().map_or(0, <[u8]>::len)).sum::<usize>())
        };
        if n == 0 {
            return Err(format!("stalled after {read} records").into());
        }
        read += n;
        bytes += value_bytes;
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
    if args.json {
        println!(
            "{{\"records\":{read},\"secs\":{secs},\"cpu_s\":{cpu},\"max_rss_kb\":{}}}",
            status_kb("VmHWM").unwrap_or(0)
        );
    }
    Ok(())
}

struct Args {
    bootstrap: String,
    records: usize,
    topic: Option<String>,
    json: bool,
    records_owned: bool,
    current_thread: bool,
    latency: bool,
    ack_latency: bool,
    rate: u64,
    batch_size: usize,
    linger_ms: u64,
    consumer_settings: Vec<(String, String)>,
}

impl Args {
    /// The consumer's configuration: the benchmark's, then `--set`'s.
    fn consumer_config(&self) -> Result<ConsumerConfig, Box<dyn std::error::Error>> {
        let mut config =
            ConsumerConfig::new(&self.bootstrap).auto_offset_reset(OffsetReset::Earliest).max_poll_records(5000);
        for (key, value) in &self.consumer_settings {
            config.set(key, value)?;
        }
        Ok(config)
    }

    fn parse() -> Result<Args, Box<dyn std::error::Error>> {
        let mut a = Args {
            bootstrap: "127.0.0.1:9092".into(),
            records: 5_000_000,
            topic: None,
            json: false,
            records_owned: false,
            current_thread: false,
            latency: false,
            ack_latency: false,
            rate: 20_000,
            batch_size: 1_000_000,
            linger_ms: 5,
            consumer_settings: Vec::new(),
        };
        let mut positional = 0;
        let mut it = std::env::args().skip(1);
        let num = |v: Option<String>, name: &str| -> Result<u64, Box<dyn std::error::Error>> {
            let v = v.ok_or_else(|| format!("{name} needs a value"))?;
            Ok(v.replace('_', "").parse().map_err(|_| format!("{name}: not a number: {v}"))?)
        };
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--topic" => a.topic = Some(it.next().ok_or("--topic needs a value")?),
                "--json" => a.json = true,
                "--records-owned" => a.records_owned = true,
                "--current-thread" => a.current_thread = true,
                "--latency" => a.latency = true,
                "--ack-latency" => a.ack_latency = true,
                "--rate" => a.rate = num(it.next(), "--rate")?.max(1),
                "--batch-size" => a.batch_size = num(it.next(), "--batch-size")? as usize,
                "--linger-ms" => a.linger_ms = num(it.next(), "--linger-ms")?,
                "--set" => {
                    let setting = it.next().ok_or("--set needs KEY=VALUE")?;
                    let (key, value) = setting.split_once('=').ok_or("--set needs KEY=VALUE")?;
                    a.consumer_settings.push((key.into(), value.into()));
                }
                flag if flag.starts_with("--") => return Err(format!("unknown argument {flag}").into()),
                _ if positional == 0 => (a.bootstrap, positional) = (arg, 1),
                _ if positional == 1 => (a.records, positional) = (num(Some(arg), "RECORDS")? as usize, 2),
                _ => return Err(format!("unexpected argument {arg}").into()),
            }
        }
        Ok(a)
    }
}

/// The `--latency` run: paced sends with the send time in the value, read back by a consumer
/// of the same process; latency = the consumer's clock at receipt minus the send time.
async fn latency(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let topic = args.topic.clone().ok_or("--latency needs --topic (an existing, empty topic)")?;
    let consumer = Consumer::new(args.consumer_config()?).await?;
    consumer.assign((0..PARTITIONS).map(|p| TopicPartition::new(topic.as_str(), p)));
    let config = ProducerConfig::new(&args.bootstrap)
        .acks(Acks::All)
        .enable_idempotence(true)
        .linger(Duration::from_millis(args.linger_ms))
        .batch_size(args.batch_size);
    let producer = Producer::new(config).await?;
    let n = args.records;
    let rate = args.rate;
    let warm_up = rate.min(n as u64 / 4);
    let ack_latency = args.ack_latency;
    // The sender paces its records on a thread of its own (tokio's blocking pool) with the OS's
    // sleep (tens of microseconds late at most), as librdkafka's peer paces its own. tokio's
    // timer wakes on millisecond ticks: it sent 20 records at once each millisecond, and each
    // burst started on a tick on which the producer's linger timer later ended.
    let sender = {
        let topic = topic.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let mut pending = std::collections::VecDeque::new();
            // Send-to-acknowledgement times of the records after the warm-up, as the sender
            // sees them: the acknowledged deliveries are taken before each send, so within
            // 1 / rate of their acknowledgement.
            let mut acked = Vec::with_capacity(if ack_latency { n } else { 0 });
            for i in 0..n as u64 {
                let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let mut value = vec![b'x'; 100];
                let sent = now_nanos();
                value[..8].copy_from_slice(&sent.to_le_bytes());
                value[8..16].copy_from_slice(&i.to_le_bytes());
                let delivery = runtime.block_on(producer.send(ProducerRecord::new(topic.as_str(), value)))?;
                pending.push_back((i, sent, delivery));
                // Deliveries are taken as they resolve (as librdkafka's peer counts its delivery
                // reports), not held: a future kept past its acknowledgement keeps its delivery
                // slot, and 100 000 of them were most of this run's max RSS.
                let mut cx = Context::from_waker(Waker::noop());
                while let Some((index, sent, f)) = pending.front_mut() {
                    let Poll::Ready(result) = Pin::new(f).poll(&mut cx) else { break };
                    result?;
                    if ack_latency && *index >= warm_up {
                        acked.push(now_nanos().saturating_sub(*sent));
                    }
                    pending.pop_front();
                }
            }
            for (index, sent, f) in pending {
                runtime.block_on(f)?;
                if ack_latency && index >= warm_up {
                    acked.push(now_nanos().saturating_sub(sent));
                }
            }
            runtime.block_on(producer.close())?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((start.elapsed(), acked))
        })
    };
    let (mut nanos, mut read) = (Vec::with_capacity(n), 0);
    while read < n {
        let batch = consumer.poll(Duration::from_secs(30)).await?;
        if batch.is_empty() {
            return Err(format!("no record for 30 s after {read}").into());
        }
        let now = now_nanos();
        for r in batch.iter() {
            let v = r.value.as_ref().ok_or("a record without a value")?;
            let sent = u64::from_le_bytes(v.get(..8).ok_or("a value under 16 bytes")?.try_into()?);
            let index = u64::from_le_bytes(v.get(8..16).ok_or("a value under 16 bytes")?.try_into()?);
            read += 1;
            if index >= warm_up {
                nanos.push(now.saturating_sub(sent));
            }
        }
    }
    let (took, mut acked) = sender.await?.map_err(|e| e.to_string())?;
    consumer.close().await?;
    let percentiles = |nanos: &mut Vec<u64>| {
        nanos.sort_unstable();
        let at = |p: f64| nanos[((nanos.len() as f64 * p).ceil() as usize).clamp(1, nanos.len()) - 1] as f64 / 1e6;
        (at(0.5), at(0.99), at(0.999))
    };
    let (p50, p99, p999) = percentiles(&mut nanos);
    println!(
        "end-to-end latency at {rate} records/s, {n} records: p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms"
    );
    if !acked.is_empty() {
        let (a50, a99, a999) = percentiles(&mut acked);
        println!(
            "send to acknowledgement, as the sender sees it: p50 {a50:.2} ms, p99 {a99:.2} ms, p99.9 {a999:.2} ms"
        );
    }
    if args.json {
        println!(
            "{{\"records\":{n},\"secs\":{},\"p50_ms\":{p50},\"p99_ms\":{p99},\"p999_ms\":{p999}}}",
            took.as_secs_f64()
        );
    }
    Ok(())
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
