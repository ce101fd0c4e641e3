//! `ShopService`: writes record intent through [`Intents`](crate::intent::Intents); reads show
//! spec and status side by side.

use std::pin::Pin;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::{Scope, require};
use super::convert;
use super::proto::shop_service_server::ShopService;
use super::proto::*;
use super::{Services, status_of, store_status};
use crate::intent::DeployRequest;
use crate::store::{Change, ShopQuery, Store, now_millis};

const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;

pub(crate) struct ShopApi {
    services: Services,
}

impl ShopApi {
    pub(crate) fn new(services: Services) -> Self {
        Self { services }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchShopsEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ShopService for ShopApi {
    async fn deploy_shop(
        &self,
        request: Request<DeployShopRequest>,
    ) -> Result<Response<DeployShopResponse>, Status> {
        require(&request, Scope::Write)?;
        let request = request.into_inner();
        let outcome = self
            .services
            .intents
            .deploy(DeployRequest {
                shop_domain: request.shop_domain,
                region: request.region,
                source_bucket: request.source_bucket,
                source_version: request.source_version,
                custom_domain: request.custom_domain,
            })
            .await
            .map_err(status_of)?;
        let record = &outcome.record;
        tracing::info!(
            shop = %record.spec.shop_domain,
            generation = record.generation,
            changed = outcome.changed,
            "recorded deploy"
        );
        Ok(Response::new(DeployShopResponse {
            shop_domain: record.spec.shop_domain.to_string(),
            generation: record.generation,
            resolved_source_version: record.spec.source_version.to_string(),
            changed: outcome.changed,
        }))
    }

    async fn restart_shop(
        &self,
        request: Request<RestartShopRequest>,
    ) -> Result<Response<RestartShopResponse>, Status> {
        require(&request, Scope::Write)?;
        let request = request.into_inner();
        let record = self
            .services
            .intents
            .restart(&request.shop_domain, &request.region)
            .await
            .map_err(status_of)?;
        tracing::info!(
            shop = %record.spec.shop_domain,
            restart_generation = record.restart_generation,
            "recorded restart"
        );
        Ok(Response::new(RestartShopResponse {
            shop_domain: record.spec.shop_domain.to_string(),
            generation: record.generation,
            restart_generation: record.restart_generation,
        }))
    }

    async fn delete_shop(
        &self,
        request: Request<DeleteShopRequest>,
    ) -> Result<Response<DeleteShopResponse>, Status> {
        require(&request, Scope::Write)?;
        let shop_domain = request.into_inner().shop_domain;
        let record = self
            .services
            .intents
            .delete(&shop_domain)
            .await
            .map_err(status_of)?;
        tracing::info!(shop = %record.spec.shop_domain, generation = record.generation, "recorded delete");
        Ok(Response::new(DeleteShopResponse {
            shop_domain: record.spec.shop_domain.to_string(),
            generation: record.generation,
        }))
    }

    async fn get_shop(&self, request: Request<GetShopRequest>) -> Result<Response<Shop>, Status> {
        require(&request, Scope::Read)?;
        let shop_domain = request.into_inner().shop_domain;
        let view = self
            .services
            .store
            .get_shop(&shop_domain)
            .await
            .map_err(store_status)?;
        let view =
            view.ok_or_else(|| Status::not_found(format!("shop {shop_domain} not found")))?;
        Ok(Response::new(convert::shop(&view, now_millis())))
    }

    async fn list_shops(
        &self,
        request: Request<ListShopsRequest>,
    ) -> Result<Response<ListShopsResponse>, Status> {
        require(&request, Scope::Read)?;
        let request = request.into_inner();
        let limit = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let query = ShopQuery {
            region: (!request.region.is_empty()).then_some(request.region),
            only_not_ready: request.only_not_ready,
            after: decode_page_token(&request.page_token)?,
            limit,
        };
        let page = self
            .services
            .store
            .list_shops(&query)
            .await
            .map_err(store_status)?;
        let now = now_millis();
        Ok(Response::new(ListShopsResponse {
            shops: page
                .shops
                .iter()
                .map(|view| convert::shop(view, now))
                .collect(),
            next_page_token: page
                .next_after
                .map(|after| URL_SAFE_NO_PAD.encode(after))
                .unwrap_or_default(),
        }))
    }

    async fn pause_shop(
        &self,
        request: Request<PauseShopRequest>,
    ) -> Result<Response<PauseShopResponse>, Status> {
        require(&request, Scope::Write)?;
        let request = request.into_inner();
        let changed = self
            .services
            .intents
            .pause_shop(&request.shop_domain, true, &request.reason)
            .await
            .map_err(status_of)?;
        tracing::info!(shop = %request.shop_domain, changed, reason = %request.reason, "paused shop");
        Ok(Response::new(PauseShopResponse {
            shop_domain: request.shop_domain,
            changed,
        }))
    }

    async fn resume_shop(
        &self,
        request: Request<ResumeShopRequest>,
    ) -> Result<Response<ResumeShopResponse>, Status> {
        require(&request, Scope::Write)?;
        let request = request.into_inner();
        let changed = self
            .services
            .intents
            .pause_shop(&request.shop_domain, false, &request.reason)
            .await
            .map_err(status_of)?;
        tracing::info!(shop = %request.shop_domain, changed, "resumed shop");
        Ok(Response::new(ResumeShopResponse {
            shop_domain: request.shop_domain,
            changed,
        }))
    }

    async fn plan_shop(
        &self,
        request: Request<PlanShopRequest>,
    ) -> Result<Response<PlanShopResponse>, Status> {
        require(&request, Scope::Read)?;
        let shop_domain = request.into_inner().shop_domain;
        let planner = self.services.planner.as_ref().ok_or_else(|| {
            Status::unavailable("this server has no controller configuration to plan with")
        })?;
        let plan = planner.plan(&shop_domain).await.map_err(store_status)?;
        let plan =
            plan.ok_or_else(|| Status::not_found(format!("shop {shop_domain} not found")))?;
        Ok(Response::new(convert::plan(&plan)))
    }

    async fn check_domain(
        &self,
        request: Request<CheckDomainRequest>,
    ) -> Result<Response<CheckDomainResponse>, Status> {
        require(&request, Scope::Read)?;
        let response = super::domain::check_domain(&self.services, request.into_inner()).await?;
        Ok(Response::new(response))
    }

    type WatchShopsStream = WatchStream;

    async fn watch_shops(
        &self,
        request: Request<WatchShopsRequest>,
    ) -> Result<Response<Self::WatchShopsStream>, Status> {
        require(&request, Scope::Read)?;
        let filter = request.into_inner();
        let (sender, receiver) = mpsc::channel(64);
        let store = self.services.store.clone();
        // Subscribe before the snapshot so no change between the two is missed.
        let changes = store.subscribe();
        tokio::spawn(async move {
            if let Err(status) = watch(store.as_ref(), &filter, changes, &sender).await {
                let _ = sender.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

fn decode_page_token(token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Status::invalid_argument("page_token is not one this server handed out");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    String::from_utf8(bytes).map(Some).map_err(|_| invalid())
}

type Sender = mpsc::Sender<Result<WatchShopsEvent, Status>>;

/// Sends the matching shops, then each change, until the client goes away. A watcher that
/// falls behind the change feed gets a fresh snapshot instead of a gap.
async fn watch(
    store: &dyn Store,
    filter: &WatchShopsRequest,
    mut changes: broadcast::Receiver<Change>,
    sender: &Sender,
) -> Result<(), Status> {
    if !snapshot(store, filter, sender).await? {
        return Ok(());
    }
    loop {
        let shop_domain = tokio::select! {
            change = changes.recv() => change,
            () = sender.closed() => return Ok(()),
        };
        let shop_domain = match shop_domain {
            Ok(change) => change.shop().to_owned(),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "watcher fell behind; sending a fresh snapshot");
                if !snapshot(store, filter, sender).await? {
                    return Ok(());
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        if !filter.shop_domain.is_empty() && filter.shop_domain != shop_domain {
            continue;
        }
        let view = store.get_shop(&shop_domain).await.map_err(store_status)?;
        let event = match view {
            Some(view)
                if filter.region.is_empty()
                    || view.record.spec.region.as_str() == filter.region =>
            {
                event(
                    watch_shops_event::Type::Updated,
                    convert::shop(&view, now_millis()),
                )
            }
            Some(_) => continue,
            None => event(watch_shops_event::Type::Removed, removed(&shop_domain)),
        };
        if sender.send(Ok(event)).await.is_err() {
            return Ok(());
        }
    }
}

/// Sends every matching shop; false when the client has gone.
async fn snapshot(
    store: &dyn Store,
    filter: &WatchShopsRequest,
    sender: &Sender,
) -> Result<bool, Status> {
    let mut query = ShopQuery {
        region: (!filter.region.is_empty()).then(|| filter.region.clone()),
        only_not_ready: false,
        after: None,
        limit: MAX_PAGE_SIZE,
    };
    loop {
        let page = store.list_shops(&query).await.map_err(store_status)?;
        for view in &page.shops {
            if !filter.shop_domain.is_empty()
                && view.record.spec.shop_domain.as_str() != filter.shop_domain
            {
                continue;
            }
            let shop = convert::shop(view, now_millis());
            if sender
                .send(Ok(event(watch_shops_event::Type::Snapshot, shop)))
                .await
                .is_err()
            {
                return Ok(false);
            }
        }
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => return Ok(true),
        }
    }
}

fn event(kind: watch_shops_event::Type, shop: Shop) -> WatchShopsEvent {
    WatchShopsEvent {
        r#type: kind.into(),
        shop: Some(shop),
    }
}

fn removed(shop_domain: &str) -> Shop {
    Shop {
        spec: Some(ShopSpec {
            shop_domain: shop_domain.to_owned(),
            ..ShopSpec::default()
        }),
        status: None,
    }
}
