//! Request decoding and response framing shared by the in-process fake brokers of the tests.

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::frame::decode_request_body;
use kafka_wire::codec::header::{RequestHeader, ResponseHeader};
use kafka_wire::codec::messages::api_versions::ApiVersion;
use kafka_wire::codec::messages::{ApiVersionsRequest, ApiVersionsResponse, Message, Request};
use kafka_wire::codec::ErrorCode;

/// The ApiVersions entry offering every version of `R` this codec knows.
pub fn api<R: Request>() -> ApiVersion {
    ApiVersion {
        api_key: R::API_KEY.0,
        min_version: R::VERSIONS.min,
        max_version: R::VERSIONS.max,
        ..Default::default()
    }
}

/// The header and body of a request of `R` at `version`; `None` for a version the codec does not
/// know or bytes that do not decode.
pub fn decode<R: Request>(frame: &mut Bytes, version: i16) -> Option<(RequestHeader, R)> {
    if !R::VERSIONS.contains(version) {
        return None;
    }
    let header = RequestHeader::decode(frame, R::request_header_version(version)).ok()?;
    let body = decode_request_body::<R>(frame, version).ok()?;
    Some((header, body))
}

/// Appends a size-prefixed response frame to `out`.
pub fn respond<R: Request>(out: &mut BytesMut, correlation_id: i32, body: &R::Response, version: i16) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    ResponseHeader { correlation_id, ..Default::default() }
        .encode(out, R::response_header_version(version))
        .expect("a test response header encodes");
    body.encode(out, version).expect("a test response encodes");
    let size = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Answers an ApiVersions request (`frame` from its header on) offering `apis`. A version this
/// codec does not know gets a v0 answer with UNSUPPORTED_VERSION that lists them, as a broker
/// does (KIP-511). `None` if the header does not decode.
pub fn answer_api_versions(frame: &mut Bytes, version: i16, apis: Vec<ApiVersion>, out: &mut BytesMut) -> Option<()> {
    let known = ApiVersionsRequest::VERSIONS.contains(version);
    let header_version = if known { ApiVersionsRequest::request_header_version(version) } else { 1 };
    let header = RequestHeader::decode(frame, header_version).ok()?;
    let response = ApiVersionsResponse {
        error_code: if known { ErrorCode::NONE } else { ErrorCode::UNSUPPORTED_VERSION },
        api_keys: apis,
        ..Default::default()
    };
    respond::<ApiVersionsRequest>(out, header.correlation_id, &response, if known { version } else { 0 });
    Some(())
}
