//! The simulated AWS: an in-memory implementation of the cloud traits that keeps real state
//! (versioned objects for now) and counts calls. It is the engine of `shop-controller dev` and
//! the double for reconciler tests, so it answers like AWS does, errors included.
//!
//! TODO(#3): the remaining capabilities (builds, deployments, fleet, run command, load
//! balancing, certificates), quotas, token-bucket throttles and fault injection.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::cloud::{CloudError, CloudProvider, ErrorKind, ObjectHead, ObjectStorage};

#[derive(Default)]
struct Object {
    /// Oldest first; the last one is current.
    versions: Vec<(String, Bytes)>,
}

#[derive(Default)]
struct State {
    buckets: BTreeMap<String, BTreeMap<String, Object>>,
    next_version: u64,
    calls: HashMap<&'static str, u64>,
}

/// The simulated AWS account.
#[derive(Default)]
pub struct SimulatedAws {
    state: Mutex<State>,
}

impl SimulatedAws {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data behind: every mutation below
        // is a single insert or push.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a versioned bucket; an existing bucket is left as it is.
    pub fn create_bucket(&self, bucket: &str) {
        self.state().buckets.entry(bucket.to_owned()).or_default();
    }

    /// Writes a new version of an object and returns its version id.
    pub fn put_object(&self, bucket: &str, key: &str, data: impl Into<Bytes>) -> String {
        let mut state = self.state();
        state.next_version += 1;
        let version = format!("v{:016x}", state.next_version);
        let object = state
            .buckets
            .entry(bucket.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_default();
        object.versions.push((version.clone(), data.into()));
        version
    }

    /// How many times each operation was called.
    pub fn calls(&self) -> HashMap<&'static str, u64> {
        self.state().calls.clone()
    }

    fn read<T>(
        &self,
        operation: &'static str,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        read: impl FnOnce(&str, &Bytes) -> T,
    ) -> Result<T, CloudError> {
        let mut state = self.state();
        *state.calls.entry(operation).or_default() += 1;
        let objects = state.buckets.get(bucket).ok_or_else(|| {
            CloudError::new(
                ErrorKind::NotFound,
                operation,
                format!("no such bucket {bucket}"),
            )
        })?;
        let found = objects.get(key).and_then(|object| match version {
            Some(v) => object.versions.iter().find(|(id, _)| id == v),
            None => object.versions.last(),
        });
        let (id, data) = found.ok_or_else(|| {
            CloudError::new(ErrorKind::NotFound, operation, format!("no such key {key}"))
        })?;
        Ok(read(id, data))
    }
}

/// One simulated account serves every region.
impl CloudProvider for Arc<SimulatedAws> {
    fn object_storage(&self, _region: &str) -> Arc<dyn ObjectStorage> {
        self.clone()
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
        self.read("s3:HeadObject", bucket, key, version, |id, data| {
            ObjectHead {
                size: data.len() as u64,
                version_id: id.to_owned(),
            }
        })
    }

    async fn latest_version(&self, bucket: &str, key: &str) -> Result<Option<String>, CloudError> {
        match self.read("s3:ListObjectVersions", bucket, key, None, |id, _| {
            id.to_owned()
        }) {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.message.starts_with("no such key") => Ok(None),
            Err(e) => Err(e),
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
        let range = self.read("s3:GetObject", bucket, key, Some(version), |_, data| {
            let size = data.len() as u64;
            (start < size)
                .then(|| data.slice(start as usize..start.saturating_add(len).min(size) as usize))
        })?;
        range.ok_or_else(|| {
            CloudError::new(
                ErrorKind::Invalid,
                "s3:GetObject",
                "the requested range is not satisfiable",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn versions_are_kept_and_the_newest_is_current() {
        let aws = SimulatedAws::new();
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
        assert_eq!(aws.calls().get("s3:GetObject"), Some(&1));
    }

    #[tokio::test]
    async fn missing_things_are_not_found() {
        let aws = SimulatedAws::new();
        aws.create_bucket("src");
        let error = aws
            .head_object("nope", "a.zip", None)
            .await
            .expect_err("no bucket");
        assert_eq!(error.kind, ErrorKind::NotFound);
        assert_eq!(aws.latest_version("src", "a.zip").await, Ok(None));
        let version = aws.put_object("src", "a.zip", &b"x"[..]);
        let error = aws
            .get_range("src", "a.zip", &version, 5, 1)
            .await
            .expect_err("past end");
        assert_eq!(error.kind, ErrorKind::Invalid);
    }
}
