//! The fetcher's per-link connection cache against a cluster that does not
//! answer (a "black hole": a loopback listener whose connections are never
//! answered) and librdkafka's mock cluster.

use std::time::Duration;

use cutover_fetcher::clusters::ClusterCache;
use cutover_kafka::{FetchOptions, KafkaError};
use cutover_model::{ClusterSpec, Link, LinkOptions};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn spec(bootstrap: &str) -> ClusterSpec {
    ClusterSpec {
        bootstrap_servers: vec![bootstrap.to_owned()],
        properties: Default::default(),
    }
}

fn link(name: &str, source: &str, target: &str) -> Link {
    Link {
        name: name.to_owned(),
        source: spec(source),
        target: spec(target),
        options: LinkOptions::default(),
        created_at_ms: 0,
    }
}

fn cache(timeout: Duration) -> ClusterCache {
    ClusterCache::new(
        "cache-test".into(),
        timeout,
        FetchOptions {
            max_bytes: 1 << 20,
            partition_max_bytes: 1 << 20,
            max_wait: Duration::ZERO,
            min_bytes: 1,
            read_committed: true,
        },
        cutover_fetcher::fetch_mux::IdleMode::Poll(Duration::from_millis(50)),
    )
}

/// A listener that accepts connections and never answers; every accepted
/// connection is handed to the test (and so stays open).
async fn black_hole() -> (String, mpsc::UnboundedReceiver<TcpStream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            if tx.send(conn).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// A listener that never accepts: connections complete in the kernel's
/// backlog, so once the clients gave up, draining the backlog counts every
/// TCP connection they opened, without a race against an accept loop.
fn silent_backlog() -> (String, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr").to_string();
    (addr, listener)
}

fn drain_backlog(listener: &std::net::TcpListener) -> usize {
    let mut n = 0;
    while listener.accept().is_ok() {
        n += 1;
    }
    n
}

fn mock() -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(1).expect("mock");
    mock.create_topic("t", 1, 1).expect("topic");
    mock
}

/// Review defect: the cache held its lock across connects, so a link whose
/// cluster accepts connections but never answers (up to the request
/// timeout per bootstrap server) stalled every other link's partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_never_answers_does_not_hold_up_other_links() {
    let mock = mock();
    let good_bootstrap = mock.bootstrap_servers();
    let (hole, mut accepted) = black_hole().await;
    // Much longer than the test may wait: only a connect that does not
    // wait for the black-holed one can finish in time.
    let cache = cache(Duration::from_secs(120));

    let dark = link("dark", &good_bootstrap, &hole);
    let stalled = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get(&dark).await.map(|_| ()) }
    });
    let _held = tokio::time::timeout(Duration::from_secs(30), accepted.recv())
        .await
        .expect("the dark link connects to the black hole")
        .expect("black hole open");

    let good = link("good", &good_bootstrap, &good_bootstrap);
    let clients = tokio::time::timeout(Duration::from_secs(20), cache.get(&good))
        .await
        .expect("the good link connects while the dark one is still connecting")
        .expect("good link clients");
    clients.fetch.fetch("t", 0, 0, false).await.expect("fetch");
    // The balancer's clean-up does not wait for the connect either, and
    // ends it: its caller learns at once.
    tokio::time::timeout(Duration::from_secs(20), cache.retain(&["good".into()]))
        .await
        .expect("retain returns while the dark link is connecting");
    let outcome = tokio::time::timeout(Duration::from_secs(20), stalled)
        .await
        .expect("the dark link's caller is told when its attempt is stopped")
        .expect("join");
    assert!(
        matches!(outcome, Err(KafkaError::Closed)),
        "{:?}",
        outcome.err()
    );
    // The good link is still served from the cache.
    let again = cache.get(&good).await.expect("cached");
    again
        .fetch
        .fetch("t", 0, 0, false)
        .await
        .expect("fetch again");
    tokio::time::timeout(Duration::from_secs(20), cache.close_all())
        .await
        .expect("close_all");
}

/// Partitions of one link asking at once share one connect attempt and its
/// outcome; a failed attempt is not cached, so the next call connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_of_one_link_share_one_connect_and_a_failure_is_not_kept() {
    let mock = mock();
    let good_bootstrap = mock.bootstrap_servers();
    let (hole, backlog) = silent_backlog();
    let cache = cache(Duration::from_secs(1));
    let dark = link("dark", &good_bootstrap, &hole);

    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (cache, dark) = (cache.clone(), dark.clone());
            tokio::spawn(async move { cache.get(&dark).await.map(|_| ()) })
        })
        .collect();
    for c in callers {
        let outcome = c.await.expect("join");
        assert!(
            matches!(outcome, Err(KafkaError::Timeout { .. })),
            "{:?}",
            outcome.err()
        );
    }
    assert_eq!(
        drain_backlog(&backlog),
        1,
        "four callers of one link, one connection to its target"
    );

    let outcome = cache.get(&dark).await.map(|_| ());
    assert!(matches!(outcome, Err(KafkaError::Timeout { .. })));
    assert_eq!(
        drain_backlog(&backlog),
        1,
        "a new call after the failure tries again"
    );
    cache.close_all().await;
}
