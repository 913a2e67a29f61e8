//! [`HarReader`]: a HAR file (ours, or a browser's) back into records, one entry at a
//! time; [`read_har`]: all of them.

use std::fs::File;
use std::io::BufReader;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;

use super::model::{Content, Entry, Header, Response, WebSocketMessage};
use super::scan::{EntryScanner, RawEntry, ScanError};
use crate::capture::record::spelled_version;
use crate::capture::{
    Annotations, Record, RecordedBody, RecordedMessage, RecordedRequest, RecordedResponse,
    RecordedTimings,
};
use crate::error::{Error, Result};
use crate::http::message::Headers;

/// Reads a HAR file back into records, one entry at a time, as an iterator: a file
/// this crate wrote, or a browser's export (Chromium's, Firefox's).
///
/// The file is not read whole: the `entries` array of its `log` is found wherever it
/// is among the other keys (`pages`, `creator`, …, before or after it, skipped over)
/// and its entries are parsed one after another, each from its own bytes; memory holds
/// one entry at a time, however large the file. Bodies that were saved decoded are
/// encoded again by their `Content-Encoding`, so a record's body is as on the wire (in
/// content, not byte for byte).
///
/// A damaged file gives the records of the entries before the damage, then the error
/// ([`Error::CaptureFormat`], naming the entry and the byte where the damage is), and
/// then nothing: a file this crate was writing when it was killed, its last line torn,
/// gives every entry but the torn one, then the error saying where it is torn. Damage
/// after the entries (in a `pages` array written after them, say) comes after them.
///
/// ```no_run
/// # fn run() -> mitm::Result<()> {
/// use mitm::capture::har::HarReader;
///
/// for record in HarReader::open("session.har")? {
///     let record = record?;
///     println!("{} {}", record.request.method, record.request.url());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HarReader {
    path: PathBuf,
    scanner: EntryScanner<BufReader<File>>,
    done: bool,
}

impl HarReader {
    /// Opens `path`; fails with [`Error::CaptureIo`] if it cannot be opened. Nothing
    /// is read yet: a file that is not HAR fails at the first [`next`](Iterator::next).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::CaptureIo {
            path: path.clone(),
            source,
        })?;
        Ok(HarReader {
            path,
            // Entries are cut out of the buffer a chunk at a time: a large one pays.
            scanner: EntryScanner::new(BufReader::with_capacity(64 * 1024, file)),
            done: false,
        })
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn bad(&self, reason: String) -> Error {
        Error::CaptureFormat {
            path: self.path.clone(),
            reason,
        }
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        let raw = match self.scanner.next_entry() {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(None),
            Err(ScanError::Io(source)) => {
                return Err(Error::CaptureIo {
                    path: self.path.clone(),
                    source,
                })
            }
            Err(ScanError::Format { offset, reason }) => {
                return Err(self.bad(format!("at byte {offset}: {reason}")))
            }
        };
        let RawEntry {
            index,
            offset,
            bytes,
        } = raw;
        let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| {
            let at = offset + position(&bytes, e.line(), e.column()) as u64;
            let what = if e.is_data() {
                "not a HAR entry"
            } else {
                "not JSON"
            };
            // serde's line and column count from the entry's start: the byte is said.
            let message = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = message.strip_suffix(&suffix).unwrap_or(&message);
            self.bad(format!("entry {index} at byte {at}: {what}: {message}"))
        })?;
        drop(bytes);
        record_of(entry)
            .map(Some)
            .map_err(|reason| self.bad(format!("entry {index} at byte {offset}: {reason}")))
    }
}

impl Iterator for HarReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_record();
        if !matches!(next, Ok(Some(_))) {
            self.done = true;
        }
        next.transpose()
    }
}

/// The index in `bytes` of serde's `line` and `column` (both from 1; the column
/// counts bytes); the start for a position of 0.
fn position(bytes: &[u8], line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(line - 2)
            .map_or(bytes.len(), |(i, _)| i + 1)
    };
    (line_start + column.saturating_sub(1)).min(bytes.len())
}

/// Every record of the HAR file at `path` (see [`HarReader`], which reads them one at
/// a time).
///
/// # Errors
///
/// [`Error::CaptureIo`] if the file cannot be read, [`Error::CaptureFormat`] if it is
/// not HAR (not JSON, no `log.entries` list of objects, an entry without a request, a
/// URL, a method or a valid `startedDateTime`) or is damaged anywhere, even after its
/// entries: the first error, the records before it dropped.
pub fn read_har(path: impl AsRef<Path>) -> Result<Vec<Record>> {
    HarReader::open(path)?.collect()
}

fn record_of(e: Entry) -> std::result::Result<Record, String> {
    let req = e.request.ok_or("no request")?;
    let mut url = req.url.ok_or("no request URL")?;
    // A WebSocket's handshake, as browsers write it: recorded as the HTTP request.
    if url.starts_with("ws://") || url.starts_with("wss://") {
        url.replace_range(..2, "http");
    }
    let method = req.method.ok_or("no request method")?;
    let connect = method.eq_ignore_ascii_case("CONNECT");
    let (target, path) = if connect {
        // A CONNECT's URL is the authority it asked for (`--save-connects`).
        let (host, port) = crate::http::target::parse_authority(&url, 443)
            .ok_or_else(|| format!("not a CONNECT authority: {url:?}"))?;
        (crate::core::Target::new(host, port, true), String::new())
    } else {
        let (target, path) = crate::http::target::split_absolute(&url)
            .flatten()
            .ok_or_else(|| format!("not an http(s) URL: {url:?}"))?;
        (target, req.raw_path.unwrap_or(path))
    };
    let mut request_headers = headers_of(req.headers);
    let request_body = match req.post_data {
        Some(post) => {
            let base64 = post.post_encoding.as_deref() == Some("base64");
            body_of(post, base64, &mut request_headers, req.body_size)?
        }
        None => RecordedBody::default(),
    };
    let request = RecordedRequest {
        method,
        scheme: match (connect, target.tls) {
            (true, _) => "",
            (false, true) => "https",
            (false, false) => "http",
        }
        .into(),
        host: target.host,
        port: target.port,
        path,
        version: spelled_version(req.http_version.as_deref().unwrap_or_default()),
        headers: request_headers,
        body: request_body,
    };
    let (response, response_error) = match e.response {
        Some(r) => {
            let error = r.error.clone();
            (response_of(r)?, error)
        }
        None => (None, None),
    };
    let error = e.error.or(response_error);
    let timings = e.timings.unwrap_or_default();
    let started_at = e
        .started
        .and_then(|s| parse_rfc3339(&s))
        .ok_or("no valid startedDateTime")?;
    let facts = super::facts::read(e.facts, started_at, &timings);
    let ms = |v: Option<f64>| v.filter(|v| *v >= 0.0);
    // A time too large for a `Duration` is left out.
    let at = |v: f64| Duration::try_from_secs_f64(v / 1000.0).ok();
    let unknown = timings.unknown.unwrap_or_default();
    let known = |name: &str, v: Option<f64>| v.filter(|_| !unknown.iter().any(|u| u == name));
    let (send, wait, receive) = (
        known("send", ms(timings.send)),
        known("wait", ms(timings.wait)),
        known("receive", ms(timings.receive)),
    );
    let timings = RecordedTimings {
        request_end: send.and_then(at),
        response_first_byte: send.zip(wait).and_then(|(s, w)| at(s + w)),
        response_end: send
            .zip(wait)
            .zip(receive)
            .and_then(|((s, w), r)| at(s + w + r)),
    };
    let server = e
        .server_ip
        .and_then(|ip| ip.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        .map(|ip| {
            let port = e.server_port.and_then(|p| u16::try_from(p).ok());
            SocketAddr::new(ip, port.unwrap_or(request.port))
        });
    let tls = e.tls.unwrap_or_default();
    let annotations = Annotations {
        comment: e.comment.unwrap_or_default(),
        marked: e.marked.unwrap_or_default(),
        is_replay: e.is_replay.filter(|r| !r.is_empty()),
    };
    Ok(Record {
        annotations,
        started_at,
        client: e.client_address.and_then(|a| a.parse().ok()),
        server,
        client_tls: e.client_tls.unwrap_or(request.scheme == "https"),
        tls: tls.facts(),
        facts,
        websocket: e.websocket_messages.map(messages_of),
        request,
        response,
        timings,
        error,
    })
}

/// The response of an entry; none when its `status` is 0 (or not a number), as
/// browsers write a request that got no response.
fn response_of(r: Response) -> std::result::Result<Option<RecordedResponse>, String> {
    let status = r.status.unwrap_or(0);
    if status == 0 {
        return Ok(None);
    }
    let mut headers = headers_of(r.headers);
    let content = r.content.unwrap_or_default();
    let base64 = content.encoding.as_deref() == Some("base64");
    let body = body_of(content, base64, &mut headers, r.body_size)?;
    Ok(Some(RecordedResponse {
        status: u16::try_from(status).map_err(|_| format!("status {status}"))?,
        reason: r.status_text.unwrap_or_default(),
        version: spelled_version(r.http_version.as_deref().unwrap_or_default()),
        headers,
        body,
    }))
}

/// The messages of an entry's `_webSocketMessages`, as Chromium saves them.
fn messages_of(list: Vec<WebSocketMessage>) -> Vec<RecordedMessage> {
    list.into_iter()
        .map(|m| {
            let text = m.opcode != Some(2);
            let data = m.data.unwrap_or_default();
            let data = if text {
                Bytes::from(data.into_bytes())
            } else {
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map(Bytes::from)
                    .unwrap_or_default()
            };
            let time = m.time.unwrap_or(0.0);
            RecordedMessage {
                from_client: m.kind.as_deref() == Some("send"),
                text,
                data,
                at: Duration::try_from_secs_f64(time.max(0.0))
                    .ok()
                    .and_then(|d| std::time::UNIX_EPOCH.checked_add(d))
                    .unwrap_or(std::time::UNIX_EPOCH),
            }
        })
        .collect()
}

/// The header fields of a HAR request or response, HTTP/2 pseudo-fields (`:path`, as
/// Chromium lists them) and fields without a name left out.
fn headers_of(fields: Option<Vec<Header>>) -> Headers {
    let mut h = Headers::new();
    for field in fields.into_iter().flatten() {
        let name = field.name.unwrap_or_default();
        if !name.is_empty() && !name.starts_with(':') {
            h.append(
                Bytes::from(name),
                Bytes::from(field.value.unwrap_or_default()),
            );
        }
    }
    h
}

/// A body from its HAR text: base64-decoded if so marked, then encoded again by the
/// message's `Content-Encoding` unless it was kept as sent (a coding this crate cannot
/// apply is taken out of `headers`, so that they still describe the body). A body
/// whose text was not saved (browsers leave some out) is an empty, truncated one.
fn body_of(
    content: Content,
    base64: bool,
    headers: &mut Headers,
    body_size: Option<u64>,
) -> std::result::Result<RecordedBody, String> {
    let positive = |n: Option<u64>| n.filter(|&n| n > 0);
    let Some(text) = content.text else {
        let size = positive(body_size).or(positive(content.size));
        return Ok(RecordedBody {
            data: Bytes::new(),
            size: size.unwrap_or(0),
            truncated: size.is_some(),
        });
    };
    let mut data = if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("invalid base64 body: {e}"))?
    } else {
        text.into_bytes()
    };
    let truncated = content.truncated == Some(true);
    let as_sent = content.content_encoded == Some(true);
    let coding = headers
        .get("content-encoding")
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        .map(str::to_owned);
    if let (Some(coding), false, false) = (coding, as_sent, data.is_empty()) {
        // Codings apply in the order listed.
        let encoded = coding
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .try_fold(data.clone(), |d, c| crate::decode::encode(c, &d));
        match encoded {
            Ok(encoded) => {
                // Encoded here, the body need not be as long as the one sent: the
                // head says how long this one is.
                if !truncated && headers.get("content-length").is_some() {
                    headers.insert("content-length", encoded.len().to_string());
                }
                data = encoded;
            }
            Err(_) => {
                headers.remove("content-encoding");
            }
        }
    }
    let size = if truncated {
        positive(content.wire_size).or(positive(body_size))
    } else {
        None
    };
    Ok(RecordedBody {
        size: size.unwrap_or(data.len() as u64),
        data: Bytes::from(data),
        truncated,
    })
}

/// Reads an RFC 3339 date and time (`T` or a space between them, any fraction of a
/// second, `Z` or an offset).
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let num = |r: &str| -> Option<u32> {
        r.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| r.parse().ok())?
    };
    let (date, rest) = (s.get(..10)?, s.get(11..)?);
    let mut d = date.split('-');
    let (y, m, day) = (d.next()?, d.next()?, d.next()?);
    let date = time::Date::from_calendar_date(
        num(y)? as i32,
        time::Month::try_from(num(m)? as u8).ok()?,
        num(day)? as u8,
    )
    .ok()?;
    let zone_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(zone_at);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut c = hms.split(':');
    let (h, mi, sec) = (num(c.next()?)?, num(c.next()?)?, num(c.next()?)?);
    let frac = frac.get(..9.min(frac.len()))?;
    let nanos = if frac.is_empty() {
        0
    } else {
        num(frac)? * 10u32.pow(9 - frac.len() as u32)
    };
    let clock = time::Time::from_hms_nano(h as u8, mi as u8, sec as u8, nanos).ok()?;
    let offset = match zone {
        "" | "Z" | "z" => time::UtcOffset::UTC,
        z => {
            let sign: i8 = if z.starts_with('-') { -1 } else { 1 };
            let (oh, om) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
            // Out of `i8`'s range is no offset (and `-1 * -128` would overflow).
            let part = |v: &str| num(v).and_then(|n| i8::try_from(n).ok());
            time::UtcOffset::from_hms(sign * part(oh)?, sign * part(om)?, 0).ok()?
        }
    };
    let t = time::PrimitiveDateTime::new(date, clock).assume_offset(offset);
    let nanos = t.unix_timestamp_nanos();
    Some(if nanos >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_nanos(nanos.unsigned_abs() as u64)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::capture::har::entry::rfc3339;
    use crate::capture::har::tests::{gzip, record};
    use crate::capture::har::HarFile;
    use crate::capture::har::TAIL;
    use crate::capture::Sink;

    /// The records of `path` until the first error, and that error's message.
    fn read_until_error(path: &Path) -> (Vec<Record>, Option<String>) {
        let mut records = Vec::new();
        for r in HarReader::open(path).unwrap() {
            match r {
                Ok(r) => records.push(r),
                Err(e) => {
                    assert!(matches!(e, Error::CaptureFormat { .. }), "{e}");
                    return (records, Some(e.to_string()));
                }
            }
        }
        (records, None)
    }

    #[test]
    fn a_torn_last_line_gives_the_entries_before_it_then_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torn.har");
        let mut w = HarFile::create(&path).unwrap();
        for n in 0..3 {
            w.write(&record(&format!("/{n}"), None)).unwrap();
        }
        drop(w);
        let text = std::fs::read(&path).unwrap();
        // Cut in the middle of the third entry.
        let cut = text.len() - TAIL.len() - 40;
        std::fs::write(&path, &text[..cut]).unwrap();
        let (records, error) = read_until_error(&path);
        let paths: Vec<_> = records.into_iter().map(|r| r.request.path).collect();
        assert_eq!(paths, ["/0", "/1"]);
        let error = error.unwrap();
        assert!(error.contains("torn.har"), "{error}");
        assert!(
            error.contains(&format!("at byte {cut}: entry 2: the file ends")),
            "{error}"
        );
        assert!(read_har(&path).is_err());
        std::fs::write(&path, b"{\"log\": 1").unwrap();
        assert!(matches!(read_har(&path), Err(Error::CaptureFormat { .. })));
    }

    #[test]
    fn entries_are_read_wherever_they_are_in_the_log_and_damage_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.har");
        let entry = |path: &str| {
            json!({"startedDateTime": "2026-12-06T22:28:16.362Z",
                "request": {"method": "GET", "url": format!("http://a.localhost{path}")}})
            .to_string()
        };
        let (a, b) = (entry("/a"), entry("/b"));
        let pages = r#""pages": [{"id": "page_1", "title": "]}"}]"#;
        let docs = [
            format!(r#"{{"log": {{{pages}, "entries": [{a}, {b}]}}}}"#),
            format!(r#"{{"log": {{"entries": [{a}, {b}], {pages}}}, "x": 1}}"#),
            format!(
                "{{\n  \"log\": {{\n    \"entries\": [\n      {a},\n      {b}\n    ]\n  }}\n}}\n"
            ),
        ];
        for doc in &docs {
            std::fs::write(&path, doc).unwrap();
            let (records, error) = read_until_error(&path);
            assert_eq!(error, None, "{doc}");
            let paths: Vec<_> = records.iter().map(|r| r.request.path.as_str()).collect();
            assert_eq!(paths, ["/a", "/b"], "{doc}");
        }
        std::fs::write(&path, r#"{"log": {"entries": []}}"#).unwrap();
        assert_eq!(read_until_error(&path), (vec![], None));

        // Damage nested in the second entry: the first, then the error, at its byte.
        let bad = b.replace(r#""method":"GET""#, r#""method":"GET" "x": 1"#);
        assert_ne!(bad, b);
        let doc = format!(r#"{{"log": {{"entries": [{a}, {bad}]}}}}"#);
        std::fs::write(&path, &doc).unwrap();
        let (records, error) = read_until_error(&path);
        assert_eq!(records.len(), 1);
        let at = doc.find(r#" "x": 1"#).unwrap() + 1;
        let error = error.unwrap();
        assert!(
            error.contains(&format!("entry 1 at byte {at}: not JSON: expected `,`")),
            "{error}"
        );
        // An entry that is no entry, and one without a URL.
        for (second, want) in [
            ("7".to_string(), "entry 1 at byte"),
            (
                r#"{"request": {"method": "GET"}}"#.to_string(),
                "no request URL",
            ),
        ] {
            let doc = format!(r#"{{"log": {{"entries": [{a}, {second}]}}}}"#);
            std::fs::write(&path, &doc).unwrap();
            let (records, error) = read_until_error(&path);
            assert_eq!(records.len(), 1);
            assert!(error.as_deref().unwrap().contains(want), "{error:?}");
        }
    }

    #[test]
    fn dates_are_read_in_any_rfc3339_offset() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        assert_eq!(parse_rfc3339("2023-11-14T23:13:20.123+01:00"), Some(t));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.123000Z"), Some(t));
        assert_eq!(parse_rfc3339("yesterday"), None);
        // Made to crash the `har` fuzz target (fuzz/regressions/har/), after reading
        // the code: an hour of 128 became -128, and `-1 * -128` overflowed.
        assert_eq!(parse_rfc3339("2024-01-02T03:04:05-128:00"), None);
        assert_eq!(parse_rfc3339("2024-01-02T03:04:05+00:128"), None);
    }

    #[test]
    fn a_url_whose_host_has_a_colon_is_not_read() {
        // Found by fuzzing (fuzz/regressions/har/): the host was taken as `1:7.0.0.1`,
        // and the URL written back, with it in brackets, did not read.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.har");
        let har = json!({"log": {"entries": [{
            "startedDateTime": "2026-12-06T22:28:16.362Z",
            "request": {"method": "GET", "url": "http://1:7.0.0.1:18431/bin"}}]}});
        std::fs::write(&path, har.to_string()).unwrap();
        let err = read_har(&path).unwrap_err().to_string();
        assert!(err.contains("not an http(s) URL"), "{err}");
    }

    #[test]
    fn timings_too_large_for_a_duration_are_left_out() {
        // Made to crash the `har` fuzz target (fuzz/regressions/har/), after reading
        // the code: 1e300 ms made `Duration::from_secs_f64` panic.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.har");
        let har = json!({"log": {"entries": [{
            "startedDateTime": "2026-12-06T22:28:16.362Z",
            "request": {"method": "GET", "url": "http://a.localhost/"},
            "timings": {"send": 1e300, "wait": 1.0, "receive": 1.0}}]}});
        std::fs::write(&path, har.to_string()).unwrap();
        let records = read_har(&path).unwrap();
        assert_eq!(records[0].timings, RecordedTimings::default());
    }

    #[test]
    fn records_read_back_are_those_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rt.har");
        let mut w = HarFile::create(&path).unwrap();
        let mut post = record("/post?a=1", Some((201, &[], Bytes::from("made"))));
        post.request.method = "POST".into();
        post.request.body = RecordedBody::whole(Bytes::from(vec![0u8, 159, 146, 150]));
        let gz = record(
            "/gz",
            Some((
                200,
                &[("Content-Encoding", "gzip")],
                gzip(b"plain words, plain words"),
            )),
        );
        let mut failed = record("/down", None);
        failed.error = Some("refused".into());
        failed.server = None;
        let written = [post, gz, failed];
        for r in &written {
            w.write(r).unwrap();
        }
        w.flush().unwrap();
        let read = read_har(&path).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[0], written[0]);
        assert_eq!(read[2], written[2]);
        // A body saved decoded comes back encoded again: the same content.
        let body = &read[1].response.as_ref().unwrap().body.data;
        assert_eq!(
            crate::decode::decode("gzip", body, 1 << 20).unwrap(),
            b"plain words, plain words"
        );
    }

    #[test]
    fn browser_hars_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chrome.har");
        // The shape of a Chromium export (trimmed).
        let har = json!({"log": {"version": "1.2", "creator": {"name": "WebInspector",
            "version": "537.36"}, "pages": [], "entries": [{
            "_priority": "VeryHigh", "_resourceType": "document", "cache": {},
            "connection": "1234", "pageref": "page_1",
            "request": {"method": "GET", "url": "https://example.com/a?b=1",
                "httpVersion": "http/2.0", "headers": [
                    {"name": ":authority", "value": "example.com"},
                    {"name": "accept", "value": "text/html"}],
                "queryString": [{"name": "b", "value": "1"}], "cookies": [],
                "headersSize": -1, "bodySize": 0},
            "response": {"status": 200, "statusText": "", "httpVersion": "http/2.0",
                "headers": [{"name": "content-type", "value": "text/html"}],
                "cookies": [], "content": {"size": 5, "mimeType": "text/html",
                "text": "hello"}, "redirectURL": "", "headersSize": -1,
                "bodySize": 5, "_transferSize": 100, "_error": null},
            "serverIPAddress": "93.184.216.34",
            "startedDateTime": "2024-01-02T03:04:05.678Z", "time": 20.5,
            "timings": {"blocked": 1.2, "dns": -1, "ssl": -1, "connect": -1,
                "send": 0.3, "wait": 15.0, "receive": 4.0, "_blocked_queueing": 1.0}}]}});
        let mut har = har;
        let mut unsaved = har["log"]["entries"][0].clone();
        unsaved["response"]["content"] = json!({"size": 10, "mimeType": "image/png"});
        unsaved["response"]["bodySize"] = json!(-1);
        har["log"]["entries"].as_array_mut().unwrap().push(unsaved);
        std::fs::write(&path, har.to_string()).unwrap();
        let records = read_har(&path).unwrap();
        let body = &records[1].response.as_ref().unwrap().body;
        assert_eq!((body.data.len(), body.size, body.truncated), (0, 10, true));
        let r = &records[0];
        assert_eq!(r.request.url(), "https://example.com/a?b=1");
        assert_eq!(r.request.version, "HTTP/2.0");
        assert_eq!(r.request.headers.len(), 1);
        assert_eq!(r.server, Some("93.184.216.34:443".parse().unwrap()));
        let response = r.response.as_ref().unwrap();
        assert_eq!(
            (response.status, &response.body.data[..]),
            (200, &b"hello"[..])
        );
        assert!(r.error.is_none());
    }
}
