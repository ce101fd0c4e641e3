//! EC2 in the simulated account: instances with tags and a state. Tests add, stop, start and
//! terminate them; run command and target health read whether an instance runs.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::cloud::{CloudError, Fleet, Instance, Tag};

use super::{ResourceType, SimulatedAws, State, paging};

/// The state of a simulated instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Runs: listed, reachable by commands, passes health checks.
    Running,
    /// Stopped: can start again.
    Stopped,
    /// Terminated: gone for good, though EC2 still knows the id.
    Terminated,
}

pub(crate) struct SimInstance {
    instance: Instance,
    state: InstanceState,
    tags: Vec<Tag>,
    /// When the instance last started, for target health.
    running_since: Duration,
}

#[derive(Default)]
pub(crate) struct FleetState {
    instances: BTreeMap<String, SimInstance>,
}

impl FleetState {
    /// When the instance started, if it is running now.
    pub(crate) fn running_since(&self, id: &str) -> Option<Duration> {
        self.instances
            .get(id)
            .filter(|i| i.state == InstanceState::Running)
            .map(|i| i.running_since)
    }

    pub(crate) fn is_running(&self, id: &str) -> bool {
        self.running_since(id).is_some()
    }

    /// Ids of running instances carrying the tag, sorted.
    pub(crate) fn running_with_tag(&self, tag: &Tag) -> Vec<String> {
        self.instances
            .iter()
            .filter(|(_, i)| i.state == InstanceState::Running && i.tags.contains(tag))
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub(crate) fn tagged(&self) -> impl Iterator<Item = (ResourceType, &str, &[Tag])> {
        self.instances
            .iter()
            .map(|(id, i)| (ResourceType::Instance, id.as_str(), i.tags.as_slice()))
    }
}

/// Test controls for EC2.
impl SimulatedAws {
    /// Launches a running instance with a `Name` tag and returns its id.
    pub fn add_instance(&self, name: &str) -> String {
        self.add_instance_with_tags(&[Tag::new("Name", name)])
    }

    /// Launches a running instance with the given tags and returns its id.
    pub fn add_instance_with_tags(&self, tags: &[Tag]) -> String {
        let mut state = self.state();
        let state = &mut *state;
        let id = state.rng.instance_id();
        let count = state.fleet.instances.len();
        let zone = ["a", "b", "c"][count % 3];
        let instance = Instance {
            id: id.clone(),
            private_ip: Some(format!("10.0.{}.{}", count / 250, count % 250 + 4)),
            availability_zone: Some(format!("{}{zone}", state.config.region)),
        };
        let running_since = state.now();
        let sim = SimInstance {
            instance,
            state: InstanceState::Running,
            tags: tags.to_vec(),
            running_since,
        };
        state.fleet.instances.insert(id.clone(), sim);
        id
    }

    /// Stops a running instance; false if there is no such instance or it is terminated.
    pub fn stop_instance(&self, id: &str) -> bool {
        self.set_instance_state(id, InstanceState::Stopped)
    }

    /// Starts a stopped instance; false if there is no such instance or it is terminated.
    pub fn start_instance(&self, id: &str) -> bool {
        self.set_instance_state(id, InstanceState::Running)
    }

    /// Terminates an instance for good; false if there is no such instance.
    pub fn terminate_instance(&self, id: &str) -> bool {
        self.set_instance_state(id, InstanceState::Terminated)
    }

    /// The state of an instance, if it exists.
    pub fn instance_state(&self, id: &str) -> Option<InstanceState> {
        self.state().fleet.instances.get(id).map(|i| i.state)
    }

    fn set_instance_state(&self, id: &str, new_state: InstanceState) -> bool {
        let mut state = self.state();
        let now = state.now();
        let Some(instance) = state.fleet.instances.get_mut(id) else {
            return false;
        };
        if instance.state == InstanceState::Terminated {
            return false;
        }
        if new_state == InstanceState::Running && instance.state != InstanceState::Running {
            instance.running_since = now;
        }
        instance.state = new_state;
        true
    }
}

#[async_trait]
impl Fleet for SimulatedAws {
    /// DescribeInstances filtered by `tag:Name` and `instance-state-name=running`, paged by
    /// 1000 like EC2.
    async fn running_instances(&self, name: &str) -> Result<Vec<Instance>, CloudError> {
        const OPERATION: &str = "ec2:DescribeInstances";
        let tag = Tag::new("Name", name);
        self.all_pages(OPERATION, |state: &mut State, token| {
            let items = state
                .fleet
                .running_with_tag(&tag)
                .into_iter()
                .filter_map(|id| state.fleet.instances.get(&id))
                .map(|i| (i.instance.id.clone(), i.instance.clone()))
                .collect();
            paging::page(OPERATION, items, token, paging::DESCRIBE_INSTANCES)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimConfig;

    #[tokio::test]
    async fn only_running_instances_of_the_name_are_listed_sorted_by_id() {
        let aws = SimulatedAws::with_config(SimConfig::manual());
        let mut running: Vec<String> = (0..4).map(|_| aws.add_instance("shops-a")).collect();
        aws.add_instance("shops-b");
        let stopped = running.pop().expect("four");
        let terminated = running.pop().expect("three");
        assert!(aws.stop_instance(&stopped));
        assert!(aws.terminate_instance(&terminated));
        running.sort();

        let listed = aws.running_instances("shops-a").await.expect("listed");

        let ids: Vec<String> = listed.iter().map(|i| i.id.clone()).collect();
        assert_eq!(ids, running);
        assert!(listed.iter().all(|i| i.private_ip.is_some()));
        assert!(!aws.start_instance(&terminated), "terminated is final");
    }

    #[tokio::test]
    async fn instances_are_paged_by_a_thousand() {
        let aws = SimulatedAws::with_config(SimConfig::manual());
        for _ in 0..2001 {
            aws.add_instance("big");
        }

        let listed = aws.running_instances("big").await.expect("listed");

        assert_eq!(listed.len(), 2001);
        assert_eq!(aws.call_count("ec2:DescribeInstances"), 3);
    }
}
