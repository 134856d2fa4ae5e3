//! More partitions than one etcd transaction holds (128 operations): the
//! fetcher's progress reports go out in several transactions and every
//! partition still reports, in sync and identical.
//!
//! Broker: librdkafka's mock cluster, because many partitions reporting progress through etcd; no broker behaviour.

use std::time::Duration;

use anyhow::Result;
use cutover_integration_tests::bench::write_source;
use cutover_integration_tests::cutover::{assert_mirrored, Cutover};
use cutover_integration_tests::*;

#[test]
fn two_hundred_partitions_all_report_in_sync() -> Result<()> {
    const TOPIC: &str = "wide";
    const N: i32 = 200;
    let bed = Bed::start("scale_partitions")?;
    bed.clusters.create_topic_both(TOPIC, N)?;
    write_source(bed.source_bootstrap(), TOPIC, N, Codec::Lz4, 10, 20, 0)?;
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[TOPIC])?;
    let status = cutover.wait_in_sync("l1", Duration::from_secs(120))?;
    let reported = status["topics"][0]["partitions"]
        .as_array()
        .map_or(0, |ps| ps.len());
    assert_eq!(reported, N as usize, "partitions in status");
    for p in [0, 127, 128, N - 1] {
        assert_eq!(assert_mirrored(&bed, TOPIC, p)?, 20, "partition {p}");
    }
    Ok(())
}
