//! HTTP listeners of application load balancers and the rules of their listeners: listeners
//! with a redirect or forward default action, rules matching path patterns at priorities
//! unique per listener, the default rule DescribeRules lists last, and the rules quota.

use crate::cloud::{
    CloudError, ErrorKind, HttpListenerSpec, Listener, ListenerAction, ListenerRule, Page, Quota,
    RuleSpec,
};
use crate::sim::paging;

use super::listeners::{check_listener_quota, listener_arn, new_listener, rule_arn};
use super::{
    LoadBalancerKind, SimLoadBalancer, SimRule, State, error, invalid, merge_tags, not_found,
};

const CREATE_LISTENER: &str = "elasticloadbalancing:CreateListener";
const MODIFY_LISTENER: &str = "elasticloadbalancing:ModifyListener";
const CREATE_RULE: &str = "elasticloadbalancing:CreateRule";
const MODIFY_RULE: &str = "elasticloadbalancing:ModifyRule";
const DELETE_RULE: &str = "elasticloadbalancing:DeleteRule";

/// Rule priorities ELB accepts.
const PRIORITIES: std::ops::RangeInclusive<u32> = 1..=50_000;

pub(super) fn create_http_listener(
    state: &mut State,
    spec: &HttpListenerSpec,
) -> Result<Listener, CloudError> {
    let balancer = state
        .elb
        .load_balancers
        .get(&spec.load_balancer_arn)
        .ok_or_else(|| {
            not_found(
                CREATE_LISTENER,
                "LoadBalancerNotFound",
                &spec.load_balancer_arn,
            )
        })?;
    if balancer.kind != LoadBalancerKind::Application || spec.port == 0 {
        let message = format!("protocol HTTP on port {} is not allowed", spec.port);
        return Err(invalid(CREATE_LISTENER, "ValidationError", message));
    }
    check_action(state, CREATE_LISTENER, balancer, &spec.default_action)?;
    let same_port = state.elb.listeners.values().find(|l| {
        l.listener.load_balancer_arn == spec.load_balancer_arn && l.listener.port == spec.port
    });
    if let Some(existing) = same_port {
        // ELB's CreateListener is idempotent: the same settings return the listener.
        let same = existing.listener.protocol == "HTTP"
            && existing.listener.default_action == spec.default_action;
        if same {
            return Ok(existing.listener.clone());
        }
        let message = format!("a listener on port {} exists", spec.port);
        let kind = ErrorKind::AlreadyExists;
        return Err(error(kind, CREATE_LISTENER, "DuplicateListener", message));
    }
    check_listener_quota(state, &spec.load_balancer_arn)?;

    let mut tags = Vec::new();
    let quota = state.config.quotas.tags_per_resource;
    merge_tags(CREATE_LISTENER, &mut tags, &spec.tags, quota)?;
    let listener = Listener {
        arn: listener_arn(state, &spec.load_balancer_arn),
        load_balancer_arn: spec.load_balancer_arn.clone(),
        port: spec.port,
        protocol: "HTTP".to_owned(),
        target_group_arn: forward_group(&spec.default_action),
        default_action: spec.default_action.clone(),
    };
    let sim = new_listener(state, listener.clone(), tags);
    state.elb.listeners.insert(listener.arn.clone(), sim);
    let now = state.now();
    state.elb.refresh_usage(now);
    Ok(listener)
}

pub(super) fn modify_default_action(
    state: &mut State,
    listener_arn: &str,
    action: &ListenerAction,
) -> Result<Listener, CloudError> {
    let listener = state
        .elb
        .listeners
        .get(listener_arn)
        .ok_or_else(|| not_found(MODIFY_LISTENER, "ListenerNotFound", listener_arn))?;
    let balancer = balancer_of(state, MODIFY_LISTENER, &listener.listener.load_balancer_arn)?;
    check_action(state, MODIFY_LISTENER, balancer, action)?;

    let now = state.now();
    let elb = &mut state.elb;
    let Some(listener) = elb.listeners.get_mut(listener_arn) else {
        return Err(not_found(MODIFY_LISTENER, "ListenerNotFound", listener_arn));
    };
    listener.listener.default_action = action.clone();
    listener.listener.target_group_arn = forward_group(action);
    let modified = listener.listener.clone();
    elb.refresh_usage(now);
    Ok(modified)
}

/// Rules by priority, the default rule last, as DescribeRules lists them.
pub(super) fn page_of(
    state: &mut State,
    listener_arn: &str,
    token: Option<&str>,
) -> Result<Page<ListenerRule>, CloudError> {
    const OPERATION: &str = "elasticloadbalancing:DescribeRules";
    let listener = state
        .elb
        .listeners
        .get(listener_arn)
        .ok_or_else(|| not_found(OPERATION, "ListenerNotFound", listener_arn))?;
    let default = ListenerRule {
        arn: listener.default_rule_arn.clone(),
        priority: None,
        path_patterns: vec![],
        action: listener.listener.default_action.clone(),
    };
    let mut items: Vec<(String, ListenerRule)> = listener
        .rules
        .values()
        .map(|r| {
            (
                format!("{:05}", r.rule.priority.unwrap_or(0)),
                r.rule.clone(),
            )
        })
        .collect();
    items.push(("default".to_owned(), default));
    paging::page(OPERATION, items, token, paging::DESCRIBE_RULES)
}

pub(super) fn create(state: &mut State, spec: &RuleSpec) -> Result<ListenerRule, CloudError> {
    let listener = state
        .elb
        .listeners
        .get(&spec.listener_arn)
        .ok_or_else(|| not_found(CREATE_RULE, "ListenerNotFound", &spec.listener_arn))?;
    let balancer = balancer_of(state, CREATE_RULE, &listener.listener.load_balancer_arn)?;
    check_http_listener(CREATE_RULE, &listener.listener)?;
    if !PRIORITIES.contains(&spec.priority) {
        let message = format!("priority {} is outside 1-50000", spec.priority);
        return Err(invalid(CREATE_RULE, "ValidationError", message));
    }
    check_path_patterns(CREATE_RULE, &spec.path_patterns)?;
    check_action(state, CREATE_RULE, balancer, &spec.action)?;
    if listener
        .rules
        .values()
        .any(|r| r.rule.priority == Some(spec.priority))
    {
        let message = format!("priority {} is in use", spec.priority);
        return Err(error(
            ErrorKind::AlreadyExists,
            CREATE_RULE,
            "PriorityInUse",
            message,
        ));
    }
    check_rules_quota(state, &listener.listener.load_balancer_arn)?;

    let mut tags = Vec::new();
    let quota = state.config.quotas.tags_per_resource;
    merge_tags(CREATE_RULE, &mut tags, &spec.tags, quota)?;
    let rule = ListenerRule {
        arn: rule_arn(state, &spec.listener_arn),
        priority: Some(spec.priority),
        path_patterns: spec.path_patterns.clone(),
        action: spec.action.clone(),
    };
    let sim = SimRule {
        rule: rule.clone(),
        tags,
    };
    let now = state.now();
    let elb = &mut state.elb;
    if let Some(listener) = elb.listeners.get_mut(&spec.listener_arn) {
        listener.rules.insert(rule.arn.clone(), sim);
    }
    elb.refresh_usage(now);
    Ok(rule)
}

pub(super) fn modify(
    state: &mut State,
    rule_arn: &str,
    path_patterns: &[String],
    action: &ListenerAction,
) -> Result<ListenerRule, CloudError> {
    let balancer_arn = balancer_of_rule(state, MODIFY_RULE, rule_arn)?;
    let balancer = balancer_of(state, MODIFY_RULE, &balancer_arn)?;
    check_path_patterns(MODIFY_RULE, path_patterns)?;
    check_action(state, MODIFY_RULE, balancer, action)?;

    let now = state.now();
    let elb = &mut state.elb;
    let rule = elb
        .listeners
        .values_mut()
        .find_map(|l| l.rules.get_mut(rule_arn))
        .ok_or_else(|| not_found(MODIFY_RULE, "RuleNotFound", rule_arn))?;
    rule.rule.path_patterns = path_patterns.to_vec();
    rule.rule.action = action.clone();
    let modified = rule.rule.clone();
    elb.refresh_usage(now);
    Ok(modified)
}

pub(super) fn delete(state: &mut State, rule_arn: &str) -> Result<(), CloudError> {
    balancer_of_rule(state, DELETE_RULE, rule_arn)?;
    let now = state.now();
    for listener in state.elb.listeners.values_mut() {
        listener.rules.remove(rule_arn);
    }
    state.elb.refresh_usage(now);
    Ok(())
}

/// The load balancer of the listener holding a rule; the default rule cannot be changed with
/// rule calls (ModifyListener changes its action).
fn balancer_of_rule(
    state: &State,
    operation: &'static str,
    rule_arn: &str,
) -> Result<String, CloudError> {
    let listeners = state.elb.listeners.values();
    for listener in listeners {
        if listener.rules.contains_key(rule_arn) {
            return Ok(listener.listener.load_balancer_arn.clone());
        }
        if listener.default_rule_arn == rule_arn {
            let message = "the default rule changes only with its listener";
            return Err(invalid(operation, "OperationNotPermitted", message));
        }
    }
    Err(not_found(operation, "RuleNotFound", rule_arn))
}

fn balancer_of<'a>(
    state: &'a State,
    operation: &'static str,
    load_balancer_arn: &str,
) -> Result<&'a SimLoadBalancer, CloudError> {
    let balancers = &state.elb.load_balancers;
    balancers
        .get(load_balancer_arn)
        .ok_or_else(|| not_found(operation, "LoadBalancerNotFound", load_balancer_arn))
}

fn check_http_listener(operation: &'static str, listener: &Listener) -> Result<(), CloudError> {
    if ["HTTP", "HTTPS"].contains(&listener.protocol.as_str()) {
        return Ok(());
    }
    let message = format!("a {} listener takes no rules", listener.protocol);
    Err(invalid(operation, "InvalidConfigurationRequest", message))
}

/// ELB's limits on one path-pattern condition: 1 to 5 values of 1 to 128 visible characters.
fn check_path_patterns(operation: &'static str, patterns: &[String]) -> Result<(), CloudError> {
    let valid =
        |p: &String| (1..=128).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_graphic());
    if (1..=5).contains(&patterns.len()) && patterns.iter().all(valid) {
        return Ok(());
    }
    let message = format!("path patterns {patterns:?} are not valid");
    Err(invalid(operation, "ValidationError", message))
}

/// What a listener of `balancer` may do: redirects on application load balancers only, and
/// forwards to an existing group of a matching protocol in the same VPC that no other load
/// balancer uses.
fn check_action(
    state: &State,
    operation: &'static str,
    balancer: &SimLoadBalancer,
    action: &ListenerAction,
) -> Result<(), CloudError> {
    let application = balancer.kind == LoadBalancerKind::Application;
    let target_group_arn = match action {
        ListenerAction::Other(description) => {
            let message = format!("the action {description:?} cannot be asked for");
            return Err(invalid(operation, "ValidationError", message));
        }
        ListenerAction::RedirectToHttps if application => return Ok(()),
        ListenerAction::RedirectToHttps => {
            let message = "redirect actions need an application load balancer";
            return Err(invalid(operation, "InvalidLoadBalancerAction", message));
        }
        ListenerAction::Forward { target_group_arn } => target_group_arn,
    };
    let group = state
        .elb
        .target_groups
        .get(target_group_arn)
        .ok_or_else(|| not_found(operation, "TargetGroupNotFound", target_group_arn))?;
    let http = ["HTTP", "HTTPS"].contains(&group.group.protocol.as_str());
    let same_vpc = group.group.vpc_id == balancer.load_balancer.vpc_id;
    if http != application || !same_vpc {
        let message = "the target group's protocol or VPC does not match the load balancer";
        return Err(invalid(operation, "IncompatibleProtocols", message));
    }
    let users = state.elb.forwarding_to(target_group_arn);
    if users.iter().any(|arn| *arn != balancer.load_balancer.arn) {
        let message = "the target group is used by another load balancer";
        return Err(invalid(operation, "TargetGroupAssociationLimit", message));
    }
    Ok(())
}

fn check_rules_quota(state: &State, load_balancer_arn: &str) -> Result<(), CloudError> {
    let count: usize = state
        .elb
        .listeners
        .values()
        .filter(|l| l.listener.load_balancer_arn == load_balancer_arn)
        .map(|l| l.rules.len())
        .sum();
    let quota = state.config.quotas.rules_per_load_balancer;
    if count < quota {
        return Ok(());
    }
    let kind = ErrorKind::QuotaExceeded(Quota::Other("TooManyRules".to_owned()));
    let message = format!("a load balancer takes at most {quota} rules");
    Err(error(kind, CREATE_RULE, "TooManyRules", message))
}

fn forward_group(action: &ListenerAction) -> Option<String> {
    match action {
        ListenerAction::Forward { target_group_arn } => Some(target_group_arn.clone()),
        _ => None,
    }
}
