//! The processor's side of the atomic store, apart from the transactions: the values of the
//! partitions it owns, how commands change them, and how a partition's values are loaded from
//! the store topic.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use kafka_wire::client::{Admin, OffsetSpec};
use kafka_wire::{ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, ProducerRecord, TopicPartition};
use serde_json::Value;

use crate::atomic::{key_bytes, Callback, Command, Function, Outcome, Reply, Update, COMMAND_ID};
use crate::error::{Error, Result};

/// The values of one partition, as of the command before `next`.
struct PartitionState {
    /// The offset of the next command these values are valid for.
    next: i64,
    values: HashMap<String, Value>,
}

/// Applies batches of commands to the values of their partitions.
pub(crate) struct Engine {
    store: String,
    replies: String,
    functions: HashMap<String, Function>,
    callbacks: Vec<Callback>,
    partitions: HashMap<i32, PartitionState>,
    loader: Loader,
}

impl Engine {
    pub(crate) fn new(
        store: String,
        replies: String,
        functions: HashMap<String, Function>,
        callbacks: Vec<Callback>,
        loader: Loader,
    ) -> Self {
        Self { store, replies, functions, callbacks, partitions: HashMap::new(), loader }
    }

    /// Turns `batch` into the records of its transaction: the new values, the replies, the
    /// callbacks' records. `false` if the batch cannot be applied now (a partition's values did
    /// not load): the transaction must be aborted, and the batch comes again.
    ///
    /// The values in memory move ahead as the batch is applied, before its transaction commits:
    /// if it does not commit, the commands are consumed again from the committed offsets, which
    /// are not the offsets the values are valid for, so the values are loaded again.
    pub(crate) fn handle(&mut self, batch: &[ConsumerRecord], out: &mut Vec<ProducerRecord>) -> bool {
        let mut first: BTreeMap<i32, i64> = BTreeMap::new();
        for r in batch {
            first.entry(r.partition).or_insert(r.offset);
        }
        for (&partition, &offset) in &first {
            if self.partitions.get(&partition).is_some_and(|s| s.next == offset) {
                continue;
            }
            self.partitions.remove(&partition);
            match self.loader.load(partition) {
                Ok(values) => {
                    tracing::debug!(
                        partition,
                        offset,
                        keys = values.len(),
                        "atomic store: loaded the partition's values"
                    );
                    self.partitions.insert(partition, PartitionState { next: offset, values });
                }
                Err(e) => {
                    tracing::warn!(partition, error = %e, "atomic store: loading the partition's values failed");
                    return false;
                }
            }
        }
        for r in batch {
            self.apply(r, out);
        }
        true
    }

    fn apply(&mut self, r: &ConsumerRecord, out: &mut Vec<ProducerRecord>) {
        let state = self.partitions.get_mut(&r.partition).expect("every partition of the batch is loaded");
        state.next = r.offset + 1;
        let id = r.headers.last(COMMAND_ID).and_then(|h| h.value).map(|v| String::from_utf8_lossy(&v).into_owned());
        let key = r.key.as_deref().map(serde_json::from_slice::<String>);
        let (key, outcome) = match (key, r.value.as_deref().map(serde_json::from_slice::<Command>)) {
            (Some(Ok(key)), Some(Ok(command))) => {
                let old = state.values.get(&key);
                let outcome = execute(&self.functions, old, command);
                (Some(key), outcome)
            }
            (key, command) => {
                let reason = match (key.as_ref(), command) {
                    (None, _) => "the command has no key".to_owned(),
                    (Some(Err(e)), _) => format!("the key is not a JSON string: {e}"),
                    (_, None) => "the command has no value".to_owned(),
                    (_, Some(Err(e))) => format!("the command does not decode: {e}"),
                    (Some(Ok(_)), Some(Ok(_))) => unreachable!("matched above"),
                };
                tracing::warn!(partition = r.partition, offset = r.offset, "atomic store: command refused: {reason}");
                let key = key.and_then(Result::ok);
                let current = key.as_ref().and_then(|k| state.values.get(k)).cloned();
                (key, Outcome::Refused { reason, current })
            }
        };
        if let (Some(key), Outcome::Applied { old, new }) = (&key, &outcome) {
            if old != new {
                let mut record = ProducerRecord { topic: self.store.clone(), ..Default::default() }
                    .partition(r.partition)
                    .key(key_bytes(key));
                record.value = new.as_ref().map(|v| Bytes::from(v.to_string()));
                out.push(record);
                let update = Update {
                    key,
                    old: old.as_ref(),
                    new: new.as_ref(),
                    partition: r.partition,
                    command_offset: r.offset,
                };
                for callback in &self.callbacks {
                    callback(&update, out);
                }
                match new {
                    Some(v) => state.values.insert(key.clone(), v.clone()),
                    None => state.values.remove(key),
                };
            }
        }
        if let Some(id) = id {
            let reply = Reply { id: id.clone(), key, outcome };
            let value = serde_json::to_vec(&reply).expect("a reply serializes");
            out.push(ProducerRecord::new(self.replies.as_str(), value).key(id));
        }
    }
}

/// What `command` makes of the value `old`.
pub(crate) fn execute(functions: &HashMap<String, Function>, old: Option<&Value>, command: Command) -> Outcome {
    let refuse = |reason: String| Outcome::Refused { reason, current: old.cloned() };
    let new = match command {
        Command::Increment { by } => {
            let n = match old {
                None => 0,
                Some(v) => match v.as_i64() {
                    Some(n) => n,
                    None => return refuse(format!("increment: the value {v} is not an integer")),
                },
            };
            match n.checked_add(by) {
                Some(sum) => Some(Value::from(sum)),
                None => return refuse(format!("increment: {n} + {by} overflows")),
            }
        }
        Command::Set { value } => Some(value),
        Command::Delete => None,
        Command::CompareAndSet { expected, new } => {
            let expected = expected.filter(|v| !v.is_null());
            if expected.as_ref() != old {
                let show = |v: Option<&Value>| v.map_or_else(|| "no value".to_owned(), Value::to_string);
                return refuse(format!(
                    "compare_and_set: expected {}, the value is {}",
                    show(expected.as_ref()),
                    show(old)
                ));
            }
            new
        }
        Command::Call { function, arg } => match functions.get(&function) {
            None => return refuse(format!("no function named {function:?} is registered with the processor")),
            Some(f) => match f(old, &arg) {
                Ok(new) => new,
                Err(reason) => return refuse(format!("{function}: {reason}")),
            },
        },
    };
    // A JSON null is no value.
    Outcome::Applied { old: old.cloned(), new: new.filter(|v| !v.is_null()) }
}

type LoadRequest = (i32, mpsc::Sender<Result<HashMap<String, Value>>>);

/// Loads a partition's values from the store topic, on a thread of its own with its own
/// runtime: the processor's handler is synchronous and blocks while a load runs, which must not
/// stall the tasks the load itself needs (on a current-thread runtime it would).
pub(crate) struct Loader {
    requests: mpsc::Sender<LoadRequest>,
}

impl Loader {
    /// Starts the loader thread; it connects its clients and ends when the `Loader` is dropped.
    pub(crate) fn start(
        bootstrap: String,
        consumer: ConsumerConfig,
        store: String,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (requests, rx) = mpsc::channel::<LoadRequest>();
        std::thread::Builder::new().name("kvstore-atomic-loader".into()).spawn(move || {
            runtime.block_on(async move {
                let mut clients: Option<(Admin, Consumer)> = None;
                while let Ok((partition, reply)) = rx.recv() {
                    let load = async {
                        if clients.is_none() {
                            let admin = Admin::connect(ClientConfig::new(&bootstrap)).await?;
                            clients = Some((admin, Consumer::new(consumer.clone()).await?));
                        }
                        let (admin, consumer) = clients.as_ref().expect("connected above");
                        load(admin, consumer, &store, partition).await
                    };
                    let loaded = tokio::time::timeout(timeout, load).await.unwrap_or_else(|_| {
                        Err(Error::Timeout {
                            what: format!("loading partition {partition} of {store}"),
                            after: timeout,
                        })
                    });
                    let _ = reply.send(loaded);
                }
                if let Some((admin, consumer)) = clients {
                    admin.close().await;
                    let _ = consumer.close().await;
                }
            });
        })?;
        Ok(Self { requests })
    }

    /// The values of `partition`, blocking until they are loaded (or the load timeout passed).
    fn load(&self, partition: i32) -> Result<HashMap<String, Value>> {
        let (tx, rx) = mpsc::channel();
        let stopped = || Error::Stopped { topic: String::new(), reason: "the loader thread ended".into() };
        self.requests.send((partition, tx)).map_err(|_| stopped())?;
        let wait = || rx.recv().map_err(|_| stopped())?;
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            // Other tasks of this runtime go on meanwhile.
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }
}

/// Reads the store topic's `partition` from its start to its end, once no transaction is open
/// on it: the previous owner of the partition may have committed a transaction whose markers
/// have reached the consumer group (so its offsets are the ones this owner resumes from) but not
/// yet the store partition, and its values must be in.
async fn load(admin: &Admin, consumer: &Consumer, store: &str, partition: i32) -> Result<HashMap<String, Value>> {
    let tp = [(store, partition)];
    let end = loop {
        let stable = admin.list_offsets_isolated(&tp, OffsetSpec::Latest, true).await?;
        let written = admin.list_offsets_isolated(&tp, OffsetSpec::Latest, false).await?;
        match (stable.first(), written.first()) {
            (Some(s), Some(w)) if s.offset == w.offset => break s.offset,
            // No event tells when the markers are written: look again shortly.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let start = admin.list_offsets_isolated(&tp, OffsetSpec::Earliest, true).await?;
    let mut values = HashMap::new();
    if start.first().is_none_or(|s| s.offset >= end) {
        return Ok(values);
    }
    let tp = TopicPartition::new(store, partition);
    consumer.assign([tp.clone()]);
    consumer.seek_to_beginning(std::slice::from_ref(&tp))?;
    while consumer.position(&tp).await? < end {
        for r in consumer.poll(Duration::from_millis(200)).await? {
            if r.partition != partition || r.offset >= end {
                continue;
            }
            let Some(key) = r.key.as_deref().and_then(|k| serde_json::from_slice::<String>(k).ok()) else {
                tracing::warn!(partition, offset = r.offset, "atomic store: a store record's key is not a JSON string");
                continue;
            };
            match r.value.as_deref().map(serde_json::from_slice::<Value>) {
                Some(Ok(v)) if !v.is_null() => {
                    values.insert(key, v);
                }
                None | Some(Ok(_)) => {
                    values.remove(&key);
                }
                Some(Err(e)) => {
                    // Not written by a processor: the key has no usable value.
                    tracing::warn!(
                        partition,
                        offset = r.offset,
                        "atomic store: the value of {key:?} does not decode: {e}"
                    );
                    values.remove(&key);
                }
            }
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn functions() -> HashMap<String, Function> {
        let max: Function = Arc::new(|old, arg| {
            let (old, arg) = (old.and_then(Value::as_i64).unwrap_or(i64::MIN), arg.as_i64().ok_or("not an integer")?);
            Ok(Some(json!(old.max(arg))))
        });
        HashMap::from([("max".to_owned(), max)])
    }

    #[test]
    fn commands_change_values_or_are_refused_with_the_value() {
        let f = functions();
        let applied = |old: Option<Value>, new: Option<Value>| Outcome::Applied { old, new };
        assert_eq!(execute(&f, None, Command::increment(2)), applied(None, Some(json!(2))));
        assert_eq!(execute(&f, Some(&json!(2)), Command::increment(-3)), applied(Some(json!(2)), Some(json!(-1))));
        assert!(matches!(execute(&f, Some(&json!("x")), Command::increment(1)), Outcome::Refused { .. }));
        assert!(matches!(execute(&f, Some(&json!(i64::MAX)), Command::increment(1)), Outcome::Refused { .. }));
        assert_eq!(execute(&f, Some(&json!(1)), Command::set(json!(null))), applied(Some(json!(1)), None));
        assert_eq!(execute(&f, Some(&json!(1)), Command::Delete), applied(Some(json!(1)), None));

        let cas = Command::compare_and_set(Some(json!(1)), Some(json!(2)));
        assert_eq!(execute(&f, Some(&json!(1)), cas.clone()), applied(Some(json!(1)), Some(json!(2))));
        match execute(&f, Some(&json!(3)), cas) {
            Outcome::Refused { reason, current } => {
                assert_eq!(current, Some(json!(3)));
                assert!(reason.contains("expected 1, the value is 3"), "{reason}");
            }
            other => panic!("a stale expected value was applied: {other:?}"),
        }
        assert_eq!(execute(&f, None, Command::compare_and_set(None, Some(json!(0)))), applied(None, Some(json!(0))));

        assert_eq!(execute(&f, Some(&json!(5)), Command::call("max", 3)), applied(Some(json!(5)), Some(json!(5))));
        assert_eq!(execute(&f, Some(&json!(5)), Command::call("max", 9)), applied(Some(json!(5)), Some(json!(9))));
        match execute(&f, None, Command::call("min", 1)) {
            Outcome::Refused { reason, .. } => assert!(reason.contains("no function named \"min\""), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(execute(&f, None, Command::call("max", "x")), Outcome::Refused { .. }));
    }

    #[test]
    fn commands_and_replies_have_a_stable_json_form() {
        let text = serde_json::to_string(&Command::increment(1)).unwrap();
        assert_eq!(text, r#"{"op":"increment","by":1}"#);
        let cas: Command = serde_json::from_str(r#"{"op":"compare_and_set","expected":null,"new":3}"#).unwrap();
        assert_eq!(cas, Command::compare_and_set(None, Some(json!(3))));
        let reply = Reply {
            id: "a-1".into(),
            key: Some("k".into()),
            outcome: Outcome::Applied { old: None, new: Some(json!(1)) },
        };
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(text, r#"{"id":"a-1","key":"k","outcome":{"applied":{"old":null,"new":1}}}"#);
        assert_eq!(serde_json::from_str::<Reply>(&text).unwrap(), reply);
    }
}
