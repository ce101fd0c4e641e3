//! Read access to source objects: the shop zips in S3.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::CloudError;

/// Metadata of one object version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHead {
    pub size: u64,
    /// `null` for objects written while the bucket was unversioned.
    pub version_id: String,
}

/// Read access to source objects in S3.
#[async_trait]
pub trait ObjectStorage: Send + Sync {
    /// Size and version of `key`, at `version` when given, else the current version.
    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectHead, CloudError>;

    /// The newest version id of exactly `key`, `None` when the key has no live version.
    async fn latest_version(&self, bucket: &str, key: &str) -> Result<Option<String>, CloudError>;

    /// Bytes `start..start + len` of one object version (fewer at the end of the object).
    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
        start: u64,
        len: u64,
    ) -> Result<Bytes, CloudError>;
}
