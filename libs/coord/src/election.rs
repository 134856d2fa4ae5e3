use std::sync::{Arc, Mutex, PoisonError};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::client::{first_range_kv, Coord};
use crate::error::CoordError;
use crate::session::{Session, SessionShared};
use crate::watch::WatchEvent;

/// `leader/<name>` (relative): holds the leader's candidate id as plain
/// UTF-8, attached to the leader's lease.
pub fn leader_key(name: &str) -> String {
    format!("leader/{name}")
}

/// Who leads election `name` now, if anyone.
pub async fn current_leader(coord: &Coord, name: &str) -> Result<Option<String>, CoordError> {
    let resp = coord.get_raw(&coord.key(&leader_key(name)), None).await?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
}

/// Leader election on a lease-guarded key: whoever creates `leader/<name>`
/// under its session's lease leads until the key goes (session lost,
/// revoked or expired, [`Election::resign`], or an operator deleting it).
///
/// Dropping an `Election` stops tracking leadership but does not resign:
/// the key stays until the session ends.
pub struct Election {
    coord: Coord,
    name: String,
    candidate: String,
    session: Arc<SessionShared>,
    leading: Mutex<Option<Leading>>,
}

struct Leading {
    token: CancellationToken,
    _watcher: JoinHandle<()>,
}

impl Election {
    pub fn new(coord: &Coord, session: &Session, name: &str, candidate: &str) -> Election {
        Election {
            coord: coord.clone(),
            name: name.to_owned(),
            candidate: candidate.to_owned(),
            session: session.shared(),
            leading: Mutex::new(None),
        }
    }

    /// Resolves once this candidate leads, with a token cancelled when the
    /// leadership ends. Errors: [`CoordError::Cancelled`] when `cancel`
    /// fires, [`CoordError::LeaseLost`] when the session is lost first.
    pub async fn campaign(
        &self,
        cancel: &CancellationToken,
    ) -> Result<CancellationToken, CoordError> {
        if let Some(token) = self.leadership() {
            return Ok(token);
        }
        let rel = leader_key(&self.name);
        let key = self.coord.key(&rel);
        let lease_id = self.session.lease_id;
        loop {
            if cancel.is_cancelled() {
                return Err(CoordError::Cancelled);
            }
            if !self.session.is_alive() {
                return Err(CoordError::LeaseLost);
            }
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    self.candidate.as_str(),
                    Some(PutOptions::new().with_lease(lease_id)),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = self.coord.txn_raw("campaign", txn).await?;
            let won = resp.succeeded()
                || first_range_kv(&resp).is_some_and(|kv| {
                    kv.lease() == lease_id && kv.value() == self.candidate.as_bytes()
                });
            if won {
                if let Some(token) = self.take_office(&rel).await? {
                    info!(election = %self.name, candidate = %self.candidate, lease_id, "became leader");
                    return Ok(token);
                }
                continue;
            }
            self.await_vacancy(&rel, cancel).await?;
        }
    }

    /// Starts tracking the won key; `None` if it vanished already.
    async fn take_office(&self, rel: &str) -> Result<Option<CancellationToken>, CoordError> {
        let token = self.session.lost.child_token();
        let (snapshot, mut events) = self.coord.watch_prefix(rel, token.clone()).await?;
        let held = snapshot
            .kvs
            .iter()
            .any(|kv| kv.rel == rel && kv.value == self.candidate.as_bytes());
        if !held {
            token.cancel();
            return Ok(None);
        }
        let watch_token = token.clone();
        let rel_owned = rel.to_owned();
        let candidate = self.candidate.clone();
        let name = self.name.clone();
        let watcher = tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = watch_token.cancelled() => return,
                    ev = events.recv() => ev,
                };
                let ended = match ev {
                    None => true,
                    Some(WatchEvent::Delete { rel }) => rel == rel_owned,
                    Some(WatchEvent::Put { rel, value, .. }) => {
                        rel == rel_owned && value != candidate.as_bytes()
                    }
                };
                if ended {
                    warn!(election = %name, %candidate, "leadership key changed or vanished; stepping down");
                    watch_token.cancel();
                    return;
                }
            }
        });
        let mut leading = self.leading.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = leading.take() {
            old.token.cancel();
        }
        *leading = Some(Leading {
            token: token.clone(),
            _watcher: watcher,
        });
        Ok(Some(token))
    }

    async fn await_vacancy(&self, rel: &str, cancel: &CancellationToken) -> Result<(), CoordError> {
        let watch_token = cancel.child_token();
        let _stop_watch = watch_token.clone().drop_guard();
        let (snapshot, mut events) = self.coord.watch_prefix(rel, watch_token).await?;
        if !snapshot.kvs.iter().any(|kv| kv.rel == rel) {
            return Ok(());
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Err(CoordError::Cancelled),
                _ = self.session.lost.cancelled() => return Err(CoordError::LeaseLost),
                ev = events.recv() => match ev {
                    Some(WatchEvent::Delete { rel: r }) if r == rel => return Ok(()),
                    Some(_) => {}
                    None => return Err(CoordError::Cancelled),
                },
            }
        }
    }

    fn leadership(&self) -> Option<CancellationToken> {
        let leading = self.leading.lock().unwrap_or_else(PoisonError::into_inner);
        leading
            .as_ref()
            .filter(|l| !l.token.is_cancelled())
            .map(|l| l.token.clone())
    }

    /// Leads now: won, not stepped down, and the session provably alive.
    pub fn is_leader(&self) -> bool {
        self.leadership().is_some() && self.session.is_alive()
    }

    /// The current leader's candidate id (this one or another).
    pub async fn leader(&self) -> Result<Option<String>, CoordError> {
        current_leader(&self.coord, &self.name).await
    }

    /// Steps down and deletes the key if it is still ours, so another
    /// candidate takes over at once. `true` if the key was deleted.
    pub async fn resign(&self) -> Result<bool, CoordError> {
        if let Some(leading) = self
            .leading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            leading.token.cancel();
        }
        let key = self.coord.key(&leader_key(&self.name));
        let txn = Txn::new()
            .when([
                Compare::value(key.clone(), CompareOp::Equal, self.candidate.as_str()),
                Compare::lease(key.clone(), CompareOp::Equal, self.session.lease_id),
            ])
            .and_then([TxnOp::delete(key, None)]);
        let resigned = self.coord.txn_raw("resign", txn).await?.succeeded();
        if resigned {
            info!(election = %self.name, candidate = %self.candidate, "resigned leadership");
        }
        Ok(resigned)
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        if let Some(leading) = self
            .leading
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            leading.token.cancel();
        }
    }
}
