//! Kafka's own test clients from `kafka-tools` (the Java client most users
//! run): `VerifiableProducer` and `VerifiableConsumer`, which print one JSON
//! event per acknowledged or (with `--verbose`) consumed record, and
//! `TransactionalMessageCopier`, Kafka's consume-transform-produce
//! application of its system tests.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::kafka::KafkaDist;
use crate::process::ServiceProcess;

/// One record as a Java client reported it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JavaRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
}

/// The JSON events a tool printed to its log (log lines go to the same
/// output; the events are the JSON lines).
fn events_in(log: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Starts a tool as `name` (its log in `log_dir`). `config`: client
/// properties given with `--command-config` (a tool without the option:
/// `None`).
fn spawn(
    dist: &KafkaDist,
    main_class: &str,
    name: &str,
    args: &[String],
    config: Option<&str>,
    log_dir: &Path,
) -> Result<ServiceProcess> {
    let conf_dir = log_dir.join(format!("{name}-conf"));
    let mut cmd = dist.java(main_class, 256, true, &conf_dir)?;
    cmd.args(args);
    if let Some(config) = config {
        let config_path = conf_dir.join("client.properties");
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        cmd.arg("--command-config").arg(&config_path);
    }
    ServiceProcess::spawn_tethered(name, cmd, log_dir)
}

/// Runs a tool (as [`spawn`]) to its end; its JSON events.
fn run(
    dist: &KafkaDist,
    main_class: &str,
    name: &str,
    args: &[String],
    config: Option<&str>,
    log_dir: &Path,
    timeout: Duration,
) -> Result<Vec<Value>> {
    let process = spawn(dist, main_class, name, args, config, log_dir)?;
    let status = process.wait_exit(timeout)?;
    if !status.success() {
        bail!("{name} exited ({status}):\n{}", process.log_tail(30));
    }
    events_in(process.log_path())
}

fn record(v: &Value) -> Option<JavaRecord> {
    Some(JavaRecord {
        partition: i32::try_from(v["partition"].as_i64()?).ok()?,
        offset: v["offset"].as_i64()?,
        key: v["key"].as_str().map(str::to_owned),
        value: v["value"].as_str().map(str::to_owned),
    })
}

/// `VerifiableProducer`: `n` records to `topic` with an idempotent,
/// acks=all Java producer; returns every acknowledged record (it fails if
/// any send failed).
pub fn verifiable_producer(
    dist: &KafkaDist,
    bootstrap: &str,
    topic: &str,
    n: usize,
    log_dir: &Path,
) -> Result<Vec<JavaRecord>> {
    verifiable_producer_at(dist, bootstrap, topic, n, -1, log_dir)
}

/// [`verifiable_producer`] at `per_sec` records a second (-1: as fast as
/// it can), so that it keeps writing while a test acts.
pub fn verifiable_producer_at(
    dist: &KafkaDist,
    bootstrap: &str,
    topic: &str,
    n: usize,
    per_sec: i64,
    log_dir: &Path,
) -> Result<Vec<JavaRecord>> {
    let args: Vec<String> = [
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        "--max-messages",
        &n.to_string(),
        "--throughput",
        &per_sec.to_string(),
        "--acks",
        "-1",
        "--repeating-keys",
        "97",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The tool forces retries=0, which idempotence refuses.
    let config = "enable.idempotence=true\nretries=2147483647\nmax.in.flight.requests.per.connection=5\nlinger.ms=5\n";
    let events = run(
        dist,
        "org.apache.kafka.tools.VerifiableProducer",
        &format!("verifiable-producer-{topic}"),
        &args,
        Some(config),
        log_dir,
        Duration::from_secs(120),
    )?;
    if let Some(e) = events.iter().find(|e| e["name"] == "producer_send_error") {
        bail!("VerifiableProducer: a send failed: {e}");
    }
    let acked: Vec<JavaRecord> = events
        .iter()
        .filter(|e| e["name"] == "producer_send_success")
        .filter_map(record)
        .collect();
    if acked.len() != n {
        bail!(
            "VerifiableProducer acknowledged {} of {n} records",
            acked.len()
        );
    }
    Ok(acked)
}

fn consumer_args(bootstrap: &str, topic: &str, group: &str, n: i64) -> Vec<String> {
    [
        "--bootstrap-server",
        bootstrap,
        "--group-id",
        group,
        "--topic",
        topic,
        "--reset-policy",
        "earliest",
        "--group-protocol",
        "classic",
        "--max-messages",
        &n.to_string(),
        "--verbose",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A `VerifiableConsumer` group member that runs until stopped (a member
/// a test rolls from one bootstrap to another).
pub struct JavaMember {
    process: ServiceProcess,
}

impl JavaMember {
    /// Starts `name` in `group` on `topic` at `bootstrap` (as
    /// [`verifiable_consumer`], without a record limit).
    pub fn start(
        dist: &KafkaDist,
        bootstrap: &str,
        topic: &str,
        group: &str,
        name: &str,
        log_dir: &Path,
    ) -> Result<JavaMember> {
        Ok(JavaMember {
            process: spawn(
                dist,
                "org.apache.kafka.tools.VerifiableConsumer",
                name,
                &consumer_args(bootstrap, topic, group, -1),
                Some(&format!(
                    "isolation.level=read_committed\nclient.id={name}\n"
                )),
                log_dir,
            )?,
        })
    }

    /// The records it consumed so far.
    pub fn records(&self) -> Result<Vec<JavaRecord>> {
        Ok(events_in(self.process.log_path())?
            .iter()
            .filter(|e| e["name"] == "record_data")
            .filter_map(record)
            .collect())
    }

    /// Stops it (SIGTERM: it leaves the group) and returns every record it
    /// consumed.
    pub fn stop(self) -> Result<Vec<JavaRecord>> {
        self.process.sigterm()?;
        self.process.wait_exit(Duration::from_secs(30))?;
        self.records()
    }
}

/// `VerifiableConsumer` (classic group protocol, read_committed, from the
/// earliest offset, `--verbose`): consumes `n` records of `topic` in group
/// `group` and returns each with its partition and offset.
pub fn verifiable_consumer(
    dist: &KafkaDist,
    bootstrap: &str,
    topic: &str,
    group: &str,
    n: usize,
    log_dir: &Path,
) -> Result<Vec<JavaRecord>> {
    let args = consumer_args(bootstrap, topic, group, n as i64);
    let events = run(
        dist,
        "org.apache.kafka.tools.VerifiableConsumer",
        &format!("verifiable-consumer-{group}"),
        &args,
        Some("isolation.level=read_committed\n"),
        log_dir,
        Duration::from_secs(120),
    )?;
    Ok(events
        .iter()
        .filter(|e| e["name"] == "record_data")
        .filter_map(record)
        .collect())
}

/// `TransactionalMessageCopier` in group mode: member of `group`, it reads
/// `input` (read_committed) and writes each record to `output` in
/// transactions of up to `per_transaction` records, each with its
/// consumed offsets (KIP-447, the group's metadata), until it has copied
/// what partition 0 of `input` held when it was last assigned it, at most
/// `n`. Returns its status events; fails if it exited with an error.
#[allow(clippy::too_many_arguments)]
pub fn transactional_copier(
    dist: &KafkaDist,
    bootstrap: &str,
    input: &str,
    output: &str,
    group: &str,
    transactional_id: &str,
    n: usize,
    per_transaction: usize,
    log_dir: &Path,
) -> Result<Vec<Value>> {
    let args: Vec<String> = [
        "--broker-list",
        bootstrap,
        "--input-topic",
        input,
        "--input-partition",
        "0",
        "--output-topic",
        output,
        "--consumer-group",
        group,
        "--transactional-id",
        transactional_id,
        "--max-messages",
        &n.to_string(),
        "--transaction-size",
        &per_transaction.to_string(),
        "--group-mode",
        "--use-group-metadata",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    run(
        dist,
        "org.apache.kafka.tools.TransactionalMessageCopier",
        &format!("transactional-copier-{transactional_id}"),
        &args,
        None,
        log_dir,
        // A transaction of a few records takes about 100 ms on loopback,
        // several times that on a busy 2-core machine.
        Duration::from_secs(300),
    )
}

/// Every record of `topic`'s first `partitions` partitions at `bootstrap`,
/// as the Java clients report them, sorted.
pub fn java_records_on(bootstrap: &str, topic: &str, partitions: i32) -> Result<Vec<JavaRecord>> {
    let mut out = Vec::new();
    for p in 0..partitions {
        let (_, high) = crate::clients::watermarks(bootstrap, topic, p)?;
        for r in crate::clients::read_partition(bootstrap, topic, p, 0, high)? {
            out.push(JavaRecord {
                partition: p,
                offset: r.offset,
                key: r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                value: r.value.map(|v| String::from_utf8_lossy(&v).into_owned()),
            });
        }
    }
    out.sort();
    Ok(out)
}
