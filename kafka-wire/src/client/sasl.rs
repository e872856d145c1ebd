//! SASL authentication of a connection (KIP-43 SaslHandshake, then KIP-152 SaslAuthenticate
//! requests carrying the mechanism's messages): PLAIN, SCRAM-SHA-256/512 and OAUTHBEARER. The
//! exchanges themselves are in [`crate::proto::sasl`]; this runs them over a connection, and
//! again on the same connection before the session the broker granted ends (KIP-368).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::connection::Submitter;
use super::error::{Error, Result};
use crate::codec::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use crate::codec::ErrorCode;
use crate::proto::sasl::{
    oauthbearer_error_status, oauthbearer_message, plain_message, unsecured_jws, ScramClient, ScramHash,
    OAUTHBEARER_ERROR_ACK,
};

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
    /// `OAUTHBEARER` (RFC 7628, KIP-255): a bearer token from a [`TokenProvider`].
    OAuthBearer,
}

impl SaslMechanism {
    /// The mechanism's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OAuthBearer => "OAUTHBEARER",
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
            "OAUTHBEARER" => Ok(Self::OAuthBearer),
            other => Err(Error::config(
                "sasl.mechanism",
                format!(
                    "{other:?} is not supported: this client speaks PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and \
                     OAUTHBEARER"
                ),
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

/// An OAuth 2 bearer token for OAUTHBEARER and when it expires. `Debug` shows the expiry, never
/// the token.
#[derive(Clone)]
pub struct OAuthBearerToken {
    value: Password,
    expires_at: SystemTime,
}

impl OAuthBearerToken {
    /// `value` (a compact JWS, as a token endpoint hands it out), valid until `expires_at`.
    pub fn new(value: impl Into<String>, expires_at: SystemTime) -> Self {
        Self { value: Password::new(value), expires_at }
    }

    /// An unsecured JWS for `subject` (`"alg":"none"`, no signature), issued at `issued_at` and
    /// valid for `lifetime`: what Kafka's default broker-side validator accepts, for tests and
    /// development only.
    pub fn unsecured(subject: &str, issued_at: SystemTime, lifetime: Duration) -> Self {
        let ms = |t: SystemTime| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        };
        let expires_at = issued_at + lifetime;
        Self::new(unsecured_jws(subject, ms(issued_at), ms(expires_at)), expires_at)
    }

    /// The token itself.
    pub fn expose(&self) -> &str {
        self.value.expose()
    }

    /// When the token expires.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

impl std::fmt::Debug for OAuthBearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthBearerToken").field("value", &self.value).field("expires_at", &self.expires_at).finish()
    }
}

/// The future of [`TokenProvider::token`].
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<OAuthBearerToken>> + Send + 'a>>;

/// Where OAUTHBEARER tokens come from: an identity provider's token endpoint, a file a sidecar
/// refreshes, or [`UnsecuredTokenProvider`] in tests. Asked for a token when a connection
/// authenticates and no cached token is fresh: a token is used until 80 % of its lifetime has
/// passed (as Java's `sasl.login.refresh.window.factor` default), so that new connections and
/// re-authentications (KIP-368) present a token well before it expires.
///
/// A closure returning a future implements it:
/// ```
/// use std::time::{Duration, SystemTime};
/// use kafka_wire::client::{OAuthBearerToken, SaslConfig};
/// let sasl = SaslConfig::default().token_provider(|| async {
///     Ok(OAuthBearerToken::unsecured("alice", SystemTime::now(), Duration::from_secs(3600)))
/// });
/// assert!(!format!("{sasl:?}").contains("eyJ"));
/// ```
pub trait TokenProvider: Send + Sync {
    /// A token. An error fails the connection that asked (and is returned as it is).
    fn token(&self) -> TokenFuture<'_>;
}

impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<OAuthBearerToken>> + Send + 'static,
{
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(self())
    }
}

/// Unsecured tokens for a fixed subject, as Java's `OAuthBearerLoginModule` makes them when
/// `sasl.jaas.config` sets `unsecuredLoginStringClaim_sub` (and optionally
/// `unsecuredLoginLifetimeSeconds`, default 3600). For tests and development only: any client
/// can claim any subject.
#[derive(Clone, Debug)]
pub struct UnsecuredTokenProvider {
    /// The `sub` claim: the principal the broker sees.
    pub subject: String,
    /// How long each token is valid.
    pub lifetime: Duration,
}

impl TokenProvider for UnsecuredTokenProvider {
    fn token(&self) -> TokenFuture<'_> {
        let token = OAuthBearerToken::unsecured(&self.subject, SystemTime::now(), self.lifetime);
        Box::pin(std::future::ready(Ok(token)))
    }
}

/// A [`TokenProvider`] and its last token, shared by the connections of a configuration (a clone
/// of the configuration shares them).
#[derive(Clone)]
pub struct Tokens {
    provider: Arc<dyn TokenProvider>,
    /// The last token and when to stop using it; a lock held across the provider's call, so that
    /// connections opened together ask once.
    cached: Arc<tokio::sync::Mutex<Option<(OAuthBearerToken, SystemTime)>>>,
}

impl Tokens {
    fn new(provider: Arc<dyn TokenProvider>) -> Self {
        Self { provider, cached: Arc::default() }
    }

    /// A token with at least 20 % of its lifetime left when it was fetched, from the cache or
    /// from the provider.
    async fn current(&self) -> Result<OAuthBearerToken> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some((token, refresh_at)) = &*cached {
            if now < *refresh_at {
                return Ok(token.clone());
            }
        }
        let token = self.provider.token().await?;
        let left = token.expires_at.duration_since(now).unwrap_or_default();
        *cached = Some((token.clone(), now + left.mul_f64(0.8)));
        Ok(token)
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenProvider")
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
    /// Where OAUTHBEARER's tokens come from: [`SaslConfig::token_provider`], or an
    /// [`UnsecuredTokenProvider`] from an `OAuthBearerLoginModule` in `sasl.jaas.config`.
    pub tokens: Option<Tokens>,
}

impl SaslConfig {
    /// Sets one `sasl.*` property; an error names a property this client does not support or a
    /// bad value, and never contains a password.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "sasl.mechanism" => self.mechanism = value.parse()?,
            "sasl.username" => self.username = Some(value.to_owned()),
            "sasl.password" => self.password = Some(Password::new(value)),
            "sasl.jaas.config" => match parse_jaas(value)? {
                Login::Password { username, password } => {
                    self.username = Some(username);
                    self.password = Some(password);
                }
                Login::Unsecured(provider) => self.tokens = Some(Tokens::new(Arc::new(provider))),
            },
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

    /// Takes OAUTHBEARER's tokens from `provider` (and sets the mechanism to OAUTHBEARER).
    pub fn token_provider(mut self, provider: impl TokenProvider + 'static) -> Self {
        self.mechanism = SaslMechanism::OAuthBearer;
        self.tokens = Some(Tokens::new(Arc::new(provider)));
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.mechanism == SaslMechanism::OAuthBearer {
            if self.tokens.is_none() {
                return Err(Error::config(
                    "sasl.jaas.config",
                    "OAUTHBEARER needs a token provider: set one in code (SaslConfig::token_provider), or an \
                     OAuthBearerLoginModule with unsecuredLoginStringClaim_sub in sasl.jaas.config (tests only)",
                ));
            }
        } else if self.username.is_none() || self.password.is_none() {
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

/// What a JAAS configuration logs in with.
#[derive(Debug)]
enum Login {
    /// PLAIN or SCRAM credentials.
    Password { username: String, password: Password },
    /// OAUTHBEARER's unsecured tokens.
    Unsecured(UnsecuredTokenProvider),
}

const PLAIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";
const SCRAM_MODULE: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";
const OAUTHBEARER_MODULE: &str = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule";

/// A JAAS configuration in Java's syntax: the username and password for PLAIN and SCRAM,
/// `org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p";`
/// (or `...scram.ScramLoginModule`), or the unsecured tokens of
/// `org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required
/// unsecuredLoginStringClaim_sub="u";`. Errors never quote the value, which holds the password.
fn parse_jaas(value: &str) -> Result<Login> {
    const KEY: &str = "sasl.jaas.config";
    let text = value.trim();
    let text = text.strip_suffix(';').unwrap_or(text).trim_end();
    let (module, rest) = text.split_once(char::is_whitespace).ok_or_else(|| {
        Error::config(KEY, "expected `<LoginModule class> required username=\"...\" password=\"...\";`")
    })?;
    if !matches!(module, PLAIN_MODULE | SCRAM_MODULE | OAUTHBEARER_MODULE) {
        return Err(Error::config(
            KEY,
            format!(
                "login module {module} is not supported: PlainLoginModule, ScramLoginModule and \
                 OAuthBearerLoginModule are"
            ),
        ));
    }
    let rest = rest.trim_start();
    let (flag, mut rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if !matches!(flag, "required" | "requisite" | "sufficient" | "optional") {
        return Err(Error::config(KEY, "the login module must be followed by a flag such as `required`"));
    }
    let (mut username, mut password, mut subject, mut lifetime) = (None, None, None, None);
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
            "unsecuredLoginStringClaim_sub" => subject = Some(value),
            "unsecuredLoginLifetimeSeconds" => {
                let seconds: u64 = value.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    Error::config(
                        KEY,
                        format!("unsecuredLoginLifetimeSeconds must be a positive number, not {value:?}"),
                    )
                })?;
                lifetime = Some(Duration::from_secs(seconds));
            }
            _ => {}
        }
        rest = after;
    }
    if module == OAUTHBEARER_MODULE {
        let subject = subject.ok_or_else(|| {
            Error::config(
                KEY,
                "OAuthBearerLoginModule needs unsecuredLoginStringClaim_sub (unsecured tokens, for tests); for \
                 real tokens set a token provider in code (SaslConfig::token_provider)",
            )
        })?;
        let lifetime = lifetime.unwrap_or(Duration::from_secs(3600));
        return Ok(Login::Unsecured(UnsecuredTokenProvider { subject, lifetime }));
    }
    match (username, password) {
        (Some(username), Some(password)) => Ok(Login::Password { username, password }),
        _ => Err(Error::config(KEY, "the login module's options must include username and password")),
    }
}

/// Authenticates a connection (its ApiVersions exchange done) with `config`: SaslHandshake v1,
/// then the mechanism's messages in SaslAuthenticate requests at `version`. Run again on an
/// authenticated connection, this re-authenticates it (KIP-368). A refusal is
/// [`Error::Authentication`] with the broker's message; the broker closes the connection after
/// it. Returns the session's lifetime when the broker limits it (SaslAuthenticate v1+).
pub(super) async fn authenticate(conn: &Submitter, config: &SaslConfig, version: i16) -> Result<Option<Duration>> {
    let mechanism = config.mechanism.name();
    let fail = |reason: String| Error::Authentication {
        broker: conn.addr().to_owned(),
        mechanism: mechanism.to_owned(),
        reason,
    };
    config.validate()?;
    // Version 1: the mechanism's messages then travel in SaslAuthenticate requests (KIP-152).
    let handshake =
        conn.request(&SaslHandshakeRequest { mechanism: mechanism.into(), ..Default::default() }, 1).await?;
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
    let mut lifetime = None;
    let round = |bytes: Vec<u8>, refused: Option<String>| {
        let fail = &fail;
        async move {
            let request = SaslAuthenticateRequest { auth_bytes: Bytes::from(bytes), ..Default::default() };
            let response = conn.request(&request, version).await?;
            if response.error_code != ErrorCode::NONE {
                let message = response.error_message.as_deref().map(str::to_owned);
                let message = message.unwrap_or_else(|| response.error_code.to_string());
                return Err(fail(match refused {
                    Some(why) => format!("{message} ({why})"),
                    None => message,
                }));
            }
            Ok(response)
        }
    };
    let mut session = |response: &crate::codec::messages::SaslAuthenticateResponse| {
        lifetime =
            (response.session_lifetime_ms > 0).then(|| Duration::from_millis(response.session_lifetime_ms as u64));
    };
    match config.mechanism {
        SaslMechanism::Plain => {
            let (Some(username), Some(password)) = (&config.username, &config.password) else {
                return Err(fail("no credentials".into()));
            };
            session(&round(plain_message(username, password.expose()), None).await?);
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let (Some(username), Some(password)) = (&config.username, &config.password) else {
                return Err(fail("no credentials".into()));
            };
            let hash =
                if config.mechanism == SaslMechanism::ScramSha256 { ScramHash::Sha256 } else { ScramHash::Sha512 };
            let mut scram = ScramClient::new(hash, username, password.expose(), &nonce()?);
            let server_first = round(scram.client_first(), None).await?.auth_bytes;
            let client_final = scram.server_first(&server_first).map_err(|e| fail(e.to_string()))?;
            let last = round(client_final, None).await?;
            scram.server_final(&last.auth_bytes).map_err(|e| fail(e.to_string()))?;
            session(&last);
        }
        SaslMechanism::OAuthBearer => {
            let Some(tokens) = &config.tokens else { return Err(fail("no token provider".into())) };
            let token = tokens.current().await?;
            let response = round(oauthbearer_message(token.expose()), None).await?;
            if !response.auth_bytes.is_empty() {
                // An error challenge: acknowledge it, and the broker fails the exchange. Say why
                // it refused, and whether the token had expired (the token itself is not shown).
                let status = oauthbearer_error_status(&response.auth_bytes).unwrap_or_else(|| "no status".into());
                let expired = token.expires_at() <= SystemTime::now();
                let why = if expired {
                    format!("the broker says {status}: the token expired at {}", unix_seconds(token.expires_at()))
                } else {
                    format!("the broker says {status}")
                };
                round(OAUTHBEARER_ERROR_ACK.to_vec(), Some(why.clone())).await?;
                return Err(fail(why));
            }
            session(&response);
        }
    }
    tracing::debug!(broker = %conn.addr(), mechanism, session_lifetime = ?lifetime, "authenticated");
    Ok(lifetime)
}

/// A time as seconds since the Unix epoch, for messages.
fn unix_seconds(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{} (Unix time)", d.as_secs()),
        Err(_) => "a time before 1970".into(),
    }
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
        let credentials = |value: &str| match parse_jaas(value).unwrap() {
            Login::Password { username, password } => (username, password.expose().to_owned()),
            other => panic!("{other:?}"),
        };
        let (u, p) = credentials(
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="a \"quoted\" secret";"#,
        );
        assert_eq!((u.as_str(), p.as_str()), ("alice", "a \"quoted\" secret"));
        let (u, p) = credentials(
            "org.apache.kafka.common.security.plain.PlainLoginModule required\n  username=bob\n  password=pw ;",
        );
        assert_eq!((u.as_str(), p.as_str()), ("bob", "pw"));
        match parse_jaas(
            r#"org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="carol" unsecuredLoginLifetimeSeconds="60";"#,
        )
        .unwrap()
        {
            Login::Unsecured(p) => assert_eq!((p.subject.as_str(), p.lifetime), ("carol", Duration::from_secs(60))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_jaas_configurations_are_refused_without_quoting_the_password() {
        for bad in [
            r#"com.sun.security.auth.module.Krb5LoginModule required password="hunter2";"#,
            r#"org.apache.kafka.common.security.plain.PlainLoginModule username="u" password="hunter2";"#,
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="hunter2"#,
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required password="hunter2";"#,
            r#"org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required password="hunter2";"#,
            r#"org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="u" unsecuredLoginLifetimeSeconds="0" x="hunter2";"#,
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
        let e = c.set("sasl.mechanism", "GSSAPI").unwrap_err();
        assert!(e.to_string().contains("PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER"), "{e}");
        let e = c.set("sasl.login.callback.handler.class", "x").unwrap_err();
        assert!(matches!(&e, Error::Config { property, .. } if property == "sasl.login.callback.handler.class"));
        assert!(c.validate().is_err());
    }

    #[test]
    fn oauthbearer_needs_a_token_provider_and_never_shows_the_token() {
        let mut c = SaslConfig::default();
        c.set("sasl.mechanism", "OAUTHBEARER").unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("token provider"), "{e}");
        c.set(
            "sasl.jaas.config",
            r#"org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="carol";"#,
        )
        .unwrap();
        c.validate().unwrap();
        let token = OAuthBearerToken::new("secret-token-value", SystemTime::now());
        let shown = format!("{token:?} {c:?}");
        assert!(!shown.contains("secret-token-value"), "{shown}");
        let c = SaslConfig::default().token_provider(move || {
            let token = token.clone();
            async move { Ok(token) }
        });
        assert_eq!(c.mechanism, SaslMechanism::OAuthBearer);
        assert!(!format!("{c:?}").contains("secret-token-value"));
    }

    #[tokio::test]
    async fn tokens_are_reused_until_80_percent_of_their_lifetime_then_refreshed() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let calls = Arc::new(AtomicU32::new(0));
        let lifetime = Arc::new(std::sync::Mutex::new(Duration::from_secs(3600)));
        let tokens = {
            let (calls, lifetime) = (calls.clone(), lifetime.clone());
            Tokens::new(Arc::new(move || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let lifetime = *lifetime.lock().unwrap();
                async move { Ok(OAuthBearerToken::unsecured(&format!("u{n}"), SystemTime::now(), lifetime)) }
            }))
        };
        let first = tokens.current().await.unwrap();
        assert_eq!(tokens.current().await.unwrap().expose(), first.expose(), "a fresh token is reused");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A token past 80 % of its lifetime (here: already expired) is replaced at the next use.
        *lifetime.lock().unwrap() = Duration::ZERO;
        tokens.cached.lock().await.as_mut().unwrap().1 = SystemTime::now();
        let second = tokens.current().await.unwrap();
        assert_ne!(second.expose(), first.expose());
        tokens.current().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3, "an expired token is asked for again each time");
    }

    #[test]
    fn nonces_are_fresh_and_comma_free() {
        let (a, b) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(a, b);
        assert!(a.len() >= 24 && !a.contains(','));
    }
}
