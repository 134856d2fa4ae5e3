//! Incremental fetch sessions (KIP-227), as a broker's own replica fetcher
//! uses them: the broker keeps the session's partitions and their fetch
//! offsets, each request carries only what changed (partitions added, moved
//! to another offset, or forgotten), and the answer carries only partitions
//! with something new (records, a moved high watermark, last stable offset
//! or log start, or an error). Many caught-up partitions then cost one
//! small request per long poll, not one entry each per poll.

use std::collections::{HashMap, HashSet};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse};
use tracing::debug;

use crate::cluster::{millis, topic_name, unknown_topic, Cluster};
use crate::data::{fetched, LAST_VERSION_WITH_NAMES};
use crate::error::KafkaError;
use crate::types::{FetchOptions, FetchRequestPartition, FetchResultPartition, Uuid};

/// FETCH_SESSION_ID_NOT_FOUND and INVALID_FETCH_SESSION_EPOCH: the broker
/// evicted or lost the session; start a new one with a full request.
const SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_SESSION_EPOCH: i16 = 71;
/// Sessions exist from Fetch v7.
const FIRST_SESSION_VERSION: i16 = 7;

/// A partition: (topic, partition).
type Key = (String, i32);

/// What the broker's session holds for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    offset: i64,
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
    held: HashMap<(String, i32), Held>,
    /// Full requests sent (a new session, or no session offered); for tests
    /// and metrics.
    full_requests: u64,
}

impl FetchSession {
    /// A session with broker `broker` (node id); created on the first poll.
    pub fn new(broker: i32) -> FetchSession {
        FetchSession {
            broker,
            id: 0,
            epoch: 0,
            held: HashMap::new(),
            full_requests: 0,
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

    fn reset(&mut self) {
        self.id = 0;
        self.epoch = 0;
        self.held.clear();
    }

    fn next_epoch(&mut self) {
        // Epoch 0 creates a session and -1 closes one: wrap to 1.
        self.epoch = self.epoch.checked_add(1).unwrap_or(1);
    }
}

impl Cluster {
    /// One Fetch in `session`: `wanted` is every partition the caller wants
    /// fetched now, at its offset, all led by the session's broker. Sends
    /// only the difference from what the session holds and returns only the
    /// partitions the broker answered with something new (errors
    /// included); the others have nothing new. A partition whose leader is
    /// not the session's broker gets NOT_LEADER_OR_FOLLOWER.
    ///
    /// `opts.max_wait` is the long poll: the broker answers as soon as any
    /// partition has `min_bytes`, else after `max_wait`. Use a connection
    /// (a `Cluster`) of its own for sessions, since a broker answers a
    /// connection's requests in order. A lost session (evicted, epoch
    /// mismatch) is started again with a full request at once.
    pub async fn fetch_in_session(
        &self,
        session: &mut FetchSession,
        wanted: &[FetchRequestPartition],
        opts: &FetchOptions,
    ) -> Result<Vec<FetchResultPartition>, KafkaError> {
        match self.session_round(session, wanted, opts).await {
            Err(KafkaError::Broker { code, .. })
                if code == SESSION_ID_NOT_FOUND || code == INVALID_SESSION_EPOCH =>
            {
                debug!(
                    broker = session.broker,
                    code, "fetch session lost; starting a new one"
                );
                session.reset();
                self.session_round(session, wanted, opts).await
            }
            other => other,
        }
    }

    async fn session_round(
        &self,
        session: &mut FetchSession,
        wanted: &[FetchRequestPartition],
        opts: &FetchOptions,
    ) -> Result<Vec<FetchResultPartition>, KafkaError> {
        let inner = &self.inner;
        let addr = inner
            .broker_addr(session.broker)
            .ok_or_else(|| KafkaError::NoLeader {
                topic: wanted.first().map(|w| w.topic.clone()).unwrap_or_default(),
                partition: wanted.first().map_or(-1, |w| w.partition),
            })?;
        let mut names: Vec<&str> = wanted.iter().map(|w| w.topic.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let topics = inner.topics_metadata(&names).await;

        let mut out = Vec::new();
        // Partitions this request is about, with their topic ids.
        let mut now: HashMap<(String, i32), (Held, i32)> = HashMap::new();
        for w in wanted {
            let leader = match topics.get(w.topic.as_str()) {
                Some(Ok(Some(t))) => inner.leader(t, w.partition),
                Some(Err(e)) => Err(e.clone()),
                Some(Ok(None)) | None => Err(unknown_topic(&w.topic)),
            };
            match leader {
                Ok(l) if l.addr == addr => {
                    now.insert(
                        (w.topic.clone(), w.partition),
                        (
                            Held {
                                offset: w.offset,
                                topic_id: l.topic_id,
                            },
                            l.leader_epoch,
                        ),
                    );
                }
                Ok(_) => out.push(FetchResultPartition {
                    topic: w.topic.clone(),
                    partition: w.partition,
                    result: Err(KafkaError::from_code(
                        6,
                        Some("moved to another broker".into()),
                    )),
                }),
                Err(e) => out.push(FetchResultPartition {
                    topic: w.topic.clone(),
                    partition: w.partition,
                    result: Err(e),
                }),
            }
        }

        let conn = inner.connection(&addr).await?;
        let mut version = conn.require(ApiKey::Fetch)?;
        if now.values().any(|(h, _)| h.topic_id.is_nil()) {
            version = version.min(LAST_VERSION_WITH_NAMES);
        }
        let by_id = version > LAST_VERSION_WITH_NAMES;
        let sessions = version >= FIRST_SESSION_VERSION;
        // A session made at one version cannot go on at another (topic ids
        // appear or vanish): start again.
        if !sessions {
            session.reset();
        }
        let full = session.id == 0;

        // What to send: everything on a full request, else what changed.
        let mut send: Vec<(&Key, &(Held, i32))> = now
            .iter()
            .filter(|(k, (h, _))| full || session.held.get(*k) != Some(h))
            .collect();
        send.sort_by(|a, b| a.0.cmp(b.0));
        let forgotten: Vec<(String, i32, Uuid)> = if full {
            Vec::new()
        } else {
            let mut f: Vec<_> = session
                .held
                .iter()
                .filter(|(k, _)| !now.contains_key(*k))
                .map(|((t, p), h)| (t.clone(), *p, h.topic_id))
                .collect();
            f.sort();
            f
        };

        let mut topics_req: Vec<FetchTopic> = Vec::new();
        let mut slot_of: HashMap<String, usize> = HashMap::new();
        for ((topic, partition), (held, leader_epoch)) in &send {
            let slot = *slot_of.entry(topic.clone()).or_insert_with(|| {
                let mut t = FetchTopic::default();
                if by_id {
                    t.topic_id = held.topic_id;
                } else {
                    t.topic = topic_name(topic);
                }
                topics_req.push(t);
                topics_req.len() - 1
            });
            let mut fp = FetchPartition::default();
            fp.partition = *partition;
            if version >= 9 {
                fp.current_leader_epoch = *leader_epoch;
            }
            fp.fetch_offset = held.offset;
            fp.partition_max_bytes = opts.partition_max_bytes;
            if let Some(t) = topics_req.get_mut(slot) {
                t.partitions.push(fp);
            }
        }
        let mut forgotten_req: Vec<ForgottenTopic> = Vec::new();
        for (topic, partition, topic_id) in &forgotten {
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

        let mut req = FetchRequest::default();
        req.max_wait_ms = millis(opts.max_wait);
        req.min_bytes = opts.min_bytes;
        req.max_bytes = opts.max_bytes;
        req.isolation_level = i8::from(opts.read_committed);
        if sessions {
            req.session_id = session.id;
            req.session_epoch = session.epoch;
        } else {
            req.session_id = 0;
            req.session_epoch = -1;
        }
        req.topics = topics_req;
        req.forgotten_topics_data = forgotten_req;
        if full {
            session.full_requests += 1;
        }

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
            KafkaError::check(resp.error_code, None)?;
        }
        if sessions && resp.session_id != 0 {
            if full {
                session.held.clear();
            }
            session.id = resp.session_id;
            for (k, (h, _)) in &send {
                session.held.insert((*k).clone(), *h);
            }
            for (t, p, _) in &forgotten {
                session.held.remove(&(t.clone(), *p));
            }
            session.next_epoch();
        } else {
            // No session offered (the broker's session cache is full, or an
            // old broker): every request stays a full one.
            session.reset();
        }

        let mut seen: HashSet<(String, i32)> = HashSet::new();
        let names_by_id: HashMap<Uuid, String> = now
            .iter()
            .map(|((t, _), (h, _))| (h.topic_id, t.clone()))
            .collect();
        for t in resp.responses {
            let name = if by_id {
                names_by_id.get(&t.topic_id).cloned()
            } else {
                Some(t.topic.0.to_string())
            };
            let Some(name) = name else { continue };
            for p in t.partitions {
                let key = (name.clone(), p.partition_index);
                if !now.contains_key(&key) || !seen.insert(key.clone()) {
                    continue;
                }
                let result = fetched(p);
                if let Err(e) = &result {
                    if e.needs_metadata_refresh() {
                        inner.mark_stale(&name);
                    }
                    // An errored partition leaves the broker's session.
                    session.held.remove(&key);
                }
                out.push(FetchResultPartition {
                    topic: key.0,
                    partition: key.1,
                    result,
                });
            }
        }
        Ok(out)
    }
}
