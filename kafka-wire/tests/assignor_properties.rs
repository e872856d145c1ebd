//! Properties of the consumer group assignors (`kafka_wire::proto::assignor`) over random groups,
//! and of the consumer protocol's wire formats over random values and hostile bytes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use kafka_wire::codec::DecodeError;
use kafka_wire::proto::assignor::{
    cooperative_sticky, range, roundrobin, Assignor, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    CooperativeStickyAssignor, GroupAssignment, MemberSubscription, RangeAssignor, RoundRobinAssignor, TopicPartitions,
    DEFAULT_GENERATION,
};
use proptest::prelude::*;

type Partition = (String, i32);

// ---------------------------------------------------------------------------------------------
// Random groups
// ---------------------------------------------------------------------------------------------

/// The raw material of a random group; [`Spec::build`] turns it into subscriptions.
#[derive(Clone, Debug)]
struct Spec {
    /// Partition count of topic `t{i}`.
    counts: Vec<i32>,
    /// Number of members.
    n: usize,
    /// Member id seeds (ids are `m{seed}-{index}`, so their order is random).
    seeds: Vec<u16>,
    /// Topic subsets, as bit masks over the topics.
    masks: Vec<u8>,
    /// Prior owner of each partition (`% (n + 1)`; `n` is nobody).
    owners: Vec<u8>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec(1..=20i32, 1..=4),
        1..=8usize,
        prop::collection::vec(any::<u16>(), 8),
        prop::collection::vec(any::<u8>(), 8),
        prop::collection::vec(any::<u8>(), 80),
    )
        .prop_map(|(counts, n, seeds, masks, owners)| Spec { counts, n, seeds, masks, owners })
}

impl Spec {
    fn partitions(&self) -> BTreeMap<String, i32> {
        self.counts.iter().enumerate().map(|(i, &c)| (format!("t{i}"), c)).collect()
    }

    fn all_partitions(&self) -> Vec<Partition> {
        self.partitions().into_iter().flat_map(|(t, c)| (0..c).map(move |p| (t.clone(), p))).collect()
    }

    /// Members subscribed to random subsets (or all to the first member's subset when
    /// `identical`), each owning the partitions `owners` gives it (disjoint), at `generation`.
    fn build(&self, identical: bool, with_ownership: bool, generation: i32) -> Vec<MemberSubscription> {
        let topics = self.counts.len();
        let full = (1u8 << topics) - 1;
        let mut members: Vec<MemberSubscription> = (0..self.n)
            .map(|i| {
                let mask = if identical { self.masks[0] } else { self.masks[i] } & full;
                // Identical subscriptions are never empty, so balance means something.
                let mask = if identical && mask == 0 { full } else { mask };
                let subscribed = (0..topics).filter(|t| mask & (1 << t) != 0).map(|t| format!("t{t}"));
                let mut m = MemberSubscription::new(format!("m{}-{i}", self.seeds[i]), subscribed);
                m.generation = generation;
                m
            })
            .collect();
        if with_ownership {
            for (k, (topic, p)) in self.all_partitions().into_iter().enumerate() {
                let owner = usize::from(self.owners[k]) % (self.n + 1);
                if owner < self.n {
                    members[owner].owned_partitions.entry(topic).or_default().push(p);
                }
            }
        }
        members
    }
}

/// Random claims from a hostile or confused group: overlapping, stale, on unknown topics and
/// out-of-range partitions, at random generations.
fn scramble_claims(members: &mut [MemberSubscription], noise: &[(u8, u8, i8, i8)]) {
    let n = members.len();
    for &(who, topic, partition, generation) in noise {
        let m = &mut members[usize::from(who) % n];
        m.owned_partitions.entry(format!("t{}", topic % 6)).or_default().push(i32::from(partition) % 24);
        if generation % 4 == 0 {
            m.generation = i32::from(generation % 3);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

fn flatten(a: &GroupAssignment) -> Vec<(String, Partition)> {
    a.iter()
        .flat_map(|(m, tps)| tps.iter().flat_map(move |(t, ps)| ps.iter().map(move |&p| (m.clone(), (t.clone(), p)))))
        .collect()
}

fn owner_of(a: &GroupAssignment) -> BTreeMap<Partition, String> {
    flatten(a).into_iter().map(|(m, tp)| (tp, m)).collect()
}

fn load(a: &GroupAssignment, member: &str) -> usize {
    a[member].values().map(Vec::len).sum()
}

fn subscribes(m: &MemberSubscription, topic: &str) -> bool {
    m.topics.iter().any(|t| t == topic)
}

fn by_id(members: &[MemberSubscription]) -> BTreeMap<&str, &MemberSubscription> {
    members.iter().map(|m| (m.member_id.as_str(), m)).collect()
}

/// The partitions some member is subscribed to.
fn subscribed_partitions(members: &[MemberSubscription], partitions: &BTreeMap<String, i32>) -> BTreeSet<Partition> {
    partitions
        .iter()
        .filter(|(t, _)| members.iter().any(|m| subscribes(m, t)))
        .flat_map(|(t, &c)| (0..c).map(move |p| (t.clone(), p)))
        .collect()
}

fn claimants(members: &[MemberSubscription], tp: &Partition) -> Vec<String> {
    members
        .iter()
        .filter(|m| m.owned_partitions.get(&tp.0).is_some_and(|ps| ps.contains(&tp.1)))
        .map(|m| m.member_id.clone())
        .collect()
}

/// Every member has an entry and nothing else does; each assigned partition exists, is assigned
/// once, in ascending order, to a member subscribed to its topic; with `complete`, every
/// partition of a subscribed topic is assigned.
fn check_valid(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
    a: &GroupAssignment,
    complete: bool,
) -> Result<(), TestCaseError> {
    let ids: BTreeSet<&str> = members.iter().map(|m| m.member_id.as_str()).collect();
    prop_assert_eq!(a.keys().map(String::as_str).collect::<BTreeSet<_>>(), ids);
    let members_by_id = by_id(members);
    let mut seen = BTreeSet::new();
    for (m, tps) in a {
        for (t, ps) in tps {
            prop_assert!(!ps.is_empty(), "empty list for {} {}", m, t);
            prop_assert!(ps.windows(2).all(|w| w[0] < w[1]), "unsorted {:?}", ps);
            prop_assert!(subscribes(members_by_id[m.as_str()], t), "{} got {} unsubscribed", m, t);
            for &p in ps {
                prop_assert!((0..partitions[t]).contains(&p), "{}-{} does not exist", t, p);
                prop_assert!(seen.insert((t.clone(), p)), "{}-{} assigned twice", t, p);
            }
        }
    }
    if complete {
        let expected = subscribed_partitions(members, partitions);
        prop_assert_eq!(&seen, &expected, "some partitions are unassigned");
    }
    Ok(())
}

fn spread(a: &GroupAssignment) -> usize {
    let loads: Vec<usize> = a.keys().map(|m| load(a, m)).collect();
    loads.iter().max().unwrap() - loads.iter().min().unwrap()
}

fn sum_of_squares(a: &GroupAssignment) -> usize {
    a.keys().map(|m| load(a, m).pow(2)).sum()
}

/// The optimality criterion of balanced assignment ("semi-matching"), checked independently
/// of the assignor: no member can pass load along a chain of moves (each member giving a
/// partition of a topic the next one is subscribed to) to a member with two partitions fewer.
fn check_no_improving_path(members: &[MemberSubscription], a: &GroupAssignment) -> Result<(), TestCaseError> {
    for u in a.keys() {
        let mut reached = BTreeSet::from([u.clone()]);
        let mut queue = VecDeque::from([u.clone()]);
        while let Some(x) = queue.pop_front() {
            for t in a[&x].keys() {
                for y in members.iter().filter(|m| subscribes(m, t)) {
                    if reached.insert(y.member_id.clone()) {
                        queue.push_back(y.member_id.clone());
                    }
                }
            }
        }
        for v in reached {
            prop_assert!(load(a, &v) + 2 > load(a, u), "{} could pass load to {}: {:?}", u, v, a);
        }
    }
    Ok(())
}

/// The next round's subscriptions: everyone owns what `a` gave it, at `generation`.
fn next_round(members: &[MemberSubscription], a: &GroupAssignment, generation: i32) -> Vec<MemberSubscription> {
    members
        .iter()
        .map(|m| MemberSubscription { owned_partitions: a[&m.member_id].clone(), generation, ..m.clone() })
        .collect()
}

/// Checks one cooperative round: a valid partial assignment in which no partition goes to a
/// member while another claims it, and every partition left out is claimed by someone.
fn check_cooperative_round(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
    a: &GroupAssignment,
) -> Result<(), TestCaseError> {
    check_valid(members, partitions, a, false)?;
    let owners = owner_of(a);
    for tp in subscribed_partitions(members, partitions) {
        let claimed = claimants(members, &tp);
        match owners.get(&tp) {
            Some(m) => {
                prop_assert!(claimed.iter().all(|c| c == m), "{:?} given to {} while {:?} claim it", tp, m, claimed)
            }
            None => prop_assert!(!claimed.is_empty(), "{:?} left unassigned though nobody claims it", tp),
        }
    }
    Ok(())
}

/// Runs the two cooperative rounds from `members` and checks both; returns both results.
fn two_rounds(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, i32>,
) -> Result<(GroupAssignment, Vec<MemberSubscription>, GroupAssignment), TestCaseError> {
    let first = cooperative_sticky(members, partitions);
    check_cooperative_round(members, partitions, &first)?;
    let max_generation = members.iter().map(|m| m.generation).max().unwrap_or(DEFAULT_GENERATION);
    let second_members = next_round(members, &first, max_generation.max(0) + 1);
    let second = cooperative_sticky(&second_members, partitions);
    check_valid(&second_members, partitions, &second, true)?;
    // The second round moves nothing: it only adds the partitions withheld in the first.
    for (m, tps) in &first {
        for (t, ps) in tps {
            let now = second[m].get(t).cloned().unwrap_or_default();
            prop_assert!(ps.iter().all(|p| now.contains(p)), "round 2 moved {}-{:?} off {}", t, ps, m);
        }
    }
    Ok((first, second_members, second))
}

// ---------------------------------------------------------------------------------------------
// Assignor properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn eager_assignors_assign_every_partition_once_to_a_subscriber(spec in spec()) {
        let members = spec.build(false, false, DEFAULT_GENERATION);
        let partitions = spec.partitions();
        check_valid(&members, &partitions, &range(&members, &partitions), true)?;
        check_valid(&members, &partitions, &roundrobin(&members, &partitions), true)?;
    }

    #[test]
    fn assignors_do_not_depend_on_member_order(spec in spec(), rotate in 0..8usize) {
        let members = spec.build(false, true, 1);
        let partitions = spec.partitions();
        let mut shuffled = members.clone();
        shuffled.reverse();
        let k = rotate % shuffled.len();
        shuffled.rotate_left(k);
        let assignors: [&dyn Assignor; 3] = [&RangeAssignor, &RoundRobinAssignor, &CooperativeStickyAssignor];
        for a in assignors {
            prop_assert_eq!(a.assign(&members, &partitions), a.assign(&shuffled, &partitions), "{}", a.name());
        }
    }

    #[test]
    fn identical_subscriptions_are_balanced(spec in spec(), owned in any::<bool>()) {
        let members = spec.build(true, owned, 1);
        let partitions = spec.partitions();
        prop_assert!(spread(&roundrobin(&members, &partitions)) <= 1);
        // Range balances each topic, not the total.
        let ranged = range(&members, &partitions);
        for topic in partitions.keys().filter(|t| subscribes(&members[0], t)) {
            let per_member: Vec<usize> =
                ranged.values().map(|a| a.get(topic).map_or(0, Vec::len)).collect();
            prop_assert!(per_member.iter().max().unwrap() - per_member.iter().min().unwrap() <= 1);
        }
        let (_, _, second) = two_rounds(&members, &partitions)?;
        prop_assert!(spread(&second) <= 1, "{:?}", second);
    }

    #[test]
    fn cooperative_sticky_is_incremental_and_converges_in_two_rounds(spec in spec()) {
        let members = spec.build(false, true, 3);
        let partitions = spec.partitions();
        two_rounds(&members, &partitions)?;
    }

    #[test]
    fn cooperative_sticky_survives_conflicting_and_stale_claims(
        spec in spec(),
        noise in prop::collection::vec(any::<(u8, u8, i8, i8)>(), 0..40),
    ) {
        let mut members = spec.build(false, true, 2);
        scramble_claims(&mut members, &noise);
        let partitions = spec.partitions();
        two_rounds(&members, &partitions)?;
    }

    #[test]
    fn cooperative_sticky_is_as_balanced_as_the_subscriptions_allow(spec in spec(), owned in any::<bool>()) {
        let members = spec.build(false, owned, 5);
        let partitions = spec.partitions();
        let (_, second_members, second) = two_rounds(&members, &partitions)?;
        check_no_improving_path(&second_members, &second)?;
        // An optimal semi-matching minimises the sum of squared loads (and the maximum).
        for other in [range(&members, &partitions), roundrobin(&members, &partitions)] {
            prop_assert!(sum_of_squares(&second) <= sum_of_squares(&other));
            let max = |a: &GroupAssignment| a.keys().map(|m| load(a, m)).max().unwrap();
            prop_assert!(max(&second) <= max(&other));
        }
    }

    #[test]
    fn cooperative_sticky_moves_the_fewest_partitions_with_identical_subscriptions(spec in spec()) {
        let members = spec.build(true, true, 1);
        let partitions = spec.partitions();
        let first = cooperative_sticky(&members, &partitions);
        check_cooperative_round(&members, &partitions, &first)?;

        let subscribed: BTreeSet<&String> = members[0].topics.iter().collect();
        let total: usize = partitions.iter().filter(|(t, _)| subscribed.contains(t)).map(|(_, &c)| c as usize).sum();
        let n = members.len();
        let (quota, with_extra) = (total / n, total % n);
        // Owned partitions of subscribed topics (the generator's claims are disjoint).
        let owned: Vec<BTreeSet<Partition>> = members
            .iter()
            .map(|m| {
                m.owned_partitions
                    .iter()
                    .filter(|(t, _)| subscribed.contains(t))
                    .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
                    .collect()
            })
            .collect();
        // Any balanced assignment keeps at most min(owned, quota) per member, plus one more for
        // at most `with_extra` of the members owning more than `quota`.
        let over_quota = owned.iter().filter(|o| o.len() > quota).count();
        let necessary: usize =
            owned.iter().map(|o| o.len().saturating_sub(quota)).sum::<usize>() - with_extra.min(over_quota);
        let revoked: usize = members
            .iter()
            .zip(&owned)
            .map(|(m, o)| {
                let kept = owner_of(&first);
                o.iter().filter(|tp| kept.get(*tp) != Some(&m.member_id)).count()
            })
            .sum();
        prop_assert_eq!(revoked, necessary);
        let (_, _, second) = two_rounds(&members, &partitions)?;
        prop_assert!(spread(&second) <= 1);
    }

    #[test]
    fn a_joining_member_only_takes_partitions_revoked_for_it(spec in spec(), seed in any::<u16>()) {
        prop_assume!(spec.n < 8);
        let partitions = spec.partitions();
        // A stable group: two rounds from random ownership.
        let start = spec.build(true, true, 1);
        let (_, stable_members, stable) = two_rounds(&start, &partitions)?;
        let mut old = next_round(&stable_members, &stable, 10);
        let mut joining = MemberSubscription::new(format!("m{seed}-new"), old[0].topics.clone());
        joining.generation = DEFAULT_GENERATION;
        old.push(joining.clone());
        let members = old;

        let first = cooperative_sticky(&members, &partitions);
        check_cooperative_round(&members, &partitions, &first)?;
        prop_assert!(first[&joining.member_id].is_empty(), "everything is owned, so nothing goes directly");
        let revoked: BTreeSet<Partition> = flatten(&stable)
            .into_iter()
            .filter(|(m, tp)| owner_of(&first).get(tp) != Some(m))
            .map(|(_, tp)| tp)
            .collect();

        let second_members = next_round(&members, &first, 11);
        let second = cooperative_sticky(&second_members, &partitions);
        check_valid(&second_members, &partitions, &second, true)?;
        prop_assert!(spread(&second) <= 1);
        for m in stable.keys() {
            prop_assert_eq!(&second[m], &first[m], "an old member's assignment changed in round 2");
        }
        let taken: BTreeSet<Partition> = flatten(&second)
            .into_iter()
            .filter(|(m, _)| *m == joining.member_id)
            .map(|(_, tp)| tp)
            .collect();
        prop_assert_eq!(taken, revoked);
    }
}

// ---------------------------------------------------------------------------------------------
// Wire formats
// ---------------------------------------------------------------------------------------------

fn topic_partitions() -> impl Strategy<Value = Vec<TopicPartitions>> {
    prop::collection::vec(
        ("[a-z0-9._-]{0,10}", prop::collection::vec(any::<i32>(), 0..5))
            .prop_map(|(topic, partitions)| TopicPartitions { topic, partitions }),
        0..4,
    )
}

fn user_data() -> impl Strategy<Value = Option<Bytes>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from))
}

fn subscription() -> impl Strategy<Value = ConsumerProtocolSubscription> {
    (
        prop::collection::vec("[a-zA-Z0-9._-]{0,12}", 0..5),
        user_data(),
        topic_partitions(),
        any::<i32>(),
        prop::option::of("[a-z0-9]{0,8}"),
    )
        .prop_map(|(topics, user_data, owned_partitions, generation_id, rack_id)| ConsumerProtocolSubscription {
            topics,
            user_data,
            owned_partitions,
            generation_id,
            rack_id,
        })
}

fn assignment() -> impl Strategy<Value = ConsumerProtocolAssignment> {
    (topic_partitions(), user_data())
        .prop_map(|(assigned_partitions, user_data)| ConsumerProtocolAssignment { assigned_partitions, user_data })
}

/// What survives encoding at `version`: the fields it lacks take their defaults.
fn at_version(sub: &ConsumerProtocolSubscription, version: i16) -> ConsumerProtocolSubscription {
    let mut out = sub.clone();
    if version < 1 {
        out.owned_partitions.clear();
    }
    if version < 2 {
        out.generation_id = DEFAULT_GENERATION;
    }
    if version < 3 {
        out.rack_id = None;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn subscriptions_round_trip_at_every_version(sub in subscription(), version in 0..=3i16) {
        let encoded = sub.encode(version).unwrap();
        let decoded = ConsumerProtocolSubscription::decode(encoded.clone());
        prop_assert_eq!(decoded, Ok((version, at_version(&sub, version))));
        // Any truncation is an error.
        for len in 0..encoded.len() {
            prop_assert!(ConsumerProtocolSubscription::decode(encoded.slice(..len)).is_err());
        }
    }

    #[test]
    fn assignments_round_trip_at_every_version(asg in assignment(), version in 0..=3i16) {
        let encoded = asg.encode(version).unwrap();
        prop_assert_eq!(ConsumerProtocolAssignment::decode(encoded.clone()), Ok((version, asg)));
        for len in 0..encoded.len() {
            prop_assert!(ConsumerProtocolAssignment::decode(encoded.slice(..len)).is_err());
        }
    }

    #[test]
    fn future_versions_decode_their_known_prefix(
        sub in subscription(),
        asg in assignment(),
        version in 4..=i16::MAX,
        extra in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut raw = sub.encode(3).unwrap().to_vec();
        raw[..2].copy_from_slice(&version.to_be_bytes());
        raw.extend_from_slice(&extra);
        prop_assert_eq!(ConsumerProtocolSubscription::decode(Bytes::from(raw)), Ok((version, sub)));

        let mut raw = asg.encode(3).unwrap().to_vec();
        raw[..2].copy_from_slice(&version.to_be_bytes());
        raw.extend_from_slice(&extra);
        prop_assert_eq!(ConsumerProtocolAssignment::decode(Bytes::from(raw)), Ok((version, asg)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..64)) {
        let data = Bytes::from(data);
        if let Ok((_, sub)) = ConsumerProtocolSubscription::decode(data.clone()) {
            let members = [MemberSubscription::from_wire("m", None, sub)];
            let partitions = BTreeMap::from([("a".to_owned(), 3)]);
            let assignors: [&dyn Assignor; 3] = [&RangeAssignor, &RoundRobinAssignor, &CooperativeStickyAssignor];
            for a in assignors {
                let _ = a.assign(&members, &partitions);
            }
        }
        let _ = ConsumerProtocolAssignment::decode(data);
    }
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    let refused = |r: Result<(), DecodeError>| matches!(r, Err(DecodeError::LengthExceedsInput { .. }));
    let sub = |raw: &'static [u8]| ConsumerProtocolSubscription::decode(Bytes::from_static(raw)).map(drop);
    let asg = |raw: &'static [u8]| ConsumerProtocolAssignment::decode(Bytes::from_static(raw)).map(drop);
    // Topics: 2^31 - 1 of them, in 10 bytes.
    assert!(refused(sub(b"\x00\x00\x7f\xff\xff\xff\x00\x00\x00\x00")));
    // User data of 2^31 - 1 bytes.
    assert!(refused(sub(b"\x00\x00\x00\x00\x00\x00\x7f\xff\xff\xff")));
    // Owned partitions: 2^31 - 1 topics, then a topic with 2^31 - 1 partitions.
    assert!(refused(sub(b"\x00\x01\x00\x00\x00\x00\xff\xff\xff\xff\x7f\xff\xff\xff\x00\x00")));
    assert!(refused(sub(b"\x00\x01\x00\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\x01\x00\x00\x7f\xff\xff\xff")));
    // A topic name of 32767 bytes.
    assert!(refused(sub(b"\x00\x00\x00\x00\x00\x01\x7f\xff\x00\x00")));
    // Assignment: 2^31 - 1 topics; a topic with 2^31 - 1 partitions.
    assert!(refused(asg(b"\x00\x00\x7f\xff\xff\xff\x00\x00\x00\x00")));
    assert!(refused(asg(b"\x00\x00\x00\x00\x00\x01\x00\x00\x7f\xff\xff\xff")));
}

#[test]
fn encoding_clamps_the_version_to_the_known_range() {
    let sub = ConsumerProtocolSubscription { topics: vec!["t".into()], ..Default::default() };
    assert_eq!(sub.encode(7).unwrap(), sub.encode(3).unwrap());
    assert_eq!(sub.encode(-2).unwrap(), sub.encode(0).unwrap());
    let asg = ConsumerProtocolAssignment::default();
    assert_eq!(&asg.encode(9).unwrap()[..2], b"\x00\x03");
}
