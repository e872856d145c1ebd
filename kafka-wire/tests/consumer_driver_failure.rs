//! A consumer whose driver task panics: pending and later calls fail with
//! [`Error::DriverFailed`] instead of returning nothing forever.

#[path = "support/crc_log.rs"]
mod crc_log;
#[path = "support/hostile_broker.rs"]
mod hostile_broker;

use std::time::Duration;

use crc_log::{consumer, offsets, poll_records, tp, Log, WAIT};
use hostile_broker::HostileBroker;
use kafka_wire::client::Error;

#[tokio::test]
async fn regression_a_panicked_driver_fails_pending_and_later_calls() {
    let broker = HostileBroker::start(Log::new()).await;
    let consumer = consumer(&broker, true).await;
    let got = poll_records(&consumer, 10).await.unwrap_or_else(|(got, e)| panic!("poll failed: {e} after {got:?}"));
    assert_eq!(offsets(&got), (0..10).collect::<Vec<_>>());
    consumer.seek(&tp(), 30).expect("seek to the end: nothing more to fetch");

    // A poll waiting for records when the driver dies ends with the failure, not after its
    // minute; so do later calls.
    let pending = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.poll(Duration::from_secs(60)).await }
    });
    consumer.inject_driver_panic();
    let is_driver_failed = |e: &Error| matches!(e, Error::DriverFailed { driver: "consumer", .. });
    let e = tokio::time::timeout(WAIT, pending)
        .await
        .expect("the pending poll ends")
        .expect("poll task")
        .expect_err("the pending poll fails");
    assert!(is_driver_failed(&e), "{e:?}");
    assert!(e.to_string().contains("injected by a test"), "names the cause: {e}");
    for _ in 0..2 {
        let e = tokio::time::timeout(WAIT, consumer.poll(Duration::from_secs(60)))
            .await
            .expect("poll in time")
            .expect_err("later polls fail");
        assert!(is_driver_failed(&e), "{e:?}");
    }
    let e = tokio::time::timeout(WAIT, consumer.position(&tp())).await.expect("in time").expect_err("position fails");
    assert!(is_driver_failed(&e), "{e:?}");
}
