//! [`Builds`] over CodeBuild: start a build of an exact S3 source version into an artifact
//! zip, read builds back in batches, list a project's builds for crash recovery.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_codebuild::types::{
    ArtifactNamespace, ArtifactPackaging, ArtifactsType, EnvironmentVariable,
    EnvironmentVariableType, ProjectArtifacts, SortOrderType, SourceType, StatusType,
};
use reconcilers::cloud::{Build, BuildRequest, BuildStatus, Builds, CloudError, ErrorKind, Page};

use super::calls::Calls;
use super::epoch_millis;

/// `BatchGetBuilds` takes at most 100 ids.
const BATCH_SIZE: usize = 100;

/// The CodeBuild client of one region.
pub struct CodeBuildBuilds {
    client: aws_sdk_codebuild::Client,
    calls: Arc<Calls>,
}

impl CodeBuildBuilds {
    pub(crate) fn new(client: aws_sdk_codebuild::Client, calls: Arc<Calls>) -> Self {
        Self { client, calls }
    }
}

#[async_trait]
impl Builds for CodeBuildBuilds {
    async fn start_build(&self, request: &BuildRequest) -> Result<Build, CloudError> {
        let operation = "codebuild:StartBuild";
        let invalid = |e: aws_sdk_codebuild::error::BuildError| {
            CloudError::new(ErrorKind::Invalid, operation, e)
        };
        let (path, name) = split_key(&request.artifact_key);
        let artifacts = ProjectArtifacts::builder()
            .r#type(ArtifactsType::S3)
            .location(&request.artifact_bucket)
            .path(path)
            .name(name)
            .namespace_type(ArtifactNamespace::None)
            .packaging(ArtifactPackaging::Zip)
            .override_artifact_name(false)
            .build()
            .map_err(invalid)?;
        let environment = request
            .environment
            .iter()
            .map(|(name, value)| {
                EnvironmentVariable::builder()
                    .name(name)
                    .value(value)
                    .r#type(EnvironmentVariableType::Plaintext)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;

        // For an S3 source, the source version is the object's version id.
        let call = self
            .client
            .start_build()
            .project_name(&request.project)
            .source_type_override(SourceType::S3)
            .source_location_override(format!("{}/{}", request.source_bucket, request.source_key))
            .source_version(&request.source_version)
            .artifacts_override(artifacts)
            .set_environment_variables_override(Some(environment))
            .idempotency_token(&request.idempotency_token)
            .send();
        let output = self.calls.run(operation, call).await?;
        output
            .build_value()
            .map(build_of)
            .ok_or_else(|| CloudError::new(ErrorKind::Other, operation, "response has no build"))
    }

    async fn batch_get_builds(&self, ids: &[String]) -> Result<Vec<Build>, CloudError> {
        let mut builds = Vec::with_capacity(ids.len());
        for batch in ids.chunks(BATCH_SIZE) {
            let call = self
                .client
                .batch_get_builds()
                .set_ids(Some(batch.to_vec()))
                .send();
            let output = self.calls.run("codebuild:BatchGetBuilds", call).await?;
            builds.extend(output.builds().iter().map(build_of));
        }
        Ok(builds)
    }

    async fn list_build_ids(
        &self,
        project: &str,
        next_token: Option<String>,
    ) -> Result<Page<String>, CloudError> {
        let call = self
            .client
            .list_builds_for_project()
            .project_name(project)
            .sort_order(SortOrderType::Descending)
            .set_next_token(next_token)
            .send();
        let output = self
            .calls
            .run("codebuild:ListBuildsForProject", call)
            .await?;
        Ok(Page {
            items: output.ids().to_vec(),
            next_token: output.next_token().map(str::to_owned),
        })
    }
}

fn build_of(build: &aws_sdk_codebuild::types::Build) -> Build {
    let status = status_of(build.build_status());
    let artifact_location = build
        .artifacts()
        .and_then(|artifacts| artifacts.location())
        .filter(|_| status == BuildStatus::Succeeded)
        .map(s3_url_of);
    Build {
        id: build.id().unwrap_or_default().to_owned(),
        project: build.project_name().unwrap_or_default().to_owned(),
        status,
        phase: build.current_phase().unwrap_or_default().to_owned(),
        source_version: build
            .resolved_source_version()
            .or(build.source_version())
            .unwrap_or_default()
            .to_owned(),
        artifact_location,
        started_at: build.start_time().map_or(0, epoch_millis),
    }
}

/// A status this SDK does not know yet counts as still running, so nothing acts on it.
fn status_of(status: Option<&StatusType>) -> BuildStatus {
    match status {
        Some(StatusType::Succeeded) => BuildStatus::Succeeded,
        Some(StatusType::Failed) => BuildStatus::Failed,
        Some(StatusType::Fault) => BuildStatus::Fault,
        Some(StatusType::TimedOut) => BuildStatus::TimedOut,
        Some(StatusType::Stopped) => BuildStatus::Stopped,
        _ => BuildStatus::InProgress,
    }
}

/// CodeBuild puts an S3 artifact at `location/path/name`: the key's folder and file name.
fn split_key(key: &str) -> (&str, &str) {
    key.rsplit_once('/').unwrap_or(("", key))
}

/// CodeBuild reports artifact locations as `arn:aws:s3:::bucket/key`.
fn s3_url_of(location: &str) -> String {
    match location.split_once(":::") {
        Some((arn, path)) if arn.starts_with("arn:") => format!("s3://{path}"),
        _ if location.starts_with("s3://") => location.to_owned(),
        _ => format!("s3://{location}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_keys_split_into_path_and_name() {
        assert_eq!(split_key("shops/a/b.zip"), ("shops/a", "b.zip"));
        assert_eq!(split_key("b.zip"), ("", "b.zip"));
    }

    #[test]
    fn artifact_locations_become_s3_urls() {
        let cases = [
            (
                "arn:aws:s3:::artifacts/shops/a.zip",
                "s3://artifacts/shops/a.zip",
            ),
            ("arn:aws-cn:s3:::artifacts/a.zip", "s3://artifacts/a.zip"),
            ("s3://artifacts/a.zip", "s3://artifacts/a.zip"),
            ("artifacts/a.zip", "s3://artifacts/a.zip"),
        ];
        for (location, url) in cases {
            assert_eq!(s3_url_of(location), url);
        }
    }

    #[test]
    fn builds_convert_with_artifacts_only_once_succeeded() {
        let artifacts = aws_sdk_codebuild::types::BuildArtifacts::builder()
            .location("arn:aws:s3:::artifacts/a.zip")
            .build();
        let build = |status| {
            aws_sdk_codebuild::types::Build::builder()
                .id("proj:1")
                .project_name("proj")
                .build_status(status)
                .current_phase("COMPLETED")
                .source_version("v1")
                .artifacts(artifacts.clone())
                .start_time(aws_smithy_types::DateTime::from_millis(1_700_000_000_123))
                .build()
        };

        let done = build_of(&build(StatusType::Succeeded));
        let running = build_of(&build(StatusType::InProgress));

        assert_eq!(
            done.artifact_location.as_deref(),
            Some("s3://artifacts/a.zip")
        );
        assert_eq!(done.started_at, 1_700_000_000_123);
        assert_eq!(done.source_version, "v1");
        assert_eq!(running.status, BuildStatus::InProgress);
        assert_eq!(running.artifact_location, None);
    }
}
