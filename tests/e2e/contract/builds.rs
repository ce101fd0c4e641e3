//! The `Builds` contract.

use reconcilers::cloud::BuildRequest;

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
