//! The fetcher's internal gRPC API (what topic promotion will call).
//!
//! Broker: librdkafka's mock cluster, because the fetcher's gRPC API does not depend on broker behaviour.

use anyhow::Result;
use cutover_integration_tests::cutover::Cutover;
use cutover_integration_tests::*;
use cutover_proto::fetcher::v1 as pb;
use pb::fetcher_client::FetcherClient;

#[test]
fn wait_for_offset_and_progress_answer_with_the_right_codes() -> Result<()> {
    const T: &str = "api";
    let bed = Bed::start("fetcher_api")?;
    bed.clusters.create_topic_both(T, 2)?;
    produce(bed.source_bootstrap(), T, 0, 1_000, &ProduceSpec::default())?;
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[T])?;
    cutover.wait_owners("l1", std::time::Duration::from_secs(30), |o| {
        o.get("fetcher-1") == Some(&2)
    })?;
    let grpc = format!("http://{}", cutover.fetchers[0].grpc);

    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut c = FetcherClient::connect(grpc).await?;
        let req = |partition: i32, offset: i64, timeout_ms: u32| pb::WaitForOffsetRequest {
            link: "l1".into(),
            topic: T.into(),
            partition,
            offset,
            timeout_ms,
            reverse: false,
        };
        // Returns once the target holds the offset (here: everything written).
        let r = c.wait_for_offset(req(0, 1_000, 30_000)).await?.into_inner();
        assert!(r.target_log_end >= 1_000, "{r:?}");

        let e = c
            .wait_for_offset(req(0, 1_000_000, 300))
            .await
            .expect_err("cannot reach that offset");
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
        assert!(e.message().contains("1000000"), "{}", e.message());

        let e = c
            .wait_for_offset(req(0, 1, 0))
            .await
            .expect_err("zero timeout");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);

        let e = c
            .wait_for_offset(pb::WaitForOffsetRequest {
                topic: "other".into(),
                ..req(0, 1, 100)
            })
            .await
            .expect_err("not owned here");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

        // The partition copies forward: a wait on the reverse copy is refused
        // (the caller retries once the mirror turned), never answered from
        // the forward copy's offsets.
        let e = c
            .wait_for_offset(pb::WaitForOffsetRequest {
                reverse: true,
                ..req(0, 1, 100)
            })
            .await
            .expect_err("copies the other way");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");

        let p = c
            .get_progress(pb::GetProgressRequest {})
            .await?
            .into_inner();
        assert_eq!(p.fetcher_id, "fetcher-1");
        let p0 = p
            .partitions
            .iter()
            .find(|p| p.topic == T && p.partition == 0)
            .expect("partition 0 in progress");
        assert_eq!(p0.target_log_end, 1_000);
        assert_eq!(p0.records_copied, 1_000);
        assert_eq!(p0.direction, "forward", "{p0:?}");
        assert_eq!(p.partitions.len(), 2, "{p:?}");
        anyhow::Ok(())
    })?;
    Ok(())
}
