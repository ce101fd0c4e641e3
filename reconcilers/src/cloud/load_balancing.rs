//! Load balancing: NLB target groups and listeners per shop, ALB listener certificates.
//! Reads are bulk (per load balancer, batches of ARNs) so a resync costs a few calls, not a few
//! per shop.

use async_trait::async_trait;

use super::{CloudError, Tag};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancer {
    pub arn: String,
    pub dns_name: String,
    /// `network` or `application`.
    pub kind: String,
    pub vpc_id: String,
}

/// Health check settings of a target group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub protocol: String,
    pub interval_seconds: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            protocol: "TCP".to_owned(),
            interval_seconds: 10,
            healthy_threshold: 3,
            unhealthy_threshold: 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroupSpec {
    /// At most 32 letters, digits and hyphens, unique per region.
    pub name: String,
    pub port: u16,
    pub vpc_id: String,
    pub health_check: HealthCheck,
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
    pub port: u16,
    pub protocol: String,
    pub vpc_id: String,
    pub health_check: HealthCheck,
    pub load_balancer_arns: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub id: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetHealth {
    pub target: Target,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining` or `unavailable`.
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    pub load_balancer_arn: String,
    pub port: u16,
    /// `TCP` for shop listeners.
    pub protocol: String,
    pub target_group_arn: String,
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub arn: String,
    pub load_balancer_arn: String,
    pub port: u16,
    pub protocol: String,
    /// The target group of the default forward action, if that is the action.
    pub target_group_arn: Option<String>,
}

/// The calls the controller makes on Elastic Load Balancing v2.
#[async_trait]
pub trait LoadBalancing: Send + Sync {
    async fn describe_load_balancers(
        &self,
        arns: &[String],
    ) -> Result<Vec<LoadBalancer>, CloudError>;

    /// Target groups by ARN (any number; batched and paged inside).
    async fn describe_target_groups(&self, arns: &[String])
    -> Result<Vec<TargetGroup>, CloudError>;

    /// Every target group of the region (all pages), for finding what we own by tag.
    async fn list_target_groups(&self) -> Result<Vec<TargetGroup>, CloudError>;

    /// Creates a target group; an identical existing one is returned as it is (AWS's rule).
    async fn create_target_group(&self, spec: &TargetGroupSpec) -> Result<TargetGroup, CloudError>;

    async fn delete_target_group(&self, arn: &str) -> Result<(), CloudError>;

    async fn register_targets(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> Result<(), CloudError>;

    async fn deregister_targets(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> Result<(), CloudError>;

    async fn describe_target_health(
        &self,
        target_group_arn: &str,
    ) -> Result<Vec<TargetHealth>, CloudError>;

    /// Every listener of a load balancer (all pages).
    async fn describe_listeners(
        &self,
        load_balancer_arn: &str,
    ) -> Result<Vec<Listener>, CloudError>;

    async fn create_listener(&self, spec: &ListenerSpec) -> Result<Listener, CloudError>;

    async fn delete_listener(&self, arn: &str) -> Result<(), CloudError>;

    /// Certificate ARNs attached to a listener besides its default one (all pages).
    async fn describe_listener_certificates(
        &self,
        listener_arn: &str,
    ) -> Result<Vec<String>, CloudError>;

    async fn add_listener_certificates(
        &self,
        listener_arn: &str,
        certificate_arns: &[String],
    ) -> Result<(), CloudError>;

    async fn remove_listener_certificates(
        &self,
        listener_arn: &str,
        certificate_arns: &[String],
    ) -> Result<(), CloudError>;

    /// Tags of many resources (batched by 20 inside), in the order of `arns`.
    async fn describe_tags(&self, arns: &[String]) -> Result<Vec<(String, Vec<Tag>)>, CloudError>;

    async fn add_tags(&self, arn: &str, tags: &[Tag]) -> Result<(), CloudError>;
}

/// Tags already read in bulk, by ARN, so that observing one object needs no call of its own.
pub type KnownTags = std::collections::HashMap<String, Vec<Tag>>;

/// The tags of one resource: from `known` when they were read in bulk, else asked for.
pub async fn tags_known_or_read(
    load_balancing: &dyn LoadBalancing,
    arn: &str,
    known: &KnownTags,
) -> Result<Vec<Tag>, CloudError> {
    match known.get(arn) {
        Some(tags) => Ok(tags.clone()),
        None => tags_of(load_balancing, arn).await,
    }
}

/// The tags of one resource (an empty list when it has none).
pub async fn tags_of(
    load_balancing: &dyn LoadBalancing,
    arn: &str,
) -> Result<Vec<Tag>, CloudError> {
    let described = load_balancing.describe_tags(&[arn.to_owned()]).await?;
    Ok(described
        .into_iter()
        .next()
        .map(|(_, tags)| tags)
        .unwrap_or_default())
}
