//! One member of a consumer group of the next-generation protocol (KIP-848, `group.protocol=
//! consumer`, Kafka 4.x), sans IO: coordinator discovery, ConsumerGroupHeartbeat with
//! server-side assignment, reconciliation of the assignment the coordinator hands out, static
//! membership, offset commits and fetches carrying the member epoch. Time comes in as an
//! argument; nothing here does IO.
//!
//! Like [`crate::proto::group::GroupMember`] (the classic protocol) it implements [`Member`], so
//! that one driver runs either: call [`Member::poll_request`] until it returns `None` and send
//! what it returns, feed every answer — or `Failed` when a request got none — to
//! [`Member::handle_response`], hand the events of [`Member::poll_event`] to the application, and
//! wake up again at [`Member::next_timeout`] or when something arrives. Requests, answers, events
//! and partitions are the classic module's [`GroupRequest`], [`GroupResponse`], [`GroupEvent`] and
//! [`Tp`]; ids and targets are [`crate::proto::driving`]'s.
//!
//! # Membership
//!
//! ```text
//!   subscribe ──► heartbeat, epoch 0, full subscription, topic_partitions = [] (the join)
//!                   │ NONE: the member epoch and the assignment
//!                   ▼
//!   in the group (epoch > 0): a heartbeat every heartbeat_interval_ms (the coordinator's),
//!   and at once when the owned partitions or the subscription changed (the acknowledgement).
//!   Fields the coordinator already has are sent as null; after any failure or error the next
//!   heartbeat is a full one again.
//!
//!   FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID, a lapsed lease ──► Lost; once the application
//!   has handled it (lost_handled), join again with epoch 0 and the same member id
//!   poll_called missing for rebalance_timeout ──► Lost, leave (-1, static -2); joins again at
//!   the next poll_called
//!   leave() ──► Revoke, revocation_done, commits settle ──► heartbeat with epoch -1 (dynamic)
//!   or -2 (static: the coordinator keeps the assignment for the instance id) ──► left
//!   UNRELEASED_INSTANCE_ID, FENCED_INSTANCE_ID, GROUP_AUTHORIZATION_FAILED,
//!   UNSUPPORTED_ASSIGNOR, INVALID_REQUEST, GROUP_MAX_SIZE_REACHED, UNSUPPORTED_VERSION ──► Fatal
//! ```
//!
//! As for the classic member (see *Losses wait for the application* in
//! [`crate::proto::group`], which also gives the reasons), a member that lost its partitions
//! does not join again until [`ConsumerGroupMember::lost_handled`]: until then it has no member
//! epoch, so the application cannot commit, in a transaction or not, records of the lost
//! membership with a new one, and no new assignment moves its positions.
//!
//! The member id is the client's (KIP-1082, ConsumerGroupHeartbeat v1+ requires it): a random
//! UUID made once per member, kept across rejoins. Set
//! [`ConsumerGroupConfig::member_id`] to `Some("")` to let a v0 coordinator choose it; whatever
//! id an answer carries is adopted.
//!
//! # Reconciliation
//!
//! The assignment in an answer (when not null) is what the coordinator wants the member to own
//! now, by topic id. Partitions owned but not in it are revoked first ([`GroupEvent::Revoke`],
//! then [`ConsumerGroupMember::revocation_done`]); partitions in it and not owned are taken at
//! once ([`GroupEvent::Assigned`], committed offsets fetched like the classic member does): the
//! coordinator hands a partition to a member only after its previous owner released it. Each
//! change of the owned set is acknowledged with the next heartbeat (`topic_partitions`), which is
//! how the coordinator learns that a partition was released; after every new assignment the owned
//! partitions are stated explicitly (a null `topic_partitions` makes the coordinator assume the
//! member owns all it was assigned, including what it could not take yet). Topic ids are
//! resolved with the names given to [`ConsumerGroupMember::set_topic_names`]; partitions of ids
//! not known yet wait (see [`ConsumerGroupMember::unresolved_topic_ids`]).
//!
//! Partitions are taken only from an assignment the coordinator cannot have changed since: not
//! while a heartbeat is unanswered (its report may have let the coordinator free them). So
//! partitions whose names arrive late, or that wait for a revocation, are taken with the answer
//! of the next heartbeat if one is in flight. Only one `Revoke` is outstanding at a time; a
//! `leave()` during a revocation revokes the rest once [`ConsumerGroupMember::revocation_done`]
//! is called. The answer to a heartbeat abandoned when the coordinator was marked unknown is still
//! used if it arrives before the next heartbeat is sent.
//!
//! # Leases
//!
//! The coordinator removes a member it has not heard from for its session timeout (a broker
//! setting, 45 s by default; [`ConsumerGroupConfig::session_timeout`] must not exceed it), and a
//! member that does not acknowledge a revocation within its rebalance timeout; their partitions
//! then go to other members. So the member gives up everything as [`GroupEvent::Lost`] — before
//! the coordinator can have moved anything — when `session_timeout` has passed since the sending
//! of the last heartbeat answered NONE, or when `rebalance_timeout` has passed since the
//! coordinator may have started waiting for a revocation (the sending of the first heartbeat
//! after the last answered one) without an answered heartbeat that released the partitions.
//!
//! # Commits
//!
//! [`ConsumerGroupMember::commit`] is accepted while the member is in the group (epoch > 0).
//! The OffsetCommit carries the member id and the member epoch current when it is sent; a commit
//! taken in one membership is never sent in a later one (after a fence or a lapsed lease it fails
//! with STALE_MEMBER_EPOCH). A STALE_MEMBER_EPOCH answer while the member is still in the same
//! membership means the coordinator moved it to a newer epoch than the commit carried (its
//! heartbeat answer crossed the commit): the commit is sent again once the member knows a newer
//! epoch, as Java's consumer does, and fails if none comes within the session timeout. The
//! acknowledgement that releases partitions waits until the commits pending are answered, so the
//! offsets of revoked partitions are stored before their next owner fetches them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use bytestring::ByteString;

use crate::codec::messages::consumer_group_heartbeat::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, TopicPartitions,
};
use crate::codec::messages::offset_commit::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use crate::codec::messages::offset_fetch::{
    OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use crate::codec::messages::FindCoordinatorRequest;
use crate::codec::{ErrorCode, Uuid};

use super::assignor::RebalanceProtocol;
use super::backoff::Backoff;
use super::driving::{RequestId, Target};
use super::group::{CommittedOffset, GroupEvent, GroupRequest, GroupResponse, Member, Tp};

/// The member epoch of a (re)join.
pub const JOIN_GROUP_MEMBER_EPOCH: i32 = 0;
/// The member epoch of a dynamic member's leave: the coordinator removes it.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// The member epoch of a static member's leave: the coordinator keeps its assignment for the
/// instance id until the session timeout.
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// The member's settings.
#[derive(Clone, Debug)]
pub struct ConsumerGroupConfig {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id`: makes this a static member.
    pub group_instance_id: Option<String>,
    /// `None`: a random UUID (KIP-1082, what ConsumerGroupHeartbeat v1+ requires). `Some("")`:
    /// the coordinator chooses one (v0 only). `Some(id)`: this id.
    pub member_id: Option<String>,
    /// The local lease: partitions are given up as Lost this long after the last heartbeat the
    /// coordinator confirmed. At most the coordinator's `group.consumer.session.timeout.ms`.
    pub session_timeout: Duration,
    /// Sent as `rebalance_timeout_ms` (how long the member may take to revoke); also the
    /// member's `max.poll.interval.ms`.
    pub rebalance_timeout: Duration,
    /// Used until the coordinator says `heartbeat_interval_ms`.
    pub heartbeat_interval: Duration,
    /// `group.remote.assignor`: a server-side assignor by name (`uniform`, `range`); `None` for
    /// the coordinator's default.
    pub server_assignor: Option<String>,
    /// `client.rack`.
    pub rack: Option<String>,
    /// `retry.backoff.ms`: first backoff before a failed request is retried.
    pub retry_backoff: Duration,
    /// `retry.backoff.max.ms`: cap of the exponential backoff (KIP-580).
    pub retry_backoff_max: Duration,
    /// Seeds the jitter of the retry backoffs: the same seed, the same delays (simulations).
    /// `None`: a random seed.
    pub backoff_seed: Option<u64>,
}

impl ConsumerGroupConfig {
    /// Java's defaults: session 45 s (the broker's default), max.poll.interval 300 s, heartbeat
    /// 5 s until the coordinator says, backoff 100 ms up to 1 s, the coordinator's assignor.
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            group_instance_id: None,
            member_id: None,
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(5),
            server_assignor: None,
            rack: None,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            backoff_seed: None,
        }
    }
}

type IdTp = (Uuid, i32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Active,
    /// `rebalance_timeout` passed without `poll_called`: the member left; it joins again at the
    /// next `poll_called`.
    PollExpired,
    /// `leave()` was called: revoking, then the leave heartbeat with this epoch.
    Leaving {
        epoch: i32,
    },
    Left,
    Fatal(ErrorCode),
}

/// The one ConsumerGroupHeartbeat in flight (leaves are not tracked).
#[derive(Clone, Debug)]
struct Slot {
    id: RequestId,
    sent_at: Instant,
    /// `ConsumerGroupMember::incarnation` when sent: answers about an older membership are
    /// ignored.
    incarnation: u64,
    /// The owned partitions this heartbeat stands for (sent, or unchanged and sent as null).
    reported: BTreeSet<IdTp>,
    /// `topic_partitions` was sent (not null). A null one makes the coordinator assume that the
    /// member still owns everything it was assigned.
    explicit: bool,
}

/// What the coordinator has been told (fields it has are sent as null).
#[derive(Clone, Debug, PartialEq)]
struct SentFields {
    subscription: BTreeSet<String>,
    owned: BTreeSet<IdTp>,
}

#[derive(Clone, Debug)]
struct PendingCommit {
    offsets: BTreeMap<Tp, (i64, Option<i32>)>,
    /// The membership it was taken in.
    incarnation: u64,
    in_flight: Option<RequestId>,
    backoff: Backoff,
    /// The member epoch it was last sent with.
    sent_epoch: i32,
    /// After a STALE_MEMBER_EPOCH answer in the same membership: until when it waits for the
    /// member to learn an epoch other than `sent_epoch`.
    stale_until: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Coordinator {
    node_id: i32,
    host: String,
    port: i32,
}

/// The sans-IO state machine of one member of a KIP-848 consumer group. See the module
/// documentation.
pub struct ConsumerGroupMember {
    config: ConsumerGroupConfig,
    now: Instant,
    next_id: u64,

    subscription: BTreeSet<String>,
    subscribed: bool,
    names: BTreeMap<Uuid, String>,

    coordinator: Option<Coordinator>,
    find_in_flight: Option<RequestId>,
    coordinator_backoff: Backoff,

    lifecycle: Lifecycle,
    member_id: String,
    /// The member epoch; 0 while not in the group.
    epoch: i32,
    /// Counts memberships: bumped whenever the member stops being in the group.
    incarnation: u64,
    /// A join was sent in this membership: the coordinator may know the member.
    joined: bool,
    /// A static member that lost its membership: it sends a -2 heartbeat before it joins again,
    /// so the coordinator releases the instance id (else the join is UNRELEASED_INSTANCE_ID).
    release_instance: bool,
    slot: Option<Slot>,
    /// The heartbeat in flight when the coordinator was marked unknown: its answer, if it still
    /// comes and no heartbeat was sent since, is the coordinator's latest word and is used.
    abandoned: Option<Slot>,
    /// The id of the last heartbeat sent (not leaves).
    last_heartbeat: Option<RequestId>,
    /// The last heartbeat sent has not been answered: the coordinator may have changed the
    /// assignment since the last answer, so nothing new is taken until it is.
    heartbeat_unconfirmed: bool,
    heartbeat_backoff: Backoff,
    heartbeat_interval: Duration,
    next_heartbeat: Instant,
    sent: Option<SentFields>,
    /// The owned partitions of the last heartbeat answered NONE.
    acked_owned: BTreeSet<IdTp>,
    /// When the first heartbeat after the last one answered NONE was sent.
    first_unanswered: Option<Instant>,
    /// Partitions the coordinator may be waiting for the member to release, and by when.
    revoke_demand: Option<(BTreeSet<IdTp>, Instant)>,
    /// When the last heartbeat answered NONE was sent.
    session_alive: Option<Instant>,
    /// The assignment of the last answer that had one.
    target: Option<BTreeSet<IdTp>>,
    /// The assignment changed: the next heartbeat (at once) states the owned partitions even if
    /// they did not change, so that the coordinator sees what was never taken (unresolved
    /// topic ids) is not owned.
    restate_owned: bool,

    assigned: BTreeSet<Tp>,
    revoking: BTreeSet<Tp>,
    /// The topic id each owned topic was assigned under.
    owned_topic_ids: BTreeMap<String, Uuid>,
    revocation_pending: bool,

    last_poll: Instant,

    commits: BTreeMap<u64, PendingCommit>,
    /// Per partition, the id of the latest commit that holds it: an older commit (a retry)
    /// never sends it after that, so a committed offset never goes back to an earlier one.
    latest_commit: BTreeMap<Tp, u64>,
    commit_requests: BTreeMap<RequestId, u64>,
    fetch_queue: BTreeSet<Tp>,
    fetch_backoff: Backoff,
    fetch_requests: BTreeMap<RequestId, BTreeSet<Tp>>,
    /// Leave and release heartbeats, sent without waiting for the answer.
    out_of_band: VecDeque<ConsumerGroupHeartbeatRequest>,

    events: VecDeque<GroupEvent>,
    /// A [`GroupEvent::Lost`] was queued and [`ConsumerGroupMember::lost_handled`] not called
    /// since: no join until it is.
    loss_unhandled: bool,
}

fn bs(s: &str) -> ByteString {
    ByteString::from(s)
}

fn duration_ms(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

fn is_coordinator_error(code: ErrorCode) -> bool {
    code == ErrorCode::COORDINATOR_NOT_AVAILABLE || code == ErrorCode::NOT_COORDINATOR
}

fn is_fatal_heartbeat_error(code: ErrorCode) -> bool {
    [
        ErrorCode::UNRELEASED_INSTANCE_ID,
        ErrorCode::FENCED_INSTANCE_ID,
        ErrorCode::GROUP_AUTHORIZATION_FAILED,
        ErrorCode::UNSUPPORTED_ASSIGNOR,
        ErrorCode::INVALID_REQUEST,
        ErrorCode::GROUP_MAX_SIZE_REACHED,
        ErrorCode::UNSUPPORTED_VERSION,
    ]
    .contains(&code)
}

/// A random UUID (version 4) in Kafka's form: 22 characters of URL-safe base64, not starting
/// with '-' (as Java's `Uuid.randomUuid`).
fn random_member_id() -> String {
    let state = RandomState::new();
    let a = state.hash_one(0x6b61_666b_615f_6964_u64);
    let b = state.hash_one(a ^ 0x9e37_79b9_7f4a_7c15);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    if bytes[0] >> 2 == 62 {
        bytes[0] &= 0x7f;
    }
    Uuid(bytes).to_string()
}

fn encode_partitions(owned: &BTreeSet<IdTp>) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for (id, p) in owned {
        by_topic.entry(*id).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(topic_id, partitions)| TopicPartitions { topic_id, partitions, ..Default::default() })
        .collect()
}

impl Member for ConsumerGroupMember {
    /// Always cooperative: partitions move one by one, each revoked before it is reassigned.
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
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
    /// [`ConsumerGroupMember::revocation_done`].
    fn pending_revocation(&self) -> &BTreeSet<Tp> {
        &self.revoking
    }

    /// (member epoch, member id) while the member is in the group (the classic member's
    /// generation). Commits sent carry the epoch current when they are sent.
    fn generation(&self) -> Option<(i32, String)> {
        self.in_group().then(|| (self.epoch, self.member_id.clone()))
    }

    /// The member id (the client's UUID, or the one the coordinator answered with).
    fn member_id(&self) -> &str {
        &self.member_id
    }

    /// In the group and reconciled: the owned partitions are the whole assignment of the last
    /// answer, the coordinator has acknowledged them and the subscription, nothing is pending
    /// revocation or unresolved.
    fn is_stable(&self) -> bool {
        if self.lifecycle != Lifecycle::Active || self.epoch <= 0 || self.revocation_pending {
            return false;
        }
        let Some(target) = &self.target else {
            return false;
        };
        let owned = self.owned_ids();
        &owned == target
            && self.acked_owned == owned
            && self.revoke_demand.is_none()
            && !self.restate_owned
            && self.sent.as_ref().is_some_and(|s| s.owned == owned && s.subscription == self.subscription)
    }

    /// There is no leader in this protocol (the coordinator assigns): always false.
    fn is_leader(&self) -> bool {
        false
    }

    /// The error that stopped the member, if any.
    fn fatal_error(&self) -> Option<ErrorCode> {
        match self.lifecycle {
            Lifecycle::Fatal(code) => Some(code),
            _ => None,
        }
    }

    /// After [`ConsumerGroupMember::leave`]: true once the member is out of the group (the
    /// leave heartbeat handed out, if one was due) and no commit is pending.
    fn has_left(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Left | Lifecycle::Fatal(_))
            && self.out_of_band.is_empty()
            && self.commits.is_empty()
    }

    /// Topics whose ids the driver should keep up to date with
    /// [`ConsumerGroupMember::set_topic_names`]: the subscription.
    fn metadata_topics(&self) -> BTreeSet<String> {
        self.subscription.clone()
    }

    /// Sets the subscription; the next heartbeat (sent at once) carries it. The coordinator
    /// computes a new assignment; partitions of topics left are revoked when it says so.
    fn subscribe(&mut self, topics: BTreeSet<String>, now: Instant) {
        self.now = now;
        if self.subscribed && topics == self.subscription {
            return;
        }
        self.subscription = topics;
        self.subscribed = true;
    }

    /// Topic id → name, from metadata (at least for [`ConsumerGroupMember::metadata_topics`]
    /// and [`ConsumerGroupMember::unresolved_topic_ids`]). Added to those already known;
    /// partitions waiting for a name are taken.
    fn set_topic_names(&mut self, names: BTreeMap<Uuid, String>, now: Instant) {
        self.now = now;
        let before = self.names.len();
        for (id, name) in names {
            if id != Uuid::ZERO && !name.is_empty() {
                self.names.insert(id, name);
            }
        }
        if self.names.len() != before {
            self.reconcile();
        }
    }

    /// Ignored: the coordinator assigns, and notices partition count changes itself. (Here so
    /// that a driver can treat both member types alike.)
    fn set_partition_counts(&mut self, _counts: BTreeMap<String, i32>, now: Instant) {
        self.now = now;
    }

    /// The application polled: resets the `max.poll.interval` timer (`rebalance_timeout`).
    fn poll_called(&mut self, now: Instant) {
        self.now = now;
        self.last_poll = now;
        if self.lifecycle == Lifecycle::PollExpired {
            tracing::info!(group = %self.config.group_id, "consumer group: polled again; rejoining");
            self.lifecycle = Lifecycle::Active;
        }
    }

    /// The application is done with the partitions of the last [`GroupEvent::Revoke`] (and has
    /// committed what it wanted to commit). The next heartbeat tells the coordinator.
    fn revocation_done(&mut self, now: Instant) {
        self.now = now;
        if !self.revocation_pending {
            return;
        }
        self.revoking.clear();
        self.revocation_pending = false;
        if let Lifecycle::Leaving { .. } = self.lifecycle {
            self.revoke_rest_for_leave();
        }
        self.forget_unowned_topic_ids();
        self.reconcile();
    }

    /// The application has stopped using the partitions of the last [`GroupEvent::Lost`]; the
    /// member may join again (it does not before).
    fn lost_handled(&mut self, now: Instant) {
        self.now = now;
        self.loss_unhandled = false;
    }

    /// Whether a [`GroupEvent::Lost`] waits for [`ConsumerGroupMember::lost_handled`].
    fn loss_unhandled(&self) -> bool {
        self.loss_unhandled
    }

    /// Commits offsets (offset, leader epoch) as this member. The outcome comes as
    /// [`GroupEvent::CommitResult`] with the returned id: REBALANCE_IN_PROGRESS while the member
    /// is (re)joining, UNKNOWN_MEMBER_ID when it is not a member, STALE_MEMBER_EPOCH when its
    /// membership ended before the commit could be sent or the coordinator had a newer epoch.
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
        let allowed = self.epoch > 0
            && match self.lifecycle {
                Lifecycle::Active => true,
                Lifecycle::Leaving { .. } => self.revocation_pending,
                _ => false,
            };
        if !allowed {
            let code = if self.lifecycle == Lifecycle::Active && self.subscribed {
                ErrorCode::REBALANCE_IN_PROGRESS
            } else {
                ErrorCode::UNKNOWN_MEMBER_ID
            };
            self.events.push_back(GroupEvent::CommitResult { id, result: Err(code) });
            return id;
        }
        for tp in offsets.keys() {
            self.latest_commit.insert(tp.clone(), id);
        }
        self.commits.insert(
            id,
            PendingCommit {
                offsets,
                incarnation: self.incarnation,
                in_flight: None,
                // Streams 0-2 are the member's own backoffs; commit ids start at 1.
                backoff: Self::backoff(&self.config, 2 + id),
                sent_epoch: 0,
                stale_until: None,
            },
        );
        id
    }

    /// Leaves the group: revokes the partitions (wait for [`GroupEvent::Revoke`] and call
    /// [`ConsumerGroupMember::revocation_done`]), then sends a heartbeat with epoch -1 — or -2
    /// for a static member, whose assignment the coordinator then keeps for the instance id
    /// until the session timeout.
    fn leave(&mut self, now: Instant) {
        self.start_leave(now, false);
    }

    /// Like [`ConsumerGroupMember::leave`], but a static member leaves with -1 too (KIP-1092's
    /// `LEAVE_GROUP`), so that its partitions move at once.
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
        self.maybe_finish_leave();
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
        let node = self.coordinator.as_ref().map_or(-1, |c| c.node_id);
        let target = Target::Coordinator(node);

        if let Some(request) = self.out_of_band.pop_front() {
            let id = self.next_request_id();
            return Some((id, target, GroupRequest::ConsumerGroupHeartbeat(request)));
        }
        if let Some((id, request)) = self.next_commit(now) {
            return Some((id, target, request));
        }
        if let Some((id, request)) = self.next_fetch(now) {
            return Some((id, target, request));
        }
        if self.slot.is_some() || !self.heartbeat_backoff.ready(now) {
            return None;
        }
        match self.lifecycle {
            Lifecycle::Active if self.subscribed => {
                if self.epoch == 0 {
                    if !self.join_ready() {
                        return None;
                    }
                    if std::mem::take(&mut self.release_instance) && !self.member_id.is_empty() {
                        // Free the instance id the coordinator may still hold for the lost
                        // membership; the join follows on the same connection.
                        let id = self.next_request_id();
                        let request = self.leave_request(LEAVE_GROUP_STATIC_MEMBER_EPOCH);
                        return Some((id, target, GroupRequest::ConsumerGroupHeartbeat(request)));
                    }
                    return Some(self.send_heartbeat(now, target));
                }
                if self.ack_needed() || now >= self.next_heartbeat {
                    return Some(self.send_heartbeat(now, target));
                }
            }
            Lifecycle::Leaving { .. } if self.epoch > 0 && now >= self.next_heartbeat => {
                // Still revoking: keep the session.
                return Some(self.send_heartbeat(now, target));
            }
            _ => {}
        }
        None
    }

    /// The answer to request `id` (or `Failed` / `CoordinatorUnreachable`).
    fn handle_response(&mut self, id: RequestId, response: GroupResponse, now: Instant) {
        self.now = now;
        if self.last_heartbeat == Some(id) && matches!(response, GroupResponse::ConsumerGroupHeartbeat(_)) {
            // Answered (processed, or refused without effect): the next answer-less change of
            // the assignment is ruled out. Heartbeats are answered in order.
            self.heartbeat_unconfirmed = false;
        }
        if self.find_in_flight == Some(id) {
            self.find_in_flight = None;
            self.on_find_coordinator(response, now);
        } else if let Some(slot) = self.slot.take_if(|s| s.id == id) {
            match response {
                GroupResponse::ConsumerGroupHeartbeat(r) => self.on_heartbeat(slot, r, now),
                other => {
                    if !matches!(other, GroupResponse::Failed { .. } | GroupResponse::CoordinatorUnreachable) {
                        tracing::warn!("consumer group: unexpected answer to a heartbeat; treated as a failure");
                    }
                    self.mark_coordinator_unknown("heartbeat failed");
                    self.sent = None;
                    self.heartbeat_backoff.fail(now);
                }
            }
        } else if self.abandoned.as_ref().is_some_and(|s| s.id == id) {
            let slot = self.abandoned.take().expect("checked");
            // Only what the coordinator said about the member; its coordinator errors are old news.
            if let (None, GroupResponse::ConsumerGroupHeartbeat(r)) = (&self.slot, response) {
                if [ErrorCode::NONE, ErrorCode::FENCED_MEMBER_EPOCH, ErrorCode::UNKNOWN_MEMBER_ID]
                    .contains(&r.error_code)
                {
                    self.on_heartbeat(slot, r, now);
                }
            }
        } else if let Some(commit_id) = self.commit_requests.remove(&id) {
            self.on_commit(commit_id, response, now);
        } else if let Some(partitions) = self.fetch_requests.remove(&id) {
            self.on_fetch(partitions, response, now);
        } else if let GroupResponse::ConsumerGroupHeartbeat(r) = &response {
            // A leave or release (fire and forget), or an answer to an abandoned heartbeat.
            if r.error_code.is_err() {
                tracing::debug!(error = ?r.error_code, "consumer group: answer to an abandoned heartbeat or a leave");
            }
        }
        self.tick(now);
    }

    /// The next event for the application.
    fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    /// When to call [`ConsumerGroupMember::poll_request`] again at the latest (a time in the
    /// past means now). `None`: only when something arrives or the application calls in.
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
            if !self.out_of_band.is_empty() {
                add(now);
            }
            for c in self.commits.values() {
                match c.stale_until {
                    Some(until) if c.in_flight.is_none() && self.epoch == c.sent_epoch => add(until),
                    _ if c.in_flight.is_none() => add(c.backoff.until().unwrap_or(now)),
                    _ => {}
                }
            }
            if !self.fetch_queue.is_empty() && self.epoch > 0 {
                add(self.fetch_backoff.until().unwrap_or(now));
            }
            if self.slot.is_none() {
                let backoff = self.heartbeat_backoff.until().unwrap_or(now);
                match self.lifecycle {
                    Lifecycle::Active if self.subscribed => {
                        if self.epoch == 0 {
                            if self.join_ready() {
                                add(backoff);
                            }
                        } else if self.ack_needed() {
                            add(backoff);
                        } else {
                            add(self.next_heartbeat.max(backoff));
                        }
                    }
                    Lifecycle::Leaving { .. } if self.epoch > 0 => add(self.next_heartbeat.max(backoff)),
                    _ => {}
                }
            }
        }
        if let Lifecycle::Leaving { .. } = self.lifecycle {
            if !self.revocation_pending && self.commits.is_empty() {
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
        true
    }

    fn assigns_client_side(&self) -> bool {
        false
    }
}

impl ConsumerGroupMember {
    /// A member that has not joined yet.
    pub fn new(config: ConsumerGroupConfig, now: Instant) -> Self {
        let member_id = match &config.member_id {
            Some(id) => id.clone(),
            None => random_member_id(),
        };
        let heartbeat_interval = config.heartbeat_interval;
        let coordinator_backoff = Self::backoff(&config, 0);
        let fetch_backoff = Self::backoff(&config, 2);
        let heartbeat_backoff = Self::backoff(&config, 1);
        Self {
            config,
            now,
            next_id: 1,
            subscription: BTreeSet::new(),
            subscribed: false,
            names: BTreeMap::new(),
            coordinator: None,
            find_in_flight: None,
            coordinator_backoff,
            lifecycle: Lifecycle::Active,
            member_id,
            epoch: 0,
            incarnation: 0,
            joined: false,
            release_instance: false,
            slot: None,
            abandoned: None,
            last_heartbeat: None,
            heartbeat_unconfirmed: false,
            heartbeat_backoff,
            heartbeat_interval,
            next_heartbeat: now,
            sent: None,
            acked_owned: BTreeSet::new(),
            first_unanswered: None,
            revoke_demand: None,
            session_alive: None,
            target: None,
            restate_owned: false,
            assigned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            owned_topic_ids: BTreeMap::new(),
            revocation_pending: false,
            last_poll: now,
            commits: BTreeMap::new(),
            latest_commit: BTreeMap::new(),
            commit_requests: BTreeMap::new(),
            fetch_queue: BTreeSet::new(),
            fetch_backoff,
            fetch_requests: BTreeMap::new(),
            out_of_band: VecDeque::new(),
            events: VecDeque::new(),
            loss_unhandled: false,
        }
    }

    /// The backoff of one kind of retry; `stream` keeps the jitter of each apart.
    fn backoff(config: &ConsumerGroupConfig, stream: u64) -> Backoff {
        super::driving::backoff(config.retry_backoff, config.retry_backoff_max, config.backoff_seed, stream)
    }

    // ---- accessors ----------------------------------------------------------------------------

    /// The member epoch: 0 while not in the group (-1 / -2 are only sent, never kept).
    pub fn member_epoch(&self) -> i32 {
        self.epoch
    }

    /// Topic ids of the current assignment without a known name: their partitions are not
    /// taken until [`ConsumerGroupMember::set_topic_names`] names them.
    pub fn unresolved_topic_ids(&self) -> BTreeSet<Uuid> {
        self.target.iter().flatten().map(|(id, _)| *id).filter(|id| !self.names.contains_key(id)).collect()
    }

    // ---- internals: leaving -------------------------------------------------------------------

    fn start_leave(&mut self, now: Instant, explicit: bool) {
        self.now = now;
        match self.lifecycle {
            Lifecycle::Left | Lifecycle::Fatal(_) | Lifecycle::Leaving { .. } => return,
            Lifecycle::PollExpired => {
                // Already left when the poll timer expired.
                self.lifecycle = Lifecycle::Left;
                return;
            }
            Lifecycle::Active => {}
        }
        let epoch = if self.config.group_instance_id.is_some() && !explicit {
            LEAVE_GROUP_STATIC_MEMBER_EPOCH
        } else {
            LEAVE_GROUP_MEMBER_EPOCH
        };
        self.lifecycle = Lifecycle::Leaving { epoch };
        self.fetch_queue.clear();
        if !self.revocation_pending {
            // Else the rest is revoked when the revocation under way is done: one Revoke at a
            // time, so that `revocation_done` is never taken for one not yet seen.
            self.revoke_rest_for_leave();
        }
    }

    fn revoke_rest_for_leave(&mut self) {
        let more = std::mem::take(&mut self.assigned);
        if !more.is_empty() {
            self.revoking.extend(more.iter().cloned());
            self.revocation_pending = true;
            self.events.push_back(GroupEvent::Revoke(more));
        }
    }

    // ---- internals: state ----------------------------------------------------------------------

    /// Ids of requests and of commits, from one counter.
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn next_request_id(&mut self) -> RequestId {
        RequestId(self.next_id())
    }

    fn in_group(&self) -> bool {
        self.epoch > 0 && matches!(self.lifecycle, Lifecycle::Active | Lifecycle::Leaving { .. })
    }

    fn holds_partitions(&self) -> bool {
        !self.assigned.is_empty() || !self.revoking.is_empty()
    }

    fn topic_id(&self, topic: &str) -> Option<Uuid> {
        self.owned_topic_ids
            .get(topic)
            .copied()
            .or_else(|| self.names.iter().find(|(_, n)| n.as_str() == topic).map(|(id, _)| *id))
    }

    /// The owned partitions (assigned or pending revocation) by topic id.
    fn owned_ids(&self) -> BTreeSet<IdTp> {
        self.assigned
            .iter()
            .chain(self.revoking.iter())
            .filter_map(|(t, p)| self.owned_topic_ids.get(t).map(|id| (*id, *p)))
            .collect()
    }

    /// What the next heartbeat says the member owns: the owned partitions, but while commits
    /// are pending nothing the coordinator was told is released yet.
    fn report_owned(&self) -> BTreeSet<IdTp> {
        let mut owned = self.owned_ids();
        if !self.commits.is_empty() {
            let told = self.sent.as_ref().map_or(&self.acked_owned, |s| &s.owned);
            owned.extend(told.iter().copied());
        }
        owned
    }

    /// The coordinator must hear of a change: a heartbeat goes out at once.
    fn ack_needed(&self) -> bool {
        self.epoch > 0
            && (self.restate_owned
                || match &self.sent {
                    None => true,
                    Some(s) => s.subscription != self.subscription || s.owned != self.report_owned(),
                })
    }

    fn join_ready(&self) -> bool {
        self.lifecycle == Lifecycle::Active
            && self.subscribed
            && self.epoch == 0
            && !self.revocation_pending
            && !self.loss_unhandled
            && !self.partition_events_pending()
    }

    /// A Lost or Revoke the application has not taken yet: a join waits for it, so the
    /// application knows it has stopped owning those partitions before the member rejoins.
    fn partition_events_pending(&self) -> bool {
        self.events.iter().any(|e| matches!(e, GroupEvent::Lost(_) | GroupEvent::Revoke(_)))
    }

    fn needs_coordinator(&self) -> bool {
        match self.lifecycle {
            Lifecycle::Fatal(_) => false,
            Lifecycle::Left | Lifecycle::PollExpired => !self.out_of_band.is_empty() || !self.commits.is_empty(),
            Lifecycle::Leaving { .. } => true,
            Lifecycle::Active => {
                self.subscribed
                    || !self.out_of_band.is_empty()
                    || !self.commits.is_empty()
                    || !self.fetch_queue.is_empty()
            }
        }
    }

    fn lease_deadline(&self) -> Option<Instant> {
        if !matches!(self.lifecycle, Lifecycle::Active | Lifecycle::Leaving { .. }) {
            return None;
        }
        let mut deadline = None;
        if let Some(alive) = self.session_alive {
            if self.epoch > 0 || self.holds_partitions() {
                deadline = Some(alive + self.config.session_timeout);
            }
        }
        if let Some((_, d)) = &self.revoke_demand {
            deadline = Some(deadline.map_or(*d, |x: Instant| x.min(*d)));
        }
        deadline
    }

    fn poll_deadline(&self) -> Option<Instant> {
        if self.lifecycle != Lifecycle::Active {
            return None;
        }
        if self.epoch == 0 && !self.joined && !self.holds_partitions() {
            return None;
        }
        Some(self.last_poll + self.config.rebalance_timeout)
    }

    fn tick(&mut self, now: Instant) {
        if let Some(deadline) = self.poll_deadline() {
            if now >= deadline {
                tracing::warn!(
                    group = %self.config.group_id,
                    "consumer group: poll timeout expired (max.poll.interval); leaving the group"
                );
                let was_member = self.epoch > 0 || self.joined;
                self.lose_all();
                if was_member && !self.member_id.is_empty() {
                    let epoch = if self.config.group_instance_id.is_some() {
                        LEAVE_GROUP_STATIC_MEMBER_EPOCH
                    } else {
                        LEAVE_GROUP_MEMBER_EPOCH
                    };
                    let request = self.leave_request(epoch);
                    self.out_of_band.push_back(request);
                }
                self.reset_membership();
                self.release_instance = false;
                self.lifecycle = Lifecycle::PollExpired;
            }
        }
        if let Some(deadline) = self.lease_deadline() {
            if now >= deadline {
                let session_over = self.session_alive.is_some_and(|a| now >= a + self.config.session_timeout);
                tracing::warn!(
                    group = %self.config.group_id,
                    session_over,
                    "consumer group: membership lease over; partitions lost"
                );
                if let Lifecycle::Leaving { .. } = self.lifecycle {
                    self.lose_all();
                    self.reset_membership();
                    self.lifecycle = Lifecycle::Left;
                } else {
                    self.fence("membership lease over");
                }
                if session_over {
                    self.mark_coordinator_unknown("no answer within the session timeout");
                }
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
        self.revocation_pending = false;
        self.fetch_queue.clear();
        self.owned_topic_ids.clear();
    }

    /// The membership is over (fenced, lease, left): epoch 0, nothing confirmed. The member id
    /// stays. Commits taken in it and not in flight fail.
    fn reset_membership(&mut self) {
        if self.epoch > 0 || self.joined {
            self.incarnation += 1;
        }
        self.epoch = 0;
        self.joined = false;
        self.slot = None;
        self.abandoned = None;
        self.heartbeat_unconfirmed = false;
        self.sent = None;
        self.acked_owned.clear();
        self.first_unanswered = None;
        self.revoke_demand = None;
        self.session_alive = None;
        self.target = None;
        self.restate_owned = false;
        self.fetch_queue.clear();
        let stale: Vec<u64> = self
            .commits
            .iter()
            .filter(|(_, c)| c.in_flight.is_none() && c.incarnation != self.incarnation)
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            self.commits.remove(&id);
            self.events.push_back(GroupEvent::CommitResult { id, result: Err(ErrorCode::STALE_MEMBER_EPOCH) });
        }
    }

    /// Java's `transitionToFenced`: the partitions are lost, the member joins again with epoch
    /// 0 and the same member id.
    fn fence(&mut self, reason: &str) {
        tracing::info!(group = %self.config.group_id, member = %self.member_id, epoch = self.epoch, reason,
            "consumer group: fenced; partitions lost, rejoining");
        let was_member = self.epoch > 0 || self.joined;
        self.lose_all();
        self.reset_membership();
        if self.config.group_instance_id.is_some() && was_member {
            self.release_instance = true;
        }
    }

    fn fatal(&mut self, code: ErrorCode) {
        tracing::error!(group = %self.config.group_id, error = ?code, "consumer group: fatal error");
        self.lose_all();
        self.reset_membership();
        self.lifecycle = Lifecycle::Fatal(code);
        let ids: Vec<u64> = self.commits.keys().copied().collect();
        for id in ids {
            self.commits.remove(&id);
            self.events.push_back(GroupEvent::CommitResult { id, result: Err(code) });
        }
        self.commit_requests.clear();
        self.fetch_requests.clear();
        self.out_of_band.clear();
        self.events.push_back(GroupEvent::Fatal(code));
    }

    fn mark_coordinator_unknown(&mut self, reason: &str) {
        if self.coordinator.is_none() {
            return;
        }
        tracing::info!(group = %self.config.group_id, reason, "consumer group: coordinator unknown");
        self.coordinator = None;
        // Like Java, which disconnects: what is in flight to it is abandoned (late answers are
        // ignored) and redone with the next coordinator, the heartbeat at once and in full.
        if let Some(slot) = self.slot.take() {
            self.sent = None;
            self.abandoned = Some(slot);
        }
        self.next_heartbeat = self.now;
        for commit_id in std::mem::take(&mut self.commit_requests).into_values() {
            if let Some(c) = self.commits.get_mut(&commit_id) {
                c.in_flight = None;
            }
        }
        for partitions in std::mem::take(&mut self.fetch_requests).into_values() {
            self.fetch_queue.extend(partitions.into_iter().filter(|tp| self.assigned.contains(tp)));
        }
    }

    fn forget_unowned_topic_ids(&mut self) {
        let owned: BTreeSet<&str> = self.assigned.iter().chain(self.revoking.iter()).map(|(t, _)| t.as_str()).collect();
        self.owned_topic_ids.retain(|t, _| owned.contains(t.as_str()));
    }

    /// Brings the owned partitions towards the last assignment: revoke first, then take what
    /// is new and named.
    fn reconcile(&mut self) {
        if self.lifecycle != Lifecycle::Active || self.epoch <= 0 || self.revocation_pending {
            return;
        }
        let Some(target) = self.target.clone() else {
            return;
        };
        let revoke: BTreeSet<Tp> = self
            .assigned
            .iter()
            .filter(|(t, p)| !self.owned_topic_ids.get(t).is_some_and(|id| target.contains(&(*id, *p))))
            .cloned()
            .collect();
        if !revoke.is_empty() {
            for tp in &revoke {
                self.assigned.remove(tp);
            }
            self.fetch_queue.retain(|tp| !revoke.contains(tp));
            self.revoking.extend(revoke.iter().cloned());
            self.revocation_pending = true;
            self.events.push_back(GroupEvent::Revoke(revoke));
            return;
        }
        if self.heartbeat_unconfirmed {
            // A heartbeat whose answer is outstanding may have made the coordinator free
            // partitions of this assignment (a report without them, a new target): take nothing
            // before its answer says what is still ours.
            return;
        }
        let mut added = BTreeSet::new();
        for (id, p) in &target {
            let Some(name) = self.names.get(id) else {
                continue;
            };
            if self.owned_topic_ids.get(name).is_some_and(|owned| owned != id) {
                // The name was reused by a new topic while partitions of the old one are still
                // owned (cannot happen after the revocation above; wait if it does).
                continue;
            }
            let tp = (name.clone(), *p);
            if !self.assigned.contains(&tp) {
                added.insert(tp);
            }
        }
        if added.is_empty() {
            return;
        }
        for (t, _) in &added {
            if let Some(id) = self.topic_id_in_target(&target, t) {
                self.owned_topic_ids.insert(t.clone(), id);
            }
        }
        self.assigned.extend(added.iter().cloned());
        self.fetch_queue.extend(added.iter().cloned());
        self.events.push_back(GroupEvent::Assigned(added));
    }

    fn topic_id_in_target(&self, target: &BTreeSet<IdTp>, topic: &str) -> Option<Uuid> {
        target.iter().map(|(id, _)| *id).find(|id| self.names.get(id).is_some_and(|n| n == topic))
    }

    fn maybe_finish_leave(&mut self) {
        let Lifecycle::Leaving { epoch } = self.lifecycle else {
            return;
        };
        if self.revocation_pending || !self.commits.is_empty() {
            return;
        }
        if (self.epoch > 0 || self.joined || self.release_instance) && !self.member_id.is_empty() {
            let request = self.leave_request(epoch);
            self.out_of_band.push_back(request);
        }
        self.lose_all();
        self.reset_membership();
        self.release_instance = false;
        self.lifecycle = Lifecycle::Left;
    }

    // ---- internals: requests -----------------------------------------------------------------

    fn leave_request(&self, epoch: i32) -> ConsumerGroupHeartbeatRequest {
        ConsumerGroupHeartbeatRequest {
            group_id: bs(&self.config.group_id),
            member_id: bs(&self.member_id),
            member_epoch: epoch,
            instance_id: self.config.group_instance_id.as_deref().map(bs),
            rebalance_timeout_ms: -1,
            ..Default::default()
        }
    }

    fn send_heartbeat(&mut self, now: Instant, target: Target) -> (RequestId, Target, GroupRequest) {
        let joining = self.epoch == JOIN_GROUP_MEMBER_EPOCH;
        let full = joining || self.sent.is_none();
        let reported = if joining { BTreeSet::new() } else { self.report_owned() };
        let subscription_changed = self.sent.as_ref().is_none_or(|s| s.subscription != self.subscription);
        let owned_changed = self.restate_owned || self.sent.as_ref().is_none_or(|s| s.owned != reported);
        self.restate_owned = false;
        let request = ConsumerGroupHeartbeatRequest {
            group_id: bs(&self.config.group_id),
            member_id: bs(&self.member_id),
            member_epoch: self.epoch,
            // Always: the coordinator looks static members up by it.
            instance_id: self.config.group_instance_id.as_deref().map(bs),
            rack_id: if full { self.config.rack.as_deref().map(bs) } else { None },
            rebalance_timeout_ms: if full { duration_ms(self.config.rebalance_timeout) } else { -1 },
            subscribed_topic_names: (full || subscription_changed)
                .then(|| self.subscription.iter().map(|t| bs(t)).collect()),
            subscribed_topic_regex: None,
            server_assignor: if full { self.config.server_assignor.as_deref().map(bs) } else { None },
            // A join must send an empty list, not null.
            topic_partitions: (full || owned_changed).then(|| encode_partitions(&reported)),
            ..Default::default()
        };
        self.sent = Some(SentFields { subscription: self.subscription.clone(), owned: reported.clone() });
        let id = self.next_request_id();
        if joining {
            self.joined = true;
        }
        if self.first_unanswered.is_none() {
            self.first_unanswered = Some(now);
        }
        let explicit = full || owned_changed;
        self.slot = Some(Slot { id, sent_at: now, incarnation: self.incarnation, reported, explicit });
        self.abandoned = None;
        self.last_heartbeat = Some(id);
        self.heartbeat_unconfirmed = true;
        self.next_heartbeat = now + self.heartbeat_interval;
        (id, target, GroupRequest::ConsumerGroupHeartbeat(request))
    }

    fn next_commit(&mut self, now: Instant) -> Option<(RequestId, GroupRequest)> {
        let ready: Vec<u64> = self
            .commits
            .iter()
            .filter(|(_, c)| {
                c.in_flight.is_none()
                    && c.backoff.ready(now)
                    && c.stale_until.is_none_or(|until| self.epoch != c.sent_epoch || now >= until)
            })
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
            if c.incarnation != self.incarnation
                || !self.in_group()
                || (c.stale_until.is_some() && self.epoch == c.sent_epoch)
            {
                // (The last: it waited for a newer epoch until its time ran out.)
                // Never send a commit with an epoch of another membership.
                self.commits.remove(&commit_id);
                self.events
                    .push_back(GroupEvent::CommitResult { id: commit_id, result: Err(ErrorCode::STALE_MEMBER_EPOCH) });
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
                generation_id_or_member_epoch: self.epoch,
                member_id: bs(&self.member_id),
                group_instance_id: self.config.group_instance_id.as_deref().map(bs),
                retention_time_ms: -1,
                topics: topics
                    .into_iter()
                    .map(|(name, partitions)| OffsetCommitRequestTopic {
                        name: bs(name),
                        topic_id: self.topic_id(name).unwrap_or(Uuid::ZERO),
                        partitions,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            let id = self.next_request_id();
            if let Some(c) = self.commits.get_mut(&commit_id) {
                c.in_flight = Some(id);
                c.sent_epoch = self.epoch;
                c.stale_until = None;
            }
            self.commit_requests.insert(id, commit_id);
            return Some((id, GroupRequest::OffsetCommit(request)));
        }
        None
    }

    fn next_fetch(&mut self, now: Instant) -> Option<(RequestId, GroupRequest)> {
        if self.fetch_queue.is_empty() || !self.fetch_backoff.ready(now) || !self.in_group() {
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
                member_id: Some(bs(&self.member_id)),
                member_epoch: self.epoch,
                topics: Some(
                    topics
                        .iter()
                        .map(|(t, ps)| OffsetFetchRequestTopics {
                            name: bs(t),
                            topic_id: self.topic_id(t).unwrap_or(Uuid::ZERO),
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
            tracing::debug!(group = %self.config.group_id, ?error, "consumer group: FindCoordinator failed");
            self.coordinator_backoff.fail(now);
        }
    }

    fn on_heartbeat(&mut self, slot: Slot, r: ConsumerGroupHeartbeatResponse, now: Instant) {
        let current = slot.incarnation == self.incarnation
            && matches!(self.lifecycle, Lifecycle::Active | Lifecycle::Leaving { .. });
        let error = r.error_code;
        if error.is_ok() {
            if current {
                self.on_heartbeat_ok(slot, r, now);
            }
            return;
        }
        tracing::info!(group = %self.config.group_id, ?error, message = ?r.error_message,
            "consumer group: heartbeat failed");
        self.sent = None;
        match error {
            ErrorCode::FENCED_MEMBER_EPOCH | ErrorCode::UNKNOWN_MEMBER_ID => {
                if !current {
                    return;
                }
                if let Lifecycle::Leaving { .. } = self.lifecycle {
                    // Out of the group already: no leave heartbeat, no rejoin.
                    self.lose_all();
                    self.reset_membership();
                    self.lifecycle = Lifecycle::Left;
                } else {
                    self.fence(if error == ErrorCode::FENCED_MEMBER_EPOCH {
                        "heartbeat: fenced member epoch"
                    } else {
                        "heartbeat: unknown member id"
                    });
                }
            }
            code if is_coordinator_error(code) => {
                self.mark_coordinator_unknown("heartbeat: coordinator error");
                self.heartbeat_backoff.reset();
            }
            ErrorCode::COORDINATOR_LOAD_IN_PROGRESS => {
                self.heartbeat_backoff.fail(now);
            }
            code if is_fatal_heartbeat_error(code) => {
                if current || code == ErrorCode::GROUP_AUTHORIZATION_FAILED || code == ErrorCode::UNSUPPORTED_VERSION {
                    self.fatal(code);
                }
            }
            code if code.is_retriable() || code == ErrorCode::TOPIC_AUTHORIZATION_FAILED => {
                self.heartbeat_backoff.fail(now);
            }
            code => {
                if current {
                    self.fatal(code);
                }
            }
        }
    }

    fn on_heartbeat_ok(&mut self, slot: Slot, r: ConsumerGroupHeartbeatResponse, now: Instant) {
        if let Some(id) = r.member_id.as_deref().filter(|id| !id.is_empty()) {
            if id != self.member_id {
                tracing::info!(group = %self.config.group_id, old = %self.member_id, new = %id,
                    "consumer group: the coordinator named the member");
                self.member_id = id.to_string();
            }
        }
        if r.member_epoch <= 0 {
            tracing::warn!(epoch = r.member_epoch, "consumer group: heartbeat answered without a member epoch");
            if self.lifecycle == Lifecycle::Active {
                self.fence("heartbeat answered without a member epoch");
            }
            return;
        }
        self.epoch = r.member_epoch;
        self.joined = true;
        if r.heartbeat_interval_ms > 0 {
            self.heartbeat_interval = Duration::from_millis(r.heartbeat_interval_ms as u64);
        }
        self.heartbeat_backoff.reset();
        self.next_heartbeat = now + self.heartbeat_interval;
        self.session_alive = Some(self.session_alive.map_or(slot.sent_at, |a| a.max(slot.sent_at)));
        let window_start = self.first_unanswered.take().unwrap_or(slot.sent_at);
        // What the coordinator took the member to own: what it reported, or with a null report
        // everything it had been assigned.
        let mut believed = slot.reported.clone();
        if !slot.explicit {
            believed.extend(self.target.iter().flatten().copied());
        }
        self.acked_owned = slot.reported;
        if let Some(a) = &r.assignment {
            let target: BTreeSet<IdTp> =
                a.topic_partitions.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p))).collect();
            if self.target.as_ref() != Some(&target) {
                self.restate_owned = true;
            }
            self.target = Some(target);
        }
        // The coordinator waits (with the rebalance timeout) for partitions it believes the
        // member owns and the assignment no longer has; it stops once a report leaves them out.
        if self.revoke_demand.as_ref().is_some_and(|(set, _)| set.is_disjoint(&believed)) {
            self.revoke_demand = None;
        }
        if let Some(target) = &self.target {
            let excess: BTreeSet<IdTp> = believed.difference(target).copied().collect();
            if !excess.is_empty() {
                match &mut self.revoke_demand {
                    Some((set, _)) => set.extend(excess),
                    None => self.revoke_demand = Some((excess, window_start + self.config.rebalance_timeout)),
                }
            }
        }
        self.reconcile();
    }

    fn on_commit(&mut self, commit_id: u64, response: GroupResponse, now: Instant) {
        let Some(c) = self.commits.get_mut(&commit_id) else {
            return;
        };
        c.in_flight = None;
        let incarnation = c.incarnation;
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
            ErrorCode::STALE_MEMBER_EPOCH if incarnation == self.incarnation && self.in_group() => {
                let until = now + self.config.session_timeout;
                if let Some(c) = self.commits.get_mut(&commit_id) {
                    c.stale_until = Some(until);
                }
            }
            ErrorCode::STALE_MEMBER_EPOCH => finish(self, Err(error)),
            ErrorCode::UNKNOWN_MEMBER_ID => {
                finish(self, Err(error));
                if incarnation == self.incarnation && self.in_group() && self.lifecycle == Lifecycle::Active {
                    // The coordinator no longer has this member: its partitions may move.
                    self.fence("OffsetCommit: unknown member id");
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
            self.fetch_queue.extend(partitions.into_iter().filter(|tp| self.assigned.contains(tp)));
            return;
        };
        // v8+ answers per group (v10 by topic id), older versions at the top level.
        let name_of = |name: &ByteString, id: &Uuid| -> String {
            if name.is_empty() {
                self.names.get(id).cloned().unwrap_or_default()
            } else {
                name.to_string()
            }
        };
        let (group_error, rows): (ErrorCode, Vec<FetchRow>) =
            match r.groups.iter().find(|g| &*g.group_id == self.config.group_id.as_str()).or(r.groups.first()) {
                Some(g) => (
                    g.error_code,
                    g.topics
                        .iter()
                        .flat_map(|t| {
                            let topic = name_of(&t.name, &t.topic_id);
                            t.partitions.iter().map(move |p| {
                                (
                                    (topic.clone(), p.partition_index),
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
        if group_error.is_err() {
            let ours: BTreeSet<Tp> = partitions.into_iter().filter(|tp| self.assigned.contains(tp)).collect();
            if is_coordinator_error(group_error) {
                self.mark_coordinator_unknown("OffsetFetch: coordinator error");
                self.fetch_queue.extend(ours);
            } else if group_error == ErrorCode::GROUP_AUTHORIZATION_FAILED {
                self.fatal(group_error);
            } else if group_error.is_retriable()
                || group_error == ErrorCode::STALE_MEMBER_EPOCH
                || group_error == ErrorCode::UNKNOWN_MEMBER_ID
            {
                // COORDINATOR_LOAD_IN_PROGRESS, UNSTABLE_OFFSET_COMMIT; an epoch the heartbeat
                // is about to renew, or a fence it is about to report.
                self.fetch_backoff.fail(now);
                self.fetch_queue.extend(ours);
            } else {
                let failed = ours.into_iter().map(|tp| (tp, group_error)).collect();
                self.events.push_back(GroupEvent::OffsetFetchFailed(failed));
            }
            return;
        }
        let mut offsets: BTreeMap<Tp, CommittedOffset> = BTreeMap::new();
        let mut failed = BTreeMap::new();
        let mut retry = false;
        let mut seen = BTreeSet::new();
        for (tp, offset, epoch, metadata, error) in rows {
            if !partitions.contains(&tp) || !self.assigned.contains(&tp) {
                continue;
            }
            seen.insert(tp.clone());
            if error.is_ok() {
                offsets.insert(tp, (offset, (epoch >= 0).then_some(epoch), metadata));
            } else if error.is_retriable() {
                retry = true;
                self.fetch_queue.insert(tp);
            } else {
                failed.insert(tp, error);
            }
        }
        for tp in partitions {
            if !seen.contains(&tp) && self.assigned.contains(&tp) {
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

/// One partition of an OffsetFetch answer: partition, offset, leader epoch, metadata, error.
type FetchRow = (Tp, i64, i32, Option<String>, ErrorCode);

impl std::fmt::Debug for ConsumerGroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerGroupMember")
            .field("group_id", &self.config.group_id)
            .field("lifecycle", &self.lifecycle)
            .field("member_id", &self.member_id)
            .field("epoch", &self.epoch)
            .field("incarnation", &self.incarnation)
            .field("assigned", &self.assigned)
            .field("revoking", &self.revoking)
            .field("target", &self.target)
            .field("acked_owned", &self.acked_owned)
            .field("revoke_demand", &self.revoke_demand)
            .field("slot", &self.slot.as_ref().map(|s| s.id))
            .finish_non_exhaustive()
    }
}
