mod common;

use bytes::Bytes;
use common::*;
use cutover_records::transform::{self, TransformError};
use cutover_records::*;

fn cfg() -> TransformConfig {
    TransformConfig::default()
}

fn kinds(outs: &[OutBatch]) -> Vec<OutKind> {
    outs.iter().map(|o| o.kind).collect()
}

#[test]
fn large_batches_are_forwarded_byte_for_byte_for_every_codec() {
    for codec in Codec::ALL {
        let mut log = SourceLog::new(0);
        log.idempotent(77, 50, codec, 2000);
        log.data(60, codec, 2000);
        let outs = mirror(&log, 0, &cfg(), usize::MAX);
        // mirror() checks the records sections are byte-identical.
        assert_eq!(kinds(&outs), vec![OutKind::Forwarded; 2], "{codec}");
    }
}

/// Batches above the default coalescing size, whatever the codec.
fn noisy_log(codec: Codec, batches: usize, n: usize) -> SourceLog {
    let mut log = SourceLog::new(0);
    for i in 0..batches {
        if i % 2 == 0 {
            log.data(n, codec, 20_000);
        } else {
            log.idempotent(5, n, codec, 20_000);
        }
    }
    log
}

#[test]
fn forwarded_batches_keep_the_records_section_and_clear_producer_fields() {
    for codec in Codec::ALL {
        let log = noisy_log(codec, 4, 3);
        let cfg = TransformConfig {
            coalesce_below_bytes: 64,
            ..cfg()
        };
        let outs = mirror(&log, 0, &cfg, usize::MAX);
        assert_eq!(kinds(&outs), vec![OutKind::Forwarded; 4], "{codec}");
        for o in &outs {
            let h = o.header();
            assert_eq!(h.base_offset, 0);
            assert_eq!(h.codec().unwrap(), codec);
        }
    }
}

#[test]
fn small_batches_are_coalesced_into_few_reencoded_batches() {
    let mut log = SourceLog::new(0);
    for i in 0..200 {
        log.data(1 + i % 3, Codec::ALL[i % 5], 30);
    }
    // Same codec run: a single batch.
    let mut same = SourceLog::new(0);
    for _ in 0..200 {
        same.data(2, Codec::Lz4, 30);
    }
    let outs = mirror(&same, 0, &cfg(), usize::MAX);
    assert_eq!(kinds(&outs), vec![OutKind::Reencoded]);
    assert_eq!(outs[0].record_count, 400);
    // Mixed codecs and a topic codec: everything becomes zstd, in few batches.
    let cfg = TransformConfig {
        topic_codec: Some(Codec::Zstd),
        ..cfg()
    };
    let outs = mirror(&log, 0, &cfg, usize::MAX);
    assert_eq!(outs.len(), 1, "{:?}", kinds(&outs));
}

#[test]
fn coalescing_respects_max_batch_bytes() {
    let mut log = SourceLog::new(0);
    for _ in 0..300 {
        log.data(3, Codec::None, 300);
    }
    let cfg = TransformConfig {
        max_batch_bytes: 10_000,
        ..cfg()
    };
    let outs = mirror(&log, 0, &cfg, usize::MAX);
    assert!(outs.len() > 20, "{} batches", outs.len());
    assert!(outs.iter().all(|o| o.len() <= 10_000));
    // Batches are filled, not one per source batch.
    assert!(outs.len() < 150, "{} batches", outs.len());
}

#[test]
fn a_source_batch_above_the_target_limit_is_split() {
    let mut log = SourceLog::new(0);
    log.data(50, Codec::None, 1000);
    let cfg = TransformConfig {
        max_batch_bytes: 8000,
        coalesce_below_bytes: 0,
        ..cfg()
    };
    let outs = mirror(&log, 0, &cfg, usize::MAX);
    // 43 of the 50 records carry 1000 bytes.
    assert!(outs.len() > 43_000 / 8000, "{} batches", outs.len());
    assert!(outs
        .iter()
        .all(|o| o.kind == OutKind::Reencoded && o.len() <= 8000));
}

#[test]
fn a_record_larger_than_the_target_limit_is_an_error() {
    let mut log = SourceLog::new(0);
    log.data(2, Codec::None, 5000);
    let mut t = Transformer::new(
        0,
        TransformConfig {
            max_batch_bytes: 3000,
            ..cfg()
        },
    );
    let err = t.push(&log.fetch(0, usize::MAX)).unwrap_err();
    // Offset 0 has a null value; offset 1 is the large one.
    assert!(
        matches!(
            err,
            TransformError::RecordTooLarge {
                offset: 1,
                max: 3000,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(t.next_offset(), 0, "nothing consumed on error");
}

#[test]
fn control_batches_become_control_fillers_at_their_offsets() {
    let mut log = SourceLog::new(0);
    log.data(3, Codec::None, 10);
    log.txn(11, 2, Codec::Gzip, 10);
    log.end_txn(11, true);
    log.txn(12, 2, Codec::Snappy, 10);
    log.end_txn(12, false);
    log.data(1, Codec::None, 10);
    let outs = mirror(&log, 0, &cfg(), usize::MAX);
    let control: Vec<i64> = outs
        .iter()
        .filter(|o| o.kind == OutKind::Filler(FillerReason::Control))
        .map(|o| o.source_offset)
        .collect();
    assert_eq!(control, vec![5, 8]);
    assert!(outs
        .iter()
        .any(|o| o.kind == OutKind::Filler(FillerReason::Aborted) && o.source_offset == 6));
}

#[test]
fn aborted_transactions_interleaved_with_committed_and_plain_data() {
    let mut log = SourceLog::new(0);
    log.data(2, Codec::None, 10);
    log.txn(1, 3, Codec::Zstd, 10); // aborted later
    log.txn(2, 2, Codec::Lz4, 10); // committed later
    log.data(2, Codec::Gzip, 10);
    log.idempotent(9, 2, Codec::None, 10);
    log.txn(1, 1, Codec::Zstd, 10);
    log.end_txn(2, true);
    log.txn(2, 2, Codec::None, 10); // a second transaction of producer 2, aborted
    log.end_txn(1, false);
    log.data(1, Codec::None, 10);
    log.end_txn(2, false);
    // Producer 1 again, committed this time: must not be taken as aborted.
    log.txn(1, 2, Codec::None, 10);
    log.end_txn(1, true);
    log.data(2, Codec::Snappy, 10);
    assert_eq!(log.aborted.len(), 2);
    for fetch_max in [usize::MAX, 200, 1] {
        let outs = mirror(&log, 0, &cfg(), fetch_max);
        let aborted: i32 = outs
            .iter()
            .filter(|o| o.kind == OutKind::Filler(FillerReason::Aborted))
            .map(|o| o.record_count)
            .sum();
        assert_eq!(aborted, 3 + 1 + 2, "fetch_max {fetch_max}");
    }
}

#[test]
fn compaction_holes_between_and_inside_batches() {
    let mut log = SourceLog::new(0);
    log.data(2, Codec::None, 10);
    log.hole(5);
    log.compacted(
        &[false, true, true, false, false, true, false],
        Codec::Zstd,
        10,
    );
    log.hole(1);
    log.compacted(&[true, false, true], Codec::None, 10);
    // An empty batch the cleaner kept for producer state.
    log.compacted(&[false, false, false, false], Codec::None, 10);
    log.data(1, Codec::Lz4, 10);
    let outs = mirror(&log, 0, &cfg(), usize::MAX);
    let holes: i32 = outs
        .iter()
        .filter(|o| o.kind == OutKind::Filler(FillerReason::Hole))
        .map(|o| o.record_count)
        .sum();
    assert_eq!(holes, 5 + 4 + 1 + 1 + 4);
    let keyed = TransformConfig {
        keyed_fillers: true,
        ..cfg()
    };
    mirror(&log, 0, &keyed, 60);
}

#[test]
fn a_fetch_starting_inside_a_batch_keeps_only_later_records() {
    let log = noisy_log(Codec::Gzip, 3, 5);
    for from in [1, 4, 5, 7, 14] {
        let outs = mirror(&log, from, &cfg(), usize::MAX);
        assert_eq!(outs[0].source_offset, from);
        if from % 5 != 0 {
            assert_eq!(outs[0].kind, OutKind::Reencoded, "from {from}");
        } else {
            assert_eq!(outs[0].kind, OutKind::Forwarded, "from {from}");
        }
    }
    // Inside an aborted transaction and inside a compacted batch.
    let mut log = SourceLog::new(0);
    log.txn(3, 4, Codec::None, 10);
    log.end_txn(3, false);
    log.compacted(&[true, false, true, true], Codec::Snappy, 10);
    log.data(1, Codec::None, 10);
    for from in 0..log.next {
        mirror(&log, from, &cfg(), usize::MAX);
    }
}

#[test]
fn a_partial_trailing_batch_is_left_for_the_next_fetch() {
    let log = noisy_log(Codec::None, 3, 2);
    let first = log.batches[&0].len();
    let second = log.batches[&2].len();
    let mut t = Transformer::new(0, cfg());
    let mut fetched = log.fetch(0, first + second / 2);
    let outs = t.push(&fetched).unwrap();
    assert_eq!(outs.len(), 1);
    assert_eq!(t.next_offset(), 2);
    // Nothing complete at all: nothing emitted, nothing consumed.
    fetched.records = fetched.records.slice(first..first + 10);
    assert!(t.push(&fetched).unwrap().is_empty());
    assert_eq!(t.next_offset(), 2);
    let outs = t.push(&log.fetch(2, usize::MAX)).unwrap();
    assert_eq!(
        outs.iter().map(|o| o.source_offset).collect::<Vec<_>>(),
        vec![2, 4]
    );
    // Every cut of the whole log behaves.
    for max in [1, 100, first - 1, first + 1, 3 * first] {
        mirror(&log, 0, &cfg(), max);
    }
}

#[test]
fn log_start_above_zero_is_filled_with_log_start_fillers() {
    let start = 300_000;
    let mut src = SourceLog::new(start);
    src.data(3, Codec::None, 10);
    let mut t = Transformer::new(0, cfg());
    let fillers = t
        .fill_to_at(start, FillerReason::LogStart, 1_700_000_000_000)
        .unwrap();
    assert_eq!(t.next_offset(), start);
    let total: usize = fillers.iter().map(|o| o.len()).sum();
    assert!(total < start as usize, "{total} bytes for {start} offsets");
    let mut target = Target::new(0);
    for o in &fillers {
        assert_eq!(o.kind, OutKind::Filler(FillerReason::LogStart));
        assert!(is_filler(&o.header()));
    }
    // The fillers are contiguous and accepted by the modelled broker.
    let mut expected = SourceLog::new(0);
    expected.expected = (0..start)
        .map(|o| (o, Expect::Filler(FillerReason::LogStart)))
        .collect();
    let mut fillers = fillers;
    assert_eq!(
        verify(&expected, 0, &mut fillers, &cfg(), &mut target),
        start
    );
    let mut outs = t.push(&src.fetch(start, usize::MAX)).unwrap();
    assert_eq!(
        verify(&src, start, &mut outs, &cfg(), &mut target),
        start + 3
    );
    // Filling backwards or to the same offset is a no-op.
    assert!(t.fill_to(5, FillerReason::Lost).unwrap().is_empty());
    assert_eq!(t.next_offset(), start + 3);
    // fill_to uses the wall clock.
    let lost = t.fill_to(start + 10, FillerReason::Lost).unwrap();
    assert!(lost[0].header().max_timestamp > 1_700_000_000_000);
}

#[test]
fn fill_some_bounds_the_batches_per_call() {
    let cfg = TransformConfig {
        max_batch_bytes: 50_000,
        ..cfg()
    };
    let mut t = Transformer::new(10, cfg);
    let to = 10 + 1_000_000;
    let mut calls = 0;
    let mut next = 10;
    while t.next_offset() < to {
        let outs = t.fill_some(to, FillerReason::Lost, 5, 2).unwrap();
        assert!(!outs.is_empty() && outs.len() <= 2);
        for o in &outs {
            assert_eq!(o.source_offset, next);
            assert!(o.len() <= 50_000);
            next = o.next_source_offset();
        }
        calls += 1;
    }
    assert_eq!(next, to);
    assert!(calls > 1);
}

#[test]
fn log_append_time_batches_carry_the_append_time_as_create_time() {
    for codec in Codec::ALL {
        let mut log = SourceLog::new(0);
        log.log_append(4, codec, 1_800_000_000_000);
        log.data(1, Codec::None, 10);
        let outs = mirror(
            &log,
            0,
            &TransformConfig {
                coalesce_below_bytes: 0,
                ..cfg()
            },
            usize::MAX,
        );
        assert_eq!(outs[0].kind, OutKind::Reencoded);
        assert!(!outs[0].header().is_log_append_time());
        assert_eq!(outs[0].header().max_timestamp, 1_800_000_000_000);
    }
}

#[test]
fn a_topic_codec_forces_reencoding_of_other_codecs() {
    let log = noisy_log(Codec::Zstd, 2, 2);
    let cfg = TransformConfig {
        topic_codec: Some(Codec::Gzip),
        coalesce_below_bytes: 64,
        ..cfg()
    };
    let outs = mirror(&log, 0, &cfg, usize::MAX);
    assert!(outs.iter().all(|o| o.kind == OutKind::Reencoded));
    assert!(outs
        .iter()
        .all(|o| o.header().codec().unwrap() == Codec::Gzip));
    // Fillers follow the topic codec too.
    let mut t = Transformer::new(0, cfg);
    let f = t.fill_to_at(10, FillerReason::Hole, 1).unwrap();
    assert_eq!(f[0].header().codec().unwrap(), Codec::Gzip);
    // Matching codec: forwarded.
    let log = noisy_log(Codec::Gzip, 2, 2);
    let cfg = TransformConfig {
        topic_codec: Some(Codec::Gzip),
        coalesce_below_bytes: 64,
        ..TransformConfig::default()
    };
    assert!(mirror(&log, 0, &cfg, usize::MAX)
        .iter()
        .all(|o| o.kind == OutKind::Forwarded));
}

#[test]
fn transactional_committed_batches_are_forwarded_without_the_flag() {
    let mut log = SourceLog::new(0);
    log.txn(4, 3, Codec::Lz4, 40_000);
    log.end_txn(4, true);
    let cfg = TransformConfig {
        coalesce_below_bytes: 64,
        ..cfg()
    };
    let outs = mirror(&log, 0, &cfg, usize::MAX);
    assert_eq!(
        kinds(&outs),
        vec![OutKind::Forwarded, OutKind::Filler(FillerReason::Control)]
    );
    assert!(!outs[0].header().is_transactional());
}

#[test]
fn a_source_batch_with_the_filler_marker_is_an_error() {
    let r = record_at(0, 10);
    let opts = EncodeOptions {
        base_timestamp: Some(FILLER_BASE_TIMESTAMP),
        ..EncodeOptions::default()
    };
    let b = encode_batch(&[r], &opts).unwrap().freeze();
    let mut t = Transformer::new(0, cfg());
    let err = t
        .push(&FetchedPartition {
            records: b,
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(
        err,
        TransformError::FillerMarkerInSource { offset: 0 }
    ));
    assert_eq!(t.next_offset(), 0);
}

#[test]
fn stamping_rewrites_writer_identity_and_keeps_the_crc_valid() {
    let log = noisy_log(Codec::Snappy, 2, 2);
    let mut t = Transformer::new(
        0,
        TransformConfig {
            coalesce_below_bytes: 64,
            ..cfg()
        },
    );
    let mut outs = t.push(&log.fetch(0, usize::MAX)).unwrap();
    let before = outs[0].bytes();
    assert_eq!(outs[0].header().producer_id, -1);
    RawBatch::parse(before.clone())
        .unwrap()
        .verify_crc()
        .unwrap();
    outs[0].stamp(123, 4, 99);
    let after = outs[0].bytes();
    let h = RawBatch::parse(after.clone()).unwrap();
    h.verify_crc().unwrap();
    assert_eq!(
        (
            h.header.producer_id,
            h.header.producer_epoch,
            h.header.base_sequence
        ),
        (123, 4, 99)
    );
    assert_eq!(before[61..], after[61..]);
    assert_ne!(before[17..21], after[17..21]);
}

#[test]
fn a_stale_fetcher_is_fenced_by_the_target() {
    let mut log = SourceLog::new(0);
    for _ in 0..4 {
        log.data(2, Codec::None, 10);
    }
    let mut target = ProducerStateModel::new();
    // Owner A (epoch 0) writes the first batch.
    let mut a = Transformer::new(0, cfg());
    let mut outs_a = a.push(&log.fetch(0, 40)).unwrap();
    outs_a[0].stamp(PID, 0, 0);
    target.append(0, &outs_a[0].bytes()).unwrap();
    // Owner B takes over with a bumped epoch, resuming at the target's end.
    let mut b = Transformer::new(target.log_end_offset(&0), cfg());
    let mut outs_b = b.push(&log.fetch(b.next_offset(), usize::MAX)).unwrap();
    outs_b[0].stamp(PID, 1, 0);
    target.append(0, &outs_b[0].bytes()).unwrap();
    // A's late write is rejected.
    let mut late = a.push(&log.fetch(a.next_offset(), usize::MAX)).unwrap();
    late[0].stamp(PID, 0, outs_a[0].record_count);
    let err = target.append(0, &late[0].bytes()).unwrap_err();
    assert!(err.to_string().contains("INVALID_PRODUCER_EPOCH"), "{err}");
}

#[test]
fn malformed_fetches_are_errors_and_consume_nothing() {
    let mut log = SourceLog::new(0);
    log.data(3, Codec::Gzip, 10);
    log.data(3, Codec::None, 10);
    let good = log.fetch(0, usize::MAX);
    let mut t = Transformer::new(0, cfg());
    // Bad CRC in the second batch.
    let mut bytes = good.records.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    let err = t
        .push(&FetchedPartition {
            records: Bytes::from(bytes),
            ..good.clone()
        })
        .unwrap_err();
    assert!(err.to_string().contains("offset 3"), "{err}");
    assert_eq!(t.next_offset(), 0);
    // Batches out of order.
    let first = log.batches[&0].clone();
    let second = log.batches[&3].clone();
    let swapped = Bytes::from([second.to_vec(), first.to_vec()].concat());
    let err = t
        .push(&FetchedPartition {
            records: swapped,
            ..good.clone()
        })
        .unwrap_err();
    assert!(
        matches!(err, TransformError::InvalidBatch { offset: 0, .. }),
        "{err}"
    );
    // Random bytes.
    let err = t.push(&FetchedPartition {
        records: Bytes::from_static(&[0xab; 200]),
        ..good.clone()
    });
    assert!(err.is_err());
    assert_eq!(t.next_offset(), 0);
    // And the good data still goes through (gzip and uncompressed runs).
    assert_eq!(t.push(&good).unwrap().len(), 2);
    assert_eq!(t.next_offset(), 6);
}

#[test]
fn a_huge_hole_is_filled_over_several_pushes() {
    let mut log = SourceLog::new(0);
    log.data(1, Codec::None, 10);
    let hole = 2 * transform::fill_budget(Codec::None) + 5;
    log.hole(hole);
    log.data(2, Codec::None, 10);
    let cfg = TransformConfig {
        filler_codec: Codec::None,
        ..cfg()
    };
    let mut t = Transformer::new(0, cfg);
    let mut pushes = 0;
    let mut next = 0;
    while t.next_offset() < log.next {
        let outs = t.push(&log.fetch(t.next_offset(), usize::MAX)).unwrap();
        for o in &outs {
            assert_eq!(o.source_offset, next);
            next = o.next_source_offset();
        }
        assert_eq!(next, t.next_offset());
        pushes += 1;
    }
    assert_eq!(pushes, 3);
    assert_eq!(t.next_offset(), 1 + hole + 2);
}

/// A real broker reports the last stable offset it saw before reading and
/// reads under the current one, so a fetch can carry batches past the
/// reported limit (seen on Kafka 3.9.2 in `real_faults.rs`). Nothing past
/// the reported limit is copied: it waits for the next fetch.
#[test]
fn data_beyond_the_reported_last_stable_offset_waits_for_the_next_fetch() {
    let mut log = SourceLog::new(0);
    log.data(2, Codec::None, 10);
    log.data(2, Codec::None, 10);
    let mut fetched = log.fetch(0, usize::MAX);
    fetched.last_stable_offset = 2;
    let mut t = Transformer::new(0, cfg());
    let outs = t.push(&fetched).unwrap();
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].next_source_offset(), 2);
    assert_eq!(t.next_offset(), 2);
    let mut next = log.fetch(2, usize::MAX);
    next.last_stable_offset = 4;
    let outs = t.push(&next).unwrap();
    assert_eq!(outs.len(), 1);
    assert_eq!(t.next_offset(), 4);
}

#[test]
fn a_huge_hole_inside_a_compacted_batch_is_filled_over_several_pushes() {
    let budget = transform::fill_budget(Codec::None);
    let span = 2 * budget as i32 + 10;
    let records = [(0, record_at(0, 10)), (span - 1, record_at(1, 10))];
    let batch = encode_sparse_batch(&records, span - 1, &EncodeOptions::new(Codec::Gzip)).unwrap();
    let fetched = FetchedPartition {
        records: batch.freeze(),
        ..Default::default()
    };
    let cfg = TransformConfig {
        filler_codec: Codec::None,
        ..cfg()
    };
    let mut t = Transformer::new(0, cfg);
    let mut kinds_seen = Vec::new();
    let mut next = 0;
    // Each fetch inside the batch returns the whole batch again.
    while t.next_offset() < i64::from(span) {
        let outs = t.push(&fetched).unwrap();
        for o in &outs {
            assert_eq!(o.source_offset, next);
            next = o.next_source_offset();
            kinds_seen.push((o.source_offset, o.kind));
        }
        assert_eq!(next, t.next_offset());
        assert!(kinds_seen.len() < 1000, "no progress");
    }
    assert_eq!(t.next_offset(), i64::from(span));
    assert_eq!(kinds_seen.first(), Some(&(0, OutKind::Reencoded)));
    assert_eq!(
        kinds_seen.last(),
        Some(&(span as i64 - 1, OutKind::Reencoded))
    );
}
