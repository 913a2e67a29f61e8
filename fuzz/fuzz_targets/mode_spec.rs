#![no_main]

use mitm::protocol::Http;
use mitm::server::mode::{Mode, ModeSpec};

// A spec that parses makes a listener, and the spec as shown is a spec for the same
// listener that shows the same. (Not for an upstream proxy with credentials: it shows
// them with the password hidden and the user name unescaped, for people to read.)
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = text.parse::<ModeSpec>() else {
        return;
    };
    let shown = spec.to_string();
    let _ = spec.listener(&Http::new(), false);
    if matches!(&spec.mode, Mode::Upstream(proxy) if proxy.credentials().is_some()) {
        return;
    }
    let again: ModeSpec = shown
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} shows as {shown:?}, which does not parse: {e}"));
    assert_eq!(again, spec, "{text:?} shows as {shown:?}");
    assert_eq!(again.to_string(), shown, "{text:?}");
});
