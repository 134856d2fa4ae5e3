//! Client request frames, as the router parses them: an answer or an
//! error, never a panic, and (run with `-malloc_limit_mb`) never an
//! allocation beyond what the frame holds. `just fuzz-ci` runs it for a
//! fixed number of inputs in CI.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cutover_router::frame::parse(Bytes::copy_from_slice(data));
});
