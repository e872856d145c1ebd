//! `kw offsets TOPIC`: the earliest, latest or time-based offset of each partition, printed as
//! `topic:partition:offset` like `kafka-get-offsets.sh`.

use clap::{Args, ValueEnum};
use kafka_wire::client::OffsetSpec;

use crate::conn::ConnArgs;
use crate::error::{Context, Result};
use crate::output::println;
use crate::Top;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Isolation {
    #[value(name = "read_committed")]
    ReadCommitted,
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
}

#[derive(Args, Debug)]
#[command(after_help = "\
--time: earliest (log start), latest (high watermark; the last stable offset with
--isolation read_committed), max-timestamp (the record with the highest timestamp), or MS:
the first offset whose timestamp is at or after MS milliseconds since the epoch (-1 if none).

Examples:
  kw offsets events
  kw offsets events --time earliest -p 0
  kw offsets events --time 1700000000000")]
pub struct OffsetsArgs {
    /// Topic
    pub topic: String,
    /// earliest, latest, max-timestamp, or a timestamp in ms
    #[arg(short = 't', long, default_value = "latest", value_parser = parse_time, allow_hyphen_values = true)]
    pub time: OffsetSpec,
    /// Partition, repeatable (default: all)
    #[arg(short = 'p', long = "partition", value_name = "P")]
    pub partitions: Vec<i32>,
    /// Isolation of "latest"
    #[arg(long, value_enum, default_value_t = Isolation::ReadUncommitted)]
    pub isolation: Isolation,
    #[command(flatten)]
    pub conn: ConnArgs,
}

fn parse_time(s: &str) -> Result<OffsetSpec, String> {
    match s {
        "earliest" | "beginning" | "-2" => Ok(OffsetSpec::Earliest),
        "latest" | "end" | "-1" => Ok(OffsetSpec::Latest),
        "max-timestamp" | "-3" => Ok(OffsetSpec::MaxTimestamp),
        _ => s
            .parse::<i64>()
            .ok()
            .filter(|ms| *ms >= 0)
            .map(OffsetSpec::Timestamp)
            .ok_or_else(|| format!("{s}: expected earliest, latest, max-timestamp or a timestamp in ms")),
    }
}

pub async fn run(args: OffsetsArgs, top: &Top) -> Result<()> {
    let admin = top.settings(&args.conn)?.admin().await?;
    let wait = super::TOPIC_WAIT.min(admin.timeout());
    let topics = super::topic_partitions(admin.client(), std::slice::from_ref(&args.topic), wait).await?;
    let all = &topics[0].1;
    let partitions: Vec<i32> = if args.partitions.is_empty() {
        all.clone()
    } else {
        for p in &args.partitions {
            if !all.contains(p) {
                return Err(crate::error::runtime(format!(
                    "partition {p} does not exist in topic '{}' ({} partitions)",
                    args.topic,
                    all.len()
                )));
            }
        }
        args.partitions.clone()
    };
    let pairs: Vec<(&str, i32)> = partitions.iter().map(|p| (args.topic.as_str(), *p)).collect();
    let listed = admin
        .list_offsets_isolated(&pairs, args.time, args.isolation == Isolation::ReadCommitted)
        .await
        .context(|| format!("cannot list offsets of topic '{}'", args.topic))?;
    let mut text = String::new();
    for o in listed {
        text.push_str(&format!("{}:{}:{}\n", o.topic, o.partition, o.offset));
    }
    println(text.trim_end())
}
