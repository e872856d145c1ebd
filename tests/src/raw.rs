//! Raw protocol helpers for the integration tests: create topics and read partitions back with
//! plain CreateTopics / Metadata / ListOffsets / Fetch requests, so that tests of the producer
//! do not depend on the consumer they are meant to feed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_wire::client::Client;
use kafka_wire::codec::messages::create_topics::{CreatableTopic, CreatableTopicConfig};
use kafka_wire::codec::messages::fetch::{FetchPartition, FetchTopic};
use kafka_wire::codec::messages::list_offsets::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_wire::codec::messages::metadata::MetadataRequestTopic;
use kafka_wire::codec::messages::{CreateTopicsRequest, FetchRequest, ListOffsetsRequest, MetadataRequest};
use kafka_wire::codec::record_batch::{Record, RecordBatch, RecordBatches};
use kafka_wire::codec::{ErrorCode, Uuid};

/// Creates `topic` with `partitions` partitions, replication factor `rf` and `configs`, and
/// waits until every partition has a leader in the metadata.
pub async fn create_topic(client: &Client, topic: &str, partitions: i32, rf: i16, configs: &[(&str, &str)]) {
    let request = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: topic.into(),
            num_partitions: partitions,
            replication_factor: rf,
            configs: configs
                .iter()
                .map(|(k, v)| CreatableTopicConfig {
                    name: (*k).into(),
                    value: Some((*v).into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        timeout_ms: 30_000,
        ..Default::default()
    };
    let controller = client.controller_id();
    let response = match controller {
        Some(id) => client.send(id, &request).await,
        None => client.send_any(&request).await,
    }
    .expect("CreateTopics");
    let result = &response.topics[0];
    assert_eq!(result.error_code, ErrorCode::NONE, "creating {topic}: {:?}", result.error_message);
    wait_for_leaders(client, topic, partitions).await;
}

/// Waits (up to 30 s) until `topic` shows `partitions` partitions, each with a leader, in the
/// metadata of every broker: on several nodes each broker learns a new topic from the metadata
/// log on its own, and one that has not yet (a group coordinator taking an OffsetCommit, say)
/// answers UNKNOWN_TOPIC_OR_PARTITION.
pub async fn wait_for_leaders(client: &Client, topic: &str, partitions: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    client.metadata(Some(&[topic])).await.expect("metadata");
    for broker in client.brokers() {
        while !lists_with_leaders(client, broker.node_id, topic, partitions).await {
            assert!(Instant::now() < deadline, "topic {topic} has no leaders on node {} after 30 s", broker.node_id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether broker `node`'s metadata lists `topic` with `partitions` partitions, each led.
pub async fn lists_with_leaders(client: &Client, node: i32, topic: &str, partitions: i32) -> bool {
    let request = MetadataRequest {
        topics: Some(vec![MetadataRequestTopic { name: Some(topic.into()), ..Default::default() }]),
        allow_auto_topic_creation: false,
        ..Default::default()
    };
    let md = client.send(node, &request).await.expect("metadata");
    md.topics.iter().any(|t| {
        t.error_code == ErrorCode::NONE
            && t.partitions.len() == partitions as usize
            && t.partitions.iter().all(|p| p.leader_id >= 0 && p.error_code == ErrorCode::NONE)
    })
}

/// Leader and topic id of every partition of `topic`.
pub async fn partition_leaders(client: &Client, topic: &str) -> (Uuid, BTreeMap<i32, i32>) {
    let md = client.metadata(Some(&[topic])).await.expect("metadata");
    let t = md.topics.iter().find(|t| t.name.as_deref() == Some(topic)).expect("topic in metadata");
    (t.topic_id, t.partitions.iter().map(|p| (p.partition_index, p.leader_id)).collect())
}

/// The high watermark of a partition (ListOffsets for the latest offset).
pub async fn end_offset(client: &Client, topic: &str, partition: i32) -> i64 {
    let (_, leaders) = partition_leaders(client, topic).await;
    let request = ListOffsetsRequest {
        replica_id: -1,
        topics: vec![ListOffsetsTopic {
            name: topic.into(),
            partitions: vec![ListOffsetsPartition { partition_index: partition, timestamp: -1, ..Default::default() }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = client.send(leaders[&partition], &request).await.expect("ListOffsets");
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, ErrorCode::NONE);
    p.offset
}

/// Every batch of a partition from offset 0 to the high watermark, as the broker returns them.
pub async fn fetch_batches(client: &Client, topic: &str, partition: i32) -> Vec<RecordBatch> {
    let end = end_offset(client, topic, partition).await;
    let (topic_id, leaders) = partition_leaders(client, topic).await;
    let conn = client.broker(leaders[&partition]).await.expect("leader connection");
    let mut offset = 0;
    let mut batches = Vec::new();
    while offset < end {
        let request = FetchRequest {
            replica_id: -1,
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 64 << 20,
            topics: vec![FetchTopic {
                topic: topic.into(),
                topic_id,
                partitions: vec![FetchPartition {
                    partition,
                    fetch_offset: offset,
                    partition_max_bytes: 16 << 20,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let response = conn.send(&request).await.expect("Fetch");
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.error_code, ErrorCode::NONE, "fetch {topic}-{partition} at {offset}");
        let records: Bytes = data.records.clone().unwrap_or_default();
        let mut got_any = false;
        for batch in RecordBatches::new(records) {
            let batch = batch.expect("valid batch from the broker");
            if batch.next_offset() <= offset {
                continue;
            }
            offset = batch.next_offset();
            got_any = true;
            batches.push(batch);
        }
        assert!(got_any, "fetch at {offset} of {topic}-{partition} returned nothing below {end}");
    }
    batches
}

/// Every record of a partition, decompressed, with its offset.
pub async fn fetch_records(client: &Client, topic: &str, partition: i32) -> Vec<Record> {
    let mut out = Vec::new();
    for batch in fetch_batches(client, topic, partition).await {
        if batch.is_control() {
            continue;
        }
        for r in batch.records(64 << 20) {
            out.push(r.expect("valid record"));
        }
    }
    out
}
