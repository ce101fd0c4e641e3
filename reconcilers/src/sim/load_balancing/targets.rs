//! Targets of the simulated target groups and their health, computed from the clock, the
//! instance's state and whether a listener uses the group.

use std::collections::btree_map::Entry;
use std::time::Duration;

use crate::cloud::{CloudError, ErrorKind, Quota, Target, TargetHealth};

use super::{Registration, SimTargetGroup, State, error, invalid, not_found};
use crate::sim::fleet::FleetState;

pub(super) fn register(
    state: &mut State,
    group_arn: &str,
    targets: &[Target],
) -> Result<(), CloudError> {
    const OPERATION: &str = "elasticloadbalancing:RegisterTargets";
    let now = state.now();
    let quota = state.config.quotas.targets_per_target_group;
    if let Some(bad) = targets.iter().find(|t| !state.fleet.is_running(&t.id)) {
        let message = format!("target {} is not a running instance", bad.id);
        return Err(invalid(OPERATION, "InvalidTarget", message));
    }
    let group = group_mut(state, OPERATION, group_arn)?;
    let targets: Vec<Target> = targets.iter().map(|t| with_port(group, t)).collect();
    let added = targets.iter().filter(|t| !is_registered(group, t)).count();
    if live_targets(group) + added > quota {
        let kind = ErrorKind::QuotaExceeded(Quota::Other("TargetsPerTargetGroup".to_owned()));
        let message = format!("a target group takes at most {quota} targets");
        return Err(error(kind, OPERATION, "TooManyTargets", message));
    }

    for target in targets {
        let fresh = Registration {
            registered: now,
            deregistered: None,
        };
        match group.targets.entry(target) {
            Entry::Vacant(slot) => {
                slot.insert(fresh);
            }
            Entry::Occupied(mut slot) if slot.get().deregistered.is_some() => {
                slot.insert(fresh);
            }
            Entry::Occupied(_) => {}
        }
    }
    Ok(())
}

/// Deregistering a target that is not registered is not an error. Targets of a group no
/// listener uses leave at once; the others drain for the deregistration delay.
pub(super) fn deregister(
    state: &mut State,
    group_arn: &str,
    targets: &[Target],
) -> Result<(), CloudError> {
    const OPERATION: &str = "elasticloadbalancing:DeregisterTargets";
    let now = state.now();
    let group = group_mut(state, OPERATION, group_arn)?;
    let targets: Vec<Target> = targets.iter().map(|t| with_port(group, t)).collect();
    for target in targets {
        if group.in_use_since.is_none() {
            group.targets.remove(&target);
        } else if let Some(registration) = group.targets.get_mut(&target) {
            registration.deregistered.get_or_insert(now);
        }
    }
    Ok(())
}

pub(super) fn health(state: &mut State, group_arn: &str) -> Result<Vec<TargetHealth>, CloudError> {
    const OPERATION: &str = "elasticloadbalancing:DescribeTargetHealth";
    let now = state.now();
    let delay = state.config.timings.deregistration_delay;
    let group = state
        .elb
        .target_groups
        .get_mut(group_arn)
        .ok_or_else(|| not_found(OPERATION, "TargetGroupNotFound", group_arn))?;
    group
        .targets
        .retain(|_, r| r.deregistered.is_none_or(|at| now < at + delay));
    let (group, fleet) = (&*group, &state.fleet);
    let health = group
        .targets
        .iter()
        .map(|(target, registration)| TargetHealth {
            target: target.clone(),
            state: target_state(fleet, group, registration, &target.id, now).to_owned(),
        });
    Ok(health.collect())
}

fn target_state(
    fleet: &FleetState,
    group: &SimTargetGroup,
    registration: &Registration,
    instance_id: &str,
    now: Duration,
) -> &'static str {
    if registration.deregistered.is_some() {
        return "draining";
    }
    let Some(in_use_since) = group.in_use_since else {
        return "unused";
    };
    let Some(running_since) = fleet.running_since(instance_id) else {
        return "unhealthy";
    };
    let check = &group.group.health_check;
    let passing = Duration::from_secs(u64::from(check.interval_seconds * check.healthy_threshold));
    let checking_since = registration.registered.max(in_use_since).max(running_since);
    if now >= checking_since + passing {
        "healthy"
    } else {
        "initial"
    }
}

fn group_mut<'a>(
    state: &'a mut State,
    operation: &'static str,
    arn: &str,
) -> Result<&'a mut SimTargetGroup, CloudError> {
    let group = state.elb.target_groups.get_mut(arn);
    group.ok_or_else(|| not_found(operation, "TargetGroupNotFound", arn))
}

/// A target without a port takes the group's port, as in ELB.
fn with_port(group: &SimTargetGroup, target: &Target) -> Target {
    let port = if target.port == 0 {
        group.group.port
    } else {
        target.port
    };
    Target {
        id: target.id.clone(),
        port,
    }
}

fn is_registered(group: &SimTargetGroup, target: &Target) -> bool {
    group
        .targets
        .get(target)
        .is_some_and(|r| r.deregistered.is_none())
}

fn live_targets(group: &SimTargetGroup) -> usize {
    group
        .targets
        .keys()
        .filter(|t| is_registered(group, t))
        .count()
}
