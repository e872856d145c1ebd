//! The transactional producer against coordinator answers a real broker gives only by chance,
//! injected by an in-process fake cluster (`support/fault_cluster.rs`):
//! COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR and CONCURRENT_TRANSACTIONS on FindCoordinator,
//! InitProducerId, AddPartitionsToTxn and EndTxn, throttles on each, and answers sent twice or
//! cut mid-frame. In each, the transactions commit, every record is in the log exactly once and
//! in order, and every transaction is ended with a commit; never a hang.

#[path = "support/fault_cluster.rs"]
mod fault_cluster;

use std::future::Future;
use std::time::Duration;

use fault_cluster::{Fault, FaultCluster, TOPIC};
use kafka_wire::client::{ErrorKind, Producer, ProducerConfig, ProducerRecord};
use kafka_wire::codec::{ApiKey, ErrorCode};

/// Bound on every wait: it only turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 2;
const RECORDS: usize = 4;

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

fn config(cluster: &FaultCluster) -> ProducerConfig {
    ProducerConfig::new(&cluster.addr(2))
        .transactional_id("injected")
        .linger(Duration::ZERO)
        .request_timeout(Duration::from_secs(10))
        .delivery_timeout(Duration::from_secs(30))
        .retry_backoff(Duration::from_millis(5))
        .retry_backoff_max(Duration::from_millis(50))
        .max_block(Duration::from_secs(30))
}

/// One committed transaction of [`RECORDS`] records `<tag>-<i>`, alternating partitions;
/// returns `(partition, value)` of each.
async fn commit_one(producer: &Producer, tag: &str) -> Vec<(i32, String)> {
    producer.begin_transaction().expect("begin");
    let mut sent = Vec::new();
    let mut deliveries = Vec::new();
    for i in 0..RECORDS {
        let partition = i as i32 % PARTITIONS;
        let value = format!("{tag}-{i}");
        let record = ProducerRecord::new(TOPIC, value.clone()).partition(partition);
        deliveries.push(within("send", producer.send(record)).await.expect("record queued"));
        sent.push((partition, value));
    }
    within(&format!("the commit of {tag}"), producer.commit_transaction())
        .await
        .unwrap_or_else(|e| panic!("transaction {tag} not committed: {e}"));
    for d in deliveries {
        within("an acknowledgement", d).await.expect("every record of a committed transaction is acknowledged");
    }
    sent
}

/// The invariant: each partition's log holds exactly the records sent, once each, in order, and
/// every transaction was ended once, with a commit.
fn assert_committed(cluster: &FaultCluster, sent: &[(i32, String)], transactions: usize) {
    for p in 0..PARTITIONS {
        let values: Vec<&str> = sent.iter().filter(|(q, _)| *q == p).map(|(_, v)| v.as_str()).collect();
        assert_eq!(cluster.values(p), values, "partition {p}: not the committed records once each, in order");
    }
    assert_eq!(cluster.ended(), vec![true; transactions], "each transaction ended once, committed");
}

/// Injects `fault` `times` for `api` before the producer starts, then runs transactions until
/// every fault was applied, and one more.
async fn recovers_from(api: ApiKey, fault: Fault, times: usize) -> FaultCluster {
    const ROUNDS: usize = 20;
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    cluster.inject(api, fault, times);
    let producer = within("the producer to connect", Producer::new(config(&cluster))).await.expect("connect");
    within("init_transactions", producer.init_transactions()).await.expect("init_transactions");
    let mut sent = Vec::new();
    let mut transactions = 0;
    for round in 0..ROUNDS {
        sent.extend(commit_one(&producer, &format!("t{round}")).await);
        transactions += 1;
        assert_committed(&cluster, &sent, transactions);
        if cluster.pending(api) == 0 {
            break;
        }
    }
    assert_eq!(cluster.pending(api), 0, "every injected {fault:?} was applied within {ROUNDS} transactions");
    sent.extend(commit_one(&producer, "after").await);
    assert_committed(&cluster, &sent, transactions + 1);
    within("close", producer.close()).await.expect("close");
    cluster
}

const LOADING: Fault = Fault::Error(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
const NOT_COORDINATOR: Fault = Fault::Error(ErrorCode::NOT_COORDINATOR);
const CONCURRENT: Fault = Fault::Error(ErrorCode::CONCURRENT_TRANSACTIONS);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_coordinator_loading_is_retried() {
    recovers_from(ApiKey::FIND_COORDINATOR, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_coordinator_throttled_is_waited_out() {
    recovers_from(ApiKey::FIND_COORDINATOR, Fault::Throttle(200), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_producer_id_loading_is_retried() {
    recovers_from(ApiKey::INIT_PRODUCER_ID, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_producer_id_not_coordinator_looks_the_coordinator_up_again() {
    let cluster = recovers_from(ApiKey::INIT_PRODUCER_ID, NOT_COORDINATOR, 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per NOT_COORDINATOR, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_producer_id_concurrent_transactions_is_retried() {
    recovers_from(ApiKey::INIT_PRODUCER_ID, CONCURRENT, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_partitions_loading_is_retried() {
    recovers_from(ApiKey::ADD_PARTITIONS_TO_TXN, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_partitions_not_coordinator_looks_the_coordinator_up_again() {
    let cluster = recovers_from(ApiKey::ADD_PARTITIONS_TO_TXN, NOT_COORDINATOR, 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per NOT_COORDINATOR, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_partitions_concurrent_transactions_is_retried() {
    recovers_from(ApiKey::ADD_PARTITIONS_TO_TXN, CONCURRENT, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_partitions_throttled_is_waited_out() {
    recovers_from(ApiKey::ADD_PARTITIONS_TO_TXN, Fault::Throttle(200), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_partitions_answered_twice_is_survived() {
    recovers_from(ApiKey::ADD_PARTITIONS_TO_TXN, Fault::Duplicate, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_partitions_answer_cut_mid_frame_is_retried() {
    recovers_from(ApiKey::ADD_PARTITIONS_TO_TXN, Fault::Truncate, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_txn_loading_is_retried() {
    recovers_from(ApiKey::END_TXN, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_txn_not_coordinator_looks_the_coordinator_up_again() {
    let cluster = recovers_from(ApiKey::END_TXN, NOT_COORDINATOR, 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per NOT_COORDINATOR, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_txn_concurrent_transactions_is_retried() {
    recovers_from(ApiKey::END_TXN, CONCURRENT, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_txn_throttled_is_waited_out() {
    recovers_from(ApiKey::END_TXN, Fault::Throttle(200), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_txn_answer_cut_mid_frame_is_retried() {
    recovers_from(ApiKey::END_TXN, Fault::Truncate, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_produce_not_leader_storm_is_retried() {
    recovers_from(ApiKey::PRODUCE, Fault::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER), 6).await;
}

/// A coordinator that stays loading does not hang `init_transactions`: it fails with a timeout
/// once `max.block.ms` is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_loading_for_ever_fails_init_transactions_with_a_timeout() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    cluster.inject(ApiKey::INIT_PRODUCER_ID, LOADING, 10_000);
    let producer = within("the producer to connect", Producer::new(config(&cluster).max_block(Duration::from_secs(1))))
        .await
        .expect("connect");
    let error = within("init_transactions to fail", producer.init_transactions())
        .await
        .expect_err("a coordinator that never loads registers nothing");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
}

/// CONCURRENT_TRANSACTIONS on EndTxn that does not end fails `commit_transaction` with a
/// timeout once `max.block.ms` is up; never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_for_ever_on_end_txn_fails_the_commit_with_a_timeout() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    let producer = within("the producer to connect", Producer::new(config(&cluster).max_block(Duration::from_secs(1))))
        .await
        .expect("connect");
    within("init_transactions", producer.init_transactions()).await.expect("init_transactions");
    cluster.inject(ApiKey::END_TXN, CONCURRENT, 10_000);
    producer.begin_transaction().expect("begin");
    let delivery = within("send", producer.send(ProducerRecord::new(TOPIC, "x").partition(0))).await.expect("queued");
    let error = within("the commit to fail", producer.commit_transaction())
        .await
        .expect_err("a transaction the coordinator never ends is not committed");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    within("the record's acknowledgement", delivery).await.expect("the record itself was written");
    assert!(cluster.ended().is_empty(), "no EndTxn was accepted");
}
