//! etcd coordination for Cutover services: JSON documents with optimistic
//! concurrency, prefix watches that survive compaction, sessions (leases
//! that fence themselves), membership, ownership of resources with fair
//! sharing, writer epochs for fencing the target broker, leader election.
//!
//! Key layout under the prefix (default `/cutover/v1`):
//! - `members/<kind>/<id>`: JSON member info, under the member's lease
//! - `owners/<resource>`: owner id (plain UTF-8), under the owner's lease
//! - `writers/<resource>`: JSON [`WriterIdentity`], no lease
//! - `leader/<name>`: leader's candidate id (plain UTF-8), under its lease

mod client;
mod election;
mod error;
mod members;
mod ownership;
mod session;
mod share;
mod watch;
mod writer;

#[cfg(feature = "testing")]
pub mod testing;

pub use client::{Coord, CoordConfig, Precondition, Versioned, WriteOp, DEFAULT_PREFIX};
pub use election::{current_leader, leader_key, Election};
pub use error::{CoordError, UnreachableCause};
pub use members::{deregister_member, list_members, member_key, members_prefix, register_member};
pub use ownership::{
    owner_key, owner_of, owners, release, try_claim, try_claim_many, OWNERS_PREFIX,
};
pub use session::{fence_after, fence_margin, Renewal, Session, RENEWALS_PER_TTL};
pub use share::{plan_share, SharePlan};
pub use watch::{KeyValue, Snapshot, WatchEvent, WATCH_CHANNEL_CAPACITY};
pub use writer::{
    bump_writer_epoch, bump_writer_epoch_with, bump_writer_epochs, writer_identity, writer_key,
    WriterIdentity, BUMPS_PER_TXN,
};

/// Re-exported so callers can use the raw client without a direct dependency.
pub use etcd_client;
pub use tokio_util::sync::CancellationToken;
