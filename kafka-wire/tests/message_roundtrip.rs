//! Property test: every request and response, at every version the codec describes, survives
//! encode → decode → encode with the same bytes, all of them consumed.
//!
//! Values come from `Arbitrary` over proptest's byte vectors, so proptest shrinks a failure to a
//! small input and records its seed under `proptest-regressions/`.

use arbitrary::{Arbitrary, Unstructured};
use bytes::BytesMut;
use kafka_wire::codec::messages::Message;
use proptest::prelude::*;

/// Encodes `value` at `version`, decodes it back, and checks both the bytes and the value.
fn check<T>(value: &T, version: i16) -> Result<(), TestCaseError>
where
    T: Message + PartialEq + std::fmt::Debug,
{
    let name = std::any::type_name::<T>();
    let mut first = BytesMut::new();
    value.encode(&mut first, version);
    let mut input = first.clone().freeze();
    let decoded = T::decode(&mut input, version).map_err(|e| TestCaseError::fail(format!("{name} v{version}: {e}")))?;
    prop_assert!(input.is_empty(), "{name} v{version}: {} bytes left over", input.len());
    let mut second = BytesMut::new();
    decoded.encode(&mut second, version);
    prop_assert_eq!(&first, &second, "{} v{} re-encodes differently", name, version);
    let again = T::decode(&mut second.freeze(), version)
        .map_err(|e| TestCaseError::fail(format!("{name} v{version} second decode: {e}")))?;
    prop_assert_eq!(again, decoded);
    Ok(())
}

fn check_all_versions<'a, T>(data: &'a [u8]) -> Result<(), TestCaseError>
where
    T: Message + PartialEq + std::fmt::Debug + Arbitrary<'a>,
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
    resp.encode(&mut buf, 3);
    let back = ApiVersionsResponse::decode(&mut buf.freeze(), 3).unwrap();
    assert_eq!(back.unknown_tagged_fields, resp.unknown_tagged_fields);
}
