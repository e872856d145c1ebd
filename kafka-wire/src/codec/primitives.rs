//! Kafka's primitive types: fixed-width integers, varints, strings, bytes, arrays and tagged
//! fields, in both the classic and the compact (flexible-version, KIP-482) forms.
//!
//! Decoding reads from a [`Bytes`] and returns slices that share its allocation. Every length and
//! count is checked against what remains before anything is allocated or read.
//!
//! Encoding appends to a [`BytesMut`]. A length its prefix cannot express is an
//! [`EncodeError::TooLong`] naming the field (`what`), never a truncated prefix; on an error the
//! buffer holds a partial encoding, which the caller discards.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, DecodeResult, EncodeError, EncodeResult};
use super::types::{UnknownTaggedFields, Uuid};

/// Fails unless `buf` holds at least `n` more bytes.
#[inline]
pub fn need(buf: &Bytes, n: usize, what: &'static str) -> DecodeResult<()> {
    if buf.remaining() < n {
        return Err(DecodeError::UnexpectedEnd { what, needed: n, remaining: buf.remaining() });
    }
    Ok(())
}

/// Splits the next `n` bytes off `buf` without copying.
#[inline]
pub fn take(buf: &mut Bytes, n: usize, what: &'static str) -> DecodeResult<Bytes> {
    need(buf, n, what)?;
    Ok(buf.split_to(n))
}

macro_rules! fixed_int {
    ($($get:ident $put:ident $t:ty, $bget:ident, $bput:ident;)*) => {$(
        #[doc = concat!("Reads a big-endian `", stringify!($t), "`.")]
        #[inline]
        pub fn $get(buf: &mut Bytes, what: &'static str) -> DecodeResult<$t> {
            need(buf, std::mem::size_of::<$t>(), what)?;
            Ok(buf.$bget())
        }
        #[doc = concat!("Appends a big-endian `", stringify!($t), "`.")]
        #[inline]
        pub fn $put(buf: &mut BytesMut, v: $t) {
            buf.$bput(v);
        }
    )*};
}

fixed_int! {
    get_i8 put_i8 i8, get_i8, put_i8;
    get_i16 put_i16 i16, get_i16, put_i16;
    get_u16 put_u16 u16, get_u16, put_u16;
    get_i32 put_i32 i32, get_i32, put_i32;
    get_u32 put_u32 u32, get_u32, put_u32;
    get_i64 put_i64 i64, get_i64, put_i64;
    get_f64 put_f64 f64, get_f64, put_f64;
}

/// Reads a boolean: one byte, any non-zero value is true.
#[inline]
pub fn get_bool(buf: &mut Bytes, what: &'static str) -> DecodeResult<bool> {
    Ok(get_i8(buf, what)? != 0)
}

/// Appends a boolean as one byte, 0 or 1.
#[inline]
pub fn put_bool(buf: &mut BytesMut, v: bool) {
    buf.put_u8(u8::from(v));
}

/// Reads a 16-byte UUID.
pub fn get_uuid(buf: &mut Bytes, what: &'static str) -> DecodeResult<Uuid> {
    need(buf, 16, what)?;
    let mut raw = [0u8; 16];
    buf.copy_to_slice(&mut raw);
    Ok(Uuid(raw))
}

/// Appends a 16-byte UUID.
pub fn put_uuid(buf: &mut BytesMut, v: &Uuid) {
    buf.put_slice(&v.0);
}

/// Unsigned LEB128 varint of at most 5 bytes (32 bits).
pub fn get_uvarint(buf: &mut Bytes, what: &'static str) -> DecodeResult<u32> {
    narrow_uvarint(get_uvarlong_max(buf, 5, what)?)
}

/// Unsigned LEB128 varint of at most 10 bytes (64 bits).
pub fn get_uvarlong(buf: &mut Bytes, what: &'static str) -> DecodeResult<u64> {
    get_uvarlong_max(buf, 10, what)
}

fn get_uvarlong_max(buf: &mut Bytes, max_bytes: usize, what: &'static str) -> DecodeResult<u64> {
    let mut at = 0;
    let value = uvarlong_at(buf, &mut at, max_bytes, what)?;
    buf.advance(at);
    Ok(value)
}

/// An unsigned LEB128 varint of at most `max_bytes` bytes, read from `buf` at `*at`, which it
/// moves past the varint (also the record decoder's, which reads from a slice).
pub(crate) fn uvarlong_at(buf: &[u8], at: &mut usize, max_bytes: usize, what: &'static str) -> DecodeResult<u64> {
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let Some(&b) = buf.get(*at) else {
            return Err(DecodeError::UnexpectedEnd { what, needed: 1, remaining: 0 });
        };
        *at += 1;
        let bits = u64::from(b & 0x7f);
        let shift = 7 * i as u32;
        // The last byte may only carry the bits that still fit.
        if shift == 63 && bits > 1 {
            return Err(DecodeError::VarintTooLong { max_bytes });
        }
        value |= bits << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::VarintTooLong { max_bytes })
}

/// Zig-zag signed varint, 32 bits (record fields).
pub fn get_varint(buf: &mut Bytes, what: &'static str) -> DecodeResult<i32> {
    get_uvarint(buf, what).map(unzigzag32)
}

/// Zig-zag signed varint, 64 bits (record timestamp and offset deltas).
pub fn get_varlong(buf: &mut Bytes, what: &'static str) -> DecodeResult<i64> {
    get_uvarlong(buf, what).map(unzigzag64)
}

/// An unsigned varint of 32 bits read as up to five bytes: too large for 32 bits is too long.
#[inline]
pub(crate) fn narrow_uvarint(v: u64) -> DecodeResult<u32> {
    u32::try_from(v).map_err(|_| DecodeError::VarintTooLong { max_bytes: 5 })
}

/// The signed value of a zig-zag encoded 32-bit varint.
#[inline]
pub(crate) const fn unzigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

/// The signed value of a zig-zag encoded 64-bit varint.
#[inline]
pub(crate) const fn unzigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends an unsigned LEB128 varint (32 bits).
pub fn put_uvarint(buf: &mut BytesMut, v: u32) {
    put_uvarlong(buf, u64::from(v));
}

/// Appends an unsigned LEB128 varint (64 bits).
pub fn put_uvarlong(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Appends a zig-zag signed varint, 32 bits.
pub fn put_varint(buf: &mut BytesMut, v: i32) {
    put_uvarint(buf, ((v << 1) ^ (v >> 31)) as u32);
}

/// Appends a zig-zag signed varint, 64 bits.
pub fn put_varlong(buf: &mut BytesMut, v: i64) {
    put_uvarlong(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Number of bytes `put_uvarlong` writes for `v`.
pub const fn uvarint_len(v: u64) -> usize {
    // Seven bits per byte: the significant bits rounded up to sevens, without a loop (a
    // producer sizes each record three times with it).
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Number of bytes `put_varint` writes for `v`.
pub const fn varint_len(v: i32) -> usize {
    uvarint_len(((v << 1) ^ (v >> 31)) as u32 as u64)
}

/// Number of bytes `put_varlong` writes for `v`.
pub const fn varlong_len(v: i64) -> usize {
    uvarint_len(((v << 1) ^ (v >> 63)) as u64)
}

/// Reads a length prefix: `i16` or `i32` in classic encoding, `uvarint - 1` in compact encoding.
/// `None` is null (-1). The value is checked against the remaining input but its last
/// `reserved` bytes, each item taking at least `min_item_size` bytes.
fn get_len(
    buf: &mut Bytes,
    form: LenForm,
    min_item_size: usize,
    what: &'static str,
    reserved: usize,
) -> DecodeResult<Option<usize>> {
    let len: i64 = match form {
        LenForm::I16 => i64::from(get_i16(buf, what)?),
        LenForm::I32 => i64::from(get_i32(buf, what)?),
        LenForm::Compact => i64::from(get_uvarint(buf, what)?) - 1,
    };
    if len == -1 {
        return Ok(None);
    }
    if len < -1 {
        return Err(DecodeError::InvalidLength { what, len });
    }
    let len = len as u64;
    let available = buf.remaining().saturating_sub(reserved);
    if len.saturating_mul(min_item_size.max(1) as u64) > available as u64 {
        return Err(DecodeError::LengthExceedsInput { what, len, remaining: available });
    }
    Ok(Some(len as usize))
}

#[derive(Clone, Copy)]
enum LenForm {
    I16,
    I32,
    Compact,
}

fn str_form(compact: bool) -> LenForm {
    if compact {
        LenForm::Compact
    } else {
        LenForm::I16
    }
}

fn bytes_form(compact: bool) -> LenForm {
    if compact {
        LenForm::Compact
    } else {
        LenForm::I32
    }
}

/// Reads a nullable string (classic: `int16` length; compact: `uvarint` length + 1).
pub fn get_nullable_string(buf: &mut Bytes, compact: bool, what: &'static str) -> DecodeResult<Option<ByteString>> {
    let Some(len) = get_len(buf, str_form(compact), 1, what, 0)? else { return Ok(None) };
    // A compact length can claim more than a string may hold; such a string could not be
    // written back (Kafka refuses it too).
    if len > MAX_STRING_LEN {
        return Err(DecodeError::InvalidLength { what, len: len as i64 });
    }
    let raw = buf.split_to(len);
    ByteString::try_from(raw).map(Some).map_err(|_| DecodeError::InvalidUtf8 { what })
}

/// Reads a string; null is [`DecodeError::UnexpectedNull`].
pub fn get_string(buf: &mut Bytes, compact: bool, what: &'static str) -> DecodeResult<ByteString> {
    get_nullable_string(buf, compact, what)?.ok_or(DecodeError::UnexpectedNull { what })
}

/// Reads a nullable byte sequence (classic: `int32` length; compact: `uvarint` length + 1), sharing
/// the input's allocation.
pub fn get_nullable_bytes(buf: &mut Bytes, compact: bool, what: &'static str) -> DecodeResult<Option<Bytes>> {
    let Some(len) = get_len(buf, bytes_form(compact), 1, what, 0)? else { return Ok(None) };
    Ok(Some(buf.split_to(len)))
}

/// Reads a byte sequence; null is [`DecodeError::UnexpectedNull`].
pub fn get_bytes(buf: &mut Bytes, compact: bool, what: &'static str) -> DecodeResult<Bytes> {
    get_nullable_bytes(buf, compact, what)?.ok_or(DecodeError::UnexpectedNull { what })
}

/// Reads an array's element count; `None` is a null array. Each element takes at least
/// `min_item_size` bytes, so a count the input cannot hold is refused before any allocation.
pub fn get_array_len(
    buf: &mut Bytes,
    compact: bool,
    min_item_size: usize,
    what: &'static str,
) -> DecodeResult<Option<usize>> {
    get_len(buf, bytes_form(compact), min_item_size, what, 0)
}

/// As [`get_array_len`], for an array followed by at least `reserved` bytes (the least that
/// what comes after it takes): the elements must fit in the bytes before those. Nested arrays
/// whose counts are forged then cannot all claim the same remaining input.
pub fn get_array_len_before(
    buf: &mut Bytes,
    compact: bool,
    min_item_size: usize,
    reserved: usize,
    what: &'static str,
) -> DecodeResult<Option<usize>> {
    get_len(buf, bytes_form(compact), min_item_size, what, reserved)
}

/// How much memory the structures decoded from one message may take, in proportion to the
/// message's size: every array's elements are charged before the array is allocated. Strings and
/// byte sequences share the input's allocation, so arrays are what can make a message cost more
/// in memory than on the wire: a structure of empty strings takes one byte per string on the
/// wire and 32 in memory. Whatever the input, what a decoded message holds stays within
/// [`DecodeBudget::PER_INPUT_BYTE`] times its size plus [`DecodeBudget::BASE`] (and the unknown
/// tagged fields, kept as a copy of their wire bytes).
#[derive(Debug)]
pub struct DecodeBudget {
    left: usize,
}

impl DecodeBudget {
    /// Bytes of decoded structures allowed per input byte. Honest answers take at most about 6
    /// (a Metadata partition without replicas); only structures of empty strings go beyond.
    pub const PER_INPUT_BYTE: usize = 8;
    /// Bytes allowed whatever the input's size: a small message may hold a few large structures.
    pub const BASE: usize = 64 << 10;

    /// The allowance for decoding `input_len` bytes.
    pub fn for_input(input_len: usize) -> Self {
        Self { left: input_len.saturating_mul(Self::PER_INPUT_BYTE).saturating_add(Self::BASE) }
    }

    /// Charges `n` elements of `T` against the allowance and allocates a vector for them;
    /// [`DecodeError::MemoryBudgetExceeded`] names `what` when they do not fit.
    #[inline]
    pub fn vec<T>(&mut self, n: usize, what: &'static str) -> DecodeResult<Vec<T>> {
        let needed = n.saturating_mul(size_of::<T>());
        if needed > self.left {
            return Err(DecodeError::MemoryBudgetExceeded { what, needed, left: self.left });
        }
        self.left -= needed;
        Ok(Vec::with_capacity(n))
    }
}

/// The longest string Kafka's strings carry, in bytes, in the classic (`int16` length) and the
/// compact form alike (Kafka's own encoders refuse longer ones in both).
pub const MAX_STRING_LEN: usize = i16::MAX as usize;

/// The longest byte sequence, array or tagged field: lengths and counts are `int32` (or, compact,
/// a varint of the length plus one that Kafka reads back into an `int32`).
pub const MAX_BYTES_LEN: usize = i32::MAX as usize;

/// Writes a length prefix (`None`: null) after checking it against `max`.
fn put_len(buf: &mut BytesMut, form: LenForm, len: Option<usize>, max: usize, what: &'static str) -> EncodeResult<()> {
    let Some(n) = len else {
        match form {
            LenForm::I16 => buf.put_i16(-1),
            LenForm::I32 => buf.put_i32(-1),
            LenForm::Compact => put_uvarint(buf, 0),
        }
        return Ok(());
    };
    if n > max {
        return Err(EncodeError::TooLong { what, len: n, max });
    }
    // `max` is at most i32::MAX, so every cast below is exact.
    match form {
        LenForm::I16 => buf.put_i16(n as i16),
        LenForm::I32 => buf.put_i32(n as i32),
        LenForm::Compact => put_uvarint(buf, n as u32 + 1),
    }
    Ok(())
}

/// Appends a nullable string; longer than [`MAX_STRING_LEN`] is [`EncodeError::TooLong`].
pub fn put_nullable_string(buf: &mut BytesMut, compact: bool, v: Option<&str>, what: &'static str) -> EncodeResult<()> {
    put_len(buf, str_form(compact), v.map(str::len), MAX_STRING_LEN, what)?;
    if let Some(s) = v {
        buf.put_slice(s.as_bytes());
    }
    Ok(())
}

/// Appends a string; longer than [`MAX_STRING_LEN`] is [`EncodeError::TooLong`].
pub fn put_string(buf: &mut BytesMut, compact: bool, v: &str, what: &'static str) -> EncodeResult<()> {
    put_nullable_string(buf, compact, Some(v), what)
}

/// Appends a nullable byte sequence; longer than [`MAX_BYTES_LEN`] is [`EncodeError::TooLong`].
pub fn put_nullable_bytes(buf: &mut BytesMut, compact: bool, v: Option<&[u8]>, what: &'static str) -> EncodeResult<()> {
    put_len(buf, bytes_form(compact), v.map(<[u8]>::len), MAX_BYTES_LEN, what)?;
    if let Some(b) = v {
        buf.put_slice(b);
    }
    Ok(())
}

/// Appends a byte sequence; longer than [`MAX_BYTES_LEN`] is [`EncodeError::TooLong`].
pub fn put_bytes(buf: &mut BytesMut, compact: bool, v: &[u8], what: &'static str) -> EncodeResult<()> {
    put_nullable_bytes(buf, compact, Some(v), what)
}

/// Writes an array's element count; `None` is a null array.
pub fn put_array_len(buf: &mut BytesMut, compact: bool, len: Option<usize>, what: &'static str) -> EncodeResult<()> {
    put_len(buf, bytes_form(compact), len, MAX_BYTES_LEN, what)
}

/// Reads a tagged-field section. `known` is offered each field's tag and its bytes and returns
/// `Ok(false)` for tags it does not know; those are returned, copied in one allocation of their
/// wire size, so that they round-trip.
pub fn get_tagged_fields(
    buf: &mut Bytes,
    mut known: impl FnMut(u32, &mut Bytes) -> DecodeResult<bool>,
) -> DecodeResult<UnknownTaggedFields> {
    let count = get_uvarint(buf, "tagged field count")?;
    if count == 0 {
        return Ok(UnknownTaggedFields::new());
    }
    // Each tagged field takes at least two bytes (its tag and its size).
    if u64::from(count) * 2 > buf.remaining() as u64 {
        return Err(DecodeError::LengthExceedsInput {
            what: "tagged fields",
            len: u64::from(count),
            remaining: buf.remaining(),
        });
    }
    let section = buf.clone();
    // The unknown fields, as a range of `section` while they are contiguous (as when every
    // field is unknown, or the known ones come first); copied out once a known one splits them.
    let mut run = 0..0;
    let mut split: Option<Vec<u8>> = None;
    for _ in 0..count {
        let start = section.len() - buf.len();
        let tag = get_uvarint(buf, "tag")?;
        let size = get_uvarint(buf, "tagged field size")? as usize;
        let mut data = take(buf, size, "tagged field")?;
        if known(tag, &mut data)? {
            if !data.is_empty() {
                return Err(DecodeError::TrailingBytes { what: "tagged field", count: data.len() });
            }
            continue;
        }
        let end = section.len() - buf.len();
        match &mut split {
            Some(copy) => copy.extend_from_slice(&section[start..end]),
            None if run.is_empty() => run = start..end,
            None if run.end == start => run.end = end,
            None => {
                let mut copy = section[run.clone()].to_vec();
                copy.extend_from_slice(&section[start..end]);
                split = Some(copy);
            }
        }
    }
    let raw = match split {
        Some(copy) => copy.into_boxed_slice(),
        None => Box::from(&section[run]),
    };
    Ok(UnknownTaggedFields::from_raw(raw))
}

/// Writes the number of tagged fields that follow.
pub fn put_tagged_count(buf: &mut BytesMut, n: usize, what: &'static str) -> EncodeResult<()> {
    if n > MAX_BYTES_LEN {
        return Err(EncodeError::TooLong { what, len: n, max: MAX_BYTES_LEN });
    }
    put_uvarint(buf, n as u32);
    Ok(())
}

/// Records fields of at least this many bytes go as parts of their own in an [`Encoder`] that
/// takes parts: smaller ones cost less to copy than to write apart.
pub const RECORDS_PART_MIN: usize = 1024;

/// Where a message body is encoded: a buffer (which it dereferences to, for the `put_*`
/// functions) and, for a caller that writes the frame in parts, the `records` fields left out of
/// it, each with its place in the buffer, so that a Produce request's batches are written to the
/// socket from where they are, not copied into the frame first.
pub struct Encoder<'a> {
    buf: &'a mut BytesMut,
    parts: Option<&'a mut Vec<(usize, Bytes)>>,
}

impl<'a> Encoder<'a> {
    /// Encodes everything into `buf`.
    pub fn new(buf: &'a mut BytesMut) -> Self {
        Self { buf, parts: None }
    }

    /// Encodes into `buf`, except `records` fields of [`RECORDS_PART_MIN`] bytes or more: those
    /// are added to `parts` with the length of `buf` at which they belong.
    pub fn with_parts(buf: &'a mut BytesMut, parts: &'a mut Vec<(usize, Bytes)>) -> Self {
        Self { buf, parts: Some(parts) }
    }

    /// The bytes of the parts left out of the buffer so far.
    pub fn parts_len(&self) -> usize {
        self.parts.as_ref().map_or(0, |parts| parts.iter().map(|(_, p)| p.len()).sum())
    }
}

impl std::ops::Deref for Encoder<'_> {
    type Target = BytesMut;

    fn deref(&self) -> &BytesMut {
        self.buf
    }
}

impl std::ops::DerefMut for Encoder<'_> {
    fn deref_mut(&mut self) -> &mut BytesMut {
        self.buf
    }
}

/// Appends a `records` field (a byte sequence): as a part of its own when the encoder takes
/// parts and it is large enough, its length prefix in the buffer either way.
pub fn put_records(buf: &mut Encoder<'_>, compact: bool, v: &Bytes, what: &'static str) -> EncodeResult<()> {
    match &mut buf.parts {
        Some(parts) if v.len() >= RECORDS_PART_MIN => {
            put_len(buf.buf, bytes_form(compact), Some(v.len()), MAX_BYTES_LEN, what)?;
            parts.push((buf.buf.len(), v.clone()));
            Ok(())
        }
        _ => put_bytes(buf, compact, v, what),
    }
}

/// Writes one tagged field whose body `body` writes in place. Its size precedes it as a varint:
/// one byte is reserved and patched afterwards; a body of 128 bytes or more (rare: tagged fields
/// are small) is moved up in place to make room for the longer varint, so the body is written
/// whole into the buffer, never in parts.
pub fn put_tagged_field(
    buf: &mut Encoder<'_>,
    tag: u32,
    what: &'static str,
    body: impl FnOnce(&mut Encoder<'_>) -> EncodeResult<()>,
) -> EncodeResult<()> {
    let buf = &mut *buf.buf;
    put_uvarint(buf, tag);
    let at = buf.len();
    buf.put_u8(0);
    body(&mut Encoder::new(buf))?;
    let size = buf.len() - at - 1;
    if size > MAX_BYTES_LEN {
        return Err(EncodeError::TooLong { what, len: size, max: MAX_BYTES_LEN });
    }
    let width = uvarint_len(size as u64);
    if width > 1 {
        buf.put_bytes(0, width - 1);
        buf.copy_within(at + 1..at + 1 + size, at + width);
    }
    let mut v = size as u32;
    for b in &mut buf[at..at + width] {
        *b = (v as u8 & 0x7f) | if v >= 0x80 { 0x80 } else { 0 };
        v >>= 7;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_uvarlong(v: u64) {
        let mut b = BytesMut::new();
        put_uvarlong(&mut b, v);
        assert_eq!(b.len(), uvarint_len(v));
        let mut r = b.freeze();
        assert_eq!(get_uvarlong(&mut r, "t").unwrap(), v);
        assert!(r.is_empty());
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            roundtrip_uvarlong(v);
        }
        // Every width: the length is computed from the bit count, not by writing.
        for bit in 0..64 {
            roundtrip_uvarlong(1 << bit);
            roundtrip_uvarlong((1 << bit) - 1);
        }
        for v in [0, -1, 1, i32::MIN, i32::MAX] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(get_varint(&mut b.freeze(), "t").unwrap(), v);
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(b.len(), varlong_len(v));
            assert_eq!(get_varlong(&mut b.freeze(), "t").unwrap(), v);
        }
    }

    #[test]
    fn truncated_varint_is_unexpected_end() {
        let mut b = Bytes::from_static(&[0x80, 0x80]);
        assert!(matches!(get_uvarint(&mut b, "t"), Err(DecodeError::UnexpectedEnd { .. })));
    }

    #[test]
    fn overlong_varint_is_refused() {
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(get_uvarint(&mut b, "t"), Err(DecodeError::VarintTooLong { max_bytes: 5 }));
        let mut b = Bytes::from_static(&[0xff; 11]);
        assert_eq!(get_uvarlong(&mut b, "t"), Err(DecodeError::VarintTooLong { max_bytes: 10 }));
        // Ten bytes whose last carries more than the one bit left in 64.
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        assert_eq!(get_uvarlong(&mut b, "t"), Err(DecodeError::VarintTooLong { max_bytes: 10 }));
        // Five bytes that overflow 32 bits.
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x1f]);
        assert_eq!(get_uvarint(&mut b, "t"), Err(DecodeError::VarintTooLong { max_bytes: 5 }));
    }

    #[test]
    fn huge_array_count_is_refused_before_allocating() {
        let mut b = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0, 0]);
        assert!(matches!(
            get_array_len(&mut b, false, 4, "a"),
            Err(DecodeError::LengthExceedsInput { len: 0x7fff_ffff, .. })
        ));
    }

    #[test]
    fn an_array_count_must_leave_the_bytes_promised_to_what_follows() {
        // Two 4-byte elements in 8 bytes: they fit, unless 1 of those bytes is promised.
        let input = Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(get_array_len_before(&mut input.clone(), false, 4, 0, "a"), Ok(Some(2)));
        assert_eq!(
            get_array_len_before(&mut input.clone(), false, 4, 1, "a"),
            Err(DecodeError::LengthExceedsInput { what: "a", len: 2, remaining: 7 })
        );
    }

    #[test]
    fn negative_lengths_other_than_null_are_invalid() {
        let mut b = Bytes::from_static(&[0xff, 0xfe]);
        assert_eq!(get_nullable_string(&mut b, false, "s"), Err(DecodeError::InvalidLength { what: "s", len: -2 }));
        let mut b = Bytes::from_static(&[0xff, 0xff]);
        assert_eq!(get_string(&mut b, false, "s"), Err(DecodeError::UnexpectedNull { what: "s" }));
    }

    #[test]
    fn a_string_longer_than_i16_max_is_refused_in_both_forms() {
        let fits = "x".repeat(MAX_STRING_LEN);
        let too_long = "x".repeat(MAX_STRING_LEN + 1);
        for compact in [false, true] {
            let mut b = BytesMut::new();
            put_string(&mut b, compact, &fits, "s").unwrap();
            assert_eq!(&*get_string(&mut b.freeze(), compact, "s").unwrap(), fits);
            let err = put_nullable_string(&mut BytesMut::new(), compact, Some(&too_long), "T.s").unwrap_err();
            assert_eq!(err, EncodeError::TooLong { what: "T.s", len: 32768, max: 32767 });
        }
    }

    #[test]
    fn length_prefixes_refuse_what_they_cannot_express() {
        // Each form at its limit and one past it; no value of that size is allocated.
        let cases = [
            (LenForm::I16, MAX_STRING_LEN, vec![0x7f, 0xff]),
            (LenForm::I32, MAX_BYTES_LEN, vec![0x7f, 0xff, 0xff, 0xff]),
            (LenForm::Compact, MAX_BYTES_LEN, vec![0x80, 0x80, 0x80, 0x80, 0x08]),
        ];
        for (form, max, bytes_at_max) in cases {
            let mut b = BytesMut::new();
            put_len(&mut b, form, Some(max), max, "x").unwrap();
            assert_eq!(&b[..], &bytes_at_max[..]);
            let err = put_len(&mut BytesMut::new(), form, Some(max + 1), max, "T.x").unwrap_err();
            assert_eq!(err, EncodeError::TooLong { what: "T.x", len: max + 1, max });
        }
        let err = put_array_len(&mut BytesMut::new(), false, Some(MAX_BYTES_LEN + 1), "T.a").unwrap_err();
        assert!(matches!(err, EncodeError::TooLong { what: "T.a", .. }), "{err:?}");
        let err = put_array_len(&mut BytesMut::new(), true, Some(u32::MAX as usize), "T.a").unwrap_err();
        assert!(matches!(err, EncodeError::TooLong { what: "T.a", .. }), "{err:?}");
        let err = put_tagged_count(&mut BytesMut::new(), MAX_BYTES_LEN + 1, "T.tags").unwrap_err();
        assert!(matches!(err, EncodeError::TooLong { what: "T.tags", .. }), "{err:?}");
    }

    #[test]
    fn a_compact_string_longer_than_i16_max_is_refused_when_read() {
        let mut b = BytesMut::new();
        put_uvarint(&mut b, MAX_STRING_LEN as u32 + 2);
        b.put_bytes(b'x', MAX_STRING_LEN + 1);
        let err = get_string(&mut b.freeze(), true, "T.s").unwrap_err();
        assert_eq!(err, DecodeError::InvalidLength { what: "T.s", len: 32768 });
    }

    #[test]
    fn nulls_are_written_in_every_form() {
        let mut b = BytesMut::new();
        put_nullable_string(&mut b, false, None, "s").unwrap();
        put_nullable_bytes(&mut b, false, None, "b").unwrap();
        put_nullable_string(&mut b, true, None, "s").unwrap();
        put_array_len(&mut b, true, None, "a").unwrap();
        assert_eq!(&b[..], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
    }

    #[test]
    fn tagged_field_sizes_are_patched_in_place() {
        for size in [0usize, 1, 127, 128, 300, 20_000] {
            let mut b = BytesMut::from(&b"head"[..]);
            put_tagged_field(&mut Encoder::new(&mut b), 7, "t", |b| {
                b.put_bytes(0xab, size);
                Ok(())
            })
            .unwrap();
            let mut r = b.freeze();
            r.advance(4);
            assert_eq!(get_uvarint(&mut r, "tag").unwrap(), 7);
            assert_eq!(get_uvarint(&mut r, "size").unwrap() as usize, size);
            assert_eq!(r.len(), size);
            assert!(r.iter().all(|&x| x == 0xab));
        }
    }

    #[test]
    fn unknown_tagged_fields_are_kept_around_known_ones() {
        // Four fields: unknown 9, known 1, unknown 12 and 13 (as a later version could send them).
        let input = Bytes::from_static(&[4, 9, 1, 0xaa, 1, 1, 5, 12, 0, 13, 2, 0xbb, 0xcc]);
        let mut known = Vec::new();
        let unknown = get_tagged_fields(&mut input.clone(), |tag, data| {
            if tag != 1 {
                return Ok(false);
            }
            known.push(get_i8(data, "known")?);
            Ok(true)
        })
        .unwrap();
        assert_eq!(known, vec![5]);
        let fields: Vec<(u32, Vec<u8>)> = unknown.iter().map(|(t, d)| (t, d.to_vec())).collect();
        assert_eq!(fields, vec![(9, vec![0xaa]), (12, vec![]), (13, vec![0xbb, 0xcc])]);
        // Every field unknown: the same bytes.
        let all = get_tagged_fields(&mut input.clone(), |_, _| Ok(false)).unwrap();
        assert_eq!(all.checked_raw("t").unwrap(), (&input[1..], 4));
    }

    #[test]
    fn strings_share_the_input_allocation() {
        let input = Bytes::from_static(b"\x00\x05hello!");
        let mut b = input.clone();
        let s = get_string(&mut b, false, "s").unwrap();
        assert_eq!(&*s, "hello");
        assert_eq!(s.as_bytes().as_ptr(), input[2..].as_ptr());
    }
}
