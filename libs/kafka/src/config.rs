//! Client configuration.

use std::time::Duration;

use cutover_retry::Policy;

use crate::error::KafkaError;
use crate::security::Security;

/// How to reach a cluster and how patient to be with it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `host:port` addresses tried in order until one answers.
    pub bootstrap: Vec<String>,
    /// Sent in every request header; shows up in broker logs and quotas.
    pub client_id: String,
    /// How long to wait for any response (Fetch adds its `max_wait`,
    /// Produce adds its own timeout on top).
    pub request_timeout: Duration,
    /// How long to wait for a TCP connection to open.
    pub connect_timeout: Duration,
    /// How often an idempotent request (metadata, fetch, list offsets,
    /// admin) is retried after an error that calls for a metadata refresh
    /// (leader moved, connection lost). Produce is never retried here: the
    /// caller owns sequence numbers and ordering.
    pub retries: u32,
    /// First delay between such retries; doubles each time, with jitter
    /// (`cutover_retry::Policy`).
    pub retry_backoff: Duration,
    /// Upper bound of the retry delay.
    pub retry_backoff_max: Duration,
    /// First delay before reconnecting to a broker that failed; doubles on
    /// each consecutive failure, with jitter.
    pub reconnect_backoff: Duration,
    /// Upper bound of the reconnect delay.
    pub reconnect_backoff_max: Duration,
    /// Requests waiting to be written on one connection; senders wait when
    /// it is full.
    pub request_queue_capacity: usize,
    /// Requests written but not yet answered on one connection; the writer
    /// waits when it is reached.
    pub max_in_flight_per_connection: usize,
    /// Largest response frame accepted; a bigger length prefix is treated as
    /// a protocol error (it usually means the peer is not Kafka).
    pub max_response_bytes: usize,
    /// TLS and SASL (`security.protocol` and the rest); plaintext by default.
    pub security: Security,
}

impl ClusterConfig {
    /// Defaults for everything but the bootstrap list. Each item may itself
    /// be a comma-separated list, so `bootstrap.servers` strings work as is.
    pub fn new<I, S>(bootstrap: I) -> ClusterConfig
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let bootstrap = bootstrap
            .into_iter()
            .flat_map(|s| {
                s.as_ref()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        ClusterConfig {
            bootstrap,
            ..ClusterConfig::default()
        }
    }
}

impl ClusterConfig {
    /// [`ClusterConfig::new`] with the security of a link's cluster
    /// properties (Kafka's names, see [`Security::from_properties`]).
    pub fn with_properties<I, S>(
        bootstrap: I,
        properties: &std::collections::BTreeMap<String, String>,
    ) -> Result<ClusterConfig, KafkaError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut c = ClusterConfig::new(bootstrap);
        c.security = Security::from_properties(properties).map_err(|e| KafkaError::Security {
            broker: c.bootstrap.join(","),
            source: std::sync::Arc::new(e.into()),
        })?;
        Ok(c)
    }
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            bootstrap: Vec::new(),
            client_id: "cutover".to_owned(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retries: 3,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(2),
            reconnect_backoff: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(5),
            request_queue_capacity: 256,
            max_in_flight_per_connection: 256,
            max_response_bytes: 256 * 1024 * 1024,
            security: Security::default(),
        }
    }
}

impl ClusterConfig {
    /// Delays between retries of an idempotent request.
    pub(crate) fn retry_policy(&self) -> Policy {
        Policy::new(self.retry_backoff, self.retry_backoff_max)
    }

    /// Delays before reconnecting to a broker that failed.
    pub(crate) fn reconnect_policy(&self) -> Policy {
        Policy::new(self.reconnect_backoff, self.reconnect_backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_splits_comma_lists() {
        let c = ClusterConfig::new(["a:1, b:2", "c:3"]);
        assert_eq!(c.bootstrap, vec!["a:1", "b:2", "c:3"]);
        let c = ClusterConfig::new(vec!["x:9".to_string()]);
        assert_eq!(c.bootstrap, vec!["x:9"]);
    }
}
