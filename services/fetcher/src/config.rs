//! Fetcher settings: command-line flags, each with an environment variable.

use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct FetcherConfig {
    /// Unique id of this fetcher (default: a random one). Appears in status as the owner.
    #[arg(long, env = "CUTOVER_FETCHER_ID")]
    pub id: Option<String>,
    /// etcd endpoints, comma separated.
    #[arg(
        long,
        env = "CUTOVER_ETCD",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd: Vec<String>,
    /// Prefix of every etcd key Cutover writes.
    #[arg(long, env = "CUTOVER_ETCD_PREFIX", default_value = "/cutover/v1")]
    pub etcd_prefix: String,
    /// Internal gRPC API (progress, wait-for-offset).
    #[arg(long, env = "CUTOVER_GRPC_ADDR", default_value = "0.0.0.0:50061")]
    pub grpc_addr: String,
    /// Address other services use to reach the gRPC API (default: grpc_addr).
    #[arg(long, env = "CUTOVER_ADVERTISED_GRPC_ADDR")]
    pub advertised_grpc_addr: Option<String>,
    /// HTTP endpoint for /metrics and /healthz.
    #[arg(long, env = "CUTOVER_HTTP_ADDR", default_value = "0.0.0.0:9161")]
    pub http_addr: String,
    /// Lease TTL: a dead fetcher's partitions move after at most this long.
    #[arg(long, env = "CUTOVER_LEASE_TTL_SECS", default_value_t = 10)]
    pub lease_ttl_secs: u64,
    /// Produce requests in flight per partition (at most 5: the broker's idempotence window).
    #[arg(long, env = "CUTOVER_MAX_INFLIGHT", default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub max_inflight: u8,
    /// Bytes per fetch request.
    #[arg(long, env = "CUTOVER_FETCH_MAX_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub fetch_max_bytes: i32,
    /// How long a caught-up partition waits before the source is asked
    /// again for it: the long poll of the fetch sessions (the broker answers
    /// at once when something new arrives), or with `--fetch-sessions
    /// false` the step between polls (which bounds the delay of new
    /// records).
    #[arg(long, env = "CUTOVER_IDLE_POLL_MS", default_value_t = 50)]
    pub idle_poll_ms: u64,
    /// Caught-up partitions wait in one incremental fetch session (KIP-227)
    /// per source broker, as a broker's replica fetcher does, so idle
    /// partitions cost next to nothing. `false`: they poll every
    /// `--idle-poll-ms` instead (each poll carries every idle partition).
    #[arg(long, env = "CUTOVER_FETCH_SESSIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub fetch_sessions: bool,
    /// Source batches smaller than this are merged into one target batch.
    #[arg(long, env = "CUTOVER_COALESCE_BELOW_BYTES", default_value_t = 16 * 1024)]
    pub coalesce_below_bytes: usize,
    /// How often progress is written to etcd.
    #[arg(long, env = "CUTOVER_PROGRESS_INTERVAL_MS", default_value_t = 1000)]
    pub progress_interval_ms: u64,
    /// Longest time between two balancing rounds of ownership. Every change
    /// in etcd they depend on (fetchers, links, mirrors, failures,
    /// ownership) triggers one at once; this is the safety net.
    #[arg(long, env = "CUTOVER_REBALANCE_INTERVAL_MS", default_value_t = 30_000)]
    pub rebalance_interval_ms: u64,
    /// Kafka request timeout.
    #[arg(long, env = "CUTOVER_KAFKA_TIMEOUT_MS", default_value_t = 30_000)]
    pub kafka_timeout_ms: u64,
    /// OTLP/gRPC trace collector, e.g. http://jaeger:4317.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Logs as JSON lines.
    #[arg(long, env = "CUTOVER_JSON_LOGS")]
    pub json_logs: bool,
}

impl FetcherConfig {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs.max(2))
    }
    pub fn kafka_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka_timeout_ms.max(1000))
    }
    /// How caught-up partitions wait.
    pub fn idle_mode(&self) -> crate::fetch_mux::IdleMode {
        if self.fetch_sessions {
            crate::fetch_mux::IdleMode::Session(self.idle_poll())
        } else {
            crate::fetch_mux::IdleMode::Poll(self.idle_poll())
        }
    }

    pub fn idle_poll(&self) -> Duration {
        Duration::from_millis(self.idle_poll_ms.clamp(1, 10_000))
    }
    pub fn progress_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms.clamp(100, 60_000))
    }
    pub fn rebalance_interval(&self) -> Duration {
        Duration::from_millis(self.rebalance_interval_ms.clamp(100, 60_000))
    }
}
