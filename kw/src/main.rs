//! `kw`: a kcat-class command line tool for Apache Kafka, built on kafka-wire's public API.
//!
//! One module per command group under `cmd/`; connection settings in `conn`; output helpers in
//! `output`; SIGINT and SIGTERM in `signal`. Exit codes are listed in `error`.

mod cmd;
mod conn;
mod error;
#[cfg(all(target_arch = "x86_64", any(test, target_env = "musl")))]
mod memcpy;
mod output;
mod signal;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::conn::{ConnArgs, Settings};
use crate::error::Failure;
use crate::signal::Interrupt;

const ABOUT: &str =
    "A command line tool for Apache Kafka: produce, consume, and manage topics, groups, offsets and transactions.";

const AFTER_HELP: &str = "\
Examples:
  printf 'hello\\nworld\\n' | kw produce events
  kw consume events --from beginning --exit-at-end -J
  kw -b broker1:9092,broker2:9092 topics list
  kw groups describe billing

Connection settings (-b, -X, -F) can be given before or after the command. Each command takes
the -X properties of the client it uses (produce: producer, consume: consumer, others: the
common client properties) and refuses the rest; every command takes security.protocol and the
ssl.* / sasl.* properties (TLS, SASL PLAIN and SCRAM), as in a Java client.properties file.

Exit codes:
  0    success (also when the reader of stdout goes away)
  1    runtime error: broker, network, or a local file
  2    usage or configuration error
  3    input data refused: a line of `kw produce` is malformed, too large, or names a partition
       that does not exist (the report names the lines)
  130  interrupted by SIGINT (Ctrl-C)
  143  interrupted by SIGTERM
On either signal produce stops reading, aborts an open transaction and reports every line;
consume stops and commits a group's offsets of what it printed. A second signal, or 5 s
without stopping, exits at once.";

#[derive(Parser, Debug)]
#[command(name = "kw", version, about = ABOUT, after_help = AFTER_HELP, propagate_version = true)]
struct Cli {
    /// Bootstrap broker(s), comma-separated host:port
    #[arg(short = 'b', long = "bootstrap", env = "KAFKA_BOOTSTRAP", value_name = "HOST:PORT,...", default_value = conn::DEFAULT_BOOTSTRAP)]
    bootstrap: String,
    /// Kafka client property, repeatable (e.g. -X client.id=me)
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// Java .properties file of client properties
    #[arg(short = 'F', long = "config", value_name = "FILE")]
    config_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Produce records from stdin or a file, one per line
    Produce(cmd::produce::ProduceArgs),
    /// Consume records of one or more topics
    Consume(cmd::consume::ConsumeArgs),
    /// List, describe, create, delete topics and change their configs
    #[command(subcommand)]
    Topics(cmd::topics::TopicsCommand),
    /// List, describe, delete consumer groups and reset their offsets
    #[command(subcommand)]
    Groups(cmd::groups::GroupsCommand),
    /// Offsets of a topic's partitions: earliest, latest or at a time
    Offsets(cmd::offsets::OffsetsArgs),
    /// The cluster: id, controller and brokers
    Cluster(cmd::cluster::ClusterArgs),
    /// List and describe transactions
    #[command(subcommand)]
    Txn(cmd::txn::TxnCommand),
    /// Retries of a topic by a group (the retry crate's): status, skip, unblock, block
    #[command(subcommand)]
    Retry(cmd::retry::RetryCommand),
    /// Dead-letter queue of a topic's retries by a group: list, show, redrive
    #[command(subcommand)]
    Dlq(cmd::retry::DlqCommand),
    /// A compacted topic as a key-value store: get, put, delete, list, watch
    #[command(subcommand)]
    Kv(cmd::kv::KvCommand),
    /// Print a shell completion script
    Completions(cmd::completions::CompletionsArgs),
}

/// The top-level connection options, with where `-b` came from, and the signals to stop on.
pub struct Top {
    conn: ConnArgs,
    env_bootstrap: Option<String>,
    pub interrupt: Interrupt,
}

impl Top {
    /// The settings of a command: the top-level options merged with the command's own.
    pub fn settings(&self, cmd: &ConnArgs) -> Result<Settings, Failure> {
        Settings::merge(&self.conn, self.env_bootstrap.clone(), cmd)
    }
}

/// The static musl build allocates through dlmalloc (pure Rust): musl's own allocator made it
/// about half as fast as the glibc build (`bench/results/`).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // `-b` given on the command line beats properties; from the environment or the default it
    // is only a fallback (see `conn`).
    let (bootstrap, env_bootstrap) = match matches.value_source("bootstrap") {
        Some(ValueSource::CommandLine) => (Some(cli.bootstrap.clone()), None),
        Some(ValueSource::EnvVariable) => (None, Some(cli.bootstrap.clone())),
        _ => (None, None),
    };
    // Produce and consume stop by themselves on a signal (and report); other commands have
    // nothing to clean up and exit at once.
    let graceful = matches!(cli.command, Command::Produce(_) | Command::Consume(_));
    let interrupt = match Interrupt::install(graceful) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("kw: error: cannot listen for signals: {e}");
            return ExitCode::from(1);
        }
    };
    let top = Top {
        conn: ConnArgs { bootstrap, properties: cli.properties.clone(), config_file: cli.config_file.clone() },
        env_bootstrap,
        interrupt,
    };
    // `kw consume` runs on two threads: the loop that polls and prints on one, the consumer's
    // driver (fetching, decompressing, the connections' IO) beside it, as the library's own
    // consume benchmark does. `kw produce` stays on one: a second worker did not make it faster
    // (1.86-2.09 against 2.06-2.14 M records/s of 100 B, 2 M records, interleaved) and doubled
    // its RSS. Other commands need one.
    let mut builder = if matches!(cli.command, Command::Consume(_)) {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kw: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli.command, top));
    // Background tasks (delivery trackers, drivers) are not waited for.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(m) = failure.message() {
                eprintln!("kw: {m}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

async fn run(command: Command, top: Top) -> Result<(), Failure> {
    match command {
        Command::Produce(args) => cmd::produce::run(args, &top).await,
        Command::Consume(args) => cmd::consume::run(args, &top).await,
        Command::Topics(c) => cmd::topics::run(c, &top).await,
        Command::Groups(c) => cmd::groups::run(c, &top).await,
        Command::Offsets(args) => cmd::offsets::run(args, &top).await,
        Command::Cluster(args) => cmd::cluster::run(args, &top).await,
        Command::Txn(c) => cmd::txn::run(c, &top).await,
        Command::Retry(c) => cmd::retry::run_retry(c, &top).await,
        Command::Dlq(c) => cmd::retry::run_dlq(c, &top).await,
        Command::Kv(c) => cmd::kv::run(c, &top).await,
        Command::Completions(args) => cmd::completions::run(args, Cli::command()),
    }
}
