//! Writes seed inputs for the operation-sequence targets (`seq_producer`, `seq_fetcher`,
//! `seq_group_member`, `seq_transaction`) into `corpus/<target>/`: happy paths and one path per fault
//! the machine handles, so the fuzzer starts past the first round trips.
//!
//! The targets decode their input with `arbitrary` (1.x): integers little-endian, `bool` as a
//! byte's low bit, an enum variant as a `u32` scaled by the variant count, `Option` as a `bool`
//! then the value, and the trailing `Vec<Op>` as (continue byte, op)*. [`Enc`] writes that
//! format; the variant indices below follow the declaration order of each target's `Op` (keep
//! them in step when the enums change).

use std::fs;
use std::path::Path;

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(v as u8)
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Variant `k` of an enum of `n` variants: the smallest `u32` that `arbitrary` maps to it.
    fn variant(&mut self, k: u32, n: u32) -> &mut Self {
        let v = ((k as u64) << 32).div_ceil(n as u64) as u32;
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// The next element of the trailing operation list.
    fn op(&mut self, k: u32, n: u32) -> &mut Self {
        self.u8(1).variant(k, n)
    }
}

struct Corpus {
    dir: std::path::PathBuf,
    count: usize,
}

impl Corpus {
    fn new(root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        Self { dir, count: 0 }
    }
    fn add(&mut self, e: Enc) {
        self.count += 1;
        fs::write(self.dir.join(format!("seq-seed-{:03}", self.count)), e.0).unwrap();
    }
}

// ---- seq_producer: Op has 12 variants, Fault 5 ----
mod producer {
    use super::Enc;
    const N: u32 = 12;
    pub fn append(e: &mut Enc, p: u8, records: u8) {
        e.op(0, N).u8(p).u8(records).u8(16);
    }
    pub fn advance(e: &mut Enc, ms: u16) {
        e.op(1, N).u16(ms);
    }
    pub fn send(e: &mut Enc) {
        e.op(2, N);
    }
    /// `fault`: (variant, payload byte or i16).
    pub fn arrive(e: &mut Enc, fault: (u32, i16)) {
        e.op(4, N).u8(0);
        for _ in 0..3 {
            e.variant(fault.0, 5);
            match fault.0 {
                1 | 2 => {
                    e.u8(fault.1 as u8);
                }
                4 => {
                    e.i16(fault.1);
                }
                _ => {}
            }
        }
    }
    pub fn answer(e: &mut Enc, keep: bool) {
        e.op(5, N).u8(0).bool(keep).bool(false);
    }
    pub fn lose(e: &mut Enc) {
        e.op(6, N).u8(0);
    }
    pub fn leader_move(e: &mut Enc, p: u8, to: u8) {
        e.op(7, N).u8(p).u8(to);
    }
    pub fn learns(e: &mut Enc, p: u8) {
        e.op(8, N).u8(p);
    }
    pub fn give_pid(e: &mut Enc, bump: bool) {
        e.op(10, N).bool(bump);
    }
    /// Appends to every partition, then `rounds` of send / arrive / answer.
    pub fn round_trip(e: &mut Enc, fault: (u32, i16)) {
        for p in 0..3 {
            append(e, p, 3);
        }
        advance(e, 10);
        send(e);
        for _ in 0..3 {
            arrive(e, fault);
            answer(e, false);
        }
    }
}

fn producer_seeds(c: &mut Corpus) {
    use producer::*;
    let happy = |e: &mut Enc| {
        advance(e, 200);
        give_pid(e, true);
        send(e);
        for _ in 0..3 {
            arrive(e, (0, 0));
            answer(e, false);
        }
    };
    let mut e = Enc::default();
    round_trip(&mut e, (0, 0));
    round_trip(&mut e, (0, 0));
    c.add(e);
    for b in 0..10 {
        let mut e = Enc::default();
        round_trip(&mut e, (1, b));
        happy(&mut e);
        c.add(e);
    }
    for (f, x) in [(2, 0), (2, 1), (3, 0), (4, 87)] {
        let mut e = Enc::default();
        round_trip(&mut e, (0, 0));
        round_trip(&mut e, (f, x));
        happy(&mut e);
        c.add(e);
    }
    // Lost answer after the append, then a duplicate answer.
    let mut e = Enc::default();
    round_trip(&mut e, (0, 0));
    append(&mut e, 0, 4);
    advance(&mut e, 10);
    send(&mut e);
    arrive(&mut e, (0, 0));
    lose(&mut e);
    advance(&mut e, 150);
    send(&mut e);
    arrive(&mut e, (0, 0));
    answer(&mut e, true);
    answer(&mut e, false);
    c.add(e);
    // Leader move the client learns late.
    let mut e = Enc::default();
    round_trip(&mut e, (0, 0));
    leader_move(&mut e, 0, 1);
    round_trip(&mut e, (0, 0));
    learns(&mut e, 0);
    happy(&mut e);
    c.add(e);
}

// ---- seq_fetcher: Op has 10 variants ----
mod fetcher {
    use super::Enc;
    const N: u32 = 10;
    pub fn input(partitions: u8, read_committed: bool, reset_none: bool) -> Enc {
        let mut e = Enc::default();
        e.u8(partitions).bool(read_committed).bool(reset_none).u16(19_999).u16(3_999).u16(49_999);
        e
    }
    pub fn append(e: &mut Enc, p: u8, kind: u8, count: u8, codec: u8, commit: bool) {
        e.op(0, N).u8(p).u8(kind).u8(count).u8(codec).bool(commit);
    }
    pub fn move_leader(e: &mut Enc, p: u8, to: u8) {
        e.op(1, N).u8(p).u8(to);
    }
    pub fn truncate(e: &mut Enc, p: u8, drop: u8, to: u8) {
        e.op(2, N).u8(p).u8(drop).u8(to);
    }
    pub fn evict(e: &mut Enc, node: u8) {
        e.op(3, N).u8(node);
    }
    pub fn send(e: &mut Enc, lose: u8) {
        e.op(4, N).u8(lose).u8(0xff);
    }
    pub fn deliver(e: &mut Enc, twice: bool) {
        e.op(5, N).u8(0).bool(twice);
    }
    pub fn decompress(e: &mut Enc) {
        e.op(6, N).bool(false);
    }
    pub fn take(e: &mut Enc) {
        e.op(7, N).u8(99);
    }
    pub fn advance(e: &mut Enc, ms: u16) {
        e.op(9, N).u16(ms);
    }
    pub fn rounds(e: &mut Enc, n: usize) {
        for _ in 0..n {
            send(e, 0);
            for _ in 0..4 {
                deliver(e, false);
            }
            decompress(e);
            take(e);
            advance(e, 20);
        }
    }
}

fn fetcher_seeds(c: &mut Corpus) {
    use fetcher::*;
    for (rc, reset_none) in [(false, false), (true, false), (true, true), (false, true)] {
        for codec in [7, 0, 1, 2, 3] {
            let mut e = input(1, rc, reset_none);
            rounds(&mut e, 3);
            append(&mut e, 0, 0, 3, codec, false);
            append(&mut e, 1, 4, 2, codec, false);
            append(&mut e, 2, 5, 2, 7, false);
            append(&mut e, 1, 6, 1, 7, true);
            append(&mut e, 2, 7, 1, 7, false);
            append(&mut e, 0, 8, 1, 7, false);
            append(&mut e, 0, 0, 2, codec, false);
            rounds(&mut e, 6);
            c.add(e);
        }
    }
    // Leader moves, truncation, session eviction, lost and duplicated answers.
    for reset_none in [false, true] {
        let mut e = input(2, true, reset_none);
        rounds(&mut e, 2);
        for _ in 0..3 {
            append(&mut e, 0, 0, 2, 7, false);
            append(&mut e, 1, 0, 2, 7, false);
        }
        rounds(&mut e, 4);
        move_leader(&mut e, 0, 1);
        truncate(&mut e, 1, 1, 2);
        append(&mut e, 1, 0, 1, 7, false);
        evict(&mut e, 0);
        send(&mut e, 0x55);
        deliver(&mut e, true);
        deliver(&mut e, false);
        rounds(&mut e, 6);
        c.add(e);
    }
}

// ---- seq_group_member: Op has 11 variants ----
mod group {
    use super::Enc;
    const N: u32 = 11;
    pub fn counts(e: &mut Enc) {
        e.op(1, N).u8(3).u8(2);
    }
    pub fn poll(e: &mut Enc) {
        e.op(2, N);
    }
    pub fn revoked(e: &mut Enc) {
        e.op(3, N);
    }
    pub fn lost_handled(e: &mut Enc) {
        e.op(4, N);
    }
    pub fn commit(e: &mut Enc) {
        e.op(5, N).i64(42);
    }
    pub fn leave(e: &mut Enc) {
        e.op(6, N).bool(false);
    }
    pub fn answer(e: &mut Enc, code: u8, generation: i8, partitions: u16) {
        e.op(7, N).u8(0).u8(code).u8(generation as u8).bool(false).u16(partitions).bool(false);
    }
    pub fn fail(e: &mut Enc) {
        e.op(9, N).u8(0).bool(false);
    }
    pub fn advance(e: &mut Enc, ms: u16) {
        e.op(10, N).u16(ms);
    }
    /// `n` rounds of answering whatever is pending with NONE, polling and letting time pass.
    pub fn rounds(e: &mut Enc, n: usize, generation: i8, partitions: u16) {
        for _ in 0..n {
            for _ in 0..3 {
                answer(e, 0, generation, partitions);
            }
            poll(e);
            revoked(e);
            lost_handled(e);
            advance(e, 3_000);
        }
    }
}

fn group_seeds(c: &mut Corpus) {
    use group::*;
    for mode in [0u8, 2, 4, 6, 8, 1, 9] {
        let mut e = Enc::default();
        e.u8(mode);
        counts(&mut e);
        rounds(&mut e, 4, 0, 0x0305);
        commit(&mut e);
        rounds(&mut e, 2, 1, 0x0102);
        leave(&mut e);
        rounds(&mut e, 2, 0, 0);
        c.add(e);
        // Each handled error code once, in the middle of a healthy run.
        for code in 4..24u8 {
            let mut e = Enc::default();
            e.u8(mode);
            counts(&mut e);
            rounds(&mut e, 3, 0, 0x0305);
            answer(&mut e, code, 0, 0x0305);
            fail(&mut e);
            rounds(&mut e, 3, 1, 0x0106);
            c.add(e);
        }
    }
}

// ---- seq_transaction: Op has 16 variants, Fate 4 ----
mod transaction {
    use super::Enc;
    const N: u32 = 16;
    pub fn init(e: &mut Enc) {
        e.op(0, N);
    }
    pub fn begin(e: &mut Enc) {
        e.op(1, N);
    }
    pub fn produce(e: &mut Enc, p: u8) {
        e.op(2, N).u8(p);
    }
    pub fn send_offsets(e: &mut Enc) {
        e.op(3, N);
    }
    pub fn commit(e: &mut Enc) {
        e.op(4, N);
    }
    pub fn abort(e: &mut Enc) {
        e.op(5, N);
    }
    /// The oldest pending request reaches its coordinator; `fate`: 0 answered, 1 twice, 2 lost,
    /// 3 late.
    pub fn arrive(e: &mut Enc, fate: u32) {
        e.op(7, N).u8(0).variant(fate, 4);
    }
    pub fn lose_request(e: &mut Enc) {
        e.op(8, N).u8(0);
    }
    /// `code`: even picks from the refusals, odd (on TxnOffsetCommit) from the group's.
    pub fn refuse(e: &mut Enc, code: u8) {
        e.op(9, N).u8(0).u8(code);
    }
    pub fn late(e: &mut Enc) {
        e.op(11, N).u8(0);
    }
    pub fn move_coordinator(e: &mut Enc, group: bool, node: u8) {
        e.op(12, N).bool(group).u8(node);
    }
    pub fn produce_arrives(e: &mut Enc, ack_lost: bool) {
        e.op(13, N).u8(0).bool(ack_lost);
    }
    pub fn produce_lost(e: &mut Enc) {
        e.op(14, N).u8(0);
    }
    pub fn advance(e: &mut Enc, ms: u16) {
        e.op(15, N).u16(ms);
    }
    /// `n` rounds of: the oldest request answered, the oldest produce acknowledged, 50 ms.
    pub fn answers(e: &mut Enc, n: usize) {
        for _ in 0..n {
            arrive(e, 0);
            produce_arrives(e, false);
            advance(e, 50);
        }
    }
}

fn transaction_seeds(c: &mut Corpus) {
    use transaction::*;
    for version in [0u8, 2] {
        let start = |e: &mut Enc| {
            e.u8(version).i64(7);
            init(e);
            answers(e, 3);
            begin(e);
            produce(e, 0);
            produce(e, 1);
            answers(e, 2);
            produce(e, 0);
            produce(e, 1);
            send_offsets(e);
            answers(e, 3);
        };
        let mut e = Enc::default();
        start(&mut e);
        commit(&mut e);
        answers(&mut e, 6);
        begin(&mut e);
        produce(&mut e, 2);
        answers(&mut e, 2);
        abort(&mut e);
        answers(&mut e, 3);
        c.add(e);
        // A failed produce, then abort; a produce whose acknowledgement is lost.
        for ack_lost in [false, true] {
            let mut e = Enc::default();
            start(&mut e);
            if ack_lost {
                produce_arrives(&mut e, true);
            } else {
                produce_lost(&mut e);
            }
            commit(&mut e);
            abort(&mut e);
            answers(&mut e, 4);
            c.add(e);
        }
        // Each refusal on each step of a transaction.
        for code in 0..10u8 {
            let mut e = Enc::default();
            e.u8(version).i64(7);
            init(&mut e);
            refuse(&mut e, code);
            answers(&mut e, 3);
            begin(&mut e);
            produce(&mut e, 0);
            refuse(&mut e, code);
            answers(&mut e, 2);
            produce(&mut e, 0);
            send_offsets(&mut e);
            refuse(&mut e, code);
            answers(&mut e, 3);
            commit(&mut e);
            refuse(&mut e, code);
            answers(&mut e, 4);
            c.add(e);
        }
        // The commit's EndTxn: answered twice, lost, late, or lost on the way; the coordinator
        // moves meanwhile.
        for fate in 0..5u32 {
            let mut e = Enc::default();
            start(&mut e);
            commit(&mut e);
            if fate == 4 {
                lose_request(&mut e);
            } else {
                arrive(&mut e, fate);
            }
            move_coordinator(&mut e, false, 2);
            advance(&mut e, 400);
            late(&mut e);
            answers(&mut e, 6);
            c.add(e);
        }
        // A transaction left open past the coordinator's timeout.
        let mut e = Enc::default();
        start(&mut e);
        advance(&mut e, 3000);
        commit(&mut e);
        answers(&mut e, 6);
        c.add(e);
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, seeds) in [
        ("seq_producer", producer_seeds as fn(&mut Corpus)),
        ("seq_fetcher", fetcher_seeds),
        ("seq_group_member", group_seeds),
        ("seq_transaction", transaction_seeds),
    ] {
        let mut c = Corpus::new(&root, name);
        seeds(&mut c);
        println!("{name}: {} seeds", c.count);
    }
}
