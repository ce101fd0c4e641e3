//! The region-level loop of the proxy ALB's port-80 ACME challenge listener (#5). Unlike the
//! per-shop loops it has no queue: at start and then every resync it walks the enabled region
//! configs that name a responder target group and runs `reconcilers::challenge_listener`'s
//! observe / diff / apply for each, so a listener or rule someone deleted or changed is healed
//! within one resync.
//!
//! Replicas share the regions through the shops' lease table, keyed `region:<name>:acme` (the
//! key never parses as a shop domain, so no shop can collide with it), and the claim is fenced
//! before the plan is applied, like every shop mutation. What the last pass found per region
//! is kept for the metrics endpoint ([`Controller::challenge_listener_states`]) and logged.

use std::collections::BTreeMap;
use std::sync::Arc;

use reconcilers::challenge_listener::{self, Report};
use reconcilers::config::RegionConfig;
use tokio::sync::broadcast;
use tracing::Instrument;

use super::{Blocked, Claimed, Controller};

/// What the last pass found in one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeListenerState {
    /// The listener and our rule are as desired (after this pass's changes, if any).
    Converged,
    /// As far as the controller may go, with something an operator should look at: a port-80
    /// listener that is not ours with another default action, a rule that may take challenge
    /// requests before ours, a port 80 that is not HTTP, or no single proxy ALB.
    Warning,
    /// The pass failed (cloud or store error, or the lease was lost); the next tick retries.
    Failed,
    /// Another replica holds the region's lease and reconciles it.
    HeldElsewhere,
}

impl ChallengeListenerState {
    /// Every state, for metrics that show zeros too.
    pub const ALL: [Self; 4] = [
        Self::Converged,
        Self::Warning,
        Self::Failed,
        Self::HeldElsewhere,
    ];

    /// A bounded label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Converged => "converged",
            Self::Warning => "warning",
            Self::Failed => "failed",
            Self::HeldElsewhere => "held_elsewhere",
        }
    }
}

/// The lease key of a region's challenge listener.
pub fn lease_key(region: &str) -> String {
    format!("region:{region}:acme")
}

impl Controller {
    /// What the last pass found, by region (regions without a responder are not listed).
    pub fn challenge_listener_states(&self) -> BTreeMap<String, ChallengeListenerState> {
        self.challenge_listeners
            .lock()
            .map(|states| states.clone())
            .unwrap_or_default()
    }

    /// Reconciles every region's challenge listener at start and then every resync, until
    /// `stop` fires. A pass in flight finishes first: it is a handful of calls.
    pub(super) async fn run_challenge_listeners(
        self: Arc<Self>,
        mut stop: broadcast::Receiver<()>,
    ) {
        let period = self.config.loops.resync;
        loop {
            self.challenge_listener_pass().await;
            tokio::select! {
                _ = stop.recv() => return,
                () = tokio::time::sleep(period) => {}
            }
        }
    }

    /// One pass over the regions.
    pub(super) async fn challenge_listener_pass(&self) {
        let configs = match self.store.list_region_configs().await {
            Ok(configs) => configs,
            Err(error) => {
                tracing::warn!(%error, "could not list region configs; challenge listeners wait for the next pass");
                return;
            }
        };
        // A paused region is left alone, its port-80 objects included, like its shops.
        let paused = match self.store.paused_regions().await {
            Ok(paused) => paused,
            Err(error) => {
                tracing::warn!(%error, "could not read paused regions; challenge listeners wait for the next pass");
                return;
            }
        };
        let (wanted, unwanted): (Vec<&RegionConfig>, Vec<&RegionConfig>) = configs
            .iter()
            .filter(|c| !paused.iter().any(|p| p == c.region.as_str()))
            .partition(|c| c.enabled && c.acme_responder_target_group_arn.is_some());
        for config in unwanted {
            let span = tracing::info_span!("challenge_listener", region = config.region.as_str());
            let removed = super::fenced::scope(self.remove_challenge_listener(config));
            removed.instrument(span).await;
        }
        let mut states = BTreeMap::new();
        for config in wanted {
            let region = config.region.as_str();
            let span = tracing::info_span!("challenge_listener", region);
            let reconciled = super::fenced::scope(self.challenge_listener(config));
            let state = reconciled.instrument(span).await;
            states.insert(region.to_owned(), state);
        }
        if let Ok(mut held) = self.challenge_listeners.lock() {
            *held = states;
        }
    }

    /// Reconciles one region and logs what came of it.
    async fn challenge_listener(&self, config: &RegionConfig) -> ChallengeListenerState {
        let report = match self.reconcile_challenge_listener(config).await {
            Ok(Some(report)) => report,
            Ok(None) => return ChallengeListenerState::HeldElsewhere,
            Err(blocked) => {
                tracing::warn!(
                    reason = blocked.reason,
                    message = %blocked.message,
                    "challenge listener not converged; retrying at the next pass"
                );
                return ChallengeListenerState::Failed;
            }
        };
        if let Some(why) = &report.skipped {
            tracing::warn!(why = %why, "challenge listener skipped");
            return ChallengeListenerState::Warning;
        }
        for warning in &report.warnings {
            tracing::warn!(warning = %warning, "challenge listener needs an operator's look");
        }
        let (listener_arn, rule_arn) = (
            report.listener_arn.as_deref().unwrap_or_default(),
            report.rule_arn.as_deref().unwrap_or_default(),
        );
        if report.applied.is_empty() {
            tracing::debug!(listener_arn, rule_arn, "challenge listener converged");
        } else {
            tracing::info!(listener_arn, rule_arn, applied = ?report.applied, "challenge listener changed");
        }
        if report.warnings.is_empty() {
            ChallengeListenerState::Converged
        } else {
            ChallengeListenerState::Warning
        }
    }

    /// Takes our port-80 listener and rule off the proxy ALB of a region that no longer wants
    /// them (disabled, or its responder target group unset). Failures wait for the next pass.
    async fn remove_challenge_listener(&self, config: &RegionConfig) {
        let Some(alb_arn) = config.proxy_alb_arn() else {
            return;
        };
        let region = config.region.as_str();
        let lease = match self.claim(&lease_key(region)).await {
            Ok(Claimed::Mine(lease)) => lease,
            Ok(Claimed::HeldFor(_)) => return,
            Err(error) => {
                tracing::warn!(%error, "could not claim the region");
                return;
            }
        };
        let lb = self.cloud.load_balancing(region);
        let owner = challenge_listener::owner(&self.config.installation, region);
        // Removal only ever deletes objects carrying our tags; the fence keeps a replica that
        // lost the region from racing the one that holds it.
        if self.fence(&lease).await.is_err() {
            return;
        }
        match challenge_listener::remove(lb.as_ref(), &alb_arn, &owner).await {
            Ok(deleted) if deleted.is_empty() => {}
            Ok(deleted) => {
                tracing::info!(
                    ?deleted,
                    "removed the challenge listener of a region that no longer wants it"
                );
                self.observations.changed(region, None).await;
            }
            Err(error) => {
                tracing::warn!(%error, "could not remove the challenge listener; retrying at the next pass")
            }
        }
    }

    /// Claims the region, observes, plans, fences and applies. `None` when another replica
    /// holds the region.
    async fn reconcile_challenge_listener(
        &self,
        config: &RegionConfig,
    ) -> Result<Option<Report>, Blocked> {
        let region = config.region.as_str();
        let desired =
            match challenge_listener::desired_for_region(config, &self.config.installation) {
                Ok(desired) => desired,
                Err(why) => {
                    return Ok(Some(Report {
                        skipped: Some(why),
                        ..Report::default()
                    }));
                }
            };
        let lease = match self.claim(&lease_key(region)).await? {
            Claimed::Mine(lease) => lease,
            Claimed::HeldFor(_) => return Ok(None),
        };

        let lb = self.cloud.load_balancing(region);
        let observed = challenge_listener::observe(lb.as_ref(), &desired.load_balancer_arn).await?;
        let plan = challenge_listener::diff(&desired, observed.as_ref());
        if !plan.changes.is_empty() {
            self.fence(&lease).await?;
            tracing::info!(plan = ?plan.changes, "applying challenge listener plan");
        }
        let applied =
            challenge_listener::apply(lb.as_ref(), &desired, observed.as_ref(), &plan).await;
        if !plan.changes.is_empty() {
            // The responder group's load balancers changed; shared listings must be re-read.
            self.observations.changed(region, None).await;
        }
        let (listener_arn, rule_arn) = applied?;
        Ok(Some(Report {
            skipped: None,
            listener_arn,
            rule_arn,
            applied: plan.changes,
            warnings: plan.warnings,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_never_read_as_shop_domains() {
        let key = lease_key("eu-west-1");
        assert_eq!(key, "region:eu-west-1:acme");
        assert!(reconcilers::hostname::Hostname::parse(&key).is_err());
    }
}
