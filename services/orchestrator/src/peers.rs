//! Channels to the other services' internal gRPC APIs (routers,
//! fetchers), carrying the caller's trace context.

use std::time::Duration;

use cutover_telemetry::{TraceContextLayer, TraceContextService};
use tonic::transport::Channel;

/// A connected channel to the internal API at `addr` (host:port); calls
/// on it time out after `timeout`. `Err` says why it cannot be reached.
pub async fn traced_channel(
    addr: &str,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<TraceContextService<Channel>, String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad gRPC address {addr:?}: {e}"))?
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("cannot reach its gRPC API at {addr}: {e}"))?;
    Ok(tower::ServiceBuilder::new()
        .layer(TraceContextLayer::Client)
        .service(channel))
}
