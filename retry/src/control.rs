//! The operator's commands and the instances' status, on one compacted control topic per
//! source topic and group (`<topic>-<group>-retry-control`, one partition, so commands have one
//! order):
//!
//! - `skip` a blocked record at an offset: it goes to the dead-letter queue (never dropped)
//!   and its partition moves on;
//! - `unblock` a partition or a whole topic: failures skip the blocking retries and go to the
//!   tiers (or the queue); `block` restores blocking;
//! - every instance publishes the records it is blocked on (and removes them when they move on).
//!
//! Every instance reads the whole topic at start and follows it, so a command is honoured by
//! whichever instance owns the partition, now or after a rebalance or a restart (unlike
//! Greyhound's in-memory blocking state). Commands target an offset or a partition, not
//! "whatever is blocked now", so running one twice is harmless. Each is stamped with who issued
//! it and when.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_wire::client::{Admin, NewTopic, OffsetReset, OffsetSpec, ProducerConfig};
use kafka_wire::{
    Client, Consumer, ConsumerConfig, ConsumerRecord, ErrorCode, Producer, ProducerRecord, TopicPartition,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The name of the control topic of `source` and `group`.
pub fn control_topic(source: &str, group: &str) -> String {
    format!("{source}-{group}-retry-control")
}

/// An operator's command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Send the record at `offset` of `partition` to the dead-letter queue instead of retrying
    /// it in place.
    Skip {
        /// The partition of the source topic.
        partition: i32,
        /// The record's offset.
        offset: i64,
    },
    /// Stop blocking on failures of `partition` (every partition if `None`).
    Unblock {
        /// The partition, or the whole topic.
        partition: Option<i32>,
    },
    /// Block on failures of `partition` again (every partition if `None`).
    Block {
        /// The partition, or the whole topic.
        partition: Option<i32>,
    },
}

/// A command with who issued it and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped {
    /// The command.
    #[serde(flatten)]
    pub command: Command,
    /// Who issued it.
    pub by: String,
    /// When, in milliseconds since the epoch.
    pub at_ms: u64,
}

/// That a dead letter was redriven: by whom, when, and where to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveMark {
    /// Who redrove it.
    pub by: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The topic it was written to.
    pub to: String,
}

/// A record an instance is blocked on, as it publishes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// The source partition.
    pub partition: i32,
    /// The record's offset.
    pub offset: i64,
    /// Since when it has been failing (ms since the epoch).
    pub since_ms: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last error.
    pub error: String,
}

/// What the control topic says now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlState {
    /// Skips by (partition, offset).
    pub skips: BTreeMap<(i32, i64), Stamped>,
    /// Block or unblock by partition (`None`: the topic), with the control offset it came at.
    pub modes: BTreeMap<Option<i32>, (i64, Stamped)>,
    /// Records blocked now, by (partition, offset).
    pub blocked: BTreeMap<(i32, i64), Blocked>,
    /// Dead letters redriven, by (dead-letter partition, offset).
    pub redriven: BTreeMap<(i32, i64), RedriveMark>,
}

impl ControlState {
    /// Whether failures of `partition` are retried in place: the latest block or unblock of
    /// the partition or of the whole topic decides; blocking if there is none.
    pub fn is_blocking(&self, partition: i32) -> bool {
        let latest =
            [self.modes.get(&Some(partition)), self.modes.get(&None)].into_iter().flatten().max_by_key(|(at, _)| *at);
        !matches!(latest, Some((_, Stamped { command: Command::Unblock { .. }, .. })))
    }

    /// The skip of the record at `offset` of `partition`, if one was issued.
    pub fn skip_of(&self, partition: i32, offset: i64) -> Option<&Stamped> {
        self.skips.get(&(partition, offset))
    }

    /// Applies one control record.
    fn apply(&mut self, record: &ConsumerRecord) {
        let Some(key) = record.key.as_deref().map(String::from_utf8_lossy) else { return };
        let value = record.value.as_deref();
        let mut parts = key.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("skip"), Some(p), Some(o)) => {
                let (Ok(p), Ok(o)) = (p.parse(), o.parse()) else { return };
                match value.and_then(|v| serde_json::from_slice(v).ok()) {
                    Some(s) => self.skips.insert((p, o), s),
                    None => self.skips.remove(&(p, o)),
                };
            }
            (Some("mode"), scope, None) => {
                let scope = match scope {
                    Some("all") => None,
                    Some(p) => match p.parse() {
                        Ok(p) => Some(p),
                        Err(_) => return,
                    },
                    None => return,
                };
                match value.and_then(|v| serde_json::from_slice(v).ok()) {
                    Some(s) => self.modes.insert(scope, (record.offset, s)),
                    None => self.modes.remove(&scope),
                };
            }
            (Some("blocked"), Some(p), Some(o)) => {
                let (Ok(p), Ok(o)) = (p.parse(), o.parse()) else { return };
                match value.and_then(|v| serde_json::from_slice(v).ok()) {
                    Some(b) => self.blocked.insert((p, o), b),
                    None => self.blocked.remove(&(p, o)),
                };
            }
            (Some("redriven"), Some(p), Some(o)) => {
                let (Ok(p), Ok(o)) = (p.parse(), o.parse()) else { return };
                if let Some(s) = value.and_then(|v| serde_json::from_slice(v).ok()) {
                    self.redriven.insert((p, o), s);
                }
            }
            _ => {}
        }
    }
}

/// The key of a command's record: later commands of the same key replace earlier ones when
/// the topic is compacted.
fn command_key(command: &Command) -> String {
    match command {
        Command::Skip { partition, offset } => format!("skip/{partition}/{offset}"),
        Command::Unblock { partition } | Command::Block { partition } => match partition {
            Some(p) => format!("mode/{p}"),
            None => "mode/all".to_owned(),
        },
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Creates the control topic (compacted, one partition) if it does not exist.
pub(crate) async fn provision_control(admin: &Admin, topic: &str) -> kafka_wire::Result<()> {
    let new = NewTopic::new(topic, 1, -1).config("cleanup.policy", "compact");
    match admin.create_topics_each(&[new], false).await?.remove(0).1 {
        Err(e) if e.code() != Some(ErrorCode::TOPIC_ALREADY_EXISTS) => Err(e),
        _ => Ok(()),
    }
}

/// A follower of the control topic: its state, kept up to date by a background task.
#[derive(Clone)]
pub(crate) struct ControlFollower {
    state: Arc<Mutex<ControlState>>,
    changes: watch::Receiver<u64>,
    producer: Producer,
    topic: String,
    _reader: Arc<AbortOnDrop>,
}

pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ControlFollower {
    /// Reads the control topic up to its current end (what was issued before this start),
    /// then follows it in the background.
    pub(crate) async fn start(client: &Client, config: &ConsumerConfig, topic: &str) -> kafka_wire::Result<Self> {
        let (state, consumer) = read_to_end(client, config, topic).await?;
        let state = Arc::new(Mutex::new(state));
        let (tx, changes) = watch::channel(0u64);
        let follow = state.clone();
        let reader = tokio::spawn(async move {
            loop {
                match consumer.poll(Duration::from_secs(1)).await {
                    Ok(records) if !records.is_empty() => {
                        let mut st = lock(&follow);
                        for r in &records {
                            st.apply(r);
                        }
                        drop(st);
                        tx.send_modify(|v| *v += 1);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "retry: reading the control topic failed; going on");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let producer = Producer::with_client(client.clone(), ProducerConfig::new(&config.bootstrap_servers.join(",")))?;
        Ok(Self { state, changes, producer, topic: topic.to_owned(), _reader: Arc::new(AbortOnDrop(reader)) })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, ControlState> {
        lock(&self.state)
    }

    /// Resolves at the next change of the state (not at one that happened before the call).
    pub(crate) async fn changed(&self) {
        let _ = self.changes().changed().await;
    }

    /// A receiver whose `changed()` resolves at each change of the state after this call: held
    /// across several waits, it misses none in between.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        let mut changes = self.changes.clone();
        changes.mark_unchanged();
        changes
    }

    /// Publishes that `blocked` is blocked (or, with `None`, that the record at
    /// `partition`/`offset` no longer is). Best effort: the status is for people.
    pub(crate) async fn publish_blocked(&self, partition: i32, offset: i64, blocked: Option<&Blocked>) {
        let mut record = ProducerRecord::new(&self.topic, Vec::new()).key(format!("blocked/{partition}/{offset}"));
        record.value = blocked.map(|b| serde_json::to_vec(b).unwrap_or_default().into());
        match self.producer.send(record).await {
            Ok(delivery) => {
                if let Err(e) = delivery.await {
                    tracing::debug!(error = %e, "retry: publishing a blocked record failed");
                }
            }
            Err(e) => tracing::debug!(error = %e, "retry: publishing a blocked record failed"),
        }
    }
}

/// Reads `topic` (one partition) from the start to the end it has now.
async fn read_to_end(
    client: &Client,
    config: &ConsumerConfig,
    topic: &str,
) -> kafka_wire::Result<(ControlState, Consumer)> {
    let admin = Admin::new(client.clone());
    let end = admin.list_offsets(&[(topic, 0)], OffsetSpec::Latest).await?.remove(0).offset;
    let reader_config =
        ConsumerConfig::new(&config.bootstrap_servers.join(",")).auto_offset_reset(OffsetReset::Earliest);
    let consumer = Consumer::with_client(client.clone(), reader_config)?;
    let tp = TopicPartition::new(topic, 0);
    consumer.assign([tp.clone()]);
    let mut state = ControlState::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while consumer.position(&tp).await? < end {
        if tokio::time::Instant::now() > deadline {
            return Err(kafka_wire::Error::Timeout {
                what: format!("reading {topic}"),
                after: Duration::from_secs(60),
            });
        }
        for r in consumer.poll(Duration::from_millis(500)).await? {
            state.apply(&r);
        }
    }
    Ok((state, consumer))
}

/// The operator's side: commands, and the status of a source topic's retries for a group.
pub struct RetryControl {
    client: Client,
    config: ConsumerConfig,
    source: String,
    group: String,
    producer: Producer,
}

/// The retries of a source topic for a group, as the control topic and the offsets tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryStatus {
    /// The control topic's state: blocked records, skips, block modes.
    pub control: ControlState,
    /// Records waiting per tier (end offset minus the group's committed offset, summed over
    /// partitions).
    pub waiting: Vec<(String, i64)>,
    /// Records in the dead-letter queue.
    pub dead_letters: i64,
}

impl RetryControl {
    /// A control handle for `source`'s retries by `group`.
    pub async fn connect(bootstrap: &str, source: &str, group: &str) -> kafka_wire::Result<Self> {
        let client = Client::connect(ConsumerConfig::new(bootstrap).client_config()).await?;
        Self::with_client(client, source, group)
    }

    /// [`RetryControl::connect`] on an existing client.
    pub fn with_client(client: Client, source: &str, group: &str) -> kafka_wire::Result<Self> {
        let bootstrap = client.config().bootstrap_servers.join(",");
        let config = ConsumerConfig::new(&bootstrap);
        let producer = Producer::with_client(client.clone(), ProducerConfig::new(&bootstrap))?;
        Ok(Self { client, config, source: source.to_owned(), group: group.to_owned(), producer })
    }

    /// The source topic.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Issues `command`, stamped with `by` and the time; returns once it is written.
    pub async fn issue(&self, command: Command, by: &str) -> kafka_wire::Result<Stamped> {
        let stamped = Stamped { command, by: by.to_owned(), at_ms: now_ms() };
        let topic = control_topic(&self.source, &self.group);
        provision_control(&Admin::new(self.client.clone()), &topic).await?;
        let value = serde_json::to_vec(&stamped).expect("commands serialize");
        self.producer.send(ProducerRecord::new(topic, value).key(command_key(&stamped.command))).await?.await?;
        Ok(stamped)
    }

    /// The status now: what the instances are blocked on, the commands in force, the records
    /// waiting in each tier and in the dead-letter queue.
    pub async fn status(&self, tiers: &[String], dead_letter: &str) -> kafka_wire::Result<RetryStatus> {
        let control = self.control_state().await?;
        let (waiting, dead_letters) = self.counts(tiers, dead_letter).await?;
        Ok(RetryStatus { control, waiting, dead_letters })
    }

    /// The offsets' side of [`RetryControl::status`], for a caller that follows the control
    /// topic itself (the dashboard): records waiting per tier, and in the dead-letter queue.
    pub(crate) async fn counts(
        &self,
        tiers: &[String],
        dead_letter: &str,
    ) -> kafka_wire::Result<(Vec<(String, i64)>, i64)> {
        let admin = Admin::new(self.client.clone());
        let committed: HashMap<(String, i32), i64> = admin
            .list_group_offsets(&self.group, None)
            .await?
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.offset))
            .collect();
        let mut waiting = Vec::new();
        for tier in tiers {
            let partitions = admin.describe_topics(&[tier.as_str()]).await?.remove(0).partitions.len() as i32;
            let tps: Vec<(&str, i32)> = (0..partitions).map(|p| (tier.as_str(), p)).collect();
            let ends = admin.list_offsets(&tps, OffsetSpec::Latest).await?;
            let starts = admin.list_offsets(&tps, OffsetSpec::Earliest).await?;
            let n = ends
                .iter()
                .zip(&starts)
                .map(|(e, s)| {
                    e.offset - committed.get(&(tier.clone(), e.partition)).copied().unwrap_or(s.offset).max(s.offset)
                })
                .sum();
            waiting.push((tier.clone(), n));
        }
        let partitions = admin.describe_topics(&[dead_letter]).await?.remove(0).partitions.len() as i32;
        let tps: Vec<(&str, i32)> = (0..partitions).map(|p| (dead_letter, p)).collect();
        let ends = admin.list_offsets(&tps, OffsetSpec::Latest).await?;
        let starts = admin.list_offsets(&tps, OffsetSpec::Earliest).await?;
        let dead_letters = ends.iter().zip(&starts).map(|(e, s)| e.offset - s.offset).sum();
        Ok((waiting, dead_letters))
    }

    /// What the control topic says now (read to its end).
    pub async fn control_state(&self) -> kafka_wire::Result<ControlState> {
        let topic = control_topic(&self.source, &self.group);
        provision_control(&Admin::new(self.client.clone()), &topic).await?;
        let (state, consumer) = read_to_end(&self.client, &self.config, &topic).await?;
        let _ = consumer.close().await;
        Ok(state)
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn producer(&self) -> &Producer {
        &self.producer
    }

    pub(crate) fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    pub(crate) fn control_topic(&self) -> String {
        control_topic(&self.source, &self.group)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {

    use bytes::Bytes;
    use kafka_wire::types::TimestampType;
    use kafka_wire::Headers;

    use super::*;

    fn control_record(offset: i64, key: String, value: Option<Vec<u8>>) -> ConsumerRecord {
        ConsumerRecord {
            topic: "c".into(),
            partition: 0,
            offset,
            timestamp: 0,
            timestamp_type: TimestampType::CreateTime,
            key: Some(Bytes::from(key)),
            value: value.map(Bytes::from),
            headers: Headers::default(),
            leader_epoch: 0,
        }
    }

    fn command(offset: i64, command: Command) -> ConsumerRecord {
        let key = command_key(&command);
        let stamped = Stamped { command, by: "ops".into(), at_ms: 1 };
        control_record(offset, key, Some(serde_json::to_vec(&stamped).unwrap()))
    }

    #[test]
    fn the_latest_block_or_unblock_of_the_partition_or_the_topic_decides() {
        let mut s = ControlState::default();
        assert!(s.is_blocking(0));
        s.apply(&command(0, Command::Unblock { partition: None }));
        assert!(!s.is_blocking(0) && !s.is_blocking(3));
        s.apply(&command(1, Command::Block { partition: Some(3) }));
        assert!(s.is_blocking(3) && !s.is_blocking(0));
        s.apply(&command(2, Command::Block { partition: None }));
        assert!(s.is_blocking(0));
        s.apply(&command(3, Command::Unblock { partition: Some(0) }));
        assert!(!s.is_blocking(0) && s.is_blocking(1));
    }

    #[test]
    fn skips_target_an_offset_and_blocked_records_come_and_go() {
        let mut s = ControlState::default();
        s.apply(&command(0, Command::Skip { partition: 2, offset: 41 }));
        assert_eq!(s.skip_of(2, 41).map(|x| x.by.as_str()), Some("ops"));
        assert!(s.skip_of(2, 42).is_none());
        let b = Blocked { partition: 2, offset: 41, since_ms: 5, attempts: 3, error: "down".into() };
        s.apply(&control_record(1, "blocked/2/41".into(), Some(serde_json::to_vec(&b).unwrap())));
        assert_eq!(s.blocked.get(&(2, 41)), Some(&b));
        s.apply(&control_record(2, "blocked/2/41".into(), None));
        assert!(s.blocked.is_empty());
        // Garbage is ignored.
        s.apply(&control_record(3, "skip/x/y".into(), Some(b"{".to_vec())));
        s.apply(&control_record(4, "mode/zz".into(), Some(b"{}".to_vec())));
        assert_eq!(s.skips.len(), 1);
    }
}
