use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::common::{connect, etcd, within, TTL};
use cutover_coord::{current_leader, CoordError, Election};

#[tokio::test]
async fn one_leader_and_failover_when_its_session_is_revoked() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let s1 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let s2 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let e1 = Election::new(&coord, &s1, "orchestrator", "o1");
    let e2 = Arc::new(Election::new(&coord, &s2, "orchestrator", "o2"));

    let cancel = CancellationToken::new();
    let term1 = within("o1 to win", e1.campaign(&cancel)).await.unwrap();
    assert!(e1.is_leader());
    let second = tokio::spawn({
        let e2 = e2.clone();
        let cancel = cancel.clone();
        async move { e2.campaign(&cancel).await }
    });
    assert_eq!(e2.leader().await.unwrap().as_deref(), Some("o1"));
    assert!(!e2.is_leader());
    assert!(!second.is_finished(), "o2 must wait while o1 leads");

    s1.revoke().await.unwrap();
    within("o1's term to end", term1.cancelled()).await;
    assert!(!e1.is_leader());
    let term2 = within("o2 to take over", second).await.unwrap().unwrap();
    assert!(!term2.is_cancelled());
    assert!(e2.is_leader());
    assert_eq!(
        current_leader(&coord, "orchestrator")
            .await
            .unwrap()
            .as_deref(),
        Some("o2")
    );
}

#[tokio::test]
async fn resign_hands_over_and_cancel_stops_a_campaign() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let s1 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let s2 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let e1 = Election::new(&coord, &s1, "orchestrator", "o1");
    let e2 = Election::new(&coord, &s2, "orchestrator", "o2");
    let never = CancellationToken::new();
    let term1 = e1.campaign(&never).await.unwrap();

    let give_up = CancellationToken::new();
    let (result, ()) = tokio::join!(e2.campaign(&give_up), async { give_up.cancel() });
    let err = result.unwrap_err();
    assert!(matches!(err, CoordError::Cancelled), "{err:?}");

    assert!(e1.resign().await.unwrap());
    assert!(term1.is_cancelled());
    assert!(!e1.is_leader());
    let won = within("o2 to win after resign", e2.campaign(&never)).await;
    assert!(!won.unwrap().is_cancelled());
    assert!(e2.is_leader());
    assert!(!e1.is_leader());
}

#[tokio::test]
async fn leadership_ends_when_the_session_is_lost() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let cancel = CancellationToken::new();
    let s1 = coord.session(TTL, cancel.clone()).await.unwrap();
    let e1 = Election::new(&coord, &s1, "orchestrator", "o1");
    let term = e1.campaign(&CancellationToken::new()).await.unwrap();
    cancel.cancel();
    within("the term to end with the session", term.cancelled()).await;
    assert!(!e1.is_leader());
}
