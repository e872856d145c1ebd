//! Record batches as they come in a Fetch response, from raw bytes: `RecordBatches` over the
//! input, every record of every batch (decompressing under a 1 MiB cap), `RecordBatch::parse`
//! and `BatchHeader::decode` on the whole input. Most inputs stop at the CRC; see
//! `record_batch_valid_crc` for the target that gets past it.

#![no_main]

mod common;

use bytes::Bytes;
use kafka_wire::codec::record_batch::{BatchHeader, RecordBatch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    let _ = BatchHeader::decode(&data);
    if let Ok(batch) = RecordBatch::parse(data.clone()) {
        for _ in batch.records(common::RECORDS_LIMIT) {}
    }
    common::check_batches(data);
});
