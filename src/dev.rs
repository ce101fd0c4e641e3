//! `shop-controller dev`: an embedded controller over a simulated AWS, seeded so that a user
//! can deploy a shop right away:
//!
//! ```text
//! shopctl deploy example.es-hs.com --region eu-west-1 --source-bucket shop-sources
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use reconcilers::Hostname;
use reconcilers::cloud::DnsAnswers;
use reconcilers::config::{InstanceGroup, RegionConfig};
use reconcilers::sim::{LoadBalancerKind, SimDomains, SimulatedAws};
use reconcilers::source::build_stored_zip;
use reconcilers::spec::{BucketName, RegionName};

use crate::store::{Store, StoreError, now_millis};

pub const DEV_REGION: &str = "eu-west-1";
pub const DEV_PARENT_DOMAIN: &str = "es-hs.com";
pub const DEV_SOURCE_BUCKET: &str = "shop-sources";
pub const DEV_ARTIFACT_BUCKET: &str = "shop-artifacts";
pub const DEV_SAMPLE_SHOPS: [&str; 2] = ["example.es-hs.com", "demo.es-hs.com"];
const DEV_ACCOUNT: &str = "123456789012";
/// Custom domains the dev controller's simulated DNS knows, for `shopctl domain check`: one
/// pointing at the dev region, one with a stray AAAA record, one behind Cloudflare.
pub const DEV_SAMPLE_DOMAINS: [&str; 3] = [
    "shop.example.com",
    "stray-aaaa.example.com",
    "proxied.example.com",
];

/// The simulated world's view of the HTTP-01 responder: the tokens in the store, answered as
/// any replica's responder answers them.
pub struct StoreChallenges(pub Arc<dyn Store>);

#[async_trait::async_trait]
impl reconcilers::sim::ChallengeSource for StoreChallenges {
    async fn answer(&self, token: &str) -> Option<String> {
        match self.0.challenge_response(token, now_millis()).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(%error, "could not read a challenge token");
                None
            }
        }
    }
}

/// A sample shop source: the `scripts/` hooks CodeDeploy runs, and the app itself.
pub fn sample_shop_zip() -> Vec<u8> {
    build_stored_zip(&[
        ("appspec.yml", b"version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: scripts/start.sh\n"),
        ("scripts/", b""),
        ("scripts/start.sh", b"#!/bin/sh\nexec node server.js --port \"$SHOP_PORT\"\n"),
        ("scripts/stop.sh", b"#!/bin/sh\npkill -f \"server.js --port $SHOP_PORT\" || true\n"),
        ("server.js", b"require('http').createServer((_, r) => r.end('hello')).listen(process.argv[3]);\n"),
    ])
}

/// The region the development controller deploys into; `alb_listener` is the simulated proxy
/// ALB's HTTPS listener.
pub fn dev_region_config_with(alb_listener: &str) -> RegionConfig {
    let valid = "constant is valid";
    RegionConfig {
        region: RegionName::parse(DEV_REGION).expect(valid),
        enabled: true,
        codebuild_project: "shop-build".to_owned(),
        artifact_bucket: BucketName::parse(DEV_ARTIFACT_BUCKET).expect(valid),
        codedeploy_application: "shops".to_owned(),
        proxy_name_tag: "shop-proxy".to_owned(),
        nginx_config_dir: "/mnt/efs/nginx/shops".to_owned(),
        alb_https_listener_arns: vec![alb_listener.to_owned()],
        acme_responder_target_group_arn: None,
        global_accelerator_ips: vec![
            Ipv4Addr::new(192, 0, 2, 10).into(),
            Ipv4Addr::new(198, 51, 100, 10).into(),
        ],
        allowed_parent_domains: vec![Hostname::parse(DEV_PARENT_DOMAIN).expect(valid)],
        updated_at: 0,
    }
}

/// The simulated DNS of the dev controller: [`DEV_SAMPLE_DOMAINS`], with the dev region's
/// static IPs leading to our responder, which answers from `store`'s challenges.
pub fn dev_domains(store: Arc<dyn Store>) -> SimDomains {
    let region_ips = dev_region_config().global_accelerator_ips;
    let ours: Vec<Ipv4Addr> = region_ips
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    let cloudflare = Ipv4Addr::new(104, 16, 0, 1);
    // Cloudflare's proxy forwards to our static IPs, so its address leads to us too.
    let served = region_ips.into_iter().chain([cloudflare.into()]).collect();
    let domains = SimDomains::new(served, Arc::new(StoreChallenges(store)));
    let samples = [
        DnsAnswers {
            a: ours.clone(),
            ..DnsAnswers::default()
        },
        DnsAnswers {
            a: ours,
            aaaa: vec![Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)],
            ..DnsAnswers::default()
        },
        DnsAnswers {
            a: vec![cloudflare],
            ..DnsAnswers::default()
        },
    ];
    for (name, answers) in DEV_SAMPLE_DOMAINS.into_iter().zip(samples) {
        let name = Hostname::parse(name).expect("constant is valid");
        domains.set_records(&name, answers);
    }
    domains
}

/// The region config of the dev controller with a placeholder listener, for tests that need
/// a valid config without a simulated account.
pub fn dev_region_config() -> RegionConfig {
    dev_region_config_with(&format!(
        "arn:aws:elasticloadbalancing:{DEV_REGION}:{DEV_ACCOUNT}:listener/app/proxy/0123456789abcdef/0123456789abcdef"
    ))
}

/// The instance group of the dev controller with a placeholder NLB (see [`dev_region_config`]).
pub fn dev_instance_group() -> InstanceGroup {
    dev_instance_group_with(&format!(
        "arn:aws:elasticloadbalancing:{DEV_REGION}:{DEV_ACCOUNT}:loadbalancer/net/shops-a/0123456789abcdef"
    ))
}

/// The instance group the development controller places shops on, fronted by `nlb`.
pub fn dev_instance_group_with(nlb: &str) -> InstanceGroup {
    InstanceGroup {
        name: "shops-a".to_owned(),
        region: RegionName::parse(DEV_REGION).expect("constant is valid"),
        nlb_arns: vec![nlb.to_owned()],
        port_min: 20000,
        port_max: 20999,
        capacity: 500,
        codedeploy_deployment_group: "shops-a".to_owned(),
        enabled: true,
        updated_at: 0,
    }
}

/// Seeds the simulated AWS with sample sources, instances and load balancers, and the store
/// with the sample region and group (fields an operator changed are kept, except the ARNs of
/// the simulated load balancers, which are new on every start).
///
/// `nginx_dir` (absolute, existing) stands in for the EFS directory the proxies read.
pub async fn seed(
    store: &dyn Store,
    aws: &Arc<SimulatedAws>,
    nginx_dir: &Path,
) -> Result<(), StoreError> {
    aws.create_bucket(DEV_SOURCE_BUCKET);
    aws.create_bucket(DEV_ARTIFACT_BUCKET);
    for shop in DEV_SAMPLE_SHOPS {
        aws.put_object(DEV_SOURCE_BUCKET, &format!("{shop}.zip"), sample_shop_zip());
    }
    for _ in 0..2 {
        aws.add_instance("shops-a");
        aws.add_instance("shop-proxy");
    }
    let nlb = aws.add_load_balancer(LoadBalancerKind::Network, "shops-a");
    let alb = aws.add_load_balancer(LoadBalancerKind::Application, "shop-proxy");
    let alb_listener = aws.https_listener_of(&alb).unwrap_or_default();
    let responder = aws.add_http_target_group("acme-responder", 8089);

    // The simulated account starts empty on every run, so its ARNs are written every time.
    let now = now_millis();
    let nginx_config_dir = nginx_dir.display().to_string();
    let mut region = RegionConfig {
        nginx_config_dir,
        acme_responder_target_group_arn: Some(responder.clone()),
        ..dev_region_config_with(&alb_listener)
    };
    if let Some(stored) = store.get_region_config(DEV_REGION).await? {
        region = RegionConfig {
            alb_https_listener_arns: vec![alb_listener],
            acme_responder_target_group_arn: Some(responder),
            nginx_config_dir: region.nginx_config_dir,
            ..stored
        };
    }
    store.put_region_config(&region, now).await?;
    let mut group = dev_instance_group_with(&nlb);
    if let Some(stored) = store.get_instance_group(&group.name).await? {
        group = InstanceGroup {
            nlb_arns: vec![nlb],
            ..stored
        };
    }
    store.put_instance_group(&group, now).await?;
    tracing::info!(
        region = DEV_REGION,
        bucket = DEV_SOURCE_BUCKET,
        "seeded the simulated aws"
    );
    Ok(())
}
