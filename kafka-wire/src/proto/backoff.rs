//! Exponential backoff with jitter between retries (KIP-580), shared by every state machine and
//! driver that retries: `retry.backoff.ms` doubled per failed attempt up to
//! `retry.backoff.max.ms`, each delay spread by ±20 % so that clients failed by the same event
//! (a broker restart, a coordinator move) do not all retry in the same instant.
//!
//! The jitter comes from a small generator owned by each [`Backoff`], seeded by the caller
//! ([`Backoff::with_seed`]) where a simulation needs the same delays run after run, and from the
//! process's hash seed otherwise.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// How far each delay may stray from the exponential term, as Java's clients do (KIP-580).
pub const JITTER: f64 = 0.2;

/// The delay before the next attempt of something that failed `attempts` times in a row, and
/// until when the current one lasts.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempts: u32,
    until: Option<Instant>,
    rng: u64,
}

impl Backoff {
    /// A backoff starting at `base` (`retry.backoff.ms`) and capped at `max`
    /// (`retry.backoff.max.ms`; a cap below `base` means a constant `base`, as in Java).
    pub fn new(base: Duration, max: Duration) -> Self {
        Self::with_seed(base, max, RandomState::new().hash_one(0u8))
    }

    /// [`Backoff::new`] with the jitter drawn from `seed`: the same seed, the same delays.
    pub fn with_seed(base: Duration, max: Duration, seed: u64) -> Self {
        Self { base, max: max.max(base), attempts: 0, until: None, rng: seed }
    }

    /// The delay after one more failure: `base × 2^attempts` spread by ±[`JITTER`], at most
    /// `max`. Counts the failure.
    pub fn next_delay(&mut self) -> Duration {
        let term = self.base.saturating_mul(1u32 << self.attempts.min(20));
        self.attempts = self.attempts.saturating_add(1);
        let spread = 1.0 - JITTER + 2.0 * JITTER * self.unit();
        term.mul_f64(spread).min(self.max)
    }

    /// Records a failure at `now`: nothing is retried before the returned instant.
    pub fn fail(&mut self, now: Instant) -> Instant {
        let until = now + self.next_delay();
        self.until = Some(until);
        until
    }

    /// A success: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.attempts = 0;
        self.until = None;
    }

    /// Whether the backoff of the last failure is over at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.until.is_none_or(|u| now >= u)
    }

    /// When the backoff of the last failure ends, if one is running.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Failures since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// A number in [0, 1) from a splitmix64 step.
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_within_the_jitter_and_stop_at_the_cap() {
        for seed in 0..200 {
            let mut b = Backoff::with_seed(100 * MS, 1000 * MS, seed);
            for term in [100, 200, 400, 800] {
                let d = b.next_delay().as_secs_f64() * 1000.0;
                assert!(
                    d >= term as f64 * 0.8 - 1e-6 && d <= term as f64 * 1.2 + 1e-6,
                    "seed {seed}: {d} ms for {term}"
                );
            }
            for _ in 0..40 {
                let d = b.next_delay();
                assert!(d <= 1000 * MS && d >= 800 * MS, "seed {seed}: {d:?} past the cap's jitter");
            }
        }
    }

    #[test]
    fn the_jitter_spreads_clients_failed_at_the_same_instant() {
        let delays: std::collections::BTreeSet<Duration> =
            (0..50).map(|seed| Backoff::with_seed(100 * MS, 1000 * MS, seed).next_delay()).collect();
        assert!(delays.len() > 40, "50 clients drew only {} distinct delays", delays.len());
        let (lo, hi) = (delays.first().unwrap(), delays.last().unwrap());
        assert!(*hi - *lo > 20 * MS, "delays span only {lo:?}..{hi:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let run = |seed| {
            let mut b = Backoff::with_seed(50 * MS, 5000 * MS, seed);
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn a_cap_below_the_base_means_a_constant_base() {
        let mut b = Backoff::with_seed(300 * MS, 100 * MS, 1);
        for _ in 0..10 {
            assert!(b.next_delay() <= 300 * MS);
        }
    }

    #[test]
    fn fail_ready_and_reset() {
        let now = Instant::now();
        let mut b = Backoff::with_seed(100 * MS, 1000 * MS, 3);
        assert!(b.ready(now));
        let until = b.fail(now);
        assert!(!b.ready(now) && b.ready(until) && b.until() == Some(until));
        b.fail(until);
        assert_eq!(b.attempts(), 2);
        b.reset();
        assert!(b.ready(now) && b.attempts() == 0 && b.until().is_none());
        let again = b.fail(now) - now;
        assert!(again <= 120 * MS, "after a reset the delay starts at the base again: {again:?}");
    }
}
