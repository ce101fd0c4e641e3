//! Figure 6, the write path: `DeployShop` through the real gRPC server (validation, the
//! region read, the source check against the simulated S3, the spec upsert) on SQLite and on
//! PostgreSQL, against a plain loop of single-row inserts into the same database with the
//! same number of callers; then the latency at a fixed rate of half the measured maximum.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reconcilers::sim::SimulatedAws;
use shop_controller::dev::{self, DEV_REGION, DEV_SOURCE_BUCKET};
use shop_controller::grpc::Auth;
use shop_controller::grpc::proto::DeployShopRequest;
use shop_controller::grpc::proto::shop_service_client::ShopServiceClient;
use shop_controller::server;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::time::Instant;

/// Callers at once, in both the gRPC and the plain-insert loops.
const CALLERS: usize = 16;
/// How long each throughput loop runs.
const RUN: Duration = Duration::from_secs(5);
/// Shops prepared per run: more than the fastest loop can write in `RUN`.
const SHOPS: usize = 40_000;

pub(crate) async fn write_path() {
    println!(
        "\n6. write path: DeployShop through gRPC vs plain single-row inserts, {CALLERS} callers"
    );
    println!("| database | DeployShop/s | plain inserts/s | ratio | fixed rate | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|");
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite:{}", dir.path().join("write.db").display());
    measure("SQLite", &sqlite).await;
    let server = std::env::var("BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let database = format!("bench_write_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&server).await.expect("postgres");
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&admin)
        .await
        .expect("create database");
    let url = format!("{}/{database}", server.rsplit_once('/').expect("a url").0);
    measure("PostgreSQL", &url).await;
    sqlx::query(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(&admin)
        .await
        .expect("drop database");
}

async fn measure(name: &str, url: &str) {
    let store = shop_controller::store::open(url).await.expect("open store");
    let aws = Arc::new(SimulatedAws::new());
    let nginx = tempfile::tempdir().expect("nginx dir");
    dev::seed(store.as_ref(), &aws, nginx.path())
        .await
        .expect("seed");
    let zip = dev::sample_shop_zip();
    for index in 0..SHOPS {
        aws.put_object(
            DEV_SOURCE_BUCKET,
            &format!("{}.zip", shop(index)),
            zip.clone(),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let services = server::services(store.clone(), Arc::new(aws.clone()), Auth::Disabled);
    let serving = tokio::spawn(server::serve(
        listener,
        services,
        None,
        std::future::pending(),
        Duration::ZERO,
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let client = ShopServiceClient::new(channel);

    let next = Arc::new(AtomicUsize::new(0));
    let deploys = throughput(|| {
        let (mut client, next) = (client.clone(), next.clone());
        async move {
            let index = next.fetch_add(1, Ordering::Relaxed);
            client.deploy_shop(request(index)).await.expect("deploy");
        }
    })
    .await;
    let inserts = plain_inserts(url).await;
    let rate = (deploys / 2.0).max(1.0);
    let mut latencies = fixed_rate(rate, || {
        let (mut client, next) = (client.clone(), next.clone());
        async move {
            let index = next.fetch_add(1, Ordering::Relaxed);
            client.deploy_shop(request(index)).await.expect("deploy");
        }
    })
    .await;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "| {name} | {deploys:.0} | {inserts:.0} | {:.2} | {rate:.0}/s for {} s | {:.1} ms | {:.1} ms |",
        deploys / inserts,
        RUN.as_secs(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    );
    serving.abort();
}

fn shop(index: usize) -> String {
    format!("write-{index:06}.es-hs.com")
}

fn request(index: usize) -> DeployShopRequest {
    assert!(index < SHOPS, "raise SHOPS: the loop wrote {index} shops");
    DeployShopRequest {
        shop_domain: shop(index),
        region: DEV_REGION.to_owned(),
        source_bucket: DEV_SOURCE_BUCKET.to_owned(),
        source_version: None,
        custom_domain: None,
    }
}

/// Calls per second of `CALLERS` loops calling `call` for [`RUN`].
async fn throughput<F, Fut>(call: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let began = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..CALLERS {
        let done = done.clone();
        let first = call();
        callers.spawn(async move {
            first.await;
            done.fetch_add(1, Ordering::Relaxed);
        });
    }
    // Each finished call starts the next until the time is up.
    while let Some(finished) = callers.join_next().await {
        finished.expect("caller");
        if began.elapsed() < RUN {
            let done = done.clone();
            let next = call();
            callers.spawn(async move {
                next.await;
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
    }
    done.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64()
}

/// Latencies of calls started at `per_second` for [`RUN`], each in a task of its own.
async fn fixed_rate<F, Fut>(per_second: f64, call: F) -> Vec<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let began = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    while began.elapsed() < RUN {
        let scheduled = ticks.tick().await;
        let next = call();
        // From the scheduled start, so a call the client started late counts its wait.
        calls.spawn(async move {
            next.await;
            scheduled.elapsed()
        });
    }
    let mut latencies = Vec::new();
    while let Some(latency) = calls.join_next().await {
        latencies.push(latency.expect("call"));
    }
    latencies
}

/// Rows per second of a plain insert loop into a table of its own in the store's database,
/// with as many callers.
async fn plain_inserts(url: &str) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    if url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(u32::try_from(CALLERS).expect("small"))
            .connect(url)
            .await
            .expect("postgres");
        sqlx::query("CREATE TABLE plain_rows (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
            .execute(&pool)
            .await
            .expect("create table");
        throughput(|| {
            let (pool, next) = (pool.clone(), next.clone());
            async move {
                let id = next.fetch_add(1, Ordering::Relaxed);
                sqlx::query("INSERT INTO plain_rows (id, name) VALUES ($1, $2)")
                    .bind(i64::try_from(id).expect("fits"))
                    .bind(shop(id))
                    .execute(&pool)
                    .await
                    .expect("insert");
            }
        })
        .await
    } else {
        // The store's settings: WAL, full sync, a busy timeout, 8 connections.
        let options = SqliteConnectOptions::from_str(url)
            .expect("sqlite url")
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .expect("sqlite");
        sqlx::query("CREATE TABLE plain_rows (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            .execute(&pool)
            .await
            .expect("create table");
        throughput(|| {
            let (pool, next) = (pool.clone(), next.clone());
            async move {
                let id = next.fetch_add(1, Ordering::Relaxed);
                sqlx::query("INSERT INTO plain_rows (id, name) VALUES (?, ?)")
                    .bind(i64::try_from(id).expect("fits"))
                    .bind(shop(id))
                    .execute(&pool)
                    .await
                    .expect("insert");
            }
        })
        .await
    }
}
