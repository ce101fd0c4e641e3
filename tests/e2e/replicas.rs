//! Several controller replicas over one PostgreSQL database and one simulated AWS: shops are
//! shared through leases, nothing is created twice, a shop whose claim belongs to a replica
//! that went away is taken over once that claim lapses, and a replica that starts late gets
//! its share of the shops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reconcilers::cloud::Deployments;
use reconcilers::cloud::{CloudProvider, TAG_SHOP};
use reconcilers::sim::{ClockMode, ResourceType, SimConfig, SimulatedAws, Timings};
use reconcilers::status::ResourceKind;
use shop_controller::controller::{Controller, ControllerConfig, FairShare, LeaseConfig};
use shop_controller::store::{Census, Claim, PostgresStore, Store};
use sqlx::Row;

use crate::support::{deploy_request, fresh_postgres_database};

struct Replica {
    controller: Arc<Controller>,
    stop: tokio::sync::oneshot::Sender<()>,
    loops: tokio::task::JoinHandle<()>,
}

async fn replica(url: &str, aws: &Arc<SimulatedAws>, holder: &str) -> Replica {
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(url).await.expect("connect"));
    let cloud: Arc<dyn CloudProvider> = Arc::new(aws.clone());
    let mut config = ControllerConfig::new("e2e", Duration::from_millis(500));
    config.lease = LeaseConfig {
        holder: holder.to_owned(),
        ttl: Duration::from_secs(3),
    };
    let controller = Arc::new(Controller::new(store, cloud, config));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let loops = tokio::spawn(controller.clone().run(async move {
        let _ = stopped.await;
    }));
    Replica {
        controller,
        stop,
        loops,
    }
}

impl Replica {
    /// The epoch of each of `shops` this replica believes it holds a running claim on.
    fn claims(&self, shops: &[String]) -> BTreeMap<String, i64> {
        self.controller
            .held_leases()
            .into_iter()
            .filter(|lease| shops.contains(&lease.shop))
            .map(|lease| (lease.shop, lease.epoch))
            .collect()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.loops.await.expect("loops stop");
    }
}

/// A PostgreSQL database seeded like `shop-controller dev`, and its simulated AWS on a clock
/// 40 times faster than real time.
async fn world() -> (String, Arc<dyn Store>, Arc<SimulatedAws>, tempfile::TempDir) {
    world_with(SimConfig {
        clock: ClockMode::Scaled(40.0),
        ..SimConfig::default()
    })
    .await
}

async fn world_with(
    config: SimConfig,
) -> (String, Arc<dyn Store>, Arc<SimulatedAws>, tempfile::TempDir) {
    let url = fresh_postgres_database().await;
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await.expect("connect"));
    let aws = Arc::new(SimulatedAws::with_config(config));
    let dir = tempfile::tempdir().expect("dir");
    shop_controller::dev::seed(store.as_ref(), &aws, dir.path())
        .await
        .expect("seed");
    (url, store, aws, dir)
}

/// Records a shop's spec the way `DeployShop` does, after uploading its source.
async fn deploy(store: &dyn Store, aws: &SimulatedAws, shop: &str) {
    let request = deploy_request(shop);
    let version = aws.put_object(
        &request.source_bucket,
        &format!("{shop}.zip"),
        shop_controller::dev::sample_shop_zip(),
    );
    let spec = reconcilers::spec::ShopSpec {
        shop_domain: reconcilers::Hostname::parse(&request.shop_domain).expect("valid"),
        region: reconcilers::spec::RegionName::parse(&request.region).expect("valid"),
        source_bucket: reconcilers::spec::BucketName::parse(&request.source_bucket).expect("valid"),
        source_version: reconcilers::spec::SourceVersion::parse(&version).expect("valid"),
        custom_domain: None,
    };
    store
        .deploy_shop(&spec, shop_controller::store::now_millis())
        .await
        .expect("deploy");
}

async fn wait_ready(store: &dyn Store, shops: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut waiting = Vec::new();
        for shop in shops {
            let view = store.get_shop(shop).await.expect("read").expect("exists");
            if !view.ready {
                let states: Vec<String> = view
                    .resources
                    .iter()
                    .map(|r| format!("{}={:?}/{}: {}", r.kind, r.sync, r.reason, r.message))
                    .collect();
                waiting.push(format!("{shop}: {states:?}"));
            }
        }
        if waiting.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready:\n{}",
            waiting.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_the_shops_and_create_nothing_twice() {
    let (url, store, aws, _dir) = world().await;
    let a = replica(&url, &aws, "replica-a").await;
    let b = replica(&url, &aws, "replica-b").await;
    let shops: Vec<String> = (0..12).map(|i| format!("shared-{i}.es-hs.com")).collect();
    for shop in &shops {
        deploy(store.as_ref(), &aws, shop).await;
    }
    wait_ready(store.as_ref(), &shops).await;

    assert_eq!(
        aws.call_count("codebuild:StartBuild"),
        shops.len() as u64,
        "one build per shop"
    );
    assert_eq!(
        aws.call_count("codedeploy:CreateDeployment"),
        shops.len() as u64,
        "one deployment per shop"
    );
    for shop in &shops {
        let objects = aws.resources_tagged(TAG_SHOP, shop);
        let count = |kind: ResourceType| objects.iter().filter(|o| o.kind == kind).count();
        assert_eq!(count(ResourceType::TargetGroup), 1, "{shop}: {objects:?}");
        assert_eq!(count(ResourceType::Listener), 1, "{shop}: {objects:?}");
    }
    // The region's challenge listener and rule, under one lease: one of each.
    let region_objects = aws.resources_tagged(TAG_SHOP, shop_controller::dev::DEV_REGION);
    let count = |kind: ResourceType| region_objects.iter().filter(|o| o.kind == kind).count();
    assert_eq!(count(ResourceType::Listener), 1, "{region_objects:?}");
    assert_eq!(count(ResourceType::ListenerRule), 1, "{region_objects:?}");
    // Both replicas did work: each holds (or held) some of the shops.
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let holders: Vec<String> = sqlx::query("SELECT DISTINCT holder FROM shop_leases")
        .fetch_all(&pool)
        .await
        .expect("leases")
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
    assert!(
        holders.contains(&"replica-a".to_owned()) && holders.contains(&"replica-b".to_owned()),
        "{holders:?}"
    );
    a.stop().await;
    b.stop().await;
    // A stopped replica hands its claims back.
    let running: i64 = sqlx::query(&format!(
        "SELECT count(*) FROM shop_leases WHERE expires_at > {}",
        shop_controller::store::now_millis()
    ))
    .fetch_one(&pool)
    .await
    .expect("count")
    .get(0);
    assert_eq!(running, 0, "claims released at shutdown");
}

/// A claim left by a replica that went away (or sleeps): the shop is not touched while the
/// claim runs, and converges once it lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shop_claimed_by_a_vanished_replica_is_taken_over_when_its_lease_lapses() {
    let (url, store, aws, _dir) = world().await;
    let shop = "orphaned.es-hs.com".to_owned();
    let claim = store
        .claim_lease(&shop, "vanished-replica", 4_000)
        .await
        .expect("claim");
    assert!(matches!(claim, Claim::Granted(_)));
    let claimed_at = tokio::time::Instant::now();
    let a = replica(&url, &aws, "replica-a").await;
    deploy(store.as_ref(), &aws, &shop).await;

    // While the claim runs, nothing happens to the shop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = store.get_shop(&shop).await.expect("read").expect("exists");
    assert!(
        view.resources.is_empty(),
        "reconciled under another replica's claim: {:?}",
        view.resources
    );
    assert_eq!(aws.call_count("codebuild:StartBuild"), 0);

    wait_ready(store.as_ref(), std::slice::from_ref(&shop)).await;
    assert!(
        claimed_at.elapsed() >= Duration::from_secs(4),
        "taken over before the claim lapsed"
    );
    a.stop().await;
}

/// Waits until the shop's `kind` status has `reason`, and returns its message, moving the
/// simulated clock a second at a time.
async fn wait_reason(
    store: &dyn Store,
    aws: &SimulatedAws,
    shop: &str,
    kind: ResourceKind,
    reason: &str,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        aws.advance(Duration::from_secs(1));
        let view = store.get_shop(shop).await.expect("read").expect("exists");
        if let Some(status) = view
            .resources
            .iter()
            .find(|r| r.kind == kind && r.reason == reason)
        {
            return status.message.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{shop} never showed {kind} {reason}: {:?}",
            view.resources
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One CodeDeploy group, many shops, two replicas: deployments run one at a time, in the
/// order the shops asked for them, and each waiting shop says where it is in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployments_of_one_group_run_one_at_a_time_in_the_order_asked() {
    // A clock that moves only when the test moves it: the first deployment is still running
    // while the others join the queue, however slow the machine.
    let timings = Timings {
        build: Duration::from_secs(8),
        deployment: Duration::from_secs(300),
        ..Timings::default()
    };
    let (url, store, aws, _dir) = world_with(SimConfig {
        clock: ClockMode::Manual,
        timings,
        ..SimConfig::default()
    })
    .await;
    let a = replica(&url, &aws, "replica-a").await;
    let b = replica(&url, &aws, "replica-b").await;
    let shops: Vec<String> = (0..5).map(|i| format!("queued-{i}.es-hs.com")).collect();

    deploy(store.as_ref(), &aws, &shops[0]).await;
    wait_reason(
        store.as_ref(),
        &aws,
        &shops[0],
        ResourceKind::Deployment,
        "Deploying",
    )
    .await;
    for (place, shop) in shops.iter().enumerate().skip(1) {
        deploy(store.as_ref(), &aws, shop).await;
        let message = wait_reason(
            store.as_ref(),
            &aws,
            shop,
            ResourceKind::Deployment,
            "QueuedForDeploymentGroup",
        )
        .await;
        assert!(
            message.contains(&format!("number {} in the queue", place + 1)),
            "{shop}: {message}"
        );
    }
    let clock = aws.clone();
    let ticking = tokio::spawn(async move {
        loop {
            clock.advance(Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    wait_ready(store.as_ref(), &shops).await;
    ticking.abort();

    let region = shop_controller::dev::dev_region_config();
    let group = shop_controller::dev::dev_instance_group();
    let ids = aws
        .list_deployment_ids(
            region.codedeploy_application.as_str(),
            group.codedeploy_deployment_group.as_str(),
            &[],
            None,
        )
        .await
        .expect("list");
    let mut deployments = Vec::new();
    for id in &ids.items {
        deployments.push(aws.get_deployment(id).await.expect("get"));
    }
    deployments.sort_by_key(|d| d.created_at);
    let order: Vec<&str> = deployments
        .iter()
        .map(|d| d.revision.key.split('/').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(order, shops, "deployed in the order asked, once each");
    a.stop().await;
    b.stop().await;
}

/// A replica that starts after another holds every shop gets about half of them: the first
/// hands back what it holds above its share as those claims come up for renewal, the second
/// takes them. Nothing is built or deployed again, every shop stays Ready, and the two never
/// hold one shop's claim at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_starts_late_gets_its_share_of_the_shops() {
    let (url, store, aws, _dir) = world().await;
    let first = replica(&url, &aws, "replica-a").await;
    let shops: Vec<String> = (0..12).map(|i| format!("late-{i}.es-hs.com")).collect();
    for shop in &shops {
        deploy(store.as_ref(), &aws, shop).await;
    }
    wait_ready(store.as_ref(), &shops).await;
    assert_eq!(
        first.claims(&shops).len(),
        shops.len(),
        "alone, it holds every shop"
    );
    let builds = aws.call_count("codebuild:StartBuild");
    let deployments = aws.call_count("codedeploy:CreateDeployment");

    let second = replica(&url, &aws, "replica-b").await;
    let census = Census {
        live_replicas: 2,
        shops: u32::try_from(shops.len()).expect("few shops"),
    };
    let share = FairShare::of(&census).expect("two replicas share");
    let fair = |claims: &BTreeMap<String, i64>| claims.len().abs_diff(share.share) <= share.slack;

    // Sample the replicas' claims in turn until both hold about their share, and for two lease
    // times after, checking every sample against the ones around it.
    let replicas = [&first, &second];
    let mut samples: Vec<BTreeMap<String, i64>> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut balanced_at = None;
    while balanced_at.is_none_or(|at: tokio::time::Instant| at.elapsed() < Duration::from_secs(6)) {
        samples.push(replicas[samples.len() % 2].claims(&shops));
        assert_never_held_by_both(&samples);
        let latest = &samples[samples.len().saturating_sub(2)..];
        let all_held = latest.iter().map(BTreeMap::len).sum::<usize>() == shops.len();
        if balanced_at.is_none() && latest.len() == 2 && all_held && latest.iter().all(fair) {
            balanced_at = Some(tokio::time::Instant::now());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "claims never shared within {share:?}: {:?}",
            latest.iter().map(BTreeMap::len).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Where they settled: still about half each.
    let settled = [first.claims(&shops), second.claims(&shops)];
    assert!(
        settled.iter().all(fair),
        "claims moved away from {share:?}: {settled:?}"
    );

    wait_ready(store.as_ref(), &shops).await;
    assert_eq!(
        aws.call_count("codebuild:StartBuild"),
        builds,
        "nothing built again"
    );
    assert_eq!(
        aws.call_count("codedeploy:CreateDeployment"),
        deployments,
        "nothing deployed again"
    );
    first.stop().await;
    second.stop().await;
}

/// Claims sampled from two replicas in turn. A shop one replica held with the same epoch in
/// two of its samples was its throughout (a renewal keeps the epoch; anything else moves it),
/// so the other replica's sample between them must not hold it too. A claim a replica
/// believes in never outlives its expiry in the database, so this is what leases promise.
fn assert_never_held_by_both(samples: &[BTreeMap<String, i64>]) {
    let [before, between, after] = match samples {
        [.., before, between, after] => [before, between, after],
        _ => return,
    };
    for (shop, epoch) in before {
        if after.get(shop) == Some(epoch) {
            assert!(
                !between.contains_key(shop),
                "{shop} held by both replicas at once: epoch {epoch} and {:?}",
                between.get(shop)
            );
        }
    }
}
