//! `verify`: proves offset identity by reading both clusters record by
//! record. At every offset the source holds either a committed record (the
//! target must hold the same key, value, headers and timestamp) or nothing a
//! consumer would see (transaction marker, aborted record, compaction hole),
//! where the target must hold a filler.

use std::collections::{HashSet, VecDeque};

use cutover_kafka::{Cluster, FetchOptions, OffsetSpec};
use cutover_model::{keys, MirrorTopic};
use cutover_proto::v1 as pb;
use cutover_records::batch::{batches, Record};
use cutover_records::filler::{filler_reason, is_filler};

use crate::error::{ApiError, ApiResult};
use crate::links::connect;
use crate::Orchestrator;

#[derive(Debug)]
enum Entry {
    Data(Record),
    /// Source: a transaction marker or aborted record. Target: a filler.
    Hidden,
    /// No record at all: a compaction hole, between or inside batches.
    Gap,
}

/// Reads one partition in offset order, one entry per offset.
struct Cursor<'a> {
    cluster: &'a Cluster,
    topic: &'a str,
    partition: i32,
    next: i64,
    buffered: VecDeque<(i64, Entry)>,
    is_source: bool,
}

impl<'a> Cursor<'a> {
    fn new(
        cluster: &'a Cluster,
        topic: &'a str,
        partition: i32,
        from: i64,
        is_source: bool,
    ) -> Self {
        Cursor {
            cluster,
            topic,
            partition,
            next: from,
            buffered: VecDeque::new(),
            is_source,
        }
    }

    async fn next_entry(&mut self) -> ApiResult<Option<(i64, Entry)>> {
        let side = if self.is_source { "source" } else { "target" };
        let mut empty_fetches = 0;
        while self.buffered.is_empty() {
            let opts = FetchOptions {
                max_bytes: 4 * 1024 * 1024,
                partition_max_bytes: 4 * 1024 * 1024,
                max_wait: std::time::Duration::from_millis(100),
                min_bytes: 1,
                read_committed: self.is_source,
            };
            let f = self
                .cluster
                .fetch(self.topic, self.partition, self.next, &opts)
                .await
                .map_err(ApiError::kafka(side, self.cluster))?;
            // As Kafka's consumer does: each aborted transaction becomes
            // active once, when the first batch reaching its first offset
            // arrives, and ends at its producer's ABORT marker. Looking at
            // the whole list for every batch would re-open a transaction
            // after its marker and hide that producer's later commits.
            let mut pending_aborts: Vec<(i64, i64)> = f.aborted.clone();
            pending_aborts.sort_by_key(|(_, first)| std::cmp::Reverse(*first));
            let mut active_aborts: HashSet<i64> = HashSet::new();
            for b in batches(&f.records) {
                let b = b.map_err(|e| {
                    ApiError::kafka_data(side, self.cluster, format!("undecodable batch: {e}"))
                })?;
                let h = b.header;
                let (base, last) = (h.base_offset, h.last_offset());
                while let Some((pid, _)) = pending_aborts.pop_if(|(_, first)| *first <= last) {
                    active_aborts.insert(pid);
                }
                let hidden_batch = if self.is_source {
                    h.is_control()
                        || (h.is_transactional() && active_aborts.contains(&h.producer_id))
                } else {
                    is_filler(&h)
                };
                if self.is_source && h.is_control() {
                    // An ABORT marker ends that producer's aborted transaction.
                    if let Ok(recs) = b.records() {
                        if recs.iter().any(|r| {
                            r.key
                                .as_ref()
                                .is_some_and(|k| k.len() >= 4 && k[2..4] == [0, 0])
                        }) {
                            active_aborts.remove(&h.producer_id);
                        }
                    }
                }
                if hidden_batch {
                    for o in base.max(self.next)..=last {
                        self.buffered.push_back((o, Entry::Hidden));
                    }
                } else {
                    let recs = b.records().map_err(|e| {
                        ApiError::kafka_data(
                            side,
                            self.cluster,
                            format!("undecodable batch at {base}: {e}"),
                        )
                    })?;
                    let mut expected = base;
                    for r in recs {
                        // Offsets a compacted batch skips are holes: hidden.
                        while expected < r.offset {
                            if expected >= self.next {
                                self.buffered.push_back((expected, Entry::Gap));
                            }
                            expected += 1;
                        }
                        expected = r.offset + 1;
                        let offset = r.offset;
                        if offset >= self.next {
                            // A target's log cleaner rebuilds a filler batch
                            // it compacts, and the batch header marker goes
                            // with it; each filler record's header stays.
                            let entry = if !self.is_source && filler_reason(&r).is_some() {
                                Entry::Hidden
                            } else {
                                Entry::Data(r)
                            };
                            self.buffered.push_back((offset, entry));
                        }
                    }
                    while expected <= last {
                        if expected >= self.next {
                            self.buffered.push_back((expected, Entry::Gap));
                        }
                        expected += 1;
                    }
                }
            }
            // Gaps between batches are compaction holes too.
            let mut filled = VecDeque::with_capacity(self.buffered.len());
            let mut expect = self.next;
            for (o, e) in self.buffered.drain(..) {
                while expect < o {
                    filled.push_back((expect, Entry::Gap));
                    expect += 1;
                }
                if o == expect {
                    filled.push_back((o, e));
                    expect += 1;
                }
            }
            self.buffered = filled;
            if self.buffered.is_empty() {
                if self.next >= f.high_watermark {
                    return Ok(None);
                }
                empty_fetches += 1;
                if empty_fetches > 20 {
                    return Err(ApiError::kafka_data(
                        side,
                        self.cluster,
                        format!("no progress reading offset {}", self.next),
                    ));
                }
            }
        }
        let item = self.buffered.pop_front();
        if let Some((o, _)) = &item {
            self.next = o + 1;
        }
        Ok(item)
    }
}

fn describe(r: &Record) -> String {
    format!(
        "key={:?} value={} bytes headers={} timestamp={}",
        r.key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        r.value.as_ref().map_or(0, |v| v.len()),
        r.headers.len(),
        r.timestamp
    )
}

fn compare(offset: i64, s: &Record, t: &Record) -> Option<String> {
    let field = if s.key != t.key {
        "key"
    } else if s.value != t.value {
        "value"
    } else if s.headers != t.headers {
        "headers"
    } else if s.timestamp != t.timestamp {
        "timestamp"
    } else {
        return None;
    };
    Some(format!(
        "offset {offset}: {field} differs: source {} / target {}",
        describe(s),
        describe(t)
    ))
}

async fn offset_of(
    c: &Cluster,
    side: &'static str,
    topic: &str,
    p: i32,
    spec: OffsetSpec,
) -> ApiResult<i64> {
    let r = c
        .list_offsets(topic, &[p], spec)
        .await
        .map_err(ApiError::kafka(side, c))?;
    match r.into_iter().next() {
        Some((_, Ok(o))) => Ok(o),
        Some((_, Err(e))) => Err(ApiError::kafka(side, c)(e)),
        None => Err(ApiError::kafka_data(
            side,
            c,
            format!("no offsets for {topic}/{p}"),
        )),
    }
}

impl Orchestrator {
    pub async fn verify(&self, req: pb::VerifyRequest) -> ApiResult<pb::VerifyResponse> {
        let link = self.get_link(&req.link).await?;
        let mirror = self
            .coord
            .get::<MirrorTopic>(&keys::mirror(&req.link, &req.topic))
            .await?
            .ok_or_else(|| ApiError::NotFound {
                what: "mirror topic",
                name: format!("{}/{}", req.link, req.topic),
            })?
            .value;
        let partitions: Vec<i32> = if req.partitions.is_empty() {
            (0..mirror.partitions).collect()
        } else {
            req.partitions.clone()
        };
        for p in &partitions {
            if *p < 0 || *p >= mirror.partitions {
                return Err(ApiError::BadRequest(format!(
                    "partition {p} does not exist; {} has partitions 0..{}",
                    req.topic,
                    mirror.partitions - 1
                )));
            }
        }
        if let (Some(f), Some(t)) = (req.from_offset, req.to_offset) {
            if f > t {
                return Err(ApiError::BadRequest(format!(
                    "from_offset {f} is after to_offset {t}"
                )));
            }
        }
        let source = connect("source", &link.source, self.cfg.kafka_timeout()).await?;
        let target = connect("target", &link.target, self.cfg.kafka_timeout()).await?;
        let mut out = Vec::new();
        let mut result = Ok(());
        for p in partitions {
            match verify_partition(
                &source,
                &target,
                &req.topic,
                p,
                &req,
                mirror.target.compacted,
            )
            .await
            {
                Ok(v) => out.push(v),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        source.close().await;
        target.close().await;
        result?;
        let identical = out.iter().all(|p| p.first_difference.is_empty());
        Ok(pb::VerifyResponse {
            partitions: out,
            identical,
        })
    }
}

async fn verify_partition(
    source: &Cluster,
    target: &Cluster,
    topic: &str,
    p: i32,
    req: &pb::VerifyRequest,
    compacted: bool,
) -> ApiResult<pb::PartitionVerification> {
    let s_start = offset_of(source, "source", topic, p, OffsetSpec::Earliest).await?;
    let s_end = offset_of(source, "source", topic, p, OffsetSpec::Latest).await?;
    let t_start = offset_of(target, "target", topic, p, OffsetSpec::Earliest).await?;
    let t_end = offset_of(target, "target", topic, p, OffsetSpec::Latest).await?;
    // Only the range both sides still hold can be compared.
    let lo = s_start.max(t_start);
    let hi = s_end.min(t_end);
    let from = req.from_offset.unwrap_or(lo).max(lo);
    let mut to = req.to_offset.unwrap_or(hi).min(hi);
    if req.max_records > 0 {
        to = to.min(from.saturating_add(req.max_records as i64));
    }
    let mut v = pb::PartitionVerification {
        partition: p,
        from_offset: from,
        to_offset: to.max(from),
        ..Default::default()
    };
    if to <= from {
        return Ok(v);
    }
    let mut sc = Cursor::new(source, topic, p, from, true);
    let mut tc = Cursor::new(target, topic, p, from, false);
    let mut offset = from;
    while offset < to {
        let s = sc.next_entry().await?;
        let t = tc.next_entry().await?;
        let diff = match (s, t) {
            (Some((so, se)), Some((to_, te))) if so == offset && to_ == offset => match (se, te) {
                (Entry::Data(a), Entry::Data(b)) => {
                    let d = compare(offset, &a, &b);
                    if d.is_none() {
                        v.records_identical += 1;
                    }
                    d
                }
                (Entry::Hidden | Entry::Gap, Entry::Hidden | Entry::Gap) => {
                    v.fillers_skipped += 1;
                    None
                }
                // Each cluster's log cleaner runs on its own schedule: a
                // record one side has already compacted away may still be
                // on the other.
                (Entry::Data(_), Entry::Gap) | (Entry::Gap, Entry::Data(_)) if compacted => {
                    v.compacted_on_one_side += 1;
                    None
                }
                (Entry::Data(a), Entry::Hidden) => Some(format!("offset {offset}: the source has a record ({}) but the target has a filler", describe(&a))),
                (Entry::Data(a), Entry::Gap) => Some(format!("offset {offset}: the source has a record ({}) but the target has none (the topic does not compact)", describe(&a))),
                (Entry::Hidden | Entry::Gap, Entry::Data(b)) => Some(format!(
                    "offset {offset}: the source has no visible record (marker, aborted or compacted) but the target has one ({})",
                    describe(&b)
                )),
            },
            (s, t) => Some(format!(
                "offset {offset}: could not read the same offset on both sides (source at {:?}, target at {:?})",
                s.map(|x| x.0),
                t.map(|x| x.0)
            )),
        };
        if let Some(d) = diff {
            v.first_difference = d;
            v.first_difference_offset = offset;
            return Ok(v);
        }
        offset += 1;
    }
    Ok(v)
}
