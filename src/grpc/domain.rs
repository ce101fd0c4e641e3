//! `CheckDomain`: resolves a custom domain, probes it like the CA would and returns the
//! findings of [`reconcilers::domain_check`], each with its fix.

use reconcilers::config::RegionConfig;
use reconcilers::domain_check::{self, LETS_ENCRYPT_CAA_IDENTITY};
use reconcilers::spec::parse_hostname;
use tonic::Status;

use super::proto::{CheckDomainRequest, CheckDomainResponse};
use super::{Services, convert, store_status};
use crate::domains::probe_token;

/// Runs the check for `request` against the region it names (or the only one configured).
pub(super) async fn check_domain(
    services: &Services,
    request: CheckDomainRequest,
) -> Result<CheckDomainResponse, Status> {
    let domains = services.domains.as_ref().ok_or_else(|| {
        Status::unavailable("this server has no DNS configuration to check domains with")
    })?;
    let domain = parse_hostname("domain", &request.domain).map_err(Status::invalid_argument)?;
    let region = region(services, &request.region).await?;

    let diagnosis = domain_check::check(
        domains.as_ref(),
        &domain,
        &region.global_accelerator_ips,
        LETS_ENCRYPT_CAA_IDENTITY,
        &probe_token(),
    )
    .await;
    tracing::info!(
        domain = %domain,
        region = %region.region,
        codes = ?diagnosis.codes(),
        "checked domain"
    );
    Ok(convert::check_domain(&domain, &region, &diagnosis))
}

/// The named region's configuration; with no name, the one region configured.
async fn region(services: &Services, name: &str) -> Result<RegionConfig, Status> {
    if !name.is_empty() {
        let config = services
            .store
            .get_region_config(name)
            .await
            .map_err(store_status)?;
        return config.ok_or_else(|| Status::not_found(format!("region {name} is not configured")));
    }
    let mut configs = services
        .store
        .list_region_configs()
        .await
        .map_err(store_status)?;
    match configs.len() {
        1 => Ok(configs.remove(0)),
        0 => Err(Status::failed_precondition("no region is configured")),
        _ => {
            let names: Vec<String> = configs.iter().map(|c| c.region.to_string()).collect();
            Err(Status::invalid_argument(format!(
                "region: name one of {}",
                names.join(", ")
            )))
        }
    }
}
