//! `AdminService`: the configuration tables, so operators never need raw SQL.

use tonic::{Request, Response, Status};

use super::auth::{Scope, require};
use super::convert::{
    instance_group, instance_group_from_proto, region_config, region_config_from_proto,
};
use super::patch;
use super::proto::admin_service_server::AdminService;
use super::proto::*;
use super::{Services, status_of, store_status};
use crate::store::now_millis;

pub(crate) struct AdminApi {
    services: Services,
}

impl AdminApi {
    pub(crate) fn new(services: Services) -> Self {
        Self { services }
    }
}

fn missing(what: &str) -> Status {
    Status::invalid_argument(format!("{what} is required"))
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn put_region_config(
        &self,
        request: Request<PutRegionConfigRequest>,
    ) -> Result<Response<RegionConfig>, Status> {
        require(&request, Scope::Write)?;
        let config = request
            .into_inner()
            .region_config
            .ok_or_else(|| missing("region_config"))?;
        let config = region_config_from_proto(config)?;
        let stored = self
            .services
            .store
            .put_region_config(&config, now_millis())
            .await;
        let stored = stored.map_err(store_status)?;
        tracing::info!(region = %stored.region, "put region config");
        Ok(Response::new(region_config(&stored)))
    }

    async fn get_region_config(
        &self,
        request: Request<GetRegionConfigRequest>,
    ) -> Result<Response<RegionConfig>, Status> {
        require(&request, Scope::Read)?;
        let region = request.into_inner().region;
        let config = self
            .services
            .store
            .get_region_config(&region)
            .await
            .map_err(store_status)?;
        let config = config
            .ok_or_else(|| Status::not_found(format!("region {region} is not configured")))?;
        Ok(Response::new(region_config(&config)))
    }

    async fn list_region_configs(
        &self,
        request: Request<ListRegionConfigsRequest>,
    ) -> Result<Response<ListRegionConfigsResponse>, Status> {
        require(&request, Scope::Read)?;
        let configs = self
            .services
            .store
            .list_region_configs()
            .await
            .map_err(store_status)?;
        let region_configs = configs.iter().map(region_config).collect();
        Ok(Response::new(ListRegionConfigsResponse { region_configs }))
    }

    async fn delete_region_config(
        &self,
        request: Request<DeleteRegionConfigRequest>,
    ) -> Result<Response<DeleteRegionConfigResponse>, Status> {
        require(&request, Scope::Write)?;
        let region = request.into_inner().region;
        let deleted = self
            .services
            .store
            .delete_region_config(&region)
            .await
            .map_err(store_status)?;
        if !deleted {
            return Err(Status::not_found(format!(
                "region {region} is not configured"
            )));
        }
        tracing::info!(region = %region, "deleted region config");
        Ok(Response::new(DeleteRegionConfigResponse {}))
    }

    async fn pause_region(
        &self,
        request: Request<PauseRegionRequest>,
    ) -> Result<Response<PauseRegionResponse>, Status> {
        require(&request, Scope::Write)?;
        let request = request.into_inner();
        let changed = self
            .services
            .intents
            .pause_region(&request.region, true, &request.reason)
            .await
            .map_err(status_of)?;
        tracing::info!(region = %request.region, changed, reason = %request.reason, "paused region");
        Ok(Response::new(PauseRegionResponse {
            region: request.region,
            changed,
        }))
    }

    async fn resume_region(
        &self,
        request: Request<ResumeRegionRequest>,
    ) -> Result<Response<ResumeRegionResponse>, Status> {
        require(&request, Scope::Write)?;
        let request = request.into_inner();
        let changed = self
            .services
            .intents
            .pause_region(&request.region, false, &request.reason)
            .await
            .map_err(status_of)?;
        tracing::info!(region = %request.region, changed, "resumed region");
        Ok(Response::new(ResumeRegionResponse {
            region: request.region,
            changed,
        }))
    }

    async fn put_instance_group(
        &self,
        request: Request<PutInstanceGroupRequest>,
    ) -> Result<Response<InstanceGroup>, Status> {
        require(&request, Scope::Write)?;
        let group = request
            .into_inner()
            .instance_group
            .ok_or_else(|| missing("instance_group"))?;
        let group = instance_group_from_proto(group)?;
        let stored = self
            .services
            .store
            .put_instance_group(&group, now_millis())
            .await;
        let stored = stored.map_err(store_status)?;
        tracing::info!(group = %stored.name, region = %stored.region, "put instance group");
        Ok(Response::new(instance_group(&stored)))
    }

    async fn get_instance_group(
        &self,
        request: Request<GetInstanceGroupRequest>,
    ) -> Result<Response<InstanceGroup>, Status> {
        require(&request, Scope::Read)?;
        let name = request.into_inner().name;
        let group = self
            .services
            .store
            .get_instance_group(&name)
            .await
            .map_err(store_status)?;
        let group = group
            .ok_or_else(|| Status::not_found(format!("instance group {name} does not exist")))?;
        Ok(Response::new(instance_group(&group)))
    }

    async fn list_instance_groups(
        &self,
        request: Request<ListInstanceGroupsRequest>,
    ) -> Result<Response<ListInstanceGroupsResponse>, Status> {
        require(&request, Scope::Read)?;
        let region = request.into_inner().region;
        let region = (!region.is_empty()).then_some(region.as_str());
        let groups = self
            .services
            .store
            .list_instance_groups(region)
            .await
            .map_err(store_status)?;
        let instance_groups = groups.iter().map(instance_group).collect();
        Ok(Response::new(ListInstanceGroupsResponse {
            instance_groups,
        }))
    }

    async fn delete_instance_group(
        &self,
        request: Request<DeleteInstanceGroupRequest>,
    ) -> Result<Response<DeleteInstanceGroupResponse>, Status> {
        require(&request, Scope::Write)?;
        let name = request.into_inner().name;
        let deleted = self
            .services
            .store
            .delete_instance_group(&name)
            .await
            .map_err(store_status)?;
        if !deleted {
            return Err(Status::not_found(format!(
                "instance group {name} does not exist"
            )));
        }
        tracing::info!(group = %name, "deleted instance group");
        Ok(Response::new(DeleteInstanceGroupResponse {}))
    }

    async fn put_patch_policy(
        &self,
        request: Request<PutPatchPolicyRequest>,
    ) -> Result<Response<PatchPolicy>, Status> {
        require(&request, Scope::Write)?;
        let policy = request
            .into_inner()
            .policy
            .ok_or_else(|| missing("policy"))?;
        let policy = patch::policy_from_proto(policy)?;
        let stored = self
            .services
            .store
            .put_patch_policy(&policy, now_millis())
            .await
            .map_err(store_status)?;
        tracing::info!(fleet = %stored.fleet, enabled = stored.enabled, "put patch policy");
        Ok(Response::new(patch::policy(&stored)))
    }

    async fn delete_patch_policy(
        &self,
        request: Request<DeletePatchPolicyRequest>,
    ) -> Result<Response<DeletePatchPolicyResponse>, Status> {
        require(&request, Scope::Write)?;
        let fleet = request.into_inner().fleet;
        let parsed = reconcilers::patching::FleetId::parse(&fleet)
            .map_err(|e| Status::invalid_argument(format!("fleet: {e}")))?;
        let deleted = self
            .services
            .store
            .delete_patch_policy(&parsed)
            .await
            .map_err(store_status)?;
        if !deleted {
            return Err(Status::not_found(format!(
                "fleet {fleet} has no patch policy"
            )));
        }
        tracing::info!(fleet = %fleet, "deleted patch policy");
        Ok(Response::new(DeletePatchPolicyResponse {}))
    }

    async fn get_patch_status(
        &self,
        request: Request<GetPatchStatusRequest>,
    ) -> Result<Response<GetPatchStatusResponse>, Status> {
        require(&request, Scope::Read)?;
        let region = request.into_inner().region;
        let region = (!region.is_empty()).then_some(region.as_str());
        let fleets = self
            .services
            .store
            .patch_status(region)
            .await
            .map_err(store_status)?;
        let now = now_millis();
        let fleets = fleets.iter().map(|f| patch::status(f, now)).collect();
        Ok(Response::new(GetPatchStatusResponse { fleets }))
    }
}
