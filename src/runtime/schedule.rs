//! From a reconcile's [`Outcome`] to its key's next run. Reconcilers only say what happened;
//! this module alone decides when to look again: the periodic resync after success, the
//! failure backoff after an error, and the longer wait schedule after throttling or a full
//! quota. Failures and waits are counted separately per key, so being throttled never makes
//! a shop look broken, and both counts reset when a run succeeds.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

use super::backoff::{Backoff, Jitter};
use super::queue::Next;

/// What a reconcile reports; the runtime turns it into the key's next run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Converged: look again at the next periodic resync.
    Done,
    /// Converging without error (a build or a deployment is running): look again after this
    /// long. Resets the backoff.
    Requeue(Duration),
    /// Failed; retry on the failure backoff. The label is a bounded error kind for logs and
    /// metrics, such as `"create_listener"`.
    Retry(&'static str),
    /// Throttled, or a quota is full: look again on the longer wait schedule. Not a failure.
    Wait(&'static str),
    /// The shop is gone (teardown finished): keep no schedule for the key.
    Gone,
}

/// The reason of a wait on throttling (`ErrorKind::Throttled`'s label), which has a schedule
/// of its own.
pub(crate) const THROTTLED: &str = "throttled";

/// The timing the scheduler applies.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Timing {
    pub(crate) resync: Duration,
    pub(crate) resync_jitter: f64,
    pub(crate) retry: Backoff,
    pub(crate) throttle: Backoff,
    pub(crate) wait: Backoff,
}

/// Consecutive unsuccessful runs of one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Attempts {
    pub(crate) failures: u32,
    pub(crate) waits: u32,
}

/// The next run of a key, with the figures worth logging.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Decision {
    pub(crate) next: Next,
    pub(crate) delay: Duration,
    pub(crate) attempts: Attempts,
}

/// Per-key attempt counts and the jitter source. Owned by one worker loop, so no lock.
#[derive(Debug)]
pub(crate) struct Scheduler<K> {
    timing: Timing,
    jitter: Jitter,
    /// Only keys whose last run did not succeed, so a healthy fleet costs nothing here.
    unsettled: HashMap<K, Attempts>,
}

impl<K: Clone + Eq + Hash> Scheduler<K> {
    pub(crate) fn new(timing: Timing, jitter: Jitter) -> Scheduler<K> {
        Scheduler {
            timing,
            jitter,
            unsettled: HashMap::new(),
        }
    }

    /// Records `outcome` for `key` and decides its next run.
    pub(crate) fn decide(&mut self, key: &K, outcome: Outcome, now: Instant) -> Decision {
        let retry = |delay| {
            (
                delay,
                Next::Retry {
                    due: later(now, delay),
                },
            )
        };
        let (delay, next) = match outcome {
            Outcome::Done => {
                self.unsettled.remove(key);
                let delay = self
                    .jitter
                    .spread(self.timing.resync, self.timing.resync_jitter);
                (
                    delay,
                    Next::Resync {
                        due: later(now, delay),
                    },
                )
            }
            Outcome::Requeue(after) => {
                self.unsettled.remove(key);
                retry(after)
            }
            Outcome::Retry(_) => retry(self.fail(key)),
            Outcome::Wait(THROTTLED) => retry(self.wait(key, true)),
            Outcome::Wait(_) => retry(self.wait(key, false)),
            Outcome::Gone => {
                self.unsettled.remove(key);
                (Duration::ZERO, Next::Forget)
            }
        };

        let attempts = self.unsettled.get(key).copied().unwrap_or_default();
        Decision {
            next,
            delay,
            attempts,
        }
    }

    fn fail(&mut self, key: &K) -> Duration {
        let attempts = self.unsettled.entry(key.clone()).or_default();
        attempts.failures = attempts.failures.saturating_add(1);
        self.timing.retry.delay(attempts.failures, &mut self.jitter)
    }

    /// Throttling and the other waits share the count of consecutive waits, each with its
    /// own schedule.
    fn wait(&mut self, key: &K, throttled: bool) -> Duration {
        let attempts = self.unsettled.entry(key.clone()).or_default();
        attempts.waits = attempts.waits.saturating_add(1);
        let schedule = if throttled {
            &self.timing.throttle
        } else {
            &self.timing.wait
        };
        schedule.delay(attempts.waits, &mut self.jitter)
    }
}

/// `now + delay`, saturating at a year ahead instead of overflowing on absurd delays.
fn later(now: Instant, delay: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3_600);
    now.checked_add(delay.min(YEAR)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn exact_timing() -> Timing {
        Timing {
            resync: 300 * SECOND,
            resync_jitter: 0.0,
            retry: Backoff {
                base: SECOND,
                cap: 8 * SECOND,
                jitter: 0.0,
            },
            throttle: Backoff {
                base: 2 * SECOND,
                cap: 120 * SECOND,
                jitter: 0.0,
            },
            wait: Backoff {
                base: 30 * SECOND,
                cap: 600 * SECOND,
                jitter: 0.0,
            },
        }
    }

    /// Feeds `outcomes` for one key and returns each decision's delay in seconds.
    fn delays(scheduler: &mut Scheduler<&'static str>, outcomes: &[Outcome]) -> Vec<u64> {
        let now = Instant::now();
        outcomes
            .iter()
            .map(|o| scheduler.decide(&"a", *o, now).delay.as_secs())
            .collect()
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap_and_reset_on_success() {
        let mut scheduler = Scheduler::new(exact_timing(), Jitter::new(1));
        let retry = Outcome::Retry("create_listener");
        let outcomes = [retry, retry, retry, retry, retry, Outcome::Done, retry];
        assert_eq!(delays(&mut scheduler, &outcomes), [1, 2, 4, 8, 8, 300, 1]);
    }

    #[test]
    fn wait_outcomes_do_not_count_as_failures() {
        let mut scheduler = Scheduler::new(exact_timing(), Jitter::new(1));
        let (retry, wait) = (Outcome::Retry("transient"), Outcome::Wait("quota_exceeded"));
        assert_eq!(
            delays(&mut scheduler, &[retry, wait, wait, retry]),
            [1, 30, 60, 2]
        );

        let attempts = scheduler.decide(&"a", wait, Instant::now()).attempts;
        assert_eq!(
            attempts,
            Attempts {
                failures: 2,
                waits: 3
            }
        );
    }

    #[test]
    fn throttling_waits_briefly_and_a_full_quota_long() {
        let mut scheduler = Scheduler::new(exact_timing(), Jitter::new(1));
        let throttled = Outcome::Wait(THROTTLED);
        let outcomes = [throttled; 8];
        assert_eq!(
            delays(&mut scheduler, &outcomes),
            [2, 4, 8, 16, 32, 64, 120, 120]
        );
        let mut scheduler = Scheduler::new(exact_timing(), Jitter::new(1));
        assert_eq!(
            delays(&mut scheduler, &[Outcome::Wait("quota_exceeded")]),
            [30]
        );
    }

    #[test]
    fn a_requeue_checks_back_after_the_asked_delay_and_resets_the_backoff() {
        let mut scheduler = Scheduler::new(exact_timing(), Jitter::new(1));
        let retry = Outcome::Retry("transient");
        let outcomes = [retry, retry, Outcome::Requeue(10 * SECOND), retry];
        assert_eq!(delays(&mut scheduler, &outcomes), [1, 2, 10, 1]);
    }

    #[test]
    fn outcomes_map_to_lanes() {
        let mut scheduler = Scheduler::new(exact_timing(), Jitter::new(1));
        let now = Instant::now();
        let next =
            |scheduler: &mut Scheduler<_>, outcome| scheduler.decide(&"a", outcome, now).next;
        let resync = Next::Resync {
            due: now + 300 * SECOND,
        };
        assert_eq!(next(&mut scheduler, Outcome::Done), resync);
        let check = Next::Retry {
            due: now + 5 * SECOND,
        };
        assert_eq!(next(&mut scheduler, Outcome::Requeue(5 * SECOND)), check);
        let retry = Next::Retry { due: now + SECOND };
        assert_eq!(next(&mut scheduler, Outcome::Retry("other")), retry);
        let wait = Next::Retry {
            due: now + 30 * SECOND,
        };
        assert_eq!(next(&mut scheduler, Outcome::Wait("quota_exceeded")), wait);
        assert_eq!(next(&mut scheduler, Outcome::Gone), Next::Forget);
    }

    #[test]
    fn resyncs_spread_within_their_jitter() {
        let timing = Timing {
            resync_jitter: 0.1,
            ..exact_timing()
        };
        let mut scheduler = Scheduler::new(timing, Jitter::new(9));
        let now = Instant::now();
        let delays: Vec<f64> = (0..1_000)
            .map(|_| {
                scheduler
                    .decide(&"a", Outcome::Done, now)
                    .delay
                    .as_secs_f64()
            })
            .collect();
        assert!(delays.iter().all(|d| (270.0..=330.0).contains(d)));
        assert!(delays.iter().any(|d| *d < 280.0) && delays.iter().any(|d| *d > 320.0));
    }

    #[test]
    fn settled_keys_keep_no_state() {
        let mut scheduler = Scheduler::new(exact_timing(), Jitter::new(1));
        let now = Instant::now();
        scheduler.decide(&"a", Outcome::Retry("other"), now);
        scheduler.decide(&"b", Outcome::Wait("throttled"), now);
        scheduler.decide(&"a", Outcome::Done, now);
        scheduler.decide(&"b", Outcome::Gone, now);
        assert!(scheduler.unsettled.is_empty());
    }

    #[test]
    fn absurd_delays_saturate_instead_of_overflowing() {
        let mut scheduler = Scheduler::new(exact_timing(), Jitter::new(1));
        let now = Instant::now();
        let decision = scheduler.decide(&"a", Outcome::Requeue(Duration::MAX), now);
        assert!(matches!(decision.next, Next::Retry { due } if due > now));
    }
}
