//! The whole bed of one test: log dir, etcd, two mock clusters.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use cutover_coord::testing::EtcdServer;

use crate::clusters::Clusters;
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
        let log_dir = test_log_dir(test_name)?;
        let etcd = EtcdServer::start(Some(&log_dir)).context("starting etcd")?;
        let clusters = Clusters::start()?;
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
