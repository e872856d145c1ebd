//! How far ahead of the application the consumer decompresses, measured with a counting global
//! allocator against an in-process broker serving compressed batches.
//!
//! A Fetch answer's compressed batches are buffered as received (their size on the wire) and
//! decompressed ahead of the application, in order, a little (128 KiB or one batch) per
//! partition and within `fetch.max.bytes` across partitions: a highly compressed answer is never
//! held decompressed whole, and a batch that does not fit in what is left of the budget waits
//! (it is not refused, and nothing is skipped).

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/hostile_broker.rs"]
mod hostile_broker;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_wire::client::{Consumer, ConsumerConfig, ConsumerRecord, Error};
use kafka_wire::codec::compression::Compression;
use kafka_wire::codec::messages::{FetchRequest, FetchResponse, MetadataRequest, MetadataResponse};
use kafka_wire::codec::record_batch::BatchBuilder;
use kafka_wire::proto::producer::TopicPartition;

use counting_alloc::{peak_alloc_during_async, serial, Counting};
use hostile_broker::{fetch_answer, topic_metadata, HostileBroker, Script};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1 << 20;
/// The bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(60);
const TOPIC: &str = "compressed";

/// Runs a test's body on a runtime of its own, the measurements taking turns.
fn run(body: impl std::future::Future<Output = ()>) {
    let _serial = serial();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(body);
}

/// Per partition, its batches (next offset, bytes), each served from the first one ending past
/// the fetch offset, all at once: far more than a fetch's byte limits, as compressed data can be.
struct Log {
    partitions: Vec<Vec<(i64, Bytes)>>,
}

impl Script for Log {
    fn metadata(&self, _: &MetadataRequest) -> MetadataResponse {
        let indexes: Vec<i32> = (0..self.partitions.len() as i32).collect();
        MetadataResponse { topics: vec![topic_metadata(TOPIC, &indexes)], ..Default::default() }
    }

    fn fetch(&self, request: &FetchRequest) -> FetchResponse {
        fetch_answer(request, |partition, from| {
            let batches = self.partitions.get(usize::try_from(partition).ok()?)?;
            let mut out = BytesMut::new();
            for (_, bytes) in batches.iter().filter(|(next, _)| *next > from) {
                out.extend_from_slice(bytes);
            }
            (!out.is_empty()).then(|| out.freeze())
        })
    }
}

/// `count` zstd batches from offset 0, each of one record whose value is `size` zero bytes.
fn zeros(count: i64, size: usize) -> Vec<(i64, Bytes)> {
    let value = vec![0u8; size];
    (0..count)
        .map(|base| {
            let mut b = BatchBuilder::new(base);
            b.push(1_700_000_000_000, None, Some(&value), &[]).expect("push");
            (base + 1, b.finish(Compression::Zstd))
        })
        .collect()
}

/// Consumes `n` records of `partitions` partitions from offset 0 (dropping them as they come),
/// returning (partition, offset) in the order handed out.
async fn consume(
    broker: &HostileBroker,
    partitions: i32,
    n: usize,
    tune: impl FnOnce(&mut ConsumerConfig),
) -> Vec<(i32, i64)> {
    let mut config = ConsumerConfig::new(broker.addr());
    config.fetch_max_wait = Duration::from_millis(100);
    tune(&mut config);
    let consumer =
        tokio::time::timeout(WAIT, Consumer::new(config)).await.expect("connects in time").expect("consumer");
    let tps: Vec<TopicPartition> = (0..partitions).map(|p| TopicPartition::new(TOPIC, p)).collect();
    consumer.assign(tps.clone());
    for tp in &tps {
        consumer.seek(tp, 0).expect("seek");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!left.is_zero(), "timed out polling; got {got:?}");
        let records: Result<Vec<ConsumerRecord>, Error> =
            tokio::time::timeout(left, consumer.poll(Duration::from_millis(200))).await.expect("poll in time");
        let records = records.unwrap_or_else(|e| panic!("poll failed after {got:?}: {e}"));
        got.extend(records.iter().map(|r| (r.partition, r.offset)));
    }
    consumer.close().await.expect("close");
    got
}

/// 48 batches of one 1 MiB value each, zstd-compressed to a few hundred bytes, in one answer,
/// with the default budgets (`fetch.max.bytes` 50 MiB, `queued.max.messages.kbytes` 64 MiB).
/// The consumer used to decompress each answer whole as it arrived (48 MiB here) before the
/// node's next fetch went out; it decompresses only a batch or so ahead of the application.
#[test]
fn regression_a_compressed_answer_is_decompressed_as_it_is_consumed_not_whole() {
    run(async {
        let broker = HostileBroker::start(Log { partitions: vec![zeros(48, MIB)] }).await;
        let (peak, got) = peak_alloc_during_async(consume(&broker, 1, 48, |_| {})).await;
        assert_eq!(got, (0..48).map(|o| (0, o)).collect::<Vec<_>>());
        println!("48 zstd batches of a 1 MiB value, default budgets: peak {peak} B");
        // A batch or two decompressed ahead, the records of a poll, the decompressor's window.
        assert!(peak <= 16 * MIB, "peak allocation {peak} B: more was decompressed than the application took");
    })
}

/// `fetch.max.bytes` 8 MiB; two partitions of two batches of one 5 MiB value each. Once the
/// first partition's batch is decompressed, the second's does not fit in what is left (3 MiB):
/// it waits, and is decompressed once the application has taken the first, rather than being
/// refused as a batch past `fetch.max.bytes`. Every record comes out, in order per partition.
#[test]
fn a_batch_that_does_not_fit_in_the_budget_left_waits_for_it() {
    run(async {
        let broker = HostileBroker::start(Log { partitions: vec![zeros(2, 5 * MIB), zeros(2, 5 * MIB)] }).await;
        let (peak, got) = peak_alloc_during_async(consume(&broker, 2, 4, |c| c.fetch_max_bytes = 8 * MIB)).await;
        for partition in 0..2 {
            let offsets: Vec<i64> = got.iter().filter(|(p, _)| *p == partition).map(|(_, o)| *o).collect();
            assert_eq!(offsets, vec![0, 1], "partition {partition}, of {got:?}");
        }
        println!("2 x 2 zstd batches of a 5 MiB value, fetch.max.bytes 8 MiB: peak {peak} B");
        // The budget, one batch being decompressed into it, the records of a poll.
        assert!(peak <= 24 * MIB, "peak allocation {peak} B");
    })
}

/// The runtime's one blocking thread is held for the whole test, so the driver's decompression
/// jobs (run on the blocking pool) never start: `poll` decompresses on the caller's thread when
/// it finds nothing ready, and every record still comes out in order. Before, a poll waited
/// for the driver's job, and here it would wait forever.
#[test]
fn poll_decompresses_itself_when_the_blocking_pool_is_busy() {
    let _serial = serial();
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(1).build().expect("runtime");
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let blocker = runtime.spawn_blocking(move || {
        started_tx.send(()).expect("test waits");
        // Held until the test is done (or for the bound on every wait).
        let _ = held.recv_timeout(WAIT);
    });
    started.recv_timeout(WAIT).expect("the blocking thread is taken");
    runtime.block_on(async {
        let broker = HostileBroker::start(Log { partitions: vec![zeros(20, 64 * 1024), zeros(20, 64 * 1024)] }).await;
        let got = consume(&broker, 2, 40, |_| {}).await;
        for partition in 0..2 {
            let offsets: Vec<i64> = got.iter().filter(|(p, _)| *p == partition).map(|(_, o)| *o).collect();
            assert_eq!(offsets, (0..20).collect::<Vec<_>>(), "partition {partition}, of {got:?}");
        }
    });
    release.send(()).expect("the blocker waits");
    runtime.block_on(blocker).expect("blocker");
}
