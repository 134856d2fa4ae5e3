//! The decisions behind `mirror add` and the leader's topic sync, without
//! I/O. They depend on CreateTopics, CreatePartitions, DescribeConfigs and
//! IncrementalAlterConfigs, none of which librdkafka's mock cluster offers,
//! so the end-to-end tests cannot reach them: the unit tests below are what
//! covers them.

use std::collections::BTreeMap;

use cutover_kafka::{ConfigEntry, NewTopic};
use cutover_model::TargetTopicSettings;

use crate::error::{ApiError, ApiResult};

/// Source topic configs never copied: they would break offset or timestamp
/// identity, or they describe the source cluster's own replication.
const NOT_COPIED: &[&str] = &[
    TIMESTAMP_TYPE,
    "leader.replication.throttled.replicas",
    "follower.replication.throttled.replicas",
];

const TIMESTAMP_TYPE: &str = "message.timestamp.type";

/// The topic-level configs of a source topic that are copied to (and kept in
/// sync on) the target: set on the topic itself, writable, not secret.
pub fn copyable_configs(entries: Vec<ConfigEntry>) -> BTreeMap<String, String> {
    entries
        .into_iter()
        .filter(|c| {
            !c.is_default && !c.read_only && !c.sensitive && !NOT_COPIED.contains(&c.name.as_str())
        })
        .filter_map(|c| c.value.map(|v| (c.name, v)))
        .collect()
}

/// Every config of a topic that has a value, wherever it comes from (topic,
/// broker, default): what the broker actually applies to the topic.
pub fn effective_configs(entries: Vec<ConfigEntry>) -> BTreeMap<String, String> {
    entries
        .into_iter()
        .filter_map(|c| c.value.map(|v| (c.name, v)))
        .collect()
}

/// What the fetchers must respect on the target, from the configs that
/// apply to it; an absent config keeps Kafka's default.
pub fn settings_from(configs: &BTreeMap<String, String>) -> TargetTopicSettings {
    let mut s = TargetTopicSettings::default();
    if let Some(v) = configs.get("compression.type") {
        s.compression_type = v.clone();
    }
    if let Some(v) = configs
        .get("max.message.bytes")
        .and_then(|v| v.parse().ok())
    {
        s.max_message_bytes = v;
    }
    if let Some(v) = configs.get("cleanup.policy") {
        s.compacted = v.contains("compact");
    }
    s
}

/// A broker with LogAppendTime replaces every batch's timestamp with its own
/// clock, so the target's records would no longer carry the source's
/// timestamps (invariant 1). The fetcher turns the source's LogAppendTime
/// batches into CreateTime batches for exactly this reason.
fn is_log_append_time(configs: &BTreeMap<String, String>) -> bool {
    configs
        .get(TIMESTAMP_TYPE)
        .is_some_and(|v| v.eq_ignore_ascii_case("LogAppendTime"))
}

/// A topic that already exists on the target, as `mirror add` read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTopic {
    pub partitions: i32,
    /// `(partition, log end offset)` of every partition.
    pub log_ends: Vec<(i32, i64)>,
    /// The configs the broker applies to the topic ([`effective_configs`]);
    /// `None` when the target cannot describe configs.
    pub configs: Option<BTreeMap<String, String>>,
}

/// What `mirror add` does on the target for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPlan {
    /// The topic to create; `None` when an existing, empty, identical topic
    /// is used as it is.
    pub create: Option<NewTopic>,
    /// Stored in the mirror document for the fetchers.
    pub settings: TargetTopicSettings,
}

/// Decides whether the target topic is created, used as it is, or refused.
///
/// `source_configs` are the source topic's [`copyable_configs`] (empty when
/// the source cannot describe configs); `target` is `None` when the topic
/// does not exist on the target.
pub fn plan_target(
    topic: &str,
    source_partitions: i32,
    source_configs: &BTreeMap<String, String>,
    target: Option<&TargetTopic>,
    target_can_create: bool,
) -> ApiResult<TargetPlan> {
    let Some(existing) = target else {
        if !target_can_create {
            return Err(ApiError::Precondition(format!(
                "topic {topic:?} does not exist on the target and the target cluster does not support CreateTopics; \
                 create it there with {source_partitions} partitions, then retry"
            )));
        }
        // NOT_COPIED keeps the source's timestamp type out today; this keeps
        // a change of that filter from creating a topic that cannot be a
        // mirror.
        if is_log_append_time(source_configs) {
            return Err(ApiError::Precondition(format!(
                "topic {topic:?} would be created on the target with {TIMESTAMP_TYPE}=LogAppendTime copied from the source; \
                 the target broker would then replace the records' timestamps with its own clock and the mirror would not be identical. \
                 Create it on the target yourself with {source_partitions} partitions and {TIMESTAMP_TYPE}=CreateTime, then retry"
            )));
        }
        return Ok(TargetPlan {
            create: Some(NewTopic {
                name: topic.to_string(),
                partitions: source_partitions,
                replication_factor: -1,
                configs: source_configs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }),
            settings: settings_from(source_configs),
        });
    };

    let n = existing.partitions;
    if n != source_partitions {
        return Err(ApiError::Precondition(format!(
            "topic {topic:?} exists on the target with {n} partitions but has {source_partitions} on the source; \
             delete the target topic (or give it {source_partitions} partitions) and retry"
        )));
    }
    let mut log_ends = existing.log_ends.clone();
    log_ends.sort_unstable();
    if let Some((p, end)) = log_ends.into_iter().find(|&(_, end)| end > 0) {
        return Err(ApiError::Precondition(format!(
            "topic {topic:?} exists on the target and partition {p} already holds records (log end {end}); \
             offsets could not be identical. Delete and recreate it empty, then retry"
        )));
    }
    match &existing.configs {
        Some(configs) if is_log_append_time(configs) => {
            Err(ApiError::Precondition(format!(
                "topic {topic:?} exists on the target with {TIMESTAMP_TYPE}=LogAppendTime; the target broker would replace \
                 the records' timestamps with its own clock and the mirror would not be identical. Set it to CreateTime \
                 (kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config {TIMESTAMP_TYPE}=CreateTime), then retry"
            )))
        }
        Some(configs) => Ok(TargetPlan {
            create: None,
            settings: settings_from(configs),
        }),
        // Without DescribeConfigs the source's copyable configs are the best
        // available guess of what the target applies.
        None => Ok(TargetPlan {
            create: None,
            settings: settings_from(source_configs),
        }),
    }
}

/// What the leader does about a mirror's partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionSync {
    Unchanged,
    /// The source gained partitions.
    Grow {
        /// CreatePartitions on the target up to this total first; `None`
        /// when the target has them already.
        add_on_target_to: Option<i32>,
        /// The mirror document's new partition count: fetchers start
        /// copying the new partitions once it is stored, so only after the
        /// target has them.
        mirror_partitions: i32,
    },
    /// The operator has to act; shown as the mirror's reason. Nothing else
    /// (configs included) is synced meanwhile.
    Refuse(String),
}

/// Compares the mirror's partition count with the source's (and, when the
/// source grew, the target's, `None` if the target topic is gone).
pub fn plan_partition_sync(
    topic: &str,
    mirror_partitions: i32,
    source_partitions: i32,
    target_partitions: Option<i32>,
    target_can_create_partitions: bool,
) -> PartitionSync {
    if source_partitions == mirror_partitions {
        return PartitionSync::Unchanged;
    }
    // Lowering the count would silently drop partitions whose target data
    // stays behind; a source that "lost" partitions is not the topic that
    // was mirrored.
    if source_partitions < mirror_partitions {
        return PartitionSync::Refuse(format!(
            "topic {topic:?} has {source_partitions} partitions on the source but {mirror_partitions} are mirrored; \
             Kafka cannot remove partitions, so the source topic was probably deleted and recreated and its offsets \
             no longer match the target's. The partition count is not lowered: remove this mirror, delete the target \
             topic and add the mirror again"
        ));
    }
    let Some(target_partitions) = target_partitions else {
        return PartitionSync::Refuse(format!(
            "topic {topic:?} no longer exists on the target, so its {source_partitions} partitions cannot be mirrored; \
             remove this mirror and add it again"
        ));
    };
    if target_partitions >= source_partitions {
        return PartitionSync::Grow {
            add_on_target_to: None,
            mirror_partitions: source_partitions,
        };
    }
    if !target_can_create_partitions {
        return PartitionSync::Refuse(format!(
            "topic {topic:?} has {source_partitions} partitions on the source but {target_partitions} on the target, \
             and the target cluster does not support CreatePartitions: add them there \
             (kafka-topics.sh --alter --topic {topic} --partitions {source_partitions}); the new partitions are \
             mirrored once the target has them"
        ));
    }
    PartitionSync::Grow {
        add_on_target_to: Some(source_partitions),
        mirror_partitions: source_partitions,
    }
}

/// The configs to SET on the target (IncrementalAlterConfigs) so that its
/// copyable configs match the source's; both maps are [`copyable_configs`].
///
/// A config set on the target but no longer on the source is left alone
/// rather than deleted: the target topic may carry settings its own operator
/// chose (an existing topic is accepted at `mirror add` with whatever
/// configs it has, and a cluster may need e.g. its own min.insync.replicas),
/// and nothing records which ones Cutover set. Deleting would also not
/// reproduce the source's value, only fall back to the target broker's own
/// default.
pub fn plan_config_sync(
    source: &BTreeMap<String, String>,
    target: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    source
        .iter()
        .filter(|(k, v)| target.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_kafka::config_source;

    fn entry(name: &str, value: &str) -> ConfigEntry {
        ConfigEntry {
            name: name.into(),
            value: Some(value.into()),
            is_default: false,
            read_only: false,
            sensitive: false,
            source: config_source::DYNAMIC_TOPIC_CONFIG,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn empty_target(partitions: i32, configs: Option<BTreeMap<String, String>>) -> TargetTopic {
        TargetTopic {
            partitions,
            log_ends: (0..partitions).map(|p| (p, 0)).collect(),
            configs,
        }
    }

    fn refusal(r: ApiResult<TargetPlan>) -> String {
        match r {
            Err(ApiError::Precondition(msg)) => msg,
            other => panic!("expected a precondition refusal, got {other:?}"),
        }
    }

    /// The source's DescribeConfigs answer: topic overrides, plus what must
    /// not be copied.
    fn source_entries() -> Vec<ConfigEntry> {
        vec![
            entry("retention.ms", "86400000"),
            entry("cleanup.policy", "compact,delete"),
            entry("compression.type", "lz4"),
            entry("max.message.bytes", "2097152"),
            ConfigEntry {
                is_default: true,
                source: config_source::DEFAULT_CONFIG,
                ..entry("segment.bytes", "1073741824")
            },
            ConfigEntry {
                is_default: true,
                source: config_source::STATIC_BROKER_CONFIG,
                ..entry("min.insync.replicas", "2")
            },
            ConfigEntry {
                read_only: true,
                ..entry("message.format.version", "3.0-IV1")
            },
            ConfigEntry {
                sensitive: true,
                value: None,
                ..entry("some.secret", "")
            },
            ConfigEntry {
                sensitive: true,
                ..entry("other.secret", "hunter2")
            },
            entry("message.timestamp.type", "LogAppendTime"),
            entry("leader.replication.throttled.replicas", "0:1"),
            entry("follower.replication.throttled.replicas", "0:2"),
        ]
    }

    #[test]
    fn missing_target_is_created_like_the_source_with_exactly_the_copyable_configs() {
        let configs = copyable_configs(source_entries());
        let plan = plan_target("orders", 12, &configs, None, true).unwrap();
        let create = plan.create.expect("the topic is created");
        assert_eq!(create.name, "orders");
        assert_eq!(create.partitions, 12);
        assert_eq!(create.replication_factor, -1);
        let mut created = create.configs.clone();
        created.sort();
        assert_eq!(
            created,
            vec![
                ("cleanup.policy".to_string(), "compact,delete".to_string()),
                ("compression.type".to_string(), "lz4".to_string()),
                ("max.message.bytes".to_string(), "2097152".to_string()),
                ("retention.ms".to_string(), "86400000".to_string()),
            ]
        );
    }

    #[test]
    fn empty_identical_target_is_used_as_it_is() {
        let target = empty_target(6, Some(BTreeMap::new()));
        let plan = plan_target("orders", 6, &BTreeMap::new(), Some(&target), true).unwrap();
        assert_eq!(plan.create, None);
    }

    #[test]
    fn target_with_another_partition_count_is_refused() {
        let target = empty_target(4, Some(BTreeMap::new()));
        let msg = refusal(plan_target(
            "orders",
            6,
            &BTreeMap::new(),
            Some(&target),
            true,
        ));
        assert!(msg.contains("with 4 partitions"), "{msg}");
        assert!(msg.contains("6 on the source"), "{msg}");
        assert!(msg.contains("delete the target topic"), "{msg}");
    }

    #[test]
    fn target_with_records_is_refused_naming_the_partition() {
        let target = TargetTopic {
            partitions: 4,
            log_ends: vec![(3, 0), (2, 17), (1, 0), (0, 0)],
            configs: Some(BTreeMap::new()),
        };
        let msg = refusal(plan_target(
            "orders",
            4,
            &BTreeMap::new(),
            Some(&target),
            true,
        ));
        assert!(msg.contains("partition 2 already holds records"), "{msg}");
        assert!(msg.contains("log end 17"), "{msg}");
    }

    #[test]
    fn missing_target_without_create_topics_is_refused_with_the_partition_count() {
        let msg = refusal(plan_target("orders", 9, &BTreeMap::new(), None, false));
        assert!(msg.contains("does not support CreateTopics"), "{msg}");
        assert!(msg.contains("create it there with 9 partitions"), "{msg}");
    }

    #[test]
    fn settings_come_from_the_target_when_it_exists() {
        let source = map(&[
            ("compression.type", "lz4"),
            ("max.message.bytes", "2097152"),
            ("cleanup.policy", "compact"),
        ]);
        let target = empty_target(
            3,
            Some(map(&[
                ("compression.type", "zstd"),
                ("max.message.bytes", "5000000"),
                ("cleanup.policy", "delete"),
                ("message.timestamp.type", "CreateTime"),
            ])),
        );
        let plan = plan_target("t", 3, &source, Some(&target), true).unwrap();
        assert_eq!(
            plan.settings,
            TargetTopicSettings {
                compression_type: "zstd".into(),
                max_message_bytes: 5_000_000,
                compacted: false,
            }
        );
    }

    #[test]
    fn settings_come_from_the_source_when_the_topic_is_created() {
        let source = map(&[
            ("compression.type", "lz4"),
            ("max.message.bytes", "2097152"),
            ("cleanup.policy", "compact,delete"),
        ]);
        let plan = plan_target("t", 3, &source, None, true).unwrap();
        assert_eq!(
            plan.settings,
            TargetTopicSettings {
                compression_type: "lz4".into(),
                max_message_bytes: 2_097_152,
                compacted: true,
            }
        );
    }

    #[test]
    fn settings_of_an_existing_topic_fall_back_to_the_source_without_describe_configs() {
        let source = map(&[("compression.type", "gzip")]);
        let target = empty_target(3, None);
        let plan = plan_target("t", 3, &source, Some(&target), true).unwrap();
        assert_eq!(plan.settings.compression_type, "gzip");
        assert_eq!(
            plan.settings.max_message_bytes,
            TargetTopicSettings::default().max_message_bytes
        );
    }

    #[test]
    fn target_with_log_append_time_is_refused() {
        let target = empty_target(3, Some(map(&[("message.timestamp.type", "LogAppendTime")])));
        let msg = refusal(plan_target(
            "clicks",
            3,
            &BTreeMap::new(),
            Some(&target),
            true,
        ));
        assert!(
            msg.contains("message.timestamp.type=LogAppendTime"),
            "{msg}"
        );
        assert!(
            msg.contains("--add-config message.timestamp.type=CreateTime"),
            "{msg}"
        );
        assert!(msg.contains("--entity-name clicks"), "{msg}");
    }

    #[test]
    fn target_with_create_time_is_accepted() {
        let target = empty_target(3, Some(map(&[("message.timestamp.type", "CreateTime")])));
        assert!(plan_target("t", 3, &BTreeMap::new(), Some(&target), true).is_ok());
    }

    #[test]
    fn source_log_append_time_is_not_copied_to_a_created_topic() {
        let source = copyable_configs(vec![
            entry("message.timestamp.type", "LogAppendTime"),
            entry("retention.ms", "1000"),
        ]);
        let plan = plan_target("t", 1, &source, None, true).unwrap();
        let create = plan.create.expect("created");
        assert_eq!(create.configs, vec![("retention.ms".into(), "1000".into())]);
    }

    #[test]
    fn creation_with_log_append_time_in_the_copied_configs_is_refused() {
        let source = map(&[("message.timestamp.type", "LogAppendTime")]);
        let msg = refusal(plan_target("t", 5, &source, None, true));
        assert!(
            msg.contains("message.timestamp.type=LogAppendTime"),
            "{msg}"
        );
        assert!(msg.contains("5 partitions"), "{msg}");
        assert!(msg.contains("message.timestamp.type=CreateTime"), "{msg}");
    }

    #[test]
    fn effective_configs_keep_broker_defaults() {
        let entries = vec![
            ConfigEntry {
                is_default: true,
                source: config_source::STATIC_BROKER_CONFIG,
                ..entry("message.timestamp.type", "LogAppendTime")
            },
            ConfigEntry {
                value: None,
                ..entry("unset", "")
            },
        ];
        assert_eq!(
            effective_configs(entries),
            map(&[("message.timestamp.type", "LogAppendTime")])
        );
    }

    #[test]
    fn grown_source_grows_target_then_mirror() {
        assert_eq!(
            plan_partition_sync("t", 4, 6, Some(4), true),
            PartitionSync::Grow {
                add_on_target_to: Some(6),
                mirror_partitions: 6
            }
        );
    }

    #[test]
    fn grown_source_with_target_already_grown_only_grows_the_mirror() {
        assert_eq!(
            plan_partition_sync("t", 4, 6, Some(6), false),
            PartitionSync::Grow {
                add_on_target_to: None,
                mirror_partitions: 6
            }
        );
    }

    #[test]
    fn grown_source_without_create_partitions_asks_the_operator() {
        let PartitionSync::Refuse(reason) = plan_partition_sync("t", 4, 6, Some(4), false) else {
            panic!("expected a refusal");
        };
        assert!(
            reason.contains("does not support CreatePartitions"),
            "{reason}"
        );
        assert!(reason.contains("--partitions 6"), "{reason}");
        assert!(
            reason.contains("6 partitions on the source but 4 on the target"),
            "{reason}"
        );
    }

    #[test]
    fn shrunk_source_is_refused_and_never_lowers_the_count() {
        for target in [Some(6), Some(2), None] {
            for can_create in [true, false] {
                let PartitionSync::Refuse(reason) =
                    plan_partition_sync("t", 6, 2, target, can_create)
                else {
                    panic!("expected a refusal");
                };
                assert!(
                    reason.contains("2 partitions on the source but 6 are mirrored"),
                    "{reason}"
                );
                assert!(reason.contains("deleted and recreated"), "{reason}");
                assert!(reason.contains("remove this mirror"), "{reason}");
            }
        }
    }

    #[test]
    fn grown_source_with_target_topic_gone_is_refused() {
        let PartitionSync::Refuse(reason) = plan_partition_sync("t", 4, 6, None, true) else {
            panic!("expected a refusal");
        };
        assert!(
            reason.contains("no longer exists on the target"),
            "{reason}"
        );
    }

    #[test]
    fn unchanged_source_needs_nothing() {
        assert_eq!(
            plan_partition_sync("t", 4, 4, None, false),
            PartitionSync::Unchanged
        );
    }

    #[test]
    fn only_differing_copyable_configs_are_altered() {
        let source = copyable_configs(vec![
            entry("retention.ms", "1000"),
            entry("cleanup.policy", "compact"),
            entry("segment.ms", "60000"),
            entry("message.timestamp.type", "LogAppendTime"),
        ]);
        let target = copyable_configs(vec![
            entry("retention.ms", "2000"),
            entry("cleanup.policy", "compact"),
            entry("message.timestamp.type", "CreateTime"),
        ]);
        assert_eq!(
            plan_config_sync(&source, &target),
            vec![
                ("retention.ms".to_string(), "1000".to_string()),
                ("segment.ms".to_string(), "60000".to_string()),
            ]
        );
    }

    #[test]
    fn equal_configs_need_nothing() {
        let c = map(&[("retention.ms", "1000"), ("cleanup.policy", "delete")]);
        assert!(plan_config_sync(&c, &c.clone()).is_empty());
    }

    #[test]
    fn a_config_only_the_target_sets_is_left_alone() {
        let source = map(&[("retention.ms", "1000")]);
        let target = map(&[("retention.ms", "1000"), ("min.insync.replicas", "3")]);
        assert!(plan_config_sync(&source, &target).is_empty());
    }
}
