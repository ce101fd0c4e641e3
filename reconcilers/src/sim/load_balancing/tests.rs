//! Tests of the simulated Elastic Load Balancing: naming, idempotent creates, quotas, paging,
//! target health and tags.

use std::time::Duration;

use super::target_groups::valid_target_group_name;
use super::*;
use crate::cloud::CertificateMaterial;
use crate::cloud::Certificates;
use crate::cloud::HealthCheck;
use crate::sim::SimConfig;

fn aws() -> SimulatedAws {
    SimulatedAws::with_config(SimConfig::manual())
}

fn group_spec(name: &str, port: u16) -> TargetGroupSpec {
    TargetGroupSpec {
        name: name.to_owned(),
        port,
        vpc_id: SimConfig::default().vpc_id,
        health_check: HealthCheck::default(),
        tags: vec![Tag::new("shop-controller/shop", name)],
    }
}

fn listener_spec(balancer: &str, port: u16, group: &str) -> ListenerSpec {
    ListenerSpec {
        load_balancer_arn: balancer.to_owned(),
        port,
        protocol: "TCP".to_owned(),
        target_group_arn: group.to_owned(),
        tags: vec![],
    }
}

/// An NLB with a listener forwarding to a new target group on `port`.
async fn forwarding(aws: &SimulatedAws, name: &str, port: u16) -> (String, TargetGroup, Listener) {
    let balancer = aws.add_load_balancer(LoadBalancerKind::Network, "shops-a");
    let group = aws
        .create_target_group(&group_spec(name, port))
        .await
        .expect("group");
    let listener = aws
        .create_listener(&listener_spec(&balancer, port, &group.arn))
        .await
        .expect("listener");
    (balancer, group, listener)
}

async fn health_of(aws: &SimulatedAws, group: &str) -> Vec<String> {
    let health = aws.describe_target_health(group).await.expect("health");
    health.into_iter().map(|h| h.state).collect()
}

#[test]
fn target_group_names_follow_elb_rules() {
    let cases = [
        ("shop-1a2b3c", true),
        ("a", true),
        (&"x".repeat(32), true),
        (&"x".repeat(33), false),
        ("-lead", false),
        ("trail-", false),
        ("dots.not.allowed", false),
        ("", false),
    ];
    for (name, valid) in cases {
        assert_eq!(valid_target_group_name(name), valid, "{name:?}");
    }
}

#[tokio::test]
async fn arns_and_dns_names_are_shaped_like_aws() {
    let aws = aws();
    let (balancer, group, listener) = forwarding(&aws, "tg-a", 20000).await;
    let prefix = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:";

    let lb_id = balancer.rsplit('/').next().expect("id").to_owned();
    assert_eq!(
        balancer,
        format!("{prefix}loadbalancer/net/shops-a/{lb_id}")
    );
    assert!(group.arn.starts_with(&format!("{prefix}targetgroup/tg-a/")));
    let listener_prefix = format!("{prefix}listener/net/shops-a/{lb_id}/");
    let listener_id = listener.arn.strip_prefix(&listener_prefix).expect("shape");
    assert!(listener_id.len() == 16 && lb_id.len() == 16);
    let described = aws
        .describe_load_balancers(std::slice::from_ref(&balancer))
        .await;
    let dns = described.expect("described").remove(0).dns_name;
    assert_eq!(dns, format!("shops-a-{lb_id}.elb.eu-west-1.amazonaws.com"));
}

#[tokio::test]
async fn creating_a_target_group_again_returns_it_unless_settings_differ() {
    let aws = aws();
    let first = aws
        .create_target_group(&group_spec("tg", 20000))
        .await
        .expect("created");

    let again = aws.create_target_group(&group_spec("tg", 20000)).await;
    let other_port = aws.create_target_group(&group_spec("tg", 20001)).await;
    let bad_name = aws.create_target_group(&group_spec("bad_name", 1)).await;

    assert_eq!(again.map(|g| g.arn), Ok(first.arn));
    assert_eq!(
        other_port.map_err(|e| e.kind),
        Err(ErrorKind::AlreadyExists)
    );
    assert_eq!(bad_name.map_err(|e| e.kind), Err(ErrorKind::Invalid));
}

#[tokio::test]
async fn quotas_refuse_what_aws_refuses() {
    let mut config = SimConfig::manual();
    config.quotas.listeners_per_load_balancer = 2;
    config.quotas.target_groups = 3;
    config.quotas.targets_per_target_group = 2;
    config.quotas.certificates_per_listener = 1;
    let aws = SimulatedAws::with_config(config);
    let balancer = aws.add_load_balancer(LoadBalancerKind::Network, "nlb");
    let mut groups = Vec::new();
    for port in 1..=3 {
        let spec = group_spec(&format!("tg-{port}"), port);
        groups.push(aws.create_target_group(&spec).await.expect("room").arn);
    }
    for (port, group) in (1..=2).zip(&groups) {
        let spec = listener_spec(&balancer, port, group);
        aws.create_listener(&spec).await.expect("room");
    }

    let listener = aws
        .create_listener(&listener_spec(&balancer, 3, &groups[2]))
        .await;
    let group = aws.create_target_group(&group_spec("tg-4", 4)).await;
    let instances: Vec<Target> = (0..3)
        .map(|_| Target {
            id: aws.add_instance("shops-a"),
            port: 0,
        })
        .collect();
    let targets = aws.register_targets(&groups[0], &instances).await;
    let certificates = attach_two_certificates(&aws).await;

    let quota = |result: Result<(), CloudError>| match result.map_err(|e| e.kind) {
        Err(ErrorKind::QuotaExceeded(quota)) => Some(quota),
        _ => None,
    };
    assert_eq!(
        quota(listener.map(drop)),
        Some(Quota::ListenersPerLoadBalancer)
    );
    assert_eq!(quota(group.map(drop)), Some(Quota::TargetGroups));
    assert!(quota(targets).is_some());
    assert_eq!(quota(certificates), Some(Quota::CertificatesPerListener));
}

async fn attach_two_certificates(aws: &SimulatedAws) -> Result<(), CloudError> {
    let balancer = aws.add_load_balancer(LoadBalancerKind::Application, "proxy");
    let listener = aws.https_listener_of(&balancer).expect("https listener");
    let mut arns = Vec::new();
    for name in ["a", "b"] {
        let material = CertificateMaterial {
            certificate_pem: format!("-----BEGIN CERTIFICATE-----\n{name}\n"),
            private_key_pem: "-----BEGIN PRIVATE KEY-----\n".to_owned(),
            chain_pem: String::new(),
        };
        arns.push(
            aws.import_certificate(&material, None, &[])
                .await
                .expect("imported"),
        );
    }
    aws.add_listener_certificates(&listener, &arns).await
}

#[tokio::test]
async fn a_port_takes_one_listener_and_a_repeat_create_returns_it() {
    let aws = aws();
    let (balancer, group, listener) = forwarding(&aws, "tg-a", 20000).await;
    let other = aws
        .create_target_group(&group_spec("tg-b", 20000))
        .await
        .expect("group");

    let repeat = aws
        .create_listener(&listener_spec(&balancer, 20000, &group.arn))
        .await;
    let clash = aws
        .create_listener(&listener_spec(&balancer, 20000, &other.arn))
        .await;

    assert_eq!(repeat, Ok(listener));
    assert_eq!(clash.map_err(|e| e.kind), Err(ErrorKind::AlreadyExists));
}

#[tokio::test]
async fn listeners_refuse_unknown_or_mismatched_references() {
    let aws = aws();
    let (balancer, group, _) = forwarding(&aws, "tg-a", 20000).await;
    let alb = aws.add_load_balancer(LoadBalancerKind::Application, "proxy");
    let other_nlb = aws.add_load_balancer(LoadBalancerKind::Network, "shops-b");
    let mut udp = listener_spec(&balancer, 20001, &group.arn);
    udp.protocol = "HTTP".to_owned();
    let cases = [
        (
            listener_spec("arn:nope", 1, &group.arn),
            ErrorKind::NotFound,
        ),
        (listener_spec(&balancer, 1, "arn:nope"), ErrorKind::NotFound),
        (listener_spec(&alb, 8080, &group.arn), ErrorKind::Invalid),
        (listener_spec(&other_nlb, 1, &group.arn), ErrorKind::Invalid),
        (udp, ErrorKind::Invalid),
    ];

    for (spec, expected) in cases {
        let error = aws.create_listener(&spec).await.expect_err("refused");
        assert_eq!(error.kind, expected, "{spec:?}");
    }
}

#[tokio::test]
async fn a_target_group_in_use_cannot_be_deleted_and_gone_is_not_found() {
    let aws = aws();
    let (_, group, listener) = forwarding(&aws, "tg-a", 20000).await;

    let in_use = aws
        .delete_target_group(&group.arn)
        .await
        .expect_err("in use");
    aws.delete_listener(&listener.arn).await.expect("deleted");
    aws.delete_target_group(&group.arn).await.expect("deleted");
    let gone = aws.delete_target_group(&group.arn).await.expect_err("gone");
    let listener_gone = aws.delete_listener(&listener.arn).await.expect_err("gone");

    assert_eq!(in_use.kind, ErrorKind::Invalid);
    assert!(in_use.message.starts_with("ResourceInUse"));
    assert_eq!(gone.kind, ErrorKind::NotFound);
    assert_eq!(listener_gone.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn registered_targets_become_healthy_after_the_health_checks_pass() {
    let aws = aws();
    let (_, group, _) = forwarding(&aws, "tg-a", 20000).await;
    let instance = aws.add_instance("shops-a");
    let target = Target {
        id: instance.clone(),
        port: 0,
    };

    aws.register_targets(&group.arn, std::slice::from_ref(&target))
        .await
        .expect("registered");
    let initial = health_of(&aws, &group.arn).await;
    aws.advance(Duration::from_secs(30));
    let healthy = aws
        .describe_target_health(&group.arn)
        .await
        .expect("health");
    aws.stop_instance(&instance);
    let stopped = health_of(&aws, &group.arn).await;

    assert_eq!(initial, vec!["initial"]);
    assert_eq!(healthy[0].state, "healthy");
    assert_eq!(healthy[0].target.port, 20000, "the group's port by default");
    assert_eq!(stopped, vec!["unhealthy"]);
}

#[tokio::test]
async fn deregistered_targets_drain_then_leave() {
    let aws = aws();
    let (_, group, _) = forwarding(&aws, "tg-a", 20000).await;
    let target = Target {
        id: aws.add_instance("shops-a"),
        port: 20000,
    };
    aws.register_targets(&group.arn, std::slice::from_ref(&target))
        .await
        .expect("registered");

    aws.deregister_targets(&group.arn, std::slice::from_ref(&target))
        .await
        .expect("deregistered");
    let draining = health_of(&aws, &group.arn).await;
    aws.advance(Duration::from_secs(300));
    let drained = health_of(&aws, &group.arn).await;

    assert_eq!(draining, vec!["draining"]);
    assert!(drained.is_empty());
}

#[tokio::test]
async fn targets_of_an_unused_group_are_unused_and_bad_targets_are_refused() {
    let aws = aws();
    let group = aws
        .create_target_group(&group_spec("tg", 1))
        .await
        .expect("group");
    let stopped = aws.add_instance("shops-a");
    aws.stop_instance(&stopped);
    let running = Target {
        id: aws.add_instance("shops-a"),
        port: 0,
    };

    aws.register_targets(&group.arn, &[running])
        .await
        .expect("registered");
    let unused = health_of(&aws, &group.arn).await;
    let refused = [stopped, "i-0000000000000000a".to_owned()];
    for id in refused {
        let target = Target { id, port: 0 };
        let error = aws
            .register_targets(&group.arn, &[target])
            .await
            .expect_err("bad");
        assert_eq!(error.kind, ErrorKind::Invalid);
    }

    assert_eq!(unused, vec!["unused"]);
}

#[tokio::test]
async fn listings_count_one_call_per_page() {
    let aws = aws();
    let balancer = aws.add_load_balancer(LoadBalancerKind::Network, "nlb");
    let mut arns = Vec::new();
    for i in 0..401 {
        let spec = group_spec(&format!("tg-{i}"), 1);
        arns.push(aws.create_target_group(&spec).await.expect("group").arn);
    }
    for (port, arn) in (1..=45).zip(&arns) {
        aws.create_listener(&listener_spec(&balancer, port, arn))
            .await
            .expect("listener");
    }

    let all = aws.list_target_groups().await.expect("listed");
    let described = aws
        .describe_target_groups(&arns[..401])
        .await
        .expect("described");
    let tags = aws.describe_tags(&arns[..41]).await.expect("tags");
    let listeners = aws.describe_listeners(&balancer).await.expect("listeners");

    assert_eq!((all.len(), described.len(), tags.len()), (401, 401, 41));
    assert_eq!(
        aws.call_count("elasticloadbalancing:DescribeTargetGroups"),
        4
    );
    assert_eq!(aws.call_count("elasticloadbalancing:DescribeTags"), 3);
    assert_eq!(listeners.len(), 45);
    assert_eq!(aws.call_count("elasticloadbalancing:DescribeListeners"), 1);
    assert_eq!(all[0].load_balancer_arns, vec![balancer]);
}

#[tokio::test]
async fn tags_are_described_in_order_and_unknown_arns_are_not_found() {
    let aws = aws();
    let (balancer, group, listener) = forwarding(&aws, "tg-a", 20000).await;
    LoadBalancing::add_tags(&aws, &listener.arn, &[Tag::new("k", "v")])
        .await
        .expect("tagged");

    let arns = [listener.arn.clone(), group.arn.clone(), balancer.clone()];
    let tags = aws.describe_tags(&arns).await.expect("described");
    let unknown = aws.describe_tags(&["arn:nope".to_owned()]).await;
    let unknown_group = aws.describe_target_groups(&["arn:nope".to_owned()]).await;

    let keys: Vec<usize> = tags.iter().map(|(_, t)| t.len()).collect();
    assert_eq!(tags[0].0, listener.arn);
    assert_eq!(keys, vec![1, 1, 0]);
    assert_eq!(unknown.map_err(|e| e.kind), Err(ErrorKind::NotFound));
    assert_eq!(unknown_group.map_err(|e| e.kind), Err(ErrorKind::NotFound));
}

#[tokio::test]
async fn listener_certificates_are_listed_and_removed() {
    let aws = aws();
    let balancer = aws.add_load_balancer(LoadBalancerKind::Application, "proxy");
    let listener = aws.https_listener_of(&balancer).expect("https listener");
    let material = CertificateMaterial {
        certificate_pem: "-----BEGIN CERTIFICATE-----\nx\n".to_owned(),
        private_key_pem: "-----BEGIN PRIVATE KEY-----\n".to_owned(),
        chain_pem: String::new(),
    };
    let arn = aws
        .import_certificate(&material, None, &[])
        .await
        .expect("imported");
    let unknown = "arn:aws:acm:eu-west-1:123456789012:certificate/x".to_owned();

    aws.add_listener_certificates(&listener, std::slice::from_ref(&arn))
        .await
        .expect("added");
    let attached = aws.describe_listener_certificates(&listener).await;
    let missing = aws.add_listener_certificates(&listener, &[unknown]).await;
    aws.remove_listener_certificates(&listener, std::slice::from_ref(&arn))
        .await
        .expect("removed");
    let after = aws.describe_listener_certificates(&listener).await;

    assert_eq!(attached, Ok(vec![arn]));
    assert_eq!(missing.map_err(|e| e.kind), Err(ErrorKind::NotFound));
    assert_eq!(after, Ok(vec![]));
}

fn forward(target_group_arn: &str) -> ListenerAction {
    ListenerAction::Forward {
        target_group_arn: target_group_arn.to_owned(),
    }
}

fn http_listener(balancer: &str, action: ListenerAction) -> HttpListenerSpec {
    HttpListenerSpec {
        load_balancer_arn: balancer.to_owned(),
        port: 80,
        default_action: action,
        tags: vec![Tag::new("shop-controller/resource", "acme_listener")],
    }
}

fn rule_spec(listener: &str, priority: u32, group: &str) -> RuleSpec {
    RuleSpec {
        listener_arn: listener.to_owned(),
        priority,
        path_patterns: vec!["/.well-known/acme-challenge/*".to_owned()],
        action: forward(group),
        tags: vec![Tag::new("shop-controller/resource", "acme_listener")],
    }
}

#[tokio::test]
async fn http_listeners_belong_on_application_load_balancers() {
    let aws = aws();
    let alb = aws.add_load_balancer(LoadBalancerKind::Application, "proxy");
    let nlb = aws.add_load_balancer(LoadBalancerKind::Network, "shops");
    let responder = aws.add_http_target_group("acme", 8089);
    let tcp_group = aws
        .create_target_group(&group_spec("tcp", 20000))
        .await
        .expect("tcp");

    let on_nlb = aws
        .create_http_listener(&http_listener(&nlb, ListenerAction::RedirectToHttps))
        .await;
    assert_eq!(on_nlb.expect_err("nlb").kind, ErrorKind::Invalid);
    let to_tcp = aws
        .create_http_listener(&http_listener(&alb, forward(&tcp_group.arn)))
        .await;
    assert_eq!(to_tcp.expect_err("tcp group").kind, ErrorKind::Invalid);
    let other = ListenerAction::Other("fixed-response".to_owned());
    let unasked = aws.create_http_listener(&http_listener(&alb, other)).await;
    assert_eq!(unasked.expect_err("other").kind, ErrorKind::Invalid);

    let spec = http_listener(&alb, ListenerAction::RedirectToHttps);
    let listener = aws.create_http_listener(&spec).await.expect("http");
    assert_eq!((listener.port, listener.protocol.as_str()), (80, "HTTP"));
    assert!(
        listener.arn.contains(":listener/app/proxy/"),
        "{}",
        listener.arn
    );
    let again = aws.create_http_listener(&spec).await.expect("identical");
    assert_eq!(again.arn, listener.arn);
    let different = aws
        .create_http_listener(&http_listener(&alb, forward(&responder)))
        .await;
    assert_eq!(different.expect_err("taken").kind, ErrorKind::AlreadyExists);

    let modified = aws
        .modify_listener_default_action(&listener.arn, &forward(&responder))
        .await
        .expect("modify");
    assert_eq!(
        modified.target_group_arn.as_deref(),
        Some(responder.as_str())
    );
    let groups = aws
        .describe_target_groups(std::slice::from_ref(&responder))
        .await;
    assert_eq!(groups.expect("describe")[0].load_balancer_arns, vec![alb]);
}

#[tokio::test]
async fn rules_have_unique_priorities_and_a_default_rule_last() {
    let aws = aws();
    let alb = aws.add_load_balancer(LoadBalancerKind::Application, "proxy");
    let responder = aws.add_http_target_group("acme", 8089);
    let spec = http_listener(&alb, ListenerAction::RedirectToHttps);
    let listener = aws.create_http_listener(&spec).await.expect("http").arn;

    let second = aws
        .create_rule(&rule_spec(&listener, 7, &responder))
        .await
        .expect("7");
    let first = aws
        .create_rule(&rule_spec(&listener, 1, &responder))
        .await
        .expect("1");
    assert!(
        first.arn.contains(":listener-rule/app/proxy/"),
        "{}",
        first.arn
    );
    let taken = aws.create_rule(&rule_spec(&listener, 7, &responder)).await;
    assert_eq!(
        taken.expect_err("priority in use").kind,
        ErrorKind::AlreadyExists
    );
    for bad in [0, 50_001] {
        let error = aws
            .create_rule(&rule_spec(&listener, bad, &responder))
            .await;
        assert_eq!(
            error.expect_err("priority").kind,
            ErrorKind::Invalid,
            "{bad}"
        );
    }
    let mut no_path = rule_spec(&listener, 3, &responder);
    no_path.path_patterns.clear();
    assert_eq!(
        aws.create_rule(&no_path).await.expect_err("path").kind,
        ErrorKind::Invalid
    );

    let rules = aws.describe_rules(&listener).await.expect("rules");
    let priorities: Vec<Option<u32>> = rules.iter().map(|r| r.priority).collect();
    assert_eq!(priorities, vec![Some(1), Some(7), None]);
    assert_eq!(rules[2].action, ListenerAction::RedirectToHttps);
    let tags = aws
        .describe_tags(std::slice::from_ref(&first.arn))
        .await
        .expect("tags");
    assert_eq!(tags[0].1, spec.tags);
    assert_eq!(
        aws.resources_tagged("shop-controller/resource", "acme_listener")
            .len(),
        3,
        "the listener and both rules"
    );

    let patterns = vec!["/other/*".to_owned()];
    let modified = aws
        .modify_rule(&second.arn, &patterns, &ListenerAction::RedirectToHttps)
        .await
        .expect("modify");
    assert_eq!(
        (modified.path_patterns, modified.priority),
        (patterns, Some(7))
    );
    let default = &rules[2].arn;
    let error = aws.delete_rule(default).await.expect_err("default rule");
    assert_eq!(error.kind, ErrorKind::Invalid);
    aws.delete_rule(&second.arn).await.expect("delete");
    let gone = aws.delete_rule(&second.arn).await.expect_err("gone");
    assert_eq!(gone.kind, ErrorKind::NotFound);

    let error = aws
        .delete_target_group(&responder)
        .await
        .expect_err("in use by a rule");
    assert_eq!(error.kind, ErrorKind::Invalid);
}

#[tokio::test]
async fn rule_calls_are_counted_throttled_and_held_to_the_quota() {
    let mut config = SimConfig::manual();
    config.quotas.rules_per_load_balancer = 2;
    let aws = SimulatedAws::with_config(config);
    let alb = aws.add_load_balancer(LoadBalancerKind::Application, "proxy");
    let responder = aws.add_http_target_group("acme", 8089);
    let spec = http_listener(&alb, ListenerAction::RedirectToHttps);
    let listener = aws.create_http_listener(&spec).await.expect("http").arn;

    aws.fail_next("elasticloadbalancing:CreateRule", ErrorKind::Throttled, 1);
    let throttled = aws.create_rule(&rule_spec(&listener, 1, &responder)).await;
    assert_eq!(throttled.expect_err("throttled").kind, ErrorKind::Throttled);
    assert_eq!(
        aws.describe_rules(&listener).await.expect("rules").len(),
        1,
        "nothing made"
    );
    for priority in [1, 2] {
        aws.create_rule(&rule_spec(&listener, priority, &responder))
            .await
            .expect("rule");
    }
    let full = aws.create_rule(&rule_spec(&listener, 3, &responder)).await;
    assert!(
        matches!(full.expect_err("quota").kind, ErrorKind::QuotaExceeded(Quota::Other(ref q)) if q == "TooManyRules")
    );
    assert_eq!(aws.call_count("elasticloadbalancing:CreateRule"), 4);
    assert_eq!(aws.call_count("elasticloadbalancing:DescribeRules"), 1);
}
