//! One module per command group, and what several of them share.

pub mod cluster;
pub mod completions;
pub mod consume;
pub mod groups;
pub mod kv;
pub mod offsets;
pub mod produce;
pub mod retry;
pub mod topics;
pub mod txn;

use std::time::{Duration, Instant};

use kafka_wire::client::{Admin, Client, TopicMetadata};
use kafka_wire::ErrorCode;

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
pub async fn topic_metadata(client: &Client, topics: &[String], wait: Duration) -> Result<Vec<TopicMetadata>> {
    let admin = Admin::new(client.clone());
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(50);
    loop {
        let mut out = Vec::new();
        let mut missing = None;
        for (topic, result) in admin.describe_topics_each(topics).await? {
            match result {
                Ok(t) => out.push(t),
                Err(e)
                    if e.code() == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
                        || e.code() == Some(ErrorCode::LEADER_NOT_AVAILABLE) =>
                {
                    missing = Some((topic, e));
                    break;
                }
                Err(e) => return Err(topic_error(&topic, &e)),
            }
        }
        match missing {
            None => return Ok(out),
            Some(_) if Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            Some((topic, e)) if e.code() == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) => {
                return Err(runtime(format!("topic '{topic}' does not exist")));
            }
            Some((topic, e)) => return Err(topic_error(&topic, &e)),
        }
    }
}

/// A topic's error in the metadata answer, as a runtime error naming the topic.
fn topic_error(topic: &str, e: &kafka_wire::Error) -> crate::error::Failure {
    match e.code() {
        Some(code) => runtime(format!("topic '{topic}': broker error {code}")),
        None => runtime(format!("topic '{topic}': {}", crate::error::describe(e))),
    }
}

/// The partition ids of `topics`, in order (see [`topic_metadata`]).
pub async fn topic_partitions(client: &Client, topics: &[String], wait: Duration) -> Result<Vec<(String, Vec<i32>)>> {
    let metadata = topic_metadata(client, topics, wait).await?;
    Ok(topics
        .iter()
        .zip(metadata)
        .map(|(topic, t)| (topic.clone(), t.partitions.iter().map(|p| p.partition).collect()))
        .collect())
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
