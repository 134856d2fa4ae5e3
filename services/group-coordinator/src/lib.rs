//! The group-coordinator: owns the mirror groups through etcd leases,
//! shared fairly among its live instances (a killed instance's groups are
//! taken over once its lease has expired), and promotes each group it
//! owns as soon as every member comes through the routers, when the group
//! is set to automatic promotion.
//!
//! The evidence (members at home, through a router or not) and the
//! promotion itself are the orchestrator's (`ListGroups`, `Promote` with
//! the group): one place decides what a promotion would meet and runs
//! its barrier, and a promotion this service asked for goes on to its end
//! if this service dies meanwhile.

pub mod decide;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use cutover_coord::{Coord, CoordConfig, CoordError, Session};
use cutover_model::{keys, now_ms, GroupCoordinatorMember, Link, MirrorGroup};
use cutover_proto::v1 as pb;
use cutover_telemetry::{Health, TraceContextLayer, TraceContextService};
use pb::orchestrator_client::OrchestratorClient;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{error, info, warn, Instrument as _};

#[derive(Debug, Clone, clap::Args)]
pub struct GroupCoordinatorConfig {
    /// Unique id of this instance (default: a random one).
    #[arg(long, env = "CUTOVER_GROUP_COORDINATOR_ID")]
    pub id: Option<String>,
    /// etcd endpoints, comma separated.
    #[arg(
        long,
        env = "CUTOVER_ETCD",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd: Vec<String>,
    #[arg(long, env = "CUTOVER_ETCD_PREFIX", default_value = "/cutover/v1")]
    pub etcd_prefix: String,
    /// The orchestrators' public API (any of them: every one serves it).
    #[arg(long, env = "CUTOVER_SERVER", default_value = "http://127.0.0.1:50051")]
    pub orchestrator: String,
    /// /metrics and /healthz.
    #[arg(long, env = "CUTOVER_HTTP_ADDR", default_value = "0.0.0.0:9153")]
    pub http_addr: String,
    #[arg(long, env = "CUTOVER_LEASE_TTL_SECS", default_value_t = 10)]
    pub lease_ttl_secs: u64,
    /// How often the owned groups are looked at.
    #[arg(long, env = "CUTOVER_GROUP_INTERVAL_MS", default_value_t = 1000)]
    pub interval_ms: u64,
    /// How long a group whose automatic promotion failed waits before the
    /// next attempt.
    #[arg(long, env = "CUTOVER_GROUP_RETRY_SECS", default_value_t = 30)]
    pub retry_secs: u64,
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    #[arg(long, env = "CUTOVER_JSON_LOGS")]
    pub json_logs: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupCoordinatorError {
    #[error(transparent)]
    Coord(#[from] CoordError),
    #[error(transparent)]
    Telemetry(#[from] cutover_telemetry::TelemetryError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("--orchestrator {url:?} is not a usable URL ({source}); give one like http://orchestrator:50051")]
    Orchestrator {
        url: String,
        source: tonic::codegen::http::uri::InvalidUri,
    },
}

/// Longest wait of one automatic promotion: the members' rejoin (30 s by
/// default) and the barrier after it.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait of one listing (it asks both clusters and every router).
const LIST_TIMEOUT: Duration = Duration::from_secs(30);
/// Before a new etcd session after one was lost.
const SESSION_RETRY: Duration = Duration::from_secs(1);

struct Metrics {
    owned: IntGauge,
    promotions: IntCounterVec,
}

impl Metrics {
    fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let owned = IntGauge::new("owned_groups", "Mirror groups this instance owns")?;
        let promotions = IntCounterVec::new(
            Opts::new(
                "promotions_total",
                "Automatic group promotions asked of the orchestrator, by outcome",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(owned.clone()))?;
        registry.register(Box::new(promotions.clone()))?;
        Ok(Metrics { owned, promotions })
    }
}

type Client = OrchestratorClient<TraceContextService<Channel>>;

/// Runs until `shutdown`; then its groups are released at once (its
/// session ends), so another instance takes them over without waiting
/// for a lease.
pub async fn run(
    cfg: GroupCoordinatorConfig,
    shutdown: CancellationToken,
) -> Result<(), GroupCoordinatorError> {
    let id = cfg.id.clone().unwrap_or_else(|| {
        format!(
            "group-coordinator-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    });
    let channel = Channel::from_shared(cfg.orchestrator.clone())
        .map_err(|source| GroupCoordinatorError::Orchestrator {
            url: cfg.orchestrator.clone(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let client: Client = OrchestratorClient::new(
        tower::ServiceBuilder::new()
            .layer(TraceContextLayer::Client)
            .service(channel),
    );
    let coord = Coord::connect(CoordConfig {
        endpoints: cfg.etcd.clone(),
        prefix: cfg.etcd_prefix.clone(),
        lease_ttl: Duration::from_secs(cfg.lease_ttl_secs.max(2)),
        connect_timeout: Duration::from_secs(5),
    })
    .await?;
    let registry = Registry::new_custom(Some("cutover_group_coordinator".into()), None)?;
    let metrics = Metrics::register(&registry)?;
    let health = Health::default();
    let internal = shutdown.child_token();
    let (http_addr, http_task) =
        cutover_telemetry::serve_http(&cfg.http_addr, registry, health.clone(), internal.clone())
            .await?;
    info!(group_coordinator = %id, http = %http_addr, orchestrator = %cfg.orchestrator, "group-coordinator started");
    let worker = Worker {
        id,
        cfg,
        coord,
        client,
        metrics,
        retry_at: HashMap::new(),
    };
    worker.sessions(&health, &internal).await;
    health.set_ready(false);
    internal.cancel();
    let _ = http_task.await;
    info!("group-coordinator stopped");
    Ok(())
}

struct Worker {
    id: String,
    cfg: GroupCoordinatorConfig,
    coord: Coord,
    client: Client,
    metrics: Metrics,
    /// When a group (by resource) whose promotion failed may be tried again.
    retry_at: HashMap<String, Instant>,
}

impl Worker {
    /// One etcd session after the other until shutdown: a lost session
    /// (etcd unreachable past the lease) drops every group, and a new one
    /// claims its share again.
    async fn sessions(mut self, health: &Health, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            let session = match self.coord.default_session(shutdown.child_token()).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot start an etcd session; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(SESSION_RETRY) => continue,
                    }
                }
            };
            let me = GroupCoordinatorMember {
                id: self.id.clone(),
                started_at_ms: now_ms(),
            };
            let registered = cutover_coord::register_member(
                &self.coord,
                &session,
                keys::GROUP_COORDINATOR_KIND,
                &self.id,
                &me,
            )
            .await;
            let r = match registered {
                Ok(()) => {
                    health.set_ready(true);
                    self.work(&session, shutdown).await
                }
                Err(e) => Err(e),
            };
            health.set_ready(false);
            self.metrics.owned.set(0);
            if let Err(e) = session.revoke().await {
                warn!(error = %e, "could not end the etcd session; its groups are free once its lease expires");
            }
            match r {
                Ok(()) => return,
                Err(e) => {
                    error!(error = %e, "the etcd session ended; starting a new one");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(SESSION_RETRY) => {}
                    }
                }
            }
        }
    }

    async fn work(
        &mut self,
        session: &Session,
        shutdown: &CancellationToken,
    ) -> Result<(), CoordError> {
        let lost = session.lost();
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.interval_ms.max(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = lost.cancelled() => return Err(CoordError::LeaseLost),
                _ = tick.tick() => {}
            }
            let owned = self.share(session).await?;
            self.metrics.owned.set(owned.len() as i64);
            let links: BTreeSet<String> = owned
                .iter()
                .filter_map(|r| r.strip_prefix("group/"))
                .filter_map(|r| r.split_once('/'))
                .map(|(link, _)| link.to_owned())
                .collect();
            for link in links {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = lost.cancelled() => return Err(CoordError::LeaseLost),
                    _ = self.promote_ready(&link, &owned) => {}
                }
            }
        }
    }

    /// Claims and releases groups toward a fair share among the live
    /// instances; the resources owned now.
    async fn share(&self, session: &Session) -> Result<BTreeSet<String>, CoordError> {
        let members: Vec<String> = cutover_coord::list_members::<GroupCoordinatorMember>(
            &self.coord,
            keys::GROUP_COORDINATOR_KIND,
        )
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
        let mut resources = Vec::new();
        for (_, link) in self.coord.list::<Link>(keys::LINKS).await? {
            let link = link.value.name;
            for (_, g) in self
                .coord
                .list::<MirrorGroup>(&keys::groups_of(&link))
                .await?
            {
                resources.push(keys::group_resource(&link, &g.value.group));
            }
        }
        resources.sort();
        let owners = cutover_coord::owners(&self.coord, "group/").await?;
        let plan = cutover_coord::plan_share(&self.id, &members, &resources, &owners);
        let mut owned: BTreeSet<String> = owners
            .iter()
            .filter(|(_, o)| **o == self.id)
            .map(|(r, _)| r.clone())
            .collect();
        for r in &plan.release {
            cutover_coord::release(&self.coord, r, &self.id).await?;
            owned.remove(r);
        }
        owned.extend(
            cutover_coord::try_claim_many(&self.coord, session, &plan.claim, &self.id).await?,
        );
        Ok(owned)
    }

    /// Asks the orchestrator about `link`'s groups and promotes the owned
    /// ones that are ready, one at a time.
    async fn promote_ready(&mut self, link: &str, owned: &BTreeSet<String>) {
        let mut req = tonic::Request::new(pb::ListGroupsRequest {
            link: link.to_owned(),
        });
        req.set_timeout(LIST_TIMEOUT);
        let listed = match self.client.list_groups(req).await {
            Ok(r) => r.into_inner().groups,
            Err(s) => {
                warn!(link, code = ?s.code(), error = s.message(), "cannot list the link's groups");
                return;
            }
        };
        let now = Instant::now();
        for group in decide::to_promote(link, &listed, owned, &self.retry_at, now) {
            let span = tracing::info_span!("auto_promotion", link, group = %group);
            let resource = keys::group_resource(link, &group);
            let mut req = tonic::Request::new(pb::PromoteRequest {
                link: link.to_owned(),
                groups: vec![group.clone()],
                ..Default::default()
            });
            req.set_timeout(PROMOTE_TIMEOUT);
            match self.client.promote(req).instrument(span.clone()).await {
                Ok(p) => {
                    let p = p.into_inner();
                    self.metrics.promotions.with_label_values(&["done"]).inc();
                    self.retry_at.remove(&resource);
                    span.in_scope(|| info!(promotion = %p.id, "group promoted: every member came through the routers"));
                }
                Err(s) => {
                    self.metrics.promotions.with_label_values(&["failed"]).inc();
                    let retry = Duration::from_secs(self.cfg.retry_secs.max(1));
                    self.retry_at.insert(resource, now + retry);
                    span.in_scope(|| warn!(code = ?s.code(), error = s.message(), retry_s = retry.as_secs(), "automatic promotion failed; trying again later"));
                }
            }
        }
    }
}
