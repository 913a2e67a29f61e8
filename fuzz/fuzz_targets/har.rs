#![no_main]

use mitm::capture::har::{read_har, HarFile};
use mitm::capture::Sink;

// The input as a HAR file. What it reads as, saved again with our writer, must read
// back: as many records, with the same requests and statuses.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let input = mitm_fuzz::Scratch::with("in.har", data);
    let Ok(records) = read_har(input.path()) else {
        return;
    };
    if records.is_empty() {
        return;
    }
    let out = mitm_fuzz::Scratch::empty("out.har");
    let mut writer = HarFile::create(out.path()).expect("cannot create a scratch file");
    for record in &records {
        writer.write(record).expect("cannot write a scratch file");
    }
    drop(writer);
    let back = read_har(out.path()).expect("a HAR file we wrote does not read back");
    assert_eq!(back.len(), records.len());
    for (a, b) in records.iter().zip(&back) {
        assert_eq!(a.request.method, b.request.method);
        assert_eq!(a.request.url(), b.request.url());
        assert_eq!(
            a.response.as_ref().map(|r| r.status),
            b.response.as_ref().map(|r| r.status)
        );
        assert_eq!(a.error, b.error);
        assert_eq!(
            a.websocket.as_ref().map(Vec::len),
            b.websocket.as_ref().map(Vec::len)
        );
    }
});
