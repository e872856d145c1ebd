//! `decompress(Compression::Zstd, data, 1 MiB)`: no panic, no more than 1 MiB out, and the
//! limit is exact (see `common::check_decompress`).

#![no_main]

mod common;

use kafka_wire::codec::compression::Compression;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::check_decompress(Compression::Zstd, data);
});
