//! One stream of records per assigned partition, for per-partition workers: a worker per
//! partition keeps each partition's order while partitions are processed in parallel, and a
//! slow partition holds back only itself.
//!
//! [`PartitionStreams`] polls the consumer and routes each record to its partition's queue. A
//! queue that reaches its capacity pauses its partition in the consumer (nothing more is fetched
//! for it), and resumes it once its worker has taken half of them out (not at the first one, so
//! that a partition does not pause and resume at every record); the other partitions keep
//! flowing. A partition that leaves the assignment (revoked, lost, or no longer assigned) ends
//! its stream at once, and the records still queued for it are dropped rather than processed
//! by a member that no longer owns them: its next owner reads them again from the committed
//! offset. A partition revoked and assigned again in one rebalance (eager assignment revokes
//! everything) gets a new stream, which starts from the committed offset.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_core::Stream;

use super::consumer::{Consumer, ConsumerRecord, RebalanceListener};
use super::error::Result;
use crate::types::TopicPartition;

/// How long one poll of the consumer waits before the assignment is looked at again: what
/// bounds the time a partition assigned with [`Consumer::assign`] waits for its stream.
const POLL_SLICE: Duration = Duration::from_millis(200);

type PollFuture = Pin<Box<dyn Future<Output = Result<Vec<ConsumerRecord>>> + Send>>;

/// Splits a [`Consumer`]'s records into one [`PartitionStream`] per assigned partition.
///
/// It is itself a [`Stream`]: each item is a newly assigned partition with its stream (or an
/// error from [`Consumer::poll`]). Records flow only while it is polled, so keep polling it (for
/// example in the loop that spawns a worker per partition), even when no partition is new.
///
/// It manages [`Consumer::pause`] and [`Consumer::resume`] of the partitions it routes: do not
/// pause or resume them yourself while it runs. It sets the consumer's rebalance listener (to
/// end the streams of revoked partitions inside the rebalance): give yours to
/// [`PartitionStreams::with_listener`], which calls it after the streams have ended.
///
/// ```no_run
/// # async fn demo(consumer: kafka_wire::Consumer) {
/// use kafka_wire::client::stream::next;
/// use kafka_wire::client::PartitionStreams;
///
/// let mut partitions = PartitionStreams::new(consumer, 1000);
/// while let Some(item) = next(&mut partitions).await {
///     let Ok((tp, mut records)) = item else { continue };
///     tokio::spawn(async move {
///         while let Some(record) = next(&mut records).await {
///             println!("{tp} @ {}", record.offset);
///         }
///     });
/// }
/// # }
/// ```
pub struct PartitionStreams {
    consumer: Consumer,
    capacity: usize,
    /// Shared with the rebalance listener, which ends the streams of revoked partitions.
    routes: Arc<Mutex<Routes>>,
    new_partitions: VecDeque<(TopicPartition, PartitionStream)>,
    pending: Option<PollFuture>,
    /// Woken by a worker that made room in a full queue.
    splitter: Arc<Mutex<Option<Waker>>>,
}

impl PartitionStreams {
    /// Routes `consumer`'s records to per-partition streams of up to `capacity` records queued
    /// each (at least 1; a partition may briefly hold one poll's records, `max.poll.records`,
    /// past it).
    pub fn new(consumer: Consumer, capacity: usize) -> Self {
        Self::start(consumer, capacity, None)
    }

    /// [`PartitionStreams::new`], with `listener` called on every rebalance step after the
    /// streams of the partitions taken away have ended (so its `on_partitions_revoked` may wait
    /// for their workers to finish and commit what they handled).
    pub fn with_listener(consumer: Consumer, capacity: usize, listener: impl RebalanceListener + 'static) -> Self {
        Self::start(consumer, capacity, Some(Box::new(listener)))
    }

    fn start(consumer: Consumer, capacity: usize, listener: Option<Box<dyn RebalanceListener>>) -> Self {
        let routes = Arc::new(Mutex::new(Routes::default()));
        consumer.set_rebalance_listener(EndRevoked { routes: routes.clone(), then: listener });
        Self {
            consumer,
            capacity: capacity.max(1),
            routes,
            new_partitions: VecDeque::new(),
            pending: None,
            splitter: Arc::new(Mutex::new(None)),
        }
    }

    /// The consumer the records come from.
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// Makes the streams follow the consumer's assignment: new partitions get a stream, gone
    /// ones end theirs.
    fn follow_assignment(&mut self) {
        let assigned = self.consumer.assignment();
        let routes = self.routes.clone();
        let mut routes = lock(&routes);
        let gone: Vec<TopicPartition> = routes.queues.keys().filter(|tp| !assigned.contains(*tp)).cloned().collect();
        routes.end(&gone);
        for tp in assigned {
            self.route(&mut routes, &tp);
        }
    }

    /// The queue of `tp`, created (and its stream announced) on first use.
    fn route(&mut self, routes: &mut Routes, tp: &TopicPartition) -> Arc<Queue> {
        if let Some(queue) = routes.queues.get(tp) {
            return queue.clone();
        }
        let queue = Arc::new(Queue::default());
        routes.queues.insert(tp.clone(), queue.clone());
        let stream = PartitionStream { queue: queue.clone(), capacity: self.capacity, splitter: self.splitter.clone() };
        self.new_partitions.push_back((tp.clone(), stream));
        queue
    }

    /// Queues a poll's records; a queue that fills up pauses its partition.
    fn dispatch(&mut self, records: Vec<ConsumerRecord>) {
        let routes = self.routes.clone();
        let mut routes = lock(&routes);
        let mut full = Vec::new();
        for record in records {
            let tp = record.topic_partition();
            let queue = self.route(&mut routes, &tp);
            if queue.push(record) >= self.capacity && !routes.paused.contains(&tp) {
                full.push(tp);
            }
        }
        // A partition revoked since the poll returned is no longer the consumer's to pause.
        full.retain(|tp| self.consumer.pause(std::slice::from_ref(tp)).is_ok());
        routes.paused.extend(full);
    }

    /// Resumes the partitions this splitter paused whose workers have made room.
    fn resume_drained(&mut self) {
        let mut routes = lock(&self.routes);
        let ready: Vec<TopicPartition> = routes
            .paused
            .iter()
            .filter(|tp| routes.queues.get(*tp).is_none_or(|q| q.len() <= low_watermark(self.capacity)))
            .cloned()
            .collect();
        for tp in ready {
            routes.paused.remove(&tp);
            // Not assigned any more: nothing to resume, and the next look at the assignment
            // ends its stream.
            let _ = self.consumer.resume(std::slice::from_ref(&tp));
        }
    }
}

impl Stream for PartitionStreams {
    type Item = Result<(TopicPartition, PartitionStream)>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        *lock(&self.splitter) = Some(cx.waker().clone());
        loop {
            if let Some(new) = self.new_partitions.pop_front() {
                return Poll::Ready(Some(Ok(new)));
            }
            self.resume_drained();
            let consumer = self.consumer.clone();
            let poll = self.pending.get_or_insert_with(|| Box::pin(async move { consumer.poll(POLL_SLICE).await }));
            let result = match poll.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result,
            };
            self.pending = None;
            match result {
                Ok(records) => {
                    self.dispatch(records);
                    self.follow_assignment();
                }
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

impl Unpin for PartitionStreams {}

/// The records of one partition, in offset order. It ends when the partition leaves the
/// consumer's assignment, or when its [`PartitionStreams`] is dropped; records still queued
/// then are dropped.
///
/// Cancel-safe: a record leaves the queue only when `poll_next` returns it.
pub struct PartitionStream {
    queue: Arc<Queue>,
    capacity: usize,
    splitter: Arc<Mutex<Option<Waker>>>,
}

impl Stream for PartitionStream {
    type Item = ConsumerRecord;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut q = self.queue.lock();
        if q.closed {
            return Poll::Ready(None);
        }
        match q.records.pop_front() {
            Some(record) => {
                // The queue just came down to its low watermark: the splitter may resume the
                // partition (records leave one at a time, so every length is passed through).
                let resumable = q.records.len() == low_watermark(self.capacity);
                drop(q);
                if resumable {
                    if let Some(waker) = lock(&self.splitter).as_ref() {
                        waker.wake_by_ref();
                    }
                }
                Poll::Ready(Some(record))
            }
            None => {
                q.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for PartitionStreams {
    fn drop(&mut self) {
        let mut routes = lock(&self.routes);
        let all: Vec<TopicPartition> = routes.queues.keys().cloned().collect();
        routes.end(&all);
    }
}

/// The queues of the partitions routed, and those paused because their queue is full.
#[derive(Default)]
struct Routes {
    queues: HashMap<TopicPartition, Arc<Queue>>,
    paused: BTreeSet<TopicPartition>,
}

impl Routes {
    /// Ends the streams of `partitions`.
    fn end(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(queue) = self.queues.remove(tp) {
                queue.close();
            }
            self.paused.remove(tp);
        }
    }
}

/// The consumer's rebalance listener: ends the streams of the partitions taken away, then calls
/// the application's listener.
struct EndRevoked {
    routes: Arc<Mutex<Routes>>,
    then: Option<Box<dyn RebalanceListener>>,
}

impl RebalanceListener for EndRevoked {
    fn on_partitions_revoked<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        lock(&self.routes).end(partitions);
        match &self.then {
            Some(listener) => listener.on_partitions_revoked(consumer, partitions),
            None => Box::pin(async {}),
        }
    }

    fn on_partitions_assigned<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        match &self.then {
            Some(listener) => listener.on_partitions_assigned(consumer, partitions),
            None => Box::pin(async {}),
        }
    }

    fn on_partitions_lost<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        lock(&self.routes).end(partitions);
        match &self.then {
            Some(listener) => listener.on_partitions_lost(consumer, partitions),
            None => Box::pin(async {}),
        }
    }
}

/// A partition's queue, shared by the splitter and the partition's stream.
#[derive(Default)]
struct Queue(Mutex<QueueState>);

#[derive(Default)]
struct QueueState {
    records: VecDeque<ConsumerRecord>,
    closed: bool,
    reader: Option<Waker>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        lock(&self.0)
    }

    /// Queues a record and wakes the reader; returns the queue's length.
    fn push(&self, record: ConsumerRecord) -> usize {
        let mut q = self.lock();
        q.records.push_back(record);
        let len = q.records.len();
        if let Some(waker) = q.reader.take() {
            waker.wake();
        }
        len
    }

    fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Ends the stream: what is queued is dropped.
    fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.records.clear();
        if let Some(waker) = q.reader.take() {
            waker.wake();
        }
    }
}

/// The queue length at or below which a paused partition is resumed: half its capacity.
fn low_watermark(capacity: usize) -> usize {
    capacity / 2
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
