//! Expiry of producer-id mappings on a real etcd: a mapping unused for the
//! expiry is removed, one noted as used (or new) is kept, and a use noted
//! for a mapping already removed does not bring it back.

use std::time::Duration;

use cutover_coord::testing::EtcdServer;
use cutover_coord::{Coord, CoordConfig};
use cutover_model::{keys, ProducerMapping};
use cutover_router::metrics::Metrics;
use cutover_router::producers::Producers;

const DAY_MS: i64 = 24 * 3600 * 1000;

#[tokio::test]
async fn mappings_unused_for_the_expiry_are_removed_and_used_ones_kept() {
    let etcd = tokio::task::spawn_blocking(|| EtcdServer::start(None))
        .await
        .expect("etcd launcher thread")
        .expect("start etcd");
    let coord = Coord::connect(CoordConfig {
        endpoints: vec![etcd.endpoint().to_owned()],
        prefix: "/cutover-test/v1".into(),
        lease_ttl: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .expect("etcd");
    let producers = Producers::new(
        coord.clone(),
        "l1".into(),
        Duration::from_secs(5),
        Metrics::new().expect("metrics"),
    );
    let idle = producers.new_client_id().await.expect("id");
    let used = producers.new_client_id().await.expect("id");
    let fresh = producers.new_client_id().await.expect("id");
    let now = cutover_model::now_ms();
    // Two created eight days ago; one of them used since.
    for id in [idle, used] {
        let key = keys::producer("l1", id);
        let mut m = coord
            .get::<ProducerMapping>(&key)
            .await
            .expect("get")
            .expect("mapping")
            .value;
        m.created_at_ms = now - 8 * DAY_MS;
        coord.put(&key, &m).await.expect("put");
    }
    assert!(producers.touch(used, now - DAY_MS).await.expect("touch"));

    let expiry = Duration::from_millis(7 * DAY_MS as u64);
    assert_eq!(producers.sweep(now, expiry).await.expect("sweep"), 1);
    let left = |id: i64| {
        let coord = coord.clone();
        async move {
            coord
                .get::<ProducerMapping>(&keys::producer("l1", id))
                .await
                .expect("get")
        }
    };
    assert!(
        left(idle).await.is_none(),
        "the idle mapping is still there"
    );
    let kept = left(used).await.expect("the used mapping was removed");
    assert_eq!(kept.value.used_at_ms, now - DAY_MS);
    assert!(left(fresh).await.is_some(), "the new mapping was removed");
    // Nothing left to remove; a use noted for the removed one is refused.
    assert_eq!(producers.sweep(now, expiry).await.expect("sweep"), 0);
    assert!(!producers.touch(idle, now).await.expect("touch"));
    assert!(left(idle).await.is_none());
}
