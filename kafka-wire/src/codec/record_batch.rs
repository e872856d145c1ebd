//! Record batches, magic v2: the format of the records field in Produce and Fetch.
//!
//! A batch is a fixed 61-byte header followed by its records, compressed together as one blob
//! when the batch is compressed:
//!
//! ```text
//! baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 (2) | crc u32
//! | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64
//! | producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32 | records
//! ```
//!
//! `batchLength` counts everything after itself; the CRC-32C covers everything from
//! `attributes` to the end. A record is
//!
//! ```text
//! length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
//! | keyLength varint | key | valueLength varint | value
//! | headerCount varint | (headerKeyLength varint | headerKey | headerValueLength varint | value)*
//! ```
//!
//! with -1 as the length of a null key or value.
//!
//! [`BatchBuilder`] encodes a batch in one pass; [`RecordBatches`] splits a Fetch response's
//! records into [`RecordBatch`]es, whose [`RecordBatch::records`] decode records as slices of
//! the input (or of the decompressed records, for compressed batches).

use std::fmt;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::compression::{self, Compression};
use super::primitives::{
    get_i16, get_i32, get_i64, get_i8, get_u32, get_varint, narrow_uvarint, put_varint, put_varlong, take, unzigzag32,
    unzigzag64, uvarlong_at, varint_len, varlong_len,
};
use super::{open_enum, DecodeError, DecodeResult};

/// The only batch format this codec reads and writes.
pub const MAGIC: i8 = 2;
/// `baseOffset` and `batchLength`: the bytes a batch takes before what `batchLength` counts.
pub const LOG_OVERHEAD: usize = 12;
/// The fixed header, from `baseOffset` to `recordCount`.
pub const HEADER_SIZE: usize = 61;
/// The smallest valid `batchLength`: a header and no records.
pub const MIN_BATCH_LENGTH: i32 = (HEADER_SIZE - LOG_OVERHEAD) as i32;
/// The largest batch [`BatchBuilder`] builds, uncompressed. Brokers refuse far smaller batches
/// (`message.max.bytes`); the cap keeps every length and offset delta well inside `i32`, even
/// after a codec's worst-case expansion.
pub const MAX_BUILDER_SIZE: usize = 1 << 30;

/// `producerId`, `producerEpoch` and `baseSequence` of a batch without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// Producer epoch of a batch without idempotence.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Base sequence of a batch without idempotence.
pub const NO_SEQUENCE: i32 = -1;
/// What clients write as `partitionLeaderEpoch`; the broker fills it in.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;
/// The timestamps of a batch without records.
pub const NO_TIMESTAMP: i64 = -1;

const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
/// A record with no key, value or headers: length, attributes, the two deltas, the key and
/// value lengths and the header count, one byte each.
const MIN_RECORD_SIZE: usize = 7;
/// A header with an empty key and a null value.
const MIN_HEADER_SIZE: usize = 2;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
const DELETE_HORIZON_BIT: i16 = 0x40;

/// What a batch's timestamps mean (attribute bit 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// The producer's timestamps, one per record.
    #[default]
    CreateTime,
    /// The broker's append time, the batch's `maxTimestamp`, for every record.
    LogAppendTime,
}

/// A batch's fixed header, as on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (the broker assigns it; producers write 0).
    pub base_offset: i64,
    /// Bytes after this field to the end of the batch.
    pub batch_length: i32,
    /// The partition leader's epoch when the batch was appended (KIP-101).
    pub partition_leader_epoch: i32,
    /// Format version: 2.
    pub magic: i8,
    /// CRC-32C of everything from `attributes` to the end of the batch.
    pub crc: u32,
    /// Compression (bits 0-2), timestamp type (bit 3), transactional (bit 4), control (bit 5).
    pub attributes: i16,
    /// Offset of the last record, relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record, in milliseconds since the epoch.
    pub base_timestamp: i64,
    /// Highest record timestamp, in milliseconds since the epoch.
    pub max_timestamp: i64,
    /// The idempotent/transactional producer's id (KIP-98), or [`NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// The producer's epoch, or [`NO_PRODUCER_EPOCH`].
    pub producer_epoch: i16,
    /// Sequence number of the first record (KIP-98), or [`NO_SEQUENCE`].
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads the 61 header bytes at the start of `batch`; checks nothing but their presence.
    pub fn decode(batch: &Bytes) -> DecodeResult<Self> {
        let mut b = batch.clone();
        let header = Self {
            base_offset: get_i64(&mut b, "baseOffset")?,
            batch_length: get_i32(&mut b, "batchLength")?,
            partition_leader_epoch: get_i32(&mut b, "partitionLeaderEpoch")?,
            magic: get_i8(&mut b, "magic")?,
            crc: get_u32(&mut b, "crc")?,
            attributes: get_i16(&mut b, "attributes")?,
            last_offset_delta: get_i32(&mut b, "lastOffsetDelta")?,
            base_timestamp: get_i64(&mut b, "baseTimestamp")?,
            max_timestamp: get_i64(&mut b, "maxTimestamp")?,
            producer_id: get_i64(&mut b, "producerId")?,
            producer_epoch: get_i16(&mut b, "producerEpoch")?,
            base_sequence: get_i32(&mut b, "baseSequence")?,
            record_count: get_i32(&mut b, "recordCount")?,
        };
        Ok(header)
    }

    /// Writes the 61 header bytes as they are, CRC included.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(HEADER_SIZE);
        self.write(out);
    }

    fn write(&self, mut out: impl BufMut) {
        out.put_i64(self.base_offset);
        out.put_i32(self.batch_length);
        out.put_i32(self.partition_leader_epoch);
        out.put_i8(self.magic);
        out.put_u32(self.crc);
        out.put_i16(self.attributes);
        out.put_i32(self.last_offset_delta);
        out.put_i64(self.base_timestamp);
        out.put_i64(self.max_timestamp);
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_i32(self.record_count);
    }

    /// The codec of the records (attribute bits 0-2).
    pub fn compression(&self) -> DecodeResult<Compression> {
        Compression::from_id((self.attributes & COMPRESSION_MASK) as u8)
    }

    /// Which timestamp the records carry (attribute bit 3).
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch belongs to a transaction (attribute bit 4, KIP-98).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds control records (transaction markers) instead of data.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Whether `baseTimestamp` is the delete horizon set by log compaction (KIP-534).
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & DELETE_HORIZON_BIT != 0
    }

    /// The offset of the batch's last record, even if compaction removed it.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.wrapping_add(i64::from(self.last_offset_delta))
    }

    /// The offset after the batch: where the next fetch starts.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// The whole batch's size on the wire.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }
}

/// A record header: a UTF-8 key and a nullable value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The header's key.
    pub key: ByteString,
    /// The header's value; `None` is a null value.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header from its key and value.
    pub fn new(key: impl Into<ByteString>, value: Option<impl Into<Bytes>>) -> Self {
        Self { key: key.into(), value: value.map(Into::into) }
    }
}

/// A record's headers, kept as their bytes in the record (checked when the record was decoded)
/// and decoded one at a time as they are read, so that they take the memory of their bytes
/// however many there are. (As a `Vec<Header>`, each would take 64 bytes, 32 times the 2 bytes
/// of an empty header on the wire.)
///
/// 16 bytes: the records of a batch that have headers share one handle on the batch's bytes,
/// and each keeps where its headers lie in it. That keeps a consumer's record at 128 bytes, the
/// most the compiler copies inline: a larger one was moved into each poll's records with a call
/// to `memcpy`, which musl's (the static build's) makes slow for such sizes.
#[derive(Clone, Default)]
pub struct Headers {
    /// The bytes the headers lie in; `None` when there are none (never headers of count 0).
    buf: Option<Arc<Bytes>>,
    /// `buf[start..end]` is `headerCount varint | header…`, each header
    /// `keyLength varint | key | valueLength varint | value`.
    start: u32,
    end: u32,
}

impl Headers {
    /// Number of headers.
    pub fn len(&self) -> usize {
        self.count().0
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.buf.is_none()
    }

    /// The headers at `range` of `buf`, `headerCount varint | header…` with a count above 0 as
    /// [`RecordSpan::headers`] found them (checked), on that handle; `None` past 4 GiB.
    pub(crate) fn in_buffer(buf: Arc<Bytes>, range: std::ops::Range<usize>) -> Option<Headers> {
        let (start, end) = (u32::try_from(range.start).ok()?, u32::try_from(range.end).ok()?);
        Some(Headers { buf: Some(buf), start, end })
    }

    /// The headers in order; keys and values are slices of the record's bytes.
    pub fn iter(&self) -> HeadersIter {
        let Some(buf) = &self.buf else { return HeadersIter { raw: Bytes::new(), left: 0 } };
        let (left, count_len) = self.count();
        HeadersIter { raw: buf.slice(self.start as usize + count_len..self.end as usize), left }
    }

    /// The headers decoded into a vector (64 bytes each), for example for a producer record.
    pub fn to_vec(&self) -> Vec<Header> {
        self.iter().collect()
    }

    /// The same headers in a buffer of their own, rather than a slice of the record's batch
    /// (which a slice keeps alive whole).
    pub fn detached(&self) -> Self {
        Self::own(Bytes::copy_from_slice(self.raw()))
    }

    /// The last header with `key` (Java's `Headers.lastHeader`).
    pub fn last(&self, key: &str) -> Option<Header> {
        self.iter().filter(|h| h.key == key).last()
    }

    /// How many headers there are, and the length of the varint that says so.
    fn count(&self) -> (usize, usize) {
        let mut c = Cursor { buf: self.raw(), at: 0 };
        // Checked when the headers were decoded or built.
        let count = c.varint("header count").map_or(0, |n| n.max(0) as usize);
        (count, c.at)
    }

    /// `headerCount varint | header…`, or nothing when there are no headers.
    fn raw(&self) -> &[u8] {
        self.buf.as_deref().map_or(&[], |b| &b[self.start as usize..self.end as usize])
    }

    /// Headers in `raw` (`headerCount varint | header…`), their own buffer.
    fn own(raw: Bytes) -> Self {
        if raw.is_empty() {
            return Self::default();
        }
        let end = u32::try_from(raw.len()).expect("headers take less than 4 GiB");
        Self { buf: Some(Arc::new(raw)), start: 0, end }
    }

    /// Checks the `count` headers at the cursor and moves past them.
    #[inline]
    fn check(c: &mut Cursor<'_>, count: usize) -> DecodeResult<()> {
        for _ in 0..count {
            let key_len = c.varint("header key length")?;
            let key_len = checked_len(key_len, c.remaining(), "header key")?;
            std::str::from_utf8(&c.buf[c.at..c.at + key_len])
                .map_err(|_| DecodeError::InvalidUtf8 { what: "header key" })?;
            c.at += key_len;
            c.var_bytes("header value")?;
        }
        Ok(())
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.raw() == other.raw() || self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<Header> for Headers {
    /// # Panics
    ///
    /// If the headers take 4 GiB or more (no Kafka record can carry them).
    fn from_iter<I: IntoIterator<Item = Header>>(headers: I) -> Self {
        let mut body = BytesMut::new();
        let mut count = 0i32;
        for h in headers {
            put_header(&mut body, &h);
            count = count.checked_add(1).expect("fewer than 2^31 headers");
        }
        if count == 0 {
            return Self::default();
        }
        let mut raw = BytesMut::with_capacity(varint_len(count) + body.len());
        put_varint(&mut raw, count);
        raw.put_slice(&body);
        Self::own(raw.freeze())
    }
}

impl From<Vec<Header>> for Headers {
    fn from(headers: Vec<Header>) -> Self {
        headers.into_iter().collect()
    }
}

impl IntoIterator for &Headers {
    type Item = Header;
    type IntoIter = HeadersIter;

    fn into_iter(self) -> HeadersIter {
        self.iter()
    }
}

/// The headers of a [`Headers`], decoded as they are read.
#[derive(Clone, Debug)]
pub struct HeadersIter {
    raw: Bytes,
    left: usize,
}

impl Iterator for HeadersIter {
    type Item = Header;

    fn next(&mut self) -> Option<Header> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The bytes were checked when the record was decoded (or written by `from_iter`), so
        // this does not fail; if it did, the iteration would end there.
        let header = (|| {
            let key_len = get_varint(&mut self.raw, "header key length")?;
            let key_len = checked_len(key_len, self.raw.len(), "header key")?;
            let key = ByteString::try_from(self.raw.split_to(key_len))
                .map_err(|_| DecodeError::InvalidUtf8 { what: "header key" })?;
            let value = get_var_bytes(&mut self.raw, "header value")?;
            DecodeResult::Ok(Header { key, value })
        })();
        if header.is_err() {
            self.left = 0;
        }
        header.ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

impl std::iter::FusedIterator for HeadersIter {}

/// A decoded record, with its absolute offset and timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The record's absolute offset.
    pub offset: i64,
    /// The record's timestamp, in milliseconds since the epoch (its type is the batch's).
    pub timestamp: i64,
    /// The key; `None` is a null key.
    pub key: Option<Bytes>,
    /// The value; `None` is a null value (a tombstone on compacted topics).
    pub value: Option<Bytes>,
    /// The record's headers.
    pub headers: Headers,
}

impl Record {
    /// Reads the key of a control batch's record.
    pub fn control_record(&self) -> DecodeResult<ControlRecord> {
        match &self.key {
            Some(key) => ControlRecord::parse(key),
            None => Err(DecodeError::UnexpectedNull { what: "control record key" }),
        }
    }
}

open_enum! {
    /// The type of a control record, from its key. Unknown types are kept: consumers skip
    /// control records they do not understand.
    pub struct ControlType(i16) {
        ABORT = 0 => "ABORT",
        COMMIT = 1 => "COMMIT",
        LEADER_CHANGE = 2 => "LEADER_CHANGE",
        SNAPSHOT_HEADER = 3 => "SNAPSHOT_HEADER",
        SNAPSHOT_FOOTER = 4 => "SNAPSHOT_FOOTER",
        KRAFT_VERSION = 5 => "KRAFT_VERSION",
        KRAFT_VOTERS = 6 => "KRAFT_VOTERS",
    }
}

/// The key of a control record: a version and a type, two `int16`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ControlRecord {
    /// The key's version.
    pub version: i16,
    /// What the control record marks.
    pub kind: ControlType,
}

impl ControlRecord {
    /// A key of version 0.
    pub const fn new(kind: ControlType) -> Self {
        Self { version: 0, kind }
    }

    /// Parses a control record's key. Bytes after the type are ignored: later key versions may
    /// only add fields.
    pub fn parse(key: &[u8]) -> DecodeResult<Self> {
        let [v0, v1, t0, t1, ..] = *key else {
            return Err(short("control record key", 4, key.len()));
        };
        Ok(Self { version: i16::from_be_bytes([v0, v1]), kind: ControlType(i16::from_be_bytes([t0, t1])) })
    }

    /// The key's bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(4);
        out.put_i16(self.version);
        out.put_i16(self.kind.0);
        out.freeze()
    }
}

/// The value of an ABORT or COMMIT control record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndTxnMarker {
    /// The value's version.
    pub version: i16,
    /// The epoch of the transaction coordinator that wrote the marker (KIP-98).
    pub coordinator_epoch: i32,
}

impl EndTxnMarker {
    /// Parses the value; as for keys, bytes after the known fields are ignored.
    pub fn parse(value: &[u8]) -> DecodeResult<Self> {
        let [v0, v1, e0, e1, e2, e3, ..] = *value else {
            return Err(short("end transaction marker", 6, value.len()));
        };
        Ok(Self { version: i16::from_be_bytes([v0, v1]), coordinator_epoch: i32::from_be_bytes([e0, e1, e2, e3]) })
    }

    /// The value's bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(6);
        out.put_i16(self.version);
        out.put_i32(self.coordinator_epoch);
        out.freeze()
    }
}

fn short(what: &'static str, needed: usize, remaining: usize) -> DecodeError {
    DecodeError::UnexpectedEnd { what, needed, remaining }
}

// ---- decoding --------------------------------------------------------------------------------

/// One complete batch whose framing, magic, CRC and codec id have been checked.
#[derive(Clone, Debug)]
pub struct RecordBatch {
    header: BatchHeader,
    compression: Compression,
    /// The whole batch, header included.
    bytes: Bytes,
}

impl RecordBatch {
    /// Checks and wraps `bytes`, which must hold exactly one batch.
    pub fn parse(bytes: Bytes) -> DecodeResult<Self> {
        let mut rest = bytes;
        match split_batch(&mut rest, true)? {
            Some(batch) if rest.is_empty() => Ok(batch),
            Some(_) => Err(DecodeError::TrailingBytes { what: "record batch", count: rest.len() }),
            None => {
                let needed = if rest.len() < LOG_OVERHEAD {
                    LOG_OVERHEAD
                } else {
                    LOG_OVERHEAD + i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize
                };
                Err(DecodeError::UnexpectedEnd { what: "record batch", needed, remaining: rest.len() })
            }
        }
    }

    /// The batch's fixed header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch as received, for forwarding it unchanged.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The batch's compression codec.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.header.last_offset()
    }

    /// The offset after the last record.
    pub fn next_offset(&self) -> i64 {
        self.header.next_offset()
    }

    /// Number of records, as the header states it.
    pub fn record_count(&self) -> i32 {
        self.header.record_count
    }

    /// Whether the batch belongs to a transaction (KIP-98).
    pub fn is_transactional(&self) -> bool {
        self.header.is_transactional()
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.header.is_control()
    }

    /// The producer id of the batch, or [`NO_PRODUCER_ID`].
    pub fn producer_id(&self) -> i64 {
        self.header.producer_id
    }

    /// The records. An uncompressed batch hands out slices of the input; a compressed one is
    /// decompressed here, once, refusing to produce more than `max_decompressed` bytes, and hands
    /// out slices of that. A failed decompression is the first and only item.
    pub fn records(&self, max_decompressed: usize) -> Records {
        Records::new(&self.header, self.records_data(max_decompressed))
    }

    /// The records section, decompressed (refusing to produce more than `max_decompressed`
    /// bytes), or a slice of the batch if it is not compressed: what [`Records::from_data`]
    /// decodes. A consumer decompresses once, away from its shared state, and decodes later.
    pub fn records_data(&self, max_decompressed: usize) -> DecodeResult<Bytes> {
        let raw = self.bytes.slice(HEADER_SIZE..);
        match self.compression {
            Compression::None => Ok(raw),
            codec => compression::decompress(codec, &raw, max_decompressed),
        }
    }
}

/// Splits the first batch off `buf`, or returns `Ok(None)`, leaving `buf` as it is, if `buf`
/// holds only the start of one.
fn split_batch(buf: &mut Bytes, check_crc: bool) -> DecodeResult<Option<RecordBatch>> {
    if buf.len() < LOG_OVERHEAD {
        return Ok(None);
    }
    let length = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if length < 0 {
        return Err(DecodeError::InvalidLength { what: "batchLength", len: i64::from(length) });
    }
    // The magic comes before the size checks so that an old-format message set, whose sizes
    // differ, is reported as what it is.
    if let Some(&magic) = buf.get(MAGIC_OFFSET) {
        if magic as i8 != MAGIC {
            return Err(DecodeError::UnsupportedMagic(magic as i8));
        }
    }
    if length < MIN_BATCH_LENGTH {
        return Err(DecodeError::Malformed {
            what: "record batch",
            reason: "batchLength is shorter than the batch header",
        });
    }
    let size = LOG_OVERHEAD + length as usize;
    if buf.len() < size {
        return Ok(None);
    }
    let bytes = buf.split_to(size);
    let header = BatchHeader::decode(&bytes)?;
    if check_crc {
        let actual = crc32c::crc32c(&bytes[ATTRIBUTES_OFFSET..]);
        if actual != header.crc {
            return Err(DecodeError::CrcMismatch { expected: header.crc, actual });
        }
    }
    let compression = header.compression()?;
    if header.record_count < 0 {
        return Err(DecodeError::InvalidLength { what: "recordCount", len: i64::from(header.record_count) });
    }
    Ok(Some(RecordBatch { header, compression, bytes }))
}

/// The batches in a Fetch response's (or Produce request's) records field, in order.
///
/// The broker may cut the last batch short to honour the fetch's byte limits: an incomplete
/// batch at the end ends the iteration without an error, and [`RecordBatches::is_truncated`]
/// tells it happened. Any other malformation is an error, after which the iterator ends.
#[derive(Clone, Debug)]
pub struct RecordBatches {
    buf: Bytes,
    failed: bool,
    check_crc: bool,
}

impl RecordBatches {
    /// Splits `records`, checking each batch's CRC-32C.
    pub fn new(records: Bytes) -> Self {
        Self { buf: records, failed: false, check_crc: true }
    }

    /// Splits `records` without checking CRCs (a consumer's `check.crcs=false`): a damaged
    /// batch is handed out as it is, and only its framing is checked.
    pub fn without_crc_check(records: Bytes) -> Self {
        Self { buf: records, failed: false, check_crc: false }
    }

    /// The base offset of the next batch, if its first 8 bytes are there: where a batch that
    /// fails to split starts.
    pub fn next_base_offset(&self) -> Option<i64> {
        let b: [u8; 8] = self.buf.get(..8)?.try_into().ok()?;
        Some(i64::from_be_bytes(b))
    }

    /// Whether bytes are left that do not make a complete batch: true once the iteration has
    /// stopped at a truncated batch.
    pub fn is_truncated(&self) -> bool {
        !self.failed && !self.buf.is_empty()
    }

    /// What has not been split off yet.
    pub fn remaining(&self) -> &Bytes {
        &self.buf
    }
}

impl Iterator for RecordBatches {
    type Item = DecodeResult<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.is_empty() {
            return None;
        }
        match split_batch(&mut self.buf, self.check_crc) {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for RecordBatches {}

/// The records of one batch, decoded one at a time.
///
/// Yields exactly `recordCount` records; fewer records in the data, bytes left after the last
/// one, or any malformed record is an error, after which the iterator ends.
#[derive(Debug)]
pub struct Records {
    data: Bytes,
    /// How far `data` has advanced from the batch's first record.
    consumed: usize,
    /// The handle on the batch's bytes that its records' headers share, made at the first
    /// record with headers, and where it starts (as `consumed` counts).
    shared: Option<(Arc<Bytes>, usize)>,
    left: i32,
    base_offset: i64,
    base_timestamp: i64,
    /// The batch's `maxTimestamp` when the broker stamped it with its append time.
    log_append_time: Option<i64>,
    error: Option<DecodeError>,
    done: bool,
}

/// Where a record lies in its batch's records section (as [`Records::rest`] counts), found by
/// [`Records::next_span`]: its fields checked as a decoded [`Record`]'s are, its bytes left
/// where they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSpan {
    /// The record's absolute offset.
    pub offset: i64,
    /// The record's timestamp, in milliseconds since the epoch (its type is the batch's).
    pub timestamp: i64,
    /// The key's bytes; `None` is a null key.
    pub key: Option<std::ops::Range<usize>>,
    /// The value's bytes; `None` is a null value.
    pub value: Option<std::ops::Range<usize>>,
    /// `headerCount varint | header…` when there are headers (never a count of 0).
    pub headers: Option<std::ops::Range<usize>>,
}

/// One record's fields as [`Records::parse_one`] read them, positions in `Records::data`.
struct Parsed {
    end: usize,
    offset: i64,
    timestamp: i64,
    key: Option<std::ops::Range<usize>>,
    value: Option<std::ops::Range<usize>>,
    headers: Option<std::ops::Range<usize>>,
}

impl Records {
    /// The records of the batch with `header`, from its records section as
    /// [`RecordBatch::records_data`] returned it.
    pub fn from_data(header: &BatchHeader, data: Bytes) -> Self {
        Self::new(header, Ok(data))
    }

    /// How many records are left to yield (as the batch's `recordCount` says; fewer if the
    /// data turns out short).
    pub fn remaining(&self) -> usize {
        if self.done {
            0
        } else {
            self.left as usize
        }
    }

    fn new(header: &BatchHeader, data: DecodeResult<Bytes>) -> Self {
        let count = header.record_count;
        let data = data.and_then(|d| {
            // Every record takes at least MIN_RECORD_SIZE bytes, so a count the data cannot hold
            // fails before anything is decoded.
            let max_records = d.len() / MIN_RECORD_SIZE;
            if count < 0 || count as usize > max_records {
                return Err(DecodeError::LengthExceedsInput {
                    what: "recordCount",
                    len: count as u64,
                    remaining: d.len(),
                });
            }
            Ok(d)
        });
        let (data, error) = match data {
            Ok(d) => (d, None),
            Err(e) => (Bytes::new(), Some(e)),
        };
        Self {
            data,
            consumed: 0,
            shared: None,
            left: count.max(0),
            base_offset: header.base_offset,
            base_timestamp: header.base_timestamp,
            log_append_time: (header.timestamp_type() == TimestampType::LogAppendTime).then_some(header.max_timestamp),
            error,
            done: false,
        }
    }

    /// Reads the next record's fields without taking anything: where they lie in `self.data`.
    #[inline(always)]
    fn parse_one(&self) -> DecodeResult<Parsed> {
        if self.data.is_empty() {
            return Err(DecodeError::Malformed { what: "record batch", reason: "fewer records than recordCount" });
        }
        prefetch(self.data.as_ptr().wrapping_add(PREFETCH_AHEAD));
        // Read from the slice: only what the caller keeps becomes a handle on the batch's bytes.
        let mut c = Cursor { buf: &self.data, at: 0 };
        let len = c.varint("record length")?;
        let len = checked_len(len, c.remaining(), "record")?;
        let end = c.at + len;
        let mut c = Cursor { buf: &self.data[..end], at: c.at };
        let _attributes = c.byte("record attributes")?;
        let timestamp_delta = c.varlong("record timestampDelta")?;
        let offset_delta = c.varint("record offsetDelta")?;
        let key = c.var_bytes("record key")?;
        let value = c.var_bytes("record value")?;
        let headers_at = c.at;
        let count = c.varint("record header count")?;
        let count = checked_len(count, c.remaining() / MIN_HEADER_SIZE, "record headers")?;
        if count != 0 {
            Headers::check(&mut c, count)?;
        }
        if c.at != end {
            return Err(DecodeError::TrailingBytes { what: "record", count: end - c.at });
        }
        Ok(Parsed {
            end,
            offset: self.base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp: self.log_append_time.unwrap_or_else(|| self.base_timestamp.wrapping_add(timestamp_delta)),
            key,
            value,
            headers: (count != 0).then_some(headers_at..end),
        })
    }

    /// Moves past the record that ends at `end` of `self.data`.
    #[inline(always)]
    fn advance(&mut self, end: usize) {
        if end == self.data.len() {
            // The last record: drop the handle, which would otherwise keep the whole batch (or
            // Fetch answer) alive after every record taken from it is gone.
            self.data = Bytes::new();
            self.shared = None;
        } else {
            self.data.advance(end);
        }
        self.consumed += end;
    }

    #[inline(always)]
    fn decode_one(&mut self) -> DecodeResult<Record> {
        let p = self.parse_one()?;
        // The key and value become handles on the batch's bytes (one reference count update
        // each); the headers share one handle per batch.
        let headers = match &p.headers {
            Some(h) => self.shared_headers(h.start, h.end)?,
            None => Headers::default(),
        };
        let key = p.key.map(|r| self.data.slice(r));
        let value = p.value.map(|r| self.data.slice(r));
        self.advance(p.end);
        Ok(Record { offset: p.offset, timestamp: p.timestamp, key, value, headers })
    }

    #[inline(always)]
    fn span_one(&mut self) -> DecodeResult<RecordSpan> {
        let p = self.parse_one()?;
        let at = self.consumed;
        let moved = |r: std::ops::Range<usize>| at + r.start..at + r.end;
        let span = RecordSpan {
            offset: p.offset,
            timestamp: p.timestamp,
            key: p.key.map(moved),
            value: p.value.map(moved),
            headers: p.headers.map(moved),
        };
        self.advance(p.end);
        Ok(span)
    }

    /// The next record as a [`RecordSpan`]: where its key, value and headers lie in the batch's
    /// records section, with the same checks as [`Iterator::next`] and no handle on the bytes
    /// (no reference count update). The bytes are those of [`Records::rest`] called before it.
    #[inline(always)]
    pub fn next_span(&mut self) -> Option<DecodeResult<RecordSpan>> {
        if let Some(end) = self.end() {
            return end.map(Err);
        }
        let span = self.span_one();
        self.done |= span.is_err();
        Some(span)
    }

    /// The records section from the next record on, and where that is in the section (the
    /// origin of the positions [`Records::next_span`] gives).
    pub fn rest(&self) -> (Bytes, usize) {
        (self.data.clone(), self.consumed)
    }

    /// Before each record: `Some` ends the iteration (with an error, or none), `None` counts a
    /// record to read. The caller marks the iteration done if that record fails.
    #[inline(always)]
    fn end(&mut self) -> Option<Option<DecodeError>> {
        if let Some(e) = self.error.take() {
            self.done = true;
            return Some(Some(e));
        }
        if self.done {
            return Some(None);
        }
        if self.left == 0 {
            self.done = true;
            if !self.data.is_empty() {
                return Some(Some(DecodeError::TrailingBytes { what: "record batch records", count: self.data.len() }));
            }
            return Some(None);
        }
        self.left -= 1;
        None
    }

    /// The headers at `start..end` of the current record's bytes, on the handle the batch's
    /// records share (one allocation per batch with headers, not one per record).
    fn shared_headers(&mut self, start: usize, end: usize) -> DecodeResult<Headers> {
        let fits = |base: usize| u32::try_from(self.consumed - base + end).is_ok();
        let (buf, base) = match &self.shared {
            Some((buf, base)) if fits(*base) => (buf.clone(), *base),
            // The first record with headers, or one more than 4 GiB into the batch: a handle
            // from this record on.
            _ => {
                let buf = Arc::new(self.data.clone());
                self.shared = Some((buf.clone(), self.consumed));
                (buf, self.consumed)
            }
        };
        let at = self.consumed - base;
        let (Ok(start), Ok(end)) = (u32::try_from(at + start), u32::try_from(at + end)) else {
            return Err(DecodeError::Malformed { what: "record", reason: "headers 4 GiB or more into the record" });
        };
        Ok(Headers { buf: Some(buf), start, end })
    }
}

/// A read position in a record's bytes: the fields are read from the slice, without a `Bytes`
/// handle's bookkeeping per field, with the same checks and errors as the `Bytes` readers.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    #[inline(always)]
    fn byte(&mut self, what: &'static str) -> DecodeResult<u8> {
        let Some(&b) = self.buf.get(self.at) else {
            return Err(DecodeError::UnexpectedEnd { what, needed: 1, remaining: 0 });
        };
        self.at += 1;
        Ok(b)
    }

    /// An unsigned LEB128 varint of at most `max_bytes` bytes.
    #[inline(always)]
    fn uvarlong_max(&mut self, max_bytes: usize, what: &'static str) -> DecodeResult<u64> {
        // Most of a record's varints take one or two bytes.
        match *self.buf.get(self.at..).unwrap_or_default() {
            [b0, ..] if b0 < 0x80 => {
                self.at += 1;
                return Ok(u64::from(b0));
            }
            [b0, b1, ..] if b1 < 0x80 => {
                self.at += 2;
                return Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7);
            }
            _ => {}
        }
        self.uvarlong_slow(max_bytes, what)
    }

    #[inline(never)]
    fn uvarlong_slow(&mut self, max_bytes: usize, what: &'static str) -> DecodeResult<u64> {
        uvarlong_at(self.buf, &mut self.at, max_bytes, what)
    }

    #[inline(always)]
    fn varint(&mut self, what: &'static str) -> DecodeResult<i32> {
        narrow_uvarint(self.uvarlong_max(5, what)?).map(unzigzag32)
    }

    #[inline(always)]
    fn varlong(&mut self, what: &'static str) -> DecodeResult<i64> {
        self.uvarlong_max(10, what).map(unzigzag64)
    }

    /// A varint-prefixed nullable byte string: where it lies in the buffer.
    #[inline(always)]
    fn var_bytes(&mut self, what: &'static str) -> DecodeResult<Option<std::ops::Range<usize>>> {
        match self.varint(what)? {
            -1 => Ok(None),
            len => {
                let len = checked_len(len, self.remaining(), what)?;
                let start = self.at;
                self.at += len;
                Ok(Some(start..self.at))
            }
        }
    }
}

impl Iterator for Records {
    type Item = DecodeResult<Record>;

    // Into the consumer's take loop: left as a call, each record went back through the stack
    // (about a tenth of the polling thread's time, issue #14).
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(end) = self.end() {
            return end.map(Err);
        }
        let record = self.decode_one();
        self.done |= record.is_err();
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            // One more for a trailing error.
            (0, Some(self.left as usize + 1))
        }
    }
}

impl std::iter::FusedIterator for Records {}

/// How far ahead of the record being read its batch's bytes are asked into the cache: a few
/// small records. The byte after each value (the header count) was a cache miss, the bytes just
/// written by the socket read on another core: 44 % of the take loop's time (issue #14).
const PREFETCH_AHEAD: usize = 1024;

/// Asks the CPU to bring the cache line at `at` in: a hint, which never faults, whatever the
/// address (past the buffer's end included), and does nothing but cost a cycle if unused.
#[inline(always)]
fn prefetch(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing into the program and cannot fault, whatever `at` is.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// A non-negative varint length that `available` can hold.
fn checked_len(len: i32, available: usize, what: &'static str) -> DecodeResult<usize> {
    if len < 0 {
        return Err(DecodeError::InvalidLength { what, len: i64::from(len) });
    }
    if len as usize > available {
        return Err(DecodeError::LengthExceedsInput { what, len: len as u64, remaining: available });
    }
    Ok(len as usize)
}

/// A varint-prefixed nullable byte string, as a slice of `buf`.
fn get_var_bytes(buf: &mut Bytes, what: &'static str) -> DecodeResult<Option<Bytes>> {
    match get_varint(buf, what)? {
        -1 => Ok(None),
        len => {
            let len = checked_len(len, buf.len(), what)?;
            take(buf, len, what).map(Some)
        }
    }
}

// ---- encoding --------------------------------------------------------------------------------

/// Why [`BatchBuilder::push`] refused a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The batch would grow past [`MAX_BUILDER_SIZE`].
    #[error("record of {record} bytes would grow the batch past {max} bytes")]
    BatchTooLarge {
        /// The record's encoded size, in bytes.
        record: usize,
        /// The cap, in bytes.
        max: usize,
    },
}

/// Builds one batch: records are encoded as they are pushed, after a placeholder header that
/// [`BatchBuilder::finish`] fills in, with the batch length and CRC, without a second pass over
/// the records (for a compressed batch, the records are compressed straight behind the header).
#[derive(Clone, Debug)]
pub struct BatchBuilder {
    /// A placeholder header, then the uncompressed records.
    buf: BytesMut,
    base_offset: i64,
    partition_leader_epoch: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
    log_append_time: Option<i64>,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
    /// Bytes of records the buffer grows to at most while they fit ([`Self::limit_growth`]).
    growth_limit: usize,
}

impl BatchBuilder {
    /// A batch whose first record gets offset `base_offset` (producers use 0; the broker
    /// assigns the real offsets).
    pub fn new(base_offset: i64) -> Self {
        Self::with_capacity(base_offset, 0)
    }

    /// As [`BatchBuilder::new`], with room for `bytes` of records before reallocating.
    pub fn with_capacity(base_offset: i64, bytes: usize) -> Self {
        Self::with_buffer(base_offset, BytesMut::new(), bytes)
    }

    /// As [`BatchBuilder::with_capacity`], in `buf`, cleared first: a finished batch's buffer
    /// used again needs no allocation if it has the room.
    pub fn with_buffer(base_offset: i64, mut buf: BytesMut, bytes: usize) -> Self {
        buf.clear();
        buf.reserve(HEADER_SIZE + bytes.min(MAX_BUILDER_SIZE));
        buf.put_bytes(0, HEADER_SIZE);
        Self {
            buf,
            base_offset,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
            control: false,
            log_append_time: None,
            base_timestamp: NO_TIMESTAMP,
            max_timestamp: NO_TIMESTAMP,
            count: 0,
            growth_limit: MAX_BUILDER_SIZE,
        }
    }

    /// Stops the buffer's growth by doubling at `bytes` of records: past them it grows only as
    /// far as a record needs. A producer closes a batch at its `batch.size`, so room a doubling
    /// gave past it would stay unused while the batch is buffered and in flight.
    pub fn limit_growth(&mut self, bytes: usize) -> &mut Self {
        self.growth_limit = bytes.min(MAX_BUILDER_SIZE);
        self
    }

    /// Sets the idempotent producer's id, epoch and the first record's sequence number; may be
    /// called any time before `finish`.
    pub fn set_producer_state(&mut self, producer_id: i64, epoch: i16, base_sequence: i32) -> &mut Self {
        self.producer_id = producer_id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets the transactional attribute (KIP-98): the batch is part of the producer's open
    /// transaction.
    pub fn set_transactional(&mut self, transactional: bool) -> &mut Self {
        self.transactional = transactional;
        self
    }

    /// Marks the batch as holding control records (brokers write these; clients only read them).
    pub fn set_control(&mut self, control: bool) -> &mut Self {
        self.control = control;
        self
    }

    /// Sets `partitionLeaderEpoch`; clients leave it at [`NO_PARTITION_LEADER_EPOCH`] and the broker
    /// fills it in.
    pub fn set_partition_leader_epoch(&mut self, epoch: i32) -> &mut Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Stamps the batch with a log append time, as a broker does: the timestamp type becomes
    /// [`TimestampType::LogAppendTime`] and `maxTimestamp` is `time`.
    pub fn set_log_append_time(&mut self, time: Option<i64>) -> &mut Self {
        self.log_append_time = time;
        self
    }

    /// Appends a record with the next offset, returning that offset's delta from the base.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> Result<i32, BuildError> {
        self.push_bounded(timestamp, key, value, headers, record_size_upper_bound(key, value, headers))
    }

    /// [`push`](Self::push) of a record whose [`record_size_upper_bound`] the caller has
    /// computed already (a producer does, to choose the batch): the record is sized once.
    pub(crate) fn push_bounded(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
        upper_bound: usize,
    ) -> Result<i32, BuildError> {
        debug_assert_eq!(upper_bound, record_size_upper_bound(key, value, headers));
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        let offset_delta = self.count;
        // Deltas wrap like the decoder's sums, so any pair of timestamps round-trips.
        let timestamp_delta = timestamp.wrapping_sub(self.base_timestamp);
        let body = (1 + varlong_len(timestamp_delta) + varint_len(offset_delta))
            .saturating_add(upper_bound.saturating_sub(UPPER_BOUND_OVERHEAD));
        let record = body.saturating_add(5);
        if body > MAX_BUILDER_SIZE || self.buf.len() + record > MAX_BUILDER_SIZE {
            if self.count == 0 {
                self.base_timestamp = NO_TIMESTAMP;
                self.max_timestamp = NO_TIMESTAMP;
            }
            return Err(BuildError::BatchTooLarge { record, max: MAX_BUILDER_SIZE });
        }
        self.make_room(record);
        let buf = &mut self.buf;
        // Every length below is at most MAX_BUILDER_SIZE, so the casts to i32 are exact.
        put_varint(buf, body as i32);
        buf.put_i8(0);
        put_varlong(buf, timestamp_delta);
        put_varint(buf, offset_delta);
        put_var_bytes(buf, key);
        put_var_bytes(buf, value);
        put_varint(buf, headers.len() as i32);
        for h in headers {
            put_header(buf, h);
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.count += 1;
        Ok(offset_delta)
    }

    /// Room for `record` more bytes: by doubling, as `BytesMut::reserve`, unless doubling would
    /// pass the growth limit while the records still fit in it; then exactly to the limit (a
    /// copy, as a reallocation makes).
    fn make_room(&mut self, record: usize) {
        let buf = &mut self.buf;
        if buf.capacity() - buf.len() >= record {
            return;
        }
        let limit = HEADER_SIZE.saturating_add(self.growth_limit);
        if buf.len() + record <= limit && buf.capacity().saturating_mul(2) > limit {
            let mut grown = BytesMut::with_capacity(limit);
            grown.extend_from_slice(buf);
            *buf = grown;
        } else {
            buf.reserve(record);
        }
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch's size so far, uncompressed: what a producer compares with `batch.size`.
    pub fn size_estimate(&self) -> usize {
        self.buf.len()
    }

    /// Whether a record of at most `record_size` bytes ([`record_size_upper_bound`], which the
    /// caller has computed already) fits without growing the batch past `max_size` bytes
    /// (uncompressed). An empty batch always has room, as in the Java producer, so that a record
    /// larger than `batch.size` still gets a batch of its own.
    pub fn has_room_for(&self, max_size: usize, record_size: usize) -> bool {
        self.is_empty() || self.size_estimate().saturating_add(record_size) <= max_size
    }

    /// The base offset the builder was created with.
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// The largest record timestamp, or [`NO_TIMESTAMP`] if the batch is empty.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// The finished batch.
    pub fn finish(self, compression: Compression) -> Bytes {
        let level = compression.default_level().unwrap_or(0);
        self.finish_at(compression, level)
    }

    /// [`finish`](Self::finish) with the codec at `level` (see [`compression::compress_at`]).
    pub fn finish_at(self, compression: Compression, level: i32) -> Bytes {
        if compression == Compression::None {
            let header = self.header(Compression::None, self.buf.len());
            let mut buf = self.buf;
            seal(&mut buf, &header);
            return buf.freeze();
        }
        let mut out = BytesMut::new();
        self.finish_into_at(&mut out, compression, level);
        out.freeze()
    }

    /// Appends the finished batch to `out`, compressed at the codec's default level.
    pub fn finish_into(self, out: &mut BytesMut, compression: Compression) {
        let level = compression.default_level().unwrap_or(0);
        self.finish_into_at(out, compression, level);
    }

    /// Appends the finished batch to `out`, compressed at `level`.
    pub fn finish_into_at(self, out: &mut BytesMut, compression: Compression, level: i32) {
        let start = out.len();
        let records = &self.buf[HEADER_SIZE..];
        if compression == Compression::None {
            out.extend_from_slice(&self.buf);
        } else {
            // Most payloads shrink; a codec that expands reallocates once or twice.
            out.reserve(HEADER_SIZE + records.len() / 2);
            out.put_bytes(0, HEADER_SIZE);
            compression::compress_at(compression, level, records, out);
        }
        let header = self.header(compression, out.len() - start);
        seal(&mut out[start..], &header);
    }

    /// The header of the finished batch of `size` bytes, CRC left at zero.
    fn header(&self, compression: Compression, size: usize) -> BatchHeader {
        let mut attributes = i16::from(compression.id());
        if self.transactional {
            attributes |= TRANSACTIONAL_BIT;
        }
        if self.control {
            attributes |= CONTROL_BIT;
        }
        if self.log_append_time.is_some() {
            attributes |= TIMESTAMP_TYPE_BIT;
        }
        BatchHeader {
            base_offset: self.base_offset,
            // At most MAX_BUILDER_SIZE plus a codec's expansion, well inside i32.
            batch_length: (size - LOG_OVERHEAD) as i32,
            partition_leader_epoch: self.partition_leader_epoch,
            magic: MAGIC,
            crc: 0,
            attributes,
            last_offset_delta: (self.count - 1).max(0),
            base_timestamp: self.base_timestamp,
            max_timestamp: self.log_append_time.unwrap_or(self.max_timestamp),
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            record_count: self.count,
        }
    }
}

/// Writes `header` over the first bytes of `batch`, then the CRC of what follows it.
fn seal(batch: &mut [u8], header: &BatchHeader) {
    header.write(&mut batch[..HEADER_SIZE]);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites the producer id, epoch and base sequence of a finished batch and its CRC, so that a
/// batch can be re-sent under a bumped producer epoch (KIP-360) without re-encoding its records.
pub fn patch_producer_state(batch: &mut [u8], producer_id: i64, epoch: i16, base_sequence: i32) {
    // Offsets in the v2 header: producerId at 43, producerEpoch at 51, baseSequence at 53.
    const PRODUCER_ID_OFFSET: usize = 43;
    if batch.len() < HEADER_SIZE {
        return;
    }
    batch[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_ID_OFFSET + 8..PRODUCER_ID_OFFSET + 10].copy_from_slice(&epoch.to_be_bytes());
    batch[PRODUCER_ID_OFFSET + 10..PRODUCER_ID_OFFSET + 14].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
}

/// One record header as on the wire. Its lengths fit in `i32`: the builder checks the record's
/// size first, and [`Headers`] are built from headers that came from a record.
fn put_header(buf: &mut BytesMut, h: &Header) {
    put_varint(buf, h.key.len() as i32);
    buf.put_slice(h.key.as_bytes());
    put_var_bytes(buf, h.value.as_deref());
}

fn put_var_bytes(buf: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i32);
            put_short(buf, b);
        }
    }
}

/// Appends `bytes`: on x86-64 musl, up to [`SHORT`] bytes in pieces (see [`put_in_pieces`]);
/// elsewhere, and for longer slices, with one copy.
fn put_short(buf: &mut BytesMut, bytes: &[u8]) {
    if bytes.len() > SHORT {
        buf.put_slice(bytes);
    } else {
        put_in_pieces(buf, bytes);
    }
}

/// Appends `bytes` in pieces of fixed sizes, which the compiler copies inline. musl's x86-64
/// `memcpy` starts every copy with `rep movsq`, slow to start for the ~100 bytes of a typical
/// key or value: a call per record was a tenth of the static musl `kw`'s CPU. glibc's `memcpy`
/// copies them faster than the pieces do (2 % of the instant-ack ceiling), so there they take
/// it; other targets were not measured and keep the one copy too.
fn put_in_pieces(buf: &mut BytesMut, bytes: &[u8]) {
    let mut pieces = bytes.chunks_exact(32);
    for piece in &mut pieces {
        buf.put_slice(piece);
    }
    let mut rest = pieces.remainder();
    for n in [16, 8, 4, 2, 1] {
        if rest.len() >= n {
            let (piece, tail) = rest.split_at(n);
            buf.put_slice(piece);
            rest = tail;
        }
    }
}

/// The longest key or value [`put_short`] copies in pieces.
const SHORT: usize = if cfg!(all(target_env = "musl", target_arch = "x86_64")) { 256 } else { 0 };

/// The size of a length-prefixed field; lengths past `i32` (which `push` refuses anyway) count
/// as the widest varint.
fn var_bytes_size(v: Option<&[u8]>) -> usize {
    match v {
        None => 1,
        Some(b) => i32::try_from(b.len()).map_or(5, varint_len).saturating_add(b.len()),
    }
}

/// A record's key, value, header count and headers, with their lengths: the part of its size
/// that does not depend on where it is in its batch.
fn payload_size(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header]) -> usize {
    let headers_size = headers.iter().fold(0usize, |n, h| {
        n.saturating_add(var_bytes_size(Some(h.key.as_bytes()))).saturating_add(var_bytes_size(h.value.as_deref()))
    });
    var_bytes_size(key)
        .saturating_add(var_bytes_size(value))
        .saturating_add(i32::try_from(headers.len()).map_or(5, varint_len))
        .saturating_add(headers_size)
}

/// What [`record_size_upper_bound`] adds to [`payload_size`]: the attributes byte and the
/// widest varints, a 10-byte timestamp delta, a 5-byte offset delta and a 5-byte length.
const UPPER_BOUND_OVERHEAD: usize = 1 + 10 + 5 + 5;

/// An upper bound on the bytes a record adds to a batch, whatever its timestamp and offset.
pub fn record_size_upper_bound(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header]) -> usize {
    payload_size(key, value, headers).saturating_add(UPPER_BOUND_OVERHEAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 16 << 20;

    fn records_of(batch: &Bytes) -> Vec<Record> {
        let mut batches = RecordBatches::new(batch.clone());
        let b = batches.next().unwrap().unwrap();
        assert!(batches.next().is_none());
        assert!(!batches.is_truncated());
        b.records(LIMIT).collect::<DecodeResult<Vec<_>>>().unwrap()
    }

    /// The pieces musl's builds copy keys and values in add up to the slice, at every length
    /// (every combination of the 32-byte pieces and the 16/8/4/2/1 tail), after bytes already
    /// in the buffer.
    #[test]
    fn values_copied_in_pieces_arrive_whole() {
        // Past the longest slice any target copies in pieces (musl's 256 bytes).
        let source: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..source.len() {
            let mut buf = BytesMut::from(&b"head"[..]);
            put_in_pieces(&mut buf, &source[..len]);
            assert_eq!(&buf[..4], b"head");
            assert_eq!(&buf[4..], &source[..len], "length {len}");
        }
    }

    /// Regression (issue #14, producer memory): a builder limited to N bytes of records holds
    /// them without doubling past N (a producer's full 1 MiB batch sat in a 2 MiB buffer), still
    /// takes a record past N, and builds what an unlimited builder builds.
    #[test]
    fn a_growth_limited_builder_stops_doubling_at_its_limit() {
        let limit = 10_000;
        let value = [7u8; 90];
        let mut limited = BatchBuilder::with_capacity(0, 1000);
        limited.limit_growth(limit);
        let mut plain = BatchBuilder::with_capacity(0, 1000);
        while limited.has_room_for(limit, 100) {
            limited.push(1, None, Some(&value), &[]).unwrap();
            plain.push(1, None, Some(&value), &[]).unwrap();
            assert!(limited.buf.capacity() <= HEADER_SIZE + limit, "{} bytes", limited.buf.capacity());
        }
        assert!(plain.buf.capacity() > HEADER_SIZE + limit, "without the limit, doubling passes it");
        limited.push(1, None, Some(&value), &[]).unwrap();
        plain.push(1, None, Some(&value), &[]).unwrap();
        assert_eq!(limited.finish(Compression::None), plain.finish(Compression::None));
    }

    fn sample_builder() -> (BatchBuilder, Vec<Record>) {
        let mut b = BatchBuilder::new(100);
        let headers = vec![
            Header::new("trace", Some(Bytes::from_static(b"abc"))),
            Header::new("empty", None::<Bytes>),
            Header::new("", Some(Bytes::new())),
        ];
        type Row<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>, Vec<Header>);
        let rows: [Row; 5] = [
            (1_700_000_000_000, Some(b"key-1"), Some(b"value-1"), vec![]),
            (1_699_999_999_000, None, Some(b"no key"), headers.clone()),
            (1_700_000_005_000, Some(b"tombstone"), None, vec![]),
            (1_700_000_001_000, Some(b""), Some(b""), headers),
            (i64::MIN, None, None, vec![]),
        ];
        let mut expected = Vec::new();
        for (i, (ts, k, v, h)) in rows.into_iter().enumerate() {
            assert_eq!(b.push(ts, k, v, &h).unwrap(), i as i32);
            expected.push(Record {
                offset: 100 + i as i64,
                timestamp: ts,
                key: k.map(Bytes::copy_from_slice),
                value: v.map(Bytes::copy_from_slice),
                headers: h.into(),
            });
        }
        (b, expected)
    }

    proptest::proptest! {
        /// Any records, pushed and read back: the lengths written (computed from the size bound)
        /// agree with the bytes, each record adds at most its bound, and the batch's size is
        /// what was written.
        #[test]
        fn pushed_records_round_trip_within_their_size_bound(
            rows in proptest::collection::vec(
                (
                    proptest::prelude::any::<i64>(),
                    proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
                    proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
                    proptest::collection::vec(
                        ("[a-z]{0,20}", proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200))),
                        0..4,
                    ),
                ),
                1..40,
            )
        ) {
            let mut b = BatchBuilder::new(7);
            let mut expected = Vec::new();
            for (i, (ts, k, v, hs)) in rows.into_iter().enumerate() {
                let headers: Vec<Header> = hs.into_iter().map(|(k, v)| Header::new(k.as_str(), v.map(Bytes::from))).collect();
                let before = b.size_estimate();
                let bound = record_size_upper_bound(k.as_deref(), v.as_deref(), &headers);
                proptest::prop_assert_eq!(b.push(ts, k.as_deref(), v.as_deref(), &headers).unwrap(), i as i32);
                proptest::prop_assert!(b.size_estimate() - before <= bound);
                expected.push(Record {
                    offset: 7 + i as i64,
                    timestamp: ts,
                    key: k.map(Bytes::from),
                    value: v.map(Bytes::from),
                    headers: headers.into(),
                });
            }
            let size = b.size_estimate();
            let batch = b.finish(Compression::None);
            proptest::prop_assert_eq!(batch.len(), size);
            proptest::prop_assert_eq!(records_of(&batch), expected);
        }
    }

    /// A record read as a span, resolved against the bytes [`Records::rest`] gave at `origin`.
    fn resolved(span: &RecordSpan, bytes: &Bytes, origin: usize) -> Record {
        let at = |r: &std::ops::Range<usize>| r.start - origin..r.end - origin;
        Record {
            offset: span.offset,
            timestamp: span.timestamp,
            key: span.key.as_ref().map(|r| bytes.slice(at(r))),
            value: span.value.as_ref().map(|r| bytes.slice(at(r))),
            headers: span
                .headers
                .as_ref()
                .map(|r| Headers::in_buffer(Arc::new(bytes.clone()), at(r)).unwrap())
                .unwrap_or_default(),
        }
    }

    proptest::proptest! {
        /// Records read as spans (from any record on, the ones before it decoded) are the records
        /// decoded: same offsets, timestamps, keys, values and headers, found in the bytes
        /// `rest` gave before the first span, and the iteration ends where decoding ends.
        #[test]
        fn spans_locate_the_records_that_decoding_returns(
            rows in proptest::collection::vec(
                (
                    proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)),
                    proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)),
                    proptest::collection::vec(
                        ("[a-z]{0,8}", proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20))),
                        0..3,
                    ),
                ),
                1..30,
            ),
            cut in 0usize..30,
        ) {
            let mut b = BatchBuilder::new(40);
            for (i, (k, v, hs)) in rows.iter().enumerate() {
                let headers: Vec<Header> =
                    hs.iter().map(|(k, v)| Header::new(k.as_str(), v.clone().map(Bytes::from))).collect();
                b.push(1_000 + i as i64, k.as_deref(), v.as_deref(), &headers).unwrap();
            }
            let batch = RecordBatch::parse(b.finish(Compression::None)).unwrap();
            let expected: Vec<Record> = batch.records(LIMIT).collect::<DecodeResult<_>>().unwrap();
            let mut records = batch.records(LIMIT);
            let cut = cut.min(expected.len());
            let mut got: Vec<Record> = records.by_ref().take(cut).collect::<DecodeResult<_>>().unwrap();
            let (bytes, origin) = records.rest();
            while let Some(span) = records.next_span() {
                got.push(resolved(&span.unwrap(), &bytes, origin));
            }
            proptest::prop_assert_eq!(got, expected);
            proptest::prop_assert!(records.next().is_none());
        }

        /// On damaged bytes (one byte changed, or the section cut short), reading spans finds
        /// what decoding finds: the same records, then the same error, then the end.
        #[test]
        fn spans_fail_where_decoding_fails(
            values in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 1..12),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
            cut_short in proptest::prelude::any::<bool>(),
        ) {
            let mut b = BatchBuilder::new(0);
            for v in &values {
                b.push(5, Some(b"k"), Some(v), &[Header::new("h", Some(Bytes::from_static(b"x")))]).unwrap();
            }
            let batch = RecordBatch::parse(b.finish(Compression::None)).unwrap();
            let header = batch.header().clone();
            let mut data = batch.records_data(LIMIT).unwrap().to_vec();
            let i = at.index(data.len());
            if cut_short {
                data.truncate(i);
            } else {
                data[i] = byte;
            }
            let data = Bytes::from(data);
            let decoded: Vec<DecodeResult<Record>> = Records::from_data(&header, data.clone()).collect();
            let mut records = Records::from_data(&header, data);
            let (bytes, origin) = records.rest();
            let spans: Vec<DecodeResult<Record>> = std::iter::from_fn(|| records.next_span())
                .map(|r| r.map(|span| resolved(&span, &bytes, origin)))
                .collect();
            proptest::prop_assert_eq!(spans, decoded);
        }
    }

    #[test]
    fn round_trips_every_codec() {
        for codec in Compression::ALL {
            let (b, expected) = sample_builder();
            let batch = b.finish(codec);
            let parsed = RecordBatch::parse(batch.clone()).unwrap();
            let h = parsed.header();
            assert_eq!(h.compression().unwrap(), codec);
            assert_eq!(h.record_count, 5);
            assert_eq!(h.last_offset_delta, 4);
            assert_eq!(h.base_timestamp, 1_700_000_000_000);
            assert_eq!(h.max_timestamp, 1_700_000_005_000);
            assert_eq!(h.producer_id, NO_PRODUCER_ID);
            assert_eq!(h.size(), batch.len());
            assert_eq!(parsed.next_offset(), 105);
            assert!(!h.is_transactional() && !h.is_control());
            assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
            assert_eq!(records_of(&batch), expected, "{codec}");
        }
    }

    #[test]
    fn finish_into_appends_after_existing_bytes() {
        for codec in Compression::ALL {
            let mut out = BytesMut::new();
            let (first, expected) = sample_builder();
            let (second, _) = sample_builder();
            first.finish_into(&mut out, codec);
            second.finish_into(&mut out, codec);
            let batches: Vec<_> = RecordBatches::new(out.freeze()).collect::<DecodeResult<_>>().unwrap();
            assert_eq!(batches.len(), 2);
            for b in batches {
                let got: Vec<_> = b.records(LIMIT).collect::<DecodeResult<_>>().unwrap();
                assert_eq!(got, expected);
            }
        }
    }

    #[test]
    fn uncompressed_records_share_the_input() {
        let (b, _) = sample_builder();
        let batch = b.finish(Compression::None);
        let range = batch.as_ptr_range();
        for r in records_of(&batch) {
            for part in r.key.iter().chain(r.value.iter()).filter(|p| !p.is_empty()) {
                assert!(range.contains(&part.as_ptr()));
            }
            for h in &r.headers {
                if !h.key.is_empty() {
                    assert!(range.contains(&h.key.as_bytes().as_ptr()));
                }
            }
        }
    }

    #[test]
    fn transactional_and_control_batches() {
        let mut data = BatchBuilder::new(0);
        data.set_producer_state(42, 3, 17).set_transactional(true).set_partition_leader_epoch(9);
        data.push(5, Some(b"k"), Some(b"v"), &[]).unwrap();
        let data = RecordBatch::parse(data.finish(Compression::Lz4)).unwrap();
        let h = data.header();
        assert!(h.is_transactional() && !h.is_control());
        assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (42, 3, 17));
        assert_eq!(h.partition_leader_epoch, 9);

        let mut marker = BatchBuilder::new(1);
        marker.set_producer_state(42, 3, NO_SEQUENCE).set_transactional(true).set_control(true);
        let key = ControlRecord::new(ControlType::COMMIT).encode();
        let value = EndTxnMarker { version: 0, coordinator_epoch: 7 }.encode();
        marker.push(6, Some(&key), Some(&value), &[]).unwrap();
        let marker = RecordBatch::parse(marker.finish(Compression::None)).unwrap();
        assert!(marker.is_control() && marker.is_transactional());
        let records: Vec<_> = marker.records(LIMIT).collect::<DecodeResult<_>>().unwrap();
        assert_eq!(records.len(), 1);
        let control = records[0].control_record().unwrap();
        assert_eq!(control, ControlRecord { version: 0, kind: ControlType::COMMIT });
        let end = EndTxnMarker::parse(records[0].value.as_deref().unwrap()).unwrap();
        assert_eq!(end.coordinator_epoch, 7);
    }

    #[test]
    fn control_keys_keep_unknown_types() {
        let c = ControlRecord::parse(&[0, 1, 0x12, 0x34, 0xff]).unwrap();
        assert_eq!(c, ControlRecord { version: 1, kind: ControlType(0x1234) });
        assert_eq!(ControlRecord::parse(&[0, 0, 0, 0]).unwrap().kind, ControlType::ABORT);
        assert!(matches!(ControlRecord::parse(&[0, 0, 1]), Err(DecodeError::UnexpectedEnd { .. })));
        assert_eq!(format!("{:?}", ControlType(9)), "ControlType(9)");
    }

    #[test]
    fn log_append_time_applies_to_every_record() {
        let mut b = BatchBuilder::new(0);
        b.set_log_append_time(Some(99));
        b.push(1, None, Some(b"a"), &[]).unwrap();
        b.push(2, None, Some(b"b"), &[]).unwrap();
        let batch = b.finish(Compression::None);
        let h = RecordBatch::parse(batch.clone()).unwrap().header().clone();
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.max_timestamp, 99);
        assert!(records_of(&batch).iter().all(|r| r.timestamp == 99));
    }

    #[test]
    fn empty_batch() {
        let batch = BatchBuilder::new(7).finish(Compression::None);
        assert_eq!(batch.len(), HEADER_SIZE);
        let b = RecordBatch::parse(batch).unwrap();
        assert_eq!(b.record_count(), 0);
        assert_eq!(b.header().base_timestamp, NO_TIMESTAMP);
        assert_eq!(b.records(LIMIT).count(), 0);
    }

    /// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: independent of the
    /// `crc32c` crate the codec uses.
    fn crc32c_bitwise(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn byte_exact_known_batch() {
        assert_eq!(crc32c_bitwise(b"123456789"), 0xE306_9283);

        let mut b = BatchBuilder::new(0);
        b.push(1000, Some(b"k"), Some(b"v"), &[]).unwrap();
        let batch = b.finish(Compression::None);

        // Assembled by hand from the format description.
        let mut expected: Vec<u8> = Vec::new();
        expected.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
        expected.extend_from_slice(&58i32.to_be_bytes()); // batchLength: 70 - 12
        expected.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
        expected.push(2); // magic
        expected.extend_from_slice(&[0; 4]); // crc, below
        expected.extend_from_slice(&0i16.to_be_bytes()); // attributes
        expected.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
        expected.extend_from_slice(&1000i64.to_be_bytes()); // baseTimestamp
        expected.extend_from_slice(&1000i64.to_be_bytes()); // maxTimestamp
        expected.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
        expected.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        expected.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        expected.extend_from_slice(&1i32.to_be_bytes()); // recordCount
                                                         // length 8, attributes, timestampDelta 0, offsetDelta 0, key "k", value "v", 0 headers
        expected.extend_from_slice(&[0x10, 0, 0, 0, 0x02, b'k', 0x02, b'v', 0]);
        let crc = crc32c_bitwise(&expected[21..]);
        expected[17..21].copy_from_slice(&crc.to_be_bytes());

        assert_eq!(&batch[..], &expected[..]);
        assert_eq!(RecordBatch::parse(batch).unwrap().header().crc, crc);
    }

    #[test]
    fn stops_cleanly_at_a_truncated_last_batch() {
        let (b1, expected) = sample_builder();
        let (b2, _) = sample_builder();
        let mut out = BytesMut::new();
        b1.finish_into(&mut out, Compression::Gzip);
        let first_len = out.len();
        b2.finish_into(&mut out, Compression::None);
        let full = out.freeze();
        for cut in [first_len, first_len + 5, first_len + 12, first_len + 40, full.len() - 1] {
            let mut it = RecordBatches::new(full.slice(..cut));
            let b = it.next().unwrap().unwrap();
            assert_eq!(b.records(LIMIT).collect::<DecodeResult<Vec<_>>>().unwrap(), expected);
            assert!(it.next().is_none());
            assert_eq!(it.is_truncated(), cut > first_len, "cut at {cut}");
        }
        let err = RecordBatch::parse(full.slice(..first_len - 1)).unwrap_err();
        assert!(matches!(err, DecodeError::UnexpectedEnd { .. }));
    }

    fn corrupt_crc(batch: &mut [u8]) {
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
        batch[CRC_OFFSET..ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
    }

    proptest::proptest! {
        /// The record reader's varints (a slice and a position, with a fast path for one and two
        /// bytes) read what the `Bytes` readers read, from any bytes: the same value or the
        /// same error, after the same number of bytes.
        #[test]
        fn record_varints_read_as_the_bytes_readers_do(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12)) {
            let mut c = Cursor { buf: &bytes, at: 0 };
            let mut b = Bytes::from(bytes.clone());
            let ours = c.varint("v").map(|v| (v, c.at));
            let theirs = get_varint(&mut b, "v").map(|v| (v, bytes.len() - b.len()));
            proptest::prop_assert_eq!(ours, theirs);

            let mut c = Cursor { buf: &bytes, at: 0 };
            let mut b = Bytes::from(bytes.clone());
            let ours = c.varlong("v").map(|v| (v, c.at));
            let theirs = super::super::primitives::get_varlong(&mut b, "v").map(|v| (v, bytes.len() - b.len()));
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    /// Every record field's varint at three bytes or more: offset deltas past 8 191, a key
    /// and a value past 8 191 bytes, timestamps far from the base in both directions.
    #[test]
    fn records_with_long_varints_round_trip() {
        let mut b = BatchBuilder::new(0);
        let mut expected = Vec::new();
        let big = vec![7u8; 20_000];
        for i in 0..10_000i64 {
            let ts = 1_700_000_000_000 + (i % 3 - 1) * 40_000_000_000;
            let (key, value): (Option<&[u8]>, Option<&[u8]>) = match i % 1000 {
                0 => (Some(&big[..9_000]), Some(&big)),
                1 => (None, Some(&big[..300])),
                _ => (Some(b"k"), None),
            };
            b.push(ts, key, value, &[]).unwrap();
            expected.push(Record {
                offset: i,
                timestamp: ts,
                key: key.map(Bytes::copy_from_slice),
                value: value.map(Bytes::copy_from_slice),
                headers: Headers::default(),
            });
        }
        assert_eq!(records_of(&b.finish(Compression::None)), expected);
    }

    #[test]
    fn record_count_mismatches_are_errors() {
        let (b, _) = sample_builder();
        let batch = b.finish(Compression::None);

        // One more than there are: the data runs out.
        let mut more = batch.to_vec();
        more[57..61].copy_from_slice(&6i32.to_be_bytes());
        corrupt_crc(&mut more);
        let b = RecordBatch::parse(Bytes::from(more)).unwrap();
        let results: Vec<_> = b.records(LIMIT).collect();
        assert_eq!(results.len(), 6);
        assert!(matches!(results[5], Err(DecodeError::Malformed { .. })));

        // One fewer: bytes are left over.
        let mut fewer = batch.to_vec();
        fewer[57..61].copy_from_slice(&4i32.to_be_bytes());
        corrupt_crc(&mut fewer);
        let b = RecordBatch::parse(Bytes::from(fewer)).unwrap();
        let results: Vec<_> = b.records(LIMIT).collect();
        assert_eq!(results.len(), 5);
        assert!(matches!(results[4], Err(DecodeError::TrailingBytes { .. })));

        // A count the bytes cannot hold fails before any record is read.
        let mut huge = batch.to_vec();
        huge[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        corrupt_crc(&mut huge);
        let b = RecordBatch::parse(Bytes::from(huge)).unwrap();
        let results: Vec<_> = b.records(LIMIT).collect();
        assert!(matches!(results[..], [Err(DecodeError::LengthExceedsInput { what: "recordCount", .. })]));
    }

    #[test]
    fn record_fields_must_fill_the_declared_length() {
        let mut b = BatchBuilder::new(0);
        b.push(0, Some(b"k"), Some(b"v"), &[]).unwrap();
        let mut bytes = b.finish(Compression::None).to_vec();
        // Declare a record one byte longer, and supply the byte.
        bytes[HEADER_SIZE] = 0x12;
        bytes.push(0);
        let len = (bytes.len() - LOG_OVERHEAD) as i32;
        bytes[8..12].copy_from_slice(&len.to_be_bytes());
        corrupt_crc(&mut bytes);
        let b = RecordBatch::parse(Bytes::from(bytes)).unwrap();
        let results: Vec<_> = b.records(LIMIT).collect();
        assert!(matches!(results[..], [Err(DecodeError::TrailingBytes { what: "record", .. })]));
    }

    #[test]
    fn header_keys_must_be_utf8() {
        let mut b = BatchBuilder::new(0);
        b.push(0, None, None, &[Header::new("é", None::<Bytes>)]).unwrap();
        let mut bytes = b.finish(Compression::None).to_vec();
        let at = bytes.len() - 2; // second byte of "é", then the null value
        bytes[at] = 0xff;
        corrupt_crc(&mut bytes);
        let b = RecordBatch::parse(Bytes::from(bytes)).unwrap();
        let results: Vec<_> = b.records(LIMIT).collect();
        assert!(matches!(results[..], [Err(DecodeError::InvalidUtf8 { .. })]));
    }

    /// The records of a batch that have headers share one handle on the batch's bytes, each
    /// reads back its own, records without headers hold none, and the iterator lets go of the
    /// handle at the batch's last record (from then on, only the records kept hold the batch).
    #[test]
    fn the_headers_of_a_batch_share_one_handle_and_read_back_whole() {
        let mut b = BatchBuilder::new(0);
        let headers_of = |i: usize| -> Vec<Header> {
            (0..i % 4)
                .map(|j| Header::new(format!("k{i}-{j}"), (j % 2 == 0).then(|| Bytes::from(vec![i as u8; j]))))
                .collect()
        };
        for i in 0..40 {
            b.push(i as i64, Some(b"key"), Some(&[i as u8; 30]), &headers_of(i)).unwrap();
        }
        let batch = RecordBatch::parse(b.finish(Compression::None)).unwrap();
        let mut records = batch.records(LIMIT);
        let mut got = Vec::new();
        for _ in 0..40 {
            got.push(records.next().unwrap().unwrap());
        }
        assert!(records.shared.is_none(), "the iterator still holds the batch after its last record");
        assert!(records.next().is_none());
        let mut handles = Vec::new();
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.headers.to_vec(), headers_of(i), "record {i}");
            assert_eq!((r.headers.len(), r.headers.is_empty()), (i % 4, i % 4 == 0));
            assert_eq!(r.headers, Headers::from(headers_of(i)));
            match &r.headers.buf {
                None => assert_eq!(i % 4, 0, "record {i} has headers but no handle"),
                Some(buf) => handles.push(buf.clone()),
            }
        }
        assert_eq!(handles.len(), 30);
        assert!(handles.iter().all(|h| Arc::ptr_eq(h, &handles[0])), "one handle per batch");
        let detached = got[39].headers.detached();
        assert_eq!(detached, got[39].headers);
        assert_eq!(detached.buf.as_ref().map(|b| b.len()), Some(got[39].headers.raw().len()));
    }

    #[test]
    fn headers_built_from_nothing_are_empty() {
        let built: Headers = Vec::<Header>::new().into();
        assert!(built.is_empty() && built.buf.is_none());
        assert_eq!(built, Headers::default());
        assert_eq!(built.iter().count(), 0);
        let one: Headers = vec![Header::new("a", None::<Bytes>)].into();
        assert_ne!(one, built);
        assert_eq!((one.len(), one.last("a")), (1, Some(Header::new("a", None::<Bytes>))));
    }

    #[test]
    fn size_estimate_tracks_the_uncompressed_size() {
        let mut b = BatchBuilder::new(0);
        assert_eq!(b.size_estimate(), HEADER_SIZE);
        let h = [Header::new("h", Some(Bytes::from_static(b"x")))];
        for i in 0..50 {
            let before = b.size_estimate();
            let bound = record_size_upper_bound(Some(b"key"), Some(&[7; 100]), &h);
            assert!(b.has_room_for(before + bound, bound));
            b.push(i * 10, Some(b"key"), Some(&[7; 100]), &h).unwrap();
            assert!(b.size_estimate() - before <= bound);
        }
        assert!(!b.has_room_for(b.size_estimate(), record_size_upper_bound(None, None, &[])));
        assert_eq!(b.len(), 50);
        assert_eq!(b.max_timestamp(), 490);
        let size = b.size_estimate();
        assert_eq!(b.finish(Compression::None).len(), size);
    }

    #[test]
    fn patched_producer_state_keeps_the_batch_valid() {
        for codec in [Compression::None, Compression::Zstd] {
            let (mut b, expected) = sample_builder();
            b.set_producer_state(1, 0, 0).set_transactional(true);
            let mut bytes = BytesMut::from(&b.finish(codec)[..]);
            patch_producer_state(&mut bytes, 77, 5, 1234);
            let batch = RecordBatch::parse(bytes.freeze()).unwrap();
            let h = batch.header();
            assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (77, 5, 1234));
            assert!(h.is_transactional());
            let got: Vec<_> = batch.records(LIMIT).collect::<DecodeResult<_>>().unwrap();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn wrapping_timestamps_round_trip() {
        let mut b = BatchBuilder::new(i64::MAX - 1);
        b.push(i64::MAX, None, None, &[]).unwrap();
        b.push(i64::MIN, None, None, &[]).unwrap();
        let got = records_of(&b.finish(Compression::None));
        assert_eq!(got[0].timestamp, i64::MAX);
        assert_eq!(got[1].timestamp, i64::MIN);
        assert_eq!(got[1].offset, i64::MAX);
    }
}
