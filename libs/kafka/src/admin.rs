//! Admin operations: topics, partitions, configs.

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{instrument, Span};

use crate::cluster::{millis, topic_name, Cluster, Inner};
use crate::error::{codes, KafkaError};
use crate::types::{config_source, ConfigEntry, NewTopic, TopicResults};

/// ConfigResource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operation SET.
const OP_SET: i8 = 0;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

impl Cluster {
    /// Creates topics (on the controller). The outer error is for the whole
    /// request (e.g. CreateTopics unsupported); each topic has its own
    /// result, in input order. TOPIC_ALREADY_EXISTS (36) is an error like
    /// any other; callers decide whether it is fine.
    #[instrument(level = "info", skip_all, fields(topics = ?topics.iter().map(|t| &t.name).collect::<Vec<_>>(), validate_only, broker = tracing::field::Empty))]
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<TopicResults, KafkaError> {
        let inner = &self.inner;
        let results = inner
            .retrying("CreateTopics", || {
                inner.create_topics_once(topics, validate_only)
            })
            .await?;
        for t in topics {
            inner.mark_stale(&t.name);
        }
        Ok(results)
    }

    /// Grows a topic to `total` partitions (on the controller).
    #[instrument(level = "info", skip_all, fields(topic = %topic, total, broker = tracing::field::Empty))]
    pub async fn create_partitions(&self, topic: &str, total: i32) -> Result<(), KafkaError> {
        let inner = &self.inner;
        inner
            .retrying("CreatePartitions", || {
                inner.create_partitions_once(topic, total)
            })
            .await?;
        inner.mark_stale(topic);
        Ok(())
    }

    /// All configs of a topic, including defaults (see
    /// [`ConfigEntry::is_default`]).
    #[instrument(level = "debug", skip_all, fields(topic = %topic, broker = tracing::field::Empty))]
    pub async fn describe_topic_configs(
        &self,
        topic: &str,
    ) -> Result<Vec<ConfigEntry>, KafkaError> {
        let inner = &self.inner;
        inner
            .retrying("DescribeConfigs", || {
                inner.describe_topic_configs_once(topic)
            })
            .await
    }

    /// Sets topic configs with IncrementalAlterConfigs (other configs of the
    /// topic are left alone).
    #[instrument(level = "info", skip_all, fields(topic = %topic, configs = ?set, broker = tracing::field::Empty))]
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        set: &[(String, String)],
    ) -> Result<(), KafkaError> {
        let inner = &self.inner;
        inner
            .retrying("IncrementalAlterConfigs", || {
                inner.alter_topic_configs_once(topic, set)
            })
            .await
    }
}

impl Inner {
    /// The controller's connection, checked to support `api` so that
    /// brokers (like librdkafka's mock) which drop the connection on
    /// unknown APIs never see one.
    async fn admin_connection(
        &self,
        api: ApiKey,
        controller: bool,
    ) -> Result<(std::sync::Arc<crate::conn::Connection>, i16), KafkaError> {
        let conn = if controller {
            self.controller_connection().await?
        } else {
            self.any_connection().await?
        };
        Span::current().record("broker", conn.addr());
        let version = conn.require(api)?;
        Ok((conn, version))
    }

    /// Turns a NOT_CONTROLLER answer into a retriable error after noting
    /// that the controller must be looked up again.
    fn controller_moved(&self, code: i16) -> Result<(), KafkaError> {
        if code == codes::NOT_CONTROLLER {
            self.mark_controller_stale();
            return Err(KafkaError::from_code(code, None));
        }
        Ok(())
    }

    async fn create_topics_once(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<TopicResults, KafkaError> {
        let (conn, version) = self.admin_connection(ApiKey::CreateTopics, true).await?;
        let mut req = CreateTopicsRequest::default();
        req.topics = topics
            .iter()
            .map(|t| {
                let mut ct = CreatableTopic::default();
                ct.name = topic_name(&t.name);
                ct.num_partitions = t.partitions;
                ct.replication_factor = t.replication_factor;
                ct.configs = t
                    .configs
                    .iter()
                    .map(|(k, v)| {
                        let mut c = CreatableTopicConfig::default();
                        c.name = s(k);
                        c.value = Some(s(v));
                        c
                    })
                    .collect();
                ct
            })
            .collect();
        req.timeout_ms = millis(self.config.request_timeout);
        req.validate_only = validate_only;
        let resp: CreateTopicsResponse = conn
            .request(
                ApiKey::CreateTopics,
                version,
                &req,
                self.config.request_timeout,
            )
            .await
            .inspect_err(|e| {
                if e.needs_metadata_refresh() {
                    self.mark_controller_stale();
                }
            })?;
        for r in &resp.topics {
            self.controller_moved(r.error_code)?;
        }
        Ok(topics
            .iter()
            .map(|t| {
                let r = match resp.topics.iter().find(|r| r.name.0.as_str() == t.name) {
                    Some(r) => KafkaError::check(r.error_code, r.error_message.as_deref()),
                    None => Err(KafkaError::Protocol(format!(
                        "CreateTopics response from {} lacks topic {}",
                        conn.addr(),
                        t.name
                    ))),
                };
                (t.name.clone(), r)
            })
            .collect())
    }

    async fn create_partitions_once(&self, topic: &str, total: i32) -> Result<(), KafkaError> {
        let (conn, version) = self
            .admin_connection(ApiKey::CreatePartitions, true)
            .await?;
        let mut t = CreatePartitionsTopic::default();
        t.name = topic_name(topic);
        t.count = total;
        t.assignments = None;
        let mut req = CreatePartitionsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = millis(self.config.request_timeout);
        req.validate_only = false;
        let resp: CreatePartitionsResponse = conn
            .request(
                ApiKey::CreatePartitions,
                version,
                &req,
                self.config.request_timeout,
            )
            .await
            .inspect_err(|e| {
                if e.needs_metadata_refresh() {
                    self.mark_controller_stale();
                }
            })?;
        let r = resp
            .results
            .iter()
            .find(|r| r.name.0.as_str() == topic)
            .ok_or_else(|| {
                KafkaError::Protocol(format!(
                    "CreatePartitions response from {} lacks topic {topic}",
                    conn.addr()
                ))
            })?;
        self.controller_moved(r.error_code)?;
        KafkaError::check(r.error_code, r.error_message.as_deref())
    }

    async fn describe_topic_configs_once(
        &self,
        topic: &str,
    ) -> Result<Vec<ConfigEntry>, KafkaError> {
        let (conn, version) = self
            .admin_connection(ApiKey::DescribeConfigs, false)
            .await?;
        let mut res = DescribeConfigsResource::default();
        res.resource_type = RESOURCE_TOPIC;
        res.resource_name = s(topic);
        res.configuration_keys = None;
        let mut req = DescribeConfigsRequest::default();
        req.resources = vec![res];
        req.include_synonyms = false;
        let resp: DescribeConfigsResponse = conn
            .request(
                ApiKey::DescribeConfigs,
                version,
                &req,
                self.config.request_timeout,
            )
            .await?;
        let r = resp
            .results
            .into_iter()
            .find(|r| r.resource_type == RESOURCE_TOPIC && r.resource_name.as_str() == topic)
            .ok_or_else(|| {
                KafkaError::Protocol(format!(
                    "DescribeConfigs response from {} lacks topic {topic}",
                    conn.addr()
                ))
            })?;
        KafkaError::check(r.error_code, r.error_message.as_deref())?;
        Ok(r.configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                is_default: c.config_source != config_source::DYNAMIC_TOPIC_CONFIG,
                read_only: c.read_only,
                sensitive: c.is_sensitive,
                source: c.config_source,
            })
            .collect())
    }

    async fn alter_topic_configs_once(
        &self,
        topic: &str,
        set: &[(String, String)],
    ) -> Result<(), KafkaError> {
        let (conn, version) = self
            .admin_connection(ApiKey::IncrementalAlterConfigs, false)
            .await?;
        let mut res = AlterConfigsResource::default();
        res.resource_type = RESOURCE_TOPIC;
        res.resource_name = s(topic);
        res.configs = set
            .iter()
            .map(|(k, v)| {
                let mut c = AlterableConfig::default();
                c.name = s(k);
                c.config_operation = OP_SET;
                c.value = Some(s(v));
                c
            })
            .collect();
        let mut req = IncrementalAlterConfigsRequest::default();
        req.resources = vec![res];
        req.validate_only = false;
        let resp: IncrementalAlterConfigsResponse = conn
            .request(
                ApiKey::IncrementalAlterConfigs,
                version,
                &req,
                self.config.request_timeout,
            )
            .await?;
        let r = resp
            .responses
            .iter()
            .find(|r| r.resource_type == RESOURCE_TOPIC && r.resource_name.as_str() == topic)
            .ok_or_else(|| {
                KafkaError::Protocol(format!(
                    "IncrementalAlterConfigs response from {} lacks topic {topic}",
                    conn.addr()
                ))
            })?;
        KafkaError::check(r.error_code, r.error_message.as_deref())
    }
}
