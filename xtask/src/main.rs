//! Developer commands: `cargo xtask codegen [--check]`, `cargo xtask kafka …`.

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Codegen { check } => codegen::run(check),
        Cmd::Kafka(args) => kafka::run(args),
    }
}
