//! Value types shared by the message descriptions.

use std::fmt;

use bytes::Bytes;

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

/// A tagged field this version of the codec does not know; kept so that it round-trips.
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
}
