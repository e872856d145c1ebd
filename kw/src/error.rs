//! What a command can fail with, and the exit code of each kind (listed in `kw --help` and the
//! README):
//!
//! - 0: success (also when stdout's reader goes away, `kw consume | head`).
//! - 1 [`Failure::Runtime`]: the cluster, the network or a local file made the command fail.
//! - 2 [`Failure::Usage`]: the command line or a configuration is wrong (as clap's own usage
//!   errors).
//! - 3 [`Failure::Data`]: input data was refused (a line of `kw produce` that is malformed, too
//!   large, or names a partition that does not exist); the report names the lines.
//! - 130 / 143 [`Failure::Interrupted`]: SIGINT / SIGTERM stopped the command (128 + the
//!   signal's number, as a shell reports a process the signal killed).
//! - [`Failure::Reported`]: the command already printed what went wrong and only the exit code is
//!   left to give.

use kafka_wire::client::Error as KafkaError;
use kafka_wire::types::{DecodeError, ErrorCode};

use crate::signal::Signal;

#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Runtime(String),
    Data(String),
    Interrupted(Signal),
    Reported(u8),
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Runtime(_) => 1,
            Self::Usage(_) => 2,
            Self::Data(_) => 3,
            Self::Interrupted(s) => s.exit_code(),
            Self::Reported(code) => *code,
        }
    }

    /// The line to print after `kw: `, if any.
    pub fn message(&self) -> Option<String> {
        match self {
            Self::Usage(m) | Self::Runtime(m) | Self::Data(m) => Some(format!("error: {m}")),
            Self::Interrupted(s) => Some(format!("interrupted by {}", s.name())),
            Self::Reported(_) => None,
        }
    }
}

impl From<Signal> for Failure {
    fn from(s: Signal) -> Self {
        Failure::Interrupted(s)
    }
}

/// A usage or configuration error (exit 2).
pub fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

/// A runtime error (exit 1).
pub fn runtime(message: impl Into<String>) -> Failure {
    Failure::Runtime(message.into())
}

/// Which exit code a client error calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The configuration or the arguments (exit 2).
    Usage,
    /// A record itself: too large, refused by the broker's validation (exit 3).
    Data,
    /// The cluster or the network (exit 1).
    Runtime,
}

/// The kind of a client error.
pub fn kind(e: &KafkaError) -> Kind {
    match e {
        KafkaError::Config { .. } | KafkaError::Misuse { .. } => Kind::Usage,
        KafkaError::RecordTooLarge { .. } => Kind::Data,
        KafkaError::Broker { code, .. } if is_record_error(*code) => Kind::Data,
        _ => Kind::Runtime,
    }
}

/// Broker error codes that a record's own content causes.
fn is_record_error(code: ErrorCode) -> bool {
    [
        ErrorCode::MESSAGE_TOO_LARGE,
        ErrorCode::RECORD_LIST_TOO_LARGE,
        ErrorCode::INVALID_RECORD,
        ErrorCode::CORRUPT_MESSAGE,
        ErrorCode::INVALID_TIMESTAMP,
    ]
    .contains(&code)
}

/// Errors of the client by their kind: configuration errors and misuse are usage errors, a
/// record refused for its content a data error, the rest runtime errors.
impl From<KafkaError> for Failure {
    fn from(e: KafkaError) -> Self {
        let text = describe(&e);
        match kind(&e) {
            Kind::Usage => Failure::Usage(text),
            Kind::Data => Failure::Data(text),
            Kind::Runtime => Failure::Runtime(text),
        }
    }
}

/// The one-line text of a client error, with a hint where the error alone says little.
pub fn describe(e: &KafkaError) -> String {
    if let Some(text) = not_kafka(e) {
        return text;
    }
    let text = e.to_string().replace('\n', " ");
    match e {
        KafkaError::Broker { code, .. } if *code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => {
            format!("{text}: no such topic or partition")
        }
        KafkaError::Broker { code, .. } if *code == ErrorCode::MESSAGE_TOO_LARGE => {
            format!("{text}: a record is larger than the topic's max.message.bytes (or the broker's message.max.bytes)")
        }
        KafkaError::DriverFailed { .. } => format!("{text} (a bug in kafka-wire: please report it)"),
        _ => text,
    }
}

/// A connection to something that is not a Kafka broker usually fails on the first four bytes
/// of its answer, read as the length of a response frame: "HTTP" is 1213486160. Such answers
/// are named for what they are.
fn not_kafka(e: &KafkaError) -> Option<String> {
    match e {
        KafkaError::Decode { broker, source: DecodeError::FrameTooLarge { size, .. } } => {
            let what = answer_like(u32::try_from(*size).ok()?.to_be_bytes())?;
            Some(format!("the server at {broker} does not speak the Kafka protocol (it answered like {what})"))
        }
        KafkaError::Unreachable { last, .. } => not_kafka(last),
        _ => None,
    }
}

/// What kind of server starts its answer with `head`, if it is recognisably not Kafka.
fn answer_like(head: [u8; 4]) -> Option<String> {
    match head {
        [b'H', b'T', b'T', b'P'] => Some("an HTTP server".into()),
        [b'S', b'S', b'H', b'-'] => Some("an SSH server".into()),
        // A TLS record: alert (21) or handshake (22), protocol version 3.x.
        [21 | 22, 3, _, _] => Some("a TLS server: set security.protocol=SSL (or SASL_SSL) and ssl.ca.location".into()),
        _ if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') => {
            Some(format!("a text protocol: its answer begins with {:?}", String::from_utf8_lossy(&head)))
        }
        _ => None,
    }
}

/// `context: error` as a failure of the error's kind.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, KafkaError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| {
            let text = format!("{}: {}", what(), describe(&e));
            match kind(&e) {
                Kind::Usage => Failure::Usage(text),
                Kind::Data => Failure::Data(text),
                Kind::Runtime => Failure::Runtime(text),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_other_servers_are_recognised() {
        assert_eq!(u32::from_be_bytes(*b"HTTP"), 1_213_486_160);
        assert_eq!(answer_like(*b"HTTP").as_deref(), Some("an HTTP server"));
        assert!(answer_like([22, 3, 3, 0]).unwrap().contains("TLS"));
        assert!(answer_like(*b"-ERR").unwrap().contains("\"-ERR\""));
        // A large but binary length is left alone: it may be a real (oversize) Kafka answer.
        assert_eq!(answer_like(200_000_000u32.to_be_bytes()), None);
    }
}
