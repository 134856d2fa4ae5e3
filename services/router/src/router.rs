//! What the router answers, API by API. While a topic's primary is the
//! source (every topic, until promotion exists), requests go to the source
//! cluster: per partition to its leader there (split and merged), group
//! and transaction requests to the source's coordinator of their key.
//! Clients only ever see routers: Metadata lists the live routers as the
//! brokers, every partition led by one of them and every coordinator one
//! of them (`assign`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use cutover_kafka::{codes, Cluster, Destination, KafkaError};
use futures::future::join_all;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, warn};

use crate::assign::{self, CoordinatorKind};
use crate::coordinated::{is_coordinator_moved, Coordinated};
use crate::frame::{self, encode_response, FrameError, Header, Request};
use crate::members::Routers;
use crate::metrics::Metrics;
use crate::partitioned::Partitioned;

/// The router's request handling; shared by every client connection.
pub struct Router {
    pub(crate) node_id: i32,
    pub(crate) routers: Routers,
    pub(crate) source: Cluster,
    pub(crate) target: Cluster,
    pub(crate) timeout: Duration,
    pub(crate) metrics: Metrics,
    /// The source's coordinator per key, as FindCoordinator last said.
    coordinators: Mutex<HashMap<(CoordinatorKind, String), i32>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error code a client gets for a partition when the cluster could not
/// be asked: retriable, and one that makes it refresh metadata.
fn partition_code(e: &KafkaError) -> i16 {
    match e {
        KafkaError::UnknownTopicOrPartition { .. } => codes::UNKNOWN_TOPIC_OR_PARTITION,
        KafkaError::Timeout { .. } => codes::REQUEST_TIMED_OUT,
        _ => codes::NOT_LEADER_OR_FOLLOWER,
    }
}

/// Partition errors after which the source's leaders must be looked up again.
fn leader_moved(code: i16) -> bool {
    matches!(
        code,
        codes::NOT_LEADER_OR_FOLLOWER
            | codes::LEADER_NOT_AVAILABLE
            | codes::FENCED_LEADER_EPOCH
            | codes::UNKNOWN_LEADER_EPOCH
            | codes::UNKNOWN_TOPIC_OR_PARTITION
    )
}

impl Router {
    pub fn new(
        node_id: i32,
        routers: Routers,
        source: Cluster,
        target: Cluster,
        timeout: Duration,
        metrics: Metrics,
    ) -> Router {
        Router {
            node_id,
            routers,
            source,
            target,
            timeout,
            metrics,
            coordinators: Mutex::new(HashMap::new()),
        }
    }

    /// Answers one request: the encoded response frame, or `None` when the
    /// client expects none (Produce with acks=0).
    pub async fn handle(&self, header: &Header, req: Request) -> Result<Option<Bytes>, FrameError> {
        let r = |body: &dyn Fn() -> Result<Bytes, FrameError>| body().map(Some);
        match req {
            Request::ApiVersions(_) => r(&|| encode_response(header, &self.api_versions())),
            Request::Metadata(req) => {
                let resp = self.metadata(header, req).await;
                for t in &resp.topics {
                    self.metrics.error(ApiKey::Metadata, t.error_code);
                }
                encode_response(header, &resp).map(Some)
            }
            Request::Produce(req) => self.respond(header, self.partitioned(header, req).await),
            Request::Fetch(req) => self.respond(header, self.partitioned(header, req).await),
            Request::ListOffsets(req) => self.respond(header, self.partitioned(header, req).await),
            Request::OffsetForLeaderEpoch(req) => {
                self.respond(header, self.partitioned(header, req).await)
            }
            Request::FindCoordinator(req) => {
                let resp = self.find_coordinator(header, &req);
                encode_response(header, &resp).map(Some)
            }
            Request::InitProducerId(req) => {
                let resp = self.init_producer_id(header, req).await;
                self.metrics.error(ApiKey::InitProducerId, resp.error_code);
                encode_response(header, &resp).map(Some)
            }
            Request::JoinGroup(req) => self.coordinated(header, req).await,
            Request::SyncGroup(req) => self.coordinated(header, req).await,
            Request::Heartbeat(req) => self.coordinated(header, req).await,
            Request::LeaveGroup(req) => self.coordinated(header, req).await,
            Request::OffsetCommit(req) => self.coordinated(header, req).await,
            Request::OffsetFetch(req) => self.coordinated(header, req).await,
            Request::AddPartitionsToTxn(req) => self.coordinated(header, req).await,
            Request::AddOffsetsToTxn(req) => self.coordinated(header, req).await,
            Request::EndTxn(req) => self.coordinated(header, req).await,
            Request::TxnOffsetCommit(req) => self.coordinated(header, req).await,
        }
    }

    fn respond<T: kafka_protocol::protocol::Encodable>(
        &self,
        header: &Header,
        resp: Option<T>,
    ) -> Result<Option<Bytes>, FrameError> {
        resp.map(|r| encode_response(header, &r)).transpose()
    }

    /// What the router offers: the versions it handles, capped by what
    /// both clusters support for the APIs it forwards (the target is where
    /// they go after promotion).
    pub fn api_versions(&self) -> ApiVersionsResponse {
        let mut resp = ApiVersionsResponse::default();
        resp.finalized_features_epoch = -1;
        resp.api_keys = frame::HANDLED
            .iter()
            .filter_map(|(api, min, max)| {
                let (mut lo, mut hi) = (*min, *max);
                if *api != ApiKey::ApiVersions && *api != ApiKey::FindCoordinator {
                    for cluster in [&self.source, &self.target] {
                        let (cmin, cmax) = cluster.api_range(*api)?;
                        lo = lo.max(cmin);
                        hi = hi.min(cmax);
                    }
                }
                (lo <= hi).then(|| {
                    let mut v = ApiVersion::default();
                    v.api_key = *api as i16;
                    v.min_version = lo;
                    v.max_version = hi;
                    v
                })
            })
            .collect();
        resp
    }

    fn live_routers(&self) -> Vec<i32> {
        self.routers.ids()
    }

    async fn metadata(&self, header: &Header, req: MetadataRequest) -> MetadataResponse {
        let routers = self.routers.all();
        let ids: Vec<i32> = routers.iter().map(|r| r.node_id).collect();
        let upstream: Result<MetadataResponse, KafkaError> = self
            .source
            .forward(
                Destination::Any,
                ApiKey::Metadata,
                header.version,
                &req,
                self.timeout,
            )
            .await;
        let mut resp = match upstream {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, client = %header.client(), "Metadata from the source failed; answering LEADER_NOT_AVAILABLE");
                let mut r = MetadataResponse::default();
                r.topics = req
                    .topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        let mut rt = MetadataResponseTopic::default();
                        rt.name = t.name.clone();
                        rt.error_code = codes::LEADER_NOT_AVAILABLE;
                        rt
                    })
                    .collect();
                r
            }
        };
        resp.brokers = routers
            .iter()
            .map(|r| {
                let mut b = MetadataResponseBroker::default();
                b.node_id = r.node_id.into();
                b.host = StrBytes::from_string(r.host.clone());
                b.port = r.port;
                b
            })
            .collect();
        resp.controller_id = ids.iter().copied().min().unwrap_or(-1).into();
        for t in &mut resp.topics {
            let Some(name) = t.name.as_ref().map(|n| n.as_str().to_owned()) else {
                continue;
            };
            for p in &mut t.partitions {
                if p.leader_id.0 < 0 {
                    // No leader on the source: say so (the client retries).
                    continue;
                }
                let leader = assign::partition_leader(&ids, &name, p.partition_index).unwrap_or(-1);
                p.leader_id = leader.into();
                p.replica_nodes = vec![leader.into()];
                p.isr_nodes = vec![leader.into()];
                p.offline_replicas = Vec::new();
            }
        }
        resp
    }

    /// Whether this router leads `topic`/`partition` for clients.
    fn leads(&self, ids: &[i32], topic: &str, partition: i32) -> bool {
        assign::partition_leader(ids, topic, partition) == Some(self.node_id)
    }

    /// Answers a per-partition request: partitions this router does not
    /// lead for clients get NOT_LEADER_OR_FOLLOWER; the others go to their
    /// leader on the source, one request per leader, all at once; the
    /// answers come back in the request's order. `None` for a request the
    /// client expects no answer to.
    async fn partitioned<R: Partitioned>(&self, header: &Header, req: R) -> Option<R::Response> {
        let ids = self.live_routers();
        let parts = req.parts();
        let mut order: Vec<(TopicName, i32)> = Vec::with_capacity(parts.len());
        let mut answers: HashMap<(TopicName, i32), R::Answer> = HashMap::new();
        let mut groups: BTreeMap<i32, Vec<(TopicName, R::Part)>> = BTreeMap::new();
        for (topic, part) in parts {
            let partition = R::partition(part);
            order.push((topic.clone(), partition));
            let leader = if self.leads(&ids, topic, partition) {
                self.source.leader_of(topic, partition).await
            } else {
                Err(KafkaError::NoLeader {
                    topic: topic.to_string(),
                    partition,
                })
            };
            match leader {
                Ok(leader) => groups
                    .entry(leader)
                    .or_default()
                    .push((topic.clone(), part.clone())),
                Err(e) => {
                    debug!(topic = %topic.as_str(), partition, error = %e, "not forwarded");
                    answers.insert(
                        (topic.clone(), partition),
                        R::failed(partition, partition_code(&e)),
                    );
                }
            }
        }
        let unanswered = req.unanswered();
        let timeout = self.timeout + req.broker_wait();
        let sends = groups.into_iter().map(|(leader, parts)| {
            let keys: Vec<(TopicName, i32)> = parts
                .iter()
                .map(|(t, p)| (t.clone(), R::partition(p)))
                .collect();
            let sub = req.with_parts(parts);
            async move {
                let to = Destination::Node(leader);
                let r = if unanswered {
                    self.source
                        .forward_unanswered(to, R::API, header.version, &sub, timeout)
                        .await
                        .map(|()| None)
                } else {
                    self.source
                        .forward::<R, R::Response>(to, R::API, header.version, &sub, timeout)
                        .await
                        .map(Some)
                };
                (keys, r)
            }
        });
        for (keys, result) in join_all(sends).await {
            let code = match result.map(|r| r.map(R::answers)) {
                Ok(None) => continue,
                Ok(Some(Ok(got))) => {
                    for (topic, a) in got {
                        if leader_moved(R::answer_error(&a)) {
                            self.source.mark_topic_stale(&topic);
                        }
                        answers.insert((topic, R::answer_partition(&a)), a);
                    }
                    continue;
                }
                Ok(Some(Err(code))) => {
                    warn!(api = ?R::API, code, client = %header.client(), "the source failed the request as a whole");
                    codes::NOT_LEADER_OR_FOLLOWER
                }
                Err(e) => {
                    warn!(api = ?R::API, error = %e, client = %header.client(), "request to the source failed");
                    partition_code(&e)
                }
            };
            for (topic, partition) in keys {
                self.source.mark_topic_stale(&topic);
                answers.insert((topic, partition), R::failed(partition, code));
            }
        }
        if unanswered {
            return None;
        }
        let ordered = order
            .into_iter()
            .map(|key| {
                let answer = answers
                    .remove(&key)
                    .unwrap_or_else(|| R::failed(key.1, codes::NOT_LEADER_OR_FOLLOWER));
                self.metrics.error(R::API, R::answer_error(&answer));
                (key.0, answer)
            })
            .collect();
        Some(R::assemble(ordered))
    }

    fn find_coordinator(
        &self,
        header: &Header,
        req: &FindCoordinatorRequest,
    ) -> FindCoordinatorResponse {
        let routers = self.routers.all();
        let ids: Vec<i32> = routers.iter().map(|r| r.node_id).collect();
        let answer = |key: &StrBytes| -> Coordinator {
            let mut c = Coordinator::default();
            c.key = key.clone();
            let Some(kind) = CoordinatorKind::from_key_type(req.key_type) else {
                c.error_code = codes::INVALID_REQUEST;
                c.node_id = (-1).into();
                c.port = -1;
                return c;
            };
            match assign::coordinator(&ids, kind, key)
                .and_then(|id| routers.iter().find(|r| r.node_id == id))
            {
                Some(r) => {
                    c.node_id = r.node_id.into();
                    c.host = StrBytes::from_string(r.host.clone());
                    c.port = r.port;
                }
                None => {
                    c.error_code = codes::COORDINATOR_NOT_AVAILABLE;
                    c.node_id = (-1).into();
                    c.port = -1;
                }
            }
            c
        };
        let mut resp = FindCoordinatorResponse::default();
        if header.version >= 4 {
            resp.coordinators = req.coordinator_keys.iter().map(answer).collect();
        } else {
            let c = answer(&req.key);
            resp.error_code = c.error_code;
            resp.node_id = c.node_id;
            resp.host = c.host;
            resp.port = c.port;
        }
        resp
    }

    /// The source's coordinator of `key`, from the cache or asked.
    async fn source_coordinator(
        &self,
        kind: CoordinatorKind,
        key: &str,
    ) -> Result<i32, KafkaError> {
        if let Some(id) = lock(&self.coordinators).get(&(kind, key.to_owned())) {
            return Ok(*id);
        }
        let version = self
            .source
            .api_range(ApiKey::FindCoordinator)
            .map(|(_, max)| max.min(3))
            .ok_or_else(|| {
                KafkaError::Protocol("the source does not offer FindCoordinator".into())
            })?;
        let mut req = FindCoordinatorRequest::default();
        req.key = StrBytes::from_string(key.to_owned());
        req.key_type = kind.key_type();
        let resp: FindCoordinatorResponse = self
            .source
            .forward(
                Destination::Any,
                ApiKey::FindCoordinator,
                version,
                &req,
                self.timeout,
            )
            .await?;
        if resp.error_code != 0 {
            return Err(KafkaError::from_code(
                resp.error_code,
                resp.error_message.map(|m| m.to_string()),
            ));
        }
        let id = resp.node_id.0;
        lock(&self.coordinators).insert((kind, key.to_owned()), id);
        Ok(id)
    }

    /// A group or transaction request: answered NOT_COORDINATOR unless
    /// this router coordinates its key for clients; else sent to the
    /// source's coordinator (found again once if that one moved).
    async fn coordinated<R: Coordinated>(
        &self,
        header: &Header,
        req: R,
    ) -> Result<Option<Bytes>, FrameError> {
        let (kind, key) = req.key();
        let key = key.to_owned();
        let ids = self.live_routers();
        if assign::coordinator(&ids, kind, &key) != Some(self.node_id) {
            self.metrics.error(R::API, codes::NOT_COORDINATOR);
            return encode_response(header, &req.failed(codes::NOT_COORDINATOR)).map(Some);
        }
        let mut resp = None;
        for _ in 0..2 {
            let result = match self.source_coordinator(kind, &key).await {
                Ok(node) => {
                    self.source
                        .forward::<R, R::Response>(
                            Destination::Node(node),
                            R::API,
                            header.version,
                            &req,
                            self.timeout,
                        )
                        .await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(r) if is_coordinator_moved(R::error(&r)) => {
                    lock(&self.coordinators).remove(&(kind, key.clone()));
                    resp = Some(r);
                }
                Ok(r) => {
                    resp = Some(r);
                    break;
                }
                Err(e) => {
                    warn!(error = %e, api = ?R::API, key = %key, client = %header.client(), "request to the source's coordinator failed");
                    lock(&self.coordinators).remove(&(kind, key.clone()));
                }
            }
        }
        let resp = resp.unwrap_or_else(|| req.failed(codes::COORDINATOR_NOT_AVAILABLE));
        self.metrics.error(R::API, R::error(&resp));
        encode_response(header, &resp).map(Some)
    }

    async fn init_producer_id(
        &self,
        header: &Header,
        req: InitProducerIdRequest,
    ) -> InitProducerIdResponse {
        let failed = |code: i16| {
            let mut r = InitProducerIdResponse::default();
            r.error_code = code;
            r.producer_id = (-1).into();
            r.producer_epoch = -1;
            r
        };
        let to = match &req.transactional_id {
            Some(tid) => {
                let ids = self.live_routers();
                if assign::coordinator(&ids, CoordinatorKind::Transaction, tid)
                    != Some(self.node_id)
                {
                    return failed(codes::NOT_COORDINATOR);
                }
                match self
                    .source_coordinator(CoordinatorKind::Transaction, tid)
                    .await
                {
                    Ok(node) => Destination::Node(node),
                    Err(e) => {
                        warn!(error = %e, client = %header.client(), "no transaction coordinator on the source");
                        return failed(codes::COORDINATOR_NOT_AVAILABLE);
                    }
                }
            }
            None => Destination::Any,
        };
        let result: Result<InitProducerIdResponse, KafkaError> = self
            .source
            .forward(
                to,
                ApiKey::InitProducerId,
                header.version,
                &req,
                self.timeout,
            )
            .await;
        match result {
            Ok(r) => {
                if let (Some(tid), true) =
                    (&req.transactional_id, is_coordinator_moved(r.error_code))
                {
                    lock(&self.coordinators)
                        .remove(&(CoordinatorKind::Transaction, tid.to_string()));
                }
                r
            }
            Err(e) => {
                warn!(error = %e, client = %header.client(), "InitProducerId on the source failed");
                failed(codes::COORDINATOR_NOT_AVAILABLE)
            }
        }
    }
}
