//! The nginx_config resource: the shop's server block in the region's config directory on
//! EFS, installed only after `nginx -t` passed for the whole directory, then a reload of the
//! proxy fleet through SSM, one proxy first and the rest after it succeeded. A file nginx
//! rejects is quarantined and the previous good one stays live.

use std::time::Duration;

use reconcilers::Hostname;
use reconcilers::cloud::RunCommand;
use reconcilers::config::RegionConfig;
use reconcilers::nginx::{self as render, ConfigFileName, FileDrift, ShopSite, Upstream};
use reconcilers::placement::Placed;
use reconcilers::status::ResourceKind;

use super::command::{Task, run_on};
use super::observe::Observations;
use super::{Blocked, Controller, Converged};
use crate::nginx::{DEFAULT_MAIN_CONFIG_TEMPLATE, NginxDir, NginxError};
use crate::runtime::Outcome;
use crate::store::{Lease, ShopView};

/// The shop's nginx file: where it goes, what it should say, how the live one differs.
pub(super) struct NginxSeen {
    dir: NginxDir,
    pub(super) file: ConfigFileName,
    text: String,
    pub(super) drift: FileDrift,
}

/// Checks the config before reloading, so a proxy never drops a working config.
const RELOAD: [&str; 2] = ["nginx -t", "nginx -s reload"];
/// The longest a reload of one batch of proxies may take.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

impl Controller {
    /// The config directory of a region.
    fn nginx_dir(&self, region: &RegionConfig) -> Result<NginxDir, Blocked> {
        NginxDir::new(
            &region.nginx_config_dir,
            &self.config.nginx_binary,
            DEFAULT_MAIN_CONFIG_TEMPLATE,
        )
        .map_err(|error| Blocked {
            reason: "NginxDirUnusable",
            message: error.to_string(),
            outcome: Outcome::Retry("nginx_dir"),
        })
    }

    pub(super) async fn nginx_config(
        &self,
        view: &ShopView,
        lease: &Lease,
    ) -> Result<Converged, Blocked> {
        if !Self::synced(view, ResourceKind::Listener) {
            return Err(Blocked::waiting(
                "WaitingForListener",
                "the shop's listener is not ready yet",
            ));
        }
        let region = self.region(view).await?;
        let placed = self.placement(view, &region).await?;
        let seen = self
            .observe_nginx(view, &region, &placed, &self.observations)
            .await?;
        let (dir, file, drift) = (&seen.dir, &seen.file, seen.drift.clone());
        let spec = &view.record.spec;
        if drift != FileDrift::InSync {
            self.fence(lease).await?;
            tracing::info!(shop = %spec.shop_domain, drift = ?drift, "installing nginx config");
            dir.install(file, &seen.text).await.map_err(nginx_error)?;
        }
        let proxies = if reload_due(view, &drift) {
            self.fence(lease).await?;
            Some(self.reload_proxies(&region).await?)
        } else {
            None
        };
        Ok(Converged {
            desired: format!(
                "{} for generation {}",
                file.as_str(),
                view.record.generation
            ),
            observed: match proxies {
                Some(count) => format!("installed, reloaded on {count} proxies"),
                None => previous_observed(view),
            },
            reason: "",
        })
    }

    /// The shop's file as it should be and how the live one differs, shared by the reconcile
    /// and the plan: reads only.
    pub(super) async fn observe_nginx(
        &self,
        view: &ShopView,
        region: &RegionConfig,
        placed: &Placed,
        observations: &Observations,
    ) -> Result<NginxSeen, Blocked> {
        let lb = self.cloud.load_balancing(region.region.as_str());
        let nlb = observations
            .load_balancer(lb.as_ref(), region.region.as_str(), &placed.nlb_arn)
            .await?;
        let dns_name = nlb.map(|n| n.dns_name).unwrap_or_default();
        let host = Hostname::parse(&dns_name).map_err(|error| Blocked {
            reason: "BadUpstream",
            message: format!("nlb dns name {dns_name:?} {error}"),
            outcome: Outcome::Retry("upstream"),
        })?;
        let spec = &view.record.spec;
        let site = ShopSite {
            shop_domain: spec.shop_domain.clone(),
            custom_domain: spec.custom_domain.clone(),
            upstream: Upstream {
                host,
                port: placed.port,
            },
            generation: view.record.generation,
        };
        let text = render::render(&site, &self.config.proxy);
        let file = file_name(&spec.shop_domain)?;
        let dir = self.nginx_dir(region)?;
        let observed = dir.read(&file).await.map_err(nginx_error)?;
        let drift = render::compare(&text, observed.as_deref());
        Ok(NginxSeen {
            dir,
            file,
            text,
            drift,
        })
    }

    /// Teardown, first step: the file goes (and the proxies reload) before the listener the
    /// file points at.
    pub(super) async fn delete_nginx_config(
        &self,
        view: &ShopView,
        lease: &Lease,
    ) -> Result<Converged, Blocked> {
        let region = self.region(view).await?;
        let dir = self.nginx_dir(&region)?;
        let file = file_name(&view.record.spec.shop_domain)?;
        let present = dir.read(&file).await.map_err(nginx_error)?.is_some();
        let reloaded = Self::deleted(view, ResourceKind::NginxConfig);
        if !present && reloaded {
            return Ok(Self::gone());
        }
        self.fence(lease).await?;
        let removed = dir.remove(&file).await.map_err(nginx_error)?;
        if removed {
            tracing::info!(shop = %view.record.spec.shop_domain, "removed nginx config");
        }
        // A file removed by a run that crashed before its reload is gone from the directory
        // but still loaded by the proxies: reload until the status says the teardown was done.
        if removed || !reloaded {
            self.reload_proxies(&region).await?;
        }
        Ok(Self::gone())
    }

    /// Reloads every proxy of the region, one first; returns how many reloaded.
    async fn reload_proxies(&self, region: &RegionConfig) -> Result<usize, Blocked> {
        let proxies = self
            .instance_ids(region.region.as_str(), &region.proxy_name_tag)
            .await?;
        let Some((first, rest)) = proxies.split_first() else {
            return Err(Blocked::waiting(
                "NoProxies",
                &format!("no running instance has Name tag {}", region.proxy_name_tag),
            ));
        };
        let ssm = self.cloud.run_command(region.region.as_str());
        reload(ssm.as_ref(), std::slice::from_ref(first)).await?;
        if !rest.is_empty() {
            reload(ssm.as_ref(), rest).await?;
        }
        Ok(proxies.len())
    }
}

/// Checks the config and reloads nginx on `instances`.
async fn reload(ssm: &dyn RunCommand, instances: &[String]) -> Result<(), Blocked> {
    let commands = RELOAD.iter().map(|c| (*c).to_owned()).collect();
    let comment = "shop-controller: reload nginx".to_owned();
    run_on(
        ssm,
        instances,
        Task::Reload,
        commands,
        comment,
        RELOAD_TIMEOUT,
    )
    .await
}

/// Whether the proxies must reload. A file already in place may not have been reloaded yet (a
/// crash in between): reload until this generation's status says it was.
pub(super) fn reload_due(view: &ShopView, drift: &FileDrift) -> bool {
    *drift != FileDrift::InSync || !Controller::synced(view, ResourceKind::NginxConfig)
}

fn file_name(shop: &Hostname) -> Result<ConfigFileName, Blocked> {
    ConfigFileName::for_shop(shop).map_err(|error| Blocked {
        reason: "ShopDomainTooLong",
        message: error.to_string(),
        outcome: Outcome::Wait("invalid"),
    })
}

fn previous_observed(view: &ShopView) -> String {
    view.resources
        .iter()
        .find(|r| r.kind == ResourceKind::NginxConfig)
        .map(|r| r.observed.clone())
        .unwrap_or_default()
}

/// A config nginx rejects is the shop's problem, not the fleet's: degraded, retried slowly.
fn nginx_error(error: NginxError) -> Blocked {
    let reason = match error {
        NginxError::CheckCandidate { .. } => "Quarantined",
        NginxError::CheckConfig { .. } => "FleetConfigBroken",
        _ => "NginxDirError",
    };
    Blocked {
        reason,
        message: error.to_string(),
        outcome: Outcome::Retry(error.kind()),
    }
}
