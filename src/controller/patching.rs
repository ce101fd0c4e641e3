//! The patch loop (issue #6): OS patches of the EC2 fleets through SSM, one instance at a time.
//!
//! Every [`ControllerConfig::patch_tick`](super::ControllerConfig) the loop reads the patch
//! policies and, for each fleet whose run is due or in progress, starts one task (never two
//! for one fleet in this replica). The task claims the lease `patch:<fleet>` (so one replica
//! patches a fleet), starts a run over the running instances (refused below
//! [`MIN_RUNNING`](reconcilers::patching::MIN_RUNNING)), then follows
//! [`next_step`]: each instance is patched with the policy's script, then checked (still
//! running; for a proxy, `nginx -t`), and its result recorded before the next one begins. The
//! first failure ends the run as failed and leaves the rest untouched.
//!
//! Crash safety: the `patching` result is written before the command is sent and again with
//! the command's id after, so a run resumed by any replica waits for that command instead of
//! patching the instance again. Only a crash between those two writes sends the patch again
//! (the package upgrade is idempotent). Every write and command is preceded by
//! [`Controller::fence`], and the lease is extended while a command runs. Deleting a policy
//! stops its run in progress; the loop sees it at its next step.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reconcilers::cloud::{ErrorKind, TargetGroup};
use reconcilers::names::TARGET_GROUP_PREFIX;
use reconcilers::patching::{
    FleetId, InstanceResult, InstanceState, PROXY_HEALTH_CHECK, PatchPolicy, PatchRun, RunState,
    Step, next_step, plan_run, tail,
};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use super::command::{Task, run_on, send, wait_for};
use super::{Blocked, Claimed, Controller};
use crate::runtime::Outcome;
use crate::store::{FleetPatchStatus, Lease, StoreError, now_millis};

/// How a patching result names the command it waits for.
const COMMAND_PREFIX: &str = "command ";
/// How long a patched proxy's `nginx -t` may take.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a patched instance may take to show as running again (a reboot).
const BACK_RUNNING_WAIT: Duration = Duration::from_secs(300);
/// How often a patched instance's state is looked at while it is not running.
const BACK_RUNNING_POLL: Duration = Duration::from_secs(2);
/// How long a patched instance of a group may take to pass the shops' health checks.
const TARGETS_HEALTHY_WAIT: Duration = Duration::from_secs(600);
/// How often its targets' health is read meanwhile.
const TARGETS_HEALTHY_POLL: Duration = Duration::from_secs(5);

/// The reasons that are an instance's failure, which end the run as failed.
const INSTANCE_FAILURES: [&str; 6] = [
    "PatchFailed",
    "PatchTimedOut",
    "HealthCheckFailed",
    "HealthCheckTimedOut",
    "NotRunningAfterPatch",
    "TargetsUnhealthyAfterPatch",
];

/// Where a fleet's instances are: the region and their `Name` tag.
struct Target {
    region: String,
    name: String,
}

impl Controller {
    /// Starts due and resumed patch runs every tick until `stop` fires; runs in progress are
    /// dropped where they stand (the next start resumes them from the store).
    pub(super) async fn patch_loop(self: Arc<Self>, mut stop: broadcast::Receiver<()>) {
        let busy: Arc<Mutex<HashSet<FleetId>>> = Arc::default();
        let mut tasks = JoinSet::new();
        tracing::info!(
            tick_ms = self.config.patch_tick.as_millis(),
            "starting patch loop"
        );
        loop {
            match self.store.patch_status(None).await {
                Ok(fleets) => {
                    for status in fleets {
                        let fleet = status.policy.fleet.clone();
                        let mut taken = busy.lock().unwrap_or_else(|p| p.into_inner());
                        if !taken.insert(fleet.clone()) {
                            continue;
                        }
                        drop(taken);
                        let controller = self.clone();
                        let busy = busy.clone();
                        tasks.spawn(async move {
                            let run = super::fenced::scope(controller.patch_fleet(&status));
                            if let Err(blocked) = run.await {
                                tracing::warn!(
                                    fleet = %fleet,
                                    reason = blocked.reason,
                                    message = %blocked.message,
                                    "patch run interrupted; it resumes at a later tick"
                                );
                            }
                            busy.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&fleet);
                        });
                    }
                }
                Err(error) => tracing::warn!(%error, "could not read patch policies"),
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = stop.recv() => break,
                () = tokio::time::sleep(self.config.patch_tick) => {}
            }
        }
        tasks.shutdown().await;
    }

    /// Starts the fleet's run if one is due, and takes the run in progress as far as it goes.
    async fn patch_fleet(&self, status: &FleetPatchStatus) -> Result<(), Blocked> {
        let policy = &status.policy;
        if status.running().is_none() && !policy.due(&status.history(), now_millis()) {
            return Ok(());
        }
        let lease = match self.claim(&policy.fleet.lease_key()).await? {
            Claimed::Mine(lease) => lease,
            Claimed::HeldFor(_) => return Ok(()),
        };
        let target = self.target(policy).await?;
        let mut run = match status.running() {
            Some(run) => run.clone(),
            None => match self.start_run(policy, &target, &lease).await? {
                Some(run) => run,
                None => return Ok(()),
            },
        };
        loop {
            let running = self.instance_ids(&target.region, &target.name).await?;
            let in_window = policy.enabled && policy.window_open_at(now_millis()).is_some();
            let step = next_step(&run, &running, in_window);
            tracing::debug!(fleet = %policy.fleet, run = run.id, ?step, "patch step");
            match step {
                Step::Patch(instance) => {
                    self.patch_instance(policy, &target, &lease, &run, &instance, None)
                        .await?;
                }
                Step::Recheck(instance) => {
                    let command = run
                        .results
                        .iter()
                        .find(|r| r.instance_id == instance)
                        .and_then(|r| r.output.strip_prefix(COMMAND_PREFIX))
                        .map(str::to_owned);
                    self.patch_instance(policy, &target, &lease, &run, &instance, command)
                        .await?;
                }
                Step::Skip(instance) => {
                    self.fence(&lease).await?;
                    let now = now_millis();
                    let skipped = InstanceResult {
                        instance_id: instance.clone(),
                        state: InstanceState::Skipped,
                        started_at: now,
                        finished_at: Some(now),
                        output: "no longer running when its turn came".to_owned(),
                    };
                    self.store.record_patch_result(run.id, &skipped).await?;
                    tracing::info!(fleet = %policy.fleet, run = run.id, instance, "instance skipped");
                }
                Step::Wait => {
                    tracing::info!(fleet = %policy.fleet, run = run.id, "patch window closed; run waits for the next");
                    return Ok(());
                }
                Step::Finish => {
                    let patched = run
                        .results
                        .iter()
                        .filter(|r| r.state == InstanceState::Succeeded)
                        .count();
                    let message =
                        format!("patched {patched} of {} instance(s)", run.instances.len());
                    return self
                        .finish(policy, &lease, &run, RunState::Succeeded, &message)
                        .await;
                }
                Step::Stop { state, message } => {
                    return self.finish(policy, &lease, &run, state, &message).await;
                }
            }
            run = match self.store.patch_runs(&policy.fleet, 1).await?.pop() {
                // Ended elsewhere (its policy deleted): no further instance goes down.
                Some(newest) if newest.id == run.id && newest.state == RunState::Running => newest,
                _ => return Ok(()),
            };
        }
    }

    /// Where the fleet's instances are.
    async fn target(&self, policy: &PatchPolicy) -> Result<Target, Blocked> {
        let region = policy.region.as_str().to_owned();
        let name = match &policy.fleet {
            FleetId::Group(name) => name.clone(),
            FleetId::Proxy(_) => match self.store.get_region_config(&region).await? {
                Some(config) => config.proxy_name_tag,
                None => {
                    return Err(Blocked::waiting(
                        "RegionNotConfigured",
                        &format!("region {region} has no configuration"),
                    ));
                }
            },
        };
        Ok(Target { region, name })
    }

    /// Records a new run over the running instances, or a refused one; `None` when no run
    /// goes on (refused, or another replica started one first).
    async fn start_run(
        &self,
        policy: &PatchPolicy,
        target: &Target,
        lease: &Lease,
    ) -> Result<Option<PatchRun>, Blocked> {
        let running = self.instance_ids(&target.region, &target.name).await?;
        let plan = plan_run(&running);
        self.fence(lease).await?;
        let (instances, refused) = match &plan {
            Ok(instances) => (instances.as_slice(), None),
            Err(reason) => (&[][..], Some(reason.as_str())),
        };
        let run = match self
            .store
            .start_patch_run(&policy.fleet, instances, refused, now_millis())
            .await
        {
            Ok(run) => run,
            Err(StoreError::Conflict(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        if let Some(reason) = refused {
            tracing::warn!(fleet = %policy.fleet, run = run.id, reason, "patch run refused");
            return Ok(None);
        }
        tracing::info!(fleet = %policy.fleet, run = run.id, instances = run.instances.len(), "patch run started");
        Ok(Some(run))
    }

    /// Patches one instance (or waits for the patch `command` a previous attempt sent), checks
    /// its health and records the result.
    async fn patch_instance(
        &self,
        policy: &PatchPolicy,
        target: &Target,
        lease: &Lease,
        run: &PatchRun,
        instance: &str,
        command: Option<String>,
    ) -> Result<(), Blocked> {
        let ssm = self.cloud.run_command(&target.region);
        let instances = [instance.to_owned()];
        let started_at = run
            .results
            .iter()
            .find(|r| r.instance_id == instance)
            .map_or_else(now_millis, |r| r.started_at);
        let mut result = InstanceResult {
            instance_id: instance.to_owned(),
            state: InstanceState::Patching,
            started_at,
            finished_at: None,
            output: String::new(),
        };
        let timeout = Duration::from_secs(u64::from(policy.command_timeout_seconds));
        let command_id = match command {
            Some(id) => {
                tracing::info!(fleet = %policy.fleet, run = run.id, instance, command = %id, "resuming the wait for a patch");
                id
            }
            None => {
                self.fence(lease).await?;
                self.store.record_patch_result(run.id, &result).await?;
                let comment = format!("shop-controller: patch {}", policy.fleet);
                let id = send(
                    ssm.as_ref(),
                    &instances,
                    policy.commands(),
                    comment,
                    timeout,
                )
                .await?;
                result.output = format!("{COMMAND_PREFIX}{id}");
                self.fence(lease).await?;
                self.store.record_patch_result(run.id, &result).await?;
                tracing::info!(fleet = %policy.fleet, run = run.id, instance, command = %id, "patch sent");
                id
            }
        };
        let patched = self
            .keeping(
                lease,
                wait_for(ssm.as_ref(), &command_id, &instances, Task::Patch, timeout),
            )
            .await;
        let checked = match patched {
            Ok(outputs) => self
                .health_check(policy, target, lease, instance)
                .await
                .map(|()| outputs.concat()),
            Err(blocked) => Err(blocked),
        };
        let (state, output) = match checked {
            Ok(output) => (InstanceState::Succeeded, tail(&output).to_owned()),
            // The instance's own failure; anything else (the lease lost, the store or AWS not
            // answering) leaves its fate unknown, and the run resumes from its recorded command.
            Err(blocked) if !INSTANCE_FAILURES.contains(&blocked.reason) => return Err(blocked),
            Err(blocked) => (InstanceState::Failed, tail(&blocked.message).to_owned()),
        };
        result.state = state;
        result.output = output;
        result.finished_at = Some(now_millis());
        self.fence(lease).await?;
        self.store.record_patch_result(run.id, &result).await?;
        tracing::info!(fleet = %policy.fleet, run = run.id, instance, state = %state, "instance patched");
        Ok(())
    }

    /// A patched instance is healthy when it runs again and, for a proxy, nginx's config
    /// passes its check.
    async fn health_check(
        &self,
        policy: &PatchPolicy,
        target: &Target,
        lease: &Lease,
        instance: &str,
    ) -> Result<(), Blocked> {
        let deadline = tokio::time::Instant::now() + BACK_RUNNING_WAIT;
        loop {
            let running = self.instance_ids(&target.region, &target.name).await?;
            if running.iter().any(|id| id == instance) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Blocked {
                    reason: "NotRunningAfterPatch",
                    message: format!("{instance} is not running after its patch"),
                    outcome: Outcome::Retry("health"),
                });
            }
            tokio::time::sleep(BACK_RUNNING_POLL).await;
        }
        if let FleetId::Proxy(_) = policy.fleet {
            self.fence(lease).await?;
            let ssm = self.cloud.run_command(&target.region);
            let instances = [instance.to_owned()];
            let check = run_on(
                ssm.as_ref(),
                &instances,
                Task::HealthCheck,
                vec![PROXY_HEALTH_CHECK.to_owned()],
                format!("shop-controller: check {} after patch", policy.fleet),
                HEALTH_CHECK_TIMEOUT,
            );
            self.keeping(lease, check).await?;
        }
        if let FleetId::Group(group) = &policy.fleet {
            let healthy = self.targets_healthy(&target.region, group, instance);
            self.keeping(lease, healthy).await?;
        }
        Ok(())
    }

    /// Waits until `instance` is healthy in the target group of every shop placed on `group`
    /// (a rebooted instance shows `initial` until its health checks pass), so the next
    /// instance goes down only once this one serves every shop again. Targets draining or in
    /// an unused group do not hold the run.
    async fn targets_healthy(
        &self,
        region: &str,
        group: &str,
        instance: &str,
    ) -> Result<(), Blocked> {
        let placed: HashSet<u16> = self
            .store
            .region_placements(region)
            .await?
            .into_iter()
            .filter(|placed| placed.instance_group == group)
            .map(|placed| placed.port)
            .collect();
        if placed.is_empty() {
            return Ok(());
        }
        let elb = self.cloud.load_balancing(region);
        let target_groups: Vec<TargetGroup> = elb
            .list_target_groups()
            .await?
            .into_iter()
            .filter(|tg| tg.name.starts_with(TARGET_GROUP_PREFIX) && placed.contains(&tg.port))
            .collect();
        let deadline = tokio::time::Instant::now() + TARGETS_HEALTHY_WAIT;
        loop {
            let mut waiting = Vec::new();
            for tg in &target_groups {
                let health = match elb.describe_target_health(&tg.arn).await {
                    Ok(health) => health,
                    // A shop deleted meanwhile.
                    Err(error) if error.kind == ErrorKind::NotFound => continue,
                    // Asked again at the next poll.
                    Err(error)
                        if matches!(error.kind, ErrorKind::Throttled | ErrorKind::Transient) =>
                    {
                        waiting.push(format!("{} ({})", tg.name, error.kind.as_str()));
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                };
                let not_serving = health.iter().find(|h| {
                    h.target.id == instance && matches!(h.state.as_str(), "initial" | "unhealthy")
                });
                if let Some(found) = not_serving {
                    waiting.push(format!("{} ({})", tg.name, found.state));
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Blocked {
                    reason: "TargetsUnhealthyAfterPatch",
                    message: format!(
                        "{instance} is not healthy in {} target groups after its patch: {}",
                        waiting.len(),
                        waiting.join(", ")
                    ),
                    outcome: Outcome::Retry("health"),
                });
            }
            tokio::time::sleep(TARGETS_HEALTHY_POLL).await;
        }
    }

    /// Ends the run and says so.
    async fn finish(
        &self,
        policy: &PatchPolicy,
        lease: &Lease,
        run: &PatchRun,
        state: RunState,
        message: &str,
    ) -> Result<(), Blocked> {
        self.fence(lease).await?;
        self.store
            .finish_patch_run(run.id, state, message, now_millis())
            .await?;
        if state == RunState::Succeeded {
            tracing::info!(fleet = %policy.fleet, run = run.id, message, "patch run succeeded");
        } else {
            tracing::warn!(fleet = %policy.fleet, run = run.id, state = %state, message, "patch run ended");
        }
        Ok(())
    }

    /// Runs `work` while extending the lease, so a patch longer than the lease time keeps it;
    /// stops waiting as soon as the lease is lost.
    async fn keeping<T>(
        &self,
        lease: &Lease,
        work: impl Future<Output = Result<T, Blocked>>,
    ) -> Result<T, Blocked> {
        let keepalive = async {
            loop {
                tokio::time::sleep(self.config.lease.ttl / 3).await;
                if let Err(lost) = self.fence(lease).await {
                    return lost;
                }
            }
        };
        tokio::select! {
            result = work => result,
            lost = keepalive => Err(lost),
        }
    }
}
