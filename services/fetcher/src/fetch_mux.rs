//! One fetch loop per link: the outstanding fetches of all partitions go to
//! the source in one multi-partition Fetch per broker, as Kafka consumers do.
//!
//! A broker answers the requests of a connection strictly in order, so
//! per-partition Fetch requests on a shared connection would queue every
//! partition behind the long polls of the caught-up ones. One Fetch for all
//! of them returns as soon as any partition has data.

use cutover_kafka::{Cluster, FetchOptions, FetchRequestPartition, FetchedPartition, KafkaError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
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
}

/// Each partition has at most one fetch outstanding, so this bounds memory
/// at the number of partitions a fetcher runs, not at traffic.
const QUEUE: usize = 4096;

impl FetchMux {
    /// Starts the loop for `cluster`; it stops when `cancel` fires.
    pub fn start(
        cluster: Cluster,
        opts: FetchOptions,
        link: &str,
        cancel: CancellationToken,
    ) -> (FetchMux, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let span = tracing::info_span!("fetch_loop", link = %link);
        let handle = tokio::spawn(run(cluster, opts, rx, cancel).instrument(span));
        (FetchMux { tx }, handle)
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
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        let mut batch = vec![first];
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
        }
        // Requests whose partition task went away need no fetch.
        batch.retain(|r| !r.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let wanted: Vec<FetchRequestPartition> = batch
            .iter()
            .map(|r| FetchRequestPartition {
                topic: r.topic.clone(),
                partition: r.partition,
                offset: r.offset,
            })
            .collect();
        let results = tokio::select! {
            _ = cancel.cancelled() => return,
            r = cluster.fetch_many(&wanted, &opts) => r,
        };
        let mut results = results.into_iter();
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
}
