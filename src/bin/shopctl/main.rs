//! `shopctl`: the operator's command line for a shop-controller.
//!
//! Errors print the server's message and exit non-zero; `-o json` prints machine-readable
//! output.
//!
//! This file sends each subcommand's requests; the arguments and YAML files are in `cli`, the
//! channel and token in `connect`, and the output formats in `render`.

use std::process::ExitCode;

use clap::Parser;
use serde_json::{Value, json};
use shop_controller::grpc::proto::admin_service_client::AdminServiceClient;
use shop_controller::grpc::proto::dev_service_client::DevServiceClient;
use shop_controller::grpc::proto::shop_service_client::ShopServiceClient;
use shop_controller::grpc::proto::*;
use tokio_stream::StreamExt;
use tonic::Status;

use cli::{
    Cli, Command, ConfigCommand, DomainCommand, GroupFile, Output, RegionCommand, RegionFile,
    read_yaml,
};
use connect::{Authed, connect};
use render::{
    domain_check_json, domain_check_text, group_json, plan_json, plan_text, print, region_json,
    shop_details, shop_json, shop_row, yaml,
};

mod cli;
mod connect;
mod patch;
mod render;

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
    #[error("{domain}: {count} finding(s) block the domain")]
    Blocked { domain: String, count: usize },
}

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

async fn run(cli: Cli) -> Result<(), CliError> {
    let (channel, bearer) = connect(&cli).await?;
    let mut shops = ShopServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut admin = AdminServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let mut dev = DevServiceClient::with_interceptor(channel, bearer);
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
        Command::Pause {
            shop_domain,
            reason,
        } => {
            let request = PauseShopRequest {
                shop_domain,
                reason,
            };
            let response = shops.pause_shop(request).await?.into_inner();
            let verb = if response.changed {
                "paused"
            } else {
                "already paused"
            };
            let value = json!({ "shop_domain": response.shop_domain, "changed": response.changed });
            print(output, &format!("{}: {verb}", response.shop_domain), &value);
        }
        Command::Resume {
            shop_domain,
            reason,
        } => {
            let request = ResumeShopRequest {
                shop_domain,
                reason,
            };
            let response = shops.resume_shop(request).await?.into_inner();
            let verb = if response.changed {
                "resumed"
            } else {
                "was not paused"
            };
            let value = json!({ "shop_domain": response.shop_domain, "changed": response.changed });
            print(output, &format!("{}: {verb}", response.shop_domain), &value);
        }
        Command::Plan { shop_domain } => {
            let plan = shops
                .plan_shop(PlanShopRequest { shop_domain })
                .await?
                .into_inner();
            print(output, &plan_text(&plan), &plan_json(&plan));
        }
        Command::Region {
            command: RegionCommand::Config(command),
        } => region(&mut admin, output, command).await?,
        Command::Region {
            command: RegionCommand::Pause { region, reason },
        } => {
            let request = PauseRegionRequest { region, reason };
            let response = admin.pause_region(request).await?.into_inner();
            let verb = if response.changed {
                "paused"
            } else {
                "already paused"
            };
            let value = json!({ "region": response.region, "changed": response.changed });
            print(
                output,
                &format!("region {}: {verb}", response.region),
                &value,
            );
        }
        Command::Region {
            command: RegionCommand::Resume { region, reason },
        } => {
            let request = ResumeRegionRequest { region, reason };
            let response = admin.resume_region(request).await?.into_inner();
            let verb = if response.changed {
                "resumed"
            } else {
                "was not paused"
            };
            let value = json!({ "region": response.region, "changed": response.changed });
            print(
                output,
                &format!("region {}: {verb}", response.region),
                &value,
            );
        }
        Command::Group { command } => group(&mut admin, output, command).await?,
        Command::Domain {
            command: DomainCommand::Check { domain, region },
        } => {
            let request = CheckDomainRequest {
                domain,
                region: region.unwrap_or_default(),
            };
            let response = shops.check_domain(request).await?.into_inner();
            print(
                output,
                &domain_check_text(&response),
                &domain_check_json(&response),
            );
            if response.blocked {
                let error = FindingSeverity::Error as i32;
                let count = response.findings.iter().filter(|f| f.severity == error);
                return Err(CliError::Blocked {
                    domain: response.domain,
                    count: count.count(),
                });
            }
        }
        Command::Patch { command } => patch::patch(&mut admin, output, command).await?,
        Command::Break { shop_domain, what } => {
            let response = dev
                .break_shop(BreakShopRequest {
                    shop_domain,
                    target: what.target() as i32,
                })
                .await?
                .into_inner();
            let text = response
                .removed
                .iter()
                .map(|r| format!("removed {r}"))
                .collect::<Vec<_>>()
                .join("\n");
            print(output, &text, &json!({ "removed": response.removed }));
        }
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
            let config = RegionConfig::from(parsed);
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
            let group = InstanceGroup::from(parsed);
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
