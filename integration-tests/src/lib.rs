//! Test bed for Cutover's integration and end-to-end tests, and for
//! `just demo`.
//!
//! Real parts only: two librdkafka mock clusters (a real Kafka protocol
//! implementation, see [`clusters`] for its quirks), real librdkafka
//! producers and consumers, the real etcd server, and our services as real
//! processes. Everything started here stops on drop, also when a test
//! panics.
//!
//! ```no_run
//! use cutover_integration_tests::*;
//! # fn main() -> anyhow::Result<()> {
//! let bed = Bed::start("my_test")?;
//! bed.clusters.create_topic_both("orders", 8)?;
//! let written = produce(bed.source_bootstrap(), "orders", 0, 1000, &ProduceSpec::default())?;
//! let fetcher = ServiceProcess::spawn(
//!     "fetcher-1",
//!     "cutover-fetcher",
//!     &["--etcd".into(), bed.etcd_endpoint().into()],
//!     bed.log_dir(),
//! )?;
//! # let _ = (written, fetcher);
//! # Ok(()) }
//! ```

pub mod admin;
pub mod bed;
pub mod bench;
pub mod blackhole;
pub mod client_lines;
pub mod clients;
pub mod clusters;
pub mod cutover;
pub mod go_clients;
pub mod group;
pub mod java_clients;
pub mod js_clients;
pub mod kafka;
pub mod oracle;
pub mod process;
pub mod records;
pub mod router_api;
pub mod writer;

pub use admin::Admin;
pub use bed::{Bed, RealBed, RealClusters, TestBed};
pub use blackhole::Blackhole;
pub use clients::{
    partition_leader, poll_values, produce, produce_async, produced_values, read_partition,
    read_partition_async, read_partition_isolated, read_partition_with_timeout, watermarks,
    watermarks_async, Isolation, LoadGenerator, LoadReport, PartitionLoad, MAX_LOAD_RATE,
};
pub use clusters::{trim_spec, Clusters, Mock, Side};
pub use kafka::{ExtraListener, KafkaCluster, KafkaDist, KafkaOptions};
pub use process::{
    bin_path, free_port, http_get, log_tail, profile_dir, test_log_dir, wait_http_ok, HttpResponse,
    ServiceProcess,
};
pub use records::{
    assert_identical, check_contiguous, expected_record, first_difference, Codec, ConsumedRecord,
    ProduceMode, ProduceSpec, Produced, ProducedRecord, RecordContent, RecordHeader,
    DEFAULT_TIMESTAMP_BASE_MS,
};
pub use writer::Writer;

/// Re-exported so tests can name api keys and error codes for fault
/// injection without depending on rdkafka themselves.
pub use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}

    /// Tests and async code can hold and share the bed's handles.
    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<crate::Bed>();
        send_sync::<crate::Clusters>();
        send_sync::<crate::ServiceProcess>();
        send_sync::<crate::LoadGenerator>();
    }
}
