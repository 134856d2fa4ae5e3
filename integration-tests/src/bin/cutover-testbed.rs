//! `cutover-testbed`: etcd and two Kafka clusters (source: 1 broker,
//! target: 3), real Apache Kafka by default (`--kafka real`: the pinned
//! versions, see integration-tests/kafka/versions.env) or librdkafka's mock
//! clusters inside this process (`--kafka mock`), for running the services
//! by hand and for scripts.
//!
//! Prints one JSON line on stdout once everything is ready:
//! `{"etcd":"http://127.0.0.1:P","source":"host:p","target":"host:p,...","logs":"DIR"}`
//! then runs until SIGTERM, SIGINT or end of stdin (unless `--ignore-stdin`),
//! and stops everything.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use cutover_coord::testing::EtcdServer;
use cutover_integration_tests::{
    test_log_dir, Clusters, Codec, KafkaOptions, LoadGenerator, ProduceMode, ProduceSpec,
    RealClusters, Side,
};
use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Debug, Parser)]
#[command(
    name = "cutover-testbed",
    about = "etcd + source and target Kafka clusters (real Apache Kafka, or librdkafka's mock)"
)]
struct Args {
    /// Real Apache Kafka brokers (one JVM each) or librdkafka's mock
    /// clusters (in this process; for fault injection).
    #[arg(long, value_enum, default_value_t = KafkaKind::Real)]
    kafka: KafkaKind,
    /// Topics to create, `name:partitions,...`.
    #[arg(long, value_delimiter = ',')]
    topics: Vec<String>,
    /// Create the topics on the source only (default: on both clusters;
    /// `cutover mirror add` accepts an identical empty target topic, and the
    /// mock target cannot create topics itself).
    #[arg(long)]
    source_only: bool,
    /// Write this many records per second (all partitions of all topics,
    /// round-robin, idempotent producer) to the source.
    #[arg(long, default_value_t = 0)]
    produce_rate: u64,
    /// Codec of the load generator.
    #[arg(long, default_value = "none")]
    codec: Codec,
    /// Brokers of the source cluster.
    #[arg(long, default_value_t = 1)]
    source_brokers: i32,
    /// Brokers of the target cluster.
    #[arg(long, default_value_t = 3)]
    target_brokers: i32,
    /// Directory for etcd's log (default: target/test-logs/testbed, cleared).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Do not stop at end of stdin (for running in the background with
    /// stdin from /dev/null).
    #[arg(long)]
    ignore_stdin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KafkaKind {
    Real,
    Mock,
}

/// The clusters of either kind; dropping it stops them.
enum Kafka {
    Real(Box<RealClusters>),
    Mock(Clusters),
}

impl Kafka {
    fn bootstrap(&self, side: Side) -> &str {
        match self {
            Kafka::Real(k) => k.cluster(side).bootstrap(),
            Kafka::Mock(c) => c.bootstrap(side),
        }
    }

    fn create_topic(&self, side: Side, name: &str, partitions: i32) -> Result<()> {
        match self {
            Kafka::Real(k) => k.create_topic(side, name, partitions, &[]),
            Kafka::Mock(c) => c.create_topic(side, name, partitions),
        }
    }
}

fn parse_topic(spec: &str) -> Result<(String, i32)> {
    let (name, parts) = spec
        .split_once(':')
        .with_context(|| format!("topic {spec:?}: expected name:partitions"))?;
    let parts: i32 = parts
        .parse()
        .with_context(|| format!("topic {spec:?}: bad partition count"))?;
    if name.is_empty() || parts < 1 {
        bail!("topic {spec:?}: need a name and at least one partition");
    }
    Ok((name.to_owned(), parts))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let topics = args
        .topics
        .iter()
        .filter(|t| !t.is_empty())
        .map(|t| parse_topic(t))
        .collect::<Result<Vec<_>>>()?;

    let log_dir = match &args.log_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => test_log_dir("testbed")?,
    };
    let etcd = EtcdServer::start(Some(&log_dir)).context("starting etcd")?;
    let clusters = match args.kafka {
        KafkaKind::Mock => Kafka::Mock(Clusters::start_with(
            args.source_brokers,
            args.target_brokers,
        )?),
        KafkaKind::Real => {
            let mut source = KafkaOptions::source()?;
            source.brokers = args.source_brokers;
            let mut target = KafkaOptions::target()?;
            target.brokers = args.target_brokers;
            Kafka::Real(Box::new(RealClusters::start_with(
                "testbed", source, target, &log_dir,
            )?))
        }
    };
    for (name, parts) in &topics {
        clusters.create_topic(Side::Source, name, *parts)?;
        if !args.source_only {
            clusters.create_topic(Side::Target, name, *parts)?;
        }
    }
    let load = if args.produce_rate > 0 && !topics.is_empty() {
        let partitions: Vec<(String, i32)> = topics
            .iter()
            .flat_map(|(name, parts)| (0..*parts).map(move |p| (name.clone(), p)))
            .collect();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let spec = ProduceSpec {
            codec: args.codec,
            mode: ProduceMode::Idempotent,
            timestamp_base_ms: now_ms,
            ..ProduceSpec::default()
        };
        Some(LoadGenerator::start(
            clusters.bootstrap(Side::Source),
            &partitions,
            args.produce_rate,
            spec,
        )?)
    } else {
        None
    };

    // Handle SIGTERM / SIGINT before announcing readiness: a signal sent as
    // soon as the ready line is read must stop us cleanly, not by default
    // action.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building tokio runtime")?;
    let signals = {
        let _entered = runtime.enter();
        Signals {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        }
    };

    let ready = serde_json::json!({
        "etcd": etcd.endpoint(),
        "kafka": match &clusters {
            Kafka::Real(k) => serde_json::json!({
                "kind": "real",
                "source_version": k.source.version(),
                "target_version": k.target.version(),
            }),
            Kafka::Mock(_) => serde_json::json!({"kind": "mock"}),
        },
        "source": clusters.bootstrap(Side::Source),
        "target": clusters.bootstrap(Side::Target),
        "logs": log_dir.display().to_string(),
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
    }

    let reason = runtime.block_on(wait_for_stop(signals, args.ignore_stdin))?;
    eprintln!("cutover-testbed: stopping ({reason})");

    if let Some(load) = load {
        let report = load.stop()?;
        eprintln!(
            "cutover-testbed: load generator wrote {} records ({} failed)",
            report.total_acked(),
            report.total_failed()
        );
    }
    drop(clusters);
    drop(etcd);
    Ok(())
}

/// Stop signals, handled from creation on.
struct Signals {
    term: Signal,
    int: Signal,
}

async fn wait_for_stop(signals: Signals, ignore_stdin: bool) -> Result<&'static str> {
    let Signals { mut term, mut int } = signals;
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    if !ignore_stdin {
        // A detached thread: a blocking read of stdin cannot be cancelled,
        // and the process exits without waiting for it.
        std::thread::Builder::new()
            .name("stdin-eof".into())
            .spawn(move || {
                let mut buf = [0u8; 1024];
                let mut stdin = std::io::stdin().lock();
                while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
                let _ = eof_tx.send(());
            })
            .context("spawning stdin watcher")?;
    }
    let eof = async {
        if ignore_stdin {
            std::future::pending::<()>().await;
        } else {
            let _ = eof_rx.await;
        }
    };
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = eof => "end of stdin",
    })
}
