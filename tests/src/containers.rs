//! Brokers in Docker containers (feature `testcontainers`), for machines with a Docker engine
//! and neither `KAFKA_BOOTSTRAP` nor a local cluster (`.kafka/…`) that answers: the
//! `apache/kafka` image in KRaft combined mode, one node, or three on a Docker network with a
//! three-voter controller quorum.
//!
//! Each cluster is started once per test binary (a process-wide lazy) on a runtime of its own,
//! so that it outlives every test's runtime, and is removed when the process exits. Its brokers
//! are advertised on 127.0.0.1, at a host port chosen free and mapped to the same port in the
//! container (the advertised address must be known before the broker starts).
//!
//! Tests that kill, stop or restart nodes act on the local cluster's processes: they skip on a
//! container cluster ([`crate::cluster3_for`]). Tests that run Kafka's own tools need the jars
//! `cargo xtask kafka up` downloads.

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// The image, unless `$KAFKA_CONTAINER_IMAGE` (`name:tag`) names another.
pub const DEFAULT_IMAGE: &str = "apache/kafka:4.1.2";
/// The cluster id of every container cluster (KRaft formats each node's storage with it).
const CLUSTER_ID: &str = "kafka-wire-tests-tc01";
/// The port of the controller listener inside each container.
const CONTROLLER_PORT: u16 = 9093;
/// The port of the brokers' listener for each other, on the Docker network.
const INTERNAL_PORT: u16 = 29092;
/// How long a broker may take to start (image pull not included: Docker pulls first).
const STARTUP: Duration = Duration::from_secs(180);

/// The server properties of node `n` (1-based) of a `nodes`-node cluster whose client listener
/// is advertised as `127.0.0.1:port`; on more than one node the brokers reach each other (and
/// the controllers) at `kafka-<n>` on the Docker network. Settings for tests as those of
/// `cargo xtask kafka up`: internal topics replicated on every node (up to 3), no initial
/// rebalance delay, short minimum session timeouts.
pub fn server_properties(n: u8, nodes: u8, port: u16) -> Vec<(String, String)> {
    let host = |m: u8| if nodes == 1 { "localhost".to_string() } else { format!("kafka-{m}") };
    let voters: Vec<String> = (1..=nodes).map(|m| format!("{m}@{}:{CONTROLLER_PORT}", host(m))).collect();
    let rf = nodes.min(3);
    let min_isr = if rf >= 3 { 2 } else { 1 };
    let mut p: Vec<(&str, String)> = vec![
        ("process.roles", "broker,controller".into()),
        ("node.id", n.to_string()),
        ("controller.quorum.voters", voters.join(",")),
        (
            "listeners",
            format!(
                "PLAINTEXT://0.0.0.0:{port},INTERNAL://0.0.0.0:{INTERNAL_PORT},CONTROLLER://0.0.0.0:{CONTROLLER_PORT}"
            ),
        ),
        ("advertised.listeners", format!("PLAINTEXT://127.0.0.1:{port},INTERNAL://{}:{INTERNAL_PORT}", host(n))),
        ("inter.broker.listener.name", "INTERNAL".into()),
        ("controller.listener.names", "CONTROLLER".into()),
        ("listener.security.protocol.map", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT".into()),
        ("auto.create.topics.enable", "false".into()),
        ("default.replication.factor", rf.to_string()),
        ("offsets.topic.replication.factor", rf.to_string()),
        ("offsets.topic.num.partitions", "5".into()),
        ("transaction.state.log.replication.factor", rf.to_string()),
        ("transaction.state.log.min.isr", min_isr.to_string()),
        ("transaction.state.log.num.partitions", "5".into()),
        ("share.coordinator.state.topic.replication.factor", rf.to_string()),
        ("share.coordinator.state.topic.min.isr", min_isr.to_string()),
        ("group.initial.rebalance.delay.ms", "0".into()),
        ("group.min.session.timeout.ms", "1000".into()),
        ("transaction.abort.timed.out.transaction.cleanup.interval.ms", "1000".into()),
    ];
    if nodes > 1 {
        p.push(("broker.heartbeat.interval.ms", "500".into()));
        p.push(("broker.session.timeout.ms", "3000".into()));
    }
    p.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The environment variable that sets `property` in the `apache/kafka` image: `KAFKA_`, then the
/// name upper-cased with `.` as `_`, `_` as `__` and `-` as `___` (the image's convention).
pub fn env_name(property: &str) -> String {
    let mut out = String::from("KAFKA_");
    for c in property.chars() {
        match c {
            '.' => out.push('_'),
            '_' => out.push_str("__"),
            '-' => out.push_str("___"),
            c => out.push(c.to_ascii_uppercase()),
        }
    }
    out
}

/// A cluster of containers, kept for the whole process.
struct Cluster {
    bootstrap: String,
}

/// The runtime the containers are started (and removed) on, and the containers.
struct Containers {
    runtime: tokio::runtime::Runtime,
    running: Mutex<Vec<ContainerAsync<GenericImage>>>,
}

fn containers() -> &'static Containers {
    static CONTAINERS: OnceLock<Containers> = OnceLock::new();
    CONTAINERS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("testcontainers")
            .enable_all()
            .build()
            .expect("the containers' runtime");
        // Rust runs no destructor of statics: remove the containers when the process exits
        // (the test harness exits with `std::process::exit`, which runs `atexit` handlers).
        // SAFETY: `remove_all` is an `extern "C" fn()` that does not unwind (it catches panics);
        // registering it has no other effect.
        #[allow(unsafe_code)]
        unsafe {
            libc::atexit(remove_all)
        };
        Containers { runtime, running: Mutex::new(Vec::new()) }
    })
}

extern "C" fn remove_all() {
    let _ = std::panic::catch_unwind(|| {
        let c = containers();
        let running = std::mem::take(&mut *c.running.lock().unwrap_or_else(|e| e.into_inner()));
        c.runtime.block_on(async {
            for container in running {
                if let Err(e) = container.rm().await {
                    eprintln!("[testcontainers] removing a broker container: {e}");
                }
            }
        });
    });
}

/// A free port of the host's loopback (free now; the container binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free local port")
}

fn image() -> (String, String) {
    let image = std::env::var("KAFKA_CONTAINER_IMAGE").ok().filter(|s| !s.trim().is_empty());
    let image = image.unwrap_or_else(|| DEFAULT_IMAGE.to_string());
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_string(), tag.to_string()),
        _ => (image, "latest".to_string()),
    }
}

/// Starts a `nodes`-node cluster and returns its bootstrap servers. Panics (naming the cause)
/// if Docker is not there or a broker does not start within [`STARTUP`].
fn start(nodes: u8) -> Cluster {
    let (name, tag) = image();
    let ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
    // A network of this process's own, so that parallel test binaries do not share one.
    let network = format!("kafka-wire-tests-{}-{nodes}", std::process::id());
    let requests = (1..=nodes).zip(&ports).map(|(n, &port)| {
        let mut request = GenericImage::new(name.as_str(), tag.as_str())
            .with_wait_for(WaitFor::message_on_stdout("Kafka Server started"))
            .with_mapped_port(port, port.tcp())
            .with_env_var("CLUSTER_ID", CLUSTER_ID)
            .with_startup_timeout(STARTUP);
        for (k, v) in server_properties(n, nodes, port) {
            request = request.with_env_var(env_name(&k), v);
        }
        if nodes > 1 {
            request = request.with_network(network.as_str()).with_hostname(format!("kafka-{n}"));
        }
        request
    });
    let c = containers();
    // All at once: a node of a quorum is not ready before a majority of the voters is up.
    let started = c.runtime.block_on(futures_util::future::join_all(requests.map(|r| r.start())));
    let mut running = c.running.lock().unwrap_or_else(|e| e.into_inner());
    let mut failures = Vec::new();
    for result in started {
        match result {
            Ok(container) => running.push(container),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "testcontainers: the {nodes}-node Kafka cluster ({name}:{tag}) did not start (is a Docker engine running?): \
         {failures:?}"
    );
    Cluster { bootstrap: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",") }
}

/// The bootstrap servers of the 1-node container cluster, started on first use.
pub fn bootstrap() -> String {
    static ONE: OnceLock<Cluster> = OnceLock::new();
    ONE.get_or_init(|| start(1)).bootstrap.clone()
}

static THREE: OnceLock<Cluster> = OnceLock::new();

/// The bootstrap servers of the 3-node container cluster, started on first use.
pub fn bootstrap_3() -> String {
    THREE.get_or_init(|| start(3)).bootstrap.clone()
}

/// Has the 3-node container cluster been started (so that the 3-node bootstrap is it)?
pub fn started_3() -> bool {
    THREE.get().is_some()
}

/// Does any of `bootstrap`'s addresses accept a TCP connection (within 1 s each)?
pub fn answers(bootstrap: &str) -> bool {
    bootstrap
        .split(',')
        .filter_map(|a| a.trim().to_socket_addrs().ok())
        .flatten()
        .any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(p: &'a [(String, String)], k: &str) -> &'a str {
        p.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {k}"))
    }

    #[test]
    fn one_node_advertises_loopback_and_votes_alone() {
        let p = server_properties(1, 1, 34567);
        assert_eq!(get(&p, "advertised.listeners"), "PLAINTEXT://127.0.0.1:34567,INTERNAL://localhost:29092");
        assert_eq!(get(&p, "controller.quorum.voters"), "1@localhost:9093");
        assert_eq!(get(&p, "offsets.topic.replication.factor"), "1");
        assert_eq!(get(&p, "transaction.state.log.min.isr"), "1");
        assert!(!p.iter().any(|(k, _)| k == "broker.session.timeout.ms"));
    }

    #[test]
    fn three_nodes_share_a_quorum_and_reach_each_other_by_hostname() {
        for n in 1..=3 {
            let p = server_properties(n, 3, 40000 + u16::from(n));
            assert_eq!(get(&p, "node.id"), n.to_string());
            assert_eq!(get(&p, "controller.quorum.voters"), "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093");
            assert_eq!(
                get(&p, "advertised.listeners"),
                format!("PLAINTEXT://127.0.0.1:{},INTERNAL://kafka-{n}:29092", 40000 + u16::from(n))
            );
            assert_eq!(get(&p, "inter.broker.listener.name"), "INTERNAL");
            assert_eq!(get(&p, "transaction.state.log.replication.factor"), "3");
            assert_eq!(get(&p, "transaction.state.log.min.isr"), "2");
        }
    }

    #[test]
    fn env_names_follow_the_image_convention() {
        assert_eq!(env_name("advertised.listeners"), "KAFKA_ADVERTISED_LISTENERS");
        assert_eq!(env_name("node.id"), "KAFKA_NODE_ID");
        assert_eq!(env_name("a_b-c.d"), "KAFKA_A__B___C_D");
    }

    #[test]
    fn answers_is_false_for_a_closed_port() {
        let port = free_port();
        assert!(!answers(&format!("127.0.0.1:{port}")));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(answers(&format!("127.0.0.1:{port},{}", listener.local_addr().unwrap())));
    }
}
