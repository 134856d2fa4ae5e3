use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use tracing::{debug, info};

use crate::client::{first_range_kv, Coord};
use crate::error::CoordError;
use crate::session::Session;

/// `owners/` (relative): every ownership key lives below it.
pub const OWNERS_PREFIX: &str = "owners/";

/// `owners/<resource>` (relative). The value is the owner id as plain
/// UTF-8 (not JSON), attached to the owner's lease.
pub fn owner_key(resource: &str) -> String {
    format!("{OWNERS_PREFIX}{resource}")
}

/// Claims `resource` for `owner` under the session's lease if nobody owns
/// it. `true` also when this owner already holds it under this session.
pub async fn try_claim(
    coord: &Coord,
    session: &Session,
    resource: &str,
    owner: &str,
) -> Result<bool, CoordError> {
    session.ensure_alive()?;
    let key = coord.key(&owner_key(resource));
    let lease_id = session.lease_id();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.clone(),
            owner,
            Some(PutOptions::new().with_lease(lease_id)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let resp = coord.txn_raw("claim", txn).await?;
    if resp.succeeded() {
        info!(resource, owner, lease_id, "claimed resource");
        return Ok(true);
    }
    let held = first_range_kv(&resp)
        .is_some_and(|kv| kv.lease() == lease_id && kv.value() == owner.as_bytes());
    if !held {
        debug!(resource, owner, "resource already owned by someone else");
    }
    Ok(held)
}

/// Resources per claim transaction (etcd refuses more than 128
/// operations per transaction by default; each claim is a compare and a
/// put).
const CLAIMS_PER_TXN: usize = 64;

/// Claims several resources as [`try_claim`] does, with one etcd
/// transaction per chunk of them instead of one each: a fetcher taking
/// over thousands of partitions claims them in a few round trips. A chunk
/// where some resource is already owned is claimed one by one instead, so
/// the outcome per resource is exactly `try_claim`'s. Returns the claimed
/// resources (held by `owner` under this session). On an error, chunks
/// claimed before it stay claimed: callers find them among their owned
/// resources next time.
pub async fn try_claim_many(
    coord: &Coord,
    session: &Session,
    resources: &[String],
    owner: &str,
) -> Result<Vec<String>, CoordError> {
    let mut claimed = Vec::new();
    for chunk in resources.chunks(CLAIMS_PER_TXN) {
        session.ensure_alive()?;
        let lease_id = session.lease_id();
        let keys: Vec<String> = chunk.iter().map(|r| coord.key(&owner_key(r))).collect();
        let txn = Txn::new()
            .when(
                keys.iter()
                    .map(|k| Compare::create_revision(k.clone(), CompareOp::Equal, 0))
                    .collect::<Vec<_>>(),
            )
            .and_then(
                keys.iter()
                    .map(|k| {
                        TxnOp::put(
                            k.clone(),
                            owner,
                            Some(PutOptions::new().with_lease(lease_id)),
                        )
                    })
                    .collect::<Vec<_>>(),
            );
        if coord.txn_raw("claim", txn).await?.succeeded() {
            info!(
                resources = chunk.len(),
                first = chunk.first().map(String::as_str).unwrap_or_default(),
                owner,
                lease_id,
                "claimed resources"
            );
            claimed.extend(chunk.iter().cloned());
            continue;
        }
        for r in chunk {
            if try_claim(coord, session, r, owner).await? {
                claimed.push(r.clone());
            }
        }
    }
    Ok(claimed)
}

/// Gives `resource` up if `owner` holds it; `false` if it does not.
pub async fn release(coord: &Coord, resource: &str, owner: &str) -> Result<bool, CoordError> {
    let key = coord.key(&owner_key(resource));
    let txn = Txn::new()
        .when([Compare::value(key.clone(), CompareOp::Equal, owner)])
        .and_then([TxnOp::delete(key, None)]);
    let released = coord.txn_raw("release", txn).await?.succeeded();
    if released {
        info!(resource, owner, "released resource");
    }
    Ok(released)
}

/// Current owner of one resource.
pub async fn owner_of(coord: &Coord, resource: &str) -> Result<Option<String>, CoordError> {
    let resp = coord
        .get_raw(&coord.key(&owner_key(resource)), None)
        .await?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
}

/// resource → owner for every owned resource whose name starts with
/// `resource_prefix` (`""` for all).
pub async fn owners(
    coord: &Coord,
    resource_prefix: &str,
) -> Result<HashMap<String, String>, CoordError> {
    let key = coord.key(&owner_key(resource_prefix));
    let resp = coord
        .get_raw(&key, Some(GetOptions::new().with_prefix()))
        .await?;
    let base = coord.key(OWNERS_PREFIX);
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            let full = std::str::from_utf8(kv.key()).ok()?;
            let resource = full.strip_prefix(base.as_str())?;
            Some((
                resource.to_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            ))
        })
        .collect())
}
