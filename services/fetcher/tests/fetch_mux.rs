//! The link's fetch loop against librdkafka's mock cluster: a slow source
//! broker holds back only the partitions it leads.
//!
//! Broker: librdkafka's mock cluster, because it injects latency on one broker.

use std::time::Duration;

use cutover_fetcher::fetch_mux::FetchMux;
use cutover_kafka::{Cluster, ClusterConfig, FetchOptions};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_broker_holds_back_only_its_own_partitions() {
    let mock: MockCluster<'static, DefaultProducerContext> = MockCluster::new(2).expect("mock");
    mock.create_topic("t", 2, 1).expect("topic");
    mock.partition_leader("t", 0, Some(1)).expect("leader p0");
    mock.partition_leader("t", 1, Some(2)).expect("leader p1");
    let mut config = ClusterConfig::new([mock.bootstrap_servers()]);
    config.request_timeout = Duration::from_secs(20);
    let cluster = Cluster::connect(config).await.expect("connect");
    let opts = FetchOptions {
        max_bytes: 1 << 20,
        partition_max_bytes: 1 << 20,
        max_wait: Duration::ZERO,
        min_bytes: 1,
        read_committed: true,
    };
    let cancel = CancellationToken::new();
    let (mux, task) = FetchMux::start(
        cluster.clone(),
        opts,
        cutover_fetcher::fetch_mux::IdleMode::Poll(Duration::from_millis(50)),
        "l",
        cutover_model::CopyDirection::Forward,
        cancel.clone(),
    );
    // Both partitions once: metadata cached, a connection to each broker.
    mux.fetch("t", 0, 0, false).await.expect("p0");
    mux.fetch("t", 1, 0, false).await.expect("p1");

    // Broker 1 now answers after 3 s.
    mock.broker_round_trip_time(1, Duration::from_secs(3))
        .expect("rtt");
    let slow = tokio::spawn({
        let mux = mux.clone();
        async move { mux.fetch("t", 0, 0, false).await }
    });
    // Let the slow fetch go out first, as it would in a running fetcher.
    tokio::task::yield_now().await;
    for i in 0..5 {
        mux.fetch("t", 1, 0, false)
            .await
            .unwrap_or_else(|e| panic!("fetch {i} of p1: {e}"));
    }
    assert!(
        !slow.is_finished(),
        "five fetches of broker 2's partition should complete while broker 1 is still answering"
    );
    slow.await.expect("join").expect("slow fetch of p0");

    cancel.cancel();
    task.await.expect("fetch loop");
    cluster.close().await;
}
