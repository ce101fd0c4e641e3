//! Domain types, reconcilers and the narrow cloud traits they call.
//!
//! This crate is the controller's logic. It depends on no gRPC, SQL or AWS SDK crate: the
//! binary converts between those and the types here, so every rule can be tested in memory.

pub mod certificate;
pub mod challenge_listener;
pub mod cloud;
pub mod config;
pub mod domain_check;
pub mod hostname;
pub mod listener;
pub mod names;
pub mod nginx;
pub mod patching;
pub mod placement;
pub mod shell;
pub mod sim;
pub mod source;
pub mod spec;
pub mod status;
pub mod target_group;
pub mod utc;
pub mod x509;

pub use hostname::{Hostname, HostnameError};
