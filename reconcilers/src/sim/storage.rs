//! S3 in the simulated account: versioned buckets of objects. Tests seed sources with
//! [`SimulatedAws::put_object`]; successful builds write their artifacts here too.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;

use crate::cloud::{CloudError, ErrorKind, ObjectHead, ObjectStorage};

use super::{SimulatedAws, State, error};

#[derive(Default)]
struct Object {
    /// Oldest first; the last one is current.
    versions: Vec<(String, Bytes)>,
}

#[derive(Default)]
pub(crate) struct Storage {
    buckets: BTreeMap<String, BTreeMap<String, Object>>,
    next_version: u64,
}

impl Storage {
    pub(crate) fn bucket_exists(&self, bucket: &str) -> bool {
        self.buckets.contains_key(bucket)
    }

    /// Writes a new version, creating the bucket if needed, and returns its version id.
    pub(crate) fn put(&mut self, bucket: &str, key: &str, data: Bytes) -> String {
        self.next_version += 1;
        let version = format!("v{:016x}", self.next_version);
        let object = self
            .buckets
            .entry(bucket.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_default();
        object.versions.push((version.clone(), data));
        version
    }

    /// One version of an object (the current one without `version`).
    pub(crate) fn get(&self, bucket: &str, key: &str, version: Option<&str>) -> Option<&Bytes> {
        self.find(bucket, key, version).map(|(_, data)| data)
    }

    fn find(&self, bucket: &str, key: &str, version: Option<&str>) -> Option<&(String, Bytes)> {
        let object = self.buckets.get(bucket)?.get(key)?;
        match version {
            Some(wanted) => object.versions.iter().find(|(id, _)| id == wanted),
            None => object.versions.last(),
        }
    }

    /// Like [`Storage::find`], with S3's errors.
    fn lookup(
        &self,
        operation: &'static str,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<&(String, Bytes), CloudError> {
        if !self.bucket_exists(bucket) {
            let message = format!("no such bucket {bucket}");
            return Err(error(
                ErrorKind::NotFound,
                operation,
                "NoSuchBucket",
                message,
            ));
        }
        self.find(bucket, key, version).ok_or_else(|| {
            error(
                ErrorKind::NotFound,
                operation,
                "NoSuchKey",
                format!("no such key {key}"),
            )
        })
    }
}

/// Test controls for S3.
impl SimulatedAws {
    /// Creates a versioned bucket; an existing bucket is left as it is.
    pub fn create_bucket(&self, bucket: &str) {
        self.state()
            .storage
            .buckets
            .entry(bucket.to_owned())
            .or_default();
    }

    /// Writes a new version of an object (creating the bucket) and returns its version id.
    pub fn put_object(&self, bucket: &str, key: &str, data: impl Into<Bytes>) -> String {
        self.state().storage.put(bucket, key, data.into())
    }

    /// The current bytes of an object, if any (no call is counted).
    pub fn object(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.state().storage.get(bucket, key, None).cloned()
    }
}

#[async_trait]
impl ObjectStorage for SimulatedAws {
    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectHead, CloudError> {
        const OPERATION: &str = "s3:HeadObject";
        self.call(OPERATION, |state: &mut State| {
            let (id, data) = state.storage.lookup(OPERATION, bucket, key, version)?;
            Ok(ObjectHead {
                size: data.len() as u64,
                version_id: id.clone(),
            })
        })
        .await
    }

    async fn latest_version(&self, bucket: &str, key: &str) -> Result<Option<String>, CloudError> {
        const OPERATION: &str = "s3:ListObjectVersions";
        self.call(OPERATION, |state: &mut State| {
            match state.storage.lookup(OPERATION, bucket, key, None) {
                Ok((id, _)) => Ok(Some(id.clone())),
                Err(_) if state.storage.bucket_exists(bucket) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
        start: u64,
        len: u64,
    ) -> Result<Bytes, CloudError> {
        const OPERATION: &str = "s3:GetObject";
        self.call(OPERATION, |state: &mut State| {
            let (_, data) = state
                .storage
                .lookup(OPERATION, bucket, key, Some(version))?;
            let size = data.len() as u64;
            if start >= size {
                return Err(error(
                    ErrorKind::Invalid,
                    OPERATION,
                    "InvalidRange",
                    "the requested range is not satisfiable",
                ));
            }
            Ok(data.slice(start as usize..start.saturating_add(len).min(size) as usize))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimConfig;

    fn aws() -> SimulatedAws {
        SimulatedAws::with_config(SimConfig::manual())
    }

    #[tokio::test]
    async fn versions_are_kept_and_the_newest_is_current() {
        let aws = aws();
        aws.create_bucket("src");
        let first = aws.put_object("src", "a.zip", &b"one"[..]);
        let second = aws.put_object("src", "a.zip", &b"second"[..]);

        assert_eq!(
            aws.latest_version("src", "a.zip").await,
            Ok(Some(second.clone()))
        );
        let head = aws
            .head_object("src", "a.zip", Some(&first))
            .await
            .expect("exists");
        assert_eq!(head.size, 3);
        let bytes = aws
            .get_range("src", "a.zip", &second, 2, 100)
            .await
            .expect("in range");
        assert_eq!(&bytes[..], b"cond");
        assert_eq!(aws.call_count("s3:GetObject"), 1);
    }

    #[tokio::test]
    async fn missing_things_are_not_found() {
        let aws = aws();
        aws.create_bucket("src");
        let error = aws
            .head_object("nope", "a.zip", None)
            .await
            .expect_err("no bucket");
        assert_eq!(error.kind, ErrorKind::NotFound);
        assert_eq!(aws.latest_version("src", "a.zip").await, Ok(None));
        let error = aws
            .latest_version("nope", "a.zip")
            .await
            .expect_err("no bucket");
        assert_eq!(error.kind, ErrorKind::NotFound);
        let version = aws.put_object("src", "a.zip", &b"x"[..]);
        let error = aws
            .get_range("src", "a.zip", &version, 5, 1)
            .await
            .expect_err("past end");
        assert_eq!(error.kind, ErrorKind::Invalid);
    }
}
