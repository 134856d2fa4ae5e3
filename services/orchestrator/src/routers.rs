//! The routers in front of a link, for status: registered in etcd, each
//! asked over its internal gRPC API what it holds. A router that does not
//! answer is listed with the reason, never left out (a promotion cannot
//! pass a router it cannot reach).

use std::collections::BTreeSet;
use std::time::Duration;

use cutover_model::{keys, RouterMember};
use cutover_proto::router::v1 as rpb;
use cutover_proto::router::v1::router_client::RouterClient;
use cutover_proto::v1 as pb;
use futures::future::join_all;

use crate::error::ApiResult;
use crate::Orchestrator;

/// How long status waits for one router's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

fn holds(h: Vec<rpb::Hold>) -> Vec<pb::RouterHold> {
    h.into_iter()
        .map(|h| pb::RouterHold {
            key: h.key,
            waiting: h.waiting,
            in_flight: h.in_flight,
            remaining_ms: h.remaining_ms,
        })
        .collect()
}

pub type Client = RouterClient<crate::peers::Traced>;

/// A client of `member`'s internal API, carrying the caller's trace;
/// calls time out after `timeout`. `Err` says why it cannot be reached.
pub fn client(member: &RouterMember, timeout: Duration) -> Result<Client, String> {
    if member.grpc_addr.is_empty() {
        return Err("registered without a gRPC address (an older router?)".into());
    }
    let channel = crate::peers::traced_channel(&member.grpc_addr, timeout)?;
    Ok(RouterClient::new(channel))
}

/// A router as messages name it: `router N (host:port)`.
fn named(m: &RouterMember) -> String {
    format!("router {} ({}:{})", m.node_id, m.host, m.port)
}

/// Makes one call of every router in `members` at once; what failed, as
/// `router N (host:port): why`, in `members`' order.
pub async fn call_all<F, Fut, T>(
    members: &[RouterMember],
    timeout: Duration,
    call: F,
) -> Vec<String>
where
    F: Fn(Client) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let calls = members.iter().map(|m| {
        let call = &call;
        async move {
            let c = client(m, timeout)?;
            call(c)
                .await
                .map(|_| ())
                .map_err(|s| crate::peers::failure(&m.grpc_addr, &s))
        }
    });
    members
        .iter()
        .zip(join_all(calls).await)
        .filter_map(|(m, r)| r.err().map(|e| format!("{}: {e}", named(m))))
        .collect()
}

/// What the routers of a link know of one group: the member ids they
/// forwarded requests of, and how many of its JoinGroups they hold now.
#[derive(Debug, Default)]
pub struct GroupView {
    pub routed: BTreeSet<String>,
    pub held: u64,
}

/// Asks every router in `members` about `group`; `Err` names the routers
/// that did not answer (a member could be behind one of them).
pub async fn group_view(members: &[RouterMember], group: &str) -> Result<GroupView, String> {
    let asks = members.iter().map(|m| async move {
        let mut c = client(m, ASK_TIMEOUT)?;
        let failed = |s: tonic::Status| crate::peers::failure(&m.grpc_addr, &s);
        let listed = c
            .list_group_members(rpb::ListGroupMembersRequest {
                group: group.to_owned(),
            })
            .await
            .map_err(failed)?
            .into_inner();
        let state = c
            .get_state(rpb::GetStateRequest {})
            .await
            .map_err(failed)?
            .into_inner();
        Ok::<_, String>((listed, state))
    });
    let mut view = GroupView::default();
    let mut failed = Vec::new();
    for (m, r) in members.iter().zip(join_all(asks).await) {
        match r {
            Ok((listed, state)) => {
                view.routed.extend(
                    listed
                        .groups
                        .into_iter()
                        .filter(|g| g.group == group)
                        .flat_map(|g| g.members)
                        .map(|m| m.member_id),
                );
                view.held += state
                    .join_holds
                    .iter()
                    .filter(|h| h.key == group)
                    .map(|h| h.waiting)
                    .sum::<u64>();
            }
            Err(e) => failed.push(format!("{}: {e}", named(m))),
        }
    }
    if failed.is_empty() {
        Ok(view)
    } else {
        Err(failed.join("; "))
    }
}

/// The routers registered for `link`.
pub async fn members_of(coord: &cutover_coord::Coord, link: &str) -> ApiResult<Vec<RouterMember>> {
    let mut members: Vec<RouterMember> =
        cutover_coord::list_members::<RouterMember>(coord, keys::ROUTER_KIND)
            .await?
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m.link == link)
            .collect();
    members.sort_by_key(|m| m.node_id);
    Ok(members)
}

/// The state `member` reports over gRPC.
async fn ask(member: &RouterMember) -> Result<rpb::RouterState, String> {
    client(member, ASK_TIMEOUT)?
        .get_state(rpb::GetStateRequest {})
        .await
        .map(|r| r.into_inner())
        .map_err(|s| {
            crate::peers::unreachable(&member.grpc_addr, &s)
                .unwrap_or_else(|| format!("its gRPC API answered {:?}: {}", s.code(), s.message()))
        })
}

impl Orchestrator {
    /// The live routers of `link`, by node id, with what each holds.
    pub async fn routers_of(&self, link: &str) -> ApiResult<Vec<pb::RouterStatus>> {
        let members = members_of(&self.coord, link).await?;
        let answers = join_all(members.iter().map(ask)).await;
        let mut out: Vec<pb::RouterStatus> = members
            .into_iter()
            .zip(answers)
            .map(|(m, answer)| {
                let mut s = pb::RouterStatus {
                    node_id: m.node_id,
                    address: format!("{}:{}", m.host, m.port),
                    grpc_address: m.grpc_addr,
                    started_at_ms: m.started_at_ms,
                    ..Default::default()
                };
                match answer {
                    Ok(state) => {
                        s.produce_holds = holds(state.produce_holds);
                        s.join_holds = holds(state.join_holds);
                        s.groups = state.groups;
                        s.members = state.members;
                    }
                    Err(e) => s.error = e,
                }
                s
            })
            .collect();
        out.sort_by_key(|r| r.node_id);
        Ok(out)
    }
}
