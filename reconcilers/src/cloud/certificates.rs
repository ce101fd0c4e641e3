//! Certificates: ACM holds the custom-domain certificates the proxy ALB serves.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{CloudError, Tag};

/// PEM material of one certificate.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateMaterial {
    pub certificate_pem: String,
    pub private_key_pem: String,
    pub chain_pem: String,
}

impl std::fmt::Debug for CertificateMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateMaterial")
            .field("private_key_pem", &"***")
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateSummary {
    pub arn: String,
    pub domain: String,
    /// Milliseconds since the Unix epoch.
    pub not_after: Option<i64>,
    /// ARNs of the load balancers using the certificate.
    pub in_use_by: Vec<String>,
}

/// Importing, describing and deleting certificates.
#[async_trait]
pub trait Certificates: Send + Sync {
    /// Imports a new certificate (`existing_arn` = None) or re-imports into an existing ARN, so
    /// listeners using it pick up the renewal. ACM refuses tags on a re-import (`tags` must be
    /// empty then) and keeps the ones it had; emulators that drop them are healed by calling
    /// [`Certificates::add_tags`] after every re-import.
    async fn import_certificate(
        &self,
        material: &CertificateMaterial,
        existing_arn: Option<&str>,
        tags: &[Tag],
    ) -> Result<String, CloudError>;

    async fn describe_certificate(&self, arn: &str) -> Result<CertificateSummary, CloudError>;

    /// Every imported certificate ARN of the region (all pages).
    async fn list_certificates(&self) -> Result<Vec<String>, CloudError>;

    async fn delete_certificate(&self, arn: &str) -> Result<(), CloudError>;

    async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>, CloudError>;

    async fn add_tags(&self, arn: &str, tags: &[Tag]) -> Result<(), CloudError>;
}
