//! [`KvStore`]: a compacted topic held in memory.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use kafka_wire::client::{
    Acks, Admin, ConfigResource, IsolationLevel, NewTopic, OffsetReset, OffsetSpec, ResourceConfig,
};
use kafka_wire::{
    ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, ErrorCode, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use tokio::sync::{broadcast, watch};

use crate::codec::{Codec, Json};
use crate::error::{Error, Result};
use crate::watch::{Change, KeyFilter, Watch};

/// How long the follower waits for records in one poll before it looks whether it should stop.
const POLL: Duration = Duration::from_millis(200);

/// Settings of a [`KvStore`].
#[derive(Clone, Debug)]
pub struct KvConfig {
    bootstrap: String,
    topic: String,
    partitions: i32,
    replication_factor: i16,
    topic_configs: Vec<(String, String)>,
    consumer_properties: Vec<(String, String)>,
    producer_properties: Vec<(String, String)>,
    write_timeout: Duration,
    watch_capacity: usize,
    create_topic: bool,
}

impl KvConfig {
    /// A store of `topic` on the cluster at `bootstrap` (comma-separated `host:port`s). If the
    /// topic is missing it is created with 1 partition, the broker's default replication factor
    /// and `cleanup.policy=compact`.
    pub fn new(bootstrap: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            topic: topic.into(),
            partitions: 1,
            replication_factor: -1,
            topic_configs: Vec::new(),
            consumer_properties: Vec::new(),
            producer_properties: Vec::new(),
            write_timeout: Duration::from_secs(30),
            watch_capacity: 1024,
            create_topic: true,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Whether a missing topic is created (default `true`); if not, a missing topic is
    /// [`Error::NoTopic`].
    pub fn create_topic(mut self, create: bool) -> Self {
        self.create_topic = create;
        self
    }

    /// Partitions of the topic if the store creates it (default 1).
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Replication factor of the topic if the store creates it (default -1: the broker's
    /// `default.replication.factor`).
    pub fn replication_factor(mut self, replication_factor: i16) -> Self {
        self.replication_factor = replication_factor;
        self
    }

    /// A config of the topic if the store creates it (`segment.ms`, `min.cleanable.dirty.ratio`,
    /// …), besides `cleanup.policy=compact`.
    pub fn topic_config(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.topic_configs.push((name.into(), value.into()));
        self
    }

    /// A property of the store's consumer (Kafka's name, as [`ConsumerConfig::set`] takes it).
    pub fn consumer_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.consumer_properties.push((name.into(), value.into()));
        self
    }

    /// A property of the store's producer (Kafka's name, as [`ProducerConfig::set`] takes it).
    pub fn producer_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.producer_properties.push((name.into(), value.into()));
        self
    }

    /// How long [`KvStore::put`] and [`KvStore::delete`] wait in all for the write to be
    /// acknowledged and then seen by the store (default 30 s).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// How many changes the store keeps for watchers that have not received them yet (default
    /// 1024, rounded up to a power of two); a watcher further behind is told it lagged
    /// ([`crate::WatchError::Lagged`]).
    pub fn watch_capacity(mut self, capacity: usize) -> Self {
        self.watch_capacity = capacity;
        self
    }

    fn consumer_config(&self) -> Result<ConsumerConfig> {
        let mut config = ConsumerConfig::new(&self.bootstrap)
            .auto_offset_reset(OffsetReset::Earliest)
            .enable_auto_commit(false)
            // Transactional writers (the atomic store) must not show aborted values.
            .isolation_level(IsolationLevel::ReadCommitted)
            // Loading is faster in large polls; the records are applied under one lock each.
            .max_poll_records(10_000);
        for (k, v) in &self.consumer_properties {
            config.set(k, v)?;
        }
        Ok(config)
    }

    fn producer_config(&self) -> Result<ProducerConfig> {
        // A put waits for its own record: waiting for more to batch with only delays it.
        let mut config = ProducerConfig::new(&self.bootstrap).linger(Duration::ZERO);
        for (k, v) in &self.producer_properties {
            config.set(k, v)?;
        }
        if config.acks == Acks::None {
            // Read-your-writes waits for the record's offset, which acks=0 never learns.
            return Err(kafka_wire::Error::Config {
                property: "acks".into(),
                reason: "a store's writes need the offset the broker acknowledges: acks=0 is refused".into(),
            }
            .into());
        }
        Ok(config)
    }
}

/// Why a record of the topic was not applied: its key or value does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeFailure {
    /// The partition of the record.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// `"key"` or `"value"`.
    pub what: &'static str,
    /// The codec's message.
    pub reason: String,
}

/// Keys and values in key order, copied out of a store.
pub type Snapshot<K, V> = Vec<(K, V)>;

/// Where a write landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
}

/// A key type that ranges by prefix: `str` (for `String` keys) and `[u8]` (for `Vec<u8>` and
/// `Bytes` keys), whose order puts every key with a prefix right after the prefix.
pub trait Prefix: Ord {
    /// Whether `key` starts with `self`.
    fn is_prefix_of(&self, key: &Self) -> bool;
}

impl Prefix for str {
    fn is_prefix_of(&self, key: &str) -> bool {
        key.starts_with(self)
    }
}

impl Prefix for [u8] {
    fn is_prefix_of(&self, key: &[u8]) -> bool {
        key.starts_with(self)
    }
}

struct State<K, V> {
    map: BTreeMap<K, V>,
    /// Per partition, the next offset to apply (the consumer's position after the records
    /// applied); -1 before the first.
    applied: HashMap<i32, i64>,
    /// Partitions not yet applied up to the end offset captured at start.
    loading: BTreeMap<i32, i64>,
    stopped: Option<String>,
}

struct Shared<K, V> {
    topic: String,
    state: RwLock<State<K, V>>,
    /// Bumped after every batch applied (and when the store stops): waiters re-check `state`.
    progress: watch::Sender<u64>,
    changes: broadcast::Sender<Arc<Change<K, V>>>,
    failures: broadcast::Sender<DecodeFailure>,
    decode_failures: AtomicU64,
    /// `true` asks the follower to stop.
    close: watch::Sender<bool>,
}

impl<K, V> Shared<K, V> {
    fn read(&self) -> RwLockReadGuard<'_, State<K, V>> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State<K, V>> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn stopped_error(&self, reason: &str) -> Error {
        Error::Stopped { topic: self.topic.clone(), reason: reason.to_owned() }
    }

    /// The state if the store is ready, else why not.
    fn ready_state(&self) -> Result<RwLockReadGuard<'_, State<K, V>>> {
        let st = self.read();
        if let Some(reason) = &st.stopped {
            return Err(self.stopped_error(reason));
        }
        if !st.loading.is_empty() {
            return Err(Error::NotReady { topic: self.topic.clone() });
        }
        Ok(st)
    }

    fn stop(&self, reason: String) {
        let mut st = self.write();
        if st.stopped.is_none() {
            st.stopped = Some(reason);
        }
        drop(st);
        self.progress.send_modify(|n| *n += 1);
    }

    /// Waits until `done` holds of the state, or the store stops. Cancel-safe: it only waits.
    async fn wait_until(&self, mut done: impl FnMut(&State<K, V>) -> bool) -> Result<()> {
        let mut progress = self.progress.subscribe();
        loop {
            {
                let st = self.read();
                if done(&st) {
                    return Ok(());
                }
                if let Some(reason) = &st.stopped {
                    return Err(self.stopped_error(reason));
                }
            }
            if progress.changed().await.is_err() {
                return Err(self.stopped_error("closed"));
            }
        }
    }
}

/// An in-memory key-value store kept from a compacted topic (the article's pattern 3): reads
/// come from memory, writes go to the topic, and every process holding a store of the topic
/// sees every write.
///
/// [`KvStore::start`] checks (or creates) the topic, captures the end offset of every partition
/// and starts a task that reads all partitions from the beginning (assigned, no consumer group)
/// and keeps following them. The store is ready once every partition is applied up to the
/// offsets captured: reads before that fail with [`Error::NotReady`], or wait with
/// [`KvStore::ready`]; [`KvStore::open`] is `start` then `ready`.
///
/// Keys and values go through a [`Codec`], JSON by default; a record whose key or value does not
/// decode is reported ([`KvStore::decode_failures`], [`KvStore::failures`], a `tracing` warning)
/// and removes the key's value from memory (the topic's latest value is not the old one);
/// watchers see that as a change to no value.
/// Values are decoded into buffers of their own.
///
/// Dropping the store stops its follower task.
pub struct KvStore<K, V, C = Json> {
    shared: Arc<Shared<K, V>>,
    producer: Producer,
    codec: C,
    partitions: usize,
    write_timeout: Duration,
}

impl<K, V, C> Drop for KvStore<K, V, C> {
    fn drop(&mut self) {
        self.shared.close.send_replace(true);
    }
}

impl<K, V> KvStore<K, V, Json>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    Json: Codec<K> + Codec<V>,
{
    /// [`KvStore::start_with`] with JSON keys and values, then [`KvStore::ready`]: the store
    /// returned holds the whole topic. Not cancel-safe only in that a dropped future may have
    /// created the topic.
    pub async fn open(config: KvConfig) -> Result<Self> {
        Self::open_with(config, Json).await
    }

    /// [`KvStore::start_with`] with JSON keys and values.
    pub async fn start(config: KvConfig) -> Result<Self> {
        Self::start_with(config, Json).await
    }
}

impl<K, V, C> KvStore<K, V, C>
where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Codec<K> + Codec<V>,
{
    /// [`KvStore::start_with`], then [`KvStore::ready`].
    pub async fn open_with(config: KvConfig, codec: C) -> Result<Self> {
        let store = Self::start_with(config, codec).await?;
        store.ready().await?;
        Ok(store)
    }

    /// Checks the topic (or creates it, compacted), captures its end offsets, and starts
    /// loading it; returns at once, before the store is ready.
    ///
    /// Fails with [`Error::NotCompacted`] if the topic exists with a `cleanup.policy` that does
    /// not compact. Not cancel-safe only in that a dropped future may have created the topic.
    pub async fn start_with(config: KvConfig, codec: C) -> Result<Self> {
        let consumer_config = config.consumer_config()?;
        let producer_config = config.producer_config()?;
        let admin = Admin::connect(ClientConfig::new(&config.bootstrap)).await?;
        let prepared = prepare_topic(&admin, &config).await;
        admin.close().await;
        let loading = prepared?;
        let partitions = loading.len();

        let consumer = Consumer::new(consumer_config).await?;
        let topic: Arc<str> = config.topic.as_str().into();
        let tps: Vec<TopicPartition> = (0..partitions as i32).map(|p| TopicPartition::new(topic.clone(), p)).collect();
        consumer.assign(tps.iter().cloned());
        consumer.seek_to_beginning(&tps)?;
        let producer = Producer::new(producer_config).await?;

        let (close, close_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            topic: config.topic.clone(),
            state: RwLock::new(State {
                map: BTreeMap::new(),
                applied: (0..partitions as i32).map(|p| (p, -1)).collect(),
                loading: loading
                    .into_iter()
                    .filter(|(_, (start, end))| end > start)
                    .map(|(p, (_, end))| (p, end))
                    .collect(),
                stopped: None,
            }),
            progress: watch::Sender::new(0),
            changes: broadcast::Sender::new(config.watch_capacity.max(1)),
            failures: broadcast::Sender::new(config.watch_capacity.max(1)),
            decode_failures: AtomicU64::new(0),
            close,
        });
        tokio::spawn(follow(shared.clone(), consumer, codec.clone(), close_rx, PhantomData::<fn() -> K>));
        Ok(Self { shared, producer, codec, partitions, write_timeout: config.write_timeout })
    }

    /// Waits until the store holds the topic up to the end offsets captured when it started.
    /// Fails if the store stopped first.
    ///
    /// Cancel-safe: it only waits (wrap it in a timeout to bound it).
    pub async fn ready(&self) -> Result<()> {
        self.shared.wait_until(|st| st.loading.is_empty()).await
    }

    /// Whether the store is ready (see [`KvStore::ready`]).
    pub fn is_ready(&self) -> bool {
        let st = self.shared.read();
        st.loading.is_empty() && st.stopped.is_none()
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The topic's partitions when the store started (partitions added later are not read).
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The value of `key`. [`Error::NotReady`] before the store is ready.
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        Ok(self.shared.ready_state()?.map.get(key).cloned())
    }

    /// Whether `key` has a value. [`Error::NotReady`] before the store is ready.
    pub fn contains<Q>(&self, key: &Q) -> Result<bool>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        Ok(self.shared.ready_state()?.map.contains_key(key))
    }

    /// The number of keys. [`Error::NotReady`] before the store is ready.
    pub fn len(&self) -> Result<usize> {
        Ok(self.shared.ready_state()?.map.len())
    }

    /// Whether the store has no key. [`Error::NotReady`] before the store is ready.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.shared.ready_state()?.map.is_empty())
    }

    /// Every key and value, in key order (a copy taken at once). [`Error::NotReady`] before
    /// the store is ready.
    pub fn iter(&self) -> Result<Vec<(K, V)>> {
        Ok(self.shared.ready_state()?.map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// The keys in `range` and their values, in key order. [`Error::NotReady`] before the store
    /// is ready.
    pub fn range<Q, R>(&self, range: R) -> Result<Vec<(K, V)>>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
        R: RangeBounds<Q>,
    {
        Ok(self.shared.ready_state()?.map.range(range).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// The keys that start with `prefix` and their values, in key order. [`Error::NotReady`]
    /// before the store is ready.
    pub fn prefix<P>(&self, prefix: &P) -> Result<Vec<(K, V)>>
    where
        K: Borrow<P>,
        P: Prefix + ?Sized,
    {
        let st = self.shared.ready_state()?;
        Ok(st
            .map
            .range::<P, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| prefix.is_prefix_of((*k).borrow()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// Writes `value` for `key` to the topic and returns once the store has applied it
    /// (read-your-writes: a `get` after it sees this value or a later one).
    ///
    /// Fails with [`Error::Timeout`] after [`KvConfig::write_timeout`]. Not cancel-safe: a
    /// dropped future may leave the value written (it is sent as soon as the call starts).
    pub async fn put(&self, key: &K, value: &V) -> Result<Written> {
        let value = Codec::<V>::encode(&self.codec, value).map_err(|e| Error::Encode { what: "value", reason: e.0 })?;
        self.write(key, Some(value)).await
    }

    /// Deletes `key`: writes a tombstone (a null value) to the topic and returns once the store
    /// has applied it. Timeout and cancel-safety as [`KvStore::put`].
    pub async fn delete(&self, key: &K) -> Result<Written> {
        self.write(key, None).await
    }

    async fn write(&self, key: &K, value: Option<Vec<u8>>) -> Result<Written> {
        let key = Codec::<K>::encode(&self.codec, key).map_err(|e| Error::Encode { what: "key", reason: e.0 })?;
        let after = self.write_timeout;
        let write = async {
            let mut record = ProducerRecord::new(self.shared.topic.as_str(), bytes::Bytes::new()).key(key);
            record.value = value.map(Into::into);
            let metadata = self.producer.send(record).await?.await?;
            let (partition, offset) = (metadata.topic_partition.partition, metadata.offset);
            self.shared.wait_until(|st| st.applied.get(&partition).is_some_and(|&a| a > offset)).await?;
            Ok(Written { partition, offset })
        };
        tokio::time::timeout(after, write).await.unwrap_or_else(|_| {
            Err(Error::Timeout { what: format!("write to {} seen by the store", self.shared.topic), after })
        })
    }

    /// The changes of every key from now on.
    pub fn watch(&self) -> Watch<K, V> {
        Watch { rx: self.shared.changes.subscribe(), filter: None }
    }

    /// The changes of `key` from now on.
    pub fn watch_key(&self, key: K) -> Watch<K, V> {
        self.watch_filter(move |k| *k == key)
    }

    /// The changes of the keys starting with `prefix` from now on.
    pub fn watch_prefix<P>(&self, prefix: &P) -> Watch<K, V>
    where
        K: Borrow<P>,
        P: Prefix + ToOwned + ?Sized,
        P::Owned: Send + Sync + 'static,
    {
        let prefix = prefix.to_owned();
        self.watch_filter(move |k| prefix.borrow().is_prefix_of(k.borrow()))
    }

    /// The changes of the keys for which `filter` holds, from now on.
    pub fn watch_filter(&self, filter: impl Fn(&K) -> bool + Send + Sync + 'static) -> Watch<K, V> {
        let filter: KeyFilter<K> = Arc::new(filter);
        Watch { rx: self.shared.changes.subscribe(), filter: Some(filter) }
    }

    /// Every key and value now, and the changes of every key after them: nothing is missed or
    /// seen twice between the two. [`Error::NotReady`] before the store is ready.
    pub fn snapshot_and_watch(&self) -> Result<(Snapshot<K, V>, Watch<K, V>)> {
        // Changes are sent under the write lock: subscribing under the read lock puts the
        // subscription exactly after the snapshot.
        let st = self.shared.ready_state()?;
        let watch = self.watch();
        let snapshot = st.map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok((snapshot, watch))
    }

    /// How many records were not applied because their key or value did not decode.
    pub fn decode_failures(&self) -> u64 {
        self.shared.decode_failures.load(Ordering::Relaxed)
    }

    /// The decode failures from now on (bounded like a [`Watch`]: a receiver that falls
    /// behind gets `Lagged`).
    pub fn failures(&self) -> broadcast::Receiver<DecodeFailure> {
        self.shared.failures.subscribe()
    }

    /// Stops following the topic and closes the producer after its pending writes. Reads fail
    /// with [`Error::Stopped`] afterwards. Cancel-safe: the follower stops either way.
    pub async fn close(self) -> Result<()> {
        self.shared.close.send_replace(true);
        self.shared.stop("closed".into());
        self.producer.close().await?;
        Ok(())
    }
}

/// Creates the topic if missing, refuses it if it does not compact, and returns its partitions'
/// `(log start, end)` offsets (read committed).
async fn prepare_topic(admin: &Admin, config: &KvConfig) -> Result<BTreeMap<i32, (i64, i64)>> {
    let topic = &config.topic;
    let mut new =
        NewTopic::new(topic.clone(), config.partitions, config.replication_factor).config("cleanup.policy", "compact");
    for (k, v) in &config.topic_configs {
        new = new.config(k.clone(), v.clone());
    }
    let created = if config.create_topic {
        let created = admin.create_topics_each(&[new], false).await?.into_iter().next().map(|(_, r)| r);
        match created {
            Some(Ok(_)) => true,
            Some(Err(e)) if e.code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => false,
            Some(Err(e)) => return Err(e.into()),
            None => unreachable!("create_topics_each answers every topic given"),
        }
    } else {
        false
    };
    if !created {
        let configs = match admin.describe_configs(&[ConfigResource::topic(topic.clone())]).await {
            Err(e) if e.code() == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) => {
                return Err(Error::NoTopic { topic: topic.clone() })
            }
            configs => configs?,
        };
        let policy = configs.first().and_then(|c: &ResourceConfig| c.value("cleanup.policy")).unwrap_or("delete");
        if !policy.split(',').any(|p| p.trim() == "compact") {
            return Err(Error::NotCompacted { topic: topic.clone(), cleanup_policy: policy.to_owned() });
        }
    }
    let metadata = admin.describe_topics(&[topic]).await?;
    let partitions: Vec<(&str, i32)> =
        metadata.iter().flat_map(|t| t.partitions.iter().map(|p| (topic.as_str(), p.partition))).collect();
    let starts = admin.list_offsets_isolated(&partitions, OffsetSpec::Earliest, true).await?;
    let ends = admin.list_offsets_isolated(&partitions, OffsetSpec::Latest, true).await?;
    Ok(starts.iter().zip(&ends).map(|(s, e)| (s.partition, (s.offset, e.offset))).collect())
}

/// The follower: applies the topic's records to the state until told to stop or the consumer
/// fails for good.
async fn follow<K, V, C>(
    shared: Arc<Shared<K, V>>,
    consumer: Consumer,
    codec: C,
    mut close: watch::Receiver<bool>,
    _key: PhantomData<fn() -> K>,
) where
    K: Ord + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    C: Codec<K> + Codec<V>,
{
    let reason = loop {
        let polled = tokio::select! {
            _ = close.wait_for(|c| *c) => break "closed".to_owned(),
            polled = consumer.poll(POLL) => polled,
        };
        match polled {
            Ok(records) => apply(&shared, &codec, records, consumer.positions()),
            Err(e) if e.is_retriable() => {
                tracing::warn!(topic = %shared.topic, error = %e, "kvstore: poll failed, retrying");
                // A poll that fails at once would spin: back off for as long as a poll waits.
                tokio::select! {
                    _ = close.wait_for(|c| *c) => break "closed".to_owned(),
                    () = tokio::time::sleep(POLL) => {}
                }
            }
            Err(e) => {
                tracing::error!(topic = %shared.topic, error = %e, "kvstore: stopped following the topic");
                break format!("the consumer failed: {e}");
            }
        }
    };
    shared.stop(reason);
    if let Err(e) = consumer.close().await {
        tracing::debug!(topic = %shared.topic, error = %e, "kvstore: consumer close");
    }
}

enum Decoded<K, V> {
    Put(K, V),
    Delete(K),
    /// The value does not decode: the key's old value is gone from the topic.
    BadValue(K),
    /// The key does not decode (or is null): nothing to apply.
    BadKey,
}

fn apply<K, V, C>(
    shared: &Shared<K, V>,
    codec: &C,
    records: Vec<ConsumerRecord>,
    positions: BTreeMap<TopicPartition, kafka_wire::OffsetAndMetadata>,
) where
    K: Ord + Clone,
    V: Clone,
    C: Codec<K> + Codec<V>,
{
    // Decoded before the lock is taken; the fetched buffers are dropped with `records`.
    let mut failures = Vec::new();
    let decoded: Vec<(i32, i64, Decoded<K, V>)> = records
        .into_iter()
        .map(|r| {
            let fail = |what: &'static str, reason: String| DecodeFailure {
                partition: r.partition,
                offset: r.offset,
                what,
                reason,
            };
            let key = match r.key.as_deref().map(|k| Codec::<K>::decode(codec, k)) {
                Some(Ok(key)) => key,
                Some(Err(e)) => {
                    failures.push(fail("key", e.0));
                    return (r.partition, r.offset, Decoded::BadKey);
                }
                None => {
                    failures.push(fail("key", "null key".into()));
                    return (r.partition, r.offset, Decoded::BadKey);
                }
            };
            let entry = match r.value.as_deref().map(|v| Codec::<V>::decode(codec, v)) {
                None => Decoded::Delete(key),
                Some(Ok(value)) => Decoded::Put(key, value),
                Some(Err(e)) => {
                    failures.push(fail("value", e.0));
                    Decoded::BadValue(key)
                }
            };
            (r.partition, r.offset, entry)
        })
        .collect();

    let mut st = shared.write();
    for (partition, offset, entry) in decoded {
        let (key, old, new) = match entry {
            Decoded::Put(key, value) => {
                let old = st.map.insert(key.clone(), value.clone());
                (key, old, Some(value))
            }
            Decoded::Delete(key) => {
                let old = st.map.remove(&key);
                (key, old, None)
            }
            // The topic's value of the key is no longer the one in memory: watchers see the
            // key go (the failure itself is reported apart).
            Decoded::BadValue(key) => match st.map.remove(&key) {
                Some(old) => (key, Some(old), None),
                None => {
                    bump(&mut st.applied, partition, offset + 1);
                    continue;
                }
            },
            Decoded::BadKey => {
                bump(&mut st.applied, partition, offset + 1);
                continue;
            }
        };
        bump(&mut st.applied, partition, offset + 1);
        // No receiver is not an error: nobody watches.
        let _ = shared.changes.send(Arc::new(Change { key, old, new, partition, offset }));
    }
    for (tp, position) in positions {
        bump(&mut st.applied, tp.partition, position.offset);
    }
    let State { applied, loading, .. } = &mut *st;
    loading.retain(|p, end| applied.get(p).is_none_or(|a| a < end));
    drop(st);

    for failure in failures {
        shared.decode_failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            topic = %shared.topic, partition = failure.partition, offset = failure.offset,
            "kvstore: the record's {} does not decode: {}", failure.what, failure.reason
        );
        let _ = shared.failures.send(failure);
    }
    shared.progress.send_modify(|n| *n += 1);
}

fn bump(applied: &mut HashMap<i32, i64>, partition: i32, next: i64) {
    let a = applied.entry(partition).or_insert(-1);
    *a = (*a).max(next);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acks_0_is_refused_before_connecting() {
        // No broker listens there: the configuration is refused first.
        let config = KvConfig::new("127.0.0.1:1", "t").producer_property("acks", "0");
        match KvStore::<String, String>::start(config).await {
            Err(Error::Kafka(kafka_wire::Error::Config { property, .. })) => assert_eq!(property, "acks"),
            Err(e) => panic!("expected a configuration error, got {e}"),
            Ok(_) => panic!("acks=0 was accepted"),
        }
    }

    #[test]
    fn a_value_that_does_not_decode_removes_the_key_and_is_a_change() {
        let (close, _) = watch::channel(false);
        let shared = Shared::<String, u32> {
            topic: "t".into(),
            state: RwLock::new(State {
                map: BTreeMap::from([("a".to_owned(), 1)]),
                applied: HashMap::from([(0, -1)]),
                loading: BTreeMap::new(),
                stopped: None,
            }),
            progress: watch::Sender::new(0),
            changes: broadcast::Sender::new(8),
            failures: broadcast::Sender::new(8),
            decode_failures: AtomicU64::new(0),
            close,
        };
        let mut changes = shared.changes.subscribe();
        let record = |offset, key: &'static str, value: &'static str| ConsumerRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            timestamp: 0,
            timestamp_type: kafka_wire::TimestampType::CreateTime,
            key: Some(bytes::Bytes::from_static(key.as_bytes())),
            value: Some(bytes::Bytes::from_static(value.as_bytes())),
            headers: Default::default(),
            leader_epoch: 0,
        };
        let records = vec![record(0, "\"a\"", "oops"), record(1, "not json", "2"), record(2, "\"b\"", "3")];
        apply(&shared, &Json, records, BTreeMap::new());
        let st = shared.read();
        assert_eq!(st.map, BTreeMap::from([("b".to_owned(), 3)]));
        assert_eq!(st.applied[&0], 3, "the failed records are passed too");
        assert_eq!(shared.decode_failures.load(Ordering::Relaxed), 2);
        let change = changes.try_recv().unwrap();
        assert_eq!((&change.key[..], change.old, change.new), ("a", Some(1), None));
        assert_eq!(changes.try_recv().unwrap().key, "b");
    }
}
