//! The atomic store (pattern 6) against a real broker: commands applied exactly once while the
//! processor crashes, replies to waiting callers, compare-and-set, custom functions.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_wire::client::{Admin, NewTopic, OffsetSpec};
use kafka_wire::{ClientConfig, ProducerRecord};
use kafka_wire_tests::{bootstrap, read_committed, unique_topic, wait_until};
use kvstore::{AtomicConfig, AtomicKvStore, AtomicProcessor, Command, Error, KvConfig, KvStore, Outcome, Stop};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

const PRODUCERS: usize = 20;
const COMMANDS: usize = 10_000;
const KEYS: usize = 50;
const PER_KEY: i64 = (COMMANDS / KEYS) as i64;
/// How long any one wait of these tests may take.
const DEADLINE: Duration = Duration::from_secs(120);

/// The store's settings for the tests: a killed processor's member leaves the group after the
/// session timeout, so it is short, and the next instance soon gets the partitions; small
/// batches make many transactions, so that kills land inside them.
fn config(bs: &str, commands: &str, partitions: i32) -> AtomicConfig {
    AtomicConfig::new(bs, commands)
        .partitions(partitions)
        .consumer_property("session.timeout.ms", "2000")
        .consumer_property("heartbeat.interval.ms", "300")
        .consumer_property("max.poll.records", "50")
}

async fn create_topic(bs: &str, topic: &str, partitions: i32) {
    let admin = Admin::connect(ClientConfig::new(bs)).await.unwrap();
    admin.create_topics(&[NewTopic::new(topic, partitions, 1)], false).await.unwrap();
    admin.close().await;
}

/// Every record of `topic` that is committed, read read_committed to its end: (key, JSON value).
async fn committed_records(topic: &str) -> Vec<(String, Value)> {
    read_committed(topic)
        .await
        .into_iter()
        .map(|r| {
            let key = String::from_utf8(r.key.expect("a key").to_vec()).expect("a UTF-8 key");
            (key, serde_json::from_slice(&r.value.expect("a value")).expect("a JSON value"))
        })
        .collect()
}

/// A processor instance on its own task.
struct Instance {
    task: JoinHandle<kvstore::Result<()>>,
    stop: Stop,
}

impl Instance {
    fn start(processor: AtomicProcessor) -> Self {
        let stop = Stop::new();
        let signal = stop.clone();
        Self { task: tokio::spawn(async move { processor.run(&signal).await }), stop }
    }

    /// A crash: the task is aborted wherever it is (no abort of its transaction, no leaving
    /// the group, no close).
    async fn kill(self) {
        self.task.abort();
        match tokio::time::timeout(DEADLINE, self.task).await.expect("the killed processor's task ends") {
            Err(e) if e.is_cancelled() => {}
            other => panic!("the processor ended before it was killed: {other:?}"),
        }
    }

    async fn stop(self) {
        self.stop.trigger();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the processor stops")
            .expect("the processor's task")
            .expect("the processor ran without error");
    }
}

/// The counter processor, instance `n` of the group: when a key's count reaches [`PER_KEY`], a
/// completion event (the key, the count) goes to `completions`, in the transaction of the
/// increment.
fn counter(config: &AtomicConfig, group: &str, n: usize, completions: &str) -> AtomicProcessor {
    let completions = completions.to_owned();
    AtomicProcessor::new(config.clone(), group, format!("{group}-tx-{n}")).on_update(move |update, out| {
        if update.new == Some(&json!(PER_KEY)) {
            out.push(ProducerRecord::new(completions.as_str(), json!(PER_KEY).to_string()).key(update.key.to_owned()));
        }
    })
}

/// 20 producers send 10 000 increments to 50 keys while the processor is killed and restarted
/// four times (wherever it is: often inside a transaction): every count ends exact, and each
/// key's completion event is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_are_applied_exactly_once_while_the_processor_crashes() {
    let bs = bootstrap();
    let commands = unique_topic("atomic-commands");
    let completions = unique_topic("atomic-completions");
    let group = unique_topic("atomic-group");
    let config = config(&bs, &commands, 4);
    create_topic(&bs, &completions, 1).await;
    // The store topic, co-partitioned with the commands; this store watches the counts.
    let counts: KvStore<String, i64> =
        KvStore::open(KvConfig::new(&bs, config.store()).partitions(4)).await.expect("the store topic");

    let mut instance = Instance::start(counter(&config, &group, 0, &completions));
    let producers: Vec<JoinHandle<()>> = (0..PRODUCERS)
        .map(|p| {
            let config = config.clone();
            tokio::spawn(async move {
                let store = AtomicKvStore::connect(&config).await.expect("a caller connects");
                for i in 0..COMMANDS / PRODUCERS {
                    let key = format!("key-{:02}", (p * COMMANDS / PRODUCERS + i) % KEYS);
                    store.send(&key, &Command::increment(1)).await.expect("the broker acknowledges the command");
                }
                store.close().await.unwrap();
            })
        })
        .collect();

    let total = || counts.iter().map(|entries| entries.iter().map(|(_, n)| n).sum::<i64>()).unwrap_or(0);
    for threshold in [1_000, 3_500, 6_000, 8_500] {
        wait_until(&format!("the counts reach {threshold} in all"), DEADLINE, || total() >= threshold).await;
        instance.kill().await;
        instance = Instance::start(counter(&config, &group, 0, &completions));
    }
    for p in producers {
        tokio::time::timeout(DEADLINE, p).await.expect("a producer finishes").unwrap();
    }
    let done = || counts.iter().is_ok_and(|e| e.len() == KEYS && e.iter().all(|(_, n)| *n >= PER_KEY));
    wait_until("every key reaches its count", DEADLINE, done).await;
    wait_until_consumed(&bs, &group, &commands).await;
    instance.stop().await;
    assert_exact(&bs, config.store(), &completions).await;
}

/// Waits until the group committed the end of every commands partition: nothing is left that
/// could add to a count.
async fn wait_until_consumed(bs: &str, group: &str, commands: &str) {
    let admin = Admin::connect(ClientConfig::new(bs)).await.unwrap();
    let partitions: Vec<(&str, i32)> = (0..4).map(|p| (commands, p)).collect();
    let ends = admin.list_offsets_isolated(&partitions, OffsetSpec::Latest, false).await.unwrap();
    let consumed = async {
        loop {
            let committed = admin.list_group_offsets(group, Some(&[commands])).await.unwrap();
            if ends.iter().all(|e| committed.iter().any(|c| c.partition == e.partition && c.offset == e.offset)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(DEADLINE, consumed).await.expect("the group commits the end of every commands partition");
    admin.close().await;
}

/// A fresh store replays the store topic: every count is exactly [`PER_KEY`]; and each key's
/// completion event is in `completions` once.
async fn assert_exact(bs: &str, store: &str, completions: &str) {
    let fresh: KvStore<String, i64> = KvStore::open(KvConfig::new(bs, store)).await.unwrap();
    let entries: BTreeMap<String, i64> = fresh.iter().unwrap().into_iter().collect();
    assert_eq!(entries.len(), KEYS);
    let wrong: Vec<_> = entries.iter().filter(|(_, n)| **n != PER_KEY).collect();
    assert!(wrong.is_empty(), "counts that are not {PER_KEY}: {wrong:?}");

    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    for (key, count) in committed_records(completions).await {
        assert_eq!(count, json!(PER_KEY));
        *events.entry(key).or_default() += 1;
    }
    assert_eq!(events.len(), KEYS, "keys with a completion event");
    let repeated: Vec<_> = events.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "completion events written more than once: {repeated:?}");
}

/// Two processors share the partitions; one of them is killed (inside its work), restarted,
/// killed again: partitions move between them, and the survivor, which held every partition
/// while the other was down, gets back partitions that the other advanced meanwhile. Its
/// values of them are stale: it must load them again, not apply commands to them. The
/// commands come in five phases of 2 000 (20 producers), with the kills between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_are_applied_exactly_once_while_partitions_move_between_two_processors() {
    let bs = bootstrap();
    let commands = unique_topic("atomic-moves");
    let completions = unique_topic("atomic-moves-completions");
    let group = unique_topic("atomic-moves-group");
    let config = config(&bs, &commands, 4);
    create_topic(&bs, &completions, 1).await;
    let counts: KvStore<String, i64> =
        KvStore::open(KvConfig::new(&bs, config.store()).partitions(4)).await.expect("the store topic");
    let total = || counts.iter().map(|entries| entries.iter().map(|(_, n)| n).sum::<i64>()).unwrap_or(0);

    let survivor = Instance::start(counter(&config, &group, 1, &completions));
    let mut other = Some(Instance::start(counter(&config, &group, 0, &completions)));
    let mut callers = Vec::new();
    for _ in 0..PRODUCERS {
        callers.push(std::sync::Arc::new(AtomicKvStore::connect(&config).await.expect("a caller connects")));
    }
    const PHASES: usize = 5;
    let mut sent = 0;
    for phase in 0..PHASES {
        let senders: Vec<JoinHandle<()>> = callers
            .iter()
            .enumerate()
            .map(|(p, caller)| {
                let caller = caller.clone();
                tokio::spawn(async move {
                    for i in 0..COMMANDS / PHASES / PRODUCERS {
                        let key = format!("key-{:02}", (p * COMMANDS / PHASES / PRODUCERS + i) % KEYS);
                        caller.send(&key, &Command::increment(1)).await.expect("the broker acknowledges the command");
                    }
                })
            })
            .collect();
        let phase_start = sent;
        sent += COMMANDS / PHASES;
        if phase % 2 == 1 {
            // Killed once it is at work on this phase; the survivor takes its partitions over.
            let at_work = phase_start as i64 + 300;
            wait_until(&format!("the counts reach {at_work}"), DEADLINE, || total() >= at_work).await;
            other.take().expect("the other processor runs").kill().await;
        } else if other.is_none() {
            other = Some(Instance::start(counter(&config, &group, 0, &completions)));
        }
        for s in senders {
            tokio::time::timeout(DEADLINE, s).await.expect("a producer finishes").unwrap();
        }
        wait_until(&format!("the counts reach {sent} (phase {phase})"), DEADLINE, || total() >= sent as i64).await;
    }
    wait_until_consumed(&bs, &group, &commands).await;
    survivor.stop().await;
    if let Some(other) = other {
        other.stop().await;
    }
    for caller in callers {
        std::sync::Arc::into_inner(caller).expect("the senders are done").close().await.unwrap();
    }
    assert_exact(&bs, config.store(), &completions).await;
}

/// Callers await their commands' outcomes: applied with the old and new value, or refused
/// (a stale compare-and-set, an increment of a non-integer, an unknown function) with the
/// current value; a custom function registered with the processor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_await_outcomes_of_set_compare_and_set_increment_and_functions() {
    let bs = bootstrap();
    let commands = unique_topic("atomic-await");
    let config = config(&bs, &commands, 2);
    let processor = AtomicProcessor::new(config.clone(), unique_topic("atomic-await-group"), unique_topic("atomic-tx"))
        .function("append", |old, arg| {
            let mut list = match old {
                None => Vec::new(),
                Some(Value::Array(items)) => items.clone(),
                Some(v) => return Err(format!("{v} is not a list")),
            };
            list.push(arg.clone());
            Ok(Some(Value::Array(list)))
        });
    let instance = Instance::start(processor);
    let store = AtomicKvStore::connect(&config).await.unwrap();
    let applied = |old: Option<Value>, new: Option<Value>| Outcome::Applied { old, new };

    assert_eq!(store.execute("a", &Command::set(5)).await.unwrap(), applied(None, Some(json!(5))));
    match store.execute("a", &Command::compare_and_set(Some(json!(4)), Some(json!(6)))).await.unwrap() {
        Outcome::Refused { reason, current } => {
            assert_eq!(current, Some(json!(5)));
            assert!(reason.contains("expected 4"), "{reason}");
        }
        other => panic!("a stale compare-and-set was applied: {other:?}"),
    }
    let cas = Command::compare_and_set(Some(json!(5)), Some(json!(6)));
    assert_eq!(store.execute("a", &cas).await.unwrap(), applied(Some(json!(5)), Some(json!(6))));
    assert_eq!(store.execute("a", &Command::increment(1)).await.unwrap(), applied(Some(json!(6)), Some(json!(7))));

    assert_eq!(store.execute("list", &Command::call("append", "x")).await.unwrap(), applied(None, Some(json!(["x"]))));
    assert_eq!(
        store.execute("list", &Command::call("append", "y")).await.unwrap(),
        applied(Some(json!(["x"])), Some(json!(["x", "y"])))
    );
    for (command, cause) in [(Command::increment(1), "not an integer"), (Command::call("prepend", "w"), "no function")]
    {
        match store.execute("list", &command).await.unwrap() {
            Outcome::Refused { reason, current } => {
                assert_eq!(current, Some(json!(["x", "y"])));
                assert!(reason.contains(cause), "{reason}");
            }
            other => panic!("{command:?} was applied: {other:?}"),
        }
    }
    assert_eq!(store.execute("a", &Command::Delete).await.unwrap(), applied(Some(json!(7)), None));

    // The store topic holds the values, for any KvStore reader.
    let values: KvStore<String, Value> = KvStore::open(KvConfig::new(&bs, config.store())).await.unwrap();
    assert_eq!(values.iter().unwrap(), [("list".to_owned(), json!(["x", "y"]))]);
    store.close().await.unwrap();
    instance.stop().await;
}

/// A commands topic and a store topic with different partition counts are refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_topic_not_co_partitioned_with_the_commands_is_refused() {
    let bs = bootstrap();
    let commands = unique_topic("atomic-copart");
    let config = AtomicConfig::new(&bs, &commands).partitions(2);
    KvStore::<String, Value>::open(KvConfig::new(&bs, config.store()).partitions(3)).await.unwrap();
    let processor = AtomicProcessor::new(config, unique_topic("atomic-copart-group"), unique_topic("atomic-tx"));
    match tokio::time::timeout(DEADLINE, processor.run(&Stop::new())).await.expect("the processor returns") {
        Err(Error::NotCoPartitioned { commands_partitions: 2, store_partitions: 3, .. }) => {}
        other => panic!("expected NotCoPartitioned, got {other:?}"),
    }
}

/// A transaction that aborts (here: an update callback's record is too large to send, once)
/// leaves nothing of its commands in the values: they are applied again from the values
/// committed with the offsets they are consumed from, and the caller gets the outcome of the
/// committed run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_an_aborted_transaction_leaves_no_effect_in_the_values() {
    let bs = bootstrap();
    let commands = unique_topic("atomic-abort");
    let events = unique_topic("atomic-abort-events");
    create_topic(&bs, &events, 1).await;
    let config = config(&bs, &commands, 1);
    let failed_once = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = failed_once.clone();
    let processor = AtomicProcessor::new(config.clone(), unique_topic("atomic-abort-group"), unique_topic("atomic-tx"))
        .on_update(move |update, out| {
            if update.new == Some(&json!(2)) && !failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                // Larger than max.request.size: the transaction cannot commit.
                out.push(ProducerRecord::new(events.as_str(), vec![b'x'; 2 << 20]));
            }
        });
    let instance = Instance::start(processor);
    let store = AtomicKvStore::connect(&config).await.unwrap();
    for n in 1..=5 {
        let outcome = store.execute("k", &Command::increment(1)).await.unwrap();
        assert_eq!(outcome, Outcome::Applied { old: Some(json!(n - 1)).filter(|_| n > 1), new: Some(json!(n)) });
    }
    assert!(failed_once.load(std::sync::atomic::Ordering::SeqCst), "the transaction of the second increment failed");
    let values: KvStore<String, i64> = KvStore::open(KvConfig::new(&bs, config.store())).await.unwrap();
    assert_eq!(values.get("k").unwrap(), Some(5));
    store.close().await.unwrap();
    instance.stop().await;
}

/// Callers and processors that start together on new topics all create them (one succeeds, the
/// others find them existing) and all start: none fails because the topic it was told exists
/// is not in the brokers' metadata yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_callers_starting_together_on_new_topics_all_connect() {
    let bs = bootstrap();
    for _ in 0..10 {
        let config = AtomicConfig::new(&bs, unique_topic("atomic-together")).partitions(2);
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let config = config.clone();
                tokio::spawn(async move { AtomicKvStore::connect(&config).await.map(|_| ()) })
            })
            .collect();
        for caller in callers {
            let connected = tokio::time::timeout(DEADLINE, caller).await.expect("a caller connects in time").unwrap();
            connected.expect("a caller starting with others on new topics connects");
        }
    }
}
