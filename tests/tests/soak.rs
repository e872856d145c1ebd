//! The soak at CI size (`kafka_wire_tests::soak`; 45 s, `SOAK_SECONDS` to change it): a producer
//! and a consumer through the chaos proxy throttled to 2 MB/s up (4 MB/s down), far below what the
//! producer offers. The producer's buffered bytes never exceed `buffer.memory`, the consumer's
//! prefetched bytes never exceed `queued.max.messages.kbytes` plus one fetch answer, and the
//! consumer reads every acknowledged record. RSS is printed, not asserted (the 10-minute run,
//! `cargo run --release -p kafka-wire-tests --example soak`, reports its flatness).

use std::time::Duration;

use kafka_wire_tests::bootstrap;
use kafka_wire_tests::soak::{run, SoakConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_and_prefetched_bytes_stay_within_their_limits_behind_a_slow_link() {
    let seconds = std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(45);
    let mut config = SoakConfig::new(bootstrap(), Duration::from_secs(seconds));
    config.sample_every = Duration::from_secs(1);
    config.consumer_pause = (Duration::from_secs(10), Duration::from_secs(5));
    let report = run(config.clone(), |s| {
        assert!(
            s.producer_buffered <= config.buffer_memory as u64,
            "t={:.0} s: producer buffered {} B > buffer.memory {} B",
            s.t,
            s.producer_buffered,
            config.buffer_memory
        );
        assert!(
            s.consumer_prefetched <= config.prefetch_bound(),
            "t={:.0} s: consumer prefetched {} B > queued.max.messages.kbytes + fetch.max.bytes = {} B",
            s.t,
            s.consumer_prefetched,
            config.prefetch_bound()
        );
    })
    .await;
    eprintln!("{}", report.summary());
    assert_eq!(report.failed, 0, "records failed");
    assert!(report.acked > 0, "nothing acknowledged");
    assert_eq!(
        report.consumed, report.acked,
        "the consumer did not read every acknowledged record (read_uncommitted, assigned: once each)"
    );
    // The limits were reached, so the bounds were tested: the producer offers more than the
    // link carries, and the consumer's pauses let the prefetch fill.
    assert!(
        report.max_producer_buffered() >= config.buffer_memory as u64 / 2,
        "the producer's buffer never filled: max {} B",
        report.max_producer_buffered()
    );
    assert!(
        report.max_consumer_prefetched() >= config.prefetch_max_bytes as u64 / 2,
        "the consumer's prefetch never filled: max {} B",
        report.max_consumer_prefetched()
    );
}
