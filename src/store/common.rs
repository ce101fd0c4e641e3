//! Statements both backends share. SQLite accepts PostgreSQL's `$1` placeholders, `RETURNING`,
//! `ON CONFLICT` and `IS DISTINCT FROM`, so one text serves both; [`impl_store!`] expands the
//! [`Store`](super::Store) implementation once per backend because sqlx types its queries by
//! database. Backend-specific behaviour (connection set-up, migrations, notifications) stays in
//! `sqlite.rs` and `postgres.rs`.

use reconcilers::Hostname;
use reconcilers::certificate::{
    Budget, BudgetExhausted, BudgetLimit, CertificateRecord, CertificateState, WaitReason,
};
use reconcilers::config::{InstanceGroup, RegionConfig};
use reconcilers::spec::{BucketName, RegionName, ShopRecord, ShopSpec, SourceVersion};
use reconcilers::status::ResourceStatus;

use super::{Result, StoreError};

/// Region config columns, in the order [`region_from_parts`] takes them.
pub(super) const REGION_COLUMNS: &str = "region, enabled, codebuild_project, artifact_bucket, \
    codedeploy_application, proxy_name_tag, nginx_config_dir, alb_https_listener_arns, \
    global_accelerator_ips, allowed_parent_domains, updated_at, acme_responder_target_group_arn";

pub(super) const GROUP_COLUMNS: &str = "name, region, nlb_arns, port_min, port_max, capacity, \
    codedeploy_deployment_group, enabled, updated_at";

/// Shop columns qualified by the alias `s`, for joins.
pub(super) const SHOP_COLUMNS: &str = "s.shop_domain, s.region, s.source_bucket, \
    s.source_version, s.custom_domain, s.generation, s.restart_generation, \
    s.deletion_requested_at, s.created_at, s.updated_at";

/// The same columns unqualified, for `RETURNING` (SQLite allows no alias there).
pub(super) const SHOP_RETURNING: &str = "shop_domain, region, source_bucket, source_version, \
    custom_domain, generation, restart_generation, deletion_requested_at, created_at, updated_at";

pub(super) const POLICY_COLUMNS: &str = "fleet, region, enabled, interval_days, \
    window_start_hour, window_end_hour, weekdays, script, command_timeout_seconds, updated_at";

pub(super) const RUN_COLUMNS: &str =
    "id, fleet, started_at, finished_at, state, message, instances";

pub(super) const RESULT_COLUMNS: &str =
    "run_id, instance_id, state, started_at, finished_at, output";

pub(super) const STATUS_COLUMNS: &str = "shop_domain, kind, desired, observed, sync, health, \
    reason, message, observed_generation, last_transition, attempts, next_attempt_at";

pub(super) fn corrupt(what: &'static str, message: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        message: message.to_string(),
    }
}

pub(super) fn to_json(values: impl IntoIterator<Item = String>) -> String {
    let values: Vec<String> = values.into_iter().collect();
    serde_json::Value::from(values).to_string()
}

pub(super) fn from_json<T: std::str::FromStr>(what: &'static str, text: &str) -> Result<Vec<T>>
where
    T::Err: std::fmt::Display,
{
    let raw: Vec<String> = serde_json::from_str(text).map_err(|e| corrupt(what, e))?;
    raw.iter()
        .map(|value| {
            value
                .parse()
                .map_err(|e: T::Err| corrupt(what, format!("{value:?}: {e}")))
        })
        .collect()
}

/// The raw columns of a `shops` row.
pub(super) struct ShopRow {
    pub(super) shop_domain: String,
    pub(super) region: String,
    pub(super) source_bucket: String,
    pub(super) source_version: String,
    pub(super) custom_domain: Option<String>,
    pub(super) generation: i64,
    pub(super) restart_generation: i64,
    pub(super) deletion_requested_at: Option<i64>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

impl ShopRow {
    /// Parses the stored strings back into validated types: a row that no longer validates
    /// is reported as corrupt rather than handed to a reconciler.
    pub(super) fn into_record(self) -> Result<ShopRecord> {
        let spec = ShopSpec {
            shop_domain: Hostname::parse(&self.shop_domain).map_err(|e| corrupt("shop", e))?,
            region: RegionName::parse(&self.region).map_err(|e| corrupt("shop", e))?,
            source_bucket: BucketName::parse(&self.source_bucket)
                .map_err(|e| corrupt("shop", e))?,
            source_version: SourceVersion::parse(&self.source_version)
                .map_err(|e| corrupt("shop", e))?,
            custom_domain: self
                .custom_domain
                .as_deref()
                .map(Hostname::parse)
                .transpose()
                .map_err(|e| corrupt("shop", e))?,
        };
        Ok(ShopRecord {
            spec,
            generation: self.generation,
            restart_generation: self.restart_generation,
            deletion_requested_at: self.deletion_requested_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one argument per column of the row"
)]
pub(super) fn region_from_parts(
    region: String,
    enabled: bool,
    codebuild_project: String,
    artifact_bucket: String,
    codedeploy_application: String,
    proxy_name_tag: String,
    nginx_config_dir: String,
    listeners: String,
    ips: String,
    parents: String,
    updated_at: i64,
    acme_responder_target_group_arn: Option<String>,
) -> Result<RegionConfig> {
    Ok(RegionConfig {
        region: RegionName::parse(&region).map_err(|e| corrupt("region config", e))?,
        enabled,
        codebuild_project,
        artifact_bucket: BucketName::parse(&artifact_bucket)
            .map_err(|e| corrupt("region config", e))?,
        codedeploy_application,
        proxy_name_tag,
        nginx_config_dir,
        alb_https_listener_arns: from_json("region config", &listeners)?,
        acme_responder_target_group_arn,
        global_accelerator_ips: from_json("region config", &ips)?,
        allowed_parent_domains: from_json("region config", &parents)?,
        updated_at,
    })
}

#[expect(
    clippy::too_many_arguments,
    reason = "one argument per column of the row"
)]
pub(super) fn group_from_parts(
    name: String,
    region: String,
    nlb_arns: String,
    port_min: i32,
    port_max: i32,
    capacity: i32,
    codedeploy_deployment_group: String,
    enabled: bool,
    updated_at: i64,
) -> Result<InstanceGroup> {
    let port = |p: i32| u16::try_from(p).map_err(|e| corrupt("instance group", e));
    Ok(InstanceGroup {
        name,
        region: RegionName::parse(&region).map_err(|e| corrupt("instance group", e))?,
        nlb_arns: from_json("instance group", &nlb_arns)?,
        port_min: port(port_min)?,
        port_max: port(port_max)?,
        capacity: u32::try_from(capacity).map_err(|e| corrupt("instance group", e))?,
        codedeploy_deployment_group,
        enabled,
        updated_at,
    })
}

#[expect(
    clippy::too_many_arguments,
    reason = "one argument per column of the row"
)]
pub(super) fn status_from_parts(
    kind: &str,
    desired: String,
    observed: String,
    sync: &str,
    health: &str,
    reason: String,
    message: String,
    observed_generation: i64,
    last_transition: i64,
    attempts: i32,
    next_attempt_at: Option<i64>,
) -> Result<ResourceStatus> {
    Ok(ResourceStatus {
        kind: kind.parse().map_err(|e| corrupt("resource status", e))?,
        desired,
        observed,
        sync: sync.parse().map_err(|e| corrupt("resource status", e))?,
        health: health.parse().map_err(|e| corrupt("resource status", e))?,
        reason,
        message,
        observed_generation,
        last_transition,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at,
    })
}

/// Certificate columns, in the order [`CertificateRow`] holds them.
pub(super) const CERTIFICATE_COLUMNS: &str = "domain, shop_domain, state, order_url, acm_arn, \
    listener_arn, not_before, not_after, failures, last_error, next_attempt_at, wait_reason, \
    renewal_info_id, renew_after, renewal_info_next_check, updated_at";

/// The raw columns of a `shop_certificates` row.
pub(super) struct CertificateRow {
    pub(super) domain: String,
    pub(super) shop: String,
    pub(super) state: String,
    pub(super) order_url: Option<String>,
    pub(super) acm_arn: Option<String>,
    pub(super) listener_arn: Option<String>,
    pub(super) not_before: Option<i64>,
    pub(super) not_after: Option<i64>,
    pub(super) failures: i32,
    pub(super) last_error: Option<String>,
    pub(super) next_attempt_at: Option<i64>,
    pub(super) wait_reason: Option<String>,
    pub(super) renewal_info_id: Option<String>,
    pub(super) renew_after: Option<i64>,
    pub(super) renewal_info_next_check: Option<i64>,
    pub(super) updated_at: i64,
}

impl CertificateRow {
    pub(super) fn into_record(self) -> Result<CertificateRecord> {
        Ok(CertificateRecord {
            domain: Hostname::parse(&self.domain).map_err(|e| corrupt("certificate", e))?,
            shop: self.shop,
            state: CertificateState::parse(&self.state)
                .ok_or_else(|| corrupt("certificate", format!("unknown state {:?}", self.state)))?,
            order_url: self.order_url,
            acm_arn: self.acm_arn,
            listener_arn: self.listener_arn,
            not_before: self.not_before,
            not_after: self.not_after,
            failures: u32::try_from(self.failures).unwrap_or(0),
            last_error: self.last_error,
            next_attempt_at: self.next_attempt_at,
            wait_reason: self.wait_reason.as_deref().and_then(WaitReason::parse),
            renewal_info_id: self.renewal_info_id,
            renew_after: self.renew_after,
            renewal_info_next_check: self.renewal_info_next_check,
            updated_at: self.updated_at,
        })
    }
}

/// Turns a budget's count in its window into a verdict.
pub(super) fn budget_verdict(
    budget: Budget,
    limit: BudgetLimit,
    used: i64,
    oldest: Option<i64>,
) -> std::result::Result<(), BudgetExhausted> {
    let used = u32::try_from(used).unwrap_or(u32::MAX);
    if used < limit.limit {
        return Ok(());
    }
    let window = i64::try_from(limit.window.as_millis()).unwrap_or(i64::MAX);
    Err(BudgetExhausted {
        budget,
        used,
        limit: limit.limit,
        limit_window: limit.window,
        free_at: oldest.unwrap_or(0).saturating_add(window),
    })
}

/// Maps a database error of a write, turning constraint violations into conflicts the caller
/// can act on.
pub(super) fn write_error(
    operation: &'static str,
    error: sqlx::Error,
    conflict: &str,
) -> StoreError {
    if let sqlx::Error::Database(db) = &error
        && (db.is_unique_violation() || db.is_foreign_key_violation())
    {
        return StoreError::Conflict(conflict.to_owned());
    }
    StoreError::Database {
        operation,
        source: error,
    }
}

/// Expands the shared [`Store`](super::Store) implementation for one backend. The type must
/// have `pool: sqlx::Pool<$db>` and `changes: broadcast::Sender<Change>` fields and an
/// `async fn announce(&self, change: Change)` telling subscribers (of every replica the backend
/// can reach) that a shop changed.
macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        mod shared {
            use async_trait::async_trait;
            use reconcilers::certificate::{
                Budget, BudgetExhausted, BudgetLimit, CertificateRecord, WaitReason,
            };
            use reconcilers::config::{InstanceGroup, RegionConfig};
            use reconcilers::placement::Placed;
            use reconcilers::spec::{ShopRecord, ShopSpec};
            use reconcilers::status::ResourceStatus;
            use sqlx::Row;
            use tokio::sync::broadcast;

            use super::super::common::*;
            use super::super::{
                AcmeChallenge, Census, Change, Claim, DeployOutcome, FleetPatchStatus, Intent,
                Lease, Pause, Placement, Result, ShopCounts, ShopEvent, ShopPage, ShopQuery,
                ShopView, Store, StoreError,
            };
            use reconcilers::patching::{
                FleetId, InstanceResult, PatchPolicy, PatchRun, RunState, Weekday,
            };
            use reconcilers::spec::RegionName;
            use reconcilers::status::ResourceKind;

            /// The database clock in milliseconds since the epoch, as SQL.
            const NOW: &str = <$store>::DB_NOW_MILLIS;
            /// Locks the selected row, or skips it while another transaction holds it.
            const SKIP_LOCKED: &str = <$store>::LOCK_OR_SKIP;
            /// Whether only one replica may use the database.
            const ONE_REPLICA: bool = <$store>::ONE_REPLICA;
            /// Starts a transaction that writers of one budget pass through one at a time.
            const BEGIN_SERIALIZED: &str = <$store>::BEGIN_SERIALIZED;
            /// Serializes a transaction on a key (`$1`), where the backend needs more than
            /// [`BEGIN_SERIALIZED`].
            const KEY_LOCK: Option<&str> = <$store>::KEY_LOCK;

            fn certificate_from_row(row: &DbRow) -> Result<CertificateRecord> {
                let get = |e| StoreError::Database { operation: "decode certificate", source: e };
                CertificateRow {
                    domain: row.try_get(0).map_err(get)?,
                    shop: row.try_get(1).map_err(get)?,
                    state: row.try_get(2).map_err(get)?,
                    order_url: row.try_get(3).map_err(get)?,
                    acm_arn: row.try_get(4).map_err(get)?,
                    listener_arn: row.try_get(5).map_err(get)?,
                    not_before: row.try_get(6).map_err(get)?,
                    not_after: row.try_get(7).map_err(get)?,
                    failures: row.try_get(8).map_err(get)?,
                    last_error: row.try_get(9).map_err(get)?,
                    next_attempt_at: row.try_get(10).map_err(get)?,
                    wait_reason: row.try_get(11).map_err(get)?,
                    renewal_info_id: row.try_get(12).map_err(get)?,
                    renew_after: row.try_get(13).map_err(get)?,
                    renewal_info_next_check: row.try_get(14).map_err(get)?,
                    updated_at: row.try_get(15).map_err(get)?,
                }
                .into_record()
            }

            /// The events of a budget inside its window: how many, and the oldest.
            async fn budget_used<'e, E>(
                executor: E,
                budget: Budget,
                subject: &str,
                limit: BudgetLimit,
                now: i64,
            ) -> Result<(i64, Option<i64>)>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let since = now.saturating_sub(i64::try_from(limit.window.as_millis()).unwrap_or(i64::MAX));
                let row = sqlx::query(
                    "SELECT COUNT(*), MIN(at) FROM acme_budget_events \
                     WHERE budget = $1 AND subject = $2 AND at > $3",
                )
                .bind(budget.as_str())
                .bind(subject)
                .bind(since)
                .fetch_one(executor)
                .await
                .map_err(db("count budget"))?;
                let used: i64 = row.try_get(0).map_err(db("decode budget"))?;
                let oldest: Option<i64> = row.try_get(1).map_err(db("decode budget"))?;
                Ok((used, oldest))
            }
            const INTENT_COLUMNS: &str =
                "shop_domain, kind, scope, desired, external_id, created_at, updated_at";

            fn intent_from_row(row: &DbRow) -> Result<Intent> {
                let read = |e: sqlx::Error| corrupt("intent", e);
                let kind: String = row.try_get(1).map_err(read)?;
                Ok(Intent {
                    shop: row.try_get(0).map_err(read)?,
                    kind: kind.parse().map_err(|e| corrupt("intent", e))?,
                    scope: row.try_get(2).map_err(read)?,
                    desired: row.try_get(3).map_err(read)?,
                    external_id: row.try_get(4).map_err(read)?,
                    created_at: row.try_get(5).map_err(read)?,
                    updated_at: row.try_get(6).map_err(read)?,
                })
            }

            type DbRow = <$db as sqlx::Database>::Row;

            fn policy_from_row(row: &DbRow) -> Result<PatchPolicy> {
                let read = |e: sqlx::Error| corrupt("patch policy", e);
                let fleet: String = row.try_get(0).map_err(read)?;
                let region: String = row.try_get(1).map_err(read)?;
                let number = |index: usize| -> Result<i32> { row.try_get(index).map_err(read) };
                let hour = |index| u8::try_from(number(index)?).map_err(|e| corrupt("patch policy", e));
                let weekdays: String = row.try_get(6).map_err(read)?;
                Ok(PatchPolicy {
                    fleet: FleetId::parse(&fleet).map_err(|e| corrupt("patch policy", e))?,
                    region: RegionName::parse(&region).map_err(|e| corrupt("patch policy", e))?,
                    enabled: row.try_get(2).map_err(read)?,
                    interval_days: u32::try_from(number(3)?).map_err(|e| corrupt("patch policy", e))?,
                    window_start_hour: hour(4)?,
                    window_end_hour: hour(5)?,
                    weekdays: from_json::<Weekday>("patch policy", &weekdays)?,
                    script: row.try_get(7).map_err(read)?,
                    command_timeout_seconds: u32::try_from(number(8)?)
                        .map_err(|e| corrupt("patch policy", e))?,
                    updated_at: row.try_get(9).map_err(read)?,
                })
            }

            fn run_from_row(row: &DbRow) -> Result<PatchRun> {
                let read = |e: sqlx::Error| corrupt("patch run", e);
                let fleet: String = row.try_get(1).map_err(read)?;
                let state: String = row.try_get(4).map_err(read)?;
                let instances: String = row.try_get(6).map_err(read)?;
                Ok(PatchRun {
                    id: row.try_get(0).map_err(read)?,
                    fleet: FleetId::parse(&fleet).map_err(|e| corrupt("patch run", e))?,
                    started_at: row.try_get(2).map_err(read)?,
                    finished_at: row.try_get(3).map_err(read)?,
                    state: state.parse().map_err(|e: String| corrupt("patch run", e))?,
                    message: row.try_get(5).map_err(read)?,
                    instances: from_json::<String>("patch run", &instances)?,
                    results: Vec::new(),
                })
            }

            fn result_from_row(row: &DbRow) -> Result<InstanceResult> {
                let read = |e: sqlx::Error| corrupt("patch result", e);
                let state: String = row.try_get(2).map_err(read)?;
                Ok(InstanceResult {
                    instance_id: row.try_get(1).map_err(read)?,
                    state: state.parse().map_err(|e: String| corrupt("patch result", e))?,
                    started_at: row.try_get(3).map_err(read)?,
                    finished_at: row.try_get(4).map_err(read)?,
                    output: row.try_get(5).map_err(read)?,
                })
            }

            fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
                move |source| StoreError::Database { operation, source }
            }

            fn region_from_row(row: &DbRow) -> Result<RegionConfig> {
                let get = |e| StoreError::Database { operation: "decode region config", source: e };
                region_from_parts(
                    row.try_get(0).map_err(get)?,
                    row.try_get(1).map_err(get)?,
                    row.try_get(2).map_err(get)?,
                    row.try_get(3).map_err(get)?,
                    row.try_get(4).map_err(get)?,
                    row.try_get(5).map_err(get)?,
                    row.try_get(6).map_err(get)?,
                    row.try_get(7).map_err(get)?,
                    row.try_get(8).map_err(get)?,
                    row.try_get(9).map_err(get)?,
                    row.try_get(10).map_err(get)?,
                    row.try_get(11).map_err(get)?,
                )
            }

            fn group_from_row(row: &DbRow) -> Result<InstanceGroup> {
                let get = |e| StoreError::Database { operation: "decode instance group", source: e };
                group_from_parts(
                    row.try_get(0).map_err(get)?,
                    row.try_get(1).map_err(get)?,
                    row.try_get(2).map_err(get)?,
                    row.try_get(3).map_err(get)?,
                    row.try_get(4).map_err(get)?,
                    row.try_get(5).map_err(get)?,
                    row.try_get(6).map_err(get)?,
                    row.try_get(7).map_err(get)?,
                    row.try_get(8).map_err(get)?,
                )
            }

            fn shop_from_row(row: &DbRow) -> Result<ShopRecord> {
                let get = |e| StoreError::Database { operation: "decode shop", source: e };
                ShopRow {
                    shop_domain: row.try_get(0).map_err(get)?,
                    region: row.try_get(1).map_err(get)?,
                    source_bucket: row.try_get(2).map_err(get)?,
                    source_version: row.try_get(3).map_err(get)?,
                    custom_domain: row.try_get(4).map_err(get)?,
                    generation: row.try_get(5).map_err(get)?,
                    restart_generation: row.try_get(6).map_err(get)?,
                    deletion_requested_at: row.try_get(7).map_err(get)?,
                    created_at: row.try_get(8).map_err(get)?,
                    updated_at: row.try_get(9).map_err(get)?,
                }
                .into_record()
            }

            fn placed_from_row(row: &DbRow) -> Result<Placed> {
                let get = |e| StoreError::Database { operation: "decode placement", source: e };
                let port: i32 = row.try_get(2).map_err(get)?;
                Ok(Placed {
                    instance_group: row.try_get(0).map_err(get)?,
                    nlb_arn: row.try_get(1).map_err(get)?,
                    port: u16::try_from(port).map_err(|e| corrupt("placement", e))?,
                })
            }

            fn status_from_row(row: &DbRow) -> Result<(String, ResourceStatus)> {
                let get = |e| StoreError::Database { operation: "decode resource status", source: e };
                let shop: String = row.try_get(0).map_err(get)?;
                let kind: String = row.try_get(1).map_err(get)?;
                let sync: String = row.try_get(4).map_err(get)?;
                let health: String = row.try_get(5).map_err(get)?;
                let status = status_from_parts(
                    &kind,
                    row.try_get(2).map_err(get)?,
                    row.try_get(3).map_err(get)?,
                    &sync,
                    &health,
                    row.try_get(6).map_err(get)?,
                    row.try_get(7).map_err(get)?,
                    row.try_get(8).map_err(get)?,
                    row.try_get(9).map_err(get)?,
                    row.try_get(10).map_err(get)?,
                    row.try_get(11).map_err(get)?,
                )?;
                Ok((shop, status))
            }

            /// Placement and readiness columns that follow the shop columns in list queries.
            fn extras_from_row(row: &DbRow) -> Result<(Option<Placement>, bool)> {
                let get = |e| StoreError::Database { operation: "decode shop extras", source: e };
                let group: Option<String> = row.try_get(10).map_err(get)?;
                let nlb: Option<String> = row.try_get(11).map_err(get)?;
                let port: Option<i32> = row.try_get(12).map_err(get)?;
                let ready: Option<bool> = row.try_get(13).map_err(get)?;
                let placement = match (group, nlb, port) {
                    (Some(instance_group), Some(nlb_arn), Some(port)) => Some(Placement {
                        instance_group,
                        nlb_arn,
                        port: u16::try_from(port).map_err(|e| corrupt("placement", e))?,
                    }),
                    _ => None,
                };
                Ok((placement, ready.unwrap_or(false)))
            }

            /// The pause columns that follow the extras: a region pause wins over a shop's own.
            fn pause_from_row(row: &DbRow) -> Result<Option<Pause>> {
                let get = |e| StoreError::Database { operation: "decode pause", source: e };
                let shop_since: Option<i64> = row.try_get(14).map_err(get)?;
                let shop_reason: String = row.try_get(15).map_err(get)?;
                let region_since: Option<i64> = row.try_get(16).map_err(get)?;
                let region_reason: Option<String> = row.try_get(17).map_err(get)?;
                Ok(match (region_since, shop_since) {
                    (Some(since), _) => Some(Pause {
                        region: true,
                        reason: region_reason.unwrap_or_default(),
                        since,
                    }),
                    (None, Some(since)) => Some(Pause { region: false, reason: shop_reason, since }),
                    (None, None) => None,
                })
            }

            fn shop_select(filter: &str) -> String {
                format!(
                    "SELECT {SHOP_COLUMNS}, p.instance_group, p.nlb_arn, p.port, \
                     (st.ready AND st.ready_generation = s.generation) AS ready, \
                     s.paused_at, s.pause_reason, r.paused_at, r.pause_reason \
                     FROM shops s \
                     LEFT JOIN placements p ON p.shop_domain = s.shop_domain \
                     LEFT JOIN shop_status st ON st.shop_domain = s.shop_domain \
                     LEFT JOIN region_configs r ON r.region = s.region \
                     {filter}"
                )
            }

            async fn insert_event<'c>(
                tx: &mut sqlx::Transaction<'c, $db>,
                shop: &str,
                at: i64,
                generation: i64,
                reason: &str,
                message: &str,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO shop_events (shop_domain, at, generation, source, reason, message) \
                     VALUES ($1, $2, $3, 'spec', $4, $5)",
                )
                .bind(shop)
                .bind(at)
                .bind(generation)
                .bind(reason)
                .bind(message)
                .execute(&mut **tx)
                .await
                .map_err(db("insert shop event"))?;
                Ok(())
            }

            async fn select_shop<'c>(
                tx: &mut sqlx::Transaction<'c, $db>,
                shop: &str,
            ) -> Result<Option<ShopRecord>> {
                let sql = format!("SELECT {SHOP_COLUMNS} FROM shops s WHERE s.shop_domain = $1");
                let row = sqlx::query(&sql)
                    .bind(shop)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(db("select shop"))?;
                row.as_ref().map(shop_from_row).transpose()
            }

            fn describe_spec(spec: &ShopSpec) -> String {
                let custom = spec
                    .custom_domain
                    .as_ref()
                    .map(|d| format!(", custom domain {d}"))
                    .unwrap_or_default();
                format!(
                    "source s3://{}/{}.zip version {}{custom}",
                    spec.source_bucket, spec.shop_domain, spec.source_version
                )
            }

            impl $store {
                async fn custom_domain_owner(&self, domain: &str) -> Result<Option<String>> {
                    sqlx::query_scalar("SELECT shop_domain FROM shops WHERE custom_domain = $1")
                        .bind(domain)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db("select custom domain owner"))
                }

                /// One attempt of [`Store::deploy_shop`]: `None` when a concurrent writer
                /// changed the row between our statements, so the caller tries again.
                async fn try_deploy(&self, spec: &ShopSpec, now: i64) -> Result<Option<DeployOutcome>> {
                    let shop = spec.shop_domain.as_str();
                    let custom = spec.custom_domain.as_ref().map(|d| d.as_str());
                    let mut tx = self.pool.begin().await.map_err(db("begin deploy"))?;

                    // Write first: SQLite takes its write lock here, so no reader-to-writer
                    // upgrade can deadlock, and PostgreSQL locks the row.
                    let sql = format!(
                        "UPDATE shops SET source_bucket = $3, source_version = $4, \
                         custom_domain = $5, generation = generation + 1, updated_at = $6 \
                         WHERE shop_domain = $1 AND region = $2 \
                         AND deletion_requested_at IS NULL \
                         AND (source_bucket <> $3 OR source_version <> $4 \
                              OR custom_domain IS DISTINCT FROM $5) \
                         RETURNING {SHOP_RETURNING}"
                    );
                    let updated = sqlx::query(&sql)
                        .bind(shop)
                        .bind(spec.region.as_str())
                        .bind(spec.source_bucket.as_str())
                        .bind(spec.source_version.as_str())
                        .bind(custom)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await;
                    let conflict = "custom domain";
                    let updated = updated.map_err(|e| write_error("update shop spec", e, conflict))?;
                    if let Some(row) = updated {
                        let record = shop_from_row(&row)?;
                        let message = describe_spec(spec);
                        insert_event(&mut tx, shop, now, record.generation, "SpecChanged", &message)
                            .await?;
                        tx.commit().await.map_err(db("commit deploy"))?;
                        return Ok(Some(DeployOutcome { record, changed: true }));
                    }

                    let sql = format!(
                        "INSERT INTO shops (shop_domain, region, source_bucket, source_version, \
                         custom_domain, generation, restart_generation, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, 1, 0, $6, $6) \
                         ON CONFLICT (shop_domain) DO NOTHING RETURNING {SHOP_RETURNING}"
                    );
                    let inserted = sqlx::query(&sql)
                        .bind(shop)
                        .bind(spec.region.as_str())
                        .bind(spec.source_bucket.as_str())
                        .bind(spec.source_version.as_str())
                        .bind(custom)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(|e| write_error("insert shop", e, conflict))?;
                    if let Some(row) = inserted {
                        let record = shop_from_row(&row)?;
                        let message = describe_spec(spec);
                        insert_event(&mut tx, shop, now, 1, "Created", &message).await?;
                        tx.commit().await.map_err(db("commit deploy"))?;
                        return Ok(Some(DeployOutcome { record, changed: true }));
                    }

                    let existing = select_shop(&mut tx, shop).await?;
                    tx.rollback().await.map_err(db("end deploy"))?;
                    let Some(existing) = existing else { return Ok(None) };
                    if existing.is_deleting() {
                        return Err(StoreError::FailedPrecondition(format!(
                            "shop {shop} is being deleted; deploy it again once it is gone"
                        )));
                    }
                    if existing.spec.region != spec.region {
                        return Err(StoreError::FailedPrecondition(format!(
                            "shop {shop} runs in region {}; moving it to {} needs a delete first",
                            existing.spec.region, spec.region
                        )));
                    }
                    if existing.spec != *spec {
                        return Ok(None);
                    }
                    Ok(Some(DeployOutcome { record: existing, changed: false }))
                }

                async fn explain_missing_update(
                    &self,
                    shop_domain: &str,
                    region: Option<&str>,
                ) -> StoreError {
                    let mut tx = match self.pool.begin().await {
                        Ok(tx) => tx,
                        Err(e) => return db("begin read")(e),
                    };
                    match select_shop(&mut tx, shop_domain).await {
                        Ok(None) => StoreError::NotFound(format!("shop {shop_domain}")),
                        Ok(Some(existing)) if existing.is_deleting() => {
                            StoreError::FailedPrecondition(format!("shop {shop_domain} is being deleted"))
                        }
                        Ok(Some(existing)) => StoreError::FailedPrecondition(format!(
                            "shop {shop_domain} runs in region {}, not {}",
                            existing.spec.region,
                            region.unwrap_or("the one given")
                        )),
                        Err(e) => e,
                    }
                }
            }

            #[async_trait]
            impl Store for $store {
                async fn put_region_config(&self, config: &RegionConfig, now: i64) -> Result<RegionConfig> {
                    let sql = format!(
                        "INSERT INTO region_configs ({REGION_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                         ON CONFLICT (region) DO UPDATE SET enabled = excluded.enabled, \
                         codebuild_project = excluded.codebuild_project, \
                         artifact_bucket = excluded.artifact_bucket, \
                         codedeploy_application = excluded.codedeploy_application, \
                         proxy_name_tag = excluded.proxy_name_tag, \
                         nginx_config_dir = excluded.nginx_config_dir, \
                         alb_https_listener_arns = excluded.alb_https_listener_arns, \
                         global_accelerator_ips = excluded.global_accelerator_ips, \
                         allowed_parent_domains = excluded.allowed_parent_domains, \
                         updated_at = excluded.updated_at, \
                         acme_responder_target_group_arn = excluded.acme_responder_target_group_arn \
                         RETURNING {REGION_COLUMNS}"
                    );
                    let row = sqlx::query(&sql)
                        .bind(config.region.as_str())
                        .bind(config.enabled)
                        .bind(&config.codebuild_project)
                        .bind(config.artifact_bucket.as_str())
                        .bind(&config.codedeploy_application)
                        .bind(&config.proxy_name_tag)
                        .bind(&config.nginx_config_dir)
                        .bind(to_json(config.alb_https_listener_arns.iter().cloned()))
                        .bind(to_json(config.global_accelerator_ips.iter().map(|ip| ip.to_string())))
                        .bind(to_json(config.allowed_parent_domains.iter().map(|d| d.to_string())))
                        .bind(now)
                        .bind(config.acme_responder_target_group_arn.as_deref())
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db("upsert region config"))?;
                    region_from_row(&row)
                }

                async fn get_region_config(&self, region: &str) -> Result<Option<RegionConfig>> {
                    let sql = format!("SELECT {REGION_COLUMNS} FROM region_configs WHERE region = $1");
                    let row = sqlx::query(&sql)
                        .bind(region)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db("select region config"))?;
                    row.as_ref().map(region_from_row).transpose()
                }

                async fn list_region_configs(&self) -> Result<Vec<RegionConfig>> {
                    let sql = format!("SELECT {REGION_COLUMNS} FROM region_configs ORDER BY region");
                    let rows = sqlx::query(&sql)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db("list region configs"))?;
                    rows.iter().map(region_from_row).collect()
                }

                async fn paused_regions(&self) -> Result<Vec<String>> {
                    sqlx::query_scalar(
                        "SELECT region FROM region_configs WHERE paused_at IS NOT NULL ORDER BY region",
                    )
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db("list paused regions"))
                }

                async fn delete_region_config(&self, region: &str) -> Result<bool> {
                    let result = sqlx::query("DELETE FROM region_configs WHERE region = $1")
                        .bind(region)
                        .execute(&self.pool)
                        .await
                        .map_err(|e| {
                            let message = format!(
                                "region {region} still has shops or instance groups; delete them first"
                            );
                            write_error("delete region config", e, &message)
                        })?;
                    Ok(result.rows_affected() > 0)
                }

                async fn put_instance_group(&self, group: &InstanceGroup, now: i64) -> Result<InstanceGroup> {
                    let sql = format!(
                        "INSERT INTO ec2_instance_groups ({GROUP_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (name) DO UPDATE SET region = excluded.region, \
                         nlb_arns = excluded.nlb_arns, port_min = excluded.port_min, \
                         port_max = excluded.port_max, capacity = excluded.capacity, \
                         codedeploy_deployment_group = excluded.codedeploy_deployment_group, \
                         enabled = excluded.enabled, updated_at = excluded.updated_at \
                         RETURNING {GROUP_COLUMNS}"
                    );
                    let region = group.region.as_str();
                    let row = sqlx::query(&sql)
                        .bind(&group.name)
                        .bind(region)
                        .bind(to_json(group.nlb_arns.iter().cloned()))
                        .bind(i32::from(group.port_min))
                        .bind(i32::from(group.port_max))
                        .bind(i32::try_from(group.capacity).unwrap_or(i32::MAX))
                        .bind(&group.codedeploy_deployment_group)
                        .bind(group.enabled)
                        .bind(now)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(|e| {
                            let message = format!("region {region} has no config; put it first");
                            write_error("upsert instance group", e, &message)
                        })?;
                    group_from_row(&row)
                }

                async fn get_instance_group(&self, name: &str) -> Result<Option<InstanceGroup>> {
                    let sql = format!("SELECT {GROUP_COLUMNS} FROM ec2_instance_groups WHERE name = $1");
                    let row = sqlx::query(&sql)
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db("select instance group"))?;
                    row.as_ref().map(group_from_row).transpose()
                }

                async fn list_instance_groups(&self, region: Option<&str>) -> Result<Vec<InstanceGroup>> {
                    let sql = format!(
                        "SELECT {GROUP_COLUMNS} FROM ec2_instance_groups \
                         WHERE ($1 IS NULL OR region = $1) ORDER BY name"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(region)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db("list instance groups"))?;
                    rows.iter().map(group_from_row).collect()
                }

                async fn delete_instance_group(&self, name: &str) -> Result<bool> {
                    let result = sqlx::query("DELETE FROM ec2_instance_groups WHERE name = $1")
                        .bind(name)
                        .execute(&self.pool)
                        .await
                        .map_err(|e| {
                            let message = format!("instance group {name} still runs shops");
                            write_error("delete instance group", e, &message)
                        })?;
                    Ok(result.rows_affected() > 0)
                }

                async fn deploy_shop(&self, spec: &ShopSpec, now: i64) -> Result<DeployOutcome> {
                    for _ in 0..3 {
                        match self.try_deploy(spec, now).await {
                            Ok(Some(outcome)) => {
                                if outcome.changed {
                                    self.announce(Change::Spec(spec.shop_domain.to_string())).await;
                                }
                                return Ok(outcome);
                            }
                            Ok(None) => continue,
                            Err(StoreError::Conflict(_)) if spec.custom_domain.is_some() => {
                                let domain = spec.custom_domain.as_ref().map(|d| d.as_str());
                                let owner = self.custom_domain_owner(domain.unwrap_or("")).await?;
                                return Err(StoreError::Conflict(format!(
                                    "custom domain {} already belongs to shop {}",
                                    domain.unwrap_or(""),
                                    owner.as_deref().unwrap_or("(another shop)")
                                )));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Err(StoreError::Conflict(format!(
                        "shop {} is being changed by another request; try again",
                        spec.shop_domain
                    )))
                }

                async fn restart_shop(&self, shop_domain: &str, region: &str, now: i64) -> Result<ShopRecord> {
                    let mut tx = self.pool.begin().await.map_err(db("begin restart"))?;
                    let sql = format!(
                        "UPDATE shops SET restart_generation = restart_generation + 1, \
                         updated_at = $3 WHERE shop_domain = $1 AND region = $2 \
                         AND deletion_requested_at IS NULL RETURNING {SHOP_RETURNING}"
                    );
                    let row = sqlx::query(&sql)
                        .bind(shop_domain)
                        .bind(region)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db("bump restart generation"))?;
                    let Some(row) = row else {
                        drop(tx);
                        return Err(self.explain_missing_update(shop_domain, Some(region)).await);
                    };
                    let record = shop_from_row(&row)?;
                    let message = format!("restart generation {}", record.restart_generation);
                    insert_event(&mut tx, shop_domain, now, record.generation, "RestartRequested", &message)
                        .await?;
                    tx.commit().await.map_err(db("commit restart"))?;
                    self.announce(Change::Spec(shop_domain.to_owned())).await;
                    Ok(record)
                }

                async fn delete_shop(&self, shop_domain: &str, now: i64) -> Result<ShopRecord> {
                    let mut tx = self.pool.begin().await.map_err(db("begin delete"))?;
                    let sql = format!(
                        "UPDATE shops SET deletion_requested_at = $2, generation = generation + 1, \
                         updated_at = $2 WHERE shop_domain = $1 \
                         AND deletion_requested_at IS NULL RETURNING {SHOP_RETURNING}"
                    );
                    let row = sqlx::query(&sql)
                        .bind(shop_domain)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db("mark shop for deletion"))?;
                    let Some(row) = row else {
                        let existing = select_shop(&mut tx, shop_domain).await?;
                        tx.rollback().await.map_err(db("end delete"))?;
                        return existing.ok_or_else(|| StoreError::NotFound(format!("shop {shop_domain}")));
                    };
                    let record = shop_from_row(&row)?;
                    insert_event(&mut tx, shop_domain, now, record.generation, "DeletionRequested", "")
                        .await?;
                    tx.commit().await.map_err(db("commit delete"))?;
                    self.announce(Change::Spec(shop_domain.to_owned())).await;
                    Ok(record)
                }

                async fn set_shop_paused(
                    &self,
                    shop_domain: &str,
                    paused: bool,
                    reason: &str,
                    now: i64,
                ) -> Result<bool> {
                    let mut tx = self.pool.begin().await.map_err(db("begin pause"))?;
                    // Write first (see try_deploy); the WHERE keeps a repeated call from
                    // writing a second event.
                    let row = sqlx::query(
                        "UPDATE shops SET \
                         paused_at = CASE WHEN $2 THEN COALESCE(paused_at, $4) ELSE NULL END, \
                         pause_reason = CASE WHEN $2 THEN $3 ELSE '' END \
                         WHERE shop_domain = $1 AND (CASE WHEN $2 \
                         THEN paused_at IS NULL OR pause_reason <> $3 \
                         ELSE paused_at IS NOT NULL END) RETURNING generation",
                    )
                    .bind(shop_domain)
                    .bind(paused)
                    .bind(reason)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db("pause shop"))?;
                    let Some(row) = row else {
                        let existing = select_shop(&mut tx, shop_domain).await?;
                        tx.rollback().await.map_err(db("end pause"))?;
                        return match existing {
                            Some(_) => Ok(false),
                            None => Err(StoreError::NotFound(format!("shop {shop_domain}"))),
                        };
                    };
                    let generation: i64 = row.try_get(0).map_err(db("decode generation"))?;
                    let event = if paused { "Paused" } else { "Resumed" };
                    insert_event(&mut tx, shop_domain, now, generation, event, reason).await?;
                    tx.commit().await.map_err(db("commit pause"))?;
                    self.announce(Change::Spec(shop_domain.to_owned())).await;
                    Ok(true)
                }

                async fn set_region_paused(
                    &self,
                    region: &str,
                    paused: bool,
                    reason: &str,
                    now: i64,
                ) -> Result<bool> {
                    let mut tx = self.pool.begin().await.map_err(db("begin region pause"))?;
                    let updated = sqlx::query(
                        "UPDATE region_configs SET \
                         paused_at = CASE WHEN $2 THEN COALESCE(paused_at, $4) ELSE NULL END, \
                         pause_reason = CASE WHEN $2 THEN $3 ELSE '' END \
                         WHERE region = $1 AND (CASE WHEN $2 \
                         THEN paused_at IS NULL OR pause_reason <> $3 \
                         ELSE paused_at IS NOT NULL END)",
                    )
                    .bind(region)
                    .bind(paused)
                    .bind(reason)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("pause region"))?;
                    if updated.rows_affected() == 0 {
                        let exists: Option<String> =
                            sqlx::query_scalar("SELECT region FROM region_configs WHERE region = $1")
                                .bind(region)
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err(db("select region config"))?;
                        tx.rollback().await.map_err(db("end region pause"))?;
                        return match exists {
                            Some(_) => Ok(false),
                            None => Err(StoreError::NotFound(format!("region {region}"))),
                        };
                    }
                    let event = if paused { "RegionPaused" } else { "RegionResumed" };
                    let shops: Vec<String> = sqlx::query_scalar(
                        "INSERT INTO shop_events (shop_domain, at, generation, source, reason, message) \
                         SELECT shop_domain, $2, generation, 'spec', $3, $4 FROM shops \
                         WHERE region = $1 RETURNING shop_domain",
                    )
                    .bind(region)
                    .bind(now)
                    .bind(event)
                    .bind(format!("region {region}: {reason}"))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db("insert region pause events"))?;
                    tx.commit().await.map_err(db("commit region pause"))?;
                    // Every shop of the region, so a resume takes effect at once; a pause is
                    // seen by each loop's next reconcile anyway.
                    for shop in shops {
                        self.announce(Change::Spec(shop)).await;
                    }
                    Ok(true)
                }

                async fn remove_shop(&self, shop_domain: &str, now: i64) -> Result<bool> {
                    let mut tx = self.pool.begin().await.map_err(db("begin remove"))?;
                    sqlx::query("DELETE FROM placements WHERE shop_domain = $1")
                        .bind(shop_domain)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("delete placement"))?;
                    for table in ["shop_intents", "shop_leases"] {
                        sqlx::query(&format!("DELETE FROM {table} WHERE shop_domain = $1"))
                            .bind(shop_domain)
                            .execute(&mut *tx)
                            .await
                            .map_err(db("delete shop state"))?;
                    }
                    let removed = sqlx::query(
                        "DELETE FROM shops WHERE shop_domain = $1 \
                         AND deletion_requested_at IS NOT NULL RETURNING generation",
                    )
                    .bind(shop_domain)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db("delete shop"))?;
                    let Some(row) = removed else {
                        tx.rollback().await.map_err(db("end remove"))?;
                        return Ok(false);
                    };
                    let generation: i64 = row.try_get(0).map_err(db("decode generation"))?;
                    insert_event(&mut tx, shop_domain, now, generation, "Removed", "teardown finished")
                        .await?;
                    tx.commit().await.map_err(db("commit remove"))?;
                    self.announce(Change::Spec(shop_domain.to_owned())).await;
                    Ok(true)
                }

                async fn get_shop(&self, shop_domain: &str) -> Result<Option<ShopView>> {
                    let query = ShopQuery {
                        region: None,
                        only_not_ready: false,
                        after: None,
                        limit: 1,
                    };
                    let page = self.list_page(&query, Some(shop_domain)).await?;
                    Ok(page.shops.into_iter().next())
                }

                async fn list_shops(&self, query: &ShopQuery) -> Result<ShopPage> {
                    self.list_page(query, None).await
                }

                async fn count_shops(&self) -> Result<ShopCounts> {
                    // Ready as `get_shop` reads it: the flag holds for the current generation.
                    let row = sqlx::query(
                        "SELECT COALESCE(SUM(CASE \
                             WHEN s.deletion_requested_at IS NOT NULL THEN 1 ELSE 0 END), 0), \
                         COALESCE(SUM(CASE WHEN s.deletion_requested_at IS NULL AND st.ready \
                             AND st.ready_generation = s.generation THEN 1 ELSE 0 END), 0), \
                         COUNT(*) FROM shops s \
                         LEFT JOIN shop_status st ON st.shop_domain = s.shop_domain",
                    )
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db("count shops"))?;
                    let get = |index| -> Result<u64> {
                        let count: i64 = row.try_get(index).map_err(db("decode shop counts"))?;
                        Ok(u64::try_from(count).unwrap_or(0))
                    };
                    let (deleting, ready, total) = (get(0)?, get(1)?, get(2)?);
                    Ok(ShopCounts {
                        ready,
                        not_ready: total.saturating_sub(ready + deleting),
                        deleting,
                    })
                }

                async fn shop_events(&self, shop_domain: &str, limit: u32) -> Result<Vec<ShopEvent>> {
                    let rows = sqlx::query(
                        "SELECT at, generation, source, reason, message FROM shop_events \
                         WHERE shop_domain = $1 ORDER BY id DESC LIMIT $2",
                    )
                    .bind(shop_domain)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db("list shop events"))?;
                    let get = |e| StoreError::Database { operation: "decode shop event", source: e };
                    let mut events = rows
                        .iter()
                        .map(|row| {
                            Ok(ShopEvent {
                                at: row.try_get(0).map_err(get)?,
                                generation: row.try_get(1).map_err(get)?,
                                source: row.try_get(2).map_err(get)?,
                                reason: row.try_get(3).map_err(get)?,
                                message: row.try_get(4).map_err(get)?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    events.reverse();
                    Ok(events)
                }

                async fn put_resource_status(&self, shop_domain: &str, status: &ResourceStatus) -> Result<()> {
                    let sql = format!(
                        "INSERT INTO resource_status ({STATUS_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                         ON CONFLICT (shop_domain, kind) DO UPDATE SET desired = excluded.desired, \
                         observed = excluded.observed, sync = excluded.sync, \
                         health = excluded.health, reason = excluded.reason, \
                         message = excluded.message, \
                         observed_generation = excluded.observed_generation, \
                         last_transition = excluded.last_transition, \
                         attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at"
                    );
                    sqlx::query(&sql)
                        .bind(shop_domain)
                        .bind(status.kind.as_str())
                        .bind(&status.desired)
                        .bind(&status.observed)
                        .bind(status.sync.as_str())
                        .bind(status.health.as_str())
                        .bind(&status.reason)
                        .bind(&status.message)
                        .bind(status.observed_generation)
                        .bind(status.last_transition)
                        .bind(i32::try_from(status.attempts).unwrap_or(i32::MAX))
                        .bind(status.next_attempt_at)
                        .execute(&self.pool)
                        .await
                        .map_err(|e| write_error("upsert resource status", e, "shop is gone"))?;
                    self.announce(Change::Status(shop_domain.to_owned(), Some(status.kind))).await;
                    Ok(())
                }

                async fn set_shop_ready(
                    &self,
                    shop_domain: &str,
                    ready: bool,
                    generation: i64,
                    now: i64,
                ) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO shop_status (shop_domain, ready, ready_generation, updated_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (shop_domain) DO UPDATE SET \
                         ready = excluded.ready, ready_generation = excluded.ready_generation, \
                         updated_at = excluded.updated_at",
                    )
                    .bind(shop_domain)
                    .bind(ready)
                    .bind(generation)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| write_error("upsert shop status", e, "shop is gone"))?;
                    self.announce(Change::Status(shop_domain.to_owned(), None)).await;
                    Ok(())
                }

                async fn region_placements(&self, region: &str) -> Result<Vec<Placed>> {
                    let rows = sqlx::query(
                        "SELECT p.instance_group, p.nlb_arn, p.port FROM placements p \
                         JOIN ec2_instance_groups g ON g.name = p.instance_group \
                         WHERE g.region = $1 ORDER BY p.instance_group, p.port",
                    )
                    .bind(region)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db("list placements"))?;
                    rows.iter().map(placed_from_row).collect()
                }

                async fn place_shop(&self, shop_domain: &str, placement: &Placed, now: i64) -> Result<Placed> {
                    let inserted = sqlx::query(
                        "INSERT INTO placements (shop_domain, instance_group, nlb_arn, port, created_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (shop_domain) DO NOTHING \
                         RETURNING instance_group, nlb_arn, port",
                    )
                    .bind(shop_domain)
                    .bind(&placement.instance_group)
                    .bind(&placement.nlb_arn)
                    .bind(i32::from(placement.port))
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| {
                        let message = format!(
                            "port {} is taken on {} or group {}",
                            placement.port, placement.nlb_arn, placement.instance_group
                        );
                        write_error("insert placement", e, &message)
                    })?;
                    if let Some(row) = inserted {
                        self.announce(Change::Spec(shop_domain.to_owned())).await;
                        return placed_from_row(&row);
                    }
                    let existing = sqlx::query(
                        "SELECT instance_group, nlb_arn, port FROM placements WHERE shop_domain = $1",
                    )
                    .bind(shop_domain)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db("select placement"))?;
                    placed_from_row(&existing)
                }

                async fn release_placement(&self, shop_domain: &str) -> Result<bool> {
                    let result = sqlx::query("DELETE FROM placements WHERE shop_domain = $1")
                        .bind(shop_domain)
                        .execute(&self.pool)
                        .await
                        .map_err(db("delete placement"))?;
                    self.announce(Change::Spec(shop_domain.to_owned())).await;
                    Ok(result.rows_affected() > 0)
                }

                async fn claim_lease(&self, shop_domain: &str, holder: &str, ttl_ms: i64) -> Result<Claim> {
                    let mut tx = self.pool.begin().await.map_err(db("begin claim"))?;
                    sqlx::query(
                        "INSERT INTO shop_leases (shop_domain, holder, epoch, expires_at) \
                         VALUES ($1, '', 0, 0) ON CONFLICT (shop_domain) DO NOTHING",
                    )
                    .bind(shop_domain)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("insert lease"))?;
                    let sql = format!(
                        "SELECT holder, epoch, expires_at - {NOW} FROM shop_leases \
                         WHERE shop_domain = $1{SKIP_LOCKED}"
                    );
                    let row = sqlx::query(&sql)
                        .bind(shop_domain)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db("select lease"))?;
                    let Some(row) = row else {
                        // Another replica is claiming it right now.
                        tx.rollback().await.map_err(db("end claim"))?;
                        return Ok(Claim::Held { holder: String::new(), remaining_ms: 0 });
                    };
                    let current: String = row.try_get(0).map_err(db("decode lease"))?;
                    let epoch: i64 = row.try_get(1).map_err(db("decode lease"))?;
                    let remaining: i64 = row.try_get(2).map_err(db("decode lease"))?;
                    let running = remaining > 0;
                    if running && current != holder {
                        tx.rollback().await.map_err(db("end claim"))?;
                        return Ok(Claim::Held { holder: current, remaining_ms: remaining });
                    }
                    // A renewal keeps the epoch; a claim that changed hands or lapsed moves it.
                    let epoch = if running { epoch } else { epoch + 1 };
                    let sql = format!(
                        "UPDATE shop_leases SET holder = $2, epoch = $3, expires_at = {NOW} + $4 \
                         WHERE shop_domain = $1"
                    );
                    sqlx::query(&sql)
                        .bind(shop_domain)
                        .bind(holder)
                        .bind(epoch)
                        .bind(ttl_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("update lease"))?;
                    tx.commit().await.map_err(db("commit claim"))?;
                    Ok(Claim::Granted(Lease {
                        shop: shop_domain.to_owned(),
                        holder: holder.to_owned(),
                        epoch,
                        remaining_ms: ttl_ms,
                    }))
                }

                async fn extend_lease(&self, lease: &Lease, ttl_ms: i64) -> Result<bool> {
                    let sql = format!(
                        "UPDATE shop_leases SET expires_at = {NOW} + $4 WHERE shop_domain = $1 \
                         AND holder = $2 AND epoch = $3 AND expires_at > {NOW}"
                    );
                    let result = sqlx::query(&sql)
                        .bind(&lease.shop)
                        .bind(&lease.holder)
                        .bind(lease.epoch)
                        .bind(ttl_ms)
                        .execute(&self.pool)
                        .await
                        .map_err(db("extend lease"))?;
                    Ok(result.rows_affected() == 1)
                }

                async fn release_lease(&self, lease: &Lease) -> Result<()> {
                    sqlx::query(
                        "UPDATE shop_leases SET expires_at = 0 \
                         WHERE shop_domain = $1 AND holder = $2 AND epoch = $3",
                    )
                    .bind(&lease.shop)
                    .bind(&lease.holder)
                    .bind(lease.epoch)
                    .execute(&self.pool)
                    .await
                    .map_err(db("release lease"))?;
                    Ok(())
                }

                async fn lapse_predecessors_leases(&self, holder: &str) -> Result<u64> {
                    if !ONE_REPLICA {
                        return Ok(0);
                    }
                    let lapsed = sqlx::query(
                        "UPDATE shop_leases SET expires_at = 0 \
                         WHERE holder <> $1 AND expires_at <> 0",
                    )
                    .bind(holder)
                    .execute(&self.pool)
                    .await
                    .map_err(db("lapse leases"))?;
                    Ok(lapsed.rows_affected())
                }

                async fn heartbeat(&self, holder: &str, ttl_ms: i64) -> Result<Census> {
                    let mut tx = self.pool.begin().await.map_err(db("begin heartbeat"))?;
                    let sql = format!(
                        "INSERT INTO controller_replicas (holder, started_at, last_seen) \
                         VALUES ($1, {NOW}, {NOW}) \
                         ON CONFLICT (holder) DO UPDATE SET last_seen = excluded.last_seen"
                    );
                    sqlx::query(&sql)
                        .bind(holder)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("write heartbeat"))?;
                    let sql = format!(
                        "DELETE FROM controller_replicas WHERE last_seen <= {NOW} - $1"
                    );
                    sqlx::query(&sql)
                        .bind(ttl_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("forget silent replicas"))?;
                    // The shops a reconcile would claim: a paused one is left alone unclaimed.
                    let row = sqlx::query(
                        "SELECT (SELECT COUNT(*) FROM controller_replicas WHERE last_seen >= \
                           (SELECT started_at FROM controller_replicas WHERE holder = $1)), \
                         (SELECT COUNT(*) FROM shops s \
                          LEFT JOIN region_configs r ON r.region = s.region \
                          WHERE s.paused_at IS NULL AND r.paused_at IS NULL)",
                    )
                    .bind(holder)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("count replicas"))?;
                    tx.commit().await.map_err(db("commit heartbeat"))?;
                    let get = |index| -> Result<u32> {
                        let count: i64 = row.try_get(index).map_err(db("decode replica counts"))?;
                        Ok(u32::try_from(count).unwrap_or(u32::MAX))
                    };
                    Ok(Census { live_replicas: get(0)?, shops: get(1)? })
                }

                async fn remove_replica(&self, holder: &str) -> Result<()> {
                    sqlx::query("DELETE FROM controller_replicas WHERE holder = $1")
                        .bind(holder)
                        .execute(&self.pool)
                        .await
                        .map_err(db("remove replica"))?;
                    Ok(())
                }

                async fn record_intent(&self, intent: &Intent, now: i64) -> Result<Intent> {
                    let sql = format!(
                        "INSERT INTO shop_intents ({INTENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6) \
                         ON CONFLICT (shop_domain, kind) DO UPDATE SET scope = excluded.scope, \
                         desired = excluded.desired, external_id = excluded.external_id, \
                         updated_at = excluded.updated_at RETURNING {INTENT_COLUMNS}"
                    );
                    let row = sqlx::query(&sql)
                        .bind(&intent.shop)
                        .bind(intent.kind.as_str())
                        .bind(&intent.scope)
                        .bind(&intent.desired)
                        .bind(intent.external_id.as_deref())
                        .bind(now)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db("record intent"))?;
                    intent_from_row(&row)
                }

                async fn intent(&self, shop_domain: &str, kind: ResourceKind) -> Result<Option<Intent>> {
                    let sql = format!(
                        "SELECT {INTENT_COLUMNS} FROM shop_intents WHERE shop_domain = $1 AND kind = $2"
                    );
                    let row = sqlx::query(&sql)
                        .bind(shop_domain)
                        .bind(kind.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db("select intent"))?;
                    row.as_ref().map(intent_from_row).transpose()
                }

                async fn clear_intent(&self, shop_domain: &str, kind: ResourceKind) -> Result<()> {
                    sqlx::query("DELETE FROM shop_intents WHERE shop_domain = $1 AND kind = $2")
                        .bind(shop_domain)
                        .bind(kind.as_str())
                        .execute(&self.pool)
                        .await
                        .map_err(db("delete intent"))?;
                    Ok(())
                }

                async fn intent_queue(
                    &self,
                    kind: ResourceKind,
                    scope: &str,
                    limit: u32,
                ) -> Result<Vec<Intent>> {
                    let sql = format!(
                        "SELECT {INTENT_COLUMNS} FROM shop_intents WHERE kind = $1 AND scope = $2 \
                         ORDER BY created_at, shop_domain LIMIT $3"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(kind.as_str())
                        .bind(scope)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db("list intents"))?;
                    rows.iter().map(intent_from_row).collect()
                }

                async fn certificate(&self, domain: &str) -> Result<Option<CertificateRecord>> {
                    let sql = format!("SELECT {CERTIFICATE_COLUMNS} FROM shop_certificates WHERE domain = $1");
                    let row = sqlx::query(&sql)
                        .bind(domain)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db("select certificate"))?;
                    row.as_ref().map(certificate_from_row).transpose()
                }

                async fn shop_certificates(&self, shop_domain: &str) -> Result<Vec<CertificateRecord>> {
                    let sql = format!(
                        "SELECT {CERTIFICATE_COLUMNS} FROM shop_certificates WHERE shop_domain = $1 \
                         ORDER BY domain"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(shop_domain)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db("select shop certificates"))?;
                    rows.iter().map(certificate_from_row).collect()
                }

                async fn list_certificates(&self) -> Result<Vec<CertificateRecord>> {
                    let sql = format!("SELECT {CERTIFICATE_COLUMNS} FROM shop_certificates ORDER BY domain");
                    let rows = sqlx::query(&sql)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db("list certificates"))?;
                    rows.iter().map(certificate_from_row).collect()
                }

                async fn put_certificate(&self, record: &CertificateRecord) -> Result<()> {
                    let sql = format!(
                        "INSERT INTO shop_certificates ({CERTIFICATE_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                         ON CONFLICT (domain) DO UPDATE SET shop_domain = excluded.shop_domain, \
                         state = excluded.state, order_url = excluded.order_url, \
                         acm_arn = excluded.acm_arn, listener_arn = excluded.listener_arn, \
                         not_before = excluded.not_before, not_after = excluded.not_after, \
                         failures = excluded.failures, last_error = excluded.last_error, \
                         next_attempt_at = excluded.next_attempt_at, \
                         wait_reason = excluded.wait_reason, \
                         renewal_info_id = excluded.renewal_info_id, \
                         renew_after = excluded.renew_after, \
                         renewal_info_next_check = excluded.renewal_info_next_check, \
                         updated_at = excluded.updated_at"
                    );
                    sqlx::query(&sql)
                        .bind(record.domain.as_str())
                        .bind(&record.shop)
                        .bind(record.state.as_str())
                        .bind(record.order_url.as_deref())
                        .bind(record.acm_arn.as_deref())
                        .bind(record.listener_arn.as_deref())
                        .bind(record.not_before)
                        .bind(record.not_after)
                        .bind(i32::try_from(record.failures).unwrap_or(i32::MAX))
                        .bind(record.last_error.as_deref())
                        .bind(record.next_attempt_at)
                        .bind(record.wait_reason.map(WaitReason::as_str))
                        .bind(record.renewal_info_id.as_deref())
                        .bind(record.renew_after)
                        .bind(record.renewal_info_next_check)
                        .bind(record.updated_at)
                        .execute(&self.pool)
                        .await
                        .map_err(db("write certificate"))?;
                    Ok(())
                }

                async fn delete_certificate(&self, domain: &str) -> Result<bool> {
                    let result = sqlx::query("DELETE FROM shop_certificates WHERE domain = $1")
                        .bind(domain)
                        .execute(&self.pool)
                        .await
                        .map_err(db("delete certificate"))?;
                    Ok(result.rows_affected() > 0)
                }

                async fn take_budget(
                    &self,
                    budget: Budget,
                    subject: &str,
                    limit: BudgetLimit,
                    now: i64,
                ) -> Result<std::result::Result<(), BudgetExhausted>> {
                    let mut tx = self
                        .pool
                        .begin_with(BEGIN_SERIALIZED)
                        .await
                        .map_err(db("begin budget"))?;
                    if let Some(lock) = KEY_LOCK {
                        sqlx::query(lock)
                            .bind(format!("acme-budget/{}/{subject}", budget.as_str()))
                            .execute(&mut *tx)
                            .await
                            .map_err(db("lock budget"))?;
                    }
                    let (used, oldest) = budget_used(&mut *tx, budget, subject, limit, now).await?;
                    let verdict = budget_verdict(budget, limit, used, oldest);
                    if verdict.is_ok() {
                        let window = i64::try_from(limit.window.as_millis()).unwrap_or(i64::MAX);
                        // Events that left the window count for nothing any more.
                        sqlx::query(
                            "DELETE FROM acme_budget_events WHERE budget = $1 AND subject = $2 AND at <= $3",
                        )
                        .bind(budget.as_str())
                        .bind(subject)
                        .bind(now.saturating_sub(window))
                        .execute(&mut *tx)
                        .await
                        .map_err(db("purge budget"))?;
                        sqlx::query("INSERT INTO acme_budget_events (budget, subject, at) VALUES ($1, $2, $3)")
                            .bind(budget.as_str())
                            .bind(subject)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(db("take budget"))?;
                    }
                    tx.commit().await.map_err(db("commit budget"))?;
                    Ok(verdict)
                }

                async fn check_budget(
                    &self,
                    budget: Budget,
                    subject: &str,
                    limit: BudgetLimit,
                    now: i64,
                ) -> Result<std::result::Result<(), BudgetExhausted>> {
                    let (used, oldest) = budget_used(&self.pool, budget, subject, limit, now).await?;
                    Ok(budget_verdict(budget, limit, used, oldest))
                }

                async fn record_budget_event(&self, budget: Budget, subject: &str, now: i64) -> Result<()> {
                    sqlx::query("INSERT INTO acme_budget_events (budget, subject, at) VALUES ($1, $2, $3)")
                        .bind(budget.as_str())
                        .bind(subject)
                        .bind(now)
                        .execute(&self.pool)
                        .await
                        .map_err(db("record budget event"))?;
                    Ok(())
                }

                async fn acme_account(&self, directory_url: &str) -> Result<Option<String>> {
                    sqlx::query_scalar(
                        "SELECT credentials FROM acme_accounts WHERE directory_url = $1",
                    )
                    .bind(directory_url)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db("select acme account"))
                }

                async fn put_acme_account(
                    &self,
                    directory_url: &str,
                    sealed: &str,
                    now: i64,
                ) -> Result<String> {
                    let mut tx = self.pool.begin().await.map_err(db("begin acme account"))?;
                    // A concurrent insert of the same directory waits for the first to commit
                    // and then does nothing, so both read the first one's account.
                    sqlx::query(
                        "INSERT INTO acme_accounts (directory_url, credentials, created_at) \
                         VALUES ($1, $2, $3) ON CONFLICT (directory_url) DO NOTHING",
                    )
                    .bind(directory_url)
                    .bind(sealed)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("insert acme account"))?;
                    let stored: String = sqlx::query_scalar(
                        "SELECT credentials FROM acme_accounts WHERE directory_url = $1",
                    )
                    .bind(directory_url)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("select acme account"))?;
                    tx.commit().await.map_err(db("commit acme account"))?;
                    Ok(stored)
                }

                async fn put_challenge(&self, challenge: &AcmeChallenge) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO acme_challenges (token, domain, key_authorization, expires_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (token) DO UPDATE SET \
                         domain = excluded.domain, key_authorization = excluded.key_authorization, \
                         expires_at = excluded.expires_at",
                    )
                    .bind(&challenge.token)
                    .bind(&challenge.domain)
                    .bind(&challenge.key_authorization)
                    .bind(challenge.expires_at)
                    .execute(&self.pool)
                    .await
                    .map_err(db("put acme challenge"))?;
                    Ok(())
                }

                async fn challenge_response(&self, token: &str, now: i64) -> Result<Option<String>> {
                    sqlx::query_scalar(
                        "SELECT key_authorization FROM acme_challenges \
                         WHERE token = $1 AND expires_at > $2",
                    )
                    .bind(token)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db("select acme challenge"))
                }

                async fn remove_challenges(&self, domain: &str) -> Result<u64> {
                    let result = sqlx::query("DELETE FROM acme_challenges WHERE domain = $1")
                        .bind(domain)
                        .execute(&self.pool)
                        .await
                        .map_err(db("delete acme challenges"))?;
                    Ok(result.rows_affected())
                }

                async fn purge_expired_challenges(&self, now: i64) -> Result<u64> {
                    let result = sqlx::query("DELETE FROM acme_challenges WHERE expires_at <= $1")
                        .bind(now)
                        .execute(&self.pool)
                        .await
                        .map_err(db("purge acme challenges"))?;
                    Ok(result.rows_affected())
                }

                async fn put_patch_policy(&self, policy: &PatchPolicy, now: i64) -> Result<PatchPolicy> {
                    let sql = format!(
                        "INSERT INTO patch_policies ({POLICY_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (fleet) DO UPDATE SET region = excluded.region, \
                         enabled = excluded.enabled, interval_days = excluded.interval_days, \
                         window_start_hour = excluded.window_start_hour, \
                         window_end_hour = excluded.window_end_hour, weekdays = excluded.weekdays, \
                         script = excluded.script, \
                         command_timeout_seconds = excluded.command_timeout_seconds, \
                         updated_at = excluded.updated_at \
                         RETURNING {POLICY_COLUMNS}"
                    );
                    let weekdays = policy.weekdays.iter().map(|d| d.as_str().to_owned());
                    let row = sqlx::query(&sql)
                        .bind(policy.fleet.to_string())
                        .bind(policy.region.as_str())
                        .bind(policy.enabled)
                        .bind(i32::try_from(policy.interval_days).unwrap_or(i32::MAX))
                        .bind(i32::from(policy.window_start_hour))
                        .bind(i32::from(policy.window_end_hour))
                        .bind(to_json(weekdays))
                        .bind(&policy.script)
                        .bind(i32::try_from(policy.command_timeout_seconds).unwrap_or(i32::MAX))
                        .bind(now)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db("upsert patch policy"))?;
                    policy_from_row(&row)
                }

                async fn delete_patch_policy(&self, fleet: &FleetId) -> Result<bool> {
                    let mut tx = self.pool.begin().await.map_err(db("begin delete patch policy"))?;
                    let stop = format!(
                        "UPDATE patch_runs SET state = 'stopped', \
                         message = 'stopped: the patch policy was deleted', finished_at = {NOW} \
                         WHERE fleet = $1 AND state = 'running'"
                    );
                    sqlx::query(&stop)
                        .bind(fleet.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(db("stop patch run"))?;
                    let result = sqlx::query("DELETE FROM patch_policies WHERE fleet = $1")
                        .bind(fleet.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(db("delete patch policy"))?;
                    tx.commit().await.map_err(db("commit delete patch policy"))?;
                    Ok(result.rows_affected() > 0)
                }

                async fn patch_status(&self, region: Option<&str>) -> Result<Vec<FleetPatchStatus>> {
                    let sql = format!(
                        "SELECT {POLICY_COLUMNS} FROM patch_policies \
                         WHERE ($1 IS NULL OR region = $1) ORDER BY fleet"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(region)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db("list patch policies"))?;
                    let policies = rows.iter().map(policy_from_row).collect::<Result<Vec<_>>>()?;
                    let success = format!(
                        "SELECT {RUN_COLUMNS} FROM patch_runs WHERE fleet = $1 \
                         AND state = 'succeeded' ORDER BY id DESC LIMIT 1"
                    );
                    let mut status = Vec::with_capacity(policies.len());
                    for policy in policies {
                        let last_run = self.patch_runs(&policy.fleet, 1).await?.pop();
                        let row = sqlx::query(&success)
                            .bind(policy.fleet.to_string())
                            .fetch_optional(&self.pool)
                            .await
                            .map_err(db("select last patch success"))?;
                        let last_success = row.as_ref().map(run_from_row).transpose()?;
                        status.push(FleetPatchStatus { policy, last_run, last_success });
                    }
                    Ok(status)
                }

                async fn start_patch_run(
                    &self,
                    fleet: &FleetId,
                    instances: &[String],
                    refused: Option<&str>,
                    now: i64,
                ) -> Result<PatchRun> {
                    let (state, finished_at) = match refused {
                        Some(_) => (RunState::Refused, Some(now)),
                        None => (RunState::Running, None),
                    };
                    let sql = format!(
                        "INSERT INTO patch_runs (fleet, started_at, finished_at, state, message, \
                         instances) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {RUN_COLUMNS}"
                    );
                    let row = sqlx::query(&sql)
                        .bind(fleet.to_string())
                        .bind(now)
                        .bind(finished_at)
                        .bind(state.as_str())
                        .bind(refused.unwrap_or(""))
                        .bind(to_json(instances.iter().cloned()))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(|e| {
                            let message = format!("a patch run of {fleet} is already in progress");
                            write_error("insert patch run", e, &message)
                        })?;
                    run_from_row(&row)
                }

                async fn record_patch_result(&self, run_id: i64, result: &InstanceResult) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO patch_results (run_id, instance_id, state, started_at, \
                         finished_at, output) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (run_id, instance_id) DO UPDATE SET state = excluded.state, \
                         finished_at = excluded.finished_at, output = excluded.output",
                    )
                    .bind(run_id)
                    .bind(&result.instance_id)
                    .bind(result.state.as_str())
                    .bind(result.started_at)
                    .bind(result.finished_at)
                    .bind(&result.output)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        let message = format!("patch run {run_id} does not exist");
                        write_error("record patch result", e, &message)
                    })?;
                    Ok(())
                }

                async fn finish_patch_run(
                    &self,
                    run_id: i64,
                    state: RunState,
                    message: &str,
                    now: i64,
                ) -> Result<bool> {
                    let result = sqlx::query(
                        "UPDATE patch_runs SET state = $2, message = $3, finished_at = $4 \
                         WHERE id = $1 AND state = 'running'",
                    )
                    .bind(run_id)
                    .bind(state.as_str())
                    .bind(message)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(db("finish patch run"))?;
                    Ok(result.rows_affected() == 1)
                }

                async fn patch_runs(&self, fleet: &FleetId, limit: u32) -> Result<Vec<PatchRun>> {
                    let sql = format!(
                        "SELECT {RUN_COLUMNS} FROM patch_runs WHERE fleet = $1 \
                         ORDER BY id DESC LIMIT $2"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(fleet.to_string())
                        .bind(i64::from(limit.max(1)))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db("list patch runs"))?;
                    let mut runs = rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?;
                    let (Some(newest), Some(oldest)) = (runs.first(), runs.last()) else {
                        return Ok(runs);
                    };
                    let sql = format!(
                        "SELECT {RESULT_COLUMNS} FROM patch_results \
                         WHERE run_id >= $1 AND run_id <= $2"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(oldest.id)
                        .bind(newest.id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db("list patch results"))?;
                    for row in &rows {
                        let run_id: i64 = row.try_get(0).map_err(|e| corrupt("patch result", e))?;
                        if let Some(run) = runs.iter_mut().find(|run| run.id == run_id) {
                            run.results.push(result_from_row(row)?);
                        }
                    }
                    // In the run's order, which is the order instances are patched.
                    for run in &mut runs {
                        let order = |id: &str| run.instances.iter().position(|i| i == id);
                        let mut results = std::mem::take(&mut run.results);
                        results.sort_by_key(|r| order(&r.instance_id));
                        run.results = results;
                    }
                    Ok(runs)
                }

                fn subscribe(&self) -> broadcast::Receiver<Change> {
                    self.changes.subscribe()
                }
            }

            impl $store {
                /// Reads a page of shops with their placement and readiness, then their
                /// resources' status in one range query over the page.
                async fn list_page(&self, query: &ShopQuery, only: Option<&str>) -> Result<ShopPage> {
                    let filter = "WHERE ($1 IS NULL OR s.region = $1) \
                         AND ($2 IS NULL OR s.shop_domain > $2) \
                         AND ($3 IS NULL OR s.shop_domain = $3) \
                         AND (NOT $4 OR NOT COALESCE(st.ready AND st.ready_generation = s.generation, FALSE)) \
                         ORDER BY s.shop_domain LIMIT $5";
                    let limit = i64::from(query.limit.max(1)) + 1;
                    let rows = sqlx::query(&shop_select(filter))
                        .bind(query.region.as_deref())
                        .bind(query.after.as_deref())
                        .bind(only)
                        .bind(query.only_not_ready)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db("list shops"))?;

                    let mut shops = Vec::with_capacity(rows.len());
                    for row in rows.iter().take(query.limit.max(1) as usize) {
                        let record = shop_from_row(row)?;
                        let (placement, ready) = extras_from_row(row)?;
                        let pause = pause_from_row(row)?;
                        shops.push(ShopView { record, resources: Vec::new(), placement, ready, pause });
                    }
                    let next_after = (rows.len() as i64 == limit)
                        .then(|| shops.last().map(|s| s.record.spec.shop_domain.to_string()))
                        .flatten();

                    if let (Some(first), Some(last)) = (shops.first(), shops.last()) {
                        let sql = format!(
                            "SELECT {STATUS_COLUMNS} FROM resource_status \
                             WHERE shop_domain >= $1 AND shop_domain <= $2"
                        );
                        let rows = sqlx::query(&sql)
                            .bind(first.record.spec.shop_domain.as_str())
                            .bind(last.record.spec.shop_domain.as_str())
                            .fetch_all(&self.pool)
                            .await
                            .map_err(db("list resource status"))?;
                        for row in &rows {
                            let (shop, status) = status_from_row(row)?;
                            if let Some(view) = shops
                                .iter_mut()
                                .find(|v| v.record.spec.shop_domain.as_str() == shop)
                            {
                                view.resources.push(status);
                            }
                        }
                        for view in &mut shops {
                            view.resources.sort_by_key(|s| s.kind);
                        }
                    }
                    Ok(ShopPage { shops, next_after })
                }
            }
        }
    };
}

pub(super) use impl_store;
