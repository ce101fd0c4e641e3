//! The real [`Domains`]: DNS through hickory-resolver (the system's resolver configuration, or
//! one `--dns-server`) and HTTP-01 fetches made the way the CA makes them, a plain HTTP/1.1
//! GET to each address the domain resolves to, IPv6 first.
//!
//! The domain checks judge what this returns ([`reconcilers::domain_check`]); this module
//! only asks.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use reconcilers::Hostname;
use reconcilers::cloud::{CaaRecord, CloudError, DnsAnswers, Domains, ErrorKind, FetchError};
use reconcilers::domain_check::PROBE_TOKEN_PREFIX;
use tokio::net::TcpStream;

use crate::config::DomainsConfig;

/// Most bytes of a challenge answer we read; a key authorization is under 100.
const MAX_BODY_BYTES: usize = 8 * 1024;

/// Why the DNS resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DomainsError {
    #[error("read the system's dns configuration")]
    SystemConfig(#[source] NetError),
    #[error("build the dns resolver")]
    Build(#[source] NetError),
}

/// [`Domains`] over real DNS and HTTP.
pub struct DnsDomains {
    resolver: TokioResolver,
    http01_port: u16,
    timeout: Duration,
}

impl DnsDomains {
    /// A resolver asking `config.dns_server`, or the servers of /etc/resolv.conf.
    pub fn new(config: &DomainsConfig) -> Result<Self, DomainsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match config.dns_server {
            Some(server) => {
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut name_server.connections {
                    connection.port = server.port();
                }
                let resolver_config = ResolverConfig::from_name_servers(vec![name_server]);
                TokioResolver::builder_with_config(resolver_config, provider)
            }
            None => TokioResolver::builder(provider).map_err(DomainsError::SystemConfig)?,
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = config.domain_check_timeout;
        options.attempts = 2;
        // A merchant fixes a record and checks again: answer from DNS, not from our memory.
        options.cache_size = 0;
        let resolver = builder.build().map_err(DomainsError::Build)?;
        Ok(Self {
            resolver,
            http01_port: config.acme_http01_port,
            timeout: config.domain_check_timeout,
        })
    }

    /// The records of one type at `name`, with the CNAMEs met on the way; none when the name
    /// or the type does not exist.
    async fn lookup(&self, name: &str, kind: RecordType) -> Result<Vec<RData>, CloudError> {
        match self.resolver.lookup(name, kind).await {
            Ok(lookup) => Ok(lookup.answers().iter().map(|r| r.data.clone()).collect()),
            Err(error) if error.is_no_records_found() => Ok(Vec::new()),
            Err(error) => Err(CloudError::new(
                ErrorKind::Transient,
                operation(kind),
                error,
            )),
        }
    }

    /// The A and AAAA records of `domain` and the CNAMEs met on the way to them.
    async fn addresses(&self, domain: &Hostname) -> Result<DnsAnswers, CloudError> {
        // Fully qualified, so the resolver's search domains never apply.
        let name = format!("{domain}.");
        let a = self.lookup(&name, RecordType::A).await?;
        let aaaa = self.lookup(&name, RecordType::AAAA).await?;
        let mut answers = DnsAnswers::default();
        for data in a.into_iter().chain(aaaa) {
            match data {
                RData::A(a) => answers.a.push(a.0),
                RData::AAAA(aaaa) => answers.aaaa.push(aaaa.0),
                // Both lookups meet the same chain; keep it once, in order.
                RData::CNAME(cname) => {
                    let cname = cname.0.to_string().trim_end_matches('.').to_owned();
                    if !answers.cnames.contains(&cname) {
                        answers.cnames.push(cname);
                    }
                }
                _ => {}
            }
        }
        Ok(answers)
    }

    /// The CAA records of the closest name, from `domain` up to its top-level domain, that
    /// has any (RFC 8659 §3).
    async fn caa(&self, domain: &Hostname) -> Result<Vec<CaaRecord>, CloudError> {
        let mut name = domain.as_str();
        loop {
            let records: Vec<CaaRecord> = self
                .lookup(&format!("{name}."), RecordType::CAA)
                .await?
                .into_iter()
                .filter_map(|data| match data {
                    RData::CAA(caa) => Some(CaaRecord {
                        critical: caa.issuer_critical,
                        tag: caa.tag,
                        value: String::from_utf8_lossy(&caa.value).into_owned(),
                    }),
                    _ => None,
                })
                .collect();
            if !records.is_empty() {
                return Ok(records);
            }
            match name.split_once('.') {
                Some((_, parent)) => name = parent,
                None => return Ok(Vec::new()),
            }
        }
    }

    /// GETs the challenge URL from one address with `Host: domain`.
    async fn fetch_from(
        &self,
        address: SocketAddr,
        domain: &Hostname,
        token: &str,
    ) -> Result<String, FetchError> {
        let fetched = tokio::time::timeout(self.timeout, get(address, domain, token)).await;
        fetched.unwrap_or_else(|_| {
            Err(FetchError::Timeout {
                address: address.to_string(),
            })
        })
    }
}

#[async_trait]
impl Domains for DnsDomains {
    async fn resolve(&self, domain: &Hostname) -> Result<DnsAnswers, CloudError> {
        let mut answers = self.addresses(domain).await?;
        answers.caa = self.caa(domain).await?;
        tracing::debug!(domain = %domain, answers = ?answers, "resolved domain");
        Ok(answers)
    }

    async fn fetch_challenge(&self, domain: &Hostname, token: &str) -> Result<String, FetchError> {
        let answers = self
            .addresses(domain)
            .await
            .map_err(|error| FetchError::Other(format!("resolve {domain}: {error}")))?;

        // IPv6 first, as Let's Encrypt does; every address must lead to us, since the CA
        // may pick any of them.
        let aaaa = answers.aaaa.iter().map(|&a| IpAddr::from(a));
        let addresses: Vec<IpAddr> = aaaa.chain(answers.a.iter().map(|&a| a.into())).collect();
        let mut body = None;
        for ip in addresses {
            let address = SocketAddr::new(ip, self.http01_port);
            let answered = self.fetch_from(address, domain, token).await?;
            body.get_or_insert(answered);
        }
        body.ok_or(FetchError::NoAddress)
    }
}

/// A fresh self-check token: [`PROBE_TOKEN_PREFIX`] and 64 random bits in hex, so no cache
/// between us and the domain can answer it from an earlier probe.
pub fn probe_token() -> String {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{PROBE_TOKEN_PREFIX}{random:016x}")
}

/// One HTTP/1.1 GET of the challenge path, as the CA sends it.
async fn get(address: SocketAddr, domain: &Hostname, token: &str) -> Result<String, FetchError> {
    let failed = |message: String| FetchError::Connect {
        address: address.to_string(),
        message,
    };
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(e.to_string()))?;
    tokio::spawn(connection);

    let request = hyper::Request::get(format!("/.well-known/acme-challenge/{token}"))
        .header(hyper::header::HOST, domain.as_str())
        .header(hyper::header::USER_AGENT, "shop-controller-domain-check")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Other(format!("build request: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status().as_u16();
    // Not followed, on purpose: the proxy ALB's port-80 rule answers the challenge path itself,
    // so a redirect means something else answers first (a CDN's "always HTTPS", another
    // server). The CA would follow it to a place that does not serve our tokens; the status
    // names the redirect as the thing to fix.
    if status != 200 {
        return Err(FetchError::Status {
            address: address.to_string(),
            status,
        });
    }
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| FetchError::Other(format!("read the answer of {address}: {e}")))?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

fn operation(kind: RecordType) -> &'static str {
    match kind {
        RecordType::A => "dns:A",
        RecordType::AAAA => "dns:AAAA",
        RecordType::CAA => "dns:CAA",
        _ => "dns:Query",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_tokens_carry_the_prefix_and_differ() {
        let first = probe_token();
        let second = probe_token();

        assert!(first.starts_with(PROBE_TOKEN_PREFIX), "{first}");
        assert_eq!(first.len(), PROBE_TOKEN_PREFIX.len() + 16);
        assert_ne!(first, second);
    }
}
