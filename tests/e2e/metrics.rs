//! Observability end to end: the metrics endpoint scraped over HTTP while the controller
//! converges a shop, the store's shop counts on both backends, and the JSON log of a started
//! binary, which must carry spans and no secret.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use reconcilers::Hostname;
use reconcilers::spec::{BucketName, RegionName, ShopSpec, SourceVersion};
use shop_controller::dev::{dev_instance_group, dev_region_config};
use shop_controller::grpc::proto::ListShopsRequest;
use shop_controller::grpc::proto::shop_service_client::ShopServiceClient;
use shop_controller::metrics::{self, Sources};
use shop_controller::store::ShopCounts;

use crate::controller::{converged, start};
use crate::support::{TestStore, channel_to, deploy_request};

/// The kinds whose loops run, as metric labels.
const KINDS: [&str; 6] = [
    "artifact",
    "deployment",
    "target_group",
    "listener",
    "nginx_config",
    "restart",
];

/// One plain HTTP/1.1 GET; returns the status line, the headers and the body.
fn get(address: SocketAddr, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(address).expect("connect to metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

/// The value of the sample written exactly as `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The sum of every sample of the family `name`.
fn family_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_reports_loops_calls_shops_and_leases_without_shop_names() {
    let running = start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let sources = Sources {
        store: running.store.store.clone(),
        cloud: Arc::new(running.aws.clone()),
        controller: Some(running.controller.clone()),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(metrics::serve(listener, sources, async move {
        let _ = stopped.await;
    }));

    let shop = "metrics-shop.es-hs.com";
    running.aws.put_object(
        "shop-sources",
        &format!("{shop}.zip"),
        shop_controller::dev::sample_shop_zip(),
    );
    let mut client = running.server.shops().await;
    client
        .deploy_shop(deploy_request(shop))
        .await
        .expect("deploy");
    converged(running.store.store.as_ref(), &[shop.to_owned()]).await;

    let (status, headers, text) = tokio::task::spawn_blocking(move || get(address, "/metrics"))
        .await
        .expect("scrape");
    assert!(status.contains("200"), "{status}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );

    let done = r#"shop_controller_reconciles_total{kind="target_group",outcome="done"}"#;
    assert!(sample(&text, done).expect("target group reconciles") >= 1.0);
    let create = concat!(
        r#"shop_controller_aws_calls_total{service="elasticloadbalancing","#,
        r#"operation="CreateTargetGroup",outcome="ok"}"#
    );
    assert!(sample(&text, create).expect("CreateTargetGroup calls") >= 1.0);
    assert!(family_sum(&text, "shop_controller_aws_calls_total") > 0.0);
    for kind in KINDS {
        for lane in ["spec", "retry", "resync"] {
            let depth = format!(r#"shop_controller_queue_depth{{kind="{kind}",lane="{lane}"}}"#);
            assert!(sample(&text, &depth).is_some(), "no {depth}");
        }
        let oldest = format!(r#"shop_controller_queue_oldest_waiting_seconds{{kind="{kind}"}}"#);
        assert!(
            sample(&text, &oldest).is_some_and(|age| age >= 0.0),
            "no {oldest}"
        );
        let count = format!(r#"shop_controller_reconcile_duration_seconds_count{{kind="{kind}"}}"#);
        let infinite = format!(
            r#"shop_controller_reconcile_duration_seconds_bucket{{kind="{kind}",le="+Inf"}}"#
        );
        assert_eq!(sample(&text, &count), sample(&text, &infinite), "{kind}");
    }
    let ready = r#"shop_controller_shops{condition="ready"}"#;
    assert_eq!(sample(&text, ready), Some(1.0));
    let held = sample(&text, "shop_controller_leases_held").expect("leases held");
    assert!(held >= 0.0);
    let live = sample(&text, "shop_controller_live_replicas");
    assert_eq!(live, Some(1.0), "the one controller's own heartbeat");
    let listeners = r#"shop_controller_challenge_listeners{state="converged"}"#;
    assert_eq!(sample(&text, listeners), Some(1.0), "the dev region's");
    let failed = r#"shop_controller_challenge_listeners{state="failed"}"#;
    assert_eq!(sample(&text, failed), Some(0.0));
    assert!(
        !text.contains("metrics-shop"),
        "a shop name became a label:\n{text}"
    );

    let addr = address;
    let (status, _, body) = tokio::task::spawn_blocking(move || get(addr, "/healthz"))
        .await
        .expect("health");
    assert!(status.contains("200") && body == "ok\n", "{status} {body}");
    let (status, _, _) = tokio::task::spawn_blocking(move || get(address, "/other"))
        .await
        .expect("other");
    assert!(status.contains("404"), "{status}");

    let _ = stop.send(());
    serving.await.expect("metrics stop");
    running.stop().await;
}

fn spec(shop: &str) -> ShopSpec {
    ShopSpec {
        shop_domain: Hostname::parse(shop).expect("valid"),
        region: RegionName::parse("eu-west-1").expect("valid"),
        source_bucket: BucketName::parse("shop-sources").expect("valid"),
        source_version: SourceVersion::parse("v1").expect("valid"),
        custom_domain: None,
    }
}

/// Ready counts only for the current generation, and a shop being deleted only as deleting.
async fn shops_are_counted_by_condition(store: TestStore) {
    let store = store.store;
    store
        .put_region_config(&dev_region_config(), 1)
        .await
        .expect("region");
    store
        .put_instance_group(&dev_instance_group(), 1)
        .await
        .expect("group");
    assert_eq!(
        store.count_shops().await.expect("count"),
        ShopCounts::default()
    );

    for shop in ["a.es-hs.com", "b.es-hs.com", "c.es-hs.com", "d.es-hs.com"] {
        store.deploy_shop(&spec(shop), 1).await.expect("deploy");
        store.set_shop_ready(shop, true, 1, 2).await.expect("ready");
    }
    store.delete_shop("c.es-hs.com", 3).await.expect("delete");
    let mut newer = spec("d.es-hs.com");
    newer.source_version = SourceVersion::parse("v2").expect("valid");
    store.deploy_shop(&newer, 4).await.expect("redeploy");

    let counts = store.count_shops().await.expect("count");
    let expected = ShopCounts {
        ready: 2,
        not_ready: 1,
        deleting: 1,
    };
    assert_eq!(counts, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shops_are_counted_by_condition_on_sqlite() {
    shops_are_counted_by_condition(crate::support::sqlite_store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shops_are_counted_by_condition_on_postgres() {
    shops_are_counted_by_condition(crate::support::postgres_store().await).await;
}

/// A child process killed when the test ends, passed or not: a panicking test must not leave
/// a controller holding its database open.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the child's stderr lines into a channel, so the test can wait for one.
fn lines_of(stderr: std::process::ChildStderr) -> mpsc::Receiver<String> {
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    received
}

/// Waits for the JSON line of `message` (or finds it among the lines already `seen`: the
/// servers start in either order) and returns the address in its `address` field.
fn address_of(lines: &mpsc::Receiver<String>, seen: &mut Vec<String>, message: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut index = 0;
    loop {
        let line = if let Some(line) = seen.get(index) {
            line.clone()
        } else {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {message:?} line in:\n{}", seen.join("\n")));
            seen.push(line.clone());
            line
        };
        index += 1;
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if event["fields"]["message"] == message {
            let address = event["fields"]["address"].as_str().expect("address field");
            return address
                .trim_start_matches("Some(")
                .trim_end_matches(')')
                .to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_log_carries_rpc_spans_and_no_secret() {
    let password = "pw-never-logged-8c1e";
    let token = "tok-never-logged-5d2f9a7b3c";
    let wrong_token = "tok-wrong-never-logged-1a2b3c";
    // Local test servers trust their clients, so the password is accepted and never checked.
    let url = crate::support::fresh_postgres_database().await;
    let (scheme, rest) = url.split_once("://").expect("a url");
    let (user, host) = rest.split_once('@').expect("a user in the url");
    let user = user.split(':').next().unwrap_or(user);
    let url = format!("{scheme}://{user}:{password}@{host}");

    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_shop-controller"))
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("SHOP_CONTROLLER_DATABASE_URL", &url)
            .env("SHOP_CONTROLLER_TOKENS", format!("write {token}"))
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shop-controller"),
    );
    let lines = lines_of(child.0.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let metrics_address = address_of(&lines, &mut seen, "serving metrics");
    let grpc_address = address_of(&lines, &mut seen, "serving grpc");

    let channel = channel_to(grpc_address.parse().expect("an address")).await;
    for (presented, allowed) in [(token, true), (wrong_token, false)] {
        let bearer: tonic::metadata::MetadataValue<_> =
            format!("Bearer {presented}").parse().expect("header");
        let mut client = ShopServiceClient::with_interceptor(
            channel.clone(),
            move |mut request: tonic::Request<()>| {
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                Ok(request)
            },
        );
        let listed = client.list_shops(ListShopsRequest::default()).await;
        assert_eq!(listed.is_ok(), allowed, "{listed:?}");
    }
    let address: SocketAddr = metrics_address.parse().expect("metrics address");
    let (status, _, _) = tokio::task::spawn_blocking(move || get(address, "/metrics"))
        .await
        .expect("scrape");
    assert!(status.contains("200"), "{status}");

    drop(child);
    seen.extend(lines.iter());
    let log = seen.join("\n");
    for secret in [password, token, wrong_token] {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }
    for line in &seen {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    }
    let listed = r#""method":"/shop.v1.ShopService/ListShops""#;
    assert!(log.contains(listed), "no rpc span with its method:\n{log}");
}

/// The collector's side of OTLP: every span exported to it, by name, with its attributes as
/// text, and the service name each batch came with.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<std::sync::Mutex<Vec<ExportedSpan>>>,
}

#[derive(Clone, Debug)]
struct ExportedSpan {
    service: String,
    name: String,
    attributes: std::collections::BTreeMap<String, String>,
}

fn text_of(value: Option<AnyValue>) -> String {
    match value.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(text)) => text,
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        other => format!("{other:?}"),
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for batch in request.into_inner().resource_spans {
            let service = batch
                .resource
                .into_iter()
                .flat_map(|resource| resource.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text_of(kv.value))
                .unwrap_or_default();
            for span in batch.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                let attributes = span
                    .attributes
                    .into_iter()
                    .map(|kv| (kv.key, text_of(kv.value)))
                    .collect();
                received.push(ExportedSpan {
                    service: service.clone(),
                    name: span.name,
                    attributes,
                });
            }
        }
        self.spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_and_reconcile_spans_reach_an_otlp_collector() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_shop-controller"))
            .args(["--log-format", "json", "--otlp-endpoint", &endpoint])
            .args(["dev", "--listen", "127.0.0.1:0", "--resync", "1s"])
            .arg("--database")
            .arg(dir.path().join("dev.db"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shop-controller dev"),
    );
    let lines = lines_of(child.0.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let grpc_address = address_of(&lines, &mut seen, "serving grpc");
    let channel = channel_to(grpc_address.parse().expect("an address")).await;
    let mut client = ShopServiceClient::new(channel);
    let shop = shop_controller::dev::DEV_SAMPLE_SHOPS[0];
    client
        .deploy_shop(deploy_request(shop))
        .await
        .expect("deploy");

    // The batch leaves every few seconds; wait for both kinds of span.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (rpc, reconcile) = loop {
        let spans = collector
            .spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let rpc = spans.iter().find(|s| {
            s.name == "rpc"
                && s.attributes.get("method").map(String::as_str)
                    == Some("/shop.v1.ShopService/DeployShop")
        });
        let reconcile = spans.iter().find(|s| {
            s.name == "reconcile" && s.attributes.get("shop").map(String::as_str) == Some(shop)
        });
        if let (Some(rpc), Some(reconcile)) = (rpc, reconcile) {
            break (rpc.clone(), reconcile.clone());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans received: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rpc.service, "shop-controller");
    for field in ["resource", "generation"] {
        assert!(
            reconcile.attributes.contains_key(field),
            "{field} missing: {reconcile:?}"
        );
    }
    drop(child);
}
