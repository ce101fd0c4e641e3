//! The plan (#6): what each resource's next reconcile would do for a shop, without doing it.
//! It runs the same observe and diff as the reconciles (`observe_target_group`,
//! `observe_listener`, `observe_nginx`, the artifact and deployment targets) and stops before
//! any apply: it makes read calls only, writes nothing to the store (a shop not yet placed shows
//! where it would go), and leaves the loops' cached listings alone, reading its own fresh ones
//! so an out-of-band change shows at once.
//!
//! A paused shop is planned like any other, with the pause beside the steps: the steps are what
//! a resume would set off.

use reconcilers::nginx::FileDrift;
use reconcilers::placement::Placed;
use reconcilers::status::ResourceKind;
use reconcilers::{listener, target_group};

use super::observe::Observations;
use super::{Blocked, Controller, KINDS, artifact, deployment, nginx_config, restart};
use crate::store::{Pause, ShopView, StoreError};

/// What the controller would do next for one shop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub shop: String,
    pub generation: i64,
    /// Set while the shop or its region is paused: nothing below happens until a resume.
    pub pause: Option<Pause>,
    /// One step per resource kind, in the order the loops converge them (reverse order while
    /// the shop is being deleted).
    pub steps: Vec<PlannedStep>,
}

impl Plan {
    /// Whether no resource has anything to do.
    pub fn is_empty(&self) -> bool {
        self.steps
            .iter()
            .all(|step| step.actions.is_empty() && step.note.is_empty())
    }
}

/// What one resource's next reconcile would do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedStep {
    pub kind: ResourceKind,
    /// The changes, in words; empty when there is nothing to do.
    pub actions: Vec<String>,
    /// Resources whose status must converge before the actions happen.
    pub waiting_for: Vec<ResourceKind>,
    /// Why the plan stops here (a missing config, a conflict an operator must resolve, a read
    /// that failed), or empty.
    pub note: String,
}

impl Controller {
    /// The plan of `shop`, or `None` when there is no such shop. Reads only.
    pub async fn plan(&self, shop: &str) -> Result<Option<Plan>, StoreError> {
        let Some(view) = self.store.get_shop(shop).await? else {
            return Ok(None);
        };
        let steps = if view.record.is_deleting() {
            teardown(&view)
        } else {
            let observations = Observations::new(self.config.loops.resync);
            self.creation(&view, &observations).await
        };
        Ok(Some(Plan {
            shop: view.record.spec.shop_domain.to_string(),
            generation: view.record.generation,
            pause: view.pause.clone(),
            steps,
        }))
    }

    async fn creation(&self, view: &ShopView, observations: &Observations) -> Vec<PlannedStep> {
        let region = match self.region(view).await {
            Ok(region) => region,
            Err(blocked) => {
                return KINDS
                    .iter()
                    .map(|kind| step(*kind, Vec::new(), Err(blocked_copy(&blocked))))
                    .collect();
            }
        };
        let (placed, placing) = match &view.placement {
            Some(p) => (
                Ok(Placed {
                    instance_group: p.instance_group.clone(),
                    nlb_arn: p.nlb_arn.clone(),
                    port: p.port,
                }),
                None,
            ),
            None => {
                let choice = self.choose_placement(&region, observations).await;
                let placing = choice.as_ref().ok().map(|p| {
                    format!(
                        "place the shop on group {} port {} of {}",
                        p.instance_group, p.port, p.nlb_arn
                    )
                });
                (choice, placing)
            }
        };
        let waits = |kind| waiting_for(view, kind);
        let region_name = region.region.as_str();

        let mut steps = Vec::with_capacity(KINDS.len());
        let artifact = self.plan_artifact(view, &region).await;
        steps.push(step(
            ResourceKind::Artifact,
            waits(ResourceKind::Artifact),
            artifact,
        ));
        let deployment = match &placed {
            Ok(placed) => self.plan_deployment(view, &region, placed).await,
            Err(blocked) => Err(blocked_copy(blocked)),
        };
        steps.push(step(
            ResourceKind::Deployment,
            waits(ResourceKind::Deployment),
            deployment,
        ));
        let (target_group, target_group_arn) = match &placed {
            Ok(placed) => {
                self.plan_target_group(view, region_name, placed, observations, placing)
                    .await
            }
            Err(blocked) => (Err(blocked_copy(blocked)), None),
        };
        steps.push(step(
            ResourceKind::TargetGroup,
            waits(ResourceKind::TargetGroup),
            target_group,
        ));
        let listener = match &placed {
            Ok(placed) => {
                let arn = target_group_arn.unwrap_or_else(|| "(the new target group)".to_owned());
                self.plan_listener(view, region_name, placed, &arn, observations)
                    .await
            }
            Err(blocked) => Err(blocked_copy(blocked)),
        };
        steps.push(step(
            ResourceKind::Listener,
            waits(ResourceKind::Listener),
            listener,
        ));
        let nginx = match &placed {
            Ok(placed) => self.plan_nginx(view, &region, placed, observations).await,
            Err(blocked) => Err(blocked_copy(blocked)),
        };
        steps.push(step(
            ResourceKind::NginxConfig,
            waits(ResourceKind::NginxConfig),
            nginx,
        ));
        let restart = match &placed {
            Ok(placed) => self.plan_restart(view, region_name, placed).await,
            Err(blocked) => Err(blocked_copy(blocked)),
        };
        steps.push(step(
            ResourceKind::Restart,
            waits(ResourceKind::Restart),
            restart,
        ));
        steps
    }

    async fn plan_artifact(
        &self,
        view: &ShopView,
        region: &reconcilers::config::RegionConfig,
    ) -> Result<Vec<String>, Blocked> {
        let bucket = region.artifact_bucket.as_str();
        let (key, location, desired) = artifact::wanted(view, bucket);
        if artifact::built(view, &desired) {
            return Ok(Vec::new());
        }
        let storage = self.cloud.object_storage(region.region.as_str());
        match storage.head_object(bucket, &key, None).await {
            Ok(_) => return Ok(vec![format!("reuse artifact at {location}")]),
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error.into()),
        }
        let version = view.record.spec.source_version.as_str();
        let shop = view.record.spec.shop_domain.as_str();
        let started = self
            .store
            .intent(shop, ResourceKind::Artifact)
            .await?
            .filter(|i| i.desired == version)
            .and_then(|i| i.external_id);
        Ok(vec![match started {
            Some(build) => format!("follow build {build} of version {version} into {location}"),
            None => format!(
                "build version {version} with project {} into {location}",
                region.codebuild_project
            ),
        }])
    }

    async fn plan_deployment(
        &self,
        view: &ShopView,
        region: &reconcilers::config::RegionConfig,
        placed: &Placed,
    ) -> Result<Vec<String>, Blocked> {
        let target = self.deployment_target(view, region, placed).await?;
        if Self::deployed(view, &target.desired) {
            return Ok(Vec::new());
        }
        let shop = view.record.spec.shop_domain.as_str();
        let intent = self.store.intent(shop, ResourceKind::Deployment).await?;
        if let Some(id) = intent.and_then(|i| i.external_id) {
            return Ok(vec![format!("follow deployment {id}")]);
        }
        let queue = self
            .store
            .intent_queue(
                ResourceKind::Deployment,
                &target.scope,
                deployment::QUEUE_WINDOW,
            )
            .await?;
        let position = queue
            .iter()
            .position(|i| i.shop == shop)
            .unwrap_or(queue.len())
            + 1;
        Ok(vec![format!(
            "deploy revision s3://{}/{} to group {} (queue position {position})",
            target.revision.bucket, target.revision.key, target.group.codedeploy_deployment_group
        )])
    }

    /// The target group's plan, and the ARN of the group when it exists.
    async fn plan_target_group(
        &self,
        view: &ShopView,
        region: &str,
        placed: &Placed,
        observations: &Observations,
        placing: Option<String>,
    ) -> (Result<Vec<String>, Blocked>, Option<String>) {
        let seen = match self
            .observe_target_group(view, region, placed, observations)
            .await
        {
            Ok(seen) => seen,
            Err(blocked) => return (Err(blocked), None),
        };
        let arn = seen.observed.as_ref().map(|o| o.group.arn.clone());
        let name = &seen.desired.spec.name;
        let mut actions: Vec<String> = placing.into_iter().collect();
        for change in &seen.plan {
            actions.push(match change {
                target_group::Change::Create => {
                    format!("create target group {name} on port {}", placed.port)
                }
                target_group::Change::AddTags(tags) => {
                    format!("add {} ownership tags to target group {name}", tags.len())
                }
                target_group::Change::Register(targets) => {
                    format!("register {}", targets_words(targets))
                }
                target_group::Change::Deregister(targets) => {
                    format!("deregister {}", targets_words(targets))
                }
                target_group::Change::Replace { why } => {
                    let blocked = Blocked::waiting("ReplaceNeeded", why);
                    return (Err(blocked), arn);
                }
            });
        }
        (Ok(actions), arn)
    }

    async fn plan_listener(
        &self,
        view: &ShopView,
        region: &str,
        placed: &Placed,
        target_group_arn: &str,
        observations: &Observations,
    ) -> Result<Vec<String>, Blocked> {
        let seen = self
            .observe_listener(view, region, placed, target_group_arn, observations)
            .await?;
        let port = placed.port;
        seen.plan
            .iter()
            .map(|change| match change {
                listener::Change::Create => Ok(format!(
                    "create listener TCP :{port} on {} forwarding to {target_group_arn}",
                    placed.nlb_arn
                )),
                listener::Change::AddTags(_) => {
                    Ok(format!("adopt the untagged listener on port {port}"))
                }
                listener::Change::Recreate => Ok(format!(
                    "recreate the listener on port {port}: it forwards elsewhere"
                )),
                listener::Change::Conflict { why } => Err(Blocked::waiting("PortConflict", why)),
            })
            .collect()
    }

    async fn plan_nginx(
        &self,
        view: &ShopView,
        region: &reconcilers::config::RegionConfig,
        placed: &Placed,
        observations: &Observations,
    ) -> Result<Vec<String>, Blocked> {
        let seen = self
            .observe_nginx(view, region, placed, observations)
            .await?;
        let file = seen.file.as_str();
        let mut actions = Vec::new();
        match &seen.drift {
            FileDrift::InSync => {}
            FileDrift::Missing => actions.push(format!("write {file} after nginx -t")),
            FileDrift::Changed {
                observed_generation,
            } => actions.push(format!(
                "rewrite {file} after nginx -t (live file is {})",
                observed_generation.map_or_else(
                    || "edited by hand".to_owned(),
                    |g| format!("for generation {g}")
                )
            )),
        }
        if nginx_config::reload_due(view, &seen.drift) {
            actions.push("reload nginx on the proxies, one first, then the rest".to_owned());
        }
        Ok(actions)
    }

    async fn plan_restart(
        &self,
        view: &ShopView,
        region: &str,
        placed: &Placed,
    ) -> Result<Vec<String>, Blocked> {
        if !restart::restart_due(view) {
            return Ok(Vec::new());
        }
        let instances = self
            .cloud
            .fleet(region)
            .running_instances(&placed.instance_group)
            .await?;
        let ids: Vec<String> = instances.into_iter().map(|i| i.id).collect();
        Ok(vec![format!(
            "restart {} on instances {}, one at a time",
            view.record.restart_generation,
            ids.join(", ")
        )])
    }
}

/// The teardown from status alone: each kind goes once the one after it is gone.
fn teardown(view: &ShopView) -> Vec<PlannedStep> {
    let file = format!("{}.conf", view.record.spec.shop_domain);
    let order = [
        (
            ResourceKind::NginxConfig,
            None,
            format!("remove {file} and reload the proxies"),
        ),
        (
            ResourceKind::Listener,
            Some(ResourceKind::NginxConfig),
            "delete the shop's listener".to_owned(),
        ),
        (
            ResourceKind::TargetGroup,
            Some(ResourceKind::Listener),
            "delete the shop's target group".to_owned(),
        ),
        (
            ResourceKind::Deployment,
            Some(ResourceKind::TargetGroup),
            "stop the shop on its instances, then remove the shop".to_owned(),
        ),
    ];
    let mut steps: Vec<PlannedStep> = order
        .into_iter()
        .map(|(kind, after, action)| {
            let done = kind != ResourceKind::Deployment && Controller::deleted(view, kind);
            PlannedStep {
                kind,
                actions: if done { Vec::new() } else { vec![action] },
                waiting_for: after
                    .filter(|after| !done && !Controller::deleted(view, *after))
                    .into_iter()
                    .collect(),
                note: String::new(),
            }
        })
        .collect();
    // Artifacts stay for rollbacks (a bucket lifecycle rule expires them); a restart leaves
    // nothing behind.
    for kind in [ResourceKind::Restart, ResourceKind::Artifact] {
        steps.push(step(kind, Vec::new(), Ok(Vec::new())));
    }
    steps
}

/// The kinds `kind` waits for, from status (the order of [`KINDS`] without the restart,
/// which needs only a placement).
fn waiting_for(view: &ShopView, kind: ResourceKind) -> Vec<ResourceKind> {
    let before = match kind {
        ResourceKind::Deployment => Some(ResourceKind::Artifact),
        ResourceKind::Listener => Some(ResourceKind::TargetGroup),
        ResourceKind::NginxConfig => Some(ResourceKind::Listener),
        _ => None,
    };
    before
        .filter(|before| !Controller::synced(view, *before))
        .into_iter()
        .collect()
}

fn step(
    kind: ResourceKind,
    waiting_for: Vec<ResourceKind>,
    result: Result<Vec<String>, Blocked>,
) -> PlannedStep {
    let (actions, note) = match result {
        Ok(actions) => (actions, String::new()),
        Err(blocked) => (
            Vec::new(),
            format!("{}: {}", blocked.reason, blocked.message),
        ),
    };
    PlannedStep {
        kind,
        actions,
        waiting_for,
        note,
    }
}

/// One failure shared by the steps it stops.
fn blocked_copy(blocked: &Blocked) -> Blocked {
    Blocked::waiting(blocked.reason, &blocked.message)
}

fn targets_words(targets: &[reconcilers::cloud::Target]) -> String {
    let words: Vec<String> = targets
        .iter()
        .map(|t| format!("{}:{}", t.id, t.port))
        .collect();
    words.join(", ")
}
