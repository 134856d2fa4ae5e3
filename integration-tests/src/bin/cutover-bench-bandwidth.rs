//! `just bench-bandwidth`: does a link's bandwidth limit hold, end to end?
//!
//! A fresh bed (etcd + two mock clusters in this process), a source topic
//! written with a real librdkafka producer, the orchestrator and several
//! fetchers (release binaries), and a link created with
//! `--bandwidth-limit`. While the fetchers copy, this samples what landed
//! on the target (its log end offsets) and reports the copy rate
//! once every fetcher runs its share (after a warm-up) until the last 5%.
//! Fails when that steady rate is above the limit by more than the
//! tolerance, or far below it (a limit that is not shared out fully).
//!
//! Rates are wall-clock measurements, which is why this is a benchmark and
//! not a test; the limiter's arithmetic is tested under tokio's paused
//! clock in `services/fetcher/src/bandwidth.rs`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use cutover_integration_tests::bench::{scan_batches, total_end, write_source};
use cutover_integration_tests::cutover::{wait_until, Cutover};
use cutover_integration_tests::{Bed, Codec, Side};
use cutover_kafka::{Cluster, ClusterConfig};

#[derive(Parser)]
#[command(about = "Copy rate of a mirror under a link bandwidth limit")]
struct Args {
    /// The link's limit, MB (10^6 bytes) per second.
    #[arg(long, default_value_t = 8.0)]
    limit_mb: f64,
    /// MB of source record batches.
    #[arg(long, default_value_t = 64)]
    mb: u64,
    /// Partitions (the mock keeps at most 5 MiB per partition).
    #[arg(long, default_value_t = 24)]
    partitions: i32,
    /// Fetchers sharing the link.
    #[arg(long, default_value_t = 2)]
    fetchers: usize,
    /// Allowed excess of the steady rate over the limit, in percent.
    #[arg(long, default_value_t = 5.0)]
    tolerance_pct: f64,
}

const TOPIC: &str = "bw";
const LINK: &str = "bw";
/// Records per source batch: about 64 KiB batches of ~270-byte records.
const RECORDS_PER_BATCH: usize = 240;
/// Skipped before measuring: the time until every fetcher runs its share.
const WARMUP: Duration = Duration::from_secs(3);

fn main() -> Result<()> {
    let args = Args::parse();
    let limit = (args.limit_mb * 1e6) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting tokio")?;
    let bed = Bed::start("bench-bandwidth")?;
    let p = args.partitions;
    bed.clusters.create_topic(Side::Source, TOPIC, p)?;
    bed.clusters.create_topic(Side::Target, TOPIC, p)?;
    let per_partition = ((args.mb as f64 * 1e6 / 270.0) as usize)
        .div_ceil(usize::try_from(p)?)
        .div_ceil(RECORDS_PER_BATCH)
        * RECORDS_PER_BATCH;
    write_source(
        bed.source_bootstrap(),
        TOPIC,
        p,
        Codec::None,
        RECORDS_PER_BATCH,
        per_partition,
        0,
    )?;
    let source = rt.block_on(scan_batches(bed.source_bootstrap(), TOPIC, p))?;
    println!(
        "source: {:.1} MB in {} batches; limit {:.1} MB/s over {} fetchers",
        source.bytes as f64 / 1e6,
        source.batches,
        limit as f64 / 1e6,
        args.fetchers
    );

    let mut cutover = Cutover::start(&bed)?;
    for _ in 0..args.fetchers {
        cutover.add_fetcher()?;
    }
    cutover.create_link(&bed, LINK, &["--bandwidth-limit", &limit.to_string()])?;
    // What landed on the target, in bytes: records are all alike, so the
    // target's offsets times the source's bytes per record. (The fetchers'
    // byte counters count at acknowledgement, up to several batches per
    // partition later than the limiter released them.)
    let bytes_per_record = source.bytes as f64 / source.records.max(1) as f64;
    let target = rt.block_on(Cluster::connect(ClusterConfig::new([
        bed.target_bootstrap()
    ])))?;
    let copied = || -> Result<f64> {
        Ok(rt.block_on(total_end(&target, TOPIC, p))? as f64 * bytes_per_record)
    };
    cutover.cli_json(&["mirror", "add", "--link", LINK, TOPIC])?;
    let t0 = Instant::now();
    let expected = Duration::from_secs_f64(source.bytes as f64 / limit as f64);
    let mut samples: Vec<(f64, f64)> = Vec::new();
    wait_until(
        "every source byte is copied",
        expected * 3 + Duration::from_secs(60),
        || {
            let bytes = copied()?;
            // Sampled every 100 ms: the rate over time is the measurement.
            samples.push((t0.elapsed().as_secs_f64(), bytes));
            Ok(bytes >= source.bytes as f64 - 0.5)
        },
    )?;
    let total_secs = t0.elapsed().as_secs_f64();
    let per_fetcher: Vec<f64> = cutover
        .fetchers
        .iter()
        .map(|f| f.metric_sum("cutover_fetcher_bytes_total"))
        .collect::<Result<_>>()?;
    rt.block_on(target.close());
    cutover.wait_in_sync(LINK, Duration::from_secs(60))?;

    let start = samples
        .iter()
        .find(|(t, _)| *t >= WARMUP.as_secs_f64())
        .copied();
    let end = samples
        .iter()
        .rev()
        .find(|(_, b)| *b < source.bytes as f64 * 0.95)
        .copied();
    let (Some((t1, b1)), Some((t2, b2))) = (start, end) else {
        bail!("the copy took {total_secs:.1} s: too short to measure a steady rate; use a larger --mb");
    };
    if t2 - t1 < 2.0 {
        bail!(
            "only {:.1} s of steady copy to measure; use a larger --mb",
            t2 - t1
        );
    }
    let steady = (b2 - b1) / (t2 - t1);
    let overall = source.bytes as f64 / total_secs;
    println!();
    println!("| limit MB/s | steady MB/s | overall MB/s (from mirror add) | steady/limit | copy time s | bytes per fetcher MB |");
    println!("|---:|---:|---:|---:|---:|---|");
    println!(
        "| {:.2} | {:.2} | {:.2} | {:.3} | {:.1} | {} |",
        limit as f64 / 1e6,
        steady / 1e6,
        overall / 1e6,
        steady / limit as f64,
        total_secs,
        per_fetcher
            .iter()
            .map(|b| format!("{:.1}", b / 1e6))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    if steady > limit as f64 * (1.0 + args.tolerance_pct / 100.0) {
        bail!(
            "the steady copy rate {:.2} MB/s exceeds the link limit {:.2} MB/s",
            steady / 1e6,
            limit as f64 / 1e6
        );
    }
    if steady < limit as f64 * 0.7 {
        bail!(
            "the steady copy rate {:.2} MB/s is far below the link limit {:.2} MB/s: the limit is not shared out fully",
            steady / 1e6,
            limit as f64 / 1e6
        );
    }
    Ok(())
}
