//! More partitions than one etcd transaction holds (128 operations): the
//! fetcher's progress reports go out in several transactions and every
//! partition still reports, in sync and identical.
//!
//! Broker: librdkafka's mock cluster, because many partitions reporting progress through etcd; no broker behaviour.

use std::time::Duration;

use anyhow::Result;
use cutover_integration_tests::bench::{log_ends, write_source};
use cutover_integration_tests::cutover::{assert_mirrored, progress_documents, Cutover};
use cutover_integration_tests::*;
use cutover_model::PartitionState;

#[test]
fn two_hundred_partitions_all_report_in_sync() -> Result<()> {
    const TOPIC: &str = "wide";
    const N: i32 = 200;
    let bed = Bed::start("scale_partitions")?;
    bed.clusters.create_topic_both(TOPIC, N)?;
    write_source(bed.source_bootstrap(), TOPIC, N, Codec::Lz4, 10, 20, 0)?;
    let started_ms = cutover_model::now_ms();
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[TOPIC])?;
    cutover.wait_in_sync("l1", Duration::from_secs(120))?;

    // `status` lists every partition whether or not it reported: what the
    // fetcher wrote to etcd is the evidence.
    let source_ends =
        tokio::runtime::Runtime::new()?.block_on(log_ends(bed.source_bootstrap(), TOPIC, N))?;
    let docs = progress_documents(bed.etcd_endpoint(), "l1", TOPIC)?;
    let reported: Vec<i32> = docs.keys().copied().collect();
    assert_eq!(
        reported,
        (0..N).collect::<Vec<_>>(),
        "partitions with a progress document"
    );
    for (p, doc) in &docs {
        let source_end = source_ends[*p as usize];
        assert_eq!(source_end, 20, "partition {p} of the source");
        assert!(
            doc.updated_at_ms >= started_ms,
            "partition {p} reported before the test started: {doc:?}"
        );
        assert_eq!(doc.state, PartitionState::InSync, "partition {p}: {doc:?}");
        assert_eq!(doc.source_log_end, source_end, "partition {p}: {doc:?}");
        assert_eq!(doc.target_log_end, source_end, "partition {p}: {doc:?}");
    }
    for p in [0, 127, 128, N - 1] {
        assert_eq!(assert_mirrored(&bed, TOPIC, p)?, 20, "partition {p}");
    }
    Ok(())
}
