//! The restart resource: when the spec's `restart_generation` moves past the last one done,
//! restart the shop's process on its instances through SSM, one instance at a time so the shop
//! stays up, and record the result per instance. The command comes from
//! [`RestartCommand`](reconcilers::shell::RestartCommand): only validated values, quoted.

use std::time::Duration;

use reconcilers::cloud::RunCommand;
use reconcilers::shell::RestartCommand;
use reconcilers::status::{ResourceKind, SyncState};

use super::command::{Task, run_on};
use super::{Blocked, Controller, Converged};
use crate::store::{Lease, ShopView};

/// The longest one instance's restart may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The desired value recorded in status; how a later run knows which restart was done.
fn desired(restart_generation: i64) -> String {
    format!("restart {restart_generation}")
}

/// Whether the spec asks for a restart the status does not show done.
pub(super) fn restart_due(view: &ShopView) -> bool {
    let wanted = view.record.restart_generation;
    let done = view.resources.iter().any(|r| {
        r.kind == ResourceKind::Restart
            && r.sync == SyncState::Synced
            && r.desired == desired(wanted)
    });
    wanted > 0 && !done
}

impl Controller {
    pub(super) async fn restart(
        &self,
        view: &ShopView,
        lease: &Lease,
    ) -> Result<Converged, Blocked> {
        let wanted = view.record.restart_generation;
        let previous = view
            .resources
            .iter()
            .find(|r| r.kind == ResourceKind::Restart);
        if !restart_due(view) {
            return Ok(Converged {
                desired: desired(wanted),
                observed: previous.map(|p| p.observed.clone()).unwrap_or_default(),
                reason: "",
            });
        }
        let region = self.region(view).await?;
        let placed = self.placement(view, &region).await?;
        let instances = self
            .cloud
            .fleet(region.region.as_str())
            .running_instances(&placed.instance_group)
            .await?;
        let command = RestartCommand::new(&view.record.spec.shop_domain, placed.port);
        let ssm = self.cloud.run_command(region.region.as_str());
        // One at a time: the others keep serving while one restarts.
        let mut restarted = Vec::new();
        for instance in &instances {
            self.fence(lease).await?;
            restart_one(ssm.as_ref(), &command, &instance.id).await?;
            restarted.push(instance.id.clone());
        }
        tracing::info!(shop = %view.record.spec.shop_domain, restart_generation = wanted, instances = restarted.len(), "restarted shop");
        Ok(Converged {
            desired: desired(wanted),
            observed: format!("restarted on {}", restarted.join(", ")),
            reason: "",
        })
    }
}

async fn restart_one(
    ssm: &dyn RunCommand,
    command: &RestartCommand,
    instance: &str,
) -> Result<(), Blocked> {
    let instances = [instance.to_owned()];
    let (commands, comment) = (command.commands(), command.comment());
    run_on(ssm, &instances, Task::Restart, commands, comment, TIMEOUT).await
}
