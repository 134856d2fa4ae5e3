//! The router on **real Apache Kafka**: clients pointed at routers see the
//! routers as the cluster, their writes land on the source at the offsets
//! the router returned, group membership and commits reach the source's
//! coordinator, and bad input closes one connection only. The clusters are
//! shared by the tests of this file (each uses its own topics and etcd).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _, Result};
use bytes::{BufMut, BytesMut};
use cutover_integration_tests::cutover::{
    put_group, routers_bootstrap, set_mirror_state, update_mirror, wait_until, Cutover,
    RouterProcess,
};
use cutover_integration_tests::group::{
    committed, consumed_every_record_once, idempotent_load, lock, member_ids_at, members_at,
    GroupLog, Member,
};
use cutover_integration_tests::*;
use cutover_kafka::kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use cutover_kafka::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use cutover_model::{MirrorGroup, MirrorState};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;

use cutover_integration_tests::{java_clients, router_api};

const WAIT: Duration = Duration::from_secs(60);

/// etcd, the orchestrator, link l1 between the shared clusters, and two routers.
fn setup(name: &str) -> Result<(RealBed, Cutover, RouterProcess, RouterProcess)> {
    let bed = RealBed::start(name)?;
    let cutover = Cutover::start(&bed)?;
    cutover.create_link(&bed, "l1", &[])?;
    let r1 = cutover.start_router(1, "l1")?;
    let r2 = cutover.start_router(2, "l1")?;
    Ok((bed, cutover, r1, r2))
}

/// Sum of metric `name` over the routers' `/metrics`, for samples whose
/// labels include `label`.
fn router_metric(routers: &[&RouterProcess], name: &str, label: (&str, &str)) -> Result<f64> {
    let mut sum = 0.0;
    for r in routers {
        let text = http_get(
            &format!("http://{}/metrics", r.http),
            Duration::from_secs(5),
        )?
        .body;
        sum += cutover_integration_tests::cutover::metric_samples(&text, name)
            .into_iter()
            .filter(|(labels, _)| labels.get(label.0).map(String::as_str) == Some(label.1))
            .map(|(_, v)| v)
            .sum::<f64>();
    }
    Ok(sum)
}

#[test]
fn router_clients_see_only_routers_and_write_at_the_source_offsets_it_returns() -> Result<()> {
    const T: &str = "routed";
    const N: usize = 400;
    let (bed, _cutover, r1, r2) = setup("router_clients")?;
    bed.kafka.create_topic(Side::Source, T, 4, &[])?;
    let via = routers_bootstrap(&[&r1, &r2]);

    // Metadata: the routers are the brokers, and each partition is led by one.
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &via)
        .create()?;
    let md = probe.fetch_metadata(Some(T), Duration::from_secs(20))?;
    let brokers: BTreeMap<i32, String> = md
        .brokers()
        .iter()
        .map(|b| (b.id(), format!("{}:{}", b.host(), b.port())))
        .collect();
    ensure!(
        brokers == BTreeMap::from([(1, r1.kafka.clone()), (2, r2.kafka.clone())]),
        "brokers through the router: {brokers:?}"
    );
    let topic = md
        .topics()
        .iter()
        .find(|t| t.name() == T)
        .ok_or_else(|| anyhow!("{T} missing from metadata"))?;
    ensure!(
        topic.partitions().len() == 4,
        "{} partitions",
        topic.partitions().len()
    );
    for p in topic.partitions() {
        ensure!(
            brokers.contains_key(&p.leader()) && p.replicas() == [p.leader()],
            "partition {} led by {} replicas {:?}",
            p.id(),
            p.leader(),
            p.replicas()
        );
    }

    // Idempotent librdkafka producers through the routers: every record
    // acknowledged is on the source at the offset the router returned.
    let mut on_source = BTreeMap::new();
    for p in 0..4 {
        let spec = ProduceSpec {
            mode: ProduceMode::Idempotent,
            first_seq: p as u64 * 1_000,
            batch_records: 20,
            ..ProduceSpec::default()
        };
        let produced = produce(&via, T, p, N / 4, &spec)?;
        let (_, high) = watermarks(bed.source_bootstrap(), T, p)?;
        let records = read_partition(bed.source_bootstrap(), T, p, 0, high)?;
        let expected: Vec<ConsumedRecord> =
            produced.records.iter().map(|r| r.to_consumed()).collect();
        ensure!(
            records == expected,
            "partition {p}: the source holds {} records, {} were acknowledged through the router \
             (or at other offsets)",
            records.len(),
            expected.len()
        );
        for r in records {
            on_source.insert((p, r.offset), r);
        }
    }

    // A consumer group through the routers reads exactly those records at
    // the same offsets, and its commits land on the source's coordinator.
    let group = "routed-group";
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &via)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[T])?;
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < N {
        ensure!(
            Instant::now() < deadline,
            "consumed {} of {N} through the router",
            seen.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.context("consuming through the router")?;
            let value = m.payload().map(|v| String::from_utf8_lossy(v).into_owned());
            ensure!(
                seen.insert((m.partition(), m.offset()), value).is_none(),
                "partition {} offset {} consumed twice",
                m.partition(),
                m.offset()
            );
        }
    }
    for ((p, offset), value) in &seen {
        let source = on_source
            .get(&(*p, *offset))
            .ok_or_else(|| anyhow!("consumed {p}/{offset}, which the source does not have"))?;
        ensure!(
            value.as_deref().map(str::as_bytes) == source.value.as_deref(),
            "{p}/{offset}: consumed {value:?}, the source has another value"
        );
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    drop(consumer);

    // The group's committed offsets, read from the source directly.
    let direct: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bed.source_bootstrap())
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(T, p);
    }
    let committed = direct.committed_offsets(tpl, Duration::from_secs(20))?;
    for p in 0..4 {
        let (_, high) = watermarks(bed.source_bootstrap(), T, p)?;
        let c = committed
            .find_partition(T, p)
            .map(|e| e.offset().to_raw().unwrap_or(-1))
            .unwrap_or(-1);
        ensure!(
            c == high,
            "partition {p}: committed {c} on the source, log end {high}"
        );
    }

    // The routers count what they served, per API.
    for api in [
        "Produce",
        "Fetch",
        "Metadata",
        "JoinGroup",
        "OffsetCommit",
        "InitProducerId",
    ] {
        let n = router_metric(&[&r1, &r2], "cutover_router_requests_total", ("api", api))?;
        ensure!(n > 0.0, "no {api} request counted");
    }
    let out = router_metric(
        &[&r1, &r2],
        "cutover_router_response_bytes_total",
        ("api", "Fetch"),
    )?;
    ensure!(out as usize > N * 10, "Fetch response bytes counted: {out}");
    Ok(())
}

fn api_versions_frame(version: i16, correlation_id: i32) -> Vec<u8> {
    let mut h = RequestHeader::default();
    h.request_api_key = ApiKey::ApiVersions as i16;
    h.request_api_version = version;
    h.correlation_id = correlation_id;
    h.client_id = Some(StrBytes::from_static_str("raw-test"));
    let mut body = ApiVersionsRequest::default();
    body.client_software_name = StrBytes::from_static_str("raw");
    body.client_software_version = StrBytes::from_static_str("1");
    let mut buf = BytesMut::new();
    h.encode(
        &mut buf,
        ApiKey::ApiVersions.request_header_version(version),
    )
    .unwrap_or_default();
    body.encode(&mut buf, version).unwrap_or_default();
    let mut framed = Vec::with_capacity(buf.len() + 4);
    framed.extend_from_slice(&(buf.len() as i32).to_be_bytes());
    framed.extend_from_slice(&buf);
    framed
}

/// Reads one response frame; `None` when the router closed the connection.
fn read_response(s: &mut TcpStream) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut body = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    s.read_exact(&mut body)?;
    Ok(Some(body))
}

fn connect(r: &RouterProcess) -> Result<TcpStream> {
    let s = TcpStream::connect(&r.kafka)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

fn api_versions(
    s: &mut TcpStream,
    version: i16,
    correlation_id: i32,
) -> Result<(i32, ApiVersionsResponse)> {
    s.write_all(&api_versions_frame(version, correlation_id))?;
    let frame =
        read_response(s)?.ok_or_else(|| anyhow!("connection closed instead of an answer"))?;
    let mut buf = bytes::Bytes::from(frame);
    // ApiVersions answers always carry header v0.
    let header = ResponseHeader::decode(&mut buf, 0)?;
    // An answer to a newer request than the router's is a v0 body.
    let body_version = if version > 3 { 0 } else { version };
    Ok((
        header.correlation_id,
        ApiVersionsResponse::decode(&mut buf, body_version)?,
    ))
}

#[test]
fn router_bad_input_closes_only_that_connection() -> Result<()> {
    let (_bed, _cutover, r1, _r2) = setup("router_bad_input")?;
    let mut healthy = connect(&r1)?;
    let (cid, before) = api_versions(&mut healthy, 3, 1)?;
    ensure!(
        cid == 1 && before.error_code == 0,
        "ApiVersions: {cid} {}",
        before.error_code
    );
    let offered: BTreeMap<i16, (i16, i16)> = before
        .api_keys
        .iter()
        .map(|k| (k.api_key, (k.min_version, k.max_version)))
        .collect();
    ensure!(
        !offered.contains_key(&(ApiKey::ConsumerGroupHeartbeat as i16)),
        "KIP-848 must not be offered: {offered:?}"
    );
    ensure!(
        offered
            .get(&(ApiKey::Produce as i16))
            .is_some_and(|(_, max)| *max <= 9)
            && offered
                .get(&(ApiKey::Fetch as i16))
                .is_some_and(|(_, max)| *max <= 12),
        "Produce/Fetch versions with node endpoints or topic ids offered: {offered:?}"
    );

    // A newer ApiVersions gets UNSUPPORTED_VERSION with what the router offers.
    let (cid, newer) = api_versions(&mut healthy, 4, 2)?;
    ensure!(
        cid == 2 && newer.error_code == 35,
        "ApiVersions v4: {}",
        newer.error_code
    );
    ensure!(
        !newer.api_keys.is_empty(),
        "UNSUPPORTED_VERSION answer lists no APIs"
    );

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // A frame larger than --max-request-bytes (100 MiB): refused before
    // anything is allocated for it.
    cases.push(("oversized", (200 * 1024 * 1024i32).to_be_bytes().to_vec()));
    cases.push(("negative length", (-5i32).to_be_bytes().to_vec()));
    let mut unknown = BytesMut::new();
    unknown.put_i32(10);
    unknown.put_i16(999);
    unknown.put_i16(0);
    unknown.put_i32(7);
    unknown.put_i16(0);
    cases.push(("unknown API key", unknown.to_vec()));
    // Metadata v12 claiming 2^32-2 topics in a 13-byte frame.
    let mut huge = BytesMut::new();
    huge.put_i32(0);
    huge.put_i16(ApiKey::Metadata as i16);
    huge.put_i16(12);
    huge.put_i32(9);
    huge.put_i16(-1);
    huge.put_u8(0);
    huge.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    huge.put_u8(0);
    let len = (huge.len() - 4) as i32;
    huge[..4].copy_from_slice(&len.to_be_bytes());
    cases.push(("array count beyond the frame", huge.to_vec()));
    // A truncated request: the length says more than arrives, then EOF.
    let mut truncated = api_versions_frame(3, 5);
    truncated.truncate(truncated.len() - 3);
    cases.push(("truncated then closed", truncated));

    for (what, bytes) in cases {
        let mut s = connect(&r1)?;
        s.write_all(&bytes)?;
        if what == "truncated then closed" {
            s.shutdown(std::net::Shutdown::Write)?;
        }
        let answer = read_response(&mut s)?;
        ensure!(
            answer.is_none(),
            "{what}: the router answered instead of closing"
        );
        // The healthy connection, opened before, still gets answers.
        let (cid, after) = api_versions(&mut healthy, 3, 100)?;
        ensure!(
            cid == 100 && after.error_code == 0,
            "after {what}: {}",
            after.error_code
        );
    }
    ensure!(
        r1.process.is_running(),
        "the router exited: {}",
        r1.process.log_tail(30)
    );
    let log = std::fs::read_to_string(r1.process.log_path())?;
    for reason in [
        "larger than the limit",
        "negative frame length",
        "unknown API key 999",
        "longer than",
    ] {
        ensure!(log.contains(reason), "no log line says {reason:?}");
    }
    for reason in [
        "too_large",
        "negative",
        "unknown_api",
        "malformed",
        "truncated",
    ] {
        let n = router_metric(
            &[&r1],
            "cutover_router_connections_closed_total",
            ("reason", reason),
        )?;
        ensure!(n >= 1.0, "no connection counted as closed for {reason}");
    }
    Ok(())
}

/// Transactional librdkafka producers through the routers (InitProducerId
/// with a transactional id, AddPartitionsToTxn, EndTxn at the source's
/// transaction coordinator): a read_committed consumer through the routers
/// sees exactly the committed records, at the offsets the source has them.
#[test]
fn router_transactions_commit_and_abort_through_the_router() -> Result<()> {
    const T: &str = "routed-txn";
    let (bed, _cutover, r1, r2) = setup("router_transactions")?;
    bed.kafka.create_topic(Side::Source, T, 1, &[])?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let spec = ProduceSpec {
        mode: ProduceMode::Transactional {
            abort_every: Some(3),
        },
        batch_records: 20,
        ..ProduceSpec::default()
    };
    let produced = produce(&via, T, 0, 300, &spec)?;
    let committed: Vec<ConsumedRecord> = produced
        .records
        .iter()
        .filter(|r| !r.aborted)
        .map(|r| r.to_consumed())
        .collect();
    ensure!(
        produced.records.iter().any(|r| r.aborted) && !committed.is_empty(),
        "the producer wrote no aborted or no committed transaction"
    );
    let (_, high) = watermarks(bed.source_bootstrap(), T, 0)?;
    let direct = read_partition_isolated(
        bed.source_bootstrap(),
        T,
        0,
        0,
        high,
        Isolation::ReadCommitted,
        WAIT,
    )?;
    ensure!(
        direct == committed,
        "the source's read_committed view differs from what was committed through the router"
    );
    let routed = read_partition_isolated(&via, T, 0, 0, high, Isolation::ReadCommitted, WAIT)?;
    ensure!(
        routed == committed,
        "through the router, read_committed got {} records, {} were committed",
        routed.len(),
        committed.len()
    );
    Ok(())
}

/// Kafka's own Java clients through the routers (the 4.3 client: ApiVersions
/// v4 answered UNSUPPORTED_VERSION and retried lower, batched
/// FindCoordinator, the classic group protocol): every record the Java
/// producer had acknowledged is on the source at that partition and offset,
/// a Java consumer group through the routers gets exactly those, and once
/// mirrored the target holds them at the same offsets.
#[test]
fn router_java_clients_produce_and_consume_as_with_the_source() -> Result<()> {
    const T: &str = "routed-java";
    const N: usize = 2_000;
    let (bed, mut cutover, r1, r2) = setup("router_java_clients")?;
    bed.kafka.create_topic(Side::Source, T, 3, &[])?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let dist = bed.kafka.target.dist().clone();
    let mut acked = java_clients::verifiable_producer(&dist, &via, T, N, bed.log_dir())?;
    acked.sort();
    let on_source = java_clients::java_records_on(bed.source_bootstrap(), T, 3)?;
    ensure!(
        on_source == acked,
        "the source holds {} records, the Java producer had {} acknowledged through the router; \
         first difference: {:?}",
        on_source.len(),
        acked.len(),
        on_source.iter().zip(&acked).find(|(s, a)| s != a)
    );
    let mut consumed =
        java_clients::verifiable_consumer(&dist, &via, T, "routed-java-group", N, bed.log_dir())?;
    consumed.sort();
    ensure!(
        consumed == acked,
        "the Java consumer through the router got {} of {N}; first difference: {:?}",
        consumed.len(),
        consumed.iter().zip(&acked).find(|(c, a)| c != a)
    );
    mirror_and_sync(&mut cutover, T)?;
    ensure!(
        java_clients::java_records_on(bed.target_bootstrap(), T, 3)? == acked,
        "the target does not hold the acknowledged records at their offsets"
    );
    Ok(())
}

/// kill -9 of one of two routers while an idempotent producer writes
/// through them: the producer goes on through the other (once the dead
/// router's registration expires, it leads everything), nothing it had
/// acknowledged is lost, nothing is written twice, and a consumer group
/// started after the kill reads every record.
#[test]
fn router_kill9_of_one_router_loses_nothing_and_duplicates_nothing() -> Result<()> {
    const T: &str = "routed-failover";
    let (bed, _cutover, r1, r2) = setup("router_failover")?;
    bed.kafka.create_topic(Side::Source, T, 4, &[])?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let partitions: Vec<(String, i32)> = (0..4).map(|p| (T.to_owned(), p)).collect();
    let spec = ProduceSpec {
        mode: ProduceMode::Idempotent,
        ..ProduceSpec::default()
    };
    // The router that dies is one that leads partitions of the topic.
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &via)
        .create()?;
    let md = probe.fetch_metadata(Some(T), Duration::from_secs(20))?;
    let leader_of_0 = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .find(|p| p.id() == 0)
        .map(|p| p.leader())
        .ok_or_else(|| anyhow!("{T}/0 missing from metadata"))?;
    drop(probe);
    let (victim, survivor) = if leader_of_0 == r1.node_id {
        (&r1, &r2)
    } else {
        (&r2, &r1)
    };
    let load = LoadGenerator::start(&via, &partitions, 400, spec.clone())?;
    load.wait_acked(400, WAIT)?;
    victim.process.kill9()?;
    let at_kill = load.acked();
    load.wait_acked(at_kill + 1_200, WAIT)
        .context("the producer did not go on through the remaining router")?;
    let report = load.stop()?;
    ensure!(report.total_failed() == 0, "writes failed: {report:?}");
    // Every record sent was acknowledged, also those sent after the kill to
    // the partitions the dead router had led: they went through the other.
    let mut total = 0;
    for ((topic, p), l) in &report.partitions {
        ensure!(
            l.in_order && l.acked == l.sent,
            "{topic}/{p}: {l:?} (out of order, or sent but never acknowledged)"
        );
        let (_, high) = watermarks(bed.source_bootstrap(), topic, *p)?;
        let records = read_partition(bed.source_bootstrap(), topic, *p, 0, high)?;
        ensure!(
            records.len() as u64 == l.acked,
            "{topic}/{p}: {} records on the source, {} acknowledged (a retried batch written twice?)",
            records.len(),
            l.acked
        );
        let first = l.first_offset.unwrap_or(0);
        for r in &records {
            let seq = l.first_seq + (r.offset - first) as u64;
            let want = expected_record(topic, *p, seq, &spec).at(r.offset);
            ensure!(
                *r == want,
                "{topic}/{p} offset {}: not record {seq}",
                r.offset
            );
        }
        total += records.len();
    }
    // A group through the surviving router reads all of it.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &via)
        .set("group.id", "failover-group")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[T])?;
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < total {
        ensure!(
            Instant::now() < deadline,
            "consumed {} of {total} after the kill",
            seen.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                seen.insert((m.partition(), m.offset()));
            }
            // The dead router is still in bootstrap.servers: librdkafka
            // reports failing to reach it, and goes on with the other.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
            ))) => {}
            Some(Err(e)) => {
                return Err(e).context("consuming through the surviving router");
            }
            None => {}
        }
    }
    ensure!(
        survivor.process.is_running(),
        "{}",
        survivor.process.log_tail(20)
    );
    Ok(())
}

/// A Go client family (franz-go) through the routers: every record it had
/// acknowledged is on the source at that partition and offset, its
/// consumer group through the routers gets exactly those, and once mirrored
/// the target holds them at the same offsets.
#[test]
fn router_franz_go_produces_and_consumes_as_with_the_source() -> Result<()> {
    const T: &str = "routed-franz";
    const N: usize = 1_000;
    let (bed, mut cutover, r1, r2) = setup("router_franz_go")?;
    bed.kafka.create_topic(Side::Source, T, 3, &[])?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let (acked, consumed) = cutover_integration_tests::go_clients::franz_produce_then_consume(
        &via,
        T,
        N,
        "routed-franz-group",
        bed.log_dir(),
    )?;
    check_family(&bed, &mut cutover, T, "franz-go", N, acked, consumed)
}

/// Sum of metric `name` over the routers' `/metrics`, every sample.
fn router_metric_total(routers: &[&RouterProcess], name: &str) -> Result<f64> {
    let mut sum = 0.0;
    for r in routers {
        sum += r.metric_sum(name)?;
    }
    Ok(sum)
}

/// Must-show 4, fillers never reach a client: a transactional source with
/// aborts is mirrored, so the target holds fillers at its markers and
/// aborted records. A consumer through the routers reads it while the
/// source is the primary, and again after the test flips the topic's
/// primary to the target in etcd: read_committed and read_uncommitted
/// alike, it gets exactly the source's committed records at their offsets.
/// After the move, writes through the routers land on the target (not the
/// source) after the mirrored offsets, and a consumer that read half before
/// the move goes on to the end with no error, reset or skip although its
/// leader epochs moved to the routers' target generation.
#[test]
fn router_fillers_never_reach_a_client_before_or_after_the_primary_moves() -> Result<()> {
    const T: &str = "routed-fillers";
    let (bed, mut cutover, r1, r2) = setup("router_fillers")?;
    bed.kafka.create_topic(Side::Source, T, 1, &[])?;
    let spec = ProduceSpec {
        mode: ProduceMode::Transactional {
            abort_every: Some(3),
        },
        batch_records: 20,
        ..ProduceSpec::default()
    };
    let produced = produce(bed.source_bootstrap(), T, 0, 300, &spec)?;
    let committed: Vec<ConsumedRecord> = produced.committed().map(|r| r.to_consumed()).collect();
    ensure!(produced.aborted_count() > 0 && !committed.is_empty());
    // The routers run already: they learn of the mirror from etcd.
    mirror(&mut cutover, T)?;
    cutover.wait_in_sync("l1", WAIT)?;
    let (_, high) = watermarks(bed.source_bootstrap(), T, 0)?;

    // The target really holds fillers: every aborted record and marker.
    let target = read_partition(bed.target_bootstrap(), T, 0, 0, high)?;
    let fillers = target
        .iter()
        .filter(|r| oracle::filler_reason(r).is_some())
        .count();
    ensure!(
        fillers > produced.aborted_count(),
        "{fillers} fillers on the target for {} aborted records and their markers",
        produced.aborted_count()
    );

    let via = routers_bootstrap(&[&r1, &r2]);
    let read = |isolation| read_partition_isolated(&via, T, 0, 0, high, isolation, WAIT);
    let before = read(Isolation::ReadCommitted)?;
    ensure!(
        before == committed,
        "with the source as primary: {:?}",
        first_difference(&committed, &before)
    );

    // A consumer that reads across the move: half before, the rest after.
    // Its leader epochs jump from the source's to the routers' target
    // generation; it must neither fail, nor reset, nor skip.
    let across: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &via)
        .set("group.id", "router-fillers-across")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "error")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(T, 0, rdkafka::Offset::Offset(0))?;
    across.assign(&tpl)?;
    let mut got: Vec<(i64, Option<Vec<u8>>)> = Vec::new();
    let poll_until = |n: usize, got: &mut Vec<(i64, Option<Vec<u8>>)>| {
        poll_into(&across, n, got, "the consumer across the move", |m| {
            (m.offset(), m.payload().map(<[u8]>::to_vec))
        })
    };
    poll_until(committed.len() / 2, &mut got)?;

    promote(&bed, &mut cutover, T, &[&r1, &r2])?;
    // Writes through the routers now go to the target, at the offsets
    // after the mirrored ones; the source gets none of them.
    let later = produce(
        &via,
        T,
        0,
        50,
        &ProduceSpec {
            mode: ProduceMode::Plain,
            first_seq: 10_000,
            ..ProduceSpec::default()
        },
    )?;
    ensure!(
        later.first_offset() == Some(high),
        "written after the move from offset {:?}, the mirrored log ends at {high}",
        later.first_offset()
    );
    ensure!(watermarks(bed.source_bootstrap(), T, 0)?.1 == high);
    ensure!(watermarks(bed.target_bootstrap(), T, 0)?.1 == high + 50);
    let mut all = committed.clone();
    all.extend(later.records.iter().map(|r| r.to_consumed()));
    let expected: Vec<(i64, Option<Vec<u8>>)> =
        all.iter().map(|r| (r.offset, r.value.clone())).collect();
    poll_until(expected.len(), &mut got)?;
    ensure!(
        got == expected,
        "the consumer across the move got other records than the committed ones"
    );
    for isolation in [Isolation::ReadCommitted, Isolation::ReadUncommitted] {
        let after = read(isolation)?;
        ensure!(
            after == committed,
            "with the target as primary, {isolation:?}: {:?}",
            first_difference(&committed, &after)
        );
    }
    ensure!(
        router_metric_total(&[&r1, &r2], "cutover_router_fillers_removed_total")? > 0.0,
        "the routers removed no filler batch"
    );
    Ok(())
}

/// Must-show 5, for producers: one idempotent librdkafka producer writes
/// through the routers, the topic's primary moves to the target (after the
/// mirror caught up with nothing in flight, as promotion's barrier will
/// ensure), and the same producer goes on: no error, no duplicate, every
/// record at the offset it was acknowledged at, the first part on both
/// clusters and the rest on the target right after it, none on the source.
/// Its producer id is the routers' own, mapped to one producer of each
/// cluster (the source's id may belong to another writer on the target).
/// A group member through the routers consumes all along: every record
/// once, in order, no error (its commits after the move carry epochs of
/// the target, never sent to the source's coordinator).
#[test]
fn router_idempotent_producer_goes_on_across_the_move() -> Result<()> {
    const T: &str = "routed-move";
    const N: usize = 200;
    let (bed, mut cutover, r1, r2) = setup("router_move")?;
    bed.kafka.create_topic(Side::Source, T, 1, &[])?;
    mirror(&mut cutover, T)?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let spec = ProduceSpec {
        mode: ProduceMode::Idempotent,
        batch_records: 10,
        ..ProduceSpec::default()
    };
    // A group member through the routers consumes all along.
    let log = Arc::new(Mutex::new(GroupLog::default()));
    let member = Member::start(&via, "group-across-move", T, "routed", log.clone())?;
    let mut writer = Writer::new(&via, T, 0, spec, None)?;
    writer.write(N)?;
    cutover.wait_in_sync("l1", WAIT)?;
    promote(&bed, &mut cutover, T, &[&r1, &r2])?;
    writer.write(N)?;

    let written: Vec<ConsumedRecord> = writer.records().iter().map(|r| r.to_consumed()).collect();
    ensure!(
        written
            .iter()
            .enumerate()
            .all(|(i, r)| r.offset == i as i64),
        "acknowledged offsets are not 0..{}",
        2 * N
    );
    ensure!(watermarks(bed.source_bootstrap(), T, 0)?.1 == N as i64);
    ensure!(watermarks(bed.target_bootstrap(), T, 0)?.1 == 2 * N as i64);
    let on_target = read_partition(bed.target_bootstrap(), T, 0, 0, 2 * N as i64)?;
    ensure!(
        on_target == written,
        "target: {:?}",
        first_difference(&written, &on_target)
    );
    let on_source = read_partition(bed.source_bootstrap(), T, 0, 0, N as i64)?;
    ensure!(
        on_source == written[..N],
        "source: {:?}",
        first_difference(&written[..N], &on_source)
    );
    for cluster in ["source", "target"] {
        ensure!(
            router_metric(
                &[&r1, &r2],
                "cutover_router_producers_mapped_total",
                ("cluster", cluster)
            )? >= 1.0,
            "the producer's id was not mapped to a producer of the {cluster}"
        );
    }
    ensure!(
        router_metric_total(&[&r1, &r2], "cutover_router_produce_rule_violations_total")? == 0.0
    );

    // The group went on across the move: every record, once, no error.
    wait_until("the group member to consume every record", WAIT, || {
        Ok(lock(&log).seen.len() >= 2 * N)
    })?;
    member.stop()?;
    let log = lock(&log);
    let got: Vec<i64> = log.seen.iter().map(|(_, o, _)| *o).collect();
    ensure!(
        got == (0..2 * N as i64).collect::<Vec<_>>(),
        "the group member consumed {} records, not each of 0..{} once in order",
        got.len(),
        2 * N
    );
    Ok(())
}

/// Must-show 2, one group across the move: a group of three members on the
/// source directly consumes six partitions under live produce load; one by
/// one, each member is stopped and replaced by one pointed at the routers
/// with the same group id, so for a while the group has members on both
/// sides (one group at the source's coordinator). Every record produced is
/// consumed, and none twice except records whose commit failed in a
/// rebalance (what an ordinary rebalance may redeliver).
#[test]
fn router_one_group_across_a_rolling_move_consumes_every_record_once() -> Result<()> {
    const T: &str = "routed-group-move";
    const G: &str = "group-move";
    let (bed, _cutover, r1, r2) = setup("router_group_move")?;
    bed.kafka.create_topic(Side::Source, T, 6, &[])?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let load = idempotent_load(bed.source_bootstrap(), T, 6, 300)?;
    let log = Arc::new(Mutex::new(GroupLog::default()));
    let consumed_by = |prefix: &str| {
        lock(&log)
            .seen
            .iter()
            .filter(|(_, _, m)| m.starts_with(prefix))
            .count()
    };
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(Member::start(
            bed.source_bootstrap(),
            G,
            T,
            &format!("direct-{i}"),
            log.clone(),
        )?);
    }
    wait_until("the direct members to consume", WAIT, || {
        Ok(consumed_by("direct-") > 0)
    })?;
    for i in 0..3 {
        let name = format!("routed-{i}");
        members.remove(0).stop()?;
        members.push(Member::start(&via, G, T, &name, log.clone())?);
        wait_until(&format!("{name} to consume"), WAIT, || {
            Ok(consumed_by(&name) > 0)
        })?;
    }
    consumed_every_record_once(load, members, &log, T)?;
    let log = lock(&log);
    ensure!(
        log.seen.iter().any(|(_, _, m)| m.starts_with("routed-"))
            && log.seen.iter().any(|(_, _, m)| m.starts_with("direct-")),
        "the group did not consume on both sides"
    );
    Ok(())
}

/// JoinGroups of `group` the routers hold now.
fn held_joins(routers: &[&RouterProcess], group: &str) -> Result<u64> {
    held(routers, |s| s.join_holds, Some(group))
}

/// A group's home moves in one rebalance, on real Kafka, with the router
/// doing its part as etcd says (the steps of a group promotion, each
/// written here as the promotion will): two members through the routers
/// consume under load from the source; in the barrier (PROMOTING) the
/// routers answer their heartbeats REBALANCE_IN_PROGRESS and hold their
/// JoinGroups, so nothing is consumed while the committed offsets are
/// copied to the empty target group; at PROMOTED the held JoinGroups go
/// to the target's coordinator (without the source's member ids), the
/// group forms there and goes on at the copied offsets: every record
/// consumed, none twice unless its commit failed, no member error, and
/// from then on commits reach the target and not the source.
#[test]
fn router_group_moves_home_in_one_rebalance_and_goes_on_at_its_commits() -> Result<()> {
    const T: &str = "routed-group-home";
    const G: &str = "group-home";
    const N: i32 = 4;
    let (bed, mut cutover, r1, r2) = setup("router_group_home")?;
    bed.kafka.create_topic(Side::Source, T, N, &[])?;
    mirror_and_sync(&mut cutover, T)?;
    let mut doc = MirrorGroup {
        link: "l1".into(),
        group: G.into(),
        state: MirrorState::Mirroring,
        auto_promote: false,
        switches: 0,
        created_at_ms: cutover_model::now_ms(),
    };
    put_group(bed.etcd_endpoint(), &doc)?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let load = idempotent_load(bed.source_bootstrap(), T, N, 300)?;
    let log = Arc::new(Mutex::new(GroupLog::default()));
    let consumed_by = |name: &str| lock(&log).seen.iter().filter(|(_, _, m)| m == name).count();
    let members = vec![
        Member::start(&via, G, T, "routed-a", log.clone())?,
        Member::start(&via, G, T, "routed-b", log.clone())?,
    ];
    wait_until("both members to consume from every partition", WAIT, || {
        let parts: std::collections::BTreeSet<i32> =
            lock(&log).seen.iter().map(|(p, _, _)| *p).collect();
        Ok(consumed_by("routed-a") > 0 && consumed_by("routed-b") > 0 && parts.len() == N as usize)
    })?;
    ensure!(members_at(bed.source_bootstrap(), G)? == 2);

    doc.state = MirrorState::Promoting;
    put_group(bed.etcd_endpoint(), &doc)?;
    wait_until("both members' JoinGroups held", WAIT, || {
        Ok(held_joins(&[&r1, &r2], G)? == 2)
    })?;
    // Eager members gave up every partition before rejoining: nothing is
    // consumed while they wait, so the source's commits are final.
    let seen_held = lock(&log).seen.len();
    let at_barrier = committed(bed.source_bootstrap(), G, T, N)?;
    ensure!(
        at_barrier.iter().all(|o| *o > 0),
        "committed on the source: {at_barrier:?}"
    );
    ensure!(
        committed(bed.target_bootstrap(), G, T, N)? == vec![-1; N as usize],
        "the target group has commits before the copy"
    );
    {
        // The copy a promotion makes: an admin commit (no member, no
        // generation) into the empty target group, offsets unchanged.
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bed.target_bootstrap())
            .set("group.id", G)
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for (p, o) in at_barrier.iter().enumerate() {
            tpl.add_partition_offset(T, p as i32, rdkafka::Offset::Offset(*o))?;
        }
        c.commit(&tpl, CommitMode::Sync)?;
    }
    ensure!(
        lock(&log).seen.len() == seen_held,
        "records were consumed while the JoinGroups were held"
    );

    doc.state = MirrorState::Promoted;
    doc.switches = 1;
    put_group(bed.etcd_endpoint(), &doc)?;
    wait_until("the group to form on the target", WAIT, || {
        Ok(members_at(bed.target_bootstrap(), G)? == 2)
    })?;
    // The routers made the members rebalance, and the new home never had
    // to refuse a member id of the old one.
    ensure!(
        router_metric(
            &[&r1, &r2],
            "cutover_router_errors_total",
            ("error", "REBALANCE_IN_PROGRESS")
        )? >= 2.0,
        "the routers did not answer the heartbeats REBALANCE_IN_PROGRESS"
    );
    ensure!(
        router_metric(
            &[&r1, &r2],
            "cutover_router_errors_total",
            ("error", "UNKNOWN_MEMBER_ID")
        )? == 0.0,
        "a member id of the old home reached the new one"
    );
    let seen_moved = lock(&log).seen.len();
    wait_until("the group to consume on after the move", WAIT, || {
        Ok(lock(&log).seen.len() > seen_moved + 100)
    })?;
    let produced = consumed_every_record_once(load, members, &log, T)?;
    // Every commit after the move went to the target; the source kept
    // the offsets of the barrier.
    let ends: Vec<i64> = (0..N)
        .map(|p| produced.get(&p).map_or(0, |l| l + 1))
        .collect();
    ensure!(
        committed(bed.target_bootstrap(), G, T, N)? == ends,
        "the target group's commits are not the log ends {ends:?}"
    );
    ensure!(
        committed(bed.source_bootstrap(), G, T, N)? == at_barrier,
        "commits reached the source after the move"
    );
    Ok(())
}

/// Every record of `topic`'s first `partitions` partitions at `bootstrap`,
/// as another client family reports them, sorted.
fn records_on(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<cutover_integration_tests::client_lines::ClientRecord>> {
    let mut out = Vec::new();
    for p in 0..partitions {
        let (_, high) = watermarks(bootstrap, topic, p)?;
        for r in read_partition(bootstrap, topic, p, 0, high)? {
            out.push(cutover_integration_tests::client_lines::ClientRecord {
                partition: p,
                offset: r.offset,
                value: String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
            });
        }
    }
    out.sort();
    Ok(out)
}

/// kafkajs, a JavaScript client family, through the routers: its idempotent
/// producer (one request in flight, its own sequence handling) and its
/// consumer group (JoinGroup and SyncGroup as kafkajs builds them, a commit
/// per record): every acknowledged record is on the source at that
/// partition and offset, the group consumes exactly those, and once
/// mirrored the target holds them at the same offsets.
#[test]
fn router_kafkajs_produces_and_consumes_as_with_the_source() -> Result<()> {
    const T: &str = "routed-kafkajs";
    const N: usize = 600;
    let (bed, mut cutover, r1, r2) = setup("router_kafkajs")?;
    bed.kafka.create_topic(Side::Source, T, 3, &[])?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let (acked, consumed) = cutover_integration_tests::js_clients::kafkajs_produce_then_consume(
        &via,
        T,
        3,
        N,
        "routed-kafkajs-group",
        bed.log_dir(),
    )?;
    check_family(&bed, &mut cutover, T, "kafkajs", N, acked, consumed)
}

/// Mirrors `topic` over l1 with a fetcher of its own and waits until the
/// target has caught up.
fn mirror_and_sync(cutover: &mut Cutover, topic: &str) -> Result<()> {
    mirror(cutover, topic)?;
    cutover.wait_in_sync("l1", WAIT)?;
    Ok(())
}

/// Mirrors `topic` over l1, with a fetcher of its own.
fn mirror(cutover: &mut Cutover, topic: &str) -> Result<()> {
    cutover.add_fetcher()?;
    cutover.cli_json(&["mirror", "add", "--link", "l1", topic])?;
    Ok(())
}

/// Stops every fetcher. These tests check where the routers send writes
/// after a move; the reverse mirror a promotion starts would copy the
/// target's records to the source too (`tests/promotion.rs` covers it).
fn stop_fetchers(cutover: &mut Cutover) -> Result<()> {
    for f in cutover.fetchers.drain(..) {
        f.process.sigterm()?;
        f.process.wait_exit(WAIT)?;
    }
    Ok(())
}

/// Flips `topic`'s primary to the target in etcd, as a promotion will
/// (with the fetchers stopped first), and waits until every router in
/// `routers` sends it there.
fn promote(
    bed: &RealBed,
    cutover: &mut Cutover,
    topic: &str,
    routers: &[&RouterProcess],
) -> Result<()> {
    stop_fetchers(cutover)?;
    set_mirror_state(bed.etcd_endpoint(), "l1", topic, MirrorState::Promoted)?;
    wait_until("the routers to see the target as the primary", WAIT, || {
        Ok(router_metric(
            routers,
            "cutover_router_mirrored_topics",
            ("primary", "target"),
        )? == routers.len() as f64)
    })
}

/// What every client family through the routers must show: `n` records
/// acknowledged, each on the source at its acknowledged partition and
/// offset, consumed by the family's group exactly, and once mirrored on the
/// target at the same offsets.
fn check_family(
    bed: &RealBed,
    cutover: &mut Cutover,
    topic: &str,
    family: &str,
    n: usize,
    mut acked: Vec<cutover_integration_tests::client_lines::ClientRecord>,
    mut consumed: Vec<cutover_integration_tests::client_lines::ClientRecord>,
) -> Result<()> {
    acked.sort();
    consumed.sort();
    ensure!(
        acked.len() == n,
        "{family} had {} of {n} acknowledged",
        acked.len()
    );
    let on_source = records_on(bed.source_bootstrap(), topic, 3)?;
    ensure!(
        on_source == acked,
        "the source holds {} records, {family} had {} acknowledged; first difference: {:?}",
        on_source.len(),
        acked.len(),
        on_source.iter().zip(&acked).find(|(s, a)| s != a)
    );
    ensure!(
        consumed == acked,
        "{family} consumed {} of {n}; first difference: {:?}",
        consumed.len(),
        consumed.iter().zip(&acked).find(|(c, a)| c != a)
    );
    mirror_and_sync(cutover, topic)?;
    ensure!(
        records_on(bed.target_bootstrap(), topic, 3)? == acked,
        "the target does not hold {family}'s acknowledged records at their offsets"
    );
    Ok(())
}

/// Sum over the routers of the requests waiting in the holds `of` their
/// state picks (only `key`'s when given).
fn held(
    routers: &[&RouterProcess],
    of: impl Fn(cutover_proto::router::v1::RouterState) -> Vec<cutover_proto::router::v1::Hold>,
    key: Option<&str>,
) -> Result<u64> {
    let mut n = 0;
    for r in routers {
        n += of(router_api::state(r)?)
            .iter()
            .filter(|h| key.is_none_or(|k| h.key == k))
            .map(|h| h.waiting)
            .sum::<u64>();
    }
    Ok(n)
}

/// Sum over the routers of what their produce holds count now.
fn held_produce(routers: &[&RouterProcess]) -> Result<u64> {
    held(routers, |s| s.produce_holds, None)
}

/// The barrier a topic promotion puts up, on real Kafka: an idempotent
/// producer writes through both routers; each router holds the topic's
/// writes and answers the hold once its in-flight ones are answered; the
/// source log end then stays still while the producer's requests wait in
/// the routers (and `cutover status` shows it); the mirror catches up, the
/// primary flips in etcd, and the release (at that etcd revision) sends
/// the held writes to the target. No write fails, none is duplicated, and
/// every one sits at its acknowledged offset: before the hold on both
/// clusters, after it on the target only.
#[test]
fn router_holds_produce_for_a_promotion_and_releases_it_to_the_new_primary() -> Result<()> {
    const T: &str = "routed-hold";
    let (bed, mut cutover, r1, r2) = setup("router_hold")?;
    bed.kafka.create_topic(Side::Source, T, 2, &[])?;
    mirror(&mut cutover, T)?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let spec = ProduceSpec {
        mode: ProduceMode::Idempotent,
        ..ProduceSpec::default()
    };
    let partitions: Vec<(String, i32)> = (0..2).map(|p| (T.to_owned(), p)).collect();
    let load = LoadGenerator::start(&via, &partitions, 300, spec.clone())?;
    load.wait_acked(200, WAIT)?;

    for r in [&r1, &r2] {
        let h = router_api::hold_produce(r, &[T], 30_000)?;
        ensure!(
            h.holds.len() == 1 && h.holds[0].in_flight == 0 && h.holds[0].remaining_ms > 0,
            "router {}: the hold answered before its writes in flight were: {h:?}",
            r.node_id
        );
    }
    let ends: Vec<i64> = (0..2)
        .map(|p| Ok(watermarks(bed.source_bootstrap(), T, p)?.1))
        .collect::<Result<_>>()?;
    wait_until(
        "the producer's requests to wait in the routers",
        WAIT,
        || Ok(held_produce(&[&r1, &r2])? >= 1),
    )?;
    let acked_in_hold = load.acked();
    let status = cutover.cli_json(&["status", "--link", "l1"])?;
    let routers = status["routers"]
        .as_array()
        .ok_or_else(|| anyhow!("no routers in status: {status}"))?;
    ensure!(routers.len() == 2, "status lists {} routers", routers.len());
    for r in routers {
        ensure!(
            r["error"] == "" && r["produce_holds"][0]["key"] == T,
            "status does not show the router's hold: {r}"
        );
    }
    let (code, text, err) = cutover.cli_raw(&["status", "--link", "l1"])?;
    ensure!(code == 0, "status exited {code}: {err}");
    ensure!(
        text.contains(&format!("holds produce of {T}")),
        "status text: {text}"
    );
    for p in 0..2 {
        let end = watermarks(bed.source_bootstrap(), T, p)?.1;
        ensure!(
            end == ends[p as usize],
            "{T}/{p}: the source log end moved from {} to {end} during the hold",
            ends[p as usize]
        );
    }

    cutover.wait_in_sync("l1", WAIT)?;
    stop_fetchers(&mut cutover)?;
    let revision = set_mirror_state(bed.etcd_endpoint(), "l1", T, MirrorState::Promoted)?;
    for r in [&r1, &r2] {
        let h = router_api::release_produce(r, &[T], revision)?;
        ensure!(h.holds[0].remaining_ms == 0, "{h:?}");
    }
    load.wait_acked(acked_in_hold + 300, WAIT)
        .context("the producer did not go on after the release")?;
    let report = load.stop()?;
    ensure!(report.total_failed() == 0, "writes failed: {report:?}");
    for ((topic, p), l) in &report.partitions {
        ensure!(
            l.in_order && l.acked == l.sent && l.first_offset == Some(0),
            "{topic}/{p}: {l:?}"
        );
        let source_end = watermarks(bed.source_bootstrap(), topic, *p)?.1;
        ensure!(
            source_end == ends[*p as usize],
            "{topic}/{p}: released writes reached the source ({source_end}, not {})",
            ends[*p as usize]
        );
        let (_, high) = watermarks(bed.target_bootstrap(), topic, *p)?;
        ensure!(
            high as u64 == l.acked,
            "{topic}/{p}: {high} records on the target, {} acknowledged",
            l.acked
        );
        let records = read_partition(bed.target_bootstrap(), topic, *p, 0, high)?;
        for r in &records {
            let want =
                expected_record(topic, *p, l.first_seq + r.offset as u64, &spec).at(r.offset);
            ensure!(
                *r == want,
                "{topic}/{p} offset {}: not the acknowledged record",
                r.offset
            );
        }
        ensure!(
            high > ends[*p as usize],
            "{topic}/{p}: nothing was written after the hold"
        );
    }
    ensure!(
        router_metric_total(&[&r1, &r2], "cutover_router_produce_rule_violations_total")? == 0.0
    );
    Ok(())
}

/// A hold nobody releases ends by itself (a promotion that died must not
/// keep clients waiting); a release a router cannot honour yet (its etcd
/// view is behind the revision named) keeps the hold and says why; bad
/// hold requests are refused and change nothing.
#[test]
fn router_holds_end_by_themselves_and_bad_hold_requests_change_nothing() -> Result<()> {
    use cutover_proto::router::v1 as pb;
    const T: &str = "routed-hold-expiry";
    let (bed, _cutover, r1, r2) = setup("router_hold_expiry")?;
    bed.kafka.create_topic(Side::Source, T, 1, &[])?;
    let bad = [
        pb::HoldProduceRequest {
            topics: vec![T.into()],
            hold_ms: 0,
            drain_timeout_ms: 0,
            groups: vec![],
        },
        pb::HoldProduceRequest {
            topics: vec![T.into()],
            hold_ms: 60_000,
            drain_timeout_ms: 0,
            groups: vec![],
        },
        pb::HoldProduceRequest {
            topics: vec![],
            hold_ms: 1_000,
            drain_timeout_ms: 0,
            groups: vec![],
        },
        pb::HoldProduceRequest {
            topics: vec![String::new()],
            hold_ms: 1_000,
            drain_timeout_ms: 0,
            groups: vec![],
        },
        pb::HoldProduceRequest {
            topics: vec![T.into()],
            hold_ms: 1_000,
            drain_timeout_ms: 0,
            groups: vec![String::new()],
        },
    ];
    for req in bad {
        let r = router_api::try_hold_produce(&r1, req.clone())?;
        ensure!(
            matches!(&r, Err(s) if s.code() == tonic::Code::InvalidArgument),
            "{req:?}: {r:?}"
        );
    }
    ensure!(router_api::state(&r1)?.produce_holds.is_empty());

    for r in [&r1, &r2] {
        router_api::hold_produce(r, &[T], 3_000)?;
    }
    let behind = router_api::try_release_produce(
        &r1,
        pb::ReleaseProduceRequest {
            topics: vec![T.into()],
            after_revision: i64::MAX / 2,
            wait_ms: 200,
            groups: vec![],
        },
    )?;
    ensure!(
        matches!(&behind, Err(s) if s.code() == tonic::Code::Unavailable && s.message().contains("the hold stays")),
        "{behind:?}"
    );
    ensure!(
        router_api::state(&r1)?.produce_holds.len() == 1,
        "the hold did not stay"
    );

    // A write during the hold waits, and goes on when the hold runs out.
    let via = routers_bootstrap(&[&r1, &r2]);
    let writer = std::thread::spawn({
        let via = via.clone();
        move || produce(&via, T, 0, 5, &ProduceSpec::default())
    });
    wait_until("the write to wait in a router", WAIT, || {
        Ok(held_produce(&[&r1, &r2])? >= 1)
    })?;
    let produced = writer
        .join()
        .map_err(|_| anyhow!("producer thread panicked"))??;
    ensure!(produced.records.len() == 5);
    ensure!(watermarks(bed.source_bootstrap(), T, 0)?.1 == 5);
    for r in [&r1, &r2] {
        ensure!(
            router_api::state(r)?.produce_holds.is_empty(),
            "router {} still holds after the time ran out",
            r.node_id
        );
    }
    Ok(())
}

/// A group promotion's tools on real Kafka: the routers report the members
/// they forwarded (member id and client id, the same ids the source's
/// coordinator lists); a JoinGroup hold keeps a new member out of the group
/// until released, while the member already in it goes on; a member that
/// leaves is no longer listed.
#[test]
fn router_holds_a_groups_joins_and_lists_the_members_it_forwarded() -> Result<()> {
    const T: &str = "routed-join-hold";
    const G: &str = "join-hold-group";
    let (bed, _cutover, r1, r2) = setup("router_join_hold")?;
    bed.kafka.create_topic(Side::Source, T, 2, &[])?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let members_via_routers = || -> Result<Vec<(String, String)>> {
        let mut all = Vec::new();
        for r in [&r1, &r2] {
            all.extend(
                router_api::group_members(r, G)?
                    .into_iter()
                    .map(|m| (m.member_id, m.client_id)),
            );
        }
        all.sort();
        Ok(all)
    };
    let source_members = || member_ids_at(bed.source_bootstrap(), G);
    let log = Arc::new(Mutex::new(GroupLog::default()));
    let first = Member::start(&via, G, T, "member-one", log.clone())?;
    wait_until("the routers to list the first member", WAIT, || {
        Ok(members_via_routers()?.len() == 1 && source_members()?.len() == 1)
    })?;
    let (via_routers, on_source) = (members_via_routers()?, source_members()?);
    ensure!(
        via_routers == on_source,
        "routers: {via_routers:?}, source: {on_source:?}"
    );

    for r in [&r1, &r2] {
        router_api::hold_joins(r, G, 60_000)?;
    }
    let second = Member::start(&via, G, T, "member-two", log.clone())?;
    wait_until("the second member's JoinGroup to be held", WAIT, || {
        let mut waiting = 0;
        for r in [&r1, &r2] {
            waiting += router_api::state(r)?
                .join_holds
                .iter()
                .map(|h| h.waiting)
                .sum::<u64>();
        }
        Ok(waiting >= 1)
    })?;
    // Held: the source's group still has the first member only, and it
    // still consumes.
    ensure!(source_members()?.len() == 1, "{:?}", source_members()?);
    let before = lock(&log).seen.len();
    produce(&via, T, 0, 20, &ProduceSpec::default())?;
    wait_until("the first member to go on consuming", WAIT, || {
        Ok(lock(&log).seen.len() >= before + 20)
    })?;

    for r in [&r1, &r2] {
        router_api::release_joins(r, G)?;
    }
    wait_until(
        "both members in the group, as the routers list them",
        WAIT,
        || {
            let via_routers = members_via_routers()?;
            Ok(via_routers.len() == 2 && via_routers == source_members()?)
        },
    )?;
    let clients: Vec<String> = members_via_routers()?.into_iter().map(|(_, c)| c).collect();
    ensure!(clients == ["member-one", "member-two"], "{clients:?}");

    second.stop()?;
    wait_until("the member that left to be no longer listed", WAIT, || {
        Ok(members_via_routers()?.len() == 1)
    })?;
    first.stop()?;
    Ok(())
}

/// Must-show 5, for a consumer on assign and stored offsets (no group
/// membership; it commits its positions to a group itself, as stream
/// processors that track their own positions do). Before the move one
/// reads and commits part of a topic through the routers; the topic moves
/// to the target; a new consumer assigned at the stored offset resumes
/// exactly there (its committed leader epoch is the source's, so the
/// routers validate it with the source) and reads on into what was written
/// on the target after the move; its commit after the move reaches the
/// source's coordinator (the group's home), and a third consumer resumes
/// at that offset. No error, no reset (auto.offset.reset=error would
/// report one), no skip, no duplicate.
#[test]
fn router_assigned_consumer_with_stored_offsets_resumes_across_the_move() -> Result<()> {
    const T: &str = "routed-assigned";
    const G: &str = "assigned-stored";
    let (bed, mut cutover, r1, r2) = setup("router_assigned")?;
    bed.kafka.create_topic(Side::Source, T, 1, &[])?;
    let spec = ProduceSpec {
        batch_records: 10,
        ..ProduceSpec::default()
    };
    let first = produce(bed.source_bootstrap(), T, 0, 200, &spec)?;
    mirror_and_sync(&mut cutover, T)?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let consumer = |name: &str| -> Result<BaseConsumer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &via)
            .set("group.id", G)
            .set("client.id", name)
            // Small fetches, so a consumer reads in several and the
            // routers' read-ahead is used.
            .set("max.partition.fetch.bytes", "4096")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "error")
            .set("topic.metadata.refresh.interval.ms", "500")
            .create()?)
    };
    let assigned = |c: &BaseConsumer, at: rdkafka::Offset| -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(T, 0, at)?;
        c.assign(&tpl)?;
        Ok(())
    };
    let commit = |c: &BaseConsumer, offset: i64| -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(T, 0, rdkafka::Offset::Offset(offset))?;
        c.commit(&tpl, CommitMode::Sync)?;
        Ok(())
    };
    let committed_on_source = || -> Result<i64> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bed.source_bootstrap())
            .set("group.id", G)
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(T, 0);
        let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
        match got.find_partition(T, 0).map(|p| p.offset()) {
            Some(rdkafka::Offset::Offset(o)) => Ok(o),
            other => anyhow::bail!("no committed offset on the source: {other:?}"),
        }
    };
    let c1 = consumer("assigned-one")?;
    assigned(&c1, rdkafka::Offset::Offset(0))?;
    ensure!(poll_values(&c1, 100, WAIT)? == produced_values(&first.records[..100]));
    commit(&c1, 100)?;
    drop(c1);
    ensure!(committed_on_source()? == 100);

    promote(&bed, &mut cutover, T, &[&r1, &r2])?;
    let later = produce(
        &via,
        T,
        0,
        100,
        &ProduceSpec {
            first_seq: 10_000,
            ..spec.clone()
        },
    )?;
    ensure!(
        later.first_offset() == Some(200),
        "{:?}",
        later.first_offset()
    );
    ensure!(watermarks(bed.source_bootstrap(), T, 0)?.1 == 200);

    let c2 = consumer("assigned-two")?;
    assigned(&c2, rdkafka::Offset::Stored)?;
    let mut want = produced_values(&first.records[100..]);
    want.extend(produced_values(&later.records));
    let got = poll_values(&c2, want.len(), WAIT)?;
    ensure!(
        got == want,
        "resumed at the stored offset across the move, got offsets {:?}..{:?}",
        got.first().map(|r| r.0),
        got.last().map(|r| r.0)
    );
    commit(&c2, 300)?;
    drop(c2);
    ensure!(committed_on_source()? == 300);

    let c3 = consumer("assigned-three")?;
    assigned(&c3, rdkafka::Offset::Stored)?;
    let more = produce(
        &via,
        T,
        0,
        10,
        &ProduceSpec {
            first_seq: 20_000,
            ..spec.clone()
        },
    )?;
    ensure!(poll_values(&c3, 10, WAIT)? == produced_values(&more.records));
    // Some of those fetches were answered from the routers' read-ahead
    // (the next Fetch sent upstream before the client asked): the records
    // above are exactly the acknowledged ones all the same.
    ensure!(
        router_metric(
            &[&r1, &r2],
            "cutover_router_fetch_readahead_total",
            ("outcome", "used")
        )? >= 1.0,
        "no fetch was answered from the read-ahead"
    );
    Ok(())
}

/// Fetch answers of 16 KiB or more per partition are written from the
/// buffers they came in (`encoded.rs`): a consumer through the router gets
/// every record, byte for byte, at its offset.
#[test]
fn router_large_fetch_answers_reach_the_client_byte_for_byte_within_the_fetch_cap() -> Result<()> {
    const T: &str = "large-answers";
    const N: usize = 300;
    const BATCH: usize = 10;
    // Below one batch (10 records of 4 KiB): each upstream answer holds
    // one batch per partition, the first, which Kafka returns whole.
    const CAP: &str = "32768";
    let bed = RealBed::start("router_large_answers")?;
    let cutover = Cutover::start(&bed)?;
    cutover.create_link(&bed, "l1", &[])?;
    let r1 = cutover.start_router_with(1, "l1", &["--max-fetch-bytes", CAP])?;
    let r2 = cutover.start_router_with(2, "l1", &["--max-fetch-bytes", CAP])?;
    bed.kafka.create_topic(Side::Source, T, 2, &[])?;
    let before = router_metric_total(&[&r1, &r2], "cutover_router_fetch_spliced_partitions_total")?;
    let fetches_before = router_metric(
        &[&r1, &r2],
        "cutover_router_requests_total",
        ("api", "Fetch"),
    )?;
    for p in 0..2 {
        // Distinct 4 KiB values, written directly to the source.
        let spec = ProduceSpec {
            mode: ProduceMode::Idempotent,
            first_seq: p as u64 * 1_000,
            value_size: Some(4096),
            batch_records: BATCH,
            ..ProduceSpec::default()
        };
        let produced = produce(bed.source_bootstrap(), T, p, N / 2, &spec)?;
        let expected: Vec<ConsumedRecord> =
            produced.records.iter().map(|r| r.to_consumed()).collect();
        let (_, high) = watermarks(bed.source_bootstrap(), T, p)?;
        let got = read_partition(&routers_bootstrap(&[&r1, &r2]), T, p, 0, high)?;
        ensure!(
            got == expected,
            "partition {p}: {} records through the router, {} written: {:?}",
            got.len(),
            expected.len(),
            first_difference(&expected, &got)
        );
    }
    let spliced =
        router_metric_total(&[&r1, &r2], "cutover_router_fetch_spliced_partitions_total")? - before;
    ensure!(
        spliced > 0.0,
        "no Fetch answer was written in pieces: the test did not reach the path it checks"
    );
    // The other way: 4 KiB records written through the routers arrive at
    // the source as written, their batches sent upstream from the buffer
    // they came in.
    const W: &str = "large-writes";
    bed.kafka.create_topic(Side::Source, W, 1, &[])?;
    let produce_before = router_metric_total(
        &[&r1, &r2],
        "cutover_router_produce_spliced_partitions_total",
    )?;
    let spec = ProduceSpec {
        mode: ProduceMode::Idempotent,
        value_size: Some(4096),
        batch_records: BATCH,
        ..ProduceSpec::default()
    };
    let produced = produce(&routers_bootstrap(&[&r1, &r2]), W, 0, N / 2, &spec)?;
    let expected: Vec<ConsumedRecord> = produced.records.iter().map(|r| r.to_consumed()).collect();
    let (_, high) = watermarks(bed.source_bootstrap(), W, 0)?;
    let got = read_partition(bed.source_bootstrap(), W, 0, 0, high)?;
    ensure!(
        got == expected,
        "{} records at the source, {} written through the router: {:?}",
        got.len(),
        expected.len(),
        first_difference(&expected, &got)
    );
    let produce_spliced = router_metric_total(
        &[&r1, &r2],
        "cutover_router_produce_spliced_partitions_total",
    )? - produce_before;
    ensure!(
        produce_spliced > 0.0,
        "no Produce request went upstream in pieces: the test did not reach the path it checks"
    );
    // The client asks for up to 1 MiB a partition; without the cap one or
    // two Fetches would bring a partition's 600 KiB.
    let fetches = router_metric(
        &[&r1, &r2],
        "cutover_router_requests_total",
        ("api", "Fetch"),
    )? - fetches_before;
    let batches = 2 * (N / 2).div_ceil(BATCH);
    ensure!(
        fetches >= batches as f64,
        "{fetches} Fetch requests brought {batches} batches larger than the cap: the cap was not applied"
    );
    Ok(())
}

/// The leader epochs each router shows for `topic`, per partition.
fn shown_epochs(router: &RouterProcess, topic: &str) -> Result<Vec<i32>> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let cluster = cutover_kafka::Cluster::connect(cutover_kafka::ClusterConfig::new([router
            .kafka
            .as_str()]))
        .await?;
        let md = cluster.metadata(Some(&[topic.to_owned()])).await?;
        let t = md
            .topics
            .iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| anyhow!("router {} does not list {topic}", router.node_id))?;
        let mut epochs: Vec<(i32, i32)> = t
            .partitions
            .iter()
            .map(|p| (p.partition, p.leader_epoch))
            .collect();
        epochs.sort();
        cluster.close().await;
        Ok(epochs.into_iter().map(|(_, e)| e).collect())
    })
}

/// Leader epochs across promotion, rollback and promotion again: the topic's
/// primary switches three times (as the orchestrator will record them, in
/// the mirror topic's `switches`), and after each switch every router
/// shows every partition's epoch above what it showed before, the new
/// primary's generation in its top bits. A consumer through the routers
/// reads across all three switches with offset reset disabled; writes go
/// to the source after the rollback (and the mirror copies them on) and to
/// the target after the second promotion, and the consumer gets each
/// record once, in order, with no error.
#[test]
fn router_leader_epochs_go_up_at_every_switch_of_the_primary_either_way() -> Result<()> {
    const T: &str = "routed-switches";
    const N: usize = 100;
    let (bed, mut cutover, r1, r2) = setup("router_switches")?;
    bed.kafka.create_topic(Side::Source, T, 1, &[])?;
    let via = routers_bootstrap(&[&r1, &r2]);
    let plain = |first_seq: u64| ProduceSpec {
        mode: ProduceMode::Plain,
        first_seq,
        ..ProduceSpec::default()
    };
    let mut written: Vec<ConsumedRecord> = produce(bed.source_bootstrap(), T, 0, N, &plain(0))?
        .records
        .iter()
        .map(|r| r.to_consumed())
        .collect();
    mirror(&mut cutover, T)?;
    cutover.wait_in_sync("l1", WAIT)?;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &via)
        .set("group.id", "router-switches")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(T, 0, rdkafka::Offset::Offset(0))?;
    consumer.assign(&tpl)?;
    let mut got: Vec<ConsumedRecord> = Vec::new();
    let poll_until = |n: usize, got: &mut Vec<ConsumedRecord>| {
        poll_into(&consumer, n, got, "the consumer across the switches", |m| {
            cutover_integration_tests::clients::consumed(m)
        })
    };
    poll_until(written.len(), &mut got)?;

    let mut before: Vec<Vec<i32>> = vec![shown_epochs(&r1, T)?, shown_epochs(&r2, T)?];
    for (i, e) in before.iter().enumerate() {
        ensure!(
            e.iter().all(|e| (0..1 << 24).contains(e)),
            "router {}: epochs before any promotion are not the source's own: {e:?}",
            i + 1
        );
    }
    for switches in 1..=3u32 {
        let state = if switches % 2 == 1 {
            MirrorState::Promoted
        } else {
            MirrorState::Mirroring
        };
        update_mirror(bed.etcd_endpoint(), "l1", T, |m| {
            m.state = state;
            m.switches = switches;
        })?;
        let generation = switches as i32;
        wait_until(
            &format!("the routers to show generation {generation}"),
            WAIT,
            || {
                Ok([&r1, &r2].iter().all(|r| {
                    shown_epochs(r, T).is_ok_and(|e| e.iter().all(|e| e >> 24 == generation))
                }))
            },
        )?;
        for (i, r) in [&r1, &r2].iter().enumerate() {
            let now = shown_epochs(r, T)?;
            ensure!(
                now.iter().zip(&before[i]).all(|(n, b)| n > b),
                "router {} after switch {switches}: epochs {now:?} not all above {:?}",
                r.node_id,
                before[i]
            );
            before[i] = now;
        }
        // Writes through the routers go to the new primary, after every
        // offset so far. None while the first promotion stands: the source
        // would lack them at the rollback (the reverse mirror that copies
        // them back is a later step).
        if switches == 1 {
            continue;
        }
        let more = produce(&via, T, 0, N, &plain(switches as u64 * 1_000))?;
        ensure!(
            more.first_offset() == Some(written.len() as i64),
            "after switch {switches} written from {:?}, the log had {}",
            more.first_offset(),
            written.len()
        );
        written.extend(more.records.iter().map(|r| r.to_consumed()));
        poll_until(written.len(), &mut got)?;
        if state == MirrorState::Mirroring {
            // The source is the primary again: the mirror copies on, and
            // the next promotion comes once it caught up.
            cutover.wait_in_sync("l1", WAIT)?;
        }
    }
    ensure!(
        got == written,
        "the consumer across the switches: {:?}",
        first_difference(&written, &got)
    );
    Ok(())
}

/// Polls `consumer` until `got` holds `n` records (each kept as `keep`
/// makes it), failing on a consumer error or after `WAIT`.
fn poll_into<T>(
    consumer: &BaseConsumer,
    n: usize,
    got: &mut Vec<T>,
    who: &str,
    keep: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> T,
) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while got.len() < n {
        ensure!(
            Instant::now() < deadline,
            "{who} got {} of {n} records",
            got.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => got.push(keep(&m)),
            Some(Err(e)) => anyhow::bail!("{who} failed: {e}"),
            None => {}
        }
    }
    Ok(())
}
