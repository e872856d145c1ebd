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

use super::primitives::Encoder;
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
    fn encode(&self, buf: &mut BytesMut, version: i16) -> EncodeResult<()> {
        self.encode_to(&mut Encoder::new(buf), version)
    }

    /// [`encode`](Self::encode) into an [`Encoder`], which may leave large `records` fields out
    /// of its buffer as parts of their own (see [`Encoder::with_parts`]).
    fn encode_to(&self, buf: &mut Encoder<'_>, version: i16) -> EncodeResult<()>;

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
    type Response: Message + Throttle;

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

/// The quota throttle a response reports (`throttle_time_ms`), and whether the client must honour
/// it (KIP-219).
///
/// A broker that throttles a client for exceeding a quota says for how long in every response.
/// Before KIP-219 it delayed the response itself; from the versions KIP-219 bumped on, it answers
/// at once, mutes the connection for that long, and expects the client to send it nothing until
/// the throttle ends. [`Throttle::CLIENT_THROTTLE_FROM`] is that first version, as Kafka's own
/// clients apply it (APIs added later that do not declare one are never throttled by the client).
///
/// Implemented here, outside the generated code, for every response type: the generated
/// [`Request`] impls then need nothing new, and a message added to the schemas fails to compile
/// until it is listed below.
pub trait Throttle {
    /// The first version at which the client waits out the throttle; `None`: never.
    const CLIENT_THROTTLE_FROM: Option<i16> = None;

    /// `throttle_time_ms` as the broker sent it; 0 for responses without the field.
    fn throttle_time_ms(&self) -> i32 {
        0
    }

    /// How long the client must send this broker nothing after this response at `version`, in
    /// milliseconds (0: not at all).
    fn client_throttle_ms(&self, version: i16) -> i32 {
        match Self::CLIENT_THROTTLE_FROM {
            Some(from) if version >= from => self.throttle_time_ms().max(0),
            _ => 0,
        }
    }
}

/// Responses with a `throttle_time_ms` field: `Type => first client-throttled version`, or
/// `Type => None` where only the broker throttles.
macro_rules! throttled {
    ($($t:ident => $from:expr),* $(,)?) => {$(
        impl Throttle for $t {
            const CLIENT_THROTTLE_FROM: Option<i16> = $from;
            fn throttle_time_ms(&self) -> i32 {
                self.throttle_time_ms
            }
        }
    )*};
}

throttled! {
    ProduceResponse => Some(6),
    FetchResponse => Some(8),
    ListOffsetsResponse => Some(3),
    MetadataResponse => Some(6),
    OffsetCommitResponse => Some(4),
    OffsetFetchResponse => Some(4),
    FindCoordinatorResponse => Some(2),
    JoinGroupResponse => Some(3),
    HeartbeatResponse => Some(2),
    LeaveGroupResponse => Some(2),
    SyncGroupResponse => Some(2),
    DescribeGroupsResponse => Some(2),
    ListGroupsResponse => Some(2),
    ApiVersionsResponse => Some(2),
    CreateTopicsResponse => Some(3),
    DeleteTopicsResponse => Some(2),
    DeleteRecordsResponse => Some(1),
    InitProducerIdResponse => Some(1),
    AddPartitionsToTxnResponse => Some(1),
    AddOffsetsToTxnResponse => Some(1),
    EndTxnResponse => Some(1),
    TxnOffsetCommitResponse => Some(1),
    DescribeConfigsResponse => Some(2),
    CreatePartitionsResponse => Some(1),
    DeleteGroupsResponse => Some(1),
    IncrementalAlterConfigsResponse => Some(0),
    OffsetDeleteResponse => Some(0),
    OffsetForLeaderEpochResponse => None,
    DescribeClusterResponse => None,
    DescribeProducersResponse => None,
    DescribeTransactionsResponse => None,
    ListTransactionsResponse => None,
    ConsumerGroupHeartbeatResponse => None,
    ConsumerGroupDescribeResponse => None,
}

// No `throttle_time_ms` field.
impl Throttle for SaslHandshakeResponse {}
impl Throttle for SaslAuthenticateResponse {}

#[cfg(test)]
mod throttle_tests {
    use super::*;

    #[test]
    fn the_client_throttles_only_from_the_kip_219_versions() {
        let r = ProduceResponse { throttle_time_ms: 500, ..Default::default() };
        assert_eq!(r.throttle_time_ms(), 500);
        assert_eq!(r.client_throttle_ms(5), 0, "Produce v5: the broker delayed the answer itself");
        assert_eq!(r.client_throttle_ms(6), 500);
        let d = DescribeClusterResponse { throttle_time_ms: 500, ..Default::default() };
        assert_eq!((d.throttle_time_ms(), d.client_throttle_ms(2)), (500, 0));
        assert_eq!(SaslHandshakeResponse::default().client_throttle_ms(1), 0);
        let negative = FetchResponse { throttle_time_ms: -1, ..Default::default() };
        assert_eq!(negative.client_throttle_ms(12), 0, "a negative time from the wire is no throttle");
    }
}
