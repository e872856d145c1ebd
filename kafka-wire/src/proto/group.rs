//! One member of a classic consumer group, sans IO: coordinator discovery, JoinGroup / SyncGroup
//! / Heartbeat / LeaveGroup, offset commits and fetches, eager and cooperative incremental
//! rebalancing (KIP-429), static membership (KIP-345) and the member id the coordinator hands out
//! on the first join (KIP-394). Time comes in as an argument; nothing here does IO.
//!
//! The member is driven through [`Member`], the trait both group members (this one and
//! [`crate::proto::consumer_protocol::ConsumerGroupMember`]) implement: call
//! [`Member::poll_request`] until it returns `None` and send what it returns (to any broker or to
//! the coordinator), feed every answer — or `Failed` when a request got none — to
//! [`Member::handle_response`], hand the events of [`Member::poll_event`] to the application, and
//! wake up again at [`Member::next_timeout`] or when something arrives. A JoinGroup is not sent
//! while a [`GroupEvent::Lost`] or [`GroupEvent::Revoke`] waits in the event queue, nor after a
//! `Lost` was taken from the queue until [`Member::lost_handled`] says the application has
//! stopped using the lost partitions (see *Losses wait for the application* below).
//!
//! # Losses wait for the application
//!
//! A driver usually runs the member on a background task and hands its events to the
//! application later (inside its next `poll`). A member that lost its partitions (lease over,
//! fenced, coordinator gone) between two polls must not rejoin in the background: the
//! application may still hold records of the old generation, and once the new generation is
//! current a transaction would commit their offsets with it (KIP-447 checks only the
//! generation), and the new assignment's committed offsets would rewind positions under the
//! application's feet — a batch processed and committed twice. So after a `Lost` the member
//! stays out of the group, sending no JoinGroup, until [`GroupMember::lost_handled`]; until
//! then [`GroupMember::generation`] is `None` and commits are refused. (A revocation already
//! waits for [`GroupMember::revocation_done`].)
//!
//! Why this and not "rejoin at once, refuse the generation until the loss is delivered": a
//! rejoin in the background would also fetch the new assignment's offsets and move positions,
//! and it only helps a member whose application is not polling — which the coordinator removes
//! after `rebalance_timeout` (`max.poll.interval.ms`) anyway, as this member leaves the group
//! itself when `poll_called` stays away that long. So the wait adds no new way to be kept out:
//! an application that polls rejoins at its next poll, one that does not would be out of the
//! group either way, and the group's rebalance waits for this member no longer than for any
//! member busy between polls (its rebalance timeout). The same rule holds for the KIP-848
//! member ([`crate::proto::consumer_protocol`]).
//!
//! # States
//!
//! ```text
//!                      subscribe                        JoinGroup MEMBER_ID_REQUIRED (KIP-394:
//!   ┌──────┐ ───────────────────────────┐               take the id), UNKNOWN_MEMBER_ID (forget
//!   │ Idle │                            ▼               the id), REBALANCE_IN_PROGRESS: at once;
//!   └──────┘              ┌──────────────────────────┐  coordinator errors, a failed request:
//!          ┌─────────────►│         Unjoined         │◄─┐ after a backoff
//!          │              └──────────────────────────┘  │
//!          │  join prepared: eager revoked everything,   │ JoinGroup
//!          │  cooperative revoked unsubscribed topics;   ▼
//!          │  coordinator known; no commit pending ┌─────────┐
//!          │                                       │ Joining │ (the lease is suspended: the
//!          │  SyncGroup REBALANCE_IN_PROGRESS,     └─────────┘  coordinator holds the request
//!          │  coordinator errors, a failed request      │       until the join phase ends)
//!          ├────────────────────────────────────┐       │ JoinGroup NONE; the leader runs the
//!          │                                    │       ▼ assignor named by protocol_name
//!          │                                    │  ┌─────────┐
//!          │                                    └──│ Syncing │ SyncGroup
//!          │  heartbeat REBALANCE_IN_PROGRESS,     └─────────┘
//!          │  metadata / subscription change,           │ SyncGroup NONE: the new assignment
//!          │  cooperative follow-up rejoin              ▼ (cooperative: Revoke what was taken
//!          │                                       ┌─────────┐  away, then Assigned, then join
//!          └───────────────────────────────────────│ Stable  │  again if anything was revoked)
//!                                                  └─────────┘ heartbeats; commits carry this
//!                                                              generation
//!
//!   from any state with a generation or partitions:
//!     ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID (heartbeat, sync, commit), lease over ──► Lost, Unjoined
//!                                                      (joins again once lost_handled is called)
//!     poll_called not called for rebalance_timeout ──► LeaveGroup (dynamic), Lost, PollExpired
//!                                                      (joins again at the next poll_called)
//!     leave() ──► Revoke, revocation_done, commits settle ──► LeaveGroup (dynamic) ──► Left
//!     FENCED_INSTANCE_ID, GROUP_AUTHORIZATION_FAILED, ... ──► Lost, Fatal
//! ```
//!
//! # Partitions
//!
//! A partition of this member is in exactly one of: [`GroupMember::assignment`] (the application
//! may use it), [`GroupMember::pending_revocation`] (announced with [`GroupEvent::Revoke`]; the
//! application finishes with it and commits, then calls [`GroupMember::revocation_done`]), or
//! nowhere. [`GroupEvent::Assigned`] adds partitions, [`GroupEvent::Lost`] takes them away
//! without a chance to commit. Eager rebalancing revokes everything before each JoinGroup is
//! sent. Cooperative rebalancing keeps the partitions through the JoinGroup; after SyncGroup it
//! revokes only what the new assignment dropped, and adds the new partitions once that
//! revocation is done (so the member never holds a partition the leader already moved: a
//! cooperative assignor gives a partition to a new owner only in the rebalance after the old
//! owner revoked it, which is why a member that revoked something joins once more). Only one
//! `Revoke` is outstanding at a time: a `leave()` during a revocation revokes the rest once
//! [`GroupMember::revocation_done`] is called.
//!
//! # The lease
//!
//! The coordinator removes a member that it has not heard from for `session_timeout`, and one
//! that did not rejoin within the rebalance timeout after a rebalance began. Once removed, its
//! partitions may go to other members. So the member gives its partitions up as
//! [`GroupEvent::Lost`] — before the coordinator can have removed it — when
//! `session_timeout` has passed since the coordinator last confirmed it (a heartbeat answered
//! NONE or REBALANCE_IN_PROGRESS, a JoinGroup or SyncGroup answered NONE), or
//! `rebalance_timeout` since the last confirmation that no rebalance had begun (a heartbeat
//! answered NONE, a JoinGroup or SyncGroup answered NONE). Each confirmation counts from when
//! its request was *sent*, not from when the answer arrived: the coordinator restarts its
//! timers somewhere in between, and an answer can be slow. From a JoinGroup in flight until
//! the SyncGroup is answered the lease is suspended: the coordinator keeps a member that waits
//! in the join or sync phase. (This assumes the driver
//! reports a request lost with its connection promptly as `Failed`; a request that silently
//! vanishes for longer than the session timeout while the member waits could let the
//! coordinator drop the member before it notices.)
//!
//! # Metadata
//!
//! The leader remembers the partition counts it assigned with and rejoins when
//! [`GroupMember::set_partition_counts`] reports different ones for the group's topics. If a
//! static leader's rejoin is answered with `skip_assignment` (the coordinator replaced it
//! without a rebalance, KIP-345) while it wanted a rebalance for new counts, it asks again.
//! A static leader restarted from scratch cannot know the counts its predecessor assigned with
//! (as in Java): after `skip_assignment` it takes the counts it knows then, and those it learns
//! later for topics it had none for, as the ones assigned with. (Taking a count learned late as
//! a change would make every static leader restarted before its first metadata answer rebalance
//! the group, which is what static membership is meant to avoid.)
//!
//! # Commits
//!
//! [`GroupMember::commit`] is accepted only while the member has a current generation (Stable,
//! including while it revokes partitions before a join or after a sync). The commit is sent
//! with that generation and member id; if the generation is no longer current when the commit
//! would be sent (or re-sent after a retriable error), it fails instead: a commit never goes out
//! with a stale generation. A JoinGroup or LeaveGroup waits until commits in flight are
//! answered, so the offsets of revoked partitions are committed before the partitions move.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::messages::consumer_group_heartbeat::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use crate::codec::messages::find_coordinator::FindCoordinatorResponse;
use crate::codec::messages::heartbeat::{HeartbeatRequest, HeartbeatResponse};
use crate::codec::messages::join_group::{JoinGroupRequest, JoinGroupRequestProtocol, JoinGroupResponse};
use crate::codec::messages::leave_group::{LeaveGroupRequest, LeaveGroupResponse, MemberIdentity};
use crate::codec::messages::offset_commit::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic, OffsetCommitResponse,
};
use crate::codec::messages::offset_fetch::{
    OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics, OffsetFetchResponse,
};
use crate::codec::messages::sync_group::{SyncGroupRequest, SyncGroupRequestAssignment, SyncGroupResponse};
use crate::codec::messages::FindCoordinatorRequest;
use crate::codec::{ErrorCode, Uuid};

use super::assignor::{
    Assignor, ConsumerProtocolAssignment, ConsumerProtocolSubscription, MemberSubscription, RebalanceProtocol,
    TopicPartitions, CONSUMER_PROTOCOL_MAX_VERSION, CONSUMER_PROTOCOL_TYPE, DEFAULT_GENERATION,
};
use super::backoff::Backoff;
use super::driving::{RequestId, RequestKind, Target};

/// A topic and a partition of it.
pub type Tp = (String, i32);

/// A committed offset as OffsetFetch returns it: offset (-1 when nothing is committed), leader
/// epoch, metadata.
pub type CommittedOffset = (i64, Option<i32>, Option<String>);

/// The member's settings.
#[derive(Clone)]
pub struct GroupConfig {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id`: makes this a static member (KIP-345).
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`: the coordinator evicts a member that sends no heartbeat for this long.
    pub session_timeout: Duration,
    /// Sent as JoinGroup's `rebalance_timeout_ms`; also the member's `max.poll.interval.ms`.
    pub rebalance_timeout: Duration,
    /// `heartbeat.interval.ms`: how often the member heartbeats.
    pub heartbeat_interval: Duration,
    /// In order of preference. The rebalance protocol is cooperative only if every assignor is.
    pub assignors: Vec<Arc<dyn Assignor + Send + Sync>>,
    /// `retry.backoff.ms`: first backoff before a failed request is retried.
    pub retry_backoff: Duration,
    /// `retry.backoff.max.ms`: cap of the exponential backoff (KIP-580).
    pub retry_backoff_max: Duration,
    /// `client.rack`, sent in the subscription (v3).
    pub rack: Option<String>,
    /// Seeds the jitter of the retry backoffs: the same seed, the same delays (simulations).
    /// `None`: a random seed.
    pub backoff_seed: Option<u64>,
}

impl GroupConfig {
    /// Java's defaults: session 45 s, max.poll.interval 300 s, heartbeat 3 s, backoff 100 ms up
    /// to 1 s, and the given assignors.
    pub fn new(group_id: impl Into<String>, assignors: Vec<Arc<dyn Assignor + Send + Sync>>) -> Self {
        Self {
            group_id: group_id.into(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(3),
            assignors,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            rack: None,
            backoff_seed: None,
        }
    }
}

impl std::fmt::Debug for GroupConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConfig")
            .field("group_id", &self.group_id)
            .field("group_instance_id", &self.group_instance_id)
            .field("session_timeout", &self.session_timeout)
            .field("rebalance_timeout", &self.rebalance_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("assignors", &self.assignors.iter().map(|a| a.name()).collect::<Vec<_>>())
            .field("retry_backoff", &self.retry_backoff)
            .field("retry_backoff_max", &self.retry_backoff_max)
            .field("rack", &self.rack)
            .field("backoff_seed", &self.backoff_seed)
            .finish()
    }
}

/// A request of a group member, of either protocol: the classic member sends FindCoordinator,
/// JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit and OffsetFetch, the KIP-848 member
/// FindCoordinator, ConsumerGroupHeartbeat, OffsetCommit and OffsetFetch. The driver picks the
/// version; every field of every version is filled (FindCoordinator has both `key` and
/// `coordinator_keys`, OffsetFetch both its v0-7 and v8+ forms, OffsetCommit topic names, and for
/// the KIP-848 member topic ids when known). ConsumerGroupHeartbeat needs v1+ (Kafka 4.0) unless
/// [`crate::proto::consumer_protocol::ConsumerGroupConfig::member_id`] is `Some("")`.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupRequest {
    /// Finds the group coordinator.
    FindCoordinator(FindCoordinatorRequest),
    /// Joins the group, or rejoins it for a rebalance.
    JoinGroup(JoinGroupRequest),
    /// Sends the leader's assignment, or fetches this member's.
    SyncGroup(SyncGroupRequest),
    /// Keeps the membership alive, and learns of rebalances.
    Heartbeat(HeartbeatRequest),
    /// Leaves the group.
    LeaveGroup(LeaveGroupRequest),
    /// Commits offsets.
    OffsetCommit(OffsetCommitRequest),
    /// Fetches committed offsets.
    OffsetFetch(OffsetFetchRequest),
    /// Joins the group, heartbeats, reports owned partitions and gets the assignment (KIP-848).
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest),
}

impl GroupRequest {
    /// The kind of request.
    pub fn kind(&self) -> RequestKind {
        match self {
            Self::FindCoordinator(_) => RequestKind::FIND_COORDINATOR,
            Self::JoinGroup(_) => RequestKind::JOIN_GROUP,
            Self::SyncGroup(_) => RequestKind::SYNC_GROUP,
            Self::Heartbeat(_) => RequestKind::HEARTBEAT,
            Self::LeaveGroup(_) => RequestKind::LEAVE_GROUP,
            Self::OffsetCommit(_) => RequestKind::OFFSET_COMMIT,
            Self::OffsetFetch(_) => RequestKind::OFFSET_FETCH,
            Self::ConsumerGroupHeartbeat(_) => RequestKind::CONSUMER_GROUP_HEARTBEAT,
        }
    }

    /// Whether this leaves the group: a LeaveGroup, or a ConsumerGroupHeartbeat with a leave
    /// epoch (-1, or -2 for a static member). A driver that closes should wait for its answer
    /// first, or the member stays in the group until its session times out.
    pub fn is_leave(&self) -> bool {
        match self {
            Self::LeaveGroup(_) => true,
            Self::ConsumerGroupHeartbeat(r) => r.member_epoch < 0,
            _ => false,
        }
    }
}

/// The answer to a request. A broker without ConsumerGroupHeartbeat (no API key 68 in
/// ApiVersions) should be reported as a heartbeat answer with UNSUPPORTED_VERSION: the KIP-848
/// member stops with [`GroupEvent::Fatal`]. An answer of a kind the member did not ask for is
/// taken as a failure of its request.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupResponse {
    /// FindCoordinator's answer.
    FindCoordinator(FindCoordinatorResponse),
    /// JoinGroup's answer.
    JoinGroup(JoinGroupResponse),
    /// SyncGroup's answer.
    SyncGroup(SyncGroupResponse),
    /// Heartbeat's answer.
    Heartbeat(HeartbeatResponse),
    /// LeaveGroup's answer.
    LeaveGroup(LeaveGroupResponse),
    /// OffsetCommit's answer.
    OffsetCommit(OffsetCommitResponse),
    /// OffsetFetch's answer.
    OffsetFetch(OffsetFetchResponse),
    /// ConsumerGroupHeartbeat's answer.
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse),
    /// The request failed without an answer (timeout, connection lost).
    Failed {
        /// The request that failed.
        kind: RequestKind,
    },
    /// The coordinator could not be reached at all (the request was not sent).
    CoordinatorUnreachable,
}

/// What the application must know or do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    /// The application must stop using these partitions and commit their offsets, then call
    /// [`GroupMember::revocation_done`]. They are in [`GroupMember::pending_revocation`] until
    /// then.
    Revoke(BTreeSet<Tp>),
    /// Newly assigned. The member fetches their committed offsets itself
    /// ([`GroupEvent::CommittedOffsets`] follows).
    Assigned(BTreeSet<Tp>),
    /// Lost without a chance to commit (session or lease over, fenced, generation reset): stop
    /// using them and do NOT commit them, then call [`GroupMember::lost_handled`] (the member
    /// does not rejoin before).
    Lost(BTreeSet<Tp>),
    /// Committed offsets of assigned partitions; -1 when nothing is committed.
    CommittedOffsets(BTreeMap<Tp, CommittedOffset>),
    /// The committed offsets of these partitions could not be fetched (a non-retriable
    /// partition error such as TOPIC_AUTHORIZATION_FAILED).
    OffsetFetchFailed(BTreeMap<Tp, ErrorCode>),
    /// The outcome of [`GroupMember::commit`].
    CommitResult {
        /// The id `commit` returned.
        id: u64,
        /// `Ok`, or the error the commit failed with.
        result: Result<(), ErrorCode>,
    },
    /// The member cannot go on (FENCED_INSTANCE_ID, GROUP_AUTHORIZATION_FAILED, ...). It sends
    /// nothing more.
    Fatal(ErrorCode),
}

/// A member of a consumer group, of either protocol: the classic one ([`GroupMember`],
/// JoinGroup / SyncGroup) or KIP-848's ([`crate::proto::consumer_protocol::ConsumerGroupMember`],
/// ConsumerGroupHeartbeat). Both offer these calls with the same meaning, so one driver runs
/// either (as a `dyn Member`).
///
/// # The driving contract
///
/// - **Application calls**: [`Member::subscribe`], then, between the application's polls,
///   [`Member::poll_called`] at each poll (a member not polled for the rebalance timeout leaves
///   the group); [`Member::commit`]; [`Member::leave`] to close. Metadata goes in with
///   [`Member::set_partition_counts`] and [`Member::set_topic_names`], for the topics of
///   [`Member::metadata_topics`].
/// - **Driver calls**: call [`Member::poll_request`] until it returns `None` and send each
///   request to its [`Target`]; hand every answer back to [`Member::handle_response`] with its
///   [`RequestId`] — or [`GroupResponse::Failed`] when none came (timeout, connection lost), or
///   [`GroupResponse::CoordinatorUnreachable`] when it could not be sent; hand the events of
///   [`Member::poll_event`] to the application; and call `poll_request` again at
///   [`Member::next_timeout`] or when anything arrives. Time comes in as `now` only.
/// - **Partition events wait for the application**: after [`GroupEvent::Revoke`] the member
///   holds back its next step (join, acknowledgement, leave) until [`Member::revocation_done`];
///   after [`GroupEvent::Lost`] it does not rejoin until [`Member::lost_handled`] (see *Losses
///   wait for the application* in the [module documentation](self)). While a loss is unhandled
///   the member has no generation and refuses commits.
pub trait Member {
    // ---- application calls ----

    /// Sets the subscription; a change makes the member rejoin (classic) or tell the
    /// coordinator (KIP-848).
    fn subscribe(&mut self, topics: BTreeSet<String>, now: Instant);

    /// Partition counts of topics (at least [`Member::metadata_topics`]). A classic leader
    /// rejoins when those of the group's topics change; the KIP-848 member ignores them (the
    /// coordinator assigns).
    fn set_partition_counts(&mut self, counts: BTreeMap<String, i32>, now: Instant);

    /// Topic id → name, from metadata: KIP-848 assignments name topics by id. The classic
    /// member has no use for them.
    fn set_topic_names(&mut self, names: BTreeMap<Uuid, String>, now: Instant) {
        let _ = (names, now);
    }

    /// The application polled: resets the `max.poll.interval` timer (`rebalance_timeout`).
    fn poll_called(&mut self, now: Instant);

    /// The application is done with the partitions of the last [`GroupEvent::Revoke`] (and has
    /// committed what it wanted to commit).
    fn revocation_done(&mut self, now: Instant);

    /// The application has stopped using the partitions of the last [`GroupEvent::Lost`]; until
    /// this is called the member does not rejoin.
    fn lost_handled(&mut self, now: Instant);

    /// Commits offsets (offset, leader epoch) with the current generation or member epoch. The
    /// outcome comes as [`GroupEvent::CommitResult`] with the returned id.
    /// Commits are retried after a lost answer, but never send a partition that a newer commit
    /// holds (a committed offset never goes back): a commit left with no partition completes
    /// `Ok`, the newer commit's result standing for it.
    fn commit(&mut self, offsets: BTreeMap<Tp, (i64, Option<i32>)>, now: Instant) -> u64;

    /// Leaves the group: revokes the partitions (wait for [`GroupEvent::Revoke`] and call
    /// [`Member::revocation_done`]), then leaves as the protocol says for a dynamic or static
    /// member.
    fn leave(&mut self, now: Instant);

    /// Like [`Member::leave`], but a static member gives up its instance id too, so that its
    /// partitions move at once.
    fn leave_explicitly(&mut self, now: Instant);

    // ---- driver calls ----

    /// The next request to send, if any. Call until `None`.
    fn poll_request(&mut self, now: Instant) -> Option<(RequestId, Target, GroupRequest)>;

    /// The answer to request `id` (or `Failed` / `CoordinatorUnreachable`). Answers to requests
    /// the member gave up on, and answers of a kind it did not ask for, change nothing but
    /// what a failed request would.
    fn handle_response(&mut self, id: RequestId, response: GroupResponse, now: Instant);

    /// The next event for the application.
    fn poll_event(&mut self) -> Option<GroupEvent>;

    /// When to call [`Member::poll_request`] again at the latest (a time in the past means
    /// now). `None`: only when something arrives or the application calls in.
    fn next_timeout(&self) -> Option<Instant>;

    // ---- state ----

    /// The rebalance protocol: how partitions move between members.
    fn protocol(&self) -> RebalanceProtocol;

    /// KIP-848's consumer protocol (ConsumerGroupHeartbeat) rather than the classic one.
    fn is_consumer_protocol(&self) -> bool;

    /// Whether this member may compute the group's assignment itself (a classic leader): it
    /// should get its topic subscription together with their partition counts, or, leading
    /// without them, it would assign nothing and rebalance again as soon as they arrive.
    fn assigns_client_side(&self) -> bool;

    /// The coordinator (node id, host, port), if known.
    fn coordinator(&self) -> Option<(i32, String, i32)>;

    /// The partitions the application may use (not those pending revocation).
    fn assignment(&self) -> &BTreeSet<Tp>;

    /// Partitions announced with [`GroupEvent::Revoke`] and not yet released by
    /// [`Member::revocation_done`].
    fn pending_revocation(&self) -> &BTreeSet<Tp>;

    /// (generation id or member epoch, member id) while the member may commit with them.
    fn generation(&self) -> Option<(i32, String)>;

    /// The member id (empty before the coordinator gave one, for a member that lets it).
    fn member_id(&self) -> &str;

    /// In the group with nothing left to do: no rejoin and no revocation pending.
    fn is_stable(&self) -> bool;

    /// Whether this member leads its classic generation (never for KIP-848).
    fn is_leader(&self) -> bool;

    /// The error that stopped the member, if any.
    fn fatal_error(&self) -> Option<ErrorCode>;

    /// After [`Member::leave`]: true once the member is out of the group (its leave handed out)
    /// and no commit is pending; the driver may close then.
    fn has_left(&self) -> bool;

    /// Whether a [`GroupEvent::Lost`] waits for [`Member::lost_handled`].
    fn loss_unhandled(&self) -> bool;

    /// Topics whose metadata the driver should keep up to date
    /// ([`Member::set_partition_counts`], [`Member::set_topic_names`]).
    fn metadata_topics(&self) -> BTreeSet<String>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not in a generation (or only the member id is left of it).
    Unjoined,
    /// JoinGroup in flight.
    Joining,
    /// JoinGroup answered; SyncGroup to send or in flight.
    Syncing,
    /// SyncGroup answered: a current generation.
    Stable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Active,
    /// `rebalance_timeout` passed without `poll_called`: the member left; it joins again at the
    /// next `poll_called`.
    PollExpired,
    /// `leave()` was called: revoking, then LeaveGroup.
    Leaving {
        send: bool,
    },
    Left,
    Fatal(ErrorCode),
}

#[derive(Clone, Debug)]
struct Generation {
    id: i32,
    member_id: String,
    protocol: String,
    leader: bool,
}

#[derive(Clone, Debug)]
enum AfterRevoke {
    /// Eager before a join, or cooperative revoking topics no longer subscribed.
    Join,
    /// Cooperative after a sync: add these, then join again (something was revoked).
    Assign(BTreeSet<Tp>),
    /// `leave()`.
    Leave,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotKind {
    Join,
    Sync,
    Heartbeat,
}

/// The one JoinGroup / SyncGroup / Heartbeat in flight.
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: RequestId,
    kind: SlotKind,
    sent_at: Instant,
    /// `GroupMember::epoch` when sent: answers about an older generation are ignored.
    epoch: u64,
}

/// What the leader knew of the group's topics when the current assignment was made.
#[derive(Clone, Debug)]
struct LeaderSnapshot {
    /// The topics the members subscribe to.
    topics: BTreeSet<String>,
    /// Their partition counts then (a topic without metadata is missing).
    counts: BTreeMap<String, i32>,
    /// The coordinator kept a predecessor's assignment (`skip_assignment`): `counts` is only
    /// what this member knew when it rejoined; counts it learns later for the missing topics
    /// are added rather than taken as a change.
    inherited: bool,
}

#[derive(Clone, Debug)]
struct PendingCommit {
    offsets: BTreeMap<Tp, (i64, Option<i32>)>,
    generation: i32,
    member_id: String,
    /// Request id while in flight.
    in_flight: Option<RequestId>,
    backoff: Backoff,
}

#[derive(Clone, Debug)]
struct Coordinator {
    node_id: i32,
    host: String,
    port: i32,
}

/// The sans-IO state machine of one classic consumer group member. See the module documentation.
pub struct GroupMember {
    config: GroupConfig,
    protocol: RebalanceProtocol,
    now: Instant,
    next_id: u64,

    subscription: BTreeSet<String>,
    subscribed: bool,
    counts: BTreeMap<String, i32>,

    coordinator: Option<Coordinator>,
    find_in_flight: Option<RequestId>,
    coordinator_backoff: Backoff,

    lifecycle: Lifecycle,
    phase: Phase,
    member_id: String,
    generation: Option<Generation>,
    /// The generation the owned partitions came from (sent in the subscription), -1 if none.
    owned_generation: i32,
    epoch: u64,
    slot: Option<Slot>,
    pending_sync: Option<SyncGroupRequest>,
    join_backoff: Backoff,
    rejoin_needed: bool,
    rejoin_reason: String,
    needs_join_prepare: bool,
    /// The leader's view when it assigned: the group's topics and their partition counts.
    leader_snapshot: Option<LeaderSnapshot>,
    /// The leader asked for a rebalance because partition counts changed, and has not run an
    /// assignment since (it survives a generation reset: a static leader that rejoins with a
    /// new member id gets `skip_assignment` and must ask again).
    metadata_rejoin_pending: bool,

    assigned: BTreeSet<Tp>,
    revoking: BTreeSet<Tp>,
    after_revoke: Option<AfterRevoke>,

    session_alive: Instant,
    phase_alive: Instant,
    next_heartbeat: Instant,
    last_poll: Instant,

    commits: BTreeMap<u64, PendingCommit>,
    /// Per partition, the id of the latest commit that holds it: an older commit (a retry)
    /// never sends it after that, so a committed offset never goes back to an earlier one.
    latest_commit: BTreeMap<Tp, u64>,
    commit_requests: BTreeMap<RequestId, u64>,
    fetch_queue: BTreeSet<Tp>,
    fetch_backoff: Backoff,
    fetch_requests: BTreeMap<RequestId, BTreeSet<Tp>>,
    leave_request: Option<LeaveGroupRequest>,

    events: VecDeque<GroupEvent>,
    /// A [`GroupEvent::Lost`] was queued and [`GroupMember::lost_handled`] not called since: no
    /// JoinGroup until it is.
    loss_unhandled: bool,
}

fn bs(s: &str) -> ByteString {
    ByteString::from(s)
}

fn is_coordinator_error(code: ErrorCode) -> bool {
    code == ErrorCode::COORDINATOR_NOT_AVAILABLE || code == ErrorCode::NOT_COORDINATOR
}

fn is_fatal_group_error(code: ErrorCode) -> bool {
    [
        ErrorCode::FENCED_INSTANCE_ID,
        ErrorCode::GROUP_AUTHORIZATION_FAILED,
        ErrorCode::INVALID_SESSION_TIMEOUT,
        ErrorCode::INVALID_GROUP_ID,
        ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
        ErrorCode::GROUP_MAX_SIZE_REACHED,
        ErrorCode::UNRELEASED_INSTANCE_ID,
    ]
    .contains(&code)
}

impl Member for GroupMember {
    /// The rebalance protocol: cooperative if every assignor is.
    fn protocol(&self) -> RebalanceProtocol {
        self.protocol
    }

    /// The coordinator (node id, host, port), if known.
    fn coordinator(&self) -> Option<(i32, String, i32)> {
        self.coordinator.as_ref().map(|c| (c.node_id, c.host.clone(), c.port))
    }

    /// The partitions the application may use (not those pending revocation).
    fn assignment(&self) -> &BTreeSet<Tp> {
        &self.assigned
    }

    /// Partitions announced with [`GroupEvent::Revoke`] and not yet released by
    /// [`GroupMember::revocation_done`].
    fn pending_revocation(&self) -> &BTreeSet<Tp> {
        &self.revoking
    }

    /// (generation id, member id) while the member has a current generation: from SyncGroup
    /// until its next JoinGroup is sent (or the generation is reset). Commits sent carry it.
    /// (Once the member is ready to send its JoinGroup it takes no new commits, see
    /// [`GroupMember::commit`], but still sends those queued before, with this generation.)
    fn generation(&self) -> Option<(i32, String)> {
        self.current_generation().map(|g| (g.id, g.member_id.clone()))
    }

    /// The member id the coordinator gave (empty before the first join).
    fn member_id(&self) -> &str {
        &self.member_id
    }

    /// In a generation with nothing left to do: no rejoin pending, no revocation pending.
    fn is_stable(&self) -> bool {
        self.lifecycle == Lifecycle::Active
            && self.phase == Phase::Stable
            && self.generation.is_some()
            && !self.rejoin_needed
            && self.after_revoke.is_none()
    }

    /// Whether this member is the leader of its current generation.
    fn is_leader(&self) -> bool {
        self.phase == Phase::Stable && self.generation.as_ref().is_some_and(|g| g.leader)
    }

    /// The error that stopped the member, if any.
    fn fatal_error(&self) -> Option<ErrorCode> {
        match self.lifecycle {
            Lifecycle::Fatal(code) => Some(code),
            _ => None,
        }
    }

    /// After [`GroupMember::leave`]: true once the member is out of the group (LeaveGroup handed
    /// out, if one was due) and no commit is pending; the driver may close then.
    fn has_left(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Left | Lifecycle::Fatal(_))
            && self.leave_request.is_none()
            && self.commits.is_empty()
    }

    /// Topics whose partition counts the driver should keep up to date with
    /// [`GroupMember::set_partition_counts`]: the subscription, plus, on the leader, every topic
    /// the group subscribes to.
    fn metadata_topics(&self) -> BTreeSet<String> {
        let mut topics = self.subscription.clone();
        if let Some(snapshot) = &self.leader_snapshot {
            topics.extend(snapshot.topics.iter().cloned());
        }
        topics
    }

    /// Sets the subscription; a change makes the member rejoin.
    fn subscribe(&mut self, topics: BTreeSet<String>, now: Instant) {
        self.now = now;
        if self.subscribed && topics == self.subscription {
            return;
        }
        self.subscription = topics;
        self.subscribed = true;
        self.request_rejoin("subscription changed");
    }

    /// Partition counts of topics (at least [`GroupMember::metadata_topics`]). The leader
    /// rejoins when the counts of the group's topics differ from those it assigned with.
    fn set_partition_counts(&mut self, counts: BTreeMap<String, i32>, now: Instant) {
        self.now = now;
        self.counts = counts;
        self.check_leader_metadata();
    }

    /// The application polled: resets the `max.poll.interval` timer (`rebalance_timeout`).
    fn poll_called(&mut self, now: Instant) {
        self.now = now;
        self.last_poll = now;
        if self.lifecycle == Lifecycle::PollExpired {
            self.lifecycle = Lifecycle::Active;
            self.request_rejoin("polled again after the poll timeout");
        }
    }

    /// The application is done with the partitions of the last [`GroupEvent::Revoke`] (and has
    /// committed what it wanted to commit).
    fn revocation_done(&mut self, now: Instant) {
        self.now = now;
        let Some(after) = self.after_revoke.take() else {
            return;
        };
        self.revoking.clear();
        match after {
            AfterRevoke::Join => {}
            AfterRevoke::Leave => self.revoke_rest_for_leave(),
            AfterRevoke::Assign(added) => {
                self.add_partitions(added);
                self.request_rejoin("revoked partitions in a cooperative rebalance");
            }
        }
    }

    /// The application has stopped using the partitions of the last [`GroupEvent::Lost`] (it
    /// dropped what it held of them, aborted what it had open). Until this is called the member
    /// does not rejoin: see the module documentation, *Losses wait for the application*.
    fn lost_handled(&mut self, now: Instant) {
        self.now = now;
        self.loss_unhandled = false;
    }

    /// Whether a [`GroupEvent::Lost`] waits for [`GroupMember::lost_handled`].
    fn loss_unhandled(&self) -> bool {
        self.loss_unhandled
    }

    /// Commits offsets (offset, leader epoch) with the current generation. The outcome comes as
    /// [`GroupEvent::CommitResult`] with the returned id.
    fn commit(&mut self, offsets: BTreeMap<Tp, (i64, Option<i32>)>, now: Instant) -> u64 {
        self.now = now;
        let id = self.next_id();
        if let Lifecycle::Fatal(code) = self.lifecycle {
            self.events.push_back(GroupEvent::CommitResult { id, result: Err(code) });
            return id;
        }
        if offsets.is_empty() {
            self.events.push_back(GroupEvent::CommitResult { id, result: Ok(()) });
            return id;
        }
        let generation = match (&self.generation, self.phase) {
            (Some(g), Phase::Stable) if self.commits_allowed() => g.clone(),
            _ => {
                let code = if matches!(self.lifecycle, Lifecycle::Active) && self.subscribed {
                    ErrorCode::REBALANCE_IN_PROGRESS
                } else {
                    ErrorCode::UNKNOWN_MEMBER_ID
                };
                self.events.push_back(GroupEvent::CommitResult { id, result: Err(code) });
                return id;
            }
        };
        for tp in offsets.keys() {
            self.latest_commit.insert(tp.clone(), id);
        }
        self.commits.insert(
            id,
            PendingCommit {
                offsets,
                generation: generation.id,
                member_id: generation.member_id,
                in_flight: None,
                // Streams 0-2 are the member's own backoffs; commit ids start at 1.
                backoff: Self::backoff(&self.config, 2 + id),
            },
        );
        id
    }

    /// Leaves the group: revokes the partitions (wait for [`GroupEvent::Revoke`] and call
    /// [`GroupMember::revocation_done`]), then sends LeaveGroup — only for a dynamic member: a
    /// static member stays in the group until its session times out (KIP-345).
    fn leave(&mut self, now: Instant) {
        self.start_leave(now, false);
    }

    /// Like [`GroupMember::leave`], but a static member sends LeaveGroup too (with its
    /// `group.instance.id`), so that its partitions move at once.
    fn leave_explicitly(&mut self, now: Instant) {
        self.start_leave(now, true);
    }

    /// The next request to send, if any. Call until `None`.
    fn poll_request(&mut self, now: Instant) -> Option<(RequestId, Target, GroupRequest)> {
        self.now = now;
        self.tick(now);
        if let Lifecycle::Fatal(_) = self.lifecycle {
            return None;
        }
        if let Lifecycle::Leaving { .. } = self.lifecycle {
            self.maybe_finish_leave();
        }
        if self.coordinator.is_none() {
            if self.find_in_flight.is_none() && self.coordinator_backoff.ready(now) && self.needs_coordinator() {
                let id = self.next_request_id();
                self.find_in_flight = Some(id);
                let request = FindCoordinatorRequest {
                    key: bs(&self.config.group_id),
                    key_type: 0,
                    coordinator_keys: vec![bs(&self.config.group_id)],
                    ..Default::default()
                };
                return Some((id, Target::AnyBroker, GroupRequest::FindCoordinator(request)));
            }
            return None;
        }
        let node = self.coordinator.as_ref().map(|c| c.node_id).unwrap_or(-1);
        let target = Target::Coordinator(node);

        if let Some(leave) = self.leave_request.take() {
            let id = self.next_request_id();
            return Some((id, target, GroupRequest::LeaveGroup(leave)));
        }
        if let Some(request) = self.next_commit(now) {
            return Some((request.0, target, request.1));
        }
        if let Some(request) = self.next_fetch(now) {
            return Some((request.0, target, request.1));
        }
        if self.slot.is_some() || !matches!(self.lifecycle, Lifecycle::Active | Lifecycle::Leaving { .. }) {
            return None;
        }
        if let Some(sync) = self.pending_sync.take() {
            let id = self.next_request_id();
            self.slot = Some(Slot { id, kind: SlotKind::Sync, sent_at: now, epoch: self.epoch });
            return Some((id, target, GroupRequest::SyncGroup(sync)));
        }
        if self.lifecycle == Lifecycle::Active {
            self.maybe_prepare_join();
            if self.join_ready(now) {
                let Ok(request) = self.join_request() else {
                    // A subscribed topic name or client.rack longer than the consumer
                    // protocol's 32767 bytes: the subscription cannot be written.
                    self.fatal(ErrorCode::INVALID_REQUEST);
                    return None;
                };
                let id = self.next_request_id();
                self.phase = Phase::Joining;
                self.rejoin_needed = false;
                self.slot = Some(Slot { id, kind: SlotKind::Join, sent_at: now, epoch: self.epoch });
                return Some((id, target, GroupRequest::JoinGroup(request)));
            }
        }
        if self.phase == Phase::Stable && now >= self.next_heartbeat {
            if let Some(g) = &self.generation {
                let request = HeartbeatRequest {
                    group_id: bs(&self.config.group_id),
                    generation_id: g.id,
                    member_id: bs(&g.member_id),
                    group_instance_id: self.config.group_instance_id.as_deref().map(bs),
                    ..Default::default()
                };
                let id = self.next_request_id();
                self.slot = Some(Slot { id, kind: SlotKind::Heartbeat, sent_at: now, epoch: self.epoch });
                self.next_heartbeat = now + self.config.heartbeat_interval;
                return Some((id, target, GroupRequest::Heartbeat(request)));
            }
        }
        None
    }

    /// The answer to request `id` (or `Failed` / `CoordinatorUnreachable`).
    fn handle_response(&mut self, id: RequestId, response: GroupResponse, now: Instant) {
        self.now = now;
        if self.find_in_flight == Some(id) {
            self.find_in_flight = None;
            self.on_find_coordinator(response, now);
        } else if let Some(slot) = self.slot.filter(|s| s.id == id) {
            self.slot = None;
            match (slot.kind, response) {
                (SlotKind::Join, GroupResponse::JoinGroup(r)) => self.on_join(slot, r, now),
                (SlotKind::Sync, GroupResponse::SyncGroup(r)) => self.on_sync(slot, r, now),
                (SlotKind::Heartbeat, GroupResponse::Heartbeat(r)) => self.on_heartbeat(slot, r, now),
                (kind, response) => {
                    if !matches!(response, GroupResponse::Failed { .. } | GroupResponse::CoordinatorUnreachable) {
                        tracing::warn!(?kind, "group: unexpected response type; treated as a failure");
                    }
                    self.mark_coordinator_unknown("request failed");
                    self.slot_failed(slot, now);
                }
            }
        } else if let Some(commit_id) = self.commit_requests.remove(&id) {
            self.on_commit(commit_id, response, now);
        } else if let Some(partitions) = self.fetch_requests.remove(&id) {
            self.on_fetch(partitions, response, now);
        } else {
            // A LeaveGroup (fire and forget) or an answer to a request abandoned when the
            // coordinator was marked unknown.
            if let GroupResponse::LeaveGroup(r) = &response {
                if r.error_code.is_err() {
                    tracing::info!(error = ?r.error_code, "group: LeaveGroup failed");
                }
            }
        }
        self.tick(now);
    }

    /// The next event for the application.
    fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    /// When to call [`GroupMember::poll_request`] again at the latest (a time in the past
    /// means now). `None`: only when something arrives or the application calls in.
    fn next_timeout(&self) -> Option<Instant> {
        if matches!(self.lifecycle, Lifecycle::Fatal(_)) {
            return None;
        }
        let mut at: Option<Instant> = None;
        let mut add = |t: Instant| at = Some(at.map_or(t, |a: Instant| a.min(t)));
        let now = self.now;
        if self.coordinator.is_none() {
            if self.find_in_flight.is_none() && self.needs_coordinator() {
                add(self.coordinator_backoff.until().unwrap_or(now));
            }
        } else {
            if self.leave_request.is_some() {
                add(now);
            }
            for c in self.commits.values() {
                if c.in_flight.is_none() {
                    add(c.backoff.until().unwrap_or(now));
                }
            }
            if !self.fetch_queue.is_empty() {
                add(self.fetch_backoff.until().unwrap_or(now));
            }
            if self.slot.is_none() && matches!(self.lifecycle, Lifecycle::Active | Lifecycle::Leaving { .. }) {
                if self.pending_sync.is_some() {
                    add(now);
                }
                if self.lifecycle == Lifecycle::Active && self.subscribed && self.wants_join() {
                    if self.needs_join_prepare {
                        if self.after_revoke.is_none() {
                            add(now);
                        }
                    } else if self.join_blockers_clear() {
                        add(self.join_backoff.until().unwrap_or(now));
                    }
                }
                if self.phase == Phase::Stable && self.generation.is_some() {
                    add(self.next_heartbeat);
                }
            }
        }
        if let Lifecycle::Leaving { .. } = self.lifecycle {
            if self.after_revoke.is_none() && self.commits.is_empty() {
                add(now);
            }
        }
        if let Some(deadline) = self.lease_deadline() {
            add(deadline);
        }
        if let Some(deadline) = self.poll_deadline() {
            add(deadline);
        }
        at
    }

    fn is_consumer_protocol(&self) -> bool {
        false
    }

    fn assigns_client_side(&self) -> bool {
        true
    }
}

impl GroupMember {
    /// A member that has not joined yet.
    pub fn new(config: GroupConfig, now: Instant) -> Self {
        let protocol = if !config.assignors.is_empty()
            && config.assignors.iter().all(|a| a.protocol() == RebalanceProtocol::Cooperative)
        {
            RebalanceProtocol::Cooperative
        } else {
            RebalanceProtocol::Eager
        };
        let coordinator_backoff = Self::backoff(&config, 0);
        let join_backoff = Self::backoff(&config, 1);
        let fetch_backoff = Self::backoff(&config, 2);
        Self {
            config,
            protocol,
            now,
            next_id: 1,
            subscription: BTreeSet::new(),
            subscribed: false,
            counts: BTreeMap::new(),
            coordinator: None,
            find_in_flight: None,
            coordinator_backoff,
            lifecycle: Lifecycle::Active,
            phase: Phase::Unjoined,
            member_id: String::new(),
            generation: None,
            owned_generation: DEFAULT_GENERATION,
            epoch: 0,
            slot: None,
            pending_sync: None,
            join_backoff,
            rejoin_needed: true,
            rejoin_reason: String::new(),
            needs_join_prepare: true,
            leader_snapshot: None,
            metadata_rejoin_pending: false,
            assigned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            after_revoke: None,
            session_alive: now,
            phase_alive: now,
            next_heartbeat: now,
            last_poll: now,
            commits: BTreeMap::new(),
            latest_commit: BTreeMap::new(),
            commit_requests: BTreeMap::new(),
            fetch_queue: BTreeSet::new(),
            fetch_backoff,
            fetch_requests: BTreeMap::new(),
            leave_request: None,
            events: VecDeque::new(),
            loss_unhandled: false,
        }
    }

    // ---- internals: leaving -------------------------------------------------------------------

    fn start_leave(&mut self, now: Instant, explicit: bool) {
        self.now = now;
        if matches!(self.lifecycle, Lifecycle::Left | Lifecycle::Fatal(_) | Lifecycle::Leaving { .. }) {
            return;
        }
        let send = self.config.group_instance_id.is_none() || explicit;
        self.lifecycle = Lifecycle::Leaving { send };
        self.rejoin_needed = false;
        self.needs_join_prepare = false;
        if self.phase == Phase::Stable && self.generation.is_some() {
            if self.after_revoke.is_some() {
                // The rest is revoked once the revocation under way is done: one Revoke at a
                // time, so that the application's `revocation_done` for the earlier one never
                // releases partitions of a Revoke it has not handled yet (their offsets would
                // go uncommitted). What that revocation was for (a join, partitions to add) is
                // moot now.
                self.after_revoke = Some(AfterRevoke::Leave);
            } else {
                self.revoke_rest_for_leave();
            }
        } else {
            self.lose_all();
        }
    }

    /// Leaving: revokes what is still assigned.
    fn revoke_rest_for_leave(&mut self) {
        let more: BTreeSet<Tp> = std::mem::take(&mut self.assigned);
        if !more.is_empty() {
            self.revoking.extend(more.iter().cloned());
            self.after_revoke = Some(AfterRevoke::Leave);
            self.events.push_back(GroupEvent::Revoke(more));
        }
    }

    // ---- internals: timers -------------------------------------------------------------------

    /// The backoff of one kind of retry; `stream` keeps the jitter of each apart.
    fn backoff(config: &GroupConfig, stream: u64) -> Backoff {
        super::driving::backoff(config.retry_backoff, config.retry_backoff_max, config.backoff_seed, stream)
    }

    /// Ids of requests and of commits, from one counter.
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn next_request_id(&mut self) -> RequestId {
        RequestId(self.next_id())
    }

    fn holds_membership(&self) -> bool {
        self.generation.is_some() || !self.assigned.is_empty() || !self.revoking.is_empty()
    }

    fn lease_deadline(&self) -> Option<Instant> {
        if !matches!(self.lifecycle, Lifecycle::Active | Lifecycle::Leaving { .. }) || !self.holds_membership() {
            return None;
        }
        if self.slot.is_some_and(|s| matches!(s.kind, SlotKind::Join | SlotKind::Sync)) || self.pending_sync.is_some() {
            return None;
        }
        Some((self.session_alive + self.config.session_timeout).min(self.phase_alive + self.config.rebalance_timeout))
    }

    fn poll_deadline(&self) -> Option<Instant> {
        if self.lifecycle != Lifecycle::Active {
            return None;
        }
        if self.phase == Phase::Unjoined && !self.holds_membership() {
            return None;
        }
        Some(self.last_poll + self.config.rebalance_timeout)
    }

    fn tick(&mut self, now: Instant) {
        if let Some(deadline) = self.poll_deadline() {
            if now >= deadline {
                tracing::warn!(
                    group = %self.config.group_id,
                    "group: poll timeout expired (max.poll.interval); leaving the group"
                );
                self.queue_leave_request("consumer poll timeout has expired");
                self.reset_generation(true, "poll timeout");
                self.lifecycle = Lifecycle::PollExpired;
            }
        }
        if let Some(deadline) = self.lease_deadline() {
            if now >= deadline {
                let session_over = now >= self.session_alive + self.config.session_timeout;
                tracing::warn!(
                    group = %self.config.group_id,
                    session_over,
                    "group: membership lease over; partitions lost"
                );
                self.reset_generation(false, "membership lease over");
                if session_over {
                    self.mark_coordinator_unknown("no answer within the session timeout");
                }
            }
        }
    }

    // ---- internals: state changes ------------------------------------------------------------

    fn commits_allowed(&self) -> bool {
        // Once the member is ready to send its JoinGroup, it no longer takes commits: it waits
        // for those in flight, and a new one would hold the join back.
        match self.lifecycle {
            Lifecycle::Active => !self.rejoin_needed || self.after_revoke.is_some() || self.needs_join_prepare,
            Lifecycle::Leaving { .. } => self.after_revoke.is_some(),
            _ => false,
        }
    }

    fn request_rejoin(&mut self, reason: &str) {
        tracing::debug!(group = %self.config.group_id, reason, "group: rejoin requested");
        self.rejoin_needed = true;
        self.needs_join_prepare = true;
        self.rejoin_reason = reason.to_string();
    }

    fn check_leader_metadata(&mut self) {
        if !self.is_leader() {
            return;
        }
        let counts = &self.counts;
        if let Some(snapshot) = self.leader_snapshot.as_mut() {
            if snapshot.inherited {
                // The assignment was not ours (skip_assignment): a count learned only now is
                // taken as the one it was made with, not as a change.
                for t in &snapshot.topics {
                    if let (false, Some(&c)) = (snapshot.counts.contains_key(t), counts.get(t)) {
                        snapshot.counts.insert(t.clone(), c);
                    }
                }
            }
            let now: BTreeMap<String, i32> =
                snapshot.topics.iter().filter_map(|t| counts.get(t).map(|&c| (t.clone(), c))).collect();
            if now != snapshot.counts {
                self.metadata_rejoin_pending = true;
                self.request_rejoin("partition counts changed");
            }
        }
    }

    fn lose_all(&mut self) {
        let mut lost = std::mem::take(&mut self.assigned);
        lost.append(&mut self.revoking);
        if !lost.is_empty() {
            self.events.push_back(GroupEvent::Lost(lost));
            self.loss_unhandled = true;
        }
        self.after_revoke = None;
        self.fetch_queue.clear();
        self.owned_generation = DEFAULT_GENERATION;
    }

    /// Java's `resetStateAndRejoin`: the generation is gone, its partitions are lost.
    fn reset_generation(&mut self, reset_member_id: bool, reason: &str) {
        tracing::info!(group = %self.config.group_id, reason, reset_member_id, "group: resetting generation");
        self.lose_all();
        self.generation = None;
        self.phase = Phase::Unjoined;
        self.pending_sync = None;
        self.leader_snapshot = None;
        self.epoch += 1;
        if reset_member_id {
            self.member_id.clear();
        }
        if matches!(self.slot, Some(Slot { kind: SlotKind::Join | SlotKind::Sync, .. })) {
            // Its answer is about a generation we gave up; the epoch makes it stale.
            self.slot = None;
        }
        self.request_rejoin(reason);
    }

    fn fatal(&mut self, code: ErrorCode) {
        tracing::error!(group = %self.config.group_id, error = ?code, "group: fatal error");
        self.lose_all();
        self.generation = None;
        self.phase = Phase::Unjoined;
        self.pending_sync = None;
        self.slot = None;
        self.lifecycle = Lifecycle::Fatal(code);
        let ids: Vec<u64> = self.commits.keys().copied().collect();
        for id in ids {
            self.commits.remove(&id);
            self.events.push_back(GroupEvent::CommitResult { id, result: Err(code) });
        }
        self.commit_requests.clear();
        self.fetch_requests.clear();
        self.events.push_back(GroupEvent::Fatal(code));
    }

    fn mark_coordinator_unknown(&mut self, reason: &str) {
        if self.coordinator.is_none() {
            return;
        }
        tracing::info!(group = %self.config.group_id, reason, "group: coordinator unknown");
        self.coordinator = None;
        // Like Java, which disconnects: what is in flight to it is abandoned (late answers are
        // ignored) and redone with the next coordinator.
        if let Some(slot) = self.slot.take() {
            self.slot_failed(slot, self.now);
        }
        for commit_id in std::mem::take(&mut self.commit_requests).into_values() {
            if let Some(c) = self.commits.get_mut(&commit_id) {
                c.in_flight = None;
            }
        }
        for partitions in std::mem::take(&mut self.fetch_requests).into_values() {
            self.fetch_queue.extend(partitions);
        }
    }

    /// A join, sync or heartbeat got no answer.
    fn slot_failed(&mut self, slot: Slot, now: Instant) {
        match slot.kind {
            SlotKind::Join => {
                if self.phase == Phase::Joining {
                    self.phase = Phase::Unjoined;
                }
                self.rejoin_needed = true;
                self.join_backoff.fail(now);
            }
            SlotKind::Sync => {
                if slot.epoch == self.epoch && self.phase == Phase::Syncing {
                    self.phase = Phase::Unjoined;
                    self.generation = None;
                }
                self.rejoin_needed = true;
                self.join_backoff.fail(now);
            }
            SlotKind::Heartbeat => {
                self.next_heartbeat = now + self.config.retry_backoff;
            }
        }
    }

    fn add_partitions(&mut self, added: BTreeSet<Tp>) {
        let added: BTreeSet<Tp> = added.difference(&self.assigned).cloned().collect();
        if added.is_empty() {
            return;
        }
        self.assigned.extend(added.iter().cloned());
        self.fetch_queue.extend(added.iter().cloned());
        self.events.push_back(GroupEvent::Assigned(added));
    }

    fn needs_coordinator(&self) -> bool {
        match self.lifecycle {
            Lifecycle::Fatal(_) => false,
            Lifecycle::Left | Lifecycle::PollExpired => self.leave_request.is_some() || !self.commits.is_empty(),
            _ => {
                self.subscribed
                    || self.leave_request.is_some()
                    || !self.commits.is_empty()
                    || !self.fetch_queue.is_empty()
            }
        }
    }

    fn wants_join(&self) -> bool {
        (self.rejoin_needed || self.phase == Phase::Unjoined)
            && matches!(self.phase, Phase::Unjoined | Phase::Stable)
            && self.pending_sync.is_none()
    }

    /// Nothing holds a JoinGroup back but the coordinator, the slot and the backoff.
    fn join_blockers_clear(&self) -> bool {
        self.after_revoke.is_none() && self.commits.is_empty() && !self.loss_unhandled
    }

    /// Java's `onJoinPrepare`: eager revokes everything; cooperative revokes the partitions of
    /// topics no longer subscribed.
    fn maybe_prepare_join(&mut self) {
        if !self.subscribed || !self.needs_join_prepare || !self.wants_join() || self.after_revoke.is_some() {
            return;
        }
        self.needs_join_prepare = false;
        let revoke: BTreeSet<Tp> = match self.protocol {
            RebalanceProtocol::Eager => self.assigned.clone(),
            RebalanceProtocol::Cooperative => {
                self.assigned.iter().filter(|(t, _)| !self.subscription.contains(t)).cloned().collect()
            }
        };
        if !revoke.is_empty() {
            for tp in &revoke {
                self.assigned.remove(tp);
            }
            self.revoking.extend(revoke.iter().cloned());
            self.after_revoke = Some(AfterRevoke::Join);
            self.events.push_back(GroupEvent::Revoke(revoke));
        }
    }

    fn join_ready(&self, now: Instant) -> bool {
        self.subscribed
            && self.wants_join()
            && !self.needs_join_prepare
            && self.join_blockers_clear()
            && self.join_backoff.ready(now)
            && !self.partition_events_pending()
    }

    /// A Lost or Revoke the application has not taken yet: the JoinGroup waits for it, so the
    /// application knows it has stopped owning those partitions before the member rejoins.
    fn partition_events_pending(&self) -> bool {
        self.events.iter().any(|e| matches!(e, GroupEvent::Lost(_) | GroupEvent::Revoke(_)))
    }

    fn join_request(&mut self) -> Result<JoinGroupRequest, crate::codec::EncodeError> {
        let mut owned: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (t, p) in &self.assigned {
            owned.entry(t.clone()).or_default().push(*p);
        }
        let subscription = ConsumerProtocolSubscription {
            topics: self.subscription.iter().cloned().collect(),
            user_data: None,
            owned_partitions: owned
                .into_iter()
                .map(|(topic, partitions)| TopicPartitions { topic, partitions })
                .collect(),
            generation_id: if self.assigned.is_empty() { DEFAULT_GENERATION } else { self.owned_generation },
            rack_id: self.config.rack.clone(),
        };
        let metadata = subscription.encode(CONSUMER_PROTOCOL_MAX_VERSION)?;
        // Not current any more: commits fail from here on.
        self.generation = None;
        let reason = if self.rejoin_reason.is_empty() { None } else { Some(bs(&self.rejoin_reason)) };
        Ok(JoinGroupRequest {
            group_id: bs(&self.config.group_id),
            session_timeout_ms: duration_ms(self.config.session_timeout),
            rebalance_timeout_ms: duration_ms(self.config.rebalance_timeout),
            member_id: bs(&self.member_id),
            group_instance_id: self.config.group_instance_id.as_deref().map(bs),
            protocol_type: bs(CONSUMER_PROTOCOL_TYPE),
            protocols: self
                .config
                .assignors
                .iter()
                .map(|a| JoinGroupRequestProtocol {
                    name: bs(a.name()),
                    metadata: metadata.clone(),
                    ..Default::default()
                })
                .collect(),
            reason,
            ..Default::default()
        })
    }

    fn queue_leave_request(&mut self, reason: &str) {
        if self.config.group_instance_id.is_some() && !matches!(self.lifecycle, Lifecycle::Leaving { send: true }) {
            return;
        }
        if self.member_id.is_empty() {
            return;
        }
        let joined = self.generation.is_some() || self.phase != Phase::Unjoined;
        if !joined && !matches!(self.lifecycle, Lifecycle::Leaving { .. }) {
            return;
        }
        self.leave_request = Some(LeaveGroupRequest {
            group_id: bs(&self.config.group_id),
            member_id: bs(&self.member_id),
            members: vec![MemberIdentity {
                member_id: bs(&self.member_id),
                group_instance_id: self.config.group_instance_id.as_deref().map(bs),
                reason: Some(bs(reason)),
                ..Default::default()
            }],
            ..Default::default()
        });
    }

    fn maybe_finish_leave(&mut self) {
        let Lifecycle::Leaving { send } = self.lifecycle else {
            return;
        };
        if self.after_revoke.is_some() || !self.commits.is_empty() {
            return;
        }
        // A JoinGroup or SyncGroup in flight: the coordinator knows the member id it carries, so
        // leave with it; the answer will be ignored.
        if send && !self.member_id.is_empty() {
            self.queue_leave_request("the consumer is being closed");
        }
        self.slot = None;
        self.pending_sync = None;
        self.generation = None;
        self.phase = Phase::Unjoined;
        self.epoch += 1;
        self.fetch_queue.clear();
        self.lifecycle = Lifecycle::Left;
    }

    // ---- internals: requests -----------------------------------------------------------------

    fn current_generation(&self) -> Option<&Generation> {
        if self.phase == Phase::Stable {
            self.generation.as_ref()
        } else {
            None
        }
    }

    fn next_commit(&mut self, now: Instant) -> Option<(RequestId, GroupRequest)> {
        let current = self.current_generation().map(|g| (g.id, g.member_id.clone()));
        let ready: Vec<u64> = self
            .commits
            .iter()
            .filter(|(_, c)| c.in_flight.is_none() && c.backoff.ready(now))
            .map(|(&id, _)| id)
            .collect();
        for commit_id in ready {
            // Partitions that a newer commit holds are left out: sent after it (a retry after
            // a lost answer, or after the newer one's backoff ran out first), they would move
            // the committed offset back. A commit left with nothing is done: the newer one's
            // result is the outcome for those partitions.
            let latest = &self.latest_commit;
            if let Some(c) = self.commits.get_mut(&commit_id) {
                c.offsets.retain(|tp, _| latest.get(tp).is_none_or(|&newest| newest <= commit_id));
                if c.offsets.is_empty() {
                    self.commits.remove(&commit_id);
                    self.events.push_back(GroupEvent::CommitResult { id: commit_id, result: Ok(()) });
                    continue;
                }
            }
            let c = &self.commits[&commit_id];
            if current.as_ref() != Some(&(c.generation, c.member_id.clone())) {
                // Never send a commit with a generation that is no longer current.
                self.commits.remove(&commit_id);
                let code = if matches!(self.lifecycle, Lifecycle::Active) && self.generation.is_none() {
                    ErrorCode::REBALANCE_IN_PROGRESS
                } else {
                    ErrorCode::ILLEGAL_GENERATION
                };
                self.events.push_back(GroupEvent::CommitResult { id: commit_id, result: Err(code) });
                continue;
            }
            let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
            for ((topic, partition), (offset, epoch)) in &c.offsets {
                topics.entry(topic.as_str()).or_default().push(OffsetCommitRequestPartition {
                    partition_index: *partition,
                    committed_offset: *offset,
                    committed_leader_epoch: epoch.unwrap_or(-1),
                    committed_metadata: Some(bs("")),
                    ..Default::default()
                });
            }
            let request = OffsetCommitRequest {
                group_id: bs(&self.config.group_id),
                generation_id_or_member_epoch: c.generation,
                member_id: bs(&c.member_id),
                group_instance_id: self.config.group_instance_id.as_deref().map(bs),
                retention_time_ms: -1,
                topics: topics
                    .into_iter()
                    .map(|(name, partitions)| OffsetCommitRequestTopic {
                        name: bs(name),
                        partitions,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            let id = self.next_request_id();
            if let Some(c) = self.commits.get_mut(&commit_id) {
                c.in_flight = Some(id);
            }
            self.commit_requests.insert(id, commit_id);
            return Some((id, GroupRequest::OffsetCommit(request)));
        }
        None
    }

    fn next_fetch(&mut self, now: Instant) -> Option<(RequestId, GroupRequest)> {
        if self.fetch_queue.is_empty() || !self.fetch_backoff.ready(now) {
            return None;
        }
        let partitions: BTreeSet<Tp> =
            std::mem::take(&mut self.fetch_queue).into_iter().filter(|tp| self.assigned.contains(tp)).collect();
        if partitions.is_empty() {
            return None;
        }
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in &partitions {
            topics.entry(t.as_str()).or_default().push(*p);
        }
        let request = OffsetFetchRequest {
            group_id: bs(&self.config.group_id),
            topics: Some(
                topics
                    .iter()
                    .map(|(t, ps)| OffsetFetchRequestTopic {
                        name: bs(t),
                        partition_indexes: ps.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            groups: vec![OffsetFetchRequestGroup {
                group_id: bs(&self.config.group_id),
                member_id: None,
                member_epoch: -1,
                topics: Some(
                    topics
                        .iter()
                        .map(|(t, ps)| OffsetFetchRequestTopics {
                            name: bs(t),
                            partition_indexes: ps.clone(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }],
            require_stable: true,
            ..Default::default()
        };
        let id = self.next_request_id();
        self.fetch_requests.insert(id, partitions);
        Some((id, GroupRequest::OffsetFetch(request)))
    }

    // ---- internals: responses ----------------------------------------------------------------

    fn on_find_coordinator(&mut self, response: GroupResponse, now: Instant) {
        let GroupResponse::FindCoordinator(r) = response else {
            self.coordinator_backoff.fail(now);
            return;
        };
        let (error, node_id, host, port) =
            match r.coordinators.iter().find(|c| &*c.key == self.config.group_id.as_str()).or(r.coordinators.first()) {
                Some(c) => (c.error_code, c.node_id, c.host.to_string(), c.port),
                None => (r.error_code, r.node_id, r.host.to_string(), r.port),
            };
        if error.is_ok() && node_id >= 0 {
            self.coordinator = Some(Coordinator { node_id, host, port });
            self.coordinator_backoff.reset();
        } else if error == ErrorCode::GROUP_AUTHORIZATION_FAILED {
            self.fatal(error);
        } else {
            tracing::debug!(group = %self.config.group_id, ?error, "group: FindCoordinator failed");
            self.coordinator_backoff.fail(now);
        }
    }

    fn on_join(&mut self, slot: Slot, r: JoinGroupResponse, now: Instant) {
        if slot.epoch != self.epoch {
            // The generation was reset while the JoinGroup was in flight.
            if (r.error_code.is_ok() || r.error_code == ErrorCode::MEMBER_ID_REQUIRED)
                && !r.member_id.is_empty()
                && self.lifecycle == Lifecycle::Active
            {
                self.member_id = r.member_id.to_string();
            }
            self.rejoin_needed = true;
            return;
        }
        let error = r.error_code;
        if !matches!(self.lifecycle, Lifecycle::Active) {
            // Leaving: remember the id the coordinator knows us by, so LeaveGroup can name it.
            if (error.is_ok() || error == ErrorCode::MEMBER_ID_REQUIRED) && !r.member_id.is_empty() {
                self.member_id = r.member_id.to_string();
            }
            self.phase = Phase::Unjoined;
            return;
        }
        self.phase = Phase::Unjoined;
        if error.is_ok() {
            if r.protocol_type.as_deref().is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE) {
                self.fatal(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
                return;
            }
            let Some(protocol) = r.protocol_name.as_deref().map(str::to_string) else {
                self.fatal(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
                return;
            };
            self.join_backoff.reset();
            self.member_id = r.member_id.to_string();
            let leader = !r.member_id.is_empty() && r.leader == r.member_id;
            if !leader {
                // Another member assigns this generation, with its own metadata.
                self.metadata_rejoin_pending = false;
            }
            self.epoch += 1;
            self.generation = Some(Generation {
                id: r.generation_id,
                member_id: self.member_id.clone(),
                protocol: protocol.clone(),
                leader,
            });
            self.phase = Phase::Syncing;
            // Counted from when the JoinGroup was sent: the coordinator restarted its timers
            // for this member after receiving it, and the member cannot know how much later.
            self.session_alive = slot.sent_at;
            self.phase_alive = slot.sent_at;
            self.leader_snapshot = None;
            // The leader assigns; with `skip_assignment` (a static leader that rejoined, KIP-345)
            // the coordinator keeps the current assignment and the leader only notes the
            // group's subscription, to rejoin when its metadata changes.
            let assignments = if leader {
                match self.perform_assignment(&protocol, &r, !r.skip_assignment) {
                    Ok(a) => a,
                    Err(code) => {
                        self.fatal(code);
                        return;
                    }
                }
            } else {
                Vec::new()
            };
            self.pending_sync = Some(SyncGroupRequest {
                group_id: bs(&self.config.group_id),
                generation_id: r.generation_id,
                member_id: bs(&self.member_id),
                group_instance_id: self.config.group_instance_id.as_deref().map(bs),
                protocol_type: Some(bs(CONSUMER_PROTOCOL_TYPE)),
                protocol_name: Some(bs(&protocol)),
                assignments,
                ..Default::default()
            });
            return;
        }
        tracing::info!(group = %self.config.group_id, ?error, "group: JoinGroup failed");
        self.rejoin_needed = true;
        match error {
            ErrorCode::MEMBER_ID_REQUIRED => {
                // KIP-394: join again at once with the id the coordinator chose.
                self.member_id = r.member_id.to_string();
            }
            ErrorCode::UNKNOWN_MEMBER_ID => self.reset_generation(true, "JoinGroup: unknown member id"),
            ErrorCode::ILLEGAL_GENERATION => self.reset_generation(false, "JoinGroup: illegal generation"),
            ErrorCode::REBALANCE_IN_PROGRESS => {}
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS => {
                self.join_backoff.fail(now);
            }
            code if is_coordinator_error(code) => {
                self.mark_coordinator_unknown("JoinGroup: coordinator error");
                self.join_backoff.fail(now);
            }
            code if is_fatal_group_error(code) => self.fatal(code),
            _ => {
                self.join_backoff.fail(now);
            }
        }
    }

    fn perform_assignment(
        &mut self,
        protocol: &str,
        r: &JoinGroupResponse,
        assign: bool,
    ) -> Result<Vec<SyncGroupRequestAssignment>, ErrorCode> {
        let Some(assignor) = self.config.assignors.iter().find(|a| a.name() == protocol).cloned() else {
            return Err(ErrorCode::INCONSISTENT_GROUP_PROTOCOL);
        };
        let members: Vec<MemberSubscription> = r
            .members
            .iter()
            .map(|m| {
                let instance = m.group_instance_id.as_deref().map(str::to_string);
                MemberSubscription::decode(m.member_id.to_string(), instance.clone(), m.metadata.clone())
                    .unwrap_or_else(|e| {
                        tracing::warn!(member = %m.member_id, error = %e, "group: undecodable subscription");
                        let mut s = MemberSubscription::new(m.member_id.to_string(), Vec::<String>::new());
                        s.group_instance_id = instance;
                        s
                    })
            })
            .collect();
        let topics: BTreeSet<String> = members.iter().flat_map(|m| m.topics.iter().cloned()).collect();
        let partitions: BTreeMap<String, i32> =
            topics.iter().filter_map(|t| self.counts.get(t).map(|&c| (t.clone(), c))).collect();
        if !assign {
            self.leader_snapshot = Some(LeaderSnapshot { topics, counts: partitions, inherited: true });
            return Ok(Vec::new());
        }
        let result = assignor.assign(&members, &partitions);
        self.leader_snapshot = Some(LeaderSnapshot { topics, counts: partitions, inherited: false });
        self.metadata_rejoin_pending = false;
        let empty = BTreeMap::new();
        Ok(members
            .iter()
            .map(|m| SyncGroupRequestAssignment {
                member_id: bs(&m.member_id),
                // Topic names come from the members' decoded subscriptions (strings of at most
                // 32767 bytes), counts from metadata arrays, and there is no user data: this
                // always fits the consumer protocol's length prefixes.
                assignment: ConsumerProtocolAssignment::from_map(result.get(&m.member_id).unwrap_or(&empty), None)
                    .encode(CONSUMER_PROTOCOL_MAX_VERSION)
                    .expect("an assignment of decoded topic names is encodable"),
                ..Default::default()
            })
            .collect())
    }

    fn on_sync(&mut self, slot: Slot, r: SyncGroupResponse, now: Instant) {
        if slot.epoch != self.epoch {
            self.rejoin_needed = true;
            return;
        }
        if !matches!(self.lifecycle, Lifecycle::Active) {
            self.phase = Phase::Unjoined;
            return;
        }
        let mut error = r.error_code;
        let expected = self.generation.as_ref().map(|g| g.protocol.as_str());
        if error.is_ok()
            && (r.protocol_type.as_deref().is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE)
                || r.protocol_name.as_deref().is_some_and(|n| Some(n) != expected))
        {
            error = ErrorCode::INCONSISTENT_GROUP_PROTOCOL;
        }
        if error.is_ok() {
            let assignment = match decode_assignment(&r.assignment) {
                Ok(a) => a,
                Err(()) => {
                    tracing::warn!(group = %self.config.group_id, "group: undecodable assignment; rejoining");
                    self.phase = Phase::Unjoined;
                    self.generation = None;
                    self.rejoin_needed = true;
                    self.join_backoff.fail(now);
                    return;
                }
            };
            self.join_backoff.reset();
            self.phase = Phase::Stable;
            self.session_alive = slot.sent_at;
            self.phase_alive = slot.sent_at;
            // The first heartbeat renews the lease; after a long wait in the sync phase it is
            // due sooner than a heartbeat interval from now.
            let renew_by = (slot.sent_at + self.config.session_timeout)
                .checked_sub(self.config.heartbeat_interval)
                .unwrap_or(now)
                .max(now);
            self.next_heartbeat = (now + self.config.heartbeat_interval).min(renew_by);
            let generation_id = self.generation.as_ref().map_or(DEFAULT_GENERATION, |g| g.id);
            self.on_assignment(assignment, generation_id);
            if self.metadata_rejoin_pending {
                // The coordinator kept the assignment (skip_assignment) although this member
                // wanted a rebalance for new partition counts: ask again, now as a known leader.
                self.request_rejoin("partition counts changed (assignment was skipped)");
            }
            self.check_leader_metadata();
            return;
        }
        tracing::info!(group = %self.config.group_id, ?error, "group: SyncGroup failed");
        self.phase = Phase::Unjoined;
        self.generation = None;
        self.rejoin_needed = true;
        match error {
            ErrorCode::REBALANCE_IN_PROGRESS => {}
            ErrorCode::UNKNOWN_MEMBER_ID => self.reset_generation(true, "SyncGroup: unknown member id"),
            ErrorCode::ILLEGAL_GENERATION => self.reset_generation(false, "SyncGroup: illegal generation"),
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS => {
                self.join_backoff.fail(now);
            }
            code if is_coordinator_error(code) => {
                self.mark_coordinator_unknown("SyncGroup: coordinator error");
                self.join_backoff.fail(now);
            }
            code if is_fatal_group_error(code) => self.fatal(code),
            _ => {
                self.join_backoff.fail(now);
            }
        }
    }

    /// Java's `onJoinComplete`.
    fn on_assignment(&mut self, assignment: BTreeSet<Tp>, generation_id: i32) {
        if assignment.iter().any(|(t, _)| !self.subscription.contains(t)) {
            // Assigned for an older subscription: ignore it and join with the current one (the
            // partitions owned stay owned; a cooperative leader left them with us or unassigned).
            self.request_rejoin("assignment does not match the subscription");
            return;
        }
        let owned: BTreeSet<Tp> = self.assigned.iter().chain(self.revoking.iter()).cloned().collect();
        let revoked: BTreeSet<Tp> = owned.difference(&assignment).cloned().collect();
        let added: BTreeSet<Tp> = assignment.difference(&owned).cloned().collect();
        self.owned_generation = generation_id;
        if revoked.is_empty() {
            self.add_partitions(added);
            return;
        }
        // Only the cooperative protocol gets here (eager owns nothing when it joins), or an
        // eager member whose revocation was cut short by leaving.
        for tp in &revoked {
            self.assigned.remove(tp);
        }
        self.revoking.extend(revoked.iter().cloned());
        self.after_revoke = Some(AfterRevoke::Assign(added));
        self.events.push_back(GroupEvent::Revoke(revoked));
    }

    fn on_heartbeat(&mut self, slot: Slot, r: HeartbeatResponse, now: Instant) {
        let error = r.error_code;
        self.next_heartbeat = slot.sent_at + self.config.heartbeat_interval;
        let current = slot.epoch == self.epoch && self.phase == Phase::Stable;
        match error {
            ErrorCode::NONE => {
                if current {
                    self.session_alive = self.session_alive.max(slot.sent_at);
                    self.phase_alive = self.phase_alive.max(slot.sent_at);
                }
            }
            ErrorCode::REBALANCE_IN_PROGRESS => {
                if current {
                    self.session_alive = self.session_alive.max(slot.sent_at);
                    self.request_rejoin("group is rebalancing");
                }
            }
            ErrorCode::ILLEGAL_GENERATION => {
                if current {
                    self.reset_generation(false, "Heartbeat: illegal generation");
                }
            }
            ErrorCode::UNKNOWN_MEMBER_ID => {
                if current {
                    self.reset_generation(true, "Heartbeat: unknown member id");
                }
            }
            ErrorCode::FENCED_INSTANCE_ID => {
                if current {
                    self.fatal(error);
                }
            }
            ErrorCode::GROUP_AUTHORIZATION_FAILED => self.fatal(error),
            code if is_coordinator_error(code) => {
                self.mark_coordinator_unknown("Heartbeat: coordinator error");
                self.next_heartbeat = now + self.config.retry_backoff;
            }
            _ => {
                tracing::warn!(group = %self.config.group_id, ?error, "group: unexpected heartbeat error");
                self.next_heartbeat = now + self.config.retry_backoff;
            }
        }
    }

    fn on_commit(&mut self, commit_id: u64, response: GroupResponse, now: Instant) {
        let Some(c) = self.commits.get_mut(&commit_id) else {
            return;
        };
        c.in_flight = None;
        let error = match &response {
            GroupResponse::OffsetCommit(r) => r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .map(|p| p.error_code)
                .find(|e| e.is_err())
                .unwrap_or(ErrorCode::NONE),
            _ => ErrorCode::REQUEST_TIMED_OUT,
        };
        let failed_request = !matches!(response, GroupResponse::OffsetCommit(_));
        let (generation, member_id) = (c.generation, c.member_id.clone());
        let same_generation = self.current_generation().is_some_and(|g| g.id == generation && g.member_id == member_id);
        let finish = |this: &mut Self, result: Result<(), ErrorCode>| {
            this.commits.remove(&commit_id);
            this.events.push_back(GroupEvent::CommitResult { id: commit_id, result });
        };
        let retry = |this: &mut Self, now: Instant| {
            if let Some(c) = this.commits.get_mut(&commit_id) {
                c.backoff.fail(now);
            }
        };
        if failed_request || is_coordinator_error(error) || error == ErrorCode::REQUEST_TIMED_OUT {
            self.mark_coordinator_unknown("OffsetCommit: coordinator error or no answer");
            retry(self, now);
            return;
        }
        match error {
            ErrorCode::NONE => finish(self, Ok(())),
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS | ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => retry(self, now),
            ErrorCode::REBALANCE_IN_PROGRESS => {
                finish(self, Err(error));
                if same_generation {
                    self.request_rejoin("OffsetCommit: group is rebalancing");
                }
            }
            ErrorCode::ILLEGAL_GENERATION => {
                finish(self, Err(error));
                if same_generation {
                    self.reset_generation(false, "OffsetCommit: illegal generation");
                }
            }
            ErrorCode::UNKNOWN_MEMBER_ID => {
                finish(self, Err(error));
                if same_generation {
                    self.reset_generation(true, "OffsetCommit: unknown member id");
                }
            }
            ErrorCode::FENCED_INSTANCE_ID => {
                finish(self, Err(error));
                self.fatal(error);
            }
            code if code.is_retriable() => retry(self, now),
            code => finish(self, Err(code)),
        }
    }

    fn on_fetch(&mut self, partitions: BTreeSet<Tp>, response: GroupResponse, now: Instant) {
        let GroupResponse::OffsetFetch(r) = response else {
            self.mark_coordinator_unknown("OffsetFetch: no answer");
            self.fetch_queue.extend(partitions);
            return;
        };
        // v8+ answers per group, older versions at the top level.
        let (group_error, rows): (ErrorCode, Vec<FetchRow>) =
            match r.groups.iter().find(|g| &*g.group_id == self.config.group_id.as_str()).or(r.groups.first()) {
                Some(g) => (
                    g.error_code,
                    g.topics
                        .iter()
                        .flat_map(|t| {
                            t.partitions.iter().map(move |p| {
                                (
                                    (t.name.to_string(), p.partition_index),
                                    p.committed_offset,
                                    p.committed_leader_epoch,
                                    p.metadata.as_deref().map(str::to_string),
                                    p.error_code,
                                )
                            })
                        })
                        .collect(),
                ),
                None => (
                    r.error_code,
                    r.topics
                        .iter()
                        .flat_map(|t| {
                            t.partitions.iter().map(move |p| {
                                (
                                    (t.name.to_string(), p.partition_index),
                                    p.committed_offset,
                                    p.committed_leader_epoch,
                                    p.metadata.as_deref().map(str::to_string),
                                    p.error_code,
                                )
                            })
                        })
                        .collect(),
                ),
            };
        let still_ours = |tp: &Tp, this: &Self| this.assigned.contains(tp);
        if group_error.is_err() {
            let ours: BTreeSet<Tp> = partitions.into_iter().filter(|tp| still_ours(tp, self)).collect();
            if is_coordinator_error(group_error) {
                self.mark_coordinator_unknown("OffsetFetch: coordinator error");
                self.fetch_queue.extend(ours);
            } else if group_error == ErrorCode::GROUP_AUTHORIZATION_FAILED {
                self.fatal(group_error);
            } else if group_error.is_retriable() {
                // COORDINATOR_LOAD_IN_PROGRESS, UNSTABLE_OFFSET_COMMIT, ...
                self.fetch_backoff.fail(now);
                self.fetch_queue.extend(ours);
            } else {
                let failed = ours.into_iter().map(|tp| (tp, group_error)).collect();
                self.events.push_back(GroupEvent::OffsetFetchFailed(failed));
            }
            return;
        }
        let mut offsets = BTreeMap::new();
        let mut failed = BTreeMap::new();
        let mut retry = false;
        let mut seen = BTreeSet::new();
        for (tp, offset, epoch, metadata, error) in rows {
            if !partitions.contains(&tp) || !still_ours(&tp, self) {
                continue;
            }
            seen.insert(tp.clone());
            if error.is_ok() {
                offsets.insert(tp, (offset, (epoch >= 0).then_some(epoch), metadata));
            } else if error.is_retriable() {
                // UNSTABLE_OFFSET_COMMIT (a transaction's offsets are pending), loading, ...
                retry = true;
                self.fetch_queue.insert(tp);
            } else {
                failed.insert(tp, error);
            }
        }
        for tp in partitions {
            if !seen.contains(&tp) && still_ours(&tp, self) {
                offsets.insert(tp, (-1, None, None));
            }
        }
        if retry {
            self.fetch_backoff.fail(now);
        } else {
            self.fetch_backoff.reset();
        }
        if !offsets.is_empty() {
            self.events.push_back(GroupEvent::CommittedOffsets(offsets));
        }
        if !failed.is_empty() {
            self.events.push_back(GroupEvent::OffsetFetchFailed(failed));
        }
    }
}

impl std::fmt::Debug for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMember")
            .field("group_id", &self.config.group_id)
            .field("lifecycle", &self.lifecycle)
            .field("phase", &self.phase)
            .field("member_id", &self.member_id)
            .field("generation", &self.generation.as_ref().map(|g| g.id))
            .field("assigned", &self.assigned)
            .field("revoking", &self.revoking)
            .field("rejoin_needed", &self.rejoin_needed)
            .finish_non_exhaustive()
    }
}

/// One partition of an OffsetFetch answer: partition, offset, leader epoch, metadata, error.
type FetchRow = (Tp, i64, i32, Option<String>, ErrorCode);

fn duration_ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// The partitions of a SyncGroup assignment; empty bytes are an empty assignment (the leader
/// gave this member nothing).
fn decode_assignment(bytes: &Bytes) -> Result<BTreeSet<Tp>, ()> {
    if bytes.is_empty() {
        return Ok(BTreeSet::new());
    }
    let (_, assignment) = ConsumerProtocolAssignment::decode(bytes.clone()).map_err(|_| ())?;
    Ok(assignment.to_map().into_iter().flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::messages::find_coordinator::Coordinator as WireCoordinator;
    use crate::codec::messages::offset_commit::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
    use crate::proto::assignor::{CooperativeStickyAssignor, RangeAssignor};

    fn tp(t: &str, p: i32) -> Tp {
        (t.to_string(), p)
    }

    fn member(cooperative: bool, instance: Option<&str>, t0: Instant) -> GroupMember {
        let assignor: Arc<dyn Assignor + Send + Sync> =
            if cooperative { Arc::new(CooperativeStickyAssignor) } else { Arc::new(RangeAssignor) };
        let mut config = GroupConfig::new("g", vec![assignor]);
        config.group_instance_id = instance.map(str::to_string);
        let mut m = GroupMember::new(config, t0);
        m.subscribe(["t".to_string()].into(), t0);
        m.set_partition_counts([("t".to_string(), 4)].into(), t0);
        m
    }

    fn expect(m: &mut GroupMember, now: Instant) -> (RequestId, Target, GroupRequest) {
        m.poll_request(now).expect("a request")
    }

    fn find(m: &mut GroupMember, now: Instant) {
        let (id, target, req) = expect(m, now);
        assert_eq!(target, Target::AnyBroker);
        let GroupRequest::FindCoordinator(r) = req else { panic!("{req:?}") };
        assert_eq!(&*r.key, "g");
        assert_eq!(r.coordinator_keys.len(), 1);
        let resp = FindCoordinatorResponse {
            coordinators: vec![WireCoordinator {
                key: bs("g"),
                node_id: 7,
                host: bs("h"),
                port: 9092,
                ..Default::default()
            }],
            ..Default::default()
        };
        m.handle_response(id, GroupResponse::FindCoordinator(resp), now);
        assert_eq!(m.coordinator(), Some((7, "h".to_string(), 9092)));
    }

    fn assignment(parts: &[i32]) -> Bytes {
        let map: BTreeMap<String, Vec<i32>> = [("t".to_string(), parts.to_vec())].into();
        ConsumerProtocolAssignment::from_map(&map, None).encode(CONSUMER_PROTOCOL_MAX_VERSION).unwrap()
    }

    /// Joins as a follower of generation `generation` and syncs `parts`.
    fn join_and_sync(m: &mut GroupMember, generation: i32, parts: &[i32], now: Instant) {
        let (id, _, req) = expect(m, now);
        let GroupRequest::JoinGroup(_) = req else { panic!("{req:?}") };
        let resp = JoinGroupResponse {
            generation_id: generation,
            protocol_type: Some(bs("consumer")),
            protocol_name: Some(bs(m.config.assignors[0].name())),
            leader: bs("someone-else"),
            member_id: bs("m-1"),
            ..Default::default()
        };
        m.handle_response(id, GroupResponse::JoinGroup(resp), now);
        let (id, _, req) = expect(m, now);
        let GroupRequest::SyncGroup(r) = req else { panic!("{req:?}") };
        assert_eq!(r.generation_id, generation);
        assert!(r.assignments.is_empty(), "a follower sends no assignments");
        let resp = SyncGroupResponse {
            protocol_type: Some(bs("consumer")),
            protocol_name: Some(bs(m.config.assignors[0].name())),
            assignment: assignment(parts),
            ..Default::default()
        };
        m.handle_response(id, GroupResponse::SyncGroup(resp), now);
    }

    #[test]
    fn member_id_required_then_join_with_it() {
        let t0 = Instant::now();
        let mut m = member(false, None, t0);
        find(&mut m, t0);
        let (id, target, req) = expect(&mut m, t0);
        assert_eq!(target, Target::Coordinator(7));
        let GroupRequest::JoinGroup(r) = req else { panic!("{req:?}") };
        assert_eq!(&*r.member_id, "");
        assert_eq!(&*r.protocol_type, "consumer");
        assert_eq!(r.protocols.len(), 1);
        assert_eq!(&*r.protocols[0].name, "range");
        assert_eq!(r.rebalance_timeout_ms, 300_000);
        let resp =
            JoinGroupResponse { error_code: ErrorCode::MEMBER_ID_REQUIRED, member_id: bs("m-1"), ..Default::default() };
        m.handle_response(id, GroupResponse::JoinGroup(resp), t0);
        let (_, _, req) = expect(&mut m, t0);
        let GroupRequest::JoinGroup(r) = req else { panic!("{req:?}") };
        assert_eq!(&*r.member_id, "m-1", "KIP-394: rejoin at once with the given id");
    }

    #[test]
    fn commit_without_generation_fails_at_once_and_is_not_sent() {
        let t0 = Instant::now();
        let mut m = member(false, None, t0);
        let id = m.commit([(tp("t", 0), (5, None))].into(), t0);
        assert_eq!(
            m.poll_event(),
            Some(GroupEvent::CommitResult { id, result: Err(ErrorCode::REBALANCE_IN_PROGRESS) })
        );
        find(&mut m, t0);
        while let Some((_, _, req)) = m.poll_request(t0) {
            assert!(!matches!(req, GroupRequest::OffsetCommit(_)));
        }
    }

    #[test]
    fn commit_carries_generation_member_and_instance() {
        let t0 = Instant::now();
        let mut m = member(false, Some("i-1"), t0);
        find(&mut m, t0);
        join_and_sync(&mut m, 3, &[0, 1], t0);
        assert_eq!(m.poll_event(), Some(GroupEvent::Assigned([tp("t", 0), tp("t", 1)].into())));
        assert!(m.is_stable());
        let (_, _, req) = expect(&mut m, t0);
        assert!(matches!(req, GroupRequest::OffsetFetch(ref r) if r.require_stable));
        m.commit([(tp("t", 0), (5, Some(2)))].into(), t0);
        let (_, _, req) = expect(&mut m, t0);
        let GroupRequest::OffsetCommit(r) = req else { panic!("{req:?}") };
        assert_eq!(r.generation_id_or_member_epoch, 3);
        assert_eq!(&*r.member_id, "m-1");
        assert_eq!(r.group_instance_id.as_deref(), Some("i-1"));
        assert_eq!(r.topics[0].partitions[0].committed_leader_epoch, 2);
    }

    /// Retries back off exponentially with KIP-580's ±20 % jitter, drawn from
    /// `backoff_seed`: the same seed gives the same delays, another seed others (members failed
    /// by the same event spread out).
    #[test]
    fn retries_back_off_with_jitter_drawn_from_the_seed() {
        let t0 = Instant::now();
        let within = |d: Duration, term_ms: u64| {
            let ms = d.as_secs_f64() * 1000.0;
            let (lo, hi) = ((term_ms as f64 * 0.8).min(1000.0), (term_ms as f64 * 1.2).min(1000.0));
            assert!(ms >= lo - 1e-3 && ms <= hi + 1e-3, "{ms} ms for a term of {term_ms} ms");
        };
        let find_delays = |seed: u64| -> Vec<Duration> {
            let mut config = GroupConfig::new("g", vec![Arc::new(RangeAssignor)]);
            config.backoff_seed = Some(seed);
            let mut m = GroupMember::new(config, t0);
            m.subscribe(["t".to_string()].into(), t0);
            let mut now = t0;
            (0..6)
                .map(|_| {
                    let (id, target, _) = expect(&mut m, now);
                    assert_eq!(target, Target::AnyBroker);
                    m.handle_response(id, GroupResponse::Failed { kind: RequestKind::FIND_COORDINATOR }, now);
                    assert!(m.poll_request(now).is_none(), "no FindCoordinator before the backoff");
                    let at = m.next_timeout().expect("the retry");
                    let delay = at - now;
                    now = at;
                    delay
                })
                .collect()
        };
        let delays = find_delays(1);
        for (&d, term) in delays.iter().zip([100, 200, 400, 800, 1600, 3200]) {
            within(d, term);
        }
        assert_eq!(delays, find_delays(1));
        assert_ne!(delays, find_delays(2));

        // A commit's retries have their own backoff.
        let mut m = member(false, None, t0);
        find(&mut m, t0);
        join_and_sync(&mut m, 1, &[0], t0);
        let (_, _, req) = expect(&mut m, t0);
        assert!(matches!(req, GroupRequest::OffsetFetch(_)), "{req:?}");
        m.commit([(tp("t", 0), (5, None))].into(), t0);
        let (id, _, req) = expect(&mut m, t0);
        assert!(matches!(req, GroupRequest::OffsetCommit(_)), "{req:?}");
        let partitions = vec![OffsetCommitResponsePartition {
            partition_index: 0,
            error_code: ErrorCode::COORDINATOR_LOAD_IN_PROGRESS,
            ..Default::default()
        }];
        let resp = OffsetCommitResponse {
            topics: vec![OffsetCommitResponseTopic { name: bs("t"), partitions, ..Default::default() }],
            ..Default::default()
        };
        m.handle_response(id, GroupResponse::OffsetCommit(resp), t0);
        let at = m.next_timeout().expect("the commit's retry");
        within(at - t0, 100);
        assert!(m.poll_request(at - Duration::from_millis(1)).is_none(), "no retry before the backoff");
        let (_, _, req) = expect(&mut m, at);
        assert!(matches!(req, GroupRequest::OffsetCommit(_)), "{req:?}");
    }

    #[test]
    fn cooperative_revokes_first_then_assigns_then_rejoins() {
        let t0 = Instant::now();
        let mut m = member(true, None, t0);
        find(&mut m, t0);
        join_and_sync(&mut m, 1, &[0, 1], t0);
        assert_eq!(m.poll_event(), Some(GroupEvent::Assigned([tp("t", 0), tp("t", 1)].into())));
        let _fetch = expect(&mut m, t0);
        // A rebalance: the member keeps its partitions through the JoinGroup ...
        let t1 = t0 + Duration::from_secs(3);
        let (id, _, req) = expect(&mut m, t1);
        let GroupRequest::Heartbeat(_) = req else { panic!("{req:?}") };
        let resp = HeartbeatResponse { error_code: ErrorCode::REBALANCE_IN_PROGRESS, ..Default::default() };
        m.handle_response(id, GroupResponse::Heartbeat(resp), t1);
        assert_eq!(m.poll_event(), None, "cooperative: nothing revoked before the join");
        // ... and loses partition 1, gains 2.
        join_and_sync(&mut m, 2, &[0, 2], t1);
        assert_eq!(m.poll_event(), Some(GroupEvent::Revoke([tp("t", 1)].into())));
        assert_eq!(m.poll_event(), None, "nothing assigned before the revocation is done");
        assert_eq!(m.assignment(), &BTreeSet::from([tp("t", 0)]));
        assert!(m.generation().is_some(), "commits still possible while revoking");
        m.revocation_done(t1);
        assert_eq!(m.poll_event(), Some(GroupEvent::Assigned([tp("t", 2)].into())));
        let mut joined = false;
        while let Some((_, _, req)) = m.poll_request(t1) {
            joined |= matches!(req, GroupRequest::JoinGroup(_));
        }
        assert!(joined, "the follow-up rebalance after a revocation");
    }

    /// Found by the classic group simulation (seed 65, cooperative, `SIM_SEEDS=150`): `leave()`
    /// while a cooperative revocation was under way queued a second Revoke at once, and the
    /// application's `revocation_done` for the first one — called before it had seen the
    /// second — released both: the member left before the application committed the offsets
    /// of the partitions of the second Revoke.
    #[test]
    fn regression_leave_during_a_revocation_revokes_the_rest_after_it() {
        let t0 = Instant::now();
        let mut m = member(true, None, t0);
        find(&mut m, t0);
        join_and_sync(&mut m, 1, &[0, 1, 2], t0);
        assert!(matches!(m.poll_event(), Some(GroupEvent::Assigned(_))));
        let _fetch = expect(&mut m, t0);
        let t1 = t0 + Duration::from_secs(3);
        let (id, _, req) = expect(&mut m, t1);
        let GroupRequest::Heartbeat(_) = req else { panic!("{req:?}") };
        let resp = HeartbeatResponse { error_code: ErrorCode::REBALANCE_IN_PROGRESS, ..Default::default() };
        m.handle_response(id, GroupResponse::Heartbeat(resp), t1);
        join_and_sync(&mut m, 2, &[0, 1], t1);
        assert_eq!(m.poll_event(), Some(GroupEvent::Revoke([tp("t", 2)].into())));
        // The application closes the consumer while it handles that revocation.
        m.leave(t1);
        assert_eq!(m.poll_event(), None, "one Revoke at a time");
        assert_eq!(m.assignment(), &BTreeSet::from([tp("t", 0), tp("t", 1)]));
        // Done with partition 2 only: 0 and 1 are revoked now, and still the application's.
        m.revocation_done(t1);
        assert_eq!(m.pending_revocation(), &BTreeSet::from([tp("t", 0), tp("t", 1)]));
        assert!(m.assignment().is_empty());
        assert_eq!(m.poll_event(), Some(GroupEvent::Revoke([tp("t", 0), tp("t", 1)].into())));
        assert!(!m.has_left());
        // Their offsets are committed with the generation before the member leaves.
        m.commit([(tp("t", 0), (5, None)), (tp("t", 1), (6, None))].into(), t1);
        let (id, _, req) = expect(&mut m, t1);
        let GroupRequest::OffsetCommit(r) = req else { panic!("{req:?}") };
        assert_eq!(r.generation_id_or_member_epoch, 2);
        assert!(m.poll_request(t1).is_none(), "no LeaveGroup before the revocation is done");
        let partitions =
            [0, 1].map(|p| OffsetCommitResponsePartition { partition_index: p, ..Default::default() }).to_vec();
        let resp = OffsetCommitResponse {
            topics: vec![OffsetCommitResponseTopic { name: bs("t"), partitions, ..Default::default() }],
            ..Default::default()
        };
        m.handle_response(id, GroupResponse::OffsetCommit(resp), t1);
        assert!(matches!(m.poll_event(), Some(GroupEvent::CommitResult { result: Ok(()), .. })));
        m.revocation_done(t1);
        let (_, _, req) = expect(&mut m, t1);
        assert!(matches!(req, GroupRequest::LeaveGroup(_)), "{req:?}");
        assert!(m.has_left());
    }

    #[test]
    fn illegal_generation_loses_partitions_and_keeps_member_id() {
        let t0 = Instant::now();
        let mut m = member(false, None, t0);
        find(&mut m, t0);
        join_and_sync(&mut m, 1, &[0], t0);
        assert!(matches!(m.poll_event(), Some(GroupEvent::Assigned(_))));
        let _fetch = expect(&mut m, t0);
        let t1 = t0 + Duration::from_secs(3);
        let (id, _, _) = expect(&mut m, t1);
        let resp = HeartbeatResponse { error_code: ErrorCode::ILLEGAL_GENERATION, ..Default::default() };
        m.handle_response(id, GroupResponse::Heartbeat(resp), t1);
        assert_eq!(m.poll_event(), Some(GroupEvent::Lost([tp("t", 0)].into())));
        assert_eq!(m.generation(), None);
        // Taken off the queue is not handled: no JoinGroup, and no wake-up that would spin.
        assert_eq!(m.poll_request(t1), None, "no rejoin before the application handled the loss");
        assert!(m.next_timeout().is_none_or(|t| t > t1), "{:?}", m.next_timeout());
        m.lost_handled(t1);
        let (_, _, req) = expect(&mut m, t1);
        let GroupRequest::JoinGroup(r) = req else { panic!("{req:?}") };
        assert_eq!(&*r.member_id, "m-1");
    }

    #[test]
    fn eager_revokes_everything_before_joining() {
        let t0 = Instant::now();
        let mut m = member(false, None, t0);
        find(&mut m, t0);
        join_and_sync(&mut m, 1, &[0, 1], t0);
        assert!(matches!(m.poll_event(), Some(GroupEvent::Assigned(_))));
        let _fetch = expect(&mut m, t0);
        m.subscribe(["t".to_string(), "u".to_string()].into(), t0);
        assert!(m.poll_request(t0).is_none(), "no JoinGroup before the revocation");
        assert_eq!(m.poll_event(), Some(GroupEvent::Revoke([tp("t", 0), tp("t", 1)].into())));
        assert!(m.poll_request(t0).is_none());
        m.revocation_done(t0);
        let (_, _, req) = expect(&mut m, t0);
        assert!(matches!(req, GroupRequest::JoinGroup(_)));
    }

    #[test]
    fn session_without_heartbeat_answers_loses_partitions() {
        let t0 = Instant::now();
        let mut m = member(true, None, t0);
        find(&mut m, t0);
        join_and_sync(&mut m, 1, &[0], t0);
        assert!(matches!(m.poll_event(), Some(GroupEvent::Assigned(_))));
        let _fetch = expect(&mut m, t0);
        // Heartbeats go out and are never answered.
        let mut now = t0;
        let end = t0 + Duration::from_secs(46);
        while now < end {
            now = m.next_timeout().expect("a timer").max(now + Duration::from_millis(1));
            let _ = m.poll_request(now);
            if let Some(ev) = m.poll_event() {
                assert_eq!(ev, GroupEvent::Lost([tp("t", 0)].into()));
                assert!(now <= t0 + Duration::from_secs(45));
                return;
            }
        }
        panic!("partitions not lost within the session timeout");
    }
}
