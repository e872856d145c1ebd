//! The transactional producer against a real broker: committed transactions visible to
//! read_committed readers and aborted ones not (while read_uncommitted readers see both),
//! offsets committed inside a transaction, fencing by a second instance, the KIP-890 v2 epoch
//! bump per transaction, and the typed errors of misuse.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_wire::client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, ConsumerGroupMetadata, Error, IsolationLevel,
    OffsetAndMetadata, OffsetReset, Producer, ProducerConfig, ProducerRecord,
};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire_tests::raw::{create_topic, fetch_records};
use kafka_wire_tests::{bootstrap, kafka_tool_ok, unique_topic};

/// Tests that depend on the cluster's `transaction.version` hold this: shared for v2 (the
/// broker's default), exclusive while one test runs the cluster at v1.
static PROTOCOL: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Sets the cluster's `transaction.version` and waits until a new connection to each broker
/// reports it (on 3 nodes the brokers learn it from the metadata log one after another).
async fn set_transaction_version(level: i16) {
    let verb = if level >= 2 { "upgrade" } else { "downgrade" };
    kafka_tool_ok(
        "features",
        &["--bootstrap-server", &bootstrap(), verb, "--feature", &format!("transaction.version={level}")],
        None,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut every = true;
        for broker in kafka_wire_tests::bootstrap_brokers() {
            let conn = kafka_wire::client::Connection::connect(&broker, Default::default()).await.unwrap();
            every &= conn.finalized_feature("transaction.version") == Some(level);
        }
        if every {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "transaction.version did not become {level}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restores transactions v2 when a v1 test ends, even by a panic.
struct RestoreV2;

impl Drop for RestoreV2 {
    fn drop(&mut self) {
        kafka_tool_ok(
            "features",
            &["--bootstrap-server", &bootstrap(), "upgrade", "--feature", "transaction.version=2"],
            None,
        );
    }
}

async fn client() -> Client {
    Client::connect(ClientConfig::new(&bootstrap())).await.expect("connect to the test broker")
}

fn transactional(id: &str) -> ProducerConfig {
    ProducerConfig::new(&bootstrap()).transactional_id(id).max_block(Duration::from_secs(30))
}

/// Every value a read_committed consumer of `topic` (one partition) sees, up to its end.
async fn committed_values(topic: &str) -> Vec<String> {
    let consumer = Consumer::new(
        ConsumerConfig::new(&bootstrap())
            .isolation_level(IsolationLevel::ReadCommitted)
            .auto_offset_reset(OffsetReset::Earliest),
    )
    .await
    .unwrap();
    let tp = TopicPartition::new(topic, 0);
    consumer.assign([tp.clone()]);
    let mut values = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let records = consumer.poll(Duration::from_millis(300)).await.unwrap();
        values.extend(records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned()));
        // Caught up: the position passed the last stable offset with nothing more to hand out.
        if records.is_empty() && consumer.lag(&tp) == Some(0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "read_committed consumer did not catch up: {values:?}");
    }
    consumer.close().await.unwrap();
    values
}

async fn send_all(producer: &Producer, topic: &str, values: &[String]) {
    let mut pending = Vec::new();
    for v in values {
        pending.push(producer.send(ProducerRecord::new(topic, v.clone()).partition(0)).await.unwrap());
    }
    for p in pending {
        p.await.unwrap();
    }
}

fn named(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_transactions_are_visible_and_aborted_ones_are_not() {
    let client = client().await;
    let topic = unique_topic("txn-vis");
    create_topic(&client, &topic, 1, 1, &[]).await;
    let producer = Producer::new(transactional(&unique_topic("tid"))).await.unwrap();
    producer.init_transactions().await.unwrap();
    let mut want = Vec::new();
    for (i, commit) in [true, false, true, false, true].into_iter().enumerate() {
        producer.begin_transaction().unwrap();
        let values = named(&format!("t{i}"), 50);
        send_all(&producer, &topic, &values).await;
        if commit {
            producer.commit_transaction().await.unwrap();
            want.extend(values);
        } else {
            producer.abort_transaction().await.unwrap();
        }
    }
    // Records still buffered when the transaction aborts fail with TransactionAborted.
    producer.begin_transaction().unwrap();
    let unsent = producer.send(ProducerRecord::new(&topic, "never").partition(0)).await.unwrap();
    producer.abort_transaction().await.unwrap();
    match unsent.await {
        Err(Error::TransactionAborted) | Ok(_) => {}
        Err(e) => panic!("an aborted record fails with TransactionAborted, not {e}"),
    }
    producer.close().await.unwrap();

    assert_eq!(committed_values(&topic).await, want, "read_committed sees exactly the committed transactions");
    let raw: Vec<String> = fetch_records(&client, &topic, 0)
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned())
        .collect();
    assert!(raw.contains(&"t1-0".to_string()), "read_uncommitted sees the aborted records too");
    assert_eq!(raw.len(), 250 + usize::from(raw.contains(&"never".to_string())));
}

/// Under KIP-890 transactions v2 (Kafka 4.x, `transaction.version` 2) every EndTxn bumps the
/// producer epoch; under v1 the epoch stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transaction_bumps_the_epoch_under_transactions_v2() {
    let _v2 = PROTOCOL.read().await;
    let client = client().await;
    let topic = unique_topic("txn-v2");
    create_topic(&client, &topic, 1, 1, &[]).await;
    let producer = Producer::new(transactional(&unique_topic("tid"))).await.unwrap();
    producer.init_transactions().await.unwrap();
    let (id, first) = producer.producer_id();
    for i in 0..3 {
        producer.begin_transaction().unwrap();
        send_all(&producer, &topic, &named(&format!("v{i}"), 5)).await;
        producer.commit_transaction().await.unwrap();
    }
    let (id_after, epoch_after) = producer.producer_id();
    let v2 = client.any_broker().await.unwrap().finalized_feature("transaction.version").is_some_and(|v| v >= 2);
    if v2 {
        assert_eq!((id_after, epoch_after), (id, first + 3), "one bump per EndTxn");
    } else {
        assert_eq!((id_after, epoch_after), (id, first));
    }
    producer.close().await.unwrap();
    assert_eq!(committed_values(&topic).await.len(), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_fences_the_first_whose_transaction_stays_invisible() {
    let client = client().await;
    let topic = unique_topic("txn-fence");
    create_topic(&client, &topic, 1, 1, &[]).await;
    let id = unique_topic("tid");
    let first = Producer::new(transactional(&id)).await.unwrap();
    first.init_transactions().await.unwrap();
    first.begin_transaction().unwrap();
    send_all(&first, &topic, &named("zombie", 20)).await;

    let second = Producer::new(transactional(&id)).await.unwrap();
    second.init_transactions().await.unwrap();
    let err = first.commit_transaction().await.expect_err("the fenced instance cannot commit");
    assert!(matches!(err, Error::Fenced { .. }), "typed fenced error, got {err:?}");
    // Fatal: nothing more from this instance.
    assert!(matches!(first.begin_transaction(), Err(Error::Fenced { .. })));

    second.begin_transaction().unwrap();
    send_all(&second, &topic, &named("live", 10)).await;
    second.commit_transaction().await.unwrap();
    second.close().await.unwrap();
    first.close().await.unwrap();
    assert_eq!(committed_values(&topic).await, named("live", 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_in_a_transaction_commit_with_it() {
    let client = client().await;
    let topic = unique_topic("txn-off");
    create_topic(&client, &topic, 1, 1, &[]).await;
    let group = unique_topic("txn-group");
    let producer = Producer::new(transactional(&unique_topic("tid"))).await.unwrap();
    producer.init_transactions().await.unwrap();
    let tp = TopicPartition::new(topic.as_str(), 0);
    let metadata = ConsumerGroupMetadata {
        group_id: group.clone(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
    };
    let offsets = |o: i64| BTreeMap::from([(tp.clone(), OffsetAndMetadata::new(o))]);
    // Aborted: the offset is not committed.
    producer.begin_transaction().unwrap();
    send_all(&producer, &topic, &named("a", 3)).await;
    producer.send_offsets_to_transaction(&offsets(7), &metadata).await.unwrap();
    producer.abort_transaction().await.unwrap();
    // Committed: it is.
    producer.begin_transaction().unwrap();
    send_all(&producer, &topic, &named("b", 3)).await;
    producer.send_offsets_to_transaction(&offsets(42), &metadata).await.unwrap();
    producer.commit_transaction().await.unwrap();
    producer.close().await.unwrap();
    let admin = Admin::new(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let committed = admin.list_group_offsets(&group, None).await.unwrap();
        let got: Vec<(i32, i64)> = committed.iter().map(|o| (o.partition, o.offset)).collect();
        if got == vec![(0, 42)] {
            break;
        }
        // The offset becomes readable once the commit marker is written to __consumer_offsets.
        assert!(tokio::time::Instant::now() < deadline, "group offsets {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn misuse_is_a_typed_error() {
    let plain = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    assert!(matches!(plain.init_transactions().await, Err(Error::InvalidState { .. })));
    assert!(matches!(plain.begin_transaction(), Err(Error::InvalidState { .. })));
    plain.close().await.unwrap();

    let client = client().await;
    let topic = unique_topic("txn-misuse");
    create_topic(&client, &topic, 1, 1, &[]).await;
    let producer = Producer::new(transactional(&unique_topic("tid"))).await.unwrap();
    assert!(matches!(producer.begin_transaction(), Err(Error::InvalidState { .. })), "begin before init");
    producer.init_transactions().await.unwrap();
    assert!(matches!(producer.init_transactions().await, Err(Error::InvalidState { .. })), "init twice");
    assert!(matches!(producer.commit_transaction().await, Err(Error::InvalidState { .. })), "commit without begin");
    assert!(matches!(producer.abort_transaction().await, Err(Error::InvalidState { .. })), "abort without begin");
    assert!(
        matches!(producer.send(ProducerRecord::new(&topic, "x")).await, Err(Error::InvalidState { .. })),
        "send outside a transaction"
    );
    producer.begin_transaction().unwrap();
    assert!(matches!(producer.begin_transaction(), Err(Error::InvalidState { .. })), "begin twice");
    producer.abort_transaction().await.unwrap();
    // An empty transaction commits (and aborts) without troubling the coordinator.
    producer.begin_transaction().unwrap();
    producer.commit_transaction().await.unwrap();
    producer.begin_transaction().unwrap();
    producer.abort_transaction().await.unwrap();
    producer.close().await.unwrap();
}

/// The v1 protocol (a cluster at `transaction.version` 1): partitions are added with
/// AddPartitionsToTxn and offsets with AddOffsetsToTxn, and the epoch stays across
/// transactions. Without the explicit adds the broker refuses the commit (INVALID_TXN_STATE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_v1_add_partitions_and_offsets_explicitly() {
    let _v1 = PROTOCOL.write().await;
    // Kafka 3.x has no `transaction.version` feature (and refuses to set it): its transactions
    // are v1 already. On 4.x the cluster is taken to v1 for the test and back to v2 after it.
    let _restore = match kafka_wire_tests::transaction_version().await {
        None => None,
        Some(_) => {
            set_transaction_version(1).await;
            Some(RestoreV2)
        }
    };
    let client = client().await;
    let topic = unique_topic("txn-v1");
    create_topic(&client, &topic, 1, 1, &[]).await;
    let group = unique_topic("txn-v1-group");
    let producer = Producer::new(transactional(&unique_topic("tid"))).await.unwrap();
    producer.init_transactions().await.unwrap();
    let (id, epoch) = producer.producer_id();
    let metadata = ConsumerGroupMetadata {
        group_id: group.clone(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
    };
    let tp = TopicPartition::new(topic.as_str(), 0);
    let mut want = Vec::new();
    for (i, commit) in [true, false, true].into_iter().enumerate() {
        producer.begin_transaction().unwrap();
        let values = named(&format!("v1t{i}"), 20);
        send_all(&producer, &topic, &values).await;
        let offsets = BTreeMap::from([(tp.clone(), OffsetAndMetadata::new(i as i64 + 1))]);
        producer.send_offsets_to_transaction(&offsets, &metadata).await.unwrap();
        if commit {
            producer.commit_transaction().await.unwrap();
            want.extend(values);
        } else {
            producer.abort_transaction().await.unwrap();
        }
    }
    assert_eq!(producer.producer_id(), (id, epoch), "v1 keeps the epoch");
    producer.close().await.unwrap();
    assert_eq!(committed_values(&topic).await, want);
    let committed = Admin::new(client.clone()).list_group_offsets(&group, None).await.unwrap();
    assert_eq!(
        committed.iter().map(|o| o.offset).collect::<Vec<_>>(),
        vec![3],
        "the last committed transaction's offset"
    );
}

/// xorshift64*: the cancellation points of a seeded run (`KW_CANCEL_SEED` picks the seed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// `send`, `flush` and `commit_transaction` cancelled at random points (a `timeout` around each,
/// of 0 to 3 ms, and a quarter of the sends as soon as they wait) while a small `buffer.memory` makes sends wait for room: every transaction still
/// commits (the transaction's record count settles), and a read_committed reader sees exactly
/// the records whose `send` returned Ok, in order. Before, a `send` dropped while waiting for room
/// stayed counted, so the commit waited for a record that never existed until `max.block.ms`, and
/// the producer was stuck in Committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_cancelled_sends_flushes_and_commits_leave_the_transaction_consistent() {
    let _v2 = PROTOCOL.read().await;
    let seed = std::env::var("KW_CANCEL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_u64);
    println!("KW_CANCEL_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let client = client().await;
    let topic = unique_topic("txn-cancel");
    create_topic(&client, &topic, 1, 1, &[]).await;
    let producer = Producer::new(
        transactional(&unique_topic("tid"))
            .buffer_memory(2048)
            .batch_size(512)
            .linger(Duration::ZERO)
            .max_block(Duration::from_secs(15)),
    )
    .await
    .unwrap();
    producer.init_transactions().await.unwrap();
    let mut want = Vec::new();
    let (mut cancelled_sends, mut cancelled_commits) = (0, 0);
    for t in 0..6 {
        producer.begin_transaction().unwrap();
        let mut pending = Vec::new();
        for i in 0..150 {
            let value = format!("t{t}-{i:03}-{}", "x".repeat(60));
            let record = ProducerRecord::new(&topic, value.clone()).partition(0);
            // One send in four is cancelled as soon as it has to wait for room: on a quiet
            // machine acknowledgements come back fast enough that 0-3 ms alone cancelled none.
            let cancel_after = if rng.below(4) == 0 { Duration::ZERO } else { Duration::from_micros(rng.below(3000)) };
            match tokio::time::timeout(cancel_after, producer.send(record)).await {
                Ok(sent) => pending.push((value, sent.unwrap())),
                Err(_) => cancelled_sends += 1,
            }
            if rng.below(20) == 0 {
                let _ = tokio::time::timeout(Duration::from_micros(rng.below(3000)), producer.flush()).await;
            }
        }
        let committed =
            match tokio::time::timeout(Duration::from_micros(rng.below(3000)), producer.commit_transaction()).await {
                Ok(result) => result,
                Err(_) => {
                    cancelled_commits += 1;
                    producer.commit_transaction().await
                }
            };
        committed.unwrap_or_else(|e| panic!("transaction {t}: commit failed: {e}"));
        for (value, delivery) in pending {
            delivery.await.unwrap_or_else(|e| panic!("transaction {t}: {value} failed: {e}"));
            want.push(value);
        }
    }
    println!("{cancelled_sends} sends and {cancelled_commits} commits cancelled, {} records sent", want.len());
    assert!(cancelled_sends > 0, "no send was cancelled: the test exercised nothing");
    assert_eq!(committed_values(&topic).await, want);
}

/// A record the broker refuses (MESSAGE_TOO_LARGE for the topic, alone in its batch) makes the
/// transaction abortable, and the records queued behind it fail at once with TransactionAborted
/// (as Java's producer does) instead of waiting out `delivery.timeout.ms`; the abort then works
/// and the next transaction commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_refused_record_fails_the_queued_records_of_its_transaction_at_once() {
    let _v2 = PROTOCOL.read().await;
    let client = client().await;
    let topic = unique_topic("txn-refused");
    create_topic(&client, &topic, 1, 1, &[("max.message.bytes", "2000")]).await;
    let producer = Producer::new(
        transactional(&unique_topic("tid"))
            .batch_size(1000)
            .linger(Duration::ZERO)
            .delivery_timeout(Duration::from_secs(600)),
    )
    .await
    .unwrap();
    producer.init_transactions().await.unwrap();
    producer.begin_transaction().unwrap();
    let big = producer.send(ProducerRecord::new(&topic, "b".repeat(5000)).partition(0)).await.unwrap();
    let mut queued = Vec::new();
    for i in 0..50 {
        queued.push(producer.send(ProducerRecord::new(&topic, format!("queued-{i}")).partition(0)).await.unwrap());
    }
    // Far less than the delivery timeout: the outcome must not wait for it.
    let wait = Duration::from_secs(60);
    let refused = tokio::time::timeout(wait, big).await.expect("the oversize record's outcome");
    match refused {
        Err(Error::RecordTooLarge { topic: t, partition: Some(0), limit: "max.message.bytes", max: 2000, size }) => {
            assert_eq!(t, topic);
            assert!(size > 2000, "{size}");
        }
        other => panic!("the oversize record ended {other:?}"),
    }
    for (i, delivery) in queued.into_iter().enumerate() {
        let outcome = tokio::time::timeout(wait, delivery)
            .await
            .unwrap_or_else(|_| panic!("queued record {i} still pending {wait:?} after its transaction failed"));
        assert!(matches!(outcome, Err(Error::TransactionAborted)), "queued record {i}: {outcome:?}");
    }
    assert!(matches!(producer.commit_transaction().await, Err(Error::TransactionAbortable { .. })));
    producer.abort_transaction().await.unwrap();
    producer.begin_transaction().unwrap();
    let values = named("after", 10);
    send_all(&producer, &topic, &values).await;
    producer.commit_transaction().await.unwrap();
    assert_eq!(committed_values(&topic).await, values);
}
