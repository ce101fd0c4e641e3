//! AWS SDK adapters: the implementations of the `reconcilers` cloud traits over aws-sdk-rust,
//! plus a small hand-written EC2 Query client (see `aws/ec2.rs` for why). Clients come from
//! the standard credential chain (environment, profile, web identity for IRSA) and are built
//! per region on first use. Every call goes through one wrapper (`aws/calls.rs`) that waits on
//! the operation's client-side rate limit, classifies errors and counts the outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls;
use reconcilers::cloud::limits::Limit;
use reconcilers::cloud::{
    Builds, CallStats, Certificates, CloudProvider, Deployments, Fleet, LoadBalancing,
    ObjectStorage, RunCommand,
};

mod acm;
mod calls;
mod codebuild;
mod codedeploy;
mod ec2;
mod elbv2;
mod error;
mod remote_sim;
mod retry;
mod s3;
mod ssm;

pub use acm::AcmCertificates;
pub use codebuild::CodeBuildBuilds;
pub use codedeploy::CodeDeployDeployments;
pub use ec2::Ec2Client;
pub use elbv2::ElbLoadBalancing;
pub use remote_sim::{BadUrl, RemoteSim};
pub use s3::S3Storage;
pub use ssm::SsmRunCommand;

use calls::Calls;
use ec2::Ec2Settings;

/// How the adapters reach AWS.
#[derive(Clone, Debug, Default)]
pub struct AwsOptions {
    /// An emulator's URL (moto, LocalStack); S3 then uses path-style addressing.
    pub endpoint_url: Option<String>,
    /// Attempts per call, including the first; 1 disables the SDK's retries.
    pub max_attempts: u32,
    /// Client-side rate limits replacing the defaults, by `service:Operation`.
    pub rate_limit_overrides: HashMap<String, Limit>,
}

/// Builds and caches the SDK clients of each region.
pub struct AwsCloud {
    base: SdkConfig,
    options: AwsOptions,
    calls: CallStats,
    regions: Mutex<HashMap<String, Arc<RegionClients>>>,
}

/// The adapters of one region, each built on first use, and the region's rate limits.
struct RegionClients {
    calls: Arc<Calls>,
    storage: OnceLock<Arc<S3Storage>>,
    builds: OnceLock<Arc<CodeBuildBuilds>>,
    deployments: OnceLock<Arc<CodeDeployDeployments>>,
    ec2: OnceLock<Arc<Ec2Client>>,
    run_command: OnceLock<Arc<SsmRunCommand>>,
    load_balancing: OnceLock<Arc<ElbLoadBalancing>>,
    certificates: OnceLock<Arc<AcmCertificates>>,
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
            calls: CallStats::default(),
            regions: Mutex::new(HashMap::new()),
        }
    }

    /// The EC2 Query client of a region, for calls beyond [`Fleet`] (tests arrange VPCs and
    /// instances with it).
    pub fn ec2(&self, region: &str) -> Arc<Ec2Client> {
        let clients = self.region(region);
        let ec2 = clients.ec2.get_or_init(|| {
            let settings = Ec2Settings {
                region: region.to_owned(),
                endpoint: self
                    .options
                    .endpoint_url
                    .clone()
                    .unwrap_or_else(|| ec2::endpoint_of(region)),
                credentials: self.base.credentials_provider(),
                max_attempts: self.options.max_attempts,
            };
            Arc::new(Ec2Client::new(settings, clients.calls.clone()))
        });
        ec2.clone()
    }

    fn s3(&self, region: &str) -> Arc<S3Storage> {
        let clients = self.region(region);
        let storage = clients.storage.get_or_init(|| {
            let config = aws_sdk_s3::config::Builder::from(&self.base)
                .region(Region::new(region.to_owned()))
                .retry_classifier(retry::QuotaIsFinal)
                .interceptor(retry::FenceDeadline)
                .force_path_style(self.options.endpoint_url.is_some())
                .build();
            let client = aws_sdk_s3::Client::from_conf(config);
            Arc::new(S3Storage::new(client, clients.calls.clone()))
        });
        storage.clone()
    }

    /// The clients of a region; the first caller creates the region's rate limits.
    fn region(&self, region: &str) -> Arc<RegionClients> {
        let mut regions = self
            .regions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        regions
            .entry(region.to_owned())
            .or_insert_with(|| {
                let overrides = self.options.rate_limit_overrides.clone();
                Arc::new(RegionClients {
                    calls: Arc::new(Calls::new(overrides, self.calls.clone())),
                    storage: OnceLock::new(),
                    builds: OnceLock::new(),
                    deployments: OnceLock::new(),
                    ec2: OnceLock::new(),
                    run_command: OnceLock::new(),
                    load_balancing: OnceLock::new(),
                    certificates: OnceLock::new(),
                })
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

/// Milliseconds since the Unix epoch; 0 for a time too far out to count in them.
pub(crate) fn epoch_millis(time: &aws_smithy_types::DateTime) -> i64 {
    time.to_millis().unwrap_or(0)
}

impl CloudProvider for AwsCloud {
    fn object_storage(&self, region: &str) -> Arc<dyn ObjectStorage> {
        self.s3(region)
    }

    /// The CodeBuild adapter of a region.
    fn builds(&self, region: &str) -> Arc<dyn Builds> {
        let clients = self.region(region);
        let builds = clients.builds.get_or_init(|| {
            let config = aws_sdk_codebuild::config::Builder::from(&self.base)
                .region(Region::new(region.to_owned()))
                .retry_classifier(retry::QuotaIsFinal)
                .interceptor(retry::FenceDeadline)
                .build();
            let client = aws_sdk_codebuild::Client::from_conf(config);
            Arc::new(CodeBuildBuilds::new(client, clients.calls.clone()))
        });
        builds.clone()
    }

    /// The CodeDeploy adapter of a region.
    fn deployments(&self, region: &str) -> Arc<dyn Deployments> {
        let clients = self.region(region);
        let deployments = clients.deployments.get_or_init(|| {
            let config = aws_sdk_codedeploy::config::Builder::from(&self.base)
                .region(Region::new(region.to_owned()))
                .retry_classifier(retry::QuotaIsFinal)
                .interceptor(retry::FenceDeadline)
                .build();
            let client = aws_sdk_codedeploy::Client::from_conf(config);
            Arc::new(CodeDeployDeployments::new(client, clients.calls.clone()))
        });
        deployments.clone()
    }

    /// The fleet of a region, over the EC2 Query client.
    fn fleet(&self, region: &str) -> Arc<dyn Fleet> {
        self.ec2(region)
    }

    /// The SSM Run Command adapter of a region.
    fn run_command(&self, region: &str) -> Arc<dyn RunCommand> {
        let clients = self.region(region);
        let run_command = clients.run_command.get_or_init(|| {
            let config = aws_sdk_ssm::config::Builder::from(&self.base)
                .region(Region::new(region.to_owned()))
                .retry_classifier(retry::QuotaIsFinal)
                .interceptor(retry::FenceDeadline)
                .build();
            let client = aws_sdk_ssm::Client::from_conf(config);
            Arc::new(SsmRunCommand::new(client, clients.calls.clone()))
        });
        run_command.clone()
    }

    /// The Elastic Load Balancing v2 adapter of a region.
    fn load_balancing(&self, region: &str) -> Arc<dyn LoadBalancing> {
        let clients = self.region(region);
        let load_balancing = clients.load_balancing.get_or_init(|| {
            let config = aws_sdk_elasticloadbalancingv2::config::Builder::from(&self.base)
                .region(Region::new(region.to_owned()))
                .retry_classifier(retry::QuotaIsFinal)
                .interceptor(retry::FenceDeadline)
                .build();
            let client = aws_sdk_elasticloadbalancingv2::Client::from_conf(config);
            Arc::new(ElbLoadBalancing::new(client, clients.calls.clone()))
        });
        load_balancing.clone()
    }

    /// The ACM adapter of a region.
    fn certificates(&self, region: &str) -> Arc<dyn Certificates> {
        let clients = self.region(region);
        let certificates = clients.certificates.get_or_init(|| {
            let config = aws_sdk_acm::config::Builder::from(&self.base)
                .region(Region::new(region.to_owned()))
                .retry_classifier(retry::QuotaIsFinal)
                .interceptor(retry::FenceDeadline)
                .build();
            let client = aws_sdk_acm::Client::from_conf(config);
            Arc::new(AcmCertificates::new(client, clients.calls.clone()))
        });
        certificates.clone()
    }

    /// Calls made through every adapter, by service, operation and outcome.
    fn calls(&self) -> CallStats {
        self.calls.clone()
    }
}
