use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::{connect, etcd};
use cutover_coord::{CoordError, Precondition, WriteOp};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Link {
    source: String,
    target: String,
}

fn link(s: &str) -> Link {
    Link {
        source: s.to_owned(),
        target: "target".to_owned(),
    }
}

#[tokio::test]
async fn crud_and_cas_conflict() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;

    assert_eq!(coord.key("links/a"), "/cutover-test/v1/links/a");
    assert!(coord.create("links/a", &link("s1")).await.unwrap());
    assert!(
        !coord.create("links/a", &link("other")).await.unwrap(),
        "create must not overwrite"
    );

    let got = coord.get::<Link>("links/a").await.unwrap().expect("exists");
    assert_eq!(got.value, link("s1"));

    // CAS with the revision just read succeeds...
    assert!(coord
        .update("links/a", &link("s2"), got.mod_revision)
        .await
        .unwrap());
    // ...and a second writer holding the same (now stale) revision loses.
    assert!(!coord
        .update("links/a", &link("s3"), got.mod_revision)
        .await
        .unwrap());
    let now = coord.get::<Link>("links/a").await.unwrap().expect("exists");
    assert_eq!(now.value, link("s2"), "the losing CAS must not write");
    assert!(now.mod_revision > got.mod_revision);

    let rev = coord.put("links/b", &link("s4")).await.unwrap();
    assert!(rev > now.mod_revision);
    coord.put("linksX/c", &link("not a link")).await.unwrap();

    let listed = coord.list::<Link>("links/").await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        vec!["links/a", "links/b"],
        "relative keys, sorted, prefix-exact"
    );
    assert_eq!(listed[1].1.mod_revision, rev);

    assert!(coord.delete("links/a").await.unwrap());
    assert!(!coord.delete("links/a").await.unwrap());
    assert!(coord.get::<Link>("links/a").await.unwrap().is_none());
    // CAS on a deleted key fails rather than resurrecting it.
    assert!(!coord
        .update("links/a", &link("s5"), now.mod_revision)
        .await
        .unwrap());
    assert!(coord.get::<Link>("links/a").await.unwrap().is_none());

    assert_eq!(coord.delete_prefix("links/").await.unwrap(), 1);
    assert!(coord.list::<Link>("links/").await.unwrap().is_empty());
    assert!(coord.get::<Link>("linksX/c").await.unwrap().is_some());
}

#[tokio::test]
async fn txn_create_all_is_all_or_nothing() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;

    coord
        .put("topics/l1/t7", &json!({"pre": true}))
        .await
        .unwrap();
    let mut creates = vec![("links/l1".to_owned(), json!({"source": "a"}))];
    for i in 0..10 {
        creates.push((format!("topics/l1/t{i}"), json!({"partitions": i})));
    }
    assert!(!coord.txn_create_all(&creates).await.unwrap());
    assert!(coord
        .get::<serde_json::Value>("links/l1")
        .await
        .unwrap()
        .is_none());
    let topics = coord.list::<serde_json::Value>("topics/l1/").await.unwrap();
    assert_eq!(topics.len(), 1, "only the pre-existing key: {topics:?}");
    assert_eq!(topics[0].1.value, json!({"pre": true}));

    coord.delete("topics/l1/t7").await.unwrap();
    assert!(coord.txn_create_all(&creates).await.unwrap());
    assert_eq!(
        coord
            .list::<serde_json::Value>("topics/l1/")
            .await
            .unwrap()
            .len(),
        10
    );
    assert_eq!(
        coord
            .get::<serde_json::Value>("links/l1")
            .await
            .unwrap()
            .unwrap()
            .value,
        json!({"source": "a"})
    );
}

#[tokio::test]
async fn txn_applies_writes_only_when_guards_hold() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let rev = coord
        .put("groups/g", &json!({"home": "source"}))
        .await
        .unwrap();
    coord.put("groups/h", &json!(1)).await.unwrap();

    let writes = [
        WriteOp::Put("groups/g".to_owned(), json!({"home": "target"})),
        WriteOp::Delete("groups/h".to_owned()),
    ];
    let stale = [Precondition::ModRevision("groups/g".to_owned(), rev - 1)];
    assert!(!coord.txn(&stale, &writes).await.unwrap());
    assert!(coord
        .get::<serde_json::Value>("groups/h")
        .await
        .unwrap()
        .is_some());

    let fresh = [
        Precondition::ModRevision("groups/g".to_owned(), rev),
        Precondition::Absent("groups/new".to_owned()),
    ];
    assert!(coord.txn(&fresh, &writes).await.unwrap());
    assert!(coord
        .get::<serde_json::Value>("groups/h")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        coord
            .get::<serde_json::Value>("groups/g")
            .await
            .unwrap()
            .unwrap()
            .value,
        json!({"home": "target"})
    );
}

#[tokio::test]
async fn decode_error_names_the_key() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    coord.put("links/bad", &"just a string").await.unwrap();
    let err = coord.get::<Link>("links/bad").await.unwrap_err();
    match &err {
        CoordError::Decode { key, .. } => assert_eq!(key, "/cutover-test/v1/links/bad"),
        other => panic!("expected Decode, got {other:?}"),
    }
    assert!(err.to_string().contains("/cutover-test/v1/links/bad"));
}
