//! Response frames from a broker, as the fetcher and orchestrator decode
//! them: must return an error, never panic.
//!
//! Known finding (upstream, kafka-protocol 0.18): array counts on the wire
//! are pre-allocated before reading, so a short frame claiming 2^31 elements
//! makes the allocator abort. Run with `-malloc_limit_mb=512` to see it; it
//! must be fixed (patched decoder or fixed release) before the router, which
//! decodes untrusted client frames, ships.
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
