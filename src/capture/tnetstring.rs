//! Typed netstrings (tnetstrings), the encoding of mitmproxy's flow files: each value
//! is `LENGTH:PAYLOAD` followed by a one-byte type tag, `,` bytes, `;` UTF-8 text, `#`
//! an integer, `^` a float, `!` a boolean, `~` null, `]` a list and `}` a dictionary
//! (keys and values alternating).
//!
//! [`Value::encode`] writes one value (the flow writer writes its flows in place, with
//! this module's crate-private `Encoder`, no `Value` in between); [`Decoder`] reads values one after another from
//! any [`Read`], with limits (on a value's length and on nesting) so that a damaged or
//! hostile file gives an error, never a panic or an allocation it did not earn with its
//! own bytes.
//!
//! ```
//! use mitm::capture::tnetstring::{Decoder, Value};
//!
//! let value = Value::Dict(vec![(Value::from("n"), Value::Int(12345))]);
//! let mut out = Vec::new();
//! value.encode(&mut out).unwrap();
//! assert_eq!(out, b"12:1:n;5:12345#}");
//! let mut decoder = Decoder::new(&out[..]);
//! assert_eq!(decoder.next_value().unwrap(), Some(value));
//! assert_eq!(decoder.next_value().unwrap(), None);
//! ```

use std::io::{self, Read, Write};

use bytes::Bytes;

/// The default of [`Decoder::max_len`]: the longest value (its payload) read, 2 GiB.
pub const DEFAULT_MAX_LEN: u64 = 2 << 30;
/// How deeply lists and dictionaries may nest (mitmproxy's flows nest about five deep).
pub const MAX_DEPTH: usize = 64;
/// The most digits a length may have (as mitmproxy's reader allows).
const MAX_DIGITS: usize = 12;

/// One tnetstring value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `,`: bytes.
    Bytes(Bytes),
    /// `;`: UTF-8 text (mitmproxy's extension of the format).
    Str(String),
    /// `#`: an integer (those that fit 64 bits).
    Int(i64),
    /// `^`: a float.
    Float(f64),
    /// `!`: `true` or `false`.
    Bool(bool),
    /// `~`: null.
    Null,
    /// `]`: a list.
    List(Vec<Value>),
    /// `}`: a dictionary, its entries in order.
    Dict(Vec<(Value, Value)>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl Value {
    /// The entry of a dictionary whose key is `key` (as text or as bytes: older flow
    /// files have byte keys); `None` if there is none or this is not a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let Value::Dict(entries) = self else {
            return None;
        };
        entries
            .iter()
            .find(|(k, _)| k.as_bytes() == Some(key.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The bytes of a `Bytes` or `Str` value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            Value::Str(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The name of this value's type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "string",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Bool(_) => "boolean",
            Value::Null => "null",
            Value::List(_) => "list",
            Value::Dict(_) => "dictionary",
        }
    }

    /// Writes this value, encoded, to `out` (in one write).
    pub fn encode(&self, out: &mut impl Write) -> io::Result<()> {
        let mut buf = Vec::with_capacity(1024);
        self.encode_into(&mut buf);
        out.write_all(&buf)
    }

    /// Appends this value, encoded, to `buf`. A container's items go first, then its
    /// length is put in front of them: each byte moves once per level it is nested in
    /// (flows nest a handful deep), and nothing is formatted twice.
    fn encode_into(&self, buf: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let put = |buf: &mut Vec<u8>, payload: &[u8], tag: u8| {
            let _ = write!(buf, "{}:", payload.len());
            buf.extend_from_slice(payload);
            buf.push(tag);
        };
        match self {
            Value::Bytes(b) => put(buf, b, b','),
            Value::Str(s) => put(buf, s.as_bytes(), b';'),
            Value::Int(i) => put(buf, i.to_string().as_bytes(), b'#'),
            Value::Float(f) => put(buf, format!("{f:?}").as_bytes(), b'^'),
            Value::Bool(b) => put(buf, if *b { b"true" } else { b"false" }, b'!'),
            Value::Null => buf.extend_from_slice(b"0:~"),
            Value::List(items) => {
                let start = buf.len();
                for item in items {
                    item.encode_into(buf);
                }
                prefix_length(buf, start);
                buf.push(b']');
            }
            Value::Dict(entries) => {
                let start = buf.len();
                for (k, v) in entries {
                    k.encode_into(buf);
                    v.encode_into(buf);
                }
                prefix_length(buf, start);
                buf.push(b'}');
            }
        }
    }
}

/// Puts `LEN:` before the bytes of `buf` from `start` on (`LEN` is how many there are).
fn prefix_length(buf: &mut Vec<u8>, start: usize) {
    let len = (buf.len() - start).to_string();
    buf.splice(start..start, len.bytes().chain([b':']));
}

/// Writes tnetstring values straight into a buffer, with no [`Value`] tree in
/// between: what a writer of many records uses, one record after another into the
/// same buffer.
///
/// A container's length goes before its items but is known only after them: the
/// encoder leaves room for a guessed number of digits, writes the items, then writes
/// the length into that room, moving the items only when the guess was wrong (by the
/// difference, so a wrong guess on a small container costs a few bytes moved).
#[derive(Debug)]
pub(crate) struct Encoder<'a> {
    buf: &'a mut Vec<u8>,
}

/// How many digits a container's length is guessed to have, when its writer gives no
/// hint: most of a flow's containers (connections, header lists) are 100–999 bytes.
const GUESS_DIGITS: usize = 3;

impl<'a> Encoder<'a> {
    /// An encoder appending to `buf`.
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        Encoder { buf }
    }

    /// `,`: bytes.
    #[inline]
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.leaf(b, b',');
    }

    /// `;`: text.
    #[inline]
    pub(crate) fn str(&mut self, s: &str) {
        self.leaf(s.as_bytes(), b';');
    }

    /// `;`: text that `ascii` holds (the caller knows it is ASCII).
    pub(crate) fn ascii(&mut self, ascii: &[u8]) {
        debug_assert!(ascii.is_ascii());
        self.leaf(ascii, b';');
    }

    /// `#`: an integer.
    pub(crate) fn int(&mut self, i: i64) {
        let mut digits = [0u8; 20];
        let text = decimal(i.unsigned_abs(), &mut digits);
        let negative = usize::from(i < 0);
        self.length(text.len() + negative);
        if i < 0 {
            self.buf.push(b'-');
        }
        self.buf.extend_from_slice(text);
        self.buf.push(b'#');
    }

    /// `^`: a float, as `{:?}` writes it (what [`Value::Float`] encodes to).
    pub(crate) fn float(&mut self, f: f64) {
        // Between 1 and 10^15 (timestamps), ryu writes what `{:?}` does: the shortest
        // digits that read back as `f`, a decimal point, `.0` for a whole number; and
        // faster. Outside, the two differ in where they turn to exponents.
        if (1.0..1e15).contains(&f.abs()) {
            let mut text = ryu::Buffer::new();
            self.leaf(text.format_finite(f).as_bytes(), b'^');
            return;
        }
        // `{:?}` of an f64 is at most 24 characters (`-2.2250738585072014e-308`): the
        // room is guessed as 2 digits and shrunk to 1 when shorter than 10.
        let at = self.buf.len();
        self.buf.extend_from_slice(b"00:");
        // Writing to a Vec cannot fail.
        let _ = write!(self.buf, "{f:?}");
        self.close(at, 2, b'^');
    }

    /// `!`: a boolean.
    #[inline]
    pub(crate) fn bool(&mut self, b: bool) {
        self.buf
            .extend_from_slice(if b { b"4:true!" } else { b"5:false!" });
    }

    /// `~`: null.
    #[inline]
    pub(crate) fn null(&mut self) {
        self.buf.extend_from_slice(b"0:~");
    }

    /// `]`: a list of the values `items` writes.
    pub(crate) fn list(&mut self, items: impl FnOnce(&mut Self)) {
        self.container(b']', GUESS_DIGITS, items);
    }

    /// `}`: a dictionary of the keys and values `entries` writes, one after the other.
    pub(crate) fn dict(&mut self, entries: impl FnOnce(&mut Self)) {
        self.container(b'}', GUESS_DIGITS, entries);
    }

    /// A dictionary expected to be about `size_hint` bytes long (its room is sized
    /// for that: a right hint spares moving a large dictionary's items).
    pub(crate) fn dict_sized(&mut self, size_hint: usize, entries: impl FnOnce(&mut Self)) {
        self.container(b'}', digit_count(size_hint as u64), entries);
    }

    /// A list expected to be about `size_hint` bytes long (as
    /// [`dict_sized`](Self::dict_sized)).
    pub(crate) fn list_sized(&mut self, size_hint: usize, items: impl FnOnce(&mut Self)) {
        self.container(b']', digit_count(size_hint as u64), items);
    }

    /// An entry of a dictionary whose key is the text `key`. Inlined: a key is a
    /// constant, so its length prefix is too, and its bytes are copied without a call.
    #[inline(always)]
    pub(crate) fn key(&mut self, key: &str) -> &mut Self {
        self.str(key);
        self
    }

    #[inline(always)]
    fn leaf(&mut self, payload: &[u8], tag: u8) {
        self.length(payload.len());
        self.buf.extend_from_slice(payload);
        self.buf.push(tag);
    }

    /// Writes `LEN:` (short ones, most of a flow's, without a loop or a call).
    #[inline(always)]
    fn length(&mut self, len: usize) {
        // Each digit fits a byte.
        if len < 10 {
            self.buf.extend_from_slice(&[b'0' + len as u8, b':']);
            return;
        }
        if len < 100 {
            let (tens, ones) = (len / 10, len % 10);
            self.buf
                .extend_from_slice(&[b'0' + tens as u8, b'0' + ones as u8, b':']);
            return;
        }
        let mut digits = [0u8; 20];
        self.buf.extend_from_slice(decimal(len as u64, &mut digits));
        self.buf.push(b':');
    }

    fn container(&mut self, tag: u8, guess: usize, items: impl FnOnce(&mut Self)) {
        let at = self.buf.len();
        self.buf.resize(at + guess, b'0');
        self.buf.push(b':');
        items(self);
        self.close(at, guess, tag);
    }

    /// Ends the value whose room for `guess` digits starts at `at`: its length written
    /// there (the items moved if it has another number of digits), then `tag`.
    fn close(&mut self, at: usize, guess: usize, tag: u8) {
        let start = at + guess + 1;
        let end = self.buf.len();
        let len = end - start;
        let mut digits = [0u8; 20];
        let text = decimal(len as u64, &mut digits);
        let need = text.len();
        if need > guess {
            let more = need - guess;
            self.buf.resize(end + more, 0);
            self.buf.copy_within(start..end, start + more);
        } else if need < guess {
            let less = guess - need;
            self.buf.copy_within(start..end, start - less);
            self.buf.truncate(end - less);
        }
        self.buf[at..at + need].copy_from_slice(text);
        self.buf[at + need] = b':';
        self.buf.push(tag);
    }
}

/// How many decimal digits `n` has.
fn digit_count(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// `n` in decimal, written at the end of `out`.
fn decimal(mut n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut at = out.len();
    loop {
        at -= 1;
        // A digit: fits a byte.
        out[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[at..];
        }
    }
}

/// Why a value could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Reading failed.
    #[error("read failed")]
    Io(#[source] io::Error),
    /// The bytes are not a tnetstring, or one past the decoder's limits.
    #[error("at byte {offset}: {reason}")]
    Format {
        /// Where the value that is wrong starts, from the start of the input.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Reads tnetstring values one after another from a [`Read`] (buffer it: the length
/// prefix is read a byte at a time).
#[derive(Debug)]
pub struct Decoder<R> {
    input: R,
    offset: u64,
    max_len: u64,
}

impl<R: Read> Decoder<R> {
    /// A decoder over `input`, allowing values up to [`DEFAULT_MAX_LEN`].
    pub fn new(input: R) -> Self {
        Decoder {
            input,
            offset: 0,
            max_len: DEFAULT_MAX_LEN,
        }
    }

    /// The longest payload a top-level value may declare; longer ones are an error.
    /// Default: [`DEFAULT_MAX_LEN`].
    #[must_use]
    pub fn max_len(mut self, bytes: u64) -> Self {
        self.max_len = bytes;
        self
    }

    /// How many bytes were consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next value, or `None` at the end of the input (between values). A value cut
    /// short is an error.
    pub fn next_value(&mut self) -> Result<Option<Value>, DecodeError> {
        let start = self.offset;
        let format = |reason: String| DecodeError::Format {
            offset: start,
            reason,
        };
        // The length prefix, a byte at a time: nothing past this value is consumed.
        let mut len: u64 = 0;
        let mut digits = 0;
        loop {
            let Some(byte) = self.byte()? else {
                if digits == 0 {
                    return Ok(None);
                }
                return Err(format(
                    "truncated: the input ends in a length prefix".into(),
                ));
            };
            match byte {
                b'0'..=b'9' if digits < MAX_DIGITS => {
                    len = len * 10 + u64::from(byte - b'0');
                    digits += 1;
                }
                b'0'..=b'9' => return Err(format("length prefix too long".into())),
                b':' if digits > 0 => break,
                _ => {
                    return Err(format(format!(
                        "not a tnetstring: expected a length prefix, found byte 0x{byte:02x}"
                    )))
                }
            }
        }
        if len > self.max_len {
            return Err(format(format!(
                "value of {len} bytes is longer than the limit of {} bytes",
                self.max_len
            )));
        }
        // Grows with the bytes that actually arrive, so a false length costs nothing.
        let mut payload = Vec::new();
        let got = (&mut self.input)
            .take(len + 1)
            .read_to_end(&mut payload)
            .map_err(DecodeError::Io)?;
        self.offset += got as u64;
        if (got as u64) < len + 1 {
            return Err(format(format!(
                "truncated: a value of {len} bytes, but the input ends after {}",
                (got as u64).min(len)
            )));
        }
        let tag = payload.pop().unwrap_or_default();
        let payload = Bytes::from(payload);
        parse(tag, payload, 0)
            .map(Some)
            .map_err(|(at, reason)| format!("{reason} (at byte {})", start + at as u64))
            .map_err(format)
    }

    /// One byte, or `None` at the end.
    fn byte(&mut self) -> Result<Option<u8>, DecodeError> {
        let mut b = [0u8; 1];
        loop {
            match self.input.read(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    self.offset += 1;
                    return Ok(Some(b[0]));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DecodeError::Io(e)),
            }
        }
    }
}

/// A failure inside a payload: where (from the payload's start) and what.
type ParseError = (usize, String);

fn text(data: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(data).map_err(|_| (0, "invalid UTF-8 in a text value".to_string()))
}

/// The value of type `tag` whose payload is `data`.
fn parse(tag: u8, data: Bytes, depth: usize) -> Result<Value, ParseError> {
    Ok(match tag {
        b',' => Value::Bytes(data),
        b';' => Value::Str(text(&data)?.to_string()),
        b'#' => Value::Int(
            text(&data)?
                .parse()
                .map_err(|_| (0, format!("invalid integer {:?}", lossy(&data))))?,
        ),
        b'^' => Value::Float(
            text(&data)?
                .parse()
                .map_err(|_| (0, format!("invalid float {:?}", lossy(&data))))?,
        ),
        b'!' => match &data[..] {
            b"true" => Value::Bool(true),
            b"false" => Value::Bool(false),
            _ => return Err((0, format!("invalid boolean {:?}", lossy(&data)))),
        },
        b'~' if data.is_empty() => Value::Null,
        b'~' => return Err((0, "null with a payload".into())),
        b']' | b'}' => {
            if depth >= MAX_DEPTH {
                return Err((0, format!("nested more than {MAX_DEPTH} deep")));
            }
            let mut items = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let (item, next) = pop(&data, at, depth + 1)?;
                items.push(item);
                at = next;
            }
            if tag == b']' {
                Value::List(items)
            } else {
                if items.len() % 2 != 0 {
                    return Err((0, "a dictionary key without a value".into()));
                }
                let mut entries = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    entries.push((k, v));
                }
                Value::Dict(entries)
            }
        }
        other => return Err((0, format!("unknown type tag 0x{other:02x}"))),
    })
}

/// The value that starts at `at` in `data`, and where the next one starts.
fn pop(data: &Bytes, at: usize, depth: usize) -> Result<(Value, usize), ParseError> {
    let rest = &data[at..];
    let colon = rest
        .iter()
        .take(MAX_DIGITS + 1)
        .position(|&b| b == b':')
        .ok_or((at, "missing or invalid length prefix".to_string()))?;
    let prefix = &rest[..colon];
    if prefix.is_empty() || !prefix.iter().all(u8::is_ascii_digit) {
        return Err((at, "missing or invalid length prefix".into()));
    }
    // At most 12 digits: fits.
    let len: usize = std::str::from_utf8(prefix)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or((at, "invalid length prefix".to_string()))?;
    let start = at + colon + 1;
    let end = start
        .checked_add(len)
        .filter(|&end| end < data.len())
        .ok_or((at, format!("length {len} runs past its container")))?;
    let value = parse(data[end], data.slice(start..end), depth).map_err(|(o, r)| (start + o, r))?;
    Ok((value, end + 1))
}

fn lossy(data: &[u8]) -> String {
    String::from_utf8_lossy(&data[..data.len().min(40)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        v.encode(&mut out).unwrap();
        out
    }

    fn decode_all(data: &[u8]) -> Result<Vec<Value>, DecodeError> {
        let mut d = Decoder::new(data);
        let mut out = Vec::new();
        while let Some(v) = d.next_value()? {
            out.push(v);
        }
        Ok(out)
    }

    fn sample() -> Value {
        Value::Dict(vec![
            (
                Value::from("bytes"),
                Value::Bytes(Bytes::from_static(b"\0\xff,]}")),
            ),
            (Value::from("text"), Value::from("héllo ;:")),
            (
                Value::from("ints"),
                Value::List(vec![
                    Value::Int(0),
                    Value::Int(-17),
                    Value::Int(i64::MAX),
                    Value::Int(i64::MIN),
                ]),
            ),
            (
                Value::from("floats"),
                Value::List(vec![
                    Value::Float(1700000000.25),
                    Value::Float(1.0),
                    Value::Float(-0.5),
                    Value::Float(1e300),
                ]),
            ),
            (
                Value::from("bools"),
                Value::List(vec![Value::Bool(true), Value::Bool(false)]),
            ),
            (Value::from("null"), Value::Null),
            (Value::from("empty"), Value::List(vec![])),
            (
                Value::Bytes(Bytes::from_static(b"nested")),
                Value::Dict(vec![(Value::from("a"), Value::Dict(vec![]))]),
            ),
        ])
    }

    #[test]
    fn encodes_as_mitmproxy_does() {
        assert_eq!(encoded(&Value::from("hello world")), b"11:hello world;");
        assert_eq!(encoded(&Value::Bytes(Bytes::from_static(b"hi"))), b"2:hi,");
        assert_eq!(encoded(&Value::Int(12345)), b"5:12345#");
        assert_eq!(encoded(&Value::Int(-3)), b"2:-3#");
        assert_eq!(encoded(&Value::Null), b"0:~");
        assert_eq!(encoded(&Value::Bool(true)), b"4:true!");
        assert_eq!(encoded(&Value::Float(2.5)), b"3:2.5^");
        assert_eq!(
            encoded(&Value::List(vec![
                Value::Int(12345),
                Value::Bool(true),
                Value::Int(0)
            ])),
            b"19:5:12345#4:true!1:0#]"
        );
    }

    #[test]
    fn round_trips_every_type_and_several_values_in_a_row() {
        let mut data = encoded(&sample());
        data.extend(encoded(&Value::Int(7)));
        data.extend(encoded(&sample()));
        assert_eq!(
            decode_all(&data).unwrap(),
            [sample(), Value::Int(7), sample()]
        );
        let Value::Float(nan) = decode_all(&encoded(&Value::Float(f64::NAN))).unwrap()[0] else {
            panic!("not a float");
        };
        assert!(nan.is_nan());
    }

    #[test]
    fn reads_what_python_writes() {
        // mitmproxy's tnetstring.dumps({"a": [1.5, None, b"x", "é", -2, True]}), then 42.
        let data = b"38:1:a;30:3:1.5^0:~1:x,2:\xc3\xa9;2:-2#4:true!]}2:42#";
        let list = vec![
            Value::Float(1.5),
            Value::Null,
            Value::Bytes(Bytes::from_static(b"x")),
            Value::from("é"),
            Value::Int(-2),
            Value::Bool(true),
        ];
        assert_eq!(
            decode_all(data).unwrap(),
            [
                Value::Dict(vec![(Value::from("a"), Value::List(list))]),
                Value::Int(42)
            ]
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let data = encoded(&sample());
        for cut in 1..data.len() {
            let err = decode_all(&data[..cut]).unwrap_err();
            assert!(
                matches!(err, DecodeError::Format { .. }),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn corrupt_input_gives_clear_errors() {
        let bad: &[(&[u8], &str)] = &[
            (b"x", "expected a length prefix"),
            (b"3:abc?", "unknown type tag"),
            (b"2:1x#", "invalid integer"),
            (b"3:yes!", "invalid boolean"),
            (b"1:x~", "null with a payload"),
            (b"4:1:a;}", "without a value"),
            (b"5:9:ab,]", "runs past"),
            (b"2:\xff\xfe;", "invalid UTF-8"),
            (b"1234567890123:", "too long"),
            (b"99999999999:", "longer than the limit"),
            (b"99999:", "truncated"),
            (b"30:99999999999999999999#", "truncated"),
            (b"20:99999999999999999999#", "invalid integer"),
        ];
        for (input, want) in bad {
            let err = decode_all(input).unwrap_err().to_string();
            assert!(err.contains(want), "{:?}: {err}", lossy(input));
        }
        let limited = Decoder::new(&b"10:0123456789,"[..]).max_len(5).next_value();
        assert!(limited
            .unwrap_err()
            .to_string()
            .contains("longer than the limit"));
    }

    /// `value` written with an [`Encoder`], as a writer of records would.
    fn encoded_in_place(value: &Value) -> Vec<u8> {
        fn put(e: &mut Encoder<'_>, v: &Value) {
            match v {
                Value::Bytes(b) => e.bytes(b),
                Value::Str(s) => e.str(s),
                Value::Int(i) => e.int(*i),
                Value::Float(f) => e.float(*f),
                Value::Bool(b) => e.bool(*b),
                Value::Null => e.null(),
                Value::List(items) => e.list(|e| items.iter().for_each(|i| put(e, i))),
                Value::Dict(entries) => e.dict(|e| {
                    for (k, v) in entries {
                        put(e, k);
                        put(e, v);
                    }
                }),
            }
        }
        let mut out = b"before".to_vec();
        put(&mut Encoder::new(&mut out), value);
        assert_eq!(&out[..6], b"before");
        out.split_off(6)
    }

    #[test]
    fn the_encoder_writes_what_a_value_encodes_to() {
        let mut values = vec![sample(), Value::Int(0), Value::Float(f64::NAN)];
        values.extend([-1.5e-300, 0.1, 123456789.125, f64::MAX, f64::INFINITY].map(Value::Float));
        values.extend([i64::MIN, -1, 9, 10, i64::MAX].map(Value::Int));
        // Containers whose lengths have 1 to 6 digits, against the guess of 3 and of
        // the size hint, on both sides of every power of ten.
        for len in [
            0, 1, 8, 9, 10, 11, 98, 99, 100, 101, 998, 999, 1000, 1001, 99_996, 100_000,
        ] {
            let item = Value::Bytes(Bytes::from(vec![b'x'; len]));
            values.push(Value::List(vec![item.clone()]));
            values.push(Value::Dict(vec![(Value::from("k"), item)]));
        }
        for v in &values {
            assert_eq!(encoded_in_place(v), encoded(v), "{v:?}");
        }
        for hint in [0, 5, 50, 5000, 1 << 40] {
            for len in [0, 7, 120, 4000, 20_000] {
                let mut out = Vec::new();
                Encoder::new(&mut out).dict_sized(hint, |e| {
                    e.key("k").bytes(&vec![b'y'; len]);
                });
                let want = Value::Dict(vec![(
                    Value::from("k"),
                    Value::Bytes(Bytes::from(vec![b'y'; len])),
                )]);
                assert_eq!(out, encoded(&want), "hint {hint}, {len} bytes");
            }
        }
    }

    #[test]
    fn floats_are_written_as_debug_writes_them() {
        // Every power of ten, halves and thirds around it, and timestamps with every
        // number of decimals: through ryu inside its range, `{:?}` outside.
        let mut values = vec![0.0, -0.0, 1.0, -1.0, 0.5, f64::MIN_POSITIVE, 1e15 - 0.5];
        for exp in -20..=20 {
            let p = 10f64.powi(exp);
            values.extend([
                p,
                p * 0.5,
                p / 3.0,
                -p / 7.0,
                p * 1.000_000_1,
                p - p * 1e-12,
            ]);
        }
        let mut x = 1_700_000_000.0_f64;
        for i in 0..2000 {
            values.push(x);
            x += 0.000_137 * f64::from(i) + 1.0 / 3.0;
        }
        for f in values {
            let mut out = Vec::new();
            Encoder::new(&mut out).float(f);
            assert_eq!(out, encoded(&Value::Float(f)), "{f:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut v = Value::Null;
        for _ in 0..=MAX_DEPTH + 1 {
            v = Value::List(vec![v]);
        }
        let err = decode_all(&encoded(&v)).unwrap_err().to_string();
        assert!(err.contains("nested"), "{err}");
    }
}
