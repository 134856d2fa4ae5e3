//! The producers a partition's leader knows (DescribeProducers, KIP-664):
//! who writes to a partition, and which transaction is open on it.

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{ApiKey, DescribeProducersRequest, DescribeProducersResponse};
use tracing::{instrument, Span};

use crate::cluster::{topic_name, Cluster, Inner};
use crate::error::KafkaError;

/// A producer with state on a partition: one that wrote to it within the
/// broker's `producer.id.expiration.ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub producer_epoch: i32,
    pub last_sequence: i32,
    pub last_timestamp_ms: i64,
    /// First offset of its open transaction on the partition; -1 when none.
    pub current_txn_start_offset: i64,
}

impl Cluster {
    /// The active producers of one partition, asked of its leader.
    #[instrument(level = "debug", skip_all, fields(topic = %topic, partition, broker = tracing::field::Empty))]
    pub async fn describe_producers(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<ActiveProducer>, KafkaError> {
        let inner = &self.inner;
        inner
            .retrying("DescribeProducers", || async {
                let r = inner.describe_producers_once(topic, partition).await;
                inner.observe(topic, r)
            })
            .await
    }
}

impl Inner {
    async fn describe_producers_once(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<ActiveProducer>, KafkaError> {
        let route = self.route(topic, partition).await?;
        Span::current().record("broker", route.conn.addr());
        let version = route.conn.require(ApiKey::DescribeProducers)?;
        let mut t = TopicRequest::default();
        t.name = topic_name(topic);
        t.partition_indexes = vec![partition];
        let mut req = DescribeProducersRequest::default();
        req.topics = vec![t];
        let resp: DescribeProducersResponse = route
            .conn
            .request(
                ApiKey::DescribeProducers,
                version,
                &req,
                self.config.request_timeout,
            )
            .await?;
        let p = resp
            .topics
            .into_iter()
            .find(|t| t.name.0.as_str() == topic)
            .and_then(|t| {
                t.partitions
                    .into_iter()
                    .find(|p| p.partition_index == partition)
            })
            .ok_or_else(|| {
                KafkaError::Protocol(format!(
                    "broker {} left the requested partition out of its DescribeProducers answer",
                    route.conn.addr()
                ))
            })?;
        KafkaError::check(p.error_code, p.error_message.as_deref())?;
        Ok(p.active_producers
            .into_iter()
            .map(|s| ActiveProducer {
                producer_id: s.producer_id.0,
                producer_epoch: s.producer_epoch,
                last_sequence: s.last_sequence,
                last_timestamp_ms: s.last_timestamp,
                current_txn_start_offset: s.current_txn_start_offset,
            })
            .collect())
    }
}
