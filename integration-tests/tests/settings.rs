//! A mirror's target topic settings change (as the orchestrator's sync
//! records when the target topic's configs change): the fetcher restarts
//! the partitions with them, and what it writes from then on follows them.
//!
//! Broker: librdkafka's mock cluster, because the fetcher's reaction to changed settings in etcd; no broker behaviour.

use std::time::Duration;

use anyhow::{Context as _, Result};
use cutover_coord::{Coord, CoordConfig};
use cutover_integration_tests::bench::batch_headers;
use cutover_integration_tests::cutover::{assert_mirrored, wait_until, Cutover};
use cutover_integration_tests::*;
use cutover_model::{keys, MirrorTopic};
use cutover_records::batch::BatchHeader;

const CODEC_MASK: i16 = 0x7;
const LZ4: i16 = 3;

#[test]
fn changed_target_settings_restart_partitions_with_them() -> Result<()> {
    const T: &str = "shaped";
    let bed = Bed::start("settings_change")?;
    bed.clusters.create_topic_both(T, 2)?;
    for p in 0..2 {
        produce(bed.source_bootstrap(), T, p, 300, &ProduceSpec::default())?;
    }
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[T])?;
    cutover.wait_in_sync("l1", Duration::from_secs(60))?;
    let rt = tokio::runtime::Runtime::new()?;
    let before = rt.block_on(batch_headers(bed.target_bootstrap(), T, 0))?;
    assert!(
        before.iter().all(|h| h.attributes & CODEC_MASK == 0),
        "uncompressed source, topic codec `producer`: batches stay uncompressed"
    );

    // The target topic now says compression.type=lz4.
    rt.block_on(async {
        let coord = Coord::connect(CoordConfig {
            endpoints: vec![bed.etcd_endpoint().to_string()],
            ..CoordConfig::default()
        })
        .await?;
        let key = keys::mirror("l1", T);
        let current = coord
            .get::<MirrorTopic>(&key)
            .await?
            .context("mirror document")?;
        let mut m = current.value;
        m.target.compression_type = "lz4".into();
        anyhow::ensure!(
            coord.update(&key, &m, current.mod_revision).await?,
            "mirror document changed meanwhile"
        );
        anyhow::Ok(())
    })?;
    let fetcher = cutover.fetcher("fetcher-1")?;
    wait_until("both partitions restarted", Duration::from_secs(30), || {
        Ok(fetcher
            .process
            .log_tail(400)
            .matches("target topic settings or copy direction changed; restarting the partition")
            .count()
            >= 2)
    })?;

    for p in 0..2 {
        produce(
            bed.source_bootstrap(),
            T,
            p,
            300,
            &ProduceSpec {
                first_seq: 300,
                ..ProduceSpec::default()
            },
        )?;
    }
    cutover.wait_in_sync("l1", Duration::from_secs(60))?;
    for p in 0..2 {
        let headers = rt.block_on(batch_headers(bed.target_bootstrap(), T, p))?;
        let (old, new): (Vec<&BatchHeader>, Vec<&BatchHeader>) =
            headers.iter().partition(|h| h.base_offset < 300);
        assert!(!new.is_empty(), "nothing written after the change");
        assert!(
            old.iter().all(|h| h.attributes & CODEC_MASK == 0),
            "batches written before the change were rewritten?"
        );
        assert!(
            new.iter().all(|h| h.attributes & CODEC_MASK == LZ4),
            "partition {p}: batches after the change are not lz4: {:?}",
            new.iter().map(|h| h.attributes).collect::<Vec<_>>()
        );
        assert_eq!(assert_mirrored(&bed, T, p)?, 600);
    }
    Ok(())
}
