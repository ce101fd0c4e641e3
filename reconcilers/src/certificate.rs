//! Custom-domain certificates: the record the store keeps per domain, and the pure decisions of
//! the certificate reconciler (when to renew, how long to back off, which listener has a free
//! slot, which Let's Encrypt budget an order would break).
//!
//! The reconciler drives one ACME order a step per run and keeps the step in the record, so a
//! crash resumes the order instead of placing another: `Pending` (no certificate yet) → order
//! placed (`order_url` set) → issued and imported (`acm_arn`, `not_after`) → attached to an
//! HTTPS listener (`listener_arn`) → `Ready`; at two thirds of the lifetime a new order is
//! placed and the new certificate re-imported into the same ACM ARN, so the listener keeps it.

use std::time::Duration;

use crate::hostname::Hostname;

/// Where a domain's certificate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertificateState {
    /// No certificate yet, no order in flight.
    Pending,
    /// An order is in flight (`order_url`).
    Ordering,
    /// Imported into ACM, not attached to a listener yet.
    Issued,
    /// Imported and attached: served.
    Ready,
    /// The last attempt failed; the next waits for `next_attempt_at`.
    Failed,
}

impl CertificateState {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateState::Pending => "pending",
            CertificateState::Ordering => "ordering",
            CertificateState::Issued => "issued",
            CertificateState::Ready => "ready",
            CertificateState::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "pending" => CertificateState::Pending,
            "ordering" => CertificateState::Ordering,
            "issued" => CertificateState::Issued,
            "ready" => CertificateState::Ready,
            "failed" => CertificateState::Failed,
            _ => return None,
        })
    }
}

/// Why a certificate waits for `next_attempt_at` before its next order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitReason {
    /// The self-check (or the DNS diagnosis) found the domain does not reach us.
    SelfCheckFailed,
    /// The CA rejected the order's validation.
    ChallengeRejected,
    /// A CA rate-limit budget is spent until then.
    BudgetExhausted,
}

impl WaitReason {
    /// The stable name, also the status reason.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitReason::SelfCheckFailed => "SelfCheckFailed",
            WaitReason::ChallengeRejected => "ChallengeRejected",
            WaitReason::BudgetExhausted => "BudgetExhausted",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            WaitReason::SelfCheckFailed,
            WaitReason::ChallengeRejected,
            WaitReason::BudgetExhausted,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == value)
    }
}

/// One row of `shop_certificates`: a custom domain's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRecord {
    pub domain: Hostname,
    /// The shop (ES domain) the custom domain belongs to.
    pub shop: String,
    pub state: CertificateState,
    /// The ACME order in flight, if any.
    pub order_url: Option<String>,
    /// The ACM certificate; a renewal is re-imported into it.
    pub acm_arn: Option<String>,
    /// The HTTPS listener the certificate is attached to.
    pub listener_arn: Option<String>,
    /// Validity of the imported certificate, in milliseconds since the Unix epoch.
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    /// Failed attempts in a row; reset by an issuance.
    pub failures: u32,
    pub last_error: Option<String>,
    /// No new order before this time (milliseconds since the Unix epoch).
    pub next_attempt_at: Option<i64>,
    /// Why `next_attempt_at` is set.
    pub wait_reason: Option<WaitReason>,
    /// The imported certificate's ACME Renewal Information identifier.
    pub renewal_info_id: Option<String>,
    /// When the CA's renewal information asks for a renewal, if sooner than two thirds.
    pub renew_after: Option<i64>,
    /// When to ask the CA for renewal information again.
    pub renewal_info_next_check: Option<i64>,
    pub updated_at: i64,
}

impl CertificateRecord {
    /// A new record for a domain, nothing done yet.
    pub fn new(domain: Hostname, shop: &str, now: i64) -> Self {
        Self {
            domain,
            shop: shop.to_owned(),
            state: CertificateState::Pending,
            order_url: None,
            acm_arn: None,
            listener_arn: None,
            not_before: None,
            not_after: None,
            failures: 0,
            last_error: None,
            next_attempt_at: None,
            wait_reason: None,
            renewal_info_id: None,
            renew_after: None,
            renewal_info_next_check: None,
            updated_at: now,
        }
    }

    /// When the imported certificate should be replaced, if there is one: at two thirds of its
    /// lifetime, or sooner when the CA's renewal information says so.
    pub fn renew_at(&self) -> Option<i64> {
        let planned = renewal_time(self.not_before?, self.not_after?);
        Some(self.renew_after.map_or(planned, |asked| asked.min(planned)))
    }

    /// Whether the CA's renewal information is due for a look at `now`.
    pub fn renewal_info_due(&self, now: i64) -> bool {
        self.acm_arn.is_some()
            && self.renewal_info_id.is_some()
            && self.renewal_info_next_check.is_none_or(|at| now >= at)
    }

    /// Whether the imported certificate (if any) needs replacing at `now`.
    pub fn needs_certificate(&self, now: i64) -> bool {
        match (&self.acm_arn, self.renew_at()) {
            (Some(_), Some(renew_at)) => now >= renew_at,
            _ => true,
        }
    }

    /// Records a failed attempt: the error, and when the next may start.
    pub fn fail(&mut self, reason: WaitReason, error: String, backoff: &Backoff, now: i64) {
        self.failures = self.failures.saturating_add(1);
        self.wait_reason = Some(reason);
        let wait = backoff.after(self.failures);
        self.next_attempt_at = Some(now.saturating_add(millis(wait)));
        self.last_error = Some(error);
        self.order_url = None;
        if self.state != CertificateState::Ready {
            self.state = CertificateState::Failed;
        }
    }
}

/// Renewal at two thirds of the lifetime: a 90-day certificate is renewed 30 days before it
/// expires, a 6-day one 2 days before.
pub fn renewal_time(not_before: i64, not_after: i64) -> i64 {
    let lifetime = not_after.saturating_sub(not_before).max(0);
    not_before.saturating_add(lifetime / 3 * 2)
}

/// Growing, capped waits between failed attempts, in the style of cert-manager (which starts at
/// an hour and caps at 32): failures cost the CA's limits, so waiting long is the polite choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(60 * 60),
            max: Duration::from_secs(32 * 60 * 60),
        }
    }
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row (1-based).
    pub fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |wait| wait.min(self.max))
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A Let's Encrypt limit the controller keeps to across replicas, counted in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Budget {
    /// New orders per account in a sliding window (Let's Encrypt: 300 per 3 hours).
    NewOrders,
    /// Failed validations per hostname (Let's Encrypt: 5 per hour).
    FailedValidations,
    /// Certificates for the same set of names (Let's Encrypt: 5 per week).
    DuplicateCertificates,
}

impl Budget {
    pub const ALL: [Budget; 3] = [
        Budget::NewOrders,
        Budget::FailedValidations,
        Budget::DuplicateCertificates,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Budget::NewOrders => "new_orders",
            Budget::FailedValidations => "failed_validations",
            Budget::DuplicateCertificates => "duplicate_certificates",
        }
    }

    /// What the budget counts, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Budget::NewOrders => "new orders per ACME account",
            Budget::FailedValidations => "failed validations per hostname",
            Budget::DuplicateCertificates => "certificates for the same domain",
        }
    }
}

/// How many events a budget allows in its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetLimit {
    pub limit: u32,
    pub window: Duration,
}

/// The limits the controller keeps to, defaulting to Let's Encrypt's published ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    pub new_orders: BudgetLimit,
    pub failed_validations: BudgetLimit,
    pub duplicate_certificates: BudgetLimit,
}

impl Default for Budgets {
    fn default() -> Self {
        const HOUR: u64 = 60 * 60;
        Self {
            new_orders: BudgetLimit {
                limit: 300,
                window: Duration::from_secs(3 * HOUR),
            },
            failed_validations: BudgetLimit {
                limit: 5,
                window: Duration::from_secs(HOUR),
            },
            duplicate_certificates: BudgetLimit {
                limit: 5,
                window: Duration::from_secs(7 * 24 * HOUR),
            },
        }
    }
}

impl Budgets {
    pub fn limit(&self, budget: Budget) -> BudgetLimit {
        match budget {
            Budget::NewOrders => self.new_orders,
            Budget::FailedValidations => self.failed_validations,
            Budget::DuplicateCertificates => self.duplicate_certificates,
        }
    }

    /// The subject a budget is counted per: the account (one per installation) or the domain.
    pub fn subject(budget: Budget, domain: &Hostname) -> &str {
        match budget {
            Budget::NewOrders => "account",
            Budget::FailedValidations | Budget::DuplicateCertificates => domain.as_str(),
        }
    }
}

/// A budget an order would break, and when it frees up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "Let's Encrypt budget exhausted: {used} of {limit} {what} in {window}; next attempt at {free_at_secs} (unix seconds)",
    what = budget.describe(),
    window = format_window(limit_window),
    free_at_secs = free_at / 1000
)]
pub struct BudgetExhausted {
    pub budget: Budget,
    pub used: u32,
    pub limit: u32,
    pub limit_window: Duration,
    /// When the oldest counted event leaves the window (milliseconds since the Unix epoch).
    pub free_at: i64,
}

fn format_window(window: &Duration) -> String {
    let secs = window.as_secs();
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{} h", s / 3_600),
        s => format!("{s} s"),
    }
}

/// Free certificate slots of the region's HTTPS listeners: the first listener (in configured
/// order) holding fewer than `slots` certificates besides its default one. `None` means every
/// listener is full.
pub fn listener_with_room(attached: &[(String, usize)], slots: usize) -> Option<&str> {
    attached
        .iter()
        .find(|(_, count)| *count < slots)
        .map(|(arn, _)| arn.as_str())
}

/// The certificate's identifier for ACME Renewal Information (RFC 9773): the base64url (no
/// padding) authority key identifier and serial number octets, joined by a dot. `None` when
/// the certificate lacks either.
pub fn renewal_info_id(certificate_pem: &str) -> Option<String> {
    let parsed = crate::x509::parse_pem(certificate_pem)?;
    Some(format!(
        "{}.{}",
        base64url(&parsed.authority_key_id?),
        base64url(&parsed.serial?)
    ))
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            let index = (bits >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

/// Splits a PEM bundle as CAs send it (leaf first, then the intermediates) into the leaf and
/// the chain.
pub fn split_pem_chain(bundle: &str) -> (String, String) {
    const END: &str = "-----END CERTIFICATE-----";
    match bundle.find(END) {
        Some(end) => {
            let split = end + END.len();
            let leaf = format!("{}\n", bundle[..split].trim());
            let chain = bundle[split..].trim();
            let chain = if chain.is_empty() {
                String::new()
            } else {
                format!("{chain}\n")
            };
            (leaf, chain)
        }
        None => (bundle.to_owned(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn host(name: &str) -> Hostname {
        Hostname::parse(name).expect("valid")
    }

    #[test]
    fn renews_at_two_thirds_of_the_lifetime() {
        assert_eq!(renewal_time(0, 90 * DAY), 60 * DAY);
        assert_eq!(renewal_time(10 * DAY, 16 * DAY), 14 * DAY);
        // Inverted validity (a broken certificate) renews at once.
        assert_eq!(renewal_time(5 * DAY, DAY), 5 * DAY);
    }

    #[test]
    fn needs_a_certificate_until_one_is_imported_and_again_at_renewal() {
        let mut record = CertificateRecord::new(host("shop.example.com"), "a.es-hs.com", 0);
        assert!(record.needs_certificate(0));
        record.acm_arn = Some("arn:aws:acm:us-east-1:1:certificate/x".to_owned());
        assert!(record.needs_certificate(0), "no validity known yet");
        record.not_before = Some(0);
        record.not_after = Some(90 * DAY);
        assert!(!record.needs_certificate(60 * DAY - 1));
        assert!(record.needs_certificate(60 * DAY));
    }

    #[test]
    fn renewal_information_can_only_bring_the_renewal_forward() {
        let mut record = CertificateRecord::new(host("shop.example.com"), "a.es-hs.com", 0);
        record.acm_arn = Some("arn".to_owned());
        record.not_before = Some(0);
        record.not_after = Some(90 * DAY);
        record.renew_after = Some(10 * DAY);
        assert_eq!(record.renew_at(), Some(10 * DAY));
        assert!(record.needs_certificate(10 * DAY));
        record.renew_after = Some(80 * DAY);
        assert_eq!(
            record.renew_at(),
            Some(60 * DAY),
            "never later than two thirds"
        );

        assert!(!record.renewal_info_due(0), "no identifier");
        record.renewal_info_id = Some("aki.serial".to_owned());
        assert!(record.renewal_info_due(0));
        record.renewal_info_next_check = Some(5);
        assert!(!record.renewal_info_due(4));
        assert!(record.renewal_info_due(5));
    }

    #[test]
    fn the_renewal_information_id_is_base64url_of_the_key_id_and_serial() {
        let id = renewal_info_id(crate::x509::tests::WITH_ALT_NAMES).expect("id");
        // 7F22DAC1... and 6D145143... in base64url without padding.
        assert_eq!(
            id,
            "fyLawbvZzEdY5jR2LVnfE33duiA.bRRRQzOMiRp8Uf-wK2nAcTx8Nfg"
        );
        assert_eq!(base64url(b"hello"), "aGVsbG8");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(renewal_info_id("not a certificate"), None);
    }

    #[test]
    fn backoff_doubles_from_the_first_wait_up_to_the_cap() {
        let backoff = Backoff::default();
        let hours = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(backoff.after(1), hours(1));
        assert_eq!(backoff.after(2), hours(2));
        assert_eq!(backoff.after(6), hours(32));
        assert_eq!(backoff.after(7), hours(32));
        assert_eq!(backoff.after(u32::MAX), hours(32));
        assert_eq!(
            backoff.after(0),
            hours(1),
            "a first failure never waits less"
        );
    }

    #[test]
    fn a_failure_keeps_a_served_certificate_ready_and_drops_the_order() {
        let backoff = Backoff {
            first: Duration::from_secs(10),
            max: Duration::from_secs(60),
        };
        let mut record = CertificateRecord::new(host("shop.example.com"), "a.es-hs.com", 0);
        record.order_url = Some("https://ca/order/1".to_owned());
        let rejected = WaitReason::ChallengeRejected;
        record.fail(rejected, "challenge rejected".to_owned(), &backoff, 1_000);
        assert_eq!(record.wait_reason, Some(rejected));
        assert_eq!(record.state, CertificateState::Failed);
        assert_eq!(record.order_url, None);
        assert_eq!(record.next_attempt_at, Some(11_000));
        record.fail(rejected, "again".to_owned(), &backoff, 2_000);
        assert_eq!(record.next_attempt_at, Some(22_000));
        assert_eq!(record.failures, 2);

        let mut served = CertificateRecord::new(host("b.example.com"), "b.es-hs.com", 0);
        served.state = CertificateState::Ready;
        served.fail(rejected, "renewal failed".to_owned(), &backoff, 0);
        assert_eq!(served.state, CertificateState::Ready, "still served");
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in [
            CertificateState::Pending,
            CertificateState::Ordering,
            CertificateState::Issued,
            CertificateState::Ready,
            CertificateState::Failed,
        ] {
            assert_eq!(CertificateState::parse(state.as_str()), Some(state));
        }
        assert_eq!(CertificateState::parse("bogus"), None);
        for reason in [
            WaitReason::SelfCheckFailed,
            WaitReason::ChallengeRejected,
            WaitReason::BudgetExhausted,
        ] {
            assert_eq!(WaitReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(WaitReason::parse("bogus"), None);
    }

    #[test]
    fn picks_the_first_listener_with_a_free_slot() {
        let listeners = vec![("l1".to_owned(), 25), ("l2".to_owned(), 3)];
        assert_eq!(listener_with_room(&listeners, 25), Some("l2"));
        assert_eq!(listener_with_room(&listeners, 26), Some("l1"));
        assert_eq!(listener_with_room(&listeners, 3), None);
        assert_eq!(listener_with_room(&[], 25), None);
    }

    #[test]
    fn budget_message_names_the_limit_and_when_it_frees() {
        let error = BudgetExhausted {
            budget: Budget::FailedValidations,
            used: 5,
            limit: 5,
            limit_window: Duration::from_secs(3600),
            free_at: 7_200_000,
        };
        assert_eq!(
            error.to_string(),
            "Let's Encrypt budget exhausted: 5 of 5 failed validations per hostname in 1 h; \
             next attempt at 7200 (unix seconds)"
        );
        assert_eq!(
            Budgets::subject(Budget::NewOrders, &host("x.example.com")),
            "account"
        );
        assert_eq!(
            Budgets::subject(Budget::DuplicateCertificates, &host("x.example.com")),
            "x.example.com"
        );
    }

    #[test]
    fn splits_a_bundle_into_leaf_and_chain() {
        let leaf = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----";
        let inter = "-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----";
        let (l, c) = split_pem_chain(&format!("{leaf}\n{inter}\n"));
        assert_eq!(l, format!("{leaf}\n"));
        assert_eq!(c, format!("{inter}\n"));
        let (l, c) = split_pem_chain(&format!("{leaf}\n"));
        assert_eq!(l, format!("{leaf}\n"));
        assert_eq!(c, "");
    }
}
