//! This replica's side of the shop leases: the claims it holds and when each is due for
//! renewal, which shops it is reconciling right now, and the even sharing of the shops between
//! the live replicas (#6).
//!
//! A claim goes to whichever replica asks first and is renewed for as long as that replica
//! reconciles the shop, so a replica starting after the others hold every shop would get none
//! until one of them stopped. Each replica therefore writes a heartbeat every quarter lease
//! time and reads back how many replicas are live and how many shops they share (a
//! [`Census`]), and keeps no more than its [`FairShare`]'s limit. When a claim it holds is due
//! for renewal at the start of a reconcile, no other reconcile of that shop runs here and it
//! holds more shops than the limit, it releases the claim instead of renewing it and leaves
//! the shop alone for a lease time and a little more. The replicas that were told the shop is
//! held look again within a lease time of that answer, and one of them takes it; if none does,
//! this replica claims it again afterwards.
//!
//! Fencing is untouched: a claim is released only while none of its shop's reconciles runs
//! here (they are counted from before their claim to their end, under the lock the decision
//! takes), so no reconcile is between a fence and its mutation with it; a reconcile starting
//! afterwards finds the shop handed back and leaves it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{Claimed, Controller, LEASE_SLACK};
use crate::store::{Census, Lease, StoreError};

/// How many shops a replica keeps when several share them.
///
/// The share is taken of every shop the replicas reconcile (all but the paused ones), not of
/// the shops claimed at the moment: a shop between two holders is claimed by nobody for a
/// while, and a share that shrank with it would make a replica hand back still more shops
/// before the others picked up the first ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FairShare {
    /// `ceil(shops / live replicas)`: the replicas' shares together cover every shop, so all
    /// of them can be within their share at once.
    pub share: usize,
    /// How far above its share a replica may be before it hands claims back: one shop and a
    /// twentieth of the share, so counts that move by a shop or two (a shop deployed, one in
    /// the middle of changing hands) do not send claims back and forth.
    pub slack: usize,
}

impl FairShare {
    /// The share `census` gives; `None` while a replica runs alone (it keeps everything).
    pub fn of(census: &Census) -> Option<Self> {
        if census.live_replicas <= 1 {
            return None;
        }
        let share = census.shops.div_ceil(census.live_replicas);
        let share = usize::try_from(share).unwrap_or(usize::MAX);
        Some(Self {
            share,
            slack: 1 + share / 20,
        })
    }

    /// The most shops a replica keeps.
    pub fn limit(&self) -> usize {
        self.share.saturating_add(self.slack)
    }
}

/// A claim this replica holds, and when to renew it.
pub(super) struct HeldLease {
    pub(super) lease: Lease,
    pub(super) renew_at: Instant,
    /// When the claim lapses unless renewed, by this replica's clock: when it asked for the
    /// claim (or its extension) plus the lease time, which is never after the database's
    /// expiry.
    pub(super) expires_at: Instant,
}

/// Every claim of this replica, and what sharing them needs.
#[derive(Default)]
pub(super) struct Leases {
    pub(super) held: HashMap<String, HeldLease>,
    /// Reconciles of each shop running here now, counted from before their claim.
    running: HashMap<String, usize>,
    /// Shops handed back to even the share, and until when this replica leaves them alone.
    handed_back: HashMap<String, Instant>,
    /// The last heartbeat's figures; `None` before the first.
    census: Option<Census>,
}

/// What the claim step of a reconcile decided about sharing.
#[derive(Debug, PartialEq)]
enum Share {
    /// Claim (or renew) as usual.
    Claim,
    /// This replica handed the shop back a moment ago: leave it alone this much longer.
    Leave(Duration),
    /// Release this claim instead of renewing it.
    HandBack(Lease),
}

impl Leases {
    /// Claims that have not lapsed by this replica's clock.
    pub(super) fn running_claims(&self, now: Instant) -> impl Iterator<Item = &HeldLease> {
        self.held.values().filter(move |held| now < held.expires_at)
    }

    /// The sharing decision at the claim step of a reconcile of `shop`, which is already
    /// counted as running. A claim is handed back only when it is due for renewal (so a
    /// reconcile needs the database anyway), no other reconcile of the shop runs here and this
    /// replica holds more shops than its limit.
    fn share(&mut self, shop: &str, now: Instant, leave_for: Duration) -> Share {
        if let Some(until) = self.handed_back.get(shop) {
            if now < *until {
                return Share::Leave(*until - now);
            }
            self.handed_back.remove(shop);
        }
        let Some(limit) = self.census.as_ref().and_then(FairShare::of) else {
            return Share::Claim;
        };
        let due = self.held.get(shop).is_some_and(|held| now >= held.renew_at);
        let alone = self.running.get(shop).copied().unwrap_or(0) <= 1;
        // Counting walks the claims, but only for a renewal, which asks the database anyway.
        if !due || !alone || self.shops_held(now) <= limit.limit() {
            return Share::Claim;
        }
        let Some(held) = self.held.remove(shop) else {
            return Share::Claim;
        };
        self.handed_back.insert(shop.to_owned(), now + leave_for);
        Share::HandBack(held.lease)
    }

    /// Shops (not regions or fleets, whose keys have a colon no shop domain can have) this
    /// replica holds a running claim on.
    fn shops_held(&self, now: Instant) -> usize {
        self.held
            .iter()
            .filter(|(key, held)| !key.contains(':') && now < held.expires_at)
            .count()
    }

    /// Forgets everything about a shop that is gone.
    pub(super) fn forget(&mut self, shop: &str) {
        self.held.remove(shop);
        self.handed_back.remove(shop);
    }

    fn start(&mut self, shop: &str) {
        *self.running.entry(shop.to_owned()).or_default() += 1;
    }

    fn finish(&mut self, shop: &str) {
        if let Some(count) = self.running.get_mut(shop) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.running.remove(shop);
            }
        }
    }
}

/// Counts a reconcile of a shop as running here until dropped, a reconcile cut short by its
/// deadline included.
pub(super) struct Running<'a> {
    leases: &'a Mutex<Leases>,
    shop: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases.finish(&self.shop);
    }
}

impl Controller {
    /// Counts a reconcile of `shop` as running until the guard drops; taken before its claim.
    pub(super) fn running(&self, shop: &str) -> Running<'_> {
        self.lock_leases().start(shop);
        Running {
            leases: &self.leases,
            shop: shop.to_owned(),
        }
    }

    /// The claim step of a reconcile: claims or renews the shop, unless this replica holds
    /// more than its share and the shop's claim can be handed back now (see the module doc).
    pub(super) async fn claim_shop(&self, shop: &str) -> Result<Claimed, StoreError> {
        let leave_for = self.config.lease.ttl + 2 * LEASE_SLACK;
        let decision = self.lock_leases().share(shop, Instant::now(), leave_for);
        match decision {
            Share::Claim => self.claim(shop).await,
            Share::Leave(remaining) => Ok(Claimed::HeldFor(remaining)),
            Share::HandBack(lease) => {
                match self.store.release_lease(&lease).await {
                    Ok(()) => tracing::info!(
                        shop,
                        epoch = lease.epoch,
                        "handed a claim back to share the shops evenly"
                    ),
                    Err(error) => tracing::warn!(
                        shop,
                        %error,
                        "could not hand a claim back; it lapses by itself"
                    ),
                }
                Ok(Claimed::HeldFor(leave_for))
            }
        }
    }

    /// Writes this replica's heartbeat every quarter lease time and keeps what it read back,
    /// until `stop`; then removes the heartbeat, so the others count this replica gone at once.
    pub(super) async fn heartbeat_loop(self: Arc<Self>, mut stop: broadcast::Receiver<()>) {
        let holder = self.config.lease.holder.as_str();
        let period = self.config.lease.ttl / 4;
        loop {
            match self
                .store
                .heartbeat(holder, self.config.lease.ttl_millis())
                .await
            {
                Ok(census) => self.census_taken(census),
                Err(error) => tracing::warn!(
                    %error,
                    "could not write heartbeat; sharing keeps the last figures"
                ),
            }
            tokio::select! {
                _ = stop.recv() => break,
                () = tokio::time::sleep(period) => {}
            }
        }
        if let Err(error) = self.store.remove_replica(holder).await {
            tracing::warn!(%error, "could not remove heartbeat; it ages out in a lease time");
        }
    }

    fn census_taken(&self, census: Census) {
        let now = Instant::now();
        let mut leases = self.lock_leases();
        if leases.census.map(|c| c.live_replicas) != Some(census.live_replicas) {
            tracing::info!(
                live_replicas = census.live_replicas,
                shops = census.shops,
                share = ?FairShare::of(&census).map(|s| s.share),
                "live replicas changed"
            );
        }
        leases.census = Some(census);
        leases.handed_back.retain(|_, until| now < *until);
    }

    /// How many replicas the last heartbeat found live, this one included, for metrics;
    /// `None` before the first heartbeat.
    pub fn live_replicas(&self) -> Option<u32> {
        self.lock_leases().census.map(|c| c.live_replicas)
    }

    /// The claims this replica holds and believes still run (shops, regions' loops and
    /// fleets), by its own clock, which never runs past the database's expiry.
    pub fn held_leases(&self) -> Vec<Lease> {
        let now = Instant::now();
        self.lock_leases()
            .running_claims(now)
            .map(|held| held.lease.clone())
            .collect()
    }

    pub(super) fn lock_leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(live_replicas: u32, shops: u32) -> Census {
        Census {
            live_replicas,
            shops,
        }
    }

    #[test]
    fn the_share_rounds_up_and_a_lone_replica_keeps_everything() {
        let cases = [
            (1, 10, None),
            (0, 10, None),
            (2, 12, Some((6, 1))),
            (2, 11, Some((6, 1))),
            (3, 10, Some((4, 1))),
            (4, 0, Some((0, 1))),
            (3, 1000, Some((334, 17))),
        ];
        for (live, shops, expected) in cases {
            let share = FairShare::of(&census(live, shops)).map(|s| (s.share, s.slack));
            assert_eq!(share, expected, "{live} replicas, {shops} shops");
        }
    }

    fn lease(shop: &str) -> Lease {
        Lease {
            shop: shop.to_owned(),
            holder: "me".to_owned(),
            epoch: 1,
            remaining_ms: 60_000,
        }
    }

    /// A replica holding `shops` shops, every claim due for renewal, under `census`.
    fn holding(shops: usize, census: Option<Census>) -> (Leases, Instant) {
        let now = Instant::now();
        let mut leases = Leases {
            census,
            ..Leases::default()
        };
        for i in 0..shops {
            let shop = format!("shop-{i}.es-hs.com");
            let held = HeldLease {
                lease: lease(&shop),
                renew_at: now,
                expires_at: now + Duration::from_secs(30),
            };
            leases.held.insert(shop, held);
        }
        (leases, now)
    }

    const LEAVE: Duration = Duration::from_secs(62);

    #[test]
    fn a_replica_above_its_limit_hands_back_until_it_is_at_the_limit() {
        let (mut leases, now) = holding(12, Some(census(2, 12)));
        let mut handed_back = 0;
        for i in 0..12 {
            let shop = format!("shop-{i}.es-hs.com");
            leases.start(&shop);
            if let Share::HandBack(lease) = leases.share(&shop, now, LEAVE) {
                assert_eq!(lease.shop, shop);
                handed_back += 1;
            }
            leases.finish(&shop);
        }
        assert_eq!(
            handed_back, 5,
            "12 shops, 2 replicas: keeps its share of 6 and 1 slack"
        );
        assert_eq!(leases.shops_held(now), 7);

        // A handed-back shop is left alone for a while, then claimed as usual.
        let shop = "shop-0.es-hs.com";
        assert_eq!(leases.share(shop, now, LEAVE), Share::Leave(LEAVE));
        assert_eq!(leases.share(shop, now + LEAVE, LEAVE), Share::Claim);
    }

    #[test]
    fn a_claim_is_kept_while_another_reconcile_of_its_shop_runs() {
        let (mut leases, now) = holding(12, Some(census(2, 12)));
        let shop = "shop-3.es-hs.com";
        leases.start(shop);
        leases.start(shop);
        assert_eq!(leases.share(shop, now, LEAVE), Share::Claim);
        leases.finish(shop);
        assert!(matches!(leases.share(shop, now, LEAVE), Share::HandBack(_)));
    }

    #[test]
    fn claims_are_kept_when_alone_within_the_limit_not_due_or_not_counted_yet() {
        let shop = "shop-3.es-hs.com";
        for (shops, census) in [
            (12, None),
            (12, Some(census(1, 12))),
            (7, Some(census(2, 12))),
        ] {
            let (mut leases, now) = holding(shops, census);
            leases.start(shop);
            assert_eq!(leases.share(shop, now, LEAVE), Share::Claim, "{census:?}");
        }

        let (mut leases, now) = holding(12, Some(census(2, 12)));
        if let Some(held) = leases.held.get_mut(shop) {
            held.renew_at = now + Duration::from_secs(1);
        }
        leases.start(shop);
        assert_eq!(leases.share(shop, now, LEAVE), Share::Claim, "not due");
    }

    #[test]
    fn region_and_fleet_claims_do_not_count_as_shops() {
        let (mut leases, now) = holding(2, Some(census(2, 2)));
        for key in ["region:eu-west-1:acme", "patch:group/web"] {
            let held = HeldLease {
                lease: lease(key),
                renew_at: now,
                expires_at: now + Duration::from_secs(30),
            };
            leases.held.insert(key.to_owned(), held);
        }
        assert_eq!(leases.shops_held(now), 2);
        assert_eq!(leases.running_claims(now).count(), 4);
        assert_eq!(
            leases.running_claims(now + Duration::from_secs(30)).count(),
            0
        );
    }
}
