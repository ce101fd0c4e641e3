//! The fleet: which EC2 instances of a `Name` tag are running.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::CloudError;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub private_ip: Option<String>,
    pub availability_zone: Option<String>,
}

/// Lists running instances by their `Name` tag.
#[async_trait]
pub trait Fleet: Send + Sync {
    /// Every running instance whose `Name` tag is `name`, sorted by id (all pages).
    async fn running_instances(&self, name: &str) -> Result<Vec<Instance>, CloudError>;
}
