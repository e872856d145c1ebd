//! Scenario `atomic`: the atomic KV store ([`kvstore::AtomicProcessor`], three instances with
//! their own `transactional.id`s in one group) applies a steady stream of commands that two
//! callers ([`kvstore::AtomicKvStore`], several commands in flight each) send on 32 keys, while
//! instances are killed (their task aborted: the processor dropped with its transaction open)
//! and restarted with the same `transactional.id`, and the brokers do rolling restarts.
//!
//! Every command carries a number unique in the run: increments add it, sets and
//! compare-and-sets write it (deletes carry none; they are sent without waiting for a reply, and
//! known by their acknowledged offset). An update callback writes each change, with its
//! command's offset, to an audit topic in the change's transaction.
//!
//! Checked once the processors have caught up and shut down, against a model that applies the
//! commands topic in order per partition (so per key): each command that changes a value is in
//! the audit topic (read_committed) exactly once, with the model's old and new values, and no
//! other change is (every command applied exactly once, callbacks delivered exactly once); the
//! store topic's last committed value of each key is the model's; every acknowledged command is
//! in the commands topic, and the outcome its caller got is the model's for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_wire::client::{Admin, ClientConfig, ConsumerRecord, OffsetSpec, ProducerRecord};
use kvstore::{AtomicConfig, AtomicKvStore, AtomicProcessor, Command, Outcome};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::faults::{self, Plan, Schedule};
use crate::{Report, Rng, RunConfig, Stop, Violations};

const PARTITIONS: i32 = 6;
const PROCESSORS: usize = 3;
const CALLERS: usize = 2;
/// Commands each caller has in flight (one per worker task).
const WORKERS: usize = 8;
const KEYS: u64 = 32;
/// A worker sends at most one command per tick.
const PACE: Duration = Duration::from_millis(50);
/// How long a caller waits for a reply (a timeout is a failed command, not a violation).
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the processors catching up after the faults.
const DRAIN_BOUND: Duration = Duration::from_secs(240);
/// Bound on a processor instance's clean shutdown.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(60);

/// Runs the scenario.
pub async fn run(config: &RunConfig) -> Result<Report, String> {
    let bs = config.bootstrap.as_str();
    let commands = kafka_wire_tests::unique_topic("chaos-atomic");
    let audit = format!("{commands}.audit");
    let store_config = AtomicConfig::new(bs, &commands)
        .partitions(PARTITIONS)
        .replication_factor(3)
        .reply_timeout(REPLY_TIMEOUT)
        .consumer_property("session.timeout.ms", "6000")
        .consumer_property("max.poll.records", "50");
    crate::create_topic(bs, &commands, PARTITIONS, &[]).await?;
    crate::create_topic(bs, store_config.store(), PARTITIONS, &[("cleanup.policy", "compact")]).await?;
    crate::create_topic(bs, store_config.replies(), PARTITIONS, &[]).await?;
    crate::create_topic(bs, &audit, PARTITIONS, &[]).await?;
    let group = format!("{commands}-processor");
    eprintln!("[chaos] atomic: {commands}, {PROCESSORS} processors, {CALLERS} callers, seed {}", config.seed);

    let callbacks = Arc::new(AtomicU64::new(0));
    let processors = Processors {
        config: store_config.clone(),
        group: group.clone(),
        audit: audit.clone(),
        callbacks: callbacks.clone(),
        stop: kvstore::Stop::new(),
    };
    let mut instances: Vec<JoinHandle<bool>> = (0..PROCESSORS).map(|i| processors.start(i)).collect();

    let faults_stop = Stop::default();
    let ids = Arc::new(AtomicU64::new(1));
    let mut callers = Vec::new();
    let mut workers = Vec::new();
    for c in 0..CALLERS {
        let store =
            Arc::new(AtomicKvStore::connect(&store_config).await.map_err(|e| format!("caller {c} connect: {e}"))?);
        let seen = Arc::new(Mutex::new(HashMap::new()));
        for w in 0..WORKERS {
            let rng = Rng::new(config.seed ^ ((c * WORKERS + w) as u64 + 1).wrapping_mul(0xA70_3100));
            let worker = Worker { store: store.clone(), ids: ids.clone(), seen: seen.clone(), rng };
            workers.push(tokio::spawn(worker.run(faults_stop.clone())));
        }
        callers.push(store);
    }
    let topics = vec![
        commands.clone(),
        store_config.store().to_string(),
        store_config.replies().to_string(),
        audit.clone(),
        "__consumer_offsets".into(),
        "__transaction_state".into(),
    ];
    let injector = tokio::spawn(faults::inject(
        bs.to_string(),
        topics,
        Schedule::new(config.seed, Plan::Rolling),
        faults_stop.clone(),
    ));

    let mut rng = Rng::new(config.seed.rotate_left(29) ^ 0xA70);
    let (mut kills, mut ended) = (0u64, 0u64);
    let end = tokio::time::Instant::now() + config.duration;
    loop {
        let gap = rng.duration(Duration::from_secs(3), Duration::from_secs(10));
        if tokio::time::Instant::now() + gap >= end {
            break;
        }
        tokio::time::sleep(gap).await;
        ended += processors.restart_ended(&mut instances).await;
        let i = rng.below(PROCESSORS as u64) as usize;
        let down = rng.duration(Duration::ZERO, Duration::from_secs(3));
        eprintln!("[chaos] kill processor instance {i}; back in {:.1} s", down.as_secs_f64());
        instances[i].abort();
        let _ = (&mut instances[i]).await;
        kills += 1;
        tokio::time::sleep(down).await;
        instances[i] = processors.start(i);
    }
    tokio::time::sleep_until(end).await;
    faults_stop.set();
    let mut tally = Tally::default();
    for worker in workers {
        tally.merge(worker.await.map_err(|e| format!("caller worker: {e}"))?);
    }
    for (c, store) in callers.into_iter().enumerate() {
        let store = Arc::try_unwrap(store).map_err(|_| format!("caller {c} still shared"))?;
        store.close().await.map_err(|e| format!("caller {c} close: {e}"))?;
    }
    let faults = injector.await.map_err(|e| format!("fault injector: {e}"))??;

    // The processors catch up (instances that ended on an error are started again, as a
    // deployment would), then shut down (no transaction left open), then the check.
    ended += processors.restart_ended(&mut instances).await;
    let mut v = Violations::default();
    if let Err(lag) = caught_up(bs, &group, &commands).await {
        eprintln!("[chaos] atomic: the processors did not catch up within {DRAIN_BOUND:?}: {lag}");
    }
    processors.stop.trigger();
    for (i, instance) in instances.into_iter().enumerate() {
        match tokio::time::timeout(SHUTDOWN_BOUND, instance).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => v.push(|| format!("processor instance {i} panicked: {e}")),
            Err(_) => v.push(|| format!("processor instance {i} did not shut down within {SHUTDOWN_BOUND:?}")),
        }
    }
    let log: Vec<Logged> = crate::read_back(bs, &commands, PARTITIONS, false).await?.iter().map(Logged::of).collect();
    let changes = crate::read_back(bs, &audit, PARTITIONS, true).await?;
    let aborted_changes = crate::read_back(bs, &audit, PARTITIONS, false).await?.len().saturating_sub(changes.len());
    let changes: Vec<Change> = changes.iter().filter_map(|r| Change::of(r, &mut v)).collect();
    let store = last_values(&crate::read_back(bs, store_config.store(), PARTITIONS, true).await?, &mut v);
    let checked = check(&log, &changes, &store, &tally.acked, &mut v);

    let mut report = Report { faults, records: tally.acked.len() as u64, failed: tally.failed, ..Report::default() };
    report.violations = v;
    let notes = [
        ("commands sent", tally.sent.to_string()),
        ("acknowledged (outcome or, for deletes, offset)", tally.acked.len().to_string()),
        ("failed (error or no reply in time)", tally.failed.to_string()),
        ("commands in the commands topic", log.len().to_string()),
        ("changes (model) / committed callback records", format!("{} / {}", checked.changes, changes.len())),
        ("callback runs (aborted and replayed ones included)", callbacks.load(Ordering::Relaxed).to_string()),
        ("callback records in aborted transactions", aborted_changes.to_string()),
        ("refused commands (model)", checked.refused.to_string()),
        ("keys with a value at the end", store.len().to_string()),
        ("processor instance kills", kills.to_string()),
        ("processor instances ended on an error (started again)", ended.to_string()),
    ];
    report.notes.extend(notes.into_iter().map(|(n, v)| (n.to_string(), v)));
    if let Some(e) = tally.first_error {
        report.notes.push(("first failed command".into(), e));
    }
    Ok(report)
}

/// What starts a processor instance.
struct Processors {
    config: AtomicConfig,
    group: String,
    audit: String,
    callbacks: Arc<AtomicU64>,
    stop: kvstore::Stop,
}

impl Processors {
    /// Instance `i` (its `transactional.id` is the same across restarts: the new one fences the
    /// killed one and aborts what it left open), running until `stop`; the task's value says
    /// whether it ended without error.
    fn start(&self, i: usize) -> JoinHandle<bool> {
        let (audit, callbacks) = (self.audit.clone(), self.callbacks.clone());
        let processor = AtomicProcessor::new(self.config.clone(), &self.group, format!("{}-{i}", self.group))
            .on_update(move |u, out| {
                callbacks.fetch_add(1, Ordering::Relaxed);
                let value = json!({ "offset": u.command_offset, "old": u.old, "new": u.new });
                out.push(ProducerRecord::new(&audit, value.to_string()).key(u.key.to_string()).partition(u.partition));
            });
        let stop = self.stop.clone();
        tokio::spawn(async move {
            match processor.run(&stop).await {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("[chaos] processor instance {i} ended: {e}");
                    false
                }
            }
        })
    }

    /// Starts again the instances that ended on an error; returns how many.
    async fn restart_ended(&self, instances: &mut [JoinHandle<bool>]) -> u64 {
        let mut restarted = 0;
        for (i, instance) in instances.iter_mut().enumerate() {
            if instance.is_finished() {
                let _ = (&mut *instance).await;
                *instance = self.start(i);
                restarted += 1;
            }
        }
        restarted
    }
}

/// Waits (up to [`DRAIN_BOUND`]) until `group` has committed the end offset of every partition
/// of `topic` (written by idempotent producers only: its high watermarks are its ends);
/// `Err` says what lags.
async fn caught_up(bs: &str, group: &str, topic: &str) -> Result<(), String> {
    let admin = Admin::connect(ClientConfig::new(bs)).await.map_err(|e| format!("admin: {e}"))?;
    let partitions: Vec<(&str, i32)> = (0..PARTITIONS).map(|p| (topic, p)).collect();
    let deadline = tokio::time::Instant::now() + DRAIN_BOUND;
    let mut ends = None;
    let outcome = loop {
        if ends.is_none() {
            ends = admin.list_offsets_isolated(&partitions, OffsetSpec::Latest, false).await.ok();
        }
        let lag = match (&ends, admin.list_group_offsets(group, Some(&[topic])).await) {
            (Some(ends), Ok(committed)) => {
                let behind: Vec<String> = ends
                    .iter()
                    .filter_map(|e| {
                        let at = committed.iter().find(|c| c.partition == e.partition).map_or(0, |c| c.offset);
                        (at < e.offset).then(|| format!("{}: {at} of {}", e.partition, e.offset))
                    })
                    .collect();
                behind.join(", ")
            }
            (None, _) => "end offsets not known".into(),
            (_, Err(e)) => format!("committed offsets: {e}"),
        };
        if lag.is_empty() {
            break Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(lag);
        }
        // No event says when a transaction's offsets are committed: look again shortly.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    admin.close().await;
    outcome
}

/// A worker of a caller: sends one command after the other until `stop`.
struct Worker {
    store: Arc<AtomicKvStore>,
    /// The next number unique in the run.
    ids: Arc<AtomicU64>,
    /// The caller's last known value of each key (from its outcomes), for compare-and-set.
    seen: Arc<Mutex<HashMap<String, Option<Value>>>>,
    rng: Rng,
}

impl Worker {
    async fn run(mut self, stop: Stop) -> Tally {
        let mut tally = Tally::default();
        let mut tick = tokio::time::interval(PACE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.is_set() {
            tick.tick().await;
            let key = format!("k{}", self.rng.below(KEYS));
            let id = self.ids.fetch_add(1, Ordering::Relaxed) as i64;
            let roll = self.rng.below(100);
            tally.sent += 1;
            if roll >= 95 {
                match self.store.send(&key, &Command::Delete).await {
                    Ok(sent) => tally.acked.push(Acked::Sent { key, partition: sent.partition, offset: sent.offset }),
                    Err(e) => tally.fail(format!("delete of {key}: {e}")),
                }
                continue;
            }
            let command = match roll {
                0..80 => Command::increment(id),
                80..90 => {
                    let expected = self.seen.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned().flatten();
                    Command::compare_and_set(expected, Some(id.into()))
                }
                _ => Command::set(id),
            };
            match self.store.execute(&key, &command).await {
                Ok(outcome) => {
                    let now = match &outcome {
                        Outcome::Applied { new, .. } => new.clone(),
                        Outcome::Refused { current, .. } => current.clone(),
                    };
                    self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), now);
                    tally.acked.push(Acked::Executed { key, id, outcome });
                }
                Err(e) => tally.fail(format!("{command:?} on {key}: {e}")),
            }
        }
        tally
    }
}

/// What the callers did.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    failed: u64,
    first_error: Option<String>,
    acked: Vec<Acked>,
}

impl Tally {
    fn fail(&mut self, what: String) {
        self.failed += 1;
        self.first_error.get_or_insert(what);
    }

    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.acked.extend(other.acked);
    }
}

/// A command a caller had acknowledged.
#[derive(Clone, Debug, PartialEq)]
enum Acked {
    /// `execute` returned `outcome` for the command carrying number `id` on `key`.
    Executed { key: String, id: i64, outcome: Outcome },
    /// `send` of a delete of `key` was acknowledged at this offset.
    Sent { key: String, partition: i32, offset: i64 },
}

/// A record of the commands topic.
#[derive(Clone, Debug, PartialEq)]
struct Logged {
    partition: i32,
    offset: i64,
    /// `None`: the key or the command does not decode.
    command: Option<(String, Command)>,
}

impl Logged {
    fn of(r: &ConsumerRecord) -> Self {
        let key = r.key.as_deref().and_then(|k| serde_json::from_slice::<String>(k).ok());
        let command = r.value.as_deref().and_then(|c| serde_json::from_slice::<Command>(c).ok());
        Self { partition: r.partition, offset: r.offset, command: key.zip(command) }
    }
}

/// A change as the update callback recorded it in the audit topic.
#[derive(Clone, Debug, PartialEq)]
struct Change {
    partition: i32,
    command_offset: i64,
    key: String,
    old: Option<Value>,
    new: Option<Value>,
}

impl Change {
    fn of(r: &ConsumerRecord, v: &mut Violations) -> Option<Self> {
        let key = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok());
        let value = r.value.as_deref().and_then(|b| serde_json::from_slice::<Value>(b).ok());
        let (Some(key), Some(value)) = (key, value) else {
            v.push(|| format!("audit record {}/{} does not decode", r.partition, r.offset));
            return None;
        };
        let Some(command_offset) = value["offset"].as_i64() else {
            v.push(|| format!("audit record {}/{} has no command offset", r.partition, r.offset));
            return None;
        };
        let some = |v: &Value| Some(v.clone()).filter(|v| !v.is_null());
        Some(Self {
            partition: r.partition,
            command_offset,
            key: key.to_string(),
            old: some(&value["old"]),
            new: some(&value["new"]),
        })
    }
}

/// The last committed value of each key of the store topic (a tombstone or JSON null: none).
fn last_values(records: &[ConsumerRecord], v: &mut Violations) -> BTreeMap<String, Value> {
    let mut values = BTreeMap::new();
    for r in records {
        let Some(key) = r.key.as_deref().and_then(|k| serde_json::from_slice::<String>(k).ok()) else {
            v.push(|| format!("store record {}/{}: the key does not decode", r.partition, r.offset));
            continue;
        };
        match r.value.as_deref().map(serde_json::from_slice::<Value>) {
            Some(Ok(value)) if !value.is_null() => {
                values.insert(key, value);
            }
            None | Some(Ok(_)) => {
                values.remove(&key);
            }
            Some(Err(e)) => {
                v.push(|| format!("store record {}/{}: the value does not decode: {e}", r.partition, r.offset))
            }
        }
    }
    values
}

/// What `command` does to `old`, by the store's documented rules (the model, written apart
/// from the store's own code). Refusal reasons are not compared, only the value.
fn model(old: Option<&Value>, command: &Command) -> Outcome {
    let refused = || Outcome::Refused { reason: String::new(), current: old.cloned() };
    let new = match command {
        Command::Increment { by } => {
            let n = match old {
                None => Some(0),
                Some(v) => v.as_i64(),
            };
            match n.and_then(|n| n.checked_add(*by)) {
                Some(sum) => Some(Value::from(sum)),
                None => return refused(),
            }
        }
        Command::Set { value } => Some(value.clone()),
        Command::Delete => None,
        Command::CompareAndSet { expected, new } => {
            if expected.as_ref().filter(|v| !v.is_null()) != old {
                return refused();
            }
            new.clone()
        }
        // Not sent by this scenario: no function is registered.
        Command::Call { .. } => return refused(),
    };
    Outcome::Applied { old: old.cloned(), new: new.filter(|v| !v.is_null()) }
}

/// The number a command carries (deletes carry none).
fn id_of(command: &Command) -> Option<i64> {
    match command {
        Command::Increment { by } => Some(*by),
        Command::Set { value } => value.as_i64(),
        Command::CompareAndSet { new, .. } => new.as_ref().and_then(Value::as_i64),
        Command::Delete | Command::Call { .. } => None,
    }
}

/// Do two outcomes agree (applied with the same values, or refused with the same value)?
fn same(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Outcome::Applied { old: o1, new: n1 }, Outcome::Applied { old: o2, new: n2 }) => o1 == o2 && n1 == n2,
        (Outcome::Refused { current: c1, .. }, Outcome::Refused { current: c2, .. }) => c1 == c2,
        _ => false,
    }
}

/// Figures of a check.
#[derive(Debug, Default, PartialEq)]
struct Checked {
    /// Commands that change a value, by the model.
    changes: u64,
    /// Commands refused, by the model.
    refused: u64,
}

/// Checks the run: `log` is the commands topic in offset order per partition, `changes` the
/// audit topic (read_committed), `store` the store topic's last committed values, `acked` the
/// acknowledged commands.
fn check(
    log: &[Logged],
    changes: &[Change],
    store: &BTreeMap<String, Value>,
    acked: &[Acked],
    v: &mut Violations,
) -> Checked {
    let mut checked = Checked::default();
    let mut values: HashMap<&str, Value> = HashMap::new();
    // The model's changes, by command position; the model's outcome of each command, by number
    // and (for deletes) by position.
    let mut expected: HashMap<(i32, i64), Change> = HashMap::new();
    let mut by_id: HashMap<i64, (&str, Outcome)> = HashMap::new();
    let mut deletes: HashMap<(i32, i64), &str> = HashMap::new();
    for l in log {
        let Some((key, command)) = &l.command else {
            v.push(|| format!("command {}/{} does not decode", l.partition, l.offset));
            continue;
        };
        let outcome = model(values.get(key.as_str()), command);
        match &outcome {
            Outcome::Applied { old, new } if old != new => {
                checked.changes += 1;
                let change = Change {
                    partition: l.partition,
                    command_offset: l.offset,
                    key: key.clone(),
                    old: old.clone(),
                    new: new.clone(),
                };
                expected.insert((l.partition, l.offset), change);
                match new {
                    Some(value) => values.insert(key, value.clone()),
                    None => values.remove(key.as_str()),
                };
            }
            Outcome::Applied { .. } => {}
            Outcome::Refused { .. } => checked.refused += 1,
        }
        match id_of(command) {
            Some(id) => {
                if by_id.insert(id, (key, outcome)).is_some() {
                    v.push(|| {
                        format!("command number {id} is in the commands topic twice (at {}/{})", l.partition, l.offset)
                    });
                }
            }
            None => {
                deletes.insert((l.partition, l.offset), key);
            }
        }
    }

    // Each change exactly once, as the model made it; none that the model did not make.
    let mut seen: HashMap<(i32, i64), u64> = HashMap::new();
    for c in changes {
        let at = (c.partition, c.command_offset);
        let n = seen.entry(at).or_default();
        *n += 1;
        if *n == 2 {
            v.push(|| format!("the command at {}/{} on {:?} was applied more than once", at.0, at.1, c.key));
        }
        if *n > 1 {
            continue;
        }
        match expected.get(&at) {
            None => v.push(|| {
                format!(
                    "a change {:?}: {:?} -> {:?} by {}/{}, which by the model changes nothing",
                    c.key, c.old, c.new, at.0, at.1
                )
            }),
            Some(m) if m != c => v.push(|| {
                format!(
                    "the command at {}/{} changed {:?}: {:?} -> {:?}; the model: {:?}: {:?} -> {:?}",
                    at.0, at.1, c.key, c.old, c.new, m.key, m.old, m.new
                )
            }),
            Some(_) => {}
        }
    }
    let mut lost: Vec<&(i32, i64)> = expected.keys().filter(|at| !seen.contains_key(*at)).collect();
    if !lost.is_empty() {
        lost.sort();
        v.push(|| format!("{} commands never applied (first {:?})", lost.len(), &lost[..lost.len().min(5)]));
    }

    // The store ends as the model does.
    let keys: std::collections::BTreeSet<&str> =
        values.keys().copied().chain(store.keys().map(String::as_str)).collect();
    for key in keys {
        let (model, stored) = (values.get(key), store.get(key));
        if model != stored {
            v.push(|| format!("the store holds {key:?} = {stored:?}; the model: {model:?}"));
        }
    }

    // Every acknowledged command is in the log, and its caller got the model's outcome.
    for a in acked {
        match a {
            Acked::Executed { key, id, outcome } => match by_id.get(id) {
                None => v.push(|| format!("acknowledged command number {id} on {key:?} is not in the commands topic")),
                Some((logged_key, _)) if logged_key != key => {
                    v.push(|| format!("command number {id} was sent on {key:?} but is logged on {logged_key:?}"))
                }
                Some((_, model)) if !same(model, outcome) => v.push(|| {
                    format!("command number {id} on {key:?}: the caller got {outcome:?}; the model: {model:?}")
                }),
                Some(_) => {}
            },
            Acked::Sent { key, partition, offset } => {
                if deletes.get(&(*partition, *offset)) != Some(&key.as_str()) {
                    v.push(|| format!("acknowledged delete of {key:?} is not at {partition}/{offset}"));
                }
            }
        }
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(offset: i64, key: &str, command: Command) -> Logged {
        Logged { partition: 0, offset, command: Some((key.into(), command)) }
    }

    fn change(offset: i64, key: &str, old: Option<i64>, new: Option<i64>) -> Change {
        Change {
            partition: 0,
            command_offset: offset,
            key: key.into(),
            old: old.map(Value::from),
            new: new.map(Value::from),
        }
    }

    fn applied(old: Option<i64>, new: Option<i64>) -> Outcome {
        Outcome::Applied { old: old.map(Value::from), new: new.map(Value::from) }
    }

    fn executed(id: i64, outcome: Outcome) -> Acked {
        Acked::Executed { key: "k".into(), id, outcome }
    }

    /// A run where everything held: increments, a refused and an applied compare-and-set, a
    /// set, a delete.
    struct Run {
        log: Vec<Logged>,
        changes: Vec<Change>,
        store: BTreeMap<String, Value>,
        acked: Vec<Acked>,
    }

    impl Run {
        fn good() -> Self {
            let log = vec![
                logged(0, "k", Command::increment(1)),
                logged(1, "k", Command::increment(2)),
                logged(2, "k", Command::compare_and_set(Some(json!(1)), Some(json!(3)))),
                logged(3, "k", Command::compare_and_set(Some(json!(3)), Some(json!(4)))),
                logged(4, "k", Command::Delete),
                logged(5, "k", Command::set(5)),
                logged(6, "j", Command::increment(6)),
            ];
            let changes = vec![
                change(0, "k", None, Some(1)),
                change(1, "k", Some(1), Some(3)),
                change(3, "k", Some(3), Some(4)),
                change(4, "k", Some(4), None),
                change(5, "k", None, Some(5)),
                change(6, "j", None, Some(6)),
            ];
            let store = BTreeMap::from([("k".to_string(), json!(5)), ("j".to_string(), json!(6))]);
            let acked = vec![
                executed(1, applied(None, Some(1))),
                executed(2, applied(Some(1), Some(3))),
                executed(3, Outcome::Refused { reason: "stale".into(), current: Some(json!(3)) }),
                executed(4, applied(Some(3), Some(4))),
                Acked::Sent { key: "k".into(), partition: 0, offset: 4 },
                executed(5, applied(None, Some(5))),
            ];
            Self { log, changes, store, acked }
        }

        fn violations(&self) -> Vec<String> {
            let mut v = Violations::default();
            check(&self.log, &self.changes, &self.store, &self.acked, &mut v);
            v.first
        }
    }

    #[test]
    fn the_checker_passes_a_good_run() {
        let run = Run::good();
        let mut v = Violations::default();
        let checked = check(&run.log, &run.changes, &run.store, &run.acked, &mut v);
        assert!(v.first.is_empty(), "{:?}", v.first);
        assert_eq!(checked, Checked { changes: 6, refused: 1 });
    }

    /// Each way the store can break is reported: a command applied twice (its callback record
    /// committed twice), an acknowledged command lost from the commands topic, a command never
    /// applied, a caller told an outcome the model does not give, a store value off the model,
    /// a change the model does not make, a delete acknowledged where there is none.
    #[test]
    fn the_checker_catches_double_applies_losses_and_wrong_outcomes() {
        let mut run = Run::good();
        run.changes.push(change(1, "k", Some(1), Some(3)));
        let v = run.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("0/1 on \"k\" was applied more than once"), "{v:?}");

        // The acknowledged increment by 2 is not in the log: the model (and so the store and
        // the changes) is then off too; the loss is named.
        let mut run = Run::good();
        run.log.remove(1);
        let v = run.violations();
        assert!(
            v.iter().any(|v| v.contains("acknowledged command number 2 on \"k\" is not in the commands topic")),
            "{v:?}"
        );

        // A command in the log (not awaited by its caller) that no processor applied: its
        // change is missing, and so is its value in the store.
        let mut run = Run::good();
        run.changes.retain(|c| c.key != "j");
        run.store.remove("j");
        let v = run.violations();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("1 commands never applied (first [(0, 6)])"), "{v:?}");
        assert!(v[1].contains("the store holds \"j\" = None; the model: Some(Number(6))"), "{v:?}");

        let mut run = Run::good();
        run.acked[1] = executed(2, applied(Some(1), Some(4)));
        let v = run.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("number 2 on \"k\": the caller got"), "{v:?}");

        let mut run = Run::good();
        run.store.insert("k".into(), json!(4));
        let v = run.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("the store holds \"k\" = Some(Number(4))"), "{v:?}");

        let mut run = Run::good();
        run.changes.push(change(2, "k", Some(3), Some(3)));
        let v = run.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("which by the model changes nothing"), "{v:?}");

        let mut run = Run::good();
        run.acked.push(Acked::Sent { key: "k".into(), partition: 0, offset: 5 });
        let v = run.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("acknowledged delete of \"k\" is not at 0/5"), "{v:?}");
    }
}
