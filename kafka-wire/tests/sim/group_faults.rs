// The faults both group simulations inject, as values: the simulations draw them from their
// PRNG, the `seq_group` / `seq_consumer_group` fuzz targets script them (`Params::script`).
// Included by `group_sim.rs` and `consumer_group_sim.rs`.

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
