//! Incremental fetch sessions (KIP-227), as a broker's own replica fetcher
//! uses them: the broker keeps the session's partitions and their fetch
//! offsets, each request carries only what changed (partitions added, moved
//! to another offset, or forgotten), and the answer carries only partitions
//! with something new (records, a moved high watermark or log start, or an
//! error). Many caught-up partitions then cost one small request per long
//! poll, not one entry each per poll.
//!
//! The client side is incremental too: the session keeps what its caller
//! wants and what the broker holds, and a request costs in proportion to
//! the partitions that changed and the partitions answered, never to the
//! partitions that wait (only a full request, when a session starts or
//! restarts, walks them all).

use std::collections::{HashMap, HashSet};

use kafka_protocol::messages::fetch_request::ForgottenTopic;
use kafka_protocol::messages::{ApiKey, FetchResponse};
use tracing::debug;

use crate::cluster::{topic_name, unknown_topic, Cluster};
use crate::data::{fetched, FetchTopics, LAST_VERSION_WITH_NAMES};
use crate::error::KafkaError;
use crate::types::{FetchOptions, FetchResultPartition, Uuid};

/// FETCH_SESSION_ID_NOT_FOUND and INVALID_FETCH_SESSION_EPOCH: the broker
/// evicted or lost the session; start a new one with a full request.
const SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_SESSION_EPOCH: i16 = 71;
/// Sessions exist from Fetch v7.
const FIRST_SESSION_VERSION: i16 = 7;
/// NOT_LEADER_OR_FOLLOWER.
const NOT_LEADER: i16 = 6;

/// A partition: (topic, partition).
pub type SessionKey = (String, i32);

/// What the broker's session holds for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    /// `None` after an error: the broker keeps the partition and its old
    /// leader epoch, so it is sent again (with a fresh epoch) when wanted.
    offset: Option<i64>,
    topic_id: Uuid,
}

/// One fetch session with one broker. Owned by its caller, used for one
/// request at a time.
#[derive(Debug)]
pub struct FetchSession {
    broker: i32,
    id: i32,
    /// The epoch of the next request: 0 creates a session, then 1, 2, ...
    epoch: i32,
    /// The Fetch version the session was made at (topic ids or names).
    version: Option<i16>,
    /// What the caller wants fetched, at which offset.
    wanted: HashMap<SessionKey, i64>,
    /// What the broker's session holds.
    held: HashMap<SessionKey, Held>,
    /// Partitions whose wanted and held state may differ.
    dirty: HashSet<SessionKey>,
    /// Topic names of the held partitions' topic ids (responses by id).
    names: HashMap<Uuid, String>,
    /// Full requests sent (a new session, or no session offered).
    full_requests: u64,
    /// Partitions the last request carried (added, moved or forgotten).
    last_sent: usize,
}

impl FetchSession {
    /// A session with broker `broker` (node id); created on the first poll.
    pub fn new(broker: i32) -> FetchSession {
        FetchSession {
            broker,
            id: 0,
            epoch: 0,
            version: None,
            wanted: HashMap::new(),
            held: HashMap::new(),
            dirty: HashSet::new(),
            names: HashMap::new(),
            full_requests: 0,
            last_sent: 0,
        }
    }

    pub fn broker(&self) -> i32 {
        self.broker
    }

    /// The broker's session id (0: none yet, or the broker offered none).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// How many full requests were sent (a session started or restarted).
    pub fn full_requests(&self) -> u64 {
        self.full_requests
    }

    /// How many partitions the last request carried: every wanted one for
    /// a full request, else those added, moved or forgotten.
    pub fn last_sent(&self) -> usize {
        self.last_sent
    }

    /// How many partitions are wanted.
    pub fn len(&self) -> usize {
        self.wanted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.wanted.is_empty()
    }

    /// Fetch `key` at `offset` from the next request on (a partition
    /// already wanted at that offset costs nothing).
    pub fn want(&mut self, key: SessionKey, offset: i64) {
        let held = self.held.get(&key).and_then(|h| h.offset);
        if held == Some(offset) {
            // Forgotten and wanted again before a request: no change.
            self.dirty.remove(&key);
        } else {
            self.dirty.insert(key.clone());
        }
        self.wanted.insert(key, offset);
    }

    /// Stop fetching `key` (the next request forgets it).
    pub fn forget(&mut self, key: &SessionKey) {
        if self.wanted.remove(key).is_some() || self.held.contains_key(key) {
            self.dirty.insert(key.clone());
        }
    }

    /// Whether `key` is wanted.
    pub fn wants(&self, key: &SessionKey) -> bool {
        self.wanted.contains_key(key)
    }

    /// The broker forgot the session (or may have): the next request is a
    /// full one with every wanted partition.
    fn reset(&mut self) {
        self.id = 0;
        self.epoch = 0;
        self.version = None;
        self.held.clear();
        self.names.clear();
        self.dirty.clear();
    }

    fn next_epoch(&mut self) {
        // Epoch 0 creates a session and -1 closes one: wrap to 1.
        self.epoch = self.epoch.checked_add(1).unwrap_or(1);
    }
}

/// One partition as a request carries it.
struct Send {
    key: SessionKey,
    offset: i64,
    topic_id: Uuid,
    leader_epoch: i32,
}

impl Cluster {
    /// One Fetch in `session`: fetches every partition the session wants
    /// (all led by the session's broker), sending only what changed since
    /// the last request, and returns only the partitions the broker
    /// answered with something new (errors included); the others have
    /// nothing new. A wanted partition whose leader is not the session's
    /// broker gets NOT_LEADER_OR_FOLLOWER. Each result carries the offset
    /// it was fetched at; the session keeps wanting a partition until it
    /// is forgotten or wanted at another offset.
    ///
    /// `opts.max_wait` is the long poll: the broker answers as soon as any
    /// partition has `min_bytes`, else after `max_wait`. Use a connection
    /// (a `Cluster`) of its own for sessions, since a broker answers a
    /// connection's requests in order. A lost session (evicted, epoch
    /// mismatch) is started again with a full request at once.
    pub async fn fetch_in_session(
        &self,
        session: &mut FetchSession,
        opts: &FetchOptions,
    ) -> Result<Vec<FetchResultPartition>, KafkaError> {
        match self.session_round(session, opts).await {
            Err(KafkaError::Broker { code, .. })
                if code == SESSION_ID_NOT_FOUND || code == INVALID_SESSION_EPOCH =>
            {
                debug!(
                    broker = session.broker,
                    code, "fetch session lost; starting a new one"
                );
                session.reset();
                self.session_round(session, opts).await
            }
            other => other,
        }
    }

    async fn session_round(
        &self,
        session: &mut FetchSession,
        opts: &FetchOptions,
    ) -> Result<Vec<FetchResultPartition>, KafkaError> {
        let inner = &self.inner;
        let addr = inner.broker_addr(session.broker).ok_or_else(|| {
            let (topic, partition) = session
                .wanted
                .keys()
                .next()
                .cloned()
                .unwrap_or_else(|| (String::new(), -1));
            KafkaError::NoLeader { topic, partition }
        })?;
        let full = session.id == 0;
        // The partitions to look at: every wanted one for a full request,
        // else only those that changed.
        let changed: Vec<SessionKey> = if full {
            session.wanted.keys().cloned().collect()
        } else {
            session.dirty.iter().cloned().collect()
        };
        // Metadata (leader, topic id) only for the partitions to send.
        let mut names: Vec<&str> = changed
            .iter()
            .filter(|k| {
                session.wanted.get(*k).is_some_and(|o| {
                    full || session.held.get(*k).and_then(|h| h.offset) != Some(*o)
                })
            })
            .map(|(t, _)| t.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        let topics = if names.is_empty() {
            HashMap::new()
        } else {
            inner.topics_metadata(&names).await
        };

        let mut out = Vec::new();
        let mut send: Vec<Send> = Vec::new();
        let mut forgotten: Vec<(SessionKey, Uuid)> = Vec::new();
        for key in changed {
            let Some(&offset) = session.wanted.get(&key) else {
                if let Some(h) = session.held.get(&key) {
                    forgotten.push((key, h.topic_id));
                }
                continue;
            };
            if !full && session.held.get(&key).and_then(|h| h.offset) == Some(offset) {
                continue;
            }
            let leader = match topics.get(key.0.as_str()) {
                Some(Ok(Some(t))) => inner.leader(t, key.1),
                Some(Err(e)) => Err(e.clone()),
                Some(Ok(None)) | None => Err(unknown_topic(&key.0)),
            };
            match leader {
                Ok(l) if l.addr == addr => send.push(Send {
                    key,
                    offset,
                    topic_id: l.topic_id,
                    leader_epoch: l.leader_epoch,
                }),
                other => {
                    let e = other.err().unwrap_or_else(|| {
                        KafkaError::from_code(NOT_LEADER, Some("moved to another broker".into()))
                    });
                    // Not ours to hold; if the broker holds it, forget it.
                    if let Some(h) = session.held.get(&key) {
                        forgotten.push((key.clone(), h.topic_id));
                    }
                    out.push(FetchResultPartition {
                        topic: key.0,
                        partition: key.1,
                        offset,
                        result: Err(e),
                    });
                }
            }
        }
        send.sort_by(|a, b| a.key.cmp(&b.key));
        forgotten.sort();

        let conn = inner.connection(&addr).await?;
        let newest = conn.require(ApiKey::Fetch)?;
        // A session goes on at the version it was made at: topic ids cannot
        // appear or vanish within one.
        let mut version = match session.version {
            Some(v) if !full => v.min(newest),
            _ => newest,
        };
        if send.iter().any(|s| s.topic_id.is_nil()) {
            version = version.min(LAST_VERSION_WITH_NAMES);
        }
        let by_id = version > LAST_VERSION_WITH_NAMES;
        if !full
            && session
                .version
                .is_some_and(|v| (v > LAST_VERSION_WITH_NAMES) != by_id)
        {
            session.reset();
            return Box::pin(self.session_round(session, opts)).await;
        }
        let sessions = version >= FIRST_SESSION_VERSION;

        let mut topics = FetchTopics::new(version);
        for s in &send {
            topics.push(
                &s.key.0,
                s.topic_id,
                s.key.1,
                s.leader_epoch,
                s.offset,
                opts.partition_max_bytes,
            );
        }
        let mut forgotten_req: Vec<ForgottenTopic> = Vec::new();
        for ((topic, partition), topic_id) in &forgotten {
            let existing = forgotten_req.iter_mut().find(|f| {
                if by_id {
                    f.topic_id == *topic_id
                } else {
                    f.topic.0.as_str() == topic.as_str()
                }
            });
            match existing {
                Some(f) => f.partitions.push(*partition),
                None => {
                    let mut f = ForgottenTopic::default();
                    if by_id {
                        f.topic_id = *topic_id;
                    } else {
                        f.topic = topic_name(topic);
                    }
                    f.partitions.push(*partition);
                    forgotten_req.push(f);
                }
            }
        }

        let mut req = topics.request(
            opts,
            if sessions {
                (session.id, session.epoch)
            } else {
                (0, -1)
            },
        );
        req.forgotten_topics_data = forgotten_req;
        if full {
            session.full_requests += 1;
        }
        session.last_sent = send.len() + forgotten.len();

        let timeout = inner.config.request_timeout + opts.max_wait;
        let resp: FetchResponse = match conn.request(ApiKey::Fetch, version, &req, timeout).await {
            Ok(r) => r,
            Err(e) => {
                // Whether the broker saw the request is unknown: start over.
                session.reset();
                return Err(e);
            }
        };
        if version >= FIRST_SESSION_VERSION {
            if let Err(e) = KafkaError::check(resp.error_code, None) {
                session.reset();
                return Err(e);
            }
        }
        // What this request asked for, by topic id, for a response by id.
        let mut asked_names: HashMap<Uuid, &str> = HashMap::new();
        if sessions && resp.session_id != 0 {
            if full {
                session.held.clear();
                session.names.clear();
            }
            session.id = resp.session_id;
            session.version = Some(version);
            for s in &send {
                session.held.insert(
                    s.key.clone(),
                    Held {
                        offset: Some(s.offset),
                        topic_id: s.topic_id,
                    },
                );
                if by_id {
                    session
                        .names
                        .entry(s.topic_id)
                        .or_insert_with(|| s.key.0.clone());
                }
            }
            for (k, _) in &forgotten {
                session.held.remove(k);
            }
            session.dirty.clear();
            session.next_epoch();
        } else {
            // No session offered (the broker's session cache is full, or an
            // old broker): every request stays a full one, and the answer
            // is about what it carried.
            session.reset();
            for s in &send {
                asked_names.insert(s.topic_id, s.key.0.as_str());
            }
        }
        let asked: HashMap<&SessionKey, i64> = if session.id == 0 {
            send.iter().map(|s| (&s.key, s.offset)).collect()
        } else {
            HashMap::new()
        };

        let mut seen: HashSet<SessionKey> = HashSet::new();
        for t in resp.responses {
            let name = if by_id {
                session
                    .names
                    .get(&t.topic_id)
                    .map(String::as_str)
                    .or_else(|| asked_names.get(&t.topic_id).copied())
                    .map(str::to_owned)
            } else {
                Some(t.topic.0.to_string())
            };
            let Some(name) = name else { continue };
            for p in t.partitions {
                let key = (name.clone(), p.partition_index);
                // Answers only for what is wanted at the offset fetched.
                let offset = match session.held.get(&key) {
                    Some(h) => h.offset,
                    None => asked.get(&key).copied(),
                };
                let Some(offset) = offset else { continue };
                if session.wanted.get(&key) != Some(&offset) || !seen.insert(key.clone()) {
                    continue;
                }
                let result = fetched(p);
                if let Err(e) = &result {
                    if e.needs_metadata_refresh() {
                        inner.mark_stale(&name);
                    }
                    if let Some(h) = session.held.get_mut(&key) {
                        h.offset = None;
                        session.dirty.insert(key.clone());
                    }
                }
                out.push(FetchResultPartition {
                    topic: key.0,
                    partition: key.1,
                    offset,
                    result,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(p: i32) -> SessionKey {
        ("t".to_owned(), p)
    }

    fn held(s: &mut FetchSession, p: i32, offset: i64) {
        s.held.insert(
            k(p),
            Held {
                offset: Some(offset),
                topic_id: Uuid::nil(),
            },
        );
        s.dirty.remove(&k(p));
    }

    #[test]
    fn only_changes_are_dirty() {
        let mut s = FetchSession::new(1);
        s.want(k(0), 10);
        s.want(k(1), 20);
        assert_eq!(s.dirty.len(), 2);
        // As if a request had carried them.
        held(&mut s, 0, 10);
        held(&mut s, 1, 20);
        assert!(s.dirty.is_empty());
        // Wanted again at the same offset: nothing to send.
        s.want(k(0), 10);
        assert!(s.dirty.is_empty());
        // Forgotten then wanted back before a request: nothing to send.
        s.forget(&k(1));
        assert!(s.dirty.contains(&k(1)) && !s.wants(&k(1)));
        s.want(k(1), 20);
        assert!(s.dirty.is_empty() && s.wants(&k(1)));
        // A new offset, or a forget, is a change.
        s.want(k(0), 11);
        s.forget(&k(1));
        assert_eq!(s.dirty.len(), 2);
        assert_eq!(s.len(), 1);
        // Forgetting what neither side has is nothing.
        s.forget(&k(7));
        assert!(!s.dirty.contains(&k(7)));
        // A reset starts over: the next request is a full one.
        s.reset();
        assert!(s.held.is_empty() && s.id() == 0 && s.len() == 1);
    }
}
