//! The target_group resource: one TCP target group per shop on its port, named by
//! [`target_group_name`], tagged for ownership, with the group's running instances as targets.
//! `observe` reads, `diff` decides (pure), `apply` acts; a second run after `apply` yields an
//! empty plan.
//!
//! The controller observes with one listing per region (and tags read in batches) shared by
//! every shop. A group of the shop's name on another port or VPC (AWS cannot change either) is
//! reported as `Change::Replace` and left alone: the controller never deletes a group it did
//! not find in the state it made it, so the status asks an operator to remove it.

use std::collections::BTreeSet;

use crate::cloud::{
    CloudError, HealthCheck, Instance, KnownTags, LoadBalancing, Owner, Tag, Target, TargetGroup,
    TargetGroupSpec, tags_known_or_read,
};
use crate::hostname::Hostname;
use crate::names::target_group_name;
use crate::placement::Placed;

/// What the spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub spec: TargetGroupSpec,
    pub targets: BTreeSet<Target>,
}

/// What AWS has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub group: TargetGroup,
    pub tags: Vec<Tag>,
    /// Registered targets, draining ones excluded.
    pub targets: BTreeSet<Target>,
}

/// One step of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    AddTags(Vec<Tag>),
    Register(Vec<Target>),
    Deregister(Vec<Target>),
    /// The group exists with settings a target group cannot change (port, VPC).
    Replace {
        why: String,
    },
}

/// The desired target group of a placed shop.
pub fn desired(
    shop: &Hostname,
    placement: &Placed,
    vpc_id: &str,
    owner: &Owner,
    instances: &[Instance],
    health_check: HealthCheck,
) -> Desired {
    let spec = TargetGroupSpec {
        name: target_group_name(shop, placement.port),
        port: placement.port,
        vpc_id: vpc_id.to_owned(),
        health_check,
        tags: owner.tags(),
    };
    let targets = instances
        .iter()
        .map(|instance| Target {
            id: instance.id.clone(),
            port: placement.port,
        })
        .collect();
    Desired { spec, targets }
}

/// The plan that takes `observed` to `desired`. Pure: no client, no clock.
pub fn diff(desired: &Desired, observed: Option<&Observed>) -> Vec<Change> {
    let Some(observed) = observed else {
        let mut plan = vec![Change::Create];
        if !desired.targets.is_empty() {
            plan.push(Change::Register(desired.targets.iter().cloned().collect()));
        }
        return plan;
    };
    if observed.group.port != desired.spec.port || observed.group.vpc_id != desired.spec.vpc_id {
        return vec![Change::Replace {
            why: format!(
                "target group {} is on port {} in {}, the spec wants port {} in {}",
                observed.group.name,
                observed.group.port,
                observed.group.vpc_id,
                desired.spec.port,
                desired.spec.vpc_id
            ),
        }];
    }

    let mut plan = Vec::new();
    let missing_tags: Vec<Tag> = desired
        .spec
        .tags
        .iter()
        .filter(|tag| !observed.tags.contains(tag))
        .cloned()
        .collect();
    if !missing_tags.is_empty() {
        plan.push(Change::AddTags(missing_tags));
    }
    let register: Vec<Target> = desired
        .targets
        .difference(&observed.targets)
        .cloned()
        .collect();
    if !register.is_empty() {
        plan.push(Change::Register(register));
    }
    let deregister: Vec<Target> = observed
        .targets
        .difference(&desired.targets)
        .cloned()
        .collect();
    if !deregister.is_empty() {
        plan.push(Change::Deregister(deregister));
    }
    plan
}

/// Finds the shop's target group among `known` (a listing of the region) and reads its tags
/// and targets.
pub async fn observe(
    load_balancing: &dyn LoadBalancing,
    desired: &Desired,
    known: &[TargetGroup],
    known_tags: &KnownTags,
) -> Result<Option<Observed>, CloudError> {
    let Some(group) = known.iter().find(|g| g.name == desired.spec.name) else {
        return Ok(None);
    };
    let tags = tags_known_or_read(load_balancing, &group.arn, known_tags).await?;
    let targets = load_balancing
        .describe_target_health(&group.arn)
        .await?
        .into_iter()
        .filter(|health| health.state != "draining")
        .map(|health| health.target)
        .collect();
    Ok(Some(Observed {
        group: group.clone(),
        tags,
        targets,
    }))
}

/// Carries out a plan; returns the target group as it now is. Idempotent: "already exists" on
/// create returns the existing group (AWS's rule for identical settings).
pub async fn apply(
    load_balancing: &dyn LoadBalancing,
    desired: &Desired,
    observed: Option<&Observed>,
    plan: &[Change],
) -> Result<Option<TargetGroup>, CloudError> {
    let mut group = observed.map(|o| o.group.clone());
    for change in plan {
        match change {
            Change::Create => {
                group = Some(load_balancing.create_target_group(&desired.spec).await?);
            }
            Change::AddTags(tags) => {
                if let Some(group) = &group {
                    load_balancing.add_tags(&group.arn, tags).await?;
                }
            }
            Change::Register(targets) => {
                if let Some(group) = &group {
                    load_balancing.register_targets(&group.arn, targets).await?;
                }
            }
            Change::Deregister(targets) => {
                if let Some(group) = &group {
                    load_balancing
                        .deregister_targets(&group.arn, targets)
                        .await?;
                }
            }
            Change::Replace { .. } => {}
        }
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sim::{SimConfig, SimulatedAws};

    fn owner() -> Owner {
        Owner {
            installation: "test".to_owned(),
            shop: "example.es-hs.com".to_owned(),
            resource: "target_group".to_owned(),
        }
    }

    fn placement() -> Placed {
        Placed {
            instance_group: "shops-a".to_owned(),
            nlb_arn: "nlb".to_owned(),
            port: 20001,
        }
    }

    fn desired_for(instances: &[Instance]) -> Desired {
        let shop = Hostname::parse("example.es-hs.com").expect("valid");
        let vpc = SimConfig::manual().vpc_id;
        desired(
            &shop,
            &placement(),
            &vpc,
            &owner(),
            instances,
            HealthCheck::default(),
        )
    }

    async fn converge(aws: &Arc<SimulatedAws>, desired: &Desired) -> Vec<Change> {
        let known = aws.list_target_groups().await.expect("list");
        let observed = observe(aws.as_ref(), desired, &known, &KnownTags::new())
            .await
            .expect("observe");
        let plan = diff(desired, observed.as_ref());
        apply(aws.as_ref(), desired, observed.as_ref(), &plan)
            .await
            .expect("apply");
        plan
    }

    fn instances(aws: &SimulatedAws) -> Vec<Instance> {
        let instance = |id| Instance {
            id,
            private_ip: None,
            availability_zone: None,
        };
        vec![
            instance(aws.add_instance("shops-a")),
            instance(aws.add_instance("shops-a")),
        ]
    }

    #[test]
    fn a_missing_group_is_created_then_filled() {
        let target = Target {
            id: "i-1".to_owned(),
            port: 20001,
        };
        let desired = Desired {
            spec: TargetGroupSpec {
                name: "sc-20001-x".to_owned(),
                port: 20001,
                vpc_id: "vpc-1".to_owned(),
                health_check: HealthCheck::default(),
                tags: owner().tags(),
            },
            targets: BTreeSet::from([target.clone()]),
        };
        assert_eq!(
            diff(&desired, None),
            vec![Change::Create, Change::Register(vec![target])]
        );
    }

    #[test]
    fn a_moved_port_cannot_be_patched() {
        let desired = Desired {
            spec: TargetGroupSpec {
                name: "sc".to_owned(),
                port: 20002,
                vpc_id: "vpc-1".to_owned(),
                health_check: HealthCheck::default(),
                tags: vec![],
            },
            targets: BTreeSet::new(),
        };
        let observed = Observed {
            group: TargetGroup {
                arn: "arn".to_owned(),
                name: "sc".to_owned(),
                port: 20001,
                protocol: "TCP".to_owned(),
                vpc_id: "vpc-1".to_owned(),
                health_check: HealthCheck::default(),
                load_balancer_arns: vec![],
            },
            tags: vec![],
            targets: BTreeSet::new(),
        };
        assert!(matches!(
            diff(&desired, Some(&observed))[..],
            [Change::Replace { .. }]
        ));
    }

    #[tokio::test]
    async fn converges_then_plans_nothing_and_heals_drift() {
        let aws = Arc::new(SimulatedAws::with_config(SimConfig::manual()));
        let fleet = instances(&aws);
        let desired = desired_for(&fleet);

        let first = converge(&aws, &desired).await;
        assert!(
            matches!(first[..], [Change::Create, Change::Register(_)]),
            "{first:?}"
        );
        assert!(
            converge(&aws, &desired).await.is_empty(),
            "a converged group plans nothing"
        );
        assert_eq!(
            aws.resources_tagged(crate::cloud::TAG_SHOP, "example.es-hs.com")
                .len(),
            1
        );

        let known = aws.list_target_groups().await.expect("list");
        let arn = known[0].arn.clone();
        let removed = Target {
            id: fleet[0].id.clone(),
            port: 20001,
        };
        aws.deregister_targets(&arn, std::slice::from_ref(&removed))
            .await
            .expect("out of band");
        aws.advance(std::time::Duration::from_secs(400));
        let healed = converge(&aws, &desired).await;
        assert_eq!(healed, vec![Change::Register(vec![removed])]);

        let shrunk = desired_for(&fleet[1..]);
        let plan = converge(&aws, &shrunk).await;
        assert_eq!(
            plan,
            vec![Change::Deregister(vec![Target {
                id: fleet[0].id.clone(),
                port: 20001
            }])]
        );
    }

    #[tokio::test]
    async fn an_untagged_group_left_by_a_crash_is_adopted() {
        let aws = Arc::new(SimulatedAws::with_config(SimConfig::manual()));
        let fleet = instances(&aws);
        let desired = desired_for(&fleet);
        let bare = TargetGroupSpec {
            tags: vec![],
            ..desired.spec.clone()
        };
        aws.create_target_group(&bare).await.expect("crash left it");

        let plan = converge(&aws, &desired).await;
        assert!(
            matches!(plan.first(), Some(Change::AddTags(tags)) if tags.len() == 3),
            "{plan:?}"
        );
        assert_eq!(
            aws.list_target_groups().await.expect("list").len(),
            1,
            "no duplicate"
        );
        assert!(converge(&aws, &desired).await.is_empty());
    }
}
