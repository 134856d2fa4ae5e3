//! Encoded answers as the pieces written to the client.
//!
//! A Fetch answer is mostly record bytes the router received from upstream
//! and passes on unchanged. Encoding the answer whole copies them into a
//! new buffer as large as the answer (up to the client's fetch.max.bytes),
//! and perf showed that copy, with the kernel zeroing the fresh pages under
//! it, as the largest part of the router's CPU on bulk reads. So the records
//! of a partition of at least [`SPLICE_MIN_BYTES`] are written from the
//! buffer they arrived in: the answer is encoded with a short placeholder in
//! their place, and the placeholder and its length are then swapped for the
//! records' length and the records themselves. The bytes on the wire are
//! exactly those of the whole encoding (checked by the tests below).

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, FetchResponse};

use crate::frame::{encode_response, FrameError, Header};

/// Records shorter than this are copied into the encoded answer: one more
/// piece costs a write, and copying a few KiB costs less.
pub const SPLICE_MIN_BYTES: usize = 16 * 1024;

/// A response frame (length prefix included), in the order written.
#[derive(Debug, Clone)]
pub struct Encoded {
    pieces: Vec<Bytes>,
}

impl Encoded {
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// Partitions whose records are pieces of their own.
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

    /// The frame as one buffer.
    #[cfg(test)]
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

/// Bytes no encoding of an answer contains by chance: random per process,
/// so no client or broker can put them in a topic name or anywhere else.
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

/// The length of a bytes field of `len` bytes as encoded: an i32 in
/// non-flexible versions, an unsigned varint of `len + 1` in flexible ones.
fn length_of(len: usize, flexible: bool) -> Result<BytesMut, usize> {
    let mut out = BytesMut::with_capacity(5);
    if flexible {
        let mut v = u64::try_from(len).map_err(|_| len)? + 1;
        while v >= 0x80 {
            out.put_u8((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.put_u8(v as u8);
    } else {
        out.put_i32(i32::try_from(len).map_err(|_| len)?);
    }
    Ok(out)
}

fn partitions(resp: &mut FetchResponse) -> impl Iterator<Item = &mut PartitionData> {
    resp.responses
        .iter_mut()
        .flat_map(|t| t.partitions.iter_mut())
}

/// Encodes a Fetch answer, its larger records as pieces of their own.
pub fn encode_fetch_response(
    header: &Header,
    mut resp: FetchResponse,
) -> Result<Encoded, FrameError> {
    let mut spliced: Vec<Bytes> = Vec::new();
    for p in partitions(&mut resp) {
        if p.records
            .as_ref()
            .is_some_and(|r| r.len() >= SPLICE_MIN_BYTES)
        {
            if let Some(records) = p.records.replace(placeholder(spliced.len())) {
                spliced.push(records);
            }
        }
    }
    let small = encode_response(header, &resp)?;
    if spliced.is_empty() {
        return Ok(small.into());
    }
    // Flexible versions are those with the second response header.
    let flexible = ApiKey::Fetch.response_header_version(header.version) >= 1;
    match splice(&small, &spliced, flexible) {
        Some(pieces) => Ok(Encoded { pieces }),
        None => {
            // Cannot happen (the placeholders are in the encoding, in
            // order, after their lengths); if it did, the whole encoding
            // is still right.
            tracing::warn!("placeholders not found in an encoded Fetch answer; encoding it whole");
            let mut records = spliced.into_iter();
            for p in partitions(&mut resp) {
                if p.records
                    .as_ref()
                    .is_some_and(|r| r.len() == PLACEHOLDER_LEN && r.starts_with(marker()))
                {
                    p.records = records.next();
                }
            }
            encode_response(header, &resp).map(Encoded::from)
        }
    }
}

/// The pieces of `small` with placeholder `i` (and its length) replaced by
/// `records[i]` (and its length), and the frame length prefix fixed.
fn splice(small: &Bytes, records: &[Bytes], flexible: bool) -> Option<Vec<Bytes>> {
    let placeholder_length = length_of(PLACEHOLDER_LEN, flexible).ok()?;
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
        head.put_slice(&length_of(r.len(), flexible).ok()?);
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
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse};
    use kafka_protocol::messages::{ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn header(version: i16) -> Header {
        Header {
            api: ApiKey::Fetch,
            version,
            correlation_id: 77,
            client_id: None,
        }
    }

    fn records(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<u8>>()
            .into()
    }

    /// Partitions with large, small, empty and no records, and the
    /// placeholder's own bytes in a topic name (the marker is random, so a
    /// name can only hold an old one).
    fn answer(version: i16) -> FetchResponse {
        let mut resp = FetchResponse::default();
        if version >= 7 {
            resp.session_id = 9;
        }
        for (name, sizes) in [
            (
                "orders",
                vec![Some(SPLICE_MIN_BYTES), Some(100), None, Some(300_000)],
            ),
            ("payments", vec![Some(0), Some(SPLICE_MIN_BYTES - 1)]),
            ("logs", vec![Some(70_000), Some(20_000), Some(1 << 20)]),
        ] {
            let mut t = FetchableTopicResponse::default();
            t.topic = TopicName(StrBytes::from_static_str(name));
            for (i, size) in sizes.into_iter().enumerate() {
                let mut p = PartitionData::default();
                p.partition_index = i as i32;
                p.high_watermark = 1000 + i as i64;
                p.last_stable_offset = 990;
                if version >= 5 {
                    p.log_start_offset = 3;
                }
                let mut a = AbortedTransaction::default();
                a.producer_id = ProducerId(42);
                a.first_offset = 7;
                p.aborted_transactions = Some(vec![a]);
                p.records = size.map(|s| records(s, i as u8));
                t.partitions.push(p);
            }
            resp.responses.push(t);
        }
        resp
    }

    #[test]
    fn the_pieces_are_the_whole_encoding_in_every_version() {
        for version in 4..=12 {
            let resp = answer(version);
            let whole = encode_response(&header(version), &resp).expect("whole");
            let encoded = encode_fetch_response(&header(version), resp).expect("pieces");
            assert_eq!(encoded.len(), whole.len(), "v{version}");
            assert_eq!(encoded.to_bytes(), whole, "v{version}");
            // orders/0, orders/3, logs/0, logs/1 and logs/2 are spliced:
            // a head and the records each, and the tail.
            assert_eq!(encoded.pieces().len(), 5 * 2 + 1, "v{version}");
            assert_eq!(encoded.spliced(), 5, "v{version}");
        }
    }

    #[test]
    fn spliced_records_are_the_upstream_buffers_not_copies() {
        let resp = answer(12);
        let big = resp.responses[2].partitions[2]
            .records
            .clone()
            .expect("records");
        let encoded = encode_fetch_response(&header(12), resp).expect("pieces");
        assert!(encoded
            .pieces()
            .iter()
            .any(|p| p.as_ptr() == big.as_ptr() && p.len() == big.len()));
    }

    #[test]
    fn a_small_answer_is_one_piece() {
        let mut resp = FetchResponse::default();
        let mut t = FetchableTopicResponse::default();
        let mut p = PartitionData::default();
        p.records = Some(records(1000, 1));
        t.partitions.push(p);
        resp.responses.push(t);
        let whole = encode_response(&header(11), &resp).expect("whole");
        let encoded = encode_fetch_response(&header(11), resp).expect("pieces");
        assert_eq!(encoded.pieces().len(), 1);
        assert_eq!(encoded.spliced(), 0);
        assert_eq!(encoded.to_bytes(), whole);
    }

    #[test]
    fn a_missing_placeholder_falls_back_to_the_whole_encoding() {
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
