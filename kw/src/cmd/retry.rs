//! `kw retry status|skip|unblock|block` and `kw dlq list|show|redrive`: the operator's view of
//! a topic's retries for a consumer group (the `retry` crate's control topic, tiers and
//! dead-letter queue).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use kafka_wire::client::Client;
use retry::{Command, RedriveFilter, RedriveTarget, RetryControl, TopicNames};

use crate::conn::{connect_error, ConnArgs};
use crate::error::{usage, Result};
use crate::output::{print_table, println};
use crate::Top;

#[derive(Subcommand, Debug)]
pub enum RetryCommand {
    /// Blocked records (with the stuck record and since when), records waiting per tier,
    /// dead letters, and the skip and block commands in force
    #[command(after_help = "Example:\n  kw retry status renewals -G billing")]
    Status(Target),
    /// Send the blocked record at PARTITION:OFFSET to the dead-letter queue; its partition moves on
    #[command(after_help = "Example:\n  kw retry skip renewals -G billing 3:1042")]
    Skip(SkipArgs),
    /// Stop blocking on failures (of one partition, or the whole topic): they go to the tiers
    #[command(
        after_help = "Examples:\n  kw retry unblock renewals -G billing\n  kw retry unblock renewals -G billing -p 3"
    )]
    Unblock(ModeArgs),
    /// Block on failures again (of one partition, or the whole topic)
    #[command(after_help = "Example:\n  kw retry block renewals -G billing")]
    Block(ModeArgs),
}

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Dead letters, one per line: partition, offset, key, where it came from, attempts, last error
    #[command(after_help = "Example:\n  kw dlq list renewals -G billing")]
    List(Target),
    /// One dead letter with its headers, its whole error history and its value
    #[command(after_help = "Example:\n  kw dlq show renewals -G billing 0:17")]
    Show(ShowArgs),
    /// Write dead letters again, to their original topic (or to the first tier), once each
    #[command(after_help = "Without filters every dead letter not redriven before is redriven.\n\n\
Examples:\n  kw dlq redrive renewals -G billing --dry-run\n  \
kw dlq redrive renewals -G billing --error 'provider down' --from 1700000000000")]
    Redrive(RedriveArgs),
}

#[derive(Args, Debug)]
pub struct Target {
    /// The source topic
    pub topic: String,
    /// The consumer group whose retries these are
    #[arg(short = 'G', long = "group")]
    pub group: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct SkipArgs {
    #[command(flatten)]
    pub target: Target,
    /// The blocked record
    #[arg(value_name = "PARTITION:OFFSET")]
    pub record: String,
    /// Who issues the command (default: $USER)
    #[arg(long)]
    pub by: Option<String>,
}

#[derive(Args, Debug)]
pub struct ModeArgs {
    #[command(flatten)]
    pub target: Target,
    /// One partition (default: the whole topic)
    #[arg(short = 'p', long)]
    pub partition: Option<i32>,
    /// Who issues the command (default: $USER)
    #[arg(long)]
    pub by: Option<String>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub target: Target,
    /// The dead letter, by its partition and offset in the queue
    #[arg(value_name = "PARTITION:OFFSET")]
    pub record: String,
}

#[derive(Args, Debug)]
pub struct RedriveArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only dead letters with this key
    #[arg(long)]
    pub key: Option<String>,
    /// Only records with a timestamp at or after MS (ms since the epoch)
    #[arg(long, value_name = "MS")]
    pub from: Option<i64>,
    /// Only records with a timestamp before MS
    #[arg(long, value_name = "MS")]
    pub until: Option<i64>,
    /// Only records one of whose errors contains TEXT
    #[arg(long, value_name = "TEXT")]
    pub error: Option<String>,
    /// To the first retry tier (keeping their history) instead of the original topic
    #[arg(long)]
    pub to_tier: bool,
    /// Only list what would be redriven
    #[arg(long)]
    pub dry_run: bool,
    /// Who redrives (default: $USER)
    #[arg(long)]
    pub by: Option<String>,
}

pub async fn run_retry(command: RetryCommand, top: &Top) -> Result<()> {
    match command {
        RetryCommand::Status(t) => status(t, top).await,
        RetryCommand::Skip(a) => {
            let (partition, offset) = partition_offset(&a.record)?;
            issue(&a.target, top, Command::Skip { partition, offset }, a.by).await
        }
        RetryCommand::Unblock(a) => issue(&a.target, top, Command::Unblock { partition: a.partition }, a.by).await,
        RetryCommand::Block(a) => issue(&a.target, top, Command::Block { partition: a.partition }, a.by).await,
    }
}

pub async fn run_dlq(command: DlqCommand, top: &Top) -> Result<()> {
    match command {
        DlqCommand::List(t) => list(t, top).await,
        DlqCommand::Show(a) => show(a, top).await,
        DlqCommand::Redrive(a) => redrive(a, top).await,
    }
}

/// A control handle and the names of the target's topics (tiers found by name).
async fn control(target: &Target, top: &Top) -> Result<(RetryControl, TopicNames)> {
    let (config, _) = top.settings(&target.conn)?.client()?;
    let client = Client::connect(config).await.map_err(connect_error)?;
    let admin = kafka_wire::client::Admin::new(client.clone());
    let prefix = format!("{}-{}-retry-", target.topic, target.group);
    let tiers = admin
        .list_topics()
        .await?
        .into_iter()
        .filter_map(|t| t.name.strip_prefix(&prefix).and_then(|n| n.parse::<usize>().ok()))
        .max()
        .map_or(0, |n| n + 1);
    let names = TopicNames::new(&target.topic, &target.group, tiers);
    Ok((RetryControl::with_client(client, &target.topic, &target.group)?, names))
}

fn who(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "kw".into())
}

fn partition_offset(s: &str) -> Result<(i32, i64)> {
    let parsed = s.split_once(':').and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)));
    parsed.ok_or_else(|| usage(format!("{s}: expected PARTITION:OFFSET, e.g. 3:1042")))
}

fn time(ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    let ago = SystemTime::now().duration_since(at).unwrap_or_default().as_secs();
    format!("{ms} ({ago} s ago)")
}

async fn issue(target: &Target, top: &Top, command: Command, by: Option<String>) -> Result<()> {
    let (control, _) = control(target, top).await?;
    let stamped = control.issue(command, &who(by)).await?;
    println(format!("{:?} issued by {} at {}", stamped.command, stamped.by, stamped.at_ms))
}

async fn status(target: Target, top: &Top) -> Result<()> {
    let (control, names) = control(&target, top).await?;
    let status = control.status(&names.tiers, &names.dead_letter).await?;
    println(format!("{} for group {}", target.topic, target.group))?;
    if status.control.blocked.is_empty() {
        println("blocked: none")?;
    } else {
        let rows: Vec<Vec<String>> = status
            .control
            .blocked
            .values()
            .map(|b| {
                vec![
                    b.partition.to_string(),
                    b.offset.to_string(),
                    time(b.since_ms),
                    b.attempts.to_string(),
                    b.error.clone(),
                ]
            })
            .collect();
        print_table(&["PARTITION", "OFFSET", "BLOCKED-SINCE", "ATTEMPTS", "LAST-ERROR"], &rows)?;
    }
    for (tier, waiting) in &status.waiting {
        println(format!("waiting in {tier}: {waiting}"))?;
    }
    println(format!("dead letters in {}: {}", names.dead_letter, status.dead_letters))?;
    for (scope, (_, stamped)) in &status.control.modes {
        let scope = scope.map_or("all partitions".to_owned(), |p| format!("partition {p}"));
        println(format!("{scope}: {:?} by {} at {}", stamped.command, stamped.by, time(stamped.at_ms)))?;
    }
    for ((p, o), stamped) in &status.control.skips {
        println(format!("skip {p}:{o} by {} at {}", stamped.by, time(stamped.at_ms)))?;
    }
    Ok(())
}

async fn list(target: Target, top: &Top) -> Result<()> {
    let (control, names) = control(&target, top).await?;
    let letters = control.dead_letters(&names.dead_letter).await?;
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|(r, h)| {
            vec![
                r.partition.to_string(),
                r.offset.to_string(),
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                format!("{}:{}:{}", h.original_topic, h.original_partition, h.original_offset),
                h.attempts.to_string(),
                h.errors.last().cloned().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(&["PARTITION", "OFFSET", "KEY", "FROM", "ATTEMPTS", "LAST-ERROR"], &rows)
}

async fn show(args: ShowArgs, top: &Top) -> Result<()> {
    let (partition, offset) = partition_offset(&args.record)?;
    let (control, names) = control(&args.target, top).await?;
    let letters = control.dead_letters(&names.dead_letter).await?;
    let Some((r, h)) = letters.iter().find(|(r, _)| r.partition == partition && r.offset == offset) else {
        return Err(usage(format!("{}: no dead letter at {partition}:{offset}", names.dead_letter)));
    };
    println(format!("dead letter {partition}:{offset} of {}", names.dead_letter))?;
    println(format!(
        "from      {}:{}:{} (timestamp {})",
        h.original_topic, h.original_partition, h.original_offset, h.original_timestamp
    ))?;
    println(format!("group     {}", h.group))?;
    println(format!("key       {}", String::from_utf8_lossy(r.key.as_deref().unwrap_or_default())))?;
    println(format!("attempts  {}", h.attempts))?;
    for e in &h.errors {
        println(format!("error     {e}"))?;
    }
    for header in &r.headers {
        if !header.key.starts_with("retry.") {
            println(format!(
                "header    {}={}",
                header.key,
                String::from_utf8_lossy(header.value.as_deref().unwrap_or_default())
            ))?;
        }
    }
    println(format!("value     {}", String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())))
}

async fn redrive(args: RedriveArgs, top: &Top) -> Result<()> {
    let (control, names) = control(&args.target, top).await?;
    let target = if args.to_tier {
        let Some(first) = names.tiers.first() else {
            return Err(usage(format!("{} has no retry tier for group {}", args.target.topic, args.target.group)));
        };
        RedriveTarget::FirstTier(first.clone())
    } else {
        RedriveTarget::Original
    };
    let filter = RedriveFilter {
        key: args.key.map(Into::into),
        from_ms: args.from,
        until_ms: args.until,
        error_contains: args.error,
    };
    let done = control.redrive(&names.dead_letter, &filter, &target, args.dry_run, &who(args.by)).await?;
    let verb = if args.dry_run { "would redrive" } else { "redrove" };
    for r in &done {
        println(format!(
            "{verb} {}:{} ({}:{}:{}) to {}",
            r.dead_letter.0, r.dead_letter.1, r.original.0, r.original.1, r.original.2, r.to
        ))?;
    }
    println(format!("{verb} {} dead letter(s)", done.len()))
}
