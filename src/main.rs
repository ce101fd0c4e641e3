//! The `shop-controller` binary: parse configuration, set up logging, run a command.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use reconcilers::cloud::CloudProvider;
use reconcilers::cloud::Domains;
use reconcilers::sim::SimulatedAws;
use reconcilers::sim::{SimAcme, SimAcmeConfig};
use shop_controller::acme::{AcmeConfig, LazyAcme, responder};
use shop_controller::aws::{AwsCloud, AwsOptions, RemoteSim};
use shop_controller::config::AcmeArgs;
use shop_controller::config::{Cli, Command, MetricsArgs, ServeArgs};
use shop_controller::controller::{CertificateSettings, Controller, ControllerConfig};
use shop_controller::domains::DnsDomains;
use shop_controller::grpc::Auth;
use shop_controller::{dev, metrics, server, sim_server, store, telemetry};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init(cli.log_format, cli.otlp_endpoint.as_deref())?;
    let ran = run(cli.command).await;
    telemetry.shutdown();
    ran
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let auth = server::load_auth(&args.auth)?;
            let tls = server::load_tls(&args.tls)?;
            let store = store::open(args.database.database_url.expose()).await?;
            let mut config =
                ControllerConfig::new(&args.reconcile.installation, args.reconcile.resync);
            config.lease.ttl = args.reconcile.lease_ttl;
            config.patch_tick = args.reconcile.patch_tick;
            let cloud = serve_cloud(&args, &config.lease.holder).await?;
            let listener = TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("listen on {}", args.listen))?;
            let domains: Arc<dyn Domains> =
                Arc::new(DnsDomains::new(&args.domains).context("set up domain checks")?);
            // PlanShop runs the loops' observe and diff, so a server without loops plans too.
            let mut planner = Controller::new(store.clone(), cloud.clone(), config);
            if let Some(acme) = acme_config(&args.acme)? {
                let ca = LazyAcme::new(acme, store.clone()).context("set up the ACME account")?;
                let mut settings = CertificateSettings::new(Arc::new(ca), domains.clone());
                settings.slots_per_listener = args.acme.certificate_slots;
                planner = planner.with_certificates(settings);
            }
            if let Some(address) = args.acme.acme_listen {
                let responder = TcpListener::bind(address)
                    .await
                    .with_context(|| format!("listen on {address} for ACME challenges"))?;
                let served = responder::serve(responder, store.clone(), server::shutdown_signal());
                tokio::spawn(served);
                let every = std::time::Duration::from_secs(10 * 60);
                let purge =
                    responder::purge_expired(store.clone(), every, server::shutdown_signal());
                tokio::spawn(purge);
            }
            let planner = Arc::new(planner);
            let controller = args.reconcile.reconcile.then(|| planner.clone());
            let sources = metrics::Sources {
                store: store.clone(),
                cloud: cloud.clone(),
                controller: controller.clone(),
            };
            start_metrics(&args.metrics, sources).await?;
            let mut services = server::services(store, cloud, auth);
            services.planner = Some(planner);
            services.domains = Some(domains);
            server::serve_and_reconcile(listener, services, tls, controller, args.shutdown_grace)
                .await?;
        }
        Command::Dev(args) => {
            if let Some(dir) = args.database.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("create {}", dir.display()))?;
            }
            let store = match &args.database_url {
                Some(url) => store::open(url.expose()).await?,
                None => store::open(&format!("sqlite:{}", args.database.display())).await?,
            };
            let aws = Arc::new(SimulatedAws::new());
            if let Some(address) = args.share_sim {
                share_sim(address, aws.clone()).await?;
            }
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
            let domains = Arc::new(dev::dev_domains(store.clone()));
            // A simulated CA that validates through the simulated DNS.
            let ca = Arc::new(SimAcme::new(domains.clone(), SimAcmeConfig::default()));
            let controller = Controller::new(store.clone(), cloud.clone(), config)
                .with_certificates(CertificateSettings::new(ca, domains.clone()));
            let controller = Arc::new(controller);
            let sources = metrics::Sources {
                store: store.clone(),
                cloud: cloud.clone(),
                controller: Some(controller.clone()),
            };
            start_metrics(&args.metrics, sources).await?;
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

/// AWS through the SDK adapters, or the simulated AWS another process shares.
async fn serve_cloud(args: &ServeArgs, replica: &str) -> anyhow::Result<Arc<dyn CloudProvider>> {
    if let Some(url) = &args.simulated_aws_url {
        tracing::info!(url, replica, "using a shared simulated aws");
        return Ok(Arc::new(RemoteSim::new(url, replica)?));
    }
    let options = AwsOptions {
        endpoint_url: args.aws_endpoint_url.clone(),
        max_attempts: args.aws_max_attempts,
        rate_limit_overrides: args.aws_rate_limits.clone(),
    };
    Ok(Arc::new(AwsCloud::load(options).await))
}

/// Serves the dev account to `serve --simulated-aws-url` replicas, until the server stops.
async fn share_sim(address: std::net::SocketAddr, aws: Arc<SimulatedAws>) -> anyhow::Result<()> {
    anyhow::ensure!(
        address.ip().is_loopback(),
        "--share-sim serves without authentication: give a loopback address, not {address}"
    );
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("listen on {address} for the shared simulated aws"))?;
    let served = sim_server::serve(listener, aws, None, server::shutdown_signal());
    tokio::spawn(served);
    Ok(())
}

/// The CA's settings, when a directory URL is given; the encryption key is then required.
fn acme_config(args: &AcmeArgs) -> anyhow::Result<Option<AcmeConfig>> {
    let Some(directory_url) = &args.acme_directory_url else {
        return Ok(None);
    };
    let encryption_key = match (&args.acme_encryption_key, &args.acme_encryption_key_file) {
        (Some(key), _) => key.clone(),
        (None, Some(file)) => shop_controller::config::Secret::new(
            std::fs::read_to_string(file)
                .with_context(|| format!("read the ACME encryption key {}", file.display()))?
                .trim(),
        ),
        (None, None) => anyhow::bail!(
            "--acme-directory-url needs --acme-encryption-key or --acme-encryption-key-file \
             (32 random bytes in base64: `head -c 32 /dev/urandom | base64`)"
        ),
    };
    Ok(Some(AcmeConfig {
        directory_url: directory_url.clone(),
        ca_root: args.acme_ca_root.clone(),
        contacts: args.acme_contact.clone(),
        encryption_key,
    }))
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

/// The directory of the dev database, where the dev controller keeps its other files too.
fn dev_dir(database: &std::path::Path) -> std::path::PathBuf {
    database
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map_or_else(|| ".".into(), std::path::Path::to_path_buf)
}
