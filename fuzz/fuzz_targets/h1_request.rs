//! One HTTP client connection served by the proxy's hyper setup. The harness: `weft_fuzz::h1`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weft_fuzz::h1::serve(data);
});
