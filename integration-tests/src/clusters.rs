//! Two librdkafka mock clusters (`rdkafka::mocking::MockCluster`): a real
//! Kafka protocol implementation running inside this process.
//!
//! A `MockCluster` (made with `MockCluster::new`, which owns its internal
//! client) holds a raw pointer, so it is neither `Send` nor `Sync`. Each
//! cluster therefore lives on its own std thread, which owns the mock and
//! runs closures sent to it over a channel; [`Clusters`] is a `Send + Sync`
//! handle to both threads. Every call is a quick round trip to that thread
//! (the mock applies changes synchronously on its own thread), fine to make
//! from async code. Only rdkafka's safe mock API is used.
//!
//! # Mock quirks (librdkafka 2.12.1) that tests must know
//!
//! - No CreateTopics, DeleteTopics, DeleteRecords, DescribeConfigs,
//!   DescribeGroups, ListGroups, DescribeProducers: create topics with
//!   [`Clusters::create_topic`]. A Metadata request that allows auto-creation
//!   (librdkafka producers do by default) silently creates a missing topic
//!   with 4 partitions; the bed's clients disable auto-creation.
//! - Broker ids are `1..=n`. Brokers listen and advertise `127.0.0.1` on
//!   random ports; the bootstrap string lists all brokers.
//! - A Fetch response carries at most **one stored message set (one produce
//!   request's batch) per partition**: consumers need one round trip per
//!   batch. The mock never returns aborted transactions and reports last
//!   stable offset = high watermark; EndTxn writes **no control markers**,
//!   so aborted records look committed and offsets stay contiguous.
//! - Producer id / epoch / sequence are checked **only for transactional
//!   produce requests** (non-empty transactional id). An idempotent producer
//!   without a transactional id is never fenced (no INVALID_PRODUCER_EPOCH,
//!   no OUT_OF_ORDER_SEQUENCE) and the mock stores batches as sent: no CRC
//!   check, no baseOffset / lastOffsetDelta validation, only a sanity check
//!   of the record count; it rewrites BaseOffset and PartitionLeaderEpoch
//!   and nothing else. Check requests against kafka-facts.md yourself.
//!   The mock counts offsets from the *first* batch's record count: a
//!   Produce carrying two batches for one partition corrupts the offsets.
//! - A partition keeps at most 100,000 message sets (produce requests, not
//!   records) or 5 MiB; beyond that whole message sets are dropped from the
//!   head and the log start offset rises ([`Clusters::force_trim`]).
//! - ListOffsets answers only EARLIEST (-2) and LATEST (-1); by-timestamp
//!   lookups return offset -1.
//! - API versions: Produce <= 10, Fetch <= 16 (v13+ by topic id), Metadata
//!   <= 12, ListOffsets <= 7, OffsetCommit <= 9, OffsetFetch <= 6,
//!   OffsetForLeaderEpoch exactly 2, EndTxn <= 1, AddPartitionsToTxn <= 1.
//! - `broker_down` closes connections and refuses new ones but does NOT move
//!   partition leadership; use [`Clusters::set_partition_leader`]. Setting a
//!   leader bumps the partition's leader epoch.
//! - Consumer groups: the first join waits `group.initial.rebalance.delay.ms`
//!   (mock default 3 s), which is not settable safely in rdkafka 0.39.
//! - Errors pushed with [`Clusters::push_request_errors`] are consumed one
//!   per matching request across the whole cluster (any broker, any client,
//!   including the bed's own helpers). Per-broker error stacks have no safe
//!   API in rdkafka 0.39.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::clients::{produce, watermarks};
use crate::records::{Codec, ProduceMode, ProduceSpec};

/// Which cluster: the model's, as the services use it.
pub use cutover_model::Side;

/// The mock cluster type handed to [`Clusters::with_mock`].
pub type Mock<'a> = MockCluster<'a, DefaultProducerContext>;

type Job = Box<dyn for<'a> FnOnce(&Mock<'a>) + Send>;

struct MockThread {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    bootstrap: String,
    brokers: i32,
    side: Side,
}

impl MockThread {
    fn start(side: Side, brokers: i32) -> Result<MockThread> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String>>();
        let thread = std::thread::Builder::new()
            .name(format!("mock-{side}"))
            .spawn(move || own_mock(brokers, jobs_rx, ready_tx))
            .context("spawning mock cluster thread")?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| anyhow!("{side} mock cluster thread died during startup"))?
            .with_context(|| format!("starting {side} mock cluster"))?;
        Ok(MockThread {
            jobs: Some(jobs_tx),
            thread: Some(thread),
            bootstrap,
            brokers,
            side,
        })
    }

    fn run<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&Mock<'a>) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |mock| {
            let _ = tx.send(f(mock));
        });
        let side = self.side;
        self.jobs
            .as_ref()
            .ok_or_else(|| anyhow!("{side} mock cluster is stopped"))?
            .send(job)
            .map_err(|_| anyhow!("{side} mock cluster thread is gone"))?;
        rx.recv()
            .map_err(|_| anyhow!("{side} mock cluster thread dropped the request"))
    }
}

impl Drop for MockThread {
    fn drop(&mut self) {
        // Closing the channel ends the owner loop, which destroys the mock
        // (closing its listeners) and its client before the join returns.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Body of a mock cluster's owner thread.
fn own_mock(brokers: i32, jobs: mpsc::Receiver<Job>, ready: mpsc::Sender<Result<String>>) {
    // The mock owns its own librdkafka client; neither ever leaves this
    // thread. That client has no brokers to talk to, so it has no events
    // worth polling.
    let mock = match MockCluster::new(brokers) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(anyhow!(e).context("creating mock cluster")));
            return;
        }
    };
    if ready.send(Ok(mock.bootstrap_servers())).is_err() {
        return;
    }
    // Ends when every sender is gone (the `MockThread` was dropped).
    for job in jobs {
        // A panicking job drops its reply channel (the caller gets an
        // error) but does not take the cluster down.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mock)));
    }
    // Destroys the mock (closing its listeners), then its client.
    drop(mock);
}

/// The two clusters of a test: a 1-broker source and a 3-broker target.
/// Dropping it destroys both (their listeners close).
pub struct Clusters {
    source: MockThread,
    target: MockThread,
}

impl Clusters {
    /// Source with 1 broker, target with 3 brokers.
    pub fn start() -> Result<Clusters> {
        Self::start_with(1, 3)
    }

    /// Clusters with the given broker counts.
    pub fn start_with(source_brokers: i32, target_brokers: i32) -> Result<Clusters> {
        Ok(Clusters {
            source: MockThread::start(Side::Source, source_brokers)?,
            target: MockThread::start(Side::Target, target_brokers)?,
        })
    }

    fn side(&self, side: Side) -> &MockThread {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }

    /// `host:port,...` of the source brokers.
    pub fn source_bootstrap(&self) -> &str {
        &self.source.bootstrap
    }

    /// `host:port,...` of the target brokers.
    pub fn target_bootstrap(&self) -> &str {
        &self.target.bootstrap
    }

    pub fn bootstrap(&self, side: Side) -> &str {
        &self.side(side).bootstrap
    }

    /// Broker ids of a cluster (`1..=n`).
    pub fn broker_ids(&self, side: Side) -> Vec<i32> {
        (1..=self.side(side).brokers).collect()
    }

    /// Runs `f` with the `MockCluster` on its owner thread: the escape hatch
    /// for any mock API without a method here.
    pub fn with_mock<R, F>(&self, side: Side, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&Mock<'a>) -> R + Send + 'static,
    {
        self.side(side).run(f)
    }

    /// Creates a topic with `partitions` partitions, replication factor
    /// min(3, brokers). Errors if it exists.
    pub fn create_topic(&self, side: Side, name: &str, partitions: i32) -> Result<()> {
        let rf = self.side(side).brokers.min(3);
        let topic = name.to_owned();
        self.side(side)
            .run(move |m| m.create_topic(&topic, partitions, rf))?
            .with_context(|| format!("creating topic {name} on {side}"))
    }

    /// Creates the topic on both clusters.
    pub fn create_topic_both(&self, name: &str, partitions: i32) -> Result<()> {
        self.create_topic(Side::Source, name, partitions)?;
        self.create_topic(Side::Target, name, partitions)
    }

    /// Moves partition leadership (`None`: leaderless). Bumps the leader
    /// epoch. Clients learn it from NOT_LEADER errors / metadata refresh.
    pub fn set_partition_leader(
        &self,
        side: Side,
        topic: &str,
        partition: i32,
        broker: Option<i32>,
    ) -> Result<()> {
        let t = topic.to_owned();
        self.side(side)
            .run(move |m| m.partition_leader(&t, partition, broker))?
            .with_context(|| format!("setting leader of {topic}/{partition} on {side}"))
    }

    /// Current leader of a partition (Metadata request).
    pub fn partition_leader(&self, side: Side, topic: &str, partition: i32) -> Result<i32> {
        crate::clients::partition_leader(self.bootstrap(side), topic, partition)
    }

    /// Moves leadership to the next broker id (wrapping) and returns it.
    pub fn move_leader(&self, side: Side, topic: &str, partition: i32) -> Result<i32> {
        let brokers = self.side(side).brokers;
        if brokers < 2 {
            bail!("{side} has {brokers} broker(s); leadership cannot move");
        }
        let current = self.partition_leader(side, topic, partition)?;
        let next = current % brokers + 1;
        self.set_partition_leader(side, topic, partition, Some(next))?;
        Ok(next)
    }

    /// Disconnects a broker (-1: all) and refuses connections. Leadership
    /// does not move.
    pub fn broker_down(&self, side: Side, broker: i32) -> Result<()> {
        self.side(side)
            .run(move |m| m.broker_down(broker))?
            .with_context(|| format!("broker {broker} down on {side}"))
    }

    /// Accepts connections again (-1: all brokers).
    pub fn broker_up(&self, side: Side, broker: i32) -> Result<()> {
        self.side(side)
            .run(move |m| m.broker_up(broker))?
            .with_context(|| format!("broker {broker} up on {side}"))
    }

    /// Adds round-trip delay to a broker's responses (-1: all brokers).
    pub fn set_rtt(&self, side: Side, broker: i32, rtt: Duration) -> Result<()> {
        self.side(side)
            .run(move |m| m.broker_round_trip_time(broker, rtt))?
            .with_context(|| format!("rtt of broker {broker} on {side}"))
    }

    /// Makes the next `errors.len()` requests of `api` (any broker, any
    /// client) fail with these errors, in order. `RD_KAFKA_RESP_ERR__TRANSPORT`
    /// disconnects instead.
    pub fn push_request_errors(
        &self,
        side: Side,
        api: RDKafkaApiKey,
        errors: &[RDKafkaRespErr],
    ) -> Result<()> {
        let errors = errors.to_vec();
        self.side(side).run(move |m| m.request_errors(api, &errors))
    }

    /// Drops errors still queued for `api`.
    pub fn clear_request_errors(&self, side: Side, api: RDKafkaApiKey) -> Result<()> {
        self.side(side).run(move |m| m.clear_request_errors(api))
    }

    /// Error returned for a topic in Metadata and AddPartitionsToTxn.
    pub fn set_topic_error(&self, side: Side, topic: &str, err: RDKafkaRespErr) -> Result<()> {
        let t = topic.to_owned();
        self.side(side)
            .run(move |m| m.topic_error(&t, err))?
            .with_context(|| format!("topic error for {topic} on {side}"))
    }

    /// `(low, high)` watermarks via ListOffsets.
    pub fn watermarks(&self, side: Side, topic: &str, partition: i32) -> Result<(i64, i64)> {
        watermarks(self.bootstrap(side), topic, partition)
    }

    /// Makes the mock trim the head of a partition and returns the new log
    /// start offset (> its value before the call).
    ///
    /// The mock keeps at most 5 MiB per partition, so this writes 512 KiB
    /// records (codec none, one record per batch, [`trim_spec`] with
    /// `first_seq` = the high watermark at the call, so on a partition only
    /// this writes to, the record at offset `o` is
    /// `expected_record(topic, partition, o, &trim_spec())`) until whole
    /// batches fall off the head. Trimming happens in whole batches.
    pub fn force_trim(&self, side: Side, topic: &str, partition: i32) -> Result<i64> {
        let bootstrap = self.bootstrap(side);
        let (low_before, high_before) = watermarks(bootstrap, topic, partition)?;
        let mut spec = trim_spec();
        spec.first_seq = u64::try_from(high_before).unwrap_or(0);
        // 5 MiB / 512 KiB = 10 records fill the log; the 11th pushes it over.
        for _ in 0..4 {
            let produced = produce(bootstrap, topic, partition, 11, &spec)?;
            spec.first_seq += produced.records.len() as u64;
            let (low, _) = watermarks(bootstrap, topic, partition)?;
            if low > low_before {
                return Ok(low);
            }
        }
        bail!(
            "{topic}/{partition} on {side}: log start stayed at {low_before} after writing 22 MiB"
        )
    }
}

/// The spec [`Clusters::force_trim`] writes with (before `first_seq` is set).
pub fn trim_spec() -> ProduceSpec {
    ProduceSpec {
        codec: Codec::None,
        mode: ProduceMode::Plain,
        batch_records: 1,
        key_size: Some(16),
        value_size: Some(512 * 1024),
        with_headers: false,
        ..ProduceSpec::default()
    }
}
