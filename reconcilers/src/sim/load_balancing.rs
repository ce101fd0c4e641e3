//! Elastic Load Balancing v2 in the simulated account: load balancers (created by test
//! controls), target groups, targets and their health, listeners, listener certificates, the
//! rules of application load balancers' listeners and tags, with ELB's naming rules,
//! idempotent creates, quotas, paging and errors.
//!
//! Target health follows the instance and the clock: `initial` until the health check passed
//! `healthy_threshold` times after registration (and after a listener started using the
//! group), then `healthy`; `unhealthy` when the instance is not running; `unused` while no
//! listener uses the group; `draining` for the deregistration delay after deregistration.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;

use crate::cloud::{
    CloudError, ErrorKind, HttpListenerSpec, Listener, ListenerAction, ListenerRule, ListenerSpec,
    LoadBalancer, LoadBalancing, Quota, RuleSpec, Tag, Target, TargetGroup, TargetGroupSpec,
    TargetHealth,
};

use super::{ResourceType, SimulatedAws, State, error, paging};

mod listeners;
mod rules;
mod target_groups;
mod targets;

/// The kind of a load balancer a test creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadBalancerKind {
    /// An NLB: TCP, TLS, UDP and TCP_UDP listeners.
    Network,
    /// An ALB: HTTP and HTTPS listeners; created with an HTTPS listener on 443.
    Application,
}

impl LoadBalancerKind {
    fn type_name(self) -> &'static str {
        match self {
            LoadBalancerKind::Network => "network",
            LoadBalancerKind::Application => "application",
        }
    }

    fn arn_segment(self) -> &'static str {
        match self {
            LoadBalancerKind::Network => "net",
            LoadBalancerKind::Application => "app",
        }
    }
}

struct SimLoadBalancer {
    load_balancer: LoadBalancer,
    kind: LoadBalancerKind,
    tags: Vec<Tag>,
}

struct Registration {
    registered: Duration,
    deregistered: Option<Duration>,
}

struct SimTargetGroup {
    group: TargetGroup,
    tags: Vec<Tag>,
    targets: BTreeMap<Target, Registration>,
    /// Since when a listener uses the group; health checks start then.
    in_use_since: Option<Duration>,
}

struct SimListener {
    listener: Listener,
    tags: Vec<Tag>,
    /// Certificates besides the default one.
    certificates: BTreeSet<String>,
    /// The ARN of the default rule, which carries the listener's default action.
    default_rule_arn: String,
    /// Rules besides the default one, by ARN.
    rules: BTreeMap<String, SimRule>,
}

struct SimRule {
    rule: ListenerRule,
    tags: Vec<Tag>,
}

#[derive(Default)]
pub(crate) struct ElbState {
    load_balancers: BTreeMap<String, SimLoadBalancer>,
    target_groups: BTreeMap<String, SimTargetGroup>,
    listeners: BTreeMap<String, SimListener>,
}

impl ElbState {
    pub(crate) fn tagged(&self) -> impl Iterator<Item = (ResourceType, &str, &[Tag])> {
        let balancers = self
            .load_balancers
            .iter()
            .map(|(arn, lb)| (ResourceType::LoadBalancer, arn.as_str(), lb.tags.as_slice()));
        let groups = self
            .target_groups
            .iter()
            .map(|(arn, tg)| (ResourceType::TargetGroup, arn.as_str(), tg.tags.as_slice()));
        let listeners = self.listeners.iter().map(|(arn, listener)| {
            (
                ResourceType::Listener,
                arn.as_str(),
                listener.tags.as_slice(),
            )
        });
        let rules = self
            .listeners
            .values()
            .flat_map(|l| &l.rules)
            .map(|(arn, rule)| {
                (
                    ResourceType::ListenerRule,
                    arn.as_str(),
                    rule.tags.as_slice(),
                )
            });
        balancers.chain(groups).chain(listeners).chain(rules)
    }

    /// Load balancers whose listeners carry the certificate, sorted.
    pub(crate) fn load_balancers_using_certificate(&self, certificate_arn: &str) -> Vec<String> {
        let using: BTreeSet<String> = self
            .listeners
            .values()
            .filter(|l| l.certificates.contains(certificate_arn))
            .map(|l| l.listener.load_balancer_arn.clone())
            .collect();
        using.into_iter().collect()
    }

    /// The group as DescribeTargetGroups shows it, with the load balancers using it.
    fn describe_group(&self, group: &SimTargetGroup) -> TargetGroup {
        TargetGroup {
            load_balancer_arns: self.forwarding_to(&group.group.arn).into_iter().collect(),
            ..group.group.clone()
        }
    }

    /// Load balancers whose listeners or rules forward to the group.
    fn forwarding_to(&self, group_arn: &str) -> BTreeSet<String> {
        let forwards = |action: &ListenerAction| matches!(action, ListenerAction::Forward { target_group_arn } if target_group_arn == group_arn);
        self.listeners
            .values()
            .filter(|l| {
                forwards(&l.listener.default_action)
                    || l.rules.values().any(|r| forwards(&r.rule.action))
            })
            .map(|l| l.listener.load_balancer_arn.clone())
            .collect()
    }

    /// Health checks of a group run while something forwards to it: starts them for groups
    /// newly in use and stops them for groups no longer in use.
    fn refresh_usage(&mut self, now: Duration) {
        let used: BTreeSet<String> = self
            .target_groups
            .keys()
            .filter(|arn| !self.forwarding_to(arn).is_empty())
            .cloned()
            .collect();
        for (arn, group) in &mut self.target_groups {
            if used.contains(arn) {
                group.in_use_since.get_or_insert(now);
            } else {
                group.in_use_since = None;
            }
        }
    }

    fn tags_mut(&mut self, arn: &str) -> Option<&mut Vec<Tag>> {
        if let Some(lb) = self.load_balancers.get_mut(arn) {
            return Some(&mut lb.tags);
        }
        if let Some(group) = self.target_groups.get_mut(arn) {
            return Some(&mut group.tags);
        }
        if self.listeners.contains_key(arn) {
            return self.listeners.get_mut(arn).map(|l| &mut l.tags);
        }
        let listener = self
            .listeners
            .values_mut()
            .find(|l| l.rules.contains_key(arn))?;
        listener.rules.get_mut(arn).map(|r| &mut r.tags)
    }
}

/// `arn:aws:elasticloadbalancing:{region}:{account}:{resource}`.
fn arn(state: &State, resource: &str) -> String {
    let (region, account) = (&state.config.region, &state.config.account);
    format!("arn:aws:elasticloadbalancing:{region}:{account}:{resource}")
}

fn not_found(operation: &'static str, code: &str, arn: &str) -> CloudError {
    error(
        ErrorKind::NotFound,
        operation,
        code,
        format!("{arn} not found"),
    )
}

fn invalid(operation: &'static str, code: &str, message: impl std::fmt::Display) -> CloudError {
    error(ErrorKind::Invalid, operation, code, message)
}

/// Merges tags into a resource's tags (a key's new value replaces the old), within the quota.
pub(crate) fn merge_tags(
    operation: &'static str,
    existing: &mut Vec<Tag>,
    added: &[Tag],
    quota: usize,
) -> Result<(), CloudError> {
    let mut merged = existing.clone();
    for tag in added {
        merged.retain(|t| t.key != tag.key);
        merged.push(tag.clone());
    }
    if merged.len() > quota {
        let message = format!("a resource takes at most {quota} tags");
        let kind = ErrorKind::QuotaExceeded(Quota::Other("TagsPerResource".to_owned()));
        return Err(error(kind, operation, "TooManyTags", message));
    }
    merged.sort();
    *existing = merged;
    Ok(())
}

/// Looks up every ARN of a by-ARN describe; one unknown ARN fails the call, as in ELB.
fn by_arns<'a, T>(
    operation: &'static str,
    code: &str,
    arns: &[String],
    find: impl Fn(&str) -> Option<&'a T>,
) -> Result<Vec<&'a T>, CloudError> {
    arns.iter()
        .map(|arn| find(arn).ok_or_else(|| not_found(operation, code, arn)))
        .collect()
}

fn add_tags(state: &mut State, arn: &str, tags: &[Tag]) -> Result<(), CloudError> {
    const OPERATION: &str = "elasticloadbalancing:AddTags";
    let quota = state.config.quotas.tags_per_resource;
    let existing = state
        .elb
        .tags_mut(arn)
        .ok_or_else(|| not_found(OPERATION, "LoadBalancerNotFound", arn))?;
    merge_tags(OPERATION, existing, tags, quota)
}

/// Test controls for load balancers.
impl SimulatedAws {
    /// Creates a load balancer in the configured VPC and returns its ARN. An application load
    /// balancer gets an HTTPS listener on port 443 (without a default certificate); find it
    /// with [`SimulatedAws::https_listener_of`].
    pub fn add_load_balancer(&self, kind: LoadBalancerKind, name: &str) -> String {
        let mut state = self.state();
        let id = state.rng.hex(16);
        let segment = kind.arn_segment();
        let lb_arn = arn(&state, &format!("loadbalancer/{segment}/{name}/{id}"));
        let region = &state.config.region;
        let dns_name = match kind {
            LoadBalancerKind::Network => format!("{name}-{id}.elb.{region}.amazonaws.com"),
            LoadBalancerKind::Application => format!("{name}-{id}.{region}.elb.amazonaws.com"),
        };
        let load_balancer = LoadBalancer {
            arn: lb_arn.clone(),
            dns_name,
            kind: kind.type_name().to_owned(),
            vpc_id: state.config.vpc_id.clone(),
        };
        let sim = SimLoadBalancer {
            load_balancer,
            kind,
            tags: vec![],
        };
        state.elb.load_balancers.insert(lb_arn.clone(), sim);
        if kind == LoadBalancerKind::Application {
            listeners::insert_https_listener(&mut state, &lb_arn);
        }
        lb_arn
    }

    /// Creates an HTTP target group for an application load balancer (the kind an operator
    /// makes for the ACME responder; the controller only creates TCP groups) and returns its
    /// ARN.
    pub fn add_http_target_group(&self, name: &str, port: u16) -> String {
        let mut state = self.state();
        target_groups::insert_http(&mut state, name, port)
    }

    /// The HTTPS listener on port 443 of a load balancer, if it has one.
    pub fn https_listener_of(&self, load_balancer_arn: &str) -> Option<String> {
        let state = self.state();
        let found = state.elb.listeners.values().find(|l| {
            l.listener.load_balancer_arn == load_balancer_arn && l.listener.protocol == "HTTPS"
        });
        found.map(|l| l.listener.arn.clone())
    }
}

#[async_trait]
impl LoadBalancing for SimulatedAws {
    async fn describe_load_balancers(
        &self,
        arns: &[String],
    ) -> Result<Vec<LoadBalancer>, CloudError> {
        const OPERATION: &str = "elasticloadbalancing:DescribeLoadBalancers";
        let mut found = Vec::new();
        for batch in arns.chunks(paging::ELB_ARNS_PER_CALL) {
            let described = self.call(OPERATION, |state: &mut State| {
                let balancers = &state.elb.load_balancers;
                let code = "LoadBalancerNotFound";
                let sims = by_arns(OPERATION, code, batch, |arn| balancers.get(arn))?;
                Ok(sims
                    .into_iter()
                    .map(|lb| lb.load_balancer.clone())
                    .collect::<Vec<_>>())
            });
            found.extend(described.await?);
        }
        Ok(found)
    }

    async fn describe_target_groups(
        &self,
        arns: &[String],
    ) -> Result<Vec<TargetGroup>, CloudError> {
        const OPERATION: &str = "elasticloadbalancing:DescribeTargetGroups";
        let mut found = Vec::new();
        for batch in arns.chunks(paging::DESCRIBE_TARGET_GROUPS) {
            let described = self.call(OPERATION, |state: &mut State| {
                let elb = &state.elb;
                let code = "TargetGroupNotFound";
                let sims = by_arns(OPERATION, code, batch, |arn| elb.target_groups.get(arn))?;
                Ok(sims
                    .into_iter()
                    .map(|g| elb.describe_group(g))
                    .collect::<Vec<_>>())
            });
            found.extend(described.await?);
        }
        Ok(found)
    }

    async fn list_target_groups(&self) -> Result<Vec<TargetGroup>, CloudError> {
        const OPERATION: &str = "elasticloadbalancing:DescribeTargetGroups";
        self.all_pages(OPERATION, |state: &mut State, token| {
            let elb = &state.elb;
            let groups = elb.target_groups.iter();
            let items = groups
                .map(|(arn, g)| (arn.clone(), elb.describe_group(g)))
                .collect();
            paging::page(OPERATION, items, token, paging::DESCRIBE_TARGET_GROUPS)
        })
        .await
    }

    async fn create_target_group(&self, spec: &TargetGroupSpec) -> Result<TargetGroup, CloudError> {
        self.call(
            "elasticloadbalancing:CreateTargetGroup",
            |state: &mut State| target_groups::create(state, spec),
        )
        .await
    }

    async fn delete_target_group(&self, arn: &str) -> Result<(), CloudError> {
        self.call(
            "elasticloadbalancing:DeleteTargetGroup",
            |state: &mut State| target_groups::delete(state, arn),
        )
        .await
    }

    async fn register_targets(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> Result<(), CloudError> {
        self.call(
            "elasticloadbalancing:RegisterTargets",
            |state: &mut State| targets::register(state, target_group_arn, targets),
        )
        .await
    }

    async fn deregister_targets(
        &self,
        target_group_arn: &str,
        targets: &[Target],
    ) -> Result<(), CloudError> {
        self.call(
            "elasticloadbalancing:DeregisterTargets",
            |state: &mut State| targets::deregister(state, target_group_arn, targets),
        )
        .await
    }

    async fn describe_target_health(
        &self,
        target_group_arn: &str,
    ) -> Result<Vec<TargetHealth>, CloudError> {
        self.call(
            "elasticloadbalancing:DescribeTargetHealth",
            |state: &mut State| targets::health(state, target_group_arn),
        )
        .await
    }

    async fn describe_listeners(
        &self,
        load_balancer_arn: &str,
    ) -> Result<Vec<Listener>, CloudError> {
        const OPERATION: &str = "elasticloadbalancing:DescribeListeners";
        self.all_pages(OPERATION, |state: &mut State, token| {
            listeners::page_of(state, load_balancer_arn, token)
        })
        .await
    }

    async fn create_listener(&self, spec: &ListenerSpec) -> Result<Listener, CloudError> {
        self.call(
            "elasticloadbalancing:CreateListener",
            |state: &mut State| listeners::create(state, spec),
        )
        .await
    }

    async fn delete_listener(&self, arn: &str) -> Result<(), CloudError> {
        self.call(
            "elasticloadbalancing:DeleteListener",
            |state: &mut State| listeners::delete(state, arn),
        )
        .await
    }

    async fn create_http_listener(&self, spec: &HttpListenerSpec) -> Result<Listener, CloudError> {
        self.call(
            "elasticloadbalancing:CreateListener",
            |state: &mut State| rules::create_http_listener(state, spec),
        )
        .await
    }

    async fn modify_listener_default_action(
        &self,
        listener_arn: &str,
        action: &ListenerAction,
    ) -> Result<Listener, CloudError> {
        self.call(
            "elasticloadbalancing:ModifyListener",
            |state: &mut State| rules::modify_default_action(state, listener_arn, action),
        )
        .await
    }

    async fn describe_rules(&self, listener_arn: &str) -> Result<Vec<ListenerRule>, CloudError> {
        const OPERATION: &str = "elasticloadbalancing:DescribeRules";
        self.all_pages(OPERATION, |state: &mut State, token| {
            rules::page_of(state, listener_arn, token)
        })
        .await
    }

    async fn create_rule(&self, spec: &RuleSpec) -> Result<ListenerRule, CloudError> {
        self.call("elasticloadbalancing:CreateRule", |state: &mut State| {
            rules::create(state, spec)
        })
        .await
    }

    async fn modify_rule(
        &self,
        rule_arn: &str,
        path_patterns: &[String],
        action: &ListenerAction,
    ) -> Result<ListenerRule, CloudError> {
        self.call("elasticloadbalancing:ModifyRule", |state: &mut State| {
            rules::modify(state, rule_arn, path_patterns, action)
        })
        .await
    }

    async fn delete_rule(&self, rule_arn: &str) -> Result<(), CloudError> {
        self.call("elasticloadbalancing:DeleteRule", |state: &mut State| {
            rules::delete(state, rule_arn)
        })
        .await
    }

    async fn describe_listener_certificates(
        &self,
        listener_arn: &str,
    ) -> Result<Vec<String>, CloudError> {
        const OPERATION: &str = "elasticloadbalancing:DescribeListenerCertificates";
        self.all_pages(OPERATION, |state: &mut State, token| {
            listeners::certificates_page(state, listener_arn, token)
        })
        .await
    }

    async fn add_listener_certificates(
        &self,
        listener_arn: &str,
        certificate_arns: &[String],
    ) -> Result<(), CloudError> {
        let operation = "elasticloadbalancing:AddListenerCertificates";
        self.call(operation, |state: &mut State| {
            listeners::add_certificates(state, listener_arn, certificate_arns)
        })
        .await
    }

    async fn remove_listener_certificates(
        &self,
        listener_arn: &str,
        certificate_arns: &[String],
    ) -> Result<(), CloudError> {
        let operation = "elasticloadbalancing:RemoveListenerCertificates";
        self.call(operation, |state: &mut State| {
            listeners::remove_certificates(state, listener_arn, certificate_arns)
        })
        .await
    }

    async fn describe_tags(&self, arns: &[String]) -> Result<Vec<(String, Vec<Tag>)>, CloudError> {
        const OPERATION: &str = "elasticloadbalancing:DescribeTags";
        let mut found = Vec::new();
        for batch in arns.chunks(paging::ELB_ARNS_PER_CALL) {
            let described = self.call(OPERATION, |state: &mut State| {
                let elb = &mut state.elb;
                let mut tags = Vec::new();
                for arn in batch {
                    let resource = elb.tags_mut(arn);
                    let resource = resource.ok_or_else(|| not_found(OPERATION, "NotFound", arn))?;
                    tags.push((arn.clone(), resource.clone()));
                }
                Ok(tags)
            });
            found.extend(described.await?);
        }
        Ok(found)
    }

    async fn add_tags(&self, arn: &str, tags: &[Tag]) -> Result<(), CloudError> {
        self.call("elasticloadbalancing:AddTags", |state: &mut State| {
            add_tags(state, arn, tags)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
