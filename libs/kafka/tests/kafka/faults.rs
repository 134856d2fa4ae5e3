use std::time::Duration;

use cutover_kafka::{ApiKey, Cluster, FetchOptions, KafkaError, NewTopic, OffsetSpec};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::common::{config, connect, encode_batch, eventually, mock, parse_batches};

fn opts() -> FetchOptions {
    FetchOptions {
        max_wait: Duration::from_millis(50),
        ..FetchOptions::default()
    }
}

fn one_record(i: u8) -> bytes::Bytes {
    encode_batch(&[(Some(vec![i]), Some(vec![i; 10]))], 1_700_000_000_000)
}

async fn leader_of(cluster: &Cluster, topic: &str) -> i32 {
    cluster.topic(topic).await.unwrap().unwrap().partitions[0].leader
}

#[tokio::test]
async fn leader_change_mid_stream_recovers() {
    let mock = mock(3);
    mock.create_topic("lc", 1, 3).unwrap();
    let cluster = connect(&mock).await;
    let t = Duration::from_secs(5);

    for i in 0..5u8 {
        let r = cluster
            .send_produce("lc", 0, one_record(i), t)
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(r.base_offset, i as i64);
    }

    let old = leader_of(&cluster, "lc").await;
    let new = (old % 3) + 1;
    mock.partition_leader("lc", 0, Some(new)).unwrap();

    // The cached leader is now wrong: the first produce fails with a
    // retriable error that asks for a metadata refresh...
    let err = cluster
        .send_produce("lc", 0, one_record(5), t)
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(6), "{err:?}");
    assert!(err.is_retriable() && err.needs_metadata_refresh());
    // ...and the next one goes to the new leader, offsets continuing.
    let r = cluster
        .send_produce("lc", 0, one_record(5), t)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(r.base_offset, 5);
    assert_eq!(leader_of(&cluster, "lc").await, new);

    // Move the leader again; fetch recovers on its own (stale epoch /
    // not leader, then refresh and retry).
    let newer = (new % 3) + 1;
    mock.partition_leader("lc", 0, Some(newer)).unwrap();
    let f = cluster.fetch("lc", 0, 0, &opts()).await.unwrap();
    assert_eq!(f.high_watermark, 6);
    assert_eq!(parse_batches(&f.records)[0].base_offset, 0);
    let latest = cluster
        .list_offsets("lc", &[0], OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(latest[0].1.clone().unwrap(), 6);
}

#[tokio::test]
async fn broker_down_then_up() {
    let mock = mock(3);
    mock.create_topic("bd", 1, 3).unwrap();
    let mut c = config(&mock.bootstrap_servers());
    c.retries = 1;
    let cluster = Cluster::connect(c).await.unwrap();
    let t = Duration::from_secs(5);
    cluster
        .send_produce("bd", 0, one_record(0), t)
        .await
        .unwrap()
        .await
        .unwrap();
    cluster.fetch("bd", 0, 0, &opts()).await.unwrap();

    let leader = leader_of(&cluster, "bd").await;
    mock.broker_down(leader).unwrap();

    let err = cluster.fetch("bd", 0, 0, &opts()).await.unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
    assert!(err.needs_metadata_refresh(), "{err:?}");
    let err = match cluster.send_produce("bd", 0, one_record(1), t).await {
        Ok(h) => h.await.unwrap_err(),
        Err(e) => e,
    };
    assert!(err.is_retriable(), "{err:?}");
    let r = cluster
        .list_offsets("bd", &[0], OffsetSpec::Latest)
        .await
        .unwrap();
    assert!(r[0].1.as_ref().unwrap_err().is_retriable());

    mock.broker_up(leader).unwrap();
    let ok = eventually(Duration::from_secs(10), || async {
        cluster.fetch("bd", 0, 0, &opts()).await.is_ok()
    })
    .await;
    assert!(ok, "fetch did not recover after broker_up");
    let r = cluster
        .send_produce("bd", 0, one_record(1), t)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(r.base_offset, 1);
}

#[tokio::test]
async fn injected_errors_surface_with_their_code() {
    let mock = mock(1);
    mock.create_topic("ie", 1, 1).unwrap();
    let cluster = connect(&mock).await;
    let t = Duration::from_secs(5);

    // Produce is never retried by the client: the caller sees the error.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS],
    );
    let err = cluster
        .send_produce("ie", 0, one_record(0), t)
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(19), "{err:?}");
    assert!(err.is_retriable());
    assert!(!err.needs_metadata_refresh());
    assert!(err.to_string().contains("NOT_ENOUGH_REPLICAS"), "{err}");
    let r = cluster
        .send_produce("ie", 0, one_record(0), t)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(r.base_offset, 0);

    // A retriable error that is not about routing is reported, per partition.
    mock.request_errors(
        RDKafkaApiKey::ListOffsets,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT],
    );
    let r = cluster
        .list_offsets("ie", &[0], OffsetSpec::Latest)
        .await
        .unwrap();
    let err = r[0].1.clone().unwrap_err();
    assert_eq!(err.code(), Some(7), "{err:?}");
    assert!(err.is_retriable());

    // Routing errors on idempotent requests are absorbed by a refresh.
    mock.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ],
    );
    let f = cluster.fetch("ie", 0, 0, &opts()).await.unwrap();
    assert_eq!(f.high_watermark, 1);
}

#[tokio::test]
async fn init_producer_id_returns_a_pid() {
    let mock = mock(1);
    let cluster = connect(&mock).await;
    let (pid, epoch) = cluster.init_producer_id(None).await.unwrap();
    assert!(pid >= 0, "pid {pid}");
    assert!(epoch >= 0, "epoch {epoch}");
    let (pid2, _) = cluster.init_producer_id(None).await.unwrap();
    assert_ne!(pid, pid2);
}

#[tokio::test]
async fn unsupported_admin_apis_fail_clearly() {
    let mock = mock(1);
    mock.create_topic("adm", 1, 1).unwrap();
    let cluster = connect(&mock).await;

    for api in [
        ApiKey::CreateTopics,
        ApiKey::CreatePartitions,
        ApiKey::DescribeConfigs,
        ApiKey::IncrementalAlterConfigs,
        ApiKey::DeleteRecords,
    ] {
        assert!(!cluster.supports(api), "{api:?}");
    }

    let check = |r: Result<(), KafkaError>, api: ApiKey| {
        let err = r.unwrap_err();
        match &err {
            KafkaError::UnsupportedVersion { api: a, broker } => {
                assert_eq!(*a, api);
                assert!(!broker.is_empty());
            }
            other => panic!("expected UnsupportedVersion for {api:?}, got {other:?}"),
        }
        assert!(err.to_string().contains(&format!("{api:?}")), "{err}");
        assert!(!err.is_retriable());
    };
    let new = NewTopic {
        name: "x".into(),
        partitions: 1,
        replication_factor: -1,
        configs: vec![("retention.ms".into(), "1000".into())],
    };
    check(
        cluster.create_topics(&[new], false).await.map(|_| ()),
        ApiKey::CreateTopics,
    );
    check(
        cluster.create_partitions("adm", 2).await,
        ApiKey::CreatePartitions,
    );
    check(
        cluster.describe_topic_configs("adm").await.map(|_| ()),
        ApiKey::DescribeConfigs,
    );
    check(
        cluster
            .alter_topic_configs("adm", &[("retention.ms".into(), "1".into())])
            .await,
        ApiKey::IncrementalAlterConfigs,
    );
    check(
        cluster.delete_records("adm", 0, 0).await.map(|_| ()),
        ApiKey::DeleteRecords,
    );

    // Nothing was sent (the mock would have dropped the connection): the
    // cluster still works.
    assert!(cluster.metadata(None).await.is_ok());
}

#[tokio::test]
async fn request_timeout_drops_connection_and_close_fails_in_flight() {
    let mock = mock(1);
    mock.create_topic("rt", 1, 1).unwrap();
    let mut c = config(&mock.bootstrap_servers());
    c.request_timeout = Duration::from_millis(300);
    c.retries = 0;
    let cluster = Cluster::connect(c).await.unwrap();
    cluster.topic("rt").await.unwrap().unwrap();

    mock.broker_round_trip_time(1, Duration::from_millis(1500))
        .unwrap();
    let err = cluster.fetch("rt", 0, 0, &opts()).await.unwrap_err();
    assert!(matches!(err, KafkaError::Timeout { .. }), "{err:?}");
    assert!(err.is_retriable());

    // The timed-out connection was dropped; a new one works once the
    // broker is fast again.
    mock.broker_round_trip_time(1, Duration::ZERO).unwrap();
    cluster.fetch("rt", 0, 0, &opts()).await.unwrap();

    // A request stuck on a slow broker fails with Closed when the client
    // closes, and close() returns once every connection task has ended.
    mock.broker_round_trip_time(1, Duration::from_millis(5000))
        .unwrap();
    let slow = {
        let cluster = cluster.clone();
        tokio::spawn(async move { cluster.fetch("rt", 0, 0, &opts()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(2), cluster.close())
        .await
        .expect("close() hung");
    let err = slow.await.unwrap().unwrap_err();
    assert!(matches!(err, KafkaError::Closed), "{err:?}");
}
