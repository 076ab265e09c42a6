//! The configuration loader on an Istio resource with a fuzzed body. The harness: `weft_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::config::dialect(
    weft_fuzz::config::ISTIO,
    data
));
