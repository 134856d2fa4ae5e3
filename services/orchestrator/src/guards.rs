//! The etcd transactions that keep every mirror document under a link that
//! exists, although `mirror add` and `link delete` can run at the same time
//! on different orchestrators.
//!
//! `link delete` refuses while the link has mirrors, and `mirror add` needs
//! the link; each reads one key and writes the other, so plain checks let
//! both pass (add reads the link, delete lists no mirrors, add stores, delete
//! removes the link). The guards are:
//! - the add's transaction requires the link at the revision it read (not
//!   deleted, not deleted and created again) and writes the link back
//!   unchanged, which moves its mod revision;
//! - the delete reads the link, then lists the mirrors, and deletes only if
//!   the link's mod revision is still the one it read. An add that stored
//!   before the listing is seen by it; one that stored after the read moved
//!   the revision. (A guard cannot say "no key under this prefix", hence the
//!   write-back.)

use cutover_coord::{Precondition, Versioned, WriteOp};
use cutover_model::{keys, Link, MirrorTopic};

use crate::error::{ApiError, ApiResult};

/// Guards and writes that store the mirrors of one `mirror add` at once.
/// With the link, at most `mirrors.len() + 1` operations: etcd's default
/// `--max-txn-ops` is 128.
pub fn store_mirrors_txn(
    link: &Versioned<Link>,
    mirrors: &[MirrorTopic],
) -> ApiResult<(Vec<Precondition>, Vec<WriteOp>)> {
    let mut docs = Vec::with_capacity(mirrors.len());
    for m in mirrors {
        if m.link != link.value.name {
            return Err(ApiError::BadRequest(format!(
                "mirror topic {}/{} cannot be stored under link {:?}",
                m.link, m.topic, link.value.name
            )));
        }
        let doc = serde_json::to_value(m).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        docs.push((keys::mirror(&m.link, &m.topic), doc));
    }
    store_under_link_txn(link, docs)
}

/// Guards and writes that store new documents of a link (mirror topics,
/// mirror groups) at once, each key absent before, under the link as
/// read; `link delete` sees them (module doc).
pub fn store_under_link_txn(
    link: &Versioned<Link>,
    docs: Vec<(String, serde_json::Value)>,
) -> ApiResult<(Vec<Precondition>, Vec<WriteOp>)> {
    let link_key = keys::link(&link.value.name);
    let link_doc =
        serde_json::to_value(&link.value).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut guards = vec![Precondition::ModRevision(
        link_key.clone(),
        link.mod_revision,
    )];
    let mut writes = vec![WriteOp::Put(link_key, link_doc)];
    for (key, doc) in docs {
        guards.push(Precondition::Absent(key.clone()));
        writes.push(WriteOp::Put(key, doc));
    }
    Ok((guards, writes))
}

/// What to do after the store transaction was refused, from what etcd holds
/// now: the link as read again (`None`: deleted) and the mirrors it already
/// has. `Ok` is the link to retry with: another `mirror add` on the same
/// link only moved its revision.
pub fn after_refused_store(
    read: &Versioned<Link>,
    now: Option<Versioned<Link>>,
    wanted: &[MirrorTopic],
    existing: &[String],
) -> ApiResult<Versioned<Link>> {
    let name = &read.value.name;
    let Some(now) = now else {
        return Err(ApiError::Precondition(format!(
            "link {name:?} was deleted while the mirror topics were being added; no mirror topic was stored"
        )));
    };
    // Same name, other link: the mirrors were planned against clusters
    // that may not be this link's.
    if now.value != read.value {
        return Err(ApiError::Conflict(format!(
            "link {name:?} (deleted and created again while the mirror topics were being added; nothing was stored)"
        )));
    }
    if let Some(m) = wanted.iter().find(|m| existing.contains(&m.topic)) {
        return Err(ApiError::AlreadyExists {
            what: "mirror topic",
            name: format!("{}/{}", m.link, m.topic),
        });
    }
    Ok(now)
}

/// Guards and writes of `link delete`, once no mirror was listed after the
/// link was read at `mod_revision`.
pub fn delete_link_txn(name: &str, mod_revision: i64) -> (Vec<Precondition>, Vec<WriteOp>) {
    let key = keys::link(name);
    (
        vec![Precondition::ModRevision(key.clone(), mod_revision)],
        vec![WriteOp::Delete(key)],
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cutover_model::{ClusterSpec, LinkOptions, MirrorState, TargetTopicSettings};

    use super::*;

    fn link(created_at_ms: i64) -> Link {
        Link {
            name: "l1".into(),
            source: ClusterSpec {
                bootstrap_servers: vec!["s:9092".into()],
                properties: BTreeMap::new(),
            },
            target: ClusterSpec {
                bootstrap_servers: vec!["t:9092".into()],
                properties: BTreeMap::new(),
            },
            options: LinkOptions::default(),
            created_at_ms,
        }
    }

    fn mirror(topic: &str) -> MirrorTopic {
        MirrorTopic {
            link: "l1".into(),
            topic: topic.into(),
            partitions: 3,
            state: MirrorState::Mirroring,
            reason: String::new(),
            created_at_ms: 1,
            target: TargetTopicSettings::default(),
            switches: 0,
        }
    }

    #[test]
    fn store_requires_the_link_as_read_and_moves_its_revision() {
        let l = Versioned {
            value: link(1),
            mod_revision: 42,
        };
        let (guards, writes) = store_mirrors_txn(&l, &[mirror("a"), mirror("b")]).unwrap();
        assert_eq!(
            guards,
            vec![
                Precondition::ModRevision("links/l1".into(), 42),
                Precondition::Absent("mirrors/l1/a".into()),
                Precondition::Absent("mirrors/l1/b".into()),
            ]
        );
        assert_eq!(
            writes[0],
            WriteOp::Put("links/l1".into(), serde_json::to_value(link(1)).unwrap())
        );
        assert_eq!(writes.len(), 3);

        let elsewhere = MirrorTopic {
            link: "l2".into(),
            ..mirror("a")
        };
        assert!(store_mirrors_txn(&l, &[elsewhere]).is_err());
    }

    #[test]
    fn delete_requires_the_link_revision_it_read() {
        assert_eq!(
            delete_link_txn("l1", 7),
            (
                vec![Precondition::ModRevision("links/l1".into(), 7)],
                vec![WriteOp::Delete("links/l1".into())]
            )
        );
    }

    #[test]
    fn refused_store_is_retried_only_while_the_same_link_exists_and_no_mirror_is_taken() {
        let read = Versioned {
            value: link(1),
            mod_revision: 5,
        };
        let moved = Versioned {
            value: link(1),
            mod_revision: 9,
        };
        let retry = after_refused_store(&read, Some(moved.clone()), &[mirror("a")], &["b".into()]);
        assert_eq!(retry.unwrap(), moved);

        let gone = after_refused_store(&read, None, &[mirror("a")], &[]).unwrap_err();
        assert!(gone.to_string().contains("was deleted"), "{gone}");

        let recreated = Versioned {
            value: link(2),
            mod_revision: 9,
        };
        let replaced =
            after_refused_store(&read, Some(recreated), &[mirror("a")], &[]).unwrap_err();
        assert!(matches!(replaced, ApiError::Conflict(_)), "{replaced}");

        let taken =
            after_refused_store(&read, Some(moved), &[mirror("a")], &["a".into()]).unwrap_err();
        assert!(matches!(taken, ApiError::AlreadyExists { .. }), "{taken}");
    }

    /// etcd's key-value semantics as far as these transactions use them.
    #[derive(Clone, Default)]
    struct Kv {
        revision: i64,
        docs: BTreeMap<String, (serde_json::Value, i64)>,
    }

    impl Kv {
        fn txn(&mut self, (guards, writes): (Vec<Precondition>, Vec<WriteOp>)) -> bool {
            let holds = guards.iter().all(|g| match g {
                Precondition::Absent(k) => !self.docs.contains_key(k),
                Precondition::ModRevision(k, r) => self.docs.get(k).is_some_and(|d| d.1 == *r),
            });
            if !holds {
                return false;
            }
            self.revision += 1;
            for w in writes {
                match w {
                    WriteOp::Put(k, v) => {
                        self.docs.insert(k, (v, self.revision));
                    }
                    WriteOp::Delete(k) => {
                        self.docs.remove(&k);
                    }
                }
            }
            true
        }

        fn link(&self) -> Option<Versioned<Link>> {
            self.docs.get("links/l1").map(|(v, r)| Versioned {
                value: serde_json::from_value(v.clone()).unwrap(),
                mod_revision: *r,
            })
        }

        fn mirrors(&self) -> Vec<String> {
            self.docs
                .keys()
                .filter_map(|k| k.strip_prefix("mirrors/l1/"))
                .map(str::to_string)
                .collect()
        }
    }

    /// One `mirror add` (as `Orchestrator::add_mirrors` / `store_mirrors`),
    /// one etcd request per step, with one retry.
    #[derive(Clone, Debug)]
    enum Add {
        ReadLink(&'static str),
        Store(&'static str, Versioned<Link>, bool),
        Recheck(&'static str, Versioned<Link>),
        Done(bool),
    }

    impl Add {
        fn step(self, kv: &mut Kv) -> Add {
            match self {
                Add::ReadLink(t) => match kv.link() {
                    Some(l) => Add::Store(t, l, false),
                    None => Add::Done(false),
                },
                Add::Store(t, l, retried) => {
                    if kv.txn(store_mirrors_txn(&l, &[mirror(t)]).unwrap()) {
                        Add::Done(true)
                    } else if retried {
                        Add::Done(false)
                    } else {
                        Add::Recheck(t, l)
                    }
                }
                Add::Recheck(t, l) => {
                    match after_refused_store(&l, kv.link(), &[mirror(t)], &kv.mirrors()) {
                        Ok(l) => Add::Store(t, l, true),
                        Err(_) => Add::Done(false),
                    }
                }
                done @ Add::Done(_) => done,
            }
        }
    }

    /// One `link delete` (as `Orchestrator::delete_link`).
    #[derive(Clone, Debug)]
    enum Delete {
        ReadLink,
        ListMirrors(i64),
        Txn(i64),
        Done,
    }

    impl Delete {
        fn step(self, kv: &mut Kv) -> Delete {
            match self {
                Delete::ReadLink => match kv.link() {
                    Some(l) => Delete::ListMirrors(l.mod_revision),
                    None => Delete::Done,
                },
                Delete::ListMirrors(rev) if kv.mirrors().is_empty() => Delete::Txn(rev),
                Delete::ListMirrors(_) => Delete::Done,
                Delete::Txn(rev) => {
                    kv.txn(delete_link_txn("l1", rev));
                    Delete::Done
                }
                Delete::Done => Delete::Done,
            }
        }
    }

    #[derive(Clone)]
    struct World {
        kv: Kv,
        adds: Vec<Add>,
        delete: Delete,
    }

    /// Runs every interleaving of the requests' steps; `check` sees each
    /// state reached and `end` each final one.
    fn explore(w: World, check: &impl Fn(&Kv), end: &mut impl FnMut(&World)) {
        check(&w.kv);
        let mut moved = false;
        for i in 0..w.adds.len() {
            if !matches!(w.adds[i], Add::Done(_)) {
                let mut next = w.clone();
                next.adds[i] = next.adds[i].clone().step(&mut next.kv);
                explore(next, check, end);
                moved = true;
            }
        }
        if !matches!(w.delete, Delete::Done) {
            let mut next = w.clone();
            next.delete = next.delete.clone().step(&mut next.kv);
            explore(next, check, end);
            moved = true;
        }
        if !moved {
            end(&w);
        }
    }

    #[test]
    fn no_interleaving_of_mirror_adds_and_link_delete_leaves_a_mirror_without_its_link() {
        let mut kv = Kv::default();
        assert!(kv.txn((
            vec![Precondition::Absent("links/l1".into())],
            vec![WriteOp::Put(
                "links/l1".into(),
                serde_json::to_value(link(1)).unwrap()
            )],
        )));
        let world = World {
            kv,
            adds: vec![Add::ReadLink("a"), Add::ReadLink("b")],
            delete: Delete::ReadLink,
        };
        let (mut deleted, mut kept) = (0, 0);
        explore(
            world,
            &|kv: &Kv| {
                assert!(
                    kv.link().is_some() || kv.mirrors().is_empty(),
                    "mirrors {:?} stored without their link",
                    kv.mirrors()
                );
            },
            &mut |w: &World| {
                if w.kv.link().is_some() {
                    kept += 1;
                    // Concurrent adds on one link both get through: the
                    // revision one moved only makes the other retry.
                    assert_eq!(w.kv.mirrors(), vec!["a", "b"], "{:?}", w.adds);
                    assert!(
                        w.adds.iter().all(|a| matches!(a, Add::Done(true))),
                        "{:?}",
                        w.adds
                    );
                } else {
                    deleted += 1;
                }
            },
        );
        assert!(deleted > 0 && kept > 0, "deleted {deleted}, kept {kept}");
    }
}
