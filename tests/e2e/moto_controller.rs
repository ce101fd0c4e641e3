//! The whole controller against moto through the real SDK adapters: gRPC in, the contract
//! suite's moto world (VPC, instances, NLB, ALB, CodeBuild project, CodeDeploy group, source
//! bucket) out, the real nginx checking the config directory. Where moto lacks an AWS actor
//! (builds, deployments, command results), `actors` plays it and nothing else.
//!
//! A shop converges, owns exactly one target group and one listener, has its checked nginx
//! file on disk, and a controller started again over the same store finds nothing to change:
//! its every AWS call is a read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reconcilers::Hostname;
use reconcilers::cloud::{
    CallKey, CallStats, CloudProvider, LoadBalancing, Owner, TAG_INSTALLATION, TAG_SHOP, Tag,
};
use reconcilers::config::{InstanceGroup, RegionConfig};
use reconcilers::nginx::ConfigFileName;
use reconcilers::spec::{BucketName, RegionName};
use reconcilers::status::ResourceKind;
use shop_controller::controller::{Controller, ControllerConfig};
use shop_controller::grpc::Auth;
use shop_controller::grpc::proto::{
    ConditionStatus, ConditionType, DeployShopRequest, GetShopRequest, Shop,
};
use shop_controller::nginx::{DEFAULT_MAIN_CONFIG_TEMPLATE, NginxDir};
use shop_controller::store::now_millis;

use crate::contract::Backend;
use crate::contract::moto::{self, IMAGE, REGION};
use crate::support::{
    ShopClient, TestServer, TestStore, moto_cloud, moto_s3, sqlite_store, unique,
};

use actors::{Actors, WithActors};
use calls::{count, described, mutations};

mod actors;
mod calls;

/// Short, so that polls of builds and deployments and the second pass come quickly.
const RESYNC: Duration = Duration::from_secs(1);
const PARENT_DOMAIN: &str = "es-hs.com";
/// Generous: moto answers slowly on a loaded machine.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);

/// The moto world, a store holding its region and instance group, and the shop to deploy.
struct World {
    backend: Backend,
    store: TestStore,
    nginx_dir: PathBuf,
    shop: String,
    installation: String,
    /// Shared by every controller of the test, as AWS outlives a controller.
    actors: Arc<Actors>,
}

/// One controller over the world; its calls are counted apart from every other client's.
struct Running {
    calls: CallStats,
    stop: tokio::sync::oneshot::Sender<()>,
    loops: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(world: &World) -> Self {
        let moto: Arc<dyn CloudProvider> = moto_cloud().await;
        let cloud = WithActors::new(moto, world.actors.clone(), moto_s3().await);
        let calls = cloud.calls();
        let config = ControllerConfig::new(&world.installation, RESYNC);
        let controller = Arc::new(Controller::new(
            world.store.store.clone(),
            Arc::new(cloud),
            config,
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let loops = tokio::spawn(controller.run(async move {
            let _ = stopped.await;
        }));
        Self { calls, stop, loops }
    }

    /// Stops the loops, lets in-flight reconciles finish, and returns every call they made.
    async fn stop(self) -> Vec<(CallKey, u64)> {
        let _ = self.stop.send(());
        self.loops.await.expect("loops stop");
        self.calls.snapshot()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_converges_on_moto_and_a_second_reconcile_changes_nothing() {
    let world = arrange().await;
    let server = TestServer::start(
        world.store.store.clone(),
        moto_cloud().await,
        Auth::Disabled,
    )
    .await;
    let mut client = server.shops().await;

    let first = Running::start(&world).await;
    client
        .deploy_shop(deploy_request(&world))
        .await
        .expect("deploy");
    let shop = ready(&mut client, &world.shop).await;
    assert_each_object_made_once(&first.stop().await);

    let port = shop
        .status
        .as_ref()
        .and_then(|status| status.placement.as_ref())
        .map(|placement| u16::try_from(placement.port).expect("a port"))
        .expect("placed");
    assert_owns_one_target_group_and_listener(&world, port).await;
    let nginx_file = assert_nginx_file_checked(&world, port).await;

    // A controller restarted over the same store reconciles every kind of the shop at start,
    // and again at each resync: none of that may change anything in AWS.
    let second = Running::start(&world).await;
    two_passes(&second.calls).await;
    let second_calls = second.stop().await;
    let changed = mutations(&second_calls);
    assert!(
        changed.is_empty(),
        "a converged shop was changed again: {changed:#?}\nevery call: {:#?}",
        described(&second_calls)
    );
    let again = ready(&mut client, &world.shop).await;
    assert_eq!(generation(&again), generation(&shop));
    let text = std::fs::read_to_string(&nginx_file).expect("nginx file");
    assert!(
        text.contains(&format!("# generation: {}", generation(&shop))),
        "{text}"
    );
}

/// The contract's moto world, two proxies, the shop's source and a store configured for them.
async fn arrange() -> World {
    let backend = moto::backend().await;
    let proxy_tag = unique("proxies-");
    run_proxies(&proxy_tag).await;
    let shop = format!("{}.{PARENT_DOMAIN}", unique("moto"));
    moto_s3()
        .await
        .put_object()
        .bucket(&backend.bucket)
        .key(format!("{shop}.zip"))
        .body(shop_controller::dev::sample_shop_zip().into())
        .send()
        .await
        .expect("source");

    let store = sqlite_store().await;
    let nginx_dir = store.dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).expect("nginx dir");
    let now = now_millis();
    let region = region_config(&backend, &proxy_tag, &nginx_dir);
    store
        .store
        .put_region_config(&region, now)
        .await
        .expect("region");
    store
        .store
        .put_instance_group(&instance_group(&backend), now)
        .await
        .expect("group");
    World {
        backend,
        store,
        nginx_dir,
        shop,
        installation: unique("moto-"),
        actors: Arc::new(Actors::default()),
    }
}

/// Two running instances carrying the proxies' `Name` tag, for the nginx reloads.
async fn run_proxies(name_tag: &str) {
    let run = [
        ("ImageId", IMAGE),
        ("MinCount", "2"),
        ("MaxCount", "2"),
        ("InstanceType", "t3.micro"),
        ("TagSpecification.1.ResourceType", "instance"),
        ("TagSpecification.1.Tag.1.Key", "Name"),
        ("TagSpecification.1.Tag.1.Value", name_tag),
    ];
    let answer = moto_cloud()
        .await
        .ec2(REGION)
        .query("RunInstances", &run)
        .await
        .expect("proxies");
    assert_eq!(moto::xml_values(&answer, "instanceId").len(), 2, "{answer}");
}

/// The region of the moto world; the rest as the dev controller has it.
fn region_config(backend: &Backend, proxy_tag: &str, nginx_dir: &Path) -> RegionConfig {
    RegionConfig {
        region: RegionName::parse(REGION).expect("region"),
        enabled: true,
        codebuild_project: backend.codebuild_project.clone(),
        artifact_bucket: BucketName::parse(&backend.bucket).expect("bucket"),
        codedeploy_application: backend.codedeploy_application.clone(),
        proxy_name_tag: proxy_tag.to_owned(),
        nginx_config_dir: nginx_dir.display().to_string(),
        alb_https_listener_arns: vec![backend.alb_listener_arn.clone()],
        allowed_parent_domains: vec![Hostname::parse(PARENT_DOMAIN).expect("domain")],
        ..shop_controller::dev::dev_region_config()
    }
}

/// The world's two instances behind its NLB, deployed to by its CodeDeploy group.
fn instance_group(backend: &Backend) -> InstanceGroup {
    InstanceGroup {
        name: backend.name_tag.clone(),
        region: RegionName::parse(REGION).expect("region"),
        nlb_arns: vec![backend.nlb_arn.clone()],
        codedeploy_deployment_group: backend.deployment_group.clone(),
        ..shop_controller::dev::dev_instance_group()
    }
}

/// A deploy of the world's shop at its newest source version.
fn deploy_request(world: &World) -> DeployShopRequest {
    DeployShopRequest {
        shop_domain: world.shop.clone(),
        region: REGION.to_owned(),
        source_bucket: world.backend.bucket.clone(),
        source_version: None,
        custom_domain: None,
    }
}

/// The first run built once, deployed once, and made the target group, its targets, the
/// listener and the reload; the last also shows that the classification sees creations.
fn assert_each_object_made_once(calls: &[(CallKey, u64)]) {
    assert_eq!(count(calls, "codebuild:StartBuild"), 1, "{calls:#?}");
    assert_eq!(count(calls, "codedeploy:CreateDeployment"), 1, "{calls:#?}");
    let made = mutations(calls);
    for operation in [
        "CreateTargetGroup",
        "RegisterTargets",
        "CreateListener",
        "SendCommand",
    ] {
        assert!(
            made.iter().any(|call| call.contains(operation)),
            "{operation} missing from {made:#?}"
        );
    }
}

/// Waits until GetShop reports the shop Ready, and returns it.
async fn ready(client: &mut ShopClient, shop: &str) -> Shop {
    let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let answer = client
            .get_shop(GetShopRequest {
                shop_domain: shop.to_owned(),
            })
            .await
            .expect("get")
            .into_inner();
        let status = answer.status.clone().unwrap_or_default();
        let is_ready = status.conditions.iter().any(|c| {
            c.r#type == ConditionType::Ready as i32 && c.status == ConditionStatus::True as i32
        });
        if is_ready {
            assert!(status.blocked_by.is_none(), "{:?}", status.blocked_by);
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{shop} did not become ready: {:#?}",
            status.resources
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// In moto: one target group and one listener carry the shop's ownership tags, the listener
/// forwards to the group and the group holds both instances on the shop's port.
async fn assert_owns_one_target_group_and_listener(world: &World, port: u16) {
    let lb = moto_cloud().await.load_balancing(REGION);
    let owner = |kind: ResourceKind| Owner {
        installation: world.installation.clone(),
        shop: world.shop.clone(),
        resource: kind.as_str().to_owned(),
    };

    let groups = lb.list_target_groups().await.expect("target groups");
    let arns: Vec<String> = groups.iter().map(|g| g.arn.clone()).collect();
    let ours = owned_by_shop(lb.as_ref(), &arns, world).await;
    assert_eq!(ours.len(), 1, "target groups of the shop: {ours:#?}");
    let (group_arn, tags) = &ours[0];
    assert_eq!(
        Owner::from_tags(tags),
        Some(owner(ResourceKind::TargetGroup))
    );
    let group = groups.iter().find(|g| &g.arn == group_arn).expect("listed");
    assert_eq!(
        (group.port, group.vpc_id.as_str()),
        (port, world.backend.vpc_id.as_str())
    );

    let listeners = lb
        .describe_listeners(&world.backend.nlb_arn)
        .await
        .expect("listeners");
    let on_port: Vec<_> = listeners.iter().filter(|l| l.port == port).collect();
    assert_eq!(on_port.len(), 1, "listeners on port {port}: {on_port:#?}");
    let arns: Vec<String> = listeners.iter().map(|l| l.arn.clone()).collect();
    let ours = owned_by_shop(lb.as_ref(), &arns, world).await;
    assert_eq!(ours.len(), 1, "listeners of the shop: {ours:#?}");
    assert_eq!(ours[0].0, on_port[0].arn);
    assert_eq!(
        Owner::from_tags(&ours[0].1),
        Some(owner(ResourceKind::Listener))
    );
    assert_eq!(on_port[0].target_group_arn.as_ref(), Some(group_arn));

    let health = lb.describe_target_health(group_arn).await.expect("targets");
    let mut targets: Vec<(String, u16)> = health
        .into_iter()
        .map(|h| (h.target.id, h.target.port))
        .collect();
    targets.sort();
    let mut expected: Vec<(String, u16)> = world
        .backend
        .instance_ids
        .iter()
        .map(|id| (id.clone(), port))
        .collect();
    expected.sort();
    assert_eq!(targets, expected);
}

/// The objects among `arns` tagged for this installation and shop, with their tags.
async fn owned_by_shop(
    lb: &dyn LoadBalancing,
    arns: &[String],
    world: &World,
) -> Vec<(String, Vec<Tag>)> {
    let described = lb.describe_tags(arns).await.expect("tags");
    let has = |tags: &[Tag], key: &str, value: &str| {
        tags.iter().any(|t| t.key == key && t.value == value)
    };
    described
        .into_iter()
        .filter(|(_, tags)| {
            has(tags, TAG_INSTALLATION, &world.installation) && has(tags, TAG_SHOP, &world.shop)
        })
        .collect()
}

/// The shop's server block is the only file in the region's directory, points at the NLB
/// port, and the real `nginx -t` accepts the directory. Returns the file's path.
async fn assert_nginx_file_checked(world: &World, port: u16) -> PathBuf {
    let lb = moto_cloud().await.load_balancing(REGION);
    let nlb = lb
        .describe_load_balancers(std::slice::from_ref(&world.backend.nlb_arn))
        .await
        .expect("nlb");
    let upstream = format!("{}:{port}", nlb[0].dns_name);

    let binary = ControllerConfig::new(&world.installation, RESYNC).nginx_binary;
    let dir =
        NginxDir::new(&world.nginx_dir, &binary, DEFAULT_MAIN_CONFIG_TEMPLATE).expect("nginx dir");
    let shop = Hostname::parse(&world.shop).expect("shop");
    let file_name = ConfigFileName::for_shop(&shop).expect("file name");
    assert_eq!(dir.list().await.expect("list"), vec![file_name.clone()]);
    let path = dir.path(&file_name);
    let text = std::fs::read_to_string(&path).expect("nginx file on disk");
    assert!(
        text.contains(&format!("server_name {};", world.shop)),
        "{text}"
    );
    assert!(
        text.contains(&format!("set $shop_upstream {upstream};")),
        "{text}"
    );
    dir.check().await.expect("nginx -t accepts the directory");
    path
}

/// Waits until the reads of the start-up pass and of one resync are in: the target group's
/// targets and the NLB's listeners twice. Converged artifact, deployment and restart make no
/// call at all.
async fn two_passes(calls: &CallStats) {
    // A built artifact is not read again and listings are shared for half a resync, so the
    // reads that show two passes are the per-shop ones: target health, the listener listing.
    let wanted = [
        ("elasticloadbalancing:DescribeTargetHealth", 2),
        ("elasticloadbalancing:DescribeListeners", 2),
    ];
    let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
    while wanted
        .iter()
        .any(|(operation, n)| calls.count(operation) < *n)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted controller did not reconcile twice: {:#?}",
            described(&calls.snapshot())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn generation(shop: &Shop) -> i64 {
    shop.spec.as_ref().map_or(0, |spec| spec.generation)
}
