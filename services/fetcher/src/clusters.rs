//! Kafka connections per link, shared by the partitions of that link and
//! replaced when the link's cluster settings change, plus the link's fetch
//! loop (see [`crate::fetch_mux`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cutover_kafka::{Cluster, ClusterConfig, FetchOptions, KafkaError};
use cutover_model::{ClusterSpec, Link};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fetch_mux::FetchMux;

/// What the partitions of one link share.
#[derive(Clone)]
pub struct LinkClients {
    pub source: Cluster,
    pub target: Cluster,
    pub fetch: FetchMux,
}

struct Entry {
    link: Link,
    clients: LinkClients,
    stop: CancellationToken,
    fetch_loop: JoinHandle<()>,
}

impl Entry {
    async fn close(self) {
        self.stop.cancel();
        let _ = self.fetch_loop.await;
        self.clients.source.close().await;
        self.clients.target.close().await;
    }
}

#[derive(Clone)]
pub struct ClusterCache {
    client_id: String,
    timeout: Duration,
    fetch_opts: FetchOptions,
    idle_poll: Duration,
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl ClusterCache {
    pub fn new(
        client_id: String,
        timeout: Duration,
        fetch_opts: FetchOptions,
        idle_poll: Duration,
    ) -> Self {
        ClusterCache {
            client_id,
            timeout,
            fetch_opts,
            idle_poll,
            inner: Arc::default(),
        }
    }

    fn config(&self, spec: &ClusterSpec) -> ClusterConfig {
        let mut c = ClusterConfig::new(spec.bootstrap_servers.clone());
        c.client_id = self.client_id.clone();
        c.request_timeout = self.timeout;
        c
    }

    /// The link's clients, connecting if needed.
    pub async fn get(&self, link: &Link) -> Result<LinkClients, KafkaError> {
        let mut map = self.inner.lock().await;
        if let Some(e) = map.get(&link.name) {
            if e.link.source == link.source && e.link.target == link.target {
                return Ok(e.clients.clone());
            }
        }
        let source = Cluster::connect(self.config(&link.source)).await?;
        let target = Cluster::connect(self.config(&link.target)).await?;
        let stop = CancellationToken::new();
        let (fetch, fetch_loop) = FetchMux::start(
            source.clone(),
            self.fetch_opts.clone(),
            self.idle_poll,
            &link.name,
            stop.clone(),
        );
        let clients = LinkClients {
            source,
            target,
            fetch,
        };
        let entry = Entry {
            link: link.clone(),
            clients: clients.clone(),
            stop,
            fetch_loop,
        };
        if let Some(old) = map.insert(link.name.clone(), entry) {
            old.close().await;
        }
        Ok(clients)
    }

    /// Drops connections of links no longer in use.
    pub async fn retain(&self, live_links: &[String]) {
        let mut map = self.inner.lock().await;
        let stale: Vec<String> = map
            .keys()
            .filter(|k| !live_links.contains(k))
            .cloned()
            .collect();
        for name in stale {
            if let Some(e) = map.remove(&name) {
                e.close().await;
            }
        }
    }

    pub async fn close_all(&self) {
        let mut map = self.inner.lock().await;
        for (_, e) in map.drain() {
            e.close().await;
        }
    }
}
