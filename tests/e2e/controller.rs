//! The controller's loops end to end: gRPC in, the simulated AWS out.

use std::sync::Arc;
use std::time::Duration;

use reconcilers::cloud::{CloudProvider, Fleet, LoadBalancing, TAG_SHOP};
use reconcilers::sim::ResourceType;
use reconcilers::status::{ResourceKind, ResourceStatus, SyncState};
use shop_controller::controller::{CertificateSettings, Controller, ControllerConfig};
use shop_controller::grpc::proto::{
    ConditionStatus, ConditionType, DeleteShopRequest, GetShopRequest, RestartShopRequest,
};
use shop_controller::store::Store;

use reconcilers::sim::{ClockMode, SimConfig, SimulatedAws};
use shop_controller::grpc::Auth;

use crate::support::{
    ShopClient, TestServer, TestStore, deploy_request, shop_objects, sqlite_store,
};

pub(crate) fn synced(view: &shop_controller::store::ShopView, kind: ResourceKind) -> bool {
    view.resources.iter().any(|r| {
        r.kind == kind
            && r.sync == SyncState::Synced
            && r.observed_generation == view.record.generation
    })
}

/// Waits until every shop is ready: built, deployed, reachable through its target group,
/// listener and nginx config.
pub(crate) async fn converged(store: &dyn Store, shops: &[String]) {
    converged_within(store, shops, Duration::from_secs(60)).await;
}

/// Like [`converged`], for runs that need longer than a minute.
pub(crate) async fn converged_within(store: &dyn Store, shops: &[String], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut done = true;
        for shop in shops {
            let view = store.get_shop(shop).await.expect("read").expect("exists");
            // Ready means every resource converged for this generation.
            done &= view.ready && synced(&view, ResourceKind::NginxConfig);
        }
        if done {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let mut report = Vec::new();
            for shop in shops {
                let view = store.get_shop(shop).await.expect("read").expect("exists");
                let states: Vec<String> = view
                    .resources
                    .iter()
                    .map(|r| format!("{}={:?}/{}: {}", r.kind, r.sync, r.reason, r.message))
                    .collect();
                report.push(format!("{shop} ready={} {states:?}", view.ready));
            }
            panic!("shops did not converge:\n{}", report.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A controller running over a seeded SQLite store and a simulated AWS whose clock runs 40
/// times faster (proxy reloads take 0.1 s instead of 4 s, builds 1.5 s instead of 60 s).
pub(crate) struct Running {
    pub(crate) server: TestServer,
    pub(crate) aws: Arc<SimulatedAws>,
    pub(crate) store: TestStore,
    pub(crate) nginx_dir: std::path::PathBuf,
    pub(crate) controller: Arc<Controller>,
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
    pub(crate) loops: tokio::task::JoinHandle<()>,
}

pub(crate) async fn start() -> Running {
    let sim = SimConfig {
        clock: ClockMode::Scaled(40.0),
        ..SimConfig::default()
    };
    start_with(
        sim,
        ControllerConfig::new("e2e", Duration::from_millis(500)),
    )
    .await
}

/// Like [`start`], with this simulated account and controller configuration.
pub(crate) async fn start_with(sim: SimConfig, config: ControllerConfig) -> Running {
    start_with_certificates(sim, config, |_| None).await
}

/// Like [`start_with`], with the certificate settings `certificates` makes over the store.
pub(crate) async fn start_with_certificates(
    sim: SimConfig,
    config: ControllerConfig,
    certificates: impl FnOnce(Arc<dyn Store>) -> Option<CertificateSettings>,
) -> Running {
    start_on(sqlite_store().await, sim, config, certificates).await
}

/// Like [`start_with_certificates`], over `store` (SQLite or PostgreSQL), which it seeds.
pub(crate) async fn start_on(
    store: TestStore,
    sim: SimConfig,
    config: ControllerConfig,
    certificates: impl FnOnce(Arc<dyn Store>) -> Option<CertificateSettings>,
) -> Running {
    let aws = Arc::new(SimulatedAws::with_config(sim));
    let nginx_dir = store.dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).expect("nginx dir");
    shop_controller::dev::seed(store.store.as_ref(), &aws, &nginx_dir)
        .await
        .expect("seed");
    // The server plans with a controller of its own, as `serve` does without the loops.
    let cloud: Arc<dyn CloudProvider> = Arc::new(aws.clone());
    let planner = Arc::new(Controller::new(
        store.store.clone(),
        cloud.clone(),
        config.clone(),
    ));
    let mut services =
        shop_controller::server::services(store.store.clone(), cloud.clone(), Auth::Disabled);
    services.planner = Some(planner);
    let server = TestServer::serve(services).await;
    let mut controller = Controller::new(store.store.clone(), cloud, config);
    if let Some(settings) = certificates(store.store.clone()) {
        controller = controller.with_certificates(settings);
    }
    let controller = Arc::new(controller);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let loops = tokio::spawn(controller.clone().run(async move {
        let _ = stopped.await;
    }));
    Running {
        server,
        aws,
        store,
        nginx_dir,
        controller,
        stop,
        loops,
    }
}

/// Starts the controller's loops over `store` and `aws`; they stop when the sender is used.
pub(crate) fn spawn_controller(
    store: &TestStore,
    aws: &Arc<SimulatedAws>,
    config: ControllerConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let cloud: Arc<dyn CloudProvider> = Arc::new(aws.clone());
    let controller = Arc::new(Controller::new(store.store.clone(), cloud, config));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let loops = tokio::spawn(controller.run(async move {
        let _ = stopped.await;
    }));
    (stop, loops)
}

impl Running {
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        self.loops.await.expect("loops stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shops_converge_heal_drift_and_are_torn_down_without_leftovers() {
    let running = start().await;
    let (server, aws, store, nginx_dir) = (
        &running.server,
        &running.aws,
        &running.store,
        &running.nginx_dir,
    );
    let mut client = server.shops().await;
    let shops: Vec<String> = (0..5).map(|i| format!("shop-{i}.es-hs.com")).collect();
    for shop in &shops {
        aws.put_object(
            "shop-sources",
            &format!("{shop}.zip"),
            shop_controller::dev::sample_shop_zip(),
        );
        client
            .deploy_shop(deploy_request(shop))
            .await
            .expect("deploy");
    }
    converged(store.store.as_ref(), &shops).await;

    let mut shop_client = server.shops().await;
    let shop = shop_client
        .get_shop(GetShopRequest {
            shop_domain: shops[0].clone(),
        })
        .await
        .expect("get")
        .into_inner();
    let status = shop.status.expect("status");
    assert!(status.blocked_by.is_none(), "{:?}", status.blocked_by);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.r#type == ConditionType::Ready as i32);
    assert_eq!(ready.map(|c| c.status), Some(ConditionStatus::True as i32));
    assert_eq!(
        aws.call_count("codedeploy:CreateDeployment"),
        5,
        "one deployment per shop"
    );

    let owned = shop_objects(aws, "e2e");
    let count = |kind| owned.iter().filter(|r| r.kind == kind).count();
    assert_eq!(count(ResourceType::TargetGroup), 5, "{owned:?}");
    assert_eq!(count(ResourceType::Listener), 5, "{owned:?}");
    let mut ports: Vec<u16> = Vec::new();
    for shop in &shops {
        let view = store
            .store
            .get_shop(shop)
            .await
            .expect("read")
            .expect("exists");
        ports.push(view.placement.expect("placed").port);
    }
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 5, "every shop has its own port");

    let group = store
        .store
        .get_instance_group("shops-a")
        .await
        .expect("read")
        .expect("seeded");
    let nlb = group.nlb_arns[0].clone();
    let listeners = aws.describe_listeners(&nlb).await.expect("list");
    aws.delete_listener(&listeners[0].arn)
        .await
        .expect("out-of-band delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while aws.describe_listeners(&nlb).await.expect("list").len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deleted listener was not recreated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let file = |shop: &str| nginx_dir.join(format!("{shop}.conf"));
    for shop in &shops {
        let text = std::fs::read_to_string(file(shop)).expect("nginx file of every shop");
        assert!(text.contains(&format!("server_name {shop};")), "{text}");
    }
    std::fs::remove_file(file(&shops[1])).expect("out-of-band delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !file(&shops[1]).exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deleted nginx file was not rewritten"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A restart runs on every instance of the group, and a failing one shows in status.
    let restart = RestartShopRequest {
        shop_domain: shops[2].clone(),
        region: "eu-west-1".to_owned(),
    };
    client.restart_shop(restart.clone()).await.expect("restart");
    let status = wait_for(
        store.store.as_ref(),
        &shops[2],
        ResourceKind::Restart,
        |r| r.sync == SyncState::Synced && r.desired == "restart 1",
    )
    .await;
    assert_eq!(
        status.observed.matches("i-").count(),
        2,
        "{}",
        status.observed
    );
    aws.fail_commands_on(&group_instances(aws).await[0], "service shop@ not found");
    client.restart_shop(restart).await.expect("restart again");
    let failed = wait_for(
        store.store.as_ref(),
        &shops[2],
        ResourceKind::Restart,
        |r| r.reason == "RestartFailed",
    )
    .await;
    assert!(
        failed.message.contains("service shop@ not found"),
        "{}",
        failed.message
    );
    // Readiness is written right after the resource's status.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store
        .store
        .get_shop(&shops[2])
        .await
        .expect("read")
        .is_some_and(|view| view.ready)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a failed restart keeps the shop from Ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    client
        .delete_shop(DeleteShopRequest {
            shop_domain: shops[0].clone(),
        })
        .await
        .expect("delete");
    // The broken instance cannot stop the shop: the teardown waits, saying why, and goes on
    // once the instance runs commands again.
    let stuck = wait_for(
        store.store.as_ref(),
        &shops[0],
        ResourceKind::Deployment,
        |r| r.reason == "UninstallFailed",
    )
    .await;
    assert!(
        stuck.message.contains("service shop@ not found"),
        "{}",
        stuck.message
    );
    aws.heal_commands_on(&group_instances(aws).await[0]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store
        .store
        .get_shop(&shops[0])
        .await
        .expect("read")
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shop was not torn down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        aws.resources_tagged(TAG_SHOP, &shops[0]).is_empty(),
        "teardown left objects behind"
    );
    assert_eq!(shop_objects(aws, "e2e").len(), 8, "the others stay");
    assert_eq!(
        store
            .store
            .region_placements("eu-west-1")
            .await
            .expect("list")
            .len(),
        4
    );
    let events = store
        .store
        .shop_events(&shops[0], 10)
        .await
        .expect("events");
    assert_eq!(events.last().map(|e| e.reason.as_str()), Some("Removed"));
    // The others are untouched by the teardown, and shop-2's failed restart went through on a
    // retry once the instance healed.
    let rest = [
        shops[1].clone(),
        shops[2].clone(),
        shops[3].clone(),
        shops[4].clone(),
    ];
    converged(store.store.as_ref(), &rest).await;

    running.stop().await;
}

/// Waits until the shop's `kind` status satisfies `done`, and returns it.
pub(crate) async fn wait_for(
    store: &dyn Store,
    shop: &str,
    kind: ResourceKind,
    done: impl Fn(&ResourceStatus) -> bool,
) -> ResourceStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let view = store.get_shop(shop).await.expect("read").expect("exists");
        if let Some(status) = view.resources.iter().find(|r| r.kind == kind && done(r)) {
            return status.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind} of {shop} never got there: {:?}",
            view.resources
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The running instances of the seeded group.
async fn group_instances(aws: &SimulatedAws) -> Vec<String> {
    let instances = aws.running_instances("shops-a").await.expect("list");
    instances.into_iter().map(|i| i.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_version_is_never_built_again_and_a_failed_build_is_shown() {
    let running = start().await;
    let (server, aws, store) = (&running.server, &running.aws, &running.store);
    let mut client = server.shops().await;
    let shop = "rollback.es-hs.com";
    let artifact_synced = |version: String| {
        move |r: &ResourceStatus| r.sync == SyncState::Synced && r.desired.contains(&version)
    };

    let v1 = deploy_new_version(&running, &mut client, shop).await;
    let v2 = deploy_new_version(&running, &mut client, shop).await;
    assert_ne!(v1, v2);
    assert_eq!(aws.call_count("codebuild:StartBuild"), 2);

    let mut rollback = deploy_request(shop);
    rollback.source_version = Some(v1.clone());
    client.deploy_shop(rollback).await.expect("roll back to v1");
    wait_for(
        store.store.as_ref(),
        shop,
        ResourceKind::Artifact,
        artifact_synced(v1),
    )
    .await;
    assert_eq!(
        aws.call_count("codebuild:StartBuild"),
        2,
        "a rollback reuses the artifact"
    );

    let v3 = aws.put_object(
        "shop-sources",
        &format!("{shop}.zip"),
        shop_controller::dev::sample_shop_zip(),
    );
    aws.fail_builds_of(&v3, "BUILD");
    client
        .deploy_shop(deploy_request(shop))
        .await
        .expect("deploy v3");
    let failed = wait_for(store.store.as_ref(), shop, ResourceKind::Artifact, |r| {
        r.reason == "BuildFailed"
    })
    .await;
    assert!(
        failed.message.contains("in phase BUILD"),
        "{}",
        failed.message
    );
    assert!(
        failed.message.starts_with("build shop-build:"),
        "names the build: {}",
        failed.message
    );
    running.stop().await;
}

/// Uploads a new version of the shop's source, deploys it and waits for its artifact.
async fn deploy_new_version(running: &Running, client: &mut ShopClient, shop: &str) -> String {
    let zip = shop_controller::dev::sample_shop_zip();
    let version = running
        .aws
        .put_object("shop-sources", &format!("{shop}.zip"), zip);
    client
        .deploy_shop(deploy_request(shop))
        .await
        .expect("deploy");
    let store = running.store.store.as_ref();
    wait_for(store, shop, ResourceKind::Artifact, |r| {
        r.sync == SyncState::Synced && r.desired.contains(&version)
    })
    .await;
    version
}

/// The dev mode's promise: break a shop's objects with `shopctl break` and watch the next
/// resync put each one back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopctl_break_is_healed_by_the_next_resync() {
    let running = start().await;
    let (aws, store) = (&running.aws, &running.store);
    let dev =
        crate::support::TestServer::start_dev(store.store.clone(), Arc::new(aws.clone())).await;
    let shop = "broken.es-hs.com";
    aws.put_object(
        "shop-sources",
        &format!("{shop}.zip"),
        shop_controller::dev::sample_shop_zip(),
    );
    let mut client = running.server.shops().await;
    client
        .deploy_shop(deploy_request(shop))
        .await
        .expect("deploy");
    converged(store.store.as_ref(), &[shop.to_owned()]).await;
    let view = store
        .store
        .get_shop(shop)
        .await
        .expect("read")
        .expect("exists");
    let placed = view.placement.expect("placed");
    let group_name = reconcilers::names::target_group_name(
        &reconcilers::Hostname::parse(shop).expect("valid"),
        placed.port,
    );
    let registered = || async {
        let groups = aws.list_target_groups().await.expect("list");
        let Some(group) = groups.into_iter().find(|g| g.name == group_name) else {
            return 0;
        };
        let targets = aws
            .describe_target_health(&group.arn)
            .await
            .expect("health");
        // A deregistered target drains for a while before it disappears.
        targets.iter().filter(|t| t.state != "draining").count()
    };
    assert_eq!(registered().await, 2);

    let url = dev.url();
    let shopctl = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_shopctl"))
                .arg("--server")
                .arg(url)
                .args(args)
                .output()
                .expect("run shopctl");
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        })
    };
    let nginx_file = running.nginx_dir.join(format!("{shop}.conf"));
    for what in ["registration", "nginx-file", "target-group"] {
        let (ok, out, err) = shopctl(vec!["break".into(), shop.into(), what.into()])
            .await
            .expect("join");
        assert!(ok, "break {what}: {out}{err}");
        assert!(out.starts_with("removed "), "{out}");
        // Broken for real before the heal.
        match what {
            "registration" => assert_eq!(registered().await, 1, "{out}"),
            "nginx-file" => assert!(!nginx_file.exists(), "{out}"),
            _ => assert_eq!(registered().await, 0, "{out}"),
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while registered().await != 2 || !nginx_file.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} was not healed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    converged(store.store.as_ref(), &[shop.to_owned()]).await;

    let (ok, _, err) = shopctl(vec![
        "break".into(),
        "nobody.es-hs.com".into(),
        "listener".into(),
    ])
    .await
    .expect("join");
    assert!(!ok && err.contains("not found"), "{err}");
    running.stop().await;
}
