//! What a client fetching through a router gets of a partition's records:
//! no filler records, and leader epochs the router's own.
//!
//! A filler batch cannot simply be dropped: a consumer advances its position
//! only past batches it receives, so one whose position is inside a filler
//! range would fetch the same offset forever. An empty batch over the same
//! offsets (what the log cleaner leaves) moves the fetch position, but not
//! the position librdkafka reports and commits, which follows delivered
//! messages and control records: a partition ending in fillers would show
//! lag forever. So each filler batch becomes a transaction COMMIT marker at
//! its last offset, a control batch with one control record: every client
//! skips control records without delivering them and moves its position past
//! them (librdkafka ignores a COMMIT marker of any producer; Java and others
//! only act on ABORT markers), and the offsets before it are a gap, as
//! compaction leaves. Only the filler's 61-byte header is read: nothing is
//! decompressed.
//!
//! `partitionLeaderEpoch` sits before the CRC's range, so it is rewritten
//! in place without touching the CRC.

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{
    control_record, encode_batch, BatchHeader, Codec, ControlKind, EncodeOptions, BATCH_LENGTH_POS,
    LEADER_EPOCH_POS, LOG_OVERHEAD, MAGIC_POS, MIN_BATCH_LENGTH, NO_SEQUENCE,
};
use crate::filler::is_filler;

/// What [`client_view`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientView {
    /// Filler batches replaced by a marker.
    pub fillers: usize,
    /// Offsets those batches covered.
    pub filler_offsets: i64,
}

/// The COMMIT marker that stands for `filler`: at its last offset, with its
/// producer and timestamp. `None` if it cannot be encoded (it always can).
fn marker_for(filler: &BatchHeader, epoch: i32) -> Option<bytes::BytesMut> {
    let opts = EncodeOptions {
        codec: Codec::None,
        base_offset: filler.last_offset(),
        partition_leader_epoch: epoch,
        producer_id: filler.producer_id,
        producer_epoch: filler.producer_epoch,
        base_sequence: NO_SEQUENCE,
        transactional: true,
        control: true,
        log_append_time: filler.is_log_append_time().then_some(filler.max_timestamp),
        ..EncodeOptions::default()
    };
    let marker = control_record(ControlKind::Commit, filler.max_timestamp, 0);
    encode_batch(&[marker], &opts).ok()
}

/// `records` as a client may see them: every filler batch, complete or cut
/// after its header, replaced by a COMMIT marker (a partial tail whose header
/// is cut is passed on: clients discard a batch they lack a part of), and every
/// batch's `partitionLeaderEpoch` mapped by `epoch`. Returns the input
/// itself, not a copy, when nothing changes. Bytes it cannot read as v2
/// batches (a broker bug, or a v0/v1 log) are passed on as they are, for
/// the client to report.
pub fn client_view(records: &Bytes, epoch: impl Fn(i32) -> i32) -> (Bytes, ClientView) {
    let mut view = ClientView::default();
    if !needs_change(records, &epoch) {
        return (records.clone(), view);
    }
    let mut out = BytesMut::with_capacity(records.len());
    let mut pos = 0;
    while let Some(rest) = records.get(pos..).filter(|r| !r.is_empty()) {
        let Some(batch) = Batch::at(rest) else {
            out.put_slice(rest);
            break;
        };
        match batch.header {
            Some(h) if is_filler(&h) => {
                if let Some(marker) = marker_for(&h, epoch(h.partition_leader_epoch)) {
                    out.put_slice(&marker);
                    view.fillers += 1;
                    view.filler_offsets += i64::from(h.last_offset_delta) + 1;
                }
            }
            _ => {
                let start = out.len();
                out.put_slice(&rest[..batch.len]);
                if let Some(e) = batch.epoch {
                    out[start + LEADER_EPOCH_POS..start + MAGIC_POS]
                        .copy_from_slice(&epoch(e).to_be_bytes());
                }
            }
        }
        pos += batch.len;
    }
    (out.freeze(), view)
}

/// Whether [`client_view`] would change anything (so the common case, a
/// response without fillers whose epochs stay, costs no copy).
fn needs_change(records: &Bytes, epoch: &impl Fn(i32) -> i32) -> bool {
    let mut pos = 0;
    while let Some(rest) = records.get(pos..).filter(|r| !r.is_empty()) {
        let Some(batch) = Batch::at(rest) else {
            return false;
        };
        if let Some(e) = batch.epoch {
            if epoch(e) != e {
                return true;
            }
        }
        if batch.header.is_some_and(|h| is_filler(&h)) {
            return true;
        }
        pos += batch.len;
    }
    false
}

/// One batch (or the partial one at the end) at the start of a buffer.
struct Batch {
    /// Bytes of it in the buffer (less than its size when partial).
    len: usize,
    /// Its header, when all 61 bytes are there.
    header: Option<BatchHeader>,
    /// Its partitionLeaderEpoch, when those bytes are there.
    epoch: Option<i32>,
}

impl Batch {
    /// `None` when `buf` does not start with a readable v2 batch.
    fn at(buf: &[u8]) -> Option<Batch> {
        let length = i32::from_be_bytes(
            buf.get(BATCH_LENGTH_POS..LEADER_EPOCH_POS)?
                .try_into()
                .ok()?,
        );
        if length < MIN_BATCH_LENGTH || *buf.get(MAGIC_POS)? != 2 {
            return None;
        }
        let size = usize::try_from(length).ok()?.checked_add(LOG_OVERHEAD)?;
        let len = size.min(buf.len());
        let epoch = buf
            .get(LEADER_EPOCH_POS..MAGIC_POS)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes);
        let header = BatchHeader::parse(&buf[..len]).ok();
        Some(Batch { len, header, epoch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{batches, RecordToWrite, HEADER_LEN};
    use crate::filler::{filler_batches, FillerReason};

    fn data(base_offset: i64, n: usize, epoch: i32) -> BytesMut {
        let records: Vec<RecordToWrite> = (0..n)
            .map(|i| RecordToWrite {
                value: Some(Bytes::from(format!("v{i}"))),
                ..RecordToWrite::default()
            })
            .collect();
        let mut b = encode_batch(&records, &EncodeOptions::new(Codec::Lz4)).unwrap();
        b[0..8].copy_from_slice(&base_offset.to_be_bytes());
        b[LEADER_EPOCH_POS..MAGIC_POS].copy_from_slice(&epoch.to_be_bytes());
        b
    }

    fn filler(base_offset: i64, n: i64) -> BytesMut {
        let mut b = filler_batches(n, 1_000, FillerReason::Aborted, Codec::Zstd, false, 1 << 20)
            .unwrap()
            .remove(0);
        b[0..8].copy_from_slice(&base_offset.to_be_bytes());
        b
    }

    fn joined(parts: &[&[u8]]) -> Bytes {
        Bytes::from(parts.concat())
    }

    #[test]
    fn fillers_become_commit_markers_at_their_last_offset_and_data_stays() {
        let (a, f, b) = (data(0, 3, 7), filler(3, 500), data(503, 2, 7));
        let records = joined(&[&a, &f, &b]);
        let (out, view) = client_view(&records, |e| e);
        assert_eq!((view.fillers, view.filler_offsets), (1, 500));
        let got: Vec<_> = batches(&out).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 3, "every batch is there, CRCs valid");
        assert_eq!(got[0].bytes, a.freeze());
        assert_eq!(got[2].bytes, b.freeze());
        let marker = &got[1];
        let h = &marker.header;
        assert_eq!((h.base_offset, h.next_offset()), (502, 503));
        assert!(h.is_control() && h.is_transactional() && !is_filler(h));
        assert_eq!(h.codec().unwrap(), Codec::None);
        let recs = marker.records().unwrap();
        assert_eq!(recs.len(), 1, "one control record, no filler record");
        assert_eq!(
            ControlKind::from_key(recs[0].key.as_deref().unwrap()),
            Some(ControlKind::Commit)
        );
    }

    #[test]
    fn nothing_to_change_returns_the_same_bytes() {
        let records = joined(&[&data(0, 3, 4), &data(3, 1, 4)]);
        let (out, view) = client_view(&records, |e| e);
        assert_eq!(view, ClientView::default());
        assert_eq!(out.as_ptr(), records.as_ptr(), "no copy");
    }

    #[test]
    fn epochs_are_mapped_without_breaking_crcs() {
        let records = joined(&[&data(0, 3, 4), &filler(3, 10), &data(13, 1, 5)]);
        let (out, _) = client_view(&records, |e| e + (1 << 24));
        let got: Vec<_> = batches(&out).collect::<Result<_, _>>().unwrap();
        let epochs: Vec<i32> = got
            .iter()
            .map(|b| b.header.partition_leader_epoch)
            .collect();
        // The filler had no epoch of its own on this hand-built log (-1).
        assert_eq!(epochs, vec![4 + (1 << 24), (1 << 24) - 1, 5 + (1 << 24)]);
    }

    #[test]
    fn a_partial_tail_is_passed_on_and_a_partial_filler_replaced() {
        let a = data(0, 3, 1);
        let d = data(3, 50, 1);
        let f = filler(3, 100);
        // Data cut in the middle: passed on for the client to discard.
        let records = joined(&[&a, &d[..d.len() - 5]]);
        let (out, _) = client_view(&records, |e| e + 1);
        assert_eq!(out.len(), records.len());
        assert_eq!(batches(&out).count(), 1);
        // A filler cut after its header: a marker stands for it.
        let records = joined(&[&a, &f[..HEADER_LEN + 3]]);
        let (out, view) = client_view(&records, |e| e);
        assert_eq!(view.fillers, 1);
        let got: Vec<_> = batches(&out).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].header.next_offset(), 103);
        // A filler cut inside its header is not known as one: passed on
        // like any partial tail (no client reads a batch it lacks a part of).
        let records = joined(&[&a, &f[..HEADER_LEN - 1]]);
        let (out, view) = client_view(&records, |e| e + 1);
        assert_eq!((view.fillers, out.len()), (0, records.len()));
    }

    #[test]
    fn unreadable_bytes_are_passed_on_as_they_are() {
        let a = data(0, 3, 1);
        let mut junk = a.to_vec();
        junk.extend_from_slice(&[0u8; 20]);
        let records = Bytes::from(junk);
        let (out, _) = client_view(&records, |e| e + 1);
        assert_eq!(out.len(), records.len());
        for garbage in [&[][..], &[1, 2, 3][..], &[0xff; 64][..]] {
            let b = Bytes::copy_from_slice(garbage);
            assert_eq!(client_view(&b, |e| e + 1).0, b);
        }
    }
}
