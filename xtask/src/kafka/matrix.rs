//! `cargo xtask matrix`: a chosen set of integration tests against several Kafka versions, one
//! after another, on this checkout's own clusters (which it replaces: each version gets a fresh
//! 1-node cluster with its secured listeners, and the failover version a fresh 3-node cluster).
//!
//! The main test run (`cargo xtask test`) stays on the default version; the matrix adds the
//! oldest line people still run (3.9, before KIP-848 and KIP-890 transactions v2) and the newest
//! 4.x, at a size that fits CI (see `.ci/run`).

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::cluster;

/// The test binaries the matrix runs on 1 node: `(package, test)`. The client's own APIs, where
/// versions differ (negotiation, features, groups, transactions); the pattern crates built on
/// them (`transactions`, `kvstore`, `retry`…) run on the default version only, to fit CI.
const ONE_NODE_TESTS: &[(&str, &str)] = &[
    ("kafka-wire-tests", "broker_protocol"),
    ("kafka-wire-tests", "producer"),
    ("kafka-wire-tests", "consumer"),
    ("kafka-wire-tests", "consumer_group"),
    ("kafka-wire-tests", "transactional_producer"),
    ("kafka-wire-tests", "admin"),
    ("kw", "cli"),
];

/// The failover tests the matrix runs on 3 nodes, for `--failover-version` only.
const THREE_NODE_TESTS: &[(&str, &str)] = &[
    ("kafka-wire-tests", "producer_failover"),
    ("kafka-wire-tests", "consumer_failover"),
    ("kafka-wire-tests", "transactions_failover"),
];

#[derive(Args, Debug)]
pub struct MatrixArgs {
    /// Kafka versions to test, comma-separated, in order.
    #[arg(long, value_delimiter = ',', default_values_t = ["3.9.2".to_string(), "4.4.0".to_string()])]
    versions: Vec<String>,
    /// The version whose 3-node cluster runs the failover tests (`none`: no 3-node run).
    #[arg(long, default_value = "4.4.0")]
    failover_version: String,
    /// Arguments passed on to each `cargo test` after `--` (e.g. a test name filter).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// One `cargo test` of the matrix and how it ended.
struct Outcome {
    version: String,
    nodes: u8,
    ok: bool,
    secs: f64,
}

pub fn run(args: MatrixArgs) -> Result<()> {
    let versions: Vec<String> = args.versions.iter().map(|v| cluster::normalize_version(v)).collect();
    if versions.is_empty() {
        bail!("--versions lists no version");
    }
    let failover = match args.failover_version.as_str() {
        "none" => None,
        v => Some(cluster::normalize_version(v)),
    };
    let t0 = Instant::now();
    // Build every test binary first, so that the brokers do not wait on the compiler.
    cargo_test(&ONE_NODE_TESTS.iter().chain(THREE_NODE_TESTS).copied().collect::<Vec<_>>(), &["--no-run"])?;
    let mut outcomes = Vec::new();
    for version in &versions {
        xtask(&["kafka", "down", "--nodes", "1"])?;
        xtask(&["kafka", "up", "--security", "--version", version])?;
        let t = Instant::now();
        let ok = cargo_test_with(ONE_NODE_TESTS, &args.args, version).is_ok();
        outcomes.push(Outcome { version: version.clone(), nodes: 1, ok, secs: t.elapsed().as_secs_f64() });
        if failover.as_deref() == Some(version.as_str()) {
            xtask(&["kafka", "down", "--nodes", "3"])?;
            xtask(&["kafka", "up", "--nodes", "3", "--version", version])?;
            let t = Instant::now();
            let ok = cargo_test_with(THREE_NODE_TESTS, &args.args, version).is_ok();
            outcomes.push(Outcome { version: version.clone(), nodes: 3, ok, secs: t.elapsed().as_secs_f64() });
        }
    }
    println!("\n==> version matrix ({:.0} s in all)", t0.elapsed().as_secs_f64());
    for o in &outcomes {
        let node = if o.nodes == 1 { "node " } else { "nodes" };
        let verdict = if o.ok { "passed" } else { "FAILED" };
        println!("  Kafka {:<8} {} {node}: {verdict} ({:.0} s)", o.version, o.nodes, o.secs);
    }
    if let Some(v) = failover.filter(|v| !versions.contains(v)) {
        println!("  (--failover-version {v} is not among --versions: no 3-node run)");
    }
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if failed > 0 {
        bail!("{failed} of {} matrix runs failed (their output is above)", outcomes.len());
    }
    Ok(())
}

fn test_args<'a>(tests: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    let mut argv = vec!["test"];
    let mut packages: Vec<&str> = tests.iter().map(|(p, _)| *p).collect();
    packages.dedup();
    for p in packages {
        argv.extend(["-p", p]);
    }
    for (_, t) in tests {
        argv.extend(["--test", t]);
    }
    argv
}

fn cargo_test(tests: &[(&str, &str)], extra: &[&str]) -> Result<()> {
    let mut argv = test_args(tests);
    argv.extend_from_slice(extra);
    let status = cargo(&argv).status().context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", argv.join(" "));
    }
    Ok(())
}

/// `cargo test` of `tests` against the clusters just started, with `KAFKA_VERSION` naming their
/// version (for the tools the tests run) and no `KAFKA_BOOTSTRAP*` override.
fn cargo_test_with(tests: &[(&str, &str)], extra: &[String], version: &str) -> Result<()> {
    let mut argv = test_args(tests);
    if !extra.is_empty() {
        argv.push("--");
        argv.extend(extra.iter().map(String::as_str));
    }
    println!("\n==> Kafka {version}: cargo {}", argv.join(" "));
    let status = cargo(&argv)
        .env("KAFKA_VERSION", version)
        .env_remove("KAFKA_BOOTSTRAP")
        .env_remove("KAFKA_BOOTSTRAP_3")
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("Kafka {version}: cargo test failed ({status})");
    }
    Ok(())
}

fn cargo(argv: &[&str]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(argv).current_dir(super::workspace_root());
    command
}

/// `cargo xtask …` as a child (this binary), so that each step prints as it would by hand.
fn xtask(argv: &[&str]) -> Result<()> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let status = Command::new(exe).args(argv).current_dir(super::workspace_root()).status()?;
    if !status.success() {
        bail!("cargo xtask {} failed ({status})", argv.join(" "));
    }
    Ok(())
}
