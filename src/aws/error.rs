//! Classifies AWS errors into the bounded [`ErrorKind`] the reconcilers act on: SDK errors of
//! every service, and the error codes the hand-written EC2 Query client reads from XML.

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

/// Codes that mean "not found" without saying so in their name.
const NOT_FOUND_CODES: &[&str] = &["InvalidCommandId"];

/// Codes that mean "already exists" without saying so in their name.
const ALREADY_EXISTS_CODES: &[&str] = &["PriorityInUse"];

/// Codes that mean the request cannot succeed as it is, whatever their name says.
const INVALID_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "ResourceInUse",
    "ResourceInUseException",
    "OperationNotPermitted",
    "IncompatibleProtocols",
];

/// Maps an error code to a quota, for the codes that mean "a quota is full". ACM's and
/// CodeDeploy's generic `LimitExceededException` name their service's main quota.
fn quota_of(service: &str, code: &str) -> Option<Quota> {
    Some(match code {
        "TooManyListeners" => Quota::ListenersPerLoadBalancer,
        "TooManyTargetGroups" => Quota::TargetGroups,
        "TooManyCertificates" => Quota::CertificatesPerListener,
        "DeploymentLimitExceededException" | "DeploymentLimitExceeded" => {
            Quota::ConcurrentDeployments
        }
        "LimitExceededException" | "LimitExceeded" if service == "acm" => Quota::Certificates,
        "LimitExceededException"
        | "LimitExceeded"
        | "AccountLimitExceededException"
        | "AccountLimitExceeded" => Quota::Other(code.to_owned()),
        // TooManyTargets, TooManyLoadBalancers, TooManyTags, TooManyRules and their kin.
        code if code.starts_with("TooMany") => Quota::Other(code.to_owned()),
        _ => return None,
    })
}

/// Classifies an error code of an operation (`service:Operation`), falling back to the HTTP
/// status when there is no code or the code says nothing we know.
pub(crate) fn kind_of(operation: &str, code: Option<&str>, http_status: Option<u16>) -> ErrorKind {
    if let Some(kind) = code.and_then(|code| kind_of_code(operation, code)) {
        return kind;
    }
    match http_status {
        Some(404) => ErrorKind::NotFound,
        Some(429) => ErrorKind::Throttled,
        Some(416) => ErrorKind::Invalid,
        Some(status) if status >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Other,
    }
}

fn kind_of_code(operation: &str, code: &str) -> Option<ErrorKind> {
    let service = operation.split_once(':').map_or("", |(service, _)| service);
    if THROTTLING_CODES.contains(&code) {
        return Some(ErrorKind::Throttled);
    }
    if let Some(quota) = quota_of(service, code) {
        return Some(ErrorKind::QuotaExceeded(quota));
    }
    // EC2 writes `InvalidInstanceID.NotFound`, CodeDeploy `DeploymentDoesNotExistException`.
    if NOT_FOUND_CODES.contains(&code)
        || code.starts_with("NoSuch")
        || code.ends_with("NotFound")
        || code.ends_with("NotFoundException")
        || code.ends_with("DoesNotExistException")
    {
        return Some(ErrorKind::NotFound);
    }
    if ALREADY_EXISTS_CODES.contains(&code)
        || code.starts_with("Duplicate")
        || code.ends_with("AlreadyExists")
        || code.ends_with("AlreadyExistsException")
    {
        return Some(ErrorKind::AlreadyExists);
    }
    if INVALID_CODES.contains(&code)
        || code.starts_with("Invalid")
        || code.starts_with("Validation")
    {
        return Some(ErrorKind::Invalid);
    }
    None
}

/// Converts any SDK error of an operation.
pub(crate) fn cloud_error<E, R>(operation: &'static str, error: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    let kind = match &error {
        SdkError::ServiceError(service) => kind_of(
            operation,
            service.err().code(),
            Some(service.raw().http_status()),
        ),
        // An unparseable response (moto answers what it does not implement with a 500 and an
        // HTML page) is worth another try unless it clearly said "not found".
        SdkError::ResponseError(response) => {
            match kind_of(operation, None, Some(response.raw().http_status())) {
                ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Transient,
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => ErrorKind::Transient,
        _ => ErrorKind::Other,
    };
    // Without a message, say what we know in one line: the raw response (an emulator's HTML
    // page, say) belongs in a debug log, not in a status a person reads.
    let message = match (&error, error.message()) {
        (_, Some(message)) => message.to_owned(),
        (SdkError::ServiceError(service), None) => match service.err().code() {
            Some(code) => code.to_owned(),
            None => format!(
                "unparseable response, http status {}",
                service.raw().http_status()
            ),
        },
        (SdkError::ResponseError(response), None) => {
            format!(
                "unparseable response, http status {}",
                response.raw().http_status()
            )
        }
        (_, None) => aws_smithy_types::error::display::DisplayErrorContext(&error).to_string(),
    };
    CloudError::new(kind, operation, message)
}

/// The error code of an SDK error, when the service sent one.
pub(crate) fn code_of<E, R>(error: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
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
        let quota = ErrorKind::QuotaExceeded;
        let other = |code: &str| ErrorKind::QuotaExceeded(Quota::Other(code.to_owned()));
        let cases = [
            ("s3:GetObject", Some("SlowDown"), None, ErrorKind::Throttled),
            (
                "ec2:DescribeInstances",
                Some("RequestLimitExceeded"),
                Some(503),
                ErrorKind::Throttled,
            ),
            ("x:Y", Some("Throttling"), Some(400), ErrorKind::Throttled),
            (
                "x:Y",
                Some("TooManyRequestsException"),
                Some(400),
                ErrorKind::Throttled,
            ),
            (
                "elasticloadbalancing:CreateListener",
                Some("TooManyListeners"),
                Some(400),
                quota(Quota::ListenersPerLoadBalancer),
            ),
            (
                "x:Y",
                Some("TooManyTargetGroups"),
                None,
                quota(Quota::TargetGroups),
            ),
            (
                "x:Y",
                Some("TooManyCertificates"),
                None,
                quota(Quota::CertificatesPerListener),
            ),
            ("x:Y", Some("TooManyTargets"), None, other("TooManyTargets")),
            (
                "codedeploy:CreateDeployment",
                Some("DeploymentLimitExceededException"),
                None,
                quota(Quota::ConcurrentDeployments),
            ),
            (
                "x:Y",
                Some("DeploymentLimitExceeded"),
                None,
                quota(Quota::ConcurrentDeployments),
            ),
            (
                "acm:ImportCertificate",
                Some("LimitExceededException"),
                Some(400),
                quota(Quota::Certificates),
            ),
            (
                "ssm:SendCommand",
                Some("LimitExceeded"),
                None,
                other("LimitExceeded"),
            ),
            (
                "codebuild:StartBuild",
                Some("AccountLimitExceededException"),
                None,
                other("AccountLimitExceededException"),
            ),
            (
                "x:Y",
                Some("AccountLimitExceeded"),
                None,
                other("AccountLimitExceeded"),
            ),
            (
                "s3:GetObject",
                Some("NoSuchKey"),
                Some(404),
                ErrorKind::NotFound,
            ),
            (
                "x:Y",
                Some("TargetGroupNotFound"),
                Some(400),
                ErrorKind::NotFound,
            ),
            (
                "x:Y",
                Some("ResourceNotFoundException"),
                Some(400),
                ErrorKind::NotFound,
            ),
            (
                "x:Y",
                Some("InvalidInstanceID.NotFound"),
                Some(400),
                ErrorKind::NotFound,
            ),
            (
                "x:Y",
                Some("DeploymentDoesNotExistException"),
                Some(400),
                ErrorKind::NotFound,
            ),
            (
                "ssm:ListCommandInvocations",
                Some("InvalidCommandId"),
                None,
                ErrorKind::NotFound,
            ),
            (
                "x:Y",
                Some("DuplicateTargetGroupName"),
                Some(400),
                ErrorKind::AlreadyExists,
            ),
            (
                "x:Y",
                Some("DuplicateListener"),
                Some(400),
                ErrorKind::AlreadyExists,
            ),
            (
                "x:Y",
                Some("DuplicateLoadBalancerName"),
                Some(400),
                ErrorKind::AlreadyExists,
            ),
            (
                "x:Y",
                Some("ResourceAlreadyExistsException"),
                None,
                ErrorKind::AlreadyExists,
            ),
            ("x:Y", Some("ResourceInUse"), Some(400), ErrorKind::Invalid),
            (
                "acm:DeleteCertificate",
                Some("ResourceInUseException"),
                None,
                ErrorKind::Invalid,
            ),
            ("x:Y", Some("InvalidRange"), Some(416), ErrorKind::Invalid),
            (
                "x:Y",
                Some("ValidationError"),
                Some(400),
                ErrorKind::Invalid,
            ),
            ("x:Y", None, Some(404), ErrorKind::NotFound),
            ("x:Y", None, Some(503), ErrorKind::Transient),
            ("x:Y", None, Some(500), ErrorKind::Transient),
            (
                "x:Y",
                Some("InternalFailure"),
                Some(500),
                ErrorKind::Transient,
            ),
            ("x:Y", Some("Weird"), Some(400), ErrorKind::Other),
            ("x:Y", None, None, ErrorKind::Other),
        ];
        for (operation, code, status, expected) in cases {
            assert_eq!(
                kind_of(operation, code, status),
                expected,
                "{operation} {code:?} {status:?}"
            );
        }
    }
}
