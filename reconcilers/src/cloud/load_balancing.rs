//! Load balancing: NLB target groups and listeners per shop, ALB listener certificates, and
//! the proxy ALB's HTTP listener with its rules (the ACME HTTP-01 path). Reads are bulk (per
//! load balancer, batches of ARNs) so a resync costs a few calls, not a few per shop.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{CloudError, Tag};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    pub arn: String,
    pub dns_name: String,
    /// `network` or `application`.
    pub kind: String,
    pub vpc_id: String,
}

/// Health check settings of a target group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroupSpec {
    /// At most 32 letters, digits and hyphens, unique per region.
    pub name: String,
    pub port: u16,
    pub vpc_id: String,
    pub health_check: HealthCheck,
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
    pub port: u16,
    pub protocol: String,
    pub vpc_id: String,
    pub health_check: HealthCheck,
    pub load_balancer_arns: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Target {
    pub id: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealth {
    pub target: Target,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining` or `unavailable`.
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerSpec {
    pub load_balancer_arn: String,
    pub port: u16,
    /// `TCP` for shop listeners.
    pub protocol: String,
    pub target_group_arn: String,
    pub tags: Vec<Tag>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub arn: String,
    pub load_balancer_arn: String,
    pub port: u16,
    pub protocol: String,
    /// The target group of the default forward action, if that is the action.
    pub target_group_arn: Option<String>,
    /// What the listener's default rule does.
    pub default_action: ListenerAction,
}

/// What a listener's default rule or one of its rules does with a request, as far as the
/// controller cares to tell actions apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListenerAction {
    /// Forward to one target group.
    Forward { target_group_arn: String },
    /// A permanent (301) redirect to `https://#{host}:443/#{path}?#{query}`: the same URL
    /// over HTTPS.
    RedirectToHttps,
    /// Anything else (fixed responses, other redirects, weighted forwards, authentication),
    /// described in a few words. Only ever observed: asking for one is `Invalid`.
    Other(String),
}

/// An HTTP listener of an application load balancer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpListenerSpec {
    pub load_balancer_arn: String,
    pub port: u16,
    pub default_action: ListenerAction,
    pub tags: Vec<Tag>,
}

/// A rule of an application load balancer's listener, as DescribeRules shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerRule {
    pub arn: String,
    /// 1 to 50000, lowest first; `None` for the default rule, which runs when no other
    /// rule matches.
    pub priority: Option<u32>,
    /// Values of the rule's path-pattern condition (empty for the default rule). Conditions
    /// on other fields are not shown.
    pub path_patterns: Vec<String>,
    pub action: ListenerAction,
}

impl ListenerRule {
    /// Whether this is the listener's default rule (its default action).
    pub fn is_default(&self) -> bool {
        self.priority.is_none()
    }
}

/// A rule to create on a listener: requests whose path matches one of `path_patterns` get
/// `action`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    pub listener_arn: String,
    /// 1 to 50000, unique per listener.
    pub priority: u32,
    /// 1 to 5 patterns of at most 128 characters (`*` and `?` are wildcards).
    pub path_patterns: Vec<String>,
    pub action: ListenerAction,
    pub tags: Vec<Tag>,
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

    /// Creates an HTTP listener on an application load balancer; an identical listener on
    /// the port is returned as it is (AWS's rule), a different one is `AlreadyExists`.
    async fn create_http_listener(&self, spec: &HttpListenerSpec) -> Result<Listener, CloudError>;

    /// Replaces a listener's default action; returns the listener as it now is.
    async fn modify_listener_default_action(
        &self,
        listener_arn: &str,
        action: &ListenerAction,
    ) -> Result<Listener, CloudError>;

    /// Every rule of a listener, the default rule included (all pages).
    async fn describe_rules(&self, listener_arn: &str) -> Result<Vec<ListenerRule>, CloudError>;

    /// Creates a rule; a priority the listener already uses is `AlreadyExists`.
    async fn create_rule(&self, spec: &RuleSpec) -> Result<ListenerRule, CloudError>;

    /// Replaces a rule's path patterns and action (its priority and tags stay).
    async fn modify_rule(
        &self,
        rule_arn: &str,
        path_patterns: &[String],
        action: &ListenerAction,
    ) -> Result<ListenerRule, CloudError>;

    /// Deletes a rule other than the default one.
    async fn delete_rule(&self, rule_arn: &str) -> Result<(), CloudError>;

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
