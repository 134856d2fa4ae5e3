//! Links: validation, reachability checks, storage.

use std::time::Duration;

use cutover_coord::Versioned;
use cutover_kafka::{Cluster, ClusterConfig, Security};
use cutover_model::{keys, validate, ClusterSpec, Link, LinkOptions, MirrorTopic};

use crate::error::{ApiError, ApiResult};
use crate::guards::delete_link_txn;
use crate::Orchestrator;

pub fn validate_cluster(side: &'static str, spec: &ClusterSpec) -> ApiResult<()> {
    if spec.bootstrap_servers.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "{side} cluster: bootstrap_servers is empty; give at least one host:port"
        )));
    }
    for s in &spec.bootstrap_servers {
        validate::bootstrap_server(s)
            .map_err(|e| ApiError::BadRequest(format!("{side} cluster: {e}")))?;
    }
    // Anything the services would not use is refused rather than ignored,
    // and a secret given inline is refused before it is stored.
    Security::from_properties(&spec.properties)
        .map_err(|e| ApiError::BadRequest(format!("{side} cluster: {e}")))?;
    Ok(())
}

pub async fn connect(
    side: &'static str,
    spec: &ClusterSpec,
    timeout: Duration,
) -> ApiResult<Cluster> {
    let unreachable = |error| ApiError::ClusterUnreachable {
        side,
        addrs: spec.bootstrap_servers.join(","),
        error,
    };
    let mut cfg = ClusterConfig::with_properties(&spec.bootstrap_servers, &spec.properties)
        .map_err(unreachable)?;
    cfg.client_id = "cutover-orchestrator".into();
    cfg.connect_timeout = timeout;
    cfg.request_timeout = timeout;
    Cluster::connect(cfg).await.map_err(unreachable)
}

impl Orchestrator {
    pub async fn create_link(
        &self,
        name: String,
        source: ClusterSpec,
        target: ClusterSpec,
        options: LinkOptions,
    ) -> ApiResult<Link> {
        validate::link_name(&name)?;
        validate_cluster("source", &source)?;
        validate_cluster("target", &target)?;
        if source.bootstrap_servers == target.bootstrap_servers {
            return Err(ApiError::BadRequest("source and target have the same bootstrap servers; a link needs two different clusters".into()));
        }
        if self.coord.get::<Link>(&keys::link(&name)).await?.is_some() {
            return Err(ApiError::AlreadyExists { what: "link", name });
        }
        // Both clusters must answer now: a link that cannot work is refused
        // instead of failing later in the fetchers.
        let s = connect("source", &source, self.cfg.kafka_timeout()).await?;
        s.close().await;
        let t = connect("target", &target, self.cfg.kafka_timeout()).await?;
        t.close().await;
        let link = Link {
            name: name.clone(),
            source,
            target,
            options,
            created_at_ms: cutover_model::now_ms(),
        };
        if !self.coord.create(&keys::link(&name), &link).await? {
            return Err(ApiError::AlreadyExists { what: "link", name });
        }
        tracing::info!(link = %name, "link created");
        Ok(link)
    }

    pub async fn get_link(&self, name: &str) -> ApiResult<Link> {
        Ok(self.link_versioned(name).await?.value)
    }

    /// The link with the revision its later guarded writes compare against.
    pub async fn link_versioned(&self, name: &str) -> ApiResult<Versioned<Link>> {
        validate::link_name(name)?;
        self.coord
            .get::<Link>(&keys::link(name))
            .await?
            .ok_or_else(|| ApiError::NotFound {
                what: "link",
                name: name.into(),
            })
    }

    pub async fn list_links(&self) -> ApiResult<Vec<Link>> {
        let mut links: Vec<Link> = self
            .coord
            .list::<Link>(keys::LINKS)
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect();
        links.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(links)
    }

    pub async fn mirrors_of(&self, link: &str) -> ApiResult<Vec<MirrorTopic>> {
        let mut v: Vec<MirrorTopic> = self
            .coord
            .list::<MirrorTopic>(&keys::mirrors_of(link))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect();
        v.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(v)
    }

    pub async fn delete_link(&self, name: &str) -> ApiResult<()> {
        // The link is read before the mirrors are listed: a mirror add that
        // stored after this read moved the link's revision (see `guards`).
        let link = self.link_versioned(name).await?;
        let mirrors = self.mirrors_of(name).await?;
        if !mirrors.is_empty() {
            return Err(ApiError::Precondition(format!(
                "link {name:?} still has {} mirror topic(s); remove them first (cutover mirror remove --link {name} --all)",
                mirrors.len()
            )));
        }
        let groups = self.groups_of(name).await?;
        if !groups.is_empty() {
            return Err(ApiError::Precondition(format!(
                "link {name:?} still has {} mirror group(s); remove them first (cutover group remove --link {name} --all)",
                groups.len()
            )));
        }
        let (guards, writes) = delete_link_txn(name, link.mod_revision);
        if !self.coord.txn(&guards, &writes).await? {
            return Err(ApiError::Conflict(format!(
                "link {name:?} (mirror topics may have been added to it)"
            )));
        }
        tracing::info!(link = %name, "link deleted");
        Ok(())
    }
}
