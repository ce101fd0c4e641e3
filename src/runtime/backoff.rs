//! Backoff schedules and the jitter source they draw from. A [`Backoff`] turns "the n-th
//! consecutive attempt" into a delay: exponential (factor 2) from a base, capped, spread by a
//! jitter fraction so that keys which failed together do not retry together. [`Jitter`] is a
//! tiny xorshift generator: seeded in tests, so every delay there is reproducible, and seeded
//! from the process's hash keys in production. Which schedule applies to which outcome, and
//! when counts reset, is decided by `schedule.rs`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// An exponential schedule: `base × 2^(attempt − 1)`, at most `cap`, spread by `± jitter`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The delay before the first attempt again.
    pub base: Duration,
    /// The longest delay, jitter included.
    pub cap: Duration,
    /// How far a delay may stray from the exponential value, as a fraction of it (0 to 1).
    pub jitter: f64,
}

impl Backoff {
    /// Failures: a fast first retry for a blip, at most five minutes for a lasting fault.
    pub const RETRY: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(5 * 60),
        jitter: 0.2,
    };

    /// Throttling that outlasted the SDK's own retries: an account's token bucket refills in
    /// seconds, so the wait starts at two and grows to two minutes, spread wide so throttled
    /// keys do not return together. A long wait here would stall more than the one key: a
    /// shop at the head of its CodeDeploy group's queue holds the whole group while it waits
    /// (the 1,000-shop convergence benchmark stalled behind such heads at 30 s to 15 min).
    pub const THROTTLE: Backoff = Backoff {
        base: Duration::from_secs(2),
        cap: Duration::from_secs(2 * 60),
        jitter: 0.5,
    };

    /// Full quotas and other resources: neither clears in a second, so this schedule starts
    /// at half a minute.
    pub const WAIT: Backoff = Backoff {
        base: Duration::from_secs(30),
        cap: Duration::from_secs(15 * 60),
        jitter: 0.2,
    };

    /// The delay before attempt number `attempt` again (1 for the first repeat).
    pub fn delay(&self, attempt: u32, jitter: &mut Jitter) -> Duration {
        let doublings = attempt.saturating_sub(1);
        let exponential = 2u32
            .checked_pow(doublings)
            .map_or(self.cap, |factor| self.base.saturating_mul(factor));
        jitter
            .spread(exponential.min(self.cap), self.jitter)
            .min(self.cap)
    }
}

/// A xorshift64 generator: not for secrets, only to spread timers apart.
#[derive(Clone, Debug)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Jitter {
        // xorshift never leaves zero, so zero must not be a state.
        let state = if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        };
        Jitter { state }
    }

    /// A generator seeded from the process's random hash keys, different on every start.
    pub fn from_entropy() -> Jitter {
        Jitter::new(random_seed())
    }

    /// A uniform value in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `duration` moved by up to `± fraction` of itself, uniformly; `fraction` is clamped to
    /// `[0, 1]` so the result is never negative.
    pub fn spread(&mut self, duration: Duration, fraction: f64) -> Duration {
        let fraction = fraction.clamp(0.0, 1.0);
        let factor = 1.0 + fraction * (2.0 * self.unit() - 1.0);
        duration.mul_f64(factor)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }
}

/// A seed that differs between processes, without a `rand` dependency: std seeds its hash
/// keys from the operating system.
pub(crate) fn random_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXACT: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(60),
        jitter: 0.0,
    };

    #[test]
    fn delay_doubles_with_each_attempt() {
        let mut jitter = Jitter::new(1);
        let delays: Vec<u64> = (1..=6)
            .map(|n| EXACT.delay(n, &mut jitter).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32]);
    }

    #[test]
    fn delay_never_exceeds_the_cap() {
        let mut jitter = Jitter::new(7);
        let jittered = Backoff {
            jitter: 0.5,
            ..EXACT
        };
        for attempt in [7, 8, 31, 32, 33, 1_000, u32::MAX] {
            assert_eq!(
                EXACT.delay(attempt, &mut jitter),
                EXACT.cap,
                "attempt {attempt}"
            );
            assert!(
                jittered.delay(attempt, &mut jitter) <= EXACT.cap,
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_spreads_across_it() {
        let mut jitter = Jitter::new(42);
        let backoff = Backoff {
            jitter: 0.2,
            ..EXACT
        };
        let delays: Vec<f64> = (0..1_000)
            .map(|_| backoff.delay(4, &mut jitter).as_secs_f64())
            .collect();
        let low = delays.iter().copied().fold(f64::MAX, f64::min);
        let high = delays.iter().copied().fold(f64::MIN, f64::max);
        assert!(low >= 8.0 * 0.8 && high <= 8.0 * 1.2, "{low}..{high}");
        assert!(
            low < 8.0 * 0.85 && high > 8.0 * 1.15,
            "too narrow: {low}..{high}"
        );
    }

    #[test]
    fn same_seed_gives_the_same_delays() {
        let backoff = Backoff {
            jitter: 0.3,
            ..EXACT
        };
        let run = |seed| {
            let mut jitter = Jitter::new(seed);
            (1..20)
                .map(|n| backoff.delay(n, &mut jitter))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn zero_seed_still_produces_values() {
        let mut jitter = Jitter::new(0);
        let values: Vec<f64> = (0..3).map(|_| jitter.unit()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        assert_ne!(values[0], values[1]);
    }

    #[test]
    fn spread_clamps_fractions_outside_zero_to_one() {
        let mut jitter = Jitter::new(3);
        let second = Duration::from_secs(1);
        assert_eq!(jitter.spread(second, -1.0), second);
        assert!(jitter.spread(second, 5.0) <= 2 * second);
    }
}
