//! The metrics endpoint: Prometheus text at `/metrics` (and `ok` at `/healthz`) on its own
//! listener. Nothing is counted here: every scrape reads the figures the parts already keep,
//! each loop's queue ([`QueueStats`](crate::runtime::QueueStats)), the cloud's call counts
//! ([`CallStats`](reconcilers::cloud::CallStats), filled by the adapters' call wrapper and the
//! simulated AWS alike), the leases this replica holds, and one aggregate query for shops by
//! condition.
//!
//! Invariant: labels take bounded values only (kind, lane, outcome, service, operation,
//! condition, and the patched fleet, of which there are a few); a shop's name never becomes a
//! label.
//!
//! TODO(#5): certificates' not-after timestamps, once the certificate kind exists.
//! TODO(#6): OTLP trace export; not worth its dependencies until a collector is there to
//! receive it, and the JSON logs carry the same spans.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use reconcilers::cloud::CloudProvider;
use tokio::net::TcpListener;

use crate::controller::Controller;
use crate::runtime::DURATION_BUCKETS;
use crate::store::Store;

mod text;

pub use text::{CONTENT_TYPE, Exposition, Type};

/// A client that sends no complete request head in this time is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a scrape reads its figures.
#[derive(Clone)]
pub struct Sources {
    pub store: Arc<dyn Store>,
    pub cloud: Arc<dyn CloudProvider>,
    /// The reconcile loops, when this replica runs them.
    pub controller: Option<Arc<Controller>>,
}

impl Sources {
    /// The whole scrape. A failing shop count leaves that family out rather than failing the
    /// scrape: the other figures matter most when the database is in trouble.
    pub async fn render(&self) -> String {
        let mut text = Exposition::new();
        if let Some(controller) = &self.controller {
            loops(&mut text, controller);
        }
        self.aws_calls(&mut text);
        self.shops(&mut text).await;
        self.patches(&mut text).await;
        text.finish()
    }

    fn aws_calls(&self, text: &mut Exposition) {
        let name = "shop_controller_aws_calls_total";
        text.family(
            name,
            Type::Counter,
            "AWS calls by service, operation and outcome (ok or the error kind).",
        );
        for ((service, operation, outcome), count) in self.cloud.calls().snapshot() {
            let labels = [
                ("service", service.as_str()),
                ("operation", operation.as_str()),
                ("outcome", outcome.as_str()),
            ];
            text.sample(name, &labels, count as f64);
        }
    }

    async fn shops(&self, text: &mut Exposition) {
        let counts = match self.store.count_shops().await {
            Ok(counts) => counts,
            Err(error) => {
                tracing::warn!(%error, "could not count shops for metrics");
                return;
            }
        };
        let name = "shop_controller_shops";
        text.family(
            name,
            Type::Gauge,
            "Shops by condition: ready, not_ready or deleting.",
        );
        for (condition, count) in [
            ("ready", counts.ready),
            ("not_ready", counts.not_ready),
            ("deleting", counts.deleting),
        ] {
            text.sample(name, &[("condition", condition)], count as f64);
        }
    }
}

impl Sources {
    /// When each fleet with a patch policy last finished a successful patch run (issue #6);
    /// a fleet never patched has no sample. The fleets are few and configured, so they make a
    /// bounded label.
    async fn patches(&self, text: &mut Exposition) {
        let fleets = match self.store.patch_status(None).await {
            Ok(fleets) => fleets,
            Err(error) => {
                tracing::warn!(%error, "could not read patch status for metrics");
                return;
            }
        };
        let name = "shop_controller_fleet_last_patched_timestamp_seconds";
        text.family(
            name,
            Type::Gauge,
            "When the fleet's last successful patch run finished, in seconds since the epoch.",
        );
        for status in &fleets {
            let Some(finished) = status.last_success.as_ref().and_then(|run| run.finished_at)
            else {
                continue;
            };
            let fleet = status.policy.fleet.to_string();
            text.sample(name, &[("fleet", fleet.as_str())], finished as f64 / 1000.0);
        }
    }
}

/// The figures of every reconcile loop, and the leases the controller holds.
fn loops(text: &mut Exposition, controller: &Controller) {
    let stats = controller.loop_stats();

    let name = "shop_controller_reconciles_total";
    text.family(
        name,
        Type::Counter,
        "Finished reconciles by kind and outcome.",
    );
    for (kind, stats) in &stats {
        for (outcome, count) in stats.runs.by_outcome() {
            let labels = [("kind", kind.as_str()), ("outcome", outcome)];
            text.sample(name, &labels, count as f64);
        }
    }

    let name = "shop_controller_reconcile_duration_seconds";
    text.family(name, Type::Histogram, "How long reconciles took, by kind.");
    for (kind, stats) in &stats {
        let runs = &stats.runs;
        text.histogram(
            name,
            &[("kind", kind.as_str())],
            &DURATION_BUCKETS,
            &runs.duration_buckets,
            runs.duration_sum.as_secs_f64(),
            runs.total(),
        );
    }

    let name = "shop_controller_reconcile_retries_total";
    text.family(
        name,
        Type::Counter,
        "Failed reconciles retried on the backoff, by kind.",
    );
    for (kind, stats) in &stats {
        text.sample(name, &[("kind", kind.as_str())], stats.runs.retry as f64);
    }

    let name = "shop_controller_queue_depth";
    text.family(
        name,
        Type::Gauge,
        "Keys waiting in each lane of a kind's queue.",
    );
    for (kind, stats) in &stats {
        for (lane, depth) in [
            ("spec", stats.spec),
            ("retry", stats.retry),
            ("resync", stats.resync),
        ] {
            let labels = [("kind", kind.as_str()), ("lane", lane)];
            text.sample(name, &labels, depth as f64);
        }
    }

    let name = "shop_controller_queue_running";
    text.family(name, Type::Gauge, "Reconciles running now, by kind.");
    for (kind, stats) in &stats {
        text.sample(name, &[("kind", kind.as_str())], stats.running as f64);
    }

    let name = "shop_controller_queue_oldest_waiting_seconds";
    text.family(
        name,
        Type::Gauge,
        "How long the longest-ready key of a kind has waited.",
    );
    for (kind, stats) in &stats {
        let age = stats.oldest_waiting.as_secs_f64();
        text.sample(name, &[("kind", kind.as_str())], age);
    }

    let name = "shop_controller_leases_held";
    text.family(name, Type::Gauge, "Shops this replica holds a lease on.");
    text.sample(name, &[], controller.leases_held() as f64);
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` resolves. Open connections
/// are not waited for: a scrape cut short is simply retried by Prometheus.
pub async fn serve(listener: TcpListener, sources: Sources, shutdown: impl Future<Output = ()>) {
    let address = listener.local_addr().ok();
    tracing::info!(address = ?address, "serving metrics");
    let sources = Arc::new(sources);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, mostly: pause rather than spin.
                tracing::warn!(%error, "could not accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(respond(&sources, &request).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

async fn respond(sources: &Sources, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let body = sources.render().await;
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(CONTENT_TYPE),
            );
            response
        }
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        _ => plain(StatusCode::NOT_FOUND, "not found; try /metrics\n"),
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
