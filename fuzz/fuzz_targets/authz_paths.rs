//! Authorization path normalisation, templates and matching on fuzzed rules and paths. The harness: `weft_fuzz::authz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::authz::run(data));
