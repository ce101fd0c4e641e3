//! The region loop of the proxy ALB's port-80 ACME challenge listener (#5), end to end over
//! the simulated AWS: created at start, healed after an out-of-band change, left alone while
//! another replica holds the region or the region is paused, removed when the region stops
//! wanting it.

use std::time::Duration;

use reconcilers::challenge_listener::{CHALLENGE_PATH_PATTERN, PORT};
use reconcilers::cloud::{ListenerAction, ListenerRule, LoadBalancing};
use reconcilers::config::RegionConfig;
use reconcilers::sim::SimulatedAws;
use shop_controller::controller::{
    ChallengeListenerState, ControllerConfig, challenge_listener_lease_key,
};
use shop_controller::dev::DEV_REGION;
use shop_controller::store::{Claim, Store};

use crate::controller::{spawn_controller, start};
use crate::support::{postgres_store, seeded};

const WAIT: Duration = Duration::from_secs(20);

async fn region(store: &dyn Store) -> RegionConfig {
    let config = store.get_region_config(DEV_REGION).await.expect("read");
    config.expect("the dev seed writes the region")
}

/// The port-80 listener's rule forwarding the challenge path to `responder`, once there.
async fn challenge_rule(aws: &SimulatedAws, alb: &str, responder: &str) -> Option<ListenerRule> {
    let listeners = aws.describe_listeners(alb).await.expect("listeners");
    let listener = listeners.into_iter().find(|l| l.port == PORT)?;
    assert_eq!(listener.default_action, ListenerAction::RedirectToHttps);
    let rules = aws.describe_rules(&listener.arn).await.expect("rules");
    let forward = ListenerAction::Forward {
        target_group_arn: responder.to_owned(),
    };
    rules
        .into_iter()
        .find(|r| r.action == forward && r.path_patterns == [CHALLENGE_PATH_PATTERN])
}

/// Waits for the challenge rule, other than `not`, to appear.
async fn rule_appears(aws: &SimulatedAws, config: &RegionConfig, not: Option<&str>) -> String {
    let alb = config.proxy_alb_arn().expect("one proxy ALB");
    let responder = config.acme_responder_target_group_arn.as_deref();
    let responder = responder.expect("the dev seed names a responder");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rule = challenge_rule(aws, &alb, responder).await;
        if let Some(rule) = rule.filter(|r| Some(r.arn.as_str()) != not) {
            return rule.arn;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no challenge rule on port {PORT} of {alb}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_challenge_listener_is_created_and_healed() {
    let running = start().await;
    let config = region(running.store.store.as_ref()).await;

    let rule_arn = rule_appears(&running.aws, &config, None).await;
    running
        .aws
        .delete_rule(&rule_arn)
        .await
        .expect("out of band");
    let healed = rule_appears(&running.aws, &config, Some(&rule_arn)).await;
    assert_ne!(healed, rule_arn);

    let alb = config.proxy_alb_arn().expect("alb");
    let listeners = running
        .aws
        .describe_listeners(&alb)
        .await
        .expect("listeners");
    assert_eq!(
        listeners.iter().filter(|l| l.port == PORT).count(),
        1,
        "one port-80 listener: {listeners:?}"
    );
    let states = running.controller.challenge_listener_states();
    assert_eq!(
        states.get(DEV_REGION),
        Some(&ChallengeListenerState::Converged)
    );

    // The region stops wanting it: our listener and rule go at the next pass.
    let store = running.store.store.clone();
    let without = RegionConfig {
        acme_responder_target_group_arn: None,
        ..config.clone()
    };
    store
        .put_region_config(&without, shop_controller::store::now_millis())
        .await
        .expect("unset the responder");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listeners = running
            .aws
            .describe_listeners(&alb)
            .await
            .expect("listeners");
        if listeners.iter().all(|l| l.port != PORT) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "port-80 listener stayed: {listeners:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_held_by_another_replica_is_left_alone() {
    // PostgreSQL: on SQLite, which one process uses, a starting controller ends every other
    // holder's claims as a dead predecessor's.
    let store = postgres_store().await;
    let aws = seeded(&store).await;
    let key = challenge_listener_lease_key(DEV_REGION);
    let claim = store.store.claim_lease(&key, "other-replica", 60_000).await;
    assert!(matches!(claim, Ok(Claim::Granted(_))), "{claim:?}");

    let config = ControllerConfig::new("e2e", Duration::from_millis(100));
    let (stop, loops) = spawn_controller(&store, &aws, config);
    // Several passes' worth of time: none may touch the ALB.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let region = region(store.store.as_ref()).await;
    let alb = region.proxy_alb_arn().expect("alb");
    let listeners = aws.describe_listeners(&alb).await.expect("listeners");
    assert!(
        listeners.iter().all(|l| l.port != PORT),
        "a held region got a listener: {listeners:?}"
    );
    assert_eq!(aws.call_count("elasticloadbalancing:CreateRule"), 0);
    let _ = stop.send(());
    loops.await.expect("loops stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_region_is_left_alone_until_resumed() {
    let running = start().await;
    let store = running.store.store.clone();
    let config = region(store.as_ref()).await;
    let rule_arn = rule_appears(&running.aws, &config, None).await;

    let now = shop_controller::store::now_millis();
    store
        .set_region_paused(DEV_REGION, true, "maintenance", now)
        .await
        .expect("pause");
    running
        .aws
        .delete_rule(&rule_arn)
        .await
        .expect("out of band");
    // Several passes (the resync is 0.5 s) go by without healing it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alb = config.proxy_alb_arn().expect("alb");
    let responder = config
        .acme_responder_target_group_arn
        .as_deref()
        .expect("responder");
    assert!(
        challenge_rule(&running.aws, &alb, responder)
            .await
            .is_none(),
        "a paused region's rule was healed"
    );

    let now = shop_controller::store::now_millis();
    store
        .set_region_paused(DEV_REGION, false, "", now)
        .await
        .expect("resume");
    rule_appears(&running.aws, &config, Some(&rule_arn)).await;
    running.stop().await;
}
