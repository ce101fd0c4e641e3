//! The work queue under load: how long a new spec waits while a resync of 5,000 shops is under
//! way, and how many keys per second the queue and the loop move. Prints figures; asserts
//! nothing about timing. Run with `cargo bench --bench queue`.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shop_controller::runtime::{LoopConfig, Next, Outcome, WorkQueue, run};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

const BACKLOG: u32 = 5_000;
/// Probe keys start here, so they never collide with backlog keys.
const PROBE: u32 = 1_000_000;
const PROBES: u32 = 50;
const FIFO_PROBES: u32 = 3;
const HANDLER_WORK: Duration = Duration::from_millis(1);
const CONCURRENCY: usize = 8;
const THROUGHPUT_KEYS: u32 = 100_000;

#[tokio::main]
async fn main() {
    println!("queue benchmark");
    latency_during_resync().await;
    queue_throughput().await;
    loop_throughput().await;
}

/// A loop works through a due resync of `BACKLOG` keys (each takes ~1 ms) while probe keys
/// arrive; the figure is the time from enqueue to the probe's handler starting.
async fn latency_during_resync() {
    let queue = Arc::new(WorkQueue::new());
    let (started, mut starts) = mpsc::unbounded_channel();
    let backlog_runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let backlog_runs = Arc::clone(&backlog_runs);
        move |key: u32| {
            let (started, backlog_runs) = (started.clone(), Arc::clone(&backlog_runs));
            async move {
                if key >= PROBE {
                    started.send(Instant::now()).ok();
                } else {
                    tokio::time::sleep(HANDLER_WORK).await;
                    backlog_runs.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Done
            }
        }
    };
    let stop = Arc::new(Notify::new());
    let config = LoopConfig {
        concurrency: CONCURRENCY,
        ..LoopConfig::default()
    };
    let stopped = Arc::clone(&stop);
    let worker = tokio::spawn(run(Arc::clone(&queue), config, handler, async move {
        stopped.notified().await;
    }));

    let began = Instant::now();
    let mut spec = Vec::new();
    let mut backlog_seen = Vec::new();
    for probe in 0..PROBES {
        backlog_seen.push(refill(&queue));
        // Handlers wake on tokio's millisecond timer ticks; a blocking pause of uneven length
        // (this thread drives only `main`, not the workers) lands each probe at a different
        // phase of that cycle instead of always right after a tick.
        let offset = Duration::from_micros(u64::from(probe) * 211 % 2_000);
        std::thread::sleep(Duration::from_millis(10) + offset);
        let enqueued = Instant::now();
        queue.spec_changed(PROBE + probe);
        spec.push(starts.recv().await.expect("probe starts") - enqueued);
    }
    let mut fifo = Vec::new();
    for probe in 0..FIFO_PROBES {
        refill(&queue);
        let enqueued = Instant::now();
        queue.resync_at(PROBE + PROBES + probe, enqueued);
        fifo.push(starts.recv().await.expect("probe starts") - enqueued);
    }
    let elapsed = began.elapsed();
    stop.notify_one();
    worker.await.expect("loop ends");
    let backlog_rate = backlog_runs.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64();

    println!(
        "new spec during a resync of {BACKLOG} keys (handler ~1 ms, concurrency {CONCURRENCY})"
    );
    let fewest = backlog_seen.iter().min().copied().unwrap_or_default();
    println!("  resync keys due when each probe was enqueued: at least {fewest}");
    let per_handler = CONCURRENCY as f64 / backlog_rate * 1e3;
    println!(
        "  backlog moved at {backlog_rate:.0} keys/s, so one handler took {per_handler:.2} ms"
    );
    println!(
        "  spec lane, {PROBES} runs, enqueue to handler start: {}",
        summary(&mut spec)
    );
    println!(
        "  same key as a resync (one FIFO lane), {FIFO_PROBES} runs: {}",
        summary(&mut fifo)
    );
}

/// Makes every backlog key due now again; returns how many wait in the resync lane.
fn refill(queue: &WorkQueue<u32>) -> usize {
    let now = Instant::now();
    (0..BACKLOG).for_each(|key| queue.resync_at(key, now));
    queue.stats().resync
}

/// Pop and complete on the queue alone, in one task: the cost per key of the bookkeeping.
async fn queue_throughput() {
    let later = Instant::now() + Duration::from_secs(300);
    let spec = drain(|queue, key| queue.spec_changed(key), Next::Forget).await;
    let resync_now = |queue: &WorkQueue<u32>, key| queue.resync_at(key, Instant::now());
    let resync = drain(resync_now, Next::Resync { due: later }).await;
    println!("pop + complete, {THROUGHPUT_KEYS} no-op keys, one task:");
    println!("  spec lane, forgotten after: {}", rate(spec));
    println!("  resync lane, next resync 5 min later: {}", rate(resync));
}

async fn drain(enqueue: impl Fn(&WorkQueue<u32>, u32), next: Next) -> Duration {
    let queue = WorkQueue::new();
    (0..THROUGHPUT_KEYS).for_each(|key| enqueue(&queue, key));
    let began = Instant::now();
    for _ in 0..THROUGHPUT_KEYS {
        let popped = queue.pop().await.expect("a key is ready");
        queue.complete(&popped.key, next);
    }
    began.elapsed()
}

/// The whole loop with a no-op handler: spawn, deadline, schedule and complete per key.
async fn loop_throughput() {
    let queue = Arc::new(WorkQueue::new());
    (0..THROUGHPUT_KEYS).for_each(|key| queue.spec_changed(key));
    let handled = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());
    let handler = {
        let (handled, all_done) = (Arc::clone(&handled), Arc::clone(&all_done));
        move |_key: u32| {
            let (handled, all_done) = (Arc::clone(&handled), Arc::clone(&all_done));
            async move {
                if handled.fetch_add(1, Ordering::Relaxed) + 1 == THROUGHPUT_KEYS as usize {
                    all_done.notify_one();
                }
                Outcome::Done
            }
        }
    };

    let config = LoopConfig {
        concurrency: CONCURRENCY,
        ..LoopConfig::default()
    };
    let began = Instant::now();
    run(
        queue,
        config,
        handler,
        async move { all_done.notified().await },
    )
    .await;
    println!("run(), {THROUGHPUT_KEYS} no-op keys, concurrency {CONCURRENCY}:");
    println!("  {}", rate(began.elapsed()));
}

/// p50, p99 and max in milliseconds.
fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |quantile: f64| {
        let index = ((samples.len() - 1) as f64 * quantile).round() as usize;
        samples[index].as_secs_f64() * 1e3
    };
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

fn rate(elapsed: Duration) -> String {
    let per_second = f64::from(THROUGHPUT_KEYS) / elapsed.as_secs_f64();
    format!(
        "{:.1} ms, {:.0} keys/s",
        elapsed.as_secs_f64() * 1e3,
        per_second
    )
}
