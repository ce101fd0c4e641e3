//! The reconcile runtime: the work queue and the loop that drives one reconciler. A key is
//! one resource kind of one shop; the [`WorkQueue`] decides which key runs next (spec changes
//! before due retries before due resyncs, never one key twice at once), and [`run`] takes
//! keys from it under a concurrency limit and a deadline, then schedules each key's next run
//! from the reconcile's [`Outcome`]: resync after success, backoff after failure, a longer
//! wait after throttling. Reconcilers never choose their own timing.
//!
//! This module knows nothing of the store, AWS or what a reconcile does: wiring spec writes to
//! [`WorkQueue::spec_changed`], seeding keys at start and leasing keys across replicas belong
//! to the callers.

use std::fmt;

use reconcilers::status::ResourceKind;
use tracing::Span;

mod backoff;
mod queue;
mod schedule;
mod stats;
mod worker;

pub use backoff::{Backoff, Jitter};
pub use queue::{Lane, Next, Popped, QueueStats, WorkQueue};
pub use schedule::Outcome;
pub use stats::{DURATION_BUCKETS, Runs};
pub use worker::{LoopConfig, Stopped, run};

/// How a key shows in its `reconcile` span, which opens with empty `shop` and `resource`
/// fields (and `generation`, which the handler records once it has read the shop).
pub trait SpanKey {
    fn record_in(&self, span: &Span);
}

/// A unit of work: one resource kind of one shop.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShopKey {
    /// The shop's ES domain.
    pub shop: String,
    /// The resource of the shop this key reconciles.
    pub kind: ResourceKind,
}

impl fmt::Display for ShopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.shop, self.kind.as_str())
    }
}

impl SpanKey for ShopKey {
    fn record_in(&self, span: &Span) {
        span.record("shop", self.shop.as_str());
        span.record("resource", self.kind.as_str());
    }
}

/// Numbered keys, as the tests and benchmarks use, show their number as the shop.
impl SpanKey for u32 {
    fn record_in(&self, span: &Span) {
        span.record("shop", self);
    }
}
