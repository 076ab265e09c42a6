//! The configuration loader on a weft Mesh document with a fuzzed body. The harness: `weft_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::config::mesh(data));
