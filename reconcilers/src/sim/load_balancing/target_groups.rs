//! Target groups of the simulated load balancers: ELB's naming and health check rules, creates
//! that repeat an identical create idempotently, the target group quota, and deletion refused
//! while a listener uses the group. Targets in a group belong to `targets`.

use std::collections::BTreeMap;

use crate::cloud::{CloudError, ErrorKind, HealthCheck, Quota, TargetGroup, TargetGroupSpec};

use super::{SimTargetGroup, State, arn, error, invalid, merge_tags, not_found};

pub(super) fn create(state: &mut State, spec: &TargetGroupSpec) -> Result<TargetGroup, CloudError> {
    const OPERATION: &str = "elasticloadbalancing:CreateTargetGroup";
    if !valid_target_group_name(&spec.name) {
        let message = format!("target group name {:?} is not valid", spec.name);
        return Err(invalid(OPERATION, "ValidationError", message));
    }
    if spec.port == 0 || !valid_health_check(&spec.health_check) {
        let message = "port or health check settings are out of range";
        return Err(invalid(OPERATION, "ValidationError", message));
    }
    let existing = state
        .elb
        .target_groups
        .values()
        .find(|g| g.group.name == spec.name);
    if let Some(existing) = existing {
        return same_settings(existing, spec)
            .then(|| state.elb.describe_group(existing))
            .ok_or_else(|| {
                let message = format!("a target group named {} exists", spec.name);
                let kind = ErrorKind::AlreadyExists;
                error(kind, OPERATION, "DuplicateTargetGroupName", message)
            });
    }
    let quota = state.config.quotas.target_groups;
    if state.elb.target_groups.len() >= quota {
        let kind = ErrorKind::QuotaExceeded(Quota::TargetGroups);
        let message = format!("the region holds at most {quota} target groups");
        return Err(error(kind, OPERATION, "TooManyTargetGroups", message));
    }

    let mut tags = Vec::new();
    merge_tags(
        OPERATION,
        &mut tags,
        &spec.tags,
        state.config.quotas.tags_per_resource,
    )?;
    let resource = format!("targetgroup/{}/{}", spec.name, state.rng.hex(16));
    let group = TargetGroup {
        arn: arn(state, &resource),
        name: spec.name.clone(),
        port: spec.port,
        protocol: "TCP".to_owned(),
        vpc_id: spec.vpc_id.clone(),
        health_check: spec.health_check.clone(),
        load_balancer_arns: vec![],
    };
    let sim = SimTargetGroup {
        group: group.clone(),
        tags,
        targets: BTreeMap::new(),
        in_use_since: None,
    };
    state.elb.target_groups.insert(group.arn.clone(), sim);
    Ok(group)
}

pub(super) fn delete(state: &mut State, arn: &str) -> Result<(), CloudError> {
    const OPERATION: &str = "elasticloadbalancing:DeleteTargetGroup";
    if !state.elb.target_groups.contains_key(arn) {
        return Err(not_found(OPERATION, "TargetGroupNotFound", arn));
    }
    if !state.elb.forwarding_to(arn).is_empty() {
        let message = format!("target group {arn} is currently in use by a listener");
        return Err(invalid(OPERATION, "ResourceInUse", message));
    }
    state.elb.target_groups.remove(arn);
    Ok(())
}

/// Inserts an HTTP target group with default health checks (a test control: the controller
/// creates TCP groups only).
pub(super) fn insert_http(state: &mut State, name: &str, port: u16) -> String {
    let resource = format!("targetgroup/{name}/{}", state.rng.hex(16));
    let group = TargetGroup {
        arn: arn(state, &resource),
        name: name.to_owned(),
        port,
        protocol: "HTTP".to_owned(),
        vpc_id: state.config.vpc_id.clone(),
        health_check: HealthCheck {
            protocol: "HTTP".to_owned(),
            ..HealthCheck::default()
        },
        load_balancer_arns: vec![],
    };
    let sim = SimTargetGroup {
        group: group.clone(),
        tags: vec![],
        targets: BTreeMap::new(),
        in_use_since: None,
    };
    state.elb.target_groups.insert(group.arn.clone(), sim);
    group.arn
}

/// Whether a create with `spec` is a repeat of the group's create (tags do not count).
fn same_settings(existing: &SimTargetGroup, spec: &TargetGroupSpec) -> bool {
    let group = &existing.group;
    group.port == spec.port
        && group.protocol == "TCP"
        && group.vpc_id == spec.vpc_id
        && group.health_check == spec.health_check
}

/// ELB's rule: 1 to 32 letters, digits and hyphens, not starting or ending with a hyphen.
pub(super) fn valid_target_group_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn valid_health_check(check: &HealthCheck) -> bool {
    (5..=300).contains(&check.interval_seconds)
        && (2..=10).contains(&check.healthy_threshold)
        && (2..=10).contains(&check.unhealthy_threshold)
        && ["TCP", "HTTP", "HTTPS"].contains(&check.protocol.as_str())
}
