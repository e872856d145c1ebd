// The KIP-848 consumer group simulation's machinery, shared by `consumer_protocol_simulation.rs`
// and the `seq_consumer_group` fuzz target (both `include!` it, so that the tests and the target
// reach the same private items): the model group coordinator (group epochs, server-side target
// assignment, per-member reconciliation, epoch validation, static members, offsets, coordinator
// moves), the driver that runs `ConsumerGroupMember`s against it with faults (drawn from a
// seeded PRNG, or scripted by the fuzz target with `Sim::script`), and the invariant checks
// after every step and at the end (`check_final`). See `consumer_protocol_simulation.rs` for
// the protocol, faults and invariants.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytestring::ByteString;
use kafka_wire::codec::messages::consumer_group_heartbeat::{
    Assignment, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, TopicPartitions,
};
use kafka_wire::codec::messages::find_coordinator::{Coordinator, FindCoordinatorResponse};
use kafka_wire::codec::messages::offset_commit::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_wire::codec::messages::offset_fetch::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
};
use kafka_wire::codec::messages::{OffsetCommitRequest, OffsetFetchRequest};
use kafka_wire::codec::{ErrorCode, Uuid};
use kafka_wire::proto::consumer_protocol::{
    ConsumerGroupConfig, ConsumerGroupMember, LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH,
};
use kafka_wire::proto::driving::{RequestId, RequestKind, Target};
use kafka_wire::proto::group::{GroupEvent, GroupRequest, GroupResponse, Member, Tp};

const GROUP: &str = "sim-group";
const NODES: [i32; 3] = [1, 2, 3];
const TICK_MS: u64 = 5;
const MAX_LIVE: usize = 5;

type IdTp = (Uuid, i32);

fn topic_uuid(name: &str) -> Uuid {
    let mut b = [0u8; 16];
    for (i, c) in name.bytes().enumerate().take(16) {
        b[i] = c;
    }
    b[15] = 0x5a;
    Uuid(b)
}

fn all_names() -> BTreeMap<Uuid, String> {
    ["a", "b"].iter().map(|t| (topic_uuid(t), t.to_string())).collect()
}

fn full_subscription() -> BTreeSet<String> {
    ["a".to_string(), "b".to_string()].into()
}

fn b(s: &str) -> ByteString {
    ByteString::from(s)
}

// ---- PRNG ------------------------------------------------------------------------------------

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

// ---- parameters ------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Params {
    seed: u64,
    initial_members: usize,
    static_share: f64,
    /// Members whose coordinator picks the member id (ConsumerGroupHeartbeat v0).
    v0_share: f64,
    faults: bool,
    fault_ms: u64,
    settle_ms: u64,
    session_ms: u64,
    heartbeat_ms: u64,
    rebalance_ms: u64,
    /// The application sometimes takes long to revoke.
    slow_revocations: bool,
    /// The chance that a request, or an answer, is lost (in the fault window).
    drop_rate: f64,
    /// Faults at these virtual times (ms, ascending) instead of the PRNG's.
    script: Option<Vec<(u64, Fault)>>,
    trace: bool,
}

impl Params {
    fn standard(seed: u64) -> Self {
        let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
        Self {
            seed,
            initial_members: rng.range(1, 5) as usize,
            static_share: [0.0, 0.5, 1.0][rng.below(3) as usize],
            v0_share: [0.0, 0.0, 0.5][rng.below(3) as usize],
            faults: true,
            fault_ms: 30_000,
            settle_ms: 20_000,
            session_ms: 2_000,
            heartbeat_ms: 300,
            rebalance_ms: 5_000,
            slow_revocations: true,
            drop_rate: 0.02,
            script: None,
            trace: std::env::var("SIM_TRACE").is_ok(),
        }
    }

    /// `member_id`: `None` for the member's own random UUID.
    fn config(
        &self,
        instance: Option<String>,
        member_id: Option<String>,
        assignor: Option<&str>,
    ) -> ConsumerGroupConfig {
        let mut c = ConsumerGroupConfig::new(GROUP);
        c.group_instance_id = instance;
        c.member_id = member_id;
        c.session_timeout = Duration::from_millis(self.session_ms);
        c.rebalance_timeout = Duration::from_millis(self.rebalance_ms);
        c.heartbeat_interval = Duration::from_millis(1_000);
        c.server_assignor = assignor.map(str::to_string);
        c.rack = Some("rack-1".into());
        c.retry_backoff = Duration::from_millis(50);
        c.retry_backoff_max = Duration::from_millis(800);
        c.backoff_seed = Some(self.seed);
        c
    }
}

#[derive(Clone, Debug, Default)]
struct Stats {
    seeds: u64,
    epoch_bumps: u64,
    joins: u64,
    heartbeats: u64,
    full_heartbeats: u64,
    leaves_dynamic: u64,
    leaves_static: u64,
    fenced_answers: u64,
    unknown_member_answers: u64,
    unreleased_answers: u64,
    static_replacements: u64,
    expirations: u64,
    revocation_timeouts: u64,
    commits_sent: u64,
    commits_ok: u64,
    commits_failed: u64,
    commits_stale_answer: u64,
    stale_commits_sent: u64,
    fetches: u64,
    revokes: u64,
    assigned: u64,
    lost: u64,
    fatal_restarts: u64,
    faults: BTreeMap<&'static str, u64>,
    violations: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.epoch_bumps += o.epoch_bumps;
        self.joins += o.joins;
        self.heartbeats += o.heartbeats;
        self.full_heartbeats += o.full_heartbeats;
        self.leaves_dynamic += o.leaves_dynamic;
        self.leaves_static += o.leaves_static;
        self.fenced_answers += o.fenced_answers;
        self.unknown_member_answers += o.unknown_member_answers;
        self.unreleased_answers += o.unreleased_answers;
        self.static_replacements += o.static_replacements;
        self.expirations += o.expirations;
        self.revocation_timeouts += o.revocation_timeouts;
        self.commits_sent += o.commits_sent;
        self.commits_ok += o.commits_ok;
        self.commits_failed += o.commits_failed;
        self.commits_stale_answer += o.commits_stale_answer;
        self.stale_commits_sent += o.stale_commits_sent;
        self.fetches += o.fetches;
        self.revokes += o.revokes;
        self.assigned += o.assigned;
        self.lost += o.lost;
        self.fatal_restarts += o.fatal_restarts;
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_default() += v;
        }
        self.violations += o.violations;
    }

    fn print(&self, title: &str) {
        println!("== {title}: {} seeds", self.seeds);
        println!(
            "   group epoch bumps {}, joins {}, heartbeats {} (full {}), leaves -1: {} -2: {}",
            self.epoch_bumps,
            self.joins,
            self.heartbeats,
            self.full_heartbeats,
            self.leaves_dynamic,
            self.leaves_static
        );
        println!(
            "   answers FENCED_MEMBER_EPOCH {} UNKNOWN_MEMBER_ID {} UNRELEASED_INSTANCE_ID {}; static replacements {}; session expirations {}; revocation timeouts {}",
            self.fenced_answers,
            self.unknown_member_answers,
            self.unreleased_answers,
            self.static_replacements,
            self.expirations,
            self.revocation_timeouts
        );
        println!(
            "   commits sent {} ok {} failed {} (STALE_MEMBER_EPOCH answers {}), stale commits sent {}, offset fetches {}",
            self.commits_sent, self.commits_ok, self.commits_failed, self.commits_stale_answer, self.stale_commits_sent, self.fetches
        );
        println!(
            "   events: revoke {} assigned {} lost {}; restarts after a fatal instance-id error {}",
            self.revokes, self.assigned, self.lost, self.fatal_restarts
        );
        println!("   faults: {:?}", self.faults);
        println!("   violations: {}", self.violations);
    }
}

// ---- model coordinator -----------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MState {
    Stable,
    /// Waiting for the member to revoke `pending_revocation`.
    Unrevoked,
    /// At the target epoch, waiting for other members to release partitions.
    Unreleased,
}

#[derive(Clone, Debug)]
struct MMember {
    instance: Option<String>,
    epoch: i32,
    prev_epoch: i32,
    state: MState,
    subscription: BTreeSet<String>,
    rebalance_ms: u64,
    assigned: BTreeSet<IdTp>,
    pending_revocation: BTreeSet<IdTp>,
    revoke_deadline: Option<u64>,
    last_heard: u64,
}

impl MMember {
    fn set_epoch(&mut self, epoch: i32) {
        if epoch != self.epoch {
            self.prev_epoch = self.epoch;
            self.epoch = epoch;
        }
    }
}

struct Model {
    node: i32,
    /// FindCoordinator answers COORDINATOR_NOT_AVAILABLE until then.
    moving_until: u64,
    /// The coordinator answers COORDINATOR_LOAD_IN_PROGRESS until then.
    loading_until: u64,
    group_epoch: i32,
    target_epoch: i32,
    target: BTreeMap<String, BTreeSet<IdTp>>,
    members: BTreeMap<String, MMember>,
    /// Instance id -> member id.
    statics: BTreeMap<String, String>,
    /// Name -> (id, partition count).
    topics: BTreeMap<String, (Uuid, i32)>,
    committed: BTreeMap<Tp, i64>,
    session_ms: u64,
    heartbeat_ms: u64,
    next_generated: u64,
    stats: Stats,
    violations: Vec<String>,
}

fn hb_error(code: ErrorCode) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse {
        error_code: code,
        error_message: Some(b(&format!("{code:?}"))),
        member_epoch: -1,
        ..Default::default()
    }
}

fn encode(set: &BTreeSet<IdTp>) -> Vec<TopicPartitions> {
    let mut by: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for (id, p) in set {
        by.entry(*id).or_default().push(*p);
    }
    by.into_iter()
        .map(|(topic_id, partitions)| TopicPartitions { topic_id, partitions, ..Default::default() })
        .collect()
}

fn decode(tps: &[TopicPartitions]) -> BTreeSet<IdTp> {
    tps.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p))).collect()
}

impl Model {
    fn new(session_ms: u64, heartbeat_ms: u64) -> Self {
        let topics = [("a".to_string(), (topic_uuid("a"), 6)), ("b".to_string(), (topic_uuid("b"), 4))].into();
        Self {
            node: NODES[0],
            moving_until: 0,
            loading_until: 0,
            group_epoch: 0,
            target_epoch: 0,
            target: BTreeMap::new(),
            members: BTreeMap::new(),
            statics: BTreeMap::new(),
            topics,
            committed: BTreeMap::new(),
            session_ms,
            heartbeat_ms,
            next_generated: 1,
            stats: Stats::default(),
            violations: Vec::new(),
        }
    }

    fn all_partitions(&self) -> BTreeSet<Tp> {
        self.topics.iter().flat_map(|(t, &(_, n))| (0..n).map(move |p| (t.clone(), p))).collect()
    }

    fn name_of(&self, id: Uuid) -> String {
        self.topics.iter().find(|(_, (i, _))| *i == id).map(|(n, _)| n.clone()).unwrap_or_default()
    }

    fn to_names(&self, set: &BTreeSet<IdTp>) -> BTreeSet<Tp> {
        set.iter().map(|(id, p)| (self.name_of(*id), *p)).collect()
    }

    fn bump(&mut self) {
        self.group_epoch += 1;
        self.stats.epoch_bumps += 1;
    }

    fn owner_of(&self, tp: &IdTp, except: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(id, m)| id.as_str() != except && (m.assigned.contains(tp) || m.pending_revocation.contains(tp)))
            .map(|(id, _)| id.as_str())
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            if let Some(inst) = &m.instance {
                if self.statics.get(inst).is_some_and(|h| h == id) {
                    self.statics.remove(inst);
                }
            }
            self.bump();
        }
    }

    /// The uniform assignor: every partition of a subscribed topic to the subscribed member with
    /// the fewest partitions; ties go to the previous owner, then by member id.
    fn maybe_compute_target(&mut self) {
        if self.target_epoch >= self.group_epoch {
            return;
        }
        let mut counts: BTreeMap<String, usize> = self.members.keys().map(|k| (k.clone(), 0)).collect();
        let mut new: BTreeMap<String, BTreeSet<IdTp>> =
            self.members.keys().map(|k| (k.clone(), BTreeSet::new())).collect();
        let mut previous: BTreeMap<IdTp, String> = BTreeMap::new();
        for (m, set) in &self.target {
            for tp in set {
                previous.insert(*tp, m.clone());
            }
        }
        for (name, &(id, n)) in &self.topics {
            let subscribed: Vec<String> =
                self.members.iter().filter(|(_, m)| m.subscription.contains(name)).map(|(k, _)| k.clone()).collect();
            if subscribed.is_empty() {
                continue;
            }
            for p in 0..n {
                let tp = (id, p);
                let best = subscribed
                    .iter()
                    .min_by_key(|m| (counts[*m], previous.get(&tp) != Some(*m), (*m).clone()))
                    .unwrap()
                    .clone();
                *counts.get_mut(&best).unwrap() += 1;
                new.get_mut(&best).unwrap().insert(tp);
            }
        }
        self.target = new;
        self.target_epoch = self.group_epoch;
    }

    /// Kafka's CurrentAssignmentBuilder, for one member. `owned`: what its request reported
    /// (`None`: not sent, i.e. unchanged).
    fn reconcile(&mut self, id: &str, owned: Option<&BTreeSet<IdTp>>, now: u64) {
        let m = self.members[id].clone();
        let owns = |set: &BTreeSet<IdTp>| owned.is_none_or(|o| !o.is_disjoint(set));
        let proceed = match m.state {
            MState::Stable => m.epoch != self.target_epoch,
            MState::Unrevoked => !owns(&m.pending_revocation),
            MState::Unreleased => true,
        };
        if !proceed {
            return;
        }
        let target = self.target.get(id).cloned().unwrap_or_default();
        let kept: BTreeSet<IdTp> = m.assigned.intersection(&target).copied().collect();
        let revoke: BTreeSet<IdTp> = m.assigned.difference(&target).copied().collect();
        let pending: BTreeSet<IdTp> = target.difference(&m.assigned).copied().collect();
        let free: BTreeSet<IdTp> = pending.iter().filter(|tp| self.owner_of(tp, id).is_none()).copied().collect();
        let mut nm = m.clone();
        if !revoke.is_empty() && owns(&revoke) {
            nm.state = MState::Unrevoked;
            nm.assigned = kept;
            nm.pending_revocation = revoke;
            nm.revoke_deadline = Some(now + m.rebalance_ms);
        } else {
            nm.assigned = kept.union(&free).copied().collect();
            nm.pending_revocation.clear();
            nm.revoke_deadline = None;
            nm.state = if free.len() < pending.len() { MState::Unreleased } else { MState::Stable };
            nm.set_epoch(self.target_epoch);
        }
        self.members.insert(id.to_string(), nm);
    }

    fn check_model(&mut self) {
        let mut seen: BTreeMap<IdTp, &str> = BTreeMap::new();
        let mut problems = Vec::new();
        for (id, m) in &self.members {
            for tp in m.assigned.iter().chain(m.pending_revocation.iter()) {
                if let Some(other) = seen.insert(*tp, id) {
                    problems.push(format!("model: {tp:?} held by both {other} and {id}"));
                }
            }
        }
        self.violations.extend(problems);
    }

    fn check_target(&self, now: u64, target: Target) -> Option<ErrorCode> {
        match target {
            Target::Coordinator(n) if n != self.node => Some(ErrorCode::NOT_COORDINATOR),
            Target::Coordinator(_) if now < self.loading_until => Some(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
            Target::AnyBroker => Some(ErrorCode::INVALID_REQUEST),
            _ => None,
        }
    }

    fn handle(&mut self, now: u64, req_id: RequestId, target: Target, request: GroupRequest) -> GroupResponse {
        let response = match request {
            GroupRequest::FindCoordinator(r) => {
                let (error, node) = if now < self.moving_until {
                    (ErrorCode::COORDINATOR_NOT_AVAILABLE, -1)
                } else {
                    (ErrorCode::NONE, self.node)
                };
                let key = r.coordinator_keys.first().cloned().unwrap_or_else(|| r.key.clone());
                let resp = if (now / TICK_MS + req_id.0) % 2 == 0 {
                    FindCoordinatorResponse {
                        coordinators: vec![Coordinator {
                            key,
                            node_id: node,
                            host: b("broker"),
                            port: 9092,
                            error_code: error,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }
                } else {
                    FindCoordinatorResponse {
                        error_code: error,
                        node_id: node,
                        host: b("broker"),
                        port: 9092,
                        ..Default::default()
                    }
                };
                GroupResponse::FindCoordinator(resp)
            }
            GroupRequest::ConsumerGroupHeartbeat(r) => {
                let resp = match self.check_target(now, target) {
                    Some(e) => hb_error(e),
                    None => self.heartbeat(now, r),
                };
                match resp.error_code {
                    ErrorCode::FENCED_MEMBER_EPOCH => self.stats.fenced_answers += 1,
                    ErrorCode::UNKNOWN_MEMBER_ID => self.stats.unknown_member_answers += 1,
                    ErrorCode::UNRELEASED_INSTANCE_ID => self.stats.unreleased_answers += 1,
                    _ => {}
                }
                GroupResponse::ConsumerGroupHeartbeat(resp)
            }
            GroupRequest::OffsetCommit(r) => {
                let code = self.check_target(now, target).unwrap_or_else(|| self.commit(&r));
                if code == ErrorCode::STALE_MEMBER_EPOCH {
                    self.stats.commits_stale_answer += 1;
                }
                GroupResponse::OffsetCommit(OffsetCommitResponse {
                    topics: r
                        .topics
                        .iter()
                        .map(|t| OffsetCommitResponseTopic {
                            name: t.name.clone(),
                            topic_id: t.topic_id,
                            partitions: t
                                .partitions
                                .iter()
                                .map(|p| OffsetCommitResponsePartition {
                                    partition_index: p.partition_index,
                                    error_code: code,
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
            }
            GroupRequest::OffsetFetch(r) => {
                let err = self.check_target(now, target);
                GroupResponse::OffsetFetch(self.fetch(err, &r))
            }
            other => panic!("a KIP-848 member sent a classic group request: {other:?}"),
        };
        self.check_model();
        response
    }

    fn invalid(&mut self, what: &str, r: &ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
        self.violations.push(format!("invalid heartbeat ({what}): {r:?}"));
        hb_error(ErrorCode::INVALID_REQUEST)
    }

    fn ok(&self, id: &str, with_assignment: bool) -> ConsumerGroupHeartbeatResponse {
        let m = &self.members[id];
        ConsumerGroupHeartbeatResponse {
            error_code: ErrorCode::NONE,
            member_id: Some(b(id)),
            member_epoch: m.epoch,
            heartbeat_interval_ms: self.heartbeat_ms as i32,
            assignment: with_assignment
                .then(|| Assignment { topic_partitions: encode(&m.assigned), ..Default::default() }),
            ..Default::default()
        }
    }

    fn new_member(&self, r: &ConsumerGroupHeartbeatRequest, now: u64) -> MMember {
        MMember {
            instance: r.instance_id.as_deref().map(str::to_string),
            epoch: 0,
            prev_epoch: 0,
            state: MState::Stable,
            subscription: BTreeSet::new(),
            rebalance_ms: r.rebalance_timeout_ms.max(1) as u64,
            assigned: BTreeSet::new(),
            pending_revocation: BTreeSet::new(),
            revoke_deadline: None,
            last_heard: now,
        }
    }

    fn heartbeat(&mut self, now: u64, r: ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
        // throwIfConsumerGroupHeartbeatRequestIsInvalid (v1 rules, an empty member id only
        // allowed on a v0 join).
        if &*r.group_id != GROUP {
            return self.invalid("group id", &r);
        }
        if r.member_id.is_empty() && r.member_epoch != 0 {
            return self.invalid("empty member id", &r);
        }
        if r.instance_id.as_deref().is_some_and(str::is_empty) || r.rack_id.as_deref().is_some_and(str::is_empty) {
            return self.invalid("empty instance or rack id", &r);
        }
        match r.member_epoch {
            0 => {
                if r.rebalance_timeout_ms == -1 {
                    return self.invalid("no rebalance timeout on join", &r);
                }
                if r.topic_partitions.as_ref().is_none_or(|t| !t.is_empty()) {
                    return self.invalid("topic partitions must be empty when (re-)joining", &r);
                }
                if r.subscribed_topic_names.is_none() && r.subscribed_topic_regex.is_none() {
                    return self.invalid("no subscription on join", &r);
                }
            }
            LEAVE_GROUP_STATIC_MEMBER_EPOCH if r.instance_id.is_none() => {
                return self.invalid("-2 without an instance id", &r);
            }
            e if e < LEAVE_GROUP_STATIC_MEMBER_EPOCH => return self.invalid("member epoch", &r),
            _ => {}
        }
        if let Some(a) = r.server_assignor.as_deref() {
            if a != "uniform" && a != "range" {
                return self.invalid("assignor", &r);
            }
        }
        let instance = r.instance_id.as_deref().map(str::to_string);
        let member_id = r.member_id.to_string();

        // Leaves.
        if r.member_epoch == LEAVE_GROUP_MEMBER_EPOCH || r.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            if let Some(inst) = &instance {
                match self.statics.get(inst) {
                    None => return hb_error(ErrorCode::UNKNOWN_MEMBER_ID),
                    Some(h) if *h != member_id => return hb_error(ErrorCode::FENCED_INSTANCE_ID),
                    _ => {}
                }
            } else if !self.members.contains_key(&member_id) {
                return hb_error(ErrorCode::UNKNOWN_MEMBER_ID);
            }
            if r.member_epoch == LEAVE_GROUP_MEMBER_EPOCH {
                self.remove_member(&member_id);
            } else {
                let m = self.members.get_mut(&member_id).unwrap();
                m.set_epoch(LEAVE_GROUP_STATIC_MEMBER_EPOCH);
                m.pending_revocation.clear();
                m.state = MState::Stable;
                m.revoke_deadline = None;
                m.last_heard = now;
            }
            return ConsumerGroupHeartbeatResponse {
                error_code: ErrorCode::NONE,
                member_id: Some(b(&member_id)),
                member_epoch: r.member_epoch,
                heartbeat_interval_ms: 0,
                ..Default::default()
            };
        }

        let owned: Option<BTreeSet<IdTp>> = r.topic_partitions.as_deref().map(decode);
        let id: String;
        if r.member_epoch == 0 {
            self.stats.joins += 1;
            id = if member_id.is_empty() {
                let n = self.next_generated;
                self.next_generated += 1;
                format!("coordinator-chosen-{n}")
            } else {
                member_id
            };
            if let Some(inst) = &instance {
                match self.statics.get(inst).cloned() {
                    None => {
                        if self.members.contains_key(&id) {
                            self.violations.push(format!("model: static join {inst} reuses the dynamic id {id}"));
                        }
                        let m = self.new_member(&r, now);
                        self.members.insert(id.clone(), m);
                        self.statics.insert(inst.clone(), id.clone());
                        self.bump();
                    }
                    Some(holder) => {
                        if self.members[&holder].epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                            return hb_error(ErrorCode::UNRELEASED_INSTANCE_ID);
                        }
                        // Replace the member that left with -2: same assignment, epoch 0.
                        let mut m = self.members.remove(&holder).unwrap();
                        m.epoch = 0;
                        m.prev_epoch = 0;
                        m.last_heard = now;
                        self.members.insert(id.clone(), m);
                        self.statics.insert(inst.clone(), id.clone());
                        if let Some(t) = self.target.remove(&holder) {
                            self.target.insert(id.clone(), t);
                        }
                        self.stats.static_replacements += 1;
                    }
                }
            } else if !self.members.contains_key(&id) {
                let m = self.new_member(&r, now);
                self.members.insert(id.clone(), m);
                self.bump();
            }
        } else {
            id = member_id;
            let Some(m) = self.members.get(&id) else {
                return hb_error(ErrorCode::UNKNOWN_MEMBER_ID);
            };
            if let Some(inst) = &instance {
                match self.statics.get(inst) {
                    None => return hb_error(ErrorCode::UNKNOWN_MEMBER_ID),
                    Some(h) if *h != id => return hb_error(ErrorCode::FENCED_INSTANCE_ID),
                    _ => {}
                }
            }
            if r.member_epoch > m.epoch {
                return hb_error(ErrorCode::FENCED_MEMBER_EPOCH);
            }
            if r.member_epoch < m.epoch
                && (r.member_epoch != m.prev_epoch || !owned.as_ref().is_some_and(|o| o.is_subset(&m.assigned)))
            {
                return hb_error(ErrorCode::FENCED_MEMBER_EPOCH);
            }
        }
        let before = self.members[&id].assigned.clone();
        {
            let m = self.members.get_mut(&id).unwrap();
            m.last_heard = now;
            if r.rebalance_timeout_ms != -1 {
                m.rebalance_ms = r.rebalance_timeout_ms.max(1) as u64;
            }
        }
        if let Some(names) = &r.subscribed_topic_names {
            let set: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
            if self.members[&id].subscription != set {
                self.members.get_mut(&id).unwrap().subscription = set;
                self.bump();
            }
        }
        self.maybe_compute_target();
        self.reconcile(&id, owned.as_ref(), now);
        let full = r.member_epoch == 0
            || (r.rebalance_timeout_ms != -1 && r.subscribed_topic_names.is_some() && r.topic_partitions.is_some());
        if full {
            self.stats.full_heartbeats += 1;
        }
        self.stats.heartbeats += 1;
        let changed = self.members[&id].assigned != before;
        self.ok(&id, full || changed)
    }

    fn commit(&mut self, r: &OffsetCommitRequest) -> ErrorCode {
        let Some(m) = self.members.get(&*r.member_id) else {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        };
        if r.generation_id_or_member_epoch != m.epoch {
            return ErrorCode::STALE_MEMBER_EPOCH;
        }
        for t in &r.topics {
            let Some(&(id, _)) = self.topics.get(&*t.name) else {
                return ErrorCode::UNKNOWN_TOPIC_OR_PARTITION;
            };
            if t.topic_id != id {
                self.violations.push(format!("commit with topic id {} for {}", t.topic_id, t.name));
            }
            for p in &t.partitions {
                if let Some(other) = self.owner_of(&(id, p.partition_index), &r.member_id) {
                    self.violations.push(format!(
                        "commit by {} (epoch {}) accepted for {}-{} held by {other}",
                        r.member_id, r.generation_id_or_member_epoch, t.name, p.partition_index
                    ));
                }
            }
        }
        for t in &r.topics {
            for p in &t.partitions {
                let tp = (t.name.to_string(), p.partition_index);
                // The members commit their virtual clock: a committed offset going back means a
                // commit of an earlier owner (or generation) was accepted after a later one.
                if let Some(old) = self.committed.insert(tp.clone(), p.committed_offset) {
                    if p.committed_offset < old {
                        self.violations.push(format!(
                            "committed offset of {tp:?} moved back from {old} to {}",
                            p.committed_offset
                        ));
                    }
                }
            }
        }
        ErrorCode::NONE
    }

    fn fetch(&mut self, err: Option<ErrorCode>, r: &OffsetFetchRequest) -> OffsetFetchResponse {
        self.stats.fetches += 1;
        let Some(g) = r.groups.first() else {
            self.violations.push("OffsetFetch without the v8+ groups form".into());
            return OffsetFetchResponse { error_code: ErrorCode::INVALID_REQUEST, ..Default::default() };
        };
        let group_error = err.unwrap_or_else(|| {
            let Some(member_id) = g.member_id.as_deref() else {
                return ErrorCode::NONE;
            };
            match self.members.get(member_id) {
                None => ErrorCode::UNKNOWN_MEMBER_ID,
                Some(m) if m.epoch != g.member_epoch => ErrorCode::STALE_MEMBER_EPOCH,
                Some(_) => ErrorCode::NONE,
            }
        });
        let mut topics = Vec::new();
        if group_error.is_ok() {
            for t in g.topics.iter().flatten() {
                topics.push(OffsetFetchResponseTopics {
                    name: t.name.clone(),
                    topic_id: t.topic_id,
                    partitions: t
                        .partition_indexes
                        .iter()
                        .map(|&p| OffsetFetchResponsePartitions {
                            partition_index: p,
                            committed_offset: self.committed.get(&(t.name.to_string(), p)).copied().unwrap_or(-1),
                            committed_leader_epoch: -1,
                            metadata: Some(b("")),
                            error_code: ErrorCode::NONE,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                });
            }
        }
        OffsetFetchResponse {
            groups: vec![OffsetFetchResponseGroup {
                group_id: b(GROUP),
                topics,
                error_code: group_error,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Session expiry and the revocation (rebalance) timeout.
    fn tick(&mut self, now: u64) {
        if now < self.loading_until {
            return;
        }
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now >= m.last_heard + self.session_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for id in expired {
            self.stats.expirations += 1;
            self.remove_member(&id);
        }
        let late: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.state == MState::Unrevoked && m.revoke_deadline.is_some_and(|d| now >= d))
            .map(|(k, _)| k.clone())
            .collect();
        for id in late {
            self.stats.revocation_timeouts += 1;
            self.remove_member(&id);
        }
    }

    /// The coordinator moves: the group state is persisted; the new node loads it and
    /// reschedules every timer from the end of the load.
    fn move_to(&mut self, now: u64, node: i32, moving: u64, loading: u64) {
        self.node = node;
        self.moving_until = now + moving;
        self.loading_until = now + moving + loading;
        let loaded = self.loading_until;
        for m in self.members.values_mut() {
            m.last_heard = loaded;
            if m.state == MState::Unrevoked {
                m.revoke_deadline = Some(loaded + m.rebalance_ms);
            }
        }
    }

    fn set_partition_count(&mut self, topic: &str, n: i32) {
        if let Some(t) = self.topics.get_mut(topic) {
            t.1 = n;
            self.bump();
        }
    }
}

// ---- the simulation --------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Alive,
    /// `leave()` called, waiting for `has_left()`.
    Closing,
    Closed,
    Crashed,
    Fatal,
}

struct SimMember {
    name: String,
    instance: Option<String>,
    core: ConsumerGroupMember,
    life: Life,
    /// What the application holds, from the events: assigned or pending revocation.
    owned: BTreeSet<Tp>,
    /// Pending revocation and when the application finishes with it.
    revoking: Option<(BTreeSet<Tp>, u64)>,
    /// No `poll_called` before this time (a stall, or a slow revocation callback).
    stall_until: u64,
    /// The member epoch of the latest answer to the latest heartbeat; `None` once fenced or
    /// after Lost.
    told_epoch: Option<i32>,
    last_heartbeat: Option<RequestId>,
    dirty: bool,
    in_flight: BTreeMap<RequestId, RequestKind>,
    next_commit_at: u64,
    narrow_until: Option<u64>,
    /// The full topic names arrive at this time.
    names_at: Option<u64>,
    idle_due: u64,
}

enum Msg {
    ToCoordinator { from: usize, req: RequestId, target: Target, request: GroupRequest },
    ToMember { to: usize, req: RequestId, response: GroupResponse },
}

struct Sim {
    p: Params,
    rng: Rng,
    now: u64,
    base: Instant,
    model: Model,
    members: Vec<SimMember>,
    queue: BTreeMap<(u64, u64), Msg>,
    seq: u64,
    fifo: BTreeMap<(usize, bool), u64>,
    partitioned: BTreeMap<usize, u64>,
    restarts: Vec<(u64, Option<String>)>,
    next_name: usize,
    stats: Stats,
    violations: Vec<String>,
    counts_changed: bool,
    /// The next `script` entry.
    script_pos: usize,
    /// Per member, what happens to its next requests (`Fault::Refuse`).
    refuse: BTreeMap<usize, Vec<Option<ErrorCode>>>,
}

impl Sim {
    fn new(p: Params) -> Self {
        let mut sim = Self {
            rng: Rng::new(p.seed),
            now: 0,
            base: Instant::now(),
            model: Model::new(p.session_ms, p.heartbeat_ms),
            members: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            fifo: BTreeMap::new(),
            partitioned: BTreeMap::new(),
            restarts: Vec::new(),
            next_name: 0,
            stats: Stats { seeds: 1, ..Default::default() },
            violations: Vec::new(),
            counts_changed: false,
            script_pos: 0,
            refuse: BTreeMap::new(),
            p,
        };
        for _ in 0..sim.p.initial_members {
            let instance =
                if sim.rng.chance(sim.p.static_share) { Some(format!("static-{}", sim.next_name)) } else { None };
            sim.spawn(instance);
        }
        sim
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.p.trace {
            println!("[{:>6}] {}", self.now, what());
        }
    }

    fn fault(&mut self, kind: &'static str) {
        *self.stats.faults.entry(kind).or_default() += 1;
        self.trace(|| format!("FAULT {kind}"));
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(format!("seed {} t={}ms: {what}", self.p.seed, self.now));
        }
        self.stats.violations += 1;
    }

    fn live(&self, i: usize) -> bool {
        matches!(self.members[i].life, Life::Alive | Life::Closing)
    }

    fn in_fault_window(&self) -> bool {
        self.p.faults && self.now < self.p.fault_ms
    }

    fn spawn(&mut self, instance: Option<String>) {
        let name = match &instance {
            Some(i) => format!("{i}#{}", self.next_name),
            None => format!("dyn-{}", self.next_name),
        };
        self.next_name += 1;
        let now = self.at(self.now);
        let v0 = self.rng.chance(self.p.v0_share);
        let assignor = [None, Some("uniform"), Some("range")][self.rng.below(3) as usize];
        // A UUID from the seeded PRNG, for a deterministic run (the member makes a random one).
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        id[8..].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        let member_id = if v0 { String::new() } else { Uuid(id).to_string() };
        let mut config = self.p.config(instance.clone(), Some(member_id), assignor);
        // Each member its own jitter, the same in every run of the seed.
        config.backoff_seed = Some(self.p.seed.wrapping_mul(1_000_003).wrapping_add(self.next_name as u64));
        let mut core = ConsumerGroupMember::new(config, now);
        core.subscribe(full_subscription(), now);
        // Sometimes the metadata with the topic ids comes late: only "a" is named at first.
        let names_at = if self.in_fault_window() && self.rng.chance(0.3) {
            let mut some = all_names();
            some.retain(|_, n| n == "a");
            core.set_topic_names(some, now);
            Some(self.now + self.rng.range(100, 2500))
        } else {
            core.set_topic_names(all_names(), now);
            None
        };
        self.trace(|| format!("spawn {name} (v0 {v0}, assignor {assignor:?}, late names {names_at:?})"));
        self.members.push(SimMember {
            name,
            instance,
            core,
            life: Life::Alive,
            owned: BTreeSet::new(),
            revoking: None,
            stall_until: 0,
            told_epoch: None,
            last_heartbeat: None,
            dirty: true,
            in_flight: BTreeMap::new(),
            next_commit_at: self.now + 100,
            narrow_until: None,
            names_at,
            idle_due: 0,
        });
    }

    fn latency(&mut self) -> u64 {
        if self.in_fault_window() && self.rng.chance(0.03) {
            self.rng.range(30, 250)
        } else {
            self.rng.range(1, 8)
        }
    }

    fn schedule(&mut self, at: u64, msg: Msg) {
        self.seq += 1;
        self.queue.insert((at, self.seq), msg);
    }

    /// FIFO per member and direction, like one TCP connection.
    fn fifo_time(&mut self, member: usize, to_coordinator: bool) -> u64 {
        let lat = self.latency();
        let last = self.fifo.get(&(member, to_coordinator)).copied().unwrap_or(0);
        let t = (self.now + lat).max(last);
        self.fifo.insert((member, to_coordinator), t);
        t
    }

    fn cut_off(&self, member: usize) -> bool {
        self.partitioned.get(&member).is_some_and(|&until| self.now < until)
    }

    fn failure(&mut self, kind: RequestKind, target: Target) -> GroupResponse {
        if matches!(target, Target::Coordinator(_)) && self.rng.chance(0.3) {
            GroupResponse::CoordinatorUnreachable
        } else {
            GroupResponse::Failed { kind }
        }
    }

    fn send(&mut self, from: usize, req: RequestId, target: Target, request: GroupRequest) {
        let kind = request.kind();
        self.members[from].in_flight.insert(req, kind);
        if let Some(code) = self.refuse.get_mut(&from).and_then(|q| (!q.is_empty()).then(|| q.remove(0))) {
            let at = self.now + self.rng.range(1, 8);
            let response = match code {
                Some(code) => refusal(&request, code),
                None => self.failure(kind, target),
            };
            self.schedule(at, Msg::ToMember { to: from, req, response });
            return;
        }
        let drop = self.in_fault_window() && self.rng.chance(self.p.drop_rate);
        if drop || self.cut_off(from) {
            if drop {
                self.fault("drop request");
            }
            let at = self.now + self.rng.range(1, 8);
            let response = self.failure(kind, target);
            self.schedule(at, Msg::ToMember { to: from, req, response });
            return;
        }
        let at = self.fifo_time(from, true);
        self.schedule(at, Msg::ToCoordinator { from, req, target, request });
    }

    fn respond(&mut self, to: usize, req: RequestId, response: GroupResponse) {
        let Some(kind) = self.members[to].in_flight.get(&req).copied() else {
            return;
        };
        let drop = self.in_fault_window() && self.rng.chance(self.p.drop_rate);
        let at = self.fifo_time(to, false);
        if drop || self.cut_off(to) {
            if drop {
                self.fault("drop response");
            }
            let response = self.failure(kind, Target::Coordinator(0));
            self.schedule(at, Msg::ToMember { to, req, response });
        } else {
            self.schedule(at, Msg::ToMember { to, req, response });
        }
    }

    fn deliver(&mut self) {
        while let Some((&(at, seq), _)) = self.queue.iter().next() {
            if at > self.now {
                break;
            }
            let msg = self.queue.remove(&(at, seq)).unwrap();
            match msg {
                Msg::ToCoordinator { from, req, target, request } => {
                    self.trace(|| {
                        format!("-> coord from {} #{req} {}", self.members[from].name, describe_request(&request))
                    });
                    let response = self.model.handle(self.now, req, target, request);
                    if self.p.trace {
                        let id = self.members[from].core.member_id().to_string();
                        if let Some(mm) = self.model.members.get(&id) {
                            self.trace(|| format!("   model {}: {:?} epoch {} prev {} assigned {:?} pending {:?} (group {} target {})",
                                self.members[from].name, mm.state, mm.epoch, mm.prev_epoch, self.model.to_names(&mm.assigned),
                                self.model.to_names(&mm.pending_revocation), self.model.group_epoch, self.model.target_epoch));
                        }
                    }
                    self.respond(from, req, response);
                }
                Msg::ToMember { to, req, response } => {
                    if self.members[to].in_flight.remove(&req).is_none() || !self.live(to) {
                        continue;
                    }
                    self.trace(|| format!("<- {} #{req} {}", self.members[to].name, describe_response(&response)));
                    let m = &mut self.members[to];
                    if let GroupResponse::ConsumerGroupHeartbeat(r) = &response {
                        if m.last_heartbeat == Some(req) {
                            if r.error_code.is_ok() {
                                m.told_epoch = Some(r.member_epoch);
                            } else if r.error_code == ErrorCode::FENCED_MEMBER_EPOCH
                                || r.error_code == ErrorCode::UNKNOWN_MEMBER_ID
                            {
                                m.told_epoch = None;
                            }
                        }
                    }
                    let now = self.base + Duration::from_millis(self.now);
                    m.core.handle_response(req, response, now);
                    m.dirty = true;
                }
            }
        }
    }

    fn inject_faults(&mut self) {
        if !self.in_fault_window() {
            return;
        }
        self.drive_faults();
    }
}

impl FaultDriver for Sim {
    fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    fn now(&self) -> u64 {
        self.now
    }

    fn params(&self) -> &Params {
        &self.p
    }

    fn script_pos(&mut self) -> &mut usize {
        &mut self.script_pos
    }

    fn coordinator(&self) -> i32 {
        self.model.node
    }

    fn members(&self) -> &[SimMember] {
        &self.members
    }

    fn live_count(&self) -> usize {
        (0..self.members.len()).filter(|&i| self.members[i].life == Life::Alive).count() + self.restarts.len()
    }

    fn counts_changed(&self) -> bool {
        self.counts_changed
    }

    /// `member`: an index into `members`.
    fn apply_fault(&mut self, f: Fault) {
        match f {
            Fault::Move { node, moving, loading } => {
                let mut node = NODES[node as usize % 3];
                if node == self.model.node {
                    node = NODES[(NODES.iter().position(|&n| n == node).unwrap() + 1) % 3];
                }
                self.fault("coordinator move");
                self.model.move_to(self.now, node, moving, loading);
            }
            Fault::Crash { member: i, back } => {
                self.fault("member crash");
                self.trace(|| format!("crash {}", self.members[i].name));
                self.members[i].life = Life::Crashed;
                if let Some(back) = back {
                    let instance = self.members[i].instance.clone();
                    self.restarts.push((self.now + back, instance));
                }
            }
            Fault::NewMember { is_static } => {
                if self.live_count() >= MAX_LIVE {
                    return;
                }
                self.fault("new member");
                let instance = is_static.then(|| format!("static-{}", self.next_name));
                self.spawn(instance);
            }
            Fault::Leave { member: i, explicit, back } => {
                self.fault("graceful leave");
                self.trace(|| format!("leave {}", self.members[i].name));
                let now = self.at(self.now);
                self.members[i].life = Life::Closing;
                if explicit && self.members[i].instance.is_some() {
                    self.members[i].core.leave_explicitly(now);
                } else {
                    self.members[i].core.leave(now);
                }
                if let Some(back) = back {
                    let instance = self.members[i].instance.clone();
                    self.restarts.push((self.now + back, instance));
                }
            }
            Fault::Partition { member: i, ms } => {
                self.fault("network partition");
                self.partitioned.insert(i, self.now + ms);
            }
            Fault::Stall { member: i, ms } => {
                self.fault("poll stall");
                self.members[i].stall_until = self.members[i].stall_until.max(self.now + ms);
            }
            Fault::Narrow { member: i, ms } => {
                if self.members[i].narrow_until.is_some() {
                    return;
                }
                self.fault("subscription change");
                let now = self.at(self.now);
                self.members[i].core.subscribe(["a".to_string()].into(), now);
                self.members[i].narrow_until = Some(self.now + ms);
            }
            Fault::CountChange => {
                if self.counts_changed {
                    return;
                }
                self.fault("partition count change");
                self.counts_changed = true;
                self.model.set_partition_count("b", 6);
            }
            Fault::Refuse { member: i, code } => {
                self.fault("request refused");
                self.refuse.entry(i).or_default().push(code);
            }
        }
    }
}

impl Sim {
    fn restart_due(&mut self) {
        let due: Vec<(u64, Option<String>)> = self.restarts.iter().filter(|(t, _)| *t <= self.now).cloned().collect();
        self.restarts.retain(|(t, _)| *t > self.now);
        for (_, instance) in due {
            if let Some(inst) = &instance {
                // Never two live incarnations of one instance id.
                if self
                    .members
                    .iter()
                    .any(|m| m.instance.as_ref() == Some(inst) && matches!(m.life, Life::Alive | Life::Closing))
                {
                    self.restarts.push((self.now + 1000, instance));
                    continue;
                }
            }
            self.fault("member restart");
            self.spawn(instance);
        }
    }

    fn step_member(&mut self, i: usize) {
        if !self.live(i) {
            return;
        }
        let now_ms = self.now;
        let now = self.at(now_ms);
        // The application.
        {
            let m = &mut self.members[i];
            if m.names_at.is_some_and(|t| now_ms >= t) {
                m.names_at = None;
                m.core.set_topic_names(all_names(), now);
                m.dirty = true;
            }
            if let Some((set, done_at)) = m.revoking.clone() {
                if done_at <= now_ms {
                    m.core.revocation_done(now);
                    for tp in &set {
                        m.owned.remove(tp);
                    }
                    m.revoking = None;
                    m.dirty = true;
                }
            }
            if m.revoking.is_none() && now_ms >= m.stall_until {
                m.core.poll_called(now);
            }
            if let Some(until) = m.narrow_until {
                if now_ms >= until {
                    m.narrow_until = None;
                    m.core.subscribe(full_subscription(), now);
                    m.dirty = true;
                }
            }
            if m.life == Life::Alive && now_ms >= m.next_commit_at && m.revoking.is_none() && now_ms >= m.stall_until {
                m.next_commit_at = now_ms + 150;
                if m.core.generation().is_some() && !m.core.assignment().is_empty() {
                    let offsets = m.core.assignment().iter().map(|tp| (tp.clone(), (now_ms as i64, Some(0)))).collect();
                    m.core.commit(offsets, now);
                    m.dirty = true;
                }
            }
        }
        let mut rounds = 0;
        loop {
            rounds += 1;
            if rounds > 100 {
                self.violation(format!("{}: more than 100 request/event rounds in one step", self.members[i].name));
                break;
            }
            let mut progressed = false;
            let due = self.members[i].core.next_timeout().is_some_and(|t| t <= now);
            if self.members[i].dirty || due {
                self.members[i].dirty = false;
                let mut sent = false;
                while let Some((id, target, request)) = self.members[i].core.poll_request(now) {
                    sent = true;
                    progressed = true;
                    self.check_request(i, id, &request);
                    self.trace(|| {
                        format!("{} sends #{id} {} to {target:?}", self.members[i].name, describe_request(&request))
                    });
                    self.send(i, id, target, request);
                }
                if due && !sent {
                    let still_due = self.members[i].core.next_timeout().is_some_and(|t| t <= now);
                    if still_due {
                        self.members[i].idle_due += 1;
                    }
                } else {
                    self.members[i].idle_due = 0;
                }
            }
            while let Some(ev) = self.members[i].core.poll_event() {
                progressed = true;
                self.members[i].dirty = true;
                self.on_event(i, ev);
            }
            if !progressed {
                break;
            }
        }
        if self.members[i].idle_due > 400 {
            let m = &self.members[i];
            let msg = format!("{}: next_timeout stuck in the past for 2 s: {:?}", m.name, m.core);
            self.members[i].idle_due = 0;
            self.violation(msg);
        }
        let m = &mut self.members[i];
        if m.life == Life::Closing && m.core.has_left() {
            if !m.owned.is_empty() {
                let msg = format!("{} left still holding {:?}", m.name, m.owned);
                self.violation(msg);
            }
            self.members[i].life = Life::Closed;
        }
    }

    /// (1) and request shape checks.
    fn check_request(&mut self, i: usize, id: RequestId, request: &GroupRequest) {
        match request {
            GroupRequest::OffsetCommit(r) => {
                self.stats.commits_sent += 1;
                let m = &self.members[i];
                let sent = (r.generation_id_or_member_epoch, r.member_id.to_string());
                if m.told_epoch != Some(sent.0) || sent.1 != m.core.member_id() || sent.0 <= 0 {
                    self.stats.stale_commits_sent += 1;
                    let msg = format!(
                        "{} sent OffsetCommit with {sent:?}; told {:?}, member id {}",
                        m.name,
                        m.told_epoch,
                        m.core.member_id()
                    );
                    self.violation(msg);
                }
            }
            GroupRequest::ConsumerGroupHeartbeat(r) => {
                let m = &mut self.members[i];
                if r.member_epoch >= 0 {
                    m.last_heartbeat = Some(id);
                }
                match r.member_epoch {
                    LEAVE_GROUP_MEMBER_EPOCH => self.stats.leaves_dynamic += 1,
                    LEAVE_GROUP_STATIC_MEMBER_EPOCH => self.stats.leaves_static += 1,
                    _ => {}
                }
                let static_member = m.instance.is_some();
                if r.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH && !static_member {
                    let msg = format!("{}: a dynamic member sent -2", m.name);
                    self.violation(msg);
                }
            }
            GroupRequest::OffsetFetch(r) => {
                let m = &self.members[i];
                let g = r.groups.first();
                if g.is_none_or(|g| g.member_epoch <= 0 || g.member_id.as_deref() != Some(m.core.member_id())) {
                    let msg = format!("{}: OffsetFetch without the member id and epoch: {r:?}", m.name);
                    self.violation(msg);
                }
            }
            GroupRequest::FindCoordinator(_) => {}
            other => {
                let msg = format!("{}: a classic group request {:?}", self.members[i].name, other.kind());
                self.violation(msg);
            }
        }
    }

    fn on_event(&mut self, i: usize, ev: GroupEvent) {
        let now_ms = self.now;
        let now = self.at(now_ms);
        let name = self.members[i].name.clone();
        self.trace(|| format!("{name} event {ev:?}"));
        match ev {
            GroupEvent::Revoke(set) => {
                self.stats.revokes += 1;
                if !set.is_subset(&self.members[i].owned) {
                    let msg = format!("{name}: Revoke {set:?} not owned ({:?})", self.members[i].owned);
                    self.violation(msg);
                }
                let delay = if self.in_fault_window() && self.rng.chance(0.04) {
                    // Sometimes longer than the rebalance timeout: the lease takes them away.
                    self.rng.range(3_000, 7_000)
                } else if self.p.slow_revocations && self.rng.chance(0.15) {
                    self.rng.range(100, 1_500)
                } else {
                    self.rng.range(0, 30)
                };
                let m = &mut self.members[i];
                match &mut m.revoking {
                    Some((s, at)) => {
                        s.extend(set.iter().cloned());
                        *at = (*at).max(now_ms + delay);
                    }
                    None => m.revoking = Some((set.clone(), now_ms + delay)),
                }
                if m.core.generation().is_some() {
                    let offsets = set.iter().map(|tp| (tp.clone(), (now_ms as i64, Some(0)))).collect();
                    m.core.commit(offsets, now);
                }
                m.stall_until = m.stall_until.max(now_ms + delay);
            }
            GroupEvent::Assigned(set) => {
                self.stats.assigned += 1;
                for tp in &set {
                    if !self.members[i].owned.insert(tp.clone()) {
                        let msg = format!("{name}: Assigned {tp:?} already owned");
                        self.violation(msg);
                    }
                }
            }
            GroupEvent::Lost(set) => {
                self.stats.lost += 1;
                let m = &mut self.members[i];
                m.told_epoch = None;
                for tp in &set {
                    m.owned.remove(tp);
                }
                if m.revoking.take().is_some() {
                    m.stall_until = now_ms;
                }
                m.core.lost_handled(now);
            }
            GroupEvent::CommittedOffsets(_) | GroupEvent::OffsetFetchFailed(_) => {}
            GroupEvent::CommitResult { result, .. } => {
                if result.is_ok() {
                    self.stats.commits_ok += 1;
                } else {
                    self.stats.commits_failed += 1;
                }
            }
            GroupEvent::Fatal(code) => {
                let instance = self.members[i].instance.clone();
                if instance.is_some()
                    && (code == ErrorCode::UNRELEASED_INSTANCE_ID || code == ErrorCode::FENCED_INSTANCE_ID)
                {
                    // Legitimate: a crashed static member restarted before the coordinator
                    // released its instance id. The application restarts the consumer later.
                    self.stats.fatal_restarts += 1;
                    let back = self.now + self.rng.range(300, 1500);
                    self.restarts.push((back, instance));
                } else {
                    self.violation(format!("{name}: fatal {code:?}"));
                }
                self.members[i].life = Life::Fatal;
            }
        }
    }

    /// (2): no partition held by two live members; each member's events agree with its core.
    fn check_ownership(&mut self) {
        let mut holder: BTreeMap<Tp, usize> = BTreeMap::new();
        let mut problems = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            if !matches!(m.life, Life::Alive | Life::Closing) {
                continue;
            }
            let core_view: BTreeSet<Tp> =
                m.core.assignment().iter().chain(m.core.pending_revocation().iter()).cloned().collect();
            if core_view != m.owned {
                problems.push(format!("{}: events say {:?}, core says {:?}", m.name, m.owned, core_view));
            }
            for tp in &m.owned {
                if let Some(other) = holder.insert(tp.clone(), i) {
                    problems.push(format!("{tp:?} held by both {} and {}", self.members[other].name, m.name));
                }
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    fn step(&mut self) {
        self.now += TICK_MS;
        self.inject_faults();
        self.restart_due();
        self.deliver();
        self.model.tick(self.now);
        for i in 0..self.members.len() {
            self.step_member(i);
        }
        self.check_ownership();
        for v in std::mem::take(&mut self.model.violations) {
            self.violation(v);
        }
    }

    fn run(&mut self) {
        let end = self.p.fault_ms + self.p.settle_ms;
        while self.now < end {
            self.step();
            if self.stats.violations > 20 {
                break;
            }
        }
        self.check_final();
        let mstats = std::mem::take(&mut self.model.stats);
        let mut s = std::mem::take(&mut self.stats);
        s.epoch_bumps += mstats.epoch_bumps;
        s.joins += mstats.joins;
        s.heartbeats += mstats.heartbeats;
        s.full_heartbeats += mstats.full_heartbeats;
        s.fenced_answers += mstats.fenced_answers;
        s.unknown_member_answers += mstats.unknown_member_answers;
        s.unreleased_answers += mstats.unreleased_answers;
        s.static_replacements += mstats.static_replacements;
        s.expirations += mstats.expirations;
        s.revocation_timeouts += mstats.revocation_timeouts;
        s.commits_stale_answer += mstats.commits_stale_answer;
        s.fetches += mstats.fetches;
        self.stats = s;
    }

    /// (5): after the faults, every live member stable at the target epoch, every partition
    /// owned exactly once.
    fn check_final(&mut self) {
        let live: Vec<usize> = (0..self.members.len()).filter(|&i| self.members[i].life == Life::Alive).collect();
        let mut problems = Vec::new();
        for m in self.members.iter().filter(|m| m.life == Life::Closing) {
            problems.push(format!("{} still closing: {:?}", m.name, m.core));
        }
        let model = &self.model;
        if live.is_empty() {
            if !model.members.is_empty() {
                problems.push(format!("no live members but the coordinator has {:?}", model.members.keys()));
            }
        } else {
            if model.target_epoch != model.group_epoch {
                problems.push(format!("target epoch {} behind group epoch {}", model.target_epoch, model.group_epoch));
            }
            let ids: BTreeSet<String> = live.iter().map(|&i| self.members[i].core.member_id().to_string()).collect();
            let coordinator_ids: BTreeSet<String> = model.members.keys().cloned().collect();
            if ids != coordinator_ids {
                problems.push(format!("live members {ids:?} but the coordinator has {coordinator_ids:?}"));
            }
            let mut all: BTreeMap<Tp, usize> = BTreeMap::new();
            for &i in &live {
                let m = &self.members[i];
                if !m.core.is_stable() {
                    problems.push(format!("{} not stable at the end: {:?}", m.name, m.core));
                }
                if let Some(mm) = model.members.get(m.core.member_id()) {
                    if mm.state != MState::Stable || mm.epoch != model.target_epoch {
                        problems.push(format!(
                            "{}: coordinator state {:?} epoch {} (target {})",
                            m.name, mm.state, mm.epoch, model.target_epoch
                        ));
                    }
                    if m.core.member_epoch() != mm.epoch {
                        problems.push(format!(
                            "{}: epoch {} but the coordinator has {}",
                            m.name,
                            m.core.member_epoch(),
                            mm.epoch
                        ));
                    }
                    if &model.to_names(&mm.assigned) != m.core.assignment() {
                        problems.push(format!(
                            "{}: owns {:?}, coordinator says {:?}",
                            m.name,
                            m.core.assignment(),
                            mm.assigned
                        ));
                    }
                }
                for tp in m.core.assignment() {
                    *all.entry(tp.clone()).or_default() += 1;
                }
            }
            let expected = model.all_partitions();
            let got: BTreeSet<Tp> = all.keys().cloned().collect();
            if got != expected {
                problems.push(format!(
                    "owned {} partitions, expected {}: missing {:?}",
                    got.len(),
                    expected.len(),
                    expected.difference(&got).collect::<Vec<_>>()
                ));
            }
            if let Some((tp, n)) = all.iter().find(|(_, &n)| n > 1) {
                problems.push(format!("{tp:?} owned {n} times"));
            }
        }
        for p in problems {
            self.violation(format!("final: {p}"));
        }
    }
}

fn describe_request(r: &GroupRequest) -> String {
    match r {
        GroupRequest::FindCoordinator(_) => "FindCoordinator".into(),
        GroupRequest::ConsumerGroupHeartbeat(r) => format!(
            "Heartbeat member={} epoch={} subs={:?} owned={:?}",
            r.member_id,
            r.member_epoch,
            r.subscribed_topic_names.as_ref().map(|s| s.len()),
            r.topic_partitions.as_deref().map(decode)
        ),
        GroupRequest::OffsetCommit(r) => {
            format!("OffsetCommit epoch={} member={}", r.generation_id_or_member_epoch, r.member_id)
        }
        GroupRequest::OffsetFetch(_) => "OffsetFetch".into(),
        other => format!("{:?}", other.kind()),
    }
}

fn describe_response(r: &GroupResponse) -> String {
    match r {
        GroupResponse::FindCoordinator(r) => {
            format!("FindCoordinator {:?}/{:?}", r.error_code, r.coordinators.first().map(|c| c.error_code))
        }
        GroupResponse::ConsumerGroupHeartbeat(r) => format!(
            "Heartbeat {:?} member={:?} epoch={} assignment={:?}",
            r.error_code,
            r.member_id,
            r.member_epoch,
            r.assignment.as_ref().map(|a| decode(&a.topic_partitions))
        ),
        GroupResponse::OffsetCommit(r) => {
            format!("OffsetCommit {:?}", r.topics.first().and_then(|t| t.partitions.first()).map(|p| p.error_code))
        }
        GroupResponse::OffsetFetch(r) => format!("OffsetFetch {:?}", r.groups.first().map(|g| g.error_code)),
        GroupResponse::Failed { kind } => format!("Failed {kind:?}"),
        GroupResponse::CoordinatorUnreachable => "CoordinatorUnreachable".into(),
        other => format!("{other:?}"),
    }
}

include!("group_faults.rs");
