//! The client's error type, sorted by where the fault lies.

use std::sync::Arc;
use std::time::Duration;

use crate::codec::messages::VersionRange;
use crate::codec::{ApiKey, DecodeError, ErrorCode};

/// Everything that can go wrong talking to Kafka.
///
/// Variants say where the fault lies: the bytes a broker sent ([`Error::Decode`]), an error code
/// a broker answered with ([`Error::Broker`]), a broker breaking the protocol's rules
/// ([`Error::Protocol`]), the caller's configuration or use ([`Error::Config`],
/// [`Error::UnsupportedVersion`]), or the network ([`Error::Io`], [`Error::Timeout`],
/// [`Error::Closed`], [`Error::Unreachable`]).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A broker sent bytes that do not decode.
    #[error("malformed response from {broker}: {source}")]
    Decode {
        /// The broker's address.
        broker: String,
        /// What did not decode.
        #[source]
        source: DecodeError,
    },
    /// A broker answered with an error code.
    #[error("{context}: broker error {code}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Broker {
        /// The error code.
        code: ErrorCode,
        /// The broker's error message, if it sent one.
        message: Option<String>,
        /// What was asked (the request, the resource).
        context: String,
    },
    /// A broker broke a rule of the protocol (for example answered a request it was not sent).
    #[error("protocol violation by {broker}: {reason}")]
    Protocol {
        /// The broker's address.
        broker: String,
        /// The rule that was broken.
        reason: String,
    },
    /// No version of an API is supported by both this client and the broker.
    #[error("{api} is not supported: the client speaks versions {client:?}, broker {broker_addr} {}",
        broker.map(|b| format!("speaks {b:?}")).unwrap_or_else(|| "does not offer it".into()))]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The versions this client speaks.
        client: VersionRange,
        /// The versions the broker offers; `None` if it offers none.
        broker: Option<VersionRange>,
        /// The broker's address.
        broker_addr: String,
    },
    /// A configuration property is unknown or has an invalid value, or the API was misused.
    #[error("invalid configuration {property}: {reason}")]
    Config {
        /// The property (Kafka's name, for example `acks`), or the argument.
        property: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A socket operation failed.
    #[error("I/O error with {broker}: {source}")]
    Io {
        /// The broker's address.
        broker: String,
        /// The socket error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// No bootstrap or broker address could be connected to. When the last address refused the
    /// client's TLS or SASL credentials, this is of [`ErrorKind::Security`] and not retriable:
    /// trying again would only be refused again.
    #[error("no broker reachable; tried {}: {last}", tried.join(", "))]
    Unreachable {
        /// The addresses tried.
        tried: Vec<String>,
        /// The last address's error.
        last: Box<Error>,
    },
    /// An operation did not complete in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// The operation.
        what: String,
        /// How long it was given.
        after: Duration,
    },
    /// The connection closed before the response arrived.
    #[error("connection to {broker} closed")]
    Closed {
        /// The broker's address.
        broker: String,
    },
    /// This transactional producer was fenced: a newer instance with the same
    /// `transactional.id` took over (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH). Nothing more can
    /// be sent or committed by this instance; close it.
    #[error("producer with transactional.id {transactional_id} was fenced ({code})")]
    Fenced {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// The error code that fenced it.
        code: ErrorCode,
    },
    /// The open transaction failed and can only be aborted: a record of it was not written, or
    /// the coordinator aborted it (transaction timeout).
    #[error("the transaction must be aborted: {reason}")]
    TransactionAbortable {
        /// Why.
        reason: String,
    },
    /// The record's transaction was aborted before the record was written.
    #[error("the record's transaction was aborted")]
    TransactionAborted,
    /// The partition's log was truncated below the consumer's position (an unclean leader
    /// change, KIP-320) and `auto.offset.reset` is `none`: the records from `divergent_offset`
    /// on that this consumer saw are gone. Seek to go on: to go on from the divergence point,
    /// [`Consumer::seek_with_epoch`](super::Consumer::seek_with_epoch) with `divergent_offset`
    /// and `divergent_epoch` (as Java's `LogTruncationException.divergentOffsets()` is used with
    /// `seek(TopicPartition, OffsetAndMetadata)`), so that a further truncation below it, before
    /// the seek, is detected too rather than read past.
    #[error("log of {topic}-{partition} truncated below position {position}: {}",
        match (divergent_offset, divergent_epoch) {
            (Some(o), Some(e)) => format!("the leader's log diverges from offset {o} (end of leader epoch {e})"),
            (Some(o), None) => format!("the leader's log diverges from offset {o}"),
            _ => "the leader's log holds no earlier epoch".into(),
        })]
    LogTruncation {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The consumer's position when the truncation was found.
        position: i64,
        /// The offset from which the leader's log differs from what was consumed; `None` if the
        /// leader holds no earlier epoch.
        divergent_offset: Option<i64>,
        /// The leader epoch of the record before `divergent_offset` in the leader's log (the
        /// last epoch both logs agree on); `None` with `divergent_offset`.
        divergent_epoch: Option<i32>,
    },
    /// A call the current state does not allow (commit without begin, send after a fatal error).
    #[error("{operation} is not allowed now: {reason}")]
    InvalidState {
        /// The call.
        operation: String,
        /// Why the state does not allow it.
        reason: String,
    },
    /// The caller used the API wrongly, whatever the state: an argument out of range, a value
    /// a request's version cannot carry, a partition that does not exist.
    #[error("{operation}: {reason}")]
    Misuse {
        /// The call.
        operation: String,
        /// What is wrong.
        reason: String,
    },
    /// A record is larger than may be sent: `max.request.size` on the client, or the broker's
    /// `message.max.bytes` / the topic's `max.message.bytes` for a record alone in its batch.
    #[error("record of {size} bytes for {topic}{} is larger than the limit of {max} bytes ({limit})",
        partition.map(|p| format!("-{p}")).unwrap_or_default())]
    RecordTooLarge {
        /// The topic.
        topic: String,
        /// The partition, once known.
        partition: Option<i32>,
        /// The record's size, in bytes.
        size: usize,
        /// The limit, in bytes.
        max: usize,
        /// The property that sets the limit (`max.request.size`, ...).
        limit: &'static str,
    },
    /// A record batch failed its CRC-32C check (`check.crcs=true`): the bytes were damaged on
    /// disk or in transit.
    #[error("corrupt record batch in {topic}-{partition} at offset {offset}: {reason}")]
    CorruptRecord {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset of the damaged batch.
        offset: i64,
        /// What failed.
        reason: String,
    },
    /// The broker refused this client's SASL authentication (a wrong password, an unknown user,
    /// a mechanism it does not enable), or its messages broke the mechanism's rules. The reason
    /// is the broker's message when it sent one; it never holds the password.
    #[error("SASL {mechanism} authentication with {broker} failed: {reason}")]
    Authentication {
        /// The broker's address.
        broker: String,
        /// The SASL mechanism (`PLAIN`, `SCRAM-SHA-256`, ...).
        mechanism: String,
        /// Why.
        reason: String,
    },
    /// TLS with a broker failed: its certificate is not trusted or does not name the host, it
    /// refused the client's certificate (or the lack of one), or it does not speak TLS.
    #[error("TLS with {broker} failed: {reason}")]
    Tls {
        /// The broker's address.
        broker: String,
        /// What failed, as rustls reports it, with a hint.
        reason: String,
    },
    /// A background task of the client (`driver`: "producer", "consumer", ...) stopped
    /// unexpectedly, for example by a panic. Its pending work failed with this error, and so does
    /// every later call; the instance must be dropped.
    #[error("the {driver} driver stopped unexpectedly: {reason}")]
    DriverFailed {
        /// The task (`"producer"`, `"consumer"`, ...).
        driver: &'static str,
        /// Why it stopped (a panic's message, ...).
        reason: String,
    },
}

/// What kind of fault an [`Error`] is, for matching without naming every variant's fields:
/// where the fault lies (the network, a broker, the caller) and what a caller can do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A broker sent bytes that do not decode, or broke the protocol's rules.
    Malformed,
    /// A broker answered with an error code ([`Error::code`] says which).
    Broker,
    /// No common version of an API with the broker.
    Unsupported,
    /// A configuration property is unknown or has an invalid value.
    Config,
    /// The API was used wrongly ([`Error::Misuse`]) or in a state that does not allow the call
    /// ([`Error::InvalidState`]).
    Misuse,
    /// A record is larger than may be sent.
    RecordTooLarge,
    /// A record batch failed its CRC check.
    CorruptRecord,
    /// A socket failed, a connection closed, or no broker could be reached.
    Network,
    /// An operation did not complete in time.
    Timeout,
    /// A newer transactional producer with the same `transactional.id` took over.
    Fenced,
    /// The transaction failed or was aborted: abort it (or it already was) and retry it whole.
    TransactionAborted,
    /// A partition's log was truncated below the consumer's position (KIP-320).
    LogTruncation,
    /// A background task of the client stopped unexpectedly.
    Internal,
    /// TLS or SASL failed: an untrusted or misnamed certificate, refused credentials.
    Security,
}

impl Error {
    /// The kind of fault, for matching.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Decode { .. } | Self::Protocol { .. } => ErrorKind::Malformed,
            Self::Broker { .. } => ErrorKind::Broker,
            Self::UnsupportedVersion { .. } => ErrorKind::Unsupported,
            Self::Config { .. } => ErrorKind::Config,
            Self::Misuse { .. } | Self::InvalidState { .. } => ErrorKind::Misuse,
            Self::RecordTooLarge { .. } => ErrorKind::RecordTooLarge,
            Self::CorruptRecord { .. } => ErrorKind::CorruptRecord,
            Self::Unreachable { last, .. } if last.kind() == ErrorKind::Security => ErrorKind::Security,
            Self::Io { .. } | Self::Closed { .. } | Self::Unreachable { .. } => ErrorKind::Network,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Fenced { .. } => ErrorKind::Fenced,
            Self::TransactionAbortable { .. } | Self::TransactionAborted => ErrorKind::TransactionAborted,
            Self::LogTruncation { .. } => ErrorKind::LogTruncation,
            Self::DriverFailed { .. } => ErrorKind::Internal,
            Self::Authentication { .. } | Self::Tls { .. } => ErrorKind::Security,
        }
    }

    /// Whether retrying the same operation may succeed: retriable broker errors, timeouts and
    /// connection failures.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Broker { code, .. } => code.is_retriable(),
            Self::Unreachable { last, .. } => last.kind() != ErrorKind::Security,
            Self::Io { .. } | Self::Timeout { .. } | Self::Closed { .. } => true,
            _ => false,
        }
    }

    /// The broker error code, if this is a broker error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn broker(code: ErrorCode, message: Option<&str>, context: impl Into<String>) -> Self {
        Self::Broker { code, message: message.map(str::to_owned), context: context.into() }
    }

    pub(crate) fn config(property: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { property: property.into(), reason: reason.into() }
    }

    pub(crate) fn misuse(operation: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Misuse { operation: operation.into(), reason: reason.into() }
    }

    pub(crate) fn io(broker: &str, source: std::io::Error) -> Self {
        Self::Io { broker: broker.to_owned(), source: Arc::new(source) }
    }
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_sort_errors_by_where_the_fault_lies() {
        let cases = [
            (Error::broker(ErrorCode::NOT_LEADER_OR_FOLLOWER, None, "produce"), ErrorKind::Broker),
            (Error::config("acks", "must be all, 0 or 1"), ErrorKind::Config),
            (Error::misuse("seek", "not assigned"), ErrorKind::Misuse),
            (Error::InvalidState { operation: "commit".into(), reason: "no transaction".into() }, ErrorKind::Misuse),
            (Error::Closed { broker: "b".into() }, ErrorKind::Network),
            (Error::Timeout { what: "x".into(), after: Duration::from_secs(1) }, ErrorKind::Timeout),
            (Error::TransactionAborted, ErrorKind::TransactionAborted),
            (Error::DriverFailed { driver: "producer", reason: "panic".into() }, ErrorKind::Internal),
            (
                Error::Authentication { broker: "b".into(), mechanism: "PLAIN".into(), reason: "bad".into() },
                ErrorKind::Security,
            ),
            (Error::Tls { broker: "b".into(), reason: "UnknownIssuer".into() }, ErrorKind::Security),
            (
                Error::RecordTooLarge {
                    topic: "t".into(),
                    partition: Some(0),
                    size: 2,
                    max: 1,
                    limit: "max.request.size",
                },
                ErrorKind::RecordTooLarge,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
        }
    }
}
