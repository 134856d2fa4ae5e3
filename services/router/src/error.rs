/// Why a router cannot start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Coord(#[from] cutover_coord::CoordError),
    #[error(
        "router node id {node_id} is held by a live router at {holder}; give every router its \
         own --node-id (a restarted router gets its id back once the old lease expires)"
    )]
    NodeIdInUse { node_id: i32, holder: String },
    #[error("link {0:?} does not exist in etcd; create it with `cutover link create` first")]
    UnknownLink(String),
    #[error("cannot reach the {side} cluster of link {link}: {source}")]
    Cluster {
        side: &'static str,
        link: String,
        #[source]
        source: cutover_kafka::KafkaError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the advertised address {0:?} is not host:port with a port number (set --advertised to \
         the address clients reach this router at)"
    )]
    BadAdvertised(String),
    #[error(transparent)]
    Telemetry(#[from] cutover_telemetry::TelemetryError),
    #[error("cannot set up the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("the etcd lease was lost; the router stopped so clients move to the others")]
    LeaseLost,
}
