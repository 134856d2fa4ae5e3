//! `just bench-promotion`: the produce stall of topic promotions under
//! load, on real brokers, with our real binaries (orchestrator, fetcher,
//! two routers).
//!
//! Method: `--promotions` topics (2 partitions each) are mirrored; idempotent
//! librdkafka producers (`--producers`, each writing every topic at
//! `--rate` records/s in all) write through the routers the whole run,
//! `--warmup-secs` of it before the first promotion;
//! the topics are promoted one after the other with `cutover promote`.
//! Each promotion's stall is what its record says: from the first router
//! hold to the last release, which bounds the time any held write waited
//! in a router. Afterwards: failed produce requests (must be 0), and every
//! partition's records, on the target, each once at its acknowledged
//! offset (a duplicate or a gap fails the run). Goals (issue 8): max stall
//! under 1 s, p99 under 250 ms, no failure, no duplicate.
//! Results on stdout and in `target/bench/promotion.json`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use clap::Parser;
use cutover_integration_tests::bench::write_report;
use cutover_integration_tests::cutover::{routers_bootstrap, Cutover};
use cutover_integration_tests::{
    expected_record, read_partition, watermarks, LoadGenerator, ProduceMode, ProduceSpec, RealBed,
    Side, TestBed,
};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Produce stall of topic promotions under load through routers")]
struct Args {
    /// Promotions measured (one topic each).
    #[arg(long, default_value_t = 20)]
    promotions: usize,
    /// Producers writing through the routers during the whole run.
    #[arg(long, default_value_t = 3)]
    producers: usize,
    /// Records per second of each producer, over all topics.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Seconds of load before the first promotion, so the mirror runs in
    /// its steady state (a migration promotes after mirroring for a while).
    #[arg(long, default_value_t = 10)]
    warmup_secs: u64,
    /// Passed on to `cutover promote --quiet-ms` (0: its default).
    #[arg(long, default_value_t = 0)]
    quiet_ms: u32,
    #[arg(long)]
    json: Option<PathBuf>,
}

const PARTITIONS: i32 = 2;
const WAIT: Duration = Duration::from_secs(120);

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.promotions > 0 && args.producers > 0,
        "--promotions and --producers must be at least 1"
    );
    let started = Instant::now();
    let bed = RealBed::start_own("bench-promotion")?;
    let mut cutover = Cutover::start(&bed)?;
    cutover.create_link(&bed, "l1", &[])?;
    let r1 = cutover.start_router(1, "l1")?;
    let r2 = cutover.start_router(2, "l1")?;
    cutover.add_fetcher()?;
    let topics: Vec<String> = (0..args.promotions)
        .map(|i| format!("promoted-{i:03}"))
        .collect();
    for t in &topics {
        bed.kafka.create_topic(Side::Source, t, PARTITIONS, &[])?;
    }
    let mut add = vec!["mirror", "add", "--link", "l1"];
    add.extend(topics.iter().map(String::as_str));
    cutover.cli_json(&add)?;
    cutover.wait_in_sync("l1", WAIT)?;

    let via = routers_bootstrap(&[&r1, &r2]);
    let partitions: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| (0..PARTITIONS).map(move |p| (t.clone(), p)))
        .collect();
    let specs: Vec<ProduceSpec> = (0..args.producers)
        .map(|i| ProduceSpec {
            mode: ProduceMode::Idempotent,
            // Each producer's records are its own (seq ranges apart).
            first_seq: i as u64 * 1_000_000_000,
            ..ProduceSpec::default()
        })
        .collect();
    let loads = specs
        .iter()
        .map(|s| LoadGenerator::start(&via, &partitions, args.rate, s.clone()))
        .collect::<Result<Vec<_>>>()?;
    for l in &loads {
        l.wait_acked(args.rate * args.warmup_secs.max(1), WAIT)?;
    }

    let mut stalls = Vec::with_capacity(topics.len());
    let quiet = args.quiet_ms.to_string();
    for t in &topics {
        let mut cmd = vec!["promote", "--link", "l1", t.as_str()];
        if args.quiet_ms > 0 {
            cmd.extend(["--quiet-ms", quiet.as_str()]);
        }
        let p = cutover
            .cli_json(&cmd)
            .with_context(|| format!("promoting {t}"))?;
        ensure!(p["step"] == "done", "{t}: {p:#}");
        let stall = p["stall_ms"].as_i64().unwrap_or(0);
        println!("{t}: stall {stall} ms, steps {}", p["steps"]);
        stalls.push(stall);
        // Load keeps flowing to the promoted topic before the next one.
        let before: u64 = loads.iter().map(LoadGenerator::acked).sum();
        for l in &loads {
            l.wait_acked(l.acked() + args.rate / 10, WAIT)?;
        }
        ensure!(loads.iter().map(LoadGenerator::acked).sum::<u64>() > before);
    }
    let reports = loads
        .into_iter()
        .map(LoadGenerator::stop)
        .collect::<Result<Vec<_>>>()?;
    let failed: u64 = reports.iter().map(|r| r.total_failed()).sum();
    let acked: u64 = reports.iter().map(|r| r.total_acked()).sum();

    // Every record on the target once, at its acknowledged offset: the
    // producers' records interleave, so compare sets of (offset, record).
    let mut duplicates_or_gaps = 0u64;
    for (topic, p) in &partitions {
        let (_, end) = watermarks(bed.target_bootstrap(), topic, *p)?;
        let on_target = read_partition(bed.target_bootstrap(), topic, *p, 0, end)?;
        let mut want = Vec::new();
        for (spec, r) in specs.iter().zip(&reports) {
            let l = &r.partitions[&(topic.clone(), *p)];
            ensure!(l.acked == l.sent, "{topic}/{p}: {l:?}");
            want.extend((0..l.acked).map(|i| expected_record(topic, *p, l.first_seq + i, spec)));
        }
        // Offsets identical: what the source kept (written before the
        // switch) is the target's first records, record for record.
        let (_, source_end) = watermarks(bed.source_bootstrap(), topic, *p)?;
        let on_source = read_partition(bed.source_bootstrap(), topic, *p, 0, source_end)?;
        if on_target.get(..on_source.len()) != Some(&on_source[..]) {
            duplicates_or_gaps += 1;
            eprintln!("{topic}/{p}: the target's first {source_end} records are not the source's");
        }
        let acked_here = want.len() as i64;
        if acked_here != end {
            duplicates_or_gaps += (acked_here - end).unsigned_abs();
        }
        let mut got: Vec<_> = on_target
            .iter()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        let mut wanted: Vec<_> = want
            .iter()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        got.sort();
        wanted.sort();
        if got != wanted {
            duplicates_or_gaps += 1;
            eprintln!("{topic}/{p}: the target's records are not the acknowledged ones");
        }
    }

    let mut sorted = stalls.clone();
    sorted.sort_unstable();
    let (p50, p99, max) = (
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted.last().copied().unwrap_or(0),
    );
    println!(
        "\n{} promotions under {} producers x {} records/s through 2 routers:\n  \
         produce stall p50 {p50} ms, p99 {p99} ms, max {max} ms (goals: p99 < 250, max < 1000)\n  \
         {acked} records acknowledged, {failed} failed, {duplicates_or_gaps} duplicated or missing",
        args.promotions, args.producers, args.rate
    );
    write_report(
        args.json.as_deref(),
        "promotion.json",
        &json!({
            "promotions": args.promotions,
            "producers": args.producers,
            "rate_per_producer": args.rate,
            "stall_ms": {"p50": p50, "p99": p99, "max": max, "all": stalls},
            "acked": acked,
            "failed": failed,
            "duplicated_or_missing": duplicates_or_gaps,
        }),
        started,
    )?;
    ensure!(
        failed == 0 && duplicates_or_gaps == 0,
        "the run lost, duplicated or failed writes"
    );
    Ok(())
}
