//! [`Runtime`]: a consumer group member that runs a handler per record, one worker per
//! partition, and commits what was handled.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use kafka_wire::client::stream::{next, Stream};
use kafka_wire::client::{OffsetAndMetadata, PartitionStream, PartitionStreams, RebalanceListener};
use kafka_wire::types::Backoff;
use kafka_wire::{Consumer, ConsumerConfig, ConsumerRecord, Error, ErrorKind, TopicPartition};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use crate::exactly_once::{batch_worker, panicked, rewind, BatchHandler, ExactlyOnceConfig, Rewound, Transactions};
use crate::lifecycle::{Events, Lifecycle};
use crate::schedule::{CommitPoint, KeyScheduler};
use crate::TransactionStats;

/// What a handler reports when it fails; the record is then retried (see [`Runtime`]).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Handles one record. Implemented by async closures
/// `Fn(ConsumerRecord) -> impl Future<Output = Result<(), HandlerError>>`.
///
/// A record may be handed over more than once: after a failure (retried in place), and after a
/// crash or a lost partition (handled again by the partition's next owner from the last
/// commit). Handlers whose effects must happen once make them idempotent.
pub trait Handler: Send + Sync + 'static {
    /// Handles `record`; an error retries it.
    fn handle(&self, record: ConsumerRecord) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

    /// When `record` may be handled, if not at once (a record of a delayed retry tier). The
    /// worker holds it, without a running task, until then; records behind it wait, so its
    /// partition's queue fills up and the partition is paused in the consumer meanwhile.
    fn not_before(&self, record: &ConsumerRecord) -> Option<SystemTime> {
        let _ = record;
        None
    }
}

impl<F, Fut> Handler for F
where
    F: Fn(ConsumerRecord) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle(&self, record: ConsumerRecord) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>> {
        Box::pin(self(record))
    }
}

/// Settings of a [`Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The consumer's settings; it needs a `group.id`. Auto-commit is turned off: the runtime
    /// commits what was handled.
    pub consumer: ConsumerConfig,
    /// The topics subscribed.
    pub topics: Vec<String>,
    /// Records queued per partition, fetched and not started; a full queue pauses its
    /// partition (the others keep flowing and the member keeps polling).
    pub queue_capacity: usize,
    /// Keys of one partition handled at once (each key in offset order); 1 handles the
    /// partition strictly in offset order.
    pub key_parallelism: usize,
    /// How often handled offsets are committed (also on revocation and at shutdown).
    pub commit_interval: Duration,
    /// How long running records may take to finish when their partition is revoked or the
    /// runtime stops; past it they are cancelled and not committed.
    pub drain_timeout: Duration,
    /// First delay before a failed record is retried; doubled per failure, with jitter.
    pub retry_backoff: Duration,
    /// Longest delay between retries of a failed record.
    pub retry_backoff_max: Duration,
}

impl RuntimeConfig {
    /// A runtime over `consumer` (with its `group.id`) for `topics`, with defaults elsewhere: a
    /// queue of 1000 records per partition, one key at a time, a commit every second, 30 s to
    /// drain, retries from 100 ms up to 10 s.
    pub fn new(consumer: ConsumerConfig, topics: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            consumer,
            topics: topics.into_iter().map(Into::into).collect(),
            queue_capacity: 1000,
            key_parallelism: 1,
            commit_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(10),
        }
    }

    /// Sets [`RuntimeConfig::queue_capacity`].
    pub fn queue_capacity(mut self, records: usize) -> Self {
        self.queue_capacity = records;
        self
    }

    /// Sets [`RuntimeConfig::key_parallelism`].
    pub fn key_parallelism(mut self, keys: usize) -> Self {
        self.key_parallelism = keys;
        self
    }

    /// Sets [`RuntimeConfig::commit_interval`].
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Sets [`RuntimeConfig::drain_timeout`].
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets [`RuntimeConfig::retry_backoff`] and [`RuntimeConfig::retry_backoff_max`].
    pub fn retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.retry_backoff = first;
        self.retry_backoff_max = max;
        self
    }
}

/// Counters of one partition since this member was assigned it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionStats {
    /// Records handled.
    pub handled: u64,
    /// Failed attempts (each retry that failed counts).
    pub failed: u64,
    /// Records running now.
    pub in_flight: usize,
    /// Records taken from the partition and not started.
    pub queued: usize,
    /// Since when the oldest record that is failing has been failing, if one is.
    pub blocked_since: Option<SystemTime>,
    /// The last committed offset, if any was committed by this member.
    pub committed: Option<i64>,
    /// Records between the position and the high watermark, if known.
    pub lag: Option<i64>,
}

/// A consumer group member that runs a [`Handler`] on every record of its partitions (or, in
/// the exactly-once mode, a [`BatchHandler`] on batches of them).
///
/// - **Order**: one worker per assigned partition; with `key_parallelism` 1 it handles the
///   partition in offset order, with more, keys in parallel and each key in order, with no
///   batch barrier (a slow key holds back only itself).
/// - **Backpressure**: a partition whose queue is full is paused in the consumer while polling
///   goes on, so a slow handler never makes the member leave the group.
/// - **At-least-once**: the offset committed for a partition is the lowest one not handled
///   yet, every `commit_interval`, when the partition is revoked (after its running records
///   finish, within `drain_timeout`) and at shutdown. A lost partition is not committed.
/// - **Failures**: a record whose handler fails is retried in place with exponential backoff
///   and jitter; only its key (its partition, with `key_parallelism` 1) waits. Nothing is
///   skipped: richer policies (retry topics, a dead-letter queue) are the `retry` crate's.
/// - **Exactly-once** ([`Runtime::exactly_once`]): instead, each partition is handled in
///   batches, in offset order; a batch's output records and the offset after it are committed
///   in one Kafka transaction (with batches of other partitions), and nothing is committed
///   outside transactions. A transaction starts as soon as a batch is handled and none is
///   running (with up to [`ExactlyOnceConfig::transaction_batches`] of the oldest handled
///   batches), when partitions are revoked (after their batches finish, before the partitions
///   go) and at shutdown; `commit_interval` is then only a fallback. A failed or aborted transaction rewinds its partitions
///   to the group's committed offsets; [`Error::Fenced`] (a newer instance with the same
///   `transactional.id`) stops the runtime.
#[derive(Clone)]
pub struct Runtime {
    consumer: Consumer,
    shared: Arc<Shared>,
}

/// What the runtime's tasks and its rebalance listener share. It holds no consumer handle: the
/// listener lives inside the consumer, and a handle there would keep the consumer alive after
/// the runtime is gone.
pub(crate) struct Shared {
    pub(crate) config: Arc<RuntimeConfig>,
    /// The at-least-once mode's handler.
    handler: Option<Arc<dyn Handler>>,
    /// The exactly-once mode's handler, producer and transaction buffer.
    pub(crate) transactions: Option<Transactions>,
    pub(crate) partitions: Mutex<HashMap<TopicPartition, Arc<Progress>>>,
    pub(crate) events: Events,
}

impl Runtime {
    /// Connects the consumer. Nothing is consumed until [`Runtime::run_until`].
    pub async fn new(config: RuntimeConfig, handler: impl Handler) -> kafka_wire::Result<Self> {
        if config.consumer.group_id.is_none() {
            return Err(Error::Config {
                property: "group.id".into(),
                reason: "the handler runtime runs a consumer group member: set a group id".into(),
            });
        }
        let consumer = Consumer::new(config.consumer.clone().enable_auto_commit(false)).await?;
        let shared = Shared {
            config: Arc::new(config),
            handler: Some(Arc::new(handler)),
            transactions: None,
            partitions: Mutex::new(HashMap::new()),
            events: Events::default(),
        };
        Ok(Self { consumer, shared: Arc::new(shared) })
    }

    /// The exactly-once mode: connects the transactional producer and registers it as its
    /// `transactional.id`'s owner (fencing an older instance, whose open transaction is
    /// aborted), then the consumer, with isolation read_committed (whatever `config` says).
    /// Each partition's records are handed to `handler` in batches, in offset order; the
    /// partitions run in parallel, one producer serving them all (KIP-447). Nothing is
    /// consumed until [`Runtime::run_until`].
    ///
    /// `key_parallelism` must be 1: a batch is consecutive records of its partition.
    ///
    /// Cancel-safe: dropping the future drops what was connected; nothing was consumed (the
    /// `transactional.id` may already be registered, which fences its previous owner).
    pub async fn exactly_once(
        config: RuntimeConfig,
        exactly_once: ExactlyOnceConfig,
        handler: impl BatchHandler,
    ) -> kafka_wire::Result<Self> {
        if config.consumer.group_id.is_none() {
            return Err(Error::Config {
                property: "group.id".into(),
                reason: "the exactly-once mode commits input offsets for a consumer group: set a group id".into(),
            });
        }
        if config.key_parallelism > 1 {
            return Err(Error::Config {
                property: "key_parallelism".into(),
                reason: "the exactly-once mode handles a partition in batches, in offset order: set it to 1".into(),
            });
        }
        // The producer first: the group may hand this instance partitions only once the
        // transaction of its predecessor is aborted, and the stable offsets are then final.
        let events = Events::default();
        let transactions = Transactions::new(exactly_once, Arc::new(handler), events.clone()).await?;
        let consumer_config = config
            .consumer
            .clone()
            .enable_auto_commit(false)
            .isolation_level(kafka_wire::client::IsolationLevel::ReadCommitted);
        let consumer = Consumer::new(consumer_config).await?;
        let shared = Shared {
            config: Arc::new(config),
            handler: None,
            transactions: Some(transactions),
            partitions: Mutex::new(HashMap::new()),
            events,
        };
        Ok(Self { consumer, shared: Arc::new(shared) })
    }

    /// The exactly-once mode's counters (a receiver can wait for a change); `None` in the
    /// at-least-once mode.
    pub fn transactions(&self) -> Option<watch::Receiver<TransactionStats>> {
        self.shared.transactions.as_ref().map(|t| t.stats.subscribe())
    }

    /// The runtime's lifecycle from now on: assignments, revocations (drain, then commit),
    /// losses, commits, failed records, transactions, the stop. A receiver that falls behind by
    /// more than 1024 events gets `Lagged` with how many it missed. The same events go to
    /// `tracing` (target `handler::lifecycle`).
    pub fn events(&self) -> broadcast::Receiver<Lifecycle> {
        self.shared.events.subscribe()
    }

    /// The member's consumer (for its group metadata, positions or lag).
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// Counters of the partitions assigned now.
    pub fn stats(&self) -> BTreeMap<TopicPartition, PartitionStats> {
        let partitions: Vec<(TopicPartition, Arc<Progress>)> =
            lock(&self.shared.partitions).iter().map(|(tp, p)| (tp.clone(), p.clone())).collect();
        partitions
            .into_iter()
            .map(|(tp, p)| {
                let mut stats = p.stats();
                stats.lag = self.consumer.lag(&tp);
                (tp, stats)
            })
            .collect()
    }

    /// Subscribes and handles records until `shutdown` completes; then drains the running
    /// records (within `drain_timeout`), commits, and leaves the group. Returns an error only
    /// if the consumer fails for good (a fatal broker error, misuse, the consumer closed) or,
    /// in the exactly-once mode, the producer was fenced ([`Error::Fenced`]) or could not
    /// abort a transaction.
    ///
    /// Not cancel-safe: dropping the future stops the workers without a final commit (what
    /// was committed before stays; the rest is handled again by the partitions' next owners).
    /// In the exactly-once mode a transaction left open then is aborted by the next instance
    /// with the same `transactional.id` (or by its coordinator after `transaction.timeout.ms`).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> kafka_wire::Result<()> {
        let Self { consumer, shared } = self;
        consumer.subscribe(shared.config.topics.iter().cloned())?;
        let listener = DrainOnRevoke { shared: shared.clone() };
        let mut partitions = PartitionStreams::with_listener(consumer.clone(), shared.config.queue_capacity, listener);
        let mut workers: JoinSet<Option<Rewound>> = JoinSet::new();
        let mut commits = tokio::time::interval(shared.config.commit_interval);
        commits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let transactions = shared.transactions.as_ref();
        tokio::pin!(shutdown);
        let outcome = loop {
            if let Some(tx) = transactions {
                if let Some(e) = tx.take_fatal() {
                    break Err(e);
                }
                if tx.needs_rewind() {
                    if let Err(e) = rewind(&shared, &consumer, &mut workers).await {
                        break Err(e);
                    }
                }
            }
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                item = next(&mut partitions) => match item {
                    Some(Ok((tp, records))) => {
                        let progress = Arc::new(Progress::new(shared.events.clone()));
                        lock(&shared.partitions).insert(tp.clone(), progress.clone());
                        shared.events.emit(Lifecycle::Assigned { partition: tp.clone() });
                        match &shared.handler {
                            Some(handler) => {
                                let run = worker(tp, records, progress, handler.clone(), shared.config.clone());
                                workers.spawn(async move {
                                    run.await;
                                    None
                                });
                            }
                            None => drop(workers.spawn(batch_worker(tp, records, progress, shared.clone(), None))),
                        }
                    }
                    Some(Err(e)) if is_fatal(&e) => break Err(e),
                    Some(Err(e)) => tracing::warn!(error = %e, "handler runtime: poll failed; polling goes on"),
                    None => break Ok(()),
                },
                _ = commits.tick() => match transactions {
                    None => shared.commit(&consumer, None).await,
                    Some(tx) => if let Err(e) = tx.commit_unless_busy(&consumer).await { break Err(e) },
                },
                _ = async { transactions.expect("checked").ready.notified().await }, if transactions.is_some() => {
                    if let Err(e) = transactions.expect("checked").commit_unless_busy(&consumer).await {
                        break Err(e);
                    }
                }
                Some(done) = workers.join_next() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            break Err(panicked(&e));
                        }
                    }
                }
            }
        };
        if let Some(tx) = transactions {
            // A rebalance callback left waiting inside the poll (the loop stopped on another
            // event) may hold the transaction's turn: it finishes when polled.
            while tx.busy() {
                drop(next(&mut partitions).await);
            }
        }
        let all: Vec<TopicPartition> = lock(&shared.partitions).keys().cloned().collect();
        shared.drain(&all).await;
        let committed = match transactions {
            None => {
                shared.commit(&consumer, None).await;
                Ok(())
            }
            // After a failure, whatever is still buffered is not committed: the partitions'
            // next owners handle it again from the committed offsets.
            Some(tx) if outcome.is_ok() => tx.commit_all(&consumer).await,
            Some(_) => Ok(()),
        };
        lock(&shared.partitions).clear();
        drop(partitions);
        workers.shutdown().await;
        let closed = consumer.close().await;
        let closed_producer = match transactions {
            Some(tx) => tx.producer.close().await,
            None => Ok(()),
        };
        let stopped = outcome.and(committed).and(closed).and(closed_producer);
        shared.events.emit(Lifecycle::Stopped { error: stopped.as_ref().err().map(ToString::to_string) });
        stopped
    }
}

impl Shared {
    /// Stops taking records of `partitions`, and waits up to `drain_timeout` for their running
    /// records; those still running then are cancelled.
    async fn drain(&self, partitions: &[TopicPartition]) {
        let progress: Vec<(TopicPartition, Arc<Progress>)> = {
            let map = lock(&self.partitions);
            partitions.iter().filter_map(|tp| map.get(tp).map(|p| (tp.clone(), p.clone()))).collect()
        };
        for (_, p) in &progress {
            p.set_mode(Mode::Drain);
        }
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        for (tp, p) in &progress {
            let mut stopped = p.stopped.subscribe();
            let timed_out = tokio::time::timeout_at(deadline, stopped.wait_for(|s| *s)).await.is_err();
            if timed_out {
                self.events.emit(Lifecycle::DrainTimedOut { partition: tp.clone() });
                p.set_mode(Mode::Abort);
                let _ = stopped.wait_for(|s| *s).await;
            }
        }
    }

    /// Commits the handled offsets of `only` (or of every partition) that moved since their
    /// last commit. A failed commit is logged and tried again at the next one.
    async fn commit(&self, consumer: &Consumer, only: Option<&[TopicPartition]>) {
        let progress: Vec<(TopicPartition, Arc<Progress>)> = lock(&self.partitions)
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .map(|(tp, p)| (tp.clone(), p.clone()))
            .collect();
        let mut offsets = BTreeMap::new();
        for (tp, p) in &progress {
            let st = p.lock();
            if let Some(offset) = st.commit_point.committable().filter(|o| st.stats.committed != Some(*o)) {
                offsets.insert(tp.clone(), (offset, p.clone()));
            }
        }
        if offsets.is_empty() {
            return;
        }
        let request = offsets.iter().map(|(tp, (o, _))| (tp.clone(), OffsetAndMetadata::new(*o))).collect();
        match consumer.commit_offsets(request).await {
            Ok(()) => {
                for (offset, p) in offsets.values() {
                    p.lock().stats.committed = Some(*offset);
                }
                let offsets = offsets.iter().map(|(tp, (o, _))| (tp.clone(), *o)).collect();
                self.events.emit(Lifecycle::Committed { offsets });
            }
            Err(e) => self.events.emit(Lifecycle::CommitFailed { error: e.to_string() }),
        }
    }
}

/// Errors after which polling cannot go on without the operator: misuse and configuration, a
/// failed driver, and a partition stopped at a truncated log or a corrupt batch (every poll
/// reports it until someone seeks).
fn is_fatal(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Misuse
            | ErrorKind::Config
            | ErrorKind::Internal
            | ErrorKind::LogTruncation
            | ErrorKind::CorruptRecord
    )
}

/// The runtime's rebalance listener: revoked partitions drain, then commit; lost ones stop at
/// once without a commit (another member may own them already).
struct DrainOnRevoke {
    shared: Arc<Shared>,
}

impl RebalanceListener for DrainOnRevoke {
    fn on_partitions_revoked<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            self.shared.events.emit(Lifecycle::Revoked { partitions: partitions.to_vec() });
            self.shared.drain(partitions).await;
            match &self.shared.transactions {
                None => self.shared.commit(consumer, Some(partitions)).await,
                // Every partition's batches commit now, while the generation they were fetched
                // in is still the member's.
                Some(tx) => {
                    if let Err(e) = tx.commit_all(consumer).await {
                        tx.set_fatal(e);
                    }
                    // Left over when a transaction failed: never to be committed by this member
                    // now that the partitions go.
                    tx.forget(partitions);
                }
            }
            let mut map = lock(&self.shared.partitions);
            for tp in partitions {
                map.remove(tp);
            }
        })
    }

    fn on_partitions_lost<'a>(
        &'a self,
        _consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            self.shared.events.emit(Lifecycle::Lost { partitions: partitions.to_vec() });
            let lost: Vec<Arc<Progress>> = {
                let mut map = lock(&self.shared.partitions);
                partitions.iter().filter_map(|tp| map.remove(tp)).collect()
            };
            for p in lost {
                p.set_mode(Mode::Abort);
                let _ = p.stopped.subscribe().wait_for(|s| *s).await;
            }
            if let Some(tx) = &self.shared.transactions {
                tx.forget(partitions);
            }
        })
    }
}

/// What a partition's worker is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Run,
    /// Take no more records; let the running ones finish.
    Drain,
    /// Cancel the running records.
    Abort,
    /// Cancel the running batch and hand the partition's stream back (exactly-once mode).
    Rewind,
}

/// A partition worker's state, shared with the runtime.
pub(crate) struct Progress {
    state: Mutex<ProgressState>,
    pub(crate) mode: watch::Sender<Mode>,
    /// Set when the worker has stopped.
    pub(crate) stopped: watch::Sender<bool>,
    /// Exactly-once mode: set while the partition's last batch waits for its transaction.
    pub(crate) awaiting: watch::Sender<bool>,
    pub(crate) events: Events,
}

#[derive(Default)]
pub(crate) struct ProgressState {
    commit_point: CommitPoint,
    pub(crate) stats: PartitionStats,
    /// Offsets failing now, and since when.
    pub(crate) failing: BTreeMap<i64, SystemTime>,
}

impl Progress {
    fn new(events: Events) -> Self {
        Self {
            events,
            state: Mutex::default(),
            mode: watch::Sender::new(Mode::Run),
            stopped: watch::Sender::new(false),
            awaiting: watch::Sender::new(false),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ProgressState> {
        lock(&self.state)
    }

    /// Back to running after a rewind, with nothing waiting for a transaction.
    pub(crate) fn restart(&self) {
        self.awaiting.send_replace(false);
        self.stopped.send_replace(false);
        self.mode.send_replace(Mode::Run);
    }

    /// Moves the worker on to `mode` if that is a step forward; says whether it was.
    pub(crate) fn set_mode(&self, mode: Mode) -> bool {
        self.mode.send_if_modified(|m| {
            let more = matches!(
                (*m, mode),
                (Mode::Run, Mode::Drain | Mode::Abort | Mode::Rewind) | (Mode::Drain, Mode::Abort)
            );
            if more {
                *m = mode;
            }
            more
        })
    }

    fn stats(&self) -> PartitionStats {
        let st = self.lock();
        PartitionStats { blocked_since: st.failing.values().min().copied(), ..st.stats.clone() }
    }
}

/// Handles the records of one partition until its stream ends (the partition was revoked or
/// lost) or the runtime asks it to stop.
async fn worker(
    tp: TopicPartition,
    mut records: PartitionStream,
    progress: Arc<Progress>,
    handler: Arc<dyn Handler>,
    config: Arc<RuntimeConfig>,
) {
    let slots = config.key_parallelism.max(1);
    let capacity = config.queue_capacity.max(1);
    let mut mode = progress.mode.subscribe();
    let mut scheduler = KeyScheduler::default();
    // The records running, polled by this task itself: no task is spawned per record.
    let mut running: Vec<Running> = Vec::new();
    // The next record to run, held until it is due.
    let mut delayed: Option<(ConsumerRecord, tokio::time::Instant)> = None;
    let mut open = true;
    loop {
        let current = *mode.borrow_and_update();
        if current == Mode::Abort {
            running.clear();
            break;
        }
        if current == Mode::Run && open {
            let now = tokio::time::Instant::now();
            if delayed.as_ref().is_some_and(|(_, due)| *due <= now) {
                let (record, _) = delayed.take().expect("checked");
                running.push(Box::pin(handle(record, handler.clone(), progress.clone(), config.clone())));
            }
            while running.len() < slots && delayed.is_none() {
                let Some(record) = scheduler.next_ready() else { break };
                let wait = handler.not_before(&record).and_then(|t| t.duration_since(SystemTime::now()).ok());
                match wait {
                    Some(wait) if !wait.is_zero() => delayed = Some((record, now + wait)),
                    _ => running.push(Box::pin(handle(record, handler.clone(), progress.clone(), config.clone()))),
                }
            }
        } else if delayed.is_some() {
            // Draining: a record not yet due is left to the partition's next owner.
            delayed = None;
        }
        {
            let mut st = progress.lock();
            st.stats.in_flight = running.len();
            st.stats.queued = scheduler.queued();
        }
        if running.is_empty() && (current != Mode::Run || !open) {
            break;
        }
        let room = if current == Mode::Run && open { capacity.saturating_sub(scheduler.queued()) } else { 0 };
        let mut due = delayed.as_ref().map(|(_, due)| Box::pin(tokio::time::sleep_until(*due)));
        let changed = mode.changed();
        tokio::pin!(changed);
        let event = std::future::poll_fn(|cx| {
            let mut finished = Vec::new();
            let mut i = 0;
            while i < running.len() {
                match running[i].as_mut().poll(cx) {
                    Poll::Ready(key) => {
                        finished.push(key);
                        drop(running.swap_remove(i));
                    }
                    Poll::Pending => i += 1,
                }
            }
            if !finished.is_empty() {
                return Poll::Ready(Event::Finished(finished));
            }
            match take_queued(&mut records, room, cx) {
                Poll::Ready(Some(taken)) => return Poll::Ready(Event::Taken(taken)),
                Poll::Ready(None) => return Poll::Ready(Event::Ended),
                Poll::Pending => {}
            }
            if changed.as_mut().poll(cx).is_ready() || due.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready()) {
                return Poll::Ready(Event::Look);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Finished(keys) => {
                for key in keys {
                    scheduler.finished(&key);
                }
            }
            Event::Taken(taken) => {
                let mut st = progress.lock();
                for record in &taken {
                    st.commit_point.taken(record.offset);
                }
                drop(st);
                for record in taken {
                    scheduler.push(record);
                }
            }
            // Revoked or lost: what was taken and not started is left to the next owner.
            Event::Ended => open = false,
            Event::Look => {}
        }
    }
    tracing::debug!(%tp, "handler runtime: partition worker stopped");
    progress.stopped.send_replace(true);
}

/// Takes what a partition's queue holds now, up to `room` records, so that one wake-up serves
/// many records: `Some` with at least one record, `None` once the stream has ended (revoked or
/// lost) with nothing left to take, `Pending` when nothing is queued or there is no room.
pub(crate) fn take_queued(
    records: &mut PartitionStream,
    room: usize,
    cx: &mut std::task::Context<'_>,
) -> Poll<Option<Vec<ConsumerRecord>>> {
    let mut taken = Vec::new();
    while taken.len() < room {
        match Pin::new(&mut *records).poll_next(cx) {
            Poll::Ready(Some(record)) => taken.push(record),
            Poll::Ready(None) if taken.is_empty() => return Poll::Ready(None),
            Poll::Ready(None) | Poll::Pending => break,
        }
    }
    if taken.is_empty() {
        Poll::Pending
    } else {
        Poll::Ready(Some(taken))
    }
}

/// A record running: its handler's future, with its retries; yields the record's key.
type Running = Pin<Box<dyn Future<Output = Option<bytes::Bytes>> + Send>>;

/// What woke a partition's worker.
enum Event {
    /// Records finished (their keys).
    Finished(Vec<Option<bytes::Bytes>>),
    /// Records taken from the partition's queue.
    Taken(Vec<ConsumerRecord>),
    /// The partition's stream ended.
    Ended,
    /// The mode changed or a delayed record came due.
    Look,
}

/// Runs the handler on `record` until it succeeds, backing off between failures; returns the
/// record's key.
async fn handle(
    record: ConsumerRecord,
    handler: Arc<dyn Handler>,
    progress: Arc<Progress>,
    config: Arc<RuntimeConfig>,
) -> Option<bytes::Bytes> {
    let mut backoff = Backoff::new(config.retry_backoff, config.retry_backoff_max);
    loop {
        match handler.handle(record.clone()).await {
            Ok(()) => {
                let mut st = progress.lock();
                st.commit_point.finished(record.offset);
                st.failing.remove(&record.offset);
                st.stats.handled += 1;
                return record.key;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                {
                    let mut st = progress.lock();
                    st.stats.failed += 1;
                    st.failing.entry(record.offset).or_insert_with(SystemTime::now);
                }
                progress.events.emit(Lifecycle::RecordFailed {
                    partition: record.topic_partition(),
                    offset: record.offset,
                    attempts: backoff.attempts(),
                    error: e.to_string(),
                });
                tokio::time::sleep(delay).await;
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
