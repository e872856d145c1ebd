//! kafka-wire's key hashing against the Java producer's: 10 000 random keys (plus edge cases)
//! through `Utils.murmur2` and `BuiltInPartitioner.partitionForKey` of the Kafka jars in
//! `.kafka/libs/<version>/` (tests/java/PartitionerCheck.java), compared with
//! `kafka_wire::proto::partitioner`. Needs Java 11+ and the jars (`cargo xtask kafka up`
//! resolves them), not a broker.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka_wire::proto::partitioner::{murmur2, partition_for_key};
use kafka_wire_tests::{kafka_version, workspace_root};

/// JVM start plus compiling the source file takes seconds on a busy 2-core machine; this is a
/// bound on a hang, not an expectation.
const JAVA_TIMEOUT: Duration = Duration::from_secs(180);

const PARTITION_COUNTS: [u32; 3] = [6, 7, 100];

/// `$JAVA_HOME/bin/java` if it exists, else `java` from `PATH` (what the harness's tools use).
fn java() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if PathBuf::from(&home).join("bin/java").is_file() => PathBuf::from(home).join("bin/java"),
        _ => PathBuf::from("java"),
    }
}

/// Deterministic keys: the edge cases of murmur2's tail handling and sign extension, then
/// random keys of random lengths 0..64 from a fixed-seed xorshift (no `rand` dependency).
fn keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xff],
        vec![0x80, 0x7f],
        vec![0xff; 3],
        vec![0xff; 4],
        vec![0xff; 5],
        b"key".to_vec(),
        b"hello world".to_vec(),
    ];
    let mut state: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..10_000 {
        let len = (next() % 64) as usize;
        keys.push((0..len).map(|_| next() as u8).collect());
    }
    keys
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs PartitionerCheck.java on `input`; returns its stdout. Panics with stderr on failure.
fn run_java(input: String) -> String {
    let root = workspace_root();
    let version = kafka_version();
    let libs = root.join(".kafka").join("libs").join(&version);
    assert!(
        libs.join(".complete").is_file(),
        "no Kafka {version} jars in {}: run `cargo xtask kafka up` (it resolves them)",
        libs.display()
    );
    let source = root.join("tests").join("java").join("PartitionerCheck.java");
    let mut child = Command::new(java())
        // The JVM expands `dir/*` itself; single-file source launch compiles in memory (Java 11+).
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg(&source)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", java().display()));

    // Feed stdin and drain stdout/stderr on threads so that neither side blocks on a full
    // pipe, and poll for exit so that a hung JVM fails the test instead of stalling it.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for java") {
            break status;
        }
        if start.elapsed() > JAVA_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("PartitionerCheck.java did not finish in {JAVA_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let write_result = writer.join().expect("stdin writer thread");
    let stdout = out_reader.join().expect("stdout reader thread").expect("reading java's stdout");
    let stderr = err_reader.join().expect("stderr reader thread");
    assert!(status.success(), "PartitionerCheck.java failed ({status}):\n{stderr}");
    write_result.expect("writing keys to java");
    stdout
}

#[test]
fn murmur2_and_key_partitions_match_java() {
    let keys = keys();
    let input: String = keys.iter().map(|k| hex(k) + "\n").collect();
    let stdout = run_java(input);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), keys.len(), "one output line per key; stdout:\n{stdout}");

    for (key, line) in keys.iter().zip(&lines) {
        let fields: Vec<i32> = line
            .split_whitespace()
            .map(|f| f.parse().unwrap_or_else(|e| panic!("bad java output {line:?}: {e}")))
            .collect();
        let [java_hash, java_partitions @ ..] = fields.as_slice() else {
            panic!("empty java output line for key {}", hex(key));
        };
        assert_eq!(murmur2(key), *java_hash, "murmur2 of key {}", hex(key));
        assert_eq!(java_partitions.len(), PARTITION_COUNTS.len(), "java output {line:?}");
        for (&n, &java_p) in PARTITION_COUNTS.iter().zip(java_partitions) {
            assert_eq!(partition_for_key(key, n), java_p, "partition of key {} among {n}", hex(key));
        }
    }
}
