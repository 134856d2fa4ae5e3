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
    /// Wait in an incremental fetch session, long-polling this long
    /// (`--fetch-sessions`; experimental, see ARCHITECTURE.md).
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
        cancel: CancellationToken,
    ) -> (FetchMux, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let span = tracing::info_span!("fetch_loop", link = %link);
        let idle = match idle {
            IdleMode::Poll(d) => IdleMode::Poll(d.max(Duration::from_millis(1))),
            IdleMode::Session(d) => IdleMode::Session(d.max(Duration::from_millis(1))),
        };
        let handle = tokio::spawn(run(cluster, opts, idle.wait(), rx, cancel).instrument(span));
        let mux = FetchMux {
            tx,
            epoch: Instant::now(),
            idle,
        };
        (mux, handle)
    }

    /// Whether caught-up partitions wait in a fetch session (else they ask
    /// again at [`FetchMux::next_idle_poll`]).
    pub fn sessions(&self) -> bool {
        matches!(self.idle, IdleMode::Session(_))
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
        /// The offsets the round fetched at: an answer is only for a parked
        /// request at that offset (a partition that restarted meanwhile
        /// asks at another one and waits for the next round).
        asked: HashMap<Key, i64>,
        results: Vec<FetchResultPartition>,
    },
}

type Key = (String, i32);

async fn run(
    cluster: Cluster,
    opts: FetchOptions,
    idle_poll: Duration,
    mut rx: mpsc::Receiver<Request>,
    cancel: CancellationToken,
) {
    // Busy requests waiting for their broker's round to finish.
    let mut waiting: Vec<Request> = Vec::new();
    // Caught-up partitions, by broker, until the session answers for them.
    let mut parked: HashMap<Option<i32>, HashMap<Key, Request>> = HashMap::new();
    // Each broker's session while no round of it is in flight.
    let mut sessions: HashMap<i32, Box<FetchSession>> = HashMap::new();
    // One busy round and one session round in flight per broker (by cached
    // leader; None for partitions whose leader is not known yet).
    let mut busy: HashMap<tokio::task::Id, (bool, Option<i32>)> = HashMap::new();
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
                    Ok((id, Done::Session { session, asked, results })) => {
                        busy.remove(&id);
                        let broker = session.broker();
                        if let Some(ps) = parked.get_mut(&Some(broker)) {
                            for r in results {
                                let key = (r.topic, r.partition);
                                let same = ps
                                    .get(&key)
                                    .is_some_and(|req| asked.get(&key) == Some(&req.offset));
                                if let Some(req) = same.then(|| ps.remove(&key)).flatten() {
                                    // The partition task may have stopped meanwhile.
                                    let _ = req.reply.send(r.result);
                                }
                            }
                        }
                        sessions.insert(broker, session);
                    }
                    Err(e) => { busy.remove(&e.id()); }
                }
            }
        }
        while let Ok(r) = rx.try_recv() {
            waiting.push(r);
        }
        // Requests whose partition task went away need no fetch.
        waiting.retain(|r| !r.reply.is_closed());
        for ps in parked.values_mut() {
            ps.retain(|_, r| !r.reply.is_closed());
        }
        let mut by_leader: HashMap<Option<i32>, Vec<Request>> = HashMap::new();
        for r in waiting.drain(..) {
            let leader = cluster.leader_hint(&r.topic, r.partition);
            if r.idle && leader.is_some() {
                parked
                    .entry(leader)
                    .or_default()
                    .insert((r.topic.clone(), r.partition), r);
            } else {
                by_leader.entry(leader).or_default().push(r);
            }
        }
        for (leader, requests) in by_leader {
            if busy.values().any(|b| *b == (false, leader)) {
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
            busy.insert(handle.id(), (false, leader));
        }
        for (leader, ps) in &parked {
            let Some(broker) = *leader else { continue };
            if ps.is_empty() || busy.values().any(|b| *b == (true, *leader)) {
                continue;
            }
            let session = sessions
                .remove(&broker)
                .unwrap_or_else(|| Box::new(FetchSession::new(broker)));
            let wanted: Vec<FetchRequestPartition> = ps.values().map(Request::wanted).collect();
            let opts = long_poll.clone();
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
                    session_round(sc, session, wanted, opts).await
                }
                .instrument(tracing::Span::current()),
            );
            busy.insert(handle.id(), (true, *leader));
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
    wanted: Vec<FetchRequestPartition>,
    opts: FetchOptions,
) -> Done {
    let started = Instant::now();
    let results = match cluster.fetch_in_session(&mut session, &wanted, &opts).await {
        Ok(r) => r,
        Err(e) => wanted
            .iter()
            .map(|w| FetchResultPartition {
                topic: w.topic.clone(),
                partition: w.partition,
                result: Err(e.clone()),
            })
            .collect(),
    };
    if results.is_empty() {
        tokio::time::sleep_until(started + opts.max_wait).await;
    }
    let asked = wanted
        .into_iter()
        .map(|w| ((w.topic, w.partition), w.offset))
        .collect();
    Done::Session {
        session,
        asked,
        results,
    }
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
