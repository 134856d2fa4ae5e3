//! A promotion's barrier carried out (design.md "Topic promotion"), with
//! the decisions of `promotion.rs`: the record and the topics' documents
//! in etcd, the routers' holds, the old primary's transactions, log ends
//! and producers, the fetchers' drain, the switch and the release; and
//! the leader's recovery of a promotion whose orchestrator died.
//!
//! Every write of a running promotion is guarded by its owner key (under
//! the lease of the orchestrator running it): an orchestrator that lost
//! its lease changes nothing more, and the leader takes the promotion
//! over from what etcd holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_coord::{CancellationToken, Precondition, Session, Versioned, WriteOp};
use cutover_kafka::{ApiKey, Cluster, OffsetSpec, OFFSETS_TOPIC};
use cutover_model::{
    keys, now_ms, Direction, FetcherMember, Link, MirrorGroup, MirrorTopic, ProducerMapping,
    Promotion, RouterMember, Side, Step,
};
use cutover_proto::fetcher::v1 as fpb;
use cutover_proto::router::v1 as rpb;
use cutover_proto::v1 as pb;
use futures::future::join_all;
use tracing::{info, warn, Instrument as _};

use crate::error::{ApiError, ApiResult};
use crate::links::connect;
use crate::promotion::{
    barrier_doc, check_quiet, open_on_set, open_transactions, plan_start, recover, switched_doc,
    switched_group, undone_doc, Ends, Moved, PartitionProducers, Recovery,
};
use crate::Orchestrator;
use crate::{peers, routers};

/// How long routers hold the set's writes at most: the routers' own
/// limit, under the clients' default request timeout (30 s).
const HOLD: Duration = Duration::from_secs(30);
/// A barrier that has not switched this long after the hold is undone,
/// so that no hold runs out (and lets writes reach the old primary after
/// its quiet check) before the switch.
const SWITCH_BY: Duration = Duration::from_secs(26);
/// Longest wait of one router call: a hold's in-flight drain, a release's
/// wait for the router's etcd view.
const ROUTER_CALL: Duration = Duration::from_secs(5);
/// The waits a request asks for, together, fit before `SWITCH_BY` with
/// the router calls.
const MAX_WAITS: Duration = Duration::from_secs(20);
/// How often a wait that has no event to wait on looks again (open
/// transactions, a drain no fetcher reports, members rejoining).
pub(crate) const POLL: Duration = Duration::from_millis(20);
/// Longest wait for a group's members to rejoin that a request may ask
/// for: the routers hold JoinGroups for 300 s at most, and the topics'
/// barrier and the offset copy come after it.
const MAX_REJOIN_WAIT: Duration = Duration::from_secs(240);

/// What a promotion request may tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromoteOptions {
    /// How long the old primary's log ends must stay still.
    pub quiet: Duration,
    pub drain_timeout: Duration,
    pub transaction_wait: Duration,
    /// Longest wait for every member of the set's groups to rejoin.
    pub rejoin_timeout: Duration,
    /// Compare the set's topics record by record first (`cutover verify`);
    /// a difference refuses the promotion.
    pub verify: bool,
}

impl PromoteOptions {
    /// From the request's fields (0: the default), refused when the waits
    /// together do not fit in the routers' hold.
    pub fn new(
        quiet_ms: u32,
        drain_timeout_ms: u32,
        transaction_wait_ms: u32,
        rejoin_timeout_ms: u32,
    ) -> ApiResult<Self> {
        let ms = |v: u32, default: u64| {
            Duration::from_millis(if v == 0 { default } else { u64::from(v) })
        };
        let o = PromoteOptions {
            quiet: ms(quiet_ms, 100),
            drain_timeout: ms(drain_timeout_ms, 10_000),
            transaction_wait: ms(transaction_wait_ms, 5_000),
            rejoin_timeout: ms(rejoin_timeout_ms, 30_000),
            verify: false,
        };
        if o.rejoin_timeout > MAX_REJOIN_WAIT {
            return Err(ApiError::BadRequest(format!(
                "rejoin_timeout_ms is {} ms; at most {} ms, so that the routers still hold the \
                 groups' JoinGroups (300 s) when the barrier ends",
                o.rejoin_timeout.as_millis(),
                MAX_REJOIN_WAIT.as_millis()
            )));
        }
        let total = o.quiet + o.drain_timeout + o.transaction_wait;
        if total > MAX_WAITS {
            return Err(ApiError::BadRequest(format!(
                "quiet_ms + drain_timeout_ms + transaction_wait_ms come to {} ms; at most {} ms \
                 fit in the {} s the routers may hold writes (under the clients' request \
                 timeout)",
                total.as_millis(),
                MAX_WAITS.as_millis(),
                HOLD.as_secs()
            )));
        }
        Ok(o)
    }
}

pub(crate) fn cluster_of(link: &Link, side: Side) -> &cutover_model::ClusterSpec {
    match side {
        Side::Source => &link.source,
        Side::Target => &link.target,
    }
}

fn lost(p: &Promotion) -> ApiError {
    ApiError::Unavailable(format!(
        "this orchestrator lost its etcd lease during {} {}; the leading orchestrator finishes \
         or undoes it from etcd (see `cutover promotions --link {}`)",
        p.direction.noun(),
        p.id,
        p.link
    ))
}

/// The log ends of the set's partitions on `cluster` (high watermarks:
/// what the fetchers copy up to).
async fn log_ends(cluster: &Cluster, side: Side, docs: &[MirrorTopic]) -> ApiResult<Ends> {
    let mut ends = Ends::new();
    for m in docs {
        let partitions: Vec<i32> = (0..m.partitions).collect();
        let got = cluster
            .list_offsets(&m.topic, &partitions, OffsetSpec::Latest)
            .await
            .map_err(ApiError::kafka(side.name(), cluster))?;
        for (p, r) in got {
            let end = r.map_err(ApiError::kafka_doing(
                side.name(),
                cluster,
                format!("reading the log end of {}-{p}", m.topic),
            ))?;
            ends.insert((m.topic.clone(), p), end);
        }
    }
    Ok(ends)
}

pub(crate) async fn producers_on(
    cluster: &Cluster,
    side: Side,
    partitions: impl IntoIterator<Item = (String, i32)>,
) -> ApiResult<Vec<PartitionProducers>> {
    let asks = partitions.into_iter().map(|(topic, partition)| async move {
        let producers = cluster
            .describe_producers(&topic, partition)
            .await
            .map_err(ApiError::kafka_doing(
                side.name(),
                cluster,
                format!("listing the producers of {topic}-{partition}"),
            ))?;
        Ok(PartitionProducers {
            topic,
            partition,
            producers,
        })
    });
    join_all(asks).await.into_iter().collect()
}

/// One running promotion, as this orchestrator carries it out.
pub(crate) struct Barrier<'a> {
    pub(crate) orch: &'a Orchestrator,
    pub(crate) rec: Promotion,
    /// The owner key and its mod revision: every write is guarded by it.
    owner: (String, i64),
    /// The set's documents as stored now, with their revisions.
    docs: Vec<Versioned<MirrorTopic>>,
    pub(crate) groups: Vec<Versioned<MirrorGroup>>,
    /// The routers asked to hold, and when the first was asked.
    /// (Behind a lock so the routers' hold can run beside the
    /// transactions check, both borrowing the barrier.)
    held: std::sync::Mutex<Vec<RouterMember>>,
    held_at: Option<Instant>,
}

/// New documents a write of the barrier stores with its record.
#[derive(Default)]
struct Docs {
    topics: Option<Vec<MirrorTopic>>,
    groups: Option<Vec<MirrorGroup>>,
}

impl Docs {
    fn topics(topics: Vec<MirrorTopic>) -> Docs {
        Docs {
            topics: Some(topics),
            groups: None,
        }
    }
    fn groups(groups: Vec<MirrorGroup>) -> Docs {
        Docs {
            topics: None,
            groups: Some(groups),
        }
    }
}

fn stored_at<D>(values: Vec<D>, revision: i64) -> Vec<Versioned<D>> {
    values
        .into_iter()
        .map(|value| Versioned {
            value,
            mod_revision: revision,
        })
        .collect()
}

/// Guards and puts of `new` documents over `old` ones (same order): each
/// must still be at the revision it was read at.
fn doc_writes<D: Moved + serde::Serialize>(
    old: &[Versioned<D>],
    new: &[D],
    guards: &mut Vec<Precondition>,
    writes: &mut Vec<WriteOp>,
) -> ApiResult<()> {
    for (old, new) in old.iter().zip(new) {
        let key = new.key();
        guards.push(Precondition::ModRevision(key.clone(), old.mod_revision));
        let doc = serde_json::to_value(new)
            .map_err(|e| ApiError::BadRequest(format!("{} document: {e}", D::NOUN)))?;
        writes.push(WriteOp::Put(key, doc));
    }
    Ok(())
}

impl Barrier<'_> {
    fn guard(&self) -> Precondition {
        Precondition::ModRevision(self.owner.0.clone(), self.owner.1)
    }

    fn record_write(&self) -> ApiResult<WriteOp> {
        let doc = serde_json::to_value(&self.rec)
            .map_err(|e| ApiError::BadRequest(format!("promotion record: {e}")))?;
        Ok(WriteOp::Put(
            keys::promotion(&self.rec.link, &self.rec.id),
            doc,
        ))
    }

    /// Moves the record to `step`, with `docs` (new documents of the set)
    /// in the same transaction; the store revision of the writes.
    async fn save(&mut self, step: Step, docs: Docs) -> ApiResult<i64> {
        self.rec.enter(step, now_ms());
        self.write(None, docs).await
    }

    /// Stores the record as it is, with `docs` and under `extra` too when
    /// given; the store revision of the writes.
    async fn write(&mut self, extra: Option<Precondition>, docs: Docs) -> ApiResult<i64> {
        let mut guards = vec![self.guard()];
        guards.extend(extra);
        let mut writes = vec![self.record_write()?];
        if let Some(topics) = &docs.topics {
            doc_writes(&self.docs, topics, &mut guards, &mut writes)?;
        }
        if let Some(groups) = &docs.groups {
            doc_writes(&self.groups, groups, &mut guards, &mut writes)?;
        }
        let changes = docs.topics.is_some() || docs.groups.is_some();
        let Some(revision) = self.orch.coord.txn_at(&guards, &writes).await? else {
            if changes && self.orch.coord.mod_revision(&self.owner.0).await? == Some(self.owner.1) {
                return Err(ApiError::Conflict(format!(
                    "the mirror topics and groups {} (changed during {} {})",
                    self.rec
                        .topics
                        .iter()
                        .chain(&self.rec.groups)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(","),
                    self.rec.direction.noun(),
                    self.rec.id
                )));
            }
            return Err(lost(&self.rec));
        };
        if let Some(topics) = docs.topics {
            self.docs = stored_at(topics, revision);
        }
        if let Some(groups) = docs.groups {
            self.groups = stored_at(groups, revision);
        }
        Ok(revision)
    }

    fn group_values(&self) -> Vec<MirrorGroup> {
        self.groups.iter().map(|d| d.value.clone()).collect()
    }

    fn values(&self) -> Vec<MirrorTopic> {
        self.docs.iter().map(|d| d.value.clone()).collect()
    }

    /// Every live router of the link holds the set's new writes and has
    /// its in-flight ones answered.
    async fn hold(&self) -> ApiResult<()> {
        let req = rpb::HoldProduceRequest {
            topics: self.rec.topics.clone(),
            hold_ms: HOLD.as_millis() as u32,
            drain_timeout_ms: ROUTER_CALL.as_millis() as u32,
            groups: self.rec.groups.clone(),
        };
        self.on_every_router(
            |side| format!("holds the writes, so the {side} cluster could still take some"),
            |mut c| {
                let req = req.clone();
                async move { c.hold_produce(req).await }
            },
        )
        .await?;
        info!("every router holds the set's writes");
        Ok(())
    }

    /// Makes `call` of every live router of the link (remembered as held:
    /// a release reaches them all). `what` says, of the old primary, what
    /// a router that failed leaves undone.
    async fn on_every_router<F, Fut, T>(
        &self,
        what: impl Fn(&str) -> String,
        call: F,
    ) -> ApiResult<()>
    where
        F: Fn(routers::Client) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let members = routers::members_of(&self.orch.coord, &self.rec.link).await?;
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = members.clone();
        let failed = routers::call_all(&members, ROUTER_CALL + Duration::from_secs(1), call).await;
        if !failed.is_empty() {
            return Err(ApiError::Unavailable(format!(
                "nothing changed: not every router {}: {}. Bring the router back or stop it \
                 (its clients move to the others), then retry.",
                what(self.rec.direction.from_side().name()),
                failed.join("; ")
            )));
        }
        info!(routers = members.len(), "every router answered");
        Ok(())
    }

    /// Before the barrier: every live router holds new transactions on the
    /// set (AddPartitionsToTxn naming its topics, AddOffsetsToTxn naming
    /// its groups), then the transactions open on the set end on the old
    /// primary while their writes still flow. Without it a transaction
    /// open when the writes are held could not end before the switch (its
    /// producer waits for its held writes before it commits), and one
    /// started meanwhile would have to span both clusters.
    async fn hold_transactions(&mut self, old: &Cluster, wait: Duration) -> ApiResult<()> {
        let req = rpb::HoldTransactionsRequest {
            topics: self.rec.topics.clone(),
            groups: self.rec.groups.clone(),
            hold_ms: HOLD.as_millis() as u32,
            drain_timeout_ms: ROUTER_CALL.as_millis() as u32,
        };
        self.on_every_router(
            |side| {
                format!(
                    "holds new transactions on the set, so one could start on the {side} \
                     cluster during the switch"
                )
            },
            |mut c| {
                let req = req.clone();
                async move { c.hold_transactions(req).await }
            },
        )
        .await?;
        info!("every router holds new transactions on the set");
        self.transactions(old, wait).await
    }

    /// Waits for the transactions open on the set (its partitions, and
    /// its groups' offsets) to end on the old primary: none may be half
    /// on each cluster.
    async fn transactions(&self, old: &Cluster, wait: Duration) -> ApiResult<()> {
        let side = self.rec.direction.from_side();
        let partitions: Vec<(String, i32)> = self
            .docs
            .iter()
            .flat_map(|d| (0..d.value.partitions).map(|p| (d.value.topic.clone(), p)))
            .collect();
        let by_coordinator =
            old.supports(ApiKey::ListTransactions) && old.supports(ApiKey::DescribeTransactions);
        let mut set: BTreeSet<(String, i32)> = partitions.iter().cloned().collect();
        if by_coordinator {
            for g in &self.rec.groups {
                let p = old
                    .offsets_partition(g)
                    .await
                    .map_err(ApiError::kafka_doing(
                        side.name(),
                        old,
                        format!("finding where group {g} keeps its offsets"),
                    ))?;
                set.insert((OFFSETS_TOPIC.to_owned(), p));
            }
        }
        let deadline = Instant::now() + wait;
        loop {
            // The coordinators know a transaction from its first
            // AddPartitionsToTxn; the partitions only from its first write.
            let open = if by_coordinator {
                let listed = old
                    .open_transactions()
                    .await
                    .map_err(ApiError::kafka_doing(
                        side.name(),
                        old,
                        "listing the open transactions".to_owned(),
                    ))?;
                open_on_set(&listed, &set)
            } else {
                open_transactions(&producers_on(old, side, partitions.clone()).await?)
            };
            if open.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ApiError::TooSlow(format!(
                    "nothing changed: transactions on the set stayed open on the {side} cluster \
                     for {} ms: {}. They end when their producers commit or abort (or the \
                     broker aborts them after their transaction.timeout.ms); retry then, or \
                     give a longer transaction_wait_ms",
                    wait.as_millis(),
                    open.join("; ")
                )));
            }
            tokio::time::sleep(POLL * 5).await;
        }
    }

    /// The old primary ended at `first` and is at `second` a quiet period
    /// later: anything that moved was written past every router's hold,
    /// by a producer writing to it directly (named).
    async fn stayed_still(&self, old: &Cluster, first: &Ends, second: &Ends) -> ApiResult<()> {
        if first == second {
            return Ok(());
        }
        let side = self.rec.direction.from_side();
        let moved = second
            .iter()
            .filter(|(tp, end)| first.get(*tp) != Some(*end))
            .map(|(tp, _)| tp.clone());
        let producers = producers_on(old, side, moved).await?;
        check_quiet(
            self.rec.direction,
            first,
            second,
            &producers,
            &self.router_producer_ids(side).await?,
        )
    }

    /// The upstream producer ids the routers' mappings use on `side`.
    async fn router_producer_ids(&self, side: Side) -> ApiResult<BTreeSet<i64>> {
        let mappings = self
            .orch
            .coord
            .list::<ProducerMapping>(&keys::producers_of(&self.rec.link))
            .await?;
        Ok(mappings
            .iter()
            .flat_map(|(_, m)| m.value.on_side(side))
            .map(|u| u.producer_id)
            .collect())
    }

    /// Lets every router (those held and any that joined since) send the
    /// held writes on, once it has seen `revision`. A router that does not
    /// answer lets them go by itself when its hold runs out.
    async fn release(&mut self, revision: i64) {
        let mut members = self.held.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match routers::members_of(&self.orch.coord, &self.rec.link).await {
            Ok(now) => {
                for m in now {
                    if !members.iter().any(|h| h.node_id == m.node_id) {
                        members.push(m);
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot list the routers again; releasing those held"),
        }
        let req = rpb::ReleaseProduceRequest {
            topics: self.rec.topics.clone(),
            after_revision: revision,
            wait_ms: ROUTER_CALL.as_millis() as u32,
            groups: self.rec.groups.clone(),
        };
        let failed = routers::call_all(&members, ROUTER_CALL + Duration::from_secs(1), |mut c| {
            let req = req.clone();
            async move { c.release_produce(req).await }
        })
        .await;
        for e in failed {
            warn!(error = %e, "a router did not release the writes; its hold ends by itself");
        }
        if let Some(at) = self.held_at {
            self.rec.stall_ms = at.elapsed().as_millis() as i64;
        }
    }

    async fn checks(
        &mut self,
        old: &Cluster,
        new: &Cluster,
        opts: PromoteOptions,
    ) -> ApiResult<()> {
        // The transactions check again (none should be left) while the
        // routers report their in-flight writes answered: both must be
        // done before the first read of the log ends.
        // The first failure ends both: a router that did not hold undoes
        // the barrier without waiting out open transactions.
        tokio::try_join!(self.hold(), self.transactions(old, opts.transaction_wait))?;
        let side = self.rec.direction.from_side();
        let docs = self.values();
        let deadline = Instant::now() + opts.drain_timeout;
        // Reading is no change: a successor that finds the record still
        // holding undoes it as it would have before the read. Both are
        // waited out (not the first failure alone), so that the record's
        // write cannot land after an undo's.
        let (saved, first) = tokio::join!(
            self.save(Step::Quiet, Docs::default()),
            log_ends(old, side, &docs)
        );
        saved?;
        let first = first?;
        // The fetchers copy up to the first ends while the quiet period
        // runs, so the stall is the longer of the two, not their sum: if
        // the old primary stayed still, those are its ends; if not, the
        // promotion is refused anyway.
        let (orch, link, direction) = (self.orch, self.rec.link.clone(), self.rec.direction);
        let copied = wait_for_offsets(orch, &link, direction, &first, deadline);
        tokio::pin!(copied);
        let quiet = async {
            // The quiet period is the check itself, not a wait for an event.
            tokio::time::sleep(opts.quiet).await;
            log_ends(old, side, &docs).await
        };
        tokio::pin!(quiet);
        let mut drained = None;
        let second = loop {
            tokio::select! {
                r = &mut copied, if drained.is_none() => drained = Some(r),
                ends = &mut quiet => break ends?,
            }
        };
        self.stayed_still(old, &first, &second).await?;
        self.rec.quiet_ends = BTreeMap::new();
        for ((topic, _), end) in &first {
            self.rec
                .quiet_ends
                .entry(topic.clone())
                .or_default()
                .push(*end);
        }
        // The record's write beside the rest of the drain; both are waited
        // out (not the first failure alone), so that no write of this step
        // can land after an undo's.
        let direction = self.rec.direction;
        let drain = async {
            match drained {
                Some(r) => r?,
                None => copied.await?,
            }
            drained_exactly(new, direction, &docs, &first, deadline, opts.drain_timeout).await
        };
        let (saved, drained) = tokio::join!(self.save(Step::Draining, Docs::default()), drain);
        saved?;
        drained?;
        if self.held_at.is_some_and(|at| at.elapsed() >= SWITCH_BY) {
            return Err(ApiError::TooSlow(format!(
                "nothing changed: the barrier took longer than {} s, and the routers' holds \
                 would run out before the switch; retry (with shorter waits)",
                SWITCH_BY.as_secs()
            )));
        }
        Ok(())
    }

    /// Puts the set back as it was and lets the held writes go to the old
    /// primary (the held JoinGroups go back to the old home as the routers
    /// see the groups' documents); the error the caller gets.
    async fn undo(&mut self, cause: ApiError) -> ApiError {
        let direction = self.rec.direction;
        self.rec.outcome = cause.to_string();
        let docs = Docs {
            topics: Some(
                self.values()
                    .iter()
                    .map(|m| undone_doc(m, direction))
                    .collect(),
            ),
            groups: Some(
                self.group_values()
                    .iter()
                    .map(|g| undone_doc(g, direction))
                    .collect(),
            ),
        };
        match self.save(Step::Undone, docs).await {
            Ok(revision) => {
                if !self.rec.topics.is_empty() {
                    self.release(revision).await;
                    // The stall is known only now; the record says it too.
                    let _ = self.store_stall().await;
                }
                warn!(outcome = %self.rec.outcome, "undone");
                ApiError::Undone {
                    what: direction.noun(),
                    id: self.rec.id.clone(),
                    cause: Box::new(cause),
                }
            }
            Err(e) => {
                warn!(error = %e, cause = %cause, "could not undo; the leader will");
                e
            }
        }
    }

    async fn store_stall(&mut self) -> ApiResult<()> {
        self.write(None, Docs::default()).await.map(|_| ())
    }
}

impl Orchestrator {
    /// Runs a promotion (or rollback) of `topics` on `link` to its end, in
    /// a task of its own: a caller that goes away does not cut a barrier
    /// halfway.
    pub async fn promote(
        self: &Arc<Self>,
        direction: Direction,
        link: String,
        topics: Vec<String>,
        groups: Vec<String>,
        opts: PromoteOptions,
    ) -> ApiResult<Promotion> {
        let this = self.clone();
        let span = tracing::info_span!("promotion", link = %link, direction = direction.name(),
            id = tracing::field::Empty);
        let task = self.tasks.spawn(
            async move {
                this.run_promotion(direction, &link, &topics, &groups, opts)
                    .await
            }
            .instrument(span),
        );
        task.await.map_err(|e| {
            ApiError::Unavailable(format!(
                "the promotion task ended abnormally ({e}); see `cutover promotions`"
            ))
        })?
    }

    async fn run_promotion(
        &self,
        direction: Direction,
        link_name: &str,
        requested: &[String],
        requested_groups: &[String],
        opts: PromoteOptions,
    ) -> ApiResult<Promotion> {
        let link = self.get_link(link_name).await?;
        let mirrors: BTreeMap<String, Versioned<MirrorTopic>> = self
            .coord
            .list::<MirrorTopic>(&keys::mirrors_of(link_name))
            .await?
            .into_iter()
            .map(|(_, v)| (v.value.topic.clone(), v))
            .collect();
        let running: Vec<Promotion> = self
            .coord
            .list::<Promotion>(&keys::promotions_of(link_name))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect();
        let plain: BTreeMap<String, MirrorTopic> = mirrors
            .iter()
            .map(|(t, v)| (t.clone(), v.value.clone()))
            .collect();
        let mirror_groups: BTreeMap<String, Versioned<MirrorGroup>> = self
            .coord
            .list::<MirrorGroup>(&keys::groups_of(link_name))
            .await?
            .into_iter()
            .map(|(_, v)| (v.value.group.clone(), v))
            .collect();
        let plain_groups: BTreeMap<String, MirrorGroup> = mirror_groups
            .iter()
            .map(|(g, v)| (g.clone(), v.value.clone()))
            .collect();
        let (topics, groups) = plan_start(
            direction,
            link_name,
            requested,
            requested_groups,
            &plain,
            &plain_groups,
            &running,
        )?;
        if opts.verify {
            for t in &topics {
                self.verified(link_name, t).await?;
            }
        }
        // Both clusters are reached before anything changes: one that is
        // not leaves the set as it is.
        let from = direction.from_side();
        let timeout = self.cfg.kafka_timeout();
        let old = connect(from.name(), cluster_of(&link, from), timeout).await?;
        let new = match connect(
            from.other().name(),
            cluster_of(&link, from.other()),
            timeout,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                old.close().await;
                return Err(e);
            }
        };
        let clusters = Clusters { old, new };
        let r = self
            .claim_and_run(
                direction,
                &link,
                topics,
                groups,
                &mirrors,
                &mirror_groups,
                &clusters,
                opts,
            )
            .await;
        clusters.old.close().await;
        clusters.new.close().await;
        r
    }

    #[allow(clippy::too_many_arguments)]
    async fn claim_and_run(
        &self,
        direction: Direction,
        link: &Link,
        topics: Vec<String>,
        groups: Vec<String>,
        mirrors: &BTreeMap<String, Versioned<MirrorTopic>>,
        mirror_groups: &BTreeMap<String, Versioned<MirrorGroup>>,
        clusters: &Clusters,
        opts: PromoteOptions,
    ) -> ApiResult<Promotion> {
        let link_name = link.name.as_str();
        // Members connected to the old home directly would stay there:
        // refused before anything changes.
        for g in &groups {
            self.direct_members(
                &clusters.old,
                direction.from_side(),
                link_name,
                g,
                opts.rejoin_timeout,
            )
            .await?;
        }

        let started = now_ms();
        let id = format!(
            "{}-{}",
            started,
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        tracing::Span::current().record("id", id.as_str());
        // The promotion's own lease: it lives as long as this task does
        // (not as long as the API), so a SIGTERM lets it end cleanly.
        let cancel = CancellationToken::new();
        let _stop = cancel.clone().drop_guard();
        let session = self
            .coord
            .session(self.coord.lease_ttl(), cancel.clone())
            .await?;
        let resource = keys::promotion_resource(link_name, &id);
        if !cutover_coord::try_claim(&self.coord, &session, &resource, &self.id).await? {
            return Err(ApiError::Conflict(format!("promotion {id}")));
        }
        let owner_key = cutover_coord::owner_key(&resource);
        let owner_rev = self
            .coord
            .mod_revision(&owner_key)
            .await?
            .ok_or_else(|| lost_early(&id))?;

        let mut rec = Promotion {
            id: id.clone(),
            link: link_name.to_owned(),
            direction,
            topics: topics.clone(),
            groups: groups.clone(),
            step: Step::Checking,
            steps: Vec::new(),
            leader: self.id.clone(),
            started_at_ms: started,
            outcome: String::new(),
            quiet_ends: BTreeMap::new(),
            stall_ms: 0,
        };
        rec.enter(Step::Checking, started);
        let mut barrier = Barrier {
            orch: self,
            rec,
            owner: (owner_key, owner_rev),
            docs: topics.iter().map(|t| mirrors[t].clone()).collect(),
            groups: groups.iter().map(|g| mirror_groups[g].clone()).collect(),
            held: Default::default(),
            held_at: None,
        };
        let result = self.barrier(&mut barrier, clusters, opts).await;
        let _ = cutover_coord::release(&self.coord, &resource, &self.id).await;
        let _ = session.revoke().await;
        result
    }

    async fn barrier(
        &self,
        b: &mut Barrier<'_>,
        clusters: &Clusters,
        opts: PromoteOptions,
    ) -> ApiResult<Promotion> {
        let direction = b.rec.direction;
        // The record and the barrier states in one transaction: a topic or
        // group is in a barrier state exactly while a record says it is.
        let mut create = Some(Precondition::Absent(keys::promotion(
            &b.rec.link,
            &b.rec.id,
        )));
        if !b.groups.is_empty() {
            // The groups rebalance first, before any write is held: their
            // members may take a while to rejoin.
            let held: Vec<MirrorGroup> = b
                .group_values()
                .iter()
                .map(|g| barrier_doc(g, direction))
                .collect();
            b.rec.enter(Step::Rejoining, now_ms());
            b.write(create.take(), Docs::groups(held)).await?;
            info!(groups = ?b.rec.groups, "groups rebalancing");
            if let Err(cause) = b.rejoined(&clusters.old, opts.rejoin_timeout).await {
                return Err(b.undo(cause).await);
            }
        }
        if !b.docs.is_empty() {
            if let Err(cause) = b
                .hold_transactions(&clusters.old, opts.transaction_wait)
                .await
            {
                if create.is_some() {
                    // Nothing written yet: only the routers' holds to end.
                    b.release(0).await;
                    return Err(cause);
                }
                return Err(b.undo(cause).await);
            }
            let held: Vec<MirrorTopic> = b
                .values()
                .iter()
                .map(|m| barrier_doc(m, direction))
                .collect();
            b.rec.enter(Step::Holding, now_ms());
            // Routers hold the set's writes from the moment they see the
            // barrier states: the stall starts here.
            b.held_at = Some(Instant::now());
            if let Err(e) = b.write(create.take(), Docs::topics(held)).await {
                if b.groups.is_empty() {
                    return Err(e);
                }
                return Err(b.undo(e).await);
            }
            info!(topics = ?b.rec.topics, "barrier up");
            if let Err(cause) = b.checks(&clusters.old, &clusters.new, opts).await {
                return Err(b.undo(cause).await);
            }
        }
        if !b.groups.is_empty() {
            let copied = match b.save(Step::Offsets, Docs::default()).await {
                Ok(_) => b.copy_offsets(&clusters.old, &clusters.new).await,
                Err(e) => Err(e),
            };
            if let Err(cause) = copied {
                return Err(b.undo(cause).await);
            }
        }
        let docs = Docs {
            topics: Some(
                b.values()
                    .iter()
                    .map(|m| switched_doc(m, direction))
                    .collect(),
            ),
            groups: Some(
                b.group_values()
                    .iter()
                    .map(|g| switched_group(g, direction))
                    .collect(),
            ),
        };
        let revision = match b.save(Step::Switched, docs).await {
            Ok(r) => r,
            Err(e @ ApiError::Conflict(_)) => return Err(b.undo(e).await),
            Err(e) => return Err(e),
        };
        info!(revision, "primary switched");
        // Stored with the next step: once switched, the promotion only goes
        // forward (a successor releases too), so the release need not wait
        // for a write of its own.
        b.rec.enter(Step::Releasing, now_ms());
        if !b.docs.is_empty() {
            b.release(revision).await;
        }
        // The routers send the held JoinGroups to the new home as they see
        // the groups' documents; the members the old home still lists are
        // gone from there.
        b.leave_old_home(&clusters.old).await;
        b.save(Step::Done, Docs::default()).await?;
        info!(stall_ms = b.rec.stall_ms, "done");
        Ok(b.rec.clone())
    }

    /// `--verify`: refused unless `topic` is identical on both clusters, up
    /// to the shorter log of each partition.
    async fn verified(&self, link: &str, topic: &str) -> ApiResult<()> {
        let r = self
            .verify(pb::VerifyRequest {
                link: link.to_owned(),
                topic: topic.to_owned(),
                ..Default::default()
            })
            .await?;
        if let Some(p) = r.partitions.iter().find(|p| !p.first_difference.is_empty()) {
            return Err(ApiError::Precondition(format!(
                "nothing changed: --verify found {topic}-{} different on the two clusters ({}); \
                 find out why (`cutover verify --link {link} --topic {topic}`) before promoting",
                p.partition, p.first_difference
            )));
        }
        let records: u64 = r.partitions.iter().map(|p| p.records_identical).sum();
        info!(topic, records, "verified identical before the promotion");
        Ok(())
    }

    /// Promotions and rollbacks of `link`, newest first.
    pub async fn list_promotions(&self, link: &str) -> ApiResult<Vec<Promotion>> {
        self.get_link(link).await?;
        let mut out: Vec<Promotion> = self
            .coord
            .list::<Promotion>(&keys::promotions_of(link))
            .await?
            .into_iter()
            .map(|(_, v)| v.value)
            .collect();
        out.sort_by(|a, b| (b.started_at_ms, &b.id).cmp(&(a.started_at_ms, &a.id)));
        Ok(out)
    }

    /// The leader's part: finishes or undoes every running promotion whose
    /// orchestrator is gone (its owner key went with its lease).
    pub async fn recover_promotions(&self, session: &Session) -> ApiResult<()> {
        for (_, link) in self.coord.list::<Link>(keys::LINKS).await? {
            let link = link.value.name;
            for (_, p) in self
                .coord
                .list::<Promotion>(&keys::promotions_of(&link))
                .await?
            {
                let p = p.value;
                if recover(&p) == Recovery::None {
                    continue;
                }
                let resource = keys::promotion_resource(&link, &p.id);
                if cutover_coord::owner_of(&self.coord, &resource)
                    .await?
                    .is_some()
                {
                    continue;
                }
                if !cutover_coord::try_claim(&self.coord, session, &resource, &self.id).await? {
                    continue;
                }
                let span = tracing::info_span!("recover_promotion", link = %link, id = %p.id);
                let r = self.recover_one(p, &resource).instrument(span).await;
                let _ = cutover_coord::release(&self.coord, &resource, &self.id).await;
                r?;
            }
        }
        Ok(())
    }

    async fn recover_one(&self, p: Promotion, resource: &str) -> ApiResult<()> {
        let owner_key = cutover_coord::owner_key(resource);
        let Some(owner_rev) = self.coord.mod_revision(&owner_key).await? else {
            return Err(lost_early(&p.id));
        };
        let recovery = recover(&p);
        let direction = p.direction;
        let mut docs = Vec::with_capacity(p.topics.len());
        for t in &p.topics {
            if let Some(d) = self
                .coord
                .get::<MirrorTopic>(&keys::mirror(&p.link, t))
                .await?
            {
                docs.push(d);
            }
        }
        let mut groups = Vec::with_capacity(p.groups.len());
        for g in &p.groups {
            if let Some(d) = self
                .coord
                .get::<MirrorGroup>(&keys::group(&p.link, g))
                .await?
            {
                groups.push(d);
            }
        }
        let previous = p.leader.clone();
        let mut b = Barrier {
            orch: self,
            rec: p,
            owner: (owner_key, owner_rev),
            docs,
            groups,
            held: Default::default(),
            held_at: None,
        };
        b.rec.leader = self.id.clone();
        match recovery {
            Recovery::None => Ok(()),
            Recovery::Undo => {
                // Only the topics still in the barrier go back: a topic
                // removed meanwhile has no document to put back.
                b.docs
                    .retain(|d| d.value.state == direction.barrier_state());
                b.groups
                    .retain(|d| d.value.state == direction.barrier_state());
                let cause = ApiError::Unavailable(format!(
                    "orchestrator {previous} stopped before the switch; {} undid it",
                    self.id
                ));
                let e = b.undo(cause).await;
                match e {
                    ApiError::Undone { .. } => Ok(()),
                    e => Err(e),
                }
            }
            Recovery::Finish => {
                // The switch is stored: the routers go on to the new primary
                // once they have seen it (its documents' revision).
                let revision = b.docs.iter().map(|d| d.mod_revision).max().unwrap_or(0);
                if b.rec.step < Step::Releasing {
                    b.save(Step::Releasing, Docs::default()).await?;
                }
                if !b.docs.is_empty() {
                    b.release(revision).await;
                }
                if !b.groups.is_empty() {
                    let from = direction.from_side();
                    let link = self.get_link(&b.rec.link).await?;
                    match connect(
                        from.name(),
                        cluster_of(&link, from),
                        self.cfg.kafka_timeout(),
                    )
                    .await
                    {
                        Ok(old) => {
                            b.leave_old_home(&old).await;
                            old.close().await;
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot reach the groups' old home; their members there expire after their session timeout")
                        }
                    }
                }
                b.rec.outcome = format!(
                    "orchestrator {previous} stopped after the switch; {} finished it",
                    self.id
                );
                b.save(Step::Done, Docs::default()).await?;
                info!("finished a promotion whose orchestrator stopped");
                Ok(())
            }
        }
    }
}

/// The clusters of a running barrier: the old primary (home) and the new.
pub(crate) struct Clusters {
    pub(crate) old: Cluster,
    pub(crate) new: Cluster,
}

/// The new primary holds exactly the old one's records: up to `ends`,
/// nothing beyond (the fetchers said they reached `ends`; a client
/// writing to the new primary directly would put records beyond).
async fn drained_exactly(
    new: &Cluster,
    direction: Direction,
    docs: &[MirrorTopic],
    ends: &Ends,
    deadline: Instant,
    timeout: Duration,
) -> ApiResult<()> {
    let side = direction.from_side().other();
    loop {
        let now = log_ends(new, side, docs).await?;
        let beyond: Vec<String> = now
            .iter()
            .filter(|(tp, end)| ends.get(*tp).is_some_and(|want| *end > want))
            .map(|((t, p), end)| format!("{t}-{p} ends at {end}, not {}", ends[&(t.clone(), *p)]))
            .collect();
        if !beyond.is_empty() {
            return Err(ApiError::Precondition(format!(
                "nothing changed: the {side} cluster has records the {} cluster does not \
                 ({}), so a client writes to it directly; stop it (or point it at a \
                 router) and retry",
                side.other(),
                beyond.join(", ")
            )));
        }
        let behind: Vec<String> = now
            .iter()
            .filter(|(tp, end)| ends.get(*tp).is_some_and(|want| *end < want))
            .map(|((t, p), end)| format!("{t}-{p} at {end} of {}", ends[&(t.clone(), *p)]))
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let how = match direction {
                Direction::Promote => "the fetchers did not copy",
                Direction::Rollback => "the reverse mirror did not copy",
            };
            return Err(ApiError::TooSlow(format!(
                "nothing changed: {how} the {} cluster's records to the {side} cluster \
                 within {} ms: {}. Check `cutover status`, then retry (or give a longer \
                 drain_timeout_ms)",
                side.other(),
                timeout.as_millis(),
                behind.join(", ")
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every fetcher copying the set says the new primary reached `ends`
/// (through the mirror, or for a rollback the reverse mirror), or
/// `deadline` passed: no polling.
async fn wait_for_offsets(
    orch: &Orchestrator,
    link: &str,
    direction: Direction,
    ends: &Ends,
    deadline: Instant,
) -> ApiResult<()> {
    let waits = ends.iter().map(|((topic, p), end)| {
        wait_for_offset(orch, link, direction, (topic.as_str(), *p), *end, deadline)
    });
    for r in join_all(waits).await {
        r?;
    }
    Ok(())
}

/// Asks the fetcher owning `topic`-`partition` to answer once the new
/// primary reached `offset` (the target through the mirror, or the
/// source through the reverse mirror), following the partition to a
/// new owner and waiting for its direction to turn. Past `deadline` it
/// returns: the log-end check after it reports what is behind.
async fn wait_for_offset(
    orch: &Orchestrator,
    link: &str,
    direction: Direction,
    (topic, partition): (&str, i32),
    offset: i64,
    deadline: Instant,
) -> ApiResult<()> {
    let resource = keys::fetch_resource(link, topic, partition);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // The log-end check after it reports what is behind.
            return Ok(());
        }
        let owner = cutover_coord::owner_of(&orch.coord, &resource).await?;
        let member = match &owner {
            Some(id) => orch
                .coord
                .get::<FetcherMember>(&cutover_coord::member_key(keys::FETCHER_KIND, id))
                .await?
                .map(|v| v.value),
            None => None,
        };
        let Some(member) = member else {
            // No owner now: one takes it over within a lease.
            tokio::time::sleep(POLL * 5).await;
            continue;
        };
        let asked = async {
            let channel = peers::traced_channel(&member.grpc_addr, left + Duration::from_secs(1))
                .map_err(tonic::Status::invalid_argument)?;
            let mut c = fpb::fetcher_client::FetcherClient::new(channel);
            c.wait_for_offset(fpb::WaitForOffsetRequest {
                link: link.to_owned(),
                topic: topic.to_owned(),
                partition,
                offset,
                timeout_ms: left.as_millis().max(1) as u32,
                reverse: direction == Direction::Rollback,
            })
            .await
        };
        match asked.await {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::DeadlineExceeded => return Ok(()),
            Err(s) => {
                warn!(topic, partition, fetcher = %member.id, code = ?s.code(), error = s.message(),
                    "asking the fetcher for the drain failed; asking its owner again");
                tokio::time::sleep(POLL * 5).await;
            }
        }
    }
}

fn lost_early(id: &str) -> ApiError {
    ApiError::Unavailable(format!(
        "the etcd lease of promotion {id} ended as it started; nothing changed, retry"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_when_zero_and_must_fit_in_the_routers_hold() {
        let o = PromoteOptions::new(0, 0, 0, 0).expect("defaults fit");
        assert_eq!(
            o,
            PromoteOptions {
                quiet: Duration::from_millis(100),
                drain_timeout: Duration::from_secs(10),
                transaction_wait: Duration::from_secs(5),
                rejoin_timeout: Duration::from_secs(30),
                verify: false,
            }
        );
        assert!(PromoteOptions::new(15_000, 1_000, 1_000, 240_000).is_ok());
        let e = PromoteOptions::new(0, 0, 0, 240_001).expect_err("too long");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = PromoteOptions::new(15_000, 0, 0, 0).expect_err("too long");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("come to 30000 ms"), "{e}");
    }

    #[test]
    fn an_undone_promotion_answers_with_its_causes_code_and_says_so() {
        let e = ApiError::Undone {
            what: "promotion",
            id: "1-a".into(),
            cause: Box::new(ApiError::TooSlow("drain too slow".into())),
        };
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            e.to_string(),
            "drain too slow (promotion 1-a was undone: every topic is as it was)"
        );
    }
}
