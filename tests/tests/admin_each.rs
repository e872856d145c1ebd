//! Issue #9, "admin batch calls return one result per item": ListOffsets, DeleteRecords and
//! DescribeConfigs against the real broker (`cargo xtask kafka up`), with good and bad items in
//! one call; each item gets its own outcome, and the plain calls report the first failure.

use std::time::Duration;

use kafka_wire::client::{
    Admin, ClientConfig, ConfigResource, NewTopic, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
};
use kafka_wire::{Error, ErrorCode};
use kafka_wire_tests::{bootstrap, unique_topic};

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

async fn admin() -> Admin {
    within("connect", Admin::connect(ClientConfig::new(&bootstrap()))).await.expect("connect to the test broker")
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(result: &Result<T, Error>, code: ErrorCode) {
    match result {
        Err(e) if e.code() == Some(code) => {}
        other => panic!("expected {code}, got {other:?}"),
    }
}

/// A topic of two partitions with five records in each.
async fn topic_with_records(admin: &Admin, prefix: &str) -> String {
    let topic = unique_topic(prefix);
    within("create", admin.create_topics(&[NewTopic::new(&topic, 2, 1)], false)).await.expect("create");
    let producer = within("producer", Producer::new(ProducerConfig::new(&bootstrap()))).await.expect("producer");
    let mut pending = Vec::new();
    for p in 0..2 {
        for i in 0..5 {
            pending.push(producer.send(ProducerRecord::new(&topic, format!("v{i}")).partition(p)).await.expect("send"));
        }
    }
    for f in pending {
        within("delivery", f).await.expect("delivered");
    }
    within("close", producer.close()).await.expect("close");
    topic
}

#[tokio::test]
async fn list_offsets_each_reports_every_partition() {
    let admin = admin().await;
    let topic = topic_with_records(&admin, "each-offsets").await;
    let missing = unique_topic("each-offsets-missing");
    let asked = [(topic.as_str(), 0), (missing.as_str(), 0), (topic.as_str(), 7), (topic.as_str(), 1)];
    let each = within("list", admin.list_offsets_each(&asked, OffsetSpec::Latest, false)).await.expect("answered");
    let keys: Vec<(&str, i32)> = each.iter().map(|((t, p), _)| (t.as_str(), *p)).collect();
    assert_eq!(keys, asked, "one result per partition, in the order given");
    assert_eq!(each[0].1.as_ref().expect("partition 0").offset, 5);
    assert_code(&each[1].1, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
    assert_code(&each[2].1, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(each[3].1.as_ref().expect("partition 1").offset, 5);
    // The plain call reports the first failure, the missing topic.
    let first = within("list", admin.list_offsets(&asked, OffsetSpec::Latest)).await;
    match first {
        Err(e) => assert!(e.to_string().contains(&missing), "{e}"),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
    within("delete", admin.delete_topics(&[&topic])).await.expect("delete");
}

#[tokio::test]
async fn delete_records_each_reports_every_partition() {
    let admin = admin().await;
    let topic = topic_with_records(&admin, "each-delete").await;
    let missing = unique_topic("each-delete-missing");
    let asked = [(topic.as_str(), 0, 3), (topic.as_str(), 1, 99), (missing.as_str(), 0, 1)];
    let each = within("delete records", admin.delete_records_each(&asked)).await.expect("answered");
    assert_eq!(each.len(), 3);
    assert_eq!(each[0].1.as_ref().expect("partition 0").low_watermark, 3);
    assert_code(&each[1].1, ErrorCode::OFFSET_OUT_OF_RANGE);
    assert_code(&each[2].1, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
    let earliest =
        within("list", admin.list_offsets(&[(&topic, 0), (&topic, 1)], OffsetSpec::Earliest)).await.expect("offsets");
    assert_eq!(earliest.iter().map(|o| o.offset).collect::<Vec<_>>(), [3, 0], "only partition 0 was cut");
    within("delete", admin.delete_topics(&[&topic])).await.expect("delete");
}

#[tokio::test]
async fn describe_configs_each_reports_every_resource() {
    let admin = admin().await;
    let topic = unique_topic("each-configs");
    within("create", admin.create_topics(&[NewTopic::new(&topic, 1, 1).config("retention.ms", "123456")], false))
        .await
        .expect("create");
    let node = admin.client().brokers()[0].node_id;
    let missing = unique_topic("each-configs-missing");
    let asked = [
        ConfigResource::topic(&topic),
        ConfigResource::topic(&missing),
        ConfigResource::broker(node),
        ConfigResource { name: "not-a-number".into(), ..ConfigResource::broker(node) },
    ];
    let each = within("describe", admin.describe_configs_each(&asked)).await;
    assert_eq!(each.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(), asked);
    assert_eq!(each[0].1.as_ref().expect("the topic").value("retention.ms"), Some("123456"));
    assert_code(&each[1].1, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
    assert!(!each[2].1.as_ref().expect("the broker").entries.is_empty());
    assert!(matches!(each[3].1, Err(Error::Config { .. })), "{:?}", each[3].1);
    within("delete", admin.delete_topics(&[&topic])).await.expect("delete");
}
