#![no_main]

// The first byte picks the sender and the limits, the second the size of the pieces
// the frames arrive in (see `websocket_frames`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = mitm::internals::websocket_frames(data);
});
