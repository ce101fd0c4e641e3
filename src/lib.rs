//! shop-controller: the gRPC write path, the store, the AWS adapters and the runtime that
//! drives the reconcilers of the `reconcilers` crate.

pub mod acme;
pub mod aws;
mod cloud_calls;
pub mod config;
pub mod controller;
pub mod dev;
pub mod domains;
mod fencing;
pub mod grpc;
pub mod http;
pub mod intent;
pub mod metrics;
pub mod nginx;
pub mod runtime;
pub mod server;
pub mod sim_protocol;
pub mod sim_server;
pub mod store;
pub mod telemetry;
