use std::collections::HashMap;
use std::time::Duration;

use cutover_retry::{Backoff, Policy};
use etcd_client::{EventType, WatchOptions};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::client::{decode, Coord, Versioned};
use crate::error::CoordError;

/// Room for bursts (e.g. a resync after compaction) without letting a
/// stalled consumer make the watcher buffer without bound: when full, the
/// watcher stops reading from etcd until the consumer catches up.
pub const WATCH_CHANNEL_CAPACITY: usize = 256;

/// One key under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Key relative to the deployment prefix (as passed to [`Coord::get`]).
    pub rel: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

impl KeyValue {
    pub fn decode<T: DeserializeOwned>(&self) -> Result<Versioned<T>, CoordError> {
        Ok(Versioned {
            value: decode(&self.rel, &self.value)?,
            mod_revision: self.mod_revision,
        })
    }
}

/// State under a prefix at `revision`; the event stream continues from
/// `revision + 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: i64,
    /// Sorted by key.
    pub kvs: Vec<KeyValue>,
}

impl Snapshot {
    pub fn decode<T: DeserializeOwned>(&self) -> Result<Vec<(String, Versioned<T>)>, CoordError> {
        self.kvs
            .iter()
            .map(|kv| Ok((kv.rel.clone(), kv.decode()?)))
            .collect()
    }
}

/// A change under a watched prefix.
///
/// After the watcher re-lists (its resume point was compacted away), it
/// emits the difference between what it had reported and the new listing
/// as ordinary events: a `Delete` for each vanished key, a `Put` for each
/// new or changed one. Intermediate values are skipped, but applying events
/// in order always yields the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put {
        rel: String,
        value: Vec<u8>,
        mod_revision: i64,
    },
    Delete {
        rel: String,
    },
}

impl WatchEvent {
    pub fn rel(&self) -> &str {
        match self {
            WatchEvent::Put { rel, .. } | WatchEvent::Delete { rel } => rel,
        }
    }

    /// The decoded document of a `Put`; `None` for a `Delete`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<Option<T>, CoordError> {
        match self {
            WatchEvent::Put { rel, value, .. } => decode(rel, value).map(Some),
            WatchEvent::Delete { .. } => Ok(None),
        }
    }
}

impl Coord {
    /// The current state under `rel_prefix` and a stream of every change
    /// after it. A task owned by `cancel` (and by the receiver: it also ends
    /// when the receiver is dropped) feeds the stream, reconnecting after
    /// errors and re-listing when its resume revision was compacted.
    pub async fn watch_prefix(
        &self,
        rel_prefix: &str,
        cancel: CancellationToken,
    ) -> Result<(Snapshot, mpsc::Receiver<WatchEvent>), CoordError> {
        let (revision, kvs) = self.list_raw(rel_prefix).await?;
        let known = kvs
            .iter()
            .map(|kv| (kv.rel.clone(), kv.mod_revision))
            .collect();
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL_CAPACITY);
        let task = Watcher {
            coord: self.clone(),
            rel_prefix: rel_prefix.to_owned(),
            next_rev: revision + 1,
            known,
            tx,
            backoff: RECONNECT.backoff(),
        };
        tokio::spawn(task.run(cancel));
        Ok((Snapshot { revision, kvs }, rx))
    }
}

struct Watcher {
    coord: Coord,
    rel_prefix: String,
    next_rev: i64,
    /// What the consumer has been told: key → mod revision. Needed to
    /// compute the difference after a re-list.
    known: HashMap<String, i64>,
    tx: mpsc::Sender<WatchEvent>,
    backoff: Backoff,
}

enum Interrupted {
    /// The consumer is gone.
    Stop,
    /// etcd no longer has the history from `next_rev`.
    Compacted(i64),
    Failed(String),
}

impl Watcher {
    async fn run(mut self, cancel: CancellationToken) {
        let closed = self.tx.clone();
        let mut needs_relist = false;
        loop {
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = closed.closed() => return,
                o = self.step(needs_relist) => o,
            };
            needs_relist = false;
            match outcome {
                Interrupted::Stop => return,
                Interrupted::Compacted(compact_revision) => {
                    info!(
                        prefix = %self.rel_prefix,
                        resume_revision = self.next_rev,
                        compact_revision,
                        "watch resume point was compacted; re-listing"
                    );
                    needs_relist = true;
                }
                Interrupted::Failed(reason) => {
                    let delay = self.backoff.next_delay();
                    warn!(
                        prefix = %self.rel_prefix,
                        resume_revision = self.next_rev,
                        retry_in_ms = delay.as_millis() as u64,
                        %reason,
                        "watch interrupted; reconnecting"
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = closed.closed() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn step(&mut self, relist: bool) -> Interrupted {
        if relist {
            // A failed re-list leaves `next_rev` compacted, so the next
            // stream attempt reports compaction again and re-lists again.
            if let Err(interrupted) = self.relist().await {
                return interrupted;
            }
        }
        self.stream().await
    }

    async fn relist(&mut self) -> Result<(), Interrupted> {
        let (revision, kvs) = self
            .coord
            .list_raw(&self.rel_prefix)
            .await
            .map_err(|e| Interrupted::Failed(format!("re-list failed: {e}")))?;
        let mut events = Vec::new();
        let fresh: HashMap<String, i64> = kvs
            .iter()
            .map(|kv| (kv.rel.clone(), kv.mod_revision))
            .collect();
        let mut gone: Vec<&String> = self
            .known
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .collect();
        gone.sort();
        for rel in gone {
            events.push(WatchEvent::Delete { rel: rel.clone() });
        }
        for kv in kvs {
            if self.known.get(&kv.rel) != Some(&kv.mod_revision) {
                events.push(WatchEvent::Put {
                    rel: kv.rel,
                    value: kv.value,
                    mod_revision: kv.mod_revision,
                });
            }
        }
        debug!(prefix = %self.rel_prefix, revision, changes = events.len(), "re-listed watched prefix");
        for ev in events {
            self.note(&ev);
            if self.tx.send(ev).await.is_err() {
                return Err(Interrupted::Stop);
            }
        }
        // Re-listing is a resync, so `known` must be exactly the listing
        // even for keys whose events the consumer already had.
        self.known = fresh;
        self.next_rev = revision + 1;
        Ok(())
    }

    fn note(&mut self, ev: &WatchEvent) {
        match ev {
            WatchEvent::Put {
                rel, mod_revision, ..
            } => {
                self.known.insert(rel.clone(), *mod_revision);
            }
            WatchEvent::Delete { rel } => {
                self.known.remove(rel);
            }
        }
    }

    async fn stream(&mut self) -> Interrupted {
        let key = self.coord.key(&self.rel_prefix);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.next_rev);
        let mut client = self.coord.client.watch_client();
        let mut stream = match client.watch(key, Some(options)).await {
            Ok(s) => s,
            Err(e) => return Interrupted::Failed(e.to_string()),
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return Interrupted::Failed("etcd closed the watch stream".into()),
                Err(e) => return Interrupted::Failed(e.to_string()),
            };
            if resp.compact_revision() > 0 {
                return Interrupted::Compacted(resp.compact_revision());
            }
            if resp.canceled() {
                return Interrupted::Failed(format!(
                    "etcd cancelled the watch: {}",
                    resp.cancel_reason()
                ));
            }
            self.backoff.reset();
            let mut last_rev = None;
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Some(rel) = std::str::from_utf8(kv.key())
                    .ok()
                    .and_then(|full| self.coord.rel(full))
                else {
                    continue;
                };
                let event = match ev.event_type() {
                    EventType::Put => WatchEvent::Put {
                        rel: rel.to_owned(),
                        value: kv.value().to_vec(),
                        mod_revision: kv.mod_revision(),
                    },
                    EventType::Delete => WatchEvent::Delete {
                        rel: rel.to_owned(),
                    },
                };
                last_rev = Some(kv.mod_revision());
                self.note(&event);
                if self.tx.send(event).await.is_err() {
                    return Interrupted::Stop;
                }
            }
            // Advanced per response, not per event: a multi-key txn is one
            // revision with several events, and a resume point taken in
            // the middle of it would skip the rest.
            if let Some(rev) = last_rev {
                self.next_rev = rev + 1;
            }
        }
    }
}

/// Delays before reconnecting to etcd (a watch, a lease keepalive); reset
/// by any successful response.
pub(crate) const RECONNECT: Policy = Policy::new(Duration::from_millis(50), Duration::from_secs(5));
