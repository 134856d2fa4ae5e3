//! Status of mirror topics, assembled from etcd: mirror documents, progress
//! published by fetchers, ownership, and recorded failures.

use std::collections::HashMap;

use cutover_model::{keys, MirrorState, PartitionFailure, PartitionProgress};
use cutover_proto::v1 as pb;

use crate::convert::{mirror_state_to_pb, partition_state_to_pb};
use crate::error::{ApiError, ApiResult};
use crate::Orchestrator;

impl Orchestrator {
    pub async fn status(&self, link: &str, topics: &[String]) -> ApiResult<pb::StatusResponse> {
        self.get_link(link).await?;
        let mirrors = self.mirrors_of(link).await?;
        for t in topics {
            if !mirrors.iter().any(|m| &m.topic == t) {
                return Err(ApiError::NotFound {
                    what: "mirror topic",
                    name: format!("{link}/{t}"),
                });
            }
        }
        let owners = cutover_coord::owners(&self.coord, &keys::fetch_resources_of(link)).await?;
        let mut out = Vec::new();
        for m in mirrors
            .into_iter()
            .filter(|m| topics.is_empty() || topics.contains(&m.topic))
        {
            let progress: HashMap<i32, PartitionProgress> = self
                .coord
                .list::<PartitionProgress>(&keys::progress_of(link, &m.topic))
                .await?
                .into_iter()
                .map(|(_, v)| (v.value.partition, v.value))
                .collect();
            let failures: HashMap<String, PartitionFailure> = self
                .coord
                .list::<PartitionFailure>(&keys::failures_of(link, &m.topic))
                .await?
                .into_iter()
                .map(|(k, v)| (k, v.value))
                .collect();
            let mut partitions = Vec::with_capacity(m.partitions as usize);
            let mut total_lag = 0;
            for p in 0..m.partitions {
                let owner = owners
                    .get(&keys::fetch_resource(link, &m.topic, p))
                    .cloned()
                    .unwrap_or_default();
                let failure = failures.get(&keys::failure(link, &m.topic, p));
                let mut ps = pb::PartitionStatus {
                    partition: p,
                    owner: owner.clone(),
                    ..Default::default()
                };
                if let Some(pp) = progress.get(&p) {
                    ps.source_log_start = pp.source_log_start;
                    ps.source_log_end = pp.source_log_end;
                    ps.target_log_end = pp.target_log_end;
                    ps.lag = pp.lag();
                    ps.lost = pp
                        .lost
                        .iter()
                        .map(|r| pb::OffsetRange {
                            from: r.from,
                            to: r.to,
                        })
                        .collect();
                    ps.error = pp.error.clone();
                    ps.updated_at_ms = pp.updated_at_ms;
                    ps.bytes_copied = pp.bytes_copied;
                    ps.records_copied = pp.records_copied;
                    ps.direction = pp.direction.name().to_owned();
                    ps.state = partition_state_to_pb(pp.state) as i32;
                }
                ps.state = if let Some(f) = failure {
                    ps.error = f.reason.clone();
                    pb::PartitionState::PartitionFailed as i32
                } else if m.state == MirrorState::Paused {
                    pb::PartitionState::PartitionPaused as i32
                } else if owner.is_empty() {
                    pb::PartitionState::Unassigned as i32
                } else if ps.state == 0
                    || (ps.state == pb::PartitionState::InSync as i32 && ps.lag > 0)
                {
                    // In sync means nothing left to copy as of the last report.
                    pb::PartitionState::Syncing as i32
                } else {
                    ps.state
                };
                total_lag += ps.lag;
                partitions.push(ps);
            }
            out.push(pb::TopicStatus {
                link: link.to_string(),
                topic: m.topic.clone(),
                state: mirror_state_to_pb(m.state) as i32,
                reason: m.reason.clone(),
                partitions,
                total_lag,
            });
        }
        Ok(pb::StatusResponse {
            topics: out,
            at_ms: cutover_model::now_ms(),
            routers: self.routers_of(link).await?,
        })
    }
}
