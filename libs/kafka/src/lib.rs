//! Wire-level async Kafka client used by Cutover to copy record batches
//! between clusters byte for byte.
//!
//! Built on `kafka-protocol` (message codecs) and tokio. One [`Cluster`]
//! holds one multiplexed connection per broker, opened lazily, with API
//! versions negotiated per connection (ApiVersions v3, v0 fallback). Leaders
//! come from a metadata cache that is refreshed when a request shows it is
//! wrong (leader moved, epoch changed, connection lost).
//!
//! Record batches are never decoded here: Fetch hands back the records blob
//! as received and Produce sends the caller's batch as is, from the
//! caller's own buffer when it is large ([`pieces`]).
//!
//! # Retries
//!
//! Idempotent requests (Metadata, Fetch, ListOffsets, DeleteRecords, admin
//! requests, InitProducerId) are retried a few times, with backoff and after
//! a metadata refresh, when they fail with an error that a refresh may cure.
//! Retry and reconnect delays come from `cutover_retry` (exponential, capped,
//! with jitter; `ClusterConfig` sets their initial and maximum values).
//! Produce is retried only before it is queued; once on the wire, its fate is
//! reported to the caller, who owns sequence numbers and ordering. The
//! batches queued for one broker go out combined, one per partition per
//! request, at most two requests in flight (`produce.rs`): a broker answers
//! a connection's requests one after the other, so a request per batch
//! would queue each partition behind every other's acks=all round trip.
//!
//! # Untrusted input
//!
//! Response frames are checked for size and correlation id before they are
//! decoded, decoding never panics ([`decode_response`] is the pure entry
//! point for fuzzing), and a malformed frame drops its connection.
//! `kafka-protocol` 0.18.0 pre-allocated arrays from the element count on
//! the wire before reading any element, so a peer echoing a correlation id
//! could make the allocator abort the process; the workspace builds it with
//! those allocations bounded by the bytes received (`vendor/README.md`).
//!
//! # Security
//!
//! [`Security`] (in [`ClusterConfig`]) is read from Kafka's property
//! names: TLS on rustls (a CA file or the system's, an optional client
//! certificate, host names checked unless turned off) and SASL PLAIN,
//! SCRAM-SHA-256/512 and OAUTHBEARER after ApiVersions. Secrets are named
//! by file or environment variable and read at each connection; a broker's
//! SASL session lifetime (KIP-368) makes the connection give way to a new
//! one before it ends.
//!
//! # Forwarding
//!
//! [`Cluster::forward`] sends a typed request at a chosen version to a
//! chosen broker and returns the broker's answer as is (the router's
//! upstream side); it shares this client's connections, so requests to one
//! broker are pipelined on one connection, in order.

#![forbid(unsafe_code)]

mod admin;
mod cluster;
pub mod codec;
mod config;
mod conn;
mod data;
mod error;
mod forward;
mod groups;
pub mod pieces;
mod produce;
mod producers;
mod sasl;
pub mod scram;
pub mod security;
mod session;
mod tls;
mod transactions;
mod types;

pub use cluster::Cluster;
pub use codec::{decode_response, Response};
pub use config::ClusterConfig;
pub use data::ProduceHandle;
pub use error::{codes, error_name, KafkaError};
pub use forward::{Destination, Lane, Pending};
pub use groups::{
    CommitResults, CommittedOffset, GroupDescription, GroupMember, GroupOffsets, ListedGroup,
};
pub use kafka_protocol;
pub use kafka_protocol::messages::ApiKey;
pub use producers::ActiveProducer;
pub use security::{Security, SecurityConfigError, SecurityError, SecurityProtocol};
pub use session::FetchSession;
pub use transactions::{offsets_partition_of, OpenTransaction, OFFSETS_TOPIC};
pub use types::{
    config_source, BrokerMetadata, ClusterMetadata, ConfigEntry, FetchOptions,
    FetchRequestPartition, FetchResultPartition, FetchedPartition, NewTopic, OffsetSpec,
    PartitionMetadata, PartitionOffsets, ProduceResult, TopicMetadata, TopicResults, Uuid,
};
