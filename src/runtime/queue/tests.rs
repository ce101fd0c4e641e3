//! Tests of the work queue: lane order, one run per key at a time, promotion, due times,
//! closing and stats, on paused time.

use super::*;

const SECOND: Duration = Duration::from_secs(1);

/// Pops with a bound, so a test of "nothing is ready" ends (time is paused and jumps).
async fn pop_within(
    queue: &WorkQueue<&'static str>,
    wait: Duration,
) -> Option<Popped<&'static str>> {
    tokio::time::timeout(wait, queue.pop()).await.ok().flatten()
}

async fn pop_key(queue: &WorkQueue<&'static str>) -> (&'static str, Lane) {
    let popped = pop_within(queue, 3_600 * SECOND)
        .await
        .expect("a key comes due");
    (popped.key, popped.lane)
}

#[tokio::test(start_paused = true)]
async fn a_key_asked_for_twice_waits_once() {
    let queue = WorkQueue::new();
    queue.spec_changed("a");
    queue.spec_changed("a");
    queue.resync_at("a", Instant::now());
    assert_eq!(queue.stats().spec + queue.stats().resync, 1);

    assert_eq!(pop_key(&queue).await, ("a", Lane::Spec));
    assert_eq!(pop_within(&queue, SECOND).await, None);
}

#[tokio::test(start_paused = true)]
async fn a_running_key_is_not_handed_out_again() {
    let queue = WorkQueue::new();
    queue.spec_changed("a");
    assert_eq!(pop_key(&queue).await, ("a", Lane::Spec));

    queue.spec_changed("a");
    queue.retry_at("a", Instant::now());
    assert_eq!(pop_within(&queue, 10 * SECOND).await, None);
    assert_eq!(queue.stats().running, 1);
}

#[tokio::test(start_paused = true)]
async fn a_key_asked_for_while_running_runs_again_exactly_once() {
    let queue = WorkQueue::new();
    queue.spec_changed("a");
    pop_key(&queue).await;
    for _ in 0..3 {
        queue.spec_changed("a");
    }

    queue.complete(&"a", Next::Forget);
    assert_eq!(pop_key(&queue).await, ("a", Lane::Spec));
    queue.complete(&"a", Next::Forget);
    assert_eq!(pop_within(&queue, 10 * SECOND).await, None);
    assert_eq!(queue.stats(), QueueStats::default());
}

#[tokio::test(start_paused = true)]
async fn a_waiting_popper_wakes_when_a_running_key_is_requeued_and_completed() {
    let queue = std::sync::Arc::new(WorkQueue::new());
    queue.spec_changed("a");
    pop_key(&queue).await;
    let popper = tokio::spawn({
        let queue = queue.clone();
        async move { queue.pop().await }
    });
    tokio::task::yield_now().await;

    queue.spec_changed("a");
    queue.complete(
        &"a",
        Next::Resync {
            due: Instant::now() + 60 * SECOND,
        },
    );
    let popped = popper.await.expect("popper ends").expect("a key");
    assert_eq!(
        popped,
        Popped {
            key: "a",
            lane: Lane::Spec
        }
    );
}

#[tokio::test(start_paused = true)]
async fn spec_changes_come_before_due_retries_before_due_resyncs() {
    let queue = WorkQueue::new();
    let now = Instant::now();
    queue.resync_at("resync", now);
    queue.retry_at("retry", now);
    queue.spec_changed("spec");

    assert_eq!(pop_key(&queue).await, ("spec", Lane::Spec));
    assert_eq!(pop_key(&queue).await, ("retry", Lane::Retry));
    assert_eq!(pop_key(&queue).await, ("resync", Lane::Resync));
}

#[tokio::test(start_paused = true)]
async fn spec_lane_is_first_in_first_out() {
    let queue = WorkQueue::new();
    for key in ["c", "a", "b"] {
        queue.spec_changed(key);
    }
    let order = [
        pop_key(&queue).await.0,
        pop_key(&queue).await.0,
        pop_key(&queue).await.0,
    ];
    assert_eq!(order, ["c", "a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_key_asked_for_in_a_higher_lane_is_promoted() {
    let queue = WorkQueue::new();
    let hour_later = Instant::now() + 3_600 * SECOND;
    queue.resync_at("a", hour_later);
    queue.retry_at("b", hour_later);

    queue.spec_changed("a");
    queue.retry_at("b", Instant::now());
    assert_eq!(pop_key(&queue).await, ("a", Lane::Spec));
    assert_eq!(pop_key(&queue).await, ("b", Lane::Retry));
    assert_eq!(queue.stats().resync + queue.stats().retry, 0);
}

#[tokio::test(start_paused = true)]
async fn a_lower_lane_request_does_not_demote_or_hasten_a_key() {
    let queue = WorkQueue::new();
    let start = Instant::now();
    queue.retry_at("a", start + 10 * SECOND);
    queue.resync_at("a", start);

    assert_eq!(pop_within(&queue, 9 * SECOND).await, None);
    assert_eq!(pop_key(&queue).await, ("a", Lane::Retry));
    assert!(start.elapsed() >= 10 * SECOND);
}

#[tokio::test(start_paused = true)]
async fn a_retry_is_not_handed_out_before_it_is_due() {
    let queue = WorkQueue::new();
    let start = Instant::now();
    queue.retry_at("a", start + 10 * SECOND);

    assert_eq!(pop_within(&queue, 9 * SECOND).await, None);
    assert_eq!(queue.stats().oldest_waiting, Duration::ZERO);
    assert_eq!(pop_key(&queue).await, ("a", Lane::Retry));
    assert_eq!(start.elapsed(), 10 * SECOND);
}

#[tokio::test(start_paused = true)]
async fn an_earlier_due_time_in_the_same_lane_wins() {
    let queue = WorkQueue::new();
    let start = Instant::now();
    queue.resync_at("a", start + 60 * SECOND);
    queue.resync_at("a", start + 5 * SECOND);
    queue.resync_at("a", start + 30 * SECOND);

    assert_eq!(pop_key(&queue).await.0, "a");
    assert_eq!(start.elapsed(), 5 * SECOND);
}

#[tokio::test(start_paused = true)]
async fn completion_keeps_the_more_urgent_of_the_request_and_the_schedule() {
    let queue = WorkQueue::new();
    let start = Instant::now();
    queue.spec_changed("a");
    pop_key(&queue).await;
    queue.resync_at("a", start + 5 * SECOND);

    queue.complete(
        &"a",
        Next::Resync {
            due: start + 300 * SECOND,
        },
    );
    assert_eq!(pop_key(&queue).await.0, "a");
    assert_eq!(start.elapsed(), 5 * SECOND);

    queue.resync_at("a", Instant::now());
    queue.complete(
        &"a",
        Next::Retry {
            due: start + 20 * SECOND,
        },
    );
    assert_eq!(pop_key(&queue).await, ("a", Lane::Retry));
    assert_eq!(start.elapsed(), 20 * SECOND);
}

#[tokio::test(start_paused = true)]
async fn completing_a_key_that_is_not_running_changes_nothing() {
    let queue = WorkQueue::new();
    queue.resync_at("a", Instant::now() + SECOND);
    queue.complete(&"a", Next::Forget);
    queue.complete(
        &"b",
        Next::Retry {
            due: Instant::now(),
        },
    );
    assert_eq!(queue.stats().resync, 1);
    assert_eq!(queue.stats().retry, 0);
}

#[tokio::test(start_paused = true)]
async fn a_closed_queue_hands_out_nothing_and_wakes_waiting_poppers() {
    let queue = std::sync::Arc::new(WorkQueue::<&'static str>::new());
    let popper = tokio::spawn({
        let queue = queue.clone();
        async move { queue.pop().await }
    });
    tokio::task::yield_now().await;

    queue.close();
    queue.spec_changed("a");
    assert_eq!(popper.await.expect("popper ends"), None);
    assert_eq!(queue.pop().await, None);
}

#[tokio::test(start_paused = true)]
async fn stats_report_depths_and_the_oldest_ready_key() {
    let queue = WorkQueue::new();
    let start = Instant::now();
    queue.resync_at("old", start);
    queue.resync_at("later", start + 3_600 * SECOND);
    queue.retry_at("due", start + 2 * SECOND);
    tokio::time::advance(5 * SECOND).await;
    queue.spec_changed("new");

    let stats = queue.stats();
    assert_eq!((stats.spec, stats.retry, stats.resync), (1, 1, 2));
    assert_eq!(stats.oldest_waiting, 5 * SECOND);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_keys_each_come_out_once_in_lane_order() {
    let queue = WorkQueue::new();
    let now = Instant::now();
    for n in 0..10_000u32 {
        match n % 3 {
            0 => queue.resync_at(n, now),
            1 => queue.retry_at(n, now),
            _ => queue.spec_changed(n),
        }
    }

    let mut lanes = Vec::new();
    while let Ok(Some(popped)) = tokio::time::timeout(SECOND, queue.pop()).await {
        lanes.push(popped.lane);
        queue.complete(&popped.key, Next::Forget);
    }
    assert_eq!(lanes.len(), 10_000);
    assert!(lanes.is_sorted(), "lanes out of order");
}
