//! CodeDeploy in the simulated account. A deployment is `Created` for
//! [`super::Timings::deployment_start`], then `InProgress` for [`super::Timings::deployment`],
//! then `Succeeded`, or `Failed` when its revision is missing from the simulated S3 or a test
//! told it to fail. A deployment group runs one active deployment at a time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;

use crate::cloud::{
    CloudError, Deployment, DeploymentRequest, DeploymentStatus, Deployments, ErrorKind, Page,
    Quota,
};

use super::{SimulatedAws, State, error, paging};

struct SimDeployment {
    deployment: Deployment,
    sequence: u64,
    created: Duration,
    /// Why the deployment is going to fail, if it is.
    fails_with: Option<String>,
}

#[derive(Default)]
pub(crate) struct DeploymentsState {
    deployments: BTreeMap<String, SimDeployment>,
    sequence: u64,
    failing_keys: HashMap<String, String>,
    failing_next: VecDeque<String>,
}

/// Moves active deployments through their states.
pub(crate) fn settle(state: &mut State) {
    let now = state.now();
    let timings = state.config.timings.clone();
    for sim in state.deployments.deployments.values_mut() {
        if !sim.deployment.status.is_active() {
            continue;
        }
        let elapsed = now.saturating_sub(sim.created);
        if elapsed >= timings.deployment_start + timings.deployment {
            finish(sim, &state.storage);
        } else if elapsed >= timings.deployment_start {
            sim.deployment.status = DeploymentStatus::InProgress;
        }
    }
}

fn finish(sim: &mut SimDeployment, storage: &super::storage::Storage) {
    let revision = &sim.deployment.revision;
    let present = storage
        .get(&revision.bucket, &revision.key, revision.version.as_deref())
        .is_some();
    let failure = if present {
        sim.fails_with.take()
    } else {
        Some(format!(
            "the revision s3://{}/{} does not exist",
            revision.bucket, revision.key
        ))
    };
    sim.deployment.status = match failure {
        Some(_) => DeploymentStatus::Failed,
        None => DeploymentStatus::Succeeded,
    };
    sim.deployment.error_message = failure;
}

fn create(state: &mut State, request: &DeploymentRequest) -> Result<Deployment, CloudError> {
    const OPERATION: &str = "codedeploy:CreateDeployment";
    validate(request)?;
    let active = state
        .deployments
        .deployments
        .values()
        .filter(|d| {
            in_group(
                &d.deployment,
                &request.application,
                &request.deployment_group,
            )
        })
        .filter(|d| d.deployment.status.is_active())
        .count();
    if active >= state.config.quotas.deployments_per_group {
        return Err(error(
            ErrorKind::QuotaExceeded(Quota::ConcurrentDeployments),
            OPERATION,
            "DeploymentLimitExceededException",
            format!(
                "deployment group {} already has an active deployment",
                request.deployment_group
            ),
        ));
    }

    let id = state.rng.deployment_id();
    let failures = &mut state.deployments;
    let fails_with = failures
        .failing_keys
        .get(&request.revision.key)
        .cloned()
        .or_else(|| failures.failing_next.pop_front());
    failures.sequence += 1;
    let deployment = Deployment {
        id: id.clone(),
        application: request.application.clone(),
        deployment_group: request.deployment_group.clone(),
        revision: request.revision.clone(),
        status: DeploymentStatus::Created,
        error_message: None,
        created_at: state.clock.epoch_millis(),
    };
    let sim = SimDeployment {
        deployment: deployment.clone(),
        sequence: failures.sequence,
        created: state.clock.elapsed(),
        fails_with,
    };
    failures.deployments.insert(id, sim);
    Ok(deployment)
}

fn validate(request: &DeploymentRequest) -> Result<(), CloudError> {
    let required = [
        ("application", &request.application),
        ("deployment group", &request.deployment_group),
        ("revision bucket", &request.revision.bucket),
        ("revision key", &request.revision.key),
    ];
    match required.iter().find(|(_, value)| value.is_empty()) {
        Some((field, _)) => Err(error(
            ErrorKind::Invalid,
            "codedeploy:CreateDeployment",
            "InvalidInputException",
            format!("{field} must not be empty"),
        )),
        None => Ok(()),
    }
}

fn in_group(deployment: &Deployment, application: &str, group: &str) -> bool {
    deployment.application == application && deployment.deployment_group == group
}

/// CodeDeploy's answer to an id it does not know, or one that is not shaped like an id.
fn lookup<'a>(
    state: &'a mut State,
    operation: &'static str,
    id: &str,
) -> Result<&'a mut SimDeployment, CloudError> {
    if !id.starts_with("d-") {
        let message = format!("{id} is not a deployment id");
        return Err(error(
            ErrorKind::Invalid,
            operation,
            "InvalidDeploymentIdException",
            message,
        ));
    }
    state.deployments.deployments.get_mut(id).ok_or_else(|| {
        error(
            ErrorKind::NotFound,
            operation,
            "DeploymentDoesNotExistException",
            format!("deployment {id} does not exist"),
        )
    })
}

/// Test controls for CodeDeploy.
impl SimulatedAws {
    /// Deployments of a revision with this S3 key fail with `message`, from now on.
    pub fn fail_deployments_of(&self, revision_key: &str, message: &str) {
        let mut state = self.state();
        let failing = &mut state.deployments.failing_keys;
        failing.insert(revision_key.to_owned(), message.to_owned());
    }

    /// The next `count` deployments created fail with `message`.
    pub fn fail_next_deployments(&self, count: usize, message: &str) {
        let mut state = self.state();
        let failing = &mut state.deployments.failing_next;
        failing.extend(std::iter::repeat_n(message.to_owned(), count));
    }
}

#[async_trait]
impl Deployments for SimulatedAws {
    async fn create_deployment(
        &self,
        request: &DeploymentRequest,
    ) -> Result<Deployment, CloudError> {
        self.call("codedeploy:CreateDeployment", |state: &mut State| {
            create(state, request)
        })
        .await
    }

    async fn get_deployment(&self, id: &str) -> Result<Deployment, CloudError> {
        const OPERATION: &str = "codedeploy:GetDeployment";
        self.call(OPERATION, |state: &mut State| {
            Ok(lookup(state, OPERATION, id)?.deployment.clone())
        })
        .await
    }

    async fn stop_deployment(&self, id: &str) -> Result<(), CloudError> {
        const OPERATION: &str = "codedeploy:StopDeployment";
        self.call(OPERATION, |state: &mut State| {
            let sim = lookup(state, OPERATION, id)?;
            if sim.deployment.status.is_active() {
                sim.deployment.status = DeploymentStatus::Stopped;
                sim.deployment.error_message = Some("the deployment was stopped".to_owned());
            }
            Ok(())
        })
        .await
    }

    async fn list_deployment_ids(
        &self,
        application: &str,
        deployment_group: &str,
        statuses: &[DeploymentStatus],
        next_token: Option<String>,
    ) -> Result<Page<String>, CloudError> {
        const OPERATION: &str = "codedeploy:ListDeployments";
        self.call(OPERATION, |state: &mut State| {
            let items = state
                .deployments
                .deployments
                .values()
                .filter(|d| in_group(&d.deployment, application, deployment_group))
                .filter(|d| statuses.is_empty() || statuses.contains(&d.deployment.status))
                .map(|d| (paging::newest_first(d.sequence), d.deployment.id.clone()))
                .collect();
            let size = paging::LIST_DEPLOYMENTS;
            paging::page(OPERATION, items, next_token.as_deref(), size)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Revision;
    use crate::sim::SimConfig;

    fn request(aws: &SimulatedAws, group: &str) -> DeploymentRequest {
        let version = aws.put_object("artifacts", "a.zip", &b"zip"[..]);
        DeploymentRequest {
            application: "shops".to_owned(),
            deployment_group: group.to_owned(),
            revision: Revision {
                bucket: "artifacts".to_owned(),
                key: "a.zip".to_owned(),
                version: Some(version),
            },
            description: "deploy a".to_owned(),
        }
    }

    fn aws() -> SimulatedAws {
        SimulatedAws::with_config(SimConfig::manual())
    }

    async fn status_after(aws: &SimulatedAws, id: &str, wait: Duration) -> DeploymentStatus {
        aws.advance(wait);
        aws.get_deployment(id).await.expect("known").status
    }

    #[tokio::test]
    async fn a_deployment_goes_from_created_to_succeeded() {
        let aws = aws();
        let created = aws
            .create_deployment(&request(&aws, "shops-a"))
            .await
            .expect("created");
        let id = created.id.clone();

        let states = [
            (Duration::ZERO, DeploymentStatus::Created),
            (Duration::from_secs(2), DeploymentStatus::InProgress),
            (Duration::from_secs(30), DeploymentStatus::Succeeded),
        ];
        for (wait, expected) in states {
            assert_eq!(status_after(&aws, &id, wait).await, expected);
        }
        assert!(id.starts_with("d-") && id.len() == 11);
    }

    #[tokio::test]
    async fn deployments_fail_when_told_or_when_the_revision_is_missing() {
        let aws = aws();
        aws.fail_next_deployments(1, "ApplicationStart failed");
        let told = request(&aws, "a");
        let mut missing = request(&aws, "b");
        missing.revision.key = "gone.zip".to_owned();
        aws.fail_deployments_of("keyed.zip", "keyed failure");
        let mut keyed = request(&aws, "c");
        aws.put_object("artifacts", "keyed.zip", &b"zip"[..]);
        keyed.revision = Revision {
            key: "keyed.zip".to_owned(),
            version: None,
            ..keyed.revision
        };

        for request in [told, missing, keyed] {
            let created = aws.create_deployment(&request).await.expect("created");
            aws.advance(Duration::from_secs(32));
            let done = aws.get_deployment(&created.id).await.expect("known");
            assert_eq!(done.status, DeploymentStatus::Failed, "{request:?}");
            assert!(done.error_message.is_some());
        }
    }

    #[tokio::test]
    async fn a_group_runs_one_deployment_at_a_time() {
        let aws = aws();
        let first = aws
            .create_deployment(&request(&aws, "shops-a"))
            .await
            .expect("created");

        let error = aws
            .create_deployment(&request(&aws, "shops-a"))
            .await
            .expect_err("busy");
        aws.create_deployment(&request(&aws, "shops-b"))
            .await
            .expect("another group is free");
        aws.stop_deployment(&first.id).await.expect("stopped");
        aws.create_deployment(&request(&aws, "shops-a"))
            .await
            .expect("free after stop");

        assert_eq!(
            error.kind,
            ErrorKind::QuotaExceeded(Quota::ConcurrentDeployments)
        );
        let stopped = aws.get_deployment(&first.id).await.expect("known");
        assert_eq!(stopped.status, DeploymentStatus::Stopped);
        aws.stop_deployment(&first.id)
            .await
            .expect("stopping again is fine");
    }

    #[tokio::test]
    async fn unknown_deployments_are_not_found() {
        let aws = aws();
        let cases = [
            ("d-AAAAAAAAA", ErrorKind::NotFound),
            ("x", ErrorKind::Invalid),
        ];
        for (id, expected) in cases {
            let got = aws.get_deployment(id).await.expect_err("unknown");
            assert_eq!(got.kind, expected);
            let stopped = aws.stop_deployment(id).await.expect_err("unknown");
            assert_eq!(stopped.kind, expected);
        }
    }

    #[tokio::test]
    async fn deployment_ids_are_filtered_by_status_and_paged_by_a_hundred() {
        let aws = aws();
        for _ in 0..120 {
            aws.create_deployment(&request(&aws, "g"))
                .await
                .expect("created");
            aws.advance(Duration::from_secs(32));
        }
        aws.create_deployment(&request(&aws, "g"))
            .await
            .expect("created");

        let succeeded = [DeploymentStatus::Succeeded];
        let first = aws
            .list_deployment_ids("shops", "g", &succeeded, None)
            .await
            .expect("page");
        let second = aws
            .list_deployment_ids("shops", "g", &succeeded, first.next_token.clone())
            .await
            .expect("page");
        let active = aws
            .list_deployment_ids("shops", "g", &[DeploymentStatus::Created], None)
            .await
            .expect("page");

        assert_eq!((first.items.len(), second.items.len()), (100, 20));
        assert_eq!(second.next_token, None);
        assert_eq!(active.items.len(), 1);
        assert_eq!(aws.call_count("codedeploy:ListDeployments"), 3);
    }
}
