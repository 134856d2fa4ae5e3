//! One fetcher process: joins the fetcher group in etcd, takes a fair share
//! of the mirrored partitions, replicates them, reports progress, and hands
//! everything back cleanly on shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cutover_coord::{Coord, CoordConfig, Session};
use cutover_model::{
    keys, CopyDirection, FetcherMember, Link, MirrorTopic, PartitionFailure, TargetTopicSettings,
};
use cutover_retry::Policy;
use cutover_telemetry::{Health, TraceContextLayer};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::bandwidth::{self, LinkBandwidth};
use crate::clusters::ClusterCache;
use crate::config::FetcherConfig;
use crate::metrics::Metrics;
use crate::progress::{PartitionKey, ProgressBoard};
use crate::replicator::{self, PartitionCtx, ReplicateError, ReplicatorSettings};

#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    #[error(transparent)]
    Coord(#[from] cutover_coord::CoordError),
    #[error("could not listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Telemetry(#[from] cutover_telemetry::TelemetryError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("the etcd lease was lost; partitions were stopped before it could expire")]
    LeaseLost,
}

/// Delays between tries to join the fetcher group again after a lost lease.
const REJOIN: Policy = Policy::new(Duration::from_millis(500), Duration::from_secs(10));

/// Partitions starting at once (writer epoch, offset lookups).
const STARTS_AT_ONCE: usize = 256;

/// A publish asked for by a partition (`update_soon`) waits this long for
/// others to ask too.
const PUBLISH_SOON_GAP: Duration = Duration::from_millis(100);

/// Least time between two balancing rounds.
const REBALANCE_GAP: Duration = Duration::from_millis(100);

/// Delays between balancing rounds after a failed one.
const REBALANCE_RETRY: Policy = Policy::new(Duration::from_millis(200), Duration::from_secs(5));

/// Delays between tries of a partition to connect its link's clusters.
const CONNECT: Policy = Policy::new(Duration::from_millis(200), Duration::from_secs(10));

/// etcd refuses transactions of more than 128 operations by default
/// (`--max-txn-ops`).
const PROGRESS_PER_TXN: usize = 128;

/// Every this many progress publishes, all partitions are written, not
/// only those that changed.
const FULL_PUBLISH_EVERY: u64 = 10;

struct Running {
    key: PartitionKey,
    /// The target topic settings it runs with (a change restarts it).
    target: TargetTopicSettings,
    /// Which way it copies (a promotion or rollback turns it: restarts it).
    direction: CopyDirection,
    cancel: CancellationToken,
    handle: JoinHandle<Result<(), ReplicateError>>,
}

struct Fetcher {
    id: String,
    cfg: FetcherConfig,
    coord: Coord,
    session: Arc<Session>,
    board: ProgressBoard,
    metrics: Metrics,
    clusters: ClusterCache,
    running: HashMap<String, Running>,
    /// This fetcher's share of each link's bandwidth limit.
    bandwidth: HashMap<String, Arc<LinkBandwidth>>,
    /// (link, topic) of the mirrors at the last balancing round.
    mirrors_seen: HashSet<(String, String)>,
    /// Progress publishes so far.
    publishes: u64,
    /// Partitions starting at once (see `PartitionCtx::starts`).
    starts: Arc<tokio::sync::Semaphore>,
    epochs: crate::epochs::EpochBumps,
}

/// Runs a fetcher until `shutdown` fires, then stops gracefully. A lost
/// lease stops every partition and the fetcher joins again with a new one.
pub async fn run(cfg: FetcherConfig, shutdown: CancellationToken) -> Result<(), FetcherError> {
    let id = cfg.id.clone().unwrap_or_else(|| {
        format!(
            "fetcher-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    });
    let coord = Coord::connect(CoordConfig {
        endpoints: cfg.etcd.clone(),
        prefix: cfg.etcd_prefix.clone(),
        lease_ttl: cfg.lease_ttl(),
        connect_timeout: Duration::from_secs(5),
    })
    .await?;
    let internal = CancellationToken::new();
    let session = Arc::new(coord.session(cfg.lease_ttl(), internal.clone()).await?);
    let metrics = Metrics::new()?;
    let board = ProgressBoard::default();
    let health = Health::default();

    let (http_addr, http_task) = cutover_telemetry::serve_http(
        &cfg.http_addr,
        metrics.registry.clone(),
        health.clone(),
        internal.clone(),
    )
    .await?;
    let grpc_listener = tokio::net::TcpListener::bind(&cfg.grpc_addr)
        .await
        .map_err(|source| FetcherError::Listen {
            addr: cfg.grpc_addr.clone(),
            source,
        })?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| FetcherError::Listen {
            addr: cfg.grpc_addr.clone(),
            source,
        })?;
    let api = crate::grpc::FetcherApi {
        id: id.clone(),
        board: board.clone(),
    };
    let grpc_cancel = internal.clone();
    let grpc_task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
        let result = tonic::transport::Server::builder()
            // Continue the caller's trace (e.g. a promotion) in this service.
            .layer(TraceContextLayer::Server)
            .add_service(cutover_proto::fetcher::v1::fetcher_server::FetcherServer::new(api))
            .serve_with_incoming_shutdown(incoming, grpc_cancel.cancelled())
            .await;
        if let Err(e) = result {
            error!(error = %e, "gRPC server failed");
        }
    });

    let advertised = cfg
        .advertised_grpc_addr
        .clone()
        .unwrap_or_else(|| grpc_addr.to_string());
    let member = FetcherMember {
        id: id.clone(),
        grpc_addr: advertised,
        started_at_ms: cutover_model::now_ms(),
    };
    cutover_coord::register_member(&coord, &session, keys::FETCHER_KIND, &id, &member).await?;
    health.set_ready(true);
    info!(fetcher = %id, grpc = %grpc_addr, http = %http_addr, "fetcher started");

    let (epochs, epochs_task) =
        crate::epochs::EpochBumps::start(coord.clone(), id.clone(), internal.clone());
    let mut fetcher = Fetcher {
        clusters: ClusterCache::new(
            id.clone(),
            cfg.kafka_timeout(),
            cutover_kafka::FetchOptions {
                max_bytes: cfg.fetch_max_bytes,
                partition_max_bytes: cfg.fetch_max_bytes.min(4 * 1024 * 1024),
                // Busy fetches never long-poll the broker (the connection is
                // shared); caught-up partitions wait in fetch sessions.
                max_wait: Duration::ZERO,
                min_bytes: 1,
                read_committed: true,
            },
            cfg.idle_mode(),
        ),
        id,
        cfg,
        coord,
        session,
        board,
        metrics,
        running: HashMap::new(),
        bandwidth: HashMap::new(),
        mirrors_seen: HashSet::new(),
        publishes: 0,
        starts: Arc::new(tokio::sync::Semaphore::new(STARTS_AT_ONCE)),
        epochs,
    };
    let result = loop {
        match fetcher.main_loop(&shutdown).await {
            Err(FetcherError::LeaseLost) => {
                // Every partition already stopped writing (self-fencing). Hand
                // the work back and join again with a new lease, instead of
                // exiting: an etcd outage longer than the lease must not take
                // the fetchers down with it.
                health.set_ready(false);
                fetcher.metrics.lease_losses.inc();
                warn!("etcd lease lost: every partition stopped writing; joining again with a new lease");
                fetcher.stop_all(false).await;
                match fetcher.rejoin(&member, &internal, &shutdown).await {
                    Ok(true) => health.set_ready(true),
                    Ok(false) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            other => break other,
        }
    };

    // Graceful stop: not ready; leave the fetcher group first so the others
    // count without us; stop every partition (each finishes its in-flight
    // writes), publish final progress and give ownership back; then revoke
    // the lease.
    health.set_ready(false);
    let lease_ok = result.is_ok();
    if lease_ok {
        if let Err(e) =
            cutover_coord::deregister_member(&fetcher.coord, keys::FETCHER_KIND, &fetcher.id).await
        {
            warn!(error = %e, "could not leave the fetcher group; the lease expiry will");
        }
    }
    fetcher.stop_all(lease_ok).await;
    fetcher.clusters.close_all().await;
    let session = fetcher.session.clone();
    drop(fetcher);
    internal.cancel();
    let _ = grpc_task.await;
    let _ = http_task.await;
    let _ = epochs_task.await;
    if lease_ok {
        match Arc::try_unwrap(session) {
            Ok(s) => {
                if let Err(e) = s.revoke().await {
                    warn!(error = %e, "could not revoke the lease; it will expire by itself");
                }
            }
            Err(_) => warn!("lease still in use at shutdown; it will expire by itself"),
        }
    }
    info!("fetcher stopped");
    result
}

impl Fetcher {
    /// After a lost lease: a new session and membership, retried until etcd
    /// answers or `shutdown` fires (then `Ok(false)`). The old lease is
    /// revoked if etcd still knows it, so the partitions it owned can be
    /// claimed at once rather than after its TTL.
    async fn rejoin(
        &mut self,
        member: &FetcherMember,
        internal: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<bool, FetcherError> {
        let mut backoff = REJOIN.backoff();
        loop {
            if shutdown.is_cancelled() {
                return Ok(false);
            }
            match self
                .coord
                .session(self.cfg.lease_ttl(), internal.clone())
                .await
            {
                Ok(session) => {
                    let session = Arc::new(session);
                    let registered = cutover_coord::register_member(
                        &self.coord,
                        &session,
                        keys::FETCHER_KIND,
                        &self.id,
                        member,
                    )
                    .await;
                    match registered {
                        Ok(()) => {
                            let old = std::mem::replace(&mut self.session, session);
                            if let Ok(old) = Arc::try_unwrap(old) {
                                let _ = old.revoke().await;
                            }
                            info!(
                                lease_id = self.session.lease_id(),
                                "joined the fetcher group again"
                            );
                            return Ok(true);
                        }
                        Err(e) => {
                            warn!(error = %e, "could not join the fetcher group again; retrying");
                            if let Ok(s) = Arc::try_unwrap(session) {
                                let _ = s.revoke().await;
                            }
                        }
                    }
                }
                Err(e) => warn!(error = %e, "etcd unreachable; retrying to join the fetcher group"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = backoff.wait() => {}
            }
        }
    }

    async fn main_loop(&mut self, shutdown: &CancellationToken) -> Result<(), FetcherError> {
        let lost = self.session.lost();
        // A safety net: balancing rounds run on changes in etcd (below).
        let mut rebalance = tokio::time::interval(self.cfg.rebalance_interval());
        rebalance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress = tokio::time::interval(self.cfg.progress_interval());
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Every change a balancing round depends on (members, links,
        // mirrors, failures, ownership) triggers one, so nothing is re-read
        // while nothing changes: thousands of partitions cost no work then.
        let watch_cancel = shutdown.child_token();
        let mut changes = Vec::new();
        for prefix in [
            "members/fetcher/".to_owned(),
            keys::LINKS.to_owned(),
            keys::MIRRORS.to_owned(),
            keys::FAILURES.to_owned(),
            cutover_coord::owner_key("fetch/"),
        ] {
            let (_, rx) = self
                .coord
                .watch_prefix(&prefix, watch_cancel.clone())
                .await?;
            changes.push(tokio_stream::wrappers::ReceiverStream::new(rx));
        }
        let mut changes = futures::stream::select_all(changes);
        let mut due = true;
        // Rounds are at least REBALANCE_GAP apart (a burst of changes, as
        // when another fetcher claims its share, makes one round), and
        // further after a failed one.
        let mut next_round = tokio::time::Instant::now();
        let mut retry = REBALANCE_RETRY.backoff();
        // A publish asked for before the interval, after PUBLISH_SOON_GAP
        // (so partitions starting together make one).
        let mut publish_at: Option<tokio::time::Instant> = None;
        let board = self.board.clone();
        let result = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = lost.cancelled() => break Err(FetcherError::LeaseLost),
                _ = rebalance.tick() => due = true,
                Some(_) = changes.next() => due = true,
                _ = tokio::time::sleep_until(next_round), if due => {}
                _ = board.publish_wanted() => {
                    publish_at.get_or_insert_with(|| tokio::time::Instant::now() + PUBLISH_SOON_GAP);
                    continue;
                }
                _ = tokio::time::sleep_until(publish_at.unwrap_or(next_round)), if publish_at.is_some() => {
                    publish_at = None;
                    tokio::select! {
                        _ = lost.cancelled() => break Err(FetcherError::LeaseLost),
                        _ = self.publish_progress() => {}
                    }
                    continue;
                }
                _ = progress.tick() => {
                    // Calls to an unreachable etcd take their whole timeout:
                    // a lost lease must not wait for them.
                    tokio::select! {
                        _ = lost.cancelled() => break Err(FetcherError::LeaseLost),
                        _ = self.publish_progress() => {}
                    }
                    continue;
                }
            }
            if !due || tokio::time::Instant::now() < next_round {
                continue;
            }
            due = false;
            tokio::select! {
                _ = lost.cancelled() => break Err(FetcherError::LeaseLost),
                r = self.rebalance() => match r {
                    Ok(()) => {
                        retry.reset();
                        next_round = tokio::time::Instant::now() + REBALANCE_GAP;
                    }
                    Err(e) => {
                        let delay = retry.next_delay();
                        warn!(error = %e, retry_ms = delay.as_millis() as u64, "rebalance failed; retrying");
                        due = true;
                        next_round = tokio::time::Instant::now() + delay;
                    }
                },
            }
        };
        watch_cancel.cancel();
        result
    }

    /// One balancing round: compute the partitions that should be mirrored,
    /// stop what should no longer run here, claim a fair share of the rest.
    async fn rebalance(&mut self) -> Result<(), cutover_coord::CoordError> {
        self.reap_finished().await;
        let links: HashMap<String, Link> = self
            .coord
            .list::<Link>(keys::LINKS)
            .await?
            .into_iter()
            .map(|(_, v)| (v.value.name.clone(), v.value))
            .collect();
        let mirrors: Vec<MirrorTopic> = self
            .coord
            .list::<MirrorTopic>(keys::MIRRORS)
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect();
        let failed: HashSet<String> = self
            .coord
            .list::<PartitionFailure>(keys::FAILURES)
            .await?
            .into_iter()
            .map(|(k, _)| format!("fetch/{}", k.trim_start_matches(keys::FAILURES)))
            .collect();
        // Borrowed, not cloned per partition: thousands of partitions share
        // a few links and mirrors.
        let mut desired: HashMap<String, (&Link, &MirrorTopic, i32)> = HashMap::new();
        for m in &mirrors {
            let Some(link) = links.get(&m.link) else {
                continue;
            };
            if m.state.copy_direction().is_none() {
                continue;
            }
            for p in 0..m.partitions {
                let r = keys::fetch_resource(&m.link, &m.topic, p);
                if !failed.contains(&r) {
                    desired.insert(r, (link, m, p));
                }
            }
        }
        let members: Vec<String> =
            cutover_coord::list_members::<FetcherMember>(&self.coord, keys::FETCHER_KIND)
                .await?
                .into_iter()
                .map(|(id, _)| id)
                .collect();
        let owners = cutover_coord::owners(&self.coord, "fetch/").await?;
        self.metrics.owned_partitions.set(self.running.len() as i64);

        // Partitions whose target topic settings changed (codec, maximum
        // batch size, compaction) start again with the new ones, keeping
        // their ownership: batches built for the old settings could be
        // rebuilt by the broker, and a rebuilt filler batch loses its marker.
        // So do partitions whose direction turned (a promotion or rollback
        // switched): the stop finishes the writes in flight, the start
        // resumes at the log end of the cluster now written to.
        let changed: Vec<String> = self
            .running
            .iter()
            .filter(|(r, run)| {
                desired.get(*r).is_some_and(|(_, m, _)| {
                    m.target != run.target || m.state.copy_direction() != Some(run.direction)
                }) && owners.get(*r).map(String::as_str) == Some(self.id.as_str())
            })
            .map(|(r, _)| r.clone())
            .collect();
        for r in changed {
            if let Some((link, mirror, p)) = desired.get(&r) {
                info!(resource = %r, settings = ?mirror.target, state = ?mirror.state, "target topic settings or copy direction changed; restarting the partition with them");
                self.stop(&r, false).await;
                self.start(r.clone(), (*link).clone(), (*mirror).clone(), *p);
            }
        }

        // Stop partitions that are no longer wanted or that someone else owns.
        let stale: Vec<String> = self
            .running
            .keys()
            .filter(|r| {
                !desired.contains_key(*r)
                    || owners.get(*r).map(String::as_str) != Some(self.id.as_str())
            })
            .cloned()
            .collect();
        for r in stale {
            self.stop(&r, true).await;
            // A removed mirror keeps no progress behind (the orchestrator
            // deleted it; a publish may have raced with that).
            if let Some((link, topic, p)) = keys::parse_fetch_resource(&r) {
                if !mirrors.iter().any(|m| m.link == link && m.topic == topic) {
                    let _ = self.coord.delete(&keys::progress(&link, &topic, p)).await;
                }
            }
        }

        let mut resources: Vec<String> = desired.keys().cloned().collect();
        resources.sort();
        let plan = cutover_coord::plan_share(&self.id, &members, &resources, &owners);
        let released: HashSet<String> = plan.release.iter().cloned().collect();
        for r in plan.release {
            info!(resource = %r, "handing partition over for a fair share");
            self.stop(&r, true).await;
        }
        // Claims go to etcd a chunk per transaction: after a fetcher died,
        // its partitions are claimed in a few round trips, not one each.
        // (On an error, what was claimed before it starts with the owned
        // partitions below, at the next round.)
        let to_claim: Vec<String> = plan
            .claim
            .into_iter()
            .filter(|r| !self.running.contains_key(r))
            .collect();
        let claimed =
            cutover_coord::try_claim_many(&self.coord, &self.session, &to_claim, &self.id).await?;
        for r in claimed {
            if let Some((link, mirror, p)) = desired.get(&r) {
                self.start(r.clone(), (*link).clone(), (*mirror).clone(), *p);
            }
        }
        // Partitions we own (e.g. from before a restart of the loop) but do
        // not run; not the ones just handed over (the snapshot predates that).
        for (r, owner) in &owners {
            if owner == &self.id && !self.running.contains_key(r) && !released.contains(r) {
                if let Some((link, mirror, p)) = desired.get(r) {
                    self.start(r.clone(), (*link).clone(), (*mirror).clone(), *p);
                } else {
                    let _ = cutover_coord::release(&self.coord, r, &self.id).await;
                }
            }
        }
        let live: Vec<String> = links.keys().cloned().collect();
        self.clusters.retain(&live).await;
        // Series of mirrors that are gone go too (only then: collecting
        // every series of every partition each round would cost).
        let now: HashSet<(String, String)> = mirrors
            .iter()
            .filter(|m| links.contains_key(&m.link))
            .map(|m| (m.link.clone(), m.topic.clone()))
            .collect();
        if !self.mirrors_seen.is_subset(&now) {
            self.metrics
                .retain_mirrors(|link, topic| now.contains(&(link.to_owned(), topic.to_owned())));
        }
        self.mirrors_seen = now;
        self.share_bandwidth(&links, &desired);
        self.metrics.owned_partitions.set(self.running.len() as i64);
        Ok(())
    }

    /// Gives each link this fetcher's part of its bandwidth limit: in
    /// proportion to the link's partitions running here.
    fn share_bandwidth(
        &mut self,
        links: &HashMap<String, Link>,
        desired: &HashMap<String, (&Link, &MirrorTopic, i32)>,
    ) {
        self.bandwidth.retain(|name, _| links.contains_key(name));
        let mut partitions: HashMap<&str, usize> = HashMap::new();
        for (l, _, _) in desired.values() {
            *partitions.entry(l.name.as_str()).or_default() += 1;
        }
        let mut running: HashMap<String, usize> = HashMap::new();
        for r in self.running.values() {
            *running.entry(r.key.link.clone()).or_default() += 1;
        }
        for (name, link) in links {
            let partitions = partitions.get(name.as_str()).copied().unwrap_or(0);
            let here = running.get(name).copied().unwrap_or(0);
            let rate =
                bandwidth::share(link.options.bandwidth_limit_bytes_per_sec, here, partitions);
            if self.bandwidth_of(link).set_rate(rate) {
                info!(link = %name, bytes_per_sec = rate, partitions_here = here, partitions, "bandwidth share set");
            }
        }
    }

    /// A new link starts at its whole limit (never unlimited) until the end
    /// of the balancing round works out this fetcher's part.
    fn bandwidth_of(&mut self, link: &Link) -> Arc<LinkBandwidth> {
        self.bandwidth
            .entry(link.name.clone())
            .or_insert_with(|| LinkBandwidth::new(link.options.bandwidth_limit_bytes_per_sec))
            .clone()
    }

    fn start(&mut self, resource: String, link: Link, mirror: MirrorTopic, partition: i32) {
        let key = PartitionKey {
            link: link.name.clone(),
            topic: mirror.topic.clone(),
            partition,
        };
        // Only mirrors that copy are desired.
        let direction = mirror
            .state
            .copy_direction()
            .unwrap_or(CopyDirection::Forward);
        let writer = match direction {
            CopyDirection::Forward => resource.clone(),
            CopyDirection::Reverse => keys::reverse_writer(&link.name, &mirror.topic, partition),
        };
        let cancel = CancellationToken::new();
        let target = mirror.target.clone();
        let bandwidth = self.bandwidth_of(&link);
        let clusters = self.clusters.clone();
        let settings = ReplicatorSettings {
            max_inflight: self.cfg.max_inflight as usize,
            coalesce_below_bytes: self.cfg.coalesce_below_bytes,
            kafka_timeout: self.cfg.kafka_timeout(),
        };
        let (coord, session, progress, metrics, owner) = (
            self.coord.clone(),
            self.session.clone(),
            self.board.handle(&key, direction),
            self.metrics.clone(),
            self.id.clone(),
        );
        let starts = self.starts.clone();
        let epochs = self.epochs.clone();
        let task_cancel = cancel.clone();
        let task_key = key.clone();
        let task_resource = resource.clone();
        let span = tracing::info_span!("partition", link = %key.link, topic = %key.topic, partition, direction = direction.name());
        let handle = tokio::spawn(
            async move {
                // Connecting is retried here, not in the balancer, so one
                // unreachable cluster never stalls the others.
                let mut backoff = CONNECT.backoff();
                let clients = loop {
                    match clusters.get(&link).await {
                        Ok(c) => break c,
                        Err(e) => {
                            warn!(error = %e, "cannot reach the link's clusters; retrying");
                            progress.update(|p| {
                                p.error =
                                    format!("cannot reach clusters of link {}: {e}", link.name)
                            });
                            tokio::select! {
                                _ = task_cancel.cancelled() => return Ok(()),
                                _ = backoff.wait() => {}
                            }
                        }
                    }
                };
                let fetch = clients.fetch_for(direction).clone();
                // The reverse mirror copies target to source: the same
                // replicator with the clusters' roles swapped.
                let (source, target, source_offsets, target_offsets) = match direction {
                    CopyDirection::Forward => (
                        clients.source,
                        clients.target,
                        clients.source_offsets,
                        clients.target_offsets,
                    ),
                    CopyDirection::Reverse => (
                        clients.target,
                        clients.source,
                        clients.target_offsets,
                        clients.source_offsets,
                    ),
                };
                let ctx = PartitionCtx {
                    key: task_key,
                    resource: task_resource,
                    owner,
                    mirror,
                    direction,
                    writer,
                    source,
                    target,
                    fetch,
                    source_offsets,
                    target_offsets,
                    coord,
                    session,
                    progress,
                    metrics,
                    bandwidth,
                    settings,
                    starts,
                    epochs,
                };
                replicator::run(ctx, task_cancel).await
            }
            .instrument(span),
        );
        info!(resource = %resource, direction = direction.name(), "partition started");
        self.running.insert(
            resource,
            Running {
                key,
                target,
                direction,
                cancel,
                handle,
            },
        );
    }

    /// Stops a partition, waits until it no longer writes, then (if asked)
    /// gives its ownership back so another fetcher can take it at once.
    async fn stop(&mut self, resource: &str, release: bool) {
        let Some(run) = self.running.remove(resource) else {
            return;
        };
        run.cancel.cancel();
        let outcome = run.handle.await;
        self.finish(resource, &run.key, outcome, release).await;
    }

    async fn finish(
        &mut self,
        resource: &str,
        key: &PartitionKey,
        outcome: Result<Result<(), ReplicateError>, tokio::task::JoinError>,
        release: bool,
    ) {
        if let Err(e) = &outcome {
            error!(resource, error = %e, "partition task panicked or was aborted");
        }
        if let Ok(Err(ReplicateError::Fatal(reason))) = &outcome {
            let failure = PartitionFailure {
                reason: reason.clone(),
                at_ms: cutover_model::now_ms(),
                owner: self.id.clone(),
            };
            if let Err(e) = self
                .coord
                .put(
                    &keys::failure(&key.link, &key.topic, key.partition),
                    &failure,
                )
                .await
            {
                error!(resource, error = %e, "could not record the partition failure in etcd");
            }
        }
        // The task ended: this fetcher no longer reports the partition's
        // state (before the release, so the next owner's series never
        // coexist with ours).
        self.metrics.forget_partition(key);
        if let Some(p) = self.board.remove(key) {
            // Without a live lease this fetcher is no longer the partition's
            // voice (and etcd may be the reason: each call would wait out
            // its timeout).
            if self.session.is_alive() {
                let _ = self
                    .coord
                    .put(&keys::progress(&key.link, &key.topic, key.partition), &p)
                    .await;
            }
        }
        if release && self.session.is_alive() {
            if let Err(e) = cutover_coord::release(&self.coord, resource, &self.id).await {
                warn!(resource, error = %e, "could not release ownership; it ends with the lease");
            }
        }
    }

    /// Collects partitions that ended by themselves (fatal error, lease loss).
    async fn reap_finished(&mut self) {
        let done: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.handle.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for r in done {
            if let Some(run) = self.running.remove(&r) {
                let outcome = run.handle.await;
                self.finish(&r, &run.key, outcome, true).await;
            }
        }
    }

    async fn stop_all(&mut self, release: bool) {
        for run in self.running.values() {
            run.cancel.cancel();
        }
        let resources: Vec<String> = self.running.keys().cloned().collect();
        for r in resources {
            self.stop(&r, release).await;
        }
        self.metrics.owned_partitions.set(self.running.len() as i64);
    }

    /// Writes to etcd the progress that changed since the last publish,
    /// and every `FULL_PUBLISH_EVERY` publishes all of it (caught-up
    /// partitions then show when they were last confirmed in sync). A
    /// fetcher of thousands of idle partitions then writes next to nothing.
    async fn publish_progress(&mut self) {
        self.reap_finished().await;
        self.publishes = self.publishes.wrapping_add(1);
        let all = self.publishes % FULL_PUBLISH_EVERY == 1;
        let clusters = &self.clusters;
        let writes: Vec<cutover_coord::WriteOp> = self
            .board
            .to_publish(all, |link, direction| {
                clusters.confirmed_at_ms(link, direction)
            })
            .into_iter()
            .filter_map(|p| {
                let key = keys::progress(&p.link, &p.topic, p.partition);
                serde_json::to_value(p)
                    .ok()
                    .map(|v| cutover_coord::WriteOp::Put(key, v))
            })
            .collect();
        // One etcd transaction per PROGRESS_PER_TXN partitions instead of a
        // put each: a fetcher with thousands of partitions would otherwise
        // send thousands of writes every interval.
        for chunk in writes.chunks(PROGRESS_PER_TXN) {
            if let Err(e) = self.coord.txn(&[], chunk).await {
                warn!(error = %e, "could not publish progress");
                self.board.republish_all();
                return;
            }
        }
    }
}
