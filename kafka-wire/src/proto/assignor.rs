//! Client-side partition assignors of the classic consumer group protocol (`protocol_type =
//! "consumer"`), and the wire formats the members exchange through the coordinator.
//!
//! In the classic protocol the group leader runs the assignor: it receives every member's
//! subscription (the `metadata` of JoinGroup, a [`ConsumerProtocolSubscription`]) and returns
//! one [`ConsumerProtocolAssignment`] per member in SyncGroup. Everything here is a pure
//! function of those inputs: no IO, no clock, no randomness, no hidden state, so the same
//! inputs always give the same assignment.
//!
//! - [`range`]: per topic, contiguous ranges of partitions over the members subscribed to it.
//! - [`roundrobin`]: all partitions dealt one by one over all members.
//! - [`cooperative_sticky`]: balanced, sticky and incremental (KIP-429 on top of KIP-341's
//!   sticky assignment); see its documentation for the algorithm.
//!
//! The metadata of other members arrives from the network and is hostile input: decoding
//! checks every length and count against the remaining bytes before allocating, and the
//! assignors accept any subscriptions (unknown topics, duplicate or out-of-range owned
//! partitions, conflicting claims) without panicking.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use bytes::{Bytes, BytesMut};

use crate::codec::primitives::{
    get_array_len, get_i16, get_i32, get_nullable_bytes, get_nullable_string, get_string, put_array_len, put_i16,
    put_i32, put_nullable_bytes, put_nullable_string, put_string,
};
use crate::codec::{DecodeError, DecodeResult, EncodeResult};

/// The `protocol_type` of consumer groups in JoinGroup.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// The highest version of `ConsumerProtocolSubscription` and `ConsumerProtocolAssignment` this
/// module knows. Higher versions are decoded as this one (their extra fields are ignored).
pub const CONSUMER_PROTOCOL_MAX_VERSION: i16 = 3;

/// Kafka's "no generation" (`AbstractStickyAssignor.DEFAULT_GENERATION`).
pub const DEFAULT_GENERATION: i32 = -1;

// ---------------------------------------------------------------------------------------------
// Wire formats
// ---------------------------------------------------------------------------------------------

/// One topic and some of its partitions, as the consumer protocol lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicPartitions {
    /// The topic.
    pub topic: String,
    /// The partition ids.
    pub partitions: Vec<i32>,
}

/// A member's subscription (`ConsumerProtocolSubscription`, versions 0-3), the `metadata` of
/// its JoinGroup protocol. Not a flexible message at any version: strings have `i16` lengths,
/// arrays and bytes `i32` lengths, and there are no tagged fields.
///
/// | version | adds |
/// |---|---|
/// | 0 | `topics`, `user_data` |
/// | 1 | `owned_partitions` |
/// | 2 | `generation_id` (default -1) |
/// | 3 | `rack_id` (nullable) |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerProtocolSubscription {
    /// The topics the member subscribes to.
    pub topics: Vec<String>,
    /// Opaque data for a custom assignor.
    pub user_data: Option<Bytes>,
    /// v1+; empty when absent.
    pub owned_partitions: Vec<TopicPartitions>,
    /// v2+; [`DEFAULT_GENERATION`] when absent.
    pub generation_id: i32,
    /// v3+; `None` when absent.
    pub rack_id: Option<String>,
}

impl Default for ConsumerProtocolSubscription {
    fn default() -> Self {
        Self {
            topics: Vec::new(),
            user_data: None,
            owned_partitions: Vec::new(),
            generation_id: DEFAULT_GENERATION,
            rack_id: None,
        }
    }
}

/// The assignment the leader sends a member (`ConsumerProtocolAssignment`, versions 0-3; the
/// format is the same at every version, which only follow the subscription's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerProtocolAssignment {
    /// The member's partitions, by topic.
    pub assigned_partitions: Vec<TopicPartitions>,
    /// Opaque data from a custom assignor.
    pub user_data: Option<Bytes>,
}

/// Smallest encoded `TopicPartitions`: an empty topic name (2) and an empty array (4).
const MIN_TOPIC_PARTITIONS_SIZE: usize = 6;

fn clamp_version(version: i16) -> i16 {
    version.clamp(0, CONSUMER_PROTOCOL_MAX_VERSION)
}

fn get_version(buf: &mut Bytes, what: &'static str) -> DecodeResult<i16> {
    let version = get_i16(buf, what)?;
    if version < 0 {
        return Err(DecodeError::Malformed { what, reason: "negative version" });
    }
    Ok(version)
}

/// Versions this module knows must be consumed exactly; a newer version may carry fields
/// appended after the ones known here (Kafka's rule for this format: newer versions never remove
/// or reorder fields), and those are skipped.
fn finish(buf: &Bytes, version: i16, what: &'static str) -> DecodeResult<()> {
    if version <= CONSUMER_PROTOCOL_MAX_VERSION && !buf.is_empty() {
        return Err(DecodeError::TrailingBytes { what, count: buf.len() });
    }
    Ok(())
}

fn get_strings(buf: &mut Bytes, what: &'static str) -> DecodeResult<Vec<String>> {
    let n = get_array_len(buf, false, 2, what)?.ok_or(DecodeError::UnexpectedNull { what })?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get_string(buf, false, what)?.to_string());
    }
    Ok(out)
}

fn get_topic_partitions(buf: &mut Bytes, what: &'static str) -> DecodeResult<Vec<TopicPartitions>> {
    let n = get_array_len(buf, false, MIN_TOPIC_PARTITIONS_SIZE, what)?.ok_or(DecodeError::UnexpectedNull { what })?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let topic = get_string(buf, false, "consumer protocol topic")?.to_string();
        let count = get_array_len(buf, false, 4, "consumer protocol partitions")?
            .ok_or(DecodeError::UnexpectedNull { what: "consumer protocol partitions" })?;
        let mut partitions = Vec::with_capacity(count);
        for _ in 0..count {
            partitions.push(get_i32(buf, "consumer protocol partition")?);
        }
        out.push(TopicPartitions { topic, partitions });
    }
    Ok(out)
}

fn put_topic_partitions(buf: &mut BytesMut, list: &[TopicPartitions]) -> EncodeResult<()> {
    put_array_len(buf, false, Some(list.len()), "consumer protocol topics")?;
    for tp in list {
        put_string(buf, false, &tp.topic, "consumer protocol topic")?;
        put_array_len(buf, false, Some(tp.partitions.len()), "consumer protocol partitions")?;
        for &p in &tp.partitions {
            put_i32(buf, p);
        }
    }
    Ok(())
}

fn topic_partitions_from_map(map: &BTreeMap<String, Vec<i32>>) -> Vec<TopicPartitions> {
    map.iter()
        .map(|(topic, partitions)| TopicPartitions { topic: topic.clone(), partitions: partitions.clone() })
        .collect()
}

/// Merges a wire list into a map; a topic listed twice gets the union, each list sorted and
/// without duplicates.
fn topic_partitions_to_map(list: &[TopicPartitions]) -> BTreeMap<String, Vec<i32>> {
    let mut sets: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for tp in list {
        sets.entry(tp.topic.clone()).or_default().extend(tp.partitions.iter().copied());
    }
    sets.into_iter().map(|(t, s)| (t, s.into_iter().collect())).collect()
}

impl ConsumerProtocolSubscription {
    /// Encodes with the version prefix. `version` is clamped to 0..=3; fields the version does
    /// not have are left out (as Kafka does with these "ignorable" fields). A topic name or rack
    /// id longer than 32767 bytes cannot be written.
    pub fn encode(&self, version: i16) -> EncodeResult<Bytes> {
        let version = clamp_version(version);
        let mut buf = BytesMut::new();
        put_i16(&mut buf, version);
        put_array_len(&mut buf, false, Some(self.topics.len()), "subscription topics")?;
        for t in &self.topics {
            put_string(&mut buf, false, t, "subscription topic")?;
        }
        put_nullable_bytes(&mut buf, false, self.user_data.as_deref(), "subscription user data")?;
        if version >= 1 {
            put_topic_partitions(&mut buf, &self.owned_partitions)?;
        }
        if version >= 2 {
            put_i32(&mut buf, self.generation_id);
        }
        if version >= 3 {
            put_nullable_string(&mut buf, false, self.rack_id.as_deref(), "subscription rack id")?;
        }
        Ok(buf.freeze())
    }

    /// Decodes a version-prefixed subscription and returns its version with it. Fields the
    /// version lacks get their defaults; bytes after the known fields are an error at versions
    /// 0-3 and ignored at higher versions.
    pub fn decode(mut data: Bytes) -> DecodeResult<(i16, Self)> {
        const WHAT: &str = "consumer protocol subscription";
        let buf = &mut data;
        let version = get_version(buf, WHAT)?;
        let mut sub = Self {
            topics: get_strings(buf, "subscription topics")?,
            user_data: get_nullable_bytes(buf, false, "subscription user data")?,
            ..Self::default()
        };
        if version >= 1 {
            sub.owned_partitions = get_topic_partitions(buf, "subscription owned partitions")?;
        }
        if version >= 2 {
            sub.generation_id = get_i32(buf, "subscription generation id")?;
        }
        if version >= 3 {
            sub.rack_id = get_nullable_string(buf, false, "subscription rack id")?.map(|s| s.to_string());
        }
        finish(buf, version, WHAT)?;
        Ok((version, sub))
    }
}

impl ConsumerProtocolAssignment {
    /// An assignment listing `partitions` topic by topic, in the map's order.
    pub fn from_map(partitions: &BTreeMap<String, Vec<i32>>, user_data: Option<Bytes>) -> Self {
        Self { assigned_partitions: topic_partitions_from_map(partitions), user_data }
    }

    /// The assigned partitions by topic (a topic listed twice is merged; partitions sorted and
    /// deduplicated).
    pub fn to_map(&self) -> BTreeMap<String, Vec<i32>> {
        topic_partitions_to_map(&self.assigned_partitions)
    }

    /// Encodes with the version prefix; `version` is clamped to 0..=3.
    pub fn encode(&self, version: i16) -> EncodeResult<Bytes> {
        let mut buf = BytesMut::new();
        put_i16(&mut buf, clamp_version(version));
        put_topic_partitions(&mut buf, &self.assigned_partitions)?;
        put_nullable_bytes(&mut buf, false, self.user_data.as_deref(), "assignment user data")?;
        Ok(buf.freeze())
    }

    /// Decodes a version-prefixed assignment and returns its version with it. Bytes after the
    /// known fields are an error at versions 0-3 and ignored at higher versions.
    pub fn decode(mut data: Bytes) -> DecodeResult<(i16, Self)> {
        const WHAT: &str = "consumer protocol assignment";
        let buf = &mut data;
        let version = get_version(buf, WHAT)?;
        let assigned_partitions = get_topic_partitions(buf, "assignment partitions")?;
        let user_data = get_nullable_bytes(buf, false, "assignment user data")?;
        finish(buf, version, WHAT)?;
        Ok((version, Self { assigned_partitions, user_data }))
    }
}

/// The user data the Java `CooperativeStickyAssignor` puts in its subscription: the member's
/// generation as a big-endian `i32`. Leaders read it from members whose subscription is older
/// than v2 (which has no `generation_id` field); see [`MemberSubscription::sticky_generation`].
pub fn cooperative_sticky_user_data(generation: i32) -> Bytes {
    Bytes::copy_from_slice(&generation.to_be_bytes())
}

// ---------------------------------------------------------------------------------------------
// Assignor input and output
// ---------------------------------------------------------------------------------------------

/// What the leader knows about one member: its ids from JoinGroup and its decoded subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSubscription {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its `group.instance.id` (KIP-345 static membership), if any.
    pub group_instance_id: Option<String>,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// The partitions the member says it owns, by topic.
    pub owned_partitions: BTreeMap<String, Vec<i32>>,
    /// The generation in which the member got `owned_partitions`; [`DEFAULT_GENERATION`] if
    /// unknown.
    pub generation: i32,
    /// Its `client.rack` (subscription v3+), for rack-aware assignment.
    pub rack: Option<String>,
    /// Opaque data from its subscription.
    pub user_data: Option<Bytes>,
}

impl MemberSubscription {
    /// A member with a subscription and nothing else.
    pub fn new(member_id: impl Into<String>, topics: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            member_id: member_id.into(),
            group_instance_id: None,
            topics: topics.into_iter().map(Into::into).collect(),
            owned_partitions: BTreeMap::new(),
            generation: DEFAULT_GENERATION,
            rack: None,
            user_data: None,
        }
    }

    /// Builds a member from JoinGroup's member id, group instance id and protocol metadata. An
    /// empty rack id counts as none, as in Java.
    pub fn from_wire(
        member_id: impl Into<String>,
        group_instance_id: Option<String>,
        sub: ConsumerProtocolSubscription,
    ) -> Self {
        Self {
            member_id: member_id.into(),
            group_instance_id,
            owned_partitions: topic_partitions_to_map(&sub.owned_partitions),
            topics: sub.topics,
            generation: sub.generation_id,
            rack: sub.rack_id.filter(|r| !r.is_empty()),
            user_data: sub.user_data,
        }
    }

    /// Decodes JoinGroup member metadata into a member.
    pub fn decode(
        member_id: impl Into<String>,
        group_instance_id: Option<String>,
        metadata: Bytes,
    ) -> DecodeResult<Self> {
        let (_, sub) = ConsumerProtocolSubscription::decode(metadata)?;
        Ok(Self::from_wire(member_id, group_instance_id, sub))
    }

    /// This member's subscription in wire form (owned partitions sorted by topic, as Java does).
    pub fn to_wire(&self) -> ConsumerProtocolSubscription {
        ConsumerProtocolSubscription {
            topics: self.topics.clone(),
            user_data: self.user_data.clone(),
            owned_partitions: topic_partitions_from_map(&self.owned_partitions),
            generation_id: self.generation,
            rack_id: self.rack.clone(),
        }
    }

    /// The generation the cooperative-sticky assignor uses for this member: `generation` when
    /// set (subscription v2+), else the generation in the assignor's user data
    /// ([`cooperative_sticky_user_data`], sent by members at v0-v1), else
    /// [`DEFAULT_GENERATION`]. User data too short to hold an `i32` counts as
    /// [`DEFAULT_GENERATION`], as in Java.
    pub fn sticky_generation(&self) -> i32 {
        if self.generation >= 0 {
            return self.generation;
        }
        match self.user_data.as_deref() {
            Some([a, b, c, d, ..]) => i32::from_be_bytes([*a, *b, *c, *d]),
            _ => DEFAULT_GENERATION,
        }
    }
}

/// The partitions of each topic assigned to one member; topics with none are left out.
pub type MemberAssignment = BTreeMap<String, Vec<i32>>;

/// The assignment of a group: every member id of the input, each with its (possibly empty)
/// [`MemberAssignment`]. Partitions are listed in ascending order.
pub type GroupAssignment = BTreeMap<String, MemberAssignment>;

/// How members move from one assignment to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RebalanceProtocol {
    /// Every member revokes everything before the rebalance and takes its new assignment.
    Eager,
    /// Members keep their partitions through the rebalance and revoke only those the new
    /// assignment takes away; a partition changes owner over two rebalances (KIP-429).
    Cooperative,
}

/// A client-side assignor: a name announced in JoinGroup and a pure assignment function.
pub trait Assignor {
    /// The protocol name in JoinGroup (`partition.assignment.strategy` in Java's terms).
    fn name(&self) -> &'static str;
    /// Assigns the partitions of the subscribed topics (`partitions`: topic → partition count;
    /// topics missing from it are ignored) over `members`.
    fn assign(&self, members: &[MemberSubscription], partitions: &BTreeMap<String, i32>) -> GroupAssignment;
    /// Eager (revoke everything, then reassign) or cooperative (KIP-429: revoke only what moves).
    fn protocol(&self) -> RebalanceProtocol;
}

/// [`range`] as an [`Assignor`] (`"range"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeAssignor;

/// [`roundrobin`] as an [`Assignor`] (`"roundrobin"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundRobinAssignor;

/// [`cooperative_sticky`] as an [`Assignor`] (`"cooperative-sticky"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CooperativeStickyAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }
    fn assign(&self, members: &[MemberSubscription], partitions: &BTreeMap<String, i32>) -> GroupAssignment {
        range(members, partitions)
    }
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }
}

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }
    fn assign(&self, members: &[MemberSubscription], partitions: &BTreeMap<String, i32>) -> GroupAssignment {
        roundrobin(members, partitions)
    }
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }
}

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }
    fn assign(&self, members: &[MemberSubscription], partitions: &BTreeMap<String, i32>) -> GroupAssignment {
        cooperative_sticky(members, partitions)
    }
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }
}

/// The assignor with a protocol name (`"range"`, `"roundrobin"`, `"cooperative-sticky"`) or the
/// Java class name of the same assignor (fully qualified or simple, e.g.
/// `org.apache.kafka.clients.consumer.RangeAssignor`).
pub fn by_name(name: &str) -> Option<Box<dyn Assignor + Send + Sync>> {
    let simple = name.strip_prefix("org.apache.kafka.clients.consumer.").unwrap_or(name);
    match simple {
        "range" | "RangeAssignor" => Some(Box::new(RangeAssignor)),
        "roundrobin" | "RoundRobinAssignor" => Some(Box::new(RoundRobinAssignor)),
        "cooperative-sticky" | "CooperativeStickyAssignor" => Some(Box::new(CooperativeStickyAssignor)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// The members with distinct member ids (the first of a duplicated id wins; the coordinator
/// never sends duplicates).
fn distinct_members(members: &[MemberSubscription]) -> Vec<&MemberSubscription> {
    let mut seen = BTreeSet::new();
    members.iter().filter(|m| seen.insert(m.member_id.as_str())).collect()
}

/// Every member with an empty assignment.
fn empty_assignment(members: &[&MemberSubscription]) -> GroupAssignment {
    members.iter().map(|m| (m.member_id.clone(), MemberAssignment::new())).collect()
}

/// A topic's partition count, or 0 if unknown.
fn partition_count(partitions: &BTreeMap<String, i32>, topic: &str) -> usize {
    partitions.get(topic).map_or(0, |&n| usize::try_from(n).unwrap_or(0))
}

/// Java's `MemberInfo` order: members with a group instance id first, by instance id; then the
/// others by member id. Static members thus keep their place across restarts.
fn java_member_order(a: &MemberSubscription, b: &MemberSubscription) -> Ordering {
    match (&a.group_instance_id, &b.group_instance_id) {
        (Some(x), Some(y)) => x.cmp(y).then_with(|| a.member_id.cmp(&b.member_id)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.member_id.cmp(&b.member_id),
    }
}

fn topic_set(m: &MemberSubscription) -> BTreeSet<&str> {
    m.topics.iter().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------------
// range
// ---------------------------------------------------------------------------------------------

/// The range assignor (`"range"`). Topic by topic, the members subscribed to the topic are
/// ordered (static members by group instance id first, then the others by member id) and the
/// partitions, in order, are cut into contiguous ranges: with `n` partitions and `k` members
/// each gets `n / k`, and the first `n % k` one more.
///
/// Balanced per topic; over several topics the first members can accumulate the extra
/// partitions (2 members, 2 topics of 3 partitions: 4 and 2), which is the price of
/// co-partitioning: partition `i` of every topic with the same subscribers and partition count
/// goes to the same member.
pub fn range(members: &[MemberSubscription], partitions: &BTreeMap<String, i32>) -> GroupAssignment {
    let mut members = distinct_members(members);
    members.sort_by(|a, b| java_member_order(a, b));
    let mut out = empty_assignment(&members);

    let mut subscribers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in &members {
        for topic in topic_set(m) {
            subscribers.entry(topic).or_default().push(&m.member_id);
        }
    }
    for (topic, ms) in subscribers {
        let n = partition_count(partitions, topic);
        let (per_member, with_extra) = (n / ms.len(), n % ms.len());
        let mut next = 0;
        for (i, member) in ms.into_iter().enumerate() {
            let len = per_member + usize::from(i < with_extra);
            if len > 0 {
                let range = (next..next + len).map(|p| p as i32).collect();
                out.get_mut(member).expect("every member has an entry").insert(topic.to_owned(), range);
            }
            next += len;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// roundrobin
// ---------------------------------------------------------------------------------------------

/// The round-robin assignor (`"roundrobin"`). All partitions of all subscribed topics, sorted
/// by topic then partition, are dealt one at a time over the members in a circle (ordered as
/// in [`range`]); a member not subscribed to a partition's topic is skipped for that partition
/// and the deal continues from the next member. With identical subscriptions the counts differ
/// by at most one; otherwise they can be unbalanced.
pub fn roundrobin(members: &[MemberSubscription], partitions: &BTreeMap<String, i32>) -> GroupAssignment {
    let mut members = distinct_members(members);
    members.sort_by(|a, b| java_member_order(a, b));
    let mut out = empty_assignment(&members);
    let sets: Vec<BTreeSet<&str>> = members.iter().map(|m| topic_set(m)).collect();
    let topics: BTreeSet<&str> = sets.iter().flatten().copied().collect();

    let mut next = 0;
    for topic in topics {
        for p in 0..partition_count(partitions, topic) {
            // Some member is subscribed to `topic`, so this stops within one turn.
            while !sets[next].contains(topic) {
                next = (next + 1) % members.len();
            }
            let assignment = out.get_mut(&members[next].member_id).expect("every member has an entry");
            assignment.entry(topic.to_owned()).or_default().push(p as i32);
            next = (next + 1) % members.len();
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// cooperative-sticky
// ---------------------------------------------------------------------------------------------

/// The cooperative sticky assignor (`"cooperative-sticky"`): as balanced as the subscriptions
/// allow, then keeping as many partitions as possible where they are, and never handing a
/// partition from one member to another within one rebalance.
///
/// # Algorithm
///
/// Members are indexed in member id order; topics nobody subscribes to (or without partitions)
/// are ignored.
///
/// 1. **Ownership.** Each member's generation is [`MemberSubscription::sticky_generation`]. A
///    claim in `owned_partitions` is *valid* if the member has the highest generation in the
///    group, is subscribed to the topic and the partition exists. A partition with exactly one
///    valid claimant is *owned* by it; a partition claimed by several members of the highest
///    generation, or only by members of older generations, is unowned.
/// 2. **Initial placement.** Owned partitions stay with their owners. Unowned partitions, most
///    constrained topics first (fewest subscribers, then topic, then partition), go one by one
///    to the least-loaded subscribed member (ties: a member claiming the partition, then the
///    member with fewest owned partitions, then member id).
/// 3. **Balancing.** The assignment is balanced when no *improving path* exists: a chain of
///    moves `m0 → m1 → … → mk` where each `mi` hands one partition of a topic `m(i+1)` is
///    subscribed to, and `load(mk) ≤ load(m0) - 2`. Applying one moves a unit of load from
///    `m0` to `mk` and strictly lowers the sum of squared loads, so this terminates; and an
///    assignment without improving paths is an optimal *semi-matching*: it minimises the
///    maximum load and every other convex measure of imbalance at once, the most balanced
///    assignment the subscriptions allow. With identical subscriptions every path is a single
///    move and the result has `max - min ≤ 1`. The heaviest member is tried first, towards the
///    lightest member it can reach, preferring paths that move the fewest owned partitions and
///    then the fewest hops; a member gives away partitions it did not own before its own.
///    Balancing runs twice: first moving only partitions that are not on their owner (unowned
///    partitions placed in step 2), then any partition.
/// 4. **Cooperation.** A partition assigned to a member while another member of the group
///    claims it in `owned_partitions` (whatever its generation) is left out of the assignment
///    this round: its owner sees it missing and revokes it, then rejoins, and the next
///    rebalance, where nobody claims it, assigns it.
///
/// Stickiness: with identical subscriptions the number of owned partitions that move is the
/// minimum any balanced assignment needs. The two-round protocol converges: feeding the result
/// back as `owned_partitions` (all members in the same, newer generation) gives an assignment
/// that keeps every assigned partition in place and assigns every withheld one, because the
/// first balancing pass can reach, without moving owned partitions, the optimal balance the
/// previous round found.
pub fn cooperative_sticky(members: &[MemberSubscription], partitions: &BTreeMap<String, i32>) -> GroupAssignment {
    let mut members = distinct_members(members);
    members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    let mut sticky = Sticky::new(&members, partitions);
    sticky.place();
    sticky.balance(false);
    sticky.balance(true);
    sticky.result(&members)
}

/// Who claims a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    None,
    One(usize),
    Many,
}

impl Claim {
    fn add(&mut self, member: usize) {
        *self = match *self {
            Claim::None => Claim::One(member),
            Claim::One(m) if m == member => Claim::One(m),
            _ => Claim::Many,
        };
    }
}

/// The partitions of one topic a member holds: those it owned before (`kept`) and the others
/// (`moved`), each kept sorted.
#[derive(Default)]
struct Held {
    kept: BTreeSet<i32>,
    moved: BTreeSet<i32>,
}

/// One hop of a path: `from` gives a partition of `topic` to `to`.
#[derive(Clone, Copy, Debug)]
struct Hop {
    from: usize,
    topic: usize,
    to: usize,
}

struct Sticky<'a> {
    topics: Vec<&'a str>,
    /// Index of each topic's partition 0 in the flat partition arrays.
    offsets: Vec<usize>,
    counts: Vec<usize>,
    /// `[member][topic]`.
    subscribed: Vec<Vec<bool>>,
    /// `[topic]`: members subscribed to it, in member order.
    subscribers: Vec<Vec<usize>>,
    /// `[partition]`: the valid owner.
    owner: Vec<Option<usize>>,
    /// `[partition]`: every member claiming it, valid or not.
    claims: Vec<Claim>,
    /// `[member]`: how many partitions it owns (validly).
    owned_count: Vec<usize>,
    /// `[partition]`: the member it is placed on (`usize::MAX` while unplaced).
    holder: Vec<usize>,
    load: Vec<usize>,
    /// `[member]`: held partitions by topic index; no empty entries.
    held: Vec<BTreeMap<usize, Held>>,
}

impl<'a> Sticky<'a> {
    fn new(members: &[&'a MemberSubscription], partitions: &BTreeMap<String, i32>) -> Self {
        let n = members.len();
        let mut topic_index: BTreeMap<&'a str, usize> = BTreeMap::new();
        let all: BTreeSet<&'a str> = members.iter().flat_map(|m| m.topics.iter().map(String::as_str)).collect();
        let (mut topics, mut offsets, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        let mut total = 0;
        for topic in all {
            let count = partition_count(partitions, topic);
            if count > 0 {
                topic_index.insert(topic, topics.len());
                topics.push(topic);
                offsets.push(total);
                counts.push(count);
                total += count;
            }
        }
        let mut subscribed = vec![vec![false; topics.len()]; n];
        let mut subscribers = vec![Vec::new(); topics.len()];
        for (m, member) in members.iter().enumerate() {
            for topic in &member.topics {
                if let Some(&t) = topic_index.get(topic.as_str()) {
                    if !subscribed[m][t] {
                        subscribed[m][t] = true;
                        subscribers[t].push(m);
                    }
                }
            }
        }

        let max_generation = members.iter().map(|m| m.sticky_generation()).max().unwrap_or(DEFAULT_GENERATION);
        let mut claims = vec![Claim::None; total];
        let mut valid = vec![Claim::None; total];
        for (m, member) in members.iter().enumerate() {
            let current = member.sticky_generation() == max_generation;
            for (topic, ps) in &member.owned_partitions {
                let Some(&t) = topic_index.get(topic.as_str()) else {
                    continue;
                };
                for &p in ps {
                    let Ok(p) = usize::try_from(p) else { continue };
                    if p >= counts[t] {
                        continue;
                    }
                    claims[offsets[t] + p].add(m);
                    if current && subscribed[m][t] {
                        valid[offsets[t] + p].add(m);
                    }
                }
            }
        }
        let owner: Vec<Option<usize>> =
            valid.iter().map(|c| if let Claim::One(m) = *c { Some(m) } else { None }).collect();
        let mut owned_count = vec![0; n];
        for m in owner.iter().flatten() {
            owned_count[*m] += 1;
        }

        Self {
            topics,
            offsets,
            counts,
            subscribed,
            subscribers,
            owner,
            claims,
            owned_count,
            holder: vec![usize::MAX; total],
            load: vec![0; n],
            held: (0..n).map(|_| BTreeMap::new()).collect(),
        }
    }

    fn put(&mut self, topic: usize, p: usize, member: usize) {
        let gp = self.offsets[topic] + p;
        self.holder[gp] = member;
        self.load[member] += 1;
        let held = self.held[member].entry(topic).or_default();
        if self.owner[gp] == Some(member) {
            held.kept.insert(p as i32);
        } else {
            held.moved.insert(p as i32);
        }
    }

    fn take(&mut self, topic: usize, p: usize, member: usize) {
        let held = self.held[member].get_mut(&topic).expect("the partition is held");
        let removed = held.kept.remove(&(p as i32)) || held.moved.remove(&(p as i32));
        debug_assert!(removed);
        if held.kept.is_empty() && held.moved.is_empty() {
            self.held[member].remove(&topic);
        }
        self.load[member] -= 1;
    }

    /// Step 2: owned partitions to their owners, then the unowned ones, most constrained first.
    fn place(&mut self) {
        let mut unowned = Vec::new();
        for t in 0..self.topics.len() {
            for p in 0..self.counts[t] {
                match self.owner[self.offsets[t] + p] {
                    Some(m) => self.put(t, p, m),
                    None => unowned.push((t, p)),
                }
            }
        }
        unowned.sort_by_key(|&(t, p)| (self.subscribers[t].len(), t, p));
        for (t, p) in unowned {
            let gp = self.offsets[t] + p;
            let claim = self.claims[gp];
            let best = self.subscribers[t]
                .iter()
                .copied()
                .min_by_key(|&m| (self.load[m], claim != Claim::One(m), self.owned_count[m], m))
                .expect("only subscribed topics are indexed");
            self.put(t, p, best);
        }
    }

    /// Step 3: applies improving paths until there are none. With `any` false only partitions
    /// that are not on their owner may move.
    fn balance(&mut self, any: bool) {
        loop {
            let Some(&lightest) = self.load.iter().min() else {
                return;
            };
            let mut order: Vec<usize> = (0..self.load.len()).collect();
            order.sort_by_key(|&m| (Reverse(self.load[m]), m));
            let mut improved = false;
            for u in order {
                if self.load[u] < lightest + 2 {
                    break;
                }
                if let Some(path) = self.find_path(u, any) {
                    self.apply(&path);
                    improved = true;
                    break;
                }
            }
            if !improved {
                return;
            }
        }
    }

    /// The cost of `from` giving a partition of `topic`: 0 if it holds one it did not own,
    /// 1 if it must give an owned one, `None` if it may not give any.
    fn edge_cost(&self, from: usize, topic: usize, any: bool) -> Option<u32> {
        let held = self.held[from].get(&topic)?;
        if !held.moved.is_empty() {
            Some(0)
        } else if any && !held.kept.is_empty() {
            Some(1)
        } else {
            None
        }
    }

    /// The cheapest direct edge from `from` to `to`: (cost, topic).
    fn direct(&self, from: usize, to: usize, any: bool) -> Option<(u32, usize)> {
        self.held[from]
            .keys()
            .filter(|&&t| self.subscribed[to][t])
            .filter_map(|&t| self.edge_cost(from, t, any).map(|c| (c, t)))
            .min()
    }

    /// An improving path from `u`: to the lightest member it reaches with load ≤ load(u) - 2,
    /// then fewest owned partitions moved, fewest hops, lowest member index.
    fn find_path(&self, u: usize, any: bool) -> Option<Vec<Hop>> {
        let limit = self.load[u].checked_sub(2)?;
        let lightest = (0..self.load.len()).filter(|&m| m != u).map(|m| self.load[m]).min()?;
        if lightest > limit {
            return None;
        }
        // Fast path: a lightest member `u` can give to directly.
        let direct = (0..self.load.len())
            .filter(|&m| m != u && self.load[m] == lightest)
            .filter_map(|m| self.direct(u, m, any).map(|(cost, topic)| (cost, m, topic)))
            .min();
        if let Some((_, to, topic)) = direct {
            return Some(vec![Hop { from: u, topic, to }]);
        }

        // Dijkstra over members by (owned partitions moved, hops).
        let n = self.load.len();
        let mut dist: Vec<Option<(u32, u32)>> = vec![None; n];
        let mut parent: Vec<Option<Hop>> = vec![None; n];
        let mut done = vec![false; n];
        let mut heap = BinaryHeap::new();
        dist[u] = Some((0, 0));
        heap.push(Reverse((0u32, 0u32, u)));
        while let Some(Reverse((cost, hops, x))) = heap.pop() {
            if done[x] {
                continue;
            }
            done[x] = true;
            for &t in self.held[x].keys() {
                let Some(c) = self.edge_cost(x, t, any) else {
                    continue;
                };
                let next = (cost + c, hops + 1);
                for &y in &self.subscribers[t] {
                    if y != x && !done[y] && dist[y].is_none_or(|d| next < d) {
                        dist[y] = Some(next);
                        parent[y] = Some(Hop { from: x, topic: t, to: y });
                        heap.push(Reverse((next.0, next.1, y)));
                    }
                }
            }
        }
        let target = (0..n)
            .filter(|&m| m != u && self.load[m] <= limit)
            .filter_map(|m| dist[m].map(|(c, h)| (self.load[m], c, h, m)))
            .min()?
            .3;
        let mut path = Vec::new();
        let mut at = target;
        while at != u {
            let hop = parent[at].expect("reached members have a parent");
            path.push(hop);
            at = hop.from;
        }
        path.reverse();
        Some(path)
    }

    /// Moves one partition along each hop: one returning to its owner if there is one, else one
    /// the giver did not own, else one it owned (the highest numbered).
    fn apply(&mut self, path: &[Hop]) {
        for hop in path {
            let held = &self.held[hop.from][&hop.topic];
            let offset = self.offsets[hop.topic];
            let home = held.moved.iter().rev().find(|&&p| self.owner[offset + p as usize] == Some(hop.to));
            let p = home
                .or_else(|| held.moved.last())
                .or_else(|| held.kept.last())
                .copied()
                .expect("a path only uses members holding a partition of the topic") as usize;
            self.take(hop.topic, p, hop.from);
            self.put(hop.topic, p, hop.to);
        }
    }

    /// Step 4: the assignment, without partitions another member still claims.
    fn result(&self, members: &[&MemberSubscription]) -> GroupAssignment {
        let mut out = empty_assignment(members);
        for (t, topic) in self.topics.iter().enumerate() {
            for p in 0..self.counts[t] {
                let gp = self.offsets[t] + p;
                let m = self.holder[gp];
                let claimed_by_other = match self.claims[gp] {
                    Claim::None => false,
                    Claim::One(c) => c != m,
                    Claim::Many => true,
                };
                if !claimed_by_other {
                    let assignment = out.get_mut(&members[m].member_id).expect("every member has an entry");
                    assignment.entry((*topic).to_owned()).or_default().push(p as i32);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription::new(id, topics.iter().copied())
    }

    fn counts(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|&(t, n)| (t.to_owned(), n)).collect()
    }

    fn parts(list: &[(&str, &[i32])]) -> MemberAssignment {
        list.iter().map(|&(t, ps)| (t.to_owned(), ps.to_vec())).collect()
    }

    fn owning(mut m: MemberSubscription, generation: i32, owned: &[(&str, &[i32])]) -> MemberSubscription {
        m.generation = generation;
        m.owned_partitions = parts(owned);
        m
    }

    #[test]
    fn range_gives_the_first_members_the_extra_partitions() {
        let members = [member("b", &["t"]), member("a", &["t"])];
        let out = range(&members, &counts(&[("t", 5)]));
        assert_eq!(out["a"], parts(&[("t", &[0, 1, 2])]));
        assert_eq!(out["b"], parts(&[("t", &[3, 4])]));
    }

    #[test]
    fn range_matches_the_java_documentation_example() {
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let out = range(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(out["C0"], parts(&[("t0", &[0, 1]), ("t1", &[0, 1])]));
        assert_eq!(out["C1"], parts(&[("t0", &[2]), ("t1", &[2])]));
    }

    #[test]
    fn range_handles_partial_subscriptions_unknown_topics_and_idle_members() {
        let members = [member("a", &["x", "y", "gone"]), member("b", &["y"]), member("c", &["y"])];
        let out = range(&members, &counts(&[("x", 2), ("y", 2)]));
        assert_eq!(out["a"], parts(&[("x", &[0, 1]), ("y", &[0])]));
        assert_eq!(out["b"], parts(&[("y", &[1])]));
        assert_eq!(out["c"], MemberAssignment::new());
    }

    #[test]
    fn range_orders_static_members_by_instance_id_first() {
        let mut a = member("a", &["t"]);
        let mut z = member("z", &["t"]);
        z.group_instance_id = Some("i1".into());
        a.group_instance_id = Some("i2".into());
        let m = member("m", &["t"]);
        let out = range(&[a, z, m], &counts(&[("t", 3)]));
        assert_eq!(out["z"], parts(&[("t", &[0])]));
        assert_eq!(out["a"], parts(&[("t", &[1])]));
        assert_eq!(out["m"], parts(&[("t", &[2])]));
    }

    #[test]
    fn roundrobin_matches_the_java_documentation_examples() {
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let out = roundrobin(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(out["C0"], parts(&[("t0", &[0, 2]), ("t1", &[1])]));
        assert_eq!(out["C1"], parts(&[("t0", &[1]), ("t1", &[0, 2])]));

        let members = [member("C0", &["t0"]), member("C1", &["t0", "t1"]), member("C2", &["t0", "t1", "t2"])];
        let out = roundrobin(&members, &counts(&[("t0", 1), ("t1", 2), ("t2", 3)]));
        assert_eq!(out["C0"], parts(&[("t0", &[0])]));
        assert_eq!(out["C1"], parts(&[("t1", &[0])]));
        assert_eq!(out["C2"], parts(&[("t1", &[1]), ("t2", &[0, 1, 2])]));
    }

    #[test]
    fn roundrobin_deals_three_members_over_seven_partitions() {
        let members = [member("a", &["t"]), member("b", &["t"]), member("c", &["t"])];
        let out = roundrobin(&members, &counts(&[("t", 7)]));
        assert_eq!(out["a"], parts(&[("t", &[0, 3, 6])]));
        assert_eq!(out["b"], parts(&[("t", &[1, 4])]));
        assert_eq!(out["c"], parts(&[("t", &[2, 5])]));
    }

    #[test]
    fn cooperative_sticky_from_scratch_is_balanced_and_complete() {
        let members = [member("a", &["t", "u"]), member("b", &["t", "u"]), member("c", &["t", "u"])];
        let out = cooperative_sticky(&members, &counts(&[("t", 4), ("u", 3)]));
        let sizes: Vec<usize> = out.values().map(|a| a.values().map(Vec::len).sum()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 7);
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
    }

    #[test]
    fn cooperative_sticky_revokes_first_and_assigns_next_round() {
        // a owned everything; b joins. Round 1: a keeps 0-2 and drops 3-5, which nobody gets.
        let a = owning(member("a", &["t"]), 4, &[("t", &[0, 1, 2, 3, 4, 5])]);
        let b = member("b", &["t"]);
        let out = cooperative_sticky(&[a.clone(), b.clone()], &counts(&[("t", 6)]));
        assert_eq!(out["a"], parts(&[("t", &[0, 1, 2])]));
        assert_eq!(out["b"], MemberAssignment::new());
        // Round 2: b gets them.
        let a = owning(a, 5, &[("t", &[0, 1, 2])]);
        let b = owning(b, 5, &[]);
        let out = cooperative_sticky(&[a, b], &counts(&[("t", 6)]));
        assert_eq!(out["a"], parts(&[("t", &[0, 1, 2])]));
        assert_eq!(out["b"], parts(&[("t", &[3, 4, 5])]));
    }

    #[test]
    fn cooperative_sticky_ignores_stale_and_doubly_claimed_ownership() {
        // b's claim is from an older generation; a and c both claim partition 1.
        let a = owning(member("a", &["t"]), 7, &[("t", &[1])]);
        let b = owning(member("b", &["t"]), 6, &[("t", &[0, 2])]);
        let c = owning(member("c", &["t"]), 7, &[("t", &[1])]);
        let out = cooperative_sticky(&[a, b, c], &counts(&[("t", 3)]));
        let all: Vec<(String, i32)> = out
            .iter()
            .flat_map(|(m, a)| a.values().flat_map(move |ps| ps.iter().map(move |&p| (m.clone(), p))))
            .collect();
        // Partition 1 is claimed by two members: nobody gets it this round. Partitions 0 and 2
        // are claimed by b, so they go to b or to nobody.
        assert!(all.iter().all(|(m, p)| *p != 1 && m == "b"), "{all:?}");
    }

    #[test]
    fn cooperative_sticky_reads_the_generation_from_java_user_data() {
        let mut m = member("a", &["t"]);
        assert_eq!(m.sticky_generation(), DEFAULT_GENERATION);
        m.user_data = Some(cooperative_sticky_user_data(9));
        assert_eq!(m.sticky_generation(), 9);
        m.generation = 3;
        assert_eq!(m.sticky_generation(), 3);
        m.generation = -1;
        m.user_data = Some(Bytes::from_static(b"\x01"));
        assert_eq!(m.sticky_generation(), DEFAULT_GENERATION);
    }

    #[test]
    fn cooperative_sticky_balances_through_chains() {
        // x can only take t, z only u; y can take both. y holds all of u and t's are on x.
        // The balanced result needs y to pass u partitions to z and take t partitions from x.
        let x = owning(member("x", &["t"]), 1, &[("t", &[0, 1, 2, 3])]);
        let y = owning(member("y", &["t", "u"]), 1, &[("u", &[0, 1])]);
        let z = member("z", &["u"]);
        let round1 = cooperative_sticky(&[x.clone(), y.clone(), z.clone()], &counts(&[("t", 4), ("u", 2)]));
        let next = |m: MemberSubscription| MemberSubscription {
            owned_partitions: round1[&m.member_id].clone(),
            generation: 2,
            ..m
        };
        let round2 = cooperative_sticky(&[next(x), next(y), next(z)], &counts(&[("t", 4), ("u", 2)]));
        let sizes: Vec<usize> = round2.values().map(|a| a.values().map(Vec::len).sum()).collect();
        assert_eq!(sizes, vec![2, 2, 2], "{round1:?} then {round2:?}");
    }

    #[test]
    fn by_name_knows_protocol_and_java_class_names() {
        for (name, expected) in [
            ("range", "range"),
            ("org.apache.kafka.clients.consumer.RangeAssignor", "range"),
            ("roundrobin", "roundrobin"),
            ("org.apache.kafka.clients.consumer.RoundRobinAssignor", "roundrobin"),
            ("cooperative-sticky", "cooperative-sticky"),
            ("org.apache.kafka.clients.consumer.CooperativeStickyAssignor", "cooperative-sticky"),
        ] {
            assert_eq!(by_name(name).map(|a| a.name()), Some(expected));
        }
        assert!(by_name("sticky").is_none());
        assert_eq!(by_name("cooperative-sticky").unwrap().protocol(), RebalanceProtocol::Cooperative);
        assert_eq!(by_name("range").unwrap().protocol(), RebalanceProtocol::Eager);
    }

    #[test]
    fn subscription_v0_and_v3_bytes() {
        let sub = ConsumerProtocolSubscription {
            topics: vec!["t".into()],
            user_data: None,
            owned_partitions: vec![TopicPartitions { topic: "t".into(), partitions: vec![2] }],
            generation_id: 5,
            rack_id: Some("r".into()),
        };
        let v0 = sub.encode(0).unwrap();
        assert_eq!(&v0[..], b"\x00\x00\x00\x00\x00\x01\x00\x01t\xff\xff\xff\xff");
        let v3 = sub.encode(3).unwrap();
        assert_eq!(
            &v3[..],
            b"\x00\x03\x00\x00\x00\x01\x00\x01t\xff\xff\xff\xff\
              \x00\x00\x00\x01\x00\x01t\x00\x00\x00\x01\x00\x00\x00\x02\
              \x00\x00\x00\x05\x00\x01r"
        );
        assert_eq!(ConsumerProtocolSubscription::decode(v3).unwrap(), (3, sub.clone()));
        let (version, old) = ConsumerProtocolSubscription::decode(v0).unwrap();
        assert_eq!(version, 0);
        assert_eq!(old, ConsumerProtocolSubscription { topics: vec!["t".into()], ..Default::default() });
    }

    #[test]
    fn newer_versions_decode_and_skip_unknown_fields() {
        let sub = ConsumerProtocolSubscription { topics: vec!["t".into()], generation_id: 1, ..Default::default() };
        let mut raw = sub.encode(3).unwrap().to_vec();
        raw[1] = 9;
        raw.extend_from_slice(b"future");
        assert_eq!(ConsumerProtocolSubscription::decode(Bytes::from(raw.clone())).unwrap(), (9, sub.clone()));
        raw[1] = 3;
        assert!(matches!(
            ConsumerProtocolSubscription::decode(Bytes::from(raw)),
            Err(DecodeError::TrailingBytes { count: 6, .. })
        ));

        let asg = ConsumerProtocolAssignment::from_map(&parts(&[("t", &[0, 1])]), Some(Bytes::from_static(b"u")));
        let mut raw = asg.encode(1).unwrap().to_vec();
        raw[1] = 4;
        raw.push(0);
        assert_eq!(ConsumerProtocolAssignment::decode(Bytes::from(raw)).unwrap(), (4, asg));
    }

    #[test]
    fn negative_versions_and_nulls_are_refused() {
        assert!(matches!(
            ConsumerProtocolSubscription::decode(Bytes::from_static(b"\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff")),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            ConsumerProtocolAssignment::decode(Bytes::from_static(b"\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff")),
            Err(DecodeError::UnexpectedNull { .. })
        ));
    }

    #[test]
    fn member_subscription_from_metadata() {
        let sub = ConsumerProtocolSubscription {
            topics: vec!["t".into()],
            owned_partitions: vec![
                TopicPartitions { topic: "t".into(), partitions: vec![3, 1] },
                TopicPartitions { topic: "t".into(), partitions: vec![1, 0] },
            ],
            generation_id: 2,
            rack_id: Some(String::new()),
            ..Default::default()
        };
        let m = MemberSubscription::decode("m", None, sub.encode(3).unwrap()).unwrap();
        assert_eq!(m.owned_partitions, parts(&[("t", &[0, 1, 3])]));
        assert_eq!(m.generation, 2);
        assert_eq!(m.rack, None);
        assert_eq!(
            m.to_wire().encode(3).unwrap(),
            MemberSubscription { rack: None, ..m.clone() }.to_wire().encode(3).unwrap()
        );
    }
}
