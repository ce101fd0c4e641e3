//! OS patching of the fleets (issue #6) end to end: the controller's patch loop over the
//! simulated AWS, checked through the simulated account's command log (what ran where, and
//! when) and the runs recorded in the store.

use std::sync::Arc;
use std::time::Duration;

use reconcilers::cloud::{Fleet, LoadBalancing};
use reconcilers::patching::{FleetId, InstanceState, PatchPolicy, PatchRun, RunState};
use reconcilers::sim::{ResourceType, SentCommand, SimConfig, Timings};
use reconcilers::spec::RegionName;
use shop_controller::controller::ControllerConfig;
use shop_controller::store::now_millis;

use crate::controller::{Running, converged, spawn_controller, start_with};
use crate::convergence::fixture::{
    deploy_new_versions, owned, scaled_sim, shop_names, test_config,
};

const GROUP: &str = "group/shops-a";
const PROXIES: &str = "proxy/eu-west-1";

fn config() -> ControllerConfig {
    let mut config = test_config(Duration::from_millis(500));
    config.patch_tick = Duration::from_millis(100);
    config
}

/// A simulated account whose commands take `command` of simulated time (40 times faster).
fn sim(command: Duration) -> SimConfig {
    SimConfig {
        timings: Timings {
            command,
            ..Timings::default()
        },
        ..scaled_sim()
    }
}

/// A policy whose window is open now (and for at least another hour).
fn policy(fleet: &str) -> PatchPolicy {
    let hour = u8::try_from(now_millis().div_euclid(3_600_000).rem_euclid(24)).expect("hour");
    PatchPolicy {
        fleet: FleetId::parse(fleet).expect("valid"),
        region: RegionName::parse("eu-west-1").expect("valid"),
        enabled: true,
        interval_days: 7,
        window_start_hour: hour,
        window_end_hour: (hour + 2) % 24,
        weekdays: Vec::new(),
        script: "dnf -y upgrade".to_owned(),
        command_timeout_seconds: 600,
        updated_at: 0,
    }
}

async fn put_policy(running: &Running, fleet: &str) {
    running
        .store
        .store
        .put_patch_policy(&policy(fleet), now_millis())
        .await
        .expect("policy");
}

/// The newest run of `fleet`, once `done` holds of it.
async fn run_when(running: &Running, fleet: &str, done: impl Fn(&PatchRun) -> bool) -> PatchRun {
    let fleet = FleetId::parse(fleet).expect("valid");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let runs = running
            .store
            .store
            .patch_runs(&fleet, 1)
            .await
            .expect("runs");
        if let Some(run) = runs.into_iter().next()
            && done(&run)
        {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no run of {fleet} got there in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn finished(run: &PatchRun) -> bool {
    run.state != RunState::Running
}

/// The patch commands sent to `fleet`'s instances, oldest first.
fn patches(running: &Running, fleet: &str) -> Vec<SentCommand> {
    let comment = format!("shop-controller: patch {fleet}");
    running
        .aws
        .commands_sent()
        .into_iter()
        .filter(|command| command.comment == comment)
        .collect()
}

/// Each patch went to one instance, and each began only after the one before had finished.
fn assert_one_at_a_time(patches: &[SentCommand]) {
    for command in patches {
        assert_eq!(command.instance_ids.len(), 1, "{command:?}");
    }
    for pair in patches.windows(2) {
        let finished = pair[0].finished.expect("the earlier patch finished");
        assert!(
            pair[1].sent >= finished,
            "{} was patched while {} still was: {pair:?}",
            pair[1].instance_ids[0],
            pair[0].instance_ids[0]
        );
    }
}

/// The running instances named `name`, sorted.
async fn ids(running: &Running, name: &str) -> Vec<String> {
    let found = running.aws.running_instances(name).await.expect("list");
    found.into_iter().map(|i| i.id).collect()
}

fn targets(patches: &[SentCommand]) -> Vec<String> {
    patches.iter().map(|c| c.instance_ids[0].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_patches_every_instance_one_at_a_time() {
    let running = start_with(sim(Duration::from_secs(8)), config()).await;
    running.aws.add_instance("shops-a");
    put_policy(&running, GROUP).await;
    put_policy(&running, PROXIES).await;

    let group = run_when(&running, GROUP, finished).await;
    let proxies = run_when(&running, PROXIES, finished).await;

    for run in [&group, &proxies] {
        assert_eq!(run.state, RunState::Succeeded, "{run:?}");
        assert!(
            run.results
                .iter()
                .all(|r| r.state == InstanceState::Succeeded && r.finished_at.is_some()),
            "{run:?}"
        );
        assert_eq!(
            run.results
                .iter()
                .map(|r| &r.instance_id)
                .collect::<Vec<_>>(),
            run.instances.iter().collect::<Vec<_>>()
        );
    }
    assert_eq!(group.instances.len(), 3);
    assert_eq!(proxies.instances.len(), 2);
    let group_patches = patches(&running, GROUP);
    let proxy_patches = patches(&running, PROXIES);
    assert_one_at_a_time(&group_patches);
    assert_one_at_a_time(&proxy_patches);
    assert_eq!(
        targets(&group_patches),
        group.instances,
        "each instance once, in order"
    );
    assert_eq!(targets(&proxy_patches), proxies.instances);
    assert_eq!(group_patches[0].commands, vec!["dnf -y upgrade".to_owned()]);
    // A proxy's nginx config is checked after its patch, before the next proxy goes.
    let checks: Vec<SentCommand> = running
        .aws
        .commands_sent()
        .into_iter()
        .filter(|c| c.comment.starts_with("shop-controller: check proxy/"))
        .collect();
    assert_eq!(targets(&checks), proxies.instances);
    assert!(checks[0].sent >= proxy_patches[0].finished.expect("done"));
    assert!(proxy_patches[1].sent >= checks[0].finished.expect("done"));

    // Done for this interval: the status says when, and no second run starts.
    let status = running
        .store
        .store
        .patch_status(None)
        .await
        .expect("status");
    assert!(
        status.iter().all(|s| s.last_success.is_some()),
        "{status:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        patches(&running, GROUP).len(),
        3,
        "no second run in one window"
    );

    // The metric says when, per fleet.
    let sources = shop_controller::metrics::Sources {
        store: running.store.store.clone(),
        cloud: Arc::new(running.aws.clone()),
        controller: None,
    };
    let scrape = sources.render().await;
    for (fleet, run) in [(GROUP, &group), (PROXIES, &proxies)] {
        let sample =
            format!("shop_controller_fleet_last_patched_timestamp_seconds{{fleet=\"{fleet}\"}} ");
        let line = scrape
            .lines()
            .find(|line| line.starts_with(&sample))
            .unwrap_or_else(|| panic!("no {sample} in {scrape}"));
        let seconds: f64 = line[sample.len()..].parse().expect("a number");
        let finished = run.finished_at.expect("finished") as f64 / 1000.0;
        assert!((seconds - finished).abs() < 0.001, "{line} vs {finished}");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_instance_stops_the_run_and_leaves_the_rest_untouched() {
    let running = start_with(sim(Duration::from_secs(4)), config()).await;
    running.aws.add_instance("shops-a");
    let instances: Vec<String> = ids(&running, "shops-a").await;
    running
        .aws
        .fail_commands_on(&instances[1], "E: dpkg was interrupted");
    put_policy(&running, GROUP).await;

    let run = run_when(&running, GROUP, finished).await;

    assert_eq!(run.state, RunState::Failed, "{run:?}");
    let states: Vec<(&str, InstanceState)> = run
        .results
        .iter()
        .map(|r| (r.instance_id.as_str(), r.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (instances[0].as_str(), InstanceState::Succeeded),
            (instances[1].as_str(), InstanceState::Failed),
        ],
        "the third instance was never touched"
    );
    assert!(
        run.results[1].output.contains("E: dpkg was interrupted"),
        "{:?}",
        run.results[1]
    );
    assert!(run.message.contains(&instances[1]), "{}", run.message);
    assert_eq!(targets(&patches(&running, GROUP)), instances[..2].to_vec());
    // A failed run is not retried in the same window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(patches(&running, GROUP).len(), 2);
    let status = running
        .store
        .store
        .patch_status(None)
        .await
        .expect("status");
    assert_eq!(status[0].last_success, None);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_interrupted_by_a_crash_resumes_without_patching_twice() {
    // A patch takes 80 s of simulated time, 2 s of the test's.
    let config = config();
    let mut running = start_with(sim(Duration::from_secs(80)), config.clone()).await;
    running.aws.add_instance("shops-a");
    put_policy(&running, GROUP).await;

    // Killed while the first instance's patch runs.
    let patching = run_when(&running, GROUP, |run| {
        run.results
            .iter()
            .any(|r| r.state == InstanceState::Patching && r.output.starts_with("command "))
    })
    .await;
    running.loops.abort();
    let _ = (&mut running.loops).await;
    assert_eq!(patching.state, RunState::Running);
    let (stop, loops) = spawn_controller(&running.store, &running.aws, config);
    running.stop = stop;
    running.loops = loops;

    let run = run_when(&running, GROUP, finished).await;
    assert_eq!(run.id, patching.id, "the same run went on");
    assert_eq!(run.state, RunState::Succeeded, "{run:?}");
    assert!(
        run.results
            .iter()
            .all(|r| r.state == InstanceState::Succeeded)
    );
    let sent = patches(&running, GROUP);
    assert_eq!(targets(&sent), run.instances, "no instance patched twice");
    assert_one_at_a_time(&sent);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_with_one_running_instance_is_not_patched() {
    let running = start_with(sim(Duration::from_secs(4)), config()).await;
    let proxies: Vec<String> = ids(&running, "shop-proxy").await;
    running.aws.stop_instance(&proxies[0]);
    put_policy(&running, PROXIES).await;

    let run = run_when(&running, PROXIES, finished).await;

    assert_eq!(run.state, RunState::Refused, "{run:?}");
    assert!(
        run.message.contains("only 1 running instance"),
        "{}",
        run.message
    );
    assert!(run.instances.is_empty() && run.results.is_empty());
    assert!(patches(&running, PROXIES).is_empty());
    running.stop().await;
}

/// A patched instance of a group serves its shops again before the next one goes down: the
/// first instance is rebooted while its patch runs, and while its target shows `initial` in
/// the shop's target group no other instance is patched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_run_waits_until_the_shops_targets_are_healthy_again() {
    let running = start_with(sim(Duration::from_secs(8)), config()).await;
    let mut client = running.server.shops().await;
    let shops = shop_names("patched", 1);
    deploy_new_versions(&running, &mut client, &shops).await;
    converged(running.store.store.as_ref(), &shops).await;
    let target_group = owned(&running.aws, &shops[0], ResourceType::TargetGroup).await;
    put_policy(&running, GROUP).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(command) = patches(&running, GROUP).first() {
            break command.instance_ids[0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no patch was sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The patch reboots the instance.
    assert!(running.aws.stop_instance(&first) && running.aws.start_instance(&first));

    let mut seen_initial = false;
    loop {
        // Read in this order: a target still `initial` now was so when the count was taken.
        let sent = patches(&running, GROUP).len();
        let health = running
            .aws
            .describe_target_health(&target_group)
            .await
            .expect("health");
        let state = health
            .iter()
            .find(|h| h.target.id == first)
            .map(|h| h.state.clone());
        match state.as_deref() {
            Some("initial" | "unhealthy") => {
                seen_initial = true;
                assert_eq!(
                    sent, 1,
                    "the next instance went down while {first} was not serving"
                );
            }
            Some("healthy") => break,
            other => panic!("{first} in the shop's target group: {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{first} never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        seen_initial,
        "the reboot was not seen; the test proved nothing"
    );

    let run = run_when(&running, GROUP, finished).await;
    assert_eq!(run.state, RunState::Succeeded, "{run:?}");
    assert_eq!(patches(&running, GROUP).len(), run.instances.len());
}
