//! The transactions a cluster has open: ListTransactions asked of every
//! broker (each lists those it coordinates), then DescribeTransactions of
//! the open ones at the same broker, for the partitions they span.
//! A promotion waits for these to end on the set before it switches.

use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
    ListTransactionsResponse, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use tracing::instrument;

use crate::cluster::{Cluster, Inner};
use crate::error::{codes, KafkaError};

/// The states in which a transaction may still write (or its markers are
/// still to come).
const OPEN_STATES: [&str; 3] = ["Ongoing", "PrepareCommit", "PrepareAbort"];

/// The topic holding group offsets, whose partition of a group is where
/// its transactional offset commits go.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// One transaction open on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTransaction {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: String,
    /// When it started (ms since the epoch), -1 if not known.
    pub started_ms: i64,
    /// The partitions it spans, sorted.
    pub partitions: Vec<(String, i32)>,
}

/// The partition of [`OFFSETS_TOPIC`] that holds `group`'s offsets when
/// the topic has `partitions` partitions: Kafka's choice, the absolute
/// value of the Java string hash of the group id modulo the count.
pub fn offsets_partition_of(group: &str, partitions: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    // Kafka's Utils.abs: the minimum maps to 0.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    if partitions <= 0 {
        return 0;
    }
    abs % partitions
}

fn worth_retrying(e: &KafkaError) -> bool {
    e.needs_metadata_refresh()
        || matches!(
            e.code(),
            Some(codes::COORDINATOR_LOAD_IN_PROGRESS | codes::COORDINATOR_NOT_AVAILABLE)
        )
}

impl Cluster {
    /// Every transaction open on the cluster now. One broker that cannot
    /// answer fails the whole list, which would otherwise look complete.
    #[instrument(level = "debug", skip_all)]
    pub async fn open_transactions(&self) -> Result<Vec<OpenTransaction>, KafkaError> {
        let inner = &self.inner;
        inner
            .retrying_if("ListTransactions", worth_retrying, || {
                inner.open_transactions_once(self)
            })
            .await
    }

    /// The partition of [`OFFSETS_TOPIC`] holding `group`'s offsets. Its
    /// partition count never changes once created, so cached metadata
    /// answers (no request per group and per check).
    pub async fn offsets_partition(&self, group: &str) -> Result<i32, KafkaError> {
        let topic = self
            .inner
            .topic_metadata(OFFSETS_TOPIC)
            .await?
            .ok_or_else(|| {
                KafkaError::Protocol(format!("the cluster has no {OFFSETS_TOPIC} topic yet"))
            })?;
        Ok(offsets_partition_of(group, topic.partitions.len() as i32))
    }
}

impl Inner {
    async fn open_transactions_once(
        &self,
        cluster: &Cluster,
    ) -> Result<Vec<OpenTransaction>, KafkaError> {
        let meta = cluster.metadata(Some(&[])).await?;
        let mut out = Vec::new();
        for b in &meta.brokers {
            let conn = self.connection(&b.addr()).await?;
            let version = conn.require(ApiKey::ListTransactions)?;
            let mut list = ListTransactionsRequest::default();
            list.state_filters = OPEN_STATES
                .iter()
                .map(|s| StrBytes::from_static_str(s))
                .collect();
            let listed: ListTransactionsResponse = conn
                .request(
                    ApiKey::ListTransactions,
                    version,
                    &list,
                    self.config.request_timeout,
                )
                .await?;
            KafkaError::check(listed.error_code, None)?;
            if listed.transaction_states.is_empty() {
                continue;
            }
            let version = conn.require(ApiKey::DescribeTransactions)?;
            let mut describe = DescribeTransactionsRequest::default();
            describe.transactional_ids = listed
                .transaction_states
                .iter()
                .map(|t| TransactionalId(t.transactional_id.0.clone()))
                .collect();
            let described: DescribeTransactionsResponse = conn
                .request(
                    ApiKey::DescribeTransactions,
                    version,
                    &describe,
                    self.config.request_timeout,
                )
                .await?;
            for t in described.transaction_states {
                match t.error_code {
                    0 => {}
                    // Ended and expired between the two requests.
                    codes::TRANSACTIONAL_ID_NOT_FOUND => continue,
                    code => return Err(KafkaError::from_code(code, None)),
                }
                if !OPEN_STATES.contains(&t.transaction_state.as_str()) {
                    continue;
                }
                let mut partitions: Vec<(String, i32)> = t
                    .topics
                    .iter()
                    .flat_map(|tp| {
                        tp.partitions
                            .iter()
                            .map(move |p| (tp.topic.to_string(), *p))
                    })
                    .collect();
                partitions.sort();
                out.push(OpenTransaction {
                    transactional_id: t.transactional_id.to_string(),
                    producer_id: t.producer_id.0,
                    producer_epoch: t.producer_epoch,
                    state: t.transaction_state.to_string(),
                    started_ms: t.transaction_start_time_ms,
                    partitions,
                });
            }
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_offsets_partition_is_kafkas() {
        // Java (jshell): "my-group".hashCode() == -1906497762,
        // "é-grüppe".hashCode() == -1897389896.
        assert_eq!(offsets_partition_of("my-group", 50), 1906497762 % 50);
        assert_eq!(offsets_partition_of("é-grüppe", 50), 1897389896 % 50);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE: Kafka's
        // Utils.abs maps it to 0.
        assert_eq!(offsets_partition_of("polygenelubricants", 50), 0);
        for g in ["group-b", "zzzzzzzz", "é-grüppe", ""] {
            let p = offsets_partition_of(g, 50);
            assert!((0..50).contains(&p), "{g}: {p}");
        }
        assert_eq!(offsets_partition_of("x", 0), 0);
    }
}
