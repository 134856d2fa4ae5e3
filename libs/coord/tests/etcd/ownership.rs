use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::{connect, etcd, next_event, TTL};
use cutover_coord::{
    list_members, owner_of, owners, plan_share, register_member, release, try_claim,
    try_claim_many, WatchEvent,
};

const RES: &str = "fetch/link1/orders/0";

#[tokio::test]
async fn racing_claims_have_exactly_one_winner_and_revoke_hands_over() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let s1 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let s2 = coord.session(TTL, CancellationToken::new()).await.unwrap();

    let (a, b) = tokio::join!(
        try_claim(&coord, &s1, RES, "f1"),
        try_claim(&coord, &s2, RES, "f2")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a ^ b, "exactly one winner, got f1={a} f2={b}");
    let (winner, winner_id, loser, loser_id) = if a {
        (s1, "f1", s2, "f2")
    } else {
        (s2, "f2", s1, "f1")
    };
    assert_eq!(
        owner_of(&coord, RES).await.unwrap().as_deref(),
        Some(winner_id)
    );
    // Claiming again is idempotent for the holder and still refused for the other.
    assert!(try_claim(&coord, &winner, RES, winner_id).await.unwrap());
    assert!(!try_claim(&coord, &loser, RES, loser_id).await.unwrap());
    // Only the owner may release.
    assert!(!release(&coord, RES, loser_id).await.unwrap());
    assert_eq!(
        owner_of(&coord, RES).await.unwrap().as_deref(),
        Some(winner_id)
    );

    winner.revoke().await.unwrap();
    assert!(try_claim(&coord, &loser, RES, loser_id).await.unwrap());
    assert_eq!(
        owner_of(&coord, RES).await.unwrap().as_deref(),
        Some(loser_id)
    );
}

#[tokio::test]
async fn expired_owner_can_be_replaced() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let s1 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let s2 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    assert!(try_claim(&coord, &s1, RES, "f1").await.unwrap());
    assert!(!try_claim(&coord, &s2, RES, "f2").await.unwrap());

    let cancel = CancellationToken::new();
    let (_, mut events) = coord.watch_prefix("owners/", cancel.clone()).await.unwrap();
    // The owner dies without revoking: only lease expiry frees the resource.
    drop(s1);
    let ev = next_event(&mut events).await;
    assert_eq!(
        ev,
        WatchEvent::Delete {
            rel: format!("owners/{RES}")
        }
    );
    assert!(try_claim(&coord, &s2, RES, "f2").await.unwrap());
    assert_eq!(owner_of(&coord, RES).await.unwrap().as_deref(), Some("f2"));
    cancel.cancel();
}

#[tokio::test]
async fn release_by_owner_frees_the_resource() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let s1 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let s2 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    assert!(try_claim(&coord, &s1, RES, "f1").await.unwrap());
    assert!(release(&coord, RES, "f1").await.unwrap());
    assert!(
        !release(&coord, RES, "f1").await.unwrap(),
        "second release is a no-op"
    );
    assert!(try_claim(&coord, &s2, RES, "f2").await.unwrap());
}

/// Two fetchers converge to a fair split using only the public API, the
/// way the fetcher's ownership loop does.
#[tokio::test]
async fn members_converge_to_fair_shares_through_etcd() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let resources: Vec<String> = (0..5).map(|p| format!("fetch/l/t/{p}")).collect();
    let ids = ["f1", "f2"];
    let mut sessions = Vec::new();
    for id in ids {
        let s = coord.session(TTL, CancellationToken::new()).await.unwrap();
        register_member(&coord, &s, "fetcher", id, &json!({}))
            .await
            .unwrap();
        sessions.push(s);
    }
    // f1 starts alone and takes everything.
    let only_f1 = vec!["f1".to_owned()];
    let plan = plan_share(
        "f1",
        &only_f1,
        &resources,
        &owners(&coord, "fetch/").await.unwrap(),
    );
    for r in &plan.claim {
        assert!(try_claim(&coord, &sessions[0], r, "f1").await.unwrap());
    }
    assert_eq!(owners(&coord, "fetch/").await.unwrap().len(), 5);

    let members: Vec<String> = list_members::<serde_json::Value>(&coord, "fetcher")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(members, vec!["f1", "f2"]);
    for _round in 0..3 {
        for (i, id) in ids.iter().enumerate() {
            let current = owners(&coord, "fetch/").await.unwrap();
            let plan = plan_share(id, &members, &resources, &current);
            for r in &plan.release {
                assert!(release(&coord, r, id).await.unwrap());
            }
            for r in &plan.claim {
                assert!(try_claim(&coord, &sessions[i], r, id).await.unwrap());
            }
        }
    }
    let final_owners = owners(&coord, "fetch/").await.unwrap();
    assert_eq!(final_owners.len(), 5);
    let f1 = final_owners.values().filter(|o| *o == "f1").count();
    assert!(f1 == 2 || f1 == 3, "f1 owns {f1} of 5");
}

/// Claims in chunks of one transaction each: every free resource is
/// claimed; a chunk holding one resource owned by someone else falls back
/// to single claims, so only that one is refused; claiming again what one
/// holds is idempotent.
#[tokio::test]
async fn claims_in_chunks_take_what_is_free_and_nothing_else() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let s1 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let s2 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    // More than one chunk (64 per transaction).
    let all: Vec<String> = (0..150).map(|p| format!("fetch/many/t/{p}")).collect();
    assert!(try_claim(&coord, &s2, &all[100], "f2").await.unwrap());

    let mut got = try_claim_many(&coord, &s1, &all, "f1").await.unwrap();
    got.sort();
    let mut want: Vec<String> = all.iter().filter(|r| **r != all[100]).cloned().collect();
    want.sort();
    assert_eq!(got, want);
    let owned = owners(&coord, "fetch/many/").await.unwrap();
    assert_eq!(owned.len(), 150);
    assert_eq!(owned.get(&all[100]).map(String::as_str), Some("f2"));
    assert!(want
        .iter()
        .all(|r| owned.get(r).map(String::as_str) == Some("f1")));
    // Again: the holder keeps everything it holds; the other gets nothing.
    assert_eq!(
        try_claim_many(&coord, &s1, &all, "f1").await.unwrap().len(),
        149
    );
    assert_eq!(
        try_claim_many(&coord, &s2, &all, "f2").await.unwrap(),
        vec![all[100].clone()]
    );
}
