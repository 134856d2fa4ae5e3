//! Response frames from a broker, as the fetcher and orchestrator decode
//! them: must return an error, never panic.
//!
//! Found here first: kafka-protocol 0.18.0 pre-allocated arrays from counts
//! on the wire, so a short frame claiming 2^31 elements made the allocator
//! abort; the workspace builds a patched copy (vendor/README.md). Run with
//! `-malloc_limit_mb=512` (as `just fuzz-ci` does) to keep it that way.
#![no_main]

use bytes::Bytes;
use cutover_kafka::ApiKey;
use libfuzzer_sys::fuzz_target;

const APIS: [ApiKey; 6] = [
    ApiKey::Fetch,
    ApiKey::Produce,
    ApiKey::Metadata,
    ApiKey::ListOffsets,
    ApiKey::ApiVersions,
    ApiKey::InitProducerId,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let api = APIS[data[0] as usize % APIS.len()];
    let version = (data[1] % 17) as i16;
    let _ = cutover_kafka::decode_response(api, version, Bytes::copy_from_slice(&data[2..]));
});
