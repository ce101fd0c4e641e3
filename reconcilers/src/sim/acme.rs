//! A simulated ACME CA for the logic tests and `shop-controller dev`: orders with one HTTP-01
//! challenge, validated by fetching the token through a [`Domains`] the way a CA would, and
//! certificates signed by a CA key made at start. Like Let's Encrypt it limits new orders per
//! window (answered as throttling), and tests can make it reject a domain's validations.
//!
//! Time is the system clock: the controller decides renewals on it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::cloud::{
    Acme, AcmeOrder, CertificateMaterial, CloudError, Domains, ErrorKind, Http01Challenge,
    IssuedCertificate, OrderStatus, RenewalWindow,
};
use crate::hostname::Hostname;

/// How the simulated CA behaves.
#[derive(Clone, Debug)]
pub struct SimAcmeConfig {
    /// Lifetime of the certificates it issues.
    pub validity: Duration,
    /// New orders allowed per window, like Let's Encrypt's per-account limit; `None` is no limit.
    pub order_limit: Option<(u32, Duration)>,
    /// How long the renewal information answers say to wait before asking again.
    pub renewal_info_retry: Duration,
}

impl Default for SimAcmeConfig {
    fn default() -> Self {
        Self {
            validity: Duration::from_secs(90 * 24 * 60 * 60),
            order_limit: None,
            renewal_info_retry: Duration::from_secs(6 * 60 * 60),
        }
    }
}

/// The simulated CA.
pub struct SimAcme {
    domains: Arc<dyn Domains>,
    config: SimAcmeConfig,
    issuer: CertifiedIssuer<'static, KeyPair>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    orders: HashMap<String, Order>,
    /// When each order was placed, for the order limit.
    placed: Vec<i64>,
    rejected: HashSet<Hostname>,
    failed_validations: u64,
    issued: u64,
    /// Renewal windows by certificate identifier: issued ones, or what a test suggests.
    windows: HashMap<String, (i64, i64)>,
    /// The domain of each issued certificate, by identifier.
    by_domain: Vec<(String, Hostname)>,
}

struct Order {
    domain: Hostname,
    status: OrderStatus,
    challenge: Http01Challenge,
    error: Option<String>,
}

impl Order {
    fn view(&self, url: &str) -> AcmeOrder {
        AcmeOrder {
            url: url.to_owned(),
            status: self.status,
            challenges: vec![self.challenge.clone()],
            error: self.error.clone(),
        }
    }
}

const ACCOUNT_THUMBPRINT: &str = "sim-account-thumbprint";

impl SimAcme {
    /// A CA that validates through `domains`.
    pub fn new(domains: Arc<dyn Domains>, config: SimAcmeConfig) -> Self {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Simulated ACME CA");
        let key = KeyPair::generate().expect("ring generates an ECDSA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a CA certificate signs");
        Self {
            domains,
            config,
            issuer,
            state: Mutex::new(State::default()),
        }
    }

    /// Makes every later validation of `domain` fail, as when the CA sees another server.
    pub fn reject_validations(&self, domain: &Hostname) {
        self.state().rejected.insert(domain.clone());
    }

    /// Orders placed so far.
    pub fn orders_placed(&self) -> usize {
        self.state().placed.len()
    }

    /// Validations that failed so far.
    pub fn validations_failed(&self) -> u64 {
        self.state().failed_validations
    }

    /// Asks for the renewal of every certificate issued for `domain` so far within
    /// `[start, end]` (milliseconds since the epoch), as a CA revoking them soon would.
    pub fn suggest_renewal(&self, domain: &Hostname, start: i64, end: i64) {
        let mut state = self.state();
        let ids: Vec<String> = state
            .by_domain
            .iter()
            .filter(|(_, d)| d == domain)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            state.windows.insert(id, (start, end));
        }
    }

    /// Certificates issued so far.
    pub fn certificates_issued(&self) -> u64 {
        self.state().issued
    }

    /// The CA certificate (PEM) the issued certificates chain to.
    pub fn root_pem(&self) -> String {
        self.issuer.pem()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn issue(&self, domain: &Hostname) -> Result<IssuedCertificate, CloudError> {
        let failed = |e: rcgen::Error| CloudError::new(ErrorKind::Other, "acme:Finalize", e);
        let now = now_millis();
        let not_after = now.saturating_add(millis(self.config.validity));
        let mut params = CertificateParams::new(vec![domain.to_string()]).map_err(failed)?;
        params
            .distinguished_name
            .push(DnType::CommonName, domain.as_str());
        // Renewal information identifies a certificate by its issuer's key id and serial.
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_time(now)?;
        params.not_after = to_time(not_after)?;
        let key = KeyPair::generate().map_err(failed)?;
        let certificate = params.signed_by(&key, &self.issuer).map_err(failed)?;
        Ok(IssuedCertificate {
            material: CertificateMaterial {
                certificate_pem: certificate.pem(),
                private_key_pem: key.serialize_pem(),
                chain_pem: self.issuer.pem(),
            },
            // The encoding keeps whole seconds.
            not_before: now / 1000 * 1000,
            not_after: not_after / 1000 * 1000,
        })
    }
}

#[async_trait]
impl Acme for SimAcme {
    async fn new_order(&self, domain: &Hostname) -> Result<AcmeOrder, CloudError> {
        let now = now_millis();
        let mut state = self.state();
        if let Some((limit, window)) = self.config.order_limit {
            let since = now.saturating_sub(millis(window));
            state.placed.retain(|at| *at > since);
            if state.placed.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
                return Err(CloudError::new(
                    ErrorKind::Throttled,
                    "acme:NewOrder",
                    format!("rateLimited: too many new orders ({limit}) recently"),
                ));
            }
        }
        state.placed.push(now);
        state.next_id += 1;
        let id = state.next_id;
        let url = format!("https://acme.sim/order/{id}");
        let token = format!("sim-token-{id:08}");
        let order = Order {
            domain: domain.clone(),
            status: OrderStatus::Pending,
            challenge: Http01Challenge {
                domain: domain.clone(),
                key_authorization: format!("{token}.{ACCOUNT_THUMBPRINT}"),
                token,
                status: "pending".to_owned(),
                error: None,
            },
            error: None,
        };
        let view = order.view(&url);
        state.orders.insert(url, order);
        Ok(view)
    }

    async fn order(&self, url: &str) -> Result<AcmeOrder, CloudError> {
        let state = self.state();
        let order = state
            .orders
            .get(url)
            .ok_or_else(|| not_found("acme:GetOrder", url))?;
        Ok(order.view(url))
    }

    async fn challenges_ready(&self, url: &str) -> Result<(), CloudError> {
        let (domain, challenge, rejected) = {
            let state = self.state();
            let order = state
                .orders
                .get(url)
                .ok_or_else(|| not_found("acme:Challenge", url))?;
            if order.status != OrderStatus::Pending {
                return Ok(());
            }
            let rejected = state.rejected.contains(&order.domain);
            (order.domain.clone(), order.challenge.clone(), rejected)
        };
        // Validated at once: the fetch is what a CA's validation does.
        let verdict = if rejected {
            Err("the CA's validation was rejected (simulated)".to_owned())
        } else {
            match self
                .domains
                .fetch_challenge(&domain, &challenge.token)
                .await
            {
                Ok(body) if body.trim() == challenge.key_authorization => Ok(()),
                Ok(body) => Err(format!(
                    "the key authorization from http://{domain}/.well-known/acme-challenge/{} was {body:?}",
                    challenge.token
                )),
                Err(error) => Err(error.to_string()),
            }
        };
        let mut state = self.state();
        if verdict.is_err() {
            state.failed_validations += 1;
        }
        let Some(order) = state.orders.get_mut(url) else {
            return Err(not_found("acme:Challenge", url));
        };
        match verdict {
            Ok(()) => {
                order.status = OrderStatus::Ready;
                order.challenge.status = "valid".to_owned();
            }
            Err(why) => {
                order.status = OrderStatus::Invalid;
                order.challenge.status = "invalid".to_owned();
                order.challenge.error =
                    Some(format!("urn:ietf:params:acme:error:unauthorized: {why}"));
            }
        }
        Ok(())
    }

    async fn finalize(&self, url: &str) -> Result<Option<IssuedCertificate>, CloudError> {
        let domain = {
            let state = self.state();
            let order = state
                .orders
                .get(url)
                .ok_or_else(|| not_found("acme:Finalize", url))?;
            match order.status {
                OrderStatus::Ready => order.domain.clone(),
                // The key of a finalized order went with whoever finalized it.
                status => {
                    return Err(CloudError::new(
                        ErrorKind::Invalid,
                        "acme:Finalize",
                        format!("order {url} is {}", status.as_str()),
                    ));
                }
            }
        };
        let issued = self.issue(&domain)?;
        let mut state = self.state();
        state.issued += 1;
        if let Some(id) = crate::certificate::renewal_info_id(&issued.material.certificate_pem) {
            // Like Let's Encrypt: a window in the last third of the lifetime.
            let lifetime = issued.not_after - issued.not_before;
            let start = issued.not_before + lifetime / 3 * 2;
            let end = issued.not_before + lifetime / 4 * 3;
            state.windows.insert(id.clone(), (start, end));
            state.by_domain.push((id, domain.clone()));
        }
        if let Some(order) = state.orders.get_mut(url) {
            order.status = OrderStatus::Valid;
        }
        Ok(Some(issued))
    }

    async fn renewal_window(
        &self,
        certificate_id: &str,
    ) -> Result<Option<RenewalWindow>, CloudError> {
        let state = self.state();
        let (start, end) = state.windows.get(certificate_id).copied().ok_or_else(|| {
            CloudError::new(
                ErrorKind::NotFound,
                "acme:RenewalInfo",
                format!("no certificate {certificate_id}"),
            )
        })?;
        Ok(Some(RenewalWindow {
            start,
            end,
            retry_after: self.config.renewal_info_retry,
        }))
    }
}

fn not_found(operation: &'static str, url: &str) -> CloudError {
    CloudError::new(ErrorKind::NotFound, operation, format!("no order {url}"))
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn to_time(millis: i64) -> Result<time::OffsetDateTime, CloudError> {
    time::OffsetDateTime::from_unix_timestamp(millis / 1000)
        .map_err(|e| CloudError::new(ErrorKind::Other, "acme:Finalize", e))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::cloud::DnsAnswers;
    use crate::sim::{ChallengeSource, SimDomains};

    /// A responder that knows every token the CA hands out in these tests.
    struct Answers;

    #[async_trait]
    impl ChallengeSource for Answers {
        async fn answer(&self, token: &str) -> Option<String> {
            Some(format!("{token}.{ACCOUNT_THUMBPRINT}"))
        }
    }

    fn world() -> (Arc<SimDomains>, Hostname) {
        let ours = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        let domains = Arc::new(SimDomains::new(vec![ours], Arc::new(Answers)));
        let domain = Hostname::parse("shop.example.com").expect("valid");
        domains.set_records(
            &domain,
            DnsAnswers {
                a: vec![Ipv4Addr::new(192, 0, 2, 10)],
                ..DnsAnswers::default()
            },
        );
        (domains, domain)
    }

    #[tokio::test]
    async fn an_order_whose_token_is_served_ends_in_a_certificate() {
        let (domains, domain) = world();
        let ca = SimAcme::new(domains, SimAcmeConfig::default());
        let order = ca.new_order(&domain).await.expect("order");
        assert_eq!(order.status, OrderStatus::Pending);
        assert_eq!(order.challenges.len(), 1);
        assert!(ca.finalize(&order.url).await.is_err(), "not validated yet");
        ca.challenges_ready(&order.url).await.expect("ready");
        assert_eq!(
            ca.order(&order.url).await.expect("order").status,
            OrderStatus::Ready
        );
        let issued = ca
            .finalize(&order.url)
            .await
            .expect("finalize")
            .expect("issued");
        assert!(
            issued
                .material
                .certificate_pem
                .contains("BEGIN CERTIFICATE")
        );
        assert!(issued.material.private_key_pem.contains("PRIVATE KEY"));
        assert!(issued.not_after - issued.not_before >= 89 * 86_400_000);
        assert_eq!(
            ca.order(&order.url).await.expect("order").status,
            OrderStatus::Valid
        );
        assert!(
            ca.finalize(&order.url).await.is_err(),
            "the key is gone once finalized"
        );
        assert_eq!(ca.certificates_issued(), 1);

        // Renewal information: the last third of the lifetime, until a test asks sooner.
        let id = crate::certificate::renewal_info_id(&issued.material.certificate_pem)
            .expect("identifiable");
        let window = ca.renewal_window(&id).await.expect("info").expect("window");
        let lifetime = issued.not_after - issued.not_before;
        assert_eq!(window.start, issued.not_before + lifetime / 3 * 2);
        ca.suggest_renewal(&domain, 5, 10);
        let window = ca.renewal_window(&id).await.expect("info").expect("window");
        assert_eq!((window.start, window.end), (5, 10));
        assert!(
            ca.renewal_window("nope.nope")
                .await
                .expect_err("unknown")
                .is_not_found()
        );
    }

    #[tokio::test]
    async fn a_domain_that_does_not_lead_to_us_fails_validation_with_the_reason() {
        let (domains, domain) = world();
        domains.remove(&domain);
        let ca = SimAcme::new(domains, SimAcmeConfig::default());
        let order = ca.new_order(&domain).await.expect("order");
        ca.challenges_ready(&order.url).await.expect("ready");
        let order = ca.order(&order.url).await.expect("order");
        assert_eq!(order.status, OrderStatus::Invalid);
        let error = order.challenges[0].error.clone().expect("error");
        assert!(error.contains("no A or AAAA"), "{error}");
        assert_eq!(ca.validations_failed(), 1);

        let (domains, domain) = world();
        let ca = SimAcme::new(domains, SimAcmeConfig::default());
        ca.reject_validations(&domain);
        let order = ca.new_order(&domain).await.expect("order");
        ca.challenges_ready(&order.url).await.expect("ready");
        let status = ca.order(&order.url).await.expect("order").status;
        assert_eq!(status, OrderStatus::Invalid);
    }

    #[tokio::test]
    async fn orders_beyond_the_limit_are_throttled() {
        let (domains, domain) = world();
        let ca = SimAcme::new(
            domains,
            SimAcmeConfig {
                order_limit: Some((2, Duration::from_secs(3600))),
                ..SimAcmeConfig::default()
            },
        );
        ca.new_order(&domain).await.expect("first");
        ca.new_order(&domain).await.expect("second");
        let error = ca.new_order(&domain).await.expect_err("third");
        assert_eq!(error.kind, ErrorKind::Throttled);
        assert_eq!(ca.orders_placed(), 2);
        let missing = ca
            .order("https://acme.sim/order/99")
            .await
            .expect_err("missing");
        assert!(missing.is_not_found());
    }
}
