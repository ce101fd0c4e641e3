//! The `Builds` contract.

use reconcilers::cloud::{BuildRequest, BuildStatus};

use super::Backend;

pub(super) async fn builds_start_and_are_found_again(backend: Backend) {
    let builds = backend.builds.clone();
    let request = BuildRequest {
        project: backend.codebuild_project.clone(),
        source_bucket: backend.bucket.clone(),
        source_key: "example.es-hs.com.zip".to_owned(),
        source_version: backend.source_version.clone(),
        artifact_bucket: backend.bucket.clone(),
        artifact_key: "artifacts/example.es-hs.com/v1.zip".to_owned(),
        environment: vec![("SHOP_DOMAIN".to_owned(), "example.es-hs.com".to_owned())],
        idempotency_token: backend.unique_name("build"),
    };
    let build = builds.start_build(&request).await.expect("start");
    assert!(
        build
            .id
            .starts_with(&format!("{}:", backend.codebuild_project)),
        "{}",
        build.id
    );

    let found = builds
        .batch_get_builds(std::slice::from_ref(&build.id))
        .await
        .expect("get");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].project, backend.codebuild_project);

    let mut token = None;
    let mut ids = Vec::new();
    loop {
        let page = builds
            .list_build_ids(&backend.codebuild_project, token)
            .await
            .expect("list");
        ids.extend(page.items);
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert!(ids.contains(&build.id));
    let unknown = builds
        .batch_get_builds(&[format!("{}:missing", backend.codebuild_project)])
        .await;
    assert!(unknown.expect("unknown ids are left out").is_empty());
}

pub(super) async fn a_succeeded_build_wrote_its_artifact(backend: Backend) {
    let request = BuildRequest {
        project: backend.codebuild_project.clone(),
        source_bucket: backend.bucket.clone(),
        source_key: "example.es-hs.com.zip".to_owned(),
        source_version: backend.source_version.clone(),
        artifact_bucket: backend.bucket.clone(),
        artifact_key: format!("artifacts/{}.zip", backend.unique_name("build")),
        environment: Vec::new(),
        idempotency_token: backend.unique_name("build"),
    };
    let build = backend.builds.start_build(&request).await.expect("start");
    backend.settle().await;

    let done = backend
        .builds
        .batch_get_builds(std::slice::from_ref(&build.id))
        .await
        .expect("get");
    assert_eq!(done[0].status, BuildStatus::Succeeded);
    let artifact = backend
        .object_storage
        .head_object(&request.artifact_bucket, &request.artifact_key, None)
        .await;
    if backend.gaps.builds_write_no_artifact {
        let missing = artifact.expect_err("moto learned to run builds: drop the gap");
        assert!(missing.is_not_found(), "{missing}");
    } else {
        artifact.expect("the artifact is where the build was asked to put it");
    }
}
