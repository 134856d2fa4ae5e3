//! A librdkafka producer driven step by step, so a test can interleave
//! several producers (plain, idempotent, transactional) on one partition:
//! every [`Writer::write`] returns once its records are acknowledged, so the
//! order of calls is the order in the log.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::clients::{producer_config, send_blocking};
use crate::records::{expected_record, ProduceMode, ProduceSpec, ProducedRecord, RecordContent};

/// Delivery reports of one writer: `(seq, offset or error)`.
struct Reports {
    acked: Mutex<Vec<(u64, std::result::Result<i64, String>)>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let outcome = match result {
            Ok(msg) => Ok(rdkafka::message::Message::offset(msg)),
            Err((err, _)) => Err(err.to_string()),
        };
        self.acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((seq as u64, outcome));
    }
}

/// One producer of deterministic records (see [`expected_record`]) to one
/// partition.
pub struct Writer {
    producer: BaseProducer<Reports>,
    topic: String,
    partition: i32,
    spec: ProduceSpec,
    next_seq: u64,
    /// Records of the open transaction: `(seq, offset)` once acknowledged.
    open: Vec<u64>,
    records: Vec<ProducedRecord>,
    in_txn: bool,
}

impl Writer {
    /// A producer as `spec` says (codec, mode, record shape, first seq).
    /// Transactional writers get the id `transactional_id` and are
    /// initialized (InitProducerId) here.
    pub fn new(
        bootstrap: &str,
        topic: &str,
        partition: i32,
        spec: ProduceSpec,
        transactional_id: Option<&str>,
    ) -> Result<Writer> {
        let mut cfg = producer_config(bootstrap, &spec);
        if let Some(id) = transactional_id {
            if !matches!(spec.mode, ProduceMode::Transactional { .. }) {
                bail!("a transactional id needs ProduceMode::Transactional");
            }
            cfg.set("transactional.id", id);
        }
        let producer: BaseProducer<Reports> = cfg
            .create_with_context(Reports {
                acked: Mutex::new(Vec::new()),
            })
            .context("creating writer")?;
        if transactional_id.is_some() {
            producer
                .init_transactions(spec.timeout)
                .context("init_transactions")?;
        }
        Ok(Writer {
            producer,
            topic: topic.to_owned(),
            partition,
            next_seq: spec.first_seq,
            spec,
            open: Vec::new(),
            records: Vec::new(),
            in_txn: false,
        })
    }

    pub fn begin(&mut self) -> Result<()> {
        self.producer
            .begin_transaction()
            .context("begin_transaction")?;
        self.in_txn = true;
        Ok(())
    }

    /// Sends `n` records and waits until the broker acknowledged them (in a
    /// transaction: written to the log, not yet committed).
    pub fn write(&mut self, n: usize) -> Result<()> {
        let first = self.next_seq;
        let contents = (first..first + n as u64)
            .map(|seq| {
                (
                    seq,
                    expected_record(&self.topic, self.partition, seq, &self.spec),
                )
            })
            .collect();
        self.send_all(contents)
    }

    /// Sends one record per key `key-<k>` of `keys` (for compaction), with
    /// the usual value, or a null value (a tombstone) when `tombstone`.
    pub fn write_keyed(
        &mut self,
        keys: impl IntoIterator<Item = u64>,
        tombstone: bool,
    ) -> Result<()> {
        let mut contents = Vec::new();
        for (seq, k) in (self.next_seq..).zip(keys) {
            let mut c = expected_record(&self.topic, self.partition, seq, &self.spec);
            c.key = Some(format!("key-{k}").into_bytes());
            if tombstone {
                c.value = None;
            }
            contents.push((seq, c));
        }
        self.send_all(contents)
    }

    fn send_all(&mut self, contents: Vec<(u64, RecordContent)>) -> Result<()> {
        let deadline = Instant::now() + self.spec.timeout;
        let n = contents.len();
        for (seq, content) in &contents {
            send_blocking(
                &self.producer,
                &self.topic,
                self.partition,
                content,
                *seq as usize,
                deadline,
            )?;
        }
        self.next_seq += n as u64;
        self.producer
            .flush(deadline.saturating_duration_since(Instant::now()))
            .context("flushing writer")?;
        let reports = std::mem::take(
            &mut *self
                .producer
                .context()
                .acked
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if reports.len() != n {
            bail!("{} of {n} records acknowledged after flush", reports.len());
        }
        let mut by_seq: std::collections::HashMap<u64, RecordContent> =
            contents.into_iter().collect();
        for (seq, outcome) in reports {
            let offset = match outcome {
                Ok(o) => o,
                Err(e) => bail!("record seq {seq} to {}/{}: {e}", self.topic, self.partition),
            };
            if self.in_txn {
                self.open.push(seq);
            }
            let content = by_seq
                .remove(&seq)
                .ok_or_else(|| anyhow::anyhow!("delivery report for unknown seq {seq}"))?;
            self.records.push(ProducedRecord {
                seq,
                offset,
                aborted: false,
                content,
            });
        }
        Ok(())
    }

    /// Skips `n` sequence numbers: the next record's timestamp (base + seq)
    /// jumps by `n` ms, which makes a broker roll a segment whose records
    /// span more than `segment.ms` of record time.
    pub fn skip(&mut self, n: u64) {
        self.next_seq += n;
    }

    pub fn commit(&mut self) -> Result<()> {
        self.producer
            .commit_transaction(self.spec.timeout)
            .context("commit_transaction")?;
        self.open.clear();
        self.in_txn = false;
        Ok(())
    }

    pub fn abort(&mut self) -> Result<()> {
        self.producer
            .abort_transaction(self.spec.timeout)
            .context("abort_transaction")?;
        for seq in self.open.drain(..) {
            if let Some(r) = self.records.iter_mut().find(|r| r.seq == seq) {
                r.aborted = true;
            }
        }
        self.in_txn = false;
        Ok(())
    }

    /// Every record acknowledged so far, with its offset and whether its
    /// transaction was aborted.
    pub fn records(&self) -> &[ProducedRecord] {
        &self.records
    }

    /// How long the writer waits for anything.
    pub fn timeout(&self) -> Duration {
        self.spec.timeout
    }
}
