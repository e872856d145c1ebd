//! Connection failures a real broker does not produce on demand, against a scripted in-process
//! peer on 127.0.0.1: oversized frames, connections closed mid-request, unknown correlation
//! ids, missing APIs, silence past the request timeout, and unreachable addresses.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_wire::client::{Client, ClientConfig, Connection, ConnectionConfig, Error};
use kafka_wire::codec::frame::split_frame;
use kafka_wire::codec::header::{RequestHeader, ResponseHeader};
use kafka_wire::codec::messages::api_versions::ApiVersion;
use kafka_wire::codec::messages::{ApiVersionsResponse, Message, MetadataRequest, MetadataResponse};
use kafka_wire::codec::{ApiKey, DecodeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted peer does with the request that follows the ApiVersions handshake.
#[derive(Clone, Copy)]
enum Then {
    /// Answers with a frame that claims `size` bytes.
    ClaimFrameOf(i32),
    /// Closes the socket without answering.
    Close,
    /// Answers with a correlation id nobody asked for.
    WrongCorrelationId,
    /// Never answers.
    Silence,
}

fn config() -> ConnectionConfig {
    ConnectionConfig {
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(2),
        max_frame_size: 1024 * 1024,
        ..ConnectionConfig::default()
    }
}

async fn read_request(sock: &mut TcpStream, buf: &mut BytesMut) -> Option<(RequestHeader, Bytes)> {
    loop {
        if let Some(mut frame) = split_frame(buf, 1 << 20).ok()? {
            let header = RequestHeader::decode(&mut frame, 1).ok()?;
            return Some((header, frame));
        }
        if sock.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn response_frame(correlation_id: i32, body: &impl Message, version: i16, header_version: i16) -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0; 4]);
    ResponseHeader { correlation_id, ..Default::default() }.encode(&mut out, header_version).unwrap();
    body.encode(&mut out, version).unwrap();
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    out
}

/// Starts a peer that answers ApiVersions (offering `apis`, each at versions 0..=12), then
/// treats the next request as `then` says.
async fn scripted_peer(apis: &'static [ApiKey], then: Then) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let (header, _) = read_request(&mut sock, &mut buf).await.unwrap();
        assert_eq!(header.api_key, ApiKey::API_VERSIONS);
        let response = ApiVersionsResponse {
            api_keys: apis
                .iter()
                .map(|k| ApiVersion { api_key: k.0, min_version: 0, max_version: 12, ..Default::default() })
                .collect(),
            ..Default::default()
        };
        let frame = response_frame(header.correlation_id, &response, header.api_version, 0);
        sock.write_all(&frame).await.unwrap();
        let Some((header, _)) = read_request(&mut sock, &mut buf).await else {
            return;
        };
        match then {
            Then::ClaimFrameOf(size) => {
                sock.write_all(&size.to_be_bytes()).await.unwrap();
                sock.write_all(&header.correlation_id.to_be_bytes()).await.unwrap();
                let _ = sock.read(&mut [0u8; 1]).await;
            }
            Then::Close => drop(sock),
            Then::WrongCorrelationId => {
                let frame =
                    response_frame(header.correlation_id + 1000, &MetadataResponse::default(), header.api_version, 1);
                sock.write_all(&frame).await.unwrap();
                let _ = sock.read(&mut [0u8; 1]).await;
            }
            Then::Silence => {
                let _ = sock.read(&mut [0u8; 1]).await;
            }
        }
    });
    addr
}

const BOTH: &[ApiKey] = &[ApiKey::API_VERSIONS, ApiKey::METADATA];

#[tokio::test]
async fn a_frame_above_the_maximum_is_refused() {
    let addr = scripted_peer(BOTH, Then::ClaimFrameOf(64 * 1024 * 1024)).await;
    let conn = Connection::connect(&addr, config()).await.unwrap();
    let err = conn.send(&MetadataRequest::default()).await.unwrap_err();
    assert!(
        matches!(err, Error::Decode { source: DecodeError::FrameTooLarge { size: 67108864, max: 1048576 }, .. }),
        "{err:?}"
    );
    assert!(conn.is_closed());
    // Later requests fail at once with the same cause.
    let again = conn.send(&MetadataRequest::default()).await.unwrap_err();
    assert!(matches!(again, Error::Decode { .. }), "{again:?}");
}

#[tokio::test]
async fn a_negative_frame_size_is_refused() {
    let addr = scripted_peer(BOTH, Then::ClaimFrameOf(-5)).await;
    let conn = Connection::connect(&addr, config()).await.unwrap();
    let err = conn.send(&MetadataRequest::default()).await.unwrap_err();
    assert!(matches!(err, Error::Decode { source: DecodeError::InvalidLength { .. }, .. }), "{err:?}");
}

#[tokio::test]
async fn a_connection_closed_mid_request_fails_the_request() {
    let addr = scripted_peer(BOTH, Then::Close).await;
    let conn = Connection::connect(&addr, config()).await.unwrap();
    let err = conn.send(&MetadataRequest::default()).await.unwrap_err();
    assert!(matches!(err, Error::Closed { .. } | Error::Io { .. }), "{err:?}");
    assert!(err.is_retriable());
}

#[tokio::test]
async fn a_response_nobody_asked_for_is_a_protocol_violation() {
    let addr = scripted_peer(BOTH, Then::WrongCorrelationId).await;
    let conn = Connection::connect(&addr, config()).await.unwrap();
    let err = conn.send(&MetadataRequest::default()).await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
}

#[tokio::test]
async fn silence_past_the_request_timeout_is_a_timeout() {
    let addr = scripted_peer(BOTH, Then::Silence).await;
    let conn = Connection::connect(&addr, config()).await.unwrap();
    let err = conn.send(&MetadataRequest::default()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { after, .. } if after == Duration::from_millis(500)), "{err:?}");
    // A broker that leaves a request unanswered past the timeout is taken for hung: the
    // connection is closed, so that callers reconnect (or look elsewhere) instead of queueing
    // behind it.
    assert!(conn.is_closed());
    let again = conn.send(&MetadataRequest::default()).await.unwrap_err();
    assert!(matches!(again, Error::Closed { .. }), "{again:?}");
}

#[tokio::test]
async fn an_api_the_broker_lacks_is_refused_before_sending() {
    let addr = scripted_peer(&[ApiKey::API_VERSIONS], Then::Silence).await;
    let conn = Connection::connect(&addr, config()).await.unwrap();
    let err = conn.send(&MetadataRequest::default()).await.unwrap_err();
    assert!(matches!(err, Error::UnsupportedVersion { api: ApiKey::METADATA, broker: None, .. }), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_bootstrap_list_names_every_address_tried() {
    // Bind and drop listeners so that the ports are (almost certainly) closed.
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        addrs.push(l.local_addr().unwrap().to_string());
    }
    let mut cfg = ClientConfig::new(&addrs.join(","));
    cfg.connection = config();
    let err = Client::connect(cfg).await.unwrap_err();
    match &err {
        Error::Unreachable { tried, last } => {
            assert_eq!(tried, &addrs);
            assert!(matches!(**last, Error::Io { .. }), "{last:?}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(err.to_string().contains(&addrs[0]));
}

#[tokio::test]
async fn an_empty_bootstrap_list_is_a_configuration_error() {
    let err = Client::connect(ClientConfig::new(" , ")).await.unwrap_err();
    assert!(matches!(err, Error::Config { ref property, .. } if property == "bootstrap.servers"), "{err:?}");
}

#[tokio::test]
async fn a_request_its_version_cannot_carry_is_misuse_and_is_not_sent() {
    let addr = scripted_peer(BOTH, Then::Silence).await;
    let conn = Connection::connect(&addr, config()).await.unwrap();
    // Metadata carries include_cluster_authorized_operations only in versions 8-10.
    let request = MetadataRequest { include_cluster_authorized_operations: true, ..Default::default() };
    let err = conn.send_version(&request, 12).await.unwrap_err();
    match &err {
        Error::Misuse { operation, reason } => {
            assert!(operation.contains("Metadata v12"), "{operation}");
            assert!(reason.contains("MetadataRequest.include_cluster_authorized_operations"), "{reason}");
            assert!(reason.contains("version 12"), "{reason}");
        }
        other => panic!("expected Misuse, got {other:?}"),
    }
    // A string longer than its length prefix allows is refused the same way.
    let long = "t".repeat(40_000);
    let request = MetadataRequest {
        topics: Some(vec![kafka_wire::codec::messages::metadata::MetadataRequestTopic {
            name: Some(long.as_str().into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let err = conn.send_version(&request, 12).await.unwrap_err();
    assert!(matches!(&err, Error::Misuse { reason, .. } if reason.contains("MetadataRequestTopic.name")), "{err:?}");
    // Nothing was queued: the connection is still usable and no response is awaited.
    assert!(!conn.is_closed());
    assert_eq!(conn.in_flight(), 0);
}
