//! Every request and response this client speaks.
//!
//! The types here (defined in the private module `generated` and re-exported) are produced by
//! `cargo xtask codegen` from the descriptions in `kafka-wire/schema/*.msg` (one file per API,
//! written for this project from Kafka's published message facts). Each message knows the
//! versions it is described for and encodes or decodes itself at any of them. Decoding, a field
//! outside the version takes its default; encoding, a field outside the version must hold its
//! default, or the message is refused ([`EncodeError::FieldNotInVersion`]) rather than sent
//! without it; the exception are "ignorable" fields, one of two forms of the same information (a
//! topic's name for old versions, its id for new ones), of which the form the version lacks is
//! left out.

use bytes::{Bytes, BytesMut};

#[cfg(doc)]
use super::EncodeError;
use super::{ApiKey, DecodeResult, EncodeResult};

mod generated;
pub use generated::*;

/// An inclusive range of message versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionRange {
    /// The lowest version.
    pub min: i16,
    /// The highest version.
    pub max: i16,
}

impl VersionRange {
    /// Whether `v` lies in the range.
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

    /// Appends the body at `version` to `buf`, in one pass. A field absent at `version` must
    /// hold its default ([`EncodeError::FieldNotInVersion`] otherwise; ignorable fields are left
    /// out), and every length must
    /// fit its prefix ([`EncodeError::TooLong`]); after an error `buf` holds a partial body,
    /// which the caller discards. A `None` in a field that is not nullable at `version` is
    /// written as empty.
    fn encode(&self, buf: &mut BytesMut, version: i16) -> EncodeResult<()>;

    /// Reads a body at `version` from the front of `buf`, leaving what follows it.
    fn decode(buf: &mut Bytes, version: i16) -> DecodeResult<Self>;

    /// Resets every field that `version` does not carry and the encoder would refuse (all but
    /// the ignorable ones, and below the flexible versions the unknown tagged fields) to its
    /// default, in this value and the structures it holds: the value then encodes at `version`.
    /// For property tests and fuzzing.
    #[cfg(feature = "arbitrary")]
    #[doc(hidden)]
    fn retain_version(&mut self, version: i16);

    /// Whether `version` is flexible (KIP-482).
    fn is_flexible(version: i16) -> bool {
        matches!(Self::FLEXIBLE_FROM, Some(f) if version >= f)
    }
}

/// A request, tied to its API key and its response type.
pub trait Request: Message {
    /// The API key written in the request header.
    const API_KEY: ApiKey;
    /// The body of the response to this request.
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
