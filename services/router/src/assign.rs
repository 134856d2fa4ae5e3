//! Which router leads a partition or coordinates a group: pure functions
//! over the live routers, so every router computes the same answer from
//! the same membership, and a router joining or leaving moves only its
//! share (rendezvous hashing).

/// FNV-1a, 64 bits, then mixed: fixed by definition, so routers of different builds
/// agree (std's hasher may change between releases).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low-entropy outputs for short keys would skew a max-of-weights
    // choice; a 64-bit finalizer (MurmurHash3's) spreads them.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The node id among `routers` with the highest weight for `key`; `None`
/// when there is no live router.
fn pick(routers: &[i32], key: &[&[u8]]) -> Option<i32> {
    routers.iter().copied().max_by_key(|id| {
        let id = id.to_be_bytes();
        let mut parts = Vec::with_capacity(key.len() + 1);
        parts.push(&id[..]);
        parts.extend_from_slice(key);
        // Ties (practically impossible) go to the higher node id.
        (fnv1a(&parts), i64::from(i32::from_be_bytes(id)))
    })
}

/// The router that leads `topic`/`partition`.
pub fn partition_leader(routers: &[i32], topic: &str, partition: i32) -> Option<i32> {
    pick(routers, &[b"p", topic.as_bytes(), &partition.to_be_bytes()])
}

/// What a FindCoordinator key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoordinatorKind {
    Group,
    Transaction,
}

impl CoordinatorKind {
    /// FindCoordinator's key type (0 group, 1 transaction).
    pub fn from_key_type(key_type: i8) -> Option<CoordinatorKind> {
        match key_type {
            0 => Some(CoordinatorKind::Group),
            1 => Some(CoordinatorKind::Transaction),
            _ => None,
        }
    }

    pub fn key_type(self) -> i8 {
        match self {
            CoordinatorKind::Group => 0,
            CoordinatorKind::Transaction => 1,
        }
    }
}

/// The router that coordinates a group or transactional id.
pub fn coordinator(routers: &[i32], kind: CoordinatorKind, key: &str) -> Option<i32> {
    let tag: &[u8] = match kind {
        CoordinatorKind::Group => b"g",
        CoordinatorKind::Transaction => b"t",
    };
    pick(routers, &[tag, key.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_answer_for_the_same_routers_in_any_order() {
        let a = [1, 2, 3];
        let b = [3, 1, 2];
        for p in 0..100 {
            assert_eq!(partition_leader(&a, "t", p), partition_leader(&b, "t", p));
        }
        assert_eq!(
            coordinator(&a, CoordinatorKind::Group, "g1"),
            coordinator(&b, CoordinatorKind::Group, "g1")
        );
        assert_eq!(partition_leader(&[], "t", 0), None);
    }

    #[test]
    fn load_spreads_and_a_leaving_router_moves_only_its_share() {
        let all = [1, 2, 3];
        let mut count = std::collections::HashMap::new();
        for p in 0..3000 {
            *count
                .entry(partition_leader(&all, "orders", p).unwrap())
                .or_insert(0) += 1;
        }
        for id in all {
            let n = count[&id];
            assert!((800..1200).contains(&n), "router {id} leads {n} of 3000");
        }
        let without_2 = [1, 3];
        for p in 0..3000 {
            let before = partition_leader(&all, "orders", p).unwrap();
            let after = partition_leader(&without_2, "orders", p).unwrap();
            if before != 2 {
                assert_eq!(before, after, "partition {p} moved off a live router");
            }
        }
    }

    #[test]
    fn groups_and_transactions_are_keyed_apart() {
        let routers: Vec<i32> = (0..16).collect();
        let differ = (0..200)
            .filter(|i| {
                let k = format!("k{i}");
                coordinator(&routers, CoordinatorKind::Group, &k)
                    != coordinator(&routers, CoordinatorKind::Transaction, &k)
            })
            .count();
        assert!(differ > 100, "{differ}");
    }
}
