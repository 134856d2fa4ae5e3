//! `cutover detach`: ends the reverse mirror of promoted topics once the
//! operator decides the source can go. Refused while a producer other than
//! the reverse mirror writes to the source (a client that was never moved
//! to a router would lose its writes' readers), with nothing changed.

use std::collections::BTreeSet;

use cutover_model::{keys, MirrorState, MirrorTopic, Side};

use crate::error::{ApiError, ApiResult};
use crate::links::connect;
use crate::promote::producers_on;
use crate::promotion::PartitionProducers;
use crate::Orchestrator;

/// The producers that wrote to the source while it was watched (from the
/// `before` listing to the `after` one) and are not the reverse mirror's
/// (`reverse`), each as `topic-partition: producer id P`. A producer
/// without an id (not idempotent) is not listed by brokers and cannot be
/// seen here.
pub fn direct_writers(
    before: &[PartitionProducers],
    after: &[PartitionProducers],
    reverse: &BTreeSet<i64>,
) -> Vec<String> {
    let mut out = Vec::new();
    for pp in after {
        let earlier = before
            .iter()
            .find(|b| b.topic == pp.topic && b.partition == pp.partition);
        for p in &pp.producers {
            if reverse.contains(&p.producer_id) {
                continue;
            }
            let wrote = earlier
                .and_then(|b| b.producers.iter().find(|q| q.producer_id == p.producer_id))
                .is_none_or(|q| {
                    (q.producer_epoch, q.last_sequence) != (p.producer_epoch, p.last_sequence)
                });
            if wrote {
                out.push(format!(
                    "{}-{}: producer id {}",
                    pp.topic, pp.partition, p.producer_id
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Orchestrator {
    /// Detaches `topics` (or all) of `link_name` once no producer but the
    /// reverse mirror wrote to their source partitions while watched for
    /// `watch`.
    pub async fn detach(
        &self,
        link_name: &str,
        topics: &[String],
        all: bool,
        watch: std::time::Duration,
    ) -> ApiResult<Vec<MirrorTopic>> {
        let link = self.get_link(link_name).await?;
        let selected = self.select(link_name, topics, all).await?;
        let mut docs = Vec::with_capacity(selected.len());
        for t in &selected {
            let Some(d) = self
                .coord
                .get::<MirrorTopic>(&keys::mirror(link_name, t))
                .await?
            else {
                return Err(ApiError::NotFound {
                    what: "mirror topic",
                    name: format!("{link_name}/{t}"),
                });
            };
            if d.value.state != MirrorState::Promoted {
                return Err(ApiError::Precondition(format!(
                    "nothing changed: {t} is {:?}; only PROMOTED topics (written on the target, \
                     copied back to the source) can be detached",
                    d.value.state
                )));
            }
            docs.push(d);
        }
        let source = connect(Side::Source.name(), &link.source, self.cfg.kafka_timeout()).await?;
        let watched = self.watch_source(link_name, &docs, &source, watch).await;
        source.close().await;
        let direct = watched?;
        if !direct.is_empty() {
            return Err(ApiError::Precondition(format!(
                "nothing changed: the source took writes from producers that are not the reverse \
                 mirror's while watched for {} ms, so clients write to it directly: {}. Point \
                 them at a router (bootstrap.servers) or stop them, then detach",
                watch.as_millis(),
                direct.join("; ")
            )));
        }
        let mut changed: Vec<MirrorTopic> = Vec::with_capacity(docs.len());
        for d in docs {
            let m = MirrorTopic {
                state: MirrorState::Detached,
                ..d.value
            };
            if !self
                .coord
                .update(&keys::mirror(link_name, &m.topic), &m, d.mod_revision)
                .await?
            {
                return Err(ApiError::Conflict(format!(
                    "mirror topic {link_name}/{} (detached: {})",
                    m.topic,
                    changed
                        .iter()
                        .map(|c| c.topic.clone())
                        .collect::<Vec<_>>()
                        .join(",")
                )));
            }
            tracing::info!(link = %link_name, topic = %m.topic, "detached: the reverse mirror ends");
            changed.push(m);
        }
        Ok(changed)
    }
}

impl Orchestrator {
    /// The writers of the topics' source partitions other than the reverse
    /// mirror, over `watch`.
    async fn watch_source(
        &self,
        link: &str,
        docs: &[cutover_coord::Versioned<MirrorTopic>],
        source: &cutover_kafka::Cluster,
        watch: std::time::Duration,
    ) -> ApiResult<Vec<String>> {
        let mut reverse = BTreeSet::new();
        let mut partitions = Vec::new();
        for d in docs {
            for p in 0..d.value.partitions {
                let writer = keys::reverse_writer(link, &d.value.topic, p);
                if let Some(w) = cutover_coord::writer_identity(&self.coord, &writer).await? {
                    reverse.insert(w.producer_id);
                }
                partitions.push((d.value.topic.clone(), p));
            }
        }
        let before = producers_on(source, Side::Source, partitions.clone()).await?;
        // The watch is the check itself, as a promotion's quiet period.
        tokio::time::sleep(watch).await;
        let after = producers_on(source, Side::Source, partitions).await?;
        Ok(direct_writers(&before, &after, &reverse))
    }
}

#[cfg(test)]
mod tests {
    use cutover_kafka::ActiveProducer;

    use super::*;

    fn producer(id: i64, at: i64) -> ActiveProducer {
        ActiveProducer {
            producer_id: id,
            producer_epoch: 0,
            last_sequence: 3,
            last_timestamp_ms: at,
            current_txn_start_offset: -1,
        }
    }

    fn on(producers: Vec<ActiveProducer>) -> PartitionProducers {
        PartitionProducers {
            topic: "t".into(),
            partition: 0,
            producers,
        }
    }

    #[test]
    fn producers_that_wrote_while_watched_other_than_the_reverse_mirror_are_direct() {
        let mut moved = producer(8, 1);
        moved.last_sequence = 9;
        let before = [on(vec![producer(7, 1), producer(8, 1), producer(9, 1)])];
        // 7 is still (it wrote before, through a router); 8 wrote; 9 is
        // the reverse mirror; 10 appeared.
        let mut reverse_moved = producer(9, 1);
        reverse_moved.last_sequence = 50;
        let after = [on(vec![
            producer(7, 1),
            moved,
            reverse_moved,
            producer(10, 2),
        ])];
        assert_eq!(
            direct_writers(&before, &after, &BTreeSet::from([9])),
            ["t-0: producer id 10", "t-0: producer id 8"]
        );
        assert!(direct_writers(&after, &after, &BTreeSet::from([9])).is_empty());
    }
}
