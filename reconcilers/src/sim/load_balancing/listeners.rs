//! Listeners of the simulated load balancers and the certificates on them: one listener per
//! port, protocols the load balancer type allows, a target group serving one load balancer,
//! and the listener and certificate quotas.

use std::collections::{BTreeMap, BTreeSet};

use crate::cloud::{CloudError, ErrorKind, Listener, ListenerAction, ListenerSpec, Page, Quota};

use super::{LoadBalancerKind, SimListener, State, arn, error, invalid, merge_tags, not_found};
use crate::cloud::Tag;
use crate::sim::paging;

const CREATE: &str = "elasticloadbalancing:CreateListener";

/// Adds the HTTPS listener on 443 an application load balancer is created with.
pub(super) fn insert_https_listener(state: &mut State, load_balancer_arn: &str) {
    let listener = Listener {
        arn: listener_arn(state, load_balancer_arn),
        load_balancer_arn: load_balancer_arn.to_owned(),
        port: 443,
        protocol: "HTTPS".to_owned(),
        target_group_arn: None,
        default_action: ListenerAction::Other("fixed-response".to_owned()),
    };
    let sim = new_listener(state, listener.clone(), vec![]);
    state.elb.listeners.insert(listener.arn, sim);
}

/// A listener as the simulation keeps it, with its default rule's ARN and no other rules.
pub(super) fn new_listener(state: &mut State, listener: Listener, tags: Vec<Tag>) -> SimListener {
    SimListener {
        default_rule_arn: rule_arn(state, &listener.arn),
        listener,
        tags,
        certificates: BTreeSet::new(),
        rules: BTreeMap::new(),
    }
}

/// `listener-rule/{net|app}/{lb name}/{lb id}/{listener id}/{16 hex}`, from the listener's.
pub(super) fn rule_arn(state: &mut State, listener_arn: &str) -> String {
    let resource = listener_arn
        .split_once(":listener/")
        .map_or("", |(_, resource)| resource);
    let id = state.rng.hex(16);
    arn(state, &format!("listener-rule/{resource}/{id}"))
}

/// `listener/{net|app}/{lb name}/{lb id}/{16 hex}`, from the load balancer's ARN.
pub(super) fn listener_arn(state: &mut State, load_balancer_arn: &str) -> String {
    let resource = load_balancer_arn
        .split_once(":loadbalancer/")
        .map_or("", |(_, resource)| resource);
    let id = state.rng.hex(16);
    arn(state, &format!("listener/{resource}/{id}"))
}

pub(super) fn page_of(
    state: &mut State,
    load_balancer_arn: &str,
    token: Option<&str>,
) -> Result<Page<Listener>, CloudError> {
    const OPERATION: &str = "elasticloadbalancing:DescribeListeners";
    if !state.elb.load_balancers.contains_key(load_balancer_arn) {
        return Err(not_found(
            OPERATION,
            "LoadBalancerNotFound",
            load_balancer_arn,
        ));
    }
    let items = state
        .elb
        .listeners
        .values()
        .filter(|l| l.listener.load_balancer_arn == load_balancer_arn)
        .map(|l| (l.listener.arn.clone(), l.listener.clone()))
        .collect();
    paging::page(OPERATION, items, token, paging::DESCRIBE_LISTENERS)
}

pub(super) fn create(state: &mut State, spec: &ListenerSpec) -> Result<Listener, CloudError> {
    check_references(state, spec)?;
    let same_port = state.elb.listeners.values().find(|l| {
        l.listener.load_balancer_arn == spec.load_balancer_arn && l.listener.port == spec.port
    });
    if let Some(existing) = same_port {
        // ELB's CreateListener is idempotent: the same settings return the listener.
        let same = existing.listener.protocol == spec.protocol
            && existing.listener.target_group_arn.as_ref() == Some(&spec.target_group_arn);
        if same {
            return Ok(existing.listener.clone());
        }
        let message = format!("a listener on port {} exists", spec.port);
        return Err(error(
            ErrorKind::AlreadyExists,
            CREATE,
            "DuplicateListener",
            message,
        ));
    }
    check_listener_quota(state, &spec.load_balancer_arn)?;

    let mut tags = Vec::new();
    merge_tags(
        CREATE,
        &mut tags,
        &spec.tags,
        state.config.quotas.tags_per_resource,
    )?;
    let listener = Listener {
        arn: listener_arn(state, &spec.load_balancer_arn),
        load_balancer_arn: spec.load_balancer_arn.clone(),
        port: spec.port,
        protocol: spec.protocol.clone(),
        target_group_arn: Some(spec.target_group_arn.clone()),
        default_action: ListenerAction::Forward {
            target_group_arn: spec.target_group_arn.clone(),
        },
    };
    let sim = new_listener(state, listener.clone(), tags);
    state.elb.listeners.insert(listener.arn.clone(), sim);
    let now = state.now();
    state.elb.refresh_usage(now);
    Ok(listener)
}

/// The load balancer and target group must exist and fit the protocol; a target group
/// serves one load balancer.
fn check_references(state: &State, spec: &ListenerSpec) -> Result<(), CloudError> {
    let elb = &state.elb;
    let balancer = elb
        .load_balancers
        .get(&spec.load_balancer_arn)
        .ok_or_else(|| not_found(CREATE, "LoadBalancerNotFound", &spec.load_balancer_arn))?;
    let group = elb
        .target_groups
        .get(&spec.target_group_arn)
        .ok_or_else(|| not_found(CREATE, "TargetGroupNotFound", &spec.target_group_arn))?;
    let allowed: &[&str] = match balancer.kind {
        LoadBalancerKind::Network => &["TCP", "TLS", "UDP", "TCP_UDP"],
        LoadBalancerKind::Application => &["HTTP", "HTTPS"],
    };
    if !allowed.contains(&spec.protocol.as_str()) || spec.port == 0 {
        let message = format!(
            "protocol {} on port {} is not allowed",
            spec.protocol, spec.port
        );
        return Err(invalid(CREATE, "ValidationError", message));
    }
    let same_vpc = group.group.vpc_id == balancer.load_balancer.vpc_id;
    if balancer.kind == LoadBalancerKind::Application || !same_vpc {
        let message = "the target group's protocol or VPC does not match the load balancer";
        return Err(invalid(CREATE, "IncompatibleProtocols", message));
    }
    let users = elb.describe_group(group).load_balancer_arns;
    if users.iter().any(|arn| *arn != spec.load_balancer_arn) {
        let message = "the target group is used by another load balancer";
        return Err(invalid(CREATE, "TargetGroupAssociationLimit", message));
    }
    Ok(())
}

pub(super) fn check_listener_quota(
    state: &State,
    load_balancer_arn: &str,
) -> Result<(), CloudError> {
    let count = state
        .elb
        .listeners
        .values()
        .filter(|l| l.listener.load_balancer_arn == load_balancer_arn)
        .count();
    let quota = state.config.quotas.listeners_per_load_balancer;
    if count < quota {
        return Ok(());
    }
    let kind = ErrorKind::QuotaExceeded(Quota::ListenersPerLoadBalancer);
    let message = format!("a load balancer takes at most {quota} listeners");
    Err(error(kind, CREATE, "TooManyListeners", message))
}

pub(super) fn delete(state: &mut State, arn: &str) -> Result<(), CloudError> {
    const OPERATION: &str = "elasticloadbalancing:DeleteListener";
    state
        .elb
        .listeners
        .remove(arn)
        .ok_or_else(|| not_found(OPERATION, "ListenerNotFound", arn))?;
    let now = state.now();
    state.elb.refresh_usage(now);
    Ok(())
}

pub(super) fn certificates_page(
    state: &mut State,
    listener_arn: &str,
    token: Option<&str>,
) -> Result<Page<String>, CloudError> {
    const OPERATION: &str = "elasticloadbalancing:DescribeListenerCertificates";
    let listener = state
        .elb
        .listeners
        .get(listener_arn)
        .ok_or_else(|| not_found(OPERATION, "ListenerNotFound", listener_arn))?;
    let items = listener
        .certificates
        .iter()
        .map(|arn| (arn.clone(), arn.clone()))
        .collect();
    paging::page(
        OPERATION,
        items,
        token,
        paging::DESCRIBE_LISTENER_CERTIFICATES,
    )
}

pub(super) fn add_certificates(
    state: &mut State,
    listener_arn: &str,
    certificate_arns: &[String],
) -> Result<(), CloudError> {
    const OPERATION: &str = "elasticloadbalancing:AddListenerCertificates";
    let quota = state.config.quotas.certificates_per_listener;
    if let Some(unknown) = certificate_arns.iter().find(|arn| !state.acm.exists(arn)) {
        return Err(not_found(OPERATION, "CertificateNotFound", unknown));
    }
    let listener = state
        .elb
        .listeners
        .get_mut(listener_arn)
        .ok_or_else(|| not_found(OPERATION, "ListenerNotFound", listener_arn))?;
    if !["HTTPS", "TLS"].contains(&listener.listener.protocol.as_str()) {
        let message = "only HTTPS and TLS listeners take certificates";
        return Err(invalid(OPERATION, "InvalidConfigurationRequest", message));
    }
    let mut merged = listener.certificates.clone();
    merged.extend(certificate_arns.iter().cloned());
    if merged.len() > quota {
        let kind = ErrorKind::QuotaExceeded(Quota::CertificatesPerListener);
        let message = format!("a listener takes at most {quota} certificates");
        return Err(error(kind, OPERATION, "TooManyCertificates", message));
    }
    listener.certificates = merged;
    Ok(())
}

/// Removing a certificate that is not there is not an error.
pub(super) fn remove_certificates(
    state: &mut State,
    listener_arn: &str,
    certificate_arns: &[String],
) -> Result<(), CloudError> {
    const OPERATION: &str = "elasticloadbalancing:RemoveListenerCertificates";
    let listener = state
        .elb
        .listeners
        .get_mut(listener_arn)
        .ok_or_else(|| not_found(OPERATION, "ListenerNotFound", listener_arn))?;
    for arn in certificate_arns {
        listener.certificates.remove(arn);
    }
    Ok(())
}
