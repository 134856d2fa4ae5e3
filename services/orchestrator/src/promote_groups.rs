//! A promotion's groups carried out (design.md "Group promotion"): their
//! members rejoin through the routers, which hold the JoinGroups; their
//! final commits are copied unchanged to the new home; after the switch,
//! the members the old home still lists are removed from it, so that it
//! is empty for a later move back.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cutover_kafka::{Cluster, GroupOffsets};
use cutover_model::{keys, MirrorTopic, Side};
use tracing::{info, warn};

use crate::error::{ApiError, ApiResult};
use crate::promote::{Barrier, POLL};
use crate::promotion::{offsets_to_copy, rejoin, stale_commits, Rejoin};
use crate::routers::{self, group_view, GroupView};
use crate::Orchestrator;

impl Orchestrator {
    /// What the routers of `link` know of `group`.
    async fn routed(&self, link: &str, group: &str) -> ApiResult<GroupView> {
        let members = routers::members_of(&self.coord, link).await?;
        group_view(&members, group).await.map_err(|e| {
            ApiError::Unavailable(format!(
                "nothing changed: not every router could say which members of group {group} it \
                 serves: {e}. Bring the router back or stop it (its clients move to the \
                 others), then retry."
            ))
        })
    }

    /// Refused when a member of `group` at its home `side` never came
    /// through a router. A rebalance under way there is waited out first
    /// (up to `settle`): a member's JoinGroup sent before the routers hold
    /// would be answered by the old home after the switch.
    pub(crate) async fn direct_members(
        &self,
        home: &Cluster,
        side: Side,
        link: &str,
        group: &str,
        settle: Duration,
    ) -> ApiResult<()> {
        let deadline = Instant::now() + settle;
        let described = loop {
            let d = home
                .describe_group(group)
                .await
                .map_err(ApiError::kafka_doing(
                    side.name(),
                    home,
                    format!("describing group {group}"),
                ))?;
            if d.is_settled() {
                break d;
            }
            if Instant::now() >= deadline {
                return Err(ApiError::Unavailable(format!(
                    "nothing changed: group {group} is still rebalancing at the {side} cluster \
                     ({}) after {} ms; retry once it is Stable",
                    d.state,
                    settle.as_millis()
                )));
            }
            tokio::time::sleep(POLL * 5).await;
        };
        let view = self.routed(link, group).await?;
        match rejoin(&described.members, &view.routed, u64::MAX) {
            Rejoin::Direct(direct) => Err(direct_refusal(group, side, &direct)),
            _ => Ok(()),
        }
    }
}

fn direct_refusal(group: &str, side: Side, direct: &[String]) -> ApiError {
    ApiError::Precondition(format!(
        "nothing changed: group {group} has members connected to the {side} cluster directly, \
         not through a router: {}. Point them at a router (bootstrap.servers) or stop them, \
         and retry.",
        direct.join(", ")
    ))
}

impl Barrier<'_> {
    /// Waits until the routers hold a JoinGroup of every member of the
    /// set's groups: the members committed on revoke (clients send their
    /// JoinGroup only once that commit was answered), so the old home's
    /// commits are final.
    pub(crate) async fn rejoined(&self, old: &Cluster, timeout: Duration) -> ApiResult<()> {
        let side = self.rec.direction.from_side();
        let link = self.rec.link.clone();
        let deadline = Instant::now() + timeout;
        let mut pending: BTreeSet<String> = self.rec.groups.iter().cloned().collect();
        loop {
            let mut waiting = Vec::new();
            for group in pending.clone() {
                let described = old
                    .describe_group(&group)
                    .await
                    .map_err(ApiError::kafka_doing(
                        side.name(),
                        old,
                        format!("describing group {group}"),
                    ))?;
                let view = self.orch.routed(&link, &group).await?;
                match rejoin(&described.members, &view.routed, view.held) {
                    Rejoin::Rejoined => {
                        info!(group = %group, members = described.members.len(), "every member rejoined");
                        pending.remove(&group);
                    }
                    Rejoin::Waiting { held, members } => {
                        waiting.push(format!("{group}: {held} of {members}"));
                    }
                    Rejoin::Direct(direct) => return Err(direct_refusal(&group, side, &direct)),
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ApiError::TooSlow(format!(
                    "nothing changed: not every member of the groups rejoined within {} ms \
                     (JoinGroups held of members: {}). Members rejoin after their next \
                     heartbeat once their revoke callback (and its commit) returned; a member \
                     stuck in processing rejoins at its next poll. Retry, or give a longer \
                     rejoin_timeout_ms",
                    timeout.as_millis(),
                    waiting.join("; ")
                )));
            }
            tokio::time::sleep(POLL * 5).await;
        }
    }

    /// Copies each group's commits from the old home to the new one
    /// ([`plan_copy`], then [`write_copy`]).
    pub(crate) async fn copy_offsets(&self, old: &Cluster, new: &Cluster) -> ApiResult<()> {
        let from = self.rec.direction.from_side();
        let mirrored = mirrored_topics(self.orch, &self.rec.link).await?;
        for group in &self.rec.groups {
            let copy = plan_copy(group, (old, from), (new, from.other()), &mirrored).await?;
            write_copy(group, (new, from.other()), &copy).await?;
        }
        Ok(())
    }

    /// Removes from the old home the members the routers forwarded: they
    /// rejoin at the new home through the routers, and the old home's
    /// group is left empty (a later move back needs it so). A failure only
    /// warns: those members expire after their session timeout.
    pub(crate) async fn leave_old_home(&self, old: &Cluster) {
        let side = self.rec.direction.from_side();
        for group in &self.rec.groups {
            let described = match old.describe_group(group).await {
                Ok(d) => d,
                Err(e) => {
                    warn!(group = %group, side = side.name(), error = %e, "cannot describe the group at its old home; its members there expire after their session timeout");
                    continue;
                }
            };
            let view = match self.orch.routed(&self.rec.link, group).await {
                Ok(v) => v,
                Err(e) => {
                    warn!(group = %group, error = %e, "cannot ask the routers which members they serve; leaving the old home's members to expire");
                    continue;
                }
            };
            let stale: Vec<_> = described
                .members
                .into_iter()
                .filter(|m| view.routed.contains(&m.member_id))
                .collect();
            match old.remove_group_members(group, &stale).await {
                Ok(()) => {
                    info!(group = %group, members = stale.len(), side = side.name(), "members removed from the old home")
                }
                Err(e) => {
                    warn!(group = %group, side = side.name(), error = %e, "cannot remove the members from the old home; they expire after their session timeout")
                }
            }
        }
    }
}

/// The link's mirror topics (commits for others are not copied).
pub(crate) async fn mirrored_topics(
    orch: &Orchestrator,
    link: &str,
) -> ApiResult<BTreeSet<String>> {
    Ok(orch
        .coord
        .list::<MirrorTopic>(&keys::mirrors_of(link))
        .await?
        .into_iter()
        .map(|(_, v)| v.value.topic)
        .collect())
}

/// What copying `group`'s commits from `old` to `new` writes: the group
/// must have no member on `new`, and every commit must be for a mirror
/// topic (`offsets_to_copy`). Reads only.
pub(crate) async fn plan_copy(
    group: &str,
    (old, from): (&Cluster, Side),
    (new, to): (&Cluster, Side),
    mirrored: &BTreeSet<String>,
) -> ApiResult<GroupOffsets> {
    let doing = |what: &str| format!("{what} {group}");
    let there = new
        .describe_group(group)
        .await
        .map_err(ApiError::kafka_doing(
            to.name(),
            new,
            doing("describing group"),
        ))?;
    if !there.is_empty() {
        let members: Vec<String> = there.members.iter().map(|m| m.to_string()).collect();
        return Err(ApiError::Precondition(format!(
            "nothing changed: group {group} already has members on the {to} cluster \
             ({}; state {}), connected to it directly; a group must be whole on one \
             cluster: stop them, then retry",
            members.join(", "),
            there.state
        )));
    }
    let committed = old
        .fetch_group_offsets(group)
        .await
        .map_err(ApiError::kafka_doing(
            from.name(),
            old,
            doing("reading the commits of group"),
        ))?;
    offsets_to_copy(group, &committed, mirrored)
}

/// Writes `copy` as `group`'s commits on `new` (admin OffsetCommit,
/// unchanged offsets, epoch -1); commits left there from an earlier stay
/// and not in the copy are deleted; `new` is read back and must hold
/// exactly the copy.
pub(crate) async fn write_copy(
    group: &str,
    (new, to): (&Cluster, Side),
    copy: &GroupOffsets,
) -> ApiResult<()> {
    let doing = |what: &str| format!("{what} {group}");
    let results = new
        .commit_group_offsets(group, copy)
        .await
        .map_err(ApiError::kafka_doing(
            to.name(),
            new,
            doing("writing the commits of group"),
        ))?;
    for ((topic, partition), r) in results {
        r.map_err(ApiError::kafka_doing(
            to.name(),
            new,
            format!("committing {topic}-{partition} for group {group}"),
        ))?;
    }
    let read_back = || async {
        new.fetch_group_offsets(group)
            .await
            .map_err(ApiError::kafka_doing(
                to.name(),
                new,
                doing("reading back the commits of group"),
            ))
    };
    let now = read_back().await?;
    let stale = stale_commits(&now, copy);
    let stored = if stale.is_empty() {
        now
    } else {
        new.delete_group_offsets(group, &stale)
            .await
            .map_err(ApiError::kafka_doing(
                to.name(),
                new,
                doing("deleting stale commits of group"),
            ))?;
        read_back().await?
    };
    if &stored != copy {
        return Err(ApiError::Conflict(format!(
            "the commits of group {group} on the {to} cluster (something else committed \
             there while they were copied)"
        )));
    }
    info!(group = %group, partitions = copy.len(), side = to.name(), "commits copied");
    Ok(())
}
