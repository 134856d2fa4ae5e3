//! The routers' internal gRPC API from a test (holds, group members,
//! state), as the orchestrator and the group-coordinator call it, on
//! blocking calls.

use anyhow::{Context as _, Result};
use cutover_proto::router::v1 as pb;
use cutover_proto::router::v1::router_client::RouterClient;

use crate::cutover::RouterProcess;

/// The call's answer or its gRPC status; `Err` when the router could not
/// be reached at all.
fn try_call<T, F>(
    router: &RouterProcess,
    f: impl FnOnce(RouterClient<tonic::transport::Channel>) -> F,
) -> Result<Result<T, tonic::Status>>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = RouterClient::connect(format!("http://{}", router.grpc))
            .await
            .with_context(|| format!("router {} gRPC at {}", router.node_id, router.grpc))?;
        Ok(f(client).await.map(tonic::Response::into_inner))
    })
}

fn call<T, F>(
    router: &RouterProcess,
    f: impl FnOnce(RouterClient<tonic::transport::Channel>) -> F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    try_call(router, f)?
        .map_err(|s| anyhow::anyhow!("router {}: {:?}: {}", router.node_id, s.code(), s.message()))
}

/// HoldProduce on `router`; returns once its in-flight writes are answered.
pub fn hold_produce(
    router: &RouterProcess,
    topics: &[&str],
    hold_ms: u32,
) -> Result<pb::HoldResponse> {
    let req = pb::HoldProduceRequest {
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        hold_ms,
        drain_timeout_ms: 0,
        groups: Vec::new(),
    };
    call(router, |mut c| async move { c.hold_produce(req).await })
}

/// ReleaseProduce on `router` once it has seen etcd revision `after_revision`.
pub fn release_produce(
    router: &RouterProcess,
    topics: &[&str],
    after_revision: i64,
) -> Result<pb::HoldResponse> {
    let req = pb::ReleaseProduceRequest {
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        after_revision,
        wait_ms: 0,
        groups: Vec::new(),
    };
    call(router, |mut c| async move { c.release_produce(req).await })
}

pub fn hold_joins(router: &RouterProcess, group: &str, hold_ms: u32) -> Result<pb::HoldResponse> {
    let req = pb::HoldJoinsRequest {
        group: group.to_owned(),
        hold_ms,
    };
    call(router, |mut c| async move { c.hold_joins(req).await })
}

pub fn release_joins(router: &RouterProcess, group: &str) -> Result<pb::HoldResponse> {
    let req = pb::ReleaseJoinsRequest {
        group: group.to_owned(),
    };
    call(router, |mut c| async move { c.release_joins(req).await })
}

/// The members of `group` the router has forwarded.
pub fn group_members(router: &RouterProcess, group: &str) -> Result<Vec<pb::GroupMember>> {
    let req = pb::ListGroupMembersRequest {
        group: group.to_owned(),
    };
    let r = call(
        router,
        |mut c| async move { c.list_group_members(req).await },
    )?;
    Ok(r.groups.into_iter().flat_map(|g| g.members).collect())
}

pub fn state(router: &RouterProcess) -> Result<pb::RouterState> {
    call(router, |mut c| async move {
        c.get_state(pb::GetStateRequest {}).await
    })
}

/// HoldProduce as sent, answered or refused.
pub fn try_hold_produce(
    router: &RouterProcess,
    req: pb::HoldProduceRequest,
) -> Result<Result<pb::HoldResponse, tonic::Status>> {
    try_call(router, |mut c| async move { c.hold_produce(req).await })
}

/// ReleaseProduce as sent, answered or refused.
pub fn try_release_produce(
    router: &RouterProcess,
    req: pb::ReleaseProduceRequest,
) -> Result<Result<pb::HoldResponse, tonic::Status>> {
    try_call(router, |mut c| async move { c.release_produce(req).await })
}
