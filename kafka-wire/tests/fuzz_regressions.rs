//! Inputs from the cargo-fuzz corpora (`fuzz/`, see `fuzz/README.md`), replayed through the same
//! code paths and checks as the fuzz targets, on stable and in every `cargo test`.
//!
//! Five-minute runs of all eight targets found no crash, timeout or failed check under
//! `-rss_limit_mb=1024` (the table is in `fuzz/README.md`). One input written while building the
//! record-batch targets makes the `record_batch` target report an out-of-memory under
//! `-malloc_limit_mb=16`: `record_header_count_is_not_preallocated_past_the_input`, which FAILS
//! until `Records::decode_one` stops sizing its header vector from the declared count.
//!
//! The other tests replay the most telling inputs the fuzzers kept, chosen with
//! `fuzz/examples/pick.rs` from entries they found (not the seeds), at most 700 bytes each: per codec the input with the largest output and
//! the largest one that fails, the sealed batches with the most records and the most batches, and
//! the frames that decode the most bytes. Each test pins what the input does today and applies the
//! fuzz targets' oracles (no panic, bounded output, exact decompression limit, iterator contracts,
//! encode/decode round trips, `BatchBuilder` rebuild).
//!
//! When a fuzz target finds a crash: minimize it (`cargo +nightly fuzz tmin <target> <artifact>`),
//! paste the bytes here as hex and name the test after the bug
//! (`fn zstd_window_size_overflow_is_an_error()`).

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use kafka_wire::codec::compression::{decompress, Compression};
use kafka_wire::codec::frame::{decode_request_body, decode_response, split_frame};
use kafka_wire::codec::header::{RequestHeader, ResponseHeader};
use kafka_wire::codec::messages::{
    ApiVersionsRequest, ApiVersionsResponse, ConsumerGroupHeartbeatRequest, Message, Request,
};
use kafka_wire::codec::record_batch::{BatchBuilder, BatchHeader, Record, RecordBatch, RecordBatches, TimestampType};
use kafka_wire::codec::DecodeError;

/// The decompression limit of the fuzz targets.
const LIMIT: usize = 1 << 20;

// ---- allocation measurement ------------------------------------------------------------------

use counting_alloc::{peak_alloc_during, serial, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0);
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

// ---- decompression ---------------------------------------------------------------------------

/// `fuzz_targets/common::check_decompress`: decompresses under [`LIMIT`]; on success the output
/// is at most the limit, the same bytes come out under a limit of exactly their length, and one
/// byte less is `DecompressedTooLarge`.
fn check_decompress(codec: Compression, data: &[u8]) -> Result<Bytes, DecodeError> {
    let out = decompress(codec, data, LIMIT)?;
    let n = out.len();
    assert!(n <= LIMIT, "{codec}: {n} bytes out of a {LIMIT} byte limit");
    assert_eq!(decompress(codec, data, n).as_ref(), Ok(&out), "{codec}: limit of exactly {n}");
    if n > 0 {
        assert_eq!(
            decompress(codec, data, n - 1).map(|b| b.len()),
            Err(DecodeError::DecompressedTooLarge { codec: codec.name(), limit: n - 1 }),
            "{codec}: limit of {}",
            n - 1
        );
    }
    Ok(out)
}

fn assert_corrupt(codec: Compression, data: &[u8]) {
    match check_decompress(codec, data) {
        Err(DecodeError::Decompress { codec: c, .. }) => assert_eq!(c, codec.name()),
        other => panic!("{codec}: expected corrupt data, got {:?}", other.map(|b| b.len())),
    }
}

/// Back-to-back zstd frames, 267 bytes in all, that expand to 921187 bytes, just under the 1 MiB limit: the
/// window lowering in `zstd_header` must not change what they decode to, at any limit.
#[test]
fn zstd_frames_expanding_3450_times_respect_exact_limits() {
    let _serial = serial();
    let data = unhex(ZSTD_921187);
    let out = check_decompress(Compression::Zstd, &data).unwrap();
    assert_eq!(out.len(), 921_187);
    assert!(matches!(decompress(Compression::Zstd, &data, 64 << 10), Err(DecodeError::DecompressedTooLarge { .. })));
}

/// A zstd block that claims more than the frame's 1 KiB window is corrupt data, not a panic.
#[test]
fn zstd_block_larger_than_its_window_is_corrupt() {
    let _serial = serial();
    assert_corrupt(Compression::Zstd, &unhex(ZSTD_BLOCK_OVER_WINDOW));
}

/// Two LZ4 frames, 599 bytes in all, that expand to 97344 bytes.
#[test]
fn lz4_frames_expanding_to_95_kib_respect_exact_limits() {
    let _serial = serial();
    let out = check_decompress(Compression::Lz4, &unhex(LZ4_97344)).unwrap();
    assert_eq!(out.len(), 97_344);
}

#[test]
fn lz4_frame_cut_short_is_corrupt() {
    let _serial = serial();
    assert_corrupt(Compression::Lz4, &unhex(LZ4_TRUNCATED));
}

#[test]
fn snappy_block_found_by_the_fuzzer_respects_exact_limits() {
    let _serial = serial();
    let out = check_decompress(Compression::Snappy, &unhex(SNAPPY_78)).unwrap();
    assert_eq!(out.len(), 78);
}

/// A back-reference 65325 bytes behind a 10408-byte output.
#[test]
fn snappy_offset_before_the_output_is_corrupt() {
    let _serial = serial();
    assert_corrupt(Compression::Snappy, &unhex(SNAPPY_BAD_OFFSET));
}

#[test]
fn gzip_incomplete_deflate_stream_is_corrupt() {
    let _serial = serial();
    assert_corrupt(Compression::Gzip, &unhex(GZIP_INCOMPLETE));
}

// ---- record batches --------------------------------------------------------------------------

/// What decoding a run of batches gave: batches split off, records decoded, record errors.
#[derive(Debug, PartialEq, Eq)]
struct BatchStats {
    batches: usize,
    records: usize,
    record_errors: usize,
    /// The error that stopped the batch iterator, if one did.
    batch_error: Option<DecodeError>,
}

/// `fuzz_targets/common::check_batches`: every record of every batch, with the iterators'
/// contracts, and every batch that decodes fully rebuilt with `BatchBuilder`.
fn check_batches(data: Bytes) -> BatchStats {
    let _ = BatchHeader::decode(&data);
    if let Ok(batch) = RecordBatch::parse(data.clone()) {
        for _ in batch.records(LIMIT) {}
    }
    let mut stats = BatchStats { batches: 0, records: 0, record_errors: 0, batch_error: None };
    let mut batches = RecordBatches::new(data.clone());
    let mut consumed = 0;
    for batch in batches.by_ref() {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                stats.batch_error = Some(e);
                continue;
            }
        };
        stats.batches += 1;
        let header = batch.header();
        assert_eq!(batch.as_bytes().len(), header.size());
        consumed += header.size();
        let alone = RecordBatch::parse(batch.as_bytes().clone()).expect("a split batch parses alone");
        assert_eq!(alone.header(), header);
        let records = batch.records(LIMIT);
        let upper = records.size_hint().1.expect("an upper bound");
        let results: Vec<_> = records.collect();
        assert!(results.len() <= upper);
        assert!(results.len() <= header.record_count as usize + 1);
        let decoded: Vec<Record> = results.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
        stats.records += decoded.len();
        stats.record_errors += results.len() - decoded.len();
        if decoded.len() == results.len() {
            assert_eq!(decoded.len(), header.record_count as usize);
            rebuild(&batch, &decoded);
        }
    }
    assert!(batches.next().is_none(), "RecordBatches is fused");
    if stats.batch_error.is_none() {
        assert_eq!(consumed + batches.remaining().len(), data.len());
    }
    stats
}

/// Rebuilds `batch` from `records`; the rebuilt batch must decode to the same records.
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
        b.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &r.headers.to_vec()).unwrap();
    }
    let rebuilt = RecordBatch::parse(b.finish(batch.compression())).unwrap();
    assert_eq!(rebuilt.compression(), batch.compression());
    assert_eq!(rebuilt.header().timestamp_type(), h.timestamp_type());
    let again: Vec<Record> = rebuilt.records(4 * LIMIT).collect::<Result<_, _>>().unwrap();
    assert_eq!(again.len(), records.len());
    for (i, (a, r)) in again.iter().zip(records).enumerate() {
        assert_eq!(a.offset, h.base_offset.wrapping_add(i as i64));
        assert_eq!((a.timestamp, &a.key, &a.value, &a.headers), (r.timestamp, &r.key, &r.value, &r.headers));
    }
}

/// From `record_batch_valid_crc`, already sealed (valid lengths and CRCs): one batch whose
/// first four records decode and whose fifth is malformed.
#[test]
fn sealed_batch_with_a_malformed_fifth_record() {
    let _serial = serial();
    let stats = check_batches(Bytes::from(unhex(SEALED_BATCH_4_RECORDS)));
    assert_eq!((stats.batches, stats.records, stats.record_errors), (1, 4, 1), "{stats:?}");
}

/// From `record_batch_valid_crc`, sealed: nine batches back to back.
#[test]
fn nine_sealed_batches_back_to_back() {
    let _serial = serial();
    let stats = check_batches(Bytes::from(unhex(SEALED_9_BATCHES)));
    assert_eq!((stats.batches, stats.records, stats.record_errors), (9, 0, 2), "{stats:?}");
}

/// From `record_batch` (CRCs the fuzzer got right by itself): two batches, 52 records, all
/// rebuilt by `BatchBuilder` to the same records.
#[test]
fn fuzzed_batches_with_52_records_rebuild_identically() {
    let _serial = serial();
    let stats = check_batches(Bytes::from(unhex(BATCHES_52_RECORDS)));
    assert_eq!((stats.batches, stats.records, stats.record_errors), (2, 52, 0), "{stats:?}");
}

#[test]
fn six_fuzzed_batches_rebuild_identically() {
    let _serial = serial();
    let stats = check_batches(Bytes::from(unhex(BATCHES_6)));
    assert_eq!((stats.batches, stats.records, stats.record_errors), (6, 6, 0), "{stats:?}");
}

// ---- frames ----------------------------------------------------------------------------------

/// `fuzz_targets/common::decode_round_trip`: decodes `body` as an `M`; the value must survive
/// encode → decode unchanged with every byte consumed. Returns how many bytes the first decode
/// consumed.
fn decode_round_trip<M: Message + PartialEq + Debug>(body: &Bytes, version: i16) -> usize {
    let mut input = body.clone();
    let first = M::decode(&mut input, version).expect("the corpus entry decodes");
    let mut encoded = BytesMut::new();
    first.encode(&mut encoded, version).expect("a decoded value re-encodes");
    let mut again = encoded.freeze();
    let second = M::decode(&mut again, version).expect("the re-encoded value decodes");
    assert!(again.is_empty());
    assert_eq!(first, second);
    body.len() - input.len()
}

/// `response_frame`'s frame splitter check over the whole input.
fn split_frames(data: &[u8], max: usize) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        match split_frame(&mut buf, max) {
            Ok(Some(frame)) => {
                assert!(frame.len() <= max);
                assert_eq!(buf.len(), before - 4 - frame.len());
            }
            Ok(None) => return assert_eq!(buf.len(), before),
            Err(_) => return,
        }
    }
}

/// From `response_frame`: an ApiVersions v3 response body (flexible, with tagged fields) of
/// which 374 of 400 bytes decode.
#[test]
fn fuzzed_api_versions_response_v3_round_trips() {
    let _serial = serial();
    let data = unhex(API_VERSIONS_RESPONSE_V3);
    assert_eq!(&data[..4], &[0, 18, 0, 3]);
    let body = Bytes::copy_from_slice(&data[4..]);
    assert_eq!(decode_round_trip::<ApiVersionsResponse>(&body, 3), 374);
    // Through the client's path the first four bytes are a correlation id (response header v0)
    // and what follows is not a valid response: an error, not a panic.
    assert!(decode_response::<ApiVersionsRequest>(body.clone(), 3).is_err());
    for hv in [0, 1] {
        let _ = ResponseHeader::decode(&mut body.clone(), hv);
    }
    split_frames(&data, 64);
    split_frames(&data, LIMIT);
}

/// From `request_frame`: a ConsumerGroupHeartbeat v1 request body of which 235 of 237 bytes
/// decode.
#[test]
fn fuzzed_consumer_group_heartbeat_request_v1_round_trips() {
    let _serial = serial();
    let data = unhex(CONSUMER_GROUP_HEARTBEAT_REQUEST_V1);
    assert_eq!(&data[..4], &[0, 68, 0, 1]);
    let body = Bytes::copy_from_slice(&data[4..]);
    assert_eq!(decode_round_trip::<ConsumerGroupHeartbeatRequest>(&body, 1), 235);
    // The fake broker's path: request header v2 (flexible), then the body.
    let mut frame = body.clone();
    let hv = ConsumerGroupHeartbeatRequest::request_header_version(1);
    assert_eq!(hv, 2);
    if RequestHeader::decode(&mut frame, hv).is_ok() {
        let _ = decode_request_body::<ConsumerGroupHeartbeatRequest>(&mut frame, 1);
    }
}

// ---- found by fuzzing ------------------------------------------------------------------------

/// Found reading `Records::decode_one` (`record_batch.rs`, `Vec::with_capacity(count)`) while
/// writing the record-batch targets; the `record_batch` fuzz binary run on this input with
/// `-malloc_limit_mb=16` reports "out-of-memory (malloc(32000000))" there. The fuzzers did not
/// reach it in five minutes: the 1 MiB decompression cap keeps it under `-rss_limit_mb=1024`. A 113-byte zstd batch (CRC valid) whose 52-byte frame is one raw
/// block and eight RLE blocks decompresses to one record of 1000008 bytes: no key, no value, a
/// header count of 500000 and then 0xff bytes. The count passes the `body.len() / 2` check, the
/// decoder reserves 500000 headers of 64 bytes (32 MB, 32 times the decompressed data, over 280000
/// times the input) and only then fails on the first header's key length (a varint too long).
///
/// The budget is `tests/allocation_bounds.rs`'s: a small multiple of the input, plus three times
/// the decompression cap, plus 512 KiB of codec working memory.
#[test]
fn record_header_count_is_not_preallocated_past_the_input() {
    let _serial = serial();
    let batch = Bytes::from(unhex(HEADER_COUNT_500K_ZSTD));
    assert_eq!(batch.len(), 113);
    let budget = 4 * batch.len() + 3 * LIMIT + (512 << 10);
    let mut results = Vec::new();
    let peak = peak_alloc_during(|| {
        let batch = RecordBatch::parse(batch.clone()).expect("a valid batch");
        results = batch.records(LIMIT).map(|r| r.map(|_| ())).collect();
    });
    assert_eq!(results, [Err(DecodeError::VarintTooLong { max_bytes: 5 })]);
    assert!(
        peak <= budget,
        "decoding a {}-byte batch allocated {peak} bytes at its peak, over the budget of {budget}",
        batch.len()
    );
}

// ---- corpus entries --------------------------------------------------------------------------

/// Written by hand, about as small as it gets (see
/// `record_header_count_is_not_preallocated_past_the_input`): a batch header (zstd, one record,
/// valid CRC-32C), then a zstd frame (128 KiB window) of a raw block holding the record's
/// prefix `[length 1000008][attributes 0][timestampDelta 0][offsetDelta 0][key -1][value -1]
/// [headerCount 500000]` and eight RLE blocks of 0xff, 1000000 bytes in all.
const HEADER_COUNT_500K_ZSTD: &str = concat!(
    "000000000000000000000065ffffffff027117a12f00040000000000000000000000000000000000000000ffffffff",
    "ffffffffffffffffffff0000000128b52ffd003858000090897a0000000101c0843d020010ff020010ff020010ff0200",
    "10ff020010ff020010ff020010ff03120aff",
);

/// `fuzz/corpus/decompress_zstd/aca727d16008546de50e35aee27509e1c5557026` (267 bytes).
const ZSTD_921187: &str = concat!(
    "28b52ffd005602ff0c020202020202020202020202020202020212020202020202020202020202020202020202020202",
    "02027b03002728b52ffd00560202020200000000000000000002ff0c0202020202020202020202020202020202120202",
    "0202020202020202020202020202020202020202027b03002728b52ffd00560202020200000000000012020202020202",
    "02020202020202020202020202020202027b03002728b52ffd0056020202020000000000000000000000000202020200",
    "000000000002020202020202020202020202000000020202020202020202020202020202021202020202020202020202",
    "020202020202020202020202027b03002728b52ffd0056fb10007b",
);

/// `fuzz/corpus/decompress_zstd/56a6e025fe459baa596a386335f67fa06f0052f6` (353 bytes).
const ZSTD_BLOCK_OVER_WINDOW: &str = concat!(
    "28b52ffd010000020202020202020202010000320202020202020202f602020201000032020202020202020202020202",
    "020202020e02020202020202020202020202021202020202020202020202020202020202020202020202020202020202",
    "0202020202020202020202021100020202020202020202020202020202020202020202020202020202010202f6020202",
    "01000032020202020202020202020202220202020e020202020202020202020202020202020202020202020202020202",
    "020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202",
    "1100020202020202020202020202020202020202020202020202020202010202f6020202010000320202020202020203",
    "020202020202020202fdf913131313131313131313131313131313131313131313131313131313131313384d00004c00",
    "00661313002002025469636b20e7e7cf89",
);

/// `fuzz/corpus/decompress_lz4/7402fe2d993221e1f693c9e20e243c8f49480579` (599 bytes).
const LZ4_97344: &str = concat!(
    "04224d186040820c0100001f000100ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe6600000000000001d0000001f000100ff",
    "ffffffffffffffffffffffff53ab000067600000000000000000000004224d186040820c0100001f000100ffffffffff",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffffffffffffffffffffffffffffff644146ad7b00000f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f250f0f3f3f3f3f3f",
    "3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f",
    "3f3e3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
    "0f0f0f0fffffffffffffffffffffffffffffffffffffffffffffffffffffff3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f3f",
    "3f3f3f3fffffffffffffff6760000000fff80000000000",
);

/// `fuzz/corpus/decompress_lz4/10e64dd9d6290d16b9d31a6b8d4a42c1fc1ca9b1` (409 bytes).
const LZ4_TRUNCATED: &str = concat!(
    "04224d184060820c0100001f000100ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff0f0f0f0f0f0f0f0f0f",
    "0f0f0b0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f3b3b3b3b3b3b3b3b3b3b3b3b0f",
    "0f0f0f0f0f0f0f3b3b3b3b3b3b3b3b3b3b3b3b3b07070707070707070707070707070707070707070707070707070707",
    "070707070707070707070707070707ff0f0f0f0f0f0f0f0f0f0f0f0b0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
    "0f0f0f0f0f0f0f0f0f0f0f0f3b3b3b3b3b3b3b3b3b3b3b3b0f0f0f0f0f0f0f0f3b3b3b3b3b3b3b3b3b3b3b3b3b070707",
    "070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707070707",
    "3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b263b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b0f0f0f",
    "0f0f0f0fffffffffffffffffffffffffff00fff80300000000",
);

/// `fuzz/corpus/decompress_snappy/4459282411b75ac79068a5d429f8fd8fa5bb137f` (59 bytes).
const SNAPPY_78: &str = concat!(
    "4e00b99826787468b96520717569636b202f726f666f78206a756d707300fe2d00fe0101010101010101010901010101",
    "010101010101011101012d",
);

/// `fuzz/corpus/decompress_snappy/933c95cbdf88fb3f5d538bd2272f11104fd92c56` (683 bytes).
const SNAPPY_BAD_OFFSET: &str = concat!(
    "82535000505059000000000100000001000003dbb99c017874686520717569636b2062726f776e20666f78206a756d70",
    "73206f76657220011f206c617a7920646f673b050efe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00",
    "fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00",
    "fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00",
    "fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00",
    "fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d0002cb00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00",
    "fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe0a0a",
    "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a",
    "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00",
    "fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d000000fe2d00fe2d00fe2d00fe2d00fe",
    "2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe",
    "2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe",
    "2d0028fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00",
    "fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2d00fe2dff01d2ff01d2ff00fe2d00fe2d00fe2d00fe2d00fe2d",
    "00fe2deeeeb0800000112d",
);

/// `fuzz/corpus/decompress_gzip/965341756672dc6ae322b4a0686ea6acbb810295` (693 bytes).
const GZIP_INCOMPLETE: &str = concat!(
    "1f8b08000000000000ffedcac71183401000c154360f45238324ece15df45004c1ab9f53d3ca8b3f6ee3df65bcfab435",
    "f14d6b1453dd0e91e6ac8ff1dcd573dfe2937e8fab601886611800000000000100000086611886611886611886611886",
    "6161188661188661181886611886611818866186611861188661188661188661611886d7188661181886611886611818",
    "8661866118866118866118866118866ee3df65bcfab435f14d6b1453dd0e91e6ac8ff1dcd573dfe2937e8fab60188661",
    "180000000000010000008661188661188661188661188661611886611886611818866118866118188618188686616161",
    "866118866118866118866118866118866118861886618661188661188661188661188661188661188661188661188661",
    "186118188661188661181886618661188661188661188661188661188661188661188661188618866186611886611886",
    "61188661188661188686e17b29000000000000000000000000000000000000000000000000000001d0670ae9394eff86",
    "86e17b29000020000000000000002c0000000000000000000000000000000001d0672ae9394eff010000008661188661",
    "18866118866ee3df65bcfab435f14d6b1453dd0e91e6ac8ff1dcd573dfe2937e8fab6018866118000000000001ffffff",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffffffffffffffffffff611886611886611886611886611861181886611886611818866186611886611886611886",
    "6118866118866118866118866118861886618661188661188661188661188661188686e17b2900000000000000010000",
    "0100000000000000000000000000000001d0672ae9394eff8686e17b29000020000000000000002c0000000000000000",
    "000000000000000001d0672ae9394eff0100000000",
);

/// `fuzz/corpus/record_batch_valid_crc/baca1caac9614f505f619e5acd2262c2a518e792` (377 bytes).
const SEALED_BATCH_4_RECORDS: &str = concat!(
    "00000000000000000000016dffffffff02edc82a8c0000000000040000018bcfe568000000018bcfe56804ffffffffff",
    "ffffffffffffffffff000000053e0000000a6b65792d3028147476f7b50854841a0364ce6a48eced88bca80100620002",
    "020a6b65792d3136151f8140b20fab1b7f37f76f4436fa16d7e424853b22e2b33f57b5020a747261636508740043bd76",
    "0004040a6b65792d3244d8817257ec9abed5da6ece15e37a42ae330884bbc5ad299ef81f6f706e4486490cfc040a7472",
    "61636508536b85a7026b01680006060a6b65792d3352e29bf92107a6e4c90042ffffffff024bdc08c600300000000000",
    "00000000000001000000000000000100000000000003e80003ffffffff0000000120000000c51e6216b7f46923c665a9",
    "b275f15925f38d900b1cd2108f89578de0942160fee19c884c6ba6a6020a74726163747261636508536b85a7026b0168",
    "0006060a6b65792d3352e29bf92107a6e4c90042ffffffff024bdc08c60030000000006508fd59d385",
);

/// `fuzz/corpus/record_batch_valid_crc/5c9ce8ca1318a50eb54139b5be95b5f3619f0fd7` (684 bytes).
const SEALED_9_BATCHES: &str = concat!(
    "000000000000010000000031000001530227edfe73eb5a05380001000000040000000000000000000000000000001c00",
    "00000000000000000000000000000000000000000000000031000001530275f42454eb5a053800600100000004000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000003100000000024a40a9e600",
    "002a00000057ffffffff020180ae45001a00000001000000000000000000000000000000000000000000000000000000",
    "0000310000000002595fb7dd000000000000000000000000000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000008cfffaffff02a907b91900000000000000000000000000000003e8000000008c61",
    "636508f1a7793d040004760a6b65792d3244929292929292929292929292929292929292929292929292929292929292",
    "929292929292929292929292299292929292929292929292929292929292000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000310153ffff02bed5643e053800600100000004000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000000000003100000000020cc4a5282a00",
    "000057ffffffff020180ae45001a00000001000000000000000000000000000000000000000020000000000000000000",
    "00310000000002595fb7dd00000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000fbff0000004affff000002b13aba630000000000000000000000000003e8000000008c61636508",
    "f1a7793d040004760ae7b7186b2d7655e03be26b595b82534e415050590059d6d22b872b138d71f3020a747261636508",
    "1d1accf6ba7a169e0b010000",
);

/// `fuzz/corpus/record_batch/c485d5307b358833683e0711890e00e187ac0c96` (501 bytes).
const BATCHES_52_RECORDS: &str = concat!(
    "000000000000002a00000055ffffffff029b493dcd001900000001000000000000000500000000000000630000000000",
    "0003e8000300000011000000021f8b08000000000000ff136060606064293364e0616066626464000031e82dd1100000",
    "00000000000000000700000188ffffffff02fc69387f00010000003100000000000000000000000000000031ffffffff",
    "ffffffffffffffffffff000000321f8b08000000000000ffedd0d166c26100c6e14f3e4992bf24499224494b92244992",
    "24499224498b8e66473bd9ee7457d2f1bc7730eff1efb984e7154308c9d7fbe7f3ede3f9f31bbff16fe115432a459e45",
    "79319267515e3a4d9e4579990c7916e565b3e4599497cb9167515e3e4f9e457949429e457985027916e5158be4599457",
    "2a9167515eb94c9e4579950a7916e555abe4599457ab9167515ebd4e9e45798d067916e5359be45994d76a9167515ebb",
    "4d9e45799d0e7916e575bbe45994d7eb9167515ebf4f9e457983017916e50d87e45994371a916751de784c9e45799309",
    "7916e54da7e45994379b916751de7c4e9e45798b057916e52d97e45994b75a916751de7a4d9e45799b0d7916e56db7e4",
    "5994b7db916751de7e4f9e457987037916e51d8fe45994773a916751def94c9e4579970b7916e55dafe4599477bb9167",
    "51defd4e9e45798f077996f007b31c5d15ea3d0000",
);

/// `fuzz/corpus/record_batch/440c2cfff1d5a9286051fdb50c52915266d99cbb` (494 bytes).
const BATCHES_6: &str = concat!(
    "000000000000006400000042ffffffff024bdc08c6003000000000000000000000000100000000000000010000000000",
    "0003e80003ffffffff000000012000000008000000010c00000000000500000000000000006400000042ffffffff024b",
    "dc08c60030000000000000000000000001000000000000000100000000000003e80003ffffffff000000012000000008",
    "000000010c00000000000500000000000000006400000042ffffffff024bdc08c6003000000000000000000000000100",
    "0000000000000100000000000003e80003ffffffff000000012000000008000000010c00000000000500000000000000",
    "006400000042ffffffff024bdc08c60030000000000000000000000001000000000000000100000000000003e80003ff",
    "ffffff000000012000000008000000010c00000000000500000000000000006400000042ffffffff024bdc08c6003000",
    "0000000000000000000001000000000000000100000000000003e80003ffffffff000000012000000008000000010c00",
    "000000000500000000000000006400000042ffffffff024bdc08c6003000000000000000000000000100000000000000",
    "0100000000000003e80003ffffffff000000012000000008000000010c000000000005000000002a42ffffffff024bdc",
    "08c60030000000000000010000ff",
);

/// `fuzz/corpus/response_frame/d37a59de0a1e95196f9a058753a43caad9eee89a` (404 bytes).
const API_VERSIONS_RESPONSE_V3: &str = concat!(
    "001200030c001000030000ff0800080000001200030c0000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000080000000000000000000000000000000000000000080000000000000000",
    "000000000000000000000000000000000000000054555555555555010000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000054555555555555",
    "010000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000800000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000392",
    "9a02000002929a02cf957f32008f010191010300",
);

/// `fuzz/corpus/request_frame/3ef6b453e966220712e8b2bf138f6037bb48d22c` (241 bytes).
const CONSUMER_GROUP_HEARTBEAT_REQUEST_V1: &str = concat!(
    "004400010101000100000005050003050545050505050505050505050505050505050505050505050505050505050505",
    "056d05050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505",
    "050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505",
    "050505050505050505050505050501000505050105000505050505050505050505050505050505050505050505050100",
    "0001050505050505050501000001050505050505050505050505ad050505050505050505050505050505010000000000",
    "00",
);
