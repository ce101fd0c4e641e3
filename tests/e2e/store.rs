//! The store suite, run against SQLite and PostgreSQL alike.

use std::sync::Arc;

use reconcilers::Hostname;
use reconcilers::certificate::{Budget, BudgetLimit, CertificateRecord, CertificateState};
use reconcilers::patching::{
    FleetId, History, InstanceResult, InstanceState, PatchPolicy, RunState, Weekday,
};
use reconcilers::placement::Placed;
use reconcilers::spec::{BucketName, RegionName, ShopSpec, SourceVersion};
use reconcilers::status::{Health, ResourceKind, ResourceStatus, SyncState};
use shop_controller::dev::{dev_instance_group, dev_region_config};
use shop_controller::store::{
    AcmeChallenge, Census, Change, Claim, Intent, ShopQuery, Store, StoreError,
};

use crate::support::TestStore;

fn spec(shop: &str, version: &str) -> ShopSpec {
    ShopSpec {
        shop_domain: Hostname::parse(shop).expect("valid"),
        region: RegionName::parse("eu-west-1").expect("valid"),
        source_bucket: BucketName::parse("shop-sources").expect("valid"),
        source_version: SourceVersion::parse(version).expect("valid"),
        custom_domain: None,
    }
}

fn with_custom(mut spec: ShopSpec, domain: &str) -> ShopSpec {
    spec.custom_domain = Some(Hostname::parse(domain).expect("valid"));
    spec
}

async fn configured(store: &TestStore) -> Arc<dyn Store> {
    store
        .store
        .put_region_config(&dev_region_config(), 1)
        .await
        .expect("region");
    store
        .store
        .put_instance_group(&dev_instance_group(), 1)
        .await
        .expect("group");
    store.store.clone()
}

async fn generation_moves_only_when_the_spec_changes(store: TestStore) {
    let store = configured(&store).await;
    let created = store
        .deploy_shop(&spec("a.es-hs.com", "v1"), 10)
        .await
        .expect("create");
    assert_eq!((created.record.generation, created.changed), (1, true));
    assert_eq!(created.record.created_at, 10);

    let same = store
        .deploy_shop(&spec("a.es-hs.com", "v1"), 20)
        .await
        .expect("same");
    assert_eq!((same.record.generation, same.changed), (1, false));
    assert_eq!(same.record.updated_at, 10, "a no-op writes nothing");

    let newer = store
        .deploy_shop(&spec("a.es-hs.com", "v2"), 30)
        .await
        .expect("newer");
    assert_eq!((newer.record.generation, newer.changed), (2, true));
    let custom = with_custom(spec("a.es-hs.com", "v2"), "shop.merchant.example");
    assert_eq!(
        store
            .deploy_shop(&custom, 40)
            .await
            .expect("custom")
            .record
            .generation,
        3
    );
    assert_eq!(
        store
            .deploy_shop(&custom, 41)
            .await
            .expect("same custom")
            .record
            .generation,
        3
    );
    let dropped = store
        .deploy_shop(&spec("a.es-hs.com", "v2"), 50)
        .await
        .expect("drop custom");
    assert_eq!(dropped.record.generation, 4);
    assert_eq!(dropped.record.spec.custom_domain, None);

    let mut moved = spec("a.es-hs.com", "v2");
    moved.region = RegionName::parse("us-east-1").expect("valid");
    let error = store
        .deploy_shop(&moved, 60)
        .await
        .expect_err("region is fixed");
    assert!(
        matches!(error, StoreError::FailedPrecondition(_)),
        "{error:?}"
    );

    let events = store.shop_events("a.es-hs.com", 100).await.expect("events");
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["Created", "SpecChanged", "SpecChanged", "SpecChanged"]
    );
    assert_eq!(events.last().map(|e| e.generation), Some(4));
}

async fn a_custom_domain_has_one_owner(store: TestStore) {
    let store = configured(&store).await;
    let first = with_custom(spec("a.es-hs.com", "v1"), "www.merchant.example");
    store.deploy_shop(&first, 1).await.expect("first");
    let second = with_custom(spec("b.es-hs.com", "v1"), "www.merchant.example");
    let error = store.deploy_shop(&second, 2).await.expect_err("taken");
    let StoreError::Conflict(message) = error else {
        panic!("not a conflict: {error:?}")
    };
    assert_eq!(
        message,
        "custom domain www.merchant.example already belongs to shop a.es-hs.com"
    );
    assert!(store.get_shop("b.es-hs.com").await.expect("read").is_none());

    let taken_later = store
        .deploy_shop(&spec("b.es-hs.com", "v1"), 3)
        .await
        .expect("plain");
    assert_eq!(taken_later.record.generation, 1);
    let error = store
        .deploy_shop(&second, 4)
        .await
        .expect_err("still taken");
    assert!(matches!(error, StoreError::Conflict(_)));
    assert_eq!(
        store
            .get_shop("b.es-hs.com")
            .await
            .expect("read")
            .expect("exists")
            .record
            .generation,
        1
    );
}

async fn concurrent_deploys_never_lose_a_generation(store: TestStore) {
    let store = configured(&store).await;
    let writers = 16;
    let mut tasks = Vec::new();
    for i in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .deploy_shop(&spec("race.es-hs.com", &format!("v{i}")), i)
                .await
        }));
    }
    let mut generations = Vec::new();
    for task in tasks {
        let outcome = task.await.expect("join").expect("deploy");
        assert!(outcome.changed);
        generations.push(outcome.record.generation);
    }
    generations.sort_unstable();
    assert_eq!(
        generations,
        (1..=writers).collect::<Vec<_>>(),
        "every write got its own generation"
    );
    let stored = store
        .get_shop("race.es-hs.com")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(stored.record.generation, writers);
    assert_eq!(
        store
            .shop_events("race.es-hs.com", 100)
            .await
            .expect("events")
            .len() as i64,
        writers
    );
}

async fn restart_and_delete_are_recorded(store: TestStore) {
    let store = configured(&store).await;
    store
        .deploy_shop(&spec("a.es-hs.com", "v1"), 1)
        .await
        .expect("create");
    let restarted = store
        .restart_shop("a.es-hs.com", "eu-west-1", 2)
        .await
        .expect("restart");
    assert_eq!((restarted.generation, restarted.restart_generation), (1, 1));
    let missing = store
        .restart_shop("b.es-hs.com", "eu-west-1", 3)
        .await
        .expect_err("missing");
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");

    let deleted = store.delete_shop("a.es-hs.com", 4).await.expect("delete");
    assert_eq!(
        (deleted.generation, deleted.deletion_requested_at),
        (2, Some(4))
    );
    let again = store
        .delete_shop("a.es-hs.com", 5)
        .await
        .expect("idempotent");
    assert_eq!(
        (again.generation, again.deletion_requested_at),
        (2, Some(4))
    );
    let restart = store
        .restart_shop("a.es-hs.com", "eu-west-1", 6)
        .await
        .expect_err("deleting");
    assert!(matches!(restart, StoreError::FailedPrecondition(_)));
    let deploy = store
        .deploy_shop(&spec("a.es-hs.com", "v9"), 7)
        .await
        .expect_err("deleting");
    assert!(matches!(deploy, StoreError::FailedPrecondition(_)));
    assert!(matches!(
        store.delete_shop("zz.es-hs.com", 8).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn pages_filters_and_status(store: TestStore) {
    let store = configured(&store).await;
    for i in 0..5 {
        store
            .deploy_shop(&spec(&format!("s{i}.es-hs.com"), "v1"), i)
            .await
            .expect("deploy");
    }
    store
        .set_shop_ready("s1.es-hs.com", true, 1, 10)
        .await
        .expect("ready");
    store
        .set_shop_ready("s2.es-hs.com", true, 0, 10)
        .await
        .expect("ready for an old generation");
    let status = ResourceStatus {
        kind: ResourceKind::Listener,
        desired: "port 20001".to_owned(),
        observed: "none".to_owned(),
        sync: SyncState::OutOfSync,
        health: Health::Progressing,
        reason: "Creating".to_owned(),
        message: String::new(),
        observed_generation: 1,
        last_transition: 5,
        attempts: 2,
        next_attempt_at: None,
    };
    store
        .put_resource_status("s3.es-hs.com", &status)
        .await
        .expect("status");
    let artifact = ResourceStatus {
        kind: ResourceKind::Artifact,
        ..status.clone()
    };
    store
        .put_resource_status("s3.es-hs.com", &artifact)
        .await
        .expect("status");
    let updated = ResourceStatus {
        attempts: 3,
        ..status.clone()
    };
    store
        .put_resource_status("s3.es-hs.com", &updated)
        .await
        .expect("upsert");

    let first = store
        .list_shops(&ShopQuery {
            limit: 2,
            ..ShopQuery::default()
        })
        .await
        .expect("page");
    assert_eq!(first.shops.len(), 2);
    assert_eq!(first.next_after.as_deref(), Some("s1.es-hs.com"));
    let rest = ShopQuery {
        limit: 10,
        after: first.next_after.clone(),
        ..ShopQuery::default()
    };
    let rest = store.list_shops(&rest).await.expect("page");
    assert_eq!(rest.shops.len(), 3);
    assert_eq!(rest.next_after, None);

    let not_ready = ShopQuery {
        limit: 10,
        only_not_ready: true,
        ..ShopQuery::default()
    };
    let names: Vec<String> = store
        .list_shops(&not_ready)
        .await
        .expect("not ready")
        .shops
        .iter()
        .map(|s| s.record.spec.shop_domain.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "s0.es-hs.com",
            "s2.es-hs.com",
            "s3.es-hs.com",
            "s4.es-hs.com"
        ]
    );

    let view = store
        .get_shop("s3.es-hs.com")
        .await
        .expect("get")
        .expect("exists");
    let kinds: Vec<ResourceKind> = view.resources.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [ResourceKind::Artifact, ResourceKind::Listener],
        "dependency order"
    );
    assert_eq!(view.resources[1].attempts, 3);
    assert!(
        store
            .get_shop("s1.es-hs.com")
            .await
            .expect("get")
            .expect("exists")
            .ready
    );

    let other_region = ShopQuery {
        limit: 10,
        region: Some("us-east-1".to_owned()),
        ..ShopQuery::default()
    };
    assert!(
        store
            .list_shops(&other_region)
            .await
            .expect("list")
            .shops
            .is_empty()
    );
}

async fn configuration_in_use_cannot_be_deleted(store: TestStore) {
    let store = configured(&store).await;
    let error = store
        .delete_region_config("eu-west-1")
        .await
        .expect_err("group uses it");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    assert!(
        store
            .delete_instance_group("shops-a")
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_instance_group("shops-a")
            .await
            .expect("already gone")
    );
    store
        .deploy_shop(&spec("a.es-hs.com", "v1"), 1)
        .await
        .expect("deploy");
    let error = store
        .delete_region_config("eu-west-1")
        .await
        .expect_err("shop uses it");
    assert!(matches!(error, StoreError::Conflict(_)));

    let groups = store
        .list_instance_groups(Some("eu-west-1"))
        .await
        .expect("list");
    assert!(groups.is_empty());
    let mut config = dev_region_config();
    config.enabled = false;
    let responder = "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/acme/73e2";
    config.acme_responder_target_group_arn = Some(responder.to_owned());
    let stored = store.put_region_config(&config, 99).await.expect("replace");
    assert_eq!((stored.enabled, stored.updated_at), (false, 99));
    assert_eq!(
        stored.acme_responder_target_group_arn.as_deref(),
        Some(responder)
    );
    assert_eq!(
        store.list_region_configs().await.expect("list"),
        vec![stored]
    );
}

async fn changes_are_announced(store: TestStore) {
    let store = configured(&store).await;
    let mut changes = store.subscribe();
    store
        .deploy_shop(&spec("a.es-hs.com", "v1"), 1)
        .await
        .expect("deploy");
    store
        .deploy_shop(&spec("a.es-hs.com", "v1"), 2)
        .await
        .expect("no-op");
    store
        .restart_shop("a.es-hs.com", "eu-west-1", 3)
        .await
        .expect("restart");
    assert_eq!(changes.recv().await.expect("change").shop(), "a.es-hs.com");
    assert_eq!(changes.recv().await.expect("change").shop(), "a.es-hs.com");
    assert!(
        changes.try_recv().is_err(),
        "the no-op deploy announced nothing"
    );
}

async fn placements_never_share_a_port(store: TestStore) {
    let store = configured(&store).await;
    for shop in ["a", "b", "c", "d"] {
        store
            .deploy_shop(&spec(&format!("{shop}.es-hs.com"), "v1"), 1)
            .await
            .expect("deploy");
    }
    let nlb = dev_instance_group().nlb_arns[0].clone();
    let first = Placed {
        instance_group: "shops-a".to_owned(),
        nlb_arn: nlb.clone(),
        port: 20000,
    };
    assert_eq!(
        store
            .place_shop("a.es-hs.com", &first, 1)
            .await
            .expect("place"),
        first
    );
    let elsewhere = Placed {
        port: 20001,
        ..first.clone()
    };
    let again = store
        .place_shop("a.es-hs.com", &elsewhere, 2)
        .await
        .expect("stable");
    assert_eq!(again, first, "a placed shop keeps its placement");

    let same_port = store
        .place_shop("b.es-hs.com", &first, 3)
        .await
        .expect_err("taken");
    assert!(
        matches!(same_port, StoreError::Conflict(_)),
        "{same_port:?}"
    );
    let mut other_group = dev_instance_group();
    other_group.name = "shops-b".to_owned();
    store
        .put_instance_group(&other_group, 4)
        .await
        .expect("second group on the same nlb");
    let via_other_group = Placed {
        instance_group: "shops-b".to_owned(),
        ..first.clone()
    };
    let error = store
        .place_shop("b.es-hs.com", &via_other_group, 5)
        .await
        .expect_err("nlb port");
    assert!(matches!(error, StoreError::Conflict(_)));
    let via_other_nlb = Placed {
        nlb_arn: format!("{nlb}-2"),
        ..first.clone()
    };
    let error = store
        .place_shop("b.es-hs.com", &via_other_nlb, 6)
        .await
        .expect_err("group port");
    assert!(matches!(error, StoreError::Conflict(_)));

    let racers: Vec<_> = ["b", "c"]
        .into_iter()
        .map(|shop| {
            let store = store.clone();
            let wanted = Placed {
                port: 20005,
                ..first.clone()
            };
            tokio::spawn(async move {
                store
                    .place_shop(&format!("{shop}.es-hs.com"), &wanted, 7)
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        if racer.await.expect("join").is_ok() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "two writers got one port");

    assert_eq!(
        store
            .region_placements("eu-west-1")
            .await
            .expect("list")
            .len(),
        2
    );
    let in_use = store
        .delete_instance_group("shops-a")
        .await
        .expect_err("runs shops");
    assert!(matches!(in_use, StoreError::Conflict(_)));
    assert!(
        store
            .release_placement("a.es-hs.com")
            .await
            .expect("release")
    );
    assert!(
        !store
            .release_placement("a.es-hs.com")
            .await
            .expect("already free")
    );
    let freed = store
        .place_shop("d.es-hs.com", &first, 8)
        .await
        .expect("released port");
    assert_eq!(freed, first);
}

async fn only_a_shop_marked_for_deletion_is_removed(store: TestStore) {
    let store = configured(&store).await;
    store
        .deploy_shop(&spec("a.es-hs.com", "v1"), 1)
        .await
        .expect("deploy");
    let nlb = dev_instance_group().nlb_arns[0].clone();
    let placed = Placed {
        instance_group: "shops-a".to_owned(),
        nlb_arn: nlb,
        port: 20000,
    };
    store
        .place_shop("a.es-hs.com", &placed, 2)
        .await
        .expect("place");
    let status = ResourceStatus {
        kind: ResourceKind::Listener,
        desired: String::new(),
        observed: String::new(),
        sync: SyncState::Synced,
        health: Health::Healthy,
        reason: String::new(),
        message: String::new(),
        observed_generation: 1,
        last_transition: 3,
        attempts: 0,
        next_attempt_at: None,
    };
    store
        .put_resource_status("a.es-hs.com", &status)
        .await
        .expect("status");

    assert!(
        !store
            .remove_shop("a.es-hs.com", 4)
            .await
            .expect("not deleting")
    );
    assert!(store.get_shop("a.es-hs.com").await.expect("read").is_some());
    store.delete_shop("a.es-hs.com", 5).await.expect("mark");
    assert!(store.remove_shop("a.es-hs.com", 6).await.expect("remove"));
    assert!(store.get_shop("a.es-hs.com").await.expect("read").is_none());
    assert!(
        store
            .region_placements("eu-west-1")
            .await
            .expect("list")
            .is_empty()
    );
    let events = store
        .shop_events("a.es-hs.com", 10)
        .await
        .expect("history stays");
    assert_eq!(events.last().map(|e| e.reason.as_str()), Some("Removed"));
    assert!(
        !store
            .remove_shop("a.es-hs.com", 7)
            .await
            .expect("already gone")
    );
    let again = store
        .deploy_shop(&spec("a.es-hs.com", "v2"), 8)
        .await
        .expect("deploy again");
    assert_eq!(again.record.generation, 1, "a new shop starts over");
}

/// Leases: one holder at a time, renewals keep the epoch, a lapsed or taken-over claim fails
/// the fencing check, and concurrent claimants never both win.
async fn leases_admit_one_holder_and_fence_the_stale_one(store: TestStore) {
    let store = store.store;
    let Claim::Granted(first) = store
        .claim_lease("a.es-hs.com", "replica-a", 60_000)
        .await
        .expect("claim")
    else {
        panic!("a free shop is granted");
    };
    match store
        .claim_lease("a.es-hs.com", "replica-b", 60_000)
        .await
        .expect("claim")
    {
        Claim::Held {
            holder,
            remaining_ms,
        } => {
            assert_eq!(holder, "replica-a");
            assert!(
                remaining_ms > 50_000 && remaining_ms <= 60_000,
                "{remaining_ms}"
            );
        }
        granted => panic!("a held shop is not granted to another: {granted:?}"),
    }
    let Claim::Granted(renewed) = store
        .claim_lease("a.es-hs.com", "replica-a", 60_000)
        .await
        .expect("renew")
    else {
        panic!("the holder renews");
    };
    assert_eq!(renewed.epoch, first.epoch, "a renewal keeps the epoch");
    assert!(store.extend_lease(&first, 60_000).await.expect("fence"));

    // The claim lapses (a short lease, by the database clock) and another replica takes it.
    let Claim::Granted(short) = store
        .claim_lease("b.es-hs.com", "replica-a", 200)
        .await
        .expect("claim")
    else {
        panic!("granted");
    };
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let Claim::Granted(taken) = store
        .claim_lease("b.es-hs.com", "replica-b", 60_000)
        .await
        .expect("take over")
    else {
        panic!("a lapsed claim is taken over");
    };
    assert!(taken.epoch > short.epoch, "a new holder moves the epoch");
    assert!(
        !store.extend_lease(&short, 60_000).await.expect("fence"),
        "the stale holder is fenced off"
    );
    assert!(store.extend_lease(&taken, 60_000).await.expect("fence"));

    // A released claim is free at once; the stale lease cannot release the new one.
    store.release_lease(&short).await.expect("stale release");
    assert!(
        store
            .extend_lease(&taken, 60_000)
            .await
            .expect("still held")
    );
    store.release_lease(&taken).await.expect("release");
    assert!(matches!(
        store
            .claim_lease("b.es-hs.com", "replica-a", 60_000)
            .await
            .expect("claim"),
        Claim::Granted(_)
    ));

    // Many claimants at once: exactly one wins.
    let mut claims = Vec::new();
    for replica in 0..8 {
        let store = store.clone();
        claims.push(tokio::spawn(async move {
            store
                .claim_lease("c.es-hs.com", &format!("replica-{replica}"), 60_000)
                .await
                .expect("claim")
        }));
    }
    let mut granted = 0;
    for claim in claims {
        granted += usize::from(matches!(claim.await.expect("join"), Claim::Granted(_)));
    }
    assert_eq!(granted, 1, "one claimant wins");
}

/// Heartbeats: each replica is counted once while it keeps writing; a silent one is forgotten
/// after the lease time of the replica asking, a stopped one at once, and one last heard of
/// before the asker's first heartbeat (a crashed predecessor) is not counted by it. The shops
/// counted are those a reconcile would claim (not paused by themselves or their region).
async fn heartbeats_count_live_replicas_and_the_shops_they_share(store: TestStore) {
    let store = configured(&store).await;
    let census = |live_replicas, shops| Census {
        live_replicas,
        shops,
    };
    let beat = async |holder: &str, ttl_ms| store.heartbeat(holder, ttl_ms).await.expect("beat");
    let pause = std::time::Duration::from_millis(20);
    assert_eq!(beat("crashed", 60_000).await, census(1, 0));
    tokio::time::sleep(pause).await;
    assert_eq!(
        beat("replica-a", 60_000).await,
        census(1, 0),
        "not its predecessor"
    );
    assert_eq!(
        beat("replica-a", 60_000).await,
        census(1, 0),
        "counted once"
    );
    tokio::time::sleep(pause).await;
    assert_eq!(
        beat("replica-b", 60_000).await,
        census(1, 0),
        "a's last is before b's first"
    );
    assert_eq!(beat("replica-a", 60_000).await, census(2, 0));

    for shop in ["a.es-hs.com", "b.es-hs.com", "c.es-hs.com"] {
        store
            .deploy_shop(&spec(shop, "v1"), 10)
            .await
            .expect("deploy");
    }
    assert_eq!(beat("replica-b", 60_000).await, census(2, 3));
    store
        .set_shop_paused("a.es-hs.com", true, "maintenance", 20)
        .await
        .expect("pause shop");
    assert_eq!(beat("replica-a", 60_000).await, census(2, 2));
    store
        .set_region_paused("eu-west-1", true, "incident", 30)
        .await
        .expect("pause region");
    assert_eq!(beat("replica-a", 60_000).await, census(2, 0));
    store
        .set_region_paused("eu-west-1", false, "", 40)
        .await
        .expect("resume region");

    // Silent for longer than the asker's lease time (by the database clock): not counted, and
    // counted again once it writes. Back, it counts the others from their next heartbeat.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        beat("replica-b", 200).await,
        census(1, 2),
        "replica-a went silent"
    );
    tokio::time::sleep(pause).await;
    assert_eq!(
        beat("replica-a", 60_000).await,
        census(1, 2),
        "back, b not heard since"
    );
    assert_eq!(
        beat("replica-b", 60_000).await,
        census(2, 2),
        "replica-a is back"
    );
    assert_eq!(beat("replica-a", 60_000).await, census(2, 2));

    // A replica that stops removes its heartbeat; removing it twice is fine.
    store.remove_replica("replica-b").await.expect("remove");
    store
        .remove_replica("replica-b")
        .await
        .expect("remove again");
    assert_eq!(beat("replica-a", 60_000).await, census(1, 2));
}

/// Intents: recorded before the call, rewritten in place, queued per scope oldest first, and
/// gone with the shop.
async fn intents_keep_their_place_in_the_queue(store: TestStore) {
    let store = configured(&store).await;
    let intent = |shop: &str, desired: &str| Intent {
        shop: shop.to_owned(),
        kind: ResourceKind::Deployment,
        scope: "group-a".to_owned(),
        desired: desired.to_owned(),
        external_id: None,
        created_at: 0,
        updated_at: 0,
    };
    store
        .record_intent(&intent("a.es-hs.com", "v1"), 10)
        .await
        .expect("a");
    store
        .record_intent(&intent("b.es-hs.com", "v1"), 20)
        .await
        .expect("b");
    let other_scope = Intent {
        scope: "group-b".to_owned(),
        ..intent("c.es-hs.com", "v1")
    };
    store.record_intent(&other_scope, 5).await.expect("c");

    // A newer spec and the cloud's id rewrite the intent without moving it back.
    let rewritten = store
        .record_intent(
            &Intent {
                external_id: Some("d-1".to_owned()),
                ..intent("a.es-hs.com", "v2")
            },
            30,
        )
        .await
        .expect("rewrite");
    assert_eq!(
        (rewritten.created_at, rewritten.updated_at),
        (10, 30),
        "the place in the queue is kept"
    );
    let queue = store
        .intent_queue(ResourceKind::Deployment, "group-a", 10)
        .await
        .expect("queue");
    let order: Vec<(&str, &str, Option<&str>)> = queue
        .iter()
        .map(|i| {
            (
                i.shop.as_str(),
                i.desired.as_str(),
                i.external_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("a.es-hs.com", "v2", Some("d-1")),
            ("b.es-hs.com", "v1", None)
        ]
    );

    store
        .clear_intent("a.es-hs.com", ResourceKind::Deployment)
        .await
        .expect("clear");
    assert_eq!(
        store
            .intent("a.es-hs.com", ResourceKind::Deployment)
            .await
            .expect("read"),
        None
    );
    let head = store
        .intent_queue(ResourceKind::Deployment, "group-a", 1)
        .await
        .expect("queue");
    assert_eq!(head.first().map(|i| i.shop.as_str()), Some("b.es-hs.com"));

    // Removing a shop removes its intents and lease.
    store
        .deploy_shop(&spec("b.es-hs.com", "v1"), 40)
        .await
        .expect("deploy");
    store.delete_shop("b.es-hs.com", 41).await.expect("delete");
    assert!(store.remove_shop("b.es-hs.com", 42).await.expect("remove"));
    assert_eq!(
        store
            .intent("b.es-hs.com", ResourceKind::Deployment)
            .await
            .expect("read"),
        None
    );
}

async fn certificate_rows_round_trip(store: TestStore) {
    let store = store.store.clone();
    let domain = Hostname::parse("shop.example.com").expect("valid");
    assert_eq!(
        store.certificate("shop.example.com").await.expect("read"),
        None
    );
    let mut record = CertificateRecord::new(domain, "a.es-hs.com", 5);
    store.put_certificate(&record).await.expect("insert");
    assert_eq!(
        store.certificate("shop.example.com").await.expect("read"),
        Some(record.clone())
    );

    record.state = CertificateState::Ready;
    record.order_url = Some("https://ca/order/1".to_owned());
    record.acm_arn = Some("arn:aws:acm:eu-west-1:1:certificate/x".to_owned());
    record.listener_arn = Some("arn:listener".to_owned());
    record.not_before = Some(100);
    record.not_after = Some(200);
    record.failures = 3;
    record.last_error = Some("challenge rejected".to_owned());
    record.next_attempt_at = Some(300);
    record.wait_reason = Some(reconcilers::certificate::WaitReason::ChallengeRejected);
    record.renewal_info_id = Some("aki.serial".to_owned());
    record.renew_after = Some(150);
    record.renewal_info_next_check = Some(160);
    record.updated_at = 9;
    store.put_certificate(&record).await.expect("replace");
    let other = CertificateRecord::new(
        Hostname::parse("old.example.com").expect("valid"),
        "a.es-hs.com",
        1,
    );
    store.put_certificate(&other).await.expect("insert other");
    let elsewhere = CertificateRecord::new(
        Hostname::parse("b.example.com").expect("valid"),
        "b.es-hs.com",
        1,
    );
    store
        .put_certificate(&elsewhere)
        .await
        .expect("insert elsewhere");

    let of_shop = store.shop_certificates("a.es-hs.com").await.expect("list");
    assert_eq!(of_shop, vec![other.clone(), record.clone()]);
    assert_eq!(store.list_certificates().await.expect("all").len(), 3);
    assert!(
        store
            .delete_certificate("old.example.com")
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_certificate("old.example.com")
            .await
            .expect("again")
    );
    assert_eq!(
        store.shop_certificates("a.es-hs.com").await.expect("list"),
        vec![record]
    );
}

async fn budgets_admit_no_more_than_their_limit(store: TestStore) {
    let store = store.store.clone();
    let limit = BudgetLimit {
        limit: 3,
        window: std::time::Duration::from_millis(1_000),
    };
    // Eight writers race for three slots: exactly three win, whatever the interleaving.
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        racers.spawn(async move {
            store
                .take_budget(Budget::NewOrders, "account", limit, 10_000)
                .await
                .expect("take")
        });
    }
    let mut granted = 0;
    while let Some(verdict) = racers.join_next().await {
        match verdict.expect("joined") {
            Ok(()) => granted += 1,
            Err(exhausted) => {
                assert_eq!((exhausted.used, exhausted.limit), (3, 3));
                assert_eq!(
                    exhausted.free_at, 11_000,
                    "the oldest event leaves at 10 s + 1 s"
                );
            }
        }
    }
    assert_eq!(granted, 3);
    // Other subjects and budgets count apart; the window slides.
    let other = store
        .take_budget(Budget::NewOrders, "other-account", limit, 10_000)
        .await
        .expect("take");
    assert_eq!(other, Ok(()));
    let later = store
        .take_budget(Budget::NewOrders, "account", limit, 11_001)
        .await
        .expect("take");
    assert_eq!(later, Ok(()), "the events of 10 s left the window");

    for at in [1, 2] {
        store
            .record_budget_event(Budget::FailedValidations, "x.example.com", at)
            .await
            .expect("record");
    }
    let two = BudgetLimit {
        limit: 2,
        window: std::time::Duration::from_millis(100),
    };
    let checked = store
        .check_budget(Budget::FailedValidations, "x.example.com", two, 50)
        .await
        .expect("check");
    assert_eq!(checked.map_err(|e| e.free_at), Err(101));
    let checked = store
        .check_budget(Budget::FailedValidations, "x.example.com", two, 102)
        .await
        .expect("check");
    assert_eq!(checked, Ok(()));
}

/// Patch policies and runs: a policy is replaced in place, one run of a fleet is in progress at
/// a time, results are kept per instance in the run's order, and the status names the newest
/// run and the newest success.
async fn patch_runs_keep_one_in_progress_and_their_results(store: TestStore) {
    let store = store.store;
    let fleet = FleetId::parse("group/shops-a").expect("valid");
    let mut policy = PatchPolicy {
        fleet: fleet.clone(),
        region: RegionName::parse("eu-west-1").expect("valid"),
        enabled: true,
        interval_days: 7,
        window_start_hour: 22,
        window_end_hour: 4,
        weekdays: vec![Weekday::Sat, Weekday::Sun],
        script: "apt-get -y upgrade".to_owned(),
        command_timeout_seconds: 1800,
        updated_at: 1,
    };
    assert_eq!(
        store.put_patch_policy(&policy, 1).await.expect("put"),
        policy
    );
    policy.interval_days = 1;
    policy.weekdays.clear();
    policy.updated_at = 2;
    assert_eq!(
        store.put_patch_policy(&policy, 2).await.expect("replace"),
        policy
    );
    let other = PatchPolicy {
        fleet: FleetId::parse("proxy/us-east-1").expect("valid"),
        region: RegionName::parse("us-east-1").expect("valid"),
        ..policy.clone()
    };
    store.put_patch_policy(&other, 3).await.expect("put other");

    let status = store.patch_status(Some("eu-west-1")).await.expect("status");
    assert_eq!(status.len(), 1, "one region's policies");
    assert_eq!(
        (status[0].last_run.clone(), status[0].history()),
        (None, Default::default())
    );

    let instances = vec!["i-b".to_owned(), "i-a".to_owned()];
    let run = store
        .start_patch_run(&fleet, &instances, None, 100)
        .await
        .expect("start");
    assert_eq!(
        (run.state, run.instances.clone()),
        (RunState::Running, instances.clone())
    );
    assert!(
        matches!(
            store.start_patch_run(&fleet, &instances, None, 101).await,
            Err(StoreError::Conflict(_))
        ),
        "a second run while one is in progress"
    );
    let result = |id: &str, state| InstanceResult {
        instance_id: id.to_owned(),
        state,
        started_at: 110,
        finished_at: None,
        output: "command c-1".to_owned(),
    };
    store
        .record_patch_result(run.id, &result("i-a", InstanceState::Patching))
        .await
        .expect("a");
    store
        .record_patch_result(run.id, &result("i-b", InstanceState::Patching))
        .await
        .expect("b");
    let mut done = result("i-b", InstanceState::Succeeded);
    done.finished_at = Some(120);
    done.output = "upgraded".to_owned();
    store
        .record_patch_result(run.id, &done)
        .await
        .expect("b done");
    let status = store.patch_status(None).await.expect("status");
    let running = status[0].running().expect("in progress");
    assert_eq!(
        running.results,
        vec![done.clone(), result("i-a", InstanceState::Patching)],
        "results in the run's order, rewritten in place"
    );

    assert!(
        store
            .finish_patch_run(run.id, RunState::Succeeded, "ok", 130)
            .await
            .expect("finish")
    );
    assert!(
        !store
            .finish_patch_run(run.id, RunState::Failed, "late", 131)
            .await
            .expect("again"),
        "a finished run stays finished"
    );
    let refused = store
        .start_patch_run(&fleet, &[], Some("only 1 running instance(s)"), 200)
        .await
        .expect("refused");
    assert_eq!(
        (refused.state, refused.finished_at),
        (RunState::Refused, Some(200))
    );

    let status = store.patch_status(Some("eu-west-1")).await.expect("status");
    let fleet_status = &status[0];
    assert_eq!(
        fleet_status.last_run.as_ref().map(|r| r.id),
        Some(refused.id)
    );
    let success = fleet_status.last_success.as_ref().expect("a success");
    assert_eq!(
        (success.id, success.finished_at, success.message.as_str()),
        (run.id, Some(130), "ok")
    );
    assert_eq!(
        fleet_status.history(),
        History {
            last_attempt: Some(200),
            last_success: Some(100)
        }
    );
    let runs = store.patch_runs(&fleet, 10).await.expect("runs");
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![refused.id, run.id]
    );
    assert_eq!(runs[1].results.len(), 2);

    // A run in progress when its policy goes is stopped with it.
    let in_progress = store
        .start_patch_run(&fleet, &["i-1".to_owned()], None, 300)
        .await
        .expect("start");
    assert!(store.delete_patch_policy(&fleet).await.expect("delete"));
    assert!(!store.delete_patch_policy(&fleet).await.expect("again"));
    let runs = store.patch_runs(&fleet, 10).await.expect("kept");
    assert_eq!(runs.len(), 3, "history stays");
    let stopped = runs.iter().find(|r| r.id == in_progress.id).expect("run");
    assert_eq!(stopped.state, RunState::Stopped);
    assert!(stopped.finished_at.is_some());
    assert!(
        stopped.message.contains("policy was deleted"),
        "{}",
        stopped.message
    );
}

async fn one_acme_account_per_directory(store: TestStore) {
    let store = store.store;
    let directory = "https://acme.test/dir";
    assert_eq!(store.acme_account(directory).await.expect("read"), None);

    let (first, second) = tokio::join!(
        store.put_acme_account(directory, "sealed-a", 1),
        store.put_acme_account(directory, "sealed-b", 2),
    );
    let (first, second) = (first.expect("first"), second.expect("second"));
    assert_eq!(first, second, "both replicas use one account");
    assert!(first == "sealed-a" || first == "sealed-b");
    assert_eq!(
        store.acme_account(directory).await.expect("read"),
        Some(first.clone())
    );

    let other = store
        .put_acme_account("https://other.test/dir", "sealed-c", 3)
        .await
        .expect("other directory");
    assert_eq!(other, "sealed-c");
    let again = store
        .put_acme_account(directory, "sealed-d", 4)
        .await
        .expect("again");
    assert_eq!(again, first, "a stored account is never replaced");
}

fn challenge(token: &str, domain: &str, expires_at: i64) -> AcmeChallenge {
    AcmeChallenge {
        token: token.to_owned(),
        domain: domain.to_owned(),
        key_authorization: format!("{token}.thumbprint"),
        expires_at,
    }
}

async fn challenges_are_answered_until_they_expire_or_are_removed(store: TestStore) {
    let store = store.store;
    for c in [
        challenge("t1", "shop.example.com", 100),
        challenge("t2", "shop.example.com", 200),
        challenge("t3", "other.example.com", 200),
    ] {
        store.put_challenge(&c).await.expect("put");
    }
    let answer = |token: &'static str, now| {
        let store = store.clone();
        async move { store.challenge_response(token, now).await.expect("read") }
    };
    assert_eq!(answer("t1", 99).await.as_deref(), Some("t1.thumbprint"));
    assert_eq!(answer("t1", 100).await, None, "expired at its instant");
    assert_eq!(answer("nope", 0).await, None);

    let mut renewed = challenge("t1", "shop.example.com", 300);
    renewed.key_authorization = "t1.new".to_owned();
    store.put_challenge(&renewed).await.expect("replace");
    assert_eq!(answer("t1", 250).await.as_deref(), Some("t1.new"));

    assert_eq!(store.purge_expired_challenges(200).await.expect("purge"), 2);
    assert_eq!(answer("t3", 0).await, None, "purged");
    assert_eq!(answer("t1", 250).await.as_deref(), Some("t1.new"));

    store
        .put_challenge(&challenge("t4", "other.example.com", 500))
        .await
        .expect("put");
    assert_eq!(
        store
            .remove_challenges("shop.example.com")
            .await
            .expect("remove"),
        1
    );
    assert_eq!(answer("t1", 250).await, None);
    assert_eq!(answer("t4", 250).await.as_deref(), Some("t4.thumbprint"));
}

macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(crate::support::sqlite_store().await).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(crate::support::postgres_store().await).await;
                }
            )*
        }
    };
}

store_suite!(
    generation_moves_only_when_the_spec_changes,
    a_custom_domain_has_one_owner,
    concurrent_deploys_never_lose_a_generation,
    restart_and_delete_are_recorded,
    pages_filters_and_status,
    configuration_in_use_cannot_be_deleted,
    changes_are_announced,
    placements_never_share_a_port,
    only_a_shop_marked_for_deletion_is_removed,
    leases_admit_one_holder_and_fence_the_stale_one,
    heartbeats_count_live_replicas_and_the_shops_they_share,
    intents_keep_their_place_in_the_queue,
    certificate_rows_round_trip,
    budgets_admit_no_more_than_their_limit,
    one_acme_account_per_directory,
    challenges_are_answered_until_they_expire_or_are_removed,
    patch_runs_keep_one_in_progress_and_their_results,
);

#[tokio::test]
async fn a_committed_spec_survives_reopening_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite:{}", dir.path().join("shops.db").display());
    {
        let store = shop_controller::store::SqliteStore::open(&url)
            .await
            .expect("open");
        store
            .put_region_config(&dev_region_config(), 1)
            .await
            .expect("region");
        store
            .deploy_shop(&spec("a.es-hs.com", "v1"), 1)
            .await
            .expect("deploy");
    }
    let reopened = shop_controller::store::SqliteStore::open(&url)
        .await
        .expect("reopen");
    let view = reopened
        .get_shop("a.es-hs.com")
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(view.record.spec.source_version.as_str(), "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_wakes_the_others() {
    let url = crate::support::fresh_postgres_database().await;
    let first = shop_controller::store::PostgresStore::connect(&url)
        .await
        .expect("first replica");
    let second = shop_controller::store::PostgresStore::connect(&url)
        .await
        .expect("second replica");
    let mut on_first = first.subscribe();
    let mut on_second = second.subscribe();

    first
        .put_region_config(&dev_region_config(), 1)
        .await
        .expect("region");
    first
        .deploy_shop(&spec("a.es-hs.com", "v1"), 1)
        .await
        .expect("deploy");

    let wait = std::time::Duration::from_secs(5);
    let seen = tokio::time::timeout(wait, on_second.recv())
        .await
        .expect("in time");
    assert_eq!(
        seen.expect("change"),
        Change::Spec("a.es-hs.com".to_owned())
    );
    let own = tokio::time::timeout(wait, on_first.recv())
        .await
        .expect("in time");
    assert_eq!(own.expect("change"), Change::Spec("a.es-hs.com".to_owned()));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        on_first.try_recv().is_err(),
        "the writer heard its change twice"
    );
}

/// A controller restarted after a crash is a new lease holder. On SQLite, which one process
/// uses, it ends its predecessor's claims at once instead of waiting a lease time for each;
/// on PostgreSQL the other holders may be live replicas, and their claims stand.
mod predecessors_leases {
    use shop_controller::store::{Claim, Store};

    async fn claim(store: &dyn Store, holder: &str) -> Claim {
        store
            .claim_lease("a.es-hs.com", holder, 60_000)
            .await
            .expect("claim")
    }

    #[tokio::test]
    async fn on_sqlite_a_restarted_process_takes_over_at_once() {
        let test = crate::support::sqlite_store().await;
        let store = test.store.as_ref();
        assert!(matches!(claim(store, "crashed").await, Claim::Granted(_)));
        assert!(matches!(
            claim(store, "restarted").await,
            Claim::Held { .. }
        ));

        let lapsed = store
            .lapse_predecessors_leases("restarted")
            .await
            .expect("lapse");
        assert_eq!(lapsed, 1);
        let Claim::Granted(lease) = claim(store, "restarted").await else {
            panic!("the predecessor's claim still holds");
        };
        assert_eq!(lease.epoch, 2, "a claim changing hands moves the epoch");
        let again = store.lapse_predecessors_leases("restarted").await;
        assert_eq!(again.expect("lapse"), 0, "its own claims are kept");
        assert!(store.extend_lease(&lease, 60_000).await.expect("fence"));
    }

    #[tokio::test]
    async fn on_postgres_other_holders_keep_their_claims() {
        let test = crate::support::postgres_store().await;
        let store = test.store.as_ref();
        assert!(matches!(claim(store, "replica-a").await, Claim::Granted(_)));
        let lapsed = store
            .lapse_predecessors_leases("replica-b")
            .await
            .expect("lapse");
        assert_eq!(lapsed, 0);
        assert!(matches!(
            claim(store, "replica-b").await,
            Claim::Held { .. }
        ));
    }
}
