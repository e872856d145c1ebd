//! `kw produce TOPIC`: records from stdin or a file, one per line.
//!
//! A reader thread reads the input in large blocks and hands their lines (slices of the block,
//! not copies) to the async task; each record's delivery is tracked by line number, so that a
//! produce that fails part-way can say exactly which lines were written, which failed (and
//! why), and from which line on nothing was sent. Reading stops at the first failure seen.
//! Deliveries are awaited by one task per block of records, and lines are kept one by one only
//! while in flight: memory follows the producer's buffer, not the input's length.

use std::collections::VecDeque;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::{ArgAction, Args, ValueEnum};
use kafka_wire::client::{DeliveryFuture, Error as KafkaError, Producer, ProducerRecord, TrySend};
use kafka_wire::Header;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::conn::{connect_error, ConnArgs};
use crate::error::{describe, runtime, usage, Failure, Kind, Result};
use crate::output::{human_bytes, ranges_phrase, transfer_summary};
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

/// What the reader thread hands over: a block of input that ends at a line end, or at the
/// input's end. Its lines are cut out of it as slices, not copies.
struct Chunk {
    block: Bytes,
    /// Reading failed after this block.
    error: Option<String>,
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

/// The fate of the input lines. Lines are kept one by one only from the oldest line still
/// pending on (`window`); those settled before it are kept as ranges of written lines and the
/// failures' reasons, so that memory follows the records in flight, not the input's length.
struct Tracker {
    /// The line number of `window[0]`.
    base: u64,
    window: VecDeque<Status>,
    /// Written lines below `base`: ascending, disjoint, inclusive (first, last) ranges.
    written_below: Vec<(u64, u64)>,
    /// Failed and unconfirmed lines, as inclusive ranges with their cause and reason.
    reasons: Vec<(u64, u64, Cause, String)>,
    /// Lines in [`Status::Pending`].
    pending: usize,
    written: u64,
    written_bytes: u64,
    /// The last line given a status.
    last: u64,
}

impl Tracker {
    fn new() -> Self {
        Self {
            base: 1,
            window: VecDeque::new(),
            written_below: Vec::new(),
            reasons: Vec::new(),
            pending: 0,
            written: 0,
            written_bytes: 0,
            last: 0,
        }
    }

    /// The status of a line in the window ([`Status::None`] for the others: settled already).
    fn get(&self, line: u64) -> Status {
        line.checked_sub(self.base).and_then(|i| self.window.get(i as usize).copied()).unwrap_or(Status::None)
    }

    /// Marks a line sent: lines are sent in order, after every line given a status so far.
    fn sent(&mut self, line: u64) {
        let i = (line - self.base) as usize;
        if self.window.len() < i {
            // Lines skipped (blank JSON lines) have no record.
            self.window.resize(i, Status::None);
        }
        self.window.push_back(Status::Pending);
        self.pending += 1;
        self.last = line;
    }

    /// Sets the status of a line at or after the oldest pending one (every line not settled yet).
    fn set(&mut self, line: u64, s: Status) {
        let Some(i) = line.checked_sub(self.base).map(|i| i as usize) else { return };
        if self.window.len() <= i {
            self.window.resize(i + 1, Status::None);
        }
        if self.window[i] == Status::Pending {
            self.pending -= 1;
        }
        if s == Status::Pending {
            self.pending += 1;
        }
        self.window[i] = s;
        self.last = self.last.max(line);
        self.compact();
    }

    /// Moves the settled lines at the front of the window out of it, all at once.
    fn compact(&mut self) {
        let settled = self.window.iter().position(|s| *s == Status::Pending).unwrap_or(self.window.len());
        for (n, s) in (self.base..).zip(self.window.drain(..settled)) {
            if s == Status::Written {
                push_range(&mut self.written_below, n, n);
            }
        }
        self.base += settled as u64;
    }

    fn fail(&mut self, line: u64, cause: Cause, reason: String) {
        self.set(line, if cause == Cause::Unconfirmed { Status::Unconfirmed } else { Status::Failed });
        match self.reasons.last_mut() {
            Some((_, last, c, r)) if *last + 1 == line && *c == cause && *r == reason => *last = line,
            _ => self.reasons.push((line, line, cause, reason)),
        }
    }

    /// A delivery outcome; ignored for lines whose fate was settled already (their transaction
    /// was aborted).
    ///
    /// A range's bytes are counted only if all of its lines were pending: a range is the
    /// outcome of one watcher's records, which belong to one transaction, and an aborted
    /// transaction's lines are settled all at once.
    fn delivered(&mut self, d: Delivery) {
        match d.result {
            Ok(()) => {
                let from = d.first.max(self.base) - self.base;
                let to = (d.last + 1).saturating_sub(self.base).min(self.window.len() as u64);
                if from >= to {
                    return;
                }
                let mut written = 0;
                for s in self.window.range_mut(from as usize..to as usize) {
                    if *s == Status::Pending {
                        *s = Status::Written;
                        written += 1;
                    }
                }
                self.pending -= written as usize;
                self.written += written;
                if written == d.last - d.first + 1 {
                    self.written_bytes += d.bytes;
                }
                if from == 0 {
                    self.compact();
                }
            }
            Err((cause, reason)) => {
                if self.get(d.first) == Status::Pending {
                    self.fail(d.first, cause, reason);
                }
            }
        }
    }

    /// The lines still pending.
    fn pending_lines(&self) -> Vec<u64> {
        (self.base..).zip(&self.window).filter(|(_, s)| **s == Status::Pending).map(|(n, _)| n).collect()
    }

    /// Every written line, as ranges.
    fn written_ranges(&self) -> Vec<(u64, u64)> {
        let mut ranges = self.written_below.clone();
        for (n, s) in (self.base..).zip(&self.window) {
            if *s == Status::Written {
                push_range(&mut ranges, n, n);
            }
        }
        ranges
    }

    /// Lines failed (not merely unconfirmed).
    fn failed_count(&self) -> u64 {
        self.reasons.iter().filter(|r| r.2 != Cause::Unconfirmed).map(|(a, b, _, _)| b - a + 1).sum()
    }

    fn failed(&self, cause: Cause) -> bool {
        self.reasons.iter().any(|r| r.2 == cause)
    }

    /// Takes the deliveries that have arrived, without waiting.
    fn take_delivered(&mut self, done: &mut mpsc::UnboundedReceiver<Vec<Delivery>>) {
        while let Ok(ds) = done.try_recv() {
            ds.into_iter().for_each(|d| self.delivered(d));
        }
    }

    /// Waits until no line is pending.
    async fn settle(&mut self, done: &mut mpsc::UnboundedReceiver<Vec<Delivery>>) {
        while self.pending > 0 {
            let Some(ds) = done.recv().await else { break };
            ds.into_iter().for_each(|d| self.delivered(d));
        }
    }

    /// Fails every line from `first` on that is written or pending (an aborted transaction's):
    /// the written ones are taken back out of the counts, which become `written` and `bytes`.
    fn unwrite_from(&mut self, first: u64, (written, bytes): (u64, u64), cause: Cause, reason: &str) {
        // The window first, all of it before compacting: compacting as each line fails would
        // move a written line behind it below the window, out of reach.
        let base = self.base;
        for (i, s) in self.window.iter_mut().enumerate() {
            let n = base + i as u64;
            if n < first || !matches!(s, Status::Written | Status::Pending) {
                continue;
            }
            if *s == Status::Pending {
                self.pending -= 1;
            }
            *s = Status::Failed;
            match self.reasons.last_mut() {
                Some((_, last, c, r)) if *last + 1 == n && *c == cause && r == reason => *last = n,
                _ => self.reasons.push((n, n, cause, reason.to_string())),
            }
        }
        self.compact();
        let mut taken = Vec::new();
        while let Some(&(a, b)) = self.written_below.last() {
            if b < first {
                break;
            }
            self.written_below.pop();
            if a < first {
                self.written_below.push((a, first - 1));
            }
            taken.push((a.max(first), b));
        }
        for (a, b) in taken.into_iter().rev() {
            self.reasons.push((a, b, cause, reason.to_string()));
        }
        self.written = written;
        self.written_bytes = bytes;
    }
}

/// Ascending, disjoint, inclusive (first, last) ranges of line numbers.
type Ranges = Vec<(u64, u64)>;

/// Appends the inclusive range `(a, b)` to ascending ranges, merging it with the last one when
/// they touch.
fn push_range(ranges: &mut Vec<(u64, u64)>, a: u64, b: u64) {
    match ranges.last_mut() {
        Some((_, last)) if *last + 1 >= a => *last = (*last).max(b),
        _ => ranges.push((a, b)),
    }
}

/// The outcome of consecutive lines' records: written, or one line's failure.
struct Delivery {
    first: u64,
    last: u64,
    /// Of all their records.
    bytes: u64,
    result: Result<(), (Cause, String)>,
}

/// Records sent but not yet watched: their deliveries are awaited by one task per batch (not
/// one per record), which hands the outcomes back together, consecutive written lines as one.
#[derive(Default)]
struct Sent {
    batch: Vec<(u64, u64, DeliveryFuture)>,
    /// The records of the last batch watched, to reserve room for the next one's at once:
    /// grown by doubling, it was 1 % of kw's CPU in `realloc`'s copies.
    last: usize,
}

impl Sent {
    /// Hands the batch to a task that awaits every delivery in it and reports them at once.
    fn watch(&mut self, done: &mpsc::UnboundedSender<Vec<Delivery>>) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.last = batch.len();
        let done = done.clone();
        tokio::spawn(async move {
            let mut out: Vec<Delivery> = Vec::new();
            for (line, bytes, future) in batch {
                match (future.await, out.last_mut()) {
                    (Ok(_), Some(d)) if d.result.is_ok() && d.last + 1 == line => {
                        d.last = line;
                        d.bytes += bytes;
                    }
                    (result, _) => out.push(Delivery {
                        first: line,
                        last: line,
                        bytes,
                        result: result.map(|_| ()).map_err(|e| line_error(&e)),
                    }),
                }
            }
            let _ = done.send(out);
        });
    }
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

/// Settings every record starts from (its topic is the handle's).
struct Defaults {
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
    let mut txn = Txn {
        size: args.transaction_size.unwrap_or(u64::MAX),
        open: false,
        records: 0,
        first: 0,
        written_before: (0, 0),
        reasons_before: 0,
    };
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
    // A handle on the topic: no lookup of its name for each record.
    let topic = interrupt.guard(producer.topic(&args.topic)).await?.map_err(|e| runtime(describe(&e)))?;
    let defaults = Defaults {
        key: args.key.clone().map(Bytes::from),
        delimiter: args.key_delimiter.clone().map(String::into_bytes),
        headers,
        partition: args.partition,
    };

    let (blocks_tx, mut blocks_rx) = mpsc::channel::<Chunk>(4);
    let (recycle, recycled) = std::sync::mpsc::channel::<Bytes>();
    spawn_reader(source, blocks_tx, recycled);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<Delivery>>();

    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let progress = Arc::new(Progress::default());
    let ticker_stop = Arc::new(AtomicBool::new(false));
    if show_progress {
        tokio::spawn(tick(progress.clone(), ticker_stop.clone()));
    }

    let mut t = Tracker::new();
    let mut sent = Sent::default();
    // The number of the next line read, and of records sent.
    let mut next_line = 1u64;
    let mut records_sent = 0u64;
    let started = Instant::now();
    // Why reading stopped early, and the last line read then.
    let mut stopped: Option<(String, u64)> = None;
    let interrupted = |s: Signal| format!("interrupted by {}", s.name());
    'read: loop {
        sent.watch(&done_tx);
        // kw runs on a current-thread runtime, and neither a channel with a block ready nor
        // `try_send` yields: without this the producer's driver would run only once the buffer
        // was full, filling and draining it in turn instead of at once.
        tokio::task::yield_now().await;
        let chunk = match interrupt.guard(blocks_rx.recv()).await {
            Ok(Some(c)) => c,
            Ok(None) => break 'read,
            Err(s) => {
                stopped = Some((interrupted(s), t.last));
                break 'read;
            }
        };
        t.take_delivered(&mut done_rx);
        progress.acked.store(t.written, Ordering::Relaxed);
        progress.bytes.store(t.written_bytes, Ordering::Relaxed);
        progress.sent.store(records_sent, Ordering::Relaxed);
        sent.batch.reserve(sent.last);
        for line in lines(&chunk.block) {
            let n = next_line;
            next_line += 1;
            if !t.reasons.is_empty() {
                stopped = Some((FIRST_FAILURE.into(), n - 1));
                break 'read;
            }
            // A record, not an `Option` of one: unwrapping it moved the record once more.
            let record = match args.format {
                InputFormat::Line => line_record(line, &defaults),
                InputFormat::Json => match json_record(&line, &defaults).and_then(|r| match r {
                    Some(r) if r.partition.is_some_and(|p| !partitions.contains(&p)) => Err(format!(
                        "partition {} does not exist in topic '{}' ({} partitions)",
                        r.partition.unwrap_or_default(),
                        args.topic,
                        partitions.len()
                    )),
                    other => Ok(other),
                }) {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        t.last = n;
                        continue;
                    }
                    Err(e) => {
                        t.fail(n, Cause::Data, format!("data error: {e}"));
                        stopped = Some((FIRST_FAILURE.into(), n));
                        break 'read;
                    }
                },
            };
            let bytes =
                record.key.as_ref().map_or(0, Bytes::len) as u64 + record.value.as_ref().map_or(0, Bytes::len) as u64;
            if transactional && !txn.open {
                if let Err(e) = producer.begin_transaction() {
                    t.fail(n, Cause::Runtime, describe(&e));
                    stopped = Some((FIRST_FAILURE.into(), n));
                    break 'read;
                }
                txn.begin(n, &t);
            }
            // Queued at once, without a send future, unless it has to wait for metadata or
            // buffer room; a signal stops that wait.
            let result = match topic.try_send(record) {
                Ok(TrySend::Queued(delivery)) => Ok(delivery),
                Ok(TrySend::Waiting(wait)) => match interrupt.guard(wait).await {
                    Ok(result) => result,
                    Err(s) => {
                        stopped = Some((interrupted(s), n - 1));
                        break 'read;
                    }
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(future) => {
                    txn.records += 1;
                    records_sent += 1;
                    t.sent(n);
                    sent.batch.push((n, bytes, future));
                }
                Err(e) => {
                    let (cause, reason) = line_error(&e);
                    t.fail(n, cause, reason);
                    stopped = Some((FIRST_FAILURE.into(), n));
                    break 'read;
                }
            }
            if txn.open && txn.records >= txn.size {
                sent.watch(&done_tx);
                if !txn.finish(&producer, &mut t, &mut done_rx, true, interrupt).await {
                    stopped = Some((interrupt.received().map_or_else(|| FIRST_FAILURE.into(), interrupted), n));
                    break 'read;
                }
            }
        }
        if let Some(e) = chunk.error {
            let n = next_line;
            t.fail(n, Cause::Runtime, format!("cannot read the input: {e}"));
            stopped = Some((format!("cannot read line {n}: {e}"), n - 1));
            break 'read;
        }
        // Its lines are in the producer's batches now: the reader reads into it again.
        let _ = recycle.send(chunk.block);
    }
    sent.watch(&done_tx);
    drop(blocks_rx);
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
        for n in t.pending_lines() {
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
    let failed = t.failed_count();
    if failed == 0 && stopped.is_none() && signal.is_none() {
        if !args.quiet {
            eprintln!("kw: {}", summary(t.written, t.written_bytes, &args.topic, elapsed));
        }
        return Ok(());
    }
    // Something went wrong: say exactly what happened to every line.
    let written = t.written_ranges();
    eprintln!("kw: {}", summary(t.written, t.written_bytes, &args.topic, elapsed));
    if written.is_empty() {
        eprintln!("kw: written: none");
    } else {
        eprintln!("kw: written: {}", ranges_phrase(&written));
    }
    let mut reasons = t.reasons.clone();
    reasons.sort();
    let mut by_reason: Vec<(Cause, String, Ranges)> = Vec::new();
    for (a, b, cause, reason) in reasons {
        match by_reason.iter_mut().find(|(_, r, _)| *r == reason) {
            Some((_, _, lines)) => push_range(lines, a, b),
            None => by_reason.push((cause, reason, vec![(a, b)])),
        }
    }
    by_reason.sort_by_key(|(_, _, lines)| lines[0]);
    for (cause, reason, lines) in &by_reason {
        let what = if *cause == Cause::Unconfirmed { "unconfirmed" } else { "failed" };
        eprintln!("kw: {what}: {}: {reason}", ranges_phrase(lines));
    }
    if let Some((why, last)) = &stopped {
        let from = (*last).max(t.last) + 1;
        eprintln!("kw: not sent: input from line {from} on ({why})");
    }
    if let Some(s) = signal {
        return Err(Failure::Interrupted(s));
    }
    let written: u64 = written.iter().map(|(a, b)| b - a + 1).sum();
    let mut message = format!("produce to '{}' failed: {written} written, {failed} failed", args.topic);
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
    transfer_summary("produced", records, bytes, &format!("to '{topic}'"), elapsed)
}

/// The open transaction of `--transactional-id`.
struct Txn {
    size: u64,
    open: bool,
    /// Records sent in it.
    records: u64,
    /// Its first line.
    first: u64,
    /// The tracker's written records and bytes when it began (all earlier ones were settled).
    written_before: (u64, u64),
    /// The tracker's failures when it began.
    reasons_before: usize,
}

impl Txn {
    fn begin(&mut self, first: u64, t: &Tracker) {
        *self = Txn {
            size: self.size,
            open: true,
            records: 0,
            first,
            written_before: (t.written, t.written_bytes),
            reasons_before: t.reasons.len(),
        };
    }

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
        done: &mut mpsc::UnboundedReceiver<Vec<Delivery>>,
        commit: bool,
        interrupt: &Interrupt,
    ) -> bool {
        let settled = interrupt.guard(t.settle(done)).await.is_ok();
        t.take_delivered(done);
        // Lines fail one at a time and reading stops at the first: any failure since the
        // transaction began is one of its lines.
        let failed_inside = t.reasons.len() > self.reasons_before;
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
        match outcome {
            Ok(()) => true,
            Err((cause, reason)) => {
                t.unwrite_from(self.first, self.written_before, cause, &reason);
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

/// How much input the reader asks for at once.
const BLOCK: usize = 256 * 1024;

/// Reads the input on a thread of its own (stdin blocks) in large blocks, and hands over each
/// read up to its last line end: a typed line goes out as soon as it is read, piped input in
/// bulk. The start of a line cut by a block's end is copied into the next block.
///
/// Blocks come back through `recycled` once their lines are sent, and are read into again: a
/// fresh block for every read was 3–4 % of `kw produce`'s CPU in page faults and zeroing.
fn spawn_reader(mut source: Box<dyn Read + Send>, tx: mpsc::Sender<Chunk>, recycled: std::sync::mpsc::Receiver<Bytes>) {
    std::thread::spawn(move || {
        let block = |least: usize| {
            let mut b = recycled
                .try_iter()
                .find_map(|b| b.try_into_mut().ok())
                .unwrap_or_else(|| BytesMut::with_capacity(BLOCK.max(least)));
            // Zeroes only what was never read into (all of a fresh block, nothing of a recycled one).
            b.resize(b.capacity().max(least), 0);
            b
        };
        let mut buf = block(BLOCK);
        // The bytes of `buf` read and not handed over: the start of a line not ended yet.
        let mut held = 0;
        loop {
            if held == buf.len() {
                // A line longer than the block.
                buf.resize(2 * buf.len(), 0);
            }
            let (got, error) = loop {
                match source.read(&mut buf[held..]) {
                    Ok(got) => break (got, None),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => break (0, Some(e.to_string())),
                }
            };
            let end = got == 0;
            let read = held + got;
            // Complete lines only, but at the input's end its last line, which has no line end.
            let cut = if end && error.is_none() {
                read
            } else {
                memchr::memrchr(b'\n', &buf[held..read]).map_or(0, |i| held + i + 1)
            };
            held = read;
            if cut == 0 && error.is_none() {
                if end {
                    return;
                }
                continue;
            }
            let mut next = block(read - cut + BLOCK / 4);
            next[..read - cut].copy_from_slice(&buf[cut..read]);
            held = read - cut;
            buf.truncate(cut);
            let chunk = Chunk { block: std::mem::replace(&mut buf, next).freeze(), error };
            if tx.blocking_send(chunk).is_err() || end {
                return;
            }
        }
    });
}

/// The lines of a block, without their line ends (`\n`, or `\r\n`). The last one may have no
/// line end (the input's end): it is the rest of the block, `\r` and all.
fn lines(block: &Bytes) -> Lines<'_> {
    Lines { block, start: 0 }
}

struct Lines<'a> {
    block: &'a Bytes,
    /// Where the next line starts.
    start: usize,
}

impl Iterator for Lines<'_> {
    type Item = Bytes;

    #[inline]
    fn next(&mut self) -> Option<Bytes> {
        let rest = self.block.get(self.start..).filter(|rest| !rest.is_empty())?;
        let start = self.start;
        Some(match memchr::memchr(b'\n', rest) {
            Some(i) => {
                self.start = start + i + 1;
                line_at(self.block, start, start + i)
            }
            None => {
                self.start = self.block.len();
                self.block.slice(start..)
            }
        })
    }
}

/// The line of `block` from `start` to the `\n` at `end`, without a `\r` right before it.
fn line_at(block: &Bytes, start: usize, end: usize) -> Bytes {
    let end = if end > start && block[end - 1] == b'\r' { end - 1 } else { end };
    block.slice(start..end)
}

fn base_record(d: &Defaults) -> ProducerRecord {
    ProducerRecord {
        topic: String::new(),
        partition: d.partition,
        key: d.key.clone(),
        value: None,
        headers: d.headers.clone(),
        timestamp: None,
    }
}

/// Built in one expression, not as a `base_record` changed after: a record (136 bytes) moved
/// out of a local was a `memcpy` per line, 2.6 % of `kw produce`'s CPU.
#[inline]
fn line_record(line: Bytes, d: &Defaults) -> ProducerRecord {
    let split = d.delimiter.as_ref().and_then(|delim| find(&line, delim).map(|i| (i, delim.len())));
    let (key, value) = match split {
        Some((i, len)) => (Some(line.slice(..i)), line.slice(i + len..)),
        None => (d.key.clone(), line),
    };
    ProducerRecord {
        topic: String::new(),
        partition: d.partition,
        key,
        value: Some(value),
        // Not a call for no headers: the clone's result, read back from memory at once, stalled
        // (1.9 % of `kw produce`'s samples).
        headers: if d.headers.is_empty() { Vec::new() } else { d.headers.clone() },
        timestamp: None,
    }
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
        Defaults { key: None, delimiter: Some(b"::".to_vec()), headers: Vec::new(), partition: None }
    }

    #[test]
    fn lines_split_at_the_first_delimiter() {
        let r = line_record(Bytes::from_static(b"k::v::w"), &defaults());
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v::w"[..]));
        let r = line_record(Bytes::from_static(b"novalue"), &defaults());
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&b"novalue"[..]));
    }

    /// A source that returns its input a few bytes per read, then optionally fails.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
        fail: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.data.len() && self.fail {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = self.step.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// Lines with their numbers.
    type Numbered = Vec<(u64, Vec<u8>)>;

    /// Reads `data` as `kw produce` does, handing every block back to the reader once its lines
    /// are taken (so that later reads go into blocks read into before).
    fn read_all(data: &[u8], step: usize, fail: bool) -> (Numbered, Option<(u64, String)>) {
        let (tx, mut rx) = mpsc::channel(4);
        let (recycle, recycled) = std::sync::mpsc::channel();
        spawn_reader(Box::new(Trickle { data: data.to_vec(), at: 0, step, fail }), tx, recycled);
        let (mut lines, mut error, mut next) = (Vec::new(), None, 1);
        while let Some(chunk) = rx.blocking_recv() {
            for line in super::lines(&chunk.block) {
                lines.push((next, line.to_vec()));
                next += 1;
            }
            if let Some(e) = chunk.error {
                error = Some((next, e));
            }
            let _ = recycle.send(chunk.block);
        }
        (lines, error)
    }

    #[test]
    fn the_reader_numbers_every_line_once_whatever_the_reads_cut() {
        let mut data = Vec::new();
        let mut want = Vec::new();
        for i in 1..=3000u64 {
            let line = format!("{i}:{}", "x".repeat((i % 37) as usize));
            data.extend_from_slice(line.as_bytes());
            data.extend_from_slice(if i % 5 == 0 { b"\r\n" } else { b"\n" });
            want.push((i, line.into_bytes()));
        }
        data.extend_from_slice(b"last, no line end");
        want.push((3001, b"last, no line end".to_vec()));
        for step in [7, 4096, BLOCK] {
            assert_eq!(read_all(&data, step, false), (want.clone(), None), "reads of {step} bytes");
        }
        assert_eq!(read_all(b"a\r\n\nb", 1, false).0, vec![(1, b"a".to_vec()), (2, Vec::new()), (3, b"b".to_vec())]);
        // A line longer than a block.
        let long = vec![b'y'; 3 * BLOCK + 5];
        let data = [&long[..], b"\nz\n"].concat();
        assert_eq!(read_all(&data, BLOCK, false).0, vec![(1, long), (2, b"z".to_vec())]);
    }

    #[test]
    fn a_read_error_names_the_line_it_stopped_at() {
        let (lines, error) = read_all(b"a\nb\n", 3, true);
        assert_eq!(lines, vec![(1, b"a".to_vec()), (2, b"b".to_vec())]);
        assert_eq!(error, Some((3, "disk on fire".to_string())));
    }

    fn ok(line: u64) -> Delivery {
        Delivery { first: line, last: line, bytes: 10, result: Ok(()) }
    }

    /// Regression (issue #14: a status per input line, 225 MiB for a large input): the tracker
    /// keeps lines one by one only from the oldest pending one on, so what it holds is bounded by
    /// the records in flight, however long the input.
    #[test]
    fn regression_tracking_is_bounded_by_the_records_in_flight() {
        let mut t = Tracker::new();
        const IN_FLIGHT: u64 = 1000;
        let mut most = 0;
        for n in 1..=1_000_000u64 {
            t.sent(n);
            if n > IN_FLIGHT {
                t.delivered(ok(n - IN_FLIGHT));
            }
            most = most.max(t.window.len());
        }
        for n in 1_000_000 - IN_FLIGHT + 1..=1_000_000 {
            t.delivered(ok(n));
        }
        assert!(most <= IN_FLIGHT as usize + 1, "{most} lines held for {IN_FLIGHT} in flight");
        assert_eq!((t.written, t.written_bytes, t.pending), (1_000_000, 10_000_000, 0));
        assert_eq!(t.written_ranges(), vec![(1, 1_000_000)]);
        assert!(t.window.is_empty() && t.written_below.len() == 1);
    }

    #[test]
    fn out_of_order_outcomes_are_reported_per_line() {
        let mut t = Tracker::new();
        for n in [1, 2, 4, 5, 6] {
            t.sent(n);
        }
        // Line 3: a blank JSON line, no record.
        t.delivered(ok(5));
        t.delivered(Delivery { first: 2, last: 2, bytes: 1, result: Err((Cause::Data, "data error: too big".into())) });
        t.delivered(ok(1));
        t.delivered(ok(2)); // settled already: ignored
        assert_eq!(t.pending_lines(), vec![4, 6]);
        assert_eq!(t.written_ranges(), vec![(1, 1), (5, 5)]);
        t.delivered(ok(4));
        t.delivered(ok(6));
        assert_eq!(t.written_ranges(), vec![(1, 1), (4, 6)]);
        assert_eq!(t.written, 4);
        assert_eq!(t.failed_count(), 1);
        assert_eq!(t.reasons, vec![(2, 2, Cause::Data, "data error: too big".to_string())]);
    }

    /// The watchers report consecutive written lines as one range: each line in it is written
    /// once, and the lines before the oldest pending one leave the window as ranges.
    #[test]
    fn a_range_of_written_lines_settles_each_of_its_lines() {
        let mut t = Tracker::new();
        (1..=8).for_each(|n| t.sent(n));
        t.delivered(Delivery { first: 3, last: 6, bytes: 40, result: Ok(()) });
        assert_eq!((t.written, t.written_bytes, t.pending), (4, 40, 4));
        assert_eq!(t.pending_lines(), vec![1, 2, 7, 8]);
        assert_eq!(t.base, 1, "line 1 is pending: nothing leaves the window");
        t.delivered(Delivery { first: 1, last: 2, bytes: 20, result: Ok(()) });
        assert_eq!(t.base, 7, "lines 1-6 left the window");
        assert_eq!(t.written_below, vec![(1, 6)]);
        // Again: settled lines are not counted twice.
        t.delivered(Delivery { first: 1, last: 6, bytes: 60, result: Ok(()) });
        assert_eq!((t.written, t.written_bytes), (6, 60));
        t.delivered(Delivery { first: 7, last: 7, bytes: 1, result: Err((Cause::Runtime, "gone".into())) });
        t.delivered(ok(8));
        assert_eq!((t.written, t.written_bytes, t.pending), (7, 70, 0));
        assert_eq!(t.written_ranges(), vec![(1, 6), (8, 8)]);
        assert!(t.window.is_empty() && t.base == 9);
    }

    #[test]
    fn an_aborted_transaction_takes_back_its_written_lines() {
        let mut t = Tracker::new();
        for n in 1..=10 {
            t.sent(n);
            t.delivered(ok(n));
        }
        let before = (t.written, t.written_bytes);
        for n in 11..=20 {
            t.sent(n);
        }
        t.delivered(Delivery { first: 11, last: 15, bytes: 50, result: Ok(()) });
        t.delivered(ok(18));
        t.unwrite_from(11, before, Cause::Aborted, "transaction aborted");
        // Outcomes that come after the abort change nothing.
        t.delivered(Delivery { first: 16, last: 17, bytes: 20, result: Ok(()) });
        t.delivered(Delivery { first: 19, last: 19, bytes: 10, result: Err((Cause::Aborted, "x".into())) });
        assert_eq!(t.written_ranges(), vec![(1, 10)]);
        assert_eq!((t.written, t.written_bytes, t.pending), (10, 100, 0));
        let mut failed: Vec<_> = t.reasons.iter().map(|(a, b, _, _)| (*a, *b)).collect();
        failed.sort();
        let mut merged = Vec::new();
        failed.into_iter().for_each(|(a, b)| push_range(&mut merged, a, b));
        assert_eq!(merged, vec![(11, 20)]);
        assert_eq!(t.failed_count(), 10);
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
