//! The bounded-memory soak: a producer and a consumer on the same topic, both through the chaos
//! proxy throttled to a bandwidth well below what the producer offers, for a set time. Every
//! few seconds it samples the producer's buffered bytes (bounded by `buffer.memory`), the
//! consumer's prefetched bytes (bounded by `queued.max.messages.kbytes` plus the one fetch
//! answer in flight: a 1-node cluster), and the process's RSS. The consumer's application stops
//! polling for a while now and then, so that the prefetch fills up to its bound.
//!
//! Run by `tests/tests/soak.rs` (CI size) and `tests/examples/soak.rs` (10 minutes, CSV + PNG).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_wire::client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use kafka_wire::proto::producer::TopicPartition;
use tokio::time::Instant;

use crate::chaos_proxy::{ChaosCounters, ChaosProxy, Faults};
use crate::raw::create_topic;
use crate::unique_topic;

/// What the soak runs.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// The 1-node cluster's bootstrap servers.
    pub bootstrap: String,
    /// How long records are produced and consumed.
    pub duration: Duration,
    /// Time between samples.
    pub sample_every: Duration,
    /// Bytes/s client → broker through the proxy (what the producer gets).
    pub bandwidth: u64,
    /// Bytes/s broker → client (what the consumer gets): more than `bandwidth`, so that the
    /// consumer catches up after its pauses.
    pub bandwidth_down: u64,
    /// The producer's `buffer.memory`.
    pub buffer_memory: usize,
    /// The consumer's `queued.max.messages.kbytes`, in bytes.
    pub prefetch_max_bytes: usize,
    /// The consumer's `fetch.max.bytes`.
    pub fetch_max_bytes: usize,
    /// The consumer's `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: usize,
    /// Bytes of each record's value.
    pub record_size: usize,
    /// Partitions of the topic.
    pub partitions: i32,
    /// The consumer's application stops polling for `.1` every `.0`.
    pub consumer_pause: (Duration, Duration),
}

impl SoakConfig {
    /// 2 MB/s up and 4 MB/s down, 4 MiB of producer buffer, 4 MiB of prefetch (1 MiB fetches, 1 MiB per
    /// partition: a partition holding that much is not fetched, so 4 partitions can reach the
    /// prefetch bound), 1 KiB records on 4 partitions, the consumer pausing 8 s every 20 s.
    pub fn new(bootstrap: String, duration: Duration) -> Self {
        Self {
            bootstrap,
            duration,
            sample_every: Duration::from_secs(2),
            bandwidth: 2_000_000,
            bandwidth_down: 4_000_000,
            buffer_memory: 4 << 20,
            prefetch_max_bytes: 4 << 20,
            fetch_max_bytes: 1 << 20,
            max_partition_fetch_bytes: 1 << 20,
            record_size: 1024,
            partitions: 4,
            consumer_pause: (Duration::from_secs(20), Duration::from_secs(8)),
        }
    }

    /// The most the consumer may hold fetched: the prefetch budget plus the one answer in
    /// flight (one broker) that may land when the budget is nearly used.
    pub fn prefetch_bound(&self) -> u64 {
        (self.prefetch_max_bytes + self.fetch_max_bytes) as u64
    }
}

/// One sample.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// Records acknowledged so far.
    pub acked: u64,
    /// Records consumed so far.
    pub consumed: u64,
    /// The producer's buffered bytes now.
    pub producer_buffered: u64,
    /// The consumer's prefetched bytes now.
    pub consumer_prefetched: u64,
    /// The process's resident set, bytes.
    pub rss: u64,
    /// Bytes through the proxy, client → broker, so far.
    pub bytes_up: u64,
    /// Bytes through the proxy, broker → client, so far.
    pub bytes_down: u64,
}

/// What a soak saw.
#[derive(Clone, Debug)]
pub struct SoakReport {
    /// Its configuration.
    pub config: SoakConfig,
    /// The samples, in time order.
    pub samples: Vec<Sample>,
    /// Records acknowledged.
    pub acked: u64,
    /// Records whose delivery failed.
    pub failed: u64,
    /// Records consumed (after the producer stopped, until the consumer caught up, or gave up
    /// after 60 s plus twice the time its backlog takes at `bandwidth_down`).
    pub consumed: u64,
    /// What the proxy did.
    pub proxy: ChaosCounters,
}

impl SoakReport {
    /// The largest producer buffered bytes sampled.
    pub fn max_producer_buffered(&self) -> u64 {
        self.samples.iter().map(|s| s.producer_buffered).max().unwrap_or(0)
    }

    /// The largest consumer prefetched bytes sampled.
    pub fn max_consumer_prefetched(&self) -> u64 {
        self.samples.iter().map(|s| s.consumer_prefetched).max().unwrap_or(0)
    }

    /// RSS (min, max) of the samples after `warm_up` seconds.
    pub fn rss_after(&self, warm_up: f64) -> (u64, u64) {
        let rss = self.samples.iter().filter(|s| s.t >= warm_up).map(|s| s.rss);
        (rss.clone().min().unwrap_or(0), rss.max().unwrap_or(0))
    }

    /// The samples as CSV, a header line first.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "t_s,acked_records,consumed_records,producer_buffered_bytes,consumer_prefetched_bytes,rss_bytes,\
             proxy_bytes_up,proxy_bytes_down\n",
        );
        for s in &self.samples {
            let _ = writeln!(
                out,
                "{:.1},{},{},{},{},{},{},{}",
                s.t, s.acked, s.consumed, s.producer_buffered, s.consumer_prefetched, s.rss, s.bytes_up, s.bytes_down
            );
        }
        out
    }

    /// A summary, one line per figure.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let secs = self.samples.last().map_or(0.0, |s| s.t);
        let warm = secs / 5.0;
        let (rss_lo, rss_hi) = self.rss_after(warm);
        format!(
            "soak: {secs:.0} s through a proxy at {} MB/s up, {} MB/s down; {} records acknowledged ({:.2} MB/s), {} failed, \
             {} consumed\n\
             producer buffered: max {:.2} MiB of buffer.memory {:.2} MiB\n\
             consumer prefetched: max {:.2} MiB of queued.max.messages.kbytes {:.2} MiB (+ fetch.max.bytes {:.2} MiB)\n\
             RSS after {warm:.0} s of warm-up: {:.1}–{:.1} MiB (first sample {:.1} MiB)\n\
             proxy: {}",
            c.bandwidth as f64 / 1e6,
            c.bandwidth_down as f64 / 1e6,
            self.acked,
            self.acked as f64 * c.record_size as f64 / secs.max(1.0) / 1e6,
            self.failed,
            self.consumed,
            mib(self.max_producer_buffered()),
            mib(c.buffer_memory as u64),
            mib(self.max_consumer_prefetched()),
            mib(c.prefetch_max_bytes as u64),
            mib(c.fetch_max_bytes as u64),
            mib(rss_lo),
            mib(rss_hi),
            mib(self.samples.first().map_or(0, |s| s.rss)),
            self.proxy
        )
    }
}

/// The process's resident set in bytes (`VmRSS`), 0 where `/proc` has none.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs the soak; `on_sample` sees each sample as it is taken. Panics on a setup failure or if
/// the producer or consumer hangs (a sample that does not come within 60 s of its time).
pub async fn run(config: SoakConfig, mut on_sample: impl FnMut(&Sample)) -> SoakReport {
    let admin_client = Client::connect(ClientConfig::new(&config.bootstrap)).await.expect("connect without the proxy");
    let topic = unique_topic("soak");
    create_topic(&admin_client, &topic, config.partitions, 1, &[]).await;

    let proxy = ChaosProxy::new(1);
    proxy.set_faults(Faults {
        throttle_up: Some(config.bandwidth),
        throttle_down: Some(config.bandwidth_down),
        ..Faults::default()
    });
    let mut pc = ProducerConfig::new(&config.bootstrap).buffer_memory(config.buffer_memory);
    pc.security.dialer = Some(proxy.dialer());
    let producer = Producer::new(pc).await.expect("producer through the proxy");
    let mut cc = ConsumerConfig::new(&config.bootstrap).auto_offset_reset(OffsetReset::Earliest);
    cc.prefetch_max_bytes = config.prefetch_max_bytes;
    cc.fetch_max_bytes = config.fetch_max_bytes;
    cc.max_partition_fetch_bytes = config.max_partition_fetch_bytes;
    cc.security.dialer = Some(proxy.dialer());
    let consumer = Arc::new(Consumer::new(cc).await.expect("consumer through the proxy"));
    consumer.assign((0..config.partitions).map(|p| TopicPartition::new(topic.as_str(), p)));

    let stop = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));
    let sender = {
        let (producer, stop, topic) = (producer.clone(), stop.clone(), topic.clone());
        let value = bytes::Bytes::from(vec![b'x'; config.record_size]);
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let record = ProducerRecord::new(topic.as_str(), value.clone()).key(format!("{i}"));
                // `send` waits while buffer.memory is full; the outcome is counted by the metrics.
                drop(producer.send(record).await.expect("send"));
                i += 1;
            }
        })
    };
    let started = Instant::now();
    let reader = {
        let (consumer, stop, consumed) = (consumer.clone(), stop.clone(), consumed.clone());
        let (every, pause) = config.consumer_pause;
        tokio::spawn(async move {
            let mut next_pause = started + every;
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next_pause {
                    // A slow application: the prefetch fills up meanwhile.
                    tokio::time::sleep(pause).await;
                    next_pause = Instant::now() + every;
                }
                let records = consumer.poll(Duration::from_millis(200)).await.expect("poll");
                consumed.fetch_add(records.len() as u64, Ordering::Relaxed);
            }
        })
    };

    let mut samples = Vec::new();
    let sample = |consumed: &AtomicU64| {
        let m = producer.metrics();
        let c = proxy.counters();
        Sample {
            t: started.elapsed().as_secs_f64(),
            acked: m.records_delivered,
            consumed: consumed.load(Ordering::Relaxed),
            producer_buffered: m.buffered_bytes,
            consumer_prefetched: consumer.prefetched_bytes() as u64,
            rss: rss_bytes(),
            bytes_up: c.bytes_up,
            bytes_down: c.bytes_down,
        }
    };
    let mut at = started;
    while at.duration_since(started) < config.duration {
        at += config.sample_every;
        tokio::time::sleep_until(at).await;
        assert!(!sender.is_finished() && !reader.is_finished(), "the sender or the reader stopped early");
        let s = sample(&consumed);
        on_sample(&s);
        samples.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(60), sender).await.expect("the sender stops").expect("sender");
    tokio::time::timeout(Duration::from_secs(120), producer.flush()).await.expect("flush in time").expect("flush");
    tokio::time::timeout(Duration::from_secs(60), reader).await.expect("the reader stops").expect("reader");
    let metrics = producer.metrics();
    // Catch up with everything acknowledged (or give up; the caller compares).
    let backlog =
        metrics.records_delivered.saturating_sub(consumed.load(Ordering::Relaxed)) * config.record_size as u64;
    let deadline = Instant::now() + Duration::from_secs(60 + 2 * backlog / config.bandwidth_down.max(1));
    while consumed.load(Ordering::Relaxed) < metrics.records_delivered && Instant::now() < deadline {
        let records = consumer.poll(Duration::from_millis(200)).await.expect("poll");
        consumed.fetch_add(records.len() as u64, Ordering::Relaxed);
    }
    producer.close().await.expect("close producer");
    consumer.close().await.expect("close consumer");
    let report = SoakReport {
        config,
        samples,
        acked: metrics.records_delivered,
        failed: metrics.records_failed,
        consumed: consumed.load(Ordering::Relaxed),
        proxy: proxy.counters(),
    };
    Admin::new(admin_client).delete_topics(&[topic]).await.ok();
    report
}
