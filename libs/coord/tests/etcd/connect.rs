use std::time::{Duration, Instant};

use crate::common::config;
use cutover_coord::{Coord, CoordError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Room for scheduling on a loaded machine; the call itself is bounded by
/// the connect timeout.
const SLACK: Duration = Duration::from_millis(750);

async fn connect_fails(endpoint: &str) -> (CoordError, Duration) {
    let mut cfg = config(endpoint);
    cfg.connect_timeout = CONNECT_TIMEOUT;
    let started = Instant::now();
    let result = tokio::time::timeout(CONNECT_TIMEOUT * 5, Coord::connect(cfg))
        .await
        .expect("connect must give up on its own");
    let elapsed = started.elapsed();
    match result {
        Ok(_) => panic!("connect to {endpoint} unexpectedly succeeded"),
        Err(e) => (e, elapsed),
    }
}

#[tokio::test]
async fn refused_endpoint_is_unreachable_within_the_timeout() {
    // Bound then released: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let (err, elapsed) = connect_fails(&endpoint).await;
    assert!(elapsed <= CONNECT_TIMEOUT + SLACK, "took {elapsed:?}");
    assert!(
        matches!(err, CoordError::Unreachable { ref endpoints, .. } if endpoints == &endpoint),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&endpoint), "{msg}");
    assert!(
        msg.to_lowercase().contains("refused"),
        "cause should say refused: {msg}"
    );
}

#[tokio::test]
async fn silent_endpoint_is_unreachable_within_the_timeout() {
    // Accepts TCP (kernel backlog) but never speaks.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (err, elapsed) = connect_fails(&endpoint).await;
    assert!(elapsed <= CONNECT_TIMEOUT + SLACK, "took {elapsed:?}");
    assert!(matches!(err, CoordError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&endpoint), "{msg}");
    assert!(msg.contains("does not answer"), "{msg}");
    drop(listener);
}
