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
