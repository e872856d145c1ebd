//! The contacts-import demo: the article's Contacts Import flow, with the six event-driven
//! patterns of this workspace at work together behind one web page.
//!
//! - **Jobs service** (`POST /api/imports?channel=<id>`, a CSV body): answers 202 at once, splits
//!   the contacts into jobs of K and produces them to the jobs topic (idempotent producer).
//! - **Importers** (several, each a member of the importers' consumer group): validate each
//!   contact (its country must be in the `countries` store, pattern 3: an in-memory KV store
//!   of a compacted topic), look the dialling codes up with a flaky service retried in place,
//!   then through a retry topic, then to a dead-letter queue (pattern 4), write the contacts to
//!   the contacts topic and wait for them to be projected, then report the job done to the
//!   Jobs-Completed atomic store (pattern 6), once per job however often it is redelivered.
//! - **Projector** (pattern 1): projects the contacts topic into an embedded view store, served
//!   read-only at `/view/rows` and `/view/count`.
//! - **Jobs-Completed processor** (pattern 6, exactly once through Kafka transactions, pattern
//!   5): its update callback publishes each job's progress and, once, "complete" to the
//!   browser's channel on the notifications topic, in the transaction of the change.
//! - **Gateway** (pattern 2): pushes the channel's notifications to the page's websocket
//!   (`/ws/{channel}`).
//! - The retry dashboard (`/retry/`) and a live view of the `countries` store
//!   (`/api/countries/events`) are on the page too.
//!
//! Everything runs in one process ([`Demo::start`]); the importers are separate tasks with their
//! own group members, so [`Demo::kill_importer`] is a real member loss.

#![warn(missing_docs)]

pub mod csv;
pub mod importer;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use kafka_wire::client::{Admin, OffsetReset};
use kafka_wire::{Client, ClientConfig, ConsumerConfig, ErrorCode, Producer, ProducerConfig, ProducerRecord};
use kvstore::{AtomicConfig, AtomicKvStore, KvConfig, KvStore, Stop};
use patterns::gateway::{Gateway, GatewayConfig, Publisher};
use patterns::projector::{Projector, ProjectorConfig};
use patterns::view::query_router;
use retry::{RetryConfig, RetryPolicy, RetryingConsumer};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::csv::Contact;
use crate::importer::{ContactsView, Country, FlakyLookup, Importer, Job};

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

/// The largest CSV accepted.
const BODY_LIMIT: usize = 64 << 20;
/// The most contacts in one import, and in a generated file.
pub const MAX_CONTACTS: usize = 1_000_000;

/// The countries the demo seeds its `countries` store with: (code, name, dialling code).
pub const SEED_COUNTRIES: [(&str, &str, &str); 24] = [
    ("AR", "Argentina", "+54"),
    ("AU", "Australia", "+61"),
    ("BR", "Brazil", "+55"),
    ("CA", "Canada", "+1"),
    ("CN", "China", "+86"),
    ("DE", "Germany", "+49"),
    ("EG", "Egypt", "+20"),
    ("ES", "Spain", "+34"),
    ("FR", "France", "+33"),
    ("GB", "United Kingdom", "+44"),
    ("IL", "Israel", "+972"),
    ("IN", "India", "+91"),
    ("IT", "Italy", "+39"),
    ("JP", "Japan", "+81"),
    ("KE", "Kenya", "+254"),
    ("KR", "South Korea", "+82"),
    ("MX", "Mexico", "+52"),
    ("NG", "Nigeria", "+234"),
    ("NL", "Netherlands", "+31"),
    ("PL", "Poland", "+48"),
    ("SE", "Sweden", "+46"),
    ("UA", "Ukraine", "+380"),
    ("US", "United States", "+1"),
    ("ZA", "South Africa", "+27"),
];

/// A CSV of `contacts` contacts, all in seeded countries.
pub fn generate_csv(contacts: usize) -> String {
    let codes: Vec<&str> = SEED_COUNTRIES.iter().map(|(code, _, _)| *code).collect();
    csv::generate(contacts, &codes)
}

/// The demo failed to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] kafka_wire::Error),
    /// A KV store failed.
    #[error("kv store: {0}")]
    KvStore(#[from] kvstore::Error),
    /// The view store failed.
    #[error("view store: {0}")]
    View(#[from] patterns::view::StoreError),
    /// The address could not be bound, or the data directory made.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        error: std::io::Error,
    },
    /// A setting is out of range.
    #[error("configuration: {0}")]
    Config(String),
}

/// How the demo runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DemoConfig {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// Where the web page is served (port 0: any free port).
    pub listen: SocketAddr,
    /// Prefixed to every topic and group name (to run side by side, or afresh).
    pub prefix: String,
    /// Importer instances (at least 1).
    pub importers: usize,
    /// Contacts per job (1 to 1000).
    pub job_size: usize,
    /// The fraction of the country-code lookups that fail (0 to 1).
    pub lookup_failures: f64,
    /// Partitions of the jobs and contacts topics.
    pub partitions: i32,
    /// Where the view store's file goes (a fresh file each start; the view is rebuilt from the
    /// contacts topic).
    pub data_dir: PathBuf,
}

impl DemoConfig {
    /// The defaults, on the cluster at `bootstrap`: 127.0.0.1:8080, no prefix, 2 importers,
    /// jobs of 100 contacts, 5% of lookups failing, 6 partitions, the view under the temporary
    /// directory.
    pub fn new(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            prefix: String::new(),
            importers: 2,
            job_size: 100,
            lookup_failures: 0.05,
            partitions: 6,
            data_dir: std::env::temp_dir().join("contacts-import"),
        }
    }

    fn check(&self) -> Result<(), DemoError> {
        if self.importers == 0 {
            return Err(DemoError::Config("at least one importer is needed".into()));
        }
        if !(1..=patterns::view::MAX_SCAN).contains(&self.job_size) {
            return Err(DemoError::Config(format!(
                "a job has 1 to {} contacts, not {}",
                patterns::view::MAX_SCAN,
                self.job_size
            )));
        }
        if !(0.0..=1.0).contains(&self.lookup_failures) {
            return Err(DemoError::Config(format!(
                "the lookup failure fraction {} is not in 0..=1",
                self.lookup_failures
            )));
        }
        if self.partitions < 1 {
            return Err(DemoError::Config(format!("{} partitions", self.partitions)));
        }
        Ok(())
    }
}

/// The demo's topic and group names, from its prefix.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Names {
    /// The import jobs.
    pub jobs: String,
    /// The imported contacts, projected into the view.
    pub contacts: String,
    /// The gateway's notifications.
    pub notifications: String,
    /// The compacted topic of the `countries` store.
    pub countries: String,
    /// The Jobs-Completed atomic store's commands topic.
    pub jobs_completed: String,
    /// The importers' consumer group.
    pub importers: String,
}

impl Names {
    /// The names with `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            jobs: format!("{prefix}contact-import-jobs"),
            contacts: format!("{prefix}contacts"),
            notifications: format!("{prefix}import-notifications"),
            countries: format!("{prefix}countries"),
            jobs_completed: format!("{prefix}jobs-completed"),
            importers: format!("{prefix}contacts-importers"),
        }
    }
}

/// One importer instance: its task (running its group member), and whether it has been
/// assigned partitions yet.
struct ImporterSlot {
    task: JoinHandle<()>,
    assigned: watch::Receiver<bool>,
}

/// What the HTTP handlers share.
struct App {
    config: DemoConfig,
    names: Names,
    jobs_producer: Producer,
    publisher: Publisher,
    countries: Arc<KvStore<String, Country>>,
}

/// The running demo; [`Demo::stop`] stops it.
pub struct Demo {
    addr: SocketAddr,
    names: Names,
    shutdown: watch::Sender<bool>,
    importers: Mutex<Vec<ImporterSlot>>,
    tasks: Vec<JoinHandle<()>>,
    processor_stop: Stop,
    view_file: PathBuf,
    gateway: Gateway,
    app: Arc<App>,
}

async fn create_topics(config: &DemoConfig, names: &Names) -> Result<(), DemoError> {
    let admin = Admin::connect(ClientConfig::new(&config.bootstrap)).await?;
    let topics = [
        kafka_wire::client::NewTopic::new(&names.jobs, config.partitions, -1),
        kafka_wire::client::NewTopic::new(&names.contacts, config.partitions, -1),
        kafka_wire::client::NewTopic::new(&names.notifications, 3, -1),
    ];
    let created = admin.create_topics_each(&topics, false).await;
    admin.close().await;
    for (_, result) in created? {
        match result {
            Err(e) if e.code() != Some(ErrorCode::TOPIC_ALREADY_EXISTS) => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

fn millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn wait_for_stop(shutdown: &watch::Sender<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut stopped = shutdown.subscribe();
    async move {
        let _ = stopped.wait_for(|s| *s).await;
    }
}

impl Demo {
    /// Creates the topics (if missing), seeds the `countries` store, starts the processor, the
    /// projector, the gateway and the importers, and serves the page. Returns once the page is
    /// served; the importers may still be joining their group ([`Demo::importers_assigned`]).
    /// Not cancel-safe: if the future is dropped midway, the topics and countries written
    /// stay, the tasks started so far stop, except the Jobs-Completed processor, which runs on
    /// until the runtime ends.
    pub async fn start(config: DemoConfig) -> Result<Self, DemoError> {
        config.check()?;
        let names = Names::new(&config.prefix);
        create_topics(&config, &names).await?;
        let bootstrap = config.bootstrap.as_str();
        let (shutdown, _) = watch::channel(false);
        let mut tasks = Vec::new();

        // Pattern 3: the countries, seeded where missing (an operator may have changed them).
        let countries: Arc<KvStore<String, Country>> =
            Arc::new(KvStore::open(KvConfig::new(bootstrap, &names.countries)).await?);
        for (code, name, dial) in SEED_COUNTRIES {
            if !countries.contains(code)? {
                countries.put(&code.to_owned(), &Country { name: name.into(), dial: dial.into() }).await?;
            }
        }

        // Pattern 1: the view, rebuilt from the contacts topic into a fresh file by a group of
        // its own.
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|error| DemoError::Io { what: format!("creating {}", config.data_dir.display()), error })?;
        let run = format!("{}-{}", std::process::id(), millis());
        let view_file = config.data_dir.join(format!("{}view-{run}.redb", config.prefix));
        let view = Arc::new(ContactsView::open(&view_file)?);
        let projector_consumer = ConsumerConfig::new(bootstrap)
            .group_id(format!("{}contacts-view-{run}", config.prefix))
            .auto_offset_reset(OffsetReset::Earliest);
        let projection = |_key: &[u8], value: &[u8]| Ok(Some(serde_json::from_slice::<Value>(value)?));
        let projector = Projector::new(
            ProjectorConfig::new(projector_consumer, [names.contacts.as_str()]),
            view.clone(),
            projection,
        )
        .await?;
        let stopped = wait_for_stop(&shutdown);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = projector.run_until(stopped).await {
                tracing::error!(error = %e, "the contacts projector stopped");
            }
        }));

        // Pattern 6 (and 5): the Jobs-Completed store's processor.
        let store = AtomicConfig::new(bootstrap, &names.jobs_completed).partitions(3);
        let processor = importer::jobs_completed_processor(&store, &names.notifications);
        let processor_stop = Stop::new();
        let stop = processor_stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = processor.run(&stop).await {
                tracing::error!(error = %e, "the Jobs-Completed processor stopped");
            }
        }));

        // Pattern 2: the gateway and a publisher to it.
        let gateway = Gateway::start(GatewayConfig::new(bootstrap, &names.notifications)).await?;
        let publisher = Publisher::new(bootstrap, &names.notifications).await?;

        // Pattern 4: the importers, each its own group member.
        let policy =
            RetryPolicy::blocking([Duration::from_millis(200), Duration::from_millis(500), Duration::from_secs(1)])
                .then_non_blocking([Duration::from_secs(2)]);
        let mut importers = Vec::new();
        for n in 0..config.importers {
            let consumer = ConsumerConfig::new(bootstrap)
                .group_id(&names.importers)
                .auto_offset_reset(OffsetReset::Earliest)
                .session_timeout(Duration::from_secs(10));
            let mut retry = RetryConfig::new(consumer, &names.jobs, policy.clone());
            retry.key_parallelism = 4;
            let importer = Arc::new(Importer {
                name: format!("importer-{n}"),
                countries: countries.clone(),
                view: view.clone(),
                contacts_topic: names.contacts.clone(),
                producer: Producer::new(ProducerConfig::new(bootstrap).enable_idempotence(true)).await?,
                jobs_completed: AtomicKvStore::connect(&store).await?,
                lookup: FlakyLookup::new(config.lookup_failures),
            });
            let member = RetryingConsumer::new(retry, move |record| {
                let importer = importer.clone();
                async move { importer.import(record).await }
            })
            .await?;
            let (assigned_tx, assigned) = watch::channel(false);
            let mut events = member.runtime().events();
            tokio::spawn(async move {
                // Ends with the member (its events' sender).
                while let Ok(event) = events.recv().await {
                    if matches!(event, handler::Lifecycle::Assigned { .. }) {
                        assigned_tx.send_replace(true);
                    }
                }
            });
            let stopped = wait_for_stop(&shutdown);
            let task = tokio::spawn(async move {
                if let Err(e) = member.run_until(stopped).await {
                    tracing::error!(importer = n, error = %e, "an importer stopped");
                }
            });
            importers.push(ImporterSlot { task, assigned });
        }

        // The retry dashboard of the importers, nested in the page's server.
        let client = Client::connect(ClientConfig::new(bootstrap)).await?;
        let dashboard = retry::dashboard::Dashboard::new(client, [(names.jobs.as_str(), names.importers.as_str())])?
            .operator("demo");

        let app = Arc::new(App {
            config: config.clone(),
            names: names.clone(),
            jobs_producer: Producer::new(ProducerConfig::new(bootstrap).enable_idempotence(true)).await?,
            publisher,
            countries,
        });
        let router = Router::new()
            .route("/", get(|| async { asset("text/html; charset=utf-8", PAGE) }))
            .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
            .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
            .route("/api/imports", post(import))
            .route("/api/sample.csv", get(sample))
            .route("/api/countries", get(countries_list).post(country_put))
            .route("/api/countries/events", get(countries_events))
            .route("/api/config", get(config_view))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(app.clone())
            .merge(gateway.router())
            .nest("/view", query_router(view))
            .route("/retry", get(|| async { Redirect::permanent("/retry/") }))
            .nest_service("/retry/", dashboard.router());

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|error| DemoError::Io { what: format!("binding {}", config.listen), error })?;
        let addr = listener.local_addr().map_err(|error| DemoError::Io { what: "the bound address".into(), error })?;
        let stopped = wait_for_stop(&shutdown);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
                tracing::error!(error = %e, "the web server stopped");
            }
        }));

        Ok(Self {
            addr,
            names,
            shutdown,
            importers: Mutex::new(importers),
            tasks,
            processor_stop,
            view_file,
            gateway,
            app,
        })
    }

    /// Where the page is served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The topic and group names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Waits until every importer has been assigned partitions of the jobs topic (so each
    /// has work to lose if killed); false if that takes longer than `bound`. Cancel-safe.
    pub async fn importers_assigned(&self, bound: Duration) -> bool {
        let receivers: Vec<watch::Receiver<bool>> =
            self.importers.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|s| s.assigned.clone()).collect();
        let all = async {
            for mut assigned in receivers {
                if assigned.wait_for(|a| *a).await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(bound, all).await.unwrap_or(false)
    }

    /// Kills importer `n` as a crash would: its task is aborted mid-job (nothing committed,
    /// nothing closed; the group notices the member gone and gives its partitions to the
    /// others, which import its unfinished jobs again). False if there is no such importer
    /// running.
    pub fn kill_importer(&self, n: usize) -> bool {
        let importers = self.importers.lock().unwrap_or_else(|p| p.into_inner());
        match importers.get(n) {
            Some(slot) if !slot.task.is_finished() => {
                slot.task.abort();
                true
            }
            _ => false,
        }
    }

    /// Stops everything: the page, the importers (which commit what they handled and leave
    /// the group), the projector, the processor and the gateway, and removes the view's file
    /// (the next start rebuilds the view from the contacts topic). Waits for each up to 30 s.
    /// Not cancel-safe: if the future is dropped, what was not stopped yet goes on running
    /// until the process ends.
    pub async fn stop(self) {
        self.shutdown.send_replace(true);
        let importers = std::mem::take(&mut *self.importers.lock().unwrap_or_else(|p| p.into_inner()));
        for slot in importers {
            let _ = tokio::time::timeout(Duration::from_secs(30), slot.task).await;
        }
        self.processor_stop.trigger();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        self.gateway.close().await;
        let _ = self.app.publisher.close().await;
        let _ = self.app.jobs_producer.close().await;
        let _ = std::fs::remove_file(&self.view_file);
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src 'self' ws: wss:; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

#[derive(Deserialize)]
struct ImportQuery {
    channel: String,
}

/// A channel id a page may choose: 1 to 100 letters, digits, `-` or `_`.
fn valid_channel(channel: &str) -> bool {
    (1..=100).contains(&channel.len()) && channel.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The jobs service: answers 202 with the request's id and size at once; the jobs are
/// produced in the background (a failure is published to the channel).
async fn import(State(app): State<Arc<App>>, Query(q): Query<ImportQuery>, body: Bytes) -> Response {
    if !valid_channel(&q.channel) {
        return error(StatusCode::BAD_REQUEST, "the channel id is 1 to 100 letters, digits, - or _");
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the CSV is not UTF-8");
    };
    let contacts = match csv::parse(text, MAX_CONTACTS) {
        Ok(contacts) => contacts,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let random = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), millis()) % 10_000;
    let request = format!("imp-{}-{random:04}", millis());
    let jobs = contacts.len().div_ceil(app.config.job_size);
    let answer = json!({ "request": request, "contacts": contacts.len(), "jobs": jobs });
    tokio::spawn(produce_jobs(app, request, q.channel, contacts));
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

async fn produce_jobs(app: Arc<App>, request: String, channel: String, contacts: Vec<Contact>) {
    let total = contacts.len().div_ceil(app.config.job_size) as u64;
    let produced = async {
        let accepted = json!({ "type": "accepted", "request": request, "contacts": contacts.len(), "total": total });
        app.publisher.publish(&channel, &accepted).await?;
        let mut deliveries = Vec::new();
        for (job, chunk) in contacts.chunks(app.config.job_size).enumerate() {
            let job = Job {
                request: request.clone(),
                channel: channel.clone(),
                job: job as u64,
                total,
                contacts: chunk.to_vec(),
            };
            let value = serde_json::to_vec(&job).expect("a job serializes");
            let record = ProducerRecord::new(app.names.jobs.as_str(), value).key(format!("{request}/{}", job.job));
            deliveries.push(app.jobs_producer.send(record).await?);
        }
        for delivery in deliveries {
            delivery.await?;
        }
        Ok::<_, kafka_wire::Error>(())
    };
    if let Err(e) = produced.await {
        tracing::error!(request, error = %e, "producing an import's jobs failed");
        let failed = json!({ "type": "error", "request": request, "error": e.to_string() });
        let _ = app.publisher.publish(&channel, &failed).await;
    }
}

#[derive(Deserialize)]
struct SampleQuery {
    contacts: Option<usize>,
}

/// A generated CSV (100 000 contacts unless `?contacts=` says otherwise).
async fn sample(Query(q): Query<SampleQuery>) -> Response {
    let contacts = q.contacts.unwrap_or(100_000);
    if contacts == 0 || contacts > MAX_CONTACTS {
        return error(StatusCode::BAD_REQUEST, format!("1 to {MAX_CONTACTS} contacts"));
    }
    let csv = tokio::task::spawn_blocking(move || generate_csv(contacts)).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response()
}

fn countries_json(countries: &KvStore<String, Country>) -> Result<Value, kvstore::Error> {
    let list: Vec<Value> = countries
        .iter()?
        .into_iter()
        .map(|(code, c)| json!({ "code": code, "name": c.name, "dial": c.dial }))
        .collect();
    Ok(json!({ "countries": list }))
}

async fn countries_list(State(app): State<Arc<App>>) -> Response {
    match countries_json(&app.countries) {
        Ok(list) => Json(list).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The `countries` store, live: the whole list at once and after every change.
async fn countries_events(State(app): State<Arc<App>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let watch = app.countries.watch();
    let events = stream::unfold((app, watch, true), |(app, mut watch, first)| async move {
        if !first {
            // A watcher that lagged re-reads the whole list anyway; the stream ends when the
            // store closes.
            if let Err(kvstore::WatchError::Closed) = watch.recv().await {
                return None;
            }
        }
        let list = countries_json(&app.countries).ok()?;
        Some((Ok(Event::default().event("countries").data(list.to_string())), (app, watch, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
struct CountryPut {
    code: String,
    name: String,
    dial: String,
}

/// Adds or changes a country (the page's form): written to the compacted topic, seen by every
/// store of it.
async fn country_put(State(app): State<Arc<App>>, Json(c): Json<CountryPut>) -> Response {
    let code = c.code.trim().to_ascii_uppercase();
    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return error(StatusCode::BAD_REQUEST, "a country code is two letters");
    }
    let country = Country { name: c.name.trim().to_owned(), dial: c.dial.trim().to_owned() };
    match app.countries.put(&code, &country).await {
        Ok(_) => Json(json!({ "code": code })).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

async fn config_view(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({
        "importers": app.config.importers,
        "job_size": app.config.job_size,
        "lookup_failures": app.config.lookup_failures,
        "topics": {
            "jobs": app.names.jobs,
            "contacts": app.names.contacts,
            "notifications": app.names.notifications,
            "countries": app.names.countries,
            "jobs_completed": app.names.jobs_completed,
        },
        "importers_group": app.names.importers,
    }))
}
