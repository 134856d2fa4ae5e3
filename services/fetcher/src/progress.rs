//! In-memory progress of owned partitions: served over gRPC, written to etcd
//! periodically, and awaited by `WaitForOffset`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cutover_model::{OffsetRange, PartitionProgress, PartitionState};
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub link: String,
    pub topic: String,
    pub partition: i32,
}

impl std::fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.link, self.topic, self.partition)
    }
}

struct Entry {
    progress: PartitionProgress,
    target_end: watch::Sender<i64>,
}

/// Shared by the replicators (writers) and the gRPC/etcd reporters (readers).
#[derive(Clone, Default)]
pub struct ProgressBoard {
    inner: Arc<Mutex<HashMap<PartitionKey, Entry>>>,
}

impl ProgressBoard {
    pub fn update(&self, key: &PartitionKey, f: impl FnOnce(&mut PartitionProgress)) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(key.clone()).or_insert_with(|| Entry {
            progress: PartitionProgress {
                link: key.link.clone(),
                topic: key.topic.clone(),
                partition: key.partition,
                state: PartitionState::Syncing,
                owner: String::new(),
                source_log_start: 0,
                source_log_end: 0,
                target_log_end: 0,
                lost: Vec::new(),
                error: String::new(),
                updated_at_ms: 0,
                bytes_copied: 0,
                records_copied: 0,
            },
            target_end: watch::channel(-1).0,
        });
        f(&mut entry.progress);
        entry.progress.updated_at_ms = cutover_model::now_ms();
        entry.target_end.send_replace(entry.progress.target_log_end);
    }

    pub fn add_lost(&self, key: &PartitionKey, range: OffsetRange) {
        self.update(key, |p| p.lost.push(range));
    }

    pub fn remove(&self, key: &PartitionKey) -> Option<PartitionProgress> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key).map(|e| e.progress)
    }

    pub fn snapshot(&self) -> Vec<PartitionProgress> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|e| e.progress.clone()).collect()
    }

    pub fn get(&self, key: &PartitionKey) -> Option<PartitionProgress> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map(|e| e.progress.clone())
    }

    /// A receiver of the acknowledged target log end, if the partition is owned here.
    pub fn subscribe(&self, key: &PartitionKey) -> Option<watch::Receiver<i64>> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map(|e| e.target_end.subscribe())
    }
}
