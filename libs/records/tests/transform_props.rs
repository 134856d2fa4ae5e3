//! Property tests: random source logs (every codec, idempotent and
//! transactional data, commits and aborts, compaction holes, LogAppendTime,
//! fetches starting anywhere and cut anywhere) mirror to exactly one marked
//! record per offset; malformed input is an error, never a panic.

mod common;

use bytes::Bytes;
use common::*;
use cutover_records::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Data { n: usize, codec: Codec, big: bool },
    Idempotent { pid: i64, n: usize, codec: Codec },
    Txn { pid: i64, n: usize, codec: Codec },
    End { pid: i64, commit: bool },
    Hole { n: i64 },
    Compacted { keep: Vec<bool>, codec: Codec },
    LogAppend { n: usize, codec: Codec },
}

fn codec() -> impl Strategy<Value = Codec> {
    prop::sample::select(Codec::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..6usize, codec(), any::<bool>()).prop_map(|(n, codec, big)| Op::Data { n, codec, big }),
        2 => (1..3i64, 1..5usize, codec()).prop_map(|(pid, n, codec)| Op::Idempotent { pid, n, codec }),
        3 => (10..13i64, 1..5usize, codec()).prop_map(|(pid, n, codec)| Op::Txn { pid, n, codec }),
        2 => (10..13i64, any::<bool>()).prop_map(|(pid, commit)| Op::End { pid, commit }),
        1 => (1..30i64).prop_map(|n| Op::Hole { n }),
        2 => (prop::collection::vec(any::<bool>(), 1..9), codec()).prop_map(|(keep, codec)| Op::Compacted { keep, codec }),
        1 => (1..4usize, codec()).prop_map(|(n, codec)| Op::LogAppend { n, codec }),
    ]
}

fn build(ops: &[Op], closes: &[bool]) -> SourceLog {
    let mut log = SourceLog::new(0);
    for op in ops {
        match op.clone() {
            Op::Data { n, codec, big } => {
                log.data(n, codec, if big { 3000 } else { 40 });
            }
            Op::Idempotent { pid, n, codec } => {
                log.idempotent(pid, n, codec, 60);
            }
            Op::Txn { pid, n, codec } => log.txn(pid, n, codec, 50),
            Op::End { pid, commit } => log.end_txn(pid, commit),
            Op::Hole { n } => log.hole(n),
            Op::Compacted { keep, codec } => log.compacted(&keep, codec, 30),
            Op::LogAppend { n, codec } => log.log_append(n, codec, 1_750_000_000_000 + log.next),
        }
    }
    // read_committed stops at the first open transaction: close them all.
    for (i, pid) in log.open_txns().into_iter().enumerate() {
        log.end_txn(pid, closes.get(i).copied().unwrap_or(true));
    }
    // A log ends with a batch (a trailing hole is not visible yet).
    log.data(1, Codec::None, 10);
    log
}

fn config() -> impl Strategy<Value = TransformConfig> {
    (
        codec(),
        prop::option::of(codec()),
        prop::sample::select(vec![0usize, 300, 16 * 1024]),
        prop::sample::select(vec![4_000usize, 20_000, 1_048_588]),
        any::<bool>(),
    )
        .prop_map(
            |(filler_codec, topic_codec, coalesce_below_bytes, max_batch_bytes, keyed_fillers)| {
                TransformConfig {
                    filler_codec,
                    topic_codec,
                    coalesce_below_bytes,
                    max_batch_bytes,
                    keyed_fillers,
                }
            },
        )
}

proptest! {
    // PROPTEST_CASES still overrides, for longer hunts.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_logs_mirror_one_record_per_offset(
        ops in prop::collection::vec(op(), 1..40),
        closes in prop::collection::vec(any::<bool>(), 3),
        cfg in config(),
        start_frac in 0.0f64..1.0,
        fetch_max in prop::sample::select(vec![1usize, 150, 1_000, 10_000, usize::MAX]),
    ) {
        let log = build(&ops, &closes);
        let from = ((log.next as f64) * start_frac) as i64;
        // mirror() asserts contiguity, broker rules, offsets and contents.
        let outs = mirror(&log, from, &cfg, fetch_max);
        let covered: i64 = outs.iter().map(|o| i64::from(o.record_count)).sum();
        prop_assert_eq!(covered, log.next - from);
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
        aborted in prop::collection::vec((0..5i64, 0..100i64), 0..5),
        next in 0..100i64,
    ) {
        let fetched = FetchedPartition {
            records: Bytes::from(bytes),
            aborted: aborted.into_iter().map(|(producer_id, first_offset)| AbortedTxn { producer_id, first_offset }).collect(),
            ..Default::default()
        };
        for b in batches(&fetched.records) {
            match b {
                Ok(b) => { let _ = b.records(); }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
        let mut t = Transformer::new(next, TransformConfig::default());
        if let Ok(outs) = t.push(&fetched) {
            check_contiguous(next, &outs, t.next_offset());
        } else {
            prop_assert_eq!(t.next_offset(), next);
        }
    }

    #[test]
    fn corrupted_logs_are_errors_or_valid_output(
        ops in prop::collection::vec(op(), 1..10),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        repair in any::<bool>(),
    ) {
        let log = build(&ops, &[]);
        let mut fetched = log.fetch(0, usize::MAX);
        let mut bytes = fetched.records.to_vec();
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        if repair {
            fix_crcs(&mut bytes);
        }
        fetched.records = Bytes::from(bytes);
        let mut t = Transformer::new(0, TransformConfig::default());
        if let Ok(outs) = t.push(&fetched) {
            check_contiguous(0, &outs, t.next_offset());
            let rules = ProduceRules::default();
            for o in &outs {
                // Forwarded batches are not decompressed, so only their
                // header is ours to vouch for.
                if o.kind == OutKind::Forwarded {
                    prop_assert!(rules::check_batch_header(&o.bytes(), &rules).is_ok());
                } else {
                    prop_assert!(check_partition_records(&o.bytes(), &rules).is_ok());
                }
            }
        } else {
            prop_assert_eq!(t.next_offset(), 0);
        }
    }

    #[test]
    fn encode_decode_round_trip(
        records in prop::collection::vec(
            (any::<i64>(), prop::option::of(prop::collection::vec(any::<u8>(), 0..40)), prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
             prop::collection::vec((prop::collection::vec(any::<u8>(), 0..8), prop::option::of(prop::collection::vec(any::<u8>(), 0..8))), 0..3)),
            1..30),
        codec in codec(),
    ) {
        let records: Vec<RecordToWrite> = records
            .into_iter()
            .map(|(timestamp, key, value, headers)| RecordToWrite {
                timestamp,
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                headers: headers.into_iter().map(|(k, v)| (Bytes::from(k), v.map(Bytes::from))).collect(),
            })
            .collect();
        let b = encode_batch(&records, &EncodeOptions::new(codec)).unwrap();
        check_partition_records(&b, &ProduceRules::default()).unwrap();
        let raw = RawBatch::parse(b.freeze()).unwrap();
        prop_assert!(!is_filler(&raw.header));
        let decoded: Vec<RecordToWrite> = raw.records().unwrap().into_iter().map(Into::into).collect();
        prop_assert_eq!(decoded, records);
    }
}

/// Rewrites the CRC of every complete batch, so corruption reaches the
/// decoders instead of stopping at the checksum.
fn fix_crcs(buf: &mut [u8]) {
    let mut pos = 0usize;
    while let Some(head) = buf.get(pos..pos + 61) {
        let len = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        let Ok(len) = usize::try_from(len) else {
            return;
        };
        let end = pos + 12 + len;
        if len < 49 || end > buf.len() {
            return;
        }
        let crc = batch::compute_crc(&buf[pos..end]);
        buf[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

fn check_contiguous(start: i64, outs: &[OutBatch], end: i64) {
    let mut next = start;
    for o in outs {
        assert_eq!(o.source_offset, next);
        assert!(o.record_count > 0);
        next = o.next_source_offset();
    }
    assert_eq!(next, end);
}
