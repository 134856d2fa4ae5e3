//! Leader epochs as clients see them through routers.
//!
//! Clients drop metadata whose leader epoch is lower than the one they hold
//! (kafka-facts.md), and the target's epochs are unrelated to the source's,
//! so a shown epoch carries the cluster it came from in its top bits: the
//! source's generation is 0 and the target's 1, each above the upstream
//! epoch (24 bits). A topic's epochs therefore never go down when its
//! primary moves to the target, and do not change when routers come and
//! go (leadership moves between routers at the same epoch, which clients
//! accept). While the source is the primary, shown epochs are the
//! source's own, so nothing changes for clients before a promotion.
//!
//! A client's epoch goes upstream only to the cluster it came from; to the
//! other one it goes as -1 ("no epoch"), with which a broker skips its
//! fencing check (the router has already sent the request to the current
//! leader). Rollback (a later promotion back to the source) will need a
//! third generation: the generation will then come from the topic's count
//! of promotions rather than from the side.

use crate::topics::Side;

const UPSTREAM_BITS: u32 = 24;
const UPSTREAM_MAX: i32 = (1 << UPSTREAM_BITS) - 1;

fn generation(side: Side) -> i32 {
    match side {
        Side::Source => 0,
        Side::Target => 1,
    }
}

/// The epoch a client is shown for epoch `upstream` of `side`'s cluster.
/// "No epoch" (negative) stays as it is; an upstream epoch beyond 24 bits
/// is shown as the largest one (and never sent back upstream).
pub fn shown(side: Side, upstream: i32) -> i32 {
    if upstream < 0 {
        return upstream;
    }
    (generation(side) << UPSTREAM_BITS) | upstream.min(UPSTREAM_MAX)
}

/// The cluster a shown epoch came from (`None` for "no epoch" or one no
/// router shows).
pub fn side_of(shown: i32) -> Option<Side> {
    if shown < 0 {
        return None;
    }
    match shown >> UPSTREAM_BITS {
        0 => Some(Side::Source),
        1 => Some(Side::Target),
        _ => None,
    }
}

/// The epoch to send to `side` for epoch `shown` from a client: the
/// upstream one if it came from that cluster, else -1.
pub fn upstream(side: Side, shown: i32) -> i32 {
    match side_of(shown) {
        Some(s) if s == side && shown & UPSTREAM_MAX != UPSTREAM_MAX => shown & UPSTREAM_MAX,
        _ => -1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_epochs_are_shown_as_they_are_and_target_epochs_above_them() {
        assert_eq!(shown(Side::Source, 7), 7);
        assert_eq!(shown(Side::Source, -1), -1);
        // Any target epoch is above any source epoch.
        assert!(shown(Side::Target, 0) > shown(Side::Source, UPSTREAM_MAX));
        assert!(shown(Side::Target, 3) > shown(Side::Target, 2));
        assert_eq!(shown(Side::Target, -1), -1);
    }

    #[test]
    fn a_clients_epoch_goes_back_only_to_the_cluster_it_came_from() {
        for side in [Side::Source, Side::Target] {
            for e in [0, 1, 5, 1000, UPSTREAM_MAX - 1] {
                let s = shown(side, e);
                assert_eq!(side_of(s), Some(side));
                assert_eq!(upstream(side, s), e);
            }
        }
        assert_eq!(upstream(Side::Target, shown(Side::Source, 5)), -1);
        assert_eq!(upstream(Side::Source, shown(Side::Target, 5)), -1);
        assert_eq!(upstream(Side::Source, -1), -1);
        // An epoch no router shows, and a saturated one, go as "no epoch".
        assert_eq!(upstream(Side::Source, 5 << UPSTREAM_BITS), -1);
        assert_eq!(side_of(i32::MAX), None);
        assert_eq!(upstream(Side::Source, shown(Side::Source, i32::MAX)), -1);
    }
}
