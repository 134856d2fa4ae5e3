//! Which cluster each client transaction runs on.
//!
//! A transaction never spans the clusters: it runs where the topics it
//! writes (and the group whose offsets it sends) have their primary when
//! it starts, and stays there until it ends, also when a promotion flips
//! those primaries meanwhile (the orchestrator waits for the set's open
//! transactions to end before it switches, and holds new ones meanwhile).
//! The router that coordinates a transactional id for clients remembers
//! where its open transaction runs; a router that took the id over without
//! that memory asks both clusters (DescribeTransactions).
//!
//! A request that would make a transaction span the clusters is refused
//! with an error the clients treat as abortable: the transaction is
//! aborted and may be tried again (after the promotion, all of it runs on
//! the new primary). TOPIC_AUTHORIZATION_FAILED for partitions and
//! GROUP_AUTHORIZATION_FAILED for offsets are the codes Java and librdkafka
//! clients abort on without giving up; the router logs the real reason.

use std::collections::HashMap;
use std::sync::Mutex;

use cutover_kafka::codes;

use crate::topics::Side;

/// What this router knows of a transactional client's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// One is open on this cluster.
    Open(Side),
    /// None is open (after InitProducerId, or once EndTxn was answered).
    Closed,
    /// None is open upstream: the router refused what it would have
    /// begun with (the client aborts it).
    Refused,
}

/// What the router does with a transaction request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnRoute {
    /// Sent to this cluster's coordinator.
    To(Side),
    /// Answered by the router with this code.
    Answer(i16),
}

/// An EndTxn of a transaction whose first adds the router refused:
/// nothing of it reached a cluster, so its abort is done (a coordinator
/// would refuse it, having no transaction), and a commit is refused as
/// the coordinator would.
pub fn end_of_refused(commit: bool) -> TxnRoute {
    if commit {
        TxnRoute::Answer(codes::INVALID_TXN_STATE)
    } else {
        TxnRoute::Answer(0)
    }
}

/// Transactions remembered at most; beyond it the memory starts over (a
/// forgotten one is asked of the clusters).
const LIMIT: usize = 100_000;

/// The transactions of the clients this router coordinates, by client
/// producer id.
#[derive(Default)]
pub struct Transactions {
    known: Mutex<HashMap<i64, Known>>,
}

impl Transactions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Known>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, producer_id: i64) -> Option<Known> {
        self.lock().get(&producer_id).copied()
    }

    pub fn set(&self, producer_id: i64, known: Known) {
        let mut map = self.lock();
        if map.len() >= LIMIT && !map.contains_key(&producer_id) {
            map.clear();
        }
        map.insert(producer_id, known);
    }
}

/// Why a request cannot join its transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Spanning {
    #[error("its topics have their primary on different clusters")]
    Mixed,
    #[error("the transaction already runs on the {0} cluster, the request's primary is the {1}")]
    Elsewhere(&'static str, &'static str),
}

/// The cluster a request that adds to a transaction goes to: where the
/// primaries of what it adds are (`wanted`, one entry per topic or the
/// group's home), which must be where the open transaction runs, if one
/// does.
pub fn side_for_add(wanted: &[Side], open: Option<Side>) -> Result<Side, Spanning> {
    let first = wanted.first().copied().unwrap_or(Side::Source);
    if wanted.iter().any(|s| *s != first) {
        return Err(Spanning::Mixed);
    }
    match open {
        Some(o) if o != first => Err(Spanning::Elsewhere(o.name(), first.name())),
        _ => Ok(first),
    }
}

/// The error code for a refused add: abortable in the clients.
pub fn refusal_code(adds_partitions: bool) -> i16 {
    if adds_partitions {
        codes::TOPIC_AUTHORIZATION_FAILED
    } else {
        codes::GROUP_AUTHORIZATION_FAILED
    }
}

/// A transaction's state on one cluster as DescribeTransactions showed it
/// for the client's upstream producer there (`None`: another producer's,
/// or none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub state: String,
}

impl Seen {
    pub fn is_open(&self) -> bool {
        matches!(
            self.state.as_str(),
            "Ongoing" | "PrepareCommit" | "PrepareAbort"
        )
    }

    fn has_ended(&self) -> bool {
        matches!(self.state.as_str(), "CompleteCommit" | "CompleteAbort")
    }
}

/// Where a transaction runs, by what each cluster showed: the one where it
/// is open. For an EndTxn with none open (a retry of one already
/// answered), the one where the last one ended, so the retry gets that
/// answer again; the target when both show one (it is written to later).
pub fn seen_side(source: Option<&Seen>, target: Option<&Seen>) -> (Option<Side>, Side) {
    let open = if target.is_some_and(Seen::is_open) {
        Some(Side::Target)
    } else if source.is_some_and(Seen::is_open) {
        Some(Side::Source)
    } else {
        None
    };
    let ended = if target.is_some_and(Seen::has_ended) {
        Side::Target
    } else {
        Side::Source
    };
    (open, open.unwrap_or(ended))
}

/// Hold keys (one `Holds` for the transaction requests of a barrier):
/// partitions added to transactions, by topic.
pub fn add_topic(topic: &str) -> String {
    format!("add-partitions/{topic}")
}

/// Offsets added to transactions, by group.
pub fn add_group(group: &str) -> String {
    format!("add-offsets/{group}")
}

/// Offsets sent in transactions (TxnOffsetCommit), by group.
pub fn commit_group(group: &str) -> String {
    format!("txn-offset-commit/{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_stays_on_one_cluster() {
        use Side::*;
        assert_eq!(side_for_add(&[Source, Source], None), Ok(Source));
        assert_eq!(side_for_add(&[Target], Some(Target)), Ok(Target));
        assert_eq!(side_for_add(&[], None), Ok(Source));
        assert_eq!(side_for_add(&[Source, Target], None), Err(Spanning::Mixed));
        assert_eq!(
            side_for_add(&[Target], Some(Source)),
            Err(Spanning::Elsewhere("source", "target"))
        );
        assert_ne!(refusal_code(true), refusal_code(false));
        assert_eq!(end_of_refused(false), TxnRoute::Answer(0));
        assert_eq!(
            end_of_refused(true),
            TxnRoute::Answer(codes::INVALID_TXN_STATE)
        );
    }

    #[test]
    fn the_clusters_say_where_a_forgotten_transaction_runs() {
        let s = |state: &str| Seen {
            state: state.to_owned(),
        };
        use Side::*;
        assert_eq!(
            seen_side(Some(&s("Ongoing")), Some(&s("CompleteCommit"))),
            (Some(Source), Source)
        );
        assert_eq!(
            seen_side(Some(&s("CompleteAbort")), Some(&s("PrepareCommit"))),
            (Some(Target), Target)
        );
        assert_eq!(
            seen_side(Some(&s("CompleteCommit")), Some(&s("Empty"))),
            (None, Source)
        );
        assert_eq!(
            seen_side(Some(&s("CompleteCommit")), Some(&s("CompleteAbort"))),
            (None, Target)
        );
        assert_eq!(seen_side(None, None), (None, Source));
        assert_ne!(add_topic("x"), add_group("x"));
        assert_ne!(add_group("x"), commit_group("x"));
    }
}
