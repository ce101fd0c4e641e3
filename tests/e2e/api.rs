//! The shop API end to end over a seeded SQLite store and simulated AWS.

use std::time::Duration;

use reconcilers::status as domain;
use shop_controller::grpc::proto::*;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::support::dev_server;

use crate::support::deploy_request as deploy;

#[tokio::test]
async fn deploy_pins_the_newest_source_version_and_get_shows_it() {
    let (server, aws, _store) = dev_server().await;
    let newest = aws.put_object(
        "shop-sources",
        "example.es-hs.com.zip",
        shop_controller::dev::sample_shop_zip(),
    );
    let mut shops = server.shops().await;

    let response = shops
        .deploy_shop(deploy("example.es-hs.com"))
        .await
        .expect("deploy")
        .into_inner();
    assert_eq!(response.generation, 1);
    assert!(response.changed);
    assert_eq!(response.resolved_source_version, newest);

    let shop = shops
        .get_shop(GetShopRequest {
            shop_domain: "example.es-hs.com".to_owned(),
        })
        .await
        .expect("get")
        .into_inner();
    let spec = shop.spec.expect("spec");
    assert_eq!(spec.source_version, newest);
    assert_eq!(spec.generation, 1);
    assert_eq!(spec.region, "eu-west-1");
    let status = shop.status.expect("status");
    let blocker = status.blocked_by.expect("nothing reconciled yet");
    assert_eq!(
        blocker.kind,
        ResourceKind::Artifact as i32,
        "artifact is the first kind"
    );
    assert_eq!(blocker.reason, "NotObserved");
}

#[tokio::test]
async fn identical_deploy_keeps_the_generation_and_a_change_bumps_it() {
    let (server, aws, _store) = dev_server().await;
    let mut shops = server.shops().await;
    let first = shops
        .deploy_shop(deploy("example.es-hs.com"))
        .await
        .expect("deploy")
        .into_inner();

    let mut pinned = deploy("example.es-hs.com");
    pinned.source_version = Some(first.resolved_source_version.clone());
    let again = shops
        .deploy_shop(pinned)
        .await
        .expect("deploy")
        .into_inner();
    assert_eq!((again.generation, again.changed), (1, false));

    let newer = aws.put_object(
        "shop-sources",
        "example.es-hs.com.zip",
        shop_controller::dev::sample_shop_zip(),
    );
    let changed = shops
        .deploy_shop(deploy("example.es-hs.com"))
        .await
        .expect("deploy")
        .into_inner();
    assert_eq!((changed.generation, changed.changed), (2, true));
    assert_eq!(changed.resolved_source_version, newer);

    let mut custom = deploy("example.es-hs.com");
    custom.custom_domain = Some("shop.merchant.example".to_owned());
    let with_domain = shops
        .deploy_shop(custom)
        .await
        .expect("deploy")
        .into_inner();
    assert_eq!(with_domain.generation, 3);
}

#[tokio::test]
async fn a_custom_domain_belongs_to_one_shop() {
    let (server, _aws, store) = dev_server().await;
    let mut shops = server.shops().await;
    let mut first = deploy("example.es-hs.com");
    first.custom_domain = Some("www.merchant.example".to_owned());
    shops.deploy_shop(first).await.expect("first owner");

    let mut second = deploy("demo.es-hs.com");
    second.custom_domain = Some("WWW.Merchant.example".to_owned());
    let error = shops.deploy_shop(second).await.expect_err("taken");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(
        error.message(),
        "custom domain www.merchant.example already belongs to shop example.es-hs.com"
    );
    assert!(
        store
            .store
            .get_shop("demo.es-hs.com")
            .await
            .expect("read")
            .is_none()
    );
}

#[tokio::test]
async fn restart_and_delete_record_intent() {
    let (server, _aws, store) = dev_server().await;
    let mut shops = server.shops().await;
    shops
        .deploy_shop(deploy("example.es-hs.com"))
        .await
        .expect("deploy");

    let restart = RestartShopRequest {
        shop_domain: "example.es-hs.com".to_owned(),
        region: "eu-west-1".to_owned(),
    };
    let restarted = shops
        .restart_shop(restart.clone())
        .await
        .expect("restart")
        .into_inner();
    assert_eq!((restarted.generation, restarted.restart_generation), (1, 1));
    let again = shops
        .restart_shop(restart)
        .await
        .expect("restart")
        .into_inner();
    assert_eq!(again.restart_generation, 2);

    let wrong_region = RestartShopRequest {
        shop_domain: "example.es-hs.com".to_owned(),
        region: "us-east-1".to_owned(),
    };
    let error = shops
        .restart_shop(wrong_region)
        .await
        .expect_err("other region");
    assert_eq!(error.code(), Code::FailedPrecondition);
    let unknown = RestartShopRequest {
        shop_domain: "nope.es-hs.com".to_owned(),
        region: "eu-west-1".to_owned(),
    };
    assert_eq!(
        shops
            .restart_shop(unknown)
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );

    let delete = DeleteShopRequest {
        shop_domain: "example.es-hs.com".to_owned(),
    };
    let deleted = shops
        .delete_shop(delete.clone())
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.generation, 2);
    let twice = shops
        .delete_shop(delete)
        .await
        .expect("idempotent")
        .into_inner();
    assert_eq!(twice.generation, 2);

    let error = shops
        .deploy_shop(deploy("example.es-hs.com"))
        .await
        .expect_err("being deleted");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(
        error.message().contains("being deleted"),
        "{}",
        error.message()
    );

    let events = store
        .store
        .shop_events("example.es-hs.com", 10)
        .await
        .expect("events");
    let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "Created",
            "RestartRequested",
            "RestartRequested",
            "DeletionRequested"
        ]
    );
}

#[tokio::test]
async fn list_pages_through_every_shop_and_filters() {
    let (server, aws, store) = dev_server().await;
    let mut shops = server.shops().await;
    let names: Vec<String> = (0..7).map(|i| format!("shop-{i}.es-hs.com")).collect();
    for name in &names {
        aws.put_object(
            "shop-sources",
            &format!("{name}.zip"),
            shop_controller::dev::sample_shop_zip(),
        );
        shops.deploy_shop(deploy(name)).await.expect("deploy");
    }
    store
        .store
        .set_shop_ready("shop-3.es-hs.com", true, 1, 0)
        .await
        .expect("ready");

    let mut seen = Vec::new();
    let mut request = ListShopsRequest {
        page_size: 3,
        ..ListShopsRequest::default()
    };
    loop {
        let page = shops
            .list_shops(request.clone())
            .await
            .expect("list")
            .into_inner();
        assert!(page.shops.len() <= 3);
        seen.extend(
            page.shops
                .into_iter()
                .map(|s| s.spec.expect("spec").shop_domain),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(seen, names);

    let not_ready = ListShopsRequest {
        only_not_ready: true,
        ..ListShopsRequest::default()
    };
    let page = shops
        .list_shops(not_ready)
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.shops.len(), 6);
    assert!(
        page.shops
            .iter()
            .all(|s| s.spec.as_ref().expect("spec").shop_domain != "shop-3.es-hs.com")
    );

    let other = ListShopsRequest {
        region: "us-east-1".to_owned(),
        ..ListShopsRequest::default()
    };
    assert!(
        shops
            .list_shops(other)
            .await
            .expect("list")
            .into_inner()
            .shops
            .is_empty()
    );

    let bad = ListShopsRequest {
        page_token: "%%%".to_owned(),
        ..ListShopsRequest::default()
    };
    assert_eq!(
        shops.list_shops(bad).await.expect_err("bad token").code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn status_written_by_reconcilers_shows_in_get() {
    let (server, _aws, store) = dev_server().await;
    let mut shops = server.shops().await;
    shops
        .deploy_shop(deploy("example.es-hs.com"))
        .await
        .expect("deploy");
    let status = domain::ResourceStatus {
        kind: domain::ResourceKind::Artifact,
        desired: "build of version v1".to_owned(),
        observed: "build 7 failed".to_owned(),
        sync: domain::SyncState::OutOfSync,
        health: domain::Health::Degraded,
        reason: "BuildFailed".to_owned(),
        message: "phase BUILD failed".to_owned(),
        observed_generation: 1,
        last_transition: 1_000,
        attempts: 3,
        next_attempt_at: Some(61_000),
    };
    store
        .store
        .put_resource_status("example.es-hs.com", &status)
        .await
        .expect("status");

    let shop = shops
        .get_shop(GetShopRequest {
            shop_domain: "example.es-hs.com".to_owned(),
        })
        .await
        .expect("get")
        .into_inner();
    let status = shop.status.expect("status");
    let artifact = &status.resources[0];
    assert_eq!(artifact.reason, "BuildFailed");
    assert_eq!(artifact.attempts, 3);
    assert_eq!(artifact.sync, SyncState::OutOfSync as i32);
    let blocker = status.blocked_by.expect("blocked");
    assert_eq!(
        (blocker.reason.as_str(), blocker.message.as_str()),
        ("BuildFailed", "phase BUILD failed")
    );
    assert_eq!(blocker.next_attempt_at.map(|t| t.seconds), Some(61));
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.r#type == ConditionType::Degraded as i32)
        .expect("degraded condition");
    assert_eq!(degraded.status, ConditionStatus::True as i32);

    let missing = shops
        .get_shop(GetShopRequest {
            shop_domain: "nope.es-hs.com".to_owned(),
        })
        .await;
    assert_eq!(missing.expect_err("missing").code(), Code::NotFound);
}

async fn next(stream: &mut tonic::Streaming<WatchShopsEvent>) -> WatchShopsEvent {
    let event = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    event
        .expect("event in time")
        .expect("stream open")
        .expect("event")
}

#[tokio::test]
async fn watch_sends_a_snapshot_then_changes() {
    let (server, _aws, _store) = dev_server().await;
    let mut shops = server.shops().await;
    shops
        .deploy_shop(deploy("example.es-hs.com"))
        .await
        .expect("deploy");

    let mut stream = shops
        .watch_shops(WatchShopsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let first = next(&mut stream).await;
    assert_eq!(first.r#type, watch_shops_event::Type::Snapshot as i32);

    shops
        .deploy_shop(deploy("demo.es-hs.com"))
        .await
        .expect("deploy");
    let update = next(&mut stream).await;
    assert_eq!(update.r#type, watch_shops_event::Type::Updated as i32);
    assert_eq!(
        update
            .shop
            .and_then(|s| s.spec)
            .map(|s| s.shop_domain)
            .as_deref(),
        Some("demo.es-hs.com")
    );
}
