//! The idempotent producer against answers a real broker will not give on demand, injected by
//! an in-process fake cluster (`support/fault_cluster.rs`): NOT_LEADER_OR_FOLLOWER storms (with
//! and without a leader move), throttles on every API it uses, the same answer twice, an answer
//! with a correlation id never sent, a Produce answer for a partition never asked for or without
//! one that was, Metadata without the topic's partitions or with an unknown or absent leader,
//! and an answer cut mid-frame. In each the producer recovers, every acknowledged record is in
//! the log exactly once and in order, or a record fails with a typed error within its delivery
//! timeout; never a hang.

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

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

async fn producer(cluster: &FaultCluster) -> Producer {
    let config = ProducerConfig::new(&cluster.addr(1))
        .enable_idempotence(true)
        .linger(Duration::ZERO)
        .request_timeout(Duration::from_secs(10))
        .delivery_timeout(Duration::from_secs(30))
        .retry_backoff(Duration::from_millis(5))
        .retry_backoff_max(Duration::from_millis(50))
        .max_block(Duration::from_secs(30));
    within("the producer to connect", Producer::new(config)).await.expect("connect to the fault cluster")
}

/// Sends `n` records `<tag>-<i>`, alternating between the partitions, all queued before any is
/// awaited; returns each record's partition, value and acknowledged offset.
async fn send_all(producer: &Producer, tag: &str, n: usize) -> Vec<(i32, String, i64)> {
    let mut pending = Vec::new();
    for i in 0..n {
        let partition = i as i32 % PARTITIONS;
        let value = format!("{tag}-{i}");
        let record = ProducerRecord::new(TOPIC, value.clone()).partition(partition);
        let delivery = within("send to queue a record", producer.send(record)).await.expect("record queued");
        pending.push((partition, value, delivery));
    }
    let mut acked = Vec::new();
    for (partition, value, delivery) in pending {
        let md = within(&format!("the acknowledgement of {value}"), delivery)
            .await
            .unwrap_or_else(|e| panic!("{value} not acknowledged: {e}"));
        assert_eq!(md.topic_partition.partition, partition);
        acked.push((partition, value, md.offset));
    }
    acked
}

/// The invariant: each partition's log holds exactly the acknowledged records, once each, in
/// the order sent, each at the offset acknowledged.
fn assert_log_matches(cluster: &FaultCluster, acked: &[(i32, String, i64)]) {
    for p in 0..PARTITIONS {
        let log = cluster.values(p);
        let sent: Vec<&(i32, String, i64)> = acked.iter().filter(|(q, _, _)| *q == p).collect();
        let values: Vec<&str> = sent.iter().map(|(_, v, _)| v.as_str()).collect();
        assert_eq!(log, values, "partition {p}: the log is not the acknowledged records once each, in order");
        for (i, (_, value, offset)) in sent.iter().enumerate() {
            assert_eq!(*offset, i as i64, "partition {p}: {value} acknowledged at the wrong offset");
        }
    }
}

/// Injects `fault` `times` for `api` once the producer is connected, then sends rounds of
/// records (each round acknowledged before the next) until every fault was applied, and one
/// round after; checks every record was acknowledged once, in order.
async fn recovers_from(api: ApiKey, fault: Fault, times: usize) -> FaultCluster {
    const ROUNDS: usize = 20;
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    let producer = producer(&cluster).await;
    cluster.inject(api, fault, times);
    let mut acked = Vec::new();
    for round in 0..ROUNDS {
        acked.extend(send_all(&producer, &format!("r{round}"), 4).await);
        assert_log_matches(&cluster, &acked);
        if cluster.pending(api) == 0 {
            break;
        }
    }
    assert_eq!(cluster.pending(api), 0, "every injected {fault:?} was applied within {ROUNDS} rounds");
    acked.extend(send_all(&producer, "after", 4).await);
    assert_log_matches(&cluster, &acked);
    within("close", producer.close()).await.expect("close");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_leader_storm_without_a_leader_change_is_retried_until_it_ends() {
    let cluster = recovers_from(ApiKey::PRODUCE, Fault::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER), 8).await;
    assert!(cluster.count(ApiKey::METADATA) > 1, "NOT_LEADER_OR_FOLLOWER makes the producer refresh metadata");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_leader_storm_during_a_leader_move_ends_on_the_new_leader() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    let producer = producer(&cluster).await;
    let first = send_all(&producer, "before", 4).await;
    // Both partitions move to the other node, and the first answers of every node say
    // NOT_LEADER_OR_FOLLOWER; the old leaders keep saying so after the storm.
    cluster.set_leader(0, 2);
    cluster.set_leader(1, 1);
    cluster.inject(ApiKey::PRODUCE, Fault::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER), 6);
    let second = send_all(&producer, "moved", 20).await;
    let all: Vec<_> = first.into_iter().chain(second).collect();
    assert_log_matches(&cluster, &all);
    assert_eq!(cluster.pending(ApiKey::PRODUCE), 0);
    within("close", producer.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_produce_answers_delay_but_lose_nothing() {
    recovers_from(ApiKey::PRODUCE, Fault::Throttle(200), 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_metadata_answers_delay_but_lose_nothing() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    cluster.inject(ApiKey::METADATA, Fault::Throttle(200), 3);
    let producer = producer(&cluster).await;
    let acked = send_all(&producer, "r", 10).await;
    assert_log_matches(&cluster, &acked);
    within("close", producer.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_init_producer_id_answer_delays_but_loses_nothing() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    cluster.inject(ApiKey::INIT_PRODUCER_ID, Fault::Throttle(200), 1);
    let producer = producer(&cluster).await;
    let acked = send_all(&producer, "r", 10).await;
    assert_log_matches(&cluster, &acked);
    assert_eq!(cluster.pending(ApiKey::INIT_PRODUCER_ID), 0);
    within("close", producer.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_answer_sent_twice_writes_nothing_twice() {
    recovers_from(ApiKey::PRODUCE, Fault::Duplicate, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_answer_with_a_correlation_id_never_sent_writes_nothing_twice() {
    recovers_from(ApiKey::PRODUCE, Fault::UnknownCorrelation, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_answer_for_a_partition_never_asked_for_is_ignored() {
    recovers_from(ApiKey::PRODUCE, Fault::ExtraPartition, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_answer_missing_a_partition_asked_for_is_retried() {
    recovers_from(ApiKey::PRODUCE, Fault::MissingPartition, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_answer_cut_mid_frame_is_retried_without_duplicates() {
    recovers_from(ApiKey::PRODUCE, Fault::Truncate, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_answer_cut_mid_frame_is_asked_again() {
    recovers_from(ApiKey::METADATA, Fault::Truncate, 2).await;
}

/// A topic listed without an error but without its partitions is asked for again until it has
/// them. Before, the send failed at once with "broker error NONE".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_metadata_answer_without_the_topics_partitions_is_asked_again() {
    recovers_from(ApiKey::METADATA, Fault::NoPartitions, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_answer_whose_leader_is_not_a_listed_broker_is_asked_again() {
    recovers_from(ApiKey::METADATA, Fault::LeaderNotListed, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_answer_with_no_leader_is_asked_again() {
    recovers_from(ApiKey::METADATA, Fault::NoLeader, 3).await;
}

/// A leader that stays unknown does not hang a send: the record fails with a typed error once
/// its time is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_is_never_a_listed_broker_fails_the_record_with_a_timeout() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    let config = ProducerConfig::new(&cluster.addr(1))
        .linger(Duration::ZERO)
        .request_timeout(Duration::from_secs(1))
        .delivery_timeout(Duration::from_secs(2))
        .retry_backoff(Duration::from_millis(5))
        .max_block(Duration::from_secs(2));
    let producer = within("the producer to connect", Producer::new(config)).await.expect("connect");
    cluster.inject(ApiKey::METADATA, Fault::LeaderNotListed, 10_000);
    let record = ProducerRecord::new(TOPIC, "lost").partition(0);
    let outcome = match within("send", producer.send(record)).await {
        Ok(delivery) => within("the record to fail", delivery).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let error = outcome.expect_err("a record for a partition without a reachable leader is not acknowledged");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert!(cluster.values(0).is_empty());
}

/// A topic that stays listed without partitions fails the send, once `max.block.ms` is up, with
/// an error that says so (before: "broker error NONE", at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_topic_always_listed_without_partitions_fails_the_send_naming_the_cause() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    let config = ProducerConfig::new(&cluster.addr(1))
        .linger(Duration::ZERO)
        .retry_backoff(Duration::from_millis(5))
        .max_block(Duration::from_millis(500));
    let producer = within("the producer to connect", Producer::new(config)).await.expect("connect");
    cluster.inject(ApiKey::METADATA, Fault::NoPartitions, 10_000);
    let error = within("send", producer.send(ProducerRecord::new(TOPIC, "x").partition(0)))
        .await
        .err()
        .expect("a topic without partitions takes no record");
    assert_eq!(error.code(), Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION), "{error}");
    assert!(error.to_string().contains("without partitions"), "{error}");
    assert!(cluster.count(ApiKey::METADATA) > 2, "the topic was asked for again");
}

/// A NOT_LEADER_OR_FOLLOWER storm that does not end fails the records with a timeout once
/// `delivery.timeout.ms` is up, writing nothing; never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_leader_storm_that_never_ends_fails_the_records_with_a_timeout() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    let config = ProducerConfig::new(&cluster.addr(1))
        .linger(Duration::ZERO)
        .request_timeout(Duration::from_secs(1))
        .delivery_timeout(Duration::from_secs(2))
        .retry_backoff(Duration::from_millis(5))
        .retry_backoff_max(Duration::from_millis(50));
    let producer = within("the producer to connect", Producer::new(config)).await.expect("connect");
    cluster.inject(ApiKey::PRODUCE, Fault::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER), 10_000);
    let mut deliveries = Vec::new();
    for i in 0..4 {
        let record = ProducerRecord::new(TOPIC, format!("v{i}")).partition(i % PARTITIONS);
        deliveries.push(within("send", producer.send(record)).await.expect("queued"));
    }
    for d in deliveries {
        let error = within("the record to fail", d).await.expect_err("never acknowledged");
        assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    }
    assert!(cluster.values(0).is_empty() && cluster.values(1).is_empty());
}
