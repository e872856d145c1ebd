//! `kw produce TOPIC`: records from stdin or a file, one per line.
//!
//! A reader thread hands lines to the async task in chunks; each record's delivery is tracked
//! by line number, so that a produce that fails part-way can say exactly which lines were
//! written, which failed (and why), and from which line on nothing was sent. Reading stops at
//! the first failure seen.

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{ArgAction, Args, ValueEnum};
use kafka_wire::client::{Error as KafkaError, Producer, ProducerRecord};
use kafka_wire::Header;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::conn::{connect_error, ConnArgs};
use crate::error::{describe, runtime, usage, Failure, Kind, Result};
use crate::output::{human_bytes, lines_phrase};
use crate::signal::{Interrupt, Signal};
use crate::Top;

const HELP: &str = "\
Input formats:
  line  each line is a record value; with --key-delimiter D the text before the first D is the
        key (a line without D is all value, keyed by --key if given)
  json  each line is an object: {\"key\": \"k\", \"value\": \"v\", \"headers\": {\"h\": \"x\"},
        \"partition\": 0, \"timestamp\": 1700000000000}; every field is optional; key and value
        are strings (other JSON values are sent as their JSON text), null means none; headers
        is an object or a list of {\"key\": .., \"value\": ..} or [key, value]; the fields
        topic, offset and timestamp_type of `kw consume -J` output are ignored. Blank lines are
        skipped.

Lines end at \\n; a \\r right before it (a Windows line end, \\r\\n) is removed as well, in
both formats. Any other \\r is part of the record.

The topic must exist (one that was just created is waited for up to 5 s). A summary goes to
stderr at the end (and a progress line while stderr is a terminal). If a record fails, reading
stops; the exact lines written, failed and not sent are reported, with \"data error\" on lines
whose content was refused (malformed, too large, a partition that does not exist). Exit code:
3 if only data errors ended the run, 1 if anything else failed.

SIGINT (Ctrl-C) or SIGTERM stops reading at once: an open transaction is aborted, records
already sent get up to 3 s for their answer (those without one are reported unconfirmed), the
lines are reported as above, and the exit code is 130 (SIGINT) or 143 (SIGTERM).

Examples:
  printf 'a\\nb\\n' | kw produce events
  kw produce events --file data.txt --key-delimiter : --compression zstd
  kw produce events --format json -H source=cli <<< '{\"key\":\"k1\",\"value\":\"v1\"}'
  kw produce events --acks 1 --idempotent false -X linger.ms=50
  kw produce events --transactional-id loader-1 --transaction-size 1000 < data.txt

With --transactional-id a failed record aborts its transaction: its lines are reported failed
(\"transaction aborted\"), the transactions committed before it stay written.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// One record value per line
    Line,
    /// One JSON object per line
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

#[derive(Args, Debug)]
#[command(after_help = HELP)]
pub struct ProduceArgs {
    /// Topic to produce to
    pub topic: String,
    /// Read records from FILE instead of stdin
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Input format
    #[arg(long, value_enum, default_value_t = InputFormat::Line)]
    pub format: InputFormat,
    /// Key of every record (JSON: of records without a "key")
    #[arg(short = 'k', long)]
    pub key: Option<String>,
    /// Split each line into key and value at the first DELIM (line format)
    #[arg(short = 'K', long = "key-delimiter", value_name = "DELIM")]
    pub key_delimiter: Option<String>,
    /// Header added to every record, repeatable
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Partition of every record (JSON: of records without a "partition"); default: by key, or
    /// the sticky partitioner
    #[arg(short = 'p', long)]
    pub partition: Option<i32>,
    /// Compression codec (compression.type)
    #[arg(short = 'z', long, value_enum)]
    pub compression: Option<Codec>,
    /// Acknowledgements required (acks)
    #[arg(long, value_parser = ["0", "1", "all", "-1"], allow_hyphen_values = true)]
    pub acks: Option<String>,
    /// Idempotent producer (enable.idempotence; needs --acks all)
    #[arg(long, value_name = "true|false", action = ArgAction::Set)]
    pub idempotent: Option<bool>,
    /// Produce in transactions with this transactional.id: all records in one transaction, or
    /// one per --transaction-size records; read_committed consumers see only committed ones
    #[arg(long, value_name = "ID")]
    pub transactional_id: Option<String>,
    /// Records per transaction (with --transactional-id); default: all in one
    #[arg(long, value_name = "N", requires = "transactional_id", value_parser = clap::value_parser!(u64).range(1..))]
    pub transaction_size: Option<u64>,
    /// No summary or progress line
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

const FIRST_FAILURE: &str = "reading stopped at the first failure";

/// What the reader thread hands over.
enum Input {
    Line(u64, Vec<u8>),
    /// Reading failed before line `.0`.
    Error(u64, String),
}

/// The fate of each input line.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    /// No record: a blank JSON line, or not read.
    None,
    Pending,
    Written,
    Failed,
    /// Sent, but kw stopped (on a signal) before the broker answered: it may have been written.
    Unconfirmed,
}

/// Why a line failed (or is unconfirmed), which decides the exit code.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Cause {
    /// The line itself: malformed, too large, a partition that does not exist (exit 3).
    Data,
    /// The cluster or the network (exit 1).
    Runtime,
    /// Its transaction was aborted, because of another line or a signal.
    Aborted,
    /// kw stopped on a signal before the outcome was known.
    Unconfirmed,
}

struct Tracker {
    status: Vec<Status>,
    reasons: Vec<(u64, Cause, String)>,
    /// Lines in [`Status::Pending`].
    pending: usize,
    written: u64,
    written_bytes: u64,
}

impl Tracker {
    fn get(&self, line: u64) -> Status {
        self.status.get(line as usize - 1).copied().unwrap_or(Status::None)
    }

    fn set(&mut self, line: u64, s: Status) {
        let i = (line - 1) as usize;
        if self.status.len() <= i {
            self.status.resize(i + 1, Status::None);
        }
        if self.status[i] == Status::Pending {
            self.pending -= 1;
        }
        if s == Status::Pending {
            self.pending += 1;
        }
        self.status[i] = s;
    }

    fn fail(&mut self, line: u64, cause: Cause, reason: String) {
        self.set(line, if cause == Cause::Unconfirmed { Status::Unconfirmed } else { Status::Failed });
        self.reasons.push((line, cause, reason));
    }

    /// A delivery outcome; ignored for a line whose fate was settled already (its transaction
    /// was aborted).
    fn delivered(&mut self, d: Delivery) {
        if self.get(d.line) != Status::Pending {
            return;
        }
        match d.result {
            Ok(()) => {
                self.set(d.line, Status::Written);
                self.written += 1;
                self.written_bytes += d.bytes;
            }
            Err((cause, reason)) => self.fail(d.line, cause, reason),
        }
    }

    fn lines(&self, s: Status) -> Vec<u64> {
        self.status.iter().enumerate().filter(|(_, x)| **x == s).map(|(i, _)| i as u64 + 1).collect()
    }

    fn failed(&self, cause: Cause) -> bool {
        self.reasons.iter().any(|(_, c, _)| *c == cause)
    }

    /// Takes the deliveries that have arrived, without waiting.
    fn take_delivered(&mut self, done: &mut mpsc::UnboundedReceiver<Delivery>) {
        while let Ok(d) = done.try_recv() {
            self.delivered(d);
        }
    }

    /// Waits until no line is pending.
    async fn settle(&mut self, done: &mut mpsc::UnboundedReceiver<Delivery>) {
        while self.pending > 0 {
            let Some(d) = done.recv().await else { break };
            self.delivered(d);
        }
    }
}

struct Delivery {
    line: u64,
    bytes: u64,
    result: Result<(), (Cause, String)>,
}

/// Why a record failed, as its line's cause and reason.
fn line_error(e: &KafkaError) -> (Cause, String) {
    match e {
        KafkaError::TransactionAborted => (Cause::Aborted, "transaction aborted".into()),
        // Misuse of `send` is a partition that does not exist.
        KafkaError::Misuse { .. } => (Cause::Data, format!("data error: {}", describe(e))),
        _ if crate::error::kind(e) == Kind::Data => (Cause::Data, format!("data error: {}", describe(e))),
        _ => (Cause::Runtime, describe(e)),
    }
}

/// Settings every record starts from.
struct Defaults {
    topic: String,
    key: Option<Bytes>,
    delimiter: Option<Vec<u8>>,
    headers: Vec<Header>,
    partition: Option<i32>,
}

pub async fn run(args: ProduceArgs, top: &Top) -> Result<()> {
    if args.format == InputFormat::Json && args.key_delimiter.is_some() {
        return Err(usage("--key-delimiter applies to --format line only"));
    }
    if args.key_delimiter.as_deref() == Some("") {
        return Err(usage("--key-delimiter must not be empty"));
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = super::parse_kv("--header", h)?;
        headers.push(Header::new(k, Some(v)));
    }
    let settings = top.settings(&args.conn)?;
    let mut extra: Vec<(&str, String)> = Vec::new();
    if let Some(c) = args.compression {
        extra.push(("compression.type", c.name().into()));
    }
    if let Some(a) = &args.acks {
        extra.push(("acks", a.clone()));
    }
    if let Some(i) = args.idempotent {
        extra.push(("enable.idempotence", i.to_string()));
    }
    if let Some(id) = &args.transactional_id {
        extra.push(("transactional.id", id.clone()));
    }
    let config = settings.producer(&extra)?;
    let source: Box<dyn Read + Send> = match &args.file {
        Some(path) => {
            Box::new(std::fs::File::open(path).map_err(|e| runtime(format!("cannot open {}: {e}", path.display())))?)
        }
        None => Box::new(std::io::stdin()),
    };

    let interrupt = &top.interrupt;
    let transactional = config.transactional_id.is_some();
    let wait = super::TOPIC_WAIT.min(config.max_block);
    let producer = interrupt.guard(Producer::new(config)).await?.map_err(connect_error)?;
    if transactional {
        interrupt.guard(producer.init_transactions()).await?.map_err(|e| runtime(describe(&e)))?;
    }
    let mut txn = Txn { size: args.transaction_size.unwrap_or(u64::MAX), open: false, lines: Vec::new() };
    let partitions =
        interrupt.guard(super::topic_partitions(producer.client(), std::slice::from_ref(&args.topic), wait)).await??;
    let partitions = &partitions[0].1;
    if let Some(p) = args.partition {
        if !partitions.contains(&p) {
            return Err(runtime(format!(
                "partition {p} does not exist in topic '{}' ({} partitions)",
                args.topic,
                partitions.len()
            )));
        }
    }
    let defaults = Defaults {
        topic: args.topic.clone(),
        key: args.key.clone().map(Bytes::from),
        delimiter: args.key_delimiter.clone().map(String::into_bytes),
        headers,
        partition: args.partition,
    };

    let (lines_tx, mut lines_rx) = mpsc::channel::<Vec<Input>>(64);
    spawn_reader(source, lines_tx);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Delivery>();

    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let progress = Arc::new(Progress::default());
    let ticker_stop = Arc::new(AtomicBool::new(false));
    if show_progress {
        tokio::spawn(tick(progress.clone(), ticker_stop.clone()));
    }

    let mut t = Tracker { status: Vec::new(), reasons: Vec::new(), pending: 0, written: 0, written_bytes: 0 };
    let started = Instant::now();
    // Why reading stopped early, and the last line read then.
    let mut stopped: Option<(String, u64)> = None;
    let interrupted = |s: Signal| format!("interrupted by {}", s.name());
    'read: loop {
        let chunk = match interrupt.guard(lines_rx.recv()).await {
            Ok(Some(c)) => c,
            Ok(None) => break 'read,
            Err(s) => {
                stopped = Some((interrupted(s), t.status.len() as u64));
                break 'read;
            }
        };
        for input in chunk {
            let (n, line) = match input {
                Input::Line(n, line) => (n, line),
                Input::Error(n, e) => {
                    t.fail(n, Cause::Runtime, format!("cannot read the input: {e}"));
                    stopped = Some((format!("cannot read line {n}: {e}"), n.saturating_sub(1)));
                    break 'read;
                }
            };
            t.take_delivered(&mut done_rx);
            progress.acked.store(t.written, Ordering::Relaxed);
            progress.bytes.store(t.written_bytes, Ordering::Relaxed);
            if !t.reasons.is_empty() {
                stopped = Some((FIRST_FAILURE.into(), n - 1));
                break 'read;
            }
            let record = match args.format {
                InputFormat::Line => Some(line_record(line, &defaults)),
                InputFormat::Json => match json_record(&line, &defaults) {
                    Ok(Some(r)) if r.partition.is_some_and(|p| !partitions.contains(&p)) => Err(format!(
                        "partition {} does not exist in topic '{}' ({} partitions)",
                        r.partition.unwrap_or_default(),
                        args.topic,
                        partitions.len()
                    )),
                    other => other,
                }
                .unwrap_or_else(|e| {
                    t.fail(n, Cause::Data, format!("data error: {e}"));
                    None
                }),
            };
            if !t.reasons.is_empty() {
                stopped = Some((FIRST_FAILURE.into(), n));
                break 'read;
            }
            let Some(record) = record else { continue };
            let bytes =
                record.key.as_ref().map_or(0, Bytes::len) as u64 + record.value.as_ref().map_or(0, Bytes::len) as u64;
            if transactional && !txn.open {
                if let Err(e) = producer.begin_transaction() {
                    t.fail(n, Cause::Runtime, describe(&e));
                    stopped = Some((FIRST_FAILURE.into(), n));
                    break 'read;
                }
                txn.open = true;
            }
            // `send` waits only for metadata and buffer room; a signal stops it.
            let sent = match interrupt.guard(producer.send(record)).await {
                Ok(sent) => sent,
                Err(s) => {
                    stopped = Some((interrupted(s), n - 1));
                    break 'read;
                }
            };
            match sent {
                Ok(future) => {
                    if transactional {
                        txn.lines.push((n, bytes));
                    }
                    t.set(n, Status::Pending);
                    progress.sent.fetch_add(1, Ordering::Relaxed);
                    let tx = done_tx.clone();
                    tokio::spawn(async move {
                        let result = future.await.map(|_| ()).map_err(|e| line_error(&e));
                        let _ = tx.send(Delivery { line: n, bytes, result });
                    });
                }
                Err(e) => {
                    let (cause, reason) = line_error(&e);
                    t.fail(n, cause, reason);
                    stopped = Some((FIRST_FAILURE.into(), n));
                    break 'read;
                }
            }
            if txn.open
                && txn.lines.len() as u64 >= txn.size
                && !txn.finish(&producer, &mut t, &mut done_rx, true, interrupt).await
            {
                stopped = Some((interrupt.received().map_or_else(|| FIRST_FAILURE.into(), interrupted), n));
                break 'read;
            }
        }
    }
    drop(lines_rx);
    if txn.open {
        // Commit what was read, unless something failed (then nothing of it may be visible).
        let commit = t.reasons.is_empty();
        txn.finish(&producer, &mut t, &mut done_rx, commit, interrupt).await;
    }
    // Every record sent gets its answer; after a signal, only until the cleanup deadline.
    let _ = interrupt
        .bounded(async {
            if let Err(e) = producer.flush().await {
                eprintln!("kw: flush failed: {}", describe(&e));
            }
            t.settle(&mut done_rx).await;
        })
        .await;
    t.take_delivered(&mut done_rx);
    if let Some(s) = interrupt.received() {
        for n in t.lines(Status::Pending) {
            t.fail(
                n,
                Cause::Unconfirmed,
                format!("{} before the broker answered (they may have been written)", interrupted(s)),
            );
        }
    }
    let _ = interrupt.bounded(producer.close()).await;
    let elapsed = started.elapsed();
    ticker_stop.store(true, Ordering::Relaxed);
    if show_progress {
        eprint!("\r\x1b[2K");
    }

    let signal = interrupt.received();
    let failed = t.lines(Status::Failed);
    if failed.is_empty() && stopped.is_none() && signal.is_none() {
        if !args.quiet {
            eprintln!("kw: {}", summary(t.written, t.written_bytes, &args.topic, elapsed));
        }
        return Ok(());
    }
    // Something went wrong: say exactly what happened to every line.
    let written = t.lines(Status::Written);
    eprintln!("kw: {}", summary(t.written, t.written_bytes, &args.topic, elapsed));
    if written.is_empty() {
        eprintln!("kw: written: none");
    } else {
        eprintln!("kw: written: {}", lines_phrase(&written));
    }
    let mut reasons = t.reasons.clone();
    reasons.sort();
    let mut by_reason: Vec<(Cause, String, Vec<u64>)> = Vec::new();
    for (line, cause, reason) in reasons {
        match by_reason.iter_mut().find(|(_, r, _)| *r == reason) {
            Some((_, _, lines)) => lines.push(line),
            None => by_reason.push((cause, reason, vec![line])),
        }
    }
    by_reason.sort_by_key(|(_, _, lines)| lines[0]);
    for (cause, reason, lines) in &by_reason {
        let what = if *cause == Cause::Unconfirmed { "unconfirmed" } else { "failed" };
        eprintln!("kw: {what}: {}: {reason}", lines_phrase(lines));
    }
    let last_handled = t.status.len() as u64;
    if let Some((why, last)) = &stopped {
        let from = (*last).max(last_handled) + 1;
        eprintln!("kw: not sent: input from line {from} on ({why})");
    }
    if let Some(s) = signal {
        return Err(Failure::Interrupted(s));
    }
    let mut message = format!("produce to '{}' failed: {} written, {} failed", args.topic, written.len(), failed.len());
    if stopped.is_some() {
        message.push_str(", rest of input not sent");
    }
    if t.failed(Cause::Runtime) || !t.failed(Cause::Data) {
        Err(runtime(message))
    } else {
        Err(Failure::Data(message))
    }
}

fn summary(records: u64, bytes: u64, topic: &str, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    format!(
        "produced {records} record{} ({}) to '{topic}' in {:.2} s: {:.1} records/s, {}/s",
        if records == 1 { "" } else { "s" },
        human_bytes(bytes),
        secs,
        records as f64 / secs,
        human_bytes((bytes as f64 / secs) as u64)
    )
}

/// The open transaction of `--transactional-id`.
struct Txn {
    size: u64,
    open: bool,
    /// Lines sent in it, with their bytes.
    lines: Vec<(u64, u64)>,
}

impl Txn {
    /// Waits for every record of the transaction, then commits it (if `commit` and none failed)
    /// or aborts it. Returns whether it committed. After an abort every line of the transaction
    /// that had not failed by itself counts as failed, acknowledged or not: none of them is
    /// visible to read_committed readers.
    ///
    /// A signal stops the wait and aborts at once; a commit under way is given until the cleanup
    /// deadline, and if it does not finish by then its lines are unconfirmed.
    async fn finish(
        &mut self,
        producer: &Producer,
        t: &mut Tracker,
        done: &mut mpsc::UnboundedReceiver<Delivery>,
        commit: bool,
        interrupt: &Interrupt,
    ) -> bool {
        let settled = interrupt.guard(t.settle(done)).await.is_ok();
        t.take_delivered(done);
        let failed_inside = self.lines.iter().any(|(n, _)| t.get(*n) == Status::Failed);
        let outcome = if commit && settled && !failed_inside {
            match interrupt.bounded(producer.commit_transaction()).await {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => {
                    let reason = describe(&e);
                    let _ = interrupt.bounded(producer.abort_transaction()).await;
                    Err((Cause::Runtime, format!("transaction aborted: commit failed: {reason}")))
                }
                None => Err((Cause::Unconfirmed, "the transaction's commit was cut off by a signal".into())),
            }
        } else {
            // Cut off after the cleanup deadline, the abort still holds: a transaction that was
            // never committed is aborted by its coordinator.
            let _ = interrupt.bounded(producer.abort_transaction()).await;
            let reason = match interrupt.received() {
                Some(s) => format!("transaction aborted (interrupted by {})", s.name()),
                None => "transaction aborted".into(),
            };
            Err((Cause::Aborted, reason))
        };
        self.open = false;
        let lines = std::mem::take(&mut self.lines);
        match outcome {
            Ok(()) => true,
            Err((cause, reason)) => {
                for (n, bytes) in lines {
                    match t.get(n) {
                        Status::Written => {
                            t.written -= 1;
                            t.written_bytes -= bytes;
                            t.fail(n, cause, reason.clone());
                        }
                        Status::Pending => t.fail(n, cause, reason.clone()),
                        _ => {}
                    }
                }
                false
            }
        }
    }
}

#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    acked: AtomicU64,
    bytes: AtomicU64,
}

async fn tick(p: Arc<Progress>, stop: Arc<AtomicBool>) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        let acked = p.acked.load(Ordering::Relaxed);
        eprint!(
            "\r\x1b[2K{} sent, {} written ({}), {:.0} records/s",
            p.sent.load(Ordering::Relaxed),
            acked,
            human_bytes(p.bytes.load(Ordering::Relaxed)),
            acked as f64 / secs
        );
    }
}

/// Reads lines on a thread of its own (stdin blocks), handing them over in chunks: as many as
/// are already buffered, up to 1024, so that typed lines go out at once and piped input in bulk.
fn spawn_reader(source: Box<dyn Read + Send>, tx: mpsc::Sender<Vec<Input>>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 16, source);
        let mut n = 0u64;
        loop {
            let mut chunk = Vec::new();
            let mut eof = false;
            loop {
                let mut buf = Vec::new();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(_) => {
                        n += 1;
                        if buf.last() == Some(&b'\n') {
                            buf.pop();
                            if buf.last() == Some(&b'\r') {
                                buf.pop();
                            }
                        }
                        chunk.push(Input::Line(n, buf));
                    }
                    Err(e) => {
                        chunk.push(Input::Error(n + 1, e.to_string()));
                        eof = true;
                        break;
                    }
                }
                if chunk.len() >= 1024 || reader.buffer().is_empty() {
                    break;
                }
            }
            if !chunk.is_empty() && tx.blocking_send(chunk).is_err() {
                return;
            }
            if eof {
                return;
            }
        }
    });
}

fn base_record(d: &Defaults) -> ProducerRecord {
    ProducerRecord {
        topic: d.topic.clone(),
        partition: d.partition,
        key: d.key.clone(),
        value: None,
        headers: d.headers.clone(),
        timestamp: None,
    }
}

fn line_record(line: Vec<u8>, d: &Defaults) -> ProducerRecord {
    let mut r = base_record(d);
    let split = d.delimiter.as_ref().and_then(|delim| find(&line, delim).map(|i| (i, delim.len())));
    match split {
        Some((i, len)) => {
            let line = Bytes::from(line);
            r.key = Some(line.slice(..i));
            r.value = Some(line.slice(i + len..));
        }
        None => r.value = Some(Bytes::from(line)),
    }
    r
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A record from a JSON line; `None` for a blank line.
fn json_record(line: &[u8], d: &Defaults) -> Result<Option<ProducerRecord>, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        // serde_json counts lines and columns within the input line.
        let text = e.to_string();
        let text = match text.rsplit_once(" at line 1 column ") {
            Some((what, col)) => format!("{what} at column {col}"),
            None => text,
        };
        format!("malformed JSON: {text}")
    })?;
    let Value::Object(obj) = value else {
        return Err("malformed record: expected a JSON object".into());
    };
    let mut r = base_record(d);
    for (field, v) in obj {
        match field.as_str() {
            "key" => r.key = payload(v),
            "value" => r.value = payload(v),
            "partition" => {
                r.partition = Some(
                    v.as_i64()
                        .and_then(|p| i32::try_from(p).ok())
                        .filter(|p| *p >= 0)
                        .ok_or_else(|| format!("malformed record: partition {v} is not a partition number"))?,
                )
            }
            "timestamp" => match v {
                Value::Null => {}
                v => {
                    r.timestamp = Some(v.as_i64().ok_or_else(|| {
                        format!("malformed record: timestamp {v} is not milliseconds since the epoch")
                    })?)
                }
            },
            "headers" => r.headers.extend(json_headers(v)?),
            "topic" | "offset" | "timestamp_type" => {}
            other => {
                return Err(format!(
                    "malformed record: unknown field \"{other}\" (known: key, value, headers, partition, timestamp)"
                ))
            }
        }
    }
    Ok(Some(r))
}

/// A key or value: strings as they are, null as none, anything else as its JSON text.
fn payload(v: Value) -> Option<Bytes> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Bytes::from(s)),
        other => Some(Bytes::from(other.to_string())),
    }
}

fn header_value(v: Value) -> Result<Option<Bytes>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(Bytes::from(s))),
        other => Err(format!("malformed record: header value {other} is not a string or null")),
    }
}

fn json_headers(v: Value) -> Result<Vec<Header>, String> {
    let bad = || {
        "malformed record: headers must be an object, or a list of {\"key\":..,\"value\":..} or [key, value]"
            .to_string()
    };
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Object(map) => map.into_iter().map(|(k, v)| Ok(Header::new(k, header_value(v)?))).collect(),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Object(mut o) => {
                    let key = match o.remove("key") {
                        Some(Value::String(k)) => k,
                        _ => return Err(bad()),
                    };
                    Ok(Header::new(key, header_value(o.remove("value").unwrap_or(Value::Null))?))
                }
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    let key = match pair.next() {
                        Some(Value::String(k)) => k,
                        _ => return Err(bad()),
                    };
                    Ok(Header::new(key, header_value(pair.next().unwrap_or(Value::Null))?))
                }
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults { topic: "t".into(), key: None, delimiter: Some(b"::".to_vec()), headers: Vec::new(), partition: None }
    }

    #[test]
    fn lines_split_at_the_first_delimiter() {
        let r = line_record(b"k::v::w".to_vec(), &defaults());
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v::w"[..]));
        let r = line_record(b"novalue".to_vec(), &defaults());
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&b"novalue"[..]));
    }

    #[test]
    fn json_records() {
        let d = defaults();
        let r = json_record(
            br#"{"key":"k","value":null,"headers":[["a","1"],{"key":"b","value":null}],"partition":2,"offset":9}"#,
            &d,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value, None);
        assert_eq!(r.partition, Some(2));
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.headers[1].value, None);
        let r = json_record(br#"{"value":{"n":1},"headers":{"h":"x"}}"#, &d).unwrap().unwrap();
        assert_eq!(r.value.as_deref(), Some(&br#"{"n":1}"#[..]));
        assert!(json_record(b"  ", &d).unwrap().is_none());
        assert!(json_record(b"{nope", &d).unwrap_err().starts_with("malformed JSON"));
        assert!(json_record(br#"{"vaule":"x"}"#, &d).unwrap_err().contains("unknown field"));
    }
}
