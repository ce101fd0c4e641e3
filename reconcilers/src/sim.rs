//! The simulated AWS: an in-memory implementation of every cloud trait that keeps real state
//! (objects, builds, deployments, instances, commands, load balancers, certificates, tags) in
//! one account, and answers like AWS does: ARNs and ids shaped like AWS's, uniqueness rules,
//! quotas, paging, lifecycles that take time, throttling and faults on demand. It is the engine
//! of `shop-controller dev` and the double for reconciler tests.
//!
//! This file owns the account, the call path every operation goes through (admission, latency,
//! the side effect, lost responses, call counting) and the snapshot API; each capability lives
//! in a submodule with its own state, trait implementation and test controls.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::cloud::{
    Builds, CallStats, Certificates, CloudError, CloudProvider, Deployments, ErrorKind, Fleet,
    LoadBalancing, ObjectStorage, Page, RunCommand, Tag,
};

mod acme;
mod builds;
mod certificates;
mod clock;
mod config;
mod deployments;
mod domains;
mod faults;
mod fleet;
mod ids;
mod load_balancing;
mod paging;
mod run_command;
mod storage;

pub use acme::{SimAcme, SimAcmeConfig};
pub use certificates::CertificateFacts;
pub use clock::ClockMode;
pub use config::{Quotas, SimConfig, Timings};
pub use domains::{ChallengeSource, SimDomains};
pub use faults::FaultProfile;
pub use fleet::InstanceState;
pub use load_balancing::LoadBalancerKind;
pub use run_command::SentCommand;

/// A kind of taggable resource the simulated account holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// An ELB load balancer, by ARN.
    LoadBalancer,
    /// An ELB target group, by ARN.
    TargetGroup,
    /// An ELB listener, by ARN.
    Listener,
    /// A rule of an ELB listener (not the default one), by ARN.
    ListenerRule,
    /// An ACM certificate, by ARN.
    Certificate,
    /// An EC2 instance, by id.
    Instance,
}

/// One resource found by [`SimulatedAws::resources_tagged`]: its kind and its ARN (or, for an
/// EC2 instance, its id).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaggedResource {
    /// What the resource is.
    pub kind: ResourceType,
    /// Its ARN, or an instance's id.
    pub id: String,
}

/// Everything the account holds, behind one lock. Each capability's part is owned by its
/// submodule; lifecycles that take time move forward in [`State::settle`].
pub(crate) struct State {
    pub(crate) config: SimConfig,
    pub(crate) clock: clock::Clock,
    pub(crate) rng: ids::Rng,
    pub(crate) faults: faults::Faults,
    pub(crate) storage: storage::Storage,
    pub(crate) builds: builds::BuildsState,
    pub(crate) deployments: deployments::DeploymentsState,
    pub(crate) fleet: fleet::FleetState,
    pub(crate) commands: run_command::CommandsState,
    pub(crate) elb: load_balancing::ElbState,
    pub(crate) acm: certificates::AcmState,
}

impl State {
    fn new(config: SimConfig) -> Self {
        Self {
            clock: clock::Clock::new(config.clock, config.start_epoch_millis),
            rng: ids::Rng::new(config.seed),
            faults: faults::Faults::new(&config),
            storage: storage::Storage::default(),
            builds: builds::BuildsState::default(),
            deployments: deployments::DeploymentsState::default(),
            fleet: fleet::FleetState::default(),
            commands: run_command::CommandsState::default(),
            elb: load_balancing::ElbState::default(),
            acm: certificates::AcmState::default(),
            config,
        }
    }

    /// Moves every lifecycle forward to the current simulated time. Builds go first because
    /// their artifacts are what deployments download.
    fn settle(&mut self) {
        builds::settle(self);
        deployments::settle(self);
        run_command::settle(self);
    }

    /// Simulated time since the account was created.
    pub(crate) fn now(&self) -> Duration {
        self.clock.elapsed()
    }
}

/// The simulated AWS account. Share it as `Arc<SimulatedAws>`; it coerces to any
/// `Arc<dyn Trait>` of [`crate::cloud`].
pub struct SimulatedAws {
    state: Mutex<State>,
    stats: CallStats,
}

impl Default for SimulatedAws {
    fn default() -> Self {
        Self::new()
    }
}

impl SimulatedAws {
    /// An account with [`SimConfig::default`]: real time, no throttles, no faults.
    pub fn new() -> Self {
        Self::with_config(SimConfig::default())
    }

    /// An account with the given configuration.
    pub fn with_config(config: SimConfig) -> Self {
        Self {
            state: Mutex::new(State::new(config)),
            stats: CallStats::default(),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data behind: every operation checks
        // before it mutates.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The calls made so far, by operation and outcome (every page counts as one call).
    pub fn calls(&self) -> CallStats {
        self.stats.clone()
    }

    /// Calls of one `service:Operation` so far, whatever the outcome.
    pub fn call_count(&self, operation: &str) -> u64 {
        self.stats.count(operation)
    }

    /// Moves simulated time forward (in both clock modes) and settles every lifecycle.
    pub fn advance(&self, by: Duration) {
        let mut state = self.state();
        state.clock.advance(by);
        state.settle();
    }

    /// Milliseconds since the Unix epoch on the simulated clock.
    pub fn now_millis(&self) -> i64 {
        self.state().clock.epoch_millis()
    }

    /// Every resource carrying tag `key` = `value`, sorted by kind and id.
    pub fn resources_tagged(&self, key: &str, value: &str) -> Vec<TaggedResource> {
        let state = self.state();
        let wanted = Tag::new(key, value);
        let mut found: Vec<TaggedResource> = state
            .elb
            .tagged()
            .chain(state.acm.tagged())
            .chain(state.fleet.tagged())
            .filter(|(_, _, tags)| tags.contains(&wanted))
            .map(|(kind, id, _)| TaggedResource {
                kind,
                id: id.to_owned(),
            })
            .collect();
        found.sort();
        found
    }

    /// Runs one API call: admission (scripted failures, rate limits, injected throttling and
    /// 5xx), latency, the operation itself, then a possibly lost response; records the outcome.
    pub(crate) async fn call<T, F>(
        &self,
        operation: &'static str,
        apply: F,
    ) -> Result<T, CloudError>
    where
        F: FnOnce(&mut State) -> Result<T, CloudError> + Send,
    {
        let result = self.call_unrecorded(operation, apply).await;
        self.stats.observe(operation, &result);
        result
    }

    async fn call_unrecorded<T, F>(
        &self,
        operation: &'static str,
        apply: F,
    ) -> Result<T, CloudError>
    where
        F: FnOnce(&mut State) -> Result<T, CloudError> + Send,
    {
        let latency = {
            let mut state = self.state();
            state.settle();
            let state = &mut *state;
            let now = state.clock.instant();
            let admitted = state.faults.admit(operation, now, &mut state.rng)?;
            admitted.latency + state.clock.real(admitted.paced)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }

        let mut state = self.state();
        state.settle();
        let result = apply(&mut state)?;
        let state = &mut *state;
        if state.faults.loses_response(operation, &mut state.rng) {
            return Err(CloudError::new(
                ErrorKind::Transient,
                operation,
                "InternalFailure: the request was applied but the response was lost",
            ));
        }
        Ok(result)
    }

    /// Runs a paged listing to the end, one recorded call per page.
    pub(crate) async fn all_pages<T, F>(
        &self,
        operation: &'static str,
        mut page: F,
    ) -> Result<Vec<T>, CloudError>
    where
        T: Send,
        F: FnMut(&mut State, Option<&str>) -> Result<Page<T>, CloudError> + Send,
    {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let current = token.take();
            let next = self
                .call(operation, |state| page(state, current.as_deref()))
                .await?;
            items.extend(next.items);
            match next.next_token {
                Some(next_token) => token = Some(next_token),
                None => return Ok(items),
            }
        }
    }
}

/// One simulated account serves every region.
impl CloudProvider for Arc<SimulatedAws> {
    fn object_storage(&self, _region: &str) -> Arc<dyn ObjectStorage> {
        self.clone()
    }

    fn builds(&self, _region: &str) -> Arc<dyn Builds> {
        self.clone()
    }

    fn deployments(&self, _region: &str) -> Arc<dyn Deployments> {
        self.clone()
    }

    fn fleet(&self, _region: &str) -> Arc<dyn Fleet> {
        self.clone()
    }

    fn run_command(&self, _region: &str) -> Arc<dyn RunCommand> {
        self.clone()
    }

    fn load_balancing(&self, _region: &str) -> Arc<dyn LoadBalancing> {
        self.clone()
    }

    fn certificates(&self, _region: &str) -> Arc<dyn Certificates> {
        self.clone()
    }

    fn calls(&self) -> CallStats {
        SimulatedAws::calls(self)
    }
}

/// A `CloudError` with AWS's error code leading the message, as the SDK adapters report it.
pub(crate) fn error(
    kind: ErrorKind,
    operation: &'static str,
    code: &str,
    message: impl std::fmt::Display,
) -> CloudError {
    CloudError::new(kind, operation, format!("{code}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{LoadBalancing, TargetGroupSpec};

    fn spec(name: &str, tags: Vec<Tag>) -> TargetGroupSpec {
        TargetGroupSpec {
            name: name.to_owned(),
            port: 20000,
            vpc_id: SimConfig::default().vpc_id,
            health_check: Default::default(),
            tags,
        }
    }

    #[tokio::test]
    async fn resources_are_found_by_tag_across_services() {
        let aws = SimulatedAws::with_config(SimConfig::manual());
        let owned = Tag::new("shop-controller/shop", "a.example.com");
        let instance = aws.add_instance_with_tags(std::slice::from_ref(&owned));
        let group = aws
            .create_target_group(&spec("tg-a", vec![owned.clone()]))
            .await
            .expect("created");
        aws.create_target_group(&spec("tg-b", vec![Tag::new("other", "x")]))
            .await
            .expect("created");

        let found = aws.resources_tagged(&owned.key, &owned.value);

        assert_eq!(
            found,
            vec![
                TaggedResource {
                    kind: ResourceType::TargetGroup,
                    id: group.arn
                },
                TaggedResource {
                    kind: ResourceType::Instance,
                    id: instance
                },
            ]
        );
    }

    #[test]
    fn a_shared_account_serves_every_trait() {
        let aws = Arc::new(SimulatedAws::with_config(SimConfig::manual()));
        let _: Arc<dyn crate::cloud::Builds> = aws.clone();
        let _: Arc<dyn crate::cloud::Deployments> = aws.clone();
        let _: Arc<dyn crate::cloud::Fleet> = aws.clone();
        let _: Arc<dyn crate::cloud::RunCommand> = aws.clone();
        let _: Arc<dyn crate::cloud::Certificates> = aws.clone();
        let _: Arc<dyn LoadBalancing> = aws.clone();
        let _: Arc<dyn ObjectStorage> = aws.object_storage("eu-west-1");
    }

    #[tokio::test]
    async fn advancing_the_manual_clock_moves_epoch_time() {
        let aws = SimulatedAws::with_config(SimConfig::manual());
        let before = aws.now_millis();
        aws.advance(Duration::from_secs(90));
        assert_eq!(aws.now_millis() - before, 90_000);
    }
}
