//! Topic promotion on **real Apache Kafka**, run by the orchestrator
//! (`cutover promote`): the barrier across every router and the fetchers
//! under load from producers that write through the routers, its refusal
//! when a producer writes to the source directly, and the record of each
//! step. The clusters are shared by the tests of this file (each uses its
//! own topics and etcd).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context as _, Result};
use cutover_integration_tests::cutover::{routers_bootstrap, wait_until, Cutover, RouterProcess};
use cutover_integration_tests::router_api;
use cutover_integration_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// etcd, the orchestrator, link l1 between the shared clusters, two
/// routers, and `topic` (`partitions`) mirrored by a fetcher.
fn setup(
    name: &str,
    topic: &str,
    partitions: i32,
) -> Result<(RealBed, Cutover, RouterProcess, RouterProcess)> {
    let bed = RealBed::start(name)?;
    let mut cutover = Cutover::start(&bed)?;
    cutover.create_link(&bed, "l1", &[])?;
    let r1 = cutover.start_router(1, "l1")?;
    let r2 = cutover.start_router(2, "l1")?;
    bed.kafka
        .create_topic(Side::Source, topic, partitions, &[])?;
    cutover.add_fetcher()?;
    cutover.cli_json(&["mirror", "add", "--link", "l1", topic])?;
    Ok((bed, cutover, r1, r2))
}

fn state_of(cutover: &Cutover, topic: &str) -> Result<String> {
    let ms = cutover.cli_json(&["mirror", "list", "--link", "l1"])?;
    ms.as_array()
        .and_then(|ms| ms.iter().find(|m| m["topic"] == topic))
        .and_then(|m| m["state"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{topic} is not listed: {ms}"))
}

/// The producers the cluster at `bootstrap` knows on `topic`-`partition`.
fn producers(
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> Result<Vec<cutover_kafka::ActiveProducer>> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let c =
            cutover_kafka::Cluster::connect(cutover_kafka::ClusterConfig::new([bootstrap])).await?;
        let ps = c.describe_producers(topic, partition).await;
        c.close().await;
        Ok(ps?)
    })
}

/// The producer ids the source knows on `topic`-`partition`.
fn producer_ids(bootstrap: &str, topic: &str, partition: i32) -> Result<BTreeSet<i64>> {
    Ok(producers(bootstrap, topic, partition)?
        .into_iter()
        .map(|p| p.producer_id)
        .collect())
}

/// The producer id of the reverse mirror's writer of `topic`-`partition`
/// (on the source), from etcd.
fn reverse_writer_id(bed: &RealBed, topic: &str, partition: i32) -> Result<i64> {
    let key = format!(
        "/cutover/v1/writers/{}",
        cutover_model::keys::reverse_writer("l1", topic, partition)
    );
    let (_, kvs) = cutover_integration_tests::cutover::etcd_snapshot(bed.etcd_endpoint())?;
    let (_, v) = kvs
        .iter()
        .find(|(k, _)| *k == key)
        .ok_or_else(|| anyhow!("no {key} in etcd"))?;
    let v: serde_json::Value = serde_json::from_str(v)?;
    v["producer_id"]
        .as_i64()
        .ok_or_else(|| anyhow!("{key}: {v}"))
}

/// Every record below `end` of `topic`-`part` at `bootstrap` is the one
/// the load generator had acknowledged at that offset.
fn records_are_the_acked(
    bootstrap: &str,
    topic: &str,
    part: i32,
    end: i64,
    l: &PartitionLoad,
    spec: &ProduceSpec,
) -> Result<()> {
    for r in read_partition(bootstrap, topic, part, 0, end)? {
        let want = expected_record(topic, part, l.first_seq + r.offset as u64, spec).at(r.offset);
        ensure!(
            r == want,
            "{topic}/{part} offset {} at {bootstrap}: not the acknowledged record",
            r.offset
        );
    }
    Ok(())
}

/// `topic`-`part` holds every acknowledged record once, in order, at its
/// offset on the target, and the source (brought up by the reverse
/// mirror) ends at the same offset with the same records.
fn on_both_clusters(
    bed: &RealBed,
    topic: &str,
    part: i32,
    l: &PartitionLoad,
    spec: &ProduceSpec,
) -> Result<()> {
    ensure!(
        l.in_order && l.acked == l.sent && l.first_offset == Some(0),
        "{topic}/{part}: {l:?}"
    );
    let (_, target_end) = watermarks(bed.target_bootstrap(), topic, part)?;
    ensure!(
        target_end as u64 == l.acked,
        "{topic}/{part}: {target_end} records on the target, {} acknowledged",
        l.acked
    );
    records_are_the_acked(bed.target_bootstrap(), topic, part, target_end, l, spec)?;
    wait_until("the reverse mirror to bring the source up", WAIT, || {
        Ok(watermarks(bed.source_bootstrap(), topic, part)?.1 >= target_end)
    })?;
    let (_, source_end) = watermarks(bed.source_bootstrap(), topic, part)?;
    ensure!(
        source_end == target_end,
        "{topic}/{part}: the source ends at {source_end}, the target at {target_end}"
    );
    records_are_the_acked(bed.source_bootstrap(), topic, part, source_end, l, spec)
}

/// An idempotent producer writing 500 records/s through both routers to
/// both partitions of `topic`, once 300 were acknowledged; and its spec.
fn routed_load(
    r1: &RouterProcess,
    r2: &RouterProcess,
    topic: &str,
) -> Result<(LoadGenerator, ProduceSpec)> {
    let spec = ProduceSpec {
        mode: ProduceMode::Idempotent,
        ..ProduceSpec::default()
    };
    let partitions: Vec<(String, i32)> = (0..2).map(|p| (topic.to_owned(), p)).collect();
    let load = LoadGenerator::start(
        &routers_bootstrap(&[r1, r2]),
        &partitions,
        500,
        spec.clone(),
    )?;
    load.wait_acked(300, WAIT)?;
    Ok((load, spec))
}

/// The seed of issue 8's barrier, end to end: an idempotent librdkafka
/// producer writes through both routers while `cutover promote` runs.
/// The promotion ends DONE with every step timed and the produce stall
/// printed; no write fails; each acknowledged record is at its offset on
/// the target; after the switch the source takes records only from the
/// reverse mirror (no router writes there), which brings it to the
/// target's end with the same records; the topic is PROMOTED, and a
/// second promotion of it is refused, naming why.
#[test]
fn promotion_under_load_moves_writes_to_the_target_and_fails_none() -> Result<()> {
    const T: &str = "promoted-under-load";
    let (bed, cutover, r1, r2) = setup("promotion_load", T, 2)?;
    cutover.wait_in_sync("l1", WAIT)?;
    let (load, spec) = routed_load(&r1, &r2, T)?;

    let p = cutover.cli_json(&["promote", "--link", "l1", T])?;
    ensure!(p["step"] == "done" && p["outcome"] == "", "{p:#}");
    let steps: Vec<&str> = p["steps"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["step"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        steps
            == [
                "checking",
                "holding",
                "quiet",
                "draining",
                "switched",
                "releasing"
            ],
        "steps: {steps:?}"
    );
    let stall = p["stall_ms"].as_i64().unwrap_or(0);
    ensure!(stall > 0, "no stall recorded: {p:#}");
    println!("promotion produce stall: {stall} ms; steps: {}", p["steps"]);
    // The source's producers once released: from here on only the reverse
    // mirror's writer may add to the source.
    let at_release: Vec<Vec<(i64, i32)>> = (0..2)
        .map(|p| {
            Ok(producers(bed.source_bootstrap(), T, p)?
                .into_iter()
                .map(|p| (p.producer_id, p.last_sequence))
                .collect())
        })
        .collect::<Result<_>>()?;
    let acked_at_switch = load.acked();
    load.wait_acked(acked_at_switch + 500, WAIT)
        .context("the producer did not go on after the promotion")?;
    let report = load.stop()?;
    ensure!(report.total_failed() == 0, "writes failed: {report:?}");
    ensure!(state_of(&cutover, T)? == "PROMOTED");

    let listed = cutover.cli_json(&["promotions", "--link", "l1"])?;
    ensure!(
        listed[0]["id"] == p["id"] && listed[0]["step"] == "done",
        "promotions: {listed:#}"
    );
    let (code, text, _) = cutover.cli_raw(&["promotions", "--link", "l1"])?;
    ensure!(
        code == 0 && text.contains("stall=") && text.contains("draining"),
        "promotions text: {text}"
    );

    for ((topic, part), l) in &report.partitions {
        on_both_clusters(&bed, topic, *part, l, &spec)?;
        // Only the reverse mirror's writer wrote to the source after the
        // release: every other producer is where it was then.
        let reverse = reverse_writer_id(&bed, topic, *part)?;
        let before = &at_release[*part as usize];
        let moved: Vec<(i64, i32)> = producers(bed.source_bootstrap(), topic, *part)?
            .into_iter()
            .map(|p| (p.producer_id, p.last_sequence))
            .filter(|p| !before.contains(p))
            .collect();
        ensure!(
            moved.len() == 1 && moved[0].0 == reverse,
            "{topic}/{part}: producers that wrote to the source after the release: {moved:?} \
             (at the release: {before:?}); only the reverse mirror's, {reverse}, may"
        );
    }

    let again = cutover.cli_raw(&["--json", "promote", "--link", "l1", T])?;
    ensure!(
        again.0 == 2,
        "a second promotion exited {}: {}",
        again.0,
        again.1
    );
    ensure!(
        again.1.contains("FailedPrecondition") && again.1.contains("is Promoted"),
        "{}",
        again.1
    );
    Ok(())
}

/// A producer that still writes to the source directly makes the barrier
/// refuse: the error names the partition and that producer's id (and not
/// the routers'), the topic stays MIRRORING, the record says undone, and
/// the writes through the routers go on without a failure, to the source.
#[test]
fn promotion_refused_while_a_producer_writes_to_the_source_directly() -> Result<()> {
    const T: &str = "promotion-direct-writer";
    let (bed, cutover, r1, r2) = setup("promotion_direct", T, 1)?;
    let spec = ProduceSpec {
        mode: ProduceMode::Idempotent,
        ..ProduceSpec::default()
    };
    let tp = vec![(T.to_owned(), 0)];
    let routed = LoadGenerator::start(&routers_bootstrap(&[&r1, &r2]), &tp, 200, spec.clone())?;
    routed.wait_acked(100, WAIT)?;
    let before = producer_ids(bed.source_bootstrap(), T, 0)?;
    let direct = LoadGenerator::start(
        bed.source_bootstrap(),
        &tp,
        200,
        ProduceSpec {
            first_seq: 1_000_000,
            ..spec.clone()
        },
    )?;
    direct.wait_acked(100, WAIT)?;
    let after = producer_ids(bed.source_bootstrap(), T, 0)?;
    let direct_ids: Vec<i64> = after.difference(&before).copied().collect();
    ensure!(
        direct_ids.len() == 1,
        "one new producer on the source: before {before:?}, after {after:?}"
    );
    let direct_id = direct_ids[0];

    let (code, out, err) = cutover.cli_raw(&["--json", "promote", "--link", "l1", T])?;
    ensure!(code == 2, "the promotion exited {code}: {out}{err}");
    let e: serde_json::Value = serde_json::from_str(&out).context(out.clone())?;
    let msg = e["error"].as_str().unwrap_or_default();
    ensure!(e["code"] == "FailedPrecondition", "{e}");
    ensure!(
        msg.contains("writes to it directly")
            && msg.contains(&format!("{T}-0 went from"))
            && msg.contains(&format!("producer ids {direct_id}"))
            && msg.contains("was undone"),
        "{msg}"
    );
    for id in &before {
        ensure!(
            !msg.contains(&format!("producer ids {id}")),
            "the message names a router's producer {id}: {msg}"
        );
    }
    ensure!(state_of(&cutover, T)? == "MIRRORING");
    let listed = cutover.cli_json(&["promotions", "--link", "l1"])?;
    ensure!(
        listed[0]["step"] == "undone"
            && listed[0]["outcome"]
                .as_str()
                .is_some_and(|o| o.contains(&direct_id.to_string())),
        "{listed:#}"
    );

    let acked = routed.acked();
    routed.wait_acked(acked + 200, WAIT)?;
    let direct_report = direct.stop()?;
    let routed_report = routed.stop()?;
    ensure!(
        routed_report.total_failed() == 0 && direct_report.total_failed() == 0,
        "writes failed: {routed_report:?} {direct_report:?}"
    );
    let (_, source_end) = watermarks(bed.source_bootstrap(), T, 0)?;
    ensure!(
        source_end as u64 == routed_report.total_acked() + direct_report.total_acked(),
        "the source holds {source_end} records, {} + {} were acknowledged",
        routed_report.total_acked(),
        direct_report.total_acked()
    );
    Ok(())
}

/// Runs `cutover promote` (or `rollback`) of `topic` and checks it ended
/// DONE; returns its record.
fn moved(cutover: &Cutover, verb: &str, topic: &str) -> Result<serde_json::Value> {
    let p = cutover.cli_json(&[verb, "--link", "l1", topic])?;
    ensure!(p["step"] == "done" && p["outcome"] == "", "{verb}: {p:#}");
    println!(
        "{verb} {topic}: produce stall {} ms; steps: {}",
        p["stall_ms"], p["steps"]
    );
    Ok(p)
}

/// Issue 8's must-show 3, the topic part: promote under load from an
/// idempotent producer through both routers, roll back under load, and
/// promote again. Between the moves the reverse mirror keeps the source
/// complete (status shows it copying "reverse"), so the rollback drains
/// through it; after each move the writes go to the new primary with a
/// producer of that period's own (a cluster that is the primary again
/// still holds the old producer's last sequences). Across the run: no
/// failed write, and at the end both clusters hold exactly the
/// acknowledged records, each once, at the offsets the producer was told.
#[test]
fn rollback_under_load_and_promotion_again_keep_every_record_on_both_clusters() -> Result<()> {
    const T: &str = "rolled-back-under-load";
    let (bed, cutover, r1, r2) = setup("promotion_rollback", T, 2)?;
    cutover.wait_in_sync("l1", WAIT)?;
    let (load, spec) = routed_load(&r1, &r2, T)?;
    let goes_on = |after: &str| {
        let acked = load.acked();
        load.wait_acked(acked + 300, WAIT)
            .with_context(|| format!("the producer did not go on after the {after}"))
    };

    moved(&cutover, "promote", T)?;
    goes_on("promotion")?;
    ensure!(state_of(&cutover, T)? == "PROMOTED");
    wait_until("the reverse mirror to copy to the source", WAIT, || {
        let s = cutover.cli_json(&["status", "--link", "l1"])?;
        let ps = s["topics"][0]["partitions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(ps.len() == 2
            && ps
                .iter()
                .all(|p| p["direction"] == "reverse" && p["target_log_end"].as_i64() > Some(0)))
    })?;

    let back = moved(&cutover, "rollback", T)?;
    ensure!(back["direction"] == "rollback", "{back:#}");
    goes_on("rollback")?;
    ensure!(state_of(&cutover, T)? == "MIRRORING");

    moved(&cutover, "promote", T)?;
    goes_on("second promotion")?;
    ensure!(state_of(&cutover, T)? == "PROMOTED");
    let report = load.stop()?;
    ensure!(report.total_failed() == 0, "writes failed: {report:?}");

    for ((topic, part), l) in &report.partitions {
        on_both_clusters(&bed, topic, *part, l, &spec)?;
    }
    Ok(())
}

fn promotions_at(cutover: &Cutover, server: &str) -> Result<serde_json::Value> {
    let (code, out, err) = cutover.cli_raw_at(server, &["--json", "promotions", "--link", "l1"])?;
    ensure!(code == 0, "promotions exited {code}: {out}{err}");
    Ok(serde_json::from_str(&out)?)
}

/// kill -9 of the orchestrator running a promotion while every router
/// holds the writes: the other orchestrator, leader once the dead one's
/// lease is gone, undoes it from what etcd holds (the topic MIRRORING
/// again, the record undone and saying who stopped and who undid it), the
/// held writes go on to the source, and none failed. A router started
/// during the barrier, which the promotion never asked, holds the topic's
/// writes by itself until the barrier ends.
#[test]
fn promotion_whose_orchestrator_dies_before_the_switch_is_undone_by_another() -> Result<()> {
    const T: &str = "promotion-orphaned";
    let (bed, mut cutover, r1, r2) = setup("promotion_orphaned", T, 1)?;
    let second = cutover.add_orchestrator()?;
    let spec = ProduceSpec {
        mode: ProduceMode::Idempotent,
        ..ProduceSpec::default()
    };
    let tp = vec![(T.to_owned(), 0)];
    let load = LoadGenerator::start(&routers_bootstrap(&[&r1, &r2]), &tp, 200, spec)?;
    load.wait_acked(100, WAIT)?;

    // A long quiet period keeps the barrier up while the test acts in it.
    let cli = cutover_integration_tests::process::bin_path("cutover")?;
    let first = cutover.server.clone();
    let promoting = std::thread::spawn(move || {
        std::process::Command::new(cli)
            .args(["--server", &first, "--json", "promote", "--link", "l1", T])
            .args(["--quiet-ms", "15000", "--drain-timeout-ms", "1000"])
            .args(["--transaction-wait-ms", "1000"])
            .output()
    });
    wait_until("the promotion to reach its quiet check", WAIT, || {
        Ok(promotions_at(&cutover, &second)?[0]["step"] == "quiet")
    })?;
    ensure!(state_of(&cutover, T)? == "PROMOTING");
    let r3 = cutover.start_router(3, "l1")?;
    let holds = router_api::state(&r3)?.produce_holds;
    ensure!(
        holds.iter().any(|h| h.key == T && h.remaining_ms > 0),
        "a router started in the barrier does not hold {T}: {holds:?}"
    );
    let acked_in_hold = load.acked();

    cutover.orchestrator.kill9()?;
    let out = promoting
        .join()
        .map_err(|_| anyhow!("the CLI thread panicked"))??;
    ensure!(
        !out.status.success(),
        "the promotion's CLI succeeded although its orchestrator died: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    cutover.server = second.clone();
    wait_until("the other orchestrator to undo the promotion", WAIT, || {
        Ok(promotions_at(&cutover, &second)?[0]["step"] == "undone")
    })?;
    let p = &promotions_at(&cutover, &second)?[0];
    let outcome = p["outcome"].as_str().unwrap_or_default();
    ensure!(
        outcome.contains("orchestrator-1 stopped before the switch")
            && outcome.contains("orchestrator-2 undid it"),
        "{p:#}"
    );
    ensure!(state_of(&cutover, T)? == "MIRRORING");
    load.wait_acked(acked_in_hold + 200, WAIT)
        .context("the producer did not go on after the undo")?;
    for r in [&r1, &r2, &r3] {
        let holds = router_api::state(r)?.produce_holds;
        ensure!(
            holds.iter().all(|h| h.key != T || h.remaining_ms == 0),
            "router {} still holds {T}: {holds:?}",
            r.node_id
        );
    }
    let report = load.stop()?;
    ensure!(report.total_failed() == 0, "writes failed: {report:?}");
    let l = &report.partitions[&(T.to_owned(), 0)];
    ensure!(l.in_order && l.acked == l.sent, "{l:?}");
    let (_, source_end) = watermarks(bed.source_bootstrap(), T, 0)?;
    ensure!(
        source_end as u64 == l.acked,
        "the source holds {source_end} records, {} were acknowledged",
        l.acked
    );
    Ok(())
}

/// The mirror group `group` of l1 as `cutover group list` shows it.
fn group_of(cutover: &Cutover, group: &str) -> Result<serde_json::Value> {
    let gs = cutover.cli_json(&["group", "list", "--link", "l1"])?;
    gs.as_array()
        .and_then(|gs| gs.iter().find(|g| g["group"] == group))
        .cloned()
        .ok_or_else(|| anyhow!("{group} is not listed: {gs}"))
}

/// Runs `cutover ARGS` (a promote or rollback) and checks it ended DONE
/// with the steps a group's move has; returns its record.
fn group_moved(cutover: &Cutover, args: &[&str]) -> Result<serde_json::Value> {
    let p = cutover.cli_json(args)?;
    ensure!(p["step"] == "done" && p["outcome"] == "", "{args:?}: {p:#}");
    let steps: Vec<&str> = p["steps"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["step"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        steps.contains(&"rejoining") && steps.contains(&"offsets"),
        "{args:?}: steps {steps:?}"
    );
    println!(
        "{}: produce stall {} ms; steps: {}",
        args.join(" "),
        p["stall_ms"],
        p["steps"]
    );
    Ok(p)
}

/// Issue 8's group promotion, run by the orchestrator on real Kafka
/// (must-show 2 and 3, the group part): two librdkafka members consume
/// through the routers under load from an idempotent producer through the
/// routers. `cutover group add` refuses a name the source does not know
/// and registers the group (home: the source). A member connected to the
/// source directly makes `promote --group` refuse, naming it, with nothing
/// changed. Then the group is promoted (one rebalance: members rejoin, the
/// commits are copied, the routers send the members to the target, the
/// source group is left empty), rolled back the same way, and promoted
/// again together with its topic in one barrier. Across the run: no write
/// failed, every record consumed, none twice unless its commit failed in a
/// rebalance (counted and printed), and the target holds the group's last
/// commits at the log ends.
#[test]
fn group_promotion_and_rollback_move_a_group_in_one_rebalance_each() -> Result<()> {
    use cutover_integration_tests::group::{
        committed, consumed_every_record_once, idempotent_load, lock, members_at, GroupLog, Member,
    };
    use std::sync::{Arc, Mutex};
    const T: &str = "promoted-group-input";
    const G: &str = "promoted-group";
    const N: i32 = 4;
    let (bed, cutover, r1, r2) = setup("promotion_group", T, N)?;
    cutover.wait_in_sync("l1", WAIT)?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let load = idempotent_load(&via, T, N, 300)?;
    let log = Arc::new(Mutex::new(GroupLog::default()));
    let members = vec![
        Member::start(&via, G, T, "routed-a", log.clone())?,
        Member::start(&via, G, T, "routed-b", log.clone())?,
    ];
    let consumed = || lock(&log).seen.len();
    let goes_on = |after: &str| {
        let at = consumed();
        wait_until(
            &format!("the group to consume on after the {after}"),
            WAIT,
            || Ok(consumed() > at + 100),
        )
    };
    wait_until("both members to consume", WAIT, || {
        Ok(members_at(bed.source_bootstrap(), G)? == 2 && consumed() > 100)
    })?;

    let (code, out, err) = cutover.cli_raw(&["group", "add", "--link", "l1", "no-such-group"])?;
    ensure!(
        code == 2 && err.contains("\"no-such-group\" is not a group of the source"),
        "group add of an unknown group exited {code}: {out}{err}"
    );
    let added = cutover.cli_json(&["group", "add", "--link", "l1", G])?;
    ensure!(added["groups"][0]["group"] == G, "{added}");
    let g = group_of(&cutover, G)?;
    ensure!(g["home"] == "source" && g["state"] == "MIRRORING", "{g}");

    let direct = Member::start(bed.source_bootstrap(), G, T, "direct-x", log.clone())?;
    wait_until("the direct member to be shown", WAIT, || {
        let g = group_of(&cutover, G)?;
        Ok(g["members"].as_array().is_some_and(|m| m.len() == 3)
            && g["decision"]
                .as_str()
                .is_some_and(|d| d.contains("direct-x")))
    })?;
    let (code, out, err) = cutover.cli_raw(&["promote", "--link", "l1", "--group", G])?;
    ensure!(
        code == 2
            && err.contains("connected to the source cluster directly")
            && err.contains("direct-x"),
        "the promotion with a direct member exited {code}: {out}{err}"
    );
    ensure!(group_of(&cutover, G)?["state"] == "MIRRORING");
    ensure!(
        cutover.cli_json(&["promotions", "--link", "l1"])? == serde_json::json!([]),
        "a refused group promotion left a record"
    );
    direct.stop()?;
    wait_until("the direct member to leave", WAIT, || {
        Ok(members_at(bed.source_bootstrap(), G)? == 2)
    })?;
    goes_on("refusal")?;

    group_moved(&cutover, &["promote", "--link", "l1", "--group", G])?;
    let g = group_of(&cutover, G)?;
    ensure!(
        g["home"] == "target" && g["state"] == "PROMOTED" && g["switches"] == 1,
        "{g}"
    );
    wait_until("the group to form on the target", WAIT, || {
        Ok(members_at(bed.target_bootstrap(), G)? == 2)
    })?;
    ensure!(
        members_at(bed.source_bootstrap(), G)? == 0,
        "the source still lists members of the promoted group"
    );
    goes_on("promotion")?;
    let source_commits = committed(bed.source_bootstrap(), G, T, N)?;
    goes_on("promotion, again")?;
    ensure!(
        committed(bed.source_bootstrap(), G, T, N)? == source_commits,
        "commits reached the source after the promotion"
    );

    group_moved(&cutover, &["rollback", "--link", "l1", "--group", G])?;
    let g = group_of(&cutover, G)?;
    ensure!(
        g["home"] == "source" && g["state"] == "MIRRORING" && g["switches"] == 2,
        "{g}"
    );
    wait_until("the group to form on the source again", WAIT, || {
        Ok(members_at(bed.source_bootstrap(), G)? == 2)
    })?;
    ensure!(members_at(bed.target_bootstrap(), G)? == 0);
    goes_on("rollback")?;

    let both = group_moved(&cutover, &["promote", "--link", "l1", T, "--group", G])?;
    ensure!(
        both["topics"] == serde_json::json!([T]) && both["groups"] == serde_json::json!([G]),
        "{both}"
    );
    ensure!(state_of(&cutover, T)? == "PROMOTED");
    wait_until("the group to form on the target again", WAIT, || {
        Ok(members_at(bed.target_bootstrap(), G)? == 2)
    })?;
    goes_on("promotion with the topic")?;

    let members_log = log.clone();
    let produced = consumed_every_record_once(load, members, &members_log, T)?;
    let redelivered = lock(&log).uncommitted.len();
    println!("records whose commit failed in a rebalance (may be redelivered): {redelivered}");
    let ends: Vec<i64> = (0..N)
        .map(|p| produced.get(&p).map_or(0, |l| l + 1))
        .collect();
    ensure!(
        committed(bed.target_bootstrap(), G, T, N)? == ends,
        "the target group's commits are not the log ends {ends:?}"
    );
    Ok(())
}

/// Issue 8's automatic group promotion, and group-coordinators killed
/// with -9 (must-show 1, the group part, and 4): two group-coordinators
/// share the mirror groups through etcd leases. While one member of the
/// group is connected to the source directly, `cutover group list` shows
/// the group's owner and the decision with its evidence (that member
/// named, DIRECT) and the group stays at home on the source. The owner is
/// killed with -9: the other takes the group over once the lease is gone.
/// The direct member is replaced by one through the routers; the group
/// coordinator starts the promotion, and is killed with -9 while the
/// members rejoin: the promotion still ends DONE (one promotion, the
/// group's), the group forms on the target and consumes every record once.
#[test]
fn group_coordinator_promotes_a_group_once_every_member_comes_through_the_routers() -> Result<()> {
    use cutover_integration_tests::group::{
        consumed_every_record_once, idempotent_load, lock, members_at, GroupLog, Member,
    };
    use std::sync::{Arc, Mutex};
    const T: &str = "auto-group-input";
    const G: &str = "auto-group";
    const N: i32 = 2;
    let (bed, cutover, r1, r2) = setup("promotion_auto_group", T, N)?;
    cutover.wait_in_sync("l1", WAIT)?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let load = idempotent_load(&via, T, N, 200)?;
    let log = Arc::new(Mutex::new(GroupLog::default()));
    // Members learn of a rebalance at their next heartbeat: a long
    // interval keeps the promotion's rejoin step up while the test kills
    // the group-coordinator that started it.
    const SLOW: &[(&str, &str)] = &[("heartbeat.interval.ms", "10000")];
    let mut members = vec![
        Member::start_with(&via, G, T, "auto-routed-a", log.clone(), SLOW)?,
        Member::start_with(
            bed.source_bootstrap(),
            G,
            T,
            "auto-direct-b",
            log.clone(),
            SLOW,
        )?,
    ];
    wait_until("both members to join", WAIT, || {
        Ok(members_at(bed.source_bootstrap(), G)? == 2)
    })?;
    cutover.cli_json(&["group", "add", "--link", "l1", G])?;
    let gc1 = cutover.start_group_coordinator("gc-1")?;
    let gc2 = cutover.start_group_coordinator("gc-2")?;

    let mut shown = serde_json::Value::Null;
    // A member counts as routed once a router forwarded an answered
    // request of it (its JoinGroup may still wait for the rebalance).
    wait_until("an owner deciding on the group's evidence", WAIT, || {
        shown = group_of(&cutover, G)?;
        let routed = shown["members"].as_array().map(|ms| {
            (
                ms.len(),
                ms.iter().filter(|m| m["through_router"] == true).count(),
            )
        });
        let settled = shown["decision"]
            .as_str()
            .is_some_and(|d| d.contains("connected to the source directly"));
        Ok(shown["owner"] != "" && routed == Some((2, 1)) && settled)
    })?;
    let decision = shown["decision"].as_str().unwrap_or_default();
    ensure!(
        shown["ready"] == false
            && decision.contains("1 of 2 members connected to the source directly")
            && decision.contains("auto-direct-b"),
        "{shown:#}"
    );
    let direct: Vec<&serde_json::Value> = shown["members"]
        .as_array()
        .map(|ms| ms.iter().filter(|m| m["through_router"] == false).collect())
        .unwrap_or_default();
    ensure!(
        direct.len() == 1 && direct[0]["client_id"] == "auto-direct-b",
        "{shown:#}"
    );
    ensure!(
        shown["state"] == "MIRRORING",
        "promoted with a direct member: {shown:#}"
    );

    let (dead, alive) = if shown["owner"] == gc1.id.as_str() {
        (gc1, gc2)
    } else {
        (gc2, gc1)
    };
    dead.process.kill9()?;
    wait_until(
        "the other group-coordinator to take the group over",
        WAIT,
        || Ok(group_of(&cutover, G)?["owner"] == alive.id.as_str()),
    )?;
    ensure!(group_of(&cutover, G)?["state"] == "MIRRORING");

    members.remove(1).stop()?;
    members.push(Member::start_with(
        &via,
        G,
        T,
        "auto-routed-c",
        log.clone(),
        SLOW,
    )?);
    wait_until("the group-coordinator to start the promotion", WAIT, || {
        let ps = cutover.cli_json(&["promotions", "--link", "l1"])?;
        Ok(ps[0]["step"] == "rejoining")
    })?;
    // Killed while its Promote call runs: the orchestrator carries the
    // promotion on to its end.
    alive.process.kill9()?;
    wait_until("the group to be promoted", WAIT, || {
        Ok(group_of(&cutover, G)?["state"] == "PROMOTED")
    })?;
    let ps = cutover.cli_json(&["promotions", "--link", "l1"])?;
    ensure!(
        ps.as_array().is_some_and(|ps| ps.len() == 1)
            && ps[0]["groups"] == serde_json::json!([G])
            && ps[0]["step"] == "done",
        "{ps:#}"
    );
    wait_until("the group to form on the target", WAIT, || {
        Ok(members_at(bed.target_bootstrap(), G)? == 2)
    })?;
    let at = lock(&log).seen.len();
    wait_until("the group to consume on the target", WAIT, || {
        Ok(lock(&log).seen.len() > at + 100)
    })?;
    consumed_every_record_once(load, members, &log, T)?;
    Ok(())
}

/// Issue 8's must-show 4, a router and a fetcher: kill -9 of a router that
/// holds the set's writes and of a fetcher that owns a partition, both in
/// the barrier (its quiet period made long), before the drain asks the
/// fetchers. The drain finds the dead fetcher's partition at its new
/// owner once the lease is gone; the dead router's clients go on through
/// the other one (their retries de-duplicated by the broker). The
/// promotion ends DONE; no write failed; every acknowledged record is once
/// at its offset on both clusters.
#[test]
fn promotion_completes_when_a_holding_router_and_a_fetcher_are_killed() -> Result<()> {
    const T: &str = "promotion-kills";
    let (bed, mut cutover, r1, r2) = setup("promotion_kills", T, 2)?;
    cutover.add_fetcher()?;
    cutover.wait_in_sync("l1", WAIT)?;
    let (load, spec) = routed_load(&r1, &r2, T)?;

    let cli = cutover_integration_tests::process::bin_path("cutover")?;
    let server = cutover.server.clone();
    let promoting = std::thread::spawn(move || {
        std::process::Command::new(cli)
            .args(["--server", &server, "--json", "promote", "--link", "l1", T])
            .args(["--quiet-ms", "4000", "--drain-timeout-ms", "15000"])
            .args(["--transaction-wait-ms", "1000"])
            .output()
    });
    wait_until("the promotion to reach its quiet check", WAIT, || {
        let ps = cutover.cli_json(&["promotions", "--link", "l1"])?;
        Ok(ps[0]["step"] == "quiet")
    })?;
    let holds = router_api::state(&r2)?.produce_holds;
    ensure!(
        holds.iter().any(|h| h.key == T && h.remaining_ms > 0),
        "router 2 does not hold {T}: {holds:?}"
    );
    r2.process.kill9()?;
    let victim = cutover.fetchers.remove(0);
    victim.process.kill9()?;

    let out = promoting
        .join()
        .map_err(|_| anyhow!("the CLI thread panicked"))??;
    let p: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    ensure!(p["step"] == "done" && p["outcome"] == "", "{p:#}");
    println!(
        "promotion with a router and a fetcher killed: produce stall {} ms; steps: {}",
        p["stall_ms"], p["steps"]
    );
    ensure!(state_of(&cutover, T)? == "PROMOTED");
    let acked = load.acked();
    load.wait_acked(acked + 300, WAIT)
        .context("the producer did not go on after the promotion")?;
    let report = load.stop()?;
    ensure!(report.total_failed() == 0, "writes failed: {report:?}");
    for ((topic, part), l) in &report.partitions {
        on_both_clusters(&bed, topic, *part, l, &spec)?;
    }
    Ok(())
}

/// `cutover promote --verify`: the record-by-record proof runs first and a
/// difference refuses the promotion, with nothing changed. The difference
/// is made as an operator could by mistake: while the mirror is paused,
/// one record is written to the source and another straight to the
/// target, at the same offset; the resumed mirror has nothing left to
/// copy, and the drain's log-end check alone would pass.
#[test]
fn promotion_with_verify_is_refused_when_the_clusters_differ() -> Result<()> {
    const T: &str = "promotion-verify";
    let (bed, cutover, _r1, _r2) = setup("promotion_verify", T, 1)?;
    let spec = ProduceSpec::default();
    produce(bed.source_bootstrap(), T, 0, 10, &spec)?;
    cutover.wait_in_sync("l1", WAIT)?;
    cutover.cli_json(&["mirror", "pause", "--link", "l1", T])?;
    wait_until("the partition to be paused", WAIT, || {
        let s = cutover.cli_json(&["status", "--link", "l1"])?;
        Ok(s["topics"][0]["partitions"][0]["state"] == "PAUSED")
    })?;
    let other = ProduceSpec {
        first_seq: 1_000,
        ..ProduceSpec::default()
    };
    produce(bed.target_bootstrap(), T, 0, 1, &other)?;
    produce(bed.source_bootstrap(), T, 0, 1, &spec)?;
    cutover.cli_json(&["mirror", "resume", "--link", "l1", T])?;
    wait_until("the mirror to run again", WAIT, || {
        let s = cutover.cli_json(&["status", "--link", "l1"])?;
        Ok(s["topics"][0]["partitions"][0]["state"] == "IN_SYNC")
    })?;

    let (code, out, err) =
        cutover.cli_raw(&["--json", "promote", "--link", "l1", T, "--verify"])?;
    ensure!(code == 2, "the promotion exited {code}: {out}{err}");
    let e: serde_json::Value = serde_json::from_str(&out).context(out.clone())?;
    let msg = e["error"].as_str().unwrap_or_default();
    ensure!(
        e["code"] == "FailedPrecondition"
            && msg.contains(&format!("--verify found {T}-0 different"))
            && msg.contains("offset 10"),
        "{e}"
    );
    ensure!(state_of(&cutover, T)? == "MIRRORING");
    ensure!(
        cutover.cli_json(&["promotions", "--link", "l1"])? == serde_json::json!([]),
        "a refused promotion left a record"
    );
    Ok(())
}

/// `cutover detach` (issue 8): refused for a topic not promoted; after a
/// promotion, refused while a producer other than the reverse mirror
/// writes to the source (named by its producer id), and accepted once it
/// stopped. A detached topic's reverse
/// mirror ends (its partitions released by the fetchers; records written
/// through the routers afterwards stay on the target only), and it cannot
/// be rolled back.
#[test]
fn detach_ends_the_reverse_mirror_once_no_producer_writes_to_the_source() -> Result<()> {
    const T: &str = "promotion-detach";
    const D: &str = "promotion-detach-direct";
    let (bed, cutover, r1, r2) = setup("promotion_detach", T, 1)?;
    bed.kafka.create_topic(Side::Source, D, 1, &[])?;
    cutover.cli_json(&["mirror", "add", "--link", "l1", D])?;
    let spec = ProduceSpec {
        mode: ProduceMode::Idempotent,
        ..ProduceSpec::default()
    };
    for t in [T, D] {
        produce(bed.source_bootstrap(), t, 0, 20, &spec)?;
    }
    cutover.wait_in_sync("l1", WAIT)?;
    let (code, out, err) = cutover.cli_raw(&["detach", "--link", "l1", T])?;
    ensure!(
        code == 2 && err.contains("only PROMOTED topics"),
        "detach of a mirroring topic exited {code}: {out}{err}"
    );
    moved(&cutover, "promote", T)?;
    moved(&cutover, "promote", D)?;

    let before = producer_ids(bed.source_bootstrap(), D, 0)?;
    let direct_load = LoadGenerator::start(
        bed.source_bootstrap(),
        &[(D.to_owned(), 0)],
        100,
        ProduceSpec {
            first_seq: 1_000_000,
            ..spec.clone()
        },
    )?;
    direct_load.wait_acked(20, WAIT)?;
    let direct: Vec<i64> = producer_ids(bed.source_bootstrap(), D, 0)?
        .difference(&before)
        .copied()
        .filter(|id| reverse_writer_id(&bed, D, 0).ok() != Some(*id))
        .collect();
    ensure!(direct.len() == 1, "one direct producer on {D}: {direct:?}");
    let (code, out, err) = cutover.cli_raw(&["detach", "--link", "l1", D])?;
    ensure!(
        code == 2
            && err.contains("clients write to it directly")
            && err.contains(&format!("{D}-0: producer id {}", direct[0])),
        "detach with a direct producer exited {code}: {out}{err}"
    );
    ensure!(state_of(&cutover, D)? == "PROMOTED");
    let report = direct_load.stop()?;
    ensure!(
        report.total_failed() == 0,
        "direct writes failed: {report:?}"
    );
    cutover.cli_json(&["detach", "--link", "l1", D])?;
    ensure!(state_of(&cutover, D)? == "DETACHED");

    let detached = cutover.cli_json(&["detach", "--link", "l1", T])?;
    ensure!(detached["detached"] == serde_json::json!([T]), "{detached}");
    ensure!(state_of(&cutover, T)? == "DETACHED");
    wait_until(
        "the fetchers to release the detached partitions",
        WAIT,
        || {
            let s = cutover.cli_json(&["status", "--link", "l1", T])?;
            Ok(s["topics"][0]["partitions"][0]["owner"] == "")
        },
    )?;
    let (_, source_end) = watermarks(bed.source_bootstrap(), T, 0)?;
    let (_, target_end) = watermarks(bed.target_bootstrap(), T, 0)?;
    let after = LoadGenerator::start(
        &routers_bootstrap(&[&r1, &r2]),
        &[(T.to_owned(), 0)],
        200,
        ProduceSpec {
            first_seq: 2_000_000,
            ..spec.clone()
        },
    )?;
    after.wait_acked(100, WAIT)?;
    let report = after.stop()?;
    ensure!(report.total_failed() == 0, "writes failed: {report:?}");
    ensure!(
        watermarks(bed.target_bootstrap(), T, 0)?.1 as u64
            == target_end as u64 + report.total_acked(),
        "the writes after detach are not on the target"
    );
    ensure!(
        watermarks(bed.source_bootstrap(), T, 0)?.1 == source_end,
        "the source took records after detach"
    );
    let (code, out, err) = cutover.cli_raw(&["rollback", "--link", "l1", T])?;
    ensure!(
        code == 2 && err.contains("is Detached"),
        "rollback of a detached topic exited {code}: {out}{err}"
    );
    // The routers send its clients by the mirror document: removing it
    // would send them back to the source.
    let (code, out, err) = cutover.cli_raw(&["mirror", "remove", "--link", "l1", T])?;
    ensure!(
        code == 2 && err.contains("--force"),
        "mirror remove of a detached topic exited {code}: {out}{err}"
    );
    ensure!(
        state_of(&cutover, T)? == "DETACHED",
        "a refused removal changed it"
    );
    let removed = cutover.cli_json(&["mirror", "remove", "--link", "l1", T, "--force"])?;
    ensure!(removed["removed"] == serde_json::json!([T]), "{removed}");
    Ok(())
}

/// Issue 8's must-show 1 with Kafka's own Java clients: `VerifiableProducer`
/// (idempotent, acks=all) writes through the routers at 300 records/s while
/// a `VerifiableConsumer` group reads through them, and the topic and the
/// group are promoted in one barrier meanwhile. No send failed; every record
/// the producer was told about is on the target at its partition and offset
/// (and, through the reverse mirror, on the source); the group consumed
/// them with no gap (it stops after as many records as were produced, so
/// redelivered ones, counted and printed, leave a tail unread).
#[test]
fn java_clients_move_with_their_topic_and_group_in_one_promotion() -> Result<()> {
    use cutover_integration_tests::group::members_at;
    use cutover_integration_tests::java_clients;
    use std::collections::BTreeMap;
    const T: &str = "promoted-java";
    const G: &str = "promoted-java-group";
    const N: usize = 4_000;
    let (bed, cutover, r1, r2) = setup("promotion_java", T, 2)?;
    cutover.wait_in_sync("l1", WAIT)?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let dist = bed.kafka.target.dist().clone();
    let (pd, pv, pl) = (dist.clone(), via.clone(), bed.log_dir().to_path_buf());
    let producer =
        std::thread::spawn(move || java_clients::verifiable_producer_at(&pd, &pv, T, N, 300, &pl));
    let (cd, cv, cl) = (dist, via, bed.log_dir().to_path_buf());
    let consumer =
        std::thread::spawn(move || java_clients::verifiable_consumer(&cd, &cv, T, G, N, &cl));
    wait_until(
        "the Java group to form and the producer to write",
        WAIT,
        || {
            let written = watermarks(bed.source_bootstrap(), T, 0)?.1
                + watermarks(bed.source_bootstrap(), T, 1)?.1;
            Ok(members_at(bed.source_bootstrap(), G)? == 1 && written > 600)
        },
    )?;
    cutover.cli_json(&["group", "add", "--link", "l1", G])?;
    group_moved(&cutover, &["promote", "--link", "l1", T, "--group", G])?;
    ensure!(state_of(&cutover, T)? == "PROMOTED");

    let mut acked = producer
        .join()
        .map_err(|_| anyhow!("the producer thread panicked"))??;
    acked.sort();
    let consumed = consumer
        .join()
        .map_err(|_| anyhow!("the consumer thread panicked"))??;
    let on_target = java_clients::java_records_on(bed.target_bootstrap(), T, 2)?;
    ensure!(
        on_target == acked,
        "the target holds {} records, {} were acknowledged; first difference: {:?}",
        on_target.len(),
        acked.len(),
        on_target.iter().zip(&acked).find(|(t, a)| t != a)
    );
    wait_until("the reverse mirror to bring the source up", WAIT, || {
        Ok(java_clients::java_records_on(bed.source_bootstrap(), T, 2)? == acked)
    })?;
    let mut seen: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for r in &consumed {
        ensure!(
            acked.binary_search(r).is_ok(),
            "consumed a record that was not acknowledged: {r:?}"
        );
        seen.entry(r.partition).or_default().insert(r.offset);
    }
    for (p, offsets) in &seen {
        let last = offsets.iter().next_back().copied().unwrap_or(-1);
        ensure!(
            offsets.len() as i64 == last + 1,
            "partition {p}: offsets consumed with a gap (skipped records): {} distinct up to {last}",
            offsets.len()
        );
    }
    let distinct: usize = seen.values().map(BTreeSet::len).sum();
    println!(
        "Java group: {} records consumed, {} distinct, {} redelivered",
        consumed.len(),
        distinct,
        consumed.len() - distinct
    );
    Ok(())
}

/// Issue 8's must-show 1, the seed scenario as one test, under continuous
/// load from both client families: a librdkafka idempotent producer and
/// Kafka's Java producer (VerifiableProducer) write to the source, and a
/// group of a librdkafka member and a Java member (VerifiableConsumer)
/// reads it there; mirroring runs. The producers roll to the routers one by
/// one, then the members; the group-coordinator promotes the group by
/// itself once both come through the routers; the topic is promoted.
/// Across the run: no produce request failed, the log ends hold exactly
/// the acknowledged records and the clusters are identical record by
/// record (`cutover verify`), every Java acknowledgement is on the target
/// at its offset, and the group consumed every offset (redelivery counted
/// and printed); the promotion's produce stall is printed.
#[test]
fn seed_scenario_both_client_families_roll_to_the_routers_and_move_with_no_failed_request(
) -> Result<()> {
    use cutover_integration_tests::group::{lock, GroupLog, Member};
    use cutover_integration_tests::java_clients::{self, JavaMember};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    const T: &str = "seed-orders";
    const G: &str = "seed-billing";
    const RATE: u64 = 100;
    const JAVA_RECORDS: usize = 2_500;
    let (bed, cutover, r1, r2) = setup("promotion_seed", T, 2)?;
    let source = bed.source_bootstrap().to_owned();
    let via = routers_bootstrap(&[&r1, &r2]);
    let dist = bed.kafka.target.dist().clone();
    let dir = bed.log_dir().to_path_buf();
    let parts: Vec<(String, i32)> = (0..2).map(|p| (T.to_owned(), p)).collect();
    let spec = |first_seq| ProduceSpec {
        mode: ProduceMode::Idempotent,
        first_seq,
        ..ProduceSpec::default()
    };
    let java_producer = |bootstrap: String, n: usize| {
        let (d, l) = (dist.clone(), dir.clone());
        std::thread::spawn(move || {
            java_clients::verifiable_producer_at(&d, &bootstrap, T, n, 100, &l)
        })
    };

    // The application on the source.
    let rd_load = LoadGenerator::start(&source, &parts, RATE, spec(0))?;
    let java_on_source = java_producer(source.clone(), 300);
    let log = Arc::new(Mutex::new(GroupLog::default()));
    let rd_member = Member::start(&source, G, T, "seed-rdkafka", log.clone())?;
    let java_member = JavaMember::start(&dist, &source, T, G, "seed-java", &dir)?;
    wait_until("both members to consume on the source", WAIT, || {
        Ok(
            cutover_integration_tests::group::members_at(&source, G)? == 2
                && !lock(&log).seen.is_empty()
                && !java_member.records()?.is_empty(),
        )
    })?;
    cutover.wait_in_sync("l1", WAIT)?;

    // Producers roll to the routers one by one, then the members.
    let mut reports = vec![rd_load.stop()?];
    let rd_load = LoadGenerator::start(&via, &parts, RATE, spec(1_000_000))?;
    rd_load.wait_acked(100, WAIT)?;
    let mut java_acked = java_on_source
        .join()
        .map_err(|_| anyhow!("the Java producer thread panicked"))??;
    let java_via = java_producer(via.clone(), JAVA_RECORDS);
    let mut consumed: Vec<(i32, i64)> = Vec::new();
    rd_member.stop()?;
    let rd_member = Member::start(&via, G, T, "seed-rdkafka-routed", log.clone())?;
    consumed.extend(java_member.stop()?.iter().map(|r| (r.partition, r.offset)));
    let java_member = JavaMember::start(&dist, &via, T, G, "seed-java-routed", &dir)?;

    // The group moves by itself, then the topic.
    cutover.cli_json(&["group", "add", "--link", "l1", G])?;
    let _gc = cutover.start_group_coordinator("gc-seed")?;
    wait_until("the group-coordinator to promote the group", WAIT, || {
        Ok(group_of(&cutover, G)?["home"] == "target")
    })?;
    let p = moved(&cutover, "promote", T)?;
    rd_load.wait_acked(rd_load.acked() + 200, WAIT)?;
    reports.push(rd_load.stop()?);
    java_acked.extend(
        java_via
            .join()
            .map_err(|_| anyhow!("the Java producer thread panicked"))??,
    );

    let failed: u64 = reports.iter().map(|r| r.total_failed()).sum();
    ensure!(failed == 0, "{failed} librdkafka produce requests failed");
    let acked = reports.iter().map(|r| r.total_acked()).sum::<u64>() + java_acked.len() as u64;
    let ends: Vec<i64> = (0..2)
        .map(|p| watermarks(bed.target_bootstrap(), T, p).map(|w| w.1))
        .collect::<Result<_>>()?;
    ensure!(
        ends.iter().sum::<i64>() as u64 == acked,
        "the target holds {ends:?} records, {acked} were acknowledged"
    );
    let on_target = java_clients::java_records_on(bed.target_bootstrap(), T, 2)?;
    for r in &java_acked {
        ensure!(
            on_target.binary_search(r).is_ok(),
            "a Java acknowledgement is not on the target at its offset: {r:?}"
        );
    }
    wait_until("the reverse mirror to bring the source up", WAIT, || {
        Ok((0..2).all(|p| watermarks(&source, T, p).is_ok_and(|w| w.1 == ends[p as usize])))
    })?;
    let verify = cutover.cli_json(&["verify", "--link", "l1", "--topic", T])?;
    ensure!(verify["identical"] == true, "{verify:#}");

    let total: usize = ends.iter().map(|e| *e as usize).sum();
    let distinct = |c: &[(i32, i64)]| -> BTreeMap<(i32, i64), usize> {
        let mut m = BTreeMap::new();
        for k in c {
            *m.entry(*k).or_default() += 1;
        }
        m
    };
    let all_consumed = |java: &[(i32, i64)]| -> Vec<(i32, i64)> {
        let mut c = consumed.clone();
        c.extend(java);
        c.extend(lock(&log).seen.iter().map(|(p, o, _)| (*p, *o)));
        c
    };
    wait_until("the group to consume every record", WAIT, || {
        let java: Vec<(i32, i64)> = java_member
            .records()?
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect();
        Ok(distinct(&all_consumed(&java)).len() >= total)
    })?;
    rd_member.stop()?;
    let java: Vec<(i32, i64)> = java_member
        .stop()?
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    let times = distinct(&all_consumed(&java));
    for (p, end) in ends.iter().enumerate() {
        for o in 0..*end {
            ensure!(
                times.contains_key(&(p as i32, o)),
                "{T}/{p} offset {o} was never consumed"
            );
        }
    }
    let redelivered: usize = times.values().map(|n| n - 1).sum();
    println!(
        "seed scenario: {acked} records acknowledged ({} by Java), 0 failed; group consumed \
         {total} records, {redelivered} redelivered across the rolls and the move; topic \
         promotion produce stall {} ms",
        java_acked.len(),
        p["stall_ms"]
    );
    Ok(())
}

/// Issue 8, transactions never span the clusters: with one topic promoted
/// and the other not, a librdkafka transactional producer through the
/// routers that writes both in one transaction gets an abortable error
/// (the router refuses the partitions with TOPIC_AUTHORIZATION_FAILED) and
/// aborts; a transaction on either topic alone commits, on that topic's
/// primary; read_committed on each cluster sees exactly the committed
/// records, nothing of the refused transaction.
#[test]
fn a_transaction_over_topics_on_both_clusters_is_refused_and_one_on_either_commits() -> Result<()> {
    use cutover_integration_tests::clients::{read_partition_isolated, Isolation};
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    const A: &str = "txn-span-promoted";
    const B: &str = "txn-span-mirroring";
    let (bed, cutover, r1, r2) = setup("promotion_txn_span", A, 1)?;
    bed.kafka.create_topic(Side::Source, B, 1, &[])?;
    cutover.cli_json(&["mirror", "add", "--link", "l1", B])?;
    cutover.wait_in_sync("l1", WAIT)?;
    moved(&cutover, "promote", A)?;

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", routers_bootstrap(&[&r1, &r2]))
        .set("transactional.id", "spanning-app")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()?;
    producer.init_transactions(WAIT)?;
    let send = |topic: &str, value: &str| -> Result<()> {
        producer
            .send(BaseRecord::<(), str>::to(topic).partition(0).payload(value))
            .map_err(|(e, _)| anyhow!("queueing a record to {topic}: {e}"))
    };

    producer.begin_transaction()?;
    send(A, "spanning-a")?;
    send(B, "spanning-b")?;
    let refused = producer.commit_transaction(WAIT);
    let err = match refused {
        Ok(()) => anyhow::bail!("a transaction over both clusters was committed"),
        Err(rdkafka::error::KafkaError::Transaction(e)) => e,
        Err(e) => anyhow::bail!("the spanning transaction failed otherwise: {e}"),
    };
    ensure!(
        err.txn_requires_abort() && !err.is_fatal(),
        "the refusal is not an abortable error: {err}"
    );
    producer.abort_transaction(WAIT)?;

    for (topic, value) in [(A, "alone-a"), (B, "alone-b")] {
        producer.begin_transaction()?;
        send(topic, value)?;
        producer.commit_transaction(WAIT)?;
    }
    drop(producer);

    let committed = |bootstrap: &str, topic: &str| -> Result<Vec<Vec<u8>>> {
        let (_, high) = watermarks(bootstrap, topic, 0)?;
        Ok(
            read_partition_isolated(bootstrap, topic, 0, 0, high, Isolation::ReadCommitted, WAIT)?
                .into_iter()
                .filter_map(|r| r.value)
                .collect(),
        )
    };
    ensure!(
        committed(bed.target_bootstrap(), A)? == [b"alone-a".to_vec()],
        "the promoted topic's target holds other committed records"
    );
    ensure!(
        committed(bed.source_bootstrap(), B)? == [b"alone-b".to_vec()],
        "the mirrored topic's source holds other committed records"
    );
    Ok(())
}

/// `cutover group sync` (issue 8): a group that moves without the routers
/// (stopped on the source, started on the target directly) gets its
/// commits copied to the target unchanged. Refused, with nothing written,
/// while a member still consumes on the source, for a mirror group, and
/// once a member consumes on the target; after the copy, a member on the
/// target directly resumes at exactly the next record of each partition.
#[test]
fn group_sync_copies_a_stopped_groups_commits_so_it_resumes_on_the_target_exactly() -> Result<()> {
    use cutover_integration_tests::group::{committed, lock, members_at, GroupLog, Member};
    use std::sync::{Arc, Mutex};
    const T: &str = "synced-topic";
    const G: &str = "synced-group";
    let (bed, cutover, _r1, _r2) = setup("group_sync", T, 2)?;
    for p in 0..2 {
        produce(bed.source_bootstrap(), T, p, 100, &ProduceSpec::default())?;
    }
    let refused = |args: &[&str], needle: &str| -> Result<()> {
        let before = committed(bed.target_bootstrap(), G, T, 2)?;
        let (code, out, err) = cutover.cli_raw(args)?;
        ensure!(
            code == 2 && err.contains(needle),
            "{args:?} exited {code} without {needle:?}: {out}{err}"
        );
        ensure!(
            committed(bed.target_bootstrap(), G, T, 2)? == before,
            "{args:?} was refused but changed the commits on the target"
        );
        Ok(())
    };
    let sync = ["group", "sync", "--link", "l1", G];

    let log = Arc::new(Mutex::new(GroupLog::default()));
    let on_source = Member::start(bed.source_bootstrap(), G, T, "sync-source", log.clone())?;
    wait_until("the source member to consume and commit all", WAIT, || {
        Ok(lock(&log).seen.len() >= 200
            && committed(bed.source_bootstrap(), G, T, 2)? == [100, 100])
    })?;
    refused(&sync, "still has members on the source")?;
    on_source.stop()?;
    wait_until("the source group to be empty", WAIT, || {
        Ok(members_at(bed.source_bootstrap(), G)? == 0)
    })?;
    cutover.wait_in_sync("l1", WAIT)?;

    cutover.cli_json(&["group", "add", "--link", "l1", G, "--manual"])?;
    refused(&sync, "is a mirror group")?;
    cutover.cli_json(&["group", "remove", "--link", "l1", G])?;

    let dry = cutover.cli_json(&["group", "sync", "--link", "l1", G, "--dry-run"])?;
    ensure!(
        dry["dry_run"] == true && dry["groups"][0]["partitions"] == 2,
        "{dry}"
    );
    ensure!(
        committed(bed.target_bootstrap(), G, T, 2)? == [-1, -1],
        "a dry run wrote"
    );
    let done = cutover.cli_json(&sync)?;
    ensure!(done["groups"][0]["partitions"] == 2, "{done}");
    ensure!(
        committed(bed.target_bootstrap(), G, T, 2)? == [100, 100],
        "the target's commits are not the source's"
    );

    for p in 0..2 {
        produce(
            bed.source_bootstrap(),
            T,
            p,
            50,
            &ProduceSpec {
                first_seq: 100,
                ..ProduceSpec::default()
            },
        )?;
    }
    cutover.wait_in_sync("l1", WAIT)?;
    let log = Arc::new(Mutex::new(GroupLog::default()));
    let on_target = Member::start(bed.target_bootstrap(), G, T, "sync-target", log.clone())?;
    wait_until(
        "the target member to consume the later records",
        WAIT,
        || Ok(lock(&log).seen.len() >= 100),
    )?;
    wait_until("the target member to commit them", WAIT, || {
        Ok(committed(bed.target_bootstrap(), G, T, 2)? == [150, 150])
    })?;
    refused(&sync, "already has members on the target")?;
    on_target.stop()?;
    let mut seen: Vec<(i32, i64)> = lock(&log).seen.iter().map(|(p, o, _)| (*p, *o)).collect();
    seen.sort();
    let want: Vec<(i32, i64)> = (0..2)
        .flat_map(|p| (100..150).map(move |o| (p, o)))
        .collect();
    ensure!(
        seen == want,
        "the target member resumed elsewhere than the copied commits: consumed {} records, first {:?}",
        seen.len(),
        seen.first()
    );
    Ok(())
}

/// Issue 8's must-show 6: a consume-transform-produce application with
/// transactions (Kafka's `TransactionalMessageCopier`: read_committed, a
/// group member, each output batch committed with its consumed offsets in
/// one transaction) runs through the routers while its input topic, its
/// output topic and its group are promoted in one barrier. Its
/// transactions ran on the source before and on the target after (the
/// routers map its transactional producer on both clusters and hold new
/// transactions while the open ones end on the source): its output, read
/// committed, holds every input record exactly once, on the target and
/// (through the reverse mirror) on the source.
#[test]
fn transactional_copier_moves_with_its_topics_and_group_with_no_duplicate_and_no_loss() -> Result<()>
{
    use cutover_integration_tests::clients::{read_partition_isolated, Isolation};
    use cutover_integration_tests::group::members_at;
    use cutover_integration_tests::java_clients;
    const IN: &str = "copier-in";
    const OUT: &str = "copier-out";
    const G: &str = "copier-group";
    const N: usize = 1_500;
    let (bed, cutover, r1, r2) = setup("promotion_transactional", IN, 1)?;
    bed.kafka.create_topic(Side::Source, OUT, 1, &[])?;
    cutover.cli_json(&["mirror", "add", "--link", "l1", OUT])?;
    let input = produce(bed.source_bootstrap(), IN, 0, N, &ProduceSpec::default())?;
    let mut want: Vec<Vec<u8>> = input
        .records
        .iter()
        .filter_map(|r| r.content.value.clone())
        .collect();
    want.sort();
    want.dedup();
    ensure!(want.len() == N, "the input values are not distinct");
    cutover.wait_in_sync("l1", WAIT)?;

    let via = routers_bootstrap(&[&r1, &r2]);
    let (dist, log_dir) = (bed.kafka.target.dist().clone(), bed.log_dir().to_path_buf());
    let copier = std::thread::spawn(move || {
        java_clients::transactional_copier(&dist, &via, IN, OUT, G, "copier-1", N, 5, &log_dir)
    });
    wait_until("the copier to join and copy a part", WAIT, || {
        Ok(members_at(bed.source_bootstrap(), G)? == 1
            && watermarks(bed.source_bootstrap(), OUT, 0)?.1 > 200)
    })?;
    cutover.cli_json(&["group", "add", "--link", "l1", G, "--manual"])?;
    let p = group_moved(
        &cutover,
        &["promote", "--link", "l1", IN, OUT, "--group", G],
    )?;
    let switched_at = watermarks(bed.target_bootstrap(), OUT, 0)?.1;
    ensure!(state_of(&cutover, OUT)? == "PROMOTED", "{p:#}");

    let events = copier
        .join()
        .map_err(|_| anyhow!("the copier thread panicked"))??;
    ensure!(
        events.iter().any(|e| e["stage"] == "ShutdownComplete"),
        "the copier did not finish: {:?}",
        events.last()
    );
    let out_end = watermarks(bed.target_bootstrap(), OUT, 0)?.1;
    ensure!(
        out_end > switched_at,
        "the copier wrote nothing on the target after the promotion (output end {out_end}, \
         {switched_at} at the switch): its transactions never ran there"
    );
    let committed = |bootstrap: &str| -> Result<Vec<Vec<u8>>> {
        let mut got: Vec<Vec<u8>> = read_partition_isolated(
            bootstrap,
            OUT,
            0,
            0,
            out_end,
            Isolation::ReadCommitted,
            WAIT,
        )?
        .into_iter()
        .filter_map(|r| r.value)
        .collect();
        got.sort();
        Ok(got)
    };
    let on_target = committed(bed.target_bootstrap())?;
    let mut distinct = on_target.clone();
    distinct.dedup();
    ensure!(
        distinct.len() == on_target.len(),
        "{} output records twice on the target",
        on_target.len() - distinct.len()
    );
    ensure!(
        on_target == want,
        "the target's committed output holds {} records of the {N} input records ({} missing)",
        on_target.len(),
        want.iter()
            .filter(|v| on_target.binary_search(v).is_err())
            .count()
    );
    wait_until(
        "the reverse mirror to bring the source's output up",
        WAIT,
        || Ok(watermarks(bed.source_bootstrap(), OUT, 0)?.1 == out_end),
    )?;
    ensure!(
        committed(bed.source_bootstrap())? == want,
        "the source's committed output differs from the input"
    );
    for r in [&r1, &r2] {
        let v = r.metric_sum("cutover_router_produce_rule_violations_total")?;
        ensure!(
            v == 0.0,
            "router {}: {v} produce rule violations",
            r.node_id
        );
    }
    println!(
        "transactional copier: {N} records copied exactly once; output end {out_end} \
         ({switched_at} at the switch); promotion stall {} ms",
        p["stall_ms"]
    );
    Ok(())
}

/// Issue 8's must-show 5: a consumer that keeps its offsets outside Kafka
/// (assign and seek, as Flink does) reads part of a topic on the source
/// directly; the topic is promoted, and records written through the
/// routers land on the target; the same consumer, restarted against the
/// routers at the offset it stored (auto.offset.reset=error, so a reset
/// would fail it), reads on from exactly there: every later record once,
/// in order, none skipped, none twice.
#[test]
fn assigned_consumer_with_its_own_offsets_resumes_through_the_routers_after_promotion() -> Result<()>
{
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::TopicPartitionList;
    const T: &str = "promotion-assigned";
    let (bed, cutover, r1, r2) = setup("promotion_assigned", T, 1)?;
    let spec = ProduceSpec {
        batch_records: 10,
        ..ProduceSpec::default()
    };
    let first = produce(bed.source_bootstrap(), T, 0, 200, &spec)?;
    cutover.wait_in_sync("l1", WAIT)?;
    let assigned_at = |bootstrap: &str, offset: i64| -> Result<BaseConsumer> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "assigned-own-offsets")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "error")
            .set("topic.metadata.refresh.interval.ms", "500")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(T, 0, rdkafka::Offset::Offset(offset))?;
        c.assign(&tpl)?;
        Ok(c)
    };
    let direct = assigned_at(bed.source_bootstrap(), 0)?;
    ensure!(poll_values(&direct, 100, WAIT)? == produced_values(&first.records[..100]));
    // The consumer's own checkpoint: the next offset to read.
    let stored = 100;
    drop(direct);

    moved(&cutover, "promote", T)?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let later = produce(
        &via,
        T,
        0,
        100,
        &ProduceSpec {
            first_seq: 10_000,
            ..spec.clone()
        },
    )?;
    ensure!(
        later.first_offset() == Some(200),
        "{:?}",
        later.first_offset()
    );
    ensure!(
        watermarks(bed.target_bootstrap(), T, 0)?.1 == 300,
        "the later records are not on the target"
    );
    let resumed = assigned_at(&via, stored)?;
    let mut want = produced_values(&first.records[100..]);
    want.extend(produced_values(&later.records));
    let got = poll_values(&resumed, want.len(), WAIT)?;
    ensure!(
        got == want,
        "resumed at {stored}: got offsets {:?}..{:?}, {} records, want 100..299",
        got.first().map(|r| r.0),
        got.last().map(|r| r.0),
        got.len()
    );
    Ok(())
}
