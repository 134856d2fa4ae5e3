//! Channels to the other services' internal gRPC APIs (routers,
//! fetchers), carrying the caller's trace context.
//!
//! One HTTP/2 channel per address, kept for the process's life and shared
//! by every call: a promotion calls each router twice and each drained
//! partition's fetcher once inside the produce stall, and a connection per
//! call put a TCP and HTTP/2 handshake into each. tonic reconnects a
//! channel whose peer went away on its next call.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cutover_telemetry::{TraceContextLayer, TraceContextService};
use tonic::transport::{Channel, Endpoint};
use tower::timeout::Timeout;

/// How long the first call on a channel (or one after its peer went away)
/// waits for the connection.
const CONNECT: Duration = Duration::from_secs(2);

/// Addresses of routers and fetchers come and go (a restart may take a new
/// port): past this many, the cache starts over rather than grow.
const MAX_CHANNELS: usize = 256;

pub type Traced = TraceContextService<Timeout<Channel>>;

fn channels() -> &'static Mutex<HashMap<String, Channel>> {
    static CHANNELS: OnceLock<Mutex<HashMap<String, Channel>>> = OnceLock::new();
    CHANNELS.get_or_init(Default::default)
}

/// The channel to the internal API at `addr` (host:port); calls on it
/// time out after `timeout`. It connects on first use, so an unreachable
/// peer fails the call (UNAVAILABLE); `Err` is for an address that is not
/// one.
pub fn traced_channel(addr: &str, timeout: Duration) -> Result<Traced, String> {
    let channel = {
        let mut cache = channels().lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| format!("bad gRPC address {addr:?}: {e}"))?
                    .connect_timeout(CONNECT)
                    .connect_lazy();
                if cache.len() >= MAX_CHANNELS {
                    cache.clear();
                }
                cache.insert(addr.to_owned(), c.clone());
                c
            }
        }
    };
    Ok(tower::ServiceBuilder::new()
        .layer(TraceContextLayer::Client)
        .service(Timeout::new(channel, timeout)))
}

/// What a failed call says, with the address when the peer was not
/// reached at all.
pub fn failure(addr: &str, s: &tonic::Status) -> String {
    unreachable(addr, s).unwrap_or_else(|| format!("answered {:?}: {}", s.code(), s.message()))
}

/// Says so when the call never reached the peer at `addr`: tonic answers
/// a call it could not deliver with UNAVAILABLE caused by its transport
/// error; a peer's own UNAVAILABLE has no such cause.
pub fn unreachable(addr: &str, s: &tonic::Status) -> Option<String> {
    let undelivered = std::error::Error::source(s)
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some());
    (s.code() == tonic::Code::Unavailable && undelivered)
        .then(|| format!("cannot reach its gRPC API at {addr}: {}", s.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_channel_per_address_and_a_bad_address_is_refused() {
        assert!(traced_channel("not an address at all", CONNECT).is_err());
        traced_channel("127.0.0.1:1", CONNECT).expect("an address");
        traced_channel("127.0.0.1:1", Duration::from_secs(9)).expect("an address");
        let cache = channels().lock().unwrap();
        assert_eq!(cache.keys().filter(|k| *k == "127.0.0.1:1").count(), 1);
    }

    #[tokio::test]
    async fn a_peer_that_is_not_there_is_named_unreachable() {
        use cutover_proto::router::v1 as rpb;
        // Nothing listens on port 1 of the loopback.
        let channel = traced_channel("127.0.0.1:1", CONNECT).expect("an address");
        let mut c = rpb::router_client::RouterClient::new(channel);
        let s = c
            .get_state(rpb::GetStateRequest {})
            .await
            .expect_err("nothing answers");
        let said = failure("127.0.0.1:1", &s);
        assert!(
            said.starts_with("cannot reach its gRPC API at 127.0.0.1:1"),
            "{said}"
        );
    }
}
