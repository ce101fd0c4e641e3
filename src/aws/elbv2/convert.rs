//! Conversions between the SDK's Elastic Load Balancing v2 types and the `reconcilers::cloud`
//! ones: describe answers into our types, and our targets and tags into request types. No
//! calls here; [`super::ElbLoadBalancing`] makes them.

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, PathPatternConditionConfig, RedirectActionConfig,
    RedirectActionStatusCodeEnum, Rule, RuleCondition, TargetDescription, TargetHealthDescription,
};
use reconcilers::cloud::{
    CloudError, ErrorKind, HealthCheck, Listener, ListenerAction, ListenerRule, LoadBalancer, Tag,
    Target, TargetGroup, TargetHealth,
};

type SdkLoadBalancer = aws_sdk_elasticloadbalancingv2::types::LoadBalancer;
type SdkTargetGroup = aws_sdk_elasticloadbalancingv2::types::TargetGroup;
type SdkListener = aws_sdk_elasticloadbalancingv2::types::Listener;
type SdkTag = aws_sdk_elasticloadbalancingv2::types::Tag;

pub(super) fn target_group_of(group: &SdkTargetGroup) -> TargetGroup {
    let defaults = HealthCheck::default();
    let count = |value: Option<i32>, default: u32| value.map_or(default, |v| v.unsigned_abs());
    TargetGroup {
        arn: group.target_group_arn().unwrap_or_default().to_owned(),
        name: group.target_group_name().unwrap_or_default().to_owned(),
        port: to_port(group.port()),
        protocol: group
            .protocol()
            .map(|p| p.as_str())
            .unwrap_or_default()
            .to_owned(),
        vpc_id: group.vpc_id().unwrap_or_default().to_owned(),
        health_check: HealthCheck {
            protocol: group
                .health_check_protocol()
                .map_or(defaults.protocol.as_str(), |p| p.as_str())
                .to_owned(),
            interval_seconds: count(
                group.health_check_interval_seconds(),
                defaults.interval_seconds,
            ),
            healthy_threshold: count(group.healthy_threshold_count(), defaults.healthy_threshold),
            unhealthy_threshold: count(
                group.unhealthy_threshold_count(),
                defaults.unhealthy_threshold,
            ),
        },
        load_balancer_arns: group.load_balancer_arns().to_vec(),
    }
}

pub(super) fn listener_of(listener: &SdkListener) -> Listener {
    // A forward action names its group directly or as the only one of a forward config.
    let target_group_arn = listener
        .default_actions()
        .iter()
        .find(|action| action.r#type() == Some(&ActionTypeEnum::Forward))
        .and_then(|action| {
            action.target_group_arn().or_else(|| {
                let groups = action.forward_config()?.target_groups();
                match groups {
                    [only] => only.target_group_arn(),
                    _ => None,
                }
            })
        })
        .map(str::to_owned);
    Listener {
        arn: listener.listener_arn().unwrap_or_default().to_owned(),
        load_balancer_arn: listener.load_balancer_arn().unwrap_or_default().to_owned(),
        port: to_port(listener.port()),
        protocol: listener
            .protocol()
            .map(|p| p.as_str())
            .unwrap_or_default()
            .to_owned(),
        target_group_arn,
        default_action: action_of(listener.default_actions()),
    }
}

/// What a list of actions (a default action, a rule's actions) does, in our terms: one
/// forward to one group, the redirect to HTTPS, or a few words about anything else.
pub(super) fn action_of(actions: &[Action]) -> ListenerAction {
    let [action] = actions else {
        let types: Vec<&str> = actions
            .iter()
            .filter_map(|a| a.r#type().map(ActionTypeEnum::as_str))
            .collect();
        return ListenerAction::Other(types.join(" then "));
    };
    let kind = action.r#type().map_or("none", ActionTypeEnum::as_str);
    match action.r#type() {
        Some(ActionTypeEnum::Forward) => {
            let single = action
                .forward_config()
                .and_then(|config| match config.target_groups() {
                    [only] => only.target_group_arn(),
                    _ => None,
                });
            match action.target_group_arn().or(single) {
                Some(arn) => ListenerAction::Forward {
                    target_group_arn: arn.to_owned(),
                },
                None => ListenerAction::Other("weighted forward".to_owned()),
            }
        }
        Some(ActionTypeEnum::Redirect)
            if action.redirect_config().is_some_and(redirects_to_https) =>
        {
            ListenerAction::RedirectToHttps
        }
        _ => ListenerAction::Other(kind.to_owned()),
    }
}

/// A 301 to the same host, path and query on HTTPS port 443; AWS fills in the parts a create
/// leaves out, so absent parts count as the defaults.
fn redirects_to_https(config: &RedirectActionConfig) -> bool {
    let default = |value: Option<&str>, expected: &str| value.is_none_or(|v| v == expected);
    config.protocol() == Some("HTTPS")
        && config.port() == Some("443")
        && config.status_code() == Some(&RedirectActionStatusCodeEnum::Http301)
        && default(config.host(), "#{host}")
        && default(config.path(), "/#{path}")
        && default(config.query(), "#{query}")
}

/// The request form of an action; `Other` cannot be asked for.
pub(super) fn sdk_action(
    operation: &'static str,
    action: &ListenerAction,
) -> Result<Action, CloudError> {
    match action {
        ListenerAction::Forward { target_group_arn } => Ok(Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(target_group_arn)
            .build()),
        ListenerAction::RedirectToHttps => {
            // Every part spelled out, so the listener reads back the same from AWS and moto.
            let redirect = RedirectActionConfig::builder()
                .protocol("HTTPS")
                .port("443")
                .host("#{host}")
                .path("/#{path}")
                .query("#{query}")
                .status_code(RedirectActionStatusCodeEnum::Http301)
                .build();
            Ok(Action::builder()
                .r#type(ActionTypeEnum::Redirect)
                .redirect_config(redirect)
                .build())
        }
        ListenerAction::Other(description) => Err(CloudError::new(
            ErrorKind::Invalid,
            operation,
            format!("the action {description:?} cannot be asked for"),
        )),
    }
}

/// A rule as DescribeRules, CreateRule and ModifyRule answer it.
pub(super) fn rule_of(rule: &Rule) -> ListenerRule {
    let priority = rule.priority().and_then(|p| p.parse().ok());
    let path_patterns = rule
        .conditions()
        .iter()
        .filter(|condition| condition.field() == Some("path-pattern"))
        .flat_map(|condition| match condition.path_pattern_config() {
            Some(config) => config.values().to_vec(),
            None => condition.values().to_vec(),
        })
        .collect();
    ListenerRule {
        arn: rule.rule_arn().unwrap_or_default().to_owned(),
        priority: if rule.is_default() == Some(true) {
            None
        } else {
            priority
        },
        path_patterns,
        action: action_of(rule.actions()),
    }
}

/// The path-pattern condition of a rule.
pub(super) fn path_condition(path_patterns: &[String]) -> RuleCondition {
    let config = PathPatternConditionConfig::builder()
        .set_values(Some(path_patterns.to_vec()))
        .build();
    RuleCondition::builder()
        .field("path-pattern")
        .path_pattern_config(config)
        .build()
}

pub(super) fn load_balancer_of(lb: &SdkLoadBalancer) -> LoadBalancer {
    LoadBalancer {
        arn: lb.load_balancer_arn().unwrap_or_default().to_owned(),
        dns_name: lb.dns_name().unwrap_or_default().to_owned(),
        kind: lb
            .r#type()
            .map(|t| t.as_str())
            .unwrap_or_default()
            .to_owned(),
        vpc_id: lb.vpc_id().unwrap_or_default().to_owned(),
    }
}

pub(super) fn target_health_of(description: &TargetHealthDescription) -> TargetHealth {
    TargetHealth {
        target: Target {
            id: description
                .target()
                .and_then(|t| t.id())
                .unwrap_or_default()
                .to_owned(),
            port: to_port(description.target().and_then(|t| t.port())),
        },
        state: description
            .target_health()
            .and_then(|health| health.state())
            .map_or("unavailable", |state| state.as_str())
            .to_owned(),
    }
}

pub(super) fn tag_of(tag: &SdkTag) -> Tag {
    Tag::new(
        tag.key().unwrap_or_default(),
        tag.value().unwrap_or_default(),
    )
}

pub(super) fn target_descriptions(targets: &[Target]) -> Vec<TargetDescription> {
    targets
        .iter()
        .map(|target| {
            TargetDescription::builder()
                .id(&target.id)
                .port(i32::from(target.port))
                .build()
        })
        .collect()
}

pub(super) fn elb_tags(tags: &[Tag]) -> Vec<SdkTag> {
    tags.iter()
        .map(|tag| SdkTag::builder().key(&tag.key).value(&tag.value).build())
        .collect()
}

pub(super) fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn to_port(port: Option<i32>) -> u16 {
    port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use aws_sdk_elasticloadbalancingv2::types::{ForwardActionConfig, TargetGroupTuple};

    use aws_sdk_elasticloadbalancingv2::types::{Action, ProtocolEnum};

    use super::*;

    #[test]
    fn listeners_name_their_forward_target_group() {
        let direct = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn("tg-1")
            .build();
        let weighted = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(
                ForwardActionConfig::builder()
                    .target_groups(TargetGroupTuple::builder().target_group_arn("tg-2").build())
                    .build(),
            )
            .build();
        let fixed = Action::builder()
            .r#type(ActionTypeEnum::FixedResponse)
            .build();
        let cases = [
            (direct, Some("tg-1")),
            (weighted, Some("tg-2")),
            (fixed, None),
        ];
        for (action, expected) in cases {
            let listener = SdkListener::builder()
                .listener_arn("l-1")
                .port(8123)
                .protocol(ProtocolEnum::Tcp)
                .default_actions(action)
                .build();
            let converted = listener_of(&listener);
            assert_eq!(converted.target_group_arn.as_deref(), expected);
            assert_eq!((converted.port, converted.protocol.as_str()), (8123, "TCP"));
        }
    }

    #[test]
    fn target_groups_convert_with_health_checks() {
        let group = SdkTargetGroup::builder()
            .target_group_arn("tg-1")
            .target_group_name("shop-ab12")
            .port(8123)
            .protocol(ProtocolEnum::Tcp)
            .vpc_id("vpc-1")
            .health_check_protocol(ProtocolEnum::Http)
            .health_check_interval_seconds(30)
            .load_balancer_arns("lb-1")
            .build();

        let converted = target_group_of(&group);

        assert_eq!(converted.port, 8123);
        assert_eq!(converted.health_check.protocol, "HTTP");
        assert_eq!(converted.health_check.interval_seconds, 30);
        assert_eq!(converted.health_check.healthy_threshold, 3);
        assert_eq!(converted.load_balancer_arns, vec!["lb-1".to_owned()]);
    }
}
