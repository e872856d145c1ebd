//! `kw` over a secured listener (`cargo xtask kafka up --security`), with a Java-style properties
//! file (`-F`) as Kafka's own tools take it: SASL_SSL with SCRAM-SHA-512. CI runs it against the
//! static musl build (`KW_BIN`), whose TLS must work without a C library.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kafka_wire_tests::{secured_listeners, unique_topic};

/// The `kw` under test: `KW_BIN` when set (CI points it at the static musl release binary),
/// else the one cargo built for these tests.
fn kw_bin() -> String {
    std::env::var("KW_BIN").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| env!("CARGO_BIN_EXE_kw").to_string())
}

const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `kw -F <properties> args...` with `stdin`; killed after [`TIMEOUT`]; panics unless it
/// succeeds. Returns stdout.
fn kw_ok(properties: &std::path::Path, args: &[&str], stdin: &[u8]) -> String {
    let mut cmd = Command::new(kw_bin());
    cmd.arg("-F").arg(properties).args(args);
    cmd.env_remove("KAFKA_BOOTSTRAP").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {}: {e}", kw_bin()));
    let mut child_stdin = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = child_stdin.write_all(&input);
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out: Output = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("wait for kw"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("kw {args:?} did not finish within {TIMEOUT:?}");
        }
    };
    writer.join().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kw {args:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

#[test]
fn kw_with_a_properties_file_lists_produces_and_consumes_over_sasl_ssl_scram() {
    let Some(l) = secured_listeners("kw_sasl_ssl") else { return };
    let topic = unique_topic("kw-sasl-ssl");
    // As a user writes it for Kafka's tools: the JAAS line's quotes and the backslash-continued
    // line are Java .properties syntax.
    let properties = format!(
        "# client.properties\n\
         bootstrap.servers={bootstrap}\n\
         security.protocol=SASL_SSL\n\
         sasl.mechanism=SCRAM-SHA-512\n\
         sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n    \
         username=\"{user}\" password=\"{password}\";\n\
         ssl.truststore.type=PEM\n\
         ssl.truststore.location={ca}\n",
        bootstrap = l.sasl_ssl,
        user = l.username,
        password = l.password,
        ca = l.ca.display(),
    );
    let file = std::env::temp_dir().join(format!("{topic}.properties"));
    std::fs::write(&file, properties).unwrap();

    kw_ok(&file, &["topics", "create", &topic, "--partitions", "1", "--replication-factor", "1"], b"");
    let listed = kw_ok(&file, &["topics", "list"], b"");
    assert!(listed.lines().any(|l| l.split_whitespace().next() == Some(topic.as_str())), "{listed}");
    kw_ok(&file, &["produce", &topic, "-q"], b"one\ntwo\nthree\n");
    let consumed = kw_ok(&file, &["consume", &topic, "--from", "beginning", "--exit-at-end"], b"");
    assert_eq!(consumed.lines().collect::<Vec<_>>(), ["one", "two", "three"]);
    let _ = std::fs::remove_file(&file);
}
