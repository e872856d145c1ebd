//! Every request and response this client speaks.
//!
//! The types in [`generated`] are produced by `cargo xtask codegen` from the descriptions in
//! `kafka-wire/schema/*.msg` (one file per API, written for this project from Kafka's published
//! message facts). Each message knows the versions it is described for and encodes or decodes
//! itself at any of them; a field outside its versions takes its default.

use bytes::{Bytes, BytesMut};

use super::{ApiKey, DecodeResult};

mod generated;
pub use generated::*;

/// An inclusive range of message versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionRange {
    pub min: i16,
    pub max: i16,
}

impl VersionRange {
    pub const fn contains(self, v: i16) -> bool {
        v >= self.min && v <= self.max
    }

    /// The highest version in both ranges, if they overlap.
    pub fn highest_common(self, other: Self) -> Option<i16> {
        let hi = self.max.min(other.max);
        (hi >= self.min.max(other.min)).then_some(hi)
    }
}

/// A message body (request or response) that encodes and decodes itself at a given version.
pub trait Message: Sized {
    /// The versions this codec describes.
    const VERSIONS: VersionRange;
    /// The first flexible version (KIP-482: compact strings and arrays, tagged fields), if any.
    const FLEXIBLE_FROM: Option<i16>;

    /// Appends the body at `version` to `buf`. Values of fields absent at `version` are not
    /// written; a `None` in a field that is not nullable at `version` is written as empty.
    fn encode(&self, buf: &mut BytesMut, version: i16);

    /// Reads a body at `version` from the front of `buf`, leaving what follows it.
    fn decode(buf: &mut Bytes, version: i16) -> DecodeResult<Self>;

    fn is_flexible(version: i16) -> bool {
        matches!(Self::FLEXIBLE_FROM, Some(f) if version >= f)
    }
}

/// A request, tied to its API key and its response type.
pub trait Request: Message {
    const API_KEY: ApiKey;
    type Response: Message;

    /// Request header v2 for flexible versions, v1 otherwise.
    fn request_header_version(version: i16) -> i16 {
        if Self::is_flexible(version) {
            2
        } else {
            1
        }
    }

    /// Response header v1 for flexible versions, v0 otherwise. ApiVersions always answers with
    /// v0, so that a client that does not yet know the broker's versions can read it (KIP-511).
    fn response_header_version(version: i16) -> i16 {
        if Self::API_KEY != ApiKey::API_VERSIONS && Self::is_flexible(version) {
            1
        } else {
            0
        }
    }
}
