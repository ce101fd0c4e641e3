//! Crash safety: the controller's task is killed where it stands (`JoinHandle::abort`, no
//! graceful stop) at random points while shops converge, get new versions and are deleted, and
//! is started again over the same store and simulated AWS, as a crashed and restarted process
//! would be. Afterwards every shop is Ready and AWS holds exactly what the shops want: one
//! owned target group and listener per shop and nothing else tagged with the installation, no
//! source version built twice, few deployments per shop, one placement and one nginx file per
//! shop, nothing left of the deleted ones.
//!
//! The kill schedule (the delay before each kill, which shops change when) comes from a small
//! seeded xorshift generator. The seed is printed when a run starts and named in its failure
//! messages; `SHOP_TEST_CRASH_SEED=<n>` runs another schedule (the interleaving of tasks still
//! varies from run to run, so a failure may need a few runs to repeat).
//!
//! `SHOP_TEST_LONG=1` adds the long variant: 200 kill points over 100 shops, some minutes.

use std::collections::BTreeMap;
use std::time::Duration;

use reconcilers::cloud::TAG_SHOP;
use reconcilers::sim::FaultProfile;
use shop_controller::controller::ControllerConfig;
use shop_controller::grpc::proto::DeleteShopRequest;

use crate::controller::{Running, converged, converged_within, spawn_controller, start_with};
use crate::convergence::fixture::{
    LONG_WAIT, TWO_GROUPS, add_second_group_and_nlb, assert_built_once,
    assert_deployments_justified, assert_owned_exactly, assert_placed_once, assert_ready,
    assert_wired, deploy_new_versions, eventually, get_shop, is_gone, nginx_files, scaled_sim,
    shop_names, test_config,
};
use crate::support::ShopClient;

const RESYNC: Duration = Duration::from_millis(500);
/// The schedule of a plain `cargo test`; `SHOP_TEST_CRASH_SEED` picks another.
const DEFAULT_SEED: u64 = 0x00c0_ffee_5eed_2026;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_controller_stops_at_once() {
    let config = test_config(RESYNC);
    let mut running = start_with(scaled_sim(), config.clone()).await;
    let mut client = running.server.shops().await;
    let shops = shop_names("abort", 3);
    deploy_new_versions(&running, &mut client, &shops).await;
    // Every call takes 0.3 s: whenever the kill comes, reconciles are in the middle of one.
    let slow = FaultProfile {
        latency: Duration::from_millis(300),
        ..FaultProfile::default()
    };
    running.aws.set_default_faults(slow);
    tokio::time::sleep(Duration::from_secs(1)).await;

    running.kill().await;
    let mut changes = running.store.store.subscribe();
    let before = total_calls(&running);
    // A window, so a fixed time: reconciles left running would finish their calls in it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(total_calls(&running), before, "AWS calls after the kill");
    assert!(changes.try_recv().is_err(), "store writes after the kill");

    running.aws.clear_faults();
    running.start_again(&config);
    converged(running.store.store.as_ref(), &shops).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teardown_killed_after_removing_the_nginx_file_still_reloads_the_proxies() {
    let config = test_config(RESYNC);
    let mut running = start_with(scaled_sim(), config.clone()).await;
    let mut client = running.server.shops().await;
    let shops = shop_names("unload", 1);
    let shop = &shops[0];
    deploy_new_versions(&running, &mut client, &shops).await;
    converged(running.store.store.as_ref(), &shops).await;

    // The reload first looks up the proxies: slowed down, the kill lands between the removal
    // of the file and the reload.
    let slow = FaultProfile {
        latency: Duration::from_secs(2),
        ..FaultProfile::default()
    };
    running.aws.set_faults("ec2:DescribeInstances", slow);
    let file = running.nginx_dir.join(format!("{shop}.conf"));
    let request = DeleteShopRequest {
        shop_domain: shop.clone(),
    };
    client.delete_shop(request).await.expect("delete");
    eventually("the nginx file to go", LONG_WAIT, async || !file.exists()).await;
    running.restart(&config).await;
    let reloads = running.aws.call_count("ssm:SendCommand");
    running.aws.clear_faults();

    eventually("the shop to be removed", LONG_WAIT, async || {
        is_gone(&mut client, shop).await
    })
    .await;
    assert!(
        running.aws.call_count("ssm:SendCommand") > reloads,
        "the proxies were never reloaded without the shop's file"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shops_converge_while_the_controller_is_killed_at_random_points() {
    let plan = Plan {
        shops: 12,
        kills: 100,
        max_delay: Duration::from_millis(400),
        new_versions: 4,
        deletes: 4,
    };
    survive_kills(plan, seed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_shops_converge_through_many_kills_when_asked() {
    if !crate::support::long() {
        eprintln!("skipped: set SHOP_TEST_LONG=1 to run the long crash test");
        return;
    }
    let plan = Plan {
        shops: 100,
        kills: 200,
        max_delay: Duration::from_millis(600),
        new_versions: 20,
        deletes: 15,
    };
    survive_kills(plan, seed()).await;
}

/// What a crash run does.
struct Plan {
    shops: usize,
    /// Kill points.
    kills: usize,
    /// The longest run between two kills; each delay is drawn below it.
    max_delay: Duration,
    /// Shops that get a second source version during the run.
    new_versions: usize,
    /// Shops deleted during the run, spread over it.
    deletes: usize,
}

/// Deploys `plan.shops` shops over two groups and three NLBs, kills and restarts the controller
/// `plan.kills` times after random delays (deploying new versions and deleting shops at some of
/// the kill points), lets it converge, and checks the end state.
async fn survive_kills(plan: Plan, seed: u64) {
    eprintln!("crash schedule seed {seed} (replay with SHOP_TEST_CRASH_SEED={seed})");
    let mut rng = XorShift::new(seed);
    let mut config = test_config(RESYNC);
    config.loops.jitter_seed = Some(seed);
    let mut running = start_with(scaled_sim(), config.clone()).await;
    add_second_group_and_nlb(&running.aws, &mut running.server.admin().await).await;
    let mut client = running.server.shops().await;
    let shops = shop_names("crash", plan.shops);
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (shop, version) in shops
        .iter()
        .zip(deploy_new_versions(&running, &mut client, &shops).await)
    {
        versions.insert(shop.clone(), vec![version]);
    }

    // New versions a quarter into the run; deletes spread over it, the last shops first.
    let deleted: Vec<String> = shops.iter().rev().take(plan.deletes).cloned().collect();
    let delete_at: BTreeMap<usize, &String> = deleted
        .iter()
        .enumerate()
        .map(|(i, shop)| ((i + 1) * plan.kills / (plan.deletes + 1), shop))
        .collect();
    let started = tokio::time::Instant::now();
    for kill in 0..plan.kills {
        if kill == plan.kills / 4 {
            let changed = &shops[..plan.new_versions];
            let new = deploy_new_versions(&running, &mut client, changed).await;
            for (shop, version) in changed.iter().zip(new) {
                versions.entry(shop.clone()).or_default().push(version);
            }
        }
        if let Some(shop) = delete_at.get(&kill) {
            let request = DeleteShopRequest {
                shop_domain: (*shop).clone(),
            };
            client.delete_shop(request).await.expect("delete");
        }
        let delay = plan.max_delay.mul_f64(rng.unit());
        tokio::time::sleep(delay).await;
        running.restart(&config).await;
    }
    eprintln!("{} kills in {:?}", plan.kills, started.elapsed());

    let remaining: Vec<String> = shops
        .iter()
        .filter(|s| !deleted.contains(s))
        .cloned()
        .collect();
    converged_within(running.store.store.as_ref(), &remaining, LONG_WAIT).await;
    eventually("the deleted shops to be removed", LONG_WAIT, async || {
        for shop in &deleted {
            if !is_gone(&mut client, shop).await {
                return false;
            }
        }
        true
    })
    .await;
    eprintln!("converged {:?} after the start", started.elapsed());

    let end = EndState {
        seed,
        remaining: &remaining,
        deleted: &deleted,
        versions: &versions,
    };
    end.check(&running, &mut client).await;
    running.stop().await;
}

/// What a crash run ended with, and the checks on it.
struct EndState<'a> {
    seed: u64,
    remaining: &'a [String],
    deleted: &'a [String],
    /// Every source version deployed, per shop, in order.
    versions: &'a BTreeMap<String, Vec<String>>,
}

impl EndState<'_> {
    async fn check(&self, running: &Running, client: &mut ShopClient) {
        let seed = self.seed;
        for shop in self.remaining {
            let found = get_shop(client, shop).await.expect("get shop");
            assert_ready(&found);
            let spec = found.spec.expect("spec");
            let latest = self.versions[shop].last().expect("a version");
            assert_eq!(&spec.source_version, latest, "seed {seed}: {shop}");
        }
        let context = format!("seed {seed}");
        assert_owned_exactly(&running.aws, self.remaining, &context).await;
        for shop in self.deleted {
            let left = running.aws.resources_tagged(TAG_SHOP, shop);
            assert!(left.is_empty(), "seed {seed}: {shop} left {left:?}");
        }
        assert_wired(&running.aws, client, self.remaining).await;
        self.check_builds(running).await;
        self.check_deployments(running).await;
        self.check_placements_and_files(running).await;
    }

    async fn check_builds(&self, running: &Running) {
        let context = format!("seed {}", self.seed);
        let (aws, remaining) = (&running.aws, self.remaining);
        assert_built_once(aws, remaining, self.versions, &context).await;
    }

    async fn check_deployments(&self, running: &Running) {
        let context = format!("seed {}", self.seed);
        let (aws, remaining) = (&running.aws, self.remaining);
        assert_deployments_justified(aws, &TWO_GROUPS, remaining, self.versions, &context).await;
    }

    async fn check_placements_and_files(&self, running: &Running) {
        let context = format!("seed {}", self.seed);
        let store = running.store.store.as_ref();
        assert_placed_once(store, self.remaining, &context).await;
        let mut wanted: Vec<String> = self.remaining.iter().map(|s| format!("{s}.conf")).collect();
        wanted.sort();
        assert_eq!(nginx_files(&running.nginx_dir), wanted, "{context}");
    }
}

impl Running {
    /// Kills the controller's task and starts another over the same store and account, as a
    /// crashed and restarted process would.
    async fn restart(&mut self, config: &ControllerConfig) {
        self.kill().await;
        self.start_again(config);
    }

    /// Kills the controller's task where it stands; a panic in it fails the test.
    async fn kill(&mut self) {
        self.loops.abort();
        if let Err(error) = (&mut self.loops).await {
            assert!(error.is_cancelled(), "the controller failed: {error}");
        }
    }

    /// Starts the controller again after [`Running::kill`].
    fn start_again(&mut self, config: &ControllerConfig) {
        let (stop, loops) = spawn_controller(&self.store, &self.aws, config.clone());
        self.stop = stop;
        self.loops = loops;
    }
}

fn total_calls(running: &Running) -> u64 {
    let calls = running.aws.calls().snapshot();
    calls.into_iter().map(|(_, count)| count).sum()
}

fn seed() -> u64 {
    seed_from("SHOP_TEST_CRASH_SEED", DEFAULT_SEED)
}

/// The seed the environment variable `variable` names, or `default`.
pub(crate) fn seed_from(variable: &str, default: u64) -> u64 {
    let chosen = std::env::var(variable).ok();
    chosen.map_or(default, |s| {
        s.parse()
            .unwrap_or_else(|_| panic!("{variable} is a number"))
    })
}

/// xorshift64: a reproducible kill schedule without a dependency.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        // Zero is the one state xorshift never leaves.
        Self(seed.max(1))
    }

    /// A uniform value in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn the_kill_schedule_replays_from_its_seed() {
    let draw = |seed| {
        let mut rng = XorShift::new(seed);
        (0..100).map(|_| rng.unit()).collect::<Vec<f64>>()
    };
    let delays = draw(DEFAULT_SEED);
    assert_eq!(delays, draw(DEFAULT_SEED));
    assert_ne!(delays, draw(DEFAULT_SEED + 1));
    assert!(delays.iter().all(|d| (0.0..1.0).contains(d)));
    assert!(delays.iter().any(|d| *d < 0.1) && delays.iter().any(|d| *d > 0.9));
}
