//! Issue #12, pattern 2: the websocket gateway against the real broker. Notifications reach only
//! their channel's sockets, in order; a reconnecting client resumes after the last id it saw,
//! from the gateway's history or from Kafka, on the same gateway or another; a client that stops
//! reading is dropped without holding up the others.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use kafka_wire::{Client, ClientConfig};
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, unique_topic};
use patterns::gateway::{EventId, Gateway, GatewayConfig, Publisher};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(60);

async fn topic(partitions: i32) -> String {
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.expect("connect");
    let topic = unique_topic("gateway");
    create_topic(&client, &topic, partitions, 1, &[]).await;
    client.close().await;
    topic
}

/// Starts `gateway` serving on a free loopback port.
async fn serve(gateway: &Gateway) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = gateway.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn connect(addr: SocketAddr, channel: &str, after: Option<&str>) -> Socket {
    let url = match after {
        Some(id) => format!("ws://{addr}/ws/{channel}?after={id}"),
        None => format!("ws://{addr}/ws/{channel}"),
    };
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect")
        .0
}

/// The next notification on `socket`: (id, data).
async fn next(socket: &mut Socket) -> (String, Value) {
    loop {
        let msg = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a notification within 60 s")
            .expect("the socket is open")
            .expect("a frame");
        match msg {
            Message::Text(text) => {
                let v: Value = serde_json::from_str(&text).expect("a JSON frame");
                return (v["id"].as_str().expect("an id").to_owned(), v["data"].clone());
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a notification, got {other:?}"),
        }
    }
}

/// The `n` fields of the next `count` notifications, and the id of the last.
async fn read_n(socket: &mut Socket, count: usize) -> (Vec<i64>, String) {
    let mut ns = Vec::new();
    let mut last = String::new();
    for _ in 0..count {
        let (id, data) = next(socket).await;
        ns.push(data["n"].as_i64().expect("n"));
        last = id;
    }
    (ns, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_only_their_own_channel_in_order() {
    let topic = topic(3).await;
    let gateway = Gateway::start(GatewayConfig::new(&bootstrap(), &topic)).await.expect("gateway");
    let addr = serve(&gateway).await;
    let mut a = connect(addr, "job-a", None).await;
    let mut b = connect(addr, "job-b", None).await;
    let mut a2 = connect(addr, "job-a", None).await;

    let publisher = Publisher::new(&bootstrap(), &topic).await.expect("publisher");
    for n in 0..50 {
        publisher.publish("job-a", &json!({"channel": "a", "n": n})).await.expect("publish a");
        publisher.publish("job-b", &json!({"channel": "b", "n": n})).await.expect("publish b");
    }
    let expected: Vec<i64> = (0..50).collect();
    for (name, socket) in [("a", &mut a), ("b", &mut b), ("a", &mut a2)] {
        let mut ns = Vec::new();
        for _ in 0..50 {
            let (_, data) = next(socket).await;
            assert_eq!(data["channel"], name, "a notification of another channel: {data}");
            ns.push(data["n"].as_i64().expect("n"));
        }
        assert_eq!(ns, expected, "channel {name}: every notification, in order");
    }
    publisher.close().await.expect("close");
    gateway.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_after_its_last_id_from_history_or_from_kafka_on_any_gateway() {
    let topic = topic(2).await;
    let first = Gateway::start(GatewayConfig::new(&bootstrap(), &topic)).await.expect("gateway");
    let first_addr = serve(&first).await;
    let publisher = Publisher::new(&bootstrap(), &topic).await.expect("publisher");
    let publish = |n: i64| {
        let publisher = publisher.clone();
        async move { publisher.publish("job-r", &json!({"n": n})).await.expect("publish") }
    };

    let mut socket = connect(first_addr, "job-r", None).await;
    for n in 0..5 {
        publish(n).await;
    }
    let (seen, last) = read_n(&mut socket, 5).await;
    assert_eq!(seen, [0, 1, 2, 3, 4]);
    socket.close(None).await.expect("close");
    for n in 5..10 {
        publish(n).await;
    }

    // The same gateway still has them in its history.
    let mut socket = connect(first_addr, "job-r", Some(&last)).await;
    let (seen, _) = read_n(&mut socket, 5).await;
    assert_eq!(seen, [5, 6, 7, 8, 9], "resumed from the history after {last}");
    publish(10).await;
    assert_eq!(read_n(&mut socket, 1).await.0, [10], "then the live ones");

    // A gateway started now never saw them, and one that keeps no history forgets them at once:
    // both read them again from Kafka, and go on live without a repeat.
    let second = Gateway::start(GatewayConfig::new(&bootstrap(), &topic).history_bytes(0)).await.expect("gateway");
    let second_addr = serve(&second).await;
    let mut resumed = connect(second_addr, "job-r", Some(&last)).await;
    let (seen, last_replayed) = read_n(&mut resumed, 6).await;
    assert_eq!(seen, [5, 6, 7, 8, 9, 10], "resumed from Kafka after {last}");
    let id = publish(11).await;
    assert_eq!(read_n(&mut socket, 1).await.0, [11]);
    let (live, live_id) = read_n(&mut resumed, 1).await;
    assert_eq!(live, [11], "the first live notification follows the replay, none repeated");
    assert_eq!(live_id, id.to_string());
    assert!(last_replayed.parse::<EventId>().expect("an id") < id);

    // On the history-less gateway, everything published after a client's id is read from Kafka,
    // including what arrived while it was connected elsewhere.
    resumed.close(None).await.expect("close");
    publish(12).await;
    let mut again = connect(second_addr, "job-r", Some(&live_id)).await;
    assert_eq!(read_n(&mut again, 1).await.0, [12]);

    publisher.close().await.expect("close");
    first.close().await;
    second.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_does_not_hold_up_the_others() {
    const COUNT: i64 = 2000;
    let topic = topic(1).await;
    let mut config = GatewayConfig::new(&bootstrap(), &topic).client_buffer(8);
    config.send_timeout = Duration::from_secs(2);
    let gateway = Gateway::start(config).await.expect("gateway");
    let addr = serve(&gateway).await;
    let mut stalled = connect(addr, "job-s", None).await;
    let mut reader = connect(addr, "job-s", None).await;
    assert_eq!(gateway.connections(), 2);

    // About 64 MB: more than the socket buffers between the gateway and a client that does not
    // read (a loopback socket's receive buffer grows to 32 MiB here, `tcp_rmem`; 10 MB fitted),
    // so its queue fills.
    let filler = "x".repeat(32 * 1024);
    let publisher = Publisher::new(&bootstrap(), &topic).await.expect("publisher");
    let publishing = tokio::spawn({
        let publisher = publisher.clone();
        async move {
            for n in 0..COUNT {
                publisher.publish("job-s", &json!({"n": n, "filler": filler})).await.expect("publish");
            }
        }
    });
    let (seen, _) = read_n(&mut reader, COUNT as usize).await;
    assert_eq!(seen, (0..COUNT).collect::<Vec<_>>(), "the reading client got everything, in order");
    publishing.await.expect("published");

    // The stalled client was dropped: it gets what was already on its way, then the gateway
    // closes it (1013, try again later) or, if even the close frame did not fit, the connection.
    let mut received = 0;
    let ending = loop {
        match tokio::time::timeout(WAIT, stalled.next()).await.expect("the stalled socket ends within 60 s") {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break None,
        }
    };
    assert!(received < COUNT, "the stalled client was dropped before it had everything ({received})");
    assert!(matches!(ending, None | Some(CloseCode::Again)), "closed with {ending:?}");
    publisher.close().await.expect("close");
    gateway.close().await;
}

/// A client that keeps up is never dropped for a burst: notifications published together reach
/// the gateway in one poll or several back to back, more of them than the socket's buffer, and
/// the gateway judges the client only once it has stayed over its buffer for the grace. It used
/// to drop it at the second poll of a burst, before its socket task had run at all, which a
/// loaded machine made happen (CI, 2026-12-06) to a client that reads as fast as it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_bigger_than_the_client_buffer_does_not_drop_a_client_that_keeps_up() {
    const COUNT: i64 = 200;
    let topic = topic(1).await;
    let gateway = Gateway::start(GatewayConfig::new(&bootstrap(), &topic).client_buffer(4)).await.expect("gateway");
    let addr = serve(&gateway).await;
    let mut reader = connect(addr, "job-burst", None).await;
    let publisher = Publisher::new(&bootstrap(), &topic).await.expect("publisher");
    let published = futures_util::future::join_all((0..COUNT).map(|n| {
        let publisher = publisher.clone();
        async move { (publisher.publish("job-burst", &json!({"n": n})).await.expect("publish").offset, n) }
    }))
    .await;
    // Sent concurrently: the topic's order is the one to expect.
    let mut published = published;
    published.sort();
    let expected: Vec<i64> = published.iter().map(|(_, n)| *n).collect();
    let (seen, _) = read_n(&mut reader, COUNT as usize).await;
    assert_eq!(seen, expected, "every notification of the burst, in the topic's order");
    assert_eq!(gateway.connections(), 1, "the reader is still connected");
    publisher.close().await.expect("close");
    gateway.close().await;
}
