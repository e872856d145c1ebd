//! The operator's web dashboard: what `kw retry status` shows, for one or more (topic, group)
//! pairs, live in a browser, with the buttons of `kw retry skip|unblock|block` and
//! `kw dlq redrive`.
//!
//! ```no_run
//! use kafka_wire::{Client, ConsumerConfig};
//! use retry::dashboard::Dashboard;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect(ConsumerConfig::new("127.0.0.1:9092").client_config()).await?;
//! let dashboard = Dashboard::new(client, [("renewals", "billing")])?.operator("on-call");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! dashboard.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The HTTP interface (the page uses it; so can scripts):
//!
//! Paths are given from the dashboard's root: `/` served alone ([`Dashboard::serve`]), or where
//! it is nested in another server ([`Dashboard::router`]).
//!
//! - `GET /`: the page (its script and style come from this server too; nothing else is
//!   loaded).
//! - `GET /api/status`: `{"targets": [{"topic", "group", "blocked": [{"partition", "offset",
//!   "key", "error", "since_ms", "attempts", "skip"}], "modes", "skips", "tiers": [{"topic",
//!   "waiting"}], "dead_letters", "redriven", "error"}]}`. `error` says what could not be read
//!   (the rest is what could).
//! - `GET /api/events`: the same document as server-sent events (`event: status`), sent at once
//!   and then whenever it changes: the control topic is followed, the offsets are read again
//!   every second.
//! - `POST /api/skip` `{"topic", "group", "partition", "offset"}`, `POST /api/unblock` and
//!   `POST /api/block` `{"topic", "group", "partition"}` (`partition` null or absent: the whole
//!   topic): the command written, as `{"issued": {...}}`.
//! - `POST /api/redrive` `{"topic", "group", "dry_run", "key", "error", "from_ms", "until_ms",
//!   "to_tier"}` (`dry_run` is required; the filters are optional): the dead letters that were,
//!   or would be, redriven.
//!
//! A command is stamped with the operator named by the request's `X-Operator` header, or else
//! with the name the dashboard was given. The mutating endpoints take only `POST` with
//! `Content-Type: application/json` (a plain cross-site form cannot send that, and a cross-site
//! script cannot without a CORS preflight, which this server does not grant), and refuse a
//! request whose `Origin` is not the dashboard's own. Only requests addressed to an IP
//! address, `localhost` or a name allowed with [`Dashboard::allow_host`] are answered, so a
//! foreign site cannot reach it by pointing its own name at this address (DNS rebinding).
//! There is no login: bind it to loopback, or put it behind something that authenticates.
//!
//! Errors answer with a status code and `{"error": "..."}`: 400 for a bad request, 403 for a
//! foreign origin or host, 404 for a pair the dashboard does not show, 415 for a body that is
//! not JSON, 502 when Kafka fails, 504 when it does not answer in time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use kafka_wire::client::{Admin, OffsetReset};
use kafka_wire::{Client, Consumer, ConsumerConfig, ConsumerRecord, TopicPartition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::{provision_control, AbortOnDrop, Command, ControlFollower, ControlState, RetryControl};
use crate::redrive::{RedriveFilter, RedriveTarget, Redriven};
use crate::topics::TopicNames;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// The page loads nothing from elsewhere and cannot be framed (no clickjacking of its buttons).
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// The same, for a dashboard nested in another server ([`Dashboard::router`]): only that
/// server's own pages may frame it.
const CSP_NESTED: &str = "default-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'";

/// Request bodies are a few small fields.
const BODY_LIMIT: usize = 16 * 1024;
/// How long one round of gathering a pair's status may take.
const GATHER_BOUND: Duration = Duration::from_secs(10);
/// How long looking up the key of a blocked record may take (it is retried at the next round).
const KEY_BOUND: Duration = Duration::from_secs(3);
/// How long a request waits for Kafka (a command written, a redrive done).
const REQUEST_BOUND: Duration = Duration::from_secs(60);
/// How long `GET /api/status` waits for the first status after the start.
const FIRST_STATUS_BOUND: Duration = Duration::from_secs(30);
/// The longest operator name taken from `X-Operator`.
const OPERATOR_MAX: usize = 100;
/// The skips listed: the most recent ones.
const SKIPS_SHOWN: usize = 50;

/// The operator's dashboard for one or more (source topic, consumer group) pairs: see the
/// [module documentation](self) for the HTTP interface.
pub struct Dashboard {
    targets: Vec<Arc<Target>>,
    operator: String,
    refresh: Duration,
    hosts: Vec<String>,
}

/// One (topic, group) pair shown.
struct Target {
    topic: String,
    group: String,
    control: RetryControl,
}

impl Dashboard {
    /// A dashboard of the retries of each `(topic, group)` of `targets`, talking to Kafka
    /// through `client`. Commands are stamped `dashboard` unless [`Dashboard::operator`] or the
    /// request says otherwise.
    ///
    /// An empty list, an empty name or a pair given twice is a configuration error.
    pub fn new<T: Into<String>, G: Into<String>>(
        client: Client,
        targets: impl IntoIterator<Item = (T, G)>,
    ) -> kafka_wire::Result<Self> {
        let pairs: Vec<(String, String)> = targets.into_iter().map(|(t, g)| (t.into(), g.into())).collect();
        if pairs.is_empty() {
            return Err(config_error("no (topic, group) pair to show".into()));
        }
        let mut targets = Vec::with_capacity(pairs.len());
        for (i, (topic, group)) in pairs.iter().enumerate() {
            if topic.is_empty() || group.is_empty() {
                return Err(config_error(format!("({topic:?}, {group:?}): the topic and the group must be named")));
            }
            if pairs[..i].contains(&(topic.clone(), group.clone())) {
                return Err(config_error(format!("({topic}, {group}) is given twice")));
            }
            let control = RetryControl::with_client(client.clone(), topic, group)?;
            targets.push(Arc::new(Target { topic: topic.clone(), group: group.clone(), control }));
        }
        Ok(Self { targets, operator: "dashboard".into(), refresh: Duration::from_secs(1), hosts: Vec::new() })
    }

    /// The name commands are stamped with when a request names no operator (`X-Operator`).
    pub fn operator(mut self, name: impl Into<String>) -> Self {
        self.operator = name.into();
        self
    }

    /// How often the offsets (records waiting, dead letters) are read again; 1 s by default,
    /// 100 ms at least. Changes on the control topic are shown as they come.
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every.max(Duration::from_millis(100));
        self
    }

    /// Also answers requests addressed to `host` (a name, without the port). By default only
    /// IP addresses and `localhost` are answered: a page of another site whose name an attacker
    /// points at this address (DNS rebinding) is refused.
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into().to_ascii_lowercase());
        self
    }

    /// Serves the dashboard on `listener` until `shutdown` completes, then lets the requests in
    /// progress finish (the live-update streams end at once) and returns. The status is
    /// gathered in the background meanwhile; a pair whose status cannot be read is shown with
    /// the error, and tried again.
    ///
    /// Returns `Ok` once stopped: a failure to accept a connection is retried, not returned.
    /// If the future is dropped, the listener is closed and the gathering stops; requests in
    /// progress run to their end (a command being written is written), live-update streams end.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (status_tx, status_rx) = watch::channel(None);
        let gathering = AbortOnDrop(tokio::spawn(gather(self.targets.clone(), self.refresh, status_tx)));
        let shared = Arc::new(Shared {
            targets: self.targets,
            operator: self.operator,
            hosts: self.hosts,
            status: status_rx,
            csp: CSP,
            _gathering: None,
        });
        let stop = async move {
            shutdown.await;
            // Ends the live-update streams, which would otherwise hold the shutdown up.
            drop(gathering);
        };
        axum::serve(listener, router(shared, false)).with_graceful_shutdown(stop).await
    }

    /// The dashboard as a router to nest in another axum server, e.g.
    /// `Router::new().nest_service("/retry", dashboard.router())`, the page then being at
    /// `/retry/` (with the slash: the page loads its script and calls the API by relative
    /// paths). The same pages and API as [`Dashboard::serve`], except that pages of the
    /// embedding server (same origin) may frame it. The status is gathered in the background
    /// from now until the router and every clone of it are dropped (live-update streams then
    /// end).
    pub fn router(self) -> Router {
        let (status_tx, status_rx) = watch::channel(None);
        let gathering = AbortOnDrop(tokio::spawn(gather(self.targets.clone(), self.refresh, status_tx)));
        router(
            Arc::new(Shared {
                targets: self.targets,
                operator: self.operator,
                hosts: self.hosts,
                status: status_rx,
                csp: CSP_NESTED,
                _gathering: Some(gathering),
            }),
            true,
        )
    }
}

fn config_error(reason: String) -> kafka_wire::Error {
    kafka_wire::Error::Config { property: "dashboard targets".into(), reason }
}

// ---- The status ------------------------------------------------------------------------------

/// What `/api/status` answers.
#[derive(Serialize)]
struct StatusView {
    targets: Vec<TargetView>,
}

#[derive(Serialize)]
struct TargetView {
    topic: String,
    group: String,
    /// Records an instance is blocked on.
    blocked: Vec<BlockedView>,
    /// Block and unblock commands in force, by scope (`partition` null: the topic).
    modes: Vec<ModeView>,
    /// The most recent skips, newest first.
    skips: Vec<SkipView>,
    /// Records waiting per retry tier.
    tiers: Vec<TierView>,
    /// Records in the dead-letter queue (`None` if it could not be read).
    dead_letters: Option<i64>,
    /// Dead letters redriven so far.
    redriven: usize,
    /// What could not be read this time.
    error: Option<String>,
}

#[derive(Serialize)]
struct BlockedView {
    partition: i32,
    offset: i64,
    /// The record's key (lossy UTF-8), once read from the source topic.
    key: Option<String>,
    error: String,
    since_ms: u64,
    attempts: u32,
    /// A skip issued for it that the instance has not acted on yet.
    skip: Option<ByView>,
}

#[derive(Serialize)]
struct ByView {
    by: String,
    at_ms: u64,
}

#[derive(Serialize)]
struct ModeView {
    partition: Option<i32>,
    blocking: bool,
    by: String,
    at_ms: u64,
}

#[derive(Serialize)]
struct SkipView {
    partition: i32,
    offset: i64,
    by: String,
    at_ms: u64,
}

#[derive(Serialize)]
struct TierView {
    topic: String,
    waiting: i64,
}

impl TargetView {
    fn new(target: &Target) -> Self {
        Self {
            topic: target.topic.clone(),
            group: target.group.clone(),
            blocked: Vec::new(),
            modes: Vec::new(),
            skips: Vec::new(),
            tiers: Vec::new(),
            dead_letters: None,
            redriven: 0,
            error: None,
        }
    }

    /// Fills in what the control topic says.
    fn control(&mut self, state: &ControlState) {
        self.blocked = state
            .blocked
            .values()
            .map(|b| BlockedView {
                partition: b.partition,
                offset: b.offset,
                key: None,
                error: b.error.clone(),
                since_ms: b.since_ms,
                attempts: b.attempts,
                skip: state.skip_of(b.partition, b.offset).map(|s| ByView { by: s.by.clone(), at_ms: s.at_ms }),
            })
            .collect();
        self.modes = state
            .modes
            .iter()
            .map(|(partition, (_, s))| ModeView {
                partition: *partition,
                blocking: matches!(s.command, Command::Block { .. }),
                by: s.by.clone(),
                at_ms: s.at_ms,
            })
            .collect();
        let mut skips: Vec<SkipView> = state
            .skips
            .iter()
            .map(|((partition, offset), s)| SkipView {
                partition: *partition,
                offset: *offset,
                by: s.by.clone(),
                at_ms: s.at_ms,
            })
            .collect();
        skips.sort_by_key(|s| std::cmp::Reverse(s.at_ms));
        skips.truncate(SKIPS_SHOWN);
        self.skips = skips;
        self.redriven = state.redriven.len();
    }
}

/// Gathers the status of every pair, publishes it to `out` when it changes, and goes on every
/// `refresh` or at the next change of a control topic, until aborted.
async fn gather(targets: Vec<Arc<Target>>, refresh: Duration, out: watch::Sender<Option<Arc<str>>>) {
    let mut watchers: Vec<Watcher> = targets.into_iter().map(Watcher::new).collect();
    loop {
        let mut views = Vec::with_capacity(watchers.len());
        for w in &mut watchers {
            views.push(w.status().await);
        }
        let json: Arc<str> =
            serde_json::to_string(&StatusView { targets: views }).expect("the status serializes").into();
        out.send_if_modified(|current| {
            let changed = current.as_deref() != Some(&*json);
            if changed {
                *current = Some(json);
            }
            changed
        });
        let followers: Vec<ControlFollower> = watchers.iter().filter_map(|w| w.follower.clone()).collect();
        let any_change = async {
            if followers.is_empty() {
                std::future::pending::<()>().await;
            }
            futures_util::future::select_all(followers.iter().map(|f| Box::pin(f.changed()))).await;
        };
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            _ = any_change => {}
        }
    }
}

/// The gathering side of one pair: its control topic followed, and the keys of its blocked
/// records.
struct Watcher {
    target: Arc<Target>,
    follower: Option<ControlFollower>,
    /// Keys of blocked records by (partition, offset); `None`: the record has none, or is gone.
    keys: HashMap<(i32, i64), Option<String>>,
    /// Reads blocked records' keys from the source topic.
    reader: Option<Consumer>,
}

impl Watcher {
    fn new(target: Arc<Target>) -> Self {
        Self { target, follower: None, keys: HashMap::new(), reader: None }
    }

    async fn status(&mut self) -> TargetView {
        let mut view = TargetView::new(&self.target);
        match tokio::time::timeout(GATHER_BOUND, self.fill(&mut view)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => view.error = Some(e.to_string()),
            Err(_) => view.error = Some(format!("reading the status took more than {} s", GATHER_BOUND.as_secs())),
        }
        view
    }

    async fn fill(&mut self, view: &mut TargetView) -> kafka_wire::Result<()> {
        let target = self.target.clone();
        let control = &target.control;
        let follower = match &self.follower {
            Some(f) => f.clone(),
            None => {
                let topic = control.control_topic();
                provision_control(&Admin::new(control.client().clone()), &topic).await?;
                let f = ControlFollower::start(control.client(), control.config(), &topic).await?;
                self.follower = Some(f.clone());
                f
            }
        };
        let state = follower.state().clone();
        view.control(&state);
        self.keys.retain(|k, _| state.blocked.contains_key(k));
        for b in &mut view.blocked {
            let at = (b.partition, b.offset);
            if !self.keys.contains_key(&at) {
                match self.key_of(b.partition, b.offset).await {
                    Ok(key) => {
                        self.keys.insert(at, key);
                    }
                    Err(e) => tracing::debug!(error = %e, partition = b.partition, offset = b.offset,
                        "retry dashboard: reading a blocked record's key failed; trying again later"),
                }
            }
            b.key = self.keys.get(&at).cloned().flatten();
        }
        let names = names_of(control).await?;
        let (waiting, dead_letters) = control.counts(&names.tiers, &names.dead_letter).await?;
        view.tiers = waiting.into_iter().map(|(topic, waiting)| TierView { topic, waiting }).collect();
        view.dead_letters = Some(dead_letters);
        Ok(())
    }

    /// The key of the record at `offset` of `partition` of the source topic (`None` if it has
    /// none or is gone).
    async fn key_of(&mut self, partition: i32, offset: i64) -> kafka_wire::Result<Option<String>> {
        let control = &self.target.control;
        let reader = match &self.reader {
            Some(r) => r,
            None => {
                let config = ConsumerConfig::new(&control.config().bootstrap_servers.join(","))
                    .auto_offset_reset(OffsetReset::Earliest);
                self.reader.insert(Consumer::with_client(control.client().clone(), config)?)
            }
        };
        let tp = TopicPartition::new(self.target.topic.as_str(), partition);
        reader.assign([tp.clone()]);
        reader.seek(&tp, offset)?;
        let found = tokio::time::timeout(KEY_BOUND, async {
            loop {
                let records = reader.poll(Duration::from_millis(250)).await?;
                if let Some(r) = records.iter().find(|r| r.partition == partition && r.offset >= offset) {
                    return Ok::<_, kafka_wire::Error>((r.offset == offset).then(|| key_text(r)).flatten());
                }
            }
        })
        .await;
        // Fetch nothing more until the next lookup.
        reader.assign([]);
        found.map_err(|_| kafka_wire::Error::Timeout {
            what: format!("reading {}-{partition} at {offset}", self.target.topic),
            after: KEY_BOUND,
        })?
    }
}

fn key_text(record: &ConsumerRecord) -> Option<String> {
    record.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned())
}

/// The pair's topic names, with as many tiers as there are `<topic>-<group>-retry-<n>` topics.
async fn names_of(control: &RetryControl) -> kafka_wire::Result<TopicNames> {
    let prefix = format!("{}-{}-retry-", control.source(), control.group());
    let tiers = Admin::new(control.client().clone())
        .list_topics()
        .await?
        .into_iter()
        .filter_map(|t| t.name.strip_prefix(&prefix).and_then(|n| n.parse::<usize>().ok()))
        .max()
        .map_or(0, |n| n + 1);
    Ok(TopicNames::new(control.source(), control.group(), tiers))
}

// ---- The HTTP side ---------------------------------------------------------------------------

struct Shared {
    targets: Vec<Arc<Target>>,
    operator: String,
    /// Host names answered besides IP addresses and `localhost`.
    hosts: Vec<String>,
    /// The latest status document (`None` until the first is gathered; closed when the
    /// gathering stops).
    status: watch::Receiver<Option<Arc<str>>>,
    /// The pages' Content-Security-Policy (whether they may be framed).
    csp: &'static str,
    /// The gathering of a nested dashboard, stopped with the last handle to its router.
    _gathering: Option<AbortOnDrop>,
}

impl Shared {
    fn target(&self, topic: &str, group: &str) -> Result<&Target, ApiError> {
        self.targets.iter().find(|t| t.topic == topic && t.group == group).map(|t| &**t).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("this dashboard does not show topic {topic} for group {group}"),
            )
        })
    }
}

/// The routes; `nested`: served under another server's path (see [`Dashboard::router`]).
fn router(shared: Arc<Shared>, nested: bool) -> Router {
    let csp = shared.csp;
    // Nested, the page loads its script and style relative to where it is (the script then
    // finds the API the same way).
    let page = if nested {
        Bytes::from(PAGE.replace("\"/app.js\"", "\"app.js\"").replace("\"/style.css\"", "\"style.css\""))
    } else {
        Bytes::from_static(PAGE.as_bytes())
    };
    Router::new()
        .route("/", get(move || async move { asset(csp, "text/html; charset=utf-8", page) }))
        .route("/app.js", get(move || async move { asset(csp, "text/javascript; charset=utf-8", SCRIPT) }))
        .route("/style.css", get(move || async move { asset(csp, "text/css; charset=utf-8", STYLE) }))
        .route("/api/status", get(status))
        .route("/api/events", get(events))
        .route("/api/skip", post(skip))
        .route("/api/unblock", post(unblock))
        .route("/api/block", post(block))
        .route("/api/redrive", post(redrive))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page".into()) })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(shared.clone(), known_host))
        .with_state(shared)
}

/// Answers only requests addressed to this server by an IP address, `localhost` or an allowed
/// name (see [`Dashboard::allow_host`]).
async fn known_host(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    match host {
        Some(host) if host_allowed(host, &shared.hosts) => next.run(request).await,
        Some(host) => ApiError::new(StatusCode::FORBIDDEN, format!("this dashboard does not answer for host {host}"))
            .into_response(),
        None => ApiError::new(StatusCode::BAD_REQUEST, "a request without a Host header".into()).into_response(),
    }
}

/// Whether `host` (a Host header: a name or address, maybe with a port) is an IP address,
/// `localhost` or one of `allowed`.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split_once(']').is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(host, |(name, _)| name),
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn asset(csp: &'static str, content_type: &'static str, body: impl Into<axum::body::Body>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body.into(),
    )
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let mut status = shared.status.clone();
    let waited = tokio::time::timeout(FIRST_STATUS_BOUND, status.wait_for(Option::is_some)).await;
    let json = match waited {
        Ok(Ok(json)) => json.clone().expect("waited for a status"),
        Ok(Err(_)) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the dashboard is stopping".into())),
        Err(_) => {
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the status is not gathered yet".into()));
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response())
}

async fn events(State(shared): State<Arc<Shared>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut status = shared.status.clone();
    // The first event is the status as it is now.
    status.mark_changed();
    let events = stream::unfold(status, |mut status| async move {
        loop {
            // Ends the stream when the gathering stops (shutdown).
            status.changed().await.ok()?;
            let json = status.borrow_and_update().clone();
            if let Some(json) = json {
                return Some((Ok(Event::default().event("status").data(&*json)), status));
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkipRequest {
    topic: String,
    group: String,
    partition: i32,
    offset: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeRequest {
    topic: String,
    group: String,
    #[serde(default)]
    partition: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    topic: String,
    group: String,
    /// Required: a request that forgets it must not write.
    dry_run: bool,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    from_ms: Option<i64>,
    #[serde(default)]
    until_ms: Option<i64>,
    #[serde(default)]
    to_tier: bool,
}

async fn skip(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let by = operator(&shared, &headers)?;
    let request: SkipRequest = json_body(&body)?;
    if request.partition < 0 || request.offset < 0 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "partition and offset must not be negative".into()));
    }
    let target = shared.target(&request.topic, &request.group)?;
    issue(target, Command::Skip { partition: request.partition, offset: request.offset }, &by).await
}

async fn unblock(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let by = operator(&shared, &headers)?;
    let request: ModeRequest = json_body(&body)?;
    let target = mode_target(&shared, &request)?;
    issue(target, Command::Unblock { partition: request.partition }, &by).await
}

async fn block(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let by = operator(&shared, &headers)?;
    let request: ModeRequest = json_body(&body)?;
    let target = mode_target(&shared, &request)?;
    issue(target, Command::Block { partition: request.partition }, &by).await
}

fn mode_target<'a>(shared: &'a Shared, request: &ModeRequest) -> Result<&'a Target, ApiError> {
    if request.partition.is_some_and(|p| p < 0) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "partition must not be negative".into()));
    }
    shared.target(&request.topic, &request.group)
}

async fn issue(target: &Target, command: Command, by: &str) -> Result<Response, ApiError> {
    let stamped = bounded("writing the command", target.control.issue(command, by)).await?;
    tracing::info!(topic = %target.topic, group = %target.group, command = ?stamped.command, by = %stamped.by,
        "retry dashboard: command issued");
    Ok(Json(serde_json::json!({ "issued": stamped })).into_response())
}

async fn redrive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let by = operator(&shared, &headers)?;
    let request: RedriveRequest = json_body(&body)?;
    let target = shared.target(&request.topic, &request.group)?;
    let names = bounded("reading the topic names", names_of(&target.control)).await?;
    let to = if request.to_tier {
        let first = names.tiers.first().ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{} has no retry tier for group {}", request.topic, request.group),
            )
        })?;
        RedriveTarget::FirstTier(first.clone())
    } else {
        RedriveTarget::Original
    };
    let filter = RedriveFilter {
        key: request.key.map(Bytes::from),
        from_ms: request.from_ms,
        until_ms: request.until_ms,
        error_contains: request.error,
    };
    let done =
        bounded("redriving", target.control.redrive(&names.dead_letter, &filter, &to, request.dry_run, &by)).await?;
    if !request.dry_run {
        tracing::info!(topic = %target.topic, group = %target.group, count = done.len(), by = %by,
            "retry dashboard: dead letters redriven");
    }
    let redriven: Vec<serde_json::Value> = done.iter().map(redriven_json).collect();
    Ok(Json(serde_json::json!({ "dry_run": request.dry_run, "redriven": redriven })).into_response())
}

fn redriven_json(r: &Redriven) -> serde_json::Value {
    serde_json::json!({
        "dead_letter": { "partition": r.dead_letter.0, "offset": r.dead_letter.1 },
        "original": { "topic": r.original.0, "partition": r.original.1, "offset": r.original.2 },
        "key": r.key.as_deref().map(String::from_utf8_lossy),
        "to": r.to,
    })
}

/// Who issues a mutating request, once it is known to be one a browser sends only from the
/// dashboard's own page: JSON (a cross-site form cannot send it, a cross-site script cannot
/// without a preflight), and from no other origin.
fn operator(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "commands are sent with Content-Type: application/json".into(),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let own = host.is_some_and(|host| origin.to_str().ok() == Some(format!("http://{host}").as_str()));
        if !own {
            let origin = String::from_utf8_lossy(origin.as_bytes());
            return Err(ApiError::new(StatusCode::FORBIDDEN, format!("requests from {origin} are refused")));
        }
    }
    match headers.get("x-operator") {
        None => Ok(shared.operator.clone()),
        Some(value) => {
            let name = value
                .to_str()
                .map(str::trim)
                .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "X-Operator must be printable ASCII".into()))?;
            if name.is_empty() {
                Ok(shared.operator.clone())
            } else if name.len() > OPERATOR_MAX {
                Err(ApiError::new(StatusCode::BAD_REQUEST, format!("X-Operator is longer than {OPERATOR_MAX} bytes")))
            } else {
                Ok(name.to_owned())
            }
        }
    }
}

fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

/// `work` bounded by [`REQUEST_BOUND`], its errors as answers.
async fn bounded<T>(what: &str, work: impl Future<Output = kafka_wire::Result<T>>) -> Result<T, ApiError> {
    match tokio::time::timeout(REQUEST_BOUND, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("{what} failed: {e}"))),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{what}: Kafka did not answer in {} s", REQUEST_BOUND.as_secs()),
        )),
    }
}

/// An answer that is an error: its status and `{"error": message}`.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: String) -> Self {
        Self { status, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        let (_, status) = watch::channel(None);
        Shared {
            targets: Vec::new(),
            operator: "configured".into(),
            hosts: Vec::new(),
            status,
            csp: CSP,
            _gathering: None,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_command_needs_a_json_content_type() {
        let s = shared();
        for refused in
            [&[][..], &[("content-type", "text/plain")], &[("content-type", "application/x-www-form-urlencoded")]]
        {
            let e = operator(&s, &headers(refused)).expect_err("refused");
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{refused:?}");
        }
        let ok = headers(&[("content-type", "Application/JSON; charset=utf-8")]);
        assert_eq!(operator(&s, &ok).ok().as_deref(), Some("configured"));
    }

    #[test]
    fn a_command_from_another_origin_is_refused() {
        let s = shared();
        let foreign = headers(&[
            ("content-type", "application/json"),
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert_eq!(operator(&s, &foreign).err().map(|e| e.status), Some(StatusCode::FORBIDDEN));
        let null = headers(&[("content-type", "application/json"), ("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert_eq!(operator(&s, &null).err().map(|e| e.status), Some(StatusCode::FORBIDDEN));
        let own = headers(&[
            ("content-type", "application/json"),
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(operator(&s, &own).is_ok());
    }

    #[test]
    fn the_operator_header_names_who_issues_the_command() {
        let s = shared();
        let named = headers(&[("content-type", "application/json"), ("x-operator", " alice ")]);
        assert_eq!(operator(&s, &named).ok().as_deref(), Some("alice"));
        let blank = headers(&[("content-type", "application/json"), ("x-operator", "  ")]);
        assert_eq!(operator(&s, &blank).ok().as_deref(), Some("configured"));
        let mut long = headers(&[("content-type", "application/json")]);
        long.insert("x-operator", HeaderValue::from_str(&"x".repeat(OPERATOR_MAX + 1)).unwrap());
        assert_eq!(operator(&s, &long).err().map(|e| e.status), Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn only_addresses_localhost_and_allowed_names_are_answered() {
        let allowed = vec!["dashboard.internal".to_owned()];
        for host in
            ["127.0.0.1:8080", "127.0.0.1", "[::1]:8080", "localhost:3000", "LOCALHOST", "Dashboard.Internal:80"]
        {
            assert!(host_allowed(host, &allowed), "{host} refused");
        }
        for host in
            ["evil.example:8080", "evil.example", "[evil]:80", "127.0.0.1.evil.example", "localhost.evil:80", ""]
        {
            assert!(!host_allowed(host, &allowed), "{host} answered");
        }
    }

    #[test]
    fn a_redrive_request_must_say_whether_it_is_a_dry_run() {
        let Err(missing) = json_body::<RedriveRequest>(br#"{"topic":"t","group":"g"}"#) else { panic!("accepted") };
        assert_eq!(missing.status, StatusCode::BAD_REQUEST);
        assert!(missing.message.contains("dry_run"), "{}", missing.message);
        let unknown = json_body::<SkipRequest>(br#"{"topic":"t","group":"g","partition":0,"offset":1,"x":1}"#);
        assert!(unknown.is_err(), "an unknown field is accepted");
    }
}
