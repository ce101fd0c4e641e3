//! The certificate kind: a shop's custom domain gets a certificate from an ACME CA over
//! HTTP-01, imported into ACM with our ownership tags and attached to one of the region's
//! proxy ALB HTTPS listeners with a free slot; at two thirds of its lifetime a new one is
//! issued and re-imported into the same ARN, so the listener serves it without a gap.
//!
//! One reconcile moves the domain's ACME order one step and keeps the step in the store's
//! certificate row: a crash resumes the order instead of placing another. Before any order, a
//! self-check fetches a probe token over HTTP the way the CA will, so a domain that does not
//! point at us costs nothing of the CA's limits; the limits themselves (new orders, failed
//! validations, duplicate certificates) are counted in the store for every replica. Failures
//! back off for hours, growing, and the status says until when.
//!
//! A changed custom domain gets its new certificate first; the old one is detached and deleted
//! once the new one is served. A shop without a custom domain (any more) or being deleted has
//! every certificate of its rows detached and deleted.

use std::sync::Arc;
use std::time::Duration;

use reconcilers::Hostname;
use reconcilers::certificate::{
    self, Backoff, Budget, BudgetExhausted, Budgets, CertificateRecord, CertificateState,
    WaitReason,
};
use reconcilers::cloud::{
    Acme, AcmeOrder, CloudError, Domains, ErrorKind, FetchError, IssuedCertificate, OrderStatus,
    Quota,
};
use reconcilers::config::RegionConfig;
use reconcilers::domain_check::{self, PROBE_BODY, PROBE_TOKEN_PREFIX, Severity};
use reconcilers::status::ResourceKind;

use super::{Blocked, Controller, Converged};
use crate::runtime::Outcome;
use crate::store::{AcmeChallenge, Intent, Lease, ShopView, now_millis};

/// How long a published challenge is answered: past any order's validation.
const CHALLENGE_TTL_MS: i64 = 24 * 60 * 60 * 1000;
/// How soon to look again at an order the CA dropped or whose key was lost.
const REORDER_DELAY: Duration = Duration::from_secs(5);
/// Renewal information is asked for at most this often, whatever the CA says.
const RENEWAL_INFO_MIN_RETRY_MS: i64 = 1_000;
/// A CA without renewal information is asked again after a day (it may have gained it).
const RENEWAL_INFO_UNSUPPORTED_RETRY_MS: i64 = 24 * 60 * 60 * 1000;
/// After a failed request, an hour.
const RENEWAL_INFO_FAILED_RETRY_MS: i64 = 60 * 60 * 1000;
/// How soon to look again at a certificate ACM still holds as in use after its detachment.
const IN_USE_DELAY: Duration = Duration::from_secs(15);

/// What the certificate kind needs besides the cloud: the CA, DNS and HTTP as the CA sees
/// them, and the limits it keeps to.
#[derive(Clone)]
pub struct CertificateSettings {
    pub acme: Arc<dyn Acme>,
    pub domains: Arc<dyn Domains>,
    /// The CA's limits, counted across replicas.
    pub budgets: Budgets,
    /// Waits after the CA rejected an order (they cost the CA's failed-validation limit).
    pub backoff: Backoff,
    /// Waits after the self-check failed (they cost nothing at the CA, so they are shorter).
    pub self_check_backoff: Backoff,
    /// Certificates an HTTPS listener takes besides its default one (the ALB quota,
    /// "Certificates per Application Load Balancer", is 25 unless raised).
    pub slots_per_listener: usize,
    /// How often an order in flight is looked at.
    pub poll: Duration,
    /// The CA's name in CAA records (`letsencrypt.org`).
    pub ca_identity: String,
}

impl CertificateSettings {
    /// Let's Encrypt's limits and cert-manager-like backoff.
    pub fn new(acme: Arc<dyn Acme>, domains: Arc<dyn Domains>) -> Self {
        Self {
            acme,
            domains,
            budgets: Budgets::default(),
            backoff: Backoff::default(),
            self_check_backoff: Backoff {
                first: Duration::from_secs(60),
                max: Duration::from_secs(60 * 60),
            },
            slots_per_listener: DEFAULT_CERTIFICATE_SLOTS,
            poll: Duration::from_secs(2),
            ca_identity: domain_check::LETS_ENCRYPT_CAA_IDENTITY.to_owned(),
        }
    }
}

/// The ALB's default quota of certificates per listener.
pub const DEFAULT_CERTIFICATE_SLOTS: usize = 25;

/// A converged certificate and when it wants looking at again (its renewal time).
pub(super) struct Certified {
    pub(super) converged: Converged,
    pub(super) recheck: Option<Duration>,
}

impl Controller {
    /// Converges the certificates of the shop's custom domain.
    pub(super) async fn certificate(
        &self,
        view: &ShopView,
        lease: &Lease,
    ) -> Result<Certified, Blocked> {
        let shop = view.record.spec.shop_domain.as_str();
        let rows = self.store.shop_certificates(shop).await?;
        let Some(domain) = view.record.spec.custom_domain.clone() else {
            for row in &rows {
                self.remove_certificate(view, lease, row).await?;
            }
            return Ok(Certified {
                converged: Converged {
                    desired: "no custom domain".to_owned(),
                    observed: String::new(),
                    reason: "",
                },
                recheck: None,
            });
        };
        let Some(settings) = &self.certificates else {
            return Err(Blocked {
                reason: "AcmeNotConfigured",
                message: format!(
                    "{domain} needs a certificate but the controller runs without an ACME CA \
                     (--acme-directory-url)"
                ),
                outcome: Outcome::Wait("acme"),
            });
        };
        let region = self.region(view).await?;
        let now = now_millis();
        let mut record = match rows.iter().find(|r| r.domain == domain) {
            Some(row) => row.clone(),
            None => match self.store.certificate(domain.as_str()).await? {
                Some(other) if other.shop != shop => {
                    return Err(Blocked {
                        reason: "DomainHeldByAnotherShop",
                        message: format!(
                            "{domain} still has a certificate of {}; waiting for its teardown",
                            other.shop
                        ),
                        outcome: Outcome::Wait("certificate"),
                    });
                }
                _ => CertificateRecord::new(domain.clone(), shop, now),
            },
        };
        self.verify_imported(&region, lease, &mut record).await?;
        if record.renewal_info_due(now) {
            self.check_renewal_info(lease, settings, &mut record, now)
                .await?;
        }
        if record.needs_certificate(now) {
            self.issue(view, lease, settings, &region, &mut record, now)
                .await?;
        }
        self.attach(lease, settings, &region, &mut record).await?;
        // New first, then the old: earlier domains' certificates go once this one is served.
        for old in rows.iter().filter(|r| r.domain != domain) {
            self.remove_certificate(view, lease, old).await?;
        }
        let renew_at = record.renew_at().unwrap_or(now);
        let until = record
            .not_after
            .map_or_else(String::new, |at| format!(", valid until {}", utc(at)));
        Ok(Certified {
            converged: Converged {
                desired: format!("certificate for {domain} on an HTTPS listener"),
                observed: format!(
                    "{} on {}{until}",
                    record.acm_arn.as_deref().unwrap_or_default(),
                    record.listener_arn.as_deref().unwrap_or_default()
                ),
                reason: "",
            },
            recheck: Some(millis_duration(renew_at.saturating_sub(now))),
        })
    }

    /// Teardown: every certificate of the shop is detached and deleted.
    pub(super) async fn delete_certificates(
        &self,
        view: &ShopView,
        lease: &Lease,
    ) -> Result<Converged, Blocked> {
        let shop = view.record.spec.shop_domain.as_str();
        for row in self.store.shop_certificates(shop).await? {
            self.remove_certificate(view, lease, &row).await?;
        }
        Ok(Self::gone())
    }

    /// Whether the shop still has certificate rows (its teardown waits for them to go).
    pub(super) async fn has_certificates(&self, shop: &str) -> Result<bool, Blocked> {
        Ok(!self.store.shop_certificates(shop).await?.is_empty())
    }

    /// Forgets an imported certificate someone deleted, so a new one is issued. A certificate
    /// its listener still holds exists (ACM refuses to delete one in use), so the shared
    /// listing of the listener answers for most shops without a call of their own.
    async fn verify_imported(
        &self,
        region: &RegionConfig,
        lease: &Lease,
        record: &mut CertificateRecord,
    ) -> Result<(), Blocked> {
        let Some(arn) = record.acm_arn.clone() else {
            return Ok(());
        };
        if self.served_on_its_listener(region, record).await? {
            return Ok(());
        }
        let acm = self.cloud.certificates(region.region.as_str());
        match acm.describe_certificate(&arn).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => {
                tracing::warn!(domain = %record.domain, arn, "imported certificate is gone; issuing a new one");
                record.acm_arn = None;
                record.listener_arn = None;
                record.not_before = None;
                record.not_after = None;
                record.state = CertificateState::Pending;
                self.save(lease, record).await
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Asks the CA when it wants the certificate renewed (ACME Renewal Information): a window
    /// sooner than two thirds of the lifetime (a coming revocation, say) brings the renewal
    /// forward. Never blocks the reconcile: without an answer the plan stays two thirds.
    async fn check_renewal_info(
        &self,
        lease: &Lease,
        settings: &CertificateSettings,
        record: &mut CertificateRecord,
        now: i64,
    ) -> Result<(), Blocked> {
        let Some(id) = record.renewal_info_id.clone() else {
            return Ok(());
        };
        let next_check = match settings.acme.renewal_window(&id).await {
            Ok(Some(window)) => {
                record.renew_after = Some(renewal_point(&record.domain, &window));
                let retry = millis_of(window.retry_after).max(RENEWAL_INFO_MIN_RETRY_MS);
                now.saturating_add(retry)
            }
            Ok(None) => now.saturating_add(RENEWAL_INFO_UNSUPPORTED_RETRY_MS),
            Err(error) => {
                tracing::warn!(domain = %record.domain, %error, "could not read renewal information");
                now.saturating_add(RENEWAL_INFO_FAILED_RETRY_MS)
            }
        };
        record.renewal_info_next_check = Some(next_check);
        self.save(lease, record).await
    }

    /// Whether the record's listener holds its certificate, by the region's shared listings.
    async fn served_on_its_listener(
        &self,
        region: &RegionConfig,
        record: &CertificateRecord,
    ) -> Result<bool, Blocked> {
        let (Some(arn), Some(listener)) = (&record.acm_arn, &record.listener_arn) else {
            return Ok(false);
        };
        let name = region.region.as_str();
        let lb = self.cloud.load_balancing(name);
        match self
            .observations
            .listener_certificates(lb.as_ref(), name, listener)
            .await
        {
            Ok(attached) => Ok(attached.contains(arn)),
            Err(error) if error.is_not_found() => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Moves the domain's order one step: place it, publish its challenges and ask the CA to
    /// validate, finalize, import. Every step but the import ends the run with a requeue.
    async fn issue(
        &self,
        view: &ShopView,
        lease: &Lease,
        settings: &CertificateSettings,
        region: &RegionConfig,
        record: &mut CertificateRecord,
        now: i64,
    ) -> Result<(), Blocked> {
        let order = match record.order_url.clone() {
            Some(url) => match settings.acme.order(&url).await {
                Ok(order) => order,
                Err(error) if error.is_not_found() => {
                    tracing::warn!(domain = %record.domain, url, "the CA no longer has the order; placing another");
                    return self
                        .abandon_order(lease, record, "the CA dropped the order")
                        .await;
                }
                Err(error) => return Err(error.into()),
            },
            None => {
                self.place_order(lease, settings, region, record, now)
                    .await?
            }
        };
        self.advance(view, lease, settings, region, record, order, now)
            .await
    }

    /// The checks before an order (backoff, self-check, budgets), then the order.
    async fn place_order(
        &self,
        lease: &Lease,
        settings: &CertificateSettings,
        region: &RegionConfig,
        record: &mut CertificateRecord,
        now: i64,
    ) -> Result<AcmeOrder, Blocked> {
        if let Some(next) = record.next_attempt_at
            && now < next
        {
            return Err(backing_off(record, next, now));
        }
        let domain = record.domain.clone();
        if let Err(why) = preflight(settings, region, &domain, now).await {
            tracing::info!(%domain, %why, "self-check failed; no order placed");
            record.fail(
                WaitReason::SelfCheckFailed,
                why,
                &settings.self_check_backoff,
                now,
            );
            self.save(lease, record).await?;
            return Err(Blocked {
                outcome: requeue_at(record.next_attempt_at, now),
                ..backing_off_as(record, "SelfCheckFailed", now)
            });
        }
        let budgets = &settings.budgets;
        for budget in [Budget::FailedValidations, Budget::DuplicateCertificates] {
            let subject = Budgets::subject(budget, &domain);
            let verdict = self
                .store
                .check_budget(budget, subject, budgets.limit(budget), now)
                .await?;
            self.within_budget(lease, record, verdict, now).await?;
        }
        self.fence(lease).await?;
        let budget = Budget::NewOrders;
        let verdict = self
            .store
            .take_budget(
                budget,
                Budgets::subject(budget, &domain),
                budgets.limit(budget),
                now,
            )
            .await?;
        self.within_budget(lease, record, verdict, now).await?;
        let order = settings.acme.new_order(&domain).await?;
        tracing::info!(%domain, order = %order.url, "placed certificate order");
        record.order_url = Some(order.url.clone());
        if record.state != CertificateState::Ready {
            record.state = CertificateState::Ordering;
        }
        self.save(lease, record).await?;
        Ok(order)
    }

    /// Stops at an exhausted budget until it frees up, with the budget in the status.
    async fn within_budget(
        &self,
        lease: &Lease,
        record: &mut CertificateRecord,
        verdict: Result<(), BudgetExhausted>,
        now: i64,
    ) -> Result<(), Blocked> {
        let Err(exhausted) = verdict else {
            return Ok(());
        };
        tracing::info!(domain = %record.domain, budget = exhausted.budget.as_str(), "budget exhausted; waiting");
        record.next_attempt_at = Some(exhausted.free_at);
        record.wait_reason = Some(WaitReason::BudgetExhausted);
        record.last_error = Some(exhausted.to_string());
        self.save(lease, record).await?;
        Err(Blocked {
            reason: "BudgetExhausted",
            message: exhausted.to_string(),
            outcome: requeue_at(Some(exhausted.free_at), now),
        })
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the order and everything its next step touches"
    )]
    async fn advance(
        &self,
        view: &ShopView,
        lease: &Lease,
        settings: &CertificateSettings,
        region: &RegionConfig,
        record: &mut CertificateRecord,
        order: AcmeOrder,
        now: i64,
    ) -> Result<(), Blocked> {
        let domain = record.domain.clone();
        match order.status {
            OrderStatus::Pending => {
                let pending: Vec<_> = order
                    .challenges
                    .iter()
                    .filter(|c| c.status == "pending")
                    .collect();
                for challenge in &pending {
                    self.store
                        .put_challenge(&AcmeChallenge {
                            token: challenge.token.clone(),
                            domain: challenge.domain.to_string(),
                            key_authorization: challenge.key_authorization.clone(),
                            expires_at: now + CHALLENGE_TTL_MS,
                        })
                        .await?;
                }
                // The token must be answered through the domain before the CA looks: a
                // failed validation costs one of the domain's few per hour.
                for challenge in &pending {
                    let served = settings
                        .domains
                        .fetch_challenge(&challenge.domain, &challenge.token)
                        .await;
                    if served.as_deref().map(str::trim) != Ok(challenge.key_authorization.as_str())
                    {
                        let why = match served {
                            Ok(_) => "answered something else than the token's key authorization"
                                .to_owned(),
                            Err(error) => error.to_string(),
                        };
                        let why = format!(
                            "http://{}/.well-known/acme-challenge/{} {why}; the CA was not asked",
                            challenge.domain, challenge.token
                        );
                        record.fail(
                            WaitReason::SelfCheckFailed,
                            why,
                            &settings.self_check_backoff,
                            now,
                        );
                        self.store.remove_challenges(domain.as_str()).await?;
                        self.save(lease, record).await?;
                        return Err(Blocked {
                            outcome: requeue_at(record.next_attempt_at, now),
                            ..backing_off_as(record, "SelfCheckFailed", now)
                        });
                    }
                }
                if !pending.is_empty() {
                    self.fence(lease).await?;
                    settings.acme.challenges_ready(&order.url).await?;
                    tracing::info!(%domain, order = %order.url, "challenges published; the CA validates");
                }
                Err(Blocked {
                    reason: "Validating",
                    message: format!("the CA is validating HTTP-01 for {domain}"),
                    outcome: Outcome::Requeue(settings.poll),
                })
            }
            OrderStatus::Ready | OrderStatus::Processing | OrderStatus::Valid => {
                self.fence(lease).await?;
                match settings.acme.finalize(&order.url).await {
                    Ok(Some(issued)) => {
                        self.store.remove_challenges(domain.as_str()).await?;
                        let budget = Budget::DuplicateCertificates;
                        self.store
                            .record_budget_event(budget, Budgets::subject(budget, &domain), now)
                            .await?;
                        self.import(view, lease, region, record, issued).await
                    }
                    Ok(None) => Err(Blocked {
                        reason: "Issuing",
                        message: format!("the CA is issuing the certificate for {domain}"),
                        outcome: Outcome::Requeue(settings.poll),
                    }),
                    // Finalized before a crash: the key went with the process.
                    Err(error)
                        if order.status != OrderStatus::Ready
                            && !matches!(
                                error.kind,
                                ErrorKind::Throttled | ErrorKind::Transient
                            ) =>
                    {
                        tracing::warn!(%domain, %error, "order finalized without a key here; placing another");
                        self.abandon_order(lease, record, "the order's key was lost")
                            .await
                    }
                    Err(error) => Err(error.into()),
                }
            }
            OrderStatus::Invalid => {
                let why = rejection(&order);
                let budget = Budget::FailedValidations;
                self.store
                    .record_budget_event(budget, Budgets::subject(budget, &domain), now)
                    .await?;
                self.store.remove_challenges(domain.as_str()).await?;
                record.fail(
                    WaitReason::ChallengeRejected,
                    format!("the CA rejected the order: {why}"),
                    &settings.backoff,
                    now,
                );
                self.save(lease, record).await?;
                tracing::warn!(%domain, %why, "certificate order rejected");
                Err(Blocked {
                    outcome: requeue_at(record.next_attempt_at, now),
                    ..backing_off_as(record, "ChallengeRejected", now)
                })
            }
        }
    }

    /// Drops the order in flight, so the next run places another.
    async fn abandon_order(
        &self,
        lease: &Lease,
        record: &mut CertificateRecord,
        why: &str,
    ) -> Result<(), Blocked> {
        record.order_url = None;
        self.store.remove_challenges(record.domain.as_str()).await?;
        self.save(lease, record).await?;
        Err(Blocked {
            reason: "OrderAbandoned",
            message: format!("{why}; placing another"),
            outcome: Outcome::Requeue(REORDER_DELAY),
        })
    }

    /// Imports an issued certificate: into the ARN we already have (a renewal, which the
    /// listener picks up as it is), else as a new certificate with our tags.
    async fn import(
        &self,
        view: &ShopView,
        lease: &Lease,
        region: &RegionConfig,
        record: &mut CertificateRecord,
        issued: IssuedCertificate,
    ) -> Result<(), Blocked> {
        let shop = view.record.spec.shop_domain.as_str();
        let acm = self.cloud.certificates(region.region.as_str());
        let tags = self.owner(view, ResourceKind::Certificate).tags();
        let existing = match &record.acm_arn {
            Some(arn) => Some(arn.clone()),
            None => self.find_imported(view, region, record).await?,
        };
        self.fence(lease).await?;
        let arn = match existing {
            Some(arn) => {
                let arn = acm
                    .import_certificate(&issued.material, Some(&arn), &[])
                    .await?;
                // ACM keeps tags across a re-import; writing them again heals any that went.
                acm.add_tags(&arn, &tags).await?;
                arn
            }
            None => {
                // A crash between the import and the row's write leaves an ARN only ACM
                // knows: the intent says to look for it (by our tags) before importing again.
                self.store
                    .record_intent(
                        &Intent {
                            shop: shop.to_owned(),
                            kind: ResourceKind::Certificate,
                            scope: record.domain.to_string(),
                            desired: "import".to_owned(),
                            external_id: None,
                            created_at: now_millis(),
                            updated_at: now_millis(),
                        },
                        now_millis(),
                    )
                    .await?;
                acm.import_certificate(&issued.material, None, &tags)
                    .await?
            }
        };
        tracing::info!(domain = %record.domain, arn, not_after = issued.not_after, "imported certificate");
        record.acm_arn = Some(arn);
        record.not_before = Some(issued.not_before);
        record.not_after = Some(issued.not_after);
        record.order_url = None;
        record.failures = 0;
        record.last_error = None;
        record.next_attempt_at = None;
        record.wait_reason = None;
        record.renewal_info_id = certificate::renewal_info_id(&issued.material.certificate_pem);
        record.renew_after = None;
        record.renewal_info_next_check = None;
        if record.state != CertificateState::Ready {
            record.state = CertificateState::Issued;
        }
        self.save(lease, record).await?;
        self.store
            .clear_intent(shop, ResourceKind::Certificate)
            .await?;
        Ok(())
    }

    /// The certificate an interrupted import left in ACM, if an import was under way.
    async fn find_imported(
        &self,
        view: &ShopView,
        region: &RegionConfig,
        record: &CertificateRecord,
    ) -> Result<Option<String>, Blocked> {
        let shop = view.record.spec.shop_domain.as_str();
        let intent = self.store.intent(shop, ResourceKind::Certificate).await?;
        if intent.is_none_or(|i| i.scope != record.domain.as_str()) {
            return Ok(None);
        }
        let acm = self.cloud.certificates(region.region.as_str());
        let owner = self.owner(view, ResourceKind::Certificate);
        for arn in acm.list_certificates().await? {
            let tags = acm.list_tags(&arn).await?;
            if reconcilers::cloud::Owner::from_tags(&tags).as_ref() != Some(&owner) {
                continue;
            }
            let summary = acm.describe_certificate(&arn).await?;
            if summary.domain == record.domain.as_str() {
                tracing::info!(domain = %record.domain, arn, "found the certificate an interrupted import left");
                return Ok(Some(arn));
            }
        }
        Ok(None)
    }

    /// Attaches the imported certificate to an HTTPS listener of the region with a free slot.
    async fn attach(
        &self,
        lease: &Lease,
        settings: &CertificateSettings,
        region: &RegionConfig,
        record: &mut CertificateRecord,
    ) -> Result<(), Blocked> {
        let Some(arn) = record.acm_arn.clone() else {
            return Ok(());
        };
        let region_name = region.region.as_str();
        let lb = self.cloud.load_balancing(region_name);
        if let Some(listener) = &record.listener_arn {
            let listed = self
                .observations
                .listener_certificates(lb.as_ref(), region_name, listener)
                .await;
            match listed {
                Ok(attached) if attached.contains(&arn) => {
                    return self.served(lease, record, listener.clone()).await;
                }
                Ok(_) => {
                    tracing::warn!(domain = %record.domain, listener, "certificate was detached; attaching it again");
                }
                Err(error) if error.is_not_found() => {}
                Err(error) => return Err(error.into()),
            }
        }
        let listeners = &region.alb_https_listener_arns;
        if listeners.is_empty() {
            return Err(Blocked {
                reason: "NoHttpsListener",
                message: format!(
                    "region {} names no HTTPS listener of the proxy ALB",
                    region.region
                ),
                outcome: Outcome::Wait("region"),
            });
        }
        let mut load = Vec::with_capacity(listeners.len());
        for listener in listeners {
            let attached = self
                .observations
                .listener_certificates(lb.as_ref(), region_name, listener)
                .await?;
            if attached.contains(&arn) {
                return self.served(lease, record, listener.clone()).await;
            }
            load.push((listener.clone(), attached.len()));
        }
        loop {
            let Some(listener) =
                certificate::listener_with_room(&load, settings.slots_per_listener)
                    .map(str::to_owned)
            else {
                return Err(slots_full(region, settings.slots_per_listener));
            };
            self.fence(lease).await?;
            let added = lb
                .add_listener_certificates(&listener, std::slice::from_ref(&arn))
                .await;
            self.observations.changed(region_name, None).await;
            match added {
                Ok(()) => {
                    tracing::info!(domain = %record.domain, listener, "attached certificate");
                    return self.served(lease, record, listener).await;
                }
                // Fuller than counted (the quota is lower, or others attach there too).
                Err(CloudError {
                    kind: ErrorKind::QuotaExceeded(Quota::CertificatesPerListener),
                    ..
                }) => {
                    for entry in load.iter_mut().filter(|(l, _)| *l == listener) {
                        entry.1 = usize::MAX;
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    async fn served(
        &self,
        lease: &Lease,
        record: &mut CertificateRecord,
        listener: String,
    ) -> Result<(), Blocked> {
        if record.state == CertificateState::Ready
            && record.listener_arn.as_deref() == Some(listener.as_str())
        {
            return Ok(());
        }
        record.listener_arn = Some(listener);
        record.state = CertificateState::Ready;
        self.save(lease, record).await
    }

    /// Detaches and deletes one certificate of the shop and forgets its row.
    async fn remove_certificate(
        &self,
        view: &ShopView,
        lease: &Lease,
        record: &CertificateRecord,
    ) -> Result<(), Blocked> {
        let region = view.record.spec.region.as_str();
        if let Some(arn) = &record.acm_arn {
            if let Some(listener) = &record.listener_arn {
                self.fence(lease).await?;
                let lb = self.cloud.load_balancing(region);
                let removed = lb
                    .remove_listener_certificates(listener, std::slice::from_ref(arn))
                    .await;
                self.observations.changed(region, None).await;
                match removed {
                    Err(error) if !error.is_not_found() => return Err(error.into()),
                    _ => {}
                }
            }
            self.fence(lease).await?;
            match self
                .cloud
                .certificates(region)
                .delete_certificate(arn)
                .await
            {
                Ok(()) => {}
                Err(error) if error.is_not_found() => {}
                // ACM lets go of a certificate a little after the listener did.
                Err(error) if error.kind == ErrorKind::Invalid => {
                    return Err(Blocked {
                        reason: "CertificateInUse",
                        message: format!("{arn} is still in use after its detachment: {error}"),
                        outcome: Outcome::Requeue(IN_USE_DELAY),
                    });
                }
                Err(error) => return Err(error.into()),
            }
            tracing::info!(domain = %record.domain, arn, "deleted certificate");
        }
        self.store.remove_challenges(record.domain.as_str()).await?;
        self.fence(lease).await?;
        self.store
            .delete_certificate(record.domain.as_str())
            .await?;
        Ok(())
    }

    /// Writes the certificate row, if this replica still holds the shop.
    async fn save(&self, lease: &Lease, record: &mut CertificateRecord) -> Result<(), Blocked> {
        self.fence(lease).await?;
        record.updated_at = now_millis();
        self.store.put_certificate(record).await?;
        Ok(())
    }
}

/// What must hold before an order costs anything at the CA: a probe token fetched through the
/// domain the way the CA fetches a challenge reaches our responder, and no CAA record forbids
/// the CA. On failure, the diagnosis of the domain's DNS says why and how to fix it.
async fn preflight(
    settings: &CertificateSettings,
    region: &RegionConfig,
    domain: &Hostname,
    now: i64,
) -> Result<(), String> {
    let domains = settings.domains.as_ref();
    let token = format!("{PROBE_TOKEN_PREFIX}{now}");
    let check = match domains.fetch_challenge(domain, &token).await {
        Ok(body) if body.trim() == PROBE_BODY => Ok(()),
        Ok(body) => Err(FetchError::Other(format!(
            "answered {:?}, not this controller's responder",
            body.chars().take(80).collect::<String>()
        ))),
        Err(error) => Err(error),
    };
    let answers = domains.resolve(domain).await.map_err(|e| e.to_string());
    let diagnosis = domain_check::diagnose(
        domain,
        answers.as_ref().map_err(String::as_str),
        &region.global_accelerator_ips,
        &settings.ca_identity,
        Some(&check),
    );
    let blocking: Vec<String> = diagnosis
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .filter(|f| check.is_err() || f.code == domain_check::code::CAA_FORBIDS_CA)
        .map(|f| {
            if f.fix.is_empty() {
                f.message.clone()
            } else {
                format!("{} (fix: {})", f.message, f.fix)
            }
        })
        .collect();
    if blocking.is_empty() && check.is_ok() {
        return Ok(());
    }
    let mut why = blocking.join("; ");
    if let Err(error) = &check
        && why.is_empty()
    {
        why = format!("the HTTP-01 self-check failed: {error}");
    }
    Err(format!(
        "{why} (no order placed; `shopctl domain check {domain}` checks again)"
    ))
}

/// Why the CA rejected an order, from the order's and its challenges' errors.
fn rejection(order: &AcmeOrder) -> String {
    let mut reasons: Vec<String> = order
        .challenges
        .iter()
        .filter_map(|c| c.error.clone())
        .collect();
    if let Some(error) = &order.error {
        reasons.push(error.clone());
    }
    if reasons.is_empty() {
        "no reason given".to_owned()
    } else {
        reasons.join("; ")
    }
}

/// The status of a certificate waiting out its backoff.
fn backing_off(record: &CertificateRecord, next: i64, now: i64) -> Blocked {
    Blocked {
        outcome: requeue_at(Some(next), now),
        ..backing_off_as(
            record,
            record.wait_reason.map_or("BackingOff", WaitReason::as_str),
            now,
        )
    }
}

fn backing_off_as(record: &CertificateRecord, reason: &'static str, now: i64) -> Blocked {
    let error = record
        .last_error
        .as_deref()
        .unwrap_or("an earlier attempt failed");
    let message = match record.next_attempt_at {
        Some(next) if next > now && record.wait_reason != Some(WaitReason::BudgetExhausted) => {
            format!(
                "{error} (failure {} in a row; next attempt at {})",
                record.failures,
                utc(next)
            )
        }
        _ => error.to_owned(),
    };
    Blocked {
        reason,
        message,
        outcome: Outcome::Wait("certificate"),
    }
}

fn slots_full(region: &RegionConfig, slots: usize) -> Blocked {
    Blocked {
        reason: "CertificateSlotsFull",
        message: format!(
            "every HTTPS listener of region {} holds {slots} certificates: the ALB quota \
             \"Certificates per Application Load Balancer\" (default 25) is reached; raise it and \
             --certificate-slots, or add a listener to the region config",
            region.region
        ),
        outcome: Outcome::Wait("certificate_slots"),
    }
}

/// The moment in a suggested renewal window this domain renews at: spread over the window by
/// the domain's name, so many certificates with one window do not renew at once; at once
/// when the window has passed.
fn renewal_point(domain: &Hostname, window: &reconcilers::cloud::RenewalWindow) -> i64 {
    let span = window.end.saturating_sub(window.start).max(0);
    if span == 0 {
        return window.start;
    }
    let spread = domain.as_str().bytes().fold(0u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    let offset = i64::try_from(spread % u64::try_from(span).unwrap_or(1)).unwrap_or(0);
    window.start.saturating_add(offset)
}

fn millis_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Looks again at `at`, and not sooner than in a second.
fn requeue_at(at: Option<i64>, now: i64) -> Outcome {
    let wait = at.map_or(0, |at| at.saturating_sub(now)).max(1_000);
    Outcome::Requeue(millis_duration(wait))
}

fn millis_duration(millis: i64) -> Duration {
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn utc(millis: i64) -> String {
    format!("{} UTC", reconcilers::utc::minutes(millis))
}
