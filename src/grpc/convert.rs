//! Conversions between protobuf messages and domain types. The only place that knows both.

use std::net::IpAddr;

use reconcilers::Hostname;
use reconcilers::config::{InstanceGroup, RegionConfig};
use reconcilers::domain_check::{Diagnosis, Severity};
use reconcilers::spec::{BucketName, RegionName, ShopRecord};
use reconcilers::status::{self, ConditionType, Health, ResourceKind, SyncState};
use tonic::Status;

use super::proto;
use crate::controller::Plan;
use crate::store::{Pause, ShopView};

pub(crate) fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

#[cfg(test)]
fn millis(timestamp: &prost_types::Timestamp) -> i64 {
    timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000
}

fn resource_kind(kind: ResourceKind) -> proto::ResourceKind {
    match kind {
        ResourceKind::Artifact => proto::ResourceKind::Artifact,
        ResourceKind::Deployment => proto::ResourceKind::Deployment,
        ResourceKind::TargetGroup => proto::ResourceKind::TargetGroup,
        ResourceKind::Listener => proto::ResourceKind::Listener,
        ResourceKind::NginxConfig => proto::ResourceKind::NginxConfig,
        ResourceKind::Certificate => proto::ResourceKind::Certificate,
        ResourceKind::Restart => proto::ResourceKind::Restart,
    }
}

fn sync_state(sync: SyncState) -> proto::SyncState {
    match sync {
        SyncState::Synced => proto::SyncState::Synced,
        SyncState::OutOfSync => proto::SyncState::OutOfSync,
        SyncState::Unknown => proto::SyncState::Unknown,
    }
}

fn health(health: Health) -> proto::Health {
    match health {
        Health::Healthy => proto::Health::Healthy,
        Health::Progressing => proto::Health::Progressing,
        Health::Degraded => proto::Health::Degraded,
    }
}

fn condition_type(kind: ConditionType) -> proto::ConditionType {
    match kind {
        ConditionType::Ready => proto::ConditionType::Ready,
        ConditionType::Progressing => proto::ConditionType::Progressing,
        ConditionType::Degraded => proto::ConditionType::Degraded,
    }
}

pub(crate) fn shop_spec(record: &ShopRecord) -> proto::ShopSpec {
    let spec = &record.spec;
    proto::ShopSpec {
        shop_domain: spec.shop_domain.to_string(),
        region: spec.region.to_string(),
        source_bucket: spec.source_bucket.to_string(),
        source_version: spec.source_version.to_string(),
        custom_domain: spec.custom_domain.as_ref().map(Hostname::to_string),
        generation: record.generation,
        restart_generation: record.restart_generation,
        deletion_requested_at: record.deletion_requested_at.map(timestamp),
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
    }
}

pub(crate) fn shop(view: &ShopView, now: i64) -> proto::Shop {
    let needed = view.record.needed_kinds();
    let (conditions, blocker) =
        status::summarize(view.record.generation, &needed, &view.resources, now);
    let resources = view
        .resources
        .iter()
        .map(|r| proto::ResourceStatus {
            kind: resource_kind(r.kind).into(),
            desired: r.desired.clone(),
            observed: r.observed.clone(),
            sync: sync_state(r.sync).into(),
            health: health(r.health).into(),
            reason: r.reason.clone(),
            message: r.message.clone(),
            observed_generation: r.observed_generation,
            last_transition: Some(timestamp(r.last_transition)),
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at.map(timestamp),
        })
        .collect();
    // A pause explains why nothing moves: it is what blocks the shop, and nothing progresses.
    let (conditions, blocked_by) = match &view.pause {
        Some(pause) => paused(conditions, pause, view.record.generation, now),
        None => (
            conditions,
            blocker.map(|b| proto::Blocker {
                kind: resource_kind(b.kind).into(),
                reason: b.reason,
                message: b.message,
                next_attempt_at: b.next_attempt_at.map(timestamp),
            }),
        ),
    };
    let conditions = conditions
        .into_iter()
        .map(|c| proto::Condition {
            r#type: condition_type(c.kind).into(),
            status: match c.status {
                Some(true) => proto::ConditionStatus::True,
                Some(false) => proto::ConditionStatus::False,
                None => proto::ConditionStatus::Unknown,
            }
            .into(),
            reason: c.reason,
            message: c.message,
            observed_generation: c.observed_generation,
            last_transition: Some(timestamp(c.last_transition)),
        })
        .collect();
    proto::Shop {
        spec: Some(shop_spec(&view.record)),
        status: Some(proto::ShopStatus {
            conditions,
            resources,
            blocked_by,
            placement: view.placement.as_ref().map(|p| proto::Placement {
                instance_group: p.instance_group.clone(),
                nlb_arn: p.nlb_arn.clone(),
                port: u32::from(p.port),
            }),
            paused: view.pause.as_ref().map(pause),
        }),
    }
}

fn pause(pause: &Pause) -> proto::Pause {
    proto::Pause {
        region: pause.region,
        reason: pause.reason.clone(),
        since: Some(timestamp(pause.since)),
    }
}

/// `Paused: <reason>`, naming the region when the pause is the region's.
fn pause_message(pause: &Pause) -> String {
    match (pause.region, pause.reason.is_empty()) {
        (true, true) => "Paused: the shop's region is paused".to_owned(),
        (true, false) => format!("Paused: the shop's region is paused: {}", pause.reason),
        (false, true) => "Paused".to_owned(),
        (false, false) => format!("Paused: {}", pause.reason),
    }
}

/// The conditions and blocker of a paused shop: Ready stays what it was (a converged shop
/// still serves), Progressing is false, and the pause blocks every resource (no kind).
fn paused(
    conditions: Vec<status::Condition>,
    pause: &Pause,
    generation: i64,
    now: i64,
) -> (Vec<status::Condition>, Option<proto::Blocker>) {
    let message = pause_message(pause);
    let conditions = conditions
        .into_iter()
        .map(|c| match c.kind {
            ConditionType::Progressing => status::Condition {
                kind: ConditionType::Progressing,
                status: Some(false),
                reason: "Paused".to_owned(),
                message: message.clone(),
                observed_generation: generation,
                last_transition: pause.since.min(now),
            },
            _ => c,
        })
        .collect();
    let blocker = proto::Blocker {
        kind: proto::ResourceKind::Unspecified.into(),
        reason: "Paused".to_owned(),
        message,
        next_attempt_at: None,
    };
    (conditions, Some(blocker))
}

/// A plan as the API shows it.
pub(crate) fn plan(plan: &Plan) -> proto::PlanShopResponse {
    proto::PlanShopResponse {
        shop_domain: plan.shop.clone(),
        generation: plan.generation,
        paused: plan.pause.as_ref().map(pause),
        steps: plan
            .steps
            .iter()
            .map(|step| proto::PlannedStep {
                kind: resource_kind(step.kind).into(),
                actions: step.actions.clone(),
                waiting_for: step
                    .waiting_for
                    .iter()
                    .map(|k| resource_kind(*k).into())
                    .collect(),
                note: step.note.clone(),
            })
            .collect(),
    }
}

pub(crate) fn check_domain(
    domain: &Hostname,
    region: &RegionConfig,
    diagnosis: &Diagnosis,
) -> proto::CheckDomainResponse {
    let severity = |severity| match severity {
        Severity::Ok => proto::FindingSeverity::Ok,
        Severity::Warning => proto::FindingSeverity::Warning,
        Severity::Error => proto::FindingSeverity::Error,
    };
    proto::CheckDomainResponse {
        domain: domain.to_string(),
        region: region.region.to_string(),
        findings: diagnosis
            .findings
            .iter()
            .map(|finding| proto::DomainFinding {
                severity: severity(finding.severity).into(),
                code: finding.code.to_owned(),
                message: finding.message.clone(),
                fix: finding.fix.clone(),
            })
            .collect(),
        blocked: diagnosis.blocking().is_some(),
    }
}

fn invalid(field: &str, error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {error}"))
}

pub(crate) fn region_config_from_proto(
    config: proto::RegionConfig,
) -> Result<RegionConfig, Status> {
    let region = RegionName::parse(&config.region).map_err(|e| invalid("region", e))?;
    let artifact_bucket =
        BucketName::parse(&config.artifact_bucket).map_err(|e| invalid("artifact_bucket", e))?;
    let global_accelerator_ips = config
        .global_accelerator_ips
        .iter()
        .map(|ip| {
            ip.parse::<IpAddr>()
                .map_err(|e| invalid("global_accelerator_ips", format!("{ip:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let allowed_parent_domains = config
        .allowed_parent_domains
        .iter()
        .map(|d| {
            Hostname::parse(d).map_err(|e| invalid("allowed_parent_domains", format!("{d:?} {e}")))
        })
        .collect::<Result<_, _>>()?;
    let config = RegionConfig {
        region,
        enabled: config.enabled,
        codebuild_project: config.codebuild_project,
        artifact_bucket,
        codedeploy_application: config.codedeploy_application,
        proxy_name_tag: config.proxy_name_tag,
        nginx_config_dir: config.nginx_config_dir,
        alb_https_listener_arns: config.alb_https_listener_arns,
        acme_responder_target_group_arn: config.acme_responder_target_group_arn,
        global_accelerator_ips,
        allowed_parent_domains,
        updated_at: 0,
    };
    config
        .validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(config)
}

pub(crate) fn region_config(config: &RegionConfig) -> proto::RegionConfig {
    proto::RegionConfig {
        region: config.region.to_string(),
        enabled: config.enabled,
        codebuild_project: config.codebuild_project.clone(),
        artifact_bucket: config.artifact_bucket.to_string(),
        codedeploy_application: config.codedeploy_application.clone(),
        proxy_name_tag: config.proxy_name_tag.clone(),
        nginx_config_dir: config.nginx_config_dir.clone(),
        alb_https_listener_arns: config.alb_https_listener_arns.clone(),
        acme_responder_target_group_arn: config.acme_responder_target_group_arn.clone(),
        global_accelerator_ips: config
            .global_accelerator_ips
            .iter()
            .map(IpAddr::to_string)
            .collect(),
        allowed_parent_domains: config
            .allowed_parent_domains
            .iter()
            .map(Hostname::to_string)
            .collect(),
        updated_at: Some(timestamp(config.updated_at)),
    }
}

pub(crate) fn instance_group_from_proto(
    group: proto::InstanceGroup,
) -> Result<InstanceGroup, Status> {
    let region = RegionName::parse(&group.region).map_err(|e| invalid("region", e))?;
    let port = |field, value: u32| {
        u16::try_from(value).map_err(|_| invalid(field, "must be at most 65535"))
    };
    let group = InstanceGroup {
        name: group.name,
        region,
        nlb_arns: group.nlb_arns,
        port_min: port("port_min", group.port_min)?,
        port_max: port("port_max", group.port_max)?,
        capacity: group.capacity,
        codedeploy_deployment_group: group.codedeploy_deployment_group,
        enabled: group.enabled,
        updated_at: 0,
    };
    group
        .validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(group)
}

pub(crate) fn instance_group(group: &InstanceGroup) -> proto::InstanceGroup {
    proto::InstanceGroup {
        name: group.name.clone(),
        region: group.region.to_string(),
        nlb_arns: group.nlb_arns.clone(),
        port_min: u32::from(group.port_min),
        port_max: u32::from(group.port_max),
        capacity: group.capacity,
        codedeploy_deployment_group: group.codedeploy_deployment_group.clone(),
        enabled: group.enabled,
        updated_at: Some(timestamp(group.updated_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_including_before_the_epoch() {
        for value in [0, 1, 999, 1_700_000_000_123, -1, -1001] {
            assert_eq!(millis(&timestamp(value)), value, "{value}");
        }
    }
}
