//! DNS and HTTP-01 fetches in the simulated world: records are set by tests (or the dev mode),
//! and a challenge fetch "reaches us" only when every address the name resolves to is one we
//! serve, the way Let's Encrypt would see it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::cloud::{CloudError, DnsAnswers, Domains, FetchError};
use crate::domain_check::{PROBE_BODY, PROBE_TOKEN_PREFIX};
use crate::hostname::Hostname;

/// What our challenge responder answers for a token, if it knows it.
#[async_trait]
pub trait ChallengeSource: Send + Sync {
    /// The key authorization for `token`, or `None` (the responder's 404).
    async fn answer(&self, token: &str) -> Option<String>;
}

/// A [`Domains`] over in-memory records. Names nobody set have no records.
pub struct SimDomains {
    served_ips: Vec<IpAddr>,
    source: Arc<dyn ChallengeSource>,
    records: Mutex<HashMap<Hostname, DnsAnswers>>,
}

impl SimDomains {
    /// A world where `served_ips` (the region's static IPs) lead to our responder, which
    /// answers from `source`.
    pub fn new(served_ips: Vec<IpAddr>, source: Arc<dyn ChallengeSource>) -> Self {
        Self {
            served_ips,
            source,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces every record of `domain`.
    pub fn set_records(&self, domain: &Hostname, answers: DnsAnswers) {
        self.records().insert(domain.clone(), answers);
    }

    /// Removes every record of `domain`.
    pub fn remove(&self, domain: &Hostname) {
        self.records().remove(domain);
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<Hostname, DnsAnswers>> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Domains for SimDomains {
    async fn resolve(&self, domain: &Hostname) -> Result<DnsAnswers, CloudError> {
        Ok(self.records().get(domain).cloned().unwrap_or_default())
    }

    async fn fetch_challenge(&self, domain: &Hostname, token: &str) -> Result<String, FetchError> {
        let answers = self.records().get(domain).cloned().unwrap_or_default();

        // IPv6 first, as Let's Encrypt does: an AAAA record that does not lead to us fails the
        // challenge even when the A records are right.
        let addresses = answers.aaaa.iter().map(|&a| IpAddr::from(a));
        let addresses: Vec<IpAddr> = addresses
            .chain(answers.a.iter().map(|&a| IpAddr::from(a)))
            .collect();
        if addresses.is_empty() {
            return Err(FetchError::NoAddress);
        }
        if let Some(&stray) = addresses.iter().find(|a| !self.served_ips.contains(a)) {
            return Err(FetchError::Connect {
                address: SocketAddr::new(stray, 80).to_string(),
                message: "connection refused (not one of our addresses)".to_owned(),
            });
        }

        if token.starts_with(PROBE_TOKEN_PREFIX) {
            return Ok(PROBE_BODY.to_owned());
        }
        self.source
            .answer(token)
            .await
            .ok_or_else(|| FetchError::Status {
                address: SocketAddr::new(addresses[0], 80).to_string(),
                status: 404,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    struct OneToken;

    #[async_trait]
    impl ChallengeSource for OneToken {
        async fn answer(&self, token: &str) -> Option<String> {
            (token == "known").then(|| "known.key-authorization".to_owned())
        }
    }

    const OURS_V4: Ipv4Addr = Ipv4Addr::new(75, 2, 0, 1);
    const OURS_V6: Ipv6Addr = Ipv6Addr::new(0x2600, 0x9000, 0, 0, 0, 0, 0, 1);

    fn world() -> SimDomains {
        SimDomains::new(vec![OURS_V4.into(), OURS_V6.into()], Arc::new(OneToken))
    }

    fn domain() -> Hostname {
        Hostname::parse("shop.example.com").expect("hostname")
    }

    fn pointing(a: &[Ipv4Addr], aaaa: &[Ipv6Addr]) -> DnsAnswers {
        DnsAnswers {
            a: a.to_vec(),
            aaaa: aaaa.to_vec(),
            ..DnsAnswers::default()
        }
    }

    #[tokio::test]
    async fn resolve_returns_the_records_set_and_nothing_for_unknown_names() {
        let domains = world();
        let answers = pointing(&[OURS_V4], &[]);
        domains.set_records(&domain(), answers.clone());

        assert_eq!(domains.resolve(&domain()).await, Ok(answers));
        let other = Hostname::parse("other.example.com").expect("hostname");
        assert_eq!(domains.resolve(&other).await, Ok(DnsAnswers::default()));

        domains.remove(&domain());
        assert_eq!(domains.resolve(&domain()).await, Ok(DnsAnswers::default()));
    }

    #[tokio::test]
    async fn a_domain_pointing_at_us_gets_the_responders_answers() {
        let domains = world();
        domains.set_records(&domain(), pointing(&[OURS_V4], &[OURS_V6]));

        let known = domains.fetch_challenge(&domain(), "known").await;
        let probe = domains
            .fetch_challenge(&domain(), "shop-controller-probe-123")
            .await;
        let unknown = domains.fetch_challenge(&domain(), "unknown").await;

        assert_eq!(known, Ok("known.key-authorization".to_owned()));
        assert_eq!(probe, Ok("shop-controller-probe".to_owned()));
        assert!(
            matches!(unknown, Err(FetchError::Status { status: 404, .. })),
            "{unknown:?}"
        );
    }

    #[tokio::test]
    async fn a_domain_without_addresses_cannot_be_fetched() {
        let domains = world();

        let result = domains.fetch_challenge(&domain(), "known").await;

        assert_eq!(result, Err(FetchError::NoAddress));
    }

    #[tokio::test]
    async fn an_address_not_ours_fails_to_connect_and_is_named() {
        let domains = world();
        domains.set_records(&domain(), pointing(&[Ipv4Addr::new(192, 0, 2, 1)], &[]));

        let result = domains.fetch_challenge(&domain(), "known").await;

        let Err(FetchError::Connect { address, .. }) = result else {
            panic!("expected a connect error, got {result:?}");
        };
        assert_eq!(address, "192.0.2.1:80");
    }

    #[tokio::test]
    async fn a_stray_aaaa_fails_even_when_the_a_records_are_ours() {
        let domains = world();
        let stray: Ipv6Addr = "2001:db8::1".parse().expect("ipv6");
        domains.set_records(&domain(), pointing(&[OURS_V4], &[stray]));

        let result = domains
            .fetch_challenge(&domain(), "shop-controller-probe-1")
            .await;

        let Err(FetchError::Connect { address, .. }) = result else {
            panic!("expected a connect error, got {result:?}");
        };
        assert_eq!(address, "[2001:db8::1]:80");
    }

    #[tokio::test]
    async fn check_runs_the_self_check_through_the_world() {
        use crate::domain_check::{self, code};

        let domains = world();
        domains.set_records(&domain(), pointing(&[OURS_V4], &[]));
        let stray = Hostname::parse("stray.example.com").expect("hostname");
        domains.set_records(
            &stray,
            pointing(&[OURS_V4], &["2001:db8::1".parse().expect("ip")]),
        );
        let region = [IpAddr::from(OURS_V4)];

        let good = domain_check::check(
            &domains,
            &domain(),
            &region,
            "letsencrypt.org",
            "shop-controller-probe-1",
        )
        .await;
        let bad = domain_check::check(
            &domains,
            &stray,
            &region,
            "letsencrypt.org",
            "shop-controller-probe-2",
        )
        .await;

        assert_eq!(
            good.codes(),
            vec![
                code::POINTS_AT_REGION,
                code::CAA_ALLOWS_CA,
                code::SELF_CHECK_PASSED
            ]
        );
        assert_eq!(
            bad.codes(),
            vec![
                code::STRAY_AAAA,
                code::CAA_ALLOWS_CA,
                code::SELF_CHECK_FAILED
            ]
        );
    }
}
