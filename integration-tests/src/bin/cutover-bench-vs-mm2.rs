//! `just bench-fetcher`: the fetcher against MirrorMaker 2 on real Apache
//! Kafka brokers (source 3.9.2, 1 broker; target 4.3.1, 3 brokers, topics
//! with replication factor 3), the same data copied in the same run.
//!
//! Per scenario ({large ~64 KiB, small ~1 KiB source batches} x
//! {uncompressed, compressed}), on fresh clusters (full JIT for the brokers):
//! a source topic written with a librdkafka producer tuned so batches come
//! out at the wanted size (measured from the batch headers), then, one after
//! another, each copier copies the whole topic to the target:
//!
//! 1. **fetcher**: the orchestrator and one fetcher (release binaries),
//!    `cutover mirror add` (which creates the target topic);
//! 2. **mm2**: MirrorMaker 2 in dedicated mode
//!    (`org.apache.kafka.connect.mirror.MirrorMaker`, Kafka 4.3.1),
//!    `IdentityReplicationPolicy`, its defaults otherwise (one task);
//! 3. **mm2-eos**: the same with its exactly-once mode
//!    (`exactly.once.source.support=enabled` on the target, a
//!    `read_committed` consumer).
//!
//! Between copiers the target topic is deleted; each MirrorMaker run uses
//! its own cluster aliases, so it starts with no stored offsets. Measured
//! per copier process alone (`/proc/<pid>/stat`): CPU from its start until
//! the first record is on the target (**set-up**, reported apart), and from
//! then until the target holds every source record (**copy**: CPU per
//! source byte, and MB/s). Completion: the target's end offsets reach the
//! source's (exactly-once: its committed data records, counted from batch
//! headers as they arrive, reach the source's count, since commit markers
//! take offsets too). Results: a table on stdout and
//! `target/bench/vs-mm2.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Parser;
use cutover_integration_tests::bench::{
    calibrate_records_per_batch, process_cpu_times, scan_batches, total_end, write_report,
    write_source, BatchStats, CpuTimes,
};
use cutover_integration_tests::cutover::Cutover;
use cutover_integration_tests::{
    Codec, KafkaDist, KafkaOptions, RealBed, ServiceProcess, Side, TestBed,
};
use cutover_kafka::{Cluster, ClusterConfig, FetchOptions, FetchRequestPartition};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Fetcher versus MirrorMaker 2 on real Apache Kafka: CPU per byte and throughput")]
struct Args {
    /// MB (10^6 bytes) of source record batches per scenario.
    #[arg(long, default_value_t = 1000)]
    mb: u64,
    /// Partitions of the source topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Codec of the compressed scenarios.
    #[arg(long, default_value = "lz4")]
    codec: Codec,
    /// Run only these scenarios (comma separated), e.g. `large-none`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Copiers to run (comma separated): fetcher, mm2, mm2-eos.
    #[arg(long, value_delimiter = ',', default_value = "fetcher,mm2,mm2-eos")]
    copiers: Vec<String>,
    /// Heap of each broker JVM and of MirrorMaker.
    #[arg(long, default_value_t = 1024)]
    heap_mb: u32,
    /// Where the JSON report goes (default: `target/bench/vs-mm2.json`).
    #[arg(long)]
    json: Option<PathBuf>,
}

const TOPIC: &str = "bench";
const LINK: &str = "bench";
const COPY_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Debug, Clone)]
struct Scenario {
    name: String,
    batch_bytes: usize,
    codec: Codec,
}

/// One copier's run.
#[derive(Debug, Clone)]
struct CopyRun {
    copier: String,
    setup: CpuTimes,
    setup_wall: f64,
    copy: CpuTimes,
    copy_wall: f64,
}

impl CopyRun {
    fn ns_per_byte(&self, bytes: u64) -> f64 {
        self.copy.total().as_secs_f64() * 1e9 / bytes.max(1) as f64
    }
    fn mb_s(&self, bytes: u64) -> f64 {
        bytes as f64 / 1e6 / self.copy_wall.max(1e-3)
    }
}

struct Outcome {
    scenario: Scenario,
    records_per_batch: usize,
    source: BatchStats,
    runs: Vec<CopyRun>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    for c in &args.copiers {
        if !["fetcher", "mm2", "mm2-eos"].contains(&c.as_str()) {
            bail!("unknown copier {c:?}; use fetcher, mm2, mm2-eos");
        }
    }
    let started = Instant::now();
    let mut scenarios = Vec::new();
    for (size, batch_bytes) in [("large", 64 * 1024), ("small", 1024)] {
        for codec in [Codec::None, args.codec] {
            scenarios.push(Scenario {
                name: format!("{size}-{codec}"),
                batch_bytes,
                codec,
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
    let mut outcomes = Vec::new();
    for sc in &scenarios {
        println!("\n== {} ==", sc.name);
        outcomes
            .push(run_scenario(sc, &args, &rt).with_context(|| format!("scenario {}", sc.name))?);
    }
    print_table(&outcomes);
    let report = json!({
        "partitions": args.partitions,
        "mb_per_scenario": args.mb,
        "heap_mb": args.heap_mb,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "total_secs": started.elapsed().as_secs_f64(),
        "scenarios": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
    });
    write_report(args.json.as_deref(), "vs-mm2.json", &report, started)?;
    Ok(())
}

fn run_scenario(sc: &Scenario, args: &Args, rt: &tokio::runtime::Runtime) -> Result<Outcome> {
    let mut source_opts = KafkaOptions::source()?;
    let mut target_opts = KafkaOptions::target()?;
    for o in [&mut source_opts, &mut target_opts] {
        o.quick_jit = false;
        o.heap_mb = args.heap_mb;
        o.overrides.insert("num.network.threads".into(), "3".into());
        o.overrides.insert("num.io.threads".into(), "4".into());
        // Batches up to 8 MB (the source writer's), as the topic allows.
        o.overrides
            .insert("message.max.bytes".into(), "8388608".into());
    }
    let bed = RealBed::start_own_with(
        &format!("bench-vs-mm2-{}", sc.name),
        source_opts,
        target_opts,
    )?;
    let src = bed.source_bootstrap().to_string();
    let p = args.partitions;

    let records_per_batch =
        calibrate_records_per_batch(sc.batch_bytes, |k, topic| sample(&bed, sc, k, topic, rt))?;
    let sample = sample(&bed, sc, records_per_batch, "calibrate-final", rt)?;
    let per_record = sample.bytes as f64 / sample.records.max(1) as f64;
    let wanted = (args.mb as f64 * 1e6 / per_record).ceil() as usize;
    let per_partition = wanted
        .div_ceil(usize::try_from(p)?)
        .div_ceil(records_per_batch)
        * records_per_batch;
    bed.kafka.create_topic(Side::Source, TOPIC, p, &[])?;
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
        "source: {} records in {} batches, {:.1} MB, avg batch {:.0} B, written in {:.1} s",
        source.records,
        source.batches,
        source.bytes as f64 / 1e6,
        source.avg_batch(),
        t.elapsed().as_secs_f64()
    );

    let mut runs = Vec::new();
    for (i, copier) in args.copiers.iter().enumerate() {
        if i > 0 {
            bed.kafka.admin(Side::Target)?.delete_topic(TOPIC)?;
        }
        let run = match copier.as_str() {
            "fetcher" => run_fetcher(&bed, &source, p, rt)?,
            "mm2" => run_mm2(&bed, &source, p, false, i, args.heap_mb, rt)?,
            _ => run_mm2(&bed, &source, p, true, i, args.heap_mb, rt)?,
        };
        println!(
            "{:<8} set-up {:.2} s CPU ({:.1} s wall); copy {:.2} s CPU ({:.2} s sys), {:.1} s wall: {:.2} ns/B, {:.1} MB/s",
            run.copier,
            run.setup.total().as_secs_f64(),
            run.setup_wall,
            run.copy.total().as_secs_f64(),
            run.copy.system.as_secs_f64(),
            run.copy_wall,
            run.ns_per_byte(source.bytes),
            run.mb_s(source.bytes),
        );
        runs.push(run);
    }
    Ok(Outcome {
        scenario: sc.clone(),
        records_per_batch,
        source,
        runs,
    })
}

fn sample(
    bed: &RealBed,
    sc: &Scenario,
    records_per_batch: usize,
    topic: &str,
    rt: &tokio::runtime::Runtime,
) -> Result<BatchStats> {
    bed.kafka.create_topic(Side::Source, topic, 1, &[])?;
    write_source(
        bed.source_bootstrap(),
        topic,
        1,
        sc.codec,
        records_per_batch,
        records_per_batch * 16,
        0,
    )?;
    rt.block_on(scan_batches(bed.source_bootstrap(), topic, 1))
}

/// A copier process being measured.
struct Watch<'a> {
    copier: &'a str,
    pid: u32,
    /// When the process was started.
    started: Instant,
    /// Complete when the committed data records reach the source's count
    /// (exactly-once: markers take offsets), else when the end offsets do.
    count_records: bool,
}

/// Watches a copier's process until the target topic is complete.
fn measure(
    w: &Watch<'_>,
    bed: &RealBed,
    source: &BatchStats,
    partitions: i32,
    rt: &tokio::runtime::Runtime,
    alive: impl Fn() -> Result<()>,
) -> Result<CopyRun> {
    let Watch {
        copier,
        pid,
        started,
        count_records,
    } = *w;
    let cpu0 = process_cpu_times(pid)?;
    let target = rt.block_on(Cluster::connect(ClusterConfig::new([
        bed.target_bootstrap()
    ])))?;
    let mut counter = RecordCounter::new(partitions);
    let mut setup: Option<(CpuTimes, f64)> = None;
    let result = loop {
        alive()?;
        let done = match rt.block_on(total_end(&target, TOPIC, partitions)) {
            Ok(end) => {
                if end > 0 && setup.is_none() {
                    setup = Some((
                        process_cpu_times(pid)?.since(&cpu0),
                        started.elapsed().as_secs_f64(),
                    ));
                }
                if count_records {
                    rt.block_on(counter.advance(&target))? >= source.records
                } else {
                    end >= source.end_offsets
                }
            }
            // The topic is created by the copier; until then it is unknown.
            Err(_) => false,
        };
        if done {
            let total = process_cpu_times(pid)?.since(&cpu0);
            let wall = started.elapsed().as_secs_f64();
            let (setup_cpu, setup_wall) = setup.unwrap_or((total, wall));
            break Ok(CopyRun {
                copier: copier.to_string(),
                copy: total.since(&setup_cpu),
                copy_wall: wall - setup_wall,
                setup: setup_cpu,
                setup_wall,
            });
        }
        if started.elapsed() > COPY_TIMEOUT {
            break Err(anyhow!(
                "{copier} did not complete the copy within {COPY_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    rt.block_on(target.close());
    result
}

fn run_fetcher(
    bed: &RealBed,
    source: &BatchStats,
    partitions: i32,
    rt: &tokio::runtime::Runtime,
) -> Result<CopyRun> {
    let mut cutover = Cutover::start(bed)?;
    cutover.fetcher_flags = Vec::new();
    let started = Instant::now();
    let pid = u32::try_from(cutover.add_fetcher()?.process.pid())?;
    cutover.create_link(bed, LINK, &[])?;
    cutover.cli_json(&["mirror", "add", "--link", LINK, TOPIC])?;
    let watch = Watch {
        copier: "fetcher",
        pid,
        started,
        count_records: false,
    };
    let run = measure(&watch, bed, source, partitions, rt, || Ok(()))?;
    let f = cutover
        .fetchers
        .first()
        .ok_or_else(|| anyhow!("no fetcher"))?;
    let violations = f.metric_sum("cutover_fetcher_produce_rule_violations_total")?;
    if violations > 0.0 {
        bail!("{violations} produce rule violations");
    }
    // The mirror must go before its target topic does.
    cutover.cli_json(&["mirror", "remove", "--link", LINK, TOPIC])?;
    Ok(run)
}

fn run_mm2(
    bed: &RealBed,
    source: &BatchStats,
    partitions: i32,
    exactly_once: bool,
    run_no: usize,
    heap_mb: u32,
    rt: &tokio::runtime::Runtime,
) -> Result<CopyRun> {
    let copier = if exactly_once { "mm2-eos" } else { "mm2" };
    // Fresh aliases per run: MirrorMaker keeps its offsets in topics named
    // after them, so a new pair starts from the beginning.
    let (a, b) = (format!("src{run_no}"), format!("dst{run_no}"));
    let dir = bed.log_dir().join(format!("{copier}-conf"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: String, v: &str| {
        props.insert(k, v.to_string());
    };
    set("clusters".into(), &format!("{a},{b}"));
    set(format!("{a}.bootstrap.servers"), bed.source_bootstrap());
    set(format!("{b}.bootstrap.servers"), bed.target_bootstrap());
    set(format!("{a}->{b}.enabled"), "true");
    set(format!("{a}->{b}.topics"), TOPIC);
    set(format!("{b}->{a}.enabled"), "false");
    set(format!("{b}->{a}.emit.heartbeats.enabled"), "false");
    set(
        "replication.policy.class".into(),
        "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
    );
    // The mirrored topic like the fetcher's: the target's 3 replicas.
    set("replication.factor".into(), "3");
    for t in ["checkpoints", "heartbeats", "offset-syncs"] {
        set(format!("{t}.topic.replication.factor"), "1");
    }
    for t in ["offset", "status", "config"] {
        set(format!("{t}.storage.replication.factor"), "1");
    }
    set("refresh.topics.interval.seconds".into(), "1");
    // Without these the plugin scan alone takes about 9 s of start-up.
    set("plugin.discovery".into(), "service_load");
    set(format!("{b}.plugin.discovery"), "service_load");
    if exactly_once {
        set(format!("{b}.exactly.once.source.support"), "enabled");
        set(format!("{a}.consumer.isolation.level"), "read_committed");
    }
    let text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let file = dir.join(format!("mm2-{run_no}.properties"));
    std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;

    let dist = KafkaDist::locate(bed.kafka.target.version())?;
    let mut cmd = dist.java(
        "org.apache.kafka.connect.mirror.MirrorMaker",
        heap_mb,
        false,
        &dir,
    )?;
    cmd.arg(&file);
    let started = Instant::now();
    let mm2 = ServiceProcess::spawn_tethered(&format!("{copier}-{run_no}"), cmd, bed.log_dir())?;
    let pid = u32::try_from(mm2.pid())?;
    let alive = || match mm2.exit_status() {
        Some(s) => bail!("{copier} exited ({s}):\n{}", mm2.log_tail(30)),
        None => Ok(()),
    };
    let watch = Watch {
        copier,
        pid,
        started,
        count_records: exactly_once,
    };
    let run = measure(&watch, bed, source, partitions, rt, alive)?;
    drop(mm2);
    Ok(run)
}

/// Counts the data records of the target topic's committed batches as they
/// arrive, reading each batch once (headers only, no decompression).
struct RecordCounter {
    next: Vec<i64>,
    records: u64,
}

impl RecordCounter {
    fn new(partitions: i32) -> Self {
        RecordCounter {
            next: vec![0; usize::try_from(partitions).unwrap_or(0)],
            records: 0,
        }
    }

    async fn advance(&mut self, cluster: &Cluster) -> Result<u64> {
        let opts = FetchOptions {
            max_bytes: 64 << 20,
            partition_max_bytes: 8 << 20,
            max_wait: Duration::from_millis(0),
            min_bytes: 1,
            read_committed: true,
        };
        let wanted: Vec<FetchRequestPartition> = self
            .next
            .iter()
            .enumerate()
            .map(|(p, n)| FetchRequestPartition {
                topic: TOPIC.to_owned(),
                partition: p as i32,
                offset: *n,
            })
            .collect();
        for r in cluster.fetch_many(&wanted, &opts).await {
            let fetched = r
                .result
                .with_context(|| format!("fetching {TOPIC}/{}", r.partition))?;
            let idx = usize::try_from(r.partition)?;
            for batch in cutover_records::batches(&fetched.records) {
                let batch = batch?;
                let h = batch.header;
                if h.next_offset() <= self.next[idx] {
                    continue;
                }
                self.next[idx] = h.next_offset();
                if !h.is_control() {
                    self.records += u64::try_from(h.record_count)?;
                }
            }
        }
        Ok(self.records)
    }
}

fn print_table(outcomes: &[Outcome]) {
    println!();
    println!("| scenario | avg source batch | MB | copier | set-up CPU s | copy CPU ns/B | copy MB/s | MM2 CPU / fetcher CPU |");
    println!("|---|---:|---:|---|---:|---:|---:|---:|");
    for o in outcomes {
        let bytes = o.source.bytes;
        let fetcher = o.runs.iter().find(|r| r.copier == "fetcher");
        for r in &o.runs {
            let ratio = match fetcher {
                Some(f) if r.copier != "fetcher" => format!(
                    "{:.1}x",
                    r.ns_per_byte(bytes) / f.ns_per_byte(bytes).max(1e-9)
                ),
                _ => "".into(),
            };
            println!(
                "| {} | {:.1} KiB | {:.0} | {} | {:.2} | {:.2} | {:.1} | {} |",
                o.scenario.name,
                o.source.avg_batch() / 1024.0,
                bytes as f64 / 1e6,
                r.copier,
                r.setup.total().as_secs_f64(),
                r.ns_per_byte(bytes),
                r.mb_s(bytes),
                ratio
            );
        }
    }
}

fn outcome_json(o: &Outcome) -> Value {
    let bytes = o.source.bytes;
    json!({
        "scenario": o.scenario.name,
        "codec": o.scenario.codec.as_str(),
        "records_per_batch": o.records_per_batch,
        "source": {
            "records": o.source.records,
            "batches": o.source.batches,
            "bytes": bytes,
            "avg_batch_bytes": o.source.avg_batch(),
        },
        "copiers": o.runs.iter().map(|r| json!({
            "copier": r.copier,
            "setup_cpu_secs": r.setup.total().as_secs_f64(),
            "setup_wall_secs": r.setup_wall,
            "copy_cpu_secs": r.copy.total().as_secs_f64(),
            "copy_sys_secs": r.copy.system.as_secs_f64(),
            "copy_wall_secs": r.copy_wall,
            "copy_cpu_ns_per_byte": r.ns_per_byte(bytes),
            "copy_mb_per_sec": r.mb_s(bytes),
        })).collect::<Vec<_>>(),
    })
}
