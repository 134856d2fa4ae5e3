//! What a mirrored partition must look like on the target, worked out from
//! the source with real consumers only (no Cutover code): at every offset
//! the source holds a committed record, an aborted record, or nothing a
//! consumer sees (a transaction marker or a compaction hole); the target
//! must hold the committed record unchanged, and a filler everywhere else.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::clients::{read_partition_isolated, watermarks, Isolation};
use crate::records::{first_difference, ConsumedRecord};

/// The header every filler record carries; its value says why.
pub const FILLER_HEADER: &str = "cutover.filler";

/// What the source holds at one offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEntry {
    Committed(ConsumedRecord),
    /// Data of an aborted transaction (seen read_uncommitted only).
    Aborted,
    /// Seen by no consumer: a control marker or a compaction hole.
    Invisible,
}

/// One source partition, offset by offset, from `low` to `high`.
#[derive(Debug, Clone)]
pub struct SourceLayout {
    pub low: i64,
    pub high: i64,
    pub entries: BTreeMap<i64, SourceEntry>,
}

impl SourceLayout {
    /// Reads `[low, high)` of the partition twice, read_uncommitted and
    /// read_committed (the partition must have no open transaction).
    pub fn read(bootstrap: &str, topic: &str, partition: i32) -> Result<SourceLayout> {
        let (low, high) = watermarks(bootstrap, topic, partition)?;
        let timeout = Duration::from_secs(60);
        let all = read_partition_isolated(
            bootstrap,
            topic,
            partition,
            low,
            high,
            Isolation::ReadUncommitted,
            timeout,
        )?;
        let committed = read_partition_isolated(
            bootstrap,
            topic,
            partition,
            low,
            high,
            Isolation::ReadCommitted,
            timeout,
        )?;
        let mut entries: BTreeMap<i64, SourceEntry> =
            (low..high).map(|o| (o, SourceEntry::Invisible)).collect();
        for r in &all {
            entries.insert(r.offset, SourceEntry::Aborted);
        }
        for r in committed {
            if !matches!(entries.get(&r.offset), Some(SourceEntry::Aborted)) {
                bail!(
                    "{topic}/{partition}: offset {} seen read_committed but not read_uncommitted",
                    r.offset
                );
            }
            entries.insert(r.offset, SourceEntry::Committed(r));
        }
        Ok(SourceLayout { low, high, entries })
    }

    pub fn committed(&self) -> impl Iterator<Item = &ConsumedRecord> {
        self.entries.values().filter_map(|e| match e {
            SourceEntry::Committed(r) => Some(r),
            _ => None,
        })
    }

    pub fn offsets_of(&self, want: fn(&SourceEntry) -> bool) -> Vec<i64> {
        self.entries
            .iter()
            .filter(|(_, e)| want(e))
            .map(|(o, _)| *o)
            .collect()
    }

    pub fn aborted(&self) -> Vec<i64> {
        self.offsets_of(|e| matches!(e, SourceEntry::Aborted))
    }

    pub fn invisible(&self) -> Vec<i64> {
        self.offsets_of(|e| matches!(e, SourceEntry::Invisible))
    }
}

/// The filler reason of a record (`cutover.filler` header), if it is one.
pub fn filler_reason(r: &ConsumedRecord) -> Option<String> {
    r.headers
        .iter()
        .find(|h| h.key == FILLER_HEADER)
        .map(|h| String::from_utf8_lossy(h.value.as_deref().unwrap_or_default()).into_owned())
}

/// [`check_target`] for a compacted topic whose target compacts too: the
/// target's own cleaner may have removed a record at an offset, but only a
/// record compaction may remove, a version of a key the target also holds
/// later, a tombstone, or a filler with a later filler (fillers of a
/// compacted topic share one key).
pub fn check_target_compacted(layout: &SourceLayout, target: &[ConsumedRecord]) -> Result<u64> {
    let last_by_key: BTreeMap<Option<&[u8]>, i64> = target
        .iter()
        .map(|r| (r.key.as_deref(), r.offset))
        .collect();
    let by_offset: BTreeMap<i64, &ConsumedRecord> = target.iter().map(|r| (r.offset, r)).collect();
    for (offset, entry) in &layout.entries {
        if by_offset.contains_key(offset) {
            continue;
        }
        let superseded = match entry {
            SourceEntry::Committed(r) => {
                r.value.is_none()
                    || last_by_key
                        .get(&r.key.as_deref())
                        .is_some_and(|later| later > offset)
            }
            _ => target
                .iter()
                .any(|t| t.offset > *offset && filler_reason(t).is_some()),
        };
        if !superseded {
            bail!("offset {offset}: the target lost {entry:?}, which compaction would keep");
        }
    }
    let mut visible = layout.clone();
    visible.entries.retain(|o, _| by_offset.contains_key(o));
    check_target(&visible, target, |e, reason| {
        matches!(e, SourceEntry::Invisible) && reason == "hole"
    })
}

/// Checks the target's records `target` (read_uncommitted, covering the
/// layout's range) against the source: the committed record at its offset,
/// a filler at every other offset whose reason `reason_ok` accepts, nothing
/// else. Returns the number of committed records compared.
pub fn check_target(
    layout: &SourceLayout,
    target: &[ConsumedRecord],
    reason_ok: impl Fn(&SourceEntry, &str) -> bool,
) -> Result<u64> {
    let by_offset: BTreeMap<i64, &ConsumedRecord> = target.iter().map(|r| (r.offset, r)).collect();
    let mut compared = 0;
    for (offset, entry) in &layout.entries {
        let Some(t) = by_offset.get(offset) else {
            bail!("target holds nothing at offset {offset}; source has {entry:?}");
        };
        match (entry, filler_reason(t)) {
            (SourceEntry::Committed(s), None) => {
                if let Some(d) = first_difference(std::slice::from_ref(s), std::slice::from_ref(t))
                {
                    bail!("offset {offset}: {d}");
                }
                compared += 1;
            }
            (SourceEntry::Committed(_), Some(reason)) => {
                bail!("offset {offset}: the source's committed record became a filler ({reason})")
            }
            (other, None) => {
                bail!("offset {offset}: source has {other:?}, target a data record {t:?}")
            }
            (other, Some(reason)) => {
                if !reason_ok(other, &reason) {
                    bail!("offset {offset}: filler reason {reason:?} for source entry {other:?}");
                }
            }
        }
    }
    if let Some(extra) = target
        .iter()
        .find(|r| r.offset < layout.low || r.offset >= layout.high)
    {
        bail!(
            "target holds offset {} outside the source's [{}, {})",
            extra.offset,
            layout.low,
            layout.high
        );
    }
    Ok(compared)
}
