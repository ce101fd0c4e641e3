//! Operator pauses (#6): a shop paused by itself or through its region is loaded and left
//! alone, teardown included. Its reconciles make no cloud call and write no status, so what the
//! status said before the pause stays readable; resyncs keep coming, and a resume announces a
//! spec change that wakes every key of the shop at once.

use reconcilers::status::ResourceKind;

use super::Controller;
use crate::runtime::Outcome;
use crate::store::{Pause, ShopView};

impl Controller {
    /// The reconcile of a paused shop's key.
    pub(super) async fn paused(
        &self,
        view: &ShopView,
        kind: ResourceKind,
        pause: &Pause,
    ) -> Outcome {
        let shop = view.record.spec.shop_domain.as_str();
        tracing::debug!(
            shop,
            kind = kind.as_str(),
            region_paused = pause.region,
            reason = %pause.reason,
            "shop is paused; not reconciling"
        );
        if kind == ResourceKind::Deployment {
            self.leave_deployment_queue(shop).await;
        }
        Outcome::Done
    }

    /// A paused shop must not hold up its group's deployment queue: a place it only waited in
    /// is given up (a resume queues it again, at the back), and the next shop is woken. A
    /// deployment it already started keeps its intent, so the resume collects the result
    /// instead of deploying again; the shops behind it go ahead once the group's own state
    /// shows it idle (`Controller::only_paused_ahead`).
    async fn leave_deployment_queue(&self, shop: &str) {
        let queued = match self.store.intent(shop, ResourceKind::Deployment).await {
            Ok(Some(intent)) if intent.external_id.is_none() => intent,
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(shop, %error, "could not read a paused shop's deployment intent");
                return;
            }
        };
        if let Err(error) = self
            .store
            .clear_intent(shop, ResourceKind::Deployment)
            .await
        {
            tracing::warn!(shop, %error, "could not leave the deployment queue");
            return;
        }
        self.wake_next_deployment(&queued.scope).await;
    }
}
