//! A transaction's consumer offsets (KIP-447: AddOffsetsToTxn to the transaction coordinator,
//! TxnOffsetCommit to the group coordinator) against answers a real broker gives only by chance,
//! injected by an in-process fake cluster (`support/fault_cluster.rs`, transactions v1):
//! CONCURRENT_TRANSACTIONS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR and
//! COORDINATOR_LOAD_IN_PROGRESS on either, throttles, answers sent twice or cut mid-frame: each
//! transaction still commits, with its records once each and in order and its offsets committed
//! with it, never a hang. UNKNOWN_MEMBER_ID and ILLEGAL_GENERATION on TxnOffsetCommit (the
//! consumer was fenced from its group) fail the transaction with a typed error naming the code;
//! it aborts, nothing of it is committed, and the next transaction commits.

#[path = "support/fault_cluster.rs"]
mod fault_cluster;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use fault_cluster::{Fault, FaultCluster, TOPIC};
use kafka_wire::client::{
    ConsumerGroupMetadata, DeliveryFuture, Error, ErrorKind, OffsetAndMetadata, Producer, ProducerConfig,
    ProducerRecord,
};
use kafka_wire::codec::{ApiKey, ErrorCode};
use kafka_wire::proto::producer::TopicPartition;

/// Bound on every wait: it only turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 2;
const RECORDS: usize = 4;
const GROUP: &str = "copier";

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

fn config(cluster: &FaultCluster) -> ProducerConfig {
    ProducerConfig::new(&cluster.addr(2))
        .transactional_id("injected-offsets")
        .linger(Duration::ZERO)
        .request_timeout(Duration::from_secs(10))
        .delivery_timeout(Duration::from_secs(30))
        .retry_backoff(Duration::from_millis(5))
        .retry_backoff_max(Duration::from_millis(50))
        .max_block(Duration::from_secs(30))
}

fn group() -> ConsumerGroupMetadata {
    ConsumerGroupMetadata {
        group_id: GROUP.into(),
        generation_id: 1,
        member_id: "member-1".into(),
        group_instance_id: None,
    }
}

/// The offsets transaction `n` commits: partition `p` at `10 * (n + 1) + p`, so that each
/// transaction's offsets are told apart and grow.
fn offsets(n: usize) -> BTreeMap<TopicPartition, OffsetAndMetadata> {
    (0..PARTITIONS)
        .map(|p| (TopicPartition::new(TOPIC, p), OffsetAndMetadata::new(10 * (n as i64 + 1) + i64::from(p))))
        .collect()
}

/// The commits the cluster keeps for transaction `n`'s offsets, in the order it keeps them.
fn commits_of(n: usize) -> Vec<(String, i32, i64)> {
    offsets(n).iter().map(|(tp, o)| (GROUP.to_string(), tp.partition, o.offset)).collect()
}

/// A transaction begun: `(partition, value)` of each record, their deliveries, and how
/// `send_offsets_to_transaction` ended.
struct Begun {
    sent: Vec<(i32, String)>,
    deliveries: Vec<DeliveryFuture>,
    added: Result<(), Error>,
}

/// Begins transaction `n`: [`RECORDS`] records `<tag>-<i>` alternating partitions, then its
/// offsets.
async fn produce_with_offsets(producer: &Producer, n: usize, tag: &str) -> Begun {
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
    let added =
        within("send_offsets_to_transaction", producer.send_offsets_to_transaction(&offsets(n), &group())).await;
    Begun { sent, deliveries, added }
}

/// Every record of a committed transaction was acknowledged.
async fn acknowledged(deliveries: Vec<DeliveryFuture>) {
    for d in deliveries {
        within("an acknowledgement", d).await.expect("every record of a committed transaction is acknowledged");
    }
}

/// The invariant: each partition's log holds exactly the committed transactions' records, once
/// each, in order; every transaction ended once with the outcome given; the group's committed
/// offsets are those of the committed transactions, in order.
fn assert_state(cluster: &FaultCluster, sent: &[(i32, String)], ended: &[bool], offsets_committed: &[usize]) {
    for p in 0..PARTITIONS {
        let values: Vec<&str> = sent.iter().filter(|(q, _)| *q == p).map(|(_, v)| v.as_str()).collect();
        assert_eq!(cluster.values(p), values, "partition {p}: not the committed records once each, in order");
    }
    assert_eq!(cluster.ended(), ended, "each transaction ended once, as decided");
    let expected: Vec<_> = offsets_committed.iter().flat_map(|&n| commits_of(n)).collect();
    assert_eq!(cluster.commits(), expected, "the group's offsets are those of the committed transactions");
}

/// Injects `fault` `times` for `api` before the producer starts, then commits transactions
/// with offsets until every fault was applied, and one more.
async fn recovers_from(api: ApiKey, fault: Fault, times: usize) -> FaultCluster {
    const ROUNDS: usize = 20;
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    cluster.inject(api, fault, times);
    let producer = within("the producer to connect", Producer::new(config(&cluster))).await.expect("connect");
    within("init_transactions", producer.init_transactions()).await.expect("init_transactions");
    let mut sent = Vec::new();
    let mut committed = Vec::new();
    for n in 0..=ROUNDS {
        assert!(n < ROUNDS, "every injected {fault:?} was applied within {ROUNDS} transactions");
        let last = cluster.pending(api) == 0;
        let begun = produce_with_offsets(&producer, n, &format!("t{n}")).await;
        begun.added.unwrap_or_else(|e| panic!("transaction {n}: offsets not added: {e}"));
        within(&format!("the commit of transaction {n}"), producer.commit_transaction())
            .await
            .unwrap_or_else(|e| panic!("transaction {n} not committed: {e}"));
        acknowledged(begun.deliveries).await;
        sent.extend(begun.sent);
        committed.push(n);
        assert_state(&cluster, &sent, &vec![true; committed.len()], &committed);
        if last {
            break;
        }
    }
    within("close", producer.close()).await.expect("close");
    cluster
}

const LOADING: Fault = Fault::Error(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
const NOT_AVAILABLE: Fault = Fault::Error(ErrorCode::COORDINATOR_NOT_AVAILABLE);
const NOT_COORDINATOR: Fault = Fault::Error(ErrorCode::NOT_COORDINATOR);
const CONCURRENT: Fault = Fault::Error(ErrorCode::CONCURRENT_TRANSACTIONS);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_offsets_concurrent_transactions_is_retried() {
    recovers_from(ApiKey::ADD_OFFSETS_TO_TXN, CONCURRENT, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_offsets_coordinator_not_available_looks_the_coordinator_up_again() {
    let cluster = recovers_from(ApiKey::ADD_OFFSETS_TO_TXN, NOT_AVAILABLE, 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per COORDINATOR_NOT_AVAILABLE, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_offsets_not_coordinator_looks_the_coordinator_up_again() {
    let cluster = recovers_from(ApiKey::ADD_OFFSETS_TO_TXN, NOT_COORDINATOR, 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per NOT_COORDINATOR, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_offsets_loading_is_retried() {
    recovers_from(ApiKey::ADD_OFFSETS_TO_TXN, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_offsets_throttled_is_waited_out() {
    recovers_from(ApiKey::ADD_OFFSETS_TO_TXN, Fault::Throttle(200), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_offsets_answered_twice_is_survived() {
    recovers_from(ApiKey::ADD_OFFSETS_TO_TXN, Fault::Duplicate, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_offsets_answer_cut_mid_frame_is_retried() {
    recovers_from(ApiKey::ADD_OFFSETS_TO_TXN, Fault::Truncate, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offset_commit_concurrent_transactions_is_retried() {
    recovers_from(ApiKey::TXN_OFFSET_COMMIT, CONCURRENT, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offset_commit_coordinator_not_available_looks_the_coordinator_up_again() {
    let cluster = recovers_from(ApiKey::TXN_OFFSET_COMMIT, NOT_AVAILABLE, 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per COORDINATOR_NOT_AVAILABLE, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offset_commit_not_coordinator_looks_the_coordinator_up_again() {
    let cluster = recovers_from(ApiKey::TXN_OFFSET_COMMIT, NOT_COORDINATOR, 3).await;
    assert!(cluster.count(ApiKey::FIND_COORDINATOR) >= 4, "one lookup per NOT_COORDINATOR, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offset_commit_loading_is_retried() {
    recovers_from(ApiKey::TXN_OFFSET_COMMIT, LOADING, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offset_commit_throttled_is_waited_out() {
    recovers_from(ApiKey::TXN_OFFSET_COMMIT, Fault::Throttle(200), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offset_commit_answered_twice_is_survived() {
    recovers_from(ApiKey::TXN_OFFSET_COMMIT, Fault::Duplicate, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offset_commit_answer_cut_mid_frame_is_retried() {
    recovers_from(ApiKey::TXN_OFFSET_COMMIT, Fault::Truncate, 2).await;
}

/// A consumer fenced from its group (`code` on TxnOffsetCommit): `send_offsets_to_transaction`
/// fails with a typed error naming the code, the transaction aborts (ended with an abort, none of
/// its offsets committed), and the next transaction commits, records and offsets. (Whether the
/// aborted transaction's records reached the fake's log depends on timing; a read_committed
/// reader would skip them, which this log does not model, so only the next ones are checked.)
async fn fenced_group_member_aborts_the_transaction(code: ErrorCode) {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    let producer = within("the producer to connect", Producer::new(config(&cluster))).await.expect("connect");
    within("init_transactions", producer.init_transactions()).await.expect("init_transactions");

    cluster.inject(ApiKey::TXN_OFFSET_COMMIT, Fault::Error(code), 1);
    let fenced = produce_with_offsets(&producer, 0, "fenced").await;
    let error = fenced.added.expect_err("the group refused the offsets");
    assert_eq!(error.kind(), ErrorKind::TransactionAborted, "{error}");
    assert!(matches!(&error, Error::TransactionAbortable { reason } if reason.contains(&code.to_string())), "{error}");
    let commit = within("a commit after the refusal", producer.commit_transaction()).await;
    assert!(commit.is_err(), "a transaction whose offsets were refused does not commit");
    within("the abort", producer.abort_transaction()).await.expect("abort");
    assert_eq!(cluster.ended(), [false], "the transaction ended once, aborted");
    assert!(cluster.commits().is_empty(), "no offset of the aborted transaction committed");

    // The aborted transaction's records complete, one way or the other.
    for d in fenced.deliveries {
        let _ = within("an aborted record to complete", d).await;
    }

    let next = produce_with_offsets(&producer, 1, "next").await;
    next.added.expect("the next transaction's offsets");
    within("the next commit", producer.commit_transaction()).await.expect("the next transaction commits");
    acknowledged(next.deliveries).await;
    for p in 0..PARTITIONS {
        let values: Vec<String> = next.sent.iter().filter(|(q, _)| *q == p).map(|(_, v)| v.clone()).collect();
        assert!(cluster.values(p).ends_with(&values), "partition {p}: the next transaction's records, once, last");
    }
    assert_eq!(cluster.ended(), [false, true], "then a commit");
    assert_eq!(cluster.commits(), commits_of(1), "the next transaction's offsets, and only those");
    within("close", producer.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offset_commit_unknown_member_id_aborts_the_transaction_with_a_typed_error() {
    fenced_group_member_aborts_the_transaction(ErrorCode::UNKNOWN_MEMBER_ID).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offset_commit_illegal_generation_aborts_the_transaction_with_a_typed_error() {
    fenced_group_member_aborts_the_transaction(ErrorCode::ILLEGAL_GENERATION).await;
}
