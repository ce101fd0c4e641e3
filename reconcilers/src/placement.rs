//! Placement: which instance group, NLB and port a new shop gets. A pure decision over the
//! region's groups and the placements already made; the store's unique constraints on
//! (NLB, port) and (group, port) make the decision safe between concurrent writers.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::InstanceGroup;

/// Listeners an NLB holds at most (an AWS quota that cannot be raised).
pub const LISTENERS_PER_NLB: usize = 50;
/// Running instances a group needs before it takes shops: every shop runs on two or more.
pub const MIN_RUNNING_INSTANCES: usize = 2;

/// One placement already made.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Placed {
    pub instance_group: String,
    pub nlb_arn: String,
    pub port: u16,
}

/// A group of the region as placement sees it.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    pub group: &'a InstanceGroup,
    /// Running instances carrying the group's `Name` tag.
    pub running_instances: usize,
}

/// Why a shop cannot be placed now. Each names the limit, so the shop's status says what an
/// operator must change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoRoom {
    #[error("region has no enabled instance group")]
    NoGroup,
    #[error("no instance group has {MIN_RUNNING_INSTANCES} running instances ({0})")]
    TooFewInstances(String),
    #[error("every instance group is at capacity ({0})")]
    GroupsFull(String),
    #[error("every NLB of the region's groups holds {LISTENERS_PER_NLB} listeners (the AWS quota)")]
    ListenerQuota,
    #[error("no free port in the port ranges of the groups with room")]
    PortsExhausted,
}

impl NoRoom {
    /// A CamelCase reason for the shop's status.
    pub fn reason(&self) -> &'static str {
        match self {
            NoRoom::NoGroup => "NoInstanceGroup",
            NoRoom::TooFewInstances(_) => "InstanceGroupDegraded",
            NoRoom::GroupsFull(_) => "InstanceGroupsFull",
            NoRoom::ListenerQuota => "QuotaExceeded",
            NoRoom::PortsExhausted => "PortsExhausted",
        }
    }
}

/// Picks a placement for one new shop: among enabled groups with enough running instances and
/// room, the one with the most free room (spreading load and leaving room for growth); on it
/// the NLB with the fewest listeners under the quota; on that NLB the lowest port of the
/// group's range free on both the NLB and the group.
pub fn choose(candidates: &[Candidate<'_>], placed: &[Placed]) -> Result<Placed, NoRoom> {
    let enabled: Vec<&Candidate<'_>> = candidates.iter().filter(|c| c.group.enabled).collect();
    if enabled.is_empty() {
        return Err(NoRoom::NoGroup);
    }
    let healthy: Vec<&Candidate<'_>> = enabled
        .iter()
        .copied()
        .filter(|c| c.running_instances >= MIN_RUNNING_INSTANCES)
        .collect();
    if healthy.is_empty() {
        return Err(NoRoom::TooFewInstances(describe(&enabled, |c| {
            format!("{}: {} running", c.group.name, c.running_instances)
        })));
    }

    let usage = Usage::of(placed);
    let mut with_room: Vec<(&Candidate<'_>, u32)> = healthy
        .iter()
        .map(|c| {
            (
                *c,
                c.group
                    .capacity
                    .saturating_sub(usage.shops_in(&c.group.name)),
            )
        })
        .filter(|(_, free)| *free > 0)
        .collect();
    if with_room.is_empty() {
        return Err(NoRoom::GroupsFull(describe(&healthy, |c| {
            format!(
                "{}: {}/{}",
                c.group.name,
                usage.shops_in(&c.group.name),
                c.group.capacity
            )
        })));
    }
    with_room.sort_by(|(a, free_a), (b, free_b)| {
        free_b
            .cmp(free_a)
            .then_with(|| a.group.name.cmp(&b.group.name))
    });

    let mut quota_hit = false;
    for (candidate, _) in with_room {
        match place_on(candidate.group, &usage) {
            Ok(placed) => return Ok(placed),
            Err(NoRoom::ListenerQuota) => quota_hit = true,
            Err(_) => {}
        }
    }
    Err(if quota_hit {
        NoRoom::ListenerQuota
    } else {
        NoRoom::PortsExhausted
    })
}

/// Places on one group: the emptiest NLB under the quota with a free port.
fn place_on(group: &InstanceGroup, usage: &Usage) -> Result<Placed, NoRoom> {
    let mut nlbs: Vec<&String> = group
        .nlb_arns
        .iter()
        .filter(|nlb| usage.listeners_on(nlb) < LISTENERS_PER_NLB)
        .collect();
    if nlbs.is_empty() {
        return Err(NoRoom::ListenerQuota);
    }
    nlbs.sort_by_key(|nlb| (usage.listeners_on(nlb), (*nlb).clone()));
    for nlb in nlbs {
        let free = (group.port_min..=group.port_max)
            .find(|port| !usage.port_taken(nlb, &group.name, *port));
        if let Some(port) = free {
            return Ok(Placed {
                instance_group: group.name.clone(),
                nlb_arn: nlb.clone(),
                port,
            });
        }
    }
    Err(NoRoom::PortsExhausted)
}

fn describe<T>(items: &[&T], each: impl Fn(&T) -> String) -> String {
    items
        .iter()
        .map(|item| each(item))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts over the placements already made.
struct Usage {
    shops_per_group: BTreeMap<String, u32>,
    ports_per_nlb: BTreeMap<String, BTreeSet<u16>>,
    ports_per_group: BTreeMap<String, BTreeSet<u16>>,
}

impl Usage {
    fn of(placed: &[Placed]) -> Self {
        let mut usage = Usage {
            shops_per_group: BTreeMap::new(),
            ports_per_nlb: BTreeMap::new(),
            ports_per_group: BTreeMap::new(),
        };
        for p in placed {
            *usage
                .shops_per_group
                .entry(p.instance_group.clone())
                .or_default() += 1;
            usage
                .ports_per_nlb
                .entry(p.nlb_arn.clone())
                .or_default()
                .insert(p.port);
            usage
                .ports_per_group
                .entry(p.instance_group.clone())
                .or_default()
                .insert(p.port);
        }
        usage
    }

    fn shops_in(&self, group: &str) -> u32 {
        self.shops_per_group.get(group).copied().unwrap_or(0)
    }

    fn listeners_on(&self, nlb: &str) -> usize {
        self.ports_per_nlb.get(nlb).map_or(0, BTreeSet::len)
    }

    fn port_taken(&self, nlb: &str, group: &str, port: u16) -> bool {
        let on = |map: &BTreeMap<String, BTreeSet<u16>>, key: &str| {
            map.get(key).is_some_and(|ports| ports.contains(&port))
        };
        on(&self.ports_per_nlb, nlb) || on(&self.ports_per_group, group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RegionName;

    fn group(name: &str, nlbs: &[&str], ports: (u16, u16), capacity: u32) -> InstanceGroup {
        InstanceGroup {
            name: name.to_owned(),
            region: RegionName::parse("eu-west-1").expect("valid"),
            nlb_arns: nlbs.iter().map(|n| (*n).to_owned()).collect(),
            port_min: ports.0,
            port_max: ports.1,
            capacity,
            codedeploy_deployment_group: name.to_owned(),
            enabled: true,
            updated_at: 0,
        }
    }

    fn placed(group: &str, nlb: &str, port: u16) -> Placed {
        Placed {
            instance_group: group.to_owned(),
            nlb_arn: nlb.to_owned(),
            port,
        }
    }

    fn running(group: &InstanceGroup, n: usize) -> Candidate<'_> {
        Candidate {
            group,
            running_instances: n,
        }
    }

    #[test]
    fn the_group_with_most_room_gets_the_lowest_free_port() {
        let a = group("a", &["nlb-1"], (20000, 20099), 10);
        let b = group("b", &["nlb-2"], (20000, 20099), 10);
        let taken = [placed("a", "nlb-1", 20000)];
        let choice = choose(&[running(&a, 2), running(&b, 3)], &taken);
        assert_eq!(choice, Ok(placed("b", "nlb-2", 20000)));
    }

    #[test]
    fn a_port_is_unique_per_nlb_shared_by_groups_and_per_group() {
        let a = group("a", &["shared"], (20000, 20002), 10);
        let b = group("b", &["shared"], (20000, 20002), 10);
        let taken = [placed("a", "shared", 20000), placed("a", "shared", 20001)];
        let choice = choose(&[running(&a, 2), running(&b, 2)], &taken);
        assert_eq!(choice, Ok(placed("b", "shared", 20002)));
    }

    #[test]
    fn the_emptiest_nlb_of_the_group_is_used() {
        let a = group("a", &["nlb-1", "nlb-2"], (20000, 20099), 10);
        let taken = [placed("a", "nlb-1", 20000)];
        assert_eq!(
            choose(&[running(&a, 2)], &taken),
            Ok(placed("a", "nlb-2", 20001))
        );
    }

    #[test]
    fn an_nlb_with_fifty_listeners_takes_no_more() {
        let a = group("a", &["nlb-1"], (20000, 20999), 100);
        let taken: Vec<Placed> = (0..50).map(|i| placed("a", "nlb-1", 20000 + i)).collect();
        assert_eq!(
            choose(&[running(&a, 2)], &taken),
            Err(NoRoom::ListenerQuota)
        );
        let b = group("b", &["nlb-1", "nlb-2"], (21000, 21999), 100);
        let choice = choose(&[running(&a, 2), running(&b, 2)], &taken);
        assert_eq!(choice, Ok(placed("b", "nlb-2", 21000)));
    }

    #[test]
    fn groups_without_two_running_instances_take_no_shops() {
        let a = group("a", &["nlb-1"], (20000, 20099), 10);
        let error = choose(&[running(&a, 1)], &[]).expect_err("degraded");
        assert_eq!(error, NoRoom::TooFewInstances("a: 1 running".to_owned()));
        assert_eq!(error.reason(), "InstanceGroupDegraded");
    }

    #[test]
    fn every_limit_is_named() {
        let full = group("a", &["nlb-1"], (20000, 20099), 1);
        let taken = [placed("a", "nlb-1", 20000)];
        assert_eq!(
            choose(&[running(&full, 2)], &taken),
            Err(NoRoom::GroupsFull("a: 1/1".to_owned()))
        );
        let narrow = group("a", &["nlb-1", "nlb-2"], (20000, 20000), 5);
        let taken = [
            placed("other", "nlb-1", 20000),
            placed("other", "nlb-2", 20000),
        ];
        assert_eq!(
            choose(&[running(&narrow, 2)], &taken),
            Err(NoRoom::PortsExhausted)
        );
        let mut disabled = group("a", &["nlb-1"], (20000, 20099), 5);
        disabled.enabled = false;
        assert_eq!(choose(&[running(&disabled, 2)], &[]), Err(NoRoom::NoGroup));
        assert_eq!(choose(&[], &[]), Err(NoRoom::NoGroup));
    }
}
