//! Whole groups of members against the group simulations' model coordinators, with the faults
//! chosen by the fuzzer. The leading choices pick the protocol (classic `GroupMember` with
//! range, round-robin, cooperative-sticky, or cooperative-sticky + range (eager), or KIP-848
//! `ConsumerGroupMember`), the number of members (1-5), how many are static, the chance that a
//! message is lost, and the seed of the simulation's own PRNG (message latencies, slow
//! revocations, UNSTABLE_OFFSET_COMMIT answers). Then a script of at most 64 faults at
//! fuzzer-chosen virtual times within the first 30 s: coordinator moves (NOT_COORDINATOR,
//! COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS), members crashing (and restarting,
//! static ones with their instance id), joining, leaving, cut off from the network, stalled
//! past max.poll.interval, changing their subscription; topic `b` growing; a member's next
//! request lost or refused unapplied with a retriable code (COORDINATOR_LOAD_IN_PROGRESS,
//! NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, REQUEST_TIMED_OUT, REBALANCE_IN_PROGRESS,
//! UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION; KIP-848: FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID).
//!
//! The machinery is the simulations' own (`kafka-wire/tests/sim/group_sim.rs`,
//! `consumer_group_sim.rs`, included), so are the checks: after every step no partition held by
//! two live members and each member's events agree with its core, no OffsetCommit with a
//! generation / epoch other than the member's, an eager member owns nothing when it joins, no
//! unexpected fatal error, no busy loop on `next_timeout`; the model coordinator sees no
//! assignment giving a partition twice, no invalid request, no commit accepted for a partition
//! another member holds, no committed offset going back. After the faults stop, within the
//! simulation's settling time (25 s classic, 20 s KIP-848, virtual): the group is stable with
//! exactly the live members, at the coordinator's generation / epoch, every partition owned once.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

/// Faults happen in the first `FAULT_WINDOW_MS` of virtual time.
const FAULT_WINDOW_MS: u64 = 30_000;
const MAX_FAULTS: usize = 64;

#[allow(dead_code, unused_imports)]
mod classic {
    include!("../../kafka-wire/tests/sim/group_sim.rs");

    pub fn run(mode: u8, input: &super::Input) {
        let mode = [Mode::Range, Mode::RoundRobin, Mode::Cooperative, Mode::StickyEager][mode as usize % 4];
        let mut p = Params::standard(input.seed, mode);
        p.initial_members = 1 + input.members as usize % 5;
        p.static_share = [0.0, 0.5, 1.0][input.statics as usize % 3];
        p.drop_rate = input.drop_rate();
        let codes = [
            None,
            Some(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
            Some(ErrorCode::NOT_COORDINATOR),
            Some(ErrorCode::COORDINATOR_NOT_AVAILABLE),
            Some(ErrorCode::REQUEST_TIMED_OUT),
            Some(ErrorCode::REBALANCE_IN_PROGRESS),
            Some(ErrorCode::UNKNOWN_MEMBER_ID),
            Some(ErrorCode::ILLEGAL_GENERATION),
        ];
        let script = input.script(p.rebalance_ms, &codes, |f| to_fault(f));
        p.fault_ms = script.last().map_or(0, |(at, _)| at + 1);
        p.script = Some(script);
        let mut sim = Sim::new(p);
        sim.run();
        assert!(sim.violations.is_empty(), "{mode:?}: {:#?}", sim.violations);
    }

    fn to_fault(f: super::F) -> Fault {
        match f {
            super::F::Move { node, moving, loading } => Fault::Move { node, moving, loading },
            super::F::Crash { member, back } => Fault::Crash { member, back },
            super::F::NewMember { is_static } => Fault::NewMember { is_static },
            super::F::Leave { member, explicit, back } => Fault::Leave { member, explicit, back },
            super::F::Partition { member, ms } => Fault::Partition { member, ms },
            super::F::Stall { member, ms } => Fault::Stall { member, ms },
            super::F::Narrow { member, ms } => Fault::Narrow { member, ms },
            super::F::CountChange => Fault::CountChange,
            super::F::Refuse { member, code } => Fault::Refuse { member, code },
        }
    }
}

#[allow(dead_code, unused_imports)]
mod kip848 {
    include!("../../kafka-wire/tests/sim/consumer_group_sim.rs");

    pub fn run(input: &super::Input) {
        let mut p = Params::standard(input.seed);
        p.initial_members = 1 + input.members as usize % 5;
        p.static_share = [0.0, 0.5, 1.0][input.statics as usize % 3];
        p.drop_rate = input.drop_rate();
        let codes = [
            None,
            Some(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
            Some(ErrorCode::NOT_COORDINATOR),
            Some(ErrorCode::COORDINATOR_NOT_AVAILABLE),
            Some(ErrorCode::REQUEST_TIMED_OUT),
            Some(ErrorCode::FENCED_MEMBER_EPOCH),
            Some(ErrorCode::UNKNOWN_MEMBER_ID),
        ];
        let script = input.script(p.rebalance_ms, &codes, |f| to_fault(f));
        p.fault_ms = script.last().map_or(0, |(at, _)| at + 1);
        p.script = Some(script);
        let mut sim = Sim::new(p);
        sim.run();
        assert!(sim.violations.is_empty(), "KIP-848: {:#?}", sim.violations);
    }

    fn to_fault(f: super::F) -> Fault {
        match f {
            super::F::Move { node, moving, loading } => Fault::Move { node, moving, loading },
            super::F::Crash { member, back } => Fault::Crash { member, back },
            super::F::NewMember { is_static } => Fault::NewMember { is_static },
            super::F::Leave { member, explicit, back } => Fault::Leave { member, explicit, back },
            super::F::Partition { member, ms } => Fault::Partition { member, ms },
            super::F::Stall { member, ms } => Fault::Stall { member, ms },
            super::F::Narrow { member, ms } => Fault::Narrow { member, ms },
            super::F::CountChange => Fault::CountChange,
            super::F::Refuse { member, code } => Fault::Refuse { member, code },
        }
    }
}

/// A fault with its parameters in the simulations' ranges (the same ranges as their PRNG draws,
/// so that the settling time that holds for the simulations holds here).
enum F {
    Move { node: u8, moving: u64, loading: u64 },
    Crash { member: usize, back: Option<u64> },
    NewMember { is_static: bool },
    Leave { member: usize, explicit: bool, back: Option<u64> },
    Partition { member: usize, ms: u64 },
    Stall { member: usize, ms: u64 },
    Narrow { member: usize, ms: u64 },
    CountChange,
    Refuse { member: usize, code: Option<kafka_wire::codec::ErrorCode> },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Move {
        node: u8,
        moving: u16,
        loading: u16,
    },
    Crash {
        member: u8,
        back: Option<u16>,
    },
    NewMember {
        is_static: bool,
    },
    Leave {
        member: u8,
        explicit: bool,
        back: Option<u16>,
    },
    Partition {
        member: u8,
        ms: u16,
    },
    Stall {
        member: u8,
        ms: u16,
    },
    Narrow {
        member: u8,
        ms: u16,
    },
    CountChange,
    /// `code` picks among the protocol's codes (0: the request is lost).
    Refuse {
        member: u8,
        code: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// 0-3: classic (range, round-robin, cooperative, sticky+range eager), 4: KIP-848.
    protocol: u8,
    seed: u64,
    members: u8,
    statics: u8,
    /// Per mille, at most 10 %.
    drop: u8,
    /// (milliseconds after the previous fault, fault)
    ops: Vec<(u16, Op)>,
}

impl Input {
    fn drop_rate(&self) -> f64 {
        f64::from(self.drop % 101) / 1000.0
    }

    fn script<T>(
        &self,
        rebalance_ms: u64,
        codes: &[Option<kafka_wire::codec::ErrorCode>],
        to: impl Fn(F) -> T,
    ) -> Vec<(u64, T)> {
        let within = |v: u16, lo: u64, hi: u64| lo + u64::from(v) % (hi - lo + 1);
        let mut at = 0u64;
        let mut out = Vec::new();
        for (gap, op) in self.ops.iter().take(MAX_FAULTS) {
            at += 5 + u64::from(*gap) % 3_000;
            if at >= FAULT_WINDOW_MS {
                break;
            }
            let f = match *op {
                Op::Move { node, moving, loading } => {
                    F::Move { node, moving: within(moving, 0, 300), loading: within(loading, 0, 500) }
                }
                Op::Crash { member, back } => {
                    F::Crash { member: member.into(), back: back.map(|b| within(b, 300, 4_000)) }
                }
                Op::NewMember { is_static } => F::NewMember { is_static },
                Op::Leave { member, explicit, back } => {
                    F::Leave { member: member.into(), explicit, back: back.map(|b| within(b, 500, 5_000)) }
                }
                Op::Partition { member, ms } => F::Partition { member: member.into(), ms: within(ms, 500, 3_500) },
                Op::Stall { member, ms } => {
                    F::Stall { member: member.into(), ms: within(ms, rebalance_ms / 2, rebalance_ms + 2_000) }
                }
                Op::Narrow { member, ms } => F::Narrow { member: member.into(), ms: within(ms, 1_000, 5_000) },
                Op::CountChange => F::CountChange,
                Op::Refuse { member, code } => {
                    F::Refuse { member: member.into(), code: codes[code as usize % codes.len()] }
                }
            };
            out.push((at, to(f)));
        }
        out
    }
}

fuzz_target!(|input: Input| {
    match input.protocol % 5 {
        4 => kip848::run(&input),
        mode => classic::run(mode, &input),
    }
});
