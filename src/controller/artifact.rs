//! The artifact resource: CodeBuild builds `<shop>.zip` at the pinned source version into the
//! region's artifact bucket, at a key derived from the shop and the version. An artifact that
//! is already there is reused, so a redeploy or a rollback to a built version starts no build.
//!
//! A build started before a crash is found again by listing the project's recent builds and
//! matching the source version (S3 version ids are unique), so a retry never starts a second
//! one; CodeBuild's idempotency token covers the minutes right after the call.
//! TODO(#4): record the intent in the store before `StartBuild` (builds older than the first
//! page of the listing are not found again).

use std::time::Duration;

use reconcilers::cloud::{Build, BuildRequest, BuildStatus, Builds, CloudError};
use reconcilers::spec::source_key;

use super::{Blocked, Controller, Converged};
use crate::runtime::Outcome;
use crate::store::ShopView;

/// How often a running build is looked at (or the resync period, when shorter).
const BUILD_POLL: Duration = Duration::from_secs(10);

/// Where the artifact of a shop at a source version lives in the artifact bucket.
pub(super) fn artifact_key(shop: &str, source_version: &str) -> String {
    format!("artifacts/{shop}/{source_version}.zip")
}

impl Controller {
    pub(super) async fn artifact(&self, view: &ShopView) -> Result<Converged, Blocked> {
        let spec = &view.record.spec;
        let region = self.region(view).await?;
        let bucket = region.artifact_bucket.as_str();
        let key = artifact_key(spec.shop_domain.as_str(), spec.source_version.as_str());
        let location = format!("s3://{bucket}/{key}");
        let desired = format!("{location} from version {}", spec.source_version);

        let storage = self.cloud.object_storage(region.region.as_str());
        match storage.head_object(bucket, &key, None).await {
            Ok(_) => {
                return Ok(Converged {
                    desired,
                    observed: location,
                    reason: "",
                });
            }
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error.into()),
        }

        let builds = self.cloud.builds(region.region.as_str());
        let project = region.codebuild_project.as_str();
        let found = find_build(builds.as_ref(), project, spec.source_version.as_str()).await?;
        let build = match found {
            // A failed build is tried again only after a while: a version that does not build
            // would otherwise keep CodeBuild busy.
            Some(build) if !failed_long_ago(&build) => build,
            _ => {
                let request = BuildRequest {
                    project: project.to_owned(),
                    source_bucket: spec.source_bucket.to_string(),
                    source_key: source_key(&spec.shop_domain),
                    source_version: spec.source_version.to_string(),
                    artifact_bucket: bucket.to_owned(),
                    artifact_key: key.clone(),
                    environment: vec![("SHOP_DOMAIN".to_owned(), spec.shop_domain.to_string())],
                    idempotency_token: format!("{}-{}", spec.shop_domain, spec.source_version),
                };
                let build = builds.start_build(&request).await?;
                tracing::info!(shop = %spec.shop_domain, build = %build.id, "started build");
                build
            }
        };
        match build.status {
            BuildStatus::Succeeded => Ok(Converged {
                desired,
                observed: location,
                reason: "",
            }),
            BuildStatus::InProgress => Err(Blocked {
                reason: "Building",
                message: format!("build {} is in phase {}", build.id, build.phase),
                outcome: Outcome::Requeue(BUILD_POLL.min(self.config.loops.resync)),
            }),
            failed => Err(Blocked {
                reason: "BuildFailed",
                message: format!(
                    "build {} ended {failed:?} in phase {}",
                    build.id, build.phase
                ),
                outcome: Outcome::Retry("build_failed"),
            }),
        }
    }
}

/// How long after a failed build of a version another one is started.
const REBUILD_AFTER: Duration = Duration::from_secs(10 * 60);

fn failed_long_ago(build: &Build) -> bool {
    let failed = !matches!(
        build.status,
        BuildStatus::InProgress | BuildStatus::Succeeded
    );
    let age = crate::store::now_millis().saturating_sub(build.started_at);
    failed && u128::try_from(age).unwrap_or(0) > REBUILD_AFTER.as_millis()
}

/// The newest build of `project` for `source_version` among its recent builds, if any.
async fn find_build(
    builds: &dyn Builds,
    project: &str,
    source_version: &str,
) -> Result<Option<Build>, CloudError> {
    let page = builds.list_build_ids(project, None).await?;
    if page.items.is_empty() {
        return Ok(None);
    }
    let recent = builds.batch_get_builds(&page.items).await?;
    let mut matching: Vec<Build> = recent
        .into_iter()
        .filter(|b| b.source_version == source_version)
        .collect();
    matching.sort_by_key(|b| std::cmp::Reverse(b.started_at));
    Ok(matching.into_iter().next())
}
