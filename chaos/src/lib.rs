//! The fault suite (issue 15): scenarios that run a workload on the 3-node cluster
//! (`cargo xtask kafka up --nodes 3`) while a seeded schedule SIGKILLs and restarts, or
//! SIGSTOPs and continues, its brokers, then read everything back and check the promises
//! (no acknowledged record lost, no duplicate, order per key, ...).
//!
//! Run by `cargo xtask chaos <scenario>|all [--minutes N] [--seed S]` (the `chaos` binary) and,
//! at CI size, by `chaos/tests/ci.rs`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_wire::client::{Admin, ClientConfig, ConsumerRecord, Producer, ProducerConfig, ProducerRecord};

pub mod atomic;
pub mod eos;
pub mod faults;
pub mod groups;
pub mod producer;
pub mod retry;

/// The scenarios, in the order `all` runs them.
pub const SCENARIOS: &[&str] = &["producer", "groups", "eos", "atomic", "retry"];

/// What a scenario run is given.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Bootstrap servers of the 3-node cluster.
    pub bootstrap: String,
    /// How long the workload runs under faults (the read-back and checks come after).
    pub duration: Duration,
    /// Seed of the fault schedule (and of the workload's random choices).
    pub seed: u64,
}

/// The outcome of one scenario run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// Records acknowledged (or processed) by the workload and checked.
    pub records: u64,
    /// Sends that failed (their records may or may not be in the log; not a violation).
    pub failed: u64,
    /// Faults injected.
    pub faults: faults::FaultCounts,
    /// Invariant violations (all of them counted; the first ones described).
    pub violations: Violations,
    /// Wall time of the whole run, checks included.
    pub elapsed: Duration,
    /// Scenario-specific figures (name, value), printed after the counts.
    pub notes: Vec<(String, String)>,
}

impl Report {
    /// No invariant was violated.
    pub fn ok(&self) -> bool {
        self.violations.count == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[chaos] {}: records {}, failed sends {}, kills {}, stops {}, restarts {}, violations {} ({:.1} s)",
            self.scenario,
            self.records,
            self.failed,
            self.faults.kills,
            self.faults.stops,
            self.faults.restarts,
            self.violations.count,
            self.elapsed.as_secs_f64()
        )?;
        for (name, value) in &self.notes {
            write!(f, "\n    {name}: {value}")?;
        }
        for v in &self.violations.first {
            write!(f, "\n    VIOLATION: {v}")?;
        }
        if self.violations.count > self.violations.first.len() as u64 {
            write!(f, "\n    ... and {} more", self.violations.count - self.violations.first.len() as u64)?;
        }
        Ok(())
    }
}

/// Invariant violations: every one counted, the first [`Violations::KEPT`] described.
#[derive(Clone, Debug, Default)]
pub struct Violations {
    /// How many.
    pub count: u64,
    /// The first ones, described.
    pub first: Vec<String>,
}

impl Violations {
    /// Descriptions kept.
    pub const KEPT: usize = 20;

    /// Records one violation.
    pub fn push(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.len() < Self::KEPT {
            self.first.push(what());
        }
    }
}

/// Runs scenario `name`.
pub async fn run(name: &str, config: &RunConfig) -> Result<Report, String> {
    let started = Instant::now();
    let mut report = match name {
        "producer" => producer::run(config).await?,
        "groups" => groups::run(config).await?,
        "eos" => eos::run(config).await?,
        "atomic" => atomic::run(config).await?,
        "retry" => retry::run(config).await?,
        other => return Err(format!("no scenario {other:?}; there are: {}", SCENARIOS.join(", "))),
    };
    report.scenario = name.to_string();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// A small seeded generator (splitmix64): the same seed gives the same fault schedule.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A duration in `lo..=hi`, in whole milliseconds.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// A flag the workload and the fault injector watch to end the run.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Ends the run.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Has the run ended?
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Sleeps for `d`, or less if the run ends meanwhile (looking every 50 ms).
    pub async fn sleep(&self, d: Duration) {
        let end = tokio::time::Instant::now() + d;
        while !self.is_set() {
            let now = tokio::time::Instant::now();
            if now >= end {
                return;
            }
            tokio::time::sleep((end - now).min(Duration::from_millis(50))).await;
        }
    }
}

/// Creates `topic` with `partitions` partitions, replication factor 3 and
/// `min.insync.replicas=2` (no unclean leader election), as every scenario's topics are.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32, extra: &[(&str, &str)]) -> Result<(), String> {
    let client = kafka_wire::client::Client::connect(ClientConfig::new(bootstrap))
        .await
        .map_err(|e| format!("connect to {bootstrap}: {e}"))?;
    let mut configs = vec![("min.insync.replicas", "2"), ("unclean.leader.election.enable", "false")];
    configs.extend_from_slice(extra);
    kafka_wire_tests::raw::create_topic(&client, topic, partitions, 3, &configs).await;
    client.close().await;
    Ok(())
}

/// Waits (up to `bound`) until every partition of `topics` has a leader and all 3 replicas in
/// sync; `Err` says which were not.
pub async fn wait_in_sync(bootstrap: &str, topics: &[&str], bound: Duration) -> Result<(), String> {
    let admin = Admin::connect(ClientConfig::new(bootstrap)).await.map_err(|e| format!("admin: {e}"))?;
    let deadline = tokio::time::Instant::now() + bound;
    let outcome = loop {
        let lagging = match admin.describe_topics(topics).await {
            Ok(described) => described
                .iter()
                .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
                .filter(|(_, p)| p.leader.is_none() || p.isr.len() < 3)
                .map(|(t, p)| format!("{}-{} (leader {:?}, isr {:?})", t.name, p.partition, p.leader, p.isr))
                .collect::<Vec<_>>(),
            Err(e) => vec![format!("describe: {e}")],
        };
        if lagging.is_empty() {
            break Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(format!("not in sync after {bound:?}: {}", lagging.join(", ")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    admin.close().await;
    outcome
}

/// An idempotent producer writing `rate` records a second (value `s<seq>`, key `k<seq % 64>`)
/// to `topic` until `stop`; returns (acknowledged, failed).
pub(crate) async fn feed(bootstrap: String, topic: String, rate: u64, stop: Stop) -> Result<(u64, u64), String> {
    let producer = Producer::new(ProducerConfig::new(&bootstrap)).await.map_err(|e| format!("producer: {e}"))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<kafka_wire::client::DeliveryFuture>();
    let collector = tokio::spawn(async move {
        let (mut acked, mut failed) = (0u64, 0u64);
        while let Some(delivery) = rx.recv().await {
            match delivery.await {
                Ok(_) => acked += 1,
                Err(_) => failed += 1,
            }
        }
        (acked, failed)
    });
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut send_failed = 0;
    while !stop.is_set() {
        tick.tick().await;
        for _ in 0..rate / 100 {
            let record = ProducerRecord::new(&topic, format!("s{seq}")).key(format!("k{}", seq % 64));
            seq += 1;
            match producer.send(record).await {
                Ok(delivery) => tx.send(delivery).map_err(|_| "collector gone".to_string())?,
                Err(_) => send_failed += 1,
            }
        }
    }
    drop(tx);
    producer.flush().await.map_err(|e| format!("flush: {e}"))?;
    let (acked, failed) = collector.await.map_err(|e| format!("collector: {e}"))?;
    producer.close().await.map_err(|e| format!("close: {e}"))?;
    Ok((acked, failed + send_failed))
}

/// Every record of `topic` (partitions `0..partitions`) up to its end offsets as they are at the
/// call — the last stable offsets with `committed` (isolation read_committed), else the high
/// watermarks (read_uncommitted: aborted transactional records included) — in offset order per
/// partition, partitions one after the other. Read by the client's consumer, which follows
/// leadership moves; retried a few times if the cluster answers errors.
pub async fn read_back(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    committed: bool,
) -> Result<Vec<ConsumerRecord>, String> {
    let mut last_error = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            eprintln!("[chaos] reading {topic} back again: {last_error}");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        match kafka_wire_tests::read_to_end(bootstrap, topic, partitions, committed, READ_BOUND).await {
            Ok(mut records) => {
                records.sort_by_key(|r| r.partition);
                return Ok(records);
            }
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// Bound on one read of a topic to its end.
const READ_BOUND: Duration = Duration::from_secs(300);
