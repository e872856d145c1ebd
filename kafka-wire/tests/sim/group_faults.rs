// The faults both group simulations inject, as values, and the code that drives them: the
// simulations draw them from their PRNG, the `seq_group` fuzz target scripts them
// (`Params::script`). Included by `group_sim.rs` and `consumer_group_sim.rs`: `Rng`, `Params`,
// `SimMember`, `NODES`, `TICK_MS` and `MAX_LIVE` below are the including file's own.

/// One fault. `member` is an index into the simulation's members (in a script: picks among
/// the members alive when the fault happens, modulo their number); times are virtual
/// milliseconds from the fault.
#[derive(Clone, Debug)]
enum Fault {
    /// The coordinator moves to `NODES[node % 3]` (another node if that is the current one):
    /// FindCoordinator answers COORDINATOR_NOT_AVAILABLE for `moving` ms, then the new node
    /// answers COORDINATOR_LOAD_IN_PROGRESS for `loading` ms.
    Move { node: u8, moving: u64, loading: u64 },
    /// The member stops calling anything; it comes back (static: with its instance id) after
    /// `back` ms, or never.
    Crash { member: usize, back: Option<u64> },
    /// A new member, static or not (none past `MAX_LIVE`).
    NewMember { is_static: bool },
    /// The member leaves (`explicit`: a static member with `leave_explicitly`), and a new
    /// incarnation starts after `back` ms, or never. Not the last member alive.
    Leave { member: usize, explicit: bool, back: Option<u64> },
    /// Nothing the member sends or is sent arrives for `ms`.
    Partition { member: usize, ms: u64 },
    /// The application does not poll for `ms`.
    Stall { member: usize, ms: u64 },
    /// The member subscribes to topic `a` only for `ms`.
    Narrow { member: usize, ms: u64 },
    /// Topic `b` grows from 4 to 6 partitions (once).
    CountChange,
    /// The member's next request is lost (`code` None: `Failed` or `CoordinatorUnreachable`),
    /// or refused unapplied with `code` by whoever it reached.
    Refuse { member: usize, code: Option<ErrorCode> },
}

/// A group simulation as the fault driver sees it. Each simulation implements the accessors
/// and `apply_fault` (the two apply faults differently); the random schedule and the scripted
/// dispatch are written once, here, so that a seed draws the PRNG in the same order in both.
trait FaultDriver {
    fn rng(&mut self) -> &mut Rng;
    /// Virtual milliseconds since the start.
    fn now(&self) -> u64;
    /// Read here: `static_share`, `rebalance_ms`, `fault_ms` and `script`.
    fn params(&self) -> &Params;
    /// How many faults of `Params::script` have been dispatched.
    fn script_pos(&mut self) -> &mut usize;
    /// The node the coordinator is on.
    fn coordinator(&self) -> i32;
    /// Read here: `life` and `instance` (static or not) and `narrow_until`.
    fn members(&self) -> &[SimMember];
    /// Members alive plus restarts pending: what `MAX_LIVE` bounds.
    fn live_count(&self) -> usize;
    /// Whether `Fault::CountChange` has happened.
    fn counts_changed(&self) -> bool;
    /// `member`: an index into `members`.
    fn apply_fault(&mut self, f: Fault);

    fn alive(&self) -> Vec<usize> {
        let members = self.members();
        (0..members.len()).filter(|&i| members[i].life == Life::Alive).collect()
    }

    /// One tick's faults: the script's if there is one, else random ones.
    fn drive_faults(&mut self) {
        if self.params().script.is_some() {
            self.scripted_faults();
        } else {
            self.random_faults();
        }
    }

    /// Each kind of fault at its own rate per second of virtual time, drawn every tick.
    fn random_faults(&mut self) {
        let per_tick = |rate_per_s: f64| rate_per_s * TICK_MS as f64 / 1000.0;
        if self.rng().chance(per_tick(1.0 / 8.0)) {
            let node = loop {
                let n = self.rng().below(3) as u8;
                if NODES[n as usize] != self.coordinator() {
                    break n;
                }
            };
            let moving = self.rng().range(0, 300);
            let loading = self.rng().range(0, 500);
            self.apply_fault(Fault::Move { node, moving, loading });
        }
        let alive = self.alive();
        if !alive.is_empty() && self.rng().chance(per_tick(1.0 / 9.0)) {
            let i = alive[self.rng().below(alive.len() as u64) as usize];
            let back = self.rng().range(300, 4000);
            let back = (self.members()[i].instance.is_some() || self.rng().chance(0.5)).then_some(back);
            self.apply_fault(Fault::Crash { member: i, back });
        }
        if self.live_count() < MAX_LIVE && self.rng().chance(per_tick(1.0 / 10.0)) {
            let static_share = self.params().static_share;
            let is_static = self.rng().chance(static_share);
            self.apply_fault(Fault::NewMember { is_static });
        }
        if alive.len() > 1 && self.rng().chance(per_tick(1.0 / 15.0)) {
            let i = alive[self.rng().below(alive.len() as u64) as usize];
            let explicit = self.members()[i].instance.is_some() && self.rng().chance(0.5);
            let back = if self.rng().chance(0.7) { Some(self.rng().range(500, 5000)) } else { None };
            self.apply_fault(Fault::Leave { member: i, explicit, back });
        }
        if !alive.is_empty() && self.rng().chance(per_tick(1.0 / 12.0)) {
            let i = alive[self.rng().below(alive.len() as u64) as usize];
            let ms = self.rng().range(500, 3500);
            self.apply_fault(Fault::Partition { member: i, ms });
        }
        if !alive.is_empty() && self.rng().chance(per_tick(1.0 / 20.0)) {
            let i = alive[self.rng().below(alive.len() as u64) as usize];
            let rebalance_ms = self.params().rebalance_ms;
            let ms = self.rng().range(rebalance_ms / 2, rebalance_ms + 2000);
            self.apply_fault(Fault::Stall { member: i, ms });
        }
        if !alive.is_empty() && self.rng().chance(per_tick(1.0 / 15.0)) {
            let i = alive[self.rng().below(alive.len() as u64) as usize];
            if self.members()[i].narrow_until.is_none() {
                let ms = self.rng().range(1000, 5000);
                self.apply_fault(Fault::Narrow { member: i, ms });
            }
        }
        if !self.counts_changed() && self.now() > self.params().fault_ms / 2 && self.rng().chance(per_tick(1.0 / 5.0)) {
            self.apply_fault(Fault::CountChange);
        }
    }

    /// The faults of `Params::script` due now; their `member` picks among the members alive.
    fn scripted_faults(&mut self) {
        let (now, pos) = (self.now(), *self.script_pos());
        let script = self.params().script.as_ref().expect("scripted");
        let due: Vec<Fault> =
            script.iter().skip(pos).take_while(|(at, _)| *at <= now).map(|(_, f)| f.clone()).collect();
        *self.script_pos() += due.len();
        for mut f in due {
            let alive = self.alive();
            let resolve = |m: &mut usize| alive.get(*m % alive.len().max(1)).map(|&i| *m = i).is_some();
            let ok = match &mut f {
                Fault::Crash { member, .. }
                | Fault::Partition { member, .. }
                | Fault::Stall { member, .. }
                | Fault::Narrow { member, .. }
                | Fault::Refuse { member, .. } => resolve(member),
                Fault::Leave { member, .. } => alive.len() > 1 && resolve(member),
                Fault::Move { .. } | Fault::NewMember { .. } | Fault::CountChange => true,
            };
            if ok {
                self.apply_fault(f);
            }
        }
    }
}

/// The answer of a broker that refuses `request` with `code` without applying it.
fn refusal(request: &GroupRequest, code: ErrorCode) -> GroupResponse {
    use kafka_wire::codec::messages::consumer_group_heartbeat::ConsumerGroupHeartbeatResponse;
    use kafka_wire::codec::messages::heartbeat::HeartbeatResponse;
    use kafka_wire::codec::messages::join_group::JoinGroupResponse;
    use kafka_wire::codec::messages::leave_group::LeaveGroupResponse;
    use kafka_wire::codec::messages::sync_group::SyncGroupResponse;
    match request {
        GroupRequest::FindCoordinator(_) => GroupResponse::FindCoordinator(FindCoordinatorResponse {
            error_code: code,
            node_id: -1,
            ..Default::default()
        }),
        GroupRequest::JoinGroup(r) => GroupResponse::JoinGroup(JoinGroupResponse {
            error_code: code,
            generation_id: -1,
            member_id: r.member_id.clone(),
            ..Default::default()
        }),
        GroupRequest::SyncGroup(_) => {
            GroupResponse::SyncGroup(SyncGroupResponse { error_code: code, ..Default::default() })
        }
        GroupRequest::Heartbeat(_) => {
            GroupResponse::Heartbeat(HeartbeatResponse { error_code: code, ..Default::default() })
        }
        GroupRequest::LeaveGroup(_) => {
            GroupResponse::LeaveGroup(LeaveGroupResponse { error_code: code, ..Default::default() })
        }
        GroupRequest::OffsetCommit(r) => GroupResponse::OffsetCommit(OffsetCommitResponse {
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
        }),
        GroupRequest::OffsetFetch(_) => GroupResponse::OffsetFetch(OffsetFetchResponse {
            error_code: code,
            groups: vec![OffsetFetchResponseGroup { group_id: b(GROUP), error_code: code, ..Default::default() }],
            ..Default::default()
        }),
        GroupRequest::ConsumerGroupHeartbeat(_) => {
            GroupResponse::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse {
                error_code: code,
                member_epoch: -1,
                heartbeat_interval_ms: -1,
                ..Default::default()
            })
        }
    }
}
