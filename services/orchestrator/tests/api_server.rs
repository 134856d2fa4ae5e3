//! The public gRPC server as clients see it, in process on a real etcd:
//! metrics by method and code, the concurrency limits and the timeout.
//!
//! A call is held in progress deterministically by a "silent broker": a
//! TCP listener that accepts the orchestrator's Kafka connection and never
//! answers. Accepting is the event that says the call is in progress and
//! holds its slots; the connection closing is the event that says the
//! orchestrator dropped the call (its Kafka client closes with it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cutover_coord::testing::EtcdServer;
use cutover_coord::{Coord, CoordConfig};
use cutover_model::{
    keys, ClusterSpec, Link, LinkOptions, MirrorState, MirrorTopic, TargetTopicSettings,
};
use cutover_orchestrator::{server, Orchestrator, OrchestratorConfig};
use cutover_proto::v1 as pb;
use cutover_telemetry::GrpcServerMetrics;
use pb::orchestrator_client::OrchestratorClient;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

struct Server {
    _etcd: EtcdServer,
    orch: Arc<Orchestrator>,
    registry: prometheus::Registry,
    client: OrchestratorClient<Channel>,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn config(etcd: &str) -> OrchestratorConfig {
    OrchestratorConfig {
        id: Some("test".into()),
        etcd: vec![etcd.to_owned()],
        etcd_prefix: "/cutover-test/v1".into(),
        grpc_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        lease_ttl_secs: 2,
        // Far longer than any test: a silent broker holds a call until the
        // test lets it go.
        kafka_timeout_ms: 120_000,
        request_timeout_ms: 120_000,
        verify_timeout_secs: 3600,
        max_concurrent_requests: 64,
        max_concurrent_verifies: 2,
        sync_interval_ms: 1000,
        otlp_endpoint: None,
        json_logs: false,
    }
}

async fn serve(tune: impl FnOnce(&mut OrchestratorConfig)) -> Server {
    let etcd = tokio::task::spawn_blocking(|| EtcdServer::start(None))
        .await
        .expect("etcd launcher thread")
        .expect("start etcd");
    let mut cfg = config(etcd.endpoint());
    tune(&mut cfg);
    let coord = Coord::connect(CoordConfig {
        endpoints: cfg.etcd.clone(),
        prefix: cfg.etcd_prefix.clone(),
        lease_ttl: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .expect("connect to etcd");
    let stop = CancellationToken::new();
    let orch = Arc::new(Orchestrator {
        id: "test".into(),
        cfg,
        coord,
        shutdown: stop.clone(),
        tasks: tokio_util::task::TaskTracker::new(),
    });
    let registry =
        prometheus::Registry::new_custom(Some("cutover_orchestrator".into()), None).expect("reg");
    let metrics = GrpcServerMetrics::register(&registry).expect("metrics");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let served = orch.clone();
    let until = stop.clone().cancelled_owned();
    tokio::spawn(async move { server::serve(served, &metrics, incoming, until).await });
    let client = OrchestratorClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the server");
    Server {
        _etcd: etcd,
        orch,
        registry,
        client,
        stop,
    }
}

/// A TCP listener that accepts connections and never answers; reports each
/// accepted connection, and each one the peer closed.
struct SilentBroker {
    addr: String,
    accepted: mpsc::UnboundedReceiver<()>,
    closed: mpsc::UnboundedReceiver<()>,
}

async fn silent_broker() -> SilentBroker {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (accepted_tx, accepted) = mpsc::unbounded_channel();
    let (closed_tx, closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = accepted_tx.send(());
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                let _ = closed_tx.send(());
            });
        }
    });
    SilentBroker {
        addr,
        accepted,
        closed,
    }
}

/// Bounds a call that must be answered at once, so that a server that
/// queues or hangs instead fails the test quickly.
async fn at_once<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("answered within 20 s")
}

fn cluster(addr: &str) -> ClusterSpec {
    ClusterSpec {
        bootstrap_servers: vec![addr.to_string()],
        properties: BTreeMap::new(),
    }
}

/// A link whose source is `source` and a mirror topic `t` on it, stored
/// as `link create` and `mirror add` store them.
async fn link_with_mirror(orch: &Orchestrator, source: &str) {
    let link = Link {
        name: "l1".into(),
        source: cluster(source),
        target: cluster("127.0.0.1:1"),
        options: LinkOptions::default(),
        created_at_ms: 1,
    };
    assert!(orch
        .coord
        .create(&keys::link("l1"), &link)
        .await
        .expect("etcd"));
    let mirror = MirrorTopic {
        link: "l1".into(),
        topic: "t".into(),
        partitions: 1,
        state: MirrorState::Mirroring,
        reason: String::new(),
        created_at_ms: 1,
        target: TargetTopicSettings::default(),
        switches: 0,
    };
    assert!(orch
        .coord
        .create(&keys::mirror("l1", "t"), &mirror)
        .await
        .expect("etcd"));
}

fn verify_request(link: &str) -> pb::VerifyRequest {
    pb::VerifyRequest {
        link: link.into(),
        topic: "t".into(),
        ..Default::default()
    }
}

fn create_link_request(source: &str) -> pb::CreateLinkRequest {
    pb::CreateLinkRequest {
        name: "new".into(),
        source: Some(pb::ClusterSpec {
            bootstrap_servers: vec![source.into()],
            properties: Default::default(),
        }),
        target: Some(pb::ClusterSpec {
            bootstrap_servers: vec!["127.0.0.1:1".into()],
            properties: Default::default(),
        }),
        options: None,
    }
}

fn metrics_text(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("encode");
    String::from_utf8(buf).expect("utf-8")
}

/// The value of one sample, e.g. `name{a="1",b="2"}`.
fn sample(text: &str, name: &str, method: &str, code: Option<&str>) -> Option<f64> {
    let labels = match code {
        Some(c) => format!(
            r#"{name}{{grpc_code="{c}",grpc_method="{method}",grpc_service="cutover.v1.Orchestrator"}} "#
        ),
        None => {
            format!(r#"{name}{{grpc_method="{method}",grpc_service="cutover.v1.Orchestrator"}} "#)
        }
    };
    text.lines()
        .find(|l| l.starts_with(&labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

const HANDLED: &str = "cutover_orchestrator_grpc_server_handled_total";
const HANDLING_COUNT: &str = "cutover_orchestrator_grpc_server_handling_seconds_count";
const IN_FLIGHT: &str = "cutover_orchestrator_grpc_server_in_flight";

#[tokio::test]
async fn calls_are_counted_by_method_and_grpc_code() {
    let mut s = serve(|_| {}).await;
    s.client
        .list_links(pb::ListLinksRequest {})
        .await
        .expect("list links");
    for _ in 0..2 {
        let e = s
            .client
            .get_link(pb::GetLinkRequest {
                name: "absent".into(),
            })
            .await
            .expect_err("no such link");
        assert_eq!(e.code(), tonic::Code::NotFound);
    }
    let t = metrics_text(&s.registry);
    assert_eq!(
        sample(&t, HANDLED, "ListLinks", Some("OK")),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, HANDLED, "GetLink", Some("NOT_FOUND")),
        Some(2.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, HANDLING_COUNT, "GetLink", Some("NOT_FOUND")),
        Some(2.0),
        "{t}"
    );
    assert_eq!(sample(&t, IN_FLIGHT, "GetLink", None), Some(0.0), "{t}");
}

#[tokio::test]
async fn calls_beyond_the_limits_get_resource_exhausted_at_once() {
    let mut s = serve(|c| {
        c.max_concurrent_requests = 2;
        c.max_concurrent_verifies = 1;
    })
    .await;
    let mut broker = silent_broker().await;
    link_with_mirror(&s.orch, &broker.addr).await;

    // The first Verify waits on the silent source: it holds the only
    // Verify slot and one of the two overall.
    let mut client = s.client.clone();
    let held_verify = tokio::spawn(async move { client.verify(verify_request("l1")).await });
    at_once(broker.accepted.recv())
        .await
        .expect("the Verify connects");

    let refused = at_once(s.client.verify(verify_request("l1")))
        .await
        .expect_err("a second Verify is refused");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("--max-concurrent-verifies 1")
            && refused.message().contains("retry later"),
        "{}",
        refused.message()
    );
    assert_eq!(
        refused
            .metadata()
            .get("cutover-retriable")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );

    // A second call of another method takes the other overall slot...
    let mut client = s.client.clone();
    let source = broker.addr.clone();
    let held_create =
        tokio::spawn(async move { client.create_link(create_link_request(&source)).await });
    at_once(broker.accepted.recv())
        .await
        .expect("the CreateLink connects");
    // ... and a third call of any method is refused.
    let refused = at_once(s.client.list_links(pb::ListLinksRequest {}))
        .await
        .expect_err("beyond the overall limit");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("--max-concurrent-requests 2"),
        "{}",
        refused.message()
    );

    // The client of the first Verify goes away: the orchestrator drops the
    // call (its Kafka connection closes) and its slots are free again.
    held_verify.abort();
    at_once(broker.closed.recv())
        .await
        .expect("the Verify is dropped");
    let e = at_once(s.client.verify(verify_request("absent")))
        .await
        .expect_err("no such link");
    assert_eq!(e.code(), tonic::Code::NotFound, "admitted: {e:?}");

    let t = metrics_text(&s.registry);
    assert_eq!(
        sample(&t, HANDLED, "Verify", Some("RESOURCE_EXHAUSTED")),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, HANDLED, "ListLinks", Some("RESOURCE_EXHAUSTED")),
        Some(1.0),
        "{t}"
    );
    assert_eq!(sample(&t, IN_FLIGHT, "CreateLink", None), Some(1.0), "{t}");
    held_create.abort();
}

#[tokio::test]
async fn a_call_past_the_request_timeout_gets_deadline_exceeded() {
    let mut s = serve(|c| c.request_timeout_ms = 300).await;
    let mut broker = silent_broker().await;
    let e = at_once(s.client.create_link(create_link_request(&broker.addr)))
        .await
        .expect_err("the source never answers");
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
    assert!(
        e.message().contains("CreateLink") && e.message().contains("--request-timeout-ms"),
        "{}",
        e.message()
    );
    // The call's work was stopped, not left running.
    at_once(broker.accepted.recv())
        .await
        .expect("it had connected");
    at_once(broker.closed.recv())
        .await
        .expect("its connection closed");
    let t = metrics_text(&s.registry);
    assert_eq!(
        sample(&t, HANDLED, "CreateLink", Some("DEADLINE_EXCEEDED")),
        Some(1.0),
        "{t}"
    );
}
