//! The worker loop: takes keys from a [`WorkQueue`], runs the handler for each under a
//! concurrency limit and a deadline, and schedules the key's next run from the outcome. One
//! task (the dispatcher) owns the schedule and the in-flight table, so neither needs a lock;
//! handlers run as their own tasks, which is what lets a deadline cancel one and a panic in
//! one be caught. Reconcilers never choose requeue timing: that is `schedule.rs`.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tracing::{Instrument, Span, debug, error, field, info, info_span, warn};

use super::SpanKey;
use super::backoff::{Backoff, Jitter};
use super::queue::{Next, Popped, WorkQueue};
use super::schedule::{Decision, Outcome, Scheduler, Timing};

/// The error kind of a reconcile cancelled at its deadline.
const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
/// The error kind of a reconcile that panicked.
const PANICKED: &str = "panicked";

/// How one reconcile loop runs. [`Default`] gives the production values.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopConfig {
    /// Reconciles of this loop running at once (at least one).
    pub concurrency: usize,
    /// The longest one reconcile may take; it is then cancelled and retried as a failure.
    pub deadline: Duration,
    /// How long after a successful reconcile the key is looked at again.
    pub resync: Duration,
    /// How far a resync may stray from `resync`, as a fraction of it, so that keys reconciled
    /// together (after a restart) spread out instead of resyncing in lockstep forever.
    pub resync_jitter: f64,
    /// The schedule after failures.
    pub retry: Backoff,
    /// The schedule after throttling.
    pub throttle: Backoff,
    /// The schedule after a full quota or another wait.
    pub wait: Backoff,
    /// How long shutdown waits for in-flight reconciles before cancelling them.
    pub grace: Duration,
    /// Fixes the jitter sequence (tests); `None` seeds it differently on every start.
    pub jitter_seed: Option<u64>,
}

impl Default for LoopConfig {
    fn default() -> LoopConfig {
        LoopConfig {
            concurrency: 4,
            deadline: Duration::from_secs(2 * 60),
            resync: Duration::from_secs(5 * 60),
            resync_jitter: 0.1,
            retry: Backoff::RETRY,
            throttle: Backoff::THROTTLE,
            wait: Backoff::WAIT,
            grace: Duration::from_secs(30),
            jitter_seed: None,
        }
    }
}

/// How a loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// Reconciles that were running at shutdown and finished within the grace period.
    pub finished: usize,
    /// Reconciles still running when the grace period ended; they were cancelled.
    pub cancelled: usize,
}

/// Runs the loop until `shutdown` completes or the queue is closed, then stops taking keys,
/// lets in-flight reconciles finish within `config.grace`, cancels the rest and returns.
/// The queue is closed on return.
///
/// Each reconcile runs in a `reconcile` span with the fields `shop` and `resource` (recorded
/// by the key, see [`SpanKey`]), `trigger` (the lane) and an empty `generation` the handler
/// records.
pub async fn run<K, H, F>(
    queue: Arc<WorkQueue<K>>,
    config: LoopConfig,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> Stopped
where
    K: Clone + Eq + Hash + SpanKey,
    H: Fn(K) -> F,
    F: Future<Output = Outcome> + Send + 'static,
{
    let concurrency = config.concurrency.max(1);
    info!(concurrency, "reconcile loop started");
    let mut worker = Worker::new(queue, config, handler);
    worker.serve(shutdown).await;

    let stopped = worker.drain().await;
    info!(
        finished = stopped.finished,
        cancelled = stopped.cancelled,
        "reconcile loop stopped"
    );
    stopped
}

/// The dispatcher's state.
struct Worker<K, H> {
    queue: Arc<WorkQueue<K>>,
    handler: H,
    deadline: Duration,
    grace: Duration,
    permits: Arc<Semaphore>,
    scheduler: Scheduler<K>,
    tasks: JoinSet<Ended>,
    in_flight: HashMap<Id, InFlight<K>>,
}

struct InFlight<K> {
    key: K,
    span: Span,
    started: Instant,
}

/// How a handler task ended, as seen from inside it.
enum Ended {
    Returned(Outcome),
    DeadlineExceeded,
}

impl<K, H, F> Worker<K, H>
where
    K: Clone + Eq + Hash + SpanKey,
    H: Fn(K) -> F,
    F: Future<Output = Outcome> + Send + 'static,
{
    fn new(queue: Arc<WorkQueue<K>>, config: LoopConfig, handler: H) -> Worker<K, H> {
        let jitter = config
            .jitter_seed
            .map_or_else(Jitter::from_entropy, Jitter::new);
        let timing = Timing {
            resync: config.resync,
            resync_jitter: config.resync_jitter,
            retry: config.retry,
            throttle: config.throttle,
            wait: config.wait,
        };
        Worker {
            queue,
            handler,
            deadline: config.deadline,
            grace: config.grace,
            permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
            scheduler: Scheduler::new(timing, jitter),
            tasks: JoinSet::new(),
            in_flight: HashMap::new(),
        }
    }

    /// Starts and finishes reconciles until shutdown or a closed queue.
    async fn serve(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            // Biased: shutdown wins over new work, and a finished reconcile is rescheduled
            // before the next key is taken, so its requeue is never overtaken.
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finish(joined);
                }
                claimed = claim(&self.permits, &self.queue) => match claimed {
                    Some((permit, popped)) => self.start(permit, popped),
                    None => return,
                },
            }
        }
    }

    fn start(&mut self, permit: OwnedSemaphorePermit, popped: Popped<K>) {
        let Popped { key, lane } = popped;
        let span = info_span!(
            "reconcile",
            shop = field::Empty,
            resource = field::Empty,
            trigger = lane.as_str(),
            generation = field::Empty,
        );
        key.record_in(&span);
        let reconcile = span.in_scope(|| (self.handler)(key.clone()));
        let deadline = self.deadline;
        let task = async move {
            // Held until the handler ends, whatever way it ends.
            let _permit = permit;
            match tokio::time::timeout(deadline, reconcile).await {
                Ok(outcome) => Ended::Returned(outcome),
                Err(_elapsed) => Ended::DeadlineExceeded,
            }
        };

        let handle = self.tasks.spawn(task.instrument(span.clone()));
        let started = Instant::now();
        self.in_flight
            .insert(handle.id(), InFlight { key, span, started });
    }

    fn finish(&mut self, joined: Result<(Id, Ended), JoinError>) {
        // Tasks are only aborted after the grace period, when nothing joins them, so an
        // error here is a panic.
        let (id, ended) = match joined {
            Ok((id, ended)) => (id, Some(ended)),
            Err(error) => (error.id(), None),
        };
        let Some(flight) = self.in_flight.remove(&id) else {
            return;
        };

        let outcome = flight.span.in_scope(|| match ended {
            Some(Ended::Returned(outcome)) => outcome,
            Some(Ended::DeadlineExceeded) => Outcome::Retry(DEADLINE_EXCEEDED),
            None => {
                error!("reconcile panicked");
                Outcome::Retry(PANICKED)
            }
        });
        let decision = self.scheduler.decide(&flight.key, outcome, Instant::now());
        let elapsed = flight.started.elapsed();
        flight.span.in_scope(|| record(outcome, &decision, elapsed));
        self.queue.count(outcome, elapsed);
        self.queue.complete(&flight.key, decision.next);
    }

    /// Closes the queue, waits up to the grace period for in-flight reconciles, then cancels
    /// what is left. Cancelling is safe because `apply` is safe to cancel at any `.await`.
    async fn drain(mut self) -> Stopped {
        self.queue.close();
        let in_flight = self.tasks.len();
        let grace = self.grace;
        let finish_all = async {
            while let Some(joined) = self.tasks.join_next_with_id().await {
                self.finish(joined);
            }
        };
        let all_finished = tokio::time::timeout(grace, finish_all).await.is_ok();
        if all_finished {
            return Stopped {
                finished: in_flight,
                cancelled: 0,
            };
        }

        let cancelled = self.tasks.len();
        warn!(cancelled, grace = ?grace, "grace period over, cancelling reconciles");
        self.tasks.abort_all();
        // Hand the keys back, so the queue's running count stays true.
        let now = Instant::now();
        for flight in self.in_flight.into_values() {
            self.queue.complete(&flight.key, Next::Retry { due: now });
        }
        Stopped {
            finished: in_flight - cancelled,
            cancelled,
        }
    }
}

/// Waits for a free slot, then for a key: taking the permit first means a key is never
/// taken out of the queue (and so out of promotion) while no slot can run it.
async fn claim<K: Clone + Eq + Hash>(
    permits: &Arc<Semaphore>,
    queue: &WorkQueue<K>,
) -> Option<(OwnedSemaphorePermit, Popped<K>)> {
    // The semaphore is never closed, so an error cannot happen; stopping is the safe answer.
    let permit = Arc::clone(permits).acquire_owned().await.ok()?;
    let popped = queue.pop().await?;
    Some((permit, popped))
}

/// Logs the end of one reconcile, inside its span.
fn record(outcome: Outcome, decision: &Decision, elapsed: Duration) {
    let next_in = decision.delay;
    match outcome {
        Outcome::Done => debug!(?elapsed, resync_in = ?next_in, "reconciled"),
        Outcome::Requeue(_) => debug!(?elapsed, check_in = ?next_in, "reconcile in progress"),
        Outcome::Retry(reason) => warn!(
            reason,
            attempt = decision.attempts.failures,
            retry_in = ?next_in,
            "reconcile failed, will retry"
        ),
        // Waiting on another resource of the shop is the normal order of things, not a warning.
        Outcome::Wait(reason @ "dependency") => debug!(
            reason,
            attempt = decision.attempts.waits,
            retry_in = ?next_in,
            "reconcile waits on another resource"
        ),
        Outcome::Wait(reason) => warn!(
            reason,
            attempt = decision.attempts.waits,
            retry_in = ?next_in,
            "reconcile waits on a limit, will retry"
        ),
        Outcome::Gone => debug!(?elapsed, "reconciled, key forgotten"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// Exact timing (no jitter) with small numbers, so tests can name each start time.
    fn exact_config() -> LoopConfig {
        LoopConfig {
            concurrency: 2,
            deadline: 60 * SECOND,
            resync: 300 * SECOND,
            resync_jitter: 0.0,
            retry: Backoff {
                base: SECOND,
                cap: 60 * SECOND,
                jitter: 0.0,
            },
            throttle: Backoff {
                base: 2 * SECOND,
                cap: 60 * SECOND,
                jitter: 0.0,
            },
            wait: Backoff {
                base: 30 * SECOND,
                cap: 600 * SECOND,
                jitter: 0.0,
            },
            grace: 30 * SECOND,
            jitter_seed: Some(1),
        }
    }

    /// What handlers saw: each start (seconds since the probe was made, key), and how many
    /// ran at once, per key and in all.
    struct Probe {
        began: Instant,
        starts: Mutex<Vec<(u64, u32)>>,
        active: Mutex<Vec<u32>>,
        most_at_once: AtomicUsize,
        same_key_at_once: AtomicBool,
        finished: AtomicUsize,
    }

    impl Probe {
        fn new() -> Arc<Probe> {
            Arc::new(Probe {
                began: Instant::now(),
                starts: Mutex::default(),
                active: Mutex::default(),
                most_at_once: AtomicUsize::new(0),
                same_key_at_once: AtomicBool::new(false),
                finished: AtomicUsize::new(0),
            })
        }

        fn enter(&self, key: u32) {
            let seconds = self.began.elapsed().as_secs();
            self.starts.lock().expect("lock").push((seconds, key));
            let mut active = self.active.lock().expect("lock");
            if active.contains(&key) {
                self.same_key_at_once.store(true, Ordering::SeqCst);
            }
            active.push(key);
            self.most_at_once.fetch_max(active.len(), Ordering::SeqCst);
        }

        fn leave(&self, key: u32) {
            let mut active = self.active.lock().expect("lock");
            if let Some(at) = active.iter().position(|k| *k == key) {
                active.swap_remove(at);
            }
            self.finished.fetch_add(1, Ordering::SeqCst);
        }

        fn starts(&self) -> Vec<(u64, u32)> {
            self.starts.lock().expect("lock").clone()
        }

        fn start_times(&self) -> Vec<u64> {
            self.starts().into_iter().map(|(at, _)| at).collect()
        }

        fn finished(&self) -> usize {
            self.finished.load(Ordering::SeqCst)
        }
    }

    type Reconcile = std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>>;

    /// A handler that records itself in `probe`, takes `work`, then returns `outcome`.
    fn timed(probe: &Arc<Probe>, work: Duration, outcome: Outcome) -> impl Fn(u32) -> Reconcile {
        let probe = Arc::clone(probe);
        move |key| {
            let probe = Arc::clone(&probe);
            Box::pin(async move {
                probe.enter(key);
                tokio::time::sleep(work).await;
                probe.leave(key);
                outcome
            })
        }
    }

    fn stop_after(seconds: u64) -> tokio::time::Sleep {
        tokio::time::sleep(Duration::from_secs(seconds))
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_reconciles_never_exceed_the_limit() {
        let queue = Arc::new(WorkQueue::new());
        (0..50).for_each(|key| queue.spec_changed(key));
        let probe = Probe::new();
        let config = LoopConfig {
            concurrency: 3,
            ..exact_config()
        };

        run(
            queue,
            config,
            timed(&probe, SECOND, Outcome::Gone),
            stop_after(100),
        )
        .await;
        assert_eq!(probe.finished(), 50);
        assert_eq!(probe.most_at_once.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_requeued_while_running_runs_again_once_and_never_in_parallel() {
        let queue = Arc::new(WorkQueue::new());
        queue.spec_changed(7);
        let probe = Probe::new();
        let inner = timed(&probe, SECOND, Outcome::Gone);
        let requeue = Arc::clone(&queue);
        let first = AtomicBool::new(true);
        let handler = move |key| {
            // The key is running by now: ask for it three times.
            if first.swap(false, Ordering::SeqCst) {
                (0..3).for_each(|_| requeue.spec_changed(key));
            }
            inner(key)
        };

        let config = LoopConfig {
            concurrency: 4,
            ..exact_config()
        };
        run(Arc::clone(&queue), config, handler, stop_after(100)).await;
        assert_eq!(probe.starts(), [(0, 7), (1, 7)]);
        assert!(!probe.same_key_at_once.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_spec_starts_before_a_backlog_of_due_resyncs() {
        let queue = Arc::new(WorkQueue::new());
        let now = Instant::now();
        (1..=100).for_each(|key| queue.resync_at(key, now));
        let late = Arc::clone(&queue);
        tokio::spawn(async move {
            tokio::time::sleep(SECOND / 2).await;
            late.spec_changed(0);
        });

        let probe = Probe::new();
        let config = LoopConfig {
            concurrency: 1,
            ..exact_config()
        };
        run(
            queue,
            config,
            timed(&probe, SECOND, Outcome::Done),
            stop_after(3),
        )
        .await;
        let keys: Vec<u32> = probe.starts().into_iter().map(|(_, key)| key).collect();
        assert_eq!(keys[..3], [1, 0, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_retry_on_the_backoff_and_waits_do_not_count_as_failures() {
        let queue = Arc::new(WorkQueue::new());
        queue.spec_changed(1);
        let probe = Probe::new();
        let script = Mutex::new(vec![
            Outcome::Done,
            Outcome::Retry("transient"),
            Outcome::Wait("quota_exceeded"),
            Outcome::Retry("transient"),
            Outcome::Retry("transient"),
        ]);
        let handler = {
            let probe = Arc::clone(&probe);
            move |key| {
                let outcome = script.lock().expect("lock").pop().unwrap_or(Outcome::Gone);
                timed(&probe, Duration::ZERO, outcome)(key)
            }
        };

        run(Arc::clone(&queue), exact_config(), handler, stop_after(200)).await;
        // Retry 1 s, retry 2 s, wait 30 s, retry 4 s (the third failure), then a resync at
        // 300 s, which shutdown at 200 s never reaches.
        assert_eq!(probe.start_times(), [0, 1, 3, 33, 37]);
        let stats = queue.stats();
        assert_eq!((stats.runs.retry, stats.runs.wait), (3, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_past_its_deadline_is_cancelled_and_retried() {
        let queue = Arc::new(WorkQueue::new());
        queue.spec_changed(1);
        let probe = Probe::new();
        let slow = timed(&probe, 3_600 * SECOND, Outcome::Done);
        let fast = timed(&probe, Duration::ZERO, Outcome::Gone);
        let calls = AtomicUsize::new(0);
        let handler = move |key| match calls.fetch_add(1, Ordering::SeqCst) {
            0 => slow(key),
            _ => fast(key),
        };

        let config = LoopConfig {
            deadline: 10 * SECOND,
            ..exact_config()
        };
        run(Arc::clone(&queue), config, handler, stop_after(100)).await;
        // Cancelled at 10 s (so it never finished), retried one backoff step later.
        assert_eq!(probe.start_times(), [0, 11]);
        assert_eq!(probe.finished(), 1);
        assert_eq!(queue.stats().runs.retry, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_reconcile_is_retried() {
        let queue = Arc::new(WorkQueue::new());
        queue.spec_changed(1);
        let probe = Probe::new();
        let fine = timed(&probe, Duration::ZERO, Outcome::Gone);
        let calls = AtomicUsize::new(0);
        let handler = move |key| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            let work = fine(key);
            Box::pin(async move {
                assert!(!first, "first reconcile panics on purpose");
                work.await
            })
        };

        run(Arc::clone(&queue), exact_config(), handler, stop_after(100)).await;
        assert_eq!(probe.finished(), 1);
        assert_eq!(queue.stats().runs.retry, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_lets_in_flight_reconciles_finish_and_takes_no_new_keys() {
        let queue = Arc::new(WorkQueue::new());
        (0..4).for_each(|key| queue.spec_changed(key));
        let probe = Probe::new();
        let began = Instant::now();

        let handler = timed(&probe, 5 * SECOND, Outcome::Done);
        let stopped = run(Arc::clone(&queue), exact_config(), handler, stop_after(1)).await;
        assert_eq!(
            stopped,
            Stopped {
                finished: 2,
                cancelled: 0
            }
        );
        assert_eq!(began.elapsed(), 5 * SECOND);
        let started: HashSet<u32> = probe.starts().into_iter().map(|(_, key)| key).collect();
        assert_eq!(started, HashSet::from([0, 1]));
        assert_eq!(probe.finished(), 2);
        assert_eq!(queue.stats().running, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cancels_reconciles_still_running_after_the_grace_period() {
        let queue = Arc::new(WorkQueue::new());
        queue.spec_changed(1);
        let probe = Probe::new();
        let began = Instant::now();

        let handler = timed(&probe, 3_600 * SECOND, Outcome::Done);
        let config = LoopConfig {
            grace: 10 * SECOND,
            ..exact_config()
        };
        let stopped = run(Arc::clone(&queue), config, handler, stop_after(1)).await;
        assert_eq!(
            stopped,
            Stopped {
                finished: 0,
                cancelled: 1
            }
        );
        assert_eq!(began.elapsed(), 11 * SECOND);
        assert_eq!(probe.finished(), 0);
        assert_eq!(queue.stats().running, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_queue_stops_the_loop() {
        let queue = Arc::new(WorkQueue::<u32>::new());
        let closer = Arc::clone(&queue);
        tokio::spawn(async move {
            tokio::time::sleep(SECOND).await;
            closer.close();
        });
        let probe = Probe::new();
        let began = Instant::now();

        let handler = timed(&probe, SECOND, Outcome::Done);
        let stopped = run(queue, exact_config(), handler, std::future::pending::<()>()).await;
        assert_eq!(
            stopped,
            Stopped {
                finished: 0,
                cancelled: 0
            }
        );
        assert_eq!(began.elapsed(), SECOND);
    }
}
