//! SCRAM against a scripted in-memory broker, for what a real broker does not do: a server that
//! does not know the password (a wrong final signature), an iteration count meant to make the
//! client spin, and silence in the middle of the exchange. The broker is reached through a
//! [`Dialer`] that hands out one end of an in-memory pipe: the transport seam as a test uses it.

#[path = "support/frames.rs"]
mod frames;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_wire::client::{
    BoxStream, Connection, ConnectionConfig, DialFuture, Dialer, Error, ErrorKind, Password, SaslConfig, SaslMechanism,
    SecurityConfig, SecurityProtocol,
};
use kafka_wire::codec::frame::split_frame;
use kafka_wire::codec::messages::{ApiVersionsRequest, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_wire::codec::messages::{SaslAuthenticateResponse, SaslHandshakeResponse};
use kafka_wire::codec::{ApiKey, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const PASSWORD: &str = "pencil-secret";

/// What the broker does after the client's first SCRAM message.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// Asks for this many iterations.
    Iterations(u32),
    /// Accepts the proof but signs with a key it made up.
    WrongSignature,
    /// Never answers the client's final message.
    SilentAfterFirst,
}

/// Hands out the client end of one in-memory pipe.
#[derive(Debug)]
struct Pipe(Mutex<Option<DuplexStream>>);

impl Dialer for Pipe {
    fn dial<'a>(&'a self, _addr: &'a str) -> DialFuture<'a> {
        let end = self.0.lock().unwrap().take();
        Box::pin(async move {
            end.map(|s| Box::new(s) as BoxStream)
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "the pipe was used"))
        })
    }
}

async fn broker(mut sock: DuplexStream, script: Script) {
    let mut buf = BytesMut::new();
    loop {
        let mut frame: Bytes = loop {
            match split_frame(&mut buf, 1 << 20) {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(_) => return,
            }
            if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        };
        let api = ApiKey(i16::from_be_bytes([frame[0], frame[1]]));
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let mut out = BytesMut::new();
        if api == ApiKey::API_VERSIONS {
            let apis = vec![
                frames::api::<ApiVersionsRequest>(),
                frames::api::<SaslHandshakeRequest>(),
                frames::api::<SaslAuthenticateRequest>(),
            ];
            frames::answer_api_versions(&mut frame, version, apis, &mut out).unwrap();
        } else if api == ApiKey::SASL_HANDSHAKE {
            let (header, request) = frames::decode::<SaslHandshakeRequest>(&mut frame, version).unwrap();
            // Like a broker that enables only SCRAM-SHA-256.
            let error_code = if &*request.mechanism == "SCRAM-SHA-256" {
                ErrorCode::NONE
            } else {
                ErrorCode::UNSUPPORTED_SASL_MECHANISM
            };
            let response =
                SaslHandshakeResponse { error_code, mechanisms: vec!["SCRAM-SHA-256".into()], ..Default::default() };
            frames::respond::<SaslHandshakeRequest>(&mut out, header.correlation_id, &response, version);
        } else if api == ApiKey::SASL_AUTHENTICATE {
            let (header, request) = frames::decode::<SaslAuthenticateRequest>(&mut frame, version).unwrap();
            let message = String::from_utf8(request.auth_bytes.to_vec()).unwrap();
            let reply = if let Some(nonce) = message.split(",r=").nth(1).filter(|_| message.starts_with("n,,")) {
                let iterations = match script {
                    Script::Iterations(n) => n,
                    _ => 4096,
                };
                format!("r={nonce}server-part,s=W22ZaJ0SNY7soEsUEjb6gQ==,i={iterations}")
            } else if let Script::SilentAfterFirst = script {
                continue;
            } else {
                "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_owned()
            };
            let response = SaslAuthenticateResponse { auth_bytes: Bytes::from(reply), ..Default::default() };
            frames::respond::<SaslAuthenticateRequest>(&mut out, header.correlation_id, &response, version);
        } else {
            return;
        }
        if sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Connects with SCRAM-SHA-256 to a broker following `script`; the whole attempt must end within
/// the request timeout and a margin.
async fn connect(script: Script) -> Error {
    connect_with(SaslMechanism::ScramSha256, script).await
}

async fn connect_with(mechanism: SaslMechanism, script: Script) -> Error {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(broker(server, script));
    let config = ConnectionConfig {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        security: SecurityConfig {
            protocol: SecurityProtocol::SaslPlaintext,
            sasl: SaslConfig {
                mechanism,
                username: Some("user".into()),
                password: Some(Password::new(PASSWORD)),
                ..Default::default()
            },
            dialer: Some(Arc::new(Pipe(Mutex::new(Some(client))))),
            ..Default::default()
        },
        ..Default::default()
    };
    let result = tokio::time::timeout(Duration::from_secs(20), Connection::connect("fake:9092", config))
        .await
        .unwrap_or_else(|_| panic!("{script:?}: connect neither succeeded nor failed within 20 s"));
    let error = result.expect_err("authenticated against a broker that should not be believed");
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(PASSWORD), "{script:?}: the error shows the password: {shown}");
    }
    error
}

#[tokio::test]
async fn a_broker_that_does_not_know_the_password_is_not_believed() {
    let error = connect(Script::WrongSignature).await;
    match &error {
        Error::Authentication { mechanism, reason, .. } => {
            assert_eq!(mechanism, "SCRAM-SHA-256");
            assert!(reason.contains("signature does not match"), "{reason}");
        }
        other => panic!("expected an authentication error, got {other:?}"),
    }
    assert_eq!(error.kind(), ErrorKind::Security);
}

#[tokio::test]
async fn an_iteration_count_meant_to_make_the_client_spin_is_refused() {
    for n in [u32::MAX, 1] {
        let error = connect(Script::Iterations(n)).await;
        assert!(
            matches!(&error, Error::Authentication { reason, .. } if reason.contains(&format!("asks for {n} iterations"))),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn a_broker_silent_in_the_middle_of_the_exchange_times_out() {
    let error = connect(Script::SilentAfterFirst).await;
    assert!(matches!(&error, Error::Timeout { what, .. } if what.contains("SaslAuthenticate")), "{error:?}");
}

#[tokio::test]
async fn a_mechanism_the_broker_does_not_enable_is_named_with_those_it_does() {
    let error = connect_with(SaslMechanism::ScramSha512, Script::WrongSignature).await;
    assert!(
        matches!(&error, Error::Authentication { mechanism, reason, .. }
            if mechanism == "SCRAM-SHA-512" && reason.contains("it offers SCRAM-SHA-256")),
        "{error:?}"
    );
}
