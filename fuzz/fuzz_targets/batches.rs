//! Arbitrary bytes as a fetch response's records: iterating batches and
//! decoding their records must return errors, never panic or run away.
//! Input: one mode byte (odd: checksums are repaired first), then records.
#![no_main]

use bytes::Bytes;
use cutover_records::filler::{filler_reason, is_filler};
use cutover_records::rules::{check_partition_records, ProduceRules};
use libfuzzer_sys::fuzz_target;

/// Rewrites the CRC of every complete batch, so that mutations reach the
/// decoders instead of stopping at the checksum.
fn fix_crcs(buf: &mut [u8]) {
    let mut pos = 0usize;
    while let Some(head) = buf.get(pos..pos + 61) {
        let len = i32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        let Ok(len) = usize::try_from(len) else {
            return;
        };
        let end = pos + 12 + len;
        if len < 49 || end > buf.len() {
            return;
        }
        let crc = cutover_records::batch::compute_crc(&buf[pos..end]);
        buf[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

fuzz_target!(|input: &[u8]| {
    // First byte odd: repair checksums. The rest is the records.
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let mut data = data.to_vec();
    if mode & 1 == 1 {
        fix_crcs(&mut data);
    }
    let data = &data[..];
    let records = Bytes::copy_from_slice(data);
    for batch in cutover_records::batches(&records) {
        let Ok(batch) = batch else { break };
        let _ = is_filler(&batch.header);
        let _ = batch.header.codec();
        let _ = batch.verify_crc();
        if let Ok(decoded) = batch.records() {
            for r in &decoded {
                let _ = filler_reason(r);
            }
        }
    }
    let _ = check_partition_records(data, &ProduceRules::default());
});
