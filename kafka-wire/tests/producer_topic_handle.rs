//! The per-topic handle (`Producer::topic`) and the send that returns no delivery future
//! (`send_nowait`), against the in-process fault cluster (`support/fault_cluster.rs`): every
//! record is acknowledged or its failure is reported by `flush`, a failure is reported once,
//! a `send_nowait` dropped while it waits for room leaves nothing queued, and `try_send`
//! queues at once or hands back the wait.

#[path = "support/fault_cluster.rs"]
mod fault_cluster;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use fault_cluster::{Fault, FaultCluster, TOPIC};
use kafka_wire::client::{Error, Producer, ProducerConfig, ProducerRecord, TrySend};
use kafka_wire::codec::{ApiKey, ErrorCode};

/// Bound on every wait: it only turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: i32 = 3;

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

fn config(cluster: &FaultCluster) -> ProducerConfig {
    ProducerConfig::new(&cluster.addr(1))
        .enable_idempotence(true)
        .linger(Duration::from_millis(1))
        .batch_size(2048)
        .request_timeout(Duration::from_secs(10))
        .delivery_timeout(Duration::from_secs(30))
        .retry_backoff(Duration::from_millis(5))
        .retry_backoff_max(Duration::from_millis(50))
        .max_block(Duration::from_secs(30))
}

/// A buffer with room for one record of 2 000 bytes, which a long linger keeps buffered (in a
/// batch it does not fill: with the shared 2 KiB batch.size it closed its batch, which could be
/// sent and acknowledged before the test looked): a second such record has to wait.
fn room_for_one(cluster: &FaultCluster) -> ProducerConfig {
    config(cluster)
        .batch_size(16 * 1024)
        .linger(Duration::from_secs(20))
        .delivery_timeout(Duration::from_secs(60))
        .buffer_memory(3000)
        .max_request_size(3000)
}

/// Every value in the cluster's log, with how many times each was written.
fn logged(cluster: &FaultCluster) -> Vec<String> {
    (0..PARTITIONS).flat_map(|p| cluster.values(p)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_handle_and_send_nowait_deliver_every_record_once() {
    let cluster = FaultCluster::start(2, PARTITIONS).await;
    let producer = within("the producer to connect", Producer::new(config(&cluster))).await.expect("connect");
    let handle = within("the topic's metadata", producer.topic(TOPIC)).await.expect("topic handle");
    assert_eq!(handle.name(), TOPIC);

    let mut sent = BTreeSet::new();
    let mut awaited = Vec::new();
    for i in 0..600 {
        let value = format!("v-{i}");
        sent.insert(value.clone());
        match i % 3 {
            // The handle ignores the record's topic field.
            0 => within("send_nowait", handle.send_nowait(ProducerRecord::new("", value))).await.expect("queued"),
            1 => within("producer.send_nowait", producer.send_nowait(ProducerRecord::new(TOPIC, value)))
                .await
                .expect("queued"),
            _ => {
                awaited.push(within("handle.send", handle.send(ProducerRecord::new("", value))).await.expect("queued"))
            }
        }
    }
    // A keyed record through the handle goes where the key's hash says, as with `send`.
    let keyed = within("a keyed send", handle.send(ProducerRecord::new("", "keyed").key("k"))).await.expect("queued");
    sent.insert("keyed".into());
    within("flush", producer.flush()).await.expect("every record acknowledged");
    for d in awaited {
        within("a delivery", d).await.expect("acknowledged");
    }
    let keyed = within("the keyed delivery", keyed).await.expect("acknowledged");
    assert_eq!(keyed.topic_partition.partition, kafka_wire::proto::partitioner::partition_for_key(b"k", 3));

    let log = logged(&cluster);
    assert_eq!(log.len(), sent.len(), "each record written once");
    assert_eq!(log.iter().cloned().collect::<BTreeSet<_>>(), sent);
    assert_eq!(producer.metrics().records_delivered, sent.len() as u64);

    let wrong = handle.send(ProducerRecord::new("", "x").partition(PARTITIONS)).await;
    assert!(matches!(wrong, Err(Error::Misuse { .. })), "a partition out of range is refused: {:?}", wrong.err());
    within("close", producer.close()).await.expect("nothing left to report");
}

/// The broker refuses the first Produce request for good: its records fail, and since nobody
/// awaits them, the next flush reports the failure (once), while the records of later requests
/// are acknowledged. Every record is accounted for: in the log, or counted failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_nowait_failures_are_reported_by_the_next_flush_once() {
    let cluster = FaultCluster::start(1, PARTITIONS).await;
    cluster.inject(ApiKey::PRODUCE, Fault::Error(ErrorCode::INVALID_RECORD), 1);
    let producer = within("the producer to connect", Producer::new(config(&cluster))).await.expect("connect");
    let handle = within("the topic's metadata", producer.topic(TOPIC)).await.expect("topic handle");
    let n = 300u64;
    for i in 0..n {
        within("send_nowait", handle.send_nowait(ProducerRecord::new("", format!("v-{i}")))).await.expect("queued");
    }
    let failure = within("flush", producer.flush()).await;
    assert!(
        matches!(&failure, Err(Error::Broker { code, .. }) if *code == ErrorCode::INVALID_RECORD),
        "flush reports the refused records' error: {failure:?}"
    );
    let metrics = producer.metrics();
    assert!(metrics.records_failed > 0, "the refused request's records failed");
    assert_eq!(metrics.records_delivered + metrics.records_failed, n, "every record acknowledged or failed");
    assert_eq!(logged(&cluster).len() as u64, metrics.records_delivered, "the acknowledged ones, written once");

    // Reported once: the next flush, with nothing failed since, succeeds.
    within("send_nowait", handle.send_nowait(ProducerRecord::new("", "after"))).await.expect("queued");
    within("a second flush", producer.flush()).await.expect("no failure since the last flush");
    assert_eq!(producer.metrics().records_delivered, metrics.records_delivered + 1);
}

/// A `send_nowait` waiting for room in `buffer.memory` and dropped leaves nothing queued: the
/// record is neither buffered nor ever written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_send_nowait_leaves_nothing_queued() {
    let cluster = FaultCluster::start(1, PARTITIONS).await;
    let producer = within("the producer to connect", Producer::new(room_for_one(&cluster))).await.expect("connect");
    let handle = within("the topic's metadata", producer.topic(TOPIC)).await.expect("topic handle");
    within("send_nowait", handle.send_nowait(ProducerRecord::new("", vec![b'a'; 2000]))).await.expect("queued");
    let buffered = producer.metrics().buffered_bytes;
    assert!(buffered >= 2000, "the first record is buffered ({buffered} bytes)");

    let mut blocked = Box::pin(handle.send_nowait(ProducerRecord::new("", vec![b'b'; 2000])));
    // Polled once: it waits for room (the futures are polled in order).
    tokio::select! {
        biased;
        r = &mut blocked => panic!("the second record found room in a full buffer: {r:?}"),
        () = std::future::ready(()) => {}
    }
    drop(blocked);
    assert_eq!(producer.metrics().buffered_bytes, buffered, "the dropped send left nothing buffered");

    within("flush", producer.flush()).await.expect("the first record acknowledged");
    let log = logged(&cluster);
    assert_eq!(log.len(), 1, "only the first record was written");
    assert!(log[0].starts_with('a'));
    assert_eq!(producer.metrics().records_delivered, 1);
}

/// On a current-thread runtime, a loop of sends that never has to wait (room in the buffer,
/// metadata known) used to keep the driver from running until `buffer.memory` was full: no
/// batch went out while the loop ran. `send` now yields now and then (tokio's cooperative
/// budget), so records are acknowledged while the loop is still sending.
#[tokio::test(flavor = "current_thread")]
async fn regression_a_loop_of_sends_lets_the_driver_run_on_a_current_thread_runtime() {
    let cluster = FaultCluster::start(1, PARTITIONS).await;
    let producer = within("the producer to connect", Producer::new(config(&cluster))).await.expect("connect");
    let handle = within("the topic's metadata", producer.topic(TOPIC)).await.expect("topic handle");
    let n = 20_000u64;
    for i in 0..n {
        within("send_nowait", handle.send_nowait(ProducerRecord::new("", format!("v-{i}")))).await.expect("queued");
    }
    let delivered = producer.metrics().records_delivered;
    assert!(delivered > 0, "no record of {n} was acknowledged while the loop sent them");
    within("flush", producer.flush()).await.expect("every record acknowledged");
    assert_eq!(producer.metrics().records_delivered, n);
}

/// `try_send` queues a record at once when nothing has to wait, and otherwise hands back the
/// rest of the send: dropped, the record is withdrawn; awaited, it is queued once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_send_queues_at_once_or_hands_back_the_wait() {
    let cluster = FaultCluster::start(1, PARTITIONS).await;
    let producer = within("the producer to connect", Producer::new(room_for_one(&cluster))).await.expect("connect");
    let handle = within("the topic's metadata", producer.topic(TOPIC)).await.expect("topic handle");

    let first = match handle.try_send(ProducerRecord::new("", vec![b'a'; 2000])).expect("not refused") {
        TrySend::Queued(delivery) => delivery,
        TrySend::Waiting(_) => panic!("the first record had to wait in an empty buffer"),
    };
    let buffered = producer.metrics().buffered_bytes;
    assert!(buffered >= 2000, "the first record is buffered ({buffered} bytes)");

    // No room: the send is handed back; dropped, it leaves nothing behind.
    let TrySend::Waiting(withdrawn) = handle.try_send(ProducerRecord::new("", vec![b'b'; 2000])).expect("not refused")
    else {
        panic!("the second record found room in a full buffer");
    };
    drop(withdrawn);
    assert_eq!(producer.metrics().buffered_bytes, buffered, "the withdrawn record left nothing buffered");

    // Awaited, it is queued once the first record's batch is acknowledged (flush sends it now).
    let TrySend::Waiting(waiting) = handle.try_send(ProducerRecord::new("", vec![b'c'; 2000])).expect("not refused")
    else {
        panic!("the third record found room in a full buffer");
    };
    let (third, flushed) = within("the wait and a flush", async { tokio::join!(waiting, producer.flush()) }).await;
    flushed.expect("the first record acknowledged");
    let third = third.expect("queued once there was room");
    within("the first delivery", first).await.expect("acknowledged");
    within("flush", producer.flush()).await.expect("the third record acknowledged");
    within("the third delivery", third).await.expect("acknowledged");

    let mut log = logged(&cluster);
    log.sort();
    assert_eq!(log.len(), 2, "the first and third records, each once");
    assert!(log[0].starts_with('a') && log[1].starts_with('c'), "the withdrawn record was never written");
    assert_eq!(producer.metrics().records_delivered, 2);
}
