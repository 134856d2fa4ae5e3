//! Internal gRPC API of a router (proto/cutover/v1/router.proto): the
//! holds a promotion puts on a topic's Produce and a group's JoinGroup,
//! the group members it has forwarded, and its state for `cutover status`.

use std::time::Duration;

use cutover_proto::router::v1 as pb;
use pb::router_server::Router as RouterService;
use tonic::{Request, Response, Status};

use crate::holds::{HoldView, Holds};
use crate::router::Holding;
use crate::topics::Topics;
use crate::transactions as txns;

/// Longest produce hold: under the clients' default request timeout
/// (30 s), so no client times a held request out.
pub const MAX_PRODUCE_HOLD: Duration = Duration::from_secs(30);
/// Longest JoinGroup hold: a JoinGroup waits up to the member's rebalance
/// timeout anyway (5 min by default in the Java client).
pub const MAX_JOIN_HOLD: Duration = Duration::from_secs(300);
const DEFAULT_RELEASE_WAIT: Duration = Duration::from_secs(5);

pub struct RouterApi {
    pub node_id: i32,
    pub link: String,
    pub kafka_address: String,
    pub started_at_ms: i64,
    /// Shared with the router's request handling.
    pub holding: Holding,
    pub topics: Topics,
}

fn hold_ms(ms: u32, max: Duration, what: &str) -> Result<Duration, Status> {
    let d = Duration::from_millis(u64::from(ms));
    if d.is_zero() || d > max {
        return Err(Status::invalid_argument(format!(
            "{what} must be between 1 and {} ms",
            max.as_millis()
        )));
    }
    Ok(d)
}

/// A hold's length and how long its drain may take (0: the hold's).
fn hold_and_drain(hold_ms: u32, drain_timeout_ms: u32) -> Result<(Duration, Duration), Status> {
    let hold = self::hold_ms(hold_ms, MAX_PRODUCE_HOLD, "hold_ms")?;
    let drain = match drain_timeout_ms {
        0 => hold,
        ms => Duration::from_millis(u64::from(ms)).min(hold),
    };
    Ok((hold, drain))
}

fn names(keys: Vec<String>, what: &str) -> Result<Vec<String>, Status> {
    if keys.is_empty() || keys.iter().any(String::is_empty) {
        return Err(Status::invalid_argument(format!(
            "name at least one {what}, none empty"
        )));
    }
    Ok(keys)
}

/// The transaction hold keys of AddPartitionsToTxn for `topics` and
/// AddOffsetsToTxn for `groups`.
fn add_keys(topics: &[String], groups: &[String]) -> Vec<String> {
    topics
        .iter()
        .map(|t| txns::add_topic(t))
        .chain(groups.iter().map(|g| txns::add_group(g)))
        .collect()
}

fn commit_keys(groups: &[String]) -> Vec<String> {
    groups.iter().map(|g| txns::commit_group(g)).collect()
}

/// Optional names: none empty.
fn some_names(keys: Vec<String>, what: &str) -> Result<Vec<String>, Status> {
    if keys.iter().any(String::is_empty) {
        return Err(Status::invalid_argument(format!("no {what} may be empty")));
    }
    Ok(keys)
}

fn to_pb(views: Vec<HoldView>) -> Vec<pb::Hold> {
    views
        .into_iter()
        .map(|v| pb::Hold {
            key: v.key,
            waiting: v.waiting,
            in_flight: v.in_flight,
            remaining_ms: v.remaining.as_millis() as u64,
        })
        .collect()
}

fn holds_of(holds: &Holds, keys: &[String]) -> Response<pb::HoldResponse> {
    Response::new(pb::HoldResponse {
        holds: to_pb(holds.view(Some(keys))),
    })
}

#[tonic::async_trait]
impl RouterService for RouterApi {
    async fn hold_produce(
        &self,
        req: Request<pb::HoldProduceRequest>,
    ) -> Result<Response<pb::HoldResponse>, Status> {
        let r = req.into_inner();
        let (hold, drain) = hold_and_drain(r.hold_ms, r.drain_timeout_ms)?;
        let topics = names(r.topics, "topic")?;
        let commits = commit_keys(&some_names(r.groups, "group")?);
        self.holding.produce.hold(&topics, hold);
        self.holding.txns.hold(&commits, hold);
        tracing::info!(topics = ?topics, hold_ms = hold.as_millis() as u64, "produce held");
        let drained = match self.holding.produce.drained(&topics, drain).await {
            Ok(()) => self.holding.txns.drained(&commits, drain).await,
            Err(e) => Err(e),
        };
        if let Err(e) = drained {
            // Nothing half done: the caller sees the hold did not take.
            self.holding.produce.release(&topics);
            self.holding.txns.release(&commits);
            tracing::warn!(error = %e, "produce hold lifted: in-flight writes did not finish");
            return Err(Status::deadline_exceeded(format!(
                "router {}: {e}; the hold is lifted, retry the promotion once the cluster answers",
                self.node_id
            )));
        }
        Ok(holds_of(&self.holding.produce, &topics))
    }

    async fn release_produce(
        &self,
        req: Request<pb::ReleaseProduceRequest>,
    ) -> Result<Response<pb::HoldResponse>, Status> {
        let r = req.into_inner();
        let topics = names(r.topics, "topic")?;
        let groups = some_names(r.groups, "group")?;
        let wait = match r.wait_ms {
            0 => DEFAULT_RELEASE_WAIT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        if let Err(seen) = self.topics.reached(r.after_revision, wait).await {
            return Err(Status::unavailable(format!(
                "router {} has seen the link's mirror topics up to etcd revision {seen}, not yet \
                 {}; the hold stays (until released or its time runs out), retry the release",
                self.node_id, r.after_revision
            )));
        }
        self.holding.produce.release(&topics);
        let mut held = add_keys(&topics, &groups);
        held.extend(commit_keys(&groups));
        self.holding.txns.release(&held);
        tracing::info!(topics = ?topics, groups = ?groups, revision = r.after_revision, "produce released");
        Ok(holds_of(&self.holding.produce, &topics))
    }

    async fn hold_transactions(
        &self,
        req: Request<pb::HoldTransactionsRequest>,
    ) -> Result<Response<pb::HoldResponse>, Status> {
        let r = req.into_inner();
        let (hold, drain) = hold_and_drain(r.hold_ms, r.drain_timeout_ms)?;
        let keys = add_keys(
            &some_names(r.topics, "topic")?,
            &some_names(r.groups, "group")?,
        );
        if keys.is_empty() {
            return Err(Status::invalid_argument("name at least one topic or group"));
        }
        self.holding.txns.hold(&keys, hold);
        tracing::info!(keys = ?keys, hold_ms = hold.as_millis() as u64, "new transactions on the set held");
        if let Err(e) = self.holding.txns.drained(&keys, drain).await {
            self.holding.txns.release(&keys);
            tracing::warn!(error = %e, "transaction hold lifted: requests in flight did not finish");
            return Err(Status::deadline_exceeded(format!(
                "router {}: {e}; the hold is lifted, retry the promotion once the cluster answers",
                self.node_id
            )));
        }
        Ok(holds_of(&self.holding.txns, &keys))
    }

    async fn hold_joins(
        &self,
        req: Request<pb::HoldJoinsRequest>,
    ) -> Result<Response<pb::HoldResponse>, Status> {
        let r = req.into_inner();
        let hold = hold_ms(r.hold_ms, MAX_JOIN_HOLD, "hold_ms")?;
        let groups = names(vec![r.group], "group")?;
        self.holding.joins.hold(&groups, hold);
        tracing::info!(group = %groups[0], hold_ms = hold.as_millis() as u64, "JoinGroups held");
        Ok(holds_of(&self.holding.joins, &groups))
    }

    async fn release_joins(
        &self,
        req: Request<pb::ReleaseJoinsRequest>,
    ) -> Result<Response<pb::HoldResponse>, Status> {
        let groups = names(vec![req.into_inner().group], "group")?;
        self.holding.joins.release(&groups);
        tracing::info!(group = %groups[0], "JoinGroups released");
        Ok(holds_of(&self.holding.joins, &groups))
    }

    async fn list_group_members(
        &self,
        req: Request<pb::ListGroupMembersRequest>,
    ) -> Result<Response<pb::ListGroupMembersResponse>, Status> {
        let r = req.into_inner();
        let group = (!r.group.is_empty()).then_some(r.group.as_str());
        let groups = self
            .holding
            .members
            .list(group)
            .into_iter()
            .map(|(group, members)| pb::GroupMembers {
                group,
                members: members
                    .into_iter()
                    .map(|m| pb::GroupMember {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id.unwrap_or_default(),
                        client_id: m.client_id,
                        client_host: m.client_host,
                        last_seen_ms: m.last_seen_ms,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListGroupMembersResponse { groups }))
    }

    async fn get_state(
        &self,
        _: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::RouterState>, Status> {
        let (groups, members) = self.holding.members.counts();
        Ok(Response::new(pb::RouterState {
            node_id: self.node_id,
            link: self.link.clone(),
            kafka_address: self.kafka_address.clone(),
            started_at_ms: self.started_at_ms,
            produce_holds: to_pb(self.holding.produce.view(None)),
            join_holds: to_pb(self.holding.joins.view(None)),
            transaction_holds: to_pb(self.holding.txns.view(None)),
            groups: groups as u64,
            members: members as u64,
            topics_revision: self.topics.revision(),
        }))
    }
}
