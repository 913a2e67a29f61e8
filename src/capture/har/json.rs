//! A small JSON writer for HAR entries: objects and arrays written straight into the
//! line's buffer, with no `serde_json::Value` tree between the record and the bytes
//! (building one cost more than everything else a saved flow costs). The bytes are what
//! `serde_json` would write: floats go through its own formatting, strings through an
//! escape of the same output (tested against it), integers through `itoa` (as
//! `serde_json`'s); an object's keys are written in the order given, which the callers
//! keep sorted (as `serde_json::Map` sorts them), checked in debug builds.

use crate::capture::digits::AddrText;

/// The buffer a value is written into.
pub(super) struct Json<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Json<'a> {
    pub(super) fn new(out: &'a mut Vec<u8>) -> Self {
        Json { out }
    }

    /// Writes `value` as a JSON string, escaped as `serde_json` escapes it.
    #[inline]
    pub(super) fn str(&mut self, value: &str) {
        escape_into(self.out, value);
    }

    /// Writes `text`, which [`is_plain`] says needs no escape, as a JSON string: as it
    /// is, between quotes.
    #[inline]
    pub(super) fn plain(&mut self, text: &[u8]) {
        debug_assert!(is_plain(text));
        self.out.reserve(text.len() + 2);
        self.out.push(b'"');
        self.out.extend_from_slice(text);
        self.out.push(b'"');
    }

    /// Writes `addr` as a JSON string, as `Display` writes it (`192.0.2.1:8080`,
    /// `[2001:db8::1]:443`), without the formatting machinery.
    pub(super) fn socket_addr(&mut self, addr: std::net::SocketAddr) {
        self.plain(AddrText::socket(addr).as_bytes());
    }

    /// Writes `ip` as a JSON string, as `Display` writes it.
    pub(super) fn ip(&mut self, ip: std::net::IpAddr) {
        self.plain(AddrText::ip(ip).as_bytes());
    }

    /// Writes `t` as a JSON string, in RFC 3339 with milliseconds, UTC
    /// (`"2026-01-02T03:04:05.678Z"`).
    pub(super) fn rfc3339(&mut self, t: std::time::SystemTime) {
        self.out.push(b'"');
        super::entry::push_rfc3339(self.out, t);
        self.out.push(b'"');
    }

    /// Writes `n` as a JSON string (`"8080"`).
    #[inline]
    pub(super) fn quoted_u64(&mut self, n: u64) {
        self.out.push(b'"');
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.out.push(b'"');
    }

    /// Writes a number (`null` for a NaN or an infinity, as `serde_json::Value` does).
    #[inline]
    pub(super) fn f64(&mut self, value: f64) {
        if value.is_finite() {
            let _ = serde_json::to_writer(&mut *self.out, &value);
        } else {
            self.out.extend_from_slice(b"null");
        }
    }

    #[inline]
    pub(super) fn i64(&mut self, value: i64) {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    #[inline]
    pub(super) fn u64(&mut self, value: u64) {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    #[inline]
    pub(super) fn bool(&mut self, value: bool) {
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    #[inline]
    pub(super) fn null(&mut self) {
        self.out.extend_from_slice(b"null");
    }

    /// Writes an object whose fields `fields` writes.
    pub(super) fn object(&mut self, fields: impl FnOnce(&mut Object<'_>)) {
        self.out.push(b'{');
        let mut object = Object {
            json: Json {
                out: &mut *self.out,
            },
            first: true,
            #[cfg(debug_assertions)]
            last: None,
        };
        fields(&mut object);
        self.out.push(b'}');
    }

    /// Writes an array whose items `items` writes.
    pub(super) fn array(&mut self, items: impl FnOnce(&mut Array<'_>)) {
        self.out.push(b'[');
        let mut array = Array {
            json: Json {
                out: &mut *self.out,
            },
            first: true,
        };
        items(&mut array);
        self.out.push(b']');
    }

    /// An array of strings.
    pub(super) fn strs<'s>(&mut self, items: impl IntoIterator<Item = &'s str>) {
        self.array(|a| {
            for item in items {
                a.item().str(item);
            }
        });
    }
}

/// Writes `value` as a JSON string into `out`: the bytes `serde_json` writes (`"` and
/// `\\` escaped with a backslash; control characters as `\b`, `\t`, `\n`, `\f`,
/// `\r`, or `\u00xx` with lowercase hex digits; everything else, DEL and non-ASCII
/// included, as it is). Runs that need no escape (a whole body, mostly) are found
/// eight bytes at a time and copied whole.
pub(super) fn escape_into(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !needs_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether `text` is printable ASCII with nothing a JSON string escapes (no control
/// character, DEL, `"` or `\\`): then it is valid UTF-8, holds no control character,
/// and is its own JSON string between quotes. Eight bytes at a time; a body is
/// mostly such text, and this one pass stands for three (UTF-8 check, control scan,
/// escape).
pub(super) fn is_plain(text: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = text.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        // Any byte of 0x80 or more; else (all below 0x80) the tests after are exact.
        if word & HIGH != 0
            || (word.wrapping_sub(ONES * 0x20) & !word & HIGH
                | zero(word ^ (ONES * u64::from(b'"')))
                | zero(word ^ (ONES * u64::from(b'\\')))
                | zero(word ^ (ONES * 0x7f)))
                != 0
        {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Whether any of the eight bytes of `word` is a control character (below 0x20), `"`
/// or `\\`. Exact for the word as a whole (the classic test for a zero byte, `(x -
/// 0x01…) & !x & 0x80…`, has no false positive when asked of all eight at once).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let zero = |x: u64| below(x, 1);
    below(word, 0x20)
        | zero(word ^ (ONES * u64::from(b'"')))
        | zero(word ^ (ONES * u64::from(b'\\')))
        != 0
}

/// The fields of an object being written.
pub(super) struct Object<'o> {
    json: Json<'o>,
    first: bool,
    #[cfg(debug_assertions)]
    last: Option<&'static str>,
}

impl<'o> Object<'o> {
    /// Starts the field `key`; write its value into what this returns. Keys come in
    /// byte order.
    #[inline]
    pub(super) fn key(&mut self, key: &'static str) -> &mut Json<'o> {
        #[cfg(debug_assertions)]
        {
            if let Some(last) = self.last {
                debug_assert!(last < key, "HAR keys out of order: {last:?} before {key:?}");
            }
            self.last = Some(key);
        }
        if !self.first {
            self.json.out.push(b',');
        }
        self.first = false;
        // Keys are names of ours, which need no escape.
        debug_assert!(!key.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
        self.json.out.push(b'"');
        self.json.out.extend_from_slice(key.as_bytes());
        self.json.out.extend_from_slice(b"\":");
        &mut self.json
    }

    #[inline]
    pub(super) fn str(&mut self, key: &'static str, value: &str) {
        self.key(key).str(value);
    }

    #[inline]
    pub(super) fn f64(&mut self, key: &'static str, value: f64) {
        self.key(key).f64(value);
    }

    #[inline]
    pub(super) fn opt_f64(&mut self, key: &'static str, value: Option<f64>) {
        match value {
            Some(v) => self.key(key).f64(v),
            None => self.key(key).null(),
        }
    }

    #[inline]
    pub(super) fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        match value {
            Some(v) => self.key(key).str(v),
            None => self.key(key).null(),
        }
    }

    #[inline]
    pub(super) fn i64(&mut self, key: &'static str, value: i64) {
        self.key(key).i64(value);
    }

    #[inline]
    pub(super) fn u64(&mut self, key: &'static str, value: u64) {
        self.key(key).u64(value);
    }

    #[inline]
    pub(super) fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key).bool(value);
    }
}

/// The items of an array being written.
pub(super) struct Array<'o> {
    json: Json<'o>,
    first: bool,
}

impl<'o> Array<'o> {
    /// Starts the next item; write it into what this returns.
    #[inline]
    pub(super) fn item(&mut self) -> &mut Json<'o> {
        if !self.first {
            self.json.out.push(b',');
        }
        self.first = false;
        &mut self.json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value at every position of a run of 0 to 17 bytes: plain exactly
    /// when every byte is printable ASCII other than `"` and `\\`; and plain text is
    /// its own JSON string, as `serde_json` writes it.
    #[test]
    fn plain_text_is_printable_ascii_that_needs_no_escape() {
        for len in 0..18 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut text = vec![b'x'; len];
                    text[at] = b;
                    let expected = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
                    assert_eq!(is_plain(&text), expected, "{b:#x} at {at} of {len}");
                    if expected {
                        let mut ours = Vec::new();
                        Json::new(&mut ours).plain(&text);
                        let text = String::from_utf8(text).unwrap();
                        assert_eq!(ours, serde_json::to_vec(&text).unwrap());
                    }
                }
            }
        }
        assert!(is_plain(b""));
    }

    /// Addresses, ports and times written digit by digit are what `Display` writes.
    #[test]
    fn addresses_ports_and_times_are_written_as_display_writes_them() {
        use std::net::SocketAddr;
        use std::time::{Duration, UNIX_EPOCH};
        // (`AddrText`'s own test has more of them.)
        for a in ["10.20.30.40:8080", "[2001:db8::1]:443"] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut ours = Vec::new();
            Json::new(&mut ours).socket_addr(addr);
            assert_eq!(ours, format!("\"{addr}\"").into_bytes());
            ours.clear();
            Json::new(&mut ours).ip(addr.ip());
            assert_eq!(ours, format!("\"{}\"", addr.ip()).into_bytes());
        }
        for n in [0u64, 7, 80, 65535, u64::MAX] {
            let mut ours = Vec::new();
            Json::new(&mut ours).quoted_u64(n);
            assert_eq!(ours, format!("\"{n}\"").into_bytes());
        }
        for (t, text) in [
            (UNIX_EPOCH, "1970-01-01T00:00:00.000Z"),
            (
                UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                "2023-11-14T22:13:20.123Z",
            ),
            (
                UNIX_EPOCH - Duration::from_millis(1),
                "1969-12-31T23:59:59.999Z",
            ),
            (
                UNIX_EPOCH + Duration::from_secs(253_402_300_799),
                "9999-12-31T23:59:59.000Z",
            ),
        ] {
            let mut ours = Vec::new();
            Json::new(&mut ours).rfc3339(t);
            assert_eq!(ours, format!("\"{text}\"").into_bytes());
        }
        // Before year 0: the formatting machinery's spelling.
        let early = UNIX_EPOCH - Duration::from_secs(62_200_000_000);
        let mut ours = Vec::new();
        Json::new(&mut ours).rfc3339(early);
        assert!(
            ours.starts_with(b"\"-"),
            "{}",
            String::from_utf8_lossy(&ours)
        );
    }

    /// Every byte value around every position of an eight-byte word, alone and in
    /// runs, and text with multi-byte characters: the bytes `serde_json` writes.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "caf\u{e9} \u{1f600} \u{7f}\u{80}\u{9f}".into(),
            "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{0}i\u{1f}".into(),
            "x".repeat(1000),
        ];
        for c in 0u8..0x80 {
            for at in 0..17 {
                let mut s = "y".repeat(at);
                s.push(char::from(c));
                s.push_str(&"z".repeat(17 - at));
                cases.push(s);
            }
        }
        for case in cases {
            let mut ours = Vec::new();
            escape_into(&mut ours, &case);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&case).unwrap(),
                "{case:?}"
            );
        }
    }
}
