//! Scenario `producer`: idempotent producers (acks=all, the defaults) write keyed,
//! sequence-numbered records to a 6-partition topic while the brokers leading its partitions
//! are SIGKILLed and restarted, and SIGSTOPped and continued, one after another.
//!
//! Checked on everything read back: each acknowledged record is at the partition and offset
//! its acknowledgement gave; no record is there twice (idempotence); per key, sequence numbers
//! increase (order) and all records share one partition. A failed send is not a violation (its
//! record may or may not be in the log), and is counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_wire::client::{ConsumerRecord, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::faults::{self, Plan, Schedule};
use crate::{Report, RunConfig, Stop, Violations};

const PARTITIONS: i32 = 6;
const PRODUCERS: usize = 2;
const KEYS: usize = 24;
/// Records per second per producer, at most (the checker keeps one offset per record).
const RATE: u64 = 2_000;
/// Records sent and not yet acknowledged per producer, at most.
const WINDOW: usize = 4_000;
/// Bound on the flush after the run: a producer that cannot deliver within it has hung.
const FLUSH_BOUND: Duration = Duration::from_secs(300);

/// Delivery outcome of every record a producer sent: `acked[key][seq]`.
#[derive(Default)]
struct Outcomes {
    acked: Vec<Vec<Option<(i32, i64)>>>,
    failed: u64,
    errors: BTreeMap<String, u64>,
}

fn key(p: usize, k: usize) -> String {
    format!("p{p}-k{k}")
}

fn value(p: usize, k: usize, seq: u64) -> String {
    format!("p{p};k{k};s{seq}")
}

/// `(producer, key, seq)` of a value written by [`value`].
fn parse(value: &[u8]) -> Option<(usize, usize, u64)> {
    let mut it = std::str::from_utf8(value).ok()?.split(';');
    let p = it.next()?.strip_prefix('p')?.parse().ok()?;
    let k = it.next()?.strip_prefix('k')?.parse().ok()?;
    let s = it.next()?.strip_prefix('s')?.parse().ok()?;
    (p < PRODUCERS && k < KEYS).then_some((p, k, s))
}

/// Runs the scenario.
pub async fn run(config: &RunConfig) -> Result<Report, String> {
    let topic = kafka_wire_tests::unique_topic("chaos-producer");
    crate::create_topic(&config.bootstrap, &topic, PARTITIONS, &[]).await?;
    eprintln!("[chaos] producer: topic {topic}, {PRODUCERS} producers x {KEYS} keys, seed {}", config.seed);

    let stop = Stop::default();
    let schedule = Schedule::new(config.seed, Plan::Leaders { partitions: PARTITIONS });
    let injector = tokio::spawn(faults::inject(config.bootstrap.clone(), vec![topic.clone()], schedule, stop.clone()));
    let mut writers = Vec::new();
    for p in 0..PRODUCERS {
        writers.push(tokio::spawn(write(config.bootstrap.clone(), topic.clone(), p, stop.clone())));
    }
    stop.sleep(config.duration).await;
    stop.set();
    let mut outcomes = Vec::new();
    for w in writers {
        outcomes.push(w.await.map_err(|e| format!("writer: {e}"))??);
    }
    let faults = injector.await.map_err(|e| format!("fault injector: {e}"))??;

    let mut report = Report { faults, ..Report::default() };
    check(&config.bootstrap, &topic, &outcomes, &mut report).await?;
    Ok(report)
}

/// Producer `p`: sends until `stop`, then flushes; returns every record's outcome.
async fn write(bootstrap: String, topic: String, p: usize, stop: Stop) -> Result<Outcomes, String> {
    let config = ProducerConfig::new(&bootstrap).client_id(format!("chaos-producer-{p}"));
    let producer = Producer::new(config).await.map_err(|e| format!("producer {p}: {e}"))?;
    let outcomes = Arc::new(Mutex::new(Outcomes { acked: vec![Vec::new(); KEYS], ..Outcomes::default() }));
    let window = Arc::new(Semaphore::new(WINDOW));
    type Sent = (usize, u64, DeliveryFuture, OwnedSemaphorePermit);
    let (tx, mut rx) = mpsc::unbounded_channel::<Sent>();
    let collector = {
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            while let Some((k, seq, delivery, permit)) = rx.recv().await {
                let result = delivery.await;
                let mut o = outcomes.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(md) => o.acked[k][seq as usize] = Some((md.topic_partition.partition, md.offset)),
                    Err(e) => {
                        o.failed += 1;
                        *o.errors.entry(e.to_string()).or_default() += 1;
                    }
                }
                drop(permit);
            }
        })
    };
    let mut seqs = [0u64; KEYS];
    let mut next_key = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_set() {
        tick.tick().await;
        for _ in 0..RATE / 100 {
            let permit = window.clone().acquire_owned().await.map_err(|e| e.to_string())?;
            let k = next_key;
            next_key = (next_key + 1) % KEYS;
            let seq = seqs[k];
            seqs[k] += 1;
            outcomes.lock().unwrap_or_else(|e| e.into_inner()).acked[k].push(None);
            let record = ProducerRecord::new(&topic, value(p, k, seq)).key(key(p, k));
            match producer.send(record).await {
                Ok(delivery) => tx.send((k, seq, delivery, permit)).map_err(|_| "collector gone".to_string())?,
                Err(e) => {
                    let mut o = outcomes.lock().unwrap_or_else(|e| e.into_inner());
                    o.failed += 1;
                    *o.errors.entry(format!("send: {e}")).or_default() += 1;
                }
            }
        }
    }
    drop(tx);
    tokio::time::timeout(FLUSH_BOUND, async {
        producer.flush().await.map_err(|e| format!("flush: {e}"))?;
        collector.await.map_err(|e| format!("collector: {e}"))
    })
    .await
    .map_err(|_| format!("producer {p} did not deliver its records within {FLUSH_BOUND:?} after the run"))??;
    producer.close().await.map_err(|e| format!("close: {e}"))?;
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(outcomes)
}

/// Reads the topic back and checks it against `outcomes`.
async fn check(bootstrap: &str, topic: &str, outcomes: &[Outcomes], report: &mut Report) -> Result<(), String> {
    let all = crate::read_back(bootstrap, topic, PARTITIONS, false).await?;
    verify(&all, outcomes, report);
    Ok(())
}

/// Checks the records read back (`all`, in offset order per partition) against `outcomes`.
fn verify(all: &[ConsumerRecord], outcomes: &[Outcomes], report: &mut Report) {
    let mut v = Violations::default();
    // Copies of each (producer, key, seq) read, and the partition each key was read in.
    let mut copies: Vec<Vec<Vec<u8>>> =
        outcomes.iter().map(|o| o.acked.iter().map(|seqs| vec![0u8; seqs.len()]).collect()).collect();
    let mut key_partition: HashMap<(usize, usize), i32> = HashMap::new();
    // Per partition, (offset, producer, key, seq) in offset order.
    let mut logs: Vec<Vec<(i64, usize, usize, u64)>> = Vec::new();
    let mut read = 0u64;
    for partition in 0..PARTITIONS {
        let records: Vec<&ConsumerRecord> = all.iter().filter(|r| r.partition == partition).collect();
        let mut log = Vec::with_capacity(records.len());
        let mut last: HashMap<(usize, usize), u64> = HashMap::new();
        for r in records {
            read += 1;
            let Some((p, k, seq)) = r.value.as_deref().and_then(parse) else {
                v.push(|| format!("{partition}/{}: a record this run did not write", r.offset));
                continue;
            };
            if r.key.as_deref() != Some(key(p, k).as_bytes()) {
                v.push(|| format!("{partition}/{}: p{p} k{k} s{seq} under key {:?}", r.offset, r.key));
            }
            match copies.get_mut(p).and_then(|c| c[k].get_mut(seq as usize)) {
                Some(n) => {
                    *n = n.saturating_add(1);
                    if *n > 1 {
                        v.push(|| format!("{partition}/{}: p{p} k{k} s{seq} duplicated", r.offset));
                    }
                }
                None => v.push(|| format!("{partition}/{}: p{p} k{k} s{seq} was never sent", r.offset)),
            }
            if let Some(&prev) = last.get(&(p, k)) {
                if seq < prev {
                    v.push(|| format!("{partition}/{}: p{p} k{k} s{seq} after s{prev} (order)", r.offset));
                }
            }
            last.insert((p, k), seq);
            if let Some(&other) = key_partition.get(&(p, k)) {
                if other != partition {
                    v.push(|| format!("key p{p}-k{k} in partitions {other} and {partition}"));
                }
            }
            key_partition.insert((p, k), partition);
            log.push((r.offset, p, k, seq));
        }
        logs.push(log);
    }

    let mut acked = 0u64;
    for (p, o) in outcomes.iter().enumerate() {
        for (k, seqs) in o.acked.iter().enumerate() {
            for (seq, ack) in seqs.iter().enumerate() {
                let Some((partition, offset)) = *ack else { continue };
                acked += 1;
                let log = usize::try_from(partition).ok().and_then(|i| logs.get(i)).map_or(&[][..], Vec::as_slice);
                let found = log.binary_search_by_key(&offset, |e| e.0).ok().map(|i| log[i]);
                if found != Some((offset, p, k, seq as u64)) {
                    v.push(|| {
                        format!("p{p} k{k} s{seq} acknowledged at {partition}/{offset}, which holds {found:?} (lost)")
                    });
                }
            }
        }
    }
    report.records = acked;
    report.failed = outcomes.iter().map(|o| o.failed).sum();
    report.violations = v;
    report.notes.push(("records read back".into(), read.to_string()));
    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    for o in outcomes {
        for (e, n) in &o.errors {
            *errors.entry(e).or_default() += n;
        }
    }
    if !errors.is_empty() {
        report.notes.push(("failed sends by error".into(), format!("{errors:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64, p: usize, k: usize, seq: u64) -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition,
            offset,
            timestamp: 0,
            timestamp_type: Default::default(),
            key: Some(key(p, k).into()),
            value: Some(value(p, k, seq).into()),
            headers: Default::default(),
            leader_epoch: -1,
        }
    }

    /// Producer 0 sent s0..s2 of key 0, acknowledged at 0/0..0/2.
    fn sent() -> Vec<Outcomes> {
        let mut acked = vec![Vec::new(); KEYS];
        acked[0] = vec![Some((0, 0)), Some((0, 1)), Some((0, 2))];
        vec![
            Outcomes { acked, ..Outcomes::default() },
            Outcomes { acked: vec![Vec::new(); KEYS], ..Outcomes::default() },
        ]
    }

    fn violations(log: &[ConsumerRecord]) -> Vec<String> {
        let mut report = Report::default();
        verify(log, &sent(), &mut report);
        assert_eq!(report.records, 3);
        report.violations.first
    }

    /// The checker sees a lost acknowledged record, a duplicate, a key's records reordered and
    /// a key in two partitions.
    #[test]
    fn the_checker_catches_losses_duplicates_reordering_and_split_keys() {
        let whole = [record(0, 0, 0, 0, 0), record(0, 1, 0, 0, 1), record(0, 2, 0, 0, 2)];
        assert!(violations(&whole).is_empty());
        assert!(violations(&whole[..2])[0].contains("(lost)"));
        let duplicated = [&whole[..], &[record(0, 3, 0, 0, 2)]].concat();
        assert!(violations(&duplicated)[0].contains("duplicated"));
        let reordered = [record(0, 0, 0, 0, 0), record(0, 1, 0, 0, 2), record(0, 2, 0, 0, 1)];
        assert!(violations(&reordered).iter().any(|v| v.contains("(order)")));
        let split = [record(0, 0, 0, 0, 0), record(0, 1, 0, 0, 1), record(1, 0, 0, 0, 2)];
        assert!(violations(&split).iter().any(|v| v.contains("in partitions 0 and 1")));
    }

    #[test]
    fn values_parse_back() {
        assert_eq!(parse(value(1, 23, 40_000).as_bytes()), Some((1, 23, 40_000)));
        assert_eq!(parse(b"p9;k0;s1"), None);
        assert_eq!(parse(b"garbage"), None);
    }
}
