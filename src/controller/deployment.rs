//! The deployment resource: CodeDeploy installs the shop's artifact on its instance group.
//!
//! A CodeDeploy group runs one deployment at a time, and many shops share a group, so each
//! group has a queue: a shop that wants a deployment records an intent (scope: its group) and
//! deploys when its intent is the oldest of the group. A newer spec rewrites a queued intent in
//! place (the newer revision deploys, the place is kept); a finished deployment clears the
//! intent and wakes the next shop, so shops are served in the order they asked.
//!
//! The intent is written before `CreateDeployment` and the id CodeDeploy returns after it;
//! after a crash in between, the group's active deployment is matched by revision before
//! another is created. Before each deployment the shop's env file (its domain and port) is
//! written on the group's instances through SSM: that is how the `scripts/` hooks learn the
//! port (see [`reconcilers::shell::SHOP_ENV_DIR`]).

use std::time::Duration;

use reconcilers::cloud::{
    Deployment, DeploymentRequest, DeploymentStatus, Deployments, ErrorKind, Revision,
};
use reconcilers::config::{InstanceGroup, RegionConfig};
use reconcilers::placement::Placed;
use reconcilers::shell::RestartCommand;
use reconcilers::status::{ResourceKind, SyncState};

use super::artifact::artifact_key;
use super::command::{Task, run_on};
use super::{Blocked, Controller, Converged};
use crate::runtime::Outcome;
use crate::store::{Intent, Lease, ShopView, now_millis};

/// How often a running deployment is looked at (or the resync period, when shorter).
const DEPLOY_POLL: Duration = Duration::from_secs(10);
/// The longest writing the shop's env file on its instances may take.
const SHOP_ENV_TIMEOUT: Duration = Duration::from_secs(60);
/// How far into a group's queue a waiting shop looks for its place.
pub(super) const QUEUE_WINDOW: u32 = 500;
const ACTIVE: [DeploymentStatus; 3] = [
    DeploymentStatus::Created,
    DeploymentStatus::Queued,
    DeploymentStatus::InProgress,
];

/// See [`Controller::deployment_target`].
pub(super) struct DeploymentTarget {
    pub(super) group: InstanceGroup,
    pub(super) revision: Revision,
    pub(super) desired: String,
    pub(super) scope: String,
}

impl Controller {
    pub(super) async fn deployment(
        &self,
        view: &ShopView,
        lease: &Lease,
    ) -> Result<Converged, Blocked> {
        let shop = view.record.spec.shop_domain.as_str();
        if !Self::synced(view, ResourceKind::Artifact) {
            // Not ready to deploy: leave the group's queue rather than hold it up.
            if let Some(intent) = self.store.intent(shop, ResourceKind::Deployment).await?
                && started_id(&intent).is_none()
            {
                self.store
                    .clear_intent(shop, ResourceKind::Deployment)
                    .await?;
            }
            return Err(Blocked::waiting(
                "WaitingForArtifact",
                "the artifact is not built yet",
            ));
        }
        let region = self.region(view).await?;
        let placed = self.placement(view, &region).await?;
        let DeploymentTarget {
            group,
            revision,
            desired,
            scope,
        } = self.deployment_target(view, &region, &placed).await?;
        let mut intent = self.store.intent(shop, ResourceKind::Deployment).await?;
        if Self::deployed(view, &desired) {
            // Deployed, but a place in the queue is left: a queued revision the spec moved
            // away from again, or a started deployment a crash left recorded after it finished.
            // A queued one is dropped; a started one is waited for below (it may be another
            // revision, which the instances will end up running). Kept, either would hold the
            // group's queue for good once it reached the head.
            match &intent {
                None => return Ok(Self::still_deployed(view, desired)),
                Some(queued) if started_id(queued).is_none() => {
                    self.store
                        .clear_intent(shop, ResourceKind::Deployment)
                        .await?;
                    self.wake_next_deployment(&queued.scope).await;
                    return Ok(Self::still_deployed(view, desired));
                }
                Some(_) => {}
            }
        }

        let deployments = self.cloud.deployments(region.region.as_str());
        let application = region.codedeploy_application.as_str();
        let group_name = group.codedeploy_deployment_group.as_str();

        // The deployment this shop started, if any: wait for it, whatever its revision (a
        // group runs one at a time), then leave the queue.
        if let Some((started, id)) = intent
            .as_ref()
            .and_then(|i| started_id(i).map(|id| (i, id.to_owned())))
        {
            let deployment = match deployments.get_deployment(&id).await {
                Ok(deployment) => Some(deployment),
                Err(error) if error.is_not_found() => None,
                Err(error) => return Err(error.into()),
            };
            if let Some(deployment) = &deployment
                && ACTIVE.contains(&deployment.status)
            {
                return self.deployment_state(deployment.clone(), desired);
            }
            self.store
                .clear_intent(shop, ResourceKind::Deployment)
                .await?;
            self.wake_next_deployment(&scope).await;
            if let Some(deployment) = deployment
                && started.desired == desired
            {
                return self.deployment_state(deployment, desired);
            }
            // A newer spec arrived while it ran: queue again, at the back.
            intent = None;
        }

        // Join the group's queue, or keep the place with the newest revision.
        let queued = match intent {
            Some(queued) if queued.desired == desired && queued.scope == scope => queued,
            Some(queued) => {
                let rewritten = Intent {
                    scope: scope.clone(),
                    desired: desired.clone(),
                    ..queued
                };
                self.store.record_intent(&rewritten, now_millis()).await?
            }
            None => {
                let new = Intent {
                    shop: shop.to_owned(),
                    kind: ResourceKind::Deployment,
                    scope: scope.clone(),
                    desired: desired.clone(),
                    external_id: None,
                    created_at: 0,
                    updated_at: 0,
                };
                self.store.record_intent(&new, now_millis()).await?
            }
        };
        let ahead = self
            .store
            .intent_queue(ResourceKind::Deployment, &scope, QUEUE_WINDOW)
            .await?;
        let position = ahead.iter().position(|i| i.shop == shop);
        let turn = match position {
            Some(0) => true,
            Some(place) => self.only_paused_ahead(&ahead[..place]).await?,
            None => false,
        };
        if !turn {
            let place = position.map_or_else(
                || format!("more than {QUEUE_WINDOW}"),
                |p| (p + 1).to_string(),
            );
            return Err(Blocked {
                reason: "QueuedForDeploymentGroup",
                message: format!("number {place} in the queue of deployment group {group_name}"),
                // The shop before it wakes it when it is done (on this replica); the poll is
                // for the other replicas, and slower the further back the shop waits.
                outcome: Outcome::Requeue(
                    self.queue_poll(position.unwrap_or(QUEUE_WINDOW as usize)),
                ),
            });
        }

        // Our turn. The group may still run a deployment of ours whose id a crash lost, or
        // one started by hand. A create this shop attempted without recording the id may even
        // have finished already: look for it among the group's newest deployments.
        let attempted = queued.external_id.as_deref() == Some(CREATING);
        let lost = if attempted {
            let since = queued.updated_at - CLOCK_SKEW_MILLIS;
            recent_deployment(
                deployments.as_ref(),
                application,
                group_name,
                &revision,
                since,
            )
            .await?
        } else {
            None
        };
        let active = match lost {
            Some(found) => Some(found),
            None => active_deployment(deployments.as_ref(), application, group_name).await?,
        };
        let deployment = match active {
            Some(active) if active.revision == revision => active,
            Some(other) => {
                return Err(Blocked {
                    reason: "DeploymentGroupBusy",
                    message: format!("waiting for deployment {} of the group", other.id),
                    outcome: Outcome::Requeue(self.deploy_poll()),
                });
            }
            None => {
                self.fence(lease).await?;
                self.install_shop_env(view, &region, &group.name, placed.port)
                    .await?;
                let request = DeploymentRequest {
                    application: application.to_owned(),
                    deployment_group: group_name.to_owned(),
                    revision: revision.clone(),
                    description: format!("{shop} generation {}", view.record.generation),
                };
                self.fence(lease).await?;
                let creating = Intent {
                    external_id: Some(CREATING.to_owned()),
                    ..queued.clone()
                };
                self.store.record_intent(&creating, now_millis()).await?;
                match deployments.create_deployment(&request).await {
                    Ok(created) => {
                        tracing::info!(shop, deployment = %created.id, "created deployment");
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
        };
        let started = Intent {
            external_id: Some(deployment.id.clone()),
            ..queued
        };
        self.store.record_intent(&started, now_millis()).await?;
        self.deployment_state(deployment, desired)
    }

    /// The deployment the spec asks for, and the queue (`application/group`) it waits in.
    pub(super) async fn deployment_target(
        &self,
        view: &ShopView,
        region: &RegionConfig,
        placed: &Placed,
    ) -> Result<DeploymentTarget, Blocked> {
        let group = self
            .store
            .get_instance_group(&placed.instance_group)
            .await?
            .ok_or_else(|| Blocked::waiting("GroupMissing", "the shop's instance group is gone"))?;
        let shop = view.record.spec.shop_domain.as_str();
        let revision = Revision {
            bucket: region.artifact_bucket.to_string(),
            key: artifact_key(shop, view.record.spec.source_version.as_str()),
            version: None,
        };
        let desired = format!(
            "s3://{}/{} on {}",
            revision.bucket, revision.key, group.name
        );
        let scope = format!(
            "{}/{}",
            region.codedeploy_application, group.codedeploy_deployment_group
        );
        Ok(DeploymentTarget {
            group,
            revision,
            desired,
            scope,
        })
    }

    /// The status of a shop whose `desired` revision is deployed and not being replaced.
    fn still_deployed(view: &ShopView, desired: String) -> Converged {
        let previous = view
            .resources
            .iter()
            .find(|r| r.kind == ResourceKind::Deployment);
        Converged {
            desired,
            observed: previous.map(|p| p.observed.clone()).unwrap_or_default(),
            reason: "",
        }
    }

    /// Whether the status says `desired` was deployed.
    pub(super) fn deployed(view: &ShopView, desired: &str) -> bool {
        view.resources.iter().any(|r| {
            r.kind == ResourceKind::Deployment
                && r.sync == SyncState::Synced
                && r.desired == desired
        })
    }

    /// Writes the shop's env file (domain and port) on every running instance of its group.
    async fn install_shop_env(
        &self,
        view: &ShopView,
        region: &RegionConfig,
        group: &str,
        port: u16,
    ) -> Result<(), Blocked> {
        let instances = self.instance_ids(region.region.as_str(), group).await?;
        if instances.is_empty() {
            return Err(Blocked::waiting(
                "NoInstances",
                &format!("no running instance in group {group}"),
            ));
        }
        let command = RestartCommand::new(&view.record.spec.shop_domain, port);
        let ssm = self.cloud.run_command(region.region.as_str());
        let (commands, comment) = (command.install_env(), command.describe("hand port to"));
        run_on(
            ssm.as_ref(),
            &instances,
            Task::ShopEnv,
            commands,
            comment,
            SHOP_ENV_TIMEOUT,
        )
        .await
    }

    /// True when every shop ahead in the queue is paused with its deployment already started:
    /// such a shop keeps its place until a resume collects the result (it makes no call while
    /// paused), but it does not hold the group. Whether the group is free is then for the
    /// group's own state to say (`active_deployment`, read next).
    async fn only_paused_ahead(&self, ahead: &[Intent]) -> Result<bool, Blocked> {
        for intent in ahead {
            if started_id(intent).is_none() {
                return Ok(false);
            }
            let owner = self.store.get_shop(&intent.shop).await?;
            if owner.is_none_or(|view| view.pause.is_none()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Wakes the next shop of a deployment group's queue on this replica (others poll).
    pub(super) async fn wake_next_deployment(&self, scope: &str) {
        match self
            .store
            .intent_queue(ResourceKind::Deployment, scope, 1)
            .await
        {
            Ok(next) => {
                for intent in next {
                    self.wake(&intent.shop, ResourceKind::Deployment);
                }
            }
            Err(error) => tracing::warn!(scope, %error, "could not read the deployment queue"),
        }
    }

    /// Shops waiting for their group poll it: a group runs one deployment at a time.
    pub(super) fn deploy_poll(&self) -> Duration {
        DEPLOY_POLL.min(self.config.loops.resync)
    }

    /// How often a shop `position` places from the head of its queue looks again.
    fn queue_poll(&self, position: usize) -> Duration {
        let factor = u32::try_from(position.clamp(1, 30)).unwrap_or(30);
        (self.deploy_poll() * factor).min(self.config.loops.resync.max(self.deploy_poll()))
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

/// Marks an intent whose `CreateDeployment` was sent but whose id is not recorded yet.
const CREATING: &str = "creating";
/// How far CodeDeploy's clock may be behind ours when matching a lost deployment.
const CLOCK_SKEW_MILLIS: i64 = 60_000;
/// How many of a group's newest deployments are looked at for a lost one.
const RECENT: usize = 5;

/// The id of the deployment an intent started, if it got one.
pub(super) fn started_id(intent: &Intent) -> Option<&str> {
    intent.external_id.as_deref().filter(|id| *id != CREATING)
}

/// A deployment of `revision` created in the group since `since` (epoch milliseconds): the one
/// a run created before it could record the id.
async fn recent_deployment(
    deployments: &dyn Deployments,
    application: &str,
    group: &str,
    revision: &Revision,
    since: i64,
) -> Result<Option<Deployment>, reconcilers::cloud::CloudError> {
    let page = deployments
        .list_deployment_ids(application, group, &[], None)
        .await?;
    for id in page.items.iter().take(RECENT) {
        let deployment = deployments.get_deployment(id).await?;
        if deployment.revision == *revision && deployment.created_at >= since {
            return Ok(Some(deployment));
        }
    }
    Ok(None)
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
