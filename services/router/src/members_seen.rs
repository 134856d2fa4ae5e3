//! The group members a router has forwarded requests of, with the client
//! each came from: what a group promotion compares with the source
//! group's own member list to tell whether every member now comes through
//! routers. Kept in memory, bounded, and forgotten when a member leaves or
//! has not been seen for a while (a live member heartbeats every few
//! seconds).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A member as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub last_seen_ms: i64,
}

/// What one answered group request says about its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Nothing,
    Member {
        member_id: String,
        group_instance_id: Option<String>,
    },
    Left(Vec<String>),
}

/// Members not seen for this long are forgotten: far above any session
/// timeout a broker allows by default (45 s, at most 30 min with
/// `group.max.session.timeout.ms`... a member that silent is gone).
pub const FORGET_AFTER: Duration = Duration::from_secs(30 * 60);

/// Members remembered at most, over every group: a client flood of new
/// member ids cannot grow the router's memory without bound.
pub const MAX_MEMBERS: usize = 100_000;

#[derive(Clone, Default)]
pub struct GroupMembers {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    groups: HashMap<String, BTreeMap<String, SeenMember>>,
    total: usize,
}

impl GroupMembers {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what a forwarded request of `group` from `client_id` at
    /// `client_host` showed, at `now_ms`. `false` when a new member was
    /// not remembered because the bound is reached.
    pub fn record(
        &self,
        group: &str,
        seen: Seen,
        client_id: &str,
        client_host: &str,
        now_ms: i64,
    ) -> bool {
        let mut inner = self.lock();
        match seen {
            Seen::Nothing => true,
            Seen::Member {
                member_id,
                group_instance_id,
            } => {
                if member_id.is_empty() {
                    return true;
                }
                let full = inner.total >= MAX_MEMBERS;
                let members = inner.groups.entry(group.to_owned()).or_default();
                let fresh = !members.contains_key(&member_id);
                if fresh && full {
                    if members.is_empty() {
                        inner.groups.remove(group);
                    }
                    return false;
                }
                members.insert(
                    member_id.clone(),
                    SeenMember {
                        member_id,
                        group_instance_id,
                        client_id: client_id.to_owned(),
                        client_host: client_host.to_owned(),
                        last_seen_ms: now_ms,
                    },
                );
                if fresh {
                    inner.total += 1;
                }
                true
            }
            Seen::Left(ids) => {
                let mut removed = 0;
                if let Some(members) = inner.groups.get_mut(group) {
                    for id in &ids {
                        removed += usize::from(members.remove(id).is_some());
                    }
                    if members.is_empty() {
                        inner.groups.remove(group);
                    }
                }
                inner.total -= removed;
                true
            }
        }
    }

    /// Forgets members not seen since `now_ms - FORGET_AFTER`.
    pub fn forget_silent(&self, now_ms: i64) {
        let cutoff = now_ms - FORGET_AFTER.as_millis() as i64;
        let mut inner = self.lock();
        let mut removed = 0;
        inner.groups.retain(|_, members| {
            let before = members.len();
            members.retain(|_, m| m.last_seen_ms >= cutoff);
            removed += before - members.len();
            !members.is_empty()
        });
        inner.total -= removed;
    }

    /// The members of `group` (every group when `None`), by group.
    pub fn list(&self, group: Option<&str>) -> Vec<(String, Vec<SeenMember>)> {
        let inner = self.lock();
        let mut out: Vec<(String, Vec<SeenMember>)> = inner
            .groups
            .iter()
            .filter(|(g, _)| group.is_none_or(|want| want == g.as_str()))
            .map(|(g, m)| (g.clone(), m.values().cloned().collect()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// (groups, members) remembered now.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.groups.len(), inner.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> Seen {
        Seen::Member {
            member_id: id.into(),
            group_instance_id: None,
        }
    }

    #[test]
    fn members_are_kept_per_group_until_they_leave() {
        let g = GroupMembers::default();
        assert!(g.record("g", member("m1"), "c1", "10.0.0.1", 1));
        assert!(g.record("g", member("m2"), "c2", "10.0.0.2", 2));
        assert!(g.record("g", member("m1"), "c1", "10.0.0.1", 5));
        assert!(g.record("h", member("m9"), "c9", "10.0.0.9", 5));
        assert_eq!(g.counts(), (2, 3));
        let listed = g.list(Some("g"));
        assert_eq!(listed.len(), 1);
        let ids: Vec<(&str, &str, i64)> = listed[0]
            .1
            .iter()
            .map(|m| (m.member_id.as_str(), m.client_id.as_str(), m.last_seen_ms))
            .collect();
        assert_eq!(ids, vec![("m1", "c1", 5), ("m2", "c2", 2)]);
        g.record("g", Seen::Left(vec!["m1".into(), "m2".into()]), "c1", "", 6);
        assert_eq!(g.counts(), (1, 1));
        assert!(g.list(Some("g")).is_empty());
        // An empty member id (a first JoinGroup) is no member yet.
        g.record("h", member(""), "c", "", 7);
        assert_eq!(g.counts(), (1, 1));
    }

    #[test]
    fn silent_members_are_forgotten() {
        let g = GroupMembers::default();
        let t0 = 1_000_000_000;
        g.record("g", member("old"), "c", "", t0);
        g.record("g", member("new"), "c", "", t0 + 60_000);
        g.forget_silent(t0 + FORGET_AFTER.as_millis() as i64 + 1);
        let left: Vec<String> = g.list(None)[0]
            .1
            .iter()
            .map(|m| m.member_id.clone())
            .collect();
        assert_eq!(left, vec!["new".to_owned()]);
        assert_eq!(g.counts(), (1, 1));
    }

    #[test]
    fn new_members_beyond_the_bound_are_not_remembered_but_known_ones_are_updated() {
        let g = GroupMembers::default();
        for i in 0..MAX_MEMBERS {
            assert!(g.record(&format!("g{}", i % 100), member(&i.to_string()), "c", "", 1));
        }
        assert!(!g.record("new-group", member("x"), "c", "", 2));
        assert!(g.record("g0", member("0"), "c", "", 3));
        assert_eq!(g.counts(), (100, MAX_MEMBERS));
        assert!(g.list(Some("new-group")).is_empty());
    }
}
