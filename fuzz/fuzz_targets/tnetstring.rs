#![no_main]

use mitm::capture::tnetstring::{Decoder, Value};

fn encoded(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    value
        .encode(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}

// Every value read from the input, encoded, reads back as a value that encodes the same
// (not always the input's bytes: `05:` and `+5#` are read too).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new(data);
    while let Ok(Some(value)) = decoder.next_value() {
        let once = encoded(&value);
        let mut again = Decoder::new(&once[..]);
        let back = again.next_value().expect("reads what it wrote");
        assert_eq!(again.offset(), once.len() as u64);
        assert_eq!(encoded(&back.expect("a value")), once);
    }
});
