//! Classifies SDK errors into the bounded [`ErrorKind`] the reconcilers act on.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use reconcilers::cloud::{CloudError, ErrorKind, Quota};

/// Error codes AWS uses for throttling across services.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "TooManyRequestsException",
    "RequestThrottledException",
    "PriorRequestNotComplete",
];

/// Maps an error code to a quota, for the codes that mean "a quota is full".
fn quota_of(code: &str) -> Option<Quota> {
    Some(match code {
        "TooManyListeners" => Quota::ListenersPerLoadBalancer,
        "TooManyTargetGroups" => Quota::TargetGroups,
        "TooManyCertificates" => Quota::CertificatesPerListener,
        "DeploymentLimitExceededException" | "DeploymentLimitExceeded" => {
            Quota::ConcurrentDeployments
        }
        "LimitExceededException"
        | "LimitExceeded"
        | "AccountLimitExceededException"
        | "AccountLimitExceeded" => Quota::Other(code.to_owned()),
        _ => return None,
    })
}

/// Classifies an error code (and the HTTP status when there is no code).
pub(crate) fn kind_of(code: Option<&str>, http_status: Option<u16>) -> ErrorKind {
    match code {
        Some(code) if THROTTLING_CODES.contains(&code) => return ErrorKind::Throttled,
        Some(code) => {
            if let Some(quota) = quota_of(code) {
                return ErrorKind::QuotaExceeded(quota);
            }
            if code.starts_with("NoSuch")
                || code.ends_with("NotFound")
                || code.ends_with("NotFoundException")
            {
                return ErrorKind::NotFound;
            }
            if code.starts_with("Duplicate")
                || code.ends_with("AlreadyExists")
                || code.ends_with("AlreadyExistsException")
            {
                return ErrorKind::AlreadyExists;
            }
            if code.starts_with("Invalid")
                || code.starts_with("Validation")
                || code == "AccessDenied"
            {
                return ErrorKind::Invalid;
            }
        }
        None => {}
    }
    match http_status {
        Some(404) => ErrorKind::NotFound,
        Some(429) => ErrorKind::Throttled,
        Some(416) => ErrorKind::Invalid,
        Some(status) if status >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

/// Converts any SDK error of an operation.
pub(crate) fn cloud_error<E, R>(operation: &'static str, error: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    let kind = match &error {
        SdkError::ServiceError(service) => {
            kind_of(service.err().code(), Some(service.raw().http_status()))
        }
        // An unparseable response is worth another try unless it clearly said "not found".
        SdkError::ResponseError(response) => {
            match kind_of(None, Some(response.raw().http_status())) {
                ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Transient,
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => ErrorKind::Transient,
        _ => ErrorKind::Other,
    };
    let message = match error.message() {
        Some(message) => message.to_owned(),
        None => aws_smithy_types::error::display::DisplayErrorContext(&error).to_string(),
    };
    CloudError::new(kind, operation, message)
}

/// The HTTP status of a raw response.
pub(crate) trait HttpStatus {
    fn http_status(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn http_status(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_bounded_kinds() {
        let cases = [
            (Some("SlowDown"), None, ErrorKind::Throttled),
            (Some("Throttling"), Some(400), ErrorKind::Throttled),
            (
                Some("TooManyListeners"),
                Some(400),
                ErrorKind::QuotaExceeded(Quota::ListenersPerLoadBalancer),
            ),
            (
                Some("TooManyTargetGroups"),
                None,
                ErrorKind::QuotaExceeded(Quota::TargetGroups),
            ),
            (
                Some("TooManyCertificates"),
                None,
                ErrorKind::QuotaExceeded(Quota::CertificatesPerListener),
            ),
            (
                Some("DeploymentLimitExceededException"),
                None,
                ErrorKind::QuotaExceeded(Quota::ConcurrentDeployments),
            ),
            (Some("NoSuchKey"), Some(404), ErrorKind::NotFound),
            (Some("TargetGroupNotFound"), Some(400), ErrorKind::NotFound),
            (
                Some("DuplicateTargetGroupName"),
                Some(400),
                ErrorKind::AlreadyExists,
            ),
            (Some("InvalidRange"), Some(416), ErrorKind::Invalid),
            (None, Some(404), ErrorKind::NotFound),
            (None, Some(503), ErrorKind::Transient),
            (Some("Weird"), Some(400), ErrorKind::Other),
        ];
        for (code, status, expected) in cases {
            assert_eq!(kind_of(code, status), expected, "{code:?} {status:?}");
        }
    }
}
