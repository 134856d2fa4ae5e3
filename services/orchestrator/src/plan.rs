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
const CREATE_TIME: &str = "CreateTime";
const CLEANUP_POLICY: &str = "cleanup.policy";

/// Whether a `cleanup.policy` value compacts ("compact" or "compact,delete").
fn compacts(policy: &str) -> bool {
    policy.split(',').any(|p| p.trim() == "compact")
}

/// Configs a created target topic always gets with the source topic's
/// effective value, even where the source only inherits its broker's
/// default: left unset they would take the *target* broker's default, and
/// the fetcher depends on them being the source's. A smaller
/// `max.message.bytes` refuses forwarded source batches (RECORD_TOO_LARGE);
/// another `compression.type` makes the broker rebuild every batch (and the
/// stored [`TargetTopicSettings`] wrong); another `cleanup.policy` compacts
/// (or deletes) what the source keeps (and filler records need keys on
/// compacted topics). `message.timestamp.type` is not in this list because it
/// is always set to CreateTime, whatever the source uses (see
/// [`creation_configs`]).
///
/// Deliberately not here, so the target broker's default applies unless the
/// source sets them on the topic itself (then they are copied like any
/// [`copyable_configs`]):
/// - retention (`retention.ms`, `retention.bytes`, `local.retention.*`) and
///   compaction timing (`min.compaction.lag.ms`, `max.compaction.lag.ms`,
///   `delete.retention.ms`, `min.cleanable.dirty.ratio`): they decide when
///   the target drops records, never the offsets or content of what it
///   keeps, and a target cluster's defaults there are its operator's choice;
/// - durability and placement (`min.insync.replicas`,
///   `unclean.leader.election.enable`, `segment.*`): the target cluster's own
///   business;
/// - timestamp bounds (`message.timestamp.before.max.ms`,
///   `message.timestamp.after.max.ms`, the older
///   `message.timestamp.difference.max.ms`): the source's values describe how
///   late records may reach the source, not the target (mirrored records
///   arrive later still), and which of these names a broker knows depends
///   on its version, so sending them could make CreateTopics fail.
const SHAPE: &[&str] = &["max.message.bytes", CLEANUP_POLICY, "compression.type"];

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

/// A source topic's configs as `mirror add` reads them; empty (the
/// default) when the source cannot describe configs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceConfigs {
    /// [`copyable_configs`]: set on the topic itself.
    pub copyable: BTreeMap<String, String>,
    /// [`effective_configs`]: what the source broker applies, defaults
    /// included.
    pub effective: BTreeMap<String, String>,
}

impl SourceConfigs {
    /// From the source's DescribeConfigs answer.
    pub fn from_entries(entries: Vec<ConfigEntry>) -> Self {
        SourceConfigs {
            copyable: copyable_configs(entries.clone()),
            effective: effective_configs(entries),
        }
    }
}

/// The configs a target topic is created with: every [`copyable_configs`]
/// of the source, the source's effective value of every [`SHAPE`] config,
/// and `message.timestamp.type=CreateTime` whatever the source or the target
/// broker's default says (the fetcher turns the source's LogAppendTime
/// batches into CreateTime batches carrying the append time, and a target
/// with LogAppendTime would overwrite every timestamp).
///
/// A source without DescribeConfigs gives nothing to copy: the topic then
/// gets only CreateTime and the target broker's defaults for the rest, as
/// the operator of such a source can tell nothing better either.
pub fn creation_configs(source: &SourceConfigs) -> BTreeMap<String, String> {
    let mut configs = source.copyable.clone();
    for name in SHAPE {
        if let Some(v) = source.effective.get(*name) {
            configs.insert((*name).to_string(), v.clone());
        }
    }
    configs.insert(TIMESTAMP_TYPE.to_string(), CREATE_TIME.to_string());
    configs
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
    if let Some(v) = configs.get(CLEANUP_POLICY) {
        s.compacted = compacts(v);
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

/// The command that sets a topic back to CreateTime, for messages.
fn set_create_time_command(topic: &str) -> String {
    format!(
        "kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config {TIMESTAMP_TYPE}={CREATE_TIME}"
    )
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
/// `source` holds the source topic's configs (empty when the source cannot
/// describe configs); `target` is `None` when the topic does not exist on
/// the target.
pub fn plan_target(
    topic: &str,
    source_partitions: i32,
    source: &SourceConfigs,
    target: Option<&TargetTopic>,
    target_can_create: bool,
) -> ApiResult<TargetPlan> {
    let Some(existing) = target else {
        if !target_can_create {
            return Err(ApiError::Precondition(format!(
                "topic {topic:?} does not exist on the target and the target cluster does not support CreateTopics; \
                 create it there with {source_partitions} partitions and {TIMESTAMP_TYPE}={CREATE_TIME}, then retry"
            )));
        }
        let configs = creation_configs(source);
        // What the target should apply once it has created the topic; if
        // it can describe configs, `settings_after_creation` replaces this
        // with what it actually applies.
        let settings = settings_from(&configs);
        return Ok(TargetPlan {
            create: Some(NewTopic {
                name: topic.to_string(),
                partitions: source_partitions,
                replication_factor: -1,
                configs: configs.into_iter().collect(),
            }),
            settings,
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
                 ({}), then retry",
                set_create_time_command(topic)
            )))
        }
        Some(configs) => {
            // Compaction changes which records a log keeps: a target that
            // compacts what the source keeps (or keeps what the source
            // compacts away) would not hold the source's records at their
            // offsets. Known only where both sides describe their configs.
            let src = source.effective.get(CLEANUP_POLICY);
            let dst = configs.get(CLEANUP_POLICY);
            if let (Some(src), Some(dst)) = (src, dst) {
                if compacts(src) != compacts(dst) {
                    return Err(ApiError::Precondition(format!(
                        "topic {topic:?} exists on the target with {CLEANUP_POLICY}={dst} but the source has {src}: \
                         the target would not keep the same records. Set {CLEANUP_POLICY}={src} on the target topic \
                         (kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config {CLEANUP_POLICY}={src}), \
                         then retry"
                    )));
                }
            }
            Ok(TargetPlan {
                create: None,
                settings: settings_from(configs),
            })
        }
        // Without DescribeConfigs the source's copyable configs are the best
        // available guess of what the target applies.
        None => Ok(TargetPlan {
            create: None,
            settings: settings_from(&source.copyable),
        }),
    }
}

/// The settings stored for a topic `mirror add` has just created: from the
/// configs the target reports it applies to the topic, or, when the target
/// cannot describe configs (`applied` is `None`), the `planned` ones (from
/// the configs it was created with, [`creation_configs`]).
///
/// A topic config beats any broker setting in Kafka, so a created topic
/// cannot report LogAppendTime; if one does anyway, it is refused like an
/// existing one, saying that it was created.
pub fn settings_after_creation(
    topic: &str,
    planned: &TargetTopicSettings,
    applied: Option<&BTreeMap<String, String>>,
) -> ApiResult<TargetTopicSettings> {
    let Some(applied) = applied else {
        return Ok(planned.clone());
    };
    if is_log_append_time(applied) {
        return Err(ApiError::Precondition(format!(
            "topic {topic:?} was just created on the target with {TIMESTAMP_TYPE}={CREATE_TIME}, but the target reports \
             {TIMESTAMP_TYPE}=LogAppendTime for it: its broker would replace the records' timestamps with its own clock \
             and the mirror would not be identical, so no mirror of this request was stored. The topic is still empty: \
             delete it (kafka-topics.sh --delete --topic {topic}) or set it to CreateTime ({}), check the target \
             brokers' settings, then retry (topics this request created are used as they are)",
            set_create_time_command(topic)
        )));
    }
    Ok(settings_from(applied))
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

/// The settings fetchers must respect after a sync round: the target
/// topic's effective configs with what the round just altered on top.
/// `None` when they are what the mirror already records.
pub fn plan_settings_refresh(
    current: &TargetTopicSettings,
    target_effective: &BTreeMap<String, String>,
    altered: &[(String, String)],
) -> Option<TargetTopicSettings> {
    let mut configs = target_effective.clone();
    for (k, v) in altered {
        configs.insert(k.clone(), v.clone());
    }
    let fresh = settings_from(&configs);
    (fresh != *current).then_some(fresh)
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

/// What the leader does about a mirror whose target topic it has just
/// described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampCheck {
    /// The target keeps timestamps as sent. `clear_reason`: the mirror
    /// still shows the reason this check recorded earlier, which no longer
    /// holds.
    Fine { clear_reason: bool },
    /// The target topic now uses LogAppendTime; shown as the mirror's
    /// reason. Nothing else is synced meanwhile, and the timestamp type is
    /// not changed back: someone set it (on the topic, or as the target
    /// brokers' default for a topic without its own value), maybe on
    /// purpose.
    Refuse(String),
}

/// The reason shown on a mirror whose target topic uses LogAppendTime.
fn log_append_time_reason(topic: &str) -> String {
    format!(
        "the target topic {topic:?} now has {TIMESTAMP_TYPE}=LogAppendTime (it was changed on the topic or in the \
         target brokers' defaults after the mirror was added): the target broker replaces the timestamps of the \
         records copied from now on with its own clock, so they no longer match the source's (offsets stay \
         identical). Cutover does not change it back by itself. Set it to CreateTime ({}); records copied \
         meanwhile keep the target's timestamps: if they must be identical, remove this mirror, delete the target \
         topic and add the mirror again",
        set_create_time_command(topic)
    )
}

/// Checks an existing mirror's target topic still keeps the records'
/// timestamps; `target` are its [`effective_configs`], `current_reason` the
/// mirror's reason.
pub fn plan_timestamp_check(
    topic: &str,
    current_reason: &str,
    target: &BTreeMap<String, String>,
) -> TimestampCheck {
    let reason = log_append_time_reason(topic);
    if is_log_append_time(target) {
        return TimestampCheck::Refuse(reason);
    }
    TimestampCheck::Fine {
        clear_reason: current_reason == reason,
    }
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

    /// Both views of the same configs, as if all were set on the topic.
    fn topic_configs(pairs: &[(&str, &str)]) -> SourceConfigs {
        SourceConfigs {
            copyable: map(pairs),
            effective: map(pairs),
        }
    }

    fn created_configs(plan: TargetPlan) -> Vec<(String, String)> {
        let mut configs = plan.create.expect("the topic is created").configs;
        configs.sort();
        configs
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn missing_target_is_created_like_the_source_with_the_copyable_configs_and_create_time() {
        let source = SourceConfigs::from_entries(source_entries());
        let plan = plan_target("orders", 12, &source, None, true).unwrap();
        let create = plan.create.clone().expect("the topic is created");
        assert_eq!(create.name, "orders");
        assert_eq!(create.partitions, 12);
        assert_eq!(create.replication_factor, -1);
        assert_eq!(
            created_configs(plan),
            pairs(&[
                ("cleanup.policy", "compact,delete"),
                ("compression.type", "lz4"),
                ("max.message.bytes", "2097152"),
                ("message.timestamp.type", "CreateTime"),
                ("retention.ms", "86400000"),
            ])
        );
    }

    /// The source leaves the shape configs at its broker's defaults: the
    /// created topic still gets the source's values, not the target
    /// broker's defaults; other defaults (retention, compaction timing,
    /// replication) are not sent.
    #[test]
    fn created_topic_gets_the_source_effective_shape_configs_even_when_they_are_defaults() {
        let default = |name: &str, value: &str, source| ConfigEntry {
            is_default: true,
            source,
            ..entry(name, value)
        };
        let source = SourceConfigs::from_entries(vec![
            default(
                "max.message.bytes",
                "8388608",
                config_source::STATIC_BROKER_CONFIG,
            ),
            default(
                "cleanup.policy",
                "compact",
                config_source::DYNAMIC_DEFAULT_BROKER_CONFIG,
            ),
            default(
                "compression.type",
                "producer",
                config_source::DEFAULT_CONFIG,
            ),
            default(
                "message.timestamp.type",
                "CreateTime",
                config_source::DEFAULT_CONFIG,
            ),
            default("retention.ms", "604800000", config_source::DEFAULT_CONFIG),
            default("min.compaction.lag.ms", "0", config_source::DEFAULT_CONFIG),
            default(
                "min.insync.replicas",
                "2",
                config_source::STATIC_BROKER_CONFIG,
            ),
            default(
                "message.timestamp.before.max.ms",
                "3600000",
                config_source::STATIC_BROKER_CONFIG,
            ),
        ]);
        let plan = plan_target("orders", 3, &source, None, true).unwrap();
        assert_eq!(
            plan.settings,
            TargetTopicSettings {
                compression_type: "producer".into(),
                max_message_bytes: 8_388_608,
                compacted: true,
            }
        );
        assert_eq!(
            created_configs(plan),
            pairs(&[
                ("cleanup.policy", "compact"),
                ("compression.type", "producer"),
                ("max.message.bytes", "8388608"),
                ("message.timestamp.type", "CreateTime"),
            ])
        );
    }

    /// A target broker whose default is LogAppendTime must not decide for a
    /// created topic: CreateTime is sent even when the source says nothing.
    #[test]
    fn created_topic_is_create_time_even_without_source_configs() {
        let plan = plan_target("orders", 3, &SourceConfigs::default(), None, true).unwrap();
        assert_eq!(plan.settings, TargetTopicSettings::default());
        assert_eq!(
            created_configs(plan),
            pairs(&[("message.timestamp.type", "CreateTime")])
        );
    }

    #[test]
    fn empty_identical_target_is_used_as_it_is() {
        let target = empty_target(6, Some(BTreeMap::new()));
        let plan =
            plan_target("orders", 6, &SourceConfigs::default(), Some(&target), true).unwrap();
        assert_eq!(plan.create, None);
    }

    #[test]
    fn target_with_another_partition_count_is_refused() {
        let target = empty_target(4, Some(BTreeMap::new()));
        let msg = refusal(plan_target(
            "orders",
            6,
            &SourceConfigs::default(),
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
            &SourceConfigs::default(),
            Some(&target),
            true,
        ));
        assert!(msg.contains("partition 2 already holds records"), "{msg}");
        assert!(msg.contains("log end 17"), "{msg}");
    }

    #[test]
    fn missing_target_without_create_topics_is_refused_with_the_partition_count() {
        let msg = refusal(plan_target(
            "orders",
            9,
            &SourceConfigs::default(),
            None,
            false,
        ));
        assert!(msg.contains("does not support CreateTopics"), "{msg}");
        assert!(msg.contains("create it there with 9 partitions"), "{msg}");
    }

    #[test]
    fn settings_come_from_the_target_when_it_exists() {
        let source = topic_configs(&[
            ("compression.type", "lz4"),
            ("max.message.bytes", "2097152"),
            ("cleanup.policy", "delete"),
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
        let source = topic_configs(&[
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
        let source = topic_configs(&[("compression.type", "gzip")]);
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
            &SourceConfigs::default(),
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
        assert!(plan_target("t", 3, &SourceConfigs::default(), Some(&target), true).is_ok());
    }

    #[test]
    fn source_log_append_time_is_not_copied_to_a_created_topic() {
        let source = SourceConfigs::from_entries(vec![
            entry("message.timestamp.type", "LogAppendTime"),
            entry("retention.ms", "1000"),
        ]);
        let plan = plan_target("t", 1, &source, None, true).unwrap();
        assert_eq!(
            created_configs(plan),
            pairs(&[
                ("message.timestamp.type", "CreateTime"),
                ("retention.ms", "1000"),
            ])
        );
    }

    /// NOT_COPIED keeps the source's timestamp type out of the copyable
    /// configs; should that filter change, a created topic is still
    /// CreateTime.
    #[test]
    fn created_topic_is_create_time_even_if_the_copied_configs_say_otherwise() {
        let source = topic_configs(&[("message.timestamp.type", "LogAppendTime")]);
        let plan = plan_target("t", 5, &source, None, true).unwrap();
        assert_eq!(
            created_configs(plan),
            pairs(&[("message.timestamp.type", "CreateTime")])
        );
    }

    #[test]
    fn created_topic_settings_come_from_what_the_target_applies() {
        let planned = settings_from(&map(&[("compression.type", "lz4")]));
        let applied = map(&[
            ("compression.type", "zstd"),
            ("max.message.bytes", "524288"),
            ("cleanup.policy", "compact"),
            ("message.timestamp.type", "CreateTime"),
        ]);
        assert_eq!(
            settings_after_creation("t", &planned, Some(&applied)).unwrap(),
            TargetTopicSettings {
                compression_type: "zstd".into(),
                max_message_bytes: 524_288,
                compacted: true,
            }
        );
    }

    #[test]
    fn created_topic_settings_are_the_planned_ones_without_describe_configs() {
        let planned = settings_from(&map(&[
            ("compression.type", "lz4"),
            ("max.message.bytes", "2097152"),
        ]));
        assert_eq!(
            settings_after_creation("t", &planned, None).unwrap(),
            planned
        );
    }

    #[test]
    fn created_topic_reporting_log_append_time_is_refused_saying_it_was_created() {
        let applied = map(&[("message.timestamp.type", "LogAppendTime")]);
        let msg = match settings_after_creation(
            "clicks",
            &TargetTopicSettings::default(),
            Some(&applied),
        ) {
            Err(ApiError::Precondition(msg)) => msg,
            other => panic!("expected a precondition refusal, got {other:?}"),
        };
        assert!(msg.contains("was just created on the target"), "{msg}");
        assert!(
            msg.contains("message.timestamp.type=LogAppendTime"),
            "{msg}"
        );
        assert!(
            msg.contains("no mirror of this request was stored"),
            "{msg}"
        );
        assert!(
            msg.contains("kafka-topics.sh --delete --topic clicks"),
            "{msg}"
        );
        assert!(
            msg.contains("--entity-name clicks --add-config message.timestamp.type=CreateTime"),
            "{msg}"
        );
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

    #[test]
    fn target_turned_log_append_time_is_reported_not_altered() {
        let target = map(&[
            ("message.timestamp.type", "LogAppendTime"),
            ("retention.ms", "1000"),
        ]);
        let TimestampCheck::Refuse(reason) = plan_timestamp_check("clicks", "", &target) else {
            panic!("expected a refusal");
        };
        assert!(reason.contains("\"clicks\""), "{reason}");
        assert!(
            reason.contains("message.timestamp.type=LogAppendTime"),
            "{reason}"
        );
        assert!(reason.contains("does not change it back"), "{reason}");
        assert!(
            reason.contains("--entity-name clicks --add-config message.timestamp.type=CreateTime"),
            "{reason}"
        );
        assert!(reason.contains("remove this mirror"), "{reason}");
        // Recorded again on the next round: the same reason, nothing new to
        // write.
        assert_eq!(
            plan_timestamp_check("clicks", &reason, &target),
            TimestampCheck::Refuse(reason)
        );
    }

    #[test]
    fn target_back_to_create_time_clears_only_its_own_reason() {
        let TimestampCheck::Refuse(reason) = plan_timestamp_check(
            "clicks",
            "",
            &map(&[("message.timestamp.type", "LogAppendTime")]),
        ) else {
            panic!("expected a refusal");
        };
        let fixed = map(&[("message.timestamp.type", "CreateTime")]);
        assert_eq!(
            plan_timestamp_check("clicks", &reason, &fixed),
            TimestampCheck::Fine { clear_reason: true }
        );
        assert_eq!(
            plan_timestamp_check("clicks", "some other reason", &fixed),
            TimestampCheck::Fine {
                clear_reason: false
            }
        );
        assert_eq!(
            plan_timestamp_check("clicks", "", &BTreeMap::new()),
            TimestampCheck::Fine {
                clear_reason: false
            }
        );
    }

    #[test]
    fn settings_follow_the_target_topic_as_it_is_now() {
        let current = TargetTopicSettings::default();
        let same: BTreeMap<String, String> = [
            (
                "compression.type".to_string(),
                current.compression_type.clone(),
            ),
            (
                "max.message.bytes".to_string(),
                current.max_message_bytes.to_string(),
            ),
            ("cleanup.policy".to_string(), "delete".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(plan_settings_refresh(&current, &same, &[]), None);

        let mut lz4 = same.clone();
        lz4.insert("compression.type".into(), "lz4".into());
        let fresh = plan_settings_refresh(&current, &lz4, &[]).expect("codec changed");
        assert_eq!(fresh.compression_type, "lz4");
        assert_eq!(fresh.max_message_bytes, current.max_message_bytes);

        // What the round just altered wins over what was described before it.
        let altered = [
            ("max.message.bytes".to_string(), "2097152".to_string()),
            ("cleanup.policy".to_string(), "compact".to_string()),
        ];
        let fresh = plan_settings_refresh(&current, &same, &altered).expect("size changed");
        assert_eq!(fresh.max_message_bytes, 2_097_152);
        assert!(fresh.compacted);
        assert_eq!(plan_settings_refresh(&fresh, &same, &altered), None);
    }

    #[test]
    fn existing_target_that_compacts_differently_is_refused() {
        let source = SourceConfigs {
            copyable: BTreeMap::new(),
            effective: [("cleanup.policy".to_string(), "delete".to_string())]
                .into_iter()
                .collect(),
        };
        let target_with = |policy: &str| TargetTopic {
            partitions: 3,
            log_ends: vec![(0, 0), (1, 0), (2, 0)],
            configs: Some(
                [("cleanup.policy".to_string(), policy.to_string())]
                    .into_iter()
                    .collect(),
            ),
        };
        let err = plan_target("t", 3, &source, Some(&target_with("compact")), true)
            .expect_err("compacting target accepted for a delete source");
        let msg = err.to_string();
        assert!(
            msg.contains("cleanup.policy=compact") && msg.contains("cleanup.policy=delete"),
            "{msg}"
        );
        assert!(plan_target("t", 3, &source, Some(&target_with("delete")), true).is_ok());
        // Retention on top of compaction does not change which keys survive
        // compaction; only compacting or not matters here.
        let compacting = SourceConfigs {
            copyable: BTreeMap::new(),
            effective: [("cleanup.policy".to_string(), "compact".to_string())]
                .into_iter()
                .collect(),
        };
        assert!(plan_target(
            "t",
            3,
            &compacting,
            Some(&target_with("compact,delete")),
            true
        )
        .is_ok());
        assert!(plan_target("t", 3, &compacting, Some(&target_with("delete")), true).is_err());
    }
}
