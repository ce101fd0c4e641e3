//! The failure suite of issue #7: the in-process controller over the simulated AWS, with the
//! world failing around it, one scenario per test. After each, the invariant of
//! [`assert_invariant`] holds: every object tagged with the installation is wanted by exactly
//! one shop, every wanted object exists once, every shop is synced for its generation, no spec
//! written through the API was lost, and the nginx directory holds exactly the shops' files.
//!
//! - A fault storm: throttling, 5xx, lost responses and latency spikes on every call while
//!   shops converge, get new versions and restarts and are deleted. Besides the invariant: no
//!   throttling error is left in a final status and no version is built twice.
//! - The region's target group quota full: the shops beyond it wait, saying which quota, without
//!   a hot loop, the others are unaffected, and a deleted shop's slot goes to a waiting one.
//! - One proxy failing its nginx reload: the shop's status names the instance and its error,
//!   retries back off, the other shops are unaffected, and the shop heals with the proxy.
//! - A config nginx rejects: quarantined, the previous file stays live and is not reloaded,
//!   the other shops' files stay untouched and loadable, and the status says why.
//! - PostgreSQL restarted mid-run (a throwaway cluster of the test's own, `failures/cluster.rs`):
//!   the controller neither crashes nor loses anything.
//!
//! Kill points, the listener quota, a full instance group and the certificate limits have
//! suites of their own (`crash.rs`, `convergence.rs`, `certificates.rs`).
//!
//! `SHOP_TEST_LONG=1` runs the long variants: a storm over 80 shops for a minute, and three
//! PostgreSQL restarts under 40 shops.

mod cluster;

use std::sync::Arc;
use std::time::Duration;

use reconcilers::cloud::{Fleet, LoadBalancing};
use reconcilers::sim::FaultProfile;
use reconcilers::status::{ResourceKind, SyncState};
use shop_controller::controller::ControllerConfig;
use shop_controller::grpc::proto::ConditionStatus;
use shop_controller::runtime::Backoff;
use shop_controller::store::{PostgresStore, Store};

use crate::controller::{converged_within, start_on, start_with, wait_for};
use crate::convergence::fixture::{
    LONG_WAIT, Ledger, assert_invariant, assert_nginx_accepts, assert_ready, builds_by_version,
    eventually, get_shop, proto_kind, ready_condition, scaled_sim, shop_names, test_config,
};
use crate::convergence::quiet_window;
use crate::support::{ShopClient, TestStore, long};

const RESYNC: Duration = Duration::from_millis(500);
/// The comment of the controller's nginx reloads in SSM.
const RELOAD_COMMENT: &str = "shop-controller: reload nginx";

/// The test config, with retries after failures capped at 4 s instead of 5 min: a key that
/// failed many times in a row is looked at again soon after its cause went away. These tests
/// are about failures being survived, not about how long the cap is.
fn quick_retries() -> ControllerConfig {
    let mut config = test_config(RESYNC);
    config.loops.retry = Backoff {
        base: Duration::from_millis(250),
        cap: Duration::from_secs(4),
        jitter: 0.2,
    };
    config
}

/// What a storm does to its shops.
struct Storm {
    shops: usize,
    /// How long the faults last.
    length: Duration,
    new_versions: usize,
    restarts: usize,
    deletes: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shops_survive_a_storm_of_throttling_errors_lost_responses_and_latency_spikes() {
    let storm = if long() {
        Storm {
            shops: 80,
            length: Duration::from_secs(60),
            new_versions: 20,
            restarts: 10,
            deletes: 10,
        }
    } else {
        Storm {
            shops: 30,
            length: Duration::from_secs(12),
            new_versions: 8,
            restarts: 4,
            deletes: 4,
        }
    };
    let running = start_with(scaled_sim(), quick_retries()).await;
    let mut client = running.server.shops().await;
    let mut ledger = Ledger::default();
    let shops = shop_names("storm", storm.shops);
    ledger.deploy(&running.aws, &mut client, &shops).await;

    // On every call: 20 % throttled, 5 % 5xx, 5 % applied with the response lost, and one in
    // fifty held for 1.5 s (a minute of simulated time).
    let faults = FaultProfile {
        throttle: 0.2,
        transient: 0.05,
        lost_response: 0.05,
        latency: Duration::ZERO,
        spike: 0.02,
        spike_latency: Duration::from_millis(1500),
    };
    running.aws.set_default_faults(faults);
    let started = tokio::time::Instant::now();
    // The changes are spread over the storm: new versions a quarter in, restarts at half
    // time, deletions of the last shops at three quarters.
    let step = storm.length / 4;
    tokio::time::sleep(step).await;
    ledger
        .deploy(&running.aws, &mut client, &shops[..storm.new_versions])
        .await;
    tokio::time::sleep(step).await;
    for shop in &shops[storm.new_versions..storm.new_versions + storm.restarts] {
        ledger.restart(&mut client, shop).await;
    }
    tokio::time::sleep(step).await;
    for shop in shops.iter().rev().take(storm.deletes) {
        ledger.delete(&mut client, shop).await;
    }
    tokio::time::sleep(storm.length.saturating_sub(started.elapsed())).await;
    let throttled = running.aws.calls().snapshot();
    let throttled: u64 = throttled
        .iter()
        .filter(|((_, _, outcome), _)| outcome == "throttled")
        .map(|(_, count)| count)
        .sum();
    eprintln!(
        "storm of {:?}: {throttled} calls throttled",
        started.elapsed()
    );
    assert!(throttled > 0, "the storm throttled nothing");
    running.aws.clear_faults();

    let store = running.store.store.as_ref();
    converged_within(store, &ledger.remaining(), LONG_WAIT).await;
    eventually("the deleted shops to be removed", LONG_WAIT, async || {
        for shop in ledger.deleted() {
            if store.get_shop(&shop).await.expect("read").is_some() {
                return false;
            }
        }
        true
    })
    .await;
    eprintln!("converged {:?} after the storm began", started.elapsed());

    assert_invariant(&running.world(), &mut client, &ledger, "after the storm").await;
    for shop in ledger.remaining() {
        let view = store.get_shop(&shop).await.expect("read").expect("exists");
        for resource in &view.resources {
            let text = format!("{} {}", resource.reason, resource.message);
            assert!(
                !text.contains("Throttl") && !text.contains("Rate exceeded"),
                "{shop}: a throttling error stayed in {resource:?}"
            );
        }
    }
    let built = builds_by_version(&running.aws).await;
    let twice: Vec<_> = built.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "built more than once: {twice:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shops_beyond_the_target_group_quota_wait_without_a_hot_loop_and_take_freed_slots() {
    // The seed's own target groups count against the region's quota too: leave room for 3.
    let seeded = start_with(scaled_sim(), test_config(RESYNC)).await;
    let before = seeded.aws.list_target_groups().await.expect("list").len();
    seeded.stop().await;
    let mut sim = scaled_sim();
    sim.quotas.target_groups = before + 3;
    let running = start_with(sim, test_config(RESYNC)).await;
    let store = running.store.store.as_ref();
    let mut client = running.server.shops().await;
    let mut ledger = Ledger::default();
    let shops = shop_names("tgquota", 5);
    let (within, beyond) = shops.split_at(3);
    ledger.deploy(&running.aws, &mut client, within).await;
    converged_within(store, within, LONG_WAIT).await;
    ledger.deploy(&running.aws, &mut client, beyond).await;

    // Wait for the whole chain, so that nothing of the waiting shops changes from here on.
    for shop in beyond {
        wait_for(store, shop, ResourceKind::TargetGroup, |r| {
            r.reason == "QuotaExceeded"
        })
        .await;
        wait_for(store, shop, ResourceKind::Deployment, |r| {
            r.sync == SyncState::Synced
        })
        .await;
        wait_for(store, shop, ResourceKind::NginxConfig, |r| {
            r.reason == "WaitingForListener"
        })
        .await;
        let found = get_shop(&mut client, shop).await.expect("get shop");
        assert_ne!(ready_condition(&found), Some(ConditionStatus::True as i32));
        let blocker = found.status.and_then(|s| s.blocked_by).expect("blocked");
        assert_eq!(blocker.kind, proto_kind(ResourceKind::TargetGroup));
        assert_eq!(blocker.reason, "QuotaExceeded");
        let quota = format!("at most {} target groups", before + 3);
        assert!(blocker.message.contains(&quota), "{}", blocker.message);
    }
    for shop in within {
        assert_ready(&get_shop(&mut client, shop).await.expect("get shop"));
    }

    // Quota waits start at 2 s: each waiting shop tries at most twice in 3 s. A loop on the
    // 0.5 s resync would make 12 attempts; one woken by its own status, hundreds.
    let window = quiet_window(
        &running,
        &beyond[0],
        "elasticloadbalancing:CreateTargetGroup",
    )
    .await;
    assert!(
        window.calls <= 4,
        "CreateTargetGroup in 3 s: {}",
        window.calls
    );
    assert_eq!(window.status_writes, 0, "a repeated wait rewrites nothing");
    for shop in within {
        assert_ready(&get_shop(&mut client, shop).await.expect("get shop"));
    }

    // Each deleted shop's target group frees a slot for a waiting one.
    for shop in &within[..2] {
        ledger.delete(&mut client, shop).await;
    }
    converged_within(store, beyond, LONG_WAIT).await;
    eventually("the deleted shops to be removed", LONG_WAIT, async || {
        for shop in ledger.deleted() {
            if store.get_shop(&shop).await.expect("read").is_some() {
                return false;
            }
        }
        true
    })
    .await;
    assert_invariant(
        &running.world(),
        &mut client,
        &ledger,
        "after slots were freed",
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_failing_its_reload_is_named_retried_with_backoff_and_healed() {
    // Production's retries (from 1 s, doubling), capped at 8 s instead of 5 min so that the
    // heal is seen soon after the proxy recovers.
    let mut config = test_config(RESYNC);
    config.loops.retry = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(8),
        jitter: 0.2,
    };
    let running = start_with(scaled_sim(), config).await;
    let (aws, store) = (&running.aws, running.store.store.as_ref());
    let mut client = running.server.shops().await;
    let mut ledger = Ledger::default();
    let shops = shop_names("reload", 3);
    ledger.deploy(&running.aws, &mut client, &shops).await;
    converged_within(store, &shops, LONG_WAIT).await;
    let (shop, others) = (&shops[0], &shops[1..]);
    let untouched = others_status(store, others).await;

    let proxies = aws.running_instances("shop-proxy").await.expect("proxies");
    assert_eq!(proxies.len(), 2, "the seed runs two proxies");
    let broken = proxies[1].id.clone();
    let error = "nginx: [emerg] open() \"/etc/nginx/nginx.conf\" failed (5: Input/output error)";
    aws.fail_commands_on(&broken, error);
    // A new version changes the shop's file (it names the generation), so it must reload.
    ledger
        .deploy(&running.aws, &mut client, std::slice::from_ref(shop))
        .await;
    let failed = wait_for(store, shop, ResourceKind::NginxConfig, |r| {
        r.reason == "ReloadFailed"
    })
    .await;
    assert!(
        failed.message.contains(&broken) && failed.message.contains("Input/output error"),
        "names the proxy and its error: {}",
        failed.message
    );
    only_nginx_blocks(store, &mut client, shop, "ReloadFailed").await;

    // Retries double from 1 s: at most two attempts in 3 s, each one SendCommand to the
    // first proxy and one to the rest. Retrying on every 0.5 s resync would send 12.
    let before = reloads(aws);
    let window = quiet_window(&running, shop, "ssm:SendCommand").await;
    let sent = reloads(aws) - before;
    assert!(sent <= 4, "reloads in 3 s: {sent}");
    // A failure, unlike a wait, counts its attempts in the status: one write per attempt.
    assert!(
        window.status_writes <= 2,
        "status writes in 3 s: {}",
        window.status_writes
    );
    assert_eq!(
        others_status(store, others).await,
        untouched,
        "others unaffected"
    );

    aws.heal_commands_on(&broken);
    converged_within(store, std::slice::from_ref(shop), LONG_WAIT).await;
    assert_eq!(
        others_status(store, others).await,
        untouched,
        "others unaffected"
    );
    assert_invariant(
        &running.world(),
        &mut client,
        &ledger,
        "after the proxy healed",
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_nginx_rejects_is_quarantined_and_the_good_one_stays_live() {
    let running = start_with(scaled_sim(), quick_retries()).await;
    let (aws, store, dir) = (
        &running.aws,
        running.store.store.as_ref(),
        &running.nginx_dir,
    );
    let mut client = running.server.shops().await;
    let mut ledger = Ledger::default();
    let shops = shop_names("reject", 3);
    ledger.deploy(&running.aws, &mut client, &shops).await;
    converged_within(store, &shops, LONG_WAIT).await;
    let (shop, others) = (&shops[0], &shops[1..]);
    let live = dir.join(format!("{shop}.conf"));
    let good = std::fs::read_to_string(&live).expect("live file");
    let other_files = read_files(dir, others);
    let untouched = others_status(store, others).await;

    // The renderer writes only typed values nginx accepts, so no spec yields a file nginx
    // rejects. What does is the directory around it: an operator's server that includes
    // files by a pattern which, unmeant, matches the shop's candidate. Alone it loads (the
    // pattern matches nothing); with the candidate in place, nginx finds a server block
    // inside a server block.
    let operator = dir.join("operator_includes.conf");
    let pattern = dir.join(format!("{shop}.conf.cand*"));
    let text = format!(
        "server {{\n    server_name operator.internal;\n    include {};\n}}\n",
        pattern.display()
    );
    std::fs::write(&operator, text).expect("operator file");
    let reloads_before = reloads(aws);
    ledger
        .deploy(&running.aws, &mut client, std::slice::from_ref(shop))
        .await;
    let rejected = wait_for(store, shop, ResourceKind::NginxConfig, |r| {
        r.reason == "Quarantined"
    })
    .await;
    assert!(
        rejected.message.contains("nginx rejected it (quarantined)")
            && rejected
                .message
                .contains("\"server\" directive is not allowed here"),
        "says why: {}",
        rejected.message
    );
    only_nginx_blocks(store, &mut client, shop, "Quarantined").await;

    let quarantined = dir.join("quarantine").join(format!("{shop}.conf"));
    let candidate = std::fs::read_to_string(&quarantined).expect("quarantined candidate");
    assert!(candidate.contains("# generation: 2"), "{candidate}");
    assert_eq!(
        std::fs::read_to_string(&live).expect("live"),
        good,
        "stays live"
    );
    assert_eq!(read_files(dir, others), other_files, "others untouched");
    // The shops' live files, as the proxies' `*.conf` include loads them, without the
    // operator's file (which fails whenever a retry's candidate is in place).
    let shop_files = tempfile::tempdir().expect("temp dir");
    for shop in &shops {
        let name = format!("{shop}.conf");
        std::fs::copy(dir.join(&name), shop_files.path().join(&name)).expect("copy");
    }
    assert_nginx_accepts(shop_files.path(), "while quarantined").await;
    assert_eq!(
        reloads(aws),
        reloads_before,
        "no proxy reloads a rejected file"
    );
    assert_eq!(
        others_status(store, others).await,
        untouched,
        "others unaffected"
    );

    std::fs::remove_file(&operator).expect("remove operator file");
    converged_within(store, std::slice::from_ref(shop), LONG_WAIT).await;
    assert!(!quarantined.exists(), "the quarantine is cleared");
    assert_invariant(
        &running.world(),
        &mut client,
        &ledger,
        "after the operator file went",
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shops_converge_and_nothing_is_lost_when_postgres_restarts_mid_run() {
    let (count, restarts) = if long() { (40, 3) } else { (12, 1) };
    let cluster = cluster::Cluster::start();
    let store = PostgresStore::connect(&cluster.url())
        .await
        .expect("connect");
    let store = TestStore {
        store: Arc::new(store) as Arc<dyn Store>,
        dir: tempfile::tempdir().expect("temp dir"),
    };
    let running = start_on(store, scaled_sim(), quick_retries(), |_| None).await;
    let store = running.store.store.as_ref();
    let mut client = running.server.shops().await;
    let mut ledger = Ledger::default();
    let shops = shop_names("pgdown", count);
    ledger.deploy(&running.aws, &mut client, &shops).await;

    for restart in 0..restarts {
        // Mid-convergence: some shops along, not all (each restart's new versions undo that).
        eventually("a shop to be ready", LONG_WAIT, async || {
            let view = store.get_shop(&shops[0]).await.expect("read");
            view.is_some_and(|v| v.ready)
        })
        .await;
        let not_ready = count_not_ready(store, &ledger.remaining()).await;
        eprintln!("restart {restart}: {not_ready} shops not ready when PostgreSQL stops");
        // pg_ctl blocks until the server is down (or up): off the runtime's worker, so the
        // controller's tasks keep running meanwhile.
        tokio::task::block_in_place(|| cluster.stop());
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!running.loops.is_finished(), "the controller ended");
        tokio::task::block_in_place(|| cluster.resume());
        let changed = &shops[restart * 2..restart * 2 + 2];
        ledger.deploy(&running.aws, &mut client, changed).await;
    }
    let deleted = shops.last().expect("shops").clone();
    ledger.delete(&mut client, &deleted).await;

    converged_within(store, &ledger.remaining(), LONG_WAIT).await;
    eventually("the deleted shop to be removed", LONG_WAIT, async || {
        store.get_shop(&deleted).await.expect("read").is_none()
    })
    .await;
    assert!(!running.loops.is_finished(), "the controller ended");
    assert_invariant(
        &running.world(),
        &mut client,
        &ledger,
        "after PostgreSQL restarted",
    )
    .await;
    running.stop().await;
    drop(cluster);
}

/// Every reload the controller sent through SSM.
/// The new version's build and deployment (generation 2) go on despite the nginx failure;
/// once they are done, the nginx config, for `reason`, is what keeps the shop from Ready.
async fn only_nginx_blocks(store: &dyn Store, client: &mut ShopClient, shop: &str, reason: &str) {
    wait_for(store, shop, ResourceKind::Deployment, |r| {
        r.sync == SyncState::Synced && r.observed_generation == 2
    })
    .await;
    let found = get_shop(client, shop).await.expect("get shop");
    assert_ne!(ready_condition(&found), Some(ConditionStatus::True as i32));
    let blocker = found.status.and_then(|s| s.blocked_by).expect("blocked");
    assert_eq!(blocker.kind, proto_kind(ResourceKind::NginxConfig));
    assert_eq!(blocker.reason, reason);
}

fn reloads(aws: &reconcilers::sim::SimulatedAws) -> usize {
    let sent = aws.commands_sent();
    sent.iter().filter(|c| c.comment == RELOAD_COMMENT).count()
}

/// The shops' resource statuses, to show that a failure elsewhere left them alone.
async fn others_status(store: &dyn Store, shops: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    for shop in shops {
        let view = store.get_shop(shop).await.expect("read").expect("exists");
        assert!(view.ready, "{shop} is ready");
        for r in &view.resources {
            let observed_generation = r.observed_generation;
            let state = format!("{:?}/{}/{}", r.sync, r.reason, r.message);
            seen.push(format!("{shop} {} {observed_generation} {state}", r.kind));
        }
    }
    seen
}

fn read_files(dir: &std::path::Path, shops: &[String]) -> Vec<String> {
    let read = |shop: &String| std::fs::read_to_string(dir.join(format!("{shop}.conf")));
    shops.iter().map(|s| read(s).expect("nginx file")).collect()
}

async fn count_not_ready(store: &dyn Store, shops: &[String]) -> usize {
    let mut count = 0;
    for shop in shops {
        let view = store.get_shop(shop).await.expect("read");
        count += usize::from(!view.is_some_and(|v| v.ready));
    }
    count
}
