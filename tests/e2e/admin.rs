//! Region configs and instance groups round-trip through the admin API.

use shop_controller::grpc::proto::*;
use tonic::Code;

use crate::support::dev_server;

fn region(name: &str) -> RegionConfig {
    RegionConfig {
        region: name.to_owned(),
        enabled: true,
        codebuild_project: "build".to_owned(),
        artifact_bucket: "artifacts-bucket".to_owned(),
        codedeploy_application: "shops".to_owned(),
        proxy_name_tag: "proxy".to_owned(),
        nginx_config_dir: "/mnt/efs/nginx".to_owned(),
        alb_https_listener_arns: vec![format!(
            "arn:aws:elasticloadbalancing:{name}:123456789012:listener/app/p/1/2"
        )],
        acme_responder_target_group_arn: Some(format!(
            "arn:aws:elasticloadbalancing:{name}:123456789012:targetgroup/acme/3"
        )),
        global_accelerator_ips: vec!["192.0.2.1".to_owned(), "2001:db8::1".to_owned()],
        allowed_parent_domains: vec!["shops.example".to_owned()],
        updated_at: None,
    }
}

fn group(name: &str, region: &str) -> InstanceGroup {
    InstanceGroup {
        name: name.to_owned(),
        region: region.to_owned(),
        nlb_arns: vec![format!(
            "arn:aws:elasticloadbalancing:{region}:123456789012:loadbalancer/net/{name}/1"
        )],
        port_min: 30000,
        port_max: 30049,
        capacity: 50,
        codedeploy_deployment_group: name.to_owned(),
        enabled: true,
        updated_at: None,
    }
}

#[tokio::test]
async fn region_configs_round_trip() {
    let (server, _aws, _store) = dev_server().await;
    let mut admin = server.admin().await;
    let put = PutRegionConfigRequest {
        region_config: Some(region("us-west-2")),
    };
    let stored = admin
        .put_region_config(put)
        .await
        .expect("put")
        .into_inner();
    assert!(stored.updated_at.is_some());

    let got = admin
        .get_region_config(GetRegionConfigRequest {
            region: "us-west-2".to_owned(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        RegionConfig {
            updated_at: None,
            ..got.clone()
        },
        region("us-west-2")
    );

    let mut changed = region("us-west-2");
    changed.enabled = false;
    admin
        .put_region_config(PutRegionConfigRequest {
            region_config: Some(changed),
        })
        .await
        .expect("replace");
    let list = admin
        .list_region_configs(ListRegionConfigsRequest {})
        .await
        .expect("list")
        .into_inner();
    let names: Vec<(&str, bool)> = list
        .region_configs
        .iter()
        .map(|c| (c.region.as_str(), c.enabled))
        .collect();
    assert_eq!(names, [("eu-west-1", true), ("us-west-2", false)]);

    admin
        .delete_region_config(DeleteRegionConfigRequest {
            region: "us-west-2".to_owned(),
        })
        .await
        .expect("delete");
    let gone = admin
        .get_region_config(GetRegionConfigRequest {
            region: "us-west-2".to_owned(),
        })
        .await;
    assert_eq!(gone.expect_err("deleted").code(), Code::NotFound);
    let again = admin
        .delete_region_config(DeleteRegionConfigRequest {
            region: "us-west-2".to_owned(),
        })
        .await;
    assert_eq!(again.expect_err("deleted").code(), Code::NotFound);
}

#[tokio::test]
async fn invalid_configuration_is_refused() {
    let (server, _aws, _store) = dev_server().await;
    let mut admin = server.admin().await;
    let cases: Vec<(RegionConfig, &str)> = vec![
        (
            RegionConfig {
                region: "mars".to_owned(),
                ..region("us-west-2")
            },
            "not an AWS region name",
        ),
        (
            RegionConfig {
                artifact_bucket: "A".to_owned(),
                ..region("us-west-2")
            },
            "artifact_bucket",
        ),
        (
            RegionConfig {
                acme_responder_target_group_arn: Some(
                    "arn:aws:elasticloadbalancing:us-west-2:1:loadbalancer/app/p/1".to_owned(),
                ),
                ..region("us-west-2")
            },
            "acme_responder_target_group_arn",
        ),
        (
            RegionConfig {
                global_accelerator_ips: vec!["1.2.3".to_owned()],
                ..region("us-west-2")
            },
            "global_accelerator_ips",
        ),
        (
            RegionConfig {
                allowed_parent_domains: vec![],
                ..region("us-west-2")
            },
            "allowed_parent_domains",
        ),
        (
            RegionConfig {
                allowed_parent_domains: vec!["*.x.com".to_owned()],
                ..region("us-west-2")
            },
            "wildcard",
        ),
        (
            RegionConfig {
                nginx_config_dir: "relative/dir".to_owned(),
                ..region("us-west-2")
            },
            "nginx_config_dir",
        ),
        (
            RegionConfig {
                codebuild_project: "a b".to_owned(),
                ..region("us-west-2")
            },
            "codebuild_project",
        ),
    ];
    for (config, message) in cases {
        let error = admin
            .put_region_config(PutRegionConfigRequest {
                region_config: Some(config),
            })
            .await
            .expect_err(message);
        assert_eq!(error.code(), Code::InvalidArgument, "{message}");
        assert!(
            error.message().contains(message),
            "{:?} lacks {message:?}",
            error.message()
        );
    }
    let missing = admin
        .put_region_config(PutRegionConfigRequest {
            region_config: None,
        })
        .await;
    assert_eq!(missing.expect_err("missing").code(), Code::InvalidArgument);

    let bad_group = InstanceGroup {
        port_max: 70000,
        ..group("g", "eu-west-1")
    };
    let error = admin
        .put_instance_group(PutInstanceGroupRequest {
            instance_group: Some(bad_group),
        })
        .await;
    assert_eq!(error.expect_err("port").code(), Code::InvalidArgument);
}

#[tokio::test]
async fn instance_groups_round_trip_and_need_their_region() {
    let (server, _aws, _store) = dev_server().await;
    let mut admin = server.admin().await;

    let orphan = PutInstanceGroupRequest {
        instance_group: Some(group("g-1", "us-west-2")),
    };
    let error = admin
        .put_instance_group(orphan)
        .await
        .expect_err("no region");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(
        error.message(),
        "region us-west-2 has no config; put it first"
    );

    admin
        .put_region_config(PutRegionConfigRequest {
            region_config: Some(region("us-west-2")),
        })
        .await
        .expect("region");
    let put = PutInstanceGroupRequest {
        instance_group: Some(group("g-1", "us-west-2")),
    };
    admin.put_instance_group(put).await.expect("group");
    let got = admin
        .get_instance_group(GetInstanceGroupRequest {
            name: "g-1".to_owned(),
        })
        .await
        .expect("get");
    assert_eq!(
        InstanceGroup {
            updated_at: None,
            ..got.into_inner()
        },
        group("g-1", "us-west-2")
    );

    let only = ListInstanceGroupsRequest {
        region: "us-west-2".to_owned(),
    };
    let list = admin
        .list_instance_groups(only)
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.instance_groups.len(), 1);
    let all = admin
        .list_instance_groups(ListInstanceGroupsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.instance_groups.len(), 2, "the seeded group and ours");

    let in_use = admin
        .delete_region_config(DeleteRegionConfigRequest {
            region: "us-west-2".to_owned(),
        })
        .await;
    let error = in_use.expect_err("group uses region");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(
        error
            .message()
            .contains("still has shops or instance groups")
    );

    admin
        .delete_instance_group(DeleteInstanceGroupRequest {
            name: "g-1".to_owned(),
        })
        .await
        .expect("delete");
    admin
        .delete_region_config(DeleteRegionConfigRequest {
            region: "us-west-2".to_owned(),
        })
        .await
        .expect("now free");
}
