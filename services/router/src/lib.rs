//! The router: the Kafka endpoint migrated clients use as
//! `bootstrap.servers`. It presents the live routers as the cluster's
//! brokers and sends each request to the cluster that should answer it.
//!
//! Layout: [`frame`] parses requests and encodes responses (pure, fuzzed);
//! [`router`] answers each API, with [`partitioned`] for the APIs routed
//! per partition, [`coordinated`] for group and transaction APIs and [`assign`] deciding which router leads what;
//! [`server`] runs the listener and client connections; [`members`] is
//! router membership in etcd; [`topics`] the topics' primaries, watched in
//! etcd; [`epochs`] the leader epochs clients see; [`producers`] the
//! producer ids it gives idempotent clients; [`holds`] the holds a
//! promotion puts on Produce and JoinGroup, [`members_seen`] the group
//! members forwarded, both served by [`grpc`]; [`metrics`] the
//! Prometheus metrics; [`service`] wires it together.

pub mod assign;
pub mod config;
pub mod coordinated;
pub mod encoded;
pub mod epochs;
pub mod error;
pub mod frame;
pub mod grpc;
pub mod holds;
pub mod members;
pub mod members_seen;
pub mod metrics;
pub mod partitioned;
pub mod producers;
pub mod readahead;
pub mod router;
pub mod server;
pub mod service;
pub mod topics;
pub mod transactions;
pub mod turn;

pub use config::RouterConfig;
pub use error::RouterError;
pub use service::run;
