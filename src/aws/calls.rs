//! The one wrapper every AWS call goes through: wait for a token of the operation's client-side
//! rate limit, make the call, classify its error and count the outcome. Adapters only build
//! requests and convert responses.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use reconcilers::cloud::CallStats;
use reconcilers::cloud::CloudError;
use reconcilers::cloud::limits::{Limit, RateLimits};
use tracing::debug;

use super::error::{HttpStatus, cloud_error};

/// The rate limits of one region and the call counts of the whole controller.
#[derive(Debug)]
pub(crate) struct Calls {
    limits: Mutex<RateLimits>,
    stats: CallStats,
}

impl Calls {
    pub(crate) fn new(overrides: HashMap<String, Limit>, stats: CallStats) -> Self {
        Self {
            limits: Mutex::new(RateLimits::with_overrides(overrides)),
            stats,
        }
    }

    /// Runs one call of `operation` (`service:Operation`): takes exactly one token of its
    /// bucket, waiting for it when the bucket is in debt, then records the outcome. `call` is
    /// a future that has not started yet (SDK `send()` futures do nothing until polled).
    pub(crate) async fn run<T, E>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, CloudError>
    where
        E: IntoCloudError,
    {
        let wait = self.reserve(operation);
        if !wait.is_zero() {
            debug!(
                operation,
                wait_ms = wait.as_millis(),
                "waiting for rate limit"
            );
            tokio::time::sleep(wait).await;
        }
        let result = call
            .await
            .map_err(|error| error.into_cloud_error(operation));
        self.stats.observe(operation, &result);
        if let Err(error) = &result {
            debug!(operation, kind = error.kind.as_str(), error = %error.message, "aws call failed");
        }
        result
    }

    fn reserve(&self, operation: &str) -> Duration {
        let mut limits = self
            .limits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        limits.reserve(operation, Instant::now())
    }
}

/// Reads every page of a listing: `page` fetches the page of a token (the first when `None`)
/// and returns its items and the next token. An empty token ends the listing too, as some
/// services (and emulators) send `""` on the last page.
pub(crate) async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>, CloudError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<String>), CloudError>>,
{
    let mut items = Vec::new();
    let mut token = None;
    loop {
        let (page_items, next) = page(token).await?;
        items.extend(page_items);
        token = next.filter(|next| !next.is_empty());
        if token.is_none() {
            return Ok(items);
        }
    }
}

/// An error a call can end with, classified for the reconcilers.
pub(crate) trait IntoCloudError {
    fn into_cloud_error(self, operation: &'static str) -> CloudError;
}

impl IntoCloudError for CloudError {
    fn into_cloud_error(self, _operation: &'static str) -> CloudError {
        self
    }
}

impl<E, R> IntoCloudError for SdkError<E, R>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    fn into_cloud_error(self, operation: &'static str) -> CloudError {
        cloud_error(operation, self)
    }
}

#[cfg(test)]
mod tests {
    use reconcilers::cloud::ErrorKind;

    use super::*;

    #[tokio::test]
    async fn each_call_takes_one_token_and_is_counted() {
        let overrides = HashMap::from([("acm:ImportCertificate".to_owned(), Limit::new(20.0, 1))]);
        let calls = Calls::new(overrides, CallStats::default());
        let started = Instant::now();

        for _ in 0..3 {
            let ok: Result<(), CloudError> = Ok(());
            calls
                .run("acm:ImportCertificate", async { ok })
                .await
                .expect("ok");
        }
        let failed: Result<(), CloudError> = Err(CloudError::new(
            ErrorKind::Throttled,
            "acm:ListCertificates",
            "slow down",
        ));
        let error = calls.run("acm:ListCertificates", async { failed }).await;

        assert_eq!(error.map_err(|e| e.kind), Err(ErrorKind::Throttled));
        assert!(started.elapsed() >= Duration::from_millis(95));
        assert_eq!(calls.stats.count("acm:ImportCertificate"), 3);
        let snapshot = calls.stats.snapshot();
        let throttled = (
            "acm".to_owned(),
            "ListCertificates".to_owned(),
            "throttled".to_owned(),
        );
        assert!(snapshot.contains(&(throttled, 1)));
    }

    #[tokio::test]
    async fn pages_are_read_until_the_token_runs_out() {
        let pages = HashMap::from([
            (None, (vec![1, 2], Some("a".to_owned()))),
            (Some("a".to_owned()), (vec![3], Some("b".to_owned()))),
            (Some("b".to_owned()), (vec![4], Some(String::new()))),
        ]);
        let items = all_pages(|token| {
            let page = pages.get(&token).cloned().ok_or_else(|| {
                CloudError::new(ErrorKind::Invalid, "x:List", format!("bad token {token:?}"))
            });
            async move { page }
        })
        .await;
        assert_eq!(items, Ok(vec![1, 2, 3, 4]));
    }
}
