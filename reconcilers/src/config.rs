//! Configuration tables that say where shops can go: one [`RegionConfig`] per AWS region and
//! the [`InstanceGroup`]s that run shops. Validated here so the store only ever holds
//! configuration the reconcilers can use.

use std::net::IpAddr;

use crate::hostname::Hostname;
use crate::spec::{BucketName, RegionName};

/// Everything the controller needs to deploy shops into one region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionConfig {
    pub region: RegionName,
    /// A disabled region takes no new deploys.
    pub enabled: bool,
    pub codebuild_project: String,
    /// Where CodeBuild stores built artifacts.
    pub artifact_bucket: BucketName,
    pub codedeploy_application: String,
    /// `Name` tag of the proxy (nginx) instances.
    pub proxy_name_tag: String,
    /// Directory on the shared EFS volume with one nginx file per shop.
    pub nginx_config_dir: String,
    /// HTTPS listeners of the proxy ALB for custom-domain certificates.
    pub alb_https_listener_arns: Vec<String>,
    /// The target group of the controller's ACME HTTP-01 responder (made by the operator).
    /// When set, the proxy ALB (the load balancer of `alb_https_listener_arns`) gets a port-80
    /// listener forwarding `/.well-known/acme-challenge/*` there; `None` leaves port 80 alone.
    pub acme_responder_target_group_arn: Option<String>,
    /// Static IPs of the region's Global Accelerator.
    pub global_accelerator_ips: Vec<IpAddr>,
    /// Shop (ES) domains must sit under one of these.
    pub allowed_parent_domains: Vec<Hostname>,
    pub updated_at: i64,
}

/// EC2 instances sharing one `Name` tag that run shops, each on its own port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceGroup {
    /// The `Name` tag shared by the group's instances; also the group's id.
    pub name: String,
    pub region: RegionName,
    pub nlb_arns: Vec<String>,
    pub port_min: u16,
    pub port_max: u16,
    /// Most shops the group runs.
    pub capacity: u32,
    pub codedeploy_deployment_group: String,
    /// A disabled group takes no new shops.
    pub enabled: bool,
    pub updated_at: i64,
}

/// A configuration field that does not hold a usable value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

/// Names of AWS resources the user types in (projects, applications, tag values): printable
/// ASCII without spaces or quotes, since they end up in API calls and logs.
pub fn check_resource_name(field: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > 255 {
        return Err(invalid(field, "must be 1 to 255 characters long"));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_.:/@+=".contains(&b);
    if !value.bytes().all(allowed) {
        return Err(invalid(
            field,
            format!("{value:?} may hold only letters, digits and -_.:/@+="),
        ));
    }
    Ok(())
}

/// An ARN of the given service, such as `elasticloadbalancing`.
pub fn check_arn(field: &'static str, value: &str, service: &str) -> Result<(), ConfigError> {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == service
        && !parts[5].is_empty();
    check_resource_name(field, value)?;
    if ok {
        Ok(())
    } else {
        Err(invalid(field, format!("{value:?} is not an {service} ARN")))
    }
}

impl RegionConfig {
    /// Checks the fields a [`RegionConfig`] cannot be used without.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_resource_name("codebuild_project", &self.codebuild_project)?;
        check_resource_name("codedeploy_application", &self.codedeploy_application)?;
        check_resource_name("proxy_name_tag", &self.proxy_name_tag)?;
        if !self.nginx_config_dir.starts_with('/') || self.nginx_config_dir.contains("..") {
            return Err(invalid(
                "nginx_config_dir",
                "must be an absolute path without `..`",
            ));
        }
        check_resource_name("nginx_config_dir", &self.nginx_config_dir)?;
        for arn in &self.alb_https_listener_arns {
            check_arn("alb_https_listener_arns", arn, "elasticloadbalancing")?;
        }
        if let Some(arn) = &self.acme_responder_target_group_arn {
            self.check_acme_responder(arn)?;
        }
        if self.allowed_parent_domains.is_empty() {
            return Err(invalid(
                "allowed_parent_domains",
                "name at least one parent domain",
            ));
        }
        Ok(())
    }
}

impl RegionConfig {
    /// The proxy ALB: the load balancer of the HTTPS listeners, when they name exactly one
    /// application load balancer.
    pub fn proxy_alb_arn(&self) -> Option<String> {
        let mut balancers = self
            .alb_https_listener_arns
            .iter()
            .map(|arn| alb_arn_of_listener(arn));
        let first = balancers.next()??;
        balancers
            .all(|other| other.as_deref() == Some(first.as_str()))
            .then_some(first)
    }

    /// A responder target group needs an ALB to route to it: the HTTPS listeners must name
    /// one application load balancer, which the port-80 listener joins.
    fn check_acme_responder(&self, arn: &str) -> Result<(), ConfigError> {
        const FIELD: &str = "acme_responder_target_group_arn";
        check_arn(FIELD, arn, "elasticloadbalancing")?;
        if !arn.contains(":targetgroup/") {
            return Err(invalid(FIELD, format!("{arn:?} is not a target group ARN")));
        }
        if self.proxy_alb_arn().is_none() {
            return Err(invalid(
                "alb_https_listener_arns",
                "with an ACME responder target group, name the HTTPS listeners of exactly one \
                 application load balancer",
            ));
        }
        Ok(())
    }
}

/// The ARN of the application load balancer a listener belongs to:
/// `arn:…:listener/app/<name>/<lb-id>/<listener-id>` becomes `arn:…:loadbalancer/app/<name>/<lb-id>`.
/// `None` for anything but an ALB listener's ARN.
pub fn alb_arn_of_listener(listener_arn: &str) -> Option<String> {
    let (prefix, resource) = listener_arn.split_once(":listener/app/")?;
    let parts: Vec<&str> = resource.split('/').collect();
    match parts[..] {
        [name, id, listener] if !name.is_empty() && !id.is_empty() && !listener.is_empty() => {
            Some(format!("{prefix}:loadbalancer/app/{name}/{id}"))
        }
        _ => None,
    }
}

impl InstanceGroup {
    /// Checks the group's fields and that its port range can hold its capacity.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_resource_name("name", &self.name)?;
        check_resource_name(
            "codedeploy_deployment_group",
            &self.codedeploy_deployment_group,
        )?;
        if self.nlb_arns.is_empty() {
            return Err(invalid(
                "nlb_arns",
                "name at least one network load balancer",
            ));
        }
        for arn in &self.nlb_arns {
            check_arn("nlb_arns", arn, "elasticloadbalancing")?;
        }
        if self.port_min < 1024 || self.port_min > self.port_max {
            return Err(invalid(
                "port_min",
                format!(
                    "port range {}-{} must be non-empty and above 1023",
                    self.port_min, self.port_max
                ),
            ));
        }
        if self.capacity == 0 {
            return Err(invalid("capacity", "must be at least 1"));
        }
        let ports = u32::from(self.port_max - self.port_min) + 1;
        if self.capacity > ports {
            return Err(invalid(
                "capacity",
                format!("{} exceeds the {ports} ports of the range", self.capacity),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NLB: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/shops/50dc6c495c0c9188";

    fn group() -> InstanceGroup {
        InstanceGroup {
            name: "shops-a".to_owned(),
            region: RegionName::parse("eu-west-1").expect("valid"),
            nlb_arns: vec![NLB.to_owned()],
            port_min: 20000,
            port_max: 20099,
            capacity: 50,
            codedeploy_deployment_group: "shops-a".to_owned(),
            enabled: true,
            updated_at: 0,
        }
    }

    const LISTENER: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/proxy/50dc6c495c0c9188/f2f7dc8efc522ab2";
    const ALB: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/proxy/50dc6c495c0c9188";
    const RESPONDER: &str =
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/acme/73e2d6bc24d8a067";

    fn region() -> RegionConfig {
        RegionConfig {
            region: RegionName::parse("eu-west-1").expect("valid"),
            enabled: true,
            codebuild_project: "shop-build".to_owned(),
            artifact_bucket: BucketName::parse("shop-artifacts").expect("valid"),
            codedeploy_application: "shops".to_owned(),
            proxy_name_tag: "shop-proxy".to_owned(),
            nginx_config_dir: "/mnt/efs/nginx".to_owned(),
            alb_https_listener_arns: vec![LISTENER.to_owned()],
            acme_responder_target_group_arn: Some(RESPONDER.to_owned()),
            global_accelerator_ips: vec![],
            allowed_parent_domains: vec![Hostname::parse("es-hs.com").expect("valid")],
            updated_at: 0,
        }
    }

    #[test]
    fn listener_arns_lead_to_their_load_balancer() {
        let nlb_listener = "arn:aws:elasticloadbalancing:eu-west-1:1:listener/net/shops/50dc/f2f7";
        let cases = [
            (LISTENER, Some(ALB)),
            (
                "arn:aws-cn:elasticloadbalancing:cn-north-1:1:listener/app/a-b/c1/d2",
                Some("arn:aws-cn:elasticloadbalancing:cn-north-1:1:loadbalancer/app/a-b/c1"),
            ),
            (nlb_listener, None),
            (ALB, None),
            (
                "arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/proxy/50dc",
                None,
            ),
            (
                "arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/proxy//f2f7",
                None,
            ),
            (
                "arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/p/5/f/extra",
                None,
            ),
            ("", None),
        ];
        for (listener, expected) in cases {
            assert_eq!(
                alb_arn_of_listener(listener).as_deref(),
                expected,
                "{listener}"
            );
        }
    }

    #[test]
    fn the_proxy_alb_is_the_one_load_balancer_of_the_https_listeners() {
        let mut config = region();
        assert_eq!(config.proxy_alb_arn().as_deref(), Some(ALB));
        config
            .alb_https_listener_arns
            .push(format!("{ALB}/0123456789abcdef").replace(":loadbalancer/", ":listener/"));
        assert_eq!(
            config.proxy_alb_arn().as_deref(),
            Some(ALB),
            "two of one ALB"
        );
        config
            .alb_https_listener_arns
            .push(LISTENER.replace("/proxy/", "/other/"));
        assert_eq!(config.proxy_alb_arn(), None, "two ALBs");
        config.alb_https_listener_arns.clear();
        assert_eq!(config.proxy_alb_arn(), None, "none");
    }

    #[test]
    fn region_validation() {
        assert_eq!(region().validate(), Ok(()));
        let without = RegionConfig {
            acme_responder_target_group_arn: None,
            alb_https_listener_arns: vec![],
            ..region()
        };
        assert_eq!(without.validate(), Ok(()), "no responder needs no ALB");
        type Mutation = fn(&mut RegionConfig);
        let responder = "acme_responder_target_group_arn";
        let cases: Vec<(Mutation, &str)> = vec![
            (
                |r| r.codebuild_project = "has space".to_owned(),
                "codebuild_project",
            ),
            (
                |r| r.nginx_config_dir = "relative".to_owned(),
                "nginx_config_dir",
            ),
            (
                |r| r.alb_https_listener_arns = vec!["arn:aws:s3:::b".to_owned()],
                "alb_https_listener_arns",
            ),
            (
                |r| r.acme_responder_target_group_arn = Some("arn:aws:s3:::b".to_owned()),
                responder,
            ),
            (
                |r| r.acme_responder_target_group_arn = Some(ALB.to_owned()),
                responder,
            ),
            (
                |r| r.alb_https_listener_arns.clear(),
                "alb_https_listener_arns",
            ),
            (
                |r| {
                    r.alb_https_listener_arns =
                        vec![ALB.replace(":loadbalancer/app/", ":listener/net/") + "/f2"]
                },
                "alb_https_listener_arns",
            ),
            (
                |r| r.allowed_parent_domains.clear(),
                "allowed_parent_domains",
            ),
        ];
        for (mutate, field) in cases {
            let mut r = region();
            mutate(&mut r);
            assert_eq!(r.validate().map_err(|e| e.field), Err(field));
        }
    }

    #[test]
    fn group_validation() {
        assert_eq!(group().validate(), Ok(()));
        type Mutation = fn(&mut InstanceGroup);
        let cases: Vec<(Mutation, &str)> = vec![
            (|g| g.name = "has space".to_owned(), "name"),
            (|g| g.nlb_arns.clear(), "nlb_arns"),
            (
                |g| g.nlb_arns = vec!["arn:aws:s3:::bucket".to_owned()],
                "nlb_arns",
            ),
            (|g| g.port_min = 80, "port_min"),
            (|g| g.port_max = 10, "port_min"),
            (|g| g.capacity = 0, "capacity"),
            (|g| g.capacity = 101, "capacity"),
        ];
        for (mutate, field) in cases {
            let mut g = group();
            mutate(&mut g);
            assert_eq!(g.validate().map_err(|e| e.field), Err(field));
        }
    }
}
