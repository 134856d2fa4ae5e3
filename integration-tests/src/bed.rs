//! The whole bed of one test: log dir, etcd, and two clusters: librdkafka
//! mock clusters ([`Bed`]) or real Apache Kafka ([`RealBed`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{anyhow, Context as _, Result};
use cutover_coord::testing::EtcdServer;

use crate::admin::Admin;
use crate::clusters::{Clusters, Side};
use crate::kafka::{KafkaCluster, KafkaOptions};
use crate::process::test_log_dir;

/// etcd + source and target clusters + `target/test-logs/<test_name>/`.
///
/// Everything stops when it is dropped (also while a test panics). Declare
/// service processes *after* the bed so they stop first.
pub struct Bed {
    /// The two mock clusters.
    pub clusters: Clusters,
    /// The real etcd server (log: `<log_dir>/etcd.log`).
    pub etcd: EtcdServer,
    log_dir: PathBuf,
}

impl Bed {
    /// Clears the test's log dir, starts etcd and the clusters.
    pub fn start(test_name: &str) -> Result<Bed> {
        Bed::start_with(test_name, 1, 3)
    }

    /// As [`Bed::start`], with the given broker counts.
    pub fn start_with(test_name: &str, source_brokers: i32, target_brokers: i32) -> Result<Bed> {
        let log_dir = test_log_dir(test_name)?;
        let etcd = EtcdServer::start(Some(&log_dir)).context("starting etcd")?;
        let clusters = Clusters::start_with(source_brokers, target_brokers)?;
        Ok(Bed {
            clusters,
            etcd,
            log_dir,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn etcd_endpoint(&self) -> &str {
        self.etcd.endpoint()
    }

    pub fn source_bootstrap(&self) -> &str {
        self.clusters.source_bootstrap()
    }

    pub fn target_bootstrap(&self) -> &str {
        self.clusters.target_bootstrap()
    }

    /// `target/test-logs/<test_name>/`: put service logs here.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

/// What the service helpers need of a bed, mock or real.
pub trait TestBed {
    /// `http://127.0.0.1:PORT` of the bed's etcd.
    fn etcd_endpoint(&self) -> &str;
    fn source_bootstrap(&self) -> &str;
    fn target_bootstrap(&self) -> &str;
    /// `target/test-logs/<test_name>/`: put service logs here.
    fn log_dir(&self) -> &Path;
}

impl TestBed for Bed {
    fn etcd_endpoint(&self) -> &str {
        Bed::etcd_endpoint(self)
    }
    fn source_bootstrap(&self) -> &str {
        Bed::source_bootstrap(self)
    }
    fn target_bootstrap(&self) -> &str {
        Bed::target_bootstrap(self)
    }
    fn log_dir(&self) -> &Path {
        Bed::log_dir(self)
    }
}

/// Real Apache Kafka clusters: a 1-broker source on the older pinned line
/// and a 3-broker target on the newer one (see [`crate::kafka`]).
pub struct RealClusters {
    pub source: KafkaCluster,
    pub target: KafkaCluster,
}

impl RealClusters {
    /// Starts both clusters in parallel with the given options. Node logs go
    /// to `log_dir`, data under `target/kafka-data/<name>-<pid>/`.
    pub fn start_with(
        name: &str,
        source: KafkaOptions,
        target: KafkaOptions,
        log_dir: &Path,
    ) -> Result<RealClusters> {
        let data = kafka_data_dir(name)?;
        let (s_dir, t_dir) = (data.join("source"), data.join("target"));
        let (s_log, t_log) = (log_dir.to_path_buf(), log_dir.to_path_buf());
        let s =
            std::thread::spawn(move || KafkaCluster::start(Side::Source, source, &s_dir, &s_log));
        let target = KafkaCluster::start(Side::Target, target, &t_dir, &t_log);
        let source = s
            .join()
            .map_err(|_| anyhow!("source cluster start panicked"))?;
        Ok(RealClusters {
            source: source?,
            target: target?,
        })
    }

    /// The bed's default clusters.
    pub fn start(name: &str, log_dir: &Path) -> Result<RealClusters> {
        Self::start_with(
            name,
            KafkaOptions::source()?,
            KafkaOptions::target()?,
            log_dir,
        )
    }

    pub fn cluster(&self, side: Side) -> &KafkaCluster {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }

    /// librdkafka admin client of one side.
    pub fn admin(&self, side: Side) -> Result<Admin> {
        Admin::new(self.cluster(side).bootstrap())
    }

    /// Creates a topic on one side (replication factor: min(3, brokers)).
    pub fn create_topic(
        &self,
        side: Side,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        let rf = self.cluster(side).broker_ids().len().min(3) as i32;
        self.admin(side)?
            .create_topic(name, partitions, rf, configs)
    }
}

fn kafka_data_dir(name: &str) -> Result<PathBuf> {
    let profile = crate::process::profile_dir()?;
    let target = profile
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent dir", profile.display()))?;
    let root = target.join("kafka-data");
    remove_dead_data(&root);
    Ok(root.join(format!("{name}-{}", std::process::id())))
}

/// Shared clusters live in a static, so their data stays behind when their
/// test binary exits: folders whose process (the `-<pid>` suffix) is gone
/// are removed here, by the next bed.
fn remove_dead_data(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .rsplit_once('-')
            .and_then(|(_, p)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A bed on real Kafka: its own etcd and log dir, and real clusters that are
/// either its own ([`RealBed::start_own`], for tests that stop or freeze
/// brokers) or shared by every test of the test binary
/// ([`RealBed::start`]; tests then keep to their own topic names).
pub struct RealBed {
    pub kafka: Arc<RealClusters>,
    pub etcd: EtcdServer,
    log_dir: PathBuf,
}

/// The clusters shared by the tests of one test binary: started by the
/// first test that asks, stopped when the binary exits (the brokers are
/// tethered to it). Their logs are in `target/test-logs/<binary>-kafka/`.
fn shared_clusters() -> Result<Arc<RealClusters>> {
    static SHARED: Mutex<Option<Arc<RealClusters>>> = Mutex::new(None);
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(k) = shared.as_ref() {
        return Ok(k.clone());
    }
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            // cargo names test binaries `<name>-<hash>`.
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => s,
        })
        .unwrap_or_else(|| "tests".into());
    let name = format!("{binary}-kafka");
    let log_dir = test_log_dir(&name)?;
    let clusters = Arc::new(RealClusters::start(&name, &log_dir)?);
    *shared = Some(clusters.clone());
    Ok(clusters)
}

impl RealBed {
    /// etcd of its own, real clusters shared with the other tests of this
    /// test binary.
    pub fn start(test_name: &str) -> Result<RealBed> {
        let log_dir = test_log_dir(test_name)?;
        let kafka = shared_clusters()?;
        std::fs::write(
            log_dir.join("kafka-logs.txt"),
            format!(
                "this test ran on the shared clusters (source Kafka {}, target Kafka {}); their broker logs are in {}\n",
                kafka.source.version(),
                kafka.target.version(),
                kafka.source.log_dir().display()
            ),
        )
        .context("writing kafka-logs.txt")?;
        let etcd = EtcdServer::start(Some(&log_dir)).context("starting etcd")?;
        Ok(RealBed {
            kafka,
            etcd,
            log_dir,
        })
    }

    /// etcd and real clusters of its own (broker logs in the test's log
    /// dir), for tests that kill, freeze or restart brokers.
    pub fn start_own(test_name: &str) -> Result<RealBed> {
        Self::start_own_with(test_name, KafkaOptions::source()?, KafkaOptions::target()?)
    }

    /// [`RealBed::start_own`] with other cluster options.
    pub fn start_own_with(
        test_name: &str,
        source: KafkaOptions,
        target: KafkaOptions,
    ) -> Result<RealBed> {
        let log_dir = test_log_dir(test_name)?;
        let etcd = EtcdServer::start(Some(&log_dir)).context("starting etcd")?;
        let kafka = Arc::new(RealClusters::start_with(
            test_name, source, target, &log_dir,
        )?);
        Ok(RealBed {
            kafka,
            etcd,
            log_dir,
        })
    }
}

impl TestBed for RealBed {
    fn etcd_endpoint(&self) -> &str {
        self.etcd.endpoint()
    }
    fn source_bootstrap(&self) -> &str {
        self.kafka.source.bootstrap()
    }
    fn target_bootstrap(&self) -> &str {
        self.kafka.target.bootstrap()
    }
    fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}
