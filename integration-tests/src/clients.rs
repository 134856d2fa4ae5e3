//! Real librdkafka producers and consumers against any bootstrap address.
//!
//! All functions here block the calling thread (bounded by a deadline);
//! from async code use the `*_async` variants, which run them on tokio's
//! blocking pool.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::records::{
    expected_record, ConsumedRecord, ProduceMode, ProduceSpec, Produced, ProducedRecord,
    RecordContent, RecordHeader,
};

/// Timeout for metadata and watermark queries.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn producer_config(bootstrap: &str, spec: &ProduceSpec) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("client.id", "cutover-bed-producer")
        .set("compression.type", spec.codec.as_str())
        .set("batch.num.messages", spec.batch_records.max(1).to_string())
        // Records are enqueued faster than this, so batches close at
        // `batch.num.messages`; the linger only bounds the last one.
        .set("linger.ms", "5")
        .set("acks", "all")
        .set("allow.auto.create.topics", "false")
        .set(
            "message.timeout.ms",
            spec.timeout.as_millis().max(1).to_string(),
        )
        .set(
            "enable.idempotence",
            if matches!(spec.mode, ProduceMode::Plain) {
                "false"
            } else {
                "true"
            },
        );
    cfg
}

/// Fails clearly when `topic`/`partition` does not exist (the mock has no
/// CreateTopics; producing to a missing topic would only time out).
fn check_partition_exists<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    partition: i32,
) -> Result<()> {
    let md = client
        .fetch_metadata(Some(topic), QUERY_TIMEOUT)
        .with_context(|| format!("metadata for topic {topic}"))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow!("topic {topic} missing from metadata"))?;
    if let Some(err) = t.error() {
        bail!("topic {topic}: {err:?} (create it with Clusters::create_topic first)");
    }
    if !t.partitions().iter().any(|p| p.id() == partition) {
        bail!(
            "topic {topic} has {} partitions, no partition {partition}",
            t.partitions().len()
        );
    }
    Ok(())
}

/// Collects delivery reports by record index.
struct CollectingContext {
    results: Mutex<Vec<Option<std::result::Result<i64, String>>>>,
}

impl ClientContext for CollectingContext {}

impl ProducerContext for CollectingContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, idx: usize) {
        let outcome = match result {
            Ok(msg) => Ok(msg.offset()),
            Err((err, _)) => Err(err.to_string()),
        };
        if let Some(slot) = lock(&self.results).get_mut(idx) {
            *slot = Some(outcome);
        }
    }
}

static TXN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `n` deterministic records (seq `spec.first_seq ..`) to one
/// partition with a real librdkafka producer and returns them with the
/// offsets the broker acknowledged, sorted by offset. Fails if any record
/// was not acknowledged before `spec.timeout`.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    n: usize,
    spec: &ProduceSpec,
) -> Result<Produced> {
    let deadline = Instant::now() + spec.timeout;
    let mut cfg = producer_config(bootstrap, spec);
    if let ProduceMode::Transactional { .. } = spec.mode {
        let id = format!(
            "cutover-bed-{topic}-{partition}-{}-{}",
            std::process::id(),
            TXN_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        cfg.set("transactional.id", id);
    }
    let ctx = CollectingContext {
        results: Mutex::new(vec![None; n]),
    };
    let producer: BaseProducer<CollectingContext> =
        cfg.create_with_context(ctx).context("creating producer")?;
    check_partition_exists(producer.client(), topic, partition)?;

    let contents: Vec<RecordContent> = (0..n as u64)
        .map(|i| expected_record(topic, partition, spec.first_seq + i, spec))
        .collect();
    let mut aborted = vec![false; n];

    match spec.mode {
        ProduceMode::Plain | ProduceMode::Idempotent => {
            for (idx, content) in contents.iter().enumerate() {
                send_blocking(&producer, topic, partition, content, idx, deadline)?;
            }
            producer
                .flush(remaining(deadline))
                .context("flushing producer")?;
        }
        ProduceMode::Transactional { abort_every } => {
            producer
                .init_transactions(remaining(deadline))
                .context("init_transactions")?;
            let per_txn = spec.batch_records.max(1);
            for (txn_no, chunk_start) in (0..n).step_by(per_txn).enumerate() {
                let chunk_end = (chunk_start + per_txn).min(n);
                let abort = abort_every.is_some_and(|k| k > 0 && (txn_no + 1) % k == 0);
                producer.begin_transaction().context("begin_transaction")?;
                for (idx, content) in contents
                    .iter()
                    .enumerate()
                    .take(chunk_end)
                    .skip(chunk_start)
                {
                    send_blocking(&producer, topic, partition, content, idx, deadline)?;
                }
                if abort {
                    // Make sure the records reach the log before the abort,
                    // so the partition deterministically holds them.
                    producer
                        .flush(remaining(deadline))
                        .context("flushing before abort")?;
                    producer
                        .abort_transaction(remaining(deadline))
                        .context("abort_transaction")?;
                    aborted[chunk_start..chunk_end].fill(true);
                } else {
                    producer
                        .commit_transaction(remaining(deadline))
                        .context("commit_transaction")?;
                }
            }
        }
    }

    let results = std::mem::take(&mut *lock(&producer.context().results));
    let mut records = Vec::with_capacity(n);
    for (idx, (content, result)) in contents.into_iter().zip(results).enumerate() {
        let seq = spec.first_seq + idx as u64;
        match result {
            Some(Ok(offset)) => records.push(ProducedRecord {
                seq,
                offset,
                aborted: aborted[idx],
                content,
            }),
            Some(Err(e)) => bail!("record seq {seq} to {topic}/{partition} failed: {e}"),
            None => bail!("record seq {seq} to {topic}/{partition}: no delivery report"),
        }
    }
    records.sort_by_key(|r| r.offset);
    Ok(Produced {
        topic: topic.to_owned(),
        partition,
        records,
    })
}

/// Async form of [`produce`] (runs on tokio's blocking pool).
pub async fn produce_async(
    bootstrap: String,
    topic: String,
    partition: i32,
    n: usize,
    spec: ProduceSpec,
) -> Result<Produced> {
    tokio::task::spawn_blocking(move || produce(&bootstrap, &topic, partition, n, &spec))
        .await
        .context("produce task")?
}

pub(crate) fn base_record<'a, D: rdkafka::IntoOpaque>(
    topic: &'a str,
    partition: i32,
    content: &'a RecordContent,
    opaque: D,
) -> BaseRecord<'a, [u8], [u8], D> {
    let mut rec = BaseRecord::with_opaque_to(topic, opaque)
        .partition(partition)
        .timestamp(content.timestamp);
    if let Some(k) = content.key.as_deref() {
        rec = rec.key(k);
    }
    if let Some(v) = content.value.as_deref() {
        rec = rec.payload(v);
    }
    if !content.headers.is_empty() {
        let headers = content.headers.iter().fold(OwnedHeaders::new(), |acc, h| {
            acc.insert(Header {
                key: &h.key,
                value: h.value.as_deref(),
            })
        });
        rec = rec.headers(headers);
    }
    rec
}

/// Enqueues one record, serving delivery reports while the local queue is
/// full.
pub(crate) fn send_blocking<C>(
    producer: &BaseProducer<C>,
    topic: &str,
    partition: i32,
    content: &RecordContent,
    idx: usize,
    deadline: Instant,
) -> Result<()>
where
    C: ProducerContext<DeliveryOpaque = usize>,
{
    let mut rec = base_record(topic, partition, content, idx);
    loop {
        match producer.send(rec) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if Instant::now() >= deadline {
                    bail!("producer queue stayed full until the deadline");
                }
                rec = r;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(e).context("enqueueing record"),
        }
    }
}

/// Which records a reader sees (`isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Every data record, aborted ones too (never control records).
    #[default]
    ReadUncommitted,
    /// Up to the last stable offset, without aborted records.
    ReadCommitted,
}

impl Isolation {
    fn as_str(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "read_uncommitted",
            Isolation::ReadCommitted => "read_committed",
        }
    }
}

fn reader_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("client.id", "cutover-bed-reader")
        // librdkafka refuses assign() without a group id ("Unknown group");
        // no group is joined and nothing is committed under it.
        .set("group.id", "cutover-bed-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_uncommitted")
        // Reading below the log start must fail, not silently jump.
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false")
        .set("fetch.wait.max.ms", "100");
    cfg
}

/// Reads `[from, to)` of one partition with a real librdkafka consumer
/// (assigned at `from`, no group membership, `read_uncommitted`). Returns
/// when the consumer position reaches `to` (so trailing control records or
/// compaction holes do not block it); fails after 30 s.
pub fn read_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<Vec<ConsumedRecord>> {
    read_partition_with_timeout(
        bootstrap,
        topic,
        partition,
        from,
        to,
        Duration::from_secs(30),
    )
}

/// [`read_partition`] with an explicit deadline.
pub fn read_partition_with_timeout(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    timeout: Duration,
) -> Result<Vec<ConsumedRecord>> {
    read_partition_isolated(
        bootstrap,
        topic,
        partition,
        from,
        to,
        Isolation::ReadUncommitted,
        timeout,
    )
}

/// [`read_partition`] with an isolation level and a deadline. With
/// `read_committed`, `to` must not pass the last stable offset.
pub fn read_partition_isolated(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    isolation: Isolation,
    timeout: Duration,
) -> Result<Vec<ConsumedRecord>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    if to <= from {
        return Ok(out);
    }
    let consumer: BaseConsumer = reader_config(bootstrap)
        .set("isolation.level", isolation.as_str())
        .create()
        .context("creating consumer")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .context("building assignment")?;
    consumer.assign(&tpl).context("assign")?;

    let mut next = from;
    while next < to {
        let wait = remaining(deadline);
        if wait.is_zero() {
            let marks = consumer
                .fetch_watermarks(topic, partition, QUERY_TIMEOUT)
                .ok();
            bail!(
                "reading {topic}/{partition} [{from}, {to}): got {} records, next offset {next} \
                 after {timeout:?} (watermarks now {marks:?})",
                out.len()
            );
        }
        match consumer.poll(wait.min(Duration::from_millis(500))) {
            Some(Ok(msg)) => {
                let offset = msg.offset();
                next = next.max(offset + 1);
                if offset >= from && offset < to {
                    out.push(consumed(&msg));
                }
            }
            Some(Err(e)) => {
                let marks = consumer
                    .fetch_watermarks(topic, partition, QUERY_TIMEOUT)
                    .ok();
                let hint = match e {
                    KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset) => {
                        "offset out of range: "
                    }
                    _ => "",
                };
                bail!("reading {topic}/{partition} at {next}: {hint}{e} (watermarks {marks:?})");
            }
            None => {}
        }
        // The position moves past records a consumer never sees (control
        // records, aborted data under read_committed).
        if let Ok(pos) = consumer.position() {
            if let Some(Offset::Offset(p)) =
                pos.find_partition(topic, partition).map(|e| e.offset())
            {
                next = next.max(p);
            }
        }
    }
    Ok(out)
}

/// Async form of [`read_partition`].
pub async fn read_partition_async(
    bootstrap: String,
    topic: String,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<Vec<ConsumedRecord>> {
    tokio::task::spawn_blocking(move || read_partition(&bootstrap, &topic, partition, from, to))
        .await
        .context("read task")?
}

/// A consumed message as the tests compare records.
pub fn consumed<M: Message>(msg: &M) -> ConsumedRecord {
    let headers = msg
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| RecordHeader {
                    key: h.key.to_owned(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect()
        })
        .unwrap_or_default();
    ConsumedRecord {
        offset: msg.offset(),
        key: msg.key().map(<[u8]>::to_vec),
        value: msg.payload().map(<[u8]>::to_vec),
        headers,
        timestamp: msg.timestamp().to_millis().unwrap_or(-1),
    }
}

/// `(low, high)`: log start offset and high watermark (ListOffsets).
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> Result<(i64, i64)> {
    let consumer: BaseConsumer = reader_config(bootstrap)
        .create()
        .context("creating consumer")?;
    consumer
        .fetch_watermarks(topic, partition, QUERY_TIMEOUT)
        .with_context(|| format!("watermarks of {topic}/{partition} at {bootstrap}"))
}

/// Async form of [`watermarks`].
pub async fn watermarks_async(
    bootstrap: String,
    topic: String,
    partition: i32,
) -> Result<(i64, i64)> {
    tokio::task::spawn_blocking(move || watermarks(&bootstrap, &topic, partition))
        .await
        .context("watermarks task")?
}

/// The next `n` records `consumer` delivers, as (offset, value); fails on
/// a consumer error (a reset or a fetch failure the client reports) or
/// when `wait` passes first.
pub fn poll_values(
    consumer: &BaseConsumer,
    n: usize,
    wait: Duration,
) -> Result<Vec<(i64, Option<Vec<u8>>)>> {
    let mut got = Vec::with_capacity(n);
    let deadline = Instant::now() + wait;
    while got.len() < n {
        if Instant::now() >= deadline {
            bail!("got {} of {n} records within {wait:?}", got.len());
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => got.push((m.offset(), m.payload().map(<[u8]>::to_vec))),
            Some(Err(e)) => return Err(e).context("consuming"),
            None => {}
        }
    }
    Ok(got)
}

/// (offset, value) of produced records, as [`poll_values`] gives them.
pub fn produced_values(records: &[crate::records::ProducedRecord]) -> Vec<(i64, Option<Vec<u8>>)> {
    records
        .iter()
        .map(|r| (r.offset, r.content.value.clone()))
        .collect()
}

/// Broker id leading `topic`/`partition`, from a Metadata request.
pub fn partition_leader(bootstrap: &str, topic: &str, partition: i32) -> Result<i32> {
    let consumer: BaseConsumer = reader_config(bootstrap)
        .create()
        .context("creating consumer")?;
    let md = consumer
        .fetch_metadata(Some(topic), QUERY_TIMEOUT)
        .with_context(|| format!("metadata for {topic}"))?;
    md.topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
        .map(|p| p.leader())
        .ok_or_else(|| anyhow!("{topic}/{partition} not in metadata"))
}

/// What a [`LoadGenerator`] wrote to one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLoad {
    /// Seq of the first record sent (`spec.first_seq`).
    pub first_seq: u64,
    /// Records sent (acknowledged or not).
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    /// Offset acknowledged for `first_seq`.
    pub first_offset: Option<i64>,
    /// Highest acknowledged offset.
    pub last_offset: Option<i64>,
    /// True when every acknowledged record sits at
    /// `first_offset + (seq - first_seq)`, so the record at offset `o` is
    /// `expected_record(topic, partition, first_seq + (o - first_offset))`.
    pub in_order: bool,
}

/// Totals of a stopped [`LoadGenerator`], keyed by (topic, partition).
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub partitions: BTreeMap<(String, i32), PartitionLoad>,
}

impl LoadReport {
    pub fn total_acked(&self) -> u64 {
        self.partitions.values().map(|p| p.acked).sum()
    }

    pub fn total_failed(&self) -> u64 {
        self.partitions.values().map(|p| p.failed).sum()
    }
}

struct LoadState {
    loads: Vec<PartitionLoad>,
    acked_total: u64,
}

struct LoadShared {
    state: Mutex<LoadState>,
    acked: Condvar,
}

struct LoadContext {
    shared: Arc<LoadShared>,
}

impl ClientContext for LoadContext {}

impl ProducerContext for LoadContext {
    /// (partition index, seq)
    type DeliveryOpaque = Box<(usize, u64)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Box<(usize, u64)>) {
        let (idx, seq) = *opaque;
        let mut st = lock(&self.shared.state);
        let Some(load) = st.loads.get_mut(idx) else {
            return;
        };
        match result {
            Ok(msg) => {
                let offset = msg.offset();
                load.acked += 1;
                let rel = i64::try_from(seq - load.first_seq).unwrap_or(i64::MAX);
                match load.first_offset {
                    None if seq == load.first_seq => load.first_offset = Some(offset),
                    None => {
                        load.in_order = false;
                        load.first_offset = Some(offset - rel);
                    }
                    Some(first) if first + rel != offset => load.in_order = false,
                    Some(_) => {}
                }
                load.last_offset = Some(load.last_offset.map_or(offset, |l| l.max(offset)));
                st.acked_total += 1;
                drop(st);
                self.shared.acked.notify_all();
            }
            Err(_) => load.failed += 1,
        }
    }
}

/// Highest rate a [`LoadGenerator`] accepts, records per second.
pub const MAX_LOAD_RATE: u64 = 50_000;

/// A background producer writing deterministic records round-robin over a
/// set of partitions at a bounded rate (records per second, all partitions
/// together). Stops on [`LoadGenerator::stop`] or drop.
pub struct LoadGenerator {
    stop_tx: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
    shared: Arc<LoadShared>,
    targets: Vec<(String, i32)>,
}

impl LoadGenerator {
    /// Starts writing to `partitions` (topic, partition) at `rate_per_sec`
    /// records per second (at most [`MAX_LOAD_RATE`]). `spec.mode` must be
    /// `Plain` or `Idempotent` (use `Idempotent` for records in seq order).
    pub fn start(
        bootstrap: &str,
        partitions: &[(String, i32)],
        rate_per_sec: u64,
        spec: ProduceSpec,
    ) -> Result<LoadGenerator> {
        if partitions.is_empty() {
            bail!("load generator needs at least one partition");
        }
        if rate_per_sec == 0 || rate_per_sec > MAX_LOAD_RATE {
            bail!("load rate must be 1..={MAX_LOAD_RATE} records/s, not {rate_per_sec}");
        }
        if let ProduceMode::Transactional { .. } = spec.mode {
            bail!("the load generator writes Plain or Idempotent, not Transactional");
        }
        let shared = Arc::new(LoadShared {
            state: Mutex::new(LoadState {
                loads: partitions
                    .iter()
                    .map(|_| PartitionLoad {
                        first_seq: spec.first_seq,
                        sent: 0,
                        acked: 0,
                        failed: 0,
                        first_offset: None,
                        last_offset: None,
                        in_order: true,
                    })
                    .collect(),
                acked_total: 0,
            }),
            acked: Condvar::new(),
        });
        let mut cfg = producer_config(bootstrap, &spec);
        // Keep retrying through injected faults while the generator runs.
        cfg.set("message.timeout.ms", "0");
        let producer: BaseProducer<LoadContext> = cfg
            .create_with_context(LoadContext {
                shared: shared.clone(),
            })
            .context("creating load producer")?;
        for (topic, partition) in partitions {
            check_partition_exists(producer.client(), topic, *partition)?;
        }
        let (stop_tx, stop_rx) = mpsc::channel();
        let targets = partitions.to_vec();
        let thread_targets = targets.clone();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bed-load".into())
            .spawn(move || {
                run_load(
                    producer,
                    thread_targets,
                    rate_per_sec,
                    spec,
                    thread_shared,
                    stop_rx,
                )
            })
            .context("spawning load generator thread")?;
        Ok(LoadGenerator {
            stop_tx: Some(stop_tx),
            thread: Some(thread),
            shared,
            targets,
        })
    }

    /// Records acknowledged so far, all partitions together.
    pub fn acked(&self) -> u64 {
        lock(&self.shared.state).acked_total
    }

    /// Blocks until at least `n` records were acknowledged (woken by
    /// delivery reports), or fails after `timeout`.
    pub fn wait_acked(&self, n: u64, timeout: Duration) -> Result<()> {
        let guard = lock(&self.shared.state);
        let (guard, res) = self
            .shared
            .acked
            .wait_timeout_while(guard, timeout, |st| st.acked_total < n)
            .unwrap_or_else(PoisonError::into_inner);
        if res.timed_out() && guard.acked_total < n {
            bail!(
                "load generator acknowledged {} of {n} records within {timeout:?}",
                guard.acked_total
            );
        }
        Ok(())
    }

    /// Stops sending, waits (up to 10 s) for outstanding acknowledgements
    /// and returns what was written.
    pub fn stop(mut self) -> Result<LoadReport> {
        self.shutdown()?;
        let st = lock(&self.shared.state);
        let partitions = self
            .targets
            .iter()
            .cloned()
            .zip(st.loads.iter().cloned())
            .collect();
        Ok(LoadReport { partitions })
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop_tx.take();
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("load generator thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn run_load(
    producer: BaseProducer<LoadContext>,
    targets: Vec<(String, i32)>,
    rate: u64,
    spec: ProduceSpec,
    shared: Arc<LoadShared>,
    stop_rx: mpsc::Receiver<()>,
) -> Result<()> {
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut next_seq = vec![spec.first_seq; targets.len()];
    let mut pending: Option<(usize, u64, RecordContent)> = None;
    loop {
        let elapsed = start.elapsed().as_secs_f64();
        // At most one second of backlog: after a stall the generator does
        // not burst above its rate for long.
        let due = ((elapsed * rate as f64) as u64).max(sent);
        if due > sent + rate {
            sent = due - rate;
        }
        while sent < due {
            let (idx, seq, content) = match pending.take() {
                Some(p) => p,
                None => {
                    let idx = (sent % targets.len() as u64) as usize;
                    let (topic, partition) = &targets[idx];
                    let seq = next_seq[idx];
                    (idx, seq, expected_record(topic, *partition, seq, &spec))
                }
            };
            let (topic, partition) = &targets[idx];
            let rec = base_record(topic, *partition, &content, Box::new((idx, seq)));
            match producer.send(rec) {
                Ok(()) => {
                    next_seq[idx] += 1;
                    sent += 1;
                    if let Some(l) = lock(&shared.state).loads.get_mut(idx) {
                        l.sent += 1;
                    }
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    pending = Some((idx, seq, content));
                    break;
                }
                Err((e, _)) => return Err(e).context("load generator send"),
            }
        }
        producer.poll(Duration::ZERO);
        // Pace until the next record is due; a stop request (or the
        // generator being dropped) ends the wait at once.
        let next_due = Duration::from_secs_f64((sent + 1) as f64 / rate as f64);
        let wait = next_due
            .saturating_sub(start.elapsed())
            .min(Duration::from_millis(100));
        match stop_rx.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    producer
        .flush(Duration::from_secs(10))
        .context("flushing load generator")
}
