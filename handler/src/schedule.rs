//! The pure parts of a partition's worker: which record runs next when keys run in parallel,
//! and which offset is safe to commit while records finish out of order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use kafka_wire::ConsumerRecord;

/// Records of one partition waiting to run, by key: each key's records run one at a time in
/// offset order; different keys run in parallel. A key is ready as soon as its running record
/// finishes, and the ready key whose next record has the lowest offset goes first — so with one
/// slot the partition runs strictly in offset order, and with more a slow key holds back only
/// itself (there is no batch barrier) while the commit point moves as early as it can. Records
/// without a key count as one key.
#[derive(Default)]
pub(crate) struct KeyScheduler {
    waiting: HashMap<Option<Bytes>, VecDeque<ConsumerRecord>>,
    /// Ready keys by the offset of their next record.
    ready: BTreeMap<i64, Option<Bytes>>,
    running: HashSet<Option<Bytes>>,
    queued: usize,
}

impl KeyScheduler {
    pub(crate) fn push(&mut self, record: ConsumerRecord) {
        let key = record.key.clone();
        let offset = record.offset;
        let queue = self.waiting.entry(key.clone()).or_default();
        queue.push_back(record);
        if queue.len() == 1 && !self.running.contains(&key) {
            self.ready.insert(offset, key);
        }
        self.queued += 1;
    }

    /// The next record to run, if a key is ready; its key counts as running until
    /// [`KeyScheduler::finished`].
    pub(crate) fn next_ready(&mut self) -> Option<ConsumerRecord> {
        let (_, key) = self.ready.pop_first()?;
        let queue = self.waiting.get_mut(&key)?;
        let record = queue.pop_front()?;
        if queue.is_empty() {
            self.waiting.remove(&key);
        }
        self.running.insert(key);
        self.queued -= 1;
        Some(record)
    }

    /// The running record of `key` finished: the key's next record, if any, is ready.
    pub(crate) fn finished(&mut self, key: &Option<Bytes>) {
        self.running.remove(key);
        if let Some(next) = self.waiting.get(key).and_then(|q| q.front()) {
            self.ready.insert(next.offset, key.clone());
        }
    }

    /// Records taken from the partition and not started.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }
}

/// Which offset of a partition may be committed: every record below it is handled. Records
/// are taken in offset order and may finish in any order; the commit point is the lowest
/// offset taken and not finished, or past the last one taken when all are.
#[derive(Debug, Default)]
pub(crate) struct CommitPoint {
    unfinished: BTreeSet<i64>,
    next: Option<i64>,
}

impl CommitPoint {
    pub(crate) fn taken(&mut self, offset: i64) {
        self.unfinished.insert(offset);
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    pub(crate) fn finished(&mut self, offset: i64) {
        self.unfinished.remove(&offset);
    }

    /// The offset to commit, if any record was taken.
    pub(crate) fn committable(&self) -> Option<i64> {
        self.unfinished.first().copied().or(self.next)
    }
}

#[cfg(test)]
mod tests {

    use kafka_wire::types::TimestampType;
    use kafka_wire::Headers;

    use super::*;

    fn record(offset: i64, key: Option<&str>) -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            timestamp: 0,
            timestamp_type: TimestampType::CreateTime,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: None,
            headers: Headers::default(),
            leader_epoch: 0,
        }
    }

    /// Runs a scheduler with `slots` parallel slots, finishing running records in the order
    /// `pick` chooses, and returns the order records started in.
    fn run(keys: &[Option<&str>], slots: usize, mut pick: impl FnMut(usize) -> usize) -> Vec<i64> {
        let mut s = KeyScheduler::default();
        for (i, k) in keys.iter().enumerate() {
            s.push(record(i as i64, *k));
        }
        let mut running: Vec<ConsumerRecord> = Vec::new();
        let mut started = Vec::new();
        loop {
            while running.len() < slots {
                let Some(r) = s.next_ready() else { break };
                started.push(r.offset);
                running.push(r);
            }
            if running.is_empty() {
                break;
            }
            let done = running.remove(pick(running.len()) % running.len());
            s.finished(&done.key);
        }
        assert_eq!(s.queued(), 0);
        started
    }

    #[test]
    fn one_slot_runs_the_partition_in_offset_order() {
        let keys = [Some("a"), Some("b"), Some("a"), None, Some("c"), Some("b"), None, Some("a")];
        assert_eq!(run(&keys, 1, |_| 0), (0..keys.len() as i64).collect::<Vec<_>>());
    }

    #[test]
    fn each_key_runs_in_order_and_never_twice_at_once_whatever_finishes_first() {
        let keys: Vec<Option<&str>> = (0..200).map(|i| [Some("a"), Some("b"), Some("c"), None][i * 7 % 4]).collect();
        for seed in 0..50u64 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let started = run(&keys, 3, |n| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as usize % n
            });
            assert_eq!(started.len(), keys.len(), "seed {seed}: a record never ran");
            for key in [Some("a"), Some("b"), Some("c"), None] {
                let of_key: Vec<i64> = started.iter().copied().filter(|o| keys[*o as usize] == key).collect();
                assert!(of_key.windows(2).all(|w| w[0] < w[1]), "seed {seed}: key {key:?} out of order");
            }
        }
    }

    #[test]
    fn a_stalled_key_does_not_hold_back_the_others() {
        // Key "slow" runs first and never finishes; the other keys' records all run.
        let mut s = KeyScheduler::default();
        s.push(record(0, Some("slow")));
        for i in 1..100 {
            s.push(record(i, Some(["x", "y", "slow"][i as usize % 3])));
        }
        let stalled = s.next_ready().unwrap();
        assert_eq!(stalled.offset, 0);
        let mut ran = 0;
        while let Some(r) = s.next_ready() {
            assert_ne!(r.key.as_deref(), Some(&b"slow"[..]), "a second record of the stalled key ran");
            ran += 1;
            s.finished(&r.key);
        }
        assert_eq!(ran, 66, "every record of the other keys runs");
    }

    #[test]
    fn the_commit_point_stops_at_the_lowest_unfinished_offset() {
        let mut c = CommitPoint::default();
        assert_eq!(c.committable(), None);
        for o in [10, 11, 13, 14] {
            c.taken(o);
        }
        assert_eq!(c.committable(), Some(10));
        c.finished(11);
        c.finished(13);
        assert_eq!(c.committable(), Some(10), "10 is not handled yet");
        c.finished(10);
        assert_eq!(c.committable(), Some(14));
        c.finished(14);
        assert_eq!(c.committable(), Some(15), "all handled: past the last offset taken (12 was never a record)");
    }
}
