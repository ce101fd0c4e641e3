//! `shopctl patch`: the fleets' patch policies (issue #6), and when each fleet was last
//! patched.

use std::path::PathBuf;

use clap::Subcommand;
use serde::Deserialize;
use serde_json::{Value, json};
use shop_controller::grpc::proto::admin_service_client::AdminServiceClient;
use shop_controller::grpc::proto::{
    DeletePatchPolicyRequest, FleetPatchStatus, GetPatchStatusRequest, PatchPolicy, PatchRun,
    PutPatchPolicyRequest,
};

use crate::CliError;
use crate::cli::{Output, read_yaml};
use crate::connect::Authed;
use crate::render::print;

#[derive(Debug, Subcommand)]
pub(crate) enum PatchCommand {
    /// Every fleet with a policy: when it was last patched, its last run, the next one due.
    Status {
        /// Only fleets of this region.
        #[arg(long)]
        region: Option<String>,
        /// Also list each instance's result in the last run.
        #[arg(long)]
        instances: bool,
    },
    /// Create or replace a fleet's policy from a YAML file.
    Put {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Remove a fleet's policy; its runs stay as history.
    Delete { fleet: String },
}

/// `patch-policy.yaml`, as documented in the README.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    /// `group/<name>` or `proxy/<region>`.
    fleet: String,
    #[serde(default)]
    region: String,
    #[serde(default = "yes")]
    enabled: bool,
    interval_days: u32,
    window_start_hour: u32,
    window_end_hour: u32,
    #[serde(default)]
    weekdays: Vec<String>,
    #[serde(default)]
    script: String,
    #[serde(default = "default_timeout")]
    command_timeout_seconds: u32,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> u32 {
    3600
}

impl From<PolicyFile> for PatchPolicy {
    fn from(file: PolicyFile) -> Self {
        PatchPolicy {
            fleet: file.fleet,
            region: file.region,
            enabled: file.enabled,
            interval_days: file.interval_days,
            window_start_hour: file.window_start_hour,
            window_end_hour: file.window_end_hour,
            weekdays: file.weekdays,
            script: file.script,
            command_timeout_seconds: file.command_timeout_seconds,
            updated_at: None,
        }
    }
}

/// Runs one `shopctl patch` subcommand.
pub(crate) async fn patch(
    admin: &mut AdminServiceClient<Authed>,
    output: Output,
    command: PatchCommand,
) -> Result<(), CliError> {
    match command {
        PatchCommand::Status { region, instances } => {
            let request = GetPatchStatusRequest {
                region: region.unwrap_or_default(),
            };
            let status = admin.get_patch_status(request).await?.into_inner();
            let value = Value::Array(status.fleets.iter().map(status_json).collect());
            print(output, &status_text(&status.fleets, instances), &value);
        }
        PatchCommand::Put { file } => {
            let parsed: PolicyFile = read_yaml(&file)?;
            let request = PutPatchPolicyRequest {
                policy: Some(parsed.into()),
            };
            let stored = admin.put_patch_policy(request).await?.into_inner();
            print(
                output,
                &format!("patch policy of {} stored", stored.fleet),
                &policy_json(&stored),
            );
        }
        PatchCommand::Delete { fleet } => {
            let request = DeletePatchPolicyRequest {
                fleet: fleet.clone(),
            };
            admin.delete_patch_policy(request).await?;
            print(
                output,
                &format!("patch policy of {fleet} deleted"),
                &json!({ "deleted": fleet }),
            );
        }
    }
    Ok(())
}

fn millis(timestamp: Option<&prost_types::Timestamp>) -> Option<i64> {
    timestamp.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// `YYYY-MM-DD HH:MM` in UTC, or `-`.
fn utc(timestamp: Option<&prost_types::Timestamp>) -> String {
    millis(timestamp).map_or_else(|| "-".to_owned(), reconcilers::utc::minutes)
}

fn run_summary(run: Option<&PatchRun>) -> String {
    match run {
        None => "-".to_owned(),
        Some(run) => {
            let done = run.results.iter().filter(|r| r.state != "patching").count();
            format!(
                "{} {}/{} at {}",
                run.state,
                done,
                run.instances.len(),
                utc(run.started_at.as_ref())
            )
        }
    }
}

/// The table of `shopctl patch status`.
pub(crate) fn status_text(fleets: &[FleetPatchStatus], instances: bool) -> String {
    let mut text = format!(
        "{:<28} {:<8} {:<17} {:<38} NEXT DUE",
        "FLEET", "ENABLED", "LAST PATCHED", "LAST RUN"
    );
    for fleet in fleets {
        let policy = fleet.policy.clone().unwrap_or_default();
        text.push_str(&format!(
            "\n{:<28} {:<8} {:<17} {:<38} {}",
            policy.fleet,
            policy.enabled,
            utc(fleet.last_patched.as_ref()),
            run_summary(fleet.last_run.as_ref()),
            utc(fleet.next_due.as_ref()),
        ));
        let Some(run) = &fleet.last_run else {
            continue;
        };
        if !run.message.is_empty() {
            text.push_str(&format!("\n  {}", run.message));
        }
        if instances {
            for result in &run.results {
                let output = result.output.lines().last().unwrap_or_default();
                text.push_str(&format!(
                    "\n  {:<21} {:<10} {output}",
                    result.instance_id, result.state
                ));
            }
        }
    }
    text
}

fn policy_json(policy: &PatchPolicy) -> Value {
    json!({
        "fleet": policy.fleet,
        "region": policy.region,
        "enabled": policy.enabled,
        "interval_days": policy.interval_days,
        "window_start_hour": policy.window_start_hour,
        "window_end_hour": policy.window_end_hour,
        "weekdays": policy.weekdays,
        "script": policy.script,
        "command_timeout_seconds": policy.command_timeout_seconds,
    })
}

fn status_json(fleet: &FleetPatchStatus) -> Value {
    let run = fleet.last_run.as_ref().map(|run| {
        json!({
            "id": run.id,
            "state": run.state,
            "message": run.message,
            "started_at": millis(run.started_at.as_ref()),
            "finished_at": millis(run.finished_at.as_ref()),
            "instances": run.instances,
            "results": run.results.iter().map(|r| json!({
                "instance_id": r.instance_id,
                "state": r.state,
                "started_at": millis(r.started_at.as_ref()),
                "finished_at": millis(r.finished_at.as_ref()),
                "output": r.output,
            })).collect::<Vec<_>>(),
        })
    });
    json!({
        "policy": fleet.policy.as_ref().map(policy_json),
        "last_patched": millis(fleet.last_patched.as_ref()),
        "last_run": run,
        "next_due": millis(fleet.next_due.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_utc_dates() {
        let at = |seconds| utc(Some(&prost_types::Timestamp { seconds, nanos: 0 }));
        assert_eq!(at(0), "1970-01-01 00:00");
        assert_eq!(at(1_704_067_200 + 3 * 3600 + 25 * 60), "2024-01-01 03:25");
        assert_eq!(at(951_782_400), "2000-02-29 00:00");
        assert_eq!(at(1_709_164_800), "2024-02-29 00:00");
        assert_eq!(utc(None), "-");
    }
}
