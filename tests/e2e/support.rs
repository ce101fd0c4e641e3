//! Test support: fresh databases, the moto server, and the real gRPC server on port 0.

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reconcilers::cloud::CloudProvider;
use reconcilers::sim::SimulatedAws;
use shop_controller::aws::{AwsCloud, AwsOptions};
use shop_controller::grpc::Auth;
use shop_controller::grpc::proto::admin_service_client::AdminServiceClient;
use shop_controller::grpc::proto::shop_service_client::ShopServiceClient;
use shop_controller::store::{PostgresStore, SqliteStore, Store};
use shop_controller::{dev, server};
use sqlx::Connection;
use tokio::sync::oneshot;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A store and whatever must live as long as it (the SQLite file's directory).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    /// Lives as long as the store: the SQLite file and the nginx config directory are in it.
    pub dir: tempfile::TempDir,
}

pub async fn sqlite_store() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shops.db");
    let store = SqliteStore::open(&format!("sqlite:{}", path.display()))
        .await
        .expect("open sqlite");
    TestStore {
        store: Arc::new(store),
        dir,
    }
}

pub async fn postgres_store() -> TestStore {
    let url = fresh_postgres_database().await;
    let store = PostgresStore::connect(&url)
        .await
        .expect("connect postgres");
    TestStore {
        store: Arc::new(store),
        dir: tempfile::tempdir().expect("temp dir"),
    }
}

fn postgres_admin_url() -> String {
    std::env::var("SHOP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A unique name per call within this process and across processes.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{nanos:x}x{n}", std::process::id())
}

/// Creates an empty database for one test (scripts/test drops those of earlier runs).
pub async fn fresh_postgres_database() -> String {
    let admin = postgres_admin_url();
    let name = unique("shop_test_");
    let mut connection = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!("postgres at {admin} is not reachable ({e}); run the suites with scripts/test")
        });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut connection)
        .await
        .expect("create test database");
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin);
    format!("{base}/{name}")
}

/// The moto server of this test binary, started on first use on a free port.
pub fn moto_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(start_moto)
}

#[expect(
    clippy::zombie_processes,
    reason = "moto and its watchdog live as long as the test binary and end with it"
)]
fn start_moto() -> String {
    let program = std::env::var("SHOP_TEST_MOTO_SERVER")
        .unwrap_or_else(|_| format!("{}/.build/venv/bin/moto_server", env!("CARGO_MANIFEST_DIR")));
    let port = StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program} ({e}); scripts/test installs moto"));
    // moto must not outlive this test binary: a watchdog ends it when we are gone.
    let watchdog = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; kill {} 2>/dev/null",
        std::process::id(),
        child.id()
    );
    Command::new("sh")
        .args(["-c", &watchdog])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto watchdog");

    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start on {address}");
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("http://{address}")
}

/// The real SDK adapters pointed at moto, with retries off so tests see every error.
pub async fn moto_cloud() -> Arc<AwsCloud> {
    let options = AwsOptions {
        endpoint_url: Some(moto_url().to_owned()),
        max_attempts: 1,
        ..Default::default()
    };
    Arc::new(AwsCloud::load(options).await)
}

/// A plain S3 client on moto for arranging test data.
pub async fn moto_s3() -> aws_sdk_s3::Client {
    let credentials =
        aws_sdk_s3::config::Credentials::new("testing", "testing", None, None, "tests");
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(moto_url())
        .credentials_provider(credentials)
        .force_path_style(true)
        .http_client(shop_controller::aws::http_client())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A simulated AWS and store seeded like `shop-controller dev`.
pub async fn seeded(store: &TestStore) -> Arc<SimulatedAws> {
    let aws = Arc::new(SimulatedAws::new());
    let nginx_dir = store.dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).expect("nginx dir");
    dev::seed(store.store.as_ref(), &aws, &nginx_dir)
        .await
        .expect("seed");
    aws
}

/// A shop API client, with a bearer token when one was given.
pub type ShopClient = ShopServiceClient<InterceptedService<Channel, Bearer>>;
/// An admin API client, with a bearer token when one was given.
pub type AdminClient = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// The real gRPC server, on a free port, stopped when dropped.
pub struct TestServer {
    pub address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(store: Arc<dyn Store>, cloud: Arc<dyn CloudProvider>, auth: Auth) -> Self {
        Self::serve(server::services(store, cloud, auth)).await
    }

    /// The server as `shop-controller dev` runs it: `DevService` breaks things in `cloud`.
    pub async fn start_dev(store: Arc<dyn Store>, cloud: Arc<dyn CloudProvider>) -> Self {
        let mut services = server::services(store, cloud.clone(), Auth::Disabled);
        services.dev_cloud = Some(cloud);
        Self::serve(services).await
    }

    pub(crate) async fn serve(services: shop_controller::grpc::Services) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (shutdown, stop) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stop.await;
        };
        tokio::spawn(server::serve(
            listener,
            services,
            None,
            stopped,
            Duration::from_secs(1),
        ));
        Self {
            address,
            shutdown: Some(shutdown),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub async fn channel(&self) -> Channel {
        channel_to(self.address).await
    }

    pub async fn shops(&self) -> ShopClient {
        self.shops_as(None).await
    }

    pub async fn shops_as(&self, token: Option<&str>) -> ShopClient {
        ShopServiceClient::with_interceptor(self.channel().await, Bearer::new(token))
    }

    pub async fn admin(&self) -> AdminClient {
        self.admin_as(None).await
    }

    pub async fn admin_as(&self, token: Option<&str>) -> AdminClient {
        AdminServiceClient::with_interceptor(self.channel().await, Bearer::new(token))
    }
}

/// Whether the long variants run (`SHOP_TEST_LONG=1`, see the README's Tests section).
pub fn long() -> bool {
    std::env::var_os("SHOP_TEST_LONG").is_some_and(|v| v == "1")
}

/// A channel to a gRPC server at `address`, retried for a second while it starts.
pub async fn channel_to(address: SocketAddr) -> Channel {
    let endpoint = Channel::from_shared(format!("http://{address}")).expect("url");
    for _ in 0..50 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("server at {address} does not accept connections");
}

/// Shop and admin clients without a token for the server at `address`, such as a `serve`
/// process the test started.
pub async fn clients_of(address: SocketAddr) -> (ShopClient, AdminClient) {
    let channel = channel_to(address).await;
    let shops = ShopServiceClient::with_interceptor(channel.clone(), Bearer::new(None));
    let admin = AdminServiceClient::with_interceptor(channel, Bearer::new(None));
    (shops, admin)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Adds `authorization: Bearer <token>` when a token is given.
#[derive(Clone)]
pub struct Bearer(Option<String>);

impl Bearer {
    fn new(token: Option<&str>) -> Self {
        Self(token.map(|t| format!("Bearer {t}")))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            let value = value
                .parse()
                .map_err(|_| tonic::Status::internal("bad token"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// A deploy of a seeded sample source in the dev region.
pub fn deploy_request(shop: &str) -> shop_controller::grpc::proto::DeployShopRequest {
    shop_controller::grpc::proto::DeployShopRequest {
        shop_domain: shop.to_owned(),
        region: dev::DEV_REGION.to_owned(),
        source_bucket: dev::DEV_SOURCE_BUCKET.to_owned(),
        source_version: None,
        custom_domain: None,
    }
}

/// A server over a seeded SQLite store and simulated AWS, authentication off.
pub async fn dev_server() -> (TestServer, Arc<SimulatedAws>, TestStore) {
    let store = sqlite_store().await;
    let aws = seeded(&store).await;
    let server =
        TestServer::start(store.store.clone(), Arc::new(aws.clone()), Auth::Disabled).await;
    (server, aws, store)
}

/// Objects tagged as `installation`'s that belong to shops: without the region-level ones (the
/// ALB's challenge listener and rule, whose ownership tags name a region, not a shop).
pub fn shop_objects(
    aws: &reconcilers::sim::SimulatedAws,
    installation: &str,
) -> Vec<reconcilers::sim::TaggedResource> {
    use reconcilers::cloud::{TAG_INSTALLATION, TAG_SHOP};
    let region = aws.resources_tagged(TAG_SHOP, dev::DEV_REGION);
    let mut owned = aws.resources_tagged(TAG_INSTALLATION, installation);
    owned.retain(|object| !region.contains(object));
    owned
}
