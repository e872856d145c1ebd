//! One module per command group, and what several of them share.

pub mod cluster;
pub mod completions;
pub mod consume;
pub mod groups;
pub mod offsets;
pub mod produce;
pub mod topics;
pub mod txn;

use std::time::{Duration, Instant};

use kafka_wire::client::Client;
use kafka_wire::codec::messages::metadata::MetadataResponseTopic;
use kafka_wire::codec::ErrorCode;

use crate::error::{runtime, usage, Result};

/// `key=value` (the value may contain `=`).
pub fn parse_kv(flag: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(usage(format!("{flag} {s}: expected KEY=VALUE"))),
    }
}

/// How long a topic that the metadata does not show (yet) is waited for, at most: a topic just
/// created reaches the brokers of a cluster one after the other, so one broker may not know it
/// for a moment. Commands with a shorter timeout (`max.block.ms`, `default.api.timeout.ms`) wait
/// that long instead.
pub const TOPIC_WAIT: Duration = Duration::from_secs(5);

/// The metadata of `topics`, in order. A topic that the answer says does not exist, or has no
/// leader yet, is asked for again (with a growing pause) for up to `wait`; then it is a runtime
/// error naming it.
pub async fn topic_metadata(client: &Client, topics: &[String], wait: Duration) -> Result<Vec<MetadataResponseTopic>> {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(50);
    loop {
        let metadata = client.metadata(Some(&names)).await?;
        let mut out = Vec::new();
        let mut missing = None;
        for topic in topics {
            let t = metadata
                .topics
                .iter()
                .find(|t| t.name.as_deref() == Some(topic.as_str()))
                .ok_or_else(|| runtime(format!("topic '{topic}': not in the broker's metadata answer")))?;
            if t.error_code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION || t.error_code == ErrorCode::LEADER_NOT_AVAILABLE
            {
                missing = Some((topic, t.error_code));
                break;
            }
            if t.error_code.is_err() {
                return Err(runtime(format!("topic '{topic}': broker error {}", t.error_code)));
            }
            out.push(t.clone());
        }
        match missing {
            None => return Ok(out),
            Some(_) if Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Some((topic, code)) if code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => {
                return Err(runtime(format!("topic '{topic}' does not exist")));
            }
            Some((topic, code)) => return Err(runtime(format!("topic '{topic}': broker error {code}"))),
        }
    }
}

/// The partition ids of `topics`, in order (see [`topic_metadata`]).
pub async fn topic_partitions(client: &Client, topics: &[String], wait: Duration) -> Result<Vec<(String, Vec<i32>)>> {
    let metadata = topic_metadata(client, topics, wait).await?;
    Ok(topics
        .iter()
        .zip(metadata)
        .map(|(topic, t)| {
            let mut partitions: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
            partitions.sort_unstable();
            (topic.clone(), partitions)
        })
        .collect())
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
