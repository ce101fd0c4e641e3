//! `shopctl`'s command line: the clap types for its arguments and subcommands, and the YAML
//! files `region put` and `group put` read. Sending requests belongs to `main`, printing to
//! `render`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use shop_controller::grpc::proto::{BreakTarget, InstanceGroup, RegionConfig};

use crate::CliError;

/// Operate a shop-controller: deploy and inspect shops, manage regions and instance groups.
#[derive(Debug, Parser)]
#[command(name = "shopctl", version)]
pub(crate) struct Cli {
    /// Address of the controller's gRPC API.
    #[arg(
        long,
        env = "SHOPCTL_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub(crate) server: String,
    /// Bearer token (read or write scope).
    #[arg(long, env = "SHOPCTL_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
    /// PEM CA certificate to trust for an https:// server.
    #[arg(long, env = "SHOPCTL_CA_CERT", global = true)]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    pub(crate) output: Output,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Record the desired spec of a shop; the controller converges to it.
    Deploy {
        /// ES domain of the shop, like example.es-hs.com.
        shop_domain: String,
        #[arg(long)]
        region: String,
        /// Bucket holding `<shop_domain>.zip`.
        #[arg(long)]
        source_bucket: String,
        /// S3 version of the zip; the newest one when omitted.
        #[arg(long)]
        source_version: Option<String>,
        #[arg(long)]
        custom_domain: Option<String>,
    },
    /// Restart the shop's processes.
    Restart {
        shop_domain: String,
        #[arg(long)]
        region: String,
    },
    /// Tear the shop down and remove it.
    Delete { shop_domain: String },
    /// Show a shop's spec and status.
    Get { shop_domain: String },
    /// List shops.
    List {
        #[arg(long)]
        region: Option<String>,
        /// Only shops that are not ready.
        #[arg(long)]
        not_ready: bool,
        /// Shops per request.
        #[arg(long, default_value_t = 500)]
        page_size: u32,
    },
    /// Print shops, then every change to them, until interrupted.
    Watch {
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        shop: Option<String>,
    },
    /// Stop reconciling a shop (teardown included) until `resume`.
    Pause {
        shop_domain: String,
        /// Why, for whoever finds the shop paused.
        #[arg(long)]
        reason: String,
    },
    /// Reconcile a paused shop again, at once.
    Resume {
        shop_domain: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show what the controller would do next for a shop, without doing it.
    Plan { shop_domain: String },
    /// Region configurations, and pausing a whole region.
    Region {
        #[command(subcommand)]
        command: RegionCommand,
    },
    /// OS patching of the fleets: policies, and when each fleet was last patched.
    Patch {
        #[command(subcommand)]
        command: crate::patch::PatchCommand,
    },
    /// EC2 instance groups.
    Group {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Custom domains.
    Domain {
        #[command(subcommand)]
        command: DomainCommand,
    },
    /// Development controller only: remove one of a shop's objects behind the controller's
    /// back, then watch the next resync heal it.
    Break {
        shop_domain: String,
        #[arg(value_enum)]
        what: BreakWhat,
    },
}

/// What `shopctl break` removes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum BreakWhat {
    Listener,
    TargetGroup,
    Registration,
    NginxFile,
}

impl BreakWhat {
    pub(crate) fn target(self) -> BreakTarget {
        match self {
            BreakWhat::Listener => BreakTarget::Listener,
            BreakWhat::TargetGroup => BreakTarget::TargetGroup,
            BreakWhat::Registration => BreakTarget::Registration,
            BreakWhat::NginxFile => BreakTarget::NginxFile,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum DomainCommand {
    /// Check a custom domain's DNS and an HTTP-01 probe; print each finding with its fix.
    /// Exits non-zero when a finding blocks the domain.
    Check {
        /// The custom domain, like shop.example.com.
        domain: String,
        /// The region the domain should lead to; optional when only one is configured.
        #[arg(long)]
        region: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RegionCommand {
    #[command(flatten)]
    Config(ConfigCommand),
    /// Stop reconciling every shop of the region until `resume`.
    Pause {
        region: String,
        #[arg(long)]
        reason: String,
    },
    /// Reconcile the region's shops again, at once.
    Resume {
        region: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Create or replace from a YAML file.
    Put {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    Get {
        name: String,
    },
    List {
        /// Only groups of this region.
        #[arg(long)]
        region: Option<String>,
    },
    Delete {
        name: String,
    },
}

/// `region.yaml`, as documented in the README.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegionFile {
    pub(crate) region: String,
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    pub(crate) codebuild_project: String,
    pub(crate) artifact_bucket: String,
    pub(crate) codedeploy_application: String,
    pub(crate) proxy_name_tag: String,
    pub(crate) nginx_config_dir: String,
    #[serde(default)]
    pub(crate) alb_https_listener_arns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) acme_responder_target_group_arn: Option<String>,
    #[serde(default)]
    pub(crate) global_accelerator_ips: Vec<String>,
    pub(crate) allowed_parent_domains: Vec<String>,
}

/// `group.yaml`, as documented in the README.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupFile {
    pub(crate) name: String,
    pub(crate) region: String,
    pub(crate) nlb_arns: Vec<String>,
    pub(crate) port_min: u32,
    pub(crate) port_max: u32,
    pub(crate) capacity: u32,
    pub(crate) codedeploy_deployment_group: String,
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
}

// The YAML files and the `get` output share one shape, so what `get` prints `put` accepts.

impl From<RegionFile> for RegionConfig {
    fn from(file: RegionFile) -> Self {
        RegionConfig {
            region: file.region,
            enabled: file.enabled,
            codebuild_project: file.codebuild_project,
            artifact_bucket: file.artifact_bucket,
            codedeploy_application: file.codedeploy_application,
            proxy_name_tag: file.proxy_name_tag,
            nginx_config_dir: file.nginx_config_dir,
            alb_https_listener_arns: file.alb_https_listener_arns,
            acme_responder_target_group_arn: file.acme_responder_target_group_arn,
            global_accelerator_ips: file.global_accelerator_ips,
            allowed_parent_domains: file.allowed_parent_domains,
            updated_at: None,
        }
    }
}

impl From<RegionConfig> for RegionFile {
    fn from(config: RegionConfig) -> Self {
        RegionFile {
            region: config.region,
            enabled: config.enabled,
            codebuild_project: config.codebuild_project,
            artifact_bucket: config.artifact_bucket,
            codedeploy_application: config.codedeploy_application,
            proxy_name_tag: config.proxy_name_tag,
            nginx_config_dir: config.nginx_config_dir,
            alb_https_listener_arns: config.alb_https_listener_arns,
            acme_responder_target_group_arn: config.acme_responder_target_group_arn,
            global_accelerator_ips: config.global_accelerator_ips,
            allowed_parent_domains: config.allowed_parent_domains,
        }
    }
}

impl From<GroupFile> for InstanceGroup {
    fn from(file: GroupFile) -> Self {
        InstanceGroup {
            name: file.name,
            region: file.region,
            nlb_arns: file.nlb_arns,
            port_min: file.port_min,
            port_max: file.port_max,
            capacity: file.capacity,
            codedeploy_deployment_group: file.codedeploy_deployment_group,
            enabled: file.enabled,
            updated_at: None,
        }
    }
}

impl From<InstanceGroup> for GroupFile {
    fn from(group: InstanceGroup) -> Self {
        GroupFile {
            name: group.name,
            region: group.region,
            nlb_arns: group.nlb_arns,
            port_min: group.port_min,
            port_max: group.port_max,
            capacity: group.capacity,
            codedeploy_deployment_group: group.codedeploy_deployment_group,
            enabled: group.enabled,
        }
    }
}

pub(crate) fn read_yaml<T: serde::de::DeserializeOwned>(path: &PathBuf) -> Result<T, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Input(format!("read {}: {e}", path.display())))?;
    serde_norway::from_str(&text).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))
}

fn yes() -> bool {
    true
}
