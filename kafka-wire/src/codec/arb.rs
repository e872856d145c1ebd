//! Helpers for the `Arbitrary` impls of generated messages (property tests and fuzzing).

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use bytestring::ByteString;

pub fn bytes(u: &mut Unstructured<'_>) -> Result<Bytes> {
    let v: Vec<u8> = u.arbitrary()?;
    Ok(Bytes::from(v))
}

pub fn opt_bytes(u: &mut Unstructured<'_>) -> Result<Option<Bytes>> {
    Ok(if u.arbitrary()? { Some(bytes(u)?) } else { None })
}

pub fn string(u: &mut Unstructured<'_>) -> Result<ByteString> {
    let s: String = u.arbitrary()?;
    Ok(ByteString::from(s))
}

pub fn opt_string(u: &mut Unstructured<'_>) -> Result<Option<ByteString>> {
    Ok(if u.arbitrary()? { Some(string(u)?) } else { None })
}

pub fn strings(u: &mut Unstructured<'_>) -> Result<Vec<ByteString>> {
    let v: Vec<String> = u.arbitrary()?;
    Ok(v.into_iter().map(ByteString::from).collect())
}

pub fn opt_strings(u: &mut Unstructured<'_>) -> Result<Option<Vec<ByteString>>> {
    Ok(if u.arbitrary()? { Some(strings(u)?) } else { None })
}
