//! Arbitrary fetched data and aborted-transaction lists pushed into a
//! Transformer: every outcome is an error or output that covers exactly the
//! offsets consumed, with every batch acceptable to a broker.
#![no_main]

use bytes::Bytes;
use cutover_records::rules::{check_batch_header, check_partition_records, ProduceRules};
use cutover_records::{AbortedTxn, Codec, FetchedPartition, OutKind, TransformConfig, Transformer};
use libfuzzer_sys::fuzz_target;

/// Rewrites the CRC of every complete batch, so that mutations reach the
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
        let crc = cutover_records::batch::compute_crc(&buf[pos..end]);
        buf[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

/// Input layout: [flags][next offset: u16][n aborted][n x (pid u8, first offset u16)][records...]
fn split(data: &[u8]) -> Option<(u8, i64, Vec<AbortedTxn>, &[u8])> {
    let (&flags, rest) = data.split_first()?;
    let (next, rest) = rest.split_first_chunk::<2>()?;
    let (&n, mut rest) = rest.split_first()?;
    let mut aborted = Vec::new();
    for _ in 0..(n % 8) {
        let (entry, tail) = rest.split_first_chunk::<3>()?;
        aborted.push(AbortedTxn {
            producer_id: i64::from(entry[0] % 4),
            first_offset: i64::from(u16::from_be_bytes([entry[1], entry[2]])),
        });
        rest = tail;
    }
    Some((flags, i64::from(u16::from_be_bytes(*next)), aborted, rest))
}

fuzz_target!(|data: &[u8]| {
    let Some((flags, next, aborted, records)) = split(data) else {
        return;
    };
    let topic_codec = match flags & 0x7 {
        c @ 0..=4 => Codec::from_id(i16::from(c)),
        _ => None,
    };
    let config = TransformConfig {
        topic_codec,
        coalesce_below_bytes: if flags & 0x8 != 0 { 0 } else { 16 * 1024 },
        max_batch_bytes: if flags & 0x10 != 0 { 2_000 } else { 1_048_588 },
        keyed_fillers: flags & 0x20 != 0,
        filler_codec: if flags & 0x40 != 0 {
            Codec::None
        } else {
            Codec::Zstd
        },
    };
    let rules = ProduceRules {
        max_message_bytes: config.max_batch_bytes,
        topic_codec: config.topic_codec,
        produce_version: 9,
        transactional: false,
    };
    let mut records = records.to_vec();
    // Most inputs get valid checksums: the interesting code is behind them.
    if next % 4 != 0 {
        fix_crcs(&mut records);
    }
    let fetched = FetchedPartition {
        records: Bytes::from(records),
        aborted,
        // Bounds holes, for fuzzing speed; the per-push filler budget that
        // bounds them without a high watermark is covered by unit tests.
        high_watermark: next + 10_000,
        last_stable_offset: if flags & 0x80 != 0 { next + 2_000 } else { -1 },
        log_start_offset: 0,
    };
    let mut t = Transformer::new(next, config);
    match t.push(&fetched) {
        Ok(outs) => {
            let mut at = next;
            for o in &outs {
                assert_eq!(o.source_offset, at);
                assert!(o.record_count > 0);
                // Forwarded batches are not decompressed: only their header
                // is ours to vouch for (a real source broker validated the rest).
                let checked = if o.kind == OutKind::Forwarded {
                    check_batch_header(&o.bytes(), &rules)
                } else {
                    check_partition_records(&o.bytes(), &rules)
                };
                if let Err(e) = checked {
                    panic!(
                        "{:?} batch at {} breaks a broker rule: {e}",
                        o.kind, o.source_offset
                    );
                }
                at = o.next_source_offset();
            }
            assert_eq!(at, t.next_offset());
        }
        Err(_) => assert_eq!(t.next_offset(), next),
    }
});
