//! What the producer core's open batches hold in memory, measured with a counting global
//! allocator: it follows the bytes buffered, not `batch.size` times the partitions written to.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_wire::codec::compression::Compression;
use kafka_wire::proto::producer::{CoreConfig, PerRecord, ProducerCore, RecordData, TopicPartition};

use counting_alloc::{peak_alloc_during, serial, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// The bench's settings: 1 MiB batches, 64 MiB of buffer.
fn config() -> CoreConfig {
    CoreConfig {
        batch_size: MIB,
        linger: Duration::from_millis(5),
        compression: Compression::None,
        compression_level: 0,
        max_request_size: MIB,
        buffer_memory: 64 * MIB,
        record_overhead: 0,
        delivery_timeout: Duration::from_secs(120),
        retry_backoff: Duration::from_millis(100),
        retry_backoff_max: Duration::from_secs(1),
        max_in_flight: 5,
        acks: -1,
        request_timeout: Duration::from_secs(5),
        idempotent: true,
        transactional: false,
        retries: u32::MAX,
    }
}

fn record(value: &Bytes) -> RecordData {
    RecordData { key: None, value: Some(value.clone()), headers: Vec::new(), timestamp: 1 }
}

/// Appends `n` records of `value` to `tp`, each with room in the buffer.
fn append_n(core: &mut ProducerCore<PerRecord<()>>, tp: &TopicPartition, value: &Bytes, n: usize, now: Instant) {
    for _ in 0..n {
        core.append(tp, record(value), (), now).expect("room in the buffer");
    }
}

/// One 100 B record on each of 256 partitions, with 1 MiB batches: each open batch holds about
/// what it was given. When every new batch was allocated at `batch.size` this took 256 MiB.
#[test]
fn regression_a_record_per_partition_does_not_allocate_a_full_batch_each() {
    let _serial = serial();
    let value = Bytes::from(vec![b'v'; 100]);
    let topic: std::sync::Arc<str> = "t".into();
    let partitions: Vec<TopicPartition> = (0..256).map(|p| TopicPartition::new(topic.clone(), p)).collect();
    let mut core = ProducerCore::<PerRecord<()>>::new(config());
    let now = Instant::now();
    let peak = peak_alloc_during(|| {
        for tp in &partitions {
            core.append(tp, record(&value), (), now).expect("room in the buffer");
        }
    });
    let limit = 256 * 24 * KIB;
    println!("256 partitions × one 100 B record, batch.size 1 MiB: peak {peak} B, limit {limit} B");
    assert!(peak <= limit, "open batches took {peak} B for 256 records of 100 B (limit {limit} B)");
    drop(core);
}

/// One partition filled to `batch.size` with 100 B records: growing the buffer on demand costs
/// at most the doubling's slack, never several batches' worth.
#[test]
fn a_filled_batch_grows_to_about_its_size() {
    let _serial = serial();
    let value = Bytes::from(vec![b'v'; 100]);
    let tp = TopicPartition::new("t", 0);
    let mut core = ProducerCore::<PerRecord<()>>::new(config());
    let now = Instant::now();
    // 100 B values take about 108 B each in a batch.
    let records = MIB / 110;
    let peak = peak_alloc_during(|| append_n(&mut core, &tp, &value, records, now));
    let limit = 3 * MIB;
    println!("{records} records of 100 B in one 1 MiB batch: peak {peak} B, limit {limit} B");
    assert!(peak <= limit, "one 1 MiB batch took a peak of {peak} B (limit {limit} B)");
}

/// A partition's next batch starts as large as its last drained one: a steady stream does not
/// grow each batch again from 16 KiB by doubling, each doubling a copy of the batch so far and,
/// for a moment, both blocks (issue #14: 5 % of the instant-ack ceiling's instructions were
/// those copies).
#[test]
fn a_partitions_next_batch_starts_as_large_as_its_last_one() {
    let _serial = serial();
    let value = Bytes::from(vec![b'v'; 100]);
    let tp = TopicPartition::new("t", 0);
    let mut core = ProducerCore::<PerRecord<()>>::new(CoreConfig { idempotent: false, acks: 1, ..config() });
    let now = Instant::now();
    // About 330 KiB of records: doubling from 16 KiB ends in a 512 KiB block, copied from a
    // 256 KiB one.
    let records = 3000;
    let first = peak_alloc_during(|| append_n(&mut core, &tp, &value, records, now));
    let drained = core.drain(1, now + Duration::from_secs(1), |_| Some(1)).expect("the batch is ready");
    let second = peak_alloc_during(|| append_n(&mut core, &tp, &value, records, now));
    let bytes = records * 108;
    println!("{records} records of 100 B ({bytes} B): first batch's peak {first} B, the next one's {second} B");
    assert!(first > 2 * bytes, "the first batch grew by doubling: peak {first} B for {bytes} B");
    assert!(second <= bytes + bytes / 8, "the next batch took a peak of {second} B for {bytes} B of records");
    drop(drained);
}

/// `buffer.memory` counts what each buffered record holds beyond its bytes (`record_overhead`:
/// what the caller holds for it): with 100 B records and 104 bytes of overhead, a 1 MiB buffer
/// takes about half the records it would by their bytes alone (issue #14: a producer with
/// 32 MiB of `buffer.memory` peaked at 99 MiB of RSS).
#[test]
fn regression_the_buffer_counts_each_records_overhead() {
    let _serial = serial();
    let value = Bytes::from(vec![b'v'; 100]);
    let tp = TopicPartition::new("t", 0);
    let fill = |record_overhead: usize| {
        let mut core =
            ProducerCore::<PerRecord<()>>::new(CoreConfig { buffer_memory: MIB, record_overhead, ..config() });
        let mut taken = 0;
        while core.append(&tp, record(&value), (), Instant::now()).is_ok() {
            taken += 1;
        }
        assert!(core.buffered_bytes() <= MIB, "{} B buffered in a 1 MiB buffer", core.buffered_bytes());
        taken
    };
    let by_bytes = fill(0);
    let counted = fill(104);
    println!("1 MiB of buffer: {by_bytes} records of 100 B by their bytes, {counted} with 104 B of overhead each");
    // Each record is charged its size bound (about 125 B here), and 104 B more with the overhead.
    let charged = MIB / by_bytes;
    let expected = MIB / (charged + 104);
    assert!(counted.abs_diff(expected) <= 1, "{counted} records with their overhead, expected {expected}");
    assert!(counted * 3 < by_bytes * 2, "{counted} records with their overhead, {by_bytes} without");
}
