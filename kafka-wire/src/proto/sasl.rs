//! SASL mechanisms as sans-IO exchanges: what the client sends next, given what the broker
//! answered. The client wraps each message in a SaslAuthenticate request (KIP-152).
//!
//! - PLAIN (RFC 4616): one message, `\0user\0password`.
//! - SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677): the client's first message, the
//!   server's salt and iteration count, the client's proof, and the server's signature, which the
//!   client checks so that a server that does not know the password is not believed either.
//! - OAUTHBEARER (RFC 7628, KIP-255): the bearer token in one message; a server that refuses it
//!   answers with an error document, which the client acknowledges with a single `0x01` so that
//!   the server can end the exchange. [`unsecured_jws`] makes the unsigned tokens that Kafka's
//!   default (test-only) validator accepts.
//!
//! Nothing here draws randomness or reads a clock: the caller passes the client nonce and the
//! times in.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// The iteration counts a broker may ask for. Kafka accepts 4096 to 16384 for its SCRAM
/// credentials; the upper bound keeps a hostile server from making the client spin.
pub const SCRAM_ITERATIONS: std::ops::RangeInclusive<u32> = 4096..=65536;

/// The PLAIN mechanism's only message (RFC 4616), with no authorization identity.
pub fn plain_message(username: &str, password: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(username.len() + password.len() + 2);
    m.push(0);
    m.extend_from_slice(username.as_bytes());
    m.push(0);
    m.extend_from_slice(password.as_bytes());
    m
}

/// The OAUTHBEARER client's initial response (RFC 7628, section 3.1): the GS2 header without an
/// authorization identity, then `auth=Bearer <token>`, each key-value pair ended by `0x01`.
pub fn oauthbearer_message(token: &str) -> Vec<u8> {
    format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
}

/// What the client sends after an OAUTHBEARER server's error challenge (RFC 7628, section
/// 3.2.3): the exchange then fails with the server's error.
pub const OAUTHBEARER_ERROR_ACK: &[u8] = b"\x01";

/// The `status` of an OAUTHBEARER server's error challenge (`{"status":"invalid_token",...}`,
/// RFC 7628 section 3.2.2), if it is one; at most 64 characters of it.
pub fn oauthbearer_error_status(challenge: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(challenge).ok()?;
    let after = &text[text.find("\"status\"")? + "\"status\"".len()..];
    let after = after.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let status: String = after.chars().take_while(|c| *c != '"').take(64).collect();
    Some(status)
}

/// An unsecured JWS (RFC 7515 with `"alg":"none"` and no signature), as Kafka's
/// `OAuthBearerUnsecuredLoginCallbackHandler` makes them: claims `sub`, `iat` and `exp` (seconds
/// since the epoch). Kafka's default broker-side validator accepts these; they prove nothing
/// and are for tests and development only.
pub fn unsecured_jws(subject: &str, issued_at_ms: i64, expires_at_ms: i64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut sub = String::with_capacity(subject.len());
    for c in subject.chars() {
        match c {
            '"' => sub.push_str("\\\""),
            '\\' => sub.push_str("\\\\"),
            c if u32::from(c) < 0x20 => sub.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => sub.push(c),
        }
    }
    // NumericDate is in seconds; Kafka reads fractions too, so milliseconds survive.
    let seconds = |ms: i64| format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
    let claims = format!(r#"{{"sub":"{sub}","iat":{},"exp":{}}}"#, seconds(issued_at_ms), seconds(expires_at_ms));
    format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(claims))
}

/// The hash of a SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramHash {
    /// The mechanism's name in SaslHandshake.
    pub fn mechanism(self) -> &'static str {
        match self {
            Self::Sha256 => "SCRAM-SHA-256",
            Self::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: hmac::Mac + hmac::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // HMAC takes keys of any length.
            let mut mac = <M as hmac::KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Sha256 => run::<hmac::Hmac<sha2::Sha256>>(key, parts),
            Self::Sha512 => run::<hmac::Hmac<sha2::Sha512>>(key, parts),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        match self {
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// `Hi()` of RFC 5802: PBKDF2 with this hash's HMAC, one block of output.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut u = self.hmac(password, &[salt, &1u32.to_be_bytes()]);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = self.hmac(password, &[&u]);
            out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
        }
        out
    }
}

/// Why a SCRAM exchange failed on the client's side.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScramError {
    /// The server's message does not parse or breaks the exchange's rules.
    #[error("malformed SCRAM server message: {0}")]
    Malformed(&'static str),
    /// The server asked for an iteration count outside [`SCRAM_ITERATIONS`].
    #[error("the server asks for {0} iterations, outside the accepted 4096..=65536")]
    Iterations(u32),
    /// The server sent an error (`e=...`) in its final message.
    #[error("the server rejected the authentication: {0}")]
    Rejected(String),
    /// The server's signature does not match: it does not know the credentials.
    #[error("the server's signature does not match (the server does not know this user's credentials)")]
    BadServerSignature,
    /// A message came when the exchange did not expect one.
    #[error("unexpected SCRAM message in state {0}")]
    State(&'static str),
}

enum State {
    /// The first message is sent; the server's first is awaited.
    First,
    /// The proof is sent; the server's signature is awaited.
    Final {
        server_signature: Vec<u8>,
    },
    Done,
    Failed,
}

/// The client side of one SCRAM exchange (RFC 5802), without channel binding.
///
/// ```
/// use kafka_wire::proto::sasl::{ScramClient, ScramHash};
/// let mut scram = ScramClient::new(ScramHash::Sha256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
/// assert_eq!(scram.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
/// let final_message = scram.server_first(
///     b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
/// )?;
/// scram.server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")?;
/// # Ok::<(), kafka_wire::proto::sasl::ScramError>(())
/// ```
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    nonce: String,
    first_bare: String,
    state: State,
}

impl ScramClient {
    /// An exchange for `username` with `nonce` (printable ASCII without `,`; at least 16 random
    /// characters in practice).
    pub fn new(hash: ScramHash, username: &str, password: &str, nonce: &str) -> Self {
        let username = username.replace('=', "=3D").replace(',', "=2C");
        Self {
            hash,
            password: password.to_owned(),
            nonce: nonce.to_owned(),
            first_bare: format!("n={username},r={nonce}"),
            state: State::First,
        }
    }

    /// The client's first message (`client-first-message`).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// Takes the server's first message (nonce, salt, iterations) and returns the client's
    /// final message with its proof.
    pub fn server_first(&mut self, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::First) {
            return Err(ScramError::State("after the server's first message"));
        }
        self.state = State::Failed;
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        if text.starts_with("m=") {
            return Err(ScramError::Malformed("mandatory extension the client does not know"));
        }
        let mut fields = text.split(',');
        let nonce = attribute(fields.next(), 'r')?;
        let salt = attribute(fields.next(), 's')?;
        let iterations = attribute(fields.next(), 'i')?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Malformed("the server's nonce does not extend the client's"));
        }
        let salt = BASE64.decode(salt).map_err(|_| ScramError::Malformed("the salt is not base64"))?;
        let iterations: u32 =
            iterations.parse().map_err(|_| ScramError::Malformed("the iteration count is not a number"))?;
        if !SCRAM_ITERATIONS.contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let h = self.hash;
        let salted = h.salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, &[b"Client Key"]);
        let stored_key = h.hash(&client_key);
        // "biws" is base64("n,,"): no channel binding, no authorization identity.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.first_bare);
        let signature = h.hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let server_key = h.hmac(&salted, &[b"Server Key"]);
        let server_signature = h.hmac(&server_key, &[auth_message.as_bytes()]);
        self.state = State::Final { server_signature };
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Takes the server's final message and checks its signature.
    pub fn server_final(&mut self, message: &[u8]) -> Result<(), ScramError> {
        let State::Final { server_signature } = std::mem::replace(&mut self.state, State::Failed) else {
            return Err(ScramError::State("before the server's first message or after the exchange"));
        };
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let first = text.split(',').next();
        if let Ok(error) = attribute(first, 'e') {
            return Err(ScramError::Rejected(error.to_owned()));
        }
        let verifier = attribute(first, 'v')?;
        let verifier = BASE64.decode(verifier).map_err(|_| ScramError::Malformed("the verifier is not base64"))?;
        if verifier != server_signature {
            return Err(ScramError::BadServerSignature);
        }
        self.state = State::Done;
        Ok(())
    }

    /// Whether the exchange has completed and the server proved it knows the credentials.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient").field("hash", &self.hash).field("password", &"<redacted>").finish()
    }
}

/// The value of `field`, which must be the attribute `name` (`r=...`).
fn attribute(field: Option<&str>, name: char) -> Result<&str, ScramError> {
    let field = field.ok_or(ScramError::Malformed("a required attribute is missing"))?;
    let mut chars = field.chars();
    if chars.next() != Some(name) || chars.next() != Some('=') {
        return Err(ScramError::Malformed("attributes are not in the order RFC 5802 gives"));
    }
    Ok(&field[2..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &[u8] =
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    /// RFC 7677, section 3.
    #[test]
    fn scram_sha_256_matches_rfc_7677_test_vector() {
        let mut scram = ScramClient::new(ScramHash::Sha256, "user", "pencil", NONCE);
        assert_eq!(scram.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let client_final = scram.server_first(SERVER_FIRST).unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        scram.server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
        assert!(scram.is_done());
    }

    #[test]
    fn a_wrong_server_signature_is_refused() {
        let mut scram = ScramClient::new(ScramHash::Sha256, "user", "pencil", NONCE);
        scram.server_first(SERVER_FIRST).unwrap();
        assert_eq!(
            scram.server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap_err(),
            ScramError::BadServerSignature
        );
        assert!(!scram.is_done());
    }

    #[test]
    fn a_server_error_is_reported() {
        let mut scram = ScramClient::new(ScramHash::Sha512, "user", "pencil", NONCE);
        scram.server_first(SERVER_FIRST).unwrap();
        assert_eq!(scram.server_final(b"e=invalid-proof").unwrap_err(), ScramError::Rejected("invalid-proof".into()));
    }

    #[test]
    fn hostile_server_first_messages_are_refused() {
        let cases: &[(&[u8], ScramError)] = &[
            (b"r=other,s=AAAA,i=4096", ScramError::Malformed("the server's nonce does not extend the client's")),
            (
                b"r=rOprNGfwEbeRWgbNEkqO,s=AAAA,i=4096",
                ScramError::Malformed("the server's nonce does not extend the client's"),
            ),
            (b"r=rOprNGfwEbeRWgbNEkqOx,s=AAAA,i=4000000000", ScramError::Iterations(4_000_000_000)),
            (b"r=rOprNGfwEbeRWgbNEkqOx,s=AAAA,i=1", ScramError::Iterations(1)),
            (b"r=rOprNGfwEbeRWgbNEkqOx,s=!!,i=4096", ScramError::Malformed("the salt is not base64")),
            (b"r=rOprNGfwEbeRWgbNEkqOx,s=AAAA", ScramError::Malformed("a required attribute is missing")),
            (
                b"s=AAAA,r=rOprNGfwEbeRWgbNEkqOx,i=4096",
                ScramError::Malformed("attributes are not in the order RFC 5802 gives"),
            ),
            (
                b"m=ext,r=rOprNGfwEbeRWgbNEkqOx,s=AAAA,i=4096",
                ScramError::Malformed("mandatory extension the client does not know"),
            ),
            (b"\xff", ScramError::Malformed("not UTF-8")),
        ];
        for (message, error) in cases {
            let mut scram = ScramClient::new(ScramHash::Sha256, "user", "pencil", NONCE);
            assert_eq!(&scram.server_first(message).unwrap_err(), error, "{}", String::from_utf8_lossy(message));
            // A failed exchange stays failed.
            assert!(scram.server_final(b"v=AAAA").is_err());
        }
    }

    #[test]
    fn user_names_are_escaped_and_plain_is_nul_separated() {
        let scram = ScramClient::new(ScramHash::Sha512, "a,b=c", "p", "n");
        assert_eq!(scram.client_first(), b"n,,n=a=2Cb=3Dc,r=n");
        assert_eq!(plain_message("u", "p"), b"\0u\0p");
    }

    #[test]
    fn oauthbearer_messages_follow_rfc_7628() {
        assert_eq!(oauthbearer_message("t.k.n"), b"n,,\x01auth=Bearer t.k.n\x01\x01");
        assert_eq!(
            oauthbearer_error_status(br#"{"status":"invalid_token","scope":""}"#).as_deref(),
            Some("invalid_token")
        );
        assert_eq!(oauthbearer_error_status(b""), None);
        assert_eq!(oauthbearer_error_status(b"\xff"), None);
        assert_eq!(oauthbearer_error_status(br#"{"status": 3}"#), None);
    }

    #[test]
    fn unsecured_tokens_carry_the_subject_and_times() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jws = unsecured_jws("al\"ice", 1_700_000_000_000, 1_700_000_003_500);
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[0]).unwrap(), br#"{"alg":"none"}"#);
        assert_eq!(
            String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap(),
            r#"{"sub":"al\"ice","iat":1700000000.000,"exp":1700000003.500}"#
        );
        assert_eq!(parts[2], "", "an unsecured JWS has no signature");
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let scram = ScramClient::new(ScramHash::Sha256, "user", "hunter2-secret", NONCE);
        assert!(!format!("{scram:?}").contains("hunter2-secret"));
    }
}
