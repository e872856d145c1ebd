//! Request decoding, as the in-process fake broker of the tests does it.
//!
//! Input: `api_key: i16 BE`, `version: i16 BE`, then the rest (`body`).
//!
//! - `body` as the request body of that API at that version (if the codec describes it): no
//!   panic, and whatever decodes must survive encode → decode unchanged.
//! - `body` as a request header (v1 or v2, from the version) followed by the body, through
//!   `RequestHeader::decode` and `frame::decode_request_body`, the fake broker's path.
//! - `body` as a request header v1 and v2, with the same round-trip oracle.

#![no_main]

mod common;

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::frame::decode_request_body;
use kafka_wire::codec::header::RequestHeader;
use kafka_wire::codec::messages::{Message, Request};
use libfuzzer_sys::fuzz_target;

fn header_round_trip(body: &Bytes, header_version: i16) {
    let mut input = body.clone();
    let Ok(first) = RequestHeader::decode(&mut input, header_version) else {
        return;
    };
    let mut encoded = BytesMut::new();
    first.encode(&mut encoded, header_version).expect("a decoded header re-encodes");
    let mut again = encoded.freeze();
    let second = RequestHeader::decode(&mut again, header_version)
        .expect("re-encoded request header decodes");
    assert!(
        again.is_empty(),
        "request header v{header_version}: bytes left after re-decoding"
    );
    assert_eq!(first, second);
}

fuzz_target!(|data: &[u8]| {
    let Some((key, version, body)) = common::key_version_body(data) else {
        return;
    };
    header_round_trip(&body, 1);
    header_round_trip(&body, 2);

    macro_rules! dispatch {
        ($key:literal, $req:ty, $resp:ty) => {
            if key == $key {
                common::decode_round_trip::<$req>(&body, version);
                if <$req as Message>::VERSIONS.contains(version) {
                    let mut frame = body.clone();
                    let hv = <$req as Request>::request_header_version(version);
                    if RequestHeader::decode(&mut frame, hv).is_ok() {
                        let _ = decode_request_body::<$req>(&mut frame, version);
                    }
                }
            }
        };
    }
    kafka_wire::for_each_api!(dispatch);
});
