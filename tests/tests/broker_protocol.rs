//! The codec and connection layer against a real Kafka broker (`cargo xtask kafka up`):
//! version negotiation, metadata, topic creation, and record batches written with raw Produce
//! requests and read back with raw Fetch requests, for every compression codec.

use bytes::Bytes;
use kafka_wire::client::{Client, ClientConfig, Connection, ConnectionConfig};
use kafka_wire::codec::compression::Compression;
use kafka_wire::codec::messages::create_topics::CreatableTopic;
use kafka_wire::codec::messages::produce::{PartitionProduceData, TopicProduceData};
use kafka_wire::codec::messages::{CreateTopicsRequest, Message, ProduceRequest};
use kafka_wire::codec::record_batch::{BatchBuilder, Header};
use kafka_wire::codec::{ApiKey, ErrorCode};
use kafka_wire_tests::raw::{create_topic, fetch_batches, partition_leaders};
use kafka_wire_tests::{bootstrap, unique_topic};

async fn client() -> Client {
    Client::connect(ClientConfig::new(&bootstrap())).await.expect("connect to the test broker")
}

#[tokio::test]
async fn every_api_the_codec_describes_has_a_common_version_with_the_broker() {
    let client = client().await;
    let conn = client.any_broker().await.unwrap();
    let mut checked = 0;
    macro_rules! each {
        ($key:expr, $req:ty, $resp:ty) => {{
            let v = conn.version_for::<$req>().unwrap_or_else(|e| panic!("{e}"));
            assert!(<$req as Message>::VERSIONS.contains(v));
            checked += 1;
        }};
    }
    kafka_wire::for_each_api!(each);
    assert!(checked >= 36);
    // The negotiated version is the highest both sides speak: Kafka 4.1 offers Produce up to 13
    // (4.0 up to 12), and this codec describes 3..=13.
    let produce = conn.broker_versions(ApiKey::PRODUCE).unwrap();
    assert_eq!(conn.version_for::<ProduceRequest>().unwrap(), produce.max.min(13));
}

#[tokio::test]
async fn metadata_lists_the_broker_and_the_cluster() {
    let client = client().await;
    let md = client.metadata(None).await.unwrap();
    assert!(!md.brokers.is_empty());
    let addrs: Vec<String> = client.brokers().iter().map(|b| b.addr()).collect();
    assert!(bootstrap().split(',').any(|b| addrs.contains(&b.to_string())), "{addrs:?}");
    assert!(client.cluster_id().is_some());
    assert!(client.controller_id().is_some());
}

/// The broker's finalized features come through ApiVersions: a Kafka 4.x cluster formatted
/// fresh runs `transaction.version` 2 (KIP-890 transactions v2), which the transactional
/// producer keys on rather than on the EndTxn version alone.
#[tokio::test]
async fn finalized_features_include_metadata_and_transaction_versions() {
    let client = client().await;
    let conn = client.any_broker().await.unwrap();
    assert!(conn.finalized_feature("metadata.version").is_some_and(|v| v > 0));
    let tv = conn.finalized_feature("transaction.version");
    if kafka_wire_tests::kafka_version().starts_with('4') {
        assert_eq!(tv, Some(2), "Kafka {}", kafka_wire_tests::kafka_version());
    }
    assert_eq!(conn.finalized_feature("no.such.feature"), None);
}

#[tokio::test]
async fn create_topics_then_again_is_topic_already_exists() {
    let client = client().await;
    let topic = unique_topic("create");
    create_topic(&client, &topic, 3, 1, &[("cleanup.policy", "compact")]).await;
    let (_, leaders) = partition_leaders(&client, &topic).await;
    assert_eq!(leaders.len(), 3);
    let again = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: topic.as_str().into(),
            num_partitions: 1,
            replication_factor: 1,
            ..Default::default()
        }],
        timeout_ms: 10_000,
        ..Default::default()
    };
    let r = client.send_any(&again).await.unwrap();
    assert_eq!(r.topics[0].error_code, ErrorCode::TOPIC_ALREADY_EXISTS);
}

#[tokio::test]
async fn a_connection_to_a_closed_port_is_an_io_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = Connection::connect(&format!("127.0.0.1:{port}"), ConnectionConfig::default()).await.unwrap_err();
    assert!(matches!(err, kafka_wire::client::Error::Io { .. }), "{err:?}");
}

/// A batch of 50 records with keys, values, a null value and headers.
fn sample_batch(compression: Compression) -> Bytes {
    let mut b = BatchBuilder::new(0);
    for i in 0..50i64 {
        let key = format!("key-{i}");
        let value = format!("value-{i}-{}", "x".repeat((i % 7) as usize * 10));
        let headers = [Header::new("h", Some(Bytes::from(format!("{i}")))), Header::new("empty", None::<Bytes>)];
        let value = if i == 13 { None } else { Some(value.into_bytes()) };
        b.push(1_700_000_000_000 + i, Some(key.as_bytes()), value.as_deref(), &headers).unwrap();
    }
    b.finish(compression)
}

/// Produces `batch` to partition 0 of `topic`. A topic just created can still answer a retriable
/// error (NOT_LEADER_OR_FOLLOWER while its leader takes the partition on a loaded broker): this
/// raw request has no client retry, so it asks again, for at most 30 s.
async fn produce_raw(client: &Client, topic: &str, batch: Bytes) -> i64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (topic_id, leaders) = partition_leaders(client, topic).await;
        let request = ProduceRequest {
            acks: -1,
            timeout_ms: 10_000,
            topic_data: vec![TopicProduceData {
                name: topic.into(),
                topic_id,
                partition_data: vec![PartitionProduceData {
                    index: 0,
                    records: Some(batch.clone()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = client.send(leaders[&0], &request).await.unwrap();
        let p = &r.responses[0].partition_responses[0];
        if p.error_code.is_retriable() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(p.error_code, ErrorCode::NONE, "{:?} (retried for 30 s if retriable)", p.error_message);
        return p.base_offset;
    }
}

#[tokio::test]
async fn batches_of_every_codec_come_back_byte_exact() {
    let client = client().await;
    for codec in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        let topic = unique_topic(&format!("codec-{codec}"));
        create_topic(&client, &topic, 1, 1, &[]).await;
        let sent = sample_batch(codec);
        assert_eq!(produce_raw(&client, &topic, sent.clone()).await, 0);
        let second = produce_raw(&client, &topic, sent.clone()).await;
        assert_eq!(second, 50);
        let batches = fetch_batches(&client, &topic, 0).await;
        assert_eq!(batches.len(), 2, "{codec}");
        for (i, batch) in batches.iter().enumerate() {
            let got = batch.as_bytes();
            assert_eq!(batch.base_offset(), 50 * i as i64);
            assert_eq!(batch.compression(), codec);
            // The broker assigns the base offset and the partition leader epoch (bytes 0..8 and
            // 12..16), outside the CRC; everything from the length on is ours, byte for byte.
            assert_eq!(got.len(), sent.len(), "{codec}");
            assert_eq!(&got[8..12], &sent[8..12]);
            assert_eq!(&got[16..], &sent[16..], "{codec}: batch differs after the broker stored it");
            let records: Vec<_> = batch.records(1 << 20).collect::<Result<_, _>>().unwrap();
            assert_eq!(records.len(), 50);
            assert_eq!(records[7].key.as_deref(), Some(&b"key-7"[..]));
            assert_eq!(records[7].offset, 50 * i as i64 + 7);
            assert_eq!(records[13].value, None);
            let headers = records[7].headers.to_vec();
            assert_eq!(headers[0].value.as_deref(), Some(&b"7"[..]));
            assert_eq!(headers[1].value, None);
            assert_eq!(records[7].timestamp, 1_700_000_000_007);
        }
    }
}

#[tokio::test]
async fn batches_written_by_the_java_console_producer_decode_with_every_codec() {
    let client = client().await;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = unique_topic(&format!("java-{codec}"));
        create_topic(&client, &topic, 1, 1, &[]).await;
        let input: String = (0..200).map(|i| format!("k{i}\tvalue number {i} {}\n", "abc".repeat(i % 5))).collect();
        let out = kafka_wire_tests::kafka_tool(
            "console-producer",
            &[
                "--bootstrap-server",
                &bootstrap(),
                "--topic",
                &topic,
                "--compression-codec",
                codec,
                "--property",
                "parse.key=true",
                "--property",
                "key.separator=\t",
                "--producer-property",
                "linger.ms=1000",
                "--producer-property",
                "batch.size=1000000",
            ],
            Some(input.as_bytes()),
        );
        assert!(out.status.success(), "console producer: {}", String::from_utf8_lossy(&out.stderr));
        let batches = fetch_batches(&client, &topic, 0).await;
        let expected = if codec == "none" { Compression::None } else { codec.parse().unwrap() };
        assert!(batches.iter().all(|b| b.compression() == expected), "{codec}");
        let records: Vec<_> = batches.iter().flat_map(|b| b.records(1 << 20)).collect::<Result<Vec<_>, _>>().unwrap();
        assert_eq!(records.len(), 200, "{codec}");
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
            let value = format!("value number {i} {}", "abc".repeat(i % 5));
            assert_eq!(r.value.as_deref(), Some(value.as_bytes()), "{codec} record {i}");
            assert_eq!(r.offset, i as i64);
        }
    }
}
