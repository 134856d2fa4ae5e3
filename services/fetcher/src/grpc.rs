//! Internal gRPC API of a fetcher (proto/cutover/v1/fetcher.proto).

use std::time::Duration;

use cutover_proto::fetcher::v1 as pb;
use pb::fetcher_server::Fetcher;
use tonic::{Request, Response, Status};

use crate::progress::{PartitionKey, ProgressBoard};
use cutover_model::CopyDirection;

pub struct FetcherApi {
    pub id: String,
    pub board: ProgressBoard,
}

#[tonic::async_trait]
impl Fetcher for FetcherApi {
    async fn get_progress(
        &self,
        _: Request<pb::GetProgressRequest>,
    ) -> Result<Response<pb::GetProgressResponse>, Status> {
        let partitions = self
            .board
            .snapshot()
            .into_iter()
            .map(|p| pb::PartitionProgress {
                link: p.link,
                topic: p.topic,
                partition: p.partition,
                source_log_start: p.source_log_start,
                source_log_end: p.source_log_end,
                target_log_end: p.target_log_end,
                state: format!("{:?}", p.state),
                error: p.error,
                bytes_copied: p.bytes_copied,
                records_copied: p.records_copied,
                direction: p.direction.name().to_owned(),
            })
            .collect();
        Ok(Response::new(pb::GetProgressResponse {
            fetcher_id: self.id.clone(),
            partitions,
        }))
    }

    async fn wait_for_offset(
        &self,
        req: Request<pb::WaitForOffsetRequest>,
    ) -> Result<Response<pb::WaitForOffsetResponse>, Status> {
        let r = req.into_inner();
        if r.timeout_ms == 0 {
            return Err(Status::invalid_argument("timeout_ms must be > 0"));
        }
        let key = PartitionKey {
            link: r.link,
            topic: r.topic,
            partition: r.partition,
        };
        let (mut rx, direction) = self.board.subscribe(&key).ok_or_else(|| {
            Status::failed_precondition(format!(
                "fetcher {} does not own {key}; ask its owner (see status)",
                self.id
            ))
        })?;
        let wanted = if r.reverse {
            CopyDirection::Reverse
        } else {
            CopyDirection::Forward
        };
        if direction != wanted {
            // Its direction turns when the fetcher sees the switch in
            // etcd: asking again shortly finds it turned.
            return Err(Status::unavailable(format!(
                "fetcher {} copies {key} {}, not {} yet; ask again",
                self.id,
                direction.name(),
                wanted.name()
            )));
        }
        let outcome = tokio::time::timeout(Duration::from_millis(r.timeout_ms as u64), async {
            rx.wait_for(|end| *end >= r.offset).await.map(|end| *end)
        })
        .await;
        match outcome {
            Ok(Ok(end)) => Ok(Response::new(pb::WaitForOffsetResponse {
                target_log_end: end,
            })),
            Ok(Err(_)) => Err(Status::unavailable(format!(
                "{key} was released by this fetcher while waiting; retry on its new owner"
            ))),
            Err(_) => {
                let now = *rx.borrow();
                Err(Status::deadline_exceeded(format!(
                    "{key} did not reach offset {} within {} ms (now at {now})",
                    r.offset, r.timeout_ms
                )))
            }
        }
    }
}
