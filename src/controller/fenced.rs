//! The fencing guard in the cloud call path. [`Controller::fence`] extends a claim to a lease
//! time from when it asked, but a reconcile's plan may send several mutations after one fence
//! (a target group is created, then its targets registered), and a replica paused between
//! them (SIGSTOP, a stalled node) would wake up and send the rest with a lapsed claim. So each
//! fence also leaves a deadline, half a lease time after it asked, in the running task
//! ([`scope`]); every mutating call through [`FencedCloud`] checks it just before it is sent
//! and fails as transient once it has passed, so the reconcile runs again and fences anew.
//! Reads are never held back, and calls outside a scope (the planner, the dev tools) pass.
//!
//! [`Controller::fence`]: super::Controller

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use reconcilers::cloud::{
    Build, BuildRequest, Builds, CallStats, CertificateMaterial, CertificateSummary, Certificates,
    CloudError, CloudProvider, CommandRequest, Deployment, DeploymentRequest, DeploymentStatus,
    Deployments, Fleet, HttpListenerSpec, Instance, Invocation, Listener, ListenerAction,
    ListenerRule, ListenerSpec, LoadBalancer, LoadBalancing, ObjectHead, ObjectStorage, Page,
    RuleSpec, RunCommand, Tag, Target, TargetGroup, TargetGroupSpec, TargetHealth,
};

use crate::cloud_calls::{cloud_calls, writes};

tokio::task_local! {
    /// Until when the last successful fence of this task lets it mutate; `None` before one.
    static FENCED_UNTIL: Cell<Option<Instant>>;
}

/// Runs `work` (one reconcile, one region pass, one patch run) with its own fence deadline.
pub(super) async fn scope<F: Future>(work: F) -> F::Output {
    FENCED_UNTIL.scope(Cell::new(None), work).await
}

/// Records a successful fence that asked the store at `asked` for a lease time of `ttl`.
pub(super) fn fenced(asked: Instant, ttl: std::time::Duration) {
    let _ = FENCED_UNTIL.try_with(|until| until.set(Some(asked + ttl / 2)));
}

/// The task's fence deadline; `None` outside a scope or before its first fence.
fn deadline() -> Option<Instant> {
    FENCED_UNTIL.try_with(Cell::get).ok().flatten()
}

/// The controller's view of the cloud: every capability wrapped in [`Fenced`].
pub(super) struct FencedCloud(pub(super) Arc<dyn CloudProvider>);

/// One capability whose mutations check the task's fence deadline first.
struct Fenced<T: ?Sized>(Arc<T>);

impl CloudProvider for FencedCloud {
    fn object_storage(&self, region: &str) -> Arc<dyn ObjectStorage> {
        Arc::new(Fenced(self.0.object_storage(region)))
    }

    fn builds(&self, region: &str) -> Arc<dyn Builds> {
        Arc::new(Fenced(self.0.builds(region)))
    }

    fn deployments(&self, region: &str) -> Arc<dyn Deployments> {
        Arc::new(Fenced(self.0.deployments(region)))
    }

    fn fleet(&self, region: &str) -> Arc<dyn Fleet> {
        Arc::new(Fenced(self.0.fleet(region)))
    }

    fn run_command(&self, region: &str) -> Arc<dyn RunCommand> {
        Arc::new(Fenced(self.0.run_command(region)))
    }

    fn load_balancing(&self, region: &str) -> Arc<dyn LoadBalancing> {
        Arc::new(Fenced(self.0.load_balancing(region)))
    }

    fn certificates(&self, region: &str) -> Arc<dyn Certificates> {
        Arc::new(Fenced(self.0.certificates(region)))
    }

    fn calls(&self) -> CallStats {
        self.0.calls()
    }
}

/// Forwards every call, checking the deadline before each write.
macro_rules! fenced_impls {
    ($(
        $capability:ident : $trait:ident {
            $( $access:ident $method:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty ; )*
        }
    )*) => {
        $(
            #[async_trait]
            impl $trait for Fenced<dyn $trait> {
                $(
                    async fn $method(&self, $($arg: $ty),*) -> Result<$ret, CloudError> {
                        if writes!($access) {
                            // Checked here, and again by the adapter before each attempt it
                            // transmits (`crate::fencing`).
                            let operation = concat!(stringify!($capability), ":", stringify!($method));
                            return crate::fencing::sending(deadline(), async {
                                crate::fencing::check_send(operation)?;
                                self.0.$method($($arg),*).await
                            })
                            .await;
                        }
                        self.0.$method($($arg),*).await
                    }
                )*
            }
        )*
    };
}

cloud_calls!(fenced_impls);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reconcilers::cloud::ErrorKind;
    use reconcilers::sim::{SimConfig, SimulatedAws};

    use super::*;

    fn cloud() -> FencedCloud {
        FencedCloud(Arc::new(Arc::new(SimulatedAws::with_config(
            SimConfig::manual(),
        ))))
    }

    async fn delete(cloud: &FencedCloud) -> Result<(), CloudError> {
        let lb = cloud.load_balancing("eu-west-1");
        lb.delete_target_group("arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/x/1")
            .await
    }

    #[tokio::test]
    async fn a_mutation_after_the_fence_deadline_is_not_sent() {
        let cloud = cloud();
        let long_ago = Instant::now() - Duration::from_secs(10);
        let result = scope(async {
            fenced(long_ago, Duration::from_secs(4));
            delete(&cloud).await
        })
        .await;
        let error = result.expect_err("refused");
        assert_eq!(error.kind, ErrorKind::Transient);
        assert!(error.message.contains("not sent"), "{error}");
        let sent = cloud
            .0
            .calls()
            .count("elasticloadbalancing:DeleteTargetGroup");
        assert_eq!(sent, 0);
    }

    #[tokio::test]
    async fn mutations_within_the_deadline_reads_and_unscoped_calls_pass() {
        let cloud = cloud();
        let long_ago = Instant::now() - Duration::from_secs(10);
        scope(async {
            fenced(Instant::now(), Duration::from_secs(4));
            let _ = delete(&cloud).await;
        })
        .await;
        let read = scope(async {
            fenced(long_ago, Duration::from_secs(4));
            cloud.load_balancing("eu-west-1").list_target_groups().await
        })
        .await;
        let _ = delete(&cloud).await;
        assert!(read.is_ok(), "{read:?}");
        let sent = cloud
            .0
            .calls()
            .count("elasticloadbalancing:DeleteTargetGroup");
        assert_eq!(sent, 2, "the fresh and the unscoped delete were sent");
    }
}
