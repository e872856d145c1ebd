//! What a forwarded record carries about its past, in headers: where it came from (topic,
//! partition, offset, timestamp), which consumer group failed it, how many attempts it had,
//! when it is due again, and every error it met. The record's own headers are kept; the
//! `retry.*` headers of an earlier hop are replaced, except the error history, which grows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_wire::{ConsumerRecord, Header, ProducerRecord};

/// The topic the record was first read from.
pub const ORIGINAL_TOPIC: &str = "retry.original.topic";
/// Its partition there.
pub const ORIGINAL_PARTITION: &str = "retry.original.partition";
/// Its offset there.
pub const ORIGINAL_OFFSET: &str = "retry.original.offset";
/// Its timestamp there (milliseconds since the epoch).
pub const ORIGINAL_TIMESTAMP: &str = "retry.original.timestamp";
/// The consumer group whose handler failed it.
pub const GROUP: &str = "retry.group";
/// Attempts so far, blocking and non-blocking (1 after the first failure).
pub const ATTEMPTS: &str = "retry.attempts";
/// The retry tier it was forwarded to (absent on the dead-letter queue).
pub const TIER: &str = "retry.tier";
/// When it is due again (milliseconds since the epoch).
pub const DUE: &str = "retry.due";
/// One per failed attempt, oldest first: `attempt <n> at <ms since the epoch>: <error>`.
pub const ERROR: &str = "retry.error";

/// The retry headers of a record, as read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryHeaders {
    /// The topic it was first read from.
    pub original_topic: String,
    /// Its partition there.
    pub original_partition: i32,
    /// Its offset there.
    pub original_offset: i64,
    /// Its timestamp there.
    pub original_timestamp: i64,
    /// The group that failed it.
    pub group: String,
    /// Attempts so far.
    pub attempts: u32,
    /// The tier it was forwarded to, if any.
    pub tier: Option<usize>,
    /// When it is due again, if it is in a tier.
    pub due: Option<SystemTime>,
    /// The errors it met, oldest first.
    pub errors: Vec<String>,
}

impl RetryHeaders {
    /// The retry headers of `record`, if it was forwarded by this crate.
    pub fn of(record: &ConsumerRecord) -> Option<Self> {
        let mut h = RetryHeaders::default();
        let mut seen = false;
        for header in &record.headers {
            let value = header.value.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            match &*header.key {
                ORIGINAL_TOPIC => {
                    h.original_topic = value.into_owned();
                    seen = true;
                }
                ORIGINAL_PARTITION => h.original_partition = value.parse().unwrap_or(-1),
                ORIGINAL_OFFSET => h.original_offset = value.parse().unwrap_or(-1),
                ORIGINAL_TIMESTAMP => h.original_timestamp = value.parse().unwrap_or(-1),
                GROUP => h.group = value.into_owned(),
                ATTEMPTS => h.attempts = value.parse().unwrap_or(0),
                TIER => h.tier = value.parse().ok(),
                DUE => h.due = value.parse().ok().map(|ms: u64| UNIX_EPOCH + Duration::from_millis(ms)),
                ERROR => h.errors.push(value.into_owned()),
                _ => {}
            }
        }
        seen.then_some(h)
    }

    /// The headers of a record that came straight from the source topic: where it is now.
    pub fn first(record: &ConsumerRecord, group: &str) -> Self {
        RetryHeaders {
            original_topic: record.topic.to_string(),
            original_partition: record.partition,
            original_offset: record.offset,
            original_timestamp: record.timestamp,
            group: group.to_owned(),
            ..Default::default()
        }
    }

    /// Records a failed attempt at `now`.
    pub fn failed(&mut self, error: &str, now: SystemTime) {
        self.attempts += 1;
        self.errors.push(format!("attempt {} at {}: {error}", self.attempts, millis(now)));
    }

    /// `record` re-addressed to `topic`, keeping its key, value and own headers, with these
    /// retry headers in place of any earlier ones.
    pub fn forward(&self, record: &ConsumerRecord, topic: &str) -> ProducerRecord {
        let mut out = ProducerRecord {
            topic: topic.to_owned(),
            key: record.key.clone(),
            value: record.value.clone(),
            timestamp: Some(record.timestamp),
            headers: record.headers.iter().filter(|h| !h.key.starts_with("retry.")).collect(),
            ..Default::default()
        };
        let mut add = |key: &str, value: String| out.headers.push(Header::new(key, Some(Bytes::from(value))));
        add(ORIGINAL_TOPIC, self.original_topic.clone());
        add(ORIGINAL_PARTITION, self.original_partition.to_string());
        add(ORIGINAL_OFFSET, self.original_offset.to_string());
        add(ORIGINAL_TIMESTAMP, self.original_timestamp.to_string());
        add(GROUP, self.group.clone());
        add(ATTEMPTS, self.attempts.to_string());
        if let Some(tier) = self.tier {
            add(TIER, tier.to_string());
        }
        if let Some(due) = self.due {
            // Rounded up: a record is never handled before its due time.
            add(DUE, millis(due + Duration::from_nanos(999_999)).to_string());
        }
        for e in &self.errors {
            add(ERROR, e.clone());
        }
        out
    }
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

#[cfg(test)]
mod tests {

    use kafka_wire::types::TimestampType;
    use kafka_wire::Headers;

    use super::*;

    fn consumed(from: ProducerRecord, offset: i64) -> ConsumerRecord {
        ConsumerRecord {
            topic: from.topic.as_str().into(),
            partition: 0,
            offset,
            timestamp: from.timestamp.unwrap_or(0),
            timestamp_type: TimestampType::CreateTime,
            key: from.key,
            value: from.value,
            headers: Headers::from(from.headers),
            leader_epoch: 0,
        }
    }

    #[test]
    fn headers_survive_two_hops_and_the_error_history_grows() {
        let source = consumed(
            ProducerRecord::new("orders", "v").key("k").header("trace", "abc").timestamp(1_700_000_000_000),
            41,
        );
        assert_eq!(RetryHeaders::of(&source), None);
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut h = RetryHeaders::first(&source, "billing");
        h.failed("provider down", now);
        h.tier = Some(0);
        h.due = Some(now + Duration::from_secs(5));
        let hop1 = consumed(h.forward(&source, "orders-billing-retry-0"), 7);
        let mut back = RetryHeaders::of(&hop1).unwrap();
        assert_eq!(back, h);
        back.failed("still down", now);
        back.tier = None;
        back.due = None;
        let dlq = consumed(back.forward(&hop1, "orders-billing-dlq"), 0);
        let last = RetryHeaders::of(&dlq).unwrap();
        assert_eq!(last.original_topic, "orders");
        assert_eq!((last.original_partition, last.original_offset), (0, 41));
        assert_eq!(last.original_timestamp, 1_700_000_000_000);
        assert_eq!(last.attempts, 2);
        assert_eq!(last.errors.len(), 2);
        assert!(last.errors[0].contains("provider down") && last.errors[1].contains("attempt 2"));
        assert_eq!((last.tier, last.due), (None, None));
        assert_eq!(dlq.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(dlq.headers.last("trace").and_then(|h| h.value), Some(Bytes::from("abc")));
        assert_eq!(
            dlq.headers.iter().filter(|h| &*h.key == ORIGINAL_TOPIC).count(),
            1,
            "an earlier hop's header stayed"
        );
    }
}
