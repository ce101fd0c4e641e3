//! Conversions between the SDK's Elastic Load Balancing v2 types and the `reconcilers::cloud`
//! ones: describe answers into our types, and our targets and tags into request types. No
//! calls here; [`super::ElbLoadBalancing`] makes them.

use aws_sdk_elasticloadbalancingv2::types::{
    ActionTypeEnum, TargetDescription, TargetHealthDescription,
};
use reconcilers::cloud::{
    HealthCheck, Listener, LoadBalancer, Tag, Target, TargetGroup, TargetHealth,
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
    }
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
