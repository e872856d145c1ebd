//! Picks a few telling inputs from the fuzz corpora and prints them as hex, for the
//! regression tests in `kafka-wire/tests/fuzz_regressions.rs`: for each decompressor, the input
//! with the largest output (that decompresses) and the largest one that fails; for record batches,
//! the sealed input with the most records and the one with the most batches; for frames, the
//! entries whose body decodes with the most bytes consumed. Seeds are left out.
//!
//! `cargo +nightly run --release --manifest-path fuzz/Cargo.toml --example pick [max_len]`

use std::fs;
use std::path::Path;

use bytes::Bytes;
use kafka_wire::codec::compression::{decompress, Compression};
use kafka_wire::codec::messages::Message;
use kafka_wire::codec::record_batch::{
    RecordBatches, HEADER_SIZE, LOG_OVERHEAD, MAGIC, MIN_BATCH_LENGTH,
};

fn entries(root: &Path, target: &str, max_len: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir(root.join(target)) else {
        return out;
    };
    for e in dir.flatten() {
        let data = fs::read(e.path()).unwrap();
        // Seeds are built by `examples/seeds.rs`; what the fuzzers found is more telling.
        let seed = e.file_name().to_string_lossy().starts_with("seed-");
        if data.len() <= max_len && !seed {
            out.push((e.file_name().to_string_lossy().into_owned(), data));
        }
    }
    out.sort();
    out
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn show(target: &str, what: &str, name: &str, data: &[u8]) {
    println!(
        "{target} / {what} / {name} ({} bytes)\n{}\n",
        data.len(),
        hex(data)
    );
}

/// Same as `common::seal_batches` in the fuzz targets.
fn seal_batches(data: &mut [u8]) {
    let mut at = 0usize;
    while data.len() - at >= HEADER_SIZE {
        let span = data.len() - at - LOG_OVERHEAD;
        let raw = u32::from_be_bytes([data[at + 8], data[at + 9], data[at + 10], data[at + 11]]);
        let choices = (span - MIN_BATCH_LENGTH as usize + 1) as u32;
        let length = MIN_BATCH_LENGTH as u32 + raw % choices;
        let end = at + LOG_OVERHEAD + length as usize;
        data[at + 8..at + 12].copy_from_slice(&length.to_be_bytes());
        data[at + 16] = MAGIC as u8;
        let crc = crc32c::crc32c(&data[at + 21..end]);
        data[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

/// (batches, records decoded without error, records that failed).
fn batch_stats(data: Bytes) -> (usize, usize, usize) {
    let (mut batches, mut ok, mut bad) = (0, 0, 0);
    for b in RecordBatches::new(data).flatten() {
        batches += 1;
        for r in b.records(1 << 20) {
            if r.is_ok() {
                ok += 1
            } else {
                bad += 1
            }
        }
    }
    (batches, ok, bad)
}

fn consumed<M: Message>(body: &[u8], version: i16) -> Option<usize> {
    if !M::VERSIONS.contains(version) {
        return None;
    }
    let mut b = Bytes::copy_from_slice(body);
    M::decode(&mut b, version)
        .ok()
        .map(|_| body.len() - b.len())
}

fn main() {
    let max_len: usize = std::env::args().nth(1).map_or(600, |s| s.parse().unwrap());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");

    for (target, codec) in [
        ("decompress_gzip", Compression::Gzip),
        ("decompress_snappy", Compression::Snappy),
        ("decompress_lz4", Compression::Lz4),
        ("decompress_zstd", Compression::Zstd),
    ] {
        let all = entries(&root, target, max_len);
        let best_ok = all
            .iter()
            .filter_map(|(n, d)| {
                decompress(codec, d, 1 << 20)
                    .ok()
                    .map(|o| (o.len(), d.len(), n, d))
            })
            .max_by_key(|&(out, len, _, _)| (out, std::cmp::Reverse(len)));
        if let Some((out, _, n, d)) = best_ok {
            show(target, &format!("largest output ({out} bytes)"), n, d);
        }
        let best_err = all
            .iter()
            .filter(|(_, d)| decompress(codec, d, 1 << 20).is_err())
            .max_by_key(|(_, d)| d.len());
        if let Some((n, d)) = best_err {
            let e = decompress(codec, d, 1 << 20).unwrap_err();
            show(target, &format!("largest failing input: {e}"), n, d);
        }
    }

    for target in ["record_batch_valid_crc", "record_batch"] {
        let all: Vec<_> = entries(&root, target, max_len)
            .into_iter()
            .map(|(n, mut d)| {
                if target == "record_batch_valid_crc" {
                    seal_batches(&mut d);
                }
                let s = batch_stats(Bytes::from(d.clone()));
                (n, d, s)
            })
            .collect();
        if let Some((n, d, s)) = all
            .iter()
            .max_by_key(|(_, d, s)| (s.1, std::cmp::Reverse(d.len())))
        {
            show(target, &format!("most records {s:?}"), n, d);
        }
        if let Some((n, d, s)) = all
            .iter()
            .max_by_key(|(_, d, s)| (s.0, s.2, std::cmp::Reverse(d.len())))
        {
            show(target, &format!("most batches {s:?}"), n, d);
        }
    }

    for (target, requests) in [("response_frame", false), ("request_frame", true)] {
        let mut best: Vec<(usize, String, Vec<u8>, String)> = Vec::new();
        for (n, d) in entries(&root, target, max_len) {
            if d.len() < 4 {
                continue;
            }
            let key = i16::from_be_bytes([d[0], d[1]]);
            let version = i16::from_be_bytes([d[2], d[3]]);
            let body = &d[4..];
            macro_rules! each {
                ($k:literal, $req:ty, $resp:ty) => {
                    if key == $k {
                        let c = if requests {
                            consumed::<$req>(body, version)
                        } else {
                            consumed::<$resp>(body, version)
                        };
                        if let Some(c) = c {
                            let ty = if requests {
                                stringify!($req)
                            } else {
                                stringify!($resp)
                            };
                            best.push((c, n.clone(), d.clone(), format!("{ty} v{version}")));
                        }
                    }
                };
            }
            kafka_wire::for_each_api!(each);
        }
        best.sort_by_key(|b| std::cmp::Reverse(b.0));
        for (c, n, d, ty) in best.iter().take(3) {
            show(target, &format!("{ty}, {c} bytes consumed"), n, d);
        }
    }
}
