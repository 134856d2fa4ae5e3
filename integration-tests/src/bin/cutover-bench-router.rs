//! `just bench-router`: produce (acks=all) and fetch through one router
//! versus directly to the source, same run, same load, real brokers.
//!
//! Measures: the latency of single records produced with acks=all and
//! acknowledged (direct and through the router, interleaved so both see
//! the same machine), p50/p99 and what the router adds; produce and fetch
//! throughput of a bulk load both ways; and the router's CPU per MB moved.
//! Goals (issue 7): added p50 at most 100 µs and p99 at most 500 µs,
//! throughput at least 0.9x direct, at most 5 ms of router CPU per MB.
//! Results on stdout and in `target/bench/router.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use clap::Parser;
use cutover_integration_tests::bench::{median, process_cpu, write_report};
use cutover_integration_tests::cutover::Cutover;
use cutover_integration_tests::{KafkaOptions, RealBed, Side, TestBed};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

#[derive(Parser)]
#[command(
    about = "Produce and fetch through one router versus directly: latency, throughput, router CPU"
)]
struct Args {
    /// Single-record produce round trips measured each way.
    #[arg(long, default_value_t = 2_000)]
    probes: usize,
    /// Rounds of the throughput load (each way once per round).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Rounds run first and not counted: the brokers' JIT compiles the
    /// bulk path during them (a first round's direct produce measured
    /// slower than every later one).
    #[arg(long, default_value_t = 1)]
    warmup_rounds: usize,
    /// MB written (and then read) each way in each round.
    #[arg(long, default_value_t = 128)]
    mb: usize,
    /// Produce goes in chunks of this many MB, direct and routed in turn.
    #[arg(long, default_value_t = 32)]
    chunk_mb: usize,
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    #[arg(long)]
    json: Option<PathBuf>,
}

const PARTITIONS: i32 = 4;

fn producer(bootstrap: &str, linger_ms: &str) -> Result<BaseProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", linger_ms)
        .set("batch.size", "1000000")
        .set("compression.type", "none")
        .create()?)
}

/// Signals each delivery report, so a round trip ends the moment the
/// acknowledgement is there (polling in a loop would round it to the
/// poll's granularity).
struct Acks(std::sync::mpsc::SyncSender<Result<(), String>>);

impl rdkafka::ClientContext for Acks {}

impl rdkafka::producer::ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        let _ = self
            .0
            .send(r.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string()));
    }
}

struct Prober {
    producer: ThreadedProducer<Acks>,
    acks: std::sync::mpsc::Receiver<Result<(), String>>,
}

fn prober(bootstrap: &str) -> Result<Prober> {
    let (tx, acks) = std::sync::mpsc::sync_channel(16);
    let producer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .create_with_context(Acks(tx))?;
    Ok(Prober { producer, acks })
}

/// One record, acknowledged: the round trip.
fn round_trip(p: &Prober, topic: &str, value: &[u8]) -> Result<Duration> {
    let t = Instant::now();
    p.producer
        .send(
            BaseRecord::<[u8], [u8]>::to(topic)
                .partition(0)
                .payload(value),
        )
        .map_err(|(e, _)| e)?;
    match p.acks.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => Ok(t.elapsed()),
        Ok(Err(e)) => bail!("produce failed: {e}"),
        Err(_) => bail!("no acknowledgement in 30 s"),
    }
}

/// What this machine charges any TCP proxy, apart from what the router
/// does: 100-byte round trips to an echo server that answers after
/// `pause`, directly and through a relay that only copies bytes (tokio,
/// two worker threads, like the router), interleaved.
///
/// With a pause as long as the broker's answer takes, the relay's threads
/// fall idle between a request and its answer as the router's do; on a VM
/// whose idle vCPUs halt at once (no guest halt polling), each of the two
/// wake-ups a proxy adds per round trip is then a trip through the
/// hypervisor, which a pause-less echo, answered within microseconds,
/// never pays.
fn relay_floor(probes: usize, pause: Duration) -> Result<Floor> {
    use std::io::{Read, Write};
    let echo = std::net::TcpListener::bind("127.0.0.1:0")?;
    let echo_addr = echo.local_addr()?;
    // Two connections come: the direct one and the relay's.
    let acceptor = std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok((mut s, _)) = echo.accept() else {
                return;
            };
            let _ = s.set_nodelay(true);
            std::thread::spawn(move || {
                let mut buf = [0u8; 100];
                while s.read_exact(&mut buf).is_ok() {
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                    if s.write_all(&buf).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let relay = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let relay_addr = relay.local_addr()?;
    rt.spawn(async move {
        if let Ok((mut client, _)) = relay.accept().await {
            if let Ok(mut upstream) = tokio::net::TcpStream::connect(echo_addr).await {
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        }
    });
    let connect = |addr| -> Result<std::net::TcpStream> {
        let s = std::net::TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(s)
    };
    let mut direct = connect(echo_addr)?;
    let mut relayed = connect(relay_addr)?;
    let ping = [7u8; 100];
    let mut pong = [0u8; 100];
    let mut once = |s: &mut std::net::TcpStream| -> Result<Duration> {
        let t = Instant::now();
        s.write_all(&ping)?;
        s.read_exact(&mut pong)?;
        ensure!(pong == ping, "the echo answered other bytes");
        Ok(t.elapsed())
    };
    let (mut d, mut r) = (Vec::new(), Vec::new());
    for i in 0..probes + 200 {
        let (a, b) = (once(&mut direct)?, once(&mut relayed)?);
        if i >= 200 {
            d.push(a);
            r.push(b);
        }
    }
    drop((direct, relayed));
    rt.shutdown_timeout(Duration::from_secs(1));
    let _ = acceptor.join();
    d.sort();
    r.sort();
    Ok(Floor {
        pause,
        d50: percentile(&d, 0.5),
        d99: percentile(&d, 0.99),
        r50: percentile(&r, 0.5),
        r99: percentile(&r, 0.99),
    })
}

/// Round trips to the echo server, µs: directly and through the relay.
struct Floor {
    pause: Duration,
    d50: f64,
    d99: f64,
    r50: f64,
    r99: f64,
}

impl Floor {
    fn print(&self) {
        println!(
            "machine floor, 100-byte TCP round trip answered after {} µs: direct p50 {:.0} µs p99 {:.0} µs; \
             through a byte relay p50 {:.0} µs p99 {:.0} µs; a relay adds p50 {:.0} µs, p99 {:.0} µs",
            self.pause.as_micros(),
            self.d50,
            self.d99,
            self.r50,
            self.r99,
            self.r50 - self.d50,
            self.r99 - self.d99
        );
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "pause_us": self.pause.as_micros() as u64,
            "direct": {"p50": self.d50, "p99": self.d99},
            "relayed": {"p50": self.r50, "p99": self.r99},
            "added": {"p50": self.r50 - self.d50, "p99": self.r99 - self.d99},
        })
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Writes `mb` MB of `record_bytes` records round-robin over the topic's
/// partitions as fast as the producer goes, waiting for every
/// acknowledgement; returns the seconds taken.
fn bulk_produce(p: &BaseProducer, topic: &str, mb: usize, record_bytes: usize) -> Result<f64> {
    let value = vec![b'x'; record_bytes];
    let n = mb * 1024 * 1024 / record_bytes;
    let t = Instant::now();
    for i in 0..n {
        let partition = (i % PARTITIONS as usize) as i32;
        loop {
            match p.send(
                BaseRecord::<[u8], [u8]>::to(topic)
                    .partition(partition)
                    .payload(&value),
            ) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    p.poll(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("produce to {topic}: {e}"),
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(120))
        .context("flushing the bulk load")?;
    Ok(t.elapsed().as_secs_f64())
}

/// One round's produce load both ways, in chunks of `chunk_mb` taken in
/// turn (the way going first alternating from chunk to chunk), so that a
/// shared machine's drift falls on both ways within a fraction of a
/// second. Each chunk waits for its acknowledgements, which costs the
/// router its added latency once per chunk. Returns the MB/s of each way
/// (`[direct, router]`).
fn produce_in_turns(
    ways: [(&str, String); 2],
    mb: usize,
    chunk_mb: usize,
    record_bytes: usize,
) -> Result<[f64; 2]> {
    let producers = [producer(ways[0].0, "5")?, producer(ways[1].0, "5")?];
    let chunks = mb / chunk_mb;
    let mut secs = [0.0f64; 2];
    for c in 0..chunks {
        let order = if c % 2 == 0 { [0, 1] } else { [1, 0] };
        for w in order {
            secs[w] += bulk_produce(&producers[w], &ways[w].1, chunk_mb, record_bytes)?;
        }
    }
    let written = (chunks * chunk_mb) as f64;
    Ok([written / secs[0], written / secs[1]])
}

/// Reads the topic from the start up to `ends` (per partition); returns
/// the seconds and bytes read.
fn bulk_fetch(bootstrap: &str, topic: &str, ends: &[i64]) -> Result<(f64, u64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-router-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "8388608")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut next = vec![0i64; PARTITIONS as usize];
    let mut bytes = 0u64;
    let t = Instant::now();
    while next.iter().zip(ends).any(|(n, e)| n < e) {
        ensure!(
            t.elapsed() < Duration::from_secs(300),
            "fetch took over 300 s"
        );
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m?;
            bytes += m.payload_len() as u64;
            next[m.partition() as usize] = m.offset() + 1;
        }
    }
    Ok((t.elapsed().as_secs_f64(), bytes))
}

/// Throughput of one round, MB/s: `[direct, through the router]`.
struct Round {
    produce: [f64; 2],
    fetch: [f64; 2],
}

fn log_ends(bootstrap: &str, topic: &str) -> Result<Vec<i64>> {
    (0..PARTITIONS)
        .map(|p| Ok(cutover_integration_tests::watermarks(bootstrap, topic, p)?.1))
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let mut source = KafkaOptions::source()?;
    let mut target = KafkaOptions::target()?;
    for o in [&mut source, &mut target] {
        o.heap_mb = 1024;
        o.quick_jit = false;
    }
    // The source's log on tmpfs when there is one: the disk's writeback
    // of earlier rounds otherwise lands on whichever way runs at that
    // moment (direct produce measured 144 to 374 MB/s in one run), and it
    // is neither way's cost.
    let shm = Path::new("/dev/shm");
    let tmpfs_log = shm.is_dir().then(|| shm.join("cutover-bench-router"));
    if let Some(dir) = &tmpfs_log {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("clearing {}", dir.display()))
            }
            _ => {}
        }
        source
            .overrides
            .insert("log.dirs".into(), dir.display().to_string());
    }
    let bed = RealBed::start_own_with("bench-router", source, target)?;
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        args.chunk_mb > 0 && args.mb % args.chunk_mb == 0,
        "--mb ({}) must be a multiple of --chunk-mb ({})",
        args.mb,
        args.chunk_mb
    );
    bed.kafka
        .create_topic(Side::Source, "lat", PARTITIONS, &[])?;
    for round in 0..args.warmup_rounds + args.rounds {
        for way in ["direct", "router"] {
            bed.kafka.create_topic(
                Side::Source,
                &format!("bulk-{round}-{way}"),
                PARTITIONS,
                &[],
            )?;
        }
    }
    let cutover = Cutover::start(&bed)?;
    cutover.create_link(&bed, "l1", &[])?;
    let router = cutover.start_router(1, "l1")?;
    let router_pid = u32::try_from(router.process.pid())?;
    let direct_addr = bed.source_bootstrap().to_owned();

    // What the machine alone charges a proxy: two more loopback crossings
    // and thread wake-ups per round trip, with no Kafka work.
    let floor = relay_floor(args.probes, Duration::ZERO)?;
    floor.print();

    // Latency: one record at a time, alternating, after a warm-up.
    let direct = prober(&direct_addr)?;
    let routed = prober(&router.kafka)?;
    let value = vec![b'p'; 100];
    for _ in 0..200 {
        round_trip(&direct, "lat", &value)?;
        round_trip(&routed, "lat", &value)?;
    }
    let (mut d, mut r) = (Vec::new(), Vec::new());
    for _ in 0..args.probes {
        d.push(round_trip(&direct, "lat", &value)?);
        r.push(round_trip(&routed, "lat", &value)?);
    }
    d.sort();
    r.sort();
    let (d50, d99, r50, r99) = (
        percentile(&d, 0.5),
        percentile(&d, 0.99),
        percentile(&r, 0.5),
        percentile(&r, 0.99),
    );
    println!(
        "produce acks=all, one record: direct p50 {d50:.0} µs p99 {d99:.0} µs; through the router \
         p50 {r50:.0} µs p99 {r99:.0} µs; added p50 {:.0} µs (goal ≤ 100), p99 {:.0} µs (goal ≤ 500)",
        r50 - d50,
        r99 - d99
    );
    drop((direct, routed));
    // The same relay with the echo answering as late as the broker did.
    let paused_floor = relay_floor(args.probes, Duration::from_micros(d50 as u64))?;
    paused_floor.print();

    // Throughput and router CPU: rounds of the same load each way, the
    // order swapped every round, so drift of a shared machine (the
    // brokers' page cache, JIT, other work) falls on both ways alike; each
    // round's ratio compares two loads seconds apart, and the report takes
    // the median round.
    let mb = args.mb as f64;
    let mut rounds = Vec::new();
    let (mut produce_cpu, mut fetch_cpu) = (Duration::ZERO, Duration::ZERO);
    let (mut produce_mb, mut fetch_mb) = (0.0, 0.0);
    for round in 0..args.warmup_rounds + args.rounds {
        let counted = round >= args.warmup_rounds;
        let ways: [(&str, bool); 2] = if round % 2 == 0 {
            [(direct_addr.as_str(), false), (router.kafka.as_str(), true)]
        } else {
            [(router.kafka.as_str(), true), (direct_addr.as_str(), false)]
        };
        let topic =
            |routed: bool| format!("bulk-{round}-{}", if routed { "router" } else { "direct" });
        let cpu = process_cpu(router_pid)?;
        let produce = produce_in_turns(
            [
                (direct_addr.as_str(), topic(false)),
                (router.kafka.as_str(), topic(true)),
            ],
            args.mb,
            args.chunk_mb,
            args.record_bytes,
        )?;
        if counted {
            produce_cpu += process_cpu(router_pid)?.saturating_sub(cpu);
            produce_mb += mb;
        }
        let mut fetch = [0.0f64; 2];
        for (bootstrap, routed) in ways {
            let ends = log_ends(&direct_addr, &topic(routed))?;
            let cpu = process_cpu(router_pid)?;
            let (secs, bytes) = bulk_fetch(bootstrap, &topic(routed), &ends)?;
            let read_mb = bytes as f64 / 1048576.0;
            fetch[usize::from(routed)] = read_mb / secs;
            if routed && counted {
                fetch_cpu += process_cpu(router_pid)?.saturating_sub(cpu);
                fetch_mb += read_mb;
            }
        }
        let name = if counted {
            format!("round {}", round + 1 - args.warmup_rounds)
        } else {
            format!("warm-up {}", round + 1)
        };
        println!(
            "{name}: produce direct {:.1} MB/s, router {:.1} MB/s ({:.2}x); fetch direct {:.1} MB/s, router {:.1} MB/s ({:.2}x)",
            produce[0],
            produce[1],
            produce[1] / produce[0],
            fetch[0],
            fetch[1],
            fetch[1] / fetch[0]
        );
        if counted {
            rounds.push(Round { produce, fetch });
        }
    }
    let produce_ratio = median(rounds.iter().map(|r| r.produce[1] / r.produce[0]));
    let fetch_ratio = median(rounds.iter().map(|r| r.fetch[1] / r.fetch[0]));
    let produce_cpu_ms = produce_cpu.as_secs_f64() * 1e3 / produce_mb;
    let fetch_cpu_ms = fetch_cpu.as_secs_f64() * 1e3 / fetch_mb;
    println!(
        "produce, median of {} rounds of {} MB: direct {:.1} MB/s, through the router {:.1} MB/s, \
         ratio {:.2}x (goal ≥ 0.9); router CPU {:.2} ms per MB (goal ≤ 5)",
        args.rounds,
        args.mb,
        median(rounds.iter().map(|r| r.produce[0])),
        median(rounds.iter().map(|r| r.produce[1])),
        produce_ratio,
        produce_cpu_ms
    );
    println!(
        "fetch, median of {} rounds: direct {:.1} MB/s, through the router {:.1} MB/s, \
         ratio {:.2}x (goal ≥ 0.9); router CPU {:.2} ms per MB (goal ≤ 5)",
        args.rounds,
        median(rounds.iter().map(|r| r.fetch[0])),
        median(rounds.iter().map(|r| r.fetch[1])),
        fetch_ratio,
        fetch_cpu_ms
    );
    // How the router's read-ahead of fetches went (used: the client's next
    // Fetch was answered from it).
    let metrics = cutover_integration_tests::http_get(
        &format!("http://{}/metrics", router.http),
        std::time::Duration::from_secs(5),
    )?
    .body;
    let readahead: BTreeMap<String, f64> = cutover_integration_tests::cutover::metric_samples(
        &metrics,
        "cutover_router_fetch_readahead_total",
    )
    .into_iter()
    .filter_map(|(l, v)| Some((l.get("outcome")?.clone(), v)))
    .collect();
    println!("fetch read-ahead by outcome: {readahead:?}");
    let out = json!({
        "fetch_readahead": readahead,
        "source_log_on_tmpfs": tmpfs_log.is_some(),
        "probes": args.probes,
        "warmup_rounds": args.warmup_rounds,
        "relay_floor_us": floor.json(),
        "relay_floor_paused_us": paused_floor.json(),
        "produce_latency_us": {
            "direct": {"p50": d50, "p99": d99},
            "router": {"p50": r50, "p99": r99},
            "added": {"p50": r50 - d50, "p99": r99 - d99},
        },
        "rounds": rounds.iter().map(|r| json!({
            "produce_mb_s": {"direct": r.produce[0], "router": r.produce[1]},
            "fetch_mb_s": {"direct": r.fetch[0], "router": r.fetch[1]},
        })).collect::<Vec<_>>(),
        "produce": {
            "mb_per_round": args.mb,
            "chunk_mb": args.chunk_mb,
            "record_bytes": args.record_bytes,
            "median_ratio": produce_ratio,
            "router_cpu_ms_per_mb": produce_cpu_ms,
        },
        "fetch": {
            "median_ratio": fetch_ratio,
            "router_cpu_ms_per_mb": fetch_cpu_ms,
        },
        "total_secs": started.elapsed().as_secs_f64(),
    });
    write_report(args.json.as_deref(), "router.json", &out, started)?;
    // The log is memory: stop the brokers, then free it.
    drop(router);
    drop(cutover);
    drop(bed);
    if let Some(dir) = &tmpfs_log {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}
