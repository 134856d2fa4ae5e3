//! Kafka record batch v2 handling for Cutover: parse, rewrite, filler batches,
//! and the fetcher's source-to-target transformation (one target record per
//! source offset). Pure code: no I/O, no async.
//!
//! - [`batch`]: zero-copy batch view, record decoding, batch encoder.
//! - [`filler`]: filler batches for offsets that cannot be copied as data.
//! - [`transform`]: fetched source data in, produce-ready batches out.
//! - [`rules`]: the checks a real broker applies to a client's produce request.
//! - [`client_view`]: fetched records as a client of the router sees them.

pub mod batch;
pub mod client_view;
mod compression;
mod crc;
mod error;
pub mod filler;
pub mod rules;
pub mod transform;
mod varint;

pub use batch::{
    batches, control_record, encode_batch, encode_sparse_batch, next_fetch_position, with_producer,
    BatchHeader, BatchIter, Codec, ControlKind, EncodeOptions, RawBatch, Record, RecordToWrite,
};
pub use client_view::{client_view, ClientView};
pub use compression::MAX_DECOMPRESSED_BYTES;
pub use error::RecordsError;
pub use filler::{
    filler_batches, filler_reason, is_filler, FillerBatches, FillerReason, FILLER_BASE_TIMESTAMP,
};
pub use rules::{
    check_batch_header, check_keys_for_compacted_topic, check_partition_records, AppendOutcome,
    ProduceRejection, ProduceRules, ProducerStateModel, RuleViolation,
};
pub use transform::{
    AbortedTxn, FetchedPartition, OutBatch, OutKind, TransformConfig, TransformError, Transformer,
};
