//! Log truncation after an unclean leader election (KIP-320 / KIP-595), against a scripted
//! in-process broker: partition 0 holds records 0..100 written under leader epoch 1; the
//! consumer reads them all; then a new leader takes over at epoch 2 with its log ending at 80,
//! and records 80..120 are written under epoch 2 with other values.
//!
//! With `auto.offset.reset=earliest` the consumer must find the divergence, go back to 80 and
//! hand out exactly the epoch-2 records 80..119; with `none`, poll must fail with the divergence
//! (partition and offset 80) until the application seeks. Each scenario runs against three
//! brokers: one that answers Fetch v12+ with a diverging epoch but does not offer
//! OffsetForLeaderEpoch, one that offers OffsetForLeaderEpoch but only Fetch v11 (no divergence
//! check in Fetch), and a current one with both. A second truncation below the divergence point
//! before the application seeks is found with `Consumer::seek_with_epoch` and the error's epoch.

#[path = "support/scripted_broker.rs"]
mod scripted_broker;

use std::time::Duration;

use kafka_wire::client::{Consumer, ConsumerConfig, ConsumerRecord, Error, OffsetReset};
use kafka_wire::codec::ErrorCode;
use kafka_wire::proto::producer::TopicPartition;
use scripted_broker::{values, FetchAnswer, Options, ScriptedBroker, SeenFetch};

const TOPIC: &str = "truncated";
/// The bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(20);

fn tp() -> TopicPartition {
    TopicPartition::new(TOPIC, 0)
}

/// Which ways the broker offers to see a divergence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Broker {
    /// Fetch v12+ (diverging epoch in the answer), no OffsetForLeaderEpoch.
    FetchDivergenceOnly,
    /// OffsetForLeaderEpoch, Fetch only up to v11.
    EpochQueryOnly,
    /// Both, as a current broker.
    Current,
}

impl Broker {
    fn options(self) -> Options {
        match self {
            Self::FetchDivergenceOnly => Options { offset_for_leader_epoch: false, ..Options::default() },
            Self::EpochQueryOnly => Options { fetch_max_version: 11, offset_for_leader_epoch: true },
            Self::Current => Options::default(),
        }
    }

    fn fetch_has_last_fetched_epoch(self) -> bool {
        self != Self::EpochQueryOnly
    }
}

async fn consumer(broker: &ScriptedBroker, reset: OffsetReset) -> Consumer {
    let mut config = ConsumerConfig::new(broker.addr()).auto_offset_reset(reset);
    config.fetch_max_wait = Duration::from_millis(200);
    tokio::time::timeout(WAIT, Consumer::new(config)).await.expect("consumer connects in time").expect("consumer")
}

/// Polls until `done` says the records so far are enough; panics past `WAIT` or on an error.
async fn poll_until(consumer: &Consumer, done: impl Fn(&[ConsumerRecord]) -> bool) -> Vec<ConsumerRecord> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while !done(&got) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "timed out polling; got offsets {:?}", offsets(&got));
        let records = tokio::time::timeout(left, consumer.poll(Duration::from_millis(200)))
            .await
            .unwrap_or_else(|_| panic!("poll hung; got offsets {:?}", offsets(&got)))
            .unwrap_or_else(|e| panic!("poll failed: {e}; got offsets {:?}", offsets(&got)));
        got.extend(records);
    }
    got
}

fn offsets(records: &[ConsumerRecord]) -> Vec<i64> {
    records.iter().map(|r| r.offset).collect()
}

fn value(r: &ConsumerRecord) -> String {
    String::from_utf8(r.value.as_deref().unwrap_or_default().to_vec()).expect("utf-8 value")
}

async fn position(consumer: &Consumer) -> Result<i64, Error> {
    tokio::time::timeout(WAIT, consumer.position(&tp())).await.expect("position in time")
}

/// Writes 0..100 under epoch 1 and has the consumer read them all; returns them.
async fn read_epoch_one(broker: &ScriptedBroker, consumer: &Consumer) -> Vec<ConsumerRecord> {
    broker.set_initial_epoch(0, 1);
    broker.append(0, &values("e1", 0, 100));
    let got = poll_until(consumer, |got| got.len() >= 100).await;
    assert_eq!(offsets(&got), (0..100).collect::<Vec<_>>());
    assert!(got.iter().all(|r| value(r) == format!("e1-{}", r.offset) && r.leader_epoch == 1));
    assert_eq!(position(consumer).await.expect("position"), 100);
    got
}

/// The unclean election: the log ends at 80 under epoch 2, then 80..120 are written under it.
/// Returns how many Fetch partitions the broker had answered before it.
async fn fail_over(broker: &ScriptedBroker, mode: Broker) -> usize {
    // The consumer keeps a Fetch at 100 waiting: it sent the epochs it knows.
    let waiting = broker
        .wait_for_fetch(0, WAIT, |f| f.fetch_offset == 100)
        .await
        .expect("the consumer fetches from 100 after reading 0..100");
    assert_eq!(waiting.current_leader_epoch, 1, "{waiting:?}");
    if mode.fetch_has_last_fetched_epoch() {
        assert_eq!(waiting.last_fetched_epoch, 1, "{waiting:?}");
    }
    let mark = broker.fetches().len();
    assert_eq!(broker.elect_unclean_leader(0, 80), 2);
    broker.append(0, &values("e2", 80, 40));
    mark
}

/// Checks the Fetch partitions answered after the election, up to `until`: fenced while the
/// consumer knew only epoch 1; with epoch 2, the divergence check carried (epoch 1 at 100 and
/// at 80, epoch 2 past 80); no records but from 80 under epoch 2.
fn check_fetches_after_election(fetches: &[SeenFetch], mode: Broker) {
    for f in fetches {
        match f.current_leader_epoch {
            1 => assert_eq!(f.answer, FetchAnswer::Error(ErrorCode::FENCED_LEADER_EPOCH), "{f:?}"),
            2 => {
                if mode.fetch_has_last_fetched_epoch() {
                    // At 100 (before the divergence is known) and at 80 (the end of epoch 1 in
                    // the new leader's log) the last epoch fetched is 1; at 120, past the
                    // records of epoch 2, it is 2. 80..120 are written at once, so there is no
                    // other fetch offset.
                    let expected = match f.fetch_offset {
                        80 | 100 => 1,
                        120 => 2,
                        other => panic!("Fetch from {other} under epoch 2: {f:?}"),
                    };
                    assert_eq!(f.last_fetched_epoch, expected, "last fetched epoch of {f:?}");
                }
                if let FetchAnswer::Records { from, .. } = f.answer {
                    assert!(f.fetch_offset >= 80, "{f:?}");
                    assert!(from >= 80, "{f:?}");
                }
                // Nothing at 100 under epoch 2 was ever served: the divergence was found first.
                assert!(!(f.fetch_offset == 100 && matches!(f.answer, FetchAnswer::Records { .. })), "{f:?}");
            }
            other => panic!("Fetch with current leader epoch {other}: {f:?}"),
        }
    }
    let first_records = fetches.iter().find(|f| matches!(f.answer, FetchAnswer::Records { .. }));
    if let Some(f) = first_records {
        assert_eq!(f.fetch_offset, 80, "the first records after the election are fetched from 80: {f:?}");
        if mode.fetch_has_last_fetched_epoch() {
            assert_eq!(f.last_fetched_epoch, 1, "{f:?}");
        }
    }
}

/// How the divergence was found, per broker: the diverging epoch in a Fetch answer, or the
/// OffsetForLeaderEpoch answer for epoch 1.
fn check_detection(broker: &ScriptedBroker, fetches: &[SeenFetch], mode: Broker) {
    let diverging: Vec<&SeenFetch> =
        fetches.iter().filter(|f| matches!(f.answer, FetchAnswer::Diverging { .. })).collect();
    let queries = broker.epoch_queries();
    match mode {
        Broker::FetchDivergenceOnly => {
            assert!(queries.is_empty(), "{queries:?}");
            let f = diverging.first().unwrap_or_else(|| panic!("no diverging epoch answered: {fetches:#?}"));
            assert_eq!((f.fetch_offset, f.current_leader_epoch, f.last_fetched_epoch), (100, 2, 1), "{f:?}");
            assert_eq!(f.answer, FetchAnswer::Diverging { epoch: 1, end_offset: 80 });
        }
        Broker::EpochQueryOnly | Broker::Current => {
            assert!(diverging.is_empty(), "the position was validated before fetching: {diverging:?}");
            let q = queries
                .iter()
                .find(|q| q.answer.is_ok())
                .unwrap_or_else(|| panic!("no OffsetForLeaderEpoch answered: {queries:?}"));
            assert_eq!((q.partition, q.current_leader_epoch, q.leader_epoch), (0, 2, 1), "{q:?}");
            assert_eq!(q.answer, Ok((1, 80)));
            for q in &queries {
                assert_eq!(q.leader_epoch, 1, "{q:?}");
            }
        }
    }
    assert!(broker.unsupported_requests().is_empty(), "{:?}", broker.unsupported_requests());
}

async fn truncation_resets_to_divergence(mode: Broker) {
    let broker = ScriptedBroker::start(TOPIC, 1, mode.options()).await;
    let consumer = consumer(&broker, OffsetReset::Earliest).await;
    consumer.assign([tp()]);
    read_epoch_one(&broker, &consumer).await;
    let mark = fail_over(&broker, mode).await;

    // The consumer goes back to 80 by itself: it fetches from there (with epoch 1, the end of
    // the log kept) before anything is polled, and its position says so.
    let refetch = broker
        .wait_for_fetch(mark, WAIT, |f| f.fetch_offset == 80 && f.current_leader_epoch == 2)
        .await
        .unwrap_or_else(|| panic!("no Fetch from 80 after the election: {:#?}", &broker.fetches()[mark..]));
    if mode.fetch_has_last_fetched_epoch() {
        assert_eq!(refetch.last_fetched_epoch, 1, "{refetch:?}");
    }
    assert_eq!(position(&consumer).await.expect("position after the truncation"), 80);

    let got = poll_until(&consumer, |got| got.iter().any(|r| r.offset >= 119)).await;
    assert_eq!(offsets(&got), (80..120).collect::<Vec<_>>(), "exactly the new leader's records 80..119");
    for r in &got {
        assert_eq!(value(r), format!("e2-{}", r.offset));
        assert_eq!(r.leader_epoch, 2);
    }
    // Nothing else arrives (the log ends at 120).
    let more = tokio::time::timeout(WAIT, consumer.poll(Duration::from_millis(300)))
        .await
        .expect("poll in time")
        .expect("poll");
    assert!(more.is_empty(), "unexpected records {:?}", offsets(&more));
    assert_eq!(position(&consumer).await.expect("position"), 120);

    let fetches = broker.fetches()[mark..].to_vec();
    check_fetches_after_election(&fetches, mode);
    check_detection(&broker, &fetches, mode);
    assert!(
        fetches.iter().any(|f| f.fetch_offset > 80 && f.current_leader_epoch == 2),
        "the consumer fetched past 80: {fetches:#?}"
    );
    consumer.close().await.expect("close");
}

async fn truncation_without_reset_fails_poll(mode: Broker) {
    let broker = ScriptedBroker::start(TOPIC, 1, mode.options()).await;
    let consumer = consumer(&broker, OffsetReset::None).await;
    // With reset none the first position comes from the application's seek (made before the
    // driver can look for one: nothing awaits in between).
    consumer.assign([tp()]);
    consumer.seek(&tp(), 0).expect("seek");
    read_epoch_one(&broker, &consumer).await;
    let mark = fail_over(&broker, mode).await;

    // Poll fails with the divergence, and hands out nothing meanwhile.
    let deadline = tokio::time::Instant::now() + WAIT;
    let error = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "poll never reported the truncation");
        match tokio::time::timeout(left, consumer.poll(Duration::from_millis(200))).await.expect("poll in time") {
            Ok(records) => assert!(records.is_empty(), "records handed out past a truncation: {:?}", offsets(&records)),
            Err(e) => break e,
        }
    };
    let check = |e: &Error| match e {
        Error::LogTruncation { topic, partition, position, divergent_offset, divergent_epoch } => {
            assert_eq!((topic.as_str(), *partition), ("truncated", 0), "names the partition: {e}");
            assert_eq!(*divergent_offset, Some(80), "names the divergence offset: {e}");
            assert_eq!(*divergent_epoch, Some(1), "names the epoch both logs agree on up to there: {e}");
            assert_eq!(*position, 100, "names the position: {e}");
        }
        other => panic!("not the truncation error: {other:?}"),
    };
    check(&error);
    assert!(error.to_string().contains("truncated-0") && error.to_string().contains("80"), "{error}");
    // It stays until the application acts, in poll and position alike.
    check(
        &tokio::time::timeout(WAIT, consumer.poll(Duration::from_millis(50)))
            .await
            .expect("poll in time")
            .expect_err("still failing"),
    );
    check(&position(&consumer).await.expect_err("position fails too"));

    let before_seek = broker.fetches()[mark..].to_vec();
    assert!(
        !before_seek.iter().any(|f| matches!(f.answer, FetchAnswer::Records { .. })),
        "nothing is fetched past a truncation: {before_seek:#?}"
    );
    check_fetches_after_election(&before_seek, mode);
    check_detection(&broker, &before_seek, mode);

    // Seeking to the divergence goes on with the new leader's records.
    consumer.seek(&tp(), 80).expect("seek");
    let got = poll_until(&consumer, |got| got.iter().any(|r| r.offset >= 119)).await;
    assert_eq!(offsets(&got), (80..120).collect::<Vec<_>>());
    assert!(got.iter().all(|r| value(r) == format!("e2-{}", r.offset)));
    consumer.close().await.expect("close");
}

#[tokio::test]
async fn truncation_detected_from_fetch_diverging_epoch_resets_to_divergence() {
    truncation_resets_to_divergence(Broker::FetchDivergenceOnly).await;
}

#[tokio::test]
async fn truncation_detected_with_offset_for_leader_epoch_resets_to_divergence() {
    truncation_resets_to_divergence(Broker::EpochQueryOnly).await;
}

#[tokio::test]
async fn truncation_on_current_broker_resets_to_divergence() {
    truncation_resets_to_divergence(Broker::Current).await;
}

#[tokio::test]
async fn truncation_from_fetch_diverging_epoch_with_reset_none_fails_poll() {
    truncation_without_reset_fails_poll(Broker::FetchDivergenceOnly).await;
}

#[tokio::test]
async fn truncation_from_offset_for_leader_epoch_with_reset_none_fails_poll() {
    truncation_without_reset_fails_poll(Broker::EpochQueryOnly).await;
}

#[tokio::test]
async fn truncation_on_current_broker_with_reset_none_fails_poll() {
    truncation_without_reset_fails_poll(Broker::Current).await;
}

/// Polls until an error, which it returns; fails if records come or `WAIT` passes.
async fn poll_error(consumer: &Consumer) -> Error {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "poll never reported an error");
        match tokio::time::timeout(left, consumer.poll(Duration::from_millis(200))).await.expect("poll in time") {
            Ok(records) => assert!(records.is_empty(), "records handed out past a truncation: {:?}", offsets(&records)),
            Err(e) => return e,
        }
    }
}

/// The error's divergence point, with its epoch.
fn divergence(e: &Error) -> (i64, Option<i64>, Option<i32>) {
    match e {
        Error::LogTruncation { position, divergent_offset, divergent_epoch, .. } => {
            (*position, *divergent_offset, *divergent_epoch)
        }
        other => panic!("not the truncation error: {other:?}"),
    }
}

/// With `auto.offset.reset=none` the truncation error names the divergence point and its epoch;
/// if the log is truncated again below that point before the application seeks (a second
/// unclean leader change), a plain seek there would read the newest leader's records from 80
/// on and skip 70..80. `Consumer::seek_with_epoch` with the error's epoch has the Fetch check
/// the log again: the partition stops at the new divergence point (70), and seeking there
/// reads the newest leader's records from 70 on.
async fn second_truncation_before_the_seek_is_detected(mode: Broker) {
    let broker = ScriptedBroker::start(TOPIC, 1, mode.options()).await;
    let consumer = consumer(&broker, OffsetReset::None).await;
    consumer.assign([tp()]);
    consumer.seek(&tp(), 0).expect("seek");
    read_epoch_one(&broker, &consumer).await;
    fail_over(&broker, mode).await;
    let (position, offset, epoch) = divergence(&poll_error(&consumer).await);
    assert_eq!((position, offset, epoch), (100, Some(80), Some(1)));

    // Before the application seeks, another unclean change: the log ends at 70 (epoch 3).
    assert_eq!(broker.elect_unclean_leader(0, 70), 3);
    broker.append(0, &values("e3", 70, 30));
    consumer.seek_with_epoch(&tp(), 80, epoch).expect("seek with epoch");
    let (position, offset, epoch) = divergence(&poll_error(&consumer).await);
    assert_eq!((position, offset, epoch), (80, Some(70), Some(1)), "stops at the new divergence point");

    consumer.seek_with_epoch(&tp(), 70, epoch).expect("seek with epoch");
    let got = poll_until(&consumer, |got| got.iter().any(|r| r.offset >= 99)).await;
    assert_eq!(offsets(&got), (70..100).collect::<Vec<_>>(), "the newest leader's records, from 70");
    assert!(got.iter().all(|r| value(r) == format!("e3-{}", r.offset) && r.leader_epoch == 3));
    consumer.close().await.expect("close");
}

#[tokio::test]
async fn regression_a_second_truncation_before_the_seek_is_detected_with_fetch_divergence() {
    second_truncation_before_the_seek_is_detected(Broker::FetchDivergenceOnly).await;
}

#[tokio::test]
async fn regression_a_second_truncation_before_the_seek_is_detected_on_a_current_broker() {
    second_truncation_before_the_seek_is_detected(Broker::Current).await;
}
