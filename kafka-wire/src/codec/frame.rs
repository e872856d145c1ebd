//! Size-prefixed frames: every Kafka request and response is an `int32` size followed by that
//! many bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::header::{RequestHeader, ResponseHeader};
use super::messages::{Message, Request};
use super::primitives::MAX_BYTES_LEN;
use super::{DecodeError, DecodeResult, EncodeError, EncodeResult};

/// The default cap on a received frame, like the Java client's `receive.message.max.bytes`
/// (its default is 100 MiB on brokers; clients rarely need more than `fetch.max.bytes`).
pub const DEFAULT_MAX_FRAME: usize = 100 * 1024 * 1024;

/// Appends a whole request frame (size, header, body) in one pass: the size is written as a
/// placeholder and patched once the body is known. On an error (a value the version cannot
/// carry, a length beyond its prefix, a frame over 2 GiB) `buf` is left as it was.
pub fn encode_request<R: Request>(
    buf: &mut BytesMut,
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: Option<&str>,
) -> EncodeResult<()> {
    let start = buf.len();
    let result = write_request(buf, request, version, correlation_id, client_id);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

fn write_request<R: Request>(
    buf: &mut BytesMut,
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: Option<&str>,
) -> EncodeResult<()> {
    let start = buf.len();
    buf.put_i32(0);
    let header = RequestHeader {
        api_key: R::API_KEY,
        api_version: version,
        correlation_id,
        client_id: client_id.map(Into::into),
        unknown_tagged_fields: Default::default(),
    };
    header.encode(buf, R::request_header_version(version))?;
    request.encode(buf, version)?;
    let size = buf.len() - start - 4;
    let size = i32::try_from(size).map_err(|_| EncodeError::TooLong {
        what: "request frame",
        len: size,
        max: MAX_BYTES_LEN,
    })?;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Splits one complete frame off the front of `buf`, or returns `Ok(None)` if more bytes are
/// needed. A size above `max` or below zero is an error before anything is buffered for it.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> DecodeResult<Option<Bytes>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 {
        return Err(DecodeError::InvalidLength { what: "frame size", len: i64::from(size) });
    }
    let size = size as usize;
    if size > max {
        return Err(DecodeError::FrameTooLarge { size, max });
    }
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

/// Reads the correlation id at the front of a response frame without consuming it, so the
/// connection can route the frame to its request before knowing the response type.
pub fn peek_correlation_id(frame: &Bytes) -> DecodeResult<i32> {
    if frame.len() < 4 {
        return Err(DecodeError::UnexpectedEnd { what: "correlation_id", needed: 4, remaining: frame.len() });
    }
    Ok(i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]))
}

/// Decodes a response frame (without its size prefix) for request type `R` at `version`. The
/// whole frame must be consumed.
pub fn decode_response<R: Request>(mut frame: Bytes, version: i16) -> DecodeResult<(ResponseHeader, R::Response)> {
    let header = ResponseHeader::decode(&mut frame, R::response_header_version(version))?;
    let body = R::Response::decode(&mut frame, version)?;
    if !frame.is_empty() {
        return Err(DecodeError::TrailingBytes { what: "response", count: frame.len() });
    }
    Ok((header, body))
}

/// Decodes a request frame (without its size prefix): the header, then the body of type `R`.
/// Used by the in-process fake broker of the tests.
pub fn decode_request_body<R: Request>(frame: &mut Bytes, version: i16) -> DecodeResult<R> {
    let body = R::decode(frame, version)?;
    if !frame.is_empty() {
        return Err(DecodeError::TrailingBytes { what: "request", count: frame.len() });
    }
    Ok(body)
}
