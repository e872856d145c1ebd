//! Record batches whose framing is made valid before decoding: each batch in the input gets a
//! `batchLength` that fits, magic 2 and a correct CRC-32C (see `common::seal_batches`), so the
//! fuzzer spends its time in record parsing and decompression. Every record of every batch is
//! decoded; batches that decode fully are rebuilt with `BatchBuilder` and must decode to the
//! same records.

#![no_main]

mod common;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut data = data.to_vec();
    common::seal_batches(&mut data);
    common::check_batches(Bytes::from(data));
});
