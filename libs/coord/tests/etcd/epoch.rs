use std::sync::atomic::{AtomicU32, Ordering};

use tokio_util::sync::CancellationToken;

use crate::common::{connect, etcd, TTL};
use cutover_coord::{
    bump_writer_epoch, bump_writer_epoch_with, bump_writer_epochs, release, try_claim,
    try_claim_many, writer_identity, writer_key, CoordError, WriterIdentity, BUMPS_PER_TXN,
};

const RES: &str = "fetch/link1/orders/3";

fn id(producer_id: i64, producer_epoch: i16) -> WriterIdentity {
    WriterIdentity {
        producer_id,
        producer_epoch,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("kafka said no")]
struct KafkaError;

#[tokio::test]
async fn epochs_strictly_increase_across_owners() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let s1 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let s2 = coord.session(TTL, CancellationToken::new()).await.unwrap();

    assert!(try_claim(&coord, &s1, RES, "f1").await.unwrap());
    let err = bump_writer_epoch(&coord, &s1, RES, RES, "f1", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoordError::NoWriterIdentity { .. }),
        "{err:?}"
    );
    assert_eq!(
        bump_writer_epoch(&coord, &s1, RES, RES, "f1", Some(100))
            .await
            .unwrap(),
        id(100, 0)
    );
    // A stored identity wins over a passed producer id: keeping the id is
    // what lets the broker fence the previous writer.
    assert_eq!(
        bump_writer_epoch(&coord, &s1, RES, RES, "f1", Some(555))
            .await
            .unwrap(),
        id(100, 1)
    );

    assert!(release(&coord, RES, "f1").await.unwrap());
    assert!(try_claim(&coord, &s2, RES, "f2").await.unwrap());
    let allocations = AtomicU32::new(0);
    let next = bump_writer_epoch_with(&coord, &s2, RES, RES, "f2", || async {
        allocations.fetch_add(1, Ordering::SeqCst);
        Ok::<i64, KafkaError>(999)
    })
    .await
    .unwrap();
    assert_eq!(next, id(100, 2));
    assert_eq!(
        allocations.load(Ordering::SeqCst),
        0,
        "no allocation while an id is stored"
    );
    assert_eq!(
        writer_identity(&coord, RES).await.unwrap(),
        Some(id(100, 2))
    );
}

#[tokio::test]
async fn stale_owner_gets_not_owner_and_nothing_is_written() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let s1 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let s2 = coord.session(TTL, CancellationToken::new()).await.unwrap();

    assert!(try_claim(&coord, &s1, RES, "f1").await.unwrap());
    bump_writer_epoch(&coord, &s1, RES, RES, "f1", Some(7))
        .await
        .unwrap();
    // f1 loses the resource (e.g. rebalanced away) and f2 takes over.
    assert!(release(&coord, RES, "f1").await.unwrap());
    assert!(try_claim(&coord, &s2, RES, "f2").await.unwrap());
    assert_eq!(
        bump_writer_epoch(&coord, &s2, RES, RES, "f2", None)
            .await
            .unwrap(),
        id(7, 1)
    );
    let before = coord
        .get::<WriterIdentity>(&writer_key(RES))
        .await
        .unwrap()
        .unwrap();

    let err = bump_writer_epoch(&coord, &s1, RES, RES, "f1", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoordError::NotOwner { ref resource } if resource == RES),
        "{err:?}"
    );
    // Same owner id, but not the session (lease) that holds the claim:
    // a restarted process must not act on its predecessor's ownership.
    let err = bump_writer_epoch(&coord, &s1, RES, RES, "f2", None)
        .await
        .unwrap_err();
    assert!(matches!(err, CoordError::NotOwner { .. }), "{err:?}");

    let after = coord
        .get::<WriterIdentity>(&writer_key(RES))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, before, "a refused bump must not write");
}

#[tokio::test]
async fn exhausted_epoch_needs_a_new_producer_id() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let s1 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    assert!(try_claim(&coord, &s1, RES, "f1").await.unwrap());
    coord.put(&writer_key(RES), &id(7, i16::MAX)).await.unwrap();

    let err = bump_writer_epoch(&coord, &s1, RES, RES, "f1", None)
        .await
        .unwrap_err();
    assert!(matches!(err, CoordError::EpochExhausted { .. }), "{err:?}");
    let err = bump_writer_epoch(&coord, &s1, RES, RES, "f1", Some(7))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoordError::EpochExhausted { .. }),
        "same id cannot restart: {err:?}"
    );

    let failing = bump_writer_epoch_with(&coord, &s1, RES, RES, "f1", || async {
        Err::<i64, _>(KafkaError)
    })
    .await
    .unwrap_err();
    assert!(
        matches!(failing, CoordError::ProducerIdAllocation { .. }),
        "{failing:?}"
    );
    assert_eq!(
        writer_identity(&coord, RES).await.unwrap(),
        Some(id(7, i16::MAX))
    );

    let next = bump_writer_epoch_with(&coord, &s1, RES, RES, "f1", || async {
        Ok::<i64, KafkaError>(8)
    })
    .await
    .unwrap();
    assert_eq!(next, id(8, 0));
    assert_eq!(
        bump_writer_epoch(&coord, &s1, RES, RES, "f1", None)
            .await
            .unwrap(),
        id(8, 1)
    );
}

#[tokio::test]
async fn batched_bumps_match_single_bumps_and_skip_what_is_not_owned() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let s1 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let s2 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    // More than two chunks; each resource has a stored identity except
    // `fresh`, and `theirs` belongs to another owner.
    let all: Vec<String> = (0..BUMPS_PER_TXN as i64 * 2 + 5)
        .map(|p| format!("fetch/batch/t/{p}"))
        .collect();
    let (fresh, theirs) = (all[3].clone(), all[BUMPS_PER_TXN + 1].clone());
    assert!(try_claim(&coord, &s2, &theirs, "f2").await.unwrap());
    try_claim_many(&coord, &s1, &all, "f1").await.unwrap();
    for (i, r) in all.iter().enumerate() {
        if *r == fresh {
            continue;
        }
        let owner = if *r == theirs {
            (&s2, "f2")
        } else {
            (&s1, "f1")
        };
        bump_writer_epoch(&coord, owner.0, r, r, owner.1, Some(1000 + i as i64))
            .await
            .unwrap();
    }

    let bumps: Vec<(String, String, Option<i64>)> =
        all.iter().map(|r| (r.clone(), r.clone(), None)).collect();
    let results = bump_writer_epochs(&coord, &s1, &bumps, "f1").await.unwrap();
    assert_eq!(results.len(), all.len());
    for (i, (r, result)) in all.iter().zip(&results).enumerate() {
        match result {
            Ok(next) => {
                assert!(*r != fresh && *r != theirs, "{r} bumped: {next:?}");
                assert_eq!(*next, id(1000 + i as i64, 1), "{r}");
                assert_eq!(writer_identity(&coord, r).await.unwrap(), Some(*next));
            }
            Err(CoordError::NoWriterIdentity { resource }) => assert_eq!(*resource, fresh),
            Err(CoordError::NotOwner { resource }) => assert_eq!(*resource, theirs),
            Err(e) => panic!("{r}: {e:?}"),
        }
    }
    assert!(matches!(
        results[3],
        Err(CoordError::NoWriterIdentity { .. })
    ));
    assert!(matches!(
        results[BUMPS_PER_TXN + 1],
        Err(CoordError::NotOwner { .. })
    ));
    // The other owner's identity did not move.
    assert_eq!(
        writer_identity(&coord, &theirs).await.unwrap(),
        Some(id(1000 + BUMPS_PER_TXN as i64 + 1, 0))
    );
    assert_eq!(writer_identity(&coord, &fresh).await.unwrap(), None);

    // Again, one chunk's worth, now with a producer id for `fresh` (and
    // one for the others, which keep theirs): every epoch goes up by one.
    let again: Vec<(String, String, Option<i64>)> = all[..BUMPS_PER_TXN]
        .iter()
        .map(|r| (r.clone(), r.clone(), Some(77)))
        .collect();
    let again = bump_writer_epochs(&coord, &s1, &again, "f1").await.unwrap();
    assert_eq!(again[0].as_ref().unwrap(), &id(1000, 2));
    assert_eq!(again[3].as_ref().unwrap(), &id(77, 0));
    assert_eq!(
        writer_identity(&coord, &fresh).await.unwrap(),
        Some(id(77, 0))
    );
}

#[tokio::test]
async fn a_second_writer_of_a_resource_has_its_own_epochs_under_the_same_ownership() {
    let etcd = etcd().await;
    let coord = connect(etcd.endpoint()).await;
    let s1 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    let s2 = coord.session(TTL, CancellationToken::new()).await.unwrap();
    const REVERSE: &str = "reverse/link1/orders/3";
    assert!(try_claim(&coord, &s1, RES, "f1").await.unwrap());
    bump_writer_epoch(&coord, &s1, RES, RES, "f1", Some(5))
        .await
        .unwrap();
    // The reverse writer starts from nothing: its producer id comes from
    // the other cluster.
    let err = bump_writer_epoch(&coord, &s1, RES, REVERSE, "f1", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CoordError::NoWriterIdentity { resource } if resource == REVERSE),
        "{err:?}"
    );
    assert_eq!(
        bump_writer_epoch(&coord, &s1, RES, REVERSE, "f1", Some(9))
            .await
            .unwrap(),
        id(9, 0)
    );
    assert_eq!(writer_identity(&coord, RES).await.unwrap(), Some(id(5, 0)));
    // The resource's ownership guards it as it guards the first writer.
    let err = bump_writer_epoch(&coord, &s2, RES, REVERSE, "f2", None)
        .await
        .unwrap_err();
    assert!(matches!(err, CoordError::NotOwner { .. }), "{err:?}");
    assert_eq!(
        writer_identity(&coord, REVERSE).await.unwrap(),
        Some(id(9, 0))
    );
}
