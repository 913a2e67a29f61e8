#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mitm::internals::peek_client_hello(data);
});
