//! Requests the client fills for the newest version must still encode at the versions older
//! brokers top out at (found by the broker version matrix, `cargo xtask matrix`).

use bytes::BytesMut;
use kafka_wire::codec::messages::list_offsets::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_wire::codec::messages::{ListOffsetsRequest, Message};

/// Admin fills ListOffsets' `timeout_ms` (v10+, Kafka 4.0+, for tiered storage); Kafka 3.9's
/// newest ListOffsets is v9. The field is an optional hint (Kafka's schema marks it ignorable):
/// at v9 it is left out, not refused, so listing offsets works against 3.9 brokers (`kw consume
/// -e` failed with "ListOffsetsRequest.timeout_ms … which version 9 does not carry").
#[test]
fn regression_list_offsets_with_a_timeout_encodes_for_kafka_3_9() {
    let request = ListOffsetsRequest {
        replica_id: -1,
        topics: vec![ListOffsetsTopic {
            name: "t".into(),
            partitions: vec![ListOffsetsPartition { partition_index: 0, timestamp: -1, ..Default::default() }],
            ..Default::default()
        }],
        timeout_ms: 30_000,
        ..Default::default()
    };
    let mut v9 = BytesMut::new();
    request.encode(&mut v9, 9).expect("ListOffsets v9 with timeout_ms set");
    let back = ListOffsetsRequest::decode(&mut v9.freeze(), 9).unwrap();
    assert_eq!(back.timeout_ms, 0, "v9 carries no timeout");
    assert_eq!(back.topics, request.topics);
    // From v10 on it is carried.
    let mut v10 = BytesMut::new();
    request.encode(&mut v10, 10).unwrap();
    assert_eq!(ListOffsetsRequest::decode(&mut v10.freeze(), 10).unwrap().timeout_ms, 30_000);
}
