//! Admin operations on real brokers through librdkafka's admin client, so
//! tests set up and check clusters with a client that shares no code with
//! Cutover's own Kafka library.
//!
//! Every call blocks (bounded by [`ADMIN_TIMEOUT`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use futures::executor::block_on;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::{Offset, TopicPartitionList};

/// Deadline of one admin call.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A librdkafka admin client of one cluster.
pub struct Admin {
    client: AdminClient<DefaultClientContext>,
    bootstrap: String,
}

impl Admin {
    pub fn new(bootstrap: &str) -> Result<Admin> {
        let client = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("log_level", "3")
            .create()
            .with_context(|| format!("admin client for {bootstrap}"))?;
        Ok(Admin {
            client,
            bootstrap: bootstrap.to_owned(),
        })
    }

    fn options() -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(ADMIN_TIMEOUT))
            .operation_timeout(Some(ADMIN_TIMEOUT))
    }

    /// CreateTopics with replication factor `rf` (-1: the broker default)
    /// and topic configs; waits until the topic's partitions have leaders.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        rf: i32,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(rf));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let results = block_on(self.client.create_topics([&topic], &Self::options()))
            .with_context(|| format!("CreateTopics {name} at {}", self.bootstrap))?;
        for r in results {
            r.map_err(|(t, e)| anyhow!("creating topic {t} at {}: {e}", self.bootstrap))?;
        }
        self.wait_leaders(name, partitions)
    }

    /// Waits until Metadata shows `partitions` partitions of `topic`, each
    /// with a leader (CreateTopics answers before leaders are elected).
    pub fn wait_leaders(&self, topic: &str, partitions: i32) -> Result<()> {
        let deadline = std::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            let md = self
                .client
                .inner()
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .with_context(|| format!("metadata of {topic}"))?;
            let ready = md.topics().iter().any(|t| {
                t.name() == topic
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!("{topic} has no leader for each of {partitions} partitions after {ADMIN_TIMEOUT:?}");
            }
            // Leader election has no event a client can await: poll.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// DeleteTopics, then waits until Metadata no longer lists the topic.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let results = block_on(self.client.delete_topics(&[name], &Self::options()))
            .with_context(|| format!("DeleteTopics {name}"))?;
        for r in results {
            r.map_err(|(t, e)| anyhow!("deleting topic {t}: {e}"))?;
        }
        let deadline = std::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            let md = self
                .client
                .inner()
                .fetch_metadata(None, Duration::from_secs(5))
                .context("metadata")?;
            if !md.topics().iter().any(|t| t.name() == name) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!("{name} still listed {ADMIN_TIMEOUT:?} after DeleteTopics");
            }
            // Deletion has no event a client can await: poll.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CreatePartitions: grows `topic` to `total` partitions.
    pub fn create_partitions(&self, topic: &str, total: usize) -> Result<()> {
        let np = NewPartitions::new(topic, total);
        let results = block_on(self.client.create_partitions([&np], &Self::options()))
            .with_context(|| format!("CreatePartitions {topic}"))?;
        for r in results {
            r.map_err(|(t, e)| anyhow!("growing {t} to {total} partitions: {e}"))?;
        }
        self.wait_leaders(topic, total as i32)
    }

    /// DeleteRecords below `offset` (-1: up to the high watermark); returns
    /// the new log start offset.
    pub fn delete_records(&self, topic: &str, partition: i32, offset: i64) -> Result<i64> {
        let mut tpl = TopicPartitionList::new();
        let at = if offset < 0 {
            Offset::End
        } else {
            Offset::Offset(offset)
        };
        tpl.add_partition_offset(topic, partition, at)
            .context("building DeleteRecords list")?;
        let result = block_on(self.client.delete_records(&tpl, &Self::options()))
            .with_context(|| format!("DeleteRecords {topic}/{partition} below {offset}"))?;
        let elem = result
            .find_partition(topic, partition)
            .ok_or_else(|| anyhow!("DeleteRecords answered without {topic}/{partition}"))?;
        elem.error()
            .map_err(|e| anyhow!("DeleteRecords {topic}/{partition} below {offset}: {e}"))?;
        match elem.offset() {
            Offset::Offset(o) => Ok(o),
            other => bail!("DeleteRecords {topic}/{partition}: low watermark {other:?}"),
        }
    }

    /// DescribeConfigs of a topic: every config with a value.
    pub fn topic_configs(&self, topic: &str) -> Result<BTreeMap<String, String>> {
        let spec = ResourceSpecifier::Topic(topic);
        let results = block_on(self.client.describe_configs([&spec], &Self::options()))
            .with_context(|| format!("DescribeConfigs {topic}"))?;
        let resource = results
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("DescribeConfigs {topic}: empty answer"))?
            .map_err(|e| anyhow!("DescribeConfigs {topic}: {e}"))?;
        Ok(resource
            .entries
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect())
    }

    /// Sets topic configs. librdkafka's AlterConfigs replaces the topic's
    /// whole set of dynamic configs, so this reads them first and sends them
    /// back with the changes: other settings stay as they were.
    pub fn set_topic_configs(&self, topic: &str, changes: &[(&str, &str)]) -> Result<()> {
        let spec = ResourceSpecifier::Topic(topic);
        let current = block_on(self.client.describe_configs([&spec], &Self::options()))
            .with_context(|| format!("DescribeConfigs {topic}"))?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("DescribeConfigs {topic}: empty answer"))?
            .map_err(|e| anyhow!("DescribeConfigs {topic}: {e}"))?;
        let mut set: BTreeMap<String, String> = current
            .entries
            .into_iter()
            .filter(|e| e.source == rdkafka::admin::ConfigSource::DynamicTopic)
            .filter_map(|e| Some((e.name, e.value?)))
            .collect();
        for (k, v) in changes {
            set.insert((*k).to_owned(), (*v).to_owned());
        }
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (k, v) in &set {
            alter = alter.set(k, v);
        }
        let results = block_on(self.client.alter_configs([&alter], &Self::options()))
            .with_context(|| format!("AlterConfigs {topic}"))?;
        for r in results {
            r.map_err(|(_, e)| anyhow!("altering configs of {topic}: {e}"))?;
        }
        Ok(())
    }

    /// Partition count of a topic (Metadata).
    pub fn partitions(&self, topic: &str) -> Result<i32> {
        let md = self
            .client
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("metadata of {topic}"))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| anyhow!("{topic} missing from metadata"))?;
        if let Some(e) = t.error() {
            bail!("{topic}: {e:?}");
        }
        Ok(t.partitions().len() as i32)
    }

    /// Replication factor of partition 0 of a topic (Metadata).
    pub fn replication_factor(&self, topic: &str) -> Result<usize> {
        let md = self
            .client
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("metadata of {topic}"))?;
        md.topics()
            .iter()
            .find(|t| t.name() == topic)
            .and_then(|t| t.partitions().first().map(|p| p.replicas().len()))
            .ok_or_else(|| anyhow!("{topic} missing from metadata"))
    }
}
