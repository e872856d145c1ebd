//! A one-partition log for consumer tests against the hostile broker: three batches of 10
//! records `value-<offset>`, 0..30, the one at 10..20 with a damaged CRC (its records intact).

#![allow(dead_code)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_wire::client::{Consumer, ConsumerConfig, ConsumerRecord, Error};
use kafka_wire::codec::compression::Compression;
use kafka_wire::codec::messages::{FetchRequest, FetchResponse, MetadataRequest, MetadataResponse};
use kafka_wire::codec::record_batch::BatchBuilder;
use kafka_wire::proto::producer::TopicPartition;

use super::hostile_broker::{fetch_answer, topic_metadata, HostileBroker, Script};

pub const TOPIC: &str = "crc";
/// The bound on every wait of these tests.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn tp() -> TopicPartition {
    TopicPartition::new(TOPIC, 0)
}

/// Batches of 10 records `value-<offset>` from `base`, the one at 10 with a damaged CRC.
pub struct Log {
    batches: Vec<(i64, Bytes)>,
}

impl Log {
    pub fn new() -> Self {
        let batches = (0..3)
            .map(|i| {
                let base = i * 10;
                let mut b = BatchBuilder::new(base);
                for o in base..base + 10 {
                    b.push(1_700_000_000_000 + o, None, Some(format!("value-{o}").as_bytes()), &[]).unwrap();
                }
                let mut bytes = b.finish(Compression::None).to_vec();
                if base == 10 {
                    // The CRC field (bytes 17..21).
                    bytes[17] ^= 0xff;
                }
                (base, Bytes::from(bytes))
            })
            .collect();
        Self { batches }
    }
}

impl Script for Log {
    fn metadata(&self, _: &MetadataRequest) -> MetadataResponse {
        MetadataResponse { topics: vec![topic_metadata(TOPIC, &[0])], ..Default::default() }
    }

    fn fetch(&self, request: &FetchRequest) -> FetchResponse {
        fetch_answer(request, |_, from| {
            let mut out = BytesMut::new();
            for (base, bytes) in &self.batches {
                if base + 10 > from {
                    out.extend_from_slice(bytes);
                }
            }
            (!out.is_empty()).then(|| out.freeze())
        })
    }
}

pub async fn consumer(broker: &HostileBroker, check_crcs: bool) -> Consumer {
    let mut config = ConsumerConfig::new(broker.addr());
    config.check_crcs = check_crcs;
    config.fetch_max_wait = Duration::from_millis(100);
    let consumer =
        tokio::time::timeout(WAIT, Consumer::new(config)).await.expect("consumer connects in time").expect("consumer");
    consumer.assign([tp()]);
    consumer.seek(&tp(), 0).expect("seek");
    consumer
}

/// Polls until `want` records came or an error, failing past `WAIT`.
pub async fn poll_records(
    consumer: &Consumer,
    want: usize,
) -> Result<Vec<ConsumerRecord>, (Vec<ConsumerRecord>, Error)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "timed out polling; got offsets {:?}", offsets(&got));
        match tokio::time::timeout(left, consumer.poll(Duration::from_millis(200))).await.expect("poll in time") {
            Ok(records) => got.extend(records),
            Err(e) => return Err((got, e)),
        }
    }
    Ok(got)
}

pub fn offsets(records: &[ConsumerRecord]) -> Vec<i64> {
    records.iter().map(|r| r.offset).collect()
}

pub fn check_values(records: &[ConsumerRecord]) {
    for r in records {
        assert_eq!(r.value.as_deref(), Some(format!("value-{}", r.offset).as_bytes()), "record {}", r.offset);
    }
}
