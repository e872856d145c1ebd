//! [`RetryingConsumer`]: the handler runtime with a [`RetryPolicy`] around the application's
//! handler — blocking retries in place, then the retry tiers, then the dead-letter queue.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use handler::{BatchHandler, ExactlyOnceConfig, Handler, HandlerError, Outputs, Runtime, RuntimeConfig};
use kafka_wire::client::{Admin, ProducerConfig};
use kafka_wire::{Client, ConsumerConfig, ConsumerRecord, Error, Producer, ProducerRecord};

use crate::control::{control_topic, now_ms, provision_control, Blocked, ControlFollower};
use crate::headers::RetryHeaders;
use crate::policy::{Failure, RetryPolicy, Route};
use crate::topics::{provision, TopicNames};

/// Why the application's handler failed, and whether trying again can help.
#[derive(Debug)]
pub struct Failed {
    /// The error.
    pub error: HandlerError,
    /// Whether it is worth retrying.
    pub failure: Failure,
}

impl Failed {
    /// A failure that trying again cannot fix: the record goes straight to the dead-letter
    /// queue.
    pub fn non_retriable(error: impl Into<HandlerError>) -> Self {
        Self { error: error.into(), failure: Failure::NonRetriable }
    }
}

/// Any error is retriable unless it says otherwise with [`Failed::non_retriable`].
impl<E: Into<HandlerError>> From<E> for Failed {
    fn from(error: E) -> Self {
        Self { error: error.into(), failure: Failure::Retriable }
    }
}

/// Settings of a [`RetryingConsumer`].
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// The consumer's settings (with its `group.id`); the bootstrap servers are used for the
    /// producer and the admin client too.
    pub consumer: ConsumerConfig,
    /// The source topic.
    pub topic: String,
    /// What happens to a failed record.
    pub policy: RetryPolicy,
    /// Creates missing retry and dead-letter topics at start (and checks existing ones); off,
    /// they must exist.
    pub create_topics: bool,
    /// Keys of a partition handled at once (see [`RuntimeConfig::key_parallelism`]); must be
    /// 1 with a transactional hand-off.
    pub key_parallelism: usize,
    /// The transactional hand-off, with this instance's `transactional.id` (one per instance;
    /// a restarted instance reuses it): forwarding a record to a retry tier or the dead-letter
    /// queue and committing its source offset happen in one Kafka transaction (the runtime's
    /// exactly-once mode), so a rebalance or a crash never leaves a record forwarded twice.
    /// Records are then read read_committed, and a partition's records handled in offset
    /// order. `None` (the default): forwards are acknowledged, then the source offset is
    /// committed (at least once: a crash in between forwards the record again).
    pub transactional_id: Option<String>,
}

impl RetryConfig {
    /// Retries of `topic`'s records by `consumer`'s group, per `policy`.
    pub fn new(consumer: ConsumerConfig, topic: impl Into<String>, policy: RetryPolicy) -> Self {
        Self { consumer, topic: topic.into(), policy, create_topics: true, key_parallelism: 1, transactional_id: None }
    }

    /// Turns the transactional hand-off on, with this instance's `transactional_id` (see
    /// [`RetryConfig::transactional_id`]).
    pub fn transactional_hand_off(mut self, transactional_id: impl Into<String>) -> Self {
        self.transactional_id = Some(transactional_id.into());
        self
    }
}

/// A consumer group member that handles a topic's records with retries: a failed record is
/// retried in place (blocking: its partition waits), then forwarded through the retry tiers
/// (non-blocking: each tier's consumer waits for the record's due time with its partition
/// paused, while the source partition goes on), then to the dead-letter queue with its full
/// history in headers. Nothing is dropped: a record leaves the source topic's commit point only
/// once it is handled or written to a tier or the queue. With the transactional hand-off
/// ([`RetryConfig::transactional_hand_off`]) the write and the commit are one transaction, so
/// none is written twice either.
#[derive(Clone)]
pub struct RetryingConsumer {
    runtime: Runtime,
    names: TopicNames,
}

impl RetryingConsumer {
    /// Connects, creates or checks the retry and dead-letter topics, and prepares the member;
    /// nothing is consumed until [`RetryingConsumer::run_until`]. With the transactional
    /// hand-off, the runtime's exactly-once mode is used (see
    /// [`RetryConfig::transactional_hand_off`]).
    ///
    /// Cancel-safe: dropping the future drops what was connected; topics created stay.
    pub async fn new<F, Fut>(config: RetryConfig, handler: F) -> kafka_wire::Result<Self>
    where
        F: Fn(ConsumerRecord) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Failed>> + Send + 'static,
    {
        let group = config.consumer.group_id.clone().ok_or_else(|| Error::Config {
            property: "group.id".into(),
            reason: "retry topics are named after the consumer group: set a group id".into(),
        })?;
        let names = TopicNames::new(&config.topic, &group, config.policy.tiers.len());
        let client = Client::connect(config.consumer.client_config()).await?;
        let control = control_topic(&config.topic, &group);
        if config.create_topics {
            let admin = Admin::new(client.clone());
            provision(&admin, &names, &config.policy.tiers).await?;
            provision_control(&admin, &control).await?;
        }
        let control = ControlFollower::start(&client, &config.consumer, &control).await?;
        let producer_config = ProducerConfig::new(&config.consumer.bootstrap_servers.join(","));
        let topics = std::iter::once(names.source.clone()).chain(names.tiers.iter().cloned());
        let runtime_config =
            RuntimeConfig::new(config.consumer.clone(), topics).key_parallelism(config.key_parallelism);
        let runtime = match &config.transactional_id {
            None => {
                let producer = Some(Producer::with_client(client, producer_config)?);
                let retrying =
                    Retrying { handler, policy: config.policy.clone(), names: names.clone(), group, producer, control };
                Runtime::new(runtime_config, Shared(Arc::new(retrying))).await?
            }
            Some(id) => {
                // The runtime's transactional producer writes the forwards.
                let retrying = Retrying {
                    handler,
                    policy: config.policy.clone(),
                    names: names.clone(),
                    group,
                    producer: None,
                    control,
                };
                let exactly_once = ExactlyOnceConfig::new(producer_config.transactional_id(id.clone()));
                Runtime::exactly_once(runtime_config, exactly_once, Shared(Arc::new(retrying))).await?
            }
        };
        Ok(Self { runtime, names })
    }

    /// The retry tiers' and the dead-letter queue's names.
    pub fn topics(&self) -> &TopicNames {
        &self.names
    }

    /// The runtime underneath (stats, the consumer).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Handles records until `shutdown` completes, then drains, commits and leaves the group
    /// (see [`Runtime::run_until`]). Not cancel-safe in the same way.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> kafka_wire::Result<()> {
        self.runtime.run_until(shutdown).await
    }
}

/// The application's handler with the policy around it: what the runtime runs.
struct Retrying<F> {
    handler: F,
    policy: RetryPolicy,
    names: TopicNames,
    group: String,
    /// Writes the forwards without the transactional hand-off.
    producer: Option<Producer>,
    control: ControlFollower,
}

impl<F, Fut> Retrying<F>
where
    F: Fn(ConsumerRecord) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failed>> + Send + 'static,
{
    /// Runs the handler on `record` until it succeeds or the policy (or an operator) sends the
    /// record on, and writes the forward.
    async fn attempt(&self, record: ConsumerRecord) -> Result<(), HandlerError> {
        let (forward, published) = self.route(&record).await;
        if let Some(forward) = forward {
            let producer = self.producer.as_ref().expect("a producer without the transactional hand-off");
            // A forward that fails is an error of this attempt: the runtime runs it again (the
            // handler included), so the record is never committed without being written on.
            producer.send(forward).await?.await?;
        }
        self.unpublish(&record, published).await;
        Ok(())
    }

    /// Runs the handler on `record` until it succeeds or the policy (or an operator) sends the
    /// record on: returns the record to forward (to a tier or the dead-letter queue), if any,
    /// and when its blocked status was published, if it was.
    async fn route(&self, record: &ConsumerRecord) -> (Option<ProducerRecord>, Option<u64>) {
        let tier = self.names.tier_of(&record.topic);
        let mut headers = RetryHeaders::of(record).unwrap_or_else(|| RetryHeaders::first(record, &self.group));
        let mut failures = 0;
        let mut published = None;
        let route = loop {
            if failures > 0 {
                // Retrying in place: an operator may have skipped the record or unblocked
                // its partition meanwhile.
                let control = self.control.state();
                if let Some(skip) = control.skip_of(record.partition, record.offset) {
                    headers.failed(&format!("skipped by {} at {} ms", skip.by, skip.at_ms), SystemTime::now());
                    break Route::DeadLetter;
                }
                if !control.is_blocking(record.partition) {
                    break self.policy.after_blocking();
                }
            }
            let failed = match (self.handler)(record.clone()).await {
                Ok(()) => return (None, published),
                Err(failed) => failed,
            };
            failures += 1;
            let now = SystemTime::now();
            headers.failed(&failed.error.to_string(), now);
            let mut route = self.policy.route(tier, failures, failed.failure, self.unit());
            if matches!(route, Route::RetryInPlace { .. }) && !self.control.state().is_blocking(record.partition) {
                route = self.policy.after_blocking();
            }
            tracing::warn!(
                topic = %record.topic, partition = record.partition, offset = record.offset,
                attempts = headers.attempts, error = %failed.error, ?route, "retry: the handler failed"
            );
            let Route::RetryInPlace { delay } = route else { break route };
            let since = *published.get_or_insert(now_ms());
            let blocked = Blocked {
                partition: record.partition,
                offset: record.offset,
                since_ms: since,
                attempts: headers.attempts,
                error: failed.error.to_string(),
            };
            let mut changes = self.control.changes();
            self.control.publish_blocked(record.partition, record.offset, Some(&blocked)).await;
            // The backoff is waited in full unless an operator skips the record or unblocks
            // its partition meanwhile: other changes of the control state (blocked statuses,
            // this instance's own just above among them) do not cut it short.
            let deadline = tokio::time::Instant::now() + delay;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep_until(deadline).await;
                            break;
                        }
                        let control = self.control.state();
                        if control.skip_of(record.partition, record.offset).is_some()
                            || !control.is_blocking(record.partition)
                        {
                            break;
                        }
                    }
                }
            }
        };
        let (topic, next_tier, due) = match route {
            Route::Forward { tier, delay } => (&self.names.tiers[tier], Some(tier), Some(SystemTime::now() + delay)),
            _ => (&self.names.dead_letter, None, None),
        };
        headers.tier = next_tier;
        headers.due = due;
        (Some(headers.forward(record, topic)), published)
    }

    /// The transactional hand-off: handles `batch` in order and returns the forwards, which
    /// the runtime writes in the transaction that commits the batch's source offsets. A
    /// record's blocked status is withdrawn when it is handed off, before that commit.
    async fn attempt_batch(&self, batch: Vec<ConsumerRecord>) -> Result<Outputs, HandlerError> {
        let mut forwards = Vec::new();
        for record in &batch {
            let (forward, published) = self.route(record).await;
            forwards.extend(forward);
            self.unpublish(record, published).await;
        }
        Ok(Outputs::commit(forwards))
    }

    /// Withdraws the blocked status of `record`, if this instance published one, or if one is
    /// there from an instance that crashed while the record was blocked (its new owner may
    /// handle it at the first attempt, and would otherwise leave the status for ever).
    async fn unpublish(&self, record: &ConsumerRecord, published: Option<u64>) {
        // Statuses are those of the source topic's records (tier records never block).
        let left_over = || {
            self.names.tier_of(&record.topic).is_none()
                && self.control.state().blocked.contains_key(&(record.partition, record.offset))
        };
        if published.is_some() || left_over() {
            self.control.publish_blocked(record.partition, record.offset, None).await;
        }
    }

    /// A number in [0, 1) for the policy's jitter: each `RandomState` is freshly keyed, so its
    /// hash of anything is a new draw (only failures ask for one).
    fn unit(&self) -> f64 {
        (RandomState::new().hash_one(0u8) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the runtime holds: the handler and its policy, shared with each record's future.
struct Shared<F>(Arc<Retrying<F>>);

impl<F, Fut> Handler for Shared<F>
where
    F: Fn(ConsumerRecord) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failed>> + Send + 'static,
{
    fn handle(&self, record: ConsumerRecord) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>> {
        let retrying = self.0.clone();
        Box::pin(async move { retrying.attempt(record).await })
    }

    fn not_before(&self, record: &ConsumerRecord) -> Option<SystemTime> {
        self.0.due(record)
    }
}

impl<F, Fut> BatchHandler for Shared<F>
where
    F: Fn(ConsumerRecord) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failed>> + Send + 'static,
{
    fn handle(
        &self,
        batch: Vec<ConsumerRecord>,
    ) -> Pin<Box<dyn Future<Output = Result<Outputs, HandlerError>> + Send>> {
        let retrying = self.0.clone();
        Box::pin(async move { retrying.attempt_batch(batch).await })
    }

    fn not_before(&self, record: &ConsumerRecord) -> Option<SystemTime> {
        self.0.due(record)
    }
}

impl<F> Retrying<F> {
    /// When a record of a retry tier is due.
    fn due(&self, record: &ConsumerRecord) -> Option<SystemTime> {
        self.names.tier_of(&record.topic)?;
        RetryHeaders::of(record)?.due
    }
}
