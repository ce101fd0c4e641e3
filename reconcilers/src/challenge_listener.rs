//! The proxy ALB's port-80 listener for ACME HTTP-01 (#5), one per region: Let's Encrypt
//! fetches `http://<custom domain>/.well-known/acme-challenge/<token>` through the Global
//! Accelerator from the region's proxy ALB, whose port-80 listener forwards that path to the
//! controller's HTTP-01 responder (a target group the operator made and names in the region
//! config) and redirects everything else to HTTPS. Observe / `diff` (pure) / apply, like
//! `listener.rs`; the region loop that calls [`reconcile`] and records its [`Report`] lives in
//! the controller.
//!
//! Ownership: the listener (when we create it) and our rule carry [`owner`]'s tags, with the
//! region name in the shop slot (the object belongs to the region, and a region name has no dot,
//! so it never reads as a shop's domain) and [`RESOURCE`] as the resource.
//!
//! Decisions:
//! - Our rule asks for priority 1, so the challenge path is decided before any rule an operator
//!   adds. When 1 is taken by someone else's rule, we take the lowest free priority and warn
//!   if a rule before ours could match the challenge path; we never move or change others'
//!   rules. Once created, our rule keeps its priority (moving it would take another call for
//!   no gain).
//! - A port-80 listener that is not ours (an operator's, or untagged) is used, never deleted,
//!   retagged or changed: we only add and heal our rule on it. Its default action is left as
//!   the operator set it (a warning says when it is not the redirect to HTTPS), because it may
//!   be deliberate (plain-HTTP content, a redirect to another host) and our rule, running before
//!   the default action, is all HTTP-01 needs. A non-HTTP listener on port 80 is only reported.
//! - Rules of ours beyond the first (what two racing writers could leave) are deleted.

use crate::cloud::{
    CloudError, HttpListenerSpec, KnownTags, Listener, ListenerAction, ListenerRule, LoadBalancing,
    Owner, RuleSpec, Tag,
};
use crate::config::RegionConfig;

/// The port the listener takes: HTTP-01 validation always connects to port 80.
pub const PORT: u16 = 80;
/// The path Let's Encrypt fetches tokens from.
pub const CHALLENGE_PATH_PATTERN: &str = "/.well-known/acme-challenge/*";
/// The priority our rule asks for first.
pub const PREFERRED_PRIORITY: u32 = 1;
/// The resource of the ownership tags.
pub const RESOURCE: &str = "acme_listener";

/// ELB's highest rule priority.
const MAX_PRIORITY: u32 = 50_000;
/// A path the challenge pattern matches, to tell whether another rule would take it first.
const SAMPLE_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/sample-token";

/// The ownership of a region's challenge listener and rule.
pub fn owner(installation: &str, region: &str) -> Owner {
    Owner {
        installation: installation.to_owned(),
        shop: region.to_owned(),
        resource: RESOURCE.to_owned(),
    }
}

/// Where a region's challenge listener goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub load_balancer_arn: String,
    pub responder_target_group_arn: String,
    pub owner: Owner,
}

impl Desired {
    pub fn new(alb_arn: &str, responder_target_group_arn: &str, owner: &Owner) -> Self {
        Self {
            load_balancer_arn: alb_arn.to_owned(),
            responder_target_group_arn: responder_target_group_arn.to_owned(),
            owner: owner.clone(),
        }
    }

    /// The listener we create when port 80 is free.
    pub fn listener_spec(&self) -> HttpListenerSpec {
        HttpListenerSpec {
            load_balancer_arn: self.load_balancer_arn.clone(),
            port: PORT,
            default_action: ListenerAction::RedirectToHttps,
            tags: self.owner.tags(),
        }
    }

    /// What our rule does.
    pub fn rule_action(&self) -> ListenerAction {
        ListenerAction::Forward {
            target_group_arn: self.responder_target_group_arn.clone(),
        }
    }

    /// Our rule's condition.
    pub fn path_patterns(&self) -> Vec<String> {
        vec![CHALLENGE_PATH_PATTERN.to_owned()]
    }

    fn rule_spec(&self, listener_arn: &str, priority: u32) -> RuleSpec {
        RuleSpec {
            listener_arn: listener_arn.to_owned(),
            priority,
            path_patterns: self.path_patterns(),
            action: self.rule_action(),
            tags: self.owner.tags(),
        }
    }
}

/// Where the challenge listener goes in a region, from its config.
pub fn desired_for_region(config: &RegionConfig, installation: &str) -> Result<Desired, String> {
    let Some(responder) = &config.acme_responder_target_group_arn else {
        return Err("the region names no ACME responder target group".to_owned());
    };
    let Some(alb_arn) = config.proxy_alb_arn() else {
        return Err("the region's HTTPS listeners name no single proxy ALB".to_owned());
    };
    let owner = owner(installation, config.region.as_str());
    Ok(Desired::new(&alb_arn, responder, &owner))
}

/// The ALB's port-80 listener, its rules and their tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub listener: Listener,
    pub listener_tags: Vec<Tag>,
    /// Every rule, the default one included, as DescribeRules lists them.
    pub rules: Vec<ListenerRule>,
    /// Tags of the rules other than the default one, by ARN.
    pub rule_tags: KnownTags,
}

/// One step of the plan, in the order `apply` runs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Port 80 is free: create our listener, redirecting to HTTPS.
    CreateListener,
    /// Our listener's default action drifted: set it back to the redirect.
    SetDefaultAction { listener_arn: String },
    /// No rule of ours: create one at this priority.
    CreateRule { priority: u32 },
    /// Our rule matches other paths or forwards elsewhere: set it back.
    ModifyRule { rule_arn: String },
    /// A second rule of ours.
    DeleteRule { rule_arn: String },
}

/// What `diff` decided: the changes, and what it saw but leaves alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Things an operator may want to know (a foreign default action, a rule that could take
    /// the challenge path first, a port 80 we cannot use). They repeat on every run.
    pub warnings: Vec<String>,
}

/// What a reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Why nothing was looked at (the region has no responder target group or no ALB).
    pub skipped: Option<String>,
    pub listener_arn: Option<String>,
    /// Our rule's ARN.
    pub rule_arn: Option<String>,
    /// The changes carried out.
    pub applied: Vec<Change>,
    pub warnings: Vec<String>,
}

/// The plan that takes `observed` to `desired`. Pure.
pub fn diff(desired: &Desired, observed: Option<&Observed>) -> Plan {
    let Some(observed) = observed else {
        return Plan {
            changes: vec![
                Change::CreateListener,
                Change::CreateRule {
                    priority: PREFERRED_PRIORITY,
                },
            ],
            warnings: vec![],
        };
    };
    let listener = &observed.listener;
    if listener.protocol != "HTTP" {
        let warning = format!(
            "port {PORT} of {} has {} listener {}, which cannot answer HTTP-01 challenges",
            desired.load_balancer_arn, listener.protocol, listener.arn
        );
        return Plan {
            changes: vec![],
            warnings: vec![warning],
        };
    }

    let mut plan = Plan::default();
    let ours = Owner::from_tags(&observed.listener_tags).as_ref() == Some(&desired.owner);
    if listener.default_action != ListenerAction::RedirectToHttps {
        if ours {
            plan.changes.push(Change::SetDefaultAction {
                listener_arn: listener.arn.clone(),
            });
        } else {
            plan.warnings.push(format!(
                "listener {} is not ours: its default action ({}) is left as it is",
                listener.arn,
                describe(&listener.default_action)
            ));
        }
    }
    diff_rules(desired, observed, &mut plan);
    plan
}

/// Our rule: create it, or heal the first and delete the others.
fn diff_rules(desired: &Desired, observed: &Observed, plan: &mut Plan) {
    let mut our_rules: Vec<&ListenerRule> = observed
        .rules
        .iter()
        .filter(|rule| !rule.is_default())
        .filter(|rule| {
            let tags = observed
                .rule_tags
                .get(&rule.arn)
                .map_or(&[][..], Vec::as_slice);
            Owner::from_tags(tags).as_ref() == Some(&desired.owner)
        })
        .collect();
    our_rules.sort_by_key(|rule| rule.priority);
    let priority = match our_rules.first() {
        None => {
            let priority = free_priority(&observed.rules);
            plan.changes.push(Change::CreateRule { priority });
            Some(priority)
        }
        Some(rule) => {
            let right = rule.path_patterns == desired.path_patterns()
                && rule.action == desired.rule_action();
            if !right {
                plan.changes.push(Change::ModifyRule {
                    rule_arn: rule.arn.clone(),
                });
            }
            rule.priority
        }
    };
    for extra in our_rules.iter().skip(1) {
        plan.changes.push(Change::DeleteRule {
            rule_arn: extra.arn.clone(),
        });
    }
    let Some(priority) = priority else {
        return;
    };
    for rule in observed
        .rules
        .iter()
        .filter(|r| r.priority < Some(priority))
    {
        let shadows = rule
            .path_patterns
            .iter()
            .any(|p| matches_path(p, SAMPLE_CHALLENGE_PATH));
        if !rule.is_default() && shadows {
            plan.warnings.push(format!(
                "rule {} (priority {priority_before}) may take challenge requests before ours \
                 (priority {priority})",
                rule.arn,
                priority_before = rule.priority.unwrap_or(0),
            ));
        }
    }
}

/// [`PREFERRED_PRIORITY`] when free, else the lowest free one.
fn free_priority(rules: &[ListenerRule]) -> u32 {
    let taken = |priority: u32| rules.iter().any(|r| r.priority == Some(priority));
    (PREFERRED_PRIORITY..=MAX_PRIORITY)
        .find(|p| !taken(*p))
        .unwrap_or(MAX_PRIORITY)
}

/// Whether an ELB path pattern (`*` any run of characters, `?` one) matches `path`.
fn matches_path(pattern: &str, path: &str) -> bool {
    let (pattern, path) = (pattern.as_bytes(), path.as_bytes());
    // Classic wildcard matching with one backtrack point for the last `*`.
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < path.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, s));
                p += 1;
            }
            Some(&c) if c == b'?' || c == path[s] => {
                p += 1;
                s += 1;
            }
            _ => match star {
                Some((star_p, star_s)) => {
                    p = star_p + 1;
                    s = star_s + 1;
                    star = Some((star_p, star_s + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn describe(action: &ListenerAction) -> String {
    match action {
        ListenerAction::Forward { target_group_arn } => format!("forward to {target_group_arn}"),
        ListenerAction::RedirectToHttps => "redirect to HTTPS".to_owned(),
        ListenerAction::Other(description) => description.clone(),
    }
}

/// Finds the ALB's port-80 listener and reads its rules and their tags (with the listener's,
/// in one DescribeTags call for up to 19 rules). Three reads when the listener exists, one
/// when it does not.
pub async fn observe(
    load_balancing: &dyn LoadBalancing,
    alb_arn: &str,
) -> Result<Option<Observed>, CloudError> {
    let listeners = load_balancing.describe_listeners(alb_arn).await?;
    let Some(listener) = listeners.into_iter().find(|l| l.port == PORT) else {
        return Ok(None);
    };
    let rules = load_balancing.describe_rules(&listener.arn).await?;

    let mut arns = vec![listener.arn.clone()];
    arns.extend(
        rules
            .iter()
            .filter(|r| !r.is_default())
            .map(|r| r.arn.clone()),
    );
    let mut tags: KnownTags = load_balancing
        .describe_tags(&arns)
        .await?
        .into_iter()
        .collect();
    let listener_tags = tags.remove(&listener.arn).unwrap_or_default();
    Ok(Some(Observed {
        listener,
        listener_tags,
        rules,
        rule_tags: tags,
    }))
}

/// Carries out a plan: creates before it deletes, so the challenge path is never without a
/// rule. Returns the listener's and our rule's ARNs. "Not found" on delete counts as done.
pub async fn apply(
    load_balancing: &dyn LoadBalancing,
    desired: &Desired,
    observed: Option<&Observed>,
    plan: &Plan,
) -> Result<(Option<String>, Option<String>), CloudError> {
    let mut listener_arn = observed.map(|o| o.listener.arn.clone());
    let mut rule_arn = observed.and_then(|o| our_first_rule(desired, o));
    for change in &plan.changes {
        match change {
            Change::CreateListener => {
                let listener = load_balancing
                    .create_http_listener(&desired.listener_spec())
                    .await?;
                listener_arn = Some(listener.arn);
            }
            Change::SetDefaultAction { listener_arn } => {
                let action = ListenerAction::RedirectToHttps;
                load_balancing
                    .modify_listener_default_action(listener_arn, &action)
                    .await?;
            }
            Change::CreateRule { priority } => {
                let Some(listener_arn) = &listener_arn else {
                    continue;
                };
                let spec = desired.rule_spec(listener_arn, *priority);
                rule_arn = Some(load_balancing.create_rule(&spec).await?.arn);
            }
            Change::ModifyRule { rule_arn } => {
                let (patterns, action) = (desired.path_patterns(), desired.rule_action());
                load_balancing
                    .modify_rule(rule_arn, &patterns, &action)
                    .await?;
            }
            Change::DeleteRule { rule_arn } => match load_balancing.delete_rule(rule_arn).await {
                Err(error) if !error.is_not_found() => return Err(error),
                _ => {}
            },
        }
    }
    Ok((listener_arn, rule_arn))
}

fn our_first_rule(desired: &Desired, observed: &Observed) -> Option<String> {
    observed
        .rules
        .iter()
        .filter(|rule| {
            let tags = observed
                .rule_tags
                .get(&rule.arn)
                .map_or(&[][..], Vec::as_slice);
            !rule.is_default() && Owner::from_tags(tags).as_ref() == Some(&desired.owner)
        })
        .min_by_key(|rule| rule.priority)
        .map(|rule| rule.arn.clone())
}

/// Observes, plans and applies: ensures the port-80 listener of `alb_arn` sends challenge
/// requests to `responder_target_group_arn` and everything else to HTTPS.
pub async fn reconcile(
    load_balancing: &dyn LoadBalancing,
    alb_arn: &str,
    responder_target_group_arn: &str,
    owner: &Owner,
) -> Result<Report, CloudError> {
    let desired = Desired::new(alb_arn, responder_target_group_arn, owner);
    let observed = observe(load_balancing, alb_arn).await?;
    let plan = diff(&desired, observed.as_ref());
    let (listener_arn, rule_arn) =
        apply(load_balancing, &desired, observed.as_ref(), &plan).await?;
    Ok(Report {
        skipped: None,
        listener_arn,
        rule_arn,
        applied: plan.changes,
        warnings: plan.warnings,
    })
}

/// Removes what this installation made on the ALB's port 80 for a region that no longer wants
/// it (its responder target group unset, or the region disabled): our rules, then our
/// listener once no rule of anyone else is left on it. An operator's listener and rules stay.
/// Returns the ARNs deleted; none when there was nothing of ours.
pub async fn remove(
    load_balancing: &dyn LoadBalancing,
    alb_arn: &str,
    owner: &Owner,
) -> Result<Vec<String>, CloudError> {
    let Some(observed) = observe(load_balancing, alb_arn).await? else {
        return Ok(Vec::new());
    };
    let tags_of = |arn: &str| observed.rule_tags.get(arn).map_or(&[][..], Vec::as_slice);
    let (ours, others): (Vec<&ListenerRule>, Vec<&ListenerRule>) = observed
        .rules
        .iter()
        .filter(|rule| !rule.is_default())
        .partition(|rule| Owner::from_tags(tags_of(&rule.arn)).as_ref() == Some(owner));
    let mut deleted = Vec::new();
    for rule in ours {
        match load_balancing.delete_rule(&rule.arn).await {
            Err(error) if !error.is_not_found() => return Err(error),
            _ => deleted.push(rule.arn.clone()),
        }
    }
    let listener_is_ours = Owner::from_tags(&observed.listener_tags).as_ref() == Some(owner);
    if listener_is_ours && others.is_empty() {
        match load_balancing.delete_listener(&observed.listener.arn).await {
            Err(error) if !error.is_not_found() => return Err(error),
            _ => deleted.push(observed.listener.arn.clone()),
        }
    }
    Ok(deleted)
}

/// [`reconcile`] for a region: reports why it did nothing when the region has no responder
/// target group or no single proxy ALB.
pub async fn reconcile_region(
    load_balancing: &dyn LoadBalancing,
    config: &RegionConfig,
    installation: &str,
) -> Result<Report, CloudError> {
    match desired_for_region(config, installation) {
        Ok(desired) => {
            let (alb, responder) = (
                &desired.load_balancer_arn,
                &desired.responder_target_group_arn,
            );
            reconcile(load_balancing, alb, responder, &desired.owner).await
        }
        Err(why) => Ok(Report {
            skipped: Some(why),
            ..Report::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sim::{LoadBalancerKind, SimConfig, SimulatedAws};

    const ALB: &str = "arn:aws:elasticloadbalancing:eu-west-1:1:loadbalancer/app/proxy/50dc";
    const LISTENER: &str = "arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/proxy/50dc/80";
    const RESPONDER: &str = "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/acme/73e2";
    const ELSEWHERE: &str = "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/web/91ab";

    fn ours() -> Owner {
        owner("prod", "eu-west-1")
    }

    fn desired() -> Desired {
        Desired::new(ALB, RESPONDER, &ours())
    }

    fn rule(id: &str, priority: u32, pattern: &str, action: ListenerAction) -> ListenerRule {
        ListenerRule {
            arn: format!("{LISTENER}/rule-{id}"),
            priority: Some(priority),
            path_patterns: vec![pattern.to_owned()],
            action,
        }
    }

    fn forward(target_group_arn: &str) -> ListenerAction {
        ListenerAction::Forward {
            target_group_arn: target_group_arn.to_owned(),
        }
    }

    fn our_rule(priority: u32) -> ListenerRule {
        rule("ours", priority, CHALLENGE_PATH_PATTERN, forward(RESPONDER))
    }

    /// A port-80 HTTP listener with `default` and the given rules; `ours` rules are tagged as
    /// ours, the others carry `foreign`'s tags (none when `None`).
    fn observed(
        listener_owner: Option<Owner>,
        default: ListenerAction,
        ours: Vec<ListenerRule>,
        foreign: Vec<(ListenerRule, Option<Owner>)>,
    ) -> Observed {
        let mut rule_tags = KnownTags::new();
        let mut rules = Vec::new();
        for rule in ours {
            rule_tags.insert(rule.arn.clone(), super::tests::ours().tags());
            rules.push(rule);
        }
        for (rule, owner) in foreign {
            rule_tags.insert(
                rule.arn.clone(),
                owner.map(|o| o.tags()).unwrap_or_default(),
            );
            rules.push(rule);
        }
        rules.push(ListenerRule {
            arn: format!("{LISTENER}/default"),
            priority: None,
            path_patterns: vec![],
            action: default.clone(),
        });
        Observed {
            listener: Listener {
                arn: LISTENER.to_owned(),
                load_balancer_arn: ALB.to_owned(),
                port: PORT,
                protocol: "HTTP".to_owned(),
                target_group_arn: None,
                default_action: default,
            },
            listener_tags: listener_owner.map(|o| o.tags()).unwrap_or_default(),
            rules,
            rule_tags,
        }
    }

    #[test]
    fn diff_plans_the_listener_and_our_rule() {
        let redirect = ListenerAction::RedirectToHttps;
        let fixed = ListenerAction::Other("fixed-response".to_owned());
        let other_installation = owner("staging", "eu-west-1");
        let rule_arn = |id: &str| format!("{LISTENER}/rule-{id}");
        let cases: Vec<(&str, Option<Observed>, Vec<Change>, usize)> = vec![
            (
                "port 80 is free",
                None,
                vec![Change::CreateListener, Change::CreateRule { priority: 1 }],
                0,
            ),
            (
                "converged",
                Some(observed(
                    Some(ours()),
                    redirect.clone(),
                    vec![our_rule(1)],
                    vec![],
                )),
                vec![],
                0,
            ),
            (
                "our default action drifted",
                Some(observed(
                    Some(ours()),
                    fixed.clone(),
                    vec![our_rule(1)],
                    vec![],
                )),
                vec![Change::SetDefaultAction {
                    listener_arn: LISTENER.to_owned(),
                }],
                0,
            ),
            (
                "our rule was deleted",
                Some(observed(Some(ours()), redirect.clone(), vec![], vec![])),
                vec![Change::CreateRule { priority: 1 }],
                0,
            ),
            (
                "our rule forwards elsewhere",
                Some(observed(
                    Some(ours()),
                    redirect.clone(),
                    vec![rule("ours", 1, CHALLENGE_PATH_PATTERN, forward(ELSEWHERE))],
                    vec![],
                )),
                vec![Change::ModifyRule {
                    rule_arn: rule_arn("ours"),
                }],
                0,
            ),
            (
                "our rule matches another path",
                Some(observed(
                    Some(ours()),
                    redirect.clone(),
                    vec![rule("ours", 1, "/.well-known/*", forward(RESPONDER))],
                    vec![],
                )),
                vec![Change::ModifyRule {
                    rule_arn: rule_arn("ours"),
                }],
                0,
            ),
            (
                "an operator's listener keeps its default action; priority 1 is theirs",
                Some(observed(
                    None,
                    fixed.clone(),
                    vec![],
                    vec![(rule("api", 1, "/api/*", forward(ELSEWHERE)), None)],
                )),
                vec![Change::CreateRule { priority: 2 }],
                1,
            ),
            (
                "an operator's catch-all rule before ours is reported",
                Some(observed(
                    None,
                    redirect.clone(),
                    vec![],
                    vec![
                        (rule("all", 1, "/*", forward(ELSEWHERE)), None),
                        (rule("b", 2, "/b/*", forward(ELSEWHERE)), None),
                        (rule("d", 4, "/d/*", forward(ELSEWHERE)), None),
                    ],
                )),
                vec![Change::CreateRule { priority: 3 }],
                1,
            ),
            (
                "another installation's rule is not ours",
                Some(observed(
                    Some(ours()),
                    redirect.clone(),
                    vec![],
                    vec![(our_rule(1), Some(other_installation))],
                )),
                vec![Change::CreateRule { priority: 2 }],
                1,
            ),
            (
                "a second rule of ours is deleted, the first one kept",
                Some(observed(
                    Some(ours()),
                    redirect.clone(),
                    vec![
                        our_rule(1),
                        rule("twin", 7, CHALLENGE_PATH_PATTERN, forward(RESPONDER)),
                    ],
                    vec![],
                )),
                vec![Change::DeleteRule {
                    rule_arn: rule_arn("twin"),
                }],
                0,
            ),
        ];
        for (case, observed, changes, warnings) in cases {
            let plan = diff(&desired(), observed.as_ref());
            assert_eq!(plan.changes, changes, "{case}");
            assert_eq!(plan.warnings.len(), warnings, "{case}: {:?}", plan.warnings);
        }
    }

    #[test]
    fn a_port_80_listener_that_is_not_http_is_only_reported() {
        let mut https = observed(None, ListenerAction::RedirectToHttps, vec![], vec![]);
        https.listener.protocol = "HTTPS".to_owned();
        let plan = diff(&desired(), Some(&https));
        assert!(plan.changes.is_empty());
        assert!(
            plan.warnings[0].contains("HTTPS listener"),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn path_patterns_match_like_elb() {
        let path = SAMPLE_CHALLENGE_PATH;
        let cases = [
            ("/*", true),
            ("*", true),
            ("/.well-known/*", true),
            (CHALLENGE_PATH_PATTERN, true),
            ("/.well-known/acme-challenge/?ample-token", true),
            ("/*/acme-challenge/*", true),
            ("/api/*", false),
            ("/.well-known/acme-challenge", false),
            ("/.well-known/acme-challenge/sample", false),
            ("", false),
        ];
        for (pattern, expected) in cases {
            assert_eq!(matches_path(pattern, path), expected, "{pattern}");
        }
    }

    #[test]
    fn regions_without_a_responder_or_an_alb_are_skipped() {
        let listener = "arn:aws:elasticloadbalancing:eu-west-1:1:listener/app/proxy/50dc/443";
        let mut config = crate::config::RegionConfig {
            region: crate::spec::RegionName::parse("eu-west-1").expect("valid"),
            enabled: true,
            codebuild_project: "b".to_owned(),
            artifact_bucket: crate::spec::BucketName::parse("artifacts").expect("valid"),
            codedeploy_application: "d".to_owned(),
            proxy_name_tag: "p".to_owned(),
            nginx_config_dir: "/n".to_owned(),
            alb_https_listener_arns: vec![listener.to_owned()],
            acme_responder_target_group_arn: None,
            global_accelerator_ips: vec![],
            allowed_parent_domains: vec![],
            updated_at: 0,
        };
        let skipped = desired_for_region(&config, "prod").expect_err("no responder");
        assert!(skipped.contains("responder"), "{skipped}");

        config.acme_responder_target_group_arn = Some(RESPONDER.to_owned());
        assert_eq!(desired_for_region(&config, "prod"), Ok(desired()));

        config.alb_https_listener_arns.clear();
        let skipped = desired_for_region(&config, "prod").expect_err("no alb");
        assert!(skipped.contains("ALB"), "{skipped}");
    }

    const MUTATIONS: [&str; 6] = [
        "elasticloadbalancing:CreateListener",
        "elasticloadbalancing:ModifyListener",
        "elasticloadbalancing:CreateRule",
        "elasticloadbalancing:ModifyRule",
        "elasticloadbalancing:DeleteRule",
        "elasticloadbalancing:AddTags",
    ];

    fn mutations(aws: &SimulatedAws) -> u64 {
        MUTATIONS.iter().map(|op| aws.call_count(op)).sum()
    }

    /// An account with a proxy ALB and a responder group; returns (aws, alb, responder).
    fn world() -> (Arc<SimulatedAws>, String, String) {
        let aws = Arc::new(SimulatedAws::with_config(SimConfig::manual()));
        let alb = aws.add_load_balancer(LoadBalancerKind::Application, "proxy");
        let responder = aws.add_http_target_group("acme-responder", 8089);
        (aws, alb, responder)
    }

    #[tokio::test]
    async fn creates_heals_and_then_leaves_alone() {
        let (aws, alb, responder) = world();

        let first = reconcile(aws.as_ref(), &alb, &responder, &ours())
            .await
            .expect("create");
        assert_eq!(first.applied.len(), 2, "{first:?}");
        let listener_arn = first.listener_arn.clone().expect("listener");
        let rules = aws.describe_rules(&listener_arn).await.expect("rules");
        assert_eq!(rules.len(), 2, "ours and the default: {rules:?}");
        assert_eq!(rules[0].priority, Some(PREFERRED_PRIORITY));
        assert_eq!(rules[1].action, ListenerAction::RedirectToHttps);

        let before = mutations(&aws);
        let second = reconcile(aws.as_ref(), &alb, &responder, &ours())
            .await
            .expect("again");
        assert!(second.applied.is_empty(), "{second:?}");
        assert_eq!(mutations(&aws), before, "a converged run mutates nothing");

        let rule_arn = first.rule_arn.expect("rule");
        aws.delete_rule(&rule_arn).await.expect("out of band");
        let fixed = ListenerAction::Forward {
            target_group_arn: responder.clone(),
        };
        aws.modify_listener_default_action(&listener_arn, &fixed)
            .await
            .expect("out of band");
        let healed = reconcile(aws.as_ref(), &alb, &responder, &ours())
            .await
            .expect("heal");
        assert_eq!(
            healed.applied,
            vec![
                Change::SetDefaultAction {
                    listener_arn: listener_arn.clone()
                },
                Change::CreateRule { priority: 1 }
            ]
        );
        let listener = aws.describe_listeners(&alb).await.expect("listeners");
        let port_80 = listener.iter().find(|l| l.port == PORT).expect("port 80");
        assert_eq!(port_80.default_action, ListenerAction::RedirectToHttps);
        let last = reconcile(aws.as_ref(), &alb, &responder, &ours())
            .await
            .expect("again");
        assert!(last.applied.is_empty(), "{last:?}");
    }

    #[tokio::test]
    async fn removal_takes_what_is_ours_and_leaves_an_operators_listener() {
        let (aws, alb, responder) = world();
        let made = reconcile(aws.as_ref(), &alb, &responder, &ours())
            .await
            .expect("create");
        let deleted = remove(aws.as_ref(), &alb, &ours()).await.expect("remove");
        assert_eq!(
            deleted,
            vec![
                made.rule_arn.clone().expect("rule"),
                made.listener_arn.clone().expect("listener")
            ]
        );
        let left = aws.describe_listeners(&alb).await.expect("listeners");
        assert!(left.iter().all(|l| l.port != PORT), "{left:?}");
        assert_eq!(
            remove(aws.as_ref(), &alb, &ours()).await.expect("again"),
            Vec::<String>::new()
        );

        // On an operator's listener only our rule goes.
        let theirs = HttpListenerSpec {
            load_balancer_arn: alb.clone(),
            port: PORT,
            default_action: ListenerAction::RedirectToHttps,
            tags: vec![Tag::new("team", "web")],
        };
        let listener = aws.create_http_listener(&theirs).await.expect("operator's");
        reconcile(aws.as_ref(), &alb, &responder, &ours())
            .await
            .expect("adopt");
        let deleted = remove(aws.as_ref(), &alb, &ours()).await.expect("remove");
        assert_eq!(deleted.len(), 1, "our rule only: {deleted:?}");
        let rules = aws.describe_rules(&listener.arn).await.expect("rules");
        assert_eq!(rules.len(), 1, "the default rule stays: {rules:?}");
        let after = aws.describe_listeners(&alb).await.expect("listeners");
        assert!(after.iter().any(|l| l.arn == listener.arn), "theirs stays");
    }

    #[tokio::test]
    async fn an_operators_listener_gets_our_rule_and_nothing_else() {
        let (aws, alb, responder) = world();
        let web = aws.add_http_target_group("web", 8080);
        let theirs = HttpListenerSpec {
            load_balancer_arn: alb.clone(),
            port: PORT,
            default_action: ListenerAction::Forward {
                target_group_arn: web.clone(),
            },
            tags: vec![Tag::new("team", "web")],
        };
        let listener = aws.create_http_listener(&theirs).await.expect("operator's");
        let their_rule = RuleSpec {
            listener_arn: listener.arn.clone(),
            priority: 1,
            path_patterns: vec!["/static/*".to_owned()],
            action: theirs.default_action.clone(),
            tags: vec![],
        };
        aws.create_rule(&their_rule).await.expect("operator's rule");

        let report = reconcile(aws.as_ref(), &alb, &responder, &ours())
            .await
            .expect("adopt");
        assert_eq!(report.applied, vec![Change::CreateRule { priority: 2 }]);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        let after = aws.describe_listeners(&alb).await.expect("listeners");
        let port_80 = after.iter().find(|l| l.port == PORT).expect("still there");
        assert_eq!(port_80.arn, listener.arn);
        assert_eq!(port_80.default_action, theirs.default_action, "untouched");
        let tags = crate::cloud::tags_of(aws.as_ref(), &listener.arn)
            .await
            .expect("tags");
        assert_eq!(tags, vec![Tag::new("team", "web")], "not retagged");
        let rules = aws.describe_rules(&listener.arn).await.expect("rules");
        assert_eq!(rules.len(), 3, "theirs, ours and the default: {rules:?}");

        let before = mutations(&aws);
        let again = reconcile(aws.as_ref(), &alb, &responder, &ours())
            .await
            .expect("again");
        assert!(again.applied.is_empty(), "{again:?}");
        assert_eq!(mutations(&aws), before);
    }

    #[tokio::test]
    async fn a_rule_whose_create_response_was_lost_is_found_by_its_tags() {
        let (aws, alb, responder) = world();
        let lost = crate::sim::FaultProfile {
            lost_response: 1.0,
            ..crate::sim::FaultProfile::default()
        };
        aws.set_faults("elasticloadbalancing:CreateRule", lost);
        let error = reconcile(aws.as_ref(), &alb, &responder, &ours())
            .await
            .expect_err("lost");
        assert_eq!(error.kind, crate::cloud::ErrorKind::Transient);
        aws.clear_faults();

        let retry = reconcile(aws.as_ref(), &alb, &responder, &ours())
            .await
            .expect("retry");
        assert!(retry.applied.is_empty(), "{retry:?}");
        assert!(retry.rule_arn.is_some());
        let listener_arn = retry.listener_arn.expect("listener");
        assert_eq!(
            aws.describe_rules(&listener_arn)
                .await
                .expect("rules")
                .len(),
            2
        );
    }
}
