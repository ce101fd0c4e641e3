//! What the controller observed and did, per shop and per resource kind. Only reconcilers
//! write status; the write path only reads it.

use std::fmt;
use std::str::FromStr;

/// The kinds of resource a shop is made of, in dependency order: a kind may depend only on
/// kinds before it. Creation follows this order; teardown runs in reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    Artifact,
    Deployment,
    TargetGroup,
    Listener,
    NginxConfig,
    Certificate,
    Restart,
}

impl ResourceKind {
    /// Every kind, in dependency order.
    pub const ALL: [ResourceKind; 7] = [
        ResourceKind::Artifact,
        ResourceKind::Deployment,
        ResourceKind::TargetGroup,
        ResourceKind::Listener,
        ResourceKind::NginxConfig,
        ResourceKind::Certificate,
        ResourceKind::Restart,
    ];

    /// The stable name used in the store, metrics and tags.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Artifact => "artifact",
            ResourceKind::Deployment => "deployment",
            ResourceKind::TargetGroup => "target_group",
            ResourceKind::Listener => "listener",
            ResourceKind::NginxConfig => "nginx_config",
            ResourceKind::Certificate => "certificate",
            ResourceKind::Restart => "restart",
        }
    }
}

/// Whether the observed state matches the desired state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncState {
    Synced,
    OutOfSync,
    #[default]
    Unknown,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Synced => "synced",
            SyncState::OutOfSync => "out_of_sync",
            SyncState::Unknown => "unknown",
        }
    }
}

/// Whether the resource does its job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Health {
    Healthy,
    #[default]
    Progressing,
    Degraded,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Progressing => "progressing",
            Health::Degraded => "degraded",
        }
    }
}

/// An unknown name read back from the store or the API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
}

macro_rules! parse_by_name {
    ($ty:ty, $what:literal, $all:expr) => {
        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $all.into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownName {
                        what: $what,
                        value: s.to_owned(),
                    })
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

parse_by_name!(ResourceKind, "resource kind", ResourceKind::ALL);
parse_by_name!(
    SyncState,
    "sync state",
    [SyncState::Synced, SyncState::OutOfSync, SyncState::Unknown]
);
parse_by_name!(
    Health,
    "health",
    [Health::Healthy, Health::Progressing, Health::Degraded]
);

/// The observed state of one resource of one shop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceStatus {
    pub kind: ResourceKind,
    /// What the spec asks of this resource, in words.
    pub desired: String,
    /// What the controller last saw.
    pub observed: String,
    pub sync: SyncState,
    pub health: Health,
    /// A CamelCase word for machines, such as `QuotaExceeded`.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
    /// The spec generation this status was computed for.
    pub observed_generation: i64,
    /// Milliseconds since the Unix epoch when sync or health last changed.
    pub last_transition: i64,
    /// Failed attempts since the last success.
    pub attempts: u32,
    /// Milliseconds since the Unix epoch of the next planned attempt.
    pub next_attempt_at: Option<i64>,
}

/// Shop-level conditions, derived from the resources' status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    Ready,
    Progressing,
    Degraded,
}

/// One shop-level condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub kind: ConditionType,
    /// `None` when unknown.
    pub status: Option<bool>,
    pub reason: String,
    pub message: String,
    pub observed_generation: i64,
    pub last_transition: i64,
}

/// The first resource, in dependency order, that keeps a shop from converging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    pub kind: ResourceKind,
    pub reason: String,
    pub message: String,
    pub next_attempt_at: Option<i64>,
}

/// Derives the shop's conditions and blocker from its resources' status.
///
/// A shop is ready when every resource it needs is synced and healthy for the current
/// generation. Kinds with no status yet count as progressing: nobody has looked at them.
pub fn summarize(
    generation: i64,
    needed: &[ResourceKind],
    resources: &[ResourceStatus],
    now: i64,
) -> (Vec<Condition>, Option<Blocker>) {
    let mut blocker = None;
    let mut degraded = None;
    for kind in needed {
        let status = resources.iter().find(|r| r.kind == *kind);
        let converged = status.is_some_and(|s| {
            s.sync == SyncState::Synced
                && s.health == Health::Healthy
                && s.observed_generation >= generation
        });
        if converged {
            continue;
        }
        if blocker.is_none() {
            blocker = Some(match status {
                Some(s) => Blocker {
                    kind: *kind,
                    reason: s.reason.clone(),
                    message: s.message.clone(),
                    next_attempt_at: s.next_attempt_at,
                },
                None => Blocker {
                    kind: *kind,
                    reason: "NotObserved".to_owned(),
                    message: format!("{kind} has not been reconciled yet"),
                    next_attempt_at: None,
                },
            });
        }
        if degraded.is_none() && status.is_some_and(|s| s.health == Health::Degraded) {
            degraded = status;
        }
    }

    let condition = |kind, status: bool, reason: &str, message: &str| Condition {
        kind,
        status: Some(status),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition: now,
    };
    let conditions = match (&blocker, degraded) {
        (None, _) => vec![
            condition(
                ConditionType::Ready,
                true,
                "Converged",
                "every resource is synced",
            ),
            condition(ConditionType::Progressing, false, "Converged", ""),
            condition(ConditionType::Degraded, false, "Converged", ""),
        ],
        (Some(b), None) => vec![
            condition(ConditionType::Ready, false, &b.reason, &b.message),
            condition(ConditionType::Progressing, true, &b.reason, &b.message),
            condition(ConditionType::Degraded, false, "", ""),
        ],
        (Some(b), Some(d)) => vec![
            condition(ConditionType::Ready, false, &b.reason, &b.message),
            condition(ConditionType::Progressing, false, &b.reason, &b.message),
            condition(ConditionType::Degraded, true, &d.reason, &d.message),
        ],
    };
    (conditions, blocker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(
        kind: ResourceKind,
        sync: SyncState,
        health: Health,
        generation: i64,
    ) -> ResourceStatus {
        ResourceStatus {
            kind,
            desired: String::new(),
            observed: String::new(),
            sync,
            health,
            reason: format!("{kind}Reason"),
            message: format!("{kind} message"),
            observed_generation: generation,
            last_transition: 0,
            attempts: 0,
            next_attempt_at: None,
        }
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for kind in ResourceKind::ALL {
            assert_eq!(kind.as_str().parse::<ResourceKind>(), Ok(kind));
        }
        assert!("nope".parse::<ResourceKind>().is_err());
    }

    #[test]
    fn shop_with_no_status_is_blocked_by_its_first_kind() {
        let (conditions, blocker) = summarize(1, &ResourceKind::ALL[..2], &[], 5);
        let blocker = blocker.expect("blocked");
        assert_eq!(blocker.kind, ResourceKind::Artifact);
        assert_eq!(blocker.reason, "NotObserved");
        assert_eq!(conditions[0].status, Some(false));
        assert_eq!(conditions[1].status, Some(true));
    }

    #[test]
    fn stale_status_does_not_count_as_converged() {
        let needed = [ResourceKind::Artifact];
        let resources = [status(
            ResourceKind::Artifact,
            SyncState::Synced,
            Health::Healthy,
            1,
        )];
        assert!(summarize(1, &needed, &resources, 0).1.is_none());
        assert!(summarize(2, &needed, &resources, 0).1.is_some());
    }

    #[test]
    fn degraded_resource_marks_the_shop_degraded() {
        let needed = [ResourceKind::Artifact, ResourceKind::Deployment];
        let resources = [
            status(
                ResourceKind::Artifact,
                SyncState::Synced,
                Health::Healthy,
                3,
            ),
            status(
                ResourceKind::Deployment,
                SyncState::OutOfSync,
                Health::Degraded,
                3,
            ),
        ];
        let (conditions, blocker) = summarize(3, &needed, &resources, 0);
        assert_eq!(blocker.map(|b| b.kind), Some(ResourceKind::Deployment));
        let degraded = conditions
            .iter()
            .find(|c| c.kind == ConditionType::Degraded);
        assert_eq!(degraded.and_then(|c| c.status), Some(true));
    }
}
