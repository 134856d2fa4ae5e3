//! Filler records: placeholders for offsets that cannot be copied as data, so
//! that the target assigns the same offsets as the source.
//!
//! A filler batch is recognisable from its header alone (baseTimestamp ==
//! FILLER_BASE_TIMESTAMP), because a broker keeps the baseTimestamp a client
//! sends when it does not rebuild the batch; every filler record also carries
//! a `cutover.filler` header naming why it exists.

use std::fmt;

use bytes::BytesMut;

use crate::batch::{BatchHeader, BatchWriter, Codec, EncodeOptions, Record, HEADER_LEN};
use crate::varint;
use crate::RecordsError;

/// baseTimestamp of every filler batch ("CUTOVER" in ASCII, negated): no
/// producer writes a timestamp near -4.8e18 ms.
pub const FILLER_BASE_TIMESTAMP: i64 = -0x4355_544F_5645_5200;
/// Name of the record header that marks a filler record.
pub const FILLER_HEADER: &str = "cutover.filler";
/// Key of filler records on compacted topics, which refuse null keys. Its
/// value is null, so on a compacted target fillers are tombstones and the
/// cleaner removes them, as the source's cleaner removed what they replace.
pub const FILLER_KEY: &[u8] = b"cutover.filler";
/// Cap on a filler batch's uncompressed records, so that any reader (the
/// target broker validates every batch it receives) decompresses a bounded
/// amount; about 1.5 million records.
pub const MAX_FILLER_UNCOMPRESSED: usize = 64 << 20;
/// zstd level for fillers. Filler records differ from the previous one only
/// in the offset delta, so zstd's fast strategy encodes each as one literal
/// plus a repeat-offset match; measured on 1.4M records, level 1 gave about
/// 0.95 bytes per record in 25 ms, while levels 3 to 19 were no smaller
/// (0.7 at best) and up to 2000 times slower.
pub const FILLER_ZSTD_LEVEL: i32 = 1;

/// Why an offset is a filler; written as the `cutover.filler` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FillerReason {
    /// A transaction marker (control batch).
    Control,
    /// A record of an aborted transaction.
    Aborted,
    /// A record removed by compaction.
    Hole,
    /// Below the source's log start offset.
    LogStart,
    /// Removed by retention on the source before it was copied.
    Lost,
}

impl FillerReason {
    pub const ALL: [FillerReason; 5] = [
        FillerReason::Control,
        FillerReason::Aborted,
        FillerReason::Hole,
        FillerReason::LogStart,
        FillerReason::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FillerReason::Control => "control",
            FillerReason::Aborted => "aborted",
            FillerReason::Hole => "hole",
            FillerReason::LogStart => "log-start",
            FillerReason::Lost => "lost",
        }
    }

    pub fn from_bytes(b: &[u8]) -> Option<FillerReason> {
        FillerReason::ALL
            .into_iter()
            .find(|r| r.as_str().as_bytes() == b)
    }
}

impl fmt::Display for FillerReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a batch is a filler batch, from its header alone.
pub fn is_filler(h: &BatchHeader) -> bool {
    h.base_timestamp == FILLER_BASE_TIMESTAMP && !h.is_control()
}

/// The record-level marker: the reason of a filler record, `None` for data.
pub fn filler_reason(r: &Record) -> Option<FillerReason> {
    match r.header(FILLER_HEADER.as_bytes()) {
        Some(Some(v)) => FillerReason::from_bytes(v),
        _ => None,
    }
}

/// Filler batches for `count` consecutive offsets whose records all have
/// `timestamp`, each batch at most `max_batch_bytes` (compressed) and with as
/// many records as fit. Memory: the returned batches plus one batch being
/// built; use [`FillerBatches`] to hold only one batch at a time.
pub fn filler_batches(
    count: i64,
    timestamp: i64,
    reason: FillerReason,
    codec: Codec,
    keyed: bool,
    max_batch_bytes: usize,
) -> Result<Vec<BytesMut>, RecordsError> {
    FillerBatches::new(reason, codec, keyed, max_batch_bytes)
        .with_run(count, timestamp)
        .map(|r| r.map(|(b, _)| b))
        .collect()
}

/// Lazily builds filler batches for runs of (count, timestamp), one batch per
/// `next()`; yields each batch with its record count.
#[derive(Debug, Clone)]
pub struct FillerBatches {
    runs: std::collections::VecDeque<(i64, i64)>,
    reason: FillerReason,
    codec: Codec,
    keyed: bool,
    max_batch_bytes: usize,
    /// Records to try in the next compressed batch; learnt from the last one.
    guess: usize,
    failed: bool,
}

impl FillerBatches {
    pub fn new(reason: FillerReason, codec: Codec, keyed: bool, max_batch_bytes: usize) -> Self {
        FillerBatches {
            runs: Default::default(),
            reason,
            codec,
            keyed,
            max_batch_bytes,
            // About one byte per record compressed: right for zstd, and one
            // retry for the codecs that compress fillers less.
            guess: max_batch_bytes.max(1),
            failed: false,
        }
    }

    /// Appends `count` offsets whose records have `timestamp`; a count ≤ 0
    /// adds nothing.
    pub fn with_run(mut self, count: i64, timestamp: i64) -> Self {
        self.push_run(count, timestamp);
        self
    }

    pub fn push_run(&mut self, count: i64, timestamp: i64) {
        if count <= 0 {
            return;
        }
        match self.runs.back_mut() {
            Some((c, ts)) if *ts == timestamp => *c = c.saturating_add(count),
            _ => self.runs.push_back((count, timestamp)),
        }
    }

    /// Offsets not yet put in a batch.
    pub fn remaining(&self) -> i64 {
        self.runs
            .iter()
            .fold(0i64, |a, (c, _)| a.saturating_add(*c))
    }

    fn options(&self) -> EncodeOptions {
        EncodeOptions {
            codec: self.codec,
            base_timestamp: Some(FILLER_BASE_TIMESTAMP),
            compression_level: Some(match self.codec {
                Codec::Zstd => FILLER_ZSTD_LEVEL,
                Codec::Gzip | Codec::Lz4 => 9,
                Codec::None | Codec::Snappy => 0,
            }),
            ..EncodeOptions::default()
        }
    }

    /// Writes up to `limit` records from the runs (without consuming them).
    fn fill(&self, limit: usize) -> Result<BatchWriter, RecordsError> {
        let mut w = BatchWriter::new(FILLER_BASE_TIMESTAMP);
        let mut tail = Vec::new();
        varint::put_nullable(&mut tail, self.keyed.then_some(FILLER_KEY));
        varint::put_nullable(&mut tail, None);
        varint::put_varint(&mut tail, 1);
        varint::put_nullable(&mut tail, Some(FILLER_HEADER.as_bytes()));
        varint::put_nullable(&mut tail, Some(self.reason.as_str().as_bytes()));
        let exact = self.codec == Codec::None;
        let mut written = 0usize;
        let mut head = Vec::new();
        'runs: for &(count, ts) in &self.runs {
            head.clear();
            head.push(0);
            varint::put_varlong(&mut head, ts.wrapping_sub(w.base_timestamp()));
            let mut left = count;
            while left > 0 {
                if written >= limit || w.uncompressed_len() >= MAX_FILLER_UNCOMPRESSED {
                    break 'runs;
                }
                let mark = w.mark();
                w.push_templated(w.count(), ts, &head, &tail)?;
                // Uncompressed, the size is exact: stop at the last record that fits.
                if exact && HEADER_LEN + w.uncompressed_len() > self.max_batch_bytes {
                    w.rollback(mark);
                    break 'runs;
                }
                written += 1;
                left -= 1;
            }
        }
        Ok(w)
    }

    fn consume(&mut self, mut n: i64) {
        while n > 0 {
            let Some(front) = self.runs.front_mut() else {
                return;
            };
            let take = front.0.min(n);
            front.0 -= take;
            n -= take;
            if front.0 == 0 {
                self.runs.pop_front();
            }
        }
    }

    fn next_batch(&mut self) -> Result<Option<(BytesMut, i32)>, RecordsError> {
        if self.runs.is_empty() {
            return Ok(None);
        }
        let opts = self.options();
        let too_large = RecordsError::FillerTooLarge {
            max_batch_bytes: self.max_batch_bytes,
        };
        let mut limit = self.guess.min(i32::MAX as usize);
        loop {
            let w = self.fill(limit)?;
            let n = w.count();
            if n == 0 {
                return Err(too_large);
            }
            let batch = w.finish(n - 1, &opts)?;
            if batch.len() <= self.max_batch_bytes {
                self.consume(i64::from(n));
                if self.codec != Codec::None && (n as usize) >= limit {
                    // Fillers are uniform: scale the next batch to this one's
                    // ratio, with 5% headroom (a batch cut short by the end
                    // of the runs or the uncompressed cap says nothing).
                    let scaled =
                        n as u128 * self.max_batch_bytes as u128 * 95 / 100 / batch.len() as u128;
                    self.guess =
                        (scaled as usize).clamp(n as usize, (n as usize).saturating_mul(4));
                }
                return Ok(Some((batch, n)));
            }
            if n == 1 {
                return Err(too_large);
            }
            // Scale down to the limit with 10% headroom, and always shrink.
            let scaled =
                (n as u128 * self.max_batch_bytes as u128 * 9 / 10 / batch.len() as u128) as usize;
            limit = scaled.clamp(1, n as usize - 1);
        }
    }
}

impl Iterator for FillerBatches {
    type Item = Result<(BytesMut, i32), RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = self.next_batch().transpose();
        if matches!(r, Some(Err(_))) {
            self.failed = true;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{encode_batch, RawBatch, RecordToWrite};
    use crate::rules::{check_keys_for_compacted_topic, check_partition_records, ProduceRules};

    fn decode(b: &BytesMut) -> (BatchHeader, Vec<Record>) {
        let raw = RawBatch::parse(b.clone().freeze()).unwrap();
        (raw.header, raw.records().unwrap())
    }

    #[test]
    fn fillers_are_marked_in_header_and_records_for_every_codec_and_reason() {
        for codec in Codec::ALL {
            for reason in FillerReason::ALL {
                for keyed in [false, true] {
                    let batches =
                        filler_batches(25, 1_700_000_000_123, reason, codec, keyed, 1 << 20)
                            .unwrap();
                    assert_eq!(batches.len(), 1);
                    let (h, records) = decode(&batches[0]);
                    assert!(is_filler(&h), "{codec} {reason}");
                    assert_eq!(h.codec().unwrap(), codec);
                    assert_eq!((h.record_count, h.last_offset_delta), (25, 24));
                    assert_eq!(h.max_timestamp, 1_700_000_000_123);
                    for (i, r) in records.iter().enumerate() {
                        assert_eq!(r.offset, i as i64);
                        assert_eq!(r.timestamp, 1_700_000_000_123);
                        assert_eq!(filler_reason(r), Some(reason));
                        assert_eq!(r.value, None);
                        assert_eq!(r.key.as_deref(), keyed.then_some(FILLER_KEY));
                    }
                    let rules = ProduceRules {
                        topic_codec: Some(codec),
                        ..ProduceRules::default()
                    };
                    check_partition_records(&batches[0], &rules).unwrap();
                    assert_eq!(check_keys_for_compacted_topic(&batches[0]).is_ok(), keyed);
                }
            }
        }
    }

    #[test]
    fn data_and_control_batches_are_not_fillers() {
        let r = RecordToWrite {
            timestamp: 5,
            ..Default::default()
        };
        let data = encode_batch(std::slice::from_ref(&r), &EncodeOptions::default()).unwrap();
        assert!(!is_filler(&BatchHeader::parse(&data).unwrap()));
        let control = encode_batch(
            &[r],
            &EncodeOptions {
                control: true,
                base_timestamp: Some(FILLER_BASE_TIMESTAMP),
                ..EncodeOptions::default()
            },
        )
        .unwrap();
        assert!(!is_filler(&BatchHeader::parse(&control).unwrap()));
    }

    #[test]
    fn reason_strings_round_trip() {
        for r in FillerReason::ALL {
            assert_eq!(FillerReason::from_bytes(r.as_str().as_bytes()), Some(r));
        }
        assert_eq!(FillerReason::from_bytes(b"other"), None);
        assert_eq!(FillerReason::LogStart.to_string(), "log-start");
    }

    #[test]
    fn large_ranges_are_split_under_the_size_limit_with_full_batches() {
        let max = 20_000;
        for codec in Codec::ALL {
            let batches =
                filler_batches(200_000, 7, FillerReason::Hole, codec, false, max).unwrap();
            let mut next = 0i64;
            for b in &batches {
                assert!(b.len() <= max, "{codec}: {} > {max}", b.len());
                let (h, _) = decode(b);
                assert!(is_filler(&h));
                next += i64::from(h.record_count);
            }
            assert_eq!(next, 200_000, "{codec}");
            if codec == Codec::None {
                // Exact sizing: every batch but the last is within one record of the limit.
                for b in &batches[..batches.len() - 1] {
                    assert!(b.len() + 45 > max, "{} leaves room", b.len());
                }
            } else {
                // Adaptive sizing: never more than twice the minimum number of batches.
                let total: usize = batches.iter().map(|b| b.len()).sum();
                assert!(
                    batches.len() <= 2 * total.div_ceil(max) + 1,
                    "{codec}: {} batches",
                    batches.len()
                );
            }
        }
    }

    #[test]
    fn filler_bytes_per_record() {
        let n = 1_000_000i64;
        for keyed in [false, true] {
            let batches = filler_batches(
                n,
                1_700_000_000_000,
                FillerReason::LogStart,
                Codec::Zstd,
                keyed,
                1_048_588,
            )
            .unwrap();
            let total: usize = batches.iter().map(|b| b.len()).sum();
            let per_record = total as f64 / n as f64;
            println!("zstd fillers, keyed={keyed}: {} batches, {total} bytes, {per_record:.3} bytes/record", batches.len());
            let bound = if keyed { 1.5 } else { 1.0 };
            assert!(
                per_record < bound,
                "keyed={keyed}: {per_record} bytes/record"
            );
            let count: i64 = batches
                .iter()
                .map(|b| i64::from(BatchHeader::parse(b).unwrap().record_count))
                .sum();
            assert_eq!(count, n);
        }
    }

    #[test]
    fn huge_counts_are_built_one_batch_at_a_time() {
        let mut it = FillerBatches::new(FillerReason::LogStart, Codec::Zstd, false, 1_048_588)
            .with_run(1_000_000_000_000, 1);
        let (b, n) = it.next().unwrap().unwrap();
        assert!(b.len() <= 1_048_588);
        assert!(n > 100_000, "{n} records in the first batch");
        assert!(b.capacity() < 2 << 20);
        assert_eq!(it.remaining(), 1_000_000_000_000 - i64::from(n));
    }

    #[test]
    fn runs_with_different_timestamps_share_a_batch() {
        let mut it = FillerBatches::new(FillerReason::Aborted, Codec::None, false, 1 << 20);
        it.push_run(2, 100);
        it.push_run(3, 300);
        it.push_run(1, 300);
        it.push_run(0, 5);
        let all: Vec<_> = it.collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 1);
        let (h, records) = decode(&all[0].0);
        assert_eq!(all[0].1, 6);
        assert_eq!(h.max_timestamp, 300);
        let ts: Vec<i64> = records.iter().map(|r| r.timestamp).collect();
        assert_eq!(ts, vec![100, 100, 300, 300, 300, 300]);
    }

    #[test]
    fn a_limit_below_one_record_is_an_error() {
        for codec in Codec::ALL {
            let err = filler_batches(10, 1, FillerReason::Hole, codec, false, 80).unwrap_err();
            assert_eq!(
                err,
                RecordsError::FillerTooLarge {
                    max_batch_bytes: 80
                },
                "{codec}"
            );
        }
        assert!(
            filler_batches(0, 1, FillerReason::Hole, Codec::None, false, 80)
                .unwrap()
                .is_empty()
        );
    }
}
