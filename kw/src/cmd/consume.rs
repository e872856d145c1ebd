//! `kw consume TOPIC...`: records of assigned partitions (default: all of them) or, with
//! `--group`, of the partitions a consumer group assigns, printed as values, JSON lines or a
//! kcat-style format.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use kafka_wire::client::{Admin, Consumer, IsolationLevel, OffsetSpec, RecordView};
use kafka_wire::TopicPartition;

use crate::conn::{connect_error, ConnArgs};
use crate::error::{runtime, usage, Result};
use crate::output::{json_bytes, json_str, transfer_summary, write_error};
use crate::signal::Interrupt;
use crate::Top;

const HELP: &str = "\
Start (--from, like kcat's -o):
  beginning | end   the earliest or the next new record (end is the default)
  N                 absolute offset N in every partition
  -N                N records before the end of every partition
  @MS               the first record at or after MS milliseconds since the epoch
With --group the group's committed offsets come first; --from beginning|end then only says
where partitions without a committed offset start (auto.offset.reset), and the group's
offsets are committed when kw stops.

Output (--format):
  value             the value, one per line (with -K D: key D value)
  json              one JSON object per line (same as -J): topic, partition, offset,
                    timestamp, key, value, headers ([{\"key\":..,\"value\":..}]); null key or
                    value as null, bytes that are not UTF-8 replaced by U+FFFD
  FORMAT            kcat-style: %t topic, %p partition, %o offset, %k key, %s value,
                    %T timestamp (ms), %h headers (k=v,k2=v2), %K key length, %S value length,
                    %% a percent sign; \\n \\t \\r \\\\ escapes. A newline is added when FORMAT
                    has none.

SIGINT (Ctrl-C) or SIGTERM stops consuming: with --group, the offsets of the records printed
are committed and the member leaves the group; the exit code is 130 (SIGINT) or 143 (SIGTERM).

Examples:
  kw consume events --from beginning --exit-at-end
  kw consume events -p 0 -p 1 --from -10 -J
  kw consume events --group billing --from beginning -c 100
  kw consume events --isolation read_committed --format '%p:%o %k=%s\\n'";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Isolation {
    #[value(name = "read_committed")]
    ReadCommitted,
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
}

#[derive(Args, Debug)]
#[command(after_help = HELP)]
pub struct ConsumeArgs {
    /// Topics to consume
    #[arg(required = true, value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Consume as a member of group G (the group assigns partitions and stores offsets)
    #[arg(short = 'G', long, value_name = "G")]
    pub group: Option<String>,
    /// Partition to consume, repeatable (default: all partitions); not with --group
    #[arg(short = 'p', long = "partition", value_name = "P")]
    pub partitions: Vec<i32>,
    /// Where to start: beginning, end, OFFSET, -N (N before the end), @TIMESTAMP_MS
    #[arg(short = 'o', long = "from", value_name = "START", allow_hyphen_values = true, value_parser = parse_start)]
    pub from: Option<Start>,
    /// Which transactional records to show (isolation.level)
    #[arg(long, value_enum)]
    pub isolation: Option<Isolation>,
    /// Stop after N records
    #[arg(short = 'c', long = "count", value_name = "N")]
    pub count: Option<u64>,
    /// Stop when every partition has reached the end offset it had at start
    #[arg(short = 'e', long)]
    pub exit_at_end: bool,
    /// Output: value, json, or a FORMAT with placeholders (see below)
    #[arg(short = 'f', long, default_value = "value", value_name = "value|json|FORMAT")]
    pub format: String,
    /// JSON lines (same as --format json)
    #[arg(short = 'J')]
    pub json: bool,
    /// With --format value: print the key, DELIM, then the value
    #[arg(short = 'K', long = "key-delimiter", value_name = "DELIM")]
    pub key_delimiter: Option<String>,
    /// At the end, print on stderr the records read and their rate (from the first fetch on,
    /// connecting and positioning left out)
    #[arg(long)]
    pub stats: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Where consumption starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
    Offset(i64),
    FromEnd(i64),
    Timestamp(i64),
}

fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "beginning" | "earliest" => Ok(Start::Beginning),
        "end" | "latest" => Ok(Start::End),
        _ => {
            if let Some(ts) = s.strip_prefix('@') {
                return ts.parse().map(Start::Timestamp).map_err(|_| format!("{s}: expected @TIMESTAMP_MS"));
            }
            let n: i64 = s.parse().map_err(|_| format!("{s}: expected beginning, end, OFFSET, -N or @TIMESTAMP_MS"))?;
            Ok(if n < 0 { Start::FromEnd(-n) } else { Start::Offset(n) })
        }
    }
}

/// How records are printed.
enum Output {
    Value { key_delimiter: Option<Vec<u8>> },
    Json,
    Format(Vec<Token>),
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
    KeyLen,
    ValueLen,
}

fn parse_format(f: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut lit = Vec::new();
    let mut has_newline = false;
    let mut chars = f.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let token = match chars.next() {
                    Some('t') => Token::Topic,
                    Some('p') => Token::Partition,
                    Some('o') => Token::Offset,
                    Some('k') => Token::Key,
                    Some('s') => Token::Value,
                    Some('T') => Token::Timestamp,
                    Some('h') => Token::Headers,
                    Some('K') => Token::KeyLen,
                    Some('S') => Token::ValueLen,
                    Some('%') => {
                        lit.push(b'%');
                        continue;
                    }
                    Some(other) => {
                        return Err(usage(format!(
                            "--format: unknown placeholder %{other} (known: %t %p %o %k %s %T %h %K %S %%)"
                        )))
                    }
                    None => return Err(usage("--format: a lone % at the end (write %% for a percent sign)")),
                };
                if !lit.is_empty() {
                    tokens.push(Token::Literal(std::mem::take(&mut lit)));
                }
                tokens.push(token);
            }
            '\\' => match chars.next() {
                Some('n') => {
                    lit.push(b'\n');
                    has_newline = true;
                }
                Some('t') => lit.push(b'\t'),
                Some('r') => lit.push(b'\r'),
                Some('\\') => lit.push(b'\\'),
                Some(other) => {
                    lit.push(b'\\');
                    let mut buf = [0; 4];
                    lit.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
                None => lit.push(b'\\'),
            },
            c => {
                has_newline |= c == '\n';
                let mut buf = [0; 4];
                lit.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    if !has_newline {
        lit.push(b'\n');
    }
    if !lit.is_empty() {
        tokens.push(Token::Literal(lit));
    }
    Ok(tokens)
}

impl Output {
    fn write(&self, out: &mut Vec<u8>, r: &RecordView<'_>) {
        match self {
            Output::Value { key_delimiter } => {
                if let Some(d) = key_delimiter {
                    out.extend_from_slice(r.key().unwrap_or_default());
                    out.extend_from_slice(d);
                }
                out.extend_from_slice(r.value().unwrap_or_default());
                out.push(b'\n');
            }
            Output::Json => {
                out.extend_from_slice(b"{\"topic\":");
                json_str(out, &r.topic());
                // Writing to a Vec cannot fail; numbers are formatted in place (no String per record).
                let _ = write!(
                    out,
                    ",\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":",
                    r.partition(),
                    r.offset(),
                    r.timestamp()
                );
                json_bytes(out, r.key());
                out.extend_from_slice(b",\"value\":");
                json_bytes(out, r.value());
                out.extend_from_slice(b",\"headers\":[");
                for (i, h) in r.headers().iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"key\":");
                    json_str(out, &h.key);
                    out.extend_from_slice(b",\"value\":");
                    json_bytes(out, h.value.as_deref());
                    out.push(b'}');
                }
                out.extend_from_slice(b"]}\n");
            }
            Output::Format(tokens) => {
                for t in tokens {
                    match t {
                        Token::Literal(l) => out.extend_from_slice(l),
                        Token::Topic => out.extend_from_slice(r.topic().as_bytes()),
                        Token::Partition => {
                            let _ = write!(out, "{}", r.partition());
                        }
                        Token::Offset => {
                            let _ = write!(out, "{}", r.offset());
                        }
                        Token::Key => out.extend_from_slice(r.key().unwrap_or_default()),
                        Token::Value => out.extend_from_slice(r.value().unwrap_or_default()),
                        Token::Timestamp => {
                            let _ = write!(out, "{}", r.timestamp());
                        }
                        Token::KeyLen => {
                            let _ = write!(out, "{}", len_of(r.key()));
                        }
                        Token::ValueLen => {
                            let _ = write!(out, "{}", len_of(r.value()));
                        }
                        Token::Headers => {
                            for (i, h) in r.headers().iter().enumerate() {
                                if i > 0 {
                                    out.push(b',');
                                }
                                out.extend_from_slice(h.key.as_bytes());
                                out.push(b'=');
                                out.extend_from_slice(h.value.as_deref().unwrap_or_default());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// kcat prints -1 for the length of a null key or value.
fn len_of(b: Option<&[u8]>) -> i64 {
    b.map_or(-1, |b| b.len() as i64)
}

pub async fn run(args: ConsumeArgs, top: &Top) -> Result<()> {
    let output = if args.json || args.format == "json" {
        Output::Json
    } else if args.format == "value" {
        Output::Value { key_delimiter: args.key_delimiter.clone().map(String::into_bytes) }
    } else {
        Output::Format(parse_format(&args.format)?)
    };
    if args.key_delimiter.is_some() && !matches!(output, Output::Value { .. }) {
        return Err(usage("--key-delimiter applies to --format value only (use %k in a FORMAT)"));
    }
    let group_mode = args.group.is_some();
    if group_mode && !args.partitions.is_empty() {
        return Err(usage("--partition cannot be used with --group (the group assigns partitions)"));
    }
    if group_mode && matches!(args.from, Some(Start::Offset(_) | Start::FromEnd(_) | Start::Timestamp(_))) {
        return Err(usage(
            "with --group, --from can only be beginning or end (where partitions without a committed offset start)",
        ));
    }
    if args.count == Some(0) {
        return Ok(());
    }

    let settings = top.settings(&args.conn)?;
    let mut extra: Vec<(&str, String)> = Vec::new();
    if let Some(i) = args.isolation {
        extra.push((
            "isolation.level",
            if i == Isolation::ReadCommitted { "read_committed" } else { "read_uncommitted" }.into(),
        ));
    }
    if let Some(g) = &args.group {
        extra.push(("group.id", g.clone()));
        match args.from {
            Some(Start::Beginning) => extra.push(("auto.offset.reset", "earliest".into())),
            Some(Start::End) => extra.push(("auto.offset.reset", "latest".into())),
            _ => {}
        }
    }
    let config = settings.consumer(&extra)?;
    let read_committed = config.isolation_level == IsolationLevel::ReadCommitted;
    let wait = super::TOPIC_WAIT.min(config.default_api_timeout);
    let interrupt = &top.interrupt;
    let consumer = interrupt.guard(Consumer::new(config)).await?.map_err(connect_error)?;
    // Nothing to clean up before the loop: a group is joined by the first poll.
    let ends = interrupt.guard(start(&consumer, &args, read_committed, wait)).await??;
    let mut printed = Printed::default();
    let started = Instant::now();
    let result = consume_loop(&consumer, &output, &args, &ends, interrupt, &mut printed).await;
    if args.stats {
        eprintln!("kw: {}", printed.summary(&args.topics, started.elapsed()));
    }
    match interrupt.bounded(consumer.close()).await {
        Some(Ok(())) => {}
        Some(Err(e)) => eprintln!("kw: closing the consumer failed: {}", crate::error::describe(&e)),
        None => eprintln!("kw: the consumer did not close within {} s of the signal", crate::signal::CLEANUP.as_secs()),
    }
    result
}

/// Assigns or subscribes, positions the partitions, and returns the end offsets at start (for
/// `--exit-at-end`).
async fn start(
    consumer: &Consumer,
    args: &ConsumeArgs,
    read_committed: bool,
    wait: Duration,
) -> Result<HashMap<TopicPartition, i64>> {
    let group_mode = args.group.is_some();
    let topics = super::topic_partitions(consumer.client(), &args.topics, wait).await?;
    let mut tps: Vec<TopicPartition> = Vec::new();
    for (topic, partitions) in &topics {
        if args.partitions.is_empty() {
            tps.extend(partitions.iter().map(|p| TopicPartition::new(topic.as_str(), *p)));
        } else {
            for p in &args.partitions {
                if !partitions.contains(p) {
                    return Err(runtime(format!(
                        "partition {p} does not exist in topic '{topic}' ({} partitions)",
                        partitions.len()
                    )));
                }
                tps.push(TopicPartition::new(topic.as_str(), *p));
            }
        }
    }
    let admin = Admin::new(consumer.client().clone());
    let pairs: Vec<(&str, i32)> = tps.iter().map(|tp| (&*tp.topic, tp.partition)).collect();
    let ends: HashMap<TopicPartition, i64> = if args.exit_at_end {
        let listed = admin.list_offsets_isolated(&pairs, OffsetSpec::Latest, read_committed).await?;
        listed.into_iter().map(|o| (TopicPartition::new(o.topic, o.partition), o.offset)).collect()
    } else {
        HashMap::new()
    };

    if group_mode {
        consumer
            .subscribe(args.topics.iter().cloned())
            .map_err(|e| runtime(format!("cannot join group: {}", crate::error::describe(&e))))?;
    } else {
        consumer.assign(tps.iter().cloned());
        match args.from.unwrap_or(Start::End) {
            Start::Beginning => consumer.seek_to_beginning(&tps)?,
            Start::End => consumer.seek_to_end(&tps)?,
            Start::Timestamp(ts) => consumer.seek_to_timestamp(&tps, ts)?,
            Start::Offset(o) => {
                for tp in &tps {
                    consumer.seek(tp, o)?;
                }
            }
            Start::FromEnd(n) => {
                let earliest = admin.list_offsets(&pairs, OffsetSpec::Earliest).await?;
                let latest = admin.list_offsets(&pairs, OffsetSpec::Latest).await?;
                for (e, l) in earliest.iter().zip(&latest) {
                    consumer.seek(&TopicPartition::new(l.topic.as_str(), l.partition), (l.offset - n).max(e.offset))?;
                }
            }
        }
    }
    Ok(ends)
}

/// What the loop printed, for `--stats`.
#[derive(Default)]
struct Printed {
    records: u64,
    /// Of keys and values.
    bytes: u64,
}

impl Printed {
    fn summary(&self, topics: &[String], elapsed: Duration) -> String {
        let topics: Vec<String> = topics.iter().map(|t| format!("'{t}'")).collect();
        transfer_summary("consumed", self.records, self.bytes, &format!("from {}", topics.join(", ")), elapsed)
    }
}

async fn consume_loop(
    consumer: &Consumer,
    output: &Output,
    args: &ConsumeArgs,
    ends: &HashMap<TopicPartition, i64>,
    interrupt: &Interrupt,
    printed: &mut Printed,
) -> Result<()> {
    let mut buf = Vec::with_capacity(1 << 16);
    let stdout = std::io::stdout();
    let mut idle_since = Instant::now();
    loop {
        if args.exit_at_end && at_end(consumer, ends) {
            return Ok(());
        }
        let records = interrupt
            .guard(consumer.poll_views(Duration::from_millis(250)))
            .await?
            .map_err(|e| runtime(crate::error::describe(&e)))?;
        if !records.is_empty() {
            idle_since = Instant::now();
        } else if args.exit_at_end && idle_since.elapsed() >= Duration::from_secs(1) {
            nudge(consumer, ends)?;
            idle_since = Instant::now();
        }
        buf.clear();
        // With --count, the first record of each partition not printed, to rewind to (so that
        // a group commits only what was printed).
        let mut rewind: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for r in &records {
            if args.count.is_some_and(|c| printed.records >= c) {
                rewind.entry(r.topic_partition()).or_insert(r.offset());
                continue;
            }
            output.write(&mut buf, &r);
            printed.records += 1;
            printed.bytes += (r.key().map_or(0, <[u8]>::len) + r.value().map_or(0, <[u8]>::len)) as u64;
        }
        {
            let mut out = stdout.lock();
            out.write_all(&buf).and_then(|()| out.flush()).map_err(write_error)?;
        }
        for (tp, offset) in rewind {
            consumer.seek(&tp, offset)?;
        }
        if args.count.is_some_and(|c| printed.records >= c) {
            return Ok(());
        }
    }
}

/// Seeks every partition that sits below its end offset, with nothing to hand out, to its own
/// position. The consumer then fetches from there again and moves its position past what it
/// does not hand out (a transaction marker or aborted records at the end of a read_committed
/// fetch are not always passed otherwise), so that `--exit-at-end` can see the end.
fn nudge(consumer: &Consumer, ends: &HashMap<TopicPartition, i64>) -> Result<()> {
    let positions = consumer.positions();
    for tp in consumer.assignment() {
        if let (Some(pos), Some(end)) = (positions.get(&tp), ends.get(&tp)) {
            if pos.offset < *end {
                consumer.seek(&tp, pos.offset)?;
            }
        }
    }
    Ok(())
}

/// Every assigned partition has its position at or past its end offset at start (and there is
/// an assignment: a group member may not have one yet).
fn at_end(consumer: &Consumer, ends: &HashMap<TopicPartition, i64>) -> bool {
    let assignment = consumer.assignment();
    if assignment.is_empty() {
        return false;
    }
    let positions = consumer.positions();
    assignment.iter().all(|tp| match (positions.get(tp), ends.get(tp)) {
        (Some(pos), Some(end)) => pos.offset >= *end,
        (_, None) => true,
        (None, Some(_)) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts() {
        assert_eq!(parse_start("beginning"), Ok(Start::Beginning));
        assert_eq!(parse_start("end"), Ok(Start::End));
        assert_eq!(parse_start("42"), Ok(Start::Offset(42)));
        assert_eq!(parse_start("-5"), Ok(Start::FromEnd(5)));
        assert_eq!(parse_start("@1700000000000"), Ok(Start::Timestamp(1_700_000_000_000)));
        assert!(parse_start("soon").is_err());
    }

    #[test]
    fn formats() {
        let t = parse_format("%t/%p@%o %k=%s %% %h\\t%T").unwrap();
        assert_eq!(t[0], Token::Topic);
        assert_eq!(t.last(), Some(&Token::Literal(b"\n".to_vec())));
        assert!(parse_format("%x").is_err());
        let t = parse_format("%s\\n").unwrap();
        assert_eq!(t, vec![Token::Value, Token::Literal(b"\n".to_vec())]);
    }
}
