//! Issue #12, pattern 1: consume-and-project against the real broker, into the embedded store
//! and into PostgreSQL (`PATTERNS_POSTGRES`, by default the local server `.ci/run` starts). The
//! article's example: site metadata snapshots projected into an installed-apps view.
//!
//! One scenario per store: the view equals a model of the snapshots (last snapshot wins, a
//! tombstone or a site without apps removes the row); a second projector replaying the whole
//! topic into the same store changes no row at all (every change it makes is older or as old);
//! a rebuild into a fresh store gives the same rows, versions included; the query service serves
//! them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use handler::{HandlerError, Lifecycle};
use kafka_wire::client::OffsetReset;
use kafka_wire::{Client, ClientConfig, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, unique_topic};
use patterns::projector::{rebuild, Projector, ProjectorConfig};
use patterns::view::{query_router, Change, EmbeddedStore, PostgresStore, Row, StoreError, ViewStore};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);
const SITES: u32 = 40;
const PARTITIONS: i32 = 3;

/// The view of a site snapshot: its installed apps, if it has any.
fn installed_apps(_key: &[u8], snapshot: &[u8]) -> Result<Option<Value>, HandlerError> {
    let site: Value = serde_json::from_slice(snapshot)?;
    let apps = site["apps"].as_array().cloned().unwrap_or_default();
    Ok((!apps.is_empty()).then(|| json!({ "apps": apps, "revision": site["revision"] })))
}

/// Produces three revisions of every site (site k has no apps in revision 3 when k % 5 == 0),
/// then tombstones for k % 7 == 0; returns the expected view and the end offsets.
async fn publish_sites(topic: &str) -> (BTreeMap<String, Value>, BTreeMap<i32, i64>) {
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.expect("producer");
    let mut model = BTreeMap::new();
    let mut end = BTreeMap::new();
    let mut deliveries = Vec::new();
    for revision in 1..=3 {
        for k in 0..SITES {
            let key = format!("site-{k:02}");
            let apps: Vec<String> =
                if revision == 3 && k % 5 == 0 { vec![] } else { (0..revision).map(|a| format!("app-{a}")).collect() };
            let snapshot = json!({ "site": key, "apps": apps, "revision": revision });
            let view = installed_apps(key.as_bytes(), snapshot.to_string().as_bytes()).expect("project");
            match view {
                Some(v) => model.insert(key.clone(), v),
                None => model.remove(&key),
            };
            let record = ProducerRecord::new(topic, snapshot.to_string()).key(key.into_bytes());
            deliveries.push(producer.send(record).await.expect("send"));
        }
    }
    for k in (0..SITES).filter(|k| k % 7 == 0) {
        let key = format!("site-{k:02}");
        model.remove(&key);
        let mut tombstone = ProducerRecord::new(topic, Vec::new()).key(key.into_bytes());
        tombstone.value = None;
        deliveries.push(producer.send(tombstone).await.expect("send"));
    }
    for d in deliveries {
        let m = d.await.expect("delivered");
        let e = end.entry(m.topic_partition.partition).or_insert(0);
        *e = (*e).max(m.offset + 1);
    }
    producer.close().await.expect("close");
    (model, end)
}

/// Every row of `store`, by key, read in pages.
async fn all_rows(store: &impl ViewStore) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    loop {
        let after = rows.last().map(|r| r.key.clone());
        let page = store.scan("", after.as_deref(), 7).await.expect("scan");
        if page.is_empty() {
            return rows;
        }
        rows.extend(page);
    }
}

fn as_model(rows: &[Row]) -> BTreeMap<String, Value> {
    rows.iter().map(|r| (r.key.clone(), r.value.clone())).collect()
}

/// A store that counts the rows its changes changed.
struct Counting<S> {
    inner: Arc<S>,
    changed: AtomicUsize,
}

impl<S: ViewStore> ViewStore for Counting<S> {
    async fn apply(&self, changes: Vec<Change>) -> Result<usize, StoreError> {
        let n = self.inner.apply(changes).await?;
        self.changed.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
    async fn get(&self, key: &str) -> Result<Option<Row>, StoreError> {
        self.inner.get(key).await
    }
    async fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<Row>, StoreError> {
        self.inner.scan(prefix, after, limit).await
    }
    async fn count(&self) -> Result<u64, StoreError> {
        self.inner.count().await
    }
}

fn consumer(group: &str) -> ConsumerConfig {
    ConsumerConfig::new(&bootstrap()).group_id(group).auto_offset_reset(OffsetReset::Earliest)
}

/// Runs a projector of `topic` for `group` into `store` until the group has committed `end`.
async fn project_to_end<S: ViewStore>(topic: &str, group: &str, store: Arc<S>, end: &BTreeMap<i32, i64>) {
    let config = ProjectorConfig::new(consumer(group), [topic]);
    let projector = Projector::new(config, store, installed_apps).await.expect("projector");
    let mut events = projector.runtime().events();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(projector.run_until(async {
        let _ = stopped.await;
    }));
    // The runtime reports each commit: wait for those that reach the end of every partition.
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while end.iter().any(|(p, e)| committed.get(p).is_none_or(|c| c < e)) {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(Lifecycle::Committed { offsets })) => {
                for (tp, offset) in offsets {
                    committed.insert(tp.partition, offset);
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{group}: lifecycle events: {e}"),
            Err(_) => panic!("{group} committed {committed:?}, not {end:?}, within {WAIT:?}"),
        }
    }
    let _ = stop.send(());
    tokio::time::timeout(WAIT, running).await.expect("stopped in time").expect("joined").expect("ran");
}

async fn scenario<S: ViewStore>(store: Arc<S>, fresh: S) {
    let client = Client::connect(ClientConfig::new(&bootstrap())).await.expect("connect");
    let topic = unique_topic("site-metadata");
    create_topic(&client, &topic, PARTITIONS, 1, &[]).await;
    client.close().await;
    let (model, end) = publish_sites(&topic).await;

    project_to_end(&topic, &unique_topic("installed-apps"), store.clone(), &end).await;
    let projected = all_rows(store.as_ref()).await;
    assert_eq!(as_model(&projected), model, "the view is the last snapshot of every site that has apps");
    assert_eq!(store.count().await.expect("count"), model.len() as u64);

    // A second projector replays everything into the same store: nothing is older than what is
    // there, so no row changes (not even to the same value).
    let counting = Arc::new(Counting { inner: store.clone(), changed: AtomicUsize::new(0) });
    project_to_end(&topic, &unique_topic("installed-apps-replay"), counting.clone(), &end).await;
    assert_eq!(counting.changed.load(Ordering::Relaxed), 0, "a replay changed rows");
    assert_eq!(all_rows(store.as_ref()).await, projected, "a replay left the view as it was");

    // A rebuild into a fresh store gives the same rows, versions included.
    let rebuilt = rebuild(consumer("unused"), &[topic.as_str()], &fresh, installed_apps, 16).await.expect("rebuild");
    assert_eq!(rebuilt.records, end.values().sum::<i64>() as u64);
    assert_eq!(all_rows(&fresh).await, projected, "the rebuilt view equals the projected one");

    // The query service serves the view.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, query_router(Arc::new(fresh))).await });
    let (key, value) = model.iter().next().expect("a row");
    let body = http_get(addr, &format!("/rows/{key}")).await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let row: Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).expect("a body")).expect("JSON");
    assert_eq!(&row["value"], value);
    assert!(http_get(addr, "/rows/site-07").await.starts_with("HTTP/1.1 404"), "a deleted site is not served");
}

/// A bare HTTP/1.1 GET: the status line, headers and body as text.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    sock.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    tokio::time::timeout(WAIT, sock.read_to_string(&mut answer)).await.expect("an answer in time").expect("read");
    answer
}

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique_topic("projector"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_view_is_projected_replayed_without_a_change_and_rebuilt_the_same() {
    let store = Arc::new(EmbeddedStore::open(temp_path("view.redb")).expect("open"));
    let fresh = EmbeddedStore::open(temp_path("rebuilt.redb")).expect("open");
    scenario(store, fresh).await;
}

/// The PostgreSQL server of `PATTERNS_POSTGRES` (a `tokio-postgres` connection string); by
/// default the local one `.ci/run` starts.
fn postgres() -> String {
    std::env::var("PATTERNS_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres password=postgres dbname=postgres".into())
}

async fn connect_postgres(table: String) -> PostgresStore {
    PostgresStore::connect(&postgres(), &table).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {:?}: {e} (start one, e.g. `pg_ctlcluster 15 main start`, or set PATTERNS_POSTGRES)",
            postgres()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_view_is_projected_replayed_without_a_change_and_rebuilt_the_same() {
    let table = unique_topic("view").replace('-', "_");
    let connect = connect_postgres;
    let store = Arc::new(connect(table.clone()).await);
    let fresh = connect(format!("{table}_rebuilt")).await;
    scenario(store, fresh).await;
}

/// PostgreSQL writes a batch in one statement, which may touch a row only once: a batch that
/// changes one key several times (a compacted topic read from the start, a rebuild) must still
/// apply, leaving the newest version, and an older one in a later batch must not regress it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_batch_that_changes_one_key_several_times_keeps_the_newest() {
    let store = connect_postgres(unique_topic("view").replace('-', "_")).await;
    let change = |key: &str, version: i64, value: Option<&str>| Change {
        key: key.into(),
        version,
        value: value.map(|v| v.as_bytes().to_vec()),
    };
    let changed = store
        .apply(vec![
            change("a", 1, Some(r#"{"v":1}"#)),
            change("b", 2, Some(r#"{"v":2}"#)),
            change("a", 5, Some(r#"{"v":5}"#)),
            change("a", 3, Some(r#"{"v":3}"#)),
            change("b", 6, None),
        ])
        .await
        .expect("a batch with repeated keys applies");
    assert_eq!(changed, 2);
    assert_eq!(store.get("a").await.unwrap().expect("a").value, json!({"v": 5}));
    assert_eq!(store.get("b").await.unwrap(), None, "b's newest change deletes it");
    assert_eq!(store.apply(vec![change("a", 4, Some(r#"{"v":4}"#)), change("b", 3, Some("3"))]).await.unwrap(), 0);
    assert_eq!(store.get("a").await.unwrap().expect("a").version, 5);
    assert_eq!(store.count().await.unwrap(), 1);
}
