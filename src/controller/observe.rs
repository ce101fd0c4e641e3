//! Observation in bulk: the listings every shop of a region needs (its target groups with their
//! tags, each NLB's listeners with theirs, the load balancers, each group's running instances)
//! are read once and shared by every reconcile for a short while, instead of once per shop. A
//! resync of N shops then costs a few pages per region and NLB, plus what has no bulk form in
//! AWS (each target group's target health).
//!
//! A listing is fresh for [`Observations::ttl`] (below the resync period, so every resync sees
//! the world as it is at most that old) and is dropped as soon as this replica changes the
//! region, so a reconcile never acts on a listing older than its own last change. Tags change
//! rarely and only by our hand or an operator's: they are read in batches and kept for a full
//! resync period.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reconcilers::cloud::{
    CloudError, Instance, KnownTags, Listener, LoadBalancer, LoadBalancing, Tag, TargetGroup,
};
use reconcilers::names::TARGET_GROUP_PREFIX;
use tokio::time::Instant;

/// ELBv2 `DescribeTags` takes at most 20 ARNs.
const TAGS_PER_CALL: usize = 20;

/// A listing and the tags of what it lists.
#[derive(Debug, Default)]
pub(super) struct Listing<T> {
    pub(super) items: Vec<T>,
    pub(super) tags: KnownTags,
}

struct Fresh<T> {
    value: T,
    at: Instant,
}

/// Values by key, each fetched by one caller at a time while the others wait for it.
struct Slot<V> {
    entries: tokio::sync::Mutex<HashMap<String, Fresh<V>>>,
}

impl<V: Clone> Slot<V> {
    fn new() -> Self {
        Self {
            entries: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn get<F>(&self, key: &str, ttl: Duration, fetch: F) -> Result<V, CloudError>
    where
        F: Future<Output = Result<V, CloudError>>,
    {
        let mut entries = self.entries.lock().await;
        if let Some(fresh) = entries.get(key)
            && fresh.at.elapsed() < ttl
        {
            return Ok(fresh.value.clone());
        }
        let value = fetch.await?;
        entries.insert(
            key.to_owned(),
            Fresh {
                value: value.clone(),
                at: Instant::now(),
            },
        );
        Ok(value)
    }

    async fn clear(&self) {
        self.entries.lock().await.clear();
    }
}

/// One region's shared listings.
struct Region {
    target_groups: Slot<Arc<Listing<TargetGroup>>>,
    listeners: Slot<Arc<Listing<Listener>>>,
    load_balancers: Slot<Option<LoadBalancer>>,
    instances: Slot<Arc<Vec<Instance>>>,
    /// Certificates attached to each HTTPS listener of the proxy ALB.
    listener_certificates: Slot<Arc<Vec<String>>>,
    /// Tags by ARN, with when they were read.
    tags: Mutex<HashMap<String, (Vec<Tag>, Instant)>>,
}

/// The listings of every region, shared by the reconciles of one replica.
pub(super) struct Observations {
    /// How long a listing is used.
    ttl: Duration,
    /// How long tags are kept.
    tags_ttl: Duration,
    regions: Mutex<HashMap<String, Arc<Region>>>,
}

impl Observations {
    /// Listings for a controller resyncing every `resync`.
    pub(super) fn new(resync: Duration) -> Self {
        Self {
            ttl: (resync / 2).min(Duration::from_secs(30)),
            tags_ttl: resync,
            regions: Mutex::new(HashMap::new()),
        }
    }

    fn region(&self, region: &str) -> Arc<Region> {
        let mut regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        regions
            .entry(region.to_owned())
            .or_insert_with(|| {
                Arc::new(Region {
                    target_groups: Slot::new(),
                    listeners: Slot::new(),
                    load_balancers: Slot::new(),
                    instances: Slot::new(),
                    listener_certificates: Slot::new(),
                    tags: Mutex::new(HashMap::new()),
                })
            })
            .clone()
    }

    /// Forgets the region's listings after this replica changed something in it.
    pub(super) async fn changed(&self, region: &str, arn: Option<&str>) {
        let cached = self.region(region);
        cached.target_groups.clear().await;
        cached.listeners.clear().await;
        cached.instances.clear().await;
        cached.listener_certificates.clear().await;
        if let Some(arn) = arn {
            cached
                .tags
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(arn);
        }
    }

    /// Every target group of the region, with the tags of those this controller names.
    pub(super) async fn target_groups(
        &self,
        lb: &dyn LoadBalancing,
        region: &str,
    ) -> Result<Arc<Listing<TargetGroup>>, CloudError> {
        let cached = self.region(region);
        let fetch = async {
            let items = lb.list_target_groups().await?;
            let ours: Vec<String> = items
                .iter()
                .filter(|g| g.name.starts_with(TARGET_GROUP_PREFIX))
                .map(|g| g.arn.clone())
                .collect();
            let tags = self.tags(lb, &cached, &ours).await?;
            Ok(Arc::new(Listing { items, tags }))
        };
        cached.target_groups.get("", self.ttl, fetch).await
    }

    /// Every listener of one load balancer, with their tags.
    pub(super) async fn listeners(
        &self,
        lb: &dyn LoadBalancing,
        region: &str,
        load_balancer: &str,
    ) -> Result<Arc<Listing<Listener>>, CloudError> {
        let cached = self.region(region);
        let fetch = async {
            let items = lb.describe_listeners(load_balancer).await?;
            let arns: Vec<String> = items.iter().map(|l| l.arn.clone()).collect();
            let tags = self.tags(lb, &cached, &arns).await?;
            Ok(Arc::new(Listing { items, tags }))
        };
        cached.listeners.get(load_balancer, self.ttl, fetch).await
    }

    /// One load balancer (they change only when an operator replaces one).
    pub(super) async fn load_balancer(
        &self,
        lb: &dyn LoadBalancing,
        region: &str,
        arn: &str,
    ) -> Result<Option<LoadBalancer>, CloudError> {
        let fetch = async {
            let found = lb.describe_load_balancers(&[arn.to_owned()]).await?;
            Ok(found.into_iter().next())
        };
        let cached = self.region(region);
        cached.load_balancers.get(arn, self.tags_ttl, fetch).await
    }

    /// The certificates attached to one HTTPS listener besides its default one: every
    /// custom domain of the region reads the same few listings.
    pub(super) async fn listener_certificates(
        &self,
        lb: &dyn LoadBalancing,
        region: &str,
        listener: &str,
    ) -> Result<Arc<Vec<String>>, CloudError> {
        let fetch = async { Ok(Arc::new(lb.describe_listener_certificates(listener).await?)) };
        let cached = self.region(region);
        cached
            .listener_certificates
            .get(listener, self.ttl, fetch)
            .await
    }

    /// The running instances of one `Name` tag.
    pub(super) async fn instances(
        &self,
        fleet: &dyn reconcilers::cloud::Fleet,
        region: &str,
        name: &str,
    ) -> Result<Arc<Vec<Instance>>, CloudError> {
        let fetch = async { Ok(Arc::new(fleet.running_instances(name).await?)) };
        let cached = self.region(region);
        cached.instances.get(name, self.ttl, fetch).await
    }

    /// Tags of `arns`: those read within the tags period from memory, the rest in batches.
    async fn tags(
        &self,
        lb: &dyn LoadBalancing,
        cached: &Region,
        arns: &[String],
    ) -> Result<KnownTags, CloudError> {
        let mut known = KnownTags::new();
        let mut missing = Vec::new();
        {
            let tags = cached.tags.lock().unwrap_or_else(|p| p.into_inner());
            for arn in arns {
                match tags.get(arn) {
                    Some((found, at)) if at.elapsed() < self.tags_ttl => {
                        known.insert(arn.clone(), found.clone());
                    }
                    _ => missing.push(arn.clone()),
                }
            }
        }
        for batch in missing.chunks(TAGS_PER_CALL) {
            let described = lb.describe_tags(batch).await?;
            let now = Instant::now();
            let mut tags = cached.tags.lock().unwrap_or_else(|p| p.into_inner());
            // An ARN AWS says nothing about has no tags.
            for arn in batch {
                let found = described
                    .iter()
                    .find(|(a, _)| a == arn)
                    .map(|(_, t)| t.clone())
                    .unwrap_or_default();
                tags.insert(arn.clone(), (found.clone(), now));
                known.insert(arn.clone(), found);
            }
        }
        Ok(known)
    }
}
