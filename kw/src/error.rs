//! What a command can fail with, and the exit code of each kind.
//!
//! - [`Failure::Usage`]: the command line or a configuration is wrong (exit 2, as clap's own
//!   usage errors).
//! - [`Failure::Runtime`]: the cluster, the network or the input data made the command fail
//!   (exit 1).
//! - [`Failure::Reported`]: the command already printed what went wrong and only the exit code is
//!   left to give.

use kafka_wire::client::Error as KafkaError;
use kafka_wire::codec::ErrorCode;

#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Runtime(String),
    Reported(u8),
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Runtime(_) => 1,
            Self::Reported(code) => *code,
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            Self::Usage(m) | Self::Runtime(m) => Some(m),
            Self::Reported(_) => None,
        }
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

/// Errors of the client are runtime errors, except configuration errors, which only arise while
/// settings are checked (see [`config_error`]).
impl From<KafkaError> for Failure {
    fn from(e: KafkaError) -> Self {
        Failure::Runtime(describe(&e))
    }
}

/// A client error raised while the configuration is built or checked: a usage error.
pub fn config_error(e: KafkaError) -> Failure {
    match e {
        KafkaError::Config { .. } => Failure::Usage(e.to_string()),
        other => other.into(),
    }
}

/// The one-line text of a client error, with a hint where the code alone says little.
pub fn describe(e: &KafkaError) -> String {
    let text = e.to_string().replace('\n', " ");
    match e.code() {
        Some(code) if code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => format!("{text}: no such topic or partition"),
        _ => text,
    }
}

/// `context: error` as a runtime failure.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, KafkaError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| match e {
            KafkaError::Config { .. } => Failure::Usage(format!("{}: {e}", what())),
            e => Failure::Runtime(format!("{}: {}", what(), describe(&e))),
        })
    }
}
