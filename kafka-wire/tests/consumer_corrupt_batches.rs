//! What the consumer does with a batch whose CRC does not match (against a broker that serves
//! one).
//!
//! Partition 0 of the topic holds three batches of 10 records, 0..30; the one at 10..20 has a
//! damaged CRC (its records are intact). With `check.crcs=false` the CRC is not looked at and all
//! 30 records come out. With `check.crcs=true` (Java's behaviour) 0..9 come out, then every poll
//! fails with [`Error::CorruptRecord`] naming the partition and offset 10, nothing is fetched
//! meanwhile, and a seek past the batch goes on after it.

#[path = "support/crc_log.rs"]
mod crc_log;
#[path = "support/hostile_broker.rs"]
mod hostile_broker;

use std::time::Duration;

use hostile_broker::HostileBroker;
use kafka_wire::client::Error;

use crc_log::{check_values, consumer, offsets, poll_records, tp, Log, TOPIC, WAIT};

#[tokio::test]
async fn regression_check_crcs_false_uses_a_batch_with_a_bad_crc() {
    let broker = HostileBroker::start(Log::new()).await;
    let consumer = consumer(&broker, false).await;
    let got = poll_records(&consumer, 30).await.unwrap_or_else(|(got, e)| panic!("poll failed: {e} after {got:?}"));
    assert_eq!(offsets(&got), (0..30).collect::<Vec<_>>());
    check_values(&got);
    consumer.close().await.expect("close");
}

#[tokio::test]
async fn regression_check_crcs_true_reports_the_corrupt_batch_and_stops_there() {
    let broker = HostileBroker::start(Log::new()).await;
    let consumer = consumer(&broker, true).await;
    let (got, error) = poll_records(&consumer, 30).await.expect_err("the corrupt batch is reported");
    assert_eq!(offsets(&got), (0..10).collect::<Vec<_>>(), "the records before the corrupt batch come first");
    check_values(&got);
    let check = |e: &Error| match e {
        Error::CorruptRecord { topic, partition, offset, reason } => {
            assert_eq!((topic.as_str(), *partition, *offset), (TOPIC, 0, 10), "{e}");
            assert!(reason.contains("CRC") || reason.contains("crc"), "{e}");
        }
        other => panic!("not a corrupt record error: {other:?}"),
    };
    check(&error);
    let fetches = broker.fetches();
    // Every poll reports it until the application seeks, and position says so too; nothing is
    // fetched meanwhile (the partition stopped at the corrupt batch).
    for _ in 0..3 {
        let e = tokio::time::timeout(WAIT, consumer.poll(Duration::from_millis(200)))
            .await
            .expect("poll in time")
            .expect_err("still failing");
        check(&e);
    }
    check(&tokio::time::timeout(WAIT, consumer.position(&tp())).await.expect("in time").expect_err("position fails"));
    assert_eq!(broker.fetches(), fetches, "the consumer fetched again while stopped at the corrupt batch");

    // Seeking past the batch goes on after it.
    consumer.seek(&tp(), 20).expect("seek");
    let got = poll_records(&consumer, 10).await.unwrap_or_else(|(got, e)| panic!("poll failed: {e} after {got:?}"));
    assert_eq!(offsets(&got), (20..30).collect::<Vec<_>>());
    check_values(&got);
    consumer.close().await.expect("close");
}
