//! Bearer tokens and scopes: health and reflection stay open, everything else needs a token.

use std::sync::Arc;

use shop_controller::grpc::Auth;
use shop_controller::grpc::proto::*;
use tonic::Code;

use crate::support::{TestServer, seeded, sqlite_store};

const READER: &str = "reader-token-0123456789";
const WRITER: &str = "writer-token-0123456789";

async fn server() -> (TestServer, crate::support::TestStore) {
    let store = sqlite_store().await;
    let aws = seeded(&store).await;
    let auth = Auth::parse(&format!("read {READER}\nwrite {WRITER}\n")).expect("tokens");
    (
        TestServer::start(store.store.clone(), Arc::new(aws), auth).await,
        store,
    )
}

fn deploy() -> DeployShopRequest {
    crate::support::deploy_request("example.es-hs.com")
}

#[tokio::test]
async fn scopes_are_enforced() {
    let (server, store) = server().await;

    let mut anonymous = server.shops_as(None).await;
    assert_eq!(
        anonymous
            .deploy_shop(deploy())
            .await
            .expect_err("anon")
            .code(),
        Code::Unauthenticated
    );
    let list = anonymous.list_shops(ListShopsRequest::default()).await;
    assert_eq!(list.expect_err("anon").code(), Code::Unauthenticated);

    let mut forged = server.shops_as(Some("writer-token-0123456780")).await;
    assert_eq!(
        forged
            .deploy_shop(deploy())
            .await
            .expect_err("forged")
            .code(),
        Code::Unauthenticated
    );

    let mut reader = server.shops_as(Some(READER)).await;
    let denied = reader.deploy_shop(deploy()).await.expect_err("read-only");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        store
            .store
            .get_shop("example.es-hs.com")
            .await
            .expect("read")
            .is_none()
    );
    reader
        .list_shops(ListShopsRequest::default())
        .await
        .expect("reader may list");
    let mut reader_admin = server.admin_as(Some(READER)).await;
    reader_admin
        .list_region_configs(ListRegionConfigsRequest {})
        .await
        .expect("reader may read config");
    let delete = DeleteRegionConfigRequest {
        region: "eu-west-1".to_owned(),
    };
    assert_eq!(
        reader_admin
            .delete_region_config(delete)
            .await
            .expect_err("read-only")
            .code(),
        Code::PermissionDenied
    );

    let mut writer = server.shops_as(Some(WRITER)).await;
    writer
        .deploy_shop(deploy())
        .await
        .expect("writer may deploy");
    reader
        .get_shop(GetShopRequest {
            shop_domain: "example.es-hs.com".to_owned(),
        })
        .await
        .expect("reader may get");
}

#[tokio::test]
async fn health_and_reflection_need_no_token() {
    let (server, _store) = server().await;
    let channel = server.channel().await;

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "shop.v1.ShopService", "shop.v1.AdminService"] {
        let request = tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        };
        let response = health.check(request).await.expect("health").into_inner();
        assert_eq!(
            response.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("message")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "shop.v1.ShopService",
        "shop.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}
