//! The metrics endpoint: Prometheus text at `/metrics` (and `ok` at `/healthz`) on its own
//! listener. Nothing is counted here: every scrape reads the figures the parts already keep,
//! each loop's queue ([`QueueStats`](crate::runtime::QueueStats)), the cloud's call counts
//! ([`CallStats`](reconcilers::cloud::CallStats), filled by the adapters' call wrapper and the
//! simulated AWS alike), the leases this replica holds and the live replicas its heartbeat
//! found, the regions' challenge listener states,
//! one aggregate query for shops by condition and one read of the certificate rows.
//!
//! Invariant: labels take bounded values only (kind, lane, outcome, service, operation,
//! condition, state, and the patched fleet, of which there are a few); a shop's name never
//! becomes a label.
//! Traces leave through `telemetry.rs` (the log, and OTLP when configured).

use std::future::Future;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use reconcilers::cloud::CloudProvider;
use tokio::net::TcpListener;

use crate::controller::{ChallengeListenerState, Controller};
use crate::http::plain;
use crate::runtime::DURATION_BUCKETS;
use crate::store::Store;

mod text;

pub use text::{CONTENT_TYPE, Exposition, Type};

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
        self.certificates(&mut text).await;
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
    /// Custom-domain certificates by state, how many expire soon, and the earliest expiry:
    /// what an alert on a renewal that keeps failing watches.
    async fn certificates(&self, text: &mut Exposition) {
        let records = match self.store.list_certificates().await {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(%error, "could not read certificates for metrics");
                return;
            }
        };
        let figures = CertificateFigures::of(&records, crate::store::now_millis());

        let name = "shop_controller_certificates";
        text.family(name, Type::Gauge, "Custom-domain certificates by state.");
        for (state, count) in figures.by_state {
            text.sample(name, &[("state", state)], count as f64);
        }

        let name = "shop_controller_certificates_expiring";
        text.family(
            name,
            Type::Gauge,
            "Imported certificates whose not-after falls within the window (expired: already past).",
        );
        for (within, count) in figures.expiring {
            text.sample(name, &[("within", within)], count as f64);
        }

        if let Some(earliest) = figures.earliest_not_after {
            let name = "shop_controller_certificate_earliest_not_after_seconds";
            text.family(
                name,
                Type::Gauge,
                "The earliest not-after of the imported certificates, in seconds since the epoch.",
            );
            text.sample(name, &[], earliest as f64 / 1000.0);
        }
    }
}

/// The certificate figures of one scrape.
#[derive(Debug, PartialEq)]
struct CertificateFigures {
    by_state: Vec<(&'static str, u64)>,
    expiring: Vec<(&'static str, u64)>,
    earliest_not_after: Option<i64>,
}

impl CertificateFigures {
    fn of(records: &[reconcilers::certificate::CertificateRecord], now: i64) -> Self {
        use reconcilers::certificate::CertificateState as State;
        const DAY: i64 = 86_400_000;
        let states = [
            State::Pending,
            State::Ordering,
            State::Issued,
            State::Ready,
            State::Failed,
        ];
        let by_state = states
            .iter()
            .map(|state| {
                let count = records.iter().filter(|r| r.state == *state).count();
                (state.as_str(), count as u64)
            })
            .collect();
        let not_afters: Vec<i64> = records
            .iter()
            .filter(|r| r.acm_arn.is_some())
            .filter_map(|r| r.not_after)
            .collect();
        let within = |horizon: i64| not_afters.iter().filter(|at| **at <= now + horizon).count();
        let expiring = vec![
            ("expired", within(0) as u64),
            ("7d", within(7 * DAY) as u64),
            ("30d", within(30 * DAY) as u64),
        ];
        Self {
            by_state,
            expiring,
            earliest_not_after: not_afters.iter().min().copied(),
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
    let help = "Shops (and regions' loops and fleets) this replica holds an unlapsed lease on.";
    text.family(name, Type::Gauge, help);
    text.sample(name, &[], controller.leases_held() as f64);

    let name = "shop_controller_live_replicas";
    let help = "Replicas whose heartbeat the last one of this replica found live, itself included.";
    text.family(name, Type::Gauge, help);
    if let Some(live) = controller.live_replicas() {
        text.sample(name, &[], f64::from(live));
    }

    let name = "shop_controller_challenge_listeners";
    let help = "Regions by what the last pass found of their ALB's ACME challenge listener.";
    text.family(name, Type::Gauge, help);
    let states = controller.challenge_listener_states();
    for state in ChallengeListenerState::ALL {
        let count = states.values().filter(|s| **s == state).count();
        text.sample(name, &[("state", state.as_str())], count as f64);
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` resolves. Open connections
/// are not waited for: a scrape cut short is simply retried by Prometheus.
pub async fn serve(listener: TcpListener, sources: Sources, shutdown: impl Future<Output = ()>) {
    let sources = Arc::new(sources);
    let handler = move |request: Request<Incoming>| {
        let sources = sources.clone();
        async move { respond(&sources, &request).await }
    };
    crate::http::serve(listener, "metrics", handler, shutdown).await;
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

#[cfg(test)]
mod tests {
    use reconcilers::Hostname;
    use reconcilers::certificate::{CertificateRecord, CertificateState};

    use super::CertificateFigures;

    const DAY: i64 = 86_400_000;

    fn record(name: &str, state: CertificateState, not_after: Option<i64>) -> CertificateRecord {
        let mut record =
            CertificateRecord::new(Hostname::parse(name).expect("valid"), "a.es-hs.com", 0);
        record.state = state;
        record.not_after = not_after;
        record.acm_arn = not_after.map(|_| format!("arn:{name}"));
        record
    }

    #[test]
    fn certificate_figures_count_states_and_expiry_windows() {
        let now = 100 * DAY;
        let records = [
            record("a.example.com", CertificateState::Ready, Some(now - 1)),
            record(
                "b.example.com",
                CertificateState::Ready,
                Some(now + 3 * DAY),
            ),
            record(
                "c.example.com",
                CertificateState::Ready,
                Some(now + 20 * DAY),
            ),
            record(
                "d.example.com",
                CertificateState::Ready,
                Some(now + 80 * DAY),
            ),
            record("e.example.com", CertificateState::Failed, None),
        ];
        let figures = CertificateFigures::of(&records, now);
        assert_eq!(
            figures.by_state,
            vec![
                ("pending", 0),
                ("ordering", 0),
                ("issued", 0),
                ("ready", 4),
                ("failed", 1)
            ]
        );
        assert_eq!(
            figures.expiring,
            vec![("expired", 1), ("7d", 2), ("30d", 3)]
        );
        assert_eq!(figures.earliest_not_after, Some(now - 1));
        assert_eq!(CertificateFigures::of(&[], now).earliest_not_after, None);
    }
}
