use std::future::Future;
use std::time::Duration;

use cutover_coord::testing::EtcdServer;
use cutover_coord::{Coord, CoordConfig, WatchEvent};
use tokio::sync::mpsc;

/// Upper bound on any single awaited event; generous for a loaded CI box.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A short TTL keeps lease tests fast; 2s is etcd's default minimum.
pub const TTL: Duration = Duration::from_secs(2);

pub async fn etcd() -> EtcdServer {
    tokio::task::spawn_blocking(|| EtcdServer::start(None))
        .await
        .expect("etcd launcher thread")
        .expect("start etcd")
}

pub fn config(endpoint: &str) -> CoordConfig {
    CoordConfig {
        endpoints: vec![endpoint.to_owned()],
        prefix: "/cutover-test/v1".to_owned(),
        lease_ttl: TTL,
        connect_timeout: Duration::from_secs(5),
    }
}

pub async fn connect(endpoint: &str) -> Coord {
    Coord::connect(config(endpoint))
        .await
        .expect("connect to etcd")
}

pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for {what}"),
    }
}

pub async fn next_event(rx: &mut mpsc::Receiver<WatchEvent>) -> WatchEvent {
    within("a watch event", rx.recv())
        .await
        .expect("watch stream ended unexpectedly")
}
