//! The connection pool against a broker that accepts connections but never answers (a stopped
//! process, a black-holed host): requests to other brokers and metadata refreshes must not wait
//! for its connect. A real broker can be stopped (see the blocked-broker test of `tests/`), but
//! only a fake one lets the test see exactly when the stalled connect started and that it is
//! still pending when the healthy requests complete.

#[path = "support/frames.rs"]
mod frames;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use frames::{answer_api_versions, api, decode, respond};
use kafka_wire::client::{Client, ClientConfig, ConnectionConfig};
use kafka_wire::codec::frame::split_frame;
use kafka_wire::codec::header::RequestHeader;
use kafka_wire::codec::messages::metadata::MetadataResponseBroker;
use kafka_wire::codec::messages::{ApiVersionsRequest, MetadataRequest, MetadataResponse};
use kafka_wire::codec::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const HEALTHY: i32 = 1;
const STALLED: i32 = 2;

/// How long the test waits for anything that should happen; far below the stalled connect's
/// request timeout, so that waiting it out fails the test instead of passing slowly.
const WAIT: Duration = Duration::from_secs(30);

/// A broker that answers ApiVersions and Metadata on every connection; its Metadata names
/// itself as node `id` and the `others` (node id, port).
async fn healthy_broker(id: i32, others: Vec<(i32, u16)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut brokers = others;
    brokers.push((id, port));
    brokers.sort();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve(sock, brokers.clone(), true));
        }
    });
    format!("127.0.0.1:{port}")
}

/// Serves one connection: ApiVersions always, Metadata (naming `brokers`) only if `answer`.
/// Returns when the connection closes; without `answer`, it reads requests and says nothing.
async fn serve(mut sock: TcpStream, brokers: Vec<(i32, u16)>, answer: bool) {
    let mut buf = BytesMut::new();
    loop {
        let frame = loop {
            match split_frame(&mut buf, 1 << 20) {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(_) => return,
            }
            if !matches!(sock.read_buf(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
        };
        let Ok(header) = RequestHeader::decode(&mut frame.clone(), 1) else { return };
        let mut out = BytesMut::new();
        match header.api_key {
            ApiKey::API_VERSIONS => {
                let apis = vec![api::<ApiVersionsRequest>(), api::<MetadataRequest>()];
                if answer_api_versions(&mut frame.clone(), header.api_version, apis, &mut out).is_none() {
                    return;
                }
            }
            ApiKey::METADATA if answer => {
                let Some((h, _)) = decode::<MetadataRequest>(&mut frame.clone(), header.api_version) else { return };
                let body = MetadataResponse {
                    brokers: brokers
                        .iter()
                        .map(|&(node_id, port)| MetadataResponseBroker {
                            node_id,
                            host: "127.0.0.1".into(),
                            port: i32::from(port),
                            ..Default::default()
                        })
                        .collect(),
                    controller_id: brokers[0].0,
                    ..Default::default()
                };
                respond::<MetadataRequest>(&mut out, h.correlation_id, &body, header.api_version);
            }
            ApiKey::METADATA => continue,
            _ => return,
        }
        if sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// A listener that accepts connections, reads the ApiVersions request, reports it and never
/// answers. Returns its port, the number of connections it accepted and the reports.
async fn stalled_broker() -> (u16, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                while !matches!(split_frame(&mut buf, 1 << 20), Ok(Some(_))) {
                    if !matches!(sock.read_buf(&mut buf).await, Ok(n) if n > 0) {
                        return;
                    }
                }
                let _ = tx.send(());
                // Hold the socket open, unanswered, until the client closes it.
                let _ = sock.read(&mut [0u8; 1]).await;
            });
        }
    });
    (port, accepted, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_answers_its_handshake_does_not_block_other_brokers_or_metadata() {
    let (stalled_port, accepted, mut handshakes) = stalled_broker().await;
    let bootstrap = healthy_broker(HEALTHY, vec![(STALLED, stalled_port)]).await;
    let mut config = ClientConfig::new(&bootstrap);
    // The stalled connect gives up only after this long, far beyond the test's waits.
    config.connection = ConnectionConfig { request_timeout: Duration::from_secs(600), ..ConnectionConfig::default() };
    let client = Client::connect(config).await.expect("connect to the healthy broker");
    assert_eq!(client.brokers().len(), 2);

    // Two callers want the stalled broker: they share one connect.
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.broker(STALLED).await }
    });
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.broker(STALLED).await }
    });
    tokio::time::timeout(WAIT, handshakes.recv())
        .await
        .expect("the stalled broker never received the ApiVersions request")
        .expect("stalled broker task ended");

    // With the connect to node 2 waiting for its ApiVersions answer, a new connection to node 1,
    // a request on it, and metadata refreshes all complete.
    let healthy = tokio::time::timeout(WAIT, client.broker(HEALTHY))
        .await
        .expect("connecting to the healthy broker waited for the stalled one")
        .expect("connect to the healthy broker");
    tokio::time::timeout(WAIT, healthy.send(&MetadataRequest::default()))
        .await
        .expect("a request to the healthy broker waited for the stalled one")
        .expect("metadata from the healthy broker");
    for _ in 0..3 {
        tokio::time::timeout(WAIT, client.metadata(None))
            .await
            .expect("a metadata refresh waited for the stalled broker")
            .expect("metadata refresh");
    }
    tokio::time::timeout(WAIT, client.send(HEALTHY, &MetadataRequest::default()))
        .await
        .expect("Client::send to the healthy broker waited for the stalled one")
        .expect("metadata from node 1");

    // All of that happened while the stalled connect was still pending.
    assert!(!first.is_finished() && !second.is_finished(), "the stalled connect ended early");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "concurrent callers for one broker opened separate connections");
    first.abort();
    second.abort();
}

/// A broker that completes the handshake and then never answers (a process stopped after
/// clients connected to it). Returns its port.
async fn silent_after_handshake() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve(sock, Vec::new(), false));
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_avoids_an_open_connection_whose_requests_go_unanswered() {
    // Node 1 comes first in the pool, so a pool that takes the first open connection picks it.
    let silent_port = silent_after_handshake().await;
    let bootstrap = healthy_broker(2, vec![(1, silent_port)]).await;
    let mut config = ClientConfig::new(&bootstrap);
    // Nothing here waits for a request timeout.
    config.connection = ConnectionConfig { request_timeout: Duration::from_secs(600), ..ConnectionConfig::default() };
    let client = Client::connect(config).await.expect("connect to the healthy broker");
    let silent = tokio::time::timeout(WAIT, client.broker(1)).await.expect("handshake in time").expect("connect");
    tokio::time::timeout(WAIT, client.broker(2)).await.expect("handshake in time").expect("connect");

    // A request to node 1 is waiting for an answer that does not come.
    let unanswered = silent.submit(&MetadataRequest::default(), 12).expect("queued");
    assert_eq!(silent.in_flight(), 1);

    // Requests for any broker go to node 2, which answers.
    for _ in 0..3 {
        let md = tokio::time::timeout(WAIT, client.metadata(None))
            .await
            .expect("metadata waited behind the unanswered request")
            .expect("metadata from the broker that answers");
        assert_eq!(md.brokers.len(), 2);
    }
    drop(unanswered);
    // A request whose caller gave up still counts: its answer may never come.
    assert_eq!(silent.in_flight(), 1);
    for _ in 0..3 {
        tokio::time::timeout(WAIT, client.metadata(None))
            .await
            .expect("metadata waited behind the abandoned request")
            .expect("metadata from the broker that answers");
    }
}
