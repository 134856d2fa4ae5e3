//! Admin operations and DeleteRecords against a scripted broker. The
//! librdkafka mock cluster does not implement these APIs, so this is where
//! their requests and the handling of the answers are checked: the peer
//! decodes what the client sends with kafka-protocol, hands it to the test,
//! and replies with whatever the test scripted for that call.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cutover_kafka::kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use cutover_kafka::kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use cutover_kafka::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use cutover_kafka::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use cutover_kafka::kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use cutover_kafka::kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    MetadataRequest, TopicName,
};
use cutover_kafka::kafka_protocol::protocol::StrBytes;
use cutover_kafka::{config_source, Cluster, ConfigEntry, KafkaError, NewTopic};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::common::config;
use crate::peer::{
    api_versions, decode_body, metadata, read_request, response_frame, PeerTopic, RequestFrame,
    HANDSHAKE_APIS,
};

const NOT_CONTROLLER: i16 = 41;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_CONFIG: i16 = 40;
const POLICY_VIOLATION: i16 = 44;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// Non-retriable, yet one of the codes that call for a metadata refresh:
/// the code on which a policy looking only at "refresh needed" would retry.
const BROKER_NOT_AVAILABLE: i16 = 8;
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

const RESOURCE_TOPIC: i8 = 2;
const OP_SET: i8 = 0;

/// Which end of kafka-protocol's version range the peer offers for the
/// five APIs under test: the lowest versions use non-flexible headers and
/// bodies, the highest flexible ones.
#[derive(Clone, Copy, Debug)]
enum Versions {
    Lowest,
    Highest,
}

impl Versions {
    const BOTH: [Versions; 2] = [Versions::Lowest, Versions::Highest];

    /// The only version of `api` the peer offers, hence the one the
    /// client must use.
    fn of(self, api: ApiKey) -> i16 {
        let r = api.valid_versions();
        match self {
            Versions::Lowest => r.min,
            Versions::Highest => r.max,
        }
    }
}

const ADMIN_APIS: [ApiKey; 5] = [
    ApiKey::CreateTopics,
    ApiKey::CreatePartitions,
    ApiKey::DescribeConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DeleteRecords,
];

/// Who the peer's Metadata names as controller and as leader of every
/// partition.
#[derive(Clone, Copy, Debug)]
struct Layout {
    controller: i32,
    leader: i32,
}

struct Setup {
    /// Node ids `0..nodes`, one listener each; node 0 is the bootstrap.
    nodes: usize,
    topics: Vec<(&'static str, i32)>,
    layout: Layout,
    versions: Versions,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            nodes: 1,
            topics: vec![("t", 3)],
            layout: Layout {
                controller: 0,
                leader: 0,
            },
            versions: Versions::Highest,
        }
    }
}

/// A request the peer received, decoded.
#[derive(Debug)]
enum Request {
    Metadata(MetadataRequest),
    CreateTopics(CreateTopicsRequest),
    CreatePartitions(CreatePartitionsRequest),
    DescribeConfigs(DescribeConfigsRequest),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest),
    DeleteRecords(DeleteRecordsRequest),
    /// The peer could not decode or answer a request, and hung up.
    Broken(String),
}

#[derive(Debug)]
struct Seen {
    node: i32,
    version: i16,
    request: Request,
}

/// A scripted answer; encoded at whatever version the request came in.
#[derive(Debug)]
enum Answer {
    CreateTopics(CreateTopicsResponse),
    CreatePartitions(CreatePartitionsResponse),
    DescribeConfigs(DescribeConfigsResponse),
    IncrementalAlterConfigs(IncrementalAlterConfigsResponse),
    DeleteRecords(DeleteRecordsResponse),
}

impl Answer {
    fn api(&self) -> ApiKey {
        match self {
            Answer::CreateTopics(_) => ApiKey::CreateTopics,
            Answer::CreatePartitions(_) => ApiKey::CreatePartitions,
            Answer::DescribeConfigs(_) => ApiKey::DescribeConfigs,
            Answer::IncrementalAlterConfigs(_) => ApiKey::IncrementalAlterConfigs,
            Answer::DeleteRecords(_) => ApiKey::DeleteRecords,
        }
    }

    fn frame(&self, version: i16, correlation_id: i32) -> Result<Bytes, String> {
        let api = self.api();
        match self {
            Answer::CreateTopics(r) => response_frame(api, version, correlation_id, r),
            Answer::CreatePartitions(r) => response_frame(api, version, correlation_id, r),
            Answer::DescribeConfigs(r) => response_frame(api, version, correlation_id, r),
            Answer::IncrementalAlterConfigs(r) => response_frame(api, version, correlation_id, r),
            Answer::DeleteRecords(r) => response_frame(api, version, correlation_id, r),
        }
    }
}

struct Step {
    answer: Answer,
    /// Applied before the answer is written, so that the client's next
    /// Metadata request already sees it.
    then: Option<Layout>,
}

struct State {
    ports: Vec<u16>,
    apis: Vec<(ApiKey, i16, i16)>,
    topics: Vec<(&'static str, i32)>,
    layout: Mutex<Layout>,
    script: Mutex<VecDeque<Step>>,
    seen: mpsc::UnboundedSender<Seen>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn record(&self, node: i32, version: i16, request: Request) {
        let _ = self.seen.send(Seen {
            node,
            version,
            request,
        });
    }

    fn decode(api: ApiKey, body: Bytes, version: i16) -> Result<Request, String> {
        Ok(match api {
            ApiKey::Metadata => Request::Metadata(decode_body(body, version)?),
            ApiKey::CreateTopics => Request::CreateTopics(decode_body(body, version)?),
            ApiKey::CreatePartitions => Request::CreatePartitions(decode_body(body, version)?),
            ApiKey::DescribeConfigs => Request::DescribeConfigs(decode_body(body, version)?),
            ApiKey::IncrementalAlterConfigs => {
                Request::IncrementalAlterConfigs(decode_body(body, version)?)
            }
            ApiKey::DeleteRecords => Request::DeleteRecords(decode_body(body, version)?),
            other => return Err(format!("the peer does not serve {other:?}")),
        })
    }

    /// Records the request, then answers it; `Err` means hang up.
    fn answer(&self, node: i32, req: RequestFrame) -> Result<Bytes, String> {
        let api = req.api;
        let version = req.header.request_api_version;
        let corr = req.header.correlation_id;
        if api == ApiKey::ApiVersions {
            return response_frame(api, version, corr, &api_versions(&self.apis));
        }
        let request = Self::decode(api, req.body, version)
            .map_err(|e| format!("cannot decode {api:?} v{version} request: {e}"))?;
        self.record(node, version, request);
        if api == ApiKey::Metadata {
            let layout = *lock(&self.layout);
            let topics: Vec<PeerTopic> = self
                .topics
                .iter()
                .map(|&(name, partitions)| PeerTopic {
                    name: name.to_owned(),
                    partitions,
                    leader: layout.leader,
                })
                .collect();
            let body = metadata(&self.ports, layout.controller, &topics);
            return response_frame(api, version, corr, &body);
        }
        let step = lock(&self.script)
            .pop_front()
            .ok_or_else(|| format!("no answer scripted for {api:?}"))?;
        if step.answer.api() != api {
            return Err(format!(
                "a {:?} answer was scripted, but a {api:?} request came",
                step.answer.api()
            ));
        }
        if let Some(layout) = step.then {
            *lock(&self.layout) = layout;
        }
        step.answer.frame(version, corr)
    }
}

async fn serve(mut sock: TcpStream, node: i32, state: Arc<State>) {
    while let Some(req) = read_request(&mut sock).await {
        match state.answer(node, req) {
            Ok(frame) => {
                if sock.write_all(&frame).await.is_err() {
                    return;
                }
            }
            Err(why) => {
                state.record(node, -1, Request::Broken(why));
                return;
            }
        }
    }
}

struct AdminPeer {
    addr: String,
    state: Arc<State>,
    seen: mpsc::UnboundedReceiver<Seen>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for AdminPeer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl AdminPeer {
    async fn start(setup: Setup) -> AdminPeer {
        let mut listeners = Vec::new();
        for _ in 0..setup.nodes {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let mut apis = HANDSHAKE_APIS.to_vec();
        apis.extend(ADMIN_APIS.iter().map(|&api| {
            let v = setup.versions.of(api);
            (api, v, v)
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            ports: ports.clone(),
            apis,
            topics: setup.topics,
            layout: Mutex::new(setup.layout),
            script: Mutex::new(VecDeque::new()),
            seen: tx,
        });
        let tasks = listeners
            .into_iter()
            .enumerate()
            .map(|(node, listener)| {
                let state = state.clone();
                tokio::spawn(async move {
                    let mut conns = tokio::task::JoinSet::new();
                    while let Ok((sock, _)) = listener.accept().await {
                        conns.spawn(serve(sock, node as i32, state.clone()));
                    }
                })
            })
            .collect();
        AdminPeer {
            addr: format!("127.0.0.1:{}", ports[0]),
            state,
            seen: rx,
            tasks,
        }
    }

    /// A client bootstrapped from node 0, with what the handshake made the
    /// peer see already drained.
    async fn connect(&mut self) -> Cluster {
        let mut c = config(&self.addr);
        // Retries are part of what is tested; keep their backoff short.
        c.retry_backoff = Duration::from_millis(1);
        c.retry_backoff_max = Duration::from_millis(5);
        let cluster = Cluster::connect(c).await.unwrap();
        self.seen();
        cluster
    }

    fn answer(&self, answer: Answer) {
        self.push(answer, None);
    }

    /// Answers, and from then on names `layout`'s nodes in Metadata.
    fn answer_then(&self, answer: Answer, layout: Layout) {
        self.push(answer, Some(layout));
    }

    fn push(&self, answer: Answer, then: Option<Layout>) {
        lock(&self.state.script).push_back(Step { answer, then });
    }

    /// Drops the scripted answers no request used; returns how many.
    fn unused_answers(&self) -> usize {
        lock(&self.state.script).drain(..).count()
    }

    /// Everything the peer received since the last call. The peer records
    /// a request before answering it, so once a client call has returned,
    /// every request it made is here.
    fn seen(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Ok(s) = self.seen.try_recv() {
            out.push(s);
        }
        out
    }

    /// Like [`Self::seen`], without the Metadata requests.
    fn seen_admin(&mut self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| !matches!(s.request, Request::Metadata(_)))
            .collect()
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn tn(s: &str) -> TopicName {
    TopicName(sb(s))
}

fn topic_result(name: &str, code: i16, message: Option<&str>) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(tn(name))
        .with_error_code(code)
        .with_error_message(message.map(sb))
}

fn created(topics: Vec<CreatableTopicResult>) -> Answer {
    Answer::CreateTopics(CreateTopicsResponse::default().with_topics(topics))
}

fn partitions_created(topic: &str, code: i16, message: Option<&str>) -> Answer {
    let result = CreatePartitionsTopicResult::default()
        .with_name(tn(topic))
        .with_error_code(code)
        .with_error_message(message.map(sb));
    Answer::CreatePartitions(CreatePartitionsResponse::default().with_results(vec![result]))
}

fn configs_described(results: Vec<DescribeConfigsResult>) -> Answer {
    Answer::DescribeConfigs(DescribeConfigsResponse::default().with_results(results))
}

fn topic_configs(
    topic: &str,
    code: i16,
    message: Option<&str>,
    configs: Vec<DescribeConfigsResourceResult>,
) -> DescribeConfigsResult {
    DescribeConfigsResult::default()
        .with_resource_type(RESOURCE_TOPIC)
        .with_resource_name(sb(topic))
        .with_error_code(code)
        .with_error_message(message.map(sb))
        .with_configs(configs)
}

fn config_entry(
    name: &str,
    value: Option<&str>,
    source: i8,
    read_only: bool,
    sensitive: bool,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(sb(name))
        .with_value(value.map(sb))
        .with_config_source(source)
        .with_read_only(read_only)
        .with_is_sensitive(sensitive)
}

fn configs_altered(topic: &str, code: i16, message: Option<&str>) -> Answer {
    let response = AlterConfigsResourceResponse::default()
        .with_resource_type(RESOURCE_TOPIC)
        .with_resource_name(sb(topic))
        .with_error_code(code)
        .with_error_message(message.map(sb));
    Answer::IncrementalAlterConfigs(
        IncrementalAlterConfigsResponse::default().with_responses(vec![response]),
    )
}

/// `(partition, low watermark, error code)` per partition.
fn records_deleted(topic: &str, partitions: &[(i32, i64, i16)]) -> Answer {
    let partitions = partitions
        .iter()
        .map(|&(p, low, code)| {
            DeleteRecordsPartitionResult::default()
                .with_partition_index(p)
                .with_low_watermark(low)
                .with_error_code(code)
        })
        .collect();
    let result = DeleteRecordsTopicResult::default()
        .with_name(tn(topic))
        .with_partitions(partitions);
    Answer::DeleteRecords(DeleteRecordsResponse::default().with_topics(vec![result]))
}

fn new_topic(name: &str, partitions: i32, configs: &[(&str, &str)]) -> NewTopic {
    NewTopic {
        name: name.to_owned(),
        partitions,
        replication_factor: -1,
        configs: configs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// The code and message of a broker error, panicking on anything else.
fn broker_error(e: &KafkaError) -> (i16, Option<&str>) {
    match e {
        KafkaError::Broker { code, message, .. } => (*code, message.as_deref()),
        other => panic!("expected a broker error, got {other:?}"),
    }
}

/// The single admin request the peer saw, at the expected version.
fn only_request(seen: Vec<Seen>, api: ApiKey, versions: Versions) -> Seen {
    assert_eq!(seen.len(), 1, "expected one {api:?} request: {seen:#?}");
    let mut seen = seen;
    let s = seen.remove(0);
    assert_eq!(
        s.version,
        versions.of(api),
        "{api:?} version ({versions:?})"
    );
    s
}

#[tokio::test]
async fn create_topics_sends_every_topic_and_maps_results_in_input_order() {
    for versions in Versions::BOTH {
        let mut peer = AdminPeer::start(Setup {
            versions,
            ..Setup::default()
        })
        .await;
        let cluster = peer.connect().await;
        let topics = [
            new_topic(
                "a",
                3,
                &[("retention.ms", "1000"), ("cleanup.policy", "compact")],
            ),
            new_topic("b", 1, &[]),
        ];
        for validate_only in [true, false] {
            // Answered in the other order than asked, as a broker may.
            peer.answer(created(vec![
                topic_result("b", 0, None),
                topic_result("a", TOPIC_ALREADY_EXISTS, Some("Topic 'a' already exists.")),
            ]));
            let results = cluster.create_topics(&topics, validate_only).await.unwrap();

            let s = only_request(peer.seen_admin(), ApiKey::CreateTopics, versions);
            let Request::CreateTopics(req) = s.request else {
                panic!("{s:?}")
            };
            assert_eq!(req.validate_only, validate_only, "{versions:?}");
            assert_eq!(req.timeout_ms, 5000);
            let wire: Vec<_> = req
                .topics
                .iter()
                .map(|t| {
                    assert!(t.assignments.is_empty(), "{t:?}");
                    let configs: Vec<(String, Option<String>)> = t
                        .configs
                        .iter()
                        .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                        .collect();
                    (
                        t.name.0.to_string(),
                        t.num_partitions,
                        t.replication_factor,
                        configs,
                    )
                })
                .collect();
            assert_eq!(
                wire,
                vec![
                    (
                        "a".to_owned(),
                        3,
                        -1,
                        vec![
                            ("retention.ms".to_owned(), Some("1000".to_owned())),
                            ("cleanup.policy".to_owned(), Some("compact".to_owned())),
                        ]
                    ),
                    ("b".to_owned(), 1, -1, vec![]),
                ],
                "{versions:?}"
            );

            let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["a", "b"]);
            let err = results[0].1.as_ref().unwrap_err();
            assert_eq!(
                broker_error(err),
                (TOPIC_ALREADY_EXISTS, Some("Topic 'a' already exists."))
            );
            assert_eq!(err.code(), Some(TOPIC_ALREADY_EXISTS));
            assert!(results[1].1.is_ok(), "{results:?}");
        }
        cluster.close().await;
    }
}

#[tokio::test]
async fn create_topics_answer_missing_a_topic_is_a_protocol_error_naming_it() {
    let mut peer = AdminPeer::start(Setup::default()).await;
    let cluster = peer.connect().await;
    peer.answer(created(vec![topic_result("present", 0, None)]));
    let topics = [new_topic("present", 1, &[]), new_topic("absent", 1, &[])];
    let results = cluster.create_topics(&topics, false).await.unwrap();
    assert!(results[0].1.is_ok(), "{results:?}");
    assert_eq!(results[1].0, "absent");
    match &results[1].1 {
        Err(KafkaError::Protocol(m)) => assert!(m.contains("absent"), "{m}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    // A per-topic problem, not a reason to send the request again.
    assert_eq!(peer.seen_admin().len(), 1);
    cluster.close().await;
}

/// Node 0 answers NOT_CONTROLLER and hands the role to node 1: the client
/// must look the controller up again and resend there. Returns what the
/// peer saw during the call.
async fn after_controller_move<F, Fut, T>(api: ApiKey, moved: Answer, ok: Answer, call: F) -> T
where
    F: FnOnce(Cluster) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut peer = AdminPeer::start(Setup {
        nodes: 2,
        ..Setup::default()
    })
    .await;
    let cluster = peer.connect().await;
    peer.answer_then(
        moved,
        Layout {
            controller: 1,
            leader: 0,
        },
    );
    peer.answer(ok);
    let out = call(cluster.clone()).await;

    let seen = peer.seen();
    let summary: Vec<(i32, String)> = seen
        .iter()
        .map(|s| {
            let what = match &s.request {
                Request::Metadata(m) => format!("Metadata {:?}", m.topics.as_ref().map(Vec::len)),
                Request::Broken(why) => format!("broken: {why}"),
                _ => format!("{api:?}"),
            };
            (s.node, what)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, format!("{api:?}")),
            // The controller lookup: brokers only, no topics.
            (0, "Metadata Some(0)".to_owned()),
            (1, format!("{api:?}")),
        ]
    );
    assert_eq!(peer.unused_answers(), 0);
    cluster.close().await;
    out
}

#[tokio::test]
async fn not_controller_makes_create_topics_find_the_new_controller() {
    let results = after_controller_move(
        ApiKey::CreateTopics,
        created(vec![topic_result("n", NOT_CONTROLLER, None)]),
        created(vec![topic_result("n", 0, None)]),
        |c| async move { c.create_topics(&[new_topic("n", 1, &[])], false).await },
    )
    .await
    .unwrap();
    assert_eq!(results.len(), 1);
    assert!(results[0].1.is_ok(), "{results:?}");
}

#[tokio::test]
async fn not_controller_makes_create_partitions_find_the_new_controller() {
    after_controller_move(
        ApiKey::CreatePartitions,
        partitions_created("t", NOT_CONTROLLER, Some("not the controller")),
        partitions_created("t", 0, None),
        |c| async move { c.create_partitions("t", 6).await },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn create_partitions_sends_the_count_and_surfaces_errors() {
    for versions in Versions::BOTH {
        let mut peer = AdminPeer::start(Setup {
            versions,
            ..Setup::default()
        })
        .await;
        let cluster = peer.connect().await;

        peer.answer(partitions_created("t", 0, None));
        cluster.create_partitions("t", 6).await.unwrap();
        let s = only_request(peer.seen_admin(), ApiKey::CreatePartitions, versions);
        let Request::CreatePartitions(req) = s.request else {
            panic!("{s:?}")
        };
        assert_eq!(req.topics.len(), 1);
        assert_eq!(req.topics[0].name.0.as_str(), "t");
        assert_eq!(req.topics[0].count, 6);
        // Null lets the broker place the new partitions.
        assert_eq!(req.topics[0].assignments, None);
        assert!(!req.validate_only);
        assert_eq!(req.timeout_ms, 5000);

        let msg = "Topic currently has 6 partitions, which is higher than the requested 4.";
        peer.answer(partitions_created("t", INVALID_PARTITIONS, Some(msg)));
        let err = cluster.create_partitions("t", 4).await.unwrap_err();
        assert_eq!(broker_error(&err), (INVALID_PARTITIONS, Some(msg)));
        assert!(err.to_string().contains(msg), "{err}");
        let s = only_request(peer.seen_admin(), ApiKey::CreatePartitions, versions);
        let Request::CreatePartitions(req) = s.request else {
            panic!("{s:?}")
        };
        assert_eq!(req.topics[0].count, 4);
        cluster.close().await;
    }
}

#[tokio::test]
async fn describe_topic_configs_maps_entries() {
    for versions in Versions::BOTH {
        let mut peer = AdminPeer::start(Setup {
            versions,
            ..Setup::default()
        })
        .await;
        let cluster = peer.connect().await;
        peer.answer(configs_described(vec![
            // Another resource first: the client must pick its own.
            topic_configs("other", TOPIC_AUTHORIZATION_FAILED, None, vec![]),
            topic_configs(
                "t",
                0,
                None,
                vec![
                    config_entry(
                        "retention.ms",
                        Some("86400000"),
                        config_source::DYNAMIC_TOPIC_CONFIG,
                        false,
                        false,
                    ),
                    config_entry(
                        "cleanup.policy",
                        Some("delete"),
                        config_source::DEFAULT_CONFIG,
                        true,
                        false,
                    ),
                    config_entry(
                        "min.insync.replicas",
                        Some("2"),
                        config_source::STATIC_BROKER_CONFIG,
                        false,
                        false,
                    ),
                    config_entry(
                        "secret.thing",
                        None,
                        config_source::DYNAMIC_TOPIC_CONFIG,
                        false,
                        true,
                    ),
                ],
            ),
        ]));
        let entries = cluster.describe_topic_configs("t").await.unwrap();

        let s = only_request(peer.seen_admin(), ApiKey::DescribeConfigs, versions);
        let Request::DescribeConfigs(req) = s.request else {
            panic!("{s:?}")
        };
        assert_eq!(req.resources.len(), 1);
        assert_eq!(req.resources[0].resource_type, RESOURCE_TOPIC);
        assert_eq!(req.resources[0].resource_name.as_str(), "t");
        // Null asks for every config, defaults included.
        assert_eq!(req.resources[0].configuration_keys, None);

        let entry = |name: &str, value: Option<&str>, is_default, read_only, sensitive, source| {
            ConfigEntry {
                name: name.to_owned(),
                value: value.map(str::to_owned),
                is_default,
                read_only,
                sensitive,
                source,
            }
        };
        assert_eq!(
            entries,
            vec![
                entry("retention.ms", Some("86400000"), false, false, false, 1),
                entry("cleanup.policy", Some("delete"), true, true, false, 5),
                entry("min.insync.replicas", Some("2"), true, false, false, 4),
                entry("secret.thing", None, false, false, true, 1),
            ],
            "{versions:?}"
        );
        cluster.close().await;
    }
}

#[tokio::test]
async fn alter_topic_configs_sets_each_value_and_surfaces_errors() {
    for versions in Versions::BOTH {
        let mut peer = AdminPeer::start(Setup {
            versions,
            ..Setup::default()
        })
        .await;
        let cluster = peer.connect().await;
        let set = [
            ("retention.ms".to_owned(), "1000".to_owned()),
            ("cleanup.policy".to_owned(), "compact".to_owned()),
        ];

        peer.answer(configs_altered("t", 0, None));
        cluster.alter_topic_configs("t", &set).await.unwrap();
        let s = only_request(peer.seen_admin(), ApiKey::IncrementalAlterConfigs, versions);
        let Request::IncrementalAlterConfigs(req) = s.request else {
            panic!("{s:?}")
        };
        assert!(!req.validate_only);
        assert_eq!(req.resources.len(), 1);
        let res = &req.resources[0];
        assert_eq!(res.resource_type, RESOURCE_TOPIC);
        assert_eq!(res.resource_name.as_str(), "t");
        let wire: Vec<(String, i8, Option<String>)> = res
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        assert_eq!(
            wire,
            vec![
                ("retention.ms".to_owned(), OP_SET, Some("1000".to_owned())),
                (
                    "cleanup.policy".to_owned(),
                    OP_SET,
                    Some("compact".to_owned())
                ),
            ]
        );

        let msg = "Invalid value compact2 for configuration cleanup.policy";
        peer.answer(configs_altered("t", INVALID_CONFIG, Some(msg)));
        let err = cluster.alter_topic_configs("t", &set).await.unwrap_err();
        assert_eq!(broker_error(&err), (INVALID_CONFIG, Some(msg)));
        only_request(peer.seen_admin(), ApiKey::IncrementalAlterConfigs, versions);
        cluster.close().await;
    }
}

#[tokio::test]
async fn delete_records_goes_to_the_leader_and_returns_the_low_watermark() {
    for versions in Versions::BOTH {
        let mut peer = AdminPeer::start(Setup {
            nodes: 2,
            layout: Layout {
                controller: 0,
                leader: 1,
            },
            versions,
            ..Setup::default()
        })
        .await;
        let cluster = peer.connect().await;

        // The log start was already past the offset asked for: the answer,
        // not the request, says where it is now.
        peer.answer(records_deleted("t", &[(1, 9, 0), (2, 50, 0)]));
        assert_eq!(cluster.delete_records("t", 2, 42).await.unwrap(), 50);
        let s = only_request(peer.seen_admin(), ApiKey::DeleteRecords, versions);
        assert_eq!(s.node, 1, "sent to a broker that does not lead t/2");
        let Request::DeleteRecords(req) = s.request else {
            panic!("{s:?}")
        };
        assert_eq!(req.timeout_ms, 5000);
        assert_eq!(req.topics.len(), 1);
        assert_eq!(req.topics[0].name.0.as_str(), "t");
        let parts: Vec<(i32, i64)> = req.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.offset))
            .collect();
        assert_eq!(parts, [(2, 42)]);

        for code in [POLICY_VIOLATION, OFFSET_OUT_OF_RANGE] {
            peer.answer(records_deleted("t", &[(2, -1, code)]));
            let err = cluster.delete_records("t", 2, 42).await.unwrap_err();
            assert_eq!(err.code(), Some(code), "{err:?}");
            assert_eq!(err.is_offset_out_of_range(), code == OFFSET_OUT_OF_RANGE);
            only_request(peer.seen_admin(), ApiKey::DeleteRecords, versions);
        }
        cluster.close().await;
    }
}

#[tokio::test]
async fn delete_records_follows_a_moved_leader() {
    let mut peer = AdminPeer::start(Setup {
        nodes: 2,
        ..Setup::default()
    })
    .await;
    let cluster = peer.connect().await;
    peer.answer_then(
        records_deleted("t", &[(0, -1, NOT_LEADER_OR_FOLLOWER)]),
        Layout {
            controller: 0,
            leader: 1,
        },
    );
    peer.answer(records_deleted("t", &[(0, 10, 0)]));
    assert_eq!(cluster.delete_records("t", 0, 10).await.unwrap(), 10);
    let nodes: Vec<i32> = peer.seen_admin().iter().map(|s| s.node).collect();
    assert_eq!(nodes, [0, 1]);
    cluster.close().await;
}

#[tokio::test]
async fn non_retriable_errors_are_not_retried() {
    let mut peer = AdminPeer::start(Setup::default()).await;
    let cluster = peer.connect().await;
    for code in [BROKER_NOT_AVAILABLE, TOPIC_AUTHORIZATION_FAILED] {
        // Each failing answer is followed by a success: a retry would turn
        // the call into a success and use the second answer.
        let cases: [(ApiKey, Answer, Answer); 5] = [
            (
                ApiKey::CreateTopics,
                created(vec![topic_result("t", code, None)]),
                created(vec![topic_result("t", 0, None)]),
            ),
            (
                ApiKey::CreatePartitions,
                partitions_created("t", code, None),
                partitions_created("t", 0, None),
            ),
            (
                ApiKey::DescribeConfigs,
                configs_described(vec![topic_configs("t", code, None, vec![])]),
                configs_described(vec![topic_configs("t", 0, None, vec![])]),
            ),
            (
                ApiKey::IncrementalAlterConfigs,
                configs_altered("t", code, None),
                configs_altered("t", 0, None),
            ),
            (
                ApiKey::DeleteRecords,
                records_deleted("t", &[(0, -1, code)]),
                records_deleted("t", &[(0, 5, 0)]),
            ),
        ];
        for (api, failure, success) in cases {
            peer.answer(failure);
            peer.answer(success);
            let err = match api {
                ApiKey::CreateTopics => {
                    let mut r = cluster
                        .create_topics(&[new_topic("t", 1, &[])], false)
                        .await
                        .unwrap();
                    r.remove(0).1.unwrap_err()
                }
                ApiKey::CreatePartitions => cluster.create_partitions("t", 6).await.unwrap_err(),
                ApiKey::DescribeConfigs => cluster.describe_topic_configs("t").await.unwrap_err(),
                ApiKey::IncrementalAlterConfigs => cluster
                    .alter_topic_configs("t", &[("retention.ms".into(), "1".into())])
                    .await
                    .unwrap_err(),
                _ => cluster.delete_records("t", 0, 5).await.unwrap_err(),
            };
            assert_eq!(err.code(), Some(code), "{api:?}: {err:?}");
            assert!(!err.is_retriable(), "{api:?}: {err:?}");
            only_request(peer.seen_admin(), api, Versions::Highest);
            assert_eq!(peer.unused_answers(), 1, "{api:?} used the second answer");
        }
    }
    cluster.close().await;
}
