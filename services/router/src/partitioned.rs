//! APIs whose partitions each go to their leader (Produce, Fetch,
//! ListOffsets, OffsetForLeaderEpoch): how to take a request apart by
//! partition, rebuild one for a subset, and put the answers back together
//! in the request's order. `Router::partitioned` does the routing once for
//! all of them.

use std::time::Duration;

use bytes::Bytes;
use cutover_kafka::pieces;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::epochs::{self, View};
use crate::topics::Side;

/// A request made of per-partition parts, each answered on its own.
pub trait Partitioned: Encodable + Send + Sync + Sized {
    /// One partition of the request.
    type Part: Clone + Send + Sync;
    /// One partition of the answer.
    type Answer: Send;
    type Response: Decodable + Encodable + Default + Send;
    const API: ApiKey;

    /// Every part with its topic, in request order.
    fn parts(&self) -> Vec<(&TopicName, &Self::Part)>;
    fn partition(part: &Self::Part) -> i32;
    /// This request's top-level fields with only `parts`.
    fn with_parts(&self, parts: Vec<(TopicName, Self::Part)>) -> Self;
    /// Answers of a response, with their topics; `Err(code)` when the
    /// response failed as a whole.
    fn answers(resp: Self::Response) -> Result<Vec<(TopicName, Self::Answer)>, i16>;
    fn answer_partition(answer: &Self::Answer) -> i32;
    fn answer_error(answer: &Self::Answer) -> i16;
    /// The answer carrying `code` for a partition.
    fn failed(partition: i32, code: i16) -> Self::Answer;
    /// The response with `answers` (topics in order of first appearance).
    fn assemble(answers: Vec<(TopicName, Self::Answer)>) -> Self::Response;
    /// Produce with acks=0: the broker (and so the router) answers nothing.
    fn unanswered(&self) -> bool {
        false
    }
    /// Takes out of the request the records written from their own
    /// buffers rather than copied into its encoding
    /// (`cutover_kafka::pieces`); only Produce carries any.
    fn take_large_records(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
    /// How long the broker may hold the request beyond the usual timeout.
    fn broker_wait(&self) -> Duration {
        Duration::ZERO
    }
    /// Whether a part whose leader moved is sent again by the router (to
    /// the new leader, within the request timeout) instead of answered
    /// with the retriable error. Only reads: an idempotent producer's
    /// pipelined batches must reach the new leader in their order, which
    /// only the client's own retries keep.
    const RETRIED: bool = false;
    /// The cluster a part goes to when its topic's primary is `primary`.
    fn side(_part: &Self::Part, primary: Side) -> Side {
        primary
    }
    /// The part as sent to `side`: the client's leader epochs replaced by
    /// that cluster's (`epochs`).
    fn to_upstream(_part: &mut Self::Part, _side: Side) {}
    /// The answer as a client may see it: leader epochs shown as `view`
    /// says, fillers removed. Returns the filler batches removed.
    fn to_client(_answer: &mut Self::Answer, _view: View) -> usize {
        0
    }
}

/// Groups `(topic, item)` by topic, topics in order of first appearance.
fn by_topic<T>(items: Vec<(TopicName, T)>) -> Vec<(TopicName, Vec<T>)> {
    let mut out: Vec<(TopicName, Vec<T>)> = Vec::new();
    for (topic, item) in items {
        match out.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, v)) => v.push(item),
            None => out.push((topic, vec![item])),
        }
    }
    out
}

impl Partitioned for ProduceRequest {
    type Part = produce_request::PartitionProduceData;
    type Answer = PartitionProduceResponse;
    type Response = ProduceResponse;
    const API: ApiKey = ApiKey::Produce;

    fn parts(&self) -> Vec<(&TopicName, &Self::Part)> {
        self.topic_data
            .iter()
            .flat_map(|t| t.partition_data.iter().map(move |p| (&t.name, p)))
            .collect()
    }
    fn take_large_records(&mut self) -> Vec<Bytes> {
        pieces::swap_out(pieces::produce_records(self))
    }
    fn partition(part: &Self::Part) -> i32 {
        part.index
    }
    fn with_parts(&self, parts: Vec<(TopicName, Self::Part)>) -> Self {
        let mut r = ProduceRequest::default();
        r.transactional_id = self.transactional_id.clone();
        r.acks = self.acks;
        r.timeout_ms = self.timeout_ms;
        r.topic_data = by_topic(parts)
            .into_iter()
            .map(|(name, partition_data)| {
                let mut t = produce_request::TopicProduceData::default();
                t.name = name;
                t.partition_data = partition_data;
                t
            })
            .collect();
        r
    }
    fn answers(resp: ProduceResponse) -> Result<Vec<(TopicName, Self::Answer)>, i16> {
        Ok(resp
            .responses
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partition_responses
                    .into_iter()
                    .map(move |p| (name.clone(), p))
            })
            .collect())
    }
    fn answer_partition(a: &Self::Answer) -> i32 {
        a.index
    }
    fn answer_error(a: &Self::Answer) -> i16 {
        a.error_code
    }
    fn failed(partition: i32, code: i16) -> Self::Answer {
        let mut p = PartitionProduceResponse::default();
        p.index = partition;
        p.error_code = code;
        p.base_offset = -1;
        p.log_append_time_ms = -1;
        p.log_start_offset = -1;
        p
    }
    fn assemble(answers: Vec<(TopicName, Self::Answer)>) -> ProduceResponse {
        let mut r = ProduceResponse::default();
        r.responses = by_topic(answers)
            .into_iter()
            .map(|(name, partition_responses)| {
                let mut t = TopicProduceResponse::default();
                t.name = name;
                t.partition_responses = partition_responses;
                t
            })
            .collect();
        r
    }
    fn unanswered(&self) -> bool {
        self.acks == 0
    }
    fn broker_wait(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(0) as u64)
    }
}

impl Partitioned for FetchRequest {
    const RETRIED: bool = true;
    type Part = fetch_request::FetchPartition;
    type Answer = PartitionData;
    type Response = FetchResponse;
    const API: ApiKey = ApiKey::Fetch;

    fn parts(&self) -> Vec<(&TopicName, &Self::Part)> {
        self.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (&t.topic, p)))
            .collect()
    }
    fn partition(part: &Self::Part) -> i32 {
        part.partition
    }
    fn with_parts(&self, parts: Vec<(TopicName, Self::Part)>) -> Self {
        let mut r = FetchRequest::default();
        r.replica_id = (-1).into();
        r.max_wait_ms = self.max_wait_ms;
        r.min_bytes = self.min_bytes;
        r.max_bytes = self.max_bytes;
        r.isolation_level = self.isolation_level;
        // No fetch session upstream: the router declines them (answers
        // session id 0), so every client request is a full one.
        r.session_id = 0;
        r.session_epoch = -1;
        r.rack_id = self.rack_id.clone();
        r.topics = by_topic(parts)
            .into_iter()
            .map(|(topic, partitions)| {
                let mut t = fetch_request::FetchTopic::default();
                t.topic = topic;
                t.partitions = partitions;
                t
            })
            .collect();
        r
    }
    fn answers(resp: FetchResponse) -> Result<Vec<(TopicName, Self::Answer)>, i16> {
        if resp.error_code != 0 {
            return Err(resp.error_code);
        }
        Ok(resp
            .responses
            .into_iter()
            .flat_map(|t| {
                let name = t.topic;
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect())
    }
    fn answer_partition(a: &Self::Answer) -> i32 {
        a.partition_index
    }
    fn answer_error(a: &Self::Answer) -> i16 {
        a.error_code
    }
    fn failed(partition: i32, code: i16) -> Self::Answer {
        let mut p = PartitionData::default();
        p.partition_index = partition;
        p.error_code = code;
        p.high_watermark = -1;
        p.last_stable_offset = -1;
        p.log_start_offset = -1;
        p.preferred_read_replica = (-1).into();
        p
    }
    fn assemble(answers: Vec<(TopicName, Self::Answer)>) -> FetchResponse {
        let mut r = FetchResponse::default();
        r.session_id = 0;
        r.responses = by_topic(answers)
            .into_iter()
            .map(|(topic, partitions)| {
                let mut t = FetchableTopicResponse::default();
                t.topic = topic;
                t.partitions = partitions;
                t
            })
            .collect();
        r
    }
    fn broker_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms.max(0) as u64)
    }
    fn to_upstream(part: &mut Self::Part, side: Side) {
        part.current_leader_epoch = epochs::upstream(side, part.current_leader_epoch);
        part.last_fetched_epoch = epochs::upstream(side, part.last_fetched_epoch);
    }
    fn to_client(a: &mut Self::Answer, view: View) -> usize {
        // Upstream node ids mean nothing to a client of routers.
        a.current_leader = Default::default();
        a.current_leader.leader_id = (-1).into();
        a.current_leader.leader_epoch = -1;
        a.diverging_epoch.epoch = epochs::shown(view, a.diverging_epoch.epoch);
        let Some(records) = &a.records else {
            return 0;
        };
        let (records, view) = cutover_records::client_view(records, |e| epochs::shown(view, e));
        a.records = Some(records);
        view.fillers
    }
}

impl Partitioned for ListOffsetsRequest {
    const RETRIED: bool = true;
    type Part = list_offsets_request::ListOffsetsPartition;
    type Answer = ListOffsetsPartitionResponse;
    type Response = ListOffsetsResponse;
    const API: ApiKey = ApiKey::ListOffsets;

    fn parts(&self) -> Vec<(&TopicName, &Self::Part)> {
        self.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (&t.name, p)))
            .collect()
    }
    fn partition(part: &Self::Part) -> i32 {
        part.partition_index
    }
    fn with_parts(&self, parts: Vec<(TopicName, Self::Part)>) -> Self {
        let mut r = ListOffsetsRequest::default();
        r.replica_id = (-1).into();
        r.isolation_level = self.isolation_level;
        r.timeout_ms = self.timeout_ms;
        r.topics = by_topic(parts)
            .into_iter()
            .map(|(name, partitions)| {
                let mut t = list_offsets_request::ListOffsetsTopic::default();
                t.name = name;
                t.partitions = partitions;
                t
            })
            .collect();
        r
    }
    fn answers(resp: ListOffsetsResponse) -> Result<Vec<(TopicName, Self::Answer)>, i16> {
        Ok(resp
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect())
    }
    fn answer_partition(a: &Self::Answer) -> i32 {
        a.partition_index
    }
    fn answer_error(a: &Self::Answer) -> i16 {
        a.error_code
    }
    fn failed(partition: i32, code: i16) -> Self::Answer {
        let mut p = ListOffsetsPartitionResponse::default();
        p.partition_index = partition;
        p.error_code = code;
        p.timestamp = -1;
        p.offset = -1;
        p.leader_epoch = -1;
        p
    }
    fn assemble(answers: Vec<(TopicName, Self::Answer)>) -> ListOffsetsResponse {
        let mut r = ListOffsetsResponse::default();
        r.topics = by_topic(answers)
            .into_iter()
            .map(|(name, partitions)| {
                let mut t = ListOffsetsTopicResponse::default();
                t.name = name;
                t.partitions = partitions;
                t
            })
            .collect();
        r
    }
    fn to_upstream(part: &mut Self::Part, side: Side) {
        part.current_leader_epoch = epochs::upstream(side, part.current_leader_epoch);
    }
    fn to_client(a: &mut Self::Answer, view: View) -> usize {
        a.leader_epoch = epochs::shown(view, a.leader_epoch);
        0
    }
}

impl Partitioned for OffsetForLeaderEpochRequest {
    const RETRIED: bool = true;
    type Part = offset_for_leader_epoch_request::OffsetForLeaderPartition;
    type Answer = EpochEndOffset;
    type Response = OffsetForLeaderEpochResponse;
    const API: ApiKey = ApiKey::OffsetForLeaderEpoch;

    fn parts(&self) -> Vec<(&TopicName, &Self::Part)> {
        self.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (&t.topic, p)))
            .collect()
    }
    fn partition(part: &Self::Part) -> i32 {
        part.partition
    }
    fn with_parts(&self, parts: Vec<(TopicName, Self::Part)>) -> Self {
        let mut r = OffsetForLeaderEpochRequest::default();
        r.replica_id = (-1).into();
        r.topics = by_topic(parts)
            .into_iter()
            .map(|(topic, partitions)| {
                let mut t = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
                t.topic = topic;
                t.partitions = partitions;
                t
            })
            .collect();
        r
    }
    fn answers(resp: OffsetForLeaderEpochResponse) -> Result<Vec<(TopicName, Self::Answer)>, i16> {
        Ok(resp
            .topics
            .into_iter()
            .flat_map(|t| {
                let name = t.topic;
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect())
    }
    fn answer_partition(a: &Self::Answer) -> i32 {
        a.partition
    }
    fn answer_error(a: &Self::Answer) -> i16 {
        a.error_code
    }
    fn failed(partition: i32, code: i16) -> Self::Answer {
        let mut p = EpochEndOffset::default();
        p.partition = partition;
        p.error_code = code;
        p.leader_epoch = -1;
        p.end_offset = -1;
        p
    }
    fn assemble(answers: Vec<(TopicName, Self::Answer)>) -> OffsetForLeaderEpochResponse {
        let mut r = OffsetForLeaderEpochResponse::default();
        r.topics = by_topic(answers)
            .into_iter()
            .map(|(topic, partitions)| {
                let mut t = OffsetForLeaderTopicResult::default();
                t.topic = topic;
                t.partitions = partitions;
                t
            })
            .collect();
        r
    }
    /// An epoch asks for the end of that epoch on the cluster it came
    /// from: after a promotion, epochs of records read from the source are
    /// answered by the source (offsets are identical), which keeps clients
    /// from taking the target's unrelated epochs for a truncation.
    fn side(part: &Self::Part, primary: Side) -> Side {
        epochs::side_of(part.leader_epoch).unwrap_or(primary)
    }
    fn to_upstream(part: &mut Self::Part, side: Side) {
        part.current_leader_epoch = epochs::upstream(side, part.current_leader_epoch);
        part.leader_epoch = epochs::upstream(side, part.leader_epoch);
    }
    fn to_client(a: &mut Self::Answer, view: View) -> usize {
        a.leader_epoch = epochs::shown(view, a.leader_epoch);
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;

    fn name(s: &'static str) -> TopicName {
        TopicName(StrBytes::from_static_str(s))
    }

    #[test]
    fn a_request_split_and_put_back_keeps_every_part_and_its_order() {
        let mut req = FetchRequest::default();
        req.max_wait_ms = 500;
        req.isolation_level = 1;
        req.session_id = 77;
        for (t, p) in [("a", 0), ("b", 3), ("a", 2)] {
            let mut part = fetch_request::FetchPartition::default();
            part.partition = p;
            part.fetch_offset = i64::from(p) * 10;
            let mut topic = fetch_request::FetchTopic::default();
            topic.topic = name(t);
            topic.partitions.push(part);
            req.topics.push(topic);
        }
        let parts: Vec<(TopicName, _)> = req
            .parts()
            .into_iter()
            .map(|(t, p)| (t.clone(), p.clone()))
            .collect();
        assert_eq!(parts.len(), 3);
        let sub = req.with_parts(parts);
        // Topics merged, top-level fields kept, no session upstream.
        assert_eq!(sub.topics.len(), 2);
        assert_eq!(sub.topics[0].partitions.len(), 2);
        assert_eq!((sub.max_wait_ms, sub.isolation_level), (500, 1));
        assert_eq!((sub.session_id, sub.session_epoch), (0, -1));

        let answers = vec![
            (name("a"), FetchRequest::failed(0, 6)),
            (name("b"), FetchRequest::failed(3, 0)),
            (name("a"), FetchRequest::failed(2, 0)),
        ];
        let resp = FetchRequest::assemble(answers);
        assert_eq!(resp.responses.len(), 2);
        assert_eq!(resp.responses[0].partitions[0].error_code, 6);
        assert_eq!(
            FetchRequest::answers(resp).unwrap().len(),
            3,
            "every answer comes back out"
        );
    }
}
