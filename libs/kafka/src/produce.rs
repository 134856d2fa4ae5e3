//! Produce requests to one broker, combined across partitions as Kafka's
//! own producer does: the batches that queue while earlier requests are in
//! flight go out together, one batch per partition per request (Kafka's
//! rule, kafka-facts.md).
//!
//! A broker reads the next request of a connection only once it answered
//! the one before, and an acks=all answer waits for the followers. One
//! request per partition batch therefore queues every partition behind the
//! others' replication round trips: with 40 busy partitions on three
//! brokers the fetcher fell seconds behind the source (measured by `just
//! bench-promotion`). One request per round trip carrying every partition
//! that has something keeps the lag at about one round trip.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cluster::{millis, topic_name};
use crate::conn::Connection;
use crate::data::LAST_VERSION_WITH_NAMES;
use crate::error::KafkaError;
use crate::types::ProduceResult;

/// Combined requests in flight per connection. The broker works on one at
/// a time; the second is on its way meanwhile, so the broker never waits
/// for us, and batches arriving meanwhile gather for the third.
const IN_FLIGHT: usize = 2;

/// Batches waiting to go out, per connection; senders wait beyond it. A
/// fetcher has at most five in flight per partition.
pub(crate) const QUEUE: usize = 4096;

/// Far below the broker's `socket.request.max.bytes` (100 MiB by default):
/// a combined request stops growing here (a single larger batch still goes,
/// alone).
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// One partition's batch, waiting for a combined request.
pub(crate) struct Item {
    pub(crate) topic: String,
    /// Nil when the cluster gave none (then the request names topics).
    pub(crate) topic_id: Uuid,
    pub(crate) partition: i32,
    pub(crate) records: Bytes,
    /// The Produce version this partition's topic can go with.
    pub(crate) version: i16,
    /// The broker's time to get the acknowledgements (`timeout_ms`).
    pub(crate) timeout: Duration,
    pub(crate) reply: oneshot::Sender<Result<ProduceResult, KafkaError>>,
}

/// Takes the next request's batches from `queued`, oldest first: at most
/// one per partition, all of one Produce version, at most
/// `MAX_REQUEST_BYTES` unless the first alone is larger. A partition whose
/// older batch stays queued keeps its later ones queued too, so each
/// partition's batches go out in the order they came.
pub(crate) fn take_request(queued: &mut VecDeque<Item>, max_bytes: usize) -> Vec<Item> {
    let Some(version) = queued.front().map(|i| i.version) else {
        return Vec::new();
    };
    let mut seen: HashSet<(String, i32)> = HashSet::new();
    let mut taken = Vec::new();
    let mut kept = VecDeque::with_capacity(queued.len());
    let mut bytes = 0usize;
    for item in queued.drain(..) {
        let first_of_partition = seen.insert((item.topic.clone(), item.partition));
        let fits = taken.is_empty() || bytes + item.records.len() <= max_bytes;
        if first_of_partition && item.version == version && fits {
            bytes += item.records.len();
            taken.push(item);
        } else {
            kept.push_back(item);
        }
    }
    *queued = kept;
    taken
}

/// The Produce request carrying `items` (acks=all, idempotent, no
/// transaction), topics in the order they first appear; the broker gets
/// `timeout` for the acknowledgements.
fn request(items: &[Item], version: i16, timeout: Duration) -> ProduceRequest {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for item in items {
        let mut pd = PartitionProduceData::default();
        pd.index = item.partition;
        pd.records = Some(item.records.clone());
        let slot = match names.iter().position(|n| *n == item.topic) {
            Some(slot) => slot,
            None => {
                let mut td = TopicProduceData::default();
                if version > LAST_VERSION_WITH_NAMES {
                    td.topic_id = item.topic_id;
                } else {
                    td.name = topic_name(&item.topic);
                }
                topics.push(td);
                names.push(&item.topic);
                topics.len() - 1
            }
        };
        topics[slot].partition_data.push(pd);
    }
    let mut req = ProduceRequest::default();
    req.transactional_id = None;
    req.acks = -1;
    req.timeout_ms = millis(timeout);
    req.topic_data = topics;
    req
}

/// Hands each item its partition's answer from `resp` (or the request's
/// failure).
fn answer(items: Vec<Item>, version: i16, resp: Result<ProduceResponse, KafkaError>) {
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            for item in items {
                let _ = item.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let by_id = version > LAST_VERSION_WITH_NAMES;
    for item in items {
        let p = resp
            .responses
            .iter()
            .find(|t| {
                if by_id {
                    t.topic_id == item.topic_id
                } else {
                    t.name.0.as_str() == item.topic
                }
            })
            .and_then(|t| {
                t.partition_responses
                    .iter()
                    .find(|p| p.index == item.partition)
            });
        let result = match p {
            None => Err(KafkaError::Protocol(format!(
                "Produce response without partition {}/{}",
                item.topic, item.partition
            ))),
            Some(p) => {
                let message = p
                    .error_message
                    .as_ref()
                    .map(StrBytes::to_string)
                    .or_else(|| {
                        p.record_errors.iter().find_map(|e| {
                            e.batch_index_error_message
                                .as_ref()
                                .map(StrBytes::to_string)
                        })
                    });
                KafkaError::check(p.error_code, message.as_deref()).map(|()| ProduceResult {
                    base_offset: p.base_offset,
                    log_start_offset: p.log_start_offset,
                    log_append_time_ms: p.log_append_time_ms,
                })
            }
        };
        let _ = item.reply.send(result);
    }
}

type Answered = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Writes one combined request of `items` on `conn`; the future answers
/// them once the broker did.
async fn send(
    conn: &std::sync::Arc<Connection>,
    items: Vec<Item>,
    extra: Duration,
) -> Option<Answered> {
    let version = items.first()?.version;
    // The longest any of them asked for.
    let timeout = items.iter().map(|i| i.timeout).max().unwrap_or_default();
    let mut req = request(&items, version, timeout);
    let records = crate::pieces::swap_out(crate::pieces::produce_records(&mut req));
    let wait = timeout + extra;
    match conn
        .enqueue_spliced(ApiKey::Produce, version, &req, records)
        .await
    {
        Ok(pending) => Some(Box::pin(async move {
            let resp = pending.decode::<ProduceResponse>(wait).await;
            answer(items, version, resp);
        })),
        Err(e) => {
            answer(items, version, Err(e));
            None
        }
    }
}

/// The combining loop of one connection: runs until the connection closes
/// (or its last handle is gone), then fails what is still queued.
/// `extra` is the time beyond a request's own `timeout_ms` its answer may
/// take (the cluster's request timeout).
pub(crate) async fn combine(
    conn: Weak<Connection>,
    mut rx: mpsc::Receiver<Item>,
    token: CancellationToken,
    extra: Duration,
) {
    let mut queued: VecDeque<Item> = VecDeque::new();
    let mut in_flight: FuturesUnordered<Answered> = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            item = rx.recv(), if open && queued.len() < QUEUE => match item {
                Some(item) => queued.push_back(item),
                None => open = false,
            },
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
        while queued.len() < QUEUE {
            match rx.try_recv() {
                Ok(item) => queued.push_back(item),
                Err(_) => break,
            }
        }
        while in_flight.len() < IN_FLIGHT && !queued.is_empty() {
            let Some(conn) = conn.upgrade() else {
                open = false;
                break;
            };
            let items = take_request(&mut queued, MAX_REQUEST_BYTES);
            if let Some(answered) = send(&conn, items, extra).await {
                in_flight.push(answered);
            }
        }
        if !open && in_flight.is_empty() {
            break;
        }
    }
    // A dead connection fails its requests in flight at once: their
    // answers say why.
    while in_flight.next().await.is_some() {}
    let err = match conn.upgrade() {
        Some(c) => c.closed_error(),
        None => KafkaError::Closed,
    };
    rx.close();
    while let Ok(item) = rx.try_recv() {
        queued.push_back(item);
    }
    for item in queued {
        let _ = item.reply.send(Err(err.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(
        topic: &str,
        partition: i32,
        bytes: usize,
        version: i16,
    ) -> (Item, oneshot::Receiver<Result<ProduceResult, KafkaError>>) {
        let (reply, rx) = oneshot::channel();
        (
            Item {
                topic: topic.to_owned(),
                topic_id: Uuid::nil(),
                partition,
                records: Bytes::from(vec![0u8; bytes]),
                version,
                timeout: Duration::from_secs(1),
                reply,
            },
            rx,
        )
    }

    fn queue(items: &[(&str, i32, usize, i16)]) -> VecDeque<Item> {
        items
            .iter()
            .map(|&(t, p, b, v)| item(t, p, b, v).0)
            .collect()
    }

    fn keys(items: &[Item]) -> Vec<(String, i32, usize)> {
        items
            .iter()
            .map(|i| (i.topic.clone(), i.partition, i.records.len()))
            .collect()
    }

    #[test]
    fn one_batch_per_partition_per_request_in_the_order_they_came() {
        let mut q = queue(&[
            ("a", 0, 1, 9),
            ("a", 1, 2, 9),
            ("a", 0, 3, 9),
            ("b", 0, 4, 9),
            ("a", 0, 5, 9),
        ]);
        let first = take_request(&mut q, usize::MAX);
        assert_eq!(
            keys(&first),
            vec![("a".into(), 0, 1), ("a".into(), 1, 2), ("b".into(), 0, 4)]
        );
        let second = take_request(&mut q, usize::MAX);
        assert_eq!(keys(&second), vec![("a".into(), 0, 3)]);
        let third = take_request(&mut q, usize::MAX);
        assert_eq!(keys(&third), vec![("a".into(), 0, 5)]);
        assert!(take_request(&mut q, usize::MAX).is_empty());
    }

    #[test]
    fn a_partition_left_out_keeps_its_later_batches_back() {
        // a/0's first batch does not fit: its second must not overtake it.
        let mut q = queue(&[
            ("b", 0, 10, 9),
            ("a", 0, 10, 9),
            ("a", 0, 1, 9),
            ("c", 0, 5, 9),
        ]);
        let first = take_request(&mut q, 15);
        assert_eq!(keys(&first), vec![("b".into(), 0, 10), ("c".into(), 0, 5)]);
        assert_eq!(keys(&take_request(&mut q, 15)), vec![("a".into(), 0, 10)]);
        assert_eq!(keys(&take_request(&mut q, 15)), vec![("a".into(), 0, 1)]);
    }

    #[test]
    fn versions_never_mix_and_an_oversized_batch_goes_alone() {
        let mut q = queue(&[("a", 0, 100, 9), ("b", 0, 1, 12), ("c", 0, 1, 9)]);
        assert_eq!(keys(&take_request(&mut q, 10)), vec![("a".into(), 0, 100)]);
        assert_eq!(keys(&take_request(&mut q, 10)), vec![("b".into(), 0, 1)]);
        assert_eq!(keys(&take_request(&mut q, 10)), vec![("c".into(), 0, 1)]);
    }

    #[test]
    fn the_request_groups_partitions_by_topic_and_asks_for_all_acks() {
        let items: Vec<Item> = queue(&[("a", 0, 1, 9), ("b", 3, 1, 9), ("a", 2, 1, 9)])
            .into_iter()
            .collect();
        let req = request(&items, 9, Duration::from_secs(1));
        assert_eq!(req.acks, -1);
        assert!(req.transactional_id.is_none());
        let shape: Vec<(String, Vec<i32>)> = req
            .topic_data
            .iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    t.partition_data.iter().map(|p| p.index).collect(),
                )
            })
            .collect();
        assert_eq!(shape, vec![("a".into(), vec![0, 2]), ("b".into(), vec![3])]);
    }

    #[test]
    fn every_item_gets_its_own_partitions_answer_or_the_requests_failure() {
        use kafka_protocol::messages::produce_response::{
            PartitionProduceResponse, TopicProduceResponse,
        };
        let (a0, a0_rx) = item("a", 0, 1, 9);
        let (a1, a1_rx) = item("a", 1, 1, 9);
        let (b0, b0_rx) = item("b", 0, 1, 9);
        let mut resp = ProduceResponse::default();
        let mut ta = TopicProduceResponse::default();
        ta.name = topic_name("a");
        for (index, base, code) in [(1, 70, 0), (0, 40, 0)] {
            let mut p = PartitionProduceResponse::default();
            p.index = index;
            p.base_offset = base;
            p.error_code = code;
            ta.partition_responses.push(p);
        }
        resp.responses.push(ta);
        answer(vec![a0, a1, b0], 9, Ok(resp));
        let got = |mut rx: oneshot::Receiver<Result<ProduceResult, KafkaError>>| {
            rx.try_recv().expect("answered")
        };
        assert_eq!(got(a0_rx).expect("a/0").base_offset, 40);
        assert_eq!(got(a1_rx).expect("a/1").base_offset, 70);
        assert!(matches!(got(b0_rx), Err(KafkaError::Protocol(_))));

        let (c0, c0_rx) = item("c", 0, 1, 9);
        answer(vec![c0], 9, Err(KafkaError::Closed));
        assert!(matches!(got(c0_rx), Err(KafkaError::Closed)));
    }
}
