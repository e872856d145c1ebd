//! The runtime's exactly-once mode: batches of a partition handled in offset order, their
//! output records and input offsets committed together in one Kafka transaction.
//!
//! A partition's worker hands a finished batch (its outputs and the offset after it) to the
//! transaction buffer and takes no other batch until that transaction has ended; the runtime's
//! main task commits the buffer — begin, send the outputs, `send_offsets_to_transaction` with
//! the consumer's group metadata (KIP-447: one producer serves every partition), commit — and
//! nothing polls the consumer meanwhile, so the group generation a transaction commits with is
//! the one its records were fetched in. A revocation commits the buffer inside the rebalance
//! (before the partitions go); a loss drops the lost partitions' batches from it. A failed
//! transaction is aborted and its partitions rewound to the group's committed offsets.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use kafka_wire::client::stream::Stream;
use kafka_wire::client::{OffsetAndMetadata, PartitionStream, ProducerConfig};
use kafka_wire::types::Backoff;
use kafka_wire::{Consumer, ConsumerRecord, Error, Producer, ProducerRecord, TopicPartition};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::lifecycle::{Events, Lifecycle};
use crate::runtime::{lock, take_queued, Mode, Progress, Shared};
use crate::HandlerError;

/// What a batch's transaction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the outputs, then commit them with the batch's input offsets.
    Commit,
    /// Send the outputs, then abort the transaction they are in: none of its outputs becomes
    /// visible to read_committed consumers, and its batches are handled again.
    Abort,
}

/// What handling a batch produced: records to write in the transaction that also commits the
/// batch's input offsets.
#[derive(Debug)]
pub struct Outputs {
    /// Written in this order.
    pub records: Vec<ProducerRecord>,
    /// Commit, or abort on purpose.
    pub decision: Decision,
}

impl Outputs {
    /// `records`, committed with the batch's offsets.
    pub fn commit(records: Vec<ProducerRecord>) -> Self {
        Self { records, decision: Decision::Commit }
    }
}

/// Handles a batch of one partition's records in the exactly-once mode. Implemented by async
/// closures `Fn(Vec<ConsumerRecord>) -> impl Future<Output = Result<Outputs, HandlerError>>`.
///
/// A batch whose transaction does not commit (an abort, a crash, a lost partition) is handed
/// over again, so a handler's effects outside its outputs may repeat.
pub trait BatchHandler: Send + Sync + 'static {
    /// Handles `batch` (consecutive records of one partition, in offset order); an error
    /// retries the batch (see [`crate::RuntimeConfig::retry_backoff`]), its outputs dropped.
    fn handle(&self, batch: Vec<ConsumerRecord>)
        -> Pin<Box<dyn Future<Output = Result<Outputs, HandlerError>> + Send>>;

    /// When `record` may be handled, if not at once (see [`crate::Handler::not_before`]): a
    /// batch ends before a record not due yet, and a batch that would start with one waits.
    fn not_before(&self, record: &ConsumerRecord) -> Option<SystemTime> {
        let _ = record;
        None
    }
}

impl<F, Fut> BatchHandler for F
where
    F: Fn(Vec<ConsumerRecord>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Outputs, HandlerError>> + Send + 'static,
{
    fn handle(
        &self,
        batch: Vec<ConsumerRecord>,
    ) -> Pin<Box<dyn Future<Output = Result<Outputs, HandlerError>> + Send>> {
        Box::pin(self(batch))
    }
}

/// Settings of the exactly-once mode ([`crate::Runtime::exactly_once`]).
#[derive(Clone, Debug)]
pub struct ExactlyOnceConfig {
    /// The transactional producer, with this instance's `transactional.id` (one per instance;
    /// a restarted instance reuses it to fence its predecessor and abort what it left open).
    pub producer: ProducerConfig,
    /// Records per batch at most (what the partition's queue holds, up to this).
    pub batch_size: usize,
    /// Batches in one transaction at most (each of a different partition, the oldest first).
    /// A transaction starts as soon as a batch is handled and none is running, so the batches
    /// handled while one commits make up the next. With 1, each handler call has a transaction
    /// of its own.
    pub transaction_batches: usize,
}

impl ExactlyOnceConfig {
    /// Transactions of `producer` (which needs a `transactional.id`), batches of up to 500
    /// records, up to 8 batches a transaction.
    pub fn new(producer: ProducerConfig) -> Self {
        Self { producer, batch_size: 500, transaction_batches: 8 }
    }

    /// Sets [`ExactlyOnceConfig::batch_size`].
    pub fn batch_size(mut self, records: usize) -> Self {
        self.batch_size = records;
        self
    }

    /// Sets [`ExactlyOnceConfig::transaction_batches`].
    pub fn transaction_batches(mut self, batches: usize) -> Self {
        self.transaction_batches = batches;
        self
    }
}

/// Counters of the exactly-once mode, as of its last finished transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransactionStats {
    /// Transactions committed.
    pub committed: u64,
    /// Transactions aborted, on a handler's [`Decision::Abort`] or after a failure.
    pub aborted: u64,
    /// Input records of the committed transactions.
    pub records_in: u64,
    /// Output records of the committed transactions.
    pub records_out: u64,
}

/// A partition's handled batch, waiting for its transaction.
struct Pending {
    /// Batches are committed in the order they were handled.
    seq: u64,
    next: OffsetAndMetadata,
    inputs: u64,
    outputs: Vec<ProducerRecord>,
    decision: Decision,
    progress: Arc<Progress>,
}

/// The exactly-once mode's state, shared by the main task, the workers and the rebalance
/// listener.
pub(crate) struct Transactions {
    pub(crate) handler: Arc<dyn BatchHandler>,
    pub(crate) producer: Producer,
    config: ExactlyOnceConfig,
    /// Retriable failures of a commit or an abort are retried this long: after it the
    /// coordinator has aborted the transaction anyway (`transaction.timeout.ms`).
    transaction_timeout: Duration,
    /// One transaction at a time (the main task's and a rebalance callback's).
    turn: tokio::sync::Mutex<()>,
    pending: Mutex<BTreeMap<TopicPartition, Pending>>,
    /// The sequence number of the next batch handed to `pending`.
    seq: AtomicU64,
    /// A batch joined the buffer.
    pub(crate) ready: Notify,
    /// The partitions of an aborted transaction: nothing commits until they are rewound.
    rewind: Mutex<Vec<(TopicPartition, Arc<Progress>)>>,
    /// A failure of a rebalance callback's transaction that stops the runtime.
    fatal: Mutex<Option<Error>>,
    /// A transaction failed for good (fenced, or its abort failed): what is left open is not
    /// this instance's to end any more, and nothing more is tried (leaving the group revokes
    /// the partitions, which would otherwise commit again).
    failed: AtomicBool,
    pub(crate) stats: watch::Sender<TransactionStats>,
    events: Events,
}

impl Transactions {
    /// Connects the producer and registers it as its `transactional.id`'s owner (fencing an
    /// older instance and aborting what it left open).
    pub(crate) async fn new(
        config: ExactlyOnceConfig,
        handler: Arc<dyn BatchHandler>,
        events: Events,
    ) -> kafka_wire::Result<Self> {
        if config.producer.transactional_id.is_none() {
            return Err(Error::Config {
                property: "transactional.id".into(),
                reason: "the exactly-once mode writes in transactions: set a transactional id".into(),
            });
        }
        let producer = Producer::new(config.producer.clone()).await?;
        producer.init_transactions().await?;
        Ok(Self {
            handler,
            producer,
            transaction_timeout: config.producer.transaction_timeout,
            config,
            turn: tokio::sync::Mutex::new(()),
            pending: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            ready: Notify::new(),
            rewind: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
            failed: AtomicBool::new(false),
            stats: watch::Sender::new(TransactionStats::default()),
            events,
        })
    }

    pub(crate) fn needs_rewind(&self) -> bool {
        !lock(&self.rewind).is_empty()
    }

    pub(crate) fn take_fatal(&self) -> Option<Error> {
        lock(&self.fatal).take()
    }

    pub(crate) fn set_fatal(&self, e: Error) {
        lock(&self.fatal).get_or_insert(e);
    }

    /// Drops the batches of partitions lost (another member may own them already).
    pub(crate) fn forget(&self, partitions: &[TopicPartition]) {
        lock(&self.pending).retain(|tp, _| !partitions.contains(tp));
    }

    fn push(&self, tp: TopicPartition, progress: Arc<Progress>, done: Finished) {
        lock(&self.pending).insert(
            tp,
            Pending {
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
                next: done.next,
                inputs: done.inputs,
                outputs: done.outputs.records,
                decision: done.outputs.decision,
                progress: progress.clone(),
            },
        );
        progress.awaiting.send_replace(true);
        self.ready.notify_one();
    }

    /// [`Transactions::commit`] from the main task, unless a rebalance callback holds the turn.
    /// Callbacks run inside the consumer's poll, which only the main task drives: one that is
    /// waiting there (the main task went on with another event) resumes only when the main task
    /// polls again, so the main task must not wait for it. It commits every batch anyway.
    pub(crate) async fn commit_unless_busy(&self, consumer: &Consumer) -> kafka_wire::Result<()> {
        match self.turn.try_lock() {
            Ok(turn) => self.commit_turn(consumer, turn).await,
            Err(_) => Ok(()),
        }
    }

    /// Whether a transaction is under way.
    pub(crate) fn busy(&self) -> bool {
        self.turn.try_lock().is_err()
    }

    /// Commits the oldest handled batches (up to `transaction_batches`) in one transaction; the
    /// buffer's others are committed next. Returns an error only when the runtime
    /// must stop: [`Error::Fenced`] (a newer instance with the same `transactional.id` took
    /// over), or an abort that failed. Any other failure aborts the transaction and marks its
    /// partitions for a rewind.
    pub(crate) async fn commit(&self, consumer: &Consumer) -> kafka_wire::Result<()> {
        let turn = self.turn.lock().await;
        self.commit_turn(consumer, turn).await
    }

    async fn commit_turn(&self, consumer: &Consumer, _turn: tokio::sync::MutexGuard<'_, ()>) -> kafka_wire::Result<()> {
        if self.needs_rewind() || self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let outcome = self.commit_oldest(consumer).await;
        if outcome.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        outcome
    }

    async fn commit_oldest(&self, consumer: &Consumer) -> kafka_wire::Result<()> {
        let batches = self.take_oldest();
        if batches.is_empty() {
            return Ok(());
        }
        let outcome = self.transaction(consumer, &batches).await;
        match outcome {
            Ok(true) => {
                self.stats.send_modify(|s| {
                    s.committed += 1;
                    s.records_in += batches.values().map(|b| b.inputs).sum::<u64>();
                    s.records_out += batches.values().map(|b| b.outputs.len() as u64).sum::<u64>();
                });
                for b in batches.values() {
                    b.progress.lock().stats.committed = Some(b.next.offset);
                    b.progress.awaiting.send_replace(false);
                }
                let offsets = batches.iter().map(|(tp, b)| (tp.clone(), b.next.offset)).collect();
                self.events.emit(Lifecycle::TransactionCommitted { offsets });
                if !lock(&self.pending).is_empty() {
                    self.ready.notify_one();
                }
                Ok(())
            }
            Err(e @ Error::Fenced { .. }) => Err(e),
            other => {
                let reason = match other {
                    Err(e) => format!("failed: {e}"),
                    Ok(_) => "the handler decided to abort".to_owned(),
                };
                let partitions = batches.keys().cloned().collect();
                self.events.emit(Lifecycle::TransactionAborted { partitions, reason });
                self.retrying("abort", || self.producer.abort_transaction()).await?;
                self.stats.send_modify(|s| s.aborted += 1);
                lock(&self.rewind).extend(batches.into_iter().map(|(tp, b)| (tp, b.progress)));
                Ok(())
            }
        }
    }

    /// Commits every batch handled (in as many transactions as it takes), unless a transaction
    /// fails: what a revocation or a shutdown does.
    pub(crate) async fn commit_all(&self, consumer: &Consumer) -> kafka_wire::Result<()> {
        while !lock(&self.pending).is_empty() && !self.needs_rewind() && !self.failed.load(Ordering::Acquire) {
            self.commit(consumer).await?;
        }
        Ok(())
    }

    /// Takes up to `transaction_batches` batches from the buffer, the oldest first.
    fn take_oldest(&self) -> BTreeMap<TopicPartition, Pending> {
        let mut pending = lock(&self.pending);
        let limit = self.config.transaction_batches.max(1);
        if pending.len() <= limit {
            return std::mem::take(&mut *pending);
        }
        let mut order: Vec<(u64, TopicPartition)> = pending.iter().map(|(tp, b)| (b.seq, tp.clone())).collect();
        order.sort_unstable();
        order.into_iter().take(limit).filter_map(|(_, tp)| pending.remove_entry(&tp)).collect()
    }

    /// One transaction for `batches`: `Ok(true)` committed, `Ok(false)` a handler decided to
    /// abort (the transaction is still open then).
    async fn transaction(
        &self,
        consumer: &Consumer,
        batches: &BTreeMap<TopicPartition, Pending>,
    ) -> kafka_wire::Result<bool> {
        self.producer.begin_transaction()?;
        for b in batches.values() {
            for record in &b.outputs {
                // The commit fails if any record failed, so the delivery futures are not needed.
                drop(self.producer.send(record.clone()).await?);
            }
        }
        if batches.values().any(|b| b.decision == Decision::Abort) {
            return Ok(false);
        }
        // Fails while the member is between generations (it was removed, or lost its
        // coordinator, and its partitions may have another owner): the transaction is then
        // aborted. The member rejoins only inside a poll, and nothing polls during a
        // transaction, so this is never a generation newer than the batches' records.
        let group = consumer.group_metadata()?;
        let offsets: BTreeMap<TopicPartition, OffsetAndMetadata> =
            batches.iter().map(|(tp, b)| (tp.clone(), b.next.clone())).collect();
        self.producer.send_offsets_to_transaction(&offsets, &group).await?;
        // A commit that failed retriably (its answer was lost, the coordinator moved) may have
        // been applied, and an abort would then be refused: the transaction is still open, so
        // ask for the commit again.
        self.retrying("commit", || self.producer.commit_transaction()).await?;
        Ok(true)
    }

    /// Retries `op` while it fails retriably, until the transaction timeout has passed.
    async fn retrying<F, Fut>(&self, what: &str, mut op: F) -> kafka_wire::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = kafka_wire::Result<()>>,
    {
        let deadline = tokio::time::Instant::now() + self.transaction_timeout;
        loop {
            match op().await {
                Err(e) if e.is_retriable() && tokio::time::Instant::now() + RETRY_BACKOFF < deadline => {
                    tracing::warn!(error = %e, "handler runtime: {what} of the transaction failed; retrying");
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                outcome => return outcome,
            }
        }
    }
}

/// The pause between retries of a commit or an abort that failed retriably (the client has
/// already retried within the call).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A worker stopped for a rewind: its partition's stream, and the first offset it ever took
/// (where the partition started for this member, if the group has no offset committed).
pub(crate) struct Rewound {
    tp: TopicPartition,
    progress: Arc<Progress>,
    records: PartitionStream,
    first_taken: Option<i64>,
}

/// Stops the workers of the partitions whose batches were in an aborted transaction (they wait
/// for it to end, so they hold no other batch handled) and moves them back to the group's
/// committed offsets (stable: the aborted transaction's offsets are gone); a partition with
/// none goes back to the first record this member took of it (`auto.offset.reset` is not asked
/// again: for `latest` it would skip what arrived meanwhile). Then starts their workers again.
/// Runs on the main task, so no records reach the partitions' queues meanwhile: what they hold
/// is from before the seek, and is dropped. The other partitions go on.
pub(crate) async fn rewind(
    shared: &Arc<Shared>,
    consumer: &Consumer,
    workers: &mut JoinSet<Option<Rewound>>,
) -> kafka_wire::Result<()> {
    let tx = shared.transactions.as_ref().expect("the exactly-once mode");
    let marked = std::mem::take(&mut *lock(&tx.rewind));
    // Those revoked or lost meanwhile have no worker any more: their next owner starts from
    // the committed offsets anyway.
    // Those being drained by a revocation (a callback waiting inside the poll) are going too.
    let targets: Vec<Arc<Progress>> = {
        let map = lock(&shared.partitions);
        marked
            .into_iter()
            .filter(|(tp, p)| map.get(tp).is_some_and(|q| Arc::ptr_eq(p, q)) && p.set_mode(Mode::Rewind))
            .map(|(_, p)| p)
            .collect()
    };
    let mut rewound: Vec<Rewound> = Vec::new();
    while rewound.len() < targets.len() {
        match workers.join_next().await {
            None => break,
            Some(Ok(Some(r))) => rewound.push(r),
            Some(Ok(None)) => {}
            Some(Err(e)) if e.is_panic() => return Err(panicked(&e)),
            Some(Err(_)) => {}
        }
    }
    let partitions: Vec<TopicPartition> = rewound.iter().map(|r| r.tp.clone()).collect();
    tx.forget(&partitions);
    let committed = if partitions.is_empty() { BTreeMap::new() } else { consumer.committed(&partitions).await? };
    for mut r in rewound {
        let target = committed.get(&r.tp).cloned().flatten().map(|o| o.offset).or(r.first_taken);
        // A partition revoked meanwhile cannot be moved; its stream has ended.
        if let Some(offset) = target {
            if consumer.seek(&r.tp, offset).is_err() {
                continue;
            }
        }
        while let Poll::Ready(Some(_)) = Pin::new(&mut r.records).poll_next(&mut Context::from_waker(Waker::noop())) {}
        r.progress.restart();
        tracing::debug!(tp = %r.tp, ?target, "handler runtime: partition rewound");
        workers.spawn(batch_worker(r.tp, r.records, r.progress, shared.clone(), r.first_taken));
    }
    Ok(())
}

pub(crate) fn panicked(e: &tokio::task::JoinError) -> Error {
    Error::DriverFailed { driver: "handler runtime", reason: format!("a partition worker panicked: {e}") }
}

/// A batch handled: its outputs, and what its transaction commits.
struct Finished {
    outputs: Outputs,
    next: OffsetAndMetadata,
    inputs: u64,
}

/// A batch running: its handler's future, with its retries.
type RunningBatch = Pin<Box<dyn Future<Output = Finished> + Send>>;

/// What woke a batch worker.
enum Event {
    Finished(Finished),
    Taken(Vec<ConsumerRecord>),
    Ended,
    Look,
}

/// Handles the records of one partition in batches, in offset order, one batch per
/// transaction: after handing a batch to the transaction buffer it waits for that
/// transaction to end. Returns its stream when stopped for a rewind.
pub(crate) async fn batch_worker(
    tp: TopicPartition,
    mut records: PartitionStream,
    progress: Arc<Progress>,
    shared: Arc<Shared>,
    mut first_taken: Option<i64>,
) -> Option<Rewound> {
    let tx = shared.transactions.as_ref().expect("the exactly-once mode");
    let config = shared.config.clone();
    let handler = tx.handler.clone();
    let capacity = config.queue_capacity.max(1);
    let batch_size = tx.config.batch_size.max(1);
    let mut mode = progress.mode.subscribe();
    let mut awaiting = progress.awaiting.subscribe();
    let mut queue: std::collections::VecDeque<ConsumerRecord> = std::collections::VecDeque::new();
    // The batch running (its length), polled by this task itself.
    let mut running: Option<(usize, RunningBatch)> = None;
    let mut open = true;
    let current = loop {
        let current = *mode.borrow_and_update();
        if matches!(current, Mode::Abort | Mode::Rewind) {
            // The running batch is cancelled; its records go to the next worker or owner.
            drop(running.take());
            break current;
        }
        let waiting = *awaiting.borrow_and_update();
        // The first queued record is not due until then.
        let mut due = None;
        if current == Mode::Run && open && running.is_none() && !waiting {
            let now = SystemTime::now();
            let mut batch = Vec::new();
            while batch.len() < batch_size {
                let Some(record) = queue.front() else { break };
                let wait = handler.not_before(record).and_then(|t| t.duration_since(now).ok());
                if let Some(wait) = wait.filter(|w| !w.is_zero()) {
                    if batch.is_empty() {
                        due = Some(tokio::time::Instant::now() + wait);
                    }
                    break;
                }
                batch.extend(queue.pop_front());
            }
            if !batch.is_empty() {
                let len = batch.len();
                running = Some((len, Box::pin(handle_batch(batch, handler.clone(), progress.clone(), config.clone()))));
            }
        }
        {
            let mut st = progress.lock();
            st.stats.in_flight = running.as_ref().map_or(0, |(n, _)| *n);
            st.stats.queued = queue.len();
        }
        if running.is_none() && (current != Mode::Run || !open) {
            break current;
        }
        let room = if current == Mode::Run && open { capacity.saturating_sub(queue.len()) } else { 0 };
        let mut sleep = due.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let changed = mode.changed();
        let committed = awaiting.changed();
        tokio::pin!(changed, committed);
        let event = std::future::poll_fn(|cx| {
            if let Some((_, batch)) = running.as_mut() {
                if let Poll::Ready(done) = batch.as_mut().poll(cx) {
                    running = None;
                    return Poll::Ready(Event::Finished(done));
                }
            }
            match take_queued(&mut records, room, cx) {
                Poll::Ready(Some(taken)) => return Poll::Ready(Event::Taken(taken)),
                Poll::Ready(None) => return Poll::Ready(Event::Ended),
                Poll::Pending => {}
            }
            if changed.as_mut().poll(cx).is_ready()
                || committed.as_mut().poll(cx).is_ready()
                || sleep.as_mut().is_some_and(|s| s.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(Event::Look);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Finished(done) => tx.push(tp.clone(), progress.clone(), done),
            Event::Taken(taken) => {
                first_taken.get_or_insert(taken[0].offset);
                queue.extend(taken);
            }
            Event::Ended => open = false,
            Event::Look => {}
        }
    };
    tracing::debug!(%tp, "handler runtime: partition worker stopped");
    if current == Mode::Rewind {
        if first_taken.is_none() {
            // Nothing taken yet: the partition's first record, if one is queued, is where it
            // starts.
            if let Poll::Ready(Some(record)) = Pin::new(&mut records).poll_next(&mut Context::from_waker(Waker::noop()))
            {
                first_taken = Some(record.offset);
            }
        }
        return Some(Rewound { tp, progress, records, first_taken });
    }
    progress.stopped.send_replace(true);
    None
}

/// Runs the handler on `batch` until it succeeds, backing off between failures.
async fn handle_batch(
    batch: Vec<ConsumerRecord>,
    handler: Arc<dyn BatchHandler>,
    progress: Arc<Progress>,
    config: Arc<crate::RuntimeConfig>,
) -> Finished {
    let last = batch.last().expect("a batch has records");
    let next = OffsetAndMetadata {
        offset: last.offset + 1,
        leader_epoch: (last.leader_epoch >= 0).then_some(last.leader_epoch),
        metadata: None,
    };
    let (first, inputs) = (batch[0].offset, batch.len() as u64);
    let mut backoff = Backoff::new(config.retry_backoff, config.retry_backoff_max);
    loop {
        match handler.handle(batch.clone()).await {
            Ok(outputs) => {
                let mut st = progress.lock();
                st.failing.remove(&first);
                st.stats.handled += inputs;
                return Finished { outputs, next, inputs };
            }
            Err(e) => {
                let delay = backoff.next_delay();
                {
                    let mut st = progress.lock();
                    st.stats.failed += 1;
                    st.failing.entry(first).or_insert_with(SystemTime::now);
                }
                tracing::warn!(
                    topic = %last.topic, partition = last.partition, offset = first, records = inputs,
                    attempt = backoff.attempts(), error = %e, ?delay,
                    "handler failed; the batch is retried"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}
