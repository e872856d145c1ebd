// The classic group simulation's machinery, shared by `group_simulation.rs` and the `seq_group`
// fuzz target (both `include!` it, so that the tests and the target reach the same private
// items): the model group coordinator (classic rebalance protocol, KIP-345 static members,
// KIP-394 member ids, OffsetCommit / OffsetFetch checks, coordinator moves), the driver that
// runs `GroupMember`s against it with faults (drawn from a seeded PRNG, or scripted by the fuzz
// target with `Sim::script`), and the invariant checks after every step (`check_ownership`,
// `check_request`, events) and at the end (`check_final`). See `group_simulation.rs` for the
// protocol, faults and invariants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use kafka_wire::codec::messages::find_coordinator::{Coordinator, FindCoordinatorResponse};
use kafka_wire::codec::messages::heartbeat::HeartbeatResponse;
use kafka_wire::codec::messages::join_group::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_wire::codec::messages::leave_group::{LeaveGroupResponse, MemberResponse};
use kafka_wire::codec::messages::offset_commit::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_wire::codec::messages::offset_fetch::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_wire::codec::messages::sync_group::SyncGroupResponse;
use kafka_wire::codec::messages::{
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_wire::codec::ErrorCode;
use kafka_wire::proto::assignor::{
    Assignor, ConsumerProtocolAssignment, ConsumerProtocolSubscription, CooperativeStickyAssignor, RangeAssignor,
    RoundRobinAssignor,
};
use kafka_wire::proto::driving::{RequestId, RequestKind, Target};
use kafka_wire::proto::group::{GroupConfig, GroupEvent, GroupMember, GroupRequest, GroupResponse, Member, Tp};

const GROUP: &str = "sim-group";
const NODES: [i32; 3] = [1, 2, 3];
const TICK_MS: u64 = 5;
const MAX_LIVE: usize = 5;

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
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

// ---- parameters ------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// range, eager.
    Range,
    /// roundrobin, eager.
    RoundRobin,
    /// cooperative-sticky, cooperative.
    Cooperative,
    /// cooperative-sticky preferred but range also listed: eager protocol (the upgrade path).
    StickyEager,
}

impl Mode {
    fn assignors(self) -> Vec<Arc<dyn Assignor + Send + Sync>> {
        match self {
            Mode::Range => vec![Arc::new(RangeAssignor)],
            Mode::RoundRobin => vec![Arc::new(RoundRobinAssignor)],
            Mode::Cooperative => vec![Arc::new(CooperativeStickyAssignor)],
            Mode::StickyEager => vec![Arc::new(CooperativeStickyAssignor), Arc::new(RangeAssignor)],
        }
    }
    fn eager(self) -> bool {
        self != Mode::Cooperative
    }
}

#[derive(Clone, Debug)]
struct Params {
    seed: u64,
    mode: Mode,
    initial_members: usize,
    static_share: f64,
    faults: bool,
    fault_ms: u64,
    settle_ms: u64,
    session_ms: u64,
    heartbeat_ms: u64,
    rebalance_ms: u64,
    /// The chance that a request, or an answer, is lost (in the fault window).
    drop_rate: f64,
    /// Faults at these virtual times (ms, ascending) instead of the PRNG's.
    script: Option<Vec<(u64, Fault)>>,
    trace: bool,
}

impl Params {
    fn standard(seed: u64, mode: Mode) -> Self {
        let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
        Self {
            seed,
            mode,
            initial_members: rng.range(1, 5) as usize,
            static_share: [0.0, 0.5, 1.0][rng.below(3) as usize],
            faults: true,
            fault_ms: 30_000,
            settle_ms: 25_000,
            session_ms: 2_000,
            heartbeat_ms: 300,
            rebalance_ms: 5_000,
            drop_rate: 0.02,
            script: None,
            trace: std::env::var("SIM_TRACE").is_ok(),
        }
    }

    fn config(&self, instance: Option<String>) -> GroupConfig {
        let mut c = GroupConfig::new(GROUP, self.mode.assignors());
        c.group_instance_id = instance;
        c.session_timeout = Duration::from_millis(self.session_ms);
        c.heartbeat_interval = Duration::from_millis(self.heartbeat_ms);
        c.rebalance_timeout = Duration::from_millis(self.rebalance_ms);
        c.retry_backoff = Duration::from_millis(50);
        c.retry_backoff_max = Duration::from_millis(800);
        c.backoff_seed = Some(self.seed);
        c
    }
}

#[derive(Clone, Debug, Default)]
struct Stats {
    seeds: u64,
    rebalances: u64,
    generations: u64,
    joins: u64,
    member_id_required: u64,
    syncs: u64,
    heartbeats: u64,
    commits_sent: u64,
    commits_ok: u64,
    commits_failed: u64,
    commits_rejected_illegal_generation: u64,
    stale_commits_sent: u64,
    fetches: u64,
    revokes: u64,
    assigned: u64,
    lost: u64,
    static_replacements: u64,
    expirations: u64,
    fenced_restarts: u64,
    faults: BTreeMap<&'static str, u64>,
    violations: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.rebalances += o.rebalances;
        self.generations += o.generations;
        self.joins += o.joins;
        self.member_id_required += o.member_id_required;
        self.syncs += o.syncs;
        self.heartbeats += o.heartbeats;
        self.commits_sent += o.commits_sent;
        self.commits_ok += o.commits_ok;
        self.commits_failed += o.commits_failed;
        self.commits_rejected_illegal_generation += o.commits_rejected_illegal_generation;
        self.stale_commits_sent += o.stale_commits_sent;
        self.fetches += o.fetches;
        self.revokes += o.revokes;
        self.assigned += o.assigned;
        self.lost += o.lost;
        self.static_replacements += o.static_replacements;
        self.expirations += o.expirations;
        self.fenced_restarts += o.fenced_restarts;
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_default() += v;
        }
        self.violations += o.violations;
    }

    fn print(&self, title: &str) {
        println!("== {title}: {} seeds", self.seeds);
        println!(
            "   rebalances completed {}, final generations summed {}, joins {} (MEMBER_ID_REQUIRED {}), syncs {}, heartbeats {}",
            self.rebalances, self.generations, self.joins, self.member_id_required, self.syncs, self.heartbeats
        );
        println!(
            "   commits sent {} ok {} failed {} (model ILLEGAL_GENERATION {}), stale commits sent {}, offset fetches {}",
            self.commits_sent,
            self.commits_ok,
            self.commits_failed,
            self.commits_rejected_illegal_generation,
            self.stale_commits_sent,
            self.fetches
        );
        println!(
            "   events: revoke {} assigned {} lost {}; static replacements without rebalance {}; session expirations {}; static members fenced after a failover (restarted) {}",
            self.revokes, self.assigned, self.lost, self.static_replacements, self.expirations, self.fenced_restarts
        );
        println!("   faults: {:?}", self.faults);
        println!("   violations: {}", self.violations);
    }
}

// ---- model coordinator -----------------------------------------------------------------------

/// Where to send an answer: the member (incarnation) index and its request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reply {
    member: usize,
    req: RequestId,
}

type Out = Vec<(Reply, GroupResponse)>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum GState {
    Empty,
    Preparing { deadline: u64 },
    Completing { deadline: u64 },
    Stable,
}

#[derive(Clone, Debug)]
struct MemberMeta {
    instance: Option<String>,
    session_ms: u64,
    rebalance_ms: u64,
    protocols: Vec<(String, Bytes)>,
    awaiting_join: Option<Reply>,
    awaiting_sync: Option<Reply>,
    last_heard: u64,
    assignment: Bytes,
    /// Answered in this generation's join phase and not yet synced.
    pending_sync: bool,
}

#[derive(Clone, Debug)]
struct Group {
    state: GState,
    generation: i32,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, MemberMeta>,
    statics: BTreeMap<String, String>,
    /// The topics the members subscribed to when the join phase of this generation ended: those
    /// its assignment was made for.
    assigned_topics: BTreeSet<String>,
    /// A static member replaced itself in this generation with a subscription to other topics.
    /// Kafka (4.1, KAFKA-12759) does not rebalance for that: the assignment stays the one made
    /// for `assigned_topics` until something else starts a rebalance.
    replaced_with_other_topics: bool,
    /// KIP-394: member ids handed out with MEMBER_ID_REQUIRED, and when they expire.
    pending: BTreeMap<String, u64>,
}

impl Group {
    fn new() -> Self {
        Self {
            state: GState::Empty,
            generation: 0,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            statics: BTreeMap::new(),
            assigned_topics: BTreeSet::new(),
            replaced_with_other_topics: false,
            pending: BTreeMap::new(),
        }
    }
}

struct Model {
    node: i32,
    /// FindCoordinator answers COORDINATOR_NOT_AVAILABLE until then.
    moving_until: u64,
    /// The coordinator answers COORDINATOR_LOAD_IN_PROGRESS until then.
    loading_until: u64,
    group: Group,
    stored: Group,
    committed: BTreeMap<Tp, i64>,
    next_member: u64,
    counts: BTreeMap<String, i32>,
    stats: Stats,
    violations: Vec<String>,
    unstable_fetch_chance: f64,
}

fn b(s: &str) -> ByteString {
    ByteString::from(s)
}

fn join_error(code: ErrorCode, member_id: &str) -> GroupResponse {
    GroupResponse::JoinGroup(JoinGroupResponse {
        error_code: code,
        generation_id: -1,
        protocol_name: None,
        member_id: b(member_id),
        ..Default::default()
    })
}

fn sync_error(code: ErrorCode) -> GroupResponse {
    GroupResponse::SyncGroup(SyncGroupResponse { error_code: code, ..Default::default() })
}

/// The topics of a member's subscription for `protocol` (none if it does not offer it).
fn subscribed_topics(protocols: &[(String, Bytes)], protocol: &str) -> BTreeSet<String> {
    protocols
        .iter()
        .find(|(n, _)| n == protocol)
        .map(|(_, md)| {
            let (_, sub) = ConsumerProtocolSubscription::decode(md.clone()).expect("subscription decodes");
            sub.topics.into_iter().collect()
        })
        .unwrap_or_default()
}

fn decode_assignment(bytes: &Bytes) -> BTreeSet<Tp> {
    if bytes.is_empty() {
        return BTreeSet::new();
    }
    let (_, a) = ConsumerProtocolAssignment::decode(bytes.clone()).expect("assignment decodes");
    a.to_map().into_iter().flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p))).collect()
}

impl Model {
    fn new(counts: BTreeMap<String, i32>) -> Self {
        Self {
            node: NODES[0],
            moving_until: 0,
            loading_until: 0,
            group: Group::new(),
            stored: Group::new(),
            committed: BTreeMap::new(),
            next_member: 1,
            counts,
            stats: Stats::default(),
            violations: Vec::new(),
            unstable_fetch_chance: 0.0,
        }
    }

    fn store(&mut self) {
        let mut g = self.group.clone();
        for m in g.members.values_mut() {
            m.awaiting_join = None;
            m.awaiting_sync = None;
        }
        g.pending.clear();
        self.stored = g;
    }

    fn new_member_id(&mut self, instance: Option<&str>) -> String {
        let n = self.next_member;
        self.next_member += 1;
        format!("{}-{n}", instance.unwrap_or("consumer"))
    }

    /// The coordinator moves to another node: the old one answers what it holds with
    /// NOT_COORDINATOR, the new one loads the group as last stored.
    fn move_to(&mut self, now: u64, node: i32, moving: u64, loading: u64) -> Out {
        let mut out = Vec::new();
        for m in self.group.members.values_mut() {
            if let Some(r) = m.awaiting_join.take() {
                out.push((r, join_error(ErrorCode::NOT_COORDINATOR, "")));
            }
            if let Some(r) = m.awaiting_sync.take() {
                out.push((r, sync_error(ErrorCode::NOT_COORDINATOR)));
            }
        }
        self.node = node;
        self.moving_until = now + moving;
        self.loading_until = now + moving + loading;
        self.group = self.stored.clone();
        // Loading schedules every member's session from now.
        for m in self.group.members.values_mut() {
            m.last_heard = self.loading_until;
            m.pending_sync = false;
        }
        out
    }

    fn check_target(&self, now: u64, target: Target) -> Option<ErrorCode> {
        match target {
            Target::Coordinator(n) if n != self.node => Some(ErrorCode::NOT_COORDINATOR),
            Target::Coordinator(_) if now < self.loading_until => Some(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
            Target::AnyBroker => Some(ErrorCode::INVALID_REQUEST),
            _ => None,
        }
    }

    fn handle(&mut self, now: u64, from: Reply, target: Target, request: GroupRequest) -> Out {
        if let GroupRequest::FindCoordinator(r) = &request {
            let (error, node) = if now < self.moving_until {
                (ErrorCode::COORDINATOR_NOT_AVAILABLE, -1)
            } else {
                (ErrorCode::NONE, self.node)
            };
            let key = r.coordinator_keys.first().cloned().unwrap_or_else(|| r.key.clone());
            // Half the time a v4+ answer (per key), else a v0-3 one.
            let v4 = (now / TICK_MS + from.req.0) % 2 == 0;
            let resp = if v4 {
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
            return vec![(from, GroupResponse::FindCoordinator(resp))];
        }
        let err = self.check_target(now, target);
        let mut out = Vec::new();
        match request {
            GroupRequest::JoinGroup(r) => match err {
                Some(e) => out.push((from, join_error(e, ""))),
                None => self.join(now, from, r, &mut out),
            },
            GroupRequest::SyncGroup(r) => match err {
                Some(e) => out.push((from, sync_error(e))),
                None => self.sync(now, from, r, &mut out),
            },
            GroupRequest::Heartbeat(r) => {
                let code = err.unwrap_or_else(|| self.heartbeat(now, r));
                out.push((
                    from,
                    GroupResponse::Heartbeat(HeartbeatResponse { error_code: code, ..Default::default() }),
                ));
            }
            GroupRequest::LeaveGroup(r) => match err {
                Some(e) => out.push((
                    from,
                    GroupResponse::LeaveGroup(LeaveGroupResponse { error_code: e, ..Default::default() }),
                )),
                None => self.leave(now, from, r, &mut out),
            },
            GroupRequest::OffsetCommit(r) => {
                let code = err.unwrap_or_else(|| self.commit_check(&r));
                if code.is_ok() {
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
                }
                let resp = OffsetCommitResponse {
                    topics: r
                        .topics
                        .iter()
                        .map(|t| OffsetCommitResponseTopic {
                            name: t.name.clone(),
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
                };
                out.push((from, GroupResponse::OffsetCommit(resp)));
            }
            GroupRequest::OffsetFetch(r) => {
                let resp = self.fetch(now, from, err, r);
                out.push((from, GroupResponse::OffsetFetch(resp)));
            }
            GroupRequest::FindCoordinator(_) => unreachable!(),
            GroupRequest::ConsumerGroupHeartbeat(r) => panic!("a classic member sent a KIP-848 heartbeat: {r:?}"),
        }
        self.maybe_complete_join(now, &mut out);
        out
    }

    fn max_rebalance_ms(&self) -> u64 {
        self.group.members.values().map(|m| m.rebalance_ms).max().unwrap_or(0)
    }

    fn prepare_rebalance(&mut self, now: u64, out: &mut Out) {
        match self.group.state {
            GState::Preparing { .. } => return,
            GState::Completing { .. } => {
                for m in self.group.members.values_mut() {
                    if let Some(r) = m.awaiting_sync.take() {
                        out.push((r, sync_error(ErrorCode::REBALANCE_IN_PROGRESS)));
                    }
                }
            }
            GState::Stable | GState::Empty => {}
        }
        for m in self.group.members.values_mut() {
            m.pending_sync = false;
        }
        let deadline = now + self.max_rebalance_ms().max(1);
        self.group.state = GState::Preparing { deadline };
    }

    fn join(&mut self, now: u64, from: Reply, r: JoinGroupRequest, out: &mut Out) {
        self.stats.joins += 1;
        let protocols: Vec<(String, Bytes)> =
            r.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect();
        if &*r.protocol_type != "consumer" || protocols.is_empty() {
            out.push((from, join_error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, &r.member_id)));
            return;
        }
        let instance = r.group_instance_id.as_deref().map(str::to_string);
        let session_ms = r.session_timeout_ms.max(1) as u64;
        let rebalance_ms = r.rebalance_timeout_ms.max(1) as u64;
        let fresh = |awaiting: Option<Reply>, protocols: Vec<(String, Bytes)>| MemberMeta {
            instance: instance.clone(),
            session_ms,
            rebalance_ms,
            protocols,
            awaiting_join: awaiting,
            awaiting_sync: None,
            last_heard: now,
            assignment: Bytes::new(),
            pending_sync: false,
        };
        let member_id = r.member_id.to_string();
        if member_id.is_empty() {
            let Some(inst) = instance.clone() else {
                // KIP-394.
                let id = self.new_member_id(None);
                self.group.pending.insert(id.clone(), now + session_ms);
                self.stats.member_id_required += 1;
                out.push((from, join_error(ErrorCode::MEMBER_ID_REQUIRED, &id)));
                return;
            };
            let new_id = self.new_member_id(Some(&inst));
            if let Some(old_id) = self.group.statics.get(&inst).cloned() {
                // A static member came back: it replaces its old member id.
                let mut meta = self.group.members.remove(&old_id).expect("static member present");
                if let Some(r) = meta.awaiting_join.take() {
                    out.push((r, join_error(ErrorCode::FENCED_INSTANCE_ID, "")));
                }
                if let Some(r) = meta.awaiting_sync.take() {
                    out.push((r, sync_error(ErrorCode::FENCED_INSTANCE_ID)));
                }
                let protocol = self.group.protocol.clone().unwrap_or_default();
                let other_topics =
                    subscribed_topics(&meta.protocols, &protocol) != subscribed_topics(&protocols, &protocol);
                meta.protocols = protocols;
                meta.last_heard = now;
                meta.session_ms = session_ms;
                meta.rebalance_ms = rebalance_ms;
                self.group.statics.insert(inst.clone(), new_id.clone());
                if self.group.leader.as_deref() == Some(old_id.as_str()) {
                    self.group.leader = Some(new_id.clone());
                }
                match self.group.state {
                    GState::Stable => {
                        // KIP-345: no rebalance; the member gets the current generation and,
                        // after SyncGroup, its current assignment. Kafka rebalances only if the
                        // group's protocol would change, not if the member's subscription did
                        // (KAFKA-12759).
                        self.group.members.insert(new_id.clone(), meta);
                        self.group.replaced_with_other_topics |= other_topics;
                        self.stats.static_replacements += 1;
                        self.store();
                        let leader = self.group.leader.clone().unwrap_or_default();
                        let is_leader = leader == new_id;
                        let resp = self.join_response(&new_id, is_leader);
                        let mut resp = resp;
                        resp.skip_assignment = is_leader;
                        out.push((from, GroupResponse::JoinGroup(resp)));
                    }
                    _ => {
                        meta.awaiting_join = Some(from);
                        self.group.members.insert(new_id, meta);
                        self.prepare_rebalance(now, out);
                    }
                }
                return;
            }
            self.group.statics.insert(inst, new_id.clone());
            self.group.members.insert(new_id, fresh(Some(from), protocols));
            self.prepare_rebalance(now, out);
            return;
        }
        if self.group.pending.remove(&member_id).is_some() {
            self.group.members.insert(member_id, fresh(Some(from), protocols));
            self.prepare_rebalance(now, out);
            return;
        }
        if let Some(inst) = &instance {
            if self.group.statics.get(inst).is_some_and(|id| id != &member_id) {
                out.push((from, join_error(ErrorCode::FENCED_INSTANCE_ID, &member_id)));
                return;
            }
        }
        let is_leader = self.group.leader.as_deref() == Some(member_id.as_str());
        let state = self.group.state.clone();
        let Some(meta) = self.group.members.get_mut(&member_id) else {
            out.push((from, join_error(ErrorCode::UNKNOWN_MEMBER_ID, &member_id)));
            return;
        };
        let same = meta.protocols == protocols;
        meta.protocols = protocols;
        meta.last_heard = now;
        match state {
            GState::Preparing { .. } => {
                if let Some(old) = meta.awaiting_join.replace(from) {
                    out.push((old, join_error(ErrorCode::REBALANCE_IN_PROGRESS, "")));
                }
            }
            GState::Completing { .. } | GState::Stable if same && !(is_leader && state == GState::Stable) => {
                let resp = self.join_response(&member_id, is_leader);
                out.push((from, GroupResponse::JoinGroup(resp)));
            }
            _ => {
                meta.awaiting_join = Some(from);
                self.prepare_rebalance(now, out);
            }
        }
    }

    fn join_response(&self, member_id: &str, is_leader: bool) -> JoinGroupResponse {
        let protocol = self.group.protocol.clone().unwrap_or_default();
        let members = if is_leader {
            self.group
                .members
                .iter()
                .map(|(id, m)| JoinGroupResponseMember {
                    member_id: b(id),
                    group_instance_id: m.instance.as_deref().map(b),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default(),
                    ..Default::default()
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinGroupResponse {
            error_code: ErrorCode::NONE,
            generation_id: self.group.generation,
            protocol_type: Some(b("consumer")),
            protocol_name: Some(b(&protocol)),
            leader: b(self.group.leader.as_deref().unwrap_or("")),
            member_id: b(member_id),
            members,
            ..Default::default()
        }
    }

    fn maybe_complete_join(&mut self, now: u64, out: &mut Out) {
        let GState::Preparing { deadline } = self.group.state else {
            return;
        };
        let all_joined =
            self.group.pending.is_empty() && self.group.members.values().all(|m| m.awaiting_join.is_some());
        if !all_joined && now < deadline {
            return;
        }
        // Dynamic members that did not rejoin are dropped; static ones stay.
        let gone: Vec<String> = self
            .group
            .members
            .iter()
            .filter(|(_, m)| m.awaiting_join.is_none() && m.instance.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id, out);
        }
        self.group.pending.clear();
        self.group.generation += 1;
        if !self.group.members.values().any(|m| m.awaiting_join.is_some()) {
            // Nobody joined (only static members that did not come back, or none at all).
            for id in self.group.members.keys().cloned().collect::<Vec<_>>() {
                self.remove_member(&id, out);
            }
            self.group.state = GState::Empty;
            self.group.protocol = None;
            self.group.leader = None;
            self.store();
            return;
        }
        // The protocol every member supports that most members prefer.
        let mut candidates: Vec<String> =
            self.group.members.values().next().unwrap().protocols.iter().map(|(n, _)| n.clone()).collect();
        candidates.retain(|c| self.group.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == c)));
        let mut votes: BTreeMap<String, usize> = BTreeMap::new();
        for m in self.group.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(n.clone()).or_default() += 1;
            }
        }
        let protocol = candidates
            .iter()
            .max_by_key(|c| {
                (votes.get(*c).copied().unwrap_or(0), std::cmp::Reverse(candidates.iter().position(|x| x == *c)))
            })
            .cloned();
        let Some(protocol) = protocol else {
            self.violations.push("model: no common protocol".into());
            return;
        };
        self.group.assigned_topics =
            self.group.members.values().flat_map(|m| subscribed_topics(&m.protocols, &protocol)).collect();
        self.group.replaced_with_other_topics = false;
        self.group.protocol = Some(protocol);
        let leader_ok = self
            .group
            .leader
            .as_ref()
            .is_some_and(|l| self.group.members.get(l).is_some_and(|m| m.awaiting_join.is_some()));
        if !leader_ok {
            self.group.leader =
                self.group.members.iter().find(|(_, m)| m.awaiting_join.is_some()).map(|(id, _)| id.clone());
        }
        let leader = self.group.leader.clone().unwrap();
        let ids: Vec<String> = self.group.members.keys().cloned().collect();
        for id in ids {
            let is_leader = id == leader;
            let resp = self.join_response(&id, is_leader);
            let m = self.group.members.get_mut(&id).unwrap();
            if let Some(r) = m.awaiting_join.take() {
                m.pending_sync = true;
                m.last_heard = now;
                out.push((r, GroupResponse::JoinGroup(resp)));
            }
        }
        self.stats.rebalances += 1;
        let deadline = now + self.max_rebalance_ms();
        self.group.state = GState::Completing { deadline };
    }

    fn remove_member(&mut self, id: &str, out: &mut Out) {
        if let Some(mut m) = self.group.members.remove(id) {
            if let Some(r) = m.awaiting_join.take() {
                out.push((r, join_error(ErrorCode::UNKNOWN_MEMBER_ID, id)));
            }
            if let Some(r) = m.awaiting_sync.take() {
                out.push((r, sync_error(ErrorCode::UNKNOWN_MEMBER_ID)));
            }
            if let Some(inst) = &m.instance {
                if self.group.statics.get(inst).is_some_and(|x| x == id) {
                    self.group.statics.remove(inst);
                }
            }
            if self.group.leader.as_deref() == Some(id) {
                self.group.leader = None;
            }
        }
    }

    /// Members left or expired: rebalance, or become Empty.
    fn after_removal(&mut self, now: u64, out: &mut Out) {
        if self.group.members.is_empty() {
            match self.group.state {
                GState::Empty => {}
                GState::Preparing { .. } => {
                    // No one left to wait for; the join phase completes into Empty.
                    self.maybe_complete_join(now, out);
                }
                _ => {
                    self.group.generation += 1;
                    self.group.state = GState::Empty;
                    self.group.protocol = None;
                    self.group.leader = None;
                    self.store();
                }
            }
            return;
        }
        self.prepare_rebalance(now, out);
        self.maybe_complete_join(now, out);
    }

    fn sync(&mut self, now: u64, from: Reply, r: SyncGroupRequest, out: &mut Out) {
        self.stats.syncs += 1;
        let member_id = r.member_id.to_string();
        if let Some(inst) = r.group_instance_id.as_deref() {
            if self.group.statics.get(inst).is_some_and(|id| id != &member_id) {
                out.push((from, sync_error(ErrorCode::FENCED_INSTANCE_ID)));
                return;
            }
        }
        if !self.group.members.contains_key(&member_id) {
            out.push((from, sync_error(ErrorCode::UNKNOWN_MEMBER_ID)));
            return;
        }
        if r.generation_id != self.group.generation {
            out.push((from, sync_error(ErrorCode::ILLEGAL_GENERATION)));
            return;
        }
        let protocol = self.group.protocol.clone();
        let answer = |assignment: Bytes| {
            GroupResponse::SyncGroup(SyncGroupResponse {
                error_code: ErrorCode::NONE,
                protocol_type: Some(b("consumer")),
                protocol_name: protocol.as_deref().map(b),
                assignment,
                ..Default::default()
            })
        };
        match self.group.state {
            GState::Empty => out.push((from, sync_error(ErrorCode::UNKNOWN_MEMBER_ID))),
            GState::Preparing { .. } => out.push((from, sync_error(ErrorCode::REBALANCE_IN_PROGRESS))),
            GState::Stable => {
                let m = self.group.members.get_mut(&member_id).unwrap();
                m.last_heard = now;
                m.pending_sync = false;
                out.push((from, answer(m.assignment.clone())));
            }
            GState::Completing { .. } => {
                let is_leader = self.group.leader.as_deref() == Some(member_id.as_str());
                {
                    let m = self.group.members.get_mut(&member_id).unwrap();
                    m.last_heard = now;
                    m.pending_sync = false;
                    if let Some(old) = m.awaiting_sync.replace(from) {
                        out.push((old, sync_error(ErrorCode::REBALANCE_IN_PROGRESS)));
                    }
                }
                if is_leader {
                    let given: BTreeMap<String, Bytes> =
                        r.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect();
                    let mut seen: BTreeMap<Tp, String> = BTreeMap::new();
                    for (id, m) in self.group.members.iter_mut() {
                        m.assignment = given.get(id).cloned().unwrap_or_default();
                        for tp in decode_assignment(&m.assignment) {
                            if let Some(other) = seen.insert(tp.clone(), id.clone()) {
                                self.violations.push(format!(
                                    "generation {}: leader assigned {tp:?} to both {other} and {id}",
                                    self.group.generation
                                ));
                            }
                        }
                    }
                    self.group.state = GState::Stable;
                    self.store();
                    for m in self.group.members.values_mut() {
                        if let Some(r) = m.awaiting_sync.take() {
                            // The broker restarts the session timer as it answers.
                            m.last_heard = now;
                            out.push((r, answer(m.assignment.clone())));
                        }
                    }
                }
            }
        }
    }

    fn heartbeat(&mut self, now: u64, r: HeartbeatRequest) -> ErrorCode {
        self.stats.heartbeats += 1;
        let member_id = r.member_id.to_string();
        if let Some(inst) = r.group_instance_id.as_deref() {
            if self.group.statics.get(inst).is_some_and(|id| id != &member_id) {
                return ErrorCode::FENCED_INSTANCE_ID;
            }
        }
        if self.group.state == GState::Empty {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        }
        let generation = self.group.generation;
        let state = self.group.state.clone();
        let Some(m) = self.group.members.get_mut(&member_id) else {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        };
        if r.generation_id != generation {
            return ErrorCode::ILLEGAL_GENERATION;
        }
        m.last_heard = now;
        match state {
            GState::Preparing { .. } => ErrorCode::REBALANCE_IN_PROGRESS,
            _ => ErrorCode::NONE,
        }
    }

    fn leave(&mut self, now: u64, from: Reply, r: LeaveGroupRequest, out: &mut Out) {
        let mut responses = Vec::new();
        let mut removed = false;
        let identities: Vec<(String, Option<String>)> = if r.members.is_empty() {
            vec![(r.member_id.to_string(), None)]
        } else {
            r.members
                .iter()
                .map(|m| (m.member_id.to_string(), m.group_instance_id.as_deref().map(str::to_string)))
                .collect()
        };
        for (id, inst) in identities {
            let mut code = ErrorCode::NONE;
            let target = match &inst {
                Some(i) => match self.group.statics.get(i) {
                    Some(cur) if id.is_empty() || *cur == id => Some(cur.clone()),
                    Some(_) => {
                        code = ErrorCode::FENCED_INSTANCE_ID;
                        None
                    }
                    None => {
                        code = ErrorCode::UNKNOWN_MEMBER_ID;
                        None
                    }
                },
                None => Some(id.clone()),
            };
            if let Some(t) = target {
                if self.group.members.contains_key(&t) {
                    self.remove_member(&t, out);
                    removed = true;
                } else if self.group.pending.remove(&t).is_none() {
                    code = ErrorCode::UNKNOWN_MEMBER_ID;
                }
            }
            responses.push(MemberResponse {
                member_id: b(&id),
                group_instance_id: inst.as_deref().map(b),
                error_code: code,
                ..Default::default()
            });
        }
        if removed {
            self.after_removal(now, out);
        }
        out.push((from, GroupResponse::LeaveGroup(LeaveGroupResponse { members: responses, ..Default::default() })));
    }

    /// The broker's checks for a classic group's OffsetCommit.
    fn commit_check(&mut self, r: &OffsetCommitRequest) -> ErrorCode {
        let member_id = r.member_id.to_string();
        let generation = r.generation_id_or_member_epoch;
        if generation < 0 && self.group.state == GState::Empty {
            return ErrorCode::NONE;
        }
        if let Some(inst) = r.group_instance_id.as_deref() {
            if self.group.statics.get(inst).is_some_and(|id| id != &member_id) {
                return ErrorCode::FENCED_INSTANCE_ID;
            }
        }
        if !self.group.members.contains_key(&member_id) {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        }
        if generation != self.group.generation {
            self.stats.commits_rejected_illegal_generation += 1;
            return ErrorCode::ILLEGAL_GENERATION;
        }
        match self.group.state {
            GState::Completing { .. } => ErrorCode::REBALANCE_IN_PROGRESS,
            _ => ErrorCode::NONE,
        }
    }

    fn fetch(&mut self, now: u64, from: Reply, err: Option<ErrorCode>, r: OffsetFetchRequest) -> OffsetFetchResponse {
        self.stats.fetches += 1;
        let v8 = (now / TICK_MS + from.req.0) % 2 == 0;
        let wanted: Vec<(String, Vec<i32>)> = if v8 {
            r.groups
                .iter()
                .flat_map(|g| g.topics.iter().flatten())
                .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                .collect()
        } else {
            r.topics.iter().flatten().map(|t| (t.name.to_string(), t.partition_indexes.clone())).collect()
        };
        let mut rows = Vec::new();
        for (t, ps) in &wanted {
            for &p in ps {
                let offset = self.committed.get(&(t.clone(), p)).copied().unwrap_or(-1);
                let unstable = self.unstable_fetch_chance > 0.0 && (now / TICK_MS + p as u64 + from.req.0) % 7 == 0;
                let code = if unstable { ErrorCode::UNSTABLE_OFFSET_COMMIT } else { ErrorCode::NONE };
                rows.push((t.clone(), p, offset, code));
            }
        }
        let group_error = err.unwrap_or(ErrorCode::NONE);
        if v8 {
            let mut topics: BTreeMap<String, Vec<OffsetFetchResponsePartitions>> = BTreeMap::new();
            if group_error.is_ok() {
                for (t, p, o, c) in rows {
                    topics.entry(t).or_default().push(OffsetFetchResponsePartitions {
                        partition_index: p,
                        committed_offset: o,
                        committed_leader_epoch: -1,
                        metadata: Some(b("")),
                        error_code: c,
                        ..Default::default()
                    });
                }
            }
            OffsetFetchResponse {
                groups: vec![OffsetFetchResponseGroup {
                    group_id: b(GROUP),
                    topics: topics
                        .into_iter()
                        .map(|(name, partitions)| OffsetFetchResponseTopics {
                            name: b(&name),
                            partitions,
                            ..Default::default()
                        })
                        .collect(),
                    error_code: group_error,
                    ..Default::default()
                }],
                ..Default::default()
            }
        } else {
            let mut topics: BTreeMap<String, Vec<OffsetFetchResponsePartition>> = BTreeMap::new();
            if group_error.is_ok() {
                for (t, p, o, c) in rows {
                    topics.entry(t).or_default().push(OffsetFetchResponsePartition {
                        partition_index: p,
                        committed_offset: o,
                        committed_leader_epoch: -1,
                        metadata: Some(b("")),
                        error_code: c,
                        ..Default::default()
                    });
                }
            }
            OffsetFetchResponse {
                topics: topics
                    .into_iter()
                    .map(|(name, partitions)| OffsetFetchResponseTopic {
                        name: b(&name),
                        partitions,
                        ..Default::default()
                    })
                    .collect(),
                error_code: group_error,
                ..Default::default()
            }
        }
    }

    /// Session expiry, join and sync phase deadlines, KIP-394 pending member expiry.
    fn tick(&mut self, now: u64) -> Out {
        let mut out = Vec::new();
        if now < self.loading_until {
            return out;
        }
        self.group.pending.retain(|_, exp| *exp > now);
        let expired: Vec<String> = self
            .group
            .members
            .iter()
            .filter(|(_, m)| {
                m.awaiting_join.is_none() && m.awaiting_sync.is_none() && now >= m.last_heard + m.session_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        if !expired.is_empty() {
            self.stats.expirations += expired.len() as u64;
            for id in &expired {
                self.remove_member(id, &mut out);
            }
            self.after_removal(now, &mut out);
        }
        match self.group.state.clone() {
            GState::Completing { deadline } if now >= deadline => {
                // The leader never synced, or members never did: drop those that did not sync.
                let late: Vec<String> = self
                    .group
                    .members
                    .iter()
                    .filter(|(_, m)| m.pending_sync && m.awaiting_sync.is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &late {
                    self.remove_member(id, &mut out);
                }
                self.prepare_rebalance(now, &mut out);
                self.after_removal(now, &mut out);
            }
            GState::Preparing { .. } => self.maybe_complete_join(now, &mut out),
            _ => {}
        }
        out
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
    core: GroupMember,
    life: Life,
    /// What the application holds, from the events: assigned or pending revocation.
    owned: BTreeSet<Tp>,
    /// Pending revocation and when the application finishes with it.
    revoking: Option<(BTreeSet<Tp>, u64)>,
    /// No `poll_called` before this time (a stall, or a slow revocation callback).
    stall_until: u64,
    /// The generation of the latest JoinGroup answer (NONE) delivered to this member.
    max_generation_told: i32,
    /// A response arrived: call `poll_request` even if `next_timeout` is later.
    dirty: bool,
    in_flight: BTreeMap<RequestId, RequestKind>,
    next_commit_at: u64,
    /// Back to the full subscription at this time.
    narrow_until: Option<u64>,
    /// Consecutive ticks with `next_timeout` due and no request.
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
    counts: BTreeMap<String, i32>,
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

fn full_subscription() -> BTreeSet<String> {
    ["a".to_string(), "b".to_string()].into()
}

impl Sim {
    fn new(p: Params) -> Self {
        let counts: BTreeMap<String, i32> = [("a".to_string(), 6), ("b".to_string(), 4)].into();
        let mut sim = Self {
            rng: Rng::new(p.seed),
            now: 0,
            base: Instant::now(),
            model: Model::new(counts.clone()),
            members: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            fifo: BTreeMap::new(),
            partitioned: BTreeMap::new(),
            counts,
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
            self.violations.push(format!("seed {} mode {:?} t={}ms: {what}", self.p.seed, self.p.mode, self.now));
        }
        self.stats.violations += 1;
    }

    fn live(&self, i: usize) -> bool {
        matches!(self.members[i].life, Life::Alive | Life::Closing)
    }

    fn spawn(&mut self, instance: Option<String>) {
        self.spawn_with(instance, true);
    }

    /// `counts`: give the new member the partition counts at once (else the test does, later,
    /// as a metadata answer arriving after the JoinGroup would).
    fn spawn_with(&mut self, instance: Option<String>, counts: bool) {
        let name = match &instance {
            Some(i) => format!("{i}#{}", self.next_name),
            None => format!("dyn-{}", self.next_name),
        };
        self.next_name += 1;
        let now = self.at(self.now);
        let mut config = self.p.config(instance.clone());
        // Each member its own jitter, the same in every run of the seed.
        config.backoff_seed = Some(self.p.seed.wrapping_mul(1_000_003).wrapping_add(self.next_name as u64));
        let mut core = GroupMember::new(config, now);
        core.subscribe(full_subscription(), now);
        if counts {
            core.set_partition_counts(self.counts.clone(), now);
        }
        self.trace(|| format!("spawn {name}"));
        self.members.push(SimMember {
            name,
            instance,
            core,
            life: Life::Alive,
            owned: BTreeSet::new(),
            revoking: None,
            stall_until: 0,
            max_generation_told: -1,
            dirty: true,
            in_flight: BTreeMap::new(),
            next_commit_at: self.now + 100,
            narrow_until: None,
            idle_due: 0,
        });
    }

    fn latency(&mut self) -> u64 {
        if self.p.faults && self.in_fault_window() && self.rng.chance(0.03) {
            self.rng.range(30, 250)
        } else {
            self.rng.range(1, 8)
        }
    }

    fn in_fault_window(&self) -> bool {
        self.now < self.p.fault_ms
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

    fn failure(&mut self, member: usize, req: RequestId, kind: RequestKind, target: Target) -> Msg {
        let response = if matches!(target, Target::Coordinator(_)) && self.rng.chance(0.3) {
            GroupResponse::CoordinatorUnreachable
        } else {
            GroupResponse::Failed { kind }
        };
        Msg::ToMember { to: member, req, response }
    }

    fn send(&mut self, from: usize, req: RequestId, target: Target, request: GroupRequest) {
        let kind = request.kind();
        self.members[from].in_flight.insert(req, kind);
        if let Some(code) = self.refuse.get_mut(&from).and_then(|q| (!q.is_empty()).then(|| q.remove(0))) {
            let at = self.now + self.rng.range(1, 8);
            let msg = match code {
                Some(code) => Msg::ToMember { to: from, req, response: refusal(&request, code) },
                None => self.failure(from, req, kind, target),
            };
            self.schedule(at, msg);
            return;
        }
        let drop = self.p.faults && self.in_fault_window() && self.rng.chance(self.p.drop_rate);
        if drop || self.cut_off(from) {
            if drop {
                self.fault("drop request");
            }
            let at = self.now + self.rng.range(1, 8);
            let msg = self.failure(from, req, kind, target);
            self.schedule(at, msg);
            return;
        }
        let at = self.fifo_time(from, true);
        self.schedule(at, Msg::ToCoordinator { from, req, target, request });
    }

    fn respond(&mut self, out: Out) {
        for (reply, response) in out {
            let to = reply.member;
            let Some(kind) = self.members[to].in_flight.get(&reply.req).copied() else {
                continue;
            };
            let drop = self.p.faults && self.in_fault_window() && self.rng.chance(self.p.drop_rate);
            let at = self.fifo_time(to, false);
            if drop || self.cut_off(to) {
                if drop {
                    self.fault("drop response");
                }
                let msg = self.failure(to, reply.req, kind, Target::Coordinator(0));
                self.schedule(at, msg);
            } else {
                self.schedule(at, Msg::ToMember { to, req: reply.req, response });
            }
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
                    let out = self.model.handle(self.now, Reply { member: from, req }, target, request);
                    self.respond(out);
                }
                Msg::ToMember { to, req, response } => {
                    if self.members[to].in_flight.remove(&req).is_none() || !self.live(to) {
                        continue;
                    }
                    self.trace(|| format!("<- {} #{req} {}", self.members[to].name, describe_response(&response)));
                    if let GroupResponse::JoinGroup(r) = &response {
                        if r.error_code.is_ok() {
                            let m = &mut self.members[to];
                            // The latest, not the highest: a coordinator that moved reloads
                            // the group at its last stored generation, which can be lower.
                            m.max_generation_told = r.generation_id;
                        }
                    }
                    let now = self.at(self.now);
                    let m = &mut self.members[to];
                    m.core.handle_response(req, response, now);
                    m.dirty = true;
                }
            }
        }
    }

    fn inject_faults(&mut self) {
        if !self.p.faults || !self.in_fault_window() {
            return;
        }
        // Classic only: from the first fault-window tick on, the model answers some
        // OffsetFetch partitions UNSTABLE_OFFSET_COMMIT.
        self.model.unstable_fetch_chance = 0.1;
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
                let out = self.model.move_to(self.now, node, moving, loading);
                self.respond(out);
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
                self.counts.insert("b".to_string(), 6);
                self.model.counts = self.counts.clone();
                let now = self.at(self.now);
                for m in self.members.iter_mut().filter(|m| matches!(m.life, Life::Alive | Life::Closing)) {
                    m.core.set_partition_counts(self.counts.clone(), now);
                }
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
                // Never two live incarnations of one instance id (a real deployment would be
                // misconfigured; FENCED_INSTANCE_ID covers it).
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
            if let Some((set, done_at)) = m.revoking.clone() {
                if done_at <= now_ms {
                    m.core.revocation_done(now);
                    for tp in &set {
                        m.owned.remove(tp);
                    }
                    m.revoking = None;
                }
            }
            if m.revoking.is_none() && now_ms >= m.stall_until {
                m.core.poll_called(now);
            }
            if let Some(until) = m.narrow_until {
                if now_ms >= until {
                    m.narrow_until = None;
                    m.core.subscribe(full_subscription(), now);
                }
            }
            if m.life == Life::Alive && now_ms >= m.next_commit_at && m.revoking.is_none() && now_ms >= m.stall_until {
                m.next_commit_at = now_ms + 150;
                if m.core.generation().is_some() && !m.core.assignment().is_empty() {
                    let offsets = m.core.assignment().iter().map(|tp| (tp.clone(), (now_ms as i64, Some(0)))).collect();
                    m.core.commit(offsets, now);
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
                    self.check_request(i, &request);
                    self.trace(|| {
                        format!("{} sends #{id} {} to {target:?}", self.members[i].name, describe_request(&request))
                    });
                    self.send(i, id, target, request);
                }
                if due && !sent {
                    // Spurious wake-ups are fine now and then; a timeout stuck in the past is a
                    // busy loop for a real driver.
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

    fn check_request(&mut self, i: usize, request: &GroupRequest) {
        let m = &self.members[i];
        match request {
            GroupRequest::OffsetCommit(r) => {
                self.stats.commits_sent += 1;
                let current = m.core.generation();
                let sent = (r.generation_id_or_member_epoch, r.member_id.to_string());
                if current.as_ref() != Some(&sent) || sent.0 < m.max_generation_told {
                    self.stats.stale_commits_sent += 1;
                    let msg = format!(
                        "{} sent OffsetCommit with generation {sent:?}, current {current:?}, told {}",
                        m.name, m.max_generation_told
                    );
                    self.violation(msg);
                }
            }
            GroupRequest::JoinGroup(_)
                if self.p.mode.eager()
                    && (!m.owned.is_empty()
                        || !m.core.assignment().is_empty()
                        || !m.core.pending_revocation().is_empty()) =>
            {
                let msg = format!("eager {} sent JoinGroup while holding {:?}", m.name, m.owned);
                self.violation(msg);
            }
            _ => {}
        }
    }

    fn on_event(&mut self, i: usize, ev: GroupEvent) {
        let now_ms = self.now;
        let now = self.at(now_ms);
        let slow = self.p.faults && self.in_fault_window() && self.rng.chance(0.2);
        let delay = if slow {
            if self.rng.chance(0.1) {
                self.rng.range(self.p.rebalance_ms, self.p.rebalance_ms + 1500)
            } else {
                self.rng.range(100, 2500)
            }
        } else {
            0
        };
        let name = self.members[i].name.clone();
        self.trace(|| format!("{name} event {ev:?}"));
        match ev {
            GroupEvent::Revoke(set) => {
                self.stats.revokes += 1;
                if slow {
                    self.fault("slow revocation");
                }
                let m = &mut self.members[i];
                if !set.is_subset(&m.owned) {
                    let msg = format!("{name}: Revoke of {set:?} not owned ({:?})", m.owned);
                    self.violation(msg);
                }
                if let Some((pending, _)) = &self.members[i].revoking {
                    // One Revoke at a time: `revocation_done` is for the one the application
                    // has seen, never for a later one still in the queue.
                    let msg = format!("{name}: Revoke of {set:?} while {pending:?} is still being revoked");
                    self.violation(msg);
                }
                let m = &mut self.members[i];
                if m.revoking.is_some() {
                    let (mut old, at) = m.revoking.take().unwrap();
                    old.extend(set.iter().cloned());
                    m.revoking = Some((old, at.max(now_ms + delay)));
                } else {
                    m.revoking = Some((set.clone(), now_ms + delay));
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
                if code == ErrorCode::FENCED_INSTANCE_ID && instance.is_some() {
                    // Legitimate: a static member replaced itself during a rebalance that a
                    // coordinator failover then lost; the coordinator reloaded the old
                    // instance id -> member id mapping. The application restarts the consumer.
                    self.stats.fenced_restarts += 1;
                    let back = self.now + self.rng.range(100, 1000);
                    self.restarts.push((back, instance));
                } else {
                    self.violation(format!("{name}: fatal {code:?}"));
                }
                self.members[i].life = Life::Fatal;
            }
        }
    }

    /// (3): no partition held by two live members; each member's events agree with its core.
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
            if !m.core.assignment().is_disjoint(m.core.pending_revocation()) {
                problems.push(format!("{}: a partition both assigned and pending revocation", m.name));
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
        let out = self.model.tick(self.now);
        self.respond(out);
        for i in 0..self.members.len() {
            self.step_member(i);
        }
        self.check_ownership();
    }

    fn run(&mut self) {
        let end = self.p.fault_ms + self.p.settle_ms;
        while self.now < end {
            self.step();
            if !self.violations.is_empty() && self.stats.violations > 20 {
                break;
            }
        }
        self.check_final();
        self.stats.generations += self.model.group.generation.max(0) as u64;
        let mstats = std::mem::take(&mut self.model.stats);
        self.stats.rebalances += mstats.rebalances;
        self.stats.joins += mstats.joins;
        self.stats.member_id_required += mstats.member_id_required;
        self.stats.syncs += mstats.syncs;
        self.stats.heartbeats += mstats.heartbeats;
        self.stats.fetches += mstats.fetches;
        self.stats.commits_rejected_illegal_generation += mstats.commits_rejected_illegal_generation;
        self.stats.static_replacements += mstats.static_replacements;
        self.stats.expirations += mstats.expirations;
        let mv = std::mem::take(&mut self.model.violations);
        for v in mv {
            self.violation(v);
        }
    }

    /// (4): after the faults, one stable generation covering every partition exactly once.
    fn check_final(&mut self) {
        let live: Vec<usize> = (0..self.members.len()).filter(|&i| self.members[i].life == Life::Alive).collect();
        let g = &self.model.group;
        let mut problems = Vec::new();
        if live.is_empty() {
            if !g.members.is_empty() {
                problems.push(format!("no live members but the coordinator has {:?}", g.members.keys()));
            }
        } else {
            if g.state != GState::Stable {
                problems.push(format!("coordinator not stable at the end: {:?}", g.state));
            }
            let ids: BTreeSet<String> = live.iter().map(|&i| self.members[i].core.member_id().to_string()).collect();
            let coordinator_ids: BTreeSet<String> = g.members.keys().cloned().collect();
            if ids != coordinator_ids {
                problems.push(format!("live members {ids:?} but the coordinator has {coordinator_ids:?}"));
            }
            let mut all: BTreeMap<Tp, usize> = BTreeMap::new();
            for &i in &live {
                let m = &self.members[i];
                if !m.core.is_stable() {
                    problems.push(format!("{} not stable at the end: {:?}", m.name, m.core));
                }
                if m.core.generation().map(|g| g.0) != Some(g.generation) {
                    problems.push(format!(
                        "{} generation {:?}, coordinator {}",
                        m.name,
                        m.core.generation(),
                        g.generation
                    ));
                }
                for tp in m.core.assignment() {
                    *all.entry(tp.clone()).or_default() += 1;
                }
            }
            // Every live member's subscription reached the coordinator ...
            let protocol = g.protocol.clone().unwrap_or_default();
            let subscribed: BTreeSet<String> =
                g.members.values().flat_map(|m| subscribed_topics(&m.protocols, &protocol)).collect();
            let wanted: BTreeSet<String> = live
                .iter()
                .flat_map(|&i| {
                    if self.members[i].narrow_until.is_some() {
                        ["a".to_string()].into()
                    } else {
                        full_subscription()
                    }
                })
                .collect();
            if subscribed != wanted {
                problems.push(format!("the members subscribe to {wanted:?}, the coordinator has {subscribed:?}"));
            }
            // ... and the assignment was made for it, unless a static member replaced itself
            // with another subscription and Kafka kept the assignment (KAFKA-12759): then every
            // partition of the topics it was made for.
            if g.assigned_topics != subscribed && !g.replaced_with_other_topics {
                problems.push(format!(
                    "generation {} was assigned for {:?}, its members subscribe to {subscribed:?}",
                    g.generation, g.assigned_topics
                ));
            }
            let expected: BTreeSet<Tp> = self
                .counts
                .iter()
                .filter(|(t, _)| g.assigned_topics.contains(*t))
                .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
                .collect();
            let got: BTreeSet<Tp> = all.keys().cloned().collect();
            if got != expected {
                problems.push(format!(
                    "assigned {} partitions, expected {}: missing {:?}",
                    got.len(),
                    expected.len(),
                    expected.difference(&got).collect::<Vec<_>>()
                ));
            }
            if let Some((tp, n)) = all.iter().find(|(_, &n)| n > 1) {
                problems.push(format!("{tp:?} assigned {n} times"));
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
        GroupRequest::JoinGroup(r) => format!("JoinGroup member={:?}", r.member_id),
        GroupRequest::SyncGroup(r) => {
            format!("SyncGroup gen={} member={:?} n={}", r.generation_id, r.member_id, r.assignments.len())
        }
        GroupRequest::Heartbeat(r) => format!("Heartbeat gen={}", r.generation_id),
        GroupRequest::LeaveGroup(_) => "LeaveGroup".into(),
        GroupRequest::OffsetCommit(r) => format!("OffsetCommit gen={}", r.generation_id_or_member_epoch),
        GroupRequest::OffsetFetch(_) => "OffsetFetch".into(),
        GroupRequest::ConsumerGroupHeartbeat(_) => "ConsumerGroupHeartbeat".into(),
    }
}

fn describe_response(r: &GroupResponse) -> String {
    match r {
        GroupResponse::FindCoordinator(r) => {
            format!("FindCoordinator {:?}/{:?}", r.error_code, r.coordinators.first().map(|c| c.error_code))
        }
        GroupResponse::JoinGroup(r) => format!(
            "JoinGroup {:?} gen={} leader={:?} member={:?}",
            r.error_code, r.generation_id, r.leader, r.member_id
        ),
        GroupResponse::SyncGroup(r) => format!("SyncGroup {:?} {:?}", r.error_code, decode_assignment(&r.assignment)),
        GroupResponse::Heartbeat(r) => format!("Heartbeat {:?}", r.error_code),
        GroupResponse::LeaveGroup(r) => format!("LeaveGroup {:?}", r.error_code),
        GroupResponse::OffsetCommit(r) => {
            format!("OffsetCommit {:?}", r.topics.first().and_then(|t| t.partitions.first()).map(|p| p.error_code))
        }
        GroupResponse::OffsetFetch(_) => "OffsetFetch".into(),
        GroupResponse::Failed { kind } => format!("Failed {kind:?}"),
        GroupResponse::CoordinatorUnreachable => "CoordinatorUnreachable".into(),
        GroupResponse::ConsumerGroupHeartbeat(r) => format!("ConsumerGroupHeartbeat {:?}", r.error_code),
    }
}

include!("group_faults.rs");
