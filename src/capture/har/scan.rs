//! [`EntryScanner`]: the entries of a HAR document, one at a time, as the bytes of
//! each, from any [`BufRead`], without reading the rest of the document into memory.
//!
//! The scanner follows the document's frame (the root object, its `log` object, the
//! `entries` array in it) byte by byte, whatever order the keys come in and whatever
//! else is there (`pages` before or after `entries`, fields of other tools): values of
//! other keys are skipped over, bracket by bracket, without being kept. Each entry's
//! bytes are cut out whole (strings and nesting followed, so a `]` in a body ends
//! nothing) and handed over; parsing one is serde's job, on those bytes alone.
//!
//! What it checks is the frame: brackets that match, the commas and colons between
//! members, a `log` that is an object, `entries` that is an array, nothing after the
//! root but white space. Inside a value it skips, it checks only that strings end and
//! brackets match; inside an entry, serde checks the rest.

use std::io::{self, BufRead};

/// How deeply a value may nest (the scanner keeps one byte per level). HAR entries
/// nest about five deep; serde refuses an entry nested deeper than 128 in any case.
pub(super) const MAX_NESTING: usize = 1024;

/// Why the scan stopped: the bytes are not the frame of a HAR document, or reading
/// failed.
#[derive(Debug)]
pub(super) enum ScanError {
    /// Reading the input failed.
    Io(io::Error),
    /// The bytes are not a HAR document's frame.
    Format {
        /// Where, from the start of the input.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// One entry of the `entries` array: its bytes, its place in the array, and where it
/// starts in the input.
#[derive(Debug)]
pub(super) struct RawEntry {
    /// Its position in the array, from 0.
    pub index: usize,
    /// The offset of its first byte in the input.
    pub offset: u64,
    /// Its bytes, as they are in the input (a JSON value).
    pub bytes: Vec<u8>,
}

/// Where the scan is: which object or array of the frame it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// The root object.
    Root,
    /// The `log` object.
    Log,
    /// The `entries` array.
    Entries,
}

/// The entries of a HAR document read from `input`, one [`RawEntry`] at a time
/// ([`next_entry`](Self::next_entry)).
#[derive(Debug)]
pub(super) struct EntryScanner<R> {
    input: R,
    /// Bytes consumed so far.
    offset: u64,
    /// The objects and arrays of the frame the scan is in, outermost first.
    levels: Vec<Level>,
    /// Whether the next member of the innermost level is its first (no comma before).
    first: bool,
    /// Whether the root object has been opened.
    started: bool,
    /// Whether an `entries` array was found in `log`.
    found_entries: bool,
    /// How many entries were handed over.
    entries: usize,
    /// Whether the scan has ended (at the end of the document or at an error).
    done: bool,
}

impl<R: BufRead> EntryScanner<R> {
    /// A scanner of the document in `input`.
    pub fn new(input: R) -> Self {
        EntryScanner {
            input,
            offset: 0,
            levels: Vec::with_capacity(3),
            first: true,
            started: false,
            found_entries: false,
            entries: 0,
            done: false,
        }
    }

    /// The next entry; `None` at the end of a whole document. An error ends the scan:
    /// every later call gives `None`.
    pub fn next_entry(&mut self) -> Result<Option<RawEntry>, ScanError> {
        if self.done {
            return Ok(None);
        }
        let next = self.advance();
        if !matches!(next, Ok(Some(_))) {
            self.done = true;
        }
        next
    }

    fn advance(&mut self) -> Result<Option<RawEntry>, ScanError> {
        loop {
            let Some(&level) = self.levels.last() else {
                if self.started {
                    return self.end_of_document().map(|()| None);
                }
                self.skip_bom()?;
                self.skip_space()?;
                self.expect(b'{', "a HAR document (a JSON object)")?;
                self.started = true;
                self.levels.push(Level::Root);
                self.first = true;
                continue;
            };
            self.skip_space()?;
            let close = if level == Level::Entries { b']' } else { b'}' };
            if self.peek()? == Some(close) {
                self.bump();
                self.levels.pop();
                self.first = false;
                continue;
            }
            if !self.first {
                let what = match level {
                    Level::Entries => "',' or ']' after an entry",
                    _ => "',' or '}' after a member of an object",
                };
                self.expect(b',', what)?;
                self.skip_space()?;
            }
            self.first = false;
            if level == Level::Entries {
                let offset = self.offset;
                let mut bytes = Vec::new();
                self.value(Some(&mut bytes))
                    .map_err(|e| self.in_entry(e, self.entries))?;
                let index = self.entries;
                self.entries += 1;
                return Ok(Some(RawEntry {
                    index,
                    offset,
                    bytes,
                }));
            }
            let key = self.key()?;
            self.skip_space()?;
            self.expect(b':', "':' after a key")?;
            self.skip_space()?;
            match (level, key.as_str()) {
                (Level::Root, "log") => {
                    self.expect(b'{', "`log` to be an object")?;
                    self.levels.push(Level::Log);
                    self.first = true;
                }
                (Level::Log, "entries") => {
                    self.expect(b'[', "`log.entries` to be an array")?;
                    self.levels.push(Level::Entries);
                    self.first = true;
                    self.found_entries = true;
                }
                _ => self.value(None)?,
            }
        }
    }

    /// After the root object: white space only, and the `entries` array seen.
    fn end_of_document(&mut self) -> Result<(), ScanError> {
        self.skip_space()?;
        if let Some(b) = self.peek()? {
            return Err(self.unexpected(Some(b), "nothing after the document"));
        }
        if !self.found_entries {
            return Err(self.format("no log.entries array: not a HAR file".into()));
        }
        Ok(())
    }

    /// An error inside entry `index`, said so.
    fn in_entry(&self, e: ScanError, index: usize) -> ScanError {
        match e {
            ScanError::Format { offset, reason } => ScanError::Format {
                offset,
                reason: format!("entry {index}: {reason}"),
            },
            io => io,
        }
    }

    /// A key: a JSON string, decoded.
    fn key(&mut self) -> Result<String, ScanError> {
        let offset = self.offset;
        if self.peek()? != Some(b'"') {
            let b = self.peek()?;
            return Err(self.unexpected(b, "a key (a string)"));
        }
        let mut raw = Vec::new();
        self.value(Some(&mut raw))?;
        serde_json::from_slice(&raw).map_err(|e| ScanError::Format {
            offset,
            reason: format!("a key that is not a valid string: {e}"),
        })
    }

    /// Reads one JSON value, white space before it skipped, its bytes appended to
    /// `keep` if given. Strings and nesting are followed; the bytes of a number or a
    /// literal are taken up to the next delimiter, unchecked.
    fn value(&mut self, mut keep: Option<&mut Vec<u8>>) -> Result<(), ScanError> {
        let start = self.offset;
        let mut nesting: Vec<u8> = Vec::new();
        let (mut in_string, mut escaped, mut scalar) = (false, false, false);
        loop {
            let chunk = match self.input.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ScanError::Io(e)),
            };
            if chunk.is_empty() {
                if scalar {
                    return Ok(());
                }
                let what = if in_string {
                    "a string"
                } else if nesting.is_empty() {
                    return Err(self.unexpected(None, "a value"));
                } else {
                    "an object or array"
                };
                return Err(ScanError::Format {
                    offset: self.offset,
                    reason: format!(
                        "the file ends inside {what} that starts at byte {start} (truncated?)"
                    ),
                });
            }
            // How much of `chunk` belongs to the value, and whether it ends there.
            let mut used = chunk.len();
            let mut ended = false;
            let mut bad: Option<(usize, String)> = None;
            for (i, &b) in chunk.iter().enumerate() {
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if nesting.is_empty() {
                            (used, ended) = (i + 1, true);
                            break;
                        }
                    }
                    continue;
                }
                if scalar {
                    if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                        (used, ended) = (i, true);
                        break;
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => {
                        if nesting.len() == MAX_NESTING {
                            bad = Some((i, format!("nested more than {MAX_NESTING} deep")));
                            break;
                        }
                        nesting.push(if b == b'{' { b'}' } else { b']' });
                    }
                    b'}' | b']' => {
                        if nesting.last() != Some(&b) {
                            let want = match nesting.last() {
                                Some(&c) => format!("'{}'", c as char),
                                None => "a value".into(),
                            };
                            bad = Some((i, format!("'{}' where {want} belongs", b as char)));
                            break;
                        }
                        nesting.pop();
                        if nesting.is_empty() {
                            (used, ended) = (i + 1, true);
                            break;
                        }
                    }
                    b',' | b':' if nesting.is_empty() => {
                        bad = Some((i, format!("'{}' where a value belongs", b as char)));
                        break;
                    }
                    _ if nesting.is_empty() => scalar = true,
                    _ => {}
                }
            }
            if let Some((at, reason)) = bad {
                return Err(ScanError::Format {
                    offset: self.offset + at as u64,
                    reason,
                });
            }
            if let Some(keep) = keep.as_deref_mut() {
                keep.extend_from_slice(&chunk[..used]);
            }
            self.input.consume(used);
            self.offset += used as u64;
            if ended {
                return Ok(());
            }
        }
    }

    /// Skips a UTF-8 byte order mark at the start (some Windows tools write one).
    fn skip_bom(&mut self) -> Result<(), ScanError> {
        const BOM: &[u8] = b"\xef\xbb\xbf";
        loop {
            match self.input.fill_buf() {
                Ok(chunk) if chunk.starts_with(BOM) => {
                    self.input.consume(BOM.len());
                    self.offset += BOM.len() as u64;
                    return Ok(());
                }
                // A buffer shorter than the mark that could be its start: too rare to
                // piece together (a `BufReader` gives at least its capacity).
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ScanError::Io(e)),
            }
        }
    }

    /// Skips JSON white space.
    fn skip_space(&mut self) -> Result<(), ScanError> {
        loop {
            let chunk = match self.input.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ScanError::Io(e)),
            };
            if chunk.is_empty() {
                return Ok(());
            }
            let n = chunk
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            let all = n == chunk.len();
            self.input.consume(n);
            self.offset += n as u64;
            if !all {
                return Ok(());
            }
        }
    }

    /// The next byte, not consumed; `None` at the end of the input.
    fn peek(&mut self) -> Result<Option<u8>, ScanError> {
        loop {
            match self.input.fill_buf() {
                Ok(chunk) => return Ok(chunk.first().copied()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ScanError::Io(e)),
            }
        }
    }

    /// Consumes the byte [`peek`](Self::peek) saw.
    fn bump(&mut self) {
        self.input.consume(1);
        self.offset += 1;
    }

    /// Consumes `want`, or fails saying `what` was expected.
    fn expect(&mut self, want: u8, what: &str) -> Result<(), ScanError> {
        match self.peek()? {
            Some(b) if b == want => {
                self.bump();
                Ok(())
            }
            other => Err(self.unexpected(other, what)),
        }
    }

    /// "expected `what`, found …" at the current offset.
    fn unexpected(&self, found: Option<u8>, what: &str) -> ScanError {
        let found = match found {
            None => "the end of the file (truncated?)".to_string(),
            Some(b) if b.is_ascii_graphic() => format!("'{}'", b as char),
            Some(b) => format!("byte 0x{b:02x}"),
        };
        self.format(format!("expected {what}, found {found}"))
    }

    fn format(&self, reason: String) -> ScanError {
        ScanError::Format {
            offset: self.offset,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries of `doc` as text, and the error that ended the scan, if any (its
    /// offset and reason).
    fn scan(doc: &str) -> (Vec<String>, Option<(u64, String)>) {
        // A small buffer, so that values span many chunks.
        let mut scanner = EntryScanner::new(io::BufReader::with_capacity(3, doc.as_bytes()));
        let mut entries = Vec::new();
        loop {
            match scanner.next_entry() {
                Ok(Some(e)) => {
                    assert_eq!(e.index, entries.len());
                    assert_eq!(
                        &doc.as_bytes()[e.offset as usize..][..e.bytes.len()],
                        &e.bytes[..]
                    );
                    entries.push(String::from_utf8(e.bytes).unwrap());
                }
                Ok(None) => return (entries, None),
                Err(ScanError::Format { offset, reason }) => {
                    assert!(scanner.next_entry().unwrap().is_none(), "after an error");
                    return (entries, Some((offset, reason)));
                }
                Err(ScanError::Io(e)) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn entries_are_found_whatever_comes_before_or_after_them() {
        let docs = [
            r#"{"log": {"entries": [{"a": 1}, {"b": "]}"}]}}"#,
            r#"{"log": {"version": "1.2", "pages": [{"id": "p", "x": [1, {"y": "}"}]}],
                "creator": {"name": "x"}, "entries": [ {"a": 1} ,{"b": "]}"} ]}}"#,
            r#"{"x": [[], {}], "log": {"entries": [{"a": 1}, {"b": "]}"}],
                "pages": [], "comment": "a \" quote"}, "y": -1.5e3, "z": null}"#,
            " \n{ \"log\" :{\"entries\":[{\"a\": 1},\n{\"b\": \"]}\"}\n]}\n}\n ",
        ];
        for doc in docs {
            let (entries, error) = scan(doc);
            assert_eq!(error, None, "{doc}");
            let entries: Vec<String> = entries.iter().map(|e| e.replace(' ', "")).collect();
            assert_eq!(entries, [r#"{"a":1}"#, r#"{"b":"]}"}"#], "{doc}");
        }
    }

    #[test]
    fn empty_entries_are_none_and_a_missing_array_is_an_error() {
        assert_eq!(scan(r#"{"log": {"entries": []}}"#), (vec![], None));
        assert_eq!(
            scan(r#"{"log": {"entries": [  ]}, "pages": []}"#),
            (vec![], None)
        );
        for doc in [
            r#"{"log": {"version": "1.2"}}"#,
            r#"{}"#,
            r#"{"entries": []}"#,
        ] {
            let (entries, error) = scan(doc);
            assert!(entries.is_empty());
            assert!(error.unwrap().1.contains("no log.entries array"), "{doc}");
        }
    }

    #[test]
    fn a_frame_that_is_not_har_is_an_error_where_it_goes_wrong() {
        let cases = [
            ("", 0, "expected a HAR document"),
            ("[]", 0, "expected a HAR document"),
            (r#"{"log": 5}"#, 8, "expected `log` to be an object"),
            (r#"{"log": null}"#, 8, "expected `log` to be an object"),
            (
                r#"{"log": {"entries": {}}}"#,
                20,
                "`log.entries` to be an array",
            ),
            (
                r#"{"log": {"entries": []}} x"#,
                25,
                "nothing after the document",
            ),
            (r#"{"log": {"entries": []} "#, 24, "truncated"),
            (r#"{"log" {"#, 7, "expected ':'"),
            (r#"{log: 1}"#, 1, "expected a key"),
            (r#"{"a": 1 "b": 2}"#, 8, "expected ',' or '}'"),
            (r#"{"a": [1, 2}"#, 11, "'}' where ']' belongs"),
            (r#"{"a": ,}"#, 6, "',' where a value belongs"),
            (
                r#"{"a": "open"#,
                11,
                "ends inside a string that starts at byte 6",
            ),
        ];
        for (doc, offset, want) in cases {
            let (entries, error) = scan(doc);
            assert!(entries.is_empty(), "{doc}");
            let (at, reason) = error.unwrap_or_else(|| panic!("no error for {doc}"));
            assert!(reason.contains(want), "{doc}: {reason}");
            assert_eq!(at, offset, "{doc}: {reason}");
        }
    }

    #[test]
    fn entries_before_damage_come_out_then_the_error_naming_the_entry() {
        let cut = r#"{"log": {"entries": [{"a": 1}, {"b": {"c": [1, 2"#;
        let (entries, error) = scan(cut);
        assert_eq!(entries, [r#"{"a": 1}"#]);
        let (at, reason) = error.unwrap();
        assert_eq!(at, cut.len() as u64);
        assert!(
            reason.starts_with("entry 1: the file ends inside"),
            "{reason}"
        );
        assert!(reason.contains("byte 31"), "{reason}");

        let (entries, error) = scan(r#"{"log": {"entries": [{"a": 1}, {"b": [}]}}"#);
        assert_eq!(entries, [r#"{"a": 1}"#]);
        assert!(error.unwrap().1.contains("entry 1: '}' where ']' belongs"));

        // Damage after the entries (in `pages`) comes after them.
        let (entries, error) = scan(r#"{"log": {"entries": [{}, {}], "pages": [}"#);
        assert_eq!(entries, ["{}", "{}"]);
        assert!(error.unwrap().1.contains("'}' where ']' belongs"));

        let (entries, error) = scan(r#"{"log": {"entries": [{} {}]}}"#);
        assert_eq!(entries, ["{}"]);
        assert!(error
            .unwrap()
            .1
            .contains("expected ',' or ']' after an entry"));
    }

    #[test]
    fn nesting_is_bounded_and_followed_without_recursion() {
        let deep = format!(
            r#"{{"log": {{"pages": {}{}, "entries": []}}}}"#,
            "[".repeat(MAX_NESTING),
            "]".repeat(MAX_NESTING)
        );
        assert_eq!(scan(&deep), (vec![], None));
        let deeper = format!(r#"{{"log": {{"entries": [{}]}}}}"#, "[".repeat(10_000));
        let (_, error) = scan(&deeper);
        assert!(error.unwrap().1.contains("nested more than 1024 deep"));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let doc = "\u{feff}{\"log\": {\"entries\": [{}]}}";
        let mut scanner = EntryScanner::new(doc.as_bytes());
        let entry = scanner.next_entry().unwrap().unwrap();
        assert_eq!((entry.offset, &entry.bytes[..]), (3 + 21, &b"{}"[..]));
        assert!(scanner.next_entry().unwrap().is_none());
    }

    #[test]
    fn keys_are_decoded_and_scalars_taken_whole() {
        let doc = r#"{"\u006cog": {"entr\u0069es": [1, "two", true, -0.5e-3]}}"#;
        assert_eq!(
            scan(doc),
            (
                vec![
                    "1".into(),
                    r#""two""#.into(),
                    "true".into(),
                    "-0.5e-3".into()
                ],
                None
            )
        );
    }
}
