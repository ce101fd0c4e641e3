//! The fixture the convergence, crash and failure tests share: the simulated account and
//! controller settings, deploying through the API, waiting, and the checks of what AWS, the
//! store and the nginx directory hold, gathered in [`assert_invariant`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use reconcilers::cloud::{
    Builds, Deployment, DeploymentStatus, Deployments, Fleet, LoadBalancing, Owner, Target,
};
use reconcilers::sim::{
    ClockMode, LoadBalancerKind, ResourceType, SimConfig, SimulatedAws, TaggedResource,
};
use reconcilers::status::{ResourceKind, SyncState};
use shop_controller::controller::ControllerConfig;
use shop_controller::grpc::proto::{
    ConditionStatus, ConditionType, DeleteShopRequest, GetInstanceGroupRequest, GetShopRequest,
    InstanceGroup, PutInstanceGroupRequest, RestartShopRequest, Shop,
};
use shop_controller::nginx::{DEFAULT_MAIN_CONFIG_TEMPLATE, NginxDir};
use shop_controller::runtime::Backoff;
use shop_controller::store::Store;
use tokio::time::Instant;
use tonic::Code;

use crate::controller::{Running, synced};
use crate::support::{AdminClient, ShopClient, deploy_request};

/// The installation id of the controllers these tests start.
pub(crate) const INSTALLATION: &str = "e2e";
/// What the region's CodeBuild project and CodeDeploy application are called in `dev::seed`.
const PROJECT: &str = "shop-build";
const APPLICATION: &str = "shops";

/// How long a test waits for many shops: generous, for a loaded CI machine.
pub(crate) const LONG_WAIT: Duration = Duration::from_secs(240);

/// The simulated account of these tests: its clock runs 40 times faster.
pub(crate) fn scaled_sim() -> SimConfig {
    SimConfig {
        clock: ClockMode::Scaled(40.0),
        ..SimConfig::default()
    }
}

/// The controller's defaults with this resync, except that waits on a full quota start at 2 s
/// instead of 30 s (capped at 8 s): a quota that frees up is seen within a test, and a blocked
/// key still looks far less often than a resync would.
pub(crate) fn test_config(resync: Duration) -> ControllerConfig {
    let mut config = ControllerConfig::new(INSTALLATION, resync);
    config.loops.wait = Backoff {
        base: Duration::from_secs(2),
        cap: Duration::from_secs(8),
        jitter: 0.2,
    };
    config
}

/// `count` shop domains starting with `prefix`.
pub(crate) fn shop_names(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("{prefix}-{i:03}.es-hs.com"))
        .collect()
}

/// Uploads a new version of each shop's source and deploys it; returns the versions.
pub(crate) async fn deploy_new_versions(
    running: &Running,
    client: &mut ShopClient,
    shops: &[String],
) -> Vec<String> {
    let mut versions = Vec::new();
    for shop in shops {
        let zip = shop_controller::dev::sample_shop_zip();
        let version = running
            .aws
            .put_object("shop-sources", &format!("{shop}.zip"), zip);
        let deployed = client
            .deploy_shop(deploy_request(shop))
            .await
            .expect("deploy")
            .into_inner();
        assert_eq!(deployed.resolved_source_version, version);
        versions.push(version);
    }
    versions
}

pub(crate) async fn get_shop(client: &mut ShopClient, shop: &str) -> Result<Shop, tonic::Status> {
    let request = GetShopRequest {
        shop_domain: shop.to_owned(),
    };
    client
        .get_shop(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Polls `check` every 50 ms until it holds and returns how long that took; fails after
/// `within`.
pub(crate) async fn eventually(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The placement GetShop reports, with the port as a `u16`.
pub(crate) struct PortPlacement {
    pub(crate) instance_group: String,
    pub(crate) nlb_arn: String,
    pub(crate) port: u16,
}

pub(crate) async fn placement_of(client: &mut ShopClient, shop: &str) -> PortPlacement {
    let found = get_shop(client, shop).await.expect("get shop");
    let placement = found.status.and_then(|s| s.placement);
    let placement = placement.unwrap_or_else(|| panic!("{shop} is not placed"));
    PortPlacement {
        instance_group: placement.instance_group,
        nlb_arn: placement.nlb_arn,
        port: u16::try_from(placement.port).expect("a port"),
    }
}

pub(crate) fn ready_condition(shop: &Shop) -> Option<i32> {
    let conditions = shop.status.as_ref().map(|s| s.conditions.as_slice());
    conditions
        .unwrap_or_default()
        .iter()
        .find(|c| c.r#type == ConditionType::Ready as i32)
        .map(|c| c.status)
}

/// The shop is Ready for its current generation, nothing blocks it, and every resource
/// reports that generation.
pub(crate) fn assert_ready(shop: &Shop) {
    let name = shop.spec.as_ref().map_or("", |s| s.shop_domain.as_str());
    let generation = shop.spec.as_ref().map_or(0, |s| s.generation);
    assert_eq!(
        ready_condition(shop),
        Some(ConditionStatus::True as i32),
        "{name} is ready"
    );
    let status = shop.status.as_ref().expect("status");
    assert!(
        status.blocked_by.is_none(),
        "{name}: {:?}",
        status.blocked_by
    );
    for resource in &status.resources {
        assert_eq!(
            resource.observed_generation, generation,
            "{name}: {resource:?}"
        );
    }
}

pub(crate) fn proto_kind(kind: ResourceKind) -> i32 {
    use shop_controller::grpc::proto::ResourceKind as Proto;
    let proto = match kind {
        ResourceKind::Artifact => Proto::Artifact,
        ResourceKind::Deployment => Proto::Deployment,
        ResourceKind::NginxConfig => Proto::NginxConfig,
        ResourceKind::TargetGroup => Proto::TargetGroup,
        ResourceKind::Listener => Proto::Listener,
        ResourceKind::Certificate => Proto::Certificate,
        ResourceKind::Restart => Proto::Restart,
    };
    proto as i32
}

/// Every object of the installation, by the shop and resource its ownership tags name. Only
/// load balancing objects are expected: anything else fails the test.
pub(crate) async fn owned_objects(
    aws: &SimulatedAws,
) -> BTreeMap<(String, String), Vec<TaggedResource>> {
    let tagged = crate::support::shop_objects(aws, INSTALLATION);
    let (elb, other): (Vec<_>, Vec<_>) = tagged.into_iter().partition(|r| {
        matches!(
            r.kind,
            ResourceType::TargetGroup | ResourceType::Listener | ResourceType::LoadBalancer
        )
    });
    assert!(other.is_empty(), "unexpected owned objects: {other:?}");
    let arns: Vec<String> = elb.iter().map(|r| r.id.clone()).collect();
    let tags = aws.describe_tags(&arns).await.expect("describe tags");
    let mut owned: BTreeMap<(String, String), Vec<TaggedResource>> = BTreeMap::new();
    for (resource, (arn, tags)) in elb.into_iter().zip(tags) {
        assert_eq!(resource.id, arn);
        let owner = Owner::from_tags(&tags).unwrap_or_else(|| panic!("{arn}: {tags:?}"));
        owned
            .entry((owner.shop, owner.resource))
            .or_default()
            .push(resource);
    }
    owned
}

/// The one object of `kind` that `shop` owns.
pub(crate) async fn owned(aws: &SimulatedAws, shop: &str, kind: ResourceType) -> String {
    let resource = match kind {
        ResourceType::TargetGroup => "target_group",
        ResourceType::Listener => "listener",
        other => panic!("shops own no {other:?}"),
    };
    let owned = owned_objects(aws).await;
    match owned
        .get(&(shop.to_owned(), resource.to_owned()))
        .map(Vec::as_slice)
    {
        Some([one]) if one.kind == kind => one.id.clone(),
        found => panic!("{shop} should own one {kind:?}: {found:?}"),
    }
}

/// Every object tagged with the installation is wanted by exactly one of `shops`: each shop
/// owns exactly one target group and one listener, and nothing else is owned.
pub(crate) async fn assert_owned_exactly(aws: &SimulatedAws, shops: &[String], context: &str) {
    let owned = owned_objects(aws).await;
    let mut expected = BTreeMap::new();
    for shop in shops {
        expected.insert(
            (shop.clone(), "target_group".to_owned()),
            ResourceType::TargetGroup,
        );
        expected.insert(
            (shop.clone(), "listener".to_owned()),
            ResourceType::Listener,
        );
    }
    let unwanted: Vec<_> = owned
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        unwanted.is_empty(),
        "{context}: owned but unwanted: {unwanted:?}"
    );
    for (key, kind) in &expected {
        let found = owned.get(key).map(Vec::as_slice).unwrap_or_default();
        let kinds: Vec<ResourceType> = found.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, vec![*kind], "{context}: {key:?} owns {found:?}");
    }
}

/// Each shop's listener sits on its NLB and port and forwards to its target group, which has
/// the group's running instances as targets on that port.
pub(crate) async fn assert_wired(aws: &SimulatedAws, client: &mut ShopClient, shops: &[String]) {
    let mut listeners = BTreeMap::new();
    for shop in shops {
        let placement = placement_of(client, shop).await;
        if !listeners.contains_key(&placement.nlb_arn) {
            let found = aws.describe_listeners(&placement.nlb_arn).await;
            listeners.insert(placement.nlb_arn.clone(), found.expect("nlb"));
        }
        let target_group = owned(aws, shop, ResourceType::TargetGroup).await;
        let listener = owned(aws, shop, ResourceType::Listener).await;
        let on_nlb = listeners[&placement.nlb_arn]
            .iter()
            .find(|l| l.arn == listener);
        let on_nlb = on_nlb.unwrap_or_else(|| panic!("{shop}: listener not on its NLB"));
        assert_eq!(on_nlb.port, placement.port, "{shop}");
        assert_eq!(
            on_nlb.target_group_arn.as_ref(),
            Some(&target_group),
            "{shop}"
        );

        let instances = aws.running_instances(&placement.instance_group).await;
        let wanted: BTreeSet<Target> = instances
            .expect("group")
            .into_iter()
            .map(|i| Target {
                id: i.id,
                port: placement.port,
            })
            .collect();
        let health = aws.describe_target_health(&target_group).await;
        let registered: BTreeSet<Target> = health
            .expect("target group")
            .into_iter()
            .map(|h| h.target)
            .collect();
        assert_eq!(registered, wanted, "{shop}");
    }
}

/// The `.conf` and other files left in the nginx directory, sorted.
pub(crate) fn nginx_files(dir: &std::path::Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).expect("nginx dir");
    let mut names: Vec<String> = entries
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every build of the region's project, by source version.
pub(crate) async fn builds_by_version(aws: &SimulatedAws) -> BTreeMap<String, usize> {
    let mut ids = Vec::new();
    let mut token = None;
    loop {
        let page = aws
            .list_build_ids(PROJECT, token)
            .await
            .expect("list builds");
        ids.extend(page.items);
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let mut by_version = BTreeMap::new();
    for batch in ids.chunks(100) {
        for build in aws.batch_get_builds(batch).await.expect("get builds") {
            *by_version.entry(build.source_version).or_default() += 1;
        }
    }
    by_version
}

/// Every deployment of a CodeDeploy group, oldest first.
pub(crate) async fn deployments_of(aws: &SimulatedAws, group: &str) -> Vec<Deployment> {
    let mut ids = Vec::new();
    let mut token = None;
    loop {
        let page = aws
            .list_deployment_ids(APPLICATION, group, &[], token)
            .await;
        let page = page.expect("list deployments");
        ids.extend(page.items);
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let mut deployments = Vec::new();
    for id in ids {
        deployments.push(aws.get_deployment(&id).await.expect("deployment"));
    }
    deployments.sort_by_key(|d| d.created_at);
    deployments
}

pub(crate) async fn latest_deployment(aws: &SimulatedAws, group: &str) -> Deployment {
    let deployments = deployments_of(aws, group).await;
    deployments.last().cloned().expect("a deployment")
}

/// The deployment whose id a status message names.
pub(crate) async fn deployment_named_in(aws: &SimulatedAws, message: &str) -> Deployment {
    let id = message.split_whitespace().find(|w| w.starts_with("d-"));
    let id = id.unwrap_or_else(|| panic!("no deployment id in {message:?}"));
    aws.get_deployment(id).await.expect("deployment")
}

/// Where the controller puts the artifact of a shop's source version.
pub(crate) fn artifact_key(shop: &str, version: &str) -> String {
    format!("artifacts/{shop}/{version}.zip")
}

/// Whether GetShop no longer finds the shop (its teardown finished).
pub(crate) async fn is_gone(client: &mut ShopClient, shop: &str) -> bool {
    match get_shop(client, shop).await {
        Err(status) if status.code() == Code::NotFound => true,
        Err(status) => panic!("get {shop}: {status}"),
        Ok(_) => false,
    }
}

/// Deletes a shop through the API and waits until GetShop no longer finds it.
pub(crate) async fn delete_and_wait(client: &mut ShopClient, shop: &str) {
    let request = DeleteShopRequest {
        shop_domain: shop.to_owned(),
    };
    client.delete_shop(request).await.expect("delete");
    let what = format!("{shop} to be removed");
    eventually(&what, LONG_WAIT, async || is_gone(client, shop).await).await;
}

/// What the API accepted for one shop: the spec the store must still hold at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Written {
    generation: i64,
    restart_generation: i64,
    source_version: String,
}

/// Every spec write a test made through the API, by shop, so that the end state can be held
/// against it: no spec lost, no generation skipped back.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    written: BTreeMap<String, Written>,
    deleted: BTreeSet<String>,
    /// Every source version deployed, per shop (deleted ones too), in order.
    versions: BTreeMap<String, Vec<String>>,
}

impl Ledger {
    /// Uploads a new version of each shop's source and deploys it, retrying while the write
    /// path finds S3 throttled or failing (it resolves the version there); returns the versions.
    pub(crate) async fn deploy(
        &mut self,
        aws: &SimulatedAws,
        client: &mut ShopClient,
        shops: &[String],
    ) -> Vec<String> {
        let mut versions = Vec::new();
        for shop in shops {
            let zip = shop_controller::dev::sample_shop_zip();
            let version = aws.put_object("shop-sources", &format!("{shop}.zip"), zip);
            let deployed = retried(&format!("deploy {shop}"), async || {
                client.deploy_shop(deploy_request(shop)).await
            })
            .await;
            assert_eq!(deployed.resolved_source_version, version, "{shop}");
            let restart_generation = self.written.get(shop).map_or(0, |w| w.restart_generation);
            let written = Written {
                generation: deployed.generation,
                restart_generation,
                source_version: version.clone(),
            };
            self.record(shop, written);
            let deployed = self.versions.entry(shop.clone()).or_default();
            deployed.push(version.clone());
            versions.push(version);
        }
        versions
    }

    /// Asks for a restart of the shop on every instance of its group.
    pub(crate) async fn restart(&mut self, client: &mut ShopClient, shop: &str) {
        let request = RestartShopRequest {
            shop_domain: shop.to_owned(),
            region: shop_controller::dev::DEV_REGION.to_owned(),
        };
        let restarted = retried(&format!("restart {shop}"), async || {
            client.restart_shop(request.clone()).await
        })
        .await;
        let mut written = self.written.get(shop).cloned().expect("a deployed shop");
        written.generation = restarted.generation;
        written.restart_generation = restarted.restart_generation;
        self.record(shop, written);
    }

    /// Asks for the shop's deletion; it is expected gone at the end.
    pub(crate) async fn delete(&mut self, client: &mut ShopClient, shop: &str) {
        let request = DeleteShopRequest {
            shop_domain: shop.to_owned(),
        };
        retried(&format!("delete {shop}"), async || {
            client.delete_shop(request.clone()).await
        })
        .await;
        self.written.remove(shop);
        self.deleted.insert(shop.to_owned());
    }

    /// The shops that should exist at the end, sorted.
    pub(crate) fn remaining(&self) -> Vec<String> {
        self.written.keys().cloned().collect()
    }

    /// The shops whose deletion was asked for.
    pub(crate) fn deleted(&self) -> Vec<String> {
        self.deleted.iter().cloned().collect()
    }

    /// Every source version deployed, per shop, in order.
    pub(crate) fn versions(&self) -> &BTreeMap<String, Vec<String>> {
        &self.versions
    }

    /// A write never moves a generation back: a lower one means the store lost a write.
    fn record(&mut self, shop: &str, written: Written) {
        if let Some(before) = self.written.get(shop) {
            assert!(
                written.generation >= before.generation,
                "{shop}: generation {} after {}",
                written.generation,
                before.generation
            );
        }
        self.written.insert(shop.to_owned(), written);
    }
}

/// Sends a request until the server takes it, retrying while it answers `Unavailable` (what
/// the write path says when AWS throttles or fails the look-up it needs).
async fn retried<T>(
    what: &str,
    mut send: impl AsyncFnMut() -> Result<tonic::Response<T>, tonic::Status>,
) -> T {
    let started = Instant::now();
    loop {
        match send().await {
            Ok(response) => return response.into_inner(),
            Err(status) if status.code() == Code::Unavailable => {
                assert!(started.elapsed() < LONG_WAIT, "{what}: still {status}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{what}: {status}"),
        }
    }
}

/// What the end state is read from: the store, the simulated account and the nginx directory,
/// whether the controller ran in this process ([`Running::world`]) or in a child process.
pub(crate) struct World<'a> {
    pub(crate) store: &'a dyn Store,
    pub(crate) aws: &'a SimulatedAws,
    pub(crate) nginx_dir: &'a Path,
}

impl Running {
    pub(crate) fn world(&self) -> World<'_> {
        World {
            store: self.store.store.as_ref(),
            aws: &self.aws,
            nginx_dir: &self.nginx_dir,
        }
    }
}

/// The invariant after every failure scenario: every spec the ledger holds is in the store
/// with its generation, restart generation and source version; every resource of those shops
/// is synced for that generation and the shop is Ready; the deleted shops are gone; every
/// object tagged with the installation is wanted by exactly one shop and every wanted object
/// exists once; the nginx directory holds exactly the shops' files, each of which nginx loads.
pub(crate) async fn assert_invariant(
    world: &World<'_>,
    client: &mut ShopClient,
    ledger: &Ledger,
    context: &str,
) {
    let store = world.store;
    let remaining = ledger.remaining();
    for (shop, written) in &ledger.written {
        let view = store.get_shop(shop).await.expect("read");
        let view = view.unwrap_or_else(|| panic!("{context}: the spec of {shop} was lost"));
        let record = &view.record;
        let stored = Written {
            generation: record.generation,
            restart_generation: record.restart_generation,
            source_version: record.spec.source_version.to_string(),
        };
        assert_eq!(&stored, written, "{context}: the stored spec of {shop}");
        assert!(!record.is_deleting(), "{context}: {shop} is being deleted");
        for kind in ALWAYS_SYNCED {
            assert!(synced(&view, kind), "{context}: {shop} {kind}: {view:?}");
        }
        for resource in &view.resources {
            assert_eq!(
                (resource.sync, resource.observed_generation),
                (SyncState::Synced, record.generation),
                "{context}: {shop}: {resource:?}"
            );
        }
        assert!(view.ready, "{context}: {shop} is not ready");
        assert_ready(&get_shop(client, shop).await.expect("get shop"));
    }
    for shop in &ledger.deleted {
        assert!(
            is_gone(client, shop).await,
            "{context}: {shop} is still there"
        );
    }

    assert_owned_exactly(world.aws, &remaining, context).await;
    assert_wired(world.aws, client, &remaining).await;
    let mut wanted: Vec<String> = remaining.iter().map(|s| format!("{s}.conf")).collect();
    wanted.sort();
    let files: Vec<String> = nginx_files(world.nginx_dir)
        .into_iter()
        .filter(|name| !world.nginx_dir.join(name).is_dir())
        .collect();
    assert_eq!(files, wanted, "{context}: the nginx directory");
    assert_nginx_accepts(world.nginx_dir, context).await;
}

/// The kinds every live shop without a custom domain converges.
const ALWAYS_SYNCED: [ResourceKind; 5] = [
    ResourceKind::Artifact,
    ResourceKind::Deployment,
    ResourceKind::TargetGroup,
    ResourceKind::Listener,
    ResourceKind::NginxConfig,
];

/// The real `nginx -t` loads the directory's live files as the proxies would.
pub(crate) async fn assert_nginx_accepts(dir: &std::path::Path, context: &str) {
    let binary = ControllerConfig::new(INSTALLATION, Duration::from_secs(1)).nginx_binary;
    let nginx = NginxDir::new(dir, binary, DEFAULT_MAIN_CONFIG_TEMPLATE);
    let nginx = nginx.expect("nginx dir");
    if let Err(error) = nginx.check().await {
        panic!("{context}: nginx rejects the live directory: {error}");
    }
}

/// The instance groups [`add_second_group_and_nlb`] leaves: the seeded one and a second.
pub(crate) const TWO_GROUPS: [&str; 2] = ["shops-a", "shops-b"];

/// A second group (its own instances and NLB) and a second NLB for the first, so kills land
/// in placements across groups and NLBs too, and 100 shops fit under 50 listeners per NLB.
pub(crate) async fn add_second_group_and_nlb(aws: &SimulatedAws, admin: &mut AdminClient) {
    let request = GetInstanceGroupRequest {
        name: TWO_GROUPS[0].to_owned(),
    };
    let mut group_a = admin
        .get_instance_group(request)
        .await
        .expect("seeded group")
        .into_inner();
    group_a
        .nlb_arns
        .push(aws.add_load_balancer(LoadBalancerKind::Network, "shops-a-2"));
    for _ in 0..2 {
        aws.add_instance(TWO_GROUPS[1]);
    }
    let group_b = InstanceGroup {
        name: TWO_GROUPS[1].to_owned(),
        nlb_arns: vec![aws.add_load_balancer(LoadBalancerKind::Network, "shops-b")],
        codedeploy_deployment_group: TWO_GROUPS[1].to_owned(),
        updated_at: None,
        ..group_a.clone()
    };
    for group in [group_a, group_b] {
        let request = PutInstanceGroupRequest {
            instance_group: Some(group),
        };
        admin.put_instance_group(request).await.expect("put group");
    }
}

/// No deployment is repeated beyond what kills can justify. The deployment of a version is
/// found again by its revision while it runs; a kill between CreateDeployment and the status
/// write, with the deployment finished before the next run looks, deploys that version once
/// more. So a shop sees at most two deployments per version it was given (`versions`), and
/// its last one is of its latest version and succeeded.
pub(crate) async fn assert_deployments_justified(
    aws: &SimulatedAws,
    groups: &[&str],
    remaining: &[String],
    versions: &BTreeMap<String, Vec<String>>,
    context: &str,
) {
    let mut all = Vec::new();
    for group in groups {
        all.extend(deployments_of(aws, group).await);
    }
    all.sort_by_key(|d| d.created_at);
    let mut per_shop: BTreeMap<&str, Vec<&Deployment>> = BTreeMap::new();
    for deployment in &all {
        let shop = deployment.revision.key.split('/').nth(1);
        per_shop
            .entry(shop.unwrap_or_default())
            .or_default()
            .push(deployment);
    }
    let most = per_shop.values().map(Vec::len).max().unwrap_or(0);
    eprintln!(
        "deployments: {} in all, at most {most} for one shop",
        all.len()
    );
    for shop in remaining {
        let versions = &versions[shop];
        let mine = per_shop.get(shop.as_str()).map(Vec::as_slice);
        let mine = mine.unwrap_or_default();
        assert!(
            (1..=2 * versions.len()).contains(&mine.len()),
            "{context}: {shop}: {} deployments for {} versions",
            mine.len(),
            versions.len()
        );
        let last = mine.last().expect("deployed");
        let latest = versions.last().expect("a version");
        assert_eq!(last.revision.key, artifact_key(shop, latest), "{context}");
        assert_eq!(last.status, DeploymentStatus::Succeeded, "{context}");
    }
}

/// One placement per shop of the dev region, its port unique per NLB and per group.
pub(crate) async fn assert_placed_once(store: &dyn Store, remaining: &[String], context: &str) {
    let region = shop_controller::dev::DEV_REGION;
    let placements = store.region_placements(region).await.expect("list");
    assert_eq!(placements.len(), remaining.len(), "{context}");
    let per_nlb: BTreeSet<(&String, u16)> =
        placements.iter().map(|p| (&p.nlb_arn, p.port)).collect();
    let per_group: BTreeSet<(&String, u16)> = placements
        .iter()
        .map(|p| (&p.instance_group, p.port))
        .collect();
    assert_eq!(per_nlb.len(), placements.len(), "{context}: {placements:?}");
    assert_eq!(
        per_group.len(),
        placements.len(),
        "{context}: {placements:?}"
    );
}

/// Each version is built at most once: a build started before a kill is found again by its
/// source version (and CodeBuild's idempotency token) instead of being started anew. Only
/// versions in `versions` are built, and each remaining shop's latest one is; a version
/// replaced before its build started, or a shop deleted first, is never built.
pub(crate) async fn assert_built_once(
    aws: &SimulatedAws,
    remaining: &[String],
    versions: &BTreeMap<String, Vec<String>>,
    context: &str,
) {
    let built = builds_by_version(aws).await;
    let twice: Vec<_> = built.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{context}: built more than once: {twice:?}"
    );
    let deployed: BTreeSet<&String> = versions.values().flatten().collect();
    let unknown: Vec<_> = built.keys().filter(|v| !deployed.contains(v)).collect();
    assert!(unknown.is_empty(), "{context}: builds of {unknown:?}");
    for shop in remaining {
        let latest = versions[shop].last().expect("a version");
        assert!(built.contains_key(latest), "{context}: {shop} {latest}");
    }
    eprintln!(
        "builds: {} for {} versions deployed",
        built.len(),
        deployed.len()
    );
}
