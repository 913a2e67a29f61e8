#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mitm::internals::filter_records(data);
});
