//! Fuzzes the frame decoder: `cargo +nightly fuzz run decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    apm_core::fuzzing::decode_harness(data);
});
