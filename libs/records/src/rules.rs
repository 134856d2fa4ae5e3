//! The rules a real Kafka broker applies to a client's Produce request
//! (LogValidator, UnifiedLog, ProducerAppendInfo), checked on our side because
//! the brokers used in tests (librdkafka's mock cluster) enforce few of them.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use bytes::Bytes;

use crate::batch::{
    compute_crc, increment_sequence, BatchHeader, Codec, RawBatch, ATTR_CODEC_MASK, HEADER_LEN,
    LOG_OVERHEAD,
};
use crate::RecordsError;

/// What the target topic and the request impose on one partition's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceRules {
    /// The topic's max.message.bytes, compared with the batch as sent.
    pub max_message_bytes: usize,
    /// The topic's compression.type unless "producer".
    pub topic_codec: Option<Codec>,
    /// Version of the Produce request carrying the batch.
    pub produce_version: i16,
    /// The request carries a transactional id (a transactional client's,
    /// through the router): its batches may be transactional.
    pub transactional: bool,
}

impl Default for ProduceRules {
    fn default() -> Self {
        ProduceRules {
            max_message_bytes: crate::transform::DEFAULT_MAX_BATCH_BYTES,
            topic_codec: None,
            produce_version: 9,
            transactional: false,
        }
    }
}

/// A broken rule; the message names the rule and the offending values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleViolation {
    #[error("one record batch per partition: {len} bytes cannot hold a 61-byte batch header")]
    Truncated { len: usize },
    #[error("batchLength must match the bytes: batchLength {batch_length} says {declared} bytes, the partition carries {actual}")]
    LengthMismatch {
        batch_length: i32,
        declared: usize,
        actual: usize,
    },
    #[error("exactly one record batch per partition: the first batch is {first} bytes of the {actual} sent")]
    MoreThanOneBatch { first: usize, actual: usize },
    #[error("magic must be 2 (record batch v2), got {magic}")]
    Magic { magic: i8 },
    #[error("a client batch must have baseOffset 0, got {base_offset}")]
    BaseOffsetNotZero { base_offset: i64 },
    #[error("Inconsistent batch offset range: lastOffsetDelta + 1 ({last_offset_delta} + 1) must equal recordCount ({record_count}) and be > 0")]
    OffsetRange {
        last_offset_delta: i32,
        record_count: i32,
    },
    #[error("control batches from clients are rejected (INVALID_RECORD)")]
    ControlBatch,
    #[error("transactional batch in a request without a transactional id: the broker refuses it, or it opens a transaction that holds the last stable offset")]
    Transactional,
    #[error("a batch with producer id {producer_id} needs baseSequence >= 0, got {base_sequence}")]
    SequenceMissing {
        producer_id: i64,
        base_sequence: i32,
    },
    #[error(
        "a batch with producer id {producer_id} needs producerEpoch >= 0, got {producer_epoch}"
    )]
    EpochMissing {
        producer_id: i64,
        producer_epoch: i16,
    },
    #[error(
        "CRC-32C mismatch (CORRUPT_MESSAGE): stored {stored:#010x}, computed {computed:#010x}"
    )]
    Crc { stored: u32, computed: u32 },
    #[error("batch of {size} bytes exceeds max.message.bytes {max} (MESSAGE_TOO_LARGE)")]
    TooLarge { size: usize, max: usize },
    #[error("unknown compression codec id {id}")]
    UnknownCodec { id: i16 },
    #[error("zstd needs Produce v7+, request is v{version} (UNSUPPORTED_COMPRESSION_TYPE)")]
    ZstdNeedsV7 { version: i16 },
    #[error("codec {batch} differs from the topic's compression.type {topic}: the broker would rebuild the batch (new inner offsets, baseTimestamp lost)")]
    CodecMismatch { batch: Codec, topic: Codec },
    #[error("inner offset deltas must be 0..n-1 for the broker to store the batch as sent: record {index} has delta {delta}")]
    InnerOffsets { index: usize, delta: i64 },
    #[error("records cannot be decoded (INVALID_RECORD / CORRUPT_MESSAGE): {0}")]
    Undecodable(String),
    #[error("compacted topic cannot accept a record without key (record {index})")]
    MissingKey { index: usize },
}

/// Checks one partition's records of a Produce request against the broker's
/// rules; `Ok` means a real broker stores the batch as sent (only baseOffset,
/// partitionLeaderEpoch and, for LogAppendTime topics, maxTimestamp change).
pub fn check_partition_records(records: &[u8], rules: &ProduceRules) -> Result<(), RuleViolation> {
    let batch = check_header(records, rules)?;
    let decoded = batch
        .records_unchecked_offsets()
        .map_err(|e| RuleViolation::Undecodable(e.to_string()))?;
    for (index, r) in decoded.iter().enumerate() {
        let delta = r.offset - batch.header.base_offset;
        if delta != index as i64 {
            return Err(RuleViolation::InnerOffsets { index, delta });
        }
    }
    Ok(())
}

/// The header-level rules only (everything but decoding the records): cheap
/// enough for every produce request; forwarded batches are not decompressed,
/// so their records are as valid as the source broker kept them.
pub fn check_batch_header(records: &[u8], rules: &ProduceRules) -> Result<(), RuleViolation> {
    check_header(records, rules).map(|_| ())
}

/// The extra rule of compacted topics: every record needs a key.
pub fn check_keys_for_compacted_topic(records: &[u8]) -> Result<(), RuleViolation> {
    let batch = RawBatch::parse(Bytes::copy_from_slice(records))
        .map_err(|e| RuleViolation::Undecodable(e.to_string()))?;
    let decoded = batch
        .records()
        .map_err(|e| RuleViolation::Undecodable(e.to_string()))?;
    match decoded.iter().position(|r| r.key.is_none()) {
        Some(index) => Err(RuleViolation::MissingKey { index }),
        None => Ok(()),
    }
}

fn check_header(records: &[u8], rules: &ProduceRules) -> Result<RawBatch, RuleViolation> {
    let h =
        BatchHeader::parse(records).map_err(|_| RuleViolation::Truncated { len: records.len() })?;
    if h.magic != 2 {
        return Err(RuleViolation::Magic { magic: h.magic });
    }
    let declared = usize::try_from(h.batch_length)
        .unwrap_or(0)
        .saturating_add(LOG_OVERHEAD);
    if h.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 || declared > records.len() {
        return Err(RuleViolation::LengthMismatch {
            batch_length: h.batch_length,
            declared,
            actual: records.len(),
        });
    }
    if declared < records.len() {
        return Err(RuleViolation::MoreThanOneBatch {
            first: declared,
            actual: records.len(),
        });
    }
    let computed = compute_crc(records);
    if computed != h.crc {
        return Err(RuleViolation::Crc {
            stored: h.crc,
            computed,
        });
    }
    if h.base_offset != 0 {
        return Err(RuleViolation::BaseOffsetNotZero {
            base_offset: h.base_offset,
        });
    }
    if h.record_count <= 0 || i64::from(h.last_offset_delta) + 1 != i64::from(h.record_count) {
        return Err(RuleViolation::OffsetRange {
            last_offset_delta: h.last_offset_delta,
            record_count: h.record_count,
        });
    }
    if h.is_control() {
        return Err(RuleViolation::ControlBatch);
    }
    if h.is_transactional() && !rules.transactional {
        return Err(RuleViolation::Transactional);
    }
    if h.producer_id >= 0 {
        if h.base_sequence < 0 {
            return Err(RuleViolation::SequenceMissing {
                producer_id: h.producer_id,
                base_sequence: h.base_sequence,
            });
        }
        if h.producer_epoch < 0 {
            return Err(RuleViolation::EpochMissing {
                producer_id: h.producer_id,
                producer_epoch: h.producer_epoch,
            });
        }
    }
    if records.len() > rules.max_message_bytes {
        return Err(RuleViolation::TooLarge {
            size: records.len(),
            max: rules.max_message_bytes,
        });
    }
    let codec = h.codec().map_err(|_| RuleViolation::UnknownCodec {
        id: h.attributes & ATTR_CODEC_MASK,
    })?;
    if codec == Codec::Zstd && rules.produce_version < 7 {
        return Err(RuleViolation::ZstdNeedsV7 {
            version: rules.produce_version,
        });
    }
    if let Some(topic) = rules.topic_codec {
        if topic != codec {
            return Err(RuleViolation::CodecMismatch {
                batch: codec,
                topic,
            });
        }
    }
    Ok(RawBatch {
        header: h,
        bytes: Bytes::copy_from_slice(records),
    })
}

/// Result of a produce the broker accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Appended at these offsets.
    Appended { base_offset: i64, last_offset: i64 },
    /// A retry of one of the producer's last 5 batches: nothing appended,
    /// the original offsets are returned.
    Duplicate { base_offset: i64, last_offset: i64 },
}

/// A produce the broker's idempotence checks refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceRejection {
    #[error("OUT_OF_ORDER_SEQUENCE_NUMBER: producer {producer_id} epoch {producer_epoch} sent sequence {sequence}, expected {expected}")]
    OutOfOrderSequence {
        producer_id: i64,
        producer_epoch: i16,
        sequence: i32,
        expected: i32,
    },
    #[error("INVALID_PRODUCER_EPOCH: producer {producer_id} epoch {producer_epoch} is older than the current epoch {current_epoch} (fenced)")]
    InvalidProducerEpoch {
        producer_id: i64,
        producer_epoch: i16,
        current_epoch: i16,
    },
    #[error("malformed batch: {0}")]
    Malformed(#[from] RecordsError),
}

/// How many batches per producer the broker remembers for duplicate detection.
const CACHED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy)]
struct BatchMetadata {
    first_seq: i32,
    last_seq: i32,
    first_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
}

#[derive(Debug, Clone, Default)]
struct PartitionState {
    log_end_offset: i64,
    producers: HashMap<i64, ProducerEntry>,
}

/// The broker's idempotent-producer state per (partition, producer id), to
/// check what a writer's produce requests would get from a real broker.
#[derive(Debug, Clone)]
pub struct ProducerStateModel<P = i32> {
    partitions: HashMap<P, PartitionState>,
}

impl<P: Eq + Hash + Clone> Default for ProducerStateModel<P> {
    fn default() -> Self {
        ProducerStateModel {
            partitions: HashMap::new(),
        }
    }
}

impl<P: Eq + Hash + Clone> ProducerStateModel<P> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn log_end_offset(&self, partition: &P) -> i64 {
        self.partitions
            .get(partition)
            .map_or(0, |p| p.log_end_offset)
    }

    /// Forgets a producer, as the broker does after producer.id.expiration.ms
    /// (measured against the batches' maxTimestamp); its next batch is then
    /// accepted with any sequence.
    pub fn expire_producer(&mut self, partition: &P, producer_id: i64) {
        if let Some(p) = self.partitions.get_mut(partition) {
            p.producers.remove(&producer_id);
        }
    }

    /// Appends one batch (a partition's records of a Produce request) as the
    /// broker would, or says why the broker refuses it.
    pub fn append(
        &mut self,
        partition: P,
        records: &[u8],
    ) -> Result<AppendOutcome, ProduceRejection> {
        let h = BatchHeader::parse(records)?;
        let count = i64::from(h.last_offset_delta.max(0)) + 1;
        let state = self.partitions.entry(partition).or_default();
        let base_offset = state.log_end_offset;
        let last_offset = base_offset + count - 1;
        if h.producer_id < 0 {
            state.log_end_offset += count;
            return Ok(AppendOutcome::Appended {
                base_offset,
                last_offset,
            });
        }
        let first_seq = h.base_sequence;
        let last_seq = h.last_sequence();
        if let Some(entry) = state.producers.get(&h.producer_id) {
            if entry.epoch == h.producer_epoch {
                if let Some(dup) = entry
                    .batches
                    .iter()
                    .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
                {
                    return Ok(AppendOutcome::Duplicate {
                        base_offset: dup.first_offset,
                        last_offset: dup.last_offset,
                    });
                }
            }
            if h.producer_epoch < entry.epoch {
                return Err(ProduceRejection::InvalidProducerEpoch {
                    producer_id: h.producer_id,
                    producer_epoch: h.producer_epoch,
                    current_epoch: entry.epoch,
                });
            }
            let expected = if h.producer_epoch != entry.epoch {
                0
            } else {
                entry
                    .batches
                    .back()
                    .map_or(0, |b| increment_sequence(b.last_seq, 1))
            };
            if first_seq != expected {
                return Err(ProduceRejection::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    producer_epoch: h.producer_epoch,
                    sequence: first_seq,
                    expected,
                });
            }
        }
        let entry = state
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
            });
        if entry.epoch != h.producer_epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMetadata {
            first_seq,
            last_seq,
            first_offset: base_offset,
            last_offset,
        });
        if entry.batches.len() > CACHED_BATCHES {
            entry.batches.pop_front();
        }
        state.log_end_offset += count;
        Ok(AppendOutcome::Appended {
            base_offset,
            last_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{encode_batch, encode_sparse_batch, EncodeOptions, RecordToWrite, CRC_POS};

    fn records(n: usize) -> Vec<RecordToWrite> {
        (0..n)
            .map(|i| RecordToWrite {
                timestamp: i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from_static(b"v")),
                headers: Vec::new(),
            })
            .collect()
    }

    fn batch(opts: &EncodeOptions) -> Vec<u8> {
        encode_batch(&records(3), opts).unwrap().to_vec()
    }

    fn idempotent(seq: i32) -> EncodeOptions {
        EncodeOptions {
            producer_id: 1,
            producer_epoch: 0,
            base_sequence: seq,
            ..EncodeOptions::default()
        }
    }

    fn check(b: &[u8]) -> Result<(), RuleViolation> {
        check_partition_records(b, &ProduceRules::default())
    }

    #[test]
    fn a_client_batch_passes() {
        check(&batch(&EncodeOptions::default())).unwrap();
        check(&batch(&idempotent(0))).unwrap();
        for codec in Codec::ALL {
            check(&batch(&EncodeOptions::new(codec))).unwrap();
        }
    }

    #[test]
    fn each_broken_rule_is_named() {
        let ok = batch(&EncodeOptions::default());
        let cases: Vec<(Vec<u8>, ProduceRules, &str)> = vec![
            (
                ok[..40].to_vec(),
                ProduceRules::default(),
                "61-byte batch header",
            ),
            (
                [ok.clone(), ok.clone()].concat(),
                ProduceRules::default(),
                "exactly one record batch",
            ),
            (
                ok[..ok.len() - 1].to_vec(),
                ProduceRules::default(),
                "batchLength must match",
            ),
            (
                batch(&EncodeOptions {
                    base_offset: 5,
                    ..EncodeOptions::default()
                }),
                ProduceRules::default(),
                "baseOffset 0",
            ),
            (
                batch(&EncodeOptions {
                    control: true,
                    ..EncodeOptions::default()
                }),
                ProduceRules::default(),
                "control batches",
            ),
            (
                batch(&EncodeOptions {
                    transactional: true,
                    ..idempotent(0)
                }),
                ProduceRules::default(),
                "transactional batch in a request without a transactional id",
            ),
            (
                // A transactional batch needs a producer all the same.
                batch(&EncodeOptions {
                    transactional: true,
                    ..idempotent(-1)
                }),
                ProduceRules {
                    transactional: true,
                    ..ProduceRules::default()
                },
                "baseSequence >= 0",
            ),
            (
                batch(&idempotent(-1)),
                ProduceRules::default(),
                "baseSequence >= 0",
            ),
            (
                batch(&EncodeOptions {
                    producer_epoch: -1,
                    ..idempotent(0)
                }),
                ProduceRules::default(),
                "producerEpoch >= 0",
            ),
            (
                ok.clone(),
                ProduceRules {
                    max_message_bytes: 50,
                    ..ProduceRules::default()
                },
                "max.message.bytes",
            ),
            (
                batch(&EncodeOptions::new(Codec::Zstd)),
                ProduceRules {
                    produce_version: 6,
                    ..ProduceRules::default()
                },
                "Produce v7+",
            ),
            (
                batch(&EncodeOptions::new(Codec::Lz4)),
                ProduceRules {
                    topic_codec: Some(Codec::Gzip),
                    ..ProduceRules::default()
                },
                "compression.type",
            ),
        ];
        for (bytes, rules, needle) in cases {
            let err = check_partition_records(&bytes, &rules).unwrap_err();
            assert!(
                err.to_string().contains(needle),
                "expected {needle:?}, got {err}"
            );
        }
    }

    #[test]
    fn a_transactional_request_may_carry_a_transactional_batch() {
        let b = batch(&EncodeOptions {
            transactional: true,
            ..idempotent(0)
        });
        let rules = ProduceRules {
            transactional: true,
            ..ProduceRules::default()
        };
        check_batch_header(&b, &rules).unwrap();
        assert_eq!(
            check_batch_header(&b, &ProduceRules::default()),
            Err(RuleViolation::Transactional)
        );
    }

    #[test]
    fn the_header_check_does_not_decompress() {
        let mut b = batch(&EncodeOptions::new(Codec::Lz4));
        let last = b.len() - 3;
        b[last] ^= 0xff;
        let crc = crate::batch::compute_crc(&b);
        b[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        check_batch_header(&b, &ProduceRules::default()).unwrap();
        assert!(matches!(check(&b), Err(RuleViolation::Undecodable(_))));
    }

    #[test]
    fn header_corruption_is_caught() {
        let ok = batch(&EncodeOptions::default());
        let mut bad_crc = ok.clone();
        bad_crc[CRC_POS] ^= 0xff;
        assert!(matches!(check(&bad_crc), Err(RuleViolation::Crc { .. })));
        let mut bad_magic = ok.clone();
        bad_magic[16] = 1;
        assert_eq!(check(&bad_magic), Err(RuleViolation::Magic { magic: 1 }));
    }

    #[test]
    fn offset_range_and_inner_offsets_must_be_dense() {
        let sparse = encode_sparse_batch(
            &[(0, records(1)[0].clone()), (2, records(1)[0].clone())],
            2,
            &EncodeOptions::default(),
        )
        .unwrap();
        assert_eq!(
            check(&sparse),
            Err(RuleViolation::OffsetRange {
                last_offset_delta: 2,
                record_count: 2
            })
        );
        let empty = encode_sparse_batch(&[], 0, &EncodeOptions::default()).unwrap();
        assert!(matches!(
            check(&empty),
            Err(RuleViolation::OffsetRange {
                record_count: 0,
                ..
            })
        ));
        // Count and range agree but the deltas are 0, 2, 1: the broker would
        // rebuild the batch. Built by patching the second record's delta.
        let recs = records(3);
        let mut b = encode_batch(&recs, &EncodeOptions::default())
            .unwrap()
            .to_vec();
        let first_len = (b[HEADER_LEN] / 2) as usize + 1;
        let second = HEADER_LEN + first_len;
        // Record layout: length, attributes, timestamp delta (1 byte), offset delta.
        assert_eq!(b[second + 3], 2, "zigzag of delta 1");
        b[second + 3] = 4;
        let crc = crate::batch::compute_crc(&b);
        b[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            check(&b),
            Err(RuleViolation::InnerOffsets { index: 1, delta: 2 })
        );
    }

    #[test]
    fn compacted_topics_need_keys() {
        let mut recs = records(2);
        check_keys_for_compacted_topic(&encode_batch(&recs, &EncodeOptions::default()).unwrap())
            .unwrap();
        recs[1].key = None;
        assert_eq!(
            check_keys_for_compacted_topic(
                &encode_batch(&recs, &EncodeOptions::default()).unwrap()
            ),
            Err(RuleViolation::MissingKey { index: 1 })
        );
    }

    fn produce(pid: i64, epoch: i16, seq: i32, n: usize) -> Vec<u8> {
        let opts = EncodeOptions {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            ..EncodeOptions::default()
        };
        encode_batch(&records(n), &opts).unwrap().to_vec()
    }

    #[test]
    fn unseen_producer_takes_any_sequence_then_needs_the_next_one() {
        let mut m = ProducerStateModel::new();
        assert_eq!(
            m.append(0, &produce(7, 3, 1000, 2)),
            Ok(AppendOutcome::Appended {
                base_offset: 0,
                last_offset: 1
            })
        );
        assert_eq!(
            m.append(0, &produce(7, 3, 1002, 3)),
            Ok(AppendOutcome::Appended {
                base_offset: 2,
                last_offset: 4
            })
        );
        assert_eq!(
            m.append(0, &produce(7, 3, 1006, 1)),
            Err(ProduceRejection::OutOfOrderSequence {
                producer_id: 7,
                producer_epoch: 3,
                sequence: 1006,
                expected: 1005
            })
        );
        // Partitions are independent.
        assert!(m.append(1, &produce(7, 3, 0, 1)).is_ok());
        assert_eq!(m.log_end_offset(&0), 5);
        assert_eq!(m.log_end_offset(&1), 1);
    }

    #[test]
    fn retries_of_the_last_five_batches_are_duplicates() {
        let mut m = ProducerStateModel::new();
        let batches: Vec<Vec<u8>> = (0..7).map(|i| produce(1, 0, i * 2, 2)).collect();
        for b in &batches {
            assert!(matches!(
                m.append("p", b),
                Ok(AppendOutcome::Appended { .. })
            ));
        }
        assert_eq!(
            m.append("p", &batches[6]),
            Ok(AppendOutcome::Duplicate {
                base_offset: 12,
                last_offset: 13
            })
        );
        assert_eq!(
            m.append("p", &batches[2]),
            Ok(AppendOutcome::Duplicate {
                base_offset: 4,
                last_offset: 5
            })
        );
        // Older than the cached five: out of order.
        assert!(matches!(
            m.append("p", &batches[1]),
            Err(ProduceRejection::OutOfOrderSequence { .. })
        ));
        assert_eq!(m.log_end_offset(&"p"), 14);
    }

    #[test]
    fn a_stale_epoch_writer_is_fenced() {
        let mut m = ProducerStateModel::new();
        // The old owner writes with epoch 4.
        assert!(m.append(0, &produce(42, 4, 0, 3)).is_ok());
        // A new owner bumps the epoch; a new epoch must start at sequence 0.
        assert!(matches!(
            m.append(0, &produce(42, 5, 3, 1)),
            Err(ProduceRejection::OutOfOrderSequence { expected: 0, .. })
        ));
        assert!(m.append(0, &produce(42, 5, 0, 1)).is_ok());
        // The old owner's late write, even in sequence, is rejected.
        let err = m.append(0, &produce(42, 4, 3, 1)).unwrap_err();
        assert_eq!(
            err,
            ProduceRejection::InvalidProducerEpoch {
                producer_id: 42,
                producer_epoch: 4,
                current_epoch: 5
            }
        );
        assert!(err.to_string().contains("INVALID_PRODUCER_EPOCH"));
        assert_eq!(m.log_end_offset(&0), 4);
    }

    #[test]
    fn sequences_wrap_at_int_max() {
        let mut m = ProducerStateModel::new();
        assert!(m.append(0, &produce(1, 0, i32::MAX - 1, 2)).is_ok());
        assert!(m.append(0, &produce(1, 0, 0, 1)).is_ok());
        assert!(m.append(0, &produce(1, 0, 2, 1)).is_err());
    }

    #[test]
    fn expired_producers_and_non_idempotent_writes_are_unchecked() {
        let mut m = ProducerStateModel::new();
        assert!(m.append(0, &produce(1, 0, 0, 1)).is_ok());
        m.expire_producer(&0, 1);
        assert!(m.append(0, &produce(1, 0, 77, 1)).is_ok());
        let plain = encode_batch(&records(2), &EncodeOptions::default()).unwrap();
        assert_eq!(
            m.append(0, &plain),
            Ok(AppendOutcome::Appended {
                base_offset: 2,
                last_offset: 3
            })
        );
        assert_eq!(
            m.append(0, &plain),
            Ok(AppendOutcome::Appended {
                base_offset: 4,
                last_offset: 5
            })
        );
        assert!(matches!(
            m.append(0, &plain[..10]),
            Err(ProduceRejection::Malformed(_))
        ));
    }
}
