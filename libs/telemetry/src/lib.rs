//! Telemetry shared by every service: structured logs, OTLP traces (Jaeger),
//! W3C trace context across gRPC, gRPC server metrics, and the HTTP endpoint
//! for Prometheus `/metrics` and `/healthz`.

mod grpc_metrics;
mod http_endpoint;
mod propagation;

pub use grpc_metrics::{
    code_name, GrpcMetricsLayer, GrpcMetricsService, GrpcServerMetrics, MeteredBody,
};
pub use http_endpoint::{serve_http, Health};
pub use propagation::{
    inject_current, TraceContextLayer, TraceContextService, TraceParent, TraceParentError,
    TraceParentLayer, TraceParentService,
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("could not build the OTLP exporter for {endpoint}: {source}")]
    Otlp {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("could not install the log subscriber: {0}")]
    Subscriber(String),
    #[error("could not bind the HTTP endpoint {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default)]
pub struct TelemetryOptions {
    /// OTLP/gRPC collector, e.g. `http://jaeger:4317`. None: no traces exported.
    pub otlp_endpoint: Option<String>,
    /// JSON lines instead of human-readable logs.
    pub json_logs: bool,
}

/// Flushes pending spans when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // Losing the last spans of a process is not worth failing shutdown.
            let _ = p.shutdown();
        }
    }
}

/// Installs logging (filtered by `RUST_LOG`, default `info`) and, when an
/// OTLP endpoint is configured, span export under the given service name.
pub fn init(
    service: &'static str,
    opts: &TelemetryOptions,
) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (fmt_json, fmt_text) = if opts.json_logs {
        (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true),
            ),
            None,
        )
    } else {
        (
            None,
            Some(tracing_subscriber::fmt::layer().with_target(false)),
        )
    };
    let mut provider = None;
    let otel_layer = match &opts.otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|source| TelemetryError::Otlp {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            let p = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(service)
                        .build(),
                )
                .build();
            let tracer = p.tracer(service);
            opentelemetry::global::set_tracer_provider(p.clone());
            provider = Some(p);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_json)
        .with(fmt_text)
        .with(otel_layer)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

/// Cancels `token` on SIGTERM or SIGINT, for graceful shutdown.
pub async fn shutdown_on_signals(token: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = token.cancelled() => return,
    }
    token.cancel();
}
