//! The countries example (`cargo run -p kvstore --example countries`) as a test: adding South
//! Sudan to Business Manager's `countries` store ends, through Bookings, with its time zone in
//! Events' `time-zones` store.

#[path = "../../kvstore/examples/countries/scenario.rs"]
mod scenario;

use std::time::Duration;

use kafka_wire_tests::{bootstrap, unique_topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_south_sudan_ends_with_its_time_zone_in_events_store() {
    let countries = unique_topic("countries");
    let time_zones = unique_topic("time-zones");
    let outcome = tokio::time::timeout(Duration::from_secs(120), scenario::run(&bootstrap(), &countries, &time_zones))
        .await
        .expect("the scenario did not finish within 120 s")
        .unwrap();
    assert_eq!(outcome.south_sudan, "Africa/Juba");
    let codes = |entries: &[(String, String)]| entries.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>();
    assert_eq!(codes(&outcome.countries), ["FR", "IL", "SS", "US"]);
    // Every country got its time zone from Bookings, and Events holds them all.
    assert_eq!(codes(&outcome.events_time_zones), ["FR", "IL", "SS", "US"]);
    assert!(outcome.events_time_zones.contains(&("SS".into(), "Africa/Juba".into())));
}
