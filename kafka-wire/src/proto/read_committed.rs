//! Filtering of aborted transactions for `isolation.level=read_committed` (KIP-98).
//!
//! A Fetch response for a read-committed consumer stops at the last stable offset and lists the
//! aborted transactions that overlap the returned data as `(producer id, first offset)`. Walking
//! the batches in offset order: once a batch at or past an aborted transaction's first offset is
//! reached, that producer's transactional batches are dropped until its ABORT control batch
//! closes the transaction. Control batches are never delivered.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use crate::codec::record_batch::{ControlRecord, ControlType, RecordBatch};

/// Decides batch by batch what a read-committed consumer sees of one partition's fetch.
#[derive(Debug, Default)]
pub struct AbortedFilter {
    /// Aborted transactions not reached yet, by first offset.
    pending: BinaryHeap<Reverse<(i64, i64)>>,
    /// Producers whose current transaction was aborted.
    aborted: HashSet<i64>,
}

impl AbortedFilter {
    /// `aborted` is the fetch response's list of `(producer_id, first_offset)`.
    pub fn new(aborted: impl IntoIterator<Item = (i64, i64)>) -> Self {
        Self {
            pending: aborted.into_iter().map(|(pid, first)| Reverse((first, pid))).collect(),
            aborted: HashSet::new(),
        }
    }

    /// Whether the records of `batch` are to be delivered. Batches must come in offset order.
    pub fn keep(&mut self, batch: &RecordBatch) -> bool {
        while let Some(Reverse((first, pid))) = self.pending.peek().copied() {
            if first > batch.last_offset() {
                break;
            }
            self.pending.pop();
            self.aborted.insert(pid);
        }
        if batch.is_control() {
            if is_abort_marker(batch) {
                self.aborted.remove(&batch.producer_id());
            }
            return false;
        }
        !(batch.is_transactional() && self.aborted.contains(&batch.producer_id()))
    }
}

/// Whether a control batch holds an ABORT marker (its single record's key says so).
fn is_abort_marker(batch: &RecordBatch) -> bool {
    // A control batch is uncompressed and small; its first record's key is the marker.
    batch
        .records(4096)
        .next()
        .and_then(Result::ok)
        .and_then(|r| r.key.and_then(|k| ControlRecord::parse(&k).ok()))
        .is_some_and(|c| c.kind == ControlType::ABORT)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec::compression::Compression;
    use crate::codec::record_batch::{BatchBuilder, EndTxnMarker};

    fn data(offset: i64, pid: i64, transactional: bool) -> RecordBatch {
        let mut b = BatchBuilder::new(offset);
        b.set_producer_state(pid, 0, 0).set_transactional(transactional);
        b.push(0, None, Some(b"v"), &[]).unwrap();
        RecordBatch::parse(b.finish(Compression::None)).unwrap()
    }

    fn marker(offset: i64, pid: i64, kind: ControlType) -> RecordBatch {
        let mut b = BatchBuilder::new(offset);
        b.set_producer_state(pid, 0, -1).set_transactional(true).set_control(true);
        let key: Bytes = ControlRecord::new(kind).encode();
        let value: Bytes = EndTxnMarker { version: 0, coordinator_epoch: 0 }.encode();
        b.push(0, Some(&key), Some(&value), &[]).unwrap();
        RecordBatch::parse(b.finish(Compression::None)).unwrap()
    }

    #[test]
    fn aborted_transactions_are_dropped_and_committed_ones_kept() {
        // pid 1 aborts the transaction starting at offset 0; pid 2 commits; pid 3 is not
        // transactional; pid 1 then starts a new transaction that commits.
        let log = [
            data(0, 1, true),
            data(1, 2, true),
            data(2, 3, false),
            data(3, 1, true),
            marker(4, 1, ControlType::ABORT),
            marker(5, 2, ControlType::COMMIT),
            data(6, 1, true),
            marker(7, 1, ControlType::COMMIT),
        ];
        let mut f = AbortedFilter::new([(1, 0)]);
        let kept: Vec<i64> = log.iter().filter(|b| f.keep(b)).map(RecordBatch::base_offset).collect();
        assert_eq!(kept, vec![1, 2, 6]);
    }

    #[test]
    fn without_aborted_transactions_only_control_batches_are_dropped() {
        let log = [data(0, 1, true), marker(1, 1, ControlType::COMMIT), data(2, 1, false)];
        let mut f = AbortedFilter::new([]);
        let kept: Vec<i64> = log.iter().filter(|b| f.keep(b)).map(RecordBatch::base_offset).collect();
        assert_eq!(kept, vec![0, 2]);
    }
}
