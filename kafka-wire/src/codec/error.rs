//! Errors of the codec layer: what can be wrong with bytes that came from the network, and with
//! a value that is to be written.

use super::ApiKey;

/// Why a sequence of bytes could not be decoded.
///
/// Every variant is caused by the input, never by the caller: a decoder that returns one has read
/// nothing it could not justify and allocated no more than the input's size allows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended while `needed` more bytes were expected.
    #[error("input ended: {needed} more bytes needed for {what}, {remaining} left")]
    UnexpectedEnd {
        /// The field or structure being read.
        what: &'static str,
        /// Bytes the value needs.
        needed: usize,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A length or count is negative where null is not allowed, or below -1.
    #[error("invalid length {len} for {what}")]
    InvalidLength {
        /// The field or structure being read.
        what: &'static str,
        /// The length or count read.
        len: i64,
    },
    /// A length or count claims more than the remaining input could hold.
    #[error("{what} claims {len} items or bytes but only {remaining} bytes remain")]
    LengthExceedsInput {
        /// The field or structure being read.
        what: &'static str,
        /// The length or count read.
        len: u64,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A varint ran over its maximum width (5 bytes for 32 bits, 10 for 64).
    #[error("varint longer than {max_bytes} bytes")]
    VarintTooLong {
        /// The maximum width for this varint, in bytes.
        max_bytes: usize,
    },
    /// A string was not valid UTF-8.
    #[error("string field {what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field or structure being read.
        what: &'static str,
    },
    /// A null was read where the message version does not allow one.
    #[error("null value for non-nullable field {what}")]
    UnexpectedNull {
        /// The field or structure being read.
        what: &'static str,
    },
    /// The message has no description at this version.
    #[error("{api:?} version {version} is not supported by this codec")]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The version asked for.
        version: i16,
    },
    /// Bytes were left over after a complete message.
    #[error("{count} trailing bytes after {what}")]
    TrailingBytes {
        /// The message that was complete.
        what: &'static str,
        /// Bytes left over.
        count: usize,
    },
    /// A frame is larger than the configured maximum.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The frame's size, in bytes.
        size: usize,
        /// The configured maximum, in bytes.
        max: usize,
    },
    /// The decoded structures would take more memory than the input allows
    /// ([`DecodeBudget`](super::primitives::DecodeBudget): a small multiple of its size): an
    /// answer made of many near-empty structures, each far larger in memory than on the wire.
    #[error("{what}: {needed} bytes of decoded structures exceed the {left} bytes left of this message's allowance")]
    MemoryBudgetExceeded {
        /// The array being read.
        what: &'static str,
        /// Bytes its elements would take in memory.
        needed: usize,
        /// Bytes left of the allowance.
        left: usize,
    },
    /// A record batch's CRC-32C does not match its contents.
    #[error("record batch CRC mismatch: header says {expected:#010x}, contents give {actual:#010x}")]
    CrcMismatch {
        /// The CRC in the batch header.
        expected: u32,
        /// The CRC of the bytes it covers.
        actual: u32,
    },
    /// A record batch has a magic byte other than 2.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// A record batch names a compression codec that does not exist.
    #[error("unknown compression codec id {0}")]
    UnknownCompression(u8),
    /// Decompressed data would exceed the configured cap.
    #[error("decompressed {codec} data exceeds the cap of {limit} bytes")]
    DecompressedTooLarge {
        /// The compression codec's name.
        codec: &'static str,
        /// The cap, in bytes.
        limit: usize,
    },
    /// The compressed data is corrupt.
    #[error("corrupt {codec} data: {reason}")]
    Decompress {
        /// The compression codec's name.
        codec: &'static str,
        /// The decompressor's error.
        reason: String,
    },
    /// A structural rule of the format was broken (for example a record whose declared size does
    /// not match its fields).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// The field or structure being read.
        what: &'static str,
        /// The rule that was broken.
        reason: &'static str,
    },
}

/// The result of decoding.
pub type DecodeResult<T> = Result<T, DecodeError>;

/// Why a value could not be encoded. Every variant is caused by the value or the version the
/// caller chose, never by the network: the request was not sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string, byte sequence, array or tagged field is longer than its length prefix can
    /// express (a string: `i16::MAX` bytes; bytes and arrays: `i32::MAX`).
    #[error("{what} is {len} long, more than the {max} its length prefix can express")]
    TooLong {
        /// The field or structure being written.
        what: &'static str,
        /// Its length (bytes or elements).
        len: usize,
        /// The largest length the prefix can express.
        max: usize,
    },
    /// A field holds a value other than its default, and the version being written does not
    /// carry that field: writing the message would silently drop it.
    #[error("{what} has a non-default value, which version {version} does not carry")]
    FieldNotInVersion {
        /// The field or structure being written.
        what: &'static str,
        /// The version being written.
        version: i16,
    },
    /// The message has no description at this version.
    #[error("{api:?} version {version} is not supported by this codec")]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The version asked for.
        version: i16,
    },
}

/// The result of encoding.
pub type EncodeResult<T> = Result<T, EncodeError>;
