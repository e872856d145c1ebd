//! Scenario `groups`: four consumer groups of three members each — classic eager (`range`),
//! classic cooperative-sticky, classic static members (`group.instance.id`) and KIP-848
//! (`group.protocol=consumer`) — process a topic an idempotent producer keeps writing, while
//! members of the non-static groups crash (their task aborted, the consumer dropped without
//! close) and come back, and the brokers do rolling restarts (with the odd SIGSTOP).
//!
//! Checked: every record of the topic is processed by every group (at least once); no group's
//! committed offset of a partition ever moves backwards (sampled every 500 ms during the run);
//! the static members, never crashed, see no rebalance (no revoke, assign or loss) once their
//! group is stable, whatever the brokers do.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_wire::client::{
    Admin, ClientConfig, Consumer, ConsumerConfig, GroupProtocol, OffsetReset, RebalanceListener,
};
use kafka_wire::TopicPartition;
use tokio::task::JoinHandle;

use crate::faults::{self, Plan, Schedule};
use crate::{Report, Rng, RunConfig, Stop, Violations};

const PARTITIONS: i32 = 8;
const MEMBERS: usize = 3;
/// Records per second the producer writes.
const RATE: u64 = 500;
/// Bound on the end phase: every group has processed every record (a crashed KIP-848 member
/// keeps its partitions for the broker's 45 s session timeout).
const DRAIN_BOUND: Duration = Duration::from_secs(240);
/// Bound on the static group's first stable assignment.
const STABLE_BOUND: Duration = Duration::from_secs(120);

/// The groups, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Eager,
    Cooperative,
    Static,
    Kip848,
}

const KINDS: [Kind; 4] = [Kind::Eager, Kind::Cooperative, Kind::Static, Kind::Kip848];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Eager => "eager",
            Self::Cooperative => "cooperative",
            Self::Static => "static",
            Self::Kip848 => "kip848",
        }
    }

    fn config(self, bootstrap: &str, group: &str, member: usize) -> ConsumerConfig {
        let config = ConsumerConfig::new(bootstrap)
            .group_id(group)
            .auto_offset_reset(OffsetReset::Earliest)
            .enable_auto_commit(false);
        match self {
            Self::Eager => config.assignment_strategy(&["range"]).session_timeout(Duration::from_secs(6)),
            Self::Cooperative => {
                config.assignment_strategy(&["cooperative-sticky"]).session_timeout(Duration::from_secs(6))
            }
            // Longer than any broker stop, so that a coordinator continued after a stop does not
            // expire the members it could not hear from.
            Self::Static => config
                .group_instance_id(format!("chaos-static-{member}"))
                .assignment_strategy(&["range"])
                .session_timeout(Duration::from_secs(30)),
            Self::Kip848 => config.group_protocol(GroupProtocol::Consumer),
        }
    }
}

/// A rebalance callback: when, which member, what (revoked, assigned, lost), partitions.
type Event = (Instant, usize, &'static str, Vec<i32>);

/// What every member of a group shares.
#[derive(Default)]
struct GroupState {
    /// `(partition, offset)` of every record processed, and how many were processed again.
    processed: Mutex<(HashSet<(i32, i64)>, u64)>,
    /// Rebalance callbacks.
    events: Mutex<Vec<Event>>,
    /// Commits that failed (rebalances in progress, coordinator moves).
    failed_commits: Mutex<u64>,
}

struct Listener {
    member: usize,
    state: Arc<GroupState>,
}

impl Listener {
    fn record(&self, what: &'static str, partitions: &[TopicPartition]) {
        let parts = partitions.iter().map(|tp| tp.partition).collect();
        self.state.events.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), self.member, what, parts));
    }
}

type BoxFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

impl RebalanceListener for Listener {
    fn on_partitions_revoked<'a>(&'a self, _: &'a Consumer, partitions: &'a [TopicPartition]) -> BoxFuture<'a> {
        self.record("revoked", partitions);
        Box::pin(async {})
    }

    fn on_partitions_assigned<'a>(&'a self, _: &'a Consumer, partitions: &'a [TopicPartition]) -> BoxFuture<'a> {
        self.record("assigned", partitions);
        Box::pin(async {})
    }

    fn on_partitions_lost<'a>(&'a self, _: &'a Consumer, partitions: &'a [TopicPartition]) -> BoxFuture<'a> {
        self.record("lost", partitions);
        Box::pin(async {})
    }
}

/// One member: processes (records the offsets of) what it polls and commits after each poll,
/// until its task is aborted (a crash) or `stop` is set (then it closes).
async fn member(consumer: Consumer, topic: String, state: Arc<GroupState>, stop: Stop) {
    if let Err(e) = consumer.subscribe([topic]) {
        eprintln!("[chaos] subscribe: {e}");
        return;
    }
    while !stop.is_set() {
        let records = match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => records,
            Err(e) => {
                eprintln!("[chaos] poll: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        {
            let mut processed = state.processed.lock().unwrap_or_else(|e| e.into_inner());
            for r in &records {
                if !processed.0.insert((r.partition, r.offset)) {
                    processed.1 += 1;
                }
            }
        }
        if consumer.commit().await.is_err() {
            *state.failed_commits.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        }
    }
}

struct Group {
    kind: Kind,
    id: String,
    state: Arc<GroupState>,
    members: Vec<JoinHandle<()>>,
    /// The static members' consumers (they are never crashed), to close them at the end.
    keep: Vec<Consumer>,
}

impl Group {
    async fn spawn_member(
        &mut self,
        bootstrap: &str,
        topic: &str,
        m: usize,
        stop: &Stop,
    ) -> Result<JoinHandle<()>, String> {
        let consumer = Consumer::new(self.kind.config(bootstrap, &self.id, m))
            .await
            .map_err(|e| format!("{} member {m}: {e}", self.kind.name()))?;
        consumer.set_rebalance_listener(Listener { member: m, state: self.state.clone() });
        if self.kind == Kind::Static {
            self.keep.push(consumer.clone());
        }
        Ok(tokio::spawn(member(consumer, topic.to_string(), self.state.clone(), stop.clone())))
    }
}

/// Whether the cluster finalized `group.version` 1 or more (KIP-848), as the first of its
/// bootstrap brokers that answers says.
async fn group_version_offered(bootstrap: &str) -> Result<bool, String> {
    let mut last = String::from("no bootstrap address");
    for addr in bootstrap.split(',') {
        match kafka_wire::client::Connection::connect(addr, Default::default()).await {
            Ok(conn) => return Ok(conn.finalized_feature("group.version").is_some_and(|v| v >= 1)),
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// Runs the scenario.
pub async fn run(config: &RunConfig) -> Result<Report, String> {
    let started = Instant::now();
    let bs = config.bootstrap.as_str();
    let topic = kafka_wire_tests::unique_topic("chaos-groups");
    crate::create_topic(bs, &topic, PARTITIONS, &[]).await?;
    // Kafka 3.9 has no KIP-848 groups: it lists ConsumerGroupHeartbeat but, without the
    // `group.version` feature, refuses it. The scenario then runs the classic groups only.
    let kip_848 = group_version_offered(bs).await?;
    let kinds: Vec<Kind> = KINDS.into_iter().filter(|k| kip_848 || !matches!(k, Kind::Kip848)).collect();
    if !kip_848 {
        eprintln!("[chaos] groups: no KIP-848 group: the cluster has no group.version feature (Kafka 4.0+)");
    }
    eprintln!("[chaos] groups: topic {topic}, groups {kinds:?} x {MEMBERS} members, seed {}", config.seed);
    // `stop` ends the members and the commit sampler; `faults_stop` the producer and the faults.
    let (stop, faults_stop) = (Stop::default(), Stop::default());
    let writer = tokio::spawn(crate::feed(bs.to_string(), topic.clone(), RATE, faults_stop.clone()));

    let mut groups = Vec::new();
    for kind in kinds {
        let id = format!("{topic}-{}", kind.name());
        let mut group = Group { kind, id, state: Arc::default(), members: Vec::new(), keep: Vec::new() };
        for m in 0..MEMBERS {
            let handle = group.spawn_member(bs, &topic, m, &stop).await?;
            group.members.push(handle);
        }
        groups.push(group);
    }
    // The static group stable (every partition owned, by one member each) before any fault:
    // from then on it must see no rebalance.
    let static_group = groups.iter().position(|g| g.kind == Kind::Static).expect("a static group");
    wait_stable(&groups[static_group].keep, &groups[static_group].state, STABLE_BOUND).await?;
    let static_baseline = groups[static_group].state.events.lock().unwrap_or_else(|e| e.into_inner()).len();

    let sampler = tokio::spawn(sample_commits(
        bs.to_string(),
        topic.clone(),
        groups.iter().map(|g| g.id.clone()).collect(),
        stop.clone(),
    ));
    let schedule = Schedule::new(config.seed, Plan::Rolling);
    let topics = vec![topic.clone(), "__consumer_offsets".to_string()];
    let injector = tokio::spawn(faults::inject(bs.to_string(), topics, schedule, faults_stop.clone()));

    // Member crashes, on their own seeded schedule, while the brokers bounce.
    let mut rng = Rng::new(config.seed.rotate_left(17) ^ 0xC4A5);
    let mut crashes = 0u64;
    let end = tokio::time::Instant::now() + config.duration;
    loop {
        let gap = rng.duration(Duration::from_secs(2), Duration::from_secs(8));
        if tokio::time::Instant::now() + gap >= end {
            break;
        }
        tokio::time::sleep(gap).await;
        let crashable: Vec<usize> = (0..groups.len()).filter(|g| groups[*g].kind != Kind::Static).collect();
        let g = crashable[rng.below(crashable.len() as u64) as usize];
        let m = rng.below(MEMBERS as u64) as usize;
        let down = rng.duration(Duration::ZERO, Duration::from_secs(3));
        eprintln!("[chaos] crash {} member {m}; back in {:.1} s", groups[g].kind.name(), down.as_secs_f64());
        groups[g].members[m].abort();
        crashes += 1;
        tokio::time::sleep(down).await;
        let handle = groups[g].spawn_member(bs, &topic, m, &stop).await?;
        groups[g].members[m] = handle;
    }
    tokio::time::sleep_until(end).await;

    // End of the faults: the producer stops, the cluster heals, the groups catch up.
    faults_stop.set();
    let (records, failed) = writer.await.map_err(|e| format!("writer: {e}"))??;
    let faults = injector.await.map_err(|e| format!("fault injector: {e}"))??;

    let mut report = Report { faults, records, failed, ..Report::default() };
    let mut v = Violations::default();
    let expected: Vec<(i32, i64)> =
        crate::read_back(bs, &topic, PARTITIONS, false).await?.iter().map(|r| (r.partition, r.offset)).collect();
    let deadline = tokio::time::Instant::now() + DRAIN_BOUND;
    for group in &groups {
        let missing = loop {
            let missing: Vec<(i32, i64)> = {
                let processed = group.state.processed.lock().unwrap_or_else(|e| e.into_inner());
                expected.iter().filter(|o| !processed.0.contains(o)).copied().collect()
            };
            if missing.is_empty() || tokio::time::Instant::now() >= deadline {
                break missing;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if !missing.is_empty() {
            v.push(|| {
                format!(
                    "group {}: {} of {} records never processed (first {:?})",
                    group.kind.name(),
                    missing.len(),
                    expected.len(),
                    &missing[..missing.len().min(5)]
                )
            });
        }
    }
    // Taken before the static members close (closing revokes their partitions).
    let static_events = groups[static_group].state.events.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (at, m, what, parts) in static_events.iter().skip(static_baseline) {
        let at = at.duration_since(started).as_secs_f64();
        v.push(|| format!("static member {m}: {what} {parts:?} at t={at:.1}s, after the group was stable"));
    }
    // The members stop polling (the loop ends), and the static ones are closed.
    stop.set();
    for b in sampler.await.map_err(|e| format!("sampler: {e}"))? {
        v.push(|| b);
    }
    for group in &mut groups {
        for handle in group.members.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
        }
        for consumer in group.keep.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(30), consumer.close()).await;
        }
    }

    report.notes.push(("records in the topic".into(), expected.len().to_string()));
    report.notes.push(("member crashes".into(), crashes.to_string()));
    for group in &groups {
        let processed = group.state.processed.lock().unwrap_or_else(|e| e.into_inner());
        let events = group.state.events.lock().unwrap_or_else(|e| e.into_inner()).len();
        let failed_commits = *group.state.failed_commits.lock().unwrap_or_else(|e| e.into_inner());
        report.notes.push((
            format!("group {}", group.kind.name()),
            format!(
                "{} processed, {} again, {events} rebalance callbacks, {failed_commits} failed commits",
                processed.0.len(),
                processed.1
            ),
        ));
    }
    report.violations = v;
    Ok(report)
}

/// Waits until the members' assignments cover every partition, each once.
async fn wait_stable(members: &[Consumer], state: &GroupState, bound: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let assignments: Vec<BTreeSet<TopicPartition>> = members.iter().map(Consumer::assignment).collect();
        let total: usize = assignments.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<&TopicPartition> = assignments.iter().flatten().collect();
        // A member's assignment changes when the group's answer comes; its listener is called
        // later, in its next poll. The baseline is taken once the callbacks have caught up, or
        // the stable assignment's own callbacks would count as a rebalance after it.
        let called_back = {
            let events = state.events.lock().unwrap_or_else(|e| e.into_inner());
            assignments
                .iter()
                .enumerate()
                .all(|(m, assigned)| called_back_with(&events, m) == assigned.iter().map(|tp| tp.partition).collect())
        };
        if total == PARTITIONS as usize
            && union.len() == total
            && assignments.iter().all(|a| !a.is_empty())
            && called_back
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the static group was not stable within {bound:?}: {assignments:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The partitions member `m` owns as its rebalance callbacks tell: assigned, less revoked or lost.
fn called_back_with(events: &[Event], m: usize) -> BTreeSet<i32> {
    let mut owned = BTreeSet::new();
    for (_, _, what, parts) in events.iter().filter(|e| e.1 == m) {
        if *what == "assigned" {
            owned.extend(parts.iter().copied());
        } else {
            parts.iter().for_each(|p| {
                owned.remove(p);
            });
        }
    }
    owned
}

/// Samples every group's committed offsets every 500 ms until `stop`; returns each time one
/// moved backwards.
async fn sample_commits(bootstrap: String, topic: String, groups: Vec<String>, stop: Stop) -> Vec<String> {
    let Ok(admin) = Admin::connect(ClientConfig::new(&bootstrap)).await else {
        return vec!["the commit sampler could not connect".into()];
    };
    let admin = admin.with_timeout(Duration::from_secs(5));
    let mut last: BTreeMap<(usize, i32), i64> = BTreeMap::new();
    let mut backwards = Vec::new();
    let mut samples = 0u64;
    while !stop.is_set() {
        for (g, group) in groups.iter().enumerate() {
            // A coordinator moving or down answers nothing or an error: no sample then.
            let Ok(offsets) = admin.list_group_offsets(group, Some(&[topic.as_str()])).await else { continue };
            samples += 1;
            for o in offsets.iter().filter(|o| o.offset >= 0) {
                if let Some(&before) = last.get(&(g, o.partition)) {
                    if o.offset < before {
                        backwards.push(format!(
                            "group {group}: committed offset of partition {} moved back from {before} to {}",
                            o.partition, o.offset
                        ));
                    }
                }
                last.insert((g, o.partition), o.offset);
            }
        }
        stop.sleep(Duration::from_millis(500)).await;
    }
    eprintln!("[chaos] groups: {samples} committed-offset samples");
    admin.close().await;
    backwards
}
