//! Certificates from a real ACME CA: Let's Encrypt's test server `pebble`, validating HTTP-01
//! for real against the controller's responder (no always-valid switch), with names resolved
//! by `pebble-challtestsrv`. The controller talks to pebble through the instant-acme adapter and
//! checks domains through the real DNS adapter; AWS is simulated.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use reconcilers::certificate::{Backoff, CertificateRecord, CertificateState};
use reconcilers::cloud::CloudProvider;
use reconcilers::sim::{ClockMode, SimConfig};
use shop_controller::acme::{AcmeConfig, LazyAcme};
use shop_controller::config::{DomainsConfig, Secret};
use shop_controller::controller::{CertificateSettings, ControllerConfig};
use shop_controller::dev::DEV_REGION;
use shop_controller::domains::DnsDomains;
use shop_controller::store::{Store, now_millis};

use crate::certificates::{deploy, listener_certificates, renewed_without_a_gap};
use crate::challtestsrv::ChallTestSrv;
use crate::controller::{Running, converged, start_with_certificates};

/// A running pebble, killed on drop.
pub struct Pebble {
    pub directory_url: String,
    /// The root pebble's own HTTPS is signed by, for the ACME client to trust.
    pub root_pem: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a pebble is started.
pub struct PebbleOptions {
    /// Where its HTTP-01 validation connects on the address a name resolves to.
    pub http_port: u16,
    /// The DNS server it resolves names with.
    pub dns: SocketAddr,
    /// Lifetime of the certificates it issues; pebble's default (years) when `None`.
    pub validity: Option<Duration>,
}

impl Pebble {
    /// Starts pebble on free ports with a throwaway HTTPS certificate and waits until it
    /// accepts connections.
    pub async fn start(options: PebbleOptions) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("ca");
        let key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("leaf");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let cert = write("cert.pem", leaf.pem());
        let private_key = write("key.pem", key.serialize_pem());
        let root_pem = write("root.pem", ca.pem());
        let port = free_port();
        let mut settings = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{}", free_port()),
            "certificate": cert,
            "privateKey": private_key,
            "httpPort": options.http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(validity) = options.validity {
            settings["certificateValidityPeriod"] = validity.as_secs().into();
        }
        let config = write(
            "pebble.json",
            serde_json::json!({ "pebble": settings }).to_string(),
        );
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &options.dns.to_string()])
            // Validate at once, and never reject a nonce at random: the tests are about
            // validation, not about retrying pebble's chaos.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start pebble ({e}); is the pebble package installed?"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pebble never listened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            directory_url: format!("https://localhost:{port}/dir"),
            root_pem,
            child,
            _dir: dir,
        }
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The controller, pebble, DNS and the responder, wired as in production but on loopback.
struct World {
    running: Running,
    dns: ChallTestSrv,
    _pebble: Pebble,
    responder_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(stop) = self.responder_stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `pebble_validates_on`: the port pebble's validation connects to; the responder's when
/// `None`.
async fn world(
    clock: ClockMode,
    validity: Option<Duration>,
    pebble_validates_on: Option<u16>,
) -> World {
    let dns = ChallTestSrv::start().await;
    let responder = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind responder");
    let responder_port = responder.local_addr().expect("address").port();
    let pebble = Pebble::start(PebbleOptions {
        http_port: pebble_validates_on.unwrap_or(responder_port),
        dns: dns.dns,
        validity,
    })
    .await;
    let acme = AcmeConfig {
        directory_url: pebble.directory_url.clone(),
        ca_root: Some(pebble.root_pem.clone()),
        contacts: vec!["mailto:ops@example.com".to_owned()],
        encryption_key: Secret::new(base64::engine::general_purpose::STANDARD.encode([9u8; 32])),
    };
    let domains = DomainsConfig {
        dns_server: Some(dns.dns),
        acme_http01_port: responder_port,
        domain_check_timeout: Duration::from_secs(2),
    };
    let (responder_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = start_with_certificates(
        SimConfig {
            clock,
            ..SimConfig::default()
        },
        ControllerConfig::new("e2e", Duration::from_millis(500)),
        move |store| {
            let ca = LazyAcme::new(acme, store.clone()).expect("acme config");
            let domains = DnsDomains::new(&domains).expect("dns adapter");
            let mut settings = CertificateSettings::new(Arc::new(ca), Arc::new(domains));
            settings.poll = Duration::from_millis(100);
            settings.self_check_backoff = Backoff {
                first: Duration::from_millis(200),
                max: Duration::from_secs(1),
            };
            // The responder answers before the loops start.
            tokio::spawn(shop_controller::acme::responder::serve(
                responder,
                store,
                async move {
                    let _ = stopped.await;
                },
            ));
            Some(settings)
        },
    )
    .await;
    // The region's static IPs are where challtestsrv points the domains.
    let store = running.store.store.clone();
    let mut region = store
        .get_region_config(DEV_REGION)
        .await
        .expect("read")
        .expect("region");
    region.global_accelerator_ips = vec![Ipv4Addr::LOCALHOST.into()];
    store
        .put_region_config(&region, now_millis())
        .await
        .expect("region");
    World {
        running,
        dns,
        _pebble: pebble,
        responder_stop: Some(responder_stop),
    }
}

fn store(world: &World) -> &dyn Store {
    world.running.store.store.as_ref()
}

async fn row_where(
    store: &dyn Store,
    domain: &str,
    within: Duration,
    done: impl Fn(&CertificateRecord) -> bool,
) -> CertificateRecord {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let row = store.certificate(domain).await.expect("read");
        if let Some(row) = &row
            && done(row)
        {
            return row.clone();
        }
        if tokio::time::Instant::now() >= deadline {
            let view = store
                .get_shop("a.es-hs.com")
                .await
                .expect("read")
                .map(|v| v.resources);
            panic!("certificate of {domain} never got there; row {row:?}; status {view:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_issues_a_certificate_that_ends_attached_and_the_shop_ready() {
    let month = Duration::from_secs(30 * 24 * 60 * 60);
    let world = world(ClockMode::Scaled(40.0), Some(month), None).await;
    world
        .dns
        .add_a("shop.pebble.test", &[Ipv4Addr::LOCALHOST])
        .await;
    deploy(&world.running, "a.es-hs.com", "shop.pebble.test").await;

    let row = row_where(
        store(&world),
        "shop.pebble.test",
        Duration::from_secs(60),
        |r| r.state == CertificateState::Ready,
    )
    .await;
    let arn = row.acm_arn.clone().expect("imported");
    // Pebble's configured lifetime, read from the certificate pebble signed.
    let lifetime = row.not_after.expect("not after") - row.not_before.expect("not before");
    assert!(
        (lifetime - 30 * 86_400_000).abs() <= 60_000,
        "lifetime {lifetime} ms"
    );
    assert_eq!(
        listener_certificates(&world.running).await,
        vec![arn.clone()]
    );
    let acm = world.running.aws.certificates(DEV_REGION);
    let summary = acm.describe_certificate(&arn).await.expect("describe");
    assert_eq!(summary.domain, "shop.pebble.test");
    assert_eq!(
        store(&world)
            .challenge_response("anything", now_millis())
            .await
            .expect("read"),
        None
    );
    converged(store(&world), &["a.es-hs.com".to_owned()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_short_lived_certificates_renew_into_the_same_arn() {
    // Real time: ACM (simulated) refuses certificates expired on its clock.
    let world = world(ClockMode::Scaled(1.0), Some(Duration::from_secs(12)), None).await;
    world
        .dns
        .add_a("short.pebble.test", &[Ipv4Addr::LOCALHOST])
        .await;
    deploy(&world.running, "a.es-hs.com", "short.pebble.test").await;
    let first = row_where(
        store(&world),
        "short.pebble.test",
        Duration::from_secs(60),
        |r| r.state == CertificateState::Ready,
    )
    .await;
    let arn = first.acm_arn.clone().expect("imported");
    let renewed = renewed_without_a_gap(&world.running, &first, Duration::from_secs(40)).await;
    assert_eq!(renewed.acm_arn, Some(arn.clone()), "same ARN");
    assert!(
        renewed.not_after.expect("not after") > now_millis(),
        "renewed before expiry"
    );
    let acm = world.running.aws.certificates(DEV_REGION);
    let tags = acm.list_tags(&arn).await.expect("tags");
    assert!(
        reconcilers::cloud::Owner::from_tags(&tags).is_some(),
        "tags after re-import: {tags:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_rejecting_the_challenge_backs_off_with_its_reason() {
    // Our self-check reaches the responder, but pebble validates on a port nobody serves.
    let world = world(ClockMode::Scaled(40.0), None, Some(free_port())).await;
    world
        .dns
        .add_a("rejected.pebble.test", &[Ipv4Addr::LOCALHOST])
        .await;
    deploy(&world.running, "a.es-hs.com", "rejected.pebble.test").await;
    let row = row_where(
        store(&world),
        "rejected.pebble.test",
        Duration::from_secs(60),
        |r| r.state == CertificateState::Failed,
    )
    .await;
    let error = row.last_error.clone().expect("error");
    assert!(error.contains("the CA rejected the order"), "{error}");
    assert!(row.next_attempt_at.expect("next") > now_millis() + 3_500_000);
    // The status is written when the run that saved the row ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let view = store(&world)
            .get_shop("a.es-hs.com")
            .await
            .expect("read")
            .expect("shop");
        let status = view
            .resources
            .iter()
            .find(|r| r.kind == reconcilers::status::ResourceKind::Certificate)
            .cloned();
        if status
            .as_ref()
            .is_some_and(|s| s.reason == "ChallengeRejected")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never said ChallengeRejected: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_pointing_elsewhere_never_reaches_pebble() {
    let world = world(ClockMode::Scaled(40.0), None, None).await;
    world
        .dns
        .add_a("elsewhere.pebble.test", &[Ipv4Addr::new(203, 0, 113, 7)])
        .await;
    deploy(&world.running, "a.es-hs.com", "elsewhere.pebble.test").await;
    let row = row_where(
        store(&world),
        "elsewhere.pebble.test",
        Duration::from_secs(60),
        |r| r.state == CertificateState::Failed,
    )
    .await;
    let error = row.last_error.clone().expect("error");
    assert!(error.contains("no order placed"), "{error}");
    assert!(error.contains("203.0.113.7"), "{error}");
    assert_eq!(row.order_url, None, "no order at the CA");
}

/// The `Acme` contract, asserted alike against the simulated CA and pebble: an order whose
/// token is served ends in a certificate for the domain, once; one whose token is not
/// served ends invalid with the CA's reason; an unknown order is an error.
async fn acme_contract(
    ca: &dyn reconcilers::cloud::Acme,
    store: &dyn Store,
    served: &str,
    unserved: &str,
    unknown_order: &str,
) {
    use reconcilers::cloud::OrderStatus;

    let domain = reconcilers::Hostname::parse(served).expect("valid");
    let order = ca.new_order(&domain).await.expect("order");
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.challenges.len(), 1);
    let challenge = &order.challenges[0];
    assert_eq!(challenge.domain, domain);
    assert!(challenge.key_authorization.starts_with(&challenge.token));
    store
        .put_challenge(&shop_controller::store::AcmeChallenge {
            token: challenge.token.clone(),
            domain: served.to_owned(),
            key_authorization: challenge.key_authorization.clone(),
            expires_at: now_millis() + 60_000,
        })
        .await
        .expect("publish");
    ca.challenges_ready(&order.url).await.expect("ready");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let issued = loop {
        let status = ca.order(&order.url).await.expect("order").status;
        assert_ne!(status, OrderStatus::Invalid, "validation failed");
        if status == OrderStatus::Ready
            && let Some(issued) = ca.finalize(&order.url).await.expect("finalize")
        {
            break issued;
        }
        assert!(tokio::time::Instant::now() < deadline, "never issued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let parsed =
        reconcilers::x509::parse_pem(&issued.material.certificate_pem).expect("a certificate");
    assert_eq!(parsed.domain.as_deref(), Some(served));
    assert!(issued.not_after > now_millis());
    assert!(issued.material.private_key_pem.contains("PRIVATE KEY"));
    assert_eq!(
        ca.order(&order.url).await.expect("order").status,
        OrderStatus::Valid
    );
    assert!(
        ca.finalize(&order.url).await.is_err(),
        "a finalized order yields no second key"
    );

    let lost = reconcilers::Hostname::parse(unserved).expect("valid");
    let order = ca.new_order(&lost).await.expect("order");
    ca.challenges_ready(&order.url).await.expect("ready");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let invalid = loop {
        let order = ca.order(&order.url).await.expect("order");
        if order.status == OrderStatus::Invalid {
            break order;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never invalid: {order:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = invalid.challenges[0].error.clone().expect("a reason");
    assert!(!reason.is_empty());

    // Let's Encrypt and the simulated CA answer an unknown order with a 404 problem (not
    // found); pebble with an empty body, which reads as an error of its own.
    let missing = ca.order(unknown_order).await.expect_err("unknown");
    assert!(!missing.message.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_contract_against_the_simulated_ca() {
    use reconcilers::sim::{SimAcme, SimAcmeConfig, SimDomains};

    let store = crate::support::sqlite_store().await;
    let domains = Arc::new(SimDomains::new(
        vec![Ipv4Addr::LOCALHOST.into()],
        Arc::new(shop_controller::dev::StoreChallenges(store.store.clone())),
    ));
    domains.set_records(
        &reconcilers::Hostname::parse("served.example.com").expect("valid"),
        reconcilers::cloud::DnsAnswers {
            a: vec![Ipv4Addr::LOCALHOST],
            ..Default::default()
        },
    );
    let ca = SimAcme::new(domains, SimAcmeConfig::default());
    acme_contract(
        &ca,
        store.store.as_ref(),
        "served.example.com",
        "unserved.example.com",
        "https://acme.sim/order/999999",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_contract_against_pebble() {
    let store = crate::support::sqlite_store().await;
    let dns = ChallTestSrv::start().await;
    dns.add_a("served.pebble.test", &[Ipv4Addr::LOCALHOST])
        .await;
    let responder = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = responder.local_addr().expect("address").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(shop_controller::acme::responder::serve(
        responder,
        store.store.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let pebble = Pebble::start(PebbleOptions {
        http_port: port,
        dns: dns.dns,
        validity: None,
    })
    .await;
    let config = AcmeConfig {
        directory_url: pebble.directory_url.clone(),
        ca_root: Some(pebble.root_pem.clone()),
        contacts: Vec::new(),
        encryption_key: Secret::new(base64::engine::general_purpose::STANDARD.encode([3u8; 32])),
    };
    let ca = shop_controller::acme::AcmeClient::connect(&config, store.store.clone())
        .await
        .expect("account");
    // A second replica finds the stored account rather than creating another.
    shop_controller::acme::AcmeClient::connect(&config, store.store.clone())
        .await
        .expect("stored account");
    let unknown = pebble.directory_url.replace("/dir", "/my-order/unknown");
    acme_contract(
        &ca,
        store.store.as_ref(),
        "served.pebble.test",
        "unserved.pebble.test",
        &unknown,
    )
    .await;
    let _ = stop.send(());
}

/// Issue #7, figure 7: time per issuance against pebble with real HTTP-01. A measurement,
/// not a check (nothing about time is asserted; it only insists every certificate arrives):
/// `cargo test --test e2e -- --ignored --nocapture pebble_issuance_figures`.
///
/// Baseline, in the same run: the ACME adapter alone (order, token published to the store,
/// challenge ready, poll, finalize), one domain after another. Then the controller: a shop
/// deployed with a custom domain until its certificate is imported and attached, one after
/// another, then `AT_ONCE` together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark that prints figures; run it by name with --ignored"]
async fn pebble_issuance_figures() {
    const ONE_BY_ONE: usize = 10;
    const AT_ONCE: usize = 10;
    let month = Duration::from_secs(30 * 24 * 60 * 60);
    let world = world(ClockMode::Scaled(40.0), Some(month), None).await;
    let config = AcmeConfig {
        directory_url: world._pebble.directory_url.clone(),
        ca_root: Some(world._pebble.root_pem.clone()),
        contacts: Vec::new(),
        encryption_key: Secret::new(base64::engine::general_purpose::STANDARD.encode([9u8; 32])),
    };
    let ca = shop_controller::acme::AcmeClient::connect(&config, world.running.store.store.clone())
        .await
        .expect("account");

    let mut adapter = Vec::new();
    for index in 0..ONE_BY_ONE {
        let domain = format!("direct-{index}.pebble.test");
        world.dns.add_a(&domain, &[Ipv4Addr::LOCALHOST]).await;
        let began = tokio::time::Instant::now();
        issue_directly(&ca, store(&world), &domain).await;
        adapter.push(began.elapsed());
    }

    let mut controller = Vec::new();
    for index in 0..ONE_BY_ONE {
        let domain = format!("one-{index}.pebble.test");
        world.dns.add_a(&domain, &[Ipv4Addr::LOCALHOST]).await;
        let began = tokio::time::Instant::now();
        deploy(&world.running, &format!("one-{index}.es-hs.com"), &domain).await;
        row_where(store(&world), &domain, Duration::from_secs(60), |r| {
            r.state == CertificateState::Ready
        })
        .await;
        controller.push(began.elapsed());
    }

    let domains: Vec<String> = (0..AT_ONCE)
        .map(|index| format!("many-{index}.pebble.test"))
        .collect();
    for domain in &domains {
        world.dns.add_a(domain, &[Ipv4Addr::LOCALHOST]).await;
    }
    let began = tokio::time::Instant::now();
    for (index, domain) in domains.iter().enumerate() {
        deploy(&world.running, &format!("many-{index}.es-hs.com"), domain).await;
    }
    for domain in &domains {
        row_where(store(&world), domain, Duration::from_secs(120), |r| {
            r.state == CertificateState::Ready
        })
        .await;
    }
    let together = began.elapsed();

    let median = |samples: &mut Vec<Duration>| {
        samples.sort();
        (samples[samples.len() / 2], samples[samples.len() - 1])
    };
    let (adapter_p50, adapter_max) = median(&mut adapter);
    let (controller_p50, controller_max) = median(&mut controller);
    eprintln!("\n7. certificate issuance against pebble, real HTTP-01 through the responder");
    eprintln!("| path | n | p50 | max |");
    eprintln!("|---|---|---|---|");
    eprintln!(
        "| ACME adapter alone (baseline) | {ONE_BY_ONE} | {:.0} ms | {:.0} ms |",
        adapter_p50.as_secs_f64() * 1e3,
        adapter_max.as_secs_f64() * 1e3
    );
    eprintln!(
        "| controller: deploy to certificate attached | {ONE_BY_ONE} | {:.0} ms | {:.0} ms |",
        controller_p50.as_secs_f64() * 1e3,
        controller_max.as_secs_f64() * 1e3
    );
    eprintln!(
        "ratio of medians {:.2}; {AT_ONCE} domains at once all attached in {:.0} ms ({:.1}/s)",
        controller_p50.as_secs_f64() / adapter_p50.as_secs_f64(),
        together.as_secs_f64() * 1e3,
        AT_ONCE as f64 / together.as_secs_f64()
    );
}

/// One certificate through the adapter alone, its token served from `store`.
async fn issue_directly(ca: &dyn reconcilers::cloud::Acme, store: &dyn Store, domain: &str) {
    use reconcilers::cloud::OrderStatus;

    let hostname = reconcilers::Hostname::parse(domain).expect("valid");
    let order = ca.new_order(&hostname).await.expect("order");
    for challenge in &order.challenges {
        store
            .put_challenge(&shop_controller::store::AcmeChallenge {
                token: challenge.token.clone(),
                domain: domain.to_owned(),
                key_authorization: challenge.key_authorization.clone(),
                expires_at: now_millis() + 60_000,
            })
            .await
            .expect("publish");
    }
    ca.challenges_ready(&order.url).await.expect("ready");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = ca.order(&order.url).await.expect("order").status;
        assert_ne!(
            status,
            OrderStatus::Invalid,
            "validation of {domain} failed"
        );
        if status == OrderStatus::Ready
            && ca.finalize(&order.url).await.expect("finalize").is_some()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{domain} never issued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
