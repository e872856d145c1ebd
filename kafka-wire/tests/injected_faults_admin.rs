//! The admin client against answers a real broker will not give on demand, injected by an
//! in-process fake cluster (`support/fault_cluster.rs`): COORDINATOR_LOAD_IN_PROGRESS and
//! NOT_COORDINATOR on the group coordinator's OffsetCommit and OffsetFetch, NOT_LEADER_OR_FOLLOWER
//! on ListOffsets, throttles, answers sent twice, with a correlation id never sent or cut
//! mid-frame, and Metadata with an unknown or absent leader. Each call succeeds once the faults
//! are over, or fails with a typed error naming the cause, within its timeout; committed offsets
//! never go backwards; never a hang.

#[path = "support/fault_cluster.rs"]
mod fault_cluster;

use std::future::Future;
use std::time::Duration;

use fault_cluster::{Fault, FaultCluster, TOPIC};
use kafka_wire::client::{Admin, ClientConfig, ErrorKind, OffsetSpec};
use kafka_wire::codec::{ApiKey, ErrorCode};

/// Bound on every wait: it only turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(60);
const GROUP: &str = "admin-group";
const LOADING: Fault = Fault::Error(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
const NOT_COORDINATOR: Fault = Fault::Error(ErrorCode::NOT_COORDINATOR);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

async fn admin(cluster: &FaultCluster) -> Admin {
    let config = ClientConfig::new(&cluster.addr(2)).retry_backoff(Duration::from_millis(5), Duration::from_millis(50));
    within("the admin client to connect", Admin::connect(config))
        .await
        .expect("connect to the fault cluster")
        .with_timeout(Duration::from_secs(30))
}

/// Injects `fault` `times` for `api`, then sets and reads back growing group offsets until every
/// fault was applied, and once more; the offsets read are those set, and the commits the
/// coordinator accepted never go backwards.
async fn group_offsets_survive(api: ApiKey, fault: Fault, times: usize) -> FaultCluster {
    const ROUNDS: i64 = 20;
    let cluster = FaultCluster::start(2, 2).await;
    let admin = admin(&cluster).await;
    cluster.inject(api, fault, times);
    for round in 1..=ROUNDS + 1 {
        assert!(round <= ROUNDS, "every injected {fault:?} was applied within {ROUNDS} rounds");
        let last = cluster.pending(api) == 0;
        let offsets = [(TOPIC, 0, round * 10), (TOPIC, 1, round * 10 + 1)];
        within("alter_group_offsets", admin.alter_group_offsets(GROUP, &offsets)).await.expect("offsets set");
        let listed = within("list_group_offsets", admin.list_group_offsets(GROUP, Some(&[TOPIC])))
            .await
            .expect("offsets listed");
        let listed: Vec<(i32, i64)> = listed.iter().map(|o| (o.partition, o.offset)).collect();
        assert_eq!(listed, vec![(0, round * 10), (1, round * 10 + 1)]);
        if last {
            break;
        }
    }
    for p in 0..2 {
        let commits: Vec<i64> = cluster.commits().iter().filter(|(_, q, _)| *q == p).map(|c| c.2).collect();
        assert!(commits.windows(2).all(|w| w[0] <= w[1]), "partition {p}: a committed offset went back: {commits:?}");
    }
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commit_loading_is_retried() {
    group_offsets_survive(ApiKey::OFFSET_COMMIT, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commit_not_coordinator_looks_the_coordinator_up_again() {
    let cluster = group_offsets_survive(ApiKey::OFFSET_COMMIT, NOT_COORDINATOR, 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per NOT_COORDINATOR, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commit_throttled_is_waited_out() {
    group_offsets_survive(ApiKey::OFFSET_COMMIT, Fault::Throttle(200), 2).await;
}

/// An OffsetCommit answered twice: the call gets the first answer and succeeds. The second is a
/// protocol violation that closes the connection; a call in flight on it when the client reads
/// it fails with a typed error naming the correlation id (whether one is depends on timing), and
/// the call after that goes through on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commit_answered_twice_succeeds_and_at_most_the_next_call_fails_naming_it() {
    let cluster = FaultCluster::start(2, 2).await;
    let admin = admin(&cluster).await;
    cluster.inject(ApiKey::OFFSET_COMMIT, Fault::Duplicate, 1);
    within("alter_group_offsets", admin.alter_group_offsets(GROUP, &[(TOPIC, 0, 5)])).await.expect("offsets set");
    assert_eq!(cluster.pending(ApiKey::OFFSET_COMMIT), 0);
    let listed = match within("list_group_offsets", admin.list_group_offsets(GROUP, Some(&[TOPIC]))).await {
        Ok(listed) => listed,
        Err(error) => {
            assert_eq!(error.kind(), ErrorKind::Malformed, "{error}");
            assert!(error.to_string().contains("correlation id"), "{error}");
            within("list_group_offsets", admin.list_group_offsets(GROUP, Some(&[TOPIC]))).await.expect("listed")
        }
    };
    assert_eq!(listed.iter().map(|o| (o.partition, o.offset)).collect::<Vec<_>>(), vec![(0, 5)]);
}

/// An answer carrying a correlation id never sent is a protocol violation: the admin call
/// (not retried, as OffsetCommit through the admin client is not known to be safe to repeat)
/// fails with a typed error naming it, and the next call goes through on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commit_answer_with_a_correlation_id_never_sent_fails_the_call_naming_it() {
    let cluster = FaultCluster::start(2, 2).await;
    let admin = admin(&cluster).await;
    cluster.inject(ApiKey::OFFSET_COMMIT, Fault::UnknownCorrelation, 1);
    let error = within("alter_group_offsets", admin.alter_group_offsets(GROUP, &[(TOPIC, 0, 5)]))
        .await
        .expect_err("a broker that breaks the protocol fails the call");
    assert_eq!(error.kind(), ErrorKind::Malformed, "{error}");
    assert!(error.to_string().contains("correlation id"), "{error}");
    within("alter_group_offsets", admin.alter_group_offsets(GROUP, &[(TOPIC, 0, 7)])).await.expect("offsets set");
    let listed = within("list_group_offsets", admin.list_group_offsets(GROUP, Some(&[TOPIC]))).await.expect("listed");
    assert_eq!(listed.iter().map(|o| (o.partition, o.offset)).collect::<Vec<_>>(), vec![(0, 7)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_fetch_loading_is_retried() {
    group_offsets_survive(ApiKey::OFFSET_FETCH, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_fetch_answer_cut_mid_frame_is_retried() {
    group_offsets_survive(ApiKey::OFFSET_FETCH, Fault::Truncate, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_coordinator_loading_is_retried() {
    group_offsets_survive(ApiKey::FIND_COORDINATOR, LOADING, 3).await;
}

/// Writes 3 records to each partition, injects `fault` `times` for `api`, and lists the
/// partitions' end offsets.
async fn end_offsets_survive(api: ApiKey, fault: Fault, times: usize) -> FaultCluster {
    let cluster = FaultCluster::start(2, 2).await;
    for p in 0..2 {
        cluster.append(p, &["a".into(), "b".into(), "c".into()]);
    }
    let admin = admin(&cluster).await;
    cluster.inject(api, fault, times);
    let listed = within("list_offsets", admin.list_offsets(&[(TOPIC, 0), (TOPIC, 1)], OffsetSpec::Latest))
        .await
        .expect("end offsets listed");
    assert_eq!(listed.iter().map(|o| o.offset).collect::<Vec<_>>(), vec![3, 3]);
    assert_eq!(cluster.pending(api), 0, "every injected {fault:?} was applied");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_not_leader_storm_is_retried() {
    end_offsets_survive(ApiKey::LIST_OFFSETS, Fault::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER), 3).await;
}

/// Found by the chaos suite on Kafka 3.9.2: the retry runtime listed the offsets of a topic it
/// had just created, and the leader the metadata named answered UNKNOWN_TOPIC_OR_PARTITION (it
/// had not yet learned of the partition); the admin failed at once instead of asking again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_list_offsets_unknown_partition_at_a_leader_not_caught_up_is_retried() {
    end_offsets_survive(ApiKey::LIST_OFFSETS, Fault::Error(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_throttled_is_waited_out() {
    end_offsets_survive(ApiKey::LIST_OFFSETS, Fault::Throttle(200), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_answer_cut_mid_frame_is_retried() {
    end_offsets_survive(ApiKey::LIST_OFFSETS, Fault::Truncate, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_with_metadata_naming_a_leader_not_listed_is_retried() {
    end_offsets_survive(ApiKey::METADATA, Fault::LeaderNotListed, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_with_metadata_naming_no_leader_is_retried() {
    end_offsets_survive(ApiKey::METADATA, Fault::NoLeader, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_with_metadata_answered_twice_is_retried() {
    end_offsets_survive(ApiKey::METADATA, Fault::Duplicate, 1).await;
}
