//! Frames captured from a real Kafka 4.1.2 broker (see `golden/README.md`): each decodes to the
//! expected values and re-encodes to exactly the broker's bytes.

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::frame::decode_response;
use kafka_wire::codec::header::ResponseHeader;
use kafka_wire::codec::messages::{ApiVersionsRequest, CreateTopicsRequest, Message, MetadataRequest, Request};
use kafka_wire::codec::{ApiKey, ErrorCode};

/// Decodes `frame` as the response to `R` at `version`, re-encodes it and compares the bytes.
fn decode_and_reencode<R: Request>(frame: &'static [u8], version: i16) -> (i32, R::Response)
where
    R::Response: std::fmt::Debug,
{
    let (header, body) = decode_response::<R>(Bytes::from_static(frame), version).expect("decodes");
    let mut out = BytesMut::new();
    let header_version = R::response_header_version(version);
    ResponseHeader { correlation_id: header.correlation_id, ..Default::default() }
        .encode(&mut out, header_version)
        .unwrap();
    body.encode(&mut out, version).unwrap();
    assert_eq!(&out[..], frame, "re-encoding differs from the broker's bytes");
    (header.correlation_id, body)
}

#[test]
fn api_versions_v3_from_kafka_4_1() {
    let (id, r) = decode_and_reencode::<ApiVersionsRequest>(include_bytes!("golden/api_versions_v3_response.bin"), 3);
    assert_eq!(id, 1);
    assert_eq!(r.error_code, ErrorCode::NONE);
    let range = |k: ApiKey| {
        let v = r.api_keys.iter().find(|a| a.api_key == k.0).expect("api offered");
        (v.min_version, v.max_version)
    };
    // Produce advertises min 0 although 4.x refuses v0-2 (KAFKA-18659).
    assert_eq!(range(ApiKey::PRODUCE), (0, 13));
    assert_eq!(range(ApiKey::FETCH), (4, 18));
    assert_eq!(range(ApiKey::API_VERSIONS), (0, 4));
    // The finalized features arrive as tagged fields of the flexible body.
    assert!(r.supported_features.iter().any(|f| &*f.name == "metadata.version"));
    // A freshly formatted 4.x cluster finalizes transactions v2 (KIP-890).
    let tv = r.finalized_features.iter().find(|f| &*f.name == "transaction.version").expect("finalized");
    assert_eq!(tv.max_version_level, 2);
}

#[test]
fn api_versions_v0_from_kafka_4_1() {
    let (id, r) = decode_and_reencode::<ApiVersionsRequest>(include_bytes!("golden/api_versions_v0_response.bin"), 0);
    assert_eq!(id, 3);
    assert!(r.api_keys.len() > 50);
}

#[test]
fn metadata_v12_from_kafka_4_1() {
    let (id, r) = decode_and_reencode::<MetadataRequest>(include_bytes!("golden/metadata_v12_response.bin"), 12);
    assert_eq!(id, 2);
    assert_eq!(r.brokers.len(), 1);
    assert_eq!(&*r.brokers[0].host, "127.0.0.1");
    assert_eq!(r.brokers[0].port, 9092);
    assert_eq!(r.controller_id, 1);
    assert!(r.topics.is_empty());
}

#[test]
fn create_topics_v7_from_kafka_4_1() {
    let (id, r) = decode_and_reencode::<CreateTopicsRequest>(include_bytes!("golden/create_topics_v7_response.bin"), 7);
    assert_eq!(id, 4);
    let t = &r.topics[0];
    assert_eq!(&*t.name, "golden-topic");
    assert_eq!(t.error_code, ErrorCode::NONE);
    assert_eq!((t.num_partitions, t.replication_factor), (2, 1));
    let configs = t.configs.as_ref().expect("v5+ returns the topic's configs");
    let policy = configs.iter().find(|c| &*c.name == "cleanup.policy").expect("cleanup.policy");
    assert_eq!(policy.value.as_deref(), Some("delete"));
}
