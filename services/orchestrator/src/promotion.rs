//! The decisions of a promotion's barrier (design.md "Topic promotion"),
//! apart from the I/O that carries them out: which topics may start, what
//! each step writes to their documents, whether the old primary was quiet,
//! and what another orchestrator does with a promotion it finds running.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use cutover_kafka::ActiveProducer;
use cutover_model::{Direction, MirrorTopic, Promotion, MAX_PRIMARY_SWITCHES};

use crate::error::{ApiError, ApiResult};

/// Log end offsets of the set's partitions on one cluster.
pub type Ends = BTreeMap<(String, i32), i64>;

/// The topics a promotion (or rollback) of `requested` on `link` moves,
/// sorted, once each; refused, naming every topic that stands in the way,
/// when one is unknown, in the wrong state, at its last switch, or in
/// another running promotion.
pub fn plan_start(
    direction: Direction,
    link: &str,
    requested: &[String],
    mirrors: &BTreeMap<String, MirrorTopic>,
    running: &[Promotion],
) -> ApiResult<Vec<String>> {
    let topics: BTreeSet<&String> = requested.iter().collect();
    if topics.is_empty() {
        return Err(ApiError::BadRequest(
            "name at least one mirror topic to move".into(),
        ));
    }
    let unknown: Vec<&str> = topics
        .iter()
        .filter(|t| !mirrors.contains_key(t.as_str()))
        .map(|t| t.as_str())
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::NotFound {
            what: "mirror topic",
            name: format!("{link}/{}", unknown.join(",")),
        });
    }
    let mut problems = Vec::new();
    for t in &topics {
        if let Some(p) = running
            .iter()
            .find(|p| p.is_running() && p.topics.contains(t))
        {
            problems.push(format!(
                "{t} is in {} {} (step {:?}); wait for it to end",
                p.direction.noun(),
                p.id,
                p.step
            ));
            continue;
        }
        let m = &mirrors[t.as_str()];
        let want = direction.from_state();
        if m.state != want {
            problems.push(format!(
                "{t} is {:?}, and only {want:?} topics can be {}",
                m.state,
                past(direction)
            ));
        } else if m.switches >= MAX_PRIMARY_SWITCHES {
            problems.push(format!(
                "{t} has switched its primary {} times, the most leader epochs can tell \
                 apart; remove the mirror and mirror the topic afresh",
                m.switches
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::Precondition(format!(
            "nothing changed: {}",
            problems.join("; ")
        )));
    }
    Ok(topics.into_iter().cloned().collect())
}

fn past(d: Direction) -> &'static str {
    match d {
        Direction::Promote => "promoted",
        Direction::Rollback => "rolled back",
    }
}

/// The topic's document during the barrier: the primary has not moved.
pub fn barrier_doc(m: &MirrorTopic, direction: Direction) -> MirrorTopic {
    MirrorTopic {
        state: direction.barrier_state(),
        reason: String::new(),
        ..m.clone()
    }
}

/// The topic's document once its primary has moved: one switch more, so
/// leader epochs through the routers go up.
pub fn switched_doc(m: &MirrorTopic, direction: Direction) -> MirrorTopic {
    MirrorTopic {
        state: direction.to_state(),
        switches: m.switches + 1,
        reason: String::new(),
        ..m.clone()
    }
}

/// The topic's document when the barrier is undone: as before it.
pub fn undone_doc(m: &MirrorTopic, direction: Direction) -> MirrorTopic {
    MirrorTopic {
        state: direction.from_state(),
        ..m.clone()
    }
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
        let got = plan_start(Direction::Promote, "l", &names(&["b", "a", "b"]), &ms, &[]);
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
        let msg = refusal(plan_start(
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
            "worn has switched its primary 126 times",
            "busy is in promotion p7 (step Draining)",
        ] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
        assert!(!msg.contains("ok "), "{msg}");
        // An ended promotion is no obstacle.
        let ended = [promotion(&["busy"], Step::Done)];
        assert!(plan_start(Direction::Promote, "l", &names(&["busy"]), &ms, &ended).is_ok());
    }

    #[test]
    fn unknown_topics_and_empty_requests_are_refused() {
        let ms = mirrors(&[mirror("a", MirrorState::Mirroring, 0)]);
        let msg = refusal(plan_start(
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
        let msg = refusal(plan_start(Direction::Promote, "l", &[], &ms, &[]));
        assert!(msg.contains("at least one"), "{msg}");
    }

    #[test]
    fn a_rollback_starts_from_promoted_topics_only() {
        let ms = mirrors(&[
            mirror("p", MirrorState::Promoted, 1),
            mirror("m", MirrorState::Mirroring, 0),
        ]);
        assert!(plan_start(Direction::Rollback, "l", &names(&["p"]), &ms, &[]).is_ok());
        let msg = refusal(plan_start(
            Direction::Rollback,
            "l",
            &names(&["p", "m"]),
            &ms,
            &[],
        ));
        assert!(
            msg.contains("m is Mirroring, and only Promoted topics can be rolled back"),
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
}
