use crate::batch::Codec;

/// Errors from parsing, decoding or encoding record batches.
///
/// Parse errors carry the batch's base offset (as written in the batch) and its
/// byte position in the buffer it came from, so a bad fetch can be located on
/// the source broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error("record batch at offset {base_offset} (byte {position}): magic {magic} is not supported, only v2 batches (magic 2) are")]
    UnsupportedMagic {
        base_offset: i64,
        position: usize,
        magic: i8,
    },
    #[error("record batch at offset {base_offset} (byte {position}): batchLength {batch_length} is below the v2 minimum of 49")]
    InvalidBatchLength {
        base_offset: i64,
        position: usize,
        batch_length: i32,
    },
    #[error("record batch at offset {base_offset} (byte {position}): CRC mismatch, stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        base_offset: i64,
        position: usize,
        stored: u32,
        computed: u32,
    },
    #[error("buffer of {len} bytes is too short for a record batch header (61 bytes)")]
    HeaderTruncated { len: usize },
    #[error("record batch at offset {base_offset}: unknown compression codec id {id}")]
    UnknownCodec { base_offset: i64, id: i16 },
    #[error("unknown compression type {0:?} (expected producer, uncompressed, none, gzip, snappy, lz4 or zstd)")]
    UnknownCompressionType(String),
    #[error("record batch at offset {base_offset}: {codec} decompression failed: {reason}")]
    Decompress {
        base_offset: i64,
        codec: Codec,
        reason: String,
    },
    #[error(
        "record batch at offset {base_offset}: decompressed records exceed the {limit} byte limit"
    )]
    DecompressedTooLarge { base_offset: i64, limit: usize },
    #[error("record batch at offset {base_offset}: corrupt record {index}: {reason}")]
    CorruptRecord {
        base_offset: i64,
        index: usize,
        reason: String,
    },
    #[error("record batch at offset {base_offset}: {reason}")]
    CorruptBatch { base_offset: i64, reason: String },
    #[error("{codec} compression failed: {reason}")]
    Compress { codec: Codec, reason: String },
    #[error("cannot encode a record batch: {0}")]
    Encode(String),
    #[error("a single filler record does not fit in {max_batch_bytes} bytes")]
    FillerTooLarge { max_batch_bytes: usize },
}
