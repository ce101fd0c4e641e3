//! The write path: validate a request synchronously, then record the desired state. Nothing
//! here waits for AWS to change; reconcilers do that. Every rejection happens before the
//! store is touched, so a refused request writes nothing.

use std::sync::Arc;

use reconcilers::Hostname;
use reconcilers::cloud::{CloudProvider, ErrorKind};
use reconcilers::config::RegionConfig;
use reconcilers::nginx::MAX_FILE_SHOP_DOMAIN_LEN;
use reconcilers::source::{SourceError, check_source_zip};
use reconcilers::spec::{
    BucketName, RegionName, ShopRecord, ShopSpec, SourceVersion, check_custom_domain,
    check_shop_domain, parse_hostname, source_key,
};

use crate::store::{DeployOutcome, Store, StoreError, now_millis};

/// Why a write was refused or failed, classified for the API boundary.
#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    /// The request itself is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is well formed but the world is not ready for it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    NotFound(String),
    /// A dependency (S3, the database) is busy or briefly unreachable; retrying may work.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for IntentError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(message) | StoreError::FailedPrecondition(message) => {
                IntentError::FailedPrecondition(message)
            }
            StoreError::NotFound(what) => IntentError::NotFound(format!("{what} not found")),
            other => IntentError::Internal(Box::new(other)),
        }
    }
}

/// A deploy request as it arrives, before validation.
#[derive(Clone, Debug, Default)]
pub struct DeployRequest {
    pub shop_domain: String,
    pub region: String,
    pub source_bucket: String,
    pub source_version: Option<String>,
    pub custom_domain: Option<String>,
}

/// The domain rules of a deploy, given the region's allowed parent domains: the shop domain
/// and the optional custom domain parse as hostnames, the shop domain is short enough to name
/// its nginx file and lies under a parent, and the custom domain is the merchant's own. Every
/// name this accepts is safe in an nginx config and a shell word (the fuzz test in
/// `src/nginx/tests.rs` puts 100,000 generated requests through it and `nginx -t`).
pub fn validate_domains(
    shop_domain: &str,
    custom_domain: Option<&str>,
    allowed_parents: &[Hostname],
) -> Result<(Hostname, Option<Hostname>), String> {
    let shop = parse_hostname("shop_domain", shop_domain)?;
    // The shop domain names its nginx file, and a file name holds 255 bytes.
    if shop.as_str().len() > MAX_FILE_SHOP_DOMAIN_LEN {
        return Err(format!(
            "shop_domain is {} characters; a shop domain names files, so the limit is \
             {MAX_FILE_SHOP_DOMAIN_LEN}",
            shop.as_str().len()
        ));
    }
    let custom = custom_domain
        .map(|domain| parse_hostname("custom_domain", domain))
        .transpose()?;
    check_shop_domain(&shop, allowed_parents)?;
    if let Some(custom) = &custom {
        check_custom_domain(custom, &shop, allowed_parents)?;
    }
    Ok((shop, custom))
}

/// Validates and records shop intents.
#[derive(Clone)]
pub struct Intents {
    store: Arc<dyn Store>,
    cloud: Arc<dyn CloudProvider>,
}

impl Intents {
    pub fn new(store: Arc<dyn Store>, cloud: Arc<dyn CloudProvider>) -> Self {
        Self { store, cloud }
    }

    /// Validates a deploy, pins the source version and records the spec.
    pub async fn deploy(&self, request: DeployRequest) -> Result<DeployOutcome, IntentError> {
        let invalid = IntentError::InvalidArgument;
        let region = RegionName::parse(&request.region).map_err(|e| invalid(e.to_string()))?;
        let source_bucket =
            BucketName::parse(&request.source_bucket).map_err(|e| invalid(e.to_string()))?;
        let source_version = non_empty(request.source_version)
            .map(|v| SourceVersion::parse(&v).map_err(|e| invalid(e.to_string())))
            .transpose()?;
        let custom_domain = non_empty(request.custom_domain);
        let config = self.enabled_region(&region).await?;
        let (shop_domain, custom_domain) = validate_domains(
            &request.shop_domain,
            custom_domain.as_deref(),
            &config.allowed_parent_domains,
        )
        .map_err(invalid)?;
        let source_version = self
            .check_source(&region, &source_bucket, &shop_domain, source_version)
            .await?;

        let spec = ShopSpec {
            shop_domain,
            region,
            source_bucket,
            source_version,
            custom_domain,
        };
        Ok(self.store.deploy_shop(&spec, now_millis()).await?)
    }

    /// Asks for one more restart of a shop's processes.
    pub async fn restart(
        &self,
        shop_domain: &str,
        region: &str,
    ) -> Result<ShopRecord, IntentError> {
        let invalid = IntentError::InvalidArgument;
        let shop_domain = parse_hostname("shop_domain", shop_domain).map_err(invalid)?;
        let region = RegionName::parse(region).map_err(|e| invalid(e.to_string()))?;
        let record = self
            .store
            .restart_shop(shop_domain.as_str(), region.as_str(), now_millis())
            .await?;
        Ok(record)
    }

    /// Marks a shop for deletion.
    pub async fn delete(&self, shop_domain: &str) -> Result<ShopRecord, IntentError> {
        let shop_domain =
            parse_hostname("shop_domain", shop_domain).map_err(IntentError::InvalidArgument)?;
        Ok(self
            .store
            .delete_shop(shop_domain.as_str(), now_millis())
            .await?)
    }

    /// Pauses or resumes one shop; true when that changed something.
    pub async fn pause_shop(
        &self,
        shop_domain: &str,
        paused: bool,
        reason: &str,
    ) -> Result<bool, IntentError> {
        let shop_domain =
            parse_hostname("shop_domain", shop_domain).map_err(IntentError::InvalidArgument)?;
        let reason = check_reason(reason)?;
        Ok(self
            .store
            .set_shop_paused(shop_domain.as_str(), paused, reason, now_millis())
            .await?)
    }

    /// Pauses or resumes every shop of a region; true when that changed something.
    pub async fn pause_region(
        &self,
        region: &str,
        paused: bool,
        reason: &str,
    ) -> Result<bool, IntentError> {
        let region =
            RegionName::parse(region).map_err(|e| IntentError::InvalidArgument(e.to_string()))?;
        let reason = check_reason(reason)?;
        Ok(self
            .store
            .set_region_paused(region.as_str(), paused, reason, now_millis())
            .await?)
    }

    async fn enabled_region(&self, region: &RegionName) -> Result<RegionConfig, IntentError> {
        let config = self.store.get_region_config(region.as_str()).await?;
        let config = config.ok_or_else(|| {
            IntentError::FailedPrecondition(format!(
                "region {region} is not configured; an operator must add it with `shopctl region put`"
            ))
        })?;
        if !config.enabled {
            return Err(IntentError::FailedPrecondition(format!(
                "region {region} is disabled and takes no deploys"
            )));
        }
        Ok(config)
    }

    /// Resolves "latest" to an exact version id and checks the zip through ranged reads.
    async fn check_source(
        &self,
        region: &RegionName,
        bucket: &BucketName,
        shop_domain: &Hostname,
        version: Option<SourceVersion>,
    ) -> Result<SourceVersion, IntentError> {
        let storage = self.cloud.object_storage(region.as_str());
        let key = source_key(shop_domain);
        let version = match version {
            Some(version) => version,
            None => {
                let latest = storage
                    .latest_version(bucket.as_str(), &key)
                    .await
                    .map_err(|e| {
                        source_error(SourceError::Cloud {
                            location: format!("s3://{bucket}/{key}"),
                            source: e,
                        })
                    })?;
                let latest = latest.ok_or_else(|| {
                    IntentError::FailedPrecondition(format!(
                        "source s3://{bucket}/{key} does not exist"
                    ))
                })?;
                SourceVersion::parse(&latest).map_err(|e| {
                    IntentError::FailedPrecondition(format!("s3 returned an unusable {e}"))
                })?
            }
        };
        check_source_zip(
            storage.as_ref(),
            bucket.as_str(),
            &key,
            Some(version.as_str()),
        )
        .await
        .map_err(source_error)?;
        Ok(version)
    }
}

/// The longest pause reason: a sentence for people, shown in status and history.
const MAX_REASON_LEN: usize = 500;

fn check_reason(reason: &str) -> Result<&str, IntentError> {
    let reason = reason.trim();
    if reason.chars().count() > MAX_REASON_LEN {
        return Err(IntentError::InvalidArgument(format!(
            "reason is longer than {MAX_REASON_LEN} characters"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(IntentError::InvalidArgument(
            "reason must be one line without control characters".to_owned(),
        ));
    }
    Ok(reason)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn source_error(error: SourceError) -> IntentError {
    match error {
        SourceError::Cloud { location, source } => match source.kind {
            ErrorKind::NotFound => {
                IntentError::FailedPrecondition(format!("source {location} does not exist"))
            }
            ErrorKind::Throttled | ErrorKind::Transient => {
                IntentError::Unavailable(format!("s3 is busy reading source {location}; try again"))
            }
            _ => IntentError::FailedPrecondition(format!(
                "cannot read source {location}: {}",
                source.message
            )),
        },
        other => IntentError::FailedPrecondition(other.to_string()),
    }
}
