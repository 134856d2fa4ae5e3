//! A source partition log built with our own encoder, and the checks every
//! transformation test applies to the Transformer's output.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use bytes::{Bytes, BytesMut};
use cutover_records::batch::{control_record, ControlKind};
use cutover_records::filler::filler_reason;
use cutover_records::rules::{check_keys_for_compacted_topic, AppendOutcome};
use cutover_records::*;

pub const PID: i64 = 900;
pub const EPOCH: i16 = 2;

#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    Data(RecordToWrite),
    Filler(FillerReason),
}

struct OpenTxn {
    first_offset: i64,
    offsets: Vec<(i64, RecordToWrite)>,
}

/// A source partition log and what the target must hold at each offset.
pub struct SourceLog {
    pub bytes: BytesMut,
    pub next: i64,
    pub expected: BTreeMap<i64, Expect>,
    /// Aborted transactions with the offset of their ABORT marker.
    pub aborted: Vec<(AbortedTxn, i64)>,
    /// Every batch by base offset, to compare forwarded batches.
    pub batches: BTreeMap<i64, Bytes>,
    open: HashMap<i64, OpenTxn>,
    sequences: HashMap<i64, i32>,
}

/// Incompressible bytes, so that compressed source batches stay as large as
/// their payload.
pub fn noise(seed: i64, len: usize) -> Bytes {
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

pub fn record_at(offset: i64, value_size: usize) -> RecordToWrite {
    let mut headers = Vec::new();
    if offset % 3 == 0 {
        headers.push((
            Bytes::from_static(b"trace"),
            Some(Bytes::from(format!("t{offset}"))),
        ));
        headers.push((Bytes::from_static(b"trace"), None));
    }
    RecordToWrite {
        // Not monotonic, as producers' clocks are not.
        timestamp: 1_700_000_000_000 + offset * 10 - (offset % 4) * 25,
        key: (offset % 5 != 0).then(|| Bytes::from(format!("key-{offset}"))),
        value: (offset % 7 != 0).then(|| noise(offset, value_size)),
        headers,
    }
}

impl SourceLog {
    pub fn new(log_start: i64) -> Self {
        SourceLog {
            bytes: BytesMut::new(),
            next: log_start,
            expected: BTreeMap::new(),
            aborted: Vec::new(),
            batches: BTreeMap::new(),
            open: HashMap::new(),
            sequences: HashMap::new(),
        }
    }

    fn append(&mut self, batch: BytesMut) {
        let h = BatchHeader::parse(&batch).unwrap();
        assert!(h.base_offset >= self.next, "batches go forward");
        self.batches.insert(h.base_offset, batch.clone().freeze());
        self.bytes.extend_from_slice(&batch);
        self.next = h.next_offset();
    }

    fn opts(&self, codec: Codec) -> EncodeOptions {
        EncodeOptions {
            base_offset: self.next,
            partition_leader_epoch: 3,
            ..EncodeOptions::new(codec)
        }
    }

    fn records(&self, n: usize, value_size: usize) -> Vec<RecordToWrite> {
        (0..n as i64)
            .map(|i| record_at(self.next + i, value_size))
            .collect()
    }

    fn next_seq(&mut self, pid: i64, n: usize) -> i32 {
        let s = self.sequences.entry(pid).or_insert(0);
        let seq = *s;
        *s += n as i32;
        seq
    }

    /// A plain (non-idempotent) data batch.
    pub fn data(&mut self, n: usize, codec: Codec, value_size: usize) -> i64 {
        let records = self.records(n, value_size);
        for (i, r) in records.iter().enumerate() {
            self.expected
                .insert(self.next + i as i64, Expect::Data(r.clone()));
        }
        let base = self.next;
        self.append(encode_batch(&records, &self.opts(codec)).unwrap());
        base
    }

    /// A batch from an idempotent producer.
    pub fn idempotent(&mut self, pid: i64, n: usize, codec: Codec, value_size: usize) -> i64 {
        let records = self.records(n, value_size);
        for (i, r) in records.iter().enumerate() {
            self.expected
                .insert(self.next + i as i64, Expect::Data(r.clone()));
        }
        let opts = EncodeOptions {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: self.next_seq(pid, n),
            ..self.opts(codec)
        };
        let base = self.next;
        self.append(encode_batch(&records, &opts).unwrap());
        base
    }

    /// A transactional batch; what the target holds depends on the outcome.
    pub fn txn(&mut self, pid: i64, n: usize, codec: Codec, value_size: usize) {
        let records = self.records(n, value_size);
        let base = self.next;
        let opts = EncodeOptions {
            producer_id: pid,
            producer_epoch: 1,
            base_sequence: self.next_seq(pid, n),
            transactional: true,
            ..self.opts(codec)
        };
        self.append(encode_batch(&records, &opts).unwrap());
        let t = self.open.entry(pid).or_insert(OpenTxn {
            first_offset: base,
            offsets: Vec::new(),
        });
        t.offsets.extend(
            records
                .into_iter()
                .enumerate()
                .map(|(i, r)| (base + i as i64, r)),
        );
    }

    /// The transaction marker ending `pid`'s open transaction.
    pub fn end_txn(&mut self, pid: i64, commit: bool) {
        let marker = self.next;
        let kind = if commit {
            ControlKind::Commit
        } else {
            ControlKind::Abort
        };
        let opts = EncodeOptions {
            producer_id: pid,
            producer_epoch: 1,
            transactional: true,
            control: true,
            ..self.opts(Codec::None)
        };
        let ts = 1_700_000_000_000 + marker * 10;
        self.append(encode_batch(&[control_record(kind, ts, 0)], &opts).unwrap());
        self.expected
            .insert(marker, Expect::Filler(FillerReason::Control));
        if let Some(t) = self.open.remove(&pid) {
            for (o, r) in t.offsets {
                let e = if commit {
                    Expect::Data(r)
                } else {
                    Expect::Filler(FillerReason::Aborted)
                };
                self.expected.insert(o, e);
            }
            if !commit {
                self.aborted.push((
                    AbortedTxn {
                        producer_id: pid,
                        first_offset: t.first_offset,
                    },
                    marker,
                ));
            }
        }
    }

    pub fn open_txns(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.open.keys().copied().collect();
        v.sort();
        v
    }

    /// Offsets removed by compaction between batches.
    pub fn hole(&mut self, n: i64) {
        for o in self.next..self.next + n {
            self.expected.insert(o, Expect::Filler(FillerReason::Hole));
        }
        self.next += n;
    }

    /// A batch compaction thinned: records where `keep` is true survive.
    pub fn compacted(&mut self, keep: &[bool], codec: Codec, value_size: usize) {
        let all = self.records(keep.len(), value_size);
        let mut kept = Vec::new();
        for (i, (r, k)) in all.into_iter().zip(keep).enumerate() {
            let o = self.next + i as i64;
            if *k {
                self.expected.insert(o, Expect::Data(r.clone()));
                kept.push((i as i32, r));
            } else {
                self.expected.insert(o, Expect::Filler(FillerReason::Hole));
            }
        }
        let b = encode_sparse_batch(&kept, keep.len() as i32 - 1, &self.opts(codec)).unwrap();
        self.append(b);
    }

    /// A LogAppendTime batch: consumers see `append_time` on every record.
    pub fn log_append(&mut self, n: usize, codec: Codec, append_time: i64) {
        let records = self.records(n, 20);
        for (i, r) in records.iter().enumerate() {
            let mut seen = r.clone();
            seen.timestamp = append_time;
            self.expected
                .insert(self.next + i as i64, Expect::Data(seen));
        }
        let opts = EncodeOptions {
            log_append_time: Some(append_time),
            ..self.opts(codec)
        };
        self.append(encode_batch(&records, &opts).unwrap());
    }

    /// Byte position of the batch containing `offset` (or the first after it).
    fn position_of(&self, offset: i64) -> usize {
        let mut pos = 0;
        for (base, b) in &self.batches {
            let h = BatchHeader::parse(b).unwrap();
            if h.next_offset() > offset {
                return pos;
            }
            let _ = base;
            pos += b.len();
        }
        pos
    }

    /// What a read_committed fetch at `offset` returns with at most
    /// `max_bytes` (but at least one whole batch, as Kafka does); the last
    /// batch may be cut.
    pub fn fetch(&self, offset: i64, max_bytes: usize) -> FetchedPartition {
        let start = self.position_of(offset);
        let rest = &self.bytes[start..];
        let first = batches(&Bytes::copy_from_slice(rest))
            .next()
            .map(|b| b.unwrap().bytes.len())
            .unwrap_or(0);
        let end = rest.len().min(max_bytes.max(first));
        FetchedPartition {
            records: Bytes::copy_from_slice(&rest[..end]),
            // The broker lists aborted transactions that end at or after the
            // fetch offset.
            aborted: self
                .aborted
                .iter()
                .filter(|(_, marker)| *marker >= offset)
                .map(|(t, _)| *t)
                .collect(),
            high_watermark: self.next,
            last_stable_offset: self.next,
            log_start_offset: 0,
        }
    }
}

/// The target partition as the fetcher writes it: a modelled broker whose
/// log starts at `base`, and the writer's next sequence number.
pub struct Target {
    pub model: ProducerStateModel,
    pub base: i64,
    pub seq: i32,
}

impl Target {
    pub fn new(base: i64) -> Self {
        Target {
            model: ProducerStateModel::new(),
            base,
            seq: 0,
        }
    }
}

/// Checks one push's output: contiguous from `start`, every batch a valid
/// client batch that a broker (modelled) appends at the source offset it
/// stands for, and decoding the target gives the source's record or a marked
/// filler at every offset. Returns the offset after the output.
pub fn verify(
    log: &SourceLog,
    start: i64,
    outs: &mut [OutBatch],
    cfg: &TransformConfig,
    target: &mut Target,
) -> i64 {
    let rules = ProduceRules {
        max_message_bytes: cfg.max_batch_bytes,
        topic_codec: cfg.topic_codec,
        produce_version: 9,
        transactional: false,
    };
    let mut next = start;
    for out in outs.iter_mut() {
        assert_eq!(out.source_offset, next, "output is contiguous");
        assert!(out.record_count > 0);
        out.stamp(PID, EPOCH, target.seq);
        target.seq = target.seq.wrapping_add(out.record_count);
        let bytes = out.bytes();
        assert_eq!(bytes.len(), out.len());
        check_partition_records(&bytes, &rules)
            .unwrap_or_else(|e| panic!("batch at source offset {next}: {e}"));
        if cfg.keyed_fillers && matches!(out.kind, OutKind::Filler(_)) {
            check_keys_for_compacted_topic(&bytes).unwrap();
        }
        match target.model.append(0, &bytes).unwrap() {
            AppendOutcome::Appended { base_offset, .. } => {
                assert_eq!(
                    target.base + base_offset,
                    next,
                    "target offset = source offset"
                )
            }
            d => panic!("unexpected {d:?}"),
        }
        let mut stored = bytes.to_vec();
        stored[..8].copy_from_slice(&next.to_be_bytes());
        let batch = RawBatch::parse(Bytes::from(stored)).unwrap();
        let h = batch.header;
        assert_eq!(i64::from(h.record_count), i64::from(out.record_count));
        assert_eq!((h.producer_id, h.producer_epoch), (PID, EPOCH));
        let records = batch.records().unwrap();
        assert_eq!(records.len(), out.record_count as usize);
        for r in &records {
            let expected = log
                .expected
                .get(&r.offset)
                .unwrap_or_else(|| panic!("nothing expected at {}", r.offset));
            match (expected, out.kind) {
                (Expect::Data(e), OutKind::Forwarded | OutKind::Reencoded) => {
                    assert!(
                        !is_filler(&h),
                        "data batch at {} looks like a filler",
                        r.offset
                    );
                    assert_eq!(filler_reason(r), None);
                    assert_eq!(&RecordToWrite::from(r.clone()), e, "record at {}", r.offset);
                }
                (Expect::Filler(reason), OutKind::Filler(kind)) => {
                    assert!(is_filler(&h), "filler at {} not marked in header", r.offset);
                    assert_eq!(filler_reason(r), Some(*reason), "at {}", r.offset);
                    assert_eq!(kind, *reason);
                    assert_eq!(r.key.is_some(), cfg.keyed_fillers);
                }
                (e, k) => panic!("offset {}: expected {e:?}, got a {k:?} batch", r.offset),
            }
        }
        if out.kind == OutKind::Forwarded {
            let src = RawBatch::parse(log.batches[&next].clone()).unwrap();
            // Byte-identical records section; only these header fields change.
            assert_eq!(out.body(), &src.records_section());
            let sh = src.header;
            assert_eq!(h.attributes, sh.attributes & !(1 << 4) & !(1 << 6));
            assert_eq!(
                (
                    h.base_timestamp,
                    h.max_timestamp,
                    h.last_offset_delta,
                    h.record_count,
                    h.batch_length
                ),
                (
                    sh.base_timestamp,
                    sh.max_timestamp,
                    sh.last_offset_delta,
                    sh.record_count,
                    sh.batch_length
                )
            );
            assert_eq!(h.partition_leader_epoch, -1);
        }
        next = out.next_source_offset();
    }
    next
}

/// Runs fetch/push until the transformer reaches the end of the log,
/// verifying each push; returns every output batch.
pub fn mirror(
    log: &SourceLog,
    from: i64,
    cfg: &TransformConfig,
    fetch_max_bytes: usize,
) -> Vec<OutBatch> {
    let mut t = Transformer::new(from, cfg.clone());
    let mut target = Target::new(from);
    let mut all = Vec::new();
    let mut rounds = 0;
    while t.next_offset() < log.next {
        rounds += 1;
        assert!(rounds < 100_000, "no progress at {}", t.next_offset());
        let before = t.next_offset();
        let mut outs = t.push(&log.fetch(before, fetch_max_bytes)).unwrap();
        let end = verify(log, before, &mut outs, cfg, &mut target);
        assert_eq!(end, t.next_offset(), "output ends at the new next offset");
        all.extend(outs);
    }
    assert_eq!(t.next_offset(), log.next);
    all
}
