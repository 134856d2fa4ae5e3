//! One fetch loop per link: the outstanding fetches of all partitions go to
//! the source in one multi-partition Fetch per broker, as Kafka consumers do.
//!
//! A broker answers the requests of a connection strictly in order, so
//! per-partition Fetch requests on a shared connection would queue every
//! partition behind the long polls of the caught-up ones. One Fetch for all
//! of them returns as soon as any partition has data. Each source broker
//! has its own round in flight, so a slow or unreachable broker holds back
//! only the partitions it leads.

use std::collections::HashMap;
use std::time::Duration;

use cutover_kafka::{Cluster, FetchOptions, FetchRequestPartition, FetchedPartition, KafkaError};

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

struct Request {
    topic: String,
    partition: i32,
    offset: i64,
    reply: oneshot::Sender<Result<FetchedPartition, KafkaError>>,
}

/// Handle used by partition tasks; cheap to clone.
#[derive(Clone)]
pub struct FetchMux {
    tx: mpsc::Sender<Request>,
    /// Idle partitions ask again on a grid of `idle_poll` steps from here.
    epoch: Instant,
    idle_poll: Duration,
}

/// Each partition has at most one fetch outstanding, so this bounds memory
/// at the number of partitions a fetcher runs, not at traffic.
const QUEUE: usize = 4096;

impl FetchMux {
    /// Starts the loop for `cluster`; it stops when `cancel` fires.
    pub fn start(
        cluster: Cluster,
        opts: FetchOptions,
        idle_poll: Duration,
        link: &str,
        cancel: CancellationToken,
    ) -> (FetchMux, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let span = tracing::info_span!("fetch_loop", link = %link);
        let handle = tokio::spawn(run(cluster, opts, rx, cancel).instrument(span));
        let mux = FetchMux {
            tx,
            epoch: Instant::now(),
            idle_poll: idle_poll.max(Duration::from_millis(1)),
        };
        (mux, handle)
    }

    /// When a partition that had nothing new asks again. Every idle
    /// partition of the link wakes at the same grid point, so their fetches
    /// go out together in one request instead of one each, and a caught-up
    /// partition costs one entry of a Fetch per `idle_poll` (see
    /// `just bench-fetcher`'s idle figure).
    pub fn next_idle_poll(&self) -> Instant {
        let step = self.idle_poll.as_nanos().max(1);
        let steps = self.epoch.elapsed().as_nanos() / step + 1;
        let offset = u64::try_from(steps.saturating_mul(step)).unwrap_or(u64::MAX);
        self.epoch + Duration::from_nanos(offset)
    }

    /// Fetches one partition at `offset` (batched with the other partitions' fetches).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<FetchedPartition, KafkaError> {
        let (reply, rx) = oneshot::channel();
        let req = Request {
            topic: topic.to_string(),
            partition,
            offset,
            reply,
        };
        self.tx.send(req).await.map_err(|_| KafkaError::Closed)?;
        rx.await.map_err(|_| KafkaError::Closed)?
    }
}

async fn run(
    cluster: Cluster,
    opts: FetchOptions,
    mut rx: mpsc::Receiver<Request>,
    cancel: CancellationToken,
) {
    // Requests waiting for their broker's round to finish.
    let mut waiting: Vec<Request> = Vec::new();
    // One round in flight per source broker (by cached leader; None for
    // partitions whose leader is not known yet): a slow or unreachable
    // broker delays only its own partitions, and the requests that queue up
    // meanwhile go out together in its next round.
    let mut busy: HashMap<tokio::task::Id, Option<i32>> = HashMap::new();
    let mut rounds: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = rx.recv() => match r {
                Some(r) => waiting.push(r),
                None => break,
            },
            Some(done) = rounds.join_next_with_id(), if !rounds.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                busy.remove(&id);
            }
        }
        while let Ok(r) = rx.try_recv() {
            waiting.push(r);
        }
        // Requests whose partition task went away need no fetch.
        waiting.retain(|r| !r.reply.is_closed());
        let mut by_leader: HashMap<Option<i32>, Vec<Request>> = HashMap::new();
        for r in waiting.drain(..) {
            by_leader
                .entry(cluster.leader_hint(&r.topic, r.partition))
                .or_default()
                .push(r);
        }
        for (leader, requests) in by_leader {
            if busy.values().any(|b| *b == leader) {
                waiting.extend(requests);
                continue;
            }
            let (cluster, opts) = (cluster.clone(), opts.clone());
            let handle = rounds.spawn(
                async move { fetch_round(&cluster, &opts, requests).await }
                    .instrument(tracing::Span::current()),
            );
            busy.insert(handle.id(), leader);
        }
    }
    // Dropping the rounds fails their requests (the replies close).
    rounds.shutdown().await;
}

/// One multi-partition Fetch (per broker, see `Cluster::fetch_many`) and
/// the answers to the partitions that asked.
async fn fetch_round(cluster: &Cluster, opts: &FetchOptions, batch: Vec<Request>) {
    let wanted: Vec<FetchRequestPartition> = batch
        .iter()
        .map(|r| FetchRequestPartition {
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
        })
        .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mux(idle_poll: Duration) -> FetchMux {
        let (tx, _rx) = mpsc::channel(1);
        FetchMux {
            tx,
            epoch: Instant::now(),
            idle_poll,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_partitions_wake_together_on_the_next_grid_point() {
        let m = mux(Duration::from_millis(50));
        let epoch = m.epoch;
        tokio::time::advance(Duration::from_millis(20)).await;
        let a = m.next_idle_poll();
        tokio::time::advance(Duration::from_millis(17)).await;
        let b = m.next_idle_poll();
        // Two partitions that went idle 17 ms apart ask again at the same moment.
        assert_eq!(a, b);
        assert_eq!(a - epoch, Duration::from_millis(50));
        // Exactly on a grid point: the next one, never now (no busy loop).
        tokio::time::advance(Duration::from_millis(13)).await;
        assert_eq!(m.next_idle_poll() - epoch, Duration::from_millis(100));
    }
}
