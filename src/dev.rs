//! `shop-controller dev`: an embedded controller over a simulated AWS, seeded so that a user
//! can deploy a shop right away:
//!
//! ```text
//! shopctl deploy example.es-hs.com --region eu-west-1 --source-bucket shop-sources
//! ```

use std::net::Ipv4Addr;
use std::sync::Arc;

use reconcilers::Hostname;
use reconcilers::config::{InstanceGroup, RegionConfig};
use reconcilers::sim::SimulatedAws;
use reconcilers::source::build_stored_zip;
use reconcilers::spec::{BucketName, RegionName};

use crate::store::{Store, StoreError, now_millis};

pub const DEV_REGION: &str = "eu-west-1";
pub const DEV_PARENT_DOMAIN: &str = "es-hs.com";
pub const DEV_SOURCE_BUCKET: &str = "shop-sources";
pub const DEV_SAMPLE_SHOPS: [&str; 2] = ["example.es-hs.com", "demo.es-hs.com"];
const DEV_ACCOUNT: &str = "123456789012";

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

/// The region the development controller deploys into.
pub fn dev_region_config() -> RegionConfig {
    let valid = "constant is valid";
    RegionConfig {
        region: RegionName::parse(DEV_REGION).expect(valid),
        enabled: true,
        codebuild_project: "shop-build".to_owned(),
        artifact_bucket: BucketName::parse("shop-artifacts").expect(valid),
        codedeploy_application: "shops".to_owned(),
        proxy_name_tag: "shop-proxy".to_owned(),
        nginx_config_dir: "/mnt/efs/nginx/shops".to_owned(),
        alb_https_listener_arns: vec![format!(
            "arn:aws:elasticloadbalancing:{DEV_REGION}:{DEV_ACCOUNT}:listener/app/proxy/0123456789abcdef/0123456789abcdef"
        )],
        global_accelerator_ips: vec![
            Ipv4Addr::new(192, 0, 2, 10).into(),
            Ipv4Addr::new(198, 51, 100, 10).into(),
        ],
        allowed_parent_domains: vec![Hostname::parse(DEV_PARENT_DOMAIN).expect(valid)],
        updated_at: 0,
    }
}

/// The instance group the development controller places shops on.
pub fn dev_instance_group() -> InstanceGroup {
    InstanceGroup {
        name: "shops-a".to_owned(),
        region: RegionName::parse(DEV_REGION).expect("constant is valid"),
        nlb_arns: vec![format!(
            "arn:aws:elasticloadbalancing:{DEV_REGION}:{DEV_ACCOUNT}:loadbalancer/net/shops-a/0123456789abcdef"
        )],
        port_min: 20000,
        port_max: 20999,
        capacity: 500,
        codedeploy_deployment_group: "shops-a".to_owned(),
        enabled: true,
        updated_at: 0,
    }
}

/// Seeds the simulated AWS with the sample sources and the store with the sample region and
/// group (configuration an operator already changed is left alone).
pub async fn seed(store: &dyn Store, aws: &Arc<SimulatedAws>) -> Result<(), StoreError> {
    aws.create_bucket(DEV_SOURCE_BUCKET);
    for shop in DEV_SAMPLE_SHOPS {
        aws.put_object(DEV_SOURCE_BUCKET, &format!("{shop}.zip"), sample_shop_zip());
    }
    let now = now_millis();
    if store.get_region_config(DEV_REGION).await?.is_none() {
        store.put_region_config(&dev_region_config(), now).await?;
    }
    let group = dev_instance_group();
    if store.get_instance_group(&group.name).await?.is_none() {
        store.put_instance_group(&group, now).await?;
    }
    tracing::info!(
        region = DEV_REGION,
        bucket = DEV_SOURCE_BUCKET,
        "seeded the simulated aws"
    );
    Ok(())
}
