//! Domain model shared by every service: links, mirror topics, partition
//! progress, their etcd key layout and the validation of operator input.
//!
//! Keys are relative to the coordination prefix (`/cutover/v1` by default);
//! `cutover-coord` adds the prefix.

use serde::{Deserialize, Serialize};

pub mod keys;
pub mod validate;

/// Connection settings of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub bootstrap_servers: Vec<String>,
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkOptions {
    /// 0 = unlimited; split evenly between the fetchers of the link.
    #[serde(default)]
    pub bandwidth_limit_bytes_per_sec: u64,
}

/// A named (source, target) pair of clusters. Stored at `links/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub name: String,
    pub source: ClusterSpec,
    pub target: ClusterSpec,
    #[serde(default)]
    pub options: LinkOptions,
    pub created_at_ms: i64,
}

/// State of a mirror topic (design.md: MIRRORING -> PROMOTING -> PROMOTED,
/// plus PAUSED and FAILED(reason)). A rollback goes PROMOTED -> DEMOTING ->
/// MIRRORING.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MirrorState {
    Mirroring,
    Paused,
    Promoting,
    Promoted,
    /// A rollback's barrier: the target is still the primary.
    Demoting,
    Failed,
    /// Promoted, and the reverse mirror ended (`cutover detach`): the
    /// target is the primary and the source is no longer kept complete,
    /// so there is no way back.
    Detached,
}

impl MirrorState {
    /// Which way fetchers copy the topic in this state: from the primary
    /// to the other cluster, so the one that does not take writes stays
    /// complete (for the clients still on it and for the way back). The
    /// direction turns when a barrier ends, with the primary.
    pub fn copy_direction(self) -> Option<CopyDirection> {
        match self {
            MirrorState::Mirroring | MirrorState::Promoting => Some(CopyDirection::Forward),
            MirrorState::Promoted | MirrorState::Demoting => Some(CopyDirection::Reverse),
            MirrorState::Paused | MirrorState::Failed | MirrorState::Detached => None,
        }
    }

    /// Whether a promotion's (or rollback's) barrier runs: routers hold
    /// the topic's writes (a group's joins) while it does, also one that
    /// started (or came back) during it and was never asked to.
    pub fn in_barrier(self) -> bool {
        matches!(self, MirrorState::Promoting | MirrorState::Demoting)
    }

    /// The cluster that takes the topic's writes (runs the group) in this
    /// state. The primary moves only when a barrier ends, never when it
    /// starts.
    pub fn primary(self) -> Side {
        match self {
            MirrorState::Promoted | MirrorState::Demoting | MirrorState::Detached => Side::Target,
            MirrorState::Mirroring
            | MirrorState::Paused
            | MirrorState::Promoting
            | MirrorState::Failed => Side::Source,
        }
    }
}

/// One of the two clusters of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Source => Side::Target,
            Side::Target => Side::Source,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which way a mirror topic's records are copied: source to target, or
/// (after a promotion) target to source, the *reverse mirror*. Same
/// fetchers, same offset identity, one writer per partition either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyDirection {
    #[default]
    Forward,
    Reverse,
}

impl CopyDirection {
    /// The cluster records are read from.
    pub fn from_side(self) -> Side {
        match self {
            CopyDirection::Forward => Side::Source,
            CopyDirection::Reverse => Side::Target,
        }
    }

    /// The cluster records are written to.
    pub fn to_side(self) -> Side {
        self.from_side().other()
    }

    pub fn name(self) -> &'static str {
        match self {
            CopyDirection::Forward => "forward",
            CopyDirection::Reverse => "reverse",
        }
    }
}

/// The generation of `side` for a topic whose primary has switched
/// `switches` times: the latest count with `side`'s parity the topic has
/// reached (the source's are even, the target's odd; the target's is 1
/// before a first promotion too). Each period a cluster is the primary
/// has its own generation, which routers use for leader epochs and for
/// upstream producers.
pub fn generation(side: Side, switches: u32) -> u32 {
    let s = switches.min(MAX_PRIMARY_SWITCHES);
    match side {
        Side::Source => s - s % 2,
        Side::Target if s == 0 => 1,
        Side::Target => s - (1 - s % 2),
    }
}

/// The cluster whose generations have `generation`'s parity.
pub fn side_of_generation(generation: u32) -> Side {
    if generation.is_multiple_of(2) {
        Side::Source
    } else {
        Side::Target
    }
}

/// Which way a promotion moves the primary of its topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Source to target (`cutover promote`).
    Promote,
    /// Target back to source (`cutover rollback`).
    Rollback,
}

impl Direction {
    /// The state a topic must be in for this direction to start.
    pub fn from_state(self) -> MirrorState {
        match self {
            Direction::Promote => MirrorState::Mirroring,
            Direction::Rollback => MirrorState::Promoted,
        }
    }

    /// The state during the barrier.
    pub fn barrier_state(self) -> MirrorState {
        match self {
            Direction::Promote => MirrorState::Promoting,
            Direction::Rollback => MirrorState::Demoting,
        }
    }

    /// The state once the primary has moved.
    pub fn to_state(self) -> MirrorState {
        match self {
            Direction::Promote => MirrorState::Promoted,
            Direction::Rollback => MirrorState::Mirroring,
        }
    }

    /// The primary the writes leave.
    pub fn from_side(self) -> Side {
        self.from_state().primary()
    }

    pub fn name(self) -> &'static str {
        match self {
            Direction::Promote => "promote",
            Direction::Rollback => "rollback",
        }
    }

    /// The operation, as operators read it ("promotion p-1 ...").
    pub fn noun(self) -> &'static str {
        match self {
            Direction::Promote => "promotion",
            Direction::Rollback => "rollback",
        }
    }
}

/// The steps of a promotion's barrier (design.md "Topic promotion"), in
/// the order they run. A promotion that stops before [`Step::Switched`]
/// is undone; one that reached it is finished, also by another
/// orchestrator after the leading one died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The request checked against the topics' states (and `--verify`).
    Checking,
    /// The set's groups rebalance: routers answer their heartbeats
    /// REBALANCE_IN_PROGRESS, members commit on revoke and rejoin, and the
    /// routers hold every member's JoinGroup.
    Rejoining,
    /// Every live router holds new produce for the set and reports its
    /// in-flight writes answered; no transaction is open on the set.
    Holding,
    /// The old primary's log ends must stay still for the quiet period;
    /// the fetchers copy up to them meanwhile.
    Quiet,
    /// What is left of the fetchers' copy up to those log ends once the
    /// quiet period is over.
    Draining,
    /// The groups' committed offsets copied, unchanged, to their new home.
    Offsets,
    /// The primary moved in etcd (states and switch counts with this
    /// record, in one transaction): from here on the promotion finishes.
    Switched,
    /// Routers let the held requests go to the new primary.
    Releasing,
    Done,
    /// Stopped before the switch, everything put back; `outcome` says why.
    Undone,
}

impl Step {
    /// As stored (snake case).
    pub fn name(self) -> &'static str {
        match self {
            Step::Checking => "checking",
            Step::Rejoining => "rejoining",
            Step::Offsets => "offsets",
            Step::Holding => "holding",
            Step::Quiet => "quiet",
            Step::Draining => "draining",
            Step::Switched => "switched",
            Step::Releasing => "releasing",
            Step::Done => "done",
            Step::Undone => "undone",
        }
    }
}

/// The time one step of a promotion took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTime {
    pub step: Step,
    pub started_at_ms: i64,
    /// 0 while the step runs.
    #[serde(default)]
    pub took_ms: i64,
}

/// One promotion or rollback of a set of topics, as one barrier. Stored at
/// `promotions/<link>/<id>`, written at every step, so that status shows
/// it and another orchestrator can finish or undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    pub id: String,
    pub link: String,
    pub direction: Direction,
    pub topics: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub step: Step,
    #[serde(default)]
    pub steps: Vec<StepTime>,
    /// The orchestrator running it.
    pub leader: String,
    pub started_at_ms: i64,
    /// Why it was undone; empty otherwise.
    #[serde(default)]
    pub outcome: String,
    /// The old primary's log end of each partition once it was quiet, by
    /// topic: what the fetchers drain to.
    #[serde(default)]
    pub quiet_ends: std::collections::BTreeMap<String, Vec<i64>>,
    /// How long the routers held the set's writes (the produce stall
    /// clients saw); 0 until they were released.
    #[serde(default)]
    pub stall_ms: i64,
}

impl Promotion {
    /// Whether it still needs an orchestrator.
    pub fn is_running(&self) -> bool {
        !matches!(self.step, Step::Done | Step::Undone)
    }

    /// Whether the primary has moved: such a promotion can only go forward.
    pub fn switched(&self) -> bool {
        self.step >= Step::Switched && self.step != Step::Undone
    }

    /// Moves to `step` at `now_ms`, closing the running step's time.
    pub fn enter(&mut self, step: Step, now_ms: i64) {
        if let Some(last) = self.steps.last_mut() {
            if last.took_ms == 0 {
                last.took_ms = (now_ms - last.started_at_ms).max(0);
            }
        }
        self.step = step;
        if self.is_running() {
            self.steps.push(StepTime {
                step,
                started_at_ms: now_ms,
                took_ms: 0,
            });
        }
    }
}

/// A topic mirrored over a link. Stored at `mirrors/<link>/<topic>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorTopic {
    pub link: String,
    pub topic: String,
    pub partitions: i32,
    pub state: MirrorState,
    #[serde(default)]
    pub reason: String,
    pub created_at_ms: i64,
    /// Target topic settings the fetcher needs to build acceptable batches.
    #[serde(default)]
    pub target: TargetTopicSettings,
    /// How many times the topic's primary has moved between the clusters
    /// (promotions and rollbacks that completed). Routers show leader
    /// epochs with it, so that they never go down across a switch either
    /// way; at most [`MAX_PRIMARY_SWITCHES`]. Left out of the document
    /// while 0, so binaries from before it read a never-promoted topic.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub switches: u32,
}

/// A consumer group of a link whose home (the cluster whose coordinator
/// runs it, for the clients behind the routers) Cutover moves. Stored at
/// `groups/<link>/<group>`. Its state is a topic's without copying:
/// MIRRORING (home: the source), PROMOTING, PROMOTED (home: the target),
/// DEMOTING; PAUSED and FAILED are not used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorGroup {
    pub link: String,
    pub group: String,
    pub state: MirrorState,
    /// Promoted when every member comes through the routers (the
    /// default); else only when asked.
    #[serde(default = "yes")]
    pub auto_promote: bool,
    /// How many times its home moved (promotions and rollbacks).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub switches: u32,
    pub created_at_ms: i64,
}

impl MirrorGroup {
    /// The cluster whose coordinator runs the group for routed clients.
    pub fn home(&self) -> Side {
        self.state.primary()
    }
}

fn yes() -> bool {
    true
}

fn is_forward(d: &CopyDirection) -> bool {
    *d == CopyDirection::Forward
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Switches of a topic's primary that leader epochs shown through routers
/// can tell apart (7 bits above Kafka's epoch, one value kept spare). A
/// promotion or rollback beyond it is refused: detach and mirror afresh.
pub const MAX_PRIMARY_SWITCHES: u32 = 126;

/// What the fetcher must respect so the target broker stores batches as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetTopicSettings {
    /// `compression.type` of the target topic ("producer" when unset).
    pub compression_type: String,
    /// `max.message.bytes` of the target topic.
    pub max_message_bytes: usize,
    /// `cleanup.policy` contains "compact": filler records need keys.
    pub compacted: bool,
}

impl Default for TargetTopicSettings {
    fn default() -> Self {
        TargetTopicSettings {
            compression_type: "producer".into(),
            max_message_bytes: 1_048_588,
            compacted: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PartitionState {
    Syncing,
    InSync,
    Paused,
    Failed,
}

/// Half-open offset range `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    pub from: i64,
    pub to: i64,
}

/// Progress of one partition, written by its owning fetcher periodically
/// (not per batch) at `progress/<link>/<topic>/<partition>`. Kept when the
/// owner dies so status shows the last known position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionProgress {
    pub link: String,
    pub topic: String,
    pub partition: i32,
    pub state: PartitionState,
    pub owner: String,
    /// Which way the partition is copied. In the reverse mirror the
    /// `source_*` fields are the target's partition (copied from) and
    /// `target_log_end` the source's (copied to): lag and waits read the
    /// same either way.
    #[serde(default, skip_serializing_if = "is_forward")]
    pub direction: CopyDirection,
    pub source_log_start: i64,
    pub source_log_end: i64,
    pub target_log_end: i64,
    /// Ranges deleted by the source's retention before they were copied.
    #[serde(default)]
    pub lost: Vec<OffsetRange>,
    #[serde(default)]
    pub error: String,
    pub updated_at_ms: i64,
    #[serde(default)]
    pub bytes_copied: u64,
    #[serde(default)]
    pub records_copied: u64,
}

impl PartitionProgress {
    pub fn lag(&self) -> i64 {
        (self.source_log_end - self.target_log_end).max(0)
    }
}

/// Registration of a running fetcher at `members/fetcher/<id>` (under its lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetcherMember {
    pub id: String,
    /// gRPC address of its internal API.
    pub grpc_addr: String,
    pub started_at_ms: i64,
}

/// Registration of a running group-coordinator at
/// `members/group-coordinator/<id>` (under its lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCoordinatorMember {
    pub id: String,
    pub started_at_ms: i64,
}

/// Registration of a running router at `members/router/<node id>` (under
/// its lease): what Metadata advertises for that node id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterMember {
    /// Permanent Kafka node id (clients keep a connection per node id).
    pub node_id: i32,
    /// Host and port clients connect to.
    pub host: String,
    pub port: i32,
    pub started_at_ms: i64,
    /// The link it fronts.
    #[serde(default)]
    pub link: String,
    /// Address of its internal gRPC API (holds, group members, state).
    #[serde(default)]
    pub grpc_addr: String,
}

/// A producer id routers gave a client, and the producer it stands for on
/// each cluster: for an idempotent client allocated there on the first
/// write to it; for a transactional one initialised on both clusters by
/// the client's InitProducerId (so it fences older instances on both).
/// Stored at `producers/<link>/<client producer id>`, shared by every
/// router: a client retrying through another router reaches the same
/// upstream producer, and the broker de-duplicates the retry.
///
/// One upstream producer per [`generation`] (each period a cluster is a
/// topic's primary): a cluster that becomes the primary again after a
/// rollback still holds the old producer's last sequence per partition,
/// while the client's sequences went on on the other cluster meanwhile,
/// so writing with the old one would be refused as out of order. A
/// producer id the broker has never seen takes any sequence. A
/// transactional producer keeps one upstream producer per cluster (its
/// transactional id has one producer id there): after a rollback its
/// first write on a cluster it wrote before is refused as out of order,
/// an abortable error after which the client initialises again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerMapping {
    /// Generation 0: the source before any promotion.
    #[serde(default)]
    pub source: Option<UpstreamProducer>,
    /// Generation 1: the target after the first promotion.
    #[serde(default)]
    pub target: Option<UpstreamProducer>,
    /// Generations 2 and up (after a rollback, a promotion again, ...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub later: std::collections::BTreeMap<u32, UpstreamProducer>,
    pub created_at_ms: i64,
    /// When a router last noted the producer writing (at most hourly);
    /// 0 until then. A mapping unused for the expiry is removed.
    #[serde(default)]
    pub used_at_ms: i64,
    /// Set for a transactional client: its upstream producers are that
    /// transactional id's on each cluster, never allocated on a write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
}

impl ProducerMapping {
    pub fn get(&self, generation: u32) -> Option<UpstreamProducer> {
        if self.transactional_id.is_some() {
            return self.on(side_of_generation(generation));
        }
        match generation {
            0 => self.source,
            1 => self.target,
            g => self.later.get(&g).copied(),
        }
    }

    pub fn set(&mut self, generation: u32, upstream: UpstreamProducer) {
        match generation {
            0 => self.source = Some(upstream),
            1 => self.target = Some(upstream),
            g => {
                self.later.insert(g, upstream);
            }
        }
    }

    /// The first upstream producer on `side`'s cluster (a transactional
    /// client's only one there).
    pub fn on(&self, side: Side) -> Option<UpstreamProducer> {
        match side {
            Side::Source => self.source,
            Side::Target => self.target,
        }
    }

    /// Every upstream producer on `side`'s cluster, of any generation.
    pub fn on_side(&self, side: Side) -> impl Iterator<Item = UpstreamProducer> + '_ {
        let first = match side {
            Side::Source => self.source,
            Side::Target => self.target,
        };
        first.into_iter().chain(
            self.later
                .iter()
                .filter(move |(g, _)| side_of_generation(**g) == side)
                .map(|(_, u)| *u),
        )
    }

    /// When the producer was last known to be alive.
    pub fn last_alive_ms(&self) -> i64 {
        self.created_at_ms.max(self.used_at_ms)
    }
}

/// A producer id and epoch one cluster allocated (InitProducerId).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// A partition failure that needs an operator: fetchers do not retry it
/// until `mirror resume` clears it. Stored at `failures/<link>/<topic>/<partition>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionFailure {
    pub reason: String,
    pub at_ms: i64,
    pub owner: String,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transactional_mapping_has_one_producer_per_cluster_in_every_generation() {
        let (s, t) = (
            UpstreamProducer {
                producer_id: 1,
                producer_epoch: 4,
            },
            UpstreamProducer {
                producer_id: 9,
                producer_epoch: 0,
            },
        );
        let mut m = ProducerMapping {
            source: Some(s),
            target: Some(t),
            transactional_id: Some("copier".into()),
            ..ProducerMapping::default()
        };
        assert_eq!(
            (0..5).map(|g| m.get(g)).collect::<Vec<_>>(),
            [Some(s), Some(t), Some(s), Some(t), Some(s)]
        );
        // An idempotent one has a producer per generation.
        m.transactional_id = None;
        assert_eq!(m.get(2), None);
        // Stored documents without the field read as idempotent.
        let json = r#"{"source":null,"target":null,"created_at_ms":5}"#;
        let read: ProducerMapping = serde_json::from_str(json).unwrap();
        assert_eq!(read.transactional_id, None);
    }

    #[test]
    fn the_primary_moves_when_a_barrier_ends_not_when_it_starts() {
        for d in [Direction::Promote, Direction::Rollback] {
            assert_eq!(d.from_state().primary(), d.from_side());
            assert_eq!(d.barrier_state().primary(), d.from_side());
            assert_eq!(d.to_state().primary(), d.from_side().other());
        }
        assert_eq!(
            Direction::Rollback.to_state(),
            Direction::Promote.from_state()
        );
    }

    #[test]
    fn promotion_steps_keep_their_times_and_end_running() {
        let mut p = Promotion {
            id: "p1".into(),
            link: "l".into(),
            direction: Direction::Promote,
            topics: vec!["t".into()],
            groups: vec![],
            step: Step::Checking,
            steps: vec![StepTime {
                step: Step::Checking,
                started_at_ms: 100,
                took_ms: 0,
            }],
            leader: "o1".into(),
            started_at_ms: 100,
            outcome: String::new(),
            quiet_ends: Default::default(),
            stall_ms: 0,
        };
        p.enter(Step::Holding, 130);
        p.enter(Step::Switched, 180);
        assert!(p.switched() && p.is_running());
        p.enter(Step::Done, 200);
        assert!(!p.is_running());
        let took: Vec<_> = p.steps.iter().map(|s| (s.step, s.took_ms)).collect();
        assert_eq!(
            took,
            [
                (Step::Checking, 30),
                (Step::Holding, 50),
                (Step::Switched, 20)
            ]
        );
        let json = serde_json::to_string(&p).expect("json");
        assert_eq!(serde_json::from_str::<Promotion>(&json).expect("read"), p);
        p.enter(Step::Undone, 210);
        assert!(!p.switched());
    }

    fn topic(switches: u32) -> MirrorTopic {
        MirrorTopic {
            link: "l".into(),
            topic: "t".into(),
            partitions: 3,
            state: MirrorState::Mirroring,
            reason: String::new(),
            created_at_ms: 1,
            target: TargetTopicSettings::default(),
            switches,
        }
    }

    #[test]
    fn switches_are_written_only_once_the_primary_moved() {
        let never = serde_json::to_value(topic(0)).expect("json");
        assert!(never.get("switches").is_none(), "{never}");
        let back: MirrorTopic = serde_json::from_value(never).expect("read");
        assert_eq!(back.switches, 0);
        let moved = serde_json::to_value(topic(3)).expect("json");
        assert_eq!(moved["switches"], 3);
        assert_eq!(
            serde_json::from_value::<MirrorTopic>(moved).expect("read"),
            topic(3)
        );
    }
}
