//! ACME: the certificate authority (Let's Encrypt, or pebble in tests) that issues the
//! custom-domain certificates, by HTTP-01 challenges the controller's responder answers.
//!
//! The controller drives an order one step per reconcile and keeps the order URL in the store,
//! so a crash resumes the order instead of placing another (orders count against the CA's
//! limits). Errors are [`CloudError`]s with operations named `acme:<Step>`: the CA's rate limit
//! is `Throttled`, a refused challenge or order `Invalid`, network trouble `Transient`.

use async_trait::async_trait;

use super::{CertificateMaterial, CloudError};
use crate::hostname::Hostname;

/// Where an order stands, as RFC 8555 §7.1.6 names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    /// Waiting for its challenges to be validated.
    Pending,
    /// Every challenge validated: ready to finalize.
    Ready,
    /// Finalized, the certificate is being issued.
    Processing,
    /// Issued: the certificate can be downloaded.
    Valid,
    /// A challenge failed or the order expired; a new order is needed.
    Invalid,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Ready => "ready",
            OrderStatus::Processing => "processing",
            OrderStatus::Valid => "valid",
            OrderStatus::Invalid => "invalid",
        }
    }
}

/// The HTTP-01 challenge of one domain of an order.
#[derive(Clone, PartialEq, Eq)]
pub struct Http01Challenge {
    pub domain: Hostname,
    /// The last path segment of `/.well-known/acme-challenge/<token>`.
    pub token: String,
    /// What the responder must answer for the token.
    pub key_authorization: String,
    /// `pending`, `processing`, `valid` or `invalid`.
    pub status: String,
    /// The CA's reason when the challenge failed.
    pub error: Option<String>,
}

impl std::fmt::Debug for Http01Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http01Challenge")
            .field("domain", &self.domain)
            .field("token", &self.token)
            .field("status", &self.status)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// An order as the CA reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeOrder {
    /// The order's URL: its identity, kept in the store to resume the order.
    pub url: String,
    pub status: OrderStatus,
    /// One challenge per domain of the order.
    pub challenges: Vec<Http01Challenge>,
    /// The CA's reason when the order is invalid.
    pub error: Option<String>,
}

/// A certificate the CA issued, with the fresh private key it was requested for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub material: CertificateMaterial,
    /// Milliseconds since the Unix epoch.
    pub not_before: i64,
    /// Milliseconds since the Unix epoch.
    pub not_after: i64,
}

/// The calls the certificate reconciler makes on the CA, with the account already set up.
#[async_trait]
pub trait Acme: Send + Sync {
    /// Places a new order for one domain (counts against the CA's new-order limit).
    async fn new_order(&self, domain: &Hostname) -> Result<AcmeOrder, CloudError>;

    /// Reads an order placed earlier, with its HTTP-01 challenges.
    async fn order(&self, url: &str) -> Result<AcmeOrder, CloudError>;

    /// Tells the CA that the order's pending HTTP-01 challenges can be validated now.
    async fn challenges_ready(&self, url: &str) -> Result<(), CloudError>;

    /// Finalizes a `Ready` order with a fresh key and CSR and downloads the certificate.
    /// `Ok(None)` while the CA is still issuing: ask again later. The key exists only in the
    /// returned material, so a crash before the import costs one new order.
    async fn finalize(&self, url: &str) -> Result<Option<IssuedCertificate>, CloudError>;

    /// The CA's suggested renewal window for a certificate, by its ACME Renewal Information
    /// identifier ([`crate::certificate::renewal_info_id`]); `Ok(None)` from a CA without
    /// renewal information.
    async fn renewal_window(
        &self,
        certificate_id: &str,
    ) -> Result<Option<RenewalWindow>, CloudError> {
        let _ = certificate_id;
        Ok(None)
    }
}

/// When the CA would like a certificate renewed (RFC 9773), and when to ask again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Milliseconds since the Unix epoch.
    pub start: i64,
    pub end: i64,
    pub retry_after: std::time::Duration,
}
