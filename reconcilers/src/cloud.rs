//! The narrow cloud traits the controller calls, one per capability, with our own types and a
//! bounded error kind. SDK adapters (in the binary) and the simulated AWS ([`crate::sim`])
//! implement them; nothing here knows an SDK type.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

/// Which AWS quota a `QuotaExceeded` error hit, when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quota {
    ListenersPerLoadBalancer,
    TargetGroups,
    CertificatesPerListener,
    Certificates,
    ConcurrentDeployments,
    Other(String),
}

/// The bounded classification of a cloud error. Callers decide on the kind: not found and
/// already exists often mean done; throttled, quota exceeded and transient mean wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    Throttled,
    QuotaExceeded(Quota),
    Invalid,
    Transient,
    Other,
}

impl ErrorKind {
    /// A stable label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::Throttled => "throttled",
            ErrorKind::QuotaExceeded(_) => "quota_exceeded",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Transient => "transient",
            ErrorKind::Other => "other",
        }
    }
}

/// An error from a cloud call: what we tried, the bounded kind and the provider's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {kind_label}: {message}", kind_label = kind.as_str())]
pub struct CloudError {
    pub kind: ErrorKind,
    /// The provider's operation, such as `s3:HeadObject`.
    pub operation: &'static str,
    pub message: String,
}

impl CloudError {
    pub fn new(kind: ErrorKind, operation: &'static str, message: impl fmt::Display) -> Self {
        Self {
            kind,
            operation,
            message: message.to_string(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

/// Metadata of one object version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    /// `null` for objects written while the bucket was unversioned.
    pub version_id: String,
}

/// Read access to source objects in S3.
#[async_trait]
pub trait ObjectStorage: Send + Sync {
    /// Size and version of `key`, at `version` when given, else the current version.
    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectHead, CloudError>;

    /// The newest version id of exactly `key`, `None` when the key has no live version.
    async fn latest_version(&self, bucket: &str, key: &str) -> Result<Option<String>, CloudError>;

    /// Bytes `start..start + len` of one object version (fewer at the end of the object).
    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
        start: u64,
        len: u64,
    ) -> Result<Bytes, CloudError>;
}

/// Hands out the cloud capabilities of one region. The SDK adapters build clients per region
/// lazily; the simulated AWS serves every region from one account.
pub trait CloudProvider: Send + Sync {
    fn object_storage(&self, region: &str) -> std::sync::Arc<dyn ObjectStorage>;
}
