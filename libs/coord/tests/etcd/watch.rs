use std::collections::BTreeMap;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::{connect, etcd, next_event, within};
use cutover_coord::testing::TcpProxy;
use cutover_coord::{Coord, WatchEvent};

fn put_value(ev: &WatchEvent) -> (String, serde_json::Value, i64) {
    match ev {
        WatchEvent::Put {
            rel,
            value,
            mod_revision,
        } => (
            rel.clone(),
            serde_json::from_slice(value).expect("json"),
            *mod_revision,
        ),
        other => panic!("expected a put, got {other:?}"),
    }
}

fn delete_of(ev: &WatchEvent) -> String {
    match ev {
        WatchEvent::Delete { rel } => rel.clone(),
        other => panic!("expected a delete, got {other:?}"),
    }
}

#[tokio::test]
async fn sees_puts_and_deletes_in_order_after_the_snapshot() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    coord.put("topics/a", &json!(1)).await.unwrap();
    coord.put("other/z", &json!(0)).await.unwrap();

    let cancel = CancellationToken::new();
    let (snap, mut rx) = coord.watch_prefix("topics/", cancel.clone()).await.unwrap();
    assert_eq!(snap.kvs.len(), 1);
    assert_eq!(snap.kvs[0].rel, "topics/a");
    assert_eq!(snap.decode::<i64>().unwrap()[0].1.value, 1);

    coord.put("topics/b", &json!(2)).await.unwrap();
    coord.put("other/z", &json!(1)).await.unwrap();
    coord.put("topics/a", &json!(3)).await.unwrap();
    coord.delete("topics/b").await.unwrap();
    // One revision, two keys: both events arrive.
    coord
        .txn_create_all(&[
            ("topics/c".to_owned(), json!(4)),
            ("topics/d".to_owned(), json!(5)),
        ])
        .await
        .unwrap();

    let (rel, v, rev_b) = put_value(&next_event(&mut rx).await);
    assert_eq!((rel.as_str(), v), ("topics/b", json!(2)));
    assert!(rev_b > snap.revision, "events start after the snapshot");
    let (rel, v, rev_a) = put_value(&next_event(&mut rx).await);
    assert_eq!((rel.as_str(), v), ("topics/a", json!(3)));
    assert!(rev_a > rev_b);
    assert_eq!(delete_of(&next_event(&mut rx).await), "topics/b");
    let (rel_c, _, rev_c) = put_value(&next_event(&mut rx).await);
    let (rel_d, _, rev_d) = put_value(&next_event(&mut rx).await);
    assert_eq!((rel_c.as_str(), rel_d.as_str()), ("topics/c", "topics/d"));
    assert_eq!(rev_c, rev_d, "one txn is one revision");
    assert!(rx.try_recv().is_err(), "nothing outside the prefix");

    cancel.cancel();
    let end = within("the watch to stop after cancel", async {
        while rx.recv().await.is_some() {}
    });
    end.await;
}

/// Applies events to a map; what a consumer such as the router does.
fn apply(state: &mut BTreeMap<String, serde_json::Value>, ev: &WatchEvent) {
    match ev {
        WatchEvent::Put { rel, value, .. } => {
            state.insert(rel.clone(), serde_json::from_slice(value).expect("json"));
        }
        WatchEvent::Delete { rel } => {
            state.remove(rel);
        }
    }
}

async fn listed(coord: &Coord, prefix: &str) -> BTreeMap<String, serde_json::Value> {
    coord
        .list::<serde_json::Value>(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.value))
        .collect()
}

#[tokio::test]
async fn reconnects_after_connection_loss_without_missing_events() {
    let etcd = etcd().await;
    let proxy = TcpProxy::start(etcd.client_addr()).await.unwrap();
    let watched = connect(&proxy.endpoint()).await;
    let direct = connect(etcd.endpoint()).await;

    let cancel = CancellationToken::new();
    let (_, mut rx) = watched
        .watch_prefix("groups/", cancel.clone())
        .await
        .unwrap();
    direct.put("groups/g1", &json!("source")).await.unwrap();
    assert_eq!(put_value(&next_event(&mut rx).await).0, "groups/g1");

    proxy.cut();
    direct.put("groups/g1", &json!("promoting")).await.unwrap();
    direct.put("groups/g1", &json!("target")).await.unwrap();
    direct.delete("groups/g1").await.unwrap();
    proxy.restore();

    // No compaction: the watcher resumes at its revision and replays every
    // intermediate change, in order.
    assert_eq!(put_value(&next_event(&mut rx).await).1, json!("promoting"));
    assert_eq!(put_value(&next_event(&mut rx).await).1, json!("target"));
    assert_eq!(delete_of(&next_event(&mut rx).await), "groups/g1");
    cancel.cancel();
}

#[tokio::test]
async fn survives_compaction_by_relisting() {
    let etcd = etcd().await;
    let proxy = TcpProxy::start(etcd.client_addr()).await.unwrap();
    let watched = connect(&proxy.endpoint()).await;
    let direct = connect(etcd.endpoint()).await;

    direct.put("topics/a", &json!(1)).await.unwrap();
    direct.put("topics/b", &json!(1)).await.unwrap();
    direct.put("topics/keep", &json!("same")).await.unwrap();
    let cancel = CancellationToken::new();
    let (snap, mut rx) = watched
        .watch_prefix("topics/", cancel.clone())
        .await
        .unwrap();
    let mut state: BTreeMap<String, serde_json::Value> = snap
        .decode::<serde_json::Value>()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.value))
        .collect();
    direct.put("topics/c", &json!(1)).await.unwrap();
    let ev = next_event(&mut rx).await;
    apply(&mut state, &ev);
    assert_eq!(ev.rel(), "topics/c", "watch is live before the cut");

    // While the watcher cannot reach etcd, history it has not seen is
    // changed and then compacted away.
    proxy.cut();
    direct.delete("topics/a").await.unwrap();
    direct.put("topics/b", &json!(2)).await.unwrap();
    direct.put("topics/b", &json!(3)).await.unwrap();
    direct.put("topics/d", &json!(1)).await.unwrap();
    let rev = direct.put("unrelated", &json!(0)).await.unwrap();
    direct
        .client()
        .compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
    proxy.restore();

    // The re-list yields the difference: a delete for a, one put for b
    // with its latest value (the intermediate 2 is gone with the history),
    // a put for d, nothing for the unchanged keys.
    let mut events = Vec::new();
    for _ in 0..3 {
        let ev = next_event(&mut rx).await;
        apply(&mut state, &ev);
        events.push(ev);
    }
    assert_eq!(delete_of(&events[0]), "topics/a");
    assert_eq!(put_value(&events[1]).0, "topics/b");
    assert_eq!(put_value(&events[1]).1, json!(3));
    assert_eq!(put_value(&events[2]).0, "topics/d");
    assert_eq!(state, listed(&direct, "topics/").await);

    // And it keeps streaming live changes afterwards.
    direct.put("topics/e", &json!(1)).await.unwrap();
    let ev = next_event(&mut rx).await;
    assert_eq!(
        put_value(&ev).0,
        "topics/e",
        "no stray resync events: {ev:?}"
    );
    cancel.cancel();
}
