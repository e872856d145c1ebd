//! The fault scenarios at CI size (~30 s of faults each) on the 3-node cluster; they skip,
//! saying so, when it is not up. `cargo xtask chaos <scenario> --minutes N` runs them longer.

use std::time::Duration;

/// Faults per CI run: long enough for a few kills and stops on a loaded 2-core machine.
const CI_DURATION: Duration = Duration::from_secs(30);

// The cluster3_exclusive guard is held for the whole test on purpose (block_on runs the test's
// own future on this thread).
#[allow(clippy::await_holding_lock)]
async fn scenario(name: &str, seed: u64) {
    let Some((bootstrap, _exclusive)) = kafka_wire_tests::cluster3_for(&format!("chaos {name}")) else { return };
    let config = chaos::RunConfig { bootstrap, duration: CI_DURATION, seed };
    let report = chaos::run(name, &config).await.unwrap_or_else(|e| panic!("chaos {name} (seed {seed}): {e}"));
    eprintln!("{report}");
    assert!(report.ok(), "chaos {name} (seed {seed}): invariants violated:\n{report}");
    assert!(report.records > 0, "chaos {name} (seed {seed}): nothing was checked:\n{report}");
    assert!(report.faults.kills + report.faults.stops > 0, "chaos {name} (seed {seed}): no fault injected:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_producer() {
    scenario("producer", 15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_groups() {
    scenario("groups", 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_eos() {
    scenario("eos", 17).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_atomic() {
    scenario("atomic", 19).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_retry() {
    scenario("retry", 18).await;
}
