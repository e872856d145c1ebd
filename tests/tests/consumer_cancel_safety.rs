//! Cancel safety of the consumer's group-facing calls, against the running broker: a member
//! whose `poll`, record stream and `commit` are cancelled at random (seeded) points — by
//! `tokio::time::timeout` and `tokio::select!` — while a second member joins and later leaves,
//! with cooperative-sticky and with eager (range) assignment. Its revocation callback takes a
//! random while, so that cancellations land inside rebalance steps too.
//!
//! Invariants: the new member gets its partitions within a bound (a cancelled `poll` that
//! skipped the revocation kept them from it: for good with cooperative-sticky, until the
//! rebalance timeout with eager), the leaving member's partitions come back, the commits
//! complete (the group's committed offsets end at the end of every partition), and every
//! record is handed out exactly once across both members. `CANCEL_SEED=s` runs only seed `s`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_wire::client::stream;
use kafka_wire::client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, RebalanceListener,
};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, unique_topic, wait_until};

const PARTITIONS: i32 = 6;
const N: u64 = 4_000;
/// Rounds of a second member joining and leaving.
const ROUNDS: u64 = 3;
/// How long the new member may wait for its partitions, and the old one for their return. The
/// rebalance timeout (max.poll.interval.ms) is twice that, so an eager member that never
/// finishes its revocation is not rescued by the coordinator within the bound.
const BOUND: Duration = Duration::from_secs(15);

/// The tests of this file one at a time (each runs a group on the shared broker).
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A small seeded generator, shared by the member's loop and its listener.
#[derive(Clone)]
struct Rng(Arc<AtomicU64>);

impl Rng {
    fn below(&self, n: u64) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.store(x, Ordering::Relaxed);
        x % n
    }

    fn millis(&self, n: u64) -> Duration {
        Duration::from_millis(self.below(n))
    }
}

/// A revocation callback that works for a random while (5–35 ms).
struct SlowRevocation(Rng);

impl RebalanceListener for SlowRevocation {
    fn on_partitions_revoked<'a>(
        &'a self,
        _: &'a Consumer,
        _: &'a [TopicPartition],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        let work = Duration::from_millis(5) + self.0.millis(30);
        Box::pin(tokio::time::sleep(work))
    }
}

type Seen = Arc<Mutex<Vec<u64>>>;

fn note(seen: &Seen, records: &[ConsumerRecord]) {
    let mut s = seen.lock().unwrap();
    for r in records {
        s.push(std::str::from_utf8(r.value.as_deref().unwrap()).unwrap().parse().unwrap());
    }
}

async fn produce(topic: &str, from: u64, to: u64) {
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    let mut deliveries = Vec::new();
    for i in from..to {
        let r = ProducerRecord::new(topic, i.to_string()).partition((i % PARTITIONS as u64) as i32);
        deliveries.push(producer.send(r).await.unwrap());
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await.unwrap();
}

fn config(group: &str, strategy: &str) -> ConsumerConfig {
    ConsumerConfig::new(&bootstrap())
        .group_id(group)
        .assignment_strategy(&[strategy])
        .auto_offset_reset(OffsetReset::Earliest)
        // Positions are committed on revocation (and on close): what was handed out is done.
        .enable_auto_commit(true)
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
        .max_poll_interval(BOUND * 2)
        .max_poll_records(50)
}

/// The member under test: `poll`, the stream's `next` and `commit`, each cancelled at a random
/// point, until `stop`.
async fn cancelled_member(consumer: Consumer, rng: Rng, seen: Seen, stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        match rng.below(3) {
            0 => {
                // Mostly short, now and then long enough for a whole rebalance step.
                let limit = if rng.below(4) == 0 { rng.millis(200) } else { rng.millis(25) };
                if let Ok(result) = tokio::time::timeout(limit, consumer.poll(Duration::from_millis(100))).await {
                    note(&seen, &result.expect("poll"));
                }
            }
            1 => {
                let mut records = consumer.stream();
                for _ in 0..rng.below(20) {
                    tokio::select! {
                        next = stream::next(&mut records) => {
                            let record = next.expect("the stream does not end").expect("stream");
                            note(&seen, std::slice::from_ref(&record));
                        }
                        _ = tokio::time::sleep(rng.millis(25)) => {}
                    }
                }
                // Dropped here, perhaps in the middle of a poll.
            }
            _ => {
                let _ = tokio::time::timeout(rng.millis(25), consumer.commit()).await;
            }
        }
    }
}

/// A plain member: polls and notes until `stop`.
async fn plain_member(consumer: Consumer, seen: Seen, stop: tokio::sync::watch::Receiver<bool>) -> Consumer {
    while !*stop.borrow() {
        note(&seen, &consumer.poll(Duration::from_millis(100)).await.expect("poll"));
    }
    consumer
}

async fn cancellations_keep_the_group_moving(strategy: &str, seed: u64) {
    eprintln!("[cancel safety] {strategy}, seed {seed}");
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    let topic = unique_topic("cancel");
    let group = unique_topic("gcancel");
    create_topic(&client, &topic, PARTITIONS, 1, &[]).await;
    produce(&topic, 0, N / (ROUNDS + 1)).await;
    let seen: Seen = Arc::default();
    let rng = Rng(Arc::new(AtomicU64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)));

    let a = Consumer::new(config(&group, strategy)).await.unwrap();
    a.set_rebalance_listener(SlowRevocation(rng.clone()));
    a.subscribe([topic.as_str()]).unwrap();
    let (stop_a, stop_a_rx) = tokio::sync::watch::channel(false);
    let a_task = tokio::spawn(cancelled_member(a.clone(), rng.clone(), seen.clone(), stop_a_rx));
    wait_until("the first member owns the topic", Duration::from_secs(60), || {
        a.assignment().len() == PARTITIONS as usize
    })
    .await;

    // Three times: a second member joins (the first revokes), the records of one more round
    // arrive, the second member leaves (its partitions come back).
    for round in 1..=ROUNDS {
        let b = Consumer::new(config(&group, strategy)).await.unwrap();
        b.subscribe([topic.as_str()]).unwrap();
        let (stop_b, stop_b_rx) = tokio::sync::watch::channel(false);
        let b_task = tokio::spawn(plain_member(b.clone(), seen.clone(), stop_b_rx));
        let why = format!("({strategy}, seed {seed}, round {round}): a cancelled poll skipped a revocation");
        wait_until(&format!("the joining member gets its partitions {why}"), BOUND, || {
            let (x, y) = (a.assignment(), b.assignment());
            !y.is_empty() && x.is_disjoint(&y) && x.len() + y.len() == PARTITIONS as usize
        })
        .await;
        let (from, to) = (N * round / (ROUNDS + 1), N * (round + 1) / (ROUNDS + 1));
        produce(&topic, from, to).await;
        wait_until("every record produced so far handed out", Duration::from_secs(60), || {
            seen.lock().unwrap().iter().collect::<BTreeSet<_>>().len() as u64 >= to
        })
        .await;
        stop_b.send_replace(true);
        let b = b_task.await.unwrap();
        b.close().await.unwrap();
        wait_until(&format!("the leaving member's partitions come back {why}"), BOUND, || {
            a.assignment().len() == PARTITIONS as usize
        })
        .await;
    }
    stop_a.send_replace(true);
    a_task.await.unwrap();
    a.commit().await.expect("a commit after the cancelled ones completes");
    let committed: i64 =
        Admin::new(client.clone()).list_group_offsets(&group, None).await.unwrap().iter().map(|o| o.offset).sum();
    a.close().await.unwrap();

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let distinct: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(distinct.len() as u64, N, "every record handed out ({strategy}, seed {seed})");
    assert_eq!(seen.len() as u64, N, "no record handed out twice ({strategy}, seed {seed})");
    assert_eq!(committed as u64, N, "the group's commits end at the end of every partition ({strategy}, seed {seed})");
}

fn seeds() -> Vec<u64> {
    match std::env::var("CANCEL_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => vec![1, 2],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_polls_streams_and_commits_keep_a_cooperative_group_moving() {
    let _serial = serial().await;
    for seed in seeds() {
        cancellations_keep_the_group_moving("cooperative-sticky", seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_polls_streams_and_commits_keep_an_eager_group_moving() {
    let _serial = serial().await;
    for seed in seeds() {
        cancellations_keep_the_group_moving("range", seed).await;
    }
}
