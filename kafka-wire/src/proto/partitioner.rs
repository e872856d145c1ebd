//! Choosing the partition of a record, as the Java producer's built-in partitioner does.
//!
//! Precedence ([`choose_partition`]): a partition the caller names wins; else a record with a
//! key goes to `toPositive(murmur2(key)) % partitions` (unless `partitioner.ignore.keys=true`),
//! so that keyed records land where Java producers put them; else the record goes to the
//! topic's current *sticky* partition (KIP-480, refined by KIP-794's uniform sticky
//! partitioner, [`StickyPartitioner`]).
//!
//! Pure and sans-IO: metadata (partition count, partitions with a leader, queue sizes) comes in
//! as arguments, and randomness comes from a seeded generator so that tests are reproducible.

use rustc_hash::FxHashMap;

/// Kafka's "unknown partition" (`RecordMetadata.UNKNOWN_PARTITION`), returned when a topic has
/// no partitions: it is never a valid partition, so a caller's lookup of it fails visibly
/// instead of silently producing to partition 0.
pub const UNKNOWN_PARTITION: i32 = -1;

/// 32-bit MurmurHash2 with Kafka's seed, bit for bit the same as Java's `Utils.murmur2`.
///
/// The arithmetic is Java's: wrapping 32-bit multiplication, logical (`>>>`) right shifts,
/// little-endian 4-byte blocks, and the tail bytes folded in the order of Java's fall-through
/// `switch` (byte 2, then 1, then 0, then one multiply). Keyed records must hash identically to
/// the Java client's, or records with the same key would land on different partitions
/// depending on which client produced them.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java takes `data.length` as an int; keys are bounded far below 2^31 by the request size,
    // and truncation here would still match Java's `int` view of any length that fits.
    let mut h = SEED ^ (data.len() as u32);

    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // Java's `switch (length % 4)` falls through from case 3 down to case 1; the multiply
    // belongs to case 1, so it happens once for any non-empty tail.
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&first) = tail.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Java's `Utils.toPositive`: clears the sign bit. Not `abs`: `i32::MIN` maps to 0 and negative
/// values keep their low 31 bits, which is what decides the partition of existing data.
pub const fn to_positive(value: i32) -> i32 {
    value & 0x7fff_ffff
}

/// The partition of a record with `key` in a topic of `num_partitions` partitions:
/// `toPositive(murmur2(key)) % num_partitions`, as Java's `BuiltInPartitioner.partitionForKey`.
///
/// The hash is over *all* partitions, available or not, so that a key's partition does not move
/// while a leader is down. An empty key is a key (it hashes); only an absent key is sticky.
/// [`UNKNOWN_PARTITION`] if `num_partitions` is 0.
pub fn partition_for_key(key: &[u8], num_partitions: u32) -> i32 {
    // `to_positive` is in 0..2^31, so the remainder fits in an i32 for any u32 divisor.
    match (to_positive(murmur2(key)) as u32).checked_rem(num_partitions) {
        Some(p) => p as i32,
        None => UNKNOWN_PARTITION,
    }
}

/// How [`choose_partition`] chose; the partition is in each variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionChoice {
    /// The caller named the partition. It is passed through unchecked (the Java producer also
    /// only checks it later, against metadata: "Invalid partition given with record").
    Explicit(i32),
    /// The key's hash decided ([`partition_for_key`]).
    Keyed(i32),
    /// The sticky partitioner decided; report the appended bytes with
    /// [`StickyPartitioner::record_appended`] so that it moves on after a batch.
    Sticky(i32),
}

impl PartitionChoice {
    /// The chosen partition.
    pub const fn partition(self) -> i32 {
        match self {
            Self::Explicit(p) | Self::Keyed(p) | Self::Sticky(p) => p,
        }
    }
}

/// Picks the partition of one record with the Java producer's precedence: `explicit` wins; then
/// the key's hash unless `ignore_keys` (`partitioner.ignore.keys`); else `sticky`'s current
/// partition for `topic`. `available` are the partitions whose leader is known (see
/// [`StickyPartitioner::partition`]).
pub fn choose_partition(
    explicit: Option<i32>,
    key: Option<&[u8]>,
    ignore_keys: bool,
    topic: &str,
    num_partitions: u32,
    available: &[i32],
    sticky: &mut StickyPartitioner,
) -> PartitionChoice {
    if let Some(p) = explicit {
        return PartitionChoice::Explicit(p);
    }
    match key {
        Some(key) if !ignore_keys => PartitionChoice::Keyed(partition_for_key(key, num_partitions)),
        _ => PartitionChoice::Sticky(sticky.partition(topic, num_partitions, available)),
    }
}

/// KIP-794's uniform sticky partitioner, for records without a key (or with ignored keys).
///
/// Per topic it sticks to one partition until at least `batch_size` bytes were appended to it
/// ([`record_appended`](Self::record_appended)), so that records fill one batch rather than
/// trickling into many; then the next [`partition`](Self::partition) call picks a new one at
/// random among the partitions with a leader (among all if none is known to have one). The new
/// pick may be the old partition again, as in Java; over many batches each partition gets an
/// equal share.
///
/// Adaptive partitioning (`partitioner.adaptive.partitioning.enable`, on by default): given the
/// queue sizes per partition ([`set_queue_sizes`](Self::set_queue_sizes)), the pick is weighted
/// by `max_queue + 1 - queue`, Java's formula, so partitions whose brokers drain slowly get
/// fewer new batches. Without queue sizes, or when they are all equal, the pick is uniform.
///
/// Not implemented (documented deviations from Java):
/// - `partitioner.availability.timeout.ms` (excluding partitions whose broker has not accepted
///   a batch for that long); it defaults to 0 = off in Java as well.
/// - Java defers the switch while the current batch is not yet ready to send (up to
///   2 × `batch_size`), to avoid fractional batches under a long `linger.ms`; here the switch
///   happens at `batch_size`.
/// - The current partition is kept until the switch even if its leader goes away (as in Java:
///   the batch waits for a leader), unless it is no longer below the partition count.
#[derive(Clone, Debug)]
pub struct StickyPartitioner {
    batch_size: usize,
    adaptive: bool,
    rng: XorShift64Star,
    /// Each topic's state, found through `index` (FxHash: looked up for every keyless record,
    /// where SipHash of the topic was 8 % of the producer's instructions), or as `last`.
    topics: Vec<(String, TopicState)>,
    index: FxHashMap<String, usize>,
    /// The topic looked up last: a producer's records mostly go to the topic of the record
    /// before, found then by one comparison of names instead of a hash and a probe.
    last: usize,
}

#[derive(Clone, Debug, Default)]
struct TopicState {
    /// The sticky partition and the bytes appended to it; `None` after a switch until the next
    /// `partition` call, which knows the available partitions to pick from.
    current: Option<(i32, usize)>,
    /// Cumulative weights for the adaptive pick: `(partition, running sum of weights)`, sorted
    /// by the running sum by construction. Empty = pick uniformly.
    load: Vec<(i32, u64)>,
}

impl StickyPartitioner {
    /// A partitioner that switches after `batch_size` bytes (`batch.size`; 0 counts as 1, as
    /// the Java producer does, since `batch.size=0` is legal there), seeded with `seed`.
    /// Adaptive partitioning is on.
    pub fn new(batch_size: usize, seed: u64) -> Self {
        Self {
            batch_size: batch_size.max(1),
            adaptive: true,
            rng: XorShift64Star::new(seed),
            topics: Vec::new(),
            index: FxHashMap::default(),
            last: 0,
        }
    }

    /// Where the topic's state is, if it has one.
    fn find(&self, topic: &str) -> Option<usize> {
        match self.topics.get(self.last) {
            Some((name, _)) if name == topic => Some(self.last),
            _ => self.index.get(topic).copied(),
        }
    }

    fn get(&self, topic: &str) -> Option<&TopicState> {
        self.find(topic).map(|i| &self.topics[i].1)
    }

    /// Where the topic's state is, created on its first use (the only time its name is copied).
    fn slot(&mut self, topic: &str) -> usize {
        self.last = self.find(topic).unwrap_or_else(|| {
            self.topics.push((topic.to_owned(), TopicState::default()));
            self.index.insert(topic.to_owned(), self.topics.len() - 1);
            self.topics.len() - 1
        });
        self.last
    }

    /// Turns adaptive partitioning (`partitioner.adaptive.partitioning.enable`) on or off.
    pub fn with_adaptive(mut self, adaptive: bool) -> Self {
        self.adaptive = adaptive;
        if !adaptive {
            for (_, state) in &mut self.topics {
                state.load.clear();
            }
        }
        self
    }

    /// The current sticky partition of `topic` if it has one (and it is below
    /// `num_partitions`): what [`partition`](Self::partition) returns without picking, so a
    /// caller can skip working out the available partitions for it.
    pub fn current(&self, topic: &str, num_partitions: u32) -> Option<i32> {
        let (p, _) = self.get(topic)?.current?;
        u32::try_from(p).is_ok_and(|p| p < num_partitions).then_some(p)
    }

    /// The partition for the next keyless record of `topic`, which has `num_partitions`
    /// partitions of which `available` have a known leader (unknown or out-of-range ids in
    /// `available` are ignored). [`UNKNOWN_PARTITION`] if the topic has no partitions.
    pub fn partition(&mut self, topic: &str, num_partitions: u32, available: &[i32]) -> i32 {
        if num_partitions == 0 {
            return UNKNOWN_PARTITION;
        }
        let in_range = |p: i32| u32::try_from(p).is_ok_and(|p| p < num_partitions);
        if let Some(state) = self.get(topic) {
            if let Some((p, _)) = state.current {
                if in_range(p) {
                    return p;
                }
            }
        }
        let i = self.slot(topic);
        let state = &mut self.topics[i].1;
        let p = next_partition(&mut self.rng, &state.load, num_partitions, available);
        state.current = Some((p, 0));
        p
    }

    /// Reports `bytes` appended to `partition` of `topic`. Once the sticky partition has
    /// received `batch_size` bytes, the next [`partition`](Self::partition) call picks a new
    /// one. Appends to other partitions (keyed or explicit records) do not count, as in Java.
    pub fn record_appended(&mut self, topic: &str, partition: i32, bytes: usize) {
        let Some(i) = self.find(topic) else { return };
        let state = &mut self.topics[i].1;
        if let Some((p, produced)) = &mut state.current {
            if *p == partition {
                *produced = produced.saturating_add(bytes);
                if *produced >= self.batch_size {
                    state.current = None;
                }
            }
        }
    }

    /// [`partition`](Self::partition) and [`record_appended`](Self::record_appended) of a
    /// record of `bytes` in one look-up of the topic's state, for a producer's hot path: the
    /// partition of the next keyless record of `topic`, with the record counted in it. The
    /// partitions with a leader, `available`, are asked for only when a new partition is picked.
    /// [`UNKNOWN_PARTITION`] if the topic has no partitions.
    pub fn sticky_append(
        &mut self,
        topic: &str,
        num_partitions: u32,
        bytes: usize,
        available: impl FnOnce() -> Vec<i32>,
    ) -> i32 {
        if num_partitions == 0 {
            return UNKNOWN_PARTITION;
        }
        let i = self.slot(topic);
        let state = &mut self.topics[i].1;
        let (p, produced) = match state.current {
            Some((p, produced)) if u32::try_from(p).is_ok_and(|p| p < num_partitions) => (p, produced),
            _ => (next_partition(&mut self.rng, &state.load, num_partitions, &available()), 0),
        };
        let produced = produced.saturating_add(bytes);
        state.current = (produced < self.batch_size).then_some((p, produced));
        p
    }

    /// Sets the queue sizes (batches waiting to be sent) of `topic`'s partitions that have a
    /// leader, as `(partition, queue size)`, for the adaptive pick; the Java producer refreshes
    /// them each time its sender checks which batches are ready. Partitions left out are not
    /// picked while these sizes are in force. Fewer than two partitions, equal sizes, or
    /// adaptive partitioning off mean a uniform pick.
    pub fn set_queue_sizes(&mut self, topic: &str, queue_sizes: &[(i32, usize)]) {
        let i = self.slot(topic);
        let state = &mut self.topics[i].1;
        state.load.clear();
        let Some(max) = queue_sizes.iter().map(|&(_, q)| q as u64).max() else {
            return;
        };
        let all_equal = queue_sizes.iter().all(|&(_, q)| q as u64 == max);
        if !self.adaptive || queue_sizes.len() < 2 || all_equal {
            return;
        }
        // Invert the sizes (longest queue → weight 1) and accumulate, so that a uniform number
        // in 0..total falls into a partition's range with probability weight / total.
        let mut total = 0u64;
        for &(p, q) in queue_sizes {
            total = total.saturating_add(max + 1 - q as u64);
            state.load.push((p, total));
        }
    }
}

/// Picks a new sticky partition: weighted by `load` if there is one, else uniformly among the
/// available partitions, else among all.
fn next_partition(rng: &mut XorShift64Star, load: &[(i32, u64)], num_partitions: u32, available: &[i32]) -> i32 {
    let in_range = |p: i32| u32::try_from(p).is_ok_and(|p| p < num_partitions);
    if let Some(&(_, total)) = load.last() {
        let x = rng.below(total);
        // The first running sum strictly greater than x is the chosen partition's.
        let idx = load.partition_point(|&(_, sum)| sum <= x);
        if let Some(&(p, _)) = load.get(idx) {
            // Queue sizes can be older than the metadata; a pick that is no longer available
            // falls back to the uniform pick below rather than to a leaderless partition.
            if in_range(p) && (available.is_empty() || available.contains(&p)) {
                return p;
            }
        }
    }
    let candidates = available.iter().filter(|&&p| in_range(p)).count();
    if candidates > 0 {
        let nth = rng.below(candidates as u64) as usize;
        if let Some(&p) = available.iter().filter(|&&p| in_range(p)).nth(nth) {
            return p;
        }
    }
    rng.below(u64::from(num_partitions)) as i32
}

/// xorshift64* (Vigna): tiny, fast, and good enough to spread batches; seeded through
/// splitmix64 so that any seed, 0 included, gives a non-zero state.
#[derive(Clone, Debug)]
struct XorShift64Star(u64);

impl XorShift64Star {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self(if z == 0 { 0x9e37_79b9_7f4a_7c15 } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 if `n` is 0). The modulo bias is below n / 2^64: negligible for
    /// partition counts.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Computed with Java's `Utils.murmur2` and `BuiltInPartitioner.partitionForKey` (Kafka
    /// 4.1.2) by tests/java/PartitionerCheck.java: key hex, murmur2, partitions for 6, 7, 100.
    const JAVA_VECTORS: &[(&str, i32, i32, i32, i32)] = &[
        ("", 275646681, 3, 2, 81),
        ("00", 375494588, 2, 0, 88),
        ("61", -1563381124, 4, 5, 24),
        ("6162", 316155434, 2, 0, 34),
        ("616263", 479470107, 3, 4, 7),
        ("61626364", -1323649548, 2, 5, 0),
        ("6162636465", 461995741, 1, 4, 41),
        ("ff", -311467685, 3, 5, 63),
        ("fffe", 1717632651, 3, 0, 51),
        ("fffefd", 998637092, 2, 5, 92),
        ("fffefdfc", 2136149935, 1, 3, 35),
        ("80818283848586", -47880214, 4, 5, 34),
        ("68656c6c6f", 2132663229, 3, 4, 29),
        ("6b6579", -1079937367, 1, 4, 81),
        ("6b65792d31", 193331640, 0, 5, 40),
        ("31323334353637383930", 1249327157, 5, 1, 57),
        ("00000000", 850957120, 4, 6, 20),
    ];

    #[test]
    fn current_is_what_partition_returns_until_the_switch() {
        let mut sticky = StickyPartitioner::new(100, 7);
        assert_eq!(sticky.current("t", 6), None, "no pick yet");
        let p = sticky.partition("t", 6, &[0, 1, 2, 3, 4, 5]);
        for _ in 0..3 {
            assert_eq!(sticky.current("t", 6), Some(p));
            assert_eq!(sticky.partition("t", 6, &[]), p);
            sticky.record_appended("t", p, 30);
        }
        sticky.record_appended("t", p, 30);
        assert_eq!(sticky.current("t", 6), None, "120 bytes of a 100-byte batch: the next record picks anew");
        let q = sticky.partition("t", 6, &[4]);
        assert_eq!((q, sticky.current("t", 6)), (4, Some(4)));
        assert_eq!(sticky.current("t", 4), None, "a partition past the topic's count is not current");
    }

    /// Topics interleaved record by record keep states of their own: the last-topic shortcut
    /// never hands one topic's sticky partition or byte count to another.
    #[test]
    fn interleaved_topics_keep_their_own_sticky_partitions() {
        let mut sticky = StickyPartitioner::new(100, 7);
        let a = sticky.sticky_append("a", 6, 30, || vec![1]);
        let b = sticky.sticky_append("bb", 6, 60, || vec![2]);
        assert_eq!((a, b), (1, 2));
        assert_eq!(sticky.sticky_append("a", 6, 30, || vec![3]), 1, "a: 60 bytes, no switch");
        assert_eq!(sticky.sticky_append("bb", 6, 30, || vec![3]), 2, "bb: 90 bytes, no switch");
        assert_eq!(sticky.current("a", 6), Some(1));
        assert_eq!(sticky.sticky_append("bb", 6, 30, || vec![3]), 2, "bb: 120 bytes, switches after");
        assert_eq!(sticky.current("a", 6), Some(1), "a is untouched by bb's switch");
        assert_eq!(sticky.current("bb", 6), None);
        assert_eq!(sticky.sticky_append("a", 6, 30, || vec![3]), 1, "a: 90 bytes");
        assert_eq!(sticky.sticky_append("bb", 6, 10, || vec![4]), 4, "bb picks anew");
        assert_eq!(sticky.sticky_append("a", 6, 30, || vec![5]), 1, "a: 120 bytes, switches after");
        assert_eq!(sticky.sticky_append("a", 6, 30, || vec![5]), 5);
        assert_eq!(sticky.current("bb", 6), Some(4));
        assert_eq!(sticky.current("c", 6), None, "a topic never seen");
    }

    #[test]
    fn murmur2_matches_java() {
        assert!(!JAVA_VECTORS.is_empty());
        for &(key, hash, p6, p7, p100) in JAVA_VECTORS {
            let key = hex(key);
            assert_eq!(murmur2(&key), hash, "murmur2({key:02x?})");
            assert_eq!(partition_for_key(&key, 6), p6, "{key:02x?} % 6");
            assert_eq!(partition_for_key(&key, 7), p7, "{key:02x?} % 7");
            assert_eq!(partition_for_key(&key, 100), p100, "{key:02x?} % 100");
        }
    }

    #[test]
    fn to_positive_is_javas() {
        assert_eq!(to_positive(5), 5);
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(i32::MIN), 0);
    }

    #[test]
    fn no_partitions_is_unknown() {
        assert_eq!(partition_for_key(b"k", 0), UNKNOWN_PARTITION);
        let mut sticky = StickyPartitioner::new(100, 1);
        assert_eq!(sticky.partition("t", 0, &[]), UNKNOWN_PARTITION);
    }

    #[test]
    fn precedence() {
        let mut sticky = StickyPartitioner::new(100, 1);
        let key = Some(&b"key"[..]);
        let keyed = partition_for_key(b"key", 6);
        assert_eq!(choose_partition(Some(4), key, false, "t", 6, &[], &mut sticky), PartitionChoice::Explicit(4));
        assert_eq!(choose_partition(None, key, false, "t", 6, &[], &mut sticky), PartitionChoice::Keyed(keyed));
        // An empty key is a key.
        let empty = partition_for_key(b"", 6);
        assert_eq!(choose_partition(None, Some(b""), false, "t", 6, &[], &mut sticky), PartitionChoice::Keyed(empty));
        let s = sticky.partition("t", 6, &[]);
        assert_eq!(choose_partition(None, key, true, "t", 6, &[], &mut sticky), PartitionChoice::Sticky(s));
        assert_eq!(choose_partition(None, None, false, "t", 6, &[], &mut sticky), PartitionChoice::Sticky(s));
    }

    #[test]
    fn sticks_until_batch_size_then_switches() {
        let mut sticky = StickyPartitioner::new(1000, 7);
        let mut switches = 0;
        let mut changes = 0;
        let mut current = sticky.partition("t", 6, &[]);
        for _ in 0..20 {
            // 9 × 100 bytes: below the batch size, the partition holds.
            for _ in 0..9 {
                assert_eq!(sticky.partition("t", 6, &[]), current);
                sticky.record_appended("t", current, 100);
            }
            // Appends elsewhere (keyed records) do not count.
            sticky.record_appended("t", (current + 1) % 6, 5000);
            assert_eq!(sticky.partition("t", 6, &[]), current);
            // The 10th reaches 1000 bytes: the next pick is a new draw.
            sticky.record_appended("t", current, 100);
            switches += 1;
            let next = sticky.partition("t", 6, &[]);
            assert!((0..6).contains(&next));
            if next != current {
                changes += 1;
            }
            current = next;
        }
        assert_eq!(switches, 20);
        // A redraw may land on the same partition (1 in 6), but not 20 times in a row.
        assert!(changes >= 10, "{changes} changes in 20 switches");
    }

    #[test]
    fn sticky_append_picks_as_partition_then_record_appended() {
        // Same seed, same sizes: the one-look-up path picks exactly the partitions of the
        // two-call path, and asks for the available partitions only when it picks.
        let (mut one, mut two) = (StickyPartitioner::new(1000, 11), StickyPartitioner::new(1000, 11));
        let mut asked = 0;
        for i in 0..500 {
            let bytes = 90 + i % 40;
            let p = one.sticky_append("t", 6, bytes, || {
                asked += 1;
                vec![0, 2, 3, 5]
            });
            let q = two.partition("t", 6, &[0, 2, 3, 5]);
            two.record_appended("t", q, bytes);
            assert_eq!(p, q, "record {i}");
        }
        assert!((40..=60).contains(&asked), "{asked} picks for about 55 KB in batches of 1000 B");
        assert_eq!(one.sticky_append("t", 0, 10, Vec::new), UNKNOWN_PARTITION);
    }

    #[test]
    fn topics_are_independent() {
        let mut sticky = StickyPartitioner::new(10, 3);
        let a = sticky.partition("a", 100, &[]);
        sticky.record_appended("b", a, 1000);
        assert_eq!(sticky.partition("a", 100, &[]), a);
    }

    /// Counts the partitions picked over `batches` switches.
    fn distribution(sticky: &mut StickyPartitioner, n: u32, available: &[i32], batches: usize) -> Vec<usize> {
        let mut counts = vec![0; n as usize];
        for _ in 0..batches {
            let p = sticky.partition("t", n, available);
            counts[p as usize] += 1;
            sticky.record_appended("t", p, 16384);
        }
        counts
    }

    #[test]
    fn uniform_over_many_batches() {
        let mut sticky = StickyPartitioner::new(16384, 42);
        let counts = distribution(&mut sticky, 6, &[], 6000);
        for (p, &c) in counts.iter().enumerate() {
            assert!((600..=1500).contains(&c), "partition {p} got {c} of 6000: {counts:?}");
        }
    }

    #[test]
    fn only_available_partitions() {
        let mut sticky = StickyPartitioner::new(16384, 9);
        // 7 and -1 are not partitions of a 6-partition topic and are ignored.
        let counts = distribution(&mut sticky, 6, &[1, 3, 4, 7, -1], 3000);
        assert_eq!((counts[0], counts[2], counts[5]), (0, 0, 0), "{counts:?}");
        for p in [1, 3, 4] {
            assert!((700..=1300).contains(&counts[p]), "{counts:?}");
        }
    }

    #[test]
    fn adaptive_avoids_long_queues() {
        let mut sticky = StickyPartitioner::new(16384, 5);
        // Weights 10 - q: partition 0 → 10, 1 → 1, 2 → 10 (total 21).
        sticky.set_queue_sizes("t", &[(0, 0), (1, 9), (2, 0)]);
        let counts = distribution(&mut sticky, 3, &[0, 1, 2], 4200);
        assert!(counts[1] < 400, "{counts:?}"); // expected 200
        assert!(counts[0] > 1600 && counts[2] > 1600, "{counts:?}"); // expected 2000 each

        // Off: uniform again.
        let mut sticky = StickyPartitioner::new(16384, 5).with_adaptive(false);
        sticky.set_queue_sizes("t", &[(0, 0), (1, 9), (2, 0)]);
        let counts = distribution(&mut sticky, 3, &[0, 1, 2], 4200);
        assert!(counts.iter().all(|&c| (1100..=1700).contains(&c)), "{counts:?}");

        // A weighted pick of a partition that lost its leader falls back to the available ones.
        let mut sticky = StickyPartitioner::new(16384, 5);
        sticky.set_queue_sizes("t", &[(0, 0), (1, 9), (2, 0)]);
        let counts = distribution(&mut sticky, 3, &[1], 500);
        assert_eq!(counts, [0, 500, 0]);
    }

    #[test]
    fn deterministic_with_seed() {
        let run = |seed| distribution(&mut StickyPartitioner::new(1, seed), 50, &[], 200);
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }
}
