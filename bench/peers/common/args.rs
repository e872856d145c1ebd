//! The command line and the values shared by the peers of `cargo xtask bench` (each peer includes
//! this file with `#[path]`, so that both send the same bytes as `produce_bench --value-kind random`).
//!
//! `PEER produce|consume|latency --bootstrap HOST:PORT --topic T --records N [--value-size 100]
//!  [--batch-size 1000000] [--linger-ms 5] [--compression none|gzip|snappy|lz4|zstd] [--rate 20000]`
//!
//! Each run prints one JSON line: `{"records":N,"secs":S}` (the timed phase only), plus
//! `"p50_ms","p99_ms","p999_ms"` for `latency`, whose values carry the send time (bytes 0..8)
//! and the record's index (8..16); the first second's records (at most a quarter) are left out
//! of the percentiles as start-up.

// Each peer uses a part of this file.
#![allow(dead_code)]

pub struct Args {
    pub mode: String,
    pub bootstrap: String,
    pub topic: String,
    pub records: u64,
    pub value_size: usize,
    pub batch_size: usize,
    pub linger_ms: u64,
    pub compression: String,
    pub rate: u64,
}

pub fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("usage: PEER produce|consume|latency --topic T --records N …")?;
    let mut a = Args {
        mode,
        bootstrap: "127.0.0.1:9092".into(),
        topic: String::new(),
        records: 1_000_000,
        value_size: 100,
        batch_size: 1_000_000,
        linger_ms: 5,
        compression: "none".into(),
        rate: 20_000,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.replace('_', "").parse::<u64>().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--bootstrap" => a.bootstrap = value,
            "--topic" => a.topic = value,
            "--records" => a.records = num(&value)?,
            "--value-size" => a.value_size = num(&value)? as usize,
            "--batch-size" => a.batch_size = num(&value)? as usize,
            "--linger-ms" => a.linger_ms = num(&value)?,
            "--compression" => a.compression = value,
            "--rate" => a.rate = num(&value)?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.topic.is_empty() {
        return Err("--topic is required".into());
    }
    Ok(a)
}

/// 64 values of `size` bytes drawn from 64 symbols by a seeded xorshift: the generator of
/// `produce_bench --value-kind random`, so that every client compresses the same data.
pub fn values(size: usize) -> Vec<Vec<u8>> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..64)
        .map(|_| {
            (0..size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    b'0' + (state % 64) as u8
                })
                .collect()
        })
        .collect()
}

/// Nanoseconds since the Unix epoch: the latency runs put the send time in the value's first
/// 8 bytes and the consumer subtracts it from its own clock (same machine, same clock).
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// p50, p99 and p99.9 of latencies in nanoseconds, in milliseconds.
pub fn percentiles_ms(mut nanos: Vec<u64>) -> (f64, f64, f64) {
    nanos.sort_unstable();
    let at = |p: f64| {
        if nanos.is_empty() {
            return 0.0;
        }
        let i = ((nanos.len() as f64 * p).ceil() as usize).clamp(1, nanos.len()) - 1;
        nanos[i] as f64 / 1e6
    };
    (at(0.50), at(0.99), at(0.999))
}
