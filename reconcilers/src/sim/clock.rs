//! The simulated clock. Lifecycles (builds, deployments, commands, target health) and the
//! token buckets run on it, so a test drives them with [`super::SimulatedAws::advance`] instead
//! of sleeping, while `shop-controller dev` lets real time move them.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How simulated time moves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClockMode {
    /// Time moves only when a test calls [`super::SimulatedAws::advance`].
    Manual,
    /// Real time multiplied by the factor (1.0 is real time), plus every `advance`.
    Scaled(f64),
}

pub(crate) struct Clock {
    mode: ClockMode,
    started: Instant,
    skipped: Duration,
    epoch_at_start: i64,
}

impl Clock {
    /// A clock starting now; `epoch_at_start` defaults to the system time.
    pub(crate) fn new(mode: ClockMode, epoch_at_start: Option<i64>) -> Self {
        let system_now = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| {
                    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
                })
        };
        Self {
            mode,
            started: Instant::now(),
            skipped: Duration::ZERO,
            epoch_at_start: epoch_at_start.unwrap_or_else(system_now),
        }
    }

    /// How long real time takes to pass `simulated`; zero on a manual clock, which real
    /// time does not move.
    pub(crate) fn real(&self, simulated: Duration) -> Duration {
        match self.mode {
            ClockMode::Manual => Duration::ZERO,
            ClockMode::Scaled(factor) if factor > 0.0 => simulated.div_f64(factor),
            ClockMode::Scaled(_) => Duration::ZERO,
        }
    }

    /// Simulated time since the clock started.
    pub(crate) fn elapsed(&self) -> Duration {
        match self.mode {
            ClockMode::Manual => self.skipped,
            ClockMode::Scaled(factor) => {
                self.started.elapsed().mul_f64(factor.max(0.0)) + self.skipped
            }
        }
    }

    /// The simulated now as an `Instant`, for the token buckets.
    pub(crate) fn instant(&self) -> Instant {
        self.started + self.elapsed()
    }

    /// Milliseconds since the Unix epoch at `elapsed` simulated time.
    pub(crate) fn epoch_millis_at(&self, elapsed: Duration) -> i64 {
        let millis = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        self.epoch_at_start.saturating_add(millis)
    }

    /// Milliseconds since the Unix epoch now.
    pub(crate) fn epoch_millis(&self) -> i64 {
        self.epoch_millis_at(self.elapsed())
    }

    pub(crate) fn advance(&mut self, by: Duration) {
        self.skipped += by;
    }
}
