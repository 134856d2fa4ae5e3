//! The patched kafka-protocol (vendor/README.md): lengths and counts read
//! off the wire larger than what was received fail to decode instead of
//! allocating for them. Unpatched, each of these asks the allocator for
//! gigabytes (and aborts the process or panics on capacity overflow).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{MetadataRequest, RequestHeader};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::records::RecordBatchDecoder;

fn header_v2(api_key: i16, version: i16) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i16(api_key);
    b.put_i16(version);
    b.put_i32(7); // correlation id
    b.put_i16(-1); // null client id
    b.put_u8(0); // no tagged fields
    b
}

fn unsigned_varint(b: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

#[test]
fn a_huge_compact_array_count_is_refused() {
    // Metadata v12: topics is a compact array; claim 2^32 - 2 entries.
    let mut b = header_v2(3, 12);
    let mut buf = b.split().freeze();
    RequestHeader::decode(&mut buf, 2).unwrap();
    let mut body = BytesMut::new();
    unsigned_varint(&mut body, u32::MAX);
    body.put_u8(0);
    let err = MetadataRequest::decode(&mut body.freeze(), 12).unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err:#}");
}

#[test]
fn a_huge_array_count_is_refused() {
    // Metadata v4 (not flexible): topics is an i32-counted array.
    let mut body = BytesMut::new();
    body.put_i32(i32::MAX);
    body.put_u8(0);
    let err = MetadataRequest::decode(&mut body.freeze(), 4).unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err:#}");
}

#[test]
fn a_batch_claiming_billions_of_records_is_refused() {
    // A v2 batch header (61 bytes) with an uncompressed body of 3 bytes
    // but a record count of i32::MAX.
    let mut b = BytesMut::new();
    b.put_i64(0); // base offset
    b.put_i32(49 + 3); // batch length: the header after this field plus the body
    b.put_i32(0); // partition leader epoch
    b.put_i8(2); // magic
    let crc_at = b.len();
    b.put_u32(0); // crc, set below
    b.put_i16(0); // attributes
    b.put_i32(0); // last offset delta
    b.put_i64(0); // base timestamp
    b.put_i64(0); // max timestamp
    b.put_i64(-1); // producer id
    b.put_i16(-1); // producer epoch
    b.put_i32(-1); // base sequence
    b.put_i32(i32::MAX); // record count
    b.put_slice(&[0; 3]);
    let crc = crc32c::crc32c(&b[crc_at + 4..]);
    b[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
    let mut batch: Bytes = b.freeze();
    assert!(RecordBatchDecoder::decode(&mut batch).is_err());
}
