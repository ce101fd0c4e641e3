//! The `shop-controller` binary: parse configuration, set up logging, run a command.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use reconcilers::cloud::CloudProvider;
use reconcilers::sim::SimulatedAws;
use shop_controller::aws::{AwsCloud, AwsOptions};
use shop_controller::config::{Cli, Command, LogFormat, MetricsArgs};
use shop_controller::controller::{Controller, ControllerConfig};
use shop_controller::domains::DnsDomains;
use shop_controller::grpc::Auth;
use shop_controller::{dev, metrics, server, store};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Serve(args) => {
            let auth = server::load_auth(&args.auth)?;
            let tls = server::load_tls(&args.tls)?;
            let store = store::open(args.database.database_url.expose()).await?;
            let options = AwsOptions {
                endpoint_url: args.aws_endpoint_url.clone(),
                max_attempts: args.aws_max_attempts,
                rate_limit_overrides: args.aws_rate_limits.clone(),
            };
            let cloud: Arc<dyn CloudProvider> = Arc::new(AwsCloud::load(options).await);
            let listener = TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("listen on {}", args.listen))?;
            let mut config =
                ControllerConfig::new(&args.reconcile.installation, args.reconcile.resync);
            config.lease.ttl = args.reconcile.lease_ttl;
            // PlanShop runs the loops' observe and diff, so a server without loops plans too.
            let planner = Arc::new(Controller::new(store.clone(), cloud.clone(), config));
            let controller = args.reconcile.reconcile.then(|| planner.clone());
            let sources = metrics::Sources {
                store: store.clone(),
                cloud: cloud.clone(),
                controller: controller.clone(),
            };
            start_metrics(&args.metrics, sources).await?;
            let domains = DnsDomains::new(&args.domains).context("set up domain checks")?;
            let mut services = server::services(store, cloud, auth);
            services.planner = Some(planner);
            services.domains = Some(Arc::new(domains));
            server::serve_and_reconcile(listener, services, tls, controller, args.shutdown_grace)
                .await?;
        }
        Command::Dev(args) => {
            if let Some(dir) = args.database.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("create {}", dir.display()))?;
            }
            let store = store::open(&format!("sqlite:{}", args.database.display())).await?;
            let aws = Arc::new(SimulatedAws::new());
            let nginx_dir = std::env::current_dir()?
                .join(dev_dir(&args.database))
                .join("nginx");
            std::fs::create_dir_all(&nginx_dir)
                .with_context(|| format!("create {}", nginx_dir.display()))?;
            dev::seed(store.as_ref(), &aws, &nginx_dir).await?;
            let listener = TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("listen on {}", args.listen))?;
            tracing::info!(address = %args.listen, database = %args.database.display(), "dev controller ready");
            let cloud: Arc<dyn CloudProvider> = Arc::new(aws);
            let config = ControllerConfig::new("dev", args.resync);
            let controller = Arc::new(Controller::new(store.clone(), cloud.clone(), config));
            let sources = metrics::Sources {
                store: store.clone(),
                cloud: cloud.clone(),
                controller: Some(controller.clone()),
            };
            start_metrics(&args.metrics, sources).await?;
            let domains = Arc::new(dev::dev_domains(store.clone()));
            let mut services = server::services(store, cloud.clone(), Auth::Disabled);
            services.dev_cloud = Some(cloud);
            services.planner = Some(controller.clone());
            services.domains = Some(domains);
            let grace = std::time::Duration::from_secs(5);
            server::serve_and_reconcile(listener, services, None, Some(controller), grace).await?;
        }
        Command::Migrate(args) => {
            store::open(args.database_url.expose()).await?;
            tracing::info!("migrations applied");
        }
    }
    Ok(())
}

/// Serves metrics when an address is given, until the signal that stops the server.
async fn start_metrics(args: &MetricsArgs, sources: metrics::Sources) -> anyhow::Result<()> {
    let Some(address) = args.metrics_listen else {
        return Ok(());
    };
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("listen on {address} for metrics"))?;
    tokio::spawn(metrics::serve(listener, sources, server::shutdown_signal()));
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// The directory of the dev database, where the dev controller keeps its other files too.
fn dev_dir(database: &std::path::Path) -> std::path::PathBuf {
    database
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map_or_else(|| ".".into(), std::path::Path::to_path_buf)
}
