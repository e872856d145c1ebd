//! The routing policy: after a failed attempt, where a record goes — retried in place after a
//! delay (blocking), forwarded to a retry tier (non-blocking), or to the dead-letter queue. A
//! pure function of the policy, the attempt and the kind of failure, so that it can be tested
//! exhaustively; the consumer side only carries it out.

use std::time::Duration;

/// Blocking retries: the failing record is retried where it is, and only its partition (or its
/// key, with keys in parallel) waits.
#[derive(Clone, Debug, PartialEq)]
pub enum Blocking {
    /// No blocking retries.
    None,
    /// One retry after each interval, in order (`len` retries).
    Intervals(Vec<Duration>),
    /// `initial × multiplier^n`, capped at `max`, spread by ±`jitter` (a fraction, 0.2 is
    /// ±20 %); `attempts` retries, or without end if `None`. (The multiplier is the factor
    /// itself, as in Spring: 2.0 doubles. Greyhound multiplies by 1 + m.)
    Exponential {
        /// The first delay.
        initial: Duration,
        /// The growth factor per retry (at least 1).
        multiplier: f64,
        /// The longest delay.
        max: Duration,
        /// Retries before the record moves on; `None`: retried until it succeeds.
        attempts: Option<u32>,
        /// How far each delay may stray from the exponential term, as a fraction of it.
        jitter: f64,
    },
}

/// Where a failed record goes, and when.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// Retried in place after the delay.
    RetryInPlace {
        /// How long to wait before the retry.
        delay: Duration,
    },
    /// Forwarded to retry tier `tier`, to be handled again no earlier than `delay` from now.
    Forward {
        /// The tier's index (its topic is `<topic>-<group>-retry-<tier>` by default).
        tier: usize,
        /// The tier's delay.
        delay: Duration,
    },
    /// Forwarded to the dead-letter queue.
    DeadLetter,
}

/// What failed: the handler's verdict on whether trying again can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Trying again may succeed (a dependency is down, a timeout).
    Retriable,
    /// Trying again cannot succeed (a malformed record, a rule the record breaks): straight to
    /// the dead-letter queue.
    NonRetriable,
}

/// How failed records are retried: blocking retries first, then the non-blocking tiers, then
/// the dead-letter queue.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries in place, first.
    pub blocking: Blocking,
    /// One retry topic per delay, in order, after the blocking retries.
    pub tiers: Vec<Duration>,
}

impl RetryPolicy {
    /// No retries: a failed record goes to the dead-letter queue.
    pub fn dead_letter_only() -> Self {
        Self { blocking: Blocking::None, tiers: Vec::new() }
    }

    /// Blocking retries after each of `intervals`, then the dead-letter queue.
    pub fn blocking(intervals: impl IntoIterator<Item = Duration>) -> Self {
        Self { blocking: Blocking::Intervals(intervals.into_iter().collect()), tiers: Vec::new() }
    }

    /// Blocking retries with exponential backoff (±20 % jitter), `attempts` of them or without
    /// end, then the dead-letter queue.
    pub fn exponential(initial: Duration, multiplier: f64, max: Duration, attempts: Option<u32>) -> Self {
        Self { blocking: Blocking::Exponential { initial, multiplier, max, attempts, jitter: 0.2 }, tiers: Vec::new() }
    }

    /// Non-blocking retries: one retry topic per delay, then the dead-letter queue.
    pub fn non_blocking(tiers: impl IntoIterator<Item = Duration>) -> Self {
        Self { blocking: Blocking::None, tiers: tiers.into_iter().collect() }
    }

    /// Adds non-blocking tiers after this policy's blocking retries.
    pub fn then_non_blocking(mut self, tiers: impl IntoIterator<Item = Duration>) -> Self {
        self.tiers = tiers.into_iter().collect();
        self
    }

    /// Blocking retries allowed, `None` if without end.
    pub fn blocking_attempts(&self) -> Option<u32> {
        match &self.blocking {
            Blocking::None => Some(0),
            Blocking::Intervals(i) => Some(i.len().min(u32::MAX as usize) as u32),
            Blocking::Exponential { attempts, .. } => *attempts,
        }
    }

    /// Where a record goes once its blocking retries are over (or an operator unblocked its
    /// partition): the first tier, or the dead-letter queue.
    pub fn after_blocking(&self) -> Route {
        match self.tiers.first() {
            Some(delay) => Route::Forward { tier: 0, delay: *delay },
            None => Route::DeadLetter,
        }
    }

    /// Where a record goes after a failure.
    ///
    /// - `tier`: the retry tier the record was read from (`None`: the source topic).
    /// - `blocking_failures`: failed attempts in place so far on this topic, this one included.
    /// - `unit`: a number in [0, 1) for the jitter (the same input, the same route).
    pub fn route(&self, tier: Option<usize>, blocking_failures: u32, failure: Failure, unit: f64) -> Route {
        if failure == Failure::NonRetriable {
            return Route::DeadLetter;
        }
        let next_tier = |t: usize| match self.tiers.get(t) {
            Some(delay) => Route::Forward { tier: t, delay: *delay },
            None => Route::DeadLetter,
        };
        // Records read from a tier are not retried in place: they move to the next tier.
        if let Some(t) = tier {
            return next_tier(t + 1);
        }
        let retry = blocking_failures.max(1) - 1;
        match &self.blocking {
            Blocking::None => next_tier(0),
            Blocking::Intervals(intervals) => match intervals.get(retry as usize) {
                Some(delay) => Route::RetryInPlace { delay: *delay },
                None => next_tier(0),
            },
            Blocking::Exponential { initial, multiplier, max, attempts, jitter } => {
                if attempts.is_some_and(|a| retry >= a) {
                    return next_tier(0);
                }
                let term = initial.as_secs_f64() * multiplier.max(1.0).powi(retry.min(1000) as i32);
                let jitter = jitter.clamp(0.0, 1.0);
                let spread = 1.0 - jitter + 2.0 * jitter * unit.clamp(0.0, 1.0);
                let delay = (term * spread).min(max.as_secs_f64()).max(0.0);
                Route::RetryInPlace {
                    delay: Duration::from_secs_f64(if delay.is_finite() { delay } else { max.as_secs_f64() }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policies() -> impl Strategy<Value = RetryPolicy> {
        let durations = prop::collection::vec((1u64..10_000).prop_map(Duration::from_millis), 0..5);
        let blocking = prop_oneof![
            Just(Blocking::None),
            durations.clone().prop_map(Blocking::Intervals),
            (1u64..1000, 1.0f64..4.0, 1u64..60_000, prop::option::of(0u32..10), 0.0f64..0.5).prop_map(
                |(i, m, max, attempts, jitter)| Blocking::Exponential {
                    initial: Duration::from_millis(i),
                    multiplier: m,
                    max: Duration::from_millis(max),
                    attempts,
                    jitter,
                }
            ),
        ];
        (blocking, durations).prop_map(|(blocking, tiers)| RetryPolicy { blocking, tiers })
    }

    /// Follows a record that always fails from the source topic to its end, and returns the
    /// routes it took (at most `limit`).
    fn walk(policy: &RetryPolicy, unit: f64, limit: usize) -> Vec<Route> {
        let mut routes = Vec::new();
        let (mut tier, mut failures) = (None, 0);
        while routes.len() < limit {
            failures += 1;
            let route = policy.route(tier, failures, Failure::Retriable, unit);
            routes.push(route.clone());
            match route {
                Route::RetryInPlace { .. } => {}
                Route::Forward { tier: t, .. } => {
                    tier = Some(t);
                    failures = 0;
                }
                Route::DeadLetter => break,
            }
        }
        routes
    }

    proptest! {
        /// Every finite policy ends in the dead-letter queue after exactly its blocking retries
        /// and every tier once, in order: nothing is dropped and no tier is skipped.
        #[test]
        fn a_record_that_always_fails_goes_through_every_step_then_to_the_dead_letter_queue(
            policy in policies(), unit in 0.0f64..1.0,
        ) {
            let Some(blocking) = policy.blocking_attempts() else { return Ok(()) };
            let routes = walk(&policy, unit, 10_000);
            let expected = blocking as usize + policy.tiers.len() + 1;
            prop_assert_eq!(routes.len(), expected);
            prop_assert_eq!(routes.last(), Some(&Route::DeadLetter));
            let in_place = routes.iter().filter(|r| matches!(r, Route::RetryInPlace { .. })).count();
            prop_assert_eq!(in_place, blocking as usize);
            let tiers: Vec<(usize, Duration)> = routes.iter().filter_map(|r| match r {
                Route::Forward { tier, delay } => Some((*tier, *delay)),
                _ => None,
            }).collect();
            prop_assert_eq!(tiers, policy.tiers.iter().copied().enumerate().collect::<Vec<_>>());
            // Blocking retries come before any tier.
            let first_forward = routes.iter().position(|r| !matches!(r, Route::RetryInPlace { .. })).unwrap();
            prop_assert_eq!(first_forward, blocking as usize);
        }

        /// An endless blocking policy never gives up and never forwards.
        #[test]
        fn endless_blocking_retries_stay_in_place(
            initial in 1u64..1000, multiplier in 1.0f64..4.0, max in 1u64..60_000,
            tiers in prop::collection::vec((1u64..10_000).prop_map(Duration::from_millis), 0..3), unit in 0.0f64..1.0,
        ) {
            let blocking = Blocking::Exponential {
                initial: Duration::from_millis(initial), multiplier, max: Duration::from_millis(max), attempts: None, jitter: 0.2,
            };
            let policy = RetryPolicy { blocking, tiers };
            prop_assert_eq!(policy.blocking_attempts(), None);
            let stays = walk(&policy, unit, 200).iter().all(|r| matches!(r, Route::RetryInPlace { .. }));
            prop_assert!(stays, "an endless blocking policy moved the record on");
        }

        /// Exponential delays stay within the jitter of their term and never exceed the cap.
        #[test]
        fn exponential_delays_grow_within_the_jitter_and_the_cap(
            initial in 1u64..1000, multiplier in 1.0f64..4.0, max in 1u64..60_000, jitter in 0.0f64..0.5,
            unit in 0.0f64..1.0, retry in 0u32..40,
        ) {
            let policy = RetryPolicy { blocking: Blocking::Exponential {
                initial: Duration::from_millis(initial), multiplier, max: Duration::from_millis(max), attempts: None, jitter,
            }, tiers: vec![] };
            let Route::RetryInPlace { delay } = policy.route(None, retry + 1, Failure::Retriable, unit) else {
                return Err(TestCaseError::fail("not retried in place"));
            };
            let term = initial as f64 * multiplier.powi(retry as i32);
            let d = delay.as_secs_f64() * 1000.0;
            prop_assert!(d <= max as f64 + 1e-6);
            prop_assert!(d <= term * (1.0 + jitter) + 1e-6);
            prop_assert!(d >= (term * (1.0 - jitter)).min(max as f64) - 1e-6);
        }

        /// A non-retriable failure goes straight to the dead-letter queue, from anywhere.
        #[test]
        fn non_retriable_failures_skip_every_retry(
            policy in policies(), tier in prop::option::of(0usize..5), failures in 1u32..10, unit in 0.0f64..1.0,
        ) {
            prop_assert_eq!(policy.route(tier, failures, Failure::NonRetriable, unit), Route::DeadLetter);
        }
    }

    #[test]
    fn blocking_then_non_blocking() {
        let policy = RetryPolicy::blocking([10 * MS, 20 * MS]).then_non_blocking([MS * 1000, MS * 5000]);
        let routes = walk(&policy, 0.5, 100);
        assert_eq!(
            routes,
            vec![
                Route::RetryInPlace { delay: 10 * MS },
                Route::RetryInPlace { delay: 20 * MS },
                Route::Forward { tier: 0, delay: 1000 * MS },
                Route::Forward { tier: 1, delay: 5000 * MS },
                Route::DeadLetter,
            ]
        );
    }
}
