//! The article's atomic KV store example (pattern 6): a contacts import request `Y` is split
//! into `N` jobs on the `import-jobs` topic; several Contacts Importer instances process the
//! jobs and report each one done to the Jobs-Completed atomic store, under the key `Y-N`; the
//! store's update callback produces one `import-completed` event when the last job is reported,
//! and a Notifier (which would tell the user through a web socket) reads it.
//!
//! A job reported twice (an importer crashed after reporting it and before committing its
//! offset, so another one processes it again) must not count twice: the store's value is the
//! set of jobs done, changed by the `job_done` function, which adds a job only once. (A plain
//! `increment` is exact for commands sent once; it is the importer that can repeat one.)

use std::time::Duration;

use kafka_wire::client::{Admin, IsolationLevel, NewTopic, OffsetReset};
use kafka_wire::{
    ClientConfig, Consumer, ConsumerConfig, ErrorCode, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use kvstore::{AtomicConfig, AtomicKvStore, AtomicProcessor, Command, Error, KvConfig, KvStore, Outcome, Stop};
use serde_json::{json, Value};
use tokio::sync::watch;

/// How long the scenario waits for a service to react.
const REACTION: Duration = Duration::from_secs(60);
/// Partitions of the jobs topic (one importer each) and of the store's topics.
const PARTITIONS: i32 = 3;

/// The topics of the scenario.
#[derive(Clone, Debug)]
pub struct Topics {
    /// The import jobs.
    pub jobs: String,
    /// The Jobs-Completed store's commands topic (its store topic is `<commands>.store`).
    pub commands: String,
    /// The completion events.
    pub completed: String,
}

impl Topics {
    /// The topics, named with `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            jobs: format!("{prefix}import-jobs"),
            commands: format!("{prefix}jobs-completed"),
            completed: format!("{prefix}import-completed"),
        }
    }
}

/// What happened.
#[derive(Debug)]
pub struct Report {
    /// The store key of the request, `Y-N`.
    pub key: String,
    /// The completion events of the request the Notifier read (read_committed).
    pub completion_events: Vec<Value>,
    /// The request's value in the Jobs-Completed store at the end.
    pub value: Option<Value>,
    /// What the store did with a job reported again after completion.
    pub reported_again: Outcome,
}

/// The store's value for a request: the jobs done so far, in order, and the total.
fn job_done(old: Option<&Value>, arg: &Value) -> Result<Option<Value>, String> {
    let job = arg["job"].as_u64().ok_or("the argument has no job number")?;
    let total = arg["total"].as_u64().ok_or("the argument has no total")?;
    let mut done: Vec<u64> = match old {
        None => Vec::new(),
        Some(v) => serde_json::from_value(v["done"].clone()).map_err(|e| format!("the value has no done jobs: {e}"))?,
    };
    if let Err(at) = done.binary_search(&job) {
        done.insert(at, job);
    }
    Ok(Some(json!({ "done": done, "total": total })))
}

fn is_complete(value: Option<&Value>) -> bool {
    value.is_some_and(|v| v["done"].as_array().map(Vec::len) == v["total"].as_u64().map(|t| t as usize))
}

/// The Jobs-Completed store's processor: applies `job_done`, and when a request's last job is
/// done produces its completion event in the same transaction (so exactly once).
fn jobs_completed_processor(config: &AtomicConfig, completed: &str) -> AtomicProcessor {
    let completed = completed.to_owned();
    AtomicProcessor::new(
        config.clone(),
        format!("{}-processor", config.commands()),
        format!("{}-tx", config.commands()),
    )
    .function("job_done", job_done)
    .on_update(move |update, out| {
        if is_complete(update.new) && !is_complete(update.old) {
            let event = json!({ "request": update.key, "jobs": update.new.map(|v| v["total"].clone()) });
            out.push(ProducerRecord::new(completed.as_str(), event.to_string()).key(update.key.to_owned()));
        }
    })
}

/// A Contacts Importer instance: imports the jobs of its partition of the jobs topic and
/// reports each one done to the store, until told to stop.
async fn importer(
    bootstrap: String,
    jobs: String,
    partition: i32,
    store: AtomicConfig,
    mut stop: watch::Receiver<bool>,
) -> kvstore::Result<usize> {
    let consumer = Consumer::new(ConsumerConfig::new(&bootstrap).auto_offset_reset(OffsetReset::Earliest)).await?;
    let tp = TopicPartition::new(jobs.as_str(), partition);
    consumer.assign([tp.clone()]);
    consumer.seek_to_beginning(&[tp])?;
    let jobs_completed = AtomicKvStore::connect(&store).await?;
    let mut imported = 0;
    loop {
        let records = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            records = consumer.poll(Duration::from_millis(200)) => records?,
        };
        for r in records {
            let Some(job) = r.value.as_deref().and_then(|v| serde_json::from_slice::<Value>(v).ok()) else { continue };
            // Importing the contacts would happen here.
            imported += job["contacts"].as_array().map_or(0, Vec::len);
            let key = format!("{}-{}", job["request"].as_str().unwrap_or_default(), job["total"]);
            let done = json!({ "job": job["job"], "total": job["total"] });
            jobs_completed.execute(&key, &Command::call("job_done", done)).await?;
        }
    }
    jobs_completed.close().await?;
    consumer.close().await?;
    Ok(imported)
}

async fn create_topics(bootstrap: &str, topics: &Topics) -> kvstore::Result<()> {
    let admin = Admin::connect(ClientConfig::new(bootstrap)).await?;
    let new = [NewTopic::new(&topics.jobs, PARTITIONS, -1), NewTopic::new(&topics.completed, 1, -1)];
    let created = admin.create_topics_each(&new, false).await;
    admin.close().await;
    for (_, result) in created? {
        match result {
            Err(e) if e.code() != Some(ErrorCode::TOPIC_ALREADY_EXISTS) => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// Runs request `request` of `jobs` jobs through the services on `topics` (created if
/// missing).
pub async fn run(bootstrap: &str, topics: &Topics, request: &str, jobs: u64) -> kvstore::Result<Report> {
    create_topics(bootstrap, topics).await?;
    let store = AtomicConfig::new(bootstrap, &topics.commands).partitions(PARTITIONS);
    let key = format!("{request}-{jobs}");

    // The Jobs-Completed store's processor.
    let stop_processor = Stop::new();
    let processor = {
        let processor = jobs_completed_processor(&store, &topics.completed);
        let stop = stop_processor.clone();
        tokio::spawn(async move { processor.run(&stop).await })
    };

    // The Notifier reads the completion events from the start.
    let notifier = Consumer::new(
        ConsumerConfig::new(bootstrap)
            .isolation_level(IsolationLevel::ReadCommitted)
            .auto_offset_reset(OffsetReset::Earliest),
    )
    .await?;
    let completed_tp = TopicPartition::new(topics.completed.as_str(), 0);
    notifier.assign([completed_tp.clone()]);
    notifier.seek_to_beginning(std::slice::from_ref(&completed_tp))?;

    // The importers.
    let (stop_importers, stopped) = watch::channel(false);
    let importers: Vec<_> = (0..PARTITIONS)
        .map(|p| tokio::spawn(importer(bootstrap.into(), topics.jobs.clone(), p, store.clone(), stopped.clone())))
        .collect();

    // The request, split into jobs.
    let producer = Producer::new(ProducerConfig::new(bootstrap).enable_idempotence(true)).await?;
    for job in 0..jobs {
        let contacts: Vec<String> = (0..3).map(|c| format!("contact {job}.{c}")).collect();
        let value = json!({ "request": request, "job": job, "total": jobs, "contacts": contacts });
        producer.send(ProducerRecord::new(topics.jobs.as_str(), value.to_string()).key(job.to_string())).await?.await?;
    }
    producer.close().await?;

    // The Notifier waits for the request's completion event.
    let mut completion_events = Vec::new();
    let notified = async {
        while completion_events.is_empty() {
            for r in notifier.poll(Duration::from_millis(200)).await? {
                if r.key.as_deref() == Some(key.as_bytes()) {
                    completion_events.extend(r.value.as_deref().and_then(|v| serde_json::from_slice(v).ok()));
                }
            }
        }
        Ok::<_, Error>(())
    };
    match tokio::time::timeout(REACTION, notified).await {
        Ok(result) => result?,
        Err(_) => {
            // An importer or the processor that failed is the likelier cause.
            for task in importers.into_iter().filter(|t| t.is_finished()) {
                task.await.expect("an importer task")?;
            }
            if processor.is_finished() {
                processor.await.expect("the processor task")?;
            }
            return Err(Error::Timeout { what: format!("the completion event of {key}"), after: REACTION });
        }
    }

    // A job reported again, as an importer that crashed before committing its offset would.
    let again = AtomicKvStore::connect(&store).await?;
    let reported_again = again.execute(&key, &Command::call("job_done", json!({ "job": 0, "total": jobs }))).await?;
    again.close().await?;

    // Every completion event of the request, up to the end of the topic now.
    let admin = Admin::connect(ClientConfig::new(bootstrap)).await?;
    let end = admin
        .list_offsets_isolated(&[(topics.completed.as_str(), 0)], kafka_wire::client::OffsetSpec::Latest, true)
        .await;
    admin.close().await;
    let end = end?.first().map_or(0, |e| e.offset);
    let caught_up = async {
        while notifier.position(&completed_tp).await? < end {
            for r in notifier.poll(Duration::from_millis(200)).await? {
                if r.key.as_deref() == Some(key.as_bytes()) {
                    completion_events.extend(r.value.as_deref().and_then(|v| serde_json::from_slice(v).ok()));
                }
            }
        }
        Ok::<_, Error>(())
    };
    match tokio::time::timeout(REACTION, caught_up).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(Error::Timeout { what: format!("reading {} to its end", topics.completed), after: REACTION })
        }
    }
    notifier.close().await?;

    stop_importers.send_replace(true);
    for importer in importers {
        importer.await.expect("an importer task")?;
    }
    stop_processor.trigger();
    processor.await.expect("the processor task")?;

    let values: KvStore<String, Value> = KvStore::open(KvConfig::new(bootstrap, store.store())).await?;
    Ok(Report { value: values.get(&key)?, key, completion_events, reported_again })
}
