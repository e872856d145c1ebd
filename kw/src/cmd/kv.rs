//! `kw kv get|put|delete|list|watch TOPIC [KEY]`: a compacted topic as a key-value store (the
//! kvstore crate's `KvStore`). Keys and values are JSON by default; `--raw` takes and prints
//! them as bytes.
//!
//! `kw kv send COMMANDS_TOPIC KEY increment|set|cas|delete|call …`: a command to an atomic store
//! (the kvstore crate's `AtomicKvStore`), applied by its processor; with `--wait`, the outcome
//! is printed.
//!
//! Every command loads the topic first (up to its end offsets when the command starts), so a
//! `get` after a `put` sees the value. The topic must exist and be compacted. The `-X`
//! properties are checked as for admin commands; the store uses the bootstrap servers of them.

use bytes::Bytes;
use clap::{Args, Subcommand};
use kvstore::{
    AtomicConfig, AtomicKvStore, Codec, CodecError, Command, KvConfig, KvStore, Outcome, Prefix, Raw, WatchError,
};
use serde_json::Value;

use crate::conn::ConnArgs;
use crate::error::{runtime, Failure, Result};
use crate::output::{json_bytes, write_error};
use crate::Top;

#[derive(Subcommand, Debug)]
#[command(after_help = "\
Keys and values are JSON: an argument that is not valid JSON is taken as a JSON string
(SS is \"SS\"; write '\"42\"' for the string 42). With --raw they are bytes as given.
The topic must exist with cleanup.policy=compact:
  kw topics create countries --config cleanup.policy=compact

Examples:
  kw kv put countries SS '\"South Sudan\"'
  kw kv get countries SS
  kw kv list countries
  kw kv watch countries --snapshot
  kw kv delete countries SS")]
pub enum KvCommand {
    /// Print the value of a key (exit 1 if it has none)
    #[command(after_help = "Examples:\n  kw kv get countries SS\n  kw kv get sessions --raw user-1")]
    Get(KeyArgs),
    /// Write a value for a key; returns once the store sees it
    #[command(
        after_help = "Examples:\n  kw kv put countries SS '\"South Sudan\"'\n  kw kv put limits api '{\"rps\": 100}'"
    )]
    Put(PutArgs),
    /// Delete a key (write a tombstone)
    #[command(after_help = "Example:\n  kw kv delete countries SS")]
    Delete(KeyArgs),
    /// Print every key and value, or those whose key starts with a prefix
    #[command(after_help = "Examples:\n  kw kv list countries\n  kw kv list countries S")]
    List(ListArgs),
    /// Print the changes of every key, or of one key, as they happen
    #[command(after_help = "Examples:\n  kw kv watch countries --snapshot\n  kw kv watch countries SS --count 1")]
    Watch(WatchArgs),
    /// Send a command to an atomic store's commands topic (applied once, in order per key)
    #[command(after_help = "\
Prints where the command landed ({\"partition\":..,\"offset\":..}); with --wait, the outcome
once the store's processor applied it ({\"applied\":{\"old\":..,\"new\":..}}, or
{\"refused\":{\"reason\":..,\"current\":..}} and exit 1). Values are JSON as for put.
The processor reads COMMANDS_TOPIC and writes COMMANDS_TOPIC.store; replies come on
COMMANDS_TOPIC.replies (--replies to change it).

Examples:
  kw kv send jobs-completed Y-6 increment --wait
  kw kv send jobs-completed Y-6 increment 2
  kw kv send limits api set '{\"rps\": 100}'
  kw kv send limits api cas '{\"rps\": 100}' '{\"rps\": 200}' --wait
  kw kv send imports Y call job_done 3 --wait")]
    Send(SendArgs),
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// The atomic store's commands topic
    pub topic: String,
    /// The key
    pub key: String,
    #[command(subcommand)]
    pub op: SendOp,
    /// Wait for the outcome and print it
    #[arg(long, global = true)]
    pub wait: bool,
    /// How long --wait waits, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30, global = true)]
    pub timeout: u64,
    /// The replies topic (default COMMANDS_TOPIC.replies)
    #[arg(long, value_name = "TOPIC", global = true)]
    pub replies: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Subcommand, Debug, Clone)]
pub enum SendOp {
    /// Add BY (default 1) to the integer value
    Increment {
        /// The amount
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
    },
    /// Set the value
    Set {
        /// The value (JSON; text that is not JSON is a string)
        value: String,
    },
    /// Set the value to NEW if it is EXPECTED now ('null': the key has no value)
    Cas {
        /// The value expected
        expected: String,
        /// The new value ('null': delete)
        new: String,
    },
    /// Delete the key
    Delete,
    /// Run a function registered with the store's processor
    Call {
        /// The function's name
        function: String,
        /// Its argument (JSON; default null)
        #[arg(default_value = "null")]
        arg: String,
    },
}

impl SendOp {
    fn command(self) -> Command {
        let some = |s: &str| Some(json_arg(s)).filter(|v| !v.is_null());
        match self {
            SendOp::Increment { by } => Command::increment(by),
            SendOp::Set { value } => Command::set(json_arg(&value)),
            SendOp::Cas { expected, new } => Command::compare_and_set(some(&expected), some(&new)),
            SendOp::Delete => Command::Delete,
            SendOp::Call { function, arg } => Command::call(function, json_arg(&arg)),
        }
    }
}

#[derive(Args, Debug)]
pub struct Common {
    /// The compacted topic
    pub topic: String,
    /// Keys and values as bytes, not JSON
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(flatten)]
    pub common: Common,
    /// The key
    pub key: String,
}

#[derive(Args, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    pub common: Common,
    /// The key
    pub key: String,
    /// The value
    pub value: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only keys starting with this (JSON mode: string keys starting with this text)
    pub prefix: Option<String>,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only this key
    pub key: Option<String>,
    /// Print the current keys and values first ({"key":..,"value":..} lines)
    #[arg(long)]
    pub snapshot: bool,
    /// Exit after this many changes
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// JSON keys and values, keys held as their JSON text so that they are ordered (and
/// prefixed) as text.
#[derive(Clone, Copy)]
struct JsonText;

impl Codec<String> for JsonText {
    fn encode(&self, key: &String) -> Result<Vec<u8>, CodecError> {
        Ok(key.as_bytes().to_vec())
    }

    fn decode(&self, bytes: &[u8]) -> Result<String, CodecError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| CodecError(format!("JSON: {e}")))?;
        Ok(value.to_string())
    }
}

impl Codec<Value> for JsonText {
    fn encode(&self, value: &Value) -> Result<Vec<u8>, CodecError> {
        Ok(value.to_string().into_bytes())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Value, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError(format!("JSON: {e}")))
    }
}

/// An argument as JSON: itself if it parses, else a JSON string of it.
fn json_arg(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

/// How a mode takes its arguments and prints its keys and values.
trait Mode: Codec<Self::K> + Codec<Self::V> {
    type K: Ord + Clone + Send + Sync + std::borrow::Borrow<Self::P> + 'static;
    type V: Clone + Send + Sync + 'static;
    type P: Prefix + ToOwned + ?Sized;
    fn key(s: &str) -> Self::K;
    fn value(s: &str) -> Self::V;
    /// The keys a `list` prefix selects start with this.
    fn prefix(s: &str) -> <Self::P as ToOwned>::Owned;
    fn json_key(out: &mut Vec<u8>, k: &Self::K);
    fn json_value(out: &mut Vec<u8>, v: Option<&Self::V>);
    /// A value as `get` prints it.
    fn plain(v: &Self::V) -> Vec<u8>;
    /// An entry as `list` prints it.
    fn entry(k: &Self::K, v: &Self::V) -> Vec<u8>;
}

impl Mode for JsonText {
    type K = String;
    type V = Value;
    type P = str;
    fn key(s: &str) -> String {
        json_arg(s).to_string()
    }
    fn value(s: &str) -> Value {
        json_arg(s)
    }
    fn prefix(s: &str) -> String {
        // String keys starting with `s`: their JSON text without the closing quote.
        let mut text = Value::String(s.to_owned()).to_string();
        text.pop();
        text
    }
    fn json_key(out: &mut Vec<u8>, k: &String) {
        out.extend_from_slice(k.as_bytes());
    }
    fn json_value(out: &mut Vec<u8>, v: Option<&Value>) {
        out.extend_from_slice(v.map_or_else(|| "null".to_owned(), Value::to_string).as_bytes());
    }
    fn plain(v: &Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }
    fn entry(k: &String, v: &Value) -> Vec<u8> {
        let mut out = b"{\"key\":".to_vec();
        Self::json_key(&mut out, k);
        out.extend_from_slice(b",\"value\":");
        Self::json_value(&mut out, Some(v));
        out.push(b'}');
        out
    }
}

impl Mode for Raw {
    type K = Bytes;
    type V = Bytes;
    type P = [u8];
    fn key(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }
    fn value(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }
    fn prefix(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }
    fn json_key(out: &mut Vec<u8>, k: &Bytes) {
        json_bytes(out, Some(k));
    }
    fn json_value(out: &mut Vec<u8>, v: Option<&Bytes>) {
        json_bytes(out, v.map(|v| &v[..]));
    }
    fn plain(v: &Bytes) -> Vec<u8> {
        v.to_vec()
    }
    fn entry(k: &Bytes, v: &Bytes) -> Vec<u8> {
        let mut out = k.to_vec();
        out.push(b'\t');
        out.extend_from_slice(v);
        out
    }
}

pub async fn run(command: KvCommand, top: &Top) -> Result<()> {
    let raw = match &command {
        KvCommand::Send(_) => false,
        KvCommand::Get(a) | KvCommand::Delete(a) => a.common.raw,
        KvCommand::Put(a) => a.common.raw,
        KvCommand::List(a) => a.common.raw,
        KvCommand::Watch(a) => a.common.raw,
    };
    if let KvCommand::Send(args) = command {
        send(args, top).await
    } else if raw {
        run_mode(command, Raw, top).await
    } else {
        run_mode(command, JsonText, top).await
    }
}

fn common(command: &KvCommand) -> &Common {
    match command {
        KvCommand::Get(a) | KvCommand::Delete(a) => &a.common,
        KvCommand::Put(a) => &a.common,
        KvCommand::List(a) => &a.common,
        KvCommand::Watch(a) => &a.common,
        KvCommand::Send(_) => unreachable!("send has no store topic"),
    }
}

async fn send(args: SendArgs, top: &Top) -> Result<()> {
    let (client, _) = top.settings(&args.conn)?.client()?;
    let mut config = AtomicConfig::new(client.bootstrap_servers.join(","), &args.topic)
        .create_topics(false)
        .reply_timeout(std::time::Duration::from_secs(args.timeout));
    if let Some(replies) = &args.replies {
        config = config.replies_topic(replies);
    }
    let store = AtomicKvStore::connect(&config).await.map_err(failure)?;
    let command = args.op.command();
    let printed = if args.wait {
        let outcome = store.execute(&args.key, &command).await.map_err(failure)?;
        print_bytes(serde_json::to_vec(&outcome).expect("an outcome serializes"))?;
        match outcome {
            Outcome::Applied { .. } => Ok(()),
            Outcome::Refused { reason, .. } => Err(runtime(format!("the command was refused: {reason}"))),
        }
    } else {
        let sent = store.send(&args.key, &command).await.map_err(failure)?;
        print_bytes(format!("{{\"partition\":{},\"offset\":{}}}", sent.partition, sent.offset).into_bytes())
    };
    store.close().await.map_err(failure)?;
    printed
}

async fn run_mode<M: Mode>(command: KvCommand, mode: M, top: &Top) -> Result<()> {
    let common = common(&command);
    let (client, _) = top.settings(&common.conn)?.client()?;
    let config = KvConfig::new(client.bootstrap_servers.join(","), &common.topic).create_topic(false);
    let store: KvStore<M::K, M::V, M> = KvStore::open_with(config, mode).await.map_err(failure)?;
    match store.decode_failures() {
        0 => {}
        n => eprintln!("kw: warning: {n} records of '{}' do not decode (try --raw)", common.topic),
    }
    match command {
        KvCommand::Get(a) => match store.get::<M::K>(&M::key(&a.key)).map_err(failure)? {
            Some(v) => print_bytes(M::plain(&v)),
            None => Err(runtime(format!("key {} has no value in topic '{}'", a.key, a.common.topic))),
        },
        KvCommand::Put(a) => {
            store.put(&M::key(&a.key), &M::value(&a.value)).await.map_err(failure)?;
            Ok(())
        }
        KvCommand::Delete(a) => {
            store.delete(&M::key(&a.key)).await.map_err(failure)?;
            Ok(())
        }
        KvCommand::List(a) => {
            let entries = match &a.prefix {
                Some(p) => store.prefix(std::borrow::Borrow::<M::P>::borrow(&M::prefix(p))),
                None => store.iter(),
            }
            .map_err(failure)?;
            for (k, v) in entries {
                print_bytes(M::entry(&k, &v))?;
            }
            Ok(())
        }
        KvCommand::Watch(a) => watch(&store, a).await,
        KvCommand::Send(_) => unreachable!("handled by send"),
    }
}

async fn watch<M: Mode>(store: &KvStore<M::K, M::V, M>, args: WatchArgs) -> Result<()> {
    // The snapshot and the changes after it, with nothing missed or repeated in between.
    let (snapshot, mut changes) = store.snapshot_and_watch().map_err(failure)?;
    let key = args.key.as_deref().map(M::key);
    if args.snapshot {
        for (k, v) in snapshot.iter().filter(|(k, _)| key.as_ref().is_none_or(|key| k == key)) {
            print_bytes(M::entry(k, v))?;
        }
    }
    let mut printed = 0;
    while args.count.is_none_or(|n| printed < n) {
        let change = match changes.recv().await {
            Ok(change) if key.as_ref().is_none_or(|key| change.key == *key) => change,
            Ok(_) => continue,
            Err(WatchError::Lagged(n)) => {
                eprintln!("kw: warning: missed {n} changes (the output is behind)");
                continue;
            }
            Err(WatchError::Closed) => return Err(runtime(format!("the store of '{}' stopped", store.topic()))),
        };
        let mut line = b"{\"key\":".to_vec();
        M::json_key(&mut line, &change.key);
        line.extend_from_slice(b",\"old\":");
        M::json_value(&mut line, change.old.as_ref());
        line.extend_from_slice(b",\"new\":");
        M::json_value(&mut line, change.new.as_ref());
        line.extend_from_slice(
            format!(",\"partition\":{},\"offset\":{}}}", change.partition, change.offset).as_bytes(),
        );
        print_bytes(line)?;
        printed += 1;
    }
    Ok(())
}

fn print_bytes(mut line: Vec<u8>) -> Result<()> {
    use std::io::Write;
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&line).and_then(|()| out.flush()).map_err(write_error)
}

/// A store error as kw reports it: a client error by its kind, the rest (a missing or
/// non-compacted topic, a timeout) as runtime errors (exit 1).
fn failure(e: kvstore::Error) -> Failure {
    match e {
        kvstore::Error::Kafka(e) => e.into(),
        e => runtime(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_json_or_strings() {
        assert_eq!(JsonText::key("SS"), "\"SS\"");
        assert_eq!(JsonText::key("\"SS\""), "\"SS\"");
        assert_eq!(JsonText::key("42"), "42");
        assert_eq!(JsonText::value("{\"a\": 1}"), serde_json::json!({"a": 1}));
        assert_eq!(JsonText::prefix("S\"x"), "\"S\\\"x");
        // Keys written with other spacing are the same key.
        assert_eq!(Codec::<String>::decode(&JsonText, b"{ \"a\" : 1 }").unwrap(), JsonText::key("{\"a\":1}"));
    }

    #[test]
    fn send_operations_become_commands() {
        use serde_json::json;
        assert_eq!(SendOp::Increment { by: -2 }.command(), Command::increment(-2));
        assert_eq!(SendOp::Set { value: "South Sudan".into() }.command(), Command::set("South Sudan"));
        let cas = SendOp::Cas { expected: "null".into(), new: "{\"rps\": 1}".into() };
        assert_eq!(cas.command(), Command::compare_and_set(None, Some(json!({"rps": 1}))));
        let call = SendOp::Call { function: "job_done".into(), arg: "3".into() };
        assert_eq!(call.command(), Command::call("job_done", 3));
    }
}
