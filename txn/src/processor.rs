//! The exactly-once consume-transform-produce loop, [`Processor`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_wire::client::{
    Consumer, ConsumerConfig, ConsumerRecord, Error, IsolationLevel, OffsetAndMetadata, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, RebalanceListener, Result,
};
use kafka_wire::TopicPartition;
use tokio::sync::watch;

use crate::transactional_producer;

/// What the handler decided for the transaction of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the output records, then commit them together with the batch's input offsets.
    Commit,
    /// Send the output records, then abort the transaction (records not written yet are
    /// dropped): none of them becomes visible to read_committed consumers, and the batch is
    /// consumed (and handed to the handler) again.
    Abort,
}

/// Turns a batch of input records into output records.
///
/// Called once per transaction with the records of one `poll` (at most `max.poll.records`,
/// from any of the assigned partitions, in order per partition); the records pushed to `out`
/// are sent in that order. A batch whose transaction fails is handed over again after the
/// rewind, so a handler must not keep effects outside Kafka that a retry would repeat.
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

/// Counters of a processor, as of its last finished transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Transactions committed.
    pub committed: u64,
    /// Transactions aborted, on the handler's [`Decision::Abort`] or after a failure.
    pub aborted: u64,
    /// Input records of the committed transactions.
    pub records_in: u64,
    /// Output records of the committed transactions.
    pub records_out: u64,
}

/// A latching stop signal for [`Processor::run`]: once triggered, the processor finishes the
/// transaction in progress, leaves the group and returns.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::Acquire)
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
    /// How long one `poll` waits for records; also how quickly a [`Shutdown`] is noticed when
    /// no records arrive. Default 200 ms.
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

/// An exactly-once consume-transform-produce loop.
///
/// ```text
///        ┌────────────────────────────────────────────────────────────────────────┐
///        ▼                                                                        │
///  poll (read_committed) ──► begin ──► handler ──► send outputs ──► send_offsets ──► commit
///  (losses and revocations               │                 │              │
///   reach the loop only here)            │ Abort           │ error        │ error
///                                        ▼                 ▼              ▼
///                                  abort_transaction, seek back to the committed offsets
///                                  (the batch is consumed again); Fenced: stop
/// ```
///
/// Exactly once rests on three things:
///
/// - The batch's input offsets are committed inside the transaction that holds its outputs
///   (`send_offsets_to_transaction`), so outputs and progress are atomic: after any crash the
///   group resumes right after the last committed transaction, and the outputs of the
///   transaction that was open are aborted.
/// - Zombie fencing (KIP-447): every instance has its own `transactional.id`, and the offsets
///   carry the consumer's group generation and member id. An instance that lost its partitions
///   in a rebalance without knowing it yet has its offsets refused by the group coordinator;
///   one whose member has left the group (it stalled past `max.poll.interval.ms`) aborts
///   instead of sending them; a restarted instance with the same `transactional.id` fences the
///   old one at `init_transactions` and aborts its open transaction.
/// - The consumer reads read_committed, and the group's committed offsets are fetched as stable
///   (pending transactional offsets are waited for), so a new owner of a partition starts where
///   the last committed transaction ended.
///
/// The group can take partitions away while a transaction is open: the member's lease lapses
/// or its coordinator fails between two polls. The consumer handles that in two halves. At
/// once, on its driver task, the member gives up its generation: `group_metadata` refuses from
/// then on, so the open transaction cannot send its offsets and is aborted and rewound (had it
/// sent them before, with the old generation, a coordinator that moved the partitions meanwhile
/// refuses them). The rest waits for the next `poll`: the consumer does not rejoin, fetch the
/// new generation's offsets or move positions until `poll` has run the loss callbacks, and
/// the loop polls only with no transaction open. So the generation a transaction commits with
/// is never newer than its records, and a batch is never delivered again while its transaction
/// can still commit. The rebalance listener that aborts an open transaction on revocation is a
/// safeguard for that invariant, not a path the loop relies on.
pub struct Processor {
    consumer: Consumer,
    producer: Producer,
    poll_timeout: Duration,
    /// Retriable failures of a commit or an abort are retried this long: after it the
    /// coordinator has aborted the transaction anyway (`transaction.timeout.ms`).
    transaction_timeout: Duration,
    /// A transaction is open (shared with the rebalance listener).
    open: Arc<AtomicBool>,
    stats: watch::Sender<Stats>,
}

impl Processor {
    /// Connects the producer and registers it as the owner of its `transactional.id` (fencing
    /// an older instance and aborting what it left open), then connects the consumer and
    /// subscribes to the input topics.
    pub async fn new(config: ProcessorConfig) -> Result<Self> {
        let ProcessorConfig { input_topics, mut consumer, producer, poll_timeout } = config;
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
        consumer.isolation_level = IsolationLevel::ReadCommitted;
        consumer.enable_auto_commit = false;
        let transaction_timeout = producer.transaction_timeout;
        // The producer first: the group may hand this instance partitions only once the
        // transaction of its predecessor is aborted, and stable offsets are then final.
        let producer = transactional_producer(producer).await?;
        let consumer = Consumer::new(consumer).await?;
        let open = Arc::new(AtomicBool::new(false));
        consumer.set_rebalance_listener(AbortOnRevocation { producer: producer.clone(), open: open.clone() });
        consumer.subscribe(input_topics)?;
        Ok(Self {
            consumer,
            producer,
            poll_timeout,
            transaction_timeout,
            open,
            stats: watch::Sender::new(Stats::default()),
        })
    }

    /// The counters, updated after every transaction; a receiver can wait for a change.
    pub fn stats(&self) -> watch::Receiver<Stats> {
        self.stats.subscribe()
    }

    /// The consumer underneath (its assignment, positions, group metadata).
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// Runs the loop until `shutdown` is triggered (then returns the counters) or a failure
    /// that retrying cannot fix: [`Error::Fenced`] when a newer instance with the same
    /// `transactional.id` took over, an abort that failed, or a consumer error. Either way the
    /// consumer leaves the group and the producer is closed.
    ///
    /// Dropping the future instead (a crash) leaves any open transaction to the next instance
    /// with the same `transactional.id`, which aborts it.
    pub async fn run(self, mut handler: impl Handler, shutdown: &Shutdown) -> Result<Stats> {
        let outcome = self.run_loop(&mut handler, shutdown).await;
        // A transaction left open here (fenced, or its abort failed) is not this instance's to
        // end any more; leaving the group must not try.
        self.open.store(false, Ordering::Release);
        let closed = self.consumer.close().await;
        let closed_producer = self.producer.close().await;
        outcome?;
        closed?;
        closed_producer?;
        Ok(*self.stats.borrow())
    }

    async fn run_loop(&self, handler: &mut impl Handler, shutdown: &Shutdown) -> Result<()> {
        while !shutdown.is_triggered() {
            // No transaction is open here; a loss or revocation is delivered (and the member
            // rejoins) only inside poll.
            let batch = self.consumer.poll(self.poll_timeout).await?;
            if batch.is_empty() {
                continue;
            }
            match self.transaction(handler, &batch).await {
                Ok(Some(records_out)) => self.stats.send_modify(|s| {
                    s.committed += 1;
                    s.records_in += batch.len() as u64;
                    s.records_out += records_out;
                }),
                Ok(None) => self.abandon(&batch).await?,
                Err(e @ Error::Fenced { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "transaction failed; aborting it and consuming the batch again");
                    self.abandon(&batch).await?;
                }
            }
        }
        Ok(())
    }

    /// One transaction for `batch`: the number of records committed, or `None` when the handler
    /// decided to abort (the transaction is still open then).
    async fn transaction(&self, handler: &mut impl Handler, batch: &[ConsumerRecord]) -> Result<Option<u64>> {
        self.producer.begin_transaction()?;
        self.open.store(true, Ordering::Release);
        let mut out = Vec::new();
        let decision = handler.handle(batch, &mut out);
        let records_out = out.len() as u64;
        for record in out {
            // The commit fails if any record failed, so the delivery futures are not needed.
            drop(self.producer.send(record).await?);
        }
        if decision == Decision::Abort {
            return Ok(None);
        }
        // Fails while the member is between generations (it outlived max.poll.interval.ms, was
        // removed, or lost its coordinator, and its partitions may have another owner): the
        // transaction is then aborted. The member stays out of any newer generation until the
        // next poll, so this never returns a generation newer than the batch's.
        let group = self.consumer.group_metadata()?;
        self.producer.send_offsets_to_transaction(&next_offsets(batch), &group).await?;
        // A commit that failed retriably (its answer was lost, the coordinator moved) may have
        // been applied, and an abort would then be refused: the transaction is still open, so
        // ask for the commit again.
        self.retrying("commit", || self.producer.commit_transaction()).await?;
        self.open.store(false, Ordering::Release);
        Ok(Some(records_out))
    }

    /// Aborts the open transaction and moves the batch's partitions back to the group's
    /// committed offsets, so that the batch is consumed again.
    async fn abandon(&self, batch: &[ConsumerRecord]) -> Result<()> {
        self.retrying("abort", || self.producer.abort_transaction()).await?;
        self.open.store(false, Ordering::Release);
        self.stats.send_modify(|s| s.aborted += 1);
        self.rewind(batch).await
    }

    /// Seeks every partition of `batch` to its committed offset; one with no offset committed
    /// yet goes back to the batch's first record of it. (Then every record handed out before
    /// the batch went into an aborted transaction, rewound the same way: the batch starts where
    /// the partition started, and `auto.offset.reset` is not asked again, which for `latest`
    /// would skip what arrived meanwhile.) Only the batch moved positions since the last commit,
    /// so the other partitions are left alone, and their prefetched records with them.
    async fn rewind(&self, batch: &[ConsumerRecord]) -> Result<()> {
        let mut first: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for r in batch {
            first.entry(r.topic_partition()).or_insert(r.offset);
        }
        let assigned = self.consumer.assignment();
        first.retain(|tp, _| assigned.contains(tp));
        let partitions: Vec<TopicPartition> = first.keys().cloned().collect();
        if partitions.is_empty() {
            return Ok(());
        }
        // Stable offsets: the coordinator answers once the abort has cleared the pending ones.
        let committed = self.consumer.committed(&partitions).await?;
        for (tp, start) in first {
            let offset = committed.get(&tp).cloned().flatten().map_or(start, |o| o.offset);
            self.consumer.seek(&tp, offset)?;
        }
        Ok(())
    }

    /// Retries `op` while it fails retriably, until the transaction timeout has passed.
    async fn retrying<F, Fut>(&self, what: &str, mut op: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let deadline = tokio::time::Instant::now() + self.transaction_timeout;
        loop {
            match op().await {
                Err(e) if e.is_retriable() && tokio::time::Instant::now() + RETRY_BACKOFF < deadline => {
                    tracing::warn!(error = %e, "{what} of the transaction failed; retrying");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                outcome => return outcome,
            }
        }
    }
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("assignment", &self.consumer.assignment())
            .field("producer_id", &self.producer.producer_id())
            .field("stats", &*self.stats.borrow())
            .finish()
    }
}

/// The offsets to commit for `batch`: after the last record of each partition, with that
/// record's leader epoch (KIP-320).
fn next_offsets(batch: &[ConsumerRecord]) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
    batch
        .iter()
        .map(|r| {
            let offset = OffsetAndMetadata {
                offset: r.offset + 1,
                leader_epoch: (r.leader_epoch >= 0).then_some(r.leader_epoch),
                metadata: None,
            };
            (r.topic_partition(), offset)
        })
        .collect()
}

/// Aborts a transaction that is open when partitions are revoked or lost. The callbacks run
/// inside `poll` and the loop never polls with a transaction open, so this does not happen; if
/// it did, committing records of partitions another member now owns would break exactly-once.
struct AbortOnRevocation {
    producer: Producer,
    open: Arc<AtomicBool>,
}

impl AbortOnRevocation {
    async fn abort_open(&self) {
        if self.open.swap(false, Ordering::AcqRel) {
            tracing::error!("partitions given up with a transaction open; aborting it");
            if let Err(e) = self.producer.abort_transaction().await {
                tracing::warn!(error = %e, "aborting the open transaction failed");
            }
        }
    }
}

impl RebalanceListener for AbortOnRevocation {
    fn on_partitions_revoked<'a>(
        &'a self,
        _consumer: &'a Consumer,
        _partitions: &'a [TopicPartition],
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.abort_open())
    }

    fn on_partitions_lost<'a>(
        &'a self,
        _consumer: &'a Consumer,
        _partitions: &'a [TopicPartition],
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.abort_open())
    }
}

/// The pause between retries of a commit or an abort that failed retriably (the client has
/// already retried within the call).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use kafka_wire::TimestampType;

    use super::*;

    fn record(topic: &str, partition: i32, offset: i64, leader_epoch: i32) -> ConsumerRecord {
        ConsumerRecord {
            topic: topic.into(),
            partition,
            offset,
            timestamp: 0,
            timestamp_type: TimestampType::CreateTime,
            key: None,
            value: None,
            headers: Default::default(),
            leader_epoch,
        }
    }

    #[test]
    fn offsets_follow_the_last_record_of_each_partition() {
        let batch = [record("a", 0, 10, 3), record("b", 1, 7, -1), record("a", 0, 11, 4), record("a", 1, 0, 4)];
        let offsets = next_offsets(&batch);
        let got: Vec<(String, i32, i64, Option<i32>)> =
            offsets.iter().map(|(tp, o)| (tp.topic.to_string(), tp.partition, o.offset, o.leader_epoch)).collect();
        assert_eq!(got, [("a".into(), 0, 12, Some(4)), ("a".into(), 1, 1, Some(4)), ("b".into(), 1, 8, None)]);
    }
}
