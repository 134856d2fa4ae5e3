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
use cutover_integration_tests::bench::{process_cpu, write_report};
use cutover_integration_tests::cutover::{owners, Cutover};
use cutover_integration_tests::{
    KafkaOptions, LoadGenerator, ProduceMode, ProduceSpec, RealBed, Side, TestBed,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord};
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
    /// Run the fetchers with `--fetch-sessions false` (caught-up partitions
    /// poll instead of waiting in fetch sessions), for comparison.
    #[arg(long)]
    poll: bool,
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
    // The fetchers' own defaults (tests shorten their intervals), but for
    // the lease, which bounds the takeover.
    cutover.fetcher_flags = vec!["--lease-ttl-secs".into(), args.lease_secs.to_string()];
    if args.poll {
        cutover
            .fetcher_flags
            .extend(["--fetch-sessions".into(), "false".into()]);
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

    let t = Instant::now();
    let status = wait_all_in_sync(&cutover, total, Duration::from_secs(600))?;
    println!(
        "every partition owned and in sync {:.1} s after mirror add: {:?}",
        t.elapsed().as_secs_f64(),
        owners(&status)
    );
    let pids: Vec<(String, u32)> = cutover
        .fetchers
        .iter()
        .map(|f| Ok((f.id.clone(), u32::try_from(f.process.pid())?)))
        .collect::<Result<_>>()?;
    // Every partition idle: the cost of keeping them in sync.
    let idle = measure_cpu(&cutover, &pids, args.measure_secs, "all idle")?;

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
    let with_load = measure_cpu(
        &cutover,
        &pids,
        args.measure_secs,
        &format!("{} busy at {} records/s", args.busy, args.busy_rate),
    )?;

    // Delay probes on idle partitions, one at a time.
    let first_idle = args.busy.div_ceil(topics.len()) as i32;
    let idle_per_topic = (args.partitions - first_idle).max(1);
    let probe_at: Vec<(String, i32)> = (0..args.probes)
        .map(|i| {
            let topic = topics[i % topics.len()].clone();
            (
                topic,
                first_idle + (i / topics.len()) as i32 % idle_per_topic,
            )
        })
        .collect();
    let delays = probe_delays(bed.source_bootstrap(), bed.target_bootstrap(), &probe_at)?;
    let (p50, p99) = (percentile(&delays, 0.50), percentile(&delays, 0.99));
    println!(
        "delay source -> target over {} probes: p50 {p50} ms, p99 {p99} ms, max {} ms",
        delays.len(),
        percentile(&delays, 1.0)
    );
    // The same probes written to the target directly: what the clients and
    // brokers take without a mirror in between.
    const BASELINE: &str = "probe-baseline";
    bed.kafka.create_topic(Side::Target, BASELINE, 1, &[])?;
    let direct: Vec<(String, i32)> = (0..args.probes.min(50))
        .map(|_| (BASELINE.to_owned(), 0))
        .collect();
    let baseline = probe_delays(bed.target_bootstrap(), bed.target_bootstrap(), &direct)?;
    println!(
        "baseline (written to the target directly) over {} probes: p50 {} ms, p99 {} ms",
        baseline.len(),
        percentile(&baseline, 0.50),
        percentile(&baseline, 0.99)
    );

    // Takeover after kill -9 of one fetcher.
    let victim = cutover
        .fetchers
        .first()
        .ok_or_else(|| anyhow!("no fetcher"))?;
    let victim_id = victim.id.clone();
    let busy_set: std::collections::BTreeSet<(String, i64)> = busy
        .iter()
        .map(|(t, p)| (t.clone(), i64::from(*p)))
        .collect();
    // The partitions it copies, as (topic, partition).
    let before = cutover.cli_json(&["status", "--link", "scale"])?;
    let victims: std::collections::BTreeSet<(String, i64)> = topic_partitions(&before)
        .filter(|(_, p)| p["owner"] == victim_id.as_str())
        .map(|(t, p)| (t.to_owned(), p["partition"].as_i64().unwrap_or(-1)))
        .collect();
    let t = Instant::now();
    victim.process.kill9()?;
    let since = cutover_model::now_ms();
    // Two steps: every one of its partitions owned by a live fetcher again,
    // then every one copying again: reported by its new owner since the
    // kill, in sync or catching up (the busy ones), without an error.
    let mut owned_after: Option<f64> = None;
    let (status, resumed) = loop {
        let s = cutover.cli_json(&["status", "--link", "scale"])?;
        let theirs: Vec<Value> = topic_partitions(&s)
            .filter(|(t, p)| {
                victims.contains(&((*t).to_owned(), p["partition"].as_i64().unwrap_or(-1)))
            })
            .map(|(t, p)| {
                let mut p = p.clone();
                p["topic"] = Value::from(t);
                p
            })
            .collect();
        let owned = theirs.len() == victims.len()
            && theirs.iter().all(|p| {
                p["owner"]
                    .as_str()
                    .is_some_and(|o| !o.is_empty() && o != victim_id)
            });
        if owned && owned_after.is_none() {
            owned_after = Some(t.elapsed().as_secs_f64());
        }
        // A new owner's first report (the owner alone) can come before the
        // partition resumed: idle partitions must be reported in sync
        // (only a resumed partition is), busy ones catching up from the
        // source's log end the new owner looked up.
        let copying = owned
            && theirs.iter().all(|p| {
                let busy_one = busy_set.contains(&(
                    p["topic"].as_str().unwrap_or_default().to_owned(),
                    p["partition"].as_i64().unwrap_or(-1),
                ));
                let resumed = p["state"] == "IN_SYNC"
                    || (busy_one
                        && p["state"] == "SYNCING"
                        && p["source_log_end"].as_i64().is_some_and(|e| e > 0));
                resumed
                    && p["error"].as_str().is_some_and(str::is_empty)
                    && p["updated_at_ms"].as_i64().is_some_and(|u| u >= since)
            });
        if copying {
            // When the last of them resumed by its new owner's report (a
            // busy one's report can be later than its resume, so this is
            // an upper bound); the status poll itself adds up to a
            // second on this machine.
            let resumed_at = theirs
                .iter()
                .filter_map(|p| p["updated_at_ms"].as_i64())
                .max()
                .unwrap_or(since);
            break (s, (resumed_at - since) as f64 / 1000.0);
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the killed fetcher's partitions were not taken over within 120 s");
        }
        // A status of thousands of partitions costs the machine's CPU too:
        // asked four times a second, which can only make the figures later.
        std::thread::sleep(Duration::from_millis(250));
    };
    let takeover = t.elapsed().as_secs_f64();
    let owned_after = owned_after.unwrap_or(takeover);
    println!(
        "takeover after kill -9 of {victim_id} ({} partitions): owned by live fetchers after \
         {owned_after:.1} s, every one copying again after {resumed:.1} s by its new owner's \
         report, seen in status after {takeover:.1} s (lease {} s); owners now {:?}",
        victims.len(),
        args.lease_secs,
        owners(&status)
    );
    let report = load.stop()?;

    let per_1000 = |cpu: &BTreeMap<String, (f64, usize)>| -> Vec<f64> {
        cpu.values()
            .map(|(ms, n)| ms * 1000.0 / (*n).max(1) as f64)
            .collect()
    };
    let cpu_json = |cpu: &BTreeMap<String, (f64, usize)>| -> Vec<Value> {
        cpu.iter()
            .map(|(id, (ms, n))| json!({"fetcher": id, "ms_per_sec": ms, "partitions": n}))
            .collect()
    };
    let out = json!({
        "partitions": total,
        "busy_partitions": args.busy,
        "busy_rate": args.busy_rate,
        "fetchers": args.fetchers,
        "target_replication_factor": args.target_rf,
        "lease_secs": args.lease_secs,
        "idle": {
            "cpu_ms_per_sec": cpu_json(&idle),
            "cpu_ms_per_sec_per_1000_partitions": per_1000(&idle),
        },
        "with_busy_partitions": {
            "cpu_ms_per_sec": cpu_json(&with_load),
            "cpu_ms_per_sec_per_1000_partitions": per_1000(&with_load),
        },
        "delay_ms": {"p50": p50, "p99": p99, "max": percentile(&delays, 1.0), "probes": delays.len()},
        "baseline_delay_ms": {"p50": percentile(&baseline, 0.50), "p99": percentile(&baseline, 0.99), "probes": baseline.len()},
        "takeover_secs": takeover,
        "takeover_owned_secs": owned_after,
        "takeover_resumed_secs": resumed,
        // To line the fetchers' logs up with the kill.
        "killed_at_ms": since,
        "load_acked": report.total_acked(),
        "load_failed": report.total_failed(),
        "total_secs": started.elapsed().as_secs_f64(),
    });
    write_report(args.json.as_deref(), "scale.json", &out, started)?;
    Ok(())
}

/// Each fetcher's CPU per second over `secs`, with the partitions it owns.
fn measure_cpu(
    cutover: &Cutover,
    pids: &[(String, u32)],
    secs: u64,
    what: &str,
) -> Result<BTreeMap<String, (f64, usize)>> {
    let before: Vec<Duration> = pids
        .iter()
        .map(|(_, p)| process_cpu(*p))
        .collect::<Result<_>>()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let secs = t0.elapsed().as_secs_f64();
    let owned = owners(&cutover.cli_json(&["status", "--link", "scale"])?);
    let mut cpu = BTreeMap::new();
    for ((id, pid), b) in pids.iter().zip(&before) {
        let ms_per_s = (process_cpu(*pid)? - *b).as_secs_f64() * 1e3 / secs;
        let n = owned.get(id).copied().unwrap_or(0);
        cpu.insert(id.clone(), (ms_per_s, n));
        println!(
            "{what}: {id}: {ms_per_s:.1} ms CPU per second for {n} partitions ({:.2} ms/s per 1,000)",
            ms_per_s * 1000.0 / n.max(1) as f64
        );
    }
    Ok(cpu)
}

/// (topic, partition status) of every partition in a status.
fn topic_partitions(status: &Value) -> impl Iterator<Item = (&str, &Value)> {
    status["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| {
            let topic = t["topic"].as_str().unwrap_or_default();
            t["partitions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |p| (topic, p))
        })
}

fn partitions(status: &Value) -> impl Iterator<Item = &Value> {
    topic_partitions(status).map(|(_, p)| p)
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
    produce_to: &str,
    consume_from: &str,
    targets: &[(String, i32)],
) -> Result<Vec<i64>> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", produce_to)
        .set("linger.ms", "0")
        .set("acks", "all")
        .create()
        .context("probe producer")?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", consume_from)
        .set("group.id", "cutover-bench-probe")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .context("probe consumer")?;
    let mut delays = Vec::with_capacity(targets.len());
    for (i, (topic, partition)) in targets.iter().enumerate() {
        let (topic, partition) = (topic.as_str(), *partition);
        let (_, end) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .context("target watermarks")?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(end))?;
        consumer.assign(&tpl)?;
        // The consumer fetches at the end before the probe is written, so
        // its own start is not counted as delay.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break,
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Ok(m)) => bail!(
                    "probe consumer read {}/{} at {} before the probe was written",
                    m.topic(),
                    m.partition(),
                    m.offset()
                ),
                Some(Err(e)) => bail!("probe consumer: {e}"),
            }
            if Instant::now() > deadline {
                bail!("probe consumer did not reach the end of {topic}/{partition} within 30 s");
            }
        }
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
        // No flush before reading: rust-rdkafka's flush returns up to about
        // 100 ms after the acknowledgement, which would count as delay.
        // librdkafka sends without polls; polling serves the delivery report.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            producer.poll(Duration::ZERO);
            match consumer.poll(Duration::from_millis(5)) {
                Some(Ok(m)) if m.partition() == partition => {
                    delays
                        .push(cutover_model::now_ms() - m.timestamp().to_millis().unwrap_or(sent));
                    break;
                }
                Some(Err(KafkaError::PartitionEOF(_))) | Some(Ok(_)) | None => {}
                Some(Err(e)) => bail!("probe consumer: {e}"),
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
