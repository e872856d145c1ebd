//! What an operator's tracing subscriber sees, against the real broker: every request is a
//! `kafka.request` span (API, version, broker, correlation id, outcome), every commit or abort a
//! `kafka.transaction` span, every rebalance step a `kafka.rebalance` span.

use kafka_wire::client::OffsetReset;
use kafka_wire::{Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::spans::Spans;
use kafka_wire_tests::{bootstrap, unique_topic};

// One thread: the subscriber is this thread's default, and the clients' tasks run on it too.
#[tokio::test(flavor = "current_thread")]
async fn requests_transactions_and_rebalances_are_spans() {
    let spans = Spans::default();
    let _default = spans.install();
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.expect("connect");
    let topic = unique_topic("spans");
    create_topic(&client, &topic, 1, 1, &[]).await;

    let producer = Producer::new(ProducerConfig::new(&bootstrap()).transactional_id(unique_topic("spans-tx")))
        .await
        .expect("producer");
    producer.init_transactions().await.expect("init");
    producer.begin_transaction().expect("begin");
    let delivery = producer.send(ProducerRecord::new(topic.as_str(), "v")).await.expect("send");
    producer.commit_transaction().await.expect("commit");
    delivery.await.expect("delivered");
    producer.begin_transaction().expect("begin");
    producer.abort_transaction().await.expect("abort");
    producer.close().await.expect("close");

    let group = unique_topic("spans-g");
    let consumer = Consumer::new(
        ConsumerConfig::new(&bootstrap()).group_id(group.as_str()).auto_offset_reset(OffsetReset::Earliest),
    )
    .await
    .expect("consumer");
    consumer.subscribe([topic.as_str()]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while spans.named("kafka.rebalance").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no rebalance span within 60 s");
        consumer.poll(std::time::Duration::from_millis(200)).await.expect("poll");
    }
    consumer.close().await.expect("close");

    let requests = spans.named("kafka.request");
    for api in ["ApiVersions", "Metadata", "InitProducerId", "Produce", "EndTxn", "JoinGroup", "SyncGroup"] {
        assert!(requests.iter().any(|f| f["api"] == api), "no {api} request span among {requests:?}");
    }
    for fields in &requests {
        for key in ["version", "broker", "correlation_id"] {
            assert!(fields.contains_key(key), "{key} missing from {fields:?}");
        }
    }
    assert!(requests.iter().any(|f| f.get("outcome").map(String::as_str) == Some("answered")), "{requests:?}");
    let decisions: Vec<String> = spans.named("kafka.transaction").iter().map(|f| f["decision"].clone()).collect();
    assert_eq!(decisions, ["commit", "abort"], "transaction spans");
    let rebalance = &spans.named("kafka.rebalance")[0];
    assert_eq!(
        (rebalance["group"].as_str(), rebalance["step"].as_str()),
        (group.as_str(), "assigned"),
        "{rebalance:?}"
    );
}

// A consumer that needs positions for many partitions of one leader asks with one ListOffsets,
// not one per partition.
#[tokio::test(flavor = "current_thread")]
async fn positions_of_one_leader_s_partitions_are_reset_with_one_list_offsets() {
    let spans = Spans::default();
    let _default = spans.install();
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.expect("connect");
    let topic = unique_topic("spans-reset");
    create_topic(&client, &topic, 6, 1, &[]).await;
    // A new topic's partitions answer ListOffsets with retriable errors for a moment: a first
    // consumer waits that out, and only the second one's requests are counted.
    let partitions: Vec<_> = (0..6).map(|p| kafka_wire::TopicPartition::new(topic.as_str(), p)).collect();
    let list_offsets = || spans.named("kafka.request").into_iter().filter(|f| f["api"] == "ListOffsets");
    let mut before = 0;
    for round in ["warm-up", "measured"] {
        before = list_offsets().count();
        let consumer = Consumer::new(ConsumerConfig::new(&bootstrap()).auto_offset_reset(OffsetReset::Latest))
            .await
            .expect("consumer");
        consumer.assign(partitions.clone());
        for tp in &partitions {
            assert_eq!(consumer.position(tp).await.expect("position"), 0, "{round}: {tp}");
        }
        consumer.close().await.expect("close");
    }
    let measured: Vec<_> = list_offsets().skip(before).collect();
    let leaders: std::collections::BTreeSet<&str> = measured.iter().map(|f| f["broker"].as_str()).collect();
    assert_eq!(measured.len(), leaders.len(), "one ListOffsets per leader for 6 partitions: {measured:?}");
}
