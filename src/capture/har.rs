//! HAR 1.2 (the HTTP Archive format browsers' devtools export and import): [`HarWriter`]
//! saves records as they come, [`read_har`] turns a HAR file back into records.
//!
//! The writer keeps the file a complete HAR document after every record: the document's
//! start up to the entries array on the first line, then one entry per line, then the
//! closing `]}}`. Each record is written over that closing tail, with a new tail after
//! it, in one write; so a crash, even `SIGKILL`, loses only the flows not yet written.
//! (A kill in the middle of that one write can leave a torn last line; [`read_har`]
//! drops it and reads the rest. A write that fails, on a full disk say, is undone.)
//!
//! What goes into an entry, beyond what HAR 1.2 requires:
//! - bodies as text when they are text (valid UTF-8 that is not binary by its media
//!   type), else base64 (`"encoding": "base64"`); a content-encoded body decoded (its
//!   `Content-Encoding` kept in the headers, `content.size` the decoded length,
//!   `compression` the bytes the coding saved), or kept as sent, with
//!   `"_contentEncoded": true`, when it cannot be decoded or was cut;
//! - a body the capture cut: `"_truncated": true` and `"_size"` (its length on the
//!   wire), with a `comment`;
//! - a failed flow: `"_error"` (on the entry, and on the `status: 0` response browsers
//!   write when there is none);
//! - `"_clientAddress"`, `"_serverPort"` and `"_clientTls"`, so that reading the file
//!   back gives the record that was written.
//!
//! Request bodies go in `postData.text`, base64 with `"_encoding": "base64"` when they
//! are binary (HAR has no encoding for `postData`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{
    Record, RecordedBody, RecordedMessage, RecordedRequest, RecordedResponse, RecordedTimings, Sink,
};
use crate::core::TlsFacts;
use crate::error::{Error, Result};
use crate::http::message::Headers;

/// The most bytes a body is decoded to for a HAR entry; one that decodes to more is
/// kept as sent (`"_contentEncoded": true`).
pub const DECODED_LIMIT: usize = 64 * 1024 * 1024;

/// The end of every document the writer leaves: the entries array, `log`, the root.
const TAIL: &[u8] = b"\n]}}\n";

/// Writes records to a HAR 1.2 file, which stays a complete HAR document after every
/// record written. A [`Sink`] for [`Capture`](super::Capture).
///
/// ```no_run
/// # fn run() -> mitm::Result<()> {
/// use mitm::capture::{har::HarWriter, Capture};
/// let capture = Capture::builder()
///     .sink(Box::new(HarWriter::create("flows.har")?))
///     .start();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HarWriter {
    file: File,
    path: PathBuf,
    /// Where the tail starts: the next entry is written here.
    tail_at: u64,
    /// Entries in the file (those of an appended file included).
    entries: u64,
    /// Written since the last `sync_data`.
    dirty: bool,
    /// When the file was last synced to disk.
    synced: Instant,
}

impl HarWriter {
    /// A new HAR file at `path`, with no entries yet.
    ///
    /// # Errors
    ///
    /// [`Error::CaptureIo`] if the file cannot be made, and (with
    /// [`io::ErrorKind::AlreadyExists`]) if it exists: a capture never overwrites a
    /// file; [`append`](Self::append) continues one.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| Error::CaptureIo {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err)?;
        let head = head();
        file.write_all(head.as_bytes())
            .and_then(|()| file.write_all(TAIL))
            .map_err(io_err)?;
        Ok(HarWriter {
            file,
            path,
            tail_at: head.len() as u64,
            entries: 0,
            dirty: true,
            synced: Instant::now(),
        })
    }

    /// Continues the HAR file at `path`, one this writer made (its entries one per
    /// line, ending in `]}}`): new entries go after those it holds.
    ///
    /// # Errors
    ///
    /// [`Error::CaptureIo`] if it cannot be opened, [`Error::CaptureFormat`] if it
    /// does not end as this writer leaves its files.
    pub fn append(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| Error::CaptureIo {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io_err)?;
        let not_ours = |reason: &str| Error::CaptureFormat {
            path: path.clone(),
            reason: format!("cannot append: {reason}"),
        };
        let body = text
            .strip_suffix(TAIL)
            .ok_or_else(|| not_ours("it does not end as a HAR file mitm wrote"))?;
        let first = body.split(|&b| b == b'\n').next().unwrap_or_default();
        if !first.starts_with(b"{\"log\":") || !first.ends_with(b"\"entries\":[") {
            return Err(not_ours("it does not start as a HAR file mitm wrote"));
        }
        // One entry per line after the first: a line break in an entry is escaped.
        let entries = body.iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(HarWriter {
            file,
            path,
            tail_at: body.len() as u64,
            entries,
            dirty: false,
            synced: Instant::now(),
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries in the file so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }
}

impl Sink for HarWriter {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        let entry = serde_json::to_vec(&entry(record)).map_err(io::Error::other)?;
        let separator: &[u8] = if self.entries == 0 { b"\n" } else { b",\n" };
        let mut out = Vec::with_capacity(separator.len() + entry.len() + TAIL.len());
        out.extend_from_slice(separator);
        out.extend_from_slice(&entry);
        out.extend_from_slice(TAIL);
        // One write over the old tail: the file only grows, so nothing of the old one
        // is left behind it.
        let written = self
            .file
            .seek(SeekFrom::Start(self.tail_at))
            .and_then(|_| self.file.write_all(&out));
        if let Err(e) = written {
            // Part of the entry may be in the file: cut it off and close the document
            // again after the entries before it (which may fail too, on a full disk;
            // the next record written tries again).
            let _ = self
                .file
                .set_len(self.tail_at)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.tail_at)))
                .and_then(|_| self.file.write_all(TAIL));
            return Err(e);
        }
        self.tail_at += (separator.len() + entry.len()) as u64;
        self.entries += 1;
        self.dirty = true;
        Ok(())
    }

    /// Every entry is in the file as soon as it is written (a crash of the proxy loses
    /// nothing written); this also asks the system to put it on the disk (against a
    /// crash of the machine), at most once a second: a sync costs
    /// milliseconds, and a busy writer flushes thousands of times a second.
    fn flush(&mut self) -> io::Result<()> {
        if self.dirty && self.synced.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }
}

impl HarWriter {
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        self.dirty = false;
        self.synced = Instant::now();
        Ok(())
    }
}

impl Drop for HarWriter {
    fn drop(&mut self) {
        if self.dirty {
            if let Err(e) = self.sync() {
                tracing::warn!(error = %e, path = %self.path.display(), "capture: the HAR file could not be synced to disk");
            }
        }
    }
}

/// How often a HAR file being written is synced to disk, at most.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The first line of a file: the document up to the entries array.
fn head() -> String {
    let log = json!({
        "version": "1.2",
        "creator": {"name": "mitm", "version": env!("CARGO_PKG_VERSION")},
        "pages": [],
    });
    // A `Value` always serializes.
    let log = serde_json::to_string(&log).unwrap_or_default();
    // `{"version":…,"pages":[]}` becomes `{"log":{"version":…,"pages":[],"entries":[`.
    format!(
        "{{\"log\":{},\"entries\":[",
        log.strip_suffix('}').unwrap_or(&log)
    )
}

/// The HAR entry of `record`.
pub(crate) fn entry(record: &Record) -> Value {
    let t = &record.timings;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // HAR wants send, wait and receive; a point never reached makes its phase 0.
    let send = t.request_end.map_or(0.0, ms);
    let wait = match (t.request_end, t.response_first_byte) {
        (Some(a), Some(b)) => ms(b.saturating_sub(a)),
        (None, Some(b)) => ms(b),
        _ => 0.0,
    };
    let receive = match (t.response_first_byte, t.response_end) {
        (Some(a), Some(b)) => ms(b.saturating_sub(a)),
        _ => 0.0,
    };
    let mut e = Map::new();
    e.insert("startedDateTime".into(), rfc3339(record.started_at).into());
    e.insert("time".into(), (send + wait + receive).into());
    e.insert(
        "request".into(),
        request(&record.request, record.websocket.is_some()),
    );
    let mut response = match &record.response {
        Some(r) => response(r),
        None => no_response(),
    };
    if let Some(error) = &record.error {
        e.insert("_error".into(), error.clone().into());
        if record.response.is_none() {
            response["_error"] = error.clone().into();
        }
    }
    e.insert("response".into(), response);
    e.insert("cache".into(), json!({}));
    e.insert(
        "timings".into(),
        json!({
            "blocked": -1, "dns": -1, "connect": -1, "ssl": -1,
            "send": send, "wait": wait, "receive": receive,
        }),
    );
    if let Some(server) = record.server {
        e.insert("serverIPAddress".into(), server.ip().to_string().into());
        e.insert("_serverPort".into(), server.port().into());
    }
    if let Some(client) = record.client {
        e.insert("_clientAddress".into(), client.to_string().into());
    }
    e.insert("_clientTls".into(), record.client_tls.into());
    if !record.tls.is_empty() {
        e.insert(
            "_tls".into(),
            json!({"sni": record.tls.sni, "alpn": record.tls.alpn, "version": record.tls.version}),
        );
    }
    if let Some(messages) = &record.websocket {
        e.insert("_resourceType".into(), "websocket".into());
        e.insert("_webSocketMessages".into(), websocket_messages(messages));
    }
    Value::Object(e)
}

/// WebSocket messages as Chrome's devtools save them: `type` (`send` from the client,
/// `receive` from the server), `time` (seconds since the epoch), `opcode` (1 text, 2
/// binary) and `data` (text, or base64 for binary).
fn websocket_messages(messages: &[RecordedMessage]) -> Value {
    let list = messages
        .iter()
        .map(|m| {
            let time =
                m.at.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
            let data = if m.text {
                String::from_utf8_lossy(&m.data).into_owned()
            } else {
                base64::engine::general_purpose::STANDARD.encode(&m.data)
            };
            json!({
                "type": if m.from_client { "send" } else { "receive" },
                "time": time,
                "opcode": if m.text { 1 } else { 2 },
                "data": data,
            })
        })
        .collect();
    Value::Array(list)
}

/// The WebSocket messages of an entry (Chrome's `_webSocketMessages`), if it has them.
fn messages_of(e: &Value) -> Option<Vec<RecordedMessage>> {
    let list = e.get("_webSocketMessages")?.as_array()?;
    let messages = list
        .iter()
        .map(|m| {
            let text = m.get("opcode").and_then(Value::as_u64) != Some(2);
            let data = m.get("data").and_then(Value::as_str).unwrap_or_default();
            let data = if text {
                Bytes::copy_from_slice(data.as_bytes())
            } else {
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map(Bytes::from)
                    .unwrap_or_default()
            };
            let time = m.get("time").and_then(Value::as_f64).unwrap_or(0.0);
            RecordedMessage {
                from_client: m.get("type").and_then(Value::as_str) == Some("send"),
                text,
                data,
                at: Duration::try_from_secs_f64(time.max(0.0))
                    .ok()
                    .and_then(|d| std::time::UNIX_EPOCH.checked_add(d))
                    .unwrap_or(std::time::UNIX_EPOCH),
            }
        })
        .collect();
    Some(messages)
}

/// The request of an entry; a WebSocket's URL is `ws://` or `wss://`, as browsers
/// write it.
fn request(r: &RecordedRequest, websocket: bool) -> Value {
    let mut url = r.url();
    if websocket {
        url.replace_range(..4, "ws");
    }
    let mut v = json!({
        "method": r.method,
        "url": url,
        "httpVersion": r.version,
        "cookies": request_cookies(&r.headers),
        "headers": headers(&r.headers),
        "queryString": query_string(&r.path),
        "headersSize": -1,
        "bodySize": r.body.size,
    });
    if r.body.size > 0 || !r.body.data.is_empty() {
        let c = content(&r.headers, &r.body);
        let mut post = Map::new();
        post.insert("mimeType".into(), c["mimeType"].clone());
        post.insert("text".into(), c["text"].clone());
        for (from, to) in [
            ("encoding", "_encoding"),
            ("_contentEncoded", "_contentEncoded"),
            ("_truncated", "_truncated"),
            ("_size", "_size"),
            ("comment", "comment"),
        ] {
            if let Some(x) = c.get(from) {
                post.insert(to.into(), x.clone());
            }
        }
        v["postData"] = Value::Object(post);
    }
    v
}

fn response(r: &RecordedResponse) -> Value {
    json!({
        "status": r.status,
        "statusText": r.reason,
        "httpVersion": r.version,
        "cookies": response_cookies(&r.headers),
        "headers": headers(&r.headers),
        "content": content(&r.headers, &r.body),
        "redirectURL": r.headers.get("location").unwrap_or(""),
        "headersSize": -1,
        "bodySize": r.body.size,
    })
}

/// The response browsers write for a request that got none.
fn no_response() -> Value {
    json!({
        "status": 0,
        "statusText": "",
        "httpVersion": "",
        "cookies": [],
        "headers": [],
        "content": {"size": 0, "mimeType": "x-unknown"},
        "redirectURL": "",
        "headersSize": -1,
        "bodySize": -1,
    })
}

fn headers(h: &Headers) -> Value {
    h.iter()
        .map(|(name, value)| json!({"name": name, "value": String::from_utf8_lossy(value)}))
        .collect()
}

/// `Cookie: a=1; b=2` as HAR cookies.
fn request_cookies(h: &Headers) -> Value {
    h.get_all("cookie")
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(';')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            Some(json!({"name": name.trim(), "value": value.trim()}))
        })
        .collect()
}

/// Each `Set-Cookie` as a HAR cookie: its name and value, and the attributes HAR
/// names.
fn response_cookies(h: &Headers) -> Value {
    h.get_all("set-cookie")
        .filter_map(|v| {
            let v = String::from_utf8_lossy(v);
            let mut parts = v.split(';');
            let (name, value) = parts.next()?.trim().split_once('=')?;
            let mut c = json!({"name": name.trim(), "value": value.trim()});
            for attr in parts {
                let (key, val) = attr.split_once('=').unwrap_or((attr, ""));
                let (key, val) = (key.trim().to_ascii_lowercase(), val.trim());
                match key.as_str() {
                    "path" | "domain" | "expires" => c[key] = val.into(),
                    "httponly" => c["httpOnly"] = true.into(),
                    "secure" => c["secure"] = true.into(),
                    _ => {}
                }
            }
            Some(c)
        })
        .collect()
}

/// The query of `path` as HAR name/value pairs, percent-decoded (`+` as a space).
fn query_string(path: &str) -> Value {
    let Some((_, query)) = path.split_once('?') else {
        return json!([]);
    };
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            json!({"name": percent_decode(name), "value": percent_decode(value)})
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A body as a HAR `content` object.
fn content(h: &Headers, body: &RecordedBody) -> Value {
    let mime = h.get("content-type").unwrap_or("").trim();
    let mut c = Map::new();
    c.insert("mimeType".into(), mime.into());
    let mut comments = Vec::new();
    let coding = h
        .get("content-encoding")
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
    let mut data: std::borrow::Cow<'_, [u8]> = (&body.data[..]).into();
    let mut size = body.size;
    match coding {
        Some(_) if body.truncated => {
            c.insert("_contentEncoded".into(), true.into());
            comments.push("kept as sent: cut, so it cannot be decoded".to_string());
        }
        Some(coding) => match crate::decode::decode(coding, &body.data, DECODED_LIMIT) {
            Ok(plain) => {
                size = plain.len() as u64;
                c.insert(
                    "compression".into(),
                    (plain.len() as i64 - body.data.len() as i64).into(),
                );
                data = plain.into();
            }
            Err(e) => {
                c.insert("_contentEncoded".into(), true.into());
                comments.push(format!("kept as sent: {e}"));
            }
        },
        None => {}
    }
    c.insert("size".into(), size.into());
    match text_of(mime, &data) {
        Some(text) => {
            c.insert("text".into(), text.into());
        }
        None => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
            c.insert("text".into(), b64.into());
            c.insert("encoding".into(), "base64".into());
        }
    }
    if body.truncated {
        c.insert("_truncated".into(), true.into());
        c.insert("_size".into(), body.size.into());
        comments.insert(
            0,
            format!("truncated: {} of {} bytes kept", body.data.len(), body.size),
        );
    }
    if !comments.is_empty() {
        c.insert("comment".into(), comments.join("; ").into());
    }
    Value::Object(c)
}

/// `data` as text, if it is: valid UTF-8, and either of a textual media type or free
/// of control characters other than whitespace.
fn text_of<'a>(mime: &str, data: &'a [u8]) -> Option<&'a str> {
    let text = std::str::from_utf8(data).ok()?;
    let mime = mime.to_ascii_lowercase();
    let textual = mime.starts_with("text/")
        || [
            "json",
            "xml",
            "javascript",
            "ecmascript",
            "x-www-form-urlencoded",
            "charset=",
        ]
        .iter()
        .any(|t| mime.contains(t));
    let plain = !text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'));
    (textual || plain).then_some(text)
}

/// `t` in RFC 3339, UTC, with milliseconds: `2026-01-02T03:04:05.678Z`.
fn rfc3339(t: SystemTime) -> String {
    let nanos = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
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

/// Reads the HAR file at `path` back into records: one this crate wrote, or a
/// browser's export (Chromium's, Firefox's). Bodies that were saved decoded are
/// encoded again by their `Content-Encoding`, so a record's body is as on the wire (in
/// content, not byte for byte). A file this crate was writing when it was killed, its
/// last line torn, is read up to that line.
///
/// # Errors
///
/// [`Error::CaptureIo`] if the file cannot be read, [`Error::CaptureFormat`] if it is
/// not HAR (not JSON, no `log.entries`, an entry without a request or a URL).
pub fn read_har(path: impl AsRef<Path>) -> Result<Vec<Record>> {
    let path = path.as_ref();
    let bad = |reason: String| Error::CaptureFormat {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read(path).map_err(|source| Error::CaptureIo {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: Value = match serde_json::from_slice(&text) {
        Ok(doc) => doc,
        Err(e) => repair(&text).ok_or_else(|| bad(format!("not JSON: {e}")))?,
    };
    let entries = doc
        .get("log")
        .and_then(|log| log.get("entries"))
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no log.entries array: not a HAR file".into()))?;
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| record_of(e).map_err(|reason| bad(format!("entry {i}: {reason}"))))
        .collect()
}

/// A file this crate was writing, cut short: its whole lines, closed again.
fn repair(text: &[u8]) -> Option<Value> {
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if !lines.first()?.ends_with(b"\"entries\":[") {
        return None;
    }
    // Drop lines from the end until what is left, closed, parses.
    while lines.len() > 1 {
        lines.pop();
        let mut fixed = lines.join(&b'\n');
        if fixed.ends_with(b",") {
            fixed.pop();
        }
        fixed.extend_from_slice(TAIL);
        if let Ok(doc) = serde_json::from_slice(&fixed) {
            return Some(doc);
        }
    }
    None
}

fn record_of(e: &Value) -> std::result::Result<Record, String> {
    let str_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let req = e.get("request").ok_or("no request")?;
    let mut url = str_of(req, "url").ok_or("no request URL")?;
    // A WebSocket's handshake, as browsers write it: recorded as the HTTP request.
    if url.starts_with("ws://") || url.starts_with("wss://") {
        url.replace_range(..2, "http");
    }
    let (target, path) = crate::http::target::split_absolute(&url)
        .flatten()
        .ok_or_else(|| format!("not an http(s) URL: {url:?}"))?;
    let mut request_headers = headers_of(req);
    let request_body = match req.get("postData") {
        Some(post) => {
            let text = str_of(post, "text");
            let base64 = post.get("_encoding").and_then(Value::as_str) == Some("base64");
            body_of(
                post,
                text,
                base64,
                &mut request_headers,
                req.get("bodySize"),
            )?
        }
        None => RecordedBody::default(),
    };
    let request = RecordedRequest {
        method: str_of(req, "method").ok_or("no request method")?,
        scheme: if target.tls { "https" } else { "http" }.into(),
        host: target.host,
        port: target.port,
        path,
        version: version(&str_of(req, "httpVersion").unwrap_or_default()),
        headers: request_headers,
        body: request_body,
    };
    let resp = e.get("response");
    let status = resp
        .and_then(|r| r.get("status"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let response = match resp {
        Some(r) if status > 0 => {
            let mut headers = headers_of(r);
            let content = r.get("content").cloned().unwrap_or(json!({}));
            let text = str_of(&content, "text");
            let base64 = content.get("encoding").and_then(Value::as_str) == Some("base64");
            let body = body_of(&content, text, base64, &mut headers, r.get("bodySize"))?;
            Some(RecordedResponse {
                status: u16::try_from(status).map_err(|_| format!("status {status}"))?,
                reason: str_of(r, "statusText").unwrap_or_default(),
                version: version(&str_of(r, "httpVersion").unwrap_or_default()),
                headers,
                body,
            })
        }
        _ => None,
    };
    let error = str_of(e, "_error").or_else(|| resp.and_then(|r| str_of(r, "_error")));
    let ms = |key: &str| {
        e.get("timings")
            .and_then(|t| t.get(key))
            .and_then(Value::as_f64)
            .filter(|v| *v >= 0.0)
    };
    // A time too large for a `Duration` is left out.
    let at = |v: f64| Duration::try_from_secs_f64(v / 1000.0).ok();
    let (send, wait, receive) = (ms("send"), ms("wait"), ms("receive"));
    let timings = RecordedTimings {
        request_end: send.and_then(at),
        response_first_byte: send.zip(wait).and_then(|(s, w)| at(s + w)),
        response_end: send
            .zip(wait)
            .zip(receive)
            .and_then(|((s, w), r)| at(s + w + r)),
    };
    let server = str_of(e, "serverIPAddress")
        .and_then(|ip| ip.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        .map(|ip| {
            let port = e.get("_serverPort").and_then(Value::as_u64);
            let port = port
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(request.port);
            SocketAddr::new(ip, port)
        });
    Ok(Record {
        started_at: str_of(e, "startedDateTime")
            .and_then(|s| parse_rfc3339(&s))
            .ok_or("no valid startedDateTime")?,
        client: str_of(e, "_clientAddress").and_then(|a| a.parse().ok()),
        server,
        client_tls: e
            .get("_clientTls")
            .and_then(Value::as_bool)
            .unwrap_or(request.scheme == "https"),
        tls: e.get("_tls").map(tls_of).unwrap_or_default(),
        websocket: messages_of(e),
        request,
        response,
        timings,
        error,
    })
}

/// The TLS facts of an entry's `_tls`.
fn tls_of(v: &Value) -> TlsFacts {
    let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    TlsFacts {
        sni: text("sni"),
        alpn: text("alpn"),
        version: text("version"),
    }
}

/// The header fields of a HAR request or response, HTTP/2 pseudo-fields (`:path`, as
/// Chromium lists them) left out.
fn headers_of(v: &Value) -> Headers {
    let mut h = Headers::new();
    for field in v
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = field.get("name").and_then(Value::as_str).unwrap_or("");
        let value = field.get("value").and_then(Value::as_str).unwrap_or("");
        if !name.is_empty() && !name.starts_with(':') {
            h.append(Bytes::from(name.to_owned()), Bytes::from(value.to_owned()));
        }
    }
    h
}

/// A body from its HAR text: base64-decoded if so marked, then encoded again by the
/// message's `Content-Encoding` unless it was kept as sent (a coding this crate cannot
/// apply is taken out of `headers`, so that they still describe the body). A body
/// whose text was not saved (browsers leave some out) is an empty, truncated one.
fn body_of(
    content: &Value,
    text: Option<String>,
    base64: bool,
    headers: &mut Headers,
    body_size: Option<&Value>,
) -> std::result::Result<RecordedBody, String> {
    let size_of = |v: Option<&Value>| v.and_then(Value::as_u64).filter(|&n| n > 0);
    let Some(text) = text else {
        let size = size_of(body_size).or_else(|| size_of(content.get("size")));
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
    let truncated = content.get("_truncated").and_then(Value::as_bool) == Some(true);
    let as_sent = content.get("_contentEncoded").and_then(Value::as_bool) == Some(true);
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
            Ok(encoded) => data = encoded,
            Err(_) => {
                headers.remove("content-encoding");
            }
        }
    }
    let size = if truncated {
        size_of(content.get("_size")).or_else(|| size_of(body_size))
    } else {
        None
    };
    Ok(RecordedBody {
        size: size.unwrap_or(data.len() as u64),
        data: Bytes::from(data),
        truncated,
    })
}

/// A HAR `httpVersion` as records spell versions: `HTTP/1.1`, `HTTP/2.0`.
fn version(v: &str) -> String {
    match v.trim().to_ascii_lowercase().as_str() {
        "http/1.0" => "HTTP/1.0".into(),
        "http/1.1" | "" => "HTTP/1.1".into(),
        "http/2" | "http/2.0" | "h2" | "h2c" => "HTTP/2.0".into(),
        "http/3" | "http/3.0" | "h3" => "HTTP/3".into(),
        other => other.to_ascii_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response for [`record`]: status, header fields, body.
    type Answer<'a> = (u16, &'a [(&'a str, &'a str)], Bytes);

    fn record(path: &str, response: Option<Answer<'_>>) -> Record {
        let mut request_headers = Headers::new();
        request_headers.append("Host", "a.localhost");
        request_headers.append("Cookie", "s=1; t=two");
        Record {
            websocket: None,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            client: Some("127.0.0.1:5000".parse().unwrap()),
            server: Some("127.0.0.1:8080".parse().unwrap()),
            client_tls: false,
            tls: Default::default(),
            request: RecordedRequest {
                method: "GET".into(),
                scheme: "http".into(),
                host: "a.localhost".into(),
                port: 8080,
                path: path.into(),
                version: "HTTP/1.1".into(),
                headers: request_headers,
                body: RecordedBody::default(),
            },
            response: response.map(|(status, fields, body)| {
                let mut headers = Headers::new();
                for (n, v) in fields {
                    headers.append(n.to_string(), v.to_string());
                }
                RecordedResponse {
                    status,
                    reason: "OK".into(),
                    version: "HTTP/1.1".into(),
                    headers,
                    body: RecordedBody::whole(body),
                }
            }),
            timings: RecordedTimings {
                request_end: Some(Duration::from_millis(2)),
                response_first_byte: Some(Duration::from_millis(7)),
                response_end: Some(Duration::from_millis(10)),
            },
            error: None,
        }
    }

    fn gzip(data: &[u8]) -> Bytes {
        Bytes::from(crate::decode::encode("gzip", data).unwrap())
    }

    fn parse(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn the_file_is_a_whole_har_document_after_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.har");
        let mut w = HarWriter::create(&path).unwrap();
        let doc = parse(&path);
        assert_eq!(doc["log"]["version"], "1.2");
        assert_eq!(doc["log"]["creator"]["name"], "mitm");
        assert_eq!(doc["log"]["entries"].as_array().unwrap().len(), 0);
        for n in 1..=3 {
            let r = record(&format!("/{n}"), Some((200, &[], Bytes::from("hi"))));
            w.write(&r).unwrap();
            let entries = parse(&path)["log"]["entries"].as_array().unwrap().clone();
            assert_eq!(entries.len(), n);
            assert_eq!(
                entries[n - 1]["request"]["url"],
                format!("http://a.localhost:8080/{n}")
            );
        }
        w.flush().unwrap();
    }

    #[test]
    fn an_existing_file_is_never_overwritten_but_can_be_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.har");
        std::fs::write(&path, "precious").unwrap();
        let Err(Error::CaptureIo { source, .. }) = HarWriter::create(&path) else {
            panic!("create overwrote a file");
        };
        assert_eq!(source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        assert!(matches!(
            HarWriter::append(&path),
            Err(Error::CaptureFormat { .. })
        ));

        let path = dir.path().join("b.har");
        let mut w = HarWriter::create(&path).unwrap();
        w.write(&record("/1", None)).unwrap();
        drop(w);
        let mut w = HarWriter::append(&path).unwrap();
        assert_eq!(w.entries(), 1);
        w.write(&record("/2", None)).unwrap();
        let urls: Vec<_> = read_har(&path)
            .unwrap()
            .iter()
            .map(|r| r.request.path.clone())
            .collect();
        assert_eq!(urls, ["/1", "/2"]);
    }

    #[test]
    fn a_writer_that_never_closes_leaves_every_record_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crash.har");
        let mut w = HarWriter::create(&path).unwrap();
        for n in 0..5 {
            w.write(&record(
                &format!("/{n}"),
                Some((200, &[], Bytes::from("x"))),
            ))
            .unwrap();
        }
        // As a crash would: no flush, no drop.
        std::mem::forget(w);
        assert_eq!(parse(&path)["log"]["entries"].as_array().unwrap().len(), 5);
        assert_eq!(read_har(&path).unwrap().len(), 5);
    }

    #[test]
    fn a_torn_last_line_is_dropped_when_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torn.har");
        let mut w = HarWriter::create(&path).unwrap();
        for n in 0..3 {
            w.write(&record(&format!("/{n}"), None)).unwrap();
        }
        drop(w);
        let text = std::fs::read(&path).unwrap();
        // Cut in the middle of the third entry.
        let cut = text.len() - TAIL.len() - 40;
        std::fs::write(&path, &text[..cut]).unwrap();
        let paths: Vec<_> = read_har(&path)
            .unwrap()
            .into_iter()
            .map(|r| r.request.path)
            .collect();
        assert_eq!(paths, ["/0", "/1"]);
        std::fs::write(&path, b"{\"log\": 1").unwrap();
        assert!(matches!(read_har(&path), Err(Error::CaptureFormat { .. })));
    }

    #[test]
    fn encoded_bodies_are_saved_decoded_with_their_sizes() {
        let text = "hello hello hello hello hello hello hello";
        let r = record(
            "/gz",
            Some((
                200,
                &[("Content-Type", "text/plain"), ("Content-Encoding", "gzip")],
                gzip(text.as_bytes()),
            )),
        );
        let encoded = r.response.as_ref().unwrap().body.data.len() as i64;
        let e = entry(&r);
        let c = &e["response"]["content"];
        assert_eq!(c["text"], text);
        assert_eq!(c["size"], text.len());
        assert_eq!(c["compression"], text.len() as i64 - encoded);
        assert_eq!(e["response"]["bodySize"], encoded);
        assert!(c.get("encoding").is_none());
        let names: Vec<_> = e["response"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"Content-Encoding"));
    }

    #[test]
    fn binary_bodies_are_base64_and_cut_ones_are_marked() {
        let data: Vec<u8> = (0..=255).collect();
        let mut r = record("/bin", Some((200, &[], Bytes::from(data.clone()))));
        let c = entry(&r)["response"]["content"].clone();
        assert_eq!(c["encoding"], "base64");
        let back = base64::engine::general_purpose::STANDARD
            .decode(c["text"].as_str().unwrap())
            .unwrap();
        assert_eq!(back, data);

        let body = &mut r.response.as_mut().unwrap().body;
        body.size = 1000;
        body.truncated = true;
        let c = entry(&r)["response"]["content"].clone();
        assert_eq!(c["_truncated"], true);
        assert_eq!(c["_size"], 1000);
        assert!(c["comment"].as_str().unwrap().contains("256 of 1000"));
    }

    #[test]
    fn request_parts_are_parsed_as_har_lists() {
        let mut r = record("/s?q=a+b&x=%2F%zz&flag", None);
        r.error = Some("failed to connect to upstream a.localhost:8080".into());
        r.request.method = "POST".into();
        r.request.headers.append("Content-Type", "application/json");
        r.request.body = RecordedBody::whole(Bytes::from_static(b"{\"a\":1}"));
        let e = entry(&r);
        assert_eq!(
            e["request"]["queryString"],
            json!([
                {"name": "q", "value": "a b"},
                {"name": "x", "value": "/%zz"},
                {"name": "flag", "value": ""},
            ])
        );
        assert_eq!(
            e["request"]["cookies"],
            json!([{"name": "s", "value": "1"}, {"name": "t", "value": "two"}])
        );
        assert_eq!(e["request"]["postData"]["mimeType"], "application/json");
        assert_eq!(e["request"]["postData"]["text"], "{\"a\":1}");
        assert_eq!(e["response"]["status"], 0);
        assert_eq!(e["_error"], r.error.clone().unwrap());
        assert_eq!(e["startedDateTime"], "2023-11-14T22:13:20.123Z");
        assert_eq!(e["timings"]["wait"], 5.0);
        assert_eq!(e["time"], 10.0);
    }

    #[test]
    fn set_cookie_attributes_are_kept() {
        let r = record(
            "/",
            Some((
                200,
                &[(
                    "Set-Cookie",
                    "id=7; Path=/; HttpOnly; Secure; Domain=a.localhost",
                )],
                Bytes::new(),
            )),
        );
        assert_eq!(
            entry(&r)["response"]["cookies"],
            json!([{"name": "id", "value": "7", "path": "/", "httpOnly": true,
                    "secure": true, "domain": "a.localhost"}])
        );
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
    fn records_read_back_are_those_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rt.har");
        let mut w = HarWriter::create(&path).unwrap();
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
