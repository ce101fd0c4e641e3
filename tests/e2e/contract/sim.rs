//! The simulated AWS backend, arranged like the moto one through its test controls.

use std::sync::Arc;
use std::time::Duration;

use reconcilers::sim::{LoadBalancerKind, SimConfig, SimulatedAws};

use super::{Backend, Gaps};
use crate::support::unique;

pub(super) async fn backend() -> Backend {
    backend_and_account().await.0
}

/// The backend and the simulated account behind it.
pub(super) async fn backend_and_account() -> (Backend, Arc<SimulatedAws>) {
    let config = SimConfig::manual();
    let (region, account, vpc_id) = (
        config.region.clone(),
        config.account.clone(),
        config.vpc_id.clone(),
    );
    let aws = Arc::new(SimulatedAws::with_config(config));

    let name_tag = unique("shops-");
    let instance_ids = vec![aws.add_instance(&name_tag), aws.add_instance(&name_tag)];
    let nlb_arn = aws.add_load_balancer(LoadBalancerKind::Network, "shops");
    let alb_arn = aws.add_load_balancer(LoadBalancerKind::Application, "proxy");
    let alb_listener_arn = aws
        .https_listener_of(&alb_arn)
        .expect("alb has an https listener");
    let responder_target_group_arn = aws.add_http_target_group(&unique("acme-"), 8089);
    let bucket = unique("contract-").to_lowercase();
    aws.create_bucket(&bucket);
    let source_version = aws.put_object(
        &bucket,
        "example.es-hs.com.zip",
        shop_controller::dev::sample_shop_zip(),
    );

    let clock = aws.clone();
    let backend = Backend {
        region,
        account,
        object_storage: aws.clone(),
        load_balancing: aws.clone(),
        certificates: aws.clone(),
        builds: aws.clone(),
        deployments: aws.clone(),
        fleet: aws.clone(),
        run_command: aws.clone(),
        vpc_id,
        nlb_arn,
        alb_arn,
        alb_listener_arn,
        responder_target_group_arn,
        name_tag,
        instance_ids,
        codebuild_project: unique("build-"),
        codedeploy_application: unique("app-"),
        deployment_group: unique("group-"),
        bucket,
        source_version,
        gaps: Gaps::default(),
        settle: Box::new(move || {
            let clock = clock.clone();
            Box::pin(async move { clock.advance(Duration::from_secs(120)) })
        }),
    };
    (backend, aws)
}
