use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::common::{connect, etcd, next_event, within, TTL};
use cutover_coord::{
    fence_after, list_members, register_member, try_claim, CoordError, WatchEvent,
};

#[tokio::test]
async fn keepalive_keeps_a_leased_key_alive_past_several_ttls() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let cancel = CancellationToken::new();
    let session = coord.session(TTL, cancel.clone()).await.unwrap();
    assert_eq!(session.ttl(), TTL);
    register_member(&coord, &session, "fetcher", "f1", &json!({"addr": "x:1"}))
        .await
        .unwrap();
    let (snap, mut events) = coord
        .watch_prefix("members/", cancel.clone())
        .await
        .unwrap();
    assert_eq!(snap.kvs.len(), 1);

    let started = Instant::now();
    let mut renewals = session.renewals();
    let mut seen = 0;
    within("renewals spanning three TTLs", async {
        while session.last_renewal() < started + TTL * 3 {
            renewals.changed().await.expect("keepalive task alive");
            seen += 1;
        }
    })
    .await;
    assert!(seen >= 3, "only {seen} renewals");
    assert!(session.is_alive());
    assert!(!session.lost().is_cancelled());
    assert!(
        events.try_recv().is_err(),
        "the member key must not have changed"
    );
    let members = list_members::<serde_json::Value>(&coord, "fetcher")
        .await
        .unwrap();
    assert_eq!(members, vec![("f1".to_owned(), json!({"addr": "x:1"}))]);
    cancel.cancel();
}

/// The self-fencing guarantee: with etcd unresponsive, `lost()` fires
/// before the lease could expire, measured from the last renewal etcd
/// confirmed (the lease lives at least TTL from then).
async fn assert_fences_before_ttl(kill: bool) {
    let mut etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let session = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let lost = session.lost();
    let mut renewals = session.renewals();
    within("a renewal", renewals.changed()).await.unwrap();

    if kill {
        etcd.kill().unwrap();
    } else {
        etcd.pause().unwrap();
    }
    within("lost() to fire", lost.cancelled()).await;
    let fired = Instant::now();
    let since_renewal = fired - session.last_renewal();
    assert!(
        since_renewal < TTL,
        "fenced {since_renewal:?} after the last renewal; the lease may have expired at {TTL:?}"
    );
    // The deadline itself, not a transport error, is what fired.
    assert!(
        since_renewal >= fence_after(TTL) - Duration::from_millis(50),
        "{since_renewal:?}"
    );
    assert!(!session.is_alive());
    if !kill {
        etcd.resume().unwrap();
    }
}

#[tokio::test]
async fn lost_fires_before_the_ttl_when_etcd_hangs() {
    assert_fences_before_ttl(false).await;
}

#[tokio::test]
async fn lost_fires_before_the_ttl_when_etcd_dies() {
    assert_fences_before_ttl(true).await;
}

#[tokio::test]
async fn lost_session_refuses_to_claim() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let cancel = CancellationToken::new();
    let session = coord.session(TTL, cancel.clone()).await.unwrap();
    let lost = session.lost();
    cancel.cancel();
    within("lost() after cancel", lost.cancelled()).await;
    let err = try_claim(&coord, &session, "fetch/l/t/0", "f1")
        .await
        .unwrap_err();
    assert!(matches!(err, CoordError::LeaseLost), "{err:?}");
    assert!(cutover_coord::owners(&coord, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn revoke_removes_attached_keys_and_fires_lost() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let session = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let lost = session.lost();
    register_member(&coord, &session, "router", "r1", &json!({}))
        .await
        .unwrap();
    assert!(try_claim(&coord, &session, "group/g1", "r1").await.unwrap());

    session.revoke().await.unwrap();
    assert!(lost.is_cancelled());
    assert!(list_members::<serde_json::Value>(&coord, "router")
        .await
        .unwrap()
        .is_empty());
    assert!(cutover_coord::owners(&coord, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn dropped_session_fences_at_once_and_its_keys_expire() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let session = coord.session(TTL, CancellationToken::new()).await.unwrap();
    register_member(&coord, &session, "router", "r1", &json!({}))
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let (_, mut events) = coord
        .watch_prefix("members/", cancel.clone())
        .await
        .unwrap();
    let lost = session.lost();

    let dropped_at = Instant::now();
    drop(session);
    within("lost() after drop", lost.cancelled()).await;
    // Nobody renews now, so etcd expires the lease (not instantly: the key
    // is only gone after the TTL).
    let ev = next_event(&mut events).await;
    assert_eq!(
        ev,
        WatchEvent::Delete {
            rel: "members/router/r1".to_owned()
        }
    );
    assert!(
        dropped_at.elapsed() >= TTL / 2,
        "expired suspiciously early"
    );
    cancel.cancel();
}
