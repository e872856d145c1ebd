//! A classic consumer-group member against group coordinator answers a real broker gives only by
//! chance, injected by an in-process fake cluster (`support/fault_cluster.rs`):
//! COORDINATOR_LOAD_IN_PROGRESS and NOT_COORDINATOR on FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat and OffsetCommit, throttles on each, and answers sent twice or cut mid-frame. In
//! each the member joins, reads every record exactly once and in order, commits, and a member
//! that takes over after it resumes from the committed offsets; committed offsets never go
//! backwards; never a hang.

#[path = "support/fault_cluster.rs"]
mod fault_cluster;

use std::future::Future;
use std::time::Duration;

use fault_cluster::{Fault, FaultCluster, TOPIC};
use kafka_wire::client::{Consumer, ConsumerConfig, GroupProtocol, OffsetReset};
use kafka_wire::codec::{ApiKey, ErrorCode};

/// Bound on every wait: it only turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 2;
const GROUP: &str = "injected-group";
/// Records written per partition per round.
const PER_ROUND: usize = 5;
const LOADING: Fault = Fault::Error(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
const NOT_COORDINATOR: Fault = Fault::Error(ErrorCode::NOT_COORDINATOR);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

async fn member(cluster: &FaultCluster) -> Consumer {
    let config = ConsumerConfig::new(&cluster.addr(2))
        .group_id(GROUP)
        .group_protocol(GroupProtocol::Classic)
        .enable_auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .heartbeat_interval(Duration::from_millis(50));
    let consumer =
        within("the consumer to connect", Consumer::new(config)).await.expect("connect to the fault cluster");
    consumer.subscribe([TOPIC]).expect("subscribe");
    consumer
}

/// Each partition read exactly what was written from offset `from[p]` on, once, in order.
fn assert_read_once(read: &[Vec<(i64, String)>], written: &[Vec<String>], from: &[usize]) {
    for p in 0..PARTITIONS as usize {
        let got: Vec<&str> = read[p].iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(got, written[p][from[p]..], "partition {p}: not every record once, in order");
        let offsets: Vec<i64> = read[p].iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (from[p] as i64..written[p].len() as i64).collect::<Vec<_>>(), "partition {p}: offsets");
    }
}

fn assert_commits_never_go_back(cluster: &FaultCluster) {
    for p in 0..PARTITIONS {
        let commits: Vec<i64> = cluster.commits().iter().filter(|(_, q, _)| *q == p).map(|c| c.2).collect();
        assert!(!commits.is_empty(), "partition {p}: nothing committed");
        assert!(commits.windows(2).all(|w| w[0] <= w[1]), "partition {p}: a committed offset went back: {commits:?}");
    }
}

/// Injects `fault` `times` for `api` before the member starts; the member reads and commits
/// rounds until every fault was applied (polling on while one is left, so that heartbeats go
/// out), and one round after; then it closes, a round is written, and a new member resumes from
/// the committed offsets and reads that round only.
async fn recovers_from(api: ApiKey, fault: Fault, times: usize) -> FaultCluster {
    const ROUNDS: usize = 20;
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    cluster.inject(api, fault, times);
    let first = member(&cluster).await;
    let mut written = vec![Vec::new(); PARTITIONS as usize];
    let mut read = vec![Vec::new(); PARTITIONS as usize];
    for round in 0..=ROUNDS {
        assert!(round < ROUNDS, "every injected {fault:?} was applied within {ROUNDS} rounds");
        let last = cluster.pending(api) == 0;
        for (w, new) in written.iter_mut().zip(cluster.write_round(PER_ROUND, &format!("r{round}"))) {
            w.extend(new);
        }
        fault_cluster::read_until(WAIT, &first, &mut read, &written).await;
        within("a commit", first.commit()).await.expect("commit");
        assert_read_once(&read, &written, &[0, 0]);
        if last {
            break;
        }
        // An idle poll lets the heartbeat timer fire; it returns nothing (all was read).
        let idle = within("an idle poll", first.poll(Duration::from_millis(100))).await.expect("poll");
        assert!(idle.is_empty(), "records read again: {idle:?}");
    }
    assert_commits_never_go_back(&cluster);
    within("the first member to close", first.close()).await.expect("close");

    let from: Vec<usize> = written.iter().map(Vec::len).collect();
    for (w, new) in written.iter_mut().zip(cluster.write_round(PER_ROUND, "next")) {
        w.extend(new);
    }
    let second = member(&cluster).await;
    let mut read = vec![Vec::new(); PARTITIONS as usize];
    fault_cluster::read_until(
        WAIT,
        &second,
        &mut read,
        &written.iter().zip(&from).map(|(w, f)| w[*f..].to_vec()).collect::<Vec<_>>(),
    )
    .await;
    within("a commit", second.commit()).await.expect("commit");
    assert_read_once(&read, &written, &from);
    assert_commits_never_go_back(&cluster);
    within("the second member to close", second.close()).await.expect("close");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_coordinator_loading_is_retried() {
    recovers_from(ApiKey::FIND_COORDINATOR, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_group_loading_is_retried() {
    recovers_from(ApiKey::JOIN_GROUP, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_group_not_coordinator_looks_the_coordinator_up_again() {
    let cluster = recovers_from(ApiKey::JOIN_GROUP, NOT_COORDINATOR, 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per NOT_COORDINATOR, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_group_throttled_is_waited_out() {
    recovers_from(ApiKey::JOIN_GROUP, Fault::Throttle(200), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_group_answer_cut_mid_frame_is_retried() {
    recovers_from(ApiKey::JOIN_GROUP, Fault::Truncate, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_group_loading_is_retried() {
    recovers_from(ApiKey::SYNC_GROUP, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_group_not_coordinator_looks_the_coordinator_up_again() {
    let cluster = recovers_from(ApiKey::SYNC_GROUP, NOT_COORDINATOR, 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per NOT_COORDINATOR, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_group_throttled_is_waited_out() {
    recovers_from(ApiKey::SYNC_GROUP, Fault::Throttle(200), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_group_answered_twice_is_survived() {
    recovers_from(ApiKey::SYNC_GROUP, Fault::Duplicate, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_loading_is_survived() {
    recovers_from(ApiKey::HEARTBEAT, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_not_coordinator_looks_the_coordinator_up_again() {
    let cluster = recovers_from(ApiKey::HEARTBEAT, NOT_COORDINATOR, 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 2, "NOT_COORDINATOR makes the member look it up again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_throttled_is_waited_out() {
    recovers_from(ApiKey::HEARTBEAT, Fault::Throttle(200), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_answer_cut_mid_frame_is_survived() {
    recovers_from(ApiKey::HEARTBEAT, Fault::Truncate, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_offset_commit_loading_is_retried() {
    recovers_from(ApiKey::OFFSET_COMMIT, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_offset_commit_not_coordinator_looks_the_coordinator_up_again() {
    let cluster = recovers_from(ApiKey::OFFSET_COMMIT, NOT_COORDINATOR, 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per NOT_COORDINATOR, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_offset_fetch_loading_is_retried() {
    recovers_from(ApiKey::OFFSET_FETCH, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_offset_fetch_throttled_is_waited_out() {
    recovers_from(ApiKey::OFFSET_FETCH, Fault::Throttle(200), 1).await;
}

/// A LeaveGroup answer that is throttled, or cut mid-frame, does not hold up `close`, and the
/// next member joins and resumes from the committed offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_group_throttled_or_cut_does_not_hold_up_close() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    let mut from = vec![0; PARTITIONS as usize];
    let mut written = vec![Vec::new(); PARTITIONS as usize];
    for (round, fault) in [Fault::Throttle(200), Fault::Truncate].into_iter().enumerate() {
        cluster.inject(ApiKey::LEAVE_GROUP, fault, 1);
        let consumer = member(&cluster).await;
        for (w, new) in written.iter_mut().zip(cluster.write_round(PER_ROUND, &format!("r{round}"))) {
            w.extend(new);
        }
        let mut read = vec![Vec::new(); PARTITIONS as usize];
        let expected: Vec<Vec<String>> = written.iter().zip(&from).map(|(w, f)| w[*f..].to_vec()).collect();
        fault_cluster::read_until(WAIT, &consumer, &mut read, &expected).await;
        within("a commit", consumer.commit()).await.expect("commit");
        assert_read_once(&read, &written, &from);
        within(&format!("close with LeaveGroup {fault:?}"), consumer.close()).await.expect("close");
        assert_eq!(cluster.pending(ApiKey::LEAVE_GROUP), 0, "the member left with a LeaveGroup");
        from = written.iter().map(Vec::len).collect();
    }
    assert_commits_never_go_back(&cluster);
}
