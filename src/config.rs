//! Command-line and environment configuration of the `shop-controller` binary. Every flag has
//! an environment fallback; secrets are wrapped so they never print.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reconcilers::cloud::limits::{Limit, parse_overrides};

/// A value that must never reach a log or an error message.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// Builds and deploys storefront shops onto AWS and keeps them deployed.
#[derive(Debug, Parser)]
#[command(name = "shop-controller", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log line format.
    #[arg(long, env = "SHOP_CONTROLLER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint of a trace collector (such as `http://otel-collector:4317`); the
    /// spans of every RPC and reconcile are exported there besides the log. No export when
    /// unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API against real AWS (or the emulator at --aws-endpoint-url).
    Serve(Box<ServeArgs>),
    /// Serve with an embedded SQLite file and a simulated AWS seeded with a sample region,
    /// instance group and shop source. Authentication is off; listen on loopback only.
    Dev(DevArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// `sqlite:PATH` (created on first run; one replica only) or `postgres://...`.
    #[arg(
        long,
        env = "SHOP_CONTROLLER_DATABASE_URL",
        default_value = "sqlite:shop-controller.db",
        hide_env_values = true,
        hide_default_value = false
    )]
    pub database_url: Secret,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the gRPC server.
    #[arg(long, env = "SHOP_CONTROLLER_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Endpoint of an AWS emulator such as moto; real AWS when unset.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// A simulated AWS shared by `shop-controller dev --share-sim`, as `http://HOST:PORT`,
    /// instead of AWS: for trying several replicas on one machine.
    #[arg(
        long,
        env = "SHOP_CONTROLLER_SIMULATED_AWS_URL",
        conflicts_with = "aws_endpoint_url"
    )]
    pub simulated_aws_url: Option<String>,
    /// Attempts per AWS call including the first (the SDK's standard retry mode).
    #[arg(long, env = "SHOP_CONTROLLER_AWS_MAX_ATTEMPTS", default_value_t = 3)]
    pub aws_max_attempts: u32,
    /// Client-side rate limits replacing the defaults, as `service:Operation=RATE/BURST`
    /// (calls per second and bucket size), comma-separated.
    #[arg(long, env = "SHOP_CONTROLLER_AWS_RATE_LIMITS", default_value = "", value_parser = parse_overrides)]
    pub aws_rate_limits: HashMap<String, Limit>,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub reconcile: ReconcileArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub domains: DomainsConfig,
    #[command(flatten)]
    pub acme: AcmeArgs,
    /// How long in-flight requests may run after SIGTERM.
    #[arg(long, env = "SHOP_CONTROLLER_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Run the reconcile loops. Several replicas may run them against one PostgreSQL database:
    /// each shop is claimed with a lease. A SQLite file serves one replica only.
    #[arg(long, env = "SHOP_CONTROLLER_RECONCILE")]
    pub reconcile: bool,
    /// How long a replica's claim on a shop runs without renewal: how soon the shops of a
    /// replica that died are taken over.
    #[arg(long, env = "SHOP_CONTROLLER_LEASE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Name of this installation, carried in the ownership tag of every AWS object it creates.
    #[arg(long, env = "SHOP_CONTROLLER_INSTALLATION", default_value = "default")]
    pub installation: String,
    /// How often every resource is looked at again to find and repair drift.
    #[arg(long, env = "SHOP_CONTROLLER_RESYNC", default_value = "5m", value_parser = parse_duration)]
    pub resync: Duration,
    /// How often the patch loop reads the fleets' patch policies and runs.
    #[arg(long, env = "SHOP_CONTROLLER_PATCH_TICK", default_value = "60s", value_parser = parse_duration)]
    pub patch_tick: Duration,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address of the gRPC server.
    #[arg(
        long,
        env = "SHOP_CONTROLLER_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,
    /// SQLite file of the development controller.
    #[arg(
        long,
        env = "SHOP_CONTROLLER_DEV_DATABASE",
        default_value = ".shop-controller/dev.db"
    )]
    pub database: PathBuf,
    /// A database to seed and use instead of the SQLite file, such as `postgres://...`, so
    /// `serve` replicas can share it.
    #[arg(
        long,
        env = "SHOP_CONTROLLER_DEV_DATABASE_URL",
        hide_env_values = true,
        conflicts_with = "database"
    )]
    pub database_url: Option<Secret>,
    /// Also serve the simulated AWS on this address (loopback only), for `serve
    /// --simulated-aws-url` replicas.
    #[arg(long, env = "SHOP_CONTROLLER_DEV_SHARE_SIM")]
    pub share_sim: Option<SocketAddr>,
    /// How often every resource is looked at again (short, so healing shows quickly).
    #[arg(long, env = "SHOP_CONTROLLER_RESYNC", default_value = "30s", value_parser = parse_duration)]
    pub resync: Duration,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Address of the Prometheus endpoint (`/metrics`, `/healthz`), such as `0.0.0.0:9090`;
    /// off when unset.
    #[arg(long, env = "SHOP_CONTROLLER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// The ACME CA that issues custom domains' certificates, and the HTTP-01 responder.
#[derive(Debug, Args)]
pub struct AcmeArgs {
    /// Directory URL of the ACME CA (Let's Encrypt:
    /// https://acme-v02.api.letsencrypt.org/directory). Without it, custom domains wait for a
    /// certificate with the reason AcmeNotConfigured.
    #[arg(long, env = "SHOP_CONTROLLER_ACME_DIRECTORY_URL")]
    pub acme_directory_url: Option<String>,
    /// PEM file of a root to trust for the CA's own HTTPS (a test CA such as pebble).
    #[arg(long, env = "SHOP_CONTROLLER_ACME_CA_ROOT")]
    pub acme_ca_root: Option<PathBuf>,
    /// Contact URIs of the ACME account (`mailto:ops@example.com`), comma-separated.
    #[arg(long, env = "SHOP_CONTROLLER_ACME_CONTACT", value_delimiter = ',')]
    pub acme_contact: Vec<String>,
    /// 32 random bytes in base64 that seal the ACME account key in the database.
    #[arg(
        long,
        env = "SHOP_CONTROLLER_ACME_ENCRYPTION_KEY",
        hide_env_values = true
    )]
    pub acme_encryption_key: Option<Secret>,
    /// A file holding the encryption key instead (a mounted Secret).
    #[arg(long, env = "SHOP_CONTROLLER_ACME_ENCRYPTION_KEY_FILE")]
    pub acme_encryption_key_file: Option<PathBuf>,
    /// Address of the HTTP-01 responder the proxy ALB's port-80 rule forwards
    /// /.well-known/acme-challenge/ to; not served when unset.
    #[arg(long, env = "SHOP_CONTROLLER_ACME_LISTEN")]
    pub acme_listen: Option<SocketAddr>,
    /// Certificates one HTTPS listener takes besides its default one: the ALB quota
    /// "Certificates per Application Load Balancer" (25 unless raised).
    #[arg(long, env = "SHOP_CONTROLLER_CERTIFICATE_SLOTS", default_value_t = 25)]
    pub certificate_slots: usize,
}

/// How custom domains are looked up and probed (`CheckDomain`, the HTTP-01 self-check).
#[derive(Clone, Debug, Args)]
pub struct DomainsConfig {
    /// DNS server (`ip:port`, UDP and TCP) for domain checks, instead of /etc/resolv.conf.
    #[arg(long, env = "SHOP_CONTROLLER_DNS_SERVER")]
    pub dns_server: Option<SocketAddr>,
    /// Port the HTTP-01 self-check connects to on a domain's addresses; the CA uses 80.
    #[arg(long, env = "SHOP_CONTROLLER_ACME_HTTP01_PORT", default_value_t = 80)]
    pub acme_http01_port: u16,
    /// Time limit of one DNS query and of one challenge fetch from one address.
    #[arg(long, env = "SHOP_CONTROLLER_DOMAIN_CHECK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub domain_check_timeout: Duration,
}

impl Default for DomainsConfig {
    fn default() -> Self {
        Self {
            dns_server: None,
            acme_http01_port: 80,
            domain_check_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Args)]
pub struct AuthArgs {
    /// File of bearer tokens, one `read <token>` or `write <token>` per line.
    #[arg(long, env = "SHOP_CONTROLLER_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Bearer tokens inline, in the file's format (lines or commas).
    #[arg(long, env = "SHOP_CONTROLLER_TOKENS", hide_env_values = true)]
    pub tokens: Option<Secret>,
    /// Accept every call without a token. Only for a controller nobody else can reach.
    #[arg(long, env = "SHOP_CONTROLLER_NO_AUTH")]
    pub no_auth: bool,
}

#[derive(Debug, Args)]
pub struct TlsArgs {
    /// PEM certificate chain; serve TLS when given together with --tls-key.
    #[arg(long, env = "SHOP_CONTROLLER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, env = "SHOP_CONTROLLER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Parses `500ms`, `20s`, `5m` or `1h`.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let split = input
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(input.len());
    let (number, unit) = input.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{input:?} is not a duration like 20s"))?;
    let millis = match unit {
        "ms" => number,
        "s" | "" => number * 1000,
        "m" => number * 60_000,
        "h" => number * 3_600_000,
        _ => return Err(format!("{input:?} has an unknown unit; use ms, s, m or h")),
    };
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn database_url_does_not_print() {
        let cli = Cli::try_parse_from([
            "shop-controller",
            "migrate",
            "--database-url",
            "postgres://u:hunter2@db/shops",
        ])
        .expect("parses");
        assert!(!format!("{cli:?}").contains("hunter2"));
    }
}
