//! Scenario `eos`: the exactly-once copier ([`txn::Processor`], three instances with their own
//! `transactional.id`s in one group) copies an input topic an idempotent producer keeps
//! writing to an output topic, aborting one transaction in seven on purpose, while instances
//! are killed (their task aborted: the processor dropped without shutdown, its transaction left
//! open) and restarted with the same `transactional.id`, and the brokers do rolling restarts.
//!
//! Checked on the output read with isolation read_committed once the copier has caught up and
//! shut down: every input record is there exactly once (so no aborted or zombie record is
//! visible, and no committed one is missing), nothing else is, and per key the copies are in
//! input order.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_wire::client::{ConsumerRecord, ProducerRecord};
use tokio::task::JoinHandle;
use txn::{Decision, Processor, ProcessorConfig, Shutdown};

use crate::faults::{self, Plan, Schedule};
use crate::{Report, Rng, RunConfig, Stop, Violations};

const PARTITIONS: i32 = 6;
const INSTANCES: usize = 3;
/// Input records per second.
const RATE: u64 = 300;
/// One handler call in this many aborts its transaction.
const ABORT_EVERY: u64 = 7;
/// Bound on the copier catching up after the faults.
const DRAIN_BOUND: Duration = Duration::from_secs(240);

/// Runs the scenario.
pub async fn run(config: &RunConfig) -> Result<Report, String> {
    let bs = config.bootstrap.as_str();
    let input = kafka_wire_tests::unique_topic("chaos-eos-in");
    let output = format!("{input}-out");
    crate::create_topic(bs, &input, PARTITIONS, &[]).await?;
    crate::create_topic(bs, &output, PARTITIONS, &[]).await?;
    let group = format!("{input}-copier");
    eprintln!("[chaos] eos: {input} -> {output}, {INSTANCES} instances, seed {}", config.seed);

    let faults_stop = Stop::default();
    let writer = tokio::spawn(crate::feed(bs.to_string(), input.clone(), RATE, faults_stop.clone()));
    let shutdown = Shutdown::new();
    let aborts = Arc::new(AtomicU64::new(0));
    let copier =
        Copier { bs: bs.to_string(), group, input: input.clone(), output: output.clone(), aborts: aborts.clone() };
    let mut instances = Vec::new();
    for i in 0..INSTANCES {
        instances.push(copier.start(i, &shutdown).await?);
    }
    let topics = vec![input.clone(), output.clone(), "__consumer_offsets".into(), "__transaction_state".into()];
    let injector = tokio::spawn(faults::inject(
        bs.to_string(),
        topics,
        Schedule::new(config.seed, Plan::Rolling),
        faults_stop.clone(),
    ));

    let mut rng = Rng::new(config.seed.rotate_left(23) ^ 0xE05);
    let mut crashes = 0u64;
    let end = tokio::time::Instant::now() + config.duration;
    loop {
        let gap = rng.duration(Duration::from_secs(3), Duration::from_secs(10));
        if tokio::time::Instant::now() + gap >= end {
            break;
        }
        tokio::time::sleep(gap).await;
        let i = rng.below(INSTANCES as u64) as usize;
        let down = rng.duration(Duration::ZERO, Duration::from_secs(3));
        eprintln!("[chaos] kill copier instance {i}; back in {:.1} s", down.as_secs_f64());
        instances[i].abort();
        let _ = (&mut instances[i]).await;
        crashes += 1;
        tokio::time::sleep(down).await;
        instances[i] = copier.start(i, &shutdown).await?;
    }
    tokio::time::sleep_until(end).await;
    faults_stop.set();
    let (records, failed) = writer.await.map_err(|e| format!("writer: {e}"))??;
    let faults = injector.await.map_err(|e| format!("fault injector: {e}"))??;

    // The copier catches up, then shuts down (no transaction left open), then the check.
    let inputs = crate::read_back(bs, &input, PARTITIONS, false).await?;
    let deadline = tokio::time::Instant::now() + DRAIN_BOUND;
    loop {
        let copied = crate::read_back(bs, &output, PARTITIONS, true).await?.len();
        if copied >= inputs.len() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("[chaos] eos: the copier did not catch up within {DRAIN_BOUND:?} ({copied} of {})", inputs.len());
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    shutdown.trigger();
    let mut v = Violations::default();
    for (i, instance) in instances.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(60), instance).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => v.push(|| format!("copier instance {i} panicked: {e}")),
            Err(_) => v.push(|| format!("copier instance {i} did not shut down within 60 s")),
        }
    }
    let copies = crate::read_back(bs, &output, PARTITIONS, true).await?;
    let mut report = Report { faults, records, failed, ..Report::default() };
    check(&inputs, &copies, &mut v);
    report.violations = v;
    report.notes.push(("input records".into(), inputs.len().to_string()));
    report.notes.push(("read_committed output records".into(), copies.len().to_string()));
    report.notes.push(("copier instance kills".into(), crashes.to_string()));
    report.notes.push(("transactions aborted on purpose".into(), aborts.load(Ordering::Relaxed).to_string()));
    Ok(report)
}

/// What starts a copier instance.
struct Copier {
    bs: String,
    group: String,
    input: String,
    output: String,
    aborts: Arc<AtomicU64>,
}

impl Copier {
    /// Instance `i` (its `transactional.id` is the same across restarts: the new one fences
    /// the killed one and aborts what it left open), running until `shutdown`.
    async fn start(&self, i: usize, shutdown: &Shutdown) -> Result<JoinHandle<()>, String> {
        let txid = format!("{}-{i}", self.group);
        let mut config = ProcessorConfig::new(&self.bs, &self.group, &txid, [self.input.clone()]);
        config.consumer = config.consumer.session_timeout(Duration::from_secs(6));
        let processor = Processor::new(config).await.map_err(|e| format!("copier instance {i}: {e}"))?;
        let (output, aborts, shutdown) = (self.output.clone(), self.aborts.clone(), shutdown.clone());
        let mut calls = 0u64;
        let handler = move |batch: &[ConsumerRecord], out: &mut Vec<ProducerRecord>| {
            for r in batch {
                let mut record = ProducerRecord::new(&output, r.value.clone().unwrap_or_default());
                if let Some(key) = &r.key {
                    record = record.key(key.clone());
                }
                out.push(record);
            }
            calls += 1;
            if calls % ABORT_EVERY == 0 {
                aborts.fetch_add(1, Ordering::Relaxed);
                Decision::Abort
            } else {
                Decision::Commit
            }
        };
        Ok(tokio::spawn(async move {
            // Errors (fenced by its own restart, coordinator loss that retrying cannot fix) end
            // the instance; the others take its partitions, and the check says if anything is
            // missing.
            if let Err(e) = processor.run(handler, &shutdown).await {
                eprintln!("[chaos] copier instance {i} ended: {e}");
            }
        }))
    }
}

/// Input `s<seq>` values, exactly once each in the copies, nothing else, in input order per key.
fn check(inputs: &[ConsumerRecord], copies: &[ConsumerRecord], v: &mut Violations) {
    let mut count: HashMap<&Bytes, u64> = inputs.iter().filter_map(|r| r.value.as_ref()).map(|b| (b, 0)).collect();
    let input_position: HashMap<&Bytes, i64> =
        inputs.iter().filter_map(|r| r.value.as_ref().map(|b| (b, r.offset))).collect();
    let mut last_per_key: BTreeMap<Option<&Bytes>, i64> = BTreeMap::new();
    for c in copies {
        let Some(value) = c.value.as_ref() else {
            v.push(|| format!("{}/{}: a copy with no value", c.partition, c.offset));
            continue;
        };
        match count.get_mut(value) {
            Some(n) => {
                *n += 1;
                if *n == 2 {
                    v.push(|| format!("{value:?} copied more than once (at {}/{})", c.partition, c.offset));
                }
            }
            None => v.push(|| format!("{}/{}: {value:?} is not an input record", c.partition, c.offset)),
        }
        // Keys map to one partition of each topic, so input offsets of one key are comparable.
        if let Some(&at) = input_position.get(value) {
            if let Some(prev) = last_per_key.insert(c.key.as_ref(), at) {
                if at < prev {
                    v.push(|| format!("{value:?} copied after a later input record of its key {:?}", c.key));
                }
            }
        }
    }
    let missing: Vec<&&Bytes> = count.iter().filter(|(_, n)| **n == 0).map(|(b, _)| b).collect();
    if !missing.is_empty() {
        v.push(|| {
            format!("{} input records never copied (first {:?})", missing.len(), &missing[..missing.len().min(5)])
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64, key: &str, value: &str) -> ConsumerRecord {
        ConsumerRecord {
            topic: "t".into(),
            partition,
            offset,
            timestamp: 0,
            timestamp_type: Default::default(),
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Default::default(),
            leader_epoch: -1,
        }
    }

    fn violations(inputs: &[ConsumerRecord], copies: &[ConsumerRecord]) -> Vec<String> {
        let mut v = Violations::default();
        check(inputs, copies, &mut v);
        v.first
    }

    /// The checker sees each way the copy can break exactly once: a duplicate (an aborted or
    /// zombie record visible), a missing record, a foreign one, and a key's copies reordered.
    #[test]
    fn the_checker_catches_duplicates_losses_strangers_and_reordering() {
        let inputs = [record(0, 0, "k0", "s0"), record(0, 1, "k0", "s1"), record(1, 0, "k1", "s2")];
        assert!(violations(&inputs, &inputs).is_empty());
        let duplicated = [&inputs[..], &inputs[..1]].concat();
        assert_eq!(violations(&inputs, &duplicated).len(), 2, "a duplicate also comes after a later record");
        assert!(violations(&inputs, &duplicated)[0].contains("more than once"));
        assert!(violations(&inputs, &inputs[..2])[0].contains("1 input records never copied"));
        let stranger = [&inputs[..], &[record(1, 1, "k1", "s9")]].concat();
        assert!(violations(&inputs, &stranger)[0].contains("not an input record"));
        let reordered = [inputs[1].clone(), inputs[0].clone(), inputs[2].clone()];
        assert!(violations(&inputs, &reordered)[0].contains("after a later input record"));
    }
}
