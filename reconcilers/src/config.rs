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
        if self.allowed_parent_domains.is_empty() {
            return Err(invalid(
                "allowed_parent_domains",
                "name at least one parent domain",
            ));
        }
        Ok(())
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
