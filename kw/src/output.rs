//! Output helpers: aligned tables, line-number ranges, JSON strings, and stdout writes that end
//! quietly when the reader goes away (`kw consume | head`).

use std::io::{self, Write};

use crate::error::{Failure, Result};

/// Prints `rows` under `header` as left-aligned columns separated by two spaces (the last
/// column is not padded).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = io::stdout().lock();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let cells: Vec<&str> = cells.collect();
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&mut header.iter().copied()).map_err(write_error)?;
    for row in rows {
        line(&mut row.iter().map(String::as_str)).map_err(write_error)?;
    }
    out.flush().map_err(write_error)
}

/// Prints one line to stdout.
pub fn println(text: impl std::fmt::Display) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).map_err(write_error)
}

/// A failed write to stdout: a closed pipe ends the command quietly and successfully, anything
/// else is a runtime error.
pub fn write_error(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::Reported(0)
    } else {
        Failure::Runtime(format!("cannot write to stdout: {e}"))
    }
}

/// `1-3, 7, 9-10` for ascending, disjoint, inclusive ranges of numbers.
pub fn ranges(ranges: &[(u64, u64)]) -> String {
    let mut out = String::new();
    for &(start, end) in ranges {
        if !out.is_empty() {
            out.push_str(", ");
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
    }
    out
}

/// `line 4` or `lines 1-3, 7`, for ascending, disjoint, inclusive ranges of line numbers.
pub fn ranges_phrase(lines: &[(u64, u64)]) -> String {
    match lines {
        [(a, b)] if a == b => format!("line {a}"),
        _ => format!("lines {}", ranges(lines)),
    }
}

/// Appends `s` as a JSON string (quoted and escaped).
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut start = 0;
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends bytes as a JSON string (invalid UTF-8 replaced by U+FFFD), or `null`.
pub fn json_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => out.extend_from_slice(b"null"),
        Some(b) => json_str(out, &String::from_utf8_lossy(b)),
    }
}

/// The summary line of a produce or consume: `{verb} N records (B) {place} in S s: R records/s,
/// B/s`, `place` being e.g. `to 'orders'` (the rate over `elapsed`).
pub fn transfer_summary(verb: &str, records: u64, bytes: u64, place: &str, elapsed: std::time::Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    format!(
        "{verb} {records} record{} ({}) {place} in {secs:.2} s: {:.1} records/s, {}/s",
        if records == 1 { "" } else { "s" },
        human_bytes(bytes),
        records as f64 / secs,
        human_bytes((bytes as f64 / secs) as u64)
    )
}

/// A human-readable byte count.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_compress() {
        assert_eq!(ranges(&[(1, 3), (5, 5), (7, 8)]), "1-3, 5, 7-8");
        assert_eq!(ranges(&[]), "");
        assert_eq!(ranges_phrase(&[(4, 4)]), "line 4");
        assert_eq!(ranges_phrase(&[(4, 5)]), "lines 4-5");
    }

    #[test]
    fn json_escapes() {
        let mut out = Vec::new();
        json_str(&mut out, "a\"b\\c\n\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
