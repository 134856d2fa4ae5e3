//! The public gRPC API (proto/cutover/v1/orchestrator.proto).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cutover_model::{Direction, LinkOptions, MirrorState};
use cutover_proto::v1 as pb;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::convert::{
    cluster_from_pb, group_evidence_to_pb, group_to_pb, link_to_pb, mirror_to_pb, promotion_to_pb,
};
use crate::group_sync::SyncGroups;
use crate::groups::AddGroups;
use crate::mirrors::AddMirrors;
use crate::promote::PromoteOptions;
use crate::Orchestrator;

pub struct Api(pub Arc<Orchestrator>);

type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::StatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::orchestrator_server::Orchestrator for Api {
    async fn create_link(
        &self,
        req: Request<pb::CreateLinkRequest>,
    ) -> Result<Response<pb::Link>, Status> {
        let r = req.into_inner();
        let options = LinkOptions {
            bandwidth_limit_bytes_per_sec: r
                .options
                .map(|o| o.bandwidth_limit_bytes_per_sec)
                .unwrap_or(0),
        };
        let link = self
            .0
            .create_link(
                r.name,
                cluster_from_pb(r.source),
                cluster_from_pb(r.target),
                options,
            )
            .await?;
        Ok(Response::new(link_to_pb(&link, 0)))
    }

    async fn get_link(
        &self,
        req: Request<pb::GetLinkRequest>,
    ) -> Result<Response<pb::Link>, Status> {
        let name = req.into_inner().name;
        let link = self.0.get_link(&name).await?;
        let n = self.0.mirrors_of(&name).await?.len() as u32;
        Ok(Response::new(link_to_pb(&link, n)))
    }

    async fn list_links(
        &self,
        _: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::ListLinksResponse>, Status> {
        let mut links = Vec::new();
        for l in self.0.list_links().await? {
            let n = self.0.mirrors_of(&l.name).await?.len() as u32;
            links.push(link_to_pb(&l, n));
        }
        Ok(Response::new(pb::ListLinksResponse { links }))
    }

    async fn delete_link(
        &self,
        req: Request<pb::DeleteLinkRequest>,
    ) -> Result<Response<pb::DeleteLinkResponse>, Status> {
        self.0.delete_link(&req.into_inner().name).await?;
        Ok(Response::new(pb::DeleteLinkResponse {}))
    }

    async fn add_mirrors(
        &self,
        req: Request<pb::AddMirrorsRequest>,
    ) -> Result<Response<pb::AddMirrorsResponse>, Status> {
        let r = req.into_inner();
        let dry_run = r.dry_run;
        let added = self
            .0
            .add_mirrors(AddMirrors {
                link: r.link,
                topics: r.topics,
                include_regex: r.include_regex,
                exclude_regex: r.exclude_regex,
                dry_run,
            })
            .await?;
        Ok(Response::new(pb::AddMirrorsResponse {
            added: added.iter().map(mirror_to_pb).collect(),
            dry_run,
        }))
    }

    async fn list_mirrors(
        &self,
        req: Request<pb::ListMirrorsRequest>,
    ) -> Result<Response<pb::ListMirrorsResponse>, Status> {
        let link = req.into_inner().link;
        self.0.get_link(&link).await?;
        let mirrors = self.0.mirrors_of(&link).await?;
        Ok(Response::new(pb::ListMirrorsResponse {
            mirrors: mirrors.iter().map(mirror_to_pb).collect(),
        }))
    }

    async fn pause_mirrors(
        &self,
        req: Request<pb::MirrorSelection>,
    ) -> Result<Response<pb::MirrorsChanged>, Status> {
        let r = req.into_inner();
        let m = self
            .0
            .set_mirror_state(&r.link, &r.topics, r.all, MirrorState::Paused)
            .await?;
        Ok(Response::new(pb::MirrorsChanged {
            mirrors: m.iter().map(mirror_to_pb).collect(),
        }))
    }

    async fn resume_mirrors(
        &self,
        req: Request<pb::MirrorSelection>,
    ) -> Result<Response<pb::MirrorsChanged>, Status> {
        let r = req.into_inner();
        let m = self
            .0
            .set_mirror_state(&r.link, &r.topics, r.all, MirrorState::Mirroring)
            .await?;
        Ok(Response::new(pb::MirrorsChanged {
            mirrors: m.iter().map(mirror_to_pb).collect(),
        }))
    }

    async fn remove_mirrors(
        &self,
        req: Request<pb::MirrorSelection>,
    ) -> Result<Response<pb::MirrorsChanged>, Status> {
        let r = req.into_inner();
        let m = self
            .0
            .remove_mirrors(&r.link, &r.topics, r.all, r.force)
            .await?;
        Ok(Response::new(pb::MirrorsChanged {
            mirrors: m.iter().map(mirror_to_pb).collect(),
        }))
    }

    async fn add_groups(
        &self,
        req: Request<pb::AddGroupsRequest>,
    ) -> Result<Response<pb::AddGroupsResponse>, Status> {
        let r = req.into_inner();
        let dry_run = r.dry_run;
        let added = self
            .0
            .add_groups(AddGroups {
                link: r.link,
                groups: r.groups,
                include_regex: r.include_regex,
                exclude_regex: r.exclude_regex,
                manual: r.manual,
                dry_run,
            })
            .await?;
        Ok(Response::new(pb::AddGroupsResponse {
            added: added.iter().map(group_to_pb).collect(),
            dry_run,
        }))
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let link = self.0.get_link(&req.into_inner().link).await?;
        let groups = self.0.groups_with_evidence(&link).await?;
        Ok(Response::new(pb::ListGroupsResponse {
            groups: groups
                .into_iter()
                .map(|(g, e, owner)| group_evidence_to_pb(&g, &e, owner))
                .collect(),
        }))
    }

    async fn remove_groups(
        &self,
        req: Request<pb::GroupSelection>,
    ) -> Result<Response<pb::GroupsChanged>, Status> {
        let r = req.into_inner();
        let g = self.0.remove_groups(&r.link, &r.groups, r.all).await?;
        Ok(Response::new(pb::GroupsChanged {
            groups: g.iter().map(group_to_pb).collect(),
        }))
    }

    async fn sync_group_offsets(
        &self,
        req: Request<pb::SyncGroupOffsetsRequest>,
    ) -> Result<Response<pb::SyncGroupOffsetsResponse>, Status> {
        let r = req.into_inner();
        let dry_run = r.dry_run;
        let synced = self
            .0
            .sync_group_offsets(SyncGroups {
                link: r.link,
                groups: r.groups,
                allow_active: r.allow_active,
                dry_run,
            })
            .await?;
        Ok(Response::new(pb::SyncGroupOffsetsResponse {
            groups: synced
                .into_iter()
                .map(|g| pb::SyncedGroup {
                    group: g.group,
                    partitions: g.partitions as u32,
                    source_members: g.source_members,
                })
                .collect(),
            dry_run,
        }))
    }

    async fn get_status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(self.0.status(&r.link, &r.topics).await?))
    }

    type WatchStatusStream = StatusStream;

    async fn watch_status(
        &self,
        req: Request<pb::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let r = req.into_inner();
        let inner = r
            .request
            .ok_or_else(|| Status::invalid_argument("request is required"))?;
        let interval = Duration::from_millis(if r.interval_ms == 0 {
            1000
        } else {
            r.interval_ms.max(100)
        } as u64);
        // Fail fast on an unknown link or topic instead of streaming errors.
        let first = self.0.status(&inner.link, &inner.topics).await?;
        let orch = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = orch.shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let item = orch
                    .status(&inner.link, &inner.topics)
                    .await
                    .map_err(Status::from);
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn verify(
        &self,
        req: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        Ok(Response::new(self.0.verify(req.into_inner()).await?))
    }

    async fn promote(
        &self,
        req: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::Promotion>, Status> {
        self.moved(Direction::Promote, req.into_inner()).await
    }

    async fn rollback(
        &self,
        req: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::Promotion>, Status> {
        self.moved(Direction::Rollback, req.into_inner()).await
    }

    async fn detach(
        &self,
        req: Request<pb::DetachRequest>,
    ) -> Result<Response<pb::MirrorsChanged>, Status> {
        let r = req.into_inner();
        if r.watch_ms > 30_000 {
            return Err(Status::invalid_argument(format!(
                "watch_ms is {}; at most 30000",
                r.watch_ms
            )));
        }
        let watch = Duration::from_millis(if r.watch_ms == 0 {
            2_000
        } else {
            u64::from(r.watch_ms)
        });
        let s = r.selection.unwrap_or_default();
        let m = self.0.detach(&s.link, &s.topics, s.all, watch).await?;
        Ok(Response::new(pb::MirrorsChanged {
            mirrors: m.iter().map(mirror_to_pb).collect(),
        }))
    }

    async fn list_promotions(
        &self,
        req: Request<pb::ListPromotionsRequest>,
    ) -> Result<Response<pb::ListPromotionsResponse>, Status> {
        let ps = self.0.list_promotions(&req.into_inner().link).await?;
        Ok(Response::new(pb::ListPromotionsResponse {
            promotions: ps.iter().map(promotion_to_pb).collect(),
        }))
    }
}

impl Api {
    async fn moved(
        &self,
        direction: Direction,
        r: pb::PromoteRequest,
    ) -> Result<Response<pb::Promotion>, Status> {
        let mut opts = PromoteOptions::new(
            r.quiet_ms,
            r.drain_timeout_ms,
            r.transaction_wait_ms,
            r.rejoin_timeout_ms,
        )?;
        opts.verify = r.verify;
        let p = self
            .0
            .promote(direction, r.link, r.topics, r.groups, opts)
            .await?;
        Ok(Response::new(promotion_to_pb(&p)))
    }
}
