//! Plain data returned by and passed to [`crate::Cluster`].

use std::time::Duration;

use bytes::Bytes;
pub use uuid::Uuid;

use crate::error::KafkaError;

/// Per-partition outcome of [`crate::Cluster::list_offsets`], in request order.
pub type PartitionOffsets = Vec<(i32, Result<i64, KafkaError>)>;

/// Per-topic outcome of [`crate::Cluster::create_topics`], in request order.
pub type TopicResults = Vec<(String, Result<(), KafkaError>)>;

/// A broker as advertised in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerMetadata {
    /// `host:port`, the form used to connect.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition of a topic as seen in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// Node id of the leader, -1 if there is none.
    pub leader: i32,
    /// -1 if the broker does not report epochs (Metadata < v7).
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Non-zero (e.g. LEADER_NOT_AVAILABLE) while the partition is unusable.
    pub error_code: i16,
}

/// A topic as seen in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    /// Nil if the broker does not report topic ids (Metadata < v10).
    pub topic_id: Uuid,
    pub is_internal: bool,
    /// Sorted by partition number.
    pub partitions: Vec<PartitionMetadata>,
    /// Topic-level error other than "unknown topic" (unknown topics are
    /// left out), e.g. TOPIC_AUTHORIZATION_FAILED. 0 when healthy.
    pub error_code: i16,
}

impl TopicMetadata {
    pub fn partition(&self, partition: i32) -> Option<&PartitionMetadata> {
        self.partitions.iter().find(|p| p.partition == partition)
    }
}

/// A Metadata snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    /// -1 if unknown.
    pub controller_id: i32,
    pub brokers: Vec<BrokerMetadata>,
    /// The topics asked for that exist (all topics when none were named).
    pub topics: Vec<TopicMetadata>,
}

/// Which offset [`crate::Cluster::list_offsets`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (end of the log as consumers see it).
    Latest,
    /// The last stable offset: the high watermark minus undecided
    /// transactions (read_committed view).
    LatestCommitted,
    /// The first offset whose timestamp is at least this (ms since epoch);
    /// -1 if there is none.
    Timestamp(i64),
}

/// Parameters of one Fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Upper bound for the whole response (the broker may exceed it to
    /// return at least one batch).
    pub max_bytes: i32,
    /// Upper bound for this partition (same caveat).
    pub partition_max_bytes: i32,
    /// How long the broker may wait for `min_bytes` to accumulate.
    pub max_wait: Duration,
    pub min_bytes: i32,
    /// Stop at the last stable offset and report aborted transactions.
    pub read_committed: bool,
}

impl Default for FetchOptions {
    /// Mirroring defaults: read_committed, 1 MiB per partition.
    fn default() -> FetchOptions {
        FetchOptions {
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            read_committed: true,
        }
    }
}

/// The result of fetching one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    /// Record batches exactly as received (shares memory with the response
    /// frame). May end in a partial batch; may be empty.
    pub records: Bytes,
    /// Aborted transactions in the returned range: (producer id, first
    /// offset). Only filled for read_committed fetches.
    pub aborted: Vec<(i64, i64)>,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
}

/// One partition to read with [`crate::Cluster::fetch_many`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FetchRequestPartition {
    pub topic: String,
    pub partition: i32,
    /// The first offset wanted.
    pub offset: i64,
}

/// The outcome of one entry of [`crate::Cluster::fetch_many`].
#[derive(Debug, Clone)]
pub struct FetchResultPartition {
    pub topic: String,
    pub partition: i32,
    /// The offset it was fetched at.
    pub offset: i64,
    pub result: Result<FetchedPartition, KafkaError>,
}

/// Outcome of one acknowledged Produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceResult {
    /// Offset the broker gave to the first record of the batch.
    pub base_offset: i64,
    /// -1 if the broker does not report it.
    pub log_start_offset: i64,
    /// -1 unless the topic uses LogAppendTime.
    pub log_append_time_ms: i64,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    /// -1 for the broker default.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

/// Where a config value comes from (DescribeConfigs `config_source`).
pub mod config_source {
    pub const UNKNOWN: i8 = 0;
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
    pub const DYNAMIC_BROKER_LOGGER_CONFIG: i8 = 6;
    pub const CLIENT_METRICS_CONFIG: i8 = 7;
    pub const GROUP_CONFIG: i8 = 8;
}

/// One topic config as described by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    /// None for sensitive values and unset configs.
    pub value: Option<String>,
    /// True unless the value is set on the topic itself (source
    /// DYNAMIC_TOPIC_CONFIG): broker-wide settings count as defaults here,
    /// because those are the ones not to copy to another cluster.
    pub is_default: bool,
    pub read_only: bool,
    pub sensitive: bool,
    /// Raw `config_source`, see [`config_source`].
    pub source: i8,
}
