//! Redrive: dead letters written again to their original topic (as new records) or to the first
//! retry tier (due at once), chosen by key, time range or error text, with a dry run that only
//! lists them. Each dead letter is redriven once: a marker on the control topic records it, so
//! a second redrive does not duplicate it.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kafka_wire::client::{Admin, OffsetReset, OffsetSpec};
use kafka_wire::{Consumer, ConsumerConfig, ConsumerRecord, ProducerRecord, TopicPartition};

use crate::control::{now_ms, RedriveMark, RetryControl};
use crate::headers::RetryHeaders;

/// Which dead letters to redrive; every field that is set must match.
#[derive(Clone, Debug, Default)]
pub struct RedriveFilter {
    /// The record's key.
    pub key: Option<Bytes>,
    /// Records whose timestamp (the original record's) is at or after this (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Records whose timestamp is before this.
    pub until_ms: Option<i64>,
    /// Records one of whose errors contains this text.
    pub error_contains: Option<String>,
}

impl RedriveFilter {
    fn matches(&self, record: &ConsumerRecord, headers: &RetryHeaders) -> bool {
        self.key.as_ref().is_none_or(|k| record.key.as_ref() == Some(k))
            && self.from_ms.is_none_or(|t| record.timestamp >= t)
            && self.until_ms.is_none_or(|t| record.timestamp < t)
            && self.error_contains.as_ref().is_none_or(|text| headers.errors.iter().any(|e| e.contains(text.as_str())))
    }
}

/// Where redriven records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedriveTarget {
    /// The topic they first came from, as new records (without retry headers).
    Original,
    /// The first retry tier, due at once, keeping their history.
    FirstTier(String),
}

/// A dead letter picked by a redrive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redriven {
    /// Its partition and offset in the dead-letter queue.
    pub dead_letter: (i32, i64),
    /// Where it first came from: topic, partition, offset.
    pub original: (String, i32, i64),
    /// Its key.
    pub key: Option<Bytes>,
    /// Where it was (or, in a dry run, would be) written.
    pub to: String,
}

impl RetryControl {
    /// Every record of the dead-letter queue `dead_letter` now, in partition and offset order,
    /// with its retry headers (records without them are left out).
    pub async fn dead_letters(&self, dead_letter: &str) -> kafka_wire::Result<Vec<(ConsumerRecord, RetryHeaders)>> {
        let admin = Admin::new(self.client().clone());
        let partitions = admin.describe_topics(&[dead_letter]).await?.remove(0).partitions.len() as i32;
        let tps: Vec<(&str, i32)> = (0..partitions).map(|p| (dead_letter, p)).collect();
        let ends = admin.list_offsets(&tps, OffsetSpec::Latest).await?;
        let config =
            ConsumerConfig::new(&self.config().bootstrap_servers.join(",")).auto_offset_reset(OffsetReset::Earliest);
        let reader = Consumer::with_client(self.client().clone(), config)?;
        let end_of = |p: i32| ends.iter().find(|e| e.partition == p).map_or(0, |e| e.offset);
        let wanted: Vec<TopicPartition> =
            ends.iter().filter(|e| e.offset > 0).map(|e| TopicPartition::new(dead_letter, e.partition)).collect();
        reader.assign(wanted.clone());
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for tp in &wanted {
            while reader.position(tp).await? < end_of(tp.partition) {
                if tokio::time::Instant::now() > deadline {
                    let _ = reader.close().await;
                    return Err(kafka_wire::Error::Timeout {
                        what: format!("reading {dead_letter}"),
                        after: Duration::from_secs(60),
                    });
                }
                for r in reader.poll(Duration::from_millis(500)).await? {
                    if r.offset < end_of(r.partition) {
                        if let Some(h) = RetryHeaders::of(&r) {
                            out.push((r, h));
                        }
                    }
                }
            }
        }
        let _ = reader.close().await;
        out.sort_by_key(|(r, _)| (r.partition, r.offset));
        Ok(out)
    }

    /// Redrives the dead letters of `dead_letter` that match `filter` and were not redriven
    /// before, to `target`; with `dry_run`, only lists them. Returns them in queue order.
    pub async fn redrive(
        &self,
        dead_letter: &str,
        filter: &RedriveFilter,
        target: &RedriveTarget,
        dry_run: bool,
        by: &str,
    ) -> kafka_wire::Result<Vec<Redriven>> {
        let control = self.control_topic();
        let done = self.control_state().await?;
        let picked: Vec<(ConsumerRecord, RetryHeaders)> = self
            .dead_letters(dead_letter)
            .await?
            .into_iter()
            .filter(|(r, h)| !done.redriven.contains_key(&(r.partition, r.offset)) && filter.matches(r, h))
            .collect();
        let mut out = Vec::new();
        for (record, mut headers) in picked {
            let (to, forward) = match target {
                RedriveTarget::Original => {
                    let mut fresh = ProducerRecord {
                        topic: headers.original_topic.clone(),
                        key: record.key.clone(),
                        value: record.value.clone(),
                        headers: record.headers.iter().filter(|h| !h.key.starts_with("retry.")).collect(),
                        ..Default::default()
                    };
                    fresh.timestamp = Some(record.timestamp);
                    (headers.original_topic.clone(), fresh)
                }
                RedriveTarget::FirstTier(tier) => {
                    headers.tier = Some(0);
                    headers.due = Some(SystemTime::now());
                    (tier.clone(), headers.forward(&record, tier))
                }
            };
            if !dry_run {
                self.producer().send(forward).await?.await?;
                let mark = RedriveMark { by: by.to_owned(), at_ms: now_ms(), to: to.clone() };
                let marker = ProducerRecord::new(control.as_str(), serde_json::to_vec(&mark).expect("serializes"))
                    .key(format!("redriven/{}/{}", record.partition, record.offset));
                self.producer().send(marker).await?.await?;
            }
            out.push(Redriven {
                dead_letter: (record.partition, record.offset),
                original: (headers.original_topic.clone(), headers.original_partition, headers.original_offset),
                key: record.key.clone(),
                to,
            });
        }
        Ok(out)
    }
}
