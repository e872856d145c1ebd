//! Response decoding, as the client does it with bytes from a broker.
//!
//! Input: `api_key: i16 BE`, `version: i16 BE`, then the rest (`body`).
//!
//! - `body` as the response body of that API at that version (if the codec describes it): no
//!   panic, and whatever decodes must survive encode → decode unchanged.
//! - `body` as a whole response frame (header + body) through `frame::decode_response`, the
//!   client's path, which picks response header v0 or v1 from the version.
//! - `body` as a response header v0 and v1, with the same round-trip oracle.
//! - the whole input as a stream of size-prefixed frames through `frame::split_frame`.

#![no_main]

mod common;

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::frame::{decode_response, split_frame};
use kafka_wire::codec::header::ResponseHeader;
use kafka_wire::codec::messages::{Message, Request};
use libfuzzer_sys::fuzz_target;

fn header_round_trip(body: &Bytes, header_version: i16) {
    let mut input = body.clone();
    let Ok(first) = ResponseHeader::decode(&mut input, header_version) else {
        return;
    };
    let mut encoded = BytesMut::new();
    first.encode(&mut encoded, header_version).expect("a decoded header re-encodes");
    let mut again = encoded.freeze();
    let second = ResponseHeader::decode(&mut again, header_version)
        .expect("re-encoded response header decodes");
    assert!(
        again.is_empty(),
        "response header v{header_version}: bytes left after re-decoding"
    );
    assert_eq!(first, second);
}

/// Splits `data` into frames as a connection's read loop does, checking what each call returns.
fn split_frames(data: &[u8], max: usize) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match split_frame(&mut buf, max) {
            Ok(Some(frame)) => {
                assert!(
                    frame.len() <= max,
                    "frame of {} bytes over max {max}",
                    frame.len()
                );
                assert_eq!(
                    buf.len(),
                    before - 4 - frame.len(),
                    "split_frame consumed the wrong amount"
                );
            }
            Ok(None) => {
                assert_eq!(
                    buf.len(),
                    before,
                    "split_frame consumed bytes without a frame"
                );
                return;
            }
            Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    split_frames(data, 64);
    split_frames(data, 1 << 20);

    let Some((key, version, body)) = common::key_version_body(data) else {
        return;
    };
    header_round_trip(&body, 0);
    header_round_trip(&body, 1);

    macro_rules! dispatch {
        ($key:literal, $req:ty, $resp:ty) => {
            if key == $key {
                common::decode_round_trip::<$resp>(&body, version);
                if <$resp as Message>::VERSIONS.contains(version)
                    && <$req as Message>::VERSIONS.contains(version)
                {
                    let _ = decode_response::<$req>(body.clone(), version);
                }
                // `Request::Response` is the type the client decodes with.
                let _: fn() -> <$req as Request>::Response = <$resp as Default>::default;
            }
        };
    }
    kafka_wire::for_each_api!(dispatch);
});
