//! What the router answers, API by API. Per-partition requests go to the
//! topic's primary (`topics`: the source until the topic is promoted),
//! split per upstream leader and merged, with leader epochs translated
//! (`epochs`) and filler batches removed from fetched records; group
//! requests go to the coordinator of the group's home (`topics::Groups`:
//! the source until the group is promoted), transaction requests to the
//! source's.
//! Clients only ever see routers: Metadata lists the live routers as the
//! brokers, every partition led by one of them and every coordinator one
//! of them (`assign`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use cutover_kafka::{codes, Cluster, Destination, KafkaError, Lane};
use cutover_retry::Policy;
use futures::future::join_all;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, warn};

use crate::assign::{self, CoordinatorKind};
use crate::coordinated::{is_coordinator_moved, Coordinated, TxnOf, TxnPart};
use crate::encoded::{encode_fetch_response, Encoded};
use crate::epochs::{self, View};
use crate::frame::{self, encode_response, FrameError, Header, Request};
use crate::holds::Holds;
use crate::members::Routers;
use crate::members_seen::{GroupMembers, Seen};
use crate::metrics::Metrics;
use crate::partitioned::Partitioned;
use crate::producers::{self, Producers};
use crate::readahead::{self, FetchKey, ReadAhead};
use crate::topics::{Groups, Side, Topics};
use crate::transactions::{self as txns, Known, Transactions, TxnRoute};
use crate::turn::Turn;

/// What a router follows in etcd: the live routers and the topics' primaries.
pub struct Watched {
    pub routers: Routers,
    pub topics: Topics,
    pub groups: Groups,
}

/// The link's two clusters.
pub struct Clusters {
    pub source: Cluster,
    pub target: Cluster,
}

/// What promotions ask a router to hold, and the group members it has
/// forwarded (shared with its gRPC API).
#[derive(Clone, Default)]
pub struct Holding {
    /// Produce, by topic.
    pub produce: Holds,
    /// JoinGroup, by group id.
    pub joins: Holds,
    /// Transaction requests (`transactions::add_topic` and its kin).
    pub txns: Holds,
    pub members: GroupMembers,
}

/// One client connection's own upstream connections, per cluster, and
/// where it comes from.
pub struct Lanes {
    source: Lane,
    target: Lane,
    client_host: String,
    /// The Fetch sent ahead of this client (`readahead`).
    readahead: readahead::Slot,
}

impl Lanes {
    fn of(&self, side: Side) -> &Lane {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }
}

/// A cluster and one of its brokers.
type Upstream = (Side, i32);

/// How long upstream requests may take and how much a Fetch may bring.
pub struct Limits {
    pub timeout: Duration,
    pub max_fetch_bytes: i32,
}

/// The router's request handling; shared by every client connection.
pub struct Router {
    pub(crate) node_id: i32,
    pub(crate) routers: Routers,
    pub(crate) topics: Topics,
    pub(crate) groups: Groups,
    pub(crate) source: Cluster,
    pub(crate) target: Cluster,
    pub(crate) timeout: Duration,
    /// Cap of every Fetch sent upstream (`RouterConfig::max_fetch_bytes`).
    max_fetch_bytes: i32,
    pub(crate) metrics: Metrics,
    pub(crate) producers: Producers,
    pub(crate) holding: Holding,
    /// Where the open transactions of the clients it coordinates run.
    transactions: Transactions,
    /// Each cluster's coordinator per key, as FindCoordinator last said.
    coordinators: Mutex<HashMap<(Side, CoordinatorKind, String), i32>>,
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

/// How long a read whose upstream leader moved is sent again before the
/// client gets the retriable error (and refreshes its own metadata).
const RETRY_WITHIN: Duration = Duration::from_secs(5);
const RETRY: Policy = Policy::new(Duration::from_millis(50), Duration::from_millis(500));

/// Partition answers that mean "this broker no longer leads it": sent again
/// to the new leader. Epoch errors are the client's to resolve (its view
/// of the leader epoch), so they go back to it.
fn moved_away(code: i16) -> bool {
    matches!(
        code,
        codes::NOT_LEADER_OR_FOLLOWER | codes::LEADER_NOT_AVAILABLE
    )
}

/// Failures to reach a leader that are worth trying again at once (a
/// timeout has used the client's patience already).
fn retry_after(e: &KafkaError) -> bool {
    !matches!(e, KafkaError::Timeout { .. }) && e.is_retriable()
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
        watched: Watched,
        clusters: Clusters,
        limits: Limits,
        metrics: Metrics,
        producers: Producers,
        holding: Holding,
    ) -> Router {
        let Watched {
            routers,
            topics,
            groups,
        } = watched;
        let Clusters { source, target } = clusters;
        let Limits {
            timeout,
            max_fetch_bytes,
        } = limits;
        Router {
            node_id,
            routers,
            topics,
            groups,
            source,
            target,
            timeout,
            max_fetch_bytes,
            metrics,
            producers,
            holding,
            transactions: Transactions::default(),
            coordinators: Mutex::new(HashMap::new()),
        }
    }

    /// Answers one request: the encoded response frame, or `None` when the
    /// client expects none (Produce with acks=0).
    pub async fn handle(
        &self,
        header: &Header,
        req: Request,
        lanes: &Lanes,
        mut turn: Turn,
    ) -> Result<Option<Encoded>, FrameError> {
        let turn = &mut turn;
        if let Some(id) = &header.client_id {
            // Upstream, the client's requests carry its own id.
            lanes.source.set_client_id(id.as_str());
            lanes.target.set_client_id(id.as_str());
        }
        let r = |body: &dyn Fn() -> Result<Bytes, FrameError>| body().map(Some);
        let answer = match req {
            Request::ApiVersions(_) => r(&|| encode_response(header, &self.api_versions())),
            Request::Metadata(req) => {
                let resp = self.metadata(header, req).await;
                for t in &resp.topics {
                    self.metrics.error(ApiKey::Metadata, t.error_code);
                }
                encode_response(header, &resp).map(Some)
            }
            Request::Produce(req) => {
                self.respond(header, self.produce(header, req, lanes, turn).await)
            }
            Request::Fetch(req) => {
                // Its records are written from the buffers they came in.
                let Some(resp) = self.fetch(header, req, lanes, turn).await else {
                    return Ok(None);
                };
                let encoded = encode_fetch_response(header, resp)?;
                self.metrics.fetch_spliced.inc_by(encoded.spliced() as u64);
                return Ok(Some(encoded));
            }
            Request::ListOffsets(req) => {
                self.respond(header, self.partitioned(header, req, lanes, turn).await)
            }
            Request::OffsetForLeaderEpoch(req) => {
                self.respond(header, self.partitioned(header, req, lanes, turn).await)
            }
            Request::FindCoordinator(req) => {
                let resp = self.find_coordinator(header, &req);
                encode_response(header, &resp).map(Some)
            }
            Request::InitProducerId(req) => {
                let resp = self.init_producer_id(header, req, lanes).await;
                self.metrics.error(ApiKey::InitProducerId, resp.error_code);
                encode_response(header, &resp).map(Some)
            }
            Request::JoinGroup(req) => self.coordinated(header, req, lanes, turn).await,
            Request::SyncGroup(req) => self.coordinated(header, req, lanes, turn).await,
            Request::Heartbeat(req) => self.coordinated(header, req, lanes, turn).await,
            Request::LeaveGroup(req) => self.coordinated(header, req, lanes, turn).await,
            Request::OffsetCommit(req) => self.coordinated(header, req, lanes, turn).await,
            Request::OffsetFetch(req) => self.coordinated(header, req, lanes, turn).await,
            Request::AddPartitionsToTxn(req) => self.coordinated(header, req, lanes, turn).await,
            Request::AddOffsetsToTxn(req) => self.coordinated(header, req, lanes, turn).await,
            Request::EndTxn(req) => self.coordinated(header, req, lanes, turn).await,
            Request::TxnOffsetCommit(req) => self.coordinated(header, req, lanes, turn).await,
        };
        answer.map(|frame| frame.map(Encoded::from))
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

    /// Lanes for a new client connection from `client_host`.
    pub fn lanes(&self, client_host: String) -> Lanes {
        Lanes {
            source: self.source.lane(),
            target: self.target.lane(),
            client_host,
            readahead: readahead::Slot::default(),
        }
    }

    fn cluster(&self, side: Side) -> &Cluster {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }

    /// Metadata: the source's answer, with the partitions of topics whose
    /// primary is the target taken from the target (the source's topic id
    /// kept, so clients see one topic); the routers as the brokers, each
    /// partition led by one of them at its shown epoch.
    async fn metadata(&self, header: &Header, req: MetadataRequest) -> MetadataResponse {
        let routers = self.routers.all();
        let ids: Vec<i32> = routers.iter().map(|r| r.node_id).collect();
        let on_target: Vec<String> = match &req.topics {
            None => self.topics.on_target(),
            Some(topics) => topics
                .iter()
                .filter_map(|t| t.name.as_ref())
                .filter(|n| self.topics.primary(n.as_str()) == Side::Target)
                .map(|n| n.as_str().to_owned())
                .collect(),
        };
        let from_source = self.source.forward::<_, MetadataResponse>(
            Destination::Any,
            ApiKey::Metadata,
            header.version,
            &req,
            self.timeout,
        );
        let from_target = async {
            if on_target.is_empty() {
                return None;
            }
            let mut treq = req.clone();
            treq.allow_auto_topic_creation = false;
            treq.topics = Some(
                on_target
                    .iter()
                    .map(|n| {
                        let mut t = metadata_request::MetadataRequestTopic::default();
                        t.name = Some(TopicName(StrBytes::from_string(n.clone())));
                        t
                    })
                    .collect(),
            );
            Some(
                self.target
                    .forward::<_, MetadataResponse>(
                        Destination::Any,
                        ApiKey::Metadata,
                        header.version,
                        &treq,
                        self.timeout,
                    )
                    .await,
            )
        };
        let (upstream, target) = futures::join!(from_source, from_target);
        let unavailable = |name: Option<TopicName>| {
            let mut rt = MetadataResponseTopic::default();
            rt.name = name;
            rt.error_code = codes::LEADER_NOT_AVAILABLE;
            rt
        };
        let mut resp = match upstream {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, client = %header.client(), "Metadata from the source failed; answering LEADER_NOT_AVAILABLE");
                let mut r = MetadataResponse::default();
                r.topics = req
                    .topics
                    .iter()
                    .flatten()
                    .map(|t| unavailable(t.name.clone()))
                    .collect();
                r
            }
        };
        // Topics whose partitions (and so epochs) are the target's.
        let mut from_target_names: Vec<TopicName> = Vec::new();
        match target {
            None => {}
            Some(Ok(t)) => {
                for tt in t.topics {
                    let Some(name) = tt.name.clone() else {
                        continue;
                    };
                    from_target_names.push(name.clone());
                    match resp
                        .topics
                        .iter_mut()
                        .find(|st| st.name.as_ref() == Some(&name))
                    {
                        Some(st) => {
                            st.error_code = tt.error_code;
                            st.partitions = tt.partitions;
                        }
                        None => resp.topics.push(tt),
                    }
                }
            }
            Some(Err(e)) => {
                warn!(error = %e, client = %header.client(), "Metadata from the target failed; its topics answer LEADER_NOT_AVAILABLE");
                for name in &on_target {
                    let name = TopicName(StrBytes::from_string(name.clone()));
                    match resp
                        .topics
                        .iter_mut()
                        .find(|st| st.name.as_ref() == Some(&name))
                    {
                        Some(st) => {
                            st.error_code = codes::LEADER_NOT_AVAILABLE;
                            st.partitions.clear();
                        }
                        None => resp.topics.push(unavailable(Some(name))),
                    }
                }
            }
        }
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
            let Some(name) = t.name.clone() else {
                continue;
            };
            let side = if from_target_names.contains(&name) {
                Side::Target
            } else {
                Side::Source
            };
            let view = self.topics.view(name.as_str(), side);
            for p in &mut t.partitions {
                p.leader_epoch = epochs::shown(view, p.leader_epoch);
                if p.leader_id.0 < 0 {
                    // No leader upstream: say so (the client retries).
                    continue;
                }
                let leader =
                    assign::partition_leader(&ids, name.as_str(), p.partition_index).unwrap_or(-1);
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
    /// leader on the cluster that answers them (the topic's primary, see
    /// `Partitioned::side`), one request per cluster and leader, all at
    /// once; the answers come back in the request's order, as a client may
    /// see them. Parts of reads whose upstream leader moved are sent again
    /// to the new one (`Partitioned::RETRIED`) until `RETRY_WITHIN` runs
    /// out; then the client gets the retriable error. `None` for a request
    /// the client expects no answer to.
    async fn partitioned<R: Partitioned>(
        &self,
        header: &Header,
        req: R,
        lanes: &Lanes,
        turn: &mut Turn,
    ) -> Option<R::Response> {
        let ids = self.live_routers();
        let parts = req.parts();
        let mut order: Vec<(TopicName, i32)> = Vec::with_capacity(parts.len());
        let mut answers: HashMap<(TopicName, i32), R::Answer> = HashMap::new();
        // Parts to send, already as their cluster takes them.
        let mut todo: Vec<(Side, TopicName, R::Part)> = Vec::with_capacity(parts.len());
        for (topic, part) in parts {
            let partition = R::partition(part);
            order.push((topic.clone(), partition));
            if !self.leads(&ids, topic, partition) {
                debug!(topic = %topic.as_str(), partition, "not led by this router");
                answers.insert(
                    (topic.clone(), partition),
                    R::failed(partition, codes::NOT_LEADER_OR_FOLLOWER),
                );
                continue;
            }
            let (side, part) = self.upstream_part::<R>(topic, part);
            todo.push((side, topic.clone(), part));
        }
        let unanswered = req.unanswered();
        let retry_until = tokio::time::Instant::now() + self.timeout.min(RETRY_WITHIN);
        let mut backoff = RETRY.backoff();
        let mut turn = Some(turn);
        while !todo.is_empty() {
            let again = self
                .partitioned_round(header, &req, lanes, turn.take(), todo, &mut answers)
                .await;
            if again.is_empty() || tokio::time::Instant::now() + RETRY.max >= retry_until {
                break;
            }
            self.metrics
                .upstream_retries
                .with_label_values(&[crate::metrics::api_name(R::API)])
                .inc_by(again.len() as u64);
            backoff.wait().await;
            todo = again;
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

    /// Which cluster `part` of `topic` goes to, and the part as that
    /// cluster takes it (the client's epochs replaced).
    fn upstream_part<R: Partitioned>(&self, topic: &TopicName, part: &R::Part) -> (Side, R::Part) {
        let side = R::side(part, self.topics.primary(topic.as_str()));
        let mut part = part.clone();
        R::to_upstream(&mut part, side);
        (side, part)
    }

    /// An answer about `topic` from `side` as the client may see it, with
    /// the filler batches removed counted.
    fn for_client<R: Partitioned>(&self, topic: &TopicName, answer: &mut R::Answer, side: Side) {
        let fillers = R::to_client(answer, self.topics.view(topic.as_str(), side));
        if fillers > 0 {
            self.metrics.fillers_removed.inc_by(fillers as u64);
        }
    }

    /// One round of `partitioned`: looks the parts' leaders up, sends one
    /// request per cluster and leader (the first round in the connection's
    /// order: `turn`), and records the answers. Returns the parts worth
    /// sending again (their leader moved or could not be reached), whose
    /// answers so far are the retriable error.
    async fn partitioned_round<R: Partitioned>(
        &self,
        header: &Header,
        req: &R,
        lanes: &Lanes,
        mut turn: Option<&mut Turn>,
        todo: Vec<(Side, TopicName, R::Part)>,
        answers: &mut HashMap<(TopicName, i32), R::Answer>,
    ) -> Vec<(Side, TopicName, R::Part)> {
        let mut again: Vec<(Side, TopicName, R::Part)> = Vec::new();
        // What each sent part was, to send it again.
        let mut sent_parts: HashMap<(TopicName, i32), R::Part> = HashMap::new();
        let mut groups: BTreeMap<Upstream, Vec<(TopicName, R::Part)>> = BTreeMap::new();
        for (side, topic, part) in todo {
            let partition = R::partition(&part);
            match self.cluster(side).leader_of(&topic, partition).await {
                Ok(leader) => {
                    if R::RETRIED {
                        sent_parts.insert((topic.clone(), partition), part.clone());
                    }
                    groups
                        .entry((side, leader))
                        .or_default()
                        .push((topic, part));
                }
                Err(e) => {
                    debug!(topic = %topic.as_str(), partition, error = %e, "no leader upstream");
                    answers.insert(
                        (topic.clone(), partition),
                        R::failed(partition, partition_code(&e)),
                    );
                    if R::RETRIED && retry_after(&e) {
                        again.push((side, topic, part));
                    }
                }
            }
        }
        let unanswered = req.unanswered();
        let timeout = self.timeout + req.broker_wait();
        // Sent in the connection's order, one after the other (queued, not
        // answered); the answers are awaited together.
        if let Some(turn) = turn.as_mut() {
            turn.wait().await;
        }
        let mut sent = Vec::with_capacity(groups.len());
        for ((side, leader), parts) in groups {
            let keys: Vec<(TopicName, i32)> = parts
                .iter()
                .map(|(t, p)| (t.clone(), R::partition(p)))
                .collect();
            let mut sub = req.with_parts(parts);
            let records = sub.take_large_records();
            if !records.is_empty() {
                self.metrics.produce_spliced.inc_by(records.len() as u64);
            }
            let lane = lanes.of(side);
            let to = Destination::Node(leader);
            let queued = if unanswered {
                lane.forward_unanswered(to, R::API, header.version, &sub, records, timeout)
                    .await
                    .map(|()| None)
            } else {
                lane.send_spliced(to, R::API, header.version, &sub, records)
                    .await
                    .map(Some)
            };
            sent.push((side, keys, queued));
        }
        if let Some(turn) = turn {
            turn.done();
        }
        let sends = sent.into_iter().map(|(side, keys, queued)| async move {
            let r = match queued {
                Ok(Some(pending)) => pending.decode::<R::Response>(timeout).await.map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            (side, keys, r)
        });
        for (side, keys, result) in join_all(sends).await {
            let cluster = self.cluster(side);
            let (code, retry) = match result.map(|r| r.map(R::answers)) {
                Ok(None) => continue,
                Ok(Some(Ok(got))) => {
                    for (topic, mut a) in got {
                        let code = R::answer_error(&a);
                        if leader_moved(code) {
                            cluster.mark_topic_stale(&topic);
                        }
                        let partition = R::answer_partition(&a);
                        if R::RETRIED && moved_away(code) {
                            if let Some(part) = sent_parts.remove(&(topic.clone(), partition)) {
                                again.push((side, topic.clone(), part));
                            }
                        }
                        self.for_client::<R>(&topic, &mut a, side);
                        answers.insert((topic, partition), a);
                    }
                    continue;
                }
                Ok(Some(Err(code))) => {
                    warn!(api = ?R::API, code, side = side.name(), client = %header.client(), "the cluster failed the request as a whole");
                    (codes::NOT_LEADER_OR_FOLLOWER, false)
                }
                Err(e) => {
                    warn!(api = ?R::API, error = %e, side = side.name(), client = %header.client(), "request upstream failed");
                    (partition_code(&e), retry_after(&e))
                }
            };
            for (topic, partition) in keys {
                cluster.mark_topic_stale(&topic);
                if R::RETRIED && retry {
                    if let Some(part) = sent_parts.remove(&(topic.clone(), partition)) {
                        again.push((side, topic.clone(), part));
                    }
                }
                answers.insert((topic, partition), R::failed(partition, code));
            }
        }
        again
    }

    /// Fetch: from the read-ahead when it asked exactly this, else
    /// upstream; then the next one is read ahead (`readahead`).
    async fn fetch(
        &self,
        header: &Header,
        req: FetchRequest,
        lanes: &Lanes,
        turn: &mut Turn,
    ) -> Option<FetchResponse> {
        let resp = match self.readahead_answer(header, &req, lanes, turn).await {
            Some(resp) => resp,
            None => {
                let mut up = req.clone();
                readahead::cap(&mut up, self.max_fetch_bytes);
                self.partitioned(header, up, lanes, turn).await?
            }
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            log_fetch(header, &req, &resp);
        }
        self.read_ahead(header, &req, &resp, lanes).await;
        Some(resp)
    }

    /// The read-ahead's answer, as the client may see it, when it was for
    /// exactly `req` and brought records; `None` otherwise (dropped).
    async fn readahead_answer(
        &self,
        header: &Header,
        req: &FetchRequest,
        lanes: &Lanes,
        turn: &mut Turn,
    ) -> Option<FetchResponse> {
        let ahead = lanes.readahead.take()?;
        let outcome = |o: &str| {
            self.metrics.readahead.with_label_values(&[o]).inc();
        };
        if ahead.key != FetchKey::of(header.version, req) {
            debug!(ahead = ?ahead.key, asked = ?FetchKey::of(header.version, req), "read-ahead not asked for");
            outcome("unmatched");
            return None;
        }
        // Upstream it went before anything this request could send.
        turn.wait().await;
        let mut ahead = ahead;
        let side = ahead.side;
        let got = match tokio::time::timeout(self.timeout, ahead.answer_ref()).await {
            Ok(Ok(Ok(resp))) => resp,
            _ => {
                outcome("failed");
                return None;
            }
        };
        let Ok(answers) = FetchRequest::answers(got) else {
            outcome("failed");
            return None;
        };
        let mut by_key: HashMap<(TopicName, i32), _> = HashMap::new();
        let mut records = false;
        for (topic, a) in answers {
            if a.error_code != 0 {
                outcome("failed");
                return None;
            }
            records |= a.records.as_ref().is_some_and(|r| !r.is_empty());
            by_key.insert((topic, a.partition_index), a);
        }
        if !records {
            // Nothing new yet: the client's own Fetch waits for data.
            outcome("empty");
            return None;
        }
        let mut ordered = Vec::with_capacity(by_key.len());
        for (topic, p) in req.parts() {
            let mut a = by_key.remove(&(topic.clone(), p.partition))?;
            self.for_client::<FetchRequest>(topic, &mut a, side);
            ordered.push((topic.clone(), a));
        }
        outcome("used");
        Some(FetchRequest::assemble(ordered))
    }

    /// Sends upstream, without waiting, the Fetch the client will most
    /// likely send next, when all of it goes to one leader.
    async fn read_ahead(
        &self,
        header: &Header,
        req: &FetchRequest,
        resp: &FetchResponse,
        lanes: &Lanes,
    ) {
        let Some(next) = readahead::next_request(req, resp) else {
            return;
        };
        let mut upstream: Option<(Side, i32)> = None;
        let mut parts = Vec::new();
        for (topic, part) in next.parts() {
            let (side, part) = self.upstream_part::<FetchRequest>(topic, part);
            let Ok(leader) = self.cluster(side).leader_of(topic, part.partition).await else {
                return;
            };
            if upstream.is_some_and(|u| u != (side, leader)) {
                return;
            }
            upstream = Some((side, leader));
            parts.push((topic.clone(), part));
        }
        let Some((side, leader)) = upstream else {
            return;
        };
        let mut sub = next.with_parts(parts);
        readahead::cap(&mut sub, self.max_fetch_bytes);
        // Answered at once: a read-ahead must not hold the connection.
        sub.max_wait_ms = 0;
        let Ok(pending) = lanes
            .of(side)
            .send(
                Destination::Node(leader),
                ApiKey::Fetch,
                header.version,
                &sub,
            )
            .await
        else {
            return;
        };
        let (tx, answer) = tokio::sync::oneshot::channel();
        let timeout = self.timeout;
        let task = tokio::spawn(async move {
            let _ = tx.send(pending.decode::<FetchResponse>(timeout).await);
        });
        lanes.readahead.put(ReadAhead {
            key: FetchKey::of(header.version, &next),
            side,
            answer,
            task,
        });
    }

    /// Produce: batches of client producer ids (`producers`) get the
    /// upstream producer of the cluster they go to; then per partition as
    /// the other partitioned APIs. A partition whose producer cannot be
    /// mapped is answered on its own, the others go on.
    async fn produce(
        &self,
        header: &Header,
        mut req: ProduceRequest,
        lanes: &Lanes,
        turn: &mut Turn,
    ) -> Option<ProduceResponse> {
        let unanswered = req.unanswered();
        // In the connection's order first: a request held behind an
        // earlier held one is not in flight yet, so a hold of its topics
        // does not wait for it.
        turn.wait().await;
        let names: Vec<&str> = req.topic_data.iter().map(|t| t.name.as_str()).collect();
        // Counted in flight until answered; the primary is read after a
        // hold ends, so a promotion's held writes go to the new one.
        let _in_flight = self.holding.produce.enter(&names).await;
        drop(names);
        let mut failed: Vec<(TopicName, produce_response::PartitionProduceResponse)> = Vec::new();
        let transactional = req.transactional_id.is_some();
        for t in &mut req.topic_data {
            let view = self.topics.primary_view(t.name.as_str());
            let mut kept = Vec::with_capacity(t.partition_data.len());
            for mut p in std::mem::take(&mut t.partition_data) {
                match self
                    .map_producer(header, &t.name, view, transactional, &mut p)
                    .await
                {
                    Ok(()) => kept.push(p),
                    Err(code) => {
                        failed.push((t.name.clone(), ProduceRequest::failed(p.index, code)))
                    }
                }
            }
            t.partition_data = kept;
        }
        req.topic_data.retain(|t| !t.partition_data.is_empty());
        let resp = if req.topic_data.is_empty() {
            None
        } else {
            self.partitioned(header, req, lanes, turn).await
        };
        if unanswered {
            return None;
        }
        if failed.is_empty() {
            return resp;
        }
        for (_, a) in &failed {
            self.metrics.error(ApiKey::Produce, a.error_code);
        }
        let mut answers = resp
            .map(|r| ProduceRequest::answers(r).unwrap_or_default())
            .unwrap_or_default();
        answers.extend(failed);
        Some(ProduceRequest::assemble(answers))
    }

    /// Gives the partition's batches the upstream producer their client
    /// producer id stands for in the generation of `view` (the topic's
    /// primary and its switches); batches of other producer ids (none, or
    /// a transactional producer's the source gave) pass as they are.
    /// `transactional`: the request carries a transactional id.
    /// `Err(code)`: the partition's answer.
    async fn map_producer(
        &self,
        header: &Header,
        topic: &TopicName,
        view: View,
        transactional: bool,
        p: &mut produce_request::PartitionProduceData,
    ) -> Result<(), i16> {
        let side = view.side;
        let Some(records) = &p.records else {
            return Ok(());
        };
        let Ok(first) = cutover_records::BatchHeader::parse(records) else {
            // Too short for a batch: the broker answers it.
            return Ok(());
        };
        let id = first.producer_id;
        if !producers::is_client_id(id) {
            return Ok(());
        }
        let cluster = self.cluster(side);
        let mapped = async {
            let upstream = self
                .producers
                .upstream(id, view.generation(), cluster)
                .await?;
            let epoch = producers::upstream_epoch(id, upstream, first.producer_epoch)?;
            Ok::<_, producers::ProducerError>((upstream.producer_id, epoch))
        };
        let (upstream_id, epoch) = mapped.await.map_err(|e| {
            warn!(error = %e, producer_id = id, topic = %topic.as_str(), partition = p.index, side = side.name(), client = %header.client(), "producer id not mapped");
            e.code()
        })?;
        let rewritten = cutover_records::with_producer(records, upstream_id, epoch).map_err(|e| {
            warn!(error = %e, topic = %topic.as_str(), partition = p.index, client = %header.client(), "produce batch refused");
            codes::CORRUPT_MESSAGE
        })?;
        let rules = cutover_records::ProduceRules {
            max_message_bytes: usize::MAX,
            topic_codec: None,
            produce_version: header.version,
            transactional,
        };
        if let Err(v) = cutover_records::check_batch_header(&rewritten, &rules) {
            self.metrics.produce_rule_violations.inc();
            warn!(violation = %v, topic = %topic.as_str(), partition = p.index, client = %header.client(), "a produce request the router built breaks a broker rule");
        }
        p.records = Some(rewritten);
        Ok(())
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

    /// Drops the cached coordinator of `key` on `side` (it moved or did
    /// not answer): the next request asks FindCoordinator again.
    fn forget_coordinator(&self, side: Side, kind: CoordinatorKind, key: &str) {
        lock(&self.coordinators).remove(&(side, kind, key.to_owned()));
    }

    /// `side`'s coordinator of `key`, from the cache or asked.
    async fn coordinator(
        &self,
        side: Side,
        kind: CoordinatorKind,
        key: &str,
    ) -> Result<i32, KafkaError> {
        if let Some(id) = lock(&self.coordinators).get(&(side, kind, key.to_owned())) {
            return Ok(*id);
        }
        let cluster = self.cluster(side);
        let version = cluster
            .api_range(ApiKey::FindCoordinator)
            .map(|(_, max)| max.min(3))
            .ok_or_else(|| {
                KafkaError::Protocol(format!("the {side} does not offer FindCoordinator"))
            })?;
        let mut req = FindCoordinatorRequest::default();
        req.key = StrBytes::from_string(key.to_owned());
        req.key_type = kind.key_type();
        let resp: FindCoordinatorResponse = cluster
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
        lock(&self.coordinators).insert((side, kind, key.to_owned()), id);
        Ok(id)
    }

    /// A group or transaction request: answered NOT_COORDINATOR unless
    /// this router coordinates its key for clients; else sent to the
    /// coordinator of the group's home (a transaction's: the source's),
    /// found again once if that one moved. A group in a promotion's
    /// barrier rebalances: its heartbeats are answered
    /// REBALANCE_IN_PROGRESS (members commit on revoke and rejoin) and its
    /// JoinGroups wait for the barrier to end, then go to the home it
    /// ended at.
    async fn coordinated<R: Coordinated>(
        &self,
        header: &Header,
        mut req: R,
        lanes: &Lanes,
        turn: &mut Turn,
    ) -> Result<Option<Bytes>, FrameError> {
        let (kind, key) = req.key();
        let key = key.to_owned();
        let ids = self.live_routers();
        if assign::coordinator(&ids, kind, &key) != Some(self.node_id) {
            self.metrics.error(R::API, codes::NOT_COORDINATOR);
            return encode_response(header, &req.failed(codes::NOT_COORDINATOR)).map(Some);
        }
        let txn = req.txn();
        let home = |groups: &Groups| match kind {
            CoordinatorKind::Group => groups.primary(&key),
            CoordinatorKind::Transaction => Side::Source,
        };
        let before = home(&self.groups);
        if R::API == ApiKey::Heartbeat && self.groups.in_barrier(&key) {
            self.metrics.error(R::API, codes::REBALANCE_IN_PROGRESS);
            return encode_response(header, &req.failed(codes::REBALANCE_IN_PROGRESS)).map(Some);
        }
        // A group promotion holds the group's JoinGroups, a promotion's
        // barrier its transactions' requests; in the connection's order,
        // as Produce.
        let held: Vec<String> = match &txn {
            Some(TxnOf {
                part: TxnPart::Partitions(topics),
                ..
            }) => topics.iter().map(|t| txns::add_topic(t)).collect(),
            Some(TxnOf {
                part: TxnPart::Offsets(group),
                ..
            }) => vec![txns::add_group(group)],
            Some(TxnOf {
                part: TxnPart::Commit,
                ..
            }) => vec![txns::commit_group(&key)],
            _ => Vec::new(),
        };
        let _joining = if R::API == ApiKey::JoinGroup {
            turn.wait().await;
            Some(self.holding.joins.enter(&[key.as_str()]).await)
        } else {
            None
        };
        let _txn_held = if held.is_empty() {
            None
        } else {
            turn.wait().await;
            let keys: Vec<&str> = held.iter().map(String::as_str).collect();
            Some(self.holding.txns.enter(&keys).await)
        };
        let side = match &txn {
            Some(t) if kind == CoordinatorKind::Transaction => {
                match self.transaction_side(header, &key, t).await {
                    TxnRoute::To(side) => side,
                    TxnRoute::Answer(code) => {
                        if code == 0 {
                            self.transactions.set(t.producer_id, Known::Closed);
                        }
                        self.metrics.error(R::API, code);
                        return encode_response(header, &req.failed(code)).map(Some);
                    }
                }
            }
            _ => home(&self.groups),
        };
        if side != before && kind == CoordinatorKind::Group {
            // Its member id is the old home's: the new one would refuse it
            // (UNKNOWN_MEMBER_ID); without one the member joins afresh.
            req.home_moved();
        }
        if let Some(t) = &txn {
            match self.upstream_producer(t, side).await {
                Ok(Some((id, epoch))) => req.set_producer(id, epoch),
                Ok(None) => {}
                Err(code) => {
                    warn!(producer_id = t.producer_id, api = ?R::API, key = %key, side = side.name(), client = %header.client(), "transactional producer not mapped");
                    self.metrics.error(R::API, code);
                    return encode_response(header, &req.failed(code)).map(Some);
                }
            }
        }
        req.to_upstream(side);
        let mut resp = None;
        for _ in 0..2 {
            let result = match self.coordinator(side, kind, &key).await {
                Ok(node) => {
                    turn.wait().await;
                    let queued = lanes
                        .of(side)
                        .send(Destination::Node(node), R::API, header.version, &req)
                        .await;
                    turn.done();
                    match queued {
                        Ok(pending) => {
                            pending
                                .decode::<R::Response>(self.timeout + req.broker_wait())
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(r) if is_coordinator_moved(R::error(&r)) => {
                    self.forget_coordinator(side, kind, &key);
                    resp = Some(r);
                }
                Ok(r) => {
                    resp = Some(r);
                    break;
                }
                Err(e) => {
                    warn!(error = %e, api = ?R::API, key = %key, side = side.name(), client = %header.client(), "request to the coordinator failed");
                    self.forget_coordinator(side, kind, &key);
                }
            }
        }
        let mut resp = resp.unwrap_or_else(|| req.failed(codes::COORDINATOR_NOT_AVAILABLE));
        if let Some(t) = &txn {
            if kind == CoordinatorKind::Transaction && R::error(&resp) == 0 {
                let known = match t.part {
                    TxnPart::End { .. } => Known::Closed,
                    _ => Known::Open(side),
                };
                self.transactions.set(t.producer_id, known);
            }
        }
        let seen = req.seen(&resp);
        if seen != Seen::Nothing {
            let client_id = header.client_id.as_ref().map(|c| c.as_str()).unwrap_or("");
            let now = cutover_model::now_ms();
            if !self
                .holding
                .members
                .record(&key, seen, client_id, &lanes.client_host, now)
            {
                warn!(group = %key, client = %header.client(), "too many group members remembered; this one is not (a group promotion will not count it)");
            }
        }
        R::to_client(&mut resp, side, &self.topics);
        self.metrics.error(R::API, R::error(&resp));
        encode_response(header, &resp).map(Some)
    }

    /// InitProducerId. An idempotent client gets a producer id of the
    /// routers' own (`producers`); a transactional one too, standing for
    /// its transactional id initialised on both clusters (each fences
    /// that id's older producers there and aborts what they left open),
    /// so its transactions can run on either (`transactions`).
    async fn init_producer_id(
        &self,
        header: &Header,
        req: InitProducerIdRequest,
        lanes: &Lanes,
    ) -> InitProducerIdResponse {
        let failed = |code: i16| {
            let mut r = InitProducerIdResponse::default();
            r.error_code = code;
            r.producer_id = (-1).into();
            r.producer_epoch = -1;
            r
        };
        let id = match &req.transactional_id {
            Some(tid) => {
                let ids = self.live_routers();
                if assign::coordinator(&ids, CoordinatorKind::Transaction, tid)
                    != Some(self.node_id)
                {
                    return failed(codes::NOT_COORDINATOR);
                }
                let (source, target) = futures::join!(
                    self.init_on(Side::Source, header, &req, lanes),
                    self.init_on(Side::Target, header, &req, lanes)
                );
                let (source, target) = match (source, target) {
                    (Ok(s), Ok(t)) => (s, t),
                    (Err(code), _) | (_, Err(code)) => return failed(code),
                };
                match self
                    .producers
                    .new_transactional(tid.as_str(), source, target)
                    .await
                {
                    Ok(id) => {
                        self.transactions.set(id, Known::Closed);
                        id
                    }
                    Err(e) => {
                        warn!(error = %e, transactional_id = %tid.as_str(), client = %header.client(), "no producer id for a transactional client");
                        return failed(codes::COORDINATOR_NOT_AVAILABLE);
                    }
                }
            }
            // An idempotent producer.
            None => match self.producers.new_client_id().await {
                Ok(id) => id,
                Err(e) => {
                    warn!(error = %e, client = %header.client(), "no producer id for an idempotent client");
                    return failed(codes::COORDINATOR_NOT_AVAILABLE);
                }
            },
        };
        let mut r = InitProducerIdResponse::default();
        r.producer_id = id.into();
        r.producer_epoch = 0;
        r
    }

    /// The client's transactional id initialised on `side`'s coordinator,
    /// as a new producer: the client's own id and epoch (a bump after an
    /// abortable error) are the routers', unknown there.
    async fn init_on(
        &self,
        side: Side,
        header: &Header,
        req: &InitProducerIdRequest,
        lanes: &Lanes,
    ) -> Result<cutover_model::UpstreamProducer, i16> {
        let tid = req
            .transactional_id
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default();
        let node = self
            .coordinator(side, CoordinatorKind::Transaction, &tid)
            .await
            .map_err(|e| {
                warn!(error = %e, transactional_id = %tid, side = side.name(), client = %header.client(), "no transaction coordinator");
                codes::COORDINATOR_NOT_AVAILABLE
            })?;
        let mut upstream = req.clone();
        upstream.producer_id = (-1).into();
        upstream.producer_epoch = -1;
        let forget = || self.forget_coordinator(side, CoordinatorKind::Transaction, &tid);
        let r: InitProducerIdResponse = lanes
            .of(side)
            .forward(
                Destination::Node(node),
                ApiKey::InitProducerId,
                header.version,
                &upstream,
                self.timeout,
            )
            .await
            .map_err(|e| {
                warn!(error = %e, transactional_id = %tid, side = side.name(), client = %header.client(), "InitProducerId failed");
                forget();
                codes::COORDINATOR_NOT_AVAILABLE
            })?;
        if r.error_code != 0 {
            if is_coordinator_moved(r.error_code) {
                forget();
            }
            return Err(r.error_code);
        }
        Ok(cutover_model::UpstreamProducer {
            producer_id: r.producer_id.0,
            producer_epoch: r.producer_epoch,
        })
    }

    /// The cluster a transaction request goes to: where its transaction
    /// runs, or for one that adds to a transaction with none open, where
    /// what it adds has its primary; or the answer the router gives
    /// itself (a refusal, or the end of a transaction it refused).
    async fn transaction_side(&self, header: &Header, tid: &str, t: &TxnOf) -> TxnRoute {
        if !producers::is_client_id(t.producer_id) {
            // An id the source gave (initialised before routers mapped
            // transactional ids): its transactions stay there.
            return TxnRoute::To(Side::Source);
        }
        let end = match t.part {
            TxnPart::End { commit } => Some(commit),
            _ => None,
        };
        let open = match self.transactions.get(t.producer_id) {
            Some(Known::Open(side)) => Some(side),
            Some(Known::Refused) => match end {
                Some(commit) => return txns::end_of_refused(commit),
                None => None,
            },
            Some(Known::Closed) if end.is_none() => None,
            _ => {
                // Forgotten here, or an EndTxn with none open (a retry of
                // one answered): the clusters say.
                let (open, last) = match self.ask_transaction(tid, t.producer_id).await {
                    Ok(seen) => seen,
                    Err(code) => return TxnRoute::Answer(code),
                };
                if end.is_some() {
                    return TxnRoute::To(open.unwrap_or(last));
                }
                open
            }
        };
        let wanted: Vec<Side> = match &t.part {
            TxnPart::Partitions(topics) => topics.iter().map(|x| self.topics.primary(x)).collect(),
            TxnPart::Offsets(group) => vec![self.groups.primary(group)],
            TxnPart::End { .. } | TxnPart::Commit => {
                return TxnRoute::To(open.unwrap_or(Side::Source))
            }
        };
        match txns::side_for_add(&wanted, open) {
            Ok(side) => TxnRoute::To(side),
            Err(e) => {
                warn!(transactional_id = tid, client = %header.client(), reason = %e, "transaction request refused: a transaction runs on one cluster; the client aborts it and may retry (promote every topic and group one transaction touches together)");
                if open.is_none() {
                    self.transactions.set(t.producer_id, Known::Refused);
                }
                TxnRoute::Answer(txns::refusal_code(matches!(t.part, TxnPart::Partitions(_))))
            }
        }
    }

    /// Where the client's transaction is open (if it is), and where its
    /// last one ended, by DescribeTransactions on both clusters.
    async fn ask_transaction(
        &self,
        tid: &str,
        producer_id: i64,
    ) -> Result<(Option<Side>, Side), i16> {
        let mapping = self
            .producers
            .mapping(producer_id)
            .await
            .map_err(|e| e.coordinator_code())?;
        let (source, target) = futures::join!(
            self.transaction_seen(Side::Source, tid, mapping.on(Side::Source)),
            self.transaction_seen(Side::Target, tid, mapping.on(Side::Target))
        );
        Ok(txns::seen_side(source?.as_ref(), target?.as_ref()))
    }

    /// `tid`'s transaction on `side`, if the coordinator there shows it
    /// for `upstream` (the client's producer there).
    async fn transaction_seen(
        &self,
        side: Side,
        tid: &str,
        upstream: Option<cutover_model::UpstreamProducer>,
    ) -> Result<Option<txns::Seen>, i16> {
        let Some(upstream) = upstream else {
            return Ok(None);
        };
        let forget = || self.forget_coordinator(side, CoordinatorKind::Transaction, tid);
        let node = self
            .coordinator(side, CoordinatorKind::Transaction, tid)
            .await
            .map_err(|_| codes::COORDINATOR_NOT_AVAILABLE)?;
        let mut req = DescribeTransactionsRequest::default();
        req.transactional_ids = vec![TransactionalId(StrBytes::from_string(tid.to_owned()))];
        let resp: DescribeTransactionsResponse = self
            .cluster(side)
            .forward(
                Destination::Node(node),
                ApiKey::DescribeTransactions,
                0,
                &req,
                self.timeout,
            )
            .await
            .map_err(|e| {
                warn!(error = %e, transactional_id = tid, side = side.name(), "DescribeTransactions failed");
                forget();
                codes::COORDINATOR_NOT_AVAILABLE
            })?;
        let Some(state) = resp.transaction_states.into_iter().next() else {
            return Err(codes::COORDINATOR_NOT_AVAILABLE);
        };
        match state.error_code {
            0 => {}
            codes::TRANSACTIONAL_ID_NOT_FOUND => return Ok(None),
            code => {
                if is_coordinator_moved(code) {
                    forget();
                }
                return Err(codes::COORDINATOR_NOT_AVAILABLE);
            }
        }
        Ok(
            (state.producer_id.0 == upstream.producer_id).then(|| txns::Seen {
                state: state.transaction_state.to_string(),
            }),
        )
    }

    /// The producer a transaction request carries, as `side` knows it:
    /// `None` to send it as it is (an id the source gave).
    async fn upstream_producer(&self, t: &TxnOf, side: Side) -> Result<Option<(i64, i16)>, i16> {
        if !producers::is_client_id(t.producer_id) {
            return if side == Side::Source {
                Ok(None)
            } else {
                Err(codes::INVALID_PRODUCER_ID_MAPPING)
            };
        }
        let mapping = self
            .producers
            .mapping(t.producer_id)
            .await
            .map_err(|e| e.coordinator_code())?;
        let upstream = mapping
            .on(side)
            .filter(|_| mapping.transactional_id.is_some())
            .ok_or(codes::INVALID_PRODUCER_ID_MAPPING)?;
        let epoch = producers::upstream_epoch(t.producer_id, upstream, t.producer_epoch)
            .map_err(|e| e.coordinator_code())?;
        Ok(Some((upstream.producer_id, epoch)))
    }
}

/// Each partition of a Fetch as asked and as answered (debug logs: where a
/// consumer's position stands and what it got).
fn log_fetch(header: &Header, req: &FetchRequest, resp: &FetchResponse) {
    for t in &resp.responses {
        for a in &t.partitions {
            let asked = req
                .topics
                .iter()
                .filter(|r| r.topic == t.topic)
                .flat_map(|r| r.partitions.iter())
                .find(|p| p.partition == a.partition_index);
            debug!(
                topic = %t.topic.as_str(),
                partition = a.partition_index,
                offset = asked.map_or(-1, |p| p.fetch_offset),
                current_leader_epoch = asked.map_or(-1, |p| p.current_leader_epoch),
                error = a.error_code,
                high_watermark = a.high_watermark,
                bytes = a.records.as_ref().map_or(0, |r| r.len()),
                client = %header.client(),
                "fetch answered"
            );
        }
    }
}
