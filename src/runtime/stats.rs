//! What a loop counts about its own runs: how each ended and how long it took. The queue holds
//! the counters, so one object answers for every figure of a loop; the worker records into
//! them and metrics read a [`Runs`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::schedule::Outcome;

/// Upper bounds, in seconds, of the reconcile duration buckets: from a no-op reconcile against
/// a cache to the two-minute deadline.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0,
];

/// Runs of one loop since start, by outcome, and their durations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runs {
    pub done: u64,
    pub requeue: u64,
    /// Runs that failed (a deadline and a panic included): each is one retry.
    pub retry: u64,
    /// Runs that waited on throttling, a full quota or another resource.
    pub wait: u64,
    pub gone: u64,
    /// Runs that took at most `DURATION_BUCKETS[i]`, in bucket `i` (not cumulative).
    pub duration_buckets: [u64; DURATION_BUCKETS.len()],
    /// The time all runs took together.
    pub duration_sum: Duration,
}

impl Runs {
    /// Every run, whatever its outcome.
    pub fn total(&self) -> u64 {
        self.done + self.requeue + self.retry + self.wait + self.gone
    }

    /// `(outcome label, count)` for every outcome, in a fixed order.
    pub fn by_outcome(&self) -> [(&'static str, u64); 5] {
        [
            ("done", self.done),
            ("requeue", self.requeue),
            ("retry", self.retry),
            ("wait", self.wait),
            ("gone", self.gone),
        ]
    }
}

/// The live counters behind [`Runs`].
#[derive(Debug, Default)]
pub(crate) struct RunCounters {
    outcomes: [AtomicU64; 5],
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    /// Longer than the last bucket (cancelled at the deadline, mostly).
    overflow: AtomicU64,
    sum_micros: AtomicU64,
}

impl RunCounters {
    pub(crate) fn record(&self, outcome: Outcome, elapsed: Duration) {
        let index = match outcome {
            Outcome::Done => 0,
            Outcome::Requeue(_) => 1,
            Outcome::Retry(_) => 2,
            Outcome::Wait(_) => 3,
            Outcome::Gone => 4,
        };
        self.outcomes[index].fetch_add(1, Ordering::Relaxed);

        let seconds = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound);
        match bucket {
            Some(bucket) => self.buckets[bucket].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Runs {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let [done, requeue, retry, wait, gone] = self.outcomes.each_ref().map(load);
        Runs {
            done,
            requeue,
            retry,
            wait,
            gone,
            duration_buckets: self.buckets.each_ref().map(load),
            duration_sum: Duration::from_micros(load(&self.sum_micros)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_land_in_their_outcome_and_duration_bucket() {
        let counters = RunCounters::default();
        let cases = [
            (Outcome::Done, Duration::from_millis(3)),
            (Outcome::Done, Duration::from_millis(5)),
            (Outcome::Retry("store"), Duration::from_secs(2)),
            (Outcome::Wait("throttled"), Duration::from_secs(600)),
            (Outcome::Gone, Duration::ZERO),
        ];
        for (outcome, elapsed) in cases {
            counters.record(outcome, elapsed);
        }

        let runs = counters.snapshot();
        assert_eq!((runs.done, runs.retry, runs.wait, runs.gone), (2, 1, 1, 1));
        assert_eq!(runs.total(), 5);
        // 0 s, 3 ms and 5 ms share the first bucket; 2 s is in the 2.5 s one; 600 s in none.
        assert_eq!(runs.duration_buckets[0], 3);
        assert_eq!(runs.duration_buckets[8], 1);
        assert_eq!(runs.duration_buckets.iter().sum::<u64>(), 4);
        assert_eq!(runs.duration_sum, Duration::from_millis(602_008));
    }
}
