//! The contacts import example (`cargo run -p kvstore --example contacts_import`) as a test: a
//! request split into jobs processed by three importers ends with exactly one completion event,
//! even when a job is reported again after the request completed.

#[path = "../../kvstore/examples/contacts_import/scenario.rs"]
mod scenario;

use std::time::Duration;

use kafka_wire_tests::{bootstrap, unique_topic};
use kvstore::Outcome;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_import_request_completes_exactly_once() {
    let topics = scenario::Topics::new(&unique_topic("contacts-"));
    let bootstrap = bootstrap();
    let run = scenario::run(&bootstrap, &topics, "Y", 12);
    let report = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the scenario did not finish within 180 s")
        .unwrap();
    assert_eq!(report.key, "Y-12");
    assert_eq!(report.completion_events, [json!({"request": "Y-12", "jobs": 12})]);
    let done: Vec<u64> = (0..12).collect();
    assert_eq!(report.value, Some(json!({"done": done, "total": 12})));
    // Reported again: applied, nothing changed, so no second event.
    match report.reported_again {
        Outcome::Applied { old, new } => assert_eq!(old, new),
        other => panic!("the repeated report was refused: {other:?}"),
    }
}
