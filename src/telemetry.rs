//! Logs and traces. Events and spans go to stderr as text or JSON lines; with
//! `--otlp-endpoint` the same spans (`rpc` with its `method`, `reconcile` with `shop`,
//! `resource`, `generation`) are also exported to an OpenTelemetry collector over OTLP/gRPC.
//!
//! The export is batched on the tokio runtime: the SDK's default batch processor runs on a
//! thread of its own, where tonic finds no reactor. A collector that is down costs dropped
//! spans, never a blocked reconcile: the batch queue is bounded and export errors are only
//! logged by the SDK.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// What must outlive the service for its last spans to leave: call [`Telemetry::shutdown`]
/// before the process exits.
#[must_use = "without shutdown the last batch of spans is lost"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

/// Installs the global subscriber: `RUST_LOG` (default `info`) filters both the log and the
/// export. Must run inside the tokio runtime when an endpoint is given.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Json => log.json().boxed(),
        LogFormat::Text => log.boxed(),
    };
    let traces = otlp_endpoint.map(provider).transpose()?;
    let export = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("shop-controller"))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(log)
        .with(export)
        .init();
    if let Some(endpoint) = otlp_endpoint {
        tracing::info!(endpoint, "exporting traces over otlp");
    }
    Ok(Telemetry { traces })
}

fn provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| anyhow::anyhow!("set up the otlp exporter for {endpoint}: {error}"))?;
    let resource = Resource::builder()
        .with_service_name("shop-controller")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter, Tokio).build())
        .with_resource(resource)
        .build())
}

impl Telemetry {
    /// Exports the spans still queued.
    pub fn shutdown(self) {
        if let Some(traces) = self.traces
            && let Err(error) = traces.shutdown()
        {
            tracing::warn!(%error, "could not flush the last spans");
        }
    }
}
