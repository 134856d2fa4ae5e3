//! Mirror groups: which consumer groups of the source a request selects,
//! and their documents in etcd (`groups/<link>/<group>`), which every
//! router watches to send a group's requests to its home.

use std::collections::BTreeSet;

use cutover_coord::{Precondition, WriteOp};
use cutover_kafka::{Cluster, GroupDescription, GroupMember, ListedGroup};
use cutover_model::{keys, now_ms, validate, Link, MirrorGroup, MirrorState, Side};
use regex::Regex;

use crate::error::{ApiError, ApiResult};
use crate::guards::store_under_link_txn;
use crate::links::connect;
use crate::promote::cluster_of;
use crate::routers::{self, group_view};
use crate::Orchestrator;

/// One request's groups (and its link) are written in one etcd
/// transaction, which etcd bounds at 128 operations by default.
pub(crate) const MAX_GROUPS_PER_REQUEST: usize = 100;

pub struct AddGroups {
    pub link: String,
    pub groups: Vec<String>,
    pub include_regex: Vec<String>,
    pub exclude_regex: Vec<String>,
    pub manual: bool,
    pub dry_run: bool,
}

/// Each name a valid group id, none named twice.
pub(crate) fn check_names(groups: &[String]) -> ApiResult<()> {
    let mut seen = BTreeSet::new();
    for g in groups {
        validate::group_name(g)?;
        if !seen.insert(g) {
            return Err(ApiError::BadRequest(format!("group {g:?} is named twice")));
        }
    }
    Ok(())
}

/// Groups of the classic consumer protocol, and groups that only commit
/// offsets (assign + commit, no membership): what routers can move. Kafka
/// Connect workers ("connect") and others keep their own protocol.
fn movable(g: &ListedGroup) -> bool {
    matches!(g.protocol_type.as_str(), "consumer" | "")
}

/// The groups a request selects among the source's `listed` groups, sorted:
/// every name (unless excluded), and every movable group an include regex
/// matches. A name the source does not know, one already mirrored, or one
/// of another protocol is refused, so a typo is not registered.
pub fn select_groups(
    listed: &[ListedGroup],
    names: &[String],
    include: &[Regex],
    exclude: &[Regex],
    existing: &BTreeSet<String>,
    link: &str,
) -> ApiResult<Vec<String>> {
    let excluded = |g: &str| exclude.iter().any(|r| r.is_match(g));
    let mut selected = BTreeSet::new();
    for name in names {
        let Some(g) = listed.iter().find(|g| &g.group_id == name) else {
            return Err(ApiError::Precondition(format!(
                "group {name:?} is not a group of the source cluster: a group exists there once \
                 a member joined or offsets were committed. Check the name (`kafka-consumer-groups \
                 --list` on the source)"
            )));
        };
        if !movable(g) {
            return Err(ApiError::Precondition(format!(
                "group {name:?} uses the {:?} protocol (e.g. Kafka Connect workers); only consumer \
                 groups move through the routers",
                g.protocol_type
            )));
        }
        if existing.contains(name) {
            return Err(ApiError::AlreadyExists {
                what: "mirror group",
                name: format!("{link}/{name}"),
            });
        }
        if !excluded(name) {
            selected.insert(name.clone());
        }
    }
    for g in listed {
        let name = &g.group_id;
        if movable(g)
            && include.iter().any(|r| r.is_match(name))
            && !excluded(name)
            && !existing.contains(name)
        {
            selected.insert(name.clone());
        }
    }
    if selected.is_empty() {
        return Err(ApiError::Precondition(
            "no source group is selected: every name is excluded or already a mirror group, or \
             no consumer group of the source matches the regex"
                .into(),
        ));
    }
    if selected.len() > MAX_GROUPS_PER_REQUEST {
        return Err(ApiError::BadRequest(format!(
            "{} groups selected; add at most {MAX_GROUPS_PER_REQUEST} per request (all of a \
             request are stored in one etcd transaction), e.g. with narrower --include patterns",
            selected.len()
        )));
    }
    Ok(selected.into_iter().collect())
}

/// What a promotion of a group would meet now, from its members at home
/// and the member ids the routers forwarded requests of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Each member at home, and whether it comes through a router.
    pub members: Vec<(GroupMember, bool)>,
    pub decision: String,
    /// At home on the source, with every member (at least one) routed.
    pub ready: bool,
}

impl Evidence {
    fn unknown(why: String) -> Evidence {
        Evidence {
            members: Vec::new(),
            decision: format!("cannot tell: {why}"),
            ready: false,
        }
    }
}

pub fn decide(g: &MirrorGroup, home: &GroupDescription, routed: &BTreeSet<String>) -> Evidence {
    let members: Vec<(GroupMember, bool)> = home
        .members
        .iter()
        .map(|m| (m.clone(), routed.contains(&m.member_id)))
        .collect();
    let direct: Vec<String> = members
        .iter()
        .filter(|(_, through)| !through)
        .map(|(m, _)| m.to_string())
        .collect();
    let (decision, ready) = match g.state {
        MirrorState::Promoting | MirrorState::Demoting => (
            "moving: a promotion or rollback of it is running".to_string(),
            false,
        ),
        MirrorState::Promoted => (
            format!(
                "at home on the target; `cutover rollback --link {} --group {}` moves it back",
                g.link, g.group
            ),
            false,
        ),
        _ if members.is_empty() => (
            "no member at the source: promoted once its members come through the routers"
                .to_string(),
            false,
        ),
        _ if !home.is_settled() => (
            format!(
                "rebalancing at the source ({}): waiting for it to settle, so that no member's \
                 JoinGroup is under way there",
                home.state
            ),
            false,
        ),
        _ if !direct.is_empty() => (
            format!(
                "{} of {} members connected to the source directly, not through a router (or \
                 still joining through one): {}",
                direct.len(),
                members.len(),
                direct.join(", ")
            ),
            false,
        ),
        _ if g.auto_promote => (
            format!(
                "every member ({}) comes through the routers: promoted automatically",
                members.len()
            ),
            true,
        ),
        _ => (
            format!(
                "every member ({}) comes through the routers; promotion is manual: `cutover \
                 promote --link {} --group {}`",
                members.len(),
                g.link,
                g.group
            ),
            true,
        ),
    };
    Evidence {
        members,
        decision,
        ready,
    }
}

impl Orchestrator {
    /// The link's mirror groups with the evidence of each (members at
    /// home, through routers or not) and its owning group-coordinator.
    pub async fn groups_with_evidence(
        &self,
        link: &Link,
    ) -> ApiResult<Vec<(MirrorGroup, Evidence, Option<String>)>> {
        let groups = self.groups_of(&link.name).await?;
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let routers = routers::members_of(&self.coord, &link.name).await?;
        let mut clusters: Vec<(Side, Result<Cluster, String>)> = Vec::new();
        let mut out = Vec::with_capacity(groups.len());
        for g in groups {
            let home = g.home();
            if !clusters.iter().any(|(s, _)| *s == home) {
                let c = connect(
                    home.name(),
                    cluster_of(link, home),
                    self.cfg.kafka_timeout(),
                )
                .await
                .map_err(|e| e.to_string());
                clusters.push((home, c));
            }
            let owner =
                cutover_coord::owner_of(&self.coord, &keys::group_resource(&link.name, &g.group))
                    .await?;
            let evidence = match clusters.iter().find(|(s, _)| *s == home) {
                Some((_, Ok(cluster))) => match cluster.describe_group(&g.group).await {
                    Ok(d) => match group_view(&routers, &g.group).await {
                        Ok(view) => decide(&g, &d, &view.routed),
                        Err(e) => Evidence::unknown(format!("not every router answered: {e}")),
                    },
                    Err(e) => Evidence::unknown(format!("the {home} cluster: {e}")),
                },
                Some((_, Err(e))) => Evidence::unknown(e.clone()),
                None => Evidence::unknown("no cluster".into()),
            };
            out.push((g, evidence, owner));
        }
        for (_, c) in clusters {
            if let Ok(c) = c {
                c.close().await;
            }
        }
        Ok(out)
    }

    pub async fn groups_of(&self, link: &str) -> ApiResult<Vec<MirrorGroup>> {
        let mut v: Vec<MirrorGroup> = self
            .coord
            .list::<MirrorGroup>(&keys::groups_of(link))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect();
        v.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(v)
    }

    pub async fn add_groups(&self, req: AddGroups) -> ApiResult<Vec<MirrorGroup>> {
        let link = self.link_versioned(&req.link).await?;
        if req.groups.is_empty() && req.include_regex.is_empty() {
            return Err(ApiError::BadRequest(
                "name at least one group or give an include regex".into(),
            ));
        }
        check_names(&req.groups)?;
        let include = req
            .include_regex
            .iter()
            .map(|r| validate::group_regex(r))
            .collect::<Result<Vec<_>, _>>()?;
        let exclude = req
            .exclude_regex
            .iter()
            .map(|r| validate::group_regex(r))
            .collect::<Result<Vec<_>, _>>()?;
        let existing: BTreeSet<String> = self
            .groups_of(&req.link)
            .await?
            .into_iter()
            .map(|g| g.group)
            .collect();

        let source = connect("source", &link.value.source, self.cfg.kafka_timeout()).await?;
        let listed = source.list_groups().await.map_err(ApiError::kafka_doing(
            "source",
            &source,
            "listing the consumer groups",
        ));
        source.close().await;
        let selected = select_groups(
            &listed?,
            &req.groups,
            &include,
            &exclude,
            &existing,
            &req.link,
        )?;
        let now = now_ms();
        let groups: Vec<MirrorGroup> = selected
            .into_iter()
            .map(|group| MirrorGroup {
                link: req.link.clone(),
                group,
                state: MirrorState::Mirroring,
                auto_promote: !req.manual,
                switches: 0,
                created_at_ms: now,
            })
            .collect();
        if req.dry_run {
            return Ok(groups);
        }
        let mut docs = Vec::with_capacity(groups.len());
        for g in &groups {
            let doc = serde_json::to_value(g).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            docs.push((keys::group(&g.link, &g.group), doc));
        }
        let (guards, writes) = store_under_link_txn(&link, docs)?;
        if !self.coord.txn(&guards, &writes).await? {
            return Err(ApiError::Conflict(format!(
                "link {:?} or its mirror groups (nothing was stored)",
                req.link
            )));
        }
        tracing::info!(link = %req.link, groups = ?groups.iter().map(|g| &g.group).collect::<Vec<_>>(),
            "mirror groups added");
        Ok(groups)
    }

    /// Removes mirror groups whose home is the source: their clients'
    /// requests go on to the source, as for any group not mirrored. A
    /// group at home on the target (or moving) is refused: its commits
    /// are there.
    pub async fn remove_groups(
        &self,
        link: &str,
        groups: &[String],
        all: bool,
    ) -> ApiResult<Vec<MirrorGroup>> {
        self.get_link(link).await?;
        let stored = self
            .coord
            .list::<MirrorGroup>(&keys::groups_of(link))
            .await?;
        let selected: Vec<_> = if all {
            stored.into_iter().map(|(_, v)| v).collect()
        } else {
            if groups.is_empty() {
                return Err(ApiError::BadRequest(
                    "name the mirror groups or pass all".into(),
                ));
            }
            let mut out = Vec::with_capacity(groups.len());
            for name in groups {
                let Some((_, v)) = stored.iter().find(|(_, v)| &v.value.group == name) else {
                    return Err(ApiError::NotFound {
                        what: "mirror group",
                        name: format!("{link}/{name}"),
                    });
                };
                out.push(v.clone());
            }
            out
        };
        if selected.len() > MAX_GROUPS_PER_REQUEST {
            return Err(ApiError::BadRequest(format!(
                "{} groups selected; remove at most {MAX_GROUPS_PER_REQUEST} per request",
                selected.len()
            )));
        }
        if let Some(g) = selected
            .iter()
            .find(|g| g.value.state != MirrorState::Mirroring)
        {
            return Err(ApiError::Precondition(format!(
                "mirror group {link}/{} is {:?}: its home is (or is becoming) the target, where \
                 its commits are; roll it back first (cutover rollback --link {link} --group {})",
                g.value.group, g.value.state, g.value.group
            )));
        }
        let mut guards = Vec::with_capacity(selected.len());
        let mut writes = Vec::with_capacity(selected.len());
        for g in &selected {
            let key = keys::group(link, &g.value.group);
            guards.push(Precondition::ModRevision(key.clone(), g.mod_revision));
            writes.push(WriteOp::Delete(key));
        }
        if !self.coord.txn(&guards, &writes).await? {
            return Err(ApiError::Conflict(format!(
                "the mirror groups of link {link:?} (nothing was removed)"
            )));
        }
        Ok(selected.into_iter().map(|v| v.value).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: &str, protocol_type: &str) -> ListedGroup {
        ListedGroup {
            group_id: id.into(),
            protocol_type: protocol_type.into(),
            state: "Stable".into(),
        }
    }

    fn source() -> Vec<ListedGroup> {
        vec![
            listed("orders-app", "consumer"),
            listed("orders-audit", "consumer"),
            listed("orders-connect", "connect"),
            listed("flink-job", ""),
            listed("billing", "consumer"),
        ]
    }

    fn re(p: &str) -> Regex {
        validate::group_regex(p).expect("regex")
    }

    #[test]
    fn names_must_be_consumer_groups_of_the_source_and_not_mirrored_yet() {
        let none = BTreeSet::new();
        let got = select_groups(
            &source(),
            &["billing".into(), "flink-job".into()],
            &[],
            &[],
            &none,
            "l",
        )
        .expect("selected");
        assert_eq!(got, vec!["billing", "flink-job"]);

        let typo = select_groups(&source(), &["biling".into()], &[], &[], &none, "l").unwrap_err();
        assert_eq!(typo.code(), tonic::Code::FailedPrecondition);
        assert!(
            typo.to_string()
                .contains("\"biling\" is not a group of the source"),
            "{typo}"
        );

        let connect =
            select_groups(&source(), &["orders-connect".into()], &[], &[], &none, "l").unwrap_err();
        assert!(
            connect.to_string().contains("\"connect\" protocol"),
            "{connect}"
        );

        let existing = BTreeSet::from(["billing".to_string()]);
        let twice =
            select_groups(&source(), &["billing".into()], &[], &[], &existing, "l").unwrap_err();
        assert_eq!(twice.code(), tonic::Code::AlreadyExists);
    }

    #[test]
    fn a_regex_selects_movable_groups_not_excluded_nor_mirrored() {
        let existing = BTreeSet::from(["orders-audit".to_string()]);
        let got = select_groups(&source(), &[], &[re("orders-.*")], &[], &existing, "l")
            .expect("selected");
        // orders-connect is a Connect group; orders-audit is mirrored already.
        assert_eq!(got, vec!["orders-app"]);

        let got = select_groups(
            &source(),
            &["billing".into()],
            &[re(".*")],
            &[re("orders-.*"), re("billing")],
            &BTreeSet::new(),
            "l",
        )
        .expect("selected");
        assert_eq!(got, vec!["flink-job"]);

        let none = select_groups(&source(), &[], &[re("nothing")], &[], &BTreeSet::new(), "l")
            .unwrap_err();
        assert_eq!(none.code(), tonic::Code::FailedPrecondition);
    }

    fn doc(state: MirrorState, auto_promote: bool) -> MirrorGroup {
        MirrorGroup {
            link: "l".into(),
            group: "g".into(),
            state,
            auto_promote,
            switches: 0,
            created_at_ms: 1,
        }
    }

    fn member(id: &str) -> GroupMember {
        GroupMember {
            member_id: id.into(),
            group_instance_id: None,
            client_id: format!("c-{id}"),
            client_host: "/10.1.1.1".into(),
        }
    }

    fn stable(members: &[GroupMember]) -> GroupDescription {
        GroupDescription {
            group_id: "g".into(),
            state: if members.is_empty() {
                "Empty"
            } else {
                "Stable"
            }
            .into(),
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            members: members.to_vec(),
        }
    }

    #[test]
    fn a_group_is_ready_once_every_member_comes_through_the_routers() {
        let members = [member("a"), member("b")];
        let routed = BTreeSet::from(["a".to_string()]);
        let e = decide(
            &doc(MirrorState::Mirroring, true),
            &stable(&members),
            &routed,
        );
        assert!(!e.ready);
        assert_eq!(
            e.members.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
            [true, false]
        );
        assert!(
            e.decision
                .contains("1 of 2 members connected to the source directly"),
            "{}",
            e.decision
        );
        assert!(
            e.decision.contains("b (client id \"c-b\" from /10.1.1.1)"),
            "{}",
            e.decision
        );

        let all = BTreeSet::from(["a".to_string(), "b".to_string()]);
        let e = decide(&doc(MirrorState::Mirroring, true), &stable(&members), &all);
        assert!(
            e.ready && e.decision.contains("promoted automatically"),
            "{e:?}"
        );
        let e = decide(&doc(MirrorState::Mirroring, false), &stable(&members), &all);
        assert!(
            e.ready && e.decision.contains("promotion is manual"),
            "{e:?}"
        );

        let mut joining = stable(&members);
        joining.state = "PreparingRebalance".into();
        let e = decide(&doc(MirrorState::Mirroring, true), &joining, &all);
        assert!(
            !e.ready && e.decision.contains("rebalancing at the source"),
            "{e:?}"
        );
        let e = decide(&doc(MirrorState::Mirroring, true), &stable(&[]), &all);
        assert!(!e.ready && e.decision.contains("no member"), "{e:?}");
        for state in [
            MirrorState::Promoting,
            MirrorState::Promoted,
            MirrorState::Demoting,
        ] {
            assert!(
                !decide(&doc(state, true), &stable(&members), &all).ready,
                "{state:?}"
            );
        }
    }

    #[test]
    fn more_groups_than_one_transaction_holds_are_refused() {
        let many: Vec<ListedGroup> = (0..=MAX_GROUPS_PER_REQUEST)
            .map(|i| listed(&format!("g{i}"), "consumer"))
            .collect();
        let e = select_groups(&many, &[], &[re("g.*")], &[], &BTreeSet::new(), "l").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
