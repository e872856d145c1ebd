//! Value types shared by the message descriptions.

use std::fmt;

use bytes::Bytes;

use super::error::{EncodeError, EncodeResult};
use super::primitives::MAX_BYTES_LEN;

/// A 128-bit UUID as Kafka sends it (topic ids, directory ids).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// The all-zero UUID, which Kafka uses for "no topic id".
    pub const ZERO: Self = Self([0; 16]);
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Uuid {
    /// Kafka prints UUIDs as 22 characters of URL-safe base64 without padding.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::with_capacity(22);
        for chunk in self.0.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            }
        }
        f.write_str(&out)
    }
}

/// A tagged field this version of the codec does not know, as given to
/// [`UnknownTaggedFields::push`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawTaggedField {
    /// The field's tag.
    pub tag: u32,
    /// The field's bytes, undecoded.
    pub data: Bytes,
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for RawTaggedField {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        // Tags below 1000 could collide with known ones; unknown tags in tests stay above.
        Ok(Self { tag: u.int_in_range(1000..=2000)?, data: crate::codec::arb::bytes(u)? })
    }
}

/// The tagged fields of one structure that this codec does not know, kept so that they
/// round-trip (KIP-482), in the order they arrived.
///
/// They are held as one copy of their wire encoding (tag, size and bytes of each): a structure
/// without them costs 16 bytes and no allocation, and each one costs its wire size, so a message
/// full of small unknown fields takes about the memory it took on the wire. (A `Bytes` handle per
/// field or per structure would cost 32 bytes against the 2 bytes of an empty field, and would pin
/// the whole response.)
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UnknownTaggedFields {
    /// Each field as tag (uvarint), size (uvarint; up to 64 bits when pushed, checked when
    /// encoded) and bytes; well-formed by construction.
    raw: Box<[u8]>,
}

impl UnknownTaggedFields {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Removes every field.
    pub fn clear(&mut self) {
        self.raw = Box::default();
    }

    /// Appends a field. Each call copies the fields held so far: to build many, collect them
    /// from an iterator instead.
    pub fn push(&mut self, field: RawTaggedField) {
        let mut raw = std::mem::take(&mut self.raw).into_vec();
        append(&mut raw, field.tag, &field.data);
        self.raw = raw.into_boxed_slice();
    }

    /// The fields in order, as (tag, bytes).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        let mut rest: &[u8] = &self.raw;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let tag = read_uvarint(&mut rest) as u32;
            let size = read_uvarint(&mut rest) as usize;
            let (data, tail) = rest.split_at(size);
            rest = tail;
            Some((tag, data))
        })
    }

    /// Wraps fields already encoded (each as tag, size and bytes), as read off the wire.
    pub(crate) fn from_raw(raw: Box<[u8]>) -> Self {
        Self { raw }
    }

    /// The fields' wire encoding and their count, once each field's size is known to fit its
    /// prefix ([`EncodeError::TooLong`], naming `what`, otherwise).
    pub(crate) fn checked_raw(&self, what: &'static str) -> EncodeResult<(&[u8], usize)> {
        let mut count = 0;
        for (_, data) in self.iter() {
            if data.len() > MAX_BYTES_LEN {
                return Err(EncodeError::TooLong { what, len: data.len(), max: MAX_BYTES_LEN });
            }
            count += 1;
        }
        Ok((&self.raw, count))
    }
}

impl fmt::Debug for UnknownTaggedFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<RawTaggedField> for UnknownTaggedFields {
    fn from_iter<I: IntoIterator<Item = RawTaggedField>>(iter: I) -> Self {
        let mut raw = Vec::new();
        for field in iter {
            append(&mut raw, field.tag, &field.data);
        }
        Self { raw: raw.into_boxed_slice() }
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for UnknownTaggedFields {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let fields: Vec<RawTaggedField> = u.arbitrary()?;
        Ok(fields.into_iter().collect())
    }
}

fn append(raw: &mut Vec<u8>, tag: u32, data: &[u8]) {
    for mut v in [u64::from(tag), data.len() as u64] {
        while v >= 0x80 {
            raw.push(v as u8 | 0x80);
            v >>= 7;
        }
        raw.push(v as u8);
    }
    raw.extend_from_slice(data);
}

/// Reads a varint that `append` or the decoder wrote.
fn read_uvarint(rest: &mut &[u8]) -> u64 {
    let mut value = 0;
    let mut shift = 0;
    while let Some((&b, tail)) = rest.split_first() {
        *rest = tail;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_displays_as_kafka_base64() {
        // The cluster id used by the local broker: 22 base64url characters of 16 bytes.
        let id = Uuid([0x32, 0x4d, 0xb7, 0x84, 0x40, 0x5c, 0xe4, 0x10, 0xea, 0x09, 0xc3, 0x7d, 0x6e, 0x61, 0xef, 0xb3]);
        assert_eq!(id.to_string(), "Mk23hEBc5BDqCcN9bmHvsw");
        assert_eq!(Uuid::ZERO.to_string(), "AAAAAAAAAAAAAAAAAAAAAA");
    }

    #[test]
    fn unknown_tagged_fields_keep_their_order_and_bytes() {
        let mut fields = UnknownTaggedFields::new();
        assert!(fields.is_empty());
        fields.push(RawTaggedField { tag: 300, data: Bytes::from(vec![7; 200]) });
        fields.push(RawTaggedField { tag: 1, data: Bytes::new() });
        let got: Vec<(u32, Vec<u8>)> = fields.iter().map(|(t, d)| (t, d.to_vec())).collect();
        assert_eq!(got, vec![(300, vec![7; 200]), (1, vec![])]);
        assert_eq!(fields.len(), 2);
        let collected: UnknownTaggedFields = [
            RawTaggedField { tag: 300, data: Bytes::from(vec![7; 200]) },
            RawTaggedField { tag: 1, data: Bytes::new() },
        ]
        .into_iter()
        .collect();
        assert_eq!(collected, fields);
        assert_eq!(fields.checked_raw("x").map(|(_, n)| n), Ok(2));
        fields.clear();
        assert!(fields.is_empty());
    }
}
