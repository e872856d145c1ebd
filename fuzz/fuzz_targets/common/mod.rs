//! Helpers shared by the fuzz targets (each target includes this module with `mod common;`).

#![allow(dead_code)]

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::compression::{decompress, Compression};
use kafka_wire::codec::messages::Message;
use kafka_wire::codec::DecodeError;

/// Splits a fuzz input into `(api_key, version, body)`: two big-endian `i16`s, then the rest.
pub fn key_version_body(data: &[u8]) -> Option<(i16, i16, Bytes)> {
    if data.len() < 4 {
        return None;
    }
    let key = i16::from_be_bytes([data[0], data[1]]);
    let version = i16::from_be_bytes([data[2], data[3]]);
    Some((key, version, Bytes::copy_from_slice(&data[4..])))
}

/// Decodes `body` as an `M` at `version` (if `M` describes that version). When that succeeds,
/// the decoded value must survive encode → decode unchanged, with every encoded byte consumed:
/// the codec's own round-trip oracle.
pub fn decode_round_trip<M>(body: &Bytes, version: i16)
where
    M: Message + PartialEq + Debug,
{
    if !M::VERSIONS.contains(version) {
        return;
    }
    let name = std::any::type_name::<M>();
    let mut input = body.clone();
    let Ok(first) = M::decode(&mut input, version) else {
        return;
    };
    assert!(input.len() <= body.len());
    let mut encoded = BytesMut::new();
    // A decoded value holds nothing its version lacks and no length beyond its prefix.
    first.encode(&mut encoded, version).expect("a decoded value re-encodes");
    let mut again = encoded.freeze();
    let second = match M::decode(&mut again, version) {
        Ok(v) => v,
        Err(e) => panic!("{name} v{version}: re-encoded value does not decode: {e}\n{first:?}"),
    };
    assert!(
        again.is_empty(),
        "{name} v{version}: {} bytes left after re-decoding",
        again.len()
    );
    assert_eq!(
        first, second,
        "{name} v{version}: value changed through encode/decode"
    );
}

/// The limit every decompression target uses.
pub const LIMIT: usize = 1 << 20;

/// Decompresses `data` with `codec` under [`LIMIT`]: never a panic, never more than the limit.
/// When it succeeds with `n` bytes, the same input must give the same bytes under a limit of
/// exactly `n`, and `DecompressedTooLarge` under a limit of `n - 1`.
pub fn check_decompress(codec: Compression, data: &[u8]) {
    let Ok(out) = decompress(codec, data, LIMIT) else {
        return;
    };
    let n = out.len();
    assert!(n <= LIMIT, "{codec}: {n} bytes out, limit {LIMIT}");
    match decompress(codec, data, n) {
        Ok(exact) => assert!(
            exact == out,
            "{codec}: output differs under a limit of exactly {n}"
        ),
        Err(e) => panic!("{codec}: {n} bytes under limit {LIMIT}, but limit {n} fails: {e}"),
    }
    if n > 0 {
        match decompress(codec, data, n - 1) {
            Err(DecodeError::DecompressedTooLarge { .. }) => {}
            other => panic!(
                "{codec}: {n} bytes under limit {LIMIT}, but limit {} gives {:?}",
                n - 1,
                other.map(|b| b.len())
            ),
        }
    }
}

// ---- record batches --------------------------------------------------------------------------

use kafka_wire::codec::record_batch::{
    BatchBuilder, Record, RecordBatch, RecordBatches, TimestampType, HEADER_SIZE, LOG_OVERHEAD,
    MAGIC, MIN_BATCH_LENGTH,
};

/// What `RecordBatch::records` may decompress to in the fuzz targets.
pub const RECORDS_LIMIT: usize = 1 << 20;

/// Reading `batch`'s records as spans (`Records::next_span`, the consumer's in-place reads)
/// finds the records decoding found, in the same bytes, and fails where it failed.
fn check_spans(batch: &RecordBatch, decoded: &[Record], decoded_whole: bool) {
    let mut records = batch.records(RECORDS_LIMIT);
    let (bytes, origin) = records.rest();
    let at = |r: &std::ops::Range<usize>| &bytes[r.start - origin..r.end - origin];
    let (mut found, mut failed) = (0usize, false);
    while let Some(span) = records.next_span() {
        let Ok(span) = span else {
            failed = true;
            continue;
        };
        let r = &decoded[found];
        assert_eq!((span.offset, span.timestamp), (r.offset, r.timestamp));
        assert_eq!(span.key.as_ref().map(at), r.key.as_deref());
        assert_eq!(span.value.as_ref().map(at), r.value.as_deref());
        assert_eq!(span.headers.is_some(), !r.headers.is_empty());
        found += 1;
    }
    assert_eq!(found, decoded.len());
    assert_eq!(failed, !decoded_whole);
}

/// Splits `data` into batches and decodes every record of every batch, checking the iterators'
/// contracts. Every batch whose records all decode is rebuilt with `BatchBuilder` and decoded
/// again: the same records must come back.
pub fn check_batches(data: Bytes) {
    let mut batches = RecordBatches::new(data.clone());
    let mut consumed = 0usize;
    let mut failed = false;
    for batch in batches.by_ref() {
        let batch = match batch {
            Ok(b) => b,
            Err(_) => {
                failed = true;
                continue;
            }
        };
        let header = batch.header();
        assert_eq!(header.magic, MAGIC);
        assert!(header.record_count >= 0);
        assert_eq!(batch.as_bytes().len(), header.size());
        consumed += batch.as_bytes().len();
        // The batch on its own parses to the same thing.
        let alone =
            RecordBatch::parse(batch.as_bytes().clone()).expect("a split batch parses alone");
        assert_eq!(alone.header(), header);

        let records = batch.records(RECORDS_LIMIT);
        let (_, upper) = records.size_hint();
        let upper = upper.expect("Records has an upper bound");
        let mut decoded = Vec::new();
        let mut items = 0usize;
        let mut ok = true;
        for r in records {
            items += 1;
            match r {
                Ok(r) => decoded.push(r),
                Err(_) => ok = false,
            }
        }
        assert!(
            items <= upper,
            "Records yielded {items} items, size_hint said at most {upper}"
        );
        assert!(items <= header.record_count as usize + 1);
        check_spans(&batch, &decoded, ok);
        if ok {
            assert_eq!(decoded.len(), header.record_count as usize);
            rebuild(&batch, &decoded);
        }
    }
    assert!(batches.next().is_none(), "RecordBatches is fused");
    if !failed {
        assert_eq!(consumed + batches.remaining().len(), data.len());
        assert_eq!(batches.is_truncated(), !batches.remaining().is_empty());
    }
}

/// Rebuilds `batch` from its decoded `records` with the builder and checks that the rebuilt
/// batch decodes to the same keys, values, headers and timestamps.
fn rebuild(batch: &RecordBatch, records: &[Record]) {
    let h = batch.header();
    let mut b = BatchBuilder::new(h.base_offset);
    b.set_producer_state(h.producer_id, h.producer_epoch, h.base_sequence)
        .set_transactional(h.is_transactional())
        .set_control(h.is_control())
        .set_partition_leader_epoch(h.partition_leader_epoch);
    if h.timestamp_type() == TimestampType::LogAppendTime {
        b.set_log_append_time(Some(h.max_timestamp));
    }
    for r in records {
        let headers = r.headers.to_vec();
        assert_eq!(headers.len(), r.headers.len(), "every header the count says reads back");
        assert_eq!(r.headers.detached(), r.headers);
        b.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers)
            .expect("a decoded record fits a builder");
    }
    let bytes = b.finish(batch.compression());
    let rebuilt = RecordBatch::parse(bytes).expect("a built batch parses");
    let rh = rebuilt.header();
    assert_eq!(rebuilt.compression(), batch.compression());
    assert_eq!(rh.record_count, h.record_count);
    assert_eq!(rh.base_offset, h.base_offset);
    assert_eq!(rh.is_transactional(), h.is_transactional());
    assert_eq!(rh.is_control(), h.is_control());
    assert_eq!(rh.timestamp_type(), h.timestamp_type());
    assert_eq!(
        (rh.producer_id, rh.producer_epoch, rh.base_sequence),
        (h.producer_id, h.producer_epoch, h.base_sequence)
    );
    // Rebuilt records may be a little larger (the builder numbers offsets 0, 1, 2...).
    let again: Vec<Record> = rebuilt
        .records(4 * RECORDS_LIMIT)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("rebuilt {} batch does not decode: {e}", batch.compression()));
    assert_eq!(again.len(), records.len());
    for (i, (a, r)) in again.iter().zip(records).enumerate() {
        assert_eq!(a.offset, h.base_offset.wrapping_add(i as i64));
        assert_eq!(a.timestamp, r.timestamp, "record {i} timestamp");
        assert_eq!(a.key, r.key, "record {i} key");
        assert_eq!(a.value, r.value, "record {i} value");
        assert_eq!(a.headers, r.headers, "record {i} headers");
    }
}

/// Makes every batch in `data` well framed: from the start, each batch gets a `batchLength`
/// that fits in what is left (derived from the length the input has there), magic 2 and a
/// correct CRC-32C. A tail shorter than a batch header is left as it is.
pub fn seal_batches(data: &mut [u8]) {
    let mut at = 0usize;
    while data.len() - at >= HEADER_SIZE {
        let span = data.len() - at - LOG_OVERHEAD; // >= MIN_BATCH_LENGTH
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
