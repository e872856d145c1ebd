//! The atomic store of pattern 6: commands on a key are applied one at a time, exactly once, by
//! a processor that writes the new value to a compacted store topic in the same Kafka
//! transaction as the command's offset.
//!
//! ```text
//!  callers ──Command (key)──► commands topic ──► AtomicProcessor ──► store topic (compacted)
//!  (AtomicKvStore)            partition p        one transaction:    partition p, same key
//!       ▲                                        new values, replies,
//!       └───────────── replies topic ◄────────── callback outputs, command offsets
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_wire::client::{Admin, ConfigResource, IsolationLevel, NewTopic, OffsetSpec, ResourceConfig};
use kafka_wire::{
    ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, ErrorCode, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};

/// The header of a command that wants a reply: the command's id, which the reply carries back.
pub(crate) const COMMAND_ID: &str = "kv-command-id";

/// How long the reply listener waits for records in one poll before it looks whether it
/// should stop.
const POLL: Duration = Duration::from_millis(200);

/// A command on one key's value. Values are JSON; a JSON `null` value is no value (the key is
/// deleted), so that "no value" has one spelling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Adds `by` to the value, an integer (a key with no value counts as 0). Refused if the
    /// value is not an `i64` or the sum overflows.
    Increment {
        /// The amount (may be negative).
        by: i64,
    },
    /// Sets the value.
    Set {
        /// The new value.
        value: Value,
    },
    /// Deletes the key.
    Delete,
    /// Sets the value to `new` if it is `expected` now (`None`: the key has no value); refused
    /// otherwise, with the current value.
    CompareAndSet {
        /// The value the caller last saw.
        expected: Option<Value>,
        /// The value to set (`None`: delete).
        new: Option<Value>,
    },
    /// Runs the function registered with the processor under `function`
    /// ([`AtomicProcessor::function`]) on the value and `arg`.
    Call {
        /// The function's name.
        function: String,
        /// Its argument.
        arg: Value,
    },
}

impl Command {
    /// [`Command::Increment`].
    pub fn increment(by: i64) -> Self {
        Self::Increment { by }
    }

    /// [`Command::Set`].
    pub fn set(value: impl Into<Value>) -> Self {
        Self::Set { value: value.into() }
    }

    /// [`Command::CompareAndSet`].
    pub fn compare_and_set(expected: Option<Value>, new: Option<Value>) -> Self {
        Self::CompareAndSet { expected, new }
    }

    /// [`Command::Call`].
    pub fn call(function: impl Into<String>, arg: impl Into<Value>) -> Self {
        Self::Call { function: function.into(), arg: arg.into() }
    }
}

/// What the processor did with a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Applied: the key's value went from `old` to `new` (equal if the command changed
    /// nothing, in which case nothing was written).
    Applied {
        /// The value before.
        old: Option<Value>,
        /// The value after.
        new: Option<Value>,
    },
    /// Refused: the value is unchanged.
    Refused {
        /// Why (a stale expected value, a value that is not an integer, an unknown function,
        /// the function's own reason, a command that does not decode).
        reason: String,
        /// The value, unchanged.
        current: Option<Value>,
    },
}

/// A reply, as written to the replies topic (keyed by the command id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Reply {
    pub(crate) id: String,
    pub(crate) key: Option<String>,
    pub(crate) outcome: Outcome,
}

/// A change of a key's value made by a command, as update callbacks see it
/// ([`AtomicProcessor::on_update`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Update<'a> {
    /// The key.
    pub key: &'a str,
    /// The value before (`None`: none).
    pub old: Option<&'a Value>,
    /// The value after (`None`: deleted).
    pub new: Option<&'a Value>,
    /// The partition of the command (and of the value in the store topic).
    pub partition: i32,
    /// The command's offset in the commands topic.
    pub command_offset: i64,
}

/// A function callable with [`Command::Call`]: the new value (`None`: delete) from the current
/// one and the argument, or why the command is refused. It must be deterministic (a function of
/// its inputs only): after a crash the processor may apply a command again from a state rebuilt
/// from the store topic, and expects the same result.
pub type Function = Arc<dyn Fn(Option<&Value>, &Value) -> Result<Option<Value>, String> + Send + Sync>;

/// An update callback: runs for every change a command makes, and may push records to `out`,
/// which are written in the transaction of the change (so they become visible exactly once,
/// with the change, whatever crashes and replays happen). It must not have effects outside
/// Kafka: a transaction that aborts runs it again when the command is applied again.
pub type Callback = Arc<dyn Fn(&Update<'_>, &mut Vec<ProducerRecord>) + Send + Sync>;

/// The topics of an atomic store, shared by its callers ([`AtomicKvStore`]) and its processor
/// ([`AtomicProcessor`]).
#[derive(Clone, Debug)]
pub struct AtomicConfig {
    pub(crate) bootstrap: String,
    pub(crate) commands: String,
    pub(crate) store: String,
    pub(crate) replies: String,
    pub(crate) partitions: i32,
    pub(crate) replication_factor: i16,
    pub(crate) create_topics: bool,
    pub(crate) reply_timeout: Duration,
    pub(crate) load_timeout: Duration,
    pub(crate) consumer_properties: Vec<(String, String)>,
    pub(crate) producer_properties: Vec<(String, String)>,
}

impl AtomicConfig {
    /// An atomic store whose commands topic is `commands`, on the cluster at `bootstrap`. The
    /// store topic is `<commands>.store` and the replies topic `<commands>.replies` unless set
    /// otherwise. Missing topics are created with 1 partition and the broker's default
    /// replication factor: the commands topic with the broker's default cleanup policy, the
    /// store topic compacted, the replies topic with a retention of one hour.
    pub fn new(bootstrap: impl Into<String>, commands: impl Into<String>) -> Self {
        let commands = commands.into();
        Self {
            bootstrap: bootstrap.into(),
            store: format!("{commands}.store"),
            replies: format!("{commands}.replies"),
            commands,
            partitions: 1,
            replication_factor: -1,
            create_topics: true,
            reply_timeout: Duration::from_secs(30),
            load_timeout: Duration::from_secs(120),
            consumer_properties: Vec::new(),
            producer_properties: Vec::new(),
        }
    }

    /// The store topic (compacted; readable with a [`KvStore<String, serde_json::Value>`]
    /// (crate::KvStore)).
    pub fn store_topic(mut self, topic: impl Into<String>) -> Self {
        self.store = topic.into();
        self
    }

    /// The replies topic.
    pub fn replies_topic(mut self, topic: impl Into<String>) -> Self {
        self.replies = topic.into();
        self
    }

    /// Partitions of the commands and store topics (and replies topic) if they are created
    /// (default 1). The commands and store topics must have the same count.
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Replication factor of the topics if they are created (default -1: the broker's).
    pub fn replication_factor(mut self, replication_factor: i16) -> Self {
        self.replication_factor = replication_factor;
        self
    }

    /// Whether missing topics are created (default `true`); if not, a missing topic is
    /// [`Error::NoTopic`].
    pub fn create_topics(mut self, create: bool) -> Self {
        self.create_topics = create;
        self
    }

    /// How long [`AtomicKvStore::execute`] waits for the reply (default 30 s).
    pub fn reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// How long the processor waits, on taking over a partition, for the transactions still
    /// open on the store partition to end and for the partition to load (default 120 s); after
    /// it the batch is aborted and consumed again.
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }

    /// A property of the consumers (the processor's, the reply listener's), Kafka's name.
    pub fn consumer_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.consumer_properties.push((name.into(), value.into()));
        self
    }

    /// A property of the producers (the processor's, the callers'), Kafka's name.
    ///
    /// The processor's `transaction.timeout.ms` is 10 s unless set here: a processor that
    /// crashes and is not restarted with its `transactional_id` leaves its transaction open
    /// until then, and the partitions' next owner waits for it to end before it loads them.
    pub fn producer_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.producer_properties.push((name.into(), value.into()));
        self
    }

    /// The commands topic.
    pub fn commands(&self) -> &str {
        &self.commands
    }

    /// The store topic.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// The replies topic.
    pub fn replies(&self) -> &str {
        &self.replies
    }

    pub(crate) fn consumer_config(&self) -> Result<ConsumerConfig> {
        let mut config = ConsumerConfig::new(&self.bootstrap).isolation_level(IsolationLevel::ReadCommitted);
        for (k, v) in &self.consumer_properties {
            config.set(k, v)?;
        }
        Ok(config)
    }

    pub(crate) fn producer_config(&self) -> Result<ProducerConfig> {
        let mut config = ProducerConfig::new(&self.bootstrap).transaction_timeout(TRANSACTION_TIMEOUT);
        for (k, v) in &self.producer_properties {
            config.set(k, v)?;
        }
        Ok(config)
    }

    /// Creates the missing topics of `roles` and checks them; returns the partition count of
    /// each.
    pub(crate) async fn prepare(&self, admin: &Admin, roles: &[Role]) -> Result<Vec<usize>> {
        let mut counts = Vec::with_capacity(roles.len());
        for role in roles {
            let (topic, new) = match role {
                Role::Commands => {
                    (&self.commands, NewTopic::new(&self.commands, self.partitions, self.replication_factor))
                }
                Role::Store => (
                    &self.store,
                    NewTopic::new(&self.store, self.partitions, self.replication_factor)
                        .config("cleanup.policy", "compact"),
                ),
                Role::Replies => (
                    &self.replies,
                    NewTopic::new(&self.replies, self.partitions, self.replication_factor)
                        .config("retention.ms", "3600000"),
                ),
            };
            if self.create_topics {
                match admin.create_topics_each(&[new], false).await?.into_iter().next().map(|(_, r)| r) {
                    Some(Err(e)) if e.code() != Some(ErrorCode::TOPIC_ALREADY_EXISTS) => return Err(e.into()),
                    _ => {}
                }
            }
            counts.push(self.partitions_of(admin, topic).await?);
            if *role == Role::Store {
                let configs = admin.describe_configs(&[ConfigResource::topic(topic.clone())]).await?;
                let policy =
                    configs.first().and_then(|c: &ResourceConfig| c.value("cleanup.policy")).unwrap_or("delete");
                if !policy.split(',').any(|p| p.trim() == "compact") {
                    return Err(Error::NotCompacted { topic: topic.clone(), cleanup_policy: policy.to_owned() });
                }
            }
        }
        Ok(counts)
    }

    /// The partition count of `topic`, once the broker answering knows every partition's
    /// leader. A topic just created (by this process or another one starting at the same time)
    /// takes a moment to reach every broker's metadata; a consumer subscribing before that
    /// would get no partitions of it until its next metadata refresh.
    async fn partitions_of(&self, admin: &Admin, topic: &str) -> Result<usize> {
        let deadline = tokio::time::Instant::now() + TOPIC_VISIBLE;
        loop {
            let known = match admin.describe_topics(&[topic]).await {
                Err(e) if e.code() == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) => {
                    if !self.create_topics {
                        return Err(Error::NoTopic { topic: topic.to_owned() });
                    }
                    None
                }
                metadata => metadata?
                    .into_iter()
                    .next()
                    .filter(|t| !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader.is_some()))
                    .map(|t| t.partitions.len()),
            };
            match known {
                Some(count) => return Ok(count),
                None if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Timeout {
                        what: format!("topic {topic} in the brokers' metadata"),
                        after: TOPIC_VISIBLE,
                    })
                }
                // No event tells when the metadata has it: look again shortly.
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// The processor's default `transaction.timeout.ms`: its transactions last one batch, and a
/// transaction left open by a crash delays the takeover of its partitions this long.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a topic created (or found existing) may take to appear in the metadata.
const TOPIC_VISIBLE: Duration = Duration::from_secs(30);

/// A topic of an atomic store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Commands,
    Store,
    Replies,
}

/// The key as the topics hold it: JSON text, so that a [`KvStore<String, _>`](crate::KvStore)
/// (JSON keys) and `kw kv` read the store topic.
pub(crate) fn key_bytes(key: &str) -> Bytes {
    Bytes::from(Value::String(key.to_owned()).to_string())
}

/// Where a command landed in the commands topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The partition (of the command, and of the key's value in the store topic).
    pub partition: i32,
    /// The command's offset.
    pub offset: i64,
}

/// The callers' side of an atomic store: sends commands to the commands topic, and waits for
/// their replies if asked.
///
/// The commands of one key go to one partition (the key's hash), where the processor applies
/// them in order, each exactly once. A command the broker acknowledged is applied even if
/// this caller goes away.
///
/// Replies are read from the replies topic by a task of this store, from its end when the store
/// connected: every caller reads every reply (and keeps those of its own commands).
pub struct AtomicKvStore {
    producer: Producer,
    commands: String,
    replies: String,
    id_prefix: String,
    next_id: AtomicU64,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Reply>>>>,
    reply_timeout: Duration,
    /// `true` asks the reply listener to stop; it reports why it stopped here too.
    close: watch::Sender<bool>,
    stopped: Arc<Mutex<Option<String>>>,
}

impl Drop for AtomicKvStore {
    fn drop(&mut self) {
        self.close.send_replace(true);
    }
}

impl AtomicKvStore {
    /// Checks (or creates) the commands and replies topics, connects an idempotent producer,
    /// and starts reading replies from the replies topic's end. Not cancel-safe only in that a
    /// dropped future may have created topics.
    pub async fn connect(config: &AtomicConfig) -> Result<Self> {
        let producer_config = config.producer_config()?.enable_idempotence(true);
        let consumer_config = config.consumer_config()?.enable_auto_commit(false);
        let admin = Admin::connect(ClientConfig::new(&config.bootstrap)).await?;
        let listener = async {
            config.prepare(&admin, &[Role::Commands, Role::Replies]).await?;
            let metadata = admin.describe_topics(&[&config.replies]).await?;
            let partitions: Vec<(&str, i32)> = metadata
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| (config.replies.as_str(), p.partition)))
                .collect();
            // From the end as of now: the replies of commands sent after this are after it.
            Ok::<_, Error>(admin.list_offsets_isolated(&partitions, OffsetSpec::Latest, true).await?)
        }
        .await;
        admin.close().await;
        let ends = listener?;
        let consumer = Consumer::new(consumer_config).await?;
        let topic: Arc<str> = config.replies.as_str().into();
        consumer.assign(ends.iter().map(|e| TopicPartition::new(topic.clone(), e.partition)));
        for e in &ends {
            consumer.seek(&TopicPartition::new(topic.clone(), e.partition), e.offset)?;
        }
        let producer = Producer::new(producer_config).await?;
        let pending: Arc<Mutex<HashMap<String, oneshot::Sender<Reply>>>> = Arc::default();
        let stopped = Arc::new(Mutex::new(None));
        let (close, close_rx) = watch::channel(false);
        tokio::spawn(listen(consumer, pending.clone(), stopped.clone(), close_rx));
        Ok(Self {
            producer,
            commands: config.commands.clone(),
            replies: config.replies.clone(),
            id_prefix: unique_prefix(),
            next_id: AtomicU64::new(0),
            pending,
            reply_timeout: config.reply_timeout,
            close,
            stopped,
        })
    }

    /// Sends `command` for `key` and returns once the broker acknowledged it (it will be
    /// applied, exactly once); no reply is asked for.
    ///
    /// Not cancel-safe: a dropped future may leave the command sent (and so applied).
    pub async fn send(&self, key: &str, command: &Command) -> Result<Sent> {
        self.send_record(self.record(key, command)?).await
    }

    /// Sends `command` for `key` and waits for what the processor did with it, for at most
    /// [`AtomicConfig::reply_timeout`] ([`Error::Timeout`]; the command may still be applied
    /// later, when the processor runs again).
    ///
    /// Not cancel-safe: a dropped future may leave the command sent (and so applied), its
    /// reply unread.
    pub async fn execute(&self, key: &str, command: &Command) -> Result<Outcome> {
        let id = format!("{}-{}", self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), tx);
        // Removes the entry whatever happens next (an error, a timeout, a dropped future).
        let _pending = Unregister { pending: &self.pending, id: &id };
        let record = self.record(key, command)?.header(COMMAND_ID, Bytes::from(id.clone()));
        let after = self.reply_timeout;
        let wait = async {
            self.send_record(record).await?;
            match rx.await {
                Ok(reply) => Ok(reply.outcome),
                Err(_) => Err(self.stopped_error()),
            }
        };
        tokio::time::timeout(after, wait).await.unwrap_or_else(|_| {
            Err(Error::Timeout { what: format!("the reply to command {id} on key {key:?} ({})", self.commands), after })
        })
    }

    /// The commands topic.
    pub fn commands(&self) -> &str {
        &self.commands
    }

    /// Stops reading replies and closes the producer after the commands sent. Cancel-safe:
    /// the listener stops either way.
    pub async fn close(self) -> Result<()> {
        self.close.send_replace(true);
        self.producer.close().await?;
        Ok(())
    }

    fn record(&self, key: &str, command: &Command) -> Result<ProducerRecord> {
        let value =
            serde_json::to_vec(command).map_err(|e| Error::Encode { what: "value", reason: format!("JSON: {e}") })?;
        Ok(ProducerRecord::new(self.commands.as_str(), value).key(key_bytes(key)))
    }

    async fn send_record(&self, record: ProducerRecord) -> Result<Sent> {
        let metadata = self.producer.send(record).await?.await?;
        Ok(Sent { partition: metadata.topic_partition.partition, offset: metadata.offset })
    }

    fn stopped_error(&self) -> Error {
        let reason = lock(&self.stopped).clone().unwrap_or_else(|| "closed".into());
        Error::Stopped { topic: self.replies.clone(), reason }
    }
}

impl std::fmt::Debug for AtomicKvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicKvStore").field("commands", &self.commands).field("replies", &self.replies).finish()
    }
}

struct Unregister<'a> {
    pending: &'a Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    id: &'a str,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A prefix for the command ids of one store: unique enough that two callers never share one
/// (process id, time, and a randomly seeded hash).
fn unique_prefix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("{:016x}", h.finish())
}

/// The reply listener: hands every reply whose command this store waits for to its waiter.
async fn listen(
    consumer: Consumer,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Reply>>>>,
    stopped: Arc<Mutex<Option<String>>>,
    mut close: watch::Receiver<bool>,
) {
    let reason = loop {
        let polled = tokio::select! {
            _ = close.wait_for(|c| *c) => break "closed".to_owned(),
            polled = consumer.poll(POLL) => polled,
        };
        match polled {
            Ok(records) => deliver(&pending, &records),
            Err(e) if e.is_retriable() => {
                tracing::warn!(error = %e, "atomic store: reading replies failed, retrying");
                tokio::select! {
                    _ = close.wait_for(|c| *c) => break "closed".to_owned(),
                    () = tokio::time::sleep(POLL) => {}
                }
            }
            Err(e) => break format!("reading replies failed: {e}"),
        }
    };
    *lock(&stopped) = Some(reason);
    // Waiters see their sender dropped, and report the reason.
    lock(&pending).clear();
    if let Err(e) = consumer.close().await {
        tracing::debug!(error = %e, "atomic store: reply consumer close");
    }
}

fn deliver(pending: &Mutex<HashMap<String, oneshot::Sender<Reply>>>, records: &[ConsumerRecord]) {
    let mut pending = lock(pending);
    for r in records {
        let Some(value) = &r.value else { continue };
        match serde_json::from_slice::<Reply>(value) {
            Ok(reply) => {
                if let Some(waiter) = pending.remove(&reply.id) {
                    // The waiter may have given up meanwhile.
                    let _ = waiter.send(reply);
                }
            }
            Err(e) => {
                tracing::warn!(partition = r.partition, offset = r.offset, "atomic store: a reply does not decode: {e}")
            }
        }
    }
}

/// The processor of an atomic store: consumes the commands topic in a consumer group, applies
/// each command to its key's value, and writes, in one Kafka transaction per batch, the new
/// values to the store topic (same partition number as the command), the replies, the update
/// callbacks' records and the commands' offsets. Run one or more instances (each with its own
/// `transactional_id`) in one group; each partition has one owner at a time.
///
/// The processor holds the values of the partitions it owns in memory. A partition's values are
/// (re)loaded from the store topic (read_committed, once no transaction is open on it) whenever
/// the next command of the partition is not the one right after the last command applied in
/// memory: on taking the partition over (at start, after a rebalance) and after a transaction
/// was aborted (the commands are consumed again from the committed offsets). So the values a
/// command is applied to are always those committed with the offset it is consumed from, and
/// never include effects of an aborted transaction.
pub struct AtomicProcessor {
    pub(crate) config: AtomicConfig,
    pub(crate) group_id: String,
    pub(crate) transactional_id: String,
    pub(crate) functions: HashMap<String, Function>,
    pub(crate) callbacks: Vec<Callback>,
}

impl AtomicProcessor {
    /// A processor of the store of `config`, in consumer group `group_id`, with
    /// `transactional_id` for this instance (a restarted instance reuses it: that fences its
    /// predecessor and aborts the transaction it left open).
    pub fn new(config: AtomicConfig, group_id: impl Into<String>, transactional_id: impl Into<String>) -> Self {
        Self {
            config,
            group_id: group_id.into(),
            transactional_id: transactional_id.into(),
            functions: HashMap::new(),
            callbacks: Vec::new(),
        }
    }

    /// Registers `f` under `name`, for [`Command::Call`]. See [`Function`]: it must be
    /// deterministic.
    pub fn function(
        mut self,
        name: impl Into<String>,
        f: impl Fn(Option<&Value>, &Value) -> Result<Option<Value>, String> + Send + Sync + 'static,
    ) -> Self {
        self.functions.insert(name.into(), Arc::new(f));
        self
    }

    /// Adds an update callback, run for every change of a value (not for commands that change
    /// nothing or are refused); see [`Callback`]: what it pushes is written with the change,
    /// exactly once.
    pub fn on_update(mut self, f: impl Fn(&Update<'_>, &mut Vec<ProducerRecord>) + Send + Sync + 'static) -> Self {
        self.callbacks.push(Arc::new(f));
        self
    }
}

impl std::fmt::Debug for AtomicProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicProcessor")
            .field("config", &self.config)
            .field("group_id", &self.group_id)
            .field("transactional_id", &self.transactional_id)
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .field("callbacks", &self.callbacks.len())
            .finish()
    }
}
