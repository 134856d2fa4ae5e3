//! The CLI as an operator uses it beyond the basics: choosing topics by
//! pattern (dry run first), watching status until in sync, `verify`
//! finding a record that differs, and status and verify without naming a
//! link or a topic.
//!
//! Broker: librdkafka's mock cluster, because CLI behaviour, not broker behaviour.

use std::time::Duration;

use anyhow::{Context as _, Result};
use cutover_integration_tests::cutover::Cutover;
use cutover_integration_tests::*;
use serde_json::Value;

fn topics_of(v: &Value) -> Vec<String> {
    let mut t: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["topic"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

#[test]
fn patterns_select_topics_watch_ends_in_sync_and_verify_reports_the_first_difference() -> Result<()>
{
    // (Also: status of every link, verify of every topic of a link.)
    let bed = Bed::start("operator_cli")?;
    for t in ["orders.eu", "orders.us", "orders.tmp", "payments"] {
        bed.clusters.create_topic_both(t, 2)?;
        for p in 0..2 {
            produce(bed.source_bootstrap(), t, p, 300, &ProduceSpec::default())?;
        }
    }
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.create_link(&bed, "l1", &[])?;

    // A dry run shows the selection and stores nothing.
    let select = [
        "mirror",
        "add",
        "--link",
        "l1",
        "--include",
        r"orders\..*",
        "--exclude",
        r".*\.tmp",
    ];
    let mut dry = select.to_vec();
    dry.push("--dry-run");
    let planned = cutover.cli_json(&dry)?;
    assert_eq!(planned["dry_run"], true, "{planned:#}");
    assert_eq!(topics_of(&planned["mirrors"]), ["orders.eu", "orders.us"]);
    let listed = cutover.cli_json(&["mirror", "list", "--link", "l1"])?;
    assert_eq!(
        topics_of(&listed),
        Vec::<String>::new(),
        "a dry run stored mirrors: {listed:#}"
    );
    let added = cutover.cli_json(&select)?;
    assert_eq!(topics_of(&added["mirrors"]), ["orders.eu", "orders.us"]);

    // The streaming watch ends by itself once every partition is in sync.
    let (code, out, err) = cutover.cli_raw(&[
        "--json",
        "status",
        "--link",
        "l1",
        "--watch",
        "--until-in-sync",
        "--interval-ms",
        "200",
    ])?;
    assert_eq!(code, 0, "status --watch failed: {err}");
    let last: Value = serde_json::from_str(
        out.lines()
            .last()
            .context("status --watch printed nothing")?,
    )?;
    let mut partitions = 0;
    for t in last["topics"].as_array().context("no topics")? {
        for p in t["partitions"].as_array().context("no partitions")? {
            assert_eq!(p["state"], "IN_SYNC", "{p:#}");
            assert_eq!(p["target_log_end"], p["source_log_end"], "{p:#}");
            assert_eq!(p["source_log_end"], 300, "{p:#}");
            partitions += 1;
        }
    }
    assert_eq!(partitions, 4, "{last:#}");

    // A record that differs: with the mirror paused, offset 300 of
    // partition 1 gets one record on each side, from different producers'
    // sequences.
    cutover.cli_json(&["mirror", "pause", "--link", "l1", "orders.eu"])?;
    cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        o.values().sum::<usize>() == 2
    })?;
    let on_target = ProduceSpec {
        first_seq: 900_000,
        ..ProduceSpec::default()
    };
    let on_source = ProduceSpec {
        first_seq: 800_000,
        ..ProduceSpec::default()
    };
    produce(bed.target_bootstrap(), "orders.eu", 1, 1, &on_target)?;
    produce(bed.source_bootstrap(), "orders.eu", 1, 1, &on_source)?;

    let (code, out, err) =
        cutover.cli_raw(&["--json", "verify", "--link", "l1", "--topic", "orders.eu"])?;
    assert_eq!(code, 1, "verify must exit 1 on a difference: {out} {err}");
    let report: Value = serde_json::from_str(out.trim())?;
    assert_eq!(report["identical"], false, "{report:#}");
    let parts = report["partitions"].as_array().context("no partitions")?;
    let p0 = parts.iter().find(|p| p["partition"] == 0).context("p0")?;
    let p1 = parts.iter().find(|p| p["partition"] == 1).context("p1")?;
    assert_eq!(p0["first_difference"], "", "{p0:#}");
    assert_eq!(p0["records_identical"], 300, "{p0:#}");
    assert_eq!(p1["first_difference_offset"], 300, "{p1:#}");
    assert_eq!(p1["records_identical"], 300, "{p1:#}");
    let what = p1["first_difference"].as_str().unwrap_or_default();
    assert!(
        what.contains("key") || what.contains("value"),
        "the difference should name the field: {what}"
    );

    // Human output says the same for an operator.
    let (code, out, _) = cutover.cli_raw(&["verify", "--link", "l1", "--topic", "orders.eu"])?;
    assert_eq!(code, 1);
    assert!(out.contains("300"), "{out}");

    // Without --topic, verify checks every mirror topic of the link.
    let (code, out, err) = cutover.cli_raw(&["--json", "verify", "--link", "l1"])?;
    assert_eq!(code, 1, "one topic differs: {out} {err}");
    let all: Value = serde_json::from_str(out.trim())?;
    assert_eq!(all["identical"], false, "{all:#}");
    let by_topic: Vec<(String, bool)> = all["topics"]
        .as_array()
        .context("no topics")?
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap_or_default().to_owned(),
                t["identical"] == true,
            )
        })
        .collect();
    let mut by_topic = by_topic;
    by_topic.sort();
    assert_eq!(
        by_topic,
        [
            ("orders.eu".to_owned(), false),
            ("orders.us".to_owned(), true)
        ]
    );
    let (code, out, _) = cutover.cli_raw(&["verify", "--link", "l1"])?;
    assert_eq!(code, 1);
    assert!(out.contains("1 of 2 topics identical"), "{out}");

    // Without --link, status shows every link, one line per mirror topic.
    cutover.create_link(&bed, "l2", &[])?;
    cutover.cli_json(&["mirror", "add", "--link", "l2", "payments"])?;
    let summary = cutover.cli_json(&["status"])?;
    let mut lines: Vec<(String, String, String)> = summary["topics"]
        .as_array()
        .context("no topics")?
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
            (s("link"), s("topic"), s("state"))
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            ("l1".into(), "orders.eu".into(), "PAUSED".into()),
            ("l1".into(), "orders.us".into(), "MIRRORING".into()),
            ("l2".into(), "payments".into(), "MIRRORING".into()),
        ],
        "{summary:#}"
    );
    let us = summary["topics"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["topic"] == "orders.us"))
        .context("orders.us")?;
    assert_eq!(
        (us["partitions"].as_u64(), us["in_sync"].as_u64()),
        (Some(2), Some(2)),
        "{us:#}"
    );
    let (code, out, err) = cutover.cli_raw(&["status"])?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("l2/payments  MIRRORING")),
        "{out}"
    );
    // Topics without a link are refused, saying so.
    let (code, _, err) = cutover.cli_raw(&["status", "orders.eu"])?;
    assert_ne!(code, 0);
    assert!(err.contains("--link"), "{err}");
    Ok(())
}
