//! Domains: what DNS says about a custom domain, and what a client that follows it gets for
//! an HTTP-01 challenge URL. The self-check and the domain diagnostics run on these, so a
//! domain that does not point at us fails with a reason before the CA is asked.

use std::net::{Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;

use super::CloudError;
use crate::hostname::Hostname;

/// A CAA record (RFC 8659).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaaRecord {
    pub critical: bool,
    /// `issue`, `issuewild` or `iodef`.
    pub tag: String,
    /// For `issue`: the CA's domain, such as `letsencrypt.org`, possibly with parameters.
    pub value: String,
}

/// What DNS answered for one name. Empty lists mean no such records; the resolver's own
/// failures (timeout, SERVFAIL) are errors of the call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsAnswers {
    /// The CNAME chain from the name, in order.
    pub cnames: Vec<String>,
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    /// CAA records of the closest name that has any (RFC 8659 climbs to the parents).
    pub caa: Vec<CaaRecord>,
}

/// Why fetching a challenge URL failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the domain has no A or AAAA record")]
    NoAddress,
    #[error("could not connect to {address}: {message}")]
    Connect { address: String, message: String },
    #[error("{address} answered HTTP {status}")]
    Status { address: String, status: u16 },
    #[error("{address} did not answer in time")]
    Timeout { address: String },
    #[error("{0}")]
    Other(String),
}

/// DNS lookups and challenge fetches as the CA would make them.
#[async_trait]
pub trait Domains: Send + Sync {
    /// A, AAAA, CNAME and CAA records of a name.
    async fn resolve(&self, domain: &Hostname) -> Result<DnsAnswers, CloudError>;

    /// GETs `http://<domain>/.well-known/acme-challenge/<token>` the way the CA will (port
    /// 80 in production, following DNS) and returns the body.
    async fn fetch_challenge(&self, domain: &Hostname, token: &str) -> Result<String, FetchError>;
}
