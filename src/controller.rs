//! The controller: one reconcile loop per resource kind, each with its own [`WorkQueue`], fed
//! by the store's change feed (a spec change wakes every kind of the shop; a status change
//! wakes its other kinds) and by periodic resyncs. A reconcile loads the shop from the store,
//! runs the resource's observe / diff / apply against the cloud and records what it saw as
//! status. It decides nothing about timing: it returns an [`Outcome`].
//!
//! The loops run `artifact`, `deployment`, placement, `target_group`, `listener`,
//! `nginx_config` and `restart`, and the teardown in reverse order when a shop is deleted (the
//! shop row goes last, so a crash resumes the teardown).
//!
//! Replicas share shops through leases: a reconcile first claims its shop (renewing a claim
//! it holds), and every cloud mutation is preceded by [`Controller::fence`], which extends the
//! claim only if it is still this replica's, by the database's clock. A replica that slept past
//! its lease therefore changes nothing; a shop another replica holds is looked at again when
//! that claim would lapse. Replicas keep about an even share of the shops (`leases.rs`): one
//! holding more hands claims back between reconciles, and the others take them.
//!
//! Reads go through [`observe::Observations`]: listings shared by every shop of a region for a
//! short while, so a resync does not read every target group once per shop.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reconcilers::cloud::{CloudError, CloudProvider, ErrorKind, HealthCheck, ListenerSpec, Owner};
use reconcilers::config::RegionConfig;
use reconcilers::placement::{self, Candidate, NoRoom, Placed};
use reconcilers::status::{Health, ResourceKind, ResourceStatus, SyncState};
use reconcilers::{listener, target_group};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use crate::runtime::{LoopConfig, Outcome, QueueStats, ShopKey, WorkQueue, run};
use crate::store::{Change, Claim, Lease, ShopQuery, ShopView, Store, StoreError, now_millis};

mod artifact;
mod certificate;
mod challenge_listener;
mod command;
mod deployment;
mod fenced;
mod leases;
mod nginx_config;
mod observe;
mod patching;
mod pause;
mod plan;
mod restart;

pub use certificate::{CertificateSettings, DEFAULT_CERTIFICATE_SLOTS};
pub use challenge_listener::{ChallengeListenerState, lease_key as challenge_listener_lease_key};
pub use leases::FairShare;
pub use plan::{Plan, PlannedStep};

/// The kinds the controller reconciles, in dependency order.
pub const KINDS: [ResourceKind; 7] = [
    ResourceKind::Artifact,
    ResourceKind::Deployment,
    ResourceKind::TargetGroup,
    ResourceKind::Listener,
    ResourceKind::NginxConfig,
    ResourceKind::Restart,
    ResourceKind::Certificate,
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
    pub lease: LeaseConfig,
    /// How often the patch loop looks for due and interrupted patch runs (issue #6).
    pub patch_tick: Duration,
}

/// How replicas share shops.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// This replica's name in the lease table; unique per running process.
    pub holder: String,
    /// How long a claim runs without being renewed. A reconcile renews it at every mutation,
    /// so it bounds how long a dead replica's shops wait, not how long a reconcile may take.
    pub ttl: Duration,
}

impl LeaseConfig {
    /// A holder name unique to this process: the host, the process id and the start time.
    pub fn for_this_process(ttl: Duration) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".to_owned());
        let started = now_millis();
        Self {
            holder: format!("{host}-{}-{started}", std::process::id()),
            ttl,
        }
    }

    fn ttl_millis(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// What claiming a shop gave this replica.
enum Claimed {
    Mine(Lease),
    /// Another replica's claim runs this much longer.
    HeldFor(Duration),
}

/// The reconcile loops of every kind.
pub struct Controller {
    store: Arc<dyn Store>,
    cloud: Arc<dyn CloudProvider>,
    config: ControllerConfig,
    leases: Mutex<leases::Leases>,
    observations: observe::Observations,
    /// The CA and what the certificate kind needs with it; `None` runs no ACME.
    certificates: Option<certificate::CertificateSettings>,
    /// What the last challenge listener pass found, by region.
    challenge_listeners: Mutex<BTreeMap<String, ChallengeListenerState>>,
    /// The loops' queues, once running: a reconcile may wake another shop's key.
    queues: OnceLock<Vec<(ResourceKind, Arc<WorkQueue<ShopKey>>)>>,
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

/// What an observe and diff found: the desired object, AWS's, and the plan between them.
struct Seen<D, O, C> {
    desired: D,
    observed: Option<O>,
    plan: Vec<C>,
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
            lease: LeaseConfig::for_this_process(DEFAULT_LEASE_TTL),
            patch_tick: DEFAULT_PATCH_TICK,
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
            cloud: Arc::new(fenced::FencedCloud(cloud)),
            observations: observe::Observations::new(config.loops.resync),
            config,
            leases: Mutex::new(leases::Leases::default()),
            certificates: None,
            challenge_listeners: Mutex::new(BTreeMap::new()),
            queues: OnceLock::new(),
        }
    }

    /// Issues custom domains' certificates through this CA.
    pub fn with_certificates(mut self, settings: certificate::CertificateSettings) -> Self {
        self.certificates = Some(settings);
        self
    }

    /// Each loop's queue figures, for metrics; empty until [`Controller::run`] starts.
    pub fn loop_stats(&self) -> Vec<(ResourceKind, QueueStats)> {
        let queues = self.queues.get().map_or(&[][..], Vec::as_slice);
        queues
            .iter()
            .map(|(kind, queue)| (*kind, queue.stats()))
            .collect()
    }

    /// How many claims (shops, regions' loops and fleets) this replica holds that have not
    /// lapsed, for metrics.
    pub fn leases_held(&self) -> usize {
        let now = tokio::time::Instant::now();
        self.lock_leases().running_claims(now).count()
    }

    /// Wakes one key of this replica's loops, as a spec change would.
    fn wake(&self, shop: &str, kind: ResourceKind) {
        let Some(queues) = self.queues.get() else {
            return;
        };
        for (queued_kind, queue) in queues {
            if *queued_kind == kind {
                queue.spec_changed(ShopKey {
                    shop: shop.to_owned(),
                    kind,
                });
            }
        }
    }

    /// Runs every loop until `shutdown` resolves, then lets in-flight reconciles finish.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send + 'static) {
        let queues: Vec<(ResourceKind, Arc<WorkQueue<ShopKey>>)> = KINDS
            .iter()
            .map(|kind| (*kind, Arc::new(WorkQueue::new())))
            .collect();
        let _ = self.queues.set(queues.clone());
        let (stop, _) = broadcast::channel::<()>(1);
        match self
            .store
            .lapse_predecessors_leases(&self.config.lease.holder)
            .await
        {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "took over a previous process's claims"),
            Err(error) => {
                tracing::warn!(%error, "could not end a previous process's claims; they lapse by themselves");
            }
        }
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
                async move { fenced::scope(controller.reconcile(key)).await }
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
        let mut region_loops = JoinSet::new();
        tracing::info!("starting challenge listener loop");
        region_loops.spawn(self.clone().run_challenge_listeners(stop.subscribe()));
        region_loops.spawn(self.clone().patch_loop(stop.subscribe()));
        region_loops.spawn(self.clone().heartbeat_loop(stop.subscribe()));
        shutdown.await;
        let _ = stop.send(());
        while loops.join_next().await.is_some() {}
        while region_loops.join_next().await.is_some() {}
        change_feed.abort_all();
        self.release_leases().await;
    }

    /// Hands every claim back, so other replicas take the shops at once instead of after
    /// the lease time.
    async fn release_leases(&self) {
        let held: Vec<Lease> = self
            .lock_leases()
            .held
            .drain()
            .map(|(_, held)| held.lease)
            .collect();
        for lease in &held {
            if let Err(error) = self.store.release_lease(lease).await {
                tracing::warn!(shop = %lease.shop, %error, "could not release lease; it lapses by itself");
            }
        }
        if !held.is_empty() {
            tracing::info!(count = held.len(), "released leases");
        }
    }

    /// Claims the key (a shop, a region's loop, a fleet) for this replica, or says how long
    /// another replica's claim runs. A shop's reconcile claims through
    /// [`Controller::claim_shop`], which may hand the claim back instead of renewing it.
    async fn claim(&self, shop: &str) -> Result<Claimed, StoreError> {
        let now = tokio::time::Instant::now();
        if let Some(held) = self.lock_leases().held.get(shop)
            && now < held.renew_at
        {
            return Ok(Claimed::Mine(held.lease.clone()));
        }
        let lease_config = &self.config.lease;
        let claim = self
            .store
            .claim_lease(shop, &lease_config.holder, lease_config.ttl_millis())
            .await?;
        let mut leases = self.lock_leases();
        match claim {
            Claim::Granted(lease) => {
                leases.held.insert(
                    shop.to_owned(),
                    leases::HeldLease {
                        lease: lease.clone(),
                        renew_at: now + lease_config.ttl / 2,
                        expires_at: now + lease_config.ttl,
                    },
                );
                Ok(Claimed::Mine(lease))
            }
            Claim::Held {
                holder,
                remaining_ms,
            } => {
                leases.held.remove(shop);
                tracing::debug!(
                    shop,
                    holder,
                    remaining_ms,
                    "shop is held by another replica"
                );
                Ok(Claimed::HeldFor(Duration::from_millis(
                    u64::try_from(remaining_ms).unwrap_or(0),
                )))
            }
        }
    }

    /// The fencing check before a mutation: extends the claim if it is still this replica's
    /// (by the database clock), else stops the reconcile before it changes anything.
    ///
    /// The extension runs a TTL from the database's now, which is after `asked`; so the claim
    /// covers this replica until at least `asked` + TTL. A replica paused (SIGSTOP, a long GC
    /// of its VM, a stalled node) between sending the extension and reading its answer could
    /// otherwise wake up past that point and still mutate: an answer that took more than half
    /// the TTL is not trusted, and the caller changes nothing this time.
    ///
    /// A successful fence leaves a deadline half a lease after `asked` that every mutation of
    /// the reconcile is checked against again right before it is transmitted, after any
    /// rate-limit wait and before every SDK retry (`fenced.rs`, `crate::fencing`).
    async fn fence(&self, lease: &Lease) -> Result<(), Blocked> {
        let lease_config = &self.config.lease;
        let asked = std::time::Instant::now();
        let asked_at = tokio::time::Instant::now();
        let extended = self
            .store
            .extend_lease(lease, lease_config.ttl_millis())
            .await?;
        let waited = asked.elapsed();
        if extended && waited >= lease_config.ttl / 2 {
            tracing::warn!(
                shop = %lease.shop,
                epoch = lease.epoch,
                waited_ms = waited.as_millis(),
                "lease check outlived half the lease; changing nothing"
            );
            return Err(Blocked {
                reason: "LeaseCheckSlow",
                message: "the lease check took over half the lease time; nothing was changed"
                    .to_owned(),
                outcome: Outcome::Requeue(Duration::ZERO),
            });
        }
        if extended {
            fenced::fenced(asked, lease_config.ttl);
            if let Some(held) = self.lock_leases().held.get_mut(&lease.shop)
                && held.lease.epoch == lease.epoch
            {
                held.renew_at = tokio::time::Instant::now() + lease_config.ttl / 2;
                held.expires_at = asked_at + lease_config.ttl;
            }
            return Ok(());
        }
        self.lock_leases().held.remove(&lease.shop);
        tracing::warn!(shop = %lease.shop, epoch = lease.epoch, "lease lost before a mutation; changing nothing");
        Err(Blocked {
            reason: "LeaseLost",
            message: "another replica may hold the shop; nothing was changed".to_owned(),
            outcome: Outcome::Requeue(lease_config.ttl),
        })
    }

    fn forget_lease(&self, shop: &str) {
        self.lock_leases().forget(shop);
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
            Ok(None) => {
                self.forget_lease(&key.shop);
                return Outcome::Gone;
            }
            Err(error) => {
                tracing::warn!(shop = %key.shop, %error, "could not load shop");
                return Outcome::Retry("store");
            }
        };
        tracing::Span::current().record("generation", view.record.generation);
        if let Some(pause) = &view.pause {
            return self.paused(&view, key.kind, pause).await;
        }
        // Counted from before the claim to the end, so the claim is never handed back to even
        // the replicas' share while a reconcile of the shop may still mutate under it.
        let _running = self.running(&key.shop);
        let lease = match self.claim_shop(&key.shop).await {
            Ok(Claimed::Mine(lease)) => lease,
            // Looked at again when that claim would lapse (its holder may have died), or when
            // this replica stops leaving a shop it handed back to the others.
            Ok(Claimed::HeldFor(remaining)) => return Outcome::Requeue(remaining + LEASE_SLACK),
            Err(error) => {
                tracing::warn!(shop = %key.shop, %error, "could not claim shop");
                return Outcome::Retry("store");
            }
        };
        let lease = &lease;
        let result = match (key.kind, view.record.is_deleting()) {
            (ResourceKind::TargetGroup, false) => self.target_group(&view, lease).await,
            (ResourceKind::Listener, false) => self.listener(&view, lease).await,
            (ResourceKind::Listener, true) => self.delete_listener(&view, lease).await,
            (ResourceKind::NginxConfig, false) => self.nginx_config(&view, lease).await,
            (ResourceKind::NginxConfig, true) => self.delete_nginx_config(&view, lease).await,
            (ResourceKind::Artifact, false) => self.artifact(&view, lease).await,
            // Artifacts are kept per source version for rollbacks; a bucket lifecycle rule
            // expires them.
            (ResourceKind::Artifact, true) => Ok(Self::gone()),
            (ResourceKind::Deployment, false) => self.deployment(&view, lease).await,
            (ResourceKind::Deployment, true) => match self.uninstall(&view, lease).await {
                Ok(()) => {
                    self.forget_lease(&key.shop);
                    return Outcome::Gone;
                }
                Err(blocked) => Err(blocked),
            },
            (ResourceKind::Restart, false) => self.restart(&view, lease).await,
            // Nothing of a restart outlives the shop's process.
            (ResourceKind::Restart, true) => Ok(Self::gone()),
            (ResourceKind::TargetGroup, true) => self.delete_target_group(&view, lease).await,
            (ResourceKind::Certificate, deleting) => {
                return self.certificate_outcome(&view, lease, deleting).await;
            }
        };
        self.record(&view, lease, key.kind, result).await
    }

    /// The certificate kind's run. A shop that never had a custom domain has nothing to look
    /// at and records no status; a converged certificate is looked at again at its renewal.
    async fn certificate_outcome(&self, view: &ShopView, lease: &Lease, deleting: bool) -> Outcome {
        let kind = ResourceKind::Certificate;
        let seen = view.resources.iter().any(|r| r.kind == kind);
        if !seen && view.record.spec.custom_domain.is_none() {
            let shop = view.record.spec.shop_domain.as_str();
            match self.has_certificates(shop).await {
                Ok(false) => return Outcome::Done,
                Ok(true) => {}
                Err(blocked) => return blocked.outcome,
            }
        }
        if deleting {
            let result = self.delete_certificates(view, lease).await;
            return self.record(view, lease, kind, result).await;
        }
        let (result, recheck) = match self.certificate(view, lease).await {
            Ok(certified) => (Ok(certified.converged), certified.recheck),
            Err(blocked) => (Err(blocked), None),
        };
        match (self.record(view, lease, kind, result).await, recheck) {
            (Outcome::Done, Some(recheck)) if recheck < self.config.loops.resync => {
                Outcome::Requeue(recheck)
            }
            (outcome, _) => outcome,
        }
    }

    /// Writes the status of one reconcile (only when it changed, so dependents are not woken
    /// for nothing) and turns it into an outcome.
    async fn record(
        &self,
        view: &ShopView,
        lease: &Lease,
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
            // A replica that lost the shop leaves its status to the new holder.
            if let Err(blocked) = self.fence(lease).await {
                return blocked.outcome;
            }
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
        // Another writer may take the chosen port first: choose again with its placement seen.
        for _ in 0..3 {
            let choice = self.choose_placement(region, &self.observations).await?;
            match self.store.place_shop(shop, &choice, now_millis()).await {
                Ok(placed) => {
                    tracing::info!(shop, group = %placed.instance_group, port = placed.port, "placed shop");
                    return Ok(placed);
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        // Other shops are being placed right now: look again soon, not on the failure
        // schedule.
        Err(Blocked {
            reason: "PlacementContended",
            message: "ports kept being taken by shops placed at the same time".to_owned(),
            outcome: Outcome::Requeue(Duration::from_millis(200)),
        })
    }

    /// Where a new shop of `region` would go now; records nothing (the plan shows it too).
    async fn choose_placement(
        &self,
        region: &RegionConfig,
        observations: &observe::Observations,
    ) -> Result<Placed, Blocked> {
        let region = region.region.as_str();
        let groups = self.store.list_instance_groups(Some(region)).await?;
        let fleet = self.cloud.fleet(region);
        let mut running = Vec::with_capacity(groups.len());
        for group in &groups {
            let instances = observations
                .instances(fleet.as_ref(), region, &group.name)
                .await?;
            running.push(instances.len());
        }
        let candidates: Vec<Candidate<'_>> = groups
            .iter()
            .zip(running)
            .map(|(group, running_instances)| Candidate {
                group,
                running_instances,
            })
            .collect();
        let placed = self.store.region_placements(region).await?;
        placement::choose(&candidates, &placed).map_err(no_room)
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

    async fn target_group(&self, view: &ShopView, lease: &Lease) -> Result<Converged, Blocked> {
        let region = self.region(view).await?;
        let placed = self.placement(view, &region).await?;
        let region_name = region.region.as_str();
        let lb = self.cloud.load_balancing(region_name);
        let seen = self
            .observe_target_group(view, region_name, &placed, &self.observations)
            .await?;
        let (desired, observed, plan) = (&seen.desired, seen.observed.as_ref(), &seen.plan);
        if let Some(target_group::Change::Replace { why }) = plan.first() {
            return Err(Blocked {
                reason: "ReplaceNeeded",
                message: why.clone(),
                outcome: Outcome::Wait("replace"),
            });
        }
        if !plan.is_empty() {
            self.fence(lease).await?;
            tracing::info!(shop = %view.record.spec.shop_domain, plan = ?plan, "applying target group plan");
        }
        let applied = target_group::apply(lb.as_ref(), desired, observed, plan).await;
        if !plan.is_empty() {
            let arn = observed.map(|o| o.group.arn.as_str());
            self.observations.changed(region_name, arn).await;
        }
        let group = applied?;
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

    /// The target group's observe and diff, shared by the reconcile and the plan: reads only.
    async fn observe_target_group(
        &self,
        view: &ShopView,
        region: &str,
        placed: &Placed,
        observations: &observe::Observations,
    ) -> Result<Seen<target_group::Desired, target_group::Observed, target_group::Change>, Blocked>
    {
        let lb = self.cloud.load_balancing(region);
        let nlb = observations
            .load_balancer(lb.as_ref(), region, &placed.nlb_arn)
            .await?;
        let vpc_id = nlb.map(|n| n.vpc_id).unwrap_or_default();
        let fleet = self.cloud.fleet(region);
        let instances = observations
            .instances(fleet.as_ref(), region, &placed.instance_group)
            .await?;
        let owner = self.owner(view, ResourceKind::TargetGroup);
        let desired = target_group::desired(
            &view.record.spec.shop_domain,
            placed,
            &vpc_id,
            &owner,
            &instances,
            self.config.health_check.clone(),
        );
        let known = observations.target_groups(lb.as_ref(), region).await?;
        let observed =
            target_group::observe(lb.as_ref(), &desired, &known.items, &known.tags).await?;
        let plan = target_group::diff(&desired, observed.as_ref());
        Ok(Seen {
            desired,
            observed,
            plan,
        })
    }

    async fn listener(&self, view: &ShopView, lease: &Lease) -> Result<Converged, Blocked> {
        if !Self::synced(view, ResourceKind::TargetGroup) {
            return Err(Blocked::waiting(
                "WaitingForTargetGroup",
                "the shop's target group is not ready yet",
            ));
        }
        let region = self.region(view).await?;
        let placed = self.placement(view, &region).await?;
        let region_name = region.region.as_str();
        let lb = self.cloud.load_balancing(region_name);
        let name =
            reconcilers::names::target_group_name(&view.record.spec.shop_domain, placed.port);
        let known = self
            .observations
            .target_groups(lb.as_ref(), region_name)
            .await?;
        let Some(group) = known.items.iter().find(|g| g.name == name) else {
            return Err(Blocked::waiting(
                "TargetGroupMissing",
                &format!("target group {name} is gone; waiting for it to be recreated"),
            ));
        };

        let seen = self
            .observe_listener(view, region_name, &placed, &group.arn, &self.observations)
            .await?;
        let (desired, observed, plan) = (&seen.desired, seen.observed.as_ref(), &seen.plan);
        if let Some(listener::Change::Conflict { why }) = plan.first() {
            return Err(Blocked {
                reason: "PortConflict",
                message: why.clone(),
                outcome: Outcome::Wait("conflict"),
            });
        }
        if !plan.is_empty() {
            self.fence(lease).await?;
            tracing::info!(shop = %view.record.spec.shop_domain, plan = ?plan, "applying listener plan");
        }
        let applied = listener::apply(lb.as_ref(), desired, observed, plan).await;
        if !plan.is_empty() {
            let arn = observed.map(|o| o.listener.arn.as_str());
            self.observations.changed(region_name, arn).await;
        }
        let listener = applied?;
        Ok(Converged {
            desired: format!("TCP :{} -> {name}", placed.port),
            observed: listener.map_or_else(String::new, |l| l.arn),
            reason: "",
        })
    }

    /// The listener's observe and diff, shared by the reconcile and the plan: reads only.
    async fn observe_listener(
        &self,
        view: &ShopView,
        region: &str,
        placed: &Placed,
        target_group_arn: &str,
        observations: &observe::Observations,
    ) -> Result<Seen<ListenerSpec, listener::Observed, listener::Change>, Blocked> {
        let lb = self.cloud.load_balancing(region);
        let owner = self.owner(view, ResourceKind::Listener);
        let desired = listener::desired(&placed.nlb_arn, placed.port, target_group_arn, &owner);
        let listeners = observations
            .listeners(lb.as_ref(), region, &placed.nlb_arn)
            .await?;
        let observed =
            listener::observe(lb.as_ref(), &desired, &listeners.items, &listeners.tags).await?;
        let plan = listener::diff(&desired, observed.as_ref());
        Ok(Seen {
            desired,
            observed,
            plan,
        })
    }
}

/// How often the patch loop looks at the patch policies.
const DEFAULT_PATCH_TICK: Duration = Duration::from_secs(60);

/// How long a claim runs unless renewed; see [`LeaseConfig::ttl`].
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);
/// Added to another replica's remaining claim before the shop is looked at again.
const LEASE_SLACK: Duration = Duration::from_secs(1);

/// The longest stopping a shop on its instances may take.
const UNINSTALL_TIMEOUT: Duration = Duration::from_secs(120);

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
    async fn delete_listener(&self, view: &ShopView, lease: &Lease) -> Result<Converged, Blocked> {
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
            self.fence(lease).await?;
            let deleted = lb.delete_listener(&found.arn).await;
            self.observations.changed(region, Some(&found.arn)).await;
            match deleted {
                Err(error) if !error.is_not_found() => return Err(error.into()),
                _ => {
                    tracing::info!(shop = %view.record.spec.shop_domain, listener = %found.arn, "deleted listener")
                }
            }
        }
        Ok(Self::gone())
    }

    /// Teardown, third step: the target group once the listener is gone.
    async fn delete_target_group(
        &self,
        view: &ShopView,
        lease: &Lease,
    ) -> Result<Converged, Blocked> {
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
                self.fence(lease).await?;
                let deleted = lb.delete_target_group(&group.arn).await;
                let region = view.record.spec.region.as_str();
                self.observations.changed(region, Some(&group.arn)).await;
                match deleted {
                    Err(error) if !error.is_not_found() => return Err(error.into()),
                    _ => tracing::info!(shop, target_group = %group.arn, "deleted target group"),
                }
            }
        }
        Ok(Self::gone())
    }

    /// Teardown, last step: once the target group is gone, the shop's process and files on its
    /// instances, then the shop itself with its placement. A crash anywhere in the teardown is
    /// resumed by the next run: every step is idempotent and the shop row goes last.
    /// Artifacts stay (a bucket lifecycle rule expires them).
    async fn uninstall(&self, view: &ShopView, lease: &Lease) -> Result<(), Blocked> {
        if !Self::deleted(view, ResourceKind::TargetGroup) {
            return Err(Blocked::waiting(
                "WaitingForTargetGroupDeletion",
                "the target group goes first",
            ));
        }
        let shop = view.record.spec.shop_domain.as_str();
        let region = view.record.spec.region.as_str();
        if self.has_certificates(shop).await? {
            return Err(Blocked::waiting(
                "WaitingForCertificateDeletion",
                "the shop's certificates go first",
            ));
        }
        // A deployment of ours still running would install the shop again behind us.
        if let Some(id) = self
            .store
            .intent(shop, ResourceKind::Deployment)
            .await?
            .as_ref()
            .and_then(deployment::started_id)
            .map(str::to_owned)
        {
            match self.cloud.deployments(region).get_deployment(&id).await {
                Ok(deployment) if deployment.status.is_active() => {
                    return Err(Blocked {
                        reason: "WaitingForDeployment",
                        message: format!("deployment {id} is still {:?}", deployment.status),
                        outcome: Outcome::Requeue(self.deploy_poll()),
                    });
                }
                Err(error) if !error.is_not_found() => return Err(error.into()),
                _ => {}
            }
        }
        if let Some(placed) = &view.placement {
            let instances = self.instance_ids(region, &placed.instance_group).await?;
            if !instances.is_empty() {
                let command = reconcilers::shell::RestartCommand::new(
                    &view.record.spec.shop_domain,
                    placed.port,
                );
                let ssm = self.cloud.run_command(region);
                self.fence(lease).await?;
                command::run_on(
                    ssm.as_ref(),
                    &instances,
                    command::Task::Uninstall,
                    command.uninstall(),
                    command.describe("uninstall"),
                    UNINSTALL_TIMEOUT,
                )
                .await?;
                tracing::info!(
                    shop,
                    instances = instances.len(),
                    "stopped shop on its instances"
                );
            }
        }
        self.fence(lease).await?;
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
