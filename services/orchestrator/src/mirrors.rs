//! Mirror topics: selection, validation against both clusters, target topic
//! creation, and all-or-nothing storage.

use std::collections::HashSet;

use cutover_coord::{Precondition, Versioned, WriteOp};
use cutover_kafka::{ApiKey, Cluster, NewTopic, OffsetSpec};
use cutover_model::{keys, validate, Link, MirrorState, MirrorTopic};

use crate::error::{ApiError, ApiResult};
use crate::guards::{after_refused_store, store_mirrors_txn};
use crate::links::connect;
use crate::plan::{
    effective_configs, plan_target, settings_after_creation, SourceConfigs, TargetTopic,
};
use crate::Orchestrator;

pub struct AddMirrors {
    pub link: String,
    pub topics: Vec<String>,
    pub include_regex: Vec<String>,
    pub exclude_regex: Vec<String>,
    pub dry_run: bool,
}

/// etcd refuses transactions of more than 128 operations by default
/// (`--max-txn-ops`); one request's mirrors (and its link) are written in one
/// transaction.
const MAX_MIRRORS_PER_REQUEST: usize = 100;

/// Store attempts of one `mirror add` when only other adds on the same link
/// got in the way (each moves the link's revision, see `guards`).
const STORE_ATTEMPTS: usize = 5;

fn is_internal(topic: &str) -> bool {
    topic.starts_with("__")
}

/// What will be done for one topic.
struct Plan {
    mirror: MirrorTopic,
    create: Option<NewTopic>,
}

/// The configs of `topic`, just created on `cluster`. In KRaft a broker
/// learns of a new topic from the metadata log after the controller
/// answered CreateTopics, and until then answers UNKNOWN_TOPIC_OR_PARTITION
/// for it (seen on a busy machine beyond the client's own few retries):
/// asked again until `within` has passed.
async fn configs_of_created(
    cluster: &Cluster,
    topic: &str,
    within: std::time::Duration,
) -> Result<Vec<cutover_kafka::ConfigEntry>, cutover_kafka::KafkaError> {
    let deadline = tokio::time::Instant::now() + within;
    let mut backoff = cutover_retry::Policy::new(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_millis(500),
    )
    .backoff();
    loop {
        match cluster.describe_topic_configs(topic).await {
            Err(e)
                if e.code() == Some(cutover_kafka::codes::UNKNOWN_TOPIC_OR_PARTITION)
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(topic, error = %e, "the created topic is not known to every broker yet");
                backoff.wait().await;
            }
            r => return r,
        }
    }
}

/// Why removing these mirror topics is refused (nothing removed). One in
/// a barrier would leave its promotion half done: always refused. Routers
/// send a topic's clients by its mirror document, so removing one whose
/// primary is the target (PROMOTED, DETACHED) would send them back to the
/// source: refused unless `force` (no client uses the routers any more).
pub fn removal_refusal(docs: &[MirrorTopic], force: bool) -> Option<ApiError> {
    let named = |f: &dyn Fn(&MirrorTopic) -> bool| -> Vec<String> {
        docs.iter()
            .filter(|m| f(m))
            .map(|m| format!("{} ({:?})", m.topic, m.state))
            .collect()
    };
    let moving = named(&|m| m.state.in_barrier());
    if !moving.is_empty() {
        return Some(ApiError::Precondition(format!(
            "nothing removed: {} in a promotion or rollback; wait for it to end (`cutover \
             promotions`), then retry",
            moving.join(", ")
        )));
    }
    let on_target = named(&|m| m.state.primary() == cutover_model::Side::Target);
    if on_target.is_empty() || force {
        return None;
    }
    Some(ApiError::Precondition(format!(
        "nothing removed: the target is the primary of {}, and the routers send clients by \
         the mirror document: removed, their clients would go back to the source. Roll back \
         first (`cutover rollback`), or, once no client uses the routers any more, remove with \
         --force",
        on_target.join(", ")
    )))
}

impl Orchestrator {
    pub async fn add_mirrors(&self, req: AddMirrors) -> ApiResult<Vec<MirrorTopic>> {
        let link = self.link_versioned(&req.link).await?;
        if req.topics.is_empty() && req.include_regex.is_empty() {
            return Err(ApiError::BadRequest(
                "name at least one topic or give an include regex".into(),
            ));
        }
        let mut seen = HashSet::new();
        for t in &req.topics {
            validate::topic_name(t)?;
            if !seen.insert(t) {
                return Err(ApiError::BadRequest(format!("topic {t:?} is named twice")));
            }
            if is_internal(t) {
                return Err(ApiError::BadRequest(format!(
                    "{t:?} is an internal topic; internal topics are not mirrored"
                )));
            }
        }
        let include = req
            .include_regex
            .iter()
            .map(|r| validate::topic_regex(r))
            .collect::<Result<Vec<_>, _>>()?;
        let exclude = req
            .exclude_regex
            .iter()
            .map(|r| validate::topic_regex(r))
            .collect::<Result<Vec<_>, _>>()?;

        let source = connect("source", &link.value.source, self.cfg.kafka_timeout()).await?;
        let target = connect("target", &link.value.target, self.cfg.kafka_timeout()).await?;
        let result = self
            .plan_and_add(&link, &req, &include, &exclude, &source, &target)
            .await;
        source.close().await;
        target.close().await;
        result
    }

    async fn plan_and_add(
        &self,
        versioned_link: &Versioned<Link>,
        req: &AddMirrors,
        include: &[regex::Regex],
        exclude: &[regex::Regex],
        source: &Cluster,
        target: &Cluster,
    ) -> ApiResult<Vec<MirrorTopic>> {
        let link = &versioned_link.value;
        let md = source
            .metadata(None)
            .await
            .map_err(ApiError::kafka("source", source))?;
        let existing: HashSet<String> = self
            .mirrors_of(&link.name)
            .await?
            .into_iter()
            .map(|m| m.topic)
            .collect();
        let excluded = |t: &str| exclude.iter().any(|r| r.is_match(t));

        let mut selected: Vec<String> = Vec::new();
        for t in &req.topics {
            if !md.topics.iter().any(|m| &m.name == t) {
                return Err(ApiError::Precondition(format!(
                    "topic {t:?} does not exist on the source cluster ({}); check the name or create it there first",
                    link.source.bootstrap_servers.join(",")
                )));
            }
            if existing.contains(t) {
                return Err(ApiError::AlreadyExists {
                    what: "mirror topic",
                    name: format!("{}/{t}", link.name),
                });
            }
            if !excluded(t) {
                selected.push(t.clone());
            }
        }
        for m in &md.topics {
            let t = &m.name;
            if include.iter().any(|r| r.is_match(t))
                && !is_internal(t)
                && !excluded(t)
                && !existing.contains(t)
                && !selected.contains(t)
            {
                selected.push(t.clone());
            }
        }
        if selected.is_empty() {
            return Err(ApiError::Precondition(
                "no source topic is selected: every name is excluded, already mirrored, or no topic matches the regex".into(),
            ));
        }
        selected.sort();
        if selected.len() > MAX_MIRRORS_PER_REQUEST {
            return Err(ApiError::BadRequest(format!(
                "{} topics selected; add at most {MAX_MIRRORS_PER_REQUEST} per request (all of a request are stored in one etcd transaction), e.g. with narrower --include patterns",
                selected.len()
            )));
        }

        let mut plans = Vec::with_capacity(selected.len());
        for topic in &selected {
            plans.push(self.plan_topic(link, topic, source, target).await?);
        }
        if req.dry_run {
            return Ok(plans.into_iter().map(|p| p.mirror).collect());
        }

        // Ask the target to validate every creation before creating any, so
        // one bad topic does not leave the others half-done.
        let creates: Vec<NewTopic> = plans.iter().filter_map(|p| p.create.clone()).collect();
        if !creates.is_empty() {
            for (name, r) in target
                .create_topics(&creates, true)
                .await
                .map_err(ApiError::kafka("target", target))?
            {
                r.map_err(|e| {
                    ApiError::Precondition(format!(
                        "the target refuses to create topic {name:?}: {e}"
                    ))
                })?;
            }
            for (name, r) in target
                .create_topics(&creates, false)
                .await
                .map_err(ApiError::kafka("target", target))?
            {
                r.map_err(ApiError::kafka_doing(
                    "target",
                    target,
                    format!("creating topic {name:?}"),
                ))?;
            }
            // The fetchers need what the target applies to the created
            // topics, which may differ from what was asked for.
            for plan in plans.iter_mut().filter(|p| p.create.is_some()) {
                let topic = &plan.mirror.topic;
                let applied = if target.supports(ApiKey::DescribeConfigs) {
                    Some(effective_configs(
                        configs_of_created(target, topic, self.cfg.kafka_timeout())
                            .await
                            .map_err(ApiError::kafka_doing(
                                "target",
                                target,
                                format!(
                                    "reading the configs of topic {topic:?}, which was just created there \
                                     (no mirror was stored; retry: the created topic is empty and is used as it is)"
                                ),
                            ))?,
                    ))
                } else {
                    None
                };
                plan.mirror.target =
                    settings_after_creation(topic, &plan.mirror.target, applied.as_ref())?;
            }
        }
        let mirrors: Vec<MirrorTopic> = plans.into_iter().map(|p| p.mirror).collect();
        self.store_mirrors(versioned_link, &mirrors).await?;
        tracing::info!(link = %link.name, topics = ?selected, "mirror topics added");
        Ok(mirrors)
    }

    /// Stores the mirror documents of one `mirror add` all at once, only
    /// while none exists yet and the link is still the one `link` was read
    /// as; `guards` explains why this cannot race with `link delete`.
    pub async fn store_mirrors(
        &self,
        link: &Versioned<Link>,
        mirrors: &[MirrorTopic],
    ) -> ApiResult<()> {
        let mut link = link.clone();
        for _ in 0..STORE_ATTEMPTS {
            let (guards, writes) = store_mirrors_txn(&link, mirrors)?;
            if self.coord.txn(&guards, &writes).await? {
                return Ok(());
            }
            let now = self
                .coord
                .get::<Link>(&keys::link(&link.value.name))
                .await?;
            let existing: Vec<String> = self
                .mirrors_of(&link.value.name)
                .await?
                .into_iter()
                .map(|m| m.topic)
                .collect();
            link = after_refused_store(&link, now, mirrors, &existing)?;
        }
        Err(ApiError::Conflict(format!(
            "the mirror topics of link {}",
            link.value.name
        )))
    }

    async fn plan_topic(
        &self,
        link: &Link,
        topic: &str,
        source: &Cluster,
        target: &Cluster,
    ) -> ApiResult<Plan> {
        let src = source
            .topic(topic)
            .await
            .map_err(ApiError::kafka("source", source))?
            .ok_or_else(|| {
                ApiError::Precondition(format!("topic {topic:?} disappeared from the source"))
            })?;
        let partitions = src.partitions.len() as i32;
        // A source without DescribeConfigs gives nothing to copy: the topic
        // is then created with CreateTime and the target's defaults.
        let source_configs = if source.supports(ApiKey::DescribeConfigs) {
            SourceConfigs::from_entries(
                source
                    .describe_topic_configs(topic)
                    .await
                    .map_err(ApiError::kafka("source", source))?,
            )
        } else {
            SourceConfigs::default()
        };
        let existing = match target
            .topic(topic)
            .await
            .map_err(ApiError::kafka("target", target))?
        {
            None => None,
            Some(t) => {
                let ids: Vec<i32> = t.partitions.iter().map(|p| p.partition).collect();
                let mut log_ends = Vec::with_capacity(ids.len());
                for (p, end) in target
                    .list_offsets(topic, &ids, OffsetSpec::Latest)
                    .await
                    .map_err(ApiError::kafka("target", target))?
                {
                    log_ends.push((p, end.map_err(ApiError::kafka("target", target))?));
                }
                let configs = if target.supports(ApiKey::DescribeConfigs) {
                    Some(effective_configs(
                        configs_of_created(target, topic, self.cfg.kafka_timeout())
                            .await
                            .map_err(ApiError::kafka("target", target))?,
                    ))
                } else {
                    None
                };
                Some(TargetTopic {
                    partitions: ids.len() as i32,
                    log_ends,
                    configs,
                })
            }
        };
        let plan = plan_target(
            topic,
            partitions,
            &source_configs,
            existing.as_ref(),
            target.supports(ApiKey::CreateTopics),
        )?;
        Ok(Plan {
            mirror: MirrorTopic {
                link: link.name.clone(),
                topic: topic.to_string(),
                partitions,
                state: MirrorState::Mirroring,
                reason: String::new(),
                created_at_ms: cutover_model::now_ms(),
                target: plan.settings,
                switches: 0,
            },
            create: plan.create,
        })
    }

    /// Sets the state of selected mirrors; resuming also clears partition
    /// failures so fetchers try them again.
    pub async fn set_mirror_state(
        &self,
        link: &str,
        topics: &[String],
        all: bool,
        state: MirrorState,
    ) -> ApiResult<Vec<MirrorTopic>> {
        let selected = self.select(link, topics, all).await?;
        let mut changed = Vec::new();
        for name in selected {
            let key = keys::mirror(link, &name);
            let Some(current) = self.coord.get::<MirrorTopic>(&key).await? else {
                return Err(ApiError::NotFound {
                    what: "mirror topic",
                    name: format!("{link}/{name}"),
                });
            };
            let mut m = current.value;
            if matches!(
                m.state,
                MirrorState::Promoting
                    | MirrorState::Promoted
                    | MirrorState::Demoting
                    | MirrorState::Detached
            ) {
                return Err(ApiError::Precondition(format!(
                    "mirror topic {link}/{name} is {:?}; it cannot be paused or resumed",
                    m.state
                )));
            }
            m.state = state;
            m.reason.clear();
            if !self.coord.update(&key, &m, current.mod_revision).await? {
                return Err(ApiError::Conflict(format!("mirror topic {link}/{name}")));
            }
            if state == MirrorState::Mirroring {
                self.coord
                    .delete_prefix(&keys::failures_of(link, &name))
                    .await?;
            }
            changed.push(m);
        }
        Ok(changed)
    }

    pub async fn remove_mirrors(
        &self,
        link: &str,
        topics: &[String],
        all: bool,
        force: bool,
    ) -> ApiResult<Vec<MirrorTopic>> {
        let selected = self.select(link, topics, all).await?;
        let mut docs = Vec::with_capacity(selected.len());
        for name in &selected {
            if let Some(m) = self
                .coord
                .get::<MirrorTopic>(&keys::mirror(link, name))
                .await?
            {
                docs.push(m);
            }
        }
        let values: Vec<MirrorTopic> = docs.iter().map(|d| d.value.clone()).collect();
        if let Some(refused) = removal_refusal(&values, force) {
            return Err(refused);
        }
        let mut removed = Vec::new();
        for m in docs {
            let name = m.value.topic.clone();
            // The mirror document goes first so fetchers stop, and only
            // as read (a promotion may have started since); the rest is
            // bookkeeping.
            let key = keys::mirror(link, &name);
            let gone = self
                .coord
                .txn(
                    &[Precondition::ModRevision(key.clone(), m.mod_revision)],
                    &[WriteOp::Delete(key)],
                )
                .await?;
            if !gone {
                return Err(ApiError::Conflict(format!(
                    "mirror topic {name} of link {link} changed while it was removed (a \
                         promotion?); removed before it: {:?}",
                    removed
                        .iter()
                        .map(|m: &MirrorTopic| m.topic.clone())
                        .collect::<Vec<_>>()
                )));
            }
            self.coord
                .delete_prefix(&keys::progress_of(link, &name))
                .await?;
            self.coord
                .delete_prefix(&keys::failures_of(link, &name))
                .await?;
            for writers in [
                keys::fetch_resources_of_topic(link, &name),
                keys::reverse_writers_of_topic(link, &name),
            ] {
                self.coord
                    .delete_prefix(&cutover_coord::writer_key(&writers))
                    .await?;
            }
            removed.push(m.value);
        }
        Ok(removed)
    }

    pub(crate) async fn select(
        &self,
        link: &str,
        topics: &[String],
        all: bool,
    ) -> ApiResult<Vec<String>> {
        self.get_link(link).await?;
        let existing: Vec<String> = self
            .mirrors_of(link)
            .await?
            .into_iter()
            .map(|m| m.topic)
            .collect();
        if all {
            return Ok(existing);
        }
        if topics.is_empty() {
            return Err(ApiError::BadRequest(
                "name the mirror topics or pass all".into(),
            ));
        }
        for t in topics {
            validate::topic_name(t)?;
            if !existing.contains(t) {
                return Err(ApiError::NotFound {
                    what: "mirror topic",
                    name: format!("{link}/{t}"),
                });
            }
        }
        Ok(topics.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(topic: &str, state: MirrorState) -> MirrorTopic {
        MirrorTopic {
            link: "l".into(),
            topic: topic.into(),
            partitions: 1,
            state,
            reason: String::new(),
            created_at_ms: 0,
            target: Default::default(),
            switches: 0,
        }
    }

    #[test]
    fn a_mirror_the_routers_send_to_the_target_is_kept_unless_forced() {
        let mirroring = doc("a", MirrorState::Mirroring);
        assert!(
            removal_refusal(&[mirroring.clone(), doc("p", MirrorState::Paused)], false).is_none()
        );
        for state in [MirrorState::Promoted, MirrorState::Detached] {
            let e = removal_refusal(&[mirroring.clone(), doc("b", state)], false)
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("b (") && e.contains("--force") && !e.contains("a ("),
                "{e}"
            );
            assert!(removal_refusal(&[doc("b", state)], true).is_none());
        }
        for state in [MirrorState::Promoting, MirrorState::Demoting] {
            let e = removal_refusal(&[doc("c", state)], true)
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("c (") && e.contains("promotion"), "{e}");
        }
    }
}
