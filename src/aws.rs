//! AWS SDK adapters: the implementations of the `reconcilers` cloud traits over aws-sdk-rust.
//! Clients come from the standard credential chain (environment, profile, web identity for
//! IRSA) and are built per region on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls;
use reconcilers::cloud::{CloudProvider, ObjectStorage};

mod error;
mod s3;

pub use s3::S3Storage;

/// How the adapters reach AWS.
#[derive(Clone, Debug, Default)]
pub struct AwsOptions {
    /// An emulator's URL (moto, LocalStack); S3 then uses path-style addressing.
    pub endpoint_url: Option<String>,
    /// Attempts per call, including the first; 1 disables the SDK's retries.
    pub max_attempts: u32,
}

/// Builds and caches the SDK clients of each region.
pub struct AwsCloud {
    base: SdkConfig,
    options: AwsOptions,
    storages: Mutex<HashMap<String, Arc<S3Storage>>>,
}

impl AwsCloud {
    /// Loads the shared SDK configuration (credentials are resolved lazily, on first call).
    pub async fn load(options: AwsOptions) -> Self {
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(options.max_attempts.max(1))
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(5));
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(20))
            .operation_timeout(Duration::from_secs(60))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client())
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let base = loader.load().await;
        Self {
            base,
            options,
            storages: Mutex::new(HashMap::new()),
        }
    }

    fn s3(&self, region: &str) -> Arc<S3Storage> {
        let mut storages = self
            .storages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        storages
            .entry(region.to_owned())
            .or_insert_with(|| {
                let config = aws_sdk_s3::config::Builder::from(&self.base)
                    .region(Region::new(region.to_owned()))
                    .force_path_style(self.options.endpoint_url.is_some())
                    .build();
                Arc::new(S3Storage::new(aws_sdk_s3::Client::from_conf(config)))
            })
            .clone()
    }
}

/// The HTTP client of every SDK client: rustls with ring, the same TLS stack tonic uses, so
/// the build carries one crypto library.
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

impl CloudProvider for AwsCloud {
    fn object_storage(&self, region: &str) -> Arc<dyn ObjectStorage> {
        self.s3(region)
    }
}
