//! Which cluster is each topic's primary, from the link's mirror topics in
//! etcd (watched): the target once a topic is PROMOTED (and while a
//! rollback's barrier runs, DEMOTING), else the source;
//! and how many times its primary switched (the generation of the epochs
//! clients see, `epochs`). Topics that are not mirrored are the source's,
//! untouched. A topic in a promotion's barrier has its writes held from
//! the moment the router sees it there until it leaves it, so that a
//! router the promotion did not ask (started, or restarted, during it)
//! does not write to the old primary after its quiet check.
//!
//! Mirror groups are followed the same way (`Groups`): a group's home is
//! the cluster whose coordinator runs it, and a group in a barrier has its
//! JoinGroups held.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cutover_coord::{Coord, WatchEvent};
pub use cutover_model::Side;
use cutover_model::{keys, MirrorGroup, MirrorTopic};
use prometheus::{IntCounterVec, IntGaugeVec};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::epochs::View;
use crate::error::RouterError;
use crate::grpc::{MAX_JOIN_HOLD, MAX_PRODUCE_HOLD};
use crate::holds::Holds;
use crate::metrics::Metrics;

/// What the router needs of one mirror topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    primary: Side,
    switches: u32,
    barrier: bool,
}

impl Route {
    fn of(m: &MirrorTopic) -> Route {
        Route {
            primary: m.state.primary(),
            switches: m.switches,
            barrier: m.state.in_barrier(),
        }
    }
}

/// A document under a watched prefix that says where something is routed.
trait Routed: DeserializeOwned + Send + 'static {
    fn route(&self) -> Route;
}

impl Routed for MirrorTopic {
    fn route(&self) -> Route {
        Route::of(self)
    }
}

impl Routed for MirrorGroup {
    fn route(&self) -> Route {
        Route {
            primary: self.home(),
            switches: self.switches,
            barrier: self.state.in_barrier(),
        }
    }
}

/// The homes of the link's mirror groups: the same view as the topics'.
pub type Groups = Topics;

/// The primaries of the link's mirror topics (or the homes of its mirror
/// groups), as last seen in etcd. Cheap to clone.
#[derive(Clone)]
pub struct Topics {
    inner: Arc<RwLock<HashMap<String, Route>>>,
    /// The etcd revision the view has reached: a release of held requests
    /// waits for the revision at which a promotion changed the primary.
    revision: Arc<watch::Sender<i64>>,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            inner: Arc::default(),
            revision: Arc::new(watch::channel(0).0),
        }
    }
}

impl Topics {
    /// Where `topic`'s writes and reads go.
    pub fn primary(&self, topic: &str) -> Side {
        self.read().get(topic).map_or(Side::Source, |r| r.primary)
    }

    /// How `side`'s leader epochs of `topic` are shown to clients.
    pub fn view(&self, topic: &str, side: Side) -> View {
        View {
            side,
            switches: self.read().get(topic).map_or(0, |r| r.switches),
        }
    }

    /// How the epochs of `topic`'s primary are shown: the primary and the
    /// switches read together, so they belong to one state of the topic.
    pub fn primary_view(&self, topic: &str) -> View {
        let route = self.read().get(topic).copied();
        route.map_or(View::unswitched(Side::Source), |r| View {
            side: r.primary,
            switches: r.switches,
        })
    }

    /// The topics whose primary is the target.
    pub fn on_target(&self) -> Vec<String> {
        self.read()
            .iter()
            .filter(|(_, r)| r.primary == Side::Target)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// The etcd revision the view has reached.
    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// Waits until the view has reached etcd revision `revision`; `Err`
    /// with the revision it has reached when `timeout` passes first.
    pub async fn reached(&self, revision: i64, timeout: Duration) -> Result<(), i64> {
        let mut rx = self.revision.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(self.revision()),
        }
    }

    fn advance(&self, revision: i64) {
        self.revision.send_if_modified(|r| {
            let newer = revision > *r;
            if newer {
                *r = revision;
            }
            newer
        });
    }

    /// Fixed primaries, never switched (tests).
    pub fn fixed(primaries: &[(&str, Side)]) -> Topics {
        let t = Topics::default();
        t.write().extend(primaries.iter().map(|(n, s)| {
            (
                (*n).to_owned(),
                Route {
                    primary: *s,
                    switches: 0,
                    barrier: false,
                },
            )
        }));
        t
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Route>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Route>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `name` is in a promotion's barrier.
    pub fn in_barrier(&self, topic: &str) -> bool {
        self.read().get(topic).is_some_and(|r| r.barrier)
    }

    /// Records `topic`'s route (`None`: no longer mirrored); returns the
    /// previous primary when the primary changed.
    fn set(&self, topic: &str, route: Option<Route>) -> Option<Side> {
        let mut map = self.write();
        let before = map.get(topic).map_or(Side::Source, |r| r.primary);
        match route {
            Some(r) => map.insert(topic.to_owned(), r),
            None => map.remove(topic),
        };
        let after = route.map_or(Side::Source, |r| r.primary);
        (before != after).then_some(before)
    }

    fn publish(&self, gauge: &IntGaugeVec) {
        let map = self.read();
        for side in [Side::Source, Side::Target] {
            let n = map.values().filter(|r| r.primary == side).count();
            gauge.with_label_values(&[side.name()]).set(n as i64);
        }
    }
}

/// What one watch follows: topics (their writes held in a barrier) or
/// groups (their JoinGroups held).
#[derive(Clone)]
struct Followed {
    noun: &'static str,
    holds: Holds,
    /// The transaction requests' holds, ended with the barrier too (keys
    /// of a name).
    txns: Holds,
    txn_keys: fn(&str) -> Vec<String>,
    hold: Duration,
    count: IntGaugeVec,
    changes: IntCounterVec,
}

impl Followed {
    /// Holds `name`'s requests as it enters a barrier, lets them go (to
    /// the side now recorded) as it leaves it.
    fn barrier(&self, name: &str, was: bool, is: bool) {
        let keys = [name.to_owned()];
        let noun = self.noun;
        match (was, is) {
            (false, true) => {
                self.holds.hold(&keys, self.hold);
                info!(name, noun, "in a promotion's barrier: held");
            }
            (true, false) => {
                self.holds.release(&keys);
                self.txns.release(&(self.txn_keys)(name));
                info!(name, noun, "out of the promotion's barrier: released");
            }
            _ => {}
        }
    }
}

/// The link's topic primaries, read before the router serves and kept
/// current by a task owned by `cancel`.
pub async fn watch(
    coord: &Coord,
    link: &str,
    metrics: Metrics,
    produce: Holds,
    txns: Holds,
    cancel: CancellationToken,
) -> Result<(Topics, JoinHandle<()>), RouterError> {
    let followed = Followed {
        noun: "topic",
        holds: produce,
        txns,
        txn_keys: |t| vec![crate::transactions::add_topic(t)],
        hold: MAX_PRODUCE_HOLD,
        count: metrics.mirrored_topics.clone(),
        changes: metrics.primary_changes.clone(),
    };
    watch_routes::<MirrorTopic>(coord, keys::mirrors_of(link), followed, cancel).await
}

/// The link's group homes, as [`watch`] does for topics; a group in a
/// barrier has its JoinGroups held in `joins`.
pub async fn watch_groups(
    coord: &Coord,
    link: &str,
    metrics: Metrics,
    joins: Holds,
    txns: Holds,
    cancel: CancellationToken,
) -> Result<(Groups, JoinHandle<()>), RouterError> {
    let followed = Followed {
        noun: "group",
        holds: joins,
        txns,
        txn_keys: |g| {
            vec![
                crate::transactions::add_group(g),
                crate::transactions::commit_group(g),
            ]
        },
        hold: MAX_JOIN_HOLD,
        count: metrics.mirrored_groups.clone(),
        changes: metrics.home_changes.clone(),
    };
    watch_routes::<MirrorGroup>(coord, keys::groups_of(link), followed, cancel).await
}

async fn watch_routes<D: Routed>(
    coord: &Coord,
    prefix: String,
    followed: Followed,
    cancel: CancellationToken,
) -> Result<(Topics, JoinHandle<()>), RouterError> {
    let (snapshot, rx) = coord.watch_prefix(&prefix, cancel.clone()).await?;
    let topics = Topics::default();
    for (key, v) in snapshot.decode::<D>()? {
        let Some(name) = key.strip_prefix(prefix.as_str()) else {
            continue;
        };
        let route = v.value.route();
        topics.set(name, Some(route));
        followed.barrier(name, false, route.barrier);
    }
    topics.advance(snapshot.revision);
    topics.publish(&followed.count);
    let task = tokio::spawn(follow::<D>(topics.clone(), prefix, rx, followed, cancel));
    Ok((topics, task))
}

async fn follow<D: Routed>(
    topics: Topics,
    prefix: String,
    mut rx: mpsc::Receiver<WatchEvent>,
    followed: Followed,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = rx.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        let Some(topic) = event.rel().strip_prefix(prefix.as_str()) else {
            continue;
        };
        let noun = followed.noun;
        let route = match event.decode::<D>() {
            Ok(Some(m)) => Some(m.route()),
            Ok(None) => None,
            Err(e) => {
                // Keep the last known side: guessing could send writes
                // (or a group) to the wrong cluster.
                warn!(error = %e, key = %event.rel(), noun, "unreadable mirror document; its side stays as it was");
                continue;
            }
        };
        let was_barrier = topics.in_barrier(topic);
        if let Some(before) = topics.set(topic, route) {
            let now = route.map_or(Side::Source, |r| r.primary);
            info!(
                name = topic,
                noun,
                from = before.name(),
                to = now.name(),
                "primary (a group's home) changed"
            );
            followed.changes.with_label_values(&[now.name()]).inc();
        }
        topics.publish(&followed.count);
        followed.barrier(topic, was_barrier, route.is_some_and(|r| r.barrier));
        // After the change is applied: a release waiting for this
        // revision then sees the new primary.
        if let WatchEvent::Put { mod_revision, .. } = &event {
            topics.advance(*mod_revision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::MirrorState;

    #[test]
    fn promoted_and_demoting_topics_are_the_targets_and_unknown_ones_the_sources() {
        for state in [
            MirrorState::Mirroring,
            MirrorState::Paused,
            MirrorState::Promoting,
            MirrorState::Failed,
        ] {
            assert_eq!(state.primary(), Side::Source, "{state:?}");
        }
        for state in [
            MirrorState::Promoted,
            MirrorState::Demoting,
            MirrorState::Detached,
        ] {
            assert_eq!(state.primary(), Side::Target, "{state:?}");
        }
        let t = Topics::fixed(&[("a", Side::Target), ("b", Side::Source)]);
        assert_eq!(
            (t.primary("a"), t.primary("b"), t.primary("c")),
            (Side::Target, Side::Source, Side::Source)
        );
        assert_eq!(t.on_target(), vec!["a".to_owned()]);
        assert_eq!(t.set("a", None), Some(Side::Target));
        let source = Route {
            primary: Side::Source,
            switches: 0,
            barrier: false,
        };
        assert_eq!(t.set("b", Some(source)), None);
        assert_eq!(t.primary("a"), Side::Source);
    }

    #[test]
    fn a_topics_view_carries_its_switches_and_others_have_none() {
        let t = Topics::default();
        let mut m = MirrorTopic {
            link: "l".into(),
            topic: "a".into(),
            partitions: 1,
            state: MirrorState::Mirroring,
            reason: String::new(),
            created_at_ms: 0,
            target: Default::default(),
            switches: 2,
        };
        // Promoted and rolled back: the source again, two switches on.
        t.set("a", Some(Route::of(&m)));
        assert_eq!(t.primary("a"), Side::Source);
        assert_eq!(
            t.view("a", Side::Source),
            View {
                side: Side::Source,
                switches: 2
            }
        );
        m.state = MirrorState::Promoted;
        m.switches = 3;
        assert_eq!(t.set("a", Some(Route::of(&m))), Some(Side::Source));
        assert_eq!(t.view("a", Side::Target).switches, 3);
        assert_eq!(
            t.primary_view("a"),
            View {
                side: Side::Target,
                switches: 3
            }
        );
        assert_eq!(t.primary_view("other"), View::unswitched(Side::Source));
        assert_eq!(
            t.view("other", Side::Source),
            View::unswitched(Side::Source)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_topic_in_a_barrier_has_its_writes_held_until_it_leaves_it() {
        let h = Holds::default();
        let metrics = Metrics::new().unwrap();
        let txns = Holds::default();
        let f = Followed {
            noun: "topic",
            holds: h.clone(),
            txns: txns.clone(),
            txn_keys: |t| vec![crate::transactions::add_topic(t)],
            hold: MAX_PRODUCE_HOLD,
            count: metrics.mirrored_topics.clone(),
            changes: metrics.primary_changes.clone(),
        };
        let a = ["a".to_owned()];
        let remaining = |h: &Holds| h.view(Some(&a))[0].remaining;
        f.barrier("a", false, false);
        assert!(remaining(&h).is_zero());
        f.barrier("a", false, true);
        assert_eq!(remaining(&h), MAX_PRODUCE_HOLD);
        tokio::time::advance(Duration::from_secs(1)).await;
        // Still in it (another field of the document changed): the hold
        // is not lengthened.
        f.barrier("a", true, true);
        assert_eq!(remaining(&h), MAX_PRODUCE_HOLD - Duration::from_secs(1));
        let added = [crate::transactions::add_topic("a")];
        txns.hold(&added, MAX_PRODUCE_HOLD);
        f.barrier("a", true, false);
        assert!(remaining(&h).is_zero());
        assert!(txns.view(Some(&added))[0].remaining.is_zero());
        for state in [MirrorState::Promoting, MirrorState::Demoting] {
            assert!(state.in_barrier(), "{state:?}");
        }
        for state in [
            MirrorState::Mirroring,
            MirrorState::Paused,
            MirrorState::Promoted,
            MirrorState::Failed,
            MirrorState::Detached,
        ] {
            assert!(!state.in_barrier(), "{state:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_waits_until_the_view_reached_the_revision_it_names() {
        let t = Topics::default();
        t.advance(5);
        assert_eq!(t.reached(5, Duration::from_secs(1)).await, Ok(()));
        assert_eq!(t.reached(9, Duration::from_secs(1)).await, Err(5));
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move { t.reached(9, Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        t.advance(7);
        t.advance(3);
        assert_eq!(t.revision(), 7, "the view never goes back");
        t.advance(9);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }
}
