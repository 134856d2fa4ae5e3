//! Requests sent on behalf of a client (the router): typed, at the version
//! the caller chooses, to the broker the caller chooses, answered as the
//! broker answered. No retries here: the caller decides what a client sees.

use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::cluster::{unknown_topic, Cluster};
use crate::error::KafkaError;

/// Which broker a forwarded request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Any live broker (Metadata, InitProducerId without a transactional id).
    Any,
    /// A broker by node id (a partition's leader, a group's coordinator).
    Node(i32),
}

impl Cluster {
    /// The leader of a partition: from the cache, loading the topic's
    /// metadata when it is missing or marked stale.
    pub async fn leader_of(&self, topic: &str, partition: i32) -> Result<i32, KafkaError> {
        let t = self
            .inner
            .topic_metadata(topic)
            .await?
            .ok_or_else(|| unknown_topic(topic))?;
        let p = t
            .partition(partition)
            .ok_or_else(|| KafkaError::UnknownTopicOrPartition {
                topic: topic.to_owned(),
                partition,
            })?;
        if p.leader < 0 {
            return Err(KafkaError::NoLeader {
                topic: topic.to_owned(),
                partition,
            });
        }
        Ok(p.leader)
    }

    /// Forgets the cached leaders of `topic` (a broker said it does not
    /// lead a partition of it); the next lookup asks the cluster.
    pub fn mark_topic_stale(&self, topic: &str) {
        self.inner.mark_stale(topic);
    }

    /// Sends `body` as `api` v`version` to `to` and decodes the answer.
    pub async fn forward<R: Encodable, T: Decodable>(
        &self,
        to: Destination,
        api: ApiKey,
        version: i16,
        body: &R,
        timeout: Duration,
    ) -> Result<T, KafkaError> {
        let conn = self.forward_connection(to).await?;
        conn.request(api, version, body, timeout).await
    }

    /// Sends a request the broker does not answer (Produce with acks=0);
    /// returns once it is written.
    pub async fn forward_unanswered<R: Encodable>(
        &self,
        to: Destination,
        api: ApiKey,
        version: i16,
        body: &R,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let conn = self.forward_connection(to).await?;
        conn.send_unanswered(api, version, body, timeout).await
    }

    async fn forward_connection(
        &self,
        to: Destination,
    ) -> Result<std::sync::Arc<crate::conn::Connection>, KafkaError> {
        match to {
            Destination::Any => self.inner.any_connection().await,
            Destination::Node(id) => {
                let addr = match self.inner.broker_addr(id) {
                    Some(a) => a,
                    None => {
                        // A broker that joined after the last Metadata.
                        self.inner.load_metadata(Some(&[])).await?;
                        self.inner.broker_addr(id).ok_or_else(|| {
                            KafkaError::Protocol(format!(
                                "broker {id} is not in the cluster's broker list"
                            ))
                        })?
                    }
                };
                self.inner.connection(&addr).await
            }
        }
    }
}
