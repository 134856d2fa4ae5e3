//! One fetch loop per link: the outstanding fetches of all partitions go to
//! the source in one multi-partition Fetch per broker, as Kafka consumers do.
//!
//! A broker answers the requests of a connection strictly in order, so
//! per-partition Fetch requests on a shared connection would queue every
//! partition behind the long polls of the caught-up ones. Two paths keep
//! busy and idle partitions apart:
//!
//! - **Busy** partitions (their last fetch returned records) are fetched at
//!   once (no long poll) in one multi-partition Fetch per broker; each
//!   source broker has its own round in flight, so a slow or unreachable
//!   broker holds back only the partitions it leads.
//! - **Caught-up** partitions (their last fetch returned nothing) wait in
//!   one incremental fetch session (KIP-227) per broker, on a connection of
//!   its own, long-polling as a broker's replica fetcher does: the broker
//!   answers as soon as one of them has something new, at the latest after
//!   `idle_poll`, and each request carries only the partitions that joined
//!   or left. Thousands of caught-up partitions cost one small request per
//!   long poll per broker. A partition that gets records leaves the session
//!   and is busy again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_kafka::{
    Cluster, FetchOptions, FetchRequestPartition, FetchResultPartition, FetchSession,
    FetchedPartition, KafkaError,
};

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

struct Request {
    topic: String,
    partition: i32,
    offset: i64,
    /// The partition's previous fetch had nothing new: wait in the session.
    idle: bool,
    reply: oneshot::Sender<Result<FetchedPartition, KafkaError>>,
}

/// How caught-up partitions wait for new records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleMode {
    /// Ask again (no long poll) on a grid of this step, so the caught-up
    /// partitions' fetches go out together.
    Poll(Duration),
    /// Wait in an incremental fetch session, long-polling this long (the
    /// default; see ARCHITECTURE.md, Fetch sessions).
    Session(Duration),
}

impl IdleMode {
    /// The poll step or the long poll.
    fn wait(self) -> Duration {
        match self {
            IdleMode::Poll(d) | IdleMode::Session(d) => d,
        }
    }
}

impl Request {
    fn wanted(&self) -> FetchRequestPartition {
        FetchRequestPartition {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// Handle used by partition tasks; cheap to clone.
#[derive(Clone)]
pub struct FetchMux {
    tx: mpsc::Sender<Request>,
    /// Idle partitions ask again on a grid of `Poll` steps from here.
    epoch: Instant,
    idle: IdleMode,
    /// When each source broker's fetch session last answered, for brokers
    /// with partitions waiting in it (wall clock, ms).
    confirmed: Arc<Mutex<HashMap<i32, i64>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Each partition has at most one fetch outstanding, so this bounds memory
/// at the number of partitions a fetcher runs, not at traffic.
const QUEUE: usize = 4096;

impl FetchMux {
    /// Starts the loop for `cluster`; it stops when `cancel` fires. Caught-up
    /// partitions long-poll for `idle_poll` at most (see the module doc).
    pub fn start(
        cluster: Cluster,
        opts: FetchOptions,
        idle: IdleMode,
        link: &str,
        direction: cutover_model::CopyDirection,
        cancel: CancellationToken,
    ) -> (FetchMux, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let span = tracing::info_span!("fetch_loop", link = %link, direction = direction.name());
        let idle = match idle {
            IdleMode::Poll(d) => IdleMode::Poll(d.max(Duration::from_millis(1))),
            IdleMode::Session(d) => IdleMode::Session(d.max(Duration::from_millis(1))),
        };
        let confirmed: Arc<Mutex<HashMap<i32, i64>>> = Default::default();
        let handle = tokio::spawn(
            run(cluster, opts, idle.wait(), rx, confirmed.clone(), cancel).instrument(span),
        );
        let mux = FetchMux {
            tx,
            epoch: Instant::now(),
            idle,
            confirmed,
        };
        (mux, handle)
    }

    /// Whether caught-up partitions wait in a fetch session (else they ask
    /// again at [`FetchMux::next_idle_poll`]).
    pub fn sessions(&self) -> bool {
        matches!(self.idle, IdleMode::Session(_))
    }

    /// Until when every partition waiting in this link's fetch sessions is
    /// known to be caught up: the oldest last answer of the sessions that
    /// have partitions waiting (wall clock, ms). `None` when none waits.
    pub fn confirmed_at_ms(&self) -> Option<i64> {
        lock(&self.confirmed).values().min().copied()
    }

    /// When a partition that had nothing new asks again (poll mode). Every
    /// idle partition of the link wakes at the same grid point, so their
    /// fetches go out together in one request instead of one each.
    pub fn next_idle_poll(&self) -> Instant {
        let step = self.idle.wait().as_nanos().max(1);
        let steps = self.epoch.elapsed().as_nanos() / step + 1;
        let offset = u64::try_from(steps.saturating_mul(step)).unwrap_or(u64::MAX);
        self.epoch + Duration::from_nanos(offset)
    }

    /// Fetches one partition at `offset` (batched with the other partitions'
    /// fetches). With `idle` (the previous fetch had nothing new), the
    /// answer comes when the source has something new for the partition.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        idle: bool,
    ) -> Result<FetchedPartition, KafkaError> {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            topic: topic.to_string(),
            partition,
            offset,
            idle: idle && self.sessions(),
            reply,
        };
        self.tx.send(req).await.map_err(|_| KafkaError::Closed)?;
        rx.await.map_err(|_| KafkaError::Closed)?
    }
}

/// What a finished round hands back to the loop.
enum Done {
    Busy,
    Session {
        session: Box<FetchSession>,
        /// The broker's answers, or the round's failure.
        results: Result<Vec<FetchResultPartition>, KafkaError>,
    },
}

type Key = (String, i32);

/// Caught-up partitions led by one broker and their fetch session.
struct Parked {
    /// The session while no round of it is in flight.
    session: Option<Box<FetchSession>>,
    /// Changes made while the round was in flight: the offset a partition
    /// is now wanted at, or `None` to forget it.
    pending: HashMap<Key, Option<i64>>,
    /// The waiting requests; answered when the session has something new.
    requests: HashMap<Key, Request>,
    /// When requests whose partition task went away were last dropped.
    swept: Instant,
}

impl Parked {
    fn new(broker: i32) -> Parked {
        Parked {
            session: Some(Box::new(FetchSession::new(broker))),
            pending: HashMap::new(),
            requests: HashMap::new(),
            swept: Instant::now(),
        }
    }

    /// Wants `key` at `offset` (or forgets it): now, or once the round in
    /// flight is back.
    fn change(&mut self, key: Key, offset: Option<i64>) {
        match (&mut self.session, offset) {
            (Some(s), Some(o)) => s.want(key, o),
            (Some(s), None) => s.forget(&key),
            (None, o) => {
                self.pending.insert(key, o);
            }
        }
    }

    fn park(&mut self, r: Request) {
        let key = (r.topic.clone(), r.partition);
        self.change(key.clone(), Some(r.offset));
        self.requests.insert(key, r);
    }

    /// The session came back from a round: answers go to the requests that
    /// asked at the offset fetched (a partition that restarted meanwhile
    /// asks at another one and waits for the next round), and the changes
    /// made meanwhile apply.
    fn answered(
        &mut self,
        mut session: Box<FetchSession>,
        results: Result<Vec<FetchResultPartition>, KafkaError>,
    ) {
        for (key, o) in self.pending.drain() {
            match o {
                Some(o) => session.want(key, o),
                None => session.forget(&key),
            }
        }
        match results {
            Ok(results) => {
                for r in results {
                    let key = (r.topic, r.partition);
                    match self.requests.get(&key).map(|req| req.offset) {
                        Some(o) if o == r.offset => {
                            // Records or an error: the partition fetches
                            // busy (or starts again) and leaves the session.
                            // Nothing new but a moved watermark: it waits
                            // again at once at the same offset, so it stays.
                            let stays = matches!(&r.result, Ok(f) if f.records.is_empty());
                            if !stays {
                                session.forget(&key);
                            }
                            if let Some(req) = self.requests.remove(&key) {
                                // The partition task may have stopped meanwhile.
                                let _ = req.reply.send(r.result);
                            }
                        }
                        // Waiting at another offset, which the session
                        // already wants.
                        Some(_) => {}
                        // Not waiting (busy for now, or gone): out of the
                        // session, or the broker answers it every round.
                        None => session.forget(&key),
                    }
                }
            }
            Err(e) => {
                // The broker may be gone: every waiting partition learns it
                // (and finds its leader again).
                for (key, req) in self.requests.drain() {
                    session.forget(&key);
                    let _ = req.reply.send(Err(e.clone()));
                }
            }
        }
        self.session = Some(session);
    }

    /// Drops requests whose partition task went away, at most once a
    /// second (a pass over every waiting partition).
    fn sweep(&mut self) {
        if self.swept.elapsed() < SWEEP {
            return;
        }
        self.swept = Instant::now();
        let gone: Vec<Key> = self
            .requests
            .iter()
            .filter(|(_, r)| r.reply.is_closed())
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.requests.remove(&key);
            self.change(key, None);
        }
    }

    /// A round is worth sending: something waits and no round is in flight.
    fn take_for_round(&mut self) -> Option<Box<FetchSession>> {
        if self.session.as_ref().is_some_and(|s| !s.is_empty()) {
            self.session.take()
        } else {
            None
        }
    }
}

/// How often parked requests of stopped partitions are looked for.
const SWEEP: Duration = Duration::from_secs(1);

async fn run(
    cluster: Cluster,
    opts: FetchOptions,
    idle_poll: Duration,
    mut rx: mpsc::Receiver<Request>,
    confirmed: Arc<Mutex<HashMap<i32, i64>>>,
    cancel: CancellationToken,
) {
    // Busy requests waiting for their broker's round to finish.
    let mut waiting: Vec<Request> = Vec::new();
    // Caught-up partitions, by leader.
    let mut parked: HashMap<i32, Parked> = HashMap::new();
    // One busy round in flight per broker (by cached leader; None for
    // partitions whose leader is not known yet), and one session round.
    let mut busy: HashMap<tokio::task::Id, Option<i32>> = HashMap::new();
    let mut in_session: HashMap<tokio::task::Id, i32> = HashMap::new();
    let mut rounds: JoinSet<Done> = JoinSet::new();
    // The sessions' connections, opened on first use (by a round, so a
    // slow connect never holds up the loop).
    let session_cluster: std::sync::Arc<tokio::sync::OnceCell<Cluster>> = Default::default();
    let long_poll = FetchOptions {
        max_wait: idle_poll,
        min_bytes: 1,
        ..opts.clone()
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = rx.recv() => match r {
                Some(r) => waiting.push(r),
                None => break,
            },
            Some(done) = rounds.join_next_with_id(), if !rounds.is_empty() => {
                match done {
                    Ok((id, Done::Busy)) => { busy.remove(&id); }
                    Ok((id, Done::Session { session, results })) => {
                        in_session.remove(&id);
                        let broker = session.broker();
                        let ok = results.is_ok();
                        let p = parked.entry(broker).or_insert_with(|| Parked::new(broker));
                        p.answered(session, results);
                        let mut c = lock(&confirmed);
                        if ok && !p.requests.is_empty() {
                            c.insert(broker, cutover_model::now_ms());
                        } else {
                            c.remove(&broker);
                        }
                    }
                    Err(e) => {
                        busy.remove(&e.id());
                        // A session round that panicked took its session
                        // along: start a new one.
                        if let Some(b) = in_session.remove(&e.id()) {
                            if let Some(p) = parked.get_mut(&b) {
                                p.answered(Box::new(FetchSession::new(b)), Err(KafkaError::Closed));
                            }
                        }
                    }
                }
            }
        }
        while let Ok(r) = rx.try_recv() {
            waiting.push(r);
        }
        let mut by_leader: HashMap<Option<i32>, Vec<Request>> = HashMap::new();
        for r in waiting.drain(..) {
            if r.reply.is_closed() {
                // Its partition task went away: no fetch needed.
                continue;
            }
            let leader = cluster.leader_hint(&r.topic, r.partition);
            match leader {
                Some(b) if r.idle => {
                    // A partition parked with another broker before moves.
                    let key = (r.topic.clone(), r.partition);
                    for (other, p) in parked.iter_mut() {
                        if *other != b && p.requests.remove(&key).is_some() {
                            p.change(key.clone(), None);
                        }
                    }
                    parked.entry(b).or_insert_with(|| Parked::new(b)).park(r);
                }
                _ => by_leader.entry(leader).or_default().push(r),
            }
        }
        for (leader, requests) in by_leader {
            if busy.values().any(|b| *b == leader) {
                waiting.extend(requests);
                continue;
            }
            let (cluster, opts) = (cluster.clone(), opts.clone());
            let handle = rounds.spawn(
                async move {
                    fetch_round(&cluster, &opts, requests).await;
                    Done::Busy
                }
                .instrument(tracing::Span::current()),
            );
            busy.insert(handle.id(), leader);
        }
        for p in parked.values_mut() {
            p.sweep();
            let Some(session) = p.take_for_round() else {
                continue;
            };
            let opts = long_poll.clone();
            let broker = session.broker();
            let (shared, own) = (cluster.clone(), session_cluster.clone());
            let handle = rounds.spawn(
                async move {
                    let sc = own
                        .get_or_try_init(|| Cluster::connect(shared.config().clone()))
                        .await
                        .cloned()
                        .unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "no connection of its own for the fetch session; sharing the link's");
                            shared
                        });
                    session_round(sc, session, opts).await
                }
                .instrument(tracing::Span::current()),
            );
            in_session.insert(handle.id(), broker);
        }
    }
    // Dropping the rounds fails their requests (the replies close).
    rounds.shutdown().await;
    if let Some(c) = session_cluster.get() {
        c.close().await;
    }
}

/// One long poll of a broker's session. A broker that answers at once
/// without anything new (one that ignores max_wait) waits the rest of the
/// poll here, so the loop never spins.
async fn session_round(
    cluster: Cluster,
    mut session: Box<FetchSession>,
    opts: FetchOptions,
) -> Done {
    let started = Instant::now();
    let results = cluster.fetch_in_session(&mut session, &opts).await;
    if results.as_ref().map_or(true, Vec::is_empty) {
        tokio::time::sleep_until(started + opts.max_wait).await;
    }
    Done::Session { session, results }
}

/// One multi-partition Fetch (per broker, see `Cluster::fetch_many`) and
/// the answers to the partitions that asked.
async fn fetch_round(cluster: &Cluster, opts: &FetchOptions, batch: Vec<Request>) {
    let wanted: Vec<FetchRequestPartition> = batch.iter().map(Request::wanted).collect();
    let mut results = cluster.fetch_many(&wanted, opts).await.into_iter();
    for req in batch {
        let result = match results.next() {
            Some(r) if r.topic == req.topic && r.partition == req.partition => r.result,
            _ => Err(KafkaError::Protocol(format!(
                "no fetch result for {}/{}",
                req.topic, req.partition
            ))),
        };
        // The partition task may have stopped meanwhile; nothing to do then.
        let _ = req.reply.send(result);
    }
}
