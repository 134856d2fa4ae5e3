//! Consumer group administration: listing, describing, reading and
//! writing committed offsets, and removing members — what moving a
//! group's home between clusters needs (classic groups only).
//!
//! Group requests go to the group's coordinator (FindCoordinator), looked
//! up again on every attempt: a moved or loading coordinator is retried
//! like a moved leader.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{instrument, Span};

use crate::cluster::{topic_name, Cluster, Inner};
use crate::conn::Connection;
use crate::error::{codes, KafkaError};
use crate::types::BrokerMetadata;

/// UNSTABLE_OFFSET_COMMIT: a transaction with offsets for the group is
/// still open; the answer would not be final.
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
/// GROUP_ID_NOT_FOUND: how Kafka 4's group coordinator answers for a group
/// it does not know (older ones describe it as Dead).
const GROUP_ID_NOT_FOUND: i16 = 69;

/// A group as a broker lists it (ListGroups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    /// "consumer" for consumer groups, "" for groups that only commit.
    pub protocol_type: String,
    /// Empty when the broker does not say (ListGroups < v4).
    pub state: String,
}

/// One member of a group, as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    /// As the coordinator saw the connection ("/127.0.0.1").
    pub client_host: String,
}

/// How operators read a member in a message: its id, client id and host.
impl std::fmt::Display for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (client id {:?} from {})",
            self.member_id, self.client_id, self.client_host
        )
    }
}

/// A group as its coordinator describes it (DescribeGroups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead
    /// (Dead also for a group the cluster does not know).
    pub state: String,
    pub protocol_type: String,
    /// The assignor chosen ("range", "cooperative-sticky", ...).
    pub protocol: String,
    pub members: Vec<GroupMember>,
}

impl GroupDescription {
    /// Whether no rebalance is under way: every member's JoinGroup and
    /// SyncGroup was answered (or it has no member).
    pub fn is_settled(&self) -> bool {
        matches!(self.state.as_str(), "Stable" | "Empty" | "Dead")
    }

    /// Whether no member is in it (an admin commit is accepted then).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && matches!(self.state.as_str(), "Empty" | "Dead")
    }
}

/// A partition's committed offset in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    /// -1 when the committer gave none.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// Committed offsets by topic and partition.
pub type GroupOffsets = BTreeMap<(String, i32), CommittedOffset>;

/// Per-partition outcome of [`Cluster::commit_group_offsets`].
pub type CommitResults = Vec<((String, i32), Result<(), KafkaError>)>;

/// OffsetCommit and OffsetFetch from v10 name topics by id only (and
/// `kafka-protocol` 0.18 lists v10 without encoding it): these requests
/// name topics, so they stay at v9, which every broker that has v10 also
/// serves.
const BY_NAME_MAX: i16 = 9;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn group_id(g: &str) -> GroupId {
    GroupId(s(g))
}

/// Errors a new attempt at the coordinator may cure.
fn coordinator_worth_retrying(e: &KafkaError) -> bool {
    e.needs_metadata_refresh()
        || matches!(
            e.code(),
            Some(
                codes::COORDINATOR_LOAD_IN_PROGRESS
                    | codes::COORDINATOR_NOT_AVAILABLE
                    | codes::NOT_COORDINATOR
                    | UNSTABLE_OFFSET_COMMIT
            )
        )
}

impl Cluster {
    /// Every group of the cluster: ListGroups asked of every broker (each
    /// lists the groups it coordinates). One broker that cannot answer
    /// fails the whole list, which would otherwise look complete.
    #[instrument(level = "debug", skip_all)]
    pub async fn list_groups(&self) -> Result<Vec<ListedGroup>, KafkaError> {
        let inner = &self.inner;
        inner
            .retrying_if("ListGroups", coordinator_worth_retrying, || {
                inner.list_groups_once(self)
            })
            .await
    }

    /// The group as its coordinator sees it now.
    #[instrument(level = "debug", skip_all, fields(group = %group, broker = tracing::field::Empty))]
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, KafkaError> {
        let inner = &self.inner;
        inner
            .retrying_if("DescribeGroups", coordinator_worth_retrying, || {
                inner.describe_group_once(group)
            })
            .await
    }

    /// The group's committed offsets, every partition it has one for.
    /// Offsets a still open transaction sent are waited for (retried) on
    /// brokers that can tell (OffsetFetch v7+, `require_stable`).
    #[instrument(level = "debug", skip_all, fields(group = %group, broker = tracing::field::Empty))]
    pub async fn fetch_group_offsets(&self, group: &str) -> Result<GroupOffsets, KafkaError> {
        let inner = &self.inner;
        inner
            .retrying_if("OffsetFetch", coordinator_worth_retrying, || {
                inner.fetch_group_offsets_once(group)
            })
            .await
    }

    /// Commits `offsets` to the group as an admin does (generation -1, no
    /// member id): the coordinator accepts it only while the group has no
    /// members. The outer error is for the whole request; each partition
    /// has its own result.
    #[instrument(level = "info", skip_all, fields(group = %group, partitions = offsets.len(), broker = tracing::field::Empty))]
    pub async fn commit_group_offsets(
        &self,
        group: &str,
        offsets: &GroupOffsets,
    ) -> Result<CommitResults, KafkaError> {
        let inner = &self.inner;
        inner
            .retrying_if("OffsetCommit", coordinator_worth_retrying, || {
                inner.commit_group_offsets_once(group, offsets)
            })
            .await
    }

    /// Deletes the group's commits of `partitions` (OffsetDelete): refused
    /// by the coordinator for topics the group's members subscribe to.
    #[instrument(level = "info", skip_all, fields(group = %group, partitions = partitions.len(), broker = tracing::field::Empty))]
    pub async fn delete_group_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<(), KafkaError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        inner
            .retrying_if("OffsetDelete", coordinator_worth_retrying, || {
                inner.delete_group_offsets_once(group, partitions)
            })
            .await
    }

    /// Removes members from the group (LeaveGroup on their behalf), as
    /// `kafka-consumer-groups --delete` needs them gone. A member the
    /// coordinator no longer knows counts as removed.
    #[instrument(level = "info", skip_all, fields(group = %group, members = members.len(), broker = tracing::field::Empty))]
    pub async fn remove_group_members(
        &self,
        group: &str,
        members: &[GroupMember],
    ) -> Result<(), KafkaError> {
        if members.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        inner
            .retrying_if("LeaveGroup", coordinator_worth_retrying, || {
                inner.remove_group_members_once(group, members)
            })
            .await
    }
}

impl Inner {
    /// The group's coordinator, asked now.
    async fn coordinator(
        &self,
        group: &str,
    ) -> Result<(Arc<Connection>, BrokerMetadata), KafkaError> {
        let conn = self.any_connection().await?;
        let version = conn.require(ApiKey::FindCoordinator)?;
        let mut req = FindCoordinatorRequest::default();
        if version >= 4 {
            req.coordinator_keys = vec![s(group)];
        } else {
            req.key = s(group);
        }
        let resp: FindCoordinatorResponse = conn
            .request(
                ApiKey::FindCoordinator,
                version,
                &req,
                self.config.request_timeout,
            )
            .await?;
        let (code, message, node_id, host, port) = if version >= 4 {
            let c = resp
                .coordinators
                .into_iter()
                .find(|c| c.key.as_str() == group)
                .ok_or_else(|| {
                    KafkaError::Protocol(format!(
                        "FindCoordinator answer from {} lacks group {group}",
                        conn.addr()
                    ))
                })?;
            (c.error_code, c.error_message, c.node_id.0, c.host, c.port)
        } else {
            (
                resp.error_code,
                resp.error_message,
                resp.node_id.0,
                resp.host,
                resp.port,
            )
        };
        KafkaError::check(code, message.as_deref())?;
        let broker = BrokerMetadata {
            node_id,
            host: host.to_string(),
            port,
            rack: None,
        };
        let coordinator = self.connection(&broker.addr()).await?;
        Span::current().record("broker", coordinator.addr());
        Ok((coordinator, broker))
    }

    async fn list_groups_once(&self, cluster: &Cluster) -> Result<Vec<ListedGroup>, KafkaError> {
        let meta = cluster.metadata(Some(&[])).await?;
        let mut out = Vec::new();
        for b in &meta.brokers {
            let conn = self.connection(&b.addr()).await?;
            let version = conn.require(ApiKey::ListGroups)?;
            let resp: ListGroupsResponse = conn
                .request(
                    ApiKey::ListGroups,
                    version,
                    &ListGroupsRequest::default(),
                    self.config.request_timeout,
                )
                .await?;
            KafkaError::check(resp.error_code, None)?;
            out.extend(resp.groups.into_iter().map(|g| ListedGroup {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    async fn describe_group_once(&self, group: &str) -> Result<GroupDescription, KafkaError> {
        let (conn, _) = self.coordinator(group).await?;
        let version = conn.require(ApiKey::DescribeGroups)?;
        let mut req = DescribeGroupsRequest::default();
        req.groups = vec![group_id(group)];
        let resp: DescribeGroupsResponse = conn
            .request(
                ApiKey::DescribeGroups,
                version,
                &req,
                self.config.request_timeout,
            )
            .await?;
        let g = resp
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or_else(|| {
                KafkaError::Protocol(format!(
                    "DescribeGroups answer from {} lacks group {group}",
                    conn.addr()
                ))
            })?;
        if g.error_code == GROUP_ID_NOT_FOUND {
            return Ok(GroupDescription {
                group_id: group.to_owned(),
                state: "Dead".into(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        }
        KafkaError::check(g.error_code, g.error_message.as_deref())?;
        Ok(GroupDescription {
            group_id: group.to_owned(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                })
                .collect(),
        })
    }

    async fn fetch_group_offsets_once(&self, group: &str) -> Result<GroupOffsets, KafkaError> {
        let (conn, _) = self.coordinator(group).await?;
        let version = conn.require(ApiKey::OffsetFetch)?.min(BY_NAME_MAX);
        if version < 2 {
            // v1 cannot ask for every partition of a group.
            return Err(KafkaError::UnsupportedVersion {
                api: ApiKey::OffsetFetch,
                broker: conn.addr().to_owned(),
            });
        }
        let mut req = OffsetFetchRequest::default();
        if version >= 8 {
            let mut g = OffsetFetchRequestGroup::default();
            g.group_id = group_id(group);
            g.topics = None;
            req.groups = vec![g];
        } else {
            req.group_id = group_id(group);
            req.topics = None;
        }
        req.require_stable = version >= 7;
        let resp: OffsetFetchResponse = conn
            .request(
                ApiKey::OffsetFetch,
                version,
                &req,
                self.config.request_timeout,
            )
            .await?;
        let mut out = GroupOffsets::new();
        let mut add =
            |topic: &str, p: i32, offset: i64, epoch: i32, meta: Option<&StrBytes>, code: i16| {
                KafkaError::check(code, None)?;
                // -1: the group has no commit for the partition.
                if offset >= 0 {
                    out.insert(
                        (topic.to_owned(), p),
                        CommittedOffset {
                            offset,
                            leader_epoch: epoch,
                            metadata: meta.map(|m| m.to_string()),
                        },
                    );
                }
                Ok::<(), KafkaError>(())
            };
        if version >= 8 {
            let g = resp
                .groups
                .into_iter()
                .find(|g| g.group_id.0.as_str() == group)
                .ok_or_else(|| {
                    KafkaError::Protocol(format!(
                        "OffsetFetch answer from {} lacks group {group}",
                        conn.addr()
                    ))
                })?;
            if g.error_code == GROUP_ID_NOT_FOUND {
                return Ok(out);
            }
            KafkaError::check(g.error_code, None)?;
            for t in &g.topics {
                for p in &t.partitions {
                    add(
                        t.name.0.as_str(),
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata.as_ref(),
                        p.error_code,
                    )?;
                }
            }
        } else {
            if resp.error_code == GROUP_ID_NOT_FOUND {
                return Ok(out);
            }
            KafkaError::check(resp.error_code, None)?;
            for t in &resp.topics {
                for p in &t.partitions {
                    add(
                        t.name.0.as_str(),
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata.as_ref(),
                        p.error_code,
                    )?;
                }
            }
        }
        Ok(out)
    }

    async fn commit_group_offsets_once(
        &self,
        group: &str,
        offsets: &GroupOffsets,
    ) -> Result<CommitResults, KafkaError> {
        let (conn, _) = self.coordinator(group).await?;
        let version = conn.require(ApiKey::OffsetCommit)?.min(BY_NAME_MAX);
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((topic, p), c) in offsets {
            let mut part = OffsetCommitRequestPartition::default();
            part.partition_index = *p;
            part.committed_offset = c.offset;
            part.committed_leader_epoch = c.leader_epoch;
            part.committed_metadata = c.metadata.as_deref().map(s);
            topics.entry(topic.as_str()).or_default().push(part);
        }
        let mut req = OffsetCommitRequest::default();
        req.group_id = group_id(group);
        req.generation_id_or_member_epoch = -1;
        req.member_id = StrBytes::default();
        req.group_instance_id = None;
        req.retention_time_ms = -1;
        req.topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                let mut t = OffsetCommitRequestTopic::default();
                t.name = topic_name(name);
                t.partitions = partitions;
                t
            })
            .collect();
        let resp: OffsetCommitResponse = conn
            .request(
                ApiKey::OffsetCommit,
                version,
                &req,
                self.config.request_timeout,
            )
            .await?;
        let mut results = CommitResults::new();
        let mut retry = None;
        for tp in offsets.keys() {
            let code = resp
                .topics
                .iter()
                .find(|t| t.name.0.as_str() == tp.0)
                .and_then(|t| t.partitions.iter().find(|p| p.partition_index == tp.1))
                .map(|p| p.error_code);
            let r = match code {
                Some(code) => KafkaError::check(code, None),
                None => Err(KafkaError::Protocol(format!(
                    "OffsetCommit answer from {} lacks {}-{}",
                    conn.addr(),
                    tp.0,
                    tp.1
                ))),
            };
            if let Err(e) = &r {
                if coordinator_worth_retrying(e) {
                    retry = Some(e.clone());
                }
            }
            results.push((tp.clone(), r));
        }
        // A commit is idempotent: one partition's moved coordinator retries
        // the whole request.
        match retry {
            Some(e) => Err(e),
            None => Ok(results),
        }
    }

    async fn delete_group_offsets_once(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<(), KafkaError> {
        let (conn, _) = self.coordinator(group).await?;
        let version = conn.require(ApiKey::OffsetDelete)?;
        let mut topics: BTreeMap<&str, Vec<OffsetDeleteRequestPartition>> = BTreeMap::new();
        for (topic, p) in partitions {
            let mut part = OffsetDeleteRequestPartition::default();
            part.partition_index = *p;
            topics.entry(topic.as_str()).or_default().push(part);
        }
        let mut req = OffsetDeleteRequest::default();
        req.group_id = group_id(group);
        req.topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                let mut t = OffsetDeleteRequestTopic::default();
                t.name = topic_name(name);
                t.partitions = partitions;
                t
            })
            .collect();
        let resp: OffsetDeleteResponse = conn
            .request(
                ApiKey::OffsetDelete,
                version,
                &req,
                self.config.request_timeout,
            )
            .await?;
        KafkaError::check(resp.error_code, None)?;
        for t in &resp.topics {
            for p in &t.partitions {
                KafkaError::check(p.error_code, None)?;
            }
        }
        Ok(())
    }

    async fn remove_group_members_once(
        &self,
        group: &str,
        members: &[GroupMember],
    ) -> Result<(), KafkaError> {
        let (conn, _) = self.coordinator(group).await?;
        let version = conn.require(ApiKey::LeaveGroup)?;
        let mut batches: Vec<LeaveGroupRequest> = Vec::new();
        if version >= 3 {
            let mut req = LeaveGroupRequest::default();
            req.group_id = group_id(group);
            req.members = members
                .iter()
                .map(|m| {
                    let mut id = MemberIdentity::default();
                    id.member_id = s(&m.member_id);
                    id.group_instance_id = m.group_instance_id.as_deref().map(s);
                    if version >= 5 {
                        id.reason = Some(s("removed by Cutover: the group's home moved"));
                    }
                    id
                })
                .collect();
            batches.push(req);
        } else {
            for m in members {
                let mut req = LeaveGroupRequest::default();
                req.group_id = group_id(group);
                req.member_id = s(&m.member_id);
                batches.push(req);
            }
        }
        for req in batches {
            let resp: LeaveGroupResponse = conn
                .request(
                    ApiKey::LeaveGroup,
                    version,
                    &req,
                    self.config.request_timeout,
                )
                .await?;
            let gone = |code: i16| code == 0 || code == codes::UNKNOWN_MEMBER_ID;
            if !gone(resp.error_code) {
                KafkaError::check(resp.error_code, None)?;
            }
            for m in &resp.members {
                if !gone(m.error_code) {
                    KafkaError::check(m.error_code, None)?;
                }
            }
        }
        Ok(())
    }
}
