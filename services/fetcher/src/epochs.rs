//! Writer-epoch bumps of starting partitions, shared by a fetcher's
//! partitions: the bumps queued at the same moment go to etcd as one
//! transaction per [`cutover_coord::BUMPS_PER_TXN`] instead of two round
//! trips each.
//!
//! Every attempt of a partition takes a new epoch, so when a fetcher dies
//! its survivors bump thousands at once; one at a time that cost seconds
//! of the takeover (two etcd round trips and a disk sync per partition).

use std::sync::Arc;

use cutover_coord::{Coord, CoordError, Session, WriterIdentity};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::batching::next_batch;
use crate::replicator::ReplicateError;

struct Bump {
    session: Arc<Session>,
    resource: String,
    writer: String,
    new_producer_id: Option<i64>,
    reply: oneshot::Sender<Result<Option<WriterIdentity>, ReplicateError>>,
}

/// Each partition waits for at most one bump, so this bounds memory at the
/// partitions starting at once.
const QUEUE: usize = 1024;

/// Handle used by partition tasks; cheap to clone.
#[derive(Clone)]
pub struct EpochBumps {
    tx: mpsc::Sender<Bump>,
}

impl EpochBumps {
    /// Starts the bump loop of `owner`; it stops when `cancel` fires.
    pub fn start(
        coord: Coord,
        owner: String,
        cancel: CancellationToken,
    ) -> (EpochBumps, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let span = tracing::Span::current();
        let handle = tokio::spawn(run(coord, owner, rx, cancel).instrument(span));
        (EpochBumps { tx }, handle)
    }

    /// The next identity of `writer` of `resource` (owned by this fetcher
    /// under `session`), bumped together with the others queued meanwhile; see
    /// `cutover_coord::bump_writer_epoch` for `new_producer_id`. `None`
    /// when no usable producer id is stored and none was passed: the
    /// caller allocates one and asks again.
    pub async fn bump(
        &self,
        session: &Arc<Session>,
        resource: &str,
        writer: &str,
        new_producer_id: Option<i64>,
    ) -> Result<Option<WriterIdentity>, ReplicateError> {
        let (reply, rx) = oneshot::channel();
        let bump = Bump {
            session: session.clone(),
            resource: resource.to_owned(),
            writer: writer.to_owned(),
            new_producer_id,
            reply,
        };
        let stopping = || ReplicateError::Transient("the fetcher is stopping".into());
        self.tx.send(bump).await.map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())?
    }
}

async fn run(coord: Coord, owner: String, mut rx: mpsc::Receiver<Bump>, cancel: CancellationToken) {
    // One transaction's worth per round, rounds running side by side:
    // etcd commits concurrent transactions together, so a takeover costs
    // about one round trip per partitions-starting-at-once, not one per
    // chunk.
    let mut rounds: JoinSet<()> = JoinSet::new();
    while let Some(mut batch) =
        next_batch(&mut rx, &mut rounds, &cancel, cutover_coord::BUMPS_PER_TXN).await
    {
        // A lost lease means a new session; bumps of the old one fail
        // with LeaseLost by themselves.
        while !batch.is_empty() {
            let session = batch[0].session.clone();
            let (same, rest): (Vec<Bump>, Vec<Bump>) = batch
                .into_iter()
                .partition(|b| Arc::ptr_eq(&b.session, &session));
            batch = rest;
            rounds.spawn(
                bump_round(coord.clone(), owner.clone(), session, same)
                    .instrument(tracing::Span::current()),
            );
        }
    }
    // Dropping the rounds fails their bumps (the replies close).
    rounds.shutdown().await;
}

async fn bump_round(coord: Coord, owner: String, session: Arc<Session>, bumps: Vec<Bump>) {
    let wanted: Vec<(String, String, Option<i64>)> = bumps
        .iter()
        .map(|b| (b.resource.clone(), b.writer.clone(), b.new_producer_id))
        .collect();
    match cutover_coord::bump_writer_epochs(&coord, &session, &wanted, &owner).await {
        Ok(results) => {
            for (b, r) in bumps.into_iter().zip(results) {
                let r = match r {
                    Ok(identity) => Ok(Some(identity)),
                    Err(
                        CoordError::NoWriterIdentity { .. } | CoordError::EpochExhausted { .. },
                    ) => Ok(None),
                    Err(e) => Err(ReplicateError::from(e)),
                };
                // The partition task may have stopped meanwhile.
                let _ = b.reply.send(r);
            }
        }
        Err(e) => {
            let e = ReplicateError::from(e);
            for b in bumps {
                let _ = b.reply.send(Err(e.clone()));
            }
        }
    }
}
