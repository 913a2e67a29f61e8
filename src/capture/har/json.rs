//! A small JSON writer for HAR entries: objects and arrays written straight into the
//! line's buffer, with no `serde_json::Value` tree between the record and the bytes
//! (building one cost more than everything else a saved flow costs). Strings and
//! numbers go through `serde_json`'s own formatting, so the bytes are what
//! `serde_json` would write; an object's keys are written in the order given, which
//! the callers keep sorted (as `serde_json::Map` sorts them), checked in debug builds.

/// The buffer a value is written into.
pub(super) struct Json<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Json<'a> {
    pub(super) fn new(out: &'a mut Vec<u8>) -> Self {
        Json { out }
    }

    /// Writes `value` as a JSON string, escaped as `serde_json` escapes it.
    pub(super) fn str(&mut self, value: &str) {
        escape_into(self.out, value);
    }

    /// Writes `value` as a JSON string, formatted straight into the buffer: for values
    /// whose text needs no escape (addresses, numbers, dates), so that it is the
    /// string [`str`](Self::str) would write of their `to_string()`.
    pub(super) fn display(&mut self, value: impl std::fmt::Display) {
        use std::io::Write as _;
        self.out.push(b'"');
        let start = self.out.len();
        // Writing into a `Vec` cannot fail.
        let _ = write!(self.out, "{value}");
        debug_assert!(!self.out[start..]
            .iter()
            .any(|&b| b < 0x20 || b == b'"' || b == b'\\'));
        self.out.push(b'"');
    }

    /// Writes a number (`null` for a NaN or an infinity, as `serde_json::Value` does).
    pub(super) fn f64(&mut self, value: f64) {
        if value.is_finite() {
            let _ = serde_json::to_writer(&mut *self.out, &value);
        } else {
            self.out.extend_from_slice(b"null");
        }
    }

    pub(super) fn i64(&mut self, value: i64) {
        let _ = serde_json::to_writer(&mut *self.out, &value);
    }

    pub(super) fn u64(&mut self, value: u64) {
        let _ = serde_json::to_writer(&mut *self.out, &value);
    }

    pub(super) fn bool(&mut self, value: bool) {
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

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

    pub(super) fn str(&mut self, key: &'static str, value: &str) {
        self.key(key).str(value);
    }

    pub(super) fn f64(&mut self, key: &'static str, value: f64) {
        self.key(key).f64(value);
    }

    pub(super) fn opt_f64(&mut self, key: &'static str, value: Option<f64>) {
        match value {
            Some(v) => self.key(key).f64(v),
            None => self.key(key).null(),
        }
    }

    pub(super) fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        match value {
            Some(v) => self.key(key).str(v),
            None => self.key(key).null(),
        }
    }

    pub(super) fn i64(&mut self, key: &'static str, value: i64) {
        self.key(key).i64(value);
    }

    pub(super) fn u64(&mut self, key: &'static str, value: u64) {
        self.key(key).u64(value);
    }

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
