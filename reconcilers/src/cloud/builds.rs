//! Builds: CodeBuild turns a source zip at an exact version into a deployable artifact.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{CloudError, Page};

/// What to build. The caller records this intent before calling [`Builds::start_build`], so a
/// crash between the call and recording the id can be recovered by
/// [`Builds::list_build_ids`] and matching `source_version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRequest {
    pub project: String,
    pub source_bucket: String,
    pub source_key: String,
    pub source_version: String,
    /// Bucket and key where the artifact zip must land.
    pub artifact_bucket: String,
    pub artifact_key: String,
    /// Environment variables handed to the build.
    pub environment: Vec<(String, String)>,
    /// CodeBuild's idempotency token; it only lives for minutes, the intent row is what
    /// makes retries safe.
    pub idempotency_token: String,
}

/// Where a build is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildStatus {
    InProgress,
    Succeeded,
    Failed,
    Fault,
    TimedOut,
    Stopped,
}

impl BuildStatus {
    pub fn is_done(self) -> bool {
        !matches!(self, BuildStatus::InProgress)
    }
}

/// One build as CodeBuild reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    pub id: String,
    pub project: String,
    pub status: BuildStatus,
    /// The phase the build is in or failed in, such as `BUILD` or `UPLOAD_ARTIFACTS`.
    pub phase: String,
    /// The source version CodeBuild resolved and built.
    pub source_version: String,
    /// `s3://bucket/key` of the artifact, once the build succeeded.
    pub artifact_location: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub started_at: i64,
}

/// Starting and observing builds.
#[async_trait]
pub trait Builds: Send + Sync {
    async fn start_build(&self, request: &BuildRequest) -> Result<Build, CloudError>;

    /// Builds by id, at most 100 per call; unknown ids are left out.
    async fn batch_get_builds(&self, ids: &[String]) -> Result<Vec<Build>, CloudError>;

    /// Build ids of a project, newest first, one page at a time.
    async fn list_build_ids(
        &self,
        project: &str,
        next_token: Option<String>,
    ) -> Result<Page<String>, CloudError>;
}
