//! Process figures for the benchmarks, read from /proc (Linux).

const CLOCK_TICKS: f64 = 100.0;

/// (user, system) CPU seconds from a /proc/…/stat file (fields 14 and 15, after the `(comm)`).
pub fn cpu_seconds(stat_path: &str) -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string(stat_path) else { return (0.0, 0.0) };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else { return (0.0, 0.0) };
    // After ")": field 3 (state) is the first; utime is field 14, stime field 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0) / CLOCK_TICKS;
    (get(14), get(15))
}

/// A line of /proc/self/status in kB, e.g. `VmHWM`.
pub fn status_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    line[key.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.trim().to_string()).unwrap_or_default()
}
