//! The artifact resource: CodeBuild builds `<shop>.zip` at the pinned source version into the
//! region's artifact bucket, at a key derived from the shop and the version. An artifact that
//! is already there is reused, so a redeploy or a rollback to a built version starts no build.
//!
//! The build is recorded as an intent before `StartBuild` and its id after, so the next run
//! looks at that build directly. After a crash between the call and the id's write, the build
//! is found again among the project's recent builds by source version (S3 version ids are
//! unique), and CodeBuild's idempotency token covers the minutes right after the call.

use std::time::Duration;

use reconcilers::cloud::{Build, BuildRequest, BuildStatus, Builds, CloudError};
use reconcilers::spec::source_key;

use super::{Blocked, Controller, Converged};
use crate::runtime::Outcome;
use crate::store::{Intent, Lease, ShopView, now_millis};
use reconcilers::status::ResourceKind;

/// How often a running build is looked at (or the resync period, when shorter).
const BUILD_POLL: Duration = Duration::from_secs(10);

/// Where the artifact of a shop at a source version lives in the artifact bucket.
pub(super) fn artifact_key(shop: &str, source_version: &str) -> String {
    format!("artifacts/{shop}/{source_version}.zip")
}

/// The artifact the spec asks for: its key in `bucket`, its location and the status words.
pub(super) fn wanted(view: &ShopView, bucket: &str) -> (String, String, String) {
    let spec = &view.record.spec;
    let key = artifact_key(spec.shop_domain.as_str(), spec.source_version.as_str());
    let location = format!("s3://{bucket}/{key}");
    let desired = format!("{location} from version {}", spec.source_version);
    (key, location, desired)
}

/// Whether the status says `desired` was built for the current generation.
pub(super) fn built(view: &ShopView, desired: &str) -> bool {
    view.resources.iter().any(|r| {
        r.kind == ResourceKind::Artifact
            && r.desired == desired
            && r.sync == reconcilers::status::SyncState::Synced
            && r.observed_generation >= view.record.generation
    })
}

impl Controller {
    pub(super) async fn artifact(
        &self,
        view: &ShopView,
        lease: &Lease,
    ) -> Result<Converged, Blocked> {
        let spec = &view.record.spec;
        let region = self.region(view).await?;
        let bucket = region.artifact_bucket.as_str();
        let (key, location, desired) = wanted(view, bucket);

        // Built for this generation: an artifact is never changed in place, so a resync reads
        // nothing. (One deleted by hand is built again when a spec asks for it.)
        if built(view, &desired) {
            return Ok(Converged {
                desired,
                observed: location,
                reason: "",
            });
        }
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
        let shop = spec.shop_domain.as_str();
        let intent = self
            .store
            .intent(shop, ResourceKind::Artifact)
            .await?
            .filter(|i| i.desired == spec.source_version.as_str() && i.scope == project);
        let found = match intent.as_ref().and_then(|i| i.external_id.clone()) {
            Some(id) => builds.batch_get_builds(&[id]).await?.into_iter().next(),
            None => find_build(builds.as_ref(), project, spec.source_version.as_str()).await?,
        };
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
                let mut intent = Intent {
                    shop: shop.to_owned(),
                    kind: ResourceKind::Artifact,
                    scope: project.to_owned(),
                    desired: spec.source_version.to_string(),
                    external_id: None,
                    created_at: 0,
                    updated_at: 0,
                };
                self.fence(lease).await?;
                self.store.record_intent(&intent, now_millis()).await?;
                // TODO(#7): builds start in the order the shops' keys come, not spread over
                // their deployment groups, so the group whose shops were placed last gets its
                // artifacts last and only then starts its one-deployment-at-a-time queue: the
                // long tail of the 1,000-shop convergence bench (BENCHMARKS.md, figure 2).
                let build = builds.start_build(&request).await?;
                tracing::info!(shop, build = %build.id, "started build");
                intent.external_id = Some(build.id.clone());
                self.store.record_intent(&intent, now_millis()).await?;
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
