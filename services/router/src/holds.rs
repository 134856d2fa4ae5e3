//! Holds: a promotion's barrier in one router. While a key is held (a
//! topic for Produce, a group id for JoinGroup), new requests naming it
//! wait; requests that went upstream before are counted until answered,
//! so the caller of a hold can wait until none is left in flight. A hold
//! ends when released or when its time runs out, whichever is first: a
//! caller that dies must not leave clients waiting past their request
//! timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Default)]
struct Key {
    /// Held until then (a passed instant is no hold).
    until: Option<Instant>,
    /// Requests waiting for the hold to end.
    waiting: u64,
    /// Requests that entered and are not finished.
    in_flight: u64,
}

impl Key {
    fn held_until(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|u| *u > now)
    }

    fn idle(&self, now: Instant) -> bool {
        self.waiting == 0 && self.in_flight == 0 && self.held_until(now).is_none()
    }
}

/// What a key's hold looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldView {
    pub key: String,
    pub waiting: u64,
    pub in_flight: u64,
    /// Zero when not held.
    pub remaining: Duration,
}

/// The in-flight work of one request ran past the drain deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{in_flight} request(s) for {key} still unanswered upstream after {waited:?}")]
pub struct NotDrained {
    pub key: String,
    pub in_flight: u64,
    pub waited: Duration,
}

/// The holds of one kind of request. Cheap to clone.
#[derive(Clone)]
pub struct Holds {
    keys: Arc<Mutex<HashMap<String, Key>>>,
    /// Bumped after every change a waiter may be waiting for.
    changed: Arc<watch::Sender<u64>>,
}

impl Default for Holds {
    fn default() -> Self {
        Holds {
            keys: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl Holds {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Key>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Holds `keys` for `hold` from now (a key already held gets the new
    /// end).
    pub fn hold(&self, keys: &[String], hold: Duration) {
        let until = Instant::now() + hold;
        {
            let mut map = self.lock();
            for k in keys {
                map.entry(k.clone()).or_default().until = Some(until);
            }
        }
        self.notify();
    }

    /// Ends the hold of `keys`; their waiting requests go on.
    pub fn release(&self, keys: &[String]) {
        {
            let now = Instant::now();
            let mut map = self.lock();
            for k in keys {
                if let Some(key) = map.get_mut(k) {
                    key.until = None;
                    if key.idle(now) {
                        map.remove(k);
                    }
                }
            }
        }
        self.notify();
    }

    /// Waits while any of `keys` is held, then counts the caller in flight
    /// for each of them until the returned guard drops. Dropping the
    /// future while it waits counts nothing.
    pub async fn enter(&self, keys: &[&str]) -> Entered {
        let mut rx = self.changed.subscribe();
        let mut waiting: Option<Waiting> = None;
        loop {
            let now = Instant::now();
            let wake = {
                let mut map = self.lock();
                rx.borrow_and_update();
                let held = keys
                    .iter()
                    .filter_map(|k| map.get(*k).and_then(|s| s.held_until(now)))
                    .max();
                match held {
                    None => {
                        for k in keys {
                            let key = map.entry((*k).to_owned()).or_default();
                            key.in_flight += 1;
                        }
                        drop(map);
                        // Counted in flight before it stops counting as
                        // waiting, so a drain never sees neither.
                        drop(waiting);
                        return Entered {
                            holds: self.clone(),
                            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
                        };
                    }
                    Some(until) => {
                        if waiting.is_none() {
                            for k in keys {
                                map.entry((*k).to_owned()).or_default().waiting += 1;
                            }
                            waiting = Some(Waiting {
                                holds: self.clone(),
                                keys: keys.iter().map(|k| (*k).to_owned()).collect(),
                            });
                        }
                        until
                    }
                }
            };
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Waits until nothing is in flight for any of `keys`.
    pub async fn drained(&self, keys: &[String], timeout: Duration) -> Result<(), NotDrained> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut rx = self.changed.subscribe();
        loop {
            let busy = {
                let map = self.lock();
                rx.borrow_and_update();
                keys.iter()
                    .filter_map(|k| map.get(k).map(|s| (k, s.in_flight)))
                    .find(|(_, n)| *n > 0)
                    .map(|(k, n)| (k.clone(), n))
            };
            let Some((key, in_flight)) = busy else {
                return Ok(());
            };
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(NotDrained { key, in_flight, waited: started.elapsed() });
                }
            }
        }
    }

    /// The state of `keys` (all known keys when `None`), by key.
    pub fn view(&self, keys: Option<&[String]>) -> Vec<HoldView> {
        let now = Instant::now();
        let map = self.lock();
        let one = |k: &String, s: Option<&Key>| {
            let (waiting, in_flight, until) = s
                .map(|s| (s.waiting, s.in_flight, s.held_until(now)))
                .unwrap_or_default();
            HoldView {
                key: k.clone(),
                waiting,
                in_flight,
                remaining: until.map(|u| u - now).unwrap_or_default(),
            }
        };
        let mut out: Vec<HoldView> = match keys {
            Some(keys) => keys.iter().map(|k| one(k, map.get(k))).collect(),
            None => map
                .iter()
                .filter(|(_, s)| s.held_until(now).is_some() || s.waiting > 0)
                .map(|(k, s)| one(k, Some(s)))
                .collect(),
        };
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    fn leave(&self, keys: &[String], what: fn(&mut Key) -> &mut u64) {
        {
            let now = Instant::now();
            let mut map = self.lock();
            for k in keys {
                if let Some(key) = map.get_mut(k) {
                    let n = what(key);
                    *n = n.saturating_sub(1);
                    if key.idle(now) {
                        map.remove(k);
                    }
                }
            }
        }
        self.notify();
    }
}

/// A request counted in flight for its keys.
pub struct Entered {
    holds: Holds,
    keys: Vec<String>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.holds.leave(&self.keys, |k| &mut k.in_flight);
    }
}

struct Waiting {
    holds: Holds,
    keys: Vec<String>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.holds.leave(&self.keys, |k| &mut k.waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_key_makes_requests_wait_until_released() {
        let holds = Holds::default();
        holds.hold(&keys(&["a"]), Duration::from_secs(10));
        let h = holds.clone();
        let waiter = tokio::spawn(async move {
            let _entered = h.enter(&["b", "a"]).await;
            Instant::now()
        });
        // Until the waiter is counted, nothing has happened yet.
        while holds.view(Some(&keys(&["a"])))[0].waiting == 0 {
            tokio::task::yield_now().await;
        }
        let released_at = Instant::now() + Duration::from_secs(3);
        tokio::time::sleep_until(released_at).await;
        assert!(!waiter.is_finished());
        holds.release(&keys(&["a"]));
        let entered_at = waiter.await.unwrap();
        assert_eq!(entered_at, released_at);
        // Its guard dropped: nothing left of either key.
        assert!(holds.lock().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_ends_by_itself_when_its_time_runs_out() {
        let holds = Holds::default();
        let start = Instant::now();
        holds.hold(&keys(&["a"]), Duration::from_secs(5));
        let _entered = holds.enter(&["a"]).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        assert_eq!(holds.view(Some(&keys(&["a"])))[0].in_flight, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_for_other_keys_are_not_held() {
        let holds = Holds::default();
        holds.hold(&keys(&["a"]), Duration::from_secs(5));
        let start = Instant::now();
        let _entered = holds.enter(&["b"]).await;
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn drained_waits_for_every_request_in_flight() {
        let holds = Holds::default();
        let first = holds.enter(&["a"]).await;
        let second = holds.enter(&["a", "b"]).await;
        holds.hold(&keys(&["a"]), Duration::from_secs(30));
        let h = holds.clone();
        let drain =
            tokio::spawn(async move { h.drained(&keys(&["a"]), Duration::from_secs(20)).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(first);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!drain.is_finished(), "one request is still in flight");
        drop(second);
        assert_eq!(drain.await.unwrap(), Ok(()));
        // Still held: the drain does not end the hold.
        assert!(holds.view(Some(&keys(&["a"])))[0].remaining > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_gives_up_at_its_deadline_and_names_the_key() {
        let holds = Holds::default();
        let _stuck = holds.enter(&["a"]).await;
        let err = holds
            .drained(&keys(&["a"]), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!((err.key.as_str(), err.in_flight), ("a", 1));
        assert_eq!(err.waited, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_that_goes_away_is_no_longer_counted() {
        let holds = Holds::default();
        holds.hold(&keys(&["a"]), Duration::from_secs(10));
        let h = holds.clone();
        let waiter = tokio::spawn(async move {
            let _e = h.enter(&["a"]).await;
        });
        while holds.view(Some(&keys(&["a"])))[0].waiting == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        let v = &holds.view(Some(&keys(&["a"])))[0];
        assert_eq!((v.waiting, v.in_flight), (0, 0));
        holds.release(&keys(&["a"]));
        assert!(holds.lock().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_view_of_all_keys_shows_holds_and_waiters_only() {
        let holds = Holds::default();
        let _busy = holds.enter(&["busy"]).await;
        holds.hold(&keys(&["held"]), Duration::from_secs(4));
        let all = holds.view(None);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].key, "held");
        assert_eq!(all[0].remaining, Duration::from_secs(4));
    }
}
