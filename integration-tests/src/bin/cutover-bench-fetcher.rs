//! `just bench-fetcher`: the fetcher's CPU time per replicated byte and its
//! throughput, beside a librdkafka consume-then-produce copy of the same
//! data in the same run (the way MirrorMaker copies).
//!
//! Four scenarios: {large (~64 KiB), small (~1 KiB) source batches} x
//! {uncompressed, compressed}. For each: a fresh bed (etcd + two mock
//! clusters in this process), a source topic written with a real librdkafka
//! producer tuned so batches come out at the wanted size (measured from the
//! batch headers afterwards), then
//!
//! 1. the orchestrator and one fetcher (release binaries) mirror the topic;
//!    measured from `cutover mirror add` until the target holds every
//!    source offset: wall time and the fetcher process's CPU time
//!    (`/proc/<pid>/stat`);
//! 2. this binary re-executed as `baseline` copies the same topic to another
//!    target topic with a librdkafka consumer and an idempotent acks=all
//!    producer with the same codec; it measures its own CPU time the same
//!    way, from the creation of its clients until its last record is
//!    acknowledged (set-up included, as in the fetcher's figure).
//!
//! The mock brokers run in this process, so neither copier's numbers
//! include broker work. Results: a table on stdout and
//! `target/bench/fetcher.json`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, Subcommand};
use cutover_integration_tests::bench::{
    calibrate_records_per_batch, process_cpu, process_cpu_times, run_baseline, scan_batches,
    total_end, write_report, write_source, BaselineOutcome, BaselineSpec, BatchStats,
};
use cutover_integration_tests::cutover::Cutover;
use cutover_integration_tests::{Bed, Codec, Side};
use cutover_kafka::{Cluster, ClusterConfig};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    about = "Fetcher CPU per byte and throughput versus a librdkafka consume-then-produce copy"
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// MB (10^6 bytes) of source record batches per large-batch scenario.
    /// The default fills 48 partitions to about 4.2 MB each, close to what
    /// the mock keeps (5 MiB): every partition's start (etcd claim, writer
    /// epoch, producer id, offset lookups; about 0.7 ms of fetcher CPU) is
    /// paid on as much data as the mock allows.
    #[arg(long, default_value_t = 200)]
    large_mb: u64,
    /// MB of source record batches per small-batch scenario.
    #[arg(long, default_value_t = 32)]
    small_mb: u64,
    /// Partitions of the source topic (the mock keeps at most 5 MiB per
    /// partition: enough partitions keep every byte until it is copied).
    #[arg(long, default_value_t = 48)]
    partitions: i32,
    /// Runs of every scenario (fresh clusters each time); the table shows
    /// medians, the JSON every run.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Codec of the compressed scenarios.
    #[arg(long, default_value = "lz4")]
    codec: Codec,
    /// Run only these scenarios (comma separated), e.g. `large-none,large-lz4`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the JSON report goes (default: `target/bench/fetcher.json`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Extra flag for the fetcher (repeatable), e.g.
    /// `--fetcher-arg=--idle-poll-ms=10`. Default: the fetcher's defaults.
    #[arg(long = "fetcher-arg", allow_hyphen_values = true)]
    fetcher_args: Vec<String>,
    /// Round-trip time the mock adds on every source broker while both
    /// copiers run (the source is written before, at full speed).
    #[arg(long, default_value_t = 0)]
    source_rtt_ms: u64,
    /// Round-trip time the mock adds on every target broker while both
    /// copiers run, e.g. 40 for a fetcher near the source writing to a
    /// remote target: shows what pipelining (`--max-inflight`) buys.
    #[arg(long, default_value_t = 0)]
    target_rtt_ms: u64,
    /// Extra librdkafka setting `key=value` for the baseline's consumer
    /// (repeatable), e.g. `fetch.wait.max.ms=10`.
    #[arg(long = "baseline-consumer", value_name = "KEY=VALUE")]
    baseline_consumer: Vec<String>,
    /// Extra librdkafka setting `key=value` for the baseline's producer
    /// (repeatable), e.g. `linger.ms=0`.
    #[arg(long = "baseline-producer", value_name = "KEY=VALUE")]
    baseline_producer: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// The baseline copier (run by the bench itself, in its own process).
    #[command(hide = true)]
    Baseline {
        #[arg(long)]
        source: String,
        #[arg(long)]
        target: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        to_topic: String,
        #[arg(long)]
        partitions: i32,
        #[arg(long)]
        codec: Codec,
        #[arg(long = "consumer", value_name = "KEY=VALUE")]
        consumer: Vec<String>,
        #[arg(long = "producer", value_name = "KEY=VALUE")]
        producer: Vec<String>,
    },
}

const TOPIC: &str = "bench";
const BASELINE_TOPIC: &str = "bench.baseline";
const LINK: &str = "bench";
const COPY_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Scenario {
    name: String,
    /// Wanted size of one source batch.
    batch_bytes: usize,
    codec: Codec,
    mb: u64,
}

struct FetcherRun {
    cpu_secs: f64,
    /// The part of `cpu_secs` spent in the kernel.
    sys_secs: f64,
    wall_secs: f64,
    mirror_add_secs: f64,
    first_data_secs: f64,
    target_bytes: f64,
    records: f64,
    idle_cpu_per_sec: f64,
    /// CPU per second with every partition in sync and nothing to copy.
    synced_cpu_per_sec: f64,
}

struct Row {
    records_per_batch: usize,
    source: BatchStats,
    fetcher: FetcherRun,
    baseline: BaselineOutcome,
}

impl Row {
    fn bytes(&self) -> f64 {
        self.source.bytes as f64
    }
    fn fetcher_ns_per_byte(&self) -> f64 {
        self.fetcher.cpu_secs * 1e9 / self.bytes()
    }
    fn baseline_ns_per_byte(&self) -> f64 {
        self.baseline.cpu_secs * 1e9 / self.bytes()
    }
    fn fetcher_mb_s(&self) -> f64 {
        self.bytes() / 1e6 / self.fetcher.wall_secs
    }
    fn fetcher_copy_mb_s(&self) -> f64 {
        self.bytes() / 1e6 / (self.fetcher.wall_secs - self.fetcher.first_data_secs).max(1e-3)
    }
    fn baseline_mb_s(&self) -> f64 {
        self.bytes() / 1e6 / self.baseline.wall_secs
    }
    fn ratio(&self) -> f64 {
        self.baseline.cpu_secs / self.fetcher.cpu_secs.max(1e-9)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Baseline {
        source,
        target,
        topic,
        to_topic,
        partitions,
        codec,
        consumer,
        producer,
    }) = args.cmd
    {
        let outcome = run_baseline(&BaselineSpec {
            source,
            target,
            topic,
            to_topic,
            partitions,
            codec,
            consumer_config: parse_settings(&consumer)?,
            producer_config: parse_settings(&producer)?,
            timeout: COPY_TIMEOUT,
        })?;
        println!("{}", outcome.to_json());
        return Ok(());
    }
    bench(&args)
}

/// `key=value` pairs.
fn parse_settings(items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("expected KEY=VALUE, got {kv:?}"))
        })
        .collect()
}

fn bench(args: &Args) -> Result<()> {
    parse_settings(&args.baseline_consumer)?;
    parse_settings(&args.baseline_producer)?;
    let started = Instant::now();
    let mut scenarios = Vec::new();
    for (size, batch_bytes, mb) in [
        ("large", 64 * 1024, args.large_mb),
        ("small", 1024, args.small_mb),
    ] {
        for codec in [Codec::None, args.codec] {
            scenarios.push(Scenario {
                name: format!("{size}-{codec}"),
                batch_bytes,
                codec,
                mb,
            });
        }
    }
    scenarios.retain(|s| args.only.is_empty() || args.only.contains(&s.name));
    if scenarios.is_empty() {
        bail!("--only {:?} names no scenario", args.only);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting tokio")?;
    let machine = machine();
    println!(
        "cutover-bench-fetcher on {} ({} cores)",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"]
    );
    let mut results: Vec<Vec<Row>> = scenarios.iter().map(|_| Vec::new()).collect();
    let runs = args.runs.max(1);
    for run in 1..=runs {
        for (sc, rows) in scenarios.iter().zip(results.iter_mut()) {
            println!("\n== {} (run {run} of {runs}) ==", sc.name);
            rows.push(
                run_scenario(sc, run, args, &rt)
                    .with_context(|| format!("scenario {} run {run}", sc.name))?,
            );
        }
    }
    let summaries: Vec<Summary> = scenarios
        .into_iter()
        .zip(results)
        .map(|(scenario, rows)| Summary { scenario, rows })
        .collect();
    print_table(&summaries);
    let report = json!({
        "machine": machine,
        "partitions": args.partitions,
        "fetcher_args": args.fetcher_args,
        "source_rtt_ms": args.source_rtt_ms,
        "target_rtt_ms": args.target_rtt_ms,
        "baseline_consumer_config": args.baseline_consumer,
        "baseline_producer_config": args.baseline_producer,
        "total_secs": started.elapsed().as_secs_f64(),
        "runs": runs,
        "scenarios": summaries.iter().map(summary_json).collect::<Vec<_>>(),
    });
    write_report(args.json.as_deref(), "fetcher.json", &report, started)?;
    Ok(())
}

fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    json!({ "cores": cores, "cpu": cpu, "os": std::env::consts::OS })
}

fn run_scenario(
    sc: &Scenario,
    run: usize,
    args: &Args,
    rt: &tokio::runtime::Runtime,
) -> Result<Row> {
    let p = args.partitions;
    let bed = Bed::start(&format!("bench-fetcher-{}-{run}", sc.name))?;
    let (src, tgt) = (
        bed.source_bootstrap().to_string(),
        bed.target_bootstrap().to_string(),
    );

    // Records per batch so that batches come out at the wanted size.
    let records_per_batch =
        calibrate_records_per_batch(sc.batch_bytes, |k, topic| sample(&bed, sc, k, topic, rt))?;
    let per_record = calibrated_bytes_per_record(&bed, sc, records_per_batch, rt)?;
    let wanted_records = (sc.mb as f64 * 1e6 / per_record).ceil() as usize;
    let per_partition = wanted_records
        .div_ceil(usize::try_from(p)?)
        .div_ceil(records_per_batch)
        * records_per_batch;

    bed.clusters.create_topic(Side::Source, TOPIC, p)?;
    bed.clusters.create_topic(Side::Target, TOPIC, p)?;
    bed.clusters.create_topic(Side::Target, BASELINE_TOPIC, p)?;
    let t = Instant::now();
    write_source(
        &src,
        TOPIC,
        p,
        sc.codec,
        records_per_batch,
        per_partition,
        1_000_000,
    )?;
    let source = rt.block_on(scan_batches(&src, TOPIC, p))?;
    println!(
        "source: {} records in {} batches of {} records, {:.1} MB, avg batch {:.0} B (min {}, max {}), written in {:.1} s",
        source.records,
        source.batches,
        records_per_batch,
        source.bytes as f64 / 1e6,
        source.avg_batch(),
        source.min_batch,
        source.max_batch,
        t.elapsed().as_secs_f64()
    );

    for (side, ms) in [
        (Side::Source, args.source_rtt_ms),
        (Side::Target, args.target_rtt_ms),
    ] {
        if ms > 0 {
            for broker in bed.clusters.broker_ids(side) {
                bed.clusters
                    .set_rtt(side, broker, Duration::from_millis(ms))?;
            }
        }
    }
    let fetcher = run_fetcher(&bed, &args.fetcher_args, p, &source, rt)?;
    println!(
        "fetcher:  {:.2} s CPU, {:.2} s wall ({:.2} s until first data on the target), {:.0} ns/B",
        fetcher.cpu_secs,
        fetcher.wall_secs,
        fetcher.first_data_secs,
        fetcher.cpu_secs * 1e9 / source.bytes as f64
    );

    let baseline = run_baseline_process(&src, &tgt, p, sc.codec, args)?;
    let baseline_end = rt.block_on(async {
        let c = Cluster::connect(ClusterConfig::new([tgt.as_str()])).await?;
        let end = total_end(&c, BASELINE_TOPIC, p).await;
        c.close().await;
        end
    })?;
    if baseline.records != source.records || baseline_end != source.end_offsets {
        bail!(
            "baseline copied {} records (target ends sum {baseline_end}); the source has {} (ends sum {})",
            baseline.records,
            source.records,
            source.end_offsets
        );
    }
    println!(
        "baseline: {:.2} s CPU, {:.2} s wall, {:.0} ns/B",
        baseline.cpu_secs,
        baseline.wall_secs,
        baseline.cpu_secs * 1e9 / source.bytes as f64
    );
    Ok(Row {
        records_per_batch,
        source,
        fetcher,
        baseline,
    })
}

/// Batch bytes per record at `records_per_batch` records per batch.
fn calibrated_bytes_per_record(
    bed: &Bed,
    sc: &Scenario,
    records_per_batch: usize,
    rt: &tokio::runtime::Runtime,
) -> Result<f64> {
    let s = sample(bed, sc, records_per_batch, "calibrate-final", rt)?;
    Ok(s.bytes as f64 / s.records.max(1) as f64)
}

fn sample(
    bed: &Bed,
    sc: &Scenario,
    records_per_batch: usize,
    topic: &str,
    rt: &tokio::runtime::Runtime,
) -> Result<BatchStats> {
    bed.clusters.create_topic(Side::Source, topic, 1)?;
    let batches = 16;
    write_source(
        bed.source_bootstrap(),
        topic,
        1,
        sc.codec,
        records_per_batch,
        records_per_batch * batches,
        0,
    )?;
    rt.block_on(scan_batches(bed.source_bootstrap(), topic, 1))
}

/// Mirrors the source topic with the orchestrator and one fetcher (release
/// binaries, default settings) and measures the fetcher process from
/// `mirror add` until the target holds every source offset.
fn run_fetcher(
    bed: &Bed,
    fetcher_args: &[String],
    partitions: i32,
    source: &BatchStats,
    rt: &tokio::runtime::Runtime,
) -> Result<FetcherRun> {
    let mut cutover = Cutover::start(bed)?;
    // The fetcher's own defaults (progress every 1 s, lease 10 s...)
    // unless asked otherwise.
    cutover.fetcher_flags = fetcher_args.to_vec();
    let pid = u32::try_from(cutover.add_fetcher()?.process.pid())?;
    cutover.create_link(bed, LINK, &[])?;
    let target = rt.block_on(Cluster::connect(ClusterConfig::new([
        bed.target_bootstrap()
    ])))?;

    // What the fetcher burns with nothing to copy (etcd lease, watches).
    let idle_start = process_cpu(pid)?;
    std::thread::sleep(Duration::from_secs(2));
    let idle_cpu_per_sec = (process_cpu(pid)? - idle_start).as_secs_f64() / 2.0;

    let cpu0 = process_cpu_times(pid)?;
    let t0 = Instant::now();
    cutover.cli_json(&["mirror", "add", "--link", LINK, TOPIC])?;
    let mirror_add_secs = t0.elapsed().as_secs_f64();
    let mut first_data_secs = None;
    loop {
        let end = rt.block_on(total_end(&target, TOPIC, partitions))?;
        if end > 0 && first_data_secs.is_none() {
            first_data_secs = Some(t0.elapsed().as_secs_f64());
        }
        if end >= source.end_offsets {
            break;
        }
        if t0.elapsed() > COPY_TIMEOUT {
            bail!(
                "the fetcher copied {end} of {} offsets in {COPY_TIMEOUT:?}",
                source.end_offsets
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let wall_secs = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_times(pid)?.since(&cpu0);
    rt.block_on(target.close());

    // Cross-checks: status agrees, counters match the source, no rule broken.
    cutover.wait_in_sync(LINK, Duration::from_secs(60))?;
    // What keeping every partition in sync costs once there is nothing new
    // (each partition asks the source again every --idle-poll-ms).
    let synced_start = process_cpu(pid)?;
    std::thread::sleep(Duration::from_secs(2));
    let synced_cpu_per_sec = (process_cpu(pid)? - synced_start).as_secs_f64() / 2.0;
    let fetcher = cutover
        .fetchers
        .first()
        .ok_or_else(|| anyhow!("no fetcher"))?;
    let target_bytes = fetcher.metric_sum("cutover_fetcher_bytes_total")?;
    let records = fetcher.metric_sum("cutover_fetcher_records_total")?;
    let violations = fetcher.metric_sum("cutover_fetcher_produce_rule_violations_total")?;
    let fillers = fetcher.metric_sum("cutover_fetcher_filler_records_total")?;
    if records as u64 != source.records || violations > 0.0 || fillers > 0.0 {
        bail!(
            "fetcher copied {records} records ({fillers} fillers, {violations} rule violations); the source has {}",
            source.records
        );
    }
    Ok(FetcherRun {
        cpu_secs: cpu.total().as_secs_f64(),
        sys_secs: cpu.system.as_secs_f64(),
        wall_secs,
        mirror_add_secs,
        first_data_secs: first_data_secs.unwrap_or(wall_secs),
        target_bytes,
        records,
        idle_cpu_per_sec,
        synced_cpu_per_sec,
    })
}

/// Runs this binary as `baseline` and reads what it measured on itself.
fn run_baseline_process(
    src: &str,
    tgt: &str,
    partitions: i32,
    codec: Codec,
    args: &Args,
) -> Result<BaselineOutcome> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "baseline",
        "--source",
        src,
        "--target",
        tgt,
        "--topic",
        TOPIC,
        "--to-topic",
        BASELINE_TOPIC,
        "--partitions",
        &partitions.to_string(),
        "--codec",
        codec.as_str(),
    ]);
    for kv in &args.baseline_consumer {
        cmd.arg("--consumer").arg(kv);
    }
    for kv in &args.baseline_producer {
        cmd.arg("--producer").arg(kv);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running the baseline copier")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("baseline copier failed ({}): {stdout}", out.status);
    }
    let line = stdout
        .lines()
        .last()
        .ok_or_else(|| anyhow!("baseline copier printed nothing"))?;
    let v: Value =
        serde_json::from_str(line).with_context(|| format!("baseline output {line:?}"))?;
    BaselineOutcome::from_json(&v)
}

/// All runs of one scenario.
struct Summary {
    scenario: Scenario,
    rows: Vec<Row>,
}

impl Summary {
    fn median(&self, f: impl Fn(&Row) -> f64) -> f64 {
        cutover_integration_tests::bench::median(self.rows.iter().map(f))
    }

    fn ratio(&self) -> f64 {
        self.median(Row::baseline_ns_per_byte) / self.median(Row::fetcher_ns_per_byte)
    }
}

fn print_table(summaries: &[Summary]) {
    println!();
    println!(
        "| scenario | avg source batch | MB copied | fetcher CPU ns/B | fetcher MB/s | baseline CPU ns/B | baseline MB/s | CPU ratio (baseline/fetcher) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for s in summaries {
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {:.1}x |",
            s.scenario.name,
            human_bytes(s.median(|r| r.source.avg_batch())),
            s.median(Row::bytes) / 1e6,
            s.median(Row::fetcher_ns_per_byte),
            s.median(Row::fetcher_mb_s),
            s.median(Row::baseline_ns_per_byte),
            s.median(Row::baseline_mb_s),
            s.ratio(),
        );
    }
    println!();
    println!("every run:");
    for s in summaries {
        for r in &s.rows {
            println!(
                "  {:<12} {} records/batch, {} batches; fetcher: CPU {:.2} s ({:.2} s sys, {:.2} ns/B), wall {:.2} s \
                 (first data at {:.2} s, {:.1} MB/s after it), target bytes {:.1} MB, idle CPU {:.1} ms/s \
                 (in sync: {:.1} ms/s); \
                 baseline: CPU {:.2} s ({:.2} s sys, {:.2} s set-up, {:.2} ns/B), wall {:.2} s",
                s.scenario.name,
                r.records_per_batch,
                r.source.batches,
                r.fetcher.cpu_secs,
                r.fetcher.sys_secs,
                r.fetcher_ns_per_byte(),
                r.fetcher.wall_secs,
                r.fetcher.first_data_secs,
                r.fetcher_copy_mb_s(),
                r.fetcher.target_bytes / 1e6,
                r.fetcher.idle_cpu_per_sec * 1e3,
                r.fetcher.synced_cpu_per_sec * 1e3,
                r.baseline.cpu_secs,
                r.baseline.sys_secs,
                r.baseline.setup_cpu_secs,
                r.baseline_ns_per_byte(),
                r.baseline.wall_secs,
            );
        }
    }
}

fn human_bytes(b: f64) -> String {
    if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn summary_json(s: &Summary) -> Value {
    json!({
        "scenario": s.scenario.name,
        "codec": s.scenario.codec.as_str(),
        "wanted_batch_bytes": s.scenario.batch_bytes,
        "median": {
            "avg_source_batch_bytes": s.median(|r| r.source.avg_batch()),
            "source_bytes": s.median(Row::bytes),
            "fetcher_cpu_ns_per_byte": s.median(Row::fetcher_ns_per_byte),
            "fetcher_mb_per_sec": s.median(Row::fetcher_mb_s),
            "baseline_cpu_ns_per_byte": s.median(Row::baseline_ns_per_byte),
            "baseline_mb_per_sec": s.median(Row::baseline_mb_s),
            "cpu_ratio_baseline_over_fetcher": s.ratio(),
        },
        "runs": s.rows.iter().map(row_json).collect::<Vec<_>>(),
    })
}

fn row_json(r: &Row) -> Value {
    json!({
        "records_per_batch": r.records_per_batch,
        "source": {
            "records": r.source.records,
            "batches": r.source.batches,
            "bytes": r.source.bytes,
            "avg_batch_bytes": r.source.avg_batch(),
            "min_batch_bytes": r.source.min_batch,
            "max_batch_bytes": r.source.max_batch,
        },
        "fetcher": {
            "cpu_secs": r.fetcher.cpu_secs,
            "sys_secs": r.fetcher.sys_secs,
            "wall_secs": r.fetcher.wall_secs,
            "mirror_add_secs": r.fetcher.mirror_add_secs,
            "first_data_secs": r.fetcher.first_data_secs,
            "cpu_ns_per_byte": r.fetcher_ns_per_byte(),
            "mb_per_sec": r.fetcher_mb_s(),
            "mb_per_sec_after_first_data": r.fetcher_copy_mb_s(),
            "target_bytes_metric": r.fetcher.target_bytes,
            "records_metric": r.fetcher.records,
            "idle_cpu_secs_per_sec": r.fetcher.idle_cpu_per_sec,
            "in_sync_cpu_secs_per_sec": r.fetcher.synced_cpu_per_sec,
        },
        "baseline": {
            "cpu_secs": r.baseline.cpu_secs,
            "sys_secs": r.baseline.sys_secs,
            "setup_cpu_secs": r.baseline.setup_cpu_secs,
            "wall_secs": r.baseline.wall_secs,
            "records": r.baseline.records,
            "payload_bytes": r.baseline.payload_bytes,
            "cpu_ns_per_byte": r.baseline_ns_per_byte(),
            "mb_per_sec": r.baseline_mb_s(),
        },
        "cpu_ratio_baseline_over_fetcher": r.ratio(),
    })
}
