//! The store: desired specs, configuration tables and observed status, behind one interface
//! with two implementations (embedded SQLite, PostgreSQL for production). Only this module
//! holds SQL; both backends share their statements through [`common`] and keep their own
//! migrations under `migrations/`.

use std::sync::Arc;

use async_trait::async_trait;
use reconcilers::certificate::{Budget, BudgetExhausted, BudgetLimit, CertificateRecord};
use reconcilers::config::{InstanceGroup, RegionConfig};
use reconcilers::patching::{FleetId, History, InstanceResult, PatchPolicy, PatchRun, RunState};
use reconcilers::placement::Placed;
use reconcilers::spec::{ShopRecord, ShopSpec};
use reconcilers::status::{ResourceKind, ResourceStatus};
use tokio::sync::broadcast;

mod common;
mod postgres;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A store failure, classified for the gRPC boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write contradicts stored state (a taken custom domain, a region still in use).
    #[error("{0}")]
    Conflict(String),
    /// The write is not allowed in the shop's current state (being deleted, other region).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{operation}")]
    Database {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored {what} is unreadable: {message}")]
    Corrupt { what: &'static str, message: String },
    #[error("apply migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("open database {url}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
}

/// What changed about a shop, as announced to subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The spec or the placement changed: any resource of the shop may have work.
    Spec(String),
    /// A resource's status changed (`None`: the shop's readiness): resources that depend on it
    /// may have work.
    Status(String, Option<ResourceKind>),
}

impl Change {
    pub fn shop(&self) -> &str {
        match self {
            Change::Spec(shop) | Change::Status(shop, _) => shop,
        }
    }

    /// The notification payload: `spec <shop>`, `status <kind> <shop>` or `status - <shop>`.
    pub fn encode(&self) -> String {
        match self {
            Change::Spec(shop) => format!("spec {shop}"),
            Change::Status(shop, kind) => {
                format!("status {} {shop}", kind.map_or("-", ResourceKind::as_str))
            }
        }
    }

    pub fn decode(payload: &str) -> Option<Self> {
        let mut words = payload.split(' ');
        match (words.next()?, words.next()?, words.next(), words.next()) {
            ("spec", shop, None, None) => Some(Change::Spec(shop.to_owned())),
            ("status", "-", Some(shop), None) => Some(Change::Status(shop.to_owned(), None)),
            ("status", kind, Some(shop), None) => {
                Some(Change::Status(shop.to_owned(), Some(kind.parse().ok()?)))
            }
            _ => None,
        }
    }
}

/// The result of recording a deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployOutcome {
    pub record: ShopRecord,
    /// False when the stored spec was already identical (the generation did not move).
    pub changed: bool,
}

/// Where a shop runs: its instance group, NLB and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub instance_group: String,
    pub nlb_arn: String,
    pub port: u16,
}

/// A shop as operators see it: spec, the status of each resource, placement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShopView {
    pub record: ShopRecord,
    pub resources: Vec<ResourceStatus>,
    pub placement: Option<Placement>,
    /// Whether reconcilers last found the shop converged for its current generation.
    pub ready: bool,
    /// Set while an operator paused the shop or its region: the loops leave it alone.
    pub pause: Option<Pause>,
}

/// Why the loops leave a shop alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    /// True when the shop's region is paused (a region pause wins over a shop pause).
    pub region: bool,
    pub reason: String,
    pub since: i64,
}

/// One entry of a shop's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShopEvent {
    pub at: i64,
    pub generation: i64,
    /// `spec` for the write path, else the resource kind that acted.
    pub source: String,
    pub reason: String,
    pub message: String,
}

/// How many shops are in each condition, for metrics. A shop being deleted counts only as
/// deleting, whatever its Ready flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShopCounts {
    pub ready: u64,
    pub not_ready: u64,
    pub deleting: u64,
}

/// A page request over shops, ordered by shop domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShopQuery {
    pub region: Option<String>,
    pub only_not_ready: bool,
    /// Shops whose domain sorts after this one.
    pub after: Option<String>,
    pub limit: u32,
}

/// One page of shops; `next_after` is set when more may follow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShopPage {
    pub shops: Vec<ShopView>,
    pub next_after: Option<String>,
}

/// A replica's claim on a shop: while it runs, no other replica reconciles the shop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub shop: String,
    pub holder: String,
    /// Moves whenever the claim changes hands or lapses; checked before every mutation.
    pub epoch: i64,
    /// How long the claim still runs, by the database's clock.
    pub remaining_ms: i64,
}

/// The answer to a lease claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    Granted(Lease),
    /// Another replica holds the shop (or is claiming it this instant: `remaining_ms` 0).
    Held {
        holder: String,
        remaining_ms: i64,
    },
}

/// What the replicas' heartbeats say, for sharing the shops evenly between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Census {
    /// Replicas whose heartbeat is younger than one lease time and not older than the asking
    /// replica's first (so a replica restarted after a crash does not count the one it
    /// replaces), the asking one included.
    pub live_replicas: u32,
    /// The shops the replicas share: every shop not paused, by itself or by its region.
    pub shops: u32,
}

/// What a reconciler is about to ask of the cloud, written before the call (see
/// `migrations/*/0002_leases_intents.sql`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    pub shop: String,
    pub kind: ResourceKind,
    /// What the intent competes for (the CodeDeploy group of a deployment), or empty.
    pub scope: String,
    pub desired: String,
    /// The cloud's id for the work, once the call returned it.
    pub external_id: Option<String>,
    /// When the intent was first recorded: its place in its scope's queue.
    pub created_at: i64,
    pub updated_at: i64,
}

/// An HTTP-01 challenge in flight: what the responder of any replica answers for its token.
#[derive(Clone, PartialEq, Eq)]
pub struct AcmeChallenge {
    /// The last path segment of `/.well-known/acme-challenge/<token>`.
    pub token: String,
    pub domain: String,
    pub key_authorization: String,
    /// Milliseconds since the epoch; an expired challenge is no longer answered.
    pub expires_at: i64,
}

impl std::fmt::Debug for AcmeChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeChallenge")
            .field("token", &self.token)
            .field("domain", &self.domain)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A fleet's patch policy and what its runs did, for the patch loop, status and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetPatchStatus {
    pub policy: PatchPolicy,
    /// The newest run of any state, with its per-instance results.
    pub last_run: Option<PatchRun>,
    /// The newest successful run (without its results).
    pub last_success: Option<PatchRun>,
}

impl FleetPatchStatus {
    /// What the schedule needs of the runs.
    pub fn history(&self) -> History {
        History {
            last_attempt: self.last_run.as_ref().map(|run| run.started_at),
            last_success: self.last_success.as_ref().map(|run| run.started_at),
        }
    }

    /// The run in progress, if any.
    pub fn running(&self) -> Option<&PatchRun> {
        self.last_run
            .as_ref()
            .filter(|run| run.state == RunState::Running)
    }
}

/// The store interface. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn put_region_config(&self, config: &RegionConfig, now: i64) -> Result<RegionConfig>;
    async fn get_region_config(&self, region: &str) -> Result<Option<RegionConfig>>;
    async fn list_region_configs(&self) -> Result<Vec<RegionConfig>>;
    /// Fails with a conflict while shops or instance groups still use the region.
    async fn delete_region_config(&self, region: &str) -> Result<bool>;

    async fn put_instance_group(&self, group: &InstanceGroup, now: i64) -> Result<InstanceGroup>;
    async fn get_instance_group(&self, name: &str) -> Result<Option<InstanceGroup>>;
    async fn list_instance_groups(&self, region: Option<&str>) -> Result<Vec<InstanceGroup>>;
    /// Fails with a conflict while shops are placed on the group.
    async fn delete_instance_group(&self, name: &str) -> Result<bool>;

    /// Records the desired spec; bumps the generation only when it differs from the stored one.
    async fn deploy_shop(&self, spec: &ShopSpec, now: i64) -> Result<DeployOutcome>;
    /// Bumps the shop's restart generation.
    async fn restart_shop(&self, shop_domain: &str, region: &str, now: i64) -> Result<ShopRecord>;
    /// Marks the shop for deletion (idempotent).
    async fn delete_shop(&self, shop_domain: &str, now: i64) -> Result<ShopRecord>;
    async fn get_shop(&self, shop_domain: &str) -> Result<Option<ShopView>>;
    async fn list_shops(&self, query: &ShopQuery) -> Result<ShopPage>;
    /// Shops by condition, in one aggregate query.
    async fn count_shops(&self) -> Result<ShopCounts>;
    /// The newest `limit` events of a shop, oldest first.
    async fn shop_events(&self, shop_domain: &str, limit: u32) -> Result<Vec<ShopEvent>>;

    /// Pauses (or resumes) reconciliation of one shop, with a history event; announces a spec
    /// change so the loops look at once. False when the shop was already in that state (a new
    /// reason for a paused shop is recorded). Not a spec change: the generation stays.
    async fn set_shop_paused(
        &self,
        shop_domain: &str,
        paused: bool,
        reason: &str,
        now: i64,
    ) -> Result<bool>;
    /// Pauses (or resumes) every shop of a region, with a history event per shop, and
    /// announces a spec change of each so a resume takes effect at once. False when the region
    /// was already in that state.
    async fn set_region_paused(
        &self,
        region: &str,
        paused: bool,
        reason: &str,
        now: i64,
    ) -> Result<bool>;
    /// The regions an operator paused, for the region-level loops.
    async fn paused_regions(&self) -> Result<Vec<String>>;

    /// Removes a shop whose deletion was requested, once its teardown is done, with its status
    /// and placement (its history stays). False when there was no such shop.
    async fn remove_shop(&self, shop_domain: &str, now: i64) -> Result<bool>;

    /// Records the status of one resource (reconcilers only).
    async fn put_resource_status(&self, shop_domain: &str, status: &ResourceStatus) -> Result<()>;

    /// Records whether the shop is converged for `generation` (reconcilers only).
    async fn set_shop_ready(
        &self,
        shop_domain: &str,
        ready: bool,
        generation: i64,
        now: i64,
    ) -> Result<()>;

    /// Placements of every shop on the groups of a region.
    async fn region_placements(&self, region: &str) -> Result<Vec<Placed>>;
    /// Records where a shop runs. A shop already placed keeps its placement (returned as it
    /// is); a port taken on the NLB or the group in the meantime is a conflict, and the caller
    /// chooses again.
    async fn place_shop(&self, shop_domain: &str, placement: &Placed, now: i64) -> Result<Placed>;
    /// Frees a shop's port (after its teardown); false when it had none.
    async fn release_placement(&self, shop_domain: &str) -> Result<bool>;

    /// Claims `shop` for `holder` for `ttl_ms` (renewing the holder's own claim), unless
    /// another holder's claim still runs. Never waits on another replica's claim.
    async fn claim_lease(&self, shop_domain: &str, holder: &str, ttl_ms: i64) -> Result<Claim>;
    /// The fencing check: true when `lease` is still the shop's current, unexpired claim (by
    /// the database clock), which it then extends by `ttl_ms`. False means another replica may
    /// own the shop: mutate nothing.
    async fn extend_lease(&self, lease: &Lease, ttl_ms: i64) -> Result<bool>;
    /// Ends a claim early (at shutdown), so another replica can take the shop at once.
    async fn release_lease(&self, lease: &Lease) -> Result<()>;
    /// On a database only one replica may use (SQLite), ends every claim not `holder`'s: they
    /// are a crashed predecessor's, and waiting them out would stall a restarted controller
    /// for a lease time. Returns how many; on PostgreSQL, where other holders may be alive,
    /// does nothing.
    async fn lapse_predecessors_leases(&self, holder: &str) -> Result<u64>;
    /// Records that `holder` runs (by the database clock), forgets replicas silent for longer
    /// than `ttl_ms`, and counts the live replicas (see [`Census`]) and the shops they share.
    async fn heartbeat(&self, holder: &str, ttl_ms: i64) -> Result<Census>;
    /// Removes `holder`'s heartbeat (when it stops), so the others stop counting it at once.
    async fn remove_replica(&self, holder: &str) -> Result<()>;

    /// Records an intent. A new one joins the back of its scope's queue; rewriting an existing
    /// one (a newer spec, the id the cloud returned) keeps its place.
    async fn record_intent(&self, intent: &Intent, now: i64) -> Result<Intent>;
    async fn intent(&self, shop_domain: &str, kind: ResourceKind) -> Result<Option<Intent>>;
    async fn clear_intent(&self, shop_domain: &str, kind: ResourceKind) -> Result<()>;
    /// The intents of `kind` competing for `scope`, oldest first.
    async fn intent_queue(
        &self,
        kind: ResourceKind,
        scope: &str,
        limit: u32,
    ) -> Result<Vec<Intent>>;

    /// The certificate row of a custom domain.
    async fn certificate(&self, domain: &str) -> Result<Option<CertificateRecord>>;
    /// Every certificate row of a shop: its current custom domain's and any earlier one's
    /// still being torn down.
    async fn shop_certificates(&self, shop_domain: &str) -> Result<Vec<CertificateRecord>>;
    /// Every certificate row (for the expiry metrics), in domain order.
    async fn list_certificates(&self) -> Result<Vec<CertificateRecord>>;
    /// Writes a certificate row (insert or replace by domain).
    async fn put_certificate(&self, record: &CertificateRecord) -> Result<()>;
    async fn delete_certificate(&self, domain: &str) -> Result<bool>;

    /// Takes one event of a CA rate-limit budget if the window has room for it, atomically
    /// across replicas; otherwise says when the oldest counted event leaves the window.
    async fn take_budget(
        &self,
        budget: Budget,
        subject: &str,
        limit: BudgetLimit,
        now: i64,
    ) -> Result<Result<(), BudgetExhausted>>;
    /// Whether the window has room for one more event, without taking it (failed validations
    /// and duplicate certificates are counted after the fact, by [`Store::record_budget_event`]).
    async fn check_budget(
        &self,
        budget: Budget,
        subject: &str,
        limit: BudgetLimit,
        now: i64,
    ) -> Result<Result<(), BudgetExhausted>>;
    async fn record_budget_event(&self, budget: Budget, subject: &str, now: i64) -> Result<()>;
    /// The sealed ACME account credentials of a CA directory, when an account was stored.
    async fn acme_account(&self, directory_url: &str) -> Result<Option<String>>;
    /// Stores sealed account credentials unless the directory already has an account, and
    /// returns the stored ones: ours, or those of the replica that stored first (two replicas
    /// starting together end up on one account).
    async fn put_acme_account(&self, directory_url: &str, sealed: &str, now: i64)
    -> Result<String>;

    /// Records (or replaces) the answer to a challenge token.
    async fn put_challenge(&self, challenge: &AcmeChallenge) -> Result<()>;
    /// The key authorization of an unexpired challenge token.
    async fn challenge_response(&self, token: &str, now: i64) -> Result<Option<String>>;
    /// Forgets every challenge of a domain (its order ended); returns how many.
    async fn remove_challenges(&self, domain: &str) -> Result<u64>;
    /// Forgets challenges that expired before `now`; returns how many.
    async fn purge_expired_challenges(&self, now: i64) -> Result<u64>;
    /// Records a fleet's patch policy (replacing the one it had).
    async fn put_patch_policy(&self, policy: &PatchPolicy, now: i64) -> Result<PatchPolicy>;
    /// Removes a fleet's policy; its runs stay as history, a run in progress ended as
    /// `stopped` (the patch loop stops at its next step). False when it had none.
    async fn delete_patch_policy(&self, fleet: &FleetId) -> Result<bool>;
    /// Every policy (of one region, when given) with its fleet's last run and last success,
    /// ordered by fleet.
    async fn patch_status(&self, region: Option<&str>) -> Result<Vec<FleetPatchStatus>>;
    /// Starts a run over `instances`; with `refused`, records a run that ends at once in the
    /// `refused` state with that reason. A conflict while another run of the fleet is in
    /// progress.
    async fn start_patch_run(
        &self,
        fleet: &FleetId,
        instances: &[String],
        refused: Option<&str>,
        now: i64,
    ) -> Result<PatchRun>;
    /// Records (or updates) one instance's result in a run.
    async fn record_patch_result(&self, run_id: i64, result: &InstanceResult) -> Result<()>;
    /// Ends a run in progress; false when it was no longer running.
    async fn finish_patch_run(
        &self,
        run_id: i64,
        state: RunState,
        message: &str,
        now: i64,
    ) -> Result<bool>;
    /// The newest `limit` runs of a fleet, newest first, with their results.
    async fn patch_runs(&self, fleet: &FleetId, limit: u32) -> Result<Vec<PatchRun>>;

    /// Changes of every shop as they are committed (on PostgreSQL, by any replica).
    fn subscribe(&self) -> broadcast::Receiver<Change>;
}

/// Opens the store named by a database URL (`sqlite:` path or `postgres://`), creating a SQLite
/// file on first use, and applies migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        Ok(Arc::new(SqliteStore::open(url).await?))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_through_their_payload() {
        for change in [
            Change::Spec("a.es-hs.com".to_owned()),
            Change::Status("a.es-hs.com".to_owned(), Some(ResourceKind::TargetGroup)),
            Change::Status("a.es-hs.com".to_owned(), None),
        ] {
            assert_eq!(Change::decode(&change.encode()), Some(change));
        }
        for junk in ["", "spec", "status x a.com", "spec a b", "other a.com"] {
            assert_eq!(Change::decode(junk), None, "{junk}");
        }
    }
}
