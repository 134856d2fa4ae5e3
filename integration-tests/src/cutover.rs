//! Our own services on a [`Bed`]: the orchestrator and fetchers as real
//! processes on free ports, and the real `cutover` CLI.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

use crate::bed::TestBed;
use crate::process::{bin_path, free_port, http_get, ServiceProcess};

/// A fetcher process and its ports.
pub struct Fetcher {
    pub id: String,
    pub process: ServiceProcess,
    pub http: String,
    pub grpc: String,
}

impl Fetcher {
    /// The fetcher's Prometheus text.
    pub fn metrics(&self) -> Result<String> {
        let r = http_get(
            &format!("http://{}/metrics", self.http),
            Duration::from_secs(5),
        )?;
        Ok(r.body)
    }

    /// Every sample of one metric: labels and value.
    pub fn metric_samples(&self, name: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>> {
        Ok(metric_samples(&self.metrics()?, name))
    }

    /// Sum of one metric over all label sets (0 when absent).
    pub fn metric_sum(&self, name: &str) -> Result<f64> {
        Ok(sum_metric(&self.metrics()?, name))
    }
}

/// Every sample of `name` in Prometheus text format: its labels and value.
pub fn metric_samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some((labels, value.trim().parse::<f64>().ok()?))
        })
        .collect()
}

/// Sums every sample of `name` in Prometheus text format.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Where the service processes export their spans (OTLP/gRPC).
#[derive(Debug, Clone)]
pub struct Otlp {
    /// A trace receiver, e.g. `http://127.0.0.1:4317` (`--otlp-endpoint`).
    pub endpoint: String,
    /// How long a finished span may wait in the batch exporter before it is
    /// sent (`OTEL_BSP_SCHEDULE_DELAY`; the SDK's default is 5 s). A process
    /// also sends what is left when it shuts down gracefully.
    pub batch_delay: Duration,
}

impl Otlp {
    fn apply(&self, cmd: &mut Command) {
        cmd.arg("--otlp-endpoint").arg(&self.endpoint).env(
            "OTEL_BSP_SCHEDULE_DELAY",
            self.batch_delay.as_millis().to_string(),
        );
    }
}

/// The orchestrator of a test, plus any number of fetchers.
pub struct Cutover {
    pub orchestrator: ServiceProcess,
    pub server: String,
    pub fetchers: Vec<Fetcher>,
    etcd: String,
    log_dir: std::path::PathBuf,
    next_fetcher: usize,
    /// Extra flags for every fetcher started from now on.
    pub fetcher_flags: Vec<String>,
    /// Span export of every orchestrator and fetcher started from now on
    /// (none: they export nothing).
    pub otlp: Option<Otlp>,
    /// Orchestrators started with [`Cutover::add_orchestrator`]: (id, process, gRPC URL).
    pub more_orchestrators: Vec<(String, ServiceProcess, String)>,
}

const READY: Duration = Duration::from_secs(30);

fn spawn_orchestrator(
    etcd: &str,
    id: &str,
    log_dir: &std::path::Path,
    otlp: Option<&Otlp>,
) -> Result<(ServiceProcess, String)> {
    let grpc = format!("127.0.0.1:{}", free_port()?);
    let http = format!("127.0.0.1:{}", free_port()?);
    let args: Vec<String> = [
        "--id",
        id,
        "--etcd",
        etcd,
        "--grpc-addr",
        &grpc,
        "--http-addr",
        &http,
        "--sync-interval-ms",
        "1000",
        "--lease-ttl-secs",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let process = spawn_service(id, "cutover-orchestrator", &args, otlp, log_dir)?;
    process.wait_http_ok(&format!("http://{http}/healthz"), READY)?;
    Ok((process, format!("http://{grpc}")))
}

fn spawn_service(
    name: &str,
    bin: &str,
    args: &[String],
    otlp: Option<&Otlp>,
    log_dir: &std::path::Path,
) -> Result<ServiceProcess> {
    let mut cmd = Command::new(bin_path(bin)?);
    cmd.args(args);
    if let Some(o) = otlp {
        o.apply(&mut cmd);
    }
    ServiceProcess::spawn_command(name, cmd, log_dir)
}

impl Cutover {
    /// Starts the orchestrator (id `orchestrator-1`) and waits until it is ready.
    pub fn start(bed: &impl TestBed) -> Result<Cutover> {
        Self::start_with_otlp(bed, None)
    }

    /// Like [`Cutover::start`], with the orchestrator, and every service
    /// started later, exporting spans to `otlp` (see [`Cutover::otlp`]).
    pub fn start_with_otlp(bed: &impl TestBed, otlp: Option<Otlp>) -> Result<Cutover> {
        let (orchestrator, server) = spawn_orchestrator(
            bed.etcd_endpoint(),
            "orchestrator-1",
            bed.log_dir(),
            otlp.as_ref(),
        )?;
        Ok(Cutover {
            otlp,
            orchestrator,
            server,
            more_orchestrators: Vec::new(),
            fetchers: Vec::new(),
            etcd: bed.etcd_endpoint().to_string(),
            log_dir: bed.log_dir().to_path_buf(),
            next_fetcher: 1,
            fetcher_flags: vec![
                "--lease-ttl-secs".into(),
                "3".into(),
                "--rebalance-interval-ms".into(),
                "500".into(),
                "--progress-interval-ms".into(),
                "300".into(),
            ],
        })
    }

    /// Starts one more orchestrator (`orchestrator-2`, ...); returns its gRPC URL.
    pub fn add_orchestrator(&mut self) -> Result<String> {
        let id = format!("orchestrator-{}", self.more_orchestrators.len() + 2);
        let (process, server) =
            spawn_orchestrator(&self.etcd, &id, &self.log_dir, self.otlp.as_ref())?;
        self.more_orchestrators.push((id, process, server.clone()));
        Ok(server)
    }

    /// Starts one more fetcher and waits until it is ready.
    pub fn add_fetcher(&mut self) -> Result<&Fetcher> {
        let id = format!("fetcher-{}", self.next_fetcher);
        self.next_fetcher += 1;
        let grpc = format!("127.0.0.1:{}", free_port()?);
        let http = format!("127.0.0.1:{}", free_port()?);
        let mut args = vec![
            "--id".into(),
            id.clone(),
            "--etcd".into(),
            self.etcd.clone(),
            "--grpc-addr".into(),
            grpc.clone(),
            "--http-addr".into(),
            http.clone(),
        ];
        args.extend(self.fetcher_flags.iter().cloned());
        let process = spawn_service(
            &id,
            "cutover-fetcher",
            &args,
            self.otlp.as_ref(),
            &self.log_dir,
        )?;
        process.wait_http_ok(&format!("http://{http}/healthz"), READY)?;
        self.fetchers.push(Fetcher {
            id,
            process,
            http,
            grpc,
        });
        self.fetchers
            .last()
            .ok_or_else(|| anyhow!("fetcher list empty"))
    }

    /// Runs the real CLI; returns (exit code, stdout, stderr).
    pub fn cli_raw(&self, args: &[&str]) -> Result<(i32, String, String)> {
        self.cli_raw_at(&self.server, args)
    }

    /// Runs the real CLI against the orchestrator at `server`.
    pub fn cli_raw_at(&self, server: &str, args: &[&str]) -> Result<(i32, String, String)> {
        self.cli_env_at(server, args, &[])
    }

    /// Runs the real CLI with extra environment variables (e.g. `TRACEPARENT`).
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<(i32, String, String)> {
        self.cli_env_at(&self.server, args, env)
    }

    fn cli_env_at(
        &self,
        server: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(i32, String, String)> {
        let out = Command::new(bin_path("cutover")?)
            .arg("--server")
            .arg(server)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .context("running the cutover CLI")?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs the CLI with `--json` and parses its output; fails on a non-zero exit.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, out, err) = self.cli_raw(&all)?;
        if code != 0 {
            bail!("cutover {} exited {code}: {out}{err}", args.join(" "));
        }
        serde_json::from_str(&out).with_context(|| format!("parsing CLI output: {out}"))
    }

    /// Polls `cutover status` until every partition of the link is in sync
    /// with the source's current end (the source must be quiet).
    pub fn wait_in_sync(&self, link: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        // Only progress reported after this call counts (older documents
        // describe the source as it was then).
        let since_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let s = self.cli_json(&["status", "--link", link])?;
            let topics = s["topics"].as_array().cloned().unwrap_or_default();
            let all = !topics.is_empty()
                && topics.iter().all(|t| {
                    t["partitions"].as_array().is_some_and(|ps| {
                        ps.iter().all(|p| {
                            p["state"] == "IN_SYNC"
                                && p["lag"] == 0
                                && p["target_log_end"] == p["source_log_end"]
                                && p["updated_at_ms"].as_i64().is_some_and(|t| t >= since_ms)
                        })
                    })
                });
            if all {
                return Ok(s);
            }
            if topics.iter().any(|t| {
                t["partitions"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["state"] == "FAILED"))
            }) {
                bail!("a partition FAILED: {s:#}");
            }
            last = s;
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("not in sync after {timeout:?}; last status: {last:#}")
    }
}

/// Asserts that the target holds, at every offset both clusters still keep,
/// exactly the source's record (key, value, headers, timestamp) and that both
/// end at the same offset. Returns the number of records compared.
pub fn assert_mirrored(bed: &impl TestBed, topic: &str, partition: i32) -> Result<u64> {
    let (s_low, s_high) = crate::clients::watermarks(bed.source_bootstrap(), topic, partition)?;
    let (t_low, t_high) = crate::clients::watermarks(bed.target_bootstrap(), topic, partition)?;
    if s_high != t_high {
        bail!("{topic}/{partition}: source ends at {s_high}, target at {t_high}");
    }
    let from = s_low.max(t_low);
    let source =
        crate::clients::read_partition(bed.source_bootstrap(), topic, partition, from, s_high)?;
    let target =
        crate::clients::read_partition(bed.target_bootstrap(), topic, partition, from, t_high)?;
    crate::records::assert_identical(&source, &target);
    Ok(source.len() as u64)
}

/// Partitions owned per fetcher id in a `cutover status --json` document.
pub fn owners(status: &Value) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in status["topics"].as_array().into_iter().flatten() {
        for p in t["partitions"].as_array().into_iter().flatten() {
            if let Some(o) = p["owner"].as_str().filter(|o| !o.is_empty()) {
                *m.entry(o.to_string()).or_insert(0) += 1;
            }
        }
    }
    m
}

impl Cutover {
    /// Polls status until `pred` holds for the owner counts; returns them and
    /// the time it took.
    pub fn wait_owners(
        &self,
        link: &str,
        timeout: Duration,
        pred: impl Fn(&BTreeMap<String, usize>) -> bool,
    ) -> Result<(BTreeMap<String, usize>, Duration)> {
        let start = Instant::now();
        let mut last = Default::default();
        while start.elapsed() < timeout {
            let s = self.cli_json(&["status", "--link", link])?;
            last = owners(&s);
            if pred(&last) {
                return Ok((last, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("ownership did not converge within {timeout:?}; last owners {last:?}")
    }

    /// The fetcher with this id.
    pub fn fetcher(&self, id: &str) -> Result<&Fetcher> {
        self.fetchers
            .iter()
            .find(|f| f.id == id)
            .ok_or_else(|| anyhow!("no fetcher {id}"))
    }
}

/// Polls a condition that has no event to await (e.g. a metric of another
/// process), every 100 ms until `timeout`.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

impl Cutover {
    /// Fetchers started from now on use a lease of `ttl`, rebalance every
    /// 500 ms and publish progress every 200 ms.
    pub fn use_fetcher_lease(&mut self, ttl: Duration) {
        self.fetcher_flags = vec![
            "--lease-ttl-secs".into(),
            ttl.as_secs().to_string(),
            "--rebalance-interval-ms".into(),
            "500".into(),
            "--progress-interval-ms".into(),
            "200".into(),
        ];
    }

    /// `cutover link create <link>` between the bed's clusters, with `extra`
    /// flags (e.g. `--bandwidth-limit`).
    pub fn create_link(&self, bed: &impl TestBed, link: &str, extra: &[&str]) -> Result<Value> {
        let mut args = vec![
            "link",
            "create",
            link,
            "--source",
            bed.source_bootstrap(),
            "--target",
            bed.target_bootstrap(),
        ];
        args.extend_from_slice(extra);
        self.cli_json(&args)
    }

    /// `cutover link create <link>` between the bed's clusters, then
    /// `cutover mirror add --link <link> <topics>`; returns the added mirrors.
    pub fn mirror(&self, bed: &impl TestBed, link: &str, topics: &[&str]) -> Result<Value> {
        self.create_link(bed, link, &[])?;
        let mut args = vec!["mirror", "add", "--link", link];
        args.extend_from_slice(topics);
        self.cli_json(&args)
    }
}

/// A running router (the real `cutover-router` binary).
/// The `bootstrap.servers` of clients pointed at `routers`.
pub fn routers_bootstrap(routers: &[&RouterProcess]) -> String {
    routers
        .iter()
        .map(|r| r.kafka.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub struct RouterProcess {
    pub node_id: i32,
    pub process: ServiceProcess,
    /// `host:port` clients use as bootstrap.servers.
    pub kafka: String,
    pub http: String,
    /// Its internal gRPC API.
    pub grpc: String,
}

impl RouterProcess {
    /// Sum of one of its metrics over all label sets (0 when absent).
    pub fn metric_sum(&self, name: &str) -> Result<f64> {
        let text = crate::process::http_get(
            &format!("http://{}/metrics", self.http),
            Duration::from_secs(5),
        )?
        .body;
        Ok(sum_metric(&text, name))
    }
}

impl Cutover {
    /// Starts a router with `node_id` in front of `link`'s clusters and
    /// waits until it is ready (registered and listening).
    pub fn start_router(&self, node_id: i32, link: &str) -> Result<RouterProcess> {
        self.start_router_with(node_id, link, &[])
    }

    /// `start_router` with more flags for the router.
    pub fn start_router_with(
        &self,
        node_id: i32,
        link: &str,
        extra: &[&str],
    ) -> Result<RouterProcess> {
        let kafka = format!("127.0.0.1:{}", free_port()?);
        let http = format!("127.0.0.1:{}", free_port()?);
        let grpc = format!("127.0.0.1:{}", free_port()?);
        let args: Vec<String> = [
            "--node-id",
            &node_id.to_string(),
            "--link",
            link,
            "--etcd",
            &self.etcd,
            "--listen",
            &kafka,
            "--http-addr",
            &http,
            "--grpc-addr",
            &grpc,
            "--lease-ttl-secs",
            "3",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        let name = format!("router-{node_id}");
        let process = spawn_service(
            &name,
            "cutover-router",
            &args,
            self.otlp.as_ref(),
            &self.log_dir,
        )?;
        process.wait_http_ok(&format!("http://{http}/healthz"), READY)?;
        Ok(RouterProcess {
            node_id,
            process,
            kafka,
            http,
            grpc,
        })
    }
}

/// A running group-coordinator.
pub struct GroupCoordinatorProcess {
    pub id: String,
    pub process: ServiceProcess,
    /// `/metrics` and `/healthz`.
    pub http: String,
}

impl Cutover {
    /// Starts a group-coordinator (id `id`) using this orchestrator, with
    /// a short lease and interval, and waits until it is ready.
    pub fn start_group_coordinator(&self, id: &str) -> Result<GroupCoordinatorProcess> {
        let http = format!("127.0.0.1:{}", free_port()?);
        let args: Vec<String> = [
            "--id",
            id,
            "--etcd",
            &self.etcd,
            "--orchestrator",
            &self.server,
            "--http-addr",
            &http,
            "--lease-ttl-secs",
            "3",
            "--interval-ms",
            "300",
            "--retry-secs",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let process = spawn_service(
            id,
            "cutover-group-coordinator",
            &args,
            self.otlp.as_ref(),
            &self.log_dir,
        )?;
        process.wait_http_ok(&format!("http://{http}/healthz"), READY)?;
        Ok(GroupCoordinatorProcess {
            id: id.to_owned(),
            process,
            http,
        })
    }
}

/// The progress documents fetchers published for `topic` of `link` (under
/// the default prefix), by partition, read from etcd itself rather than
/// through `status` (which lists every partition, reported or not).
pub fn progress_documents(
    endpoint: &str,
    link: &str,
    topic: &str,
) -> Result<std::collections::BTreeMap<i32, cutover_model::PartitionProgress>> {
    let prefix = format!(
        "/cutover/v1/{}",
        cutover_model::keys::progress_of(link, topic)
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None).await?;
        let r = c
            .get(
                prefix.as_str(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await?;
        let mut out = std::collections::BTreeMap::new();
        for kv in r.kvs() {
            let doc: cutover_model::PartitionProgress = serde_json::from_slice(kv.value())
                .with_context(|| format!("progress document {:?}", kv.key_str()))?;
            out.insert(doc.partition, doc);
        }
        Ok(out)
    })
}

/// Every etcd key with its value, and the store revision: equal before and
/// after a request means the request changed nothing.
pub fn etcd_snapshot(endpoint: &str) -> Result<(i64, Vec<(String, String)>)> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None).await?;
        let r = c
            .get("", Some(etcd_client::GetOptions::new().with_all_keys()))
            .await?;
        let rev = r.header().map(|h| h.revision()).unwrap_or(0);
        let kvs = r
            .kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key_str().unwrap_or("").to_string(),
                    kv.value_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        Ok((rev, kvs))
    })
}

/// Sets the state of mirror topic `topic` of `link` in etcd itself, as a
/// promotion will; returns the etcd revision of the write.
pub fn set_mirror_state(
    endpoint: &str,
    link: &str,
    topic: &str,
    state: cutover_model::MirrorState,
) -> Result<i64> {
    update_mirror(endpoint, link, topic, |doc| doc.state = state)
}

/// Changes mirror topic `topic` of `link` in etcd itself with `change` (a
/// compare-and-swap on the document's revision, retried when something
/// else wrote it in between); returns the etcd revision of the write.
pub fn update_mirror(
    endpoint: &str,
    link: &str,
    topic: &str,
    change: impl Fn(&mut cutover_model::MirrorTopic),
) -> Result<i64> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let key = format!("/cutover/v1/{}", cutover_model::keys::mirror(link, topic));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None).await?;
        for _ in 0..10 {
            let r = c.get(key.as_str(), None).await?;
            let kv = r
                .kvs()
                .first()
                .ok_or_else(|| anyhow::anyhow!("no mirror topic at {key}"))?;
            let mut doc: cutover_model::MirrorTopic = serde_json::from_slice(kv.value())?;
            change(&mut doc);
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(key.as_str(), serde_json::to_vec(&doc)?, None)]);
            let r = c.txn(txn).await?;
            if r.succeeded() {
                return Ok(r.header().map(|h| h.revision()).unwrap_or(0));
            }
        }
        bail!("mirror topic {key} kept changing")
    })
}

/// Writes mirror group `doc` in etcd itself, as `group add` and a group
/// promotion will (the router contract: it routes the group by this
/// document); returns the etcd revision of the write.
pub fn put_group(endpoint: &str, doc: &cutover_model::MirrorGroup) -> Result<i64> {
    let key = format!(
        "/cutover/v1/{}",
        cutover_model::keys::group(&doc.link, &doc.group)
    );
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None).await?;
        let r = c.put(key.as_str(), serde_json::to_vec(doc)?, None).await?;
        Ok(r.header().map(|h| h.revision()).unwrap_or(0))
    })
}
