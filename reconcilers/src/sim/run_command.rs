//! SSM Run Command in the simulated account. A command resolves its targets when it is sent (a
//! tag target means the running instances carrying the tag then); each invocation is `Pending`
//! for [`super::Timings::command_start`], `InProgress` until [`super::Timings::command`], then
//! `Success`, `Failed` on instances a test chose, or `TimedOut` when the instance stopped
//! running or the command outlasted its timeout.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;

use crate::cloud::{
    CloudError, CommandRequest, CommandTarget, ErrorKind, Invocation, InvocationStatus, RunCommand,
    Tag,
};

use super::{SimulatedAws, State, error, paging};

/// SendCommand takes at most 50 instance ids.
const INSTANCE_IDS_PER_COMMAND: usize = 50;
/// SSM's range for a command's timeout.
const TIMEOUT_SECONDS: std::ops::RangeInclusive<u32> = 30..=2_592_000;

struct SimCommand {
    sent: Duration,
    /// When the last invocation finished.
    finished: Option<Duration>,
    timeout: Duration,
    comment: String,
    commands: Vec<String>,
    invocations: Vec<Invocation>,
}

/// A command as the simulated account received it, for tests that check what ran where and
/// when (such as no two patches of one fleet overlapping).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentCommand {
    pub id: String,
    pub comment: String,
    pub commands: Vec<String>,
    pub instance_ids: Vec<String>,
    /// Simulated time since the account was created.
    pub sent: Duration,
    /// When its last invocation finished, if all have.
    pub finished: Option<Duration>,
}

#[derive(Default)]
pub(crate) struct CommandsState {
    commands: BTreeMap<String, SimCommand>,
    /// Instance id to the error output commands on it fail with.
    failing_instances: HashMap<String, String>,
}

/// Moves invocations forward; finishes those whose time is up.
pub(crate) fn settle(state: &mut State) {
    let now = state.now();
    let timings = state.config.timings.clone();
    for command in state.commands.commands.values_mut() {
        if command.finished.is_some() {
            continue;
        }
        let elapsed = now.saturating_sub(command.sent);
        for invocation in &mut command.invocations {
            if invocation.status.is_done() || elapsed < timings.command_start {
                continue;
            }
            if elapsed < timings.command && elapsed < command.timeout {
                invocation.status = InvocationStatus::InProgress;
                continue;
            }
            let running = state.fleet.is_running(&invocation.instance_id);
            let failure = state
                .commands
                .failing_instances
                .get(&invocation.instance_id);
            (invocation.status, invocation.error) = match failure {
                _ if !running => (
                    InvocationStatus::TimedOut,
                    "instance not running".to_owned(),
                ),
                _ if timings.command > command.timeout => (
                    InvocationStatus::TimedOut,
                    "the command timed out".to_owned(),
                ),
                Some(message) => (InvocationStatus::Failed, message.clone()),
                None => (InvocationStatus::Success, String::new()),
            };
        }
        if command.invocations.iter().all(|i| i.status.is_done()) {
            // The last invocation finished at its due time, not at this settle.
            let due = timings.command.min(command.timeout);
            command.finished = Some(command.sent + due.max(timings.command_start));
        }
    }
}

fn send(state: &mut State, request: &CommandRequest) -> Result<String, CloudError> {
    validate(request)?;
    let instances = targets(state, &request.target)?;
    let id = state.rng.uuid();
    let invocations = instances
        .into_iter()
        .map(|instance_id| Invocation {
            command_id: id.clone(),
            instance_id,
            status: InvocationStatus::Pending,
            output: String::new(),
            error: String::new(),
        })
        .collect();
    let command = SimCommand {
        sent: state.now(),
        finished: None,
        timeout: Duration::from_secs(u64::from(request.timeout_seconds)),
        comment: request.comment.clone(),
        commands: request.commands.clone(),
        invocations,
    };
    state.commands.commands.insert(id.clone(), command);
    Ok(id)
}

fn validate(request: &CommandRequest) -> Result<(), CloudError> {
    let problem = if request.commands.is_empty() {
        Some("commands must not be empty".to_owned())
    } else if !TIMEOUT_SECONDS.contains(&request.timeout_seconds) {
        Some(format!(
            "timeout {} is out of range",
            request.timeout_seconds
        ))
    } else {
        match &request.target {
            CommandTarget::Instances(ids) if ids.is_empty() => Some("no instances".to_owned()),
            CommandTarget::Instances(ids) if ids.len() > INSTANCE_IDS_PER_COMMAND => {
                Some("at most 50 instance ids".to_owned())
            }
            CommandTarget::Tag { key, .. } if key.is_empty() => Some("empty tag key".to_owned()),
            _ => None,
        }
    };
    match problem {
        Some(message) => Err(error(
            ErrorKind::Invalid,
            "ssm:SendCommand",
            "ValidationException",
            message,
        )),
        None => Ok(()),
    }
}

/// The instances a command runs on; SSM refuses ids of instances that are not running.
fn targets(state: &State, target: &CommandTarget) -> Result<Vec<String>, CloudError> {
    match target {
        CommandTarget::Tag { key, value } => {
            Ok(state.fleet.running_with_tag(&Tag::new(key, value)))
        }
        CommandTarget::Instances(ids) => {
            if let Some(bad) = ids.iter().find(|id| !state.fleet.is_running(id)) {
                return Err(error(
                    ErrorKind::Invalid,
                    "ssm:SendCommand",
                    "InvalidInstanceId",
                    format!("instance {bad} is not a running managed instance"),
                ));
            }
            let mut ids = ids.clone();
            ids.sort();
            ids.dedup();
            Ok(ids)
        }
    }
}

/// Test controls for Run Command.
impl SimulatedAws {
    /// Commands on this instance fail with `message` as their error output, from now on.
    pub fn fail_commands_on(&self, instance_id: &str, message: &str) {
        let mut state = self.state();
        let failing = &mut state.commands.failing_instances;
        failing.insert(instance_id.to_owned(), message.to_owned());
    }

    /// Every command sent so far, oldest first.
    pub fn commands_sent(&self) -> Vec<SentCommand> {
        let mut state = self.state();
        state.settle();
        let mut sent: Vec<SentCommand> = state
            .commands
            .commands
            .iter()
            .map(|(id, command)| SentCommand {
                id: id.clone(),
                comment: command.comment.clone(),
                commands: command.commands.clone(),
                instance_ids: command
                    .invocations
                    .iter()
                    .map(|i| i.instance_id.clone())
                    .collect(),
                sent: command.sent,
                finished: command.finished,
            })
            .collect();
        sent.sort_by(|a, b| (a.sent, &a.id).cmp(&(b.sent, &b.id)));
        sent
    }

    /// Undoes [`Self::fail_commands_on`]: the instance runs commands again.
    pub fn heal_commands_on(&self, instance_id: &str) {
        self.state().commands.failing_instances.remove(instance_id);
    }
}

#[async_trait]
impl RunCommand for SimulatedAws {
    async fn send_command(&self, request: &CommandRequest) -> Result<String, CloudError> {
        self.call("ssm:SendCommand", |state: &mut State| send(state, request))
            .await
    }

    async fn invocations(&self, command_id: &str) -> Result<Vec<Invocation>, CloudError> {
        const OPERATION: &str = "ssm:ListCommandInvocations";
        self.all_pages(OPERATION, |state: &mut State, token| {
            let command = state.commands.commands.get(command_id).ok_or_else(|| {
                let message = format!("command {command_id} does not exist");
                error(ErrorKind::Invalid, OPERATION, "InvalidCommandId", message)
            })?;
            let items = command
                .invocations
                .iter()
                .map(|i| (i.instance_id.clone(), i.clone()))
                .collect();
            paging::page(OPERATION, items, token, paging::LIST_COMMAND_INVOCATIONS)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimConfig;

    fn aws() -> SimulatedAws {
        SimulatedAws::with_config(SimConfig::manual())
    }

    fn command(target: CommandTarget) -> CommandRequest {
        CommandRequest {
            target,
            commands: vec!["nginx -t && systemctl reload nginx".to_owned()],
            comment: "reload".to_owned(),
            timeout_seconds: 60,
        }
    }

    fn statuses(invocations: &[Invocation]) -> Vec<(String, InvocationStatus)> {
        invocations
            .iter()
            .map(|i| (i.instance_id.clone(), i.status))
            .collect()
    }

    #[tokio::test]
    async fn invocations_complete_per_instance_and_fail_where_told() {
        let aws = aws();
        let mut ids = vec![aws.add_instance("proxy"), aws.add_instance("proxy")];
        ids.sort();
        aws.fail_commands_on(&ids[1], "nginx: configuration test failed");
        let id = aws
            .send_command(&command(CommandTarget::Instances(ids.clone())))
            .await
            .expect("sent");

        let pending = aws.invocations(&id).await.expect("listed");
        aws.advance(Duration::from_secs(1));
        let running = aws.invocations(&id).await.expect("listed");
        aws.advance(Duration::from_secs(2));
        let done = aws.invocations(&id).await.expect("listed");

        let all = |status| vec![(ids[0].clone(), status), (ids[1].clone(), status)];
        assert_eq!(statuses(&pending), all(InvocationStatus::Pending));
        assert_eq!(statuses(&running), all(InvocationStatus::InProgress));
        assert_eq!(
            statuses(&done),
            vec![
                (ids[0].clone(), InvocationStatus::Success),
                (ids[1].clone(), InvocationStatus::Failed)
            ]
        );
        assert_eq!(done[1].error, "nginx: configuration test failed");
    }

    #[tokio::test]
    async fn sent_commands_are_listed_with_when_they_finished() {
        let aws = aws();
        let instance = aws.add_instance("proxy");
        let target = CommandTarget::Instances(vec![instance.clone()]);
        let id = aws.send_command(&command(target)).await.expect("sent");

        let running = aws.commands_sent();
        aws.advance(Duration::from_secs(10));
        let done = aws.commands_sent();

        assert_eq!(running.len(), 1);
        assert_eq!(
            (running[0].id.as_str(), running[0].finished),
            (id.as_str(), None)
        );
        assert_eq!(done[0].instance_ids, vec![instance]);
        assert_eq!(done[0].comment, "reload");
        assert_eq!(done[0].finished, Some(Duration::from_secs(3)));
    }

    #[tokio::test]
    async fn a_tag_target_resolves_to_the_running_instances_at_send_time() {
        let aws = aws();
        let running = aws.add_instance("proxy");
        let stopped = aws.add_instance("proxy");
        aws.stop_instance(&stopped);
        let target = CommandTarget::Tag {
            key: "Name".to_owned(),
            value: "proxy".to_owned(),
        };

        let id = aws.send_command(&command(target)).await.expect("sent");
        aws.add_instance("proxy");
        aws.advance(Duration::from_secs(3));

        let done = aws.invocations(&id).await.expect("listed");
        assert_eq!(statuses(&done), vec![(running, InvocationStatus::Success)]);
    }

    #[tokio::test]
    async fn an_instance_that_stops_mid_command_times_out() {
        let aws = aws();
        let instance = aws.add_instance("proxy");
        let target = CommandTarget::Instances(vec![instance.clone()]);
        let id = aws.send_command(&command(target)).await.expect("sent");

        aws.stop_instance(&instance);
        aws.advance(Duration::from_secs(3));

        let done = aws.invocations(&id).await.expect("listed");
        assert_eq!(
            statuses(&done),
            vec![(instance, InvocationStatus::TimedOut)]
        );
    }

    #[tokio::test]
    async fn bad_commands_are_refused() {
        let aws = aws();
        let stopped = aws.add_instance("proxy");
        aws.stop_instance(&stopped);
        let too_many = (0..51).map(|_| aws.add_instance("x")).collect();
        let mut no_commands = command(CommandTarget::Instances(vec![aws.add_instance("y")]));
        no_commands.commands.clear();
        let cases = [
            command(CommandTarget::Instances(vec![stopped])),
            command(CommandTarget::Instances(vec![
                "i-00000000000000000".to_owned(),
            ])),
            command(CommandTarget::Instances(too_many)),
            no_commands,
        ];

        for request in cases {
            let error = aws.send_command(&request).await.expect_err("refused");
            assert_eq!(error.kind, ErrorKind::Invalid, "{request:?}");
        }
        let unknown = aws.invocations("nope").await.expect_err("unknown");
        assert_eq!(unknown.kind, ErrorKind::Invalid);
    }

    #[tokio::test]
    async fn invocations_are_paged_by_fifty() {
        let aws = aws();
        for _ in 0..120 {
            aws.add_instance("proxy");
        }
        let target = CommandTarget::Tag {
            key: "Name".to_owned(),
            value: "proxy".to_owned(),
        };
        let id = aws.send_command(&command(target)).await.expect("sent");

        let all = aws.invocations(&id).await.expect("listed");

        assert_eq!(all.len(), 120);
        assert_eq!(aws.call_count("ssm:ListCommandInvocations"), 3);
    }
}
