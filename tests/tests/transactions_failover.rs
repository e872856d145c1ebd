//! The exactly-once processor (the `txn` crate) across the loss of its transaction coordinator,
//! on the 3-node cluster (`cargo xtask kafka up --nodes 3`; the test skips loudly when it is not
//! up).
//!
//! A copier of 50 000 records (6 partitions, replication factor 3, `min.insync.replicas=2`;
//! every 7th transaction aborted on purpose) runs while a broker is SIGKILLed: the one that
//! coordinates its transactional.id (and not its group), the one that coordinates its group (and
//! not its transactions), or one that coordinates both (the ids are drawn until the
//! coordinators fall as wanted). Once the copier has committed more transactions through the
//! new coordinators, the broker is restarted. The read_committed view of the output must be the
//! input exactly once, in order per partition.
//!
//! The group coordinator's loss makes the member's lease lapse (its session timeout is shorter
//! than the cluster's failover) while a transaction is open: the member must not rejoin in the
//! background, or the open transaction would commit its offsets with the new generation while
//! the new generation hands the same records out again (found against Kafka 3.9: input
//! committed twice).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_wire::client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, CoordinatorType, IsolationLevel,
    OffsetReset, OffsetSpec, ProducerRecord, Result,
};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{cluster3_for, kafka_node_kill, kafka_node_start, unique_topic, RestartOnDrop};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use txn::{Decision, Processor, ProcessorConfig, Shutdown, Stats};

const N: u64 = 50_000;
const PARTITIONS: i32 = 6;
/// Transactions committed before the kill, and again while the node is down.
const COMMITS_BETWEEN: u64 = 15;
const ABORT_EVERY: u64 = 7;
/// How long the handler holds the batch it gets as the node is killed: past the failover
/// (`broker.session.timeout.ms` is 3 s, then an election and the coordinator's load), so that a
/// member rejoining in the background would be in a new generation when the batch's offsets go
/// out (without that, the window between a poll and its offsets is too short to hit).
const HOLD: Duration = Duration::from_secs(10);
/// Bound on any one wait for progress (a failover included).
const DEADLINE: Duration = Duration::from_secs(120);

/// Waits until the processor has committed `n` transactions; fails if it stops instead.
async fn committed(stats: &mut watch::Receiver<Stats>, task: &mut JoinHandle<Result<Stats>>, n: u64, what: &str) {
    let waited = tokio::time::timeout(DEADLINE, async {
        tokio::select! {
            reached = stats.wait_for(|s| s.committed >= n) => reached.is_ok(),
            ended = &mut *task => panic!("{what}: the processor stopped: {ended:?}"),
        }
    })
    .await;
    assert!(waited.unwrap_or(false), "{what}: {:?}, waiting for {n} commits", *stats.borrow());
}

/// Which coordinator the killed broker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    /// The transaction coordinator, not the group's.
    Transactions,
    /// The group coordinator, not the transactions'.
    Group,
    /// Both.
    Both,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copier_is_exactly_once_across_a_transaction_coordinator_kill() {
    copier_across_a_kill(Victim::Transactions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copier_is_exactly_once_across_a_group_coordinator_kill() {
    copier_across_a_kill(Victim::Group).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copier_is_exactly_once_across_a_kill_of_both_coordinators() {
    copier_across_a_kill(Victim::Both).await;
}

/// A group id and a transactional.id whose coordinators are placed as `victim` wants, and the
/// node to kill.
async fn place(admin: &Admin, victim: Victim) -> (String, String, i32) {
    for _ in 0..100 {
        let (group, transactional_id) = (unique_topic("txnfo"), unique_topic("txnfo-txn"));
        let g = admin.find_coordinator(&group, CoordinatorType::Group).await.unwrap();
        let t = admin.find_coordinator(&transactional_id, CoordinatorType::Transaction).await.unwrap();
        match victim {
            Victim::Transactions if g != t => return (group, transactional_id, t),
            Victim::Group if g != t => return (group, transactional_id, g),
            Victim::Both if g == t => return (group, transactional_id, g),
            _ => {}
        }
    }
    panic!("no group id / transactional.id pair with coordinators placed for {victim:?} in 100 draws");
}

// The cluster3_exclusive guard is held for the whole test on purpose (the test's own future is
// never moved to another thread: block_on runs it).
#[allow(clippy::await_holding_lock)]
async fn copier_across_a_kill(victim_is: Victim) {
    let Some((bs, _exclusive)) = cluster3_for("transactions_failover") else { return };
    let client = Client::connect(ClientConfig::new(&bs)).await.expect("connect to the 3-node cluster");
    let input = unique_topic("txnfo-in");
    let output = unique_topic("txnfo-out");
    let configs = [("min.insync.replicas", "2"), ("unclean.leader.election.enable", "false")];
    create_topic(&client, &input, PARTITIONS, 3, &configs).await;
    create_topic(&client, &output, PARTITIONS, 3, &configs).await;

    let producer = txn::idempotent_producer(&bs).await.unwrap();
    let mut expected: BTreeMap<i32, Vec<Bytes>> = BTreeMap::new();
    let mut deliveries = Vec::with_capacity(N as usize);
    for i in 0..N {
        let p = (i % PARTITIONS as u64) as i32;
        let value = Bytes::from(format!("{p}:{:07}", i / PARTITIONS as u64));
        expected.entry(p).or_default().push(value.clone());
        deliveries.push(producer.send(ProducerRecord::new(input.as_str(), value).partition(p)).await.unwrap());
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await.unwrap();

    let admin = Admin::new(client.clone());
    let (group, transactional_id, coordinator) = place(&admin, victim_is).await;
    let mut config = ProcessorConfig::new(&bs, &group, &transactional_id, [input.as_str()]);
    // Shorter than the cluster's failover (broker.session.timeout.ms is 3 s): when the killed
    // node is the group coordinator, the membership always lapses during the failover, with a
    // transaction open; the processor must abort it, rewind and go on.
    config.consumer =
        config.consumer.session_timeout(Duration::from_secs(2)).heartbeat_interval(Duration::from_millis(300));
    let processor = Processor::new(config).await.expect("processor");
    let victim = u8::try_from(coordinator).expect("node ids are 1..=3");
    let mut stats = processor.stats();
    let shutdown = Shutdown::new();
    let calls = Arc::new(AtomicU64::new(0));
    let hold_next = Arc::new(AtomicBool::new(false));
    let handler = {
        let (output, calls, hold_next) = (output.clone(), calls.clone(), hold_next.clone());
        move |batch: &[ConsumerRecord], out: &mut Vec<ProducerRecord>| {
            if hold_next.swap(false, Ordering::AcqRel) {
                // A slow batch: its transaction stays open through the kill and the failover.
                tokio::task::block_in_place(|| std::thread::sleep(HOLD));
            }
            out.extend(batch.iter().map(|r| ProducerRecord {
                topic: output.clone(),
                partition: Some(r.partition),
                value: r.value.clone(),
                ..Default::default()
            }));
            let call = calls.fetch_add(1, Ordering::AcqRel) + 1;
            if call % ABORT_EVERY == 0 {
                Decision::Abort
            } else {
                Decision::Commit
            }
        }
    };
    let start = Instant::now();
    let mut task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { processor.run(handler, &shutdown).await })
    };

    committed(&mut stats, &mut task, COMMITS_BETWEEN, "before the kill").await;
    let at_kill = stats.borrow().committed;
    eprintln!("[txn failover] killing node {victim}, coordinator of {victim_is:?}, after {at_kill} commits");
    let _restart = RestartOnDrop(victim);
    hold_next.store(true, Ordering::Release);
    tokio::task::spawn_blocking(move || kafka_node_kill(victim)).await.unwrap();
    let killed_at = Instant::now();
    committed(&mut stats, &mut task, at_kill + 1, "the first commit after the kill").await;
    let stalled = killed_at.elapsed();
    committed(&mut stats, &mut task, at_kill + COMMITS_BETWEEN, "while the node is down").await;
    let (key, kind) = match victim_is {
        Victim::Group => (&group, CoordinatorType::Group),
        Victim::Transactions | Victim::Both => (&transactional_id, CoordinatorType::Transaction),
    };
    let moved_to = admin.find_coordinator(key, kind).await.unwrap();
    assert_ne!(moved_to, coordinator, "the coordinator moved");
    if victim_is == Victim::Both {
        let group_moved_to = admin.find_coordinator(&group, CoordinatorType::Group).await.unwrap();
        assert_ne!(group_moved_to, coordinator, "the group coordinator moved");
    }
    eprintln!("[txn failover] coordinator now node {moved_to}; restarting node {victim}");
    tokio::task::spawn_blocking(move || kafka_node_start(victim)).await.unwrap();

    // The output, read_committed, until it holds every record; then, with no transaction open,
    // to the last stable offsets, where a duplicate would be.
    let reader = Consumer::new(
        ConsumerConfig::new(&bs)
            .isolation_level(IsolationLevel::ReadCommitted)
            .auto_offset_reset(OffsetReset::Earliest),
    )
    .await
    .unwrap();
    let tps: Vec<TopicPartition> = (0..PARTITIONS).map(|p| TopicPartition::new(output.as_str(), p)).collect();
    reader.assign(tps);
    let mut view: BTreeMap<i32, Vec<Bytes>> = BTreeMap::new();
    read_until(&reader, &mut view, |view| view.values().map(Vec::len).sum::<usize>() as u64 >= N).await;
    shutdown.trigger();
    let final_stats = tokio::time::timeout(DEADLINE, task).await.expect("the processor stops").unwrap().unwrap();
    let names: Vec<(&str, i32)> = (0..PARTITIONS).map(|p| (output.as_str(), p)).collect();
    let ends: Vec<(TopicPartition, i64)> = admin
        .list_offsets_isolated(&names, OffsetSpec::Latest, true)
        .await
        .unwrap()
        .into_iter()
        .map(|o| (TopicPartition::new(o.topic.as_str(), o.partition), o.offset))
        .collect();
    read_until(&reader, &mut view, |_| {
        let positions = reader.positions();
        ends.iter().all(|(tp, end)| positions.get(tp).is_some_and(|o| o.offset >= *end))
    })
    .await;
    eprintln!(
        "[txn failover {victim_is:?}] {N} records in {:.1} s: {} transactions committed, {} aborted ({} \
         decided by the handler); the first commit after the coordinator kill came {:.1} s after it",
        start.elapsed().as_secs_f64(),
        final_stats.committed,
        final_stats.aborted,
        calls.load(Ordering::Acquire) / ABORT_EVERY,
        stalled.as_secs_f64()
    );
    assert!(final_stats.aborted > 0, "aborts on purpose happened");
    for p in 0..PARTITIONS {
        let (got, want) = (view.get(&p).cloned().unwrap_or_default(), &expected[&p]);
        if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
            panic!("partition {p}: {} records, {} expected; first difference at {i}", got.len(), want.len());
        }
    }
}

/// Polls `reader` into `view` (values per partition) until `done`.
async fn read_until(
    reader: &Consumer,
    view: &mut BTreeMap<i32, Vec<Bytes>>,
    done: impl Fn(&BTreeMap<i32, Vec<Bytes>>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done(view) {
        let total: usize = view.values().map(Vec::len).sum();
        assert!(tokio::time::Instant::now() < deadline, "reading the output stalled at {total} records");
        for r in reader.poll(Duration::from_millis(200)).await.unwrap() {
            view.entry(r.partition).or_default().push(r.value.unwrap_or_default());
        }
    }
}
