//! `DevService`: breaks a shop's objects in the simulated AWS of `shop-controller dev`, so a
//! user can watch the controller find the drift and repair it. Never served by `serve`.

use std::sync::Arc;

use reconcilers::cloud::{CloudError, CloudProvider};
use reconcilers::names::target_group_name;
use reconcilers::nginx::ConfigFileName;
use tonic::{Request, Response, Status};

use super::auth::{Scope, require};
use super::proto::dev_service_server::DevService;
use super::proto::{BreakShopRequest, BreakShopResponse, BreakTarget};
use super::store_status;
use crate::store::Store;

pub(crate) struct DevApi {
    store: Arc<dyn Store>,
    cloud: Arc<dyn CloudProvider>,
}

impl DevApi {
    pub(crate) fn new(store: Arc<dyn Store>, cloud: Arc<dyn CloudProvider>) -> Self {
        Self { store, cloud }
    }
}

fn cloud_status(error: CloudError) -> Status {
    Status::unavailable(error.to_string())
}

#[tonic::async_trait]
impl DevService for DevApi {
    async fn break_shop(
        &self,
        request: Request<BreakShopRequest>,
    ) -> Result<Response<BreakShopResponse>, Status> {
        require(&request, Scope::Write)?;
        let request = request.into_inner();
        let target = BreakTarget::try_from(request.target)
            .ok()
            .filter(|t| *t != BreakTarget::Unspecified)
            .ok_or_else(|| Status::invalid_argument("target is required"))?;
        let view = self
            .store
            .get_shop(&request.shop_domain)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("shop {} not found", request.shop_domain)))?;
        let placed = view
            .placement
            .ok_or_else(|| Status::failed_precondition("the shop is not placed yet"))?;
        let spec = &view.record.spec;
        let lb = self.cloud.load_balancing(spec.region.as_str());
        let mut removed = Vec::new();

        if target == BreakTarget::NginxFile {
            let config = self
                .store
                .get_region_config(spec.region.as_str())
                .await
                .map_err(store_status)?
                .ok_or_else(|| Status::failed_precondition("the shop's region has no config"))?;
            let name = ConfigFileName::for_shop(&spec.shop_domain)
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            let path = std::path::Path::new(&config.nginx_config_dir).join(name.as_str());
            std::fs::remove_file(&path)
                .map_err(|e| Status::failed_precondition(format!("{}: {e}", path.display())))?;
            removed.push(format!("nginx file {}", path.display()));
            return Ok(Response::new(BreakShopResponse { removed }));
        }

        let name = target_group_name(&spec.shop_domain, placed.port);
        let group = lb
            .list_target_groups()
            .await
            .map_err(cloud_status)?
            .into_iter()
            .find(|g| g.name == name);
        if target == BreakTarget::Registration {
            let group =
                group.ok_or_else(|| Status::failed_precondition("the shop has no target group"))?;
            let targets = lb
                .describe_target_health(&group.arn)
                .await
                .map_err(cloud_status)?;
            let target = targets
                .into_iter()
                .next()
                .ok_or_else(|| Status::failed_precondition("the target group has no targets"))?;
            lb.deregister_targets(&group.arn, std::slice::from_ref(&target.target))
                .await
                .map_err(cloud_status)?;
            removed.push(format!(
                "registration of {} in {}",
                target.target.id, group.name
            ));
            return Ok(Response::new(BreakShopResponse { removed }));
        }

        // A target group in use cannot go before its listener: either target removes it.
        let listeners = lb
            .describe_listeners(&placed.nlb_arn)
            .await
            .map_err(cloud_status)?;
        for listener in listeners.iter().filter(|l| l.port == placed.port) {
            lb.delete_listener(&listener.arn)
                .await
                .map_err(cloud_status)?;
            removed.push(format!("listener {}", listener.arn));
        }
        if target == BreakTarget::TargetGroup
            && let Some(group) = group
        {
            lb.delete_target_group(&group.arn)
                .await
                .map_err(cloud_status)?;
            removed.push(format!("target group {}", group.arn));
        }
        if removed.is_empty() {
            return Err(Status::failed_precondition("nothing of that kind exists"));
        }
        Ok(Response::new(BreakShopResponse { removed }))
    }
}
