//! One module per command group, and what several of them share.

pub mod cluster;
pub mod completions;
pub mod consume;
pub mod groups;
pub mod offsets;
pub mod produce;
pub mod topics;
pub mod txn;

use kafka_wire::client::Client;
use kafka_wire::codec::ErrorCode;

use crate::error::{runtime, usage, Result};

/// `key=value` (the value may contain `=`).
pub fn parse_kv(flag: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(usage(format!("{flag} {s}: expected KEY=VALUE"))),
    }
}

/// The partition ids of `topics`, in order, from one Metadata request; a topic that does not
/// exist is a runtime error naming it.
pub async fn topic_partitions(client: &Client, topics: &[String]) -> Result<Vec<(String, Vec<i32>)>> {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let metadata = client.metadata(Some(&names)).await?;
    let mut out = Vec::new();
    for topic in topics {
        let t = metadata
            .topics
            .iter()
            .find(|t| t.name.as_deref() == Some(topic.as_str()))
            .ok_or_else(|| runtime(format!("topic '{topic}': not in the broker's metadata answer")))?;
        if t.error_code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION {
            return Err(runtime(format!("topic '{topic}' does not exist")));
        }
        if t.error_code.is_err() {
            return Err(runtime(format!("topic '{topic}': broker error {}", t.error_code)));
        }
        let mut partitions: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
        partitions.sort_unstable();
        out.push((topic.clone(), partitions));
    }
    Ok(out)
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
