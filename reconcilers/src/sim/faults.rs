//! Faults on demand: per-operation (or account-wide) throttling, 5xx and lost-response
//! probabilities with latency, scripted failures of the next calls, and AWS's server-side token
//! buckets. Every roll uses the account's seeded generator, so a faulty run replays exactly.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::cloud::limits::RateLimits;
use crate::cloud::{CloudError, ErrorKind};

use super::ids::Rng;
use super::{SimConfig, SimulatedAws, error};

/// What can go wrong with calls of an operation. Probabilities are between 0 and 1.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultProfile {
    /// The call is refused with `Throttled` before it does anything.
    pub throttle: f64,
    /// The call fails with a 5xx (`Transient`) before it does anything.
    pub transient: f64,
    /// The call takes effect but the caller gets `Transient`, as when a response is lost.
    pub lost_response: f64,
    /// Real time each call takes before it takes effect.
    pub latency: Duration,
    /// The chance that a call takes `spike_latency` instead of `latency`: the slow tail real
    /// APIs have, which holds a reconcile far longer than the usual call.
    pub spike: f64,
    /// Real time a call hit by a spike takes before it takes effect.
    pub spike_latency: Duration,
}

impl FaultProfile {
    /// The latency of one admitted call. Rolls only when spikes are on, so profiles without
    /// them draw as many numbers as before and seeded runs replay as they did.
    fn latency_of_next(&self, rng: &mut Rng) -> Duration {
        if self.spike > 0.0 && rng.chance(self.spike) {
            self.spike_latency
        } else {
            self.latency
        }
    }
}

pub(crate) struct Faults {
    default: FaultProfile,
    per_operation: HashMap<String, FaultProfile>,
    scripted: HashMap<String, VecDeque<ErrorKind>>,
    rate_limits: Option<RateLimits>,
    /// Wait for a token instead of refusing the call (`SimConfig::client_pacing`).
    pacing: bool,
}

/// A call let through: the real latency to add, and the simulated time it waits for its
/// token when calls are paced.
pub(crate) struct Admitted {
    pub(crate) latency: Duration,
    pub(crate) paced: Duration,
}

impl Faults {
    pub(crate) fn new(config: &SimConfig) -> Self {
        let rate_limits = config
            .rate_limits
            .then(|| RateLimits::with_overrides(config.rate_limit_overrides.clone()));
        Self {
            default: FaultProfile::default(),
            per_operation: HashMap::new(),
            scripted: HashMap::new(),
            rate_limits,
            pacing: config.client_pacing,
        }
    }

    fn profile(&self, operation: &str) -> FaultProfile {
        self.per_operation
            .get(operation)
            .copied()
            .unwrap_or(self.default)
    }

    /// Decides whether a call gets through; if so, returns the latency to add.
    pub(crate) fn admit(
        &mut self,
        operation: &'static str,
        now: Instant,
        rng: &mut Rng,
    ) -> Result<Admitted, CloudError> {
        if let Some(kind) = self
            .scripted
            .get_mut(operation)
            .and_then(VecDeque::pop_front)
        {
            return Err(error(kind, operation, "Injected", "scripted failure"));
        }
        let mut paced = Duration::ZERO;
        let throttled_by_bucket = match self.rate_limits.as_mut() {
            Some(limits) if self.pacing => {
                paced = limits.reserve(operation, now);
                false
            }
            Some(limits) => !limits.try_take(operation, now),
            None => false,
        };
        let profile = self.profile(operation);
        if throttled_by_bucket || rng.chance(profile.throttle) {
            return Err(error(
                ErrorKind::Throttled,
                operation,
                "Throttling",
                "Rate exceeded",
            ));
        }
        if rng.chance(profile.transient) {
            return Err(error(
                ErrorKind::Transient,
                operation,
                "ServiceUnavailable",
                "the service is unavailable, try again",
            ));
        }
        Ok(Admitted {
            latency: profile.latency_of_next(rng),
            paced,
        })
    }

    /// Whether the response of a call that took effect is lost.
    pub(crate) fn loses_response(&self, operation: &str, rng: &mut Rng) -> bool {
        rng.chance(self.profile(operation).lost_response)
    }
}

/// Test controls for faults.
impl SimulatedAws {
    /// Faults of one operation (`service:Operation`), replacing the account-wide profile for it.
    pub fn set_faults(&self, operation: &str, profile: FaultProfile) {
        let mut state = self.state();
        state
            .faults
            .per_operation
            .insert(operation.to_owned(), profile);
    }

    /// Faults of every operation without a profile of its own.
    pub fn set_default_faults(&self, profile: FaultProfile) {
        self.state().faults.default = profile;
    }

    /// Removes every fault profile and scripted failure (the token buckets stay).
    pub fn clear_faults(&self) {
        let mut state = self.state();
        state.faults.default = FaultProfile::default();
        state.faults.per_operation.clear();
        state.faults.scripted.clear();
    }

    /// Fails the next `times` calls of `operation` with `kind`, before they do anything.
    pub fn fail_next(&self, operation: &str, kind: ErrorKind, times: usize) {
        let mut state = self.state();
        let queue = state
            .faults
            .scripted
            .entry(operation.to_owned())
            .or_default();
        queue.extend(std::iter::repeat_n(kind, times));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::cloud::limits::Limit;
    use crate::cloud::{LoadBalancing, ObjectStorage, TargetGroupSpec};

    const DESCRIBE: &str = "elasticloadbalancing:DescribeTargetGroups";

    fn spec(name: &str) -> TargetGroupSpec {
        TargetGroupSpec {
            name: name.to_owned(),
            port: 20000,
            vpc_id: SimConfig::default().vpc_id,
            health_check: Default::default(),
            tags: vec![],
        }
    }

    fn outcomes(aws: &SimulatedAws, operation: &str) -> HashMap<String, u64> {
        let (service, name) = operation.split_once(':').expect("service:Operation");
        aws.calls()
            .snapshot()
            .into_iter()
            .filter(|((s, n, _), _)| s == service && n == name)
            .map(|((_, _, outcome), count)| (outcome, count))
            .collect()
    }

    #[tokio::test]
    async fn an_empty_token_bucket_throttles_until_time_refills_it() {
        let mut config = SimConfig::throttled();
        config
            .rate_limit_overrides
            .insert(DESCRIBE.to_owned(), Limit::new(2.0, 3));
        let aws = SimulatedAws::with_config(config);

        for _ in 0..3 {
            aws.list_target_groups().await.expect("within the burst");
        }
        let error = aws.list_target_groups().await.expect_err("bucket empty");
        assert_eq!(error.kind, ErrorKind::Throttled);

        aws.advance(Duration::from_millis(500));
        aws.list_target_groups().await.expect("refilled");
        let counts = outcomes(&aws, DESCRIBE);
        assert_eq!(counts.get("ok"), Some(&4));
        assert_eq!(counts.get("throttled"), Some(&1));
    }

    #[tokio::test]
    async fn paced_calls_wait_for_their_token_instead_of_being_throttled() {
        // 2 calls per simulated second, burst 3, on a clock 10 times faster than real time:
        // the 4th to 7th calls wait 0.5 simulated seconds each, 50 ms of real time.
        let mut config = SimConfig {
            clock: crate::sim::ClockMode::Scaled(10.0),
            client_pacing: true,
            ..SimConfig::throttled()
        };
        config
            .rate_limit_overrides
            .insert(DESCRIBE.to_owned(), Limit::new(2.0, 3));
        let aws = SimulatedAws::with_config(config);
        let began = aws.now_millis();
        for _ in 0..7 {
            aws.list_target_groups()
                .await
                .expect("paced, never throttled");
        }
        assert_eq!(outcomes(&aws, DESCRIBE).get("ok"), Some(&7));
        // Four calls beyond the burst at 2 per second: the account saw them spread over at
        // least 2 simulated seconds, the bucket's refill (scheduling can only add).
        let spread = aws.now_millis() - began;
        assert!(spread >= 2_000, "{spread} ms");
    }

    #[tokio::test]
    async fn rate_limits_are_off_unless_configured() {
        let aws = SimulatedAws::with_config(SimConfig::manual());
        for _ in 0..100 {
            aws.list_target_groups().await.expect("no bucket");
        }
    }

    #[tokio::test]
    async fn injected_faults_fail_calls_before_they_take_effect() {
        let cases = [
            (
                FaultProfile {
                    throttle: 1.0,
                    ..Default::default()
                },
                ErrorKind::Throttled,
            ),
            (
                FaultProfile {
                    transient: 1.0,
                    ..Default::default()
                },
                ErrorKind::Transient,
            ),
        ];
        for (profile, expected) in cases {
            let aws = SimulatedAws::with_config(SimConfig::manual());
            aws.set_default_faults(profile);

            let error = aws
                .create_target_group(&spec("tg"))
                .await
                .expect_err("fault");

            assert_eq!(error.kind, expected);
            aws.clear_faults();
            assert_eq!(aws.list_target_groups().await.map(|all| all.len()), Ok(0));
        }
    }

    #[tokio::test]
    async fn a_lost_response_still_applies_the_change() {
        let aws = SimulatedAws::with_config(SimConfig::manual());
        aws.set_faults(
            "elasticloadbalancing:CreateTargetGroup",
            FaultProfile {
                lost_response: 1.0,
                ..Default::default()
            },
        );

        let error = aws
            .create_target_group(&spec("tg"))
            .await
            .expect_err("lost");

        assert_eq!(error.kind, ErrorKind::Transient);
        let groups = aws.list_target_groups().await.expect("listed");
        assert_eq!(groups.len(), 1);
        aws.clear_faults();
        let again = aws.create_target_group(&spec("tg")).await.expect("same");
        assert_eq!(again.arn, groups[0].arn);
    }

    #[tokio::test]
    async fn fault_rolls_replay_from_the_seed() {
        let run = || async {
            let aws = SimulatedAws::with_config(SimConfig::manual());
            aws.set_faults(
                "s3:HeadObject",
                FaultProfile {
                    transient: 0.5,
                    ..Default::default()
                },
            );
            aws.create_bucket("b");
            aws.put_object("b", "k", &b"x"[..]);
            let mut outcomes = Vec::new();
            for _ in 0..32 {
                outcomes.push(aws.head_object("b", "k", None).await.is_ok());
            }
            outcomes
        };
        let first = run().await;
        assert_eq!(first, run().await);
        assert!(first.contains(&true) && first.contains(&false));
    }

    #[tokio::test]
    async fn scripted_failures_hit_the_next_calls_only() {
        let aws = SimulatedAws::with_config(SimConfig::manual());
        aws.fail_next(DESCRIBE, ErrorKind::Transient, 2);

        assert!(aws.list_target_groups().await.is_err());
        assert!(aws.list_target_groups().await.is_err());
        assert!(aws.list_target_groups().await.is_ok());
    }

    #[tokio::test]
    async fn latency_delays_the_call() {
        let aws = SimulatedAws::with_config(SimConfig::manual());
        aws.set_faults(
            DESCRIBE,
            FaultProfile {
                latency: Duration::from_millis(30),
                ..Default::default()
            },
        );
        let started = std::time::Instant::now();

        aws.list_target_groups().await.expect("slow but fine");

        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn latency_spikes_hit_about_their_share_of_calls() {
        let profile = FaultProfile {
            latency: Duration::from_millis(1),
            spike: 0.1,
            spike_latency: Duration::from_secs(2),
            ..Default::default()
        };
        let mut rng = Rng::new(7);
        let latencies: Vec<Duration> = (0..2_000)
            .map(|_| profile.latency_of_next(&mut rng))
            .collect();

        let spiked = latencies.iter().filter(|l| **l == profile.spike_latency);
        let spiked = spiked.count();
        assert!(
            (140..260).contains(&spiked),
            "{spiked} spikes in 2000 calls"
        );
        let usual = latencies.iter().filter(|l| **l == profile.latency).count();
        assert_eq!(usual + spiked, latencies.len());
    }

    #[test]
    fn a_profile_without_spikes_draws_nothing_for_latency() {
        let mut rolled = Rng::new(7);
        let mut untouched = Rng::new(7);
        let profile = FaultProfile {
            latency: Duration::from_millis(5),
            ..Default::default()
        };

        for _ in 0..10 {
            assert_eq!(profile.latency_of_next(&mut rolled), profile.latency);
        }

        assert_eq!(rolled.hex(16), untouched.hex(16));
    }
}
