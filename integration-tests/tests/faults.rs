//! Faults injected by the mock clusters while the fetcher copies: leader
//! changes, broker outages, request errors and latency, on either cluster.
//!
//! Broker: librdkafka's mock cluster, because fault injection (leader moves, broker outages, request errors, latency) is what the mock makes cheap.

use std::time::Duration;

use anyhow::Result;
use cutover_integration_tests::cutover::{assert_mirrored, wait_until, Cutover, Fetcher};
use cutover_integration_tests::*;

const TOPIC: &str = "faulty";
const N: i32 = 4;

/// Waits until the fetcher has copied more records than now: replication goes on.
fn wait_progress(f: &Fetcher, what: &str) -> Result<()> {
    let before = f.metric_sum("cutover_fetcher_records_total")?;
    wait_until(
        &format!("replication to go on after {what}"),
        Duration::from_secs(60),
        || Ok(f.metric_sum("cutover_fetcher_records_total")? > before),
    )
}

/// Waits until the fetcher has seen more errors than `before`: the fault hit it.
fn wait_error(f: &Fetcher, before: f64, what: &str) -> Result<()> {
    wait_until(
        &format!("{what} to reach the fetcher"),
        Duration::from_secs(30),
        || Ok(f.metric_sum("cutover_fetcher_errors_total")? > before),
    )
}

#[test]
fn replication_recovers_from_faults_on_both_clusters() -> Result<()> {
    let bed = Bed::start("faults")?;
    bed.clusters.create_topic_both(TOPIC, N)?;
    for p in 0..N {
        produce(
            bed.source_bootstrap(),
            TOPIC,
            p,
            3_000,
            &ProduceSpec {
                codec: Codec::Snappy,
                ..ProduceSpec::default()
            },
        )?;
    }
    let mut cutover = Cutover::start(&bed)?;
    // One produce request in flight per partition: the mock does not check
    // idempotent sequence numbers of non-transactional producers, so after
    // an injected failure a pipelined request behind it would be stored at
    // the failed one's offset, where a real broker answers
    // OUT_OF_ORDER_SEQUENCE_NUMBER. (The fetcher detects that and fails the
    // partition rather than writing on; pipelining itself is exercised by
    // the fault-free tests.)
    cutover
        .fetcher_flags
        .extend(["--max-inflight".to_string(), "1".to_string()]);
    cutover.add_fetcher()?;
    cutover.mirror(&bed, "l1", &[TOPIC])?;
    let parts: Vec<(String, i32)> = (0..N).map(|p| (TOPIC.to_string(), p)).collect();
    let spec = ProduceSpec {
        mode: ProduceMode::Idempotent,
        first_seq: 1_000_000,
        timeout: Duration::from_secs(120),
        ..ProduceSpec::default()
    };
    let load = LoadGenerator::start(bed.source_bootstrap(), &parts, 1_000, spec)?;
    let f = &cutover.fetchers[0];
    wait_progress(f, "start")?;

    // Leader changes on the target (3 brokers).
    for p in 0..N {
        bed.clusters.move_leader(Side::Target, TOPIC, p)?;
    }
    wait_progress(f, "target leader changes")?;

    // A target broker down and back.
    let leader = bed.clusters.partition_leader(Side::Target, TOPIC, 0)?;
    let errors = f.metric_sum("cutover_fetcher_errors_total")?;
    bed.clusters.broker_down(Side::Target, leader)?;
    wait_error(f, errors, "target broker down")?;
    bed.clusters.broker_up(Side::Target, leader)?;
    wait_progress(f, "target broker back")?;

    // Request errors on both sides.
    let errors = f.metric_sum("cutover_fetcher_errors_total")?;
    bed.clusters.push_request_errors(
        Side::Target,
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    )?;
    wait_error(f, errors, "produce errors")?;
    let errors = f.metric_sum("cutover_fetcher_errors_total")?;
    bed.clusters.push_request_errors(
        Side::Source,
        RDKafkaApiKey::Fetch,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN,
        ],
    )?;
    wait_error(f, errors, "fetch errors")?;
    wait_progress(f, "request errors")?;

    // Latency on both sides.
    for b in bed.clusters.broker_ids(Side::Target) {
        bed.clusters
            .set_rtt(Side::Target, b, Duration::from_millis(40))?;
    }
    bed.clusters
        .set_rtt(Side::Source, 1, Duration::from_millis(40))?;
    wait_progress(f, "added latency")?;
    for b in bed.clusters.broker_ids(Side::Target) {
        bed.clusters.set_rtt(Side::Target, b, Duration::ZERO)?;
    }
    bed.clusters.set_rtt(Side::Source, 1, Duration::ZERO)?;

    // The source's only broker down and back.
    let errors = f.metric_sum("cutover_fetcher_errors_total")?;
    bed.clusters.broker_down(Side::Source, 1)?;
    wait_error(f, errors, "source broker down")?;
    bed.clusters.broker_up(Side::Source, 1)?;
    wait_progress(f, "source broker back")?;

    let report = load.stop()?;
    assert_eq!(report.total_failed(), 0, "{report:?}");
    cutover.wait_in_sync("l1", Duration::from_secs(120))?;
    for p in 0..N {
        assert_mirrored(&bed, TOPIC, p)?;
    }
    assert_eq!(
        f.metric_sum("cutover_fetcher_produce_rule_violations_total")?,
        0.0
    );
    Ok(())
}

/// Review defect: a non-retriable answer (here an injected
/// MESSAGE_TOO_LARGE on Produce, which the mock makes cheap) stops the
/// partition as FAILED with the broker's error name and what to do,
/// instead of being retried forever while status says SYNCING. Retriable
/// errors are still retried (the test above).
#[test]
fn non_retriable_produce_error_fails_the_partition_with_what_to_do() -> Result<()> {
    const T: &str = "refused";
    let bed = Bed::start("faults_non_retriable")?;
    bed.clusters.create_topic_both(T, 1)?;
    produce(bed.source_bootstrap(), T, 0, 500, &ProduceSpec::default())?;
    let mut cutover = Cutover::start(&bed)?;
    cutover.add_fetcher()?;
    bed.clusters.push_request_errors(
        Side::Target,
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    )?;
    cutover.mirror(&bed, "l1", &[T])?;
    let mut last = serde_json::Value::Null;
    wait_until("the partition to fail", Duration::from_secs(60), || {
        last = cutover.cli_json(&["status", "--link", "l1"])?;
        Ok(last["topics"][0]["partitions"][0]["state"] == "FAILED")
    })?;
    let reason = last["topics"][0]["partitions"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("MESSAGE_TOO_LARGE")
            && reason.contains("max.message.bytes")
            && reason.contains("cutover mirror resume"),
        "{reason}"
    );
    Ok(())
}

/// Review defect: the fetcher's connection cache held its lock across
/// connects, so one link whose cluster accepts connections but never
/// answers (each attempt waits out the Kafka timeout per bootstrap server)
/// stalled every other link of the fetcher, and its balancer with them.
/// Here the dark link's connect would last 120 s; the other link, added
/// while it is under way, must copy everything meanwhile.
#[test]
fn a_link_whose_target_never_answers_does_not_stall_another_link() -> Result<()> {
    const DARK: &str = "dark";
    const LIT: &str = "lit";
    let bed = Bed::start("faults_black_hole")?;
    for t in [DARK, LIT] {
        bed.clusters.create_topic_both(t, 2)?;
        for p in 0..2 {
            produce(bed.source_bootstrap(), t, p, 1_000, &ProduceSpec::default())?;
        }
    }
    let target_broker = bed
        .target_bootstrap()
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    let hole = Blackhole::start(&target_broker)?;
    let mut cutover = Cutover::start(&bed)?;
    // The dark link is created and its mirror added while its target still
    // answers through the black hole, which then goes dark.
    cutover.cli_json(&[
        "link",
        "create",
        DARK,
        "--source",
        bed.source_bootstrap(),
        "--target",
        &hole.addr(),
    ])?;
    cutover.cli_json(&["mirror", "add", "--link", DARK, DARK])?;
    hole.go_dark();
    cutover
        .fetcher_flags
        .extend(["--kafka-timeout-ms".to_string(), "120000".to_string()]);
    cutover.add_fetcher()?;
    // The fetcher owns the dark partitions (their tasks connect right after
    // the claim) and is stuck at the black hole.
    cutover.wait_owners(DARK, Duration::from_secs(30), |o| {
        o.get("fetcher-1") == Some(&2)
    })?;
    wait_until(
        "a connection to the black hole",
        Duration::from_secs(30),
        || Ok(hole.held() > 0),
    )?;

    let started = std::time::Instant::now();
    cutover.mirror(&bed, LIT, &[LIT])?;
    cutover.wait_in_sync(LIT, Duration::from_secs(60))?;
    for p in 0..2 {
        assert_eq!(assert_mirrored(&bed, LIT, p)?, 1_000);
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the lit link waited for the dark one's connect"
    );
    // The dark link is still connecting: nothing of it was copied.
    for p in 0..2 {
        assert_eq!(bed.clusters.watermarks(Side::Target, DARK, p)?.1, 0);
    }
    let f = cutover.fetcher("fetcher-1")?;
    assert_eq!(f.metric_sum("cutover_fetcher_records_total")?, 2_000.0);
    Ok(())
}
