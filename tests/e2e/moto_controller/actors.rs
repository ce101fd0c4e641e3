//! The AWS actors moto leaves out, played by the test: a [`CloudProvider`] over the real SDK
//! adapters pointed at moto that passes every call through and fills only what moto cannot
//! do. Each gap is recorded in the contract suite's `Gaps`, so a moto upgrade that closes one
//! fails there. What is filled, and why:
//!
//! - CodeBuild (`builds_write_no_artifact`): moto runs no build and writes no artifact, yet
//!   reports a build `SUCCEEDED` at its first `BatchGetBuilds`. Here a started build runs as
//!   CodeBuild would for a project that packages the source unchanged (the source object at
//!   its version lands at the artifact key the controller asked for), and a build shows in
//!   progress until its artifact is written, succeeded after.
//! - CodeDeploy (`deployments_never_progress`, `deployment_ids_not_aws_shaped`): moto's
//!   deployments stay `Created`, and its ids are UUIDs where AWS's are `d-` and nine letters
//!   and digits (the controller finds the deployment it tracks in its status by that shape).
//!   Here the instances' agent fetches the revision and checks it holds an `appspec.yml`, then
//!   the deployment ends `Succeeded` (or `Failed` with the agent's message); ids show in AWS's
//!   shape, and a status filter applies to the status the agent reached, not to moto's.
//! - SSM (`command_invocations_missing`): moto has no `ListCommandInvocations`. Here the agent
//!   on each instance a command was sent to reports `Success`, one invocation per instance.
//!
//! Left as moto has them: duplicate listeners, identical target groups and concurrent
//! deployments. The controller creates only what it did not observe, and the test counts what
//! exists, so a duplicate fails the test instead of being smoothed over.
//!
//! Everything else (S3, ELBv2 and its tags, EC2 `DescribeInstances`, `StartBuild`,
//! `BatchGetBuilds`, `CreateDeployment`, `GetDeployment`, `SendCommand`, ...) reaches moto
//! through the real adapters and is counted there. The actors' own S3 reads and writes use a
//! separate client: they are AWS's work, not the controller's calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use reconcilers::cloud::{
    Build, BuildRequest, BuildStatus, Builds, CallStats, Certificates, CloudError, CloudProvider,
    CommandRequest, CommandTarget, Deployment, DeploymentRequest, DeploymentStatus, Deployments,
    ErrorKind, Fleet, Invocation, InvocationStatus, LoadBalancing, ObjectStorage, Page, RunCommand,
};

/// The state of every actor, shared by the providers of successive controllers, as AWS
/// outlives a controller restart.
#[derive(Default)]
pub struct Actors {
    builds: Mutex<HashMap<String, BuildRun>>,
    /// By the AWS-shaped id the controller sees.
    deployments: Mutex<HashMap<String, DeploymentRun>>,
    /// Command id to the instances it was sent to.
    commands: Mutex<HashMap<String, Vec<String>>>,
}

/// One build as the CodeBuild actor ran it.
#[derive(Clone, Debug)]
enum BuildRun {
    Running,
    Succeeded { artifact: String },
    Failed { phase: &'static str },
}

/// One deployment as the CodeDeploy agent ran it.
#[derive(Clone, Debug)]
struct DeploymentRun {
    moto_id: String,
    status: DeploymentStatus,
    error_message: Option<String>,
}

/// moto through the real adapters, with the missing actors of [`Actors`].
pub struct WithActors {
    moto: Arc<dyn CloudProvider>,
    actors: Arc<Actors>,
    s3: aws_sdk_s3::Client,
}

impl WithActors {
    /// `moto` must be a provider of its own, so its call counts are the controller's alone.
    pub fn new(moto: Arc<dyn CloudProvider>, actors: Arc<Actors>, s3: aws_sdk_s3::Client) -> Self {
        Self { moto, actors, s3 }
    }
}

impl CloudProvider for WithActors {
    fn object_storage(&self, region: &str) -> Arc<dyn ObjectStorage> {
        self.moto.object_storage(region)
    }

    fn builds(&self, region: &str) -> Arc<dyn Builds> {
        Arc::new(ActedBuilds {
            moto: self.moto.builds(region),
            actors: self.actors.clone(),
            s3: self.s3.clone(),
        })
    }

    fn deployments(&self, region: &str) -> Arc<dyn Deployments> {
        Arc::new(ActedDeployments {
            moto: self.moto.deployments(region),
            actors: self.actors.clone(),
            s3: self.s3.clone(),
        })
    }

    fn fleet(&self, region: &str) -> Arc<dyn Fleet> {
        self.moto.fleet(region)
    }

    fn run_command(&self, region: &str) -> Arc<dyn RunCommand> {
        Arc::new(ActedRunCommand {
            moto: self.moto.run_command(region),
            actors: self.actors.clone(),
        })
    }

    fn load_balancing(&self, region: &str) -> Arc<dyn LoadBalancing> {
        self.moto.load_balancing(region)
    }

    fn certificates(&self, region: &str) -> Arc<dyn Certificates> {
        self.moto.certificates(region)
    }

    fn calls(&self) -> CallStats {
        self.moto.calls()
    }
}

struct ActedBuilds {
    moto: Arc<dyn Builds>,
    actors: Arc<Actors>,
    s3: aws_sdk_s3::Client,
}

#[async_trait]
impl Builds for ActedBuilds {
    async fn start_build(&self, request: &BuildRequest) -> Result<Build, CloudError> {
        let build = self.moto.start_build(request).await?;
        lock(&self.actors.builds).insert(build.id.clone(), BuildRun::Running);
        let (actors, s3, id, request) = (
            self.actors.clone(),
            self.s3.clone(),
            build.id.clone(),
            request.clone(),
        );
        tokio::spawn(async move {
            let run = run_build(&s3, &request).await;
            lock(&actors.builds).insert(id, run);
        });
        Ok(build)
    }

    async fn batch_get_builds(&self, ids: &[String]) -> Result<Vec<Build>, CloudError> {
        let builds = self.moto.batch_get_builds(ids).await?;
        let runs = lock(&self.actors.builds);
        Ok(builds
            .into_iter()
            .map(|build| match runs.get(&build.id) {
                Some(BuildRun::Succeeded { artifact }) => Build {
                    status: BuildStatus::Succeeded,
                    phase: "COMPLETED".to_owned(),
                    artifact_location: Some(artifact.clone()),
                    ..build
                },
                Some(BuildRun::Failed { phase }) => Build {
                    status: BuildStatus::Failed,
                    phase: (*phase).to_owned(),
                    artifact_location: None,
                    ..build
                },
                // Not run yet, or never started through this provider: nothing was built.
                Some(BuildRun::Running) | None => Build {
                    status: BuildStatus::InProgress,
                    phase: "BUILD".to_owned(),
                    artifact_location: None,
                    ..build
                },
            })
            .collect())
    }

    async fn list_build_ids(
        &self,
        project: &str,
        next_token: Option<String>,
    ) -> Result<Page<String>, CloudError> {
        self.moto.list_build_ids(project, next_token).await
    }
}

/// What CodeBuild does for a project whose buildspec packages the source as it is.
async fn run_build(s3: &aws_sdk_s3::Client, request: &BuildRequest) -> BuildRun {
    let source = s3
        .get_object()
        .bucket(&request.source_bucket)
        .key(&request.source_key)
        .version_id(&request.source_version)
        .send()
        .await;
    let Ok(source) = source else {
        return BuildRun::Failed {
            phase: "DOWNLOAD_SOURCE",
        };
    };
    let Ok(bytes) = source.body.collect().await.map(|b| b.into_bytes()) else {
        return BuildRun::Failed {
            phase: "DOWNLOAD_SOURCE",
        };
    };
    let upload = s3
        .put_object()
        .bucket(&request.artifact_bucket)
        .key(&request.artifact_key)
        .body(ByteStream::from(bytes))
        .send()
        .await;
    match upload {
        Ok(_) => BuildRun::Succeeded {
            artifact: format!("s3://{}/{}", request.artifact_bucket, request.artifact_key),
        },
        Err(_) => BuildRun::Failed {
            phase: "UPLOAD_ARTIFACTS",
        },
    }
}

struct ActedDeployments {
    moto: Arc<dyn Deployments>,
    actors: Arc<Actors>,
    s3: aws_sdk_s3::Client,
}

impl ActedDeployments {
    /// moto's id of a deployment the controller knows by its AWS-shaped id.
    fn moto_id(&self, id: &str) -> String {
        lock(&self.actors.deployments)
            .get(id)
            .map_or_else(|| id.to_owned(), |run| run.moto_id.clone())
    }

    /// A moto deployment as AWS would show it: its AWS-shaped id and the agent's status.
    fn as_aws(&self, deployment: Deployment) -> Deployment {
        let id = aws_deployment_id(&deployment.id);
        match lock(&self.actors.deployments).get(&id) {
            Some(run) => Deployment {
                id,
                status: run.status,
                error_message: run.error_message.clone(),
                ..deployment
            },
            None => deployment,
        }
    }
}

#[async_trait]
impl Deployments for ActedDeployments {
    async fn create_deployment(
        &self,
        request: &DeploymentRequest,
    ) -> Result<Deployment, CloudError> {
        let created = self.moto.create_deployment(request).await?;
        let id = aws_deployment_id(&created.id);
        let run = DeploymentRun {
            moto_id: created.id.clone(),
            status: DeploymentStatus::InProgress,
            error_message: None,
        };
        lock(&self.actors.deployments).insert(id.clone(), run);
        let (actors, s3, revision) = (
            self.actors.clone(),
            self.s3.clone(),
            request.revision.clone(),
        );
        let agent_id = id.clone();
        tokio::spawn(async move {
            let error_message = install_revision(&s3, &revision).await.err();
            let mut runs = lock(&actors.deployments);
            if let Some(run) = runs.get_mut(&agent_id) {
                run.status = match error_message {
                    None => DeploymentStatus::Succeeded,
                    Some(_) => DeploymentStatus::Failed,
                };
                run.error_message = error_message;
            }
        });
        Ok(Deployment { id, ..created })
    }

    async fn get_deployment(&self, id: &str) -> Result<Deployment, CloudError> {
        let deployment = self.moto.get_deployment(&self.moto_id(id)).await?;
        Ok(self.as_aws(deployment))
    }

    async fn stop_deployment(&self, id: &str) -> Result<(), CloudError> {
        self.moto.stop_deployment(&self.moto_id(id)).await
    }

    async fn list_deployment_ids(
        &self,
        application: &str,
        deployment_group: &str,
        statuses: &[DeploymentStatus],
        next_token: Option<String>,
    ) -> Result<Page<String>, CloudError> {
        // moto filters on its own status, which is always `Created`: ask for every state and
        // filter on the status the agent reached.
        let page = self
            .moto
            .list_deployment_ids(application, deployment_group, &[], next_token)
            .await?;
        let runs = lock(&self.actors.deployments);
        let wanted = |status: DeploymentStatus| statuses.is_empty() || statuses.contains(&status);
        let items = page
            .items
            .into_iter()
            .filter_map(|moto_id| {
                let id = aws_deployment_id(&moto_id);
                match runs.get(&id) {
                    Some(run) => wanted(run.status).then_some(id),
                    // Not created through this provider: as moto has it.
                    None => wanted(DeploymentStatus::Created).then_some(moto_id),
                }
            })
            .collect();
        Ok(Page {
            items,
            next_token: page.next_token,
        })
    }
}

/// What the CodeDeploy agent does first on each instance: fetch the bundle and read its
/// `appspec.yml`. (A stored zip names its entries in plain bytes.)
async fn install_revision(
    s3: &aws_sdk_s3::Client,
    revision: &reconcilers::cloud::Revision,
) -> Result<(), String> {
    let bundle = s3
        .get_object()
        .bucket(&revision.bucket)
        .key(&revision.key)
        .set_version_id(revision.version.clone())
        .send()
        .await
        .map_err(|e| {
            format!(
                "could not fetch s3://{}/{}: {e}",
                revision.bucket, revision.key
            )
        })?;
    let bytes = bundle
        .body
        .collect()
        .await
        .map_err(|e| format!("could not read the bundle: {e}"))?
        .into_bytes();
    let appspec = b"appspec.yml";
    if bytes.windows(appspec.len()).any(|window| window == appspec) {
        Ok(())
    } else {
        Err("the bundle has no appspec.yml".to_owned())
    }
}

/// AWS's shape of a deployment id, `d-` and nine upper-case letters and digits, made from
/// moto's UUID.
fn aws_deployment_id(moto_id: &str) -> String {
    if moto_id.starts_with("d-") {
        return moto_id.to_owned();
    }
    let digits: String = moto_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(9)
        .collect();
    format!("d-{}", digits.to_ascii_uppercase())
}

struct ActedRunCommand {
    moto: Arc<dyn RunCommand>,
    actors: Arc<Actors>,
}

#[async_trait]
impl RunCommand for ActedRunCommand {
    async fn send_command(&self, request: &CommandRequest) -> Result<String, CloudError> {
        let CommandTarget::Instances(instances) = &request.target else {
            return Err(CloudError::new(
                ErrorKind::Invalid,
                "ssm:SendCommand",
                "the test's agents answer commands sent to instance ids only",
            ));
        };
        let command_id = self.moto.send_command(request).await?;
        lock(&self.actors.commands).insert(command_id.clone(), instances.clone());
        Ok(command_id)
    }

    async fn invocations(&self, command_id: &str) -> Result<Vec<Invocation>, CloudError> {
        let commands = lock(&self.actors.commands);
        let instances = commands.get(command_id).ok_or_else(|| {
            CloudError::new(
                ErrorKind::NotFound,
                "ssm:ListCommandInvocations",
                format!("no command {command_id}"),
            )
        })?;
        Ok(instances
            .iter()
            .map(|instance| Invocation {
                command_id: command_id.to_owned(),
                instance_id: instance.clone(),
                status: InvocationStatus::Success,
                output: String::new(),
                error: String::new(),
            })
            .collect())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn moto_deployment_ids_take_the_shape_of_aws_ones() {
    let id = aws_deployment_id("3f2a9b1c-77de-4f0e-9a1b-0c2d3e4f5a6b");
    assert_eq!(id, "d-3F2A9B1C7");
    assert_eq!(aws_deployment_id("d-ABCDEFGH1"), "d-ABCDEFGH1");
}
