//! `mirror add` against `link delete` on a real etcd: the guards of
//! `cutover_orchestrator::guards`, without Kafka (mirror documents are
//! stored the way `mirror add` stores them after its checks).

use std::collections::BTreeMap;
use std::time::Duration;

use cutover_coord::testing::EtcdServer;
use cutover_coord::{Coord, CoordConfig, Versioned};
use cutover_model::{
    keys, ClusterSpec, Link, LinkOptions, MirrorState, MirrorTopic, TargetTopicSettings,
};
use cutover_orchestrator::error::ApiError;
use cutover_orchestrator::guards::delete_link_txn;
use cutover_orchestrator::{Orchestrator, OrchestratorConfig};
use tokio_util::sync::CancellationToken;

async fn orchestrator() -> (EtcdServer, Orchestrator) {
    let etcd = tokio::task::spawn_blocking(|| EtcdServer::start(None))
        .await
        .expect("etcd launcher thread")
        .expect("start etcd");
    let cfg = OrchestratorConfig {
        id: Some("test".into()),
        etcd: vec![etcd.endpoint().to_owned()],
        etcd_prefix: "/cutover-test/v1".into(),
        grpc_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        lease_ttl_secs: 2,
        kafka_timeout_ms: 1000,
        request_timeout_ms: 60_000,
        verify_timeout_secs: 3600,
        max_concurrent_requests: 64,
        max_concurrent_verifies: 2,
        sync_interval_ms: 1000,
        otlp_endpoint: None,
        json_logs: false,
    };
    let coord = Coord::connect(CoordConfig {
        endpoints: cfg.etcd.clone(),
        prefix: cfg.etcd_prefix.clone(),
        lease_ttl: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .expect("connect to etcd");
    let orch = Orchestrator {
        id: "test".into(),
        cfg,
        coord,
        shutdown: CancellationToken::new(),
        tasks: tokio_util::task::TaskTracker::new(),
    };
    (etcd, orch)
}

fn link(created_at_ms: i64) -> Link {
    Link {
        name: "l1".into(),
        source: ClusterSpec {
            bootstrap_servers: vec!["127.0.0.1:1".into()],
            properties: BTreeMap::new(),
        },
        target: ClusterSpec {
            bootstrap_servers: vec!["127.0.0.1:2".into()],
            properties: BTreeMap::new(),
        },
        options: LinkOptions::default(),
        created_at_ms,
    }
}

fn mirror(topic: &str) -> MirrorTopic {
    MirrorTopic {
        link: "l1".into(),
        topic: topic.into(),
        partitions: 3,
        state: MirrorState::Mirroring,
        reason: String::new(),
        created_at_ms: 1,
        target: TargetTopicSettings::default(),
        switches: 0,
    }
}

async fn create_link(orch: &Orchestrator, created_at_ms: i64) -> Versioned<Link> {
    assert!(orch
        .coord
        .create(&keys::link("l1"), &link(created_at_ms))
        .await
        .unwrap());
    orch.link_versioned("l1").await.unwrap()
}

async fn stored_mirrors(orch: &Orchestrator) -> Vec<String> {
    orch.mirrors_of("l1")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.topic)
        .collect()
}

#[tokio::test]
async fn mirrors_are_never_stored_under_a_deleted_or_replaced_link() {
    let (_etcd, orch) = orchestrator().await;

    // mirror add read the link; link delete ran before the add stored.
    let read = create_link(&orch, 1).await;
    orch.delete_link("l1").await.unwrap();
    let err = orch.store_mirrors(&read, &[mirror("a")]).await.unwrap_err();
    assert!(err.to_string().contains("was deleted"), "{err}");
    assert!(stored_mirrors(&orch).await.is_empty());

    // Deleted and created again (maybe with other clusters) in between.
    let read = create_link(&orch, 1).await;
    orch.delete_link("l1").await.unwrap();
    create_link(&orch, 2).await;
    let err = orch.store_mirrors(&read, &[mirror("a")]).await.unwrap_err();
    assert!(matches!(err, ApiError::Conflict(_)), "{err}");
    assert!(stored_mirrors(&orch).await.is_empty());
}

#[tokio::test]
async fn link_delete_fails_once_a_mirror_was_stored_after_it_read_the_link() {
    let (_etcd, orch) = orchestrator().await;
    let read = create_link(&orch, 1).await;

    // link delete read the link (revision `read`) and listed no mirror;
    // then a mirror add stored.
    orch.store_mirrors(&read, &[mirror("a")]).await.unwrap();
    let (guards, writes) = delete_link_txn("l1", read.mod_revision);
    assert!(!orch.coord.txn(&guards, &writes).await.unwrap());
    assert!(orch.get_link("l1").await.is_ok());

    // And a delete from scratch sees the mirror.
    let err = orch.delete_link("l1").await.unwrap_err();
    assert!(err.to_string().contains("remove them first"), "{err}");
}

#[tokio::test]
async fn concurrent_mirror_adds_on_one_link_both_store() {
    let (_etcd, orch) = orchestrator().await;
    let read = create_link(&orch, 1).await;
    orch.store_mirrors(&read, &[mirror("a")]).await.unwrap();
    // Read before the first add stored: its revision is stale, the link
    // the same.
    orch.store_mirrors(&read, &[mirror("b")]).await.unwrap();
    assert_eq!(stored_mirrors(&orch).await, vec!["a", "b"]);

    let err = orch.store_mirrors(&read, &[mirror("a")]).await.unwrap_err();
    assert!(matches!(err, ApiError::AlreadyExists { .. }), "{err}");

    // The link document is unchanged by the adds.
    assert_eq!(orch.get_link("l1").await.unwrap(), link(1));
}
