//! Connection chaos: the client talks to the real brokers through the chaos proxy
//! (`kafka_wire_tests::chaos_proxy`), which cuts every connection 0.5–1.5 s after it opens, a
//! third of them after a random number of bytes of a request or a response. The producer,
//! consumers (assigned and in a group) and transactions keep their invariants and make
//! progress; everything is read back without the proxy. A black-holed broker of the 3-node
//! cluster (its connections accepted, then nothing forwarded nor closed) costs its requests a
//! `request.timeout.ms` while the other brokers' partitions keep going.
//!
//! Each test prints the proxy's counters (connections, cuts, black-holed) and its counts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_wire::client::{
    Client, ClientConfig, Consumer, ConsumerConfig, DeliveryFuture, IsolationLevel, OffsetReset, Producer,
    ProducerConfig, ProducerRecord,
};
use kafka_wire::proto::producer::TopicPartition;
use kafka_wire_tests::chaos_proxy::{ChaosProxy, Direction, Faults};
use kafka_wire_tests::raw::{create_topic, fetch_records, partition_leaders};
use kafka_wire_tests::{bootstrap, bootstrap_3, unique_topic, wait_until};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

/// Every connection cut 0.5–1.5 s after it opens; a third of them earlier, inside a request or
/// a response (after 1 B–64 KiB of one direction). Bandwidth is throttled (`up` bytes/s) or
/// every chunk delayed so that each test's traffic lasts some seconds, many connections'
/// lifetimes, on any machine.
fn cuts(up: Option<u64>, delay: Duration) -> Faults {
    Faults {
        cut_after: Some((Duration::from_millis(500), Duration::from_millis(1500))),
        cut_after_bytes: Some((0.33, 1, 64 * 1024)),
        throttle_up: up,
        delay,
        ..Faults::default()
    }
}

/// Consumers through [`cuts`] fetch small answers: one that takes longer to arrive than a
/// connection lives would never arrive (with a 1 MiB `max.partition.fetch.bytes` at 300 KB/s,
/// the consumer tests made no progress at all, as any client would not).
fn small_fetches(config: &mut ConsumerConfig) {
    config.max_partition_fetch_bytes = 16 * 1024;
    config.fetch_max_bytes = 64 * 1024;
}

/// At least this many cuts, or a test tested nothing.
const MIN_CUTS: u64 = 5;

fn seed() -> u64 {
    std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_c4a0)
}

async fn plain_client(bs: &str) -> Client {
    Client::connect(ClientConfig::new(bs)).await.expect("connect without the proxy")
}

fn value(i: u64) -> String {
    format!("seq={i:010};{}", "v".repeat(90))
}

fn seq_of(v: &[u8]) -> u64 {
    std::str::from_utf8(&v[4..14]).expect("utf-8").parse().expect("sequence")
}

/// Produces `n` records through `producer` (at most `window` unacknowledged), to round-robin
/// partitions; returns each acknowledged sequence's (partition, offset) and the failures.
async fn produce(
    producer: &Producer,
    topic: &str,
    partitions: i32,
    n: u64,
    window: usize,
) -> (BTreeMap<u64, (i32, i64)>, Vec<(u64, String)>) {
    let mut acks = BTreeMap::new();
    let mut failures = Vec::new();
    let mut pending: std::collections::VecDeque<(u64, DeliveryFuture)> = Default::default();
    for i in 0..n {
        if pending.len() >= window {
            let (j, f) = pending.pop_front().unwrap();
            match f.await {
                Ok(md) => drop(acks.insert(j, (md.topic_partition.partition, md.offset))),
                Err(e) => failures.push((j, e.to_string())),
            }
        }
        let record =
            ProducerRecord::new(topic, value(i)).key(format!("k{i}")).partition((i % partitions as u64) as i32);
        pending.push_back((i, producer.send(record).await.unwrap_or_else(|e| panic!("send {i}: {e}"))));
    }
    for (j, f) in pending {
        match f.await {
            Ok(md) => drop(acks.insert(j, (md.topic_partition.partition, md.offset))),
            Err(e) => failures.push((j, e.to_string())),
        }
    }
    (acks, failures)
}

/// Writes `n` records to `topic` without the proxy (round-robin over `partitions`).
async fn fill(bs: &str, topic: &str, partitions: i32, n: u64) {
    let producer = Producer::new(ProducerConfig::new(bs)).await.expect("producer");
    let (acks, failures) = produce(&producer, topic, partitions, n, 10_000).await;
    assert!(failures.is_empty(), "filling {topic}: {failures:?}");
    assert_eq!(acks.len() as u64, n);
    producer.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_with_connections_cut_keeps_every_acknowledged_record_once_in_order() {
    const N: u64 = 20_000;
    const PARTITIONS: i32 = 3;
    let bs = bootstrap();
    let admin = plain_client(&bs).await;
    let topic = unique_topic("chaos-produce");
    create_topic(&admin, &topic, PARTITIONS, 1, &[]).await;

    let proxy = ChaosProxy::new(seed());
    proxy.set_faults(cuts(Some(200_000), Duration::ZERO));
    let mut config = ProducerConfig::new(&bs).request_timeout(Duration::from_secs(10));
    config.security.dialer = Some(proxy.dialer());
    let producer = Producer::new(config).await.expect("producer through the proxy");
    let started = Instant::now();
    let (acks, failures) = timeout(Duration::from_secs(240), produce(&producer, &topic, PARTITIONS, N, 2_000))
        .await
        .unwrap_or_else(|_| panic!("producer hung: 240 s; proxy: {}", proxy.counters()));
    let took = started.elapsed();
    let metrics = producer.metrics();
    producer.close().await.expect("close");
    let counters = proxy.counters();
    eprintln!(
        "[chaos produce] {N} records in {took:?}: {} acknowledged, {} failed; {} batch retries; proxy: {counters}",
        acks.len(),
        failures.len(),
        metrics.batch_retries
    );
    assert!(failures.is_empty(), "{} records failed, first: {:?}", failures.len(), failures.first());
    assert!(counters.cuts() >= MIN_CUTS, "the proxy cut too few connections to test anything: {counters}");

    // Read back without the proxy: each acknowledged sequence once, at its acknowledged offset, in
    // send order per partition.
    for p in 0..PARTITIONS {
        let records = fetch_records(&admin, &topic, p).await;
        let seqs: Vec<u64> = records.iter().map(|r| seq_of(r.value.as_deref().expect("value"))).collect();
        let expected: Vec<u64> = (0..N).filter(|i| (i % PARTITIONS as u64) as i32 == p).collect();
        assert_eq!(seqs.len(), expected.len(), "partition {p}: duplicates or losses");
        assert_eq!(seqs, expected, "partition {p}: not each sequence once in send order");
        for r in &records {
            let i = seq_of(r.value.as_deref().unwrap());
            assert_eq!(acks.get(&i), Some(&(p, r.offset)), "sequence {i} acknowledged elsewhere");
        }
    }
}

/// Polls the group's committed offsets without the proxy until `stop`, asserting they never
/// move backwards; returns how many samples it took.
fn watch_committed(
    bs: String,
    group: String,
    tps: Vec<TopicPartition>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let watcher = Consumer::new(ConsumerConfig::new(&bs).group_id(&group)).await.expect("watcher");
        let mut last: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        let mut samples = 0;
        while !*stop.borrow() {
            if let Ok(c) = watcher.committed(&tps).await {
                for (tp, o) in c {
                    let Some(o) = o else { continue };
                    let before = last.insert(tp.clone(), o.offset).unwrap_or(-1);
                    assert!(
                        o.offset >= before,
                        "group {group}: committed offset of {tp} went back from {before} to {}",
                        o.offset
                    );
                }
                samples += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        watcher.close().await.ok();
        samples
    })
}

/// Per partition, the offsets seen; asserts nothing was skipped.
fn assert_all_seen(seen: &BTreeMap<i32, BTreeSet<i64>>, partitions: i32, per_partition: i64) {
    for p in 0..partitions {
        let got = seen.get(&p).map_or(0, |s| s.len()) as i64;
        let missing: Vec<i64> =
            (0..per_partition).filter(|o| !seen.get(&p).is_some_and(|s| s.contains(o))).take(5).collect();
        assert!(missing.is_empty(), "partition {p}: {got} of {per_partition} offsets seen; first missing {missing:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_consumer_with_connections_cut_delivers_every_record_in_order_and_commits_forward() {
    const N: u64 = 30_000;
    const PARTITIONS: i32 = 3;
    let bs = bootstrap();
    let topic = unique_topic("chaos-assign");
    create_topic(&plain_client(&bs).await, &topic, PARTITIONS, 1, &[]).await;
    fill(&bs, &topic, PARTITIONS, N).await;
    let group = unique_topic("chaos-assign-group");
    let tps: Vec<TopicPartition> = (0..PARTITIONS).map(|p| TopicPartition::new(topic.as_str(), p)).collect();

    let proxy = ChaosProxy::new(seed());
    proxy.set_faults(cuts(None, Duration::from_millis(50)));
    let mut config =
        ConsumerConfig::new(&bs).group_id(&group).auto_offset_reset(OffsetReset::Earliest).enable_auto_commit(false);
    config.request_timeout = Duration::from_secs(10);
    config.max_poll_records = 200;
    small_fetches(&mut config);
    config.security.dialer = Some(proxy.dialer());
    let consumer = Consumer::new(config).await.expect("consumer through the proxy");
    consumer.assign(tps.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = watch_committed(bs.clone(), group.clone(), tps.clone(), stop_rx);

    let per_partition = (N / PARTITIONS as u64) as i64;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut seen: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    let (mut commits, mut failed_commits) = (0u64, 0u64);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    while seen.values().map(|s| s.len() as u64).sum::<u64>() < N {
        assert!(
            Instant::now() < deadline,
            "no full delivery in 180 s: {} of {N} seen; proxy: {}",
            seen.values().map(|s| s.len()).sum::<usize>(),
            proxy.counters()
        );
        let records = match consumer.poll(Duration::from_millis(500)).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("[chaos assign] poll: {e}");
                continue;
            }
        };
        for r in records {
            // Assigned partitions are not rewound by a cut: each record follows the last.
            let want = next.entry(r.partition).or_insert(0);
            assert_eq!(r.offset, *want, "partition {}: offset {} after {}", r.partition, r.offset, *want - 1);
            *want += 1;
            seen.entry(r.partition).or_default().insert(r.offset);
        }
        match consumer.commit().await {
            Ok(()) => commits += 1,
            Err(_) => failed_commits += 1,
        }
    }
    // The last positions committed (retried through the cuts).
    let committed = loop {
        if consumer.commit().await.is_ok() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(committed, "the final commit never went through");
    stop_tx.send(true).unwrap();
    let samples = timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watcher stops")
        .expect("committed offsets never went back");
    let counters = proxy.counters();
    consumer.close().await.ok();
    eprintln!(
        "[chaos assign] {N} records in {:?}; {commits} commits ({failed_commits} failed); {samples} committed-offset samples; proxy: {counters}",
        started.elapsed()
    );
    assert_all_seen(&seen, PARTITIONS, per_partition);
    assert!(counters.cuts() >= MIN_CUTS, "the proxy cut too few connections to test anything: {counters}");
    let check = Consumer::new(ConsumerConfig::new(&bs).group_id(&group)).await.unwrap();
    for (tp, o) in check.committed(&tps).await.expect("committed") {
        assert_eq!(o.map(|o| o.offset), Some(per_partition), "{tp}: final committed offset");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_of_three_with_connections_cut_loses_nothing() {
    const N: u64 = 30_000;
    const PARTITIONS: i32 = 6;
    const MEMBERS: usize = 3;
    let bs = bootstrap();
    let topic = unique_topic("chaos-group");
    create_topic(&plain_client(&bs).await, &topic, PARTITIONS, 1, &[]).await;
    fill(&bs, &topic, PARTITIONS, N).await;
    let group = unique_topic("chaos-group-id");
    let tps: Vec<TopicPartition> = (0..PARTITIONS).map(|p| TopicPartition::new(topic.as_str(), p)).collect();
    let per_partition = (N / PARTITIONS as u64) as i64;

    let proxy = ChaosProxy::new(seed());
    proxy.set_faults(cuts(None, Duration::from_millis(50)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = watch_committed(bs.clone(), group.clone(), tps.clone(), stop_rx.clone());
    let seen = Arc::new(std::sync::Mutex::new(BTreeMap::<i32, BTreeSet<i64>>::new()));
    let mut members = Vec::new();
    for m in 0..MEMBERS {
        let mut config = ConsumerConfig::new(&bs)
            .group_id(&group)
            .auto_offset_reset(OffsetReset::Earliest)
            .enable_auto_commit(false)
            .session_timeout(Duration::from_secs(10))
            .heartbeat_interval(Duration::from_secs(1));
        config.request_timeout = Duration::from_secs(10);
        config.max_poll_interval = Duration::from_secs(30);
        config.max_poll_records = 200;
        small_fetches(&mut config);
        config.security.dialer = Some(proxy.dialer());
        let topic = topic.clone();
        let seen = seen.clone();
        let stop = stop_rx.clone();
        members.push(tokio::spawn(async move {
            let consumer = Consumer::new(config).await.expect("member through the proxy");
            consumer.subscribe([topic.as_str()]).unwrap();
            let (mut records_seen, mut errors) = (0u64, 0u64);
            while !*stop.borrow() {
                match consumer.poll(Duration::from_millis(500)).await {
                    Ok(records) => {
                        records_seen += records.len() as u64;
                        let mut s = seen.lock().unwrap();
                        for r in records {
                            s.entry(r.partition).or_default().insert(r.offset);
                        }
                    }
                    Err(_) => errors += 1,
                }
                // A failed commit (a cut, a rebalance) leaves records to be delivered again.
                if consumer.commit().await.is_err() {
                    errors += 1;
                }
            }
            consumer.close().await.ok();
            eprintln!("[chaos group] member {m}: {records_seen} records, {errors} errors");
        }));
    }
    let started = Instant::now();
    let all = timeout(Duration::from_secs(240), async {
        loop {
            if seen.lock().unwrap().values().map(|s| s.len() as u64).sum::<u64>() >= N {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    stop_tx.send(true).unwrap();
    for m in members {
        timeout(Duration::from_secs(60), m).await.expect("member stops").expect("member");
    }
    let samples = timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watcher stops")
        .expect("committed offsets never went back");
    let counters = proxy.counters();
    let seen = seen.lock().unwrap().clone();
    eprintln!(
        "[chaos group] {} distinct of {N} records in {:?}; {samples} committed-offset samples; proxy: {counters}",
        seen.values().map(|s| s.len()).sum::<usize>(),
        started.elapsed()
    );
    assert!(all.is_ok(), "the group did not deliver every record in 240 s");
    assert_all_seen(&seen, PARTITIONS, per_partition);
    assert!(counters.cuts() >= MIN_CUTS, "the proxy cut too few connections to test anything: {counters}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_with_connections_cut_are_seen_whole_or_not_at_all() {
    const TRANSACTIONS: u64 = 150;
    const PER: u64 = 50;
    let bs = bootstrap();
    let topic = unique_topic("chaos-txn");
    create_topic(&plain_client(&bs).await, &topic, 2, 1, &[]).await;
    let proxy = ChaosProxy::new(seed());
    proxy.set_faults(cuts(Some(20_000), Duration::ZERO));
    let txn_id = unique_topic("chaos-txn-id");
    let config = || {
        let mut c = ProducerConfig::new(&bs)
            .transactional_id(&txn_id)
            .max_block(Duration::from_secs(30))
            .request_timeout(Duration::from_secs(10));
        c.security.dialer = Some(proxy.dialer());
        c
    };
    // Outcome per transaction: committed (commit returned Ok), aborted (abort returned Ok, or never
    // committed and fenced by a new instance), unknown (the commit failed: either).
    let mut committed = BTreeSet::new();
    let mut aborted = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    let mut instances = 0;
    let started = Instant::now();
    let run = async {
        let mut producer: Option<Producer> = None;
        for t in 0..TRANSACTIONS {
            let p = match &producer {
                Some(p) => p.clone(),
                None => {
                    let p = Producer::new(config()).await.expect("transactional producer");
                    let mut tries = 0;
                    while let Err(e) = p.init_transactions().await {
                        tries += 1;
                        assert!(tries < 20, "init_transactions keeps failing: {e}");
                    }
                    instances += 1;
                    producer = Some(p.clone());
                    p
                }
            };
            let attempt = async {
                p.begin_transaction()?;
                for i in 0..PER {
                    let v = format!("t={t:05};i={i:03}");
                    // The commit waits for every record; its result is what counts.
                    drop(p.send(ProducerRecord::new(&topic, v).partition((i % 2) as i32)).await?);
                }
                if t % 5 == 4 {
                    p.abort_transaction().await.map(|()| false)
                } else {
                    p.commit_transaction().await.map(|()| true)
                }
            };
            match attempt.await {
                Ok(true) => drop(committed.insert(t)),
                Ok(false) => drop(aborted.insert(t)),
                Err(e) => {
                    eprintln!("[chaos txn] transaction {t}: {e}");
                    // Whatever the commit reached, abort what can be; if that fails too, a new
                    // instance fences the old one (aborting its open transaction).
                    unknown.insert(t);
                    if p.abort_transaction().await.is_err() {
                        p.close().await.ok();
                        producer = None;
                    }
                }
            }
        }
        if let Some(p) = producer {
            p.close().await.ok();
        }
    };
    timeout(Duration::from_secs(300), run)
        .await
        .unwrap_or_else(|_| panic!("transactions hung: 300 s; proxy: {}", proxy.counters()));
    let counters = proxy.counters();
    eprintln!(
        "[chaos txn] {TRANSACTIONS} transactions in {:?}: {} committed, {} aborted, {} unknown; {instances} instances; proxy: {counters}",
        started.elapsed(),
        committed.len(),
        aborted.len(),
        unknown.len()
    );
    assert!(committed.len() as u64 >= TRANSACTIONS / 2, "too little progress: {} committed", committed.len());
    assert!(counters.cuts() >= MIN_CUTS, "the proxy cut too few connections to test anything: {counters}");

    // read_committed, without the proxy.
    let reader = Consumer::new(
        ConsumerConfig::new(&bs)
            .isolation_level(IsolationLevel::ReadCommitted)
            .auto_offset_reset(OffsetReset::Earliest),
    )
    .await
    .unwrap();
    let tps: Vec<TopicPartition> = (0..2).map(|p| TopicPartition::new(topic.as_str(), p)).collect();
    reader.assign(tps.clone());
    let admin = plain_client(&bs).await;
    let mut ends = BTreeMap::new();
    for tp in &tps {
        ends.insert(tp.partition, kafka_wire_tests::raw::end_offset(&admin, &topic, tp.partition).await);
    }
    let mut got: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = true;
        for tp in &tps {
            // The position passes the last control record once everything before it is read.
            if reader.position(tp).await.unwrap() < ends[&tp.partition] {
                done = false;
            }
        }
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "read_committed reader did not reach the ends {ends:?}");
        for r in reader.poll(Duration::from_millis(500)).await.unwrap() {
            let v = std::str::from_utf8(r.value.as_deref().unwrap()).unwrap().to_string();
            let t: u64 = v[2..7].parse().unwrap();
            let i: u64 = v[10..13].parse().unwrap();
            got.entry(t).or_default().push(i);
        }
    }
    reader.close().await.ok();
    for t in &committed {
        let mut is = got.remove(t).unwrap_or_else(|| panic!("committed transaction {t} not seen"));
        is.sort_unstable();
        assert_eq!(is, (0..PER).collect::<Vec<_>>(), "committed transaction {t} not seen whole and once");
    }
    for (t, mut is) in got {
        assert!(!aborted.contains(&t), "aborted transaction {t} seen");
        assert!(unknown.contains(&t), "transaction {t} seen, never sent");
        is.sort_unstable();
        assert_eq!(is, (0..PER).collect::<Vec<_>>(), "transaction {t} (commit failed) seen in part");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_broker_costs_a_request_timeout_while_the_other_leaders_keep_going() {
    let Some(bs) = bootstrap_3() else {
        eprintln!("\n!!!! SKIPPED: the 3-node cluster is not up (`cargo xtask kafka up --nodes 3`) !!!!\n");
        return;
    };
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
    const PARTITIONS: i32 = 6;
    let admin = plain_client(&bs).await;
    let topic = unique_topic("chaos-blackhole");
    create_topic(&admin, &topic, PARTITIONS, 3, &[("min.insync.replicas", "2")]).await;
    let (_, leaders) = partition_leaders(&admin, &topic).await;
    let md = admin.metadata(Some(&[topic.as_str()])).await.expect("metadata");
    let addr_of: BTreeMap<i32, String> =
        md.brokers.iter().map(|b| (b.node_id, format!("{}:{}", b.host, b.port))).collect();
    // The broker that leads partition 0 goes dark.
    let victim = leaders[&0];
    let victim_addr = addr_of[&victim].clone();
    let others: Vec<i32> = (0..PARTITIONS).filter(|p| leaders[p] != victim).collect();
    let dark: Vec<i32> = (0..PARTITIONS).filter(|p| leaders[p] == victim).collect();
    assert!(!others.is_empty(), "every partition led by {victim}: {leaders:?}");

    let proxy = ChaosProxy::new(seed());
    let mut config = ProducerConfig::new(&bs)
        .request_timeout(REQUEST_TIMEOUT)
        .delivery_timeout(Duration::from_secs(20))
        .linger(Duration::from_millis(5));
    config.security.dialer = Some(proxy.dialer());
    let producer = Producer::new(config).await.expect("producer through the proxy");
    // Warm up: a connection to every leader.
    for p in 0..PARTITIONS {
        producer.send(ProducerRecord::new(&topic, "warm").partition(p)).await.unwrap().await.expect("warm-up record");
    }
    proxy.black_hole(&victim_addr, true);
    let blackholed_at = Instant::now();
    eprintln!("[chaos blackhole] node {victim} ({victim_addr}) black-holed; it leads {dark:?}, the others {others:?}");

    // Records to the dark leader's partitions and to the others, interleaved.
    let mut to_dark = Vec::new();
    let mut to_others = Vec::new();
    for i in 0..600 {
        let p = (i % PARTITIONS as u64) as i32;
        let f = producer.send(ProducerRecord::new(&topic, format!("r{i}")).partition(p)).await.expect("send");
        if dark.contains(&p) {
            to_dark.push(f)
        } else {
            to_others.push(f)
        }
    }
    // The other leaders' records are acknowledged well within one request timeout.
    let others_done = timeout(REQUEST_TIMEOUT, async {
        for f in to_others {
            f.await.expect("a record to a live leader");
        }
    })
    .await;
    let others_took = blackholed_at.elapsed();
    assert!(others_done.is_ok(), "records to live leaders waited on the black-holed broker ({others_took:?})");
    // Metadata goes to a live broker.
    let md = timeout(REQUEST_TIMEOUT, producer.client().metadata(Some(&[topic.as_str()]))).await;
    assert!(matches!(md, Ok(Ok(_))), "metadata while {victim_addr} is black-holed: {md:?}");

    // The dark broker's requests time out: counted against it after request.timeout.ms, and
    // its records end (acknowledged after a retry, or failed by delivery.timeout.ms): nothing hangs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let errors = producer.client().metrics().broker(victim).map_or(0, |b| b.request_errors);
        if errors > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no request to {victim_addr} timed out in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let timed_out_after = blackholed_at.elapsed();
    assert!(timed_out_after >= REQUEST_TIMEOUT, "timed out before request.timeout.ms: {timed_out_after:?}");
    let (mut ok, mut failed) = (0, 0);
    timeout(Duration::from_secs(60), async {
        for f in to_dark {
            match f.await {
                Ok(_) => ok += 1,
                Err(_) => failed += 1,
            }
        }
    })
    .await
    .expect("records to the black-holed leader neither acknowledged nor failed in 60 s");
    proxy.black_hole(&victim_addr, false);
    // Once the black hole ends, the broker is used again.
    let f = producer.send(ProducerRecord::new(&topic, "after").partition(dark[0])).await.expect("send after");
    timeout(Duration::from_secs(60), f).await.expect("a record after the black hole, in time").expect("acknowledged");
    producer.close().await.ok();
    let counters = proxy.counters();
    eprintln!(
        "[chaos blackhole] live leaders done after {others_took:?}; first timeout on {victim} after {timed_out_after:?}; \
         dark records: {ok} acknowledged, {failed} failed; proxy: {counters}"
    );
}

/// What an assigned consumer through the proxy saw: per partition the offsets in the order
/// delivered, and the errors `poll` returned with when (after the test's start).
#[derive(Default)]
struct Consumed {
    offsets: BTreeMap<i32, Vec<i64>>,
    poll_errors: Vec<(Duration, String)>,
}

impl Consumed {
    fn total(&self) -> u64 {
        self.offsets.values().map(|o| o.len() as u64).sum()
    }
}

/// Polls `consumer` until it has seen `n` records or `stop` is set; shares what it saw.
fn consume(
    consumer: Consumer,
    n: u64,
    t0: Instant,
    seen: Arc<std::sync::Mutex<Consumed>>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Consumer> {
    tokio::spawn(async move {
        while !*stop.borrow() && seen.lock().unwrap().total() < n {
            match consumer.poll(Duration::from_millis(200)).await {
                Ok(records) => {
                    let mut s = seen.lock().unwrap();
                    for r in records {
                        s.offsets.entry(r.partition).or_default().push(r.offset);
                    }
                }
                Err(e) => seen.lock().unwrap().poll_errors.push((t0.elapsed(), e.to_string())),
            }
        }
        consumer
    })
}

/// Each record's sequence and its (partition, offset) or error, once all have ended.
type Outcomes = tokio::task::JoinHandle<Vec<(u64, Result<(i32, i64), String>)>>;

/// Sends `range`'s records (round-robin over `partitions`) and collects their outcomes in a
/// task: each sequence's (partition, offset) or error.
async fn send_all(producer: &Producer, topic: &str, partitions: i32, range: std::ops::Range<u64>) -> Outcomes {
    let mut pending = Vec::new();
    for i in range {
        let record =
            ProducerRecord::new(topic, value(i)).key(format!("k{i}")).partition((i % partitions as u64) as i32);
        pending.push((i, producer.send(record).await.unwrap_or_else(|e| panic!("send {i}: {e}"))));
    }
    tokio::spawn(async move {
        let mut out = Vec::new();
        for (i, f) in pending {
            out.push((i, f.await.map(|md| (md.topic_partition.partition, md.offset)).map_err(|e| e.to_string())));
        }
        out
    })
}

/// Awaits `sends` (within `bound`) and asserts every record was acknowledged.
async fn all_acknowledged(what: &str, sends: Outcomes, bound: Duration, acks: &mut BTreeMap<u64, (i32, i64)>) {
    let outcomes = timeout(bound, sends)
        .await
        .unwrap_or_else(|_| panic!("{what}: records neither acknowledged nor failed in {bound:?}"))
        .expect("sender task");
    for (i, outcome) in outcomes {
        match outcome {
            Ok(at) => drop(acks.insert(i, at)),
            Err(e) => panic!("{what}: record {i} failed before its delivery.timeout.ms: {e}"),
        }
    }
}

/// Reads `topic` back without the proxy: each acknowledged sequence once, at its acknowledged
/// offset, in send order per partition, and nothing else.
async fn assert_each_once(bs: &str, topic: &str, partitions: i32, acks: &BTreeMap<u64, (i32, i64)>) {
    let admin = plain_client(bs).await;
    for p in 0..partitions {
        let records = fetch_records(&admin, topic, p).await;
        let seqs: Vec<u64> = records.iter().map(|r| seq_of(r.value.as_deref().expect("value"))).collect();
        let expected: Vec<u64> = acks.iter().filter(|(_, (q, _))| *q == p).map(|(i, _)| *i).collect();
        assert_eq!(seqs, expected, "partition {p}: not each acknowledged sequence once in send order");
        for r in &records {
            let i = seq_of(r.value.as_deref().unwrap());
            assert_eq!(acks.get(&i), Some(&(p, r.offset)), "sequence {i} acknowledged elsewhere");
        }
    }
}

/// Asserts the consumer saw offsets `0..per_partition` of each partition, once and in order.
fn assert_consumed_in_order(seen: &Consumed, partitions: i32, per_partition: i64) {
    for p in 0..partitions {
        let got = seen.offsets.get(&p).cloned().unwrap_or_default();
        assert_eq!(got, (0..per_partition).collect::<Vec<_>>(), "partition {p}: offsets not each once in order");
    }
}

/// Waits (at most `bound`) until `f` over the client's metrics says so; returns when, after `t0`.
async fn wait_metrics(
    what: &str,
    client: &Client,
    t0: Instant,
    bound: Duration,
    mut f: impl FnMut(&kafka_wire::client::ClientMetrics) -> bool,
) -> Duration {
    let deadline = Instant::now() + bound;
    loop {
        if f(&client.metrics()) {
            return t0.elapsed();
        }
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}; metrics: {:?}", client.metrics());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn request_errors(m: &kafka_wire::client::ClientMetrics) -> u64 {
    m.brokers.iter().map(|b| b.request_errors).sum()
}

/// `request.timeout.ms` of the stall and refusal tests: short, so that a stall outlasts it
/// several times, and long enough that no request of a loaded machine's broker takes it.
const SHORT_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
/// `retry.backoff.ms` and `retry.backoff.max.ms` of those tests (the client backs off
/// reconnections with them: it has no separate `reconnect.backoff.ms`).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));
/// `fetch.max.wait.ms` of those tests' consumer.
const FETCH_MAX_WAIT: Duration = Duration::from_millis(200);

/// An idempotent producer and an assigned consumer of `topic`'s partitions, both through
/// `proxy`, with [`SHORT_REQUEST_TIMEOUT`], [`BACKOFF`] and a 60 s delivery timeout.
async fn producer_and_consumer(bs: &str, proxy: &ChaosProxy, topic: &str, partitions: i32) -> (Producer, Consumer) {
    let mut config = ProducerConfig::new(bs)
        .request_timeout(SHORT_REQUEST_TIMEOUT)
        .delivery_timeout(Duration::from_secs(60))
        .linger(Duration::from_millis(5));
    (config.retry_backoff, config.retry_backoff_max) = BACKOFF;
    config.socket_connection_setup_timeout = SHORT_REQUEST_TIMEOUT;
    config.security.dialer = Some(proxy.dialer());
    let producer = Producer::new(config).await.expect("producer through the proxy");
    let mut config = ConsumerConfig::new(bs).auto_offset_reset(OffsetReset::Earliest);
    config.request_timeout = SHORT_REQUEST_TIMEOUT;
    config.socket_connection_setup_timeout = SHORT_REQUEST_TIMEOUT;
    config.fetch_max_wait = FETCH_MAX_WAIT;
    (config.retry_backoff, config.retry_backoff_max) = BACKOFF;
    config.security.dialer = Some(proxy.dialer());
    let consumer = Consumer::new(config).await.expect("consumer through the proxy");
    consumer.assign((0..partitions).map(|p| TopicPartition::new(topic, p)));
    (producer, consumer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_responses_fail_requests_after_request_timeout_then_producer_and_consumer_reconnect_and_go_on() {
    // Records before, during and after the stall, per partition.
    const PARTITIONS: i32 = 2;
    const PHASE: u64 = 200;
    const N: u64 = 3 * PHASE;
    const STALL: Duration = Duration::from_secs(10);
    let bs = bootstrap();
    let topic = unique_topic("chaos-stall");
    create_topic(&plain_client(&bs).await, &topic, PARTITIONS, 1, &[]).await;
    let proxy = ChaosProxy::new(seed());
    let (producer, consumer) = producer_and_consumer(&bs, &proxy, &topic, PARTITIONS).await;
    let t0 = Instant::now();
    let seen = Arc::new(std::sync::Mutex::new(Consumed::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let consumer_client = consumer.client().clone();
    let reader = consume(consumer, N, t0, seen.clone(), stop_rx);

    // Before: every record acknowledged and consumed, connections warm.
    let mut acks = BTreeMap::new();
    let before = send_all(&producer, &topic, PARTITIONS, 0..PHASE).await;
    all_acknowledged("before the stall", before, Duration::from_secs(60), &mut acks).await;
    wait_until("the consumer reads the first records", Duration::from_secs(60), || {
        seen.lock().unwrap().total() >= PHASE
    })
    .await;
    // Nothing of the producer in flight, so that every request it sends from now on is sent
    // after the stall starts and may time out only a request timeout later.
    let producer_client = producer.client().clone();
    wait_metrics("the producer's requests answered", &producer_client, t0, Duration::from_secs(30), |m| {
        m.brokers.iter().all(|b| b.in_flight == 0)
    })
    .await;
    let (producer_errors, consumer_errors) =
        (request_errors(&producer_client.metrics()), request_errors(&consumer_client.metrics()));
    let (producer_conns, consumer_conns) =
        (producer_client.metrics().connections_opened(), consumer_client.metrics().connections_opened());

    // The stall: responses of every broker address held (requests still reach the brokers,
    // so the producer's first attempts are written and its retries must not duplicate them).
    let addrs = proxy.upstreams();
    for a in &addrs {
        proxy.stall(a, Direction::Down, true);
    }
    let stalled_at = t0.elapsed();
    let during = send_all(&producer, &topic, PARTITIONS, PHASE..2 * PHASE).await;
    let producer_failed_at =
        wait_metrics("a producer request fails during the stall", &producer_client, t0, STALL * 3, |m| {
            request_errors(m) > producer_errors
        })
        .await;
    let consumer_failed_at =
        wait_metrics("a consumer request fails during the stall", &consumer_client, t0, STALL * 3, |m| {
            request_errors(m) > consumer_errors
        })
        .await;
    let stall_left = STALL.saturating_sub(t0.elapsed() - stalled_at);
    tokio::time::sleep(stall_left).await;
    for a in &addrs {
        proxy.stall(a, Direction::Down, false);
    }
    let released_at = t0.elapsed();

    // After: the producer and the consumer go on.
    let after = send_all(&producer, &topic, PARTITIONS, 2 * PHASE..N).await;
    all_acknowledged("sent during the stall", during, Duration::from_secs(90), &mut acks).await;
    all_acknowledged("sent after the stall", after, Duration::from_secs(60), &mut acks).await;
    let reconnected =
        wait_metrics("the consumer reads everything", &consumer_client, t0, Duration::from_secs(90), |_| {
            seen.lock().unwrap().total() >= N
        })
        .await;
    // The reader may have ended (and dropped its receiver) already.
    stop_tx.send_replace(true);
    let consumer = timeout(Duration::from_secs(30), reader).await.expect("the reader stops").expect("reader");
    let (pm, cm) = (producer_client.metrics(), consumer_client.metrics());
    producer.close().await.expect("close");
    consumer.close().await.ok();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "[chaos stall] {addrs:?} stalled at {stalled_at:?} for {STALL:?} (request.timeout.ms {SHORT_REQUEST_TIMEOUT:?}); \
         first failed request: producer at {producer_failed_at:?}, consumer at {consumer_failed_at:?}; released at \
         {released_at:?}; all consumed at {reconnected:?}; producer: {} request errors, {} connections; consumer: {} \
         request errors, {} connections; poll errors: {:?}; proxy: {}",
        request_errors(&pm) - producer_errors,
        pm.connections_opened() - producer_conns,
        request_errors(&cm) - consumer_errors,
        cm.connections_opened() - consumer_conns,
        seen.poll_errors,
        proxy.counters()
    );
    // Not before request.timeout.ms: the producer's requests were all sent after the stall
    // began; a fetch in flight then had been sent at most fetch.max.wait.ms (plus the broker's
    // time to answer it, 1 s allowed on a loaded machine) earlier, or its answer would have
    // passed before.
    assert!(
        producer_failed_at - stalled_at >= SHORT_REQUEST_TIMEOUT,
        "a producer request failed {:?} into the stall, before request.timeout.ms",
        producer_failed_at - stalled_at
    );
    assert!(
        consumer_failed_at - stalled_at >= SHORT_REQUEST_TIMEOUT - FETCH_MAX_WAIT - Duration::from_secs(1),
        "a consumer request failed {:?} into the stall, before request.timeout.ms",
        consumer_failed_at - stalled_at
    );
    for (at, e) in &seen.poll_errors {
        assert!(
            *at < stalled_at || *at - stalled_at >= SHORT_REQUEST_TIMEOUT - FETCH_MAX_WAIT - Duration::from_secs(1),
            "poll failed {:?} into the stall, before request.timeout.ms: {e}",
            *at - stalled_at
        );
    }
    // They reconnected (the stalled connections were given up).
    assert!(pm.connections_opened() > producer_conns, "the producer never reconnected");
    assert!(cm.connections_opened() > consumer_conns, "the consumer never reconnected");
    assert_consumed_in_order(&seen, PARTITIONS, (N / PARTITIONS as u64) as i64);
    assert_each_once(&bs, &topic, PARTITIONS, &acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_with_backoff_and_producer_and_consumer_go_on_once_accepted() {
    const PARTITIONS: i32 = 2;
    const PHASE: u64 = 200;
    const N: u64 = 3 * PHASE;
    const REFUSAL: Duration = Duration::from_secs(8);
    let bs = bootstrap();
    let topic = unique_topic("chaos-refuse");
    create_topic(&plain_client(&bs).await, &topic, PARTITIONS, 1, &[]).await;
    let proxy = ChaosProxy::new(seed());
    let (producer, consumer) = producer_and_consumer(&bs, &proxy, &topic, PARTITIONS).await;
    let t0 = Instant::now();
    let seen = Arc::new(std::sync::Mutex::new(Consumed::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let consumer_client = consumer.client().clone();
    let producer_client = producer.client().clone();
    let reader = consume(consumer, N, t0, seen.clone(), stop_rx);

    let mut acks = BTreeMap::new();
    let before = send_all(&producer, &topic, PARTITIONS, 0..PHASE).await;
    all_acknowledged("before the refusal", before, Duration::from_secs(60), &mut acks).await;
    wait_until("the consumer reads the first records", Duration::from_secs(60), || {
        seen.lock().unwrap().total() >= PHASE
    })
    .await;

    // Every broker address (bootstrap and advertised) refuses new connections, and the open
    // ones are cut: producer and consumer must reconnect, and are refused.
    let addrs = proxy.upstreams();
    for a in &addrs {
        proxy.refuse(a, true);
        proxy.cut(a);
    }
    let refused_at = t0.elapsed();
    let during = send_all(&producer, &topic, PARTITIONS, PHASE..2 * PHASE).await;
    // The refusal lasts REFUSAL; its second half shows the steady state, backoffs grown.
    let refusal_end = Instant::now() + REFUSAL;
    tokio::time::sleep(REFUSAL / 2).await;
    let refused_half = proxy.counters().refused;
    tokio::time::sleep_until(refusal_end).await;
    let refused = proxy.counters().refused;
    let refused_for = t0.elapsed() - refused_at;
    for a in &addrs {
        proxy.refuse(a, false);
    }
    let accepted_at = t0.elapsed();
    let during_done = during.is_finished();

    let after = send_all(&producer, &topic, PARTITIONS, 2 * PHASE..N).await;
    all_acknowledged("sent during the refusal", during, Duration::from_secs(60), &mut acks).await;
    all_acknowledged("sent after the refusal", after, Duration::from_secs(60), &mut acks).await;
    let all_read = wait_metrics("the consumer reads everything", &consumer_client, t0, Duration::from_secs(60), |_| {
        seen.lock().unwrap().total() >= N
    })
    .await;
    // The reader may have ended (and dropped its receiver) already.
    stop_tx.send_replace(true);
    let consumer = timeout(Duration::from_secs(30), reader).await.expect("the reader stops").expect("reader");
    let (pm, cm) = (producer_client.metrics(), consumer_client.metrics());
    producer.close().await.expect("close");
    consumer.close().await.ok();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let counters = proxy.counters();
    eprintln!(
        "[chaos refuse] {addrs:?} refused from {refused_at:?} for {refused_for:?}: {refused} dials refused; accepted \
         again at {accepted_at:?} ({} in the second half); all consumed at {all_read:?}; producer: {} connections, {} request errors; \
         consumer: {} connections, {} request errors; poll errors: {:?}; proxy: {counters}",
        refused - refused_half,
        pm.connections_opened(),
        request_errors(&pm),
        cm.connections_opened(),
        request_errors(&cm),
        seen.poll_errors,
    );
    assert!(counters.cuts_ordered > 0, "no connection was cut: {counters}");
    assert!(refused > 0, "nothing dialed during the refusal: {counters}");
    // Backoff, not a busy loop: each user of connections to an address (each client's own,
    // the producer's sender, the consumer's fetcher…: 5 seen, at most USERS allowed) dials at
    // most once per `retry.backoff.max.ms` (-20 % jitter) once its backoff has grown, and a few
    // times more while it grows from `retry.backoff.ms`. (A loop without backoff makes
    // thousands.) Seen here: 55 in 8 s, 20 of them in the second half.
    const USERS: u64 = 8;
    let per_user = |d: Duration| (d.as_secs_f64() / (BACKOFF.1.as_secs_f64() * 0.8)).ceil() as u64;
    let growth = (BACKOFF.1.as_secs_f64() / BACKOFF.0.as_secs_f64()).log2().ceil() as u64 + 2;
    let bound = USERS * addrs.len() as u64 * (per_user(refused_for) + growth);
    assert!(refused <= bound, "{refused} dials in {refused_for:?}: more than {bound}, no backoff");
    let steady_bound = USERS * addrs.len() as u64 * (per_user(REFUSAL / 2) + 1);
    assert!(
        refused - refused_half <= steady_bound,
        "{} dials in the refusal's second half: more than {steady_bound}, the backoff does not grow",
        refused - refused_half
    );
    assert!(!during_done, "records sent during the refusal ended before connections were accepted again");
    assert!(seen.poll_errors.is_empty(), "poll failed before default.api.timeout.ms: {:?}", seen.poll_errors);
    assert_consumed_in_order(&seen, PARTITIONS, (N / PARTITIONS as u64) as i64);
    assert_each_once(&bs, &topic, PARTITIONS, &acks).await;
}
