//! `shopctl`: the operator's command line for a shop-controller.
//!
//! Errors print the server's message and exit non-zero; `-o json` prints machine-readable
//! output.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shop_controller::grpc::proto::admin_service_client::AdminServiceClient;
use shop_controller::grpc::proto::shop_service_client::ShopServiceClient;
use shop_controller::grpc::proto::*;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

/// Operate a shop-controller: deploy and inspect shops, manage regions and instance groups.
#[derive(Debug, Parser)]
#[command(name = "shopctl", version)]
struct Cli {
    /// Address of the controller's gRPC API.
    #[arg(
        long,
        env = "SHOPCTL_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// Bearer token (read or write scope).
    #[arg(long, env = "SHOPCTL_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// PEM CA certificate to trust for an https:// server.
    #[arg(long, env = "SHOPCTL_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// Region configurations.
    Region {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// EC2 instance groups.
    Group {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
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
struct RegionFile {
    region: String,
    #[serde(default = "yes")]
    enabled: bool,
    codebuild_project: String,
    artifact_bucket: String,
    codedeploy_application: String,
    proxy_name_tag: String,
    nginx_config_dir: String,
    #[serde(default)]
    alb_https_listener_arns: Vec<String>,
    #[serde(default)]
    global_accelerator_ips: Vec<String>,
    allowed_parent_domains: Vec<String>,
}

/// `group.yaml`, as documented in the README.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    name: String,
    region: String,
    nlb_arns: Vec<String>,
    port_min: u32,
    port_max: u32,
    capacity: u32,
    codedeploy_deployment_group: String,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{}", .0.message())]
    Status(#[from] Status),
    #[error("connect to {server}: {source}")]
    Connect {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{0}")]
    Input(String),
}

#[derive(Clone)]
struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(cli: &Cli) -> Result<(Channel, Bearer), CliError> {
    let connect_error = |source| CliError::Connect {
        server: cli.server.clone(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(cli.server.clone()).map_err(connect_error)?;
    if cli.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(path) = &cli.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| CliError::Input(format!("read {}: {e}", path.display())))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(connect_error)?;
    }
    let channel = endpoint.connect().await.map_err(connect_error)?;
    let bearer = match &cli.token {
        Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| {
            CliError::Input("the token has characters a header cannot carry".into())
        })?),
        None => None,
    };
    Ok((channel, Bearer(bearer)))
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let (channel, bearer) = connect(&cli).await?;
    let mut shops = ShopServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut admin = AdminServiceClient::with_interceptor(channel, bearer);
    let output = cli.output;
    match cli.command {
        Command::Deploy {
            shop_domain,
            region,
            source_bucket,
            source_version,
            custom_domain,
        } => {
            let request = DeployShopRequest {
                shop_domain,
                region,
                source_bucket,
                source_version,
                custom_domain,
            };
            let response = shops.deploy_shop(request).await?.into_inner();
            let verb = if response.changed {
                "recorded"
            } else {
                "unchanged"
            };
            let text = format!(
                "{}: {verb} at generation {} (source version {})",
                response.shop_domain, response.generation, response.resolved_source_version
            );
            let value = json!({
                "shop_domain": response.shop_domain,
                "generation": response.generation,
                "resolved_source_version": response.resolved_source_version,
                "changed": response.changed,
            });
            print(output, &text, &value);
        }
        Command::Restart {
            shop_domain,
            region,
        } => {
            let response = shops
                .restart_shop(RestartShopRequest {
                    shop_domain,
                    region,
                })
                .await?
                .into_inner();
            let text = format!(
                "{}: restart {} requested",
                response.shop_domain, response.restart_generation
            );
            let value = json!({
                "shop_domain": response.shop_domain,
                "generation": response.generation,
                "restart_generation": response.restart_generation,
            });
            print(output, &text, &value);
        }
        Command::Delete { shop_domain } => {
            let response = shops
                .delete_shop(DeleteShopRequest { shop_domain })
                .await?
                .into_inner();
            let text = format!(
                "{}: deletion requested at generation {}",
                response.shop_domain, response.generation
            );
            let value =
                json!({ "shop_domain": response.shop_domain, "generation": response.generation });
            print(output, &text, &value);
        }
        Command::Get { shop_domain } => {
            let shop = shops
                .get_shop(GetShopRequest { shop_domain })
                .await?
                .into_inner();
            print(output, &shop_details(&shop), &shop_json(&shop));
        }
        Command::List {
            region,
            not_ready,
            page_size,
        } => list(&mut shops, output, region, not_ready, page_size).await?,
        Command::Watch { region, shop } => {
            let request = WatchShopsRequest {
                region: region.unwrap_or_default(),
                shop_domain: shop.unwrap_or_default(),
            };
            let mut stream = shops.watch_shops(request).await?.into_inner();
            while let Some(event) = stream.next().await {
                let event = event?;
                let kind = watch_shops_event::Type::try_from(event.r#type)
                    .map(|t| t.as_str_name().trim_start_matches("TYPE_").to_lowercase())
                    .unwrap_or_default();
                let Some(shop) = event.shop else { continue };
                let mut value = shop_json(&shop);
                value["event"] = json!(kind);
                print(output, &format!("{kind:<8} {}", shop_row(&shop)), &value);
            }
        }
        Command::Region { command } => region(&mut admin, output, command).await?,
        Command::Group { command } => group(&mut admin, output, command).await?,
    }
    Ok(())
}

async fn list(
    shops: &mut ShopServiceClient<Authed>,
    output: Output,
    region: Option<String>,
    not_ready: bool,
    page_size: u32,
) -> Result<(), CliError> {
    let mut request = ListShopsRequest {
        region: region.unwrap_or_default(),
        only_not_ready: not_ready,
        page_size,
        page_token: String::new(),
    };
    let mut all = Vec::new();
    loop {
        let page = shops.list_shops(request.clone()).await?.into_inner();
        all.extend(page.shops);
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let mut text = format!(
        "{:<40} {:<14} {:>5} {:<6} BLOCKED BY",
        "SHOP", "REGION", "GEN", "READY"
    );
    for shop in &all {
        text.push('\n');
        text.push_str(&shop_row(shop));
    }
    print(
        output,
        &text,
        &Value::Array(all.iter().map(shop_json).collect()),
    );
    Ok(())
}

async fn region(
    admin: &mut AdminServiceClient<Authed>,
    output: Output,
    command: ConfigCommand,
) -> Result<(), CliError> {
    match command {
        ConfigCommand::Put { file } => {
            let parsed: RegionFile = read_yaml(&file)?;
            let config = RegionConfig {
                region: parsed.region,
                enabled: parsed.enabled,
                codebuild_project: parsed.codebuild_project,
                artifact_bucket: parsed.artifact_bucket,
                codedeploy_application: parsed.codedeploy_application,
                proxy_name_tag: parsed.proxy_name_tag,
                nginx_config_dir: parsed.nginx_config_dir,
                alb_https_listener_arns: parsed.alb_https_listener_arns,
                global_accelerator_ips: parsed.global_accelerator_ips,
                allowed_parent_domains: parsed.allowed_parent_domains,
                updated_at: None,
            };
            let stored = admin
                .put_region_config(PutRegionConfigRequest {
                    region_config: Some(config),
                })
                .await?;
            let stored = stored.into_inner();
            print(
                output,
                &format!("region {} stored", stored.region),
                &region_json(&stored),
            );
        }
        ConfigCommand::Get { name } => {
            let config = admin
                .get_region_config(GetRegionConfigRequest { region: name })
                .await?
                .into_inner();
            print(output, &yaml(&region_json(&config)), &region_json(&config));
        }
        ConfigCommand::List { .. } => {
            let list = admin
                .list_region_configs(ListRegionConfigsRequest {})
                .await?
                .into_inner();
            let mut text = format!(
                "{:<16} {:<8} {:<24} PARENT DOMAINS",
                "REGION", "ENABLED", "CODEBUILD PROJECT"
            );
            for c in &list.region_configs {
                let parents = c.allowed_parent_domains.join(",");
                text.push_str(&format!(
                    "\n{:<16} {:<8} {:<24} {parents}",
                    c.region, c.enabled, c.codebuild_project
                ));
            }
            print(
                output,
                &text,
                &Value::Array(list.region_configs.iter().map(region_json).collect()),
            );
        }
        ConfigCommand::Delete { name } => {
            admin
                .delete_region_config(DeleteRegionConfigRequest {
                    region: name.clone(),
                })
                .await?;
            print(
                output,
                &format!("region {name} deleted"),
                &json!({ "deleted": name }),
            );
        }
    }
    Ok(())
}

async fn group(
    admin: &mut AdminServiceClient<Authed>,
    output: Output,
    command: ConfigCommand,
) -> Result<(), CliError> {
    match command {
        ConfigCommand::Put { file } => {
            let parsed: GroupFile = read_yaml(&file)?;
            let group = InstanceGroup {
                name: parsed.name,
                region: parsed.region,
                nlb_arns: parsed.nlb_arns,
                port_min: parsed.port_min,
                port_max: parsed.port_max,
                capacity: parsed.capacity,
                codedeploy_deployment_group: parsed.codedeploy_deployment_group,
                enabled: parsed.enabled,
                updated_at: None,
            };
            let stored = admin
                .put_instance_group(PutInstanceGroupRequest {
                    instance_group: Some(group),
                })
                .await?;
            let stored = stored.into_inner();
            print(
                output,
                &format!("instance group {} stored", stored.name),
                &group_json(&stored),
            );
        }
        ConfigCommand::Get { name } => {
            let group = admin
                .get_instance_group(GetInstanceGroupRequest { name })
                .await?
                .into_inner();
            print(output, &yaml(&group_json(&group)), &group_json(&group));
        }
        ConfigCommand::List { region } => {
            let request = ListInstanceGroupsRequest {
                region: region.unwrap_or_default(),
            };
            let list = admin.list_instance_groups(request).await?.into_inner();
            let mut text = format!(
                "{:<24} {:<16} {:<13} {:>8} ENABLED",
                "NAME", "REGION", "PORTS", "CAPACITY"
            );
            for g in &list.instance_groups {
                let ports = format!("{}-{}", g.port_min, g.port_max);
                text.push_str(&format!(
                    "\n{:<24} {:<16} {ports:<13} {:>8} {}",
                    g.name, g.region, g.capacity, g.enabled
                ));
            }
            print(
                output,
                &text,
                &Value::Array(list.instance_groups.iter().map(group_json).collect()),
            );
        }
        ConfigCommand::Delete { name } => {
            admin
                .delete_instance_group(DeleteInstanceGroupRequest { name: name.clone() })
                .await?;
            print(
                output,
                &format!("instance group {name} deleted"),
                &json!({ "deleted": name }),
            );
        }
    }
    Ok(())
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &PathBuf) -> Result<T, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Input(format!("read {}: {e}", path.display())))?;
    serde_norway::from_str(&text).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))
}

fn yaml(value: &Value) -> String {
    serde_norway::to_string(value).unwrap_or_else(|_| value.to_string())
}

#[expect(clippy::print_stdout, reason = "shopctl's output is its job")]
fn print(output: Output, text: &str, value: &Value) {
    match output {
        Output::Table => println!("{}", text.trim_end()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
    }
}

fn time(timestamp: Option<&prost_types::Timestamp>) -> Value {
    match timestamp {
        Some(t) if t.seconds != 0 || t.nanos != 0 => {
            json!(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        }
        _ => Value::Null,
    }
}

fn enum_name(name: Option<&str>, prefix: &str) -> String {
    name.map(|n| n.trim_start_matches(prefix).to_lowercase())
        .unwrap_or_default()
}

fn ready(shop: &Shop) -> &'static str {
    let status = shop.status.as_ref();
    let ready = status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.r#type == ConditionType::Ready as i32)
    });
    match ready.map(|c| c.status) {
        Some(s) if s == ConditionStatus::True as i32 => "yes",
        Some(s) if s == ConditionStatus::False as i32 => "no",
        _ => "?",
    }
}

fn shop_row(shop: &Shop) -> String {
    let spec = shop.spec.clone().unwrap_or_default();
    let blocked = shop
        .status
        .as_ref()
        .and_then(|s| s.blocked_by.as_ref())
        .map(|b| {
            let kind = ResourceKind::try_from(b.kind).map(|k| k.as_str_name()).ok();
            format!("{} ({})", enum_name(kind, "RESOURCE_KIND_"), b.reason)
        })
        .unwrap_or_default();
    let deleting = if spec.deletion_requested_at.is_some() {
        " [deleting]"
    } else {
        ""
    };
    format!(
        "{:<40} {:<14} {:>5} {:<6} {blocked}{deleting}",
        spec.shop_domain,
        spec.region,
        spec.generation,
        ready(shop)
    )
}

fn shop_details(shop: &Shop) -> String {
    let spec = shop.spec.clone().unwrap_or_default();
    let mut out = format!(
        "Shop:            {}\nRegion:          {}\nSource:          s3://{}/{}.zip @ {}\n",
        spec.shop_domain, spec.region, spec.source_bucket, spec.shop_domain, spec.source_version
    );
    if let Some(custom) = &spec.custom_domain {
        out.push_str(&format!("Custom domain:   {custom}\n"));
    }
    out.push_str(&format!(
        "Generation:      {} (restart {})\nReady:           {}\n",
        spec.generation,
        spec.restart_generation,
        ready(shop)
    ));
    if spec.deletion_requested_at.is_some() {
        out.push_str("Deletion:        requested\n");
    }
    let Some(status) = &shop.status else {
        return out;
    };
    if let Some(placement) = &status.placement {
        out.push_str(&format!(
            "Placement:       {} port {} on {}\n",
            placement.instance_group, placement.port, placement.nlb_arn
        ));
    }
    if let Some(blocker) = &status.blocked_by {
        let kind = ResourceKind::try_from(blocker.kind)
            .map(|k| k.as_str_name())
            .ok();
        out.push_str(&format!(
            "Blocked by:      {}: {} {}\n",
            enum_name(kind, "RESOURCE_KIND_"),
            blocker.reason,
            blocker.message
        ));
    }
    if !status.resources.is_empty() {
        out.push_str(&format!(
            "\n{:<14} {:<12} {:<12} {:>5} REASON\n",
            "RESOURCE", "SYNC", "HEALTH", "GEN"
        ));
        for r in &status.resources {
            let kind = ResourceKind::try_from(r.kind).map(|k| k.as_str_name()).ok();
            let sync = SyncState::try_from(r.sync).map(|k| k.as_str_name()).ok();
            let health = Health::try_from(r.health).map(|k| k.as_str_name()).ok();
            out.push_str(&format!(
                "{:<14} {:<12} {:<12} {:>5} {} {}\n",
                enum_name(kind, "RESOURCE_KIND_"),
                enum_name(sync, "SYNC_STATE_"),
                enum_name(health, "HEALTH_"),
                r.observed_generation,
                r.reason,
                r.message
            ));
        }
    }
    out
}

fn shop_json(shop: &Shop) -> Value {
    let spec = shop.spec.clone().unwrap_or_default();
    let status = shop.status.clone().unwrap_or_default();
    json!({
        "spec": {
            "shop_domain": spec.shop_domain,
            "region": spec.region,
            "source_bucket": spec.source_bucket,
            "source_version": spec.source_version,
            "custom_domain": spec.custom_domain,
            "generation": spec.generation,
            "restart_generation": spec.restart_generation,
            "deletion_requested_at": time(spec.deletion_requested_at.as_ref()),
            "created_at": time(spec.created_at.as_ref()),
            "updated_at": time(spec.updated_at.as_ref()),
        },
        "status": {
            "ready": ready(shop),
            "conditions": status.conditions.iter().map(|c| json!({
                "type": enum_name(ConditionType::try_from(c.r#type).map(|t| t.as_str_name()).ok(), "CONDITION_TYPE_"),
                "status": enum_name(ConditionStatus::try_from(c.status).map(|t| t.as_str_name()).ok(), "CONDITION_STATUS_"),
                "reason": c.reason,
                "message": c.message,
                "observed_generation": c.observed_generation,
            })).collect::<Vec<_>>(),
            "resources": status.resources.iter().map(|r| json!({
                "kind": enum_name(ResourceKind::try_from(r.kind).map(|t| t.as_str_name()).ok(), "RESOURCE_KIND_"),
                "desired": r.desired,
                "observed": r.observed,
                "sync": enum_name(SyncState::try_from(r.sync).map(|t| t.as_str_name()).ok(), "SYNC_STATE_"),
                "health": enum_name(Health::try_from(r.health).map(|t| t.as_str_name()).ok(), "HEALTH_"),
                "reason": r.reason,
                "message": r.message,
                "observed_generation": r.observed_generation,
                "attempts": r.attempts,
                "next_attempt_at": time(r.next_attempt_at.as_ref()),
            })).collect::<Vec<_>>(),
            "blocked_by": status.blocked_by.map(|b| json!({
                "kind": enum_name(ResourceKind::try_from(b.kind).map(|t| t.as_str_name()).ok(), "RESOURCE_KIND_"),
                "reason": b.reason,
                "message": b.message,
                "next_attempt_at": time(b.next_attempt_at.as_ref()),
            })),
            "placement": status.placement.map(|p| json!({
                "instance_group": p.instance_group, "nlb_arn": p.nlb_arn, "port": p.port,
            })),
        },
    })
}

fn region_json(c: &RegionConfig) -> Value {
    json!({
        "region": c.region,
        "enabled": c.enabled,
        "codebuild_project": c.codebuild_project,
        "artifact_bucket": c.artifact_bucket,
        "codedeploy_application": c.codedeploy_application,
        "proxy_name_tag": c.proxy_name_tag,
        "nginx_config_dir": c.nginx_config_dir,
        "alb_https_listener_arns": c.alb_https_listener_arns,
        "global_accelerator_ips": c.global_accelerator_ips,
        "allowed_parent_domains": c.allowed_parent_domains,
    })
}

fn group_json(g: &InstanceGroup) -> Value {
    json!({
        "name": g.name,
        "region": g.region,
        "nlb_arns": g.nlb_arns,
        "port_min": g.port_min,
        "port_max": g.port_max,
        "capacity": g.capacity,
        "codedeploy_deployment_group": g.codedeploy_deployment_group,
        "enabled": g.enabled,
    })
}
