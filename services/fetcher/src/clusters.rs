//! Kafka connections per link, shared by the partitions of that link and
//! replaced when the link's cluster settings change, plus the link's fetch
//! loop (see [`crate::fetch_mux`]).
//!
//! No lock is held across network I/O. Connecting a link can take the whole
//! request timeout per bootstrap server when a cluster accepts connections
//! but does not answer, and every partition of every link, and the
//! balancer (`retain`), goes through this cache: a lock held across a
//! connect would stall them all behind one unreachable cluster. Instead a
//! link being connected has one attempt under way, a task of its own, that
//! every caller for that link awaits (one connect per link, not one per
//! partition); the map lock only guards looking it up and installing the
//! result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cutover_kafka::{Cluster, ClusterConfig, FetchOptions, KafkaError};
use cutover_model::{ClusterSpec, CopyDirection, Link};
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fetch_mux::{FetchMux, IdleMode};
use crate::offsets::OffsetLookups;

/// What the partitions of one link share.
#[derive(Clone)]
pub struct LinkClients {
    pub source: Cluster,
    pub target: Cluster,
    /// Fetches from the source (the mirror) ...
    pub fetch: FetchMux,
    /// ... and from the target (the reverse mirror of promoted topics).
    pub reverse_fetch: FetchMux,
    /// Offset lookups of each side, batched across partitions.
    pub source_offsets: OffsetLookups,
    pub target_offsets: OffsetLookups,
}

impl LinkClients {
    pub fn fetch_for(&self, direction: CopyDirection) -> &FetchMux {
        match direction {
            CopyDirection::Forward => &self.fetch,
            CopyDirection::Reverse => &self.reverse_fetch,
        }
    }
}

/// One connect attempt of a link, awaited by every caller that wants it.
type Attempt = Shared<BoxFuture<'static, Result<LinkClients, KafkaError>>>;

struct Entry {
    clients: LinkClients,
    /// The two fetch loops and the two offset lookup loops.
    loops: Vec<JoinHandle<()>>,
}

impl Entry {
    /// The loops must have been told to stop (the slot's `stop`).
    async fn close(self) {
        for l in self.loops {
            let _ = l.await;
        }
        self.clients.source.close().await;
        self.clients.target.close().await;
    }
}

enum State {
    Connecting(Attempt),
    Ready(Entry),
}

/// A link's place in the cache, for one set of cluster settings.
struct Slot {
    source: ClusterSpec,
    target: ClusterSpec,
    /// Tells an attempt whether the slot it connects for is still the
    /// link's (a replaced or removed slot's attempt closes what it opened).
    generation: u64,
    /// Stops the attempt under way, then the fetch loop.
    stop: CancellationToken,
    state: State,
}

impl Slot {
    fn serves(&self, link: &Link) -> bool {
        self.source == link.source && self.target == link.target
    }

    /// Stops whatever the slot runs and waits until it did: an attempt
    /// under way ends at once (and closes what it connected), a ready
    /// link's fetch loop and connections are closed.
    async fn close(self) {
        self.stop.cancel();
        match self.state {
            State::Connecting(attempt) => {
                let _ = attempt.await;
            }
            State::Ready(entry) => entry.close().await,
        }
    }
}

#[derive(Default)]
struct Slots {
    next_generation: u64,
    map: HashMap<String, Slot>,
}

#[derive(Clone)]
pub struct ClusterCache {
    client_id: String,
    timeout: Duration,
    fetch_opts: FetchOptions,
    idle: IdleMode,
    slots: Arc<Mutex<Slots>>,
}

impl ClusterCache {
    pub fn new(
        client_id: String,
        timeout: Duration,
        fetch_opts: FetchOptions,
        idle: IdleMode,
    ) -> Self {
        ClusterCache {
            client_id,
            timeout,
            fetch_opts,
            idle,
            slots: Arc::default(),
        }
    }

    /// Never held across an await.
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn config(&self, spec: &ClusterSpec) -> Result<ClusterConfig, KafkaError> {
        let mut c = ClusterConfig::with_properties(&spec.bootstrap_servers, &spec.properties)?;
        c.client_id = self.client_id.clone();
        c.request_timeout = self.timeout;
        Ok(c)
    }

    /// Until when the partitions of `link` copied in `direction` waiting
    /// in its fetch sessions are known to be caught up (see
    /// [`FetchMux::confirmed_at_ms`]).
    pub fn confirmed_at_ms(&self, link: &str, direction: CopyDirection) -> Option<i64> {
        match &self.lock().map.get(link)?.state {
            State::Ready(e) => e.clients.fetch_for(direction).confirmed_at_ms(),
            State::Connecting(_) => None,
        }
    }

    /// The link's clients, connecting if needed. Callers for a link that is
    /// being connected share that attempt and its outcome; a failed attempt
    /// is forgotten, so the next call tries again.
    pub async fn get(&self, link: &Link) -> Result<LinkClients, KafkaError> {
        let (attempt, replaced) = {
            let mut slots = self.lock();
            match slots.map.get(&link.name).filter(|s| s.serves(link)) {
                Some(Slot {
                    state: State::Ready(e),
                    ..
                }) => return Ok(e.clients.clone()),
                Some(Slot {
                    state: State::Connecting(a),
                    ..
                }) => (a.clone(), None),
                None => {
                    let generation = slots.next_generation;
                    slots.next_generation += 1;
                    let stop = CancellationToken::new();
                    let attempt =
                        tokio::spawn(self.clone().connect(link.clone(), generation, stop.clone()))
                            .map(|joined| {
                                joined.unwrap_or_else(|e| {
                                    Err(KafkaError::Protocol(format!("connect task failed: {e}")))
                                })
                            })
                            .boxed()
                            .shared();
                    let slot = Slot {
                        source: link.source.clone(),
                        target: link.target.clone(),
                        generation,
                        stop,
                        state: State::Connecting(attempt.clone()),
                    };
                    (attempt, slots.map.insert(link.name.clone(), slot))
                }
            }
        };
        if let Some(old) = replaced {
            old.close().await;
        }
        attempt.await
    }

    /// One attempt: connects both clusters, starts the fetch loop and
    /// installs them, unless the slot was replaced or removed meanwhile
    /// (then it closes them and answers [`KafkaError::Closed`]).
    async fn connect(
        self,
        link: Link,
        generation: u64,
        stop: CancellationToken,
    ) -> Result<LinkClients, KafkaError> {
        let connected = tokio::select! {
            _ = stop.cancelled() => Err(KafkaError::Closed),
            r = self.connect_both(&link) => r,
        };
        let (source, target) = match connected {
            Ok(pair) => pair,
            Err(e) => {
                self.forget(&link.name, generation);
                return Err(e);
            }
        };
        let (fetch, fetch_loop) = FetchMux::start(
            source.clone(),
            self.fetch_opts.clone(),
            self.idle,
            &link.name,
            CopyDirection::Forward,
            stop.clone(),
        );
        // A loop with no partitions costs nothing but its task.
        let (reverse_fetch, reverse_loop) = FetchMux::start(
            target.clone(),
            self.fetch_opts.clone(),
            self.idle,
            &link.name,
            CopyDirection::Reverse,
            stop.clone(),
        );
        let (source_offsets, source_lookups) = OffsetLookups::start(source.clone(), stop.clone());
        let (target_offsets, target_lookups) = OffsetLookups::start(target.clone(), stop.clone());
        let clients = LinkClients {
            source,
            target,
            fetch,
            reverse_fetch,
            source_offsets,
            target_offsets,
        };
        let entry = Entry {
            clients: clients.clone(),
            loops: vec![fetch_loop, reverse_loop, source_lookups, target_lookups],
        };
        let superseded = {
            let mut slots = self.lock();
            match slots.map.get_mut(&link.name) {
                Some(slot) if slot.generation == generation && !stop.is_cancelled() => {
                    slot.state = State::Ready(entry);
                    None
                }
                _ => Some(entry),
            }
        };
        match superseded {
            None => Ok(clients),
            Some(entry) => {
                stop.cancel();
                entry.close().await;
                Err(KafkaError::Closed)
            }
        }
    }

    async fn connect_both(&self, link: &Link) -> Result<(Cluster, Cluster), KafkaError> {
        let source = Cluster::connect(self.config(&link.source)?).await?;
        let target = match self.config(&link.target) {
            Ok(c) => c,
            Err(e) => {
                source.close().await;
                return Err(e);
            }
        };
        match Cluster::connect(target).await {
            Ok(target) => Ok((source, target)),
            Err(e) => {
                source.close().await;
                Err(e)
            }
        }
    }

    /// Removes the slot of a failed attempt, if it is still the link's.
    fn forget(&self, name: &str, generation: u64) {
        let mut slots = self.lock();
        if slots
            .map
            .get(name)
            .is_some_and(|s| s.generation == generation)
        {
            slots.map.remove(name);
        }
    }

    /// Drops connections of links no longer in use (and stops their
    /// connect attempts).
    pub async fn retain(&self, live_links: &[String]) {
        let stale: Vec<Slot> = {
            let mut slots = self.lock();
            let names: Vec<String> = slots
                .map
                .keys()
                .filter(|k| !live_links.contains(k))
                .cloned()
                .collect();
            names
                .iter()
                .filter_map(|name| slots.map.remove(name))
                .collect()
        };
        for slot in stale {
            slot.close().await;
        }
    }

    pub async fn close_all(&self) {
        let all: Vec<Slot> = self.lock().map.drain().map(|(_, s)| s).collect();
        for slot in all {
            slot.close().await;
        }
    }
}
