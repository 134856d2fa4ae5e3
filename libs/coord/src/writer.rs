use std::future::Future;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::client::{decode, encode, first_range_kv, Coord};
use crate::error::CoordError;
use crate::ownership::owner_key;
use crate::session::Session;

/// The Kafka producer identity a partition's single writer uses on the
/// target. A higher epoch for the same producer id makes the broker reject
/// late writes from the previous owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// `writers/<writer>` (relative). Not attached to any lease: the
/// identity must outlive every owner.
pub fn writer_key(writer: &str) -> String {
    format!("writers/{writer}")
}

/// The stored identity, if any.
pub async fn writer_identity(
    coord: &Coord,
    resource: &str,
) -> Result<Option<WriterIdentity>, CoordError> {
    Ok(coord
        .get::<WriterIdentity>(&writer_key(resource))
        .await?
        .map(|v| v.value))
}

const MAX_ATTEMPTS: u32 = 8;

/// Takes the next writer identity `writers/<writer>` of `resource`, in one
/// etcd txn that succeeds only while `owners/<resource>` holds `owner`
/// under this session's lease, so a stale owner can never move the epoch.
/// (A resource written to more than one cluster, like a mirror partition
/// with its reverse mirror, has one writer per cluster; each is usually
/// named after the resource.)
///
/// - Identity stored and epoch below `i16::MAX`: same producer id, epoch + 1.
///   `new_producer_id` is ignored: keeping the producer id is what lets
///   the broker fence the previous owner.
/// - Nothing stored: `new_producer_id` at epoch 0, or
///   [`CoordError::NoWriterIdentity`] when it is `None`.
/// - Epoch exhausted: `new_producer_id` (if it differs from the stored
///   one) at epoch 0, else [`CoordError::EpochExhausted`].
///
/// So the usual call passes `None` and allocates a producer id from Kafka
/// only on those two errors (or use [`bump_writer_epoch_with`]).
///
/// Errors: [`CoordError::NotOwner`] (nothing written) when the ownership
/// is not (or no longer) this owner's; [`CoordError::LeaseLost`] when the
/// session is not alive.
pub async fn bump_writer_epoch(
    coord: &Coord,
    session: &Session,
    resource: &str,
    writer: &str,
    owner: &str,
    new_producer_id: Option<i64>,
) -> Result<WriterIdentity, CoordError> {
    let owner_full = coord.key(&owner_key(resource));
    let writer_full = coord.key(&writer_key(writer));
    for _ in 0..MAX_ATTEMPTS {
        session.ensure_alive()?;
        let current = coord.get_raw(&writer_full, None).await?;
        let (next, guard) =
            next_identity(writer, &writer_full, current.kvs().first(), new_producer_id)?;
        let txn = Txn::new()
            .when([
                Compare::value(owner_full.clone(), CompareOp::Equal, owner),
                Compare::lease(owner_full.clone(), CompareOp::Equal, session.lease_id()),
                guard,
            ])
            .and_then([TxnOp::put(
                writer_full.clone(),
                encode(&writer_full, &next)?,
                None,
            )])
            .or_else([TxnOp::get(owner_full.clone(), None)]);
        let resp = coord.txn_raw("bump writer epoch", txn).await?;
        if resp.succeeded() {
            info!(
                resource,
                writer,
                owner,
                producer_id = next.producer_id,
                producer_epoch = next.producer_epoch,
                "writer epoch bumped"
            );
            return Ok(next);
        }
        let still_owner = first_range_kv(&resp)
            .is_some_and(|kv| kv.value() == owner.as_bytes() && kv.lease() == session.lease_id());
        if !still_owner {
            return Err(CoordError::NotOwner {
                resource: resource.to_owned(),
            });
        }
        // Only the writer key moved under us (another bump by this same
        // owner); read it again.
    }
    Err(CoordError::Contended {
        key: writer_full,
        attempts: MAX_ATTEMPTS,
    })
}

/// The identity after `stored` (the writer key's current value, if any)
/// and the compare that makes the write conditional on it not having moved.
fn next_identity(
    writer: &str,
    writer_full: &str,
    stored: Option<&etcd_client::KeyValue>,
    new_producer_id: Option<i64>,
) -> Result<(WriterIdentity, Compare), CoordError> {
    let Some(kv) = stored else {
        return match new_producer_id {
            Some(pid) => Ok((
                WriterIdentity {
                    producer_id: pid,
                    producer_epoch: 0,
                },
                Compare::create_revision(writer_full, CompareOp::Equal, 0),
            )),
            None => Err(CoordError::NoWriterIdentity {
                resource: writer.to_owned(),
            }),
        };
    };
    let stored: WriterIdentity = decode(writer_full, kv.value())?;
    let next = match stored.producer_epoch.checked_add(1) {
        Some(epoch) => WriterIdentity {
            producer_id: stored.producer_id,
            producer_epoch: epoch,
        },
        None => match new_producer_id {
            Some(pid) if pid != stored.producer_id => WriterIdentity {
                producer_id: pid,
                producer_epoch: 0,
            },
            _ => {
                return Err(CoordError::EpochExhausted {
                    resource: writer.to_owned(),
                })
            }
        },
    };
    Ok((
        next,
        Compare::mod_revision(writer_full, CompareOp::Equal, kv.mod_revision()),
    ))
}

/// Writer epochs bumped per etcd transaction by [`bump_writer_epochs`]:
/// three compares each, below etcd's default limit of 128 operations.
pub const BUMPS_PER_TXN: usize = 32;

/// [`bump_writer_epoch`] for many `(resource, writer, new_producer_id)`
/// owned by `owner`, in two etcd round trips per [`BUMPS_PER_TXN`] instead of two
/// per resource: taking over thousands of partitions after a fetcher died
/// otherwise spends seconds in etcd.
///
/// One result per resource, in order, each what [`bump_writer_epoch`]
/// would have returned (`NoWriterIdentity` / `EpochExhausted` for those
/// that need a producer id allocated and passed in). When a chunk's
/// transaction fails (a resource changed owner, or its writer key moved),
/// that chunk is done one resource at a time. The outer error is one that
/// ends the whole batch (etcd unreachable, lease lost); epochs bumped
/// before it are harmless, as every attempt takes a new one anyway.
pub async fn bump_writer_epochs(
    coord: &Coord,
    session: &Session,
    bumps: &[(String, String, Option<i64>)],
    owner: &str,
) -> Result<Vec<Result<WriterIdentity, CoordError>>, CoordError> {
    let mut results = Vec::with_capacity(bumps.len());
    for chunk in bumps.chunks(BUMPS_PER_TXN) {
        session.ensure_alive()?;
        let writer_keys: Vec<String> = chunk
            .iter()
            .map(|(_, w, _)| coord.key(&writer_key(w)))
            .collect();
        let read = coord
            .txn_raw(
                "read writer identities",
                Txn::new().and_then(
                    writer_keys
                        .iter()
                        .map(|k| TxnOp::get(k.as_str(), None))
                        .collect::<Vec<_>>(),
                ),
            )
            .await?;
        let stored = read.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        let mut compares = Vec::with_capacity(chunk.len() * 3);
        let mut puts = Vec::with_capacity(chunk.len());
        let mut planned = Vec::with_capacity(chunk.len());
        for (((resource, writer, new_producer_id), writer_full), kv) in
            chunk.iter().zip(&writer_keys).zip(stored)
        {
            let next = next_identity(writer, writer_full, kv.as_ref(), *new_producer_id);
            if let Ok((identity, guard)) = &next {
                let owner_full = coord.key(&owner_key(resource));
                compares.push(Compare::value(owner_full.as_str(), CompareOp::Equal, owner));
                compares.push(Compare::lease(
                    owner_full,
                    CompareOp::Equal,
                    session.lease_id(),
                ));
                compares.push(guard.clone());
                puts.push(TxnOp::put(
                    writer_full.as_str(),
                    encode(writer_full, identity)?,
                    None,
                ));
            }
            planned.push(next.map(|(identity, _)| identity));
        }
        let written = puts.is_empty()
            || coord
                .txn_raw(
                    "bump writer epochs",
                    Txn::new().when(compares).and_then(puts),
                )
                .await?
                .succeeded();
        if written {
            let bumped = planned.iter().filter(|p| p.is_ok()).count();
            info!(
                resources = bumped,
                first = chunk
                    .first()
                    .map(|(_, w, _)| w.as_str())
                    .unwrap_or_default(),
                owner,
                "writer epochs bumped"
            );
            results.extend(planned);
            continue;
        }
        for (resource, writer, new_producer_id) in chunk {
            let single =
                bump_writer_epoch(coord, session, resource, writer, owner, *new_producer_id).await;
            results.push(match single {
                Err(e @ (CoordError::LeaseLost | CoordError::Unreachable { .. })) => return Err(e),
                other => other,
            });
        }
    }
    Ok(results)
}

/// [`bump_writer_epoch`] that calls `allocate` (e.g. Kafka
/// InitProducerId) only when no usable producer id is stored.
pub async fn bump_writer_epoch_with<F, Fut, E>(
    coord: &Coord,
    session: &Session,
    resource: &str,
    writer: &str,
    owner: &str,
    allocate: F,
) -> Result<WriterIdentity, CoordError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<i64, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    match bump_writer_epoch(coord, session, resource, writer, owner, None).await {
        Err(CoordError::NoWriterIdentity { .. }) | Err(CoordError::EpochExhausted { .. }) => {
            let pid = allocate()
                .await
                .map_err(|e| CoordError::ProducerIdAllocation {
                    resource: writer.to_owned(),
                    source: Box::new(e),
                })?;
            bump_writer_epoch(coord, session, resource, writer, owner, Some(pid)).await
        }
        other => other,
    }
}
