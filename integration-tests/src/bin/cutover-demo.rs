//! `just demo`: a live mirror end to end on local real Apache Kafka
//! clusters.
//!
//! Starts etcd, two real Kafka clusters (source: 1 broker of the older
//! pinned line, target: 3 brokers of the newer; one JVM each),
//! the orchestrator and two fetchers as real processes, a producer load,
//! then drives everything through the real `cutover` CLI and prints a report.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use cutover_integration_tests::cutover::Cutover;
use cutover_integration_tests::*;

const TOPICS: [(&str, i32); 2] = [("orders", 6), ("payments", 3)];

fn step(msg: &str) {
    println!("\n\x1b[1m==> {msg}\x1b[0m");
}

fn show(cutover: &Cutover, args: &[&str]) -> Result<()> {
    println!("$ cutover {}", args.join(" "));
    let (code, out, err) = cutover.cli_raw(args)?;
    print!("{out}");
    eprint!("{err}");
    if code != 0 {
        bail!("cutover {} exited with {code}", args.join(" "));
    }
    Ok(())
}

fn main() -> Result<()> {
    let started = Instant::now();
    step("starting etcd and two Apache Kafka clusters (source: 1 broker, target: 3 brokers)");
    let bed = RealBed::start_own("demo")?;
    for (t, n) in TOPICS {
        // Only on the source: `mirror add` creates the target topics.
        bed.kafka.create_topic(Side::Source, t, n, &[])?;
    }
    println!(
        "etcd   {}\nsource {} (Kafka {})\ntarget {} (Kafka {})\nlogs   {}",
        bed.etcd_endpoint(),
        bed.source_bootstrap(),
        bed.kafka.source.version(),
        bed.target_bootstrap(),
        bed.kafka.target.version(),
        bed.log_dir().display()
    );

    step("writing history to the source: 20,000 records per partition, zstd, idempotent producer");
    let spec = ProduceSpec {
        codec: Codec::Zstd,
        mode: ProduceMode::Idempotent,
        ..ProduceSpec::default()
    };
    let mut history = 0;
    for (t, n) in TOPICS {
        for p in 0..n {
            history += produce(bed.source_bootstrap(), t, p, 20_000, &spec)?
                .records
                .len();
        }
    }
    println!("{history} records written");

    step("starting the orchestrator and two fetchers (real binaries)");
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.add_fetcher()?;

    step("a producer keeps writing to the source during the whole migration (2,000 records/s)");
    let partitions: Vec<(String, i32)> = TOPICS
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (t.to_string(), p)))
        .collect();
    let live_spec = ProduceSpec {
        codec: Codec::Lz4,
        mode: ProduceMode::Idempotent,
        first_seq: 1_000_000,
        ..ProduceSpec::default()
    };
    let load = LoadGenerator::start(bed.source_bootstrap(), &partitions, 2_000, live_spec)?;

    step("creating the link and mirroring the topics through the CLI");
    show(
        &cutover,
        &[
            "link",
            "create",
            "demo",
            "--source",
            bed.source_bootstrap(),
            "--target",
            bed.target_bootstrap(),
        ],
    )?;
    show(
        &cutover,
        &[
            "mirror",
            "add",
            "--link",
            "demo",
            "--include",
            "orders|payments",
        ],
    )?;

    step("live progress");
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1500));
        show(&cutover, &["status", "--link", "demo"])?;
    }

    step("stopping the producer; waiting for the mirror to catch up");
    let report = load.stop()?;
    println!(
        "live producer: {} records acknowledged, {} failed",
        report.total_acked(),
        report.total_failed()
    );
    let caught_up = Instant::now();
    cutover.wait_in_sync("demo", Duration::from_secs(120))?;
    println!(
        "in sync {:.1} s after the producer stopped",
        caught_up.elapsed().as_secs_f64()
    );
    show(&cutover, &["status", "--link", "demo"])?;

    step("verifying record by record (offset, key, value, headers, timestamp)");
    let mut proved = 0;
    for (t, _) in TOPICS {
        show(&cutover, &["verify", "--link", "demo", "--topic", t])?;
        let v = cutover.cli_json(&["verify", "--link", "demo", "--topic", t])?;
        if v["identical"] != true {
            bail!("verify found a difference in {t}: {v:#}");
        }
        proved += v["partitions"].as_array().map_or(0, |ps| {
            ps.iter()
                .filter_map(|p| p["records_identical"].as_u64())
                .sum::<u64>()
        });
    }

    let copied: f64 = cutover
        .fetchers
        .iter()
        .map(|f| f.metric_sum("cutover_fetcher_records_total").unwrap_or(0.0))
        .sum();
    let bytes: f64 = cutover
        .fetchers
        .iter()
        .map(|f| f.metric_sum("cutover_fetcher_bytes_total").unwrap_or(0.0))
        .sum();
    step("report");
    println!("topics mirrored           {}", TOPICS.len());
    println!(
        "records written           {} history + {} live",
        history,
        report.total_acked()
    );
    println!(
        "records copied            {copied:.0} ({:.1} MiB of batches)",
        bytes / 1048576.0
    );
    println!("records proved identical  {proved} (same offset, key, value, headers, timestamp)");
    println!(
        "fetchers                  {}",
        cutover
            .fetchers
            .iter()
            .map(|f| f.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "total time                {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("logs                      {}", bed.log_dir().display());
    Ok(())
}
