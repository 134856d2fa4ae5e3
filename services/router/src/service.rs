//! One router process: etcd session and membership, the link's clusters,
//! the Kafka listener, health and metrics; graceful stop on SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use cutover_coord::{Coord, CoordConfig};
use cutover_kafka::{Cluster, ClusterConfig};
use cutover_model::{keys, ClusterSpec, Link, RouterMember};
use cutover_proto::router::v1::router_server::RouterServer;
use cutover_retry::Policy;
use cutover_telemetry::{Health, TraceContextLayer};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::RouterConfig;
use crate::error::RouterError;
use crate::grpc::RouterApi;
use crate::members;
use crate::members_seen::{GroupMembers, FORGET_AFTER};
use crate::metrics::Metrics;
use crate::producers::Producers;
use crate::router::{Clusters, Holding, Limits, Router, Watched};
use crate::server::{self, ConnectionLimits};
use crate::topics;

/// How often (with jitter, up to twice that) a router sweeps expired
/// producer mappings.
const PRODUCER_SWEEP_EVERY: Duration = Duration::from_secs(600);

const CONNECT: Policy = Policy::new(Duration::from_millis(500), Duration::from_secs(10));

/// A listener on `addr` and the address it got.
async fn bind(addr: &str) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), RouterError> {
    let failed = |source| RouterError::Listen {
        addr: addr.to_owned(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local))
}

/// Splits `host:port` (`[v6]:port` too).
fn host_port(addr: &str) -> Result<(String, i32), RouterError> {
    let bad = || RouterError::BadAdvertised(addr.to_owned());
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host == "0.0.0.0" || host == "::" {
        return Err(bad());
    }
    Ok((host.to_owned(), i32::from(port)))
}

/// Connects to a cluster of the link, retrying until it answers or
/// `shutdown` fires (`None`).
async fn connect(
    spec: &ClusterSpec,
    side: &'static str,
    link: &str,
    cfg: &RouterConfig,
    shutdown: &CancellationToken,
) -> Option<Cluster> {
    let mut c = match ClusterConfig::with_properties(&spec.bootstrap_servers, &spec.properties) {
        Ok(c) => c,
        Err(source) => {
            // The orchestrator checked the link's properties when it was
            // created: only a link written by a newer version gets here.
            let e = RouterError::Cluster {
                side,
                link: link.to_owned(),
                source,
            };
            error!(error = %e, "cannot use the link's cluster settings");
            return None;
        }
    };
    c.client_id = format!("cutover-router-{}", cfg.node_id);
    c.request_timeout = cfg.kafka_timeout();
    let mut backoff = CONNECT.backoff();
    loop {
        match Cluster::connect(c.clone()).await {
            Ok(cluster) => return Some(cluster),
            Err(source) => {
                let e = RouterError::Cluster {
                    side,
                    link: link.to_owned(),
                    source,
                };
                warn!(error = %e, "retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = backoff.wait() => {}
        }
    }
}

/// Forgets group members not seen for a long time, now and then, until
/// `cancel` fires.
async fn forget_silent_members(members: GroupMembers, cancel: CancellationToken) {
    let mut every = tokio::time::interval(FORGET_AFTER / 10);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = every.tick() => members.forget_silent(cutover_model::now_ms()),
        }
    }
}

/// Runs a router until `shutdown` fires. A lost etcd lease stops it with
/// [`RouterError::LeaseLost`]: its node id may be taken over, so it must
/// not go on answering as that node.
pub async fn run(cfg: RouterConfig, shutdown: CancellationToken) -> Result<(), RouterError> {
    let (listener, local) = bind(&cfg.listen).await?;
    let advertised = cfg.advertised.clone().unwrap_or_else(|| local.to_string());
    let (host, port) = host_port(&advertised)?;

    let coord = Coord::connect(CoordConfig {
        endpoints: cfg.etcd.clone(),
        prefix: cfg.etcd_prefix.clone(),
        lease_ttl: cfg.lease_ttl(),
        connect_timeout: Duration::from_secs(5),
    })
    .await?;
    let link = coord
        .get::<Link>(&keys::link(&cfg.link))
        .await?
        .ok_or_else(|| RouterError::UnknownLink(cfg.link.clone()))?
        .value;
    let Some(source) = connect(&link.source, "source", &link.name, &cfg, &shutdown).await else {
        return Ok(());
    };
    let Some(target) = connect(&link.target, "target", &link.name, &cfg, &shutdown).await else {
        return Ok(());
    };

    let internal = CancellationToken::new();
    let session = coord.session(cfg.lease_ttl(), internal.clone()).await?;
    let health = Health::default();
    let metrics = Metrics::new()?;
    let (http_addr, http_task) = cutover_telemetry::serve_http(
        &cfg.http_addr,
        metrics.registry.clone(),
        health.clone(),
        internal.clone(),
    )
    .await?;

    let (grpc_listener, grpc_local) = bind(&cfg.grpc_addr).await?;
    let grpc_advertised = cfg
        .advertised_grpc_addr
        .clone()
        .unwrap_or_else(|| grpc_local.to_string());
    host_port(&grpc_advertised)?;
    let me = RouterMember {
        node_id: cfg.node_id,
        host,
        port,
        started_at_ms: cutover_model::now_ms(),
        link: link.name.clone(),
        grpc_addr: grpc_advertised,
    };
    let instance = uuid::Uuid::new_v4().simple().to_string();
    members::join(&coord, &session, &me, &instance).await?;
    let (routers, watch_task) = members::watch(&coord, internal.clone()).await?;
    let holding = Holding::default();
    let (topics, topics_task) = topics::watch(
        &coord,
        &link.name,
        metrics.clone(),
        holding.produce.clone(),
        holding.txns.clone(),
        internal.clone(),
    )
    .await?;
    let (groups, groups_task) = topics::watch_groups(
        &coord,
        &link.name,
        metrics.clone(),
        holding.joins.clone(),
        holding.txns.clone(),
        internal.clone(),
    )
    .await?;
    let api = RouterApi {
        node_id: cfg.node_id,
        link: link.name.clone(),
        kafka_address: advertised.clone(),
        started_at_ms: me.started_at_ms,
        holding: holding.clone(),
        topics: topics.clone(),
    };
    let grpc_cancel = internal.clone();
    let grpc_task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
        let result = tonic::transport::Server::builder()
            // Continue the caller's trace (a promotion) in this service.
            .layer(TraceContextLayer::Server)
            .add_service(RouterServer::new(api))
            .serve_with_incoming_shutdown(incoming, grpc_cancel.cancelled())
            .await;
        if let Err(e) = result {
            error!(error = %e, "gRPC server failed");
        }
    });
    let forget_task = tokio::spawn(forget_silent_members(
        holding.members.clone(),
        internal.clone(),
    ));
    let router = Arc::new(Router::new(
        cfg.node_id,
        Watched {
            routers,
            topics,
            groups,
        },
        Clusters {
            source: source.clone(),
            target: target.clone(),
        },
        Limits {
            timeout: cfg.kafka_timeout(),
            max_fetch_bytes: cfg.max_fetch_bytes,
        },
        metrics.clone(),
        Producers::new(
            coord.clone(),
            link.name.clone(),
            cfg.kafka_timeout(),
            metrics,
        ),
        holding,
    ));
    let upkeep_task = tokio::spawn({
        let router = router.clone();
        let expiry = cfg.producer_expiry();
        let cancel = internal.clone();
        async move {
            router
                .producers
                .run_upkeep(expiry, PRODUCER_SWEEP_EVERY, cancel)
                .await
        }
    });
    let limits = ConnectionLimits {
        max_request_bytes: cfg.max_request_bytes,
        max_inflight: cfg.max_inflight.max(1),
        max_inflight_bytes: cfg.max_inflight_bytes,
    };
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server::serve(
        listener,
        router,
        limits,
        stop.clone(),
        cfg.drain(),
    ));
    health.set_ready(true);
    info!(node_id = cfg.node_id, kafka = %local, advertised = %advertised, grpc = %grpc_local, http = %http_addr, link = %link.name, "router started");

    let lost = session.lost();
    let result = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        _ = lost.cancelled() => Err(RouterError::LeaseLost),
    };
    // Leave the brokers clients see first, so their next Metadata points
    // elsewhere; then answer what is in flight and close.
    health.set_ready(false);
    if result.is_ok() {
        if let Err(e) =
            cutover_coord::deregister_member(&coord, keys::ROUTER_KIND, &cfg.node_id.to_string())
                .await
        {
            warn!(error = %e, "could not leave the router group; the lease expiry will");
        }
    }
    stop.cancel();
    let _ = serving.await;
    internal.cancel();
    let _ = watch_task.await;
    let _ = topics_task.await;
    let _ = groups_task.await;
    let _ = http_task.await;
    let _ = grpc_task.await;
    let _ = forget_task.await;
    let _ = upkeep_task.await;
    source.close().await;
    target.close().await;
    if result.is_ok() {
        if let Err(e) = session.revoke().await {
            warn!(error = %e, "could not revoke the lease; it will expire by itself");
        }
    }
    info!("router stopped");
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses_must_be_reachable_host_and_port() {
        assert_eq!(
            host_port("10.0.0.5:9092").unwrap(),
            ("10.0.0.5".into(), 9092)
        );
        assert_eq!(host_port("[::1]:9092").unwrap(), ("::1".into(), 9092));
        for bad in [
            "0.0.0.0:9092",
            "router",
            "router:x",
            ":9092",
            "router:70000",
        ] {
            assert!(
                matches!(host_port(bad), Err(RouterError::BadAdvertised(_))),
                "{bad}"
            );
        }
    }
}
