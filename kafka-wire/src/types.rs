//! The value types of the public API, in one place: what records, partitions, headers, codecs
//! and error codes are. Pattern crates and applications import these (or the crate root's
//! re-exports), never paths under `codec` or `proto`, which may change between releases.

pub use crate::client::TopicName;
pub use crate::codec::compression::Compression;
pub use crate::codec::record_batch::{Header, Headers, HeadersIter, TimestampType};
pub use crate::codec::{ApiKey, DecodeError, ErrorCode, Uuid};
pub use crate::proto::backoff::Backoff;
pub use crate::proto::producer::TopicPartition;
