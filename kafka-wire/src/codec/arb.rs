//! Helpers for the `Arbitrary` impls of generated messages (property tests and fuzzing).

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use bytestring::ByteString;

/// Arbitrary `Bytes`.
pub fn bytes(u: &mut Unstructured<'_>) -> Result<Bytes> {
    let v: Vec<u8> = u.arbitrary()?;
    Ok(Bytes::from(v))
}

/// Arbitrary nullable `Bytes`.
pub fn opt_bytes(u: &mut Unstructured<'_>) -> Result<Option<Bytes>> {
    Ok(if u.arbitrary()? { Some(bytes(u)?) } else { None })
}

/// Arbitrary UTF-8 string.
pub fn string(u: &mut Unstructured<'_>) -> Result<ByteString> {
    let s: String = u.arbitrary()?;
    Ok(ByteString::from(s))
}

/// Arbitrary nullable UTF-8 string.
pub fn opt_string(u: &mut Unstructured<'_>) -> Result<Option<ByteString>> {
    Ok(if u.arbitrary()? { Some(string(u)?) } else { None })
}

/// Arbitrary array of UTF-8 strings.
pub fn strings(u: &mut Unstructured<'_>) -> Result<Vec<ByteString>> {
    let v: Vec<String> = u.arbitrary()?;
    Ok(v.into_iter().map(ByteString::from).collect())
}

/// Arbitrary nullable array of UTF-8 strings.
pub fn opt_strings(u: &mut Unstructured<'_>) -> Result<Option<Vec<ByteString>>> {
    Ok(if u.arbitrary()? { Some(strings(u)?) } else { None })
}
