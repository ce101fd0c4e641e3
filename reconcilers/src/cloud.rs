//! The narrow cloud traits the controller calls, one per capability, with our own types and a
//! bounded error kind. SDK adapters (in the binary) and the simulated AWS ([`crate::sim`])
//! implement them; nothing here knows an SDK type.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

mod acme;
mod builds;
mod certificates;
mod deployments;
mod domains;
mod fleet;
pub mod limits;
mod load_balancing;
mod run_command;
mod storage;

pub use acme::{Acme, AcmeOrder, Http01Challenge, IssuedCertificate, OrderStatus, RenewalWindow};
pub use builds::{Build, BuildRequest, BuildStatus, Builds};
pub use certificates::{CertificateMaterial, CertificateSummary, Certificates};
pub use deployments::{Deployment, DeploymentRequest, DeploymentStatus, Deployments, Revision};
pub use domains::{CaaRecord, DnsAnswers, Domains, FetchError};
pub use fleet::{Fleet, Instance};
pub use load_balancing::{
    HealthCheck, HttpListenerSpec, KnownTags, Listener, ListenerAction, ListenerRule, ListenerSpec,
    LoadBalancer, LoadBalancing, RuleSpec, Target, TargetGroup, TargetGroupSpec, TargetHealth,
    tags_known_or_read, tags_of,
};
pub use run_command::{CommandRequest, CommandTarget, Invocation, InvocationStatus, RunCommand};
pub use storage::{ObjectHead, ObjectStorage};

/// Which AWS quota a `QuotaExceeded` error hit, when known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
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

impl<'de> Deserialize<'de> for CloudError {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        WireError::deserialize(deserializer).map(Self::from)
    }
}

/// A [`CloudError`] as read back from the wire (the remote simulated AWS).
#[derive(Deserialize)]
struct WireError {
    kind: ErrorKind,
    operation: String,
    message: String,
}

/// Operation names are interned, because an error names its operation as `&'static str`.
/// Operations are a small fixed set, so the strings leaked here are bounded.
impl From<WireError> for CloudError {
    fn from(wire: WireError) -> Self {
        static INTERNED: Mutex<BTreeMap<String, &'static str>> = Mutex::new(BTreeMap::new());
        let mut interned = INTERNED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let operation = match interned.get(&wire.operation) {
            Some(known) => *known,
            None => {
                let leaked: &'static str = Box::leak(wire.operation.clone().into_boxed_str());
                interned.insert(wire.operation, leaked);
                leaked
            }
        };
        Self {
            kind: wire.kind,
            operation,
            message: wire.message,
        }
    }
}

/// One page of a listing and the token of the next, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// A resource tag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Tag keys of the ownership tags every object we create carries.
pub const TAG_INSTALLATION: &str = "shop-controller/installation";
pub const TAG_SHOP: &str = "shop-controller/shop";
pub const TAG_RESOURCE: &str = "shop-controller/resource";

/// Who owns an AWS object: this controller installation, a shop, a resource kind. The one
/// helper that builds ownership tags, so observation can find our objects by tag and two
/// installations in one account never adopt each other's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub installation: String,
    pub shop: String,
    pub resource: String,
}

impl Owner {
    pub fn tags(&self) -> Vec<Tag> {
        vec![
            Tag::new(TAG_INSTALLATION, &self.installation),
            Tag::new(TAG_SHOP, &self.shop),
            Tag::new(TAG_RESOURCE, &self.resource),
        ]
    }

    /// Reads the owner back from an object's tags; `None` unless all three are there.
    pub fn from_tags(tags: &[Tag]) -> Option<Self> {
        let get = |key: &str| tags.iter().find(|t| t.key == key).map(|t| t.value.clone());
        Some(Self {
            installation: get(TAG_INSTALLATION)?,
            shop: get(TAG_SHOP)?,
            resource: get(TAG_RESOURCE)?,
        })
    }
}

/// (service, operation, outcome), as in `("elasticloadbalancing", "CreateListener", "ok")`.
pub type CallKey = (String, String, String);

/// Counts cloud calls by service, operation and outcome; the adapters and the simulated AWS
/// both record into one, for metrics and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct CallStats {
    counts: Arc<Mutex<BTreeMap<CallKey, u64>>>,
}

impl CallStats {
    /// Records one call; `operation` is `service:Operation`, outcome `ok` or an error kind.
    pub fn record(&self, operation: &str, outcome: &str) {
        let (service, name) = operation.split_once(':').unwrap_or(("", operation));
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *counts
            .entry((service.to_owned(), name.to_owned(), outcome.to_owned()))
            .or_default() += 1;
    }

    /// Records the outcome of a call result.
    pub fn observe<T>(&self, operation: &str, result: &Result<T, CloudError>) {
        match result {
            Ok(_) => self.record(operation, "ok"),
            Err(error) => self.record(operation, error.kind.as_str()),
        }
    }

    /// Every (service, operation, outcome) with its count.
    pub fn snapshot(&self) -> Vec<(CallKey, u64)> {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counts
            .iter()
            .map(|(key, count)| (key.clone(), *count))
            .collect()
    }

    /// Calls of one `service:Operation`, whatever the outcome.
    pub fn count(&self, operation: &str) -> u64 {
        let (service, name) = operation.split_once(':').unwrap_or(("", operation));
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counts
            .iter()
            .filter(|((s, n, _), _)| s == service && n == name)
            .map(|(_, count)| count)
            .sum()
    }
}

/// Hands out the cloud capabilities of one region. The SDK adapters build clients per region
/// lazily; the simulated AWS serves every region from one account.
pub trait CloudProvider: Send + Sync {
    fn object_storage(&self, region: &str) -> Arc<dyn ObjectStorage>;
    fn builds(&self, region: &str) -> Arc<dyn Builds>;
    fn deployments(&self, region: &str) -> Arc<dyn Deployments>;
    fn fleet(&self, region: &str) -> Arc<dyn Fleet>;
    fn run_command(&self, region: &str) -> Arc<dyn RunCommand>;
    fn load_balancing(&self, region: &str) -> Arc<dyn LoadBalancing>;
    fn certificates(&self, region: &str) -> Arc<dyn Certificates>;
    /// Every call made through this provider, by operation and outcome.
    fn calls(&self) -> CallStats;
}
