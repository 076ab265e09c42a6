//! A control-plane snapshot from bytes: protobuf decode, conversion, compile and a little
//! traffic. The harness: `weft_fuzz::snapshot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_fuzz::snapshot::run(data));

// Half the mutations stretch a number of a decodable snapshot, half are libFuzzer's own.
libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let stretched = seed
        .is_multiple_of(2)
        .then(|| weft_fuzz::snapshot::stretch(data, size, max_size, seed / 2))
        .flatten();
    stretched.unwrap_or_else(|| libfuzzer_sys::fuzzer_mutate(data, size, max_size))
});
