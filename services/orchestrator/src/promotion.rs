//! The decisions of a promotion's barrier (design.md "Topic promotion"),
//! apart from the I/O that carries them out: which topics may start, what
//! each step writes to their documents, whether the old primary was quiet,
//! and what another orchestrator does with a promotion it finds running.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use cutover_kafka::{ActiveProducer, CommittedOffset, GroupMember, GroupOffsets, OpenTransaction};
use cutover_model::{
    keys, Direction, MirrorGroup, MirrorState, MirrorTopic, Promotion, MAX_PRIMARY_SWITCHES,
};

use crate::error::{ApiError, ApiResult};

/// Log end offsets of the set's partitions on one cluster.
pub type Ends = BTreeMap<(String, i32), i64>;

/// What a promotion moves: mirror topics (their primary) and mirror
/// groups (their home), each with a topic's states.
pub trait Moved: Clone {
    const NOUN: &'static str;
    fn name(&self) -> &str;
    /// Where it is stored.
    fn key(&self) -> String;
    fn state(&self) -> MirrorState;
    fn switches(&self) -> u32;
    /// The document in `state` after `switches` switches.
    fn moved(&self, state: MirrorState, switches: u32) -> Self;
    /// Whether `p` moves the one named `name`.
    fn in_promotion(p: &Promotion, name: &str) -> bool;
}

impl Moved for MirrorTopic {
    const NOUN: &'static str = "mirror topic";
    fn name(&self) -> &str {
        &self.topic
    }
    fn key(&self) -> String {
        keys::mirror(&self.link, &self.topic)
    }
    fn state(&self) -> MirrorState {
        self.state
    }
    fn switches(&self) -> u32 {
        self.switches
    }
    fn moved(&self, state: MirrorState, switches: u32) -> Self {
        MirrorTopic {
            state,
            switches,
            reason: String::new(),
            ..self.clone()
        }
    }
    fn in_promotion(p: &Promotion, name: &str) -> bool {
        p.topics.iter().any(|t| t == name)
    }
}

impl Moved for MirrorGroup {
    const NOUN: &'static str = "mirror group";
    fn name(&self) -> &str {
        &self.group
    }
    fn key(&self) -> String {
        keys::group(&self.link, &self.group)
    }
    fn state(&self) -> MirrorState {
        self.state
    }
    fn switches(&self) -> u32 {
        self.switches
    }
    fn moved(&self, state: MirrorState, switches: u32) -> Self {
        MirrorGroup {
            state,
            switches,
            ..self.clone()
        }
    }
    fn in_promotion(p: &Promotion, name: &str) -> bool {
        p.groups.iter().any(|g| g == name)
    }
}

/// The topics and groups a promotion (or rollback) on `link` moves, each
/// sorted, once each; refused, naming every one that stands in the way,
/// when one is unknown, in the wrong state, at its last switch, or in
/// another running promotion.
pub fn plan_start(
    direction: Direction,
    link: &str,
    topics: &[String],
    groups: &[String],
    mirrors: &BTreeMap<String, MirrorTopic>,
    mirror_groups: &BTreeMap<String, MirrorGroup>,
    running: &[Promotion],
) -> ApiResult<(Vec<String>, Vec<String>)> {
    if topics.is_empty() && groups.is_empty() {
        return Err(ApiError::BadRequest(
            "name at least one mirror topic or group to move".into(),
        ));
    }
    let mut problems = Vec::new();
    let topics = plan_names(direction, link, topics, mirrors, running, &mut problems)?;
    let groups = plan_names(
        direction,
        link,
        groups,
        mirror_groups,
        running,
        &mut problems,
    )?;
    if !problems.is_empty() {
        return Err(ApiError::Precondition(format!(
            "nothing changed: {}",
            problems.join("; ")
        )));
    }
    Ok((topics, groups))
}

fn plan_names<D: Moved>(
    direction: Direction,
    link: &str,
    requested: &[String],
    docs: &BTreeMap<String, D>,
    running: &[Promotion],
    problems: &mut Vec<String>,
) -> ApiResult<Vec<String>> {
    let names: BTreeSet<&String> = requested.iter().collect();
    let unknown: Vec<&str> = names
        .iter()
        .filter(|t| !docs.contains_key(t.as_str()))
        .map(|t| t.as_str())
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::NotFound {
            what: D::NOUN,
            name: format!("{link}/{}", unknown.join(",")),
        });
    }
    for t in &names {
        if let Some(p) = running
            .iter()
            .find(|p| p.is_running() && D::in_promotion(p, t))
        {
            problems.push(format!(
                "{t} is in {} {} (step {:?}); wait for it to end",
                p.direction.noun(),
                p.id,
                p.step
            ));
            continue;
        }
        let m = &docs[t.as_str()];
        let want = direction.from_state();
        if m.state() != want {
            problems.push(format!(
                "{t} is {:?}, and only {want:?} {}s can be {}",
                m.state(),
                D::NOUN,
                past(direction)
            ));
        } else if m.switches() >= MAX_PRIMARY_SWITCHES {
            problems.push(format!(
                "{t} has switched {} times, the most leader epochs can tell apart; remove the \
                 {} and add it afresh",
                m.switches(),
                D::NOUN
            ));
        }
    }
    Ok(names.into_iter().cloned().collect())
}

fn past(d: Direction) -> &'static str {
    match d {
        Direction::Promote => "promoted",
        Direction::Rollback => "rolled back",
    }
}

/// The document during the barrier: the primary (home) has not moved.
pub fn barrier_doc<D: Moved>(m: &D, direction: Direction) -> D {
    m.moved(direction.barrier_state(), m.switches())
}

/// The document once the primary (home) has moved: one switch more, so
/// leader epochs through the routers go up.
pub fn switched_doc<D: Moved>(m: &D, direction: Direction) -> D {
    m.moved(direction.to_state(), m.switches() + 1)
}

/// A group's document once its home moved: as [`switched_doc`], and a
/// group rolled back is no longer promoted automatically (the operator
/// moved it back for a reason; `promote --group` moves it again).
pub fn switched_group(g: &MirrorGroup, direction: Direction) -> MirrorGroup {
    let mut doc = switched_doc(g, direction);
    if direction == Direction::Rollback {
        doc.auto_promote = false;
    }
    doc
}

/// The document when the barrier is undone: as before it.
pub fn undone_doc<D: Moved>(m: &D, direction: Direction) -> D {
    m.moved(direction.from_state(), m.switches())
}

/// Where a group's rebalance stands, from its old home's members and the
/// routers' answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejoin {
    /// Every member's JoinGroup is held (or it has none): its commits are
    /// final.
    Rejoined,
    /// So many JoinGroups held of so many members.
    Waiting { held: u64, members: usize },
    /// Members the routers never forwarded a request of: they are
    /// connected to the cluster directly, and would stay in the old home.
    Direct(Vec<String>),
}

/// `members` as the old home's coordinator describes the group, `routed`
/// the member ids the routers forwarded requests of, `held` the
/// JoinGroups of the group the routers hold now.
pub fn rejoin(members: &[GroupMember], routed: &BTreeSet<String>, held: u64) -> Rejoin {
    let direct: Vec<String> = members
        .iter()
        .filter(|m| !routed.contains(&m.member_id))
        .map(|m| m.to_string())
        .collect();
    if !direct.is_empty() {
        return Rejoin::Direct(direct);
    }
    if held >= members.len() as u64 {
        Rejoin::Rejoined
    } else {
        Rejoin::Waiting {
            held,
            members: members.len(),
        }
    }
}

/// The commits to write at the group's new home: the old home's, offsets
/// and metadata unchanged (offsets are identical on both clusters), leader
/// epochs left out (-1: the new home's epochs are its own). Refused when
/// the group has commits for a topic that is not mirrored: the new home
/// would not have its records at those offsets.
pub fn offsets_to_copy(
    group: &str,
    old: &GroupOffsets,
    mirrored: &BTreeSet<String>,
) -> ApiResult<GroupOffsets> {
    let unmirrored: BTreeSet<&str> = old
        .keys()
        .map(|(t, _)| t.as_str())
        .filter(|t| !mirrored.contains(*t))
        .collect();
    if !unmirrored.is_empty() {
        return Err(ApiError::Precondition(format!(
            "nothing changed: group {group} has commits for topics that are not mirrored over \
             the link ({}); mirror them first (cutover mirror add), or the group would find no \
             records at its offsets",
            unmirrored.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(old
        .iter()
        .map(|(tp, c)| {
            (
                tp.clone(),
                CommittedOffset {
                    offset: c.offset,
                    leader_epoch: -1,
                    metadata: c.metadata.clone(),
                },
            )
        })
        .collect())
}

/// Commits the new home holds beyond what was copied (left from an
/// earlier stay there): deleted, so the group resumes only at what it
/// committed last.
pub fn stale_commits(new: &GroupOffsets, copied: &GroupOffsets) -> Vec<(String, i32)> {
    new.keys()
        .filter(|tp| !copied.contains_key(*tp))
        .cloned()
        .collect()
}

/// The producers the old primary knows on one partition of the set
/// (DescribeProducers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProducers {
    pub topic: String,
    pub partition: i32,
    pub producers: Vec<ActiveProducer>,
}

/// The transactions open on the set's partitions: the barrier waits for
/// them to end on the old primary (committed, aborted, or timed out by
/// the broker) before the switch, so that none is half on each cluster.
/// Each as `topic-partition: producer id P since offset O`, sorted.
pub fn open_transactions(producers: &[PartitionProducers]) -> Vec<String> {
    let mut open: Vec<String> = producers
        .iter()
        .flat_map(|pp| {
            pp.producers
                .iter()
                .filter(|p| p.current_txn_start_offset >= 0)
                .map(move |p| {
                    format!(
                        "{}-{}: producer id {} since offset {}",
                        pp.topic, pp.partition, p.producer_id, p.current_txn_start_offset
                    )
                })
        })
        .collect();
    open.sort();
    open
}

/// The transactions of `open` (as the coordinators list them) that span
/// any partition of `set` (the set's partitions and its groups' offsets
/// partitions), each as `transactional id T (producer id P, STATE) on
/// topic-partition, ...`, sorted.
pub fn open_on_set(open: &[OpenTransaction], set: &BTreeSet<(String, i32)>) -> Vec<String> {
    let mut named: Vec<String> = open
        .iter()
        .filter_map(|t| {
            let on: Vec<String> = t
                .partitions
                .iter()
                .filter(|tp| set.contains(*tp))
                .map(|(topic, p)| format!("{topic}-{p}"))
                .collect();
            (!on.is_empty()).then(|| {
                format!(
                    "transactional id {} (producer id {}, {}) on {}",
                    t.transactional_id,
                    t.producer_id,
                    t.state,
                    on.join(", ")
                )
            })
        })
        .collect();
    named.sort();
    named
}

/// Whether the old primary stayed still between two reads of its log ends
/// (`first`, then `second` a quiet period later) while every router held
/// the set's produce. A moving partition means someone writes to it
/// directly: refused, naming the partitions and the producer ids on them
/// that are not the routers' (`router_ids`, the upstream ids of the
/// routers' mappings on that cluster).
pub fn check_quiet(
    direction: Direction,
    first: &Ends,
    second: &Ends,
    producers: &[PartitionProducers],
    router_ids: &BTreeSet<i64>,
) -> ApiResult<()> {
    let moved: Vec<(&(String, i32), i64, i64)> = second
        .iter()
        .filter_map(|(tp, &after)| {
            let before = first.get(tp).copied().unwrap_or(-1);
            (after != before).then_some((tp, before, after))
        })
        .collect();
    if moved.is_empty() {
        return Ok(());
    }
    let side = direction.from_side().name();
    let mut msg = format!(
        "nothing changed: the {side} cluster took writes while every router held them, so a \
         client writes to it directly, not through a router:"
    );
    for ((topic, partition), before, after) in &moved {
        let _ = write!(msg, " {topic}-{partition} went from {before} to {after}");
        let direct: Vec<String> = producers
            .iter()
            .filter(|pp| &pp.topic == topic && pp.partition == *partition)
            .flat_map(|pp| &pp.producers)
            .filter(|p| !router_ids.contains(&p.producer_id))
            .map(|p| p.producer_id.to_string())
            .collect();
        if direct.is_empty() {
            msg.push_str(" (by a producer without an id: not idempotent);");
        } else {
            let _ = write!(msg, " (producer ids {});", direct.join(", "));
        }
    }
    msg.pop();
    let _ = write!(
        msg,
        ". Move those producers to a router (bootstrap.servers), or stop them, and retry."
    );
    Err(ApiError::Precondition(msg))
}

/// What an orchestrator does with a promotion it finds running without a
/// live leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing: it ended.
    None,
    /// It stopped before the switch: release the holds to the old primary
    /// and put the topics back.
    Undo,
    /// The primary moved: release the holds to the new primary and finish.
    Finish,
}

pub fn recover(p: &Promotion) -> Recovery {
    if !p.is_running() {
        Recovery::None
    } else if p.switched() {
        Recovery::Finish
    } else {
        Recovery::Undo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::{MirrorState, Step, TargetTopicSettings};

    fn mirror(topic: &str, state: MirrorState, switches: u32) -> MirrorTopic {
        MirrorTopic {
            link: "l".into(),
            topic: topic.into(),
            partitions: 2,
            state,
            reason: String::new(),
            created_at_ms: 1,
            target: TargetTopicSettings::default(),
            switches,
        }
    }

    fn mirrors(ms: &[MirrorTopic]) -> BTreeMap<String, MirrorTopic> {
        ms.iter().map(|m| (m.topic.clone(), m.clone())).collect()
    }

    fn names(ts: &[&str]) -> Vec<String> {
        ts.iter().map(|t| t.to_string()).collect()
    }

    fn promotion(topics: &[&str], step: Step) -> Promotion {
        Promotion {
            id: "p7".into(),
            link: "l".into(),
            direction: Direction::Promote,
            topics: names(topics),
            groups: vec![],
            step,
            steps: vec![],
            leader: "o1".into(),
            started_at_ms: 1,
            outcome: String::new(),
            quiet_ends: BTreeMap::new(),
            stall_ms: 0,
        }
    }

    /// A promotion of topics only.
    fn plan(
        d: Direction,
        link: &str,
        topics: &[String],
        ms: &BTreeMap<String, MirrorTopic>,
        running: &[Promotion],
    ) -> ApiResult<Vec<String>> {
        plan_start(d, link, topics, &[], ms, &BTreeMap::new(), running).map(|(t, g)| {
            assert!(g.is_empty());
            t
        })
    }

    fn refusal(r: ApiResult<Vec<String>>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(v) => panic!("accepted {v:?}"),
        }
    }

    #[test]
    fn mirroring_topics_start_a_promotion_once_each_and_sorted() {
        let ms = mirrors(&[
            mirror("b", MirrorState::Mirroring, 0),
            mirror("a", MirrorState::Mirroring, 2),
        ]);
        let got = plan(Direction::Promote, "l", &names(&["b", "a", "b"]), &ms, &[]);
        assert_eq!(got.expect("accepted"), names(&["a", "b"]));
    }

    #[test]
    fn a_promotion_is_refused_naming_every_topic_in_the_way() {
        let ms = mirrors(&[
            mirror("ok", MirrorState::Mirroring, 0),
            mirror("paused", MirrorState::Paused, 0),
            mirror("done", MirrorState::Promoted, 1),
            mirror("worn", MirrorState::Mirroring, MAX_PRIMARY_SWITCHES),
            mirror("busy", MirrorState::Mirroring, 0),
        ]);
        let running = [promotion(&["busy"], Step::Draining)];
        let msg = refusal(plan(
            Direction::Promote,
            "l",
            &names(&["ok", "paused", "done", "worn", "busy"]),
            &ms,
            &running,
        ));
        assert!(msg.starts_with("nothing changed"), "{msg}");
        for part in [
            "paused is Paused",
            "done is Promoted",
            "worn has switched 126 times",
            "busy is in promotion p7 (step Draining)",
        ] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
        assert!(!msg.contains("ok "), "{msg}");
        // An ended promotion is no obstacle.
        let ended = [promotion(&["busy"], Step::Done)];
        assert!(plan(Direction::Promote, "l", &names(&["busy"]), &ms, &ended).is_ok());
    }

    #[test]
    fn unknown_topics_and_empty_requests_are_refused() {
        let ms = mirrors(&[mirror("a", MirrorState::Mirroring, 0)]);
        let msg = refusal(plan(
            Direction::Promote,
            "l",
            &names(&["a", "x", "y"]),
            &ms,
            &[],
        ));
        assert!(
            msg.contains("l/x,y") && msg.contains("does not exist"),
            "{msg}"
        );
        let msg = refusal(plan(Direction::Promote, "l", &[], &ms, &[]));
        assert!(msg.contains("at least one"), "{msg}");
    }

    #[test]
    fn a_rollback_starts_from_promoted_topics_only() {
        let ms = mirrors(&[
            mirror("p", MirrorState::Promoted, 1),
            mirror("m", MirrorState::Mirroring, 0),
        ]);
        assert!(plan(Direction::Rollback, "l", &names(&["p"]), &ms, &[]).is_ok());
        let msg = refusal(plan(
            Direction::Rollback,
            "l",
            &names(&["p", "m"]),
            &ms,
            &[],
        ));
        assert!(
            msg.contains("m is Mirroring, and only Promoted mirror topics can be rolled back"),
            "{msg}"
        );
    }

    #[test]
    fn documents_move_the_primary_only_at_the_switch_and_count_it() {
        for (d, start) in [
            (Direction::Promote, mirror("t", MirrorState::Mirroring, 0)),
            (Direction::Rollback, mirror("t", MirrorState::Promoted, 1)),
        ] {
            let held = barrier_doc(&start, d);
            assert_eq!(held.state.primary(), start.state.primary(), "{d:?}");
            assert_eq!(held.switches, start.switches);
            let moved = switched_doc(&held, d);
            assert_eq!(
                moved.state.primary(),
                start.state.primary().other(),
                "{d:?}"
            );
            assert_eq!(moved.switches, start.switches + 1);
            assert_eq!(undone_doc(&held, d), start, "{d:?}");
        }
    }

    fn ends(pairs: &[(&str, i32, i64)]) -> Ends {
        pairs
            .iter()
            .map(|(t, p, e)| ((t.to_string(), *p), *e))
            .collect()
    }

    #[test]
    fn a_still_primary_is_quiet() {
        let e = ends(&[("a", 0, 10), ("a", 1, 0)]);
        assert!(check_quiet(Direction::Promote, &e, &e, &[], &BTreeSet::new()).is_ok());
    }

    #[test]
    fn a_moving_primary_is_refused_naming_partitions_and_direct_producers() {
        let first = ends(&[("a", 0, 10), ("a", 1, 5), ("b", 0, 3)]);
        let second = ends(&[("a", 0, 14), ("a", 1, 5), ("b", 0, 4)]);
        let writers = [
            on("a", 0, &[(4001, -1), (77, -1)]),
            on("a", 1, &[(4002, -1)]),
        ];
        let routers = BTreeSet::from([77]);
        let msg = check_quiet(Direction::Promote, &first, &second, &writers, &routers)
            .expect_err("moved")
            .to_string();
        assert!(msg.contains("the source cluster took writes"), "{msg}");
        assert!(
            msg.contains("a-0 went from 10 to 14 (producer ids 4001)"),
            "{msg}"
        );
        assert!(
            msg.contains("b-0 went from 3 to 4 (by a producer without an id"),
            "{msg}"
        );
        assert!(!msg.contains("a-1") && !msg.contains("77"), "{msg}");
        let msg = check_quiet(Direction::Rollback, &first, &second, &writers, &routers)
            .expect_err("moved")
            .to_string();
        assert!(msg.contains("the target cluster took writes"), "{msg}");
    }

    fn on(topic: &str, partition: i32, ids: &[(i64, i64)]) -> PartitionProducers {
        PartitionProducers {
            topic: topic.into(),
            partition,
            producers: ids
                .iter()
                .map(|&(producer_id, current_txn_start_offset)| ActiveProducer {
                    producer_id,
                    producer_epoch: 0,
                    last_sequence: 5,
                    last_timestamp_ms: 1,
                    current_txn_start_offset,
                })
                .collect(),
        }
    }

    #[test]
    fn open_transactions_on_the_set_are_named_with_their_partitions() {
        let txn = |id: &str, parts: &[(&str, i32)]| OpenTransaction {
            transactional_id: id.to_owned(),
            producer_id: 7,
            producer_epoch: 0,
            state: "Ongoing".to_owned(),
            started_ms: 1,
            partitions: parts.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect(),
        };
        let set: BTreeSet<(String, i32)> =
            [("in".to_owned(), 0), ("__consumer_offsets".to_owned(), 12)]
                .into_iter()
                .collect();
        let open = [
            txn("other", &[("elsewhere", 0), ("in", 1)]),
            txn("copier", &[("in", 0), ("out", 0)]),
            txn("offsets-only", &[("__consumer_offsets", 12)]),
        ];
        assert_eq!(
            open_on_set(&open, &set),
            [
                "transactional id copier (producer id 7, Ongoing) on in-0",
                "transactional id offsets-only (producer id 7, Ongoing) on __consumer_offsets-12"
            ]
        );
        assert!(open_on_set(&open[..1], &set).is_empty());
    }

    #[test]
    fn open_transactions_are_named_with_where_they_start() {
        let ps = [
            on("b", 1, &[(9, 40), (10, -1)]),
            on("a", 0, &[(4, 7)]),
            on("a", 1, &[(5, -1)]),
        ];
        assert_eq!(
            open_transactions(&ps),
            [
                "a-0: producer id 4 since offset 7",
                "b-1: producer id 9 since offset 40"
            ]
        );
        assert!(open_transactions(&ps[2..]).is_empty());
    }

    #[test]
    fn a_promotion_found_running_is_undone_before_the_switch_and_finished_after() {
        for step in [Step::Checking, Step::Holding, Step::Quiet, Step::Draining] {
            assert_eq!(
                recover(&promotion(&["a"], step)),
                Recovery::Undo,
                "{step:?}"
            );
        }
        for step in [Step::Switched, Step::Releasing] {
            assert_eq!(
                recover(&promotion(&["a"], step)),
                Recovery::Finish,
                "{step:?}"
            );
        }
        for step in [Step::Done, Step::Undone] {
            assert_eq!(
                recover(&promotion(&["a"], step)),
                Recovery::None,
                "{step:?}"
            );
        }
    }

    fn group(name: &str, state: MirrorState) -> MirrorGroup {
        MirrorGroup {
            link: "l".into(),
            group: name.into(),
            state,
            auto_promote: true,
            switches: 0,
            created_at_ms: 1,
        }
    }

    #[test]
    fn groups_start_with_topics_or_alone_and_are_refused_like_topics() {
        let ms = mirrors(&[mirror("t", MirrorState::Mirroring, 0)]);
        let gs: BTreeMap<String, MirrorGroup> = [
            group("g", MirrorState::Mirroring),
            group("away", MirrorState::Promoted),
            group("busy", MirrorState::Mirroring),
        ]
        .into_iter()
        .map(|g| (g.group.clone(), g))
        .collect();
        let got = plan_start(
            Direction::Promote,
            "l",
            &names(&["t"]),
            &names(&["g", "g"]),
            &ms,
            &gs,
            &[],
        );
        assert_eq!(got.expect("accepted"), (names(&["t"]), names(&["g"])));
        let alone = plan_start(Direction::Promote, "l", &[], &names(&["g"]), &ms, &gs, &[]);
        assert_eq!(alone.expect("accepted"), (vec![], names(&["g"])));

        let mut busy = promotion(&[], Step::Rejoining);
        busy.groups = names(&["busy"]);
        let msg = plan_start(
            Direction::Promote,
            "l",
            &names(&["t"]),
            &names(&["away", "busy"]),
            &ms,
            &gs,
            &[busy],
        )
        .expect_err("refused")
        .to_string();
        assert!(
            msg.contains("away is Promoted, and only Mirroring mirror groups can be promoted"),
            "{msg}"
        );
        assert!(
            msg.contains("busy is in promotion p7 (step Rejoining)"),
            "{msg}"
        );

        let unknown = plan_start(
            Direction::Promote,
            "l",
            &[],
            &names(&["nope"]),
            &ms,
            &gs,
            &[],
        )
        .expect_err("refused");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        assert!(
            unknown.to_string().contains("mirror group \"l/nope\""),
            "{unknown}"
        );
        let none =
            plan_start(Direction::Promote, "l", &[], &[], &ms, &gs, &[]).expect_err("refused");
        assert_eq!(none.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn group_documents_move_the_home_only_at_the_switch() {
        let g = group("g", MirrorState::Mirroring);
        let held = barrier_doc(&g, Direction::Promote);
        assert_eq!(
            (held.state, held.home()),
            (MirrorState::Promoting, cutover_model::Side::Source)
        );
        let moved = switched_doc(&held, Direction::Promote);
        assert_eq!(
            (moved.home(), moved.switches),
            (cutover_model::Side::Target, 1)
        );
        assert!(moved.auto_promote);
        let home_again = switched_group(
            &barrier_doc(&moved, Direction::Rollback),
            Direction::Rollback,
        );
        assert_eq!(
            (home_again.home(), home_again.switches),
            (cutover_model::Side::Source, 2)
        );
        assert!(
            !home_again.auto_promote,
            "a rolled back group is promoted again automatically"
        );
        assert!(switched_group(&held, Direction::Promote).auto_promote);
        let back = barrier_doc(&moved, Direction::Rollback);
        assert_eq!(
            (back.state, back.home()),
            (MirrorState::Demoting, cutover_model::Side::Target)
        );
        assert_eq!(undone_doc(&back, Direction::Rollback), moved);
    }

    fn member(id: &str) -> GroupMember {
        GroupMember {
            member_id: id.into(),
            group_instance_id: None,
            client_id: format!("client-{id}"),
            client_host: "/10.0.0.9".into(),
        }
    }

    #[test]
    fn a_group_has_rejoined_once_the_routers_hold_a_join_per_member() {
        let members = [member("m1"), member("m2")];
        let routed = BTreeSet::from(["m1".to_string(), "m2".to_string(), "old".to_string()]);
        assert_eq!(
            rejoin(&members, &routed, 1),
            Rejoin::Waiting {
                held: 1,
                members: 2
            }
        );
        assert_eq!(rejoin(&members, &routed, 2), Rejoin::Rejoined);
        // A group without members (stopped, or commits only) has nothing to wait for.
        assert_eq!(rejoin(&[], &BTreeSet::new(), 0), Rejoin::Rejoined);
        let only_m1 = BTreeSet::from(["m1".to_string()]);
        assert_eq!(
            rejoin(&members, &only_m1, 2),
            Rejoin::Direct(vec!["m2 (client id \"client-m2\" from /10.0.0.9)".into()])
        );
    }

    fn commit(offset: i64, epoch: i32, metadata: Option<&str>) -> CommittedOffset {
        CommittedOffset {
            offset,
            leader_epoch: epoch,
            metadata: metadata.map(str::to_owned),
        }
    }

    #[test]
    fn commits_are_copied_unchanged_but_for_the_epoch_and_only_of_mirrored_topics() {
        let old: GroupOffsets = [
            (("a".to_string(), 0), commit(17, 4, Some("m"))),
            (("a".to_string(), 1), commit(0, -1, None)),
        ]
        .into_iter()
        .collect();
        let mirrored = BTreeSet::from(["a".to_string()]);
        let copy = offsets_to_copy("g", &old, &mirrored).expect("copied");
        assert_eq!(copy[&("a".to_string(), 0)], commit(17, -1, Some("m")));
        assert_eq!(copy[&("a".to_string(), 1)], commit(0, -1, None));

        let mut more = old.clone();
        more.insert(("elsewhere".into(), 0), commit(3, 0, None));
        let e = offsets_to_copy("g", &more, &mirrored).expect_err("refused");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.to_string()
                .contains("not mirrored over the link (elsewhere)"),
            "{e}"
        );

        let mut there = copy.clone();
        there.insert(("a".into(), 2), commit(5, -1, None));
        assert_eq!(stale_commits(&there, &copy), vec![("a".to_string(), 2)]);
        assert!(stale_commits(&copy, &copy).is_empty());
    }
}
