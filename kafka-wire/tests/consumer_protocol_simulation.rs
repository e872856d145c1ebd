//! Deterministic simulation of next-generation consumer group members (KIP-848,
//! [`ConsumerGroupMember`]) against a model group coordinator, with injected faults. Virtual time
//! only (one `Instant::now()` at the start, then only added durations), a seeded PRNG written
//! here, no tokio.
//!
//! The model coordinator implements the KIP-848 protocol as Kafka's group coordinator does: a
//! group epoch bumped by joins, leaves, removals, subscription and metadata changes; a target
//! assignment computed server-side for the group epoch (a uniform assignor over the members'
//! subscriptions, sticky on ties); per-member reconciliation (Kafka's CurrentAssignmentBuilder):
//! a member first revokes (state UNREVOKED, epoch kept, rebalance timeout running), then moves
//! to the target epoch with the partitions no other member holds (UNRELEASED until the others
//! release theirs); member epoch validation (FENCED_MEMBER_EPOCH, the previous epoch accepted
//! with a subset of the assignment), UNKNOWN_MEMBER_ID, static members (-2 keeps the assignment,
//! a rejoin with the instance id replaces the member, UNRELEASED_INSTANCE_ID while it is held,
//! FENCED_INSTANCE_ID for a stale holder), session expiry, the revocation (rebalance) timeout,
//! the request validation of `throwIfConsumerGroupHeartbeatRequestIsInvalid`, full requests
//! answered with the assignment, OffsetCommit / OffsetFetch v9+ with exact member epoch checks
//! (STALE_MEMBER_EPOCH), and coordinator moves: the group state is persisted, the new node loads
//! it (COORDINATOR_LOAD_IN_PROGRESS) and reschedules every timer from the load, the old one
//! answers NOT_COORDINATOR.
//!
//! Faults: dropped requests and responses, slow messages, coordinator moves, members crashing
//! (static ones come back with the same instance id), new members, graceful leaves (-1 / -2),
//! network partitions longer than the session timeout, application stalls longer than
//! max.poll.interval, slow revocations (some longer than the rebalance timeout), temporary
//! subscription changes, a partition count change, topic names learned late, members whose
//! coordinator chooses the member id (v0).
//!
//! Invariants: (1) no OffsetCommit is sent with an epoch other than the latest the member was
//! told, or while it is out of the group; (2) at no point of virtual time do two live members
//! both hold a partition (assigned or pending revocation), and each member's view (from its
//! events) matches the core's; (3) the coordinator never accepts a commit for a partition another
//! member holds; (4) every request passes the coordinator's validation; (5) once faults stop,
//! every live member is stable at the coordinator's target epoch, the coordinator's members are
//! exactly the live ones, and every partition is owned exactly once. Also: no unexpected fatal
//! error and no busy loop on `next_timeout`.
//!
//! `SIM_SEEDS=n` runs n seeds (default per test), `SIM_SEED=s` only seed s, `SIM_TRACE=1`
//! prints every message.

include!("sim/consumer_group_sim.rs");

// ---- tests -----------------------------------------------------------------------------------

fn seeds(default: u64, offset: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        return vec![s.parse().expect("SIM_SEED")];
    }
    let n = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let extra: u64 = std::env::var("SIM_SEED_OFFSET").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    (1..=n).map(|s| s + offset + extra).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Faults,
    /// More drops, shorter session and rebalance timeouts: more fences, expirations and
    /// revocation timeouts.
    Harsh,
    Quiet,
}

fn run_seeds(mode: Mode, default_seeds: u64, offset: u64) {
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for seed in seeds(default_seeds, offset) {
        let mut p = Params::standard(seed);
        match mode {
            Mode::Faults => {}
            Mode::Harsh => {
                p.drop_rate = 0.06;
                p.session_ms = 1_500;
                p.rebalance_ms = 2_000;
            }
            Mode::Quiet => {
                p.faults = false;
                p.fault_ms = 0;
                p.settle_ms = 8_000;
            }
        }
        let mut sim = Sim::new(p);
        sim.run();
        total.add(&sim.stats);
        failures.extend(sim.violations);
    }
    total.print(&format!("KIP-848 members, {mode:?}"));
    for f in failures.iter().take(15) {
        println!("   VIOLATION {f}");
    }
    assert!(failures.is_empty(), "{} violations, first: {}", failures.len(), failures[0]);
    assert_eq!(total.stale_commits_sent, 0);
}

/// A seed replays the same run: the members' retry backoffs draw their jitter from it too.
#[test]
fn a_seed_replays_the_same_run() {
    let run = || {
        let mut sim = Sim::new(Params::standard(3));
        sim.run();
        (format!("{:?}", sim.stats), sim.violations)
    };
    let first = run();
    assert!(first.1.is_empty(), "{:?}", first.1);
    assert_eq!(first, run());
}

#[test]
fn members_with_faults() {
    run_seeds(Mode::Faults, 30, 0);
}

#[test]
fn members_with_faults_more_seeds() {
    run_seeds(Mode::Faults, 30, 1_000);
}

#[test]
fn members_with_harsh_faults() {
    run_seeds(Mode::Harsh, 20, 2_000);
}

#[test]
fn members_without_faults() {
    run_seeds(Mode::Quiet, 25, 0);
}

// ---- hand-driven scenarios --------------------------------------------------------------------

/// A quiet simulation with no members; tests spawn their own.
fn quiet(seed: u64) -> Sim {
    let mut p = Params::standard(seed);
    p.faults = false;
    p.initial_members = 0;
    p.fault_ms = 0;
    p.settle_ms = 0;
    p.static_share = 0.0;
    p.v0_share = 0.0;
    p.slow_revocations = false;
    Sim::new(p)
}

impl Sim {
    fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.step();
        }
        assert!(self.violations.is_empty(), "{:?}", self.violations);
    }

    /// Steps member `i` alone (the others are not polled), collecting its heartbeats.
    fn run_member_alone(&mut self, i: usize, ms: u64) -> Vec<ConsumerGroupHeartbeatRequest> {
        let mut heartbeats = Vec::new();
        let end = self.now + ms;
        while self.now < end {
            self.now += TICK_MS;
            self.deliver();
            let now = self.at(self.now);
            while let Some((id, target, request)) = self.members[i].core.poll_request(now) {
                if let GroupRequest::ConsumerGroupHeartbeat(r) = &request {
                    heartbeats.push(r.clone());
                }
                self.send(i, id, target, request);
            }
            while let Some(ev) = self.members[i].core.poll_event() {
                self.on_event(i, ev);
            }
            if let Some((set, at)) = self.members[i].revoking.clone() {
                if at <= self.now {
                    self.members[i].core.revocation_done(now);
                    for tp in &set {
                        self.members[i].owned.remove(tp);
                    }
                    self.members[i].revoking = None;
                }
            }
        }
        heartbeats
    }
}

/// Partitions of topic ids without a known name wait; once named they are taken and
/// acknowledged.
#[test]
fn topic_id_resolution() {
    let mut sim = quiet(11);
    let now = sim.at(0);
    let mut core = ConsumerGroupMember::new(sim.p.config(None, None, None), now);
    core.subscribe(full_subscription(), now);
    sim.members.push(SimMember {
        name: "m".into(),
        instance: None,
        core,
        life: Life::Alive,
        owned: BTreeSet::new(),
        revoking: None,
        stall_until: 0,
        told_epoch: None,
        last_heartbeat: None,
        dirty: true,
        in_flight: BTreeMap::new(),
        next_commit_at: u64::MAX,
        narrow_until: None,
        names_at: None,
        idle_due: 0,
    });
    sim.run_for(2_000);
    let m = &sim.members[0];
    assert_eq!(m.core.member_id().len(), 22, "the member's own UUID: {}", m.core.member_id());
    assert!(!m.core.member_id().starts_with('-'));
    assert!(m.core.member_epoch() > 0, "joined: {:?}", m.core);
    assert!(m.core.assignment().is_empty(), "nothing is named yet: {:?}", m.core.assignment());
    assert_eq!(m.core.unresolved_topic_ids(), [topic_uuid("a"), topic_uuid("b")].into());
    assert!(!m.core.is_stable());
    // The coordinator assigned all 10 partitions; the member holds none of them yet.
    let mm = &sim.model.members[m.core.member_id()];
    assert_eq!(mm.assigned.len(), 10);

    // Only "b" is named: its partitions come first.
    let now = sim.at(sim.now);
    sim.members[0].core.set_topic_names([(topic_uuid("b"), "b".to_string())].into(), now);
    sim.members[0].dirty = true;
    sim.run_for(1_000);
    let m = &sim.members[0];
    assert_eq!(m.core.assignment(), &(0..4).map(|p| ("b".to_string(), p)).collect());
    assert_eq!(m.core.unresolved_topic_ids(), [topic_uuid("a")].into());
    assert!(!m.core.is_stable());

    let now = sim.at(sim.now);
    sim.members[0].core.set_topic_names(all_names(), now);
    sim.members[0].dirty = true;
    sim.run_for(1_000);
    let m = &sim.members[0];
    assert_eq!(m.core.assignment(), &sim.model.all_partitions());
    assert!(m.core.unresolved_topic_ids().is_empty());
    assert!(m.core.is_stable(), "{:?}", m.core);
    println!("topic ids resolved: {:?}", m.core.assignment());
}

/// A dynamic member leaves with -1 (the coordinator removes it, its partitions move at once); a
/// static member leaves with -2 (the coordinator keeps its assignment, and its next incarnation
/// gets the same partitions back without a new group epoch); `leave_explicitly` makes a static
/// member leave with -1.
#[test]
fn leave_epochs() {
    let mut sim = quiet(12);
    sim.spawn(None);
    sim.spawn(Some("static-x".to_string()));
    sim.spawn(Some("static-y".to_string()));
    sim.run_for(4_000);
    for m in &sim.members {
        assert!(m.core.is_stable(), "{:?}", m.core);
    }

    // Static leave: -2.
    let before = sim.members[1].core.assignment().clone();
    let static_id = sim.members[1].core.member_id().to_string();
    assert!(!before.is_empty());
    let group_epoch = sim.model.group_epoch;
    let now = sim.at(sim.now);
    sim.members[1].core.leave(now);
    sim.members[1].life = Life::Closing;
    let heartbeats = sim.run_member_alone(1, 200);
    let last = heartbeats.last().expect("a leave heartbeat");
    assert_eq!(last.member_epoch, LEAVE_GROUP_STATIC_MEMBER_EPOCH);
    assert_eq!(last.instance_id.as_deref(), Some("static-x"));
    assert_eq!(&*last.member_id, static_id.as_str());
    assert!(last.topic_partitions.is_none() && last.subscribed_topic_names.is_none());
    assert!(sim.members[1].core.has_left());
    assert!(sim.members[1].core.assignment().is_empty() && sim.members[1].owned.is_empty());
    sim.members[1].life = Life::Closed;
    let kept = &sim.model.members[&static_id];
    assert_eq!(kept.epoch, LEAVE_GROUP_STATIC_MEMBER_EPOCH);
    assert_eq!(sim.model.to_names(&kept.assigned), before, "the coordinator keeps a static member's assignment");
    assert_eq!(sim.model.group_epoch, group_epoch, "a static leave starts no rebalance");

    // The next incarnation (new member id, same instance id) gets the same partitions.
    sim.spawn(Some("static-x".to_string()));
    sim.run_for(1_000);
    let new = sim.members.len() - 1;
    assert_ne!(sim.members[new].core.member_id(), static_id);
    assert_eq!(sim.members[new].core.assignment(), &before);
    assert_eq!(sim.model.group_epoch, group_epoch);
    assert_eq!(sim.model.stats.static_replacements, 1);

    // leave_explicitly: a static member leaves with -1, the coordinator removes it.
    let y_id = sim.members[2].core.member_id().to_string();
    let now = sim.at(sim.now);
    sim.members[2].core.leave_explicitly(now);
    sim.members[2].life = Life::Closing;
    let heartbeats = sim.run_member_alone(2, 200);
    assert_eq!(heartbeats.last().unwrap().member_epoch, LEAVE_GROUP_MEMBER_EPOCH);
    assert!(sim.members[2].core.has_left());
    sim.members[2].life = Life::Closed;
    assert!(!sim.model.members.contains_key(&y_id));

    // Dynamic member: -1.
    let d_id = sim.members[0].core.member_id().to_string();
    let now = sim.at(sim.now);
    sim.members[0].core.leave(now);
    sim.members[0].life = Life::Closing;
    let heartbeats = sim.run_member_alone(0, 200);
    let last = heartbeats.last().unwrap();
    assert_eq!(last.member_epoch, LEAVE_GROUP_MEMBER_EPOCH);
    assert_eq!(last.instance_id, None);
    assert!(sim.members[0].core.has_left());
    sim.members[0].life = Life::Closed;
    assert!(!sim.model.members.contains_key(&d_id));

    // The remaining member takes everything.
    sim.run_for(2_000);
    assert_eq!(sim.members[new].core.assignment(), &sim.model.all_partitions());
    assert!(sim.members[new].core.is_stable());
}

/// The join is a full request (epoch 0, the client's UUID, an empty owned list, the rebalance
/// timeout); later heartbeats send null for what the coordinator already has, and the owned
/// partitions when they changed.
#[test]
fn join_and_delta_heartbeats() {
    let mut sim = quiet(13);
    sim.spawn(None);
    let heartbeats = sim.run_member_alone(0, 2_000);
    let join = &heartbeats[0];
    assert_eq!(join.member_epoch, 0);
    assert_eq!(join.member_id.len(), 22, "a base64 UUID: {}", join.member_id);
    assert_eq!(join.topic_partitions.as_deref(), Some(&[][..]));
    assert_eq!(join.rebalance_timeout_ms, 5_000);
    assert_eq!(join.subscribed_topic_names.as_ref().map(Vec::len), Some(2));
    assert_eq!(join.rack_id.as_deref(), Some("rack-1"));
    // The acknowledgement of the assignment, right after the join.
    let ack = &heartbeats[1];
    assert!(ack.member_epoch > 0);
    assert_eq!(ack.member_id, join.member_id);
    assert_eq!(ack.topic_partitions.as_deref().map(decode).map(|s| s.len()), Some(10));
    assert_eq!(ack.subscribed_topic_names, None);
    assert_eq!(ack.rebalance_timeout_ms, -1);
    // Then plain heartbeats, every 300 ms (the coordinator's interval).
    for hb in &heartbeats[2..] {
        assert!(hb.topic_partitions.is_none() && hb.subscribed_topic_names.is_none() && hb.rack_id.is_none());
    }
    assert!((5..=8).contains(&heartbeats.len()), "{} heartbeats in 2 s", heartbeats.len());
    assert!(sim.members[0].core.is_stable());
}

/// UNSUPPORTED_VERSION (a broker without the consumer protocol) stops the member.
#[test]
fn unsupported_version_is_fatal() {
    let t0 = Instant::now();
    let mut core = ConsumerGroupMember::new(ConsumerGroupConfig::new("g"), t0);
    core.subscribe(full_subscription(), t0);
    let (id, target, request) = core.poll_request(t0).unwrap();
    assert_eq!(target, Target::AnyBroker);
    assert!(matches!(request, GroupRequest::FindCoordinator(_)));
    let found = FindCoordinatorResponse { node_id: 7, host: b("h"), port: 1, ..Default::default() };
    core.handle_response(id, GroupResponse::FindCoordinator(found), t0);
    let (id, target, request) = core.poll_request(t0).unwrap();
    assert_eq!(target, Target::Coordinator(7));
    assert!(matches!(request, GroupRequest::ConsumerGroupHeartbeat(_)));
    core.handle_response(id, GroupResponse::ConsumerGroupHeartbeat(hb_error(ErrorCode::UNSUPPORTED_VERSION)), t0);
    assert_eq!(core.fatal_error(), Some(ErrorCode::UNSUPPORTED_VERSION));
    assert_eq!(core.poll_event(), Some(GroupEvent::Fatal(ErrorCode::UNSUPPORTED_VERSION)));
    assert!(core.poll_request(t0).is_none());
    assert!(core.next_timeout().is_none());
}

/// FENCED_MEMBER_EPOCH: the partitions are lost, the member rejoins with epoch 0 and the same
/// member id, and a commit taken before the fence is never sent.
#[test]
fn fenced_member_rejoins_with_same_id() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut config = ConsumerGroupConfig::new("g");
    config.member_id = Some("member-1".into());
    let mut core = ConsumerGroupMember::new(config, t0);
    core.subscribe(["a".to_string()].into(), t0);
    core.set_topic_names(all_names(), t0);
    let (id, _, _) = core.poll_request(t0).unwrap();
    let found = FindCoordinatorResponse { node_id: 1, host: b("h"), port: 1, ..Default::default() };
    core.handle_response(id, GroupResponse::FindCoordinator(found), t0);
    let (id, _, _) = core.poll_request(t0).unwrap();
    let joined = ConsumerGroupHeartbeatResponse {
        member_id: Some(b("member-1")),
        member_epoch: 3,
        heartbeat_interval_ms: 100,
        assignment: Some(Assignment {
            topic_partitions: encode(&[(topic_uuid("a"), 0), (topic_uuid("a"), 1)].into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    core.handle_response(id, GroupResponse::ConsumerGroupHeartbeat(joined), ms(1));
    assert_eq!(core.poll_event(), Some(GroupEvent::Assigned([("a".to_string(), 0), ("a".to_string(), 1)].into())));
    assert_eq!(core.generation(), Some((3, "member-1".to_string())));
    // The acknowledgement goes out at once (with the fetch of committed offsets).
    let mut ack = None;
    while let Some((id, _, r)) = core.poll_request(ms(1)) {
        if let GroupRequest::ConsumerGroupHeartbeat(r) = r {
            ack = Some((id, r));
        }
    }
    let (ack_id, ack) = ack.expect("acknowledgement");
    assert_eq!(ack.member_epoch, 3);
    assert_eq!(ack.topic_partitions.as_deref().map(decode).map(|s| s.len()), Some(2));
    // A commit queued, then the fence arrives before it is sent.
    let commit = core.commit([(("a".to_string(), 0), (10, None))].into(), ms(2));
    let fenced = hb_error(ErrorCode::FENCED_MEMBER_EPOCH);
    core.handle_response(ack_id, GroupResponse::ConsumerGroupHeartbeat(fenced), ms(3));
    let mut events = Vec::new();
    while let Some(e) = core.poll_event() {
        events.push(e);
    }
    assert!(events.contains(&GroupEvent::Lost([("a".to_string(), 0), ("a".to_string(), 1)].into())), "{events:?}");
    assert!(events.contains(&GroupEvent::CommitResult { id: commit, result: Err(ErrorCode::STALE_MEMBER_EPOCH) }));
    assert_eq!(core.generation(), None);
    // No rejoin while the application has not handled the loss (the event taken off the queue
    // is not enough), and no wake-up that would spin meanwhile.
    while let Some((_, _, r)) = core.poll_request(ms(4)) {
        assert!(!matches!(r, GroupRequest::ConsumerGroupHeartbeat(_)), "joined before lost_handled: {r:?}");
    }
    assert!(core.next_timeout().is_none_or(|t| t > ms(4)), "{:?}", core.next_timeout());
    core.lost_handled(ms(4));
    let mut rejoin = None;
    while let Some((_, _, r)) = core.poll_request(ms(4)) {
        match r {
            GroupRequest::OffsetCommit(_) => panic!("a commit of the fenced membership was sent"),
            GroupRequest::ConsumerGroupHeartbeat(r) => rejoin = Some(r),
            _ => {}
        }
    }
    let rejoin = rejoin.expect("rejoin");
    assert_eq!(rejoin.member_epoch, 0);
    assert_eq!(&*rejoin.member_id, "member-1");
    assert_eq!(rejoin.topic_partitions.as_deref(), Some(&[][..]));
}

/// Every scripted fault, and a refusal with each retriable code: the path the `seq_group` fuzz
/// target drives for KIP-848, with the simulation's checks.
#[test]
fn scripted_faults_of_every_kind() {
    let codes = [
        None,
        Some(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
        Some(ErrorCode::NOT_COORDINATOR),
        Some(ErrorCode::COORDINATOR_NOT_AVAILABLE),
        Some(ErrorCode::REQUEST_TIMED_OUT),
        Some(ErrorCode::FENCED_MEMBER_EPOCH),
        Some(ErrorCode::UNKNOWN_MEMBER_ID),
    ];
    let mut script = vec![
        (300, Fault::Move { node: 1, moving: 200, loading: 300 }),
        (900, Fault::NewMember { is_static: true }),
        (1_500, Fault::Crash { member: 0, back: Some(1_000) }),
        (2_500, Fault::Leave { member: 1, explicit: true, back: Some(800) }),
        (3_500, Fault::Partition { member: 0, ms: 2_500 }),
        (4_000, Fault::Stall { member: 1, ms: 6_000 }),
        (4_500, Fault::Narrow { member: 0, ms: 2_000 }),
        (5_000, Fault::CountChange),
    ];
    for (k, code) in codes.iter().enumerate() {
        script.push((6_000 + 400 * k as u64, Fault::Refuse { member: k, code: *code }));
    }
    let mut p = Params::standard(5);
    p.initial_members = 3;
    p.fault_ms = script.last().unwrap().0 + 1;
    p.script = Some(script);
    let mut sim = Sim::new(p);
    sim.run();
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    for kind in ["coordinator move", "member crash", "graceful leave", "network partition", "request refused"] {
        assert!(sim.stats.faults.contains_key(kind), "no {kind}: {:?}", sim.stats.faults);
    }
}

/// Found by the new check of the model coordinator (committed offsets never go back): an
/// OffsetCommit whose answer was lost was retried after a newer commit of the same partition
/// had been sent, and the coordinator stored the older offset last.
#[test]
fn regression_commit_retry_does_not_move_the_committed_offset_back() {
    let mut sim = quiet(21);
    sim.spawn(None);
    sim.run_for(3_000);
    assert!(sim.members[0].core.is_stable(), "{:?}", sim.members[0].core);
    // No periodic commits of the simulation's own from here on.
    sim.members[0].next_commit_at = u64::MAX;
    let tp: Tp = ("a".to_string(), 0);
    let now = sim.at(sim.now);
    // Above the clock the earlier periodic commits used.
    let (older, newer) = (sim.now as i64 + 1_000, sim.now as i64 + 2_000);
    sim.members[0].core.commit([(tp.clone(), (older, None))].into(), now);
    let lost = loop {
        let (id, target, request) = sim.members[0].core.poll_request(now).expect("the OffsetCommit");
        if matches!(request, GroupRequest::OffsetCommit(_)) {
            break (id, request.kind());
        }
        sim.send(0, id, target, request);
    };
    // Its answer is lost; then the application commits a later offset.
    sim.members[0].core.handle_response(lost.0, GroupResponse::Failed { kind: lost.1 }, now);
    sim.members[0].core.commit([(tp.clone(), (newer, None))].into(), now);
    sim.run_for(3_000);
    assert!(sim.model.violations.is_empty(), "{:?}", sim.model.violations);
    assert_eq!(sim.model.committed.get(&tp), Some(&newer), "the committed offset went back");
}

/// An OffsetCommit answered STALE_MEMBER_EPOCH while the member is still in the group: the
/// coordinator had moved it to a newer epoch (another member joined, say) before the commit
/// arrived, and the heartbeat answer that says so had not come yet. The commit is sent again
/// with the new epoch once the member learns it, as Java's consumer does. It used to fail, and
/// the partitions' next owner then processed again the records after the last commit
/// (`consumer_group.rs`'s `a_kip_848_group_consumes_every_record_once` saw 500 twice).
#[test]
fn regression_a_commit_answered_stale_member_epoch_is_sent_again_with_the_new_epoch() {
    let (epoch, outcome) = stale_commit(true);
    let resent = outcome.expect("the commit was sent again");
    assert_eq!(resent.generation_id_or_member_epoch, epoch + 1);
    let offsets: Vec<(i32, i64)> = resent
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (p.partition_index, p.committed_offset)))
        .collect();
    assert_eq!(offsets, vec![(0, 1 << 40)]);
}

/// The same answer while no newer epoch comes (the heartbeats keep answering the same one): the
/// commit fails with STALE_MEMBER_EPOCH once the session timeout has passed, and is not resent.
#[test]
fn a_stale_member_epoch_commit_with_no_newer_epoch_fails_after_the_session_timeout() {
    let (_, outcome) = stale_commit(false);
    assert_eq!(outcome.err(), Some(ErrorCode::STALE_MEMBER_EPOCH));
}

/// A stable member commits; its OffsetCommit is answered STALE_MEMBER_EPOCH, then its heartbeats
/// are answered with epoch + 1 (`newer_epoch`) or the same epoch. The member is driven by hand
/// (the model coordinator is left out). Returns the member's epoch before, and the commit sent
/// again, or how the commit ended.
fn stale_commit(newer_epoch: bool) -> (i32, Result<OffsetCommitRequest, ErrorCode>) {
    let mut sim = quiet(23);
    sim.spawn(None);
    sim.run_for(3_000);
    assert!(sim.members[0].core.is_stable(), "{:?}", sim.members[0].core);
    sim.members[0].next_commit_at = u64::MAX;
    let epoch = sim.members[0].core.member_epoch();
    let session = Duration::from_millis(sim.p.session_ms);
    let start = sim.at(sim.now);
    let mut now = start;
    sim.members[0].core.commit([(("a".to_string(), 0), (1 << 40, None))].into(), now);
    let core = &mut sim.members[0].core;
    let mut stale_answered = false;
    for _ in 0..10_000 {
        while let Some(event) = core.poll_event() {
            if let GroupEvent::CommitResult { result, .. } = event {
                assert!(!newer_epoch, "the commit ended before the member learnt its new epoch: {result:?}");
                let waited = now - start;
                assert!(waited >= session, "it failed after {waited:?}, before the session timeout ({session:?})");
                return (epoch, Err(result.expect_err("a failed commit")));
            }
        }
        let Some((id, _, request)) = core.poll_request(now) else {
            now = core.next_timeout().expect("a timer").max(now + Duration::from_millis(1));
            continue;
        };
        match request {
            GroupRequest::OffsetCommit(ref r) if !stale_answered => {
                assert_eq!(r.generation_id_or_member_epoch, epoch);
                core.handle_response(id, refusal(&request, ErrorCode::STALE_MEMBER_EPOCH), now);
                stale_answered = true;
            }
            GroupRequest::OffsetCommit(r) => {
                assert!(newer_epoch, "sent again with no newer epoch: {r:?}");
                return (epoch, Ok(r));
            }
            GroupRequest::ConsumerGroupHeartbeat(r) => {
                assert!(stale_answered, "a heartbeat before the commit");
                // The coordinator's answer: the same assignment (none sent).
                let answer = ConsumerGroupHeartbeatResponse {
                    member_id: Some(r.member_id.clone()),
                    member_epoch: if newer_epoch { epoch + 1 } else { epoch },
                    heartbeat_interval_ms: 1_000,
                    ..Default::default()
                };
                core.handle_response(id, GroupResponse::ConsumerGroupHeartbeat(answer), now);
            }
            other => panic!("unexpected request {other:?}"),
        }
    }
    panic!("neither sent again nor failed");
}
