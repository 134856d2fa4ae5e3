//! Fetch answers as the pieces written to the client.
//!
//! A Fetch answer is mostly record bytes the router received from upstream
//! and passes on unchanged; the records of a partition of at least
//! [`SPLICE_MIN_BYTES`] are written from the buffer they arrived in
//! (`cutover_kafka::pieces`). The bytes on the wire are exactly those of
//! the whole encoding (checked by the tests below).

use kafka_protocol::messages::{ApiKey, FetchResponse};

use cutover_kafka::pieces::{splice, swap_back, swap_out};
pub use cutover_kafka::pieces::{Encoded, SPLICE_MIN_BYTES};

use crate::frame::{encode_response, FrameError, Header};

fn records(resp: &mut FetchResponse) -> impl Iterator<Item = &mut Option<bytes::Bytes>> {
    resp.responses
        .iter_mut()
        .flat_map(|t| t.partitions.iter_mut())
        .map(|p| &mut p.records)
}

/// Encodes a Fetch answer, its larger records as pieces of their own.
pub fn encode_fetch_response(
    header: &Header,
    mut resp: FetchResponse,
) -> Result<Encoded, FrameError> {
    let spliced = swap_out(records(&mut resp));
    let small = encode_response(header, &resp)?;
    // Flexible versions are those with the second response header.
    let flexible = ApiKey::Fetch.response_header_version(header.version) >= 1;
    match splice(&small, &spliced, flexible) {
        Some(encoded) => Ok(encoded),
        None => {
            // Cannot happen (the placeholders are in the encoding, in
            // order, after their lengths); if it did, the whole encoding
            // is still right.
            tracing::warn!("placeholders not found in an encoded Fetch answer; encoding it whole");
            swap_back(records(&mut resp), spliced);
            encode_response(header, &resp).map(Encoded::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, PartitionData,
    };
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
}
