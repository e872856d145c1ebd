//! Consumer groups against a real broker. Classic protocol: three members sharing a topic with
//! manual commits, a member killed without leaving, cooperative-sticky moving only what must
//! move, static members restarting without a rebalance, and interop with Kafka's Java consumer.
//! KIP-848 (`group.protocol=consumer`): a group of three, a member killed without leaving, and
//! a static member restarting without disturbing the other member (skipped, saying so, on
//! brokers without it: Kafka 3.x); on those brokers, the typed error a KIP-848 member gets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_wire::client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    RebalanceListener,
};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire_tests::raw::create_topic;
use kafka_wire_tests::{bootstrap, kafka_tool, kip_848_available, unique_topic, wait_until};

/// The group tests run one at a time: several groups rebalancing at once on a loaded 2-core
/// machine made their (generous) deadlines flaky.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

async fn client() -> Client {
    Client::connect(ClientConfig::new(&bootstrap())).await.expect("connect to the test broker")
}

/// Produces records `0..n` as values, round-robin over `partitions`.
async fn produce(topic: &str, partitions: i32, n: u64) {
    produce_from(topic, partitions, 0, n).await;
}

/// Produces records `from..from + n` as values, round-robin over `partitions`.
async fn produce_from(topic: &str, partitions: i32, from: u64, n: u64) {
    let producer = Producer::new(ProducerConfig::new(&bootstrap())).await.unwrap();
    let mut fs = Vec::with_capacity(n as usize);
    for i in from..from + n {
        let r = ProducerRecord::new(topic, i.to_string()).partition((i % partitions as u64) as i32);
        fs.push(producer.send(r).await.unwrap());
    }
    for f in fs {
        f.await.unwrap();
    }
    producer.close().await.unwrap();
}

fn member_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new(&bootstrap())
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .enable_auto_commit(false)
        .session_timeout(Duration::from_secs(6))
        .heartbeat_interval(Duration::from_millis(500))
}

/// Records each member saw, as (partition, offset) → value.
type Seen = Arc<Mutex<Vec<(i32, i64, u64)>>>;

/// A stop signal that latches: a member busy committing when it is raised still sees it on its
/// next turn (a `Notify::notify_waiters` would be lost then, and the member would run forever).
#[derive(Clone)]
struct Stop(Arc<tokio::sync::watch::Sender<bool>>);

impl Stop {
    fn new() -> Self {
        Stop(Arc::new(tokio::sync::watch::channel(false).0))
    }

    fn raise(&self) {
        self.0.send_replace(true);
    }

    async fn raised(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|raised| *raised).await;
    }
}

/// Consumes until `stop` is raised, committing after every poll.
async fn run_member(consumer: Consumer, seen: Seen, stop: Stop) -> Consumer {
    loop {
        tokio::select! {
            biased;
            _ = stop.raised() => return consumer,
            r = consumer.poll(Duration::from_millis(200)) => {
                let records = r.expect("poll");
                if records.is_empty() {
                    continue;
                }
                {
                    let mut s = seen.lock().unwrap();
                    for r in &records {
                        let v: u64 = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap().parse().unwrap();
                        s.push((r.partition, r.offset, v));
                    }
                }
                // A commit can fail while the group rebalances; the records then come again,
                // which the tests that forbid duplicates would catch.
                if let Err(e) = consumer.commit().await {
                    eprintln!("commit failed: {e}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_consume_every_record_once_with_manual_commits() {
    let _serial = serial().await;
    const N: u64 = 300_000;
    let client = client().await;
    let topic = unique_topic("group3");
    let group = unique_topic("g3");
    create_topic(&client, &topic, 6, 1, &[]).await;
    produce(&topic, 6, N).await;
    let seen: Seen = Arc::default();
    let stop = Stop::new();
    let mut handles = Vec::new();
    for _ in 0..3 {
        let c = Consumer::new(member_config(&group)).await.unwrap();
        c.subscribe([topic.as_str()]).unwrap();
        handles.push(tokio::spawn(run_member(c, seen.clone(), stop.clone())));
    }
    wait_until("all records", Duration::from_secs(120), || seen.lock().unwrap().len() as u64 >= N).await;
    // Let a few more polls happen: nothing may arrive twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.raise();
    for h in handles {
        h.await.unwrap().close().await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let distinct: BTreeSet<u64> = seen.iter().map(|(_, _, v)| *v).collect();
    assert_eq!(distinct.len() as u64, N, "every record processed");
    assert_eq!(seen.len() as u64, N, "no record processed twice");
    // The group's committed offsets are the ends of the partitions.
    let admin = Admin::new(client.clone());
    let offsets = admin.list_group_offsets(&group, None).await.unwrap();
    let total: i64 = offsets.iter().map(|o| o.offset).sum();
    assert_eq!(total as u64, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_s_partitions_move_and_nothing_is_skipped() {
    let _serial = serial().await;
    killed_member_s_partitions_move(member_config, "kill").await;
}

/// Records which partitions each rebalance revoked and assigned.
#[derive(Default)]
struct Recorder {
    revoked: Mutex<Vec<TopicPartition>>,
    assigned: Mutex<Vec<TopicPartition>>,
}

struct RecordingListener(Arc<Recorder>);

impl RebalanceListener for RecordingListener {
    fn on_partitions_revoked<'a>(
        &'a self,
        _: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        self.0.revoked.lock().unwrap().extend_from_slice(partitions);
        Box::pin(async {})
    }

    fn on_partitions_assigned<'a>(
        &'a self,
        _: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        self.0.assigned.lock().unwrap().extend_from_slice(partitions);
        Box::pin(async {})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_revokes_only_the_partitions_that_move() {
    let _serial = serial().await;
    adding_a_member_revokes_only_what_moves(|group| member_config(group).assignment_strategy(&["cooperative-sticky"]))
        .await;
}

/// KIP-848's server-side assignment is incremental too: a new member takes partitions only as
/// the old owner releases them, and nothing else moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_group_revokes_only_the_partitions_that_move() {
    let _serial = serial().await;
    if !kip_848_available("a_kip_848_group_revokes_only_the_partitions_that_move").await {
        return;
    }
    adding_a_member_revokes_only_what_moves(kip_848_config).await;
}

/// One member owns a 6-partition topic; a second joins: the first is revoked exactly the
/// partitions the second ends up with, keeps the rest, and no partition has two owners.
async fn adding_a_member_revokes_only_what_moves(config: fn(&str) -> ConsumerConfig) {
    let client = client().await;
    let topic = unique_topic("coop");
    let group = unique_topic("gcoop");
    create_topic(&client, &topic, 6, 1, &[]).await;
    let first = Consumer::new(config(&group)).await.unwrap();
    let rec = Arc::new(Recorder::default());
    first.set_rebalance_listener(RecordingListener(rec.clone()));
    first.subscribe([topic.as_str()]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while first.assignment().len() < 6 {
        assert!(tokio::time::Instant::now() < deadline);
        first.poll(Duration::from_millis(100)).await.unwrap();
    }
    let before = first.assignment();
    let second = Consumer::new(config(&group)).await.unwrap();
    second.subscribe([topic.as_str()]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while first.assignment().len() != 3 || second.assignment().len() != 3 {
        assert!(tokio::time::Instant::now() < deadline, "{:?} / {:?}", first.assignment(), second.assignment());
        tokio::join!(first.poll(Duration::from_millis(100)), second.poll(Duration::from_millis(100))).0.unwrap();
    }
    let revoked: BTreeSet<TopicPartition> = rec.revoked.lock().unwrap().iter().cloned().collect();
    let moved: BTreeSet<TopicPartition> = second.assignment();
    assert_eq!(revoked, moved, "only the partitions that moved to the new member were revoked");
    assert!(first.assignment().is_subset(&before));
    assert!(first.assignment().is_disjoint(&second.assignment()));
    first.close().await.unwrap();
    second.close().await.unwrap();
}

/// Polls both members for `rounds` turns of 100 ms each.
async fn poll_both(x: &Consumer, y: &Consumer, rounds: usize) {
    for _ in 0..rounds {
        tokio::join!(x.poll(Duration::from_millis(100)), y.poll(Duration::from_millis(100))).0.unwrap();
    }
}

/// How a static member restart is run and watched.
struct Restart {
    /// How long the member is away; the other member keeps polling meanwhile.
    downtime: Duration,
    /// How long the other member is watched once the replacement has its partitions: longer
    /// than a heartbeat interval, since a rebalance reaches a member with a heartbeat.
    watch: Duration,
    /// A classic group: the coordinator's view (DescribeGroups) is checked too.
    classic: bool,
}

/// Closes the static member `gone` (KIP-345: a classic static member's close sends no
/// LeaveGroup; KIP-848: it leaves with epoch -2, which keeps its assignment), starts its
/// replacement with the same `group.instance.id` after `downtime`, and checks, with rebalance
/// listeners, that the replacement gets the same partitions in one step and that `other` sees
/// no change at all. Returns the replacement.
async fn restart_static_member(
    gone: Consumer,
    other: &Consumer,
    make: impl Fn() -> ConsumerConfig,
    topic: &str,
    group: &str,
    how: Restart,
) -> Consumer {
    let before = gone.assignment();
    let other_before = other.assignment();
    assert!(!before.is_empty());
    let other_rec = Arc::new(Recorder::default());
    other.set_rebalance_listener(RecordingListener(other_rec.clone()));
    gone.close().await.unwrap();
    for _ in 0..how.downtime.as_millis() / 100 {
        other.poll(Duration::from_millis(100)).await.unwrap();
    }
    let new = Consumer::new(make()).await.unwrap();
    let new_rec = Arc::new(Recorder::default());
    new.set_rebalance_listener(RecordingListener(new_rec.clone()));
    new.subscribe([topic]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while new.assignment() != before {
        assert!(tokio::time::Instant::now() < deadline, "{:?} != {:?}", new.assignment(), before);
        poll_both(&new, other, 1).await;
    }
    poll_both(&new, other, (how.watch.as_millis() / 100) as usize).await;
    assert!(other_rec.revoked.lock().unwrap().is_empty(), "the other member saw a revocation");
    assert!(other_rec.assigned.lock().unwrap().is_empty(), "the other member saw an assignment");
    assert_eq!(other.assignment(), other_before);
    assert_eq!(new.assignment(), before);
    assert!(new_rec.revoked.lock().unwrap().is_empty(), "the replacement had partitions revoked");
    let assigned = new_rec.assigned.lock().unwrap().clone();
    assert_eq!(assigned.len(), before.len(), "the replacement got its partitions once: {assigned:?}");
    if how.classic {
        let admin = Admin::new(client().await);
        let after = admin.describe_groups(&[group]).await.unwrap()[0].clone();
        assert_eq!(after.members.len(), 2);
        assert_eq!(after.state, "Stable");
    }
    new
}

/// KIP-345: a static member that restarts within the session timeout takes its predecessor's
/// place without a rebalance. Both members are restarted in turn, so the group leader (which
/// the coordinator answers with `skip_assignment`, KIP-814) is among them whichever it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarted_within_the_session_timeout_causes_no_rebalance() {
    let _serial = serial().await;
    let client = client().await;
    let topic = unique_topic("static");
    let group = unique_topic("gstatic");
    create_topic(&client, &topic, 4, 1, &[]).await;
    let config =
        |instance: &str| member_config(&group).group_instance_id(instance).session_timeout(Duration::from_secs(20));
    let a = Consumer::new(config("a")).await.unwrap();
    let b = Consumer::new(config("b")).await.unwrap();
    a.subscribe([topic.as_str()]).unwrap();
    b.subscribe([topic.as_str()]).unwrap();
    // Let the group settle: joins can take more than one generation while members arrive.
    let admin = Admin::new(client.clone());
    let mut settled = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while settled < 10 {
        assert!(tokio::time::Instant::now() < deadline, "the group never settled");
        let before = (a.assignment(), b.assignment());
        poll_both(&a, &b, 1).await;
        // The group does not exist before the first join reaches the coordinator.
        let described = admin.describe_groups(&[&group]).await.unwrap_or_default();
        let stable = described.first().is_some_and(|g| g.state == "Stable");
        let split = a.assignment().len() == 2 && b.assignment().len() == 2;
        settled = if stable && split && before == (a.assignment(), b.assignment()) { settled + 1 } else { 0 };
    }
    // Away for 2 s (four heartbeats of the other member), watched for 3 s.
    let how = || Restart { downtime: Duration::from_secs(2), watch: Duration::from_secs(3), classic: true };
    let a2 = restart_static_member(a, &b, || config("a"), &topic, &group, how()).await;
    let b2 = restart_static_member(b, &a2, || config("b"), &topic, &group, how()).await;
    a2.close().await.unwrap();
    b2.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_consumer_and_the_java_consumer_share_a_classic_group() {
    let _serial = serial().await;
    let client = client().await;
    let topic = unique_topic("javagroup");
    let group = unique_topic("gjava");
    create_topic(&client, &topic, 4, 1, &[]).await;
    let ours = Consumer::new(member_config(&group).assignment_strategy(&["range"])).await.unwrap();
    ours.subscribe([topic.as_str()]).unwrap();
    let java = {
        let (bootstrap, topic, group) = (bootstrap(), topic.clone(), group.clone());
        std::thread::spawn(move || {
            kafka_tool(
                "console-consumer",
                &[
                    "--bootstrap-server",
                    &bootstrap,
                    "--topic",
                    &topic,
                    "--group",
                    &group,
                    "--consumer-property",
                    "partition.assignment.strategy=org.apache.kafka.clients.consumer.RangeAssignor",
                    "--consumer-property",
                    "auto.offset.reset=earliest",
                    "--max-messages",
                    "2000",
                    "--timeout-ms",
                    "30000",
                    "--property",
                    "print.partition=true",
                ],
                None,
            )
        })
    };
    // Wait until both are members of a stable generation, then produce.
    let admin = Admin::new(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        ours.poll(Duration::from_millis(100)).await.unwrap();
        let d = admin.describe_groups(&[&group]).await.unwrap_or_default();
        if d.first().is_some_and(|g| g.state == "Stable" && g.members.len() == 2) && ours.assignment().len() == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "group never had both members: {d:?}");
    }
    let our_partitions: BTreeSet<i32> = ours.assignment().iter().map(|tp| tp.partition).collect();
    produce(&topic, 4, 4000).await;
    let mut seen_ours: BTreeMap<i32, usize> = BTreeMap::new();
    while seen_ours.values().sum::<usize>() < 2000 && tokio::time::Instant::now() < deadline + Duration::from_secs(30) {
        for r in ours.poll(Duration::from_millis(200)).await.unwrap() {
            *seen_ours.entry(r.partition).or_default() += 1;
        }
    }
    ours.commit().await.unwrap();
    let out = java.join().unwrap();
    let java_partitions: BTreeMap<i32, usize> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Partition:")?.split('\t').next()?.parse().ok())
        .fold(BTreeMap::new(), |mut m, p| {
            *m.entry(p).or_default() += 1;
            m
        });
    // Range gives each member two of the four partitions; each reads all 1000 records of its own.
    let want_ours: BTreeMap<i32, usize> = our_partitions.iter().map(|p| (*p, 1000)).collect();
    let want_java: BTreeMap<i32, usize> = (0..4).filter(|p| !our_partitions.contains(p)).map(|p| (p, 1000)).collect();
    assert_eq!(seen_ours, want_ours);
    assert_eq!(java_partitions, want_java, "{}", String::from_utf8_lossy(&out.stderr));
    ours.close().await.unwrap();
}

/// The same group of three with the next-generation protocol (KIP-848, `group.protocol=consumer`,
/// server-side assignment; Kafka 4.x): every record processed, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_group_consumes_every_record_once() {
    let _serial = serial().await;
    if !kip_848_available("a_kip_848_group_consumes_every_record_once").await {
        return;
    }
    const N: u64 = 60_000;
    let client = client().await;
    let topic = unique_topic("kip848");
    let group = unique_topic("g848");
    create_topic(&client, &topic, 6, 1, &[]).await;
    produce(&topic, 6, N).await;
    let seen: Seen = Arc::default();
    let stop = Stop::new();
    let mut handles = Vec::new();
    for _ in 0..3 {
        // The broker's session timeout (45 s) as the local lease: a 6 s lease against its 5 s
        // heartbeat interval would drop partitions whenever an answer came a second late.
        let config = kip_848_config(&group);
        let c = Consumer::new(config).await.unwrap();
        c.subscribe([topic.as_str()]).unwrap();
        handles.push(tokio::spawn(run_member(c, seen.clone(), stop.clone())));
    }
    wait_until("all records", Duration::from_secs(120), || seen.lock().unwrap().len() as u64 >= N).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.raise();
    for h in handles {
        h.await.unwrap().close().await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let distinct: BTreeSet<u64> = seen.iter().map(|(_, _, v)| *v).collect();
    assert_eq!(distinct.len() as u64, N, "every record processed");
    assert_eq!(seen.len() as u64, N, "no record processed twice");
    let admin = Admin::new(client.clone());
    let total: i64 = admin.list_group_offsets(&group, None).await.unwrap().iter().map(|o| o.offset).sum();
    assert_eq!(total as u64, N, "the group committed the end of every partition");
}

/// A member of a KIP-848 group. The coordinator's session timeout (`group.consumer.session.
/// timeout.ms`, 45 s by default and at least `group.consumer.min.session.timeout.ms`, also 45 s)
/// is a broker setting; the member's own lease is set to the same.
fn kip_848_config(group: &str) -> ConsumerConfig {
    member_config(group)
        .group_protocol(kafka_wire::client::GroupProtocol::Consumer)
        .session_timeout(Duration::from_secs(45))
}

/// KIP-848: a member that dies without leaving keeps its partitions until the coordinator's
/// session timeout (45 s on the test broker) expires; then they move to the survivor, which
/// resumes from the committed offsets: no record is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_kip_848_member_s_partitions_move_and_nothing_is_skipped() {
    let _serial = serial().await;
    if !kip_848_available("a_killed_kip_848_member_s_partitions_move_and_nothing_is_skipped").await {
        return;
    }
    killed_member_s_partitions_move(kip_848_config, "kill848").await;
}

/// Two members share a topic; one processes and commits some records, then is killed (its task
/// aborted, its last handle dropped: no leave). After the coordinator's session timeout its
/// partitions move to the survivor, which resumes from the committed offsets: no record skipped.
async fn killed_member_s_partitions_move(config: fn(&str) -> ConsumerConfig, name: &str) {
    const N: u64 = 60_000;
    let client = client().await;
    let topic = unique_topic(name);
    let group = unique_topic(&format!("g{name}"));
    create_topic(&client, &topic, 6, 1, &[]).await;
    let seen: Seen = Arc::default();
    let stop = Stop::new();
    let survivor = Consumer::new(config(&group)).await.unwrap();
    survivor.subscribe([topic.as_str()]).unwrap();
    let victim = Consumer::new(config(&group)).await.unwrap();
    victim.subscribe([topic.as_str()]).unwrap();
    let survivor_handle = survivor.clone();
    let survivor = tokio::spawn(run_member(survivor, seen.clone(), stop.clone()));
    let victim_handle = victim.clone();
    let victim_seen: Seen = Arc::default();
    let victim_task = tokio::spawn(run_member(victim, victim_seen.clone(), Stop::new()));
    // Both own part of the topic (the coordinator splits it) before there is anything to read:
    // however long the second join takes, the first member cannot have read everything first.
    wait_until("both members assigned", Duration::from_secs(60), || {
        let (s, v) = (survivor_handle.assignment(), victim_handle.assignment());
        !s.is_empty() && !v.is_empty() && s.len() + v.len() == 6
    })
    .await;
    produce(&topic, 6, N / 2).await;
    // The victim has processed and committed some of its own partitions' records.
    wait_until("the victim's first records", Duration::from_secs(60), || victim_seen.lock().unwrap().len() > 1000)
        .await;
    let victim_partitions = victim_handle.assignment();
    // Killed: the task is aborted and the last handle dropped, so no leave heartbeat is sent.
    victim_task.abort();
    let _ = victim_task.await;
    drop(victim_handle);
    let killed_at = tokio::time::Instant::now();
    produce_from(&topic, 6, N / 2, N / 2).await;
    // The coordinator notices after its session timeout (KIP-848: 45 s by default).
    wait_until("the victim's partitions on the survivor", Duration::from_secs(120), || {
        victim_partitions.is_subset(&survivor_handle.assignment())
    })
    .await;
    let moved_after = killed_at.elapsed();
    wait_until("every record", Duration::from_secs(60), || {
        let s = seen.lock().unwrap();
        let v = victim_seen.lock().unwrap();
        let all: BTreeSet<u64> = s.iter().chain(v.iter()).map(|(_, _, x)| *x).collect();
        all.len() as u64 >= N
    })
    .await;
    stop.raise();
    let survivor = survivor.await.unwrap();
    assert_eq!(survivor.assignment().len(), 6, "the survivor owns the whole topic");
    survivor.close().await.unwrap();
    eprintln!("the victim's partitions moved {moved_after:?} after it was killed");
    let s = seen.lock().unwrap();
    let v = victim_seen.lock().unwrap();
    let all: BTreeSet<u64> = s.iter().chain(v.iter()).map(|(_, _, x)| *x).collect();
    assert_eq!(all.len() as u64, N, "no record skipped");
}

/// KIP-848 static membership: a static member that closes (leave heartbeat with epoch -2: the
/// coordinator keeps its assignment for the instance id) and restarts within the session
/// timeout gets its partitions back, and the other member's assignment does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_kip_848_member_restarted_within_the_session_timeout_keeps_its_partitions() {
    let _serial = serial().await;
    if !kip_848_available("a_static_kip_848_member_restarted_within_the_session_timeout_keeps_its_partitions").await {
        return;
    }
    let client = client().await;
    let topic = unique_topic("static848");
    let group = unique_topic("gstatic848");
    create_topic(&client, &topic, 4, 1, &[]).await;
    let config = |instance: &str| kip_848_config(&group).group_instance_id(instance);
    let a = Consumer::new(config("a")).await.unwrap();
    let b = Consumer::new(config("b")).await.unwrap();
    a.subscribe([topic.as_str()]).unwrap();
    b.subscribe([topic.as_str()]).unwrap();
    // Settled: two partitions each, unchanged for 20 turns (2 s).
    let mut settled = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while settled < 20 {
        assert!(tokio::time::Instant::now() < deadline, "never settled: {:?} / {:?}", a.assignment(), b.assignment());
        let before = (a.assignment(), b.assignment());
        poll_both(&a, &b, 1).await;
        let split = a.assignment().len() == 2 && b.assignment().len() == 2;
        settled = if split && before == (a.assignment(), b.assignment()) { settled + 1 } else { 0 };
    }
    // Away for 7 s, longer than the coordinator's heartbeat interval (5 s): had the member
    // left the group, the other one would be given its partitions meanwhile. Watched for 7 s.
    let how = Restart { downtime: Duration::from_secs(7), watch: Duration::from_secs(7), classic: false };
    let a2 = restart_static_member(a, &b, || config("a"), &topic, &group, how).await;
    a2.close().await.unwrap();
    b.close().await.unwrap();
}

/// A pattern subscription takes the topics whose names match, including one created after the
/// consumer subscribed, and not the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_subscription_follows_matching_topics() {
    let _serial = serial().await;
    let client = client().await;
    let prefix = unique_topic("pat").replace('-', "_");
    let (one, two, other) = (format!("{prefix}_a"), format!("{prefix}_b"), format!("{prefix}x_c"));
    create_topic(&client, &one, 1, 1, &[]).await;
    create_topic(&client, &other, 1, 1, &[]).await;
    produce(&one, 1, 10).await;
    produce(&other, 1, 10).await;
    let mut config = member_config(&unique_topic("gpat"));
    config.metadata_max_age = Duration::from_millis(500);
    let consumer = Consumer::new(config).await.unwrap();
    consumer.subscribe_pattern(&format!("{prefix}_.*")).unwrap();
    let mut topics = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut created_two = false;
    while topics.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "saw topics {topics:?}");
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            topics.insert(r.topic.to_string());
        }
        if !created_two && topics.contains(&one) {
            create_topic(&client, &two, 1, 1, &[]).await;
            produce(&two, 1, 10).await;
            created_two = true;
        }
    }
    assert_eq!(topics, BTreeSet::from([one.clone(), two.clone()]), "only the matching topics");
    consumer.close().await.unwrap();
}

/// A new classic group forms in one rebalance: its leader assigns knowing the partition counts
/// of its subscription, so its first generation already has the partitions. (The member joined
/// before its first metadata answer, assigned nothing in generation 1 and rebalanced again as
/// soon as the counts arrived.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_new_classic_group_forms_in_one_rebalance() {
    let _serial = serial().await;
    let client = client().await;
    for round in 0..3 {
        let topic = unique_topic("onegen");
        create_topic(&client, &topic, 3, 1, &[]).await;
        let consumer = Consumer::new(member_config(&unique_topic("gonegen"))).await.unwrap();
        consumer.subscribe([topic.as_str()]).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while consumer.assignment().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "round {round}: no partitions within 60 s");
            consumer.poll(Duration::from_millis(100)).await.unwrap();
        }
        assert_eq!(consumer.assignment().len(), 3);
        let generation = consumer.group_metadata().unwrap().generation_id;
        assert_eq!(generation, 1, "round {round}: the partitions came in generation {generation}");
        consumer.close().await.unwrap();
    }
}

/// On a broker without the KIP-848 protocol (Kafka 3.9: no `group.version` feature; it answers
/// ConsumerGroupHeartbeat UNSUPPORTED_VERSION) a `group.protocol=consumer` member does not hang or fall back silently: its poll
/// fails with a typed configuration error naming `group.protocol` and the version it needs.
/// Skipped (saying so) on brokers that have the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_member_of_a_broker_without_it_gets_a_typed_error() {
    use kafka_wire::client::{Error, ErrorKind};
    let _serial = serial().await;
    if kafka_wire_tests::kip_848_offered().await {
        eprintln!(
            "\n!!!! SKIPPED a_kip_848_member_of_a_broker_without_it_gets_a_typed_error: the broker (Kafka {}) offers \
             KIP-848 !!!!\n",
            kafka_wire_tests::kafka_version()
        );
        return;
    }
    let client = client().await;
    let topic = unique_topic("no848");
    create_topic(&client, &topic, 1, 1, &[]).await;
    let consumer = Consumer::new(kip_848_config(&unique_topic("gno848"))).await.unwrap();
    consumer.subscribe([topic.as_str()]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let error = loop {
        match consumer.poll(Duration::from_millis(200)).await {
            Err(e) => break e,
            Ok(records) => assert!(records.is_empty(), "a member of no group got records"),
        }
        assert!(tokio::time::Instant::now() < deadline, "no error within 30 s from a KIP-848 member of a 3.x broker");
    };
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    assert!(matches!(&error, Error::Config { property, .. } if property == "group.protocol"), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("group.protocol") && text.contains("4.0"), "{text}");
    let _ = consumer.close().await;
}
