//! `cargo xtask kafka …`: a real Apache Kafka broker (1 or 3 KRaft nodes) from the
//! Maven Central jars, for the integration tests. See `kafka/cluster.rs` for the layout.

mod cluster;
mod matrix;
mod security;

pub use matrix::{run as matrix, MatrixArgs};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use cluster::{Layout, Lock, StartOutcome, CLUSTER_ID, READY_TIMEOUT, STOP_TIMEOUT};

#[derive(Args, Debug)]
pub struct KafkaArgs {
    #[command(subcommand)]
    cmd: KafkaCmd,
}

#[derive(Subcommand, Debug)]
enum KafkaCmd {
    /// Start a fresh local cluster (no-op if it is already up with the same layout).
    Up {
        /// 1 node (127.0.0.1:9092) or 3 nodes (127.0.0.1:19092-19094).
        #[arg(long, default_value_t = 1)]
        nodes: u8,
        /// Kafka version: 4.1.2 (default), 3.9 / 3.9.x (= 3.9.2), or an exact version.
        #[arg(long, default_value = cluster::DEFAULT_VERSION)]
        version: String,
        /// Root log level of the brokers (their output goes to .kafka/clusterN/nodeK/kafka.log).
        #[arg(long, default_value = "info")]
        log_level: String,
        /// 1 node only: add secured listeners next to the plaintext one (SASL_PLAINTEXT on 9192,
        /// SSL on 9193, SASL_SSL on 9194, SSL with client certificates required on 9195,
        /// OAUTHBEARER over SASL_SSL on 9196, SASL_PLAINTEXT re-authenticating every 4 s on
        /// 9197), with certificates and a SCRAM user made for the purpose; `.kafka/security` says
        /// where.
        #[arg(long)]
        security: bool,
    },
    /// Stop the cluster(s) (SIGTERM, then SIGKILL after 30 s) and delete their data.
    Down {
        /// Which cluster; default: every cluster that has been set up.
        #[arg(long)]
        nodes: Option<u8>,
    },
    /// Show the running nodes, bootstrap strings, versions and log paths.
    Status {
        /// Which cluster; default: both.
        #[arg(long)]
        nodes: Option<u8>,
    },
    /// SIGKILL one node (for failover tests); its data stays.
    Kill {
        #[arg(long)]
        node: u8,
        /// Which cluster; default: the only one set up, else 3.
        #[arg(long)]
        nodes: Option<u8>,
    },
    /// SIGSTOP one node (for blocked-broker tests): it keeps its sockets open but answers nothing.
    Pause {
        #[arg(long)]
        node: u8,
        /// Which cluster; default: the only one set up, else 3.
        #[arg(long)]
        nodes: Option<u8>,
    },
    /// SIGCONT a node stopped by `pause`.
    Resume {
        #[arg(long)]
        node: u8,
        /// Which cluster; default: the only one set up, else 3.
        #[arg(long)]
        nodes: Option<u8>,
    },
    /// Restart a killed node with its existing data and wait until it serves.
    Start {
        #[arg(long)]
        node: u8,
        /// Which cluster; default: the only one set up, else 3.
        #[arg(long)]
        nodes: Option<u8>,
    },
    /// Run a Kafka CLI tool (short name or main class) on the cached classpath.
    ///
    /// Short names: console-producer, console-consumer, topics, consumer-groups,
    /// transactions, producer-perf, consumer-perf, get-offsets, delete-records,
    /// metadata-quorum, features, log-dirs, configs, … (`kafka-topics.sh` works too).
    /// Jars: $KAFKA_VERSION, else the 1-node cluster's version, else the 3-node one's,
    /// else the last `up`'s. Everything after the tool name goes to the tool (`--help` too;
    /// use `cargo xtask kafka help tool` for this text).
    #[command(disable_help_flag = true)]
    Tool {
        /// Short name or fully qualified main class.
        tool: String,
        /// Arguments passed to the tool unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Only resolve (download) the jars of a version into .kafka/libs/<version>/.
    Libs {
        #[arg(long, default_value = cluster::DEFAULT_VERSION)]
        version: String,
    },
}

pub fn run(args: KafkaArgs) -> Result<()> {
    let layout = Layout::new(workspace_root());
    match args.cmd {
        KafkaCmd::Up { nodes, version, log_level, security } => {
            up(&layout, nodes, &cluster::normalize_version(&version), &log_level, security)
        }
        KafkaCmd::Down { nodes } => down(&layout, nodes),
        KafkaCmd::Status { nodes } => status(&layout, nodes),
        KafkaCmd::Kill { node, nodes } => kill(&layout, pick_cluster(&layout, nodes, node)?, node),
        KafkaCmd::Start { node, nodes } => start(&layout, pick_cluster(&layout, nodes, node)?, node),
        KafkaCmd::Pause { node, nodes } => pause(&layout, pick_cluster(&layout, nodes, node)?, node),
        KafkaCmd::Resume { node, nodes } => resume(&layout, pick_cluster(&layout, nodes, node)?, node),
        KafkaCmd::Tool { tool, args } => tool_cmd(&layout, &tool, &args),
        KafkaCmd::Libs { version } => ensure_libs(&layout, &cluster::normalize_version(&version)),
    }
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("xtask lives in the workspace");
    root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
}

fn rel(layout: &Layout, p: &Path) -> String {
    p.strip_prefix(&layout.root).unwrap_or(p).display().to_string()
}

/// `--nodes` for kill/start: explicit; else the only cluster that was set up; else 3.
fn pick_cluster(layout: &Layout, nodes: Option<u8>, node: u8) -> Result<u8> {
    let nodes = match nodes {
        Some(n) => n,
        None => {
            let set_up: Vec<u8> = [1, 3].into_iter().filter(|&c| layout.cluster_version(c).is_some()).collect();
            match set_up.as_slice() {
                [only] => *only,
                _ if node > 1 => 3,
                [] => bail!("no cluster is set up: run `cargo xtask kafka up`"),
                _ => bail!("both a 1-node and a 3-node cluster exist: pass --nodes 1 or --nodes 3"),
            }
        }
    };
    cluster::check_node(nodes, node)?;
    Ok(nodes)
}

// ---------------------------------------------------------------------------------------------
// Maven

fn log4j2_version(kafka: &str) -> &'static str {
    let mut it = kafka.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(4), it.next().unwrap_or(0));
    if major == 4 && minor <= 1 {
        "2.24.3"
    } else {
        // 4.2.0 ships 2.25.3 (later 4.2/4.3 patches 2.25.4/2.25.5; check `mvn dependency:tree`).
        "2.25.3"
    }
}

fn pom(version: &str) -> String {
    let logging = if cluster::is_3x(version) {
        "    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>\n"
            .to_string()
    } else {
        let l = log4j2_version(version);
        format!(
            "    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{l}</version></dependency>\n\
             \x20   <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>{l}</version></dependency>\n\
             \x20   <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{l}</version></dependency>\n"
        )
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by `cargo xtask kafka` (xtask/src/kafka.rs): a dependency holder, nothing is built. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.xtask</groupId><artifactId>kafka-libs</artifactId><version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{version}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>1.7.36</version></dependency>
{logging}  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version>
  </plugin></plugins></build>
</project>
"#
    )
}

/// Resolve the runtime jars of `version` into `.kafka/libs/<version>/` unless already there.
fn ensure_libs(layout: &Layout, version: &str) -> Result<()> {
    if layout.libs_ready(version) {
        return Ok(());
    }
    let _lock = Lock::acquire(&layout.kafka_dir().join(format!("libs-{version}.lock")), Duration::from_secs(900))?;
    if layout.libs_ready(version) {
        return Ok(());
    }
    let dir = layout.libs_dir(version);
    if Command::new("mvn").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        bail!("`mvn` not found: install Maven (and Java 17), e.g. `apt-get install -y openjdk-17-jdk-headless maven`");
    }
    let t = Instant::now();
    let pom_path = layout.maven_dir(version).join("pom.xml");
    cluster::write_if_changed(&pom_path, &pom(version))?;
    let partial = dir.with_file_name(format!("{version}.partial"));
    let _ = fs::remove_dir_all(&partial);
    let _ = fs::remove_dir_all(&dir);
    println!("resolving Kafka {version} jars with Maven into {} (first use; ~/.m2 caches them) …", rel(layout, &dir));
    let status = Command::new("mvn")
        .args(["-B", "-q", "-Dstyle.color=never", "-f"])
        .arg(&pom_path)
        .arg("dependency:copy-dependencies")
        .arg("-DincludeScope=runtime")
        .arg(format!("-DoutputDirectory={}", partial.display()))
        .stdin(Stdio::null())
        .output()
        .context("running mvn")?;
    // Captured: with -q Maven prints only errors, plus stray ANSI resets (Debian's 3.8).
    if !status.status.success() {
        let text = format!("{}{}", String::from_utf8_lossy(&status.stdout), String::from_utf8_lossy(&status.stderr));
        bail!(
            "mvn dependency:copy-dependencies failed ({}) for {}:\n{}",
            status.status,
            pom_path.display(),
            text.replace("\x1b[0m", "").trim()
        );
    }
    let core = partial.join(format!("kafka_2.13-{version}.jar"));
    if !core.is_file() {
        bail!("Maven did not produce {}", core.display());
    }
    let jars = fs::read_dir(&partial)?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "jar")))
        .count();
    fs::write(partial.join(".complete"), format!("{jars} jars\n"))?;
    fs::rename(&partial, &dir)?;
    println!("resolved {jars} jars in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// up / down / status / kill / start

/// The local 1-node cluster's broker process and its bootstrap address, if it runs: whose CPU
/// `cargo xtask bench` reads around each client's run.
pub(crate) fn local_broker() -> Option<(u32, String)> {
    let layout = Layout::new(workspace_root());
    layout.cluster_version(1)?;
    Some((cluster::node_pid(&layout, 1, 1)?, cluster::bootstrap_string(1)))
}

fn running_nodes(layout: &Layout, nodes: u8) -> Vec<(u8, u32)> {
    (1..=nodes).filter_map(|n| cluster::node_pid(layout, nodes, n).map(|p| (n, p))).collect()
}

/// `.kafka/security`: the secured listeners of the 1-node cluster, for the test harness.
fn security_file(layout: &Layout) -> PathBuf {
    layout.kafka_dir().join("security")
}

fn up(layout: &Layout, nodes: u8, version: &str, log_level: &str, security: bool) -> Result<()> {
    cluster::check_nodes(nodes)?;
    if security && nodes != 1 {
        bail!("--security is for the 1-node cluster only");
    }
    let t0 = Instant::now();
    let _lock = Lock::cluster(layout, nodes)?;
    let bootstrap = cluster::bootstrap_string(nodes);
    let running = running_nodes(layout, nodes);
    if !running.is_empty() {
        let current = layout.cluster_version(nodes).unwrap_or_default();
        if current != version {
            bail!(
                "the {nodes}-node cluster is running Kafka {current}; run `cargo xtask kafka down --nodes {nodes}` first"
            );
        }
        let secured = nodes == 1 && security::dir(&layout.cluster_dir(1)).is_dir();
        if security && !secured {
            // Restarting would take the cluster (and its topics) from whoever else uses it: go on
            // without the secured listeners, whose tests then say that they skip.
            eprintln!(
                "warning: the running 1-node cluster has no secured listeners (it was started without --security); \
                 the security tests will skip. `cargo xtask kafka down --nodes 1` and `up --security` add them."
            );
        }
        if running.len() == usize::from(nodes) {
            // All running (maybe still starting, if another `up` just started them).
            cluster::wait_serving(nodes, READY_TIMEOUT)?;
            write_up_files(layout, nodes, version)?;
            println!("Kafka {version} ({nodes} node{}) is already up at {bootstrap}", plural(nodes));
            return Ok(());
        }
        // Partly up: restart the missing nodes with their data.
        let missing: Vec<u8> = (1..=nodes).filter(|n| !running.iter().any(|(r, _)| r == n)).collect();
        let mut spawned = Vec::new();
        for &n in &missing {
            cluster::check_ports_free(nodes, n)?;
            println!("node {n} is not running; restarting it with its existing data");
            spawned.push(cluster::spawn_node(layout, nodes, n, version)?);
        }
        cluster::wait_ready(layout, nodes, &spawned, READY_TIMEOUT)?;
        write_up_files(layout, nodes, version)?;
        println!(
            "Kafka {version} ({nodes} node{}) is up at {bootstrap} ({:.1} s)",
            plural(nodes),
            t0.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    // Fresh start.
    let _ = fs::remove_file(layout.bootstrap_file(nodes));
    if nodes == 1 {
        let _ = fs::remove_file(security_file(layout));
    }
    for n in 1..=nodes {
        cluster::check_ports_free(nodes, n)?;
    }
    ensure_libs(layout, version)?;
    let t_cluster = Instant::now();
    let cdir = layout.cluster_dir(nodes);
    // Keep nothing from a previous run (logs included).
    if cdir.exists() {
        fs::remove_dir_all(&cdir).with_context(|| format!("removing {}", cdir.display()))?;
    }
    fs::create_dir_all(&cdir)?;
    cluster::write_if_changed(&layout.server_log4j2(nodes), &cluster::server_log4j2(log_level))?;
    cluster::write_if_changed(&layout.server_log4j1(nodes), &cluster::server_log4j1(log_level))?;
    cluster::ensure_tools_log_configs(layout)?;
    let material = if security {
        println!("making the secured listeners' certificates (keytool, openssl) …");
        Some(security::generate(&security::dir(&cdir))?)
    } else {
        None
    };
    for n in 1..=nodes {
        fs::create_dir_all(layout.data_dir(nodes, n))?;
        let mut properties = cluster::server_properties(layout, nodes, n, version);
        if let Some(m) = &material {
            properties = security::server_properties(&properties, m);
        }
        cluster::write_if_changed(&layout.server_properties(nodes, n), &properties)?;
    }
    cluster::write_if_changed(&layout.cluster_version_file(nodes), &format!("{version}\n"))?;

    println!("formatting KRaft storage (cluster id {CLUSTER_ID}) …");
    let t_format = Instant::now();
    let scram = if security { security::format_args() } else { Vec::new() };
    format_storage(layout, nodes, version, &scram)?;
    println!("formatted in {:.1} s", t_format.elapsed().as_secs_f64());

    println!("starting Kafka {version}: {nodes} node{} …", plural(nodes));
    let mut spawned = Vec::new();
    for n in 1..=nodes {
        match cluster::spawn_node(layout, nodes, n, version) {
            Ok(s) => spawned.push(s),
            Err(e) => {
                kill_all(layout, nodes, &spawned);
                return Err(e.into());
            }
        }
    }
    if let Err(e) = cluster::wait_ready(layout, nodes, &spawned, READY_TIMEOUT) {
        kill_all(layout, nodes, &spawned);
        return Err(anyhow::Error::from(e).context(format!("Kafka {version} did not start; the nodes were killed")));
    }
    write_up_files(layout, nodes, version)?;
    if let Some(m) = &material {
        cluster::write_if_changed(&security_file(layout), &security::harness_file(m))?;
        println!("  secured listeners: {}", rel(layout, &security_file(layout)));
    }
    println!(
        "Kafka {version} ({nodes} node{}) is up at {bootstrap}: started in {:.1} s ({:.1} s in all)",
        plural(nodes),
        t_cluster.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    for s in &spawned {
        println!("  node {}: pid {}, log {}", s.node, s.pid, rel(layout, &layout.log_file(nodes, s.node)));
    }
    println!("  bootstrap written to {}", rel(layout, &layout.bootstrap_file(nodes)));
    Ok(())
}

fn plural(n: u8) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn write_up_files(layout: &Layout, nodes: u8, version: &str) -> Result<()> {
    cluster::write_if_changed(&layout.bootstrap_file(nodes), &format!("{}\n", cluster::bootstrap_string(nodes)))?;
    cluster::write_if_changed(&layout.version_file(), &format!("{version}\n"))?;
    Ok(())
}

/// `kafka.tools.StorageTool format -t ID -c server.properties` for every node, in parallel
/// (static quorum: no --standalone / --initial-controllers), with `extra` arguments (SCRAM
/// credentials).
fn format_storage(layout: &Layout, nodes: u8, version: &str, extra: &[String]) -> Result<()> {
    let mut children = Vec::new();
    for n in 1..=nodes {
        let props = layout.server_properties(nodes, n);
        let props = props.to_string_lossy();
        let mut args = vec!["format", "-t", CLUSTER_ID, "-c", &props];
        args.extend(extra.iter().map(String::as_str));
        let mut cmd = cluster::tool_command(layout, version, "kafka.tools.StorageTool", &args)?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        children.push((n, cmd.spawn().context("starting java (StorageTool format)")?));
    }
    for (n, child) in children {
        let (out, timed_out) = cluster::wait_with_timeout(child, None, Duration::from_secs(120))?;
        if timed_out || !out.status.success() {
            bail!(
                "formatting node {n} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

/// After a failed start: SIGKILL the JVMs we spawned, so the next `up` starts clean.
fn kill_all(layout: &Layout, nodes: u8, spawned: &[cluster::Spawned]) {
    for s in spawned {
        let marker = layout.server_properties(nodes, s.node).to_string_lossy().into_owned();
        if cluster::pid_alive(s.pid, &marker) {
            let _ = cluster::signal(s.pid, "KILL");
            cluster::wait_dead(&[(s.pid, marker)], Duration::from_secs(15));
        }
    }
    for n in 1..=nodes {
        let _ = cluster::kill_node_locked(layout, nodes, n);
    }
}

fn down(layout: &Layout, nodes: Option<u8>) -> Result<()> {
    let clusters: Vec<u8> = match nodes {
        Some(n) => {
            cluster::check_nodes(n)?;
            vec![n]
        }
        None => [1, 3].into_iter().filter(|&c| layout.cluster_dir(c).exists()).collect(),
    };
    if clusters.is_empty() {
        println!("no cluster is set up");
        return Ok(());
    }
    let _locks = clusters.iter().map(|&c| Lock::cluster(layout, c)).collect::<Result<Vec<_>, _>>()?;
    // SIGTERM every node of every selected cluster at once, then wait. A 3-node cluster
    // with a node down gets SIGKILL right away: its brokers' controlled shutdown can hang
    // for minutes once the controller quorum is lost, and the data is deleted anyway.
    let mut pids = Vec::new();
    for &c in &clusters {
        let _ = fs::remove_file(layout.bootstrap_file(c));
        if c == 1 {
            let _ = fs::remove_file(security_file(layout));
        }
        let running = running_nodes(layout, c);
        let sig = if c > 1 && running.len() < usize::from(c) { "KILL" } else { "TERM" };
        for (n, pid) in running {
            println!("stopping node {n} of the {c}-node cluster (pid {pid}, SIG{sig})");
            let _ = cluster::signal(pid, sig);
            pids.push((pid, layout.server_properties(c, n).to_string_lossy().into_owned()));
        }
    }
    let t = Instant::now();
    let left = cluster::wait_dead(&pids, STOP_TIMEOUT);
    for (pid, _) in &left {
        println!("pid {pid} still running after {} s: SIGKILL", STOP_TIMEOUT.as_secs());
        let _ = cluster::signal(*pid, "KILL");
    }
    if !cluster::wait_dead(&left, Duration::from_secs(15)).is_empty() {
        bail!("some broker processes survived SIGKILL");
    }
    if !pids.is_empty() {
        println!("stopped in {:.1} s", t.elapsed().as_secs_f64());
    }
    for &c in &clusters {
        // Delete data and pids; keep server.properties and kafka.log for post-mortems
        // (the next `up` removes the whole cluster dir).
        for n in 1..=c {
            let _ = fs::remove_dir_all(layout.data_dir(c, n));
            let _ = fs::remove_file(layout.pid_file(c, n));
        }
        let _ = fs::remove_file(layout.cluster_version_file(c));
        println!("{c}-node cluster is down (data removed; logs kept in {})", rel(layout, &layout.cluster_dir(c)));
    }
    Ok(())
}

fn status(layout: &Layout, nodes: Option<u8>) -> Result<()> {
    let clusters = match nodes {
        Some(n) => {
            cluster::check_nodes(n)?;
            vec![n]
        }
        None => vec![1, 3],
    };
    let libs: Vec<String> = fs::read_dir(layout.kafka_dir().join("libs"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join(".complete").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    println!("cached jars: {}", if libs.is_empty() { "none".to_string() } else { libs.join(", ") });
    println!("tools version: {}", layout.tools_version());
    for c in clusters {
        let Some(version) = layout.cluster_version(c) else {
            println!("{c}-node cluster: not set up");
            continue;
        };
        let running = running_nodes(layout, c);
        let state = if running.is_empty() {
            "down"
        } else if running.len() == usize::from(c) {
            "up"
        } else {
            "degraded"
        };
        println!("{c}-node cluster: {state}, Kafka {version}, bootstrap {}", cluster::bootstrap_string(c));
        for n in 1..=c {
            let log = rel(layout, &layout.log_file(c, n));
            match cluster::node_pid(layout, c, n) {
                Some(pid) => {
                    let health = if cluster::node_paused(layout, c, n) {
                        "stopped by SIGSTOP (`cargo xtask kafka resume` continues it)"
                    } else if cluster::node_healthy(c, n) {
                        "serving"
                    } else {
                        "not answering"
                    };
                    let rss = rss_mib(pid).map(|m| format!(", RSS {m} MiB")).unwrap_or_default();
                    println!(
                        "  node {n}: running (pid {pid}{rss}), {} {health}, log {log}",
                        cluster::broker_addr(c, n)
                    );
                }
                None => println!("  node {n}: not running, log {log}"),
            }
        }
    }
    Ok(())
}

fn rss_mib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn kill(layout: &Layout, nodes: u8, node: u8) -> Result<()> {
    match cluster::kill_node(layout, nodes, node)? {
        Some(pid) => println!("killed node {node} of the {nodes}-node cluster (pid {pid})"),
        None => println!("node {node} of the {nodes}-node cluster was not running"),
    }
    Ok(())
}

fn pause(layout: &Layout, nodes: u8, node: u8) -> Result<()> {
    let pid = cluster::pause_node(layout, nodes, node)?;
    println!(
        "stopped node {node} of the {nodes}-node cluster (pid {pid}, SIGSTOP); `resume --node {node}` continues it"
    );
    Ok(())
}

fn resume(layout: &Layout, nodes: u8, node: u8) -> Result<()> {
    match cluster::resume_node(layout, nodes, node)? {
        Some(pid) => println!("continued node {node} of the {nodes}-node cluster (pid {pid}, SIGCONT)"),
        None => println!("node {node} of the {nodes}-node cluster is not running"),
    }
    Ok(())
}

fn start(layout: &Layout, nodes: u8, node: u8) -> Result<()> {
    let t = Instant::now();
    match cluster::start_node(layout, nodes, node)? {
        StartOutcome::AlreadyRunning(pid) => {
            println!("node {node} of the {nodes}-node cluster is already running (pid {pid})")
        }
        StartOutcome::Started(pid) => println!(
            "node {node} of the {nodes}-node cluster is up (pid {pid}, {}) in {:.1} s",
            cluster::broker_addr(nodes, node),
            t.elapsed().as_secs_f64()
        ),
    }
    Ok(())
}

fn tool_cmd(layout: &Layout, tool: &str, args: &[String]) -> Result<()> {
    let version = layout.tools_version();
    ensure_libs(layout, &version)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let status = cluster::tool_command(layout, &version, tool, &args)?.status().context("running java")?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}
