//! Developer commands: `cargo xtask quickstart`, `cargo xtask test`, `cargo xtask kafka …`,
//! `cargo xtask codegen [--check]`, `cargo xtask bench [--quick] [WORKLOAD…]`.

mod bench;
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
    /// Benchmark this client against librdkafka, rskafka and the Java client (bench/results/).
    Bench(bench::BenchArgs),
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
    /// Start the local brokers (1 node with its secured listeners, and 3 nodes for the failover
    /// tests), check that the generated code is current, and run every test of the workspace.
    Test {
        /// Arguments passed on to `cargo test` (after `--workspace`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Bench(args) => bench::run(args),
        Cmd::Codegen { check } => codegen::run(check),
        Cmd::Kafka(args) => kafka::run(args),
        Cmd::Quickstart => {
            kafka_up(&[])?;
            cargo(&["run", "--release", "--quiet", "-p", "kafka-wire", "--example", "quickstart"])
        }
        Cmd::Test { args } => {
            codegen::run(true)?;
            // The secured listeners are for tests/tests/security.rs.
            kafka_up(&["--security"])?;
            kafka_up(&["--nodes", "3"])?;
            let mut test = vec!["test", "--workspace"];
            test.extend(args.iter().map(String::as_str));
            cargo_within(&test, test_deadline()?)
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

fn cargo_command(args: &[&str]) -> std::process::Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = std::process::Command::new(cargo);
    command.args(args).current_dir(root);
    command
}

/// Runs cargo (the one running this xtask) in the workspace root.
fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = cargo_command(args).status()?;
    anyhow::ensure!(status.success(), "cargo {} failed ({status})", args.join(" "));
    Ok(())
}

/// How long the whole test run may take: `KW_TEST_TIMEOUT_SECS`, 40 minutes by default.
fn test_deadline() -> anyhow::Result<std::time::Duration> {
    let secs = match std::env::var("KW_TEST_TIMEOUT_SECS") {
        Ok(v) => v.parse().map_err(|_| anyhow::anyhow!("KW_TEST_TIMEOUT_SECS={v:?} is not a number of seconds"))?,
        Err(_) => 40 * 60,
    };
    Ok(std::time::Duration::from_secs(secs))
}

/// [`cargo`] with a deadline: a hung test fails the run (its whole process group is killed)
/// instead of holding CI until an outer limit.
fn cargo_within(args: &[&str], limit: std::time::Duration) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut child = cargo_command(args).process_group(0).spawn()?;
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "cargo {} failed ({status})", args.join(" "));
            return Ok(());
        }
        if started.elapsed() > limit {
            // The test binaries are cargo's children, in the same process group.
            let group = format!("-{}", child.id());
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            anyhow::bail!(
                "cargo {} did not finish within {} s (KW_TEST_TIMEOUT_SECS); the test running last above hung",
                args.join(" "),
                limit.as_secs()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
