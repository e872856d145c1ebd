//! Request header v1/v2 and response header v0/v1.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::primitives::*;
use super::{ApiKey, DecodeResult, RawTaggedField};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    /// Always a classic (non-compact) nullable string, even in header v2.
    pub client_id: Option<ByteString>,
    pub unknown_tagged_fields: Vec<RawTaggedField>,
}

impl RequestHeader {
    pub fn encode(&self, buf: &mut BytesMut, header_version: i16) {
        put_i16(buf, self.api_key.0);
        put_i16(buf, self.api_version);
        put_i32(buf, self.correlation_id);
        put_nullable_string(buf, false, self.client_id.as_deref());
        if header_version >= 2 {
            put_uvarint(buf, self.unknown_tagged_fields.len() as u32);
            for f in &self.unknown_tagged_fields {
                put_raw_tagged_field(buf, f);
            }
        }
    }

    pub fn decode(buf: &mut Bytes, header_version: i16) -> DecodeResult<Self> {
        let mut h = Self {
            api_key: ApiKey(get_i16(buf, "api_key")?),
            api_version: get_i16(buf, "api_version")?,
            correlation_id: get_i32(buf, "correlation_id")?,
            client_id: get_nullable_string(buf, false, "client_id")?,
            unknown_tagged_fields: Vec::new(),
        };
        if header_version >= 2 {
            get_tagged_fields(buf, &mut h.unknown_tagged_fields, |_, _| Ok(false))?;
        }
        Ok(h)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHeader {
    pub correlation_id: i32,
    pub unknown_tagged_fields: Vec<RawTaggedField>,
}

impl ResponseHeader {
    pub fn encode(&self, buf: &mut BytesMut, header_version: i16) {
        put_i32(buf, self.correlation_id);
        if header_version >= 1 {
            put_uvarint(buf, self.unknown_tagged_fields.len() as u32);
            for f in &self.unknown_tagged_fields {
                put_raw_tagged_field(buf, f);
            }
        }
    }

    pub fn decode(buf: &mut Bytes, header_version: i16) -> DecodeResult<Self> {
        let mut h = Self { correlation_id: get_i32(buf, "correlation_id")?, unknown_tagged_fields: Vec::new() };
        if header_version >= 1 {
            get_tagged_fields(buf, &mut h.unknown_tagged_fields, |_, _| Ok(false))?;
        }
        Ok(h)
    }
}
