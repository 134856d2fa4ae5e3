//! The fetcher: copies mirror partitions from the source to the target with
//! identical offsets. Fetchers share the partitions through etcd leases.
//!
//! Layout: [`service`] runs one fetcher (session, membership, balancing,
//! progress, gRPC); [`replicator`] copies one partition; [`bandwidth`] holds
//! the per-link limit; [`clusters`] caches
//! Kafka connections per link, with their shared fetch loop ([`fetch_mux`])
//! and offset lookups ([`offsets`]); [`epochs`] batches the writer-epoch
//! bumps of starting partitions.

pub mod bandwidth;
pub mod batching;
pub mod classify;
pub mod clusters;
pub mod config;
pub mod epochs;
pub mod fetch_mux;
pub mod grpc;
pub mod metrics;
pub mod offsets;
pub mod progress;
pub mod replicator;
pub mod service;

pub use config::FetcherConfig;
pub use service::{run, FetcherError};
