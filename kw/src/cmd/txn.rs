//! `kw txn list|describe`: transactions as their coordinators see them (ListTransactions to
//! every broker, DescribeTransactions to the transaction coordinator of an id).

use clap::{Args, Subcommand};
use kafka_wire::client::CoordinatorType;
use kafka_wire::codec::messages::{DescribeTransactionsRequest, ListTransactionsRequest};
use kafka_wire::codec::ErrorCode;

use crate::conn::ConnArgs;
use crate::error::{runtime, Context, Result};
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
    let client = admin.client();
    client.metadata(Some(&[])).await?;
    let request = ListTransactionsRequest {
        state_filters: args.states.iter().map(|s| s.as_str().into()).collect(),
        producer_id_filters: args.producer_ids.clone(),
        duration_filter: args.duration_ms.unwrap_or(-1),
        ..Default::default()
    };
    let mut rows = Vec::new();
    let mut brokers = client.brokers();
    brokers.sort_by_key(|b| b.node_id);
    for b in brokers {
        let response =
            client.send(b.node_id, &request).await.context(|| format!("ListTransactions to broker {}", b.node_id))?;
        if response.error_code.is_err() {
            return Err(runtime(format!(
                "ListTransactions to broker {}: broker error {}",
                b.node_id, response.error_code
            )));
        }
        if !response.unknown_state_filters.is_empty() {
            let unknown: Vec<String> = response.unknown_state_filters.iter().map(ToString::to_string).collect();
            return Err(crate::error::usage(format!("--state: unknown state(s): {}", unknown.join(", "))));
        }
        for t in &response.transaction_states {
            rows.push(vec![
                t.transactional_id.to_string(),
                b.node_id.to_string(),
                t.producer_id.to_string(),
                t.transaction_state.to_string(),
            ]);
        }
    }
    rows.sort();
    print_table(&["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"], &rows)
}

async fn describe(args: DescribeArgs, top: &Top) -> Result<()> {
    let admin = top.settings(&args.conn)?.admin().await?;
    let id = args.transactional_id.as_str();
    let node = admin
        .find_coordinator(id, CoordinatorType::Transaction)
        .await
        .context(|| format!("cannot find the transaction coordinator of '{id}'"))?;
    let request = DescribeTransactionsRequest { transactional_ids: vec![id.into()], ..Default::default() };
    let response =
        admin.client().send(node, &request).await.context(|| format!("DescribeTransactions to broker {node}"))?;
    let t = response
        .transaction_states
        .iter()
        .find(|t| &*t.transactional_id == id)
        .ok_or_else(|| runtime(format!("broker {node} did not describe transactional id '{id}'")))?;
    if t.error_code == ErrorCode::TRANSACTIONAL_ID_NOT_FOUND {
        return Err(runtime(format!("transactional id '{id}' does not exist")));
    }
    if t.error_code.is_err() {
        return Err(runtime(format!("cannot describe transactional id '{id}': broker error {}", t.error_code)));
    }
    let mut partitions: Vec<String> = t
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter().map(move |p| format!("{}-{p}", topic.topic)))
        .collect();
    partitions.sort();
    let started = t.transaction_start_time_ms;
    let duration = if started >= 0 { (super::now_ms() - started).max(0).to_string() } else { "-".into() };
    let fields = [
        ("CoordinatorId", node.to_string()),
        ("TransactionalId", t.transactional_id.to_string()),
        ("ProducerId", t.producer_id.to_string()),
        ("ProducerEpoch", t.producer_epoch.to_string()),
        ("TransactionState", t.transaction_state.to_string()),
        ("TransactionTimeoutMs", t.transaction_timeout_ms.to_string()),
        ("CurrentTransactionStartTimeMs", if started >= 0 { started.to_string() } else { "-".into() }),
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
