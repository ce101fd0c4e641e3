//! Black-box tests: the real gRPC server on port 0, real SQLite and PostgreSQL, moto for S3,
//! and the `shopctl` binary. One test binary, so the AWS SDK is linked once.

#![allow(
    unreachable_pub,
    reason = "helpers are shared between the modules of one binary"
)]

mod adapter_errors;
mod admin;
mod api;
mod auth;
mod certificates;
mod challenge_listener;
mod challtestsrv;
mod contract;
mod controller;
mod convergence;
mod crash;
mod domains;
mod failures;
mod metrics;
mod moto_controller;
mod moto_s3;
mod ops;
mod patching;
mod pebble;
mod process_kills;
mod processes;
mod replicas;
mod serve_process;
mod shopctl;
mod store;
mod support;
mod tls;
mod validation;
