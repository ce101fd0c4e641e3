//! The `LoadBalancing` contract.

use reconcilers::challenge_listener::{self, CHALLENGE_PATH_PATTERN, Change, PORT};
use reconcilers::cloud::{
    ErrorKind, HealthCheck, HttpListenerSpec, ListenerAction, ListenerSpec, Owner, Quota, RuleSpec,
    Tag, Target, TargetGroupSpec,
};

use super::Backend;

fn owner(shop: &str, resource: &str) -> Owner {
    Owner {
        installation: "contract".to_owned(),
        shop: shop.to_owned(),
        resource: resource.to_owned(),
    }
}

fn target_group(backend: &Backend, name: &str, port: u16) -> TargetGroupSpec {
    TargetGroupSpec {
        name: name.to_owned(),
        port,
        vpc_id: backend.vpc_id.clone(),
        health_check: HealthCheck::default(),
        tags: owner("a.es-hs.com", "target_group").tags(),
    }
}

pub(super) async fn target_groups_are_created_found_tagged_and_deleted(backend: Backend) {
    let lb = backend.load_balancing.clone();
    let name = backend.unique_name("tg");
    let created = lb
        .create_target_group(&target_group(&backend, &name, 20001))
        .await
        .expect("create");
    assert_eq!(
        (created.name.as_str(), created.port),
        (name.as_str(), 20001)
    );
    assert!(created.arn.contains(":targetgroup/"), "{}", created.arn);

    let again = lb
        .create_target_group(&target_group(&backend, &name, 20001))
        .await;
    if backend.gaps.identical_target_group_rejected {
        assert_eq!(
            again.expect_err("moto rejects the repeat").kind,
            ErrorKind::AlreadyExists
        );
    } else {
        let again = again.expect("same again");
        assert_eq!(
            again.arn, created.arn,
            "an identical create returns the existing group"
        );
    }
    let other_port = lb
        .create_target_group(&target_group(&backend, &name, 20011))
        .await;
    assert_eq!(
        other_port.expect_err("name taken").kind,
        ErrorKind::AlreadyExists
    );

    let found = lb
        .describe_target_groups(std::slice::from_ref(&created.arn))
        .await
        .expect("describe");
    assert_eq!(found.len(), 1);
    assert!(
        lb.list_target_groups()
            .await
            .expect("list")
            .iter()
            .any(|g| g.arn == created.arn)
    );

    let tags = lb
        .describe_tags(std::slice::from_ref(&created.arn))
        .await
        .expect("tags");
    assert_eq!(
        Owner::from_tags(&tags[0].1),
        Some(owner("a.es-hs.com", "target_group"))
    );
    lb.add_tags(&created.arn, &[Tag::new("extra", "1")])
        .await
        .expect("add tags");
    let tags = lb
        .describe_tags(std::slice::from_ref(&created.arn))
        .await
        .expect("tags");
    assert!(tags[0].1.contains(&Tag::new("extra", "1")));

    lb.delete_target_group(&created.arn).await.expect("delete");
    let gone = lb
        .describe_target_groups(std::slice::from_ref(&created.arn))
        .await;
    assert_eq!(gone.expect_err("deleted").kind, ErrorKind::NotFound);
}

pub(super) async fn targets_register_and_report_health(backend: Backend) {
    let lb = backend.load_balancing.clone();
    let name = backend.unique_name("tg");
    let group = lb
        .create_target_group(&target_group(&backend, &name, 20002))
        .await
        .expect("create");
    let mut targets: Vec<Target> = backend
        .instance_ids
        .iter()
        .map(|id| Target {
            id: id.clone(),
            port: 20002,
        })
        .collect();
    targets.sort();
    lb.register_targets(&group.arn, &targets)
        .await
        .expect("register");
    let mut health: Vec<Target> = lb
        .describe_target_health(&group.arn)
        .await
        .expect("health")
        .into_iter()
        .map(|h| h.target)
        .collect();
    health.sort();
    assert_eq!(health, targets);

    lb.deregister_targets(&group.arn, &targets[..1])
        .await
        .expect("deregister");
    let remaining = lb.describe_target_health(&group.arn).await.expect("health");
    let remaining: Vec<&Target> = remaining
        .iter()
        .map(|h| &h.target)
        .filter(|t| *t == &targets[0])
        .collect();
    assert!(
        remaining.is_empty() || backend.gaps.deregistered_targets_linger,
        "a deregistered target is still listed"
    );
    lb.delete_target_group(&group.arn).await.expect("cleanup");
}

pub(super) async fn listeners_forward_to_their_target_group(backend: Backend) {
    let lb = backend.load_balancing.clone();
    let name = backend.unique_name("tg");
    let group = lb
        .create_target_group(&target_group(&backend, &name, 20003))
        .await
        .expect("create");
    let spec = ListenerSpec {
        load_balancer_arn: backend.nlb_arn.clone(),
        port: backend.unique_port(),
        protocol: "TCP".to_owned(),
        target_group_arn: group.arn.clone(),
        tags: owner("a.es-hs.com", "listener").tags(),
    };
    let listener = lb.create_listener(&spec).await.expect("create listener");
    assert_eq!(listener.port, spec.port);
    assert_eq!(
        listener.target_group_arn.as_deref(),
        Some(group.arn.as_str())
    );
    let listed = lb
        .describe_listeners(&backend.nlb_arn)
        .await
        .expect("describe");
    assert_eq!(listed.iter().filter(|l| l.port == spec.port).count(), 1);

    // AWS answers an identical CreateListener with the listener it has; moto makes another.
    let again = lb.create_listener(&spec).await.expect("identical create");
    if backend.gaps.duplicate_listeners_allowed {
        assert_ne!(
            again.arn, listener.arn,
            "moto learned idempotent listeners: drop the gap"
        );
        lb.delete_listener(&again.arn)
            .await
            .expect("delete the duplicate");
    } else {
        assert_eq!(again.arn, listener.arn);
        let other_spec = target_group(&backend, &backend.unique_name("tg"), 20013);
        let other = lb
            .create_target_group(&other_spec)
            .await
            .expect("second group");
        let taken = ListenerSpec {
            target_group_arn: other.arn.clone(),
            ..spec.clone()
        };
        let error = lb
            .create_listener(&taken)
            .await
            .expect_err("one listener per port");
        assert_eq!(error.kind, ErrorKind::AlreadyExists);
        lb.delete_target_group(&other.arn).await.expect("cleanup");
    }

    lb.delete_listener(&listener.arn).await.expect("delete");
    let again = lb.delete_listener(&listener.arn).await.expect_err("gone");
    assert_eq!(again.kind, ErrorKind::NotFound);
    lb.delete_target_group(&group.arn).await.expect("cleanup");
}

pub(super) async fn an_nlb_holds_fifty_listeners(backend: Backend) {
    let lb = backend.load_balancing.clone();
    let name = backend.unique_name("tg");
    let group = lb
        .create_target_group(&target_group(&backend, &name, 20004))
        .await
        .expect("create");
    let existing = lb
        .describe_listeners(&backend.nlb_arn)
        .await
        .expect("describe")
        .len();
    let mut last = None;
    for i in existing..=50 {
        let spec = ListenerSpec {
            load_balancer_arn: backend.nlb_arn.clone(),
            port: 30000 + i as u16,
            protocol: "TCP".to_owned(),
            target_group_arn: group.arn.clone(),
            tags: Vec::new(),
        };
        last = Some(lb.create_listener(&spec).await);
    }
    let last = last.expect("tried");
    if backend.gaps.listener_quota_ignored {
        assert!(
            last.is_ok(),
            "moto learned the listener quota: drop the gap"
        );
        return;
    }
    let error = last.expect_err("51st listener");
    assert_eq!(
        error.kind,
        ErrorKind::QuotaExceeded(Quota::ListenersPerLoadBalancer)
    );
}

pub(super) async fn listener_certificates_attach_and_detach(backend: Backend) {
    let lb = backend.load_balancing.clone();
    let certificate = backend
        .import_test_certificate("attach.merchant.example")
        .await;
    let listener = backend.alb_listener_arn.clone();
    lb.add_listener_certificates(&listener, std::slice::from_ref(&certificate))
        .await
        .expect("attach");
    let attached = lb
        .describe_listener_certificates(&listener)
        .await
        .expect("describe");
    assert!(attached.contains(&certificate), "{attached:?}");
    lb.remove_listener_certificates(&listener, std::slice::from_ref(&certificate))
        .await
        .expect("detach");
    let attached = lb
        .describe_listener_certificates(&listener)
        .await
        .expect("describe");
    assert!(!attached.contains(&certificate));
}

pub(super) async fn unknown_objects_are_not_found(backend: Backend) {
    let lb = backend.load_balancing.clone();
    let missing = format!(
        "arn:aws:elasticloadbalancing:{}:{}:targetgroup/{}/0123456789abcdef",
        backend.region,
        backend.account,
        backend.unique_name("gone")
    );
    let error = lb
        .describe_target_health(&missing)
        .await
        .expect_err("missing group");
    assert_eq!(error.kind, ErrorKind::NotFound, "{error}");
    let error = lb.delete_target_group(&missing).await;
    assert!(
        matches!(
            &error,
            Ok(())
                | Err(reconcilers::cloud::CloudError {
                    kind: ErrorKind::NotFound,
                    ..
                })
        ),
        "deleting a missing group is done or not found: {error:?}"
    );
}

fn forward(target_group_arn: &str) -> ListenerAction {
    ListenerAction::Forward {
        target_group_arn: target_group_arn.to_owned(),
    }
}

pub(super) async fn http_listeners_redirect_and_rules_forward_paths(backend: Backend) {
    let lb = backend.load_balancing.clone();
    let responder = backend.responder_target_group_arn.clone();
    let tags = owner(&backend.region, challenge_listener::RESOURCE).tags();
    let spec = HttpListenerSpec {
        load_balancer_arn: backend.alb_arn.clone(),
        port: PORT,
        default_action: ListenerAction::RedirectToHttps,
        tags: tags.clone(),
    };
    let listener = lb.create_http_listener(&spec).await.expect("create");
    assert_eq!((listener.port, listener.protocol.as_str()), (PORT, "HTTP"));
    assert_eq!(listener.default_action, ListenerAction::RedirectToHttps);
    let listed = lb.describe_listeners(&backend.alb_arn).await.expect("list");
    let port_80 = listed.iter().find(|l| l.port == PORT).expect("listed");
    assert_eq!(port_80.default_action, ListenerAction::RedirectToHttps);
    let https = listed.iter().find(|l| l.port == 443).expect("https");
    assert!(
        matches!(https.default_action, ListenerAction::Other(_)),
        "a fixed response is neither a forward nor the redirect: {:?}",
        https.default_action
    );

    let rule_spec = RuleSpec {
        listener_arn: listener.arn.clone(),
        priority: 1,
        path_patterns: vec![CHALLENGE_PATH_PATTERN.to_owned()],
        action: forward(&responder),
        tags,
    };
    let rule = lb.create_rule(&rule_spec).await.expect("create rule");
    assert_eq!(rule.priority, Some(1));
    assert_eq!(rule.path_patterns, rule_spec.path_patterns);
    assert_eq!(rule.action, rule_spec.action);
    let taken = RuleSpec {
        path_patterns: vec!["/other/*".to_owned()],
        ..rule_spec.clone()
    };
    let error = lb.create_rule(&taken).await.expect_err("priority in use");
    assert_eq!(error.kind, ErrorKind::AlreadyExists, "{error}");

    let rules = lb.describe_rules(&listener.arn).await.expect("rules");
    let priorities: Vec<Option<u32>> = rules.iter().map(|r| r.priority).collect();
    assert_eq!(priorities, [Some(1), None], "ours, then the default rule");
    assert_eq!(rules[0], rule);
    assert_eq!(rules[1].action, ListenerAction::RedirectToHttps);
    assert!(rules[1].path_patterns.is_empty());
    let tags = lb
        .describe_tags(std::slice::from_ref(&rule.arn))
        .await
        .expect("tags");
    assert_eq!(
        Owner::from_tags(&tags[0].1),
        Some(owner(&backend.region, challenge_listener::RESOURCE))
    );

    let patterns = vec!["/.well-known/*".to_owned()];
    let redirect = ListenerAction::RedirectToHttps;
    let modified = lb
        .modify_rule(&rule.arn, &patterns, &redirect)
        .await
        .expect("modify rule");
    assert_eq!(
        (&modified.path_patterns, &modified.action, modified.priority),
        (&patterns, &redirect, Some(1))
    );
    let modified = lb
        .modify_listener_default_action(&listener.arn, &forward(&responder))
        .await
        .expect("modify listener");
    assert_eq!(modified.default_action, forward(&responder));
    assert_eq!(
        modified.target_group_arn.as_deref(),
        Some(responder.as_str())
    );

    lb.delete_rule(&rule.arn).await.expect("delete rule");
    let rules = lb.describe_rules(&listener.arn).await.expect("rules");
    assert_eq!(rules.len(), 1, "the default rule stays: {rules:?}");
    let gone = lb.delete_rule(&rule.arn).await;
    if backend.gaps.missing_rule_deleted_quietly {
        assert!(gone.is_ok(), "moto learned RuleNotFound: drop the gap");
    } else {
        assert_eq!(gone.expect_err("gone").kind, ErrorKind::NotFound);
    }
    lb.delete_listener(&listener.arn).await.expect("cleanup");
}

pub(super) async fn the_challenge_listener_converges_and_heals(backend: Backend) {
    let lb = backend.load_balancing.clone();
    let (alb, responder) = (&backend.alb_arn, &backend.responder_target_group_arn);
    let owner = challenge_listener::owner("contract", &backend.region);
    let reconcile = || challenge_listener::reconcile(lb.as_ref(), alb, responder, &owner);

    let first = reconcile().await.expect("create");
    assert_eq!(
        first.applied,
        [Change::CreateListener, Change::CreateRule { priority: 1 }]
    );
    assert!(first.warnings.is_empty(), "{:?}", first.warnings);
    let second = reconcile().await.expect("converged");
    assert!(
        second.applied.is_empty(),
        "a second run plans nothing: {second:?}"
    );
    assert_eq!(second.rule_arn, first.rule_arn);

    let rule_arn = first.rule_arn.expect("our rule");
    lb.delete_rule(&rule_arn).await.expect("out of band");
    let healed = reconcile().await.expect("heal");
    assert_eq!(healed.applied, [Change::CreateRule { priority: 1 }]);
    let rules = lb
        .describe_rules(&healed.listener_arn.expect("listener"))
        .await
        .expect("rules");
    assert_eq!(rules[0].action, forward(responder));
    assert_eq!(rules[0].path_patterns, [CHALLENGE_PATH_PATTERN]);
    let last = reconcile().await.expect("converged again");
    assert!(last.applied.is_empty(), "{last:?}");
}
