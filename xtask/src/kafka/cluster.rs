//! Local Apache Kafka clusters for development and tests: file layout, broker
//! configuration, and process management.
//!
//! std only (no anyhow, no clap, no libc), because this one file is shared:
//! `xtask/src/kafka.rs` uses it for `cargo xtask kafka …`, and the test harness
//! (`tests/src/lib.rs`) includes it with `#[path]` so that `kafka_node_kill` /
//! `kafka_node_start` run the very same code without calling cargo (which would
//! block on the build-directory lock that `cargo test` holds).
//!
//! Layout, all under `<workspace>/.kafka/` (gitignored):
//!
//! ```text
//! libs/<version>/*.jar            runtime classpath, resolved once with Maven
//! maven/<version>/pom.xml         the generated dependency-holder pom
//! config/tools-log4j2.properties  quiet logging for the CLI tools (WARN to stderr)
//! config/tools-log4j.properties   the same for 3.9 (reload4j)
//! version                         Kafka version of the most recent `up` (see `tools_version`)
//! bootstrap                       bootstrap string of the 1-node cluster, while it is up
//! bootstrap3                      bootstrap string of the 3-node cluster, while it is up
//! cluster1/                       the 1-node cluster (127.0.0.1:9092, controller 9093)
//! cluster3/                       the 3-node cluster (127.0.0.1:19092-19094, controllers 29092-29094)
//!                                 (every port + `$KAFKA_PORT_OFFSET`, if set)
//!   version                       Kafka version this cluster was formatted with
//!   log4j2.properties             broker logging (4.x); log4j.properties (3.9)
//!   nodeN/server.properties
//!   nodeN/data/                   log.dirs (and the KRaft metadata log)
//!   nodeN/kafka.log               stdout+stderr of the broker JVM
//!   nodeN/pid
//! ```

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Version used when none is given.
pub const DEFAULT_VERSION: &str = "4.1.2";
/// The 3.9 patch release used for `--version 3.9` / `3.9.x`.
pub const DEFAULT_3_9: &str = "3.9.2";
/// Fixed KRaft cluster id (22-char URL-safe base64 of 16 bytes).
pub const CLUSTER_ID: &str = "MkU3OEVBNTcwNTJENDM2Qk";
/// How long `up` / `start` wait for a node to accept requests.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `down` waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Logged by `KafkaRaftServer.startup()` once the broker is unfenced and serving.
pub const STARTED_LINE: &str = "Kafka Server started";

const POLL: Duration = Duration::from_millis(100);

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Where everything lives.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The workspace root.
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }
    /// `<root>/.kafka`, with symlinks resolved: a worktree whose `.kafka` links to another
    /// checkout's must name the brokers' files as the brokers were started with them, or the
    /// pid checks (which match the JVM's command line) would think a running node is down.
    pub fn kafka_dir(&self) -> PathBuf {
        let dir = self.root.join(".kafka");
        dir.canonicalize().unwrap_or(dir)
    }
    pub fn libs_dir(&self, version: &str) -> PathBuf {
        self.kafka_dir().join("libs").join(version)
    }
    pub fn maven_dir(&self, version: &str) -> PathBuf {
        self.kafka_dir().join("maven").join(version)
    }
    pub fn config_dir(&self) -> PathBuf {
        self.kafka_dir().join("config")
    }
    /// Version of the most recent `up`; the tools use its classpath.
    pub fn version_file(&self) -> PathBuf {
        self.kafka_dir().join("version")
    }
    pub fn bootstrap_file(&self, nodes: u8) -> PathBuf {
        if nodes == 1 {
            self.kafka_dir().join("bootstrap")
        } else {
            self.kafka_dir().join(format!("bootstrap{nodes}"))
        }
    }
    pub fn cluster_dir(&self, nodes: u8) -> PathBuf {
        self.kafka_dir().join(format!("cluster{nodes}"))
    }
    pub fn cluster_version_file(&self, nodes: u8) -> PathBuf {
        self.cluster_dir(nodes).join("version")
    }
    pub fn node_dir(&self, nodes: u8, n: u8) -> PathBuf {
        self.cluster_dir(nodes).join(format!("node{n}"))
    }
    pub fn server_properties(&self, nodes: u8, n: u8) -> PathBuf {
        self.node_dir(nodes, n).join("server.properties")
    }
    pub fn data_dir(&self, nodes: u8, n: u8) -> PathBuf {
        self.node_dir(nodes, n).join("data")
    }
    pub fn log_file(&self, nodes: u8, n: u8) -> PathBuf {
        self.node_dir(nodes, n).join("kafka.log")
    }
    pub fn pid_file(&self, nodes: u8, n: u8) -> PathBuf {
        self.node_dir(nodes, n).join("pid")
    }
    pub fn server_log4j2(&self, nodes: u8) -> PathBuf {
        self.cluster_dir(nodes).join("log4j2.properties")
    }
    pub fn server_log4j1(&self, nodes: u8) -> PathBuf {
        self.cluster_dir(nodes).join("log4j.properties")
    }
    pub fn tools_log4j2(&self) -> PathBuf {
        self.config_dir().join("tools-log4j2.properties")
    }
    pub fn tools_log4j1(&self) -> PathBuf {
        self.config_dir().join("tools-log4j.properties")
    }
    /// The version a cluster was set up with, if it was.
    pub fn cluster_version(&self, nodes: u8) -> Option<String> {
        read_trimmed(&self.cluster_version_file(nodes))
    }
    /// Version whose classpath the tools use: `$KAFKA_VERSION`, else the 1-node cluster's,
    /// else the 3-node cluster's, else `.kafka/version` (the last `up`, kept after `down`),
    /// else the default.
    pub fn tools_version(&self) -> String {
        std::env::var("KAFKA_VERSION")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| normalize_version(&v))
            .or_else(|| self.cluster_version(1))
            .or_else(|| self.cluster_version(3))
            .or_else(|| read_trimmed(&self.version_file()))
            .unwrap_or_else(|| DEFAULT_VERSION.to_string())
    }
    /// The libs dir is complete (Maven finished and the marker was written).
    pub fn libs_ready(&self, version: &str) -> bool {
        self.libs_dir(version).join(".complete").is_file()
    }
    /// `<libs>/*`, for `java -cp` (the JVM expands the wildcard itself).
    pub fn classpath(&self, version: &str) -> String {
        format!("{}/*", self.libs_dir(version).display())
    }
}

/// Read a small file and trim it; `None` if missing or empty.
pub fn read_trimmed(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// `3.9`, `3.9.x` → the chosen 3.9 patch; `4.1`, `4.1.x` → 4.1.2; anything else as given.
pub fn normalize_version(v: &str) -> String {
    let v = v.trim();
    let base = v.strip_suffix(".x").unwrap_or(v);
    match base {
        "3.9" => DEFAULT_3_9.to_string(),
        "4.1" | "4" => DEFAULT_VERSION.to_string(),
        _ => v.to_string(),
    }
}

/// Kafka 3.x: log4j 1 (reload4j) instead of log4j2, and no 4.x-only configs.
pub fn is_3x(version: &str) -> bool {
    version.split('.').next().and_then(|m| m.parse::<u32>().ok()).unwrap_or(4) < 4
}

/// Is `version` `major.minor` or later? (Unparsable parts count as 0.)
fn at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut it = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

/// `$KAFKA_PORT_OFFSET` (default 0), added to every port of both clusters, so that a second
/// checkout (a worktree with its own `.kafka/`) can run its clusters beside this one's.
pub fn port_offset() -> u16 {
    std::env::var("KAFKA_PORT_OFFSET").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

pub fn broker_port(nodes: u8, n: u8) -> u16 {
    port_offset() + if nodes == 1 { 9092 } else { 19091 + u16::from(n) }
}

pub fn controller_port(nodes: u8, n: u8) -> u16 {
    port_offset() + if nodes == 1 { 9093 } else { 29091 + u16::from(n) }
}

pub fn broker_addr(nodes: u8, n: u8) -> String {
    format!("127.0.0.1:{}", broker_port(nodes, n))
}

pub fn bootstrap_string(nodes: u8) -> String {
    (1..=nodes).map(|n| broker_addr(nodes, n)).collect::<Vec<_>>().join(",")
}

pub fn check_nodes(nodes: u8) -> io::Result<()> {
    match nodes {
        1 | 3 => Ok(()),
        _ => Err(err(format!("--nodes must be 1 or 3, not {nodes}"))),
    }
}

pub fn check_node(nodes: u8, n: u8) -> io::Result<()> {
    check_nodes(nodes)?;
    if n == 0 || n > nodes {
        return Err(err(format!("--node must be in 1..={nodes} for the {nodes}-node cluster, not {n}")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Configuration files

/// Broker heap per node.
pub fn heap_mb(nodes: u8) -> u32 {
    if nodes == 1 {
        512
    } else {
        384
    }
}

/// `server.properties` for node `n` of the `nodes`-node cluster (static quorum, combined mode).
pub fn server_properties(layout: &Layout, nodes: u8, n: u8, version: &str) -> String {
    let voters =
        (1..=nodes).map(|i| format!("{i}@127.0.0.1:{}", controller_port(nodes, i))).collect::<Vec<_>>().join(",");
    let (bp, cp) = (broker_port(nodes, n), controller_port(nodes, n));
    let (rf, min_isr) = if nodes == 1 { (1, 1) } else { (3, 2) };
    let data = layout.data_dir(nodes, n);
    let mut p = format!(
        "\
# Generated by `cargo xtask kafka up` (xtask/src/kafka/cluster.rs); rewritten on every fresh `up`.
# Kafka {version}, node {n} of {nodes}. Java .properties: no inline comments.
process.roles=broker,controller
node.id={n}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{bp},CONTROLLER://127.0.0.1:{cp}
advertised.listeners=PLAINTEXT://127.0.0.1:{bp}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
auto.create.topics.enable=false
num.partitions=1
default.replication.factor={rf}
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=5
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=5
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
log.cleaner.backoff.ms=200
log.cleaner.min.cleanable.ratio=0.01
log.cleaner.dedupe.buffer.size=4194304
log.initial.task.delay.ms=100
log.segment.delete.delay.ms=1000
num.network.threads=2
num.io.threads=4
background.threads=4
",
        data = data.display()
    );
    if !is_3x(version) {
        p.push_str(&format!(
            "share.coordinator.state.topic.replication.factor={rf}\n\
             share.coordinator.state.topic.min.isr={min_isr}\n"
        ));
    }
    if nodes > 1 {
        p.push_str("broker.heartbeat.interval.ms=500\nbroker.session.timeout.ms=3000\n");
    }
    p
}

/// Broker logging for 4.x (log4j2 properties): to stdout, i.e. `nodeN/kafka.log`.
/// `KafkaRaftServer` stays at INFO whatever the level, for the readiness line.
pub fn server_log4j2(level: &str) -> String {
    format!(
        "\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = STDOUT
logger.srv.name = kafka.server.KafkaRaftServer
logger.srv.level = info
"
    )
}

/// Broker logging for 3.9 (reload4j).
pub fn server_log4j1(level: &str) -> String {
    let level = level.to_ascii_uppercase();
    format!(
        "\
log4j.rootLogger={level}, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
"
    )
}

const TOOLS_LOG4J2: &str = "\
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = STDERR
";

const TOOLS_LOG4J1: &str = "\
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
";

/// Write `path` unless it already has exactly `content`.
pub fn write_if_changed(path: &Path, content: &str) -> io::Result<()> {
    if fs::read_to_string(path).ok().as_deref() == Some(content) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    // Write-then-rename, so a concurrent reader never sees a half-written file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, content)?;
    fs::rename(&tmp, path)
}

pub fn ensure_tools_log_configs(layout: &Layout) -> io::Result<()> {
    write_if_changed(&layout.tools_log4j2(), TOOLS_LOG4J2)?;
    write_if_changed(&layout.tools_log4j1(), TOOLS_LOG4J1)
}

/// `-D` flags selecting a logging config; both are passed, each backend reads its own.
fn log_flags(log4j2: &Path, log4j1: &Path) -> [String; 2] {
    [
        format!("-Dlog4j2.configurationFile={}", log4j2.display()),
        format!("-Dlog4j.configuration=file:{}", log4j1.display()),
    ]
}

pub fn java() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if Path::new(&home).join("bin/java").is_file() => Path::new(&home).join("bin/java"),
        _ => PathBuf::from("java"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tools

/// Short tool names (also accepted with a `kafka-` prefix and `.sh` suffix) → main class.
pub const TOOLS: &[(&str, &str)] = &[
    ("console-producer", "org.apache.kafka.tools.ConsoleProducer"),
    ("console-consumer", "org.apache.kafka.tools.consumer.ConsoleConsumer"),
    ("topics", "org.apache.kafka.tools.TopicCommand"),
    ("consumer-groups", "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"),
    ("transactions", "org.apache.kafka.tools.TransactionsCommand"),
    ("producer-perf", "org.apache.kafka.tools.ProducerPerformance"),
    ("producer-perf-test", "org.apache.kafka.tools.ProducerPerformance"),
    ("consumer-perf", "org.apache.kafka.tools.ConsumerPerformance"),
    ("consumer-perf-test", "org.apache.kafka.tools.ConsumerPerformance"),
    ("get-offsets", "org.apache.kafka.tools.GetOffsetShell"),
    ("delete-records", "org.apache.kafka.tools.DeleteRecordsCommand"),
    ("metadata-quorum", "org.apache.kafka.tools.MetadataQuorumCommand"),
    ("features", "org.apache.kafka.tools.FeatureCommand"),
    ("log-dirs", "org.apache.kafka.tools.LogDirsCommand"),
    ("leader-election", "org.apache.kafka.tools.LeaderElectionCommand"),
    ("verifiable-producer", "org.apache.kafka.tools.VerifiableProducer"),
    ("verifiable-consumer", "org.apache.kafka.tools.VerifiableConsumer"),
    ("configs", "kafka.admin.ConfigCommand"),
    ("dump-log", "kafka.tools.DumpLogSegments"),
    ("storage", "kafka.tools.StorageTool"),
];

/// Resolve a short name for `version`; anything containing a `.` is taken as a main class.
pub fn main_class(name: &str, version: &str) -> io::Result<String> {
    if name.contains('.') && !name.ends_with(".sh") {
        return Ok(name.to_string());
    }
    let short = name.trim_end_matches(".sh");
    let short = short.strip_prefix("kafka-").unwrap_or(short);
    // 3.9 still has the console producer in core (the other short names are the same).
    if short == "console-producer" && is_3x(version) {
        return Ok("kafka.tools.ConsoleProducer".to_string());
    }
    // 4.4 has these two only in kafka-tools (4.1 only in core; 4.2 and 4.3 untried).
    if at_least(version, 4, 4) {
        match short {
            "configs" => return Ok("org.apache.kafka.tools.ConfigCommand".to_string()),
            "dump-log" => return Ok("org.apache.kafka.tools.DumpLogSegments".to_string()),
            _ => {}
        }
    }
    TOOLS.iter().find(|(s, _)| *s == short).map(|(_, c)| c.to_string()).ok_or_else(|| {
        let names: Vec<_> = TOOLS.iter().map(|(s, _)| *s).collect();
        err(format!("unknown tool {name:?}: use a main class or one of {}", names.join(", ")))
    })
}

/// `java … <MainClass> args` on the cached classpath, with the quiet tools logging.
/// The libs for `version` must already be resolved.
pub fn tool_command(layout: &Layout, version: &str, name: &str, args: &[&str]) -> io::Result<Command> {
    let class = main_class(name, version)?;
    if !layout.libs_ready(version) {
        return Err(err(format!(
            "no Kafka {version} jars in {}: run `cargo xtask kafka up`",
            layout.libs_dir(version).display()
        )));
    }
    ensure_tools_log_configs(layout)?;
    let mut cmd = Command::new(java());
    if class.ends_with("Performance") || class.contains("Verifiable") {
        cmd.args(["-Xmx512m", "-XX:+UseG1GC"]);
    } else {
        // Short-lived admin tools: start fast.
        cmd.args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]);
    }
    cmd.arg("-Djava.awt.headless=true")
        .args(log_flags(&layout.tools_log4j2(), &layout.tools_log4j1()))
        .arg("-cp")
        .arg(layout.classpath(version))
        .arg(&class)
        .args(args.iter().map(|a| renamed_option(&class, version, a).unwrap_or(a)));
    Ok(cmd)
}

/// The new name of a console tool's option that Kafka 4.2 deprecated (KIP-1147), for that
/// version on. The old names still work there, but the console consumer then prints a
/// deprecation notice on standard output, among the records a caller reads.
fn renamed_option(class: &str, version: &str, arg: &str) -> Option<&'static str> {
    if !at_least(version, 4, 2) {
        return None;
    }
    let tool = class.rsplit('.').next()?;
    match (tool, arg) {
        ("ConsoleConsumer" | "ConsoleShareConsumer", "--property") => Some("--formatter-property"),
        ("ConsoleConsumer" | "ConsoleShareConsumer", "--consumer-property") => Some("--command-property"),
        ("ConsoleConsumer" | "ConsoleShareConsumer", "--consumer.config") => Some("--command-config"),
        ("ConsoleProducer", "--property") => Some("--reader-property"),
        ("ConsoleProducer", "--producer-property") => Some("--command-property"),
        ("ConsoleProducer", "--producer.config") => Some("--command-config"),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Is `pid` a live (not zombie) process whose command line contains `marker`?
pub fn pid_alive(pid: u32, marker: &str) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S …": the state follows the last ')'.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z' | 'X' | 'x') | None) {
        return false;
    }
    match fs::read(format!("/proc/{pid}/cmdline")) {
        // Empty while the process is in execve (setsid → java), so count that as alive.
        Ok(cmdline) => cmdline.is_empty() || String::from_utf8_lossy(&cmdline).contains(marker),
        Err(_) => false,
    }
}

/// The pid of node `n` if it is running (the pid file names a live JVM started with this
/// node's `server.properties`).
pub fn node_pid(layout: &Layout, nodes: u8, n: u8) -> Option<u32> {
    let pid: u32 = read_trimmed(&layout.pid_file(nodes, n))?.parse().ok()?;
    let marker = layout.server_properties(nodes, n);
    pid_alive(pid, &marker.to_string_lossy()).then_some(pid)
}

/// Send a signal with the shell's `kill` builtin (no libc, and procps need not be installed).
pub fn signal(pid: u32, sig: &str) -> io::Result<()> {
    let status = Command::new("sh").arg("-c").arg(format!("kill -s {sig} {pid} 2>/dev/null")).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(err(format!("kill -s {sig} {pid} failed")))
    }
}

/// Wait until none of `pids` (with their markers) is alive, or the timeout passes.
/// Returns the ones still alive.
pub fn wait_dead(pids: &[(u32, String)], timeout: Duration) -> Vec<(u32, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<_> = pids.iter().filter(|(p, m)| pid_alive(*p, m)).cloned().collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILL node `n` and wait until it is gone. Returns its pid if it was running.
pub fn kill_node(layout: &Layout, nodes: u8, n: u8) -> io::Result<Option<u32>> {
    check_node(nodes, n)?;
    let _lock = Lock::cluster(layout, nodes)?;
    kill_node_locked(layout, nodes, n)
}

/// [`kill_node`] for a caller that holds the cluster lock.
pub fn kill_node_locked(layout: &Layout, nodes: u8, n: u8) -> io::Result<Option<u32>> {
    let Some(pid) = node_pid(layout, nodes, n) else {
        let _ = fs::remove_file(layout.pid_file(nodes, n));
        return Ok(None);
    };
    let marker = layout.server_properties(nodes, n).to_string_lossy().into_owned();
    let _ = signal(pid, "KILL");
    if !wait_dead(&[(pid, marker)], Duration::from_secs(15)).is_empty() {
        return Err(err(format!("node {n} (pid {pid}) survived SIGKILL")));
    }
    let _ = fs::remove_file(layout.pid_file(nodes, n));
    Ok(Some(pid))
}

/// SIGSTOP node `n`: the JVM stops running but keeps its sockets open, so clients can connect
/// and send while nothing answers (a hung broker, unlike a killed one). Returns its pid; fails
/// if the node is not running.
pub fn pause_node(layout: &Layout, nodes: u8, n: u8) -> io::Result<u32> {
    check_node(nodes, n)?;
    let pid = node_pid(layout, nodes, n).ok_or_else(|| err(format!("node {n} is not running")))?;
    signal(pid, "STOP")?;
    Ok(pid)
}

/// SIGCONT node `n` (undoes [`pause_node`]; harmless on a node that is not stopped). Returns
/// its pid if it is running.
pub fn resume_node(layout: &Layout, nodes: u8, n: u8) -> io::Result<Option<u32>> {
    check_node(nodes, n)?;
    let Some(pid) = node_pid(layout, nodes, n) else { return Ok(None) };
    signal(pid, "CONT")?;
    Ok(Some(pid))
}

/// Whether node `n` is running but stopped by a signal (state `T` in `/proc/<pid>/stat`).
pub fn node_paused(layout: &Layout, nodes: u8, n: u8) -> bool {
    let Some(pid) = node_pid(layout, nodes, n) else { return false };
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()) == Some('T')
}

/// A node JVM that was just spawned.
#[derive(Debug, Clone, Copy)]
pub struct Spawned {
    pub node: u8,
    pub pid: u32,
    /// Length of `kafka.log` before the spawn: readiness is looked for after it.
    pub log_offset: u64,
}

/// Start the JVM of node `n` in the background, detached (its own session via `setsid`,
/// stdin from /dev/null, stdout+stderr appended to `kafka.log`), and write its pid file.
/// The node's `server.properties`, logging config and formatted data dir must exist.
pub fn spawn_node(layout: &Layout, nodes: u8, n: u8, version: &str) -> io::Result<Spawned> {
    check_node(nodes, n)?;
    let props = layout.server_properties(nodes, n);
    if !props.is_file() || !layout.data_dir(nodes, n).join("meta.properties").is_file() {
        return Err(err(format!(
            "node {n} of the {nodes}-node cluster has no formatted data (was `down` run?): run `cargo xtask kafka up --nodes {nodes}`"
        )));
    }
    if !layout.libs_ready(version) {
        return Err(err(format!("no Kafka {version} jars in {}", layout.libs_dir(version).display())));
    }
    let log_path = layout.log_file(nodes, n);
    let log = fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let log_offset = log.metadata()?.len();
    let heap = heap_mb(nodes);
    let node_dir = layout.node_dir(nodes, n);

    let setsid = ["/usr/bin/setsid", "/bin/setsid"].into_iter().find(|p| Path::new(p).is_file());
    let mut cmd = match setsid {
        // Not a process-group leader here, so setsid(1) calls setsid() and execs in place:
        // the pid we get is the JVM's.
        Some(s) => {
            let mut c = Command::new(s);
            c.arg(java());
            c
        }
        None => {
            let mut c = Command::new(java());
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            c
        }
    };
    cmd.args([
        format!("-Xms{heap}m"),
        format!("-Xmx{heap}m"),
        "-XX:+UseG1GC".into(),
        "-XX:MaxGCPauseMillis=20".into(),
        "-XX:InitiatingHeapOccupancyPercent=35".into(),
        "-XX:+ExplicitGCInvokesConcurrent".into(),
        "-XX:MaxInlineLevel=15".into(),
        "-XX:+ExitOnOutOfMemoryError".into(),
        "-Djava.awt.headless=true".into(),
        format!("-Dkafka.logs.dir={}", node_dir.display()),
    ])
    .args(log_flags(&layout.server_log4j2(nodes), &layout.server_log4j1(nodes)))
    .arg("-cp")
    .arg(layout.classpath(version))
    .arg("kafka.Kafka")
    .arg(&props)
    .current_dir(&node_dir)
    .stdin(Stdio::null())
    .stdout(log.try_clone()?)
    .stderr(log);
    let child = cmd.spawn().map_err(|e| err(format!("cannot start java for node {n}: {e}")))?;
    let pid = child.id();
    // Dropping a Child neither kills nor waits for it; the JVM outlives us.
    drop(child);
    write_if_changed(&layout.pid_file(nodes, n), &format!("{pid}\n"))?;
    Ok(Spawned { node: n, pid, log_offset })
}

/// A cross-process lock: a directory created atomically, holding the owner's pid. A lock
/// whose owner has died is taken over. Released on drop.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    /// Lock for operations on the `nodes`-node cluster (up, down, kill, start).
    pub fn cluster(layout: &Layout, nodes: u8) -> io::Result<Lock> {
        Lock::acquire(&layout.kafka_dir().join(format!("cluster{nodes}.lock")), Duration::from_secs(300))
    }

    pub fn acquire(path: &Path, timeout: Duration) -> io::Result<Lock> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let deadline = Instant::now() + timeout;
        let mut said = false;
        loop {
            match fs::create_dir(path) {
                Ok(()) => {
                    fs::write(path.join("pid"), format!("{}\n", std::process::id()))?;
                    return Ok(Lock { path: path.to_path_buf() });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let owner = read_trimmed(&path.join("pid")).and_then(|p| p.parse::<u32>().ok());
                    let stale = match owner {
                        Some(pid) => !pid_alive(pid, ""),
                        // Being created right now, or its owner died before writing the pid.
                        None => fs::metadata(path)
                            .and_then(|m| m.modified())
                            .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(10))
                            .unwrap_or(true),
                    };
                    if stale {
                        let _ = fs::remove_dir_all(path);
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Err(err(format!(
                            "{} is held by pid {}; gave up after {} s",
                            path.display(),
                            owner.map_or("?".to_string(), |p| p.to_string()),
                            timeout.as_secs()
                        )));
                    }
                    if !said {
                        eprintln!(
                            "waiting for {} (held by pid {}) …",
                            path.display(),
                            owner.map_or("?".to_string(), |p| p.to_string())
                        );
                        said = true;
                    }
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Poll until the broker port of every node answers ApiVersions.
pub fn wait_serving(nodes: u8, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    for n in 1..=nodes {
        while !node_healthy(nodes, n) {
            if Instant::now() >= deadline {
                return Err(err(format!("{} does not answer after {} s", broker_addr(nodes, n), timeout.as_secs())));
            }
            thread::sleep(POLL);
        }
    }
    Ok(())
}

/// Send ApiVersions v0 and expect a well-formed answer with error code 0.
pub fn probe_api_versions(addr: &str, timeout: Duration) -> io::Result<()> {
    let sa: SocketAddr = addr.parse().map_err(|e| err(format!("{addr}: {e}")))?;
    let mut s = TcpStream::connect_timeout(&sa, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let client_id = b"xtask-probe";
    let correlation_id: i32 = 0x7874_6b31;
    let mut body = Vec::with_capacity(32);
    body.extend_from_slice(&18i16.to_be_bytes()); // api key: ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // api version 0
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(6..=1 << 20).contains(&len) {
        return Err(err(format!("ApiVersions response of bad size {len}")));
    }
    let mut resp = vec![0u8; len as usize];
    s.read_exact(&mut resp)?;
    let corr = i32::from_be_bytes([resp[0], resp[1], resp[2], resp[3]]);
    let code = i16::from_be_bytes([resp[4], resp[5]]);
    if corr != correlation_id {
        return Err(err(format!("ApiVersions: correlation id {corr}, expected {correlation_id}")));
    }
    if code != 0 {
        return Err(err(format!("ApiVersions: error code {code}")));
    }
    Ok(())
}

/// Is the broker port of node `n` serving?
pub fn node_healthy(nodes: u8, n: u8) -> bool {
    probe_api_versions(&broker_addr(nodes, n), Duration::from_secs(2)).is_ok()
}

/// Does `kafka.log` contain the started line after `offset`?
fn log_has_started(path: &Path, offset: u64) -> bool {
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return false;
    }
    String::from_utf8_lossy(&buf).contains(STARTED_LINE)
}

/// The last `lines` lines of a file (reads at most the last 256 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Poll until every spawned node has logged "Kafka Server started" (after its spawn) and
/// answers ApiVersions on its broker port. Fails early if a JVM exits.
pub fn wait_ready(layout: &Layout, nodes: u8, spawned: &[Spawned], timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<Spawned> = spawned.to_vec();
    loop {
        let mut still = Vec::new();
        for s in pending {
            let marker = layout.server_properties(nodes, s.node).to_string_lossy().into_owned();
            let log = layout.log_file(nodes, s.node);
            if !pid_alive(s.pid, &marker) {
                return Err(err(format!(
                    "node {} (pid {}) exited during startup; last lines of {}:\n{}",
                    s.node,
                    s.pid,
                    log.display(),
                    log_tail(&log, 40)
                )));
            }
            let ready = log_has_started(&log, s.log_offset)
                && probe_api_versions(&broker_addr(nodes, s.node), Duration::from_secs(2)).is_ok();
            if !ready {
                still.push(s);
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let s = still[0];
            let log = layout.log_file(nodes, s.node);
            return Err(err(format!(
                "node {} (pid {}) not ready after {} s; last lines of {}:\n{}",
                s.node,
                s.pid,
                timeout.as_secs(),
                log.display(),
                log_tail(&log, 40)
            )));
        }
        pending = still;
        thread::sleep(POLL);
    }
}

/// Fail if something (not one of our nodes) listens on a port node `n` needs. Polls for a
/// few seconds first: right after a node is killed its sockets can linger briefly.
pub fn check_ports_free(nodes: u8, n: u8) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    for port in [broker_port(nodes, n), controller_port(nodes, n)] {
        loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline => thread::sleep(POLL),
                Err(e) => {
                    return Err(err(format!(
                        "127.0.0.1:{port} (node {n} of the {nodes}-node cluster) is in use: {e}. \
                         A stale broker? Check `cargo xtask kafka status` / `ss -ltnp`"
                    )))
                }
            }
        }
    }
    Ok(())
}

/// Restart node `n` with its existing data and wait until it serves. No-op if it is
/// already running. Used by `cargo xtask kafka start` and by the test harness.
pub fn start_node(layout: &Layout, nodes: u8, n: u8) -> io::Result<StartOutcome> {
    check_node(nodes, n)?;
    let _lock = Lock::cluster(layout, nodes)?;
    if let Some(pid) = node_pid(layout, nodes, n) {
        return Ok(StartOutcome::AlreadyRunning(pid));
    }
    let version = layout.cluster_version(nodes).ok_or_else(|| {
        err(format!(
            "the {nodes}-node cluster is not set up (or was taken down): run `cargo xtask kafka up --nodes {nodes}`"
        ))
    })?;
    check_ports_free(nodes, n)?;
    let s = spawn_node(layout, nodes, n, &version)?;
    wait_ready(layout, nodes, &[s], READY_TIMEOUT)?;
    Ok(StartOutcome::Started(s.pid))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    Started(u32),
    AlreadyRunning(u32),
}

/// Run a child to completion with a timeout (SIGKILL when it expires), collecting
/// stdout/stderr and feeding `stdin`. The child must have been spawned with piped stdio.
pub fn wait_with_timeout(
    mut child: Child,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> io::Result<(std::process::Output, bool)> {
    let writer = child.stdin.take().map(|mut w| {
        thread::spawn(move || {
            if let Some(data) = stdin {
                let _ = w.write_all(&data);
            }
            // Dropping `w` closes stdin (EOF for console-producer).
        })
    });
    let mut out = child.stdout.take();
    let mut errp = child.stderr.take();
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut v);
        }
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = errp.as_mut() {
            let _ = e.read_to_end(&mut v);
        }
        v
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(20));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok((std::process::Output { status, stdout, stderr }, timed_out))
}

#[cfg(test)]
mod renamed_option_tests {
    use super::renamed_option;

    #[test]
    fn console_tools_get_the_kip_1147_option_names_from_4_2_on() {
        let consumer = "org.apache.kafka.tools.consumer.ConsoleConsumer";
        let producer = "org.apache.kafka.tools.ConsoleProducer";
        assert_eq!(renamed_option(consumer, "4.4.0", "--property"), Some("--formatter-property"));
        assert_eq!(renamed_option(consumer, "4.2.0", "--consumer-property"), Some("--command-property"));
        assert_eq!(renamed_option(producer, "4.4.0", "--property"), Some("--reader-property"));
        assert_eq!(renamed_option(producer, "4.4.0", "--producer.config"), Some("--command-config"));
        assert_eq!(renamed_option(consumer, "4.1.2", "--property"), None);
        assert_eq!(renamed_option("kafka.tools.ConsoleProducer", "3.9.2", "--property"), None);
        assert_eq!(renamed_option(consumer, "4.4.0", "print.key=true"), None);
        assert_eq!(renamed_option("org.apache.kafka.tools.GetOffsetShell", "4.4.0", "--property"), None);
    }
}
