use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::{is_lease_not_found, Coord};
use crate::error::CoordError;
use crate::watch::RECONNECT;

/// Keepalives sent per TTL. Several per fencing window, so one slow or
/// lost renewal does not fence a healthy owner.
pub const RENEWALS_PER_TTL: u32 = 6;

/// Part of the TTL given up for safety: the session counts as lost this
/// long before etcd could expire the lease, which covers clock-rate drift
/// between this host and etcd and the time an owner needs to stop writing.
pub fn fence_margin(ttl: Duration) -> Duration {
    ttl / 3
}

/// How long after a renewal was *sent* the lease is still provably alive
/// by our own reckoning. etcd extends the lease to (time it processed the
/// renewal + TTL), which is never earlier than send time + TTL.
pub fn fence_after(ttl: Duration) -> Duration {
    ttl.saturating_sub(fence_margin(ttl))
}

/// The last successful renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// When the renewal that etcd confirmed was sent.
    pub at: Instant,
    /// Until when the session counts as alive without another renewal.
    pub valid_until: Instant,
}

pub(crate) struct SessionShared {
    pub(crate) lease_id: i64,
    pub(crate) ttl: Duration,
    pub(crate) lost: CancellationToken,
    renewal: watch::Sender<Renewal>,
}

impl SessionShared {
    pub(crate) fn is_alive(&self) -> bool {
        !self.lost.is_cancelled() && Instant::now() < self.renewal.borrow().valid_until
    }

    fn renewed(&self, sent: Instant, ttl: Duration) {
        let valid_until = sent + fence_after(ttl.min(self.ttl));
        self.renewal.send_modify(|r| {
            // Responses arrive in send order, but stay monotonic regardless.
            if valid_until > r.valid_until {
                *r = Renewal {
                    at: sent,
                    valid_until,
                };
            }
        });
    }

    fn valid_until(&self) -> Instant {
        self.renewal.borrow().valid_until
    }
}

/// An etcd lease kept alive by a task, fencing itself.
///
/// `lost()` is cancelled as soon as the lease can no longer be proven alive:
/// etcd reports it gone, or no renewal was confirmed within
/// [`fence_after`]`(ttl)` of being sent, which is strictly before etcd may
/// expire it. Transient errors (a reset connection, an etcd leader change)
/// are retried until then, so they do not fence a healthy owner.
///
/// The token fires from a timer task; a writer that must never write late
/// also checks [`Session::is_alive`] (which reads the clock) right before
/// each write.
///
/// Cancelling the token passed to [`Coord::session`] or dropping the
/// session stops renewing and fires `lost()` at once; the lease itself
/// then expires after its TTL. [`Session::revoke`] ends it immediately,
/// deleting every key attached to it.
pub struct Session {
    coord: Coord,
    shared: Arc<SessionShared>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("lease_id", &self.shared.lease_id)
            .field("ttl", &self.shared.ttl)
            .field("alive", &self.is_alive())
            .finish_non_exhaustive()
    }
}

impl Coord {
    /// Grants a lease of `ttl` (whole seconds, rounded up; etcd may raise
    /// it to its minimum) and keeps it alive until `cancel` fires, the
    /// session is dropped or revoked, or the lease is lost.
    pub async fn session(
        &self,
        ttl: Duration,
        cancel: CancellationToken,
    ) -> Result<Session, CoordError> {
        let ttl_secs = i64::try_from(ttl.as_millis().div_ceil(1000))
            .map_err(|_| CoordError::Invalid(format!("lease TTL {ttl:?} is too long")))?
            .max(1);
        let mut leases = self.client.lease_client();
        let sent = Instant::now();
        let resp = self
            .call("lease grant", leases.grant(ttl_secs, None))
            .await?;
        if resp.ttl() <= 0 {
            return Err(CoordError::Invalid(format!(
                "etcd granted lease {} with TTL {}s: {}",
                resp.id(),
                resp.ttl(),
                resp.error()
            )));
        }
        let granted = Duration::from_secs(resp.ttl().unsigned_abs());
        let (renewal, _) = watch::channel(Renewal {
            at: sent,
            valid_until: sent + fence_after(granted),
        });
        let shared = Arc::new(SessionShared {
            lease_id: resp.id(),
            ttl: granted,
            lost: CancellationToken::new(),
            renewal,
        });
        let stop = cancel.child_token();
        let keeper = KeepAlive {
            coord: self.clone(),
            shared: shared.clone(),
            stop: stop.clone(),
        };
        let task = tokio::spawn(keeper.run());
        info!(
            lease_id = shared.lease_id,
            ttl_s = granted.as_secs(),
            "etcd session started"
        );
        Ok(Session {
            coord: self.clone(),
            shared,
            stop,
            task: Some(task),
        })
    }

    /// A session with the configured default TTL.
    pub async fn default_session(&self, cancel: CancellationToken) -> Result<Session, CoordError> {
        self.session(self.lease_ttl(), cancel).await
    }
}

impl Session {
    pub fn lease_id(&self) -> i64 {
        self.shared.lease_id
    }

    /// The TTL etcd granted.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// Cancelled when the session is lost or stopped. Every call returns a
    /// new child token, so cancelling one does not affect the session.
    pub fn lost(&self) -> CancellationToken {
        self.shared.lost.child_token()
    }

    /// Alive now: not lost, and the last confirmed renewal still covers
    /// this instant.
    pub fn is_alive(&self) -> bool {
        self.shared.is_alive()
    }

    /// When the last confirmed renewal was sent.
    pub fn last_renewal(&self) -> Instant {
        self.shared.renewal.borrow().at
    }

    /// Until when the session counts as alive without another renewal.
    pub fn valid_until(&self) -> Instant {
        self.shared.valid_until()
    }

    /// Notified on every confirmed renewal.
    pub fn renewals(&self) -> watch::Receiver<Renewal> {
        self.shared.renewal.subscribe()
    }

    pub(crate) fn shared(&self) -> Arc<SessionShared> {
        self.shared.clone()
    }

    pub(crate) fn ensure_alive(&self) -> Result<(), CoordError> {
        if self.is_alive() {
            Ok(())
        } else {
            Err(CoordError::LeaseLost)
        }
    }

    /// Graceful end: stops renewing, then revokes the lease so every key
    /// attached to it (memberships, ownerships, leadership) goes at once
    /// rather than after the TTL. A lease that is already gone counts as
    /// revoked.
    pub async fn revoke(mut self) -> Result<(), CoordError> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            // Waiting keeps a renewal from racing the revoke.
            let _ = task.await;
        }
        let mut leases = self.coord.client.lease_client();
        let lease_id = self.shared.lease_id;
        match self
            .coord
            .call("lease revoke", leases.revoke(lease_id))
            .await
        {
            Ok(_) => {
                info!(lease_id, "etcd session revoked");
                Ok(())
            }
            Err(CoordError::Etcd(e)) if is_lease_not_found(&e) => {
                debug!(lease_id, "etcd session already expired at revoke");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct KeepAlive {
    coord: Coord,
    shared: Arc<SessionShared>,
    stop: CancellationToken,
}

enum End {
    Stopped,
    Lost(String),
}

impl KeepAlive {
    async fn run(self) {
        let lease_id = self.shared.lease_id;
        match self.keep().await {
            End::Stopped => debug!(lease_id, "etcd session keepalive stopped"),
            End::Lost(reason) => {
                let since = Instant::now() - self.shared.renewal.borrow().at;
                warn!(
                    lease_id,
                    %reason,
                    since_last_renewal_ms = since.as_millis() as u64,
                    ttl_ms = self.shared.ttl.as_millis() as u64,
                    "etcd session lost; fencing"
                );
            }
        }
        self.shared.lost.cancel();
    }

    async fn keep(&self) -> End {
        let lease_id = self.shared.lease_id;
        let interval = self.shared.ttl / RENEWALS_PER_TTL;
        let mut backoff = RECONNECT.backoff();
        let mut conn: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
        // Send times of renewals not yet answered; etcd answers in order.
        let mut pending: VecDeque<Instant> = VecDeque::new();
        let mut next_renew = Instant::now() + interval;
        let no_renewal = || {
            End::Lost(format!(
                "no renewal confirmed within {:?} (TTL {:?} minus safety margin)",
                fence_after(self.shared.ttl),
                self.shared.ttl
            ))
        };
        loop {
            let deadline = self.shared.valid_until();
            let Some((keeper, stream)) = conn.as_mut() else {
                let mut leases = self.coord.client.lease_client();
                let sent = Instant::now();
                let opened = tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return End::Stopped,
                    _ = sleep_until(deadline) => return no_renewal(),
                    r = leases.keep_alive(lease_id) => r,
                };
                match opened {
                    Ok(c) => {
                        // Opening sends one keepalive and waits for its answer.
                        self.shared.renewed(sent, self.shared.ttl);
                        conn = Some(c);
                        pending.clear();
                        next_renew = sent + interval;
                        backoff.reset();
                    }
                    Err(e) if is_lease_not_found(&e) => {
                        return End::Lost("etcd reports the lease expired".into())
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        warn!(lease_id, error = %e, retry_in_ms = delay.as_millis() as u64, "etcd lease keepalive failed; retrying");
                        tokio::select! {
                            biased;
                            _ = self.stop.cancelled() => return End::Stopped,
                            _ = sleep_until(deadline) => return no_renewal(),
                            _ = sleep(delay) => {}
                        }
                    }
                }
                continue;
            };
            let mut broken = None;
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return End::Stopped,
                _ = sleep_until(deadline) => return no_renewal(),
                msg = stream.message() => match msg {
                    Ok(Some(resp)) => {
                        if resp.ttl() <= 0 {
                            return End::Lost("etcd reports the lease expired".into());
                        }
                        if let Some(sent) = pending.pop_front() {
                            let ttl = Duration::from_secs(resp.ttl().unsigned_abs());
                            self.shared.renewed(sent, ttl);
                        }
                    }
                    Ok(None) => broken = Some("etcd closed the keepalive stream".to_owned()),
                    Err(e) => broken = Some(e.to_string()),
                },
                _ = sleep_until(next_renew) => {
                    let sent = Instant::now();
                    match keeper.keep_alive().await {
                        Ok(()) => pending.push_back(sent),
                        Err(e) => broken = Some(e.to_string()),
                    }
                    next_renew = sent + interval;
                }
            }
            if let Some(reason) = broken {
                warn!(lease_id, %reason, "etcd lease keepalive stream broke; reopening");
                conn = None;
            }
        }
    }
}
