//! A KIP-848 consumer-group member (`group.protocol=consumer`) against ConsumerGroupHeartbeat
//! answers a real coordinator gives only by chance, injected by an in-process fake cluster
//! (`support/fault_cluster.rs`): FENCED_MEMBER_EPOCH and UNKNOWN_MEMBER_ID (the member loses its
//! partitions and joins again with epoch 0), COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR,
//! throttles, answers sent twice or cut mid-frame, each while joining and again once the member
//! has read and committed. In each the member reads every record at least once, in order, and
//! again only from a committed offset (after losing its partitions); committed offsets never go
//! backwards; a member that takes over after it resumes from the committed offsets; never a
//! hang. A heartbeat refused for good (GROUP_AUTHORIZATION_FAILED) fails `poll` with an error
//! naming the code.

#[path = "support/fault_cluster.rs"]
mod fault_cluster;

use std::future::Future;
use std::time::Duration;

use fault_cluster::{Fault, FaultCluster, TOPIC};
use kafka_wire::client::{Consumer, ConsumerConfig, Error, GroupProtocol, OffsetReset};
use kafka_wire::codec::{ApiKey, ErrorCode};

/// Bound on every wait: it only turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 2;
const GROUP: &str = "injected-consumer-group";
/// Records written per partition per round.
const PER_ROUND: usize = 5;
const HEARTBEAT: ApiKey = ApiKey::CONSUMER_GROUP_HEARTBEAT;

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

async fn member(cluster: &FaultCluster) -> Consumer {
    let config = ConsumerConfig::new(&cluster.addr(2))
        .group_id(GROUP)
        .group_protocol(GroupProtocol::Consumer)
        .enable_auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest);
    let consumer =
        within("the consumer to connect", Consumer::new(config)).await.expect("connect to the fault cluster");
    consumer.subscribe([TOPIC]).expect("subscribe");
    consumer
}

/// Polls until each partition's highest offset read reaches the end of `written[p]`, pushing
/// `(offset, value)` to `read[p]` (a partition lost and assigned again is read again from its
/// committed offset, so `read` may hold an offset more than once).
async fn read_to_end(consumer: &Consumer, read: &mut [Vec<(i64, String)>], written: &[Vec<String>]) {
    let done = |read: &[Vec<(i64, String)>]| {
        read.iter().zip(written).all(|(r, w)| r.last().map_or(0, |(o, _)| o + 1) >= w.len() as i64)
    };
    let reading = async {
        while !done(read) {
            for r in consumer.poll(Duration::from_millis(200)).await.expect("poll") {
                let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
                read[r.partition as usize].push((r.offset, value));
            }
        }
    };
    within("every record written to be read", reading).await;
}

/// Each partition read what was written from `from[p]` on, in order, each record the value
/// written at its offset; an offset read again only after a step back to an offset committed by
/// then (`commits[p]`), never past a gap.
fn assert_read_in_order(
    read: &[Vec<(i64, String)>],
    written: &[Vec<String>],
    from: &[usize],
    commits: &[Vec<i64>],
) -> usize {
    let mut rereads = 0;
    for p in 0..PARTITIONS as usize {
        let mut next = from[p] as i64;
        for (offset, value) in &read[p] {
            assert_eq!(value, &written[p][*offset as usize], "partition {p} @{offset}: not the value written there");
            if *offset != next {
                assert!(
                    *offset < next && commits[p].contains(offset),
                    "partition {p}: read @{offset} after @{}: neither the next offset nor a committed one \
                     ({:?})",
                    next - 1,
                    commits[p]
                );
                rereads += (next - offset) as usize;
            }
            next = offset + 1;
        }
        assert_eq!(next, written[p].len() as i64, "partition {p}: not read to the end");
    }
    rereads
}

/// The offsets committed so far per partition (the first member's position 0 counts as one:
/// a member that lost its partitions before any commit starts again from the beginning).
fn commits_by_partition(cluster: &FaultCluster) -> Vec<Vec<i64>> {
    (0..PARTITIONS)
        .map(|p| {
            let mut c = vec![0];
            c.extend(cluster.commits().iter().filter(|(_, q, _)| *q == p).map(|c| c.2));
            c
        })
        .collect()
}

fn assert_commits_never_go_back(cluster: &FaultCluster) {
    for (p, commits) in commits_by_partition(cluster).iter().enumerate() {
        assert!(commits.len() > 1, "partition {p}: nothing committed");
        assert!(commits.windows(2).all(|w| w[0] <= w[1]), "partition {p}: a committed offset went back: {commits:?}");
    }
}

/// Injects `fault` `times` for ConsumerGroupHeartbeat before the member starts and `times` more
/// once it has read and committed a round; the member reads and commits rounds (polling on
/// while a fault is left, so that heartbeats go out) until every fault was applied, and one
/// round after; then it closes, a round is written, and a new member resumes from the
/// committed offsets and reads that round only. Returns the cluster and the records read again.
async fn recovers_from(fault: Fault, times: usize) -> (FaultCluster, usize) {
    const ROUNDS: usize = 40;
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    cluster.inject(HEARTBEAT, fault, times);
    let first = member(&cluster).await;
    let mut written = vec![Vec::new(); PARTITIONS as usize];
    let mut read = vec![Vec::new(); PARTITIONS as usize];
    for round in 0..=ROUNDS {
        assert!(round < ROUNDS, "every injected {fault:?} was applied within {ROUNDS} rounds");
        let last = round > 0 && cluster.pending(HEARTBEAT) == 0;
        for (w, new) in written.iter_mut().zip(cluster.write_round(PER_ROUND, &format!("r{round}"))) {
            w.extend(new);
        }
        read_to_end(&first, &mut read, &written).await;
        // A commit refused because the member was just fenced is retried after it rejoined.
        let commit = async {
            while let Err(e) = first.commit().await {
                assert!(
                    matches!(e, Error::Broker { code, .. }
                        if [ErrorCode::REBALANCE_IN_PROGRESS, ErrorCode::UNKNOWN_MEMBER_ID,
                            ErrorCode::STALE_MEMBER_EPOCH, ErrorCode::FENCED_MEMBER_EPOCH].contains(&code)),
                    "commit: {e}"
                );
                let _ = first.poll(Duration::from_millis(50)).await.expect("poll");
            }
        };
        within("a commit", commit).await;
        if round == 0 {
            cluster.inject(HEARTBEAT, fault, times);
        }
        if last {
            break;
        }
        // An idle poll lets the heartbeat timer fire.
        let idle = within("an idle poll", first.poll(Duration::from_millis(150))).await.expect("poll");
        for r in idle {
            let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            read[r.partition as usize].push((r.offset, value));
        }
    }
    let rereads = assert_read_in_order(&read, &written, &[0, 0], &commits_by_partition(&cluster));
    assert_commits_never_go_back(&cluster);
    within("the first member to close", first.close()).await.expect("close");

    let from: Vec<usize> = written.iter().map(Vec::len).collect();
    for (w, new) in written.iter_mut().zip(cluster.write_round(PER_ROUND, "next")) {
        w.extend(new);
    }
    let second = member(&cluster).await;
    let mut read = vec![Vec::new(); PARTITIONS as usize];
    read_to_end(&second, &mut read, &written).await;
    within("a commit", second.commit()).await.expect("commit");
    let none_again = vec![Vec::new(); PARTITIONS as usize];
    assert_eq!(
        assert_read_in_order(&read, &written, &from, &none_again),
        0,
        "the second member read exactly the round written after the first closed"
    );
    assert_commits_never_go_back(&cluster);
    within("the second member to close", second.close()).await.expect("close");
    (cluster, rereads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_fenced_member_epoch_rejoins_and_resumes_from_the_committed_offsets() {
    let (cluster, _) = recovers_from(Fault::Error(ErrorCode::FENCED_MEMBER_EPOCH), 2).await;
    // Each fence makes the member join again (epoch 0), twice per member at the least.
    assert!(cluster.count(HEARTBEAT) >= 6, "heartbeats: {}", cluster.count(HEARTBEAT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_unknown_member_id_rejoins_and_resumes_from_the_committed_offsets() {
    recovers_from(Fault::Error(ErrorCode::UNKNOWN_MEMBER_ID), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_loading_is_retried() {
    let (_, rereads) = recovers_from(Fault::Error(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS), 3).await;
    assert_eq!(rereads, 0, "a loading coordinator takes no partition away: nothing read twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_not_coordinator_looks_the_coordinator_up_again() {
    let (cluster, _) = recovers_from(Fault::Error(ErrorCode::NOT_COORDINATOR), 2).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 3, "NOT_COORDINATOR makes the member look it up again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_throttled_is_waited_out() {
    let (_, rereads) = recovers_from(Fault::Throttle(200), 3).await;
    assert_eq!(rereads, 0, "a throttle takes no partition away: nothing read twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_answered_twice_is_survived() {
    recovers_from(Fault::Duplicate, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_answer_cut_mid_frame_is_survived() {
    recovers_from(Fault::Truncate, 2).await;
}

/// A heartbeat refused for good fails `poll` with an error naming the code, within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_group_authorization_failed_fails_poll_with_the_code() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    cluster.inject(HEARTBEAT, Fault::Error(ErrorCode::GROUP_AUTHORIZATION_FAILED), 1);
    let consumer = member(&cluster).await;
    let failed = async {
        loop {
            match consumer.poll(Duration::from_millis(100)).await {
                Ok(records) => assert!(records.is_empty(), "records read without a membership: {records:?}"),
                Err(e) => return e,
            }
        }
    };
    let error = within("poll to fail", failed).await;
    assert!(
        matches!(error, Error::Broker { code: ErrorCode::GROUP_AUTHORIZATION_FAILED, .. }),
        "poll failed with {error}"
    );
}
