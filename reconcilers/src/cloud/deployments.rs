//! Deployments: CodeDeploy installs an artifact on an instance group. A deployment group runs
//! one deployment at a time; a second create fails with a concurrent-deployments quota error.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{CloudError, Page};

/// An artifact zip in S3, as CodeDeploy names a revision.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Revision {
    pub bucket: String,
    pub key: String,
    /// The S3 version of the artifact, when the bucket is versioned.
    pub version: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRequest {
    pub application: String,
    pub deployment_group: String,
    pub revision: Revision,
    pub description: String,
}

/// Where a deployment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeploymentStatus {
    Created,
    Queued,
    InProgress,
    Baking,
    Ready,
    Succeeded,
    Failed,
    Stopped,
}

impl DeploymentStatus {
    /// Whether the deployment still occupies its deployment group.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Created
                | DeploymentStatus::Queued
                | DeploymentStatus::InProgress
                | DeploymentStatus::Baking
                | DeploymentStatus::Ready
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub application: String,
    pub deployment_group: String,
    pub revision: Revision,
    pub status: DeploymentStatus,
    /// CodeDeploy's explanation of a failure.
    pub error_message: Option<String>,
    pub created_at: i64,
}

/// Creating, observing and stopping deployments.
#[async_trait]
pub trait Deployments: Send + Sync {
    async fn create_deployment(
        &self,
        request: &DeploymentRequest,
    ) -> Result<Deployment, CloudError>;

    async fn get_deployment(&self, id: &str) -> Result<Deployment, CloudError>;

    /// Stops a deployment; stopping one that already finished is not an error.
    async fn stop_deployment(&self, id: &str) -> Result<(), CloudError>;

    /// Deployment ids of a deployment group in the given states (all states when empty).
    async fn list_deployment_ids(
        &self,
        application: &str,
        deployment_group: &str,
        statuses: &[DeploymentStatus],
        next_token: Option<String>,
    ) -> Result<Page<String>, CloudError>;
}
