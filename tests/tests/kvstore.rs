//! The KvStore (pattern 3) against a real broker: replay equals a model, compaction keeps the
//! state, ready waits for the end offsets captured at start, watchers see other processes'
//! writes, a non-compacted topic is refused, bad records are reported, slow watchers lag.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_wire::client::{Admin, ClientConfig, NewTopic, OffsetReset, OffsetSpec};
use kafka_wire::{Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition};
use kafka_wire_tests::{bootstrap, unique_topic};
use kvstore::{Change, Error, KvConfig, KvStore, WatchError};
use proptest::prelude::*;

const WAIT: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, bound: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(bound, f).await.unwrap_or_else(|_| panic!("{what}: not within {bound:?}"))
}

async fn open<V>(topic: &str) -> KvStore<String, V>
where
    V: Clone + Send + Sync + 'static,
    kvstore::Json: kvstore::Codec<String> + kvstore::Codec<V>,
{
    within("store open", WAIT, KvStore::<String, V>::open(KvConfig::new(bootstrap(), topic))).await.unwrap()
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u32),
    Delete(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => (0u8..8, any::<u32>()).prop_map(|(k, v)| Op::Put(k, v)), 1 => (0u8..8).prop_map(Op::Delete)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random puts and deletes through one store; then a fresh store replays the topic. Both
    /// equal a `BTreeMap` model: last write wins per key, a tombstone deletes.
    #[test]
    fn a_fresh_store_replaying_random_puts_and_deletes_equals_a_btreemap_model(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let topic = unique_topic("kv-prop");
            let config = KvConfig::new(bootstrap(), &topic).partitions(3);
            let writer: KvStore<String, u32> = within("writer open", WAIT, KvStore::open(config.clone())).await.unwrap();
            let mut model = BTreeMap::new();
            for op in &ops {
                match *op {
                    Op::Put(k, v) => {
                        writer.put(&format!("k{k}"), &v).await.unwrap();
                        model.insert(format!("k{k}"), v);
                    }
                    Op::Delete(k) => {
                        writer.delete(&format!("k{k}")).await.unwrap();
                        model.remove(&format!("k{k}"));
                    }
                }
            }
            // Read-your-writes: the writer already holds every write.
            assert_eq!(writer.iter().unwrap(), model.clone().into_iter().collect::<Vec<_>>(), "writer after {ops:?}");
            let fresh: KvStore<String, u32> = within("fresh open", WAIT, KvStore::open(config)).await.unwrap();
            assert_eq!(fresh.iter().unwrap(), model.into_iter().collect::<Vec<_>>(), "fresh store after {ops:?}");
        });
    }
}

/// Records and end offset of partition 0 of `topic`, read from the beginning.
async fn records_and_end(topic: &str) -> (usize, i64) {
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    let end = admin.list_offsets(&[(topic, 0)], OffsetSpec::Latest).await.unwrap()[0].offset;
    admin.close().await;
    let consumer =
        Consumer::new(ConsumerConfig::new(&bootstrap()).auto_offset_reset(OffsetReset::Earliest)).await.unwrap();
    let tp = TopicPartition::new(topic, 0);
    consumer.assign([tp.clone()]);
    consumer.seek_to_beginning(std::slice::from_ref(&tp)).unwrap();
    let mut count = 0;
    within("read the topic to its end", WAIT, async {
        while consumer.position(&tp).await.unwrap() < end {
            count += consumer.poll(Duration::from_millis(200)).await.unwrap().len();
        }
    })
    .await;
    consumer.close().await.unwrap();
    (count, end)
}

/// The broker's cleaner really compacts the topic (fewer records than offsets), and a store
/// started after that holds the same state as the one that wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_started_after_compaction_has_the_same_state() {
    let topic = unique_topic("kv-compact");
    let config = KvConfig::new(bootstrap(), &topic)
        .topic_config("segment.ms", "100")
        .topic_config("min.cleanable.dirty.ratio", "0.01")
        .topic_config("delete.retention.ms", "100")
        .topic_config("min.compaction.lag.ms", "0");
    let writer: KvStore<String, u32> = within("writer open", WAIT, KvStore::open(config.clone())).await.unwrap();
    let mut model = BTreeMap::new();
    for round in 0..20u32 {
        for k in 0..10 {
            writer.put(&format!("k{k}"), &(round * 100 + k)).await.unwrap();
            model.insert(format!("k{k}"), round * 100 + k);
        }
    }
    for k in [2, 5, 7] {
        writer.delete(&format!("k{k}")).await.unwrap();
        model.remove(&format!("k{k}"));
    }
    // Only a closed segment is cleaned, and a segment closes when a record comes after
    // `segment.ms`: keep writing one key until the cleaner has removed records.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut rolls = 0u32;
    loop {
        writer.put(&"roll".to_owned(), &rolls).await.unwrap();
        model.insert("roll".to_owned(), rolls);
        rolls += 1;
        let (records, end) = records_and_end(&topic).await;
        if (records as i64) < end / 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the topic was not compacted: {records} records of {end} offsets"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let expected: Vec<_> = model.into_iter().collect();
    assert_eq!(writer.iter().unwrap(), expected);
    let fresh: KvStore<String, u32> = within("fresh open", WAIT, KvStore::open(config)).await.unwrap();
    assert_eq!(fresh.iter().unwrap(), expected, "a store loaded from the compacted topic");
}

/// `ready()` resolves only once every partition is applied up to the end offsets captured at
/// start: at that moment the store already holds every key of a large topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_not_reported_before_the_end_offsets_captured_at_start() {
    const KEYS: usize = 30_000;
    let topic = unique_topic("kv-ready");
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    admin.create_topics(&[NewTopic::new(&topic, 3, 1).config("cleanup.policy", "compact")], false).await.unwrap();
    admin.close().await;
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    let mut deliveries = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let record = ProducerRecord::new(&topic, i.to_string()).key(format!("\"key-{i:06}\""));
        deliveries.push(producer.send(record).await.unwrap());
    }
    for d in deliveries {
        d.await.unwrap();
    }
    producer.close().await.unwrap();

    let store: KvStore<String, u64> =
        within("store start", WAIT, KvStore::start(KvConfig::new(bootstrap(), &topic))).await.unwrap();
    within("ready", WAIT, store.ready()).await.unwrap();
    assert_eq!(store.len().unwrap(), KEYS, "ready resolved before the store held the whole topic");
    assert_eq!(store.get("key-029999").unwrap(), Some(29_999));
}

/// Reads before `ready` fail with `NotReady` (the caller may wait with `ready()` instead). On a
/// current-thread runtime the store's loading task cannot run before the test next yields, so
/// right after `start` the store has read nothing of the 200 records.
#[tokio::test(flavor = "current_thread")]
async fn reads_before_ready_fail_with_not_ready() {
    let topic = unique_topic("kv-notready");
    let writer: KvStore<String, u32> = open(&topic).await;
    for k in 0..200 {
        writer.put(&format!("k{k}"), &k).await.unwrap();
    }
    let store: KvStore<String, u32> =
        within("store start", WAIT, KvStore::start(KvConfig::new(bootstrap(), &topic))).await.unwrap();
    assert!(!store.is_ready(), "ready before loading ran");
    assert!(matches!(store.get("k1"), Err(Error::NotReady { .. })), "{:?}", store.get("k1"));
    assert!(matches!(store.len(), Err(Error::NotReady { .. })));
    within("ready", WAIT, store.ready()).await.unwrap();
    assert_eq!(store.get("k1").unwrap(), Some(1));
    assert_eq!(store.len().unwrap(), 200);
}

/// Two stores on one topic (two processes): a write in one is seen by `watch` in the other,
/// with old and new values, and key and prefix watches see only their keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_one_store_is_seen_by_watch_in_another() {
    let topic = unique_topic("kv-watch");
    let a: KvStore<String, String> = open(&topic).await;
    let b: KvStore<String, String> = open(&topic).await;
    let mut all = b.watch();
    let mut one = b.watch_key("user/1".to_owned());
    let mut users = b.watch_prefix("user/");

    a.put(&"config".to_owned(), &"x".to_owned()).await.unwrap();
    a.put(&"user/1".to_owned(), &"ann".to_owned()).await.unwrap();
    a.put(&"user/1".to_owned(), &"bob".to_owned()).await.unwrap();
    a.delete(&"user/1".to_owned()).await.unwrap();
    a.put(&"user/2".to_owned(), &"cy".to_owned()).await.unwrap();

    let summary = |c: Change<String, String>| (c.key, c.old, c.new);
    let s = |v: &str| Some(v.to_owned());
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(summary(within("watch all", WAIT, all.recv()).await.unwrap()));
    }
    assert_eq!(
        seen,
        vec![
            ("config".into(), None, s("x")),
            ("user/1".into(), None, s("ann")),
            ("user/1".into(), s("ann"), s("bob")),
            ("user/1".into(), s("bob"), None),
            ("user/2".into(), None, s("cy")),
        ]
    );
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(summary(within("watch key", WAIT, one.recv()).await.unwrap()).2);
    }
    assert_eq!(seen, vec![s("ann"), s("bob"), None]);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(within("watch prefix", WAIT, users.recv()).await.unwrap().key);
    }
    assert_eq!(seen, ["user/1", "user/1", "user/1", "user/2"]);
    assert_eq!(b.get("user/2").unwrap(), s("cy"));
    assert_eq!(b.prefix("user/").unwrap(), vec![("user/2".to_owned(), "cy".to_owned())]);
}

/// An existing topic that is not compacted is refused with a typed error naming its policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_topic_without_compaction_is_refused() {
    let topic = unique_topic("kv-delete-policy");
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    admin.create_topics(&[NewTopic::new(&topic, 1, 1).config("cleanup.policy", "delete")], false).await.unwrap();
    admin.close().await;
    let opened = within("open", WAIT, KvStore::<String, String>::open(KvConfig::new(bootstrap(), &topic))).await;
    match opened {
        Err(Error::NotCompacted { topic: t, cleanup_policy }) => {
            assert_eq!((t, cleanup_policy.as_str()), (topic, "delete"));
        }
        Err(e) => panic!("expected NotCompacted, got {e}"),
        Ok(_) => panic!("a non-compacted topic was accepted"),
    }
}

/// A record whose value does not decode is counted and reported, and its key has no value;
/// the records around it are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_decode_is_reported() {
    let topic = unique_topic("kv-bad");
    let store: KvStore<String, u32> = open(&topic).await;
    let mut failures = store.failures();
    store.put(&"n".to_owned(), &1).await.unwrap();
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    producer.send(ProducerRecord::new(&topic, "not json").key("\"n\"")).await.unwrap().await.unwrap();
    producer.close().await.unwrap();
    store.put(&"m".to_owned(), &2).await.unwrap();
    let failure = within("failure", WAIT, failures.recv()).await.unwrap();
    assert_eq!((failure.what, failure.partition), ("value", 0));
    assert!(failure.reason.contains("JSON"), "{}", failure.reason);
    assert_eq!(store.decode_failures(), 1);
    assert_eq!(store.iter().unwrap(), vec![("m".to_owned(), 2)]);
}

/// A watcher that does not keep up is told how many changes it missed, and memory stays
/// bounded by the watch capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_told_it_lagged() {
    let topic = unique_topic("kv-lag");
    let store: KvStore<String, u32> =
        within("open", WAIT, KvStore::open(KvConfig::new(bootstrap(), &topic).watch_capacity(4))).await.unwrap();
    let mut slow = store.watch();
    for i in 0..10 {
        store.put(&"k".to_owned(), &i).await.unwrap();
    }
    assert_eq!(within("recv", WAIT, slow.recv()).await, Err(WatchError::Lagged(6)));
    let next = within("recv", WAIT, slow.recv()).await.unwrap();
    assert_eq!((next.old, next.new), (Some(5), Some(6)));
}
