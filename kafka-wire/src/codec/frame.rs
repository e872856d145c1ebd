//! Size-prefixed frames: every Kafka request and response is an `int32` size followed by that
//! many bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::header::{RequestHeader, ResponseHeader};
use super::messages::{Message, Request};
use super::primitives::{Encoder, MAX_BYTES_LEN};
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
    let result = write_request(&mut Encoder::new(buf), request, version, correlation_id, client_id);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// A request frame to write: its bytes in order, in one buffer or in several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The whole frame in one buffer.
    Whole(Bytes),
    /// The frame in parts, to be written one after the other.
    Parts(Vec<Bytes>),
}

impl Frame {
    /// The frame's size on the wire, its size prefix included.
    pub fn len(&self) -> usize {
        self.parts().iter().map(Bytes::len).sum()
    }

    /// Whether the frame has no bytes (never, for an encoded request).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame's bytes, in order.
    pub fn parts(&self) -> &[Bytes] {
        match self {
            Frame::Whole(b) => std::slice::from_ref(b),
            Frame::Parts(parts) => parts,
        }
    }
}

/// [`encode_request`] into a frame of its own whose `records` fields of
/// [`RECORDS_PART_MIN`](super::primitives::RECORDS_PART_MIN) bytes or more are parts of it
/// rather than copies: a Produce request's batches are written to the socket from the buffers
/// the producer built them in. `capacity` is for the rest of the frame.
pub fn encode_request_parts<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: Option<&str>,
    capacity: usize,
) -> EncodeResult<Frame> {
    let mut buf = BytesMut::with_capacity(capacity);
    let mut parts = Vec::new();
    write_request(&mut Encoder::with_parts(&mut buf, &mut parts), request, version, correlation_id, client_id)?;
    if parts.is_empty() {
        return Ok(Frame::Whole(buf.freeze()));
    }
    let rest = buf.freeze();
    let mut frame = Vec::with_capacity(2 * parts.len() + 1);
    let mut at = 0;
    for (place, part) in parts {
        if place > at {
            frame.push(rest.slice(at..place));
        }
        frame.push(part);
        at = place;
    }
    if at < rest.len() {
        frame.push(rest.slice(at..));
    }
    Ok(Frame::Parts(frame))
}

fn write_request<R: Request>(
    buf: &mut Encoder<'_>,
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
    request.encode_to(buf, version)?;
    let size = buf.len() - start - 4 + buf.parts_len();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::messages::produce::{PartitionProduceData, TopicProduceData};
    use crate::codec::messages::ProduceRequest;
    use crate::codec::primitives::RECORDS_PART_MIN;

    /// Records of each size around the threshold, a null one, and a topic of 300 bytes (a
    /// compact length of two bytes before the parts).
    fn produce_request(sizes: &[Option<usize>]) -> ProduceRequest {
        let partition_data = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| PartitionProduceData {
                index: i as i32,
                records: size.map(|n| Bytes::from(vec![i as u8; n])),
                ..Default::default()
            })
            .collect();
        ProduceRequest {
            transactional_id: Some("tx".into()),
            acks: -1,
            timeout_ms: 30_000,
            topic_data: vec![TopicProduceData { name: "t".repeat(300).into(), partition_data, ..Default::default() }],
            ..Default::default()
        }
    }

    /// At every version, the frame in parts is the frame in one buffer, byte for byte; the
    /// records of the threshold's size or more are the producer's buffers themselves (no copy),
    /// the smaller ones are copied into the frame.
    #[test]
    fn a_frame_in_parts_is_the_whole_frame_with_the_large_records_uncopied() {
        let sizes = [Some(RECORDS_PART_MIN - 1), Some(RECORDS_PART_MIN), None, Some(200_000), Some(0), Some(5000)];
        let request = produce_request(&sizes);
        for version in ProduceRequest::VERSIONS.min..=ProduceRequest::VERSIONS.max {
            let mut whole = BytesMut::new();
            encode_request(&mut whole, &request, version, 7, Some("client")).unwrap();
            let frame = encode_request_parts(&request, version, 7, Some("client"), 64).unwrap();
            assert_eq!(frame.parts().concat(), &whole[..], "v{version}");
            assert_eq!(frame.len(), whole.len());
            let records = request.topic_data[0].partition_data.iter().filter_map(|p| p.records.as_ref());
            for r in records {
                let uncopied = frame.parts().iter().any(|p| p.as_ptr() == r.as_ptr() && p.len() == r.len());
                assert_eq!(uncopied, r.len() >= RECORDS_PART_MIN, "v{version}: records of {} bytes", r.len());
            }
            // Three records parts, each after the frame's bytes before it; in flexible versions
            // the last partition's and topic's tagged fields, and the request's, follow the last.
            let trailing = usize::from(version >= 9);
            assert_eq!(frame.parts().len(), 2 * 3 + trailing, "v{version}");
        }
    }

    /// A request without large records is one buffer.
    #[test]
    fn a_frame_without_large_records_is_whole() {
        let request = produce_request(&[Some(10), None]);
        let frame = encode_request_parts(&request, 9, 1, None, 16).unwrap();
        assert!(matches!(frame, Frame::Whole(_)));
        let mut whole = BytesMut::new();
        encode_request(&mut whole, &request, 9, 1, None).unwrap();
        assert_eq!(frame.parts(), [whole.freeze()]);
    }
}
