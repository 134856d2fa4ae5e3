//! The router on librdkafka's **mock** cluster, for the fault it makes
//! cheap: a partition leader moving on the source under a consumer that
//! reads through the router. Everything that depends on what a real broker
//! does is in `router.rs`.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use cutover_integration_tests::cutover::{metric_samples, Cutover, RouterProcess};
use cutover_integration_tests::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;

const WAIT: Duration = Duration::from_secs(60);

/// The router's metric `name` summed over samples whose labels include
/// every one of `labels`.
fn metric(router: &RouterProcess, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let text = http_get(
        &format!("http://{}/metrics", router.http),
        Duration::from_secs(5),
    )?
    .body;
    Ok(metric_samples(&text, name)
        .into_iter()
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum())
}

/// A leader move on the source under reads through the router is absorbed:
/// the router sends the moved partition's Fetch and ListOffsets to the new
/// leader itself (its metric shows it met the move), the client is never
/// answered NOT_LEADER_OR_FOLLOWER for it, and the consumer reads every
/// record once, in order.
#[test]
fn router_sends_reads_to_the_new_leader_when_a_source_leader_moves() -> Result<()> {
    const T: &str = "moving-leader";
    let bed = Bed::start_with("router_leader_move", 3, 1)?;
    bed.clusters.create_topic(Side::Source, T, 1)?;
    let cutover = Cutover::start(&bed)?;
    cutover.create_link(&bed, "l1", &[])?;
    let router = cutover.start_router(1, "l1")?;
    let spec = ProduceSpec::default();
    let first = produce(bed.source_bootstrap(), T, 0, 100, &spec)?;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &router.kafka)
        .set("group.id", "leader-move")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "100")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(T, 0, rdkafka::Offset::Offset(0))?;
    consumer.assign(&tpl)?;
    ensure!(poll_values(&consumer, 100, WAIT)? == produced_values(&first.records));

    let moved_to = bed.clusters.move_leader(Side::Source, T, 0)?;
    let second = produce(
        bed.source_bootstrap(),
        T,
        0,
        100,
        &ProduceSpec {
            first_seq: 1_000,
            ..spec.clone()
        },
    )?;
    ensure!(second.first_offset() == Some(100));
    ensure!(
        poll_values(&consumer, 100, WAIT)? == produced_values(&second.records),
        "after the move to broker {moved_to}"
    );
    let (low, high) = consumer
        .fetch_watermarks(T, 0, Duration::from_secs(10))
        .context("ListOffsets through the router after the move")?;
    ensure!((low, high) == (0, 200), "{low}..{high}");

    let retried = metric(
        &router,
        "cutover_router_upstream_retries_total",
        &[("api", "Fetch")],
    )?;
    ensure!(
        retried >= 1.0,
        "the router never met the leader move upstream"
    );
    for api in ["Fetch", "ListOffsets"] {
        let answered = metric(
            &router,
            "cutover_router_errors_total",
            &[("api", api), ("error", "NOT_LEADER_OR_FOLLOWER")],
        )?;
        ensure!(
            answered == 0.0,
            "{api} answered NOT_LEADER_OR_FOLLOWER {answered} times"
        );
    }
    Ok(())
}
