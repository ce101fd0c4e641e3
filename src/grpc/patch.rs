//! The patch policies and runs of issue #6 as the admin API shows them, and back.

use reconcilers::patching::{self, FleetId, InstanceResult, PatchRun, Weekday};
use reconcilers::spec::RegionName;
use tonic::Status;

use super::convert::timestamp;
use super::proto;
use crate::store::FleetPatchStatus;

fn invalid(field: &str, error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {error}"))
}

fn hour(field: &str, value: u32) -> Result<u8, Status> {
    u8::try_from(value)
        .ok()
        .filter(|h| *h < 24)
        .ok_or_else(|| invalid(field, "window hours are 0 to 23 (UTC)"))
}

/// A policy from the API, validated.
pub(crate) fn policy_from_proto(
    policy: proto::PatchPolicy,
) -> Result<patching::PatchPolicy, Status> {
    let fleet = FleetId::parse(&policy.fleet).map_err(|e| invalid("fleet", e))?;
    // A proxy fleet names its region; an empty region takes it.
    let region = match (&fleet, policy.region.as_str()) {
        (FleetId::Proxy(region), "") => region.clone(),
        (_, region) => RegionName::parse(region).map_err(|e| invalid("region", e))?,
    };
    let weekdays = policy
        .weekdays
        .iter()
        .map(|day| day.parse::<Weekday>().map_err(|e| invalid("weekdays", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = patching::PatchPolicy {
        fleet,
        region,
        enabled: policy.enabled,
        interval_days: policy.interval_days,
        window_start_hour: hour("window_start_hour", policy.window_start_hour)?,
        window_end_hour: hour("window_end_hour", policy.window_end_hour)?,
        weekdays,
        script: policy.script,
        command_timeout_seconds: policy.command_timeout_seconds,
        updated_at: 0,
    };
    policy
        .validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(policy)
}

/// A policy as the API shows it.
pub(crate) fn policy(policy: &patching::PatchPolicy) -> proto::PatchPolicy {
    proto::PatchPolicy {
        fleet: policy.fleet.to_string(),
        region: policy.region.to_string(),
        enabled: policy.enabled,
        interval_days: policy.interval_days,
        window_start_hour: u32::from(policy.window_start_hour),
        window_end_hour: u32::from(policy.window_end_hour),
        weekdays: policy
            .weekdays
            .iter()
            .map(|d| d.as_str().to_owned())
            .collect(),
        script: policy.script.clone(),
        command_timeout_seconds: policy.command_timeout_seconds,
        updated_at: Some(timestamp(policy.updated_at)),
    }
}

fn result(result: &InstanceResult) -> proto::PatchInstanceResult {
    proto::PatchInstanceResult {
        instance_id: result.instance_id.clone(),
        state: result.state.to_string(),
        started_at: Some(timestamp(result.started_at)),
        finished_at: result.finished_at.map(timestamp),
        output: result.output.clone(),
    }
}

fn run(run: &PatchRun) -> proto::PatchRun {
    proto::PatchRun {
        id: run.id,
        state: run.state.to_string(),
        message: run.message.clone(),
        started_at: Some(timestamp(run.started_at)),
        finished_at: run.finished_at.map(timestamp),
        instances: run.instances.clone(),
        results: run.results.iter().map(result).collect(),
    }
}

/// A fleet's status at `now`: when it was last patched, its last run, when the next is due.
pub(crate) fn status(status: &FleetPatchStatus, now: i64) -> proto::FleetPatchStatus {
    let next_due = match status.running() {
        Some(_) => None,
        None => status.policy.next_due(&status.history(), now),
    };
    proto::FleetPatchStatus {
        policy: Some(policy(&status.policy)),
        last_patched: status
            .last_success
            .as_ref()
            .and_then(|run| run.finished_at)
            .map(timestamp),
        last_run: status.last_run.as_ref().map(run),
        next_due: next_due.map(timestamp),
    }
}
