//! Frames written as pieces, large records from the buffers they came in.
//!
//! A proxy passes most of its bytes on unchanged: the records of a Fetch
//! answer or of a Produce request. Encoding such a message whole copies
//! them into a new buffer as large as the message, and perf on the router
//! showed that copy, with the kernel zeroing the fresh pages under it, as
//! the largest part of its CPU on bulk traffic. So records of at least
//! [`SPLICE_MIN_BYTES`] are written from their own buffers: the message is
//! encoded with a short placeholder in their place ([`swap_out`]), and the
//! placeholder and its length are then swapped for the records' length and
//! the records themselves ([`splice`]). The bytes on the wire are exactly
//! those of the whole encoding (checked by the tests here and by the
//! router's).

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ProduceRequest;

/// Records shorter than this are copied into the encoding: one more piece
/// costs a write, and copying a few KiB costs less.
pub const SPLICE_MIN_BYTES: usize = 16 * 1024;

/// A frame (length prefix included), in the order written.
#[derive(Debug, Clone)]
pub struct Encoded {
    pieces: Vec<Bytes>,
}

impl Encoded {
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// Records that are pieces of their own.
    pub fn spliced(&self) -> usize {
        self.pieces.len() / 2
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one buffer (tests, and checks of what went out).
    pub fn to_bytes(&self) -> Bytes {
        match self.pieces.as_slice() {
            [one] => one.clone(),
            pieces => {
                let mut out = BytesMut::with_capacity(self.len());
                for p in pieces {
                    out.put_slice(p);
                }
                out.freeze()
            }
        }
    }
}

impl From<Bytes> for Encoded {
    fn from(frame: Bytes) -> Self {
        Encoded {
            pieces: vec![frame],
        }
    }
}

/// Bytes no encoding contains by chance: random per process, so no client
/// or broker can put them in a topic name or anywhere else.
fn marker() -> &'static [u8; 8] {
    static MARKER: OnceLock<[u8; 8]> = OnceLock::new();
    MARKER.get_or_init(|| {
        let mut m = [0u8; 8];
        m.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
        m
    })
}

const PLACEHOLDER_LEN: usize = 16;

fn placeholder(i: usize) -> Bytes {
    let mut p = BytesMut::with_capacity(PLACEHOLDER_LEN);
    p.put_slice(marker());
    p.put_u64(i as u64);
    p.freeze()
}

fn is_placeholder(b: &[u8]) -> bool {
    b.len() == PLACEHOLDER_LEN && b.starts_with(marker())
}

/// The length of a bytes field of `len` bytes as encoded: an i32 in
/// non-flexible versions, an unsigned varint of `len + 1` in flexible ones.
fn length_of(len: usize, flexible: bool) -> Option<BytesMut> {
    let mut out = BytesMut::with_capacity(5);
    if flexible {
        let mut v = u64::try_from(len).ok()? + 1;
        while v >= 0x80 {
            out.put_u8((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.put_u8(v as u8);
    } else {
        out.put_i32(i32::try_from(len).ok()?);
    }
    Some(out)
}

/// Swaps each of `fields` holding at least [`SPLICE_MIN_BYTES`] for a
/// placeholder; returns what they held, in order, for [`splice`].
pub fn swap_out<'a>(fields: impl Iterator<Item = &'a mut Option<Bytes>>) -> Vec<Bytes> {
    let mut out = Vec::new();
    for f in fields {
        if f.as_ref().is_some_and(|r| r.len() >= SPLICE_MIN_BYTES) {
            if let Some(records) = f.replace(placeholder(out.len())) {
                out.push(records);
            }
        }
    }
    out
}

/// Undoes [`swap_out`] on the same fields.
pub fn swap_back<'a>(fields: impl Iterator<Item = &'a mut Option<Bytes>>, records: Vec<Bytes>) {
    let mut records = records.into_iter();
    for f in fields {
        if f.as_deref().is_some_and(is_placeholder) {
            *f = records.next();
        }
    }
}

/// The records fields of a Produce request.
pub fn produce_records(req: &mut ProduceRequest) -> impl Iterator<Item = &mut Option<Bytes>> {
    req.topic_data
        .iter_mut()
        .flat_map(|t| t.partition_data.iter_mut())
        .map(|p| &mut p.records)
}

/// The frame `small` (encoded after [`swap_out`]) with placeholder `i`
/// and its length replaced by `records[i]` and its length, and the frame
/// length prefix fixed. `None` when a placeholder is not where it should
/// be (cannot happen for an encoding of a message [`swap_out`] prepared).
pub fn splice(small: &Bytes, records: &[Bytes], flexible: bool) -> Option<Encoded> {
    if records.is_empty() {
        return Some(small.clone().into());
    }
    let placeholder_length = length_of(PLACEHOLDER_LEN, flexible)?;
    let mut pieces = Vec::with_capacity(records.len() * 2 + 1);
    let mut from = 0;
    for (i, r) in records.iter().enumerate() {
        let mark = placeholder(i);
        let at = from
            + small
                .get(from..)?
                .windows(PLACEHOLDER_LEN)
                .position(|w| w == mark.as_ref())?;
        let length_at = at.checked_sub(placeholder_length.len())?;
        if length_at < from || small.get(length_at..at)? != placeholder_length.as_ref() {
            return None;
        }
        let mut head = BytesMut::with_capacity(length_at - from + 5);
        head.put_slice(small.get(from..length_at)?);
        head.put_slice(&length_of(r.len(), flexible)?);
        pieces.push(head.freeze());
        pieces.push(r.clone());
        from = at + PLACEHOLDER_LEN;
    }
    pieces.push(small.slice(from..));
    let total: usize = pieces.iter().map(Bytes::len).sum();
    let frame_len = i32::try_from(total.checked_sub(4)?).ok()?;
    let mut first = BytesMut::from(pieces.first()?.as_ref());
    first
        .get_mut(..4)?
        .copy_from_slice(&frame_len.to_be_bytes());
    pieces[0] = first.freeze();
    Some(Encoded { pieces })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use crate::codec::encode_request;

    fn records(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<u8>>()
            .into()
    }

    fn request() -> ProduceRequest {
        let mut req = ProduceRequest::default();
        req.acks = -1;
        req.timeout_ms = 30_000;
        for (name, sizes) in [
            ("orders", vec![Some(SPLICE_MIN_BYTES), Some(100), None]),
            ("logs", vec![Some(SPLICE_MIN_BYTES - 1), Some(1 << 20)]),
        ] {
            let mut t = TopicProduceData::default();
            t.name = TopicName(StrBytes::from_static_str(name));
            for (i, size) in sizes.into_iter().enumerate() {
                let mut p = PartitionProduceData::default();
                p.index = i as i32;
                p.records = size.map(|s| records(s, i as u8));
                t.partition_data.push(p);
            }
            req.topic_data.push(t);
        }
        req
    }

    #[test]
    fn a_spliced_produce_request_is_the_whole_encoding_in_every_version() {
        let client = StrBytes::from_static_str("c");
        for version in 3..=9 {
            let whole =
                encode_request(ApiKey::Produce, version, 5, &client, &request()).expect("whole");
            let mut req = request();
            let big = req.topic_data[1].partition_data[1]
                .records
                .clone()
                .expect("records");
            let out = swap_out(produce_records(&mut req));
            assert_eq!(out.len(), 2, "v{version}");
            let small = encode_request(ApiKey::Produce, version, 5, &client, &req).expect("small");
            let flexible = ApiKey::Produce.request_header_version(version) >= 2;
            let encoded = splice(&small, &out, flexible).expect("spliced");
            assert_eq!(encoded.to_bytes(), whole, "v{version}");
            assert_eq!(encoded.spliced(), 2, "v{version}");
            // The large records go out from their own buffer.
            assert!(encoded
                .pieces()
                .iter()
                .any(|p| p.as_ptr() == big.as_ptr() && p.len() == big.len()));
        }
    }

    #[test]
    fn swap_back_restores_the_records() {
        let mut req = request();
        let out = swap_out(produce_records(&mut req));
        swap_back(produce_records(&mut req), out);
        assert_eq!(req, request());
    }

    #[test]
    fn nothing_large_is_one_piece() {
        let small = Bytes::from_static(b"\0\0\0\x01x");
        let encoded = splice(&small, &[], true).expect("one");
        assert_eq!(encoded.pieces().len(), 1);
        assert_eq!(encoded.to_bytes(), small);
    }

    #[test]
    fn a_missing_placeholder_is_refused() {
        let small = Bytes::from_static(b"\0\0\0\x08abcdefgh");
        assert!(splice(&small, &[records(SPLICE_MIN_BYTES, 0)], true).is_none());
        assert!(splice(&small, &[records(SPLICE_MIN_BYTES, 0)], false).is_none());
    }

    #[test]
    fn lengths_are_encoded_as_the_protocol_does() {
        assert_eq!(length_of(16, true).expect("len").as_ref(), &[17]);
        assert_eq!(length_of(127, true).expect("len").as_ref(), &[0x80, 0x01]);
        assert_eq!(
            length_of(300_000, false).expect("len").as_ref(),
            &300_000i32.to_be_bytes()
        );
    }
}
