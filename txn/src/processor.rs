//! The exactly-once consume-transform-produce loop, [`Processor`].

use std::sync::Arc;
use std::time::Duration;

use handler::{ExactlyOnceConfig, HandlerError, Outputs, Runtime, RuntimeConfig};
use kafka_wire::client::{
    Consumer, ConsumerConfig, ConsumerRecord, Error, OffsetReset, ProducerConfig, ProducerRecord, Result,
};
use tokio::sync::watch;

pub use handler::{Decision, TransactionStats as Stats};

/// Turns a batch of input records into output records.
///
/// Called with consecutive records of one partition (at most `max.poll.records`, in offset
/// order); partitions are handled in parallel, their calls one at a time. The records pushed to
/// `out` are sent in that order, in the transaction that commits the batch's input offsets. A
/// batch whose transaction fails is handed over again after the rewind, so a handler must not
/// keep effects outside Kafka that a retry would repeat.
///
/// Implemented by closures `FnMut(&[ConsumerRecord], &mut Vec<ProducerRecord>) -> Decision`.
pub trait Handler: Send {
    fn handle(&mut self, batch: &[ConsumerRecord], out: &mut Vec<ProducerRecord>) -> Decision;
}

impl<F> Handler for F
where
    F: FnMut(&[ConsumerRecord], &mut Vec<ProducerRecord>) -> Decision + Send,
{
    fn handle(&mut self, batch: &[ConsumerRecord], out: &mut Vec<ProducerRecord>) -> Decision {
        self(batch, out)
    }
}

/// A latching stop signal for [`Processor::run`]: once triggered, the processor finishes the
/// transaction in progress, leaves the group and returns.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once triggered.
    async fn triggered(&self) {
        let _ = self.0.subscribe().wait_for(|t| *t).await;
    }
}

/// The settings of a [`Processor`].
#[derive(Clone, Debug)]
pub struct ProcessorConfig {
    /// The topics to consume.
    pub input_topics: Vec<String>,
    /// The consumer, with the group id. [`Processor::new`] sets isolation read_committed and
    /// turns auto-commit off, whatever this says: offsets are committed by the transactions.
    pub consumer: ConsumerConfig,
    /// The producer, with this instance's `transactional.id`.
    pub producer: ProducerConfig,
    /// The longest a handled batch waits for its transaction to commit (the runtime's
    /// `commit_interval`; a transaction normally commits as soon as a batch is handled).
    /// Default 200 ms.
    pub poll_timeout: Duration,
}

impl ProcessorConfig {
    /// A processor of `input_topics` in group `group_id`, with `transactional_id` for this
    /// instance (one per instance: a restarted instance reuses it to fence its predecessor).
    /// The group starts from the earliest offsets when it has none committed.
    pub fn new(
        bootstrap: &str,
        group_id: &str,
        transactional_id: &str,
        input_topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            input_topics: input_topics.into_iter().map(Into::into).collect(),
            consumer: ConsumerConfig::new(bootstrap).group_id(group_id).auto_offset_reset(OffsetReset::Earliest),
            producer: ProducerConfig::new(bootstrap).transactional_id(transactional_id),
            poll_timeout: Duration::from_millis(200),
        }
    }
}

/// An exactly-once consume-transform-produce processor: the handler runtime's exactly-once
/// mode ([`Runtime::exactly_once`]) around a [`Handler`].
///
/// ```text
///  partition workers (read_committed, in offset order)      main task (polls between transactions)
///  batch ──► handler ──► outputs + offset after the batch ──► begin ──► send outputs ──► send_offsets ──► commit
///                                                               │ Abort        │ error         │ error
///                                                               ▼              ▼               ▼
///                                          abort_transaction, every partition back to the committed offsets
///                                          (its batches are consumed again); Fenced: stop
/// ```
///
/// Exactly once rests on three things:
///
/// - A batch's input offsets are committed inside the transaction that holds its outputs
///   (`send_offsets_to_transaction`), so outputs and progress are atomic: after any crash the
///   group resumes right after the last committed transaction, and the outputs of the
///   transaction that was open are aborted.
/// - Zombie fencing (KIP-447): every instance has its own `transactional.id`, and the offsets
///   carry the consumer's group generation and member id. An instance that lost its partitions
///   in a rebalance without knowing it yet has its offsets refused by the group coordinator;
///   one whose member has left the group aborts instead of sending them; a restarted instance
///   with the same `transactional.id` fences the old one at `init_transactions` and aborts its
///   open transaction.
/// - The consumer reads read_committed, and the group's committed offsets are fetched as stable
///   (pending transactional offsets are waited for), so a new owner of a partition starts where
///   the last committed transaction ended.
///
/// Each handler call has a transaction of its own (the partitions' batches are committed one
/// after the other, the oldest first). The member rejoins a group only inside a poll, and the runtime polls only between
/// transactions; a revocation commits the handled batches before the partitions go, and a
/// loss drops the lost partitions' batches, so the generation a transaction commits with is
/// never newer than its records.
pub struct Processor {
    runtime: Runtime,
    /// The handler, given to [`Processor::run`].
    handler: Arc<tokio::sync::Mutex<Option<Box<dyn Handler>>>>,
    stats: watch::Receiver<Stats>,
}

impl Processor {
    /// Connects the producer and registers it as the owner of its `transactional.id` (fencing
    /// an older instance and aborting what it left open), then connects the consumer (with
    /// isolation read_committed and auto-commit off, whatever the configuration says). The
    /// consumer subscribes to the input topics in [`Processor::run`].
    ///
    /// Cancel-safe: dropping the future drops what was connected; nothing was consumed.
    pub async fn new(config: ProcessorConfig) -> Result<Self> {
        let ProcessorConfig { input_topics, consumer, producer, poll_timeout } = config;
        if consumer.group_id.is_none() {
            return Err(Error::Config {
                property: "group.id".into(),
                reason: "a processor commits its input offsets for a consumer group".into(),
            });
        }
        if producer.transactional_id.is_none() {
            return Err(Error::Config {
                property: "transactional.id".into(),
                reason: "a processor writes in transactions".into(),
            });
        }
        // A batch is about what one poll returns, and a partition's queue holds one.
        let records = consumer.max_poll_records.max(1);
        let runtime_config =
            RuntimeConfig::new(consumer, input_topics).queue_capacity(records).commit_interval(poll_timeout);
        let handler: Arc<tokio::sync::Mutex<Option<Box<dyn Handler>>>> = Arc::default();
        let slot = handler.clone();
        let batches = move |batch: Vec<ConsumerRecord>| {
            let slot = slot.clone();
            async move {
                let mut handler = slot.lock().await;
                let handler = handler.as_mut().ok_or_else(|| HandlerError::from("the processor is not running"))?;
                let mut out = Vec::new();
                let decision = handler.handle(&batch, &mut out);
                Ok(Outputs { records: out, decision })
            }
        };
        // One handler call per transaction: its Decision is the transaction's.
        let exactly_once = ExactlyOnceConfig::new(producer).batch_size(records).transaction_batches(1);
        let runtime = Runtime::exactly_once(runtime_config, exactly_once, batches).await?;
        let stats = runtime.transactions().expect("the exactly-once mode");
        Ok(Self { runtime, handler, stats })
    }

    /// The counters, updated after every transaction; a receiver can wait for a change.
    pub fn stats(&self) -> watch::Receiver<Stats> {
        self.stats.clone()
    }

    /// The consumer underneath (its assignment, positions, group metadata).
    pub fn consumer(&self) -> &Consumer {
        self.runtime.consumer()
    }

    /// Runs until `shutdown` is triggered (then returns the counters) or a failure that
    /// retrying cannot fix: [`Error::Fenced`] when a newer instance with the same
    /// `transactional.id` took over, an abort that failed, or a consumer error. Either way the
    /// consumer leaves the group and the producer is closed.
    ///
    /// Not cancel-safe: dropping the future instead (a crash) leaves any open transaction to
    /// the next instance with the same `transactional.id`, which aborts it.
    pub async fn run(self, handler: impl Handler + 'static, shutdown: &Shutdown) -> Result<Stats> {
        *self.handler.lock().await = Some(Box::new(handler));
        self.runtime.run_until(shutdown.triggered()).await?;
        let stats = *self.stats.borrow();
        Ok(stats)
    }
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("assignment", &self.runtime.consumer().assignment())
            .field("stats", &*self.stats.borrow())
            .finish()
    }
}
