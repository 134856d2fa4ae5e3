//! Faults on **real Apache Kafka**: a fetcher frozen past its lease and
//! fenced by the broker, a client writing into a mirrored target partition,
//! a target topic that refuses the source's batches, kill -9 of a fetcher
//! and of a target broker. Tests that stop brokers run on clusters of their
//! own (`RealBed::start_own`); the others share this file's clusters.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use cutover_integration_tests::cutover::{assert_mirrored, wait_until, Cutover};
use cutover_integration_tests::*;
use nix::sys::signal::Signal;
use serde_json::Value;

const SYNC: Duration = Duration::from_secs(120);

/// The fetchers' lease in the tests that freeze or kill one.
const LEASE: Duration = Duration::from_secs(3);

/// These tests freeze and kill processes and measure takeover times; on two
/// cores, two of them at once (plus a second set of brokers) made timings
/// depend on the neighbour. One at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn live_spec() -> ProduceSpec {
    ProduceSpec {
        codec: Codec::Lz4,
        mode: ProduceMode::Idempotent,
        first_seq: 1_000_000,
        ..ProduceSpec::default()
    }
}

fn history(bed: &RealBed, topic: &str, partitions: i32, n: usize) -> Result<()> {
    let spec = ProduceSpec {
        codec: Codec::Zstd,
        mode: ProduceMode::Idempotent,
        ..ProduceSpec::default()
    };
    for p in 0..partitions {
        produce(bed.source_bootstrap(), topic, p, n, &spec)?;
    }
    Ok(())
}

/// `topic` with `n` partitions and `history` records each on the source,
/// mirrored by two fetchers with a [`LEASE`] while a producer keeps
/// writing; returns once both own partitions and fetcher-1 is copying.
fn two_fetchers_copying(
    bed: &RealBed,
    topic: &str,
    n: i32,
    history_records: usize,
) -> Result<(Cutover, LoadGenerator)> {
    bed.kafka.create_topic(Side::Source, topic, n, &[])?;
    history(bed, topic, n, history_records)?;
    let mut cutover = Cutover::start(bed)?;
    cutover.use_fetcher_lease(LEASE);
    cutover.add_fetcher()?;
    cutover.add_fetcher()?;
    cutover.mirror(bed, "l1", &[topic])?;
    let parts: Vec<(String, i32)> = (0..n).map(|p| (topic.to_string(), p)).collect();
    let load = LoadGenerator::start(bed.source_bootstrap(), &parts, 2_000, live_spec())?;
    cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        o.len() == 2 && o.values().sum::<usize>() == n as usize
    })?;
    let first = cutover.fetcher("fetcher-1")?;
    wait_until("fetcher-1 to copy records", Duration::from_secs(30), || {
        Ok(first.metric_sum("cutover_fetcher_records_total")? > 0.0)
    })?;
    Ok((cutover, load))
}

/// `more` records acknowledged, the producer stopped without a failed
/// write, the mirror in sync and every partition identical (no gap, no
/// duplicate: offsets and contents match record for record).
fn finish(
    bed: &RealBed,
    cutover: &Cutover,
    load: LoadGenerator,
    more: u64,
    topic: &str,
    partitions: i32,
) -> Result<u64> {
    load.wait_acked(load.acked() + more, Duration::from_secs(60))?;
    let report = load.stop()?;
    ensure!(
        report.total_failed() == 0,
        "the live producer lost writes: {report:?}"
    );
    cutover.wait_in_sync("l1", SYNC)?;
    let mut compared = 0;
    for p in 0..partitions {
        compared += assert_mirrored(bed, topic, p)?;
    }
    for f in &cutover.fetchers {
        if f.process.is_running() {
            let v = f.metric_sum("cutover_fetcher_produce_rule_violations_total")?;
            ensure!(v == 0.0, "{}: {v} produce rule violations", f.id);
        }
    }
    Ok(compared)
}

fn partition_states(status: &Value) -> Vec<(String, String)> {
    status["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["partitions"].as_array().cloned().unwrap_or_default())
        .map(|p| {
            (
                p["state"].as_str().unwrap_or("").to_owned(),
                p["error"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Waits until some partition of the link is FAILED and returns its error.
fn wait_failed(cutover: &Cutover, link: &str) -> Result<String> {
    let mut last = Value::Null;
    let mut failed = None;
    wait_until("a partition to fail", SYNC, || {
        last = cutover.cli_json(&["status", "--link", link])?;
        failed = partition_states(&last)
            .into_iter()
            .find(|(st, _)| st == "FAILED")
            .map(|(_, err)| err);
        Ok(failed.is_some())
    })
    .with_context(|| format!("no partition FAILED: {last:#}"))?;
    failed.ok_or_else(|| anyhow::anyhow!("no partition FAILED"))
}

/// Must-show 5: a fetcher frozen (SIGSTOP) past its lease while another
/// takes over. The new owner's writer epoch makes the broker refuse
/// anything the frozen one still sends: a Produce with the old epoch is
/// answered INVALID_PRODUCER_EPOCH by the real broker. Resumed, the frozen
/// fetcher gives its partitions up (none FAILED), joins again, and the
/// target stays identical.
#[test]
fn real_kafka_frozen_fetcher_is_fenced_by_the_broker_and_rejoins() -> Result<()> {
    let _serial = serial();
    const TOPIC: &str = "fenced";
    const N: i32 = 4;
    let bed = RealBed::start("real_fencing")?;
    let (cutover, load) = two_fetchers_copying(&bed, TOPIC, N, 3_000)?;
    cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        o.len() == 2 && o.values().all(|n| *n == 2)
    })?;
    let frozen = cutover.fetcher("fetcher-1")?;
    let writers_before = writer_identities(&bed, TOPIC)?;
    let status = cutover.cli_json(&["status", "--link", "l1"])?;
    let taken: Vec<i32> = status["topics"][0]["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["owner"] == "fetcher-1")
        .filter_map(|p| p["partition"].as_i64().map(|p| p as i32))
        .collect();
    ensure!(taken.len() == 2, "fetcher-1 owns {taken:?}");

    frozen.process.signal(Signal::SIGSTOP)?;
    cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        o.get("fetcher-2") == Some(&(N as usize))
    })?;
    // The broker learns the new epoch from the new owner's first write:
    // wait until every partition grew on the target after the takeover.
    let ends: Vec<i64> = (0..N)
        .map(|p| watermarks(bed.target_bootstrap(), TOPIC, p).map(|w| w.1))
        .collect::<Result<_>>()?;
    wait_until("the new owner to write every partition", SYNC, || {
        for p in 0..N {
            if watermarks(bed.target_bootstrap(), TOPIC, p)?.1 <= ends[p as usize] {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    // The frozen fetcher's partitions got a new writer epoch from their
    // new owner.
    let writers_after = writer_identities(&bed, TOPIC)?;
    let rt = tokio::runtime::Runtime::new()?;
    for p in taken {
        let (pid, old_epoch) = writers_before[p as usize];
        let (pid2, new_epoch) = writers_after[p as usize];
        ensure!(
            pid == pid2 && new_epoch > old_epoch,
            "partition {p}: {writers_before:?} -> {writers_after:?}"
        );
        // What a late write of the old owner looks like to the broker.
        let code = rt.block_on(produce_as_writer(
            bed.target_bootstrap(),
            TOPIC,
            p,
            pid,
            old_epoch,
        ))?;
        ensure!(
            code == 47,
            "partition {p}: a write with the old epoch {old_epoch} got error code {code}, not INVALID_PRODUCER_EPOCH (47)"
        );
    }

    frozen.process.signal(Signal::SIGCONT)?;
    wait_until(
        "fetcher-1 to notice its lost lease",
        Duration::from_secs(30),
        || Ok(frozen.metric_sum("cutover_fetcher_lease_losses_total")? >= 1.0),
    )?;
    // It joins again and gets its fair share back.
    cutover.wait_owners("l1", Duration::from_secs(60), |o| {
        o.get("fetcher-1") == Some(&2) && o.get("fetcher-2") == Some(&2)
    })?;
    ensure!(
        frozen.process.is_running(),
        "fetcher-1 exited: {}",
        frozen.process.log_tail(20)
    );
    let compared = finish(&bed, &cutover, load, 2_000, TOPIC, N)?;
    ensure!(compared >= 12_000);
    let s = cutover.cli_json(&["status", "--link", "l1"])?;
    ensure!(
        partition_states(&s).iter().all(|(st, _)| st != "FAILED"),
        "a partition FAILED: {s:#}"
    );
    Ok(())
}

/// `(producer id, epoch)` of each partition's writer, from etcd.
fn writer_identities(bed: &RealBed, topic: &str) -> Result<Vec<(i64, i16)>> {
    let (_, kvs) = cutover_integration_tests::cutover::etcd_snapshot(bed.etcd_endpoint())?;
    let mut out = Vec::new();
    for p in 0.. {
        let suffix = format!("/writers/fetch/l1/{topic}/{p}");
        let Some((_, v)) = kvs.iter().find(|(k, _)| k.ends_with(&suffix)) else {
            break;
        };
        let doc: Value = serde_json::from_str(v).with_context(|| format!("writer doc {v}"))?;
        out.push((
            doc["producer_id"].as_i64().context("producer_id")?,
            doc["producer_epoch"].as_i64().context("producer_epoch")? as i16,
        ));
    }
    Ok(out)
}

/// Sends one idempotent batch as writer `(pid, epoch)` to the partition's
/// leader with Cutover's wire client and returns the broker's error code.
async fn produce_as_writer(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    pid: i64,
    epoch: i16,
) -> Result<i16> {
    use cutover_kafka::{Cluster, ClusterConfig};
    use cutover_records::batch::{encode_batch, EncodeOptions, RecordToWrite};
    let cluster = Cluster::connect(ClusterConfig::new([bootstrap])).await?;
    let batch = encode_batch(
        &[RecordToWrite {
            timestamp: DEFAULT_TIMESTAMP_BASE_MS,
            key: Some(b"late".to_vec().into()),
            value: Some(b"write".to_vec().into()),
            headers: Vec::new(),
        }],
        &EncodeOptions {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: 1_000,
            ..EncodeOptions::default()
        },
    )?;
    let timeout = Duration::from_secs(10);
    let result = match cluster
        .send_produce(topic, partition, batch.freeze(), timeout)
        .await
    {
        Ok(handle) => handle.wait().await.map(|_| ()),
        Err(e) => Err(e),
    };
    cluster.close().await;
    Ok(match result {
        Ok(_) => 0,
        Err(e) => e.code().unwrap_or(-1),
    })
}

/// Must-show 5 (second half): a client writing directly into a mirrored
/// target partition stops that partition as FAILED with a reason naming
/// the offset, instead of the mirror writing on misaligned.
#[test]
fn real_kafka_direct_write_into_the_target_fails_the_partition_naming_the_offset() -> Result<()> {
    let _serial = serial();
    const TOPIC: &str = "intruded";
    let bed = RealBed::start("real_direct_write")?;
    bed.kafka.create_topic(Side::Source, TOPIC, 1, &[])?;
    history(&bed, TOPIC, 1, 500)?;
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[TOPIC])?;
    cutover.wait_in_sync("l1", SYNC)?;
    let (_, end) = watermarks(bed.target_bootstrap(), TOPIC, 0)?;
    produce(bed.target_bootstrap(), TOPIC, 0, 1, &ProduceSpec::default())?;
    produce(
        bed.source_bootstrap(),
        TOPIC,
        0,
        10,
        &ProduceSpec {
            first_seq: 10_000,
            ..ProduceSpec::default()
        },
    )?;
    let reason = wait_failed(&cutover, "l1")?;
    ensure!(
        reason.contains("alignment lost") && reason.contains(&format!("source offset {end}")),
        "the reason should name source offset {end}: {reason}"
    );
    Ok(())
}

/// Review defect: a non-retriable broker error (here the target topic's
/// max.message.bytes lowered below the source's batches) stops the
/// partition as FAILED with what to do, instead of being retried forever
/// while status says SYNCING.
#[test]
fn real_kafka_target_refusing_batches_fails_the_partition_with_the_reason() -> Result<()> {
    let _serial = serial();
    const TOPIC: &str = "too-large";
    let bed = RealBed::start("real_too_large")?;
    bed.kafka.create_topic(Side::Source, TOPIC, 1, &[])?;
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[TOPIC])?;
    bed.kafka
        .admin(Side::Target)?
        .set_topic_configs(TOPIC, &[("max.message.bytes", "2048")])?;
    let big = ProduceSpec {
        value_size: Some(4_000),
        batch_records: 20,
        ..ProduceSpec::default()
    };
    produce(bed.source_bootstrap(), TOPIC, 0, 100, &big)?;
    let reason = wait_failed(&cutover, "l1")?;
    ensure!(
        reason.contains("MESSAGE_TOO_LARGE") || reason.contains("max.message.bytes"),
        "the reason should say the target refuses the batch size: {reason}"
    );
    Ok(())
}

/// Must-show 6: kill -9 of a fetcher during a copy, then kill -9 of one
/// target broker (restarted later): replication recovers by itself, no
/// duplicate, no gap.
#[test]
fn real_kafka_kill9_of_a_fetcher_and_of_a_target_broker_recover_without_gap_or_duplicate(
) -> Result<()> {
    let _serial = serial();
    const TOPIC: &str = "crashes";
    const N: i32 = 6;
    let bed = RealBed::start_own("real_kill9")?;
    let (cutover, load) = two_fetchers_copying(&bed, TOPIC, N, 5_000)?;
    let victim = cutover.fetcher("fetcher-1")?;
    victim.process.kill9()?;
    let (_, took) = cutover.wait_owners("l1", Duration::from_secs(30), |o| {
        o.get("fetcher-2") == Some(&(N as usize)) && o.len() == 1
    })?;
    ensure!(
        took <= LEASE + Duration::from_secs(5),
        "takeover took {took:?}"
    );
    load.wait_acked(load.acked() + 2_000, Duration::from_secs(60))?;

    // A target broker crashes while the copy goes on (not node 1, the
    // controller), and comes back later.
    bed.kafka.target.kill9(2)?;
    load.wait_acked(load.acked() + 4_000, Duration::from_secs(60))?;
    // The copy goes on without it (leaders moved to the other brokers).
    let survivor = cutover.fetcher("fetcher-2")?;
    let copied = survivor.metric_sum("cutover_fetcher_records_total")?;
    wait_until("copying with a target broker down", SYNC, || {
        Ok(survivor.metric_sum("cutover_fetcher_records_total")? >= copied + 2_000.0)
    })?;
    bed.kafka.target.restart(2)?;
    let compared = finish(&bed, &cutover, load, 2_000, TOPIC, N)?;
    ensure!(compared >= 30_000);
    Ok(())
}
