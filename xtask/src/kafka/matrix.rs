//! `cargo xtask matrix`: integration tests against several Kafka versions, one after another, on
//! this checkout's own clusters (which it replaces: each run gets fresh clusters of its version,
//! and every cluster is stopped at the end).
//!
//! The main test run (`cargo xtask test`) stays on the default version; the matrix adds the
//! oldest line people still run (3.9, before KIP-848 and KIP-890 transactions v2) and the newest
//! 4.x: a chosen set of test binaries at a size that fits CI (see `.ci/run`), or with
//! `--workspace` every test of the workspace on both cluster sizes.
//!
//! `--workspace --bootstrap-nodes 3` runs every test with the 3-node cluster as its bootstrap
//! (`cargo xtask matrix --workspace --bootstrap-nodes 3 --versions 4.1.2`): only that cluster is
//! started, and `KAFKA_BOOTSTRAP` and `KAFKA_BOOTSTRAP_3` both name it, so that no test reaches a
//! 1-node cluster: topics may have 3 replicas, partition leaders and group and transaction
//! coordinators are spread over the brokers. Tests that need the 1-node cluster's secured
//! listeners (`kafka up --security`) say that they skip, and why.
//!
//! Each run's output is passed through and tallied: binaries, tests passed / failed / skipped /
//! ignored. A test "skipped" is one that passed after printing a skip line (the harness's
//! `SKIPPED …` / `[test] skipped: …`, `tests/src/lib.rs`): libtest counts it as passed, so the
//! matrix runs the tests with `--show-output` and reads each passed test's output.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::cluster;

/// The client's own APIs, where versions differ (negotiation, features, groups, transactions),
/// and the CLI: `(package, test)`, run on 1 node for each of `--versions`.
const CLIENT_TESTS: &[(&str, &str)] = &[
    ("kafka-wire-tests", "broker_protocol"),
    ("kafka-wire-tests", "producer"),
    ("kafka-wire-tests", "consumer"),
    ("kafka-wire-tests", "consumer_group"),
    ("kafka-wire-tests", "transactional_producer"),
    ("kafka-wire-tests", "admin"),
    ("kw", "cli"),
];

/// The smaller set, for each of `--small-versions`: what depends on the version itself
/// (negotiated APIs and features, KIP-848 groups, transaction versions).
const SMALL_TESTS: &[(&str, &str)] = &[
    ("kafka-wire-tests", "broker_protocol"),
    ("kafka-wire-tests", "consumer_group"),
    ("kafka-wire-tests", "transactional_producer"),
];

/// The failover tests, on 3 nodes of `--failover-version`.
const FAILOVER_TESTS: &[(&str, &str)] = &[
    ("kafka-wire-tests", "producer_failover"),
    ("kafka-wire-tests", "consumer_failover"),
    ("kafka-wire-tests", "transactions_failover"),
];

#[derive(Args, Debug)]
pub struct MatrixArgs {
    /// Kafka versions that run the client's test binaries (producer, consumer, groups,
    /// transactional producer, admin, broker protocol, `kw` CLI) on 1 node, comma-separated, in
    /// order (`none`: no such run).
    #[arg(long, value_delimiter = ',', default_values_t = ["3.9.2".to_string(), "4.4.0".to_string()])]
    versions: Vec<String>,
    /// Kafka versions that run a smaller set on 1 node (broker protocol, groups, transactional
    /// producer), after `--versions`.
    #[arg(long, value_delimiter = ',')]
    small_versions: Vec<String>,
    /// The version whose 3-node cluster runs the failover tests (`none`: no 3-node run); it
    /// must be one of `--versions` or `--small-versions`.
    #[arg(long, default_value = "4.4.0")]
    failover_version: String,
    /// Every test of the workspace (`cargo test --workspace`) on each of `--versions`, with its
    /// 1-node (secured listeners) and 3-node clusters both up, instead of the chosen sets.
    #[arg(long, conflicts_with = "small_versions")]
    workspace: bool,
    /// With `--workspace`: the cluster every test bootstraps from, 1 (the 1-node cluster, and the
    /// 3-node one for the failover, chaos and proxy tests) or 3 (only the 3-node cluster is
    /// started; `KAFKA_BOOTSTRAP` and `KAFKA_BOOTSTRAP_3` both name it).
    #[arg(long, default_value = "1", value_parser = bootstrap_nodes, requires = "workspace")]
    bootstrap_nodes: u8,
    /// Arguments passed on to each test binary after `--` (e.g. a test name filter).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// What one run of the matrix tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suite {
    Client,
    Small,
    Failover,
    Workspace,
    /// The whole workspace with the 3-node cluster as every test's bootstrap.
    Workspace3,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Client => "client tests, 1 node",
            Suite::Small => "small set, 1 node",
            Suite::Failover => "failover tests, 3 nodes",
            Suite::Workspace => "whole workspace, 1 + 3 nodes",
            Suite::Workspace3 => "whole workspace, 3-node bootstrap",
        }
    }

    fn tests(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Suite::Client => CLIENT_TESTS,
            Suite::Small => SMALL_TESTS,
            Suite::Failover => FAILOVER_TESTS,
            Suite::Workspace | Suite::Workspace3 => &[],
        }
    }

    /// The clusters this suite runs on, 1 and/or 3 nodes: the others are stopped, so that no
    /// test of the run reaches a cluster of another version (a test whose cluster is down says
    /// it skips).
    fn clusters(self) -> (bool, bool) {
        match self {
            Suite::Client | Suite::Small => (true, false),
            Suite::Failover => (true, true),
            Suite::Workspace => (true, true),
            Suite::Workspace3 => (false, true),
        }
    }

    /// `KAFKA_BOOTSTRAP` for the tests: the 3-node cluster for [`Suite::Workspace3`]; else none,
    /// so that the tests read `.kafka/bootstrap*` (the clusters just started).
    fn bootstrap(self) -> Option<String> {
        (self == Suite::Workspace3).then(|| cluster::bootstrap_string(3))
    }
}

/// `--bootstrap-nodes`: the size of a cluster the matrix starts, 1 or 3.
fn bootstrap_nodes(s: &str) -> Result<u8, String> {
    match s.trim() {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(format!("{s:?}: the clusters have 1 or 3 nodes")),
    }
}

/// A skipped test: `binary`, test name, and its first skip line.
#[derive(Debug, Clone)]
struct Skip {
    binary: String,
    test: String,
    reason: String,
}

/// One test binary as its output told it.
#[derive(Debug, Default, Clone)]
struct Binary {
    name: String,
    passed: u32,
    failed: u32,
    ignored: u32,
    skipped: u32,
    /// Whether a `test result:` line ended it (else it crashed or was killed).
    finished: bool,
    secs: f64,
}

/// The tally of one `cargo test`, from its output (stdout and stderr, in order).
#[derive(Debug, Default)]
struct Tally {
    binaries: Vec<Binary>,
    started: Option<Instant>,
    skips: Vec<Skip>,
    failures: Vec<String>,
    /// In the `successes:` block that `--show-output` prints: the test whose output follows.
    section: Option<String>,
    in_successes: bool,
    section_skipped: bool,
}

impl Tally {
    fn line(&mut self, line: &str, now: Instant) {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("Running ").filter(|r| r.contains("/deps/") && r.ends_with(')')) {
            self.start_binary(binary_name(rest), now);
        } else if let Some(krate) = trimmed.strip_prefix("Doc-tests ") {
            self.start_binary(format!("{krate} (doc)"), now);
        } else if let Some(result) = trimmed.strip_prefix("test result: ") {
            self.end_section();
            self.in_successes = false;
            if let Some(b) = self.binaries.last_mut() {
                b.passed += count(result, "passed");
                b.failed += count(result, "failed");
                b.ignored += count(result, "ignored");
                b.finished = true;
            }
        } else if trimmed == "successes:" {
            self.end_section();
            self.in_successes = true;
        } else if trimmed == "failures:" {
            self.end_section();
            self.in_successes = false;
        } else if let Some(name) = trimmed.strip_prefix("---- ").and_then(|r| r.strip_suffix(" stdout ----")) {
            self.end_section();
            if self.in_successes {
                self.section = Some(name.to_string());
            }
        } else if let Some(name) = trimmed.strip_prefix("test ").and_then(|r| r.strip_suffix(" ... FAILED")) {
            let binary = self.binaries.last().map_or("?", |b| b.name.as_str());
            self.failures.push(format!("{binary}: {name}"));
        } else if let Some(test) = &self.section {
            if !self.section_skipped && is_skip_line(trimmed) {
                self.section_skipped = true;
                let binary = self.binaries.last().map_or("?", |b| b.name.as_str()).to_string();
                let reason = trimmed.trim_matches('!').trim().to_string();
                self.skips.push(Skip { binary, test: test.clone(), reason });
            }
        }
    }

    fn start_binary(&mut self, name: String, now: Instant) {
        self.end_section();
        self.in_successes = false;
        self.close_binary(now);
        self.binaries.push(Binary { name, ..Binary::default() });
        self.started = Some(now);
    }

    fn close_binary(&mut self, now: Instant) {
        if let (Some(b), Some(t)) = (self.binaries.last_mut(), self.started.take()) {
            b.secs = now.duration_since(t).as_secs_f64();
        }
    }

    fn end_section(&mut self) {
        if self.section.take().is_some() && self.section_skipped {
            if let Some(b) = self.binaries.last_mut() {
                b.skipped += 1;
            }
        }
        self.section_skipped = false;
    }

    fn totals(&self) -> Binary {
        let mut t = Binary { finished: true, ..Binary::default() };
        for b in &self.binaries {
            t.passed += b.passed;
            t.failed += b.failed;
            t.ignored += b.ignored;
            t.skipped += b.skipped;
            t.finished &= b.finished;
            t.secs += b.secs;
        }
        t
    }
}

/// A harness skip line: `!!!! SKIPPED test: why !!!!`, `SKIPPED: why`, `[test] skipped: why`.
fn is_skip_line(line: &str) -> bool {
    line.contains("SKIPPED") || line.contains("] skipped:")
}

/// `tests/producer.rs (target/debug/deps/producer-0123abcd)` → `producer`;
/// `unittests src/lib.rs (target/debug/deps/kafka_wire-0123abcd)` → `kafka_wire (src/lib.rs)`.
fn binary_name(running: &str) -> String {
    let (source, path) = running.split_once(" (").unwrap_or((running, ""));
    let file = path.trim_end_matches(')').rsplit('/').next().unwrap_or("");
    let stem = file.rsplit_once('-').map_or(file, |(s, _)| s);
    match source.strip_prefix("unittests ") {
        Some(src) => format!("{stem} ({src})"),
        None => stem.to_string(),
    }
}

/// `N word` in a libtest result line (`ok. 3 passed; 0 failed; 1 ignored; …`).
fn count(result: &str, word: &str) -> u32 {
    result
        .split(';')
        .filter_map(|part| {
            let mut it = part.split_whitespace().rev();
            (it.next() == Some(word)).then(|| it.next()?.parse().ok()).flatten()
        })
        .next()
        .unwrap_or(0)
}

/// One `cargo test` of the matrix and how it ended.
struct Outcome {
    version: String,
    suite: Suite,
    ok: bool,
    tally: Tally,
    secs: f64,
}

pub fn run(args: MatrixArgs) -> Result<()> {
    // `--versions none`: only the smaller set.
    let versions: Vec<String> =
        args.versions.iter().filter(|v| *v != "none").map(|v| cluster::normalize_version(v)).collect();
    let small: Vec<String> = args.small_versions.iter().map(|v| cluster::normalize_version(v)).collect();
    if versions.is_empty() && small.is_empty() {
        bail!("--versions and --small-versions list no version");
    }
    let failover = match args.failover_version.as_str() {
        "none" => None,
        v => Some(cluster::normalize_version(v)),
    };
    let mut runs: Vec<(String, Suite)> = Vec::new();
    if args.workspace {
        let suite = if args.bootstrap_nodes == 3 { Suite::Workspace3 } else { Suite::Workspace };
        runs.extend(versions.iter().map(|v| (v.clone(), suite)));
    } else {
        for (list, suite) in [(&versions, Suite::Client), (&small, Suite::Small)] {
            for v in list {
                runs.push((v.clone(), suite));
                if failover.as_ref() == Some(v) {
                    runs.push((v.clone(), Suite::Failover));
                }
            }
        }
        if let Some(v) = failover.as_ref().filter(|v| !versions.contains(v) && !small.contains(v)) {
            bail!("--failover-version {v} is not among --versions or --small-versions (or pass `none`)");
        }
    }
    let deadline = run_deadline()?;
    let t0 = Instant::now();
    // Build every test binary first, so that the brokers do not wait on the compiler.
    let mut build = vec!["test", "--no-run"];
    if args.workspace {
        build.push("--workspace");
    } else {
        let mut all: Vec<(&str, &str)> = Vec::new();
        for t in runs.iter().flat_map(|(_, suite)| suite.tests()) {
            if !all.contains(t) {
                all.push(*t);
            }
        }
        build.extend(test_args(&all));
    }
    let status = cargo(&build).status().context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", build.join(" "));
    }

    let mut outcomes = Vec::new();
    let result = (|| -> Result<()> {
        for (version, suite) in &runs {
            set_up(version, *suite)?;
            let t = Instant::now();
            let (ok, tally) = cargo_test(*suite, &args.args, version, deadline)?;
            outcomes.push(Outcome {
                version: version.clone(),
                suite: *suite,
                ok,
                tally,
                secs: t.elapsed().as_secs_f64(),
            });
        }
        Ok(())
    })();
    // Leave no broker of the matrix running, whatever happened.
    let down = xtask(&["kafka", "down"]);
    summary(&outcomes, t0.elapsed().as_secs_f64());
    result?;
    down?;
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if failed > 0 {
        bail!("{failed} of {} matrix runs failed (their output is above)", outcomes.len());
    }
    Ok(())
}

/// Clusters of `version` for `suite`, fresh unless already up at this version (the 1-node
/// cluster of the run before a failover run); a cluster the suite does not use is stopped.
fn set_up(version: &str, suite: Suite) -> Result<()> {
    let layout = cluster::Layout::new(super::workspace_root());
    let (one, three) = suite.clusters();
    for (nodes, wanted) in [(1u8, one), (3u8, three)] {
        let current = layout.cluster_version(nodes);
        let reusable = current.as_deref() == Some(version) && (nodes != 1 || secured(&layout));
        if current.is_some() && !(wanted && reusable) {
            xtask(&["kafka", "down", "--nodes", &nodes.to_string()])?;
        }
        if wanted {
            // A no-op when it is already up at this version; restarts a node that died.
            let n = nodes.to_string();
            let mut up = vec!["kafka", "up", "--nodes", &n, "--version", version];
            if nodes == 1 {
                up.push("--security");
            }
            xtask(&up)?;
        }
    }
    Ok(())
}

/// The 1-node cluster has its secured listeners (the security tests need them).
fn secured(layout: &cluster::Layout) -> bool {
    layout.kafka_dir().join("security").is_file()
}

fn summary(outcomes: &[Outcome], secs: f64) {
    println!("\n==> version matrix ({secs:.0} s in all)");
    for o in outcomes {
        let t = o.tally.totals();
        let verdict = if o.ok { "passed" } else { "FAILED" };
        println!(
            "  Kafka {:<7} {:<30} {verdict}: {} binaries, {} passed, {} failed, {} skipped, {} ignored ({:.0} s)",
            o.version,
            o.suite.name(),
            o.tally.binaries.len(),
            t.passed - t.skipped,
            t.failed,
            t.skipped,
            t.ignored,
            o.secs
        );
        for b in &o.tally.binaries {
            if b.passed + b.failed + b.ignored == 0 && b.finished {
                continue;
            }
            let end = if b.finished { "" } else { ", did not finish (crashed or killed)" };
            println!(
                "      {:<40} {:>4} passed {:>3} failed {:>3} skipped {:>3} ignored {:>5.0} s{end}",
                b.name,
                b.passed - b.skipped,
                b.failed,
                b.skipped,
                b.ignored,
                b.secs
            );
        }
        for f in &o.tally.failures {
            println!("    failed: {f}");
        }
        for s in &o.tally.skips {
            let mut reason = s.reason.clone();
            if reason.len() > 200 {
                let cut = (0..=200).rev().find(|&i| reason.is_char_boundary(i)).unwrap_or(0);
                reason.truncate(cut);
                reason.push('…');
            }
            println!("    skipped: {}::{}: {reason}", s.binary, s.test);
        }
    }
}

/// `--workspace --test A --test B …`: the named test targets, wherever they are, built with the
/// whole workspace's features (as `cargo xtask test` builds them), so nothing is rebuilt.
fn test_args<'a>(tests: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    let mut argv = vec!["--workspace"];
    for (_, t) in tests {
        argv.extend(["--test", t]);
    }
    argv
}

/// How long one run may take: `KW_TEST_TIMEOUT_SECS` (as for `cargo xtask test`), 40 minutes by
/// default. A run past it is killed (its whole process group) and counts as failed.
fn run_deadline() -> Result<Duration> {
    let secs = match std::env::var("KW_TEST_TIMEOUT_SECS") {
        Ok(v) => v.parse().map_err(|_| anyhow::anyhow!("KW_TEST_TIMEOUT_SECS={v:?} is not a number of seconds"))?,
        Err(_) => 40 * 60,
    };
    Ok(Duration::from_secs(secs))
}

/// `cargo test` of `suite` against the clusters just started, with `KAFKA_VERSION` naming their
/// version (for the tools the tests run) and `KAFKA_BOOTSTRAP*` as [`Suite::bootstrap`] says
/// (else removed, so that an outer setting does not point the tests elsewhere); every binary runs
/// (`--no-fail-fast`). Its output (stderr merged into stdout, so that a binary's name comes
/// before its results) is passed through and tallied. Returns whether it passed.
fn cargo_test(suite: Suite, extra: &[String], version: &str, limit: Duration) -> Result<(bool, Tally)> {
    let mut argv = vec!["test", "--no-fail-fast"];
    argv.extend(test_args(suite.tests()));
    argv.extend(["--", "--show-output"]);
    argv.extend(extra.iter().map(String::as_str));
    println!("\n==> Kafka {version}, {}: cargo {}", suite.name(), argv.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"exec "$0" "$@" 2>&1"#)
        .arg(cargo)
        .args(&argv)
        .current_dir(super::workspace_root())
        .env("KAFKA_VERSION", version)
        .stdout(Stdio::piped());
    match suite.bootstrap() {
        Some(bootstrap) => command.env("KAFKA_BOOTSTRAP", &bootstrap).env("KAFKA_BOOTSTRAP_3", &bootstrap),
        None => command.env_remove("KAFKA_BOOTSTRAP").env_remove("KAFKA_BOOTSTRAP_3"),
    };
    // Its own process group, so that a run past the deadline is killed with its test binaries.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().context("running cargo")?;
    let out = child.stdout.take().context("cargo's stdout")?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let reader = {
        let tally = Arc::clone(&tally);
        std::thread::spawn(move || {
            let mut stdout = std::io::stdout();
            for line in BufReader::new(out).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line);
                let _ = writeln!(stdout, "{line}");
                tally.lock().unwrap_or_else(|e| e.into_inner()).line(&line, Instant::now());
            }
        })
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > limit {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = reader.join();
    let mut tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    tally.end_section();
    tally.close_binary(Instant::now());
    match status {
        Some(s) => Ok((s.success(), tally)),
        None => {
            println!(
                "\n!!!! Kafka {version}, {}: not finished within {} s (KW_TEST_TIMEOUT_SECS): killed; the test running last above hung",
                suite.name(),
                limit.as_secs()
            );
            Ok((false, tally))
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's output as cargo and libtest print it (`--show-output`), stderr merged.
    const OUTPUT: &str = "\
     Running tests/consumer_group.rs (target/debug/deps/consumer_group-0123abcd)

running 4 tests
test a_kip_848_group_consumes_every_record_once ... ok
test classic_group ... ok
test slow_one ... ignored
test broken ... FAILED

successes:

---- a_kip_848_group_consumes_every_record_once stdout ----

!!!! SKIPPED a_kip_848_group_consumes_every_record_once: the broker (Kafka 3.9.2) has no group.version feature !!!!


---- classic_group stdout ----
consumed 100 records (none skipped)

successes:
    a_kip_848_group_consumes_every_record_once
    classic_group

failures:

---- broken stdout ----
SKIPPED is not counted in a failure

failures:
    broken

test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.20s

     Running unittests src/lib.rs (target/debug/deps/kafka_wire_tests-89abcdef)

running 1 test
test harness_tests::tls ... ok

successes:

---- harness_tests::tls stdout ----
[tls] skipped: .kafka/security does not exist

successes:
    harness_tests::tls

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

   Doc-tests kafka_wire

running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/crashes.rs (target/debug/deps/crashes-00ff00ff)

running 2 tests
error: test failed, to rerun pass `--test crashes`
";

    #[test]
    fn the_tally_counts_binaries_results_skips_and_crashes() {
        let mut tally = Tally::default();
        let now = Instant::now();
        for line in OUTPUT.lines() {
            tally.line(line, now);
        }
        tally.end_section();
        let names: Vec<&str> = tally.binaries.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["consumer_group", "kafka_wire_tests (src/lib.rs)", "kafka_wire (doc)", "crashes"]);
        let t = tally.totals();
        assert_eq!((t.passed, t.failed, t.ignored, t.skipped), (3, 1, 1, 2));
        assert!(!t.finished, "the last binary printed no result");
        let skipped: Vec<&str> = tally.skips.iter().map(|s| s.test.as_str()).collect();
        assert_eq!(skipped, ["a_kip_848_group_consumes_every_record_once", "harness_tests::tls"]);
        assert!(tally.skips[0].reason.starts_with("SKIPPED a_kip_848"), "{:?}", tally.skips[0]);
        assert_eq!(tally.skips[1].binary, "kafka_wire_tests (src/lib.rs)");
        assert_eq!(tally.failures, ["consumer_group: broken"]);
    }

    #[test]
    fn bootstrap_nodes_are_1_or_3() {
        assert_eq!(bootstrap_nodes("1"), Ok(1));
        assert_eq!(bootstrap_nodes("3"), Ok(3));
        for bad in ["2", "0", "three", ""] {
            assert!(bootstrap_nodes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_3_node_bootstrap_run_names_a_bootstrap() {
        assert_eq!(Suite::Workspace3.clusters(), (false, true), "no 1-node cluster in the run");
        assert_eq!(Suite::Workspace3.bootstrap(), Some(cluster::bootstrap_string(3)));
        assert_eq!(cluster::bootstrap_string(3).split(',').count(), 3);
        for suite in [Suite::Client, Suite::Small, Suite::Failover, Suite::Workspace] {
            assert_eq!(suite.bootstrap(), None, "{suite:?}");
        }
    }

    #[test]
    fn result_counts_are_read_by_word() {
        let r = "ok. 12 passed; 3 failed; 4 ignored; 0 measured; 7 filtered out; finished in 1.00s";
        assert_eq!((count(r, "passed"), count(r, "failed"), count(r, "ignored")), (12, 3, 4));
        assert_eq!(count(r, "skipped"), 0);
    }
}
