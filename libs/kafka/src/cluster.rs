//! The cluster handle: connections, metadata cache, routing, retries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rand::seq::SliceRandom;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, instrument, Span};

use crate::config::ClusterConfig;
use crate::conn::{Connection, VersionTable};
use crate::error::{codes, KafkaError};
use crate::types::{BrokerMetadata, ClusterMetadata, PartitionMetadata, TopicMetadata, Uuid};

/// A handle to one Kafka cluster. Cheap to clone; all clones share
/// connections and the metadata cache. Dropping the last clone stops every
/// connection task; [`Cluster::close`] does so and waits for them.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap", &self.inner.config.bootstrap)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) config: ClusterConfig,
    token: CancellationToken,
    tracker: TaskTracker,
    /// One slot per broker address, created on first use, never removed
    /// (a cluster has few brokers).
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    meta: RwLock<MetaCache>,
    /// Serialises topic metadata refreshes so that many callers noticing
    /// the same stale leader cause one Metadata request, not one each.
    refresh_lock: tokio::sync::Mutex<()>,
    /// Versions negotiated with the most recently opened connection; what
    /// `supports()` answers from.
    versions: RwLock<VersionTable>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

#[derive(Default)]
struct Slot {
    conn: Mutex<Option<Arc<Connection>>>,
    /// Held while connecting, so concurrent callers share one attempt.
    reconnect: tokio::sync::Mutex<Reconnect>,
}

#[derive(Default)]
struct Reconnect {
    failures: u32,
    not_before: Option<Instant>,
}

impl Slot {
    fn live(&self) -> Option<Arc<Connection>> {
        lock(&self.conn).as_ref().filter(|c| c.is_alive()).cloned()
    }
}

struct MetaCache {
    cluster_id: Option<String>,
    controller_id: i32,
    controller_stale: bool,
    brokers: BTreeMap<i32, BrokerMetadata>,
    /// Shared, not copied, by every request that reads it.
    topics: HashMap<String, Arc<TopicMetadata>>,
    /// Topics whose cached leaders proved wrong; refreshed before next use.
    stale: HashSet<String>,
}

/// Where a partition's leader is, per the metadata cache.
pub(crate) struct Leader {
    /// `host:port` of the leader.
    pub(crate) addr: String,
    pub(crate) leader_epoch: i32,
    pub(crate) topic_id: Uuid,
}

/// Where to send a request for one partition.
pub(crate) struct Route {
    pub(crate) conn: Arc<Connection>,
    pub(crate) leader_epoch: i32,
    pub(crate) topic_id: Uuid,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning means a panic elsewhere; the data is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// Milliseconds for a protocol `timeout_ms` field.
pub(crate) fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

impl Cluster {
    /// Connects to the first bootstrap broker that answers, negotiates API
    /// versions with it and loads the broker list.
    ///
    /// The error names every address tried and why each failed.
    #[instrument(level = "info", name = "kafka_connect", skip_all, fields(bootstrap = ?config.bootstrap))]
    pub async fn connect(config: ClusterConfig) -> Result<Cluster, KafkaError> {
        if config.bootstrap.is_empty() {
            return Err(KafkaError::Connect {
                addr: "(none)".to_owned(),
                source: Arc::new(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the bootstrap server list is empty",
                )),
            });
        }
        let inner = Arc::new(Inner {
            config,
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            slots: Mutex::new(HashMap::new()),
            meta: RwLock::new(MetaCache {
                cluster_id: None,
                controller_id: -1,
                controller_stale: true,
                brokers: BTreeMap::new(),
                topics: HashMap::new(),
                stale: HashSet::new(),
            }),
            refresh_lock: tokio::sync::Mutex::new(()),
            versions: RwLock::new(VersionTable::default()),
        });
        let mut errors = Vec::new();
        let mut connected = false;
        for addr in &inner.config.bootstrap {
            match inner.connection(addr).await {
                Ok(_) => {
                    connected = true;
                    break;
                }
                Err(e) => errors.push((addr.clone(), e)),
            }
        }
        if !connected {
            return Err(combine_errors(errors));
        }
        inner.load_metadata(Some(&[])).await?;
        Ok(Cluster { inner })
    }

    /// Fetches metadata for `topics` (all topics when `None`; only brokers
    /// and controller for an empty slice) and refreshes the cache with it.
    #[instrument(level = "debug", skip_all, fields(topics = ?topics, broker = tracing::field::Empty))]
    pub async fn metadata(&self, topics: Option<&[String]>) -> Result<ClusterMetadata, KafkaError> {
        let inner = &self.inner;
        inner
            .retrying("Metadata", || inner.load_metadata(topics))
            .await
    }

    /// Fresh metadata for one topic; `None` if it does not exist.
    #[instrument(level = "debug", skip_all, fields(topic = %name, broker = tracing::field::Empty))]
    pub async fn topic(&self, name: &str) -> Result<Option<TopicMetadata>, KafkaError> {
        let topics = [name.to_owned()];
        let md = self.metadata(Some(&topics)).await?;
        Ok(md.topics.into_iter().find(|t| t.name == name))
    }

    /// The broker id leading `topic`/`partition` according to the cached
    /// metadata; no request is sent. A hint for grouping work by broker:
    /// requests still go to whoever leads when they are sent.
    pub fn leader_hint(&self, topic: &str, partition: i32) -> Option<i32> {
        self.inner.cached_leader(topic, partition)
    }

    /// The configuration this client was connected with.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// Whether the cluster offers a version of `api` this client can use.
    /// Lets callers fail early with a clear message ("target cluster does
    /// not support CreateTopics").
    pub fn supports(&self, api: ApiKey) -> bool {
        read(&self.inner.versions).get(api).is_some()
    }

    /// The negotiated Produce version for the current leader of the
    /// partition (from the cache, without I/O), or for the cluster if the
    /// leader is not connected yet; -1 if Produce is not supported.
    /// zstd batches need at least 7.
    pub fn produce_version(&self, topic: &str, partition: i32) -> i16 {
        let inner = &self.inner;
        let (addr, topic_id) = {
            let meta = read(&inner.meta);
            let topic_md = meta.topics.get(topic);
            let addr = topic_md
                .and_then(|t| t.partition(partition))
                .and_then(|p| meta.brokers.get(&p.leader))
                .map(BrokerMetadata::addr);
            (addr, topic_md.map(|t| t.topic_id).unwrap_or_else(Uuid::nil))
        };
        let version = addr
            .and_then(|a| inner.live_connection(&a))
            .map(|c| c.version(ApiKey::Produce))
            .unwrap_or_else(|| read(&inner.versions).get(ApiKey::Produce));
        match version {
            // Produce v13 addresses topics by id.
            Some(v) if topic_id.is_nil() => v.min(12),
            Some(v) => v,
            None => -1,
        }
    }

    /// The version of `api` negotiated with the cluster (the most recently
    /// opened connection), `None` if unsupported.
    pub fn api_version(&self, api: ApiKey) -> Option<i16> {
        read(&self.inner.versions).get(api)
    }

    /// The lowest and highest version of `api` usable with the cluster
    /// (the most recently opened connection), `None` if unsupported.
    pub fn api_range(&self, api: ApiKey) -> Option<(i16, i16)> {
        read(&self.inner.versions).range(api)
    }

    /// The bootstrap addresses this handle was created with.
    pub fn bootstrap(&self) -> &[String] {
        &self.inner.config.bootstrap
    }

    /// Closes every connection and waits for their tasks to end. Requests
    /// in flight fail; later calls return [`KafkaError::Closed`].
    pub async fn close(&self) {
        self.inner.token.cancel();
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).values().cloned().collect();
        for slot in slots {
            lock(&slot.conn).take();
        }
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

/// One error out of the failures of several addresses.
fn combine_errors(mut errors: Vec<(String, KafkaError)>) -> KafkaError {
    if errors.len() == 1 {
        if let Some((_, e)) = errors.pop() {
            return e;
        }
    }
    if errors.iter().any(|(_, e)| matches!(e, KafkaError::Closed)) {
        return KafkaError::Closed;
    }
    let addrs: Vec<&str> = errors.iter().map(|(a, _)| a.as_str()).collect();
    let causes: Vec<String> = errors.iter().map(|(a, e)| format!("{a}: {e}")).collect();
    KafkaError::Connect {
        addr: addrs.join(", "),
        source: Arc::new(io::Error::other(causes.join("; "))),
    }
}

impl Inner {
    pub(crate) fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when the client is closed.
    pub(crate) async fn closed(&self) {
        self.token.cancelled().await
    }

    fn slot(&self, addr: &str) -> Arc<Slot> {
        lock(&self.slots)
            .entry(addr.to_owned())
            .or_default()
            .clone()
    }

    fn live_connection(&self, addr: &str) -> Option<Arc<Connection>> {
        lock(&self.slots).get(addr).and_then(|s| s.live())
    }

    /// The connection to `addr`, opened if needed. After failures, waits out
    /// an exponential backoff before trying again, so a dead broker is not
    /// hammered by every caller.
    pub(crate) async fn connection(&self, addr: &str) -> Result<Arc<Connection>, KafkaError> {
        if self.is_closed() {
            return Err(KafkaError::Closed);
        }
        let slot = self.slot(addr);
        if let Some(c) = slot.live() {
            return Ok(c);
        }
        let mut reconnect = tokio::select! {
            _ = self.token.cancelled() => return Err(KafkaError::Closed),
            g = slot.reconnect.lock() => g,
        };
        if let Some(c) = slot.live() {
            return Ok(c);
        }
        if let Some(t) = reconnect.not_before {
            tokio::select! {
                _ = self.token.cancelled() => return Err(KafkaError::Closed),
                _ = tokio::time::sleep_until(t) => {}
            }
        }
        match Connection::open(addr, &self.config, &self.token, &self.tracker).await {
            Ok(c) => {
                *reconnect = Reconnect::default();
                *write(&self.versions) = c.versions().clone();
                *lock(&slot.conn) = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                let delay = self.config.reconnect_policy().delay(reconnect.failures);
                reconnect.failures = reconnect.failures.saturating_add(1);
                reconnect.not_before = Some(Instant::now() + delay);
                debug!(broker = %addr, error = %e, ?delay, "connection failed");
                Err(e)
            }
        }
    }

    /// A new connection to `addr`, not shared through the slots (a
    /// [`crate::Lane`]'s own).
    /// A new connection whose requests carry `client_id` instead of the
    /// configured one (a proxy forwarding a client's requests as that
    /// client, so broker quotas, logs and group member ids name it).
    pub(crate) async fn open_connection_as(
        &self,
        addr: &str,
        client_id: Option<&str>,
    ) -> Result<Arc<Connection>, KafkaError> {
        if self.is_closed() {
            return Err(KafkaError::Closed);
        }
        match client_id {
            None => Connection::open(addr, &self.config, &self.token, &self.tracker).await,
            Some(id) => {
                let mut config = self.config.clone();
                config.client_id = id.to_owned();
                Connection::open(addr, &config, &self.token, &self.tracker).await
            }
        }
    }

    /// Some connection: a live one if any, else the first known broker or
    /// bootstrap address that accepts one.
    pub(crate) async fn any_connection(&self) -> Result<Arc<Connection>, KafkaError> {
        if self.is_closed() {
            return Err(KafkaError::Closed);
        }
        let live: Vec<Arc<Connection>> = lock(&self.slots)
            .values()
            .filter_map(|s| s.live())
            .collect();
        if let Some(c) = live.into_iter().next() {
            return Ok(c);
        }
        let mut candidates: Vec<String> = read(&self.meta)
            .brokers
            .values()
            .map(BrokerMetadata::addr)
            .collect();
        // Spread load and avoid always hitting the same dead broker first.
        candidates.shuffle(&mut rand::rng());
        for b in &self.config.bootstrap {
            if !candidates.contains(b) {
                candidates.push(b.clone());
            }
        }
        let mut errors = Vec::new();
        for addr in candidates {
            match self.connection(&addr).await {
                Ok(c) => return Ok(c),
                Err(KafkaError::Closed) => return Err(KafkaError::Closed),
                Err(e) => errors.push((addr, e)),
            }
        }
        Err(combine_errors(errors))
    }

    /// The controller's connection (any broker if the controller is
    /// unknown; current brokers forward admin requests to it anyway).
    pub(crate) async fn controller_connection(&self) -> Result<Arc<Connection>, KafkaError> {
        if read(&self.meta).controller_stale {
            self.load_metadata(Some(&[])).await?;
        }
        let addr = {
            let meta = read(&self.meta);
            meta.brokers
                .get(&meta.controller_id)
                .map(BrokerMetadata::addr)
        };
        match addr {
            Some(addr) => self.connection(&addr).await.inspect_err(|e| {
                if e.needs_metadata_refresh() {
                    self.mark_controller_stale();
                }
            }),
            None => self.any_connection().await,
        }
    }

    pub(crate) fn mark_stale(&self, topic: &str) {
        write(&self.meta).stale.insert(topic.to_owned());
    }

    pub(crate) fn mark_controller_stale(&self) {
        write(&self.meta).controller_stale = true;
    }

    /// Marks the topic's metadata stale when `r` is an error that suggests
    /// the route was wrong.
    pub(crate) fn observe<T>(
        &self,
        topic: &str,
        r: Result<T, KafkaError>,
    ) -> Result<T, KafkaError> {
        if let Err(e) = &r {
            if e.needs_metadata_refresh() {
                self.mark_stale(topic);
            }
        }
        r
    }

    /// Runs `op` again (up to `config.retries` times, with backoff) while it
    /// fails with a retriable error that a metadata refresh may cure. The
    /// operation itself marks what is stale.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        what: &'static str,
        op: F,
    ) -> Result<T, KafkaError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, KafkaError>>,
    {
        self.retrying_if(what, KafkaError::needs_metadata_refresh, op)
            .await
    }

    /// [`Self::retrying`] for errors (retriable ones) that `worth` says a
    /// new attempt may cure: a group request retries a moved or loading
    /// coordinator, which no metadata refresh cures. Beyond
    /// `config.retries` attempts it goes on until `config.request_timeout`
    /// has passed since the first: a coordinator loading its partitions
    /// (COORDINATOR_LOAD_IN_PROGRESS) takes seconds on a busy broker, as
    /// Kafka's admin client waits for up to its API timeout.
    pub(crate) async fn retrying_if<T, F, Fut>(
        &self,
        what: &'static str,
        worth: fn(&KafkaError) -> bool,
        mut op: F,
    ) -> Result<T, KafkaError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, KafkaError>>,
    {
        let mut attempt = 0;
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        loop {
            let e = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let delay = self.config.retry_policy().delay(attempt);
            let in_budget =
                attempt < self.config.retries || tokio::time::Instant::now() + delay < deadline;
            if !(in_budget && e.is_retriable() && worth(&e)) {
                return Err(e);
            }
            debug!(error = %e, attempt, ?delay, "{what} failed, retrying");
            attempt += 1;
            tokio::select! {
                _ = self.token.cancelled() => return Err(KafkaError::Closed),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One Metadata request; updates the cache.
    pub(crate) async fn load_metadata(
        &self,
        topics: Option<&[String]>,
    ) -> Result<ClusterMetadata, KafkaError> {
        let conn = self.any_connection().await?;
        Span::current().record("broker", conn.addr());
        let version = conn.require(ApiKey::Metadata)?;
        let mut req = MetadataRequest::default();
        req.topics = match topics {
            // v0 has no null: an empty list means all topics there.
            None if version == 0 => Some(Vec::new()),
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        let mut t = MetadataRequestTopic::default();
                        t.name = Some(topic_name(n));
                        t
                    })
                    .collect(),
            ),
        };
        if version >= 4 {
            req.allow_auto_topic_creation = false;
        }
        let resp: MetadataResponse = conn
            .request(ApiKey::Metadata, version, &req, self.config.request_timeout)
            .await?;
        if version >= 13 {
            KafkaError::check(resp.error_code, None)?;
        }
        Ok(self.apply_metadata(topics, resp))
    }

    fn apply_metadata(
        &self,
        requested: Option<&[String]>,
        resp: MetadataResponse,
    ) -> ClusterMetadata {
        let brokers: BTreeMap<i32, BrokerMetadata> = resp
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id.0,
                    BrokerMetadata {
                        node_id: b.node_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                    },
                )
            })
            .collect();
        let mut topics = Vec::with_capacity(resp.topics.len());
        let mut unknown = Vec::new();
        for t in &resp.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            if t.error_code == codes::UNKNOWN_TOPIC_OR_PARTITION
                || t.error_code == codes::UNKNOWN_TOPIC_ID
            {
                unknown.push(name);
                continue;
            }
            let mut partitions: Vec<PartitionMetadata> = t
                .partitions
                .iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            topics.push(TopicMetadata {
                name,
                topic_id: t.topic_id,
                is_internal: t.is_internal,
                partitions,
                error_code: t.error_code,
            });
        }

        let mut meta = write(&self.meta);
        meta.brokers = brokers.clone();
        meta.cluster_id = resp.cluster_id.as_ref().map(|c| c.to_string());
        meta.controller_id = resp.controller_id.0;
        meta.controller_stale = false;
        if requested.is_none() {
            meta.topics.clear();
            meta.stale.clear();
        }
        for name in &unknown {
            meta.topics.remove(name);
            meta.stale.remove(name);
        }
        for t in &topics {
            meta.stale.remove(&t.name);
            meta.topics.insert(t.name.clone(), Arc::new(t.clone()));
        }
        ClusterMetadata {
            cluster_id: meta.cluster_id.clone(),
            controller_id: meta.controller_id,
            brokers: brokers.into_values().collect(),
            topics,
        }
    }

    /// `f` of the topic's cached metadata, unless it is missing or stale.
    fn with_cached_topic<R>(
        &self,
        topic: &str,
        f: impl FnOnce(&Arc<TopicMetadata>) -> R,
    ) -> Option<R> {
        let meta = read(&self.meta);
        if meta.stale.contains(topic) {
            return None;
        }
        meta.topics.get(topic).map(f)
    }

    fn cached_topic(&self, topic: &str) -> Option<Arc<TopicMetadata>> {
        self.with_cached_topic(topic, Arc::clone)
    }

    /// The leader of a partition as the metadata cache knows it, without
    /// asking the cluster (None when not cached, stale or leaderless).
    pub(crate) fn cached_leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let leader =
            self.with_cached_topic(topic, |t| t.partition(partition).map(|p| p.leader))??;
        (leader >= 0).then_some(leader)
    }

    /// `host:port` of a broker by node id, from the cached broker list.
    pub(crate) fn broker_addr(&self, id: i32) -> Option<String> {
        read(&self.meta).brokers.get(&id).map(BrokerMetadata::addr)
    }

    /// Topic metadata from the cache, refreshed first if missing or stale.
    pub(crate) async fn topic_metadata(
        &self,
        topic: &str,
    ) -> Result<Option<Arc<TopicMetadata>>, KafkaError> {
        self.topics_metadata(&[topic])
            .await
            .remove(topic)
            .unwrap_or(Ok(None))
    }

    /// Metadata of several topics: from the cache where it is fresh, with
    /// one Metadata request for all the others. Every name gets an entry:
    /// `Ok(None)` if the topic does not exist, `Err` if the refresh failed.
    pub(crate) async fn topics_metadata(
        &self,
        names: &[&str],
    ) -> HashMap<String, Result<Option<Arc<TopicMetadata>>, KafkaError>> {
        let mut out = HashMap::with_capacity(names.len());
        let mut missing = self.take_cached(names.iter().copied(), &mut out);
        if missing.is_empty() {
            return out;
        }
        let _guard = tokio::select! {
            _ = self.token.cancelled() => {
                out.extend(missing.into_iter().map(|n| (n, Err(KafkaError::Closed))));
                return out;
            }
            g = self.refresh_lock.lock() => g,
        };
        // Whoever held the lock may just have refreshed some of them.
        let waited = std::mem::take(&mut missing);
        missing = self.take_cached(waited.iter().map(String::as_str), &mut out);
        if missing.is_empty() {
            return out;
        }
        match self.load_metadata(Some(&missing)).await {
            Ok(md) => {
                let mut found: HashMap<String, Arc<TopicMetadata>> = md
                    .topics
                    .into_iter()
                    .map(|t| (t.name.clone(), Arc::new(t)))
                    .collect();
                for name in missing {
                    let t = found.remove(&name);
                    out.insert(name, Ok(t));
                }
            }
            Err(e) => out.extend(missing.into_iter().map(|n| (n, Err(e.clone())))),
        }
        out
    }

    /// Moves the fresh cached topics among `names` into `out`; returns the
    /// others (each once).
    fn take_cached<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
        out: &mut HashMap<String, Result<Option<Arc<TopicMetadata>>, KafkaError>>,
    ) -> Vec<String> {
        let mut missing: Vec<String> = Vec::new();
        for name in names {
            if out.contains_key(name) || missing.iter().any(|m| m == name) {
                continue;
            }
            match self.cached_topic(name) {
                Some(t) => {
                    out.insert(name.to_owned(), Ok(Some(t)));
                }
                None => missing.push(name.to_owned()),
            }
        }
        missing
    }

    /// The leader connection of a partition.
    pub(crate) async fn route(&self, topic: &str, partition: i32) -> Result<Route, KafkaError> {
        let r = self.route_inner(topic, partition).await;
        let r = self.observe(topic, r);
        if let Ok(route) = &r {
            Span::current().record("broker", route.conn.addr());
        }
        r
    }

    async fn route_inner(&self, topic: &str, partition: i32) -> Result<Route, KafkaError> {
        let t = self
            .topic_metadata(topic)
            .await?
            .ok_or_else(|| unknown_topic(topic))?;
        let leader = self.leader(&t, partition)?;
        let conn = self.connection(&leader.addr).await?;
        Ok(Route {
            conn,
            leader_epoch: leader.leader_epoch,
            topic_id: leader.topic_id,
        })
    }

    /// Where the leader of a partition of `t` is, per the cached broker
    /// list. No I/O.
    pub(crate) fn leader(&self, t: &TopicMetadata, partition: i32) -> Result<Leader, KafkaError> {
        let topic = t.name.as_str();
        let no_leader = || KafkaError::NoLeader {
            topic: topic.to_owned(),
            partition,
        };
        let Some(p) = t.partition(partition) else {
            if t.error_code == codes::LEADER_NOT_AVAILABLE {
                return Err(no_leader());
            }
            if t.error_code != 0 {
                return Err(KafkaError::from_code(
                    t.error_code,
                    Some(format!("topic {topic}")),
                ));
            }
            return Err(KafkaError::UnknownTopicOrPartition {
                topic: topic.to_owned(),
                partition,
            });
        };
        if p.leader < 0 {
            return Err(no_leader());
        }
        let addr = read(&self.meta)
            .brokers
            .get(&p.leader)
            .map(BrokerMetadata::addr);
        // A leader missing from the broker list is down (or the metadata is
        // older than the leader change): report no leader.
        let addr = addr.ok_or_else(no_leader)?;
        Ok(Leader {
            addr,
            leader_epoch: p.leader_epoch,
            topic_id: t.topic_id,
        })
    }
}

/// The error for a topic that fresh metadata does not know.
pub(crate) fn unknown_topic(topic: &str) -> KafkaError {
    KafkaError::UnknownTopicOrPartition {
        topic: topic.to_owned(),
        partition: -1,
    }
}
