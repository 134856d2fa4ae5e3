//! Fair sharing of resources among live members, as a pure function so
//! that every member, given the same view, computes compatible plans.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What one member should do next: claim these unowned resources, release
/// these of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharePlan {
    pub claim: Vec<String>,
    pub release: Vec<String>,
}

impl SharePlan {
    pub fn is_empty(&self) -> bool {
        self.claim.is_empty() && self.release.is_empty()
    }
}

/// Targets: with R resources and M members, `R % M` members get
/// `ceil(R/M)` and the rest `floor(R/M)`. The ceiling slots go to the
/// members that own the most already (ties by member id), which keeps a
/// balanced assignment stable and moves as little as possible.
fn targets<'a>(
    members: &BTreeSet<&'a str>,
    counts: &BTreeMap<&'a str, usize>,
    r: usize,
) -> BTreeMap<&'a str, usize> {
    let m = members.len();
    let (base, extra) = (r / m, r % m);
    let mut order: Vec<&str> = members.iter().copied().collect();
    order.sort_by_key(|id| (Reverse(counts.get(id).copied().unwrap_or(0)), *id));
    order
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, if i < extra { base + 1 } else { base }))
        .collect()
}

/// Plans `me`'s next step toward every live member owning `floor(R/M)` or
/// `ceil(R/M)` of `resources`.
///
/// - Claims only unowned resources (an owner that is not a live member
///   still blocks a claim: its key lives until its lease expires).
///   Members below target split the unowned resources in member-id order,
///   so plans computed from the same view never claim the same resource.
/// - Releases only when another live member is below its target, and never
///   below `me`'s own target.
/// - Always releases resources `me` owns that are no longer in `resources`.
/// - Plans nothing (beyond that) when `me` is not among `members`.
pub fn plan_share(
    me: &str,
    members: &[String],
    resources: &[String],
    owners: &HashMap<String, String>,
) -> SharePlan {
    let members: BTreeSet<&str> = members.iter().map(String::as_str).collect();
    let resources: BTreeSet<&str> = resources.iter().map(String::as_str).collect();

    let mut plan = SharePlan::default();
    let mut stale: Vec<&String> = owners
        .iter()
        .filter(|(res, owner)| owner.as_str() == me && !resources.contains(res.as_str()))
        .map(|(res, _)| res)
        .collect();
    stale.sort();
    plan.release.extend(stale.into_iter().cloned());

    if !members.contains(me) || resources.is_empty() {
        return plan;
    }

    let mut counts: BTreeMap<&str, usize> = members.iter().map(|m| (*m, 0)).collect();
    let mut mine: Vec<&str> = Vec::new();
    let mut unowned: Vec<&str> = Vec::new();
    for res in &resources {
        match owners.get(*res) {
            None => unowned.push(res),
            Some(owner) => {
                if let Some(c) = counts.get_mut(owner.as_str()) {
                    *c += 1;
                }
                if owner == me {
                    mine.push(res);
                }
            }
        }
    }
    let targets = targets(&members, &counts, resources.len());
    let below =
        |id: &str| counts.get(id).copied().unwrap_or(0) < targets.get(id).copied().unwrap_or(0);
    let my_count = mine.len();
    let my_target = targets.get(me).copied().unwrap_or(0);

    if my_count < my_target {
        let mut offset = 0usize;
        for id in &members {
            let deficit = targets
                .get(id)
                .copied()
                .unwrap_or(0)
                .saturating_sub(counts.get(id).copied().unwrap_or(0));
            if *id == me {
                let start = offset.min(unowned.len());
                let end = (offset + deficit).min(unowned.len());
                plan.claim
                    .extend(unowned[start..end].iter().map(|r| (*r).to_owned()));
                break;
            }
            offset += deficit;
        }
    } else if my_count > my_target && members.iter().any(|id| *id != me && below(id)) {
        // Give up the last ones by name: any deterministic choice works.
        let excess = my_count - my_target;
        plan.release
            .extend(mine[my_count - excess..].iter().map(|r| (*r).to_owned()));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn own(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(r, o)| ((*r).to_owned(), (*o).to_owned()))
            .collect()
    }

    #[test]
    fn single_member_claims_everything() {
        let plan = plan_share("a", &s(&["a"]), &s(&["r1", "r2", "r3"]), &HashMap::new());
        assert_eq!(plan.claim, s(&["r1", "r2", "r3"]));
        assert!(plan.release.is_empty());
    }

    #[test]
    fn members_split_unowned_without_overlap() {
        let members = s(&["a", "b", "c"]);
        let resources = s(&["r0", "r1", "r2", "r3", "r4", "r5", "r6"]);
        let owners = HashMap::new();
        let plans: Vec<SharePlan> = members
            .iter()
            .map(|m| plan_share(m, &members, &resources, &owners))
            .collect();
        let mut all: Vec<String> = plans.iter().flat_map(|p| p.claim.clone()).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(
            all.len(),
            n,
            "two members planned to claim the same resource"
        );
        assert_eq!(n, 7);
        let sizes: Vec<usize> = plans.iter().map(|p| p.claim.len()).collect();
        // Ties broken by id: `a` gets the one ceiling slot.
        assert_eq!(sizes, vec![3, 2, 2]);
    }

    #[test]
    fn newcomer_takes_over_from_the_busiest() {
        let members = s(&["a", "b"]);
        let resources = s(&["r0", "r1", "r2", "r3"]);
        let owners = own(&[("r0", "a"), ("r1", "a"), ("r2", "a"), ("r3", "a")]);
        let a = plan_share("a", &members, &resources, &owners);
        assert_eq!(a.release, s(&["r2", "r3"]));
        assert!(a.claim.is_empty());
        let b = plan_share("b", &members, &resources, &owners);
        assert!(b.is_empty(), "nothing is unowned yet: {b:?}");
    }

    #[test]
    fn never_releases_without_someone_below_target() {
        // 5 over 2: 3 and 2 is already fair.
        let members = s(&["a", "b"]);
        let resources = s(&["r0", "r1", "r2", "r3", "r4"]);
        let owners = own(&[
            ("r0", "a"),
            ("r1", "a"),
            ("r2", "a"),
            ("r3", "b"),
            ("r4", "b"),
        ]);
        assert!(plan_share("a", &members, &resources, &owners).is_empty());
        assert!(plan_share("b", &members, &resources, &owners).is_empty());
    }

    #[test]
    fn owner_that_is_not_a_member_still_blocks_claims() {
        let members = s(&["a"]);
        let resources = s(&["r0", "r1"]);
        let owners = own(&[("r0", "dead")]);
        let plan = plan_share("a", &members, &resources, &owners);
        assert_eq!(plan.claim, s(&["r1"]));
    }

    #[test]
    fn releases_resources_that_no_longer_exist() {
        let members = s(&["a"]);
        let resources = s(&["r0"]);
        let owners = own(&[("r0", "a"), ("gone", "a"), ("other", "b")]);
        let plan = plan_share("a", &members, &resources, &owners);
        assert_eq!(plan.release, s(&["gone"]));
        assert!(plan.claim.is_empty());
    }

    #[test]
    fn non_member_plans_nothing() {
        let plan = plan_share("x", &s(&["a"]), &s(&["r0"]), &HashMap::new());
        assert!(plan.is_empty());
    }

    #[test]
    fn no_members_or_resources_is_a_no_op() {
        assert!(plan_share("a", &[], &s(&["r0"]), &HashMap::new()).is_empty());
        assert!(plan_share("a", &s(&["a"]), &[], &HashMap::new()).is_empty());
    }

    /// Applies `me`'s plan to `owners`, checking the plan's own promises.
    fn apply(
        me: &str,
        plan: &SharePlan,
        owners: &mut HashMap<String, String>,
        floor: usize,
        resources: &[String],
    ) -> Result<(), TestCaseError> {
        let mine_before = resources
            .iter()
            .filter(|r| owners.get(*r).map(String::as_str) == Some(me))
            .count();
        let released_live = plan
            .release
            .iter()
            .filter(|r| resources.contains(r))
            .count();
        prop_assert!(
            plan.claim.is_empty() || released_live == 0,
            "{me} both claims and releases: {plan:?}"
        );
        prop_assert!(
            released_live == 0 || mine_before - released_live >= floor,
            "{me} released below its fair share"
        );
        for r in &plan.release {
            prop_assert_eq!(
                owners.get(r).map(String::as_str),
                Some(me),
                "released a resource it does not own"
            );
            owners.remove(r);
        }
        for r in &plan.claim {
            prop_assert!(
                !owners.contains_key(r),
                "{} claimed owned resource {}",
                me,
                r
            );
            owners.insert(r.clone(), me.to_owned());
        }
        Ok(())
    }

    fn assert_fair(
        members: &[String],
        resources: &[String],
        owners: &HashMap<String, String>,
    ) -> Result<(), TestCaseError> {
        let (floor, ceil) = (
            resources.len() / members.len(),
            resources.len().div_ceil(members.len()),
        );
        for r in resources {
            prop_assert!(owners.contains_key(r), "{} is unowned", r);
        }
        for m in members {
            let n = owners.values().filter(|o| *o == m).count();
            prop_assert!(
                n >= floor && n <= ceil,
                "{} owns {}, fair is {}..={}",
                m,
                n,
                floor,
                ceil
            );
        }
        for m in members {
            let plan = plan_share(m, members, resources, owners);
            prop_assert!(plan.is_empty(), "not stable: {} still plans {:?}", m, plan);
        }
        Ok(())
    }

    fn scenario() -> impl Strategy<
        Value = (
            Vec<String>,
            Vec<String>,
            HashMap<String, String>,
            Vec<usize>,
        ),
    > {
        (1usize..7, 0usize..40).prop_flat_map(|(m, r)| {
            let members: Vec<String> = (0..m).map(|i| format!("m{i}")).collect();
            let resources: Vec<String> = (0..r).map(|i| format!("t/{i}")).collect();
            // Initial owner per resource: none, a member, or a dead process.
            let owner_idx = prop::collection::vec(0..(m + 3), r);
            let order = Just((0..m).collect::<Vec<usize>>()).prop_shuffle();
            (Just(members), Just(resources), owner_idx, order).prop_map(
                |(members, resources, idx, order)| {
                    let mut owners = HashMap::new();
                    for (res, i) in resources.iter().zip(idx) {
                        if i < members.len() {
                            owners.insert(res.clone(), members[i].clone());
                        } else if i == members.len() {
                            owners.insert(res.clone(), "dead".to_owned());
                        }
                    }
                    (members, resources, owners, order)
                },
            )
        })
    }

    fn drop_dead(owners: &mut HashMap<String, String>, members: &[String]) {
        owners.retain(|_, o| members.contains(o));
    }

    proptest! {
        /// Members acting one after another, each on a fresh view.
        #[test]
        fn sequential_plans_converge_to_fair_shares((members, resources, mut owners, order) in scenario()) {
            let floor = resources.len() / members.len();
            for round in 0..6 {
                for &i in &order {
                    let me = &members[i];
                    let plan = plan_share(me, &members, &resources, &owners);
                    apply(me, &plan, &mut owners, floor, &resources)?;
                }
                // Leases of dead owners have expired by the next round.
                if round == 0 {
                    drop_dead(&mut owners, &members);
                }
            }
            assert_fair(&members, &resources, &owners)?;
        }

        /// Members acting at once on the same (stale) view; a claim of
        /// something already taken fails, as `try_claim` would.
        #[test]
        fn concurrent_plans_converge_to_fair_shares((members, resources, mut owners, _order) in scenario()) {
            let floor = resources.len() / members.len();
            for round in 0..8 {
                let view = owners.clone();
                let plans: Vec<(String, SharePlan)> = members
                    .iter()
                    .map(|m| (m.clone(), plan_share(m, &members, &resources, &view)))
                    .collect();
                let mut claimed = std::collections::HashSet::new();
                for (me, plan) in &plans {
                    for r in &plan.claim {
                        prop_assert!(!view.contains_key(r), "{} planned to claim owned {}", me, r);
                        prop_assert!(claimed.insert(r.clone()), "{} claimed twice in one view", r);
                    }
                }
                for (me, plan) in &plans {
                    apply(me, plan, &mut owners, floor, &resources)?;
                }
                if round == 0 {
                    drop_dead(&mut owners, &members);
                }
            }
            assert_fair(&members, &resources, &owners)?;
        }
    }
}
