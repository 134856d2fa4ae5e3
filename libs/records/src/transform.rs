//! The fetcher's pure transformation: raw fetched source data in,
//! produce-ready target batches out, exactly one target record per source
//! offset, in order.

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{
    self, batches, encode_batch, BatchHeader, Codec, ControlKind, EncodeOptions, RawBatch,
    RecordToWrite, ATTRIBUTES_POS, ATTR_DELETE_HORIZON, ATTR_TRANSACTIONAL, BASE_OFFSET_POS,
    BASE_SEQUENCE_POS, CRC_POS, HEADER_LEN, LEADER_EPOCH_POS, NO_PARTITION_LEADER_EPOCH,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, PRODUCER_EPOCH_POS, PRODUCER_ID_POS,
    RECORD_COUNT_POS,
};
use crate::filler::{FillerBatches, FillerReason, FILLER_BASE_TIMESTAMP};
use crate::RecordsError;

/// Kafka's default max.message.bytes.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1_048_588;
/// Default size under which source batches are coalesced.
pub const DEFAULT_COALESCE_BELOW_BYTES: usize = 16 * 1024;
/// Cap on the uncompressed records of one re-encoded batch, well below
/// MAX_DECOMPRESSED_BYTES so every reader can decode what we write.
const MAX_REENCODED_UNCOMPRESSED: usize = 32 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformConfig {
    /// Codec for fillers when the topic has none (zstd by default).
    pub filler_codec: Codec,
    /// The target topic's compression.type unless "producer": every batch we
    /// emit must use it, else the broker rebuilds the batch (new inner offsets,
    /// filler marker lost).
    pub topic_codec: Option<Codec>,
    /// Source batches smaller than this are merged into one re-encoded batch.
    pub coalesce_below_bytes: usize,
    /// The target's max.message.bytes; no emitted batch is larger.
    pub max_batch_bytes: usize,
    /// Compacted target topic: fillers need a key.
    pub keyed_fillers: bool,
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            filler_codec: Codec::Zstd,
            topic_codec: None,
            coalesce_below_bytes: DEFAULT_COALESCE_BELOW_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            keyed_fillers: false,
        }
    }
}

impl TransformConfig {
    /// The codec filler batches are written with.
    pub fn effective_filler_codec(&self) -> Codec {
        self.topic_codec.unwrap_or(self.filler_codec)
    }
}

/// An entry of a read_committed fetch response's aborted transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// One partition of a read_committed fetch response. Offsets below 0 mean
/// unknown (the `Default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub records: Bytes,
    pub aborted: Vec<AbortedTxn>,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
}

impl Default for FetchedPartition {
    fn default() -> Self {
        FetchedPartition {
            records: Bytes::new(),
            aborted: Vec::new(),
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
        }
    }
}

impl FetchedPartition {
    /// The offset a read_committed fetch's data cannot go past: the last
    /// stable offset (data beyond it would be undecided transactions), else
    /// the high watermark, if known.
    pub fn data_limit(&self) -> Option<i64> {
        [self.last_stable_offset, self.high_watermark]
            .into_iter()
            .find(|o| *o >= 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutKind {
    /// The source batch as it was, header rewritten.
    Forwarded,
    /// Source records decoded and encoded again.
    Reencoded,
    Filler(FillerReason),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error(transparent)]
    Records(#[from] RecordsError),
    #[error("source data batch at offset {offset} has the filler marker as baseTimestamp: copied, it would be taken for a filler")]
    FillerMarkerInSource { offset: i64 },
    #[error("source batch at offset {offset}: {reason}")]
    InvalidBatch { offset: i64, reason: String },
    #[error("record at source offset {offset} needs a {size}-byte batch, above the target's max.message.bytes of {max}")]
    RecordTooLarge {
        offset: i64,
        size: usize,
        max: usize,
    },
}

/// A produce-ready batch standing for `record_count` source offsets from
/// `source_offset`. Its header has baseOffset 0, partitionLeaderEpoch -1, no
/// transactional flag and, until [`OutBatch::stamp`], producer -1/-1/-1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutBatch {
    pub source_offset: i64,
    pub record_count: i32,
    pub kind: OutKind,
    header: [u8; HEADER_LEN],
    body: Bytes,
}

/// Writes a writer identity (producer id, epoch, base sequence) into a header.
fn put_identity(
    h: &mut [u8; HEADER_LEN],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) {
    h[PRODUCER_ID_POS..PRODUCER_EPOCH_POS].copy_from_slice(&producer_id.to_be_bytes());
    h[PRODUCER_EPOCH_POS..BASE_SEQUENCE_POS].copy_from_slice(&producer_epoch.to_be_bytes());
    h[BASE_SEQUENCE_POS..RECORD_COUNT_POS].copy_from_slice(&base_sequence.to_be_bytes());
}

impl OutBatch {
    /// `header` must carry a valid CRC for `header ++ body` (a source batch
    /// whose CRC was checked, or one we encoded): every header edit updates
    /// it without reading the records again.
    fn new(source_offset: i64, kind: OutKind, header: &[u8], body: Bytes) -> Self {
        let mut h = [0u8; HEADER_LEN];
        if let Some(src) = header.get(..HEADER_LEN) {
            h.copy_from_slice(src);
        }
        // Outside the CRC: no update needed.
        h[BASE_OFFSET_POS..BASE_OFFSET_POS + 8].copy_from_slice(&0i64.to_be_bytes());
        h[LEADER_EPOCH_POS..LEADER_EPOCH_POS + 4]
            .copy_from_slice(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
        let record_count = i32::from_be_bytes(batch::be(&h, RECORD_COUNT_POS));
        let mut out = OutBatch {
            source_offset,
            record_count,
            kind,
            header: h,
            body,
        };
        out.edit_header(|h| {
            let attrs = i16::from_be_bytes([h[ATTRIBUTES_POS], h[ATTRIBUTES_POS + 1]]);
            // A transactional batch from a writer with no open transaction is
            // refused (or would open one and hold the LSO); the delete horizon
            // is the source cleaner's business, not the target's.
            let attrs = attrs & !(ATTR_TRANSACTIONAL | ATTR_DELETE_HORIZON);
            h[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attrs.to_be_bytes());
            put_identity(h, NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE);
        });
        out
    }

    /// Edits the CRC-covered part of the header (attributes onwards) and
    /// updates the CRC from the change alone (see [`crate::crc`]).
    fn edit_header(&mut self, edit: impl FnOnce(&mut [u8; HEADER_LEN])) {
        let mut before = [0u8; HEADER_LEN - ATTRIBUTES_POS];
        before.copy_from_slice(&self.header[ATTRIBUTES_POS..]);
        edit(&mut self.header);
        let h = &mut self.header;
        let stored = u32::from_be_bytes(batch::be(h.as_slice(), CRC_POS));
        let crc = crate::crc::replace_head(stored, &before, &h[ATTRIBUTES_POS..], self.body.len());
        h[CRC_POS..ATTRIBUTES_POS].copy_from_slice(&crc.to_be_bytes());
    }

    fn from_encoded(source_offset: i64, kind: OutKind, batch: BytesMut) -> Self {
        let bytes = batch.freeze();
        let body = bytes.slice(HEADER_LEN.min(bytes.len())..);
        OutBatch::new(source_offset, kind, &bytes, body)
    }

    /// Writes producer id, epoch, base sequence (the fetcher's writer
    /// identity) and updates the CRC without reading the records.
    pub fn stamp(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.edit_header(|h| put_identity(h, producer_id, producer_epoch, base_sequence));
    }

    /// The whole batch (one copy), as a Produce request carries it.
    pub fn bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.len());
        b.put_slice(&self.header);
        b.put_slice(&self.body);
        b.freeze()
    }

    pub fn len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn header(&self) -> BatchHeader {
        // The array always holds 61 bytes, so parsing cannot fail.
        BatchHeader::parse(&self.header).unwrap_or_default()
    }

    /// The records section, as sent (compressed).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// First source offset after this batch.
    pub fn next_source_offset(&self) -> i64 {
        self.source_offset + i64::from(self.record_count)
    }
}

/// Turns fetched source data into target batches; holds the next source
/// offset to write and nothing else, so it can be rebuilt from the target's
/// log end offset.
#[derive(Debug, Clone)]
pub struct Transformer {
    next_offset: i64,
    config: TransformConfig,
}

impl Transformer {
    pub fn new(next_offset: i64, config: TransformConfig) -> Self {
        Transformer {
            next_offset,
            config,
        }
    }

    /// Next source offset to be written.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn config(&self) -> &TransformConfig {
        &self.config
    }

    /// Transforms one read_committed fetch (records, aborted transactions).
    /// The output covers exactly [old next_offset, new next_offset), one
    /// record per offset; a partial batch at the end is left for the next
    /// fetch, and so is the rest of a range of fillers too large for one
    /// push (see `fill_budget`). On error nothing is consumed.
    pub fn push(&mut self, fetched: &FetchedPartition) -> Result<Vec<OutBatch>, TransformError> {
        let mut em = Emitter::new(self.next_offset, &self.config);
        let mut txns = AbortedTracker::new(&fetched.aborted);
        let mut prev_next: Option<i64> = None;
        let limit = fetched.data_limit();
        for item in batches(&fetched.records) {
            let batch = item?;
            let h = batch.header;
            validate(&h, prev_next)?;
            // A broker reports the high watermark and last stable offset it
            // saw before reading, and reads under the ones of the moment
            // (Kafka's Partition.readRecords), so a fetch can carry data past
            // the limit it reports. It is left for the next fetch, which
            // reports a limit covering it: nothing is copied beyond what the
            // source called stable.
            if limit.is_some_and(|l| h.next_offset() > l) {
                break;
            }
            prev_next = Some(h.next_offset());
            let class = txns.classify(&batch)?;
            if h.next_offset() <= em.pos {
                continue;
            }
            if h.base_offset > em.pos
                && !em.fill(FillerReason::Hole, h.base_offset - em.pos, h.max_timestamp)?
            {
                break;
            }
            match class {
                Class::Control => {
                    em.fill(
                        FillerReason::Control,
                        h.next_offset() - em.pos,
                        h.max_timestamp,
                    )?;
                }
                Class::Aborted => {
                    em.fill(
                        FillerReason::Aborted,
                        h.next_offset() - em.pos,
                        h.max_timestamp,
                    )?;
                }
                Class::Data => em.data(&batch)?,
            }
            if em.stopped {
                break;
            }
        }
        let out = em.finish()?;
        self.next_offset = em.pos;
        Ok(out)
    }

    /// Fillers for [next_offset, to): the range below the source log start,
    /// or a range lost to retention. Their timestamp is the wall clock (what
    /// they replace is gone); the range may be large, see
    /// [`Transformer::fill_some`] to bound memory.
    pub fn fill_to(
        &mut self,
        to: i64,
        reason: FillerReason,
    ) -> Result<Vec<OutBatch>, TransformError> {
        self.fill_to_at(to, reason, now_millis())
    }

    /// [`Transformer::fill_to`] with an explicit record timestamp.
    pub fn fill_to_at(
        &mut self,
        to: i64,
        reason: FillerReason,
        timestamp: i64,
    ) -> Result<Vec<OutBatch>, TransformError> {
        self.fill_some(to, reason, timestamp, usize::MAX)
    }

    /// Like [`Transformer::fill_to_at`] but emits at most `max_batches`
    /// batches, so filling 10^9 offsets needs no more memory than that; call
    /// again while `next_offset() < to`.
    pub fn fill_some(
        &mut self,
        to: i64,
        reason: FillerReason,
        timestamp: i64,
        max_batches: usize,
    ) -> Result<Vec<OutBatch>, TransformError> {
        let count = to.saturating_sub(self.next_offset);
        if count <= 0 || max_batches == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut pos = self.next_offset;
        let fillers = FillerBatches::new(
            reason,
            self.config.effective_filler_codec(),
            self.config.keyed_fillers,
            self.config.max_batch_bytes,
        )
        .with_run(count, timestamp);
        for item in fillers.take(max_batches) {
            let (batch, n) = item?;
            out.push(OutBatch::from_encoded(pos, OutKind::Filler(reason), batch));
            pos += i64::from(n);
        }
        self.next_offset = pos;
        Ok(out)
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn validate(h: &BatchHeader, prev_next: Option<i64>) -> Result<(), TransformError> {
    let invalid = |reason: String| TransformError::InvalidBatch {
        offset: h.base_offset,
        reason,
    };
    if h.base_offset < 0 {
        return Err(invalid("negative base offset".into()));
    }
    if h.last_offset_delta < 0 {
        return Err(invalid(format!(
            "negative lastOffsetDelta {}",
            h.last_offset_delta
        )));
    }
    if h.record_count < 0 || i64::from(h.record_count) > i64::from(h.last_offset_delta) + 1 {
        return Err(invalid(format!(
            "recordCount {} does not fit lastOffsetDelta {}",
            h.record_count, h.last_offset_delta
        )));
    }
    if h.base_offset
        .checked_add(i64::from(h.last_offset_delta) + 1)
        .is_none()
    {
        return Err(invalid("offset range overflows".into()));
    }
    if let Some(prev) = prev_next {
        if h.base_offset < prev {
            return Err(invalid(format!(
                "overlaps the previous batch, which ends before {prev}"
            )));
        }
    }
    Ok(())
}

enum Class {
    Data,
    Control,
    Aborted,
}

/// Kafka's read_committed consumer algorithm (CompletedFetch): an aborted
/// transaction becomes active for its producer once a batch's last offset
/// reaches its first offset, and ends at that producer's ABORT marker; while
/// active, the producer's transactional batches are aborted data.
struct AbortedTracker {
    queue: Vec<AbortedTxn>,
    next: usize,
    active: HashSet<i64>,
}

impl AbortedTracker {
    fn new(aborted: &[AbortedTxn]) -> Self {
        let mut queue = aborted.to_vec();
        queue.sort_by_key(|t| t.first_offset);
        AbortedTracker {
            queue,
            next: 0,
            active: HashSet::new(),
        }
    }

    fn classify(&mut self, batch: &RawBatch) -> Result<Class, TransformError> {
        let h = &batch.header;
        if h.has_producer_id() {
            while let Some(t) = self.queue.get(self.next) {
                if t.first_offset > h.last_offset() {
                    break;
                }
                self.active.insert(t.producer_id);
                self.next += 1;
            }
            if h.is_control() {
                if is_abort_marker(batch)? {
                    self.active.remove(&h.producer_id);
                }
            } else if h.is_transactional() && self.active.contains(&h.producer_id) {
                return Ok(Class::Aborted);
            }
        }
        Ok(if h.is_control() {
            Class::Control
        } else {
            Class::Data
        })
    }
}

fn is_abort_marker(batch: &RawBatch) -> Result<bool, TransformError> {
    if batch.header.record_count == 0 {
        return Ok(false);
    }
    let records = batch.records()?;
    Ok(records
        .first()
        .and_then(|r| r.key.as_deref())
        .and_then(ControlKind::from_key)
        == Some(ControlKind::Abort))
}

enum Pending {
    Nothing,
    Data {
        start: i64,
        codec: Codec,
        records: Vec<RecordToWrite>,
        /// Estimated encoded size of the records (see `Emitter::data`).
        estimate: usize,
        uncompressed: usize,
    },
    Filler {
        start: i64,
        reason: FillerReason,
        fillers: FillerBatches,
    },
}

/// Offsets one push may turn into fillers. A hole can span billions of
/// offsets (compaction, or a corrupt base offset); the rest is left for the
/// next push, whose fetch at the new next offset returns the same data.
/// About 50 MiB of uncompressed or 8-40 MiB of compressed fillers.
pub fn fill_budget(codec: Codec) -> i64 {
    match codec {
        Codec::None => 1 << 20,
        _ => 1 << 23,
    }
}

/// Assigns source offsets to output batches in order; `pos` is the next
/// offset not yet assigned (pending work is always flushed by `finish`).
struct Emitter<'a> {
    config: &'a TransformConfig,
    pos: i64,
    out: Vec<OutBatch>,
    pending: Pending,
    fill_budget: i64,
    /// The fill budget ran out: nothing more may be emitted in this push.
    stopped: bool,
}

impl<'a> Emitter<'a> {
    fn new(pos: i64, config: &'a TransformConfig) -> Self {
        Emitter {
            config,
            pos,
            out: Vec::new(),
            pending: Pending::Nothing,
            fill_budget: fill_budget(config.effective_filler_codec()),
            stopped: false,
        }
    }

    /// Fills `count` offsets; false if the budget cut it short (then `stopped`).
    fn fill(
        &mut self,
        reason: FillerReason,
        count: i64,
        timestamp: i64,
    ) -> Result<bool, TransformError> {
        if count <= 0 {
            return Ok(true);
        }
        let take = count.min(self.fill_budget);
        if take < count {
            self.stopped = true;
        }
        if take <= 0 {
            return Ok(false);
        }
        let same = matches!(&self.pending, Pending::Filler { reason: r, .. } if *r == reason);
        if !same {
            self.flush()?;
            self.pending = Pending::Filler {
                start: self.pos,
                reason,
                fillers: FillerBatches::new(
                    reason,
                    self.config.effective_filler_codec(),
                    self.config.keyed_fillers,
                    self.config.max_batch_bytes,
                ),
            };
        }
        if let Pending::Filler { fillers, .. } = &mut self.pending {
            fillers.push_run(take, timestamp);
        }
        self.pos += take;
        self.fill_budget -= take;
        Ok(!self.stopped)
    }

    fn data(&mut self, batch: &RawBatch) -> Result<(), TransformError> {
        let h = batch.header;
        if h.base_timestamp == FILLER_BASE_TIMESTAMP {
            return Err(TransformError::FillerMarkerInSource {
                offset: h.base_offset,
            });
        }
        let codec = h.codec()?;
        let cfg = self.config;
        let dense = i64::from(h.record_count) == i64::from(h.last_offset_delta) + 1;
        let forwardable = h.base_offset == self.pos
            && dense
            && h.record_count > 0
            && batch.bytes.len() >= cfg.coalesce_below_bytes
            && batch.bytes.len() <= cfg.max_batch_bytes
            && cfg.topic_codec.is_none_or(|c| c == codec)
            // Consumers saw the append time; a CreateTime copy must carry it
            // in every record.
            && !h.is_log_append_time();
        if forwardable {
            self.flush()?;
            self.out.push(OutBatch::new(
                h.base_offset,
                OutKind::Forwarded,
                &batch.bytes,
                batch.records_section(),
            ));
            self.pos = h.next_offset();
            return Ok(());
        }
        let target = cfg.topic_codec.unwrap_or(codec);
        // Size estimate of a record once re-encoded: exact-ish uncompressed
        // when the target is uncompressed or the source was, else the
        // source's compressed bytes per record (merging compresses at least
        // as well).
        let per_record_compressed = if target != Codec::None && codec != Codec::None {
            Some(batch.bytes.len() / (h.record_count.max(1) as usize) + 1)
        } else {
            None
        };
        for r in batch.records()? {
            if r.offset < self.pos {
                continue;
            }
            if r.offset > self.pos
                && !self.fill(FillerReason::Hole, r.offset - self.pos, r.timestamp)?
            {
                return Ok(());
            }
            let raw = raw_size(&r);
            let estimate = per_record_compressed.unwrap_or(raw);
            self.record(r.into(), target, estimate, raw)?;
        }
        if h.next_offset() > self.pos {
            self.fill(
                FillerReason::Hole,
                h.next_offset() - self.pos,
                h.max_timestamp,
            )?;
        }
        Ok(())
    }

    fn record(
        &mut self,
        r: RecordToWrite,
        codec: Codec,
        estimate: usize,
        raw: usize,
    ) -> Result<(), TransformError> {
        let budget = self.config.max_batch_bytes.saturating_sub(HEADER_LEN);
        let fits = match &self.pending {
            Pending::Data {
                codec: c,
                estimate: e,
                uncompressed: u,
                ..
            } => {
                *c == codec
                    && e.saturating_add(estimate) <= budget
                    && u.saturating_add(raw) <= MAX_REENCODED_UNCOMPRESSED
            }
            _ => false,
        };
        if !fits {
            self.flush()?;
            self.pending = Pending::Data {
                start: self.pos,
                codec,
                records: Vec::new(),
                estimate: 0,
                uncompressed: 0,
            };
        }
        if let Pending::Data {
            records,
            estimate: e,
            uncompressed: u,
            ..
        } = &mut self.pending
        {
            records.push(r);
            *e = e.saturating_add(estimate);
            *u = u.saturating_add(raw);
        }
        self.pos += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TransformError> {
        match std::mem::replace(&mut self.pending, Pending::Nothing) {
            Pending::Nothing => Ok(()),
            Pending::Data {
                start,
                codec,
                records,
                ..
            } => self.encode_data(start, &records, codec),
            Pending::Filler {
                start,
                reason,
                fillers,
            } => {
                let mut pos = start;
                for item in fillers {
                    let (batch, n) = item?;
                    self.out
                        .push(OutBatch::from_encoded(pos, OutKind::Filler(reason), batch));
                    pos += i64::from(n);
                }
                Ok(())
            }
        }
    }

    /// Encodes records as one batch, or, if that is too large, as a first
    /// batch sized from the measured overshoot followed by the rest.
    fn encode_data(
        &mut self,
        start: i64,
        records: &[RecordToWrite],
        codec: Codec,
    ) -> Result<(), TransformError> {
        let max = self.config.max_batch_bytes;
        let mut start = start;
        let mut rest = records;
        while !rest.is_empty() {
            let mut take = rest.len();
            loop {
                let part = rest.get(..take).unwrap_or_default();
                let b = encode_batch(part, &EncodeOptions::new(codec))?;
                if b.len() <= max {
                    self.out
                        .push(OutBatch::from_encoded(start, OutKind::Reencoded, b));
                    break;
                }
                if take == 1 {
                    return Err(TransformError::RecordTooLarge {
                        offset: start,
                        size: b.len(),
                        max,
                    });
                }
                // Records are of similar size: scale to the limit with 5%
                // headroom, always shrinking.
                let scaled = (take as u128 * max as u128 * 95 / 100 / b.len() as u128) as usize;
                take = scaled.clamp(1, take - 1);
            }
            start += take as i64;
            rest = rest.get(take..).unwrap_or_default();
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<OutBatch>, TransformError> {
        self.flush()?;
        Ok(std::mem::take(&mut self.out))
    }
}

/// Approximate uncompressed size of a record in a batch.
fn raw_size(r: &batch::Record) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 10)
        .sum();
    r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + headers + 30
}
