//! Property test: every request and response, at every version the codec describes, survives
//! encode → decode → encode with the same bytes, all of them consumed; and the encoder refuses,
//! rather than drops, a field the version does not carry.
//!
//! Values come from `Arbitrary` over proptest's byte vectors, so proptest shrinks a failure to a
//! small input and records its seed under `proptest-regressions/`.

use arbitrary::{Arbitrary, Unstructured};
use bytes::BytesMut;
use kafka_wire::codec::messages::Message;
use kafka_wire::codec::EncodeError;
use proptest::prelude::*;

/// Encodes `value` at `version`: it must succeed exactly when `value` holds nothing the version
/// lacks (else the error names a field). Then the value reduced to the version is encoded,
/// decoded back, and both the bytes and the value are checked.
fn check<T>(value: &T, version: i16) -> Result<(), TestCaseError>
where
    T: Message + Clone + PartialEq + std::fmt::Debug,
{
    let name = std::any::type_name::<T>();
    let mut reduced = value.clone();
    reduced.retain_version(version);
    let mut first = BytesMut::new();
    match value.encode(&mut first, version) {
        Ok(()) => prop_assert_eq!(&reduced, value, "{} v{} dropped a field without an error", name, version),
        Err(EncodeError::FieldNotInVersion { what, version: v }) => {
            prop_assert_eq!(v, version);
            prop_assert!(&reduced != value, "{name} v{version}: refused {what}, but nothing is outside the version");
            first.clear();
            reduced
                .encode(&mut first, version)
                .map_err(|e| TestCaseError::fail(format!("{name} v{version} reduced to its version: {e}")))?;
        }
        Err(e) => return Err(TestCaseError::fail(format!("{name} v{version}: {e}"))),
    }
    let mut input = first.clone().freeze();
    let decoded = T::decode(&mut input, version).map_err(|e| TestCaseError::fail(format!("{name} v{version}: {e}")))?;
    prop_assert!(input.is_empty(), "{name} v{version}: {} bytes left over", input.len());
    let mut second = BytesMut::new();
    decoded
        .encode(&mut second, version)
        .map_err(|e| TestCaseError::fail(format!("{name} v{version}: the decoded value does not encode: {e}")))?;
    prop_assert_eq!(&first, &second, "{} v{} re-encodes differently", name, version);
    let again = T::decode(&mut second.freeze(), version)
        .map_err(|e| TestCaseError::fail(format!("{name} v{version} second decode: {e}")))?;
    prop_assert_eq!(again, decoded);
    Ok(())
}

fn check_all_versions<'a, T>(data: &'a [u8]) -> Result<(), TestCaseError>
where
    T: Message + Clone + PartialEq + std::fmt::Debug + Arbitrary<'a>,
{
    let Ok(value) = T::arbitrary(&mut Unstructured::new(data)) else {
        return Ok(());
    };
    for version in T::VERSIONS.min..=T::VERSIONS.max {
        check(&value, version)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn every_message_round_trips_at_every_version(
        data in proptest::collection::vec(any::<u8>(), 0..4096)
    ) {
        macro_rules! each {
            ($key:expr, $req:ty, $resp:ty) => {{
                check_all_versions::<$req>(&data)?;
                check_all_versions::<$resp>(&data)?;
            }};
        }
        kafka_wire::for_each_api!(each);
    }
}

/// A response that carries a tagged field this codec does not know keeps it through a round
/// trip (KIP-482: unknown tags must be preserved, not dropped).
#[test]
fn unknown_tagged_fields_survive_a_round_trip() {
    use kafka_wire::codec::messages::ApiVersionsResponse;
    use kafka_wire::codec::RawTaggedField;
    let mut resp = ApiVersionsResponse::default();
    resp.unknown_tagged_fields.push(RawTaggedField { tag: 77, data: bytes::Bytes::from_static(b"xyz") });
    let mut buf = BytesMut::new();
    resp.encode(&mut buf, 3).unwrap();
    let back = ApiVersionsResponse::decode(&mut buf.freeze(), 3).unwrap();
    assert_eq!(back.unknown_tagged_fields, resp.unknown_tagged_fields);
    // Below the flexible versions they cannot be written: an error, not a silent drop.
    let err = resp.encode(&mut BytesMut::new(), 2).unwrap_err();
    assert_eq!(err, EncodeError::FieldNotInVersion { what: "ApiVersionsResponse.unknown_tagged_fields", version: 2 });
}

/// A field the chosen version lacks, holding a value, is refused with the message, the field and
/// the version named (as Kafka's encoders do), instead of being left out of the bytes.
#[test]
fn a_value_in_a_field_the_version_lacks_is_refused() {
    use kafka_wire::codec::messages::MetadataRequest;
    let request = MetadataRequest { include_cluster_authorized_operations: true, ..Default::default() };
    assert!(request.encode(&mut BytesMut::new(), 10).is_ok());
    let err = request.encode(&mut BytesMut::new(), 11).unwrap_err();
    assert_eq!(
        err,
        EncodeError::FieldNotInVersion { what: "MetadataRequest.include_cluster_authorized_operations", version: 11 }
    );
    assert_eq!(
        err.to_string(),
        "MetadataRequest.include_cluster_authorized_operations has a non-default value, which version 11 does not carry"
    );
}

/// A version outside the message's description is refused, not written as some other version.
#[test]
fn a_version_the_codec_does_not_describe_is_refused() {
    use kafka_wire::codec::messages::ProduceRequest;
    use kafka_wire::codec::ApiKey;
    let err = ProduceRequest::default().encode(&mut BytesMut::new(), 2).unwrap_err();
    assert_eq!(err, EncodeError::UnsupportedVersion { api: ApiKey::PRODUCE, version: 2 });
}
