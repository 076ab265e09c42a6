//! JWKS parsing and JWT verification on fuzzed key sets and tokens. The harness: `weft_fuzz::jwt`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::jwt::run(data));
