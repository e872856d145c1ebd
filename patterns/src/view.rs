//! View stores for the [`Projector`](crate::projector::Projector): rows keyed by entity id, each
//! with the version (source offset) it was written at, so that a replay never regresses a row.
//!
//! - [`EmbeddedStore`]: a file of its own, through `redb` (pure Rust), for one process.
//! - [`PostgresStore`]: a PostgreSQL table, through `tokio-postgres` (pure Rust, no TLS), for
//!   real deployments and for several readers.
//!
//! A deleted row is kept as a marker with its version (so that an older snapshot replayed after
//! it cannot bring it back) and is invisible to reads. [`query_router`] serves a store read-only
//! over HTTP.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// One change to apply: the row for `key` becomes `value` (JSON; `None` deletes it) unless the
/// store holds a version at least as new.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The entity id.
    pub key: String,
    /// The change's version: the source record's offset (a key keeps its partition).
    pub version: i64,
    /// The row's JSON, or `None` to delete it.
    pub value: Option<Vec<u8>>,
}

/// A row as read.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// The entity id.
    pub key: String,
    /// The version it was written at.
    pub version: i64,
    /// Its JSON.
    pub value: serde_json::Value,
}

/// A view store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The embedded database failed.
    #[error("embedded view store: {0}")]
    Embedded(String),
    /// PostgreSQL failed (or could not be reached).
    #[error("PostgreSQL view store: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A stored row is not what this crate writes.
    #[error("view store row {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The row.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A change's value is not JSON.
    #[error("the row for {key:?} is not JSON: {reason}")]
    NotJson {
        /// The row.
        key: String,
        /// The parser's complaint.
        reason: String,
    },
}

/// Where a projector writes its rows and a query service reads them.
pub trait ViewStore: Send + Sync + 'static {
    /// Applies `changes` in one transaction, as if in order, each only if it is newer than the
    /// row's version; returns how many rows changed (a row changed twice counts once). Durable
    /// when it returns.
    fn apply(&self, changes: Vec<Change>) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// The row for `key`, unless absent or deleted.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Row>, StoreError>> + Send;

    /// Up to `limit` rows whose key starts with `prefix`, after `after` (exclusive), by key.
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Row>, StoreError>> + Send;

    /// How many rows there are (deleted ones not counted).
    fn count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

fn parse_json(key: &str, bytes: &[u8]) -> Result<serde_json::Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { key: key.to_owned(), reason: e.to_string() })
}

// ---------------------------------------------------------------------------------------------
// Embedded (redb)

const ROWS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("rows");

/// A view store in a file, through `redb`. Each stored value is the version (8 bytes, big
/// endian), a deleted flag (1 byte) and the row's JSON.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<redb::Database>,
}

fn embedded(e: impl std::fmt::Display) -> StoreError {
    StoreError::Embedded(e.to_string())
}

impl EmbeddedStore {
    /// Opens the store at `path`, creating it if missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let db = redb::Database::create(path).map_err(embedded)?;
        let txn = db.begin_write().map_err(embedded)?;
        txn.open_table(ROWS).map_err(embedded)?;
        txn.commit().map_err(embedded)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs `f` on tokio's blocking pool: redb's calls block (and a commit syncs the file).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(embedded)?
    }
}

fn decode_stored(key: &str, stored: &[u8]) -> Result<(i64, Option<serde_json::Value>), StoreError> {
    let corrupt = || StoreError::Corrupt { key: key.to_owned(), reason: format!("{} bytes", stored.len()) };
    let (version, rest) = stored.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let (deleted, json) = rest.split_first().ok_or_else(corrupt)?;
    let value = if *deleted == 0 { Some(parse_json(key, json)?) } else { None };
    Ok((i64::from_be_bytes(*version), value))
}

fn encode_stored(version: i64, value: Option<&[u8]>) -> Vec<u8> {
    let json = value.unwrap_or_default();
    let mut out = Vec::with_capacity(9 + json.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.push(u8::from(value.is_none()));
    out.extend_from_slice(json);
    out
}

impl ViewStore for EmbeddedStore {
    async fn apply(&self, changes: Vec<Change>) -> Result<usize, StoreError> {
        let changes = newest_per_key(changes);
        self.blocking(move |db| {
            use redb::ReadableTable;
            let txn = db.begin_write().map_err(embedded)?;
            let mut changed = 0;
            {
                let mut table = txn.open_table(ROWS).map_err(embedded)?;
                for c in &changes {
                    let current = table.get(c.key.as_str()).map_err(embedded)?.map(|v| v.value().to_vec());
                    if let Some(stored) = current {
                        if decode_stored(&c.key, &stored)?.0 >= c.version {
                            continue;
                        }
                    }
                    table
                        .insert(c.key.as_str(), encode_stored(c.version, c.value.as_deref()).as_slice())
                        .map_err(embedded)?;
                    changed += 1;
                }
            }
            txn.commit().map_err(embedded)?;
            Ok(changed)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Row>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            use redb::{ReadableDatabase, ReadableTable};
            let txn = db.begin_read().map_err(embedded)?;
            let table = txn.open_table(ROWS).map_err(embedded)?;
            let Some(stored) = table.get(key.as_str()).map_err(embedded)? else { return Ok(None) };
            let (version, value) = decode_stored(&key, stored.value())?;
            Ok(value.map(|value| Row { key, version, value }))
        })
        .await
    }

    async fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<Row>, StoreError> {
        let (prefix, after) = (prefix.to_owned(), after.map(str::to_owned));
        self.blocking(move |db| {
            use redb::{ReadableDatabase, ReadableTable};
            let txn = db.begin_read().map_err(embedded)?;
            let table = txn.open_table(ROWS).map_err(embedded)?;
            let start = match &after {
                Some(a) if a.as_str() >= prefix.as_str() => a.as_str(),
                _ => prefix.as_str(),
            };
            let mut rows = Vec::new();
            for entry in table.range(start..).map_err(embedded)? {
                let (k, v) = entry.map_err(embedded)?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) || rows.len() >= limit {
                    break;
                }
                if after.as_deref() == Some(key) {
                    continue;
                }
                if let (version, Some(value)) = decode_stored(key, v.value())? {
                    rows.push(Row { key: key.to_owned(), version, value });
                }
            }
            Ok(rows)
        })
        .await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.blocking(move |db| {
            use redb::{ReadableDatabase, ReadableTable};
            let txn = db.begin_read().map_err(embedded)?;
            let table = txn.open_table(ROWS).map_err(embedded)?;
            let mut n = 0;
            for entry in table.iter().map_err(embedded)? {
                let (k, v) = entry.map_err(embedded)?;
                if decode_stored(k.value(), v.value())?.1.is_some() {
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }
}

/// Each key's newest change of `changes` (the first one on equal versions, as applying them in
/// order would leave it), in first-seen key order.
fn newest_per_key(changes: Vec<Change>) -> Vec<Change> {
    let mut slot: std::collections::HashMap<String, usize> = std::collections::HashMap::with_capacity(changes.len());
    let mut latest: Vec<Change> = Vec::with_capacity(changes.len());
    for c in changes {
        match slot.get(&c.key) {
            Some(&i) => {
                if c.version > latest[i].version {
                    latest[i] = c;
                }
            }
            None => {
                slot.insert(c.key.clone(), latest.len());
                latest.push(c);
            }
        }
    }
    latest
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A view store in a PostgreSQL table `(key text primary key, version bigint, deleted boolean,
/// value jsonb)`, created if missing.
#[derive(Clone)]
pub struct PostgresStore {
    client: Arc<tokio::sync::Mutex<tokio_postgres::Client>>,
    table: String,
}

impl PostgresStore {
    /// Connects with `config` (e.g. `host=127.0.0.1 user=postgres password=… dbname=views`,
    /// without TLS: loopback or a trusted network) and creates `table` if missing. `table` is a
    /// plain identifier (letters, digits, `_`).
    pub async fn connect(config: &str, table: &str) -> Result<Self, StoreError> {
        if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Corrupt { key: table.to_owned(), reason: "not a plain table name".into() });
        }
        let (client, connection) = tokio_postgres::connect(config, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL view store connection ended");
            }
        });
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (key text PRIMARY KEY, version bigint NOT NULL, \
                 deleted boolean NOT NULL, value jsonb)"
            ))
            .await?;
        Ok(Self { client: Arc::new(tokio::sync::Mutex::new(client)), table: table.to_owned() })
    }

    fn row(r: &tokio_postgres::Row) -> Row {
        Row { key: r.get(0), version: r.get(1), value: r.get(2) }
    }
}

impl ViewStore for PostgresStore {
    async fn apply(&self, changes: Vec<Change>) -> Result<usize, StoreError> {
        // One statement for the whole batch (a round trip per row capped the store at ~11 k
        // rows/s). ON CONFLICT may touch a row only once per statement, so each key keeps its
        // newest change: the ones before it would be overwritten within this transaction anyway.
        let latest = newest_per_key(changes);
        let (mut keys, mut versions, mut deleted, mut values) = (
            Vec::with_capacity(latest.len()),
            Vec::with_capacity(latest.len()),
            Vec::with_capacity(latest.len()),
            Vec::with_capacity(latest.len()),
        );
        for c in latest {
            let value = match &c.value {
                Some(bytes) => Some(
                    serde_json::from_slice::<serde_json::Value>(bytes)
                        .map_err(|e| StoreError::NotJson { key: c.key.clone(), reason: e.to_string() })?,
                ),
                None => None,
            };
            deleted.push(value.is_none());
            values.push(value);
            versions.push(c.version);
            keys.push(c.key);
        }
        if keys.is_empty() {
            return Ok(0);
        }
        let client = self.client.lock().await;
        let changed = client
            .execute(
                &format!(
                    "INSERT INTO {t} (key, version, deleted, value) \
                     SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::boolean[], $4::jsonb[]) \
                     ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, deleted = EXCLUDED.deleted, \
                     value = EXCLUDED.value WHERE {t}.version < EXCLUDED.version",
                    t = self.table
                ),
                &[&keys, &versions, &deleted, &values],
            )
            .await?;
        Ok(changed as usize)
    }

    async fn get(&self, key: &str) -> Result<Option<Row>, StoreError> {
        let client = self.client.lock().await;
        let sql = format!("SELECT key, version, value FROM {} WHERE key = $1 AND NOT deleted", self.table);
        Ok(client.query_opt(&sql, &[&key]).await?.as_ref().map(Self::row))
    }

    async fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<Row>, StoreError> {
        let client = self.client.lock().await;
        // A prefix match on text without LIKE's wildcards: the key's first characters.
        let sql = format!(
            "SELECT key, version, value FROM {} WHERE NOT deleted AND left(key, char_length($1)) = $1 \
             AND ($2::text IS NULL OR key COLLATE \"C\" > $2) ORDER BY key COLLATE \"C\" LIMIT $3",
            self.table
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(client.query(&sql, &[&prefix, &after, &limit]).await?.iter().map(Self::row).collect())
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let client = self.client.lock().await;
        let n: i64 =
            client.query_one(&format!("SELECT count(*) FROM {} WHERE NOT deleted", self.table), &[]).await?.get(0);
        Ok(n.max(0) as u64)
    }
}

// ---------------------------------------------------------------------------------------------
// Query service

#[derive(Deserialize)]
struct ScanQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
}

/// The most rows one `GET /rows` answers.
pub const MAX_SCAN: usize = 1000;

/// A read-only HTTP service over `store`: `GET /rows/{key}` (404 if absent), `GET
/// /rows?prefix=&after=&limit=` (by key, at most [`MAX_SCAN`]), `GET /count`.
pub fn query_router<S: ViewStore>(store: Arc<S>) -> Router {
    Router::new()
        .route("/rows/{key}", get(get_row::<S>))
        .route("/rows", get(scan_rows::<S>))
        .route("/count", get(count_rows::<S>))
        .with_state(store)
}

fn failed(e: StoreError) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
}

async fn get_row<S: ViewStore>(State(store): State<Arc<S>>, UrlPath(key): UrlPath<String>) -> Response {
    match store.get(&key).await {
        Ok(Some(row)) => Json(row).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no row {key:?}")).into_response(),
        Err(e) => failed(e),
    }
}

async fn scan_rows<S: ViewStore>(State(store): State<Arc<S>>, Query(q): Query<ScanQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).min(MAX_SCAN);
    match store.scan(&q.prefix, q.after.as_deref(), limit).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => failed(e),
    }
}

async fn count_rows<S: ViewStore>(State(store): State<Arc<S>>) -> Response {
    match store.count().await {
        Ok(n) => Json(serde_json::json!({ "count": n })).into_response(),
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, version: i64, value: Option<&str>) -> Change {
        Change { key: key.into(), version, value: value.map(|v| v.as_bytes().to_vec()) }
    }

    #[tokio::test]
    async fn an_older_version_never_overwrites_a_newer_one_and_a_deletion_stays_deleted() {
        let dir = std::env::temp_dir().join(format!("patterns-view-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = EmbeddedStore::open(dir.join("versions.redb")).expect("open");
        assert_eq!(
            store.apply(vec![change("a", 5, Some(r#"{"v":5}"#)), change("b", 1, Some("1"))]).await.expect("apply"),
            2
        );
        assert_eq!(store.apply(vec![change("a", 3, Some(r#"{"v":3}"#))]).await.expect("apply"), 0);
        assert_eq!(store.apply(vec![change("a", 5, Some(r#"{"v":"same"}"#))]).await.expect("apply"), 0);
        assert_eq!(store.get("a").await.expect("get").expect("a").value, serde_json::json!({"v": 5}));
        assert_eq!(store.apply(vec![change("a", 9, None)]).await.expect("apply"), 1);
        assert_eq!(store.apply(vec![change("a", 7, Some(r#"{"v":7}"#))]).await.expect("apply"), 0);
        assert_eq!(store.get("a").await.expect("get"), None, "a deleted row stays deleted");
        assert_eq!(store.count().await.expect("count"), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_batch_keeps_each_key_s_newest_change_and_the_first_of_equal_versions() {
        let latest = newest_per_key(vec![
            change("a", 1, Some("1")),
            change("b", 4, Some("4")),
            change("a", 3, Some("3")),
            change("a", 2, Some("2")),
            change("b", 4, Some("later")),
            change("c", 1, None),
        ]);
        assert_eq!(latest, vec![change("a", 3, Some("3")), change("b", 4, Some("4")), change("c", 1, None)]);
    }

    #[tokio::test]
    async fn a_scan_reads_one_prefix_in_key_order_in_pages() {
        let dir = std::env::temp_dir().join(format!("patterns-scan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = EmbeddedStore::open(dir.join("scan.redb")).expect("open");
        let keys = ["site-1", "site-2", "site-3", "sitf", "other", "site-0"];
        store.apply(keys.iter().map(|k| change(k, 1, Some("{}"))).collect()).await.expect("apply");
        store.apply(vec![change("site-2", 2, None)]).await.expect("delete");
        let page = |after: Option<&'static str>| {
            let store = store.clone();
            async move { store.scan("site-", after, 2).await.expect("scan").into_iter().map(|r| r.key).collect::<Vec<_>>() }
        };
        assert_eq!(page(None).await, ["site-0", "site-1"]);
        assert_eq!(page(Some("site-1")).await, ["site-3"]);
        assert!(page(Some("site-3")).await.is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
