//! High availability with real processes (#6): three `shop-controller serve` processes share one
//! PostgreSQL database and one simulated AWS, which this test hosts behind the remote sim
//! server (`sim_server`), journaling every mutation with the replica that sent it. While twenty
//! shops converge, one replica is killed (`kill -9`) and another is stopped (`SIGSTOP`) for
//! longer than two lease times, then continued; new versions are deployed while it sleeps and a
//! few shops are deleted after it wakes.
//!
//! What the journal can prove, and what is asserted. Every mutation is attributed to the key
//! whose lease fences it: its shop (by the ownership tags in its arguments, the shop's name in
//! an artifact key or a command, or an id an earlier attributed mutation created) or, for the
//! region's challenge listener, the region. A replica sends a mutation of a key only within
//! half a lease time of a fence that extended its claim to a full lease time from when it
//! asked (the controller's `FencedCloud` refuses later ones), and another replica can claim
//! the key only once that claim lapsed. So when the journal shows key K mutated by A and next
//! by B, B's mutation was received at least half a lease time after A's, less the moment
//! between A's check and the server reading A's call. The test asserts a quarter: two
//! replicas that worked on one shop at once would interleave their calls far closer than that
//! (before `FencedCloud`, this test caught a stopped replica registering targets 270 ms after
//! the replica that had taken its shop over). The same rule, read for the stopped replica,
//! is the stale-lease check: after it continues, none of its mutations of a shop another
//! replica mutated while it slept comes within a quarter lease of that replica's.
//!
//! The nginx reloads the proxies get (an SSM command naming no shop) cannot be attributed and
//! are left out; every other mutation must be. Files written to the shared nginx directory are
//! not journaled.
//!
//! Beside that: the killed replica's claims are taken over within about a lease time, every
//! remaining shop ends Ready, owns exactly its target group and listener and nothing unwanted
//! is tagged, no source version is built twice and no revision deployed twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reconcilers::cloud::TAG_SHOP;
use reconcilers::sim::{FaultProfile, SimulatedAws};
use shop_controller::grpc::Auth;
use shop_controller::grpc::proto::DeleteShopRequest;
use shop_controller::sim_server::Mutation;
use shop_controller::store::{PostgresStore, Store};
use sqlx::Row;

use crate::controller::converged_within;
use crate::convergence::fixture::{
    LONG_WAIT, assert_owned_exactly, assert_ready, builds_by_version, deployments_of, eventually,
    get_shop, is_gone, shop_names,
};
use crate::serve_process::{ServeProcess, SharedSim, is_process};
use crate::support::{ShopClient, TestServer, deploy_request, fresh_postgres_database};

const REPLICAS: usize = 3;
const LEASE_TTL: Duration = Duration::from_secs(4);
/// The least time between two replicas' mutations of one key (see the module doc).
const HANDOVER_GAP: Duration = Duration::from_secs(1);
const SHOPS: usize = 20;

/// A mutation and the key whose lease fenced it.
struct Attributed {
    key: Option<String>,
    replica: String,
    method: String,
    received: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_processes_share_shops_survive_kill_and_stop_and_never_mutate_a_shop_at_once() {
    let database_url = fresh_postgres_database().await;
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&database_url)
            .await
            .expect("connect"),
    );
    let dir = tempfile::tempdir().expect("dir");
    let shared = SharedSim::seed(store.as_ref(), &database_url, dir.path(), LEASE_TTL).await;
    let (aws, journal, launch) = (&shared.aws, &shared.hosted.journal, &shared.launch);
    let server = TestServer::start(store.clone(), Arc::new(aws.clone()), Auth::Disabled).await;
    let mut client = server.shops().await;
    let replicas: Vec<ServeProcess> = (0..REPLICAS)
        .map(|i| ServeProcess::spawn(&format!("replica-{i}"), launch))
        .collect();
    let pool = sqlx::PgPool::connect(&database_url).await.expect("connect");
    for replica in &replicas {
        let what = format!("{} to start its loops", replica.name);
        eventually(&what, LONG_WAIT, async || {
            replica.logged("starting reconcile loop") > 0
        })
        .await;
    }

    // Claims go to whichever replica asks first, and the replicas even them out only as their
    // claims come up for renewal, so the roles are dealt by what each holds at the moment:
    // the one holding most is killed, another holder stopped.
    let shops = shop_names("ha", SHOPS);
    for shop in &shops {
        deploy(aws, &mut client, shop).await;
    }
    let mut ranked: Vec<(usize, usize)> = Vec::new();
    eventually("two replicas to hold shops", LONG_WAIT, async || {
        ranked.clear();
        for (index, replica) in replicas.iter().enumerate() {
            let held = claims_of(&pool, replica).await;
            let shops_held = held.iter().filter(|key| shops.contains(key)).count();
            ranked.push((shops_held, index));
        }
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        ranked[1].0 > 0
    })
    .await;
    let (killed, stopped, survivor) = (
        &replicas[ranked[0].1],
        &replicas[ranked[1].1],
        &replicas[ranked[2].1],
    );

    // Every call now takes a while, so the replica stopped next is likely in the middle of
    // reconciles: they go on when it continues, and their next fence must fail. Creating a
    // target group takes longest: a plan cut there must not register its targets afterwards.
    let slow = |millis| FaultProfile {
        latency: Duration::from_millis(millis),
        ..FaultProfile::default()
    };
    aws.set_default_faults(slow(150));
    aws.set_faults("elasticloadbalancing:CreateTargetGroup", slow(1000));

    // Kill one: its unexpired claims are what the others must wait out and take over.
    let held_by_killed = claims_of(&pool, killed).await;
    let kill_time = Instant::now();
    killed.signal("KILL");
    assert!(
        !held_by_killed.is_empty(),
        "the killed replica held no shop"
    );
    let takeover = tokio::spawn(taken_over(
        pool.clone(),
        held_by_killed.clone(),
        [killed.name.clone(), stopped.name.clone()],
        kill_time,
    ));

    // Stop another while it holds shops, and give them new work while it sleeps.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stopped.signal("STOP");
    let stop_time = Instant::now();
    let held_by_stopped = claims_of(&pool, stopped).await;
    let renewed: BTreeSet<&String> = held_by_stopped
        .iter()
        .chain(&held_by_killed)
        .filter(|key| shops.contains(key))
        .collect();
    for shop in &renewed {
        deploy(aws, &mut client, shop).await;
    }
    // The killed replica's claims were taken over within about a lease time (the watch
    // fails after a lease time and a margin).
    let takeover = takeover.await.expect("takeover watch");
    let sleep_until = stop_time + 2 * LEASE_TTL + Duration::from_secs(1);
    tokio::time::sleep(sleep_until.saturating_duration_since(Instant::now())).await;
    stopped.signal("CONT");
    let resume_time = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    aws.clear_faults();

    let (deleted, remaining) = shops.split_at(3);
    for shop in deleted {
        let request = DeleteShopRequest {
            shop_domain: shop.clone(),
        };
        client.delete_shop(request).await.expect("delete");
    }
    converged_within(store.as_ref(), remaining, LONG_WAIT).await;
    eventually("deleted shops to be gone", LONG_WAIT, async || {
        for shop in deleted {
            if !is_gone(&mut client, shop).await {
                return false;
            }
        }
        true
    })
    .await;

    // Converged and correct.
    for shop in remaining {
        assert_ready(&get_shop(&mut client, shop).await.expect("get shop"));
    }
    assert_owned_exactly(aws, remaining, "after the kill and the stop").await;
    let twice: Vec<_> = builds_by_version(aws)
        .await
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .collect();
    assert!(twice.is_empty(), "versions built more than once: {twice:?}");
    let group = shop_controller::dev::dev_instance_group();
    let mut revisions: BTreeMap<String, usize> = BTreeMap::new();
    for deployment in deployments_of(aws, group.codedeploy_deployment_group.as_str()).await {
        *revisions.entry(deployment.revision.key).or_default() += 1;
    }
    let repeated: Vec<_> = revisions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "revisions deployed twice: {repeated:?}"
    );

    // No key was mutated by two replicas at once.
    let attributed = attribute(&journal.mutations(), &shops);
    let by_key = assert_no_interleaving(&attributed);

    // The stopped replica made no mutation with a stale lease after it continued.
    let others_while_stopped: BTreeSet<&String> = attributed
        .iter()
        .filter(|m| !stopped.is(&m.replica))
        .filter(|m| m.received > stop_time && m.received < resume_time)
        .filter_map(|m| m.key.as_ref())
        .collect();
    let taken_over: Vec<&&String> = others_while_stopped
        .iter()
        .filter(|k| held_by_stopped.contains(**k))
        .collect();
    assert!(
        !taken_over.is_empty(),
        "no shop of the stopped replica was taken over while it slept: held {held_by_stopped:?}"
    );
    for key in &others_while_stopped {
        let calls = &by_key[*key];
        let mut last_other: Option<Instant> = None;
        for call in calls.iter().filter(|c| c.received < resume_time) {
            if !stopped.is(&call.replica) {
                last_other = Some(call.received);
            }
        }
        let last_other = last_other.expect("mutated by another replica");
        for call in calls.iter().filter(|c| c.received >= resume_time) {
            if stopped.is(&call.replica) {
                assert!(
                    call.received - last_other >= HANDOVER_GAP,
                    "{key}: {} by the stopped replica {:?} after it continued, {:?} after \
                     another replica's last mutation",
                    call.method,
                    call.received - resume_time,
                    call.received - last_other,
                );
            }
        }
    }
    // A target group plan the stop cut after its create: the register that follows must be
    // held back by the fence deadline, whatever the journal's timing says.
    let cut_plans = journal
        .mutations()
        .into_iter()
        .filter(|m| stopped.is(&m.replica) && m.method == "load_balancing:create_target_group")
        .filter(|m| m.received < stop_time && m.answered > stop_time && m.succeeded())
        .count();
    let held_back = stopped.logged("mutation held back: its fence is too old");
    assert!(
        cut_plans == 0 || held_back > 0,
        "{cut_plans} target group plans were cut by the stop, yet no mutation was held back"
    );
    eprintln!(
        "processes: takeover after {takeover:?}; {} mutations journaled; {} of the stopped \
         replica's shops taken over; the stopped replica logged {} lost leases, {} slow lease \
         checks and {held_back} mutations held back past the fence deadline ({cut_plans} plans \
         cut by the stop); the survivor {} lost leases",
        attributed.len(),
        taken_over.len(),
        stopped.logged("lease lost before a mutation"),
        stopped.logged("lease check outlived half the lease"),
        survivor.logged("lease lost before a mutation"),
    );
}

/// Uploads a new version of the shop's source and deploys it through the API.
async fn deploy(aws: &SimulatedAws, client: &mut ShopClient, shop: &str) {
    let zip = shop_controller::dev::sample_shop_zip();
    aws.put_object("shop-sources", &format!("{shop}.zip"), zip);
    client
        .deploy_shop(deploy_request(shop))
        .await
        .expect("deploy");
}

/// How long after `since` every key of `held` was claimed by a replica other than `gone`,
/// watched every 50 ms; fails after a lease time and a generous margin.
async fn taken_over(
    pool: sqlx::PgPool,
    held: BTreeSet<String>,
    gone: [String; 2],
    since: Instant,
) -> Duration {
    let within = LEASE_TTL + Duration::from_secs(8);
    loop {
        let holders = holders(&pool).await;
        let taken = held.iter().all(|key| {
            holders
                .get(key)
                .is_some_and(|holder| !gone.iter().any(|name| is_process(name, holder)))
        });
        if taken {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < within,
            "claims of the killed replica not taken over in {within:?}: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The holder of every claim that has not lapsed, by key (a shop, or a region's loop).
async fn holders(pool: &sqlx::PgPool) -> BTreeMap<String, String> {
    let rows = sqlx::query(
        "SELECT shop_domain, holder FROM shop_leases \
         WHERE expires_at > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
    )
    .fetch_all(pool)
    .await
    .expect("read leases");
    rows.iter()
        .map(|row| (row.get::<String, _>(0), row.get::<String, _>(1)))
        .collect()
}

/// The keys whose claim `replica` holds and which has not lapsed.
async fn claims_of(pool: &sqlx::PgPool, replica: &ServeProcess) -> BTreeSet<String> {
    let holders = holders(pool).await;
    holders
        .into_iter()
        .filter(|(_, holder)| replica.is(holder))
        .map(|(key, _)| key)
        .collect()
}

/// Every string inside a JSON value.
fn strings_of(value: &serde_json::Value) -> Vec<&str> {
    let mut found = Vec::new();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::String(s) => found.push(s.as_str()),
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(fields) => stack.extend(fields.values()),
            _ => {}
        }
    }
    found
}

/// The value of an ownership tag naming the shop (or region) anywhere in `args`.
fn owner_tag(args: &serde_json::Value) -> Option<String> {
    let mut stack = vec![args];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(fields) => {
                if fields.get("key").and_then(|k| k.as_str()) == Some(TAG_SHOP) {
                    return fields
                        .get("value")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned);
                }
                stack.extend(fields.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    None
}

/// The id or ARN a successful create answered with.
fn created_id(reply: &serde_json::Value) -> Option<String> {
    let ok = reply.get("ok")?;
    let id = ok.as_str().or_else(|| {
        let field = ok.get("arn").or_else(|| ok.get("id"))?;
        field.as_str()
    });
    id.map(str::to_owned)
}

/// Attributes each mutation, in the order they were answered, to the key whose lease fenced
/// it. Only SSM commands may name no key (the proxies' nginx reloads).
fn attribute(mutations: &[Mutation], shops: &[String]) -> Vec<Attributed> {
    let mut learned: HashMap<String, String> = HashMap::new();
    let mut attributed = Vec::new();
    for mutation in mutations {
        let strings = strings_of(&mutation.args);
        let mut keys: BTreeSet<String> = owner_tag(&mutation.args).into_iter().collect();
        for string in &strings {
            keys.extend(learned.get(*string).cloned());
            let named = shops.iter().filter(|shop| string.contains(shop.as_str()));
            keys.extend(named.cloned());
        }
        assert!(keys.len() <= 1, "{mutation:?} names several keys: {keys:?}");
        let key = keys.into_iter().next();
        match (&key, created_id(&mutation.reply)) {
            (Some(key), Some(id)) => {
                learned.insert(id, key.clone());
            }
            (None, _) => assert_eq!(
                mutation.method, "run_command:send_command",
                "a mutation of no shop: {mutation:?}"
            ),
            _ => {}
        }
        attributed.push(Attributed {
            key,
            replica: mutation.replica.clone(),
            method: mutation.method.clone(),
            received: mutation.received,
        });
    }
    attributed
}

/// Whenever the replica mutating a key changes, the new one's first mutation comes at least
/// [`HANDOVER_GAP`] after the previous one's last. Returns the mutations by key, oldest first.
fn assert_no_interleaving(attributed: &[Attributed]) -> BTreeMap<String, Vec<&Attributed>> {
    let mut by_key: BTreeMap<String, Vec<&Attributed>> = BTreeMap::new();
    for mutation in attributed {
        if let Some(key) = &mutation.key {
            by_key.entry(key.clone()).or_default().push(mutation);
        }
    }
    let mut handovers = 0;
    for (key, calls) in &mut by_key {
        calls.sort_by_key(|c| c.received);
        for pair in calls.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            if before.replica == after.replica {
                continue;
            }
            handovers += 1;
            let gap = after.received - before.received;
            assert!(
                gap >= HANDOVER_GAP,
                "{key}: {} by {} only {gap:?} after {} by {}",
                after.method,
                after.replica,
                before.method,
                before.replica,
            );
        }
    }
    assert!(handovers > 0, "no key changed hands: nothing was checked");
    by_key
}
