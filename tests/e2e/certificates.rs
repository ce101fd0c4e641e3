//! Custom-domain certificates end to end over the simulated AWS, CA and DNS: issuance,
//! renewal into the same ARN, the failures that must wait without burning the CA's limits,
//! a changed domain and a deleted shop.

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reconcilers::Hostname;
use reconcilers::certificate::{Backoff, Budget, BudgetLimit, CertificateRecord, CertificateState};
use reconcilers::cloud::{CloudProvider, DnsAnswers, Owner};
use reconcilers::sim::{ClockMode, SimAcme, SimAcmeConfig, SimConfig, SimDomains};
use reconcilers::status::{ResourceKind, ResourceStatus};
use shop_controller::controller::{CertificateSettings, ControllerConfig};
use shop_controller::dev::{DEV_REGION, StoreChallenges, dev_region_config};
use shop_controller::grpc::proto::{DeleteShopRequest, DeployShopRequest};
use shop_controller::store::Store;

use crate::controller::{Running, start_with_certificates};
use crate::support::deploy_request;

struct World {
    running: Running,
    ca: Arc<SimAcme>,
    domains: Arc<SimDomains>,
}

/// A controller whose certificates come from a simulated CA that validates through simulated
/// DNS, where the region's static IPs lead to the controller's responder (the store's tokens).
async fn world(
    clock: ClockMode,
    ca_config: SimAcmeConfig,
    tune: impl FnOnce(&mut CertificateSettings),
) -> World {
    let made: Arc<OnceLock<(Arc<SimAcme>, Arc<SimDomains>)>> = Arc::new(OnceLock::new());
    let slot = made.clone();
    let running = start_with_certificates(
        SimConfig {
            clock,
            ..SimConfig::default()
        },
        ControllerConfig::new("e2e", Duration::from_millis(500)),
        move |store| {
            let ours = dev_region_config().global_accelerator_ips;
            let domains = Arc::new(SimDomains::new(ours, Arc::new(StoreChallenges(store))));
            let ca = Arc::new(SimAcme::new(domains.clone(), ca_config));
            let mut settings = CertificateSettings::new(ca.clone(), domains.clone());
            settings.poll = Duration::from_millis(50);
            settings.self_check_backoff = Backoff {
                first: Duration::from_millis(200),
                max: Duration::from_secs(1),
            };
            tune(&mut settings);
            let _ = slot.set((ca, domains));
            Some(settings)
        },
    )
    .await;
    let (ca, domains) = made.get().cloned().expect("settings were made");
    World {
        running,
        ca,
        domains,
    }
}

fn host(name: &str) -> Hostname {
    Hostname::parse(name).expect("valid")
}

/// Points `domain` at the dev region's static IPs.
fn point_at_us(domains: &SimDomains, domain: &str) {
    domains.set_records(
        &host(domain),
        DnsAnswers {
            a: vec![
                Ipv4Addr::new(192, 0, 2, 10),
                Ipv4Addr::new(198, 51, 100, 10),
            ],
            ..DnsAnswers::default()
        },
    );
}

/// Deploys `shop` with `custom_domain` through gRPC, its source zip uploaded first.
pub(crate) async fn deploy(running: &Running, shop: &str, custom_domain: &str) {
    running.aws.put_object(
        "shop-sources",
        &format!("{shop}.zip"),
        shop_controller::dev::sample_shop_zip(),
    );
    let mut client = running.server.shops().await;
    client
        .deploy_shop(DeployShopRequest {
            custom_domain: Some(custom_domain.to_owned()),
            ..deploy_request(shop)
        })
        .await
        .expect("deploy");
}

fn store(world: &World) -> &dyn Store {
    world.running.store.store.as_ref()
}

async fn certificate_status(store: &dyn Store, shop: &str) -> Option<ResourceStatus> {
    let view = store.get_shop(shop).await.expect("read")?;
    view.resources
        .into_iter()
        .find(|r| r.kind == ResourceKind::Certificate)
}

/// Waits until the shop's certificate status has `reason` ("" for converged).
async fn certificate_reason(store: &dyn Store, shop: &str, reason: &str) -> ResourceStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = certificate_status(store, shop).await;
        if let Some(status) = &status
            && status.reason == reason
        {
            return status.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "certificate of {shop} never reached {reason:?}; last status {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the domain's certificate row is served.
async fn ready(store: &dyn Store, domain: &str) -> CertificateRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let record = store.certificate(domain).await.expect("read");
        if let Some(record) = &record
            && record.state == CertificateState::Ready
        {
            return record.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "certificate of {domain} never became ready; last row {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The certificates attached to the dev region's HTTPS listener, read from the simulated AWS.
pub(crate) async fn listener_certificates(running: &Running) -> Vec<String> {
    let region = running
        .store
        .store
        .get_region_config(DEV_REGION)
        .await
        .expect("read")
        .expect("region");
    let lb = running.aws.load_balancing(DEV_REGION);
    lb.describe_listener_certificates(&region.alb_https_listener_arns[0])
        .await
        .expect("describe")
}

/// Waits (up to `within`) for `domain`'s certificate to be replaced by one expiring later,
/// checking all along that the listener serves the first one's ARN: a renewal without a gap.
pub(crate) async fn renewed_without_a_gap(
    running: &Running,
    first: &CertificateRecord,
    within: Duration,
) -> CertificateRecord {
    let arn = first.acm_arn.clone().expect("imported");
    let deadline = tokio::time::Instant::now() + within;
    loop {
        assert_eq!(
            listener_certificates(running).await,
            vec![arn.clone()],
            "the listener kept the certificate throughout"
        );
        let record = running
            .store
            .store
            .certificate(first.domain.as_str())
            .await
            .expect("read")
            .expect("row");
        if record.not_after > first.not_after && record.state == CertificateState::Ready {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never renewed: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every ACM certificate of this installation, by ARN.
async fn our_certificates(world: &World) -> Vec<String> {
    let acm = world.running.aws.certificates(DEV_REGION);
    let mut ours = Vec::new();
    for arn in acm.list_certificates().await.expect("list") {
        let tags = acm.list_tags(&arn).await.expect("tags");
        if Owner::from_tags(&tags).is_some_and(|o| o.installation == "e2e") {
            ours.push(arn);
        }
    }
    ours
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_domain_is_served_and_renewed_into_the_same_arn_without_a_gap() {
    // Real time: renewal is decided on the wall clock, and ACM refuses expired imports.
    let world = world(
        ClockMode::Scaled(1.0),
        SimAcmeConfig {
            validity: Duration::from_secs(6),
            ..SimAcmeConfig::default()
        },
        |_| {},
    )
    .await;
    point_at_us(&world.domains, "shop.example.com");
    deploy(&world.running, "a.es-hs.com", "shop.example.com").await;

    let first = ready(store(&world), "shop.example.com").await;
    let arn = first.acm_arn.clone().expect("imported");
    assert_eq!(
        listener_certificates(&world.running).await,
        vec![arn.clone()]
    );
    let status = certificate_reason(store(&world), "a.es-hs.com", "").await;
    assert!(status.observed.contains(&arn), "{status:?}");
    let acm = world.running.aws.certificates(DEV_REGION);
    let summary = acm.describe_certificate(&arn).await.expect("describe");
    assert_eq!(summary.domain, "shop.example.com");
    assert_eq!(our_certificates(&world).await, vec![arn.clone()]);

    // Renewal at two thirds of six seconds; the listener serves the ARN all along.
    let renewed = renewed_without_a_gap(&world.running, &first, Duration::from_secs(20)).await;
    assert_eq!(renewed.acm_arn.as_deref(), Some(arn.as_str()), "same ARN");
    let after = acm.describe_certificate(&arn).await.expect("describe");
    assert_eq!(after.not_after, renewed.not_after);
    let owner = Owner::from_tags(&acm.list_tags(&arn).await.expect("tags")).expect("tagged");
    assert_eq!(
        (owner.shop.as_str(), owner.resource.as_str()),
        ("a.es-hs.com", "certificate")
    );
    assert!(world.ca.certificates_issued() >= 2);
    world.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_not_pointing_at_us_places_no_order_until_it_does() {
    let world = world(ClockMode::Scaled(40.0), SimAcmeConfig::default(), |_| {}).await;
    deploy(&world.running, "a.es-hs.com", "shop.example.com").await;

    let status = certificate_reason(store(&world), "a.es-hs.com", "SelfCheckFailed").await;
    assert!(
        status.message.contains("no order placed"),
        "{}",
        status.message
    );
    assert!(status.message.contains("(fix: "), "{}", status.message);
    // Backing off (0.2 s doubling to 1 s), not hot-looping, and never asking the CA.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(world.ca.orders_placed(), 0);
    let runs: u64 = world
        .running
        .controller
        .loop_stats()
        .iter()
        .filter(|(kind, _)| *kind == ResourceKind::Certificate)
        .map(|(_, stats)| stats.runs.total())
        .sum();
    assert!(runs < 40, "{runs} certificate runs in under two seconds");

    point_at_us(&world.domains, "shop.example.com");
    let record = ready(store(&world), "shop.example.com").await;
    assert_eq!(record.failures, 0);
    assert_eq!(record.last_error, None);
    assert_eq!(world.ca.orders_placed(), 1);
    world.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_challenge_backs_off_and_counts_against_the_domain() {
    let world = world(ClockMode::Scaled(40.0), SimAcmeConfig::default(), |_| {}).await;
    point_at_us(&world.domains, "shop.example.com");
    world.ca.reject_validations(&host("shop.example.com"));
    deploy(&world.running, "a.es-hs.com", "shop.example.com").await;

    let status = certificate_reason(store(&world), "a.es-hs.com", "ChallengeRejected").await;
    assert!(status.message.contains("rejected"), "{}", status.message);
    assert!(
        status.message.contains("next attempt at"),
        "{}",
        status.message
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        world.ca.orders_placed(),
        1,
        "an hour's backoff before the next order"
    );
    let record = store(&world)
        .certificate("shop.example.com")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(record.state, CertificateState::Failed);
    assert_eq!(record.failures, 1);
    let in_an_hour = record.next_attempt_at.expect("next attempt") - record.updated_at;
    assert!(in_an_hour >= 3_599_000, "{in_an_hour} ms");
    let one = BudgetLimit {
        limit: 1,
        window: Duration::from_secs(3600),
    };
    let counted = store(&world)
        .check_budget(
            Budget::FailedValidations,
            "shop.example.com",
            one,
            shop_controller::store::now_millis(),
        )
        .await
        .expect("check");
    assert!(counted.is_err(), "the failed validation was counted");
    world.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_listener_slots_and_an_exhausted_budget_wait_with_their_reason() {
    let world = world(
        ClockMode::Scaled(40.0),
        SimAcmeConfig::default(),
        |settings| {
            settings.slots_per_listener = 1;
            settings.budgets.new_orders.limit = 2;
        },
    )
    .await;
    for domain in ["one.example.com", "two.example.com", "three.example.com"] {
        point_at_us(&world.domains, domain);
    }
    deploy(&world.running, "one.es-hs.com", "one.example.com").await;
    ready(store(&world), "one.example.com").await;

    deploy(&world.running, "two.es-hs.com", "two.example.com").await;
    let full = certificate_reason(store(&world), "two.es-hs.com", "CertificateSlotsFull").await;
    assert!(
        full.message
            .contains("Certificates per Application Load Balancer"),
        "{}",
        full.message
    );
    // Issued and imported, waiting only for a slot.
    let waiting = store(&world)
        .certificate("two.example.com")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(waiting.state, CertificateState::Issued);
    assert_eq!(listener_certificates(&world.running).await.len(), 1);

    deploy(&world.running, "three.es-hs.com", "three.example.com").await;
    let exhausted = certificate_reason(store(&world), "three.es-hs.com", "BudgetExhausted").await;
    assert!(
        exhausted.message.contains("new orders per ACME account"),
        "{}",
        exhausted.message
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.ca.orders_placed(), 2, "the budget held");
    world.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_domain_replaces_its_certificate_and_a_deleted_shop_leaves_none() {
    let world = world(ClockMode::Scaled(40.0), SimAcmeConfig::default(), |_| {}).await;
    point_at_us(&world.domains, "old.example.com");
    point_at_us(&world.domains, "new.example.com");
    deploy(&world.running, "a.es-hs.com", "old.example.com").await;
    let old = ready(store(&world), "old.example.com").await;

    deploy(&world.running, "a.es-hs.com", "new.example.com").await;
    let new = ready(store(&world), "new.example.com").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store(&world)
        .certificate("old.example.com")
        .await
        .expect("read")
        .is_some()
    {
        assert!(tokio::time::Instant::now() < deadline, "old row stayed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let new_arn = new.acm_arn.clone().expect("imported");
    assert_ne!(old.acm_arn.as_deref(), Some(new_arn.as_str()));
    assert_eq!(
        listener_certificates(&world.running).await,
        vec![new_arn.clone()]
    );
    assert_eq!(our_certificates(&world).await, vec![new_arn]);

    let mut client = world.running.server.shops().await;
    client
        .delete_shop(DeleteShopRequest {
            shop_domain: "a.es-hs.com".to_owned(),
        })
        .await
        .expect("delete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store(&world)
        .get_shop("a.es-hs.com")
        .await
        .expect("read")
        .is_some()
    {
        assert!(tokio::time::Instant::now() < deadline, "shop never went");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(our_certificates(&world).await, Vec::<String>::new());
    assert_eq!(
        listener_certificates(&world.running).await,
        Vec::<String>::new()
    );
    assert!(
        store(&world)
            .list_certificates()
            .await
            .expect("rows")
            .is_empty()
    );
    world.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_information_brings_a_renewal_forward_into_the_same_arn() {
    let world = world(
        ClockMode::Scaled(40.0),
        SimAcmeConfig {
            renewal_info_retry: Duration::from_millis(200),
            ..SimAcmeConfig::default()
        },
        |_| {},
    )
    .await;
    point_at_us(&world.domains, "shop.example.com");
    deploy(&world.running, "a.es-hs.com", "shop.example.com").await;
    let first = ready(store(&world), "shop.example.com").await;
    let arn = first.acm_arn.clone().expect("imported");
    assert!(
        first.renewal_info_id.is_some(),
        "identified for renewal information"
    );

    // The CA asks for a renewal now, as before a revocation; two thirds is 60 days away.
    let now = shop_controller::store::now_millis();
    world
        .ca
        .suggest_renewal(&host("shop.example.com"), now - 1_000, now);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let renewed = loop {
        let row = store(&world)
            .certificate("shop.example.com")
            .await
            .expect("read")
            .expect("row");
        // A new certificate has a new serial, so a new identifier.
        if row.renewal_info_id != first.renewal_info_id && row.state == CertificateState::Ready {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never renewed: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(renewed.acm_arn, Some(arn.clone()), "same ARN");
    // The new certificate has its own window (or none asked yet): weeks away, not now.
    let month = 30 * 86_400_000;
    assert!(
        renewed
            .renew_after
            .is_none_or(|at| at > shop_controller::store::now_millis() + month),
        "{:?}",
        renewed.renew_after
    );
    assert_eq!(listener_certificates(&world.running).await, vec![arn]);
    assert_eq!(world.ca.certificates_issued(), 2);
    world.running.stop().await;
}
