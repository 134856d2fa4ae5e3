//! Zero-copy view of v2 record batches, record decoding and a batch encoder.

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::compression::{self, DecompressError, MAX_DECOMPRESSED_BYTES};
use crate::varint::{self, Cursor};
use crate::RecordsError;

/// Size of the v2 batch header; records start here.
pub const HEADER_LEN: usize = 61;
/// baseOffset and batchLength, which batchLength does not count.
pub const LOG_OVERHEAD: usize = 12;
/// Smallest valid batchLength: the header after the batchLength field.
pub const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;

pub(crate) const BASE_OFFSET_POS: usize = 0;
pub(crate) const BATCH_LENGTH_POS: usize = 8;
pub(crate) const LEADER_EPOCH_POS: usize = 12;
pub(crate) const MAGIC_POS: usize = 16;
pub(crate) const CRC_POS: usize = 17;
pub(crate) const ATTRIBUTES_POS: usize = 21;
pub(crate) const LAST_OFFSET_DELTA_POS: usize = 23;
pub(crate) const BASE_TIMESTAMP_POS: usize = 27;
pub(crate) const MAX_TIMESTAMP_POS: usize = 35;
pub(crate) const PRODUCER_ID_POS: usize = 43;
pub(crate) const PRODUCER_EPOCH_POS: usize = 51;
pub(crate) const BASE_SEQUENCE_POS: usize = 53;
pub(crate) const RECORD_COUNT_POS: usize = 57;

pub const ATTR_CODEC_MASK: i16 = 0x07;
pub const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;
pub const ATTR_TRANSACTIONAL: i16 = 1 << 4;
pub const ATTR_CONTROL: i16 = 1 << 5;
pub const ATTR_DELETE_HORIZON: i16 = 1 << 6;

/// "No producer" value of producerId, producerEpoch and baseSequence.
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;
/// Kafka's "no timestamp" (maxTimestamp of an empty batch).
pub const NO_TIMESTAMP: i64 = -1;

/// Compression codec of a batch (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    pub const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    /// The attributes value (bits 0-2).
    pub fn id(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    pub fn from_id(id: i16) -> Option<Codec> {
        match id {
            0 => Some(Codec::None),
            1 => Some(Codec::Gzip),
            2 => Some(Codec::Snappy),
            3 => Some(Codec::Lz4),
            4 => Some(Codec::Zstd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }

    /// Parses a topic's `compression.type`: `Ok(None)` for "producer" (the
    /// broker keeps whatever codec the client sent), `Ok(Some(codec))` when
    /// the broker recompresses everything to one codec.
    pub fn from_topic_config(value: &str) -> Result<Option<Codec>, RecordsError> {
        let v = value.trim().to_ascii_lowercase();
        if v == "producer" {
            return Ok(None);
        }
        v.parse().map(Some)
    }
}

impl FromStr for Codec {
    type Err = RecordsError;

    /// Accepts producer-side names ("none") and topic-side ones ("uncompressed").
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "uncompressed" => Ok(Codec::None),
            "gzip" => Ok(Codec::Gzip),
            "snappy" => Ok(Codec::Snappy),
            "lz4" => Ok(Codec::Lz4),
            "zstd" => Ok(Codec::Zstd),
            _ => Err(RecordsError::UnknownCompressionType(s.to_string())),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The fixed 61-byte header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

pub(crate) fn be<const N: usize>(buf: &[u8], pos: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = buf.get(pos..pos + N) {
        out.copy_from_slice(src);
    }
    out
}

impl BatchHeader {
    /// Parses the header fields without validating them; needs 61 bytes.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, RecordsError> {
        if buf.len() < HEADER_LEN {
            return Err(RecordsError::HeaderTruncated { len: buf.len() });
        }
        Ok(BatchHeader {
            base_offset: i64::from_be_bytes(be(buf, BASE_OFFSET_POS)),
            batch_length: i32::from_be_bytes(be(buf, BATCH_LENGTH_POS)),
            partition_leader_epoch: i32::from_be_bytes(be(buf, LEADER_EPOCH_POS)),
            magic: i8::from_be_bytes(be(buf, MAGIC_POS)),
            crc: u32::from_be_bytes(be(buf, CRC_POS)),
            attributes: i16::from_be_bytes(be(buf, ATTRIBUTES_POS)),
            last_offset_delta: i32::from_be_bytes(be(buf, LAST_OFFSET_DELTA_POS)),
            base_timestamp: i64::from_be_bytes(be(buf, BASE_TIMESTAMP_POS)),
            max_timestamp: i64::from_be_bytes(be(buf, MAX_TIMESTAMP_POS)),
            producer_id: i64::from_be_bytes(be(buf, PRODUCER_ID_POS)),
            producer_epoch: i16::from_be_bytes(be(buf, PRODUCER_EPOCH_POS)),
            base_sequence: i32::from_be_bytes(be(buf, BASE_SEQUENCE_POS)),
            record_count: i32::from_be_bytes(be(buf, RECORD_COUNT_POS)),
        })
    }

    /// Writes every field (the CRC as stored in `self.crc`) into `buf[..61]`.
    pub fn write_to(&self, buf: &mut [u8; HEADER_LEN]) {
        buf[BASE_OFFSET_POS..BATCH_LENGTH_POS].copy_from_slice(&self.base_offset.to_be_bytes());
        buf[BATCH_LENGTH_POS..LEADER_EPOCH_POS].copy_from_slice(&self.batch_length.to_be_bytes());
        buf[LEADER_EPOCH_POS..MAGIC_POS]
            .copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        buf[MAGIC_POS] = self.magic as u8;
        buf[CRC_POS..ATTRIBUTES_POS].copy_from_slice(&self.crc.to_be_bytes());
        buf[ATTRIBUTES_POS..LAST_OFFSET_DELTA_POS].copy_from_slice(&self.attributes.to_be_bytes());
        buf[LAST_OFFSET_DELTA_POS..BASE_TIMESTAMP_POS]
            .copy_from_slice(&self.last_offset_delta.to_be_bytes());
        buf[BASE_TIMESTAMP_POS..MAX_TIMESTAMP_POS]
            .copy_from_slice(&self.base_timestamp.to_be_bytes());
        buf[MAX_TIMESTAMP_POS..PRODUCER_ID_POS].copy_from_slice(&self.max_timestamp.to_be_bytes());
        buf[PRODUCER_ID_POS..PRODUCER_EPOCH_POS].copy_from_slice(&self.producer_id.to_be_bytes());
        buf[PRODUCER_EPOCH_POS..BASE_SEQUENCE_POS]
            .copy_from_slice(&self.producer_epoch.to_be_bytes());
        buf[BASE_SEQUENCE_POS..RECORD_COUNT_POS].copy_from_slice(&self.base_sequence.to_be_bytes());
        buf[RECORD_COUNT_POS..HEADER_LEN].copy_from_slice(&self.record_count.to_be_bytes());
    }

    pub fn codec(&self) -> Result<Codec, RecordsError> {
        let id = self.attributes & ATTR_CODEC_MASK;
        Codec::from_id(id).ok_or(RecordsError::UnknownCodec {
            base_offset: self.base_offset,
            id,
        })
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }

    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & ATTR_DELETE_HORIZON != 0
    }

    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Offset of the batch's last offset slot (saturating: the header comes
    /// from the network and may hold anything).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// Whole batch size in bytes (batchLength plus the 12 bytes before it).
    pub fn size(&self) -> usize {
        usize::try_from(self.batch_length)
            .unwrap_or(0)
            .saturating_add(LOG_OVERHEAD)
    }

    /// Sequence number of the last record, wrapping at i32::MAX like Kafka's
    /// DefaultRecordBatch.incrementSequence.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

pub(crate) fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// CRC-32C of a whole batch, over attributes to the end.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(ATTRIBUTES_POS..).unwrap_or_default())
}

/// One record batch: its parsed header and the whole batch as a zero-copy
/// slice of the buffer it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBatch {
    pub header: BatchHeader,
    pub bytes: Bytes,
}

/// A decoded record, with the offset and timestamp a consumer would see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Header keys are kept as raw bytes: Kafka writes them as UTF-8 but does
    /// not check it on produce, and a mirror must copy them exactly.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// A record to encode; its offset is implied by its position.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordToWrite {
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

impl From<Record> for RecordToWrite {
    fn from(r: Record) -> Self {
        RecordToWrite {
            timestamp: r.timestamp,
            key: r.key,
            value: r.value,
            headers: r.headers,
        }
    }
}

impl Record {
    pub fn header(&self, key: &[u8]) -> Option<&Option<Bytes>> {
        self.headers
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v)
    }
}

/// Type of a transaction marker (control record key: version i16, type i16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    Abort,
    Commit,
    Other(i16),
}

impl ControlKind {
    pub fn id(self) -> i16 {
        match self {
            ControlKind::Abort => 0,
            ControlKind::Commit => 1,
            ControlKind::Other(t) => t,
        }
    }

    /// Reads the type from a control record key; `None` if the key is too short
    /// (Kafka's ControlRecordType.parse calls that UNKNOWN).
    pub fn from_key(key: &[u8]) -> Option<ControlKind> {
        let t = i16::from_be_bytes(*key.get(2..4)?.first_chunk::<2>()?);
        Some(match t {
            0 => ControlKind::Abort,
            1 => ControlKind::Commit,
            other => ControlKind::Other(other),
        })
    }
}

/// A transaction marker record as a transaction coordinator writes it.
pub fn control_record(kind: ControlKind, timestamp: i64, coordinator_epoch: i32) -> RecordToWrite {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.id().to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    RecordToWrite {
        timestamp,
        key: Some(Bytes::from(key)),
        value: Some(Bytes::from(value)),
        headers: Vec::new(),
    }
}

impl RawBatch {
    /// Parses one complete batch at the start of `bytes` (which must hold
    /// exactly the batch or more); validates magic, length and CRC.
    pub fn parse(bytes: Bytes) -> Result<RawBatch, RecordsError> {
        let mut it = batches(&bytes);
        match it.next() {
            Some(r) => r,
            None => Err(RecordsError::HeaderTruncated { len: bytes.len() }),
        }
    }

    pub fn verify_crc(&self) -> Result<(), RecordsError> {
        let computed = compute_crc(&self.bytes);
        if computed != self.header.crc {
            return Err(RecordsError::CrcMismatch {
                base_offset: self.header.base_offset,
                position: 0,
                stored: self.header.crc,
                computed,
            });
        }
        Ok(())
    }

    /// The records section (after the 61-byte header), as stored (compressed).
    pub fn records_section(&self) -> Bytes {
        self.bytes.slice(HEADER_LEN.min(self.bytes.len())..)
    }

    /// Decompresses the records section (bounded by MAX_DECOMPRESSED_BYTES).
    pub fn decompressed(&self) -> Result<Bytes, RecordsError> {
        let codec = self.header.codec()?;
        let section = self.records_section();
        if codec == Codec::None {
            return Ok(section);
        }
        compression::decompress(codec, &section, MAX_DECOMPRESSED_BYTES)
            .map(Bytes::from)
            .map_err(|e| match e {
                DecompressError::TooLarge => RecordsError::DecompressedTooLarge {
                    base_offset: self.header.base_offset,
                    limit: MAX_DECOMPRESSED_BYTES,
                },
                DecompressError::Invalid(reason) => RecordsError::Decompress {
                    base_offset: self.header.base_offset,
                    codec,
                    reason,
                },
            })
    }

    /// Decodes every record. Timestamps are what a consumer sees: for
    /// LogAppendTime batches that is the batch maxTimestamp for all records.
    ///
    /// Offsets must lie inside the batch's range and increase, and the
    /// records must fill the section exactly; anything else is corrupt.
    pub fn records(&self) -> Result<Vec<Record>, RecordsError> {
        self.decode(true)
    }

    /// Decodes without checking offset deltas, for callers that report bad
    /// deltas themselves.
    pub(crate) fn records_unchecked_offsets(&self) -> Result<Vec<Record>, RecordsError> {
        self.decode(false)
    }

    fn decode(&self, check_offsets: bool) -> Result<Vec<Record>, RecordsError> {
        let h = &self.header;
        let count = usize::try_from(h.record_count).map_err(|_| RecordsError::CorruptBatch {
            base_offset: h.base_offset,
            reason: format!("negative record count {}", h.record_count),
        })?;
        let data = self.decompressed()?;
        // A record is at least 7 bytes: never pre-allocate from a claim the
        // data cannot back.
        let mut out = Vec::with_capacity(count.min(data.len() / 7));
        let mut cur = Cursor::new(&data);
        let mut prev_delta: Option<i32> = None;
        for index in 0..count {
            let corrupt = |reason: &str| RecordsError::CorruptRecord {
                base_offset: h.base_offset,
                index,
                reason: reason.to_string(),
            };
            let rec = decode_record(&data, &mut cur, h).map_err(&corrupt)?;
            let delta = rec.0;
            if !check_offsets {
                out.push(rec.1);
                continue;
            }
            if delta < 0 || delta > h.last_offset_delta {
                return Err(corrupt(&format!(
                    "offset delta {delta} outside 0..={}",
                    h.last_offset_delta
                )));
            }
            if prev_delta.is_some_and(|p| delta <= p) {
                return Err(corrupt(&format!("offset delta {delta} does not increase")));
            }
            prev_delta = Some(delta);
            out.push(rec.1);
        }
        if cur.remaining() != 0 {
            return Err(RecordsError::CorruptBatch {
                base_offset: h.base_offset,
                reason: format!("{} bytes left after {count} records", cur.remaining()),
            });
        }
        Ok(out)
    }
}

/// Decodes one length-prefixed record; returns its offset delta and the record.
fn decode_record(
    data: &Bytes,
    cur: &mut Cursor<'_>,
    h: &BatchHeader,
) -> Result<(i32, Record), &'static str> {
    let len = cur.varint().ok_or("bad record length")?;
    let len = usize::try_from(len).map_err(|_| "negative record length")?;
    let body = cur.take(len).ok_or("record length beyond the batch")?;
    let start = body.start;
    let slice = data
        .get(body.clone())
        .ok_or("record length beyond the batch")?;
    let mut c = Cursor::new(slice);
    let _attributes = c.u8().ok_or("truncated record attributes")?;
    let ts_delta = c.varlong().ok_or("bad timestamp delta")?;
    let offset_delta = c.varint().ok_or("bad offset delta")?;
    let key = read_nullable(data, start, &mut c).ok_or("bad key")?;
    let value = read_nullable(data, start, &mut c).ok_or("bad value")?;
    let n_headers = c.varint().ok_or("bad header count")?;
    let n_headers = usize::try_from(n_headers).map_err(|_| "negative header count")?;
    // Each header is at least two bytes: bound the allocation by the data.
    let mut headers = Vec::with_capacity(n_headers.min(c.remaining() / 2));
    for _ in 0..n_headers {
        let klen = c.varint().ok_or("bad header key length")?;
        let klen = usize::try_from(klen).map_err(|_| "negative header key length")?;
        let kr = c.take(klen).ok_or("header key beyond the record")?;
        let hkey = data.slice(start + kr.start..start + kr.end);
        let hval = read_nullable(data, start, &mut c).ok_or("bad header value")?;
        headers.push((hkey, hval));
    }
    if c.remaining() != 0 {
        return Err("record body longer than its fields");
    }
    let timestamp = if h.is_log_append_time() {
        h.max_timestamp
    } else {
        // Java computes base + delta in wrapping long arithmetic; so do we.
        h.base_timestamp.wrapping_add(ts_delta)
    };
    Ok((
        offset_delta,
        Record {
            offset: h.base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp,
            key,
            value,
            headers,
        },
    ))
}

fn read_nullable(data: &Bytes, base: usize, c: &mut Cursor<'_>) -> Option<Option<Bytes>> {
    let len = c.varint()?;
    if len == -1 {
        return Some(None);
    }
    let len = usize::try_from(len).ok()?;
    let r = c.take(len)?;
    Some(Some(data.slice(base + r.start..base + r.end)))
}

/// Where a consumer goes on after reading `records` (a fetch response's,
/// possibly cut at a byte limit): the offset after the last complete
/// batch, and that batch's partition leader epoch. `None` without a
/// complete batch. Reads only the batches' offsets and lengths.
pub fn next_fetch_position(records: &[u8]) -> Option<(i64, i32)> {
    let mut pos = 0;
    let mut last = None;
    while let Some(rest) = records.get(pos..).filter(|r| r.len() >= HEADER_LEN) {
        let batch_length = i32::from_be_bytes(be(rest, BATCH_LENGTH_POS));
        if batch_length < MIN_BATCH_LENGTH {
            break;
        }
        let size = (batch_length as usize).saturating_add(LOG_OVERHEAD);
        if rest.len() < size {
            break;
        }
        let base = i64::from_be_bytes(be(rest, BASE_OFFSET_POS));
        let delta = i32::from_be_bytes(be(rest, LAST_OFFSET_DELTA_POS));
        let epoch = i32::from_be_bytes(be(rest, LEADER_EPOCH_POS));
        last = Some((
            base.saturating_add(i64::from(delta)).saturating_add(1),
            epoch,
        ));
        pos += size;
    }
    last
}

/// Iterates the complete batches of a fetch response's records. A partial
/// batch at the end (fetch responses are cut at a byte limit) ends the
/// iteration; a malformed batch yields one error and then ends it.
pub fn batches(records: &Bytes) -> BatchIter {
    BatchIter {
        buf: records.clone(),
        pos: 0,
        done: false,
    }
}

#[derive(Debug, Clone)]
pub struct BatchIter {
    buf: Bytes,
    pos: usize,
    done: bool,
}

impl BatchIter {
    /// Byte position of the next batch: after the iteration ends cleanly,
    /// the start of the unread partial batch (or the end).
    pub fn position(&self) -> usize {
        self.pos
    }

    fn next_batch(&mut self) -> Option<Result<RawBatch, RecordsError>> {
        let rest = self.buf.get(self.pos..)?;
        if rest.len() < LOG_OVERHEAD {
            return None;
        }
        let base_offset = i64::from_be_bytes(be(rest, BASE_OFFSET_POS));
        let batch_length = i32::from_be_bytes(be(rest, BATCH_LENGTH_POS));
        let position = self.pos;
        if batch_length < MIN_BATCH_LENGTH {
            return Some(Err(RecordsError::InvalidBatchLength {
                base_offset,
                position,
                batch_length,
            }));
        }
        // Magic is checked as soon as it is there, like Java's
        // ByteBufferLogInputStream, so a v0/v1 message set is an error even
        // when it is the partial tail.
        if let Some(&magic) = rest.get(MAGIC_POS) {
            if magic != 2 {
                return Some(Err(RecordsError::UnsupportedMagic {
                    base_offset,
                    position,
                    magic: magic as i8,
                }));
            }
        }
        let size = (batch_length as usize).saturating_add(LOG_OVERHEAD);
        if rest.len() < size {
            return None;
        }
        let bytes = self.buf.slice(self.pos..self.pos + size);
        let header = match BatchHeader::parse(&bytes) {
            Ok(h) => h,
            Err(e) => return Some(Err(e)),
        };
        let computed = compute_crc(&bytes);
        if computed != header.crc {
            return Some(Err(RecordsError::CrcMismatch {
                base_offset,
                position,
                stored: header.crc,
                computed,
            }));
        }
        self.pos += size;
        Some(Ok(RawBatch { header, bytes }))
    }
}

impl Iterator for BatchIter {
    type Item = Result<RawBatch, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_batch();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// `records` (a client's Produce data for one partition) with every batch's
/// producer id and epoch replaced and its CRC recomputed, without reading
/// the records: how a router gives a batch the upstream producer its client
/// producer id stands for. Every batch must be whole and carry a valid CRC
/// (recomputing it over a corrupted batch would hide the corruption).
pub fn with_producer(
    records: &Bytes,
    producer_id: i64,
    producer_epoch: i16,
) -> Result<Bytes, RecordsError> {
    let mut out = BytesMut::with_capacity(records.len());
    let mut iter = batches(records);
    for batch in &mut iter {
        let batch = batch?;
        let start = out.len();
        out.extend_from_slice(&batch.bytes);
        let mut header = batch.header;
        header.producer_id = producer_id;
        header.producer_epoch = producer_epoch;
        let mut h = [0u8; HEADER_LEN];
        header.write_to(&mut h);
        out[start..start + HEADER_LEN].copy_from_slice(&h);
        let crc = compute_crc(&out[start..]);
        out[start + CRC_POS..start + ATTRIBUTES_POS].copy_from_slice(&crc.to_be_bytes());
    }
    if iter.position() != records.len() {
        return Err(RecordsError::CorruptBatch {
            base_offset: -1,
            reason: format!(
                "{} bytes after the last whole batch of a produce request",
                records.len() - iter.position()
            ),
        });
    }
    Ok(out.freeze())
}

/// How to encode a batch. The defaults are what a client sends: baseOffset 0,
/// no producer (-1/-1/-1), CreateTime, not transactional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeOptions {
    pub codec: Codec,
    /// baseTimestamp to write; `None` uses the first record's timestamp.
    /// Fillers set FILLER_BASE_TIMESTAMP here.
    pub base_timestamp: Option<i64>,
    /// Codec level; `None` uses Kafka's default for the codec.
    pub compression_level: Option<i32>,
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
    /// `Some(t)`: a LogAppendTime batch appended at `t` (as a broker stores
    /// it: attribute bit 3 and maxTimestamp = t).
    pub log_append_time: Option<i64>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            codec: Codec::None,
            base_timestamp: None,
            compression_level: None,
            base_offset: 0,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            transactional: false,
            control: false,
            log_append_time: None,
        }
    }
}

impl EncodeOptions {
    pub fn new(codec: Codec) -> Self {
        EncodeOptions {
            codec,
            ..EncodeOptions::default()
        }
    }
}

/// Encodes ONE v2 batch with offset deltas 0..n-1 (n > 0).
pub fn encode_batch(
    records: &[RecordToWrite],
    opts: &EncodeOptions,
) -> Result<BytesMut, RecordsError> {
    if records.is_empty() {
        return Err(RecordsError::Encode(
            "a batch needs at least one record".into(),
        ));
    }
    let n = i32::try_from(records.len())
        .map_err(|_| RecordsError::Encode("more than i32::MAX records".into()))?;
    let first = records.first().map_or(NO_TIMESTAMP, |r| r.timestamp);
    let mut w = BatchWriter::new(
        opts.base_timestamp
            .unwrap_or_else(|| data_base_timestamp(first)),
    );
    for (i, r) in records.iter().enumerate() {
        w.push_record(i as i32, r)?;
    }
    w.finish(n - 1, opts)
}

/// Encodes one batch whose records sit at the given offset deltas, leaving
/// the others empty, as Kafka's log cleaner leaves compacted batches; an
/// empty `records` gives an empty batch covering `last_offset_delta + 1`
/// offsets. Meant for building source-like test data.
pub fn encode_sparse_batch(
    records: &[(i32, RecordToWrite)],
    last_offset_delta: i32,
    opts: &EncodeOptions,
) -> Result<BytesMut, RecordsError> {
    let base = match (opts.base_timestamp, records.first()) {
        (Some(b), _) => b,
        (None, Some((_, r))) => data_base_timestamp(r.timestamp),
        (None, None) => NO_TIMESTAMP,
    };
    let mut w = BatchWriter::new(base);
    let mut prev = None;
    for (delta, r) in records {
        if *delta < 0 || *delta > last_offset_delta || prev.is_some_and(|p| *delta <= p) {
            return Err(RecordsError::Encode(format!(
                "offset delta {delta} must increase within 0..={last_offset_delta}"
            )));
        }
        prev = Some(*delta);
        w.push_record(*delta, r)?;
    }
    w.finish(last_offset_delta, opts)
}

/// Builds the uncompressed records section one record at a time, so that
/// fillers need no per-record allocation.
pub(crate) struct BatchWriter {
    records: Vec<u8>,
    body: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: Option<i64>,
}

/// Position in a BatchWriter to roll back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterMark {
    len: usize,
    count: i32,
    max_timestamp: Option<i64>,
}

/// baseTimestamp for a data batch starting with a record at `first_timestamp`.
pub(crate) fn data_base_timestamp(first_timestamp: i64) -> i64 {
    // A data batch must never look like a filler: if the first record's own
    // timestamp is the marker, shift the base (deltas are relative, so the
    // record timestamps do not change).
    if first_timestamp == crate::filler::FILLER_BASE_TIMESTAMP {
        first_timestamp.wrapping_add(1)
    } else {
        first_timestamp
    }
}

impl BatchWriter {
    pub(crate) fn new(base_timestamp: i64) -> Self {
        BatchWriter {
            records: Vec::new(),
            body: Vec::new(),
            count: 0,
            base_timestamp,
            max_timestamp: None,
        }
    }

    pub(crate) fn mark(&self) -> WriterMark {
        WriterMark {
            len: self.records.len(),
            count: self.count,
            max_timestamp: self.max_timestamp,
        }
    }

    pub(crate) fn rollback(&mut self, mark: WriterMark) {
        self.records.truncate(mark.len);
        self.count = mark.count;
        self.max_timestamp = mark.max_timestamp;
    }

    pub(crate) fn uncompressed_len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn count(&self) -> i32 {
        self.count
    }

    pub(crate) fn push_record(
        &mut self,
        offset_delta: i32,
        r: &RecordToWrite,
    ) -> Result<(), RecordsError> {
        let headers: Vec<(&[u8], Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_deref()))
            .collect();
        self.push(
            offset_delta,
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            &headers,
        )
    }

    pub(crate) fn push(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> Result<(), RecordsError> {
        let b = &mut self.body;
        b.clear();
        b.push(0);
        varint::put_varlong(b, timestamp.wrapping_sub(self.base_timestamp));
        varint::put_varint(b, offset_delta);
        put_nullable(b, key)?;
        put_nullable(b, value)?;
        varint::put_varint(b, len_i32(headers.len())?);
        for (k, v) in headers {
            varint::put_varint(b, len_i32(k.len())?);
            b.extend_from_slice(k);
            put_nullable(b, *v)?;
        }
        varint::put_varint(&mut self.records, len_i32(b.len())?);
        self.records.extend_from_slice(b);
        self.count = self
            .count
            .checked_add(1)
            .ok_or_else(|| RecordsError::Encode("more than i32::MAX records".into()))?;
        self.max_timestamp = Some(self.max_timestamp.map_or(timestamp, |m| m.max(timestamp)));
        Ok(())
    }

    /// Appends a record from pre-encoded parts: `head` is the attributes byte
    /// and the timestamp delta (relative to this writer's base timestamp),
    /// `tail` the key, value and headers. Fillers write millions of records
    /// that differ only in their offset delta.
    pub(crate) fn push_templated(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        head: &[u8],
        tail: &[u8],
    ) -> Result<(), RecordsError> {
        let mut delta = [0u8; 5];
        let delta_len = varint::encode_varint(&mut delta, offset_delta);
        let body_len = len_i32(head.len() + delta_len + tail.len())?;
        varint::put_varint(&mut self.records, body_len);
        self.records.extend_from_slice(head);
        self.records
            .extend_from_slice(delta.get(..delta_len).unwrap_or_default());
        self.records.extend_from_slice(tail);
        self.count = self
            .count
            .checked_add(1)
            .ok_or_else(|| RecordsError::Encode("more than i32::MAX records".into()))?;
        self.max_timestamp = Some(self.max_timestamp.map_or(timestamp, |m| m.max(timestamp)));
        Ok(())
    }

    pub(crate) fn base_timestamp(&self) -> i64 {
        self.base_timestamp
    }

    /// Compresses the records and prepends the header (CRC included).
    pub(crate) fn finish(
        &self,
        last_offset_delta: i32,
        opts: &EncodeOptions,
    ) -> Result<BytesMut, RecordsError> {
        let level = opts
            .compression_level
            .unwrap_or_else(|| compression::default_level(opts.codec));
        let section = if opts.codec == Codec::None {
            None
        } else {
            Some(
                compression::compress(opts.codec, &self.records, level).map_err(|reason| {
                    RecordsError::Compress {
                        codec: opts.codec,
                        reason,
                    }
                })?,
            )
        };
        let section: &[u8] = section.as_deref().unwrap_or(&self.records);
        let batch_length = i32::try_from(HEADER_LEN - LOG_OVERHEAD + section.len())
            .map_err(|_| RecordsError::Encode("batch larger than 2 GiB".into()))?;
        let mut attributes = opts.codec.id();
        if opts.transactional {
            attributes |= ATTR_TRANSACTIONAL;
        }
        if opts.control {
            attributes |= ATTR_CONTROL;
        }
        let max_timestamp = match opts.log_append_time {
            Some(t) => {
                attributes |= ATTR_LOG_APPEND_TIME;
                t
            }
            None => self.max_timestamp.unwrap_or(NO_TIMESTAMP),
        };
        let header = BatchHeader {
            base_offset: opts.base_offset,
            batch_length,
            partition_leader_epoch: opts.partition_leader_epoch,
            magic: 2,
            crc: 0,
            attributes,
            last_offset_delta,
            base_timestamp: self.base_timestamp,
            max_timestamp,
            producer_id: opts.producer_id,
            producer_epoch: opts.producer_epoch,
            base_sequence: opts.base_sequence,
            record_count: self.count,
        };
        let mut head = [0u8; HEADER_LEN];
        header.write_to(&mut head);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head[ATTRIBUTES_POS..]), section);
        head[CRC_POS..ATTRIBUTES_POS].copy_from_slice(&crc.to_be_bytes());
        let mut out = BytesMut::with_capacity(HEADER_LEN + section.len());
        out.put_slice(&head);
        out.put_slice(section);
        Ok(out)
    }
}

fn len_i32(len: usize) -> Result<i32, RecordsError> {
    i32::try_from(len).map_err(|_| RecordsError::Encode(format!("length {len} exceeds i32::MAX")))
}

fn put_nullable(b: &mut Vec<u8>, v: Option<&[u8]>) -> Result<(), RecordsError> {
    if let Some(v) = v {
        len_i32(v.len())?;
    }
    varint::put_nullable(b, v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filler::FILLER_BASE_TIMESTAMP;

    fn rec(ts: i64, key: Option<&str>, value: Option<&str>) -> RecordToWrite {
        RecordToWrite {
            timestamp: ts,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Vec::new(),
        }
    }

    fn varied_records() -> Vec<RecordToWrite> {
        let mut out = vec![
            rec(1_700_000_000_000, Some("k"), Some("v")),
            rec(1_699_999_999_000, None, Some("")),
            rec(1_700_000_000_500, Some(""), None),
            rec(-1, None, None),
        ];
        // Duplicate header keys and a null header value must survive.
        out.push(RecordToWrite {
            timestamp: 1_700_000_000_001,
            key: Some(Bytes::from_static(b"\xff\x00binary")),
            value: Some(Bytes::from(vec![7u8; 5000])),
            headers: vec![
                (Bytes::from_static(b"h"), Some(Bytes::from_static(b"1"))),
                (Bytes::from_static(b"h"), None),
                (Bytes::from_static(b""), Some(Bytes::new())),
            ],
        });
        out
    }

    fn decode_one(b: BytesMut) -> (BatchHeader, Vec<Record>) {
        let raw = RawBatch::parse(b.freeze()).unwrap();
        let records = raw.records().unwrap();
        (raw.header, records)
    }

    #[test]
    fn next_fetch_position_is_after_the_last_complete_batch() {
        let batch = |base: i64, epoch: i32, n: usize| {
            let records: Vec<RecordToWrite> = (0..n)
                .map(|i| rec(1_700_000_000_000 + i as i64, None, Some("v")))
                .collect();
            encode_batch(
                &records,
                &EncodeOptions {
                    base_offset: base,
                    partition_leader_epoch: epoch,
                    ..EncodeOptions::default()
                },
            )
            .unwrap()
        };
        let mut all = BytesMut::new();
        all.extend_from_slice(&batch(100, 3, 5));
        all.extend_from_slice(&batch(105, 4, 2));
        assert_eq!(next_fetch_position(&all), Some((107, 4)));
        // A batch cut at the byte limit does not count.
        let third = batch(107, 4, 3);
        all.extend_from_slice(&third[..third.len() - 1]);
        assert_eq!(next_fetch_position(&all), Some((107, 4)));
        assert_eq!(next_fetch_position(&third[..20]), None);
        assert_eq!(next_fetch_position(&[]), None);
    }

    #[test]
    fn header_write_then_parse_is_identity() {
        let h = BatchHeader {
            base_offset: 0x0102_0304_0506_0708,
            batch_length: 49,
            partition_leader_epoch: -7,
            magic: 2,
            crc: 0xdead_beef,
            attributes: 0x34,
            last_offset_delta: 41,
            base_timestamp: -2,
            max_timestamp: 99,
            producer_id: 12345,
            producer_epoch: 3,
            base_sequence: 77,
            record_count: 42,
        };
        let mut buf = [0u8; HEADER_LEN];
        h.write_to(&mut buf);
        assert_eq!(BatchHeader::parse(&buf).unwrap(), h);
        assert_eq!(h.codec().unwrap(), Codec::Zstd);
        assert!(h.is_transactional() && h.is_control() && !h.is_log_append_time());
        assert_eq!(h.last_offset(), 0x0102_0304_0506_0708 + 41);
        assert_eq!(h.next_offset(), 0x0102_0304_0506_0708 + 42);
        assert_eq!(h.last_sequence(), 77 + 41);
    }

    #[test]
    fn header_helpers_saturate_instead_of_overflowing() {
        let mut buf = [0u8; HEADER_LEN];
        buf[..8].copy_from_slice(&i64::MAX.to_be_bytes());
        buf[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4]
            .copy_from_slice(&i32::MAX.to_be_bytes());
        let h = BatchHeader::parse(&buf).unwrap();
        assert_eq!(h.next_offset(), i64::MAX);
        assert_eq!(
            BatchHeader::parse(&buf[..60]).unwrap_err(),
            RecordsError::HeaderTruncated { len: 60 }
        );
    }

    #[test]
    fn sequence_wraps_like_kafka() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 0), 5);
    }

    #[test]
    fn codec_names_and_topic_config() {
        assert_eq!(Codec::from_topic_config("producer").unwrap(), None);
        assert_eq!(
            Codec::from_topic_config("uncompressed").unwrap(),
            Some(Codec::None)
        );
        assert_eq!(Codec::from_topic_config("ZSTD").unwrap(), Some(Codec::Zstd));
        assert_eq!("lz4".parse::<Codec>().unwrap(), Codec::Lz4);
        assert!(matches!(
            Codec::from_topic_config("brotli"),
            Err(RecordsError::UnknownCompressionType(_))
        ));
        for c in Codec::ALL {
            assert_eq!(Codec::from_id(c.id()), Some(c));
            assert_eq!(c.name().parse::<Codec>().unwrap(), c);
        }
        assert_eq!(Codec::from_id(5), None);
    }

    #[test]
    fn encode_decode_round_trip_every_codec() {
        let records = varied_records();
        for codec in Codec::ALL {
            let b = encode_batch(&records, &EncodeOptions::new(codec)).unwrap();
            let (h, decoded) = decode_one(b);
            assert_eq!(h.codec().unwrap(), codec);
            assert_eq!(h.base_offset, 0);
            assert_eq!(h.record_count, records.len() as i32);
            assert_eq!(h.last_offset_delta, records.len() as i32 - 1);
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (-1, -1, -1)
            );
            assert_eq!(h.base_timestamp, records[0].timestamp);
            assert_eq!(h.max_timestamp, 1_700_000_000_500);
            assert_eq!(decoded.len(), records.len());
            for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
                assert_eq!(d.offset, i as i64, "{codec}");
                assert_eq!(RecordToWrite::from(d.clone()), *r, "{codec} record {i}");
            }
        }
    }

    #[test]
    fn extreme_timestamps_round_trip() {
        let records = vec![
            rec(i64::MAX, None, None),
            rec(i64::MIN, None, None),
            rec(0, None, None),
        ];
        let (_, decoded) = decode_one(encode_batch(&records, &EncodeOptions::default()).unwrap());
        let ts: Vec<i64> = decoded.iter().map(|r| r.timestamp).collect();
        assert_eq!(ts, vec![i64::MAX, i64::MIN, 0]);
    }

    #[test]
    fn with_producer_restamps_identity_and_crc_and_refuses_damaged_input() {
        let records: Vec<RecordToWrite> = (0..3)
            .map(|i| RecordToWrite {
                value: Some(Bytes::from(format!("v{i}"))),
                ..RecordToWrite::default()
            })
            .collect();
        let opts = EncodeOptions {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 42,
            ..EncodeOptions::new(Codec::Zstd)
        };
        let batch = encode_batch(&records, &opts).unwrap().freeze();
        let out = with_producer(&batch, 1_000_000_123, 3).unwrap();
        let got = RawBatch::parse(out.clone()).unwrap();
        got.verify_crc().unwrap();
        assert_eq!(
            (
                got.header.producer_id,
                got.header.producer_epoch,
                got.header.base_sequence
            ),
            (1_000_000_123, 3, 42)
        );
        assert_eq!(got.records().unwrap().len(), 3);
        assert_eq!(out.len(), batch.len());
        // A corrupted batch stays refused: its CRC is not recomputed.
        let mut bad = batch.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(with_producer(&Bytes::from(bad), 1, 0).is_err());
        // So is a cut one.
        assert!(with_producer(&batch.slice(..batch.len() - 1), 1, 0).is_err());
    }

    #[test]
    fn data_batch_never_gets_the_filler_marker() {
        let records = vec![
            rec(FILLER_BASE_TIMESTAMP, Some("k"), None),
            rec(5, None, None),
        ];
        let (h, decoded) = decode_one(encode_batch(&records, &EncodeOptions::default()).unwrap());
        assert_ne!(h.base_timestamp, FILLER_BASE_TIMESTAMP);
        assert_eq!(decoded[0].timestamp, FILLER_BASE_TIMESTAMP);
        assert_eq!(decoded[1].timestamp, 5);
    }

    #[test]
    fn encode_options_set_header_fields() {
        let opts = EncodeOptions {
            base_offset: 1000,
            partition_leader_epoch: 4,
            producer_id: 9,
            producer_epoch: 2,
            base_sequence: 17,
            transactional: true,
            base_timestamp: Some(50),
            ..EncodeOptions::new(Codec::Gzip)
        };
        let (h, decoded) = decode_one(encode_batch(&[rec(60, None, None)], &opts).unwrap());
        assert_eq!(
            (
                h.base_offset,
                h.partition_leader_epoch,
                h.producer_id,
                h.producer_epoch,
                h.base_sequence
            ),
            (1000, 4, 9, 2, 17)
        );
        assert!(h.is_transactional() && !h.is_control());
        assert_eq!(h.base_timestamp, 50);
        assert_eq!(decoded[0].timestamp, 60);
        assert_eq!(decoded[0].offset, 1000);
        assert!(encode_batch(&[], &opts).is_err());
    }

    #[test]
    fn log_append_time_records_read_as_the_batch_max_timestamp() {
        let opts = EncodeOptions {
            log_append_time: Some(1_800_000_000_000),
            ..EncodeOptions::new(Codec::Lz4)
        };
        let records = vec![rec(1, None, None), rec(2, None, None)];
        let (h, decoded) = decode_one(encode_batch(&records, &opts).unwrap());
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 1_800_000_000_000);
        assert!(decoded.iter().all(|r| r.timestamp == 1_800_000_000_000));
    }

    #[test]
    fn sparse_batch_keeps_offsets_and_empty_batch_is_valid() {
        let records = vec![(1, rec(10, Some("a"), None)), (4, rec(11, Some("b"), None))];
        let opts = EncodeOptions {
            base_offset: 100,
            ..EncodeOptions::default()
        };
        let (h, decoded) = decode_one(encode_sparse_batch(&records, 5, &opts).unwrap());
        assert_eq!((h.record_count, h.last_offset_delta), (2, 5));
        assert_eq!(
            decoded.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![101, 104]
        );
        let (h, decoded) = decode_one(encode_sparse_batch(&[], 3, &opts).unwrap());
        assert_eq!(
            (h.record_count, h.last_offset_delta, h.next_offset()),
            (0, 3, 104)
        );
        assert!(decoded.is_empty());
        assert!(encode_sparse_batch(
            &[(2, rec(0, None, None)), (1, rec(0, None, None))],
            3,
            &opts
        )
        .is_err());
    }

    #[test]
    fn control_records_parse() {
        for kind in [
            ControlKind::Abort,
            ControlKind::Commit,
            ControlKind::Other(7),
        ] {
            let r = control_record(kind, 5, 3);
            assert_eq!(ControlKind::from_key(r.key.as_deref().unwrap()), Some(kind));
        }
        assert_eq!(ControlKind::from_key(&[0, 0, 1]), None);
    }

    fn concat(parts: &[&[u8]]) -> Bytes {
        Bytes::from(parts.concat())
    }

    fn batch_at(offset: i64, n: usize) -> BytesMut {
        let records: Vec<_> = (0..n)
            .map(|i| rec(i as i64, Some("k"), Some("value")))
            .collect();
        let opts = EncodeOptions {
            base_offset: offset,
            ..EncodeOptions::default()
        };
        encode_batch(&records, &opts).unwrap()
    }

    #[test]
    fn iterator_yields_complete_batches_and_stops_at_a_partial_one() {
        let a = batch_at(0, 3);
        let b = batch_at(3, 2);
        let c = batch_at(5, 4);
        for cut in [0, 5, 11, 12, 16, 17, 60, c.len() - 1] {
            let data = concat(&[&a, &b, &c[..cut]]);
            let mut it = batches(&data);
            let got: Vec<_> = it.by_ref().map(|r| r.unwrap().header.base_offset).collect();
            assert_eq!(got, vec![0, 3], "cut {cut}");
            assert_eq!(it.position(), a.len() + b.len());
        }
        let data = concat(&[&a, &b, &c]);
        let all: Vec<_> = batches(&data).map(|r| r.unwrap()).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].bytes, Bytes::copy_from_slice(&c));
        // Zero copy: the batch is a slice of the fetched buffer.
        assert_eq!(all[2].bytes.as_ptr(), data[a.len() + b.len()..].as_ptr());
        assert!(all.iter().all(|b| b.verify_crc().is_ok()));
        assert_eq!(batches(&Bytes::new()).count(), 0);
    }

    #[test]
    fn bad_crc_is_an_error_naming_the_offset_and_ends_iteration() {
        let a = batch_at(0, 3);
        let mut b = batch_at(3, 2);
        let last = b.len() - 1;
        b[last] ^= 1;
        let data = concat(&[&a, &b, &batch_at(5, 1)]);
        let results: Vec<_> = batches(&data).collect();
        assert_eq!(results.len(), 2);
        let err = results[1].clone().unwrap_err();
        assert!(
            matches!(err, RecordsError::CrcMismatch { base_offset: 3, position, .. } if position == a.len())
        );
        assert!(err.to_string().contains("offset 3"), "{err}");
    }

    #[test]
    fn bad_magic_and_short_length_are_errors() {
        let mut a = batch_at(7, 1);
        a[MAGIC_POS] = 1;
        let err = batches(&a.freeze()).next().unwrap().unwrap_err();
        assert!(matches!(
            err,
            RecordsError::UnsupportedMagic {
                base_offset: 7,
                magic: 1,
                ..
            }
        ));
        // Even as a partial tail, an old-format message set is an error.
        let mut a = batch_at(8, 1);
        a[MAGIC_POS] = 0;
        let err = batches(&Bytes::copy_from_slice(&a[..20]))
            .next()
            .unwrap()
            .unwrap_err();
        assert!(matches!(
            err,
            RecordsError::UnsupportedMagic { base_offset: 8, .. }
        ));
        let mut a = batch_at(9, 1);
        a[BATCH_LENGTH_POS..BATCH_LENGTH_POS + 4].copy_from_slice(&48i32.to_be_bytes());
        let err = batches(&a.freeze()).next().unwrap().unwrap_err();
        assert!(matches!(
            err,
            RecordsError::InvalidBatchLength {
                base_offset: 9,
                batch_length: 48,
                ..
            }
        ));
    }

    /// Re-frames a batch's records with new (valid) CRC after `edit`.
    fn with_header(b: &BytesMut, edit: impl Fn(&mut BatchHeader)) -> Bytes {
        let mut h = BatchHeader::parse(b).unwrap();
        edit(&mut h);
        let mut head = [0u8; HEADER_LEN];
        h.write_to(&mut head);
        let mut out = head.to_vec();
        out.extend_from_slice(&b[HEADER_LEN..]);
        let crc = compute_crc(&out);
        out[CRC_POS..ATTRIBUTES_POS].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(out)
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let b = batch_at(0, 3);
        let too_many = with_header(&b, |h| h.record_count = 1_000_000_000);
        assert!(RawBatch::parse(too_many).unwrap().records().is_err());
        let too_few = with_header(&b, |h| h.record_count = 2);
        let err = RawBatch::parse(too_few).unwrap().records().unwrap_err();
        assert!(err.to_string().contains("bytes left"), "{err}");
        let negative = with_header(&b, |h| h.record_count = -1);
        assert!(RawBatch::parse(negative).unwrap().records().is_err());
        let short_range = with_header(&b, |h| h.last_offset_delta = 1);
        let err = RawBatch::parse(short_range).unwrap().records().unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        let bad_codec = with_header(&b, |h| h.attributes = 6);
        assert!(matches!(
            RawBatch::parse(bad_codec).unwrap().records(),
            Err(RecordsError::UnknownCodec { id: 6, .. })
        ));
        let not_zstd = with_header(&b, |h| h.attributes = Codec::Zstd.id());
        assert!(matches!(
            RawBatch::parse(not_zstd).unwrap().records(),
            Err(RecordsError::Decompress {
                codec: Codec::Zstd,
                ..
            })
        ));
    }

    #[test]
    fn raw_snappy_as_librdkafka_writes_it_decodes() {
        let records = varied_records();
        let plain = encode_batch(&records, &EncodeOptions::default()).unwrap();
        let raw = snap::raw::Encoder::new()
            .compress_vec(&plain[HEADER_LEN..])
            .unwrap();
        let mut b = BytesMut::from(&plain[..HEADER_LEN]);
        b.extend_from_slice(&raw);
        let framed = with_header(&b, |h| {
            h.attributes = Codec::Snappy.id();
            h.batch_length = (HEADER_LEN - LOG_OVERHEAD + raw.len()) as i32;
        });
        let batch = RawBatch::parse(framed).unwrap();
        let decoded: Vec<RecordToWrite> = batch
            .records()
            .unwrap()
            .into_iter()
            .map(Into::into)
            .collect();
        assert_eq!(decoded, records);
        // And our own snappy output is the xerial framing Java writes.
        let ours = encode_batch(&records, &EncodeOptions::new(Codec::Snappy)).unwrap();
        assert!(ours[HEADER_LEN..].starts_with(b"\x82SNAPPY\x00"));
    }

    mod kafka_protocol_interop {
        use super::*;
        use kafka_protocol::records::{
            Compression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder,
            RecordEncodeOptions, TimestampType,
        };

        fn kcodec(c: Codec) -> Compression {
            match c {
                Codec::None => Compression::None,
                Codec::Gzip => Compression::Gzip,
                Codec::Snappy => Compression::Snappy,
                Codec::Lz4 => Compression::Lz4,
                Codec::Zstd => Compression::Zstd,
            }
        }

        /// kafka-protocol's headers are a map: use unique header keys here.
        fn records() -> Vec<RecordToWrite> {
            (0..20)
                .map(|i| RecordToWrite {
                    timestamp: 1_700_000_000_000 + i,
                    key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                    value: Some(Bytes::from(vec![i as u8; 100 + i as usize])),
                    headers: vec![(
                        Bytes::from_static(b"trace"),
                        Some(Bytes::from(format!("{i}"))),
                    )],
                })
                .collect()
        }

        #[test]
        fn kafka_protocol_decodes_our_batches() {
            for codec in Codec::ALL {
                let ours = encode_batch(&records(), &EncodeOptions::new(codec)).unwrap();
                let mut buf = ours.freeze();
                let set = RecordBatchDecoder::decode(&mut buf).unwrap();
                assert_eq!(set.records.len(), 20, "{codec}");
                for (i, (k, r)) in set.records.iter().zip(records()).enumerate() {
                    assert_eq!(k.offset, i as i64);
                    assert_eq!(k.timestamp, r.timestamp);
                    assert_eq!(k.key, r.key);
                    assert_eq!(k.value, r.value);
                    assert_eq!(k.headers.len(), 1);
                }
            }
        }

        #[test]
        fn we_decode_kafka_protocol_batches() {
            for codec in Codec::ALL {
                let krecords: Vec<KRecord> = records()
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| KRecord {
                        transactional: false,
                        control: false,
                        delete_horizon: false,
                        partition_leader_epoch: 0,
                        producer_id: 5,
                        producer_epoch: 1,
                        timestamp_type: TimestampType::Creation,
                        offset: 500 + i as i64,
                        sequence: i as i32,
                        timestamp: r.timestamp,
                        key: r.key,
                        value: r.value,
                        headers: r
                            .headers
                            .into_iter()
                            .map(|(k, v)| {
                                (kafka_protocol::protocol::StrBytes::try_from(k).unwrap(), v)
                            })
                            .collect(),
                    })
                    .collect();
                let mut buf = BytesMut::new();
                RecordBatchEncoder::encode(
                    &mut buf,
                    &krecords,
                    &RecordEncodeOptions {
                        version: 2,
                        compression: kcodec(codec),
                    },
                )
                .unwrap();
                let all: Vec<_> = batches(&buf.freeze()).collect::<Result<_, _>>().unwrap();
                assert_eq!(all.len(), 1, "{codec}");
                assert_eq!(all[0].header.producer_id, 5);
                let decoded = all[0].records().unwrap();
                for (i, (d, r)) in decoded.into_iter().zip(records()).enumerate() {
                    assert_eq!(d.offset, 500 + i as i64);
                    assert_eq!(RecordToWrite::from(d), r, "{codec}");
                }
            }
        }
    }
}
