//! `just bench-scale`: thousands of mirrored partitions over three fetchers
//! on real Apache Kafka, most idle and some busy.
//!
//! Measures, once every partition is in sync: each fetcher's CPU per second
//! at steady state (and per 1,000 partitions it owns); the delay from a
//! record written on the source (its CreateTime) to the same record read
//! on the target by a librdkafka consumer (p50/p99, probes on idle
//! partitions); and, after kill -9 of one fetcher, the time until every one
//! of its partitions is owned by a live fetcher and reported in sync again.
//! Goals (issue 6): idle CPU at most 5 ms/s per 1,000 partitions, p99 delay
//! at most 200 ms, takeover within the lease TTL plus 2 s. Results on
//! stdout and in `target/bench/scale.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use cutover_integration_tests::bench::process_cpu;
use cutover_integration_tests::cutover::{owners, Cutover};
use cutover_integration_tests::{
    profile_dir, KafkaOptions, LoadGenerator, ProduceMode, ProduceSpec, RealBed, Side, TestBed,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Thousands of partitions over three fetchers: idle CPU, delay, takeover")]
struct Args {
    /// Topics; each has `--partitions` partitions.
    #[arg(long, default_value_t = 10)]
    topics: usize,
    #[arg(long, default_value_t = 500)]
    partitions: i32,
    /// Partitions (spread over the topics) that a producer keeps busy.
    #[arg(long, default_value_t = 50)]
    busy: usize,
    /// Records per second over all busy partitions.
    #[arg(long, default_value_t = 1_000)]
    busy_rate: u64,
    #[arg(long, default_value_t = 3)]
    fetchers: usize,
    /// Lease TTL of the fetchers (takeover happens within it).
    #[arg(long, default_value_t = 5)]
    lease_secs: u64,
    /// Replication factor of the target topics (1 keeps three brokers on
    /// two cores responsive with thousands of partitions).
    #[arg(long, default_value_t = 1)]
    target_rf: i32,
    /// Seconds of steady state over which CPU is measured.
    #[arg(long, default_value_t = 20)]
    measure_secs: u64,
    /// Delay probes (one record each, on idle partitions).
    #[arg(long, default_value_t = 200)]
    probes: usize,
    /// Run the fetchers with `--fetch-sessions` (the figures in the
    /// README were taken with it).
    #[arg(long)]
    fetch_sessions: bool,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let total = args.topics * usize::try_from(args.partitions)?;
    let mut source = KafkaOptions::source()?;
    let mut target = KafkaOptions::target()?;
    for o in [&mut source, &mut target] {
        o.heap_mb = 1024;
        o.quick_jit = false;
    }
    target.overrides.insert(
        "default.replication.factor".into(),
        args.target_rf.to_string(),
    );
    let bed = RealBed::start_own_with("bench-scale", source, target)?;
    let topics: Vec<String> = (0..args.topics).map(|i| format!("scale-{i:02}")).collect();
    for t in &topics {
        bed.kafka
            .create_topic(Side::Source, t, args.partitions, &[])?;
    }
    println!("{total} source partitions in {} topics", topics.len());

    let mut cutover = Cutover::start(&bed)?;
    cutover.use_fetcher_lease(Duration::from_secs(args.lease_secs));
    if args.fetch_sessions {
        cutover.fetcher_flags.push("--fetch-sessions".into());
    }
    for _ in 0..args.fetchers {
        cutover.add_fetcher()?;
    }
    cutover.create_link(&bed, "scale", &[])?;
    let t = Instant::now();
    let mut add = vec!["mirror", "add", "--link", "scale"];
    add.extend(topics.iter().map(String::as_str));
    cutover.cli_json(&add)?;
    println!("mirror add: {:.1} s", t.elapsed().as_secs_f64());

    // Busy partitions: partition p of topic p % topics.
    let busy: Vec<(String, i32)> = (0..args.busy)
        .map(|i| (topics[i % topics.len()].clone(), (i / topics.len()) as i32))
        .collect();
    let spec = ProduceSpec {
        mode: ProduceMode::Idempotent,
        timestamp_base_ms: cutover_model::now_ms(),
        ..ProduceSpec::default()
    };
    let load = LoadGenerator::start(bed.source_bootstrap(), &busy, args.busy_rate, spec)?;
    let t = Instant::now();
    let status = wait_all_in_sync(&cutover, total, Duration::from_secs(600))?;
    println!(
        "every partition owned and in sync {:.1} s after mirror add: {:?}",
        t.elapsed().as_secs_f64(),
        owners(&status)
    );

    // Steady state CPU per fetcher.
    let pids: Vec<(String, u32)> = cutover
        .fetchers
        .iter()
        .map(|f| Ok((f.id.clone(), u32::try_from(f.process.pid())?)))
        .collect::<Result<_>>()?;
    let before: Vec<Duration> = pids
        .iter()
        .map(|(_, p)| process_cpu(*p))
        .collect::<Result<_>>()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(args.measure_secs));
    let secs = t0.elapsed().as_secs_f64();
    let owned = owners(&cutover.cli_json(&["status", "--link", "scale"])?);
    let mut cpu = BTreeMap::new();
    for ((id, pid), b) in pids.iter().zip(&before) {
        let ms_per_s = (process_cpu(*pid)? - *b).as_secs_f64() * 1e3 / secs;
        let n = owned.get(id).copied().unwrap_or(0);
        cpu.insert(id.clone(), (ms_per_s, n));
        println!(
            "{id}: {ms_per_s:.1} ms CPU per second for {n} partitions ({:.2} ms/s per 1,000)",
            ms_per_s * 1000.0 / n.max(1) as f64
        );
    }

    // Delay probes on idle partitions, one at a time.
    let delays = probe_delays(&bed, &topics, args.partitions, args.busy, args.probes)?;
    let (p50, p99) = (percentile(&delays, 0.50), percentile(&delays, 0.99));
    println!(
        "delay source -> target over {} probes: p50 {p50} ms, p99 {p99} ms, max {} ms",
        delays.len(),
        percentile(&delays, 1.0)
    );

    // Takeover after kill -9 of one fetcher.
    let victim = cutover
        .fetchers
        .first()
        .ok_or_else(|| anyhow!("no fetcher"))?;
    let victim_id = victim.id.clone();
    let t = Instant::now();
    victim.process.kill9()?;
    let since = cutover_model::now_ms();
    let status = loop {
        let s = cutover.cli_json(&["status", "--link", "scale"])?;
        let ok = !owners(&s).contains_key(&victim_id)
            && owners(&s).values().sum::<usize>() == total
            && partitions(&s).all(|p| {
                p["state"] == "IN_SYNC" && p["updated_at_ms"].as_i64().is_some_and(|u| u >= since)
            });
        if ok {
            break s;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the killed fetcher's partitions were not taken over within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let takeover = t.elapsed().as_secs_f64();
    println!(
        "takeover after kill -9 of {victim_id}: {takeover:.1} s (lease {} s); owners now {:?}",
        args.lease_secs,
        owners(&status)
    );
    let report = load.stop()?;

    let idle_per_1000: Vec<f64> = cpu
        .values()
        .map(|(ms, n)| ms * 1000.0 / (*n).max(1) as f64)
        .collect();
    let out = json!({
        "partitions": total,
        "busy_partitions": args.busy,
        "busy_rate": args.busy_rate,
        "fetchers": args.fetchers,
        "target_replication_factor": args.target_rf,
        "lease_secs": args.lease_secs,
        "cpu_ms_per_sec": cpu.iter().map(|(id, (ms, n))| json!({"fetcher": id, "ms_per_sec": ms, "partitions": n})).collect::<Vec<Value>>(),
        "cpu_ms_per_sec_per_1000_partitions": idle_per_1000,
        "delay_ms": {"p50": p50, "p99": p99, "max": percentile(&delays, 1.0), "probes": delays.len()},
        "takeover_secs": takeover,
        "load_acked": report.total_acked(),
        "load_failed": report.total_failed(),
        "total_secs": started.elapsed().as_secs_f64(),
    });
    let path = match &args.json {
        Some(p) => p.clone(),
        None => profile_dir()?
            .parent()
            .ok_or_else(|| anyhow!("no target dir"))?
            .join("bench/scale.json"),
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out)? + "\n")?;
    println!(
        "JSON: {}  (whole run {:.0} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn partitions(status: &Value) -> impl Iterator<Item = &Value> {
    status["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["partitions"].as_array().into_iter().flatten())
}

fn wait_all_in_sync(cutover: &Cutover, total: usize, timeout: Duration) -> Result<Value> {
    let t = Instant::now();
    loop {
        let s = cutover.cli_json(&["status", "--link", "scale"])?;
        let n = partitions(&s).filter(|p| p["state"] == "IN_SYNC").count();
        if n == total && owners(&s).values().sum::<usize>() == total {
            return Ok(s);
        }
        if t.elapsed() > timeout {
            bail!("{n} of {total} partitions in sync after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Writes one record at a time to idle partitions and reads it on the
/// target; the delay is the read time minus the record's CreateTime.
fn probe_delays(
    bed: &RealBed,
    topics: &[String],
    partitions: i32,
    busy: usize,
    probes: usize,
) -> Result<Vec<i64>> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bed.source_bootstrap())
        .set("linger.ms", "0")
        .set("acks", "all")
        .create()
        .context("probe producer")?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bed.target_bootstrap())
        .set("group.id", "cutover-bench-probe")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("isolation.level", "read_committed")
        .create()
        .context("probe consumer")?;
    let mut delays = Vec::with_capacity(probes);
    let first_idle = busy.div_ceil(topics.len()) as i32;
    let idle_per_topic = (partitions - first_idle).max(1);
    for i in 0..probes {
        let topic = &topics[i % topics.len()];
        let partition = first_idle + (i / topics.len()) as i32 % idle_per_topic;
        let (_, end) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .context("target watermarks")?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(end))?;
        consumer.assign(&tpl)?;
        let sent = cutover_model::now_ms();
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(partition)
                    .key("probe")
                    .payload("probe")
                    .timestamp(sent),
            )
            .map_err(|(e, _)| anyhow!("probe send: {e}"))?;
        producer.flush(Duration::from_secs(10))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) if m.partition() == partition => {
                    delays
                        .push(cutover_model::now_ms() - m.timestamp().to_millis().unwrap_or(sent));
                    break;
                }
                Some(Err(e)) => bail!("probe consumer: {e}"),
                _ => {}
            }
            if Instant::now() > deadline {
                bail!("probe {i} on {topic}/{partition} did not reach the target within 30 s");
            }
        }
    }
    delays.sort_unstable();
    Ok(delays)
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}
