//! The deployment resource: CodeDeploy installs the shop's artifact on its instance group. A
//! deployment group runs one deployment at a time, so a shop whose group is busy waits (the
//! runtime's wait schedule), and a newer spec simply deploys its own revision next.
//!
//! The deployment id CodeDeploy assigns is kept in the resource's status, where the next run
//! finds it; after a crash between the call and the status write, the group's active
//! deployment is matched by revision before another is created.
//! TODO(#4): record the intent in the store before `CreateDeployment`; queue shops of one group
//! fairly (today whoever asks after the group frees up goes next); hand the shop's port to
//! the `scripts/` hooks.

use std::time::Duration;

use reconcilers::cloud::{
    Deployment, DeploymentRequest, DeploymentStatus, Deployments, ErrorKind, Revision,
};
use reconcilers::status::{ResourceKind, ResourceStatus, SyncState};

use super::artifact::artifact_key;
use super::{Blocked, Controller, Converged};
use crate::runtime::Outcome;
use crate::store::ShopView;

/// How often a running deployment is looked at (or the resync period, when shorter).
const DEPLOY_POLL: Duration = Duration::from_secs(10);
const ACTIVE: [DeploymentStatus; 3] = [
    DeploymentStatus::Created,
    DeploymentStatus::Queued,
    DeploymentStatus::InProgress,
];

impl Controller {
    pub(super) async fn deployment(&self, view: &ShopView) -> Result<Converged, Blocked> {
        if !Self::synced(view, ResourceKind::Artifact) {
            return Err(Blocked::waiting(
                "WaitingForArtifact",
                "the artifact is not built yet",
            ));
        }
        let region = self.region(view).await?;
        let placed = self.placement(view, &region).await?;
        let group = self
            .store
            .get_instance_group(&placed.instance_group)
            .await?
            .ok_or_else(|| Blocked::waiting("GroupMissing", "the shop's instance group is gone"))?;
        let spec = &view.record.spec;
        let revision = Revision {
            bucket: region.artifact_bucket.to_string(),
            key: artifact_key(spec.shop_domain.as_str(), spec.source_version.as_str()),
            version: None,
        };
        let desired = format!(
            "s3://{}/{} on {}",
            revision.bucket, revision.key, group.name
        );
        let previous = view
            .resources
            .iter()
            .find(|r| r.kind == ResourceKind::Deployment);
        if previous.is_some_and(|p| p.sync == SyncState::Synced && p.desired == desired) {
            return Ok(Converged {
                desired,
                observed: previous.map(|p| p.observed.clone()).unwrap_or_default(),
                reason: "",
            });
        }

        let deployments = self.cloud.deployments(region.region.as_str());
        let application = region.codedeploy_application.as_str();
        let group_name = group.codedeploy_deployment_group.as_str();
        // The deployment a previous run started, if it is for this revision (a newer spec
        // deploys its own).
        let tracked = match previous.and_then(tracked_deployment) {
            Some(id) => {
                let deployment = deployments.get_deployment(&id).await?;
                (deployment.revision == revision).then_some(deployment)
            }
            None => None,
        };
        let deployment = match tracked {
            Some(deployment) => deployment,
            None => {
                let active =
                    active_deployment(deployments.as_ref(), application, group_name).await?;
                match active {
                    Some(active) if active.revision == revision => active,
                    Some(other) => {
                        return Err(Blocked {
                            reason: "DeploymentGroupBusy",
                            message: format!("queued behind deployment {}", other.id),
                            outcome: Outcome::Requeue(self.deploy_poll()),
                        });
                    }
                    None => {
                        let request = DeploymentRequest {
                            application: application.to_owned(),
                            deployment_group: group_name.to_owned(),
                            revision: revision.clone(),
                            description: format!(
                                "{} generation {}",
                                spec.shop_domain, view.record.generation
                            ),
                        };
                        match deployments.create_deployment(&request).await {
                            Ok(created) => {
                                tracing::info!(shop = %spec.shop_domain, deployment = %created.id, "created deployment");
                                created
                            }
                            Err(error) if matches!(error.kind, ErrorKind::QuotaExceeded(_)) => {
                                return Err(Blocked {
                                    reason: "DeploymentGroupBusy",
                                    message: error.to_string(),
                                    outcome: Outcome::Requeue(self.deploy_poll()),
                                });
                            }
                            Err(error) => return Err(error.into()),
                        }
                    }
                }
            }
        };
        self.deployment_state(deployment, desired)
    }

    /// Shops waiting for their group poll it: a group runs one deployment at a time.
    fn deploy_poll(&self) -> Duration {
        DEPLOY_POLL.min(self.config.loops.resync)
    }

    fn deployment_state(
        &self,
        deployment: Deployment,
        desired: String,
    ) -> Result<Converged, Blocked> {
        match deployment.status {
            DeploymentStatus::Succeeded => Ok(Converged {
                desired,
                observed: format!("deployment {} succeeded", deployment.id),
                reason: "",
            }),
            // A failed deployment is not retried by itself: its scripts failed, and the same
            // revision would fail again. A new spec (a new source version) deploys anew.
            DeploymentStatus::Failed | DeploymentStatus::Stopped => Err(Blocked {
                reason: "DeploymentFailed",
                message: format!(
                    "deployment {} ended {:?}: {}",
                    deployment.id,
                    deployment.status,
                    deployment.error_message.unwrap_or_default()
                ),
                outcome: Outcome::Wait("deployment_failed"),
            }),
            status => Err(Blocked {
                reason: "Deploying",
                message: format!("deployment {} is {status:?}", deployment.id),
                outcome: Outcome::Requeue(self.deploy_poll()),
            }),
        }
    }
}

/// The deployment id a previous run recorded in the status message, if any.
fn tracked_deployment(status: &ResourceStatus) -> Option<String> {
    [&status.message, &status.observed]
        .into_iter()
        .flat_map(|text| text.split_whitespace())
        .find(|word| word.starts_with("d-") && word.len() > 2)
        .map(|word| word.trim_end_matches(':').to_owned())
}

/// The deployment the group is running, if any.
async fn active_deployment(
    deployments: &dyn Deployments,
    application: &str,
    group: &str,
) -> Result<Option<Deployment>, reconcilers::cloud::CloudError> {
    let page = deployments
        .list_deployment_ids(application, group, &ACTIVE, None)
        .await?;
    match page.items.first() {
        Some(id) => Ok(Some(deployments.get_deployment(id).await?)),
        None => Ok(None),
    }
}
