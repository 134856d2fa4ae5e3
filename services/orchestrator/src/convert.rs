//! Conversions between the stored model and the public API messages.

use cutover_model as m;
use cutover_proto::v1 as pb;

pub fn link_to_pb(l: &m::Link, mirror_count: u32) -> pb::Link {
    pb::Link {
        name: l.name.clone(),
        source: Some(cluster_to_pb(&l.source)),
        target: Some(cluster_to_pb(&l.target)),
        options: Some(pb::LinkOptions {
            bandwidth_limit_bytes_per_sec: l.options.bandwidth_limit_bytes_per_sec,
        }),
        created_at_ms: l.created_at_ms,
        mirror_count,
    }
}

fn cluster_to_pb(c: &m::ClusterSpec) -> pb::ClusterSpec {
    pb::ClusterSpec {
        bootstrap_servers: c.bootstrap_servers.clone(),
        properties: c.properties.clone().into_iter().collect(),
    }
}

pub fn cluster_from_pb(c: Option<pb::ClusterSpec>) -> m::ClusterSpec {
    let c = c.unwrap_or_default();
    m::ClusterSpec {
        bootstrap_servers: c
            .bootstrap_servers
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        properties: c.properties.into_iter().collect(),
    }
}

pub fn mirror_state_to_pb(s: m::MirrorState) -> pb::MirrorState {
    match s {
        m::MirrorState::Mirroring => pb::MirrorState::Mirroring,
        m::MirrorState::Paused => pb::MirrorState::Paused,
        m::MirrorState::Promoting => pb::MirrorState::Promoting,
        m::MirrorState::Promoted => pb::MirrorState::Promoted,
        m::MirrorState::Demoting => pb::MirrorState::Demoting,
        m::MirrorState::Failed => pb::MirrorState::Failed,
        m::MirrorState::Detached => pb::MirrorState::Detached,
    }
}

pub fn promotion_to_pb(p: &m::Promotion) -> pb::Promotion {
    pb::Promotion {
        id: p.id.clone(),
        link: p.link.clone(),
        direction: p.direction.name().into(),
        topics: p.topics.clone(),
        step: p.step.name().into(),
        steps: p
            .steps
            .iter()
            .map(|s| pb::PromotionStep {
                step: s.step.name().into(),
                started_at_ms: s.started_at_ms,
                took_ms: s.took_ms,
            })
            .collect(),
        leader: p.leader.clone(),
        started_at_ms: p.started_at_ms,
        outcome: p.outcome.clone(),
        stall_ms: p.stall_ms,
        groups: p.groups.clone(),
    }
}

pub fn group_to_pb(g: &m::MirrorGroup) -> pb::MirrorGroup {
    pb::MirrorGroup {
        link: g.link.clone(),
        group: g.group.clone(),
        state: mirror_state_to_pb(g.state) as i32,
        auto_promote: g.auto_promote,
        switches: g.switches,
        created_at_ms: g.created_at_ms,
        home: g.home().name().into(),
        ..Default::default()
    }
}

/// A group with what a promotion of it would meet now.
pub fn group_evidence_to_pb(
    g: &m::MirrorGroup,
    e: &crate::groups::Evidence,
    owner: Option<String>,
) -> pb::MirrorGroup {
    pb::MirrorGroup {
        members: e
            .members
            .iter()
            .map(|(m, through_router)| pb::GroupMemberStatus {
                member_id: m.member_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                through_router: *through_router,
            })
            .collect(),
        decision: e.decision.clone(),
        ready: e.ready,
        owner: owner.unwrap_or_default(),
        ..group_to_pb(g)
    }
}

pub fn mirror_to_pb(t: &m::MirrorTopic) -> pb::MirrorTopic {
    pb::MirrorTopic {
        link: t.link.clone(),
        topic: t.topic.clone(),
        partitions: t.partitions,
        state: mirror_state_to_pb(t.state) as i32,
        reason: t.reason.clone(),
        created_at_ms: t.created_at_ms,
    }
}

pub fn partition_state_to_pb(s: m::PartitionState) -> pb::PartitionState {
    match s {
        m::PartitionState::Syncing => pb::PartitionState::Syncing,
        m::PartitionState::InSync => pb::PartitionState::InSync,
        m::PartitionState::Paused => pb::PartitionState::PartitionPaused,
        m::PartitionState::Failed => pb::PartitionState::PartitionFailed,
    }
}
