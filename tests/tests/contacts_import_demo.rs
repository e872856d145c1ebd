//! The contacts-import demo (`contacts-import`), whole, against the running broker, each run on
//! topics of its own and an ephemeral port:
//!
//! - headless Chromium (Debian's `chromium`, or `$CHROMIUM`) uploads a 10 000-contact CSV
//!   through the page; the page shows progress, then "import complete" once; the view's query
//!   service has exactly the 10 000 contacts. A screenshot of the finished page is saved under
//!   `target/test-artifacts/`.
//! - an importer instance killed mid-import: completion still comes exactly once and the view
//!   has every contact once.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use contacts_import::{generate_csv, Demo, DemoConfig};
use futures_util::StreamExt;
use kafka_wire_tests::chromium::Chromium;
use kafka_wire_tests::{bootstrap, read_committed, unique_topic, workspace_root};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// How long a 10 000-contact import may take on a loaded 2-core machine.
const IMPORT_BOUND: Duration = Duration::from_secs(600);
/// How long one HTTP exchange, the start or the stop may take.
const BOUND: Duration = Duration::from_secs(120);
const CONTACTS: usize = 10_000;

async fn start(test: &str, job_size: usize) -> Demo {
    let mut config = DemoConfig::new(&bootstrap());
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.prefix = format!("{}-", unique_topic(test));
    config.importers = 2;
    config.job_size = job_size;
    // Some lookups fail, so that retries happen; never enough to reach the dead-letter queue.
    config.lookup_failures = 0.02;
    // The view file is unique per run, and removed when the demo stops.
    config.data_dir = std::env::temp_dir();
    tokio::time::timeout(BOUND, Demo::start(config))
        .await
        .unwrap_or_else(|_| panic!("the demo did not start within {BOUND:?}"))
        .unwrap_or_else(|e| panic!("the demo did not start: {e}"))
}

/// One HTTP/1.1 exchange (`Connection: close`); the status and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        String::from_utf8(raw).unwrap()
    };
    let raw = tokio::time::timeout(BOUND, exchange).await.unwrap_or_else(|_| panic!("{method} {path}: no answer"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{method} {path}: no header end"));
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{method} {path}: a chunked answer");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    (status, body.to_owned())
}

/// Every contact of `request` in the view, read page by page from its query service; panics on
/// a contact listed twice.
async fn contacts_in_view(addr: SocketAddr, request: &str) -> BTreeSet<u64> {
    let mut lines = BTreeSet::new();
    let mut after = String::new();
    loop {
        let path = format!("/view/rows?prefix={request}/&limit=1000&after={after}");
        let (status, body) = http(addr, "GET", &path, "text/plain", b"").await;
        assert_eq!(status, 200, "GET {path}: {body}");
        let rows: Vec<Value> = serde_json::from_str(&body).unwrap();
        let Some(last) = rows.last() else { return lines };
        after = last["key"].as_str().unwrap().to_owned();
        for row in &rows {
            let line = row["value"]["line"].as_u64().expect("a line");
            assert!(lines.insert(line), "line {line} is in the view twice");
        }
    }
}

fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from);
    target.join("test-artifacts").join("contacts_import_demo").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_imports_10000_contacts_sees_progress_then_completion_and_the_view_has_them_all() {
    let demo = start("demo-browser", 100).await;
    let csv = std::env::temp_dir().join(format!("contacts-import-test-{}-{CONTACTS}.csv", std::process::id()));
    std::fs::write(&csv, generate_csv(CONTACTS)).unwrap();

    let mut chromium = Chromium::start();
    let mut cdp = chromium.devtools().await;
    let page = cdp.open(&demo.url()).await;
    cdp.wait_for(
        &page,
        "the page's websocket to the gateway is open",
        "document.getElementById('socket').className === 'ok'",
    )
    .await;
    cdp.wait_for(&page, "the live countries list", "document.querySelector('#countries li[data-code=\"FR\"]')").await;

    // A country added on the page is written to the compacted topic and comes back, live.
    cdp.eval(
        &page,
        "document.getElementById('country-code').value = 'SS'; document.getElementById('country-name').value = 'South Sudan'; \
         document.getElementById('country-dial').value = '+211'; document.querySelector('#country-form button').click(); true",
    )
    .await;
    let added = cdp
        .wait_for(
            &page,
            "the added country listed",
            "document.querySelector('#countries li[data-code=\"SS\"]')?.textContent",
        )
        .await;
    assert_eq!(added, "SS South Sudan +211");

    // The user chooses the file and presses Import.
    cdp.set_file_input(&page, "#file", &[csv.as_path()]).await;
    cdp.wait_for(&page, "the file read and Import enabled", "!document.getElementById('import').disabled").await;
    cdp.eval(&page, "document.getElementById('import').click(); true").await;
    let request = cdp.wait_for(&page, "the 202 and its request id", "document.body.dataset.request").await;
    let request = request.as_str().unwrap().to_owned();

    cdp.wait_for_within(&page, "progress shown", "Number(document.body.dataset.progressEvents) > 0", IMPORT_BOUND)
        .await;
    let status = cdp
        .wait_for_within(
            &page,
            "import complete",
            "document.getElementById('status').dataset.state === 'complete' && document.getElementById('status').textContent",
            IMPORT_BOUND,
        )
        .await;
    assert_eq!(status.as_str().unwrap(), "Import complete: 10000 contacts imported, 0 rejected");
    // The page shows the first page of contacts from the view.
    cdp.wait_for(&page, "the first contacts listed", "document.querySelectorAll('#contacts tbody tr').length === 20")
        .await;
    let progress = cdp.eval(&page, "Number(document.body.dataset.progressEvents)").await;
    assert!(progress.as_u64().unwrap() >= 1, "no progress shown");
    assert_eq!(cdp.eval(&page, "document.body.dataset.completes").await, "1", "'complete' shown more than once");

    let lines = contacts_in_view(demo.addr(), &request).await;
    assert_eq!(lines.len(), CONTACTS, "the view's contacts of {request}");
    assert_eq!(lines.first(), Some(&2), "the first contact is on line 2 (after the header)");
    assert_eq!(lines.last(), Some(&(CONTACTS as u64 + 1)));

    // The retry dashboard of the importers, nested in the page (same origin), is live.
    let dashboard = format!(
        "document.getElementById('retries').contentDocument?.querySelector('section.target[data-topic=\"{}\"]') \
         && document.getElementById('retries').contentDocument.getElementById('live').className === 'ok'",
        demo.names().jobs
    );
    cdp.wait_for(&page, "the retry dashboard of the importers in the page", &dashboard).await;

    // A desktop-sized page for the screenshot.
    let metrics = serde_json::json!({ "width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false });
    cdp.call(Some(&page), "Emulation.setDeviceMetricsOverride", metrics).await;
    let shot = artifact("finished-page.png");
    cdp.screenshot(&page, &shot).await;
    println!("screenshot of the finished page: {}", shot.display());

    drop(chromium);
    std::fs::remove_file(&csv).ok();
    tokio::time::timeout(BOUND, demo.stop()).await.expect("the demo did not stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_importer_killed_mid_import_still_gives_one_completion_and_every_contact_once() {
    // Small jobs, so that the kill falls in the middle of the import.
    let demo = start("demo-kill", 25).await;
    assert!(demo.importers_assigned(BOUND).await, "the importers were not assigned partitions within {BOUND:?}");
    let channel = format!("kill-{}", std::process::id());
    let url = format!("ws://{}/ws/{channel}", demo.addr());
    let (mut socket, _) = tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("the websocket did not open in time")
        .expect("the websocket");

    let (status, body) = http(
        demo.addr(),
        "POST",
        &format!("/api/imports?channel={channel}"),
        "text/csv",
        generate_csv(CONTACTS).as_bytes(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let request = answer["request"].as_str().unwrap().to_owned();
    let total = answer["jobs"].as_u64().unwrap();

    // Importer 0 dies as soon as it has reported a job done (its offset is not committed yet:
    // the job is handled again, and reported again, by the importer that takes its partition
    // over); then completion, however long the others take.
    let mut killed_at = None;
    let mut completes = 0;
    // The jobs each progress notification says are newly done: a job reported again by the
    // importer that took over must not be counted again.
    let mut jobs_done = Vec::new();
    let deadline = tokio::time::Instant::now() + IMPORT_BOUND;
    while completes == 0 {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no completion within {IMPORT_BOUND:?} (killed at {killed_at:?} jobs done)"))
            .expect("the websocket closed")
            .expect("a websocket frame");
        let Message::Text(text) = frame else { continue };
        let data = serde_json::from_str::<Value>(text.as_str()).unwrap()["data"].clone();
        if data["request"] != request.as_str() {
            continue;
        }
        if data["type"] == "progress" {
            let jobs = data["jobs"].as_array().expect("the jobs newly done");
            assert_eq!(jobs.len(), 1, "a progress notification without exactly one new job: {data}");
            jobs_done.push(jobs[0].as_u64().unwrap());
        }
        match data["type"].as_str() {
            Some("progress") if killed_at.is_none() && data["importer"] == "importer-0" => {
                assert!(demo.kill_importer(0), "importer 0 was not running");
                killed_at = data["done"].as_u64();
            }
            Some("complete") => completes += 1,
            _ => {}
        }
    }
    let killed_at = killed_at.expect("completion before any progress of importer 0");
    jobs_done.sort_unstable();
    assert_eq!(jobs_done, (0..total).collect::<Vec<_>>(), "every job counted once");
    assert!(killed_at < total, "the kill came after the last job ({killed_at} of {total})");

    // Exactly once: one completion in the topic, and every contact in the view once.
    let notifications = read_committed(&demo.names().notifications).await;
    let completions = notifications
        .iter()
        .filter_map(|r| r.value.as_deref().and_then(|v| serde_json::from_slice::<Value>(v).ok()))
        .filter(|n| n["request"] == request.as_str() && n["type"] == "complete")
        .collect::<Vec<_>>();
    assert_eq!(completions.len(), 1, "completions of {request}: {completions:?}");
    assert_eq!(completions[0]["imported"], CONTACTS as u64, "{:?}", completions[0]);
    assert_eq!(completions[0]["done"], total);
    let lines = contacts_in_view(demo.addr(), &request).await;
    assert_eq!(lines.len(), CONTACTS, "the view's contacts of {request}");

    tokio::time::timeout(BOUND, demo.stop()).await.expect("the demo did not stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_in_an_aborted_transaction_never_reaches_the_page() {
    // The Jobs-Completed processor writes "complete" in the transaction of the change; if that
    // transaction aborts (a crash, a fenced instance), the page must not see that copy, only the
    // one of the transaction that commits.
    let demo = start("demo-aborted", 100).await;
    let channel = format!("aborted-{}", std::process::id());
    let url = format!("ws://{}/ws/{channel}", demo.addr());
    let (mut socket, _) = tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("the websocket did not open in time")
        .expect("the websocket");

    let topic = demo.names().notifications.clone();
    let producer = kafka_wire::Producer::new(
        kafka_wire::ProducerConfig::new(&bootstrap()).transactional_id(format!("{topic}-test-tx")),
    )
    .await
    .unwrap();
    producer.init_transactions().await.unwrap();
    let send = |kind: &'static str| {
        let value = serde_json::json!({ "type": kind, "request": "r" }).to_string();
        kafka_wire::ProducerRecord::new(topic.as_str(), value).key(channel.clone())
    };
    producer.begin_transaction().unwrap();
    producer.send(send("aborted")).await.unwrap().await.unwrap();
    producer.abort_transaction().await.unwrap();
    producer.begin_transaction().unwrap();
    producer.send(send("committed")).await.unwrap().await.unwrap();
    producer.commit_transaction().await.unwrap();
    producer.close().await.unwrap();

    let frame = tokio::time::timeout(BOUND, socket.next())
        .await
        .expect("no notification within the bound")
        .expect("the websocket closed")
        .expect("a websocket frame");
    let Message::Text(text) = frame else { panic!("not a text frame: {frame:?}") };
    let data = serde_json::from_str::<Value>(text.as_str()).unwrap()["data"].clone();
    assert_eq!(data["type"], "committed", "the page was pushed {data}");

    tokio::time::timeout(BOUND, demo.stop()).await.expect("the demo did not stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_csv_rejects_an_unknown_country_and_a_bad_email_and_bad_requests_say_why() {
    let demo = start("demo-sample", 100).await;
    let addr = demo.addr();

    // Bad requests: answered 400 with the cause, nothing produced.
    let (status, body) =
        http(addr, "POST", "/api/imports?channel=a%20b", "text/csv", b"name,email,country\nA,a@b.c,FR\n").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("channel id"), "{body}");
    let (status, body) = http(addr, "POST", "/api/imports?channel=c", "text/csv", b"name,email\nA,a@b.c\n").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no \\\"country\\\" column"), "{body}");

    // The committed sample: 18 contacts, one in a country the store does not have, one with no
    // e-mail address.
    let channel = format!("sample-{}", std::process::id());
    let url = format!("ws://{addr}/ws/{channel}");
    let (mut socket, _) = tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("the websocket did not open in time")
        .expect("the websocket");
    let sample = std::fs::read(workspace_root().join("contacts-import/samples/contacts.csv")).unwrap();
    let (status, body) = http(addr, "POST", &format!("/api/imports?channel={channel}"), "text/csv", &sample).await;
    assert_eq!(status, 202, "{body}");
    let request = serde_json::from_str::<Value>(&body).unwrap()["request"].as_str().unwrap().to_owned();
    let complete = loop {
        let frame = tokio::time::timeout(IMPORT_BOUND, socket.next())
            .await
            .expect("no completion within the bound")
            .expect("the websocket closed")
            .expect("a websocket frame");
        let Message::Text(text) = frame else { continue };
        let data = serde_json::from_str::<Value>(text.as_str()).unwrap()["data"].clone();
        if data["request"] == request.as_str() && data["type"] == "complete" {
            break data;
        }
    };
    assert_eq!((complete["imported"].as_u64(), complete["rejected"].as_u64()), (Some(16), Some(2)), "{complete}");
    let lines = contacts_in_view(addr, &request).await;
    assert_eq!(lines.len(), 16);
    assert!(!lines.contains(&18) && !lines.contains(&19), "a rejected contact is in the view: {lines:?}");

    tokio::time::timeout(BOUND, demo.stop()).await.expect("the demo did not stop");
}
