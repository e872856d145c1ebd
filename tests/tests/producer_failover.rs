//! The idempotent producer across a broker failure, on the 3-node cluster
//! (`cargo xtask kafka up --nodes 3`; the test skips loudly when it is not up).
//!
//! 500 000 keyed records (acks=all, idempotence on, the producer's defaults) go to a topic with
//! 6 partitions, replication factor 3 and `min.insync.replicas=2`. After 150 000 acknowledgements
//! the broker that leads the most partitions is SIGKILLed; once 100 000 more are acknowledged it
//! is restarted while the producer keeps sending. Every record must be acknowledged, and the 6
//! partitions read back must hold each sequence number exactly once, in send order per
//! partition, at the offsets the acknowledgements reported.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_wire::client::{Client, ClientConfig, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use kafka_wire_tests::raw::{create_topic, fetch_records, partition_leaders};
use kafka_wire_tests::{cluster3_for, kafka_node_kill, kafka_node_start, unique_topic, RestartOnDrop};
use tokio::sync::mpsc;

const N: u64 = 500_000;
const PARTITIONS: i32 = 6;
/// Acknowledgements before the kill.
const KILL_AFTER_ACKS: u64 = 150_000;
/// Acknowledgements after the kill before the restart begins: the producer has failed over.
const RESTART_AFTER_MORE_ACKS: u64 = 100_000;
/// From this sequence on, the sender slows down while the restart is under way, so that records
/// are still being produced while the node rejoins.
const SLOW_FROM: u64 = 420_000;
/// Records that must still be sent after the restarted node serves again.
const AFTER_RESTART: u64 = 20_000;
/// Records sent and not yet acknowledged, at most (an application's bounded window; without it
/// the sender would run ~300 000 records ahead, as far as `buffer.memory` lets it, and the kill
/// would land near the end of the sends).
const WINDOW: usize = 20_000;
/// Bound on the whole produce phase (a hang is a failure, not a stuck CI job).
const PRODUCE_DEADLINE: Duration = Duration::from_secs(300);

fn key(i: u64) -> String {
    format!("key-{i}")
}

fn value(i: u64) -> String {
    format!("seq={i:010};{}", "x".repeat(60))
}

fn seq_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value.get(4..14)?).ok()?.parse().ok()
}

/// Shared progress counters.
struct Progress {
    sent: AtomicU64,
    acked: AtomicU64,
    restart_done: AtomicBool,
    window: tokio::sync::Semaphore,
}

#[derive(Clone, Copy)]
struct Moment {
    at: Duration,
    sent: u64,
    acked: u64,
}

impl std::fmt::Debug for Moment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t={:.1}s sent={} acked={}", self.at.as_secs_f64(), self.sent, self.acked)
    }
}

impl Progress {
    fn moment(&self, start: Instant) -> Moment {
        Moment {
            at: start.elapsed(),
            sent: self.sent.load(Ordering::Acquire),
            acked: self.acked.load(Ordering::Acquire),
        }
    }
}

async fn wait_for_acks(progress: &Progress, n: u64) {
    while progress.acked.load(Ordering::Acquire) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// The cluster3_exclusive guard is held for the whole test on purpose (the test's own future is
// never moved to another thread: block_on runs it).
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_survives_leader_kill_and_restart() {
    let Some((bs, _exclusive)) = cluster3_for("producer_failover") else { return };

    let client = Client::connect(ClientConfig::new(&bs)).await.expect("connect to the 3-node cluster");
    let topic = unique_topic("failover");
    create_topic(
        &client,
        &topic,
        PARTITIONS,
        3,
        &[("min.insync.replicas", "2"), ("unclean.leader.election.enable", "false")],
    )
    .await;
    let (_, leaders) = partition_leaders(&client, &topic).await;
    let mut led: BTreeMap<i32, usize> = BTreeMap::new();
    for l in leaders.values() {
        *led.entry(*l).or_default() += 1;
    }
    let (&victim_id, &victim_count) = led.iter().max_by_key(|(id, c)| (**c, -**id)).expect("leaders");
    let victim = u8::try_from(victim_id).expect("node ids are 1..=3");
    eprintln!("[failover] topic {topic}; leaders {leaders:?}; victim node {victim} leads {victim_count}");

    let producer = Producer::new(ProducerConfig::new(&bs)).await.expect("producer");
    let progress = Arc::new(Progress {
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        restart_done: AtomicBool::new(false),
        window: tokio::sync::Semaphore::new(WINDOW),
    });
    let start = Instant::now();

    // Collector: awaits the deliveries in send order, counts the acknowledged ones.
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, DeliveryFuture)>();
    let collector = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut acks: Vec<(i32, i64)> = vec![(-1, -1); N as usize];
            let mut failures: Vec<(u64, String)> = Vec::new();
            // The longest time the collector waited for one delivery (the failover stall).
            let mut longest_gap = (Duration::ZERO, 0u64);
            while let Some((i, f)) = rx.recv().await {
                let waiting = Instant::now();
                match f.await {
                    Ok(md) => acks[i as usize] = (md.topic_partition.partition, md.offset),
                    Err(e) => failures.push((i, e.to_string())),
                }
                if waiting.elapsed() > longest_gap.0 {
                    longest_gap = (waiting.elapsed(), i);
                }
                progress.acked.fetch_add(1, Ordering::AcqRel);
                progress.window.add_permits(1);
            }
            (acks, failures, longest_gap)
        })
    };

    // Sender: sends without waiting for acknowledgements; slows down near the end while the
    // restart is under way, and sends the last records only once the node is back.
    let sender = {
        let progress = progress.clone();
        let producer = producer.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut paused = Duration::ZERO;
            for i in 0..N {
                if i >= SLOW_FROM && !progress.restart_done.load(Ordering::Acquire) {
                    if i >= N - AFTER_RESTART {
                        let t = Instant::now();
                        while !progress.restart_done.load(Ordering::Acquire) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        paused += t.elapsed();
                    } else if i % 50 == 0 {
                        // ~5 000 records/s.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                progress.window.acquire().await.expect("window semaphore").forget();
                let record = ProducerRecord::new(&topic, value(i)).key(key(i));
                let f = producer.send(record).await.unwrap_or_else(|e| panic!("send {i}: {e}"));
                tx.send((i, f)).expect("collector alive");
                progress.sent.store(i + 1, Ordering::Release);
            }
            paused
        })
    };

    // Chaos: kill after KILL_AFTER_ACKS acknowledgements, restart after RESTART_AFTER_MORE_ACKS more.
    let chaos = {
        let progress = progress.clone();
        tokio::spawn(async move {
            wait_for_acks(&progress, KILL_AFTER_ACKS).await;
            let before_kill = progress.moment(start);
            tokio::task::spawn_blocking(move || kafka_node_kill(victim)).await.unwrap();
            let guard = RestartOnDrop(victim);
            let killed = progress.moment(start);
            eprintln!("[failover] killed node {victim} at {killed:?} (asked at {before_kill:?})");
            // (Capped so that it cannot wait for records the sender holds back for after the restart.)
            wait_for_acks(&progress, (killed.acked + RESTART_AFTER_MORE_ACKS).min(N - AFTER_RESTART - 10_000)).await;
            let restart_begin = progress.moment(start);
            eprintln!("[failover] restarting node {victim} at {restart_begin:?}");
            tokio::task::spawn_blocking(move || kafka_node_start(victim)).await.unwrap();
            let restart_end = progress.moment(start);
            progress.restart_done.store(true, Ordering::Release);
            eprintln!("[failover] node {victim} serves again at {restart_end:?}");
            drop(guard);
            (killed, restart_begin, restart_end)
        })
    };

    let produced = tokio::time::timeout(PRODUCE_DEADLINE, async {
        let paused = sender.await.expect("sender");
        producer.flush().await.expect("flush");
        let (acks, failures, longest_gap) = collector.await.expect("collector");
        (paused, acks, failures, longest_gap)
    })
    .await;
    let (paused, acks, failures, longest_gap) = match produced {
        Ok(r) => r,
        Err(_) => {
            let m = progress.moment(start);
            // The chaos task restarts the node when it is dropped (RestartOnDrop).
            chaos.abort();
            let _ = chaos.await;
            panic!(
                "producer hung: {PRODUCE_DEADLINE:?} passed with {} sent, {} acknowledged (in send order)",
                m.sent, m.acked
            );
        }
    };
    let produce_time = start.elapsed();
    let (killed, restart_begin, restart_end) = chaos.await.expect("chaos task");
    producer.close().await.expect("close");
    eprintln!(
        "[failover] produced {N} in {produce_time:?} ({paused:?} paused waiting for the restart); \
         longest wait for one ack: {:?} (record {})",
        longest_gap.0, longest_gap.1
    );
    if !failures.is_empty() {
        let mut by_error: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
        for (i, e) in &failures {
            by_error.entry(e).or_insert((0, *i)).0 += 1;
        }
        panic!("{} of {N} records failed (error: (count, first sequence)): {by_error:#?}", failures.len());
    }

    // Read everything back through a fresh client.
    let reader = Client::connect(ClientConfig::new(&bs)).await.expect("connect");
    let mut expected: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
    let mut ack_at: HashMap<(i32, i64), u64> = HashMap::with_capacity(N as usize);
    for (i, &(p, o)) in acks.iter().enumerate() {
        expected.entry(p).or_default().push(i as u64);
        ack_at.insert((p, o), i as u64);
    }
    let mut seen = vec![0u32; N as usize];
    let mut foreign = 0u64;
    let mut order_breaks = Vec::new();
    let mut offset_mismatches = 0u64;
    for p in 0..PARTITIONS {
        let records = fetch_records(&reader, &topic, p).await;
        let mut got = Vec::with_capacity(records.len());
        for r in &records {
            let Some(i) = r.value.as_deref().and_then(seq_of).filter(|i| *i < N) else {
                foreign += 1;
                continue;
            };
            assert_eq!(r.key.as_deref(), Some(key(i).as_bytes()), "key of sequence {i} at {p}/{}", r.offset);
            seen[i as usize] += 1;
            if ack_at.get(&(p, r.offset)) != Some(&i) {
                offset_mismatches += 1;
            }
            got.push(i);
        }
        let want = expected.get(&p).map_or(&[][..], Vec::as_slice);
        if got != want {
            let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
            order_breaks.push(format!(
                "partition {p}: {} records read, {} sent; first difference at index {at}: read {:?}, sent {:?}",
                got.len(),
                want.len(),
                got.get(at.saturating_sub(2)..(at + 3).min(got.len())),
                want.get(at.saturating_sub(2)..(at + 3).min(want.len())),
            ));
        }
    }
    let lost = seen.iter().filter(|c| **c == 0).count();
    let duplicated = seen.iter().filter(|c| **c > 1).count();
    eprintln!(
        "[failover] {N} records: {} acknowledged, {lost} lost, {duplicated} duplicated, {foreign} foreign, \
         {offset_mismatches} at another offset than acknowledged; per partition {:?}; \
         kill {killed:?}, restart {restart_begin:?} .. {restart_end:?}; total {:?}",
        acks.len() - failures.len(),
        expected.iter().map(|(p, v)| (*p, v.len())).collect::<Vec<_>>(),
        start.elapsed(),
    );
    assert!(restart_end.sent < N, "the restart completed after the last record was sent");
    assert_eq!((lost, duplicated, foreign), (0, 0, 0), "lost, duplicated, foreign records");
    assert!(order_breaks.is_empty(), "order per partition differs from send order:\n{}", order_breaks.join("\n"));
    assert_eq!(offset_mismatches, 0, "records not at the offsets their acknowledgements reported");
}
