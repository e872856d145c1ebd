//! Developer commands: `cargo xtask quickstart`, `cargo xtask test`, `cargo xtask kafka …`,
//! `cargo xtask codegen [--check]`.

mod codegen;
mod kafka;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "xtask", about = "Developer commands for this workspace")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate kafka-wire/src/codec/messages/generated.rs.
    Codegen {
        /// Fail if the generated file is out of date instead of writing it.
        #[arg(long)]
        check: bool,
    },
    /// Local Apache Kafka cluster for the integration tests: up, down, status, kill, start, tool.
    Kafka(kafka::KafkaArgs),
    /// Start a local broker and run the quickstart example against it (produce, then consume).
    Quickstart,
    /// Start the local brokers (1 node, and 3 nodes for the failover tests), check that the
    /// generated code is current, and run every test of the workspace.
    Test {
        /// Arguments passed on to `cargo test` (after `--workspace`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Codegen { check } => codegen::run(check),
        Cmd::Kafka(args) => kafka::run(args),
        Cmd::Quickstart => {
            kafka_up(&[])?;
            cargo(&["run", "--release", "--quiet", "-p", "kafka-wire", "--example", "quickstart"])
        }
        Cmd::Test { args } => {
            codegen::run(true)?;
            kafka_up(&[])?;
            kafka_up(&["--nodes", "3"])?;
            let mut test = vec!["test", "--workspace"];
            test.extend(args.iter().map(String::as_str));
            cargo(&test)
        }
    }
}

/// `cargo xtask kafka up …`, in this process.
fn kafka_up(extra: &[&str]) -> anyhow::Result<()> {
    let mut argv = vec!["xtask", "kafka", "up"];
    argv.extend_from_slice(extra);
    match Cli::parse_from(argv).cmd {
        Cmd::Kafka(args) => kafka::run(args),
        _ => unreachable!("parsed a kafka command"),
    }
}

/// Runs cargo (the one running this xtask) in the workspace root.
fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = std::process::Command::new(cargo).args(args).current_dir(root).status()?;
    anyhow::ensure!(status.success(), "cargo {} failed ({status})", args.join(" "));
    Ok(())
}
