//! The `Deployments` contract.

use reconcilers::cloud::{DeploymentRequest, DeploymentStatus, ErrorKind, Quota, Revision};

use super::Backend;

pub(super) async fn deployments_are_created_and_one_runs_per_group(backend: Backend) {
    let deployments = backend.deployments.clone();
    let request = DeploymentRequest {
        application: backend.codedeploy_application.clone(),
        deployment_group: backend.deployment_group.clone(),
        revision: Revision {
            bucket: backend.bucket.clone(),
            key: "example.es-hs.com.zip".to_owned(),
            version: None,
        },
        description: "contract".to_owned(),
    };
    let deployment = deployments
        .create_deployment(&request)
        .await
        .expect("create");
    let got = deployments
        .get_deployment(&deployment.id)
        .await
        .expect("get");
    assert_eq!(got.deployment_group, backend.deployment_group);
    assert_eq!(got.revision.key, "example.es-hs.com.zip");
    assert!(got.status.is_active() || got.status == DeploymentStatus::Succeeded);

    let page = deployments
        .list_deployment_ids(
            &backend.codedeploy_application,
            &backend.deployment_group,
            &[],
            None,
        )
        .await
        .expect("list");
    assert!(page.items.contains(&deployment.id));

    let second = deployments.create_deployment(&request).await;
    if backend.gaps.concurrent_deployments_allowed {
        assert!(
            second.is_ok(),
            "moto learned the deployment group lock: drop the gap"
        );
    } else {
        let busy = second.expect_err("group busy");
        assert_eq!(
            busy.kind,
            ErrorKind::QuotaExceeded(Quota::ConcurrentDeployments)
        );
    }
    let stop = deployments.stop_deployment(&deployment.id).await;
    if backend.gaps.stop_deployment_missing {
        assert!(stop.is_err(), "moto learned StopDeployment: drop the gap");
    } else {
        stop.expect("stop");
        let stopped = deployments
            .get_deployment(&deployment.id)
            .await
            .expect("get");
        assert_eq!(stopped.status, DeploymentStatus::Stopped);
    }
    let missing = deployments
        .get_deployment("d-MISSING00")
        .await
        .expect_err("unknown");
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
}

pub(super) async fn deployments_run_to_success(backend: Backend) {
    let request = DeploymentRequest {
        application: backend.codedeploy_application.clone(),
        deployment_group: backend.deployment_group.clone(),
        revision: Revision {
            bucket: backend.bucket.clone(),
            key: "example.es-hs.com.zip".to_owned(),
            version: None,
        },
        description: "contract".to_owned(),
    };
    let deployment = backend
        .deployments
        .create_deployment(&request)
        .await
        .expect("create");
    let aws_shaped = deployment.id.len() == 11 && deployment.id.starts_with("d-");
    assert_eq!(
        !aws_shaped, backend.gaps.deployment_ids_not_aws_shaped,
        "{}",
        deployment.id
    );
    backend.settle().await;

    let done = backend
        .deployments
        .get_deployment(&deployment.id)
        .await
        .expect("get");
    if backend.gaps.deployments_never_progress {
        assert_eq!(
            done.status,
            DeploymentStatus::Created,
            "moto learned to run deployments: drop the gap"
        );
    } else {
        assert_eq!(done.status, DeploymentStatus::Succeeded, "{done:?}");
    }
}
