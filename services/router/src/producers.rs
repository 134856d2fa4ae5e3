//! Producer ids of the routers' own for idempotent clients.
//!
//! Both clusters allocate producer ids from small numbers up, so an id from
//! the source may be in use on the target (by a fetcher, on the very
//! partition a client writes after a promotion): a clash gives
//! OUT_OF_ORDER_SEQUENCE_NUMBER or INVALID_PRODUCER_EPOCH, fatal for the
//! client. So InitProducerId without a transactional id is answered by the
//! router with an id of its own (from blocks of `CLIENT_ID_BLOCK` taken in
//! etcd, starting at `FIRST_CLIENT_ID` so no upstream id is mistaken for
//! one), and each cluster's producer is allocated there on the first write
//! to it, recorded in the id's `ProducerMapping` in etcd. Every router
//! reads the same mapping, so a client retrying through another router
//! after one died reaches the same upstream producer and the broker drops
//! the duplicate. A broker accepts a producer id it has never seen at any
//! sequence, so a client's sequences go on unchanged on the target.
//!
//! Epochs: a Java idempotent producer bumps its epoch by itself (and starts
//! its sequences again) after some errors, so the epoch sent upstream is the
//! upstream producer's plus the client's, which the broker takes as the
//! same bump.
//!
//! Expiry: a mapping is noted as used at most once an hour (by the router
//! that writes with it, in the background), and every router now and then
//! removes the mappings of its link unused for the expiry (7 days by
//! default, Kafka's `transactional.id.expiration.ms`; brokers forget an
//! idle producer after a day). A producer that comes back after that gets
//! UNKNOWN_PRODUCER_ID and starts over with a new id, as with a broker
//! that forgot it.
//!
//! Transactional producers get ids of the routers' own too: the client's
//! InitProducerId initialises its transactional id on both clusters (each
//! fences the older instances there) and the mapping holds both upstream
//! producers; each transaction runs on one cluster (`transactions`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cutover_coord::{Coord, CoordError, Precondition, WriteOp};
use cutover_kafka::{codes, Cluster, Destination, KafkaError};
use cutover_model::{keys, ProducerMapping, UpstreamProducer};
use cutover_retry::Policy;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::topics::Side;

/// The first client producer id routers give; upstream clusters allocate
/// from 0 in blocks of 1,000 and never get near it.
pub const FIRST_CLIENT_ID: i64 = 1 << 48;
/// Client producer ids a router takes from etcd at once.
pub const CLIENT_ID_BLOCK: i64 = 1_000;
/// A mapping in use is noted as used at most this often.
pub const TOUCH_EVERY: Duration = Duration::from_secs(3600);
/// Uses waiting to be noted in etcd at most; more are dropped (noted on a
/// later write of the same producer).
const TOUCH_QUEUE: usize = 1024;

/// How long a first write waits for a cluster to hand out a producer id.
const ALLOCATE_WITHIN: Duration = Duration::from_secs(10);
const ALLOCATE_RETRY: Policy = Policy::new(Duration::from_millis(50), Duration::from_millis(500));

/// InitProducerId answers that mean "ask again shortly".
fn is_not_ready(code: i16) -> bool {
    matches!(
        code,
        codes::COORDINATOR_LOAD_IN_PROGRESS
            | codes::COORDINATOR_NOT_AVAILABLE
            | codes::NOT_COORDINATOR
    )
}

/// Mappings a router keeps in memory (the rest are read from etcd again).
const CACHE_LIMIT: usize = 100_000;

#[derive(Debug, Error)]
pub enum ProducerError {
    #[error("producer id {0} was not given by a router of this link")]
    Unknown(i64),
    #[error("producer epoch {client} of producer id {id} is out of range")]
    EpochOutOfRange { id: i64, client: i16 },
    #[error("etcd: {0}")]
    Coord(#[from] CoordError),
    #[error("InitProducerId on the {side}: {source}")]
    Upstream {
        side: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("InitProducerId on the {side} answered {}", cutover_kafka::error_name(*code))]
    Refused { side: &'static str, code: i16 },
    #[error("the producer mapping of id {0} kept changing under concurrent writers")]
    Contended(i64),
    #[error("the block counter of client producer ids kept changing under concurrent routers")]
    BlockContended,
}

impl ProducerError {
    /// What a client's Produce gets for the partition: retriable unless the
    /// id is not ours (then the client starts over with a new id). The
    /// batch never went upstream, so the answer must say "not written":
    /// NOT_ENOUGH_REPLICAS is retried by every client as not persisted,
    /// whereas REQUEST_TIMED_OUT means "maybe written" (librdkafka then
    /// reports the records' offsets as unknown).
    pub fn code(&self) -> i16 {
        match self {
            ProducerError::Unknown(_) => codes::UNKNOWN_PRODUCER_ID,
            ProducerError::EpochOutOfRange { .. } => codes::INVALID_PRODUCER_EPOCH,
            _ => codes::NOT_ENOUGH_REPLICAS,
        }
    }

    /// What a transaction request to a coordinator gets: the id not ours
    /// is abortable (the client initialises again), anything else is
    /// retried.
    pub fn coordinator_code(&self) -> i16 {
        match self {
            ProducerError::Unknown(_) => codes::INVALID_PRODUCER_ID_MAPPING,
            ProducerError::EpochOutOfRange { .. } => codes::INVALID_PRODUCER_EPOCH,
            _ => codes::COORDINATOR_NOT_AVAILABLE,
        }
    }
}

/// Whether `producer_id` is one routers give (as opposed to an upstream
/// cluster's, passed through).
pub fn is_client_id(producer_id: i64) -> bool {
    producer_id >= FIRST_CLIENT_ID
}

/// The epoch sent upstream for a client's `client_epoch`.
pub fn upstream_epoch(
    id: i64,
    upstream: UpstreamProducer,
    client_epoch: i16,
) -> Result<i16, ProducerError> {
    if client_epoch < 0 {
        return Err(ProducerError::EpochOutOfRange {
            id,
            client: client_epoch,
        });
    }
    upstream
        .producer_epoch
        .checked_add(client_epoch)
        .ok_or(ProducerError::EpochOutOfRange {
            id,
            client: client_epoch,
        })
}

pub struct Producers {
    coord: Coord,
    link: String,
    timeout: Duration,
    metrics: Metrics,
    /// Ids of the block this router took: next, end (exclusive).
    block: Mutex<(i64, i64)>,
    cache: Mutex<HashMap<i64, ProducerMapping>>,
    /// Ids whose use is to be noted in etcd (see `run_upkeep`).
    touches: mpsc::Sender<i64>,
    touched: Mutex<Option<mpsc::Receiver<i64>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Producers {
    pub fn new(coord: Coord, link: String, timeout: Duration, metrics: Metrics) -> Producers {
        let (touches, touched) = mpsc::channel(TOUCH_QUEUE);
        Producers {
            coord,
            link,
            timeout,
            metrics,
            block: Mutex::new((0, 0)),
            cache: Mutex::new(HashMap::new()),
            touches,
            touched: Mutex::new(Some(touched)),
        }
    }

    /// Notes uses in etcd and removes the link's mappings unused for
    /// `expiry`, every `sweep_every` (with jitter), until `cancel` fires.
    /// Runs once per `Producers`.
    pub async fn run_upkeep(
        &self,
        expiry: Duration,
        sweep_every: Duration,
        cancel: CancellationToken,
    ) {
        let Some(mut touched) = lock(&self.touched).take() else {
            return;
        };
        let jittered = || Policy::new(sweep_every * 2, sweep_every * 2).delay(0);
        let mut next_sweep = tokio::time::Instant::now() + jittered();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                Some(id) = touched.recv() => {
                    if let Err(e) = self.touch(id, cutover_model::now_ms()).await {
                        debug!(producer_id = id, error = %e, "could not note a producer's use; noted on a later write");
                    }
                }
                _ = tokio::time::sleep_until(next_sweep) => {
                    match self.sweep(cutover_model::now_ms(), expiry).await {
                        Ok(0) => {}
                        Ok(n) => info!(link = %self.link, removed = n, "removed producer mappings unused for the expiry"),
                        Err(e) => warn!(link = %self.link, error = %e, "could not sweep producer mappings; trying again later"),
                    }
                    next_sweep = tokio::time::Instant::now() + jittered();
                }
            }
        }
    }

    /// Records in etcd that `id` was used at `now_ms`. `false` when the
    /// mapping is gone (expired meanwhile) or kept changing.
    pub async fn touch(&self, id: i64, now_ms: i64) -> Result<bool, ProducerError> {
        let key = keys::producer(&self.link, id);
        for _ in 0..4 {
            let Some(current) = self.coord.get::<ProducerMapping>(&key).await? else {
                lock(&self.cache).remove(&id);
                return Ok(false);
            };
            let mut mapping = current.value;
            mapping.used_at_ms = mapping.used_at_ms.max(now_ms);
            if self
                .coord
                .update(&key, &mapping, current.mod_revision)
                .await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes the link's mappings not alive since `now_ms - expiry`
    /// (each only if unchanged since read: a use noted meanwhile keeps
    /// it). Returns how many were removed.
    pub async fn sweep(&self, now_ms: i64, expiry: Duration) -> Result<usize, ProducerError> {
        let cutoff = now_ms.saturating_sub(i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX));
        let prefix = keys::producers_of(&self.link);
        let mut removed = 0;
        for (rel, v) in self.coord.list::<ProducerMapping>(&prefix).await? {
            if v.value.last_alive_ms() >= cutoff {
                continue;
            }
            let gone = self
                .coord
                .txn(
                    &[Precondition::ModRevision(rel.clone(), v.mod_revision)],
                    &[WriteOp::Delete(rel.clone())],
                )
                .await?;
            if gone {
                removed += 1;
                if let Some(id) = rel.rsplit('/').next().and_then(|s| s.parse::<i64>().ok()) {
                    lock(&self.cache).remove(&id);
                }
            }
        }
        Ok(removed)
    }

    /// Queues a note of `id`'s use when the last one is older than
    /// [`TOUCH_EVERY`] (a full queue drops it: a later write queues it
    /// again).
    fn maybe_touch(&self, id: i64) {
        let now = cutover_model::now_ms();
        let every = TOUCH_EVERY.as_millis() as i64;
        {
            let mut cache = lock(&self.cache);
            let Some(m) = cache.get_mut(&id) else {
                return;
            };
            if now - m.last_alive_ms() < every {
                return;
            }
            m.used_at_ms = now;
        }
        let _ = self.touches.try_send(id);
    }

    /// A new client producer id, recorded in etcd (no upstream producer
    /// yet), at epoch 0.
    pub async fn new_client_id(&self) -> Result<i64, ProducerError> {
        self.create(ProducerMapping {
            created_at_ms: cutover_model::now_ms(),
            ..ProducerMapping::default()
        })
        .await
    }

    /// A new client producer id for a transactional client, standing for
    /// `transactional_id`'s producers initialised on each cluster.
    pub async fn new_transactional(
        &self,
        transactional_id: &str,
        source: UpstreamProducer,
        target: UpstreamProducer,
    ) -> Result<i64, ProducerError> {
        let id = self
            .create(ProducerMapping {
                source: Some(source),
                target: Some(target),
                created_at_ms: cutover_model::now_ms(),
                transactional_id: Some(transactional_id.to_owned()),
                ..ProducerMapping::default()
            })
            .await?;
        info!(
            producer_id = id,
            transactional_id,
            source_id = source.producer_id,
            target_id = target.producer_id,
            "transactional client producer id mapped"
        );
        Ok(id)
    }

    /// The mapping of client producer id `id` (from the cache, else etcd).
    pub async fn mapping(&self, id: i64) -> Result<ProducerMapping, ProducerError> {
        // Not in the `if let`: its guard would live through the body.
        let cached = lock(&self.cache).get(&id).cloned();
        if let Some(m) = cached {
            self.maybe_touch(id);
            return Ok(m);
        }
        let Some(current) = self
            .coord
            .get::<ProducerMapping>(&keys::producer(&self.link, id))
            .await?
        else {
            return Err(ProducerError::Unknown(id));
        };
        self.remember(id, current.value.clone());
        Ok(current.value)
    }

    async fn create(&self, mapping: ProducerMapping) -> Result<i64, ProducerError> {
        let id = loop {
            {
                let mut block = lock(&self.block);
                if block.0 < block.1 {
                    block.0 += 1;
                    break block.0 - 1;
                }
            }
            // No lock across etcd: two requests may both take a block, and
            // one is dropped (ids are plenty).
            let fresh = self.take_block().await?;
            let mut block = lock(&self.block);
            if block.0 >= block.1 {
                *block = fresh;
            }
        };
        if !self
            .coord
            .create(&keys::producer(&self.link, id), &mapping)
            .await?
        {
            // Only possible if the block counter was reset under live ids.
            return Err(ProducerError::Contended(id));
        }
        self.remember(id, mapping);
        Ok(id)
    }

    /// Takes the next block of ids from etcd (compare-and-swap).
    async fn take_block(&self) -> Result<(i64, i64), ProducerError> {
        let key = keys::producer_id_block(&self.link);
        for _ in 0..16 {
            let taken = match self.coord.get::<i64>(&key).await? {
                None => {
                    let start = FIRST_CLIENT_ID;
                    self.coord
                        .create(&key, &(start + CLIENT_ID_BLOCK))
                        .await?
                        .then_some(start)
                }
                Some(v) => self
                    .coord
                    .update(&key, &(v.value + CLIENT_ID_BLOCK), v.mod_revision)
                    .await?
                    .then_some(v.value),
            };
            if let Some(start) = taken {
                info!(link = %self.link, start, "took a block of client producer ids");
                return Ok((start, start + CLIENT_ID_BLOCK));
            }
        }
        Err(ProducerError::BlockContended)
    }

    fn remember(&self, id: i64, mapping: ProducerMapping) {
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_LIMIT && !cache.contains_key(&id) {
            // Forget everything rather than track use: mappings are read
            // from etcd again on the next write of each producer.
            cache.clear();
        }
        cache.insert(id, mapping);
    }

    fn cached(&self, id: i64, generation: u32) -> Option<UpstreamProducer> {
        lock(&self.cache).get(&id)?.get(generation)
    }

    /// The upstream producer client id `id` stands for in `generation`
    /// (of the cluster `cluster` that is the primary then; see
    /// [`cutover_model::generation`]), allocated there (and recorded in
    /// etcd) on first use.
    pub async fn upstream(
        &self,
        id: i64,
        generation: u32,
        cluster: &Cluster,
    ) -> Result<UpstreamProducer, ProducerError> {
        if let Some(u) = self.cached(id, generation) {
            self.maybe_touch(id);
            return Ok(u);
        }
        let side = cutover_model::side_of_generation(generation);
        // Two first writes of one producer may both allocate upstream; the
        // compare-and-swap keeps one, and both use it.
        let key = keys::producer(&self.link, id);
        for _ in 0..8 {
            let Some(current) = self.coord.get::<ProducerMapping>(&key).await? else {
                return Err(ProducerError::Unknown(id));
            };
            let mut mapping = current.value;
            if let Some(u) = mapping.get(generation) {
                self.remember(id, mapping);
                return Ok(u);
            }
            if mapping.transactional_id.is_some() {
                // Only its InitProducerId makes a transactional producer.
                return Err(ProducerError::Unknown(id));
            }
            let u = self.allocate(side, cluster).await?;
            mapping.set(generation, u);
            if self
                .coord
                .update(&key, &mapping, current.mod_revision)
                .await?
            {
                info!(
                    producer_id = id,
                    side = side.name(),
                    generation,
                    upstream_id = u.producer_id,
                    "client producer id mapped"
                );
                self.metrics
                    .producers_mapped
                    .with_label_values(&[side.name()])
                    .inc();
                self.remember(id, mapping);
                return Ok(u);
            }
            // Another router wrote the mapping first: read it again (the
            // producer allocated here is never used and expires upstream).
        }
        Err(ProducerError::Contended(id))
    }

    /// A producer id of `side`'s cluster, asked again while the cluster
    /// says it is not ready yet (a fresh cluster's id manager answers
    /// COORDINATOR_LOAD_IN_PROGRESS for a while), within the request
    /// timeout: the client's Produce waits instead of failing.
    async fn allocate(
        &self,
        side: Side,
        cluster: &Cluster,
    ) -> Result<UpstreamProducer, ProducerError> {
        let deadline = tokio::time::Instant::now() + self.timeout.min(ALLOCATE_WITHIN);
        let mut backoff = ALLOCATE_RETRY.backoff();
        loop {
            match self.allocate_once(side, cluster).await {
                Err(ProducerError::Refused { code, .. })
                    if is_not_ready(code)
                        && tokio::time::Instant::now() + ALLOCATE_RETRY.max < deadline =>
                {
                    debug!(
                        side = side.name(),
                        code = cutover_kafka::error_name(code),
                        "InitProducerId not ready upstream; asking again"
                    );
                    backoff.wait().await;
                }
                other => return other,
            }
        }
    }

    async fn allocate_once(
        &self,
        side: Side,
        cluster: &Cluster,
    ) -> Result<UpstreamProducer, ProducerError> {
        let version = cluster
            .api_range(ApiKey::InitProducerId)
            .map(|(_, max)| max.min(4))
            .unwrap_or(0);
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        req.transaction_timeout_ms = 60_000;
        req.producer_id = (-1).into();
        req.producer_epoch = -1;
        let resp: InitProducerIdResponse = cluster
            .forward(
                Destination::Any,
                ApiKey::InitProducerId,
                version,
                &req,
                self.timeout,
            )
            .await
            .map_err(|source| ProducerError::Upstream {
                side: side.name(),
                source,
            })?;
        if resp.error_code != 0 {
            return Err(ProducerError::Refused {
                side: side.name(),
                code: resp.error_code,
            });
        }
        Ok(UpstreamProducer {
            producer_id: resp.producer_id.0,
            producer_epoch: resp.producer_epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_far_from_upstream_ids_and_epochs_add_up() {
        assert!(!is_client_id(0) && !is_client_id(1_000_000) && !is_client_id(-1));
        assert!(is_client_id(FIRST_CLIENT_ID));
        let u = UpstreamProducer {
            producer_id: 5,
            producer_epoch: 2,
        };
        assert_eq!(upstream_epoch(9, u, 0).unwrap(), 2);
        assert_eq!(upstream_epoch(9, u, 3).unwrap(), 5);
        assert!(upstream_epoch(9, u, -1).is_err());
        assert!(upstream_epoch(9, u, i16::MAX).is_err());
        assert_eq!(ProducerError::Unknown(1).code(), codes::UNKNOWN_PRODUCER_ID);
    }
}
