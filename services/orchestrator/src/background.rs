//! Work done by the elected leader only: keep target topics shaped like their
//! source (partitions added on the source are added on the target; copied
//! configs follow changes) and report target topics that no longer keep the
//! records' timestamps.

use std::sync::Arc;
use std::time::Duration;

use cutover_kafka::{ApiKey, Cluster};
use cutover_model::{keys, Link, MirrorState, MirrorTopic};
use cutover_retry::{Backoff, Policy};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::links::connect;
use crate::plan::{
    copyable_configs, effective_configs, plan_config_sync, plan_partition_sync,
    plan_settings_refresh, plan_timestamp_check, PartitionSync, TimestampCheck,
};
use crate::Orchestrator;

/// Delays before campaigning again: a steady second, jittered so that
/// orchestrators that lost etcd together do not come back in step.
const CAMPAIGN_AGAIN: Policy = Policy::new(Duration::from_secs(1), Duration::from_secs(1));

/// How often the leader looks for promotions whose orchestrator died:
/// their clients wait in the routers' holds meanwhile.
const RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(orch: Arc<Orchestrator>, cancel: CancellationToken) {
    let ttl = Duration::from_secs(orch.cfg.lease_ttl_secs.max(2));
    let mut backoff = CAMPAIGN_AGAIN.backoff();
    while !cancel.is_cancelled() {
        if let Err(e) = lead(&orch, ttl, &cancel, &mut backoff).await {
            warn!(error = %e, "leadership ended; campaigning again");
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = backoff.wait() => {}
            }
        }
    }
}

async fn lead(
    orch: &Orchestrator,
    ttl: Duration,
    cancel: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), cutover_coord::CoordError> {
    let session = orch.coord.session(ttl, cancel.child_token()).await?;
    let election = cutover_coord::Election::new(&orch.coord, &session, "orchestrator", &orch.id);
    let lost = election.campaign(cancel).await?;
    if cancel.is_cancelled() {
        return Ok(());
    }
    backoff.reset();
    info!(orchestrator = %orch.id, "leading background work");
    let mut tick = tokio::time::interval(Duration::from_millis(orch.cfg.sync_interval_ms.max(500)));
    let mut recovery = tokio::time::interval(RECOVERY_INTERVAL);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = lost.cancelled() => return Err(cutover_coord::CoordError::LeaseLost),
            _ = recovery.tick() => {
                if let Err(e) = orch.recover_promotions(&session).await {
                    warn!(error = %e, "recovering promotions failed; retrying");
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        if let Err(e) = sync_all(orch).await {
            warn!(error = %e, "topic sync failed; retrying at the next tick");
        }
    }
    let _ = election.resign().await;
    let _ = session.revoke().await;
    Ok(())
}

async fn sync_all(orch: &Orchestrator) -> Result<(), cutover_coord::CoordError> {
    for (_, link) in orch.coord.list::<Link>(keys::LINKS).await? {
        let link = link.value;
        let mirrors = orch
            .coord
            .list::<MirrorTopic>(&keys::mirrors_of(&link.name))
            .await?;
        if mirrors.is_empty() {
            continue;
        }
        let (source, target) = match (
            connect("source", &link.source, orch.cfg.kafka_timeout()).await,
            connect("target", &link.target, orch.cfg.kafka_timeout()).await,
        ) {
            (Ok(s), Ok(t)) => (s, t),
            (Err(e), _) | (_, Err(e)) => {
                warn!(link = %link.name, error = %e, "cannot sync topics of this link now");
                continue;
            }
        };
        for (rel, m) in mirrors {
            if !matches!(m.value.state, MirrorState::Mirroring | MirrorState::Paused) {
                continue;
            }
            if let Err(e) = sync_topic(orch, &rel, m.value, m.mod_revision, &source, &target).await
            {
                warn!(link = %link.name, error = %e, "topic sync failed");
            }
        }
        source.close().await;
        target.close().await;
    }
    Ok(())
}

async fn sync_topic(
    orch: &Orchestrator,
    rel: &str,
    mut m: MirrorTopic,
    mut rev: i64,
    source: &Cluster,
    target: &Cluster,
) -> Result<(), String> {
    let topic = m.topic.clone();
    let Some(src) = source.topic(&topic).await.map_err(|e| e.to_string())? else {
        return Err(format!("topic {topic} no longer exists on the source"));
    };
    let target_partitions = target
        .topic(&topic)
        .await
        .map_err(|e| e.to_string())?
        .map(|t| t.partitions.len() as i32);
    match plan_partition_sync(
        &topic,
        m.partitions,
        src.partitions.len() as i32,
        target_partitions,
        target.supports(ApiKey::CreatePartitions),
    ) {
        PartitionSync::Unchanged => {}
        PartitionSync::Refuse(reason) => return Err(refuse(orch, rel, m, rev, reason).await),
        PartitionSync::Grow {
            add_on_target_to,
            mirror_partitions,
        } => {
            if let Some(n) = add_on_target_to {
                target
                    .create_partitions(&topic, n)
                    .await
                    .map_err(|e| e.to_string())?;
                info!(topic = %topic, partitions = n, "added partitions on the target to match the source");
            }
            m.partitions = mirror_partitions;
            m.reason.clear();
            store(orch, rel, &m, rev).await?;
            info!(topic = %topic, partitions = mirror_partitions, "mirroring new partitions");
            // The document has a new revision now; read it back for the
            // reason the checks below may record.
            let Some(now) = orch
                .coord
                .get::<MirrorTopic>(rel)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Err("mirror removed concurrently".into());
            };
            m = now.value;
            rev = now.mod_revision;
        }
    }
    if !target.supports(ApiKey::DescribeConfigs) {
        return Ok(());
    }
    let target_entries = target
        .describe_topic_configs(&topic)
        .await
        .map_err(|e| e.to_string())?;
    let target_effective = effective_configs(target_entries.clone());
    let mut dirty = false;
    match plan_timestamp_check(&topic, &m.reason, &target_effective) {
        TimestampCheck::Refuse(reason) => return Err(refuse(orch, rel, m, rev, reason).await),
        TimestampCheck::Fine { clear_reason: true } => {
            m.reason.clear();
            dirty = true;
            info!(topic = %topic, "target topic is CreateTime again; reason cleared");
        }
        TimestampCheck::Fine {
            clear_reason: false,
        } => {}
    }
    let mut altered = Vec::new();
    if source.supports(ApiKey::DescribeConfigs) && target.supports(ApiKey::IncrementalAlterConfigs)
    {
        let s = copyable_configs(
            source
                .describe_topic_configs(&topic)
                .await
                .map_err(|e| e.to_string())?,
        );
        let t = copyable_configs(target_entries);
        let changes = plan_config_sync(&s, &t);
        if !changes.is_empty() {
            target
                .alter_topic_configs(&topic, &changes)
                .await
                .map_err(|e| e.to_string())?;
            info!(topic = %topic, changed = ?changes, "synced topic configs to the target");
            altered = changes;
        }
    }
    // Fetchers build batches for the target topic as it is now (codec,
    // maximum size, compaction); they restart partitions when this changes.
    if let Some(settings) = plan_settings_refresh(&m.target, &target_effective, &altered) {
        info!(topic = %topic, ?settings, "target topic settings changed");
        m.target = settings;
        dirty = true;
    }
    if dirty {
        store(orch, rel, &m, rev).await?;
    }
    Ok(())
}

/// Shows why the leader cannot follow on the mirror (written once, best
/// effort: the next round tries again) and returns it.
async fn refuse(
    orch: &Orchestrator,
    rel: &str,
    mut m: MirrorTopic,
    rev: i64,
    reason: String,
) -> String {
    if m.reason != reason {
        m.reason = reason;
        let _ = orch.coord.update(rel, &m, rev).await;
    }
    m.reason
}

/// Writes the mirror back if nobody changed it since `rev`.
async fn store(orch: &Orchestrator, rel: &str, m: &MirrorTopic, rev: i64) -> Result<(), String> {
    if orch
        .coord
        .update(rel, m, rev)
        .await
        .map_err(|e| e.to_string())?
    {
        Ok(())
    } else {
        Err("mirror changed concurrently; will retry".into())
    }
}
