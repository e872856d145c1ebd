//! `kw txn list|describe`: transactions as their coordinators see them (ListTransactions to
//! every broker, DescribeTransactions to the transaction coordinator of an id; KIP-664).

use clap::{Args, Subcommand};
use std::time::Duration;

use kafka_wire::client::TransactionFilter;
use kafka_wire::ErrorCode;

use crate::conn::ConnArgs;
use crate::error::{runtime, usage, Result};
use crate::output::{print_table, println};
use crate::Top;

#[derive(Subcommand, Debug)]
pub enum TxnCommand {
    /// List transactional ids with their producer id and state
    #[command(after_help = "Examples:\n  kw txn list\n  kw txn list --state Ongoing --duration-ms 60000")]
    List(ListArgs),
    /// Describe the transaction of a transactional id
    #[command(after_help = "Example:\n  kw txn describe payments-writer-1")]
    Describe(DescribeArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only transactions in this state (Empty, Ongoing, PrepareCommit, PrepareAbort,
    /// CompleteCommit, CompleteAbort, Dead, PrepareEpochFence), repeatable
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<String>,
    /// Only transactions of this producer id, repeatable
    #[arg(long = "producer-id", value_name = "ID")]
    pub producer_ids: Vec<i64>,
    /// Only transactions running for longer than this many milliseconds
    #[arg(long = "duration-ms", value_name = "MS")]
    pub duration_ms: Option<i64>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// The transactional id
    #[arg(value_name = "TXN_ID")]
    pub transactional_id: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

pub async fn run(command: TxnCommand, top: &Top) -> Result<()> {
    match command {
        TxnCommand::List(a) => list(a, top).await,
        TxnCommand::Describe(a) => describe(a, top).await,
    }
}

async fn list(args: ListArgs, top: &Top) -> Result<()> {
    let admin = top.settings(&args.conn)?.admin().await?;
    let filter = TransactionFilter {
        states: args.states.clone(),
        producer_ids: args.producer_ids.clone(),
        min_duration: args.duration_ms.map(|ms| Duration::from_millis(ms.max(0) as u64)),
    };
    let listed = admin.list_transactions(&filter).await.map_err(|e| match e {
        kafka_wire::Error::Misuse { reason, .. } => usage(format!("--state: {reason}")),
        e => runtime(format!("cannot list transactions: {}", crate::error::describe(&e))),
    })?;
    let mut rows: Vec<Vec<String>> = listed
        .into_iter()
        .map(|t| vec![t.transactional_id, t.coordinator.to_string(), t.producer_id.to_string(), t.state])
        .collect();
    rows.sort();
    print_table(&["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"], &rows)
}

async fn describe(args: DescribeArgs, top: &Top) -> Result<()> {
    let admin = top.settings(&args.conn)?.admin().await?;
    let id = args.transactional_id.as_str();
    let t = match admin.describe_transactions(&[id]).await {
        Ok(mut d) if !d.is_empty() => d.remove(0),
        Ok(_) => return Err(runtime(format!("transactional id '{id}' was not described"))),
        Err(e) if e.code() == Some(ErrorCode::TRANSACTIONAL_ID_NOT_FOUND) => {
            return Err(runtime(format!("transactional id '{id}' does not exist")));
        }
        Err(e) => {
            return Err(runtime(format!("cannot describe transactional id '{id}': {}", crate::error::describe(&e))))
        }
    };
    let mut partitions: Vec<String> =
        t.partitions.iter().flat_map(|tp| tp.partitions.iter().map(move |p| format!("{}-{p}", tp.topic))).collect();
    partitions.sort();
    let duration = t.start_time_ms.map_or_else(|| "-".into(), |started| (super::now_ms() - started).max(0).to_string());
    let fields = [
        ("CoordinatorId", t.coordinator.to_string()),
        ("TransactionalId", t.transactional_id.clone()),
        ("ProducerId", t.producer_id.to_string()),
        ("ProducerEpoch", t.producer_epoch.to_string()),
        ("TransactionState", t.state.clone()),
        ("TransactionTimeoutMs", t.timeout.as_millis().to_string()),
        ("CurrentTransactionStartTimeMs", t.start_time_ms.map_or_else(|| "-".into(), |s| s.to_string())),
        ("TransactionDurationMs", duration),
        ("TopicPartitions", if partitions.is_empty() { "-".into() } else { partitions.join(",") }),
    ];
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut text = String::new();
    for (k, v) in fields {
        text.push_str(&format!("{k:<width$}  {v}\n"));
    }
    println(text.trim_end())
}
