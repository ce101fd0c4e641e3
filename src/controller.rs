//! The controller: one reconcile loop per resource kind, each with its own [`WorkQueue`], fed
//! by the store's change feed (a spec change wakes every kind of the shop; a status change
//! wakes its other kinds) and by periodic resyncs. A reconcile loads the shop from the store,
//! runs the resource's observe / diff / apply against the cloud and records what it saw as
//! status. It decides nothing about timing: it returns an [`Outcome`].
//!
//! The loops run `artifact`, `deployment`, placement, `target_group`, `listener`,
//! `nginx_config` and `restart`, and the teardown in reverse order when a shop is deleted (the
//! shop row goes last, so a crash resumes the teardown).
//! TODO(#4): leases so that several PostgreSQL replicas never reconcile one key at once; bulk
//! per-region observation.

use std::future::Future;
use std::sync::Arc;

use reconcilers::cloud::{CloudError, CloudProvider, ErrorKind, HealthCheck, Owner};
use reconcilers::config::RegionConfig;
use reconcilers::placement::{self, Candidate, NoRoom, Placed};
use reconcilers::status::{Health, ResourceKind, ResourceStatus, SyncState};
use reconcilers::{listener, target_group};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use crate::runtime::{LoopConfig, Outcome, ShopKey, WorkQueue, run};
use crate::store::{Change, ShopQuery, ShopView, Store, StoreError, now_millis};

mod artifact;
mod deployment;
mod nginx_config;
mod restart;

/// The kinds the controller reconciles, in dependency order.
pub const KINDS: [ResourceKind; 6] = [
    ResourceKind::Artifact,
    ResourceKind::Deployment,
    ResourceKind::TargetGroup,
    ResourceKind::Listener,
    ResourceKind::NginxConfig,
    ResourceKind::Restart,
];

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Tags every object this installation creates, so two installations in one account never
    /// adopt each other's objects.
    pub installation: String,
    pub loops: LoopConfig,
    pub health_check: HealthCheck,
    /// The nginx binary that checks configs before they go live.
    pub nginx_binary: std::path::PathBuf,
    /// How shop server blocks listen and resolve their upstreams.
    pub proxy: reconcilers::nginx::ProxySettings,
}

/// The reconcile loops of every kind.
pub struct Controller {
    store: Arc<dyn Store>,
    cloud: Arc<dyn CloudProvider>,
    config: ControllerConfig,
}

/// Why one reconcile did not converge, before it becomes a status and an [`Outcome`].
struct Blocked {
    reason: &'static str,
    message: String,
    outcome: Outcome,
}

impl Blocked {
    /// Waiting on another resource or on the world: not a failure.
    fn waiting(reason: &'static str, message: &str) -> Self {
        Blocked {
            reason,
            message: message.to_owned(),
            outcome: Outcome::Wait("dependency"),
        }
    }
}

impl From<CloudError> for Blocked {
    fn from(error: CloudError) -> Self {
        let outcome = match error.kind {
            ErrorKind::Throttled | ErrorKind::QuotaExceeded(_) => {
                Outcome::Wait(error.kind.as_str())
            }
            _ => Outcome::Retry(error.kind.as_str()),
        };
        let reason = match error.kind {
            ErrorKind::QuotaExceeded(_) => "QuotaExceeded",
            ErrorKind::Throttled => "Throttled",
            _ => "CloudError",
        };
        Blocked {
            reason,
            message: error.to_string(),
            outcome,
        }
    }
}

impl From<StoreError> for Blocked {
    fn from(error: StoreError) -> Self {
        Blocked {
            reason: "StoreError",
            message: error.to_string(),
            outcome: Outcome::Retry("store"),
        }
    }
}

/// What a converged reconcile saw.
struct Converged {
    desired: String,
    observed: String,
    /// Empty, or [`DELETED`] once teardown removed the resource.
    reason: &'static str,
}

impl ControllerConfig {
    /// The defaults with this installation name and resync period.
    pub fn new(installation: &str, resync: std::time::Duration) -> Self {
        Self {
            installation: installation.to_owned(),
            loops: LoopConfig {
                resync,
                ..LoopConfig::default()
            },
            health_check: HealthCheck::default(),
            nginx_binary: "/usr/sbin/nginx".into(),
            proxy: reconcilers::nginx::ProxySettings::default(),
        }
    }
}

impl Controller {
    pub fn new(
        store: Arc<dyn Store>,
        cloud: Arc<dyn CloudProvider>,
        config: ControllerConfig,
    ) -> Self {
        Self {
            store,
            cloud,
            config,
        }
    }

    /// Runs every loop until `shutdown` resolves, then lets in-flight reconciles finish.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send + 'static) {
        let queues: Vec<(ResourceKind, Arc<WorkQueue<ShopKey>>)> = KINDS
            .iter()
            .map(|kind| (*kind, Arc::new(WorkQueue::new())))
            .collect();
        let (stop, _) = broadcast::channel::<()>(1);
        // Join sets abort their tasks when dropped: if this future is dropped (its task
        // aborted), the feed, the loops and their reconciles end with it.
        let mut change_feed = JoinSet::new();
        change_feed.spawn(feed(self.store.subscribe(), queues.clone()));
        if let Err(error) = self.seed(&queues).await {
            tracing::error!(%error, "could not list shops at start; the change feed and resyncs go on");
        }

        let mut loops = JoinSet::new();
        for (kind, queue) in &queues {
            let controller = self.clone();
            let mut stopped = stop.subscribe();
            let handler = move |key: ShopKey| {
                let controller = controller.clone();
                async move { controller.reconcile(key).await }
            };
            let config = self.config.loops.clone();
            let queue = queue.clone();
            tracing::info!(kind = kind.as_str(), "starting reconcile loop");
            loops.spawn(async move {
                run(queue, config, handler, async move {
                    let _ = stopped.recv().await;
                })
                .await
            });
        }
        shutdown.await;
        let _ = stop.send(());
        while loops.join_next().await.is_some() {}
        change_feed.abort_all();
    }

    /// Every existing shop gets a resync of every kind, due now.
    async fn seed(
        &self,
        queues: &[(ResourceKind, Arc<WorkQueue<ShopKey>>)],
    ) -> Result<(), StoreError> {
        let mut query = ShopQuery {
            limit: 1000,
            ..ShopQuery::default()
        };
        loop {
            let page = self.store.list_shops(&query).await?;
            for view in &page.shops {
                for (kind, queue) in queues {
                    let key = ShopKey {
                        shop: view.record.spec.shop_domain.to_string(),
                        kind: *kind,
                    };
                    queue.resync_at(key, tokio::time::Instant::now());
                }
            }
            match page.next_after {
                Some(after) => query.after = Some(after),
                None => return Ok(()),
            }
        }
    }

    async fn reconcile(&self, key: ShopKey) -> Outcome {
        let view = match self.store.get_shop(&key.shop).await {
            Ok(Some(view)) => view,
            Ok(None) => return Outcome::Gone,
            Err(error) => {
                tracing::warn!(shop = %key.shop, %error, "could not load shop");
                return Outcome::Retry("store");
            }
        };
        let result = match (key.kind, view.record.is_deleting()) {
            (ResourceKind::TargetGroup, false) => self.target_group(&view).await,
            (ResourceKind::Listener, false) => self.listener(&view).await,
            (ResourceKind::Listener, true) => self.delete_listener(&view).await,
            (ResourceKind::NginxConfig, false) => self.nginx_config(&view).await,
            (ResourceKind::NginxConfig, true) => self.delete_nginx_config(&view).await,
            (ResourceKind::Artifact, false) => self.artifact(&view).await,
            // Artifacts are kept per source version for rollbacks; a bucket lifecycle rule
            // expires them.
            (ResourceKind::Artifact, true) => Ok(Self::gone()),
            (ResourceKind::Deployment, false) => self.deployment(&view).await,
            // TODO(#4): stop the shop's process on its instances.
            (ResourceKind::Deployment, true) => Ok(Self::gone()),
            (ResourceKind::Restart, false) => self.restart(&view).await,
            // Nothing of a restart outlives the shop's process.
            (ResourceKind::Restart, true) => Ok(Self::gone()),
            (ResourceKind::TargetGroup, true) => match self.delete_target_group(&view).await {
                Ok(()) => return Outcome::Gone,
                Err(blocked) => Err(blocked),
            },
            _ => return Outcome::Done,
        };
        self.record(&view, key.kind, result).await
    }

    /// Writes the status of one reconcile (only when it changed, so dependents are not woken
    /// for nothing) and turns it into an outcome.
    async fn record(
        &self,
        view: &ShopView,
        kind: ResourceKind,
        result: Result<Converged, Blocked>,
    ) -> Outcome {
        let previous = view.resources.iter().find(|r| r.kind == kind);
        let (status, outcome) = match result {
            Ok(converged) => (
                status_of(
                    kind,
                    view,
                    converged.desired,
                    converged.observed,
                    SyncState::Synced,
                    Health::Healthy,
                    converged.reason,
                    String::new(),
                    0,
                ),
                Outcome::Done,
            ),
            Err(blocked) => {
                // Only failures count: a wait that repeats itself leaves the status unchanged,
                // so it is not rewritten and wakes nobody (two kinds waiting on each other's
                // status would otherwise wake each other forever).
                let failed = matches!(blocked.outcome, Outcome::Retry(_));
                let attempts = previous.map_or(0, |p| p.attempts) + u32::from(failed);
                let health = if matches!(blocked.outcome, Outcome::Retry(_)) {
                    Health::Degraded
                } else {
                    Health::Progressing
                };
                let desired = previous.map(|p| p.desired.clone()).unwrap_or_default();
                let observed = previous.map(|p| p.observed.clone()).unwrap_or_default();
                (
                    status_of(
                        kind,
                        view,
                        desired,
                        observed,
                        SyncState::OutOfSync,
                        health,
                        blocked.reason,
                        blocked.message,
                        attempts,
                    ),
                    blocked.outcome,
                )
            }
        };
        let unchanged = previous.is_some_and(|p| same_status(p, &status));
        let status = ResourceStatus {
            last_transition: match previous {
                Some(p) if p.sync == status.sync && p.health == status.health => p.last_transition,
                _ => status.last_transition,
            },
            ..status
        };
        if !unchanged {
            let shop = view.record.spec.shop_domain.as_str();
            if let Err(error) = self.store.put_resource_status(shop, &status).await {
                tracing::warn!(shop, kind = kind.as_str(), %error, "could not record status");
                return Outcome::Retry("store");
            }
        }
        // On every run, not only when this status changed: two kinds of a shop that converge
        // together each see the other unsynced in the view they loaded, and a crash can fall
        // between the status write and this one. Either left Ready stale for good; now the
        // next run of any kind of the shop repairs it (it writes only when Ready changes).
        self.record_readiness(view, &status).await;
        outcome
    }

    /// Keeps the shop's Ready flag (what `ListShops --not-ready` filters on) in step with its
    /// resources, now that one of them changed.
    async fn record_readiness(&self, view: &ShopView, changed: &ResourceStatus) {
        let mut resources: Vec<ResourceStatus> = view
            .resources
            .iter()
            .filter(|r| r.kind != changed.kind)
            .cloned()
            .collect();
        resources.push(changed.clone());
        let needed = view.record.needed_kinds();
        let generation = view.record.generation;
        let (_, blocker) =
            reconcilers::status::summarize(generation, &needed, &resources, now_millis());
        let ready = blocker.is_none() && !view.record.is_deleting();
        if ready != view.ready {
            let shop = view.record.spec.shop_domain.as_str();
            if let Err(error) = self
                .store
                .set_shop_ready(shop, ready, generation, now_millis())
                .await
            {
                tracing::warn!(shop, %error, "could not record readiness");
            } else if ready {
                tracing::info!(shop, generation, "shop is ready");
            }
        }
    }

    /// Places the shop if it has no placement yet.
    async fn placement(&self, view: &ShopView, region: &RegionConfig) -> Result<Placed, Blocked> {
        if let Some(p) = &view.placement {
            return Ok(Placed {
                instance_group: p.instance_group.clone(),
                nlb_arn: p.nlb_arn.clone(),
                port: p.port,
            });
        }
        let shop = view.record.spec.shop_domain.as_str();
        let groups = self
            .store
            .list_instance_groups(Some(region.region.as_str()))
            .await?;
        let fleet = self.cloud.fleet(region.region.as_str());
        let mut running = Vec::with_capacity(groups.len());
        for group in &groups {
            running.push(fleet.running_instances(&group.name).await?.len());
        }
        let candidates: Vec<Candidate<'_>> = groups
            .iter()
            .zip(running)
            .map(|(group, running_instances)| Candidate {
                group,
                running_instances,
            })
            .collect();
        // Another writer may take the chosen port first: choose again with its placement seen.
        for _ in 0..3 {
            let placed = self.store.region_placements(region.region.as_str()).await?;
            let choice = placement::choose(&candidates, &placed).map_err(no_room)?;
            match self.store.place_shop(shop, &choice, now_millis()).await {
                Ok(placed) => {
                    tracing::info!(shop, group = %placed.instance_group, port = placed.port, "placed shop");
                    return Ok(placed);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(Blocked {
            reason: "PlacementContended",
            message: "ports kept being taken".to_owned(),
            outcome: Outcome::Retry("placement"),
        })
    }

    async fn region(&self, view: &ShopView) -> Result<RegionConfig, Blocked> {
        let region = view.record.spec.region.as_str();
        self.store
            .get_region_config(region)
            .await?
            .ok_or_else(|| Blocked {
                reason: "RegionNotConfigured",
                message: format!("region {region} has no config"),
                outcome: Outcome::Wait("region"),
            })
    }

    fn owner(&self, view: &ShopView, kind: ResourceKind) -> Owner {
        Owner {
            installation: self.config.installation.clone(),
            shop: view.record.spec.shop_domain.to_string(),
            resource: kind.as_str().to_owned(),
        }
    }

    async fn target_group(&self, view: &ShopView) -> Result<Converged, Blocked> {
        let region = self.region(view).await?;
        let placed = self.placement(view, &region).await?;
        let lb = self.cloud.load_balancing(region.region.as_str());
        let nlb = lb
            .describe_load_balancers(std::slice::from_ref(&placed.nlb_arn))
            .await?;
        let vpc_id = nlb.first().map(|n| n.vpc_id.clone()).unwrap_or_default();
        let instances = self
            .cloud
            .fleet(region.region.as_str())
            .running_instances(&placed.instance_group)
            .await?;
        let owner = self.owner(view, ResourceKind::TargetGroup);
        let desired = target_group::desired(
            &view.record.spec.shop_domain,
            &placed,
            &vpc_id,
            &owner,
            &instances,
            self.config.health_check.clone(),
        );

        // TODO(#4): one listing per region and resync, shared by every shop.
        let known = lb.list_target_groups().await?;
        let observed = target_group::observe(lb.as_ref(), &desired, &known).await?;
        let plan = target_group::diff(&desired, observed.as_ref());
        if let Some(target_group::Change::Replace { why }) = plan.first() {
            return Err(Blocked {
                reason: "ReplaceNeeded",
                message: why.clone(),
                outcome: Outcome::Wait("replace"),
            });
        }
        if !plan.is_empty() {
            tracing::info!(shop = %view.record.spec.shop_domain, plan = ?plan, "applying target group plan");
        }
        let group = target_group::apply(lb.as_ref(), &desired, observed.as_ref(), &plan).await?;
        Ok(Converged {
            desired: format!(
                "{} port {} with {} targets",
                desired.spec.name,
                desired.spec.port,
                desired.targets.len()
            ),
            observed: group.map_or_else(String::new, |g| g.arn),
            reason: "",
        })
    }

    async fn listener(&self, view: &ShopView) -> Result<Converged, Blocked> {
        if !Self::synced(view, ResourceKind::TargetGroup) {
            return Err(Blocked::waiting(
                "WaitingForTargetGroup",
                "the shop's target group is not ready yet",
            ));
        }
        let region = self.region(view).await?;
        let placed = self.placement(view, &region).await?;
        let lb = self.cloud.load_balancing(region.region.as_str());
        let name =
            reconcilers::names::target_group_name(&view.record.spec.shop_domain, placed.port);
        let known = lb.list_target_groups().await?;
        let Some(group) = known.iter().find(|g| g.name == name) else {
            return Err(Blocked::waiting(
                "TargetGroupMissing",
                &format!("target group {name} is gone; waiting for it to be recreated"),
            ));
        };

        let owner = self.owner(view, ResourceKind::Listener);
        let desired = listener::desired(&placed.nlb_arn, placed.port, &group.arn, &owner);
        let listeners = lb.describe_listeners(&placed.nlb_arn).await?;
        let observed = listener::observe(lb.as_ref(), &desired, &listeners).await?;
        let plan = listener::diff(&desired, observed.as_ref());
        if let Some(listener::Change::Conflict { why }) = plan.first() {
            return Err(Blocked {
                reason: "PortConflict",
                message: why.clone(),
                outcome: Outcome::Wait("conflict"),
            });
        }
        if !plan.is_empty() {
            tracing::info!(shop = %view.record.spec.shop_domain, plan = ?plan, "applying listener plan");
        }
        let listener = listener::apply(lb.as_ref(), &desired, observed.as_ref(), &plan).await?;
        Ok(Converged {
            desired: format!("TCP :{} -> {name}", placed.port),
            observed: listener.map_or_else(String::new, |l| l.arn),
            reason: "",
        })
    }
}

/// The status of a resource that teardown removed.
const DELETED: &str = "Deleted";

impl Controller {
    /// Whether `kind` converged for the shop's current generation.
    fn synced(view: &ShopView, kind: ResourceKind) -> bool {
        view.resources.iter().any(|r| {
            r.kind == kind
                && r.sync == SyncState::Synced
                && r.observed_generation >= view.record.generation
        })
    }

    /// Whether `kind` has been torn down for the shop's current (deletion) generation.
    fn deleted(view: &ShopView, kind: ResourceKind) -> bool {
        view.resources.iter().any(|r| {
            r.kind == kind && r.reason == DELETED && r.observed_generation >= view.record.generation
        })
    }

    fn gone() -> Converged {
        Converged {
            desired: "absent (shop deleted)".to_owned(),
            observed: String::new(),
            reason: DELETED,
        }
    }

    /// Teardown, second step: the listener goes after the nginx file that points at it and
    /// before the target group it forwards to.
    async fn delete_listener(&self, view: &ShopView) -> Result<Converged, Blocked> {
        if !Self::deleted(view, ResourceKind::NginxConfig) {
            return Err(Blocked::waiting(
                "WaitingForNginxConfigDeletion",
                "the nginx file goes first",
            ));
        }
        let Some(placed) = &view.placement else {
            return Ok(Self::gone());
        };
        let region = view.record.spec.region.as_str();
        let lb = self.cloud.load_balancing(region);
        let owner = self.owner(view, ResourceKind::Listener);
        let listeners = lb.describe_listeners(&placed.nlb_arn).await?;
        for found in listeners.iter().filter(|l| l.port == placed.port) {
            let tags = reconcilers::cloud::tags_of(lb.as_ref(), &found.arn).await?;
            if Owner::from_tags(&tags).as_ref() != Some(&owner) {
                continue;
            }
            match lb.delete_listener(&found.arn).await {
                Err(error) if !error.is_not_found() => return Err(error.into()),
                _ => {
                    tracing::info!(shop = %view.record.spec.shop_domain, listener = %found.arn, "deleted listener")
                }
            }
        }
        Ok(Self::gone())
    }

    /// Teardown, last step: the target group once the listener is gone, then the placement and
    /// the shop itself. A crash anywhere here is resumed by the next run: every step is
    /// idempotent and the shop row goes last.
    async fn delete_target_group(&self, view: &ShopView) -> Result<(), Blocked> {
        if !Self::deleted(view, ResourceKind::Listener) {
            return Err(Blocked::waiting(
                "WaitingForListenerDeletion",
                "the listener goes first",
            ));
        }
        let shop = view.record.spec.shop_domain.as_str();
        if let Some(placed) = &view.placement {
            let lb = self.cloud.load_balancing(view.record.spec.region.as_str());
            let name =
                reconcilers::names::target_group_name(&view.record.spec.shop_domain, placed.port);
            let owner = self.owner(view, ResourceKind::TargetGroup);
            let known = lb.list_target_groups().await?;
            for group in known.iter().filter(|g| g.name == name) {
                let tags = reconcilers::cloud::tags_of(lb.as_ref(), &group.arn).await?;
                if Owner::from_tags(&tags).as_ref() != Some(&owner) {
                    continue;
                }
                match lb.delete_target_group(&group.arn).await {
                    Err(error) if !error.is_not_found() => return Err(error.into()),
                    _ => tracing::info!(shop, target_group = %group.arn, "deleted target group"),
                }
            }
        }
        // TODO(#4): the nginx file, the shop's process and its artifact go here too.
        if self.store.remove_shop(shop, now_millis()).await? {
            tracing::info!(shop, "removed shop after teardown");
        }
        Ok(())
    }
}

/// Wakes keys on changes: a spec change wakes every kind of the shop; a status change wakes
/// its other kinds.
async fn feed(
    mut changes: broadcast::Receiver<Change>,
    queues: Vec<(ResourceKind, Arc<WorkQueue<ShopKey>>)>,
) {
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "change feed fell behind; resyncs will catch up");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for (kind, queue) in &queues {
            // Creation waits on the kinds before; teardown on the kinds after: a kind's status
            // change wakes every other kind of the shop. Unchanged status is never rewritten,
            // so this settles.
            let wake = match &change {
                Change::Spec(_) => true,
                Change::Status(_, Some(changed)) => changed != kind,
                Change::Status(_, None) => false,
            };
            if wake {
                queue.spec_changed(ShopKey {
                    shop: change.shop().to_owned(),
                    kind: *kind,
                });
            }
        }
    }
}

fn no_room(error: NoRoom) -> Blocked {
    Blocked {
        reason: error.reason(),
        message: error.to_string(),
        outcome: Outcome::Wait("no_room"),
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one argument per field of the status"
)]
fn status_of(
    kind: ResourceKind,
    view: &ShopView,
    desired: String,
    observed: String,
    sync: SyncState,
    health: Health,
    reason: &str,
    message: String,
    attempts: u32,
) -> ResourceStatus {
    ResourceStatus {
        kind,
        desired,
        observed,
        sync,
        health,
        reason: reason.to_owned(),
        message,
        observed_generation: view.record.generation,
        last_transition: now_millis(),
        attempts,
        next_attempt_at: None,
    }
}

/// Equal but for the transition time.
fn same_status(a: &ResourceStatus, b: &ResourceStatus) -> bool {
    ResourceStatus {
        last_transition: 0,
        ..a.clone()
    } == ResourceStatus {
        last_transition: 0,
        ..b.clone()
    }
}
