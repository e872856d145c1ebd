//! Operation sequences against one group member of either protocol (`proto::group::Member`):
//! the classic `GroupMember` (JoinGroup / SyncGroup, eager or cooperative assignors, static or
//! dynamic) or KIP-848's `ConsumerGroupMember`, chosen by the leading bytes. The coordinator is
//! the fuzzer: each request is answered in any order, twice, never (`Failed`,
//! `CoordinatorUnreachable`), with a plausible answer carrying any error code the members
//! handle, generation or epoch and assignment, or with an arbitrary answer of the right kind or
//! of the wrong one; time passes; the application subscribes, polls, commits, finishes
//! revocations late, handles losses, changes metadata and leaves. No input may panic the member,
//! and after every step the group simulations' per-member invariants hold: the partitions the
//! events gave the application are exactly `assignment() ∪ pending_revocation()`, the two are
//! disjoint, a Revoke only names owned partitions and an Assigned only new ones, an OffsetCommit
//! carries the member's current generation (or epoch) and member id, an eager member owns
//! nothing when it sends JoinGroup, and a member that reported a fatal error sends nothing more.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytestring::ByteString;
use kafka_wire::codec::messages::consumer_group_heartbeat::{Assignment, TopicPartitions};
use kafka_wire::codec::messages::find_coordinator::{Coordinator, FindCoordinatorResponse};
use kafka_wire::codec::messages::heartbeat::HeartbeatResponse;
use kafka_wire::codec::messages::join_group::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_wire::codec::messages::leave_group::LeaveGroupResponse;
use kafka_wire::codec::messages::offset_commit::OffsetCommitResponse;
use kafka_wire::codec::messages::offset_fetch::OffsetFetchResponse;
use kafka_wire::codec::messages::sync_group::SyncGroupResponse;
use kafka_wire::codec::messages::ConsumerGroupHeartbeatResponse;
use kafka_wire::codec::{ErrorCode, Uuid};
use kafka_wire::proto::assignor::{
    Assignor, ConsumerProtocolAssignment, CooperativeStickyAssignor, RangeAssignor, RoundRobinAssignor,
};
use kafka_wire::proto::consumer_protocol::{ConsumerGroupConfig, ConsumerGroupMember};
use kafka_wire::proto::driving::RequestId;
use kafka_wire::proto::group::{GroupConfig, GroupEvent, GroupMember, GroupRequest, GroupResponse, Member, Tp};
use libfuzzer_sys::fuzz_target;

const MAX_OPS: usize = 256;
const TOPICS: [&str; 2] = ["a", "b"];
const TOPIC_IDS: [Uuid; 2] = [Uuid([1; 16]), Uuid([2; 16])];

/// The error codes the members handle, plus NONE (weighted by repetition).
const CODES: [ErrorCode; 24] = [
    ErrorCode::NONE,
    ErrorCode::NONE,
    ErrorCode::NONE,
    ErrorCode::NONE,
    ErrorCode::COORDINATOR_LOAD_IN_PROGRESS,
    ErrorCode::COORDINATOR_NOT_AVAILABLE,
    ErrorCode::NOT_COORDINATOR,
    ErrorCode::FENCED_INSTANCE_ID,
    ErrorCode::GROUP_AUTHORIZATION_FAILED,
    ErrorCode::GROUP_MAX_SIZE_REACHED,
    ErrorCode::ILLEGAL_GENERATION,
    ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
    ErrorCode::INVALID_SESSION_TIMEOUT,
    ErrorCode::MEMBER_ID_REQUIRED,
    ErrorCode::REBALANCE_IN_PROGRESS,
    ErrorCode::REQUEST_TIMED_OUT,
    ErrorCode::UNKNOWN_MEMBER_ID,
    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode::UNRELEASED_INSTANCE_ID,
    ErrorCode::FENCED_MEMBER_EPOCH,
    ErrorCode::STALE_MEMBER_EPOCH,
    ErrorCode::TOPIC_AUTHORIZATION_FAILED,
    ErrorCode::UNSUPPORTED_ASSIGNOR,
    ErrorCode::UNSUPPORTED_VERSION,
];

#[derive(Arbitrary, Debug)]
struct Input {
    /// Bit 0: KIP-848; bits 1-2: the classic assignor; bit 3: static member.
    mode: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Subscribe {
        topics: u8,
    },
    PartitionCounts {
        a: u8,
        b: u8,
    },
    PollCalled,
    RevocationDone,
    LostHandled,
    Commit {
        offset: i64,
    },
    Leave {
        explicitly: bool,
    },
    /// Pending request `idx` gets a plausible answer.
    Answer {
        idx: u8,
        code: u8,
        generation: i8,
        other_leader: bool,
        partitions: u16,
        keep: bool,
    },
    /// Pending request `idx` gets an arbitrary answer.
    Raw {
        idx: u8,
        response: RawResponse,
    },
    Fail {
        idx: u8,
        unreachable: bool,
    },
    Advance {
        ms: u16,
    },
}

#[derive(Arbitrary, Debug)]
enum RawResponse {
    FindCoordinator(FindCoordinatorResponse),
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    LeaveGroup(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    OffsetFetch(OffsetFetchResponse),
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse),
}

struct Harness {
    member: Box<dyn Member>,
    eager: bool,
    now: Instant,
    pending: Vec<(RequestId, GroupRequest)>,
    /// What the events gave the application.
    owned: BTreeSet<Tp>,
    generation: i32,
}

fn s(x: &str) -> ByteString {
    ByteString::from(x.to_string())
}

impl Harness {
    fn new(mode: u8) -> Self {
        let now = Instant::now();
        let instance = (mode & 8 != 0).then(|| "static-1".to_string());
        let (member, eager): (Box<dyn Member>, bool) = if mode & 1 != 0 {
            let mut c = ConsumerGroupConfig::new("g");
            c.group_instance_id = instance;
            (Box::new(ConsumerGroupMember::new(c, now)), false)
        } else {
            let (assignors, eager): (Vec<Arc<dyn Assignor + Send + Sync>>, bool) = match (mode >> 1) & 3 {
                0 => (vec![Arc::new(RangeAssignor)], true),
                1 => (vec![Arc::new(RoundRobinAssignor)], true),
                2 => (vec![Arc::new(CooperativeStickyAssignor)], false),
                _ => (vec![Arc::new(CooperativeStickyAssignor), Arc::new(RangeAssignor)], true),
            };
            let mut c = GroupConfig::new("g", assignors);
            c.group_instance_id = instance;
            c.backoff_seed = Some(0);
            (Box::new(GroupMember::new(c, now)), eager)
        };
        let mut h = Self { member, eager, now, pending: Vec::new(), owned: BTreeSet::new(), generation: 1 };
        h.member.subscribe(TOPICS.iter().map(|t| t.to_string()).collect(), now);
        h.member.set_topic_names(TOPIC_IDS.iter().zip(TOPICS).map(|(id, t)| (*id, t.to_string())).collect(), now);
        h
    }

    /// Sends what the member has to send, checking each request, then hands its events to the
    /// application.
    fn step(&mut self) {
        for _ in 0..64 {
            let Some((id, _target, request)) = self.member.poll_request(self.now) else { break };
            assert!(self.member.fatal_error().is_none(), "a request after a fatal error: {request:?}");
            match &request {
                GroupRequest::OffsetCommit(r) => {
                    let sent = (r.generation_id_or_member_epoch, r.member_id.to_string());
                    assert_eq!(self.member.generation(), Some(sent.clone()), "OffsetCommit with {sent:?}");
                }
                GroupRequest::JoinGroup(_) if self.eager => {
                    assert!(self.owned.is_empty(), "eager JoinGroup while holding {:?}", self.owned);
                }
                _ => {}
            }
            self.pending.push((id, request));
        }
        while let Some(ev) = self.member.poll_event() {
            match ev {
                GroupEvent::Revoke(set) => {
                    assert!(set.is_subset(&self.owned), "Revoke of {set:?} not owned ({:?})", self.owned)
                }
                GroupEvent::Assigned(set) => {
                    for tp in set {
                        assert!(self.owned.insert(tp.clone()), "Assigned {tp:?} already owned");
                    }
                }
                GroupEvent::Lost(set) => {
                    for tp in &set {
                        self.owned.remove(tp);
                    }
                }
                _ => {}
            }
        }
        let (a, p) = (self.member.assignment(), self.member.pending_revocation());
        assert!(a.is_disjoint(p), "a partition both assigned and pending revocation");
        let core: BTreeSet<Tp> = a.iter().chain(p.iter()).cloned().collect();
        assert_eq!(core, self.owned, "the events and the member disagree");
    }

    fn revoked(&mut self) {
        let before: BTreeSet<Tp> = self.member.pending_revocation().clone();
        self.member.revocation_done(self.now);
        for tp in before.difference(self.member.pending_revocation()) {
            self.owned.remove(tp);
        }
    }

    fn plausible(
        &mut self,
        request: &GroupRequest,
        code: ErrorCode,
        generation: i8,
        other_leader: bool,
        partitions: u16,
    ) -> GroupResponse {
        let gen = (self.generation + generation as i32).max(-1);
        let pick = |topic: usize| -> Vec<i32> {
            (0..8i32).filter(|i| partitions & (1u16 << (*i as usize + 8 * topic)) != 0).collect()
        };
        match request {
            GroupRequest::FindCoordinator(r) => GroupResponse::FindCoordinator(FindCoordinatorResponse {
                error_code: code,
                node_id: 1,
                host: s("h"),
                port: 9092,
                coordinators: r
                    .coordinator_keys
                    .iter()
                    .map(|k| Coordinator {
                        key: k.clone(),
                        node_id: 1,
                        host: s("h"),
                        port: 9092,
                        error_code: code,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            GroupRequest::JoinGroup(r) => {
                let member_id = if r.member_id.is_empty() { s("m-1") } else { r.member_id.clone() };
                let protocol = r.protocols.first().map(|p| p.name.clone());
                let members = if other_leader {
                    Vec::new()
                } else {
                    vec![JoinGroupResponseMember {
                        member_id: member_id.clone(),
                        group_instance_id: r.group_instance_id.clone(),
                        metadata: r.protocols.first().map(|p| p.metadata.clone()).unwrap_or_default(),
                        ..Default::default()
                    }]
                };
                if code == ErrorCode::NONE {
                    self.generation = gen;
                }
                GroupResponse::JoinGroup(JoinGroupResponse {
                    error_code: code,
                    generation_id: gen,
                    protocol_type: Some(s("consumer")),
                    protocol_name: protocol,
                    leader: if other_leader { s("m-0") } else { member_id.clone() },
                    member_id,
                    members,
                    ..Default::default()
                })
            }
            GroupRequest::SyncGroup(_) => {
                let map: BTreeMap<String, Vec<i32>> = TOPICS
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.to_string(), pick(i)))
                    .filter(|(_, v)| !v.is_empty())
                    .collect();
                let assignment = ConsumerProtocolAssignment::from_map(&map, None).encode(0).unwrap_or_default();
                GroupResponse::SyncGroup(SyncGroupResponse { error_code: code, assignment, ..Default::default() })
            }
            GroupRequest::Heartbeat(_) => {
                GroupResponse::Heartbeat(HeartbeatResponse { error_code: code, ..Default::default() })
            }
            GroupRequest::LeaveGroup(_) => {
                GroupResponse::LeaveGroup(LeaveGroupResponse { error_code: code, ..Default::default() })
            }
            GroupRequest::OffsetCommit(r) => {
                let mut resp = OffsetCommitResponse::default();
                for t in &r.topics {
                    let mut topic = kafka_wire::codec::messages::offset_commit::OffsetCommitResponseTopic {
                        name: t.name.clone(),
                        topic_id: t.topic_id,
                        ..Default::default()
                    };
                    for p in &t.partitions {
                        topic.partitions.push(
                            kafka_wire::codec::messages::offset_commit::OffsetCommitResponsePartition {
                                partition_index: p.partition_index,
                                error_code: code,
                                ..Default::default()
                            },
                        );
                    }
                    resp.topics.push(topic);
                }
                GroupResponse::OffsetCommit(resp)
            }
            GroupRequest::OffsetFetch(_) => {
                GroupResponse::OffsetFetch(OffsetFetchResponse { error_code: code, ..Default::default() })
            }
            GroupRequest::ConsumerGroupHeartbeat(r) => {
                let epoch = (r.member_epoch + 1 + generation as i32 % 3).max(-2);
                let member_id = r.member_id.clone();
                GroupResponse::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse {
                    error_code: code,
                    member_id: Some(if member_id.is_empty() { s("m-1") } else { member_id }),
                    member_epoch: epoch,
                    heartbeat_interval_ms: 3000,
                    assignment: (partitions & 1 != 0 || generation % 2 == 0).then(|| Assignment {
                        topic_partitions: TOPIC_IDS
                            .iter()
                            .enumerate()
                            .map(|(i, id)| TopicPartitions { topic_id: *id, partitions: pick(i), ..Default::default() })
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }
        }
    }

    fn apply(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Subscribe { topics } => {
                let set = TOPICS
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| topics & (1 << i) != 0)
                    .map(|(_, t)| t.to_string())
                    .collect();
                self.member.subscribe(set, now);
            }
            Op::PartitionCounts { a, b } => {
                let counts = [("a", a), ("b", b)].into_iter().map(|(t, n)| (t.to_string(), (n % 9) as i32)).collect();
                self.member.set_partition_counts(counts, now);
            }
            Op::PollCalled => self.member.poll_called(now),
            Op::RevocationDone => self.revoked(),
            Op::LostHandled => self.member.lost_handled(now),
            Op::Commit { offset } => {
                let offsets = self.member.assignment().iter().map(|tp| (tp.clone(), (offset, None))).collect();
                self.member.commit(offsets, now);
            }
            Op::Leave { explicitly } => {
                if explicitly {
                    self.member.leave_explicitly(now)
                } else {
                    self.member.leave(now)
                }
            }
            Op::Answer { idx, code, generation, other_leader, partitions, keep } => {
                if self.pending.is_empty() {
                    return;
                }
                let i = idx as usize % self.pending.len();
                let (id, request) = if keep { self.pending[i].clone() } else { self.pending.remove(i) };
                let response =
                    self.plausible(&request, CODES[code as usize % CODES.len()], generation, other_leader, partitions);
                self.member.handle_response(id, response, now);
            }
            Op::Raw { idx, response } => {
                if self.pending.is_empty() {
                    return;
                }
                let (id, _) = self.pending.remove(idx as usize % self.pending.len());
                let response = match response {
                    RawResponse::FindCoordinator(r) => GroupResponse::FindCoordinator(r),
                    RawResponse::JoinGroup(r) => GroupResponse::JoinGroup(r),
                    RawResponse::SyncGroup(r) => GroupResponse::SyncGroup(r),
                    RawResponse::Heartbeat(r) => GroupResponse::Heartbeat(r),
                    RawResponse::LeaveGroup(r) => GroupResponse::LeaveGroup(r),
                    RawResponse::OffsetCommit(r) => GroupResponse::OffsetCommit(r),
                    RawResponse::OffsetFetch(r) => GroupResponse::OffsetFetch(r),
                    RawResponse::ConsumerGroupHeartbeat(r) => GroupResponse::ConsumerGroupHeartbeat(r),
                };
                self.member.handle_response(id, response, now);
            }
            Op::Fail { idx, unreachable } => {
                if self.pending.is_empty() {
                    return;
                }
                let (id, request) = self.pending.remove(idx as usize % self.pending.len());
                let response = if unreachable {
                    GroupResponse::CoordinatorUnreachable
                } else {
                    GroupResponse::Failed { kind: request.kind() }
                };
                self.member.handle_response(id, response, now);
            }
            Op::Advance { ms } => {
                self.now += Duration::from_millis(ms as u64 % 60_000);
            }
        }
        self.step();
    }
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(input.mode);
    h.step();
    for op in input.ops.into_iter().take(MAX_OPS) {
        h.apply(op);
    }
});
