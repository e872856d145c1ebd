//! A broker that stops answering without closing its sockets (SIGSTOP: a hung JVM, a frozen VM),
//! on the 3-node cluster (`cargo xtask kafka up --nodes 3`; the test skips loudly when it is not
//! up).
//!
//! A topic has 3 partitions, replication factor 3, `min.insync.replicas=2`, and one leader per
//! broker. A producer (acks=all, idempotent) writes keyed records to all 3 partitions at a
//! steady pace and a consumer group reads them. One broker is stopped:
//! - the partitions led by the other two keep being acknowledged and consumed (counted by
//!   events), and through the whole stopped window neither of them goes without an
//!   acknowledgement for as long as the request timeout — the brokers themselves pause them
//!   for a few seconds while they fence the stopped broker and shrink the in-sync replicas, but
//!   a client that waits for the stopped broker stalls them for a whole request timeout;
//! - the stopped broker's partition gets a new leader and flows again while it is still stopped,
//!   about one request timeout after the stop: the producer's request to the stopped broker
//!   times out, and the partition's batches go to the new leader (not back to the stopped
//!   broker, whose handshake would hold them for another request timeout);
//! - after it is continued, every partition flows and every acknowledged record is read back.
//!
//! Figures (records/s per partition before, during and after the stop, and acknowledgements per
//! second) are printed. Every wait is bounded; the bounds only turn a hang into a failure.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_wire::client::{
    Client, ClientConfig, Consumer, ConsumerConfig, DeliveryFuture, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};
use kafka_wire::codec::messages::create_topics::{CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig};
use kafka_wire::codec::messages::CreateTopicsRequest;
use kafka_wire::codec::ErrorCode;
use kafka_wire_tests::raw::{partition_leaders, wait_for_leaders};
use kafka_wire_tests::{cluster3_for, kafka_node_addr, kafka_node_pause, kafka_node_resume, kafka_tool, unique_topic};
use tokio::sync::mpsc;

const PARTITIONS: usize = 3;
/// The producer sends one record to each partition per tick.
const TICK: Duration = Duration::from_millis(3);
/// Records acknowledged and consumed per partition that make a phase's measurement.
const PER_PHASE: u64 = 600;
/// Bound on each phase (a hang is a failure, not a stuck CI job).
const PHASE_DEADLINE: Duration = Duration::from_secs(120);
/// The producer's request timeout: a request to the stopped broker fails after this long. A
/// client that lets the healthy partitions wait for the stopped broker stalls them this long,
/// about five times the longest pause the brokers themselves cause (fencing the stopped broker
/// and shrinking the in-sync replicas, `broker.session.timeout.ms` = 3 s on the test cluster).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long after the stop the stopped broker's partition may go without acknowledgements:
/// one request timeout, plus time for the metadata refresh, the retry and a loaded machine;
/// less than two request timeouts. The broker is resumed once the partition flows again, or
/// at this bound.
const VICTIM_BOUND: Duration = REQUEST_TIMEOUT.saturating_add(Duration::from_secs(8));

fn value(seq: u64) -> String {
    format!("seq={seq:010}")
}

fn seq_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value.strip_prefix(b"seq=")?).ok()?.parse().ok()
}

/// What happened, per partition, as events arrive.
#[derive(Default)]
struct Progress {
    sent: [AtomicU64; PARTITIONS],
    acked: [AtomicU64; PARTITIONS],
    consumed: [AtomicU64; PARTITIONS],
    failed: AtomicU64,
    /// Acknowledged records: (partition, offset) → sequence number.
    acks: Mutex<HashMap<(i32, i64), u64>>,
    /// Records read by the group (the first time each offset was seen): (partition, offset) →
    /// sequence number.
    read: Mutex<HashMap<(i32, i64), u64>>,
    failures: Mutex<Vec<String>>,
    /// When each acknowledgement arrived, by partition: for the per-second timeline.
    ack_times: Mutex<Vec<(usize, Instant)>>,
    /// Notified after every counted event.
    changed: tokio::sync::Notify,
}

#[derive(Clone, Copy, Debug)]
struct Snapshot {
    at: Instant,
    acked: [u64; PARTITIONS],
    consumed: [u64; PARTITIONS],
}

impl Progress {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            acked: std::array::from_fn(|p| self.acked[p].load(Ordering::Acquire)),
            consumed: std::array::from_fn(|p| self.consumed[p].load(Ordering::Acquire)),
        }
    }

    /// Waits until each partition in `partitions` has at least `n` more acknowledged and `n`
    /// more consumed records than at `since`; panics after [`PHASE_DEADLINE`] naming `what`.
    async fn wait_for(&self, since: &Snapshot, partitions: &[usize], n: u64, what: &str) -> Snapshot {
        let deadline = tokio::time::Instant::now() + PHASE_DEADLINE;
        loop {
            let changed = self.changed.notified();
            let now = self.snapshot();
            let done = partitions
                .iter()
                .all(|&p| now.acked[p] >= since.acked[p] + n && now.consumed[p] >= since.consumed[p] + n);
            if done {
                return now;
            }
            let timed_out = tokio::time::timeout_at(deadline, changed).await.is_err();
            assert!(
                !timed_out,
                "{what}: after {:?}, partitions {partitions:?} did not all get {n} more records acknowledged \
                 and consumed; acknowledged {:?} (at the start {:?}), consumed {:?} (at the start {:?}), \
                 delivery failures {:?}",
                PHASE_DEADLINE,
                now.acked,
                since.acked,
                now.consumed,
                since.consumed,
                self.failures.lock().unwrap().first(),
            );
        }
    }

    /// Waits until partition `p` has at least `n` more acknowledged records than at `since`, up
    /// to `deadline`; `None` if it did not get them by then.
    async fn wait_for_acks(&self, since: &Snapshot, p: usize, n: u64, deadline: Instant) -> Option<Snapshot> {
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            let changed = self.changed.notified();
            let now = self.snapshot();
            if now.acked[p] >= since.acked[p] + n {
                return Some(now);
            }
            tokio::time::timeout_at(deadline, changed).await.ok()?;
        }
    }
}

/// Records/s per partition between two snapshots, acknowledged and consumed.
fn rates(phase: &str, from: &Snapshot, to: &Snapshot) {
    let secs = to.at.duration_since(from.at).as_secs_f64().max(1e-3);
    let per = |a: [u64; PARTITIONS], b: [u64; PARTITIONS]| -> Vec<String> {
        (0..PARTITIONS).map(|p| format!("p{p} {:.0}", (b[p] - a[p]) as f64 / secs)).collect()
    };
    eprintln!(
        "[blocked broker] {phase:<28} {secs:6.2} s   acked/s [{}]   consumed/s [{}]",
        per(from.acked, to.acked).join(", "),
        per(from.consumed, to.consumed).join(", "),
    );
}

/// The longest time between consecutive acknowledgements of each partition within `[from, to]`
/// (counting from `from` to the first and from the last to `to`).
fn longest_gaps(progress: &Progress, from: Instant, to: Instant) -> [Duration; PARTITIONS] {
    let mut last = [from; PARTITIONS];
    let mut longest = [Duration::ZERO; PARTITIONS];
    let mut times: Vec<(usize, Instant)> =
        progress.ack_times.lock().unwrap().iter().filter(|(_, t)| *t >= from && *t <= to).copied().collect();
    times.sort_by_key(|(_, t)| *t);
    for (p, t) in times.into_iter().chain((0..PARTITIONS).map(|p| (p, to))) {
        longest[p] = longest[p].max(t.duration_since(last[p]));
        last[p] = t;
    }
    longest
}

/// Acknowledgements per partition per second, from 3 s before the stop to the resume.
fn timeline(progress: &Progress, stopped: Instant, resumed: Instant) {
    let from = stopped - Duration::from_secs(3);
    let seconds = (resumed.duration_since(from).as_secs() + 1) as usize;
    let mut buckets = vec![[0u64; PARTITIONS]; seconds];
    for (p, at) in progress.ack_times.lock().unwrap().iter() {
        if let Some(b) = at.checked_duration_since(from).and_then(|d| buckets.get_mut(d.as_secs() as usize)) {
            b[*p] += 1;
        }
    }
    let resumed_second = resumed.duration_since(stopped).as_secs_f64();
    eprintln!("[blocked broker] acknowledgements per second (t = 0: stop, t = {resumed_second:.1}: resume)");
    for (i, b) in buckets.iter().enumerate() {
        let t = i as i64 - 3;
        eprintln!("[blocked broker]   t={t:+3}s  p0 {:4}  p1 {:4}  p2 {:4}", b[0], b[1], b[2]);
    }
}

/// Makes each partition's preferred replica (broker `p + 1`) its leader: a broker that was
/// restarted just before the topic was created may not have been in the in-sync replicas then.
/// Runs Kafka's preferred leader election for partitions led elsewhere until none is (up to 20
/// attempts; each waits for the tool). Returns the leaders.
async fn elect_preferred_leaders(client: &Client, bs: &str, topic: &str) -> BTreeMap<i32, i32> {
    for attempt in 0.. {
        let (_, leaders) = partition_leaders(client, topic).await;
        let misplaced: Vec<i32> = leaders.iter().filter(|(p, l)| **l != **p + 1).map(|(p, _)| *p).collect();
        if misplaced.is_empty() {
            return leaders;
        }
        assert!(attempt < 20, "partitions {misplaced:?} of {topic} never got their preferred leaders: {leaders:?}");
        eprintln!("[blocked broker] leaders {leaders:?}: electing the preferred ones for {misplaced:?}");
        for p in misplaced {
            let (bs, topic) = (bs.to_owned(), topic.to_owned());
            // The tool fails while the preferred replica is not in sync yet; the loop retries.
            let out = tokio::task::spawn_blocking(move || {
                kafka_tool(
                    "leader-election",
                    &[
                        "--bootstrap-server",
                        &bs,
                        "--election-type",
                        "preferred",
                        "--topic",
                        &topic,
                        "--partition",
                        &p.to_string(),
                    ],
                    None,
                )
            })
            .await
            .expect("leader-election tool");
            if !out.status.success() {
                eprintln!("[blocked broker] leader election for {p}: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        wait_for_leaders(client, topic, PARTITIONS as i32).await;
    }
    unreachable!("the loop returns or panics")
}

/// Creates `topic` with partition `p` on replicas `[p+1, …]` rotated, so that broker `p + 1` is
/// its preferred (and, on a healthy cluster, first) leader.
async fn create_one_leader_per_broker(client: &Client, topic: &str) {
    let request = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: topic.into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: (0..PARTITIONS as i32)
                .map(|p| CreatableReplicaAssignment {
                    partition_index: p,
                    broker_ids: (0..3).map(|i| (p + i) % 3 + 1).collect(),
                    ..Default::default()
                })
                .collect(),
            configs: [("min.insync.replicas", "2"), ("unclean.leader.election.enable", "false")]
                .iter()
                .map(|(k, v)| CreatableTopicConfig {
                    name: (*k).into(),
                    value: Some((*v).into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        timeout_ms: 30_000,
        ..Default::default()
    };
    let controller = client.controller_id().expect("the cluster names a controller");
    let response = client.send(controller, &request).await.expect("CreateTopics");
    let result = &response.topics[0];
    assert_eq!(result.error_code, ErrorCode::NONE, "creating {topic}: {:?}", result.error_message);
    wait_for_leaders(client, topic, PARTITIONS as i32).await;
}

// The cluster3_exclusive guard is held for the whole test on purpose (the test's own future is
// never moved to another thread: block_on runs it).
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_on_the_other_brokers_keep_flowing_while_one_broker_is_stopped() {
    let Some((bs, _exclusive)) = cluster3_for("blocked_broker") else { return };
    let client = Client::connect(ClientConfig::new(&bs)).await.expect("connect to the 3-node cluster");
    let topic = unique_topic("blocked");
    create_one_leader_per_broker(&client, &topic).await;
    let leaders = elect_preferred_leaders(&client, &bs, &topic).await;
    // The broker leading partition 1 is stopped; partitions 0 and 2 are led by the others.
    let victim_partition = 1usize;
    let victim = u8::try_from(leaders[&(victim_partition as i32)]).expect("node ids are 1..=3");
    let healthy: Vec<usize> = (0..PARTITIONS).filter(|p| *p != victim_partition).collect();
    eprintln!("[blocked broker] topic {topic}; leaders {leaders:?}; stopping node {victim}");

    let progress = Arc::new(Progress::default());
    let stop_sending = Arc::new(AtomicBool::new(false));

    // Producer: one record per partition per tick; one collector per partition awaits that
    // partition's deliveries in order, so a stalled partition does not hide the others' acks.
    let producer = Producer::new(ProducerConfig::new(&bs).request_timeout(REQUEST_TIMEOUT)).await.expect("producer");
    let mut collectors = Vec::new();
    let mut senders = Vec::new();
    for p in 0..PARTITIONS {
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, DeliveryFuture)>();
        senders.push(tx);
        let progress = progress.clone();
        collectors.push(tokio::spawn(async move {
            while let Some((seq, delivery)) = rx.recv().await {
                match delivery.await {
                    Ok(md) => {
                        assert_eq!(md.topic_partition.partition, p as i32);
                        progress.acks.lock().unwrap().insert((p as i32, md.offset), seq);
                        progress.ack_times.lock().unwrap().push((p, Instant::now()));
                        progress.acked[p].fetch_add(1, Ordering::AcqRel);
                        progress.changed.notify_waiters();
                    }
                    Err(e) => {
                        progress.failures.lock().unwrap().push(format!("seq {seq} on partition {p}: {e}"));
                        progress.failed.fetch_add(1, Ordering::AcqRel);
                        progress.changed.notify_waiters();
                    }
                }
            }
        }));
    }
    let sender = {
        let progress = progress.clone();
        let stop = stop_sending.clone();
        let producer = producer.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            while !stop.load(Ordering::Acquire) {
                tick.tick().await;
                for (p, tx) in senders.iter().enumerate() {
                    let record = ProducerRecord::new(&topic, value(seq)).key(format!("key-{seq}")).partition(p as i32);
                    let delivery = producer.send(record).await.expect("send");
                    progress.sent[p].fetch_add(1, Ordering::AcqRel);
                    // The collectors only stop when the test itself has failed.
                    if tx.send((seq, delivery)).is_err() {
                        return;
                    }
                    seq += 1;
                }
            }
        })
    };

    // Consumer group: counts each offset the first time it is read.
    let consumer = Consumer::new(
        ConsumerConfig::new(&bs).group_id(unique_topic("blocked-group")).auto_offset_reset(OffsetReset::Earliest),
    )
    .await
    .expect("consumer");
    consumer.subscribe([topic.as_str()]).expect("subscribe");
    let stop_reading = Arc::new(AtomicBool::new(false));
    let reader = {
        let progress = progress.clone();
        let stop = stop_reading.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                for r in consumer.poll(Duration::from_millis(200)).await.expect("poll") {
                    let seq = r.value.as_deref().and_then(seq_of).expect("a value written by this test");
                    if progress.read.lock().unwrap().insert((r.partition, r.offset), seq).is_none() {
                        progress.consumed[r.partition as usize].fetch_add(1, Ordering::AcqRel);
                    }
                    progress.changed.notify_waiters();
                }
            }
            consumer.close().await.expect("close consumer");
        })
    };

    let all: Vec<usize> = (0..PARTITIONS).collect();
    let start = progress.snapshot();
    let warm = progress.wait_for(&start, &all, PER_PHASE, "warm-up (group joined, every partition flowing)").await;
    let before = progress.wait_for(&warm, &all, PER_PHASE, "before the stop").await;
    rates("before the stop", &warm, &before);

    let paused = kafka_node_pause(victim);
    let stopped_at = progress.snapshot();
    let during = progress.wait_for(&stopped_at, &healthy, PER_PHASE, "while the broker is stopped").await;
    rates("stopped (healthy partitions)", &stopped_at, &during);
    // The stopped broker's partition gets a new leader once the others fence it (after
    // `broker.session.timeout.ms`); the producer's request to the old leader times out after
    // REQUEST_TIMEOUT and the partition flows again from its new leader, all while the old one
    // is still stopped (it stays stopped until then, or until VICTIM_BOUND).
    let moved_at = progress.wait_for_acks(&stopped_at, victim_partition, PER_PHASE, stopped_at.at + VICTIM_BOUND).await;
    match &moved_at {
        Some(moved_at) => {
            rates("stopped (victim, moved)", &during, moved_at);
            eprintln!(
                "[blocked broker] partition {victim_partition} had {PER_PHASE} more acknowledgements {:.2} s after \
                 the stop",
                moved_at.at.duration_since(stopped_at.at).as_secs_f64()
            );
        }
        None => eprintln!("[blocked broker] partition {victim_partition} did not flow again within {VICTIM_BOUND:?}"),
    }
    // Asked of a running broker: a client with a connection to the stopped one may pick it.
    let running = (1..=3u8).find(|n| *n != victim).expect("another node");
    let (_, moved) = partition_leaders(
        &Client::connect(ClientConfig::new(&kafka_node_addr(running))).await.expect("connect to a running node"),
        &topic,
    )
    .await;
    eprintln!("[blocked broker] leaders while node {victim} is stopped: {moved:?}");

    // The healthy partitions flowed through the whole stopped window, not only at its start: no
    // pause as long as the request timeout (which is what waiting for the stopped broker costs).
    let resume_at = Instant::now();
    let gaps = longest_gaps(&progress, stopped_at.at, resume_at);
    timeline(&progress, stopped_at.at, resume_at);
    eprintln!("[blocked broker] longest pause in acknowledgements while stopped, per partition: {gaps:?}");
    kafka_node_resume(victim);
    drop(paused);
    eprintln!(
        "[blocked broker] stopped for {:.2} s; partition {victim_partition} went without acknowledgements for \
         {:.2} s at most (request timeout {REQUEST_TIMEOUT:?})",
        resume_at.duration_since(stopped_at.at).as_secs_f64(),
        gaps[victim_partition].as_secs_f64()
    );
    assert_ne!(moved[&(victim_partition as i32)], i32::from(victim), "the partition's leadership moved");
    assert!(
        moved_at.is_some() && gaps[victim_partition] < VICTIM_BOUND,
        "partition {victim_partition} did not flow again from its new leader within {VICTIM_BOUND:?} of the stop \
         (longest pause {:?}): its batches waited for the stopped broker",
        gaps[victim_partition]
    );
    for &p in &healthy {
        assert!(
            gaps[p] < REQUEST_TIMEOUT,
            "partition {p} (led by a running broker) got no acknowledgement for {:?} while node {victim} was \
             stopped: it waited for the stopped broker (request timeout {REQUEST_TIMEOUT:?})",
            gaps[p]
        );
    }
    let resumed_at = progress.snapshot();
    let after = progress.wait_for(&resumed_at, &all, PER_PHASE, "after the broker continued").await;
    rates("after the resume", &resumed_at, &after);

    // Stop sending, let every delivery settle, and read until everything acknowledged is read.
    stop_sending.store(true, Ordering::Release);
    tokio::time::timeout(PHASE_DEADLINE, sender).await.expect("the sender stopped").expect("sender task");
    tokio::time::timeout(PHASE_DEADLINE, producer.flush()).await.expect("flush settled").expect("flush");
    for c in collectors {
        tokio::time::timeout(PHASE_DEADLINE, c).await.expect("deliveries settled").expect("collector task");
    }
    let sent: u64 = progress.sent.iter().map(|s| s.load(Ordering::Acquire)).sum();
    let acked: u64 = progress.acked.iter().map(|s| s.load(Ordering::Acquire)).sum();
    eprintln!("[blocked broker] sent {sent}, acknowledged {acked}, failed {}", progress.failed.load(Ordering::Acquire));
    assert!(
        progress.failures.lock().unwrap().is_empty(),
        "deliveries failed: {:?}",
        progress.failures.lock().unwrap().iter().take(5).collect::<Vec<_>>()
    );
    let deadline = tokio::time::Instant::now() + PHASE_DEADLINE;
    loop {
        let changed = progress.changed.notified();
        let missing: Vec<(i32, i64)> = {
            let acks = progress.acks.lock().unwrap();
            let read = progress.read.lock().unwrap();
            acks.keys().filter(|k| !read.contains_key(k)).copied().take(10).collect()
        };
        if missing.is_empty() {
            break;
        }
        let timed_out = tokio::time::timeout_at(deadline, changed).await.is_err();
        assert!(!timed_out, "acknowledged records never read back, e.g. (partition, offset) {missing:?}");
    }
    {
        let acks = progress.acks.lock().unwrap();
        let read = progress.read.lock().unwrap();
        for (k, seq) in acks.iter() {
            assert_eq!(read[k], *seq, "the record at (partition, offset) {k:?} is not the one acknowledged there");
        }
        eprintln!("[blocked broker] all {} acknowledged records read back", acks.len());
    }
    stop_reading.store(true, Ordering::Release);
    tokio::time::timeout(PHASE_DEADLINE, reader).await.expect("the reader stopped").expect("reader task");
    producer.close().await.expect("close producer");
}
