//! The moto backend: the real SDK adapters against the moto server, with a VPC, two tagged
//! instances, an NLB, an ALB with an HTTPS listener, a CodeBuild project and a CodeDeploy
//! deployment group arranged per test (names are unique, so tests share one moto account).
//! The controller's moto test (`moto_controller.rs`) deploys a shop into the same world.

use aws_sdk_codebuild::types::{
    ArtifactsType, ComputeType, EnvironmentType, ProjectArtifacts, ProjectEnvironment,
    ProjectSource, SourceType,
};
use aws_sdk_codedeploy::types::{Ec2TagFilter, Ec2TagFilterType};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, FixedResponseActionConfig, LoadBalancerTypeEnum,
    ProtocolEnum, TargetTypeEnum,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use reconcilers::cloud::CloudProvider;
use shop_controller::aws::http_client;

use super::{Backend, Gaps};
use crate::support::{moto_cloud, moto_s3, moto_url, unique};

pub(crate) const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
/// An image moto ships in its default catalogue.
pub(crate) const IMAGE: &str = "ami-03cf127a";
const ROLE: &str = "arn:aws:iam::123456789012:role/shop-controller-contract";

/// SDK configuration of the arrangement clients.
fn sdk_config() -> aws_config::SdkConfig {
    let credentials =
        aws_credential_types::Credentials::new("testing", "testing", None, None, "tests");
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(moto_url())
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
        )
        .http_client(http_client())
        .build()
}

/// The text of every `<tag>...</tag>` in an XML document, in order.
pub(crate) fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(value, _)| value.to_owned()))
        .collect()
}

pub(crate) async fn backend() -> Backend {
    let cloud = moto_cloud().await;
    let config = sdk_config();
    let ec2 = cloud.ec2(REGION);

    let vpc = ec2
        .query("CreateVpc", &[("CidrBlock", "10.0.0.0/16")])
        .await
        .expect("vpc");
    let vpc_id = xml_values(&vpc, "vpcId").remove(0);
    let mut subnets = Vec::new();
    for (cidr, zone) in [("10.0.1.0/24", "us-east-1a"), ("10.0.2.0/24", "us-east-1b")] {
        let params = [
            ("VpcId", vpc_id.as_str()),
            ("CidrBlock", cidr),
            ("AvailabilityZone", zone),
        ];
        let subnet = ec2.query("CreateSubnet", &params).await.expect("subnet");
        subnets.push(xml_values(&subnet, "subnetId").remove(0));
    }

    let name_tag = unique("shops-");
    let run = [
        ("ImageId", IMAGE),
        ("MinCount", "2"),
        ("MaxCount", "2"),
        ("InstanceType", "t3.micro"),
        ("SubnetId", subnets[0].as_str()),
        ("TagSpecification.1.ResourceType", "instance"),
        ("TagSpecification.1.Tag.1.Key", "Name"),
        ("TagSpecification.1.Tag.1.Value", name_tag.as_str()),
    ];
    let instances = ec2.query("RunInstances", &run).await.expect("instances");
    let instance_ids = xml_values(&instances, "instanceId");
    assert_eq!(instance_ids.len(), 2, "{instances}");

    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let nlb = elb
        .create_load_balancer()
        .name(unique("nlb").chars().take(32).collect::<String>())
        .r#type(LoadBalancerTypeEnum::Network)
        .set_subnets(Some(subnets.clone()))
        .send()
        .await
        .expect("nlb");
    let nlb_arn = nlb.load_balancers()[0]
        .load_balancer_arn()
        .unwrap_or_default()
        .to_owned();
    let alb = elb
        .create_load_balancer()
        .name(unique("alb").chars().take(32).collect::<String>())
        .r#type(LoadBalancerTypeEnum::Application)
        .set_subnets(Some(subnets.clone()))
        .send()
        .await
        .expect("alb");
    let alb_arn = alb.load_balancers()[0]
        .load_balancer_arn()
        .unwrap_or_default()
        .to_owned();

    let responder = elb
        .create_target_group()
        .name(unique("acme").chars().take(32).collect::<String>())
        .protocol(ProtocolEnum::Http)
        .port(8089)
        .vpc_id(&vpc_id)
        .target_type(TargetTypeEnum::Ip)
        .send()
        .await
        .expect("responder target group");
    let responder_target_group_arn = responder.target_groups()[0]
        .target_group_arn()
        .unwrap_or_default()
        .to_owned();

    let s3 = moto_s3().await;
    let bucket = unique("contract-").to_lowercase();
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    let enabled = VersioningConfiguration::builder()
        .status(BucketVersioningStatus::Enabled)
        .build();
    s3.put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(enabled)
        .send()
        .await
        .expect("versioning");
    let put = s3
        .put_object()
        .bucket(&bucket)
        .key("example.es-hs.com.zip")
        .body(ByteStream::from(shop_controller::dev::sample_shop_zip()))
        .send()
        .await
        .expect("source");
    let source_version = put.version_id().unwrap_or("null").to_owned();

    let codebuild_project = unique("build-");
    aws_sdk_codebuild::Client::new(&config)
        .create_project()
        .name(&codebuild_project)
        .source(
            ProjectSource::builder()
                .r#type(SourceType::S3)
                .location(format!("{bucket}/example.es-hs.com.zip"))
                .build()
                .expect("source"),
        )
        .artifacts(
            ProjectArtifacts::builder()
                .r#type(ArtifactsType::S3)
                .location(&bucket)
                .build()
                .expect("artifacts"),
        )
        .environment(
            ProjectEnvironment::builder()
                .r#type(EnvironmentType::LinuxContainer)
                .image("aws/codebuild/standard:7.0")
                .compute_type(ComputeType::BuildGeneral1Small)
                .build()
                .expect("environment"),
        )
        .service_role(ROLE)
        .send()
        .await
        .expect("codebuild project");

    let codedeploy = aws_sdk_codedeploy::Client::new(&config);
    let codedeploy_application = unique("app-");
    codedeploy
        .create_application()
        .application_name(&codedeploy_application)
        .send()
        .await
        .expect("codedeploy application");
    let deployment_group = unique("group-");
    let filter = Ec2TagFilter::builder()
        .key("Name")
        .value(&name_tag)
        .r#type(Ec2TagFilterType::KeyAndValue)
        .build();
    codedeploy
        .create_deployment_group()
        .application_name(&codedeploy_application)
        .deployment_group_name(&deployment_group)
        .service_role_arn(ROLE)
        .ec2_tag_filters(filter)
        .send()
        .await
        .expect("deployment group");

    let mut backend = Backend {
        region: REGION.to_owned(),
        account: ACCOUNT.to_owned(),
        object_storage: cloud.object_storage(REGION),
        load_balancing: cloud.load_balancing(REGION),
        certificates: cloud.certificates(REGION),
        builds: cloud.builds(REGION),
        deployments: cloud.deployments(REGION),
        fleet: cloud.fleet(REGION),
        run_command: cloud.run_command(REGION),
        vpc_id,
        nlb_arn,
        alb_arn: alb_arn.clone(),
        alb_listener_arn: String::new(),
        responder_target_group_arn,
        name_tag,
        instance_ids,
        codebuild_project,
        codedeploy_application,
        deployment_group,
        bucket,
        source_version,
        gaps: Gaps {
            duplicate_listeners_allowed: true,
            listener_quota_ignored: true,
            concurrent_deployments_allowed: true,
            stop_deployment_missing: true,
            deregistered_targets_linger: false,
            command_invocations_missing: true,
            identical_target_group_rejected: true,
            builds_write_no_artifact: true,
            deployments_never_progress: true,
            deployment_ids_not_aws_shaped: true,
            missing_rule_deleted_quietly: true,
        },
        settle: Box::new(|| Box::pin(async {})),
    };

    let default_certificate = backend.import_test_certificate("proxy.es-hs.com").await;
    let fixed = FixedResponseActionConfig::builder()
        .status_code("404")
        .build();
    let https = elb
        .create_listener()
        .load_balancer_arn(&alb_arn)
        .protocol(ProtocolEnum::Https)
        .port(443)
        .certificates(
            Certificate::builder()
                .certificate_arn(default_certificate)
                .build(),
        )
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::FixedResponse)
                .fixed_response_config(fixed)
                .build(),
        )
        .send()
        .await
        .expect("https listener");
    backend.alb_listener_arn = https.listeners()[0]
        .listener_arn()
        .unwrap_or_default()
        .to_owned();
    backend
}
