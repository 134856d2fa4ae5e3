use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::info;

use crate::client::{encode, Coord};
use crate::error::CoordError;
use crate::session::Session;

/// `members/<kind>/` (relative), the prefix to watch for one kind.
pub fn members_prefix(kind: &str) -> String {
    format!("members/{kind}/")
}

/// `members/<kind>/<id>` (relative).
pub fn member_key(kind: &str, id: &str) -> String {
    format!("members/{kind}/{id}")
}

/// Announces this process as a live member of `kind` until its session
/// ends. Registering again overwrites the info.
pub async fn register_member<T: Serialize>(
    coord: &Coord,
    session: &Session,
    kind: &str,
    id: &str,
    info: &T,
) -> Result<(), CoordError> {
    session.ensure_alive()?;
    let key = coord.key(&member_key(kind, id));
    let bytes = encode(&key, info)?;
    coord.put_with_lease(key, bytes, session.lease_id()).await?;
    info!(kind, id, lease_id = session.lease_id(), "registered member");
    Ok(())
}

/// Removes the registration without ending the session (e.g. a service
/// that stops taking work before it drains).
pub async fn deregister_member(coord: &Coord, kind: &str, id: &str) -> Result<bool, CoordError> {
    coord.delete(&member_key(kind, id)).await
}

/// Live members of `kind`, sorted by id.
pub async fn list_members<T: DeserializeOwned>(
    coord: &Coord,
    kind: &str,
) -> Result<Vec<(String, T)>, CoordError> {
    let prefix = members_prefix(kind);
    let rows = coord.list::<T>(&prefix).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(rel, v)| Some((rel.strip_prefix(&prefix)?.to_owned(), v.value)))
        .collect())
}
