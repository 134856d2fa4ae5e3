//! End to end: real etcd, two librdkafka mock clusters, our real binaries,
//! real librdkafka producers and consumers.
//!
//! Broker: librdkafka's mock cluster, because identity at volume (every codec and producer kind) needs only produce and fetch; the broker-dependent cases are in `real_data_path.rs`.

use std::time::Duration;

use anyhow::Result;
use cutover_integration_tests::cutover::{assert_mirrored, etcd_snapshot, wait_until, Cutover};
use cutover_integration_tests::*;

const TOPIC: &str = "orders";
/// Partitions 0..10 keep all their records; 10 and 11 are trimmed by the
/// mock's retention so they start above offset 0 (the mock keeps at most
/// 5 MiB per partition, so a trimmed partition loses its older records).
const PARTITIONS: i32 = 12;
const TRIMMED: [i32; 2] = [10, 11];

/// The spec written to each partition: every codec, and plain, idempotent
/// and transactional (with aborted transactions) producers.
fn spec_for(p: i32) -> ProduceSpec {
    let mode = match p % 3 {
        0 => ProduceMode::Plain,
        1 => ProduceMode::Idempotent,
        _ => ProduceMode::Transactional {
            abort_every: Some(4),
        },
    };
    ProduceSpec {
        codec: Codec::ALL[p as usize % Codec::ALL.len()],
        mode,
        ..ProduceSpec::default()
    }
}

#[test]
fn mirror_keeps_offsets_identical_for_every_codec_and_producer_kind() -> Result<()> {
    let bed = Bed::start("mirror_identity")?;
    bed.clusters.create_topic_both(TOPIC, PARTITIONS)?;
    let per_partition = 20_000;
    let mut written = 0;
    for p in 0..PARTITIONS {
        let n = if TRIMMED.contains(&p) {
            2_000
        } else {
            per_partition
        };
        written += produce(bed.source_bootstrap(), TOPIC, p, n, &spec_for(p))?
            .records
            .len();
    }
    assert!(written >= 200_000, "wrote {written}");
    for p in TRIMMED {
        let low = bed.clusters.force_trim(Side::Source, TOPIC, p)?;
        assert!(low > 0, "partition {p} still starts at 0");
    }

    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.add_fetcher()?;
    let added = cutover.mirror(&bed, "l1", &[TOPIC])?;
    assert_eq!(added["mirrors"][0]["partitions"], PARTITIONS);

    // Writes keep flowing on the source while the mirror catches up.
    for p in 0..PARTITIONS {
        let mut spec = spec_for(p);
        spec.first_seq = per_partition as u64 + 1_000_000;
        produce(bed.source_bootstrap(), TOPIC, p, 500, &spec)?;
    }
    cutover.wait_in_sync("l1", Duration::from_secs(180))?;

    let mut compared = 0;
    for p in 0..PARTITIONS {
        compared += assert_mirrored(&bed, TOPIC, p)?;
    }
    assert!(compared >= 200_000, "compared only {compared} records");
    // The trimmed partitions start where the source starts: below it the
    // target holds only fillers (or nothing, where DeleteRecords trimmed them).
    for p in TRIMMED {
        let (s_low, _) = watermarks(bed.source_bootstrap(), TOPIC, p)?;
        let (t_low, _) = watermarks(bed.target_bootstrap(), TOPIC, p)?;
        if t_low < s_low {
            let below = read_partition(bed.target_bootstrap(), TOPIC, p, t_low, s_low)?;
            assert!(
                below.iter().all(|r| r.headers.iter().any(|h| h.key == "cutover.filler")),
                "partition {p}: the target holds non-filler records below the source's log start {s_low}"
            );
        }
    }

    // The trimmed partitions: the target does not hold records below the
    // source's log start as data (fillers, invisible to verify's count).
    let verify = cutover.cli_json(&["verify", "--link", "l1", "--topic", TOPIC])?;
    assert_eq!(verify["identical"], true, "{verify:#}");
    let proved: u64 = verify["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["records_identical"].as_u64().unwrap())
        .sum();
    assert_eq!(
        proved, compared,
        "verify proved {proved} records, the consumers compared {compared}"
    );

    // Every Produce the fetchers built passed the client-rule check (a
    // violation is refused and counted, never sent).
    for f in &cutover.fetchers {
        assert_eq!(
            f.metric_sum("cutover_fetcher_produce_rule_violations_total")?,
            0.0,
            "{}",
            f.id
        );
    }
    let copied: f64 = cutover
        .fetchers
        .iter()
        .map(|f| f.metric_sum("cutover_fetcher_records_total").unwrap_or(0.0))
        .sum();
    assert!(
        copied >= compared as f64,
        "fetchers report {copied} records copied"
    );
    Ok(())
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() -> Result<()> {
    let bed = Bed::start("mirror_bad_input")?;
    bed.clusters.create_topic_both("good", 2)?;
    bed.clusters.create_topic(Side::Source, "mismatch", 3)?;
    bed.clusters.create_topic(Side::Target, "mismatch", 2)?;
    bed.clusters.create_topic_both("dirty", 1)?;
    produce(
        bed.target_bootstrap(),
        "dirty",
        0,
        5,
        &ProduceSpec::default(),
    )?;
    bed.clusters.create_topic(Side::Source, "only-source", 1)?;

    let cutover = Cutover::start(&bed)?;
    let (src, tgt) = (bed.source_bootstrap(), bed.target_bootstrap());
    cutover.cli_json(&["link", "create", "l1", "--source", src, "--target", tgt])?;
    // Let the orchestrator's leader election settle so etcd is quiet.
    let before = loop {
        let a = etcd_snapshot(bed.etcd_endpoint())?;
        std::thread::sleep(Duration::from_millis(300));
        if etcd_snapshot(bed.etcd_endpoint())?.0 == a.0 {
            break a;
        }
    };

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["link", "create", "l1", "--source", src, "--target", tgt],
            "already exists",
        ),
        (
            vec![
                "link", "create", "bad/name", "--source", src, "--target", tgt,
            ],
            "link name",
        ),
        (
            vec![
                "link",
                "create",
                "l2",
                "--source",
                "127.0.0.1:1",
                "--target",
                tgt,
            ],
            "127.0.0.1:1",
        ),
        (
            vec![
                "link",
                "create",
                "l2",
                "--source",
                "nohostport",
                "--target",
                tgt,
            ],
            "host:port",
        ),
        (vec!["link", "get", "nope"], "does not exist"),
        (vec!["link", "delete", "nope"], "does not exist"),
        (
            vec!["mirror", "add", "--link", "nope", "good"],
            "does not exist",
        ),
        (
            vec!["mirror", "add", "--link", "l1", "absent"],
            "does not exist on the source",
        ),
        (
            vec!["mirror", "add", "--link", "l1", "mismatch"],
            "3 on the source",
        ),
        (
            vec!["mirror", "add", "--link", "l1", "dirty"],
            "already holds records",
        ),
        (
            vec!["mirror", "add", "--link", "l1", "only-source"],
            "does not support CreateTopics",
        ),
        (
            vec!["mirror", "add", "--link", "l1", "--include", "("],
            "topic regex",
        ),
        (
            vec!["mirror", "add", "--link", "l1", "good", "good"],
            "named twice",
        ),
        (
            vec!["mirror", "add", "--link", "l1", "good", "absent"],
            "does not exist on the source",
        ),
        (
            vec!["mirror", "add", "--link", "l1", "--include", "zzz.*"],
            "no source topic is selected",
        ),
        (
            vec!["mirror", "pause", "--link", "l1", "good"],
            "does not exist",
        ),
        (
            vec!["verify", "--link", "l1", "--topic", "good"],
            "does not exist",
        ),
    ];
    for (args, expected) in &cases {
        let (code, out, err) = cutover.cli_raw(args)?;
        assert_eq!(
            code, 2,
            "cutover {args:?} should fail; got stdout {out} stderr {err}"
        );
        assert!(
            err.contains(expected),
            "cutover {args:?}: error {err:?} does not mention {expected:?}"
        );
    }
    // A JSON error carries the gRPC code for scripts.
    let (code, out, _) = cutover.cli_raw(&["--json", "mirror", "add", "--link", "l1", "absent"])?;
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["code"], "FailedPrecondition", "{v}");

    let after = etcd_snapshot(bed.etcd_endpoint())?;
    assert_eq!(before, after, "a refused request changed etcd");

    // The good topic still mirrors fine after all that (nothing half-done).
    cutover.cli_json(&["mirror", "add", "--link", "l1", "good"])?;
    let listed = cutover.cli_json(&["mirror", "list", "--link", "l1"])?;
    assert_eq!(listed[0]["topic"], "good", "{listed}");
    assert_eq!(listed[0]["partitions"], 2, "{listed}");
    let status = cutover.cli_json(&["status", "--link", "l1"])?;
    assert_eq!(
        status["topics"][0]["partitions"]
            .as_array()
            .map(|p| p.len()),
        Some(2),
        "{status}"
    );
    Ok(())
}

#[test]
fn pause_resume_report_lost_ranges_exactly_and_remove_leaves_nothing_behind() -> Result<()> {
    const T: &str = "retained";
    let bed = Bed::start("mirror_pause_lost_remove")?;
    bed.clusters.create_topic_both(T, 2)?;
    for p in 0..2 {
        produce(bed.source_bootstrap(), T, p, 1_000, &ProduceSpec::default())?;
    }
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[T])?;
    cutover.wait_in_sync("l1", Duration::from_secs(60))?;

    // Paused: the fetcher lets go of the partitions and copies nothing.
    let paused = cutover.cli_json(&["mirror", "pause", "--link", "l1", T])?;
    assert_eq!(paused["paused"][0], T);
    cutover.wait_owners("l1", Duration::from_secs(30), |o| o.is_empty())?;
    let (_, copied_end) = watermarks(bed.target_bootstrap(), T, 0)?;
    assert_eq!(copied_end, 1_000);
    produce(
        bed.source_bootstrap(),
        T,
        0,
        500,
        &ProduceSpec {
            first_seq: 1_000,
            ..ProduceSpec::default()
        },
    )?;
    // Retention on the source deletes records the mirror has not copied.
    let new_start = bed.clusters.force_trim(Side::Source, T, 0)?;
    assert!(
        new_start > copied_end,
        "trim left the log start at {new_start}"
    );
    let status = cutover.cli_json(&["status", "--link", "l1"])?;
    assert!(
        status["topics"][0]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "PAUSED"),
        "{status:#}"
    );
    assert_eq!(
        watermarks(bed.target_bootstrap(), T, 0)?.1,
        copied_end,
        "a paused mirror copied records"
    );

    // Resumed: the lost range is filled (offsets stay aligned) and reported exactly.
    cutover.cli_json(&["mirror", "resume", "--link", "l1", T])?;
    let status = cutover.wait_in_sync("l1", Duration::from_secs(120))?;
    let p0 = &status["topics"][0]["partitions"][0];
    assert_eq!(
        p0["lost"],
        serde_json::json!([{"from": copied_end, "to": new_start}]),
        "{p0:#}"
    );
    let lost_metric = cutover.fetchers[0].metric_sum("cutover_fetcher_lost_records_total")?;
    assert_eq!(lost_metric, (new_start - copied_end) as f64);
    let (t_low, _) = watermarks(bed.target_bootstrap(), T, 0)?;
    let from = t_low.max(copied_end);
    if from < new_start {
        for r in read_partition(bed.target_bootstrap(), T, 0, from, new_start)? {
            let marker = r
                .headers
                .iter()
                .find(|h| h.key == "cutover.filler")
                .and_then(|h| h.value.clone());
            assert_eq!(
                marker.as_deref(),
                Some(&b"lost"[..]),
                "offset {} is not a lost-range filler",
                r.offset
            );
        }
    }
    for p in 0..2 {
        assert_mirrored(&bed, T, p)?;
    }
    let (code, out, _) = cutover.cli_raw(&["status", "--link", "l1"])?;
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("LOST offsets [{copied_end}, {new_start})")),
        "{out}"
    );

    // Removed: fetchers stop and no key of the mirror stays in etcd.
    cutover.cli_json(&["mirror", "remove", "--link", "l1", T])?;
    cutover.wait_owners("l1", Duration::from_secs(30), |o| o.is_empty())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, kvs) = etcd_snapshot(bed.etcd_endpoint())?;
        let left: Vec<&String> = kvs
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.contains(&format!("/{T}")))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "keys of the removed mirror stay in etcd: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        cutover.cli_json(&["mirror", "list", "--link", "l1"])?,
        serde_json::json!([])
    );
    // Nor a metric series of it on the fetcher.
    let fetcher = &cutover.fetchers[0];
    let of_mirror = format!("topic=\"{T}\"");
    wait_until(
        "the removed mirror's metric series to go",
        Duration::from_secs(10),
        || {
            Ok(!fetcher
                .metrics()?
                .lines()
                .any(|l| !l.starts_with('#') && l.contains(&of_mirror)))
        },
    )?;
    Ok(())
}
