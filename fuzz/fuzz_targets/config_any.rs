//! The configuration loader on arbitrary text. The harness: `weft_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::config::any(data));
