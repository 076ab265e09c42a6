//! TLS-or-plaintext detection and the peer metadata exchange on arbitrary bytes. The harness: `weft_fuzz::detect`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::detect::run(data));
