//! Record batch encode/decode throughput per codec, and CRC-32C throughput.
//!
//! `cargo bench -p kafka-wire --bench codec`: prints a table; each case runs for about a second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kafka_wire::codec::compression::Compression;
use kafka_wire::codec::record_batch::{BatchBuilder, RecordBatches};

const RECORDS_PER_BATCH: usize = 1000;
const VALUE_LEN: usize = 100;
/// Generous: the cap only matters for hostile input.
const DECOMPRESS_LIMIT: usize = 64 << 20;
const RUN_FOR: Duration = Duration::from_secs(1);

/// Deterministic pseudo-random numbers (an LCG), so that every run measures the same data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}

/// Keys of 10 to 20 bytes and 100-byte values that look like small JSON events: some structure
/// that compresses, some random digits that do not.
fn sample_records() -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    let mut rng = Lcg(42);
    let kinds = ["click", "view", "purchase", "signup", "logout"];
    (0..RECORDS_PER_BATCH)
        .map(|i| {
            let key_len = 10 + rng.below(11) as usize;
            let mut key = format!("user-{:015}", rng.next()).into_bytes();
            key.truncate(key_len);
            let mut value = format!(
                r#"{{"event":"{}","user":{},"amount":{}.{:02},"session":"{:08x}{:08x}","seq":{}}}"#,
                kinds[rng.below(5) as usize],
                rng.below(100_000),
                rng.below(1000),
                rng.below(100),
                rng.next(),
                rng.next(),
                i
            )
            .into_bytes();
            value.resize(VALUE_LEN, b' ');
            (1_700_000_000_000 + i as i64, key, value)
        })
        .collect()
}

fn build(records: &[(i64, Vec<u8>, Vec<u8>)], codec: Compression) -> (usize, bytes::Bytes) {
    let mut b = BatchBuilder::with_capacity(0, records.len() * (VALUE_LEN + 40));
    for (ts, k, v) in records {
        b.push(*ts, Some(k), Some(v), &[]).expect("a small batch");
    }
    let uncompressed = b.size_estimate();
    (uncompressed, b.finish(codec))
}

/// Runs `f` repeatedly for about [`RUN_FOR`] after a short warm-up; returns runs per second.
fn per_second(mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < RUN_FOR / 10 {
        f();
    }
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < RUN_FOR {
        f();
        runs += 1;
    }
    runs as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let records = sample_records();
    println!(
        "record batches of {RECORDS_PER_BATCH} records, 10-20 byte keys, {VALUE_LEN}-byte values \
         (MB/s of uncompressed batch bytes; MB = 10^6 bytes)"
    );
    println!();
    println!(
        "{:<8} {:>11} {:>11} {:>7} | {:>13} {:>9} | {:>13} {:>9}",
        "codec", "batch B", "on wire B", "ratio", "encode rec/s", "MB/s", "decode rec/s", "MB/s"
    );
    println!("{}", "-".repeat(92));
    for codec in Compression::ALL {
        let (uncompressed, batch) = build(&records, codec);

        let encodes = per_second(|| {
            black_box(build(black_box(&records), codec));
        });

        let decodes = per_second(|| {
            let mut n = 0;
            for b in RecordBatches::new(black_box(batch.clone())) {
                let b = b.expect("a valid batch");
                for r in b.records(DECOMPRESS_LIMIT) {
                    black_box(r.expect("a valid record"));
                    n += 1;
                }
            }
            assert_eq!(n, RECORDS_PER_BATCH);
        });

        let rec = RECORDS_PER_BATCH as f64;
        let mb = uncompressed as f64 / 1e6;
        println!(
            "{:<8} {:>11} {:>11} {:>7.2} | {:>13.0} {:>9.1} | {:>13.0} {:>9.1}",
            codec.name(),
            uncompressed,
            batch.len(),
            uncompressed as f64 / batch.len() as f64,
            encodes * rec,
            encodes * mb,
            decodes * rec,
            decodes * mb,
        );
    }

    let mut rng = Lcg(7);
    let buf: Vec<u8> = (0..1 << 20).map(|_| rng.next() as u8).collect();
    let crcs = per_second(|| {
        black_box(crc32c::crc32c(black_box(&buf)));
    });
    println!();
    println!("CRC-32C over 1 MiB: {:.2} GB/s", crcs * buf.len() as f64 / 1e9);
}
