//! Which of the groups a group-coordinator owns it promotes now: pure, from
//! the orchestrator's listing (each group's state and evidence).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use cutover_model::keys;
use cutover_proto::v1 as pb;

/// The groups of `link` in `listed` to promote now: owned here (their
/// resource in `owned`), set to automatic promotion, at home on the
/// source with every member coming through the routers (`ready`), and
/// not waiting out a failed attempt (`retry_at`, by resource).
pub fn to_promote(
    link: &str,
    listed: &[pb::MirrorGroup],
    owned: &BTreeSet<String>,
    retry_at: &HashMap<String, Instant>,
    now: Instant,
) -> Vec<String> {
    listed
        .iter()
        .filter(|g| {
            let resource = keys::group_resource(link, &g.group);
            owned.contains(&resource)
                && g.auto_promote
                && g.ready
                && g.state == pb::MirrorState::Mirroring as i32
                && retry_at.get(&resource).is_none_or(|at| *at <= now)
        })
        .map(|g| g.group.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn group(
        name: &str,
        state: pb::MirrorState,
        auto_promote: bool,
        ready: bool,
    ) -> pb::MirrorGroup {
        pb::MirrorGroup {
            link: "l".into(),
            group: name.into(),
            state: state as i32,
            auto_promote,
            ready,
            ..Default::default()
        }
    }

    #[test]
    fn only_owned_automatic_ready_mirroring_groups_past_their_retry_are_promoted() {
        use pb::MirrorState::*;
        let listed = [
            group("go", Mirroring, true, true),
            group("not-mine", Mirroring, true, true),
            group("manual", Mirroring, false, true),
            group("direct-member", Mirroring, true, false),
            group("promoted", Promoted, true, false),
            group("moving", Promoting, true, true),
            group("refused-lately", Mirroring, true, true),
            group("refused-long-ago", Mirroring, true, true),
        ];
        let owned: BTreeSet<String> = listed
            .iter()
            .filter(|g| g.group != "not-mine")
            .map(|g| keys::group_resource("l", &g.group))
            .collect();
        let now = Instant::now();
        let retry_at = HashMap::from([
            (
                keys::group_resource("l", "refused-lately"),
                now + Duration::from_secs(5),
            ),
            (keys::group_resource("l", "refused-long-ago"), now),
        ]);
        assert_eq!(
            to_promote("l", &listed, &owned, &retry_at, now),
            ["go", "refused-long-ago"]
        );
        assert!(to_promote("other", &listed, &owned, &retry_at, now).is_empty());
    }
}
