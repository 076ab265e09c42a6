//! A control-plane snapshot from bytes: protobuf decode, conversion and compile. The harness: `weft_fuzz::snapshot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::snapshot::run(data));
