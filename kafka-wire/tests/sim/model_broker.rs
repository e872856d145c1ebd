//! A model Kafka cluster for the producer simulation: per-partition logs with Kafka's idempotent
//! producer rules (KIP-98: the last five batches per producer id are remembered for duplicate
//! detection, sequences must follow on, a new epoch starts at sequence 0), leaders that move,
//! and a seeded PRNG. Batches are decoded with the crate's own record-batch codec, so the model
//! sees exactly the bytes a broker would.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use kafka_wire::codec::record_batch::RecordBatch;
use kafka_wire::codec::ErrorCode;

/// SplitMix64: tiny, seedable, good enough for fault plans.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Decorrelate small consecutive seeds.
        let mut r = Self(seed ^ 0x5DEE_CE66_D1CE_4E5B);
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// One record in a model log.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub offset: i64,
    pub record_id: u64,
    pub producer_id: i64,
    pub epoch: i16,
    pub sequence: i32,
}

/// What the broker remembers of one producer id on one partition.
#[derive(Clone, Debug)]
struct ProducerState {
    epoch: i16,
    last_sequence: i32,
    /// (base sequence, last sequence, base offset) of the last five batches.
    recent: VecDeque<(i32, i32, i64)>,
}

/// A fault to inject into the handling of one partition's batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    None,
    /// Answer this error without appending.
    Before(ErrorCode),
    /// Append (if the batch is valid), then answer this error anyway (Kafka's
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    After(ErrorCode),
    /// Forget the producer's state for this partition first (producer-state retention expired).
    ForgetProducer,
}

/// The model's answer for one batch.
#[derive(Clone, Debug)]
pub struct BatchAnswer {
    pub error: ErrorCode,
    pub base_offset: i64,
    pub appended: bool,
    pub duplicate: bool,
}

#[derive(Debug, Default)]
pub struct PartitionModel {
    pub leader: i32,
    pub log: Vec<LogEntry>,
    producers: HashMap<i64, ProducerState>,
    /// Producer ids whose state was forgotten, with the epoch they had: a batch of that epoch
    /// is answered UNKNOWN_PRODUCER_ID (stricter than Kafka, which would take sequence 0 again;
    /// this keeps the model from inventing duplicates the client could not have prevented).
    forgotten: HashMap<i64, i16>,
    /// How often this partition forgot its producer state.
    pub forgets: u64,
}

#[derive(Debug, Default, Clone)]
pub struct ModelStats {
    pub batches: u64,
    pub appended_batches: u64,
    pub appended_records: u64,
    pub duplicates: u64,
    pub not_leader: u64,
    pub out_of_order: u64,
    pub unknown_producer: u64,
    pub invalid_epoch: u64,
    pub forgotten: u64,
    /// Batches whose header showed a higher epoch of a producer id than any seen before.
    pub epoch_bumps_seen: u64,
    pub producer_ids_seen: u64,
    pub corrupt: u64,
}

pub struct ModelCluster {
    pub partitions: Vec<PartitionModel>,
    pub brokers: Vec<i32>,
    pub stats: ModelStats,
    /// Highest epoch seen per producer id in any batch header.
    max_epoch: HashMap<i64, i16>,
    /// Problems the model noticed in what it was sent (corrupt batches, wrong epochs).
    pub violations: Vec<String>,
    /// Choose DUPLICATE_SEQUENCE_NUMBER instead of NONE for duplicates.
    pub duplicate_code: ErrorCode,
    /// The largest batch a partition takes (Kafka's `message.max.bytes` / `max.message.bytes`,
    /// compared with the whole batch as sent); larger ones are answered MESSAGE_TOO_LARGE.
    pub max_batch_bytes: Option<usize>,
}

impl ModelCluster {
    pub fn new(brokers: Vec<i32>, partitions: usize) -> Self {
        let parts = (0..partitions)
            .map(|p| PartitionModel { leader: brokers[p % brokers.len()], ..Default::default() })
            .collect();
        Self {
            partitions: parts,
            brokers,
            stats: ModelStats::default(),
            max_epoch: HashMap::new(),
            violations: Vec::new(),
            duplicate_code: ErrorCode::NONE,
            max_batch_bytes: None,
        }
    }

    pub fn leader(&self, partition: i32) -> i32 {
        self.partitions[partition as usize].leader
    }

    pub fn move_leader(&mut self, partition: i32, to: i32) {
        self.partitions[partition as usize].leader = to;
    }

    /// Forgets the producer state of `partition` (all producer ids).
    pub fn forget_producers(&mut self, partition: i32) {
        let p = &mut self.partitions[partition as usize];
        p.forgets += 1;
        for (pid, st) in p.producers.drain() {
            p.forgotten.insert(pid, st.epoch);
            self.stats.forgotten += 1;
        }
    }

    /// Handles one partition's batch of a Produce request that reached broker `node`.
    pub fn produce(&mut self, node: i32, partition: i32, bytes: &Bytes, inject: Inject) -> BatchAnswer {
        self.stats.batches += 1;
        let reject = |error| BatchAnswer { error, base_offset: -1, appended: false, duplicate: false };
        let batch = match RecordBatch::parse(bytes.clone()) {
            Ok(b) => b,
            Err(e) => {
                self.stats.corrupt += 1;
                self.violations.push(format!("p{partition}: unparsable batch: {e}"));
                return reject(ErrorCode::CORRUPT_MESSAGE);
            }
        };
        let h = batch.header().clone();
        let mut ids = Vec::with_capacity(h.record_count.max(0) as usize);
        for r in batch.records(64 << 20) {
            match r {
                Ok(r) => {
                    let key = r.key.unwrap_or_default();
                    if key.len() != 8 {
                        self.violations.push(format!("p{partition}: record key of {} bytes", key.len()));
                        return reject(ErrorCode::CORRUPT_MESSAGE);
                    }
                    let id = u64::from_be_bytes(key[..8].try_into().unwrap());
                    let value = r.value.unwrap_or_default();
                    if value.len() < 8 || value[..8] != key[..] {
                        self.violations.push(format!("p{partition}: record {id}: value does not match key"));
                    }
                    ids.push(id);
                }
                Err(e) => {
                    self.stats.corrupt += 1;
                    self.violations.push(format!("p{partition}: undecodable records: {e}"));
                    return reject(ErrorCode::CORRUPT_MESSAGE);
                }
            }
        }
        if ids.len() as i32 != h.record_count || ids.is_empty() {
            self.violations.push(format!("p{partition}: record count {} vs {}", ids.len(), h.record_count));
            return reject(ErrorCode::CORRUPT_MESSAGE);
        }
        // What any broker would see in the header, whatever it then answers.
        let pid = h.producer_id;
        match self.max_epoch.get(&pid) {
            None => {
                self.stats.producer_ids_seen += 1;
                self.max_epoch.insert(pid, h.producer_epoch);
            }
            Some(&e) if h.producer_epoch > e => {
                self.stats.epoch_bumps_seen += 1;
                self.max_epoch.insert(pid, h.producer_epoch);
            }
            _ => {}
        }

        let part = &mut self.partitions[partition as usize];
        if part.leader != node {
            self.stats.not_leader += 1;
            return reject(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        if inject == Inject::ForgetProducer {
            part.forgets += 1;
            for (p, st) in part.producers.drain() {
                part.forgotten.insert(p, st.epoch);
                self.stats.forgotten += 1;
            }
        }
        if let Inject::Before(code) = inject {
            return reject(code);
        }
        // Kafka checks the size before the producer state: a refused batch leaves no trace.
        if self.max_batch_bytes.is_some_and(|max| bytes.len() > max) {
            return reject(ErrorCode::MESSAGE_TOO_LARGE);
        }

        let epoch = h.producer_epoch;
        let base = h.base_sequence;
        let count = ids.len() as i32;
        let last = seq_add(base, count - 1);
        if pid >= 0 {
            match part.producers.get(&pid) {
                None => {
                    if let Some(&fe) = part.forgotten.get(&pid) {
                        if epoch < fe {
                            self.stats.invalid_epoch += 1;
                            return reject(ErrorCode::INVALID_PRODUCER_EPOCH);
                        }
                        if epoch == fe {
                            self.stats.unknown_producer += 1;
                            return reject(ErrorCode::UNKNOWN_PRODUCER_ID);
                        }
                    }
                    // Like Kafka: a producer id the partition holds no state for may start at
                    // any sequence. (So a later batch that reaches the partition before a
                    // retried earlier one is appended first; the client must prevent that.)
                }
                Some(st) => {
                    if epoch < st.epoch {
                        self.stats.invalid_epoch += 1;
                        self.violations.push(format!(
                            "p{partition}: INVALID_PRODUCER_EPOCH: batch epoch {epoch} seq {base} < broker epoch {}",
                            st.epoch
                        ));
                        return reject(ErrorCode::INVALID_PRODUCER_EPOCH);
                    }
                    if epoch > st.epoch {
                        if base != 0 {
                            self.stats.out_of_order += 1;
                            return reject(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
                        }
                    } else if let Some(&(_, _, off)) = st.recent.iter().find(|(b, l, _)| *b == base && *l == last) {
                        self.stats.duplicates += 1;
                        return BatchAnswer {
                            error: self.duplicate_code,
                            base_offset: off,
                            appended: false,
                            duplicate: true,
                        };
                    } else if base != seq_add(st.last_sequence, 1) {
                        self.stats.out_of_order += 1;
                        return reject(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER);
                    }
                }
            }
        }
        // Append.
        let base_offset = part.log.len() as i64;
        for (i, id) in ids.iter().enumerate() {
            part.log.push(LogEntry {
                offset: base_offset + i as i64,
                record_id: *id,
                producer_id: pid,
                epoch,
                sequence: seq_add(base, i as i32),
            });
        }
        if pid >= 0 {
            let st = part.producers.entry(pid).or_insert(ProducerState {
                epoch,
                last_sequence: -1,
                recent: VecDeque::new(),
            });
            if st.epoch != epoch {
                st.epoch = epoch;
                st.recent.clear();
            }
            st.last_sequence = last;
            st.recent.push_back((base, last, base_offset));
            if st.recent.len() > 5 {
                st.recent.pop_front();
            }
            part.forgotten.remove(&pid);
        }
        self.stats.appended_batches += 1;
        self.stats.appended_records += ids.len() as u64;
        let error = match inject {
            Inject::After(code) => code,
            _ => ErrorCode::NONE,
        };
        BatchAnswer {
            error,
            base_offset: if error == ErrorCode::NONE { base_offset } else { -1 },
            appended: true,
            duplicate: false,
        }
    }
}

/// Kafka's sequence arithmetic: wraps from i32::MAX to 0.
pub fn seq_add(seq: i32, n: i32) -> i32 {
    let v = i64::from(seq) + i64::from(n);
    (v % (i64::from(i32::MAX) + 1)) as i32
}
