//! How keys and values become record bytes and back.

use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Turns a `T` into record bytes and back. One codec type serves a store's keys and values, so
/// it implements `Codec<K>` and `Codec<V>`.
///
/// `decode` gets a slice of the fetched buffer and must return a value that owns its data:
/// stored values then hold only their own bytes, not the whole fetch response they came in.
///
/// Keys are compared decoded: two byte strings that decode to the same key are one key in the
/// store but two in the topic's compaction. Writers should encode keys one way only.
pub trait Codec<T>: Clone + Send + Sync + 'static {
    /// The bytes of `value`.
    fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError>;
    /// The value of `bytes`.
    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// Why a key or value could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// JSON through serde (the default): any `Serialize + DeserializeOwned` type.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl<T: Serialize + DeserializeOwned> Codec<T> for Json {
    fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError(format!("JSON: {e}")))
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError(format!("JSON: {e}")))
    }
}

/// The bytes as they are: [`Bytes`] and `Vec<u8>` (copied out of the fetch buffer), or
/// `String` (which must be UTF-8).
#[derive(Clone, Copy, Debug, Default)]
pub struct Raw;

impl Codec<Bytes> for Raw {
    fn encode(&self, value: &Bytes) -> Result<Vec<u8>, CodecError> {
        Ok(value.to_vec())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Bytes, CodecError> {
        Ok(Bytes::copy_from_slice(bytes))
    }
}

impl Codec<Vec<u8>> for Raw {
    fn encode(&self, value: &Vec<u8>) -> Result<Vec<u8>, CodecError> {
        Ok(value.clone())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        Ok(bytes.to_vec())
    }
}

impl Codec<String> for Raw {
    fn encode(&self, value: &String) -> Result<Vec<u8>, CodecError> {
        Ok(value.as_bytes().to_vec())
    }

    fn decode(&self, bytes: &[u8]) -> Result<String, CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| CodecError(format!("not UTF-8: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_names_the_fault() {
        let bytes = Codec::<Vec<u32>>::encode(&Json, &vec![1, 2]).unwrap();
        assert_eq!(bytes, b"[1,2]");
        assert_eq!(Codec::<Vec<u32>>::decode(&Json, &bytes).unwrap(), vec![1, 2]);
        let err = Codec::<u32>::decode(&Json, b"\"x\"").unwrap_err();
        assert!(err.0.starts_with("JSON:"), "{err}");
    }

    #[test]
    fn raw_copies_out_of_the_buffer() {
        let buffer = Bytes::from_static(b"0123456789");
        let value: Bytes = Raw.decode(&buffer[2..4]).unwrap();
        assert_eq!(value, "23");
        // A copy, not a slice of `buffer`.
        assert_ne!(value.as_ptr(), buffer[2..4].as_ptr());
        assert!(Codec::<String>::decode(&Raw, &[0xff]).is_err());
    }
}
