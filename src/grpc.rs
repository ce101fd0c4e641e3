//! The gRPC boundary: the generated protobuf types, the two services, authentication, health
//! and reflection. Errors become [`Status`] in exactly one place, [`status_of`].

use std::sync::Arc;

use tonic::Status;
use tonic::transport::server::Router;

use crate::intent::{IntentError, Intents};
use crate::store::{Store, StoreError};

mod admin;
pub mod auth;
mod convert;
mod dev;
mod domain;
mod patch;
mod shop;

pub use auth::{Auth, Scope};

/// The generated protobuf types, clients and servers.
pub mod proto {
    #![allow(
        clippy::all,
        clippy::allow_attributes_without_reason,
        unreachable_pub,
        reason = "generated code"
    )]
    tonic::include_proto!("shop.v1");

    /// The encoded descriptors of `proto/`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shop_descriptor");
}

/// Everything the services need.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub intents: Intents,
    pub auth: Auth,
    /// Set by `shop-controller dev` only: the simulated AWS that `DevService` breaks things in.
    pub dev_cloud: Option<Arc<dyn reconcilers::cloud::CloudProvider>>,
    /// Answers `PlanShop` with the reconcilers' own observe and diff; a server without one
    /// answers it as unavailable.
    pub planner: Option<Arc<crate::controller::Controller>>,
    /// DNS lookups and HTTP-01 probes for `CheckDomain`; a server without one answers it as
    /// unavailable.
    pub domains: Option<Arc<dyn reconcilers::cloud::Domains>>,
}

/// Maps a write-path error to a status. Internal details go to the log, not to the caller.
pub(crate) fn status_of(error: IntentError) -> Status {
    match error {
        IntentError::InvalidArgument(message) => Status::invalid_argument(message),
        IntentError::FailedPrecondition(message) => Status::failed_precondition(message),
        IntentError::NotFound(message) => Status::not_found(message),
        IntentError::Unavailable(message) => Status::unavailable(message),
        IntentError::Internal(source) => {
            tracing::error!(error = %source, cause = ?source.source(), "request failed");
            Status::internal("internal error; see the controller's log")
        }
    }
}

pub(crate) fn store_status(error: StoreError) -> Status {
    status_of(IntentError::from(error))
}

/// Adds the shop and admin services (behind authentication), health checking and
/// reflection to a server.
pub async fn router(
    mut server: tonic::transport::Server,
    services: Services,
) -> Result<Router, tonic_reflection::server::Error> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<proto::shop_service_server::ShopServiceServer<shop::ShopApi>>()
        .await;
    health_reporter
        .set_serving::<proto::admin_service_server::AdminServiceServer<admin::AdminApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let auth = services.auth.clone();
    let intercept = move |request| auth.intercept(request);
    let dev = services.dev_cloud.clone().map(|cloud| {
        proto::dev_service_server::DevServiceServer::with_interceptor(
            dev::DevApi::new(services.store.clone(), cloud),
            intercept.clone(),
        )
    });
    let shop = proto::shop_service_server::ShopServiceServer::with_interceptor(
        shop::ShopApi::new(services.clone()),
        intercept.clone(),
    );
    let admin = proto::admin_service_server::AdminServiceServer::with_interceptor(
        admin::AdminApi::new(services),
        intercept,
    );
    Ok(server
        .add_service(health)
        .add_service(reflection)
        .add_service(shop)
        .add_service(admin)
        .add_optional_service(dev))
}
