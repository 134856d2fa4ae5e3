//! Fetchers sharing partitions through etcd leases, with real processes.
//!
//! Broker: librdkafka's mock cluster, because ownership is about fetchers and etcd; fencing by a real broker and kill -9 on real Kafka are in `real_faults.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context as _, Result};
use cutover_integration_tests::cutover::{assert_mirrored, wait_until, Cutover};
use cutover_integration_tests::*;

fn live_spec() -> ProduceSpec {
    ProduceSpec {
        codec: Codec::Lz4,
        mode: ProduceMode::Idempotent,
        first_seq: 1_000_000,
        ..ProduceSpec::default()
    }
}

/// The end of every test here: `more` further records acknowledged, the
/// producer stopped without a lost write, the mirror in sync and every
/// partition identical. Returns the producer's report and the records
/// compared.
fn finish(
    bed: &Bed,
    cutover: &Cutover,
    load: LoadGenerator,
    more: u64,
    topic: &str,
    partitions: i32,
) -> Result<(LoadReport, u64)> {
    load.wait_acked(load.acked() + more, Duration::from_secs(30))?;
    let report = load.stop()?;
    assert_eq!(
        report.total_failed(),
        0,
        "the live producer lost writes: {report:?}"
    );
    cutover.wait_in_sync("l1", Duration::from_secs(120))?;
    let mut compared = 0;
    for p in 0..partitions {
        compared += assert_mirrored(bed, topic, p)?;
    }
    Ok((report, compared))
}

#[test]
fn killed_fetcher_is_replaced_within_the_lease_timeout_without_gap_or_duplicate() -> Result<()> {
    const TOPIC: &str = "events";
    const N: i32 = 6;
    let lease_ttl = Duration::from_secs(3);
    let bed = Bed::start("ownership_kill9")?;
    bed.clusters.create_topic_both(TOPIC, N)?;
    let history = ProduceSpec {
        codec: Codec::Zstd,
        mode: ProduceMode::Idempotent,
        ..ProduceSpec::default()
    };
    for p in 0..N {
        produce(bed.source_bootstrap(), TOPIC, p, 5_000, &history)?;
    }
    let mut cutover = Cutover::start(&bed)?;
    cutover.use_fetcher_lease(lease_ttl);
    cutover.add_fetcher()?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[TOPIC])?;

    let parts: Vec<(String, i32)> = (0..N).map(|p| (TOPIC.to_string(), p)).collect();
    let load = LoadGenerator::start(bed.source_bootstrap(), &parts, 3_000, live_spec())?;
    cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        o.len() == 2 && o.values().sum::<usize>() == N as usize
    })?;
    // The victim is replicating when it dies.
    let victim = cutover.fetcher("fetcher-1")?;
    wait_until("fetcher-1 to copy records", Duration::from_secs(30), || {
        Ok(victim.metric_sum("cutover_fetcher_records_total")? > 0.0)
    })?;
    load.wait_acked(3_000, Duration::from_secs(30))?;

    victim.process.kill9()?;
    let (owners, took) = cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        o.get("fetcher-2") == Some(&(N as usize)) && o.len() == 1
    })?;
    assert!(
        took <= lease_ttl + Duration::from_secs(5),
        "takeover took {took:?} (lease {lease_ttl:?}); owners {owners:?}"
    );

    let (report, compared) = finish(&bed, &cutover, load, 3_000, TOPIC, N)?;
    assert!(
        compared >= 30_000 + report.total_acked(),
        "compared {compared}"
    );
    Ok(())
}

#[test]
fn fetchers_share_fairly_and_sigterm_hands_over_before_the_lease_could_expire() -> Result<()> {
    const TOPIC: &str = "shared";
    const N: i32 = 9;
    let lease_ttl = Duration::from_secs(15);
    let bed = Bed::start("ownership_share")?;
    bed.clusters.create_topic_both(TOPIC, N)?;
    for p in 0..N {
        produce(
            bed.source_bootstrap(),
            TOPIC,
            p,
            2_000,
            &ProduceSpec::default(),
        )?;
    }
    let mut cutover = Cutover::start(&bed)?;
    cutover.use_fetcher_lease(lease_ttl);
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[TOPIC])?;
    let n = N as usize;
    cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        o.get("fetcher-1") == Some(&n)
    })?;

    let parts: Vec<(String, i32)> = (0..N).map(|p| (TOPIC.to_string(), p)).collect();
    let load = LoadGenerator::start(bed.source_bootstrap(), &parts, 2_000, live_spec())?;

    cutover.add_fetcher()?;
    let (o, _) = cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        o.len() == 2 && o.values().sum::<usize>() == n && o.values().all(|&c| c == 4 || c == 5)
    })?;
    assert_eq!(o.values().sum::<usize>(), n);
    cutover.add_fetcher()?;
    cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        o.len() == 3 && o.values().all(|&c| c == 3)
    })?;

    // SIGTERM: the fetcher stops its partitions, releases them and exits 0;
    // the others take them well before its lease could have expired.
    let leaving = cutover.fetcher("fetcher-2")?;
    leaving.process.sigterm()?;
    let status = leaving.process.wait_exit(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "fetcher-2 exited with {status:?}: {}",
        leaving.process.log_tail(20)
    );
    let (o, took) = cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        !o.contains_key("fetcher-2")
            && o.values().sum::<usize>() == n
            && o.values().all(|&c| c == 4 || c == 5)
    })?;
    assert!(
        took < lease_ttl,
        "handover took {took:?}, as long as a lease expiry ({lease_ttl:?}): {o:?}"
    );

    finish(&bed, &cutover, load, 2_000, TOPIC, N)?;
    Ok(())
}

#[test]
fn etcd_outage_longer_than_the_lease_stops_the_fetcher_which_then_joins_again() -> Result<()> {
    const TOPIC: &str = "outage";
    const N: i32 = 3;
    let lease_ttl = Duration::from_secs(3);
    let bed = Bed::start("ownership_etcd_outage")?;
    bed.clusters.create_topic_both(TOPIC, N)?;
    for p in 0..N {
        produce(bed.source_bootstrap(), TOPIC, p, 2_000, &live_spec())?;
    }
    let mut cutover = Cutover::start(&bed)?;
    cutover.use_fetcher_lease(lease_ttl);
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[TOPIC])?;
    let parts: Vec<(String, i32)> = (0..N).map(|p| (TOPIC.to_string(), p)).collect();
    let load = LoadGenerator::start(
        bed.source_bootstrap(),
        &parts,
        2_000,
        ProduceSpec {
            first_seq: 2_000_000,
            ..live_spec()
        },
    )?;
    let fetcher = cutover.fetcher("fetcher-1")?;
    wait_until(
        "the fetcher to own every partition",
        Duration::from_secs(30),
        || Ok(fetcher.metric_sum("cutover_fetcher_owned_partitions")? == f64::from(N)),
    )?;
    wait_until(
        "the fetcher to copy records",
        Duration::from_secs(30),
        || Ok(fetcher.metric_sum("cutover_fetcher_records_total")? > 0.0),
    )?;

    // etcd stops answering for longer than the lease: the fetcher must give
    // its lease up (stop every partition), and stay up.
    bed.etcd.pause()?;
    let outage = wait_until(
        "the fetcher to declare its lease lost and stop its partitions",
        lease_ttl + Duration::from_secs(15),
        || {
            Ok(
                fetcher.metric_sum("cutover_fetcher_lease_losses_total")? == 1.0
                    && fetcher.metric_sum("cutover_fetcher_owned_partitions")? == 0.0,
            )
        },
    );
    bed.etcd.resume()?;
    outage?;
    assert!(
        fetcher.process.is_running(),
        "the fetcher exited on a lost lease"
    );

    // Back: it joins with a new lease, takes every partition again and
    // catches up with what the producer wrote meanwhile.
    wait_until(
        "the fetcher to own every partition again",
        Duration::from_secs(30),
        || Ok(fetcher.metric_sum("cutover_fetcher_owned_partitions")? == f64::from(N)),
    )?;
    finish(&bed, &cutover, load, 2_000, TOPIC, N)?;
    assert_eq!(
        fetcher.metric_sum("cutover_fetcher_lease_losses_total")?,
        1.0,
        "one outage, one lost lease"
    );
    assert!(fetcher.process.is_running());
    Ok(())
}

/// By (fetcher id, gauge): the partitions it has a series for, and their sum.
type GaugeReport = BTreeMap<(String, &'static str), (BTreeSet<i32>, f64)>;

/// The partition gauges of `topic` each running fetcher exports.
fn gauge_report(cutover: &Cutover, topic: &str) -> Result<GaugeReport> {
    let mut report = BTreeMap::new();
    for f in cutover.fetchers.iter().filter(|f| f.process.is_running()) {
        for name in GAUGES {
            let mut parts = BTreeSet::new();
            let mut sum = 0.0;
            for (labels, value) in f.metric_samples(name)? {
                if labels.get("topic").map(String::as_str) != Some(topic) {
                    continue;
                }
                let p: i32 = labels
                    .get("partition")
                    .context("partition label")?
                    .parse()?;
                assert!(parts.insert(p), "{} exports {name} of {p} twice", f.id);
                sum += value;
            }
            report.insert((f.id.clone(), name), (parts, sum));
        }
    }
    Ok(report)
}

const GAUGES: [&str; 2] = [
    "cutover_fetcher_lag_records",
    "cutover_fetcher_target_log_end_offset",
];

/// Partitions of `topic` by owner, from `cutover status`.
fn owned(cutover: &Cutover, link: &str) -> Result<BTreeMap<String, BTreeSet<i32>>> {
    let s = cutover.cli_json(&["status", "--link", link])?;
    let mut m: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for t in s["topics"].as_array().into_iter().flatten() {
        for p in t["partitions"].as_array().into_iter().flatten() {
            if let (Some(o), Some(n)) = (p["owner"].as_str(), p["partition"].as_i64()) {
                m.entry(o.to_string()).or_default().insert(n as i32);
            }
        }
    }
    Ok(m)
}

/// Waits until every running fetcher exports the partition gauges of
/// exactly the partitions it owns (so a sum over fetchers counts each
/// partition once), and their target log ends add up to the target's.
fn wait_gauges_follow_ownership(bed: &Bed, cutover: &Cutover, topic: &str, n: i32) -> Result<()> {
    let mut target_end = 0.0;
    for p in 0..n {
        target_end += bed.clusters.watermarks(Side::Target, topic, p)?.1 as f64;
    }
    let mut last = String::new();
    let done = wait_until(
        "each partition's gauges on its owner only",
        Duration::from_secs(30),
        || {
            let owners = owned(cutover, "l1")?;
            let report = gauge_report(cutover, topic)?;
            last = format!("owners {owners:?}, gauges {report:?}");
            let mut ends = 0.0;
            for ((id, name), (parts, sum)) in &report {
                if owners.get(id).cloned().unwrap_or_default() != *parts {
                    return Ok(false);
                }
                if *name == GAUGES[1] {
                    ends += sum;
                }
            }
            Ok(ends == target_end)
        },
    );
    done.with_context(|| format!("target ends at {target_end} in total; last seen: {last}"))
}

/// Review defect: a fetcher kept the lag and target-log-end gauges of
/// partitions it had given up, so after a hand-over the lag summed over
/// fetchers counted the moved partitions twice.
#[test]
fn partition_gauges_follow_the_partition_to_its_new_owner() -> Result<()> {
    const TOPIC: &str = "gauges";
    const N: i32 = 4;
    let bed = Bed::start("ownership_gauges")?;
    bed.clusters.create_topic_both(TOPIC, N)?;
    for p in 0..N {
        produce(bed.source_bootstrap(), TOPIC, p, 1_000, &live_spec())?;
    }
    let mut cutover = Cutover::start(&bed)?;
    cutover.use_fetcher_lease(Duration::from_secs(15));
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[TOPIC])?;
    cutover.wait_in_sync("l1", Duration::from_secs(60))?;
    wait_gauges_follow_ownership(&bed, &cutover, TOPIC, N)?;

    // A second fetcher takes half of the partitions while records flow.
    let parts: Vec<(String, i32)> = (0..N).map(|p| (TOPIC.to_string(), p)).collect();
    let load = LoadGenerator::start(
        bed.source_bootstrap(),
        &parts,
        1_000,
        ProduceSpec {
            first_seq: 2_000_000,
            ..live_spec()
        },
    )?;
    cutover.add_fetcher()?;
    cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        o.len() == 2 && o.values().all(|&c| c == 2)
    })?;
    let report = load.stop()?;
    assert_eq!(report.total_failed(), 0, "{report:?}");
    cutover.wait_in_sync("l1", Duration::from_secs(60))?;
    wait_gauges_follow_ownership(&bed, &cutover, TOPIC, N)?;

    // SIGTERM hands its partitions back to the first, which reports them again.
    let leaving = cutover.fetcher("fetcher-2")?;
    leaving.process.sigterm()?;
    leaving.process.wait_exit(Duration::from_secs(20))?;
    cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        o.get("fetcher-1") == Some(&(N as usize)) && o.len() == 1
    })?;
    cutover.wait_in_sync("l1", Duration::from_secs(60))?;
    wait_gauges_follow_ownership(&bed, &cutover, TOPIC, N)?;
    for p in 0..N {
        assert_mirrored(&bed, TOPIC, p)?;
    }
    Ok(())
}
