//! Running a script on instances through SSM Run Command and waiting for every instance's
//! result: the nginx reload, the shop's env file, its restart and its removal all go through
//! [`run_on`].

use std::time::Duration;

use reconcilers::cloud::{CommandRequest, CommandTarget, InvocationStatus, RunCommand};

use super::Blocked;
use crate::runtime::Outcome;

impl super::Controller {
    /// The ids of the running instances named `name` in `region`, read now (not from the
    /// shared listings): a command goes to the instances as they are.
    pub(super) async fn instance_ids(
        &self,
        region: &str,
        name: &str,
    ) -> Result<Vec<String>, reconcilers::cloud::CloudError> {
        let instances = self.cloud.fleet(region).running_instances(name).await?;
        Ok(instances.into_iter().map(|instance| instance.id).collect())
    }
}

/// How often a command's invocations are looked at while it runs.
const POLL: Duration = Duration::from_millis(250);

/// What a script does, which names its failures in status.
#[derive(Clone, Copy, Debug)]
pub(super) enum Task {
    Reload,
    Restart,
    ShopEnv,
    Uninstall,
    /// A fleet's OS patch (issue #6).
    Patch,
    /// The check a patched instance passes before the next one is patched.
    HealthCheck,
}

impl Task {
    fn label(self) -> &'static str {
        match self {
            Task::Reload => "nginx reload",
            Task::Restart => "restart",
            Task::ShopEnv => "shop env file",
            Task::Uninstall => "uninstall",
            Task::Patch => "patch",
            Task::HealthCheck => "health check",
        }
    }

    fn failed(self) -> &'static str {
        match self {
            Task::Reload => "ReloadFailed",
            Task::Restart => "RestartFailed",
            Task::ShopEnv => "ShopEnvFailed",
            Task::Uninstall => "UninstallFailed",
            Task::Patch => "PatchFailed",
            Task::HealthCheck => "HealthCheckFailed",
        }
    }

    fn timed_out(self) -> &'static str {
        match self {
            Task::Reload => "ReloadTimedOut",
            Task::Restart => "RestartTimedOut",
            Task::ShopEnv => "ShopEnvTimedOut",
            Task::Uninstall => "UninstallTimedOut",
            Task::Patch => "PatchTimedOut",
            Task::HealthCheck => "HealthCheckTimedOut",
        }
    }
}

/// Sends `commands` to `instances` and waits until each one ran them; the first instance
/// that failed fails the whole run.
pub(super) async fn run_on(
    ssm: &dyn RunCommand,
    instances: &[String],
    task: Task,
    commands: Vec<String>,
    comment: String,
    timeout: Duration,
) -> Result<(), Blocked> {
    let command_id = send(ssm, instances, commands, comment, timeout).await?;
    wait_for(ssm, &command_id, instances, task, timeout)
        .await
        .map(|_| ())
}

/// Sends `commands` to `instances`; returns the command's id.
pub(super) async fn send(
    ssm: &dyn RunCommand,
    instances: &[String],
    commands: Vec<String>,
    comment: String,
    timeout: Duration,
) -> Result<String, Blocked> {
    let request = CommandRequest {
        target: CommandTarget::Instances(instances.to_vec()),
        commands,
        comment,
        timeout_seconds: u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX),
    };
    Ok(ssm.send_command(&request).await?)
}

/// Waits until each of `instances` ran the command `command_id` (sent before, perhaps by a
/// process that crashed since); returns the invocations' output. The first instance that
/// failed fails the whole wait.
pub(super) async fn wait_for(
    ssm: &dyn RunCommand,
    command_id: &str,
    instances: &[String],
    task: Task,
    timeout: Duration,
) -> Result<Vec<String>, Blocked> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::time::sleep(POLL).await;
        let invocations = ssm.invocations(command_id).await?;
        if let Some(failed) = invocations
            .iter()
            .find(|i| i.status.is_done() && i.status != InvocationStatus::Success)
        {
            return Err(Blocked {
                reason: task.failed(),
                message: format!(
                    "{} on {} ended {:?}: {}",
                    task.label(),
                    failed.instance_id,
                    failed.status,
                    failed.error
                ),
                outcome: Outcome::Retry(task.label()),
            });
        }
        let done = invocations.iter().filter(|i| i.status.is_done()).count();
        if done == instances.len() {
            return Ok(invocations.into_iter().map(|i| i.output).collect());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Blocked {
                reason: task.timed_out(),
                message: format!(
                    "{}: {done} of {} instances finished in time",
                    task.label(),
                    instances.len()
                ),
                outcome: Outcome::Retry(task.label()),
            });
        }
    }
}
