//! Real Apache Kafka brokers (KRaft), assembled from Maven Central.
//!
//! `integration-tests/kafka/fetch.sh` resolves the pinned versions
//! (`integration-tests/kafka/versions.env`) into `target/kafka/<version>/`
//! once; [`KafkaDist::locate`] runs it when a folder is missing. Every node
//! is its own JVM (`kafka.Kafka server.properties`), started through
//! `Tether` (`integration-tests/kafka/tether/Tether.java`): a JVM halts when
//! its standard input closes, and the bed holds the write end, so brokers
//! never outlive the test process, whether it ends, panics or is killed.
//! One JVM per node (rather than Kafka's in-JVM test kit) is what lets a
//! test kill -9, SIGSTOP or restart a single broker, as happens to real
//! brokers; ARCHITECTURE.md has the measured cost of both.
//!
//! A cluster of `n` nodes: node 1 is broker and controller (a static
//! one-voter quorum), nodes 2..=n are brokers only, so stopping any node
//! but 1 leaves the cluster able to elect leaders. Readiness is a real
//! Metadata answer (from librdkafka) listing every broker.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use nix::sys::signal::Signal;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::clusters::Side;
use crate::process::{free_port, profile_dir, ServiceProcess};

/// The pinned versions (`integration-tests/kafka/versions.env`).
const VERSIONS_ENV: &str = include_str!("../kafka/versions.env");

/// How long a cluster may take from launch to a full Metadata answer.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

fn pinned(key: &str) -> Result<String> {
    VERSIONS_ENV
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
        .ok_or_else(|| anyhow!("{key} missing from integration-tests/kafka/versions.env"))
}

/// The Kafka version the bed runs as the target (the newer line).
pub fn target_version() -> Result<String> {
    pinned("TARGET_KAFKA_VERSION")
}

/// The Kafka version the bed runs as the source (an older line).
pub fn source_version() -> Result<String> {
    pinned("SOURCE_KAFKA_VERSION")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One resolved Kafka version: a folder of jars plus the tether.
#[derive(Debug, Clone)]
pub struct KafkaDist {
    pub version: String,
    jars: PathBuf,
    tether: PathBuf,
}

fn kafka_home() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CUTOVER_KAFKA_HOME") {
        return Ok(PathBuf::from(dir));
    }
    let profile = profile_dir()?;
    let target = profile
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent dir", profile.display()))?;
    Ok(target.join("kafka"))
}

fn fetch_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka/fetch.sh")
}

impl KafkaDist {
    /// The jars of `version`, resolving them first (`fetch.sh`) if missing.
    pub fn locate(version: &str) -> Result<KafkaDist> {
        // One resolution at a time within this process; fetch.sh itself
        // moves a complete folder into place in one rename.
        static FETCH: Mutex<()> = Mutex::new(());
        let home = kafka_home()?;
        let dist = KafkaDist {
            version: version.to_owned(),
            jars: home.join(version),
            tether: home.join("tether"),
        };
        let _guard = lock(&FETCH);
        if !dist.is_complete() {
            let script = fetch_script();
            let out = Command::new("bash")
                .arg(&script)
                .env("CUTOVER_KAFKA_HOME", &home)
                .output()
                .with_context(|| format!("running {}", script.display()))?;
            if !out.status.success() {
                bail!(
                    "resolving Apache Kafka {version} failed ({}); run `just kafka-jars` to see why:\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            if !dist.is_complete() {
                bail!(
                    "{} ran but {} is still incomplete; is {version} pinned in versions.env?",
                    script.display(),
                    dist.jars.display()
                );
            }
        }
        Ok(dist)
    }

    fn is_complete(&self) -> bool {
        self.jars.join(".complete").is_file() && self.tether.join("Tether.class").is_file()
    }

    /// `-cp` value: every jar of the version, and the tether.
    pub fn classpath(&self) -> String {
        format!("{}/*:{}", self.jars.display(), self.tether.display())
    }

    /// Kafka 3.x logs through log4j 1 (reload4j), 4.x through log4j 2.
    fn legacy_logging(&self) -> bool {
        self.version.starts_with("3.")
    }

    /// A `java` command running `main_class` of this version under the
    /// tether, with logging to stdout at INFO (the caller's ServiceProcess
    /// puts stdout in the test's log dir); the program's arguments follow.
    /// `quick_jit` stops at C1 (`-XX:TieredStopAtLevel=1`): a faster start
    /// and a slower steady state, for tests but not for benchmarks.
    pub fn java(
        &self,
        main_class: &str,
        heap_mb: u32,
        quick_jit: bool,
        conf_dir: &Path,
    ) -> Result<Command> {
        let java = match std::env::var_os("JAVA_HOME") {
            Some(h) => PathBuf::from(h).join("bin/java"),
            None => PathBuf::from("java"),
        };
        let mut cmd = Command::new(java);
        cmd.arg(format!("-Xms{heap_mb}m"))
            .arg(format!("-Xmx{heap_mb}m"))
            .arg("-XX:+UseSerialGC")
            .arg("-Djava.awt.headless=true");
        if quick_jit {
            cmd.arg("-XX:TieredStopAtLevel=1");
        }
        cmd.arg(self.log_config_arg(conf_dir)?);
        cmd.arg("-cp")
            .arg(self.classpath())
            .arg("Tether")
            .arg(main_class);
        Ok(cmd)
    }

    fn log_config_arg(&self, conf_dir: &Path) -> Result<String> {
        std::fs::create_dir_all(conf_dir)
            .with_context(|| format!("creating {}", conf_dir.display()))?;
        if self.legacy_logging() {
            let path = conf_dir.join("log4j.properties");
            std::fs::write(&path, LOG4J1).with_context(|| format!("writing {}", path.display()))?;
            Ok(format!("-Dlog4j.configuration=file:{}", path.display()))
        } else {
            let path = conf_dir.join("log4j2.properties");
            std::fs::write(&path, LOG4J2).with_context(|| format!("writing {}", path.display()))?;
            Ok(format!("-Dlog4j2.configurationFile={}", path.display()))
        }
    }
}

/// Brokers log to stdout at INFO; the request and state-change loggers,
/// which write a line per request or partition change, only at WARN.
const LOG4J2: &str = "\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
";

const LOG4J1: &str = "\
log4j.rootLogger=INFO, out
log4j.appender.out=org.apache.log4j.ConsoleAppender
log4j.appender.out.layout=org.apache.log4j.PatternLayout
log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
";

/// How to run a cluster.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    pub version: String,
    pub brokers: i32,
    /// Heap of each broker JVM.
    pub heap_mb: u32,
    /// C1 only (`-XX:TieredStopAtLevel=1`): faster start, slower steady
    /// state. On for tests, off for benchmarks.
    pub quick_jit: bool,
    /// Broker settings added to (or replacing) the bed's defaults.
    pub overrides: BTreeMap<String, String>,
    /// Listeners beside the bed's PLAINTEXT one, on node 1 only (the
    /// security tests' SASL_SSL and SSL listeners); settings per listener
    /// go in `overrides` (`listener.name.<name>.…`).
    pub extra_listeners: Vec<ExtraListener>,
}

/// One more listener of a broker: `name` with `protocol` (Kafka's
/// `security.protocol` values) on 0.0.0.0:`port`, advertised as 127.0.0.1.
#[derive(Debug, Clone)]
pub struct ExtraListener {
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

impl KafkaOptions {
    pub fn new(version: &str, brokers: i32) -> KafkaOptions {
        KafkaOptions {
            version: version.to_owned(),
            brokers,
            heap_mb: 512,
            quick_jit: true,
            overrides: BTreeMap::new(),
            extra_listeners: Vec::new(),
        }
    }

    /// The bed's source: 1 broker on the older line.
    pub fn source() -> Result<KafkaOptions> {
        Ok(KafkaOptions::new(&source_version()?, 1))
    }

    /// The bed's target: 3 brokers on the newer line.
    pub fn target() -> Result<KafkaOptions> {
        Ok(KafkaOptions::new(&target_version()?, 3))
    }
}

struct Node {
    id: i32,
    port: u16,
    config: PathBuf,
    process: Option<ServiceProcess>,
    /// Incremented per start, so a restarted broker's log is kept apart.
    starts: u32,
}

/// A running Kafka cluster. Dropping it kills every node and removes its
/// data (logs stay in the log dir).
pub struct KafkaCluster {
    side: Side,
    dist: KafkaDist,
    options: KafkaOptions,
    bootstrap: String,
    data_dir: PathBuf,
    log_dir: PathBuf,
    nodes: Mutex<Vec<Node>>,
}

/// A random Kafka cluster id (16 random bytes, URL-safe base64, no padding),
/// as `kafka-storage random-uuid` prints, without starting a JVM for it.
/// Like Kafka's `Uuid.randomUuid`, never one starting with '-', which a
/// command line would take for an option.
fn random_cluster_id() -> String {
    loop {
        let id = encode_cluster_id(*uuid::Uuid::new_v4().as_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn encode_cluster_id(bytes: [u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            n |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

impl KafkaCluster {
    /// Formats and starts every node in parallel and waits until a Metadata
    /// answer lists all of them. Node logs go to
    /// `<log_dir>/kafka-<side>-<id>.log`, data under `data_dir`.
    pub fn start(
        side: Side,
        options: KafkaOptions,
        data_dir: &Path,
        log_dir: &Path,
    ) -> Result<KafkaCluster> {
        if options.brokers < 1 {
            bail!("a cluster needs at least one broker");
        }
        let dist = KafkaDist::locate(&options.version)?;
        match std::fs::remove_dir_all(data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("clearing {}", data_dir.display())),
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let controller_port = free_port()?;
        let mut nodes = Vec::new();
        for id in 1..=options.brokers {
            let port = free_port()?;
            let config = data_dir.join(format!("node-{id}.properties"));
            let props = node_properties(&options, id, port, controller_port, data_dir);
            std::fs::write(&config, props)
                .with_context(|| format!("writing {}", config.display()))?;
            nodes.push(Node {
                id,
                port,
                config,
                process: None,
                starts: 0,
            });
        }
        let bootstrap = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",");
        let cluster = KafkaCluster {
            side,
            dist,
            options,
            bootstrap,
            data_dir: data_dir.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            nodes: Mutex::new(nodes),
        };
        cluster.format_all()?;
        {
            let mut nodes = lock(&cluster.nodes);
            for node in nodes.iter_mut() {
                cluster.launch(node)?;
            }
        }
        cluster.wait_ready(READY_TIMEOUT)?;
        Ok(cluster)
    }

    fn format_all(&self) -> Result<()> {
        let cluster_id = random_cluster_id();
        let mut formats = Vec::new();
        for node in lock(&self.nodes).iter() {
            let mut cmd = self
                .dist
                .java("kafka.tools.StorageTool", 128, true, &self.data_dir)?;
            cmd.arg("format")
                .arg("-t")
                .arg(&cluster_id)
                .arg("-c")
                .arg(&node.config)
                .arg("--ignore-formatted");
            let name = format!("kafka-{}-{}-format", self.side, node.id);
            formats.push(ServiceProcess::spawn_tethered(&name, cmd, &self.log_dir)?);
        }
        for f in formats {
            let status = f.wait_exit(Duration::from_secs(60))?;
            if !status.success() {
                bail!(
                    "formatting {} storage failed ({status}):\n{}",
                    f.name(),
                    f.log_tail(20)
                );
            }
        }
        Ok(())
    }

    fn launch(&self, node: &mut Node) -> Result<()> {
        node.starts += 1;
        let name = if node.starts == 1 {
            format!("kafka-{}-{}", self.side, node.id)
        } else {
            format!("kafka-{}-{}-start{}", self.side, node.id, node.starts)
        };
        let mut cmd = self.dist.java(
            "kafka.Kafka",
            self.options.heap_mb,
            self.options.quick_jit,
            &self.data_dir,
        )?;
        cmd.arg(&node.config);
        node.process = Some(ServiceProcess::spawn_tethered(&name, cmd, &self.log_dir)?);
        Ok(())
    }

    /// Waits until a Metadata answer lists every broker that is running.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let expected: Vec<i32> = lock(&self.nodes)
            .iter()
            .filter(|n| n.process.as_ref().is_some_and(ServiceProcess::is_running))
            .map(|n| n.id)
            .collect();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("log_level", "3")
            .create()
            .context("creating metadata client")?;
        loop {
            for node in lock(&self.nodes).iter() {
                if let Some(p) = &node.process {
                    if let Some(status) = p.exit_status() {
                        bail!(
                            "{} broker {} exited ({status}) while starting; log tail:\n{}",
                            self.side,
                            node.id,
                            p.log_tail(30)
                        );
                    }
                }
            }
            let last = match consumer.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(md) => {
                    let mut ids: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
                    ids.sort_unstable();
                    if expected.iter().all(|id| ids.contains(id)) {
                        return Ok(());
                    }
                    format!("metadata lists brokers {ids:?}, expecting {expected:?}")
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} cluster not ready after {timeout:?}: {last} (logs in {})",
                    self.side,
                    self.log_dir.display()
                );
            }
            // Registration has no event a client can await: poll.
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn side(&self) -> Side {
        self.side
    }

    pub fn version(&self) -> &str {
        &self.dist.version
    }

    pub fn dist(&self) -> &KafkaDist {
        &self.dist
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,...`
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn broker_ids(&self) -> Vec<i32> {
        lock(&self.nodes).iter().map(|n| n.id).collect()
    }

    /// `127.0.0.1:port` of one broker.
    pub fn broker_address(&self, id: i32) -> Result<String> {
        self.with_node(id, |n| Ok(format!("127.0.0.1:{}", n.port)))
    }

    fn with_node<R>(&self, id: i32, f: impl FnOnce(&mut Node) -> Result<R>) -> Result<R> {
        let mut nodes = lock(&self.nodes);
        let node = nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| anyhow!("{} has no broker {id}", self.side))?;
        f(node)
    }

    /// Process id of a running broker (for CPU and memory figures).
    pub fn broker_pid(&self, id: i32) -> Result<i32> {
        self.with_node(id, |n| {
            n.process
                .as_ref()
                .filter(|p| p.is_running())
                .map(ServiceProcess::pid)
                .ok_or_else(|| anyhow!("broker {id} is not running"))
        })
    }

    /// kill -9 of one broker (a crash: no controlled shutdown).
    pub fn kill9(&self, id: i32) -> Result<()> {
        self.with_node(id, |n| match &n.process {
            Some(p) => p.kill9().map(|_| ()),
            None => bail!("broker {id} is not running"),
        })
    }

    /// SIGSTOP / SIGCONT of one broker (a frozen machine).
    pub fn signal(&self, id: i32, sig: Signal) -> Result<()> {
        self.with_node(id, |n| match &n.process {
            Some(p) => p.signal(sig),
            None => bail!("broker {id} is not running"),
        })
    }

    /// Starts a stopped broker again on the same port and data, and waits
    /// until the cluster's metadata lists it.
    pub fn restart(&self, id: i32) -> Result<()> {
        self.with_node(id, |n| {
            if n.process.as_ref().is_some_and(ServiceProcess::is_running) {
                bail!("broker {id} is still running");
            }
            self.launch(n)
        })?;
        self.wait_ready(READY_TIMEOUT)
    }

    /// The folder holding the node logs.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        // Kill first (each ServiceProcess waits for its exit), then remove
        // the data the brokers held open.
        for node in lock(&self.nodes).iter_mut() {
            node.process.take();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// One node's `server.properties`.
fn node_properties(
    options: &KafkaOptions,
    id: i32,
    port: u16,
    controller_port: u16,
    data_dir: &Path,
) -> String {
    let rf = options.brokers.min(3);
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        props.insert(k.to_owned(), v);
    };
    set("node.id", id.to_string());
    set(
        "controller.quorum.voters",
        format!("1@127.0.0.1:{controller_port}"),
    );
    set("controller.listener.names", "CONTROLLER".into());
    set("inter.broker.listener.name", "PLAINTEXT".into());
    let extra = if id == 1 {
        options.extra_listeners.as_slice()
    } else {
        &[]
    };
    let mut map = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".to_owned();
    let mut listen = String::new();
    let mut advertise = String::new();
    for l in extra {
        map.push_str(&format!(",{}:{}", l.name, l.protocol));
        // Bound to every address, so that a test can reach it by one its
        // certificate does not name (127.0.0.2).
        listen.push_str(&format!(",{}://0.0.0.0:{}", l.name, l.port));
        advertise.push_str(&format!(",{}://127.0.0.1:{}", l.name, l.port));
    }
    set("listener.security.protocol.map", map);
    if id == 1 {
        set("process.roles", "broker,controller".into());
        set(
            "listeners",
            format!(
                "PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}{listen}"
            ),
        );
    } else {
        set("process.roles", "broker".into());
        set("listeners", format!("PLAINTEXT://127.0.0.1:{port}"));
    }
    set(
        "advertised.listeners",
        format!("PLAINTEXT://127.0.0.1:{port}{advertise}"),
    );
    set(
        "log.dirs",
        data_dir.join(format!("node-{id}")).display().to_string(),
    );
    // Internal topics replicated like user topics, but writable with one
    // broker down (the fault tests stop one).
    for topic in [
        "offsets.topic",
        "transaction.state.log",
        "share.coordinator.state.topic",
    ] {
        set(&format!("{topic}.replication.factor"), rf.to_string());
        set(&format!("{topic}.min.isr"), "1".into());
    }
    set("default.replication.factor", rf.to_string());
    set("min.insync.replicas", "1".into());
    // Speed settings Kafka's own tests use (real-kafka.md).
    set("offsets.topic.num.partitions", "1".into());
    set("transaction.state.log.num.partitions", "3".into());
    set("group.initial.rebalance.delay.ms", "0".into());
    set(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "200".into(),
    );
    set("auto.create.topics.enable", "false".into());
    // The 128 MiB default is allocated on the heap.
    set("log.cleaner.dedupe.buffer.size", "2097152".into());
    set("log.cleaner.backoff.ms", "100".into());
    set("log.retention.check.interval.ms", "500".into());
    set("num.network.threads", "2".into());
    set("num.io.threads", "2".into());
    set("num.recovery.threads.per.data.dir", "1".into());
    // Test records carry timestamps from early 2026: without this the
    // brokers' 7-day default retention would delete them. Tests that
    // exercise retention set retention.ms on their topic.
    set("log.retention.ms", "-1".into());
    for (k, v) in &options.overrides {
        props.insert(k.clone(), v.clone());
    }
    let mut out = String::new();
    for (k, v) in props {
        let _ = writeln!(out, "{k}={v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_never_start_with_a_dash() {
        // 0xf8.. encodes to "-" first.
        assert!(encode_cluster_id([0xf8; 16]).starts_with('-'));
        assert_eq!(encode_cluster_id([0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert!((0..2_000).all(|_| !random_cluster_id().starts_with('-')));
    }

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = random_cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(id, random_cluster_id());
    }

    #[test]
    fn versions_are_pinned() {
        let (s, t) = (source_version().unwrap(), target_version().unwrap());
        assert!(s < t, "source {s} should be an older line than target {t}");
    }

    #[test]
    fn node_one_is_the_controller_and_overrides_win() {
        let mut o = KafkaOptions::new("4.3.1", 3);
        o.overrides.insert("num.io.threads".into(), "8".into());
        let one = node_properties(&o, 1, 9000, 9001, Path::new("/d"));
        let two = node_properties(&o, 2, 9002, 9001, Path::new("/d"));
        assert!(one.contains("process.roles=broker,controller\n"));
        assert!(one.contains("CONTROLLER://127.0.0.1:9001"));
        assert!(two.contains("process.roles=broker\n"));
        assert!(!two.contains("CONTROLLER://"));
        assert!(two.contains("offsets.topic.replication.factor=3\n"));
        assert!(two.contains("num.io.threads=8\n"));
        assert!(!two.contains("num.io.threads=2\n"));
    }
}
