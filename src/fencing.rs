//! The send deadline of a fenced mutation, carried from the controller's fencing guard down
//! to the adapters that put the request on the wire.
//!
//! `controller::fenced` runs each mutating capability call inside [`sending`] with the
//! reconcile's fence deadline and checks it first ([`check_send`]); but between that check and
//! the request leaving the process an adapter may wait for a rate-limit token, and the SDK may
//! retry after a backoff. A replica paused in either wait would otherwise wake up and send with
//! a lapsed claim. So the adapters that wait ask again just before each attempt they transmit:
//! the SDK clients' interceptor (`aws::retry::FenceDeadline`, retries included) and the EC2
//! Query client's retry loop. Reads carry no deadline and always pass.
//!
//! What no check can cover is a pause after the last check while the request is being
//! written, or a request already in flight: AWS takes no fencing token. The window is the
//! time to sign and write one request.

use std::future::Future;
use std::time::Instant;

use reconcilers::cloud::{CloudError, ErrorKind};

tokio::task_local! {
    /// The instant after which the mutation being sent from this task must not go out.
    static SEND_BY: Instant;
}

/// Runs one mutating call that must leave the process before `until`.
pub(crate) async fn sending<F: Future>(until: Option<Instant>, call: F) -> F::Output {
    match until {
        Some(until) => SEND_BY.scope(until, call).await,
        None => call.await,
    }
}

/// How late the mutation being sent from this task is, if it is past its deadline.
pub(crate) fn overdue() -> Option<std::time::Duration> {
    let until = SEND_BY.try_with(|until| *until).ok()?;
    Instant::now().checked_duration_since(until)
}

/// Refuses to transmit a mutation past its deadline: a transient error, so the reconcile
/// runs again and fences anew.
pub(crate) fn check_send(operation: &'static str) -> Result<(), CloudError> {
    match overdue() {
        None => Ok(()),
        Some(late) => Err(refused(operation, late)),
    }
}

/// The error of a mutation held back because its fence is `late` past its deadline.
fn refused(operation: &'static str, late: std::time::Duration) -> CloudError {
    tracing::warn!(
        operation,
        late_ms = late.as_millis(),
        "mutation held back: its fence is too old"
    );
    CloudError::new(
        ErrorKind::Transient,
        operation,
        "not sent: the lease was confirmed too long ago; fencing again",
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn only_a_mutation_past_its_deadline_is_refused() {
        assert!(
            check_send("elbv2:CreateTargetGroup").is_ok(),
            "outside a scope"
        );
        let later = Instant::now() + Duration::from_secs(60);
        let ok = sending(Some(later), async { check_send("elbv2:CreateTargetGroup") }).await;
        assert!(ok.is_ok(), "before the deadline");
        let earlier = Instant::now() - Duration::from_millis(5);
        let refused = sending(Some(earlier), async {
            check_send("elbv2:CreateTargetGroup")
        })
        .await;
        let error = refused.expect_err("past the deadline");
        assert_eq!(error.kind, ErrorKind::Transient);
        let unbounded = sending(None, async { check_send("elbv2:CreateTargetGroup") }).await;
        assert!(unbounded.is_ok(), "no deadline");
    }

    #[tokio::test]
    async fn a_deadline_passing_during_a_wait_is_caught_after_it() {
        let until = Instant::now() + Duration::from_millis(50);
        let result = sending(Some(until), async {
            assert!(check_send("ssm:SendCommand").is_ok());
            // A real sleep: the deadline is a std Instant, as a SIGSTOP stops real time.
            std::thread::sleep(Duration::from_millis(60));
            check_send("ssm:SendCommand")
        })
        .await;
        assert!(result.is_err(), "sent after the deadline passed");
    }
}
