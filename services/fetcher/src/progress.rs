//! In-memory progress of owned partitions: served over gRPC, written to etcd
//! periodically, and awaited by `WaitForOffset`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cutover_model::{PartitionProgress, PartitionState};
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

impl Entry {
    fn new(key: &PartitionKey) -> Entry {
        Entry {
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
        }
    }

    fn update(&mut self, f: impl FnOnce(&mut PartitionProgress)) {
        f(&mut self.progress);
        self.progress.updated_at_ms = cutover_model::now_ms();
        // Waking the receivers is costly (measured: over a tenth of the
        // fetcher's CPU when done on every update); only a new target end
        // concerns them.
        let end = self.progress.target_log_end;
        self.target_end.send_if_modified(|v| {
            let changed = *v != end;
            *v = end;
            changed
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Shared = Arc<Mutex<Entry>>;

/// Shared by the replicators (writers) and the gRPC/etcd reporters (readers).
#[derive(Clone, Default)]
pub struct ProgressBoard {
    inner: Arc<Mutex<HashMap<PartitionKey, Shared>>>,
}

/// One partition's entry, held by its replicator so that updates (several
/// per batch) need no map lookup. After the board dropped the partition,
/// updates through an old handle go nowhere.
#[derive(Clone)]
pub struct PartitionBoard {
    entry: Shared,
}

impl PartitionBoard {
    pub fn update(&self, f: impl FnOnce(&mut PartitionProgress)) {
        lock(&self.entry).update(f);
    }

    pub fn get(&self) -> PartitionProgress {
        lock(&self.entry).progress.clone()
    }
}

impl ProgressBoard {
    /// The partition's entry, created if missing.
    pub fn handle(&self, key: &PartitionKey) -> PartitionBoard {
        let mut map = lock(&self.inner);
        let entry = map
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Mutex::new(Entry::new(key))))
            .clone();
        PartitionBoard { entry }
    }

    pub fn remove(&self, key: &PartitionKey) -> Option<PartitionProgress> {
        let removed = lock(&self.inner).remove(key);
        removed.map(|e| lock(&e).progress.clone())
    }

    pub fn snapshot(&self) -> Vec<PartitionProgress> {
        let entries: Vec<Shared> = lock(&self.inner).values().cloned().collect();
        entries.iter().map(|e| lock(e).progress.clone()).collect()
    }

    /// A receiver of the acknowledged target log end, if the partition is owned here.
    pub fn subscribe(&self, key: &PartitionKey) -> Option<watch::Receiver<i64>> {
        let entry = lock(&self.inner).get(key).cloned();
        entry.map(|e| lock(&e).target_end.subscribe())
    }
}
