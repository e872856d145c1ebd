//! The handler runtime against the running broker: order per partition, keys in parallel
//! without a batch barrier, a slow handler that keeps its partitions, drain and commit when a
//! second member takes partitions, failed records retried in place, and the exactly-once mode
//! (a copier whose read_committed output is its input once, across joins, a kill and aborts).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use handler::{Decision, ExactlyOnceConfig, HandlerError, Outputs, Runtime, RuntimeConfig};
use kafka_wire::client::{Admin, ClientConfig, OffsetReset};
use kafka_wire::{Client, ConsumerConfig, ConsumerRecord, Producer, ProducerConfig, ProducerRecord, TopicPartition};
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, read_committed, unique_topic, wait_until};
use tokio::sync::oneshot;

const BOUND: Duration = Duration::from_secs(60);

/// A topic of `partitions` partitions with `per_partition` records each; record `i` of
/// partition `p` has the key `key(p, i)` and the value `p-i`.
async fn topic_with(partitions: i32, per_partition: u32, key: impl Fn(i32, u32) -> String) -> String {
    let topic = unique_topic("handler");
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    create_topic(&client, &topic, partitions, 1, &[]).await;
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..per_partition {
        for p in 0..partitions {
            let record = ProducerRecord::new(&topic, format!("{p}-{i}")).key(key(p, i)).partition(p);
            deliveries.push(producer.send(record).await.unwrap());
        }
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await.unwrap();
    topic
}

fn consumer_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new(&bootstrap()).group_id(group).auto_offset_reset(OffsetReset::Earliest)
}

/// What the handlers saw, in the order they finished: (partition, offset, key).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(i32, i64, String)>>>);

impl Seen {
    fn push(&self, r: &ConsumerRecord) {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        self.0.lock().unwrap().push((r.partition, r.offset, key));
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn all(&self) -> Vec<(i32, i64, String)> {
        self.0.lock().unwrap().clone()
    }

    /// Every (partition, offset) seen more than once.
    fn duplicates(&self) -> Vec<(i32, i64)> {
        let mut once = BTreeSet::new();
        self.all().into_iter().filter(|(p, o, _)| !once.insert((*p, *o))).map(|(p, o, _)| (p, o)).collect()
    }
}

async fn committed(group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    let offsets = admin.list_group_offsets(group, Some(&[topic])).await.unwrap();
    offsets.into_iter().map(|o| (o.partition, o.offset)).collect()
}

/// Runs `runtime` until the returned sender fires (or is dropped).
fn spawn(runtime: Runtime) -> (oneshot::Sender<()>, tokio::task::JoinHandle<kafka_wire::Result<()>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run_until(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

async fn stop(handle: (oneshot::Sender<()>, tokio::task::JoinHandle<kafka_wire::Result<()>>)) {
    let _ = handle.0.send(());
    tokio::time::timeout(BOUND, handle.1).await.expect("the runtime did not stop").unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_partition_is_handled_in_order_and_what_was_handled_is_committed_at_shutdown() {
    const N: u32 = 500;
    let topic = topic_with(3, N, |_, i| format!("k{}", i % 7)).await;
    let group = unique_topic("handler-order");
    let seen = Seen::default();
    let s = seen.clone();
    let runtime = Runtime::new(
        RuntimeConfig::new(consumer_config(&group), [topic.as_str()]).queue_capacity(50),
        move |r: ConsumerRecord| {
            let s = s.clone();
            async move {
                s.push(&r);
                Ok::<(), HandlerError>(())
            }
        },
    )
    .await
    .unwrap();
    let running = spawn(runtime);
    wait_until("every record handled", BOUND, || seen.len() >= 3 * N as usize).await;
    stop(running).await;

    let all = seen.all();
    assert_eq!(all.len(), 3 * N as usize, "a record was handled twice");
    for p in 0..3 {
        let offsets: Vec<i64> = all.iter().filter(|(q, ..)| *q == p).map(|(_, o, _)| *o).collect();
        assert_eq!(offsets, (0..N as i64).collect::<Vec<_>>(), "partition {p} out of order or incomplete");
    }
    assert_eq!(committed(&group, &topic).await, (0..3).map(|p| (p, N as i64)).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_key_lets_the_other_keys_finish_and_nothing_past_it_is_committed() {
    const N: u32 = 400;
    // One partition, keys k0..k7 in turn; the first record of k3 (offset 3) stalls.
    let topic = topic_with(1, N, |_, i| format!("k{}", i % 8)).await;
    let group = unique_topic("handler-keys");
    let seen = Seen::default();
    let release = Arc::new(tokio::sync::Notify::new());
    let (s, r) = (seen.clone(), release.clone());
    let runtime = Runtime::new(
        RuntimeConfig::new(consumer_config(&group), [topic.as_str()])
            .key_parallelism(4)
            .commit_interval(Duration::from_millis(100)),
        move |rec: ConsumerRecord| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                if rec.offset == 3 {
                    r.notified().await;
                }
                s.push(&rec);
                Ok::<(), HandlerError>(())
            }
        },
    )
    .await
    .unwrap();
    let stats = runtime.clone();
    let running = spawn(runtime);

    // Every record of the other keys is handled while k3 stalls.
    let others = (N - N / 8) as usize;
    wait_until("the other keys' records handled", BOUND, || seen.len() >= others).await;
    assert!(seen.all().iter().all(|(_, _, k)| k != "k3"), "a record of the stalled key ran past its stalled record");
    let tp = TopicPartition::new(topic.as_str(), 0);
    wait_until("a commit at the stalled record", BOUND, || stats.stats().get(&tp).and_then(|s| s.committed) == Some(3))
        .await;
    assert_eq!(committed(&group, &topic).await.get(&0), Some(&3), "committed past the unfinished record");

    release.notify_one();
    wait_until("every record handled", BOUND, || seen.len() >= N as usize).await;
    stop(running).await;
    for k in 0..8 {
        let offsets: Vec<i64> =
            seen.all().iter().filter(|(_, _, key)| *key == format!("k{k}")).map(|(_, o, _)| *o).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "key k{k} out of order: {offsets:?}");
        assert_eq!(offsets.len(), (N / 8) as usize);
    }
    assert_eq!(committed(&group, &topic).await.get(&0), Some(&(N as i64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_max_poll_interval_keeps_its_partitions() {
    const N: u32 = 20;
    let topic = topic_with(2, N, |p, i| format!("{p}-{i}")).await;
    let group = unique_topic("handler-slow");
    let seen = Seen::default();
    let s = seen.clone();
    let config = consumer_config(&group)
        .max_poll_interval(Duration::from_secs(2))
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500));
    let runtime = Runtime::new(RuntimeConfig::new(config, [topic.as_str()]), move |r: ConsumerRecord| {
        let s = s.clone();
        async move {
            // The first two records of partition 0 take longer than max.poll.interval.ms.
            if r.partition == 0 && r.offset < 2 {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            s.push(&r);
            Ok::<(), HandlerError>(())
        }
    })
    .await
    .unwrap();
    let member = runtime.clone();
    let running = spawn(runtime);
    wait_until("the member joined", BOUND, || member.consumer().group_metadata().is_ok_and(|m| m.generation_id > 0))
        .await;
    let generation = member.consumer().group_metadata().unwrap().generation_id;
    wait_until("every record handled", BOUND, || seen.len() >= 2 * N as usize).await;
    assert_eq!(
        member.consumer().group_metadata().unwrap().generation_id,
        generation,
        "the member left the group while its handler was slow"
    );
    assert!(seen.duplicates().is_empty(), "records handled twice: {:?}", seen.duplicates());
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_gets_partitions_drained_and_committed_so_nothing_is_handled_twice() {
    const N: u32 = 600;
    let topic = topic_with(4, N, |p, i| format!("{p}-{i}")).await;
    let group = unique_topic("handler-rebalance");
    let (seen_a, seen_b) = (Seen::default(), Seen::default());
    let make = |seen: Seen| {
        let config = RuntimeConfig::new(consumer_config(&group), [topic.as_str()]).queue_capacity(20);
        Runtime::new(config, move |r: ConsumerRecord| {
            let s = seen.clone();
            async move {
                // Slow enough (3 s a partition) that the second member joins halfway.
                tokio::time::sleep(Duration::from_millis(5)).await;
                s.push(&r);
                Ok::<(), HandlerError>(())
            }
        })
    };
    let a = spawn(make(seen_a.clone()).await.unwrap());
    wait_until("the first member under way", BOUND, || seen_a.len() >= 100).await;
    let b = spawn(make(seen_b.clone()).await.unwrap());
    let total = || seen_a.len() + seen_b.len();
    wait_until("every record handled", BOUND, || total() >= 4 * N as usize).await;
    stop(a).await;
    stop(b).await;
    assert!(seen_b.len() > 0, "the second member handled nothing: no rebalance was tested");
    let both = Seen::default();
    both.0.lock().unwrap().extend(seen_a.all().into_iter().chain(seen_b.all()));
    assert!(both.duplicates().is_empty(), "records handled twice across the rebalance: {:?}", both.duplicates());
    assert_eq!(both.len(), 4 * N as usize);
    assert_eq!(committed(&group, &topic).await, (0..4).map(|p| (p, N as i64)).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_record_is_retried_in_place_while_the_other_partitions_go_on() {
    const N: u32 = 200;
    let topic = topic_with(3, N, |p, i| format!("{p}-{i}")).await;
    let group = unique_topic("handler-retry");
    let seen = Seen::default();
    let others_done = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let (s, done, tries) = (seen.clone(), others_done.clone(), attempts.clone());
    let runtime = Runtime::new(
        RuntimeConfig::new(consumer_config(&group), [topic.as_str()])
            .retry_backoff(Duration::from_millis(10), Duration::from_millis(50)),
        move |r: ConsumerRecord| {
            let (s, done, tries) = (s.clone(), done.clone(), tries.clone());
            async move {
                // Record 10 of partition 1 fails until the other partitions are finished.
                if r.partition == 1 && r.offset == 10 {
                    tries.fetch_add(1, Ordering::Relaxed);
                    if !done.load(Ordering::Relaxed) {
                        return Err::<(), HandlerError>("the payment provider is down".into());
                    }
                }
                s.push(&r);
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    let member = runtime.clone();
    let running = spawn(runtime);
    let tp1 = TopicPartition::new(topic.as_str(), 1);
    let finished = |p: i32| seen.all().iter().filter(|(q, ..)| *q == p).count() >= N as usize;
    // Partition 1 may have a leader of its own (on 3 nodes), whose first answer can come after
    // the other two partitions are done: waited for, not assumed.
    let blocked = || member.stats().get(&tp1).is_some_and(|s| s.blocked_since.is_some() && s.failed >= 1);
    wait_until("partitions 0 and 2 handled while partition 1 is blocked", BOUND, || {
        finished(0) && finished(2) && blocked()
    })
    .await;
    let p1: Vec<i64> = seen.all().iter().filter(|(q, ..)| *q == 1).map(|(_, o, _)| *o).collect();
    assert_eq!(p1, (0..10).collect::<Vec<_>>(), "partition 1 went past its failing record");

    others_done.store(true, Ordering::Relaxed);
    wait_until("partition 1 handled after the retry succeeded", BOUND, || finished(1)).await;
    let p1: Vec<i64> = seen.all().iter().filter(|(q, ..)| *q == 1).map(|(_, o, _)| *o).collect();
    assert_eq!(p1, (0..N as i64).collect::<Vec<_>>(), "partition 1 out of order after the retries");
    assert!(attempts.load(Ordering::Relaxed) >= 2);
    assert_eq!(member.stats().remove(&tp1).unwrap().blocked_since, None);
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_whose_future_is_dropped_leaves_no_member_behind() {
    let topic = topic_with(1, 1, |_, _| "k".into()).await;
    let group = unique_topic("handler-dropped");
    let config =
        consumer_config(&group).session_timeout(Duration::from_secs(6)).heartbeat_interval(Duration::from_millis(500));
    let runtime = Runtime::new(RuntimeConfig::new(config, [topic.as_str()]), |_r: ConsumerRecord| async {
        Ok::<(), HandlerError>(())
    })
    .await
    .unwrap();
    let member = runtime.clone();
    let running = spawn(runtime);
    wait_until("the member joined", BOUND, || member.consumer().group_metadata().is_ok_and(|m| m.generation_id > 0))
        .await;
    // A crash: the future is dropped, no shutdown. The member must go with it (the session
    // expires), not keep heartbeating from a consumer nobody holds.
    running.1.abort();
    let _ = running.1.await;
    drop(member);
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let members = admin.describe_groups(&[group.as_str()]).await.unwrap()[0].members.len();
        if members == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{members} member(s) still in the group 30 s after the runtime was dropped"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_s_partitions_are_taken_over_and_nothing_is_skipped() {
    const N: u32 = 400;
    let topic = topic_with(4, N, |p, i| format!("{p}-{i}")).await;
    let group = unique_topic("handler-kill");
    let (seen_a, seen_b) = (Seen::default(), Seen::default());
    let make = |seen: Seen| {
        let config = consumer_config(&group)
            .session_timeout(Duration::from_secs(6))
            .heartbeat_interval(Duration::from_millis(500));
        Runtime::new(RuntimeConfig::new(config, [topic.as_str()]).queue_capacity(20), move |r: ConsumerRecord| {
            let s = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                s.push(&r);
                Ok::<(), HandlerError>(())
            }
        })
    };
    let a_runtime = make(seen_a.clone()).await.unwrap();
    let a_member = a_runtime.clone();
    let a = spawn(a_runtime);
    let b = spawn(make(seen_b.clone()).await.unwrap());
    wait_until("both members handling records", BOUND, || seen_a.len() >= 50 && seen_b.len() >= 50).await;
    // A crashes: no drain, no commit; B gets its partitions once A's session expires and
    // handles them from A's last commit.
    a.1.abort();
    let _ = a.1.await;
    drop(a_member);
    let all = || {
        let mut handled = BTreeSet::new();
        for (p, o, _) in seen_a.all().into_iter().chain(seen_b.all()) {
            handled.insert((p, o));
        }
        handled.len()
    };
    wait_until("every record handled by one member or the other", BOUND, || all() >= 4 * N as usize).await;
    stop(b).await;
    assert_eq!(committed(&group, &topic).await, (0..4).map(|p| (p, N as i64)).collect());
}

/// Each partition's values in `topic`, read read_committed to its end (duplicates included).
async fn committed_values(topic: &str) -> BTreeMap<i32, Vec<String>> {
    let mut values: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for r in read_committed(topic).await {
        values
            .entry(r.partition)
            .or_default()
            .push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into());
    }
    values
}

/// The exactly-once mode as a copier, with every 5th batch aborted on purpose: a first member
/// is joined by a second, then killed mid-stream (no drain, no commit, a transaction possibly
/// open) and replaced by a third with its `transactional.id` (which fences it). The output,
/// read read_committed, is the input exactly once, in order per partition, and the group's
/// offsets are at the end of the input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_mode_copies_each_record_once_across_a_join_a_kill_and_aborts() {
    const N: u32 = 300;
    const PARTITIONS: i32 = 4;
    let input = topic_with(PARTITIONS, N, |p, i| format!("{p}-{i}")).await;
    let output = unique_topic("handler-eos-out");
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    create_topic(&client, &output, PARTITIONS, 1, &[]).await;
    let group = unique_topic("handler-eos");
    // Batches handled, over all members; the copies each member's handler made.
    let calls = Arc::new(AtomicUsize::new(0));
    let make = |transactional_id: String, copied: Arc<AtomicUsize>| {
        let consumer = consumer_config(&group)
            .session_timeout(Duration::from_secs(6))
            .heartbeat_interval(Duration::from_millis(500));
        let config = RuntimeConfig::new(consumer, [input.as_str()]).queue_capacity(20);
        let producer = ProducerConfig::new(&bootstrap()).transactional_id(transactional_id);
        let exactly_once = ExactlyOnceConfig::new(producer).batch_size(10);
        let (output, calls) = (output.clone(), calls.clone());
        Runtime::exactly_once(config, exactly_once, move |batch: Vec<ConsumerRecord>| {
            let (output, calls, copied) = (output.clone(), calls.clone(), copied.clone());
            async move {
                // Slow enough that the members overlap.
                tokio::time::sleep(Duration::from_millis(20)).await;
                copied.fetch_add(batch.len(), Ordering::Relaxed);
                let records = batch
                    .iter()
                    .map(|r| {
                        ProducerRecord::new(output.as_str(), r.value.clone().unwrap_or_default()).partition(r.partition)
                    })
                    .collect();
                let call = calls.fetch_add(1, Ordering::Relaxed) + 1;
                let decision = if call % 5 == 0 { Decision::Abort } else { Decision::Commit };
                Ok::<_, HandlerError>(Outputs { records, decision })
            }
        })
    };
    let (copied_a, copied_b, copied_c): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>) = Default::default();
    let a_id = unique_topic("handler-eos-a");
    let a_runtime = make(a_id.clone(), copied_a.clone()).await.unwrap();
    let a_member = a_runtime.clone();
    let a = spawn(a_runtime);
    wait_until("the first member under way", BOUND, || copied_a.load(Ordering::Relaxed) >= 100).await;
    let b_runtime = make(unique_topic("handler-eos-b"), copied_b.clone()).await.unwrap();
    let mut b_transactions = b_runtime.transactions().expect("the exactly-once mode");
    let b = spawn(b_runtime);
    let before = copied_a.load(Ordering::Relaxed);
    wait_until("both members copying", BOUND, || {
        copied_b.load(Ordering::Relaxed) >= 50 && copied_a.load(Ordering::Relaxed) >= before + 50
    })
    .await;
    a.1.abort();
    let _ = a.1.await;
    drop(a_member);
    let c = spawn(make(a_id, copied_c.clone()).await.unwrap());
    // Every input record committed: the group's offsets reach the end of the input.
    let done = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let offsets = committed(&group, &input).await;
            if (0..PARTITIONS).all(|p| offsets.get(&p) == Some(&(N as i64))) {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(500), b_transactions.changed()).await;
        }
    })
    .await;
    assert!(done.is_ok(), "the input was not committed to its end: {:?}", committed(&group, &input).await);
    let b_stats = *b_transactions.borrow();
    stop(b).await;
    stop(c).await;
    assert!(copied_c.load(Ordering::Relaxed) > 0 || b_stats.committed > 0, "no member after the kill copied");

    let out = committed_values(&output).await;
    for p in 0..PARTITIONS {
        let expected: Vec<String> = (0..N).map(|i| format!("{p}-{i}")).collect();
        assert_eq!(out.get(&p).cloned().unwrap_or_default(), expected, "partition {p}: not the input exactly once");
    }
    assert!(b_stats.aborted > 0, "no transaction of the second member was aborted on purpose: {b_stats:?}");
}

/// A second instance with the same `transactional.id` fences the first: the first one's next
/// transaction fails and its runtime stops with `Error::Fenced`, its output never visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_mode_stops_with_fenced_when_a_newer_instance_takes_its_transactional_id() {
    let input = topic_with(1, 10, |_, i| format!("k{i}")).await;
    let output = unique_topic("handler-fenced-out");
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    create_topic(&client, &output, 1, 1, &[]).await;
    let group = unique_topic("handler-fenced");
    let transactional_id = unique_topic("handler-fenced-txn");
    let make = || {
        let config = RuntimeConfig::new(consumer_config(&group), [input.as_str()]);
        let producer = ProducerConfig::new(&bootstrap()).transactional_id(&transactional_id);
        let output = output.clone();
        Runtime::exactly_once(config, ExactlyOnceConfig::new(producer), move |batch: Vec<ConsumerRecord>| {
            let records = batch
                .iter()
                .map(|r| ProducerRecord::new(output.as_str(), r.value.clone().unwrap_or_default()))
                .collect();
            async move { Ok::<_, HandlerError>(Outputs::commit(records)) }
        })
    };
    let first = make().await.unwrap();
    let mut transactions = first.transactions().expect("the exactly-once mode");
    let (_stop, mut task) = spawn(first);
    let copied = tokio::time::timeout(BOUND, transactions.wait_for(|s| s.records_in >= 10)).await;
    assert!(copied.is_ok_and(|r| r.is_ok()), "the first instance did not copy the input: {:?}", *transactions.borrow());

    // The newer instance registers the transactional.id (it is not run); the first one's next
    // transaction is refused.
    let _second = make().await.unwrap();
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    producer.send(ProducerRecord::new(input.as_str(), "after the fence").partition(0)).await.unwrap().await.unwrap();
    producer.close().await.unwrap();
    let ended = tokio::time::timeout(BOUND, &mut task).await.expect("the fenced runtime did not stop").unwrap();
    assert!(matches!(ended, Err(kafka_wire::Error::Fenced { .. })), "the fenced runtime ended with {ended:?}");
    let out = committed_values(&output).await;
    assert_eq!(out[&0].len(), 10, "the fenced transaction's output is not visible: {:?}", out[&0]);
    assert!(!out[&0].iter().any(|v| v == "after the fence"));
}

/// The runtime reports its lifecycle as typed events: the assignments, a failed record and its
/// attempts, the commits, the revocation when a second member joins, and the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_reports_its_lifecycle_as_typed_events() {
    use handler::Lifecycle;
    const N: u32 = 20;
    let topic = topic_with(2, N, |p, i| format!("k{p}-{i}")).await;
    let group = unique_topic("handler-lifecycle");
    let seen = Seen::default();
    let failed_once = Arc::new(AtomicBool::new(false));
    let make = |seen: Seen, failed_once: Arc<AtomicBool>| {
        move |r: ConsumerRecord| {
            let (seen, failed_once) = (seen.clone(), failed_once.clone());
            async move {
                if r.partition == 1 && r.offset == 3 && !failed_once.swap(true, Ordering::SeqCst) {
                    return Err::<(), HandlerError>("the first attempt fails".into());
                }
                seen.push(&r);
                Ok(())
            }
        }
    };
    let config = RuntimeConfig::new(consumer_config(&group), [topic.as_str()])
        .commit_interval(Duration::from_millis(100))
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(10));
    let a = Runtime::new(config.clone(), make(seen.clone(), failed_once.clone())).await.unwrap();
    let mut events = a.events();
    let a_running = spawn(a);
    wait_until("every record handled", BOUND, || seen.len() >= 2 * N as usize).await;
    let b = Runtime::new(config, make(Seen::default(), failed_once.clone())).await.unwrap();
    let mut b_events = b.events();
    let b_running = spawn(b);
    let deadline = tokio::time::Instant::now() + BOUND;
    while !matches!(
        tokio::time::timeout_at(deadline, b_events.recv()).await.expect("B was assigned a partition"),
        Ok(Lifecycle::Assigned { .. })
    ) {}
    stop(a_running).await;
    stop(b_running).await;

    let mut got = Vec::new();
    while let Ok(event) = events.try_recv() {
        got.push(event);
    }
    let tp = |p| TopicPartition::new(topic.as_str(), p);
    for p in 0..2 {
        assert!(got.contains(&Lifecycle::Assigned { partition: tp(p) }), "partition {p} assigned: {got:?}");
    }
    let failures: Vec<&Lifecycle> = got.iter().filter(|e| matches!(e, Lifecycle::RecordFailed { .. })).collect();
    assert!(
        matches!(failures.as_slice(), [Lifecycle::RecordFailed { partition, offset: 3, attempts: 1, error }]
            if *partition == tp(1) && error.contains("first attempt fails")),
        "{failures:?}"
    );
    let committed_to_the_end =
        |p| got.iter().any(|e| matches!(e, Lifecycle::Committed { offsets } if offsets.contains(&(tp(p), N as i64))));
    assert!(committed_to_the_end(0) && committed_to_the_end(1), "commits up to {N}: {got:?}");
    assert!(got.iter().any(|e| matches!(e, Lifecycle::Revoked { .. })), "B's join revoked partitions of A: {got:?}");
    assert_eq!(got.last(), Some(&Lifecycle::Stopped { error: None }), "{got:?}");
}
