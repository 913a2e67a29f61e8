#![no_main]

// The first byte is the size of the pieces the body is fed in (0 counts as 1).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&step, body)) = data.split_first() {
        let _ = mitm::internals::decode_chunked(body, usize::from(step));
    }
});
