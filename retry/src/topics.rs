//! Retry and dead-letter topics: their names, and their creation or validation at start.
//!
//! Unlike Greyhound's defaults (one partition, replication 1, one day of retention), a retry
//! topic gets the source topic's partition count (so retries do not funnel through one
//! partition), the cluster's default replication factor, and a retention that outlasts its
//! delay with room for an outage. The dead-letter queue keeps its records for 30 days.

use std::time::Duration;

use kafka_wire::client::{Admin, ConfigResource, NewTopic};
use kafka_wire::{Error, ErrorCode};

/// The names of a source topic's retry tiers and dead-letter queue for one consumer group:
/// `<topic>-<group>-retry-<n>` and `<topic>-<group>-dlq` by default (the group is in the name,
/// so groups reading the same topic keep their retries apart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicNames {
    /// The source topic.
    pub source: String,
    /// One per tier.
    pub tiers: Vec<String>,
    /// The dead-letter queue.
    pub dead_letter: String,
}

impl TopicNames {
    /// The default names for `source`, `group` and `tiers` tiers.
    pub fn new(source: &str, group: &str, tiers: usize) -> Self {
        Self {
            source: source.to_owned(),
            tiers: (0..tiers).map(|n| format!("{source}-{group}-retry-{n}")).collect(),
            dead_letter: format!("{source}-{group}-dlq"),
        }
    }

    /// The tier a topic is, if it is one of these tiers.
    pub fn tier_of(&self, topic: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t == topic)
    }
}

/// How long the dead-letter queue keeps records.
pub const DEAD_LETTER_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The retention a tier of `delay` gets: its delay plus a week, so that records outlast the
/// wait and an outage of the consumers.
pub fn tier_retention(delay: Duration) -> Duration {
    delay + Duration::from_secs(7 * 24 * 3600)
}

/// Creates the tiers and the dead-letter queue that do not exist, with the source topic's
/// partition count and the cluster's default replication factor; checks those that do: a tier
/// or queue with fewer partitions than the source, or a tier whose retention is not longer than
/// its delay, is an error that names it.
pub async fn provision(admin: &Admin, names: &TopicNames, delays: &[Duration]) -> kafka_wire::Result<()> {
    let source = admin.describe_topics(&[names.source.as_str()]).await?.remove(0);
    let partitions = source.partitions.len() as i32;
    // (name, retention to create it with, shortest retention accepted)
    let wanted: Vec<(String, Duration, Duration)> = names
        .tiers
        .iter()
        .zip(delays)
        .map(|(t, d)| (t.clone(), tier_retention(*d), *d))
        .chain([(names.dead_letter.clone(), DEAD_LETTER_RETENTION, Duration::ZERO)])
        .collect();
    let new: Vec<NewTopic> = wanted
        .iter()
        .map(|(name, retention, _)| {
            NewTopic::new(name.as_str(), partitions, -1).config("retention.ms", retention.as_millis().to_string())
        })
        .collect();
    for (name, created) in admin.create_topics_each(&new, false).await? {
        match created {
            Ok(_) => tracing::info!(topic = %name, partitions, "retry: topic created"),
            Err(e) if e.code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => {}
            Err(e) => return Err(e),
        }
    }
    let existing = admin.describe_topics(&wanted.iter().map(|(n, ..)| n.as_str()).collect::<Vec<_>>()).await?;
    let configs = admin
        .describe_configs(&wanted.iter().map(|(n, ..)| ConfigResource::topic(n.as_str())).collect::<Vec<_>>())
        .await?;
    for ((name, _, shortest), (topic, config)) in wanted.iter().zip(existing.iter().zip(&configs)) {
        if (topic.partitions.len() as i32) < partitions {
            let reason =
                format!("{} partitions, fewer than the {partitions} of {}", topic.partitions.len(), names.source);
            return Err(mismatch(name, reason));
        }
        let kept = config.get("retention.ms").and_then(|e| e.value.as_deref()).and_then(|v| v.parse::<i64>().ok());
        // -1 keeps records for ever.
        if let Some(ms) = kept.filter(|ms| *ms >= 0 && (*ms as u128) <= shortest.as_millis() && !shortest.is_zero()) {
            let reason =
                format!("retention.ms {ms} is not longer than the tier's delay of {} ms", shortest.as_millis());
            return Err(mismatch(name, reason));
        }
    }
    Ok(())
}

fn mismatch(topic: &str, reason: String) -> Error {
    Error::Config { property: format!("retry topic {topic}"), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_topic_the_group_and_the_tier() {
        let n = TopicNames::new("renewals", "billing", 2);
        assert_eq!(n.tiers, ["renewals-billing-retry-0", "renewals-billing-retry-1"]);
        assert_eq!(n.dead_letter, "renewals-billing-dlq");
        assert_eq!(n.tier_of("renewals-billing-retry-1"), Some(1));
        assert_eq!(n.tier_of("renewals"), None);
    }
}
