//! The whole controller under load: the real `Controller` over a SQLite store (a temp file) and
//! the simulated AWS on a fast clock. Prints three figures of issue #4, each with what it is
//! compared against in the same run:
//!
//! 1. AWS calls per shop of one full resync of converged shops, by operation;
//! 2. time from `deploy_shop` to the new shop's first reconcile while a resync of 5,000 shops
//!    is under way, against the same probe on an idle controller;
//! 3. resident memory per converged shop;
//! 4. certificates: how long 100 custom domains take to be served under a Let's Encrypt-like
//!    order budget (a simulated CA validating HTTP-01 through simulated DNS), against the
//!    floor the budget imposes, and the orders it took;
//! 5. convergence of `BENCH_SHOPS` new shops against AWS's token buckets (`-- convergence`,
//!    on a simulated clock of `BENCH_CLOCK`, default x1: real time), against the floor the buckets and
//!    the lifecycles impose, with the build and deployment economy;
//! 6. the write path: `DeployShop` through gRPC on SQLite and PostgreSQL
//!    (`BENCH_POSTGRES_URL`) against plain single-row inserts, and latency at a fixed rate
//!    (`-- write-path`).
//!
//! `cargo bench --bench controller` (figures 1 to 4: 1,000 shops, a 5,000-shop backlog), or
//! `cargo bench --bench controller -- --quick` (100 and 500). `BENCH_SHOPS`, `BENCH_BACKLOG`,
//! `BENCH_PROBES` override the sizes; `-- certificates`, `-- convergence` and `-- write-path`
//! run one figure alone. Prints figures; asserts nothing about timing.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

#[path = "controller/write_path.rs"]
mod write_path;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reconcilers::certificate::{BudgetLimit, CertificateState};
use reconcilers::cloud::CallKey;
use reconcilers::cloud::DnsAnswers;
use reconcilers::cloud::limits::default_limit;
use reconcilers::config::InstanceGroup;
use reconcilers::sim::{ClockMode, LoadBalancerKind, Quotas, SimConfig, SimulatedAws, Timings};
use reconcilers::sim::{SimAcme, SimAcmeConfig, SimDomains};
use reconcilers::spec::{BucketName, RegionName, ShopSpec, SourceVersion};
use reconcilers::status::SyncState;
use reconcilers::{Hostname, placement};
use shop_controller::controller::{CertificateSettings, Controller, ControllerConfig};
use shop_controller::dev::{self, DEV_REGION, DEV_SOURCE_BUCKET};
use shop_controller::store::{Change, ShopQuery, ShopView, SqliteStore, Store, now_millis};
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

/// Simulated seconds per real second: a 60 s build takes 60 ms, a 4 s proxy reload 4 ms.
const CLOCK_SCALE: f64 = 1000.0;
/// Shops per instance group. Each group has its own NLB (at most 50 listeners) and its own
/// CodeDeploy group, which runs one deployment at a time: smaller groups converge faster.
const SHOPS_PER_GROUP: usize = 25;
/// While converging: a short resync, because build and deployment polls are
/// `min(10 s, resync)`, and more reconciles at once than the production default of 4.
const CONVERGE_RESYNC: Duration = Duration::from_secs(1);
const CONVERGE_CONCURRENCY: usize = 32;
/// Long enough that no periodic resync happens while a figure is measured.
const NO_RESYNC: Duration = Duration::from_secs(3600);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(900);
/// A resync is over when no AWS call was made for this long.
const QUIET: Duration = Duration::from_secs(3);

struct Sizes {
    shops: usize,
    backlog: usize,
    probes: usize,
    /// The simulated clock of figure 5.
    clock: f64,
}

impl Sizes {
    fn from_env() -> Self {
        let quick = std::env::args().any(|arg| arg == "--quick");
        let env = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .map(|value| value.parse().expect("a size is a whole number"))
                .unwrap_or(default)
        };
        let (shops, backlog) = if quick { (100, 500) } else { (1_000, 5_000) };
        Self {
            shops: env("BENCH_SHOPS", shops),
            backlog: env("BENCH_BACKLOG", backlog),
            probes: env("BENCH_PROBES", 20),
            clock: std::env::var("BENCH_CLOCK")
                .ok()
                .map(|value| value.parse().expect("a clock scale is a number"))
                .unwrap_or(1.0),
        }
    }
}

#[tokio::main]
async fn main() {
    // The controller's own events, on stderr, when RUST_LOG asks for them.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let sizes = Sizes::from_env();
    if std::env::args().any(|a| a == "certificates") {
        certificates_under_budget(100, 25, Duration::from_secs(2)).await;
        return;
    }
    if std::env::args().any(|a| a == "write-path") {
        write_path::write_path().await;
        return;
    }
    if std::env::args().any(|a| a == "convergence") {
        convergence_under_buckets(sizes.shops, sizes.clock).await;
        return;
    }
    println!(
        "controller benchmark: {} shops, resync backlog of {}, {} probes, sim clock x{CLOCK_SCALE}",
        sizes.shops, sizes.backlog, sizes.probes
    );
    steady_state_and_memory(sizes.shops).await;
    first_reconcile_during_resync(sizes.backlog, sizes.probes).await;
    certificates_under_budget(100, 25, Duration::from_secs(2)).await;
}

/// Figure 5: `shops` new shops at once against AWS's token buckets (on the simulated clock,
/// `scale` times real time), with the production loop configuration (resync 5 min, 4
/// reconciles at once per kind). Its polls (a deployment every 10 s) are real time, so only
/// a clock of x1 keeps them in proportion with AWS's lifecycles: the default is x1, and the
/// run takes about as long as AWS would. The floor is the larger of what the buckets allow for the calls
/// that succeeded (per operation: calls beyond the burst at the refill rate) and what the
/// lifecycles allow (a build, then each CodeDeploy group's deployments one after another).
/// Also the build and deployment economy: builds per shop version, deployments per group and
/// CodeDeploy's "group busy" refusals.
async fn convergence_under_buckets(shops: usize, scale: f64) {
    let world = World::with_clock(shops, scale, true).await;
    for index in 0..shops {
        world.deploy(&shop_name("new", index)).await;
    }
    let sim_began = world.aws.now_millis();
    let running = world.start(Duration::from_secs(300), None);
    let (took, _) = world.converged_within(Duration::from_secs(7200)).await;
    let sim_took = Duration::from_millis(
        u64::try_from(world.aws.now_millis() - sim_began).expect("the clock moves forward"),
    );
    let runs = running.controller.loop_stats();
    running.stop().await;

    let calls = world.aws.calls().snapshot();
    let mut succeeded: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    for ((service, operation, outcome), count) in &calls {
        let name = format!("{service}:{operation}");
        let into = if outcome == "ok" {
            &mut succeeded
        } else {
            &mut refused
        };
        *into.entry(format!("{name} {outcome}")).or_insert(0) += count;
    }
    let ok = |operation: &str| {
        succeeded
            .get(&format!("{operation} ok"))
            .copied()
            .unwrap_or(0)
    };
    let (bucket_floor, bottleneck) = succeeded
        .iter()
        .map(|(key, count)| {
            let operation = key.trim_end_matches(" ok");
            let limit = default_limit(operation);
            let beyond_burst = count.saturating_sub(u64::from(limit.burst)) as f64;
            (beyond_burst / limit.per_second, operation.to_owned())
        })
        .fold((0.0, String::new()), |best, next| {
            if next.0 > best.0 { next } else { best }
        });
    let timings = Timings::default();
    let per_group = u32::try_from(SHOPS_PER_GROUP.min(shops)).expect("small");
    // Builds run at most `concurrent_builds` at once (60 in AWS), so the last wave of builds
    // ends before a last deployment can start; and a group deploys its shops one after
    // another, the first after one build.
    let waves = u32::try_from(shops.div_ceil(Quotas::default().concurrent_builds)).expect("small");
    let deployment = timings.deployment_start + timings.deployment;
    let lifecycle_floor = (timings.build * waves + deployment)
        .max(timings.build + deployment * per_group)
        .as_secs_f64();
    let floor = bucket_floor.max(lifecycle_floor);
    let groups = shops.div_ceil(SHOPS_PER_GROUP);
    let throttled: u64 = refused
        .iter()
        .filter(|(key, _)| key.ends_with(" throttled"))
        .map(|(_, count)| count)
        .sum();
    let waits: u64 = runs.iter().map(|(_, stats)| stats.runs.wait).sum();
    let retries: u64 = runs.iter().map(|(_, stats)| stats.runs.retry).sum();

    println!(
        "\n5. convergence of {shops} new shops against AWS's token buckets (sim clock x{scale})"
    );
    println!(
        "   converged in {:.1} s real = {:.0} s simulated; floor {:.0} s simulated \
         (buckets {:.0} s, bottleneck {bottleneck}; lifecycles {:.0} s); ratio {:.2}",
        took.as_secs_f64(),
        sim_took.as_secs_f64(),
        floor,
        bucket_floor,
        lifecycle_floor,
        sim_took.as_secs_f64() / floor
    );
    println!(
        "   throttled calls {throttled} (calls wait for their token, as the SDK adapters make \
         them); reconciles that waited {waits}, retried {retries}"
    );
    println!("   refused calls by operation and outcome: {refused:?}");
    println!(
        "   builds started {} for {shops} shop versions ({:.2} per version)",
        ok("codebuild:StartBuild"),
        ok("codebuild:StartBuild") as f64 / shops as f64
    );
    println!(
        "   deployments created {} over {groups} groups ({:.2} per shop); \
         CodeDeploy group-busy refusals {}",
        ok("codedeploy:CreateDeployment"),
        ok("codedeploy:CreateDeployment") as f64 / shops as f64,
        refused
            .get("codedeploy:CreateDeployment quota_exceeded")
            .copied()
            .unwrap_or(0)
    );
}

/// Figure 4: `domains` shops with custom domains, all deployed at once, with the CA's
/// new-order budget at `per_window` orders per `window` (Let's Encrypt's 300 per 3 h, scaled
/// down). The floor is the budget's: the last window's orders cannot start before
/// `(ceil(domains / per_window) - 1) * window`.
async fn certificates_under_budget(domains: usize, per_window: u32, window: Duration) {
    let world = World::new(domains).await;
    let region_ips = dev::dev_region_config().global_accelerator_ips;
    let challenges = Arc::new(dev::StoreChallenges(world.store.clone()));
    let dns = Arc::new(SimDomains::new(region_ips, challenges));
    let custom = |i: usize| format!("www.merchant-{i:04}.example.com");
    for i in 0..domains {
        let answers = DnsAnswers {
            a: vec![std::net::Ipv4Addr::new(192, 0, 2, 10)],
            ..DnsAnswers::default()
        };
        dns.set_records(&Hostname::parse(&custom(i)).expect("valid"), answers);
    }
    let ca = Arc::new(SimAcme::new(dns.clone(), SimAcmeConfig::default()));
    let mut settings = CertificateSettings::new(ca.clone(), dns);
    settings.budgets.new_orders = BudgetLimit {
        limit: per_window,
        window,
    };
    settings.slots_per_listener = domains + 1;
    settings.poll = Duration::from_millis(100);
    let running = world.start_with(
        CONVERGE_RESYNC,
        Some(CONVERGE_CONCURRENCY),
        Some(settings.clone()),
    );
    let began = Instant::now();
    for i in 0..domains {
        world
            .deploy_with(&shop_name("cert", i), Some(&custom(i)))
            .await;
    }
    let took = loop {
        let rows = world.store.list_certificates().await.expect("certificates");
        let ready = rows
            .iter()
            .filter(|r| r.state == CertificateState::Ready)
            .count();
        if ready == domains {
            break began.elapsed();
        }
        assert!(
            began.elapsed() < CONVERGE_TIMEOUT,
            "{ready} of {domains} certificates served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.stop().await;
    let served_calls = world.aws.calls().snapshot();
    // A restart seeds every key once: the calls until AWS is quiet are one full resync.
    let resync = world.start_with(NO_RESYNC, None, Some(settings));
    world.quiet().await;
    resync.stop().await;
    let resync_calls = difference(&served_calls, &world.aws.calls().snapshot());
    let windows = domains.div_ceil(usize::try_from(per_window).unwrap_or(1));
    let floor = window * u32::try_from(windows.saturating_sub(1)).unwrap_or(0);
    let calls = |operation: &str| world.aws.call_count(operation);
    println!(
        "\n4. certificates for {domains} custom domains, new-order budget {per_window} per {window:?}"
    );
    println!(
        "   all served in {:.2} s; floor set by the budget {:.2} s; ratio {:.2}",
        took.as_secs_f64(),
        floor.as_secs_f64(),
        took.as_secs_f64() / floor.as_secs_f64().max(f64::EPSILON)
    );
    println!(
        "   orders placed {} for {domains} domains; validations failed {}; certificates issued {}",
        ca.orders_placed(),
        ca.validations_failed(),
        ca.certificates_issued()
    );
    println!(
        "   acm:ImportCertificate {}, elasticloadbalancing:AddListenerCertificates {}",
        calls("acm:ImportCertificate"),
        calls("elasticloadbalancing:AddListenerCertificates")
    );
    println!("   one full resync of the served certificates (calls, per custom domain):");
    let certificate_calls = resync_calls
        .iter()
        .filter(|(op, _)| op.starts_with("acm:") || op.contains("ListenerCertificates"));
    let mut mutations = 0;
    for (operation, count) in certificate_calls {
        println!(
            "   | {operation} | {count} | {:.2} |",
            *count as f64 / domains as f64
        );
        if !is_read(operation) {
            mutations += count;
        }
    }
    println!("   certificate mutations in the resync: {mutations}");
}

/// A SQLite store and a simulated account seeded like `shop-controller dev`, with room for
/// `shops` shops.
struct World {
    store: Arc<dyn Store>,
    aws: Arc<SimulatedAws>,
    zip: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new(shops: usize) -> Self {
        Self::with_clock(shops, CLOCK_SCALE, false).await
    }

    /// `scale` simulated seconds pass per real second; `buckets` turns on AWS's per-operation
    /// token buckets (which run on the simulated clock).
    async fn with_clock(shops: usize, scale: f64, buckets: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}", dir.path().join("shops.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.expect("open sqlite"));
        let config = SimConfig {
            clock: ClockMode::Scaled(scale),
            rate_limits: buckets,
            // A production controller's SDK adapters pace their calls with the same buckets.
            client_pacing: buckets,
            // AWS's default of 3,000 target groups per region is a quota 5,000 shops must
            // have raised; the sim gets the raise.
            quotas: Quotas {
                target_groups: 100_000,
                // Figure 4 puts every certificate on the one HTTPS listener: slots are not
                // what it measures.
                certificates_per_listener: 10_000,
                ..Quotas::default()
            },
            ..SimConfig::default()
        };
        let aws = Arc::new(SimulatedAws::with_config(config));
        let nginx_dir = dir.path().join("nginx");
        std::fs::create_dir_all(&nginx_dir).expect("nginx dir");
        dev::seed(store.as_ref(), &aws, &nginx_dir)
            .await
            .expect("seed");
        // One spare group for the probes of figure 2.
        for index in 0..shops.div_ceil(SHOPS_PER_GROUP) + 1 {
            add_group(store.as_ref(), &aws, index).await;
        }
        Self {
            store,
            aws,
            zip: dev::sample_shop_zip(),
            _dir: dir,
        }
    }

    /// Records the spec of a new shop, its source zip uploaded first (as the write path
    /// resolves "latest" to that exact version).
    async fn deploy(&self, shop: &str) {
        self.deploy_with(shop, None).await;
    }

    async fn deploy_with(&self, shop: &str, custom_domain: Option<&str>) {
        let version =
            self.aws
                .put_object(DEV_SOURCE_BUCKET, &format!("{shop}.zip"), self.zip.clone());
        let spec = ShopSpec {
            shop_domain: Hostname::parse(shop).expect("valid shop domain"),
            region: RegionName::parse(DEV_REGION).expect("valid region"),
            source_bucket: BucketName::parse(DEV_SOURCE_BUCKET).expect("valid bucket"),
            source_version: SourceVersion::parse(&version).expect("valid version"),
            custom_domain: custom_domain.map(|d| Hostname::parse(d).expect("valid domain")),
        };
        self.store
            .deploy_shop(&spec, now_millis())
            .await
            .expect("deploy shop");
    }

    fn start(&self, resync: Duration, concurrency: Option<usize>) -> Running {
        self.start_with(resync, concurrency, None)
    }

    fn start_with(
        &self,
        resync: Duration,
        concurrency: Option<usize>,
        certificates: Option<CertificateSettings>,
    ) -> Running {
        let mut config = ControllerConfig::new("bench", resync);
        if let Some(concurrency) = concurrency {
            config.loops.concurrency = concurrency;
        }
        let mut controller =
            Controller::new(self.store.clone(), Arc::new(self.aws.clone()), config);
        if let Some(settings) = certificates {
            controller = controller.with_certificates(settings);
        }
        let controller = Arc::new(controller);
        let (stop, stopped) = oneshot::channel::<()>();
        let loops = tokio::spawn(controller.clone().run(async move {
            let _ = stopped.await;
        }));
        Running {
            stop,
            loops,
            controller,
        }
    }

    /// Waits until every needed kind of every shop is synced for its generation; returns how
    /// long that took and how many of those shops still had Ready false.
    async fn converged(&self) -> (Duration, usize) {
        self.converged_within(CONVERGE_TIMEOUT).await
    }

    /// Like [`World::converged`], giving up after `timeout`.
    async fn converged_within(&self, timeout: Duration) -> (Duration, usize) {
        let began = Instant::now();
        let mut last_report = began;
        let query = ShopQuery {
            only_not_ready: true,
            limit: 1000,
            ..ShopQuery::default()
        };
        loop {
            let mut waiting = self.store.list_shops(&query).await.expect("list shops");
            // Converged means every needed kind is synced; a shop that is but still reads
            // Ready false is counted apart (`stale_ready`), so the Ready fix of BENCHMARKS.md
            // stays measured.
            let stale_ready = waiting.shops.iter().filter(|v| all_synced(v)).count();
            waiting.shops.retain(|v| !all_synced(v));
            if waiting.shops.is_empty() && waiting.next_after.is_none() {
                return (began.elapsed(), stale_ready);
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                println!(
                    "  {:.0} s: {}{} shops not ready; blockers: {:?}",
                    began.elapsed().as_secs_f64(),
                    waiting.shops.len(),
                    if waiting.next_after.is_some() {
                        "+"
                    } else {
                        ""
                    },
                    blockers(&waiting.shops)
                );
            }
            assert!(
                began.elapsed() < timeout,
                "shops did not converge: {} waiting, first {:?}",
                waiting.shops.len(),
                waiting.shops[0].resources
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until no AWS call was made for [`QUIET`] after at least one was.
    async fn quiet(&self) {
        let total = || -> u64 { self.aws.calls().snapshot().iter().map(|(_, n)| n).sum() };
        let before = total();
        let mut last = before;
        let mut last_change = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = total();
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last > before && last_change.elapsed() >= QUIET {
                return;
            }
        }
    }
}

fn all_synced(view: &ShopView) -> bool {
    view.record.needed_kinds().iter().all(|kind| {
        view.resources.iter().any(|r| {
            r.kind == *kind
                && r.sync == SyncState::Synced
                && r.observed_generation >= view.record.generation
        })
    })
}

/// How many shops wait on each (kind, reason), for progress lines.
fn blockers(shops: &[ShopView]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for view in shops {
        for status in view
            .resources
            .iter()
            .filter(|r| r.sync != SyncState::Synced)
        {
            *counts
                .entry(format!("{}/{}", status.kind.as_str(), status.reason))
                .or_insert(0) += 1;
        }
    }
    counts
}

/// Group `index` gets two running instances, an NLB, its own ports and CodeDeploy group.
async fn add_group(store: &dyn Store, aws: &SimulatedAws, index: usize) {
    let name = format!("shops-{index}");
    aws.add_instance(&name);
    aws.add_instance(&name);
    let nlb = aws.add_load_balancer(LoadBalancerKind::Network, &name);
    let capacity = u32::try_from(SHOPS_PER_GROUP).expect("small");
    const { assert!(SHOPS_PER_GROUP <= placement::LISTENERS_PER_NLB) };
    let group = InstanceGroup {
        name: name.clone(),
        nlb_arns: vec![nlb],
        capacity,
        codedeploy_deployment_group: name,
        ..dev::dev_instance_group()
    };
    store
        .put_instance_group(&group, now_millis())
        .await
        .expect("put group");
}

struct Running {
    stop: oneshot::Sender<()>,
    loops: tokio::task::JoinHandle<()>,
    controller: Arc<Controller>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.loops.await.expect("controller stops");
    }
}

fn shop_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index:05}.es-hs.com")
}

/// Resident set size of this process, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmRSS line");
    kib * 1024
}

/// Figures 1 and 3: converge `shops` shops, then restart the controller (which seeds every
/// key of every shop as a due resync: exactly one full resync) and count its AWS calls.
async fn steady_state_and_memory(shops: usize) {
    let rss_empty = rss_bytes();
    let world = World::new(shops).await;
    let names: Vec<String> = (0..shops).map(|i| shop_name("shop", i)).collect();
    for shop in &names {
        world.deploy(shop).await;
    }
    let rss_specs = rss_bytes();

    let running = world.start(CONVERGE_RESYNC, Some(CONVERGE_CONCURRENCY));
    let (took, stale_ready) = world.converged().await;
    let rss_converged = rss_bytes();
    running.stop().await;
    println!();
    println!(
        "converged {shops} shops in {:.1} s (resync {} s, concurrency {CONVERGE_CONCURRENCY})",
        took.as_secs_f64(),
        CONVERGE_RESYNC.as_secs()
    );
    println!("  converged shops whose Ready flag stayed false: {stale_ready}");

    let before = world.aws.calls().snapshot();
    let running = world.start(NO_RESYNC, None);
    let began = Instant::now();
    world.quiet().await;
    let took = began.elapsed().saturating_sub(QUIET);
    running.stop().await;
    let calls = difference(&before, &world.aws.calls().snapshot());
    print_resync(shops, took, &calls);

    let per_shop = |bytes: u64| bytes as f64 / shops as f64 / 1024.0;
    println!();
    println!("memory (VmRSS of the bench process: controller, SQLite and the simulated AWS)");
    println!("| stage | RSS | per shop |");
    println!("|---|---|---|");
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!("| empty process | {:.1} MiB | |", mib(rss_empty));
    println!(
        "| {shops} specs stored, zips in the sim | {:.1} MiB | {:.1} KiB |",
        mib(rss_specs),
        per_shop(rss_specs.saturating_sub(rss_empty))
    );
    println!(
        "| {shops} shops converged, controller running | {:.1} MiB | {:.1} KiB |",
        mib(rss_converged),
        per_shop(rss_converged.saturating_sub(rss_empty))
    );
    println!(
        "| of which converging added | | {:.1} KiB |",
        per_shop(rss_converged.saturating_sub(rss_specs))
    );
}

/// Calls per operation made between two snapshots, outcomes summed.
fn difference(before: &[(CallKey, u64)], after: &[(CallKey, u64)]) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for ((service, operation, _), count) in after {
        *calls.entry(format!("{service}:{operation}")).or_insert(0) += count;
    }
    for ((service, operation, _), count) in before {
        if let Some(total) = calls.get_mut(&format!("{service}:{operation}")) {
            *total -= count;
        }
    }
    calls.retain(|_, count| *count > 0);
    calls
}

fn is_read(operation: &str) -> bool {
    let name = operation
        .split_once(':')
        .map_or(operation, |(_, name)| name);
    ["Describe", "List", "Get", "Head"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

fn print_resync(shops: usize, took: Duration, calls: &BTreeMap<String, u64>) {
    println!();
    println!(
        "one full resync of {shops} converged shops (controller restart: every key seeded once), \
         {:.1} s",
        took.as_secs_f64()
    );
    println!("| operation | calls | per shop |");
    println!("|---|---|---|");
    let per_shop = |count: u64| count as f64 / shops as f64;
    let mut reads = 0;
    let mut writes = 0;
    for (operation, count) in calls {
        println!("| {operation} | {count} | {:.2} |", per_shop(*count));
        if is_read(operation) {
            reads += count;
        } else {
            writes += count;
        }
    }
    println!(
        "| all reads | {reads} | {:.2} (target of #7: <= 0.1) |",
        per_shop(reads)
    );
    println!(
        "| all mutating calls | {writes} | {:.2} (target: 0) |",
        per_shop(writes)
    );
}

/// Figure 2: the time from `deploy_shop` returning to the new shop's first status, first on
/// an idle controller, then while a restarted controller works through `backlog` shops.
async fn first_reconcile_during_resync(backlog: usize, probes: usize) {
    let world = World::new(backlog + 2 * probes).await;

    let running = world.start(NO_RESYNC, None);
    let mut idle = Vec::new();
    for probe in 0..probes {
        idle.push(probe_once(&world, &shop_name("idle", probe)).await);
    }
    running.stop().await;

    let began = Instant::now();
    for index in 0..backlog {
        world.deploy(&shop_name("backlog", index)).await;
    }
    println!();
    println!(
        "stored {backlog} backlog specs in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    let reached = Arc::new(Mutex::new(HashSet::new()));
    let counter = tokio::spawn(count_reached(world.store.subscribe(), reached.clone()));
    let running = world.start(NO_RESYNC, None);
    let mut busy = Vec::new();
    let mut reached_at_probe = Vec::new();
    for probe in 0..probes {
        reached_at_probe.push(reached.lock().expect("not poisoned").len());
        busy.push(probe_once(&world, &shop_name("busy", probe)).await);
    }
    let reached_at_end = reached.lock().expect("not poisoned").len();
    running.stop().await;
    counter.abort();

    println!(
        "time from deploy_shop to the new shop's first reconcile (first status row), \
         {probes} probes, default loop config (concurrency 4)"
    );
    println!("| controller | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!("| idle (baseline) | {} |", summary(&mut idle));
    println!(
        "| restarted over {backlog} shops (full resync) | {} |",
        summary(&mut busy)
    );
    println!(
        "backlog shops with a status when each probe was deployed: {:?}; at the last probe's \
         end: {reached_at_end} of {backlog}",
        reached_at_probe
    );
}

/// Deploys `shop` and waits for its first status row, seen on the store's change feed.
async fn probe_once(world: &World, shop: &str) -> Duration {
    let mut changes = world.store.subscribe();
    world.deploy(shop).await;
    let deployed = Instant::now();
    loop {
        let seen = match tokio::time::timeout(Duration::from_secs(300), changes.recv()).await {
            Err(_) => panic!("{shop} saw no reconcile in 300 s"),
            Ok(Ok(Change::Status(changed, _))) => changed == shop,
            Ok(Ok(_)) => false,
            // Missed changes: ask the store instead.
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                let view = world.store.get_shop(shop).await.expect("get shop");
                view.is_some_and(|view| !view.resources.is_empty())
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => panic!("change feed closed"),
        };
        if seen {
            return deployed.elapsed();
        }
    }
}

/// Collects the backlog shops that got a status (a lower bound: lagged changes are lost).
async fn count_reached(
    mut changes: broadcast::Receiver<Change>,
    reached: Arc<Mutex<HashSet<String>>>,
) {
    loop {
        match changes.recv().await {
            Ok(Change::Status(shop, _)) if shop.starts_with("backlog-") => {
                reached.lock().expect("not poisoned").insert(shop);
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    format!(
        "{} | {} | {}",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(samples[samples.len() - 1])
    )
}
