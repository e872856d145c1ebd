//! The operator's commands against the running broker: a skip while an instance is blocked, a
//! skip that outlives the instance and is honoured by the one that takes over, unblock and
//! block, and redrive from the dead-letter queue (with a dry run that changes nothing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_wire::client::{Admin, ClientConfig, OffsetReset, OffsetSpec};
use kafka_wire::{Client, Consumer, ConsumerConfig, ConsumerRecord, Producer, ProducerConfig, ProducerRecord};
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, unique_topic, wait_until};
use retry::{
    Command, Failed, RedriveFilter, RedriveTarget, RetryConfig, RetryControl, RetryHeaders, RetryPolicy,
    RetryingConsumer, TopicNames,
};
use tokio::sync::oneshot;

const BOUND: Duration = Duration::from_secs(60);

async fn source_topic() -> String {
    let topic = unique_topic("retry-control");
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    create_topic(&client, &topic, 1, 1, &[]).await;
    topic
}

async fn produce(topic: &str, keys: &[&str]) {
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    for key in keys {
        producer
            .send(ProducerRecord::new(topic, format!("value of {key}")).key(key.to_string()))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await.unwrap();
}

fn consumer_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new(&bootstrap())
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
}

/// Keys the handler handled successfully, in order.
#[derive(Clone, Default)]
struct Handled(Arc<Mutex<Vec<String>>>);

impl Handled {
    fn push(&self, r: &ConsumerRecord) {
        self.0.lock().unwrap().push(String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned());
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A consumer whose handler fails on keys starting with `stuck` (and on every key while `down`).
async fn consumer(
    group: &str,
    topic: &str,
    policy: RetryPolicy,
    handled: Handled,
    down: Arc<AtomicBool>,
) -> RetryingConsumer {
    let config = RetryConfig::new(consumer_config(group), topic, policy);
    RetryingConsumer::new(config, move |r: ConsumerRecord| {
        let (handled, down) = (handled.clone(), down.clone());
        async move {
            if down.load(Ordering::Relaxed) || r.key.as_deref().is_some_and(|k| k.starts_with(b"stuck")) {
                return Err(Failed::from("the provider is down"));
            }
            handled.push(&r);
            Ok(())
        }
    })
    .await
    .unwrap()
}

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

/// Waits until the control topic shows the record at `offset` blocked.
async fn wait_blocked(control: &RetryControl, offset: i64) {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let state = control.control_state().await.unwrap();
        if state.blocked.contains_key(&(0, offset)) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "offset {offset} never reported blocked: {state:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn dead_letters(dlq: &str, n: usize) -> Vec<ConsumerRecord> {
    let consumer =
        Consumer::new(ConsumerConfig::new(&bootstrap()).auto_offset_reset(OffsetReset::Earliest)).await.unwrap();
    consumer.assign([kafka_wire::TopicPartition::new(dlq, 0)]);
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    while out.len() < n {
        assert!(tokio::time::Instant::now() < deadline, "{dlq}: {} dead letters of {n}", out.len());
        out.extend(consumer.poll(Duration::from_millis(300)).await.unwrap());
    }
    out
}

async fn end_offset(topic: &str) -> i64 {
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    admin.list_offsets(&[(topic, 0)], OffsetSpec::Latest).await.unwrap()[0].offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skip_takes_effect_while_blocked_and_outlives_a_crash_for_the_instance_that_takes_over() {
    let topic = source_topic().await;
    let group = unique_topic("retry-skip");
    let names = TopicNames::new(&topic, &group, 0);
    let endless = RetryPolicy::exponential(Duration::from_millis(20), 2.0, Duration::from_millis(200), None);
    let handled = Handled::default();
    let down = Arc::new(AtomicBool::new(false));
    let a = consumer(&group, &topic, endless.clone(), handled.clone(), down.clone()).await;
    let a_runtime = a.runtime().clone();
    let a_running = spawn(a);
    produce(&topic, &["ok-0", "stuck-1", "ok-2", "stuck-3", "ok-4"]).await;
    let control = RetryControl::connect(&bootstrap(), &topic, &group).await.unwrap();

    // A is blocked on offset 1; a skip sends it to the DLQ and A moves on, to block on 3.
    wait_blocked(&control, 1).await;
    assert_eq!(handled.all(), ["ok-0"], "the partition went past its blocked record");
    control.issue(Command::Skip { partition: 0, offset: 1 }, "alice").await.unwrap();
    wait_blocked(&control, 3).await;
    assert_eq!(handled.all(), ["ok-0", "ok-2"]);
    let dead = dead_letters(&names.dead_letter, 1).await;
    let h = RetryHeaders::of(&dead[0]).unwrap();
    assert_eq!(h.original_offset, 1);
    assert!(h.errors.last().unwrap().contains("skipped by alice"), "{:?}", h.errors);
    assert!(!control.control_state().await.unwrap().blocked.contains_key(&(0, 1)), "offset 1 still reported blocked");

    // A crashes (no shutdown) once offset 3 is committed; the skip of 3 is issued while no
    // instance runs, and B, which takes the partition over, honours it.
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    let committed =
        || async { admin.list_group_offsets(&group, Some(&[topic.as_str()])).await.unwrap().first().map(|o| o.offset) };
    let deadline = tokio::time::Instant::now() + BOUND;
    while committed().await != Some(3) {
        assert!(tokio::time::Instant::now() < deadline, "offset 3 never committed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a_running.1.abort();
    let _ = a_running.1.await;
    drop(a_runtime);
    control.issue(Command::Skip { partition: 0, offset: 3 }, "bob").await.unwrap();
    let b = consumer(&group, &topic, endless, handled.clone(), down).await;
    let b_running = spawn(b);
    wait_until("B handled the record after the skipped one", BOUND, || handled.all().contains(&"ok-4".to_string()))
        .await;
    stop(b_running).await;
    let dead = dead_letters(&names.dead_letter, 2).await;
    let h = RetryHeaders::of(&dead[1]).unwrap();
    assert_eq!(h.original_offset, 3);
    assert!(h.errors.last().unwrap().contains("skipped by bob"));
    assert_eq!(handled.all(), ["ok-0", "ok-2", "ok-4"]);
}

/// An instance that crashes while a record is blocked leaves its blocked status on the control
/// topic; the instance that takes the partition over and handles the record at its first
/// attempt withdraws it, so the status (and the dashboard) does not show it blocked for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_status_left_by_a_crashed_instance_is_withdrawn_by_the_one_that_handles_the_record() {
    let topic = source_topic().await;
    let group = unique_topic("retry-left-over");
    let endless = RetryPolicy::exponential(Duration::from_millis(20), 2.0, Duration::from_millis(200), None);
    let handled = Handled::default();
    let a = consumer(&group, &topic, endless.clone(), handled.clone(), Arc::new(AtomicBool::new(false))).await;
    let a_running = spawn(a);
    produce(&topic, &["ok-0", "stuck-1", "ok-2"]).await;
    let control = RetryControl::connect(&bootstrap(), &topic, &group).await.unwrap();
    wait_blocked(&control, 1).await;

    // A crashes once offset 1 is committed, its status still published.
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    let deadline = tokio::time::Instant::now() + BOUND;
    while admin.list_group_offsets(&group, Some(&[topic.as_str()])).await.unwrap().first().map(|o| o.offset) != Some(1)
    {
        assert!(tokio::time::Instant::now() < deadline, "offset 1 never committed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a_running.1.abort();
    let _ = a_running.1.await;

    // B's handler succeeds on every record, the stuck one included, at the first attempt.
    let b_handled = handled.clone();
    let b =
        RetryingConsumer::new(RetryConfig::new(consumer_config(&group), &topic, endless), move |r: ConsumerRecord| {
            let handled = b_handled.clone();
            async move {
                handled.push(&r);
                Ok::<(), Failed>(())
            }
        })
        .await
        .unwrap();
    let b_running = spawn(b);
    wait_until("B handled the records from offset 1 on", BOUND, || handled.all().contains(&"ok-2".to_string())).await;
    let deadline = tokio::time::Instant::now() + BOUND;
    while control.control_state().await.unwrap().blocked.contains_key(&(0, 1)) {
        assert!(tokio::time::Instant::now() < deadline, "offset 1 is still reported blocked after B handled it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(b_running).await;
    assert_eq!(handled.all(), ["ok-0", "stuck-1", "ok-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unblock_sends_failures_on_to_the_tiers_and_block_restores_blocking() {
    let topic = source_topic().await;
    let group = unique_topic("retry-unblock");
    let policy = RetryPolicy::exponential(Duration::from_millis(20), 2.0, Duration::from_millis(200), None)
        .then_non_blocking([Duration::from_millis(200)]);
    let handled = Handled::default();
    let c = consumer(&group, &topic, policy, handled.clone(), Arc::new(AtomicBool::new(false))).await;
    let names = c.topics().clone();
    let running = spawn(c);
    let control = RetryControl::connect(&bootstrap(), &topic, &group).await.unwrap();
    produce(&topic, &["stuck-0", "ok-1"]).await;
    wait_blocked(&control, 0).await;

    // Unblocked: the blocked record moves to the tier (then, failing there too, to the DLQ),
    // and the next failure does not block.
    control.issue(Command::Unblock { partition: None }, "ops").await.unwrap();
    wait_until("the partition moved on", BOUND, || handled.all() == ["ok-1"]).await;
    produce(&topic, &["stuck-2", "ok-3"]).await;
    wait_until("a failure while unblocked does not block", BOUND, || handled.all() == ["ok-1", "ok-3"]).await;
    dead_letters(&names.dead_letter, 2).await;

    // Blocked again: the next failure blocks its partition.
    control.issue(Command::Block { partition: Some(0) }, "ops").await.unwrap();
    produce(&topic, &["stuck-4", "ok-5"]).await;
    wait_blocked(&control, 4).await;
    let status = control.status(&names.tiers, &names.dead_letter).await.unwrap();
    assert_eq!(status.dead_letters, 2);
    assert!(status.control.blocked.contains_key(&(0, 4)));
    assert_eq!(handled.all(), ["ok-1", "ok-3"], "the partition went past a record blocked again");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_brings_dead_letters_back_once_and_the_dry_run_changes_nothing() {
    let topic = source_topic().await;
    let group = unique_topic("retry-redrive");
    let handled = Handled::default();
    let down = Arc::new(AtomicBool::new(true));
    let c = consumer(&group, &topic, RetryPolicy::dead_letter_only(), handled.clone(), down.clone()).await;
    let names = c.topics().clone();
    let running = spawn(c);
    produce(&topic, &["a", "b", "c"]).await;
    dead_letters(&names.dead_letter, 3).await;
    assert!(handled.all().is_empty());

    let control = RetryControl::connect(&bootstrap(), &topic, &group).await.unwrap();
    let only_b = RedriveFilter { key: Some("b".into()), ..Default::default() };
    let (source_end, dlq_end) = (end_offset(&topic).await, end_offset(&names.dead_letter).await);
    let planned = control.redrive(&names.dead_letter, &only_b, &RedriveTarget::Original, true, "ops").await.unwrap();
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].key.as_deref(), Some(&b"b"[..]));
    assert_eq!(planned[0].to, topic);
    assert_eq!(
        (end_offset(&topic).await, end_offset(&names.dead_letter).await),
        (source_end, dlq_end),
        "a dry run wrote"
    );
    assert!(control.control_state().await.unwrap().redriven.is_empty(), "a dry run marked records redriven");

    // The provider is back: every dead letter is redriven, handled, and not redriven twice.
    down.store(false, Ordering::Relaxed);
    let redriven = control
        .redrive(&names.dead_letter, &RedriveFilter::default(), &RedriveTarget::Original, false, "ops")
        .await
        .unwrap();
    assert_eq!(redriven.len(), 3);
    wait_until("the redriven records handled", BOUND, || handled.all().len() >= 3).await;
    let mut keys = handled.all();
    keys.sort();
    assert_eq!(keys, ["a", "b", "c"]);
    let again = control
        .redrive(&names.dead_letter, &RedriveFilter::default(), &RedriveTarget::Original, false, "ops")
        .await
        .unwrap();
    assert!(again.is_empty(), "dead letters redriven twice: {again:?}");
    stop(running).await;
}
