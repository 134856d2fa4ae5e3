//! Human and JSON renderings of API responses.

use cutover_proto::v1 as pb;
use serde_json::{json, Value};

pub fn link_line(l: &pb::Link) -> String {
    let s = l
        .source
        .as_ref()
        .map(|c| c.bootstrap_servers.join(","))
        .unwrap_or_default();
    let t = l
        .target
        .as_ref()
        .map(|c| c.bootstrap_servers.join(","))
        .unwrap_or_default();
    let bw = l
        .options
        .as_ref()
        .map_or(0, |o| o.bandwidth_limit_bytes_per_sec);
    let limit = if bw == 0 {
        "unlimited".to_string()
    } else {
        format!("{bw} B/s")
    };
    format!(
        "{}  source={s}  target={t}  mirrors={}  bandwidth={limit}",
        l.name, l.mirror_count
    )
}

pub fn link_json(l: &pb::Link) -> Value {
    json!({
        "name": l.name,
        "source": l.source.as_ref().map(|c| c.bootstrap_servers.clone()),
        "target": l.target.as_ref().map(|c| c.bootstrap_servers.clone()),
        "bandwidth_limit_bytes_per_sec": l.options.as_ref().map_or(0, |o| o.bandwidth_limit_bytes_per_sec),
        "mirror_count": l.mirror_count,
        "created_at_ms": l.created_at_ms,
    })
}

fn mirror_state(s: i32) -> String {
    pb::MirrorState::try_from(s)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("UNKNOWN({s})"))
}

fn partition_state(s: i32) -> String {
    pb::PartitionState::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("PARTITION_").to_string())
        .unwrap_or_else(|_| format!("UNKNOWN({s})"))
}

pub fn mirror_line(m: &pb::MirrorTopic) -> String {
    let reason = if m.reason.is_empty() {
        String::new()
    } else {
        format!("  ({})", m.reason)
    };
    format!(
        "{}  partitions={}  state={}{reason}",
        m.topic,
        m.partitions,
        mirror_state(m.state)
    )
}

pub fn mirror_json(m: &pb::MirrorTopic) -> Value {
    json!({"link": m.link, "topic": m.topic, "partitions": m.partitions, "state": mirror_state(m.state), "reason": m.reason})
}

pub fn group_line(g: &pb::MirrorGroup) -> String {
    let mode = if g.auto_promote { "auto" } else { "manual" };
    let mut out = format!(
        "{}  home={}  state={}  promotion={mode}  switches={}",
        g.group,
        g.home,
        mirror_state(g.state),
        g.switches
    );
    if !g.owner.is_empty() {
        out.push_str(&format!("  owner={}", g.owner));
    }
    if !g.decision.is_empty() {
        out.push_str(&format!("\n  {}", g.decision));
    }
    for m in &g.members {
        let via = if m.through_router {
            "through a router"
        } else {
            "DIRECT"
        };
        out.push_str(&format!(
            "\n  member {}  client={}  host={}  {via}",
            m.member_id, m.client_id, m.client_host
        ));
    }
    out
}

pub fn group_json(g: &pb::MirrorGroup) -> Value {
    json!({
        "link": g.link,
        "group": g.group,
        "home": g.home,
        "state": mirror_state(g.state),
        "auto_promote": g.auto_promote,
        "switches": g.switches,
        "created_at_ms": g.created_at_ms,
        "members": g.members.iter().map(|m| json!({"member_id": m.member_id, "client_id": m.client_id, "client_host": m.client_host, "through_router": m.through_router})).collect::<Vec<_>>(),
        "decision": g.decision,
        "ready": g.ready,
        "owner": g.owner,
    })
}

/// A promotion as operators read it: what moved, its outcome, the
/// produce stall, and each step with the time it took.
pub fn promotion_text(p: &pb::Promotion) -> String {
    let mut out = format!(
        "{} {}  link={}{}{}  step={}  stall={} ms  by {}\n",
        p.direction,
        p.id,
        p.link,
        if p.topics.is_empty() {
            String::new()
        } else {
            format!("  topics={}", p.topics.join(","))
        },
        if p.groups.is_empty() {
            String::new()
        } else {
            format!("  groups={}", p.groups.join(","))
        },
        p.step,
        p.stall_ms,
        p.leader
    );
    for s in &p.steps {
        out.push_str(&format!("  {:<10} {:>6} ms\n", s.step, s.took_ms));
    }
    if !p.outcome.is_empty() {
        out.push_str(&format!("  outcome: {}\n", p.outcome));
    }
    out
}

pub fn promotion_json(p: &pb::Promotion) -> Value {
    json!({
        "id": p.id,
        "link": p.link,
        "direction": p.direction,
        "topics": p.topics,
        "groups": p.groups,
        "step": p.step,
        "steps": p.steps.iter().map(|s| json!({"step": s.step, "started_at_ms": s.started_at_ms, "took_ms": s.took_ms})).collect::<Vec<_>>(),
        "leader": p.leader,
        "started_at_ms": p.started_at_ms,
        "outcome": p.outcome,
        "stall_ms": p.stall_ms,
    })
}

fn bar(done: f64, width: usize) -> String {
    let filled = ((done.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// Share of the source's records already on the target.
fn fraction(p: &pb::PartitionStatus) -> f64 {
    let total = p.source_log_end - p.source_log_start;
    if total <= 0 {
        return 1.0;
    }
    ((p.target_log_end - p.source_log_start) as f64 / total as f64).clamp(0.0, 1.0)
}

pub fn status_text(s: &pb::StatusResponse) -> String {
    let mut out = String::new();
    if s.topics.is_empty() {
        out.push_str("no mirror topics; add some with `cutover mirror add --link LINK TOPIC`\n");
    }
    for t in &s.topics {
        let reason = if t.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.reason)
        };
        out.push_str(&format!(
            "{}  {}  lag={}{reason}\n",
            t.topic,
            mirror_state(t.state),
            t.total_lag
        ));
        for p in &t.partitions {
            // The reverse mirror copies target to source: its "copied to"
            // end is the source's.
            let (ends, reverse) = if p.direction == "reverse" {
                (
                    format!("source={} target={}", p.target_log_end, p.source_log_end),
                    " (reverse)",
                )
            } else {
                (
                    format!("target={} source={}", p.target_log_end, p.source_log_end),
                    "",
                )
            };
            out.push_str(&format!(
                "  p{:<3} {} {:>5.1}%  {ends} lag={}{reverse} {} owner={}\n",
                p.partition,
                bar(fraction(p), 24),
                fraction(p) * 100.0,
                p.lag,
                partition_state(p.state),
                if p.owner.is_empty() { "-" } else { &p.owner },
            ));
            for l in &p.lost {
                out.push_str(&format!("        LOST offsets [{}, {}) deleted by source retention before they were copied\n", l.from, l.to));
            }
            if !p.error.is_empty() {
                out.push_str(&format!("        error: {}\n", p.error));
            }
        }
    }
    out.push_str(&routers_text(&s.routers));
    out
}

fn holds_text(what: &str, holds: &[pb::RouterHold]) -> String {
    holds
        .iter()
        .map(|h| {
            format!(
                " holds {what} of {} ({} waiting, {} in flight, {} ms left)",
                h.key, h.waiting, h.in_flight, h.remaining_ms
            )
        })
        .collect()
}

/// One line per router: where clients reach it and what it holds.
fn routers_text(routers: &[pb::RouterStatus]) -> String {
    if routers.is_empty() {
        return "routers: none registered (clients that use routers cannot reach this link)\n"
            .to_owned();
    }
    let mut out = String::from("routers:\n");
    for r in routers {
        out.push_str(&format!("  node {} at {}", r.node_id, r.address));
        if r.error.is_empty() {
            out.push_str(&format!(
                "  groups={} members={}{}{}",
                r.groups,
                r.members,
                holds_text("produce", &r.produce_holds),
                holds_text("JoinGroups", &r.join_holds)
            ));
        } else {
            out.push_str(&format!("  NOT ANSWERING: {}", r.error));
        }
        out.push('\n');
    }
    out
}

fn holds_json(holds: &[pb::RouterHold]) -> Vec<Value> {
    holds
        .iter()
        .map(|h| json!({"key": h.key, "waiting": h.waiting, "in_flight": h.in_flight, "remaining_ms": h.remaining_ms}))
        .collect()
}

fn routers_json(routers: &[pb::RouterStatus]) -> Vec<Value> {
    routers
        .iter()
        .map(|r| {
            json!({
                "node_id": r.node_id, "address": r.address, "grpc_address": r.grpc_address,
                "started_at_ms": r.started_at_ms, "error": r.error,
                "produce_holds": holds_json(&r.produce_holds),
                "join_holds": holds_json(&r.join_holds),
                "groups": r.groups, "members": r.members,
            })
        })
        .collect()
}

pub fn status_json(s: &pb::StatusResponse) -> Value {
    json!({
        "at_ms": s.at_ms,
        "routers": routers_json(&s.routers),
        "topics": s.topics.iter().map(|t| json!({
            "link": t.link, "topic": t.topic, "state": mirror_state(t.state), "reason": t.reason, "total_lag": t.total_lag,
            "partitions": t.partitions.iter().map(|p| json!({
                "partition": p.partition, "state": partition_state(p.state),
                "source_log_start": p.source_log_start, "source_log_end": p.source_log_end,
                "target_log_end": p.target_log_end, "lag": p.lag, "owner": p.owner,
                "lost": p.lost.iter().map(|l| json!({"from": l.from, "to": l.to})).collect::<Vec<_>>(),
                "error": p.error, "bytes_copied": p.bytes_copied, "records_copied": p.records_copied,
                "updated_at_ms": p.updated_at_ms, "direction": p.direction,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// One topic of a status in a line's worth of figures.
struct Summary {
    in_sync: usize,
    failed: usize,
    lost: usize,
}

fn summarize(t: &pb::TopicStatus) -> Summary {
    let is = |p: &pb::PartitionStatus, s: pb::PartitionState| p.state == s as i32;
    Summary {
        in_sync: t
            .partitions
            .iter()
            .filter(|p| is(p, pb::PartitionState::InSync) && p.lag == 0)
            .count(),
        failed: t
            .partitions
            .iter()
            .filter(|p| is(p, pb::PartitionState::PartitionFailed))
            .count(),
        lost: t.partitions.iter().map(|p| p.lost.len()).sum(),
    }
}

/// Every link's mirror topics, one line each (`cutover status` without
/// `--link`).
pub fn summary_text(statuses: &[pb::StatusResponse]) -> String {
    let mut out = String::new();
    let topics: Vec<&pb::TopicStatus> = statuses.iter().flat_map(|s| &s.topics).collect();
    if topics.is_empty() {
        out.push_str("no mirror topics; add some with `cutover mirror add --link LINK TOPIC`\n");
    }
    for t in topics {
        let s = summarize(t);
        let mut line = format!(
            "{}/{}  {}  in sync {}/{}  lag={}",
            t.link,
            t.topic,
            mirror_state(t.state),
            s.in_sync,
            t.partitions.len(),
            t.total_lag
        );
        if s.failed > 0 {
            line.push_str(&format!("  FAILED partitions: {}", s.failed));
        }
        if s.lost > 0 {
            line.push_str(&format!("  LOST ranges: {}", s.lost));
        }
        if !t.reason.is_empty() {
            line.push_str(&format!("  ({})", t.reason));
        }
        out.push_str(&line);
        out.push('\n');
    }
    for s in statuses {
        let link = s.topics.first().map(|t| &t.link);
        if let (Some(link), false) = (link, s.routers.is_empty()) {
            out.push_str(&format!("{link} "));
            out.push_str(&routers_text(&s.routers));
        }
    }
    out
}

pub fn summary_json(statuses: &[pb::StatusResponse]) -> Value {
    json!({
        "routers": statuses.iter().flat_map(|s| {
            let link = s.topics.first().map(|t| t.link.clone()).unwrap_or_default();
            routers_json(&s.routers).into_iter().map(move |mut r| {
                r["link"] = Value::from(link.clone());
                r
            })
        }).collect::<Vec<_>>(),
        "topics": statuses.iter().flat_map(|s| &s.topics).map(|t| {
            let s = summarize(t);
            json!({
                "link": t.link, "topic": t.topic, "state": mirror_state(t.state),
                "reason": t.reason, "partitions": t.partitions.len(),
                "in_sync": s.in_sync, "failed": s.failed, "lost_ranges": s.lost,
                "total_lag": t.total_lag,
            })
        }).collect::<Vec<_>>(),
    })
}

pub fn all_in_sync(s: &pb::StatusResponse) -> bool {
    s.topics.iter().all(|t| {
        t.partitions
            .iter()
            .all(|p| p.state == pb::PartitionState::InSync as i32 && p.lag == 0)
    })
}

pub fn verify_text(topic: &str, r: &pb::VerifyResponse) -> String {
    let mut out = String::new();
    for p in &r.partitions {
        if p.first_difference.is_empty() {
            out.push_str(&format!(
                "{topic}/{}: offsets [{}, {}) identical: {} records, {} fillers",
                p.partition, p.from_offset, p.to_offset, p.records_identical, p.fillers_skipped
            ));
            if p.compacted_on_one_side > 0 {
                out.push_str(&format!(
                    ", {} compacted away on one side only",
                    p.compacted_on_one_side
                ));
            }
            out.push('\n');
        } else {
            out.push_str(&format!(
                "{topic}/{}: DIFFERENT after {} identical records: {}\n",
                p.partition, p.records_identical, p.first_difference
            ));
        }
    }
    let total: u64 = r.partitions.iter().map(|p| p.records_identical).sum();
    out.push_str(&if r.identical {
        format!(
            "identical: {total} records proved identical across {} partitions\n",
            r.partitions.len()
        )
    } else {
        "DIFFERENCES FOUND\n".to_string()
    });
    out
}

pub fn verify_json(r: &pb::VerifyResponse) -> Value {
    json!({
        "identical": r.identical,
        "partitions": r.partitions.iter().map(|p| json!({
            "partition": p.partition, "from": p.from_offset, "to": p.to_offset,
            "records_identical": p.records_identical, "fillers_skipped": p.fillers_skipped,
            "compacted_on_one_side": p.compacted_on_one_side,
            "first_difference": p.first_difference, "first_difference_offset": p.first_difference_offset,
        })).collect::<Vec<_>>(),
    })
}

/// `cutover verify` of every mirror topic of a link.
pub fn verify_all_json(results: &[(String, pb::VerifyResponse)]) -> Value {
    json!({
        "identical": results.iter().all(|(_, r)| r.identical),
        "topics": results.iter().map(|(t, r)| {
            let mut v = verify_json(r);
            v["topic"] = json!(t);
            v
        }).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_and_fraction() {
        assert_eq!(bar(0.5, 4), "[##--]");
        let p = pb::PartitionStatus {
            source_log_start: 100,
            source_log_end: 200,
            target_log_end: 150,
            ..Default::default()
        };
        assert!((fraction(&p) - 0.5).abs() < 1e-9);
        let empty = pb::PartitionStatus::default();
        assert_eq!(fraction(&empty), 1.0);
    }

    #[test]
    fn status_text_shows_lost_ranges_and_errors() {
        let s = pb::StatusResponse {
            topics: vec![pb::TopicStatus {
                topic: "t".into(),
                partitions: vec![pb::PartitionStatus {
                    lost: vec![pb::OffsetRange { from: 5, to: 9 }],
                    error: "boom".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            at_ms: 0,
            routers: Vec::new(),
        };
        let text = status_text(&s);
        assert!(text.contains("LOST offsets [5, 9)"), "{text}");
        assert!(text.contains("error: boom"), "{text}");
        assert!(!all_in_sync(&s));
    }

    #[test]
    fn routers_show_their_holds_or_why_they_did_not_answer() {
        let hold = |key: &str| pb::RouterHold {
            key: key.into(),
            waiting: 3,
            in_flight: 0,
            remaining_ms: 900,
        };
        let s = pb::StatusResponse {
            routers: vec![
                pb::RouterStatus {
                    node_id: 1,
                    address: "r1:9092".into(),
                    produce_holds: vec![hold("orders")],
                    join_holds: vec![hold("billing")],
                    members: 4,
                    groups: 1,
                    ..Default::default()
                },
                pb::RouterStatus {
                    node_id: 2,
                    address: "r2:9092".into(),
                    error: "cannot reach its gRPC API".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = status_text(&s);
        assert!(
            text.contains("node 1 at r1:9092  groups=1 members=4 holds produce of orders (3 waiting, 0 in flight, 900 ms left) holds JoinGroups of billing"),
            "{text}"
        );
        assert!(
            text.contains("node 2 at r2:9092  NOT ANSWERING: cannot reach its gRPC API"),
            "{text}"
        );
        let j = status_json(&s);
        assert_eq!(j["routers"][0]["produce_holds"][0]["key"], "orders");
        assert_eq!(j["routers"][1]["error"], "cannot reach its gRPC API");
        assert!(status_text(&pb::StatusResponse::default()).contains("routers: none registered"));
    }
}
