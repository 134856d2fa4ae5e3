//! Deterministic test records and record comparison.
//!
//! Every record the bed writes is a pure function of `(topic, partition, seq,
//! spec)`, so a test can regenerate what it expects at any offset instead of
//! keeping copies around: see [`expected_record`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Compression codec of the producer (`compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    /// Every codec, for tests that loop over all of them.
    pub const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    /// The librdkafka `compression.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Codec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Codec::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown codec {s:?}; use none|gzip|snappy|lz4|zstd"))
    }
}

/// How the producer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProduceMode {
    /// `enable.idempotence=false`, `acks=all`.
    #[default]
    Plain,
    /// `enable.idempotence=true`: batches carry a producer id and sequences.
    Idempotent,
    /// A transactional producer. Every transaction holds
    /// [`ProduceSpec::batch_records`] records (one batch); when `abort_every`
    /// is `Some(k)`, every k-th transaction (the k-th, 2k-th, ...) is aborted
    /// after its records were written, the others are committed.
    ///
    /// The librdkafka mock cluster writes **no transaction control markers**
    /// and answers every fetch with an empty aborted-transactions list and
    /// last stable offset = high watermark: on the mock, aborted records look
    /// committed to every reader (also `read_committed`) and offsets are
    /// contiguous across transactions. On a real broker each commit/abort
    /// takes one offset for its control record and `read_committed` readers
    /// skip aborted records.
    Transactional { abort_every: Option<usize> },
}

/// What to produce. Records are deterministic: see [`expected_record`].
#[derive(Debug, Clone)]
pub struct ProduceSpec {
    pub codec: Codec,
    pub mode: ProduceMode,
    /// Records per batch (`batch.num.messages`; also the size of one
    /// transaction in transactional mode). A hint: librdkafka also closes a
    /// batch at `batch.size` bytes (1 MB).
    pub batch_records: usize,
    /// `None` writes null keys; `Some(n)` keys of exactly `n` bytes.
    pub key_size: Option<usize>,
    /// `None` writes null values (tombstones); `Some(n)` values of `n` bytes.
    pub value_size: Option<usize>,
    /// Adds four headers (see [`expected_record`]), one with a null value.
    pub with_headers: bool,
    /// Sequence number of the first record; the i-th record written has
    /// `seq = first_seq + i`. Use different ranges for successive calls on
    /// one partition so their records differ.
    pub first_seq: u64,
    /// Record timestamp (CreateTime) = `timestamp_base_ms + seq`.
    pub timestamp_base_ms: i64,
    /// Deadline for the whole call.
    pub timeout: Duration,
}

/// 2026-01-01T00:00:00Z, the default timestamp base.
pub const DEFAULT_TIMESTAMP_BASE_MS: i64 = 1_767_225_600_000;

impl Default for ProduceSpec {
    fn default() -> Self {
        ProduceSpec {
            codec: Codec::None,
            mode: ProduceMode::Plain,
            batch_records: 100,
            key_size: Some(16),
            value_size: Some(100),
            with_headers: true,
            first_seq: 0,
            timestamp_base_ms: DEFAULT_TIMESTAMP_BASE_MS,
            timeout: Duration::from_secs(30),
        }
    }
}

/// One record header; `value: None` is a null header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// Everything of a record that must survive mirroring, without its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordContent {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<RecordHeader>,
    /// Milliseconds since the epoch (CreateTime).
    pub timestamp: i64,
}

impl RecordContent {
    /// This content placed at `offset`.
    pub fn at(self, offset: i64) -> ConsumedRecord {
        ConsumedRecord {
            offset,
            key: self.key,
            value: self.value,
            headers: self.headers,
            timestamp: self.timestamp,
        }
    }
}

/// A record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<RecordHeader>,
    /// Milliseconds since the epoch; -1 when the record has none.
    pub timestamp: i64,
}

/// A record a producer wrote, acknowledged at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducedRecord {
    pub seq: u64,
    pub offset: i64,
    /// Written in a transaction that was aborted (see [`ProduceMode`] for
    /// how the mock shows such records).
    pub aborted: bool,
    pub content: RecordContent,
}

impl ProducedRecord {
    /// How a `read_uncommitted` consumer sees this record.
    pub fn to_consumed(&self) -> ConsumedRecord {
        self.content.clone().at(self.offset)
    }
}

/// The result of one [`crate::produce`] call, sorted by offset.
#[derive(Debug, Clone)]
pub struct Produced {
    pub topic: String,
    pub partition: i32,
    pub records: Vec<ProducedRecord>,
}

impl Produced {
    /// Offset of the first record, if any was written.
    pub fn first_offset(&self) -> Option<i64> {
        self.records.first().map(|r| r.offset)
    }

    /// One past the offset of the last record, if any was written.
    pub fn end_offset(&self) -> Option<i64> {
        self.records.last().map(|r| r.offset + 1)
    }

    /// All records as a `read_uncommitted` consumer of the mock sees them
    /// (aborted ones included, since the mock keeps them as plain data).
    pub fn as_consumed(&self) -> Vec<ConsumedRecord> {
        self.records
            .iter()
            .map(ProducedRecord::to_consumed)
            .collect()
    }

    /// The records of committed transactions (all of them for
    /// non-transactional modes).
    pub fn committed(&self) -> impl Iterator<Item = &ProducedRecord> {
        self.records.iter().filter(|r| !r.aborted)
    }

    /// Number of records in aborted transactions.
    pub fn aborted_count(&self) -> usize {
        self.records.iter().filter(|r| r.aborted).count()
    }
}

/// The record the bed writes as number `seq` of `topic`/`partition`:
///
/// - key (`key_size: Some(n)`): `k/<topic>/<partition>/<seq>/` followed by
///   pseudo-random letters, cut to exactly `n` bytes (so keys are unique only
///   when `n` holds the prefix);
/// - value (`value_size: Some(n)`): `v/<topic>/<partition>/<seq>/` followed by
///   pseudo-random letters from a 16-letter alphabet (compressible to about
///   half), exactly `n` bytes;
/// - headers (`with_headers`): `seq` = decimal seq, `origin` =
///   `<topic>/<partition>`, `empty` = null value, `bin` = 8 pseudo-random
///   bytes;
/// - timestamp: `timestamp_base_ms + seq`.
pub fn expected_record(topic: &str, partition: i32, seq: u64, spec: &ProduceSpec) -> RecordContent {
    let mut rng = SplitMix64::new(seed(topic, partition, seq));
    let key = spec
        .key_size
        .map(|n| filled(format!("k/{topic}/{partition}/{seq}/"), n, &mut rng));
    let value = spec
        .value_size
        .map(|n| filled(format!("v/{topic}/{partition}/{seq}/"), n, &mut rng));
    let headers = if spec.with_headers {
        vec![
            RecordHeader {
                key: "seq".into(),
                value: Some(seq.to_string().into_bytes()),
            },
            RecordHeader {
                key: "origin".into(),
                value: Some(format!("{topic}/{partition}").into_bytes()),
            },
            RecordHeader {
                key: "empty".into(),
                value: None,
            },
            RecordHeader {
                key: "bin".into(),
                value: Some(rng.next().to_be_bytes().to_vec()),
            },
        ]
    } else {
        Vec::new()
    };
    RecordContent {
        key,
        value,
        headers,
        timestamp: spec
            .timestamp_base_ms
            .saturating_add(i64::try_from(seq).unwrap_or(i64::MAX)),
    }
}

fn filled(prefix: String, len: usize, rng: &mut SplitMix64) -> Vec<u8> {
    const ALPHABET: &[u8; 16] = b"abcdefghijklmnop";
    let mut out = prefix.into_bytes();
    out.truncate(len);
    out.reserve(len - out.len());
    while out.len() < len {
        let mut bits = rng.next();
        for _ in 0..16 {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[(bits & 0xf) as usize]);
            bits >>= 4;
        }
    }
    out
}

/// FNV-1a over the identity of a record.
fn seed(topic: &str, partition: i32, seq: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = topic
        .as_bytes()
        .iter()
        .copied()
        .chain(partition.to_be_bytes())
        .chain(seq.to_be_bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64: deterministic, fast, good enough for synthetic data.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Describes the first difference between two record sequences, or `None`
/// when they are identical (same offsets, keys, values, headers, timestamps).
pub fn first_difference(source: &[ConsumedRecord], target: &[ConsumedRecord]) -> Option<String> {
    for (i, (s, t)) in source.iter().zip(target).enumerate() {
        let field = if s.offset != t.offset {
            Some(("offset", s.offset.to_string(), t.offset.to_string()))
        } else if s.key != t.key {
            Some((
                "key",
                show_bytes(s.key.as_deref()),
                show_bytes(t.key.as_deref()),
            ))
        } else if s.value != t.value {
            Some((
                "value",
                show_bytes(s.value.as_deref()),
                show_bytes(t.value.as_deref()),
            ))
        } else if s.headers != t.headers {
            Some((
                "headers",
                show_headers(&s.headers),
                show_headers(&t.headers),
            ))
        } else if s.timestamp != t.timestamp {
            Some((
                "timestamp",
                s.timestamp.to_string(),
                t.timestamp.to_string(),
            ))
        } else {
            None
        };
        if let Some((field, sv, tv)) = field {
            return Some(format!(
                "record #{i} (source offset {}) differs in {field}:\n  source: {sv}\n  target: {tv}",
                s.offset
            ));
        }
    }
    match source.len().cmp(&target.len()) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(format!(
            "target has {} records, source {}; first missing on target: source offset {}",
            target.len(),
            source.len(),
            source[target.len()].offset
        )),
        std::cmp::Ordering::Less => Some(format!(
            "target has {} records, source {}; first extra on target: offset {}",
            target.len(),
            source.len(),
            target[source.len()].offset
        )),
    }
}

/// Panics with the first difference (offset, field, both values) unless the
/// two sequences are identical.
#[track_caller]
pub fn assert_identical(source: &[ConsumedRecord], target: &[ConsumedRecord]) {
    if let Some(diff) = first_difference(source, target) {
        panic!("records differ: {diff}");
    }
}

/// Checks that offsets increase by exactly one from record to record.
pub fn check_contiguous(records: &[ConsumedRecord]) -> anyhow::Result<()> {
    for pair in records.windows(2) {
        if pair[1].offset != pair[0].offset + 1 {
            anyhow::bail!(
                "offsets not contiguous: {} is followed by {}",
                pair[0].offset,
                pair[1].offset
            );
        }
    }
    Ok(())
}

fn show_bytes(b: Option<&[u8]>) -> String {
    const MAX: usize = 64;
    match b {
        None => "null".into(),
        Some(b) => {
            let shown = String::from_utf8_lossy(&b[..b.len().min(MAX)]);
            let more = if b.len() > MAX { "..." } else { "" };
            format!("{} bytes {shown:?}{more}", b.len())
        }
    }
}

fn show_headers(h: &[RecordHeader]) -> String {
    let parts: Vec<String> = h
        .iter()
        .map(|h| format!("{}={}", h.key, show_bytes(h.value.as_deref())))
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_deterministic_and_sized() {
        let spec = ProduceSpec {
            key_size: Some(40),
            value_size: Some(1000),
            ..ProduceSpec::default()
        };
        let a = expected_record("t", 3, 7, &spec);
        let b = expected_record("t", 3, 7, &spec);
        let c = expected_record("t", 3, 8, &spec);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.key.as_ref().map(Vec::len), Some(40));
        assert_eq!(a.value.as_ref().map(Vec::len), Some(1000));
        assert_eq!(a.timestamp, DEFAULT_TIMESTAMP_BASE_MS + 7);
        assert!(a.value.as_ref().is_some_and(|v| v.starts_with(b"v/t/3/7/")));
        let tiny = ProduceSpec {
            key_size: Some(2),
            value_size: None,
            with_headers: false,
            ..ProduceSpec::default()
        };
        let d = expected_record("t", 3, 7, &tiny);
        assert_eq!(d.key, Some(b"k/".to_vec()));
        assert_eq!(d.value, None);
        assert!(d.headers.is_empty());
    }

    #[test]
    fn first_difference_names_field_and_values() {
        let spec = ProduceSpec::default();
        let a: Vec<_> = (0..3)
            .map(|s| expected_record("t", 0, s, &spec).at(s as i64))
            .collect();
        assert_eq!(first_difference(&a, &a), None);
        let mut b = a.clone();
        b[1].timestamp += 1;
        let diff = first_difference(&a, &b).unwrap_or_default();
        assert!(diff.contains("record #1"), "{diff}");
        assert!(diff.contains("timestamp"), "{diff}");
        let diff = first_difference(&a, &a[..2]).unwrap_or_default();
        assert!(
            diff.contains("first missing on target: source offset 2"),
            "{diff}"
        );
    }

    #[test]
    fn codec_parses() {
        for c in Codec::ALL {
            assert_eq!(c.as_str().parse::<Codec>().ok(), Some(c));
        }
        assert!("brotli".parse::<Codec>().is_err());
    }
}
