//! The orchestrator: the public gRPC API (links, mirror topics, status,
//! verify) over intent stored in etcd, and the leader's background work
//! (partition count and config sync).

pub mod api;
pub mod background;
pub mod convert;
pub mod detach;
pub mod error;
pub mod group_sync;
pub mod groups;
pub mod guards;
pub mod links;
pub mod mirrors;
pub mod peers;
pub mod plan;
pub mod promote;
mod promote_groups;
pub mod promotion;
pub mod routers;
pub mod server;
pub mod status;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use cutover_coord::{Coord, CoordConfig};
use cutover_telemetry::{GrpcServerMetrics, Health};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

#[derive(Debug, Clone, clap::Args)]
pub struct OrchestratorConfig {
    /// Unique id of this orchestrator (default: a random one).
    #[arg(long, env = "CUTOVER_ORCHESTRATOR_ID")]
    pub id: Option<String>,
    /// etcd endpoints, comma separated.
    #[arg(
        long,
        env = "CUTOVER_ETCD",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd: Vec<String>,
    #[arg(long, env = "CUTOVER_ETCD_PREFIX", default_value = "/cutover/v1")]
    pub etcd_prefix: String,
    /// Public gRPC API.
    #[arg(long, env = "CUTOVER_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: String,
    /// /metrics and /healthz.
    #[arg(long, env = "CUTOVER_HTTP_ADDR", default_value = "0.0.0.0:9151")]
    pub http_addr: String,
    #[arg(long, env = "CUTOVER_LEASE_TTL_SECS", default_value_t = 10)]
    pub lease_ttl_secs: u64,
    /// Timeout of each Kafka request made on behalf of an API call.
    #[arg(long, env = "CUTOVER_KAFKA_TIMEOUT_MS", default_value_t = 10_000)]
    pub kafka_timeout_ms: u64,
    /// Longest time an API call may take before it fails with
    /// DEADLINE_EXCEEDED (0 = no limit); Verify and WatchStatus have their own.
    #[arg(long, env = "CUTOVER_REQUEST_TIMEOUT_MS", default_value_t = 60_000)]
    pub request_timeout_ms: u64,
    /// Longest time a Verify may take (0 = no limit): it reads whole
    /// partitions. WatchStatus streams have no timeout.
    #[arg(long, env = "CUTOVER_VERIFY_TIMEOUT_SECS", default_value_t = 3600)]
    pub verify_timeout_secs: u64,
    /// API calls served at once, open WatchStatus streams included; calls
    /// beyond it are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "CUTOVER_MAX_CONCURRENT_REQUESTS", default_value_t = 64)]
    pub max_concurrent_requests: usize,
    /// Verify calls served at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "CUTOVER_MAX_CONCURRENT_VERIFIES", default_value_t = 2)]
    pub max_concurrent_verifies: usize,
    /// How often the leader compares source and target topics (partitions, configs).
    #[arg(long, env = "CUTOVER_SYNC_INTERVAL_MS", default_value_t = 10_000)]
    pub sync_interval_ms: u64,
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[arg(long, env = "CUTOVER_JSON_LOGS")]
    pub json_logs: bool,
}

impl OrchestratorConfig {
    pub fn kafka_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka_timeout_ms.max(500))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error(transparent)]
    Coord(#[from] cutover_coord::CoordError),
    #[error("could not listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Telemetry(#[from] cutover_telemetry::TelemetryError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// How long shutdown waits for running promotions (they end within the
/// routers' 30 s hold).
const PROMOTION_END: Duration = Duration::from_secs(35);

/// Shared state of the API handlers.
pub struct Orchestrator {
    pub id: String,
    pub cfg: OrchestratorConfig,
    pub coord: Coord,
    pub shutdown: CancellationToken,
    /// Work that must end on its own terms, not with the API (promotions):
    /// waited for on shutdown.
    pub tasks: TaskTracker,
}

/// Serves the API until `shutdown`; campaigns for leadership meanwhile.
pub async fn run(
    cfg: OrchestratorConfig,
    shutdown: CancellationToken,
) -> Result<(), OrchestratorError> {
    let id = cfg.id.clone().unwrap_or_else(|| {
        format!(
            "orchestrator-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    });
    let coord = Coord::connect(CoordConfig {
        endpoints: cfg.etcd.clone(),
        prefix: cfg.etcd_prefix.clone(),
        lease_ttl: Duration::from_secs(cfg.lease_ttl_secs.max(2)),
        connect_timeout: Duration::from_secs(5),
    })
    .await?;
    let registry = prometheus::Registry::new_custom(Some("cutover_orchestrator".into()), None)?;
    let metrics = GrpcServerMetrics::register(&registry)?;
    let health = Health::default();
    let internal = shutdown.child_token();
    let (http_addr, http_task) =
        cutover_telemetry::serve_http(&cfg.http_addr, registry, health.clone(), internal.clone())
            .await?;
    let listener = tokio::net::TcpListener::bind(&cfg.grpc_addr)
        .await
        .map_err(|source| OrchestratorError::Listen {
            addr: cfg.grpc_addr.clone(),
            source,
        })?;
    let grpc_addr = listener
        .local_addr()
        .map_err(|source| OrchestratorError::Listen {
            addr: cfg.grpc_addr.clone(),
            source,
        })?;

    let orch = Arc::new(Orchestrator {
        id: id.clone(),
        cfg: cfg.clone(),
        coord: coord.clone(),
        shutdown: internal.clone(),
        tasks: TaskTracker::new(),
    });
    let background = tokio::spawn(background::run(orch.clone(), internal.clone()));
    health.set_ready(true);
    info!(orchestrator = %id, grpc = %grpc_addr, http = %http_addr, "orchestrator started");

    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let served = server::serve(
        orch.clone(),
        &metrics,
        incoming,
        internal.clone().cancelled_owned(),
    )
    .await;
    health.set_ready(false);
    // A promotion under way ends (switched or undone) before the routers'
    // holds would run out; cutting it would leave that to the leader.
    orch.tasks.close();
    if tokio::time::timeout(PROMOTION_END, orch.tasks.wait())
        .await
        .is_err()
    {
        error!("a promotion did not end in time; the leading orchestrator takes it over");
    }
    internal.cancel();
    if let Err(e) = background.await {
        error!(error = %e, "background task ended abnormally");
    }
    let _ = http_task.await;
    info!("orchestrator stopped");
    served.map_err(OrchestratorError::from)
}
