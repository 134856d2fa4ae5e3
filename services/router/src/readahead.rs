//! Read-ahead of one client connection's fetches.
//!
//! A router receives an upstream Fetch answer whole before it writes any
//! of it to the client, and a consumer keeps one fetch in flight per
//! broker, so without read-ahead every round trip pays the upstream
//! transfer and then the client transfer, one after the other (measured:
//! 0.56 to 0.65 of direct throughput). After answering a Fetch that
//! returned records, the router asks upstream at once for what the
//! client's next Fetch will most likely ask (the same partitions, each
//! from where the answer left it), with no wait, while it writes the
//! answer to the client. When the client's next Fetch asks exactly that,
//! the answer is already there or on its way; otherwise it is dropped and
//! the request goes upstream as usual. One read-ahead per connection at
//! most, of at most [`MAX_READAHEAD_BYTES`] of answer.

use std::sync::Mutex;

use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use cutover_kafka::KafkaError;

use crate::topics::Side;

/// Answers larger than this are not read ahead: it bounds what a
/// connection holds beyond the answer it is writing (a client's Fetch may
/// be as large as its `fetch.max.bytes`, 50 MiB by default in librdkafka
/// and the Java client).
pub const MAX_READAHEAD_BYTES: usize = 64 * 1024 * 1024;

/// What makes two Fetch requests ask the same: the fields an answer depends
/// on (not the wait, which the read-ahead does not use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchKey {
    version: i16,
    isolation_level: i8,
    max_bytes: i32,
    /// topic, partition, fetch offset, partition max bytes, current leader
    /// epoch; sorted (librdkafka rotates the order of a broker's
    /// partitions from one Fetch to the next, the answer does not depend
    /// on it).
    parts: Vec<(TopicName, i32, i64, i32, i32)>,
}

impl FetchKey {
    pub fn of(version: i16, req: &FetchRequest) -> FetchKey {
        let mut key = FetchKey {
            version,
            isolation_level: req.isolation_level,
            max_bytes: req.max_bytes,
            parts: req
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(move |p| {
                        (
                            t.topic.clone(),
                            p.partition,
                            p.fetch_offset,
                            p.partition_max_bytes,
                            p.current_leader_epoch,
                        )
                    })
                })
                .collect(),
        };
        key.parts.sort();
        key
    }
}

/// The Fetch a client will most likely send after `req` was answered with
/// `resp` (as the client saw it): each partition from after the last
/// complete batch it got, with that batch's epoch as the last fetched one.
/// `None` unless every partition was answered without error and at least
/// one returned records, or when the answer is too large to read ahead.
pub fn next_request(req: &FetchRequest, resp: &FetchResponse) -> Option<FetchRequest> {
    if resp.error_code != 0 {
        return None;
    }
    let mut size = 0usize;
    let mut advanced = false;
    let mut next = req.clone();
    for t in &mut next.topics {
        let answered = resp.responses.iter().find(|r| r.topic == t.topic)?;
        for p in &mut t.partitions {
            let a = answered
                .partitions
                .iter()
                .find(|a| a.partition_index == p.partition)?;
            if a.error_code != 0 {
                return None;
            }
            let Some(records) = &a.records else {
                continue;
            };
            size += records.len();
            if let Some((offset, epoch)) = cutover_records::next_fetch_position(records) {
                if offset > p.fetch_offset {
                    p.fetch_offset = offset;
                    p.last_fetched_epoch = epoch;
                    advanced = true;
                }
            }
        }
    }
    (advanced && size <= MAX_READAHEAD_BYTES).then_some(next)
}

/// Lowers what `req` may bring to `max` bytes, in all and per partition.
pub fn cap(req: &mut FetchRequest, max: i32) {
    req.max_bytes = req.max_bytes.min(max);
    for p in req.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
        p.partition_max_bytes = p.partition_max_bytes.min(max);
    }
}

/// A Fetch sent upstream ahead of the client.
pub struct ReadAhead {
    /// The client request it answers.
    pub key: FetchKey,
    /// The cluster it went to (the answer's epochs are that cluster's).
    pub side: Side,
    pub answer: oneshot::Receiver<Result<FetchResponse, KafkaError>>,
    /// Decodes the answer; stopped with the read-ahead.
    pub task: JoinHandle<()>,
}

impl ReadAhead {
    /// The answer (the read-ahead stays owned, so dropping it stops the
    /// task if the wait is given up).
    pub fn answer_ref(&mut self) -> &mut oneshot::Receiver<Result<FetchResponse, KafkaError>> {
        &mut self.answer
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection's read-ahead slot.
#[derive(Default)]
pub struct Slot(Mutex<Option<ReadAhead>>);

impl Slot {
    pub fn take(&self) -> Option<ReadAhead> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub fn put(&self, r: ReadAhead) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use cutover_records::{encode_batch, EncodeOptions, RecordToWrite};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::protocol::StrBytes;

    fn topic() -> TopicName {
        TopicName(StrBytes::from_static_str("t"))
    }

    fn request(offsets: &[(i32, i64)]) -> FetchRequest {
        let mut r = FetchRequest::default();
        r.max_bytes = 1 << 20;
        let mut t = FetchTopic::default();
        t.topic = topic();
        t.partitions = offsets
            .iter()
            .map(|(p, o)| {
                let mut fp = FetchPartition::default();
                fp.partition = *p;
                fp.fetch_offset = *o;
                fp.partition_max_bytes = 1 << 20;
                fp
            })
            .collect();
        r.topics = vec![t];
        r
    }

    fn records(base: i64, n: usize, epoch: i32) -> Bytes {
        let recs: Vec<RecordToWrite> = (0..n)
            .map(|i| RecordToWrite {
                timestamp: 1_700_000_000_000 + i as i64,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: Vec::new(),
            })
            .collect();
        encode_batch(
            &recs,
            &EncodeOptions {
                base_offset: base,
                partition_leader_epoch: epoch,
                ..EncodeOptions::default()
            },
        )
        .unwrap()
        .freeze()
    }

    fn response(parts: Vec<(i32, i16, Option<Bytes>)>) -> FetchResponse {
        let mut r = FetchResponse::default();
        let mut t = FetchableTopicResponse::default();
        t.topic = topic();
        t.partitions = parts
            .into_iter()
            .map(|(p, code, recs)| {
                let mut d = PartitionData::default();
                d.partition_index = p;
                d.error_code = code;
                d.records = recs;
                d
            })
            .collect();
        r.responses = vec![t];
        r
    }

    #[test]
    fn the_next_request_goes_on_where_each_partition_left_off() {
        let req = request(&[(0, 10), (1, 50)]);
        let resp = response(vec![(0, 0, Some(records(10, 5, 7))), (1, 0, None)]);
        let next = next_request(&req, &resp).unwrap();
        let parts = &next.topics[0].partitions;
        assert_eq!(
            (parts[0].fetch_offset, parts[0].last_fetched_epoch),
            (15, 7)
        );
        assert_eq!(parts[1].fetch_offset, 50);
        // The key sees the new offsets, and the wait does not matter.
        let mut asked = request(&[(0, 15), (1, 50)]);
        asked.max_wait_ms = 500;
        assert_eq!(FetchKey::of(12, &next), FetchKey::of(12, &asked));
        assert_ne!(FetchKey::of(12, &next), FetchKey::of(11, &asked));
        assert_ne!(
            FetchKey::of(12, &next),
            FetchKey::of(12, &request(&[(0, 15)]))
        );
    }

    #[test]
    fn nothing_is_read_ahead_after_an_error_or_an_empty_answer() {
        let req = request(&[(0, 10)]);
        assert!(next_request(&req, &response(vec![(0, 0, None)])).is_none());
        assert!(next_request(&req, &response(vec![(0, 6, Some(records(10, 1, 0)))])).is_none());
        assert!(next_request(&req, &response(vec![])).is_none());
    }

    #[test]
    fn the_cap_lowers_larger_asks_and_keeps_smaller_ones() {
        let mut r = request(&[(0, 5), (1, 9)]);
        r.topics[0].partitions[1].partition_max_bytes = 1000;
        cap(&mut r, 4096);
        assert_eq!(r.max_bytes, 4096);
        let per: Vec<i32> = r.topics[0]
            .partitions
            .iter()
            .map(|p| p.partition_max_bytes)
            .collect();
        assert_eq!(per, vec![4096, 1000]);
        // Only sizes change: what is asked for stays.
        assert_eq!(r.topics[0].partitions[1].fetch_offset, 9);
    }
}
