//! Deterministic simulation of the handler runtime's exactly-once mode (what `txn::Processor`
//! runs) around a classic [`GroupMember`], with the group coordinator lost at every step of it.
//!
//! The member runs as the consumer runs it: on a "driver" that sends its requests, answers them
//! and takes its events at once (applying partition changes, queueing `Lost` and `Revoke` for the
//! application). The application is the runtime: its main task polls at every turn (running the
//! queued steps first), while the partition's worker handles a batch of up to 10 records for a
//! while; between two polls, the main task commits a handled batch's offsets the way a
//! transaction does (TxnOffsetCommit, KIP-447): with the generation and member id the member
//! reports *at commit time* (`Consumer::group_metadata`), aborting and rewinding the batch when
//! it has none or the coordinator refuses. A revocation drains the worker (its batch finishes)
//! and commits inside the poll, before the member rejoins; a loss drops the batch. The worker
//! takes its next batch once the last one's transaction has ended.
//!
//! The coordinator (a model of one classic group with this one member) fails at a chosen tick,
//! stays away longer than the session timeout (so the member's lease lapses and it loses its
//! partition on the driver, between polls), and comes back on another node with the group
//! reloaded; it then expires the member that did not come back within the session timeout.
//! One run per failure tick, over the whole run, so the failure hits every step of the loop.
//!
//! Checked in every run:
//! - no offsets are committed with a generation other than the one the batch's records were
//!   polled in (a newer one would pass the coordinator's check for records another member may
//!   have processed — the bug this guards against);
//! - every committed batch starts at the offset committed before it: no record is processed
//!   twice in a committed way, and none is skipped;
//! - the whole log is committed in the end (liveness).
//!
//! `SIM_SEEDS=n` runs n seeds per failure tick (default 2).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use kafka_wire::codec::messages::find_coordinator::FindCoordinatorResponse;
use kafka_wire::codec::messages::heartbeat::HeartbeatResponse;
use kafka_wire::codec::messages::join_group::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_wire::codec::messages::leave_group::LeaveGroupResponse;
use kafka_wire::codec::messages::offset_commit::OffsetCommitResponse;
use kafka_wire::codec::messages::offset_fetch::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
};
use kafka_wire::codec::messages::sync_group::SyncGroupResponse;
use kafka_wire::codec::ErrorCode;
use kafka_wire::proto::assignor::{Assignor, ConsumerProtocolAssignment, RangeAssignor};
use kafka_wire::proto::driving::Target;
use kafka_wire::proto::group::{GroupConfig, GroupEvent, GroupMember, GroupRequest, GroupResponse, Member, Tp};

const GROUP: &str = "processor-sim";
const TOPIC: &str = "in";
/// Records in the one partition.
const LOG_END: i64 = 120;
const BATCH: i64 = 10;
const TICK_MS: u64 = 10;
const SESSION_MS: u64 = 1_000;
/// The coordinator stays away this long: longer than the session, so the member's lease lapses.
const DOWN_MS: u64 = 1_500;
/// A run that has not committed the whole log by then is stuck.
const LIMIT_MS: u64 = 60_000;

fn b(s: &str) -> ByteString {
    ByteString::from(s)
}

fn tp() -> Tp {
    (TOPIC.to_string(), 0)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// One classic group with at most one member, on one node at a time.
struct Coordinator {
    node: i32,
    down: Option<(u64, u64)>,
    generation: i32,
    /// The member id and when the coordinator last heard from it.
    member: Option<(String, u64)>,
    next_member: u32,
    assignment: Bytes,
    stable: bool,
    committed: Option<i64>,
}

impl Coordinator {
    fn is_down(&self, now: u64) -> bool {
        self.down.is_some_and(|(from, to)| now >= from && now < to)
    }

    /// Expiry of the member it has not heard from within the session timeout; the failover
    /// (the group reloaded on the next node, timers restarted) once the down time is over.
    fn tick(&mut self, now: u64) {
        if let Some((_, to)) = self.down {
            if now >= to {
                self.down = None;
                self.node += 1;
                if let Some((_, heard)) = self.member.as_mut() {
                    *heard = now;
                }
            }
        }
        if self.is_down(now) {
            return;
        }
        if self.member.as_ref().is_some_and(|(_, heard)| now >= heard + SESSION_MS) {
            self.member = None;
            self.stable = false;
        }
    }

    fn member_is(&self, id: &str, generation: i32) -> Result<(), ErrorCode> {
        match &self.member {
            Some((m, _)) if m == id => {
                if generation == self.generation && self.stable {
                    Ok(())
                } else {
                    Err(ErrorCode::ILLEGAL_GENERATION)
                }
            }
            _ => Err(ErrorCode::UNKNOWN_MEMBER_ID),
        }
    }

    fn handle(&mut self, now: u64, target: Target, request: GroupRequest) -> GroupResponse {
        if let GroupRequest::FindCoordinator(_) = request {
            let error_code = if self.is_down(now) { ErrorCode::COORDINATOR_NOT_AVAILABLE } else { ErrorCode::NONE };
            return GroupResponse::FindCoordinator(FindCoordinatorResponse {
                error_code,
                node_id: if error_code.is_ok() { self.node } else { -1 },
                host: b("h"),
                port: 1,
                ..Default::default()
            });
        }
        if self.is_down(now) || target != Target::Coordinator(self.node) {
            return GroupResponse::Failed { kind: request.kind() };
        }
        match request {
            GroupRequest::FindCoordinator(_) => unreachable!("answered above"),
            GroupRequest::ConsumerGroupHeartbeat(_) => unreachable!("a classic member"),
            GroupRequest::JoinGroup(r) => {
                let id = match &self.member {
                    Some((m, _)) if *m == *r.member_id => m.clone(),
                    _ => {
                        self.next_member += 1;
                        format!("m-{}", self.next_member)
                    }
                };
                self.generation += 1;
                self.member = Some((id.clone(), now));
                self.stable = false;
                let protocol = r.protocols.first().expect("a protocol");
                GroupResponse::JoinGroup(JoinGroupResponse {
                    generation_id: self.generation,
                    protocol_type: Some(b("consumer")),
                    protocol_name: Some(protocol.name.clone()),
                    leader: b(&id),
                    member_id: b(&id),
                    members: vec![JoinGroupResponseMember {
                        member_id: b(&id),
                        metadata: protocol.metadata.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            }
            GroupRequest::SyncGroup(r) => {
                let error_code = match &self.member {
                    Some((m, _)) if *m == *r.member_id && r.generation_id == self.generation => ErrorCode::NONE,
                    Some((m, _)) if *m == *r.member_id => ErrorCode::ILLEGAL_GENERATION,
                    _ => ErrorCode::UNKNOWN_MEMBER_ID,
                };
                if error_code.is_ok() {
                    self.assignment = r.assignments.first().map(|a| a.assignment.clone()).unwrap_or_default();
                    self.stable = true;
                    self.member.as_mut().expect("checked").1 = now;
                }
                GroupResponse::SyncGroup(SyncGroupResponse {
                    error_code,
                    protocol_type: Some(b("consumer")),
                    protocol_name: r.protocol_name.clone(),
                    assignment: if error_code.is_ok() { self.assignment.clone() } else { Bytes::new() },
                    ..Default::default()
                })
            }
            GroupRequest::Heartbeat(r) => {
                let error_code = match self.member_is(&r.member_id, r.generation_id) {
                    Ok(()) => {
                        self.member.as_mut().expect("checked").1 = now;
                        ErrorCode::NONE
                    }
                    Err(code) => code,
                };
                GroupResponse::Heartbeat(HeartbeatResponse { error_code, ..Default::default() })
            }
            GroupRequest::OffsetFetch(_) => GroupResponse::OffsetFetch(OffsetFetchResponse {
                groups: vec![OffsetFetchResponseGroup {
                    group_id: b(GROUP),
                    topics: vec![OffsetFetchResponseTopics {
                        name: b(TOPIC),
                        partitions: vec![OffsetFetchResponsePartitions {
                            partition_index: 0,
                            committed_offset: self.committed.unwrap_or(-1),
                            committed_leader_epoch: -1,
                            metadata: Some(b("")),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            // The processor commits through its transactions, not through the member.
            GroupRequest::OffsetCommit(_) => GroupResponse::OffsetCommit(OffsetCommitResponse::default()),
            GroupRequest::LeaveGroup(_) => GroupResponse::LeaveGroup(LeaveGroupResponse::default()),
        }
    }

    /// A TxnOffsetCommit as the coordinator checks it (KIP-447): the member id and generation
    /// must be the group's current ones.
    fn txn_commit(
        &mut self,
        now: u64,
        generation: i32,
        member_id: &str,
        offset: i64,
    ) -> Result<Option<i64>, ErrorCode> {
        if self.is_down(now) {
            return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
        self.member_is(member_id, generation)?;
        Ok(self.committed.replace(offset))
    }
}

/// A batch the application holds.
#[derive(Debug)]
struct Batch {
    first: i64,
    end: i64,
    /// The generation the member was in when the batch was polled.
    generation: Option<i32>,
}

/// The partition's worker.
enum App {
    /// Ready for a batch.
    Idle,
    /// Handling a batch until then; its transaction follows.
    Handle { batch: Batch, until: u64 },
}

/// A rebalance step queued for the application's next poll.
enum Step {
    Revoke,
    Lost,
}

struct Sim {
    now: u64,
    t0: Instant,
    rng: Rng,
    member: GroupMember,
    coordinator: Coordinator,
    /// The application's view of its partition: (position, awaiting its committed offset).
    partition: Option<(Option<i64>, bool)>,
    steps: VecDeque<Step>,
    app: App,
    violations: Vec<String>,
    committed_batches: u32,
    aborted: u32,
    lost: u32,
}

impl Sim {
    fn new(seed: u64, down_at: Option<u64>) -> Self {
        let t0 = Instant::now();
        let assignors: Vec<Arc<dyn Assignor + Send + Sync>> = vec![Arc::new(RangeAssignor)];
        let mut config = GroupConfig::new(GROUP, assignors);
        config.session_timeout = Duration::from_millis(SESSION_MS);
        config.heartbeat_interval = Duration::from_millis(100);
        config.rebalance_timeout = Duration::from_secs(10);
        config.retry_backoff = Duration::from_millis(50);
        config.retry_backoff_max = Duration::from_millis(200);
        config.backoff_seed = Some(seed);
        let mut member = GroupMember::new(config, t0);
        member.subscribe([TOPIC.to_string()].into(), t0);
        member.set_partition_counts([(TOPIC.to_string(), 1)].into(), t0);
        Self {
            now: 0,
            t0,
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            member,
            coordinator: Coordinator {
                node: 1,
                down: down_at.map(|at| (at, at + DOWN_MS)),
                generation: 0,
                member: None,
                next_member: 0,
                assignment: Bytes::new(),
                stable: false,
                committed: None,
            },
            partition: None,
            steps: VecDeque::new(),
            app: App::Idle,
            violations: Vec::new(),
            committed_batches: 0,
            aborted: 0,
            lost: 0,
        }
    }

    fn at(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now)
    }

    /// The consumer's driver: requests answered at once, events applied at once.
    fn drive(&mut self) {
        let now = self.at();
        while let Some((id, target, request)) = self.member.poll_request(now) {
            let response = self.coordinator.handle(self.now, target, request);
            self.member.handle_response(id, response, now);
        }
        while let Some(event) = self.member.poll_event() {
            match event {
                GroupEvent::Assigned(set) => {
                    assert_eq!(set, BTreeSet::from([tp()]), "one partition");
                    self.partition = Some((None, true));
                }
                GroupEvent::CommittedOffsets(offsets) => {
                    if let (Some((position, awaiting @ true)), Some((offset, _, _))) =
                        (self.partition.as_mut(), offsets.get(&tp()))
                    {
                        *awaiting = false;
                        *position = Some((*offset).max(0));
                    }
                }
                GroupEvent::Revoke(_) => self.steps.push_back(Step::Revoke),
                GroupEvent::Lost(_) => self.steps.push_back(Step::Lost),
                GroupEvent::OffsetFetchFailed(f) => self.violations.push(format!("offset fetch failed: {f:?}")),
                GroupEvent::CommitResult { .. } => {}
                GroupEvent::Fatal(code) => self.violations.push(format!("fatal {code:?}")),
            }
        }
    }

    /// One turn of the runtime's main task, and what its worker does meanwhile.
    fn app_turn(&mut self) {
        let now = self.at();
        // A handled batch's transaction, between two polls.
        if matches!(self.app, App::Handle { until, .. } if self.now >= until) {
            if let App::Handle { batch, .. } = std::mem::replace(&mut self.app, App::Idle) {
                self.commit(batch);
            }
        }
        // The poll: the rebalance steps first, as `Consumer::poll` runs them, through the
        // runtime's listener.
        while let Some(step) = self.steps.pop_front() {
            match step {
                Step::Revoke => {
                    // Drained: the batch finishes and commits before the partition goes.
                    if let App::Handle { batch, .. } = std::mem::replace(&mut self.app, App::Idle) {
                        self.commit(batch);
                    }
                    self.partition = None;
                    self.member.revocation_done(now);
                }
                Step::Lost => {
                    // The worker is cancelled and its batch dropped, uncommitted.
                    self.lost += 1;
                    self.app = App::Idle;
                    self.partition = None;
                    self.member.lost_handled(now);
                }
            }
        }
        self.member.poll_called(now);
        if !matches!(self.app, App::Idle) {
            return;
        }
        let Some((Some(position), false)) = self.partition else { return };
        if position >= LOG_END {
            return;
        }
        let end = (position + BATCH).min(LOG_END);
        self.partition = Some((Some(end), false));
        let generation = self.member.generation().map(|(g, _)| g);
        let until = self.now + self.rng.range(1, 2 * SESSION_MS / TICK_MS) * TICK_MS;
        self.app = App::Handle { batch: Batch { first: position, end, generation }, until };
    }

    /// The transaction's end: offsets with the generation of `group_metadata()` now.
    fn commit(&mut self, batch: Batch) {
        let outcome = match self.member.generation() {
            None => Err(ErrorCode::REBALANCE_IN_PROGRESS),
            Some((generation, member_id)) => {
                if Some(generation) != batch.generation {
                    self.violations.push(format!(
                        "t={}: offsets of {batch:?} about to be committed with generation {generation}",
                        self.now
                    ));
                }
                self.coordinator.txn_commit(self.now, generation, &member_id, batch.end)
            }
        };
        match outcome {
            Ok(before) => {
                self.committed_batches += 1;
                if before.unwrap_or(0) != batch.first {
                    self.violations.push(format!(
                        "t={}: {batch:?} committed after offset {before:?}: records committed twice or skipped",
                        self.now
                    ));
                }
            }
            Err(_) => {
                // Abort and rewind: only the batch moved the position since the last commit.
                self.aborted += 1;
                if let Some((position, _)) = self.partition.as_mut() {
                    *position = Some(batch.first);
                }
            }
        }
    }

    fn run(&mut self) {
        while self.coordinator.committed != Some(LOG_END) {
            if self.now > LIMIT_MS {
                self.violations.push(format!("stuck: committed {:?} at {LIMIT_MS} ms", self.coordinator.committed));
                return;
            }
            self.coordinator.tick(self.now);
            self.drive();
            self.app_turn();
            self.drive();
            self.now += TICK_MS;
        }
    }
}

fn decode(bytes: &Bytes) -> BTreeSet<Tp> {
    let (_, a) = ConsumerProtocolAssignment::decode(bytes.clone()).expect("assignment decodes");
    a.to_map().into_iter().flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p))).collect()
}

#[test]
fn a_processor_loop_commits_nothing_twice_when_the_coordinator_is_lost_at_any_step() {
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    // The length of a run without a failure bounds the ticks worth failing at.
    let mut clean = Sim::new(1, None);
    clean.run();
    assert!(clean.violations.is_empty(), "{:?}", clean.violations);
    assert_eq!(decode(&clean.coordinator.assignment), BTreeSet::from([tp()]));
    let span = clean.now;
    let (mut runs, mut lost, mut aborted) = (0u32, 0u32, 0u32);
    let mut failures = Vec::new();
    for down_at in (0..span).step_by(TICK_MS as usize) {
        for seed in 1..=seeds {
            let mut sim = Sim::new(seed, Some(down_at));
            sim.run();
            runs += 1;
            lost += sim.lost;
            aborted += sim.aborted;
            if !sim.violations.is_empty() {
                failures.push(format!("coordinator lost at {down_at} ms, seed {seed}: {:?}", sim.violations));
            }
        }
    }
    eprintln!("{runs} runs, the coordinator lost at every tick of {span} ms: {lost} losses, {aborted} aborts");
    assert!(failures.is_empty(), "{} of {runs} runs failed; first: {}", failures.len(), failures[0]);
    assert!(lost > runs / 2, "the failure made the member lose its partition in most runs ({lost} of {runs})");
}
