//! Offset lookups of one cluster, shared by the partitions of a link: the
//! lookups queued at the same moment go out as one ListOffsets per topic
//! (and broker) instead of one request each.
//!
//! A broker handles the requests of a connection one at a time, so when a
//! fetcher takes over thousands of partitions at once, thousands of
//! single-partition lookups would queue behind each other on the few
//! connections a cluster has; batched, they take a few round trips.

use std::collections::HashMap;

use cutover_kafka::{Cluster, KafkaError, OffsetSpec};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::batching::next_batch;

struct Lookup {
    topic: String,
    partition: i32,
    spec: OffsetSpec,
    reply: oneshot::Sender<Result<i64, KafkaError>>,
}

/// Each partition has at most a few lookups outstanding, so this bounds
/// memory at the partitions a fetcher runs.
const QUEUE: usize = 4096;

/// Handle used by partition tasks; cheap to clone.
#[derive(Clone)]
pub struct OffsetLookups {
    tx: mpsc::Sender<Lookup>,
}

impl OffsetLookups {
    /// Starts the lookup loop of `cluster`; it stops when `cancel` fires.
    pub fn start(cluster: Cluster, cancel: CancellationToken) -> (OffsetLookups, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let span = tracing::Span::current();
        let handle = tokio::spawn(run(cluster, rx, cancel).instrument(span));
        (OffsetLookups { tx }, handle)
    }

    /// The offset `spec` of one partition, looked up together with the
    /// other lookups queued meanwhile.
    pub async fn get(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> Result<i64, KafkaError> {
        let (reply, rx) = oneshot::channel();
        let lookup = Lookup {
            topic: topic.to_owned(),
            partition,
            spec,
            reply,
        };
        self.tx.send(lookup).await.map_err(|_| KafkaError::Closed)?;
        rx.await.map_err(|_| KafkaError::Closed)?
    }
}

async fn run(cluster: Cluster, mut rx: mpsc::Receiver<Lookup>, cancel: CancellationToken) {
    let mut rounds: JoinSet<()> = JoinSet::new();
    while let Some(batch) = next_batch(&mut rx, &mut rounds, &cancel, usize::MAX).await {
        let mut groups: Vec<(String, OffsetSpec, Vec<Lookup>)> = Vec::new();
        for l in batch {
            match groups
                .iter_mut()
                .find(|(t, s, _)| *t == l.topic && *s == l.spec)
            {
                Some((_, _, ls)) => ls.push(l),
                None => groups.push((l.topic.clone(), l.spec, vec![l])),
            }
        }
        for (topic, spec, lookups) in groups {
            let cluster = cluster.clone();
            rounds.spawn(
                async move {
                    let partitions: Vec<i32> = lookups.iter().map(|l| l.partition).collect();
                    match cluster.list_offsets(&topic, &partitions, spec).await {
                        Ok(found) => {
                            let found: HashMap<i32, Result<i64, KafkaError>> =
                                found.into_iter().collect();
                            for l in lookups {
                                let result =
                                    found.get(&l.partition).cloned().unwrap_or_else(|| {
                                        Err(KafkaError::Protocol(format!(
                                            "no ListOffsets answer for {topic}/{}",
                                            l.partition
                                        )))
                                    });
                                // The partition task may have stopped meanwhile.
                                let _ = l.reply.send(result);
                            }
                        }
                        Err(e) => {
                            for l in lookups {
                                let _ = l.reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
                .instrument(tracing::Span::current()),
            );
        }
    }
    // Dropping the rounds fails their lookups (the replies close).
    rounds.shutdown().await;
}
