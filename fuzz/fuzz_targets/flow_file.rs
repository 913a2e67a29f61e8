#![no_main]

use mitm::capture::flows::{read_flows, FlowReader, FlowWriter};
use mitm::capture::Sink;

// The input as a mitmproxy flow file. The records read before any error, saved again
// with our writer, must read back: as many, with the same requests and responses.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let input = mitm_fuzz::Scratch::with("in.flows", data);
    let Ok(reader) = FlowReader::open(input.path()) else {
        return;
    };
    let records: Vec<_> = reader.map_while(Result::ok).collect();
    if records.is_empty() {
        return;
    }
    let out = mitm_fuzz::Scratch::empty("out.flows");
    let mut writer = FlowWriter::create(out.path()).expect("cannot create a scratch file");
    for record in &records {
        writer.write(record).expect("cannot write a scratch file");
    }
    writer.flush().expect("cannot write a scratch file");
    drop(writer);
    let back = read_flows(out.path()).expect("a flow file we wrote does not read back");
    assert_eq!(back.len(), records.len());
    for (a, b) in records.iter().zip(&back) {
        assert_eq!(a.request.method, b.request.method);
        assert_eq!(a.request.url(), b.request.url());
        assert_eq!(a.request.body, b.request.body);
        assert_eq!(
            a.response.as_ref().map(|r| (r.status, &r.reason, &r.body)),
            b.response.as_ref().map(|r| (r.status, &r.reason, &r.body))
        );
        assert_eq!(a.error, b.error);
        assert_eq!(
            a.websocket.as_ref().map(Vec::len),
            b.websocket.as_ref().map(Vec::len)
        );
    }
});
