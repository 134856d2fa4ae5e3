//! `cutover group sync`: the committed offsets of consumer groups that
//! move without the routers (stopped on the source, started on the target
//! directly) copied to the target unchanged, as a promotion copies a
//! mirror group's, while the group is empty there. Offsets are identical
//! on both clusters, so the copy is exact (Cluster Linking translates
//! them and lags behind; MirrorMaker 2 translates them approximately).

use std::collections::BTreeSet;

use cutover_kafka::Cluster;
use cutover_model::Side;

use crate::error::{ApiError, ApiResult};
use crate::groups::{check_names, select_groups, MAX_GROUPS_PER_REQUEST};
use crate::links::connect;
use crate::promote_groups::{mirrored_topics, plan_copy, write_copy};
use crate::Orchestrator;

pub struct SyncGroups {
    pub link: String,
    pub groups: Vec<String>,
    /// Copy what is committed now even while members consume on the
    /// source (their later commits are not copied).
    pub allow_active: bool,
    pub dry_run: bool,
}

/// One group copied (or, with `dry_run`, that would be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedGroup {
    pub group: String,
    pub partitions: usize,
    /// Its members on the source then (only with `allow_active`).
    pub source_members: Vec<String>,
}

impl Orchestrator {
    /// Checks every named group first (a consumer group of the source,
    /// not a mirror group, empty on the target, and on the source unless
    /// `allow_active`; commits only for mirror topics), then copies each.
    pub async fn sync_group_offsets(&self, req: SyncGroups) -> ApiResult<Vec<SyncedGroup>> {
        let link = self.link_versioned(&req.link).await?;
        if req.groups.is_empty() {
            return Err(ApiError::BadRequest("name at least one group".into()));
        }
        if req.groups.len() > MAX_GROUPS_PER_REQUEST {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_GROUPS_PER_REQUEST} groups per request, {} named",
                req.groups.len()
            )));
        }
        check_names(&req.groups)?;
        let mirror_groups: BTreeSet<String> = self
            .groups_of(&req.link)
            .await?
            .into_iter()
            .map(|g| g.group)
            .collect();
        if let Some(g) = req.groups.iter().find(|g| mirror_groups.contains(*g)) {
            return Err(ApiError::Precondition(format!(
                "nothing changed: group {g} is a mirror group of link {}: its home moves with \
                 its members through the routers (`cutover promote --link {} --group {g}`); \
                 group sync is for groups that move without the routers (`cutover group remove` \
                 first if that is what it does)",
                req.link, req.link
            )));
        }
        let mirrored = mirrored_topics(self, &req.link).await?;
        let timeout = self.cfg.kafka_timeout();
        let source = connect("source", &link.value.source, timeout).await?;
        let target = match connect("target", &link.value.target, timeout).await {
            Ok(t) => t,
            Err(e) => {
                source.close().await;
                return Err(e);
            }
        };
        let result = sync(&req, &source, &target, &mirrored).await;
        source.close().await;
        target.close().await;
        result
    }
}

async fn sync(
    req: &SyncGroups,
    source: &Cluster,
    target: &Cluster,
    mirrored: &BTreeSet<String>,
) -> ApiResult<Vec<SyncedGroup>> {
    let listed = source.list_groups().await.map_err(ApiError::kafka_doing(
        "source",
        source,
        "listing the consumer groups",
    ))?;
    select_groups(&listed, &req.groups, &[], &[], &BTreeSet::new(), &req.link)?;
    let mut plans = Vec::with_capacity(req.groups.len());
    for group in &req.groups {
        let at_source = source
            .describe_group(group)
            .await
            .map_err(ApiError::kafka_doing(
                "source",
                source,
                format!("describing group {group}"),
            ))?;
        let members: Vec<String> = at_source.members.iter().map(|m| m.to_string()).collect();
        if !members.is_empty() && !req.allow_active {
            return Err(ApiError::Precondition(format!(
                "nothing changed: group {group} still has members on the source ({}; state {}): \
                 what they commit after the copy would not reach the target. Stop them, then \
                 retry (or give --allow-active to copy what is committed now)",
                members.join(", "),
                at_source.state
            )));
        }
        let copy = plan_copy(
            group,
            (source, Side::Source),
            (target, Side::Target),
            mirrored,
        )
        .await?;
        plans.push((group, copy, members));
    }
    let mut synced = Vec::with_capacity(plans.len());
    for (group, copy, source_members) in plans {
        if !req.dry_run {
            write_copy(group, (target, Side::Target), &copy).await?;
        }
        synced.push(SyncedGroup {
            group: group.clone(),
            partitions: copy.len(),
            source_members,
        });
    }
    Ok(synced)
}
