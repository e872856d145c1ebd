//! Shared harness for the integration tests (tests/tests/*.rs) against a real Apache Kafka
//! broker started with `cargo xtask kafka up` (1 node) / `cargo xtask kafka up --nodes 3`.
//!
//! The process management is the xtask's own code (`xtask/src/kafka/cluster.rs`, std only),
//! included here so that `kafka_node_kill` / `kafka_node_start` do not have to run cargo
//! (which would wait for the build lock that `cargo test` holds).

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod chaos_proxy;
pub mod chromium;
#[cfg(feature = "testcontainers")]
pub mod containers;
pub mod raw;
pub mod soak;
pub mod spans;

#[allow(dead_code)]
#[path = "../../xtask/src/kafka/cluster.rs"]
mod cluster;

/// Timeout of [`kafka_tool`].
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The workspace root (where `.kafka/` lives).
pub fn workspace_root() -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    root.canonicalize().unwrap_or(root)
}

fn layout() -> cluster::Layout {
    cluster::Layout::new(workspace_root())
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Bootstrap servers of the 1-node cluster: `$KAFKA_BOOTSTRAP` (the 3-node cluster's in
/// `cargo xtask matrix --workspace --bootstrap-nodes 3`), else `.kafka/bootstrap`
/// (written by `cargo xtask kafka up`); with the feature `testcontainers`, when neither is set
/// or the local cluster does not answer, a broker in a Docker container
/// ([`containers::bootstrap`], started once per process). Panics if there is none.
pub fn bootstrap() -> String {
    if let Some(b) = env_nonempty("KAFKA_BOOTSTRAP") {
        return b;
    }
    let file = layout().bootstrap_file(1);
    let local = cluster::read_trimmed(&file);
    #[cfg(feature = "testcontainers")]
    if !local.as_deref().is_some_and(containers::answers) {
        return containers::bootstrap();
    }
    local.unwrap_or_else(|| {
        panic!(
            "no Kafka broker: {} does not exist and KAFKA_BOOTSTRAP is not set. \
             Start one with `cargo xtask kafka up` (stop it with `cargo xtask kafka down`).",
            file.display()
        )
    })
}

/// The addresses of [`bootstrap`], one per broker: a single one for the 1-node cluster, three
/// when the 3-node cluster is the bootstrap. A [`kafka_wire::client::Connection`] takes one
/// address, not a list.
pub fn bootstrap_brokers() -> Vec<String> {
    bootstrap().split(',').map(|b| b.trim().to_string()).filter(|b| !b.is_empty()).collect()
}

/// A connection to the first broker of [`bootstrap`] (features and API versions are the
/// cluster's: any broker tells them).
pub async fn connect_any_broker() -> kafka_wire::client::Connection {
    let broker = bootstrap_brokers().into_iter().next().expect("a bootstrap address");
    kafka_wire::client::Connection::connect(&broker, Default::default())
        .await
        .unwrap_or_else(|e| panic!("connect to the broker {broker}: {e}"))
}

/// Bootstrap servers of the 3-node cluster (`cargo xtask kafka up --nodes 3`):
/// `$KAFKA_BOOTSTRAP_3`, else `.kafka/bootstrap3`; with the feature `testcontainers`, when
/// neither is set or the local cluster does not answer, three brokers in Docker containers
/// ([`containers::bootstrap_3`]); `None` if it is not up, so that 3-node tests can skip.
pub fn bootstrap_3() -> Option<String> {
    let found = env_nonempty("KAFKA_BOOTSTRAP_3").or_else(|| cluster::read_trimmed(&layout().bootstrap_file(3)));
    #[cfg(feature = "testcontainers")]
    if env_nonempty("KAFKA_BOOTSTRAP_3").is_none() && !found.as_deref().is_some_and(containers::answers) {
        return Some(containers::bootstrap_3());
    }
    found
}

/// A topic name unique per process, call and time: `<prefix>-<pid>-<n>-<micros>`.
pub fn unique_topic(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() % 1_000_000_000_000).unwrap_or(0);
    format!("{prefix}-{}-{n}-{micros}", std::process::id())
}

/// The Kafka version whose jars the tools use (`$KAFKA_VERSION`, else that of the last `up`).
pub fn kafka_version() -> String {
    layout().tools_version()
}

/// Run a Kafka CLI tool — a short name (`topics`, `console-producer`, `console-consumer`,
/// `consumer-groups`, `transactions`, `producer-perf`, `consumer-perf`, `get-offsets`,
/// `configs`, …) or a main class — directly with `java -cp .kafka/libs/<version>/*`,
/// feeding `stdin` (closed at its end; `None` = empty), collecting stdout/stderr.
/// The tool is killed after [`TOOL_TIMEOUT`]; then the returned status is a failure and
/// stderr ends with a note. Does not check the exit status.
pub fn kafka_tool(main_class_or_short_name: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    kafka_tool_with_timeout(main_class_or_short_name, args, stdin, TOOL_TIMEOUT)
}

/// [`kafka_tool`] with an explicit timeout.
pub fn kafka_tool_with_timeout(
    main_class_or_short_name: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Output {
    let layout = layout();
    let version = layout.tools_version();
    let mut cmd = cluster::tool_command(&layout, &version, main_class_or_short_name, args)
        .unwrap_or_else(|e| panic!("kafka_tool({main_class_or_short_name}): {e}"));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("kafka_tool({main_class_or_short_name}): cannot run java: {e}"));
    let (mut out, timed_out) = cluster::wait_with_timeout(child, Some(stdin.unwrap_or_default().to_vec()), timeout)
        .unwrap_or_else(|e| panic!("kafka_tool({main_class_or_short_name}): {e}"));
    if timed_out {
        out.stderr.extend_from_slice(format!("\n[kafka_tool: killed after {} s]\n", timeout.as_secs()).as_bytes());
    }
    out
}

/// Like [`kafka_tool`], but panics (showing stdout and stderr) unless the tool succeeds;
/// returns its stdout.
pub fn kafka_tool_ok(main_class_or_short_name: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = kafka_tool(main_class_or_short_name, args, stdin);
    if !out.status.success() {
        panic!(
            "kafka tool {main_class_or_short_name} {args:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SIGKILL node `n` (1..=3) of the 3-node cluster and wait until it is gone; its data stays.
/// Same code as `cargo xtask kafka kill --nodes 3 --node N`. No-op if it is not running.
pub fn kafka_node_kill(n: u8) {
    cluster::kill_node(&layout(), 3, n).unwrap_or_else(|e| panic!("kafka_node_kill({n}): {e}"));
}

/// Restart node `n` of the 3-node cluster with its existing data and wait (up to 90 s)
/// until it serves again ("Kafka Server started" + ApiVersions answered). No-op if it is
/// running. Same code as `cargo xtask kafka start --nodes 3 --node N`.
pub fn kafka_node_start(n: u8) {
    cluster::start_node(&layout(), 3, n).unwrap_or_else(|e| panic!("kafka_node_start({n}): {e}"));
}

/// SIGSTOP node `n` of the 3-node cluster: it keeps its sockets open and answers nothing, like a
/// hung broker. Same code as `cargo xtask kafka pause --nodes 3 --node N`. Returns a guard that
/// resumes it when dropped (however the test ends); [`kafka_node_resume`] resumes it earlier.
#[must_use = "dropping the guard resumes the node at once"]
pub fn kafka_node_pause(n: u8) -> ResumeOnDrop {
    cluster::pause_node(&layout(), 3, n).unwrap_or_else(|e| panic!("kafka_node_pause({n}): {e}"));
    ResumeOnDrop(n)
}

/// SIGCONT node `n` of the 3-node cluster (undoes [`kafka_node_pause`]; no-op if it is not
/// stopped). Same code as `cargo xtask kafka resume --nodes 3 --node N`.
pub fn kafka_node_resume(n: u8) {
    cluster::resume_node(&layout(), 3, n).unwrap_or_else(|e| panic!("kafka_node_resume({n}): {e}"));
}

/// Is node `n` of the 3-node cluster stopped by [`kafka_node_pause`]?
pub fn kafka_node_paused(n: u8) -> bool {
    cluster::node_paused(&layout(), 3, n)
}

/// Resumes node `.0` of the 3-node cluster however a test ends, so that a failure while it is
/// stopped leaves the cluster serving for the next test.
pub struct ResumeOnDrop(pub u8);

impl Drop for ResumeOnDrop {
    fn drop(&mut self) {
        if kafka_node_paused(self.0) {
            eprintln!("[blocked broker] resuming node {} on the way out", self.0);
        }
        kafka_node_resume(self.0);
    }
}

/// Is node `n` of the 3-node cluster running?
pub fn kafka_node_running(n: u8) -> bool {
    cluster::node_pid(&layout(), 3, n).is_some()
}

/// Broker address of node `n` of the 3-node cluster (`127.0.0.1:1909{n+1}`).
pub fn kafka_node_addr(n: u8) -> String {
    cluster::broker_addr(3, n)
}

/// Serializes the tests (of one test binary) that kill/start nodes of the 3-node cluster.
/// Hold the guard for the whole test; a panic in another holder does not poison it.
pub fn cluster3_exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Restarts node `.0` of the 3-node cluster however a test ends, so that a failure after a kill
/// leaves the cluster whole for the next test.
pub struct RestartOnDrop(pub u8);

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if !kafka_node_running(self.0) {
            eprintln!("[failover] restarting node {} on the way out", self.0);
            kafka_node_start(self.0);
        }
    }
}

/// The 3-node cluster for a failover test: its bootstrap and the [`cluster3_exclusive`] guard
/// (hold it for the whole test), with every node running again (a run that died between a kill
/// and a restart may have left one down, or between a pause and a resume one stopped). `None`, said loudly on stderr, when the cluster is not
/// up, so that a skipped failover test shows in the log.
pub fn cluster3_for(test: &str) -> Option<(String, MutexGuard<'static, ()>)> {
    let Some(bootstrap) = bootstrap_3() else {
        eprintln!(
            "\n!!!! SKIPPED {test}: the 3-node cluster is not up (no .kafka/bootstrap3, KAFKA_BOOTSTRAP_3 \
             unset). Start it with `cargo xtask kafka up --nodes 3`. !!!!\n"
        );
        return None;
    };
    #[cfg(feature = "testcontainers")]
    if containers::started_3() {
        eprintln!(
            "\n!!!! SKIPPED {test}: the 3-node cluster is in Docker containers, and node kills, stops and \
             restarts act on the local cluster's processes. Start it with `cargo xtask kafka up --nodes 3`. !!!!\n"
        );
        return None;
    }
    let guard = cluster3_exclusive();
    for n in 1..=3 {
        if kafka_node_paused(n) {
            eprintln!("[{test}] node {n} was stopped; resuming it");
            kafka_node_resume(n);
        }
        if !kafka_node_running(n) {
            eprintln!("[{test}] node {n} was down; starting it");
            kafka_node_start(n);
        }
    }
    Some((bootstrap, guard))
}

/// Runs a single-file Java program from `tests/java/` (Java 11+ source launch) with Kafka's jars
/// on the classpath, under [`TOOL_TIMEOUT`].
pub fn java_program(file: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let path = workspace_root().join("tests").join("java").join(file);
    kafka_tool(&path.to_string_lossy(), args, stdin)
}

/// Writes transactions of ten records each (`PREFIX-0` … `PREFIX-9`) to partition 0 of `topic`
/// with Kafka's Java producer, committing or aborting each as `(prefix, commit)` says.
pub fn java_transactions(bootstrap: &str, topic: &str, transactions: &[(&str, bool)]) -> Output {
    let specs: Vec<String> =
        transactions.iter().map(|(p, c)| format!("{p}:{}", if *c { "commit" } else { "abort" })).collect();
    let mut args = vec![bootstrap, topic];
    args.extend(specs.iter().map(String::as_str));
    java_program("TxnProducer.java", &args, None)
}

/// Waits until `done` holds, looking every 20 ms, and fails naming `what` after `bound`: for
/// states that other tasks (a member's driver, the broker) change with no event to await.
pub async fn wait_until(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + bound;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record of `topic` (all its partitions) that is committed, read with isolation
/// read_committed outside any group, from the start up to the last stable offsets as they are at
/// the call: with no transaction open, everything that will ever be visible, duplicates
/// included. In offset order per partition. Fails after 120 s.
pub async fn read_committed(topic: &str) -> Vec<kafka_wire::ConsumerRecord> {
    use kafka_wire::client::{Admin, ClientConfig};
    let admin = Admin::connect(ClientConfig::new(&bootstrap())).await.expect("admin");
    let described = admin.describe_topics(&[topic]).await.expect("describe");
    admin.close().await;
    let partitions = described[0].partitions.len() as i32;
    read_to_end(&bootstrap(), topic, partitions, true, Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Every record of partitions `0..partitions` of `topic`, read outside any group from the start
/// up to the end offsets as they are at the call: with `committed`, read read_committed up to
/// the last stable offsets; else read_uncommitted up to the high watermarks. In offset order per
/// partition. An error (not a panic) says what failed, so that a caller can read again after a
/// broker fault; past `bound` it is an error too.
pub async fn read_to_end(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    committed: bool,
    bound: Duration,
) -> Result<Vec<kafka_wire::ConsumerRecord>, String> {
    use kafka_wire::client::{Admin, ClientConfig, IsolationLevel, OffsetReset, OffsetSpec};
    use kafka_wire::{Consumer, ConsumerConfig, TopicPartition};
    let admin = Admin::connect(ClientConfig::new(bootstrap)).await.map_err(|e| format!("admin: {e}"))?;
    let wanted: Vec<(&str, i32)> = (0..partitions).map(|p| (topic, p)).collect();
    let ends = admin.list_offsets_isolated(&wanted, OffsetSpec::Latest, committed).await;
    admin.close().await;
    let ends: Vec<(TopicPartition, i64)> = ends
        .map_err(|e| format!("end offsets of {topic}: {e}"))?
        .into_iter()
        .map(|o| (TopicPartition::new(o.topic.as_str(), o.partition), o.offset))
        .collect();
    let isolation = if committed { IsolationLevel::ReadCommitted } else { IsolationLevel::ReadUncommitted };
    let config = ConsumerConfig::new(bootstrap).isolation_level(isolation).auto_offset_reset(OffsetReset::Earliest);
    let consumer = Consumer::new(config).await.map_err(|e| format!("consumer: {e}"))?;
    consumer.assign(ends.iter().map(|(tp, _)| tp.clone()));
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + bound;
    let outcome = loop {
        let positions = consumer.positions();
        if ends.iter().all(|(tp, end)| positions.get(tp).is_some_and(|o| o.offset >= *end)) {
            break Ok(records);
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(format!("{topic} not read to its end offsets within {bound:?}"));
        }
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(batch) => records.extend(batch),
            Err(e) => break Err(format!("poll {topic}: {e}")),
        }
    };
    let _ = consumer.close().await;
    outcome
}

#[cfg(test)]
mod harness_tests {
    use super::*;

    /// The harness itself: bootstrap file, Java tools, stdin/stdout plumbing.
    #[test]
    fn tools_round_trip() {
        let bs = bootstrap();
        let topic = unique_topic("harness");
        kafka_tool_ok(
            "topics",
            &[
                "--bootstrap-server",
                &bs,
                "--create",
                "--topic",
                &topic,
                "--partitions",
                "1",
                "--replication-factor",
                "1",
            ],
            None,
        );
        kafka_tool_ok(
            "console-producer",
            &[
                "--bootstrap-server",
                &bs,
                "--topic",
                &topic,
                "--property",
                "parse.key=true",
                "--property",
                "key.separator=:",
            ],
            Some(b"k1:v1\nk2:v2\n"),
        );
        let out = kafka_tool_ok(
            "console-consumer",
            &[
                "--bootstrap-server",
                &bs,
                "--topic",
                &topic,
                "--from-beginning",
                "--max-messages",
                "2",
                "--timeout-ms",
                "30000",
                "--property",
                "print.key=true",
            ],
            None,
        );
        assert_eq!(out, "k1\tv1\nk2\tv2\n");
    }

    #[test]
    fn unique_topics_differ() {
        assert_ne!(unique_topic("a"), unique_topic("a"));
    }

    /// Kill and restart node 2 of the 3-node cluster (`cargo xtask kafka up --nodes 3`).
    /// Run with `cargo test -p kafka-wire-tests --lib -- --ignored`.
    #[test]
    #[ignore = "needs the 3-node cluster; kills a node"]
    fn node_kill_and_start() {
        let Some(bs) = bootstrap_3() else {
            eprintln!("3-node cluster not up; skipping");
            return;
        };
        let _guard = cluster3_exclusive();
        kafka_node_kill(2);
        assert!(!kafka_node_running(2));
        let out = kafka_tool_ok("metadata-quorum", &["--bootstrap-server", &bs, "describe", "--status"], None);
        assert!(out.contains("LeaderId"), "{out}");
        kafka_node_start(2);
        assert!(kafka_node_running(2));
    }
}

/// The secured listeners of the 1-node cluster (`cargo xtask kafka up --security`, described in
/// `xtask/src/kafka/security.rs`), as `.kafka/security` lists them.
#[derive(Clone, Debug)]
pub struct SecuredListeners {
    /// SASL_PLAINTEXT (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    pub sasl_plaintext: String,
    /// SSL.
    pub ssl: String,
    /// SASL_SSL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    pub sasl_ssl: String,
    /// SSL with client certificates required.
    pub mtls: String,
    /// SASL_SSL with OAUTHBEARER (unsecured tokens); `None` from a cluster started before it was
    /// added.
    pub oauth: Option<String>,
    /// SASL_PLAINTEXT (SCRAM-SHA-256, OAUTHBEARER) whose sessions last 4 s, so that clients
    /// re-authenticate (KIP-368); `None` as `oauth`.
    pub reauth: Option<String>,
    /// PEM file of the CA that signed the broker's and the client's certificates.
    pub ca: PathBuf,
    /// PEM file of a CA that signed nothing the broker uses.
    pub other_ca: PathBuf,
    /// PEM file of the client's certificate (for the mutual-TLS listener).
    pub client_cert: PathBuf,
    /// PEM file of the client certificate's private key.
    pub client_key: PathBuf,
    /// The user every mechanism knows.
    pub username: String,
    /// Its password.
    pub password: String,
}

/// The secured listeners, or `None` (said on stderr, so that a skipped test shows in the log)
/// when the 1-node cluster was started without `--security`. `$KAFKA_SECURITY_FILE` names
/// another file than `.kafka/security` (a broker started by hand with other listeners).
pub fn secured_listeners(test: &str) -> Option<SecuredListeners> {
    let file =
        env_nonempty("KAFKA_SECURITY_FILE").map(PathBuf::from).unwrap_or_else(|| layout().kafka_dir().join("security"));
    let Ok(text) = std::fs::read_to_string(&file) else {
        eprintln!(
            "[{test}] skipped: the secured listeners are the 1-node cluster's, and {} does not exist; start it \
             with `cargo xtask kafka up --security`",
            file.display()
        );
        return None;
    };
    let optional = |key: &str| -> Option<String> {
        text.lines().filter_map(|l| l.split_once('=')).find(|(k, _)| k.trim() == key).map(|(_, v)| v.trim().to_owned())
    };
    let get = |key: &str| -> String { optional(key).unwrap_or_else(|| panic!("{} has no {key}", file.display())) };
    Some(SecuredListeners {
        sasl_plaintext: get("sasl_plaintext"),
        ssl: get("ssl"),
        sasl_ssl: get("sasl_ssl"),
        mtls: get("mtls"),
        oauth: optional("oauth"),
        reauth: optional("reauth"),
        ca: get("ca").into(),
        other_ca: get("other_ca").into(),
        client_cert: get("client_cert").into(),
        client_key: get("client_key").into(),
        username: get("username"),
        password: get("password"),
    })
}

/// Does the 1-node cluster run the KIP-848 consumer group protocol? Its `group.version` feature
/// is 1 or more (Kafka 4.0+). Kafka 3.9 lists ConsumerGroupHeartbeat in its ApiVersions but, with
/// no `group.version`, answers it UNSUPPORTED_VERSION: the API list alone does not tell.
pub async fn kip_848_offered() -> bool {
    connect_any_broker().await.finalized_feature("group.version").is_some_and(|v| v >= 1)
}

/// [`kip_848_offered`]; when it is not, says on stderr that `test` is skipped and why, so that
/// the skip shows in the log (Kafka 3.9 in the version matrix).
pub async fn kip_848_available(test: &str) -> bool {
    let offered = kip_848_offered().await;
    if !offered {
        eprintln!(
            "\n!!!! SKIPPED {test}: the broker (Kafka {}) has no group.version feature: the KIP-848 consumer group \
             protocol needs Kafka 4.0+ !!!!\n",
            kafka_version()
        );
    }
    offered
}

/// The cluster's `transaction.version` (KIP-890), as a new connection to a broker of
/// [`bootstrap`] reports it: `None` from brokers that have no such feature (Kafka 3.x: transactions v1 only).
pub async fn transaction_version() -> Option<i16> {
    connect_any_broker().await.finalized_feature("transaction.version")
}
