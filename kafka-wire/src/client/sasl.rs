//! SASL authentication of a connection (KIP-43 SaslHandshake, then KIP-152 SaslAuthenticate
//! requests carrying the mechanism's messages): PLAIN and SCRAM-SHA-256/512. The exchanges
//! themselves are in [`crate::proto::sasl`]; this runs them over a connection.

use bytes::Bytes;

use super::connection::Connection;
use super::error::{Error, Result};
use crate::codec::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use crate::codec::ErrorCode;
use crate::proto::sasl::{plain_message, ScramClient, ScramHash};

/// `sasl.mechanism`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SaslMechanism {
    /// `PLAIN` (RFC 4616): the password itself, so only over TLS outside tests. Kafka's default.
    #[default]
    Plain,
    /// `SCRAM-SHA-256` (RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl std::str::FromStr for SaslMechanism {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "PLAIN" => Ok(Self::Plain),
            "SCRAM-SHA-256" => Ok(Self::ScramSha256),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512),
            other => Err(Error::config(
                "sasl.mechanism",
                format!("{other:?} is not supported: this client speaks PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512"),
            )),
        }
    }
}

/// A password: shown as `<redacted>` by `Debug`, never put in an error.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps `password`.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The `sasl.*` properties: the mechanism and the credentials.
#[derive(Clone, Debug, Default)]
pub struct SaslConfig {
    /// `sasl.mechanism`. Default `PLAIN`, as in Java.
    pub mechanism: SaslMechanism,
    /// `sasl.username`, or the `username` of `sasl.jaas.config`.
    pub username: Option<String>,
    /// `sasl.password`, or the `password` of `sasl.jaas.config`.
    pub password: Option<Password>,
}

impl SaslConfig {
    /// Sets one `sasl.*` property; an error names a property this client does not support or a
    /// bad value, and never contains a password.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "sasl.mechanism" => self.mechanism = value.parse()?,
            "sasl.username" => self.username = Some(value.to_owned()),
            "sasl.password" => self.password = Some(Password::new(value)),
            "sasl.jaas.config" => {
                let (username, password) = parse_jaas(value)?;
                self.username = Some(username);
                self.password = Some(password);
            }
            _ => {
                return Err(Error::config(
                    key,
                    "a SASL property this client does not support (it takes sasl.mechanism, sasl.jaas.config, \
                     sasl.username, sasl.password)",
                ))
            }
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.username.is_none() || self.password.is_none() {
            return Err(Error::config(
                "sasl.jaas.config",
                format!(
                    "{} needs a username and a password: set sasl.jaas.config (or sasl.username and sasl.password)",
                    self.mechanism.name()
                ),
            ));
        }
        Ok(())
    }
}

/// The username and password of a JAAS configuration in Java's syntax, for PLAIN and SCRAM:
/// `org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p";`
/// (or `...scram.ScramLoginModule`). Errors never quote the value, which holds the password.
fn parse_jaas(value: &str) -> Result<(String, Password)> {
    const KEY: &str = "sasl.jaas.config";
    let text = value.trim();
    let text = text.strip_suffix(';').unwrap_or(text).trim_end();
    let (module, rest) = text.split_once(char::is_whitespace).ok_or_else(|| {
        Error::config(KEY, "expected `<LoginModule class> required username=\"...\" password=\"...\";`")
    })?;
    if !matches!(
        module,
        "org.apache.kafka.common.security.plain.PlainLoginModule"
            | "org.apache.kafka.common.security.scram.ScramLoginModule"
    ) {
        return Err(Error::config(
            KEY,
            format!("login module {module} is not supported: PlainLoginModule and ScramLoginModule are"),
        ));
    }
    let rest = rest.trim_start();
    let (flag, mut rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if !matches!(flag, "required" | "requisite" | "sufficient" | "optional") {
        return Err(Error::config(KEY, "the login module must be followed by a flag such as `required`"));
    }
    let (mut username, mut password) = (None, None);
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (name, after) =
            rest.split_once('=').ok_or_else(|| Error::config(KEY, "expected name=\"value\" options"))?;
        let name = name.trim();
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            // Java's parser takes backslash escapes inside quotes.
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end =
                end.ok_or_else(|| Error::config(KEY, format!("the value of option {name} has no closing quote")))?;
            (out, &quoted[end..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        match name {
            "username" => username = Some(value),
            "password" => password = Some(Password(value)),
            _ => {}
        }
        rest = after;
    }
    match (username, password) {
        (Some(u), Some(p)) => Ok((u, p)),
        _ => Err(Error::config(KEY, "the login module's options must include username and password")),
    }
}

/// Authenticates `conn` (its ApiVersions exchange done) with `config`: SaslHandshake v1, then
/// the mechanism's messages in SaslAuthenticate requests. A refusal is [`Error::Authentication`]
/// with the broker's message; the broker closes the connection after it.
pub(super) async fn authenticate(conn: &Connection, config: &SaslConfig) -> Result<()> {
    let mechanism = config.mechanism.name();
    let fail = |reason: String| Error::Authentication {
        broker: conn.addr().to_owned(),
        mechanism: mechanism.to_owned(),
        reason,
    };
    let (Some(username), Some(password)) = (&config.username, &config.password) else {
        return Err(config.validate().err().unwrap_or_else(|| fail("no credentials".into())));
    };
    // Version 1: the mechanism's messages then travel in SaslAuthenticate requests (KIP-152).
    let handshake =
        conn.send_version(&SaslHandshakeRequest { mechanism: mechanism.into(), ..Default::default() }, 1).await?;
    if handshake.error_code == ErrorCode::UNSUPPORTED_SASL_MECHANISM {
        let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| &**m).collect();
        return Err(fail(format!("the broker does not enable it; it offers {}", offered.join(", "))));
    }
    if handshake.error_code == ErrorCode::ILLEGAL_SASL_STATE {
        // What a listener without SASL answers a handshake with.
        return Err(fail(
            "the broker does not expect SASL here (ILLEGAL_SASL_STATE): is this a SASL listener? Check the port \
             and security.protocol"
                .into(),
        ));
    }
    if handshake.error_code != ErrorCode::NONE {
        return Err(fail(format!("SaslHandshake failed with {}", handshake.error_code)));
    }
    let round = |bytes: Vec<u8>| async move {
        let response =
            conn.send(&SaslAuthenticateRequest { auth_bytes: Bytes::from(bytes), ..Default::default() }).await?;
        if response.error_code != ErrorCode::NONE {
            let message = response.error_message.as_deref().map(str::to_owned);
            return Err(fail(message.unwrap_or_else(|| response.error_code.to_string())));
        }
        Ok(response.auth_bytes)
    };
    match config.mechanism {
        SaslMechanism::Plain => {
            round(plain_message(username, password.expose())).await?;
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let hash =
                if config.mechanism == SaslMechanism::ScramSha256 { ScramHash::Sha256 } else { ScramHash::Sha512 };
            let mut scram = ScramClient::new(hash, username, password.expose(), &nonce()?);
            let server_first = round(scram.client_first()).await?;
            let client_final = scram.server_first(&server_first).map_err(|e| fail(e.to_string()))?;
            let server_final = round(client_final).await?;
            scram.server_final(&server_final).map_err(|e| fail(e.to_string()))?;
        }
    }
    tracing::debug!(broker = %conn.addr(), mechanism, "authenticated");
    Ok(())
}

/// A SCRAM client nonce: 24 random bytes, base64url without padding (no `,`).
fn nonce() -> Result<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| Error::misuse("drawing a SCRAM nonce", e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_configurations_in_javas_syntax_give_the_credentials() {
        let (u, p) = parse_jaas(
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="a \"quoted\" secret";"#,
        )
        .unwrap();
        assert_eq!((u.as_str(), p.expose()), ("alice", "a \"quoted\" secret"));
        let (u, p) = parse_jaas(
            "org.apache.kafka.common.security.plain.PlainLoginModule required\n  username=bob\n  password=pw ;",
        )
        .unwrap();
        assert_eq!((u.as_str(), p.expose()), ("bob", "pw"));
    }

    #[test]
    fn bad_jaas_configurations_are_refused_without_quoting_the_password() {
        for bad in [
            r#"com.sun.security.auth.module.Krb5LoginModule required password="hunter2";"#,
            r#"org.apache.kafka.common.security.plain.PlainLoginModule username="u" password="hunter2";"#,
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="hunter2"#,
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required password="hunter2";"#,
        ] {
            let e = parse_jaas(bad).unwrap_err();
            assert!(matches!(&e, Error::Config { property, .. } if property == "sasl.jaas.config"), "{e:?}");
            assert!(!e.to_string().contains("hunter2") && !format!("{e:?}").contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn passwords_are_redacted_from_debug_output() {
        let mut c = SaslConfig::default();
        c.set("sasl.mechanism", "SCRAM-SHA-512").unwrap();
        c.set("sasl.username", "alice").unwrap();
        c.set("sasl.password", "hunter2").unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("alice") && !shown.contains("hunter2"), "{shown}");
        assert_eq!(c.mechanism, SaslMechanism::ScramSha512);
    }

    #[test]
    fn unsupported_mechanisms_and_properties_are_named() {
        let mut c = SaslConfig::default();
        for m in ["GSSAPI", "OAUTHBEARER"] {
            let e = c.set("sasl.mechanism", m).unwrap_err();
            assert!(e.to_string().contains("PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512"), "{e}");
        }
        let e = c.set("sasl.login.callback.handler.class", "x").unwrap_err();
        assert!(matches!(&e, Error::Config { property, .. } if property == "sasl.login.callback.handler.class"));
        assert!(c.validate().is_err());
    }

    #[test]
    fn nonces_are_fresh_and_comma_free() {
        let (a, b) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(a, b);
        assert!(a.len() >= 24 && !a.contains(','));
    }
}
