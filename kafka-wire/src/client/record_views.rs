//! Records handed out in place ([`Consumer::poll_views`](super::Consumer::poll_views)): a poll's
//! records as positions in the fetched bytes, read through borrowed [`RecordView`]s.
//!
//! A [`ConsumerRecord`] owns its key and value: each is a handle on the fetched bytes, made and
//! dropped with a reference count update (an atomic operation, a full barrier on x86) per record.
//! At millions of records a second those were about a quarter of the consumer's CPU (issue #14). A
//! [`PolledRecords`] holds one handle per batch it read from, and its records borrow from it.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::consumer::ConsumerRecord;
use super::topic_name::{LastTopic, TopicName};
use crate::codec::record_batch::{Headers, Records, TimestampType};
use crate::codec::{DecodeError, DecodeResult};
use crate::proto::fetcher::Taker;
use crate::proto::producer::TopicPartition;

/// The records of one poll, in the order [`Consumer::poll`](super::Consumer::poll) would have
/// returned them, read in place: [`iter`](Self::iter) lends each as a [`RecordView`] whose key
/// and value are slices of the fetched bytes.
///
/// It keeps those bytes alive (the Fetch answers, or decompressed batches, its records came
/// from) until it is dropped; [`RecordView::to_record`] makes a record that outlives it.
#[derive(Default)]
pub struct PolledRecords {
    batches: Vec<Batch>,
    records: Vec<Slot>,
}

/// Bytes the records of one batch lie in, from where the poll began reading it.
struct Batch {
    /// Shared with the headers a view hands out.
    bytes: Arc<Bytes>,
    topic: TopicName,
    partition: i32,
    leader_epoch: i32,
    timestamp_type: TimestampType,
}

/// Where a record lies in its batch's `bytes`.
pub(super) struct Slot {
    batch: u32,
    offset: i64,
    timestamp: i64,
    key: Option<Span>,
    value: Option<Span>,
    headers: Option<Span>,
}

#[derive(Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

impl PolledRecords {
    /// How many records the poll returned.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the poll returned none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records in order.
    pub fn iter(&self) -> RecordViews<'_> {
        RecordViews { batches: &self.batches, records: self.records.iter() }
    }

    /// The record at `index`.
    pub fn get(&self, index: usize) -> Option<RecordView<'_>> {
        let slot = self.records.get(index)?;
        Some(RecordView { batch: &self.batches[slot.batch as usize], slot })
    }

    /// The records as owned [`ConsumerRecord`]s (a reference count each for the key, value
    /// and headers, as [`Consumer::poll`](super::Consumer::poll) returns them).
    pub fn to_records(&self) -> Vec<ConsumerRecord> {
        self.iter().map(|r| r.to_record()).collect()
    }
}

impl<'a> IntoIterator for &'a PolledRecords {
    type Item = RecordView<'a>;
    type IntoIter = RecordViews<'a>;

    fn into_iter(self) -> RecordViews<'a> {
        self.iter()
    }
}

/// The records of a [`PolledRecords`] in order ([`PolledRecords::iter`]).
#[derive(Clone)]
pub struct RecordViews<'a> {
    batches: &'a [Batch],
    records: std::slice::Iter<'a, Slot>,
}

impl<'a> Iterator for RecordViews<'a> {
    type Item = RecordView<'a>;

    #[inline]
    fn next(&mut self) -> Option<RecordView<'a>> {
        let slot = self.records.next()?;
        Some(RecordView { batch: &self.batches[slot.batch as usize], slot })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.records.size_hint()
    }
}

impl DoubleEndedIterator for RecordViews<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let slot = self.records.next_back()?;
        Some(RecordView { batch: &self.batches[slot.batch as usize], slot })
    }
}

impl ExactSizeIterator for RecordViews<'_> {}

impl fmt::Debug for RecordViews<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordViews").field("left", &self.records.len()).finish()
    }
}

impl fmt::Debug for PolledRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A record of a [`PolledRecords`], borrowed from it: its key and value are slices of the
/// fetched bytes, read without a reference count update.
#[derive(Clone, Copy)]
pub struct RecordView<'a> {
    batch: &'a Batch,
    slot: &'a Slot,
}

impl<'a> RecordView<'a> {
    /// The topic.
    pub fn topic(&self) -> TopicName {
        self.batch.topic
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.batch.partition
    }

    /// The record's topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition { topic: self.batch.topic.to_arc(), partition: self.batch.partition }
    }

    /// The record's offset.
    pub fn offset(&self) -> i64 {
        self.slot.offset
    }

    /// The record's timestamp, in milliseconds since the epoch.
    pub fn timestamp(&self) -> i64 {
        self.slot.timestamp
    }

    /// Whether [`timestamp`](Self::timestamp) is the producer's create time or the broker's
    /// append time.
    pub fn timestamp_type(&self) -> TimestampType {
        self.batch.timestamp_type
    }

    /// The key; `None` is a null key.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.slot.key.map(|s| &self.batch.bytes[s.range()])
    }

    /// The value; `None` is a null value (a tombstone on compacted topics).
    pub fn value(&self) -> Option<&'a [u8]> {
        self.slot.value.map(|s| &self.batch.bytes[s.range()])
    }

    /// The headers, decoded as they are read (on a handle shared with the batch: one reference
    /// count update).
    pub fn headers(&self) -> Headers {
        self.slot.headers.and_then(|s| Headers::in_buffer(self.batch.bytes.clone(), s.range())).unwrap_or_default()
    }

    /// The leader epoch of the batch the record came in, -1 if unknown.
    pub fn leader_epoch(&self) -> i32 {
        self.batch.leader_epoch
    }

    /// The record as an owned [`ConsumerRecord`], whose key and value are handles on the same
    /// bytes (see [`ConsumerRecord::detach`] for keeping it long).
    pub fn to_record(&self) -> ConsumerRecord {
        let slice = |s: Span| self.batch.bytes.slice(s.range());
        ConsumerRecord {
            topic: self.batch.topic,
            partition: self.batch.partition,
            offset: self.slot.offset,
            timestamp: self.slot.timestamp,
            timestamp_type: self.batch.timestamp_type,
            key: self.slot.key.map(slice),
            value: self.slot.value.map(slice),
            headers: self.headers(),
            leader_epoch: self.batch.leader_epoch,
        }
    }
}

impl fmt::Debug for RecordView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordView")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("timestamp", &self.timestamp())
            .field("key", &self.key().map(Bytes::copy_from_slice))
            .field("value", &self.value().map(Bytes::copy_from_slice))
            .field("headers", &self.headers())
            .finish()
    }
}

/// Takes records out of the fetcher as positions in a handle per batch ([`Fetcher::take_with`](
/// crate::proto::fetcher::Fetcher::take_with)).
pub(super) struct Viewer {
    out: PolledRecords,
    /// Where the current batch's `bytes` begin in its records section.
    origin: usize,
    topic: LastTopic,
}

impl Viewer {
    pub(super) fn new(capacity: usize) -> Self {
        let out = PolledRecords { batches: Vec::new(), records: Vec::with_capacity(capacity) };
        Self { out, origin: 0, topic: LastTopic::default() }
    }

    pub(super) fn finish(self) -> PolledRecords {
        self.out
    }

    fn span(&self, range: Option<Range<usize>>) -> DecodeResult<Option<Span>> {
        let Some(r) = range else { return Ok(None) };
        // A batch's bytes are one Fetch answer (a frame, under 2 GiB) or one decompressed batch
        // (capped below that): positions in them fit.
        let (Ok(start), Ok(end)) = (u32::try_from(r.start - self.origin), u32::try_from(r.end - self.origin)) else {
            return Err(DecodeError::Malformed { what: "record", reason: "4 GiB or more into its batch" });
        };
        Ok(Some(Span { start, end }))
    }
}

impl Taker for Viewer {
    type Item = Slot;

    fn batch(&mut self, tp: &TopicPartition, records: &Records, leader_epoch: i32, timestamp_type: TimestampType) {
        let topic = self.topic.name(&tp.topic);
        let (bytes, origin) = records.rest();
        self.origin = origin;
        let batch = Batch { bytes: Arc::new(bytes), topic, partition: tp.partition, leader_epoch, timestamp_type };
        // A batch none of whose records was handed out (all below the position, or none left)
        // is not kept.
        let unused = self.out.batches.len() > self.out.records.last().map_or(0, |r| r.batch as usize + 1);
        match self.out.batches.last_mut() {
            Some(last) if unused => *last = batch,
            _ => self.out.batches.push(batch),
        }
    }

    #[inline(always)]
    fn read(&mut self, records: &mut Records) -> Option<DecodeResult<Slot>> {
        Some(records.next_span()?.and_then(|span| {
            Ok(Slot {
                batch: (self.out.batches.len() - 1) as u32,
                offset: span.offset,
                timestamp: span.timestamp,
                key: self.span(span.key)?,
                value: self.span(span.value)?,
                headers: self.span(span.headers)?,
            })
        }))
    }

    fn offset(item: &Slot) -> i64 {
        item.offset
    }

    #[inline(always)]
    fn emit(&mut self, _: &TopicPartition, item: Slot, _: i32, _: TimestampType) {
        self.out.records.push(item);
    }
}
