//! `cargo xtask bench [--quick] [WORKLOAD…]`: this client against its peers on the local
//! broker, in one run. Each workload runs each client on a fresh topic with the same settings
//! (6 partitions, RF 1, acks=all, idempotence where the client has it, linger 5 ms, the
//! workload's batch.size), in interleaved rounds (each round starting one client further on);
//! the table gives the median and the min–max of the rounds, and each figure's ratio to
//! librdkafka's. CPU seconds and max RSS are those of the whole client process (GNU time's
//! rusage of the child), so a JVM's start-up counts as the Java client's; records/s is the
//! client's own timed phase where it reports one (`kw produce`'s summary line,
//! `kw consume --stats`'s). Around each client process on the real broker the broker's own CPU
//! time is read too (`/proc/<pid>/stat`), for its CPU-seconds per million records and its busy
//! share of the client's wall time: where the broker, not the client, is the limit, it shows.
//!
//! The peers that are not this project live outside the workspace, under `bench/peers/` (the
//! `rdkafka` crate builds librdkafka in C; no C enters the workspace's build).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

/// Every record value the producers send is one of these 64 (see `bench/peers/common/args.rs`).
const PARTITIONS: u32 = 6;
/// The batch.size every workload names (librdkafka's default; under the broker's 1 MiB limit).
const BATCH_SIZE: u32 = 1_000_000;
const LINGER_MS: u32 = 5;
/// The end-to-end latency workload's fixed rate.
const LATENCY_RATE: u64 = 20_000;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A small run (about 200 k records, 1 round): a smoke test of the harness, not figures.
    #[arg(long)]
    quick: bool,
    /// Rounds per client and workload (default 3, 1 with --quick).
    #[arg(long)]
    rounds: Option<u32>,
    /// Records per produce run of 100-byte values (1 KiB runs and the others scale from it).
    #[arg(long)]
    records: Option<u64>,
    /// Only these clients (ours, kw, kw-musl, rdkafka, java, rskafka).
    #[arg(long, value_delimiter = ',')]
    clients: Vec<String>,
    /// Workloads to run (default: all): produce-100b, produce-1k, produce-lz4, produce-zstd,
    /// produce-snappy, produce-gzip, consume, latency, ceiling, ceiling-lz4.
    workloads: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Client {
    Ours,
    Kw,
    KwMusl,
    Rdkafka,
    Java,
    Rskafka,
}

const CLIENTS: [Client; 6] = [Client::Ours, Client::Rdkafka, Client::Java, Client::Rskafka, Client::Kw, Client::KwMusl];

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Ours => "ours",
            Client::Kw => "kw",
            Client::KwMusl => "kw-musl",
            Client::Rdkafka => "rdkafka",
            Client::Java => "java",
            Client::Rskafka => "rskafka",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Client::Ours => "this library (examples)",
            Client::Kw => "kw (glibc)",
            Client::KwMusl => "kw (static musl)",
            Client::Rdkafka => "librdkafka (rdkafka crate)",
            Client::Java => "Java perf tools",
            Client::Rskafka => "rskafka",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Produce,
    Consume,
    Latency,
    /// This library's producer against an in-process broker that acknowledges at once, its
    /// client on one thread: what the client alone can do (no peer runs it).
    Ceiling,
}

#[derive(Clone, Debug)]
struct Workload {
    name: &'static str,
    kind: Kind,
    value_size: usize,
    compression: &'static str,
    records: u64,
}

fn workloads(records: u64) -> Vec<Workload> {
    let produce = |name, value_size, compression, records| Workload {
        name,
        kind: Kind::Produce,
        value_size,
        compression,
        records,
    };
    vec![
        produce("produce-100b", 100, "none", records),
        produce("produce-1k", 1024, "none", (records / 4).max(1)),
        produce("produce-lz4", 100, "lz4", records),
        produce("produce-zstd", 100, "zstd", records),
        produce("produce-snappy", 100, "snappy", records),
        produce("produce-gzip", 100, "gzip", records),
        Workload { name: "consume", kind: Kind::Consume, value_size: 100, compression: "none", records: records * 2 },
        Workload {
            name: "latency",
            kind: Kind::Latency,
            value_size: 100,
            compression: "none",
            // 10 s at the fixed rate (3 s with --quick); the first second is start-up, left out.
            records: (records / 5).clamp(3 * LATENCY_RATE, 10 * LATENCY_RATE),
        },
        Workload { name: "ceiling", kind: Kind::Ceiling, value_size: 100, compression: "none", records: records * 2 },
        Workload {
            name: "ceiling-lz4",
            kind: Kind::Ceiling,
            value_size: 100,
            compression: "lz4",
            records: records * 2,
        },
    ]
}

/// Which clients run which workload.
fn supports(client: Client, w: &Workload) -> bool {
    match w.kind {
        Kind::Produce => true,
        Kind::Consume => true,
        Kind::Latency => matches!(client, Client::Ours | Client::Rdkafka),
        Kind::Ceiling => client == Client::Ours,
    }
}

/// Whether a workload starts with an untimed run. The broker's JVM serves the first produce
/// of a codec, and the first reads, with code it has not compiled yet: whichever client ran
/// first in round 1 was read at about half its other rounds' rate, with the broker 86-94 %
/// busy against about 40 %. The latency workload leaves its first records out itself; the
/// ceiling has no broker.
fn warms_up(w: &Workload) -> bool {
    matches!(w.kind, Kind::Produce | Kind::Consume)
}

/// One run's figures.
#[derive(Clone, Debug, Default)]
struct Figures {
    records_per_s: f64,
    mb_per_s: f64,
    cpu_s_per_million: f64,
    max_rss_mib: f64,
    disk_bytes_per_record: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    p999_ms: Option<f64>,
    /// records/s over the client process's wall time (start-up and connect included).
    wall_records_per_s: f64,
    /// The broker's CPU seconds during the client process, per million records.
    broker_cpu_s_per_million: Option<f64>,
    /// The broker's CPU seconds / the client process's wall seconds, in % of one core.
    broker_busy_pct: Option<f64>,
}

struct Env {
    root: PathBuf,
    bootstrap: String,
    kw: PathBuf,
    kw_musl: Option<PathBuf>,
    rdkafka: Option<PathBuf>,
    rskafka: Option<PathBuf>,
    scratch: PathBuf,
    /// The broker whose CPU time each client run is measured against.
    broker: Option<Broker>,
    /// Its pid and clock ticks for the report, or why there is no broker.
    broker_note: std::result::Result<String, String>,
    /// What waiting for the broker to settle before each client run took.
    settling: std::cell::Cell<Settling>,
}

/// The waits for the broker to come to rest before the client runs (see [`Broker::settle`]).
#[derive(Clone, Copy, Debug, Default)]
struct Settling {
    runs: u32,
    waited_s: f64,
    /// Runs that started with the broker still busy after [`SETTLE_MAX`].
    gave_up: u32,
}

/// The clients of a workload in the order round `round` (from 1) runs them: each round starts
/// one client further on, so that over as many rounds as clients each client runs once in each
/// place. A client that ran right after another one was read at the broker that one left (its
/// log segments, its page cache): in one run the static `kw`, always right after the glibc
/// `kw`, was read at 0.92-0.94x its rate on the compressed workloads, and at 1.04x when the two
/// ran alone, interleaved.
fn round_order(clients: &[Client], round: u32) -> Vec<Client> {
    let mut order = clients.to_vec();
    if !order.is_empty() {
        let shift = (round.saturating_sub(1) as usize) % order.len();
        order.rotate_left(shift);
    }
    order
}

pub fn run(args: BenchArgs) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize()?;
    let base = args.records.unwrap_or(if args.quick { 200_000 } else { 1_000_000 });
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 });
    let all = workloads(base);
    for w in &args.workloads {
        if !all.iter().any(|x| x.name == w) {
            bail!("unknown workload {w}; known: {}", all.iter().map(|w| w.name).collect::<Vec<_>>().join(", "));
        }
    }
    let chosen: Vec<Workload> =
        all.into_iter().filter(|w| args.workloads.is_empty() || args.workloads.iter().any(|n| n == w.name)).collect();
    let mut clients: Vec<Client> = CLIENTS.to_vec();
    if !args.clients.is_empty() {
        for c in &args.clients {
            if !CLIENTS.iter().any(|k| k.name() == c) {
                bail!("unknown client {c}; known: ours, kw, kw-musl, rdkafka, java, rskafka");
            }
        }
        clients.retain(|c| args.clients.iter().any(|n| n == c.name()));
    }
    anyhow::ensure!(Path::new("/usr/bin/time").exists(), "/usr/bin/time (GNU time) is needed for CPU and RSS figures");

    crate::kafka_up(&[])?;
    let bootstrap = std::fs::read_to_string(root.join(".kafka/bootstrap"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "127.0.0.1:9092".into());
    let env = build(&root, bootstrap, &mut clients)?;
    let broker_at_rest = env.broker.as_ref().and_then(|b| b.at_rest(Duration::from_secs(2)));

    // results[workload][client] = one Figures per round
    let mut results: BTreeMap<&str, BTreeMap<Client, Vec<Figures>>> = BTreeMap::new();
    let load_before = loadavg();
    let started = Instant::now();
    for w in &chosen {
        if warms_up(w) {
            eprint!("bench: {} warm-up (untimed): {} … ", w.name, Client::Ours.name());
            match run_one(&env, Client::Ours, w) {
                Ok(_) => eprintln!("done"),
                Err(e) => eprintln!("failed: {e:#}"),
            }
        }
        let runners: Vec<Client> = clients.iter().copied().filter(|c| supports(*c, w)).collect();
        for round in 1..=rounds {
            for client in round_order(&runners, round) {
                eprint!("bench: {} round {round}/{rounds}: {} … ", w.name, client.name());
                match run_one(&env, client, w) {
                    Ok(f) => {
                        eprintln!(
                            "{:.0} records/s, {:.2} CPU-s/M, {:.0} MiB{}{}",
                            f.records_per_s,
                            f.cpu_s_per_million,
                            f.max_rss_mib,
                            f.p99_ms.map(|p| format!(", p99 {p:.2} ms")).unwrap_or_default(),
                            match (f.broker_cpu_s_per_million, f.broker_busy_pct) {
                                (Some(c), Some(b)) => format!("; broker {c:.2} CPU-s/M, busy {b:.0} %"),
                                _ => String::new(),
                            }
                        );
                        results.entry(w.name).or_default().entry(client).or_default().push(f);
                    }
                    Err(e) => eprintln!("failed: {e:#}"),
                }
            }
        }
    }
    let load_after = loadavg();
    let run = RunInfo {
        rounds,
        load_before,
        load_after,
        took_s: started.elapsed().as_secs(),
        broker_note: env.broker_note.clone(),
        broker_at_rest,
        settling: env.settling.get(),
    };
    let table = report(&chosen, &clients, &results, &run)?;
    let dir = root.join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let stem = format!("{}-{}{}", today(), machine_name(), if args.quick { "-quick" } else { "" });
    let md = dir.join(format!("{stem}.md"));
    let png = dir.join(format!("{stem}.png"));
    let chart_note = match chart(&png, &chosen, &clients, &results) {
        Ok(()) => format!("\n![records/s as a ratio to librdkafka]({stem}.png)\n"),
        Err(e) => {
            eprintln!("bench: no chart: {e:#}");
            String::new()
        }
    };
    std::fs::write(&md, format!("{table}{chart_note}"))?;
    println!("{table}");
    println!("written: {}", md.display());
    Ok(())
}

/// Builds what the run needs (release) and drops the clients that cannot be built.
fn build(root: &Path, bootstrap: String, clients: &mut Vec<Client>) -> Result<Env> {
    crate::cargo(&[
        "build",
        "--release",
        "-p",
        "kafka-wire",
        "--example",
        "produce_bench",
        "--example",
        "consume_bench",
    ])?;
    crate::cargo(&["build", "--release", "-p", "kw"])?;
    let musl = root.join("target/x86_64-unknown-linux-musl/release/kw");
    let kw_musl = if clients.contains(&Client::KwMusl) {
        let built = crate::cargo(&["build", "--release", "-p", "kw", "--target", "x86_64-unknown-linux-musl"]);
        match built {
            Ok(()) => Some(musl),
            Err(e) if musl.exists() => {
                eprintln!("bench: building kw for musl failed ({e:#}); using the existing {}", musl.display());
                Some(musl)
            }
            Err(e) => {
                eprintln!("bench: no static musl kw ({e:#})");
                None
            }
        }
    } else {
        None
    };
    let peer = |name: &str| -> Option<PathBuf> {
        let dir = root.join("bench/peers").join(name);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo).args(["build", "--release", "--quiet"]).current_dir(&dir).status();
        let bin = dir.join(format!("target/release/bench-peer-{name}"));
        match status {
            Ok(s) if s.success() && bin.exists() => Some(bin),
            other => {
                eprintln!("bench: the {name} peer did not build ({other:?}); it is left out");
                None
            }
        }
    };
    let rdkafka = if clients.contains(&Client::Rdkafka) { peer("rdkafka") } else { None };
    let rskafka = if clients.contains(&Client::Rskafka) { peer("rskafka") } else { None };
    clients.retain(|c| match c {
        Client::KwMusl => kw_musl.is_some(),
        Client::Rdkafka => rdkafka.is_some(),
        Client::Rskafka => rskafka.is_some(),
        _ => true,
    });
    let scratch = root.join("target/bench");
    std::fs::create_dir_all(&scratch)?;
    let (broker, broker_note) = match find_broker(&bootstrap) {
        Ok(b) => {
            let note = format!("pid {}, {}", b.pid, b.ticks_note);
            (Some(b), Ok(note))
        }
        Err(why) => {
            eprintln!("bench: no broker CPU figures: {why}");
            (None, Err(why))
        }
    };
    Ok(Env {
        root: root.to_path_buf(),
        bootstrap,
        kw: root.join("target/release/kw"),
        kw_musl,
        rdkafka,
        rskafka,
        scratch,
        broker,
        broker_note,
        settling: Default::default(),
    })
}

/// The 64 values of `bench/peers/common/args.rs` (seeded xorshift over 64 symbols).
fn values(size: usize) -> Vec<Vec<u8>> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..64)
        .map(|_| {
            (0..size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    b'0' + (state % 64) as u8
                })
                .collect()
        })
        .collect()
}

/// A file of the 64 values, one per line: the Java tool's `--payload-file` (it picks among them
/// at random).
fn payload_file(env: &Env, size: usize) -> Result<PathBuf> {
    let path = env.scratch.join(format!("payloads-{size}.txt"));
    if !path.exists() {
        let mut text = Vec::new();
        for v in values(size) {
            text.extend_from_slice(&v);
            text.push(b'\n');
        }
        std::fs::write(&path, text)?;
    }
    Ok(path)
}

/// `records` lines cycling through the 64 values: `kw produce`'s input.
fn lines_file(env: &Env, size: usize, records: u64) -> Result<PathBuf> {
    let path = env.scratch.join(format!("lines-{size}-{records}.txt"));
    if !path.exists() {
        let values = values(size);
        let mut text = Vec::with_capacity((size + 1) * records as usize);
        for i in 0..records as usize {
            text.extend_from_slice(&values[i % values.len()]);
            text.push(b'\n');
        }
        std::fs::write(&path, text)?;
    }
    Ok(path)
}

fn kw(env: &Env, args: &[&str]) -> Result<()> {
    let out = Command::new(&env.kw).args(args).args(["-b", &env.bootstrap]).stdout(Stdio::null()).output()?;
    anyhow::ensure!(out.status.success(), "kw {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

fn create_topic(env: &Env, name: &str) -> Result<()> {
    kw(env, &["topics", "create", name, "--partitions", &PARTITIONS.to_string(), "--replication-factor", "1"])
}

/// Bytes of the topic's log segments on the 1-node broker's disk.
fn topic_log_bytes(env: &Env, topic: &str) -> Result<u64> {
    let data = env.root.join(".kafka/cluster1/node1/data");
    let mut total = 0;
    for entry in std::fs::read_dir(&data).with_context(|| format!("reading {}", data.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(partition) = name.strip_prefix(topic).and_then(|r| r.strip_prefix('-')) else { continue };
        if partition.parse::<u32>().is_err() {
            continue;
        }
        for f in std::fs::read_dir(entry.path())? {
            let f = f?;
            if f.path().extension().is_some_and(|e| e == "log") {
                total += f.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// What GNU time reports of a client process, its output, and the broker's CPU time meanwhile.
struct Ran {
    stdout: String,
    stderr: String,
    wall_s: f64,
    cpu_s: f64,
    max_rss_kb: f64,
    /// The broker's CPU seconds (user + system) from just before the process started until it
    /// exited, and that window's length; `None` without a broker pid, or if the broker's
    /// process could not be read before and after (or was another process after).
    broker: Option<BrokerUse>,
}

#[derive(Clone, Copy, Debug)]
struct BrokerUse {
    cpu_s: f64,
    window_s: f64,
}

/// Runs a client under GNU time, with `stdin` as its input (kw produce) and its standard output
/// kept for its figures.
fn timed(env: &Env, program: &Path, args: &[String], stdin: Option<&Path>) -> Result<Ran> {
    timed_to(env, program, args, stdin, false)
}

/// [`timed`]; with `discard_stdout` the records `kw consume` prints go to /dev/null, not
/// through a pipe into this process.
fn timed_to(env: &Env, program: &Path, args: &[String], stdin: Option<&Path>, discard_stdout: bool) -> Result<Ran> {
    let rusage = env.scratch.join("rusage.txt");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "%e %U %S %M", "-o"]).arg(&rusage).arg(program).args(args).current_dir(&env.root);
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p)?),
        None => Stdio::null(),
    });
    cmd.stderr(Stdio::piped()).stdout(if discard_stdout { Stdio::null() } else { Stdio::piped() });
    if let Some(b) = &env.broker {
        let (waited, settled) = b.settle();
        let mut s = env.settling.get();
        s.runs += 1;
        s.waited_s += waited.as_secs_f64();
        s.gave_up += u32::from(!settled);
        env.settling.set(s);
    }
    let before = env.broker.as_ref().and_then(Broker::sample);
    let window = Instant::now();
    let out = cmd.output()?;
    let window_s = window.elapsed().as_secs_f64();
    let after = env.broker.as_ref().and_then(Broker::sample);
    let broker = match (env.broker.as_ref(), before, after) {
        (Some(b), Some(before), Some(after)) => b.used(before, after, window_s),
        _ => None,
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "{} exited with {}: {}",
            program.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    let usage = std::fs::read_to_string(&rusage)?;
    let f: Vec<f64> = usage.lines().last().unwrap_or("").split_whitespace().filter_map(|x| x.parse().ok()).collect();
    anyhow::ensure!(f.len() == 4, "unexpected GNU time output {usage:?}");
    Ok(Ran { stdout, stderr, wall_s: f[0], cpu_s: f[1] + f[2], max_rss_kb: f[3], broker })
}

/// A number field of the last JSON line of a client's output.
fn json_field(stdout: &str, key: &str) -> Option<f64> {
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{'))?;
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

fn s<T: ToString>(v: T) -> String {
    v.to_string()
}

fn run_one(env: &Env, client: Client, w: &Workload) -> Result<Figures> {
    match w.kind {
        Kind::Ceiling => ceiling(env, w),
        Kind::Consume => on_fresh_topic(env, client, w, |topic| {
            // Filled by this library's producer (the same bytes for every consumer); not timed.
            produce_ours(env, topic, w, false)?;
            consume(env, client, topic, w)
        }),
        Kind::Produce => on_fresh_topic(env, client, w, |topic| produce(env, client, topic, w)),
        Kind::Latency => on_fresh_topic(env, client, w, |topic| latency(env, client, topic, w)),
    }
}

/// Runs `run` on a topic created for it, deleted afterwards.
fn on_fresh_topic(
    env: &Env,
    client: Client,
    w: &Workload,
    run: impl FnOnce(&str) -> Result<Figures>,
) -> Result<Figures> {
    let topic = format!("bench-{}-{}-{}", w.name, client.name(), std::process::id() as u64 * 1000 + rand_suffix());
    create_topic(env, &topic)?;
    let result = run(&topic);
    let _ = kw(env, &["topics", "delete", &topic]);
    result
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64 % 1000)
}

/// `produce_bench`'s arguments for the workload's records, values, batching and codec.
fn produce_bench_workload(w: &Workload) -> Vec<String> {
    vec![
        s("--records"),
        s(w.records),
        s("--value-size"),
        s(w.value_size),
        s("--batch-size"),
        s(BATCH_SIZE),
        s("--linger-ms"),
        s(LINGER_MS),
        s("--compression"),
        w.compression.into(),
        s("--value-kind"),
        s("random"),
    ]
}

fn produce_ours(env: &Env, topic: &str, w: &Workload, json: bool) -> Result<Ran> {
    let mut args = vec![s("--bootstrap"), env.bootstrap.clone(), s("--topic"), topic.into()];
    args.extend(produce_bench_workload(w));
    if json {
        args.push(s("--json"));
    }
    timed(env, &env.root.join("target/release/examples/produce_bench"), &args, None)
}

fn peer_args(env: &Env, mode: &str, topic: &str, w: &Workload) -> Vec<String> {
    vec![
        mode.into(),
        s("--bootstrap"),
        env.bootstrap.clone(),
        s("--topic"),
        topic.into(),
        s("--records"),
        s(w.records),
        s("--value-size"),
        s(w.value_size),
        s("--batch-size"),
        s(BATCH_SIZE),
        s("--linger-ms"),
        s(LINGER_MS),
        s("--compression"),
        w.compression.into(),
        s("--rate"),
        s(LATENCY_RATE),
    ]
}

fn peer_bin(env: &Env, client: Client) -> Result<&Path> {
    match client {
        Client::Rdkafka => env.rdkafka.as_deref(),
        Client::Rskafka => env.rskafka.as_deref(),
        _ => None,
    }
    .context("not a built peer")
}

fn xtask_tool(env: &Env, tool: &str, args: Vec<String>) -> Result<Ran> {
    let mut all = vec![s("kafka"), s("tool"), s(tool)];
    all.extend(args);
    timed(env, &std::env::current_exe()?, &all, None)
}

/// Figures from a run: records/s from the client's own timed phase (`secs` in its JSON line,
/// or `rate` when the client prints a rate), else from the process's wall time; the broker's
/// CPU while the process ran.
fn figures(ran: &Ran, records: u64, value_size: usize, rate: Option<f64>) -> Figures {
    let wall_rate = records as f64 / ran.wall_s.max(0.001);
    let rate = rate.or_else(|| json_field(&ran.stdout, "secs").map(|s| records as f64 / s)).unwrap_or(wall_rate);
    Figures {
        records_per_s: rate,
        wall_records_per_s: wall_rate,
        broker_cpu_s_per_million: ran.broker.map(|b| b.cpu_s / (records as f64 / 1e6)),
        broker_busy_pct: ran.broker.map(|b| 100.0 * b.cpu_s / b.window_s.max(0.001)),
        mb_per_s: rate * value_size as f64 / 1e6,
        cpu_s_per_million: ran.cpu_s / (records as f64 / 1e6),
        max_rss_mib: ran.max_rss_kb / 1024.0,
        p50_ms: json_field(&ran.stdout, "p50_ms"),
        p99_ms: json_field(&ran.stdout, "p99_ms"),
        p999_ms: json_field(&ran.stdout, "p999_ms"),
        ..Figures::default()
    }
}

/// records/s of `kw produce`'s summary line on stderr (`kw: produced N records (…) to 'T' in S s:
/// R records/s, M MiB/s`), or of `kw consume --stats`'s (`kw: consumed N records (…) from 'T' in
/// S s: R records/s, …`): the timed phase, start-up, connect and metadata left out (`verb` is
/// `produced` or `consumed`).
fn kw_rate(stderr: &str, verb: &str, records: u64) -> Result<f64> {
    let prefix = format!("kw: {verb} ");
    let line = stderr.lines().rev().find_map(|l| l.trim().strip_prefix(prefix.as_str())).with_context(|| {
        let mut tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        tail.reverse();
        format!("no `kw: {verb} …` summary on kw's stderr: {:?}", tail.join(" | "))
    })?;
    let done: u64 = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no record count in kw's summary {line:?}"))?;
    anyhow::ensure!(done == records, "kw {verb} {done} records, not {records}: {line:?}");
    let rate = line
        .rsplit_once(" s: ")
        .and_then(|(_, r)| r.split_once(" records/s"))
        .and_then(|(r, _)| r.trim().parse::<f64>().ok())
        .filter(|r| r.is_finite() && *r > 0.0)
        .with_context(|| format!("no records/s in kw's summary {line:?}"))?;
    Ok(rate)
}

fn produce(env: &Env, client: Client, topic: &str, w: &Workload) -> Result<Figures> {
    let (ran, rate) = match client {
        Client::Ours => (produce_ours(env, topic, w, true)?, None),
        Client::Rdkafka | Client::Rskafka => {
            (timed(env, peer_bin(env, client)?, &peer_args(env, "produce", topic, w), None)?, None)
        }
        Client::Kw | Client::KwMusl => {
            let bin = if client == Client::Kw { env.kw.clone() } else { env.kw_musl.clone().context("no musl kw")? };
            let input = lines_file(env, w.value_size, w.records)?;
            // Not `-q`: the summary line on stderr gives the timed phase's rate.
            let mut args = vec![s("produce"), topic.into(), s("-b"), env.bootstrap.clone(), s("--acks"), s("all")];
            args.extend([s("--idempotent"), s("true")]);
            args.extend([s("-X"), format!("linger.ms={LINGER_MS}"), s("-X"), format!("batch.size={BATCH_SIZE}")]);
            if w.compression != "none" {
                args.extend([s("-z"), w.compression.into()]);
            }
            let ran = timed(env, &bin, &args, Some(&input))?;
            let rate = kw_rate(&ran.stderr, "produced", w.records)?;
            (ran, Some(rate))
        }
        Client::Java => {
            let payloads = payload_file(env, w.value_size)?;
            let ran = xtask_tool(
                env,
                "producer-perf",
                vec![
                    s("--topic"),
                    topic.into(),
                    s("--num-records"),
                    s(w.records),
                    s("--payload-file"),
                    payloads.display().to_string(),
                    s("--throughput"),
                    s("-1"),
                    s("--producer-props"),
                    format!("bootstrap.servers={}", env.bootstrap),
                    s("acks=all"),
                    s("enable.idempotence=true"),
                    format!("linger.ms={LINGER_MS}"),
                    format!("batch.size={BATCH_SIZE}"),
                    format!("compression.type={}", w.compression),
                ],
            )?;
            // "N records sent, R records/sec (M MB/sec), …"
            let rate = ran
                .stdout
                .lines()
                .rev()
                .find(|l| l.contains("records sent"))
                .and_then(|l| l.split(", ").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|r| r.parse().ok());
            anyhow::ensure!(rate.is_some(), "no rate in ProducerPerformance's output: {}", ran.stdout.trim());
            (ran, rate)
        }
    };
    let mut f = figures(&ran, w.records, w.value_size, rate);
    if w.compression != "none" {
        f.disk_bytes_per_record = Some(topic_log_bytes(env, topic)? as f64 / w.records as f64);
    }
    Ok(f)
}

fn consume(env: &Env, client: Client, topic: &str, w: &Workload) -> Result<Figures> {
    let (ran, rate) = match client {
        Client::Ours => {
            let args = vec![env.bootstrap.clone(), s(w.records), s("--topic"), topic.into(), s("--json")];
            (timed(env, &env.root.join("target/release/examples/consume_bench"), &args, None)?, None)
        }
        Client::Rdkafka | Client::Rskafka => {
            (timed(env, peer_bin(env, client)?, &peer_args(env, "consume", topic, w), None)?, None)
        }
        Client::Kw | Client::KwMusl => {
            let bin = if client == Client::Kw { env.kw.clone() } else { env.kw_musl.clone().context("no musl kw")? };
            let args = vec![s("consume"), topic.into(), s("-b"), env.bootstrap.clone(), s("--from"), s("beginning")];
            // --stats: the summary line on stderr gives the timed phase's rate.
            let args = [args, vec![s("-c"), s(w.records), s("--exit-at-end"), s("--stats")]].concat();
            let ran = timed_to(env, &bin, &args, None, true)?;
            let rate = kw_rate(&ran.stderr, "consumed", w.records)?;
            (ran, Some(rate))
        }
        Client::Java => {
            let ran = xtask_tool(
                env,
                "consumer-perf",
                vec![
                    s("--bootstrap-server"),
                    env.bootstrap.clone(),
                    s("--topic"),
                    topic.into(),
                    s("--messages"),
                    s(w.records),
                ],
            )?;
            // A header line, then "start, end, MB, MB/s, records, records/s, rebalance ms,
            // fetch ms, fetch MB/s, fetch records/s": the fetch rate leaves the group join out.
            let rate = ran
                .stdout
                .lines()
                .rev()
                .find(|l| l.split(", ").count() >= 10)
                .and_then(|l| l.split(", ").nth(9))
                .and_then(|r| r.trim().parse().ok());
            anyhow::ensure!(rate.is_some(), "no rate in ConsumerPerformance's output: {}", ran.stdout.trim());
            (ran, rate)
        }
    };
    Ok(figures(&ran, w.records, w.value_size, rate))
}

fn latency(env: &Env, client: Client, topic: &str, w: &Workload) -> Result<Figures> {
    let ran = match client {
        Client::Ours => {
            let args = vec![
                env.bootstrap.clone(),
                s(w.records),
                s("--topic"),
                topic.into(),
                s("--latency"),
                s("--rate"),
                s(LATENCY_RATE),
                s("--batch-size"),
                s(BATCH_SIZE),
                s("--json"),
            ];
            timed(env, &env.root.join("target/release/examples/consume_bench"), &args, None)?
        }
        Client::Rdkafka => timed(env, peer_bin(env, client)?, &peer_args(env, "latency", topic, w), None)?,
        other => bail!("{} has no latency run", other.name()),
    };
    Ok(figures(&ran, w.records, w.value_size, None))
}

/// `produce_bench --fake --nowait` (a per-topic handle's `send_nowait`: the path of a caller that
/// does not await each record) at the workload's batch size and codec, its client on a
/// current-thread runtime (one thread: the fake broker has a thread of its own, whose CPU time the benchmark
/// leaves out of its `cpu_s`; only requests with 64 KiB or more to compress are sealed on
/// another thread, tokio's blocking pool). CPU-s per million is the client's (the JSON line's),
/// not the process's; max RSS includes the fake broker.
fn ceiling(env: &Env, w: &Workload) -> Result<Figures> {
    let mut args = vec![s("--fake"), s("--current-thread"), s("--nowait")];
    args.extend(produce_bench_workload(w));
    args.push(s("--json"));
    let ran = timed(env, &env.root.join("target/release/examples/produce_bench"), &args, None)?;
    let mut f = figures(&ran, w.records, w.value_size, None);
    let cpu = json_field(&ran.stdout, "cpu_s").context("no cpu_s in produce_bench's output")?;
    f.cpu_s_per_million = cpu / (w.records as f64 / 1e6);
    // The real broker idled meanwhile: not this run's.
    f.broker_cpu_s_per_million = None;
    f.broker_busy_pct = None;
    Ok(f)
}

// ---------------------------------------------------------------------------------------------
// Report

fn median_min_max(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some((v[v.len() / 2], v[0], v[v.len() - 1]))
}

type Metric = (&'static str, fn(&Figures) -> Option<f64>, usize);

fn metrics(kind: Kind) -> Vec<Metric> {
    let mut m: Vec<Metric> = vec![
        ("records/s", |f| Some(f.records_per_s), 0),
        ("MB/s", |f| Some(f.mb_per_s), 1),
        ("CPU-s per M records", |f| Some(f.cpu_s_per_million), 2),
        ("max RSS MiB", |f| Some(f.max_rss_mib), 0),
    ];
    match kind {
        Kind::Produce => m.push(("disk bytes/record", |f| f.disk_bytes_per_record, 1)),
        Kind::Latency => {
            m = vec![
                ("p50 ms", |f| f.p50_ms, 2),
                ("p99 ms", |f| f.p99_ms, 2),
                ("p99.9 ms", |f| f.p999_ms, 2),
                ("CPU-s per M records", |f| Some(f.cpu_s_per_million), 2),
                ("max RSS MiB", |f| Some(f.max_rss_mib), 0),
            ]
        }
        Kind::Consume | Kind::Ceiling => {}
    }
    // The ceiling's broker is in-process and fake: no broker figures.
    if kind != Kind::Ceiling {
        m.push(("broker CPU-s per M records", |f| f.broker_cpu_s_per_million, 2));
        m.push(("broker busy % of a core", |f| f.broker_busy_pct, 0));
    }
    m
}

fn fmt_num(v: f64, decimals: usize) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 && decimals == 0 {
        format!("{:.0} k", v / 1e3)
    } else {
        format!("{v:.decimals$}")
    }
}

/// What the report says of the run as a whole.
struct RunInfo {
    rounds: u32,
    load_before: String,
    load_after: String,
    took_s: u64,
    /// The broker's pid and clock ticks, or why its CPU is not measured.
    broker_note: std::result::Result<String, String>,
    /// The broker's CPU at rest before the first run, in % of one core.
    broker_at_rest: Option<f64>,
    settling: Settling,
}

fn report(
    workloads: &[Workload],
    clients: &[Client],
    results: &BTreeMap<&str, BTreeMap<Client, Vec<Figures>>>,
    run: &RunInfo,
) -> Result<String> {
    let RunInfo { rounds, load_before, load_after, took_s, .. } = run;
    let mut out = String::new();
    writeln!(out, "# Benchmark: this client against its peers, {}\n", today())?;
    writeln!(out, "`cargo xtask bench` ({rounds} round(s), interleaved, each starting one client further on; median and min–max; ratio = the median / librdkafka's median in the same run).\n")?;
    writeln!(out, "- machine: {} ({} cores, {}), `{}`", machine_name(), cores(), cpu_model(), kernel())?;
    writeln!(out, "- load average before / after: {load_before} / {load_after} (the broker runs on the same cores; anything else running adds to these)")?;
    writeln!(out, "- run took {took_s} s; broker: the local 1-node Kafka of `cargo xtask kafka up`")?;
    writeln!(
        out,
        "- settings: {PARTITIONS} partitions, RF 1, acks=all, idempotence on (rskafka has none), linger {LINGER_MS} ms, batch.size {BATCH_SIZE}, 32 MiB of buffered records (buffer.memory; librdkafka: queue.buffering.max.kbytes, its message cap raised so that bytes bind); values: 64 seeded pseudo-random values over 64 symbols"
    )?;
    writeln!(
        out,
        "- clients: {}",
        clients.iter().map(|c| format!("{} = {}", c.name(), c.label())).collect::<Vec<_>>().join("; ")
    )?;
    writeln!(out, "- consume: this library reads with `Consumer::poll_views` (records read in place, no handle per record), librdkafka with `rd_kafka_consume_batch_queue` (each the client's fastest way); `consume_bench --records-owned` reads with `Consumer::poll` instead")?;
    writeln!(out, "- CPU and max RSS: the whole client process (GNU time), start-up included; records/s: the client's timed phase (`kw`: its own summary line, of `kw produce` and `kw consume --stats`); under each produce and consume table, each client's records/s over its process's wall time, start-up and connect included")?;
    let cores = cores();
    match &run.broker_note {
        Ok(note) => writeln!(
            out,
            "- broker CPU: the broker JVM's user + system time (`/proc/<pid>/stat`, {}) from just before each client process starts until it exits: broker CPU-s per M records, and broker busy = those CPU seconds / the client process's wall seconds, in % of one core (the machine has {cores} cores, so {} % would be all of them, the client's share included). Consume: the measured consume only, not the untimed fill before it. The client's start-up (a JVM's too) is in its wall time and lowers the busy share. At rest (2 s before the first run) the broker used {} of a core",
            note,
            cores * 100,
            run.broker_at_rest.map_or_else(|| "— %".into(), |p| format!("{p:.1} %")),
        )?,
        Err(why) => writeln!(out, "- broker CPU: — (not measured: {why})")?,
    }
    writeln!(out, "- each produce and consume workload starts with an untimed run of this library's client, so that the broker has compiled that workload's code before any client is timed")?;
    if run.settling.runs > 0 {
        let s = run.settling;
        writeln!(
            out,
            "- before each client process the run waits for the broker to be at rest (under {SETTLE_BUSY_PCT:.0} % of a core over {} ms, for at most {} s): {:.0} s in all for {} processes{}",
            SETTLE_WINDOW.as_millis(),
            SETTLE_MAX.as_secs(),
            s.waited_s,
            s.runs,
            match s.gave_up {
                0 => String::new(),
                n => format!("; {n} started with the broker still busy"),
            }
        )?;
    }
    writeln!(out, "- ceiling: `produce_bench --fake --current-thread --nowait`, this library against an in-process broker that acknowledges at once, the client on one thread; its CPU is the client's threads' (the fake broker's thread left out), its RSS the whole process's\n")?;
    for w in workloads {
        let Some(per_client) = results.get(w.name) else { continue };
        writeln!(
            out,
            "## {} ({} records{}{})\n",
            w.name,
            w.records,
            if w.kind == Kind::Latency {
                format!(" at {LATENCY_RATE}/s")
            } else {
                format!(", {} B values", w.value_size)
            },
            if w.compression != "none" { format!(", {}", w.compression) } else { String::new() }
        )?;
        let metrics = metrics(w.kind);
        write!(out, "| client |")?;
        for (name, _, _) in &metrics {
            write!(out, " {name} |")?;
        }
        writeln!(out)?;
        writeln!(out, "|---|{}", "---|".repeat(metrics.len()))?;
        let reference: Vec<Option<f64>> = metrics
            .iter()
            .map(|(_, get, _)| {
                let runs = per_client.get(&Client::Rdkafka)?;
                median_min_max(runs.iter().filter_map(get).collect()).map(|m| m.0)
            })
            .collect();
        for c in clients {
            let Some(runs) = per_client.get(c) else { continue };
            write!(out, "| {} |", c.name())?;
            for ((_, get, decimals), reference) in metrics.iter().zip(&reference) {
                match median_min_max(runs.iter().filter_map(get).collect()) {
                    None => write!(out, " — |")?,
                    Some((med, lo, hi)) => {
                        write!(out, " {}", fmt_num(med, *decimals))?;
                        if runs.len() > 1 {
                            write!(out, " ({}–{})", fmt_num(lo, *decimals), fmt_num(hi, *decimals))?;
                        }
                        if let Some(r) = reference.filter(|r| *r > 0.0 && *c != Client::Rdkafka) {
                            write!(out, " **{:.2}×**", med / r)?;
                        }
                        write!(out, " |")?;
                    }
                }
            }
            writeln!(out)?;
        }
        if matches!(w.kind, Kind::Produce | Kind::Consume) {
            let wall: Vec<String> = clients
                .iter()
                .filter_map(|c| {
                    let runs = per_client.get(c)?;
                    let (med, _, _) = median_min_max(runs.iter().map(|f| f.wall_records_per_s).collect())?;
                    Some(format!("{} {}", c.name(), fmt_num(med, 0)))
                })
                .collect();
            if !wall.is_empty() {
                writeln!(
                    out,
                    "\nrecords/s over the client process's wall time (start-up and connect included): {}",
                    wall.join(", ")
                )?;
            }
        }
        writeln!(out)?;
    }
    Ok(out)
}

/// A grouped bar chart: each client's median records/s (latency: p99) as a ratio to
/// librdkafka's, per workload. Needs a TrueType font for its labels (DejaVu Sans, Debian's
/// `fonts-dejavu-core`).
fn chart(
    path: &Path,
    workloads: &[Workload],
    clients: &[Client],
    results: &BTreeMap<&str, BTreeMap<Client, Vec<Figures>>>,
) -> Result<()> {
    use plotters::prelude::*;
    let font = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .context("no DejaVuSans.ttf for the chart's labels")?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice()))
        .map_err(|_| anyhow::anyhow!("DejaVuSans.ttf is not a usable font"))?;

    // The ceiling has no peer to be a ratio of.
    let shown: Vec<&Workload> =
        workloads.iter().filter(|w| w.kind != Kind::Ceiling && results.contains_key(w.name)).collect();
    // ratio[w][c]
    let ratio = |w: &Workload, c: Client| -> Option<f64> {
        let per = results.get(w.name)?;
        let get = |c: Client| {
            let runs = per.get(&c)?;
            let v: Vec<f64> = runs
                .iter()
                .filter_map(|f| if w.kind == Kind::Latency { f.p99_ms } else { Some(f.records_per_s) })
                .collect();
            median_min_max(v).map(|m| m.0)
        };
        let (v, r) = (get(c)?, get(Client::Rdkafka)?);
        (r > 0.0).then_some(v / r)
    };
    let top = shown
        .iter()
        .flat_map(|w| clients.iter().filter_map(move |c| ratio(w, *c)))
        .fold(1.0f64, f64::max)
        .mul_add(1.1, 0.0);

    let root = BitMapBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let names: Vec<String> =
        shown.iter().map(|w| if w.kind == Kind::Latency { "latency p99".into() } else { w.name.to_string() }).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption("records/s as a ratio to librdkafka (latency: p99 ratio, lower is better)", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..shown.len() as f64, 0f64..top)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(shown.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("ratio to librdkafka")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let width = 0.8 / clients.len() as f64;
    for (ci, &c) in clients.iter().enumerate() {
        let color = Palette99::pick(ci).to_rgba();
        let bars: Vec<_> = shown
            .iter()
            .enumerate()
            .filter_map(|(wi, w)| {
                let x0 = wi as f64 + 0.1 + ci as f64 * width;
                ratio(w, c).map(|r| Rectangle::new([(x0, 0.0), (x0 + width * 0.9, r)], color.filled()))
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(c.label())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new([(0.0, 1.0), (shown.len() as f64, 1.0)], BLACK.stroke_width(1)))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The broker's CPU

/// How [`Broker::settle`] decides the broker is at rest: at rest it uses 2-3 % of a core; the
/// window is 20 of `/proc`'s 10 ms clock ticks, so under 15 % is at most 2 ticks.
const SETTLE_WINDOW: Duration = Duration::from_millis(200);
const SETTLE_BUSY_PCT: f64 = 15.0;
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// The local 1-node broker's JVM, whose CPU time each client run is measured against.
struct Broker {
    pid: u32,
    /// Clock ticks per second of `/proc/<pid>/stat`'s times.
    ticks_per_s: f64,
    /// Where `ticks_per_s` came from, for the report.
    ticks_note: String,
}

/// One reading of the broker's `/proc/<pid>/stat`: user + system ticks of all its threads, and
/// its start time (a different start time is another process with the same pid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    ticks: u64,
    start_time: u64,
}

impl Broker {
    fn sample(&self) -> Option<Sample> {
        parse_stat(&std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?)
    }

    /// The broker's CPU between two samples `window_s` apart, if both are of the same process.
    fn used(&self, before: Sample, after: Sample, window_s: f64) -> Option<BrokerUse> {
        (before.start_time == after.start_time && after.ticks >= before.ticks)
            .then(|| BrokerUse { cpu_s: (after.ticks - before.ticks) as f64 / self.ticks_per_s, window_s })
    }

    /// Waits, up to [`SETTLE_MAX`], until the broker uses under [`SETTLE_BUSY_PCT`] of a core
    /// over [`SETTLE_WINDOW`]: how long it waited, and whether the broker came to rest. Work
    /// left from what ran before (a fill's appends, a garbage collection) otherwise lands in a
    /// client's timed phase: a round's first consumer, right after the last produce workload,
    /// was read with the broker 94 % busy, against 39-42 % for the same work in later rounds.
    fn settle(&self) -> (Duration, bool) {
        let start = Instant::now();
        while start.elapsed() < SETTLE_MAX {
            match self.at_rest(SETTLE_WINDOW) {
                Some(busy) if busy >= SETTLE_BUSY_PCT => continue,
                Some(_) => return (start.elapsed(), true),
                None => break,
            }
        }
        (start.elapsed(), false)
    }

    /// The broker's CPU over `span` with no client running, in % of one core.
    fn at_rest(&self, span: Duration) -> Option<f64> {
        let before = self.sample()?;
        let t = Instant::now();
        std::thread::sleep(span);
        let used = self.used(before, self.sample()?, t.elapsed().as_secs_f64())?;
        Some(100.0 * used.cpu_s / used.window_s)
    }
}

/// utime + stime and starttime of a `/proc/<pid>/stat` line. `comm` (in parentheses) may hold
/// spaces and parentheses: the fields after the last ')' begin at field 3 (state); utime is
/// field 14, stime 15, starttime 22 (proc(5)).
fn parse_stat(stat: &str) -> Option<Sample> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Sample { ticks: field(14)? + field(15)?, start_time: field(22)? })
}

/// The broker the run measures: node 1 of the local 1-node cluster (its pid file names a live
/// JVM started with the node's `server.properties`), if the run's bootstrap is that cluster's.
/// Else why not.
fn find_broker(bootstrap: &str) -> Result<Broker, String> {
    let (pid, local) = crate::kafka::local_broker().ok_or("the local 1-node cluster is not running")?;
    if local != bootstrap {
        return Err(format!(
            "the run's bootstrap {bootstrap} is not the local 1-node cluster ({local}), whose broker process this machine knows"
        ));
    }
    let (ticks_per_s, ticks_note) = clock_ticks();
    Ok(Broker { pid, ticks_per_s, ticks_note })
}

/// `getconf CLK_TCK`, else 100 (Linux's USER_HZ on every common architecture).
fn clock_ticks() -> (f64, String) {
    let got = Command::new("getconf")
        .arg("CLK_TCK")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u32>().ok())
        .filter(|t| *t > 0);
    match got {
        Some(t) => (f64::from(t), format!("{t} ticks/s from `getconf CLK_TCK`")),
        None => (100.0, "100 ticks/s assumed (`getconf CLK_TCK` gave none)".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// The machine

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| format!("Linux {}", s.trim())).unwrap_or_default()
}

/// A short name for the machine: its hostname's first label.
fn machine_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "machine".into());
    let short: String = host
        .trim()
        .split('.')
        .next()
        .unwrap_or("machine")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(24)
        .collect();
    if short.is_empty() {
        "machine".into()
    } else {
        short
    }
}

/// Today's date (UTC), YYYY-MM-DD.
fn today() -> String {
    Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "undated".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_after_the_last_parenthesis() {
        // comm with a space and a ')' in it; utime 1200, stime 345, starttime 98765.
        let stat = "8400 (java) x) S 1 8400 8400 0 -1 4194560 100 0 0 0 1200 345 0 0 20 0 60 0 98765 4000000 150000";
        assert_eq!(parse_stat(stat), Some(Sample { ticks: 1545, start_time: 98765 }));
        assert_eq!(parse_stat("8400 (java) S 1 2"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_stat(&own).is_some(), "{own}");
    }

    #[test]
    fn broker_use_only_of_one_process() {
        let b = Broker { pid: 1, ticks_per_s: 100.0, ticks_note: String::new() };
        let used = b.used(Sample { ticks: 100, start_time: 7 }, Sample { ticks: 350, start_time: 7 }, 5.0).unwrap();
        assert_eq!((used.cpu_s, used.window_s), (2.5, 5.0));
        assert!(b.used(Sample { ticks: 100, start_time: 7 }, Sample { ticks: 350, start_time: 8 }, 5.0).is_none());
    }

    #[test]
    fn kw_rates_from_its_summaries() {
        let stderr = "kw: produced 1000000 records (95.4 MiB) to 'bench-produce-100b-kw-1' in 0.85 s: 1176470.6 records/s, 112.2 MiB/s\n";
        assert_eq!(kw_rate(stderr, "produced", 1_000_000).unwrap(), 1_176_470.6);
        let short = kw_rate(stderr, "produced", 2_000_000).unwrap_err().to_string();
        assert!(short.contains("not 2000000"), "{short}");
        let none = kw_rate("kw: something else\n", "produced", 1).unwrap_err().to_string();
        assert!(none.contains("no `kw: produced"), "{none}");
        let stderr = "kw: consumed 2000000 records (190.7 MiB) from 'bench-consume-kw-1' in 0.41 s: 4878048.8 records/s, 465.2 MiB/s\n";
        assert_eq!(kw_rate(stderr, "consumed", 2_000_000).unwrap(), 4_878_048.8);
    }

    fn ran(broker: Option<BrokerUse>) -> Ran {
        Ran { stdout: String::new(), stderr: String::new(), wall_s: 4.0, cpu_s: 1.0, max_rss_kb: 2048.0, broker }
    }

    #[test]
    fn figures_of_the_broker() {
        let f = figures(&ran(Some(BrokerUse { cpu_s: 3.0, window_s: 4.0 })), 2_000_000, 100, Some(1e6));
        assert_eq!((f.records_per_s, f.wall_records_per_s), (1e6, 500_000.0));
        assert_eq!(f.broker_cpu_s_per_million, Some(1.5));
        assert_eq!(f.broker_busy_pct, Some(75.0));
        let f = figures(&ran(None), 2_000_000, 100, None);
        assert_eq!((f.broker_cpu_s_per_million, f.broker_busy_pct), (None, None));
    }

    fn report_of(broker_note: std::result::Result<String, String>) -> String {
        let w = workloads(1000).into_iter().find(|w| w.name == "produce-100b").unwrap();
        let fig = |rate: f64, broker: Option<f64>| Figures {
            records_per_s: rate,
            wall_records_per_s: rate / 2.0,
            broker_cpu_s_per_million: broker,
            broker_busy_pct: broker.map(|b| b * 40.0),
            ..Figures::default()
        };
        let mut per_client = BTreeMap::new();
        per_client.insert(Client::Rdkafka, vec![fig(1e6, Some(2.0))]);
        per_client.insert(Client::Kw, vec![fig(1.5e6, Some(1.0))]);
        let results = BTreeMap::from([(w.name, per_client)]);
        let run = RunInfo {
            rounds: 1,
            load_before: "1 1 1".into(),
            load_after: "2 2 2".into(),
            took_s: 3,
            broker_note,
            broker_at_rest: Some(1.3),
            settling: Settling { runs: 4, waited_s: 1.2, gave_up: 1 },
        };
        report(&[w], &[Client::Rdkafka, Client::Kw], &results, &run).unwrap()
    }

    #[test]
    fn report_has_the_broker_columns() {
        let text = report_of(Ok("pid 8400, 100 ticks/s".into()));
        assert!(text.contains("| broker CPU-s per M records | broker busy % of a core |"), "{text}");
        assert!(text.contains("| rdkafka | 1.00 M | 0.0 | 0.00 | 0 | — | 2.00 | 80 |"), "{text}");
        assert!(text.contains("| kw | 1.50 M **1.50×**"), "{text}");
        assert!(text.contains(" 1.00 **0.50×** | 40 **0.50×** |"), "{text}");
        assert!(text.contains("pid 8400, 100 ticks/s"), "{text}");
        assert!(text.contains("At rest (2 s before the first run) the broker used 1.3 % of a core"), "{text}");
        assert!(text.contains("wall time (start-up and connect included): rdkafka 500 k, kw 750 k"), "{text}");
        assert!(text.contains("1 s in all for 4 processes; 1 started with the broker still busy"), "{text}");
        let text = report_of(Err("no broker here".into()));
        assert!(text.contains("- broker CPU: — (not measured: no broker here)"), "{text}");
    }

    #[test]
    fn each_client_runs_once_in_each_place_over_as_many_rounds() {
        let clients = [Client::Ours, Client::Rdkafka, Client::Kw, Client::KwMusl];
        assert_eq!(round_order(&clients, 1), clients);
        assert_eq!(round_order(&clients, 2), [Client::Rdkafka, Client::Kw, Client::KwMusl, Client::Ours]);
        for place in 0..clients.len() {
            let mut seen: Vec<Client> = (1..=clients.len() as u32).map(|r| round_order(&clients, r)[place]).collect();
            seen.sort();
            let mut all = clients.to_vec();
            all.sort();
            assert_eq!(seen, all, "place {place}");
        }
        assert_eq!(round_order(&clients, 5), clients);
        assert!(round_order(&[], 3).is_empty());
    }

    #[test]
    fn broker_workloads_but_latency_warm_up() {
        let warmed: Vec<&str> = workloads(1000).into_iter().filter(warms_up).map(|w| w.name).collect();
        assert_eq!(
            warmed,
            ["produce-100b", "produce-1k", "produce-lz4", "produce-zstd", "produce-snappy", "produce-gzip", "consume"]
        );
    }

    #[test]
    fn the_ceiling_has_no_broker_columns() {
        assert!(metrics(Kind::Ceiling).iter().all(|(name, _, _)| !name.starts_with("broker")));
        for kind in [Kind::Produce, Kind::Consume, Kind::Latency] {
            assert_eq!(metrics(kind).iter().filter(|(name, _, _)| name.starts_with("broker")).count(), 2);
        }
    }
}
