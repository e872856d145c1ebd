//! Producer throughput, CPU, memory and latency: 100-byte values, acks=all, idempotent,
//! 6 partitions, linger 5 ms (the Java producer's defaults otherwise), no keys.
//!
//! ```text
//! cargo run --release -p kafka-wire --example produce_bench -- [--fake] [--bootstrap 127.0.0.1:9092]
//!     [--records N] [--partitions 6] [--replication-factor 1] [--value-size 100] [--linger-ms 5]
//!     [--keep-topic] [--compression none|gzip|snappy|lz4|zstd] [--batch-size 16384]
//!     [--value-kind text|random] [--topic T] [--json] [--current-thread] [--nowait]
//!     [-X key=value ...]
//! ```
//!
//! * `--fake`: against an in-process fake broker on 127.0.0.1 that acknowledges at once
//!   (`tests/support/fake_broker.rs`, on its own thread; its CPU time is reported apart and not
//!   counted as the client's). Default N = 2 000 000.
//! * otherwise: against a real broker (default `127.0.0.1:9092`, `cargo xtask kafka up`); the
//!   benchmark creates its own topic with CreateTopics and deletes it afterwards. Default
//!   N = 1 000 000.
//! * `--compression`, `--batch-size`: the producer's `compression.type` and `batch.size`.
//!   Requests of 64 KiB or more to compress are sealed on tokio's blocking pool.
//! * `-X key=value` (repeatable): a producer property, applied after the ones above and also to
//!   the admin connection that creates the topic: `-X security.protocol=SASL_SSL` and the
//!   `ssl.*` / `sasl.*` properties measure a secured listener.
//! * `--topic T`: produce to this existing topic (neither created nor deleted), as
//!   `cargo xtask bench` does to give every client the same fresh topic.
//! * `--current-thread`: the client on tokio's current-thread runtime (one thread; requests with
//!   64 KiB or more to compress are still sealed on the blocking pool). With `--fake`, the
//!   instant-ack ceiling of `cargo xtask bench ceiling`: what one core of client can do.
//! * `--nowait`: send through a per-topic handle (`Producer::topic`) with `send_nowait` (no
//!   delivery future; failures come from the final `flush`) and time no record: the path of a
//!   caller that does not await each record. No latency figures then.
//! * otherwise, each record is sent through a per-topic handle with `try_send`, as a caller of
//!   librdkafka calls `produce()`: queued at once with its delivery future, or, when it has to
//!   wait for room, that wait awaited. The loop yields to the runtime every 1024 sends.
//! * `--json`: also print the figures as one JSON line (last line of the output) for the harness.
//! * `--value-kind`: `text` (the default: the alphabet repeated, which compresses very well) or
//!   `random` (a seeded generator's bytes drawn from 64 symbols: compresses to about 3/4).
//!
//! Printed: records/s, MiB/s of values (as Kafka's `ProducerPerformance` counts), client CPU
//! seconds per million records (user+sys of the process from /proc/self/stat, minus the fake
//! broker's thread), max RSS (VmHWM), p50/p99/max send-to-ack latency (every 16th record is
//! timed from the call to `send` to the moment the sending loop, which looks every 64 sends,
//! sees it acknowledged), and the load average before and after.
//! For comparison, Kafka's own tool on the same workload:
//! `cargo xtask kafka tool producer-perf --topic T --num-records 1000000 --record-size 100
//!  --throughput -1 --producer-props bootstrap.servers=127.0.0.1:9092 acks=all linger.ms=5`.

#[path = "../tests/support/fake_broker.rs"]
mod fake_broker;
#[path = "support/proc_stats.rs"]
mod proc_stats;

use proc_stats::{cpu_seconds, loadavg, status_kb};

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_wire::client::{
    Acks, Client, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata, TrySend,
};
use kafka_wire::codec::messages::create_topics::CreatableTopic;
use kafka_wire::codec::messages::delete_topics::DeleteTopicState;
use kafka_wire::codec::messages::{CreateTopicsRequest, DeleteTopicsRequest};
use kafka_wire::codec::ErrorCode;
use kafka_wire::Compression;

/// Every SAMPLE_EVERY-th record's latency is measured.
const SAMPLE_EVERY: u64 = 16;
/// The sending loop yields to the runtime every YIELD_EVERY sends.
const YIELD_EVERY: u64 = 1024;
/// The sending loop takes the resolved deliveries every COLLECT_EVERY sends.
const COLLECT_EVERY: u64 = 64;

/// The deliveries seen so far.
#[derive(Default)]
struct Deliveries {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
}

impl Deliveries {
    fn count(&mut self, result: kafka_wire::client::Result<RecordMetadata>, sent: Option<Instant>) {
        match result {
            Ok(_) => {
                self.ok += 1;
                if let Some(sent) = sent {
                    self.latencies.push(sent.elapsed());
                }
            }
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e.to_string());
            }
        }
    }

    /// Counts the deliveries at the front of `pending` that have resolved, without waiting.
    fn take_resolved(&mut self, pending: &mut Pending) {
        let mut cx = Context::from_waker(Waker::noop());
        while let Some(f) = pending.futures.front_mut() {
            let Poll::Ready(result) = Pin::new(f).poll(&mut cx) else { return };
            let Some((_, sent)) = pending.pop_front() else { return };
            self.count(result, sent);
        }
    }
}

/// The delivery futures not yet resolved, in send order, and the send times of the sampled
/// ones among them. The times are kept apart: one per record would double what the benchmark
/// itself holds per record in flight, which counts in the client's max RSS.
#[derive(Default)]
struct Pending {
    futures: VecDeque<DeliveryFuture>,
    /// The number of the record at the front of `futures`.
    front: u64,
    /// (record number, send time) of the sampled records, ascending.
    samples: VecDeque<(u64, Instant)>,
}

impl Pending {
    fn push(&mut self, future: DeliveryFuture, sent: Option<Instant>) {
        if let Some(at) = sent {
            self.samples.push_back((self.front + self.futures.len() as u64, at));
        }
        self.futures.push_back(future);
    }

    /// The oldest delivery future, with its send time if it was sampled.
    fn pop_front(&mut self) -> Option<(DeliveryFuture, Option<Instant>)> {
        let future = self.futures.pop_front()?;
        let number = self.front;
        self.front += 1;
        let sent = match self.samples.front() {
            Some(&(n, at)) if n == number => {
                self.samples.pop_front();
                Some(at)
            }
            _ => None,
        };
        Some((future, sent))
    }
}

struct Args {
    fake: bool,
    bootstrap: String,
    records: Option<u64>,
    partitions: i32,
    replication_factor: i16,
    value_size: usize,
    linger_ms: u64,
    keep_topic: bool,
    compression: Compression,
    batch_size: usize,
    random_values: bool,
    /// `-X key=value` properties.
    properties: Vec<(String, String)>,
    topic: Option<String>,
    json: bool,
    current_thread: bool,
    nowait: bool,
}

fn usage() -> &'static str {
    "usage: produce_bench [--fake] [--bootstrap HOST:PORT] [--records N] [--partitions 6] \
     [--replication-factor 1] [--value-size 100] [--linger-ms 5] [--keep-topic] \
     [--compression none|gzip|snappy|lz4|zstd] [--batch-size 16384] [--value-kind text|random] \
     [--topic T] [--json] [--current-thread] [--nowait] [-X key=value ...]"
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        fake: false,
        bootstrap: "127.0.0.1:9092".into(),
        records: None,
        partitions: 6,
        replication_factor: 1,
        value_size: 100,
        linger_ms: 5,
        keep_topic: false,
        compression: Compression::None,
        batch_size: 16384,
        random_values: false,
        properties: Vec::new(),
        topic: None,
        json: false,
        current_thread: false,
        nowait: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{}", usage()));
        match arg.as_str() {
            "--fake" => a.fake = true,
            "--keep-topic" => a.keep_topic = true,
            "--json" => a.json = true,
            "--current-thread" => a.current_thread = true,
            "--nowait" => a.nowait = true,
            "--topic" => a.topic = Some(value("--topic")?),
            "--bootstrap" => a.bootstrap = value("--bootstrap")?,
            "--records" => a.records = Some(num(&value("--records")?)?),
            "--partitions" => a.partitions = num(&value("--partitions")?)?,
            "--replication-factor" => a.replication_factor = num(&value("--replication-factor")?)?,
            "--value-size" => a.value_size = num(&value("--value-size")?)?,
            "--linger-ms" => a.linger_ms = num(&value("--linger-ms")?)?,
            "--batch-size" => a.batch_size = num(&value("--batch-size")?)?,
            "--compression" => {
                let v = value("--compression")?;
                a.compression = v.parse().map_err(|_| format!("unknown compression {v}\n{}", usage()))?;
            }
            "--value-kind" => match value("--value-kind")?.as_str() {
                "text" => a.random_values = false,
                "random" => a.random_values = true,
                other => return Err(format!("unknown value kind {other}\n{}", usage())),
            },
            "-X" => {
                let v = value("-X")?;
                let (key, val) =
                    v.split_once('=').ok_or_else(|| format!("-X takes key=value, not {v}\n{}", usage()))?;
                a.properties.push((key.trim().to_owned(), val.trim().to_owned()));
            }
            "-h" | "--help" => return Err(usage().into()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    Ok(a)
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.replace('_', "").parse().map_err(|_| format!("not a number: {s}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The fake broker on its own thread and single-threaded runtime, so that its CPU time can be
/// told apart from the client's.
struct FakeThread {
    broker: fake_broker::FakeBroker,
    stat_path: String,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn start_fake(topic: &str, partitions: i32) -> FakeThread {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let topic = topic.to_string();
    let thread = std::thread::Builder::new()
        .name("fake-broker".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let broker = fake_broker::FakeBroker::start(&[(&topic, partitions)]).await;
                // /proc/thread-self -> <pid>/task/<tid>
                let task = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
                let stat_path = format!("/proc/{}/stat", task.display());
                tx.send((broker, stat_path)).expect("main thread waits");
                let _ = stopped.await;
            });
        })
        .expect("spawn the fake broker thread");
    let (broker, stat_path) = rx.recv().expect("fake broker started");
    FakeThread { broker, stat_path, stop, thread }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = builder.enable_all().build().expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("produce_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let n = args.records.unwrap_or(if args.fake { 2_000_000 } else { 1_000_000 });
    let millis = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let topic = args.topic.clone().unwrap_or_else(|| format!("produce-bench-{}-{millis}", std::process::id()));
    let fake = args.fake.then(|| start_fake(&topic, args.partitions));
    let bootstrap = fake.as_ref().map_or(args.bootstrap.clone(), |f| f.broker.addr().to_string());
    let mut config = ProducerConfig::new(&bootstrap)
        .acks(Acks::All)
        .enable_idempotence(true)
        .linger(Duration::from_millis(args.linger_ms))
        .batch_size(args.batch_size)
        .compression(args.compression);
    for (key, value) in &args.properties {
        config.set(key, value)?;
    }
    let admin = if fake.is_none() {
        let client = Client::connect(config.client_config()).await?;
        if args.topic.is_none() {
            create_topic(&client, &topic, args.partitions, args.replication_factor).await?;
        }
        Some(client)
    } else {
        None
    };
    let producer = Producer::new(config).await?;
    // Warm up: topic metadata and the producer id.
    producer.send(ProducerRecord::new(&topic, Bytes::from_static(b"warm-up"))).await?.await?;

    let values = value_pool(args.value_size, args.random_values);
    let load_before = loadavg();
    let fake_cpu_before = fake.as_ref().map(|f| cpu_seconds(&f.stat_path));
    let (user0, sys0) = cpu_seconds("/proc/self/stat");
    let start = Instant::now();

    // Deliveries are collected by the sending loop itself, as a caller of librdkafka polls its
    // delivery reports between sends: every `COLLECT_EVERY` sends it takes the delivery futures
    // that have resolved, in send order, without waiting; after the last send it awaits the
    // rest. Every SAMPLE_EVERY-th record is timed from the call to `send` to the moment the
    // loop sees its acknowledgement (so a latency here includes up to COLLECT_EVERY sends).
    let mut pending = Pending::default();
    let mut deliveries = Deliveries::default();
    let mut nowait_failure = None;
    if args.nowait {
        let handle = producer.topic(&topic).await?;
        for i in 0..n {
            handle.send_nowait(ProducerRecord::new("", values[i as usize % values.len()].clone())).await?;
        }
        nowait_failure = producer.flush().await.err();
    } else {
        let handle = producer.topic(&topic).await?;
        for i in 0..n {
            let sent = (i % SAMPLE_EVERY == 0).then(Instant::now);
            let record = ProducerRecord::new("", values[i as usize % values.len()].clone());
            let f = match handle.try_send(record)? {
                TrySend::Queued(delivery) => delivery,
                TrySend::Waiting(wait) => wait.await?,
            };
            pending.push(f, sent);
            if i % YIELD_EVERY == 0 {
                // try_send never yields: on a current-thread runtime the driver would otherwise
                // run only when the buffer is full.
                tokio::task::yield_now().await;
            }
            if i % COLLECT_EVERY == 0 {
                deliveries.take_resolved(&mut pending);
            }
        }
    }
    producer.flush().await?;
    while let Some((f, sent)) = pending.pop_front() {
        deliveries.count(f.await, sent);
    }
    let Deliveries { mut ok, mut failed, mut first_error, mut latencies } = deliveries;
    if args.nowait {
        // Acknowledged or failed, every one: flush reports the first failure; the producer's
        // metrics count them.
        failed = producer.metrics().records_failed;
        ok = n - failed;
        first_error = nowait_failure.map(|e| e.to_string());
    }
    let elapsed = start.elapsed();
    let (user1, sys1) = cpu_seconds("/proc/self/stat");
    let fake_cpu = fake.as_ref().zip(fake_cpu_before).map(|(f, (u0, s0))| {
        let (u1, s1) = cpu_seconds(&f.stat_path);
        (u1 - u0) + (s1 - s0)
    });
    let load_after = loadavg();
    producer.close().await?;

    latencies.sort_unstable();
    let secs = elapsed.as_secs_f64();
    let rate = n as f64 / secs;
    let mib = rate * args.value_size as f64 / (1024.0 * 1024.0);
    let (user, sys) = (user1 - user0, sys1 - sys0);
    let client_cpu = user + sys - fake_cpu.unwrap_or(0.0);
    let per_million = client_cpu / (n as f64 / 1e6);
    let hwm = status_kb("VmHWM").unwrap_or(0);

    println!(
        "produce_bench: {} ({bootstrap}), topic {topic}: {n} records of {} B ({}), {} partitions, acks=all, idempotent, linger {} ms, batch.size {}, compression {:?}",
        if fake.is_some() { "fake broker" } else { "real broker" },
        args.value_size,
        if args.random_values { "random" } else { "text" },
        args.partitions,
        args.linger_ms,
        args.batch_size,
        args.compression,
    );
    println!("  loadavg before / after     {load_before} / {load_after}");
    println!("  elapsed                    {secs:.2} s  ({ok} acknowledged, {failed} failed)");
    println!("  records/s                  {rate:.0}");
    println!("  MiB/s (values)             {mib:.1}");
    println!(
        "  client CPU s / 1M records  {per_million:.2}  (process user {user:.2} s + sys {sys:.2} s{})",
        fake_cpu.map(|c| format!(" - fake broker thread {c:.2} s")).unwrap_or_default()
    );
    println!(
        "  max RSS (VmHWM)            {:.1} MiB{}",
        hwm as f64 / 1024.0,
        if fake.is_some() { " (fake broker included)" } else { "" }
    );
    println!(
        "  send->ack latency          p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms  ({} samples, every {SAMPLE_EVERY}th record)",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        latencies.len()
    );
    if let Some(e) = &first_error {
        println!("  first failure: {e}");
    }
    if args.json {
        println!(
            "{{\"records\":{n},\"secs\":{secs},\"cpu_s\":{client_cpu},\"max_rss_kb\":{hwm},\"p50_ms\":{},\"p99_ms\":{},\"failed\":{failed}}}",
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99)),
        );
    }
    let mut problems = failed > 0;
    if let Some(f) = fake {
        let s = f.broker.stats();
        let received = s.records.load(std::sync::atomic::Ordering::Relaxed);
        let anomalies = s.sequence_anomalies.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "  fake broker                {} Produce requests, {} batches, {received} records (incl. warm-up), {anomalies} sequence anomalies",
            s.produce_requests.load(std::sync::atomic::Ordering::Relaxed),
            s.batches.load(std::sync::atomic::Ordering::Relaxed),
        );
        problems |= received != n + 1 || anomalies != 0;
        let _ = f.stop.send(());
        let _ = f.thread.join();
    }
    if let Some(client) = admin {
        if !args.keep_topic && args.topic.is_none() {
            delete_topic(&client, &topic).await;
        }
        client.close().await;
    }
    if problems {
        return Err("some records were not delivered exactly once (see above)".into());
    }
    Ok(())
}

/// The values sent, in turn: one repeated alphabet, or 64 different pseudo-random ones (so that
/// a batch does not compress to one value's worth).
fn value_pool(size: usize, random: bool) -> Vec<Bytes> {
    if !random {
        return vec![Bytes::from((0..size).map(|i| b'A' + (i % 26) as u8).collect::<Vec<u8>>())];
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..64)
        .map(|_| {
            Bytes::from(
                (0..size)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        b'0' + (state % 64) as u8
                    })
                    .collect::<Vec<u8>>(),
            )
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn create_topic(
    client: &Client,
    topic: &str,
    partitions: i32,
    rf: i16,
) -> Result<(), Box<dyn std::error::Error>> {
    let request = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: topic.into(),
            num_partitions: partitions,
            replication_factor: rf,
            ..Default::default()
        }],
        timeout_ms: 30_000,
        ..Default::default()
    };
    let response = match client.controller_id() {
        Some(id) => client.send(id, &request).await?,
        None => client.send_any(&request).await?,
    };
    let result = &response.topics[0];
    if result.error_code != ErrorCode::NONE {
        return Err(format!("creating {topic}: {} {:?}", result.error_code, result.error_message).into());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = client.metadata(Some(&[topic])).await?;
        let ready = md.topics.iter().any(|t| {
            t.error_code == ErrorCode::NONE
                && t.partitions.len() == partitions as usize
                && t.partitions.iter().all(|p| p.leader_id >= 0 && p.error_code == ErrorCode::NONE)
        });
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("topic {topic} has no leaders after 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delete_topic(client: &Client, topic: &str) {
    let request = DeleteTopicsRequest {
        topics: vec![DeleteTopicState { name: Some(topic.into()), ..Default::default() }],
        topic_names: vec![topic.into()],
        timeout_ms: 30_000,
        ..Default::default()
    };
    let result = match client.controller_id() {
        Some(id) => client.send(id, &request).await,
        None => client.send_any(&request).await,
    };
    match result {
        Ok(r) if r.responses.iter().all(|t| t.error_code == ErrorCode::NONE) => {}
        Ok(r) => eprintln!("deleting {topic}: {:?}", r.responses.iter().map(|t| t.error_code).collect::<Vec<_>>()),
        Err(e) => eprintln!("deleting {topic}: {e}"),
    }
}
