//! Leader epochs as clients see them through routers.
//!
//! Clients drop metadata whose leader epoch is lower than the one they hold
//! (kafka-facts.md), and the target's epochs are unrelated to the source's,
//! so a shown epoch carries a generation in its top bits, above the
//! upstream epoch (24 bits). The generation comes from the topic's count of
//! primary switches (`MirrorTopic::switches`): while the source is the
//! primary it is the count (0 before any promotion, 2 after a promotion and
//! a rollback), and the target's is the count while the target is the
//! primary (1, 3, ...). So the source's generations are even and the
//! target's odd, and each switch shows the new primary's epochs above all
//! the old one's: a topic's epochs never go down when its primary moves,
//! either way, and do not change when routers come and go (leadership
//! moves between routers at the same epoch, which clients accept). Before
//! any promotion, shown epochs are the source's own, so nothing changes
//! for clients.
//!
//! A client's epoch goes upstream only to the cluster it came from (the
//! generation's parity says which); to the other one it goes as -1 ("no
//! epoch"), with which a broker skips its fencing check (the router has
//! already sent the request to the current leader).

use cutover_model::MAX_PRIMARY_SWITCHES;

use crate::topics::Side;

const UPSTREAM_BITS: u32 = 24;
const UPSTREAM_MAX: i32 = (1 << UPSTREAM_BITS) - 1;
/// Generations fit in the 7 bits above the upstream epoch.
const GENERATION_MAX: u32 = (i32::MAX >> UPSTREAM_BITS) as u32;
const _: () = assert!(MAX_PRIMARY_SWITCHES < GENERATION_MAX);

/// Whose epochs, of a topic whose primary has switched `switches` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub side: Side,
    pub switches: u32,
}

impl View {
    /// A topic that was never promoted (and every topic that is not
    /// mirrored).
    pub fn unswitched(side: Side) -> View {
        View { side, switches: 0 }
    }

    /// The generation `side`'s epochs are shown with (see
    /// [`cutover_model::generation`]): above all the old primary's.
    pub fn generation(self) -> u32 {
        cutover_model::generation(self.side, self.switches)
    }
}

/// The epoch a client is shown for epoch `upstream` of `view`'s cluster.
/// "No epoch" (negative) stays as it is; an upstream epoch beyond 24 bits
/// is shown as the largest one (and never sent back upstream).
pub fn shown(view: View, upstream: i32) -> i32 {
    if upstream < 0 {
        return upstream;
    }
    ((view.generation() as i32) << UPSTREAM_BITS) | upstream.min(UPSTREAM_MAX)
}

/// The cluster a shown epoch came from (`None` for "no epoch").
pub fn side_of(shown: i32) -> Option<Side> {
    if shown < 0 {
        return None;
    }
    Some(cutover_model::side_of_generation(
        (shown >> UPSTREAM_BITS) as u32,
    ))
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

    fn v(side: Side, switches: u32) -> View {
        View { side, switches }
    }

    #[test]
    fn source_epochs_are_shown_as_they_are_before_any_promotion() {
        assert_eq!(shown(View::unswitched(Side::Source), 7), 7);
        assert_eq!(shown(View::unswitched(Side::Source), -1), -1);
        // Any target epoch is above any source epoch.
        assert!(
            shown(View::unswitched(Side::Target), 0)
                > shown(View::unswitched(Side::Source), UPSTREAM_MAX)
        );
        assert!(
            shown(View::unswitched(Side::Target), 3) > shown(View::unswitched(Side::Target), 2)
        );
        assert_eq!(shown(View::unswitched(Side::Target), -1), -1);
    }

    #[test]
    fn the_primarys_epochs_go_up_at_every_switch_either_way() {
        // Promotion, rollback, promotion, rollback...: the primary after
        // each switch is shown above everything shown before it.
        let mut highest_before = shown(v(Side::Source, 0), UPSTREAM_MAX - 1);
        for switches in 1..=MAX_PRIMARY_SWITCHES {
            let primary = if switches % 2 == 1 {
                Side::Target
            } else {
                Side::Source
            };
            let lowest_now = shown(v(primary, switches), 0);
            assert!(lowest_now > highest_before, "switch {switches}");
            // The other cluster's epochs (answers about old epochs) stay
            // below the primary's.
            let other = if primary == Side::Target {
                Side::Source
            } else {
                Side::Target
            };
            assert!(
                shown(v(other, switches), UPSTREAM_MAX - 1) < lowest_now,
                "switch {switches}"
            );
            highest_before = shown(v(primary, switches), UPSTREAM_MAX - 1);
        }
    }

    #[test]
    fn a_clients_epoch_goes_back_only_to_the_cluster_it_came_from() {
        for switches in [0, 1, 2, 3, 10, MAX_PRIMARY_SWITCHES] {
            for side in [Side::Source, Side::Target] {
                for e in [0, 1, 5, 1000, UPSTREAM_MAX - 1] {
                    let s = shown(v(side, switches), e);
                    assert_eq!(side_of(s), Some(side));
                    assert_eq!(upstream(side, s), e);
                }
            }
            assert_eq!(
                upstream(Side::Target, shown(v(Side::Source, switches), 5)),
                -1
            );
            assert_eq!(
                upstream(Side::Source, shown(v(Side::Target, switches), 5)),
                -1
            );
        }
        // An epoch from before a rollback is still the source's.
        assert_eq!(upstream(Side::Source, shown(v(Side::Source, 0), 9)), 9);
        assert_eq!(upstream(Side::Source, -1), -1);
        // A saturated epoch goes as "no epoch".
        assert_eq!(
            upstream(Side::Source, shown(v(Side::Source, 0), i32::MAX)),
            -1
        );
        assert_eq!(side_of(-1), None);
    }

    #[test]
    fn switches_beyond_the_limit_keep_the_last_generations() {
        let last = MAX_PRIMARY_SWITCHES;
        assert_eq!(
            shown(v(Side::Source, last + 7), 3),
            shown(v(Side::Source, last), 3)
        );
        assert!(shown(v(Side::Target, u32::MAX), UPSTREAM_MAX) > 0);
    }
}
