//! Consumer group members in threads (librdkafka), and what a group
//! committed and who is in it on a cluster: how tests see that a group
//! consumed every record once across a move of its home.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientContext, TopicPartitionList};

use crate::clients::LoadGenerator;
use crate::cutover::wait_until;
use crate::records::{ProduceMode, ProduceSpec};

const WAIT: Duration = Duration::from_secs(60);

/// An idempotent producer writing `rate` records a second to partitions
/// `0..partitions` of `topic` at `bootstrap`: the load a group consumes.
pub fn idempotent_load(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    rate: u64,
) -> Result<LoadGenerator> {
    let parts: Vec<(String, i32)> = (0..partitions).map(|p| (topic.to_owned(), p)).collect();
    LoadGenerator::start(
        bootstrap,
        &parts,
        rate,
        ProduceSpec {
            mode: ProduceMode::Idempotent,
            ..ProduceSpec::default()
        },
    )
}

/// One consumer group member in a thread: processes each record by noting
/// it, and commits what it processed synchronously every
/// [`COMMIT_EVERY`] records or [`COMMIT_AFTER`], when it has nothing to
/// read, and before its partitions are revoked (as applications commit on
/// revoke). A record whose commit failed (a rebalance took its partition
/// first) may come again to another member: it is noted as uncommitted.
/// (A commit per record kept a member under the rate of the tests' load
/// on a busy 2-core machine, and the backlog grew without end.)
pub struct Member {
    name: String,
    stop: Arc<AtomicBool>,
    /// What its thread does now, and since when (a test that times out
    /// says where each member is).
    doing: Arc<Mutex<(String, Instant)>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

pub const COMMIT_EVERY: usize = 50;
pub const COMMIT_AFTER: Duration = Duration::from_millis(200);

/// What a member processed and has not committed yet.
struct Pending {
    topic: String,
    /// Next offset to commit, per partition.
    next: BTreeMap<i32, i64>,
    records: Vec<(i32, i64)>,
    since: Instant,
}

struct MemberContext {
    pending: Mutex<Pending>,
    log: Arc<Mutex<GroupLog>>,
}

impl MemberContext {
    fn note(&self, partition: i32, offset: i64) {
        let mut p = lock(&self.pending);
        if p.records.is_empty() {
            p.since = Instant::now();
        }
        p.next.insert(partition, offset + 1);
        p.records.push((partition, offset));
    }

    fn due(&self) -> bool {
        let p = lock(&self.pending);
        p.records.len() >= COMMIT_EVERY
            || (!p.records.is_empty() && p.since.elapsed() >= COMMIT_AFTER)
    }

    /// Commits what was processed; on failure its records are noted as
    /// uncommitted.
    fn commit(&self, consumer: &BaseConsumer<MemberContext>) {
        let (tpl, records) = {
            let mut p = lock(&self.pending);
            if p.records.is_empty() {
                return;
            }
            let mut tpl = TopicPartitionList::new();
            for (partition, next) in &p.next {
                if tpl
                    .add_partition_offset(&p.topic, *partition, rdkafka::Offset::Offset(*next))
                    .is_err()
                {
                    continue;
                }
            }
            p.next.clear();
            (tpl, std::mem::take(&mut p.records))
        };
        if consumer.commit(&tpl, CommitMode::Sync).is_err() {
            lock(&self.log).uncommitted.extend(records);
        }
    }
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Revoke(_)) {
            self.commit(consumer);
        }
    }
}

#[derive(Default)]
pub struct GroupLog {
    /// (partition, offset, member) per record processed.
    pub seen: Vec<(i32, i64, String)>,
    /// (partition, offset) whose commit failed.
    pub uncommitted: Vec<(i32, i64)>,
}

impl Member {
    pub fn start(
        bootstrap: &str,
        group: &str,
        topic: &str,
        name: &str,
        log: Arc<Mutex<GroupLog>>,
    ) -> Result<Member> {
        Self::start_with(bootstrap, group, topic, name, log, &[])
    }

    /// [`Member::start`] with more librdkafka settings.
    pub fn start_with(
        bootstrap: &str,
        group: &str,
        topic: &str,
        name: &str,
        log: Arc<Mutex<GroupLog>>,
        extra: &[(&str, &str)],
    ) -> Result<Member> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("client.id", name)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("topic.metadata.refresh.interval.ms", "1000");
        for (k, v) in extra {
            cfg.set(*k, *v);
        }
        let consumer: BaseConsumer<MemberContext> = cfg.create_with_context(MemberContext {
            pending: Mutex::new(Pending {
                topic: topic.to_owned(),
                next: BTreeMap::new(),
                records: Vec::new(),
                since: Instant::now(),
            }),
            log: log.clone(),
        })?;
        consumer.subscribe(&[topic])?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let doing = Arc::new(Mutex::new(("starting".to_owned(), Instant::now())));
        let now_doing = doing.clone();
        let set = move |what: String| *lock(&now_doing) = (what, Instant::now());
        let name = name.to_owned();
        let thread_name = name.clone();
        let thread = std::thread::spawn(move || -> Result<()> {
            let name = thread_name;
            while !flag.load(Ordering::Relaxed) {
                set("polling".to_owned());
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let key = (m.partition(), m.offset());
                        lock(&log).seen.push((key.0, key.1, name.clone()));
                        consumer.context().note(key.0, key.1);
                        if consumer.context().due() {
                            set(format!("committing up to {}/{}", key.0, key.1));
                            consumer.context().commit(&consumer);
                        }
                    }
                    Some(Err(e)) => anyhow::bail!("member {name}: {e}"),
                    None => {
                        set("committing while idle".to_owned());
                        consumer.context().commit(&consumer);
                    }
                }
            }
            set("committing before it stops".to_owned());
            consumer.context().commit(&consumer);
            // Dropping the consumer leaves the group (LeaveGroup): the
            // others rebalance at once.
            Ok(())
        });
        Ok(Member {
            name,
            stop,
            doing,
            thread: Some(thread),
        })
    }

    /// `name: what it does now, for how long`.
    pub fn doing(&self) -> String {
        let (what, since) = lock(&self.doing).clone();
        format!("{}: {what} for {:?}", self.name, since.elapsed())
    }

    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => anyhow::bail!("a member thread panicked"),
            None => Ok(()),
        }
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stops the load, waits until the group has consumed every record it
/// acknowledged, stops the members, and checks that none was missed and
/// none consumed twice unless its commit failed (what an ordinary
/// rebalance may redeliver). Returns the last offset produced per
/// partition.
pub fn consumed_every_record_once(
    load: LoadGenerator,
    members: Vec<Member>,
    log: &Arc<Mutex<GroupLog>>,
    topic: &str,
) -> Result<BTreeMap<i32, i64>> {
    let report = load.stop()?;
    ensure!(report.total_failed() == 0, "the producer had failures");
    let produced: BTreeMap<i32, i64> = report
        .partitions
        .iter()
        .filter_map(|((_, p), l)| l.last_offset.map(|o| (*p, o)))
        .collect();
    let total: i64 = produced.values().map(|last| last + 1).sum();
    let consumed_all = wait_until("the group to consume every record", WAIT, || {
        let log = lock(log);
        let distinct: std::collections::BTreeSet<(i32, i64)> =
            log.seen.iter().map(|(p, o, _)| (*p, *o)).collect();
        Ok(distinct.len() as i64 >= total)
    });
    if let Err(e) = consumed_all {
        let doing: Vec<String> = members.iter().map(Member::doing).collect();
        let ended: Vec<String> = members
            .into_iter()
            .filter_map(|m| m.stop().err().map(|e| format!("{e:#}")))
            .collect();
        let log = lock(log);
        let mut missing = Vec::new();
        for (p, last) in &produced {
            let seen: std::collections::BTreeSet<i64> = log
                .seen
                .iter()
                .filter(|(q, _, _)| q == p)
                .map(|(_, o, _)| *o)
                .collect();
            let lacking: Vec<i64> = (0..=*last).filter(|o| !seen.contains(o)).collect();
            if let (Some(first), Some(end)) = (lacking.first(), lacking.last()) {
                missing.push(format!(
                    "{topic}/{p}: {} of {} missing, {first}..={end}",
                    lacking.len(),
                    last + 1
                ));
            }
        }
        return Err(e.context(format!(
            "not consumed: {}; members then: {}; members that failed: {}",
            missing.join("; "),
            doing.join("; "),
            if ended.is_empty() {
                "none".to_string()
            } else {
                ended.join("; ")
            }
        )));
    }
    for m in members {
        m.stop()?;
    }
    let log = lock(log);
    let mut times: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for (p, o, _) in &log.seen {
        *times.entry((*p, *o)).or_default() += 1;
    }
    for (p, last) in &produced {
        for o in 0..=*last {
            ensure!(
                times.contains_key(&(*p, o)),
                "{topic}/{p} offset {o} was never consumed"
            );
        }
    }
    let twice: Vec<_> = times
        .iter()
        .filter(|(k, n)| **n > 1 && !log.uncommitted.contains(k))
        .collect();
    ensure!(
        twice.is_empty(),
        "consumed twice although committed: {twice:?}"
    );
    Ok(produced)
}

/// The committed offsets of `group` on `topic`'s partitions `0..n` at
/// `bootstrap` (-1: none).
pub fn committed(bootstrap: &str, group: &str, topic: &str, n: i32) -> Result<Vec<i64>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
    (0..n)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(o)) => Ok(o),
            Some(rdkafka::Offset::Invalid) | None => Ok(-1),
            other => Err(anyhow!("{topic}/{p}: committed {other:?}")),
        })
        .collect()
}

/// The number of members of `group` at `bootstrap`'s coordinator.
pub fn members_at(bootstrap: &str, group: &str) -> Result<usize> {
    Ok(member_ids_at(bootstrap, group)?.len())
}

/// The (member id, client id) of each member of `group` at `bootstrap`'s
/// coordinator, sorted. A coordinator still loading its offsets partition
/// (a fresh cluster, or one whose coordinator just moved) is waited out for
/// up to 30 s: it is the broker's "ask again", not an answer.
pub fn member_ids_at(bootstrap: &str, group: &str) -> Result<Vec<(String, String)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.fetch_group_list(Some(group), Duration::from_secs(10)) {
            Ok(groups) => {
                let mut m: Vec<(String, String)> = groups
                    .groups()
                    .iter()
                    .flat_map(|g| g.members())
                    .map(|m| (m.id().to_owned(), m.client_id().to_owned()))
                    .collect();
                m.sort();
                return Ok(m);
            }
            Err(e) if coordinator_not_ready(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn coordinator_not_ready(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::NotCoordinator
        )
    )
}
