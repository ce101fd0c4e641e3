//! [`RunCommand`] over SSM: `AWS-RunShellScript` on instances by id or by tag, and the
//! per-instance results of a command.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ssm::types::{CommandInvocation, CommandInvocationStatus, Target};
use reconcilers::cloud::{
    CloudError, CommandRequest, CommandTarget, Invocation, InvocationStatus, RunCommand,
};

use super::calls::{Calls, all_pages};

const DOCUMENT: &str = "AWS-RunShellScript";

/// SSM rejects comments over 100 characters.
const COMMENT_LIMIT: usize = 100;

/// SSM's delivery timeout has a floor of 30 seconds.
const MIN_DELIVERY_TIMEOUT: u32 = 30;

/// Where SSM's combined plugin output switches from standard output to standard error.
const STDERR_MARKER: &str = "----------ERROR-------";

/// The SSM client of one region.
pub struct SsmRunCommand {
    client: aws_sdk_ssm::Client,
    calls: Arc<Calls>,
}

impl SsmRunCommand {
    pub(crate) fn new(client: aws_sdk_ssm::Client, calls: Arc<Calls>) -> Self {
        Self { client, calls }
    }
}

#[async_trait]
impl RunCommand for SsmRunCommand {
    async fn send_command(&self, request: &CommandRequest) -> Result<String, CloudError> {
        let (instance_ids, targets) = match &request.target {
            CommandTarget::Instances(ids) => (Some(ids.clone()), None),
            CommandTarget::Tag { key, value } => {
                let target = Target::builder()
                    .key(format!("tag:{key}"))
                    .values(value)
                    .build();
                (None, Some(vec![target]))
            }
        };
        let comment: String = request.comment.chars().take(COMMENT_LIMIT).collect();
        let timeout = request.timeout_seconds.max(1);
        let call = self
            .client
            .send_command()
            .document_name(DOCUMENT)
            .set_instance_ids(instance_ids)
            .set_targets(targets)
            .parameters("commands", request.commands.clone())
            .parameters("executionTimeout", vec![timeout.to_string()])
            .timeout_seconds(i32::try_from(timeout.max(MIN_DELIVERY_TIMEOUT)).unwrap_or(i32::MAX))
            .comment(comment)
            .send();
        let output = self.calls.run("ssm:SendCommand", call).await?;
        Ok(output
            .command()
            .and_then(|command| command.command_id())
            .unwrap_or_default()
            .to_owned())
    }

    async fn invocations(&self, command_id: &str) -> Result<Vec<Invocation>, CloudError> {
        all_pages(|next_token| async move {
            let call = self
                .client
                .list_command_invocations()
                .command_id(command_id)
                .details(true)
                .set_next_token(next_token)
                .send();
            let page = self.calls.run("ssm:ListCommandInvocations", call).await?;
            let items = page
                .command_invocations()
                .iter()
                .map(|invocation| invocation_of(command_id, invocation))
                .collect();
            Ok((items, page.next_token().map(str::to_owned)))
        })
        .await
    }
}

/// `ListCommandInvocations` has no separate standard error: each plugin's `Output` holds
/// standard output, then SSM's marker line and standard error (truncated to 2,500 characters).
fn invocation_of(command_id: &str, invocation: &CommandInvocation) -> Invocation {
    let (mut output, mut error) = (String::new(), String::new());
    for plugin in invocation.command_plugins() {
        let text = plugin.output().unwrap_or_default();
        let (stdout, stderr) = text.split_once(STDERR_MARKER).unwrap_or((text, ""));
        output.push_str(stdout);
        error.push_str(stderr.trim_start_matches('\n'));
    }
    Invocation {
        command_id: invocation.command_id().unwrap_or(command_id).to_owned(),
        instance_id: invocation.instance_id().unwrap_or_default().to_owned(),
        status: status_of(invocation.status()),
        output,
        error,
    }
}

/// `Delayed` waits for delivery like `Pending`; `Cancelling` and unknown states are still
/// running.
fn status_of(status: Option<&CommandInvocationStatus>) -> InvocationStatus {
    match status {
        Some(CommandInvocationStatus::Pending | CommandInvocationStatus::Delayed) => {
            InvocationStatus::Pending
        }
        Some(CommandInvocationStatus::Success) => InvocationStatus::Success,
        Some(CommandInvocationStatus::Failed) => InvocationStatus::Failed,
        Some(CommandInvocationStatus::TimedOut) => InvocationStatus::TimedOut,
        Some(CommandInvocationStatus::Cancelled) => InvocationStatus::Cancelled,
        _ => InvocationStatus::InProgress,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ssm::types::CommandPlugin;

    use super::*;

    #[test]
    fn plugin_output_splits_into_stdout_and_stderr() {
        let plugin = |output: &str| CommandPlugin::builder().output(output).build();
        let cases = [
            ("ok\n", "ok\n", ""),
            (
                "nginx: ok\n----------ERROR-------\nnginx: [emerg] bad\n",
                "nginx: ok\n",
                "nginx: [emerg] bad\n",
            ),
            ("", "", ""),
        ];
        for (text, stdout, stderr) in cases {
            let invocation = CommandInvocation::builder()
                .instance_id("i-1")
                .status(CommandInvocationStatus::Failed)
                .command_plugins(plugin(text))
                .build();
            let result = invocation_of("c-1", &invocation);
            assert_eq!(result.output, stdout);
            assert_eq!(result.error, stderr);
            assert_eq!(result.command_id, "c-1");
            assert_eq!(result.status, InvocationStatus::Failed);
        }
    }

    #[test]
    fn statuses_map_to_our_states() {
        let cases = [
            (CommandInvocationStatus::Delayed, InvocationStatus::Pending),
            (
                CommandInvocationStatus::Cancelling,
                InvocationStatus::InProgress,
            ),
            (CommandInvocationStatus::Success, InvocationStatus::Success),
            (
                CommandInvocationStatus::TimedOut,
                InvocationStatus::TimedOut,
            ),
        ];
        for (sdk, ours) in cases {
            assert_eq!(status_of(Some(&sdk)), ours);
        }
    }
}
