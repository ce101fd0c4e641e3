//! The work queue: which key runs next. A key waits in at most one of three lanes, served
//! strictly in order: spec changes, then retries that are due, then resyncs that are due, so
//! a resync of thousands of shops never stands between a merchant and their deploy. A key
//! that is handed out stays "running" until [`WorkQueue::complete`]; asking for it again in
//! the meantime is remembered and takes effect at completion, so no key runs twice at once and
//! no wake-up is lost. The queue decides order only; the delays come from the worker loop.
//!
//! Every operation is O(log n) in the number of waiting keys: a hash map holds each key's
//! state, the spec lane is a FIFO, and the two delayed lanes are ordered maps keyed by due
//! time, so nothing is scanned when a key is handed out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::schedule::Outcome;
use super::stats::{RunCounters, Runs};

/// The lanes, highest priority first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// New keys and changed specs: ready at once.
    Spec,
    /// Follow-ups that are due: retries, waits and progress checks.
    Retry,
    /// Periodic resyncs that are due.
    Resync,
}

impl Lane {
    /// A stable label for spans and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Spec => "spec",
            Lane::Retry => "retry",
            Lane::Resync => "resync",
        }
    }
}

/// A key handed out by [`WorkQueue::pop`], with the lane that triggered it. The caller owns
/// the key until it calls [`WorkQueue::complete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Popped<K> {
    /// The key to reconcile.
    pub key: K,
    /// The lane it was taken from: why it runs now.
    pub lane: Lane,
}

/// What happens to a key once its run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Run again from the retry lane once `due` has passed.
    Retry { due: Instant },
    /// Run again from the resync lane once `due` has passed.
    Resync { due: Instant },
    /// Keep nothing for the key (its shop is gone), unless it was asked for while running.
    Forget,
}

/// A snapshot of the queue for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Keys waiting in the spec lane.
    pub spec: usize,
    /// Keys in the retry lane, due or not.
    pub retry: usize,
    /// Keys in the resync lane, due or not.
    pub resync: usize,
    /// Keys handed out and not yet completed.
    pub running: usize,
    /// How long the longest-ready key has been ready (zero when none is).
    pub oldest_waiting: Duration,
    /// Runs since start, by outcome and duration.
    pub runs: Runs,
}

/// A de-duplicating, three-lane queue of keys; see the module docs.
#[derive(Debug)]
pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    /// Woken on every change that could make a key ready, and on close.
    changed: Notify,
    runs: RunCounters,
}

#[derive(Debug)]
struct State<K> {
    keys: HashMap<K, Entry>,
    lanes: Lanes<K>,
    next_seq: u64,
    running: usize,
    closed: bool,
}

/// A key's state. `slot` is where it waits; for a running key it is only a note, placed in
/// a lane when the run completes.
#[derive(Debug, Default)]
struct Entry {
    running: bool,
    slot: Option<Slot>,
}

/// A place in a lane. `seq` makes delayed entries unique (many keys share a due time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Spec { since: Instant },
    Retry { due: Instant, seq: u64 },
    Resync { due: Instant, seq: u64 },
}

#[derive(Debug)]
struct Lanes<K> {
    spec: VecDeque<(K, Instant)>,
    retry: BTreeMap<(Instant, u64), K>,
    resync: BTreeMap<(Instant, u64), K>,
}

/// The answer of one look at the queue.
enum Take<K> {
    Key(Popped<K>),
    Closed,
    /// Nothing ready; the earliest delayed key is due then, if any.
    Idle(Option<Instant>),
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    /// An empty queue.
    pub fn new() -> WorkQueue<K> {
        WorkQueue {
            state: Mutex::new(State::new()),
            changed: Notify::new(),
            runs: RunCounters::default(),
        }
    }

    /// Asks for `key` in the spec lane: its spec is new or changed.
    pub fn spec_changed(&self, key: K) {
        self.request(key, |_| Slot::Spec {
            since: Instant::now(),
        });
    }

    /// Asks for `key` in the retry lane, not before `due`.
    pub fn retry_at(&self, key: K, due: Instant) {
        self.request(key, |state| Slot::Retry {
            due,
            seq: state.seq(),
        });
    }

    /// Asks for `key` in the resync lane, not before `due`.
    pub fn resync_at(&self, key: K, due: Instant) {
        self.request(key, |state| Slot::Resync {
            due,
            seq: state.seq(),
        });
    }

    /// Waits for the next ready key: the spec lane first, then due retries, then due resyncs.
    /// Returns `None` once the queue is closed, even if keys are ready. Cancel-safe: a key is
    /// taken only in the poll that returns it.
    pub async fn pop(&self) -> Option<Popped<K>> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Register before looking, so a change between the look and the wait wakes us.
            changed.as_mut().enable();

            let taken = self.lock().take(Instant::now());
            match taken {
                Take::Key(popped) => return Some(popped),
                Take::Closed => return None,
                Take::Idle(Some(due)) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                Take::Idle(None) => changed.await,
            }
        }
    }

    /// Ends the run of `key` and schedules it per `next`. If the key was asked for while it
    /// ran, the more urgent of the two wins: a higher lane, or in the same lane the earlier
    /// due time. Completing a key that is not running does nothing.
    pub fn complete(&self, key: &K, next: Next) {
        let changed = self.lock().complete(key, next);
        if changed {
            self.changed.notify_waiters();
        }
    }

    /// Stops handing out keys: every `pop`, waiting or future, returns `None`. Requests are
    /// still recorded, so counts stay true while in-flight runs finish.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }

    /// Depths, running keys, the oldest wait, and the runs so far.
    pub fn stats(&self) -> QueueStats {
        let state = self.lock();
        QueueStats {
            spec: state.lanes.spec.len(),
            retry: state.lanes.retry.len(),
            resync: state.lanes.resync.len(),
            running: state.running,
            oldest_waiting: state.lanes.oldest_ready(Instant::now()),
            runs: self.runs.snapshot(),
        }
    }

    /// Counts one run that ended in `outcome` after `elapsed`; the worker loop reports here so
    /// one object holds every figure of a loop.
    pub(crate) fn count(&self, outcome: Outcome, elapsed: Duration) {
        self.runs.record(outcome, elapsed);
    }

    fn request(&self, key: K, slot: impl FnOnce(&mut State<K>) -> Slot) {
        let changed = {
            let mut state = self.lock();
            let slot = slot(&mut state);
            state.request(key, slot)
        };
        if changed {
            self.changed.notify_waiters();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // No code panics while holding the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Clone + Eq + Hash> Default for WorkQueue<K> {
    fn default() -> WorkQueue<K> {
        WorkQueue::new()
    }
}

impl<K: Clone + Eq + Hash> State<K> {
    fn new() -> State<K> {
        State {
            keys: HashMap::new(),
            lanes: Lanes::new(),
            next_seq: 0,
            running: 0,
            closed: false,
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Moves `key` to `wanted` if that is more urgent than where it waits. Returns whether a
    /// lane changed.
    fn request(&mut self, key: K, wanted: Slot) -> bool {
        let entry = self.keys.entry(key.clone()).or_default();
        if entry.slot.is_some_and(|current| !wanted.outranks(current)) {
            return false;
        }
        let previous = entry.slot.replace(wanted);
        if entry.running {
            return false;
        }

        if let Some(previous) = previous {
            self.lanes.remove(previous);
        }
        self.lanes.insert(key, wanted);
        true
    }

    fn take(&mut self, now: Instant) -> Take<K> {
        if self.closed {
            return Take::Closed;
        }
        let Some((key, lane)) = self.lanes.take_ready(now) else {
            return Take::Idle(self.lanes.next_due());
        };

        let entry = self.keys.entry(key.clone()).or_default();
        entry.slot = None;
        entry.running = true;
        self.running += 1;
        Take::Key(Popped { key, lane })
    }

    /// Returns whether a key entered a lane.
    fn complete(&mut self, key: &K, next: Next) -> bool {
        let wanted = match next {
            Next::Retry { due } => Some(Slot::Retry {
                due,
                seq: self.seq(),
            }),
            Next::Resync { due } => Some(Slot::Resync {
                due,
                seq: self.seq(),
            }),
            Next::Forget => None,
        };
        let Some(entry) = self.keys.get_mut(key).filter(|entry| entry.running) else {
            return false;
        };
        entry.running = false;
        self.running -= 1;

        let slot = match (entry.slot, wanted) {
            (Some(asked), Some(wanted)) if wanted.outranks(asked) => wanted,
            (Some(asked), _) => asked,
            (None, Some(wanted)) => wanted,
            (None, None) => {
                self.keys.remove(key);
                return false;
            }
        };
        entry.slot = Some(slot);
        self.lanes.insert(key.clone(), slot);
        true
    }
}

impl Slot {
    fn lane(self) -> Lane {
        match self {
            Slot::Spec { .. } => Lane::Spec,
            Slot::Retry { .. } => Lane::Retry,
            Slot::Resync { .. } => Lane::Resync,
        }
    }

    /// Whether `self` is more urgent than `other`: a higher lane, or the same delayed lane
    /// and an earlier due time. A spec slot is never outranked, so the spec FIFO never needs
    /// a removal from its middle.
    fn outranks(self, other: Slot) -> bool {
        match (self, other) {
            (Slot::Retry { due, .. }, Slot::Retry { due: other, .. })
            | (Slot::Resync { due, .. }, Slot::Resync { due: other, .. }) => due < other,
            _ => self.lane() < other.lane(),
        }
    }
}

impl<K> Lanes<K> {
    fn new() -> Lanes<K> {
        Lanes {
            spec: VecDeque::new(),
            retry: BTreeMap::new(),
            resync: BTreeMap::new(),
        }
    }

    fn insert(&mut self, key: K, slot: Slot) {
        match slot {
            Slot::Spec { since } => self.spec.push_back((key, since)),
            Slot::Retry { due, seq } => {
                self.retry.insert((due, seq), key);
            }
            Slot::Resync { due, seq } => {
                self.resync.insert((due, seq), key);
            }
        }
    }

    fn remove(&mut self, slot: Slot) {
        match slot {
            // Unreachable by `Slot::outranks`: nothing replaces a spec slot.
            Slot::Spec { .. } => {}
            Slot::Retry { due, seq } => {
                self.retry.remove(&(due, seq));
            }
            Slot::Resync { due, seq } => {
                self.resync.remove(&(due, seq));
            }
        }
    }

    fn take_ready(&mut self, now: Instant) -> Option<(K, Lane)> {
        if let Some((key, _)) = self.spec.pop_front() {
            return Some((key, Lane::Spec));
        }
        for (lane, delayed) in [
            (Lane::Retry, &mut self.retry),
            (Lane::Resync, &mut self.resync),
        ] {
            if let Some(first) = delayed.first_entry()
                && first.key().0 <= now
            {
                return Some((first.remove(), lane));
            }
        }
        None
    }

    fn next_due(&self) -> Option<Instant> {
        let retry = self.retry.keys().next().map(|(due, _)| *due);
        let resync = self.resync.keys().next().map(|(due, _)| *due);
        retry.into_iter().chain(resync).min()
    }

    /// The time since the longest-ready key became ready: the spec FIFO's head, or the first
    /// due time of a delayed lane that has passed.
    fn oldest_ready(&self, now: Instant) -> Duration {
        let spec = self.spec.front().map(|(_, since)| *since);
        let retry = self.retry.keys().next().map(|(due, _)| *due);
        let resync = self.resync.keys().next().map(|(due, _)| *due);
        let oldest = [spec, retry, resync]
            .into_iter()
            .flatten()
            .filter(|at| *at <= now)
            .min();
        oldest.map_or(Duration::ZERO, |at| now - at)
    }
}

#[cfg(test)]
mod tests;
