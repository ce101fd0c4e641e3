//! Client-side rate limits: one token bucket per AWS operation, with defaults modelled on what
//! AWS documents and what the AWS Load Balancer Controller uses. The SDK adapters wait on them
//! before each call; the simulated AWS enforces the same buckets server-side, answering
//! `Throttled` when one is empty, so benchmarks against it show the real floor.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A token bucket's refill rate and capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub per_second: f64,
    pub burst: u32,
}

impl Limit {
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// The default limit of an operation, named `service:Operation` (for example
/// `elasticloadbalancing:DescribeTargetGroups`).
pub fn default_limit(operation: &str) -> Limit {
    let (service, name) = operation.split_once(':').unwrap_or(("", operation));
    match service {
        "elasticloadbalancing" => match name {
            n if n.starts_with("Describe") => Limit::new(10.0, 40),
            "RegisterTargets" | "DeregisterTargets" => Limit::new(4.0, 20),
            _ => Limit::new(3.0, 20),
        },
        "ec2" => Limit::new(20.0, 100),
        "acm" => match name {
            "ImportCertificate" => Limit::new(1.0, 1),
            n if n.starts_with("Describe") || n.starts_with("List") => Limit::new(10.0, 20),
            _ => Limit::new(5.0, 10),
        },
        "codebuild" => Limit::new(5.0, 10),
        "codedeploy" => Limit::new(5.0, 10),
        "ssm" => match name {
            "SendCommand" => Limit::new(3.0, 10),
            _ => Limit::new(10.0, 20),
        },
        "s3" => Limit::new(100.0, 200),
        _ => Limit::new(5.0, 10),
    }
}

/// A token bucket, driven by the instants the caller passes in (so it is testable and the
/// simulated AWS can run it on its own clock).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    limit: Limit,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(limit: Limit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        self.updated = now;
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes a token now, going into debt if needed, and says how long the caller must wait
    /// before using it. Waiters queue in arrival order because each one's debt pushes the next
    /// one's wait further out.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 || self.limit.per_second <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.limit.per_second)
        }
    }
}

/// One bucket per operation, created on first use from the defaults and any overrides.
#[derive(Clone, Debug, Default)]
pub struct RateLimits {
    overrides: HashMap<String, Limit>,
    buckets: HashMap<String, TokenBucket>,
}

impl RateLimits {
    /// Buckets with the defaults, except for the given operations.
    pub fn with_overrides(overrides: HashMap<String, Limit>) -> Self {
        Self {
            overrides,
            buckets: HashMap::new(),
        }
    }

    fn bucket(&mut self, operation: &str, now: Instant) -> &mut TokenBucket {
        let limit = self
            .overrides
            .get(operation)
            .copied()
            .unwrap_or_else(|| default_limit(operation));
        self.buckets
            .entry(operation.to_owned())
            .or_insert_with(|| TokenBucket::new(limit, now))
    }

    pub fn try_take(&mut self, operation: &str, now: Instant) -> bool {
        self.bucket(operation, now).try_take(now)
    }

    pub fn reserve(&mut self, operation: &str, now: Instant) -> Duration {
        self.bucket(operation, now).reserve(now)
    }
}

/// Parses overrides written as `service:Operation=RATE/BURST`, comma-separated.
pub fn parse_overrides(text: &str) -> Result<HashMap<String, Limit>, String> {
    let mut overrides = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || format!("rate limit {entry:?} is not service:Operation=RATE/BURST");
        let (operation, limit) = entry.split_once('=').ok_or_else(bad)?;
        let (rate, burst) = limit.split_once('/').ok_or_else(bad)?;
        let per_second: f64 = rate.parse().map_err(|_| bad())?;
        let burst: u32 = burst.parse().map_err(|_| bad())?;
        if !operation.contains(':') || per_second < 0.0 || burst == 0 {
            return Err(bad());
        }
        overrides.insert(operation.to_owned(), Limit::new(per_second, burst));
    }
    Ok(overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_documented_limits() {
        assert_eq!(
            default_limit("elasticloadbalancing:DescribeListeners"),
            Limit::new(10.0, 40)
        );
        assert_eq!(
            default_limit("elasticloadbalancing:RegisterTargets"),
            Limit::new(4.0, 20)
        );
        assert_eq!(
            default_limit("elasticloadbalancing:CreateListener"),
            Limit::new(3.0, 20)
        );
        assert_eq!(default_limit("ec2:DescribeInstances").per_second, 20.0);
        assert_eq!(default_limit("acm:ImportCertificate").per_second, 1.0);
    }

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Limit::new(2.0, 3), start);
        assert!((0..3).all(|_| bucket.try_take(start)));
        assert!(!bucket.try_take(start));
        assert!(bucket.try_take(start + Duration::from_millis(500)));
        assert!(!bucket.try_take(start + Duration::from_millis(500)));
    }

    #[test]
    fn reservations_queue_waiters_in_order() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Limit::new(4.0, 1), start);
        assert_eq!(bucket.reserve(start), Duration::ZERO);
        assert_eq!(bucket.reserve(start), Duration::from_millis(250));
        assert_eq!(bucket.reserve(start), Duration::from_millis(500));
    }

    #[test]
    fn overrides_parse() {
        let parsed =
            parse_overrides("acm:ImportCertificate=2/4, ssm:SendCommand=0.5/1").expect("valid");
        assert_eq!(
            parsed.get("acm:ImportCertificate"),
            Some(&Limit::new(2.0, 4))
        );
        assert!(parse_overrides("acm=1/1").is_err());
        assert!(parse_overrides("acm:X=1").is_err());
        assert!(parse_overrides("acm:X=1/0").is_err());
    }
}
