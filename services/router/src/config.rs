//! Router settings: command-line flags, each with an environment variable.

use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct RouterConfig {
    /// This router's permanent Kafka node id, unique among the routers.
    /// Clients keep one connection per node id, so a restarted router must
    /// come back with the same id (and address).
    #[arg(long, env = "CUTOVER_ROUTER_NODE_ID", value_parser = clap::value_parser!(i32).range(0..))]
    pub node_id: i32,
    /// The link whose clusters this router fronts.
    #[arg(long, env = "CUTOVER_ROUTER_LINK")]
    pub link: String,
    /// Kafka listener for clients.
    #[arg(long, env = "CUTOVER_ROUTER_LISTEN", default_value = "0.0.0.0:9092")]
    pub listen: String,
    /// host:port clients reach this router at, as Metadata advertises it
    /// (default: the listen address; required when that is 0.0.0.0).
    #[arg(long, env = "CUTOVER_ROUTER_ADVERTISED")]
    pub advertised: Option<String>,
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
    /// Internal gRPC API (holds for promotions, group members, state).
    #[arg(long, env = "CUTOVER_ROUTER_GRPC_ADDR", default_value = "0.0.0.0:9163")]
    pub grpc_addr: String,
    /// host:port the orchestrator reaches the gRPC API at (default: the
    /// bound address; required when that is 0.0.0.0).
    #[arg(long, env = "CUTOVER_ROUTER_ADVERTISED_GRPC")]
    pub advertised_grpc_addr: Option<String>,
    /// HTTP endpoint for /metrics and /healthz.
    #[arg(long, env = "CUTOVER_HTTP_ADDR", default_value = "0.0.0.0:9162")]
    pub http_addr: String,
    /// Lease TTL of the router's registration: a dead router leaves the
    /// brokers clients see after at most this long.
    #[arg(long, env = "CUTOVER_LEASE_TTL_SECS", default_value_t = 10)]
    pub lease_ttl_secs: u64,
    /// Largest request frame a client may send (Kafka's
    /// socket.request.max.bytes); a larger one closes the connection.
    #[arg(long, env = "CUTOVER_ROUTER_MAX_REQUEST_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Requests of one client connection handled at once (answers still go
    /// back in order).
    #[arg(long, env = "CUTOVER_ROUTER_MAX_INFLIGHT", default_value_t = 16)]
    pub max_inflight: usize,
    /// Request bytes of one connection held at once beyond the request
    /// being read: bounds memory per connection.
    #[arg(long, env = "CUTOVER_ROUTER_MAX_INFLIGHT_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_inflight_bytes: usize,
    /// Largest Fetch answer the router asks a cluster for, in all and per
    /// partition (a client's larger `fetch.max.bytes` and
    /// `max.partition.fetch.bytes` are lowered to it; a batch larger than
    /// it still comes whole, as Kafka always returns the first batch). It
    /// bounds what one connection holds, the answer being written and the
    /// one read ahead, and keeps the router's store-and-forward of each
    /// answer short.
    #[arg(long, env = "CUTOVER_ROUTER_MAX_FETCH_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(i32).range(1024..))]
    pub max_fetch_bytes: i32,
    /// Producer-id mappings unused this long are removed from etcd (a
    /// producer that comes back later starts over with a new id). Kafka
    /// forgets a transactional id after 7 days.
    #[arg(
        long,
        env = "CUTOVER_ROUTER_PRODUCER_EXPIRY_HOURS",
        default_value_t = 168
    )]
    pub producer_expiry_hours: u64,
    /// Timeout of requests to the clusters (a Fetch adds its max wait).
    #[arg(long, env = "CUTOVER_KAFKA_TIMEOUT_MS", default_value_t = 30_000)]
    pub kafka_timeout_ms: u64,
    /// How long SIGTERM waits for in-flight requests before closing.
    #[arg(long, env = "CUTOVER_ROUTER_DRAIN_SECS", default_value_t = 30)]
    pub drain_secs: u64,
    /// OTLP/gRPC trace collector, e.g. http://jaeger:4317.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Logs as JSON lines.
    #[arg(long, env = "CUTOVER_JSON_LOGS")]
    pub json_logs: bool,
}

impl RouterConfig {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs.max(1))
    }

    pub fn kafka_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka_timeout_ms.max(1))
    }

    pub fn producer_expiry(&self) -> Duration {
        Duration::from_secs(self.producer_expiry_hours.max(1) * 3600)
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }
}
