//! Data-path operations: fetch, produce, offsets, producer ids.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DeleteRecordsRequest, DeleteRecordsResponse, FetchRequest, FetchResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
    ProducerId,
};
use tokio::sync::oneshot;
use tracing::{debug, instrument, Instrument, Span};

use crate::cluster::{millis, topic_name, unknown_topic, Cluster, Inner};
use crate::conn::Connection;
use crate::error::KafkaError;
use crate::types::{
    FetchOptions, FetchRequestPartition, FetchResultPartition, FetchedPartition, OffsetSpec,
    PartitionOffsets, ProduceResult, Uuid,
};

/// Partitions to ask one leader about: leader address -> (connection,
/// [(partition, leader epoch)]).
type LeaderGroups = HashMap<String, (Arc<Connection>, Vec<(i32, i32)>)>;

/// Fetch and Produce switched from topic names to topic ids at v13; without
/// an id (metadata older than v10) stay below.
pub(crate) const LAST_VERSION_WITH_NAMES: i16 = 12;

/// The topics of one Fetch request: one `FetchTopic` per topic (by id from
/// v13, else by name), in order of first appearance.
pub(crate) struct FetchTopics<'a> {
    version: i16,
    topics: Vec<FetchTopic>,
    slot_of: HashMap<&'a str, usize>,
}

impl<'a> FetchTopics<'a> {
    pub(crate) fn new(version: i16) -> Self {
        FetchTopics {
            version,
            topics: Vec::new(),
            slot_of: HashMap::new(),
        }
    }

    /// Adds a partition to fetch; returns the slot of its topic.
    pub(crate) fn push(
        &mut self,
        topic: &'a str,
        topic_id: Uuid,
        partition: i32,
        leader_epoch: i32,
        offset: i64,
        max_bytes: i32,
    ) -> usize {
        let (version, topics) = (self.version, &mut self.topics);
        let slot = *self.slot_of.entry(topic).or_insert_with(|| {
            let mut t = FetchTopic::default();
            if version > LAST_VERSION_WITH_NAMES {
                t.topic_id = topic_id;
            } else {
                t.topic = topic_name(topic);
            }
            topics.push(t);
            topics.len() - 1
        });
        let mut fp = FetchPartition::default();
        fp.partition = partition;
        if version >= 9 {
            fp.current_leader_epoch = leader_epoch;
        }
        fp.fetch_offset = offset;
        fp.partition_max_bytes = max_bytes;
        if let Some(t) = self.topics.get_mut(slot) {
            t.partitions.push(fp);
        }
        slot
    }

    /// The request: `opts`' limits, in the session `(id, epoch)`; `(0, -1)`
    /// is a one-off fetch outside any session.
    pub(crate) fn request(self, opts: &FetchOptions, session: (i32, i32)) -> FetchRequest {
        let mut req = FetchRequest::default();
        req.max_wait_ms = millis(opts.max_wait);
        req.min_bytes = opts.min_bytes;
        req.max_bytes = opts.max_bytes;
        req.isolation_level = i8::from(opts.read_committed);
        (req.session_id, req.session_epoch) = session;
        req.topics = self.topics;
        req
    }
}

fn missing(what: &str, broker: &str) -> KafkaError {
    KafkaError::Protocol(format!("broker {broker} answered without {what}"))
}

type FetchResult = Result<FetchedPartition, KafkaError>;

/// One partition to fetch: the borrowed form of [`FetchRequestPartition`].
#[derive(Debug, Clone, Copy)]
struct Want<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

/// A partition to fetch, placed on its leader.
struct Placed<'a> {
    /// Index into the caller's list.
    idx: usize,
    want: Want<'a>,
    leader_epoch: i32,
    topic_id: Uuid,
}

fn no_fetch_result(topic: &str, partition: i32) -> KafkaError {
    KafkaError::Protocol(format!("no fetch result for {topic}/{partition}"))
}

/// One partition of a Fetch response.
pub(crate) fn fetched(p: PartitionData) -> FetchResult {
    KafkaError::check(p.error_code, None)?;
    Ok(FetchedPartition {
        records: p.records.unwrap_or_default(),
        aborted: p
            .aborted_transactions
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.producer_id.0, a.first_offset))
            .collect(),
        high_watermark: p.high_watermark,
        last_stable_offset: p.last_stable_offset,
        log_start_offset: p.log_start_offset,
    })
}

impl Cluster {
    /// Fetches one partition from its leader, starting at `offset`.
    ///
    /// Leader moves and lost connections are retried internally after a
    /// metadata refresh. OFFSET_OUT_OF_RANGE comes back as
    /// [`KafkaError::Broker`] with code 1 (see
    /// [`KafkaError::is_offset_out_of_range`]).
    #[instrument(level = "debug", skip_all, fields(topic = %topic, partition, offset, broker = tracing::field::Empty))]
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        opts: &FetchOptions,
    ) -> Result<FetchedPartition, KafkaError> {
        let inner = &self.inner;
        let want = [Want {
            topic,
            partition,
            offset,
        }];
        inner
            .retrying("Fetch", || async {
                inner
                    .fetch_wave(&want, &[0], opts)
                    .await
                    .pop()
                    .map(|(_, r)| r)
                    .unwrap_or_else(|| Err(no_fetch_result(topic, partition)))
            })
            .await
    }

    /// Fetches many partitions at once: groups them by leader and sends one
    /// Fetch request per broker, to all brokers concurrently. Returns one
    /// result per requested partition, in the order of `partitions`.
    ///
    /// A broker answers the requests of one connection strictly in order,
    /// so per-partition Fetch requests would queue every partition behind
    /// the long poll (`max_wait`) of the caught-up ones; one request for all
    /// of a broker's partitions comes back as soon as any of them has
    /// `min_bytes`. The call as a whole returns when every broker has
    /// answered, so it can take `max_wait` when some broker has no data.
    ///
    /// Errors are per partition, never for the whole call:
    /// partition-level error codes (NOT_LEADER_OR_FOLLOWER,
    /// OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION, ...) go to their
    /// partition; a failure of a broker's request (connection, timeout, bad
    /// response) goes to each of that broker's partitions; partitions
    /// without a known leader get [`KafkaError::NoLeader`]. Errors that
    /// suggest stale metadata mark the topic for a refresh before its next
    /// use. Nothing is retried here: call again.
    ///
    /// `opts.partition_max_bytes` applies to each partition and
    /// `opts.max_bytes` to each broker's response, which the broker fills
    /// in request order (the order of `partitions`): callers should rotate
    /// that order so that the last partitions are not starved. A partition
    /// listed twice at the same offset is fetched once; at different
    /// offsets, the later ones are fetched in a following round, since one
    /// request cannot carry a partition twice.
    #[instrument(level = "debug", skip_all, fields(partitions = partitions.len()))]
    pub async fn fetch_many(
        &self,
        partitions: &[FetchRequestPartition],
        opts: &FetchOptions,
    ) -> Vec<FetchResultPartition> {
        let wants: Vec<Want<'_>> = partitions
            .iter()
            .map(|p| Want {
                topic: &p.topic,
                partition: p.partition,
                offset: p.offset,
            })
            .collect();
        let results = self.inner.fetch_all(&wants, opts).await;
        partitions
            .iter()
            .zip(results)
            .map(|(p, result)| FetchResultPartition {
                topic: p.topic.clone(),
                partition: p.partition,
                offset: p.offset,
                result,
            })
            .collect()
    }

    /// Queues a Produce (acks=all) of one record batch to the partition's
    /// leader. `records` must be a complete v2 batch with base offset 0.
    ///
    /// When this returns, the batch is queued for the leader's connection
    /// (combined with other partitions' batches into one request): calls
    /// made one after another are written in that order, so several
    /// batches can be in flight at once. Errors before queueing (no leader,
    /// connection failure) are retried internally; nothing is retried once
    /// queued, since the caller owns sequence numbers.
    #[instrument(level = "debug", skip_all, fields(topic = %topic, partition, bytes = records.len(), broker = tracing::field::Empty))]
    pub async fn send_produce(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        timeout: Duration,
    ) -> Result<ProduceHandle, KafkaError> {
        let inner = &self.inner;
        let (answer, version) = inner
            .retrying("Produce", || async {
                let r = inner
                    .enqueue_produce(topic, partition, records.clone(), timeout)
                    .await;
                inner.observe(topic, r)
            })
            .await?;
        Ok(ProduceHandle {
            answer,
            cluster: Arc::downgrade(inner),
            topic: topic.to_owned(),
            partition,
            version,
            span: Span::current(),
        })
    }

    /// Looks up offsets of several partitions of one topic, one request per
    /// leader. The outer error is for failures of the whole call (unknown
    /// topic, client closed); per-partition failures are in the list, which
    /// follows the order of `partitions`.
    #[instrument(level = "debug", skip_all, fields(topic = %topic, partitions = ?partitions, spec = ?spec))]
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<PartitionOffsets, KafkaError> {
        let inner = &self.inner;
        let mut done: HashMap<i32, Result<i64, KafkaError>> = HashMap::new();
        let mut todo: Vec<i32> = Vec::new();
        for p in partitions {
            if !todo.contains(p) {
                todo.push(*p);
            }
        }
        let mut attempt = 0;
        loop {
            let mut retry: Vec<(i32, KafkaError)> = Vec::new();
            let mut groups: LeaderGroups = HashMap::new();
            for p in todo.drain(..) {
                match inner.route(topic, p).await {
                    Ok(r) => groups
                        .entry(r.conn.addr().to_owned())
                        .or_insert_with(|| (r.conn.clone(), Vec::new()))
                        .1
                        .push((p, r.leader_epoch)),
                    Err(e @ KafkaError::UnknownTopicOrPartition { partition: -1, .. }) => {
                        return Err(e)
                    }
                    Err(KafkaError::Closed) => return Err(KafkaError::Closed),
                    Err(e) if e.is_retriable() && e.needs_metadata_refresh() => retry.push((p, e)),
                    Err(e) => {
                        done.insert(p, Err(e));
                    }
                }
            }
            let requests = groups.into_values().map(|(conn, parts)| async move {
                let r = inner.list_offsets_on(&conn, topic, &parts, spec).await;
                (parts, r)
            });
            for (parts, r) in join_all(requests).await {
                match r {
                    Ok(results) => {
                        for (p, res) in results {
                            match res {
                                Err(e) if e.is_retriable() && e.needs_metadata_refresh() => {
                                    retry.push((p, e))
                                }
                                other => {
                                    done.insert(p, other);
                                }
                            }
                        }
                    }
                    Err(KafkaError::Closed) => return Err(KafkaError::Closed),
                    Err(e) if e.is_retriable() && e.needs_metadata_refresh() => {
                        retry.extend(parts.iter().map(|(p, _)| (*p, e.clone())))
                    }
                    Err(e) => done.extend(parts.iter().map(|(p, _)| (*p, Err(e.clone())))),
                }
            }
            if retry.is_empty() || attempt >= inner.config.retries {
                for (p, e) in retry {
                    done.insert(p, Err(e));
                }
                break;
            }
            inner.mark_stale(topic);
            inner.pause(attempt).await?;
            attempt += 1;
            todo = retry.into_iter().map(|(p, _)| p).collect();
        }
        Ok(partitions
            .iter()
            .map(|p| {
                let r = done.get(p).cloned().unwrap_or_else(|| {
                    Err(KafkaError::Protocol(format!("no offset for partition {p}")))
                });
                (*p, r)
            })
            .collect())
    }

    /// Deletes records of one partition below `before_offset` (DeleteRecords,
    /// sent to the leader); returns the new log start offset.
    #[instrument(level = "debug", skip_all, fields(topic = %topic, partition, before_offset, broker = tracing::field::Empty))]
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        before_offset: i64,
    ) -> Result<i64, KafkaError> {
        let inner = &self.inner;
        inner
            .retrying("DeleteRecords", || async {
                let r = inner
                    .delete_records_once(topic, partition, before_offset)
                    .await;
                inner.observe(topic, r)
            })
            .await
    }

    /// Gets a producer id for an idempotent (non-transactional) producer.
    /// With `current`, asks to bump the epoch of that producer id (KIP-360,
    /// InitProducerId v3+); older brokers hand out a new id instead.
    #[instrument(level = "debug", skip_all, fields(current = ?current, broker = tracing::field::Empty))]
    pub async fn init_producer_id(
        &self,
        current: Option<(i64, i16)>,
    ) -> Result<(i64, i16), KafkaError> {
        let inner = &self.inner;
        inner
            .retrying("InitProducerId", || inner.init_producer_id_once(current))
            .await
    }
}

impl Inner {
    /// Fetches every entry of `wants`; one result per entry, in order.
    async fn fetch_all(&self, wants: &[Want<'_>], opts: &FetchOptions) -> Vec<FetchResult> {
        // Identical entries share one fetch. The same partition at another
        // offset goes into a later wave: a Fetch request (and its response)
        // carries each partition once.
        let mut first_of: HashMap<(&str, i32, i64), usize> = HashMap::new();
        let mut next_wave: HashMap<(&str, i32), usize> = HashMap::new();
        let mut same_as: Vec<usize> = Vec::with_capacity(wants.len());
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for (i, w) in wants.iter().enumerate() {
            let first = *first_of
                .entry((w.topic, w.partition, w.offset))
                .or_insert(i);
            same_as.push(first);
            if first != i {
                continue;
            }
            let wave = next_wave.entry((w.topic, w.partition)).or_insert(0);
            match waves.get_mut(*wave) {
                Some(members) => members.push(i),
                None => waves.push(vec![i]),
            }
            *wave += 1;
        }

        let mut results: Vec<Option<FetchResult>> = wants.iter().map(|_| None).collect();
        for wave in &waves {
            for (i, r) in self.fetch_wave(wants, wave, opts).await {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(r);
                }
            }
        }
        let mut out: Vec<FetchResult> = Vec::with_capacity(wants.len());
        for (i, (w, first)) in wants.iter().zip(same_as).enumerate() {
            // `first <= i`: a duplicate copies the result already in `out`.
            let r = if first == i {
                results.get_mut(i).and_then(Option::take)
            } else {
                out.get(first).cloned()
            };
            out.push(r.unwrap_or_else(|| Err(no_fetch_result(w.topic, w.partition))));
        }
        out
    }

    /// One Fetch per leader for the entries `idxs` of `wants` (each
    /// partition at most once), all leaders concurrently. Returns
    /// (index, result) for each of `idxs`, in no particular order, and marks
    /// topics stale whose errors call for a metadata refresh.
    async fn fetch_wave(
        &self,
        wants: &[Want<'_>],
        idxs: &[usize],
        opts: &FetchOptions,
    ) -> Vec<(usize, FetchResult)> {
        let placed: Vec<(usize, Want<'_>)> = idxs
            .iter()
            .filter_map(|&i| wants.get(i).map(|w| (i, *w)))
            .collect();
        let mut names: Vec<&str> = placed.iter().map(|(_, w)| w.topic).collect();
        names.sort_unstable();
        names.dedup();
        let topics = self.topics_metadata(&names).await;

        let mut out: Vec<(usize, FetchResult)> = Vec::with_capacity(placed.len());
        // Leader address -> its partitions, in request order.
        let mut groups: Vec<(String, Vec<Placed<'_>>)> = Vec::new();
        for (idx, want) in placed {
            let leader = match topics.get(want.topic) {
                Some(Ok(Some(t))) => self.leader(t, want.partition),
                Some(Err(e)) => Err(e.clone()),
                Some(Ok(None)) | None => Err(unknown_topic(want.topic)),
            };
            match leader {
                Ok(l) => {
                    let p = Placed {
                        idx,
                        want,
                        leader_epoch: l.leader_epoch,
                        topic_id: l.topic_id,
                    };
                    match groups.iter_mut().find(|(addr, _)| *addr == l.addr) {
                        Some((_, parts)) => parts.push(p),
                        None => groups.push((l.addr, vec![p])),
                    }
                }
                Err(e) => out.push((idx, Err(e))),
            }
        }

        let requests = groups
            .iter()
            .map(|(addr, parts)| self.fetch_from(addr, parts, opts));
        for results in join_all(requests).await {
            out.extend(results);
        }
        for (i, r) in &out {
            if let (Err(e), Some(w)) = (r, wants.get(*i)) {
                if e.needs_metadata_refresh() {
                    self.mark_stale(w.topic);
                }
            }
        }
        out
    }

    /// One Fetch of `parts` from the broker at `addr`; a failure of the
    /// request becomes the error of each partition.
    async fn fetch_from(
        &self,
        addr: &str,
        parts: &[Placed<'_>],
        opts: &FetchOptions,
    ) -> Vec<(usize, FetchResult)> {
        match self.fetch_request(addr, parts, opts).await {
            Ok(results) => results,
            Err(e) => {
                debug!(broker = %addr, partitions = parts.len(), error = %e, "Fetch failed");
                parts.iter().map(|p| (p.idx, Err(e.clone()))).collect()
            }
        }
    }

    async fn fetch_request(
        &self,
        addr: &str,
        parts: &[Placed<'_>],
        opts: &FetchOptions,
    ) -> Result<Vec<(usize, FetchResult)>, KafkaError> {
        let conn = self.connection(addr).await?;
        Span::current().record("broker", addr);
        let mut version = conn.require(ApiKey::Fetch)?;
        if parts.iter().any(|p| p.topic_id.is_nil()) {
            version = version.min(LAST_VERSION_WITH_NAMES);
        }
        let by_id = version > LAST_VERSION_WITH_NAMES;

        // `slots` maps each of `parts` to its FetchTopic.
        let mut topics = FetchTopics::new(version);
        let slots: Vec<usize> = parts
            .iter()
            .map(|p| {
                topics.push(
                    p.want.topic,
                    p.topic_id,
                    p.want.partition,
                    p.leader_epoch,
                    p.want.offset,
                    opts.partition_max_bytes,
                )
            })
            .collect();
        let req = topics.request(opts, (0, -1));

        let timeout = self.config.request_timeout + opts.max_wait;
        let resp: FetchResponse = conn.request(ApiKey::Fetch, version, &req, timeout).await?;
        if version >= 7 {
            KafkaError::check(resp.error_code, None)?;
        }

        // Answers by (request topic slot, partition); answers for anything
        // not asked for are ignored, and the first of duplicates wins.
        let mut answers: HashMap<(usize, i32), PartitionData> = HashMap::new();
        for t in resp.responses {
            let slot = req.topics.iter().position(|rt| {
                if by_id {
                    rt.topic_id == t.topic_id
                } else {
                    rt.topic == t.topic
                }
            });
            let Some(slot) = slot else { continue };
            for p in t.partitions {
                answers.entry((slot, p.partition_index)).or_insert(p);
            }
        }
        Ok(parts
            .iter()
            .zip(slots)
            .map(|(p, slot)| {
                let r = match answers.remove(&(slot, p.want.partition)) {
                    Some(data) => fetched(data),
                    None => Err(missing(
                        &format!("partition {}/{}", p.want.topic, p.want.partition),
                        addr,
                    )),
                };
                (p.idx, r)
            })
            .collect())
    }

    async fn enqueue_produce(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        timeout: Duration,
    ) -> Result<(oneshot::Receiver<Result<ProduceResult, KafkaError>>, i16), KafkaError> {
        let route = self.route(topic, partition).await?;
        let mut version = route.conn.require(ApiKey::Produce)?;
        if route.topic_id.is_nil() {
            version = version.min(LAST_VERSION_WITH_NAMES);
        }
        let (reply, rx) = oneshot::channel();
        route
            .conn
            .produce(crate::produce::Item {
                topic: topic.to_owned(),
                topic_id: route.topic_id,
                partition,
                records,
                version,
                timeout,
                reply,
            })
            .await?;
        Ok((rx, version))
    }

    /// Sleeps the retry backoff for `attempt`, unless the client closes.
    pub(crate) async fn pause(&self, attempt: u32) -> Result<(), KafkaError> {
        let delay = self.config.retry_policy().delay(attempt);
        tokio::select! {
            _ = self.closed() => Err(KafkaError::Closed),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    async fn list_offsets_on(
        &self,
        conn: &Arc<Connection>,
        topic: &str,
        parts: &[(i32, i32)],
        spec: OffsetSpec,
    ) -> Result<PartitionOffsets, KafkaError> {
        let version = conn.require(ApiKey::ListOffsets)?;
        let timestamp = match spec {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest | OffsetSpec::LatestCommitted => -1,
            OffsetSpec::Timestamp(t) => t,
        };
        let mut t = ListOffsetsTopic::default();
        t.name = topic_name(topic);
        t.partitions = parts
            .iter()
            .map(|(p, epoch)| {
                let mut lp = ListOffsetsPartition::default();
                lp.partition_index = *p;
                if version >= 4 {
                    lp.current_leader_epoch = *epoch;
                }
                lp.timestamp = timestamp;
                lp
            })
            .collect();
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        if version >= 2 {
            req.isolation_level = i8::from(spec == OffsetSpec::LatestCommitted);
        } else if spec == OffsetSpec::LatestCommitted {
            return Err(KafkaError::UnsupportedVersion {
                api: ApiKey::ListOffsets,
                broker: conn.addr().to_owned(),
            });
        }
        if version >= 10 {
            req.timeout_ms = millis(self.config.request_timeout);
        }
        req.topics = vec![t];
        let resp: ListOffsetsResponse = conn
            .request(
                ApiKey::ListOffsets,
                version,
                &req,
                self.config.request_timeout,
            )
            .await?;
        let partitions = resp
            .topics
            .into_iter()
            .find(|rt| rt.name.0.as_str() == topic)
            .map(|rt| rt.partitions)
            .unwrap_or_default();
        Ok(parts
            .iter()
            .map(|(p, _)| {
                let r = match partitions.iter().find(|rp| rp.partition_index == *p) {
                    Some(rp) => KafkaError::check(rp.error_code, None).map(|_| rp.offset),
                    None => Err(missing(&format!("partition {p}"), conn.addr())),
                };
                (*p, r)
            })
            .collect())
    }

    async fn delete_records_once(
        &self,
        topic: &str,
        partition: i32,
        before_offset: i64,
    ) -> Result<i64, KafkaError> {
        let route = self.route(topic, partition).await?;
        let version = route.conn.require(ApiKey::DeleteRecords)?;
        let mut dp = DeleteRecordsPartition::default();
        dp.partition_index = partition;
        dp.offset = before_offset;
        let mut dt = DeleteRecordsTopic::default();
        dt.name = topic_name(topic);
        dt.partitions = vec![dp];
        let mut req = DeleteRecordsRequest::default();
        req.topics = vec![dt];
        req.timeout_ms = millis(self.config.request_timeout);
        let resp: DeleteRecordsResponse = route
            .conn
            .request(
                ApiKey::DeleteRecords,
                version,
                &req,
                self.config.request_timeout,
            )
            .await?;
        let p = resp
            .topics
            .into_iter()
            .find(|t| t.name.0.as_str() == topic)
            .and_then(|t| {
                t.partitions
                    .into_iter()
                    .find(|p| p.partition_index == partition)
            })
            .ok_or_else(|| missing("the requested partition", route.conn.addr()))?;
        KafkaError::check(p.error_code, None)?;
        Ok(p.low_watermark)
    }

    async fn init_producer_id_once(
        &self,
        current: Option<(i64, i16)>,
    ) -> Result<(i64, i16), KafkaError> {
        let conn = self.any_connection().await?;
        Span::current().record("broker", conn.addr());
        let version = conn.require(ApiKey::InitProducerId)?;
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = None;
        // The broker ignores it without a transactional id.
        req.transaction_timeout_ms = i32::MAX;
        if version >= 3 {
            let (pid, epoch) = current.unwrap_or((-1, -1));
            req.producer_id = ProducerId(pid);
            req.producer_epoch = epoch;
        }
        let resp: InitProducerIdResponse = conn
            .request(
                ApiKey::InitProducerId,
                version,
                &req,
                self.config.request_timeout,
            )
            .await?;
        KafkaError::check(resp.error_code, None)?;
        Ok((resp.producer_id.0, resp.producer_epoch))
    }
}

/// A queued Produce. Await it (or call [`ProduceHandle::wait`]) for the
/// broker's answer. Dropping it does not cancel the request.
#[must_use = "a produce is only known to succeed once its handle is awaited"]
pub struct ProduceHandle {
    /// Answered by the connection's combining task, which bounds the wait
    /// by the request's timeout.
    answer: oneshot::Receiver<Result<ProduceResult, KafkaError>>,
    cluster: Weak<Inner>,
    topic: String,
    partition: i32,
    version: i16,
    span: Span,
}

impl std::fmt::Debug for ProduceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProduceHandle")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl ProduceHandle {
    /// The Produce version the request was sent with.
    pub fn version(&self) -> i16 {
        self.version
    }

    /// Waits for the broker's answer. On an error that means the leader
    /// moved or the connection broke, the partition's metadata is marked
    /// stale so the next `send_produce` goes to the new leader.
    pub async fn wait(self) -> Result<ProduceResult, KafkaError> {
        let ProduceHandle {
            answer,
            cluster,
            topic,
            span,
            ..
        } = self;
        let r = async {
            // Without an answer the combining task went away: the client
            // is closing.
            answer.await.unwrap_or(Err(KafkaError::Closed))
        }
        .instrument(span)
        .await;
        if let (Err(e), Some(inner)) = (&r, cluster.upgrade()) {
            if e.needs_metadata_refresh() {
                inner.mark_stale(&topic);
            }
        }
        r
    }
}

impl IntoFuture for ProduceHandle {
    type Output = Result<ProduceResult, KafkaError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}
