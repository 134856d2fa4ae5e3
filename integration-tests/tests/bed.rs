//! The bed itself, with real parts: mock clusters, librdkafka clients, etcd,
//! processes.
//!
//! Broker: librdkafka's mock cluster, because the bed's own parts (mock clusters, clients, processes; the real brokers are exercised by every `real_*` test and the testbed test here).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cutover_integration_tests::*;

const TOPIC: &str = "orders";

fn sleep_binary() -> &'static Path {
    ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("a `sleep` binary in /usr/bin or /bin")
}

/// Processes whose command line contains `needle`.
fn processes_with_arg(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .flatten()
    {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

fn ports(bootstrap: &str) -> Vec<u16> {
    bootstrap
        .split(',')
        .map(|hp| {
            hp.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("bootstrap entries are host:port")
        })
        .collect()
}

fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn produces_every_codec_and_mode_and_reads_back() {
    let bed = Bed::start("produces_every_codec_and_mode_and_reads_back").expect("bed starts");
    bed.clusters
        .create_topic_both(TOPIC, 8)
        .expect("topic created on both");
    for p in 0..8 {
        assert_eq!(
            bed.clusters
                .watermarks(Side::Target, TOPIC, p)
                .expect("target watermarks"),
            (0, 0)
        );
    }

    let modes = [
        ProduceMode::Plain,
        ProduceMode::Idempotent,
        ProduceMode::Transactional {
            abort_every: Some(2),
        },
    ];
    let mut next_offset = [0i64; 8];
    let mut combo = 0usize;
    for codec in Codec::ALL {
        for mode in modes {
            let partition = (combo % 8) as i32;
            let spec = ProduceSpec {
                codec,
                mode,
                batch_records: 40,
                key_size: if combo % 4 == 1 { None } else { Some(24) },
                value_size: if combo % 5 == 2 { None } else { Some(300) },
                with_headers: combo % 3 != 2,
                first_seq: 1000 * combo as u64,
                ..ProduceSpec::default()
            };
            let written = produce(bed.source_bootstrap(), TOPIC, partition, 200, &spec)
                .unwrap_or_else(|e| panic!("produce {codec} {mode:?}: {e:#}"));
            let p = partition as usize;
            assert_eq!(written.records.len(), 200);
            assert_eq!(
                written.first_offset(),
                Some(next_offset[p]),
                "{codec} {mode:?}: offsets continue where the last write ended"
            );
            if let ProduceMode::Transactional { .. } = mode {
                // 5 transactions of 40, every 2nd aborted.
                assert_eq!(written.aborted_count(), 80, "{codec} {mode:?}");
            }

            // The expectations can be regenerated from (topic, partition, seq).
            for r in &written.records {
                assert_eq!(r.content, expected_record(TOPIC, partition, r.seq, &spec));
            }
            let end = written.end_offset().expect("records written");
            let read = read_partition(
                bed.source_bootstrap(),
                TOPIC,
                partition,
                next_offset[p],
                end,
            )
            .unwrap_or_else(|e| panic!("read back {codec} {mode:?}: {e:#}"));
            // The mock writes no transaction markers: offsets stay contiguous
            // and aborted records are read like committed ones.
            check_contiguous(&read).expect("contiguous offsets");
            assert_identical(&written.as_consumed(), &read);
            next_offset[p] = end;
            combo += 1;
        }
    }
    for (p, end) in next_offset.iter().enumerate() {
        assert_eq!(
            watermarks(bed.source_bootstrap(), TOPIC, p as i32).expect("watermarks"),
            (0, *end)
        );
    }
}

#[test]
fn force_trim_raises_the_log_start_offset() {
    let bed = Bed::start("force_trim_raises_the_log_start_offset").expect("bed starts");
    bed.clusters
        .create_topic(Side::Source, TOPIC, 4)
        .expect("topic created");
    let spec = ProduceSpec::default();
    produce(bed.source_bootstrap(), TOPIC, 2, 100, &spec).expect("produce");

    let low = bed
        .clusters
        .force_trim(Side::Source, TOPIC, 2)
        .expect("trim");
    assert!(low > 0, "log start {low}");
    let (wm_low, high) = bed
        .clusters
        .watermarks(Side::Source, TOPIC, 2)
        .expect("watermarks");
    assert_eq!(wm_low, low);
    assert!(high > low);
    // Other partitions are untouched.
    assert_eq!(
        bed.clusters
            .watermarks(Side::Source, TOPIC, 1)
            .expect("watermarks"),
        (0, 0)
    );

    // Below the log start a reader gets an error, not a silent jump.
    let err = read_partition_with_timeout(
        bed.source_bootstrap(),
        TOPIC,
        2,
        0,
        high,
        Duration::from_secs(10),
    )
    .expect_err("reading below the log start fails");
    assert!(format!("{err:#}").contains("ut of range"), "{err:#}");

    // Trim records are regenerable: seq = offset.
    let from = low.max(100);
    let read = read_partition(bed.source_bootstrap(), TOPIC, 2, from, high).expect("read");
    let expected: Vec<ConsumedRecord> = (from..high)
        .map(|o| expected_record(TOPIC, 2, o as u64, &trim_spec()).at(o))
        .collect();
    assert_identical(&expected, &read);
}

#[tokio::test]
async fn etcd_answers_put_and_get() {
    let bed = Bed::start("etcd_answers_put_and_get").expect("bed starts");
    let mut client = etcd_client::Client::connect([bed.etcd_endpoint()], None)
        .await
        .expect("etcd connects");
    client
        .put("/cutover/v1/bed-check", "ok", None)
        .await
        .expect("put");
    let resp = client
        .get("/cutover/v1/bed-check", None)
        .await
        .expect("get");
    let value = resp.kvs().first().map(|kv| kv.value().to_vec());
    assert_eq!(value.as_deref(), Some(&b"ok"[..]));
    assert!(bed.log_dir().join("etcd.log").exists());
}

#[test]
fn fault_injection_moves_leaders_and_fails_requests() {
    let bed = Bed::start("fault_injection_moves_leaders_and_fails_requests").expect("bed starts");
    let c = &bed.clusters;
    c.create_topic_both(TOPIC, 2).expect("topic");
    assert_eq!(c.broker_ids(Side::Target), vec![1, 2, 3]);
    assert_eq!(c.broker_ids(Side::Source), vec![1]);

    let before = c.partition_leader(Side::Target, TOPIC, 0).expect("leader");
    let moved = c.move_leader(Side::Target, TOPIC, 0).expect("move leader");
    assert_ne!(before, moved);
    assert_eq!(
        c.partition_leader(Side::Target, TOPIC, 0).expect("leader"),
        moved
    );
    assert!(c.move_leader(Side::Source, TOPIC, 0).is_err(), "1 broker");

    // Two failed Produce requests; the idempotent producer retries through.
    c.push_request_errors(
        Side::Target,
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    )
    .expect("errors pushed");
    let spec = ProduceSpec {
        mode: ProduceMode::Idempotent,
        ..ProduceSpec::default()
    };
    let written = produce(bed.target_bootstrap(), TOPIC, 0, 50, &spec).expect("produce retries");
    let read = read_partition(bed.target_bootstrap(), TOPIC, 0, 0, 50).expect("read");
    assert_identical(&written.as_consumed(), &read);

    // A pushed non-retriable Produce error fails the next write; a
    // cleared one does not.
    let auth_failed = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED];
    let plain = ProduceSpec {
        first_seq: 50,
        ..ProduceSpec::default()
    };
    c.push_request_errors(Side::Target, RDKafkaApiKey::Produce, &auth_failed)
        .expect("errors pushed");
    let err = produce(bed.target_bootstrap(), TOPIC, 0, 1, &plain)
        .expect_err("the pushed error fails the write");
    assert!(format!("{err:#}").contains("uthoriz"), "{err:#}");
    c.push_request_errors(Side::Target, RDKafkaApiKey::Produce, &auth_failed)
        .expect("errors pushed");
    c.clear_request_errors(Side::Target, RDKafkaApiKey::Produce)
        .expect("clear");
    let written =
        produce(bed.target_bootstrap(), TOPIC, 0, 1, &plain).expect("cleared errors are gone");
    assert_eq!(written.first_offset(), Some(50));

    // A panicking closure does not take the cluster down.
    let leader = c.partition_leader(Side::Target, TOPIC, 1).expect("leader");
    assert!(c
        .with_mock(Side::Target, |_| -> () { panic!("deliberate") })
        .is_err());
    assert_eq!(
        c.partition_leader(Side::Target, TOPIC, 1).expect("leader"),
        leader
    );

    // A broker that is down refuses connections until it is up again.
    let port = ports(bed.target_bootstrap())[1];
    c.broker_down(Side::Target, 2).expect("down");
    assert!(!accepts(port), "broker 2 still accepts connections");
    c.broker_up(Side::Target, 2).expect("up");
    assert!(accepts(port), "broker 2 refuses connections");

    c.set_rtt(Side::Source, -1, Duration::from_millis(1))
        .expect("rtt");
    c.clear_request_errors(Side::Target, RDKafkaApiKey::Produce)
        .expect("clear");
    let bootstrap = c
        .with_mock(Side::Target, |m| m.bootstrap_servers())
        .expect("escape hatch");
    assert_eq!(bootstrap, bed.target_bootstrap());
}

#[test]
fn load_generator_writes_regenerable_records_at_its_rate() {
    let bed = Bed::start("load_generator_writes_regenerable_records_at_its_rate").expect("bed");
    bed.clusters
        .create_topic(Side::Source, TOPIC, 3)
        .expect("topic");
    let parts: Vec<(String, i32)> = (0..3).map(|p| (TOPIC.to_owned(), p)).collect();
    let spec = ProduceSpec {
        mode: ProduceMode::Idempotent,
        codec: Codec::Lz4,
        first_seq: 500,
        ..ProduceSpec::default()
    };
    let load = LoadGenerator::start(bed.source_bootstrap(), &parts, 2000, spec.clone())
        .expect("load starts");
    load.wait_acked(300, Duration::from_secs(10))
        .expect("records acknowledged");
    let report = load.stop().expect("load stops");
    assert!(report.total_acked() >= 300);
    assert_eq!(report.total_failed(), 0);
    for ((topic, p), l) in &report.partitions {
        assert!(l.in_order, "{topic}/{p}: {l:?}");
        assert_eq!(l.acked, l.sent, "{topic}/{p}");
        let first = l.first_offset.expect("something written");
        let last = l.last_offset.expect("something written");
        let read =
            read_partition(bed.source_bootstrap(), topic, *p, first, last + 1).expect("read");
        let expected: Vec<ConsumedRecord> = (first..=last)
            .map(|o| expected_record(topic, *p, l.first_seq + (o - first) as u64, &spec).at(o))
            .collect();
        assert_identical(&expected, &read);
    }
    assert!(
        LoadGenerator::start(bed.source_bootstrap(), &parts, 0, ProduceSpec::default()).is_err()
    );
}

#[test]
fn service_process_sigterm_kill9_and_drop_end_it() {
    let logs = test_log_dir("service_process_sigterm_kill9_and_drop_end_it").expect("log dir");
    let args = ["600".to_owned()];

    let p = ServiceProcess::spawn_path("sleep-term", sleep_binary(), &args, &logs).expect("spawn");
    assert!(p.is_running());
    p.sigterm().expect("sigterm");
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert_eq!(status.signal(), Some(15));
    assert!(!p.is_running());
    p.sigterm()
        .expect("signalling an exited process is a no-op");

    let p = ServiceProcess::spawn_path("sleep-kill", sleep_binary(), &args, &logs).expect("spawn");
    let status = p.kill9().expect("kill9");
    assert_eq!(status.signal(), Some(9));

    let p = ServiceProcess::spawn_path("sleep-drop", sleep_binary(), &args, &logs).expect("spawn");
    let pid = p.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert!(
        p.wait_exit(Duration::from_millis(50)).is_err(),
        "still running"
    );
    drop(p);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived the drop"
    );

    // Output lands in <log_dir>/<name>.log; an early exit fails readiness
    // at once with the log tail.
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "echo starting; echo boom >&2; exit 3"]);
    let p = ServiceProcess::spawn_command("crasher", cmd, &logs).expect("spawn");
    let url = format!("http://127.0.0.1:{}/healthz", free_port().expect("port"));
    let err = p
        .wait_http_ok(&url, Duration::from_secs(20))
        .expect_err("readiness fails when the process exits");
    let msg = format!("{err:#}");
    assert!(msg.contains("exited") && msg.contains("boom"), "{msg}");
    assert_eq!(
        p.wait_exit(Duration::from_secs(1)).expect("exited").code(),
        Some(3)
    );
    assert_eq!(p.log_tail(1), "boom");
    assert!(logs.join("crasher.log").exists());

    let err = ServiceProcess::spawn("x", "cutover-no-such-binary", &[], &logs)
        .err()
        .expect("missing binary is an error");
    assert!(format!("{err:#}").contains("cargo build --bins"), "{err:#}");
}

#[test]
fn wait_http_ok_sees_a_healthy_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        // Refuse once with 503, then answer 200.
        for status in ["503 Service Unavailable", "200 OK"] {
            let (mut conn, _) = listener.accept().expect("accept");
            // Read the whole request: closing with unread bytes would reset
            // the connection and lose the response.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    wait_http_ok(
        &format!("http://127.0.0.1:{port}/healthz"),
        Duration::from_secs(10),
    )
    .expect("healthy");
    server.join().expect("server thread");
}

#[test]
fn everything_stops_when_the_bed_is_dropped() {
    let bed = Bed::start("everything_stops_when_the_bed_is_dropped").expect("bed starts");
    let etcd = bed.etcd_endpoint().to_owned();
    let etcd_port: u16 = etcd
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("etcd endpoint has a port");
    let mut broker_ports = ports(bed.source_bootstrap());
    broker_ports.extend(ports(bed.target_bootstrap()));
    assert_eq!(broker_ports.len(), 4);
    let needle = format!("--listen-client-urls={etcd}");
    assert_eq!(processes_with_arg(&needle).len(), 1, "etcd runs");
    assert!(accepts(etcd_port));
    assert!(broker_ports.iter().all(|p| accepts(*p)));

    drop(bed);
    assert!(processes_with_arg(&needle).is_empty(), "etcd still runs");
    assert!(!accepts(etcd_port), "etcd port still open");
    for p in broker_ports {
        assert!(!accepts(p), "mock broker port {p} still open");
    }
}

#[test]
fn everything_stops_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let bed = Bed::start("everything_stops_when_a_test_panics").expect("bed starts");
        let sleeper = ServiceProcess::spawn_path(
            "sleeper",
            sleep_binary(),
            &["600".to_owned()],
            bed.log_dir(),
        )
        .expect("spawn");
        let _ = tx.send((
            bed.etcd_endpoint().to_owned(),
            bed.source_bootstrap().to_owned(),
            sleeper.pid(),
        ));
        panic!("deliberate panic with the bed running");
    });
    assert!(result.is_err());
    let (etcd, source, pid) = rx.recv().expect("endpoints sent before the panic");
    assert!(processes_with_arg(&format!("--listen-client-urls={etcd}")).is_empty());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sleeper survived"
    );
    assert!(!accepts(ports(&source)[0]), "source broker still listens");
}

#[test]
fn testbed_binary_prints_endpoints_and_stops() {
    let bin = bin_path("cutover-testbed").expect("testbed binary next to the tests");
    assert_eq!(bin, Path::new(env!("CARGO_BIN_EXE_cutover-testbed")));
    let logs = test_log_dir("testbed_binary_prints_endpoints_and_stops").expect("log dir");

    // Stops at end of stdin.
    let mut child = Command::new(&bin)
        .args(["--topics", "a:2,b:3", "--produce-rate", "500", "--log-dir"])
        .arg(&logs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("testbed starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    let source = ready["source"].as_str().expect("source").to_owned();
    let target = ready["target"].as_str().expect("target").to_owned();
    let etcd = ready["etcd"].as_str().expect("etcd").to_owned();
    assert_eq!(ready["logs"].as_str(), logs.to_str());
    // Real Apache Kafka by default, the source on the older pinned line.
    assert_eq!(ready["kafka"]["kind"], "real", "{ready}");
    assert!(
        ready["kafka"]["source_version"].as_str() < ready["kafka"]["target_version"].as_str(),
        "{ready}"
    );
    assert_eq!(ports(&target).len(), 3);
    assert!(etcd.starts_with("http://127.0.0.1:"));
    assert_eq!(
        watermarks(&target, "b", 2).expect("target topic exists"),
        (0, 0)
    );
    // The load generator writes to the source.
    let read = read_partition(&source, "a", 1, 0, 5).expect("generated records");
    assert_eq!(read.len(), 5);
    drop(child.stdin.take());
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status}");
    let source_ports = ports(&source);
    assert!(!accepts(source_ports[0]));

    // Stops on SIGTERM (here with the mock clusters).
    let mut child = Command::new(&bin)
        .args(["--kafka", "mock", "--ignore-stdin", "--log-dir"])
        .arg(&logs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("testbed starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert!(line.contains("\"etcd\""), "{line}");
    assert!(line.contains("\"kind\":\"mock\""), "{line}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status}");
}
