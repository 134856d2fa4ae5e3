//! The data path on **real Apache Kafka** (source: 1 broker of the older
//! pinned line, target: 3 brokers of the newer one; see
//! `integration-tests/kafka/versions.env`): transaction markers and aborted
//! data, compaction by the real log cleaner, DeleteRecords and retention,
//! the admin APIs, and batches the broker must store as sent. The clusters
//! are shared by the tests of this file (each uses its own topics and its
//! own etcd); their broker logs are in `target/test-logs/real_data_path-kafka/`.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use cutover_integration_tests::cutover::Cutover;
use cutover_integration_tests::oracle::{check_target, SourceEntry, SourceLayout};
use cutover_integration_tests::*;

const SYNC: Duration = Duration::from_secs(120);

fn spec(codec: Codec, mode: ProduceMode, first_seq: u64) -> ProduceSpec {
    ProduceSpec {
        codec,
        mode,
        batch_records: 50,
        first_seq,
        ..ProduceSpec::default()
    }
}

fn txn() -> ProduceMode {
    ProduceMode::Transactional { abort_every: None }
}

/// `cutover verify` of one topic of link l1: must exit 0 and say identical.
fn verify(cutover: &Cutover, topic: &str) -> Result<serde_json::Value> {
    let (code, out, err) =
        cutover.cli_raw(&["--json", "verify", "--link", "l1", "--topic", topic])?;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    ensure!(
        code == 0 && v["identical"] == true,
        "verify exited {code}: {out}{err}"
    );
    Ok(v)
}

/// Every Produce the fetchers built passed the client-rule check.
fn assert_no_rule_violations(cutover: &Cutover) -> Result<()> {
    for f in &cutover.fetchers {
        let v = f.metric_sum("cutover_fetcher_produce_rule_violations_total")?;
        ensure!(v == 0.0, "{}: {v} produce rule violations", f.id);
    }
    Ok(())
}

/// Must-show 1: two transactional producers interleave committed and
/// aborted transactions on one partition, beside an idempotent and two
/// plain producers, every codec; a transaction is still open when the
/// mirror catches up (the fetch stops at the last stable offset) and is
/// committed afterwards.
#[test]
fn real_kafka_transactions_markers_and_aborts_become_fillers_at_their_offsets() -> Result<()> {
    const T: &str = "txn-mixed";
    let bed = RealBed::start("real_transactions")?;
    let src = bed.source_bootstrap().to_owned();
    bed.kafka.create_topic(Side::Source, T, 1, &[])?;

    let mut t1 = Writer::new(
        &src,
        T,
        0,
        spec(Codec::Lz4, txn(), 0),
        Some("cutover-test-t1"),
    )?;
    let mut t2 = Writer::new(
        &src,
        T,
        0,
        spec(Codec::Zstd, txn(), 100_000),
        Some("cutover-test-t2"),
    )?;
    let mut idem = Writer::new(
        &src,
        T,
        0,
        spec(Codec::Gzip, ProduceMode::Idempotent, 200_000),
        None,
    )?;
    let mut plain = Writer::new(
        &src,
        T,
        0,
        spec(Codec::Snappy, ProduceMode::Plain, 300_000),
        None,
    )?;
    let mut bare = Writer::new(
        &src,
        T,
        0,
        spec(Codec::None, ProduceMode::Plain, 400_000),
        None,
    )?;

    // Interleaved on the log: t1 and t2 have transactions open at once, so
    // their batches, markers and the other producers' batches alternate.
    let mut txn_ends = 0;
    for round in 0..6 {
        t1.begin()?;
        t1.write(30)?;
        t2.begin()?;
        t2.write(20)?;
        idem.write(25)?;
        t1.write(10)?;
        plain.write(15)?;
        if round % 2 == 0 {
            t1.commit()?;
            t2.abort()?;
        } else {
            t2.commit()?;
            t1.abort()?;
        }
        txn_ends += 2;
        bare.write(5)?;
    }

    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[T])?;
    cutover.wait_in_sync("l1", SYNC)?;

    // Live: a transaction open across the mirror's catching up, data of
    // another producer behind it, then the commit.
    t1.begin()?;
    t1.write(40)?;
    plain.write(10)?;
    t1.commit()?;
    txn_ends += 1;
    t2.begin()?;
    t2.write(10)?;
    t2.abort()?;
    txn_ends += 1;
    idem.write(10)?;
    cutover.wait_in_sync("l1", SYNC)?;

    let layout = SourceLayout::read(&src, T, 0)?;
    // The consumers' view agrees with what the producers were told.
    let writers = [&t1, &t2, &idem, &plain, &bare];
    for w in writers {
        for r in w.records() {
            match layout.entries.get(&r.offset) {
                Some(SourceEntry::Committed(c)) if !r.aborted => {
                    ensure!(
                        *c == r.to_consumed(),
                        "source offset {} differs from its ack",
                        r.offset
                    )
                }
                Some(SourceEntry::Aborted) if r.aborted => {}
                other => anyhow::bail!(
                    "record seq {} acked at {} (aborted: {}) reads back as {other:?}",
                    r.seq,
                    r.offset,
                    r.aborted
                ),
            }
        }
    }
    let written: usize = writers.iter().map(|w| w.records().len()).sum();
    let aborted = layout.aborted().len();
    let markers = layout.invisible().len();
    ensure!(
        markers == txn_ends,
        "{markers} invisible offsets on the source, {txn_ends} transactions ended"
    );
    ensure!(aborted > 0 && layout.committed().count() + aborted == written);

    // The target, read_uncommitted: committed records at their offsets,
    // fillers exactly at the markers ("control") and aborted records
    // ("aborted").
    let target = read_partition(bed.target_bootstrap(), T, 0, layout.low, layout.high)?;
    let compared = check_target(&layout, &target, |e, reason| match e {
        SourceEntry::Aborted => reason == "aborted",
        SourceEntry::Invisible => reason == "control",
        SourceEntry::Committed(_) => false,
    })?;
    ensure!(compared as usize == layout.committed().count());

    // read_committed consumers of both sides agree record for record (the
    // target has no transactions, so fillers are all it adds).
    let source_rc = read_partition_isolated(
        &src,
        T,
        0,
        layout.low,
        layout.high,
        Isolation::ReadCommitted,
        SYNC,
    )?;
    let target_rc: Vec<_> = read_partition_isolated(
        bed.target_bootstrap(),
        T,
        0,
        layout.low,
        layout.high,
        Isolation::ReadCommitted,
        SYNC,
    )?
    .into_iter()
    .filter(|r| oracle::filler_reason(r).is_none())
    .collect();
    assert_identical(&source_rc, &target_rc);

    // And so does `cutover verify`.
    let verify = verify(&cutover, T)?;
    let p = &verify["partitions"][0];
    ensure!(
        p["records_identical"].as_u64() == Some(compared)
            && p["fillers_skipped"].as_u64() == Some((aborted + markers) as u64),
        "verify: {p:#}; consumers: {compared} committed, {} fillers",
        aborted + markers
    );
    assert_no_rule_violations(&cutover)?;
    Ok(())
}

/// The topic settings Kafka's own tests use to make the log cleaner run
/// within a second (real-kafka.md).
const FAST_COMPACTION: [(&str, &str); 6] = [
    ("cleanup.policy", "compact"),
    ("segment.ms", "100"),
    ("min.cleanable.dirty.ratio", "0.01"),
    ("min.compaction.lag.ms", "0"),
    ("delete.retention.ms", "100"),
    ("file.delete.delay.ms", "0"),
];

/// A broker rolls a segment on an append whose record timestamp is more
/// than `segment.ms` past the segment's first one (record time, not wall
/// time; test records are timestamped base + seq): skips 200 sequence
/// numbers and writes one record, so the segment before it is closed and
/// the cleaner may clean it.
fn roll_segment(w: &mut Writer, key: u64) -> Result<()> {
    w.skip(200);
    w.write_keyed([key], false)
}

/// Polls `what` on the partition's layout until `done` holds.
fn wait_layout(
    bootstrap: &str,
    topic: &str,
    what: &str,
    done: impl Fn(&SourceLayout) -> bool,
) -> Result<SourceLayout> {
    let deadline = std::time::Instant::now() + SYNC;
    loop {
        let layout = SourceLayout::read(bootstrap, topic, 0)?;
        if done(&layout) {
            return Ok(layout);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{topic} at {bootstrap}: {what} did not happen within {SYNC:?} (low {}, high {}, {} invisible)",
            layout.low,
            layout.high,
            layout.invisible().len()
        );
        // The log cleaner has no event a client can await: poll.
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn is_tombstone(e: &SourceEntry) -> bool {
    matches!(e, SourceEntry::Committed(r) if r.value.is_none())
}

/// Must-show 2: a source topic the real log cleaner has compacted (holes
/// between and inside batches, tombstones kept and tombstones already
/// expired) is mirrored with every surviving record at its offset and
/// fillers exactly in the holes; the target topic compacts too.
#[test]
fn real_kafka_compacted_source_holes_become_fillers_and_target_compacts() -> Result<()> {
    const T: &str = "compacted";
    let bed = RealBed::start("real_compaction")?;
    let src = bed.source_bootstrap().to_owned();
    bed.kafka
        .create_topic(Side::Source, T, 1, &FAST_COMPACTION)?;
    let mut w = Writer::new(
        &src,
        T,
        0,
        spec(Codec::Lz4, ProduceMode::Idempotent, 0),
        None,
    )?;
    // 20 keys written over and over in batches of 50: the cleaner removes
    // whole early batches and records from inside later ones.
    for _ in 0..10 {
        w.write_keyed(0..20, false)?;
        w.write_keyed((0..20).step_by(3), false)?;
    }
    // Keys 0..5 deleted first: their tombstones expire (delete.retention.ms
    // 100) once the cleaner passes them a second time.
    w.write_keyed(0..5, true)?;
    roll_segment(&mut w, 19)?;
    wait_layout(&src, T, "the first cleaning", |l| {
        !l.invisible().is_empty() && l.committed().any(|r| r.value.is_none())
    })?;
    // A tombstone goes at the first cleaning after its delete horizon
    // (delete.retention.ms after the cleaning that kept it): more dirty
    // segments until a cleaning has dropped them.
    let deadline = std::time::Instant::now() + SYNC;
    let source_before = loop {
        w.write_keyed(20..40, false)?;
        roll_segment(&mut w, 18)?;
        let l = SourceLayout::read(&src, T, 0)?;
        if !l.committed().any(|r| r.value.is_none()) {
            break l;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "tombstones of keys 0..5 never expired"
        );
        // The cleaner has no event a client can await: poll.
        std::thread::sleep(Duration::from_millis(300));
    };
    // Tombstones of keys 5..10 written now are kept (not yet cleaned).
    w.write_keyed(5..10, true)?;
    let holes = source_before.invisible();
    ensure!(holes.len() > 100, "only {} holes", holes.len());

    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[T])?;
    cutover.wait_in_sync("l1", SYNC)?;

    // The source may have compacted further meanwhile; compare with what it
    // holds now, which the cleaner cannot change while nothing is written.
    let layout = SourceLayout::read(&src, T, 0)?;
    ensure!(layout.low == 0, "compaction never moves the log start");
    // Holes inside batches: some surviving batch spans a hole.
    let batches = tokio::runtime::Runtime::new()?
        .block_on(cutover_integration_tests::bench::raw_batches(&src, T, 0))?;
    let inside = batches.iter().any(|(h, _)| {
        let (first, last) = (
            h.base_offset,
            h.base_offset + i64::from(h.last_offset_delta),
        );
        (i64::from(h.record_count) < last - first + 1)
            && layout
                .invisible()
                .iter()
                .any(|o| (first..=last).contains(o))
    });
    ensure!(
        inside,
        "no batch with a hole inside it; the test did not compact enough"
    );
    let between = batches
        .windows(2)
        .any(|w| w[1].0.base_offset > w[0].0.base_offset + i64::from(w[0].0.last_offset_delta) + 1);
    ensure!(between, "no hole between batches");
    ensure!(
        layout.offsets_of(is_tombstone).len() == 5,
        "the kept tombstones of keys 5..10 must be on the source: {:?}",
        layout.offsets_of(is_tombstone)
    );

    let target = read_partition(bed.target_bootstrap(), T, 0, layout.low, layout.high)?;
    // The target compacts on its own from the start (it was created with
    // the source's settings), so records compaction may drop can be gone.
    let compared = oracle::check_target_compacted(&layout, &target)?;
    ensure!(compared >= 40, "only {compared} records compared");
    verify(&cutover, T)?;

    // The target topic compacts on its own: new versions of every key pass
    // through the mirror and the target's cleaner removes older ones. It
    // was created compacting, with the source's settings.
    let configs = bed.kafka.admin(Side::Target)?.topic_configs(T)?;
    ensure!(configs.get("cleanup.policy").map(String::as_str) == Some("compact"));
    let target_high_before = layout.high;
    for _ in 0..3 {
        w.write_keyed(0..40, false)?;
    }
    roll_segment(&mut w, 0)?;
    cutover.wait_in_sync("l1", SYNC)?;
    let tgt = bed.target_bootstrap().to_owned();
    wait_layout(&tgt, T, "the target's cleaner removing records", |l| {
        l.invisible().iter().any(|o| *o < target_high_before)
    })?;
    // Wherever both still hold a record, it is the same record.
    let (_, s_high) = watermarks(&src, T, 0)?;
    let s = read_partition(&src, T, 0, 0, s_high)?;
    let t = read_partition(&tgt, T, 0, 0, s_high)?;
    let t_by: std::collections::BTreeMap<i64, &ConsumedRecord> =
        t.iter().map(|r| (r.offset, r)).collect();
    let mut both = 0;
    for r in &s {
        if let Some(tr) = t_by.get(&r.offset) {
            if oracle::filler_reason(tr).is_none() {
                ensure!(*tr == r, "offset {}: target {tr:?} source {r:?}", r.offset);
                both += 1;
            }
        }
    }
    ensure!(both >= 40, "only {both} records on both sides");
    assert_no_rule_violations(&cutover)?;
    Ok(())
}

/// Must-show 3: a partition whose log start DeleteRecords moved, and one
/// retention trimmed, before the mirror starts: the target's log start
/// equals the source's once copying started (the leading fillers are
/// deleted again). Records retention deletes while the mirror is paused
/// are reported with their exact range.
#[test]
fn real_kafka_trimmed_sources_keep_their_log_start_and_losses_are_reported_exactly() -> Result<()> {
    const DELETED: &str = "trim-deleted";
    const RETAINED: &str = "trim-retention";
    let bed = RealBed::start("real_trimmed")?;
    let src = bed.source_bootstrap().to_owned();
    let admin = bed.kafka.admin(Side::Source)?;
    bed.kafka.create_topic(Side::Source, DELETED, 1, &[])?;
    let mut d = Writer::new(
        &src,
        DELETED,
        0,
        spec(Codec::Zstd, ProduceMode::Plain, 0),
        None,
    )?;
    d.write(300)?;
    ensure!(admin.delete_records(DELETED, 0, 120)? == 120);

    // Records of early 2026 are far older than an hour: retention deletes
    // them at its next check (500 ms), every segment up to the first one
    // holding records of today. A record of today rolls the segment (its
    // timestamp is far past the segment's first).
    bed.kafka.create_topic(
        Side::Source,
        RETAINED,
        1,
        &[("retention.ms", "3600000"), ("segment.ms", "100")],
    )?;
    let mut r = Writer::new(
        &src,
        RETAINED,
        0,
        spec(Codec::None, ProduceMode::Plain, 0),
        None,
    )?;
    let today = ProduceSpec {
        timestamp_base_ms: cutover_model::now_ms(),
        ..spec(Codec::Lz4, ProduceMode::Plain, 1_000)
    };
    let mut fresh = Writer::new(&src, RETAINED, 0, today, None)?;
    r.write(200)?;
    fresh.write(50)?;
    let low = wait_low(&src, RETAINED, |low| low == 200)?;

    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[DELETED, RETAINED])?;
    let status = cutover.wait_in_sync("l1", SYNC)?;
    let tgt = bed.target_bootstrap().to_owned();
    ensure!(watermarks(&tgt, DELETED, 0)? == (120, 300));
    ensure!(watermarks(&tgt, RETAINED, 0)? == (low, 250));
    for (t, from, to) in [(DELETED, 120, 300), (RETAINED, low, 250)] {
        let s = read_partition(&src, t, 0, from, to)?;
        let tr = read_partition(&tgt, t, 0, from, to)?;
        assert_identical(&s, &tr);
    }
    // A fresh target is aligned, not a loss.
    ensure!(
        !status.to_string().contains("\"lost\":[{"),
        "nothing was lost yet: {status:#}"
    );

    // Paused, the source's retention deletes records not copied yet: with
    // retention.ms=1 every record is expired. The leader copies the setting
    // to the target too; it is set back on both before the mirror resumes.
    cutover.cli_json(&["mirror", "pause", "--link", "l1", RETAINED])?;
    // The pause takes effect when the fetcher has stopped the partition
    // and given it up; records written before that would still be copied.
    let owner_key = format!("owners/fetch/l1/{RETAINED}/0");
    cutover_integration_tests::cutover::wait_until("the paused partition given up", SYNC, || {
        let (_, kvs) = cutover_integration_tests::cutover::etcd_snapshot(bed.etcd_endpoint())?;
        Ok(!kvs.iter().any(|(k, _)| k.ends_with(&owner_key)))
    })?;
    fresh.write(100)?;
    let source_admin = bed.kafka.admin(Side::Source)?;
    let target_admin = bed.kafka.admin(Side::Target)?;
    let retention_on_target = |v: &str| -> Result<()> {
        let v = v.to_owned();
        cutover_integration_tests::cutover::wait_until(
            "retention.ms synced to the target",
            SYNC,
            || Ok(target_admin.topic_configs(RETAINED)?.get("retention.ms") == Some(&v)),
        )
    };
    source_admin.set_topic_configs(RETAINED, &[("retention.ms", "1")])?;
    let new_low = wait_low(&src, RETAINED, |l| l == 350)?;
    retention_on_target("1")?;
    source_admin.set_topic_configs(RETAINED, &[("retention.ms", "3600000")])?;
    retention_on_target("3600000")?;
    fresh.write(20)?;
    cutover.cli_json(&["mirror", "resume", "--link", "l1", RETAINED])?;
    // The progress of before the pause looks in sync until the resumed
    // partition reports: wait until status shows the copy past the loss.
    cutover_integration_tests::cutover::wait_until("the copy past the lost range", SYNC, || {
        Ok(watermarks(&tgt, RETAINED, 0)?.1 == 370)
    })?;
    cutover_integration_tests::cutover::wait_until(
        "status reporting the copy past the lost range",
        SYNC,
        || {
            let s = cutover.cli_json(&["status", "--link", "l1", RETAINED])?;
            Ok(s["topics"][0]["partitions"][0]["target_log_end"] == 370)
        },
    )?;
    let status = cutover.wait_in_sync("l1", SYNC)?;
    let lost = status["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["topic"] == RETAINED)
        .map(|t| t["partitions"][0]["lost"].clone())
        .unwrap_or_default();
    ensure!(
        lost == serde_json::json!([{"from": 250, "to": new_low}]),
        "lost ranges {lost} (expected [250, {new_low}))"
    );
    let (t_low, t_high) = watermarks(&tgt, RETAINED, 0)?;
    let (_, s_high) = watermarks(&src, RETAINED, 0)?;
    ensure!(t_high == s_high && s_high == 370 && t_low <= new_low);
    let s = read_partition(&src, RETAINED, 0, new_low, s_high)?;
    let tr = read_partition(&tgt, RETAINED, 0, new_low, s_high)?;
    assert_identical(&s, &tr);
    let fillers = read_partition(&tgt, RETAINED, 0, t_low, new_low)?;
    ensure!(
        fillers
            .iter()
            .all(|f| f.offset < 250 || oracle::filler_reason(f).as_deref() == Some("lost")),
        "the lost range holds fillers marked lost"
    );
    assert_no_rule_violations(&cutover)?;
    Ok(())
}

/// Retention runs on the broker's schedule, with nothing to await: polls
/// the log start until `done` holds.
fn wait_low(bootstrap: &str, topic: &str, done: impl Fn(i64) -> bool) -> Result<i64> {
    let mut low = -1;
    cutover_integration_tests::cutover::wait_until("the log start to move", SYNC, || {
        low = watermarks(bootstrap, topic, 0)?.0;
        Ok(done(low))
    })
    .with_context(|| format!("{topic}: log start still {low}"))?;
    Ok(low)
}

/// Must-show 7: large data batches reach the target as the source's bytes
/// (only the header fields the fetcher owns differ), so neither the
/// fetcher nor the broker rebuilt them.
#[test]
fn real_kafka_large_batches_are_stored_as_the_sources_bytes() -> Result<()> {
    let bed = RealBed::start("real_forwarded")?;
    let src = bed.source_bootstrap().to_owned();
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    let mut topics = Vec::new();
    for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
        let t = format!("forwarded-{codec}");
        bed.kafka.create_topic(Side::Source, &t, 1, &[])?;
        let big = ProduceSpec {
            batch_records: 100,
            value_size: Some(700),
            ..spec(codec, ProduceMode::Idempotent, 0)
        };
        Writer::new(&src, &t, 0, big, None)?.write(2_000)?;
        topics.push(t);
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    cutover.mirror(&bed, "l1", &names)?;
    cutover.wait_in_sync("l1", SYNC)?;
    let rt = tokio::runtime::Runtime::new()?;
    for t in &topics {
        let source = rt.block_on(cutover_integration_tests::bench::raw_batches(&src, t, 0))?;
        let target = rt.block_on(cutover_integration_tests::bench::raw_batches(
            bed.target_bootstrap(),
            t,
            0,
        ))?;
        let by_base: std::collections::BTreeMap<i64, &Vec<u8>> =
            target.iter().map(|(h, b)| (h.base_offset, b)).collect();
        let mut same = 0;
        for (h, bytes) in &source {
            if bytes.len() < 16 * 1024 {
                continue;
            }
            let t_bytes = by_base.get(&h.base_offset).ok_or_else(|| {
                anyhow::anyhow!(
                    "{t}: no target batch starts at source batch {}",
                    h.base_offset
                )
            })?;
            // Records section (after the 61-byte header) byte for byte; of
            // the header, what no one had to change.
            ensure!(
                t_bytes.len() == bytes.len() && t_bytes[61..] == bytes[61..],
                "{t}: the batch at {} was rebuilt on the way",
                h.base_offset
            );
            ensure!(t_bytes[21..23] == bytes[21..23], "{t}: attributes changed");
            ensure!(
                t_bytes[23..43] == bytes[23..43],
                "{t}: offsets or timestamps changed"
            );
            same += 1;
        }
        ensure!(same >= 10, "{t}: only {same} large batches compared");
    }
    assert_no_rule_violations(&cutover)?;
    Ok(())
}

fn configs_of(
    bed: &RealBed,
    side: Side,
    topic: &str,
) -> Result<std::collections::BTreeMap<String, String>> {
    bed.kafka.admin(side)?.topic_configs(topic)
}

/// Polls the target until `done` holds (the leader's sync runs every
/// second in tests; it has no event a client can await).
fn wait_target(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    cutover_integration_tests::cutover::wait_until(what, SYNC, &mut done)
}

/// Must-show 4: mirror add creates the target topic with CreateTopics and
/// the source's settings; partitions added on the source are added on the
/// target and mirrored; a config changed on the source changes on the
/// target; a non-empty target topic, one with another partition count and
/// one with LogAppendTime are refused with their documented messages, and
/// nothing is stored.
#[test]
fn real_kafka_admin_paths_create_grow_sync_and_refuse() -> Result<()> {
    const T: &str = "admin-orders";
    let bed = RealBed::start("real_admin")?;
    let src = bed.source_bootstrap().to_owned();
    let tgt = bed.target_bootstrap().to_owned();
    bed.kafka.create_topic(
        Side::Source,
        T,
        2,
        &[
            ("retention.ms", "86400000"),
            ("max.message.bytes", "2000000"),
            ("compression.type", "lz4"),
        ],
    )?;
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[T])?;

    let target_admin = bed.kafka.admin(Side::Target)?;
    ensure!(target_admin.partitions(T)? == 2);
    ensure!(
        target_admin.replication_factor(T)? == 3,
        "created with the target's default RF 3"
    );
    let created = configs_of(&bed, Side::Target, T)?;
    let source = configs_of(&bed, Side::Source, T)?;
    for (k, v) in [
        ("retention.ms", "86400000"),
        ("max.message.bytes", "2000000"),
        ("compression.type", "lz4"),
        ("message.timestamp.type", "CreateTime"),
    ] {
        ensure!(
            created.get(k).map(String::as_str) == Some(v),
            "target {k} = {:?}",
            created.get(k)
        );
    }
    // Settings the source only inherits from its broker are set to the
    // source's effective value.
    ensure!(created.get("cleanup.policy") == source.get("cleanup.policy"));

    for p in 0..2 {
        Writer::new(
            &src,
            T,
            p,
            spec(Codec::None, ProduceMode::Idempotent, 0),
            None,
        )?
        .write(100)?;
    }
    cutover.wait_in_sync("l1", SYNC)?;

    // Partitions added on the source appear on the target and are copied.
    bed.kafka.admin(Side::Source)?.create_partitions(T, 4)?;
    wait_target("4 partitions on the target", || {
        Ok(target_admin.partitions(T)? == 4)
    })?;
    for p in 2..4 {
        Writer::new(&src, T, p, spec(Codec::Gzip, ProduceMode::Plain, 0), None)?.write(50)?;
    }
    let status = cutover.wait_in_sync("l1", SYNC)?;
    ensure!(status["topics"][0]["partitions"].as_array().map(Vec::len) == Some(4));
    for p in 0..4 {
        let (_, high) = watermarks(&src, T, p)?;
        assert_identical(
            &read_partition(&src, T, p, 0, high)?,
            &read_partition(&tgt, T, p, 0, high)?,
        );
    }

    // A config changed on the source follows on the target.
    bed.kafka
        .admin(Side::Source)?
        .set_topic_configs(T, &[("retention.ms", "43200000")])?;
    wait_target("retention.ms synced", || {
        Ok(configs_of(&bed, Side::Target, T)?
            .get("retention.ms")
            .map(String::as_str)
            == Some("43200000"))
    })?;

    // Refusals: nothing stored, the documented messages.
    bed.kafka
        .create_topic(Side::Source, "admin-dirty", 1, &[])?;
    bed.kafka
        .create_topic(Side::Target, "admin-dirty", 1, &[])?;
    Writer::new(
        &tgt,
        "admin-dirty",
        0,
        spec(Codec::None, ProduceMode::Plain, 0),
        None,
    )?
    .write(1)?;
    bed.kafka
        .create_topic(Side::Source, "admin-parts", 3, &[])?;
    bed.kafka
        .create_topic(Side::Target, "admin-parts", 2, &[])?;
    bed.kafka.create_topic(Side::Source, "admin-lat", 1, &[])?;
    bed.kafka.create_topic(
        Side::Target,
        "admin-lat",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )?;
    for (topic, says) in [
        (
            "admin-dirty",
            "partition 0 already holds records (log end 1)",
        ),
        (
            "admin-parts",
            "exists on the target with 2 partitions but has 3 on the source",
        ),
        ("admin-lat", "LogAppendTime"),
    ] {
        let (code, out, err) =
            cutover.cli_raw(&["--json", "mirror", "add", "--link", "l1", topic])?;
        ensure!(code == 2, "{topic}: exit {code}: {out}{err}");
        ensure!(
            format!("{out}{err}").contains(says),
            "{topic}: the message should say {says:?}: {out}{err}"
        );
        // The fetcher keeps writing progress, so etcd is never still: no
        // key may name the refused topic.
        let (_, kvs) = cutover_integration_tests::cutover::etcd_snapshot(bed.etcd_endpoint())?;
        ensure!(
            !kvs.iter().any(|(k, _)| k.contains(topic)),
            "{topic}: the refused add stored something"
        );
    }
    assert_no_rule_violations(&cutover)?;
    Ok(())
}

/// Kafka's own Java test clients (the client most users run) agree with
/// the mirror: every record the Java producer had acknowledged on the
/// source is consumed by a Java consumer group on the target at the same
/// partition and offset, with the same key and value.
#[test]
fn real_kafka_java_clients_see_every_acknowledged_record_at_its_offset() -> Result<()> {
    const T: &str = "java-clients";
    const N: usize = 3_000;
    let bed = RealBed::start("real_java_clients")?;
    bed.kafka.create_topic(Side::Source, T, 3, &[])?;
    let dist = bed.kafka.target.dist().clone();
    let acked =
        java_clients::verifiable_producer(&dist, bed.source_bootstrap(), T, N, bed.log_dir())?;
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[T])?;
    cutover.wait_in_sync("l1", SYNC)?;
    let mut consumed = java_clients::verifiable_consumer(
        &dist,
        bed.target_bootstrap(),
        T,
        "java-group",
        N,
        bed.log_dir(),
    )?;
    let mut acked = acked;
    acked.sort();
    consumed.sort();
    ensure!(
        consumed.len() == N,
        "the Java consumer got {} of {N} records",
        consumed.len()
    );
    ensure!(
        acked == consumed,
        "first difference: {:?}",
        acked.iter().zip(&consumed).find(|(a, c)| a != c)
    );
    Ok(())
}

/// The fetch loop's incremental fetch sessions (KIP-227) on a real broker:
/// one full request creates the session, then requests carry only changes
/// (nothing at all while nothing changes); the broker answers only for
/// partitions with something new, and a forgotten partition is no longer
/// answered for.
#[test]
fn real_kafka_fetch_sessions_are_incremental() -> Result<()> {
    use cutover_kafka::{Cluster, ClusterConfig, FetchOptions, FetchSession};
    const T: &str = "sessions";
    const N: i32 = 40;
    let bed = RealBed::start("real_fetch_sessions")?;
    let src = bed.source_bootstrap().to_owned();
    bed.kafka.create_topic(Side::Source, T, N, &[])?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let cluster = Cluster::connect(ClusterConfig::new([src.as_str()])).await?;
        // The source is one broker, node 1.
        let leader = cluster.leader_hint(T, 0).unwrap_or(1);
        let mut session = FetchSession::new(leader);
        let opts = FetchOptions {
            max_wait: Duration::from_millis(200),
            ..FetchOptions::default()
        };
        for p in 0..N {
            session.want((T.into(), p), 0);
        }
        // The first request carries and answers every partition.
        let first = cluster.fetch_in_session(&mut session, &opts).await?;
        ensure!(session.id() != 0, "the broker offered no session");
        ensure!(first.len() == N as usize && session.full_requests() == 1);
        ensure!(session.last_sent() == N as usize);
        // Nothing new: requests carry no partition, answered only for
        // partitions whose high watermark or log start still settled after
        // creation (without records), then not at all.
        let settle = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = cluster.fetch_in_session(&mut session, &opts).await?;
            // A fresh partition may still answer NOT_LEADER_OR_FOLLOWER or
            // UNKNOWN_LEADER_EPOCH while the broker takes up its leadership;
            // it is then sent again.
            for r in &got {
                if let Ok(f) = &r.result {
                    ensure!(
                        f.records.is_empty(),
                        "records on an empty partition {}",
                        r.partition
                    );
                }
            }
            let errored = got.iter().filter(|r| r.result.is_err()).count();
            if got.is_empty() && session.last_sent() == 0 {
                break;
            }
            let last: Vec<_> = got
                .iter()
                .map(|r| (r.partition, r.result.as_ref().err().map(|e| e.to_string())))
                .collect();
            ensure!(
                std::time::Instant::now() < settle,
                "the session kept answering for partitions without anything new \
                 ({errored} errors, {} sent): {last:?}",
                session.last_sent()
            );
        }
        // A record on partition 7: only partition 7 comes back, from a
        // request that carried no partition.
        let mut w = Writer::new(&src, T, 7, spec(Codec::None, ProduceMode::Plain, 0), None)?;
        tokio::task::block_in_place(|| w.write(1))?;
        let got = cluster.fetch_in_session(&mut session, &opts).await?;
        ensure!(session.last_sent() == 0);
        ensure!(
            got.len() == 1
                && got[0].partition == 7
                && got[0].offset == 0
                && !got[0]
                    .result
                    .as_ref()
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .records
                    .is_empty(),
            "expected records of partition 7 only: {:?}",
            got.iter().map(|r| r.partition).collect::<Vec<_>>()
        );
        // Partition 7 forgotten (one partition sent): new records there are
        // not answered.
        session.forget(&(T.into(), 7));
        tokio::task::block_in_place(|| w.write(1))?;
        let got = cluster.fetch_in_session(&mut session, &opts).await?;
        ensure!(session.last_sent() == 1);
        ensure!(
            got.is_empty(),
            "a forgotten partition was answered: {:?}",
            got.iter().map(|r| r.partition).collect::<Vec<_>>()
        );
        // Back at its new offset, it is answered again; still one session.
        session.want((T.into(), 7), 1);
        let got = cluster.fetch_in_session(&mut session, &opts).await?;
        ensure!(session.last_sent() == 1);
        ensure!(got.len() == 1 && got[0].partition == 7 && got[0].offset == 1);
        ensure!(
            session.full_requests() == 1,
            "{} full requests",
            session.full_requests()
        );
        cluster.close().await;
        Ok(())
    })
}

/// DescribeProducers (what a promotion names when the source keeps
/// moving): an idempotent producer is listed with its last sequence, a
/// plain one is not (it has no id), and an open transaction shows its first
/// offset.
#[test]
fn real_kafka_describe_producers_names_idempotent_writers_and_open_transactions() -> Result<()> {
    use rdkafka::producer::{BaseRecord, Producer as _};
    let bed = RealBed::start("real_forwarded")?;
    let src = bed.source_bootstrap().to_owned();
    let t = "producers-described";
    bed.kafka.create_topic(Side::Source, t, 2, &[])?;
    Writer::new(
        &src,
        t,
        0,
        spec(Codec::None, ProduceMode::Idempotent, 0),
        None,
    )?
    .write(100)?;
    Writer::new(&src, t, 0, spec(Codec::None, ProduceMode::Plain, 100), None)?.write(10)?;

    let txn: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &src)
        .set("transactional.id", "producers-described-txn")
        .create()?;
    txn.init_transactions(Duration::from_secs(30))?;
    txn.begin_transaction()?;
    txn.send(
        BaseRecord::<[u8], [u8]>::to(t)
            .partition(1)
            .payload(b"open"),
    )
    .map_err(|(e, _)| e)?;
    txn.flush(Duration::from_secs(30))?;

    let rt = tokio::runtime::Runtime::new()?;
    let (p0, p1) = rt.block_on(async {
        let c = cutover_kafka::Cluster::connect(cutover_kafka::ClusterConfig::new([src.as_str()]))
            .await?;
        let r = (
            c.describe_producers(t, 0).await?,
            c.describe_producers(t, 1).await?,
        );
        c.close().await;
        anyhow::Ok(r)
    })?;
    ensure!(
        p0.len() == 1,
        "partition 0: one idempotent producer, got {p0:?}"
    );
    ensure!(
        p0[0].producer_id >= 0 && p0[0].last_sequence == 99 && p0[0].current_txn_start_offset == -1,
        "partition 0: {p0:?}"
    );
    ensure!(
        p1.len() == 1,
        "partition 1: the transactional producer, got {p1:?}"
    );
    ensure!(
        p1[0].current_txn_start_offset == 0,
        "partition 1: the open transaction starts at 0: {p1:?}"
    );
    txn.abort_transaction(Duration::from_secs(30))?;
    Ok(())
}
