//! The listener resource: a TCP listener on the shop's NLB and port, forwarding to the shop's
//! target group. Listeners are observed in bulk, one listing per NLB (with tags read in
//! batches) shared by every shop of the NLB; `diff` is pure.

use crate::cloud::{
    CloudError, KnownTags, Listener, ListenerSpec, LoadBalancing, Owner, Tag, tags_known_or_read,
};

/// What AWS has on the shop's port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub listener: Listener,
    pub tags: Vec<Tag>,
}

/// One step of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    AddTags(Vec<Tag>),
    /// Ours, but forwarding elsewhere or with another protocol: listeners are replaced, since
    /// the trait has no modify (a few seconds without the port beat a wrong forward).
    Recreate,
    /// Another owner's listener holds the port: never touched, reported.
    Conflict {
        why: String,
    },
}

/// The desired listener of a shop.
pub fn desired(nlb_arn: &str, port: u16, target_group_arn: &str, owner: &Owner) -> ListenerSpec {
    ListenerSpec {
        load_balancer_arn: nlb_arn.to_owned(),
        port,
        protocol: "TCP".to_owned(),
        target_group_arn: target_group_arn.to_owned(),
        tags: owner.tags(),
    }
}

/// The plan that takes `observed` to `desired`. Pure.
pub fn diff(desired: &ListenerSpec, observed: Option<&Observed>) -> Vec<Change> {
    let Some(observed) = observed else {
        return vec![Change::Create];
    };
    let forwards_right = observed.listener.protocol == desired.protocol
        && observed.listener.target_group_arn.as_deref() == Some(desired.target_group_arn.as_str());
    let owner = Owner::from_tags(&observed.tags);
    let ours = owner.as_ref() == Owner::from_tags(&desired.tags).as_ref();
    match (ours, forwards_right) {
        (true, true) => vec![],
        (true, false) => vec![Change::Recreate],
        (false, true) if owner.is_none() => {
            // What a crash between create and tag leaves behind: adopt it.
            vec![Change::AddTags(desired.tags.clone())]
        }
        (false, _) => vec![Change::Conflict {
            why: format!(
                "port {} of {} has listener {} owned by {}",
                desired.port,
                desired.load_balancer_arn,
                observed.listener.arn,
                owner.map_or("nobody we know".to_owned(), |o| format!(
                    "{} ({})",
                    o.shop, o.installation
                ))
            ),
        }],
    }
}

/// Finds the listener on the shop's port among `listeners` (the NLB's listing) and reads its
/// tags.
pub async fn observe(
    load_balancing: &dyn LoadBalancing,
    desired: &ListenerSpec,
    listeners: &[Listener],
    known_tags: &KnownTags,
) -> Result<Option<Observed>, CloudError> {
    let Some(listener) = listeners.iter().find(|l| l.port == desired.port) else {
        return Ok(None);
    };
    let tags = tags_known_or_read(load_balancing, &listener.arn, known_tags).await?;
    Ok(Some(Observed {
        listener: listener.clone(),
        tags,
    }))
}

/// Carries out a plan; returns the listener as it now is.
pub async fn apply(
    load_balancing: &dyn LoadBalancing,
    desired: &ListenerSpec,
    observed: Option<&Observed>,
    plan: &[Change],
) -> Result<Option<Listener>, CloudError> {
    let mut listener = observed.map(|o| o.listener.clone());
    for change in plan {
        match change {
            Change::Create => listener = Some(load_balancing.create_listener(desired).await?),
            Change::AddTags(tags) => {
                if let Some(listener) = &listener {
                    load_balancing.add_tags(&listener.arn, tags).await?;
                }
            }
            Change::Recreate => {
                if let Some(old) = &listener {
                    match load_balancing.delete_listener(&old.arn).await {
                        Err(error) if !error.is_not_found() => return Err(error),
                        _ => {}
                    }
                }
                listener = Some(load_balancing.create_listener(desired).await?);
            }
            Change::Conflict { .. } => {}
        }
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cloud::{HealthCheck, TargetGroupSpec};
    use crate::sim::{LoadBalancerKind, SimConfig, SimulatedAws};

    fn owner(shop: &str) -> Owner {
        Owner {
            installation: "test".to_owned(),
            shop: shop.to_owned(),
            resource: "listener".to_owned(),
        }
    }

    async fn group(aws: &SimulatedAws, name: &str) -> String {
        let spec = TargetGroupSpec {
            name: name.to_owned(),
            port: 20001,
            vpc_id: SimConfig::manual().vpc_id,
            health_check: HealthCheck::default(),
            tags: vec![],
        };
        aws.create_target_group(&spec).await.expect("group").arn
    }

    async fn converge(aws: &Arc<SimulatedAws>, desired: &ListenerSpec) -> Vec<Change> {
        let listeners = aws
            .describe_listeners(&desired.load_balancer_arn)
            .await
            .expect("list");
        let observed = observe(aws.as_ref(), desired, &listeners, &KnownTags::new())
            .await
            .expect("observe");
        let plan = diff(desired, observed.as_ref());
        apply(aws.as_ref(), desired, observed.as_ref(), &plan)
            .await
            .expect("apply");
        plan
    }

    #[tokio::test]
    async fn creates_once_and_heals_an_out_of_band_delete() {
        let aws = Arc::new(SimulatedAws::with_config(SimConfig::manual()));
        let nlb = aws.add_load_balancer(LoadBalancerKind::Network, "shops");
        let target_group = group(&aws, "sc-20001-a").await;
        let desired = desired(&nlb, 20001, &target_group, &owner("a.es-hs.com"));

        assert_eq!(converge(&aws, &desired).await, vec![Change::Create]);
        assert!(converge(&aws, &desired).await.is_empty());
        let listener = aws.describe_listeners(&nlb).await.expect("list").remove(0);
        aws.delete_listener(&listener.arn)
            .await
            .expect("out of band");
        assert_eq!(converge(&aws, &desired).await, vec![Change::Create]);
        assert_eq!(aws.describe_listeners(&nlb).await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn a_wrong_forward_is_replaced_and_foreign_listeners_are_left_alone() {
        let aws = Arc::new(SimulatedAws::with_config(SimConfig::manual()));
        let nlb = aws.add_load_balancer(LoadBalancerKind::Network, "shops");
        let first = group(&aws, "sc-20001-a").await;
        let second = group(&aws, "sc-20001-b").await;
        converge(&aws, &desired(&nlb, 20001, &first, &owner("a.es-hs.com"))).await;

        let moved = desired(&nlb, 20001, &second, &owner("a.es-hs.com"));
        assert_eq!(converge(&aws, &moved).await, vec![Change::Recreate]);
        let listener = aws.describe_listeners(&nlb).await.expect("list").remove(0);
        assert_eq!(listener.target_group_arn.as_deref(), Some(second.as_str()));

        let intruder = desired(&nlb, 20001, &first, &owner("b.es-hs.com"));
        let plan = converge(&aws, &intruder).await;
        assert!(
            matches!(&plan[..], [Change::Conflict { why }] if why.contains("a.es-hs.com")),
            "{plan:?}"
        );
        let listener = aws.describe_listeners(&nlb).await.expect("list").remove(0);
        assert_eq!(
            listener.target_group_arn.as_deref(),
            Some(second.as_str()),
            "untouched"
        );
    }
}
