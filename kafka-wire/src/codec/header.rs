//! Request header v1/v2 and response header v0/v1.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::primitives::*;
use super::{ApiKey, DecodeResult, EncodeResult, UnknownTaggedFields};

/// The header in front of every request: v1 (classic), or v2 (flexible, with tagged fields).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHeader {
    /// The API of the request.
    pub api_key: ApiKey,
    /// The version of the request's body.
    pub api_version: i16,
    /// Echoed in the response header, to match the response to its request.
    pub correlation_id: i32,
    /// Always a classic (non-compact) nullable string, even in header v2.
    pub client_id: Option<ByteString>,
    /// Tagged fields (header v2) this codec does not know, kept so that they round-trip.
    pub unknown_tagged_fields: UnknownTaggedFields,
}

impl RequestHeader {
    /// Appends the header. A `client_id` longer than `i16::MAX` bytes is an error; tagged
    /// fields are written only in header v2.
    pub fn encode(&self, buf: &mut BytesMut, header_version: i16) -> EncodeResult<()> {
        put_i16(buf, self.api_key.0);
        put_i16(buf, self.api_version);
        put_i32(buf, self.correlation_id);
        put_nullable_string(buf, false, self.client_id.as_deref(), "RequestHeader.client_id")?;
        if header_version >= 2 {
            put_tagged_fields(buf, &self.unknown_tagged_fields, "RequestHeader.unknown_tagged_fields")?;
        }
        Ok(())
    }

    /// Reads the header; tagged fields are read only in the flexible header version.
    pub fn decode(buf: &mut Bytes, header_version: i16) -> DecodeResult<Self> {
        let mut h = Self {
            api_key: ApiKey(get_i16(buf, "api_key")?),
            api_version: get_i16(buf, "api_version")?,
            correlation_id: get_i32(buf, "correlation_id")?,
            client_id: get_nullable_string(buf, false, "client_id")?,
            unknown_tagged_fields: UnknownTaggedFields::new(),
        };
        if header_version >= 2 {
            h.unknown_tagged_fields = get_tagged_fields(buf, |_, _| Ok(false))?;
        }
        Ok(h)
    }
}

/// The header in front of every response: v0 (classic), or v1 (flexible, with tagged fields).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The correlation id of the request this answers.
    pub correlation_id: i32,
    /// Tagged fields (header v1) this codec does not know, kept so that they round-trip.
    pub unknown_tagged_fields: UnknownTaggedFields,
}

impl ResponseHeader {
    /// Appends the header; tagged fields are written only in header v1.
    pub fn encode(&self, buf: &mut BytesMut, header_version: i16) -> EncodeResult<()> {
        put_i32(buf, self.correlation_id);
        if header_version >= 1 {
            put_tagged_fields(buf, &self.unknown_tagged_fields, "ResponseHeader.unknown_tagged_fields")?;
        }
        Ok(())
    }

    /// Reads the header; tagged fields are read only in the flexible header version.
    pub fn decode(buf: &mut Bytes, header_version: i16) -> DecodeResult<Self> {
        let mut h =
            Self { correlation_id: get_i32(buf, "correlation_id")?, unknown_tagged_fields: UnknownTaggedFields::new() };
        if header_version >= 1 {
            h.unknown_tagged_fields = get_tagged_fields(buf, |_, _| Ok(false))?;
        }
        Ok(h)
    }
}

fn put_tagged_fields(buf: &mut BytesMut, fields: &UnknownTaggedFields, what: &'static str) -> EncodeResult<()> {
    let (raw, count) = fields.checked_raw(what)?;
    put_tagged_count(buf, count, what)?;
    buf.extend_from_slice(raw);
    Ok(())
}
