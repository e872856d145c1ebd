//! Where the producer compresses: a request with 64 KiB or more to compress is sealed on tokio's
//! blocking pool, never on an async worker and never under the accumulator's lock (the core
//! only hands out the records; `Drained::seal` compresses them), and batches sealed there keep
//! their partition's order.
//!
//! Observed, not timed: sealing runs in a `kafka.produce.seal` tracing span whose
//! `compress_bytes` field says how much it compresses; a subscriber records the thread each
//! span was created on. The test runs on a current-thread runtime, so every async task runs on
//! the test's thread: a large seal found there ran on the async worker. Had the core compressed
//! while draining (under its lock), no seal would have bytes left to compress, and the test
//! fails for want of a large seal.

#[path = "support/fake_broker.rs"]
mod fake_broker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::Duration;

use bytes::Bytes;
use kafka_wire::client::{Acks, Producer, ProducerConfig, ProducerRecord};
use kafka_wire::Compression;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const TOPIC: &str = "compressed";
const THRESHOLD: u64 = 64 * 1024;

/// The creating thread and `compress_bytes` of every `kafka.produce.seal` span.
static SEALS: Mutex<Vec<(ThreadId, u64)>> = Mutex::new(Vec::new());

/// Records seal spans into [`SEALS`]; installed globally, not per thread, since the blocking
/// pool's threads must report to it too.
struct SealRecorder {
    next_id: AtomicU64,
}

struct CompressBytes(u64);

impl Visit for CompressBytes {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "compress_bytes" {
            self.0 = value;
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_u64(field, value as u64);
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl Subscriber for SealRecorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.name() == "kafka.produce.seal"
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut bytes = CompressBytes(0);
        span.record(&mut bytes);
        SEALS.lock().unwrap().push((std::thread::current().id(), bytes.0));
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// 2 KiB that zstd cannot shrink to nothing: a seeded generator's bytes.
fn value(i: u64, len: usize) -> Bytes {
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Bytes::from(
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b'a' + (state % 26) as u8
            })
            .collect::<Vec<u8>>(),
    )
}

/// Large zstd batches (about 96 KiB each) to one partition, with five requests in flight and
/// the driver let in between bursts of sends: every request is sealed on the blocking pool, and
/// every record lands in send order, once, with no gap in its partition's sequence numbers.
#[tokio::test]
async fn regression_large_batches_are_compressed_on_the_blocking_pool_in_order() {
    tracing::subscriber::set_global_default(SealRecorder { next_id: AtomicU64::new(0) })
        .expect("the only subscriber of this test binary");
    let runtime_thread = std::thread::current().id();
    let broker = fake_broker::FakeBroker::start(&[(TOPIC, 1)]).await;
    let config = ProducerConfig::new(broker.addr())
        .acks(Acks::All)
        .enable_idempotence(true)
        .max_in_flight_requests_per_connection(5)
        .compression(Compression::Zstd)
        .batch_size(96 * 1024)
        .linger(Duration::ZERO);
    let producer = Producer::new(config).await.expect("producer");
    let mut deliveries = Vec::new();
    let mut i = 0u64;
    for _ in 0..6 {
        // Without a yield in between, these fill about two batches before the driver runs.
        for _ in 0..100 {
            let record = ProducerRecord::new(TOPIC, value(i, 2048));
            deliveries.push(producer.send(record).await.expect("send"));
            i += 1;
        }
        for _ in 0..3 {
            tokio::task::yield_now().await;
            let record = ProducerRecord::new(TOPIC, value(i, 16));
            deliveries.push(producer.send(record).await.expect("send"));
            i += 1;
        }
    }
    let mut last = -1;
    for (n, d) in deliveries.into_iter().enumerate() {
        let metadata = tokio::time::timeout(Duration::from_secs(30), d)
            .await
            .unwrap_or_else(|_| panic!("record {n} not acknowledged within 30 s"))
            .unwrap_or_else(|e| panic!("record {n} failed: {e}"));
        assert!(metadata.offset > last, "record {n} at offset {} after offset {last}", metadata.offset);
        last = metadata.offset;
    }
    assert_eq!(last + 1, i as i64, "every record once");
    assert_eq!(broker.stats().sequence_anomalies.load(Ordering::Relaxed), 0, "batches out of sequence order");
    producer.close().await.expect("close");

    let seals = SEALS.lock().unwrap().clone();
    let large: Vec<_> = seals.iter().filter(|(_, bytes)| *bytes >= THRESHOLD).collect();
    assert!(
        large.len() >= 6,
        "expected the large batches to be compressed by Drained::seal, found {} large seals in {seals:?}",
        large.len()
    );
    for (thread, bytes) in large {
        assert_ne!(*thread, runtime_thread, "a request with {bytes} bytes to compress was sealed on the async worker");
    }
}
