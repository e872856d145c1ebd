//! Record batches and compressed data built to break the decoder: every one must come back as a
//! typed error (or, for a batch cut short, a clean stop), never a panic, a hang or a huge
//! allocation.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_wire::codec::compression::{compress, decompress, Compression};
use kafka_wire::codec::record_batch::{BatchBuilder, RecordBatch, RecordBatches, HEADER_SIZE};
use kafka_wire::codec::DecodeError;

const MIB: usize = 1 << 20;

/// A batch with the given attributes, record count and records section, and a correct CRC.
fn raw_batch(attributes: i16, record_count: i32, records: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i64(0); // baseOffset
    b.put_i32((HEADER_SIZE - 12 + records.len()) as i32); // batchLength
    b.put_i32(-1); // partitionLeaderEpoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, below
    b.put_i16(attributes);
    b.put_i32(record_count.max(1) - 1); // lastOffsetDelta
    b.put_i64(1000); // baseTimestamp
    b.put_i64(1000); // maxTimestamp
    b.put_i64(-1); // producerId
    b.put_i16(-1); // producerEpoch
    b.put_i32(-1); // baseSequence
    b.put_i32(record_count);
    b.put_slice(records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// The one batch in `bytes`, which must frame and check correctly.
fn only_batch(bytes: Bytes) -> RecordBatch {
    let mut it = RecordBatches::new(bytes);
    let batch = it.next().expect("a batch").expect("a valid batch");
    assert!(it.next().is_none());
    batch
}

/// The first error decoding the batch's records yields.
fn record_error(bytes: Bytes, limit: usize) -> DecodeError {
    only_batch(bytes).records(limit).find_map(Result::err).expect("an error among the records")
}

fn good_batch() -> Bytes {
    let mut b = BatchBuilder::new(0);
    b.push(1, Some(b"key"), Some(b"value"), &[]).unwrap();
    b.push(2, None, Some(b"value 2"), &[]).unwrap();
    b.finish(Compression::None)
}

#[test]
fn bad_crc() {
    let mut bytes = good_batch().to_vec();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    let err = RecordBatches::new(Bytes::from(bytes)).next().unwrap().unwrap_err();
    assert!(matches!(err, DecodeError::CrcMismatch { .. }), "{err:?}");
}

#[test]
fn negative_record_count() {
    let err = RecordBatches::new(raw_batch(0, -1, &[])).next().unwrap().unwrap_err();
    assert_eq!(err, DecodeError::InvalidLength { what: "recordCount", len: -1 });
}

#[test]
fn record_count_past_what_the_bytes_hold() {
    // 2^31 - 1 records in 10 bytes: refused before any record is decoded.
    let err = record_error(raw_batch(0, i32::MAX, &[0; 10]), MIB);
    assert!(matches!(err, DecodeError::LengthExceedsInput { what: "recordCount", .. }), "{err:?}");
}

#[test]
fn truncated_varint_in_a_record() {
    // A record of 8 bytes: attributes, then a timestamp delta whose every byte says "more".
    let records = [0x10, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80];
    let err = record_error(raw_batch(0, 1, &records), MIB);
    assert!(matches!(err, DecodeError::UnexpectedEnd { .. }), "{err:?}");
}

#[test]
fn overlong_varint_in_a_record() {
    let mut records = vec![0x18, 0];
    records.extend_from_slice(&[0xff; 11]);
    let err = record_error(raw_batch(0, 1, &records), MIB);
    assert!(matches!(err, DecodeError::VarintTooLong { .. }), "{err:?}");
}

#[test]
fn record_claiming_2_pow_31_bytes() {
    // Zig-zag varint of i32::MAX, then padding so that the record count check passes.
    let mut records = vec![0xfe, 0xff, 0xff, 0xff, 0x0f];
    records.extend_from_slice(&[0; 8]);
    let err = record_error(raw_batch(0, 1, &records), MIB);
    assert!(matches!(err, DecodeError::LengthExceedsInput { what: "record", .. }), "{err:?}");

    // And i32::MIN.
    let mut records = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    records.extend_from_slice(&[0; 8]);
    let err = record_error(raw_batch(0, 1, &records), MIB);
    assert!(matches!(err, DecodeError::InvalidLength { what: "record", .. }), "{err:?}");
}

#[test]
fn key_and_header_lengths_that_overrun() {
    // Record of 8 bytes: attributes, deltas, key length 2^30.
    let records = [0x10, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x08];
    let err = record_error(raw_batch(0, 1, &records), MIB);
    assert!(matches!(err, DecodeError::LengthExceedsInput { what: "record key", .. }), "{err:?}");

    // Key length -2.
    let records = [0x0c, 0, 0, 0, 0x03, 0x01, 0x00, 0x00];
    let err = record_error(raw_batch(0, 1, &records), MIB);
    assert!(matches!(err, DecodeError::InvalidLength { what: "record key", len: -2 }), "{err:?}");

    // Null key, null value, then 2^30 headers in no bytes.
    let records = [0x14, 0, 0, 0, 0x01, 0x01, 0x80, 0x80, 0x80, 0x80, 0x08];
    let err = record_error(raw_batch(0, 1, &records), MIB);
    assert!(matches!(err, DecodeError::LengthExceedsInput { what: "record headers", .. }), "{err:?}");

    // A negative header key length.
    let records = [0x10, 0, 0, 0, 0x01, 0x01, 0x02, 0x01, 0x00];
    let err = record_error(raw_batch(0, 1, &records), MIB);
    assert!(matches!(err, DecodeError::InvalidLength { what: "header key", .. }), "{err:?}");
}

#[test]
fn huge_batch_length_is_a_truncated_batch() {
    // A Fetch response cut short looks exactly like this: stop, no error, nothing allocated.
    let mut bytes = BytesMut::new();
    bytes.put_i64(0);
    bytes.put_i32(i32::MAX);
    bytes.put_i32(-1);
    bytes.put_i8(2);
    let bytes = bytes.freeze();
    let mut it = RecordBatches::new(bytes.clone());
    assert!(it.next().is_none());
    assert!(it.is_truncated());
    assert!(matches!(RecordBatch::parse(bytes), Err(DecodeError::UnexpectedEnd { .. })));

    // After a good batch, the good batch still comes out.
    let mut stream = good_batch().to_vec();
    stream.extend_from_slice(&0i64.to_be_bytes());
    stream.extend_from_slice(&i32::MAX.to_be_bytes());
    let mut it = RecordBatches::new(Bytes::from(stream));
    assert!(it.next().unwrap().is_ok());
    assert!(it.next().is_none());
    assert!(it.is_truncated());
}

#[test]
fn framing_errors() {
    let mut negative = good_batch().to_vec();
    negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
    let err = RecordBatches::new(Bytes::from(negative)).next().unwrap().unwrap_err();
    assert!(matches!(err, DecodeError::InvalidLength { what: "batchLength", .. }), "{err:?}");

    let mut short = good_batch().to_vec();
    short[8..12].copy_from_slice(&48i32.to_be_bytes());
    let err = RecordBatches::new(Bytes::from(short)).next().unwrap().unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { .. }), "{err:?}");

    let mut old = good_batch().to_vec();
    old[16] = 1;
    let mut it = RecordBatches::new(Bytes::from(old));
    assert_eq!(it.next().unwrap().unwrap_err(), DecodeError::UnsupportedMagic(1));
    assert!(it.next().is_none(), "the iterator ends after an error");
    assert!(!it.is_truncated());

    let err = RecordBatches::new(raw_batch(6, 0, &[])).next().unwrap().unwrap_err();
    assert_eq!(err, DecodeError::UnknownCompression(6));
}

#[test]
fn garbage_in_a_compressed_batch() {
    for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        let err = record_error(raw_batch(i16::from(codec.id()), 1, &[0xab; 40]), MIB);
        assert!(matches!(err, DecodeError::Decompress { .. }), "{codec}: {err:?}");
    }
}

/// 64 MiB of zeros, compressed with `codec`. To keep the test quick in debug builds, 4 MiB are
/// compressed once and repeated as concatenated members/frames/blocks, which each format allows
/// and the Java client reads; raw snappy is one 64 MiB block.
fn zeros_bomb(codec: Compression, xerial: bool) -> Vec<u8> {
    const TOTAL: usize = 64 * MIB;
    if codec == Compression::Snappy {
        if !xerial {
            return snap::raw::Encoder::new().compress_vec(&vec![0; TOTAL]).unwrap();
        }
        let block = snap::raw::Encoder::new().compress_vec(&[0; 32 * 1024]).unwrap();
        let mut out = vec![0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1];
        for _ in 0..TOTAL / (32 * 1024) {
            out.extend_from_slice(&(block.len() as u32).to_be_bytes());
            out.extend_from_slice(&block);
        }
        return out;
    }
    let mut one = BytesMut::new();
    compress(codec, &vec![0; 4 * MIB], &mut one);
    one.repeat(TOTAL / (4 * MIB))
}

#[test]
fn decompression_bombs_stop_at_the_cap() {
    let cases = [
        (Compression::Gzip, false),
        (Compression::Snappy, true),
        (Compression::Snappy, false),
        (Compression::Lz4, false),
        (Compression::Zstd, false),
    ];
    for (codec, xerial) in cases {
        let bomb = zeros_bomb(codec, xerial);
        assert!(bomb.len() < 4 * MIB, "{codec}: a {} byte bomb is no bomb", bomb.len());
        let too_large = DecodeError::DecompressedTooLarge { codec: codec.name(), limit: MIB };
        assert_eq!(decompress(codec, &bomb, MIB), Err(too_large.clone()), "{codec} xerial={xerial}");

        // The same through a batch: the error is the first and only item.
        let batch = raw_batch(i16::from(codec.id()), 1, &bomb);
        let results: Vec<_> = only_batch(batch).records(MIB).collect();
        assert_eq!(results, [Err(too_large)], "{codec} xerial={xerial}");
    }
}

/// A zstd frame of one RLE block (128 KiB of history) and one compressed block of `sequences`
/// sequences, each of one literal and a match of `match_code`'s baseline plus all of its
/// `match_bits` extra bits. With match length code 52 (65539 plus 16 bits: 131074 bytes), that is
/// about 128 KiB of output per 4 bytes of input, all inside a single block, which the format
/// caps at 128 KiB.
fn zstd_single_block_bomb(sequences: u16, match_code: u8, match_bits: usize) -> Vec<u8> {
    assert!((1..=0x7eff).contains(&sequences));
    let n = usize::from(sequences);
    let mut f = vec![0x28, 0xb5, 0x2f, 0xfd];
    // No content size or checksum; window descriptor 0x40, a 256 KiB window.
    f.extend_from_slice(&[0x00, 0x40]);
    // Block 1: RLE, 131072 bytes of 'a'.
    let rle = 1 << 1 | 131_072 << 3;
    f.extend_from_slice(&[rle as u8, (rle >> 8) as u8, (rle >> 16) as u8, b'a']);
    // Block 2, compressed and last.
    let mut body = vec![
        // Literals: RLE, 12-bit regenerated size n, the byte 'b'.
        0x01 | 0x01 << 2 | ((n & 0x0f) << 4) as u8,
        (n >> 4) as u8,
        b'b',
    ];
    // Sequence count, two-byte form.
    body.extend_from_slice(&[0x80 | (n >> 8) as u8, n as u8]);
    // All three symbol tables in RLE mode: literal length code 1 (one literal), offset code 16
    // (16 extra bits), the match length code.
    body.extend_from_slice(&[0x54, 1, 16, match_code]);
    // Every extra bit set: offset value 131071 (a distance of 131068) and the longest match of
    // the code. RLE tables read no state bits, so the bitstream is all one-bits, then the end
    // marker above them.
    let bits = n * (16 + match_bits);
    body.extend(std::iter::repeat_n(0xff, bits / 8));
    let rest = bits % 8;
    body.push((1u8 << rest) | ((1u8 << rest) - 1));
    let header = 1 | 2 << 1 | body.len() << 3;
    f.extend_from_slice(&[header as u8, (header >> 8) as u8, (header >> 16) as u8]);
    f.extend_from_slice(&body);
    f
}

#[test]
fn zstd_single_block_bomb_is_refused() {
    // Whatever the allocation, the result is an error, not 64 MiB of output.
    let bomb = zstd_single_block_bomb(512, 52, 16);
    let r = decompress(Compression::Zstd, &bomb, MIB);
    assert!(matches!(r, Err(DecodeError::DecompressedTooLarge { .. } | DecodeError::Decompress { .. })), "{r:?}");
    // With short matches (code 40: 67 plus 4 bits, 82 bytes) the same frame is valid zstd.
    let small = zstd_single_block_bomb(3, 40, 4);
    let out = decompress(Compression::Zstd, &small, MIB).unwrap();
    assert_eq!(out.len(), 131_072 + 3 * (1 + 82));
    assert!(out[131_072..].chunks(83).all(|c| c[0] == b'b' && c[1..].iter().all(|&x| x == b'a')));
}
