//! Pieces of `just bench-fetcher` (`src/bin/cutover-bench-fetcher.rs`):
//! CPU time of a process from `/proc`, a source writer that makes record
//! batches of a chosen size, a reader that measures the batches a topic
//! really holds, and the baseline copier (librdkafka consume-then-produce,
//! the way MirrorMaker copies).
//!
//! The mock clusters run inside the bench process, so everything measured
//! here is measured per process: the fetcher and the baseline each run as
//! their own process and only their own CPU time is counted.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use cutover_kafka::{Cluster, ClusterConfig, FetchOptions, FetchRequestPartition, OffsetSpec};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::records::{Codec, SplitMix64};

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`;
/// 100 on every mainstream Linux, used if `getconf` is missing).
/// Writes a benchmark's JSON report to `path`, or by default to
/// `target/bench/<file>`, and says where (with the run's wall time).
pub fn write_report(
    path: Option<&std::path::Path>,
    file: &str,
    report: &serde_json::Value,
    started: Instant,
) -> Result<std::path::PathBuf> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => {
            let profile = crate::profile_dir()?;
            profile
                .parent()
                .ok_or_else(|| anyhow!("{} has no parent dir", profile.display()))?
                .join("bench")
                .join(file)
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "\nJSON: {}  (whole run {:.0} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(path)
}

pub fn clock_ticks_per_sec() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// User + system CPU time used so far by every thread of process `pid`
/// (fields 14 and 15 of `/proc/<pid>/stat`), at clock-tick resolution.
pub fn process_cpu(pid: u32) -> Result<Duration> {
    let t = process_cpu_times(pid)?;
    Ok(t.user + t.system)
}

/// CPU time of a process split by mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: Duration,
    /// Kernel time: socket I/O (loopback copies), page faults, scheduling.
    pub system: Duration,
}

impl CpuTimes {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// `self - earlier`, per mode.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// [`process_cpu`] split into user and system time.
pub fn process_cpu_times(pid: u32) -> Result<CpuTimes> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let (user, system) =
        parse_cpu_ticks(&stat).ok_or_else(|| anyhow!("unexpected format of {path}: {stat}"))?;
    let secs = |ticks: u64| Duration::from_secs_f64(ticks as f64 / clock_ticks_per_sec() as f64);
    Ok(CpuTimes {
        user: secs(user),
        system: secs(system),
    })
}

/// (utime, stime) in clock ticks, from the text of `/proc/<pid>/stat`.
fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces and
    // parentheses itself: count fields after the last ')'. Field 3 (state)
    // is the first one there, so utime (14) and stime (15) are its 12th and
    // 13th successors.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Counts delivery reports.
#[derive(Default)]
pub struct DeliveryCounter {
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl DeliveryCounter {
    fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// After a flush: every one of the `sent` records acknowledged, none
    /// failed; `who` names the producer in the error.
    fn expect_all_acked(&self, who: &str, sent: u64) -> Result<u64> {
        let (acked, failed) = (
            self.acked.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        );
        if failed > 0 || acked != sent {
            bail!(
                "{who}: {acked} of {sent} records acknowledged, {failed} failed (first error: {:?})",
                self.first_error()
            );
        }
        Ok(acked)
    }
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self
                    .first_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Enqueues one record, serving delivery reports while the local queue is
/// full.
fn send(
    producer: &BaseProducer<DeliveryCounter>,
    mut rec: BaseRecord<'_, [u8], [u8]>,
    deadline: Instant,
) -> Result<()> {
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if Instant::now() >= deadline {
                    bail!("producer queue stayed full until the deadline");
                }
                rec = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e).context("enqueueing a record"),
        }
    }
}

/// Records per batch that make source batches of about `batch_bytes`:
/// `sample(k, topic)` writes sample batches of `k` records to a fresh
/// `topic` and measures them. Twice, since the compression ratio depends
/// on the batch size.
pub fn calibrate_records_per_batch(
    batch_bytes: usize,
    mut sample: impl FnMut(usize, &str) -> Result<BatchStats>,
) -> Result<usize> {
    let mut k = (batch_bytes / 300).max(1);
    for round in 0..2 {
        let avg = sample(k, &format!("calibrate-{round}"))?.avg_batch();
        k = ((k as f64 * batch_bytes as f64 / avg).round() as usize).max(1);
    }
    Ok(k)
}

const WORDS: [&str; 32] = [
    "express",
    "gift",
    "fragile",
    "weekend",
    "priority",
    "standard",
    "return",
    "exchange",
    "coupon",
    "member",
    "first",
    "repeat",
    "bulk",
    "sample",
    "pickup",
    "locker",
    "morning",
    "evening",
    "call",
    "door",
    "leave",
    "neighbour",
    "signature",
    "insured",
    "green",
    "box",
    "bag",
    "paper",
    "glass",
    "metal",
    "wood",
    "cloth",
];
const STATUS: [&str; 5] = ["created", "paid", "packed", "shipped", "delivered"];

/// The bench's record `seq`: a customer id key (about 10 bytes) and a JSON
/// order event value (about 260 bytes) of the kind real topics carry: it
/// compresses (lz4 about 2x within a 64 KiB batch) but is not trivial.
pub fn bench_record(seq: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = SplitMix64::new(seq.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5bd1_e995);
    let customer = rng.below(100_000);
    let key = format!("cust-{customer:05}").into_bytes();
    let note: Vec<&str> = (0..6)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect();
    let value = format!(
        concat!(
            "{{\"order_id\":{},\"customer\":\"cust-{:05}\",\"sku\":\"SKU-{:06}\",",
            "\"qty\":{},\"price_cents\":{},\"currency\":\"EUR\",\"status\":\"{}\",",
            "\"created_at\":{},\"warehouse\":\"wh-{:02}\",\"carrier\":\"carrier-{}\",",
            "\"tracking\":\"{:016x}\",\"note\":\"{}\"}}"
        ),
        seq,
        customer,
        rng.below(1_000_000),
        1 + rng.below(9),
        99 + rng.below(100_000),
        STATUS[rng.below(STATUS.len() as u64) as usize],
        1_767_225_600_000u64 + seq * 7,
        rng.below(40),
        rng.below(8),
        rng.next(),
        note.join(" "),
    )
    .into_bytes();
    (key, value)
}

/// Writes `records_per_partition` bench records to each of `partitions`
/// partitions of `topic` with a real librdkafka producer (acks=all, not
/// idempotent) so that every batch holds exactly `records_per_batch`
/// records: each partition gets its records in runs of whole batches, and
/// the linger is long enough that batches close on their record count.
/// Returns the number of records acknowledged.
pub fn write_source(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    codec: Codec,
    records_per_batch: usize,
    records_per_partition: usize,
    first_seq: u64,
) -> Result<u64> {
    let records_per_batch = records_per_batch.max(1);
    let deadline = Instant::now() + Duration::from_secs(300);
    let producer: BaseProducer<DeliveryCounter> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "cutover-bench-source")
        .set("compression.type", codec.as_str())
        .set("batch.num.messages", records_per_batch.to_string())
        .set("batch.size", "4000000")
        .set("message.max.bytes", "8000000")
        .set("linger.ms", "200")
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .set("allow.auto.create.topics", "false")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "300000")
        .create_with_context(DeliveryCounter::default())
        .context("creating source producer")?;
    let run = records_per_batch * 8;
    let mut sent = vec![0usize; usize::try_from(partitions).unwrap_or(0)];
    let mut seq = first_seq;
    let ts = cutover_model::now_ms();
    let mut total = 0u64;
    while sent.iter().any(|s| *s < records_per_partition) {
        for (p, done) in sent.iter_mut().enumerate() {
            let n = run.min(records_per_partition - *done);
            for _ in 0..n {
                let (key, value) = bench_record(seq);
                seq += 1;
                let rec = BaseRecord::to(topic)
                    .partition(i32::try_from(p)?)
                    .timestamp(ts)
                    .key(key.as_slice())
                    .payload(value.as_slice());
                send(&producer, rec, deadline)?;
            }
            *done += n;
            total += n as u64;
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(deadline.saturating_duration_since(Instant::now()))
        .context("flushing source producer")?;
    producer
        .context()
        .expect_all_acked("source producer", total)
}

/// What a topic holds, measured from its record batch headers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchStats {
    pub batches: u64,
    /// Bytes of whole record batches (what a fetcher copies).
    pub bytes: u64,
    pub records: u64,
    pub min_batch: u64,
    pub max_batch: u64,
    /// Sum over partitions of the high watermark.
    pub end_offsets: i64,
}

impl BatchStats {
    pub fn avg_batch(&self) -> f64 {
        self.bytes as f64 / self.batches.max(1) as f64
    }
}

/// Reads every record batch of `topic` (partitions `0..partitions`) with
/// Cutover's wire client and measures them with `cutover_records::batches`
/// (which also checks each CRC). Fails if a partition does not start at
/// offset 0 (the mock trimmed it).
pub async fn scan_batches(bootstrap: &str, topic: &str, partitions: i32) -> Result<BatchStats> {
    let cluster = Cluster::connect(ClusterConfig::new([bootstrap]))
        .await
        .with_context(|| format!("connecting to {bootstrap}"))?;
    let result = scan_with(&cluster, topic, partitions).await;
    cluster.close().await;
    result
}

async fn scan_with(cluster: &Cluster, topic: &str, partitions: i32) -> Result<BatchStats> {
    let ids: Vec<i32> = (0..partitions).collect();
    let lows = offsets(cluster, topic, &ids, OffsetSpec::Earliest).await?;
    let highs = offsets(cluster, topic, &ids, OffsetSpec::Latest).await?;
    if let Some((p, low)) = lows.iter().enumerate().find(|(_, l)| **l != 0) {
        bail!(
            "{topic}/{p} starts at offset {low}: the mock trimmed it (too much data per partition)"
        );
    }
    let mut stats = BatchStats {
        min_batch: u64::MAX,
        end_offsets: highs.iter().sum(),
        ..BatchStats::default()
    };
    for_each_batch(cluster, topic, &ids, &lows, &highs, |batch| {
        let size = batch.bytes.len() as u64;
        stats.batches += 1;
        stats.bytes += size;
        stats.records += u64::try_from(batch.header.record_count)?;
        stats.min_batch = stats.min_batch.min(size);
        stats.max_batch = stats.max_batch.max(size);
        Ok(())
    })
    .await?;
    if stats.batches == 0 {
        stats.min_batch = 0;
    }
    Ok(stats)
}

/// Reads the record batches of partitions `ids` of `topic` from `lows` up to
/// `highs` (same order as `ids`), each once and in offset order per
/// partition, and hands them to `each`.
async fn for_each_batch(
    cluster: &Cluster,
    topic: &str,
    ids: &[i32],
    lows: &[i64],
    highs: &[i64],
    mut each: impl FnMut(&cutover_records::batch::RawBatch) -> Result<()>,
) -> Result<()> {
    let opts = FetchOptions {
        max_bytes: 64 << 20,
        partition_max_bytes: 8 << 20,
        max_wait: Duration::from_millis(10),
        min_bytes: 1,
        read_committed: false,
    };
    let mut next = lows.to_vec();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let wanted: Vec<FetchRequestPartition> = ids
            .iter()
            .zip(&next)
            .zip(highs)
            .filter(|((_, n), h)| n < h)
            .map(|((p, n), _)| FetchRequestPartition {
                topic: topic.to_owned(),
                partition: *p,
                offset: *n,
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("reading {topic} took more than 5 minutes; positions {next:?} of {highs:?}");
        }
        for r in cluster.fetch_many(&wanted, &opts).await {
            let fetched = r
                .result
                .with_context(|| format!("fetching {topic}/{}", r.partition))?;
            let idx = ids
                .iter()
                .position(|id| *id == r.partition)
                .ok_or_else(|| anyhow!("fetched unknown partition {topic}/{}", r.partition))?;
            for batch in cutover_records::batches(&fetched.records) {
                let batch = batch.with_context(|| format!("a batch of {topic}/{}", r.partition))?;
                if batch.header.next_offset() <= next[idx] {
                    continue;
                }
                next[idx] = batch.header.next_offset();
                each(&batch)?;
            }
        }
    }
}

async fn offsets(
    cluster: &Cluster,
    topic: &str,
    ids: &[i32],
    spec: OffsetSpec,
) -> Result<Vec<i64>> {
    let answers = cluster
        .list_offsets(topic, ids, spec)
        .await
        .with_context(|| format!("ListOffsets {spec:?} of {topic}"))?;
    let mut out = vec![0i64; ids.len()];
    for (p, r) in answers {
        let slot = ids
            .iter()
            .position(|id| *id == p)
            .and_then(|idx| out.get_mut(idx))
            .ok_or_else(|| anyhow!("ListOffsets answered for unknown partition {p}"))?;
        *slot = r.with_context(|| format!("ListOffsets {spec:?} of {topic}/{p}"))?;
    }
    Ok(out)
}

/// The header of every record batch `partition` of `topic` holds, in
/// order (read with Cutover's wire client, CRCs checked).
pub async fn batch_headers(
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> Result<Vec<cutover_records::batch::BatchHeader>> {
    let cluster = Cluster::connect(ClusterConfig::new([bootstrap]))
        .await
        .with_context(|| format!("connecting to {bootstrap}"))?;
    let result = async {
        let ids = [partition];
        let lows = offsets(&cluster, topic, &ids, OffsetSpec::Earliest).await?;
        let highs = offsets(&cluster, topic, &ids, OffsetSpec::Latest).await?;
        let mut headers = Vec::new();
        for_each_batch(&cluster, topic, &ids, &lows, &highs, |batch| {
            headers.push(batch.header);
            Ok(())
        })
        .await?;
        Ok(headers)
    }
    .await;
    cluster.close().await;
    result
}

/// Every record batch `partition` of `topic` holds, in order: its header
/// and its bytes as stored (read with Cutover's wire client, CRCs checked).
pub async fn raw_batches(
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> Result<Vec<(cutover_records::batch::BatchHeader, Vec<u8>)>> {
    let cluster = Cluster::connect(ClusterConfig::new([bootstrap]))
        .await
        .with_context(|| format!("connecting to {bootstrap}"))?;
    let result = async {
        let ids = [partition];
        let lows = offsets(&cluster, topic, &ids, OffsetSpec::Earliest).await?;
        let highs = offsets(&cluster, topic, &ids, OffsetSpec::Latest).await?;
        let mut out = Vec::new();
        for_each_batch(&cluster, topic, &ids, &lows, &highs, |batch| {
            out.push((batch.header, batch.bytes.to_vec()));
            Ok(())
        })
        .await?;
        Ok(out)
    }
    .await;
    cluster.close().await;
    result
}

/// The high watermark of every partition `0..partitions` of `topic`, in
/// one ListOffsets per leader.
pub async fn log_ends(bootstrap: &str, topic: &str, partitions: i32) -> Result<Vec<i64>> {
    let cluster = Cluster::connect(ClusterConfig::new([bootstrap]))
        .await
        .with_context(|| format!("connecting to {bootstrap}"))?;
    let ids: Vec<i32> = (0..partitions).collect();
    let result = offsets(&cluster, topic, &ids, OffsetSpec::Latest).await;
    cluster.close().await;
    result
}

/// Sum over partitions `0..partitions` of the high watermark of `topic`.
pub async fn total_end(cluster: &Cluster, topic: &str, partitions: i32) -> Result<i64> {
    let ids: Vec<i32> = (0..partitions).collect();
    Ok(offsets(cluster, topic, &ids, OffsetSpec::Latest)
        .await?
        .iter()
        .sum())
}

/// What the baseline copier was asked to do (its command line).
#[derive(Debug, Clone)]
pub struct BaselineSpec {
    pub source: String,
    pub target: String,
    pub topic: String,
    pub to_topic: String,
    pub partitions: i32,
    pub codec: Codec,
    /// librdkafka settings applied after the defaults below.
    pub consumer_config: Vec<(String, String)>,
    pub producer_config: Vec<(String, String)>,
    pub timeout: Duration,
}

/// What the baseline copier measured on itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaselineOutcome {
    pub records: u64,
    /// Key + value bytes of the records copied.
    pub payload_bytes: u64,
    /// CPU time of the whole copier process from the creation of its
    /// clients to the last acknowledgement. Like the fetcher's figure, which
    /// runs from `mirror add` and so includes connecting to both clusters,
    /// metadata, producer ids and offset lookups, it includes the copier's
    /// set-up.
    pub cpu_secs: f64,
    /// The part of `cpu_secs` spent in the kernel.
    pub sys_secs: f64,
    /// The part of `cpu_secs` spent before the first fetch (clients,
    /// metadata, watermarks, producer id).
    pub setup_cpu_secs: f64,
    /// From the creation of the clients to the last acknowledgement.
    pub wall_secs: f64,
}

impl BaselineOutcome {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "records": self.records,
            "payload_bytes": self.payload_bytes,
            "cpu_secs": self.cpu_secs,
            "sys_secs": self.sys_secs,
            "setup_cpu_secs": self.setup_cpu_secs,
            "wall_secs": self.wall_secs,
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Result<BaselineOutcome> {
        let f = |k: &str| {
            v[k].as_f64()
                .ok_or_else(|| anyhow!("baseline output lacks {k}: {v}"))
        };
        Ok(BaselineOutcome {
            records: f("records")? as u64,
            payload_bytes: f("payload_bytes")? as u64,
            cpu_secs: f("cpu_secs")?,
            sys_secs: f("sys_secs")?,
            setup_cpu_secs: f("setup_cpu_secs")?,
            wall_secs: f("wall_secs")?,
        })
    }
}

/// The baseline: a consume-then-produce copy with librdkafka, as
/// MirrorMaker 2 does it (assigned partitions, no consumer group; every
/// record re-produced to the same partition with its key, value, headers
/// and timestamp by an idempotent acks=all producer that compresses with
/// `spec.codec`). Runs in its own process (see the bench binary) so that
/// [`process_cpu`] of this process counts the copy and nothing else.
///
/// Batching settings are librdkafka's defaults (linger 5 ms, batches up to
/// 1 MB), larger than MirrorMaker 2's Java producer defaults (16 KiB,
/// linger 0): fewer, larger batches cost the baseline less CPU per byte.
pub fn run_baseline(spec: &BaselineSpec) -> Result<BaselineOutcome> {
    let pid = std::process::id();
    let cpu0 = process_cpu_times(pid)?;
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let mut consumer_config = ClientConfig::new();
    consumer_config
        .set("bootstrap.servers", &spec.source)
        .set("client.id", "cutover-bench-baseline")
        // librdkafka refuses assign() without a group id; no group is joined.
        .set("group.id", "cutover-bench-baseline")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false");
    for (k, v) in &spec.consumer_config {
        consumer_config.set(k, v);
    }
    let consumer: BaseConsumer = consumer_config
        .create()
        .context("creating baseline consumer")?;
    let mut producer_config = ClientConfig::new();
    producer_config
        .set("bootstrap.servers", &spec.target)
        .set("client.id", "cutover-bench-baseline")
        .set("compression.type", spec.codec.as_str())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("allow.auto.create.topics", "false")
        .set("message.timeout.ms", "300000");
    for (k, v) in &spec.producer_config {
        producer_config.set(k, v);
    }
    let producer: BaseProducer<DeliveryCounter> = producer_config
        .create_with_context(DeliveryCounter::default())
        .context("creating baseline producer")?;

    // Set-up: where each partition ends, and the producer's metadata and
    // producer id (measured, and reported apart as setup_cpu_secs).
    let mut ends = Vec::new();
    for p in 0..spec.partitions {
        let (_, high) = consumer
            .fetch_watermarks(&spec.topic, p, Duration::from_secs(10))
            .with_context(|| format!("watermarks of {}/{p}", spec.topic))?;
        ends.push(high);
    }
    producer
        .client()
        .fetch_metadata(Some(&spec.to_topic), Duration::from_secs(10))
        .context("target metadata")?;

    let setup_cpu = process_cpu_times(pid)?.since(&cpu0);
    let mut tpl = TopicPartitionList::new();
    for p in 0..spec.partitions {
        tpl.add_partition_offset(&spec.topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl).context("assign")?;
    let mut next = vec![0i64; ends.len()];
    let mut open = ends.iter().filter(|e| **e > 0).count();
    let (mut records, mut payload_bytes) = (0u64, 0u64);
    while open > 0 {
        if Instant::now() >= deadline {
            bail!(
                "baseline copy not done after {:?}: at {next:?} of {ends:?}",
                spec.timeout
            );
        }
        let msg = match consumer.poll(Duration::from_millis(100)) {
            None => {
                producer.poll(Duration::ZERO);
                continue;
            }
            Some(Err(e)) => return Err(e).context("baseline consumer"),
            Some(Ok(m)) => m,
        };
        let p = msg.partition();
        let mut rec = BaseRecord::<[u8], [u8]>::to(&spec.to_topic).partition(p);
        if let Some(ts) = msg.timestamp().to_millis() {
            rec = rec.timestamp(ts);
        }
        if let Some(k) = msg.key() {
            payload_bytes += k.len() as u64;
            rec = rec.key(k);
        }
        if let Some(v) = msg.payload() {
            payload_bytes += v.len() as u64;
            rec = rec.payload(v);
        }
        if let Some(h) = msg.headers() {
            if h.count() > 0 {
                rec = rec.headers(h.detach());
            }
        }
        send(&producer, rec, deadline)?;
        records += 1;
        if records % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
        let idx = usize::try_from(p)?;
        if let (Some(n), Some(end)) = (next.get_mut(idx), ends.get(idx)) {
            let was_open = *n < *end;
            *n = msg.offset() + 1;
            if was_open && *n >= *end {
                open -= 1;
            }
        }
    }
    producer
        .flush(deadline.saturating_duration_since(Instant::now()))
        .context("flushing baseline producer")?;
    let wall_secs = start.elapsed().as_secs_f64();
    let cpu = process_cpu_times(pid)?.since(&cpu0);
    producer
        .context()
        .expect_all_acked("baseline producer", records)?;
    Ok(BaselineOutcome {
        records,
        payload_bytes,
        cpu_secs: cpu.total().as_secs_f64(),
        sys_secs: cpu.system.as_secs_f64(),
        setup_cpu_secs: setup_cpu.total().as_secs_f64(),
        wall_secs,
    })
}

/// The median of benchmark figures (the mean of the middle two for an even
/// count; NaN for none).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median([]).is_nan());
    }

    #[test]
    fn parses_proc_stat() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 731 52 0 0 20 0 9 0 \
                    123456 1000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some((731, 52)));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let cpu = process_cpu(std::process::id()).expect("own /proc stat");
        assert!(cpu < Duration::from_secs(3600));
    }

    #[test]
    fn bench_records_are_deterministic_json() {
        let (k, v) = bench_record(7);
        assert_eq!(bench_record(7), (k.clone(), v.clone()));
        assert_ne!(bench_record(8).1, v);
        assert!(k.starts_with(b"cust-"));
        let parsed: serde_json::Value = serde_json::from_slice(&v).expect("value is JSON");
        assert_eq!(parsed["order_id"], 7);
        assert!((200..400).contains(&v.len()), "{}", v.len());
    }
}
