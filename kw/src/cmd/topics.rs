//! `kw topics list|describe|create|delete|alter-config`.

use clap::{Args, Subcommand};
use kafka_wire::client::{AlterConfigOp, ConfigResource, ConfigSource, NewTopic};
use kafka_wire::ErrorCode;

use crate::conn::{ConnArgs, ConnArgsCommandConfig};
use crate::error::{runtime, usage, Context, Result};
use crate::output::{print_table, println};
use crate::Top;

#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// List topics, one per line
    #[command(after_help = "Examples:\n  kw topics list\n  kw topics list --long --internal")]
    List(ListArgs),
    /// Partitions, leaders, replicas and non-default configs of topics
    #[command(after_help = "Example:\n  kw topics describe events")]
    Describe(DescribeArgs),
    /// Create a topic
    #[command(
        after_help = "Examples:\n  kw topics create events --partitions 6 --replication-factor 3\n  kw topics create compacted --config cleanup.policy=compact --config retention.ms=-1\n\nClient properties come from -X and -F/--command-config here (--config sets topic configs, as in kafka-topics.sh)."
    )]
    Create(CreateArgs),
    /// Delete topics
    #[command(after_help = "Example:\n  kw topics delete events old-events")]
    Delete(DeleteArgs),
    /// Set or remove topic configs
    #[command(
        name = "alter-config",
        after_help = "Example:\n  kw topics alter-config events --set retention.ms=86400000 --delete cleanup.policy"
    )]
    AlterConfig(AlterConfigArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Also show partition count and replication factor
    #[arg(short = 'l', long)]
    pub long: bool,
    /// Include internal topics (__consumer_offsets, ...)
    #[arg(long)]
    pub internal: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Topics to describe
    #[arg(required = true, value_name = "TOPIC")]
    pub topics: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Topic to create
    pub topic: String,
    /// Number of partitions [default: the broker's num.partitions]
    #[arg(long, value_name = "N")]
    pub partitions: Option<i32>,
    /// Replication factor [default: the broker's default.replication.factor]
    #[arg(long = "replication-factor", value_name = "R")]
    pub replication_factor: Option<i16>,
    /// Topic config, repeatable
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub configs: Vec<String>,
    /// Only ask the broker to validate the request
    #[arg(long)]
    pub validate_only: bool,
    #[command(flatten)]
    pub conn: ConnArgsCommandConfig,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Topics to delete
    #[arg(required = true, value_name = "TOPIC")]
    pub topics: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct AlterConfigArgs {
    /// Topic to change
    pub topic: String,
    /// Config to set, repeatable
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Config to remove (back to the broker's default), repeatable
    #[arg(long = "delete", value_name = "KEY")]
    pub delete: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

pub async fn run(command: TopicsCommand, top: &Top) -> Result<()> {
    match command {
        TopicsCommand::List(a) => list(a, top).await,
        TopicsCommand::Describe(a) => describe(a, top).await,
        TopicsCommand::Create(a) => create(a, top).await,
        TopicsCommand::Delete(a) => delete(a, top).await,
        TopicsCommand::AlterConfig(a) => alter_config(a, top).await,
    }
}

async fn list(args: ListArgs, top: &Top) -> Result<()> {
    let admin = top.settings(&args.conn)?.admin().await?;
    let topics: Vec<_> = admin.list_topics().await?.into_iter().filter(|t| args.internal || !t.internal).collect();
    if args.long {
        let rows: Vec<Vec<String>> = topics
            .iter()
            .map(|t| vec![t.name.clone(), t.partitions.len().to_string(), t.replication_factor().to_string()])
            .collect();
        print_table(&["TOPIC", "PARTITIONS", "REPLICATION-FACTOR"], &rows)
    } else {
        let mut text = String::new();
        for t in &topics {
            text.push_str(&t.name);
            text.push('\n');
        }
        if text.is_empty() {
            return Ok(());
        }
        println(text.trim_end())
    }
}

async fn describe(args: DescribeArgs, top: &Top) -> Result<()> {
    let admin = top.settings(&args.conn)?.admin().await?;
    let metadata = super::topic_metadata(admin.client(), &args.topics, super::TOPIC_WAIT.min(admin.timeout())).await?;
    for (i, (name, t)) in args.topics.iter().zip(&metadata).enumerate() {
        let configs = admin
            .describe_configs(&[ConfigResource::topic(name.as_str())])
            .await
            .context(|| format!("describe configs of topic '{name}'"))?;
        let overrides: Vec<String> = configs
            .first()
            .map(|c| {
                c.entries
                    .iter()
                    .filter(|e| e.source == ConfigSource::TopicConfig)
                    .map(|e| {
                        format!(
                            "{}={}",
                            e.name,
                            e.value.as_deref().unwrap_or(if e.is_sensitive { "(sensitive)" } else { "" })
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rf = t.replication_factor();
        if i > 0 {
            println("")?;
        }
        println(format!(
            "Topic: {name}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {rf}\tConfigs: {}",
            t.id,
            t.partitions.len(),
            overrides.join(",")
        ))?;
        let list = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        let rows: Vec<Vec<String>> = t
            .partitions
            .iter()
            .map(|p| {
                vec![
                    p.partition.to_string(),
                    p.leader.map_or_else(|| "none".into(), |l| l.to_string()),
                    list(&p.replicas),
                    list(&p.isr),
                    list(&p.offline),
                ]
            })
            .collect();
        print_table(&["PARTITION", "LEADER", "REPLICAS", "ISR", "OFFLINE"], &rows)?;
    }
    Ok(())
}

async fn create(args: CreateArgs, top: &Top) -> Result<()> {
    let mut topic =
        NewTopic::new(args.topic.as_str(), args.partitions.unwrap_or(-1), args.replication_factor.unwrap_or(-1));
    if args.partitions.is_some_and(|p| p < 1) {
        return Err(usage("--partitions must be at least 1"));
    }
    if args.replication_factor.is_some_and(|r| r < 1) {
        return Err(usage("--replication-factor must be at least 1"));
    }
    for c in &args.configs {
        let (k, v) = super::parse_kv("--config", c)?;
        topic = topic.config(k, v);
    }
    let admin = top.settings(&args.conn.into())?.admin().await?;
    let created = admin.create_topics(&[topic], args.validate_only).await.map_err(|e| match e.code() {
        Some(c) if c == ErrorCode::TOPIC_ALREADY_EXISTS => runtime(format!("topic '{}' already exists", args.topic)),
        _ => runtime(format!("cannot create topic '{}': {}", args.topic, crate::error::describe(&e))),
    })?;
    let t = &created[0];
    if args.validate_only {
        eprintln!(
            "kw: topic '{}' can be created ({} partitions, replication factor {})",
            t.name, t.partitions, t.replication_factor
        );
    } else {
        eprintln!(
            "kw: created topic '{}' ({} partitions, replication factor {})",
            t.name, t.partitions, t.replication_factor
        );
    }
    Ok(())
}

async fn delete(args: DeleteArgs, top: &Top) -> Result<()> {
    let admin = top.settings(&args.conn)?.admin().await?;
    admin.delete_topics(&args.topics).await.map_err(|e| match e.code() {
        Some(c) if c == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION => {
            runtime(format!("cannot delete: {}: the topic does not exist", crate::error::describe(&e)))
        }
        _ => runtime(format!("cannot delete: {}", crate::error::describe(&e))),
    })?;
    for t in &args.topics {
        eprintln!("kw: deleted topic '{t}'");
    }
    Ok(())
}

async fn alter_config(args: AlterConfigArgs, top: &Top) -> Result<()> {
    if args.set.is_empty() && args.delete.is_empty() {
        return Err(usage("nothing to change: give --set KEY=VALUE and/or --delete KEY"));
    }
    let mut ops = Vec::new();
    for s in &args.set {
        let (k, v) = super::parse_kv("--set", s)?;
        ops.push(AlterConfigOp::set(k, v));
    }
    for d in &args.delete {
        ops.push(AlterConfigOp::delete(d.as_str()));
    }
    let admin = top.settings(&args.conn)?.admin().await?;
    let wait = super::TOPIC_WAIT.min(admin.timeout());
    super::topic_partitions(admin.client(), std::slice::from_ref(&args.topic), wait).await?;
    admin
        .incremental_alter_configs(&ConfigResource::topic(args.topic.as_str()), &ops)
        .await
        .context(|| format!("cannot alter configs of topic '{}'", args.topic))?;
    eprintln!("kw: altered configs of topic '{}'", args.topic);
    Ok(())
}
