//! Retries against the running broker: non-blocking tiers wait their delay, exhausted records
//! reach the dead-letter queue with their history, non-retriable errors skip the tiers,
//! blocking retries come first, and retry topics that do not fit are refused at start.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kafka_wire::client::{Admin, ClientConfig, NewTopic, OffsetReset};
use kafka_wire::{
    Client, Consumer, ConsumerConfig, ConsumerRecord, ErrorKind, Producer, ProducerConfig, ProducerRecord,
};
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, unique_topic, wait_until};
use retry::{Failed, RetryConfig, RetryHeaders, RetryPolicy, RetryingConsumer};
use tokio::sync::oneshot;

const BOUND: Duration = Duration::from_secs(60);

async fn source_topic(partitions: i32) -> String {
    let topic = unique_topic("retry-source");
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    create_topic(&client, &topic, partitions, 1, &[]).await;
    topic
}

async fn produce(topic: &str, records: &[(&str, &str)]) {
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    for (key, value) in records {
        producer.send(ProducerRecord::new(topic, value.to_string()).key(key.to_string())).await.unwrap().await.unwrap();
    }
    producer.close().await.unwrap();
}

fn consumer_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new(&bootstrap()).group_id(group).auto_offset_reset(OffsetReset::Earliest)
}

/// Every record of `topic`, read from the start until `n` arrived.
async fn read_all(topic: &str, n: usize) -> Vec<ConsumerRecord> {
    let consumer = Consumer::new(consumer_config(&unique_topic("reader"))).await.unwrap();
    consumer.subscribe([topic]).unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    while out.len() < n {
        assert!(tokio::time::Instant::now() < deadline, "{topic}: {} records of {n}", out.len());
        out.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    out
}

/// Calls of the handler: (key, topic it was read from, when).
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<(String, String, SystemTime)>>>);

impl Calls {
    fn record(&self, r: &ConsumerRecord) {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        self.0.lock().unwrap().push((key, r.topic.to_string(), SystemTime::now()));
    }

    fn of(&self, key: &str) -> Vec<(String, SystemTime)> {
        self.0.lock().unwrap().iter().filter(|(k, ..)| k == key).map(|(_, t, at)| (t.clone(), *at)).collect()
    }
}

fn spawn(consumer: RetryingConsumer) -> (oneshot::Sender<()>, tokio::task::JoinHandle<kafka_wire::Result<()>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(consumer.run_until(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

async fn stop(handle: (oneshot::Sender<()>, tokio::task::JoinHandle<kafka_wire::Result<()>>)) {
    let _ = handle.0.send(());
    tokio::time::timeout(BOUND, handle.1).await.expect("the consumer did not stop").unwrap().unwrap();
}

fn header_map(r: &ConsumerRecord) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in &r.headers {
        m.entry(h.key.to_string())
            .or_default()
            .push(String::from_utf8_lossy(h.value.as_deref().unwrap_or_default()).into());
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tier_waits_its_delay_and_an_exhausted_record_reaches_the_dead_letter_queue_with_its_history() {
    let topic = source_topic(2).await;
    let group = unique_topic("retry-tiers");
    let calls = Calls::default();
    let c = calls.clone();
    let tiers = [Duration::from_secs(1), Duration::from_secs(2)];
    let config = RetryConfig::new(consumer_config(&group), &topic, RetryPolicy::non_blocking(tiers));
    let consumer = RetryingConsumer::new(config, move |r: ConsumerRecord| {
        let c = c.clone();
        async move {
            c.record(&r);
            if r.key.as_deref() == Some(&b"bad"[..]) {
                return Err(Failed::from("the payment provider is down"));
            }
            Ok(())
        }
    })
    .await
    .unwrap();
    let names = consumer.topics().clone();
    assert_eq!(names.tiers, [format!("{topic}-{group}-retry-0"), format!("{topic}-{group}-retry-1")]);
    let running = spawn(consumer);
    produce(&topic, &[("good-1", "a"), ("bad", "b"), ("good-2", "c")]).await;

    wait_until("three attempts of the failing record", BOUND, || calls.of("bad").len() >= 3).await;
    let dead = read_all(&names.dead_letter, 1).await;
    stop(running).await;

    let attempts = calls.of("bad");
    assert_eq!(attempts.len(), 3, "one attempt per step: source, tier 0, tier 1");
    assert_eq!(
        attempts.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        [topic.as_str(), names.tiers[0].as_str(), names.tiers[1].as_str()]
    );
    for (i, delay) in tiers.iter().enumerate() {
        let waited = attempts[i + 1].1.duration_since(attempts[i].1).unwrap();
        assert!(waited >= *delay, "tier {i} ran after {waited:?}, before its delay of {delay:?}");
        assert!(waited <= *delay + Duration::from_secs(1), "tier {i} ran after {waited:?}, over a second late");
    }
    assert_eq!(calls.of("good-1").len() + calls.of("good-2").len(), 2, "the good records once each");

    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.key.as_deref(), Some(&b"bad"[..]));
    assert_eq!(d.value.as_deref(), Some(&b"b"[..]));
    let h = RetryHeaders::of(d).expect("retry headers on the dead letter");
    assert_eq!(h.original_topic, topic);
    assert_eq!(h.group, group);
    assert_eq!(h.attempts, 3);
    assert_eq!(h.errors.len(), 3, "the whole error history: {:?}", h.errors);
    assert!(h.errors.iter().all(|e| e.contains("the payment provider is down")));
    assert_eq!((h.tier, h.due), (None, None));
    let headers = header_map(d);
    assert_eq!(headers["retry.original.offset"], [h.original_offset.to_string()]);
    assert!(h.original_offset >= 0 && h.original_partition >= 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_retriable_error_goes_straight_to_the_dead_letter_queue() {
    let topic = source_topic(1).await;
    let group = unique_topic("retry-fatal");
    let calls = Calls::default();
    let c = calls.clone();
    let policy = RetryPolicy::blocking([Duration::from_millis(10)]).then_non_blocking([Duration::from_secs(1)]);
    let consumer = RetryingConsumer::new(RetryConfig::new(consumer_config(&group), &topic, policy), move |r| {
        let c = c.clone();
        async move {
            c.record(&r);
            Err(Failed::non_retriable("not a renewal"))
        }
    })
    .await
    .unwrap();
    let dlq = consumer.topics().dead_letter.clone();
    let running = spawn(consumer);
    produce(&topic, &[("malformed", "?")]).await;
    let dead = read_all(&dlq, 1).await;
    stop(running).await;
    assert_eq!(calls.of("malformed").len(), 1, "a non-retriable failure was retried");
    let h = RetryHeaders::of(&dead[0]).unwrap();
    assert_eq!((h.attempts, h.errors.len()), (1, 1));
    assert!(h.errors[0].contains("not a renewal"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_retries_come_first_then_the_tiers_and_a_late_success_ends_it() {
    let topic = source_topic(1).await;
    let group = unique_topic("retry-blocking");
    let calls = Calls::default();
    let c = calls.clone();
    const IN_PLACE: Duration = Duration::from_millis(300);
    let policy = RetryPolicy::blocking([IN_PLACE, IN_PLACE]).then_non_blocking([Duration::from_millis(500)]);
    let consumer = RetryingConsumer::new(RetryConfig::new(consumer_config(&group), &topic, policy), move |r| {
        let c = c.clone();
        async move {
            c.record(&r);
            // Succeeds on the fourth attempt: the first in the tier.
            if c.of("flaky").len() < 4 {
                return Err(Failed::from("flaky"));
            }
            Ok(())
        }
    })
    .await
    .unwrap();
    let names = consumer.topics().clone();
    let running = spawn(consumer);
    produce(&topic, &[("flaky", "x")]).await;
    wait_until("the attempt in the tier", BOUND, || calls.of("flaky").len() >= 4).await;
    stop(running).await;
    let attempts = calls.of("flaky");
    let topics: Vec<String> = attempts.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(topics, [topic.clone(), topic.clone(), topic.clone(), names.tiers[0].clone()]);
    // Each retry in place waits its whole interval: publishing the blocked status (a change of
    // the control state) does not cut the wait short.
    for pair in attempts[..3].windows(2) {
        let gap = pair[1].1.duration_since(pair[0].1).unwrap_or_default();
        assert!(gap >= IN_PLACE, "a retry in place came {gap:?} after the attempt before it, not {IN_PLACE:?}");
    }
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    let dlq =
        admin.list_offsets(&[(names.dead_letter.as_str(), 0)], kafka_wire::client::OffsetSpec::Latest).await.unwrap();
    assert_eq!(dlq[0].offset, 0, "a record that succeeded in a tier reached the dead-letter queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_topics_are_created_like_the_source_and_an_existing_one_that_does_not_fit_is_refused() {
    let topic = source_topic(3).await;
    let group = unique_topic("retry-provision");
    let policy = RetryPolicy::non_blocking([Duration::from_secs(5)]);
    let consumer =
        RetryingConsumer::new(RetryConfig::new(consumer_config(&group), &topic, policy.clone()), |_| async { Ok(()) })
            .await
            .unwrap();
    let names = consumer.topics().clone();
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    for t in admin.describe_topics(&[names.tiers[0].as_str(), names.dead_letter.as_str()]).await.unwrap() {
        assert_eq!(t.partitions.len(), 3, "{} does not have the source's partition count", t.name);
    }

    // Another group whose tier exists with one partition.
    let other = unique_topic("retry-provision-other");
    let tier = format!("{topic}-{other}-retry-0");
    admin.create_topics(&[NewTopic::new(tier.as_str(), 1, 1)], false).await.unwrap();
    let refused =
        RetryingConsumer::new(RetryConfig::new(consumer_config(&other), &topic, policy), |_| async { Ok(()) })
            .await
            .err()
            .expect("a one-partition tier for a three-partition topic was accepted");
    assert_eq!(refused.kind(), ErrorKind::Config);
    assert!(refused.to_string().contains(&tier), "the error does not name the topic: {refused}");
}
