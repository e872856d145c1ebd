//! What a connection runs over: a byte stream from a [`Dialer`] (TCP unless one is plugged in),
//! TLS on top of it when `security.protocol` says so, and SASL authentication before the first
//! request when it says that.
//!
//! [`SecurityConfig`] holds the `security.protocol`, `ssl.*` and `sasl.*` properties that the
//! producer's, the consumer's and the admin client's configurations share.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::error::{Error, Result};
use super::sasl::SaslConfig;
use super::tls::TlsConfig;

/// A byte stream a connection can run over: a TCP socket, a TLS session, an in-memory pipe.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A dialed stream.
pub type BoxStream = Box<dyn Stream>;

/// The future of [`Dialer::dial`].
pub type DialFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxStream>> + Send + 'a>>;

/// Opens the byte stream to a broker's `host:port`, in place of a TCP connection: a SOCKS or
/// HTTP proxy, a fixed route for a name, an in-memory broker in tests. TLS and SASL, when
/// configured, run on top of what it returns.
///
/// The connection bounds the dial by `socket.connection.setup.timeout.ms` and drops the future
/// when that passes, so a dialer must leave nothing behind when its future is dropped.
pub trait Dialer: Send + Sync + fmt::Debug {
    /// Opens a stream to `addr` (`host:port`, as the broker advertises itself).
    fn dial<'a>(&'a self, addr: &'a str) -> DialFuture<'a>;
}

/// `security.protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    /// `PLAINTEXT`: neither TLS nor SASL.
    #[default]
    Plaintext,
    /// `SSL`: TLS.
    Ssl,
    /// `SASL_PLAINTEXT`: SASL authentication without TLS.
    SaslPlaintext,
    /// `SASL_SSL`: SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether connections run over TLS.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether connections authenticate with SASL.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    /// Kafka's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }
}

impl std::str::FromStr for SecurityProtocol {
    type Err = Error;

    /// Kafka's names, in any case (Java upper-cases the value).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(Self::Plaintext),
            "SSL" => Ok(Self::Ssl),
            "SASL_PLAINTEXT" => Ok(Self::SaslPlaintext),
            "SASL_SSL" => Ok(Self::SaslSsl),
            _ => Err(Error::config(
                "security.protocol",
                format!("{s:?} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
            )),
        }
    }
}

/// How connections are secured: `security.protocol`, the `ssl.*` and `sasl.*` properties, and
/// optionally a [`Dialer`]. Its `Debug` output shows no password or key.
#[derive(Clone, Debug, Default)]
pub struct SecurityConfig {
    /// `security.protocol`. Default `PLAINTEXT`.
    pub protocol: SecurityProtocol,
    /// The `ssl.*` properties, used when the protocol is `SSL` or `SASL_SSL`.
    pub tls: TlsConfig,
    /// The `sasl.*` properties, used when the protocol is `SASL_PLAINTEXT` or `SASL_SSL`.
    pub sasl: SaslConfig,
    /// Opens the byte streams in place of TCP; `None`: TCP.
    pub dialer: Option<Arc<dyn Dialer>>,
}

impl SecurityConfig {
    /// Sets `security.protocol` or an `ssl.*` / `sasl.*` property. Returns `Ok(false)` for a
    /// property that is none of these, and an error naming the property for one this client
    /// does not support or a bad value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        if key == "security.protocol" {
            self.protocol = value.parse()?;
            Ok(true)
        } else if key.starts_with("ssl.") {
            self.tls.set(key, value)?;
            Ok(true)
        } else if key.starts_with("sasl.") {
            self.sasl.set(key, value)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Checks how the properties combine: SASL needs credentials; a client certificate needs its
    /// key.
    pub fn validate(&self) -> Result<()> {
        if self.protocol.sasl() {
            self.sasl.validate()?;
        }
        if self.protocol.tls() {
            self.tls.validate()?;
        }
        Ok(())
    }
}
