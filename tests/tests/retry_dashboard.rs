//! The operator's dashboard (`retry::dashboard`) against the running broker: a consumer blocked
//! on a record, the dashboard on a loopback port, and
//!
//! - headless Chromium (Debian's `chromium`, or `$CHROMIUM`) driven over the DevTools protocol:
//!   the page shows the blocked partition and the stuck offset, its skip button unblocks it, and
//!   the page then shows the partition no longer blocked;
//! - plain HTTP: the status document and its live events, commands refused without a JSON
//!   content type or from another origin, a skip stamped with the operator, redrive with and
//!   without a dry run.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_wire::client::{Admin, ClientConfig, OffsetReset, OffsetSpec};
use kafka_wire::{Client, ConsumerConfig, ConsumerRecord, Producer, ProducerConfig, ProducerRecord};
use kafka_wire_tests::chromium::Chromium;
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, unique_topic, wait_until};
use retry::dashboard::Dashboard;
use retry::{Failed, RetryConfig, RetryControl, RetryPolicy, RetryingConsumer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const BOUND: Duration = Duration::from_secs(60);

// ---- A consumer with a blocked partition ----------------------------------------------------

/// Keys the handler handled successfully, in order.
#[derive(Clone, Default)]
struct Handled(Arc<Mutex<Vec<String>>>);

impl Handled {
    fn contains(&self, key: &str) -> bool {
        self.0.lock().unwrap().iter().any(|k| k == key)
    }
}

/// A source topic (one partition) and a running retrying consumer whose handler fails every
/// record whose key starts with `stuck`.
struct Scene {
    topic: String,
    group: String,
    handled: Handled,
    stop: oneshot::Sender<()>,
    running: tokio::task::JoinHandle<kafka_wire::Result<()>>,
}

impl Scene {
    async fn start(prefix: &str, policy: RetryPolicy, keys: &[&str]) -> Self {
        let topic = unique_topic(prefix);
        let group = unique_topic(&format!("{prefix}-group"));
        let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
        create_topic(&client, &topic, 1, 1, &[]).await;
        let consumer = ConsumerConfig::new(&bootstrap())
            .group_id(&group)
            .auto_offset_reset(OffsetReset::Earliest)
            .session_timeout(Duration::from_secs(6))
            .heartbeat_interval(Duration::from_millis(500));
        let handled = Handled::default();
        let seen = handled.clone();
        let retrying = RetryingConsumer::new(RetryConfig::new(consumer, &topic, policy), move |r: ConsumerRecord| {
            let seen = seen.clone();
            async move {
                if r.key.as_deref().is_some_and(|k| k.starts_with(b"stuck")) {
                    return Err(Failed::from("the provider is down"));
                }
                seen.0.lock().unwrap().push(String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into());
                Ok(())
            }
        })
        .await
        .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = tokio::spawn(retrying.run_until(async move {
            let _ = stopped.await;
        }));
        let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
        for key in keys {
            let record = ProducerRecord::new(topic.as_str(), format!("value of {key}")).key(key.to_string());
            producer.send(record).await.unwrap().await.unwrap();
        }
        producer.close().await.unwrap();
        Self { topic, group, handled, stop, running }
    }

    /// `ok-0`, `stuck-1`, `ok-2`, retried in place for ever: blocked at offset 1 once this
    /// returns.
    async fn blocked(prefix: &str) -> Self {
        let endless = RetryPolicy::exponential(Duration::from_millis(20), 2.0, Duration::from_millis(200), None);
        let scene = Self::start(prefix, endless, &["ok-0", "stuck-1", "ok-2"]).await;
        let control = scene.control().await;
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let state = control.control_state().await.unwrap();
            if state.blocked.contains_key(&(0, 1)) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "offset 1 never reported blocked: {state:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(scene.handled.contains("ok-0") && !scene.handled.contains("ok-2"));
        scene
    }

    async fn control(&self) -> RetryControl {
        RetryControl::connect(&bootstrap(), &self.topic, &self.group).await.unwrap()
    }

    async fn committed(&self) -> Option<i64> {
        let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.unwrap();
        admin.list_group_offsets(&self.group, Some(&[self.topic.as_str()])).await.unwrap().first().map(|o| o.offset)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(BOUND, self.running).await.expect("the consumer did not stop").unwrap().unwrap();
    }
}

// ---- The dashboard --------------------------------------------------------------------------

struct Served {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn start(topic: &str, group: &str, operator: &str) -> Self {
        let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
        let dashboard = Dashboard::new(client, [(topic, group)]).unwrap().operator(operator);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(dashboard.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self { addr, stop, serving }
    }

    /// Stops it; it must return even with live-update streams open.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(BOUND, self.serving)
            .await
            .expect("the dashboard did not stop with a live-update stream open")
            .unwrap()
            .unwrap();
    }

    /// `GET /api/status` until `done` holds for the target's status; returns it.
    async fn status_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let (code, body) = http(self.addr, "GET", "/api/status", &[], "").await;
            assert_eq!(code, 200, "{body}");
            let status: Value = serde_json::from_str(&body).unwrap();
            let target = status["targets"][0].clone();
            if done(&target) {
                return target;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: not within {BOUND:?}; last status {target}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One HTTP/1.1 request (the connection closed after it): the status code and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
            request.push_str(&format!("Host: {addr}\r\n"));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(BOUND, exchange).await.unwrap_or_else(|_| panic!("{method} {path}: no answer"));
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{method} {path}: no header end: {text}"));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad status line: {head}"));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    (code, body)
}

/// The payload of a complete chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("bad chunk size in {body}"));
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// The first `status` event of `GET /api/events`, parsed.
async fn first_event(addr: SocketAddr) -> Value {
    let read = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the event stream closed: {}", String::from_utf8_lossy(&raw));
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            if let Some(at) = text.find("event: status\ndata: ") {
                let data = &text[at + "event: status\ndata: ".len()..];
                if let Some((json, _)) = data.split_once('\n') {
                    assert!(text.to_ascii_lowercase().contains("content-type: text/event-stream"), "{text}");
                    return serde_json::from_str::<Value>(json).unwrap();
                }
            }
        }
    };
    tokio::time::timeout(BOUND, read).await.expect("no status event")
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

// ---- The tests ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_shows_the_blocked_partition_and_its_skip_button_unblocks_it() {
    let mut chromium = Chromium::start();
    let scene = Scene::blocked("dashboard-browser").await;
    let served = Served::start(&scene.topic, &scene.group, "dashboard-test").await;
    let mut cdp = chromium.devtools().await;
    let page = cdp.open(&format!("http://{}/", served.addr)).await;

    let section = format!("section.target[data-topic=\"{}\"][data-group=\"{}\"]", scene.topic, scene.group);
    let row = format!("{section} tr.blocked[data-partition=\"0\"][data-offset=\"1\"]");
    let shown = cdp
        .wait_for(&page, "the blocked partition and its key", &format!("document.querySelector('{row} td.key')?.textContent === 'stuck-1' && document.querySelector('{row}').innerText"))
        .await;
    let shown = shown.as_str().unwrap();
    assert!(shown.contains("the provider is down"), "the last error is not shown: {shown}");

    // The operator names themself on the page and clicks Skip.
    cdp.eval(&page, "document.getElementById('operator').value = 'carol'; true").await;
    let clicked = cdp.eval(&page, &format!("(() => {{ const b = document.querySelector('{row} button.skip'); b.click(); return b.textContent; }})()")).await;
    assert_eq!(clicked, json!("Skipping…"));

    // The consumer goes past the record: the next one is handled and the commit passes it.
    wait_until("the handler saw the record after the skipped one", BOUND, || scene.handled.contains("ok-2")).await;
    let deadline = tokio::time::Instant::now() + BOUND;
    while scene.committed().await.unwrap_or(0) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the committed offset never passed the skipped record");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The page, live, shows the partition no longer blocked and the record in the queue.
    let queues = cdp
        .wait_for(
            &page,
            "the page shows the partition no longer blocked",
            &format!(
                "!document.querySelector('{section} tr.blocked') && !document.querySelector('{section} p.none').hidden \
                 && document.querySelector('{section} .queues').innerText.includes('dead-letter queue: 1 record') \
                 && document.querySelector('{section} .skips').innerText"
            ),
        )
        .await;
    assert!(queues.as_str().unwrap().contains("0:1 by carol"), "the skip is not listed: {queues}");
    let skip = scene.control().await.control_state().await.unwrap().skips.remove(&(0, 1)).expect("no skip written");
    assert_eq!(skip.by, "carol", "the skip is not stamped with the page's operator");

    served.stop().await;
    scene.stop().await;
    drop(chromium);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_and_its_live_events_show_the_blocked_record_with_its_key_error_and_since() {
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let scene = Scene::blocked("dashboard-status").await;
    let served = Served::start(&scene.topic, &scene.group, "ops").await;
    let target = served
        .status_until("the blocked record's key and the queues read", |t| {
            t["blocked"][0]["key"] == "stuck-1" && t["error"].is_null()
        })
        .await;
    assert_eq!(target["topic"], json!(scene.topic));
    assert_eq!(target["group"], json!(scene.group));
    assert_eq!(target["error"], Value::Null, "{target}");
    let blocked = target["blocked"].as_array().unwrap();
    assert_eq!(blocked.len(), 1, "{target}");
    let b = &blocked[0];
    assert_eq!((b["partition"].as_i64(), b["offset"].as_i64()), (Some(0), Some(1)));
    assert!(b["error"].as_str().unwrap().contains("the provider is down"), "{b}");
    let since = b["since_ms"].as_u64().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(before <= since && since <= now, "blocked since {since}, not between {before} and {now}");
    assert!(b["attempts"].as_u64().unwrap() >= 1);
    assert_eq!(b["skip"], Value::Null);
    assert_eq!(target["tiers"], json!([]), "a blocking-only policy has no tier");
    assert_eq!(target["dead_letters"], json!(0));
    assert_eq!((target["modes"].clone(), target["skips"].clone()), (json!([]), json!([])));

    let event = first_event(served.addr).await;
    assert_eq!(event["targets"][0]["blocked"][0]["offset"], json!(1), "{event}");
    assert_eq!(event["targets"][0]["topic"], json!(scene.topic));

    let (code, page) = http(served.addr, "GET", "/", &[], "").await;
    assert_eq!(code, 200);
    assert!(page.contains("<script src=\"/app.js\"") && !page.contains("http"), "the page loads from elsewhere");
    served.stop().await;
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_without_a_json_content_type_or_from_another_origin_are_refused_and_write_nothing() {
    let topic = unique_topic("dashboard-refused");
    let group = unique_topic("dashboard-refused-group");
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    create_topic(&client, &topic, 1, 1, &[]).await;
    let served = Served::start(&topic, &group, "ops").await;
    let skip = json!({ "topic": topic, "group": group, "partition": 0, "offset": 1 }).to_string();
    let addr = served.addr;

    let form = http(addr, "POST", "/api/skip", &[("Content-Type", "application/x-www-form-urlencoded")], &skip).await;
    assert_eq!(form.0, 415, "{form:?}");
    assert!(form.1.contains("application/json"), "the refusal does not say why: {}", form.1);
    assert_eq!(http(addr, "POST", "/api/skip", &[("Content-Type", "text/plain")], &skip).await.0, 415);
    assert_eq!(http(addr, "POST", "/api/skip", &[], &skip).await.0, 415);
    let foreign = http(addr, "POST", "/api/skip", &[JSON, ("Origin", "http://evil.example")], &skip).await;
    assert_eq!(foreign.0, 403, "{foreign:?}");
    let rebound = http(addr, "POST", "/api/skip", &[JSON, ("Host", "evil.example")], &skip).await;
    assert_eq!(rebound.0, 403, "a request for another host name was answered: {rebound:?}");
    assert_eq!(http(addr, "GET", "/api/status", &[("Host", "evil.example")], "").await.0, 403);
    assert_eq!(http(addr, "GET", "/api/skip", &[], "").await.0, 405);
    let bad = http(addr, "POST", "/api/skip", &[JSON], "{\"topic\":").await;
    assert_eq!(bad.0, 400, "{bad:?}");
    let negative = json!({ "topic": topic, "group": group, "partition": 0, "offset": -1 }).to_string();
    assert_eq!(http(addr, "POST", "/api/skip", &[JSON], &negative).await.0, 400);
    let elsewhere = json!({ "topic": topic, "group": "another", "partition": 0, "offset": 1 }).to_string();
    let unknown = http(addr, "POST", "/api/skip", &[JSON], &elsewhere).await;
    assert_eq!(unknown.0, 404, "{unknown:?}");
    let control = RetryControl::connect(&bootstrap(), &topic, &group).await.unwrap();
    let state = control.control_state().await.unwrap();
    assert!(state.skips.is_empty() && state.modes.is_empty(), "a refused command was written: {state:?}");

    // The same command, as JSON from the dashboard's own origin, goes through.
    let own = format!("http://{addr}");
    let accepted = http(addr, "POST", "/api/skip", &[JSON, ("Origin", own.as_str())], &skip).await;
    assert_eq!(accepted.0, 200, "{accepted:?}");
    assert_eq!(control.control_state().await.unwrap().skips.len(), 1);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skip_through_the_api_writes_the_control_command_stamped_with_the_operator() {
    let scene = Scene::blocked("dashboard-skip").await;
    let served = Served::start(&scene.topic, &scene.group, "ops").await;
    let skip = json!({ "topic": scene.topic, "group": scene.group, "partition": 0, "offset": 1 }).to_string();
    let (code, body) = http(served.addr, "POST", "/api/skip", &[JSON, ("X-Operator", "dave")], &skip).await;
    assert_eq!(code, 200, "{body}");
    let issued: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(issued["issued"]["command"], "skip");
    assert_eq!(issued["issued"]["by"], "dave");
    assert_eq!((issued["issued"]["partition"].as_i64(), issued["issued"]["offset"].as_i64()), (Some(0), Some(1)));

    let control = scene.control().await;
    let written = control.control_state().await.unwrap().skips.remove(&(0, 1)).expect("no skip on the control topic");
    assert_eq!(written.by, "dave");
    wait_until("the partition moved past the skipped record", BOUND, || scene.handled.contains("ok-2")).await;
    served.status_until("the record no longer blocked", |t| t["blocked"] == json!([]) && t["dead_letters"] == 1).await;

    // Without X-Operator, the dashboard's own name; unblock and block of the topic.
    let topic_wide = json!({ "topic": scene.topic, "group": scene.group }).to_string();
    let (code, body) = http(served.addr, "POST", "/api/unblock", &[JSON], &topic_wide).await;
    assert_eq!(code, 200, "{body}");
    let state = control.control_state().await.unwrap();
    assert_eq!(state.modes.get(&None).map(|(_, s)| s.by.as_str()), Some("ops"));
    assert!(!state.is_blocking(0));
    let one = json!({ "topic": scene.topic, "group": scene.group, "partition": 0 }).to_string();
    assert_eq!(http(served.addr, "POST", "/api/block", &[JSON], &one).await.0, 200);
    assert!(control.control_state().await.unwrap().is_blocking(0));
    served.stop().await;
    scene.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_through_the_api_answers_what_would_be_and_what_was_redriven() {
    let scene =
        Scene::start("dashboard-redrive", RetryPolicy::dead_letter_only(), &["stuck-a", "ok-b", "stuck-c"]).await;
    let served = Served::start(&scene.topic, &scene.group, "ops").await;
    served.status_until("two dead letters", |t| t["dead_letters"] == 2).await;
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.unwrap();
    let source_end =
        || async { admin.list_offsets(&[(scene.topic.as_str(), 0)], OffsetSpec::Latest).await.unwrap()[0].offset };
    let end_before = source_end().await;

    let no_dry_run = json!({ "topic": scene.topic, "group": scene.group }).to_string();
    let refused = http(served.addr, "POST", "/api/redrive", &[JSON], &no_dry_run).await;
    assert_eq!(refused.0, 400, "a redrive without dry_run was accepted: {refused:?}");

    let only_c = json!({ "topic": scene.topic, "group": scene.group, "dry_run": true, "key": "stuck-c" }).to_string();
    let (code, body) = http(served.addr, "POST", "/api/redrive", &[JSON], &only_c).await;
    assert_eq!(code, 200, "{body}");
    let planned: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(planned["dry_run"], true);
    let planned = planned["redriven"].as_array().unwrap().clone();
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0]["key"], "stuck-c");
    assert_eq!(planned[0]["to"], json!(scene.topic));
    assert_eq!(planned[0]["original"]["offset"], 2);
    assert_eq!(source_end().await, end_before, "a dry run wrote to the source topic");

    let all = json!({ "topic": scene.topic, "group": scene.group, "dry_run": false }).to_string();
    let (code, body) = http(served.addr, "POST", "/api/redrive", &[JSON, ("X-Operator", "erin")], &all).await;
    assert_eq!(code, 200, "{body}");
    let done: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["redriven"].as_array().unwrap().len(), 2, "{done}");
    assert_eq!(source_end().await, end_before + 2, "the redriven records are not in the source topic");
    let marks = scene.control().await.control_state().await.unwrap().redriven;
    assert!(marks.len() == 2 && marks.values().all(|m| m.by == "erin"), "{marks:?}");
    // The redriven records fail again and come back as new dead letters: those may be
    // redriven, the first two not again.
    let (_, again) = http(served.addr, "POST", "/api/redrive", &[JSON], &all).await;
    let again: Value = serde_json::from_str(&again).unwrap();
    let first_two = [json!({ "partition": 0, "offset": 0 }), json!({ "partition": 0, "offset": 1 })];
    assert!(
        again["redriven"].as_array().unwrap().iter().all(|r| !first_two.contains(&r["dead_letter"])),
        "dead letters redriven twice: {again}"
    );
    served.stop().await;
    scene.stop().await;
}
