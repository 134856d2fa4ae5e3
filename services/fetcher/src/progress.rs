//! In-memory progress of owned partitions: served over gRPC, written to etcd
//! periodically, and awaited by `WaitForOffset`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cutover_model::{CopyDirection, PartitionProgress, PartitionState};
use tokio::sync::{watch, Notify};

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
    /// Bumped by every update; `published` is the one last written out.
    version: u64,
    published: u64,
    /// Caught up and waiting in the link's fetch session, which confirms
    /// the partition in sync for as long as it does not answer for it.
    waiting: bool,
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
                direction: CopyDirection::Forward,
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
            version: 1,
            published: 0,
            waiting: false,
        }
    }

    fn update(&mut self, f: impl FnOnce(&mut PartitionProgress)) {
        f(&mut self.progress);
        self.progress.updated_at_ms = cutover_model::now_ms();
        self.version += 1;
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
    /// Asks for a publish before the next interval (see `update_soon`).
    soon: Arc<Notify>,
}

/// One partition's entry, held by its replicator so that updates (several
/// per batch) need no map lookup. After the board dropped the partition,
/// updates through an old handle go nowhere.
#[derive(Clone)]
pub struct PartitionBoard {
    entry: Shared,
    soon: Arc<Notify>,
}

impl PartitionBoard {
    pub fn update(&self, f: impl FnOnce(&mut PartitionProgress)) {
        lock(&self.entry).update(f);
    }

    /// [`Self::update`], published without waiting for the next interval:
    /// for changes others wait on, such as a partition taken over from a
    /// dead fetcher copying again.
    pub fn update_soon(&self, f: impl FnOnce(&mut PartitionProgress)) {
        self.update(f);
        self.soon.notify_one();
    }

    pub fn get(&self) -> PartitionProgress {
        lock(&self.entry).progress.clone()
    }

    /// Marks the partition as waiting in a fetch session (or not).
    pub fn set_waiting(&self, waiting: bool) {
        lock(&self.entry).waiting = waiting;
    }
}

impl ProgressBoard {
    /// The partition's entry, created if missing, copied in `direction`.
    pub fn handle(&self, key: &PartitionKey, direction: CopyDirection) -> PartitionBoard {
        let entry = lock(&self.inner)
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Mutex::new(Entry::new(key))))
            .clone();
        lock(&entry).update(|p| p.direction = direction);
        PartitionBoard {
            entry,
            soon: self.soon.clone(),
        }
    }

    /// Fires after an `update_soon` (once for several).
    pub async fn publish_wanted(&self) {
        self.soon.notified().await
    }

    pub fn remove(&self, key: &PartitionKey) -> Option<PartitionProgress> {
        let removed = lock(&self.inner).remove(key);
        removed.map(|e| lock(&e).progress.clone())
    }

    pub fn snapshot(&self) -> Vec<PartitionProgress> {
        let entries: Vec<Shared> = lock(&self.inner).values().cloned().collect();
        entries.iter().map(|e| lock(e).progress.clone()).collect()
    }

    /// The entries to publish: those updated since they were last
    /// published, or with `all` every entry. With `all`, a partition
    /// waiting in a fetch session is confirmed as of `confirmed(link)`
    /// (when that link's sessions last answered), so a caught-up partition
    /// costs nothing between full publishes.
    pub fn to_publish(
        &self,
        all: bool,
        confirmed: impl Fn(&str, CopyDirection) -> Option<i64>,
    ) -> Vec<PartitionProgress> {
        let entries: Vec<Shared> = lock(&self.inner).values().cloned().collect();
        let mut out = Vec::new();
        for e in &entries {
            let mut e = lock(e);
            if all && e.waiting {
                if let Some(at) = confirmed(&e.progress.link, e.progress.direction) {
                    e.progress.updated_at_ms = e.progress.updated_at_ms.max(at);
                }
            }
            if all || e.version != e.published {
                e.published = e.version;
                out.push(e.progress.clone());
            }
        }
        out
    }

    /// A publish failed: the next one writes everything again.
    pub fn republish_all(&self) {
        let entries: Vec<Shared> = lock(&self.inner).values().cloned().collect();
        for e in &entries {
            lock(e).published = 0;
        }
    }

    /// A receiver of the acknowledged log end of the cluster written to,
    /// and the direction it is copied in, if the partition is owned here.
    pub fn subscribe(&self, key: &PartitionKey) -> Option<(watch::Receiver<i64>, CopyDirection)> {
        let entry = lock(&self.inner).get(key).cloned();
        entry.map(|e| {
            let e = lock(&e);
            (e.target_end.subscribe(), e.progress.direction)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> PartitionKey {
        PartitionKey {
            link: "l".into(),
            topic: "t".into(),
            partition: p,
        }
    }

    fn partitions(ps: &[PartitionProgress]) -> Vec<i32> {
        let mut v: Vec<i32> = ps.iter().map(|p| p.partition).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn only_updated_partitions_are_published_until_a_full_publish() {
        let board = ProgressBoard::default();
        let (a, b) = (
            board.handle(&key(0), CopyDirection::Forward),
            board.handle(&key(1), CopyDirection::Reverse),
        );
        // New entries are published once.
        assert_eq!(
            partitions(&board.to_publish(false, |_, _| None)),
            vec![0, 1]
        );
        assert!(board.to_publish(false, |_, _| None).is_empty());
        a.update(|p| p.target_log_end = 5);
        assert_eq!(partitions(&board.to_publish(false, |_, _| None)), vec![0]);
        assert!(board.to_publish(false, |_, _| None).is_empty());
        // A full publish has everything; a partition waiting in a fetch
        // session shows when that session (of its direction) last
        // confirmed it.
        b.set_waiting(true);
        let all = board.to_publish(true, |link, d| {
            (link == "l" && d == CopyDirection::Reverse).then_some(i64::MAX - 1)
        });
        assert_eq!(partitions(&all), vec![0, 1]);
        let waiting = all
            .iter()
            .find(|p| p.partition == 1)
            .map(|p| p.updated_at_ms);
        let busy = all
            .iter()
            .find(|p| p.partition == 0)
            .map(|p| p.updated_at_ms);
        assert_eq!(waiting, Some(i64::MAX - 1));
        assert!(busy < Some(i64::MAX - 1));
        // Confirmation is not an update.
        assert!(board.to_publish(false, |_, _| None).is_empty());
        // After a failed publish, everything goes again.
        board.republish_all();
        assert_eq!(
            partitions(&board.to_publish(false, |_, _| None)),
            vec![0, 1]
        );
    }
}
