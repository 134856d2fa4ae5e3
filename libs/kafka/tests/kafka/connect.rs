use std::time::{Duration, Instant};

use cutover_kafka::{ApiKey, Cluster, KafkaError};

use crate::common::{config, connect, mock};

async fn check_cluster(brokers: i32) {
    let mock = mock(brokers);
    mock.create_topic("t1", 3, brokers).unwrap();
    let cluster = connect(&mock).await;

    // ApiVersions negotiated within what both sides support. The mock caps
    // ApiVersions at v2, so this also exercises the v3 -> v0 fallback.
    for api in [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::Metadata,
        ApiKey::InitProducerId,
        ApiKey::ApiVersions,
    ] {
        assert!(cluster.supports(api), "{api:?} should be supported");
    }
    assert_eq!(cluster.api_version(ApiKey::Fetch), Some(16));
    assert_eq!(cluster.api_version(ApiKey::Produce), Some(10));
    assert_eq!(cluster.api_version(ApiKey::Metadata), Some(12));

    let md = cluster.metadata(None).await.unwrap();
    assert_eq!(md.brokers.len(), brokers as usize);
    assert!(md.controller_id >= 0);
    let t = md.topics.iter().find(|t| t.name == "t1").expect("topic t1");
    assert_eq!(t.partitions.len(), 3);
    assert!(
        !t.topic_id.is_nil(),
        "mock reports topic ids at Metadata v12"
    );
    for (i, p) in t.partitions.iter().enumerate() {
        assert_eq!(p.partition, i as i32);
        assert!(md.brokers.iter().any(|b| b.node_id == p.leader));
        assert_eq!(p.replicas.len(), brokers as usize);
    }

    let t1 = cluster.topic("t1").await.unwrap().expect("t1");
    assert_eq!(t1.partitions.len(), 3);
    assert_eq!(cluster.produce_version("t1", 0), 10);
    assert!(cluster.topic("does-not-exist").await.unwrap().is_none());
    cluster.close().await;
    assert!(matches!(
        cluster.metadata(None).await,
        Err(KafkaError::Closed)
    ));
}

#[tokio::test]
async fn connect_metadata_and_versions_one_broker() {
    check_cluster(1).await;
}

#[tokio::test]
async fn connect_metadata_and_versions_three_brokers() {
    check_cluster(3).await;
}

#[tokio::test]
async fn connect_to_dead_address_names_it() {
    // A port nobody listens on: connection refused.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let err = Cluster::connect(config(&addr)).await.unwrap_err();
    assert!(matches!(err, KafkaError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr), "{err}");
    assert!(err.is_retriable());

    // Two dead addresses: both named.
    let other = "127.0.0.1:1".to_owned();
    let err = Cluster::connect(config(&format!("{addr},{other}")))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&addr) && msg.contains(&other), "{msg}");
}

#[tokio::test]
async fn connect_respects_connect_timeout() {
    // A listener that never accepts, with its accept queue filled: further
    // SYNs are dropped and a connect attempt hangs until connect_timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let _listener = socket.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let c = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(&addr),
        )
        .await;
        if let Ok(Ok(s)) = c {
            fillers.push(s);
        }
    }

    let mut c = config(&addr);
    c.connect_timeout = Duration::from_millis(300);
    let start = Instant::now();
    let err = Cluster::connect(c).await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(matches!(err, KafkaError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr), "{err}");
}

#[tokio::test]
async fn empty_bootstrap_is_an_error() {
    let err = Cluster::connect(config("")).await.unwrap_err();
    assert!(matches!(err, KafkaError::Connect { .. }));
}
