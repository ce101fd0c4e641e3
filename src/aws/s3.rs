//! [`ObjectStorage`] over S3: HEAD, ListObjectVersions and ranged GETs of source zips.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use reconcilers::cloud::{CloudError, ErrorKind, ObjectHead, ObjectStorage};

use super::calls::Calls;

/// The S3 client of one region.
pub struct S3Storage {
    client: aws_sdk_s3::Client,
    calls: Arc<Calls>,
}

impl S3Storage {
    pub(crate) fn new(client: aws_sdk_s3::Client, calls: Arc<Calls>) -> Self {
        Self { client, calls }
    }
}

/// S3 reports objects written before versioning was enabled without a version id; their id is
/// the literal `null`.
fn version_or_null(version: Option<&str>) -> String {
    version.unwrap_or("null").to_owned()
}

#[async_trait]
impl ObjectStorage for S3Storage {
    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectHead, CloudError> {
        let call = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .send();
        let output = self.calls.run("s3:HeadObject", call).await?;
        Ok(ObjectHead {
            size: u64::try_from(output.content_length().unwrap_or(0)).unwrap_or(0),
            version_id: version_or_null(output.version_id().or(version)),
        })
    }

    async fn latest_version(&self, bucket: &str, key: &str) -> Result<Option<String>, CloudError> {
        let mut key_marker = None;
        let mut version_marker = None;
        loop {
            let call = self
                .client
                .list_object_versions()
                .bucket(bucket)
                .prefix(key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send();
            let page = self.calls.run("s3:ListObjectVersions", call).await?;
            // A delete marker on top means the key has no live version.
            let deleted = page
                .delete_markers()
                .iter()
                .any(|marker| marker.key() == Some(key) && marker.is_latest() == Some(true));
            if deleted {
                return Ok(None);
            }
            let latest = page
                .versions()
                .iter()
                .find(|v| v.key() == Some(key) && v.is_latest() == Some(true));
            if let Some(latest) = latest {
                return Ok(Some(version_or_null(latest.version_id())));
            }
            // Keys sort in order: once the page has moved past ours, it has no version.
            let past = page
                .versions()
                .iter()
                .any(|v| v.key().is_some_and(|k| k > key));
            if past || page.is_truncated() != Some(true) {
                return Ok(None);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
        }
    }

    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
        start: u64,
        len: u64,
    ) -> Result<Bytes, CloudError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let end = start.saturating_add(len) - 1;
        let call = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .version_id(version)
            .range(format!("bytes={start}-{end}"))
            .send();
        let output = self.calls.run("s3:GetObject", call).await?;
        let body = output.body.collect().await.map_err(|e| {
            CloudError::new(
                ErrorKind::Transient,
                "s3:GetObject",
                format!("read body: {e}"),
            )
        })?;
        Ok(body.into_bytes())
    }
}
