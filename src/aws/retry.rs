//! A retry classifier that keeps the SDK from retrying full quotas. The SDK's standard mode
//! treats some quota codes (`LimitExceededException` above all) as throttling and retries them;
//! a full quota does not empty by waiting a second, so those calls end at once and the runtime
//! decides when to look again.
//!
//! And an interceptor that stops any attempt of a fenced mutation past its deadline
//! (`crate::fencing`): the SDK's retry loop waits between attempts, and a replica paused there
//! must not send the retry with a lapsed claim.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, InterceptorContext,
};
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Halts an attempt, the first or a retry, of a mutation whose fence deadline has passed.
/// The SDK reports it as a dispatch failure, which `error.rs` classifies as transient and the
/// standard retry strategy does not retry.
#[derive(Debug, Default)]
pub(crate) struct FenceDeadline;

impl Intercept for FenceDeadline {
    fn name(&self) -> &'static str {
        "fence deadline"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        match crate::fencing::overdue() {
            None => Ok(()),
            Some(late) => Err(format!(
                "not sent: the lease was confirmed too long ago ({} ms past the fence deadline); fencing again",
                late.as_millis()
            )
            .into()),
        }
    }
}

/// Error codes that mean "a quota is full" (see `error.rs` for their mapping).
const QUOTA_CODES: &[&str] = &[
    "TooManyListeners",
    "TooManyTargetGroups",
    "TooManyCertificates",
    "TooManyTargets",
    "TooManyLoadBalancers",
    "LimitExceeded",
    "DeploymentLimitExceeded",
    "AccountLimitExceeded",
];

/// Forbids retries of responses carrying a quota error code.
#[derive(Debug, Default)]
pub(crate) struct QuotaIsFinal;

impl ClassifyRetry for QuotaIsFinal {
    fn classify_retry(&self, context: &InterceptorContext) -> RetryAction {
        let Some(response) = context.response() else {
            return RetryAction::NoActionIndicated;
        };
        if response.status().is_server_error() {
            return RetryAction::NoActionIndicated;
        }
        let header = response
            .headers()
            .get("x-amzn-errortype")
            .unwrap_or_default();
        let body = response
            .body()
            .bytes()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if is_quota_error(header, &body) {
            RetryAction::RetryForbidden
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "quota errors are final"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(
            RetryClassifierPriority::modeled_as_retryable_classifier(),
        )
    }
}

/// Whether the error type header or the body names a quota code, as a whole XML `<Code>` or a
/// JSON `__type` / header value (which may carry a `:namespace` suffix or `#prefix`).
fn is_quota_error(header: &str, body: &str) -> bool {
    QUOTA_CODES.iter().any(|code| {
        let header_code = header
            .split(':')
            .next()
            .unwrap_or("")
            .rsplit('#')
            .next()
            .unwrap_or("");
        header_code.trim_end_matches("Exception") == *code
            || body.contains(&format!("<Code>{code}</Code>"))
            || body.contains(&format!("<Code>{code}Exception</Code>"))
            || body.contains(&format!("\"{code}Exception\""))
            || body.contains(&format!("\"{code}\""))
            || body.contains(&format!("#{code}Exception\""))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use aws_config::BehaviorVersion;
    use aws_sdk_elasticloadbalancingv2 as elbv2;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{FenceDeadline, is_quota_error};
    use crate::fencing::sending;

    /// A server answering every request with a 503 after `delay`, counting them (one per
    /// connection).
    async fn unavailable_server(delay: Duration) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buffer = vec![0; 64 * 1024];
                let _ = socket.read(&mut buffer).await;
                tokio::time::sleep(delay).await;
                let answer = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (url, requests)
    }

    /// An ELBv2 client of the adapters' kind: three attempts, up to 300 ms between them.
    fn client(url: &str) -> elbv2::Client {
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(300))
            .with_max_backoff(Duration::from_millis(300));
        let credentials = aws_credential_types::Credentials::new("AKID", "SECRET", None, None, "t");
        let config = elbv2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(elbv2::config::Region::new("us-east-1"))
            .credentials_provider(credentials)
            .endpoint_url(url)
            .http_client(crate::aws::http_client())
            .retry_config(retry)
            .interceptor(FenceDeadline)
            .build();
        elbv2::Client::from_conf(config)
    }

    #[tokio::test]
    async fn a_mutation_is_not_sent_past_its_deadline_and_not_retried_after_it() {
        let (url, requests) = unavailable_server(Duration::from_millis(800)).await;
        let client = client(&url);
        let create = || client.create_target_group().name("shop-1").send();

        // Without a deadline, or well before it: every attempt goes out.
        let far = Instant::now() + Duration::from_secs(60);
        let error = sending(Some(far), create()).await.expect_err("503");
        assert!(
            matches!(error, elbv2::error::SdkError::ServiceError(_)),
            "{error:?}"
        );
        assert_eq!(requests.swap(0, Ordering::SeqCst), 3, "attempts sent");

        // Already past: nothing goes out, and the error reads as transient.
        let past = Instant::now() - Duration::from_millis(1);
        let error = sending(Some(past), create()).await.expect_err("refused");
        assert_eq!(
            requests.swap(0, Ordering::SeqCst),
            0,
            "sent past the deadline"
        );
        let error = super::super::error::cloud_error("elbv2:CreateTargetGroup", error);
        assert_eq!(
            error.kind,
            reconcilers::cloud::ErrorKind::Transient,
            "{error:?}"
        );
        assert!(
            error.message.contains("fence deadline"),
            "{}",
            error.message
        );

        // Passing while the first attempt waits for its answer, as if the replica were paused
        // there or in the backoff after it: the first attempt went out, no retry does.
        let soon = Instant::now() + Duration::from_millis(400);
        sending(Some(soon), create()).await.expect_err("refused");
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "retried past the deadline"
        );
    }

    #[test]
    fn quota_codes_are_recognised_in_every_protocol() {
        assert!(is_quota_error(
            "",
            "<Error><Code>TooManyListeners</Code></Error>"
        ));
        assert!(is_quota_error("LimitExceededException:http://internal", ""));
        assert!(is_quota_error(
            "",
            r#"{"__type":"com.amazonaws#LimitExceededException"}"#
        ));
        assert!(is_quota_error(
            "",
            r#"{"__type":"DeploymentLimitExceededException"}"#
        ));
        assert!(!is_quota_error(
            "ThrottlingException",
            r#"{"__type":"ThrottlingException"}"#
        ));
        assert!(!is_quota_error(
            "",
            "<Error><Code>Throttling</Code></Error>"
        ));
        assert!(!is_quota_error(
            "",
            "<Error><Code>TooManyListenersX</Code></Error>"
        ));
    }
}
