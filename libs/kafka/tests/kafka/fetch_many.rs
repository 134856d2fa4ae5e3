//! `Cluster::fetch_many`: one multi-partition Fetch per broker.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cutover_kafka::{
    Cluster, FetchOptions, FetchRequestPartition, FetchResultPartition, FetchedPartition,
    KafkaError,
};

use crate::common::{connect, encode_batch, mock, parse_batches, Mock};

fn opts(max_wait: Duration) -> FetchOptions {
    FetchOptions {
        max_wait,
        ..FetchOptions::default()
    }
}

fn want(topic: &str, partition: i32, offset: i64) -> FetchRequestPartition {
    FetchRequestPartition {
        topic: topic.to_owned(),
        partition,
        offset,
    }
}

/// Produces `n` one-record batches to a partition; returns its new end.
async fn produce(cluster: &Cluster, topic: &str, partition: i32, n: usize) -> i64 {
    let mut end = 0;
    for i in 0..n {
        let value = format!("{topic}/{partition}/{i}").into_bytes();
        let batch = encode_batch(&[(Some(vec![i as u8]), Some(value))], 1_700_000_000_000);
        let r = cluster
            .send_produce(topic, partition, batch, Duration::from_secs(5))
            .await
            .unwrap()
            .await
            .unwrap();
        end = r.base_offset + 1;
    }
    end
}

/// Leads partition `p` of `topic` on broker `p % 3 + 1`.
fn spread_leaders(mock: &Mock, topic: &str, partitions: i32) {
    for p in 0..partitions {
        mock.partition_leader(topic, p, Some(p % 3 + 1)).unwrap();
    }
}

fn ok(r: &FetchResultPartition) -> &FetchedPartition {
    match &r.result {
        Ok(f) => f,
        Err(e) => panic!("{}/{}: {e:?}", r.topic, r.partition),
    }
}

fn err(r: &FetchResultPartition) -> &KafkaError {
    match &r.result {
        Ok(f) => panic!("{}/{}: expected an error, got {f:?}", r.topic, r.partition),
        Err(e) => e,
    }
}

/// The fetched data starts with a one-record batch at `offset`.
fn assert_batch_at(r: &FetchResultPartition, offset: i64) {
    let batches = parse_batches(&ok(r).records);
    assert!(
        !batches.is_empty(),
        "{}/{}: no data at {offset}",
        r.topic,
        r.partition
    );
    assert_eq!(
        batches[0].base_offset, offset,
        "{}/{}",
        r.topic, r.partition
    );
    assert_eq!(batches[0].record_count, 1);
}

#[tokio::test]
async fn fetch_many_reads_partitions_of_every_leader_in_one_call() {
    let mock = mock(3);
    mock.create_topic("fm", 6, 1).unwrap();
    spread_leaders(&mock, "fm", 6);
    let cluster = connect(&mock).await;
    let md = cluster.topic("fm").await.unwrap().unwrap();
    let leaders: BTreeSet<i32> = md.partitions.iter().map(|p| p.leader).collect();
    assert_eq!(leaders, BTreeSet::from([1, 2, 3]));

    // Partition p holds p + 2 records, except 5, which stays empty.
    let mut ends = [0i64; 6];
    for p in 0..5 {
        ends[p as usize] = produce(&cluster, "fm", p, p as usize + 2).await;
        assert_eq!(ends[p as usize], p as i64 + 2);
    }

    // Out of order, from different offsets.
    let offsets = [(3, 2), (0, 0), (5, 0), (1, 1), (4, 5), (2, 1)];
    let wants: Vec<FetchRequestPartition> =
        offsets.iter().map(|&(p, o)| want("fm", p, o)).collect();
    // Partition 5 is empty but shares its leader (3) with partition 2: one
    // request per broker comes back at once, long max_wait or not.
    let start = Instant::now();
    let results = cluster
        .fetch_many(&wants, &opts(Duration::from_secs(2)))
        .await;
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");

    assert_eq!(results.len(), wants.len());
    for (r, &(p, offset)) in results.iter().zip(&offsets) {
        assert_eq!((r.topic.as_str(), r.partition), ("fm", p));
        let f = ok(r);
        assert_eq!(f.high_watermark, ends[p as usize], "partition {p}");
        if p == 5 {
            assert!(f.records.is_empty(), "{f:?}");
        } else {
            assert_batch_at(r, offset);
        }
    }
}

#[tokio::test]
async fn fetch_many_answers_without_waiting_for_a_caught_up_partition() {
    let mock = mock(1);
    mock.create_topic("hol", 2, 1).unwrap();
    let cluster = connect(&mock).await;
    let end_a = produce(&cluster, "hol", 0, 2).await;
    produce(&cluster, "hol", 1, 3).await;
    let opts = opts(Duration::from_secs(2));

    // Alone, the caught-up partition A is held for max_wait: the broker
    // long-polls (so the assertion below can fail).
    let start = Instant::now();
    let alone = cluster.fetch_many(&[want("hol", 0, end_a)], &opts).await;
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(1500), "took {waited:?}");
    assert!(ok(&alone[0]).records.is_empty());

    // A first, B (with data) second, one call: B's data comes at once.
    let start = Instant::now();
    let results = cluster
        .fetch_many(&[want("hol", 0, end_a), want("hol", 1, 0)], &opts)
        .await;
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    let a = ok(&results[0]);
    assert!(a.records.is_empty(), "{a:?}");
    assert_eq!(a.high_watermark, end_a);
    assert_eq!(results[1].partition, 1);
    assert_batch_at(&results[1], 0);
    assert_eq!(ok(&results[1]).high_watermark, 3);
}

#[tokio::test]
async fn fetch_many_keeps_partition_errors_to_their_partition() {
    let mock = mock(3);
    mock.create_topic("pe", 3, 1).unwrap();
    spread_leaders(&mock, "pe", 3);
    let cluster = connect(&mock).await;
    for p in 0..3 {
        produce(&cluster, "pe", p, 2).await;
    }

    let wants = [
        want("pe", 0, 1),
        want("pe", 1, 1000),
        want("pe", 2, 0),
        want("pe", 7, 0),
        want("nope", 0, 0),
    ];
    let results = cluster
        .fetch_many(&wants, &opts(Duration::from_millis(100)))
        .await;
    assert_eq!(results.len(), 5);
    assert_batch_at(&results[0], 1);
    let e = err(&results[1]);
    assert!(e.is_offset_out_of_range(), "{e:?}");
    assert_eq!(e.code(), Some(1));
    assert_batch_at(&results[2], 0);
    let e = err(&results[3]);
    assert!(
        matches!(e, KafkaError::UnknownTopicOrPartition { partition: 7, .. }),
        "{e:?}"
    );
    let e = err(&results[4]);
    assert!(
        matches!(e, KafkaError::UnknownTopicOrPartition { partition: -1, .. }),
        "{e:?}"
    );
    assert_eq!(
        (results[4].topic.as_str(), results[4].partition),
        ("nope", 0)
    );
}

#[tokio::test]
async fn fetch_many_reports_moved_leader_then_follows_it() {
    let mock = mock(3);
    mock.create_topic("mv", 3, 1).unwrap();
    spread_leaders(&mock, "mv", 3);
    let cluster = connect(&mock).await;
    for p in 0..3 {
        produce(&cluster, "mv", p, 3).await;
    }
    let wants = [want("mv", 0, 1), want("mv", 1, 0), want("mv", 2, 2)];
    let opts = opts(Duration::from_millis(100));
    // Warm the leader cache.
    for r in cluster.fetch_many(&wants, &opts).await {
        ok(&r);
    }

    // Partition 0 moves from broker 1 to broker 2 behind the client's back.
    mock.partition_leader("mv", 0, Some(2)).unwrap();
    let results = cluster.fetch_many(&wants, &opts).await;
    let e = err(&results[0]);
    assert_eq!(e.code(), Some(6), "NOT_LEADER_OR_FOLLOWER expected: {e:?}");
    assert!(e.is_retriable() && e.needs_metadata_refresh());
    assert_batch_at(&results[1], 0);
    assert_batch_at(&results[2], 2);

    // The error marked the topic stale: the next call refreshes the
    // metadata and reads partition 0 from its new leader.
    let results = cluster.fetch_many(&wants, &opts).await;
    assert_batch_at(&results[0], 1);
    assert_eq!(ok(&results[0]).high_watermark, 3);
    assert_batch_at(&results[1], 0);
    assert_batch_at(&results[2], 2);
    let md = cluster.topic("mv").await.unwrap().unwrap();
    assert_eq!(md.partitions[0].leader, 2);
}

#[tokio::test]
async fn fetch_many_fails_only_the_partitions_of_a_down_broker() {
    let mock = mock(3);
    mock.create_topic("bd", 3, 1).unwrap();
    spread_leaders(&mock, "bd", 3);
    let cluster = connect(&mock).await;
    for p in 0..3 {
        produce(&cluster, "bd", p, 1).await;
    }
    let wants = [want("bd", 0, 0), want("bd", 1, 0), want("bd", 2, 0)];
    let opts = opts(Duration::from_millis(100));
    for r in cluster.fetch_many(&wants, &opts).await {
        ok(&r);
    }

    // Partition 1 is led by broker 2.
    mock.broker_down(2).unwrap();
    let results = cluster.fetch_many(&wants, &opts).await;
    assert_batch_at(&results[0], 0);
    let e = err(&results[1]);
    assert!(e.is_retriable() && e.needs_metadata_refresh(), "{e:?}");
    assert!(e.code().is_none(), "a connection-level error: {e:?}");
    assert_batch_at(&results[2], 0);
}

#[tokio::test]
async fn fetch_many_handles_a_partition_listed_twice() {
    let mock = mock(1);
    mock.create_topic("dup", 1, 1).unwrap();
    let cluster = connect(&mock).await;
    produce(&cluster, "dup", 0, 4).await;

    // Same offset twice: one fetch, shared. Another offset: a later round,
    // since one request cannot carry a partition twice.
    let wants = [
        want("dup", 0, 1),
        want("dup", 0, 3),
        want("dup", 0, 1),
        want("dup", 0, 0),
    ];
    let results = cluster
        .fetch_many(&wants, &opts(Duration::from_millis(100)))
        .await;
    assert_eq!(results.len(), 4);
    for (r, w) in results.iter().zip(&wants) {
        assert_batch_at(r, w.offset);
    }
    assert_eq!(ok(&results[0]), ok(&results[2]));
}

#[tokio::test]
async fn fetch_many_of_nothing_is_nothing() {
    let mock = mock(1);
    let cluster = connect(&mock).await;
    let results = cluster.fetch_many(&[], &opts(Duration::from_secs(2))).await;
    assert!(results.is_empty());
}
