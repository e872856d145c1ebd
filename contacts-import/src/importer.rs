//! The Contacts Importer side: the view the importers write through (pattern 1), the importer
//! itself (validation against the `countries` store, pattern 3; a flaky lookup retried by the
//! `retry` crate, pattern 4), and the Jobs-Completed atomic store (pattern 6) whose update
//! callback notifies the browser through the gateway (pattern 2) exactly once.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use kafka_wire::{ConsumerRecord, Producer, ProducerRecord};
use kvstore::{AtomicConfig, AtomicKvStore, AtomicProcessor, Command, KvStore, Outcome};
use patterns::view::{Change, EmbeddedStore, Row, StoreError, ViewStore};
use retry::Failed;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::csv::Contact;

/// A country of the `countries` store (keyed by its ISO code).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Country {
    /// The country's name.
    pub name: String,
    /// Its international dialling code, what the flaky lookup returns.
    pub dial: String,
}

/// One import job, as the jobs service produces it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// The import request.
    pub request: String,
    /// The browser's channel.
    pub channel: String,
    /// The job's number, from 0.
    pub job: u64,
    /// The request's number of jobs.
    pub total: u64,
    /// The contacts.
    pub contacts: Vec<Contact>,
}

/// The view key of a request's contact: its contacts sort together, in file order.
pub fn contact_key(request: &str, line: u64) -> String {
    format!("{request}/{line:08}")
}

// ---- The view ---------------------------------------------------------------------------------

/// The contacts view: the embedded store the projector writes, and a signal of every write so
/// that an importer can wait for its contacts to be in the view before it reports its job done
/// (then "import complete" means the contacts can be browsed).
pub struct ContactsView {
    store: EmbeddedStore,
    applied: watch::Sender<u64>,
}

impl ContactsView {
    /// The view in the store file `path` (created if missing).
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        Ok(Self { store: EmbeddedStore::open(path)?, applied: watch::channel(0).0 })
    }

    /// Waits until every `(key, offset)` of `written` is in the view at that version or a newer
    /// one; gives up after `bound`. The keys must be those of contacts of `request` on `lines`
    /// (one scan of that range reads them all). Cancel-safe: it only reads.
    pub async fn wait_for(
        &self,
        request: &str,
        lines: std::ops::RangeInclusive<u64>,
        written: &[(String, i64)],
        bound: Duration,
    ) -> Result<(), String> {
        let mut applied = self.applied.subscribe();
        let deadline = tokio::time::Instant::now() + bound;
        let prefix = format!("{request}/");
        let after = contact_key(request, lines.start().saturating_sub(1));
        let limit = (lines.end() - lines.start() + 1) as usize;
        loop {
            applied.borrow_and_update();
            let rows = self.store.scan(&prefix, Some(&after), limit).await.map_err(|e| e.to_string())?;
            let versions: HashMap<&str, i64> = rows.iter().map(|r| (r.key.as_str(), r.version)).collect();
            let missing = written.iter().filter(|(k, o)| versions.get(k.as_str()).is_none_or(|v| v < o)).count();
            if missing == 0 {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("the view is closed".into()),
                Err(_) => return Err(format!("{missing} contacts were not in the view within {bound:?}")),
            }
        }
    }
}

impl ViewStore for ContactsView {
    async fn apply(&self, changes: Vec<Change>) -> Result<usize, StoreError> {
        let changed = self.store.apply(changes).await?;
        self.applied.send_modify(|n| *n += 1);
        Ok(changed)
    }

    async fn get(&self, key: &str) -> Result<Option<Row>, StoreError> {
        self.store.get(key).await
    }

    async fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<Row>, StoreError> {
        self.store.scan(prefix, after, limit).await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.store.count().await
    }
}

// ---- The Jobs-Completed store -----------------------------------------------------------------

/// The Jobs-Completed store's function: adds a job to its request's set of jobs done (once, so a
/// job an importer reports again is not counted twice) with its counts.
///
/// The value: `{"channel", "total", "done": [jobs, sorted], "imported", "rejected", "last_by"}`
/// (`last_by`: the importer of the job done last).
pub fn job_done(old: Option<&Value>, arg: &Value) -> Result<Option<Value>, String> {
    let job = arg["job"].as_u64().ok_or("the argument has no job number")?;
    let total = arg["total"].as_u64().ok_or("the argument has no total")?;
    if job >= total {
        return Err(format!("job {job} of a request of {total} jobs"));
    }
    let mut value = old.cloned().unwrap_or_else(
        || json!({ "channel": arg["channel"], "total": total, "done": [], "imported": 0, "rejected": 0 }),
    );
    let mut done: Vec<u64> =
        serde_json::from_value(value["done"].clone()).map_err(|e| format!("the value has no done jobs: {e}"))?;
    if let Err(at) = done.binary_search(&job) {
        done.insert(at, job);
        for count in ["imported", "rejected"] {
            value[count] = json!(value[count].as_u64().unwrap_or(0) + arg[count].as_u64().unwrap_or(0));
        }
        value["done"] = json!(done);
        value["last_by"] = arg["importer"].clone();
    }
    Ok(Some(value))
}

fn jobs_done(value: Option<&Value>) -> usize {
    value.and_then(|v| v["done"].as_array()).map_or(0, Vec::len)
}

fn is_complete(value: Option<&Value>) -> bool {
    value.is_some_and(|v| Some(jobs_done(Some(v)) as u64) == v["total"].as_u64())
}

/// The Jobs-Completed store's processor: applies [`job_done`]; every job newly done publishes a
/// `progress` notification to the request's channel, and the last one a `complete`
/// notification, in the transaction of the change (so each exactly once).
pub fn jobs_completed_processor(config: &AtomicConfig, notifications: &str) -> AtomicProcessor {
    let notifications = notifications.to_owned();
    AtomicProcessor::new(
        config.clone(),
        format!("{}-processor", config.commands()),
        format!("{}-tx", config.commands()),
    )
    .function("job_done", job_done)
    .on_update(move |update, out| {
        let Some(new) = update.new else { return };
        if jobs_done(update.new) <= jobs_done(update.old) {
            return;
        }
        let Some(channel) = new["channel"].as_str() else { return };
        let before: Vec<u64> =
            update.old.and_then(|v| serde_json::from_value(v["done"].clone()).ok()).unwrap_or_default();
        let after: Vec<u64> = serde_json::from_value(new["done"].clone()).unwrap_or_default();
        let jobs: Vec<u64> = after.into_iter().filter(|j| before.binary_search(j).is_err()).collect();
        let mut notify = |kind: &str| {
            let event = json!({
                "type": kind,
                "request": update.key,
                "jobs": jobs,
                "done": jobs_done(update.new),
                "total": new["total"],
                "imported": new["imported"],
                "rejected": new["rejected"],
                "importer": new["last_by"],
            });
            out.push(ProducerRecord::new(notifications.as_str(), event.to_string()).key(channel.to_owned()));
        };
        notify("progress");
        if is_complete(update.new) && !is_complete(update.old) {
            notify("complete");
        }
    })
}

// ---- The importer -----------------------------------------------------------------------------

/// A country-code lookup service that fails a given fraction of its calls.
#[derive(Clone, Debug)]
pub struct FlakyLookup {
    failure_fraction: f64,
}

impl FlakyLookup {
    /// Fails `failure_fraction` of the calls (0 never, 1 always).
    pub fn new(failure_fraction: f64) -> Self {
        Self { failure_fraction: failure_fraction.clamp(0.0, 1.0) }
    }

    /// The dialling codes of `codes`, from `countries`, unless the service "fails" this time.
    fn lookup(&self, countries: &KvStore<String, Country>, codes: &[&str]) -> Result<HashMap<String, String>, String> {
        let draw = std::collections::hash_map::RandomState::new().build_hasher().finish() as f64 / u64::MAX as f64;
        if draw < self.failure_fraction {
            return Err("the country-code lookup service is unavailable (simulated)".into());
        }
        let mut dial = HashMap::new();
        for code in codes {
            if let Ok(Some(country)) = countries.get(*code) {
                dial.insert((*code).to_owned(), country.dial);
            }
        }
        Ok(dial)
    }
}

/// What an importer works with.
pub(crate) struct Importer {
    pub(crate) name: String,
    pub(crate) countries: Arc<KvStore<String, Country>>,
    pub(crate) view: Arc<ContactsView>,
    pub(crate) contacts_topic: String,
    pub(crate) producer: Producer,
    pub(crate) jobs_completed: AtomicKvStore,
    pub(crate) lookup: FlakyLookup,
}

/// How long an importer waits for its contacts to reach the view (then the job is retried).
const VIEW_BOUND: Duration = Duration::from_secs(120);

fn valid_email(email: &str) -> bool {
    email.split_once('@').is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
}

impl Importer {
    /// Imports one job: validates its contacts, looks up their dialling codes (the flaky step:
    /// its failure fails the job, which the retry policy retries), writes them to the contacts
    /// topic, waits for the projector to have them in the view, then reports the job done.
    pub(crate) async fn import(&self, record: ConsumerRecord) -> Result<(), Failed> {
        let job: Job = match record.value.as_deref().map(serde_json::from_slice) {
            Some(Ok(job)) => job,
            Some(Err(e)) => return Err(Failed::non_retriable(format!("a job that is not JSON: {e}"))),
            None => return Err(Failed::non_retriable("a job without a value")),
        };
        if job.contacts.len() > patterns::view::MAX_SCAN {
            return Err(Failed::non_retriable(format!("a job of {} contacts", job.contacts.len())));
        }
        let (mut valid, mut rejected) = (Vec::new(), 0u64);
        for contact in &job.contacts {
            if valid_email(&contact.email) && self.countries.contains(contact.country.as_str())? {
                valid.push(contact);
            } else {
                rejected += 1;
            }
        }
        let mut codes: Vec<&str> = valid.iter().map(|c| c.country.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        let dial = self.lookup.lookup(&self.countries, &codes)?;

        let mut sent = Vec::with_capacity(valid.len());
        for contact in &valid {
            let key = contact_key(&job.request, contact.line);
            let row = json!({
                "request": job.request,
                "line": contact.line,
                "name": contact.name,
                "email": contact.email,
                "country": contact.country,
                "dial": dial.get(&contact.country),
                "job": job.job,
                "importer": self.name,
            });
            let record = ProducerRecord::new(self.contacts_topic.as_str(), row.to_string()).key(key.clone());
            sent.push((key, self.producer.send(record).await?));
        }
        let mut written = Vec::with_capacity(sent.len());
        for (key, delivery) in sent {
            written.push((key, delivery.await?.offset));
        }
        if let (Some(first), Some(last)) = (valid.first(), valid.last()) {
            self.view.wait_for(&job.request, first.line..=last.line, &written, VIEW_BOUND).await?;
        }

        let done = json!({
            "job": job.job,
            "total": job.total,
            "channel": job.channel,
            "imported": valid.len(),
            "rejected": rejected,
            "importer": self.name,
        });
        match self.jobs_completed.execute(&job.request, &Command::call("job_done", done)).await? {
            Outcome::Applied { .. } => Ok(()),
            Outcome::Refused { reason, .. } => Err(Failed::non_retriable(format!("job done refused: {reason}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_reported_twice_counts_once() {
        let arg = |job: u64, imported: u64| json!({"job": job, "total": 2, "channel": "c", "imported": imported, "rejected": 1});
        let one = job_done(None, &arg(1, 10)).unwrap();
        let again = job_done(one.as_ref(), &arg(1, 10)).unwrap();
        assert_eq!(again, one, "a job reported again changes nothing");
        let both = job_done(one.as_ref(), &arg(0, 5)).unwrap().unwrap();
        assert_eq!(
            both,
            json!({"channel": "c", "total": 2, "done": [0, 1], "imported": 15, "rejected": 2, "last_by": null})
        );
        assert!(is_complete(Some(&both)));
        assert!(job_done(None, &arg(2, 1)).is_err(), "a job past the total is refused");
    }
}
