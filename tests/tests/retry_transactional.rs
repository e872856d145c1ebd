//! The retry crate's transactional hand-off against the running broker: while records go
//! through the retry tiers, members join and leave (one stopped cleanly, one dropped without
//! shutdown and restarted with its `transactional.id`); read read_committed, each retry tier
//! and the dead-letter queue hold every record that reached them exactly once, and every record
//! reached its end (handled, or in the dead-letter queue).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_wire::client::{ClientConfig, OffsetReset};
use kafka_wire::{Client, ConsumerConfig, ConsumerRecord, Producer, ProducerConfig, ProducerRecord};
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, read_committed, unique_topic, wait_until};
use retry::{Failed, RetryConfig, RetryPolicy, RetryingConsumer, TopicNames};
use tokio::sync::oneshot;

const BOUND: Duration = Duration::from_secs(90);
const PARTITIONS: i32 = 4;

type Running = (oneshot::Sender<()>, tokio::task::JoinHandle<kafka_wire::Result<()>>);

fn spawn(consumer: RetryingConsumer) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run_until(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

async fn stop(handle: Running) {
    let _ = handle.0.send(());
    tokio::time::timeout(BOUND, handle.1).await.expect("the consumer did not stop").unwrap().unwrap();
}

/// Record `i` (value `r<i>`) fails on the source if `i` is even, in tier 0 if `i % 4 == 0`, in
/// tier 1 if `i % 8 == 0` (then it goes to the dead-letter queue).
fn fails_at(i: u64, step: usize) -> bool {
    i % (2 << step) == 0
}

fn id_of(r: &ConsumerRecord) -> u64 {
    let value = r.value.as_deref().unwrap_or_default();
    std::str::from_utf8(value).ok().and_then(|v| v.strip_prefix('r')).and_then(|n| n.parse().ok()).expect("r<i>")
}

/// What one member did.
#[derive(Default)]
struct Member {
    handled: AtomicUsize,
    failed: AtomicUsize,
}

/// Every record of `topic` read read_committed to its end; the record ids by how often each
/// appears.
async fn ids_committed(topic: &str) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for r in read_committed(topic).await {
        *seen.entry(id_of(&r)).or_insert(0) += 1;
    }
    seen
}

/// Ids appearing other than exactly once, and ids missing, in `seen` against `expected`.
fn not_once(seen: &BTreeMap<u64, usize>, expected: &BTreeSet<u64>) -> (Vec<(u64, usize)>, Vec<u64>) {
    let twice = seen.iter().filter(|(_, n)| **n != 1).map(|(i, n)| (*i, *n)).collect();
    let missing = expected.iter().filter(|i| !seen.contains_key(i)).copied().collect();
    (twice, missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_transactional_hand_off_a_rebalance_during_retries_loses_no_record_and_duplicates_none() {
    let source = unique_topic("retry-tx-source");
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    create_topic(&client, &source, PARTITIONS, 1, &[]).await;
    let group = unique_topic("retry-tx");
    let handled: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let policy = RetryPolicy::non_blocking([Duration::from_millis(300), Duration::from_millis(300)]);
    let names = TopicNames::new(&source, &group, 2);
    let make = |transactional_id: String, member: Arc<Member>| {
        let consumer = ConsumerConfig::new(&bootstrap())
            .group_id(&group)
            .auto_offset_reset(OffsetReset::Earliest)
            .session_timeout(Duration::from_secs(6))
            .heartbeat_interval(Duration::from_millis(500));
        let config = RetryConfig::new(consumer, &source, policy.clone()).transactional_hand_off(transactional_id);
        let (handled, names) = (handled.clone(), names.clone());
        RetryingConsumer::new(config, move |r: ConsumerRecord| {
            let (handled, member, names) = (handled.clone(), member.clone(), names.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let step = names.tier_of(&r.topic).map_or(0, |t| t + 1);
                let i = id_of(&r);
                if fails_at(i, step) {
                    member.failed.fetch_add(1, Ordering::Relaxed);
                    return Err(Failed::from(format!("r{i} fails at step {step}")));
                }
                member.handled.fetch_add(1, Ordering::Relaxed);
                handled.lock().unwrap().insert(i);
                Ok(())
            }
        })
    };

    // Records keep arriving while the members come and go.
    let producing = Arc::new(AtomicBool::new(true));
    let produced = Arc::new(AtomicUsize::new(0));
    let producer_task = {
        let (source, producing, produced) = (source.clone(), producing.clone(), produced.clone());
        tokio::spawn(async move {
            let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
            let mut i = 0u64;
            while producing.load(Ordering::Relaxed) {
                let record = ProducerRecord::new(source.as_str(), format!("r{i}")).key(format!("k{i}"));
                producer.send(record).await.unwrap().await.unwrap();
                i += 1;
                produced.store(i as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            producer.close().await.unwrap();
            i
        })
    };

    let (a, b, c, c2) =
        (Arc::<Member>::default(), Arc::<Member>::default(), Arc::<Member>::default(), Arc::<Member>::default());
    let a_run = spawn(make(unique_topic("retry-tx-a"), a.clone()).await.unwrap());
    wait_until("the first member under way", BOUND, || a.failed.load(Ordering::Relaxed) >= 20).await;
    // A second member joins, works, and leaves cleanly.
    let b_run = spawn(make(unique_topic("retry-tx-b"), b.clone()).await.unwrap());
    wait_until("the second member under way", BOUND, || b.failed.load(Ordering::Relaxed) >= 10).await;
    stop(b_run).await;
    // A third one joins and crashes right after forwarding records: no drain, no commit.
    let c_id = unique_topic("retry-tx-c");
    let c_consumer = make(c_id.clone(), c.clone()).await.unwrap();
    let c_member = c_consumer.clone();
    let c_run = spawn(c_consumer);
    wait_until("the third member forwarding", BOUND, || c.failed.load(Ordering::Relaxed) >= 3).await;
    c_run.1.abort();
    let _ = c_run.1.await;
    drop(c_member);
    // It restarts with its transactional.id, which aborts what it left open.
    let c2_run = spawn(make(c_id, c2.clone()).await.unwrap());
    wait_until("the restarted member under way", BOUND, || c2.handled.load(Ordering::Relaxed) >= 10).await;
    producing.store(false, Ordering::Relaxed);
    let n = producer_task.await.unwrap();

    // Every record reaches its end: handled, or in the dead-letter queue.
    let succeeding: BTreeSet<u64> = (0..n).filter(|i| !fails_at(*i, 2)).collect();
    wait_until("every record that can succeed handled", BOUND, || handled.lock().unwrap().is_superset(&succeeding))
        .await;
    let dead: BTreeSet<u64> = (0..n).filter(|i| fails_at(*i, 2)).collect();
    let deadline = tokio::time::Instant::now() + BOUND;
    let dlq = loop {
        let dlq = ids_committed(&names.dead_letter).await;
        if dead.iter().all(|i| dlq.contains_key(i)) {
            break dlq;
        }
        assert!(tokio::time::Instant::now() < deadline, "records missing from the dead-letter queue");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop(a_run).await;
    stop(c2_run).await;

    eprintln!(
        "[retry-tx] {n} records; failures seen by a {}, b {}, c {} (killed), c' {}",
        a.failed.load(Ordering::Relaxed),
        b.failed.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
        c2.failed.load(Ordering::Relaxed)
    );
    let (twice, missing) = not_once(&dlq, &dead);
    assert!(twice.is_empty() && missing.is_empty(), "dead-letter queue: not once {twice:?}, missing {missing:?}");
    assert_eq!(dlq.keys().copied().collect::<BTreeSet<u64>>(), dead, "only the exhausted records are dead");
    for (tier, topic) in names.tiers.iter().enumerate() {
        let expected: BTreeSet<u64> = (0..n).filter(|i| fails_at(*i, tier)).collect();
        let seen = ids_committed(topic).await;
        let (twice, missing) = not_once(&seen, &expected);
        assert!(twice.is_empty(), "tier {tier}: records forwarded more than once: {twice:?}");
        assert!(missing.is_empty(), "tier {tier}: records lost: {missing:?}");
        assert_eq!(seen.keys().copied().collect::<BTreeSet<u64>>(), expected, "tier {tier}: unexpected records");
    }
}
