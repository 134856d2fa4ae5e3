use std::time::Duration;

use cutover_kafka::{FetchOptions, KafkaError, OffsetSpec};

use crate::common::{
    connect, consume, encode_batch, mock, parse_batches, produce_with_librdkafka, Kv,
};

fn opts() -> FetchOptions {
    FetchOptions {
        max_wait: Duration::from_millis(50),
        ..FetchOptions::default()
    }
}

#[tokio::test]
async fn pipelined_produce_is_contiguous_and_readable_by_librdkafka() {
    let mock = mock(1);
    mock.create_topic("p", 1, 1).unwrap();
    let cluster = connect(&mock).await;

    const BATCHES: usize = 20;
    const PER_BATCH: usize = 5;
    let mut expected: Vec<Kv> = Vec::new();
    let mut handles = Vec::new();
    // All 20 are queued before the first answer is awaited.
    for b in 0..BATCHES {
        let records: Vec<Kv> = (0..PER_BATCH)
            .map(|r| {
                let i = b * PER_BATCH + r;
                (
                    Some(format!("key-{i}").into_bytes()),
                    Some(format!("value-{i}").into_bytes()),
                )
            })
            .collect();
        expected.extend(records.iter().cloned());
        let batch = encode_batch(&records, 1_700_000_000_000 + b as i64);
        let h = cluster
            .send_produce("p", 0, batch, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(h.version(), 10);
        handles.push(h);
    }
    for (b, h) in handles.into_iter().enumerate() {
        let r = h.await.unwrap();
        assert_eq!(r.base_offset, (b * PER_BATCH) as i64, "batch {b}");
    }

    let got = consume(mock.bootstrap_servers(), "p".into(), 0, expected.len()).await;
    assert_eq!(got.len(), expected.len());
    for (i, ((offset, kv), want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(*offset, i as i64);
        assert_eq!(kv, want, "record {i}");
    }

    let latest = cluster
        .list_offsets("p", &[0], OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(
        latest[0].1.as_ref().unwrap(),
        &((BATCHES * PER_BATCH) as i64)
    );
}

async fn fetch_codec(codec: &str, attr: i16) {
    let mock = mock(1);
    let topic = format!("c-{codec}");
    mock.create_topic(&topic, 1, 1).unwrap();
    produce_with_librdkafka(&mock.bootstrap_servers(), &topic, codec, 100).await;
    let cluster = connect(&mock).await;

    let mut offset = 0;
    let mut batches = Vec::new();
    while offset < 100 {
        let f = cluster.fetch(&topic, 0, offset, &opts()).await.unwrap();
        assert_eq!(f.high_watermark, 100);
        assert_eq!(f.last_stable_offset, 100);
        assert_eq!(f.log_start_offset, 0);
        assert!(f.aborted.is_empty());
        let parsed = parse_batches(&f.records);
        assert!(!parsed.is_empty(), "no batch at offset {offset}");
        for b in &parsed {
            assert_eq!(b.codec, attr, "codec of batch {b:?}");
            assert_eq!(b.base_offset, offset, "batches are contiguous");
            offset = b.last_offset + 1;
        }
        batches.extend(parsed);
    }
    assert_eq!(offset, 100);
    assert!(
        batches.len() > 1,
        "producer should have made several batches"
    );
    assert_eq!(
        batches.iter().map(|b| b.record_count as i64).sum::<i64>(),
        100
    );

    // From the middle of a batch: the broker returns the whole batch that
    // contains the offset.
    let mid = batches[batches.len() / 2].base_offset + 1;
    let f = cluster.fetch(&topic, 0, mid, &opts()).await.unwrap();
    let first = &parse_batches(&f.records)[0];
    assert!(
        first.base_offset <= mid && mid <= first.last_offset,
        "{first:?} vs {mid}"
    );

    // At the end: nothing, no error.
    let f = cluster.fetch(&topic, 0, 100, &opts()).await.unwrap();
    assert!(f.records.is_empty());
    assert_eq!(f.high_watermark, 100);
}

#[tokio::test]
async fn fetch_reads_librdkafka_lz4_batches() {
    fetch_codec("lz4", 3).await;
}

#[tokio::test]
async fn fetch_reads_librdkafka_zstd_batches() {
    fetch_codec("zstd", 4).await;
}

#[tokio::test]
async fn list_offsets_and_offset_out_of_range() {
    let mock = mock(1);
    mock.create_topic("o", 2, 1).unwrap();
    let cluster = connect(&mock).await;
    for i in 0..3 {
        let batch = encode_batch(&[(None, Some(vec![i]))], 0);
        cluster
            .send_produce("o", 1, batch, Duration::from_secs(5))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
    }

    let earliest = cluster
        .list_offsets("o", &[0, 1], OffsetSpec::Earliest)
        .await
        .unwrap();
    assert_eq!(earliest.len(), 2);
    assert_eq!((earliest[0].0, earliest[0].1.clone().unwrap()), (0, 0));
    assert_eq!((earliest[1].0, earliest[1].1.clone().unwrap()), (1, 0));
    let latest = cluster
        .list_offsets("o", &[1, 0], OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!((latest[0].0, latest[0].1.clone().unwrap()), (1, 3));
    assert_eq!((latest[1].0, latest[1].1.clone().unwrap()), (0, 0));
    let committed = cluster
        .list_offsets("o", &[1], OffsetSpec::LatestCommitted)
        .await
        .unwrap();
    assert_eq!(committed[0].1.clone().unwrap(), 3);

    // A partition that does not exist fails on its own.
    let r = cluster
        .list_offsets("o", &[0, 7], OffsetSpec::Latest)
        .await
        .unwrap();
    assert!(r[0].1.is_ok());
    let e = r[1].1.clone().unwrap_err();
    assert!(
        matches!(e, KafkaError::UnknownTopicOrPartition { partition: 7, .. }),
        "{e:?}"
    );

    // A topic that does not exist fails the call.
    let e = cluster
        .list_offsets("nope", &[0], OffsetSpec::Latest)
        .await
        .unwrap_err();
    assert!(
        matches!(e, KafkaError::UnknownTopicOrPartition { partition: -1, .. }),
        "{e:?}"
    );

    let e = cluster.fetch("o", 1, 1000, &opts()).await.unwrap_err();
    assert!(e.is_offset_out_of_range(), "{e:?}");
    assert_eq!(e.code(), Some(1));
    assert!(!e.is_retriable());
}
