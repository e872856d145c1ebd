//! The producer against fake brokers, for faults a real broker does not show on demand: a broker
//! that stops answering while the others are healthy, and a driver task that dies.

#[path = "support/fake_cluster.rs"]
mod fake_cluster;

use std::sync::atomic::Ordering;
use std::time::Duration;

use fake_cluster::{FakeCluster, FakeTopic};
use kafka_wire::client::{Error, Producer, ProducerConfig, ProducerRecord};

/// Waits up to `within` for `done`, polling (the fake broker has no event to await).
async fn eventually(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One broker accepts connections and never answers (as a SIGSTOPped broker does): records for
/// the other broker's partition are acknowledged all the same. Before, the driver awaited each
/// dispatch, so its connect to the stuck broker (ApiVersions unanswered until
/// `request.timeout.ms`) held up every other broker's batches. The healthy broker's connection
/// is established first, so what is tested is the producer's own serialization, not the
/// cluster's connection pool (whose lock is also held across a connect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_broker_that_never_answers_does_not_hold_up_the_others() {
    let cluster = FakeCluster::start(2, vec![FakeTopic::new("t", &[(0, 1), (1, 2)])]).await;
    cluster.node(2).silent.store(true, Ordering::Release);
    let producer = Producer::new(
        ProducerConfig::new(&cluster.addr(1))
            .linger(Duration::ZERO)
            .request_timeout(Duration::from_secs(120))
            .delivery_timeout(Duration::from_secs(300))
            .max_block(Duration::from_secs(20)),
    )
    .await
    .expect("connect to the fake cluster");
    let first = producer.send(ProducerRecord::new("t", "first").partition(0)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), first)
        .await
        .expect("timed out waiting for the healthy broker's first acknowledgement")
        .expect("first record");
    let stuck = producer.send(ProducerRecord::new("t", "stuck").partition(1)).await.unwrap();
    eventually("the producer connecting to the silent broker", Duration::from_secs(20), || {
        cluster.node(2).connections.load(Ordering::Relaxed) > 0
    })
    .await;
    for i in 0..20 {
        let delivery = producer.send(ProducerRecord::new("t", format!("healthy-{i}")).partition(0)).await.unwrap();
        let metadata = tokio::time::timeout(Duration::from_secs(20), delivery)
            .await
            .unwrap_or_else(|_| panic!("record {i} for the healthy broker not acknowledged while the other one stalls"))
            .expect("healthy record");
        assert_eq!(metadata.offset, i + 1);
    }
    assert_eq!(cluster.node(2).produce_requests.load(Ordering::Relaxed), 0, "the silent broker answered nothing");
    drop(stuck);
}

/// A panic in the producer's driver task fails every pending delivery, `flush` and later
/// `send` with `DriverFailed` instead of leaving them waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_driver_panic_fails_pending_and_later_calls() {
    let cluster = FakeCluster::start(1, vec![FakeTopic::new("t", &[(0, 1)])]).await;
    cluster.node(1).hold_produce.store(true, Ordering::Release);
    let producer = Producer::new(ProducerConfig::new(&cluster.addr(1)).linger(Duration::ZERO))
        .await
        .expect("connect to the fake broker");
    let mut pending = Vec::new();
    for i in 0..3 {
        pending.push(producer.send(ProducerRecord::new("t", format!("v{i}")).partition(0)).await.unwrap());
    }
    eventually("a Produce request in flight", Duration::from_secs(20), || {
        cluster.node(1).produce_requests.load(Ordering::Relaxed) > 0
    })
    .await;
    producer.inject_driver_panic();
    let is_driver_failed = |e: &Error| matches!(e, Error::DriverFailed { driver: "producer", .. });
    for (i, delivery) in pending.into_iter().enumerate() {
        let result = tokio::time::timeout(Duration::from_secs(20), delivery)
            .await
            .unwrap_or_else(|_| panic!("delivery {i} still pending 20 s after the driver died"));
        assert!(result.as_ref().is_err_and(is_driver_failed), "delivery {i}: {result:?}");
    }
    let flushed = tokio::time::timeout(Duration::from_secs(20), producer.flush())
        .await
        .expect("flush still waiting 20 s after the driver died");
    assert!(flushed.as_ref().is_err_and(is_driver_failed), "flush: {flushed:?}");
    let sent = producer.send(ProducerRecord::new("t", "later").partition(0)).await;
    assert!(sent.as_ref().is_err_and(is_driver_failed), "send after the driver died: {:?}", sent.map(|_| ()));
}
