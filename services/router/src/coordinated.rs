//! APIs a coordinator answers (groups and transactions): the key that
//! picks the coordinator, the error code that says "ask another one", and
//! the answer that carries an error for every part of a request.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use std::time::Duration;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use cutover_kafka::codes;

use crate::assign::CoordinatorKind;
use crate::epochs;
use crate::members_seen::Seen;
use crate::topics::{Side, Topics};

/// A request routed to the coordinator of its key.
pub trait Coordinated: Encodable + Send + Sync {
    type Response: Decodable + Encodable + Default + Send;
    const API: ApiKey;
    /// The coordinator kind and key (group id or transactional id).
    fn key(&self) -> (CoordinatorKind, &str);
    /// The response's error, if any part of it has one.
    fn error(resp: &Self::Response) -> i16;
    /// A response with `code` for every part of this request.
    fn failed(&self, code: i16) -> Self::Response;
    /// The request as sent to `side`'s coordinator: the client's leader
    /// epochs (committed offsets carry one) replaced by that cluster's.
    fn to_upstream(&mut self, _side: Side) {}
    /// The response from `side`'s coordinator as a client may see it
    /// (committed epochs shown as `topics` says for each topic).
    fn to_client(_resp: &mut Self::Response, _side: Side, _topics: &Topics) {}
    /// The group's home moved while the request waited: it is sent to the
    /// new home without what only the old one knows (a JoinGroup's member
    /// id).
    fn home_moved(&mut self) {}
    /// How long the coordinator may hold the request beyond the usual
    /// timeout.
    fn broker_wait(&self) -> Duration {
        Duration::ZERO
    }
    /// What the answered request shows about the group's members.
    fn seen(&self, _resp: &Self::Response) -> Seen {
        Seen::Nothing
    }
    /// A request of a transaction: its producer, and what it adds.
    fn txn(&self) -> Option<TxnOf> {
        None
    }
    /// The producer as sent upstream (the client's mapped there).
    fn set_producer(&mut self, _producer_id: i64, _producer_epoch: i16) {}
}

/// A request of one transaction, as the router routes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOf {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub part: TxnPart,
}

/// What a transaction request does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnPart {
    /// AddPartitionsToTxn: partitions of these topics join it.
    Partitions(Vec<String>),
    /// AddOffsetsToTxn: this group's offsets join it.
    Offsets(String),
    /// EndTxn (`commit`: to commit, else to abort).
    End { commit: bool },
    /// TxnOffsetCommit (to the group's coordinator).
    Commit,
}

fn instance(id: &Option<StrBytes>) -> Option<String> {
    id.as_ref().map(|s| s.to_string())
}

/// A member that a successful answer confirms.
fn member_if(ok: bool, member_id: &StrBytes, instance_id: &Option<StrBytes>) -> Seen {
    if !ok {
        return Seen::Nothing;
    }
    Seen::Member {
        member_id: member_id.to_string(),
        group_instance_id: instance(instance_id),
    }
}

/// How long a coordinator holds a follower's SyncGroup at most: until the
/// leader's arrives, or the member's session expires. The request has no
/// timeout of its own; this is Java's default rebalance timeout
/// (`max.poll.interval.ms`).
const SYNC_GROUP_WAIT: Duration = Duration::from_secs(300);

macro_rules! top_level {
    ($req:ty, $resp:ty, $api:ident, $kind:ident, $key:ident) => {
        top_level!($req, $resp, $api, $kind, $key, |_r: &$req| Duration::ZERO);
    };
    ($req:ty, $resp:ty, $api:ident, $kind:ident, $key:ident, $wait:expr) => {
        top_level!(
            $req,
            $resp,
            $api,
            $kind,
            $key,
            $wait,
            |_r: &$req, _a: &$resp| Seen::Nothing
        );
    };
    ($req:ty, $resp:ty, $api:ident, $kind:ident, $key:ident, $wait:expr, $seen:expr) => {
        top_level!(
            $req,
            $resp,
            $api,
            $kind,
            $key,
            $wait,
            $seen,
            |_r: &mut $req| ()
        );
    };
    ($req:ty, $resp:ty, $api:ident, $kind:ident, $key:ident, $wait:expr, $seen:expr, $moved:expr) => {
        impl Coordinated for $req {
            type Response = $resp;
            const API: ApiKey = ApiKey::$api;
            fn key(&self) -> (CoordinatorKind, &str) {
                (CoordinatorKind::$kind, self.$key.as_str())
            }
            fn error(resp: &$resp) -> i16 {
                resp.error_code
            }
            fn failed(&self, code: i16) -> $resp {
                let mut r = <$resp>::default();
                r.error_code = code;
                r
            }
            fn broker_wait(&self) -> Duration {
                ($wait)(self)
            }
            fn seen(&self, resp: &$resp) -> Seen {
                ($seen)(self, resp)
            }
            fn home_moved(&mut self) {
                ($moved)(self)
            }
        }
    };
}

// A JoinGroup is held until the rebalance completes, at most the member's
// rebalance timeout (v1+; the session timeout before).
top_level!(
    JoinGroupRequest,
    JoinGroupResponse,
    JoinGroup,
    Group,
    group_id,
    |r: &JoinGroupRequest| {
        let ms = if r.rebalance_timeout_ms > 0 {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        };
        Duration::from_millis(ms.max(0) as u64)
    },
    // The member id is the coordinator's answer (a first JoinGroup has
    // none).
    |r: &JoinGroupRequest, a: &JoinGroupResponse| member_if(
        a.error_code == 0,
        &a.member_id,
        &r.group_instance_id
    ),
    // The new home gives it a member id (MEMBER_ID_REQUIRED, v4+, or in
    // the answer); a static member keeps its instance id.
    |r: &mut JoinGroupRequest| r.member_id = StrBytes::default()
);
top_level!(
    SyncGroupRequest,
    SyncGroupResponse,
    SyncGroup,
    Group,
    group_id,
    |_r: &SyncGroupRequest| SYNC_GROUP_WAIT,
    |r: &SyncGroupRequest, a: &SyncGroupResponse| member_if(
        a.error_code == 0,
        &r.member_id,
        &r.group_instance_id
    )
);
top_level!(
    HeartbeatRequest,
    HeartbeatResponse,
    Heartbeat,
    Group,
    group_id,
    |_r: &HeartbeatRequest| Duration::ZERO,
    // A rebalance under way still means a live member.
    |r: &HeartbeatRequest, a: &HeartbeatResponse| member_if(
        a.error_code == 0 || a.error_code == codes::REBALANCE_IN_PROGRESS,
        &r.member_id,
        &r.group_instance_id
    )
);
// Gone however the coordinator answered: the member stops either way.
top_level!(
    LeaveGroupRequest,
    LeaveGroupResponse,
    LeaveGroup,
    Group,
    group_id,
    |_r: &LeaveGroupRequest| Duration::ZERO,
    |r: &LeaveGroupRequest, _a: &LeaveGroupResponse| {
        let mut ids: Vec<String> = r.members.iter().map(|m| m.member_id.to_string()).collect();
        if !r.member_id.is_empty() {
            ids.push(r.member_id.to_string());
        }
        Seen::Left(ids)
    }
);
impl Coordinated for AddOffsetsToTxnRequest {
    type Response = AddOffsetsToTxnResponse;
    const API: ApiKey = ApiKey::AddOffsetsToTxn;
    fn key(&self) -> (CoordinatorKind, &str) {
        (CoordinatorKind::Transaction, self.transactional_id.as_str())
    }
    fn error(resp: &AddOffsetsToTxnResponse) -> i16 {
        resp.error_code
    }
    fn failed(&self, code: i16) -> AddOffsetsToTxnResponse {
        let mut r = AddOffsetsToTxnResponse::default();
        r.error_code = code;
        r
    }
    fn txn(&self) -> Option<TxnOf> {
        Some(TxnOf {
            producer_id: self.producer_id.0,
            producer_epoch: self.producer_epoch,
            part: TxnPart::Offsets(self.group_id.to_string()),
        })
    }
    fn set_producer(&mut self, producer_id: i64, producer_epoch: i16) {
        self.producer_id = producer_id.into();
        self.producer_epoch = producer_epoch;
    }
}

impl Coordinated for EndTxnRequest {
    type Response = EndTxnResponse;
    const API: ApiKey = ApiKey::EndTxn;
    fn key(&self) -> (CoordinatorKind, &str) {
        (CoordinatorKind::Transaction, self.transactional_id.as_str())
    }
    fn error(resp: &EndTxnResponse) -> i16 {
        resp.error_code
    }
    fn failed(&self, code: i16) -> EndTxnResponse {
        let mut r = EndTxnResponse::default();
        r.error_code = code;
        r
    }
    fn txn(&self) -> Option<TxnOf> {
        Some(TxnOf {
            producer_id: self.producer_id.0,
            producer_epoch: self.producer_epoch,
            part: TxnPart::End {
                commit: self.committed,
            },
        })
    }
    fn set_producer(&mut self, producer_id: i64, producer_epoch: i16) {
        self.producer_id = producer_id.into();
        self.producer_epoch = producer_epoch;
    }
}

impl Coordinated for OffsetCommitRequest {
    type Response = OffsetCommitResponse;
    const API: ApiKey = ApiKey::OffsetCommit;
    fn key(&self) -> (CoordinatorKind, &str) {
        (CoordinatorKind::Group, self.group_id.as_str())
    }
    fn error(resp: &OffsetCommitResponse) -> i16 {
        first_error(
            resp.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        )
    }
    fn failed(&self, code: i16) -> OffsetCommitResponse {
        let mut r = OffsetCommitResponse::default();
        r.topics = self
            .topics
            .iter()
            .map(|t| {
                let mut rt = OffsetCommitResponseTopic::default();
                rt.name = t.name.clone();
                rt.topic_id = t.topic_id;
                rt.partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut rp = OffsetCommitResponsePartition::default();
                        rp.partition_index = p.partition_index;
                        rp.error_code = code;
                        rp
                    })
                    .collect();
                rt
            })
            .collect();
        r
    }
    fn to_upstream(&mut self, side: Side) {
        for p in self.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            p.committed_leader_epoch = epochs::upstream(side, p.committed_leader_epoch);
        }
    }
}

impl Coordinated for OffsetFetchRequest {
    type Response = OffsetFetchResponse;
    const API: ApiKey = ApiKey::OffsetFetch;
    fn key(&self) -> (CoordinatorKind, &str) {
        (CoordinatorKind::Group, self.group_id.as_str())
    }
    fn error(resp: &OffsetFetchResponse) -> i16 {
        if resp.error_code != 0 {
            return resp.error_code;
        }
        first_error(
            resp.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        )
    }
    fn failed(&self, code: i16) -> OffsetFetchResponse {
        let mut r = OffsetFetchResponse::default();
        // v2+ carry the group error at the top; v1 only per partition.
        r.error_code = code;
        r.topics = self
            .topics
            .iter()
            .flatten()
            .map(|t| {
                let mut rt = OffsetFetchResponseTopic::default();
                rt.name = t.name.clone();
                rt.partitions = t
                    .partition_indexes
                    .iter()
                    .map(|p| {
                        let mut rp = OffsetFetchResponsePartition::default();
                        rp.partition_index = *p;
                        rp.committed_offset = -1;
                        rp.committed_leader_epoch = -1;
                        rp.error_code = code;
                        rp
                    })
                    .collect();
                rt
            })
            .collect();
        r
    }
    fn to_client(resp: &mut OffsetFetchResponse, side: Side, topics: &Topics) {
        for t in &mut resp.topics {
            let view = topics.view(t.name.as_str(), side);
            for p in &mut t.partitions {
                p.committed_leader_epoch = epochs::shown(view, p.committed_leader_epoch);
            }
        }
        for t in resp.groups.iter_mut().flat_map(|g| g.topics.iter_mut()) {
            let view = topics.view(t.name.as_str(), side);
            for p in &mut t.partitions {
                p.committed_leader_epoch = epochs::shown(view, p.committed_leader_epoch);
            }
        }
    }
}

impl Coordinated for TxnOffsetCommitRequest {
    type Response = TxnOffsetCommitResponse;
    const API: ApiKey = ApiKey::TxnOffsetCommit;
    // Sent to the group's coordinator, not the transaction's.
    fn key(&self) -> (CoordinatorKind, &str) {
        (CoordinatorKind::Group, self.group_id.as_str())
    }
    fn error(resp: &TxnOffsetCommitResponse) -> i16 {
        first_error(
            resp.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        )
    }
    fn failed(&self, code: i16) -> TxnOffsetCommitResponse {
        let mut r = TxnOffsetCommitResponse::default();
        r.topics = self
            .topics
            .iter()
            .map(|t| {
                let mut rt = TxnOffsetCommitResponseTopic::default();
                rt.name = t.name.clone();
                rt.partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut rp = TxnOffsetCommitResponsePartition::default();
                        rp.partition_index = p.partition_index;
                        rp.error_code = code;
                        rp
                    })
                    .collect();
                rt
            })
            .collect();
        r
    }
    fn to_upstream(&mut self, side: Side) {
        for p in self.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
            p.committed_leader_epoch = epochs::upstream(side, p.committed_leader_epoch);
        }
    }
    fn txn(&self) -> Option<TxnOf> {
        Some(TxnOf {
            producer_id: self.producer_id.0,
            producer_epoch: self.producer_epoch,
            part: TxnPart::Commit,
        })
    }
    fn set_producer(&mut self, producer_id: i64, producer_epoch: i16) {
        self.producer_id = producer_id.into();
        self.producer_epoch = producer_epoch;
    }
}

impl Coordinated for AddPartitionsToTxnRequest {
    type Response = AddPartitionsToTxnResponse;
    const API: ApiKey = ApiKey::AddPartitionsToTxn;
    // Clients use v3 and below: one transaction per request.
    fn key(&self) -> (CoordinatorKind, &str) {
        (
            CoordinatorKind::Transaction,
            self.v3_and_below_transactional_id.as_str(),
        )
    }
    fn error(resp: &AddPartitionsToTxnResponse) -> i16 {
        first_error(resp.results_by_topic_v3_and_below.iter().flat_map(|t| {
            t.results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
        }))
    }
    fn failed(&self, code: i16) -> AddPartitionsToTxnResponse {
        let mut r = AddPartitionsToTxnResponse::default();
        r.results_by_topic_v3_and_below = self
            .v3_and_below_topics
            .iter()
            .map(|t| {
                let mut rt = AddPartitionsToTxnTopicResult::default();
                rt.name = t.name.clone();
                rt.results_by_partition = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut rp = AddPartitionsToTxnPartitionResult::default();
                        rp.partition_index = *p;
                        rp.partition_error_code = code;
                        rp
                    })
                    .collect();
                rt
            })
            .collect();
        r
    }
    fn txn(&self) -> Option<TxnOf> {
        Some(TxnOf {
            producer_id: self.v3_and_below_producer_id.0,
            producer_epoch: self.v3_and_below_producer_epoch,
            part: TxnPart::Partitions(
                self.v3_and_below_topics
                    .iter()
                    .map(|t| t.name.to_string())
                    .collect(),
            ),
        })
    }
    fn set_producer(&mut self, producer_id: i64, producer_epoch: i16) {
        self.v3_and_below_producer_id = producer_id.into();
        self.v3_and_below_producer_epoch = producer_epoch;
    }
}

fn first_error(codes: impl Iterator<Item = i16>) -> i16 {
    codes.into_iter().find(|c| *c != 0).unwrap_or(0)
}

/// Error codes that mean "find the coordinator again".
pub fn is_coordinator_moved(code: i16) -> bool {
    code == codes::COORDINATOR_NOT_AVAILABLE || code == codes::NOT_COORDINATOR
}
