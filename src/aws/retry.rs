//! A retry classifier that keeps the SDK from retrying full quotas. The SDK's standard mode
//! treats some quota codes (`LimitExceededException` above all) as throttling and retries them;
//! a full quota does not empty by waiting a second, so those calls end at once and the runtime
//! decides when to look again.

use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority,
};

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
    use super::is_quota_error;

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
