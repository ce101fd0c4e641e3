//! The controller converging many shops end to end: gRPC in, the simulated AWS out, on a clock
//! that runs 40 times faster. What these tests add to `controller.rs`: fifty shops split over
//! two instance groups behind one NLB, a newer spec arriving while a deployment runs, drift
//! (a lost target registration, a deleted target group) healed within one resync, teardown of
//! many shops without leftovers, and full quotas shown in status without a hot loop.
//!
//! Their fixture, in `convergence/fixture.rs`, is shared with `crash.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reconcilers::cloud::{Deployments, Fleet, LoadBalancing, Target};
use reconcilers::sim::ResourceType;
use reconcilers::status::{ResourceKind, SyncState};
use shop_controller::controller::ControllerConfig;
use shop_controller::grpc::proto::{
    ConditionStatus, DeleteShopRequest, GetInstanceGroupRequest, InstanceGroup,
    PutInstanceGroupRequest,
};
use shop_controller::store::Change;

use crate::controller::{Running, converged, converged_within, start_with, wait_for};
use crate::support::deploy_request;

pub(crate) mod fixture;

use fixture::{
    INSTALLATION, LONG_WAIT, artifact_key, assert_owned_exactly, assert_ready, assert_wired,
    builds_by_version, delete_and_wait, deploy_new_versions, deployment_named_in, eventually,
    get_shop, is_gone, latest_deployment, nginx_files, owned, owned_objects, placement_of,
    proto_kind, ready_condition, scaled_sim, shop_names, test_config,
};

/// The resync period of most tests here.
const RESYNC: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_shops_fill_two_groups_behind_one_nlb_and_converge() {
    let running = start_with(scaled_sim(), test_config(RESYNC)).await;
    let mut admin = running.server.admin().await;
    let mut group_a = admin
        .get_instance_group(GetInstanceGroupRequest {
            name: "shops-a".to_owned(),
        })
        .await
        .expect("seeded group")
        .into_inner();
    // 25 each: fifty shops fill both groups, so placement has to split them. The groups share
    // the NLB and the port range, so only placement keeps their ports apart on the NLB.
    group_a.capacity = 25;
    let group_b = InstanceGroup {
        name: "shops-b".to_owned(),
        codedeploy_deployment_group: "shops-b".to_owned(),
        updated_at: None,
        ..group_a.clone()
    };
    for _ in 0..2 {
        running.aws.add_instance("shops-b");
    }
    for group in [group_a.clone(), group_b] {
        let request = PutInstanceGroupRequest {
            instance_group: Some(group),
        };
        admin.put_instance_group(request).await.expect("put group");
    }
    let nlb = group_a.nlb_arns[0].clone();

    let mut client = running.server.shops().await;
    let shops = shop_names("fifty", 50);
    deploy_new_versions(&running, &mut client, &shops).await;
    converged_within(running.store.store.as_ref(), &shops, LONG_WAIT).await;

    let mut ports_per_nlb: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    let mut ports_per_group: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    for shop in &shops {
        let found = get_shop(&mut client, shop).await.expect("get shop");
        assert_ready(&found);
        let placement = found.status.and_then(|s| s.placement).expect("placed");
        let port = u16::try_from(placement.port).expect("a port");
        ports_per_nlb
            .entry(placement.nlb_arn)
            .or_default()
            .insert(port);
        ports_per_group
            .entry(placement.instance_group)
            .or_default()
            .insert(port);
    }
    assert_eq!(ports_per_nlb.keys().collect::<Vec<_>>(), vec![&nlb]);
    assert_eq!(ports_per_nlb[&nlb].len(), 50, "ports are unique on the NLB");
    let per_group: BTreeMap<&String, usize> =
        ports_per_group.iter().map(|(g, p)| (g, p.len())).collect();
    assert_eq!(
        per_group.values().copied().collect::<Vec<_>>(),
        vec![25, 25],
        "both groups used to capacity, ports unique per group: {per_group:?}"
    );

    assert_owned_exactly(&running.aws, &shops, "after convergence").await;
    assert_wired(&running.aws, &mut client, &shops).await;
    for shop in &shops {
        let port = placement_of(&mut client, shop).await.port;
        let text = std::fs::read_to_string(running.nginx_dir.join(format!("{shop}.conf")))
            .unwrap_or_else(|e| panic!("nginx file of {shop}: {e}"));
        assert!(text.contains(&format!("server_name {shop};")), "{text}");
        assert!(
            text.contains(&format!(":{port};")),
            "upstream port {port}: {text}"
        );
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_spec_during_a_deployment_wins_and_a_rollback_builds_nothing() {
    // Deployments take 3 s here (120 s simulated), so v2 is built while v1 still deploys.
    let mut sim = scaled_sim();
    sim.timings.deployment = Duration::from_secs(120);
    let running = start_with(sim, test_config(RESYNC)).await;
    let (aws, store) = (&running.aws, running.store.store.as_ref());
    let mut client = running.server.shops().await;
    let shop = "newer.es-hs.com".to_owned();
    let shops = [shop.clone()];

    let v1 = deploy_new_versions(&running, &mut client, &shops)
        .await
        .remove(0);
    let deploying = wait_for(store, &shop, ResourceKind::Deployment, |r| {
        r.reason == "Deploying" && r.message.contains("InProgress")
    })
    .await;
    let first = deployment_named_in(aws, &deploying.message).await;
    let v2 = deploy_new_versions(&running, &mut client, &shops)
        .await
        .remove(0);
    let still = aws.get_deployment(&first.id).await.expect("v1 deployment");
    assert!(
        still.status.is_active(),
        "v2 arrived while v1 deployed: {still:?}"
    );
    converged(store, &shops).await;

    let found = get_shop(&mut client, &shop).await.expect("get shop");
    assert_ready(&found);
    assert_eq!(found.spec.as_ref().map(|s| s.generation), Some(2));
    assert_eq!(
        found.spec.as_ref().map(|s| s.source_version.clone()),
        Some(v2.clone())
    );
    let status = found.status.expect("status");
    for resource in &status.resources {
        assert_eq!(resource.observed_generation, 2, "{resource:?}");
    }
    let latest = latest_deployment(aws, "shops-a").await;
    assert_eq!(latest.revision.key, artifact_key(&shop, &v2));
    assert_eq!(
        first.revision.key,
        artifact_key(&shop, &v1),
        "v1 deployed first"
    );
    assert_eq!(aws.call_count("codedeploy:CreateDeployment"), 2);
    assert_eq!(aws.call_count("codebuild:StartBuild"), 2);

    // Back to v1, which is built: the whole way to Ready without a build.
    let mut rollback = deploy_request(&shop);
    rollback.source_version = Some(v1.clone());
    let generation = client
        .deploy_shop(rollback)
        .await
        .expect("roll back")
        .into_inner()
        .generation;
    assert_eq!(generation, 3);
    converged(store, &shops).await;
    assert_eq!(
        aws.call_count("codebuild:StartBuild"),
        2,
        "no build for v1 again"
    );
    assert_eq!(builds_by_version(aws).await.len(), 2);
    let latest = latest_deployment(aws, "shops-a").await;
    assert_eq!(latest.revision.key, artifact_key(&shop, &v1));
    assert_eq!(aws.call_count("codedeploy:CreateDeployment"), 3);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_registration_and_a_deleted_target_group_heal_within_one_resync() {
    // The production waits (30 s and up): healing must come from the resync, not a retry.
    let resync = Duration::from_secs(1);
    let config = ControllerConfig::new(INSTALLATION, resync);
    let running = start_with(scaled_sim(), config).await;
    let (aws, store) = (&running.aws, running.store.store.as_ref());
    let mut client = running.server.shops().await;
    let shops = shop_names("drift", 2);
    deploy_new_versions(&running, &mut client, &shops).await;
    converged(store, &shops).await;
    // One resync, its jitter (10 %), and room for a slow machine: far below the 30 s a wait
    // would take.
    let within = resync.mul_f64(1.1) + Duration::from_secs(5);

    let target_group = owned(aws, &shops[0], ResourceType::TargetGroup).await;
    let port = placement_of(&mut client, &shops[0]).await.port;
    let instance = aws.running_instances("shops-a").await.expect("group")[0]
        .id
        .clone();
    let target = Target {
        id: instance.clone(),
        port,
    };
    aws.deregister_targets(&target_group, std::slice::from_ref(&target))
        .await
        .expect("out-of-band deregistration");
    let took = eventually("the target to be registered again", within, async || {
        let health = aws.describe_target_health(&target_group).await;
        let health = health.expect("target group stays");
        health
            .iter()
            .any(|h| h.target == target && h.state != "draining")
    })
    .await;
    eprintln!("registration healed in {took:?}");

    // ELB deletes a target group only once no listener uses it.
    let listener = owned(aws, &shops[1], ResourceType::Listener).await;
    let target_group = owned(aws, &shops[1], ResourceType::TargetGroup).await;
    aws.delete_listener(&listener)
        .await
        .expect("delete listener");
    aws.delete_target_group(&target_group)
        .await
        .expect("delete target group");
    let placement = placement_of(&mut client, &shops[1]).await;
    let took = eventually(
        "the target group and its listener to be back",
        within,
        async || {
            let owned = owned_objects(aws).await;
            let new_group = owned.get(&(shops[1].clone(), "target_group".to_owned()));
            let Some([new_group]) = new_group.map(Vec::as_slice) else {
                return false;
            };
            let listeners = aws.describe_listeners(&placement.nlb_arn).await;
            listeners.expect("nlb").iter().any(|l| {
                l.port == placement.port && l.target_group_arn.as_ref() == Some(&new_group.id)
            })
        },
    )
    .await;
    eprintln!("target group and listener healed in {took:?}");
    assert_ne!(
        owned(aws, &shops[1], ResourceType::TargetGroup).await,
        target_group
    );

    converged(store, &shops).await;
    assert_owned_exactly(aws, &shops, "after healing").await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_shops_leave_nothing_tagged_and_give_their_ports_back() {
    let running = start_with(scaled_sim(), test_config(RESYNC)).await;
    let (aws, store) = (&running.aws, running.store.store.as_ref());
    let mut client = running.server.shops().await;
    let shops = shop_names("gone", 10);
    deploy_new_versions(&running, &mut client, &shops).await;
    converged(store, &shops).await;
    let mut freed = BTreeSet::new();
    for shop in &shops {
        freed.insert(placement_of(&mut client, shop).await.port);
    }
    assert_eq!(freed.len(), 10);

    for shop in &shops {
        let request = DeleteShopRequest {
            shop_domain: shop.clone(),
        };
        client.delete_shop(request).await.expect("delete");
    }
    eventually("every shop to be removed", LONG_WAIT, async || {
        for shop in &shops {
            if !is_gone(&mut client, shop).await {
                return false;
            }
        }
        true
    })
    .await;

    let left = crate::support::shop_objects(aws, INSTALLATION);
    assert!(left.is_empty(), "teardown left objects behind: {left:?}");
    assert_eq!(nginx_files(&running.nginx_dir), Vec::<String>::new());
    let placements = store.region_placements("eu-west-1").await.expect("list");
    assert!(placements.is_empty(), "{placements:?}");

    // Placement takes the lowest free port: one that a deleted shop held.
    let next = shop_names("next", 1);
    deploy_new_versions(&running, &mut client, &next).await;
    converged(store, &next).await;
    let port = placement_of(&mut client, &next[0]).await.port;
    assert_eq!(freed.first(), Some(&port));
    assert_owned_exactly(aws, &next, "after the new shop").await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listener_quota_is_shown_without_a_hot_loop_and_clears_when_a_shop_leaves() {
    // Placement counts on AWS's 50 listeners per NLB; this account allows only 3, so the 4th
    // shop is placed but its CreateListener is refused.
    let mut sim = scaled_sim();
    sim.quotas.listeners_per_load_balancer = 3;
    let running = start_with(sim, test_config(RESYNC)).await;
    let (aws, store) = (&running.aws, running.store.store.as_ref());
    let mut client = running.server.shops().await;
    let shops = shop_names("quota", 4);
    let (first, blocked) = (&shops[..3], &shops[3]);
    deploy_new_versions(&running, &mut client, first).await;
    converged(store, first).await;
    deploy_new_versions(&running, &mut client, std::slice::from_ref(blocked)).await;
    wait_for(store, blocked, ResourceKind::Listener, |r| {
        r.reason == "QuotaExceeded"
    })
    .await;
    // Its deployment goes on regardless: wait for it and for the nginx config waiting on the
    // listener, so that nothing of the shop changes from here on.
    wait_for(store, blocked, ResourceKind::Deployment, |r| {
        r.sync == SyncState::Synced
    })
    .await;
    wait_for(store, blocked, ResourceKind::NginxConfig, |r| {
        r.reason == "WaitingForListener"
    })
    .await;

    let found = get_shop(&mut client, blocked).await.expect("get shop");
    let blocker = found.status.as_ref().and_then(|s| s.blocked_by.clone());
    let blocker = blocker.expect("blocked");
    assert_eq!(blocker.kind, proto_kind(ResourceKind::Listener));
    assert_eq!(blocker.reason, "QuotaExceeded");
    assert!(
        blocker.message.contains("at most 3 listeners"),
        "names the quota: {}",
        blocker.message
    );
    assert_ne!(ready_condition(&found), Some(ConditionStatus::True as i32));
    for shop in first {
        assert_ready(&get_shop(&mut client, shop).await.expect("get shop"));
    }

    // Quota waits start at 2 s: at most 2 attempts in 3 s. A loop on the 0.5 s resync would
    // make 6; one woken by its own status, hundreds.
    let window = quiet_window(&running, blocked, "elasticloadbalancing:CreateListener").await;
    assert!(window.calls <= 2, "CreateListener in 3 s: {}", window.calls);
    assert_eq!(window.status_writes, 0, "a repeated wait rewrites nothing");

    delete_and_wait(&mut client, &first[0]).await;
    converged_within(store, std::slice::from_ref(blocked), LONG_WAIT).await;
    assert_owned_exactly(aws, &shops[1..], "after the quota cleared").await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_group_is_shown_and_takes_the_next_shop_once_one_leaves() {
    let running = start_with(scaled_sim(), test_config(RESYNC)).await;
    let (aws, store) = (&running.aws, running.store.store.as_ref());
    let mut admin = running.server.admin().await;
    let mut group = admin
        .get_instance_group(GetInstanceGroupRequest {
            name: "shops-a".to_owned(),
        })
        .await
        .expect("seeded group")
        .into_inner();
    group.capacity = 3;
    let request = PutInstanceGroupRequest {
        instance_group: Some(group),
    };
    admin.put_instance_group(request).await.expect("put group");
    let mut client = running.server.shops().await;
    let shops = shop_names("full", 4);
    let (first, blocked) = (&shops[..3], &shops[3]);
    deploy_new_versions(&running, &mut client, first).await;
    converged(store, first).await;
    deploy_new_versions(&running, &mut client, std::slice::from_ref(blocked)).await;
    // Wait for the whole chain of waits, so that nothing of the shop changes from here on.
    let waits = [
        (ResourceKind::Deployment, "InstanceGroupsFull"),
        (ResourceKind::TargetGroup, "InstanceGroupsFull"),
        (ResourceKind::Listener, "WaitingForTargetGroup"),
        (ResourceKind::NginxConfig, "WaitingForListener"),
    ];
    for (kind, reason) in waits {
        wait_for(store, blocked, kind, |r| r.reason == reason).await;
    }

    let found = get_shop(&mut client, blocked).await.expect("get shop");
    let status = found.status.clone().expect("status");
    let blocker = status.blocked_by.expect("blocked");
    assert_eq!(blocker.kind, proto_kind(ResourceKind::Deployment));
    assert_eq!(blocker.reason, "InstanceGroupsFull");
    assert!(
        blocker.message.contains("at capacity (shops-a: 3/3)"),
        "names the limit: {}",
        blocker.message
    );
    assert!(status.placement.is_none());
    assert_ne!(ready_condition(&found), Some(ConditionStatus::True as i32));
    for shop in first {
        assert_ready(&get_shop(&mut client, shop).await.expect("get shop"));
    }

    // Placement looks at the group's instances once per attempt. The three Ready shops'
    // target groups resync every 0.45 s at the soonest: at most 21 looks in 3 s. The blocked
    // shop's two kinds wait 2 s and then 4 s: at most 4 more. A loop on the resync would add
    // 12; one woken by its own status, hundreds.
    let window = quiet_window(&running, blocked, "ec2:DescribeInstances").await;
    assert!(
        window.calls <= 25,
        "DescribeInstances in 3 s: {}",
        window.calls
    );
    assert_eq!(window.status_writes, 0, "a repeated wait rewrites nothing");

    let freed = placement_of(&mut client, &first[0]).await.port;
    delete_and_wait(&mut client, &first[0]).await;
    converged_within(store, std::slice::from_ref(blocked), LONG_WAIT).await;
    let taken = placement_of(&mut client, blocked).await;
    assert_eq!(taken.instance_group, "shops-a");
    assert_eq!(taken.port, freed, "the lowest free port is the freed one");
    assert_owned_exactly(aws, &shops[1..], "after room was freed").await;
    running.stop().await;
}

/// What happened during three quiet seconds.
pub(crate) struct Window {
    /// Calls of the operation.
    pub(crate) calls: u64,
    /// Status changes of the shop the store announced.
    pub(crate) status_writes: usize,
}

/// Watches `operation` and the shop's status for three seconds: a measurement window, so a
/// fixed time by nature.
pub(crate) async fn quiet_window(running: &Running, shop: &str, operation: &str) -> Window {
    let mut changes = running.store.store.subscribe();
    let before = running.aws.call_count(operation);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = running.aws.call_count(operation) - before;
    let mut status_writes = 0;
    while let Ok(change) = changes.try_recv() {
        if matches!(&change, Change::Status(s, _) if s == shop) {
            status_writes += 1;
        }
    }
    eprintln!("in 3 s: {calls} calls of {operation}, {status_writes} status writes of {shop}");
    Window {
        calls,
        status_writes,
    }
}
