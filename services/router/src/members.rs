//! Router membership: each router holds its node id under its etcd lease
//! (`owners/router/<node id>`) and registers its address at
//! `members/router/<node id>`; every router watches the members, which are
//! the brokers clients see.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use cutover_coord::{Coord, Session, WatchEvent};
use cutover_model::{keys, RouterMember};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::RouterError;

/// The live routers, as last seen in etcd. Cheap to clone.
#[derive(Clone, Default)]
pub struct Routers {
    inner: Arc<RwLock<BTreeMap<i32, RouterMember>>>,
}

impl Routers {
    /// Node ids, ascending.
    pub fn ids(&self) -> Vec<i32> {
        self.read().keys().copied().collect()
    }

    /// Every live router, by node id.
    pub fn all(&self) -> Vec<RouterMember> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<i32, RouterMember>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<i32, RouterMember>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A fixed set (tests).
    pub fn fixed(members: Vec<RouterMember>) -> Routers {
        let r = Routers::default();
        r.write()
            .extend(members.into_iter().map(|m| (m.node_id, m)));
        r
    }
}

/// The ownership resource of a node id.
fn node_resource(node_id: i32) -> String {
    format!("router/{node_id}")
}

/// Takes `me.node_id` for this session and announces `me`. Fails with
/// [`RouterError::NodeIdInUse`] while another live router holds the id.
pub async fn join(
    coord: &Coord,
    session: &Session,
    me: &RouterMember,
    instance: &str,
) -> Result<(), RouterError> {
    let resource = node_resource(me.node_id);
    if !cutover_coord::try_claim(coord, session, &resource, instance).await? {
        let holder = coord
            .get::<RouterMember>(&cutover_coord::member_key(
                keys::ROUTER_KIND,
                &me.node_id.to_string(),
            ))
            .await?
            .map(|v| format!("{}:{}", v.value.host, v.value.port))
            .unwrap_or_else(|| "an unregistered address".to_owned());
        return Err(RouterError::NodeIdInUse {
            node_id: me.node_id,
            holder,
        });
    }
    cutover_coord::register_member(
        coord,
        session,
        keys::ROUTER_KIND,
        &me.node_id.to_string(),
        me,
    )
    .await?;
    Ok(())
}

/// The live routers, kept current by a task owned by `cancel`.
pub async fn watch(
    coord: &Coord,
    cancel: CancellationToken,
) -> Result<(Routers, JoinHandle<()>), RouterError> {
    let prefix = cutover_coord::members_prefix(keys::ROUTER_KIND);
    let (snapshot, rx) = coord.watch_prefix(&prefix, cancel.clone()).await?;
    let routers = Routers::default();
    for (_, v) in snapshot.decode::<RouterMember>()? {
        routers.write().insert(v.value.node_id, v.value);
    }
    let task = tokio::spawn(follow(routers.clone(), rx, cancel));
    Ok((routers, task))
}

async fn follow(routers: Routers, mut rx: mpsc::Receiver<WatchEvent>, cancel: CancellationToken) {
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = rx.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        let Some(id) = event
            .rel()
            .rsplit('/')
            .next()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        match event.decode::<RouterMember>() {
            Ok(Some(member)) => {
                info!(node_id = member.node_id, host = %member.host, port = member.port, "router joined");
                routers.write().insert(id, member);
            }
            Ok(None) => {
                info!(node_id = id, "router left");
                routers.write().remove(&id);
            }
            Err(e) => {
                warn!(error = %e, key = %event.rel(), "unreadable router registration; ignored")
            }
        }
    }
}
