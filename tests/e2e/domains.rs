//! Domain checks through the real adapter: hickory-resolver asking a real DNS server
//! (pebble-challtestsrv serving mock records) and HTTP-01 probes over real TCP to a local
//! challenge responder; and `CheckDomain` through gRPC and `shopctl` on the dev world.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use reconcilers::Hostname;
use reconcilers::cloud::{Domains, FetchError};
use reconcilers::domain_check::{self, Diagnosis, LETS_ENCRYPT_CAA_IDENTITY, PROBE_BODY};
use shop_controller::config::DomainsConfig;
use shop_controller::domains::{DnsDomains, probe_token};
use shop_controller::grpc::Auth;
use shop_controller::server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::challtestsrv::ChallTestSrv;
use crate::support::{TestServer, seeded, sqlite_store};

/// Where the test's challenge responder listens; the region's one "static IP".
const US: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A challenge responder like ours: answers probe tokens with [`PROBE_BODY`], 404 otherwise.
struct Responder {
    port: u16,
    task: JoinHandle<()>,
}

impl Responder {
    async fn start() -> Self {
        let listener = TcpListener::bind((US, 0)).await.expect("bind responder");
        let port = listener.local_addr().expect("address").port();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request);
                    let probe = "GET /.well-known/acme-challenge/shop-controller-probe-";
                    let response = if head.starts_with(probe) {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{PROBE_BODY}",
                            PROBE_BODY.len()
                        )
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned()
                    };
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Self { port, task }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The mock DNS server, the responder and the real adapter between them.
struct World {
    dns: ChallTestSrv,
    responder: Responder,
    domains: DnsDomains,
}

impl World {
    async fn start() -> Self {
        let dns = ChallTestSrv::start().await;
        let responder = Responder::start().await;
        let domains = adapter(dns.dns, responder.port);
        Self {
            dns,
            responder,
            domains,
        }
    }

    /// What the diagnostics make of `domain`'s DNS alone.
    async fn diagnose_dns(&self, domain: &str) -> Diagnosis {
        let domain = hostname(domain);
        let resolved = self.domains.resolve(&domain).await;
        let failure;
        let answers = match &resolved {
            Ok(answers) => Ok(answers),
            Err(error) => {
                failure = error.to_string();
                Err(failure.as_str())
            }
        };
        domain_check::diagnose(&domain, answers, &region(), LETS_ENCRYPT_CAA_IDENTITY, None)
    }

    /// The whole check: DNS and the HTTP-01 probe, as `CheckDomain` runs it.
    async fn check(&self, domains: &DnsDomains, domain: &str) -> Diagnosis {
        domain_check::check(
            domains,
            &hostname(domain),
            &region(),
            LETS_ENCRYPT_CAA_IDENTITY,
            &probe_token(),
        )
        .await
    }
}

fn adapter(dns: SocketAddr, http01_port: u16) -> DnsDomains {
    DnsDomains::new(&DomainsConfig {
        dns_server: Some(dns),
        acme_http01_port: http01_port,
        domain_check_timeout: Duration::from_secs(2),
    })
    .expect("adapter")
}

fn region() -> Vec<IpAddr> {
    vec![US.into()]
}

fn hostname(name: &str) -> Hostname {
    Hostname::parse(name).expect("hostname")
}

#[tokio::test]
async fn dns_cases_are_diagnosed_from_a_real_dns_server() {
    let world = World::start().await;
    let dns = &world.dns;
    dns.add_a("points.test", &[US]).await;
    dns.add_a("elsewhere.test", &[Ipv4Addr::new(192, 0, 2, 1)])
        .await;
    dns.add_a("stray.test", &[US]).await;
    dns.add_aaaa("stray.test", &["2001:db8::1".parse().expect("ip")])
        .await;
    dns.add_a("cloudflare-ip.test", &[Ipv4Addr::new(104, 16, 0, 1)])
        .await;
    dns.add_cname(
        "cloudflare-cname.test",
        "cloudflare-cname.test.cdn.cloudflare.net",
    )
    .await;
    dns.add_a(
        "cloudflare-cname.test.cdn.cloudflare.net",
        &[Ipv4Addr::new(192, 0, 2, 7)],
    )
    .await;
    // CAA sits on the parent: the adapter climbs to it (RFC 8659).
    dns.add_a("shop.caa-forbids.test", &[US]).await;
    dns.add_caa("caa-forbids.test", &[("issue", "digicert.com")])
        .await;
    dns.add_a("shop.caa-forbids-all.test", &[US]).await;
    dns.add_caa("caa-forbids-all.test", &[("issue", ";")]).await;
    dns.add_a("caa-allows.test", &[US]).await;
    let both = [("issue", "digicert.com"), ("issue", "letsencrypt.org")];
    dns.add_caa("caa-allows.test", &both).await;
    dns.add_servfail("broken.test").await;

    let cases = [
        ("points.test", vec!["PointsAtRegion", "CaaAllowsCa"]),
        ("elsewhere.test", vec!["NotPointingAtRegion", "CaaAllowsCa"]),
        ("stray.test", vec!["StrayAaaa", "CaaAllowsCa"]),
        ("cloudflare-ip.test", vec!["Cloudflare", "CaaAllowsCa"]),
        ("cloudflare-cname.test", vec!["Cloudflare", "CaaAllowsCa"]),
        (
            "shop.caa-forbids.test",
            vec!["PointsAtRegion", "CaaForbidsCa"],
        ),
        (
            "shop.caa-forbids-all.test",
            vec!["PointsAtRegion", "CaaForbidsCa"],
        ),
        ("caa-allows.test", vec!["PointsAtRegion", "CaaAllowsCa"]),
        ("nobody.test", vec!["NoAddress", "CaaAllowsCa"]),
        ("broken.test", vec!["ResolveFailed"]),
    ];
    for (domain, expected) in cases {
        let diagnosis = world.diagnose_dns(domain).await;
        assert_eq!(diagnosis.codes(), expected, "{domain}: {diagnosis:#?}");
    }
}

#[tokio::test]
async fn the_adapter_reports_the_records_it_found() {
    let world = World::start().await;
    world.dns.add_a("records.test", &[US]).await;
    world
        .dns
        .add_aaaa("records.test", &["2001:db8::5".parse().expect("ip")])
        .await;
    world
        .dns
        .add_caa("records.test", &[("issue", "letsencrypt.org")])
        .await;
    world
        .dns
        .add_cname("www.records.test", "records.test")
        .await;

    let answers = world
        .domains
        .resolve(&hostname("records.test"))
        .await
        .expect("resolve");
    let aliased = world
        .domains
        .resolve(&hostname("www.records.test"))
        .await
        .expect("resolve");

    assert_eq!(answers.a, vec![US]);
    assert_eq!(
        answers.aaaa,
        vec!["2001:db8::5".parse::<std::net::Ipv6Addr>().expect("ip")]
    );
    assert_eq!(answers.caa.len(), 1);
    assert_eq!(answers.caa[0].tag, "issue");
    assert_eq!(answers.caa[0].value, "letsencrypt.org");
    assert!(!answers.caa[0].critical);
    assert_eq!(aliased.cnames, vec!["records.test".to_owned()]);
    assert_eq!(aliased.a, vec![US]);
}

#[tokio::test]
async fn the_self_check_passes_when_the_probe_reaches_the_responder() {
    let world = World::start().await;
    world.dns.add_a("probe-ok.test", &[US]).await;

    let diagnosis = world.check(&world.domains, "probe-ok.test").await;

    assert_eq!(
        diagnosis.codes(),
        vec!["PointsAtRegion", "CaaAllowsCa", "SelfCheckPassed"],
        "{diagnosis:#?}"
    );
    assert_eq!(diagnosis.blocking(), None);
}

#[tokio::test]
async fn the_self_check_fails_when_nothing_answers_on_the_challenge_port() {
    let world = World::start().await;
    world.dns.add_a("probe-closed.test", &[US]).await;
    let closed_port = {
        let listener = std::net::TcpListener::bind((US, 0)).expect("bind");
        listener.local_addr().expect("address").port()
    };
    let closed = adapter(world.dns.dns, closed_port);

    let diagnosis = world.check(&closed, "probe-closed.test").await;

    assert_eq!(
        diagnosis.codes(),
        vec!["PointsAtRegion", "CaaAllowsCa", "SelfCheckFailed"],
        "{diagnosis:#?}"
    );
    let blocking = diagnosis.blocking().expect("blocked");
    assert_eq!(blocking.code, "SelfCheckFailed");
    assert!(
        blocking.fix.contains("does not accept HTTP"),
        "{}",
        blocking.fix
    );
}

#[tokio::test]
async fn a_fetch_sends_the_domain_as_host_and_reports_the_status() {
    let world = World::start().await;
    world.dns.add_a("fetch.test", &[US]).await;
    let domain = hostname("fetch.test");

    let probe = world.domains.fetch_challenge(&domain, &probe_token()).await;
    let unknown = world.domains.fetch_challenge(&domain, "not-a-probe").await;
    let nowhere = world
        .domains
        .fetch_challenge(&hostname("nowhere.test"), "x")
        .await;

    assert_eq!(probe, Ok(PROBE_BODY.to_owned()));
    assert_eq!(
        unknown,
        Err(FetchError::Status {
            address: format!("127.0.0.1:{}", world.responder.port),
            status: 404,
        })
    );
    assert_eq!(nowhere, Err(FetchError::NoAddress));
}

fn shopctl(server: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shopctl"))
        .arg("--server")
        .arg(server)
        .args(args)
        .env_remove("SHOPCTL_TOKEN")
        .output()
        .expect("run shopctl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn shopctl_domain_check_prints_fixes_and_fails_on_errors() {
    let store = sqlite_store().await;
    let aws = seeded(&store).await;
    let mut services = server::services(store.store.clone(), Arc::new(aws), Auth::Disabled);
    services.domains = Some(Arc::new(shop_controller::dev::dev_domains(
        store.store.clone(),
    )));
    let server = TestServer::serve(services).await;
    let url = server.url();
    let run = |args: &'static [&'static str]| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || shopctl(&url, args))
    };

    let (ok, out, err) = run(&["domain", "check", "shop.example.com"])
        .await
        .expect("join");
    assert!(ok, "{out}{err}");
    assert!(out.contains("PointsAtRegion"), "{out}");
    assert!(out.contains("SelfCheckPassed"), "{out}");

    let (ok, out, err) = run(&[
        "domain",
        "check",
        "stray-aaaa.example.com",
        "--region",
        "eu-west-1",
    ])
    .await
    .expect("join");
    assert!(!ok, "{out}");
    assert!(
        out.contains("StrayAaaa") && out.contains("fix: delete the AAAA records"),
        "{out}"
    );
    assert!(err.contains("block the domain"), "{err}");

    let (ok, out, _) = run(&["-o", "json", "domain", "check", "proxied.example.com"])
        .await
        .expect("join");
    let value: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(ok, "{out}");
    assert_eq!(value["findings"][0]["code"], "Cloudflare");
    assert_eq!(value["findings"][0]["severity"], "warning");
    assert_eq!(value["blocked"], false);

    let (ok, _, err) = run(&[
        "domain",
        "check",
        "shop.example.com",
        "--region",
        "us-east-1",
    ])
    .await
    .expect("join");
    assert!(!ok && err.contains("not configured"), "{err}");
}

#[tokio::test]
async fn check_domain_refuses_bad_input_and_servers_without_dns() {
    let store = sqlite_store().await;
    let aws = seeded(&store).await;
    let cloud: Arc<dyn reconcilers::cloud::CloudProvider> = Arc::new(aws);
    let without = TestServer::start(store.store.clone(), cloud.clone(), Auth::Disabled).await;
    let mut services = server::services(store.store.clone(), cloud, Auth::Disabled);
    services.domains = Some(Arc::new(shop_controller::dev::dev_domains(
        store.store.clone(),
    )));
    let with = TestServer::serve(services).await;
    let request = |domain: &str| shop_controller::grpc::proto::CheckDomainRequest {
        domain: domain.to_owned(),
        region: String::new(),
    };

    let unavailable = without
        .shops()
        .await
        .check_domain(request("shop.example.com"))
        .await
        .expect_err("no dns");
    let invalid = with
        .shops()
        .await
        .check_domain(request("*.example.com"))
        .await
        .expect_err("wildcard");
    let checked = with
        .shops()
        .await
        .check_domain(request("shop.example.com"))
        .await
        .expect("checked")
        .into_inner();

    assert_eq!(unavailable.code(), tonic::Code::Unavailable);
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert_eq!(checked.region, "eu-west-1");
    assert!(!checked.blocked);
    let codes: Vec<&str> = checked.findings.iter().map(|f| f.code.as_str()).collect();
    assert_eq!(codes, ["PointsAtRegion", "CaaAllowsCa", "SelfCheckPassed"]);
}
