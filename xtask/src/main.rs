//! Developer commands: `cargo xtask demo`, `cargo xtask quickstart`, `cargo xtask test`,
//! `cargo xtask kafka …`, `cargo xtask matrix`, `cargo xtask codegen [--check]`, `cargo xtask bench [--quick] [WORKLOAD…]`.

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
    /// Run a chosen set of integration tests against several Kafka versions (3.9.2 and 4.4.0 by
    /// default; this checkout's clusters are replaced by each version's in turn).
    Matrix(kafka::MatrixArgs),
    /// Start a local broker and the contacts-import demo (release build) at
    /// http://127.0.0.1:8080/; Ctrl-C stops the demo, and the broker if this command started it.
    Demo {
        /// Arguments passed on to the demo (e.g. `--listen 127.0.0.1:8081 --importers 3`;
        /// `cargo xtask demo -- --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Start a local broker and run the quickstart example against it (produce, then consume).
    Quickstart,
    /// Start the 3-node cluster and run fault scenarios on it (the `chaos` crate):
    /// `cargo xtask chaos <scenario>|all [--minutes N] [--seed S]`; fails on any violation.
    Chaos {
        /// Arguments passed on to the `chaos` binary (`cargo xtask chaos -- --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
        Cmd::Matrix(args) => kafka::matrix(args),
        Cmd::Demo { args } => demo(&args),
        Cmd::Quickstart => {
            kafka_up(&[])?;
            cargo(&["run", "--release", "--quiet", "-p", "kafka-wire", "--example", "quickstart"])
        }
        Cmd::Chaos { args } => {
            kafka_up(&["--nodes", "3"])?;
            let mut run = vec!["run", "--release", "--quiet", "-p", "chaos", "--"];
            run.extend(args.iter().map(String::as_str));
            cargo(&run)
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

/// `cargo xtask demo`: the local broker (started unless one already answers at 127.0.0.1:9092),
/// then the demo until Ctrl-C; the broker is stopped again only if this command started it.
fn demo(args: &[String]) -> anyhow::Result<()> {
    let timeout = std::time::Duration::from_secs(1);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9092));
    let broker_was_up = std::net::TcpStream::connect_timeout(&addr, timeout).is_ok();
    kafka_up(&[])?;
    cargo(&["build", "--release", "--quiet", "-p", "contacts-import"])?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), std::path::PathBuf::from);
    let binary = target.join("release").join("contacts-import");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcome = runtime.block_on(async {
        let mut child = tokio::process::Command::new(&binary).args(args).current_dir(&root).spawn()?;
        // Ctrl-C in a terminal reaches the demo too (same process group); this process only
        // outlives it, to pass the signal on when it came to this process alone, and to stop
        // the broker.
        let status = tokio::select! {
            status = child.wait() => status?,
            _ = tokio::signal::ctrl_c() => {
                if let Some(pid) = child.id() {
                    let _ = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status();
                }
                match tokio::time::timeout(std::time::Duration::from_secs(60), child.wait()).await {
                    Ok(status) => status?,
                    Err(_) => {
                        eprintln!("the demo did not stop within 60 s: killing it");
                        child.kill().await?;
                        child.wait().await?
                    }
                }
            }
        };
        anyhow::Ok(status)
    });
    if !broker_was_up {
        eprintln!("stopping the broker this command started");
        match Cli::parse_from(["xtask", "kafka", "down", "--nodes", "1"]).cmd {
            Cmd::Kafka(args) => kafka::run(args)?,
            _ => unreachable!("parsed a kafka command"),
        }
    }
    let status = outcome?;
    // Stopped by Ctrl-C (SIGINT, or the demo's own clean exit on it) is the normal end.
    use std::os::unix::process::ExitStatusExt;
    anyhow::ensure!(status.success() || status.signal() == Some(2), "the demo failed ({status})");
    Ok(())
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
