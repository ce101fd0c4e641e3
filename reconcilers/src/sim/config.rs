//! Configuration of the simulated account: identity, clock, randomness, throttles, quotas and
//! how long lifecycles take. Defaults are AWS's documented defaults.

use std::collections::HashMap;
use std::time::Duration;

use crate::cloud::limits::Limit;

use super::clock::ClockMode;

/// How the simulated account behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The 12-digit account id in every ARN.
    pub account: String,
    /// The region in every ARN and DNS name.
    pub region: String,
    /// The VPC of every load balancer the test controls create.
    pub vpc_id: String,
    /// Seed of the generator behind ids and fault rolls; equal seeds replay equal runs.
    pub seed: u64,
    /// Whether time moves by itself or only when a test advances it.
    pub clock: ClockMode,
    /// Epoch milliseconds at simulated time zero; `None` takes the system time.
    pub start_epoch_millis: Option<i64>,
    /// Enforce per-operation token buckets server-side (empty bucket: `Throttled`).
    pub rate_limits: bool,
    /// With `rate_limits`: a call waits for its token, as the SDK adapters' client-side
    /// buckets make it wait (`src/aws/calls.rs`, the same limits), instead of being answered
    /// `Throttled`. The account a paced production controller sees.
    pub client_pacing: bool,
    /// Buckets that differ from [`crate::cloud::limits::default_limit`].
    pub rate_limit_overrides: HashMap<String, Limit>,
    /// Service quotas.
    pub quotas: Quotas,
    /// How long lifecycles take.
    pub timings: Timings,
}

impl Default for SimConfig {
    /// Real time, `eu-west-1`, no rate limits: what `shop-controller dev` runs on.
    fn default() -> Self {
        Self {
            account: "123456789012".to_owned(),
            region: "eu-west-1".to_owned(),
            vpc_id: "vpc-0a1b2c3d4e5f60718".to_owned(),
            seed: 0x5eed,
            clock: ClockMode::Scaled(1.0),
            start_epoch_millis: None,
            rate_limits: false,
            client_pacing: false,
            rate_limit_overrides: HashMap::new(),
            quotas: Quotas::default(),
            timings: Timings::default(),
        }
    }
}

impl SimConfig {
    /// For tests: a manual clock starting at 2026-01-01T00:00:00Z, no rate limits.
    pub fn manual() -> Self {
        Self {
            clock: ClockMode::Manual,
            start_epoch_millis: Some(1_767_225_600_000),
            ..Self::default()
        }
    }

    /// For benchmarks: like [`SimConfig::manual`] with the token buckets enforced.
    pub fn throttled() -> Self {
        Self {
            rate_limits: true,
            ..Self::manual()
        }
    }
}

/// Service quotas, with AWS's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Listeners of one load balancer (50).
    pub listeners_per_load_balancer: usize,
    /// Target groups of the region (3000).
    pub target_groups: usize,
    /// Registered targets of one target group (1000).
    pub targets_per_target_group: usize,
    /// Certificates on one listener besides its default one (25).
    pub certificates_per_listener: usize,
    /// ACM certificates of the account (2500).
    pub certificates: usize,
    /// Active (created, queued, in progress) deployments per deployment group (1).
    pub deployments_per_group: usize,
    /// Running CodeBuild builds of the account (60).
    pub concurrent_builds: usize,
    /// Tags on one ELB or ACM resource (50).
    pub tags_per_resource: usize,
    /// Rules of one application load balancer, default rules not counted (100).
    pub rules_per_load_balancer: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            listeners_per_load_balancer: 50,
            target_groups: 3000,
            targets_per_target_group: 1000,
            certificates_per_listener: 25,
            certificates: 2500,
            deployments_per_group: 1,
            concurrent_builds: 60,
            tags_per_resource: 50,
            rules_per_load_balancer: 100,
        }
    }
}

/// How long lifecycles take in simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timings {
    /// From StartBuild to a finished build.
    pub build: Duration,
    /// A deployment stays `Created` this long before it starts.
    pub deployment_start: Duration,
    /// From start to a finished deployment.
    pub deployment: Duration,
    /// An invocation stays `Pending` this long.
    pub command_start: Duration,
    /// From SendCommand to a finished invocation.
    pub command: Duration,
    /// How long a deregistered target drains (ELB's default is 300 s).
    pub deregistration_delay: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            build: Duration::from_secs(60),
            deployment_start: Duration::from_secs(2),
            deployment: Duration::from_secs(30),
            command_start: Duration::from_secs(1),
            command: Duration::from_secs(3),
            deregistration_delay: Duration::from_secs(300),
        }
    }
}
