//! Operator controls (#6): pausing a shop or a region stops its reconciles until a resume, and
//! a plan shows what the controller would do next without doing it. Against the simulated AWS,
//! with the controller running.

use std::time::Duration;

use reconcilers::cloud::LoadBalancing;
use reconcilers::sim::SimulatedAws;
use reconcilers::status::{ResourceKind, SyncState};
use shop_controller::dev::DEV_REGION;
use shop_controller::grpc::proto::{
    self, GetShopRequest, PauseRegionRequest, PlanShopRequest, PlanShopResponse,
    ResumeRegionRequest,
};
use shop_controller::store::{Intent, now_millis};

use crate::controller::{Running, converged, start, wait_for};
use crate::convergence::fixture::deployments_of;
use crate::support::deploy_request;

/// Every call that changes something in the simulated AWS so far, by operation and outcome.
fn mutations(aws: &SimulatedAws) -> Vec<((String, String, String), u64)> {
    const VERBS: [&str; 12] = [
        "Create",
        "Delete",
        "Register",
        "Deregister",
        "Add",
        "Remove",
        "Start",
        "Stop",
        "Send",
        "Put",
        "Modify",
        "Import",
    ];
    let mut calls = aws.calls().snapshot();
    calls.retain(|((_, operation, _), _)| VERBS.iter().any(|verb| operation.starts_with(verb)));
    calls
}

async fn plan_of(running: &Running, shop: &str) -> PlanShopResponse {
    running
        .server
        .shops()
        .await
        .plan_shop(PlanShopRequest {
            shop_domain: shop.to_owned(),
        })
        .await
        .expect("plan")
        .into_inner()
}

/// The plan of `shop`, asserting that making it changed nothing in AWS (the loops make no
/// mutation meanwhile: the shops of these tests are paused or converged).
async fn plan_without_mutation(running: &Running, shop: &str) -> PlanShopResponse {
    let before = mutations(&running.aws);
    let plan = plan_of(running, shop).await;
    assert_eq!(mutations(&running.aws), before, "planning mutated AWS");
    plan
}

fn step(plan: &PlanShopResponse, kind: proto::ResourceKind) -> &proto::PlannedStep {
    plan.steps
        .iter()
        .find(|s| s.kind == kind as i32)
        .unwrap_or_else(|| panic!("no {kind:?} step in {plan:#?}"))
}

fn nothing_to_do(plan: &PlanShopResponse) -> bool {
    plan.steps
        .iter()
        .all(|s| s.actions.is_empty() && s.note.is_empty())
}

/// Runs `shopctl` against the running server; returns success and the output.
async fn shopctl(running: &Running, args: &[&str]) -> (bool, String) {
    let url = running.server.url();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_shopctl"))
            .arg("--server")
            .arg(url)
            .args(args)
            .output()
            .expect("run shopctl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    })
    .await
    .expect("join")
}

fn upload(running: &Running, shop: &str) -> String {
    let zip = shop_controller::dev::sample_shop_zip();
    running
        .aws
        .put_object("shop-sources", &format!("{shop}.zip"), zip)
}

/// Long enough for a few resyncs (every 500 ms in these tests).
const A_FEW_RESYNCS: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_region_holds_new_deploys_and_plans_their_creation_until_resumed() {
    let running = start().await;
    let store = running.store.store.as_ref();
    let mut admin = running.server.admin().await;
    let pause = PauseRegionRequest {
        region: DEV_REGION.to_owned(),
        reason: "maintenance window".to_owned(),
    };
    let paused = admin.pause_region(pause.clone()).await.expect("pause");
    assert!(paused.into_inner().changed);
    assert!(
        !admin
            .pause_region(pause)
            .await
            .expect("again")
            .into_inner()
            .changed
    );

    let shop = "held.es-hs.com";
    let version = upload(&running, shop);
    let mut client = running.server.shops().await;
    client
        .deploy_shop(deploy_request(shop))
        .await
        .expect("deploy");
    tokio::time::sleep(A_FEW_RESYNCS).await;
    let view = store.get_shop(shop).await.expect("read").expect("exists");
    assert!(view.resources.is_empty(), "{:?}", view.resources);
    assert!(view.placement.is_none());
    assert_eq!(running.aws.call_count("codebuild:StartBuild"), 0);

    let shown = client
        .get_shop(GetShopRequest {
            shop_domain: shop.to_owned(),
        })
        .await
        .expect("get")
        .into_inner();
    let status = shown.status.expect("status");
    assert!(status.paused.as_ref().is_some_and(|p| p.region));
    let blocker = status.blocked_by.expect("blocked");
    assert_eq!(blocker.reason, "Paused");
    assert!(
        blocker.message.contains("maintenance window"),
        "{}",
        blocker.message
    );

    // A fresh shop's plan is every create, in order, and plans writes nothing either.
    let plan = plan_without_mutation(&running, shop).await;
    assert!(plan.paused.is_some());
    let artifact = step(&plan, proto::ResourceKind::Artifact);
    assert!(
        artifact.actions[0].starts_with(&format!("build version {version}")),
        "{artifact:?}"
    );
    let deployment = step(&plan, proto::ResourceKind::Deployment);
    assert!(
        deployment.actions[0].contains("(queue position 1)"),
        "{deployment:?}"
    );
    assert_eq!(
        deployment.waiting_for,
        [proto::ResourceKind::Artifact as i32]
    );
    let target_group = step(&plan, proto::ResourceKind::TargetGroup);
    assert!(target_group.actions[0].starts_with("place the shop on group shops-a"));
    assert!(target_group.actions[1].starts_with("create target group"));
    assert!(
        target_group.actions[2].starts_with("register i-"),
        "{target_group:?}"
    );
    let listener = step(&plan, proto::ResourceKind::Listener);
    assert!(
        listener.actions[0].starts_with("create listener TCP :"),
        "{listener:?}"
    );
    assert_eq!(
        listener.waiting_for,
        [proto::ResourceKind::TargetGroup as i32]
    );
    let nginx = step(&plan, proto::ResourceKind::NginxConfig);
    assert!(
        nginx.actions[0].starts_with(&format!("write {shop}.conf")),
        "{nginx:?}"
    );
    assert!(step(&plan, proto::ResourceKind::Restart).actions.is_empty());
    let view = store.get_shop(shop).await.expect("read").expect("exists");
    assert!(view.placement.is_none(), "the plan placed the shop");

    let resume = ResumeRegionRequest {
        region: DEV_REGION.to_owned(),
        reason: "done".to_owned(),
    };
    assert!(
        admin
            .resume_region(resume)
            .await
            .expect("resume")
            .into_inner()
            .changed
    );
    converged(store, &[shop.to_owned()]).await;
    let events = store.shop_events(shop, 10).await.expect("events");
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    assert!(reasons.contains(&"RegionResumed"), "{reasons:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_shop_takes_no_new_version_until_resumed() {
    let running = start().await;
    let store = running.store.store.as_ref();
    let shop = "paused.es-hs.com";
    upload(&running, shop);
    let mut client = running.server.shops().await;
    client
        .deploy_shop(deploy_request(shop))
        .await
        .expect("deploy");
    converged(store, &[shop.to_owned()]).await;
    assert_eq!(running.aws.call_count("codebuild:StartBuild"), 1);

    let (ok, out) = shopctl(&running, &["pause", shop, "--reason", "investigating"]).await;
    assert!(ok && out.contains("paused"), "{out}");
    let before = store.get_shop(shop).await.expect("read").expect("exists");
    let v2 = upload(&running, shop);
    client
        .deploy_shop(deploy_request(shop))
        .await
        .expect("deploy v2");
    tokio::time::sleep(A_FEW_RESYNCS).await;
    assert_eq!(
        running.aws.call_count("codebuild:StartBuild"),
        1,
        "built while paused"
    );
    let during = store.get_shop(shop).await.expect("read").expect("exists");
    assert_eq!(
        during.resources, before.resources,
        "status written while paused"
    );
    let (ok, out) = shopctl(&running, &["get", shop]).await;
    assert!(
        ok && out.contains("Paused:          yes: investigating"),
        "{out}"
    );
    assert!(
        out.contains("Blocked by:") && out.contains("Paused: investigating"),
        "{out}"
    );
    let (ok, out) = shopctl(&running, &["list"]).await;
    assert!(ok && out.contains("[paused]"), "{out}");

    let (ok, out) = shopctl(&running, &["resume", shop]).await;
    assert!(ok && out.contains("resumed"), "{out}");
    wait_for(store, shop, ResourceKind::Artifact, |r| {
        r.sync == SyncState::Synced && r.desired.contains(&v2)
    })
    .await;
    converged(store, &[shop.to_owned()]).await;
    let events = store.shop_events(shop, 10).await.expect("events");
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    assert!(
        reasons.contains(&"Paused") && reasons.contains(&"Resumed"),
        "{reasons:?}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_of_a_converged_shop_is_empty_and_shows_a_listener_deleted_out_of_band() {
    let running = start().await;
    let store = running.store.store.as_ref();
    let shop = "planned.es-hs.com";
    upload(&running, shop);
    let mut client = running.server.shops().await;
    client
        .deploy_shop(deploy_request(shop))
        .await
        .expect("deploy");
    converged(store, &[shop.to_owned()]).await;
    let plan = plan_without_mutation(&running, shop).await;
    assert!(nothing_to_do(&plan), "{plan:#?}");
    let (ok, out) = shopctl(&running, &["plan", shop]).await;
    assert!(ok && out.contains("listener       nothing to do"), "{out}");

    // Paused, so the loops do not heal the listener before the plan sees it gone.
    let (ok, out) = shopctl(&running, &["pause", shop, "--reason", "look first"]).await;
    assert!(ok, "{out}");
    let placed = store
        .get_shop(shop)
        .await
        .expect("read")
        .expect("exists")
        .placement
        .expect("placed");
    let listeners = running
        .aws
        .describe_listeners(&placed.nlb_arn)
        .await
        .expect("list");
    let ours = listeners
        .iter()
        .find(|l| l.port == placed.port)
        .expect("the shop's listener");
    running
        .aws
        .delete_listener(&ours.arn)
        .await
        .expect("out-of-band delete");

    let plan = plan_without_mutation(&running, shop).await;
    assert!(
        plan.paused
            .as_ref()
            .is_some_and(|p| p.reason == "look first")
    );
    let listener = step(&plan, proto::ResourceKind::Listener);
    let expected = format!("create listener TCP :{} on {}", placed.port, placed.nlb_arn);
    assert!(listener.actions[0].starts_with(&expected), "{listener:?}");
    for kind in [
        proto::ResourceKind::Artifact,
        proto::ResourceKind::Deployment,
        proto::ResourceKind::TargetGroup,
        proto::ResourceKind::NginxConfig,
    ] {
        assert!(step(&plan, kind).actions.is_empty(), "{plan:#?}");
    }
    let (ok, out) = shopctl(&running, &["plan", shop]).await;
    assert!(ok && out.contains("paused: paused (look first)"), "{out}");
    assert!(out.contains(&format!("listener       {expected}")), "{out}");
    let still = running.aws.describe_listeners(&placed.nlb_arn).await;
    assert!(
        still.expect("list").iter().all(|l| l.port != placed.port),
        "healed while paused"
    );

    let (ok, out) = shopctl(&running, &["resume", shop]).await;
    assert!(ok, "{out}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // The loops heal while this polls, so no mutation check here.
    while !nothing_to_do(&plan_of(&running, shop).await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener was not recreated after the resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
}

/// The store's side, on both backends: a pause is no spec change, repeats change nothing, a
/// region's pause shows on its shops and wins over theirs, and each is announced.
async fn pauses_are_recorded_and_announced(store: crate::support::TestStore) {
    use shop_controller::store::{Change, StoreError};

    let store = store.store;
    store
        .put_region_config(&shop_controller::dev::dev_region_config(), 1)
        .await
        .expect("region");
    let spec = reconcilers::spec::ShopSpec {
        shop_domain: reconcilers::Hostname::parse("a.es-hs.com").expect("valid"),
        region: reconcilers::spec::RegionName::parse(DEV_REGION).expect("valid"),
        source_bucket: reconcilers::spec::BucketName::parse("shop-sources").expect("valid"),
        source_version: reconcilers::spec::SourceVersion::parse("v1").expect("valid"),
        custom_domain: None,
    };
    let generation = store
        .deploy_shop(&spec, 1)
        .await
        .expect("deploy")
        .record
        .generation;
    let mut changes = store.subscribe();

    assert!(
        store
            .set_shop_paused("a.es-hs.com", true, "why", 5)
            .await
            .expect("pause")
    );
    assert!(
        !store
            .set_shop_paused("a.es-hs.com", true, "why", 6)
            .await
            .expect("again")
    );
    let seen = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
    assert_eq!(
        seen.expect("in time").expect("change"),
        Change::Spec("a.es-hs.com".to_owned())
    );
    let view = store
        .get_shop("a.es-hs.com")
        .await
        .expect("read")
        .expect("exists");
    let pause = view.pause.expect("paused");
    assert_eq!(
        (pause.region, pause.reason.as_str(), pause.since),
        (false, "why", 5)
    );
    assert_eq!(
        view.record.generation, generation,
        "a pause is no spec change"
    );

    assert!(
        store
            .set_region_paused(DEV_REGION, true, "all", 7)
            .await
            .expect("region")
    );
    let view = store
        .get_shop("a.es-hs.com")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        view.pause.map(|p| (p.region, p.reason)),
        Some((true, "all".to_owned()))
    );
    assert!(
        store
            .set_region_paused(DEV_REGION, false, "", 8)
            .await
            .expect("resume region")
    );
    assert!(
        !store
            .set_region_paused(DEV_REGION, false, "", 8)
            .await
            .expect("again")
    );
    let view = store
        .get_shop("a.es-hs.com")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        view.pause.map(|p| p.region),
        Some(false),
        "the shop's own pause stays"
    );
    assert!(
        store
            .set_shop_paused("a.es-hs.com", false, "fixed", 9)
            .await
            .expect("resume")
    );
    let view = store
        .get_shop("a.es-hs.com")
        .await
        .expect("read")
        .expect("exists");
    assert!(view.pause.is_none());

    let events = store.shop_events("a.es-hs.com", 10).await.expect("events");
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "Created",
            "Paused",
            "RegionPaused",
            "RegionResumed",
            "Resumed"
        ]
    );
    assert!(matches!(
        store.set_shop_paused("nobody.es-hs.com", true, "", 1).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.set_region_paused("ap-south-9", true, "", 1).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_are_recorded_and_announced_on_sqlite() {
    pauses_are_recorded_and_announced(crate::support::sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_are_recorded_and_announced_on_postgres() {
    pauses_are_recorded_and_announced(crate::support::postgres_store().await).await;
}

/// A shop paused while its deployment runs keeps that deployment (the resume collects its
/// result, with no second one), and the next shop of the group deploys meanwhile instead of
/// waiting behind it for the resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_paused_mid_deployment_does_not_hold_up_its_group() {
    let running = start().await;
    let store = running.store.store.as_ref();
    let (first, second) = ("held.es-hs.com", "next.es-hs.com");
    let mut client = running.server.shops().await;
    upload(&running, first);
    client
        .deploy_shop(deploy_request(first))
        .await
        .expect("deploy");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let started = loop {
        let intent = store
            .intent(first, ResourceKind::Deployment)
            .await
            .expect("intent");
        if let Some(id) = intent
            .and_then(|i| i.external_id)
            .filter(|id| id.starts_with("d-"))
        {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no deployment started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    store
        .set_shop_paused(first, true, "mid-deployment", now_millis())
        .await
        .expect("pause");

    upload(&running, second);
    client
        .deploy_shop(deploy_request(second))
        .await
        .expect("deploy the next shop");
    converged(store, &[second.to_owned()]).await;
    let held = store
        .intent(first, ResourceKind::Deployment)
        .await
        .expect("intent");
    assert_eq!(
        held.and_then(|i| i.external_id).as_deref(),
        Some(started.as_str()),
        "the paused shop's deployment is kept for its resume"
    );

    store
        .set_shop_paused(first, false, "", now_millis())
        .await
        .expect("resume");
    converged(store, &[first.to_owned()]).await;
    let deployed: Vec<String> = deployments_of(&running.aws, "shops-a")
        .await
        .into_iter()
        .filter(|d| d.revision.key.contains(first))
        .map(|d| d.id)
        .collect();
    assert_eq!(deployed, [started], "deployed again after the resume");
    running.stop().await;
}

/// A converged shop can be left with a place in its group's deployment queue: a queued
/// revision the spec moved away from again before its turn, or a started deployment a crash
/// recorded after it had already finished. Either must not hold up the group once it reaches
/// the head (found by the process-kill suite: a queue whose head belonged to a converged shop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converged_shops_leftover_queue_place_does_not_hold_up_its_group() {
    let running = start().await;
    let store = running.store.store.as_ref();
    let mut client = running.server.shops().await;
    let (stale, behind) = ("stale.es-hs.com", "behind.es-hs.com");
    upload(&running, stale);
    client
        .deploy_shop(deploy_request(stale))
        .await
        .expect("deploy");
    converged(store, &[stale.to_owned()]).await;
    let view = store.get_shop(stale).await.expect("read").expect("exists");
    let deployed = view
        .resources
        .iter()
        .find(|r| r.kind == ResourceKind::Deployment)
        .expect("deployment status")
        .desired
        .clone();
    let finished = deployments_of(&running.aws, "shops-a").await;
    let finished = finished.last().expect("one deployment").id.clone();
    let region = store
        .get_region_config(DEV_REGION)
        .await
        .expect("read")
        .expect("dev region");
    let group = store
        .get_instance_group("shops-a")
        .await
        .expect("read")
        .expect("dev group");
    let scope = format!(
        "{}/{}",
        region.codedeploy_application, group.codedeploy_deployment_group
    );

    let leftovers = [
        (format!("s3://elsewhere/{stale}.zip on shops-a"), None),
        (deployed, Some(finished)),
    ];
    for (round, (desired, external_id)) in leftovers.into_iter().enumerate() {
        let leftover = Intent {
            shop: stale.to_owned(),
            kind: ResourceKind::Deployment,
            scope: scope.clone(),
            desired,
            external_id,
            created_at: 0,
            updated_at: 0,
        };
        store
            .record_intent(&leftover, now_millis())
            .await
            .expect("leave a queue place behind");
        let next = format!("{round}-{behind}");
        upload(&running, &next);
        client
            .deploy_shop(deploy_request(&next))
            .await
            .expect("deploy the shop behind");
        converged(store, &[next.clone(), stale.to_owned()]).await;
        let left = store
            .intent(stale, ResourceKind::Deployment)
            .await
            .expect("read");
        assert!(left.is_none(), "round {round}: still queued: {left:?}");
    }
    let of_stale = deployments_of(&running.aws, "shops-a").await;
    let of_stale = of_stale.iter().filter(|d| d.revision.key.contains(stale));
    assert_eq!(of_stale.count(), 1, "the converged shop was deployed again");
    running.stop().await;
}
