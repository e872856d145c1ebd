//! The consumer (assigned partitions, a `group.id` for its offsets) against answers a real broker
//! will not give on demand, injected by an in-process fake cluster (`support/fault_cluster.rs`):
//! NOT_LEADER_OR_FOLLOWER storms on Fetch (with and without a leader move), throttles on Fetch,
//! ListOffsets, OffsetFetch, OffsetCommit and FindCoordinator, the same answer twice, an answer
//! with a correlation id never sent, a Fetch answer for a partition never asked for or without
//! one that was, answers cut mid-frame, Metadata without partitions or with an unknown or absent
//! leader, and COORDINATOR_LOAD_IN_PROGRESS / NOT_COORDINATOR on the group coordinator's
//! OffsetFetch and OffsetCommit. In each the consumer reads every record exactly once and in
//! order, its commits are accepted and the committed offsets never go backwards; never a hang.

#[path = "support/fault_cluster.rs"]
mod fault_cluster;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use fault_cluster::{Fault, FaultCluster, TOPIC};
use kafka_wire::client::{Consumer, ConsumerConfig, OffsetAndMetadata, OffsetReset};
use kafka_wire::codec::{ApiKey, ErrorCode};
use kafka_wire::proto::producer::TopicPartition;

/// Bound on every wait: it only turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 2;
const GROUP: &str = "injected";
/// Records written per partition per round.
const PER_ROUND: usize = 5;

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

fn tps() -> Vec<TopicPartition> {
    (0..PARTITIONS).map(|p| TopicPartition::new(TOPIC, p)).collect()
}

async fn consumer(cluster: &FaultCluster) -> Consumer {
    let config = ConsumerConfig::new(&cluster.addr(1))
        .group_id(GROUP)
        .enable_auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest);
    let consumer =
        within("the consumer to connect", Consumer::new(config)).await.expect("connect to the fault cluster");
    consumer.assign(tps());
    consumer
}

/// The invariants: each partition read exactly what was written, once, in order, at its
/// offsets; the group's committed offsets never went backwards.
fn assert_read_once(cluster: &FaultCluster, read: &[Vec<(i64, String)>], written: &[Vec<String>]) {
    for p in 0..PARTITIONS as usize {
        let offsets: Vec<i64> = (0..written[p].len() as i64).collect();
        let got_offsets: Vec<i64> = read[p].iter().map(|(o, _)| *o).collect();
        let got: Vec<&str> = read[p].iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(got, written[p], "partition {p}: not every record once, in order");
        assert_eq!(got_offsets, offsets, "partition {p}: offsets");
    }
    for p in 0..PARTITIONS {
        let commits: Vec<i64> = cluster.commits().iter().filter(|(_, q, _)| *q == p).map(|c| c.2).collect();
        assert!(commits.windows(2).all(|w| w[0] <= w[1]), "partition {p}: a committed offset went back: {commits:?}");
    }
}

/// Injects `fault` `times` for `api` once the consumer is set up, then writes, reads and
/// commits rounds of records until every fault was applied, and one round after; checks the
/// committed offsets are the positions.
async fn recovers_from(api: ApiKey, fault: Fault, times: usize) -> FaultCluster {
    const ROUNDS: usize = 20;
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    let consumer = consumer(&cluster).await;
    cluster.inject(api, fault, times);
    let mut written = vec![Vec::new(); PARTITIONS as usize];
    let mut read = vec![Vec::new(); PARTITIONS as usize];
    for round in 0..=ROUNDS {
        assert!(round < ROUNDS, "every injected {fault:?} was applied within {ROUNDS} rounds");
        let last = cluster.pending(api) == 0;
        for (w, new) in written.iter_mut().zip(cluster.write_round(PER_ROUND, &format!("r{round}"))) {
            w.extend(new);
        }
        fault_cluster::read_until(WAIT, &consumer, &mut read, &written).await;
        within("a commit", consumer.commit()).await.expect("commit");
        assert_read_once(&cluster, &read, &written);
        if last {
            break;
        }
    }
    let committed = within("the committed offsets", consumer.committed(&tps())).await.expect("committed");
    for (tp, offset) in committed {
        let offset = offset.expect("an offset was committed").offset;
        assert_eq!(offset, written[tp.partition as usize].len() as i64, "{tp:?}: the commit is the position");
    }
    within("close", consumer.close()).await.expect("close");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_leader_storm_on_fetch_without_a_leader_change_is_retried_until_it_ends() {
    let cluster = recovers_from(ApiKey::FETCH, Fault::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER), 8).await;
    assert!(cluster.count(ApiKey::METADATA) > 1, "NOT_LEADER_OR_FOLLOWER makes the consumer refresh metadata");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_leader_storm_on_fetch_during_a_leader_move_ends_on_the_new_leader() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    let consumer = consumer(&cluster).await;
    let mut written = cluster.write_round(PER_ROUND, "before");
    let mut read = vec![Vec::new(); PARTITIONS as usize];
    fault_cluster::read_until(WAIT, &consumer, &mut read, &written).await;
    cluster.set_leader(0, 2);
    cluster.set_leader(1, 1);
    cluster.inject(ApiKey::FETCH, Fault::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER), 6);
    for (w, new) in written.iter_mut().zip(cluster.write_round(PER_ROUND, "moved")) {
        w.extend(new);
    }
    fault_cluster::read_until(WAIT, &consumer, &mut read, &written).await;
    within("a commit", consumer.commit()).await.expect("commit");
    assert_read_once(&cluster, &read, &written);
    within("close", consumer.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_fetch_answers_delay_but_lose_nothing() {
    recovers_from(ApiKey::FETCH, Fault::Throttle(200), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_answer_sent_twice_reads_nothing_twice() {
    recovers_from(ApiKey::FETCH, Fault::Duplicate, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_answer_with_a_correlation_id_never_sent_reads_nothing_twice() {
    recovers_from(ApiKey::FETCH, Fault::UnknownCorrelation, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_answer_for_a_partition_never_asked_for_is_ignored() {
    recovers_from(ApiKey::FETCH, Fault::ExtraPartition, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_answer_missing_a_partition_asked_for_is_fetched_again() {
    recovers_from(ApiKey::FETCH, Fault::MissingPartition, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_answer_cut_mid_frame_is_fetched_again() {
    recovers_from(ApiKey::FETCH, Fault::Truncate, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_without_the_topics_partitions_is_asked_again() {
    recovers_from(ApiKey::METADATA, Fault::NoPartitions, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_whose_leader_is_not_a_listed_broker_is_asked_again() {
    recovers_from(ApiKey::METADATA, Fault::LeaderNotListed, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_with_no_leader_is_asked_again() {
    recovers_from(ApiKey::METADATA, Fault::NoLeader, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_list_offsets_answers_delay_but_lose_nothing() {
    // The first ListOffsets (the reset to earliest) is sent before the faults are injected;
    // committed offsets are found after, so ListOffsets is faulted through a fresh consumer.
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    cluster.inject(ApiKey::LIST_OFFSETS, Fault::Throttle(200), 1);
    let consumer = consumer(&cluster).await;
    let written = cluster.write_round(PER_ROUND, "r");
    let mut read = vec![Vec::new(); PARTITIONS as usize];
    fault_cluster::read_until(WAIT, &consumer, &mut read, &written).await;
    assert_read_once(&cluster, &read, &written);
    assert_eq!(cluster.pending(ApiKey::LIST_OFFSETS), 0);
    within("close", consumer.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commit_coordinator_loading_is_retried() {
    recovers_from(ApiKey::OFFSET_COMMIT, Fault::Error(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commit_not_coordinator_looks_the_coordinator_up_again() {
    let cluster = recovers_from(ApiKey::OFFSET_COMMIT, Fault::Error(ErrorCode::NOT_COORDINATOR), 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per NOT_COORDINATOR, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commit_throttled_is_waited_out() {
    recovers_from(ApiKey::OFFSET_COMMIT, Fault::Throttle(200), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commit_answered_twice_is_survived() {
    recovers_from(ApiKey::OFFSET_COMMIT, Fault::Duplicate, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commit_answer_cut_mid_frame_is_retried() {
    recovers_from(ApiKey::OFFSET_COMMIT, Fault::Truncate, 2).await;
}

/// Commits a round, injects `fault` `times` for OffsetFetch, and reads the committed offsets
/// back: they are the positions once the faults are over. (Assigned partitions start from
/// `auto.offset.reset`, not from committed offsets, so OffsetFetch is sent by `committed`.)
async fn committed_survives(fault: Fault, times: usize) -> FaultCluster {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    let consumer = consumer(&cluster).await;
    let written = cluster.write_round(PER_ROUND, "r");
    let mut read = vec![Vec::new(); PARTITIONS as usize];
    fault_cluster::read_until(WAIT, &consumer, &mut read, &written).await;
    within("a commit", consumer.commit()).await.expect("commit");
    cluster.inject(ApiKey::OFFSET_FETCH, fault, times);
    let committed = within("the committed offsets", consumer.committed(&tps())).await.expect("committed");
    assert_eq!(cluster.pending(ApiKey::OFFSET_FETCH), 0, "every injected {fault:?} was applied");
    for (tp, offset) in committed {
        assert_eq!(offset.map(|o| o.offset), Some(PER_ROUND as i64), "{tp:?}");
    }
    assert_read_once(&cluster, &read, &written);
    within("close", consumer.close()).await.expect("close");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_fetch_coordinator_loading_is_retried() {
    committed_survives(Fault::Error(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_fetch_not_coordinator_looks_the_coordinator_up_again() {
    let cluster = committed_survives(Fault::Error(ErrorCode::NOT_COORDINATOR), 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per NOT_COORDINATOR, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_fetch_throttled_is_waited_out() {
    committed_survives(Fault::Throttle(200), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_fetch_answer_cut_mid_frame_is_retried() {
    committed_survives(Fault::Truncate, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_fetch_answer_sent_twice_is_survived() {
    committed_survives(Fault::Duplicate, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_coordinator_loading_is_retried() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    cluster.inject(ApiKey::FIND_COORDINATOR, Fault::Error(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS), 3);
    cluster.inject(ApiKey::FIND_COORDINATOR, Fault::Throttle(200), 1);
    let consumer = consumer(&cluster).await;
    let written = cluster.write_round(PER_ROUND, "r");
    let mut read = vec![Vec::new(); PARTITIONS as usize];
    fault_cluster::read_until(WAIT, &consumer, &mut read, &written).await;
    let offsets: BTreeMap<TopicPartition, OffsetAndMetadata> =
        tps().into_iter().map(|tp| (tp, OffsetAndMetadata::new(PER_ROUND as i64))).collect();
    within("a commit", consumer.commit_offsets(offsets)).await.expect("commit");
    assert_read_once(&cluster, &read, &written);
    assert_eq!(cluster.pending(ApiKey::FIND_COORDINATOR), 0);
    within("close", consumer.close()).await.expect("close");
}
